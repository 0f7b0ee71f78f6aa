//! terway-controlplane: the cluster-wide half of terway-rs. One replica at a time leads (a
//! coordination.k8s.io Lease, [`leader`]) and runs the controllers; today that is `pod-networking`
//! ([`pod_networking`]), which validates PodNetworkings against the cloud. Every replica serves the
//! pod webhook ([`webhook`]), which puts pods into their PodNetworking. The daemon never talks to
//! this process: what it reads is CRD status and pod annotations.

#![warn(missing_docs)]

pub mod error;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod pod_eni;
pub mod pod_networking;
pub mod retry;
pub mod webhook;

pub use error::Error;
pub use leader::{LeaderElection, LeaseConfig};
pub use metrics::Metrics;

/// Field manager and event reporter of every write.
pub const FIELD_MANAGER: &str = "terway-controlplane";
/// Default Lease name (in `kube-system`).
pub const LEASE_NAME: &str = "terway-controlplane";
/// Default Lease namespace.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// A Kubernetes client from `kubeconfig`, or the in-cluster service account when `None`.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, Error> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let config = match kubeconfig {
        Some(path) => {
            let bad = |e: String| {
                Error::Config(format!(
                    "kubeconfig {}: {e}; pass --kubeconfig with a readable file or run in the cluster",
                    path.display()
                ))
            };
            let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => kube::Config::incluster().map_err(|e| {
            Error::Config(format!(
                "no in-cluster configuration ({e}); pass --kubeconfig outside a pod"
            ))
        })?,
    };
    kube::Client::try_from(config)
        .map_err(|e| Error::Config(format!("cannot build the Kubernetes client: {e}")))
}
