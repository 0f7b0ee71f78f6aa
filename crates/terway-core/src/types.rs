//! Small domain types shared by the daemon, the CNI plugin and the CLI: pod identity, network mode,
//! vSwitch gateway derivation and the annotation/label names Terway uses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::config_error::config_enum;

/// A pod's identity as Terway keys its records: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
}

/// The namespace of containers that a runtime other than Kubernetes networks through `terway` (`ctr run
/// --cni`, podman), keyed by their container id. A Kubernetes namespace cannot start with `_`, so no pod
/// ever shares a key with one of them.
pub const RUNTIME_NAMESPACE: &str = "_runtime";

/// Why a `namespace/name` string is not a pod key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a pod key of the form namespace/name")]
pub struct PodKeyError(pub String);

impl PodKey {
    /// Build a key from its two parts (unchecked: for names that came from a validated source).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Build a key from untrusted input, validated as Kubernetes validates objects: the namespace is a
    /// DNS-1123 label (≤ 63), the name a DNS-1123 subdomain (≤ 253). Anything else could never name a
    /// real pod, and letting `/`, `..` or control characters through would make two pods share a key.
    pub fn validated(namespace: &str, name: &str) -> Result<Self, PodNameError> {
        if namespace == RUNTIME_NAMESPACE {
            return Self::runtime(name);
        }
        check_dns1123_label(namespace).map_err(|why| PodNameError {
            field: "namespace",
            value: namespace.to_string(),
            why,
        })?;
        check_dns1123_subdomain(name).map_err(|why| PodNameError {
            field: "name",
            value: name.to_string(),
            why,
        })?;
        Ok(Self::new(namespace, name))
    }

    /// The key of a container a non-Kubernetes runtime asked for: [`RUNTIME_NAMESPACE`] and its container
    /// id, checked as the CNI specification restricts container ids (`[A-Za-z0-9][A-Za-z0-9_.-]*`, here at
    /// most 253 characters).
    pub fn runtime(container_id: &str) -> Result<Self, PodNameError> {
        check_container_id(container_id).map_err(|why| PodNameError {
            field: "container id",
            value: container_id.to_string(),
            why,
        })?;
        Ok(Self::new(RUNTIME_NAMESPACE, container_id))
    }

    /// Whether this key names a non-Kubernetes runtime's container, not a pod.
    pub fn is_runtime(&self) -> bool {
        self.namespace == RUNTIME_NAMESPACE
    }
}

/// A CNI container id: 1–253 of `[A-Za-z0-9_.-]`, starting alphanumeric.
pub fn check_container_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("must be 1 to 253 characters long, got {}", s.len()));
    }
    let b = s.as_bytes();
    if !b[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit".into());
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return Err("may contain only letters, digits, '_', '.' and '-'".into());
    }
    Ok(())
}

/// Why a pod namespace or name is not one Kubernetes would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {field} {value:?} is not valid: {why}")]
pub struct PodNameError {
    /// `namespace` or `name`.
    pub field: &'static str,
    /// The value given (quoted with escapes in the message).
    pub value: String,
    /// What rule it breaks.
    pub why: String,
}

/// A DNS-1123 label: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric (Kubernetes namespaces).
pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!(
            "must be 1 to 63 characters long (a DNS-1123 label), got {}",
            s.len()
        ));
    }
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.iter().all(|c| alnum(*c) || *c == b'-') {
        return Err(
            "may contain only lower-case letters, digits and '-' (a DNS-1123 label)".into(),
        );
    }
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(
            "must start and end with a lower-case letter or digit (a DNS-1123 label)".into(),
        );
    }
    Ok(())
}

/// A DNS-1123 subdomain: ≤ 253 characters of dot-separated labels of `[a-z0-9-]` (Kubernetes pod names).
pub fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!(
            "must be 1 to 253 characters long (a DNS-1123 subdomain), got {}",
            s.len()
        ));
    }
    for part in s.split('.') {
        // Subdomain labels are not limited to 63 here: Kubernetes checks only the whole length.
        let b = part.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty()
            || !b.iter().all(|c| alnum(*c) || *c == b'-')
            || !alnum(b[0])
            || !alnum(b[b.len() - 1])
        {
            return Err(
                "must be lower-case letters, digits, '-' and '.', starting and ending alphanumeric (a DNS-1123 subdomain)"
                    .into(),
            );
        }
    }
    Ok(())
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for PodKey {
    type Err = PodKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(ns, name))
            }
            _ => Err(PodKeyError(s.to_string())),
        }
    }
}

config_enum! {
    /// How pods of a node get their addresses.
    #[derive(Default)]
    Mode {
        /// Secondary IPs of shared ENIs, one per pod (Terway's ENIIP; the default).
        #[default]
        Shared = "shared",
        /// A whole ENI moved into the pod's network namespace.
        Exclusive = "exclusive",
        /// Pod IPs from the node's pod CIDR, routed by the VPC route table.
        VpcRoute = "vpc-route",
    }
}

impl Mode {
    /// All values, in the order error messages list them.
    pub const ALL: [Mode; 3] = [Mode::Shared, Mode::Exclusive, Mode::VpcRoute];
}

/// Why no gateway can be derived from a vSwitch CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vSwitch CIDR {0} is too small to hold a gateway (Alibaba Cloud reserves the last 3 addresses; need at least a /29 or /125)")]
pub struct GatewayError(pub IpNet);

/// The vSwitch gateway Alibaba Cloud uses: the CIDR's address at index −3 (broadcast − 2 for IPv4,
/// last − 2 for IPv6), e.g. 10.0.0.0/24 → 10.0.0.253.
pub fn vswitch_gateway(cidr: IpNet) -> Result<IpAddr, GatewayError> {
    match cidr {
        IpNet::V4(net) => gateway_v4(net).map(IpAddr::V4).ok_or(GatewayError(cidr)),
        IpNet::V6(net) => gateway_v6(net).map(IpAddr::V6).ok_or(GatewayError(cidr)),
    }
}

fn gateway_v4(net: Ipv4Net) -> Option<Ipv4Addr> {
    if net.prefix_len() > 29 {
        return None;
    }
    let last = u32::from(net.broadcast());
    Some(Ipv4Addr::from(last - 2))
}

fn gateway_v6(net: Ipv6Net) -> Option<Ipv6Addr> {
    if net.prefix_len() > 125 {
        return None;
    }
    let last = u128::from(net.broadcast());
    Some(Ipv6Addr::from(last - 2))
}

/// Event reasons Terway users search for (`kubectl get events --field-selector reason=…`), shared by the
/// CNI (which sends them through `RecordEvent`), the daemon and the Kubernetes event writer.
pub mod reasons {
    /// An address was given to a pod ("Alloc IP … took …").
    pub const ALLOC_IP_SUCCEED: &str = "AllocIPSucceed";
    /// A pod (or the node) could not get an address.
    pub const ALLOC_IP_FAILED: &str = "AllocIPFailed";
    /// The datapath the configuration asked for is not available; another one is used.
    pub const VIRTUAL_MODE_CHANGED: &str = "VirtualModeChanged";
    /// The CNI failed to set up the pod's network.
    pub const CNI_POD_CREATE_ERROR: &str = "CniPodCreateError";
    /// The CNI failed to tear down the pod's network.
    pub const CNI_POD_DELETE_ERROR: &str = "CniPodDeleteError";
    /// The daemon's configuration was refused.
    pub const CONFIG_ERROR: &str = "ConfigError";
}

/// Pod annotation and label names Terway reads or writes (reference §7.2).
pub mod annotations {
    /// Kubernetes ingress bandwidth limit, a resource quantity in bits/s (arrives via CNI runtimeConfig).
    pub const K8S_INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
    /// Kubernetes egress bandwidth limit, a resource quantity in bits/s.
    pub const K8S_EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";
    /// Deprecated Terway ingress limit in bytes/s with binary K/M/G/T suffixes.
    pub const INGRESS_BANDWIDTH: &str = "k8s.aliyun.com/ingress-bandwidth";
    /// Deprecated Terway egress limit in bytes/s with binary K/M/G/T suffixes.
    pub const EGRESS_BANDWIDTH: &str = "k8s.aliyun.com/egress-bandwidth";
    /// Egress priority class: guaranteed | burstable | best-effort.
    pub const NETWORK_PRIORITY: &str = "k8s.aliyun.com/network-priority";
    /// "true" puts the pod on the PodENI (exclusive/trunk) path.
    pub const POD_ENI: &str = "k8s.aliyun.com/pod-eni";
    /// Name of the PodNetworking that matched the pod.
    pub const POD_NETWORKING: &str = "k8s.aliyun.com/pod-networking";
    /// JSON pod network description written by the webhook.
    pub const POD_NETWORKS: &str = "k8s.aliyun.com/pod-networks";
    /// JSON list of requested pod networks.
    pub const POD_NETWORKS_REQUEST: &str = "k8s.aliyun.com/pod-networks-request";
    /// "true" keeps the pod's IP for a while after the pod goes away (legacy sticky IP).
    pub const POD_IP_RESERVATION: &str = "k8s.aliyun.com/pod-ip-reservation";
    /// The pod's IPs, written by the daemon.
    pub const POD_IPS: &str = "k8s.aliyun.com/pod-ips";
    /// Allocation type of a PodENI pod.
    pub const POD_ALLOC_TYPE: &str = "k8s.aliyun.com/pod-alloc-type";
    /// Marks a pod whose resources are allocated.
    pub const ALLOCATED: &str = "k8s.aliyun.com/allocated";
    /// The pod UID the allocation belongs to.
    pub const POD_UID: &str = "k8s.aliyun.com/pod-uid";
    /// Whether the pod's ENI came from the pool.
    pub const ENI_ALLOC_FROM_POOL: &str = "k8s.aliyun.com/eni-alloc-from-pool";
    /// Node annotation: the trunk ENI ID.
    pub const TRUNK_ON: &str = "k8s.aliyun.com/trunk-on";
    /// Node annotation: maximum pod IPs.
    pub const MAX_AVAILABLE_IP: &str = "k8s.aliyun.com/max-available-ip";
    /// Node annotation: maximum member-ENI IPs.
    pub const MAX_MEMBER_ENI_IP: &str = "k8s.aliyun.com/max-member-eni-ip";
    /// Node annotation: maximum ERDMA IPs.
    pub const MAX_ERDMA_IP: &str = "k8s.aliyun.com/max-erdma-ip";
    /// Node annotation carrying instance-type limits instead of DescribeInstanceTypes.
    pub const INSTANCE_TYPE_INFO: &str = "alibabacloud.com/instance-type-info";
    /// Node label naming the per-node eni-config ConfigMap.
    pub const LABEL_TERWAY_CONFIG: &str = "terway-config";
    /// Node label choosing exclusive ENI mode (`eniOnly`).
    pub const LABEL_EXCLUSIVE_MODE_ENI_TYPE: &str = "k8s.aliyun.com/exclusive-mode-eni-type";
    /// Pod/node label: "true" makes Terway ignore the object.
    pub const LABEL_IGNORE_BY_TERWAY: &str = "k8s.aliyun.com/ignore-by-terway";
    /// Node label marking Lingjun (EFLO) workers.
    pub const LABEL_LINGJUN_WORKER: &str = "alibabacloud.com/lingjun-worker";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_key_round_trip() {
        let k: PodKey = "default/nginx-1".parse().unwrap();
        assert_eq!(k, PodKey::new("default", "nginx-1"));
        assert_eq!(k.to_string(), "default/nginx-1");
        for bad in ["", "x", "/x", "x/", "a/b/c"] {
            assert!(bad.parse::<PodKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pod_names_are_validated_as_kubernetes_does() {
        assert!(PodKey::validated("default", "nginx-1").is_ok());
        assert!(PodKey::validated("kube-system", "coredns-7f89b7bc75-abc.x").is_ok());
        assert!(PodKey::validated(&"n".repeat(63), &"p".repeat(253)).is_ok());
        for (ns, name) in [
            ("a", "b/c"),
            ("a/b", "c"),
            ("..", "x"),
            ("a", ".."),
            ("a", "x\ny"),
            ("a\n", "x"),
            ("", "x"),
            ("a", ""),
            ("A", "x"),
            ("a", "X"),
            ("-a", "x"),
            ("a", "x-"),
            ("a", "x..y"),
            (&"n".repeat(64), "x"),
            ("a", &"p".repeat(254)),
            ("a", &"p".repeat(300)),
        ] {
            let e = PodKey::validated(ns, name).unwrap_err();
            assert!(e.to_string().contains("not valid"), "{ns:?}/{name:?}: {e}");
        }
        let e = PodKey::validated("a", "b/c").unwrap_err();
        assert_eq!(e.field, "name");
    }

    #[test]
    fn runtime_containers_are_keyed_by_container_id_in_a_namespace_no_pod_can_have() {
        assert!(check_dns1123_label(RUNTIME_NAMESPACE).is_err());
        let podman = "4f1c2e9d0a7b4c3d8e6f5a4b3c2d1e0f4f1c2e9d0a7b4c3d8e6f5a4b3c2d1e0f";
        for id in [podman, "web1", "My_ctr.2-x"] {
            let k = PodKey::validated(RUNTIME_NAMESPACE, id).unwrap();
            assert!(k.is_runtime());
            assert_eq!(k, PodKey::runtime(id).unwrap());
            assert_eq!(k.to_string(), format!("_runtime/{id}"));
        }
        for bad in ["", "-x", "a/b", "..", ".x", "a b", "a\n", &"c".repeat(254)] {
            let e = PodKey::runtime(bad).unwrap_err();
            assert_eq!(e.field, "container id", "{bad:?}");
        }
        assert!(!PodKey::new("default", "x").is_runtime());
    }

    #[test]
    fn gateway_is_index_minus_three() {
        let g = vswitch_gateway("10.0.0.0/24".parse().unwrap()).unwrap();
        assert_eq!(g, "10.0.0.253".parse::<IpAddr>().unwrap());
        let g = vswitch_gateway("172.16.32.0/20".parse().unwrap()).unwrap();
        assert_eq!(g, "172.16.47.253".parse::<IpAddr>().unwrap());
        let g = vswitch_gateway("2408:4005:300::/64".parse().unwrap()).unwrap();
        assert_eq!(
            g,
            "2408:4005:300:0:ffff:ffff:ffff:fffd"
                .parse::<IpAddr>()
                .unwrap()
        );
        // Host bits in the given CIDR do not matter.
        let g = vswitch_gateway("10.1.2.77/24".parse().unwrap()).unwrap();
        assert_eq!(g, "10.1.2.253".parse::<IpAddr>().unwrap());
        assert!(vswitch_gateway("10.0.0.0/30".parse().unwrap()).is_err());
        assert!(vswitch_gateway("10.0.0.0/29".parse().unwrap()).is_ok());
    }

    #[test]
    fn mode_serde() {
        assert_eq!(
            serde_json::to_string(&Mode::VpcRoute).unwrap(),
            "\"vpc-route\""
        );
        assert_eq!(
            serde_json::from_str::<Mode>("\"exclusive\"").unwrap(),
            Mode::Exclusive
        );
        assert_eq!(Mode::default(), Mode::Shared);
    }
}
