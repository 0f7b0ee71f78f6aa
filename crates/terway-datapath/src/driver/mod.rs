//! Pod datapath drivers behind one trait (validate → setup → check → teardown), picked by a small factory
//! from the network mode, `eniip_virtual_type` and what the kernel supports.
//!
//! Kernel state per mode follows Terway (rule priorities 512/2048, ENI table 1000+ifindex, gateway
//! 169.254.1.1 with a permanent neighbour, host veth `cali`+sha1). Drivers receive the host and pod
//! namespaces with one netlink socket each ([`HostCtx`], [`PodCtx`]); they never enter a namespace themselves.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use sha1::{Digest, Sha1};
use terway_core::{EniipVirtualType, Mode};

use crate::error::{Error, Result};
use crate::link::MacAddr;
use crate::netns::Netns;
use crate::nl::Netlink;

mod common;
pub mod exclusive;
pub mod ipvlan;
pub mod owner;
pub mod policy_route;
pub mod qos;
pub mod retire;
pub mod vpc_route;

pub use exclusive::ExclusiveEni;
pub use ipvlan::{probe_ipvlan, Ipvlan};
pub use policy_route::PolicyRoute;
pub use vpc_route::VpcRoute;

/// Link-local gateway the pod routes through (answered by a permanent neighbour entry).
pub const LINK_LOCAL_GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// IPv6 link-local gateway the pod routes through.
pub const LINK_LOCAL_GW6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// `ip rule` priority of `to <pod> lookup main`.
pub const TO_CONTAINER_PRIORITY: u32 = 512;
/// `ip rule` priority of `from <pod> lookup <ENI table>`.
pub const FROM_CONTAINER_PRIORITY: u32 = 2048;
/// ENI route tables are `ENI_TABLE_BASE + ENI ifindex`.
pub const ENI_TABLE_BASE: u32 = 1000;
/// tc priority of the ipvlan host-stack redirect filters.
pub const IPVLAN_REDIRECT_PRIORITY: u16 = 40000;
/// Prefix of every host-side veth we create.
pub const HOST_VETH_PREFIX: &str = "cali";

/// The host veth name: `cali` + first 11 hex digits of sha1(`namespace.name`[+ifname unless eth0]).
pub fn host_veth_name(namespace: &str, name: &str, if_name: &str) -> String {
    let mut h = Sha1::new();
    h.update(format!("{namespace}.{name}").as_bytes());
    if if_name != "eth0" && !if_name.is_empty() {
        h.update(if_name.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    format!("{HOST_VETH_PREFIX}{}", &digest[..11])
}

/// ENI route table id for an ENI ifindex.
pub fn eni_table(ifindex: u32) -> u32 {
    ENI_TABLE_BASE + ifindex
}

/// Who the pod is (for names and messages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Sandbox container id.
    pub container_id: String,
}

impl std::fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The ENI a shared/exclusive pod uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniRef {
    /// MAC of the ENI; the link is found by it.
    pub mac: MacAddr,
    /// vSwitch gateway of the ENI.
    pub gateway: Option<IpAddr>,
    /// IPv6 vSwitch gateway of the ENI (dual stack).
    pub gateway_v6: Option<std::net::Ipv6Addr>,
    /// Node primary IP (shared mode: the ENI's address in the host namespace).
    pub primary_ip: Option<IpAddr>,
}

/// Bandwidth limits in bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    /// Towards the pod (shaped on the host veth).
    pub ingress: Option<u64>,
    /// From the pod (shaped on the pod's interface).
    pub egress: Option<u64>,
}

/// Everything needed to program one pod interface (the datapath's view of the daemon's NetConf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    /// Pod identity.
    pub pod: PodIdentity,
    /// Interface name inside the pod (`eth0`).
    pub if_name: String,
    /// Pod IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Pod IPv6 address (dual stack; programmed by the veth drivers).
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// vSwitch CIDR (shared/exclusive) or node PodCIDR (VPC route).
    pub subnet_v4: Option<Ipv4Net>,
    /// vSwitch gateway.
    pub gateway_v4: Option<Ipv4Addr>,
    /// The ENI (absent in VPC-route mode).
    pub eni: Option<EniRef>,
    /// Node primary IP.
    pub node_ip: Option<IpAddr>,
    /// Kubernetes service CIDRs.
    pub service_cidrs: Vec<IpNet>,
    /// CIDRs forced through the host stack.
    pub host_stack_cidrs: Vec<IpNet>,
    /// Extra routes for the pod.
    pub extra_routes: Vec<IpNet>,
    /// Install the default route through this interface.
    pub default_route: bool,
    /// MTU of the pod interface.
    pub mtu: u32,
    /// Shaping.
    pub bandwidth: Bandwidth,
    /// Exclusive ENI: no veth1/cali peer.
    pub disable_host_peer: bool,
}

impl PodNetwork {
    /// The host-side veth name for this pod interface.
    pub fn host_veth(&self) -> String {
        host_veth_name(&self.pod.namespace, &self.pod.name, &self.if_name)
    }

    pub(crate) fn require_v4(&self) -> Result<Ipv4Addr> {
        self.ipv4.ok_or_else(|| {
            Error::Invalid(format!(
                "pod {}: no IPv4 address in the daemon's answer",
                self.pod
            ))
        })
    }

    pub(crate) fn require_eni(&self) -> Result<&EniRef> {
        self.eni.as_ref().ok_or_else(|| {
            Error::Invalid(format!("pod {}: no ENI in the daemon's answer", self.pod))
        })
    }

    /// The pod's IPv6 /128, when it has one.
    pub(crate) fn pod_net_v6(&self) -> Option<IpNet> {
        self.ipv6
            .and_then(|v6| ipnet::Ipv6Net::new(v6, 128).ok())
            .map(IpNet::V6)
    }

    /// Every pod address as a host prefix (/32, /128).
    pub(crate) fn pod_nets(&self) -> Result<Vec<IpNet>> {
        let mut v = vec![self.pod_net_v4()?];
        v.extend(self.pod_net_v6());
        Ok(v)
    }

    pub(crate) fn pod_net_v4(&self) -> Result<IpNet> {
        Ok(IpNet::V4(
            Ipv4Net::new(self.require_v4()?, 32).map_err(|e| Error::Invalid(e.to_string()))?,
        ))
    }

    fn validate_common(&self) -> Result<()> {
        self.require_v4()?;
        if self.ipv6.is_some() && self.ipv4.is_none() {
            return Err(Error::Invalid(format!(
                "pod {}: IPv6-only pods are not supported by this datapath",
                self.pod
            )));
        }
        if self.if_name.is_empty() || self.if_name.len() > 15 {
            return Err(Error::Invalid(format!(
                "pod {}: interface name {:?} must be 1-15 characters",
                self.pod, self.if_name
            )));
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(Error::Invalid(format!(
                "pod {}: MTU {} out of range",
                self.pod, self.mtu
            )));
        }
        Ok(())
    }
}

/// The host (node) namespace as drivers see it.
#[derive(Debug)]
pub struct HostCtx {
    /// Host namespace handle (sysctls).
    pub ns: Netns,
    /// Netlink socket inside it.
    pub nl: Netlink,
    /// Directory for per-ENI lock files.
    pub lock_dir: PathBuf,
    /// How many times to look for an ENI link by MAC.
    pub eni_wait_attempts: u32,
    /// Pause between lookups.
    pub eni_wait_interval: Duration,
}

impl HostCtx {
    /// Open the host context for namespace `ns` with Terway's defaults (10 × 1 s ENI wait).
    pub fn new(ns: Netns, lock_dir: PathBuf) -> Result<Self> {
        let nl = Netlink::open(&ns)?;
        Ok(Self {
            ns,
            nl,
            lock_dir,
            eni_wait_attempts: 10,
            eni_wait_interval: Duration::from_secs(1),
        })
    }
}

/// The pod namespace as drivers see it.
#[derive(Debug)]
pub struct PodCtx {
    /// Pod namespace handle.
    pub ns: Netns,
    /// Netlink socket inside it.
    pub nl: Netlink,
}

impl PodCtx {
    /// Open the pod namespace at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Self::new(Netns::open(path)?)
    }

    /// The pod context of an already open (and vetted, see [`Netns::open_pod`]) namespace.
    pub fn new(ns: Netns) -> Result<Self> {
        let nl = Netlink::open(&ns)?;
        Ok(Self { ns, nl })
    }
}

/// What setup produced, for the CNI result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupOutput {
    /// Host-side interface (name, MAC), when there is one.
    pub host_if: Option<(String, MacAddr)>,
    /// Pod interface (name, MAC).
    pub pod_if: (String, MacAddr),
    /// Pod addresses with their prefix and gateway.
    pub ips: Vec<(IpNet, Option<IpAddr>)>,
}

/// Which driver programs the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    /// Shared ENI, veth + policy routing.
    PolicyRoute,
    /// Shared ENI, ipvlan L2.
    Ipvlan,
    /// Whole ENI moved into the pod.
    ExclusiveEni,
    /// VPC route (node PodCIDR).
    VpcRoute,
}

/// One pod datapath.
#[allow(async_fn_in_trait)]
pub trait Driver {
    /// Check the request before touching the kernel.
    fn validate(&self, net: &PodNetwork) -> Result<()>;
    /// Program host and pod. On error the caller runs `teardown` to roll back.
    async fn setup(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<SetupOutput>;
    /// Verify the full state; the error names the first difference.
    async fn check(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<()>;
    /// Remove everything of this pod; works without the pod namespace and when called twice.
    async fn teardown(&self, host: &HostCtx, pod: Option<&PodCtx>, net: &PodNetwork) -> Result<()>;
}

/// The driver chosen for a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnyDriver {
    /// See [`PolicyRoute`].
    PolicyRoute(PolicyRoute),
    /// See [`Ipvlan`].
    Ipvlan(Ipvlan),
    /// See [`ExclusiveEni`].
    ExclusiveEni(ExclusiveEni),
    /// See [`VpcRoute`].
    VpcRoute(VpcRoute),
}

impl AnyDriver {
    /// The driver for `kind`.
    pub fn new(kind: DriverKind) -> Self {
        match kind {
            DriverKind::PolicyRoute => AnyDriver::PolicyRoute(PolicyRoute),
            DriverKind::Ipvlan => AnyDriver::Ipvlan(Ipvlan),
            DriverKind::ExclusiveEni => AnyDriver::ExclusiveEni(ExclusiveEni),
            DriverKind::VpcRoute => AnyDriver::VpcRoute(VpcRoute),
        }
    }

    /// Which driver this is.
    pub fn kind(&self) -> DriverKind {
        match self {
            AnyDriver::PolicyRoute(_) => DriverKind::PolicyRoute,
            AnyDriver::Ipvlan(_) => DriverKind::Ipvlan,
            AnyDriver::ExclusiveEni(_) => DriverKind::ExclusiveEni,
            AnyDriver::VpcRoute(_) => DriverKind::VpcRoute,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            AnyDriver::PolicyRoute($d) => $e,
            AnyDriver::Ipvlan($d) => $e,
            AnyDriver::ExclusiveEni($d) => $e,
            AnyDriver::VpcRoute($d) => $e,
        }
    };
}

impl Driver for AnyDriver {
    fn validate(&self, net: &PodNetwork) -> Result<()> {
        dispatch!(self, d => d.validate(net))
    }
    async fn setup(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<SetupOutput> {
        dispatch!(self, d => d.setup(host, pod, net).await)
    }
    async fn check(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<()> {
        dispatch!(self, d => d.check(host, pod, net).await)
    }
    async fn teardown(&self, host: &HostCtx, pod: Option<&PodCtx>, net: &PodNetwork) -> Result<()> {
        dispatch!(self, d => d.teardown(host, pod, net).await)
    }
}

/// Why the requested driver was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// What was asked for.
    pub requested: DriverKind,
    /// What is used instead.
    pub used: DriverKind,
    /// Human-readable reason (for the VirtualModeChanged event).
    pub reason: String,
}

/// Pure choice of driver (Terway's `getDatePath`): shared mode uses ipvlan only when asked for *and*
/// supported, otherwise policy routing; `datapathv2` is policy routing on this side.
pub fn choose_driver(
    mode: Mode,
    virtual_type: EniipVirtualType,
    ipvlan_supported: bool,
) -> (DriverKind, Option<Fallback>) {
    match mode {
        Mode::Exclusive => (DriverKind::ExclusiveEni, None),
        Mode::VpcRoute => (DriverKind::VpcRoute, None),
        Mode::Shared => match virtual_type {
            EniipVirtualType::Ipvlan if ipvlan_supported => (DriverKind::Ipvlan, None),
            EniipVirtualType::Ipvlan => (
                DriverKind::PolicyRoute,
                Some(Fallback {
                    requested: DriverKind::Ipvlan,
                    used: DriverKind::PolicyRoute,
                    reason: "the kernel cannot create ipvlan links (no ipvlan support); using veth policy routing".into(),
                }),
            ),
            _ => (DriverKind::PolicyRoute, None),
        },
    }
}

/// Pick the driver for a pod, probing the kernel for ipvlan when the configuration asks for it.
pub async fn select_driver(
    host: &HostCtx,
    mode: Mode,
    virtual_type: EniipVirtualType,
    net: &PodNetwork,
) -> Result<(AnyDriver, Option<Fallback>)> {
    let supported = if mode == Mode::Shared && virtual_type == EniipVirtualType::Ipvlan {
        let eni = common::find_eni(host, net).await?;
        probe_ipvlan(&host.nl, eni.index).await?
    } else {
        false
    };
    let (kind, fb) = choose_driver(mode, virtual_type, supported);
    Ok((AnyDriver::new(kind), fb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_name_is_terway_compatible() {
        // sha1("default.nginx") = 7d4d0b0f2f8c…; the name keeps the first 11 hex digits.
        let n = host_veth_name("default", "nginx", "eth0");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("cali"));
        let digest = hex::encode(Sha1::digest(b"default.nginx"));
        assert_eq!(&n[4..], &digest[..11]);
        assert_ne!(host_veth_name("default", "nginx", "eth1"), n);
        assert_eq!(host_veth_name("default", "nginx", ""), n);
        let d1 = hex::encode(Sha1::digest(b"default.nginxeth1"));
        assert_eq!(&host_veth_name("default", "nginx", "eth1")[4..], &d1[..11]);
    }

    #[test]
    fn driver_choice_matches_terway() {
        use EniipVirtualType::*;
        assert_eq!(
            choose_driver(Mode::Shared, Veth, true).0,
            DriverKind::PolicyRoute
        );
        assert_eq!(
            choose_driver(Mode::Shared, DatapathV2, true).0,
            DriverKind::PolicyRoute
        );
        assert_eq!(
            choose_driver(Mode::Shared, Ipvlan, true),
            (DriverKind::Ipvlan, None)
        );
        let (k, fb) = choose_driver(Mode::Shared, Ipvlan, false);
        assert_eq!(k, DriverKind::PolicyRoute);
        assert_eq!(fb.unwrap().requested, DriverKind::Ipvlan);
        assert_eq!(
            choose_driver(Mode::Exclusive, Ipvlan, false),
            (DriverKind::ExclusiveEni, None)
        );
        assert_eq!(
            choose_driver(Mode::VpcRoute, Veth, false),
            (DriverKind::VpcRoute, None)
        );
    }
}
