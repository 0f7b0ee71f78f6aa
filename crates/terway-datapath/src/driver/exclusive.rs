//! Exclusive ENI (reference §3.6): the ENI itself becomes the pod's `eth0` (podIP/32, default via the
//! vSwitch gateway onlink); a `veth1`/`cali…` pair carries service and host-stack traffic through the node
//! unless `disable_host_peer`. The ENI's original name is remembered in its `ifalias` so DEL can move it
//! back to the host namespace under that name, ready for reuse.

use std::net::IpAddr;

use ipnet::IpNet;

use super::common::{self, check_link, check_route};
use super::{owner, qos, Driver, HostCtx, PodCtx, PodNetwork, SetupOutput, LINK_LOCAL_GW};
use crate::addr::{self, Scope};
use crate::error::{Context, Error, ErrorList, Result};
use crate::link::{self, Link, LinkUpdate};
use crate::neigh;
use crate::route::{self, Route};

/// The exclusive-ENI driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExclusiveEni;

/// `ifalias` prefix recording the ENI's name in the host namespace.
pub const ORIGINAL_NAME_ALIAS: &str = "terway-eni-orig:";
/// Name of the host-peer interface inside the pod.
pub const HOST_PEER_IF: &str = "veth1";

fn original_name(l: &Link) -> Option<String> {
    l.alias
        .as_deref()
        .and_then(|a| a.strip_prefix(ORIGINAL_NAME_ALIAS))
        .map(str::to_string)
}

fn gateway(net: &PodNetwork) -> Result<IpAddr> {
    net.eni
        .as_ref()
        .and_then(|e| e.gateway)
        .or(net.gateway_v4.map(IpAddr::V4))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "pod {}: no vSwitch gateway for the exclusive ENI",
                net.pod
            ))
        })
}

fn wants_host_peer(net: &PodNetwork) -> bool {
    !net.disable_host_peer && net.if_name == "eth0"
}

/// Routes on `veth1`: 169.254.1.1 scope link, then service CIDRs, the node IP and host-stack CIDRs via it.
fn peer_routes(net: &PodNetwork, veth1: u32) -> Vec<Route> {
    let gw = IpAddr::V4(LINK_LOCAL_GW);
    let mut v = vec![Route::link_scope(
        IpNet::from(IpAddr::V4(LINK_LOCAL_GW)),
        veth1,
    )];
    let mut dsts: Vec<IpNet> = net.service_cidrs.clone();
    if let Some(IpAddr::V4(n)) = net.node_ip {
        dsts.push(IpNet::from(IpAddr::V4(n)));
    }
    dsts.extend(net.host_stack_cidrs.iter().copied());
    for d in dsts.into_iter().filter(|d| d.addr().is_ipv4()) {
        let r = Route::via_onlink(d, gw, veth1);
        if !v.contains(&r) {
            v.push(r);
        }
    }
    v
}

impl ExclusiveEni {
    /// Move the ENI into the pod as `if_name`, unless it is already there (ADD repeated).
    async fn adopt_eni(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<Link> {
        let mac = net.require_eni()?.mac;
        if let Some(l) = link::link_by_mac(&pod.nl, mac).await? {
            if l.name != net.if_name {
                link::set_down(&pod.nl, l.index).await?;
                link::rename(&pod.nl, l.index, &net.if_name).await?;
            }
            return link::require_link(&pod.nl, &net.if_name).await;
        }
        let eni = common::find_eni(host, net).await?;
        // Before the ENI is touched: a name held by a link that is not ours fails the ADD here.
        owner::free_pod_name(pod, &net.if_name, &net.pod.container_id).await?;
        if original_name(&eni).is_none() {
            let alias = format!("{ORIGINAL_NAME_ALIAS}{}", eni.name);
            link::update_link(
                &host.nl,
                eni.index,
                &LinkUpdate {
                    alias: Some(alias),
                    ..Default::default()
                },
            )
            .await?;
        }
        link::set_down(&host.nl, eni.index).await?;
        link::move_to_netns(&host.nl, eni.index, &pod.ns, Some(&net.if_name)).await?;
        link::require_link(&pod.nl, &net.if_name).await
    }

    async fn setup_host_peer(
        &self,
        host: &HostCtx,
        pod: &PodCtx,
        net: &PodNetwork,
    ) -> Result<(String, crate::MacAddr)> {
        let hv = net.host_veth();
        let pod_ip = net.pod_net_v4()?;
        let (host_link, peer) =
            common::create_veth_pair(host, pod, &hv, HOST_PEER_IF, net.mtu, &net.pod.container_id)
                .await?;
        let host_mac = host_link
            .mac
            .ok_or_else(|| Error::LinkNotFound(format!("{hv} has no MAC")))?;
        addr::set_addrs(&pod.nl, peer.index, &[(pod_ip, Scope::Universe)]).await?;
        neigh::ensure_permanent_neighbour(&pod.nl, peer.index, IpAddr::V4(LINK_LOCAL_GW), host_mac)
            .await?;
        for r in peer_routes(net, peer.index) {
            route::ensure_route(&pod.nl, &r).await?;
        }
        common::ensure_host_sysctls(host, &[&hv], false)?;
        route::ensure_route(&host.nl, &Route::link_scope(pod_ip, host_link.index)).await?;
        Ok((hv, host_mac))
    }
}

impl Driver for ExclusiveEni {
    fn validate(&self, net: &PodNetwork) -> Result<()> {
        net.validate_common()?;
        if let Some(v6) = net.ipv6 {
            tracing::warn!(pod = %net.pod, "IPv6 address {v6} is not programmed in exclusive-ENI mode (IPv4 only)");
        }
        net.require_eni()?;
        gateway(net).map(|_| ())
    }

    async fn setup(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<SetupOutput> {
        let what = || {
            format!(
                "move ENI {} into pod {}",
                net.eni
                    .as_ref()
                    .map(|e| e.mac.to_string())
                    .unwrap_or_default(),
                net.pod
            )
        };
        let gw = gateway(net)?;
        let pod_ip = net.pod_net_v4()?;
        let eni = self.adopt_eni(host, pod, net).await.context(what)?;
        common::ensure_link_mtu_up(&pod.nl, &eni, net.mtu)
            .await
            .context(what)?;
        let lo = link::require_link(&pod.nl, "lo").await?;
        link::set_up(&pod.nl, lo.index).await?;
        addr::set_addrs(&pod.nl, eni.index, &[(pod_ip, Scope::Universe)])
            .await
            .context(what)?;
        if net.default_route {
            route::ensure_route(
                &pod.nl,
                &Route::via_onlink(Route::default_dst(&gw), gw, eni.index),
            )
            .await
            .context(what)?;
        }
        for dst in net.extra_routes.iter().filter(|d| d.addr().is_ipv4()) {
            route::ensure_route(&pod.nl, &Route::via_onlink(*dst, gw, eni.index))
                .await
                .context(what)?;
        }
        let host_if = if wants_host_peer(net) {
            Some(
                self.setup_host_peer(host, pod, net)
                    .await
                    .context(|| format!("set up host peer of pod {}", net.pod))?,
            )
        } else {
            None
        };
        let eni = link::require_link(&pod.nl, &net.if_name).await?;
        qos::ensure_shaping(&pod.nl, &eni, net.bandwidth.egress)
            .await
            .context(what)?;
        let mac = eni
            .mac
            .ok_or_else(|| Error::LinkNotFound(format!("{} has no MAC", net.if_name)))?;
        Ok(SetupOutput {
            host_if,
            pod_if: (net.if_name.clone(), mac),
            ips: vec![(pod_ip, Some(gw))],
        })
    }

    async fn check(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<()> {
        let gw = gateway(net)?;
        let pod_ip = net.pod_net_v4()?;
        let eni = check_link(&pod.nl, &net.if_name, Some(net.mtu)).await?;
        if eni.mac != Some(net.require_eni()?.mac) {
            return Err(Error::Mismatch(format!(
                "{} in the pod is not the ENI {}",
                net.if_name,
                net.require_eni()?.mac
            )));
        }
        common::check_addr(&pod.nl, &eni, pod_ip).await?;
        if net.default_route {
            check_route(
                &pod.nl,
                &Route::via_onlink(Route::default_dst(&gw), gw, eni.index),
            )
            .await?;
        }
        if wants_host_peer(net) {
            let hv = net.host_veth();
            let host_link = check_link(&host.nl, &hv, Some(net.mtu)).await?;
            let peer = check_link(&pod.nl, HOST_PEER_IF, Some(net.mtu)).await?;
            if peer.parent_index != Some(host_link.index) {
                return Err(Error::Mismatch(format!(
                    "{HOST_PEER_IF} in the pod is not the peer of {hv}"
                )));
            }
            common::check_addr(&pod.nl, &peer, pod_ip).await?;
            for r in peer_routes(net, peer.index) {
                check_route(&pod.nl, &r).await?;
            }
            check_route(&host.nl, &Route::link_scope(pod_ip, host_link.index)).await?;
        }
        qos::check_shaping(&pod.nl, &eni, net.bandwidth.egress).await
    }

    async fn teardown(&self, host: &HostCtx, pod: Option<&PodCtx>, net: &PodNetwork) -> Result<()> {
        let mut errs = ErrorList::new();
        let hv = net.host_veth();
        errs.collect(
            owner::remove_host_veth(&host.nl, &hv)
                .await
                .map(|_| ())
                .context(|| format!("delete {hv} of pod {}", net.pod)),
        );
        let Some(eni) = net.eni.as_ref() else {
            return errs.into_result();
        };
        let give_back = async {
            if let Some(p) = pod {
                if let Some(l) = link::link_by_mac(&p.nl, eni.mac).await? {
                    // Qdiscs travel with the device; the next pod must not inherit this one's shaping.
                    qos::ensure_shaping(&p.nl, &l, None).await?;
                    link::set_down(&p.nl, l.index).await?;
                    // Addresses and routes are flushed by the namespace move itself.
                    let name = original_name(&l).unwrap_or_else(|| {
                        format!("eni{}", &eni.mac.to_string().replace(':', "")[6..])
                    });
                    let target = if link::link_by_name(&host.nl, &name).await?.is_some() {
                        format!("eni{}", &eni.mac.to_string().replace(':', "")[6..])
                    } else {
                        name
                    };
                    link::move_to_netns(&p.nl, l.index, &host.ns, Some(&target)).await?;
                }
            }
            // The ENI is (now, or already was, e.g. after the netns vanished) in the host: restore its name.
            if let Some(l) = link::link_by_mac(&host.nl, eni.mac).await? {
                qos::ensure_shaping(&host.nl, &l, None).await?;
                if let Some(orig) = original_name(&l) {
                    if orig != l.name && link::link_by_name(&host.nl, &orig).await?.is_none() {
                        link::set_down(&host.nl, l.index).await?;
                        link::rename(&host.nl, l.index, &orig).await?;
                    }
                }
                link::update_link(
                    &host.nl,
                    l.index,
                    &LinkUpdate {
                        alias: Some(String::new()),
                        up: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            }
            Ok::<(), Error>(())
        };
        errs.collect(
            give_back
                .await
                .context(|| format!("return ENI {} of pod {} to the host", eni.mac, net.pod)),
        );
        errs.into_result()
    }
}
