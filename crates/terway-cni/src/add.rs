//! ADD: AllocIP → pick and validate a driver per interface → program → CNI result. Any failure after
//! AllocIP tears down whatever was programmed and releases the IP ("roll back ip for error").

use std::net::IpAddr;
use std::time::Instant;

use cni_protocol::{AttachmentRequest, CniError, CniResult, Interface, Route};
use ipnet::IpNet;
use terway_core::{reasons, EniipVirtualType, Mode};
use terway_datapath::driver::{
    self, AnyDriver, Driver, HostCtx, PodCtx, PodIdentity, PodNetwork, SetupOutput,
};
use terway_datapath::Netns;
use terway_rpc::v1::{
    AllocIpReply, AllocIpRequest, EventRequest, EventType, PodRef, ReleaseIpRequest,
};

use crate::config::PluginConf;
use crate::daemon::{self, map_status, Daemon};
use crate::{convert, datapath_error, host_ctx, open_pod_netns, pod_identity, pod_ref};

/// Reason sent with ReleaseIP when ADD rolls back.
pub const ROLLBACK_REASON: &str = "roll back ip for error";

/// Run ADD.
pub async fn add(req: &AttachmentRequest, conf: &PluginConf) -> Result<CniResult, CniError> {
    let started = Instant::now();
    let pod = pod_identity(req)?;
    let wanted_ip = crate::requested_ip(req)?;
    let netns = req
        .netns
        .as_ref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for ADD"))?;
    // Before anything is allocated: never program the node's own namespace as if it were a pod's.
    let pod_ns = open_pod_netns(netns.path(), conf).map_err(datapath_error)?;
    let t_connect = Instant::now();
    let mut d = daemon::connect(
        std::path::Path::new(&conf.terway.daemon_socket),
        conf.terway.daemon_timeout(),
    )
    .await?;
    let podref = pod_ref(req, &pod);
    let t_alloc = Instant::now();
    let reply = d
        .backend
        .alloc_ip(AllocIpRequest {
            pod: Some(podref.clone()),
            netns: netns.path().display().to_string(),
            if_name: req.ifname.clone(),
            ip: wanted_ip.map(|a| a.to_string()).unwrap_or_default(),
        })
        .await
        .map_err(|s| map_status(&format!("allocate IP for pod {pod}"), &s))?
        .into_inner();
    let t_program = Instant::now();
    match program(req, conf, &pod, &podref, &reply, pod_ns, &mut d).await {
        Ok(result) => {
            let ips: Vec<String> = result
                .ips
                .iter()
                .map(|i| i.address.addr().to_string())
                .collect();
            let msg = format!("Alloc IP {} took {:?}", ips.join(","), started.elapsed());
            // Where an ADD's time goes, for the debug log: the process before it reached the daemon, the
            // daemon's dial, AllocIP and the datapath.
            tracing::info!(
                pod = %pod,
                setup_us = (t_connect - started).as_micros() as u64,
                connect_us = (t_alloc - t_connect).as_micros() as u64,
                alloc_us = (t_program - t_alloc).as_micros() as u64,
                datapath_us = t_program.elapsed().as_micros() as u64,
                "{msg}"
            );
            event(
                &mut d,
                &podref,
                EventType::Normal,
                reasons::ALLOC_IP_SUCCEED,
                msg,
            )
            .await;
            Ok(result)
        }
        Err(e) => {
            tracing::warn!(pod = %pod, "ADD failed, rolling back: {e}");
            let rel = d
                .backend
                .release_ip(ReleaseIpRequest {
                    pod: Some(podref.clone()),
                    reason: ROLLBACK_REASON.into(),
                    if_name: req.ifname.clone(),
                })
                .await;
            if let Err(s) = rel {
                tracing::warn!(pod = %pod, "release after failed ADD: {s}");
            }
            event(
                &mut d,
                &podref,
                EventType::Warning,
                reasons::ALLOC_IP_FAILED,
                e.to_string(),
            )
            .await;
            Err(e)
        }
    }
}

/// Best effort: an event that cannot be delivered must not fail the CNI call.
pub(crate) async fn event(
    d: &mut Daemon,
    pod: &PodRef,
    kind: EventType,
    reason: &str,
    message: String,
) {
    let r = d
        .backend
        .record_event(EventRequest {
            pod: Some(pod.clone()),
            event_type: kind as i32,
            reason: reason.into(),
            message,
        })
        .await;
    if let Err(s) = r {
        tracing::debug!("event {reason} not recorded: {s}");
    }
}

/// The pod networks of a reply, in order.
pub(crate) fn networks(
    req: &AttachmentRequest,
    conf: &PluginConf,
    pod: &PodIdentity,
    confs: &[terway_rpc::v1::NetConf],
    node_ip: &str,
) -> Result<Vec<PodNetwork>, CniError> {
    if confs.is_empty() {
        return Err(CniError::daemon(format!(
            "terwayd returned no network config for pod {pod}"
        )));
    }
    confs
        .iter()
        .map(|nc| convert::pod_network(pod, nc, node_ip, conf, &req.config, &req.ifname))
        .collect()
}

async fn program(
    req: &AttachmentRequest,
    conf: &PluginConf,
    pod: &PodIdentity,
    podref: &PodRef,
    reply: &AllocIpReply,
    pod_ns: Netns,
    d: &mut Daemon,
) -> Result<CniResult, CniError> {
    let mode = convert::mode_of(reply.mode)?;
    let nets = networks(req, conf, pod, &reply.net_confs, &reply.node_ip)?;
    let host = host_ctx(conf)?;
    crate::sweep_retired(&host, false).await;
    let netns = req
        .netns
        .as_ref()
        .map(|n| n.path().to_path_buf())
        .unwrap_or_default();
    let pod_ctx = PodCtx::new(pod_ns).map_err(datapath_error)?;
    // Choose and validate every driver before touching the kernel.
    let mut drivers = Vec::with_capacity(nets.len());
    for net in &nets {
        let (drv, fallback) =
            driver::select_driver(&host, mode, conf.terway.eniip_virtual_type, net)
                .await
                .map_err(datapath_error)?;
        if let Some(fb) = fallback {
            tracing::warn!(pod = %pod, "{}", fb.reason);
            event(
                d,
                podref,
                EventType::Warning,
                reasons::VIRTUAL_MODE_CHANGED,
                fb.reason.clone(),
            )
            .await;
        }
        drv.validate(net).map_err(datapath_error)?;
        drivers.push(drv);
    }
    let mut outputs = Vec::with_capacity(nets.len());
    for (i, (drv, net)) in drivers.iter().zip(&nets).enumerate() {
        match drv.setup(&host, &pod_ctx, net).await {
            Ok(o) => outputs.push(o),
            Err(e) => {
                rollback(&host, &pod_ctx, &drivers[..=i], &nets[..=i]).await;
                return Err(datapath_error(e));
            }
        }
    }
    let mut res = result(&nets, &outputs, &netns.display().to_string());
    if let Some(dns) = &req.config.dns {
        res.dns = dns.clone();
    }
    Ok(res)
}

async fn rollback(host: &HostCtx, pod: &PodCtx, drivers: &[AnyDriver], nets: &[PodNetwork]) {
    for (drv, net) in drivers.iter().zip(nets).rev() {
        if let Err(e) = drv.teardown(host, Some(pod), net).await {
            tracing::warn!(pod = %net.pod, "rollback of {} left something behind: {e}", net.if_name);
        }
        // Teardown only retires the host veth (DEL's fast path); a failed ADD leaves the netns to the
        // runtime's retry, which must find it clean, so the pair is deleted now.
        if let Err(e) = remove_retired(host, &net.host_veth()).await {
            tracing::warn!(pod = %net.pod, "rollback could not delete retired veth: {e}");
        }
    }
}

async fn remove_retired(host: &HostCtx, name: &str) -> terway_datapath::Result<()> {
    let l = terway_datapath::driver::owner::host_veth(&host.nl, name).await?;
    let retired = l
        .as_ref()
        .and_then(|l| l.alias.as_deref())
        .is_some_and(|a| a.starts_with(terway_datapath::driver::retire::RETIRED_ALIAS_PREFIX));
    match l {
        Some(l) if retired => terway_datapath::link::remove_link(&host.nl, l.index).await,
        _ => Ok(()),
    }
}

/// The drivers DEL/CHECK use for a mode: ipvlan requests may have fallen back at ADD, so DEL tears
/// down both shared-ENI flavours (both are idempotent).
pub(crate) fn drivers_for(
    mode: Mode,
    vtype: EniipVirtualType,
    ipvlan_supported: bool,
) -> Vec<AnyDriver> {
    let (kind, _) = driver::choose_driver(mode, vtype, ipvlan_supported);
    let mut v = vec![AnyDriver::new(kind)];
    if mode == Mode::Shared
        && vtype == EniipVirtualType::Ipvlan
        && kind != driver::DriverKind::PolicyRoute
    {
        v.push(AnyDriver::new(driver::DriverKind::PolicyRoute));
    }
    v
}

fn result(nets: &[PodNetwork], outs: &[SetupOutput], sandbox: &str) -> CniResult {
    let mut res = CniResult::new();
    for (net, out) in nets.iter().zip(outs) {
        if let Some((name, mac)) = &out.host_if {
            res.add_interface(Interface {
                name: name.clone(),
                mac: Some(mac.to_string()),
                ..Default::default()
            });
        }
        let idx = res.add_interface(Interface {
            name: out.pod_if.0.clone(),
            mac: Some(out.pod_if.1.to_string()),
            mtu: Some(net.mtu),
            sandbox: Some(sandbox.to_string()),
            ..Default::default()
        });
        for (addr, gw) in &out.ips {
            res.add_ip(*addr, *gw, Some(idx));
        }
        if net.default_route {
            for (_, gw) in &out.ips {
                let dst = match gw {
                    Some(IpAddr::V4(_)) => IpNet::V4(Default::default()),
                    Some(IpAddr::V6(_)) => IpNet::V6(Default::default()),
                    None => continue,
                };
                res.add_route(Route::new(dst, *gw));
            }
        }
    }
    res
}
