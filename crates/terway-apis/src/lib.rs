//! Terway's CRD types, group `network.alibabacloud.com/v1beta1`, with Terway's field names, and the
//! network-policy-api's `ClusterNetworkPolicy` (`policy.networking.k8s.io/v1alpha2`) with its field names.
//!
//! One module per kind; [`crds`] lists all six CRDs and [`generated_files`] renders the
//! manifests checked in under `deploy/crds/` (regenerate with
//! `cargo run -p terway-apis --bin terway-crdgen`).

#![warn(missing_docs)]

pub mod cluster_network_policy;
pub mod common;
pub mod events;
mod manifests;
pub mod network_interface;
pub mod node;
pub mod node_runtime;
mod node_status;
pub mod pod_eni;
pub mod pod_networking;

pub use cluster_network_policy::{
    Action, ClusterNetworkPolicy, ClusterNetworkPolicyEgressPeer, ClusterNetworkPolicyEgressRule,
    ClusterNetworkPolicyIngressPeer, ClusterNetworkPolicyIngressRule, ClusterNetworkPolicyProtocol,
    ClusterNetworkPolicySpec, ClusterNetworkPolicyStatus, ClusterNetworkPolicySubject,
    NamespacedPod, Port, PortRange, ProtocolPort, Tier, CNP_GROUP, CNP_VERSION,
};
pub use common::{
    Allocation, AllocationType, AttachmentOptions, Eni, EniBindStatus, EniInfo, EniType,
    IpAllocType, Phase, ReleaseStrategy, Route, SelectionPolicy,
};
pub use manifests::{
    crds, generated_files, kustomization_yaml, manifest_file_name, manifest_yaml, ManifestError,
    API_APPROVED_ANNOTATION, GENERATED_HEADER,
};
pub use network_interface::{
    ManagePolicy, NetworkInterface, NetworkInterfaceSpec, NetworkInterfaceStatus,
};
pub use node::{
    Datapath, DatapathType, EniSpec, Flavor, Ip, IpPrefix, IpPrefixStatus, IpReclaimPolicy,
    IpStatus, NetworkCard, NetworkInterfaceTrafficMode, Nic, NicCondition, Node, NodeCap,
    NodeMetadata, NodeSpec, NodeStatus, PoolSpec, Tag,
};
pub use node_runtime::{
    CniStatus, CniStatusInfo, NodeRuntime, NodeRuntimeSpec, NodeRuntimeStatus, RuntimePodStatus,
};
pub use pod_eni::{PodEni, PodEniSpec, PodEniStatus};
pub use pod_networking::{
    EniAttachType, EniOptions, NetworkingStatus, PodNetworking, PodNetworkingSpec,
    PodNetworkingStatus, Selector, VSwitch, VSwitchSelectOptions,
};

/// API group of all Terway CRDs.
pub const GROUP: &str = "network.alibabacloud.com";
/// API version of the Terway CRDs defined here.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` value of the Terway CRDs (`group/version`).
pub const API_VERSION: &str = "network.alibabacloud.com/v1beta1";

/// Finalizer the controller puts on PodENI objects.
pub const FINALIZER_POD_ENI: &str = "network.alibabacloud.com/pod-eni";
/// Finalizer the controller puts on NetworkInterface objects.
pub const FINALIZER_ENI: &str = "network.alibabacloud.com/eni";
/// Finalizer the node controller puts on Terway Node objects.
pub const FINALIZER_NODE_CONTROLLER: &str = "network.alibabacloud.com/node-controller";

/// Label naming the Kubernetes node an object belongs to.
pub const LABEL_NODE: &str = "k8s.aliyun.com/node";
