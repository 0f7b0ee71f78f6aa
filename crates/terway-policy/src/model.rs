//! What the policy code knows of a cluster: namespaces with labels, pods with labels, addresses and named
//! container ports, nodes, the NetworkPolicies (the API's own types) and the ClusterNetworkPolicies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use terway_apis::ClusterNetworkPolicy;

/// A transport protocol a NetworkPolicy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP (the API's default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The protocol of a `protocol` field (`None`: TCP, as the API defaults it).
    pub fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// Every protocol.
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        })
    }
}

/// A named container port of a pod (`containers[].ports[]` with a `name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// The port's name.
    pub name: String,
    /// Its protocol.
    pub proto: Proto,
    /// Its number.
    pub port: u16,
}

/// A namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels (including `kubernetes.io/metadata.name`, which the API server sets).
    pub labels: BTreeMap<String, String>,
}

/// A pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its addresses (none yet: it is not selected as a peer by address, but policies still select it).
    pub ips: Vec<IpAddr>,
    /// Named container ports.
    pub ports: Vec<NamedPort>,
    /// It uses the node's network: NetworkPolicy does not apply to it.
    pub host_network: bool,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The number of the named port `name` for `proto`, if the pod has one.
    pub fn named_port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// One end of a connection: a pod of the world, or an address outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A pod (its first address is the one on the wire).
    Pod(&'a Pod),
    /// An address that is no pod's (a node, something outside the cluster).
    External(IpAddr),
}

impl Endpoint<'_> {
    /// The address on the wire.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Endpoint::Pod(p) => p.ips.first().copied(),
            Endpoint::External(ip) => Some(*ip),
        }
    }
}

/// A node of the cluster, as a ClusterNetworkPolicy `nodes` peer selects it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its addresses (`status.addresses` that are IPs).
    pub ips: Vec<IpAddr>,
}

/// Everything the policy code reads.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// Pods.
    pub pods: Vec<Pod>,
    /// NetworkPolicies.
    pub policies: Vec<NetworkPolicy>,
    /// ClusterNetworkPolicies (both tiers).
    pub cluster_policies: Vec<ClusterNetworkPolicy>,
    /// Nodes.
    pub nodes: Vec<Node>,
}

impl World {
    /// The namespace called `name`.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The pod that has `ip`, if any.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| !p.host_network && p.ips.contains(&ip))
    }
}

/// The namespace of a policy (`default` when the object names none, as the API server fills it in).
pub fn policy_namespace(p: &NetworkPolicy) -> &str {
    p.metadata.namespace.as_deref().unwrap_or("default")
}

/// `namespace/name` of a policy.
pub fn policy_key(p: &NetworkPolicy) -> String {
    format!(
        "{}/{}",
        policy_namespace(p),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// `ClusterNetworkPolicy/<name>`: the key of a cluster policy where a namespaced policy's is
/// `namespace/name` (no namespace is spelled with capitals, so the two never collide).
pub fn cluster_policy_key(p: &ClusterNetworkPolicy) -> String {
    format!(
        "ClusterNetworkPolicy/{}",
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// One rule as written: its peer list (`from` of an ingress rule, `to` of an egress rule) and its ports.
pub type RuleView<'a> = (
    Option<&'a [NetworkPolicyPeer]>,
    Option<&'a [NetworkPolicyPort]>,
);

/// The ingress or the egress rules of `p`, as written (field access only: what they mean is left to the
/// compiler and the oracle).
pub fn rules_as_written(p: &NetworkPolicy, ingress: bool) -> Vec<RuleView<'_>> {
    let spec = p.spec.as_ref();
    if ingress {
        spec.and_then(|s| s.ingress.as_ref())
            .into_iter()
            .flatten()
            .map(|r| (r.from.as_deref(), r.ports.as_deref()))
            .collect()
    } else {
        spec.and_then(|s| s.egress.as_ref())
            .into_iter()
            .flatten()
            .map(|r| (r.to.as_deref(), r.ports.as_deref()))
            .collect()
    }
}
