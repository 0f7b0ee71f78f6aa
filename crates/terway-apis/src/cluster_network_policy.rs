//! `ClusterNetworkPolicy` (cluster-scoped, `policy.networking.k8s.io/v1alpha2`): the network-policy-api's
//! cluster-wide policy, in two tiers around the namespaced NetworkPolicy — Admin before it, Baseline after
//! it. Our own types with the upstream field names, so the upstream YAML applies unchanged.
//!
//! The upstream CRD validates with CEL rules a 1.20 API server does not run (one field of a peer, a range's
//! start below its end, a CIDR that parses); the policy compiler checks those itself and fails closed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of ClusterNetworkPolicy.
pub const CNP_GROUP: &str = "policy.networking.k8s.io";
/// API version of ClusterNetworkPolicy defined here.
pub const CNP_VERSION: &str = "v1alpha2";

/// A cluster-wide network policy: its tier, its priority within the tier, the pods it applies to and its
/// ordered rules.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha2",
    kind = "ClusterNetworkPolicy",
    shortname = "cnp",
    status = "ClusterNetworkPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "ClusterNetworkPolicy is a cluster-wide network policy in the Admin or the Baseline tier.",
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "Priority", type_ = "string", json_path = ".spec.priority"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    /// Admin (evaluated before NetworkPolicy) or Baseline (after it, for pods no NetworkPolicy selects).
    pub tier: Tier,
    /// 0–1000 within the tier; a lower value is evaluated first.
    #[schemars(range(min = 0, max = 1000))]
    pub priority: i32,
    /// The pods the policy applies to.
    pub subject: ClusterNetworkPolicySubject,
    /// Rules for traffic to the subject pods, evaluated in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub ingress: Vec<ClusterNetworkPolicyIngressRule>,
    /// Rules for traffic from the subject pods, evaluated in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub egress: Vec<ClusterNetworkPolicyEgressRule>,
}

/// The tier of a ClusterNetworkPolicy.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum Tier {
    /// Before NetworkPolicy: its Accept and Deny are final.
    #[default]
    Admin,
    /// After NetworkPolicy, for the pods and directions no NetworkPolicy isolates.
    Baseline,
}

/// Observed state of a ClusterNetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyStatus {
    /// Conditions reported by implementations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The pods a policy applies to: exactly one field set (host-network pods are never subjects).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySubject {
    /// Every pod of the namespaces this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// The pods this selects in the namespaces it selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods by namespace labels and pod labels (each empty: all).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    /// Namespaces; empty selects all.
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    /// Pods in them; empty selects all.
    #[serde(default)]
    pub pod_selector: LabelSelector,
}

/// What a rule does with the traffic it matches.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Action {
    /// Allowed, replies included; no later rule of this direction is consulted (the destination's ingress
    /// still is, for egress).
    Accept,
    /// Dropped; final.
    #[default]
    Deny,
    /// The rest of this tier is skipped: the next tier decides.
    Pass,
}

/// A rule for traffic to the subject pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyIngressRule {
    /// The rule's name, for observability.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 100))]
    pub name: String,
    /// What happens to matching traffic.
    pub action: Action,
    /// Sources (one must match).
    #[schemars(length(min = 1, max = 25))]
    pub from: Vec<ClusterNetworkPolicyIngressPeer>,
    /// Protocols and ports (none: every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub protocols: Vec<ClusterNetworkPolicyProtocol>,
}

/// A rule for traffic from the subject pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyEgressRule {
    /// The rule's name, for observability.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 100))]
    pub name: String,
    /// What happens to matching traffic.
    pub action: Action,
    /// Destinations (one must match).
    #[schemars(length(min = 1, max = 25))]
    pub to: Vec<ClusterNetworkPolicyEgressPeer>,
    /// Protocols and ports (none: every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub protocols: Vec<ClusterNetworkPolicyProtocol>,
}

/// A source: exactly one field set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyIngressPeer {
    /// Every pod of the namespaces this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// The pods this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// A destination: exactly one field set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyEgressPeer {
    /// Every pod of the namespaces this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// The pods this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// The addresses of the nodes this selects (their `status.addresses`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// CIDRs; pod addresses in them match too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub networks: Vec<String>,
    /// Domain names (Accept rules only). Not enforced by terway-rs: such a peer matches nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 25))]
    pub domain_names: Vec<String>,
}

/// One protocol match: exactly one field set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicyProtocol {
    /// TCP, optionally on a destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPort>,
    /// UDP, optionally on a destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPort>,
    /// SCTP, optionally on a destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPort>,
    /// A container port of the destination pod, by name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination_named_port: String,
}

/// The destination port of a protocol match (upstream: `ClusterNetworkPolicyProtocolTCP` and its UDP and
/// SCTP twins, which have the same fields).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPort {
    /// The port or range; none: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// A port number or a range: exactly one set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// One port.
    #[serde(default, skip_serializing_if = "crate::common::is_default")]
    #[schemars(range(min = 0, max = 65535))]
    pub number: i32,
    /// An inclusive range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

/// An inclusive port range, `start < end`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// First port.
    #[schemars(range(min = 1, max = 65535))]
    pub start: i32,
    /// Last port.
    #[schemars(range(min = 1, max = 65535))]
    pub end: i32,
}
