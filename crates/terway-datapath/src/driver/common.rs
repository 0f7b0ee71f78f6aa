//! Building blocks shared by the drivers: the veth pair, the pod's link-local gateway, host sysctls,
//! the ENI lookup and lock, and the state checks CHECK uses.

use std::fs::OpenOptions;
use std::net::IpAddr;

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};

use super::{owner, qos, HostCtx, PodCtx, PodNetwork, SetupOutput, LINK_LOCAL_GW, LINK_LOCAL_GW6};
use crate::addr::{self, Scope};
use crate::error::{Context, Error, Result};
use crate::link::{self, Link, LinkUpdate, MacAddr};
use crate::neigh;
use crate::nl::Netlink;
use crate::route::{self, Route};
use crate::rule::{self, Rule};
use crate::sysctl;

/// Find the pod's ENI in the host namespace by MAC, waiting (bounded) while it appears.
///
/// The kernel cannot look a link up by MAC, only dump every link, and a node's links grow with its pods.
/// So the ENI's index, once found, is remembered in the lock directory and tried first with one lookup by
/// index; the MAC decides, so a stale index (the ENI re-attached, the index reused) only costs the dump.
pub(crate) async fn find_eni(host: &HostCtx, net: &PodNetwork) -> Result<Link> {
    let eni = net.require_eni()?;
    let hint = eni_index_hint_path(host, eni.mac);
    let cached = std::fs::read_to_string(&hint)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(index) = cached {
        if let Some(l) = link::link_by_index(&host.nl, index).await? {
            if l.mac == Some(eni.mac) {
                return Ok(l);
            }
        }
    }
    let l = link::wait_link_by_mac(
        &host.nl,
        eni.mac,
        host.eni_wait_attempts,
        host.eni_wait_interval,
    )
    .await?;
    remember_eni_index(&hint, l.index);
    Ok(l)
}

fn eni_index_hint_path(host: &HostCtx, mac: MacAddr) -> std::path::PathBuf {
    host.lock_dir
        .join(format!("eni-{}.ifindex", mac.to_string().replace(':', "")))
}

/// Best effort (a missing hint only costs a dump): written to a temporary file and renamed, so a
/// concurrent ADD reads the old index or the new one, never a partial write.
fn remember_eni_index(hint: &std::path::Path, index: u32) {
    let tmp = hint.with_extension(format!("ifindex.{}", std::process::id()));
    let _ = std::fs::create_dir_all(hint.parent().unwrap_or(std::path::Path::new(".")));
    let ok = std::fs::write(&tmp, index.to_string()).and_then(|_| std::fs::rename(&tmp, hint));
    if let Err(e) = ok {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(hint = %hint.display(), error = %e, "cannot remember the ENI's index");
    }
}

/// Exclusive lock on one ENI's shared state (its address and route table) held while it is programmed, so
/// concurrent ADDs on other ENIs never wait (no global lock).
pub(crate) struct EniLock(#[allow(dead_code)] Flock<std::fs::File>);

pub(crate) async fn lock_eni(host: &HostCtx, mac: MacAddr) -> Result<EniLock> {
    let dir = host.lock_dir.clone();
    let path = dir.join(format!("eni-{}.lock", mac.to_string().replace(':', "")));
    let io = |e: std::io::Error| Error::Invalid(format!("lock file {}: {e}", path.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    // Uncontended in most ADDs: try without blocking first, and only wait for the lock on the blocking
    // pool (a thread, and its teardown at exit) when another plugin holds it.
    let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            tokio::task::spawn_blocking(move || Flock::lock(file, FlockArg::LockExclusive))
                .await
                .map_err(|e| Error::Invalid(format!("lock task: {e}")))?
        }
        Err(other) => Err(other),
    };
    locked
        .map(EniLock)
        .map_err(|(_, errno)| Error::Invalid(format!("lock {}: {errno}", path.display())))
}

/// §3.0 host settings: forwarding on, rp_filter off, globally and on the given links; with `v6` also IPv6
/// forwarding and `disable_ipv6=0` on those links.
pub(crate) fn ensure_host_sysctls(host: &HostCtx, links: &[&str], v6: bool) -> Result<()> {
    let mut pairs = vec![
        ("net.ipv4.conf.all.forwarding".to_string(), "1".to_string()),
        (
            "net.ipv4.conf.default.forwarding".to_string(),
            "1".to_string(),
        ),
        ("net.ipv4.conf.all.rp_filter".to_string(), "0".to_string()),
        (
            "net.ipv4.conf.default.rp_filter".to_string(),
            "0".to_string(),
        ),
    ];
    for l in links {
        pairs.push((sysctl::ipv4_link_key(l, "forwarding"), "1".into()));
        pairs.push((sysctl::ipv4_link_key(l, "rp_filter"), "0".into()));
    }
    if v6 {
        pairs.push(("net.ipv6.conf.all.forwarding".into(), "1".into()));
        for l in links {
            pairs.push((sysctl::ipv6_link_key(l, "disable_ipv6"), "0".into()));
            pairs.push((sysctl::ipv6_link_key(l, "forwarding"), "1".into()));
        }
    }
    sysctl::ensure_sysctls(&host.ns, &pairs)
}

/// Verify the §3.0 IPv4 host settings on `links` (and forwarding globally).
pub(crate) fn check_host_sysctls(host: &HostCtx, links: &[&str]) -> Result<()> {
    let mut want = vec![("net.ipv4.conf.all.forwarding".to_string(), "1")];
    for l in links {
        want.push((sysctl::ipv4_link_key(l, "forwarding"), "1"));
        want.push((sysctl::ipv4_link_key(l, "rp_filter"), "0"));
    }
    for (k, v) in want {
        let have = sysctl::read_sysctl(&host.ns, &k)?;
        if have != v {
            return Err(Error::Mismatch(format!("sysctl {k} is {have}, want {v}")));
        }
    }
    Ok(())
}

/// Create a fresh veth pair `host_name` ↔ `pod_name` (pod side directly in the pod namespace, marked as
/// `container_id`'s). An earlier pair of ours holding those names is removed and the pair created again; a
/// link that is not ours fails the setup instead (see [`super::owner`]). Both ends are up, `lo` in the pod
/// too.
///
/// The names are free in nearly every ADD (a new sandbox), so the pair is created first, the host end up in
/// the same request, and the names are looked at only when the kernel says one is taken: five round trips
/// instead of ten on the path every pod takes.
pub(crate) async fn create_veth_pair(
    host: &HostCtx,
    pod: &PodCtx,
    host_name: &str,
    pod_name: &str,
    mtu: u32,
    container_id: &str,
) -> Result<(Link, Link)> {
    let create = || link::create_veth_up(&host.nl, host_name, pod_name, &pod.ns, mtu);
    match create().await {
        Ok(()) => {}
        Err(e) if e.errno() == Some(crate::nl::EEXIST) => {
            // The host end first: deleting our old pair takes its pod end along, so what is left under
            // `pod_name` afterwards is someone else's unless it carries our mark.
            owner::free_host_veth_name(&host.nl, host_name, container_id).await?;
            owner::free_pod_name(pod, pod_name, container_id).await?;
            create().await?;
        }
        Err(e) => return Err(e),
    }
    let host_link = link::require_link(&host.nl, host_name).await?;
    let pod_link = link::require_link(&pod.nl, pod_name).await?;
    owner::claim_and_up(&pod.nl, pod_link.index, container_id).await?;
    link::set_up(&pod.nl, link::LOOPBACK_INDEX).await?;
    Ok((host_link, pod_link))
}

/// The link-local gateways of the address families the pod has, with the pod prefix of each.
fn gateways(net: &PodNetwork) -> Result<Vec<(IpAddr, IpNet)>> {
    let mut v = vec![(IpAddr::V4(LINK_LOCAL_GW), net.pod_net_v4()?)];
    if let Some(v6) = net.pod_net_v6() {
        v.push((IpAddr::V6(LINK_LOCAL_GW6), v6));
    }
    Ok(v)
}

/// Pod side of the veth modes, on the pod end of a pair [`create_veth_pair`] just made: `podIP/32` (and
/// `/128`), permanent neighbour 169.254.1.1 (fe80::1) → host veth MAC, default route via it onlink (when
/// this interface carries it) and extra routes via the same gateway. IPv6 needs
/// `disable_ipv6=0`/`accept_ra=0` in the pod first.
pub(crate) async fn setup_pod_gateway(
    pod: &PodCtx,
    pod_link: &Link,
    host_mac: MacAddr,
    net: &PodNetwork,
) -> Result<()> {
    let gws = gateways(net)?;
    if net.ipv6.is_some() {
        let mut pairs = Vec::new();
        for ifname in ["all", "default", "lo", pod_link.name.as_str()] {
            pairs.push((
                sysctl::ipv6_link_key(ifname, "disable_ipv6"),
                "0".to_string(),
            ));
        }
        pairs.push((
            sysctl::ipv6_link_key(&pod_link.name, "accept_ra"),
            "0".to_string(),
        ));
        sysctl::ensure_sysctls(&pod.ns, &pairs)?;
    }
    // The link was created by this ADD (`create_veth_pair`): it holds no address to replace.
    for (_, n) in &gws {
        addr::ensure_addr(&pod.nl, pod_link.index, *n, Scope::Universe).await?;
    }
    for (gw, _) in &gws {
        let gw = *gw;
        neigh::ensure_permanent_neighbour(&pod.nl, pod_link.index, gw, host_mac).await?;
        if net.default_route {
            route::ensure_route(
                &pod.nl,
                &Route::via_onlink(Route::default_dst(&gw), gw, pod_link.index),
            )
            .await?;
        }
        let extra: Vec<&IpNet> = net
            .extra_routes
            .iter()
            .filter(|d| d.addr().is_ipv4() == gw.is_ipv4())
            .collect();
        if !extra.is_empty() && gw.is_ipv4() {
            route::ensure_route(&pod.nl, &Route::link_scope(IpNet::from(gw), pod_link.index))
                .await?;
        }
        for dst in extra {
            route::ensure_route(&pod.nl, &Route::via_onlink(*dst, gw, pod_link.index)).await?;
        }
    }
    Ok(())
}

/// The veth modes' pod-gateway state, verified.
pub(crate) async fn check_pod_gateway(
    pod_nl: &Netlink,
    pod_link: &Link,
    host_mac: MacAddr,
    net: &PodNetwork,
) -> Result<()> {
    let n = neigh::list_neighbours(pod_nl, pod_link.index).await?;
    for (gw, pod_net) in gateways(net)? {
        check_addr(pod_nl, pod_link, pod_net).await?;
        if !n
            .iter()
            .any(|n| n.ip == gw && n.permanent && n.mac == Some(host_mac))
        {
            return Err(Error::Mismatch(format!(
                "{}: no permanent neighbour {gw} lladdr {host_mac}",
                pod_link.name
            )));
        }
        if net.default_route {
            check_route(
                pod_nl,
                &Route::via_onlink(Route::default_dst(&gw), gw, pod_link.index),
            )
            .await?;
        }
        for dst in net
            .extra_routes
            .iter()
            .filter(|d| d.addr().is_ipv4() == gw.is_ipv4())
        {
            check_route(pod_nl, &Route::via_onlink(*dst, gw, pod_link.index)).await?;
        }
    }
    Ok(())
}

/// Look up a link and verify it is up with the expected MTU.
pub(crate) async fn check_link(nl: &Netlink, name: &str, mtu: Option<u32>) -> Result<Link> {
    let l = link::link_by_name(nl, name)
        .await?
        .ok_or_else(|| Error::Mismatch(format!("link {name} is missing in {}", nl.namespace())))?;
    if !l.up {
        return Err(Error::Mismatch(format!("link {name} is down")));
    }
    if let Some(m) = mtu {
        if l.mtu != m {
            return Err(Error::Mismatch(format!(
                "link {name} has MTU {} instead of {m}",
                l.mtu
            )));
        }
    }
    Ok(l)
}

/// Verify `net` is on `link`.
pub(crate) async fn check_addr(nl: &Netlink, link: &Link, net: IpNet) -> Result<()> {
    if addr::list_addrs(nl, Some(link.index))
        .await?
        .iter()
        .any(|a| a.net == net)
    {
        Ok(())
    } else {
        Err(Error::Mismatch(format!(
            "address {net} is missing on {}",
            link.name
        )))
    }
}

/// Verify a route exists.
pub(crate) async fn check_route(nl: &Netlink, want: &Route) -> Result<()> {
    let have = route::list_routes(nl, want.dst.addr().is_ipv4(), Some(want.table)).await?;
    if have.iter().any(|r| want.matches(r)) {
        Ok(())
    } else {
        Err(Error::Mismatch(format!(
            "route {want} is missing in {}",
            nl.namespace()
        )))
    }
}

/// Verify a rule exists.
pub(crate) async fn check_rule(nl: &Netlink, want: &Rule) -> Result<()> {
    if rule::list_rules(nl, want.v4).await?.contains(want) {
        Ok(())
    } else {
        Err(Error::Mismatch(format!("rule {want} is missing")))
    }
}

/// Rename-free MTU/up for an existing link.
pub(crate) async fn ensure_link_mtu_up(nl: &Netlink, l: &Link, mtu: u32) -> Result<()> {
    if l.mtu != mtu || !l.up {
        link::update_link(
            nl,
            l.index,
            &LinkUpdate {
                mtu: Some(mtu),
                up: Some(true),
                ..Default::default()
            },
        )
        .await
        .context(|| format!("set MTU {mtu} and up on {}", l.name))?;
    }
    Ok(())
}

/// The pod's output addresses: each pod prefix with its link-local gateway.
fn outputs(net: &PodNetwork) -> Result<Vec<(IpNet, Option<IpAddr>)>> {
    Ok(gateways(net)?
        .into_iter()
        .map(|(gw, prefix)| (prefix, Some(gw)))
        .collect())
}

/// How long a fresh veth may take to pass packets before ADD returns anyway (with a warning).
const VETH_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The tail of every veth mode's setup: shaping on the pair, then wait until both ends pass packets,
/// and the result. The kernel activates a new link's queue from a deferred worker and drops what is
/// sent before that; a pod whose first DNS query is lost waits seconds for its retry.
pub(crate) async fn finish_veth_setup(
    host: &HostCtx,
    pod: &PodCtx,
    net: &PodNetwork,
    host_link: &Link,
    pod_link: &Link,
) -> Result<SetupOutput> {
    qos::apply_to_new_pair(&host.nl, Some(host_link), &pod.nl, pod_link, net.bandwidth).await?;
    for (nl, l) in [(&pod.nl, pod_link), (&host.nl, host_link)] {
        match link::wait_oper_up(nl, l.index, VETH_READY_TIMEOUT).await {
            Ok(_) => {}
            // Addresses and routes are in place; the link will pass packets once the kernel gets to it.
            Err(Error::LinkNotReady(msg)) => {
                tracing::warn!(pod = %net.pod, "{msg}; returning anyway")
            }
            Err(e) => return Err(e),
        }
    }
    let host_mac = host_link
        .mac
        .ok_or_else(|| Error::LinkNotFound(format!("{} has no MAC", host_link.name)))?;
    let pod_mac = pod_link
        .mac
        .ok_or_else(|| Error::LinkNotFound(format!("{} has no MAC", net.if_name)))?;
    Ok(SetupOutput {
        host_if: Some((host_link.name.clone(), host_mac)),
        pod_if: (net.if_name.clone(), pod_mac),
        ips: outputs(net)?,
    })
}
