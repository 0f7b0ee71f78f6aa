//! DEL and CHECK.
//!
//! DEL removes host-side state by container identity even when the netns is gone (host veth name from the
//! pod's namespace/name, rules by the pod IP the daemon recorded), then releases the IP. It succeeds when
//! called twice and when the daemon no longer knows the pod. A DEL for an older sandbox of the same pod
//! (container id mismatch) leaves the kernel alone: that state belongs to the new sandbox.

use std::net::IpAddr;
use std::path::Path;

use cni_protocol::{AttachmentRequest, CniError};
use terway_datapath::conntrack::{self, Flush};
use terway_datapath::driver::{
    self, owner, policy_route, retire, Driver, HostCtx, PodCtx, PodIdentity, PodNetwork,
};
use terway_datapath::{route, ErrorList};
use terway_rpc::v1::{GetIpInfoReply, GetIpInfoRequest, ReleaseIpRequest};
use tonic::Code;

use crate::add::{drivers_for, networks};
use crate::config::PluginConf;
use crate::daemon::{self, map_status, Daemon};
use crate::{
    convert, datapath_error, host_ctx, open_pod_netns, pod_ctx_if_present, pod_identity, pod_ref,
};

/// Reason sent with ReleaseIP on a normal DEL.
pub const RELEASE_REASON: &str = "normal release";

async fn ip_info(
    d: &mut Daemon,
    req: &AttachmentRequest,
    pod: &PodIdentity,
) -> Result<Option<GetIpInfoReply>, CniError> {
    match d
        .backend
        .get_ip_info(GetIpInfoRequest {
            pod: Some(pod_ref(req, pod)),
            if_name: req.ifname.clone(),
        })
        .await
    {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(map_status(&format!("look up pod {pod}"), &s)),
    }
}

/// Cleanup without the daemon's per-IP answer. With `by_name` (the daemon confirmed no sandbox of the pod
/// is live, so the host veth named after the pod is stale) the host veth is retired while the pod netns
/// exists (it goes with the netns, see `terway_datapath::driver::retire`) and deleted otherwise. Without
/// `by_name` a newer sandbox of the same pod may own that name: only the pod-side link terway created for
/// *this* sandbox is ours, and it is deleted (a veth's host peer goes with it) — a rare error path that may
/// be slow. A link that merely has the interface name is left alone.
async fn teardown_by_name(
    host: &HostCtx,
    pod: Option<&PodCtx>,
    p: &PodIdentity,
    ifname: &str,
    by_name: bool,
) -> Result<(), CniError> {
    let hv = driver::host_veth_name(&p.namespace, &p.name, ifname);
    if by_name {
        if pod.is_some() {
            retire::retire_host_veth(&host.nl, &hv, &p.container_id)
                .await
                .map_err(datapath_error)?;
        } else {
            owner::remove_host_veth(&host.nl, &hv)
                .await
                .map_err(datapath_error)?;
        }
        return Ok(());
    }
    if let Some(pc) = pod {
        owner::remove_own_pod_link(pc, ifname, &p.container_id)
            .await
            .map_err(datapath_error)?;
    }
    Ok(())
}

/// Run DEL.
pub async fn del(req: &AttachmentRequest, conf: &PluginConf) -> Result<(), CniError> {
    let pod = match pod_identity(req) {
        Ok(p) => p,
        // Without the pod's name nothing of ours can be identified; DEL must not fail forever.
        Err(e) => {
            tracing::warn!("DEL without Kubernetes pod identity, nothing to do: {e}");
            return Ok(());
        }
    };
    // First, so that a DEL for the node's own namespace changes nothing at all.
    let pod_ctx = pod_ctx_if_present(req.netns.as_ref().map(|n| n.path()), conf)?;
    let host = host_ctx(conf)?;
    crate::sweep_retired(&host, false).await;
    let mut d = match daemon::connect(
        Path::new(&conf.terway.daemon_socket),
        conf.terway.daemon_timeout(),
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            // Clean what we can, then ask the runtime to retry so the IP is released later.
            let _ = teardown_by_name(&host, pod_ctx.as_ref(), &pod, &req.ifname, false).await;
            return Err(e);
        }
    };
    let info = match ip_info(&mut d, req, &pod).await {
        Ok(Some(info)) => info,
        // The daemon knows no sandbox of this pod: nothing live can share the host veth name.
        Ok(None) => {
            teardown_by_name(&host, pod_ctx.as_ref(), &pod, &req.ifname, true).await?;
            cleanup_prev_result(&host, req, &pod).await;
            return Ok(());
        }
        Err(e) => {
            let _ = teardown_by_name(&host, pod_ctx.as_ref(), &pod, &req.ifname, false).await;
            return Err(e);
        }
    };
    if !info.container_id.is_empty() && info.container_id != pod.container_id {
        tracing::info!(pod = %pod, "DEL for stale sandbox {} (current {}), kernel state left to the current one", pod.container_id, info.container_id);
    } else {
        teardown(req, conf, &host, pod_ctx.as_ref(), &pod, &info).await?;
    }
    d.backend
        .release_ip(ReleaseIpRequest {
            pod: Some(pod_ref(req, &pod)),
            reason: RELEASE_REASON.into(),
            if_name: req.ifname.clone(),
        })
        .await
        .map_err(|s| map_status(&format!("release IP of pod {pod}"), &s))?;
    Ok(())
}

async fn teardown(
    req: &AttachmentRequest,
    conf: &PluginConf,
    host: &HostCtx,
    pod_ctx: Option<&PodCtx>,
    pod: &PodIdentity,
    info: &GetIpInfoReply,
) -> Result<(), CniError> {
    let mode = convert::mode_of(info.mode)?;
    let nets = networks(req, conf, pod, &info.net_confs, &info.node_ip)?;
    let mut errs = ErrorList::new();
    for net in nets.iter().rev() {
        for drv in drivers_for(mode, conf.terway.eniip_virtual_type, true) {
            errs.collect(drv.teardown(host, pod_ctx, net).await);
        }
    }
    // After the teardown (nothing routes to the pod any more, so no new entries appear for it) and before
    // ReleaseIP (the IP cannot have a new owner yet). A daemon that flushes released addresses itself
    // (batched, before their reuse cooldown ends) spares DEL the walk of the conntrack table for the IPv4
    // address it records; the rest is flushed here.
    let daemon_flushes_v4 = info.conntrack_flushed_on_release;
    let ips = nets
        .iter()
        .flat_map(|n| {
            n.ipv4
                .filter(|_| !daemon_flushes_v4)
                .map(IpAddr::V4)
                .into_iter()
                .chain(n.ipv6.map(IpAddr::V6))
        })
        .collect();
    flush_conntrack(host, pod, ips).await;
    errs.into_result().map_err(datapath_error)
}

/// Best effort: delete the node's conntrack entries of the pod's addresses, so the IP's next owner never
/// receives a flow that conntrack still maps to this pod (see `terway_datapath::conntrack`). Never fails
/// DEL: without the flush the entries still expire on their own.
async fn flush_conntrack(host: &HostCtx, pod: &PodIdentity, ips: Vec<IpAddr>) {
    if ips.is_empty() {
        return;
    }
    let shown = ips
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match conntrack::flush_addresses_async(&host.ns, ips).await {
        Ok(Flush::Deleted(0)) => {}
        Ok(Flush::Deleted(n)) => {
            tracing::info!(pod = %pod, "deleted {n} conntrack entries of {shown}")
        }
        Ok(Flush::Unavailable) => tracing::debug!(
            pod = %pod,
            "no conntrack in {}: nothing to flush for {shown}",
            host.ns.path().display()
        ),
        Err(e) => tracing::warn!(
            pod = %pod,
            "could not delete the conntrack entries of {shown}: {e}; they expire on their own \
             (net.netfilter.nf_conntrack_tcp_timeout_syn_sent, 120 s by default), until then a new pod \
             given the same IP may receive flows meant for this one"
        ),
    }
}

/// The daemon no longer knows the pod (GC released it, its state was lost), but the runtime hands back the
/// result of ADD: remove the policy rules and conntrack entries of those addresses, so they do not linger
/// until some later pod with the same IP is deleted. An address that another pod holds by now (a host
/// route to it exists; ours went with the veth) is left alone. Best effort: never fails DEL.
async fn cleanup_prev_result(host: &HostCtx, req: &AttachmentRequest, pod: &PodIdentity) {
    let Some(prev) = &req.config.prev_result else {
        return;
    };
    let mut flush = Vec::new();
    for ipc in &prev.ips {
        let ip = ipc.address.addr();
        let Ok(host_net) = ipnet::IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }) else {
            continue;
        };
        let routes = route::list_routes(&host.nl, ip.is_ipv4(), Some(route::MAIN_TABLE))
            .await
            .unwrap_or_default();
        if routes.iter().any(|r| r.dst == host_net) {
            tracing::info!(pod = %pod, "{ip} from prevResult is routed to another interface now; its rules belong to that pod");
            continue;
        }
        match policy_route::remove_pod_rules(&host.nl, host_net).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(pod = %pod, "removed {n} policy rules of {ip} (from prevResult; terwayd had no record)")
            }
            Err(e) => tracing::warn!(pod = %pod, "could not remove the policy rules of {ip}: {e}"),
        }
        flush.push(ip);
    }
    flush_conntrack(host, pod, flush).await;
}

/// Run CHECK: the daemon must know this container, and the full kernel state must match.
pub async fn check(req: &AttachmentRequest, conf: &PluginConf) -> Result<(), CniError> {
    let pod = pod_identity(req)?;
    let netns = req
        .netns
        .as_ref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for CHECK"))?;
    let pod_ns = open_pod_netns(netns.path(), conf).map_err(datapath_error)?;
    let mut d = daemon::connect(
        Path::new(&conf.terway.daemon_socket),
        conf.terway.daemon_timeout(),
    )
    .await?;
    let info = ip_info(&mut d, req, &pod).await?.ok_or_else(|| {
        CniError::unknown_container(format!("terwayd has no allocation for pod {pod}"))
    })?;
    if !info.container_id.is_empty() && info.container_id != pod.container_id {
        return Err(CniError::unknown_container(format!(
            "pod {pod} is allocated to sandbox {}, not {}",
            info.container_id, pod.container_id
        )));
    }
    let mode = convert::mode_of(info.mode)?;
    let nets: Vec<PodNetwork> = networks(req, conf, &pod, &info.net_confs, &info.node_ip)?;
    // The runtime's prevResult must still describe what the daemon holds for the pod.
    if let Some(prev) = &req.config.prev_result {
        for ip in nets.iter().filter_map(|n| n.ipv4) {
            if !prev
                .ips
                .iter()
                .any(|c| c.address.addr() == std::net::IpAddr::V4(ip))
            {
                return Err(CniError::datapath(format!(
                    "pod {pod}: prevResult does not contain {ip}, the address terwayd holds for it"
                )));
            }
        }
    }
    let host = host_ctx(conf)?;
    let pod_ctx = PodCtx::new(pod_ns).map_err(datapath_error)?;
    for net in &nets {
        let (drv, _) = driver::select_driver(&host, mode, conf.terway.eniip_virtual_type, net)
            .await
            .map_err(datapath_error)?;
        drv.check(&host, &pod_ctx, net)
            .await
            .map_err(datapath_error)?;
    }
    Ok(())
}
