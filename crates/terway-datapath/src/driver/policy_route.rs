//! Shared ENI, veth + policy routing (Terway's default "veth" datapath, reference §3.2).
//!
//! Pod: `eth0` podIP/32, default via 169.254.1.1 onlink, permanent neighbour 169.254.1.1 → host veth MAC.
//! Host: `cali…` with podIP/32 scope link in main; the ENI holds the node primary IP/32 and its table
//! 1000+ifindex has `default via <vSwitch gw> onlink`; rules `512: to podIP lookup main` and
//! `2048: from podIP lookup 1000+ifindex`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::common::{self, check_link, check_route, check_rule};
use super::{eni_table, owner, qos, Driver, HostCtx, PodCtx, PodNetwork, SetupOutput};
use super::{FROM_CONTAINER_PRIORITY, TO_CONTAINER_PRIORITY};
use crate::addr::{self, Scope};
use crate::error::{Context, Error, ErrorList, Result};
use crate::link::{self, Link};
use crate::nl::Netlink;
use crate::route::{self, Route, MAIN_TABLE};
use crate::rule::{self, Rule};

/// The policy-route veth driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyRoute;

/// ENI table default route: `default via gw dev eni onlink table 1000+ifindex`.
pub fn eni_default_route(eni: &Link, gw: IpAddr) -> Route {
    Route::via_onlink(Route::default_dst(&gw), gw, eni.index).in_table(eni_table(eni.index))
}

/// The two rules of a pod IP for the ENI with `ifindex`.
pub fn pod_rules(pod_ip: IpNet, eni_ifindex: u32) -> [Rule; 2] {
    [
        Rule::to_dst(TO_CONTAINER_PRIORITY, pod_ip, MAIN_TABLE),
        Rule::from_src(FROM_CONTAINER_PRIORITY, pod_ip, eni_table(eni_ifindex)),
    ]
}

/// Program the ENI's shared state (MTU, up, node IP/32, table default route) under the per-ENI lock.
pub(crate) async fn ensure_eni(host: &HostCtx, eni: &Link, net: &PodNetwork) -> Result<()> {
    let eref = net.require_eni()?;
    let gw = eref
        .gateway
        .or(net.gateway_v4.map(IpAddr::V4))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "pod {}: no vSwitch gateway for ENI {}",
                net.pod, eref.mac
            ))
        })?;
    let _lock = common::lock_eni(host, eref.mac).await?;
    common::ensure_link_mtu_up(&host.nl, eni, net.mtu).await?;
    // §3.2: the ENI carries the node's primary IP/32; the ENI-reported address is the fallback.
    if let Some(primary) = net.node_ip.or(eref.primary_ip) {
        let prefix = if primary.is_ipv4() { 32 } else { 128 };
        let n = IpNet::new(primary, prefix).map_err(|e| Error::Invalid(e.to_string()))?;
        addr::set_addrs(&host.nl, eni.index, &[(n, Scope::Universe)]).await?;
    }
    route::ensure_route(&host.nl, &eni_default_route(eni, gw)).await?;
    if let (Some(gw6), true) = (eref.gateway_v6, net.ipv6.is_some()) {
        let gw6 = IpAddr::V6(gw6);
        route::ensure_route(&host.nl, &Route::link_scope(IpNet::from(gw6), eni.index)).await?;
        route::ensure_route(&host.nl, &eni_default_route(eni, gw6)).await?;
    }
    Ok(())
}

/// Remove the host-side state of `pod_ip` that does not go away with the veth: rules 512/2048 (whatever
/// table they point to, the ENI may have been re-attached since).
pub async fn remove_pod_rules(nl: &Netlink, pod_ip: IpNet) -> Result<usize> {
    rule::remove_rules_where(nl, pod_ip.addr().is_ipv4(), |r| {
        (r.priority == TO_CONTAINER_PRIORITY && r.dst == Some(pod_ip) && r.src.is_none())
            || (r.priority == FROM_CONTAINER_PRIORITY && r.src == Some(pod_ip) && r.dst.is_none())
    })
    .await
}

impl Driver for PolicyRoute {
    fn validate(&self, net: &PodNetwork) -> Result<()> {
        net.validate_common()?;
        let eni = net.require_eni()?;
        if eni.gateway.is_none() && net.gateway_v4.is_none() {
            return Err(Error::Invalid(format!(
                "pod {}: no vSwitch gateway",
                net.pod
            )));
        }
        Ok(())
    }

    async fn setup(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<SetupOutput> {
        let hv = net.host_veth();
        let what = || format!("set up veth {hv} for pod {}", net.pod);
        let pod_ips = net.pod_nets()?;
        let eni = common::find_eni(host, net).await.context(what)?;
        let (host_link, pod_link) =
            common::create_veth_pair(host, pod, &hv, &net.if_name, net.mtu, &net.pod.container_id)
                .await
                .context(what)?;
        let host_mac = host_link
            .mac
            .ok_or_else(|| Error::LinkNotFound(format!("{hv} has no MAC")))?;
        common::setup_pod_gateway(pod, &pod_link, host_mac, net)
            .await
            .context(what)?;
        common::ensure_host_sysctls(host, &[&hv, &eni.name], net.ipv6.is_some()).context(what)?;
        for ip in &pod_ips {
            route::ensure_route(&host.nl, &Route::link_scope(*ip, host_link.index))
                .await
                .context(what)?;
        }
        ensure_eni(host, &eni, net)
            .await
            .context(|| format!("configure ENI {} for pod {}", eni.name, net.pod))?;
        for ip in &pod_ips {
            for r in pod_rules(*ip, eni.index) {
                rule::ensure_rule(&host.nl, &r).await.context(what)?;
            }
        }
        common::finish_veth_setup(host, pod, net, &host_link, &pod_link)
            .await
            .context(what)
    }

    async fn check(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<()> {
        let hv = net.host_veth();
        let pod_ips = net.pod_nets()?;
        let host_link = check_link(&host.nl, &hv, Some(net.mtu)).await?;
        let pod_link = check_link(&pod.nl, &net.if_name, Some(net.mtu)).await?;
        if pod_link.parent_index != Some(host_link.index) {
            return Err(Error::Mismatch(format!(
                "{} in the pod is not the peer of {hv}",
                net.if_name
            )));
        }
        let host_mac = host_link
            .mac
            .ok_or_else(|| Error::Mismatch(format!("{hv} has no MAC")))?;
        common::check_pod_gateway(&pod.nl, &pod_link, host_mac, net).await?;
        for ip in &pod_ips {
            check_route(&host.nl, &Route::link_scope(*ip, host_link.index)).await?;
        }
        let eni = common::find_eni(host, net).await?;
        common::check_host_sysctls(host, &[&hv, &eni.name])?;
        let gw = net
            .require_eni()?
            .gateway
            .or(net.gateway_v4.map(IpAddr::V4));
        if let Some(gw) = gw {
            check_route(&host.nl, &eni_default_route(&eni, gw)).await?;
        }
        if let (Some(gw6), true) = (net.require_eni()?.gateway_v6, net.ipv6.is_some()) {
            check_route(&host.nl, &eni_default_route(&eni, IpAddr::V6(gw6))).await?;
        }
        for ip in &pod_ips {
            for r in pod_rules(*ip, eni.index) {
                check_rule(&host.nl, &r).await?;
            }
        }
        qos::check_shaping(&pod.nl, &pod_link, net.bandwidth.egress).await?;
        qos::check_shaping(&host.nl, &host_link, net.bandwidth.ingress).await
    }

    async fn teardown(&self, host: &HostCtx, pod: Option<&PodCtx>, net: &PodNetwork) -> Result<()> {
        teardown_veth(host, pod, net).await
    }
}

/// Host-side cleanup shared by the veth modes. Everything that references the pod IP on the host (rules,
/// the /32 route) is removed before this returns. While the pod netns still exists the host veth is only
/// retired (down + tagged, see [`super::retire`]): the netns removal destroys the pair without DEL waiting
/// for it. Without the netns a leftover host veth is deleted right away.
pub(crate) async fn teardown_veth(
    host: &HostCtx,
    pod: Option<&PodCtx>,
    net: &PodNetwork,
) -> Result<()> {
    let hv = net.host_veth();
    let mut errs = ErrorList::new();
    let retired = if pod.is_some() {
        errs.collect(
            super::retire::retire_host_veth(&host.nl, &hv, &net.pod.container_id)
                .await
                .context(|| format!("retire {hv} of pod {}", net.pod)),
        )
        .unwrap_or(false)
    } else {
        errs.collect(
            owner::remove_host_veth(&host.nl, &hv)
                .await
                .map(|_| ())
                .context(|| format!("delete {hv} of pod {}", net.pod)),
        );
        false
    };
    let ips: Vec<IpNet> = net
        .pod_net_v4()
        .ok()
        .into_iter()
        .chain(net.pod_net_v6())
        .collect();
    for ip in ips {
        errs.collect(
            remove_pod_rules(&host.nl, ip)
                .await
                .map(|_| ())
                .context(|| format!("delete rules of {ip}")),
        );
        // The kernel flushes the host route when the veth goes down or away; remove a stale one explicitly.
        let stale = route::list_routes(&host.nl, ip.addr().is_ipv4(), Some(MAIN_TABLE))
            .await
            .unwrap_or_default();
        for r in stale
            .into_iter()
            .filter(|r| r.dst == ip && r.gateway.is_none())
        {
            let still_ours = link::link_by_index(&host.nl, r.oif.unwrap_or(0))
                .await
                .ok()
                .flatten();
            if still_ours.is_none_or(|l| l.name == hv) {
                errs.collect(route::remove_route(&host.nl, &r).await);
            }
        }
    }
    // A pod interface of ours whose host peer is already gone (an interrupted ADD) is removed here; with a
    // retired peer it goes with the netns. Only ours: in a failed ADD the name may belong to a link that was
    // there before (the node's own eth0, if the runtime passed the node's namespace).
    if let (Some(p), false) = (pod, retired) {
        errs.collect(owner::remove_own_pod_link(p, &net.if_name, &net.pod.container_id).await);
    }
    errs.into_result()
}
