//! The Kubernetes implementations of terwayd's traits, on kube-rs. terway-daemon knows only the traits;
//! the `terwayd` binary wires these in when it is given a kubeconfig (or runs in a cluster).

pub mod authority_shim;
pub mod config_watch;
pub mod device_plugin;
pub mod netpol;
pub mod node_cr;
pub mod node_runtime;
pub mod pod_eni;
pub mod pods;
pub mod report;

pub use pod_eni::KubePodEniSource;
pub use pods::{KubeError, KubePodSource};
pub use report::{KubeReporter, ReporterTask};

/// The Kubernetes client type the constructors here take.
pub use kube::Client;
