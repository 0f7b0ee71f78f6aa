//! Shared ENI, ipvlan L2 (reference §3.3). The pod's `eth0` is an ipvlan L2 slave of the ENI; the host
//! reaches pods through its own slave `ipvl_<ENI ifindex>` (NOARP, node IP/32 scope host, podIP/32 routes),
//! and a clsact u32 filter (prio 40000) on the ENI's egress redirects service and host-stack CIDRs into
//! that slave's ingress so kube-proxy sees them.
//!
//! Kernels without ipvlan are detected by [`probe_ipvlan`]; the factory then falls back to policy routing.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use rtnetlink::packet_route::link::IpVlanMode;

use super::common::{self, check_link, check_route};
use super::{
    owner, qos, Driver, HostCtx, PodCtx, PodNetwork, SetupOutput, IPVLAN_REDIRECT_PRIORITY,
};
use crate::addr::{self, Scope};
use crate::error::{Context, Error, ErrorList, Result};
use crate::link::{self, Link, LinkUpdate};
use crate::neigh;
use crate::nl::Netlink;
use crate::route::{self, Route, MAIN_TABLE};
use crate::tc::{self, RedirectActions};

/// The ipvlan L2 driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipvlan;

/// Name of the host-side ipvlan slave of ENI `ifindex`.
pub fn host_slave_name(eni_ifindex: u32) -> String {
    format!("ipvl_{eni_ifindex}")
}

/// Can this kernel create ipvlan links? Creates (and deletes) a throwaway slave on `parent_index`;
/// `EOPNOTSUPP` (no ipvlan module and no way to load it) means no.
pub async fn probe_ipvlan(nl: &Netlink, parent_index: u32) -> Result<bool> {
    if std::path::Path::new("/sys/module/ipvlan").exists() {
        return Ok(true);
    }
    let name = format!("ipvlprobe{:05x}", rand::random::<u32>() & 0xfffff);
    match link::create_ipvlan(nl, &name, parent_index, IpVlanMode::L2, None, None).await {
        Ok(()) => {
            link::remove_link_by_name(nl, &name).await?;
            Ok(true)
        }
        Err(e) if e.is_not_supported() => Ok(false),
        Err(e) => Err(e).context(|| format!("probe ipvlan support on ifindex {parent_index}")),
    }
}

fn v4_cidrs(net: &PodNetwork) -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = Vec::new();
    for c in net.service_cidrs.iter().chain(net.host_stack_cidrs.iter()) {
        if let IpNet::V4(c) = c {
            if !v.contains(c) {
                v.push(*c);
            }
        }
    }
    v
}

fn gateway(net: &PodNetwork) -> Result<IpAddr> {
    net.eni
        .as_ref()
        .and_then(|e| e.gateway)
        .or(net.gateway_v4.map(IpAddr::V4))
        .ok_or_else(|| Error::Invalid(format!("pod {}: no vSwitch gateway", net.pod)))
}

fn node_ip(net: &PodNetwork) -> Result<IpAddr> {
    net.node_ip
        .or(net.eni.as_ref().and_then(|e| e.primary_ip))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "pod {}: no node IP for the ipvlan host route",
                net.pod
            ))
        })
}

impl Ipvlan {
    /// The host slave on the ENI, the ENI's clsact and the redirect filters (all shared per ENI; caller holds
    /// the ENI lock).
    async fn ensure_host_slave(
        &self,
        host: &HostCtx,
        eni: &Link,
        net: &PodNetwork,
    ) -> Result<Link> {
        let name = host_slave_name(eni.index);
        let slave = match link::link_by_name(&host.nl, &name).await? {
            Some(l) => l,
            None => {
                link::create_ipvlan(
                    &host.nl,
                    &name,
                    eni.index,
                    IpVlanMode::L2,
                    None,
                    Some(net.mtu),
                )
                .await?;
                link::require_link(&host.nl, &name).await?
            }
        };
        link::update_link(
            &host.nl,
            slave.index,
            &LinkUpdate {
                up: Some(true),
                noarp: Some(true),
                ..Default::default()
            },
        )
        .await?;
        let host_ip = node_ip(net)?;
        let n = IpNet::new(host_ip, if host_ip.is_ipv4() { 32 } else { 128 })
            .map_err(|e| Error::Invalid(e.to_string()))?;
        addr::ensure_addr(&host.nl, slave.index, n, Scope::Host).await?;
        tc::ensure_clsact(&host.nl, eni.index).await?;
        // Replace the whole filter set so repeated ADDs never pile up duplicates.
        tc::remove_filters(&host.nl, eni.index, IPVLAN_REDIRECT_PRIORITY).await?;
        for c in v4_cidrs(net) {
            tc::ensure_redirect_filter(
                &host.nl,
                eni.index,
                IPVLAN_REDIRECT_PRIORITY,
                c,
                slave.index,
                RedirectActions::HostStack,
            )
            .await?;
        }
        Ok(slave)
    }
}

impl Driver for Ipvlan {
    fn validate(&self, net: &PodNetwork) -> Result<()> {
        net.validate_common()?;
        if let Some(v6) = net.ipv6 {
            tracing::warn!(pod = %net.pod, "IPv6 address {v6} is not programmed in ipvlan mode (IPv4 only)");
        }
        net.require_eni()?;
        gateway(net)?;
        node_ip(net).map(|_| ())
    }

    async fn setup(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<SetupOutput> {
        let what = || format!("set up ipvlan {} for pod {}", net.if_name, net.pod);
        let gw = gateway(net)?;
        let ip = net.require_v4()?;
        let prefix = net.subnet_v4.map(|s| s.prefix_len()).unwrap_or(32);
        let pod_addr =
            IpNet::new(IpAddr::V4(ip), prefix).map_err(|e| Error::Invalid(e.to_string()))?;
        let host_ip = node_ip(net)?;
        let eni = common::find_eni(host, net).await.context(what)?;
        // Before anything is programmed: a name held by a link that is not ours fails the ADD here.
        owner::free_pod_name(pod, &net.if_name, &net.pod.container_id)
            .await
            .context(what)?;
        let slave = {
            let _lock = common::lock_eni(host, net.require_eni()?.mac).await?;
            common::ensure_link_mtu_up(&host.nl, &eni, net.mtu)
                .await
                .context(what)?;
            self.ensure_host_slave(host, &eni, net)
                .await
                .context(what)?
        };
        link::create_ipvlan(
            &host.nl,
            &net.if_name,
            eni.index,
            IpVlanMode::L2,
            Some(&pod.ns),
            Some(net.mtu),
        )
        .await
        .context(what)?;
        let pod_link = link::require_link(&pod.nl, &net.if_name).await?;
        owner::claim_and_up(&pod.nl, pod_link.index, &net.pod.container_id)
            .await
            .context(what)?;
        let lo = link::require_link(&pod.nl, "lo").await?;
        link::set_up(&pod.nl, lo.index).await?;
        addr::set_addrs(&pod.nl, pod_link.index, &[(pod_addr, Scope::Universe)])
            .await
            .context(what)?;
        if net.default_route {
            route::ensure_route(
                &pod.nl,
                &Route::via_onlink(Route::default_dst(&gw), gw, pod_link.index),
            )
            .await
            .context(what)?;
        }
        let host_net = IpNet::new(host_ip, 32).map_err(|e| Error::Invalid(e.to_string()))?;
        route::ensure_route(&pod.nl, &Route::link_scope(host_net, pod_link.index))
            .await
            .context(what)?;
        let own_mac = pod_link
            .mac
            .ok_or_else(|| Error::LinkNotFound(format!("{} has no MAC", net.if_name)))?;
        // Slaves share the ENI MAC, so node-bound replies stay inside the ipvlan (Terway PR #207).
        neigh::ensure_permanent_neighbour(&pod.nl, pod_link.index, host_ip, own_mac)
            .await
            .context(what)?;
        route::ensure_route(&host.nl, &Route::link_scope(net.pod_net_v4()?, slave.index))
            .await
            .context(what)?;
        qos::ensure_shaping(&pod.nl, &pod_link, net.bandwidth.egress)
            .await
            .context(what)?;
        Ok(SetupOutput {
            host_if: None,
            pod_if: (net.if_name.clone(), own_mac),
            ips: vec![(pod_addr, Some(gw))],
        })
    }

    async fn check(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<()> {
        let gw = gateway(net)?;
        let eni = common::find_eni(host, net).await?;
        let pod_link = check_link(&pod.nl, &net.if_name, Some(net.mtu)).await?;
        if pod_link.kind.as_deref() != Some("ipvlan") {
            return Err(Error::Mismatch(format!(
                "{} in the pod is not an ipvlan",
                net.if_name
            )));
        }
        if net.default_route {
            check_route(
                &pod.nl,
                &Route::via_onlink(Route::default_dst(&gw), gw, pod_link.index),
            )
            .await?;
        }
        let slave = check_link(&host.nl, &host_slave_name(eni.index), None).await?;
        check_route(&host.nl, &Route::link_scope(net.pod_net_v4()?, slave.index)).await?;
        qos::check_shaping(&pod.nl, &pod_link, net.bandwidth.egress).await
    }

    async fn teardown(&self, host: &HostCtx, pod: Option<&PodCtx>, net: &PodNetwork) -> Result<()> {
        let mut errs = ErrorList::new();
        if let Some(p) = pod {
            let l = link::link_by_name(&p.nl, &net.if_name).await.ok().flatten();
            if l.is_some_and(|l| l.kind.as_deref() == Some("ipvlan")) {
                errs.collect(
                    owner::remove_own_pod_link(p, &net.if_name, &net.pod.container_id).await,
                );
            }
        }
        if let Ok(ip) = net.pod_net_v4() {
            let routes = route::list_routes(&host.nl, true, Some(MAIN_TABLE))
                .await
                .unwrap_or_default();
            for r in routes
                .into_iter()
                .filter(|r| r.dst == ip && r.gateway.is_none())
            {
                let via = link::link_by_index(&host.nl, r.oif.unwrap_or(0))
                    .await
                    .ok()
                    .flatten();
                if via.is_some_and(|l| l.name.starts_with("ipvl_")) {
                    errs.collect(route::remove_route(&host.nl, &r).await);
                }
            }
        }
        errs.into_result()
    }
}
