//! The allocation record: what one pod interface holds, written durably before the CNI hears of it and
//! complete enough that DEL and CHECK are answered from it alone (interface name, backend, the datapath
//! answer, QoS) — nothing is recomputed from defaults that may have changed since.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use terway_core::PodKey;

/// Interface name assumed for records and requests that do not name one (the CNI default).
pub const DEFAULT_IF_NAME: &str = "eth0";

fn default_if_name() -> String {
    DEFAULT_IF_NAME.to_string()
}

/// Serde default of interface names in records written before interfaces were recorded.
pub(crate) fn default_if_name_owned() -> String {
    default_if_name()
}

/// Which kind of resource serves a pod interface; chosen per pod by [`crate::backend::resolve`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A secondary IP of a shared ENI (Terway's ENIIP).
    SharedIp,
    /// A whole ENI moved into the pod.
    ExclusiveEni,
    /// An address of the node's PodCIDR, routed by the VPC route table.
    PodCidr,
    /// An ENI the controlplane made for the pod (its PodENI), moved into the pod.
    PodEni,
}

impl ResourceKind {
    /// The kind that serves every pod of a node in `mode` unless a pod asks for another.
    pub fn default_for(mode: terway_core::Mode) -> Self {
        match mode {
            terway_core::Mode::Shared => ResourceKind::SharedIp,
            terway_core::Mode::Exclusive => ResourceKind::ExclusiveEni,
            terway_core::Mode::VpcRoute => ResourceKind::PodCidr,
        }
    }

    /// Name in logs, metrics and status.
    pub fn label(self) -> &'static str {
        match self {
            ResourceKind::SharedIp => "shared-ip",
            ResourceKind::ExclusiveEni => "exclusive-eni",
            ResourceKind::PodCidr => "pod-cidr",
            ResourceKind::PodEni => "pod-eni",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One pod interface: the unit the daemon allocates for (a pod with two interfaces holds two records).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct AllocKey {
    /// The pod.
    #[serde(flatten)]
    pub pod: PodKey,
    /// `CNI_IFNAME`.
    #[serde(default = "default_if_name")]
    pub if_name: String,
}

impl AllocKey {
    /// Key of `pod`'s interface `if_name` (empty = the default `eth0`).
    pub fn new(pod: PodKey, if_name: &str) -> Self {
        AllocKey {
            pod,
            if_name: if if_name.is_empty() {
                DEFAULT_IF_NAME.to_string()
            } else {
                if_name.to_string()
            },
        }
    }

    /// An unambiguous store key: a JSON array, so no separator inside a name can make two keys equal.
    pub fn store_key(&self) -> String {
        serde_json::to_string(&[&self.pod.namespace, &self.pod.name, &self.if_name])
            .unwrap_or_else(|_| format!("{:?}", (&self.pod, &self.if_name)))
    }
}

impl fmt::Display for AllocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.if_name == DEFAULT_IF_NAME {
            write!(f, "{}", self.pod)
        } else {
            write!(f, "{} ({})", self.pod, self.if_name)
        }
    }
}

/// The ENI a pod's address lives on, as the datapath needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EniAnswer {
    /// `eni-…`.
    pub id: String,
    /// MAC, lower case.
    pub mac: String,
    /// vSwitch gateway.
    pub gateway: Ipv4Addr,
    /// The ENI's own primary IP.
    pub primary_ip: Ipv4Addr,
}

/// Everything the datapath needs to program (and later find and remove) one pod interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetAnswer {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// vSwitch CIDR, or the node PodCIDR.
    pub subnet: Ipv4Net,
    /// vSwitch gateway, or the PodCIDR's node-side gateway.
    pub gateway: Ipv4Addr,
    /// The ENI (absent for PodCIDR addresses).
    pub eni: Option<EniAnswer>,
}

/// Pod bandwidth and priority as they were when the interface was set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QosAnswer {
    /// Bytes per second into the pod; 0 = unlimited.
    pub ingress_bps: u64,
    /// Bytes per second out of the pod; 0 = unlimited.
    pub egress_bps: u64,
    /// `k8s.aliyun.com/network-priority`, may be empty.
    pub priority: String,
}

/// A pod interface's current resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    /// Owner.
    pub pod: PodKey,
    /// `CNI_IFNAME` of the interface.
    #[serde(default = "default_if_name")]
    pub if_name: String,
    /// Sandbox the allocation belongs to.
    pub container_id: String,
    /// Pod UID, may be empty.
    pub uid: String,
    /// Which backend holds the resource.
    pub backend: ResourceKind,
    /// The address.
    pub ip: Ipv4Addr,
    /// ENI the address lives on (empty for PodCIDR addresses).
    #[serde(default)]
    pub eni_id: String,
    /// What the CNI was told; DEL and CHECK get exactly this back.
    pub answer: NetAnswer,
    /// QoS at set-up.
    #[serde(default)]
    pub qos: QosAnswer,
    /// Whether the IP is kept for the pod after release.
    pub sticky: bool,
    /// When it was allocated (unix ms).
    pub at_ms: u64,
}

impl Allocation {
    /// The record's key.
    pub fn key(&self) -> AllocKey {
        AllocKey {
            pod: self.pod.clone(),
            if_name: self.if_name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keys_of_different_pods_never_collide() {
        let a = AllocKey::new(PodKey::new("a", "b/c"), "eth0");
        let b = AllocKey::new(PodKey::new("a/b", "c"), "eth0");
        assert_ne!(a.store_key(), b.store_key());
        let c = AllocKey::new(PodKey::new("a", "b"), "net1");
        let d = AllocKey::new(PodKey::new("a", "b"), "");
        assert_ne!(c.store_key(), d.store_key());
        assert_eq!(d.if_name, "eth0");
        assert_eq!(d.store_key(), r#"["a","b","eth0"]"#);
    }

    #[test]
    fn key_json_defaults_the_interface() {
        let k: AllocKey = serde_json::from_str(r#"{"namespace":"n","name":"p"}"#).unwrap();
        assert_eq!(k, AllocKey::new(PodKey::new("n", "p"), "eth0"));
        assert_eq!(k.to_string(), "n/p");
        assert_eq!(
            AllocKey::new(PodKey::new("n", "p"), "net1").to_string(),
            "n/p (net1)"
        );
    }
}
