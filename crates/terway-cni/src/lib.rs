//! The `terway` CNI plugin: parse the invocation (cni-protocol), ask terwayd over its unix socket, program
//! the pod with a terway-datapath driver, answer in the caller's CNI version. Thin by design: protocol,
//! daemon contract and kernel work live in their own crates.

#![warn(missing_docs)]

pub mod add;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod del;
pub mod gc;
pub mod logging;

use std::path::Path;

use cni_protocol::{AttachmentRequest, CniError, CniRequest, HandlerOutput};
use terway_datapath::driver::{HostCtx, PodCtx, PodIdentity};
use terway_datapath::Netns;
use terway_rpc::v1::PodRef;

use crate::config::PluginConf;

/// Serve one CNI request (everything but VERSION, which cni-protocol answers).
pub fn handle(req: CniRequest) -> Result<HandlerOutput, CniError> {
    let Some(netconf) = req.config() else {
        return Err(CniError::internal("VERSION reached the plugin handler"));
    };
    let conf = PluginConf::from_netconf(netconf)?;
    let _log = logging::init(&conf);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::internal(format!("cannot start the async runtime: {e}")))?;
    let cmd = req.command();
    let out = rt.block_on(async move {
        match req {
            CniRequest::Add(a) => add::add(&a, &conf).await.map(Some),
            CniRequest::Del(a) => del::del(&a, &conf).await.map(|_| None),
            CniRequest::Check(a) => del::check(&a, &conf).await.map(|_| None),
            CniRequest::Status(_) => gc::status(&conf).await.map(|_| None),
            CniRequest::Gc(g) => gc::gc(&g, &conf).await.map(|_| None),
            CniRequest::Version => Ok(None),
        }
    });
    if let Err(e) = &out {
        tracing::error!(command = %cmd, code = e.code, "{e}");
    }
    out
}

/// Pod identity from CNI_ARGS (Kubernetes keys) and the container id. A runtime that is not Kubernetes
/// (`ctr run --cni` sends no CNI_ARGS, podman only `K8S_POD_NAME=<container name>`) gets the identity
/// `_runtime/<container id>`: the container id is the one name such a runtime repeats unchanged on every
/// call for the container (a podman container can be renamed), and no Kubernetes pod can have that key.
pub fn pod_identity(req: &AttachmentRequest) -> Result<PodIdentity, CniError> {
    let args = &req.args;
    let Some((ns, name)) = args.pod() else {
        if args
            .k8s_pod_namespace
            .as_deref()
            .is_some_and(|n| !n.is_empty())
        {
            return Err(CniError::invalid_env(
                "CNI_ARGS has K8S_POD_NAMESPACE but no K8S_POD_NAME; a Kubernetes runtime sends both",
            ));
        }
        let key = terway_core::PodKey::runtime(&req.container_id).map_err(|e| {
            CniError::invalid_env(format!("{e}; CNI_CONTAINERID names the container"))
        })?;
        if let Some(given) = args.k8s_pod_name.as_deref().filter(|n| !n.is_empty()) {
            tracing::info!(container = %req.container_id, name = given, "not a Kubernetes pod (no K8S_POD_NAMESPACE): keyed by container id as {key}");
        }
        return Ok(PodIdentity {
            namespace: key.namespace,
            name: key.name,
            container_id: req.container_id.clone(),
        });
    };
    // Validated as Kubernetes validates pod names: anything else cannot be a real pod, and a `/` or
    // `..` in a name must never reach a record key or a derived interface name.
    terway_core::PodKey::validated(ns, name).map_err(|e| {
        CniError::invalid_env(format!(
            "{e}; K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS must name a Kubernetes pod"
        ))
    })?;
    let cid = args
        .k8s_pod_infra_container_id
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| req.container_id.clone());
    Ok(PodIdentity {
        namespace: ns.to_string(),
        name: name.to_string(),
        container_id: cid,
    })
}

/// The address the runtime asks for (`IP=` in CNI_ARGS, which podman sends on `network reload` so the
/// container keeps its address): the IPv4 one, as the daemon allocates one IPv4 per interface.
pub fn requested_ip(req: &AttachmentRequest) -> Result<Option<std::net::Ipv4Addr>, CniError> {
    match req.args.other.get("IP").filter(|v| !v.is_empty()) {
        Some(raw) => ip_arg(raw),
        None => Ok(None),
    }
}

/// The IPv4 address of an `IP=` value: addresses (optionally with a prefix length), comma-separated.
fn ip_arg(raw: &str) -> Result<Option<std::net::Ipv4Addr>, CniError> {
    let mut v4 = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // An address, possibly with a prefix length.
        let addr = part.split('/').next().unwrap_or(part);
        match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => v4.push(a),
            Ok(std::net::IpAddr::V6(_)) => {}
            Err(_) => {
                return Err(CniError::invalid_env(format!(
                    "CNI_ARGS IP={raw}: {part:?} is not an IP address"
                )))
            }
        }
    }
    match v4.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(CniError::invalid_env(format!(
            "CNI_ARGS IP={raw} asks for several IPv4 addresses; terway gives an interface one"
        ))),
    }
}

/// The daemon's view of the pod.
pub fn pod_ref(req: &AttachmentRequest, pod: &PodIdentity) -> PodRef {
    PodRef {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        container_id: pod.container_id.clone(),
        uid: req.args.k8s_pod_uid.clone().unwrap_or_default(),
    }
}

/// Datapath failures: a missing ENI is transient (the daemon may still be attaching it), a CNI_NETNS that
/// is the node's own namespace is an invalid environment, the rest are datapath errors with the full
/// context chain.
pub fn datapath_error(e: terway_datapath::Error) -> CniError {
    let msg = e.to_string();
    match root(&e) {
        terway_datapath::Error::EniNotFound { .. } => CniError::try_again_later(msg),
        terway_datapath::Error::HostNamespace { .. } => CniError::invalid_env(msg),
        _ => CniError::datapath(msg),
    }
}

fn root(e: &terway_datapath::Error) -> &terway_datapath::Error {
    match e {
        terway_datapath::Error::Context { source, .. } => root(source),
        other => other,
    }
}

/// Open the host namespace (configured or our own) with one netlink socket.
pub fn host_ctx(conf: &PluginConf) -> Result<HostCtx, CniError> {
    let ns = match &conf.host_netns {
        Some(p) => Netns::open(p),
        None => Netns::current(),
    }
    .map_err(datapath_error)?;
    let mut h = HostCtx::new(ns, conf.lock_dir.clone()).map_err(datapath_error)?;
    h.eni_wait_attempts = conf.eni_wait_attempts;
    h.eni_wait_interval = conf.eni_wait_interval;
    Ok(h)
}

/// Delete host veths retired by an earlier DEL whose netns the runtime never removed (see
/// `terway_datapath::driver::retire`): always for GC, for ADD and DEL when the last sweep is
/// `SWEEP_INTERVAL` old. One link dump when there is nothing to do; failures are logged only, a later call
/// retries.
pub async fn sweep_retired(host: &HostCtx, always: bool) {
    use terway_datapath::driver::retire;
    if !always && !retire::sweep_due(&host.lock_dir, retire::SWEEP_INTERVAL) {
        return;
    }
    match retire::sweep_retired(&host.nl, retire::RETIRE_GRACE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("deleted {n} retired host veth(s) left by earlier DELs"),
        Err(e) => tracing::warn!("sweep of retired host veths failed, retried next time: {e}"),
    }
}

/// Open CNI_NETNS, refusing the node's own namespace: the one the plugin runs in and `host_netns`. Every
/// command checks this before it asks the daemon for anything or touches a link, because programming a
/// "pod" there deletes the node's `eth0` and replaces its default route.
pub fn open_pod_netns(path: &Path, conf: &PluginConf) -> terway_datapath::Result<Netns> {
    let mut node = Netns::own()?;
    // An unopenable host_netns is reported where it is used; here it just cannot match.
    if let Some(Ok(h)) = conf.host_netns.as_ref().map(Netns::open) {
        node.push(h);
    }
    Netns::open_pod(path, &node)
}

/// Open the pod namespace; `None` when it no longer exists (DEL after the sandbox is gone). The node's own
/// namespace is refused (see [`open_pod_netns`]).
pub fn pod_ctx_if_present(
    path: Option<&Path>,
    conf: &PluginConf,
) -> Result<Option<PodCtx>, CniError> {
    let Some(p) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let gone = |e: &terway_datapath::Error| matches!(e.errno(), Some(2) | Some(22));
    let ns = match open_pod_netns(p, conf) {
        Ok(ns) => ns,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(datapath_error(e)),
    };
    match PodCtx::new(ns) {
        Ok(c) => Ok(Some(c)),
        // Gone, or a leftover file that is no longer a namespace (setns says EINVAL).
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(datapath_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_arg_takes_the_one_ipv4_address_podman_sends() {
        let v4 = |s: &str| s.parse::<std::net::Ipv4Addr>().ok();
        assert_eq!(ip_arg("10.0.0.5").unwrap(), v4("10.0.0.5"));
        assert_eq!(ip_arg("10.0.0.5/24").unwrap(), v4("10.0.0.5"));
        assert_eq!(ip_arg("fd00::5,10.0.0.5").unwrap(), v4("10.0.0.5"));
        assert_eq!(ip_arg("fd00::5").unwrap(), None);
        for bad in ["10.0.0.5,10.0.0.6", "nonsense", "10.0.0.5,x"] {
            let e = ip_arg(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad}: {e}");
        }
    }
}
