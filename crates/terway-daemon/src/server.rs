//! The gRPC services on the daemon's unix socket: `TerwayBackend` for the CNI and `TerwayStatus` for
//! terway-cli. One tracing span per pod request; errors map to statuses once (see [`crate::error`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use terway_rpc::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::backend::resolve::{resolve, NodeBackends};
use crate::backend::{AllocRequest, Backends};
use crate::claims::Claims;
use crate::config::DaemonConfig;
use crate::conntrack_flush::release_and_queue;
use crate::error::DaemonError;
use crate::metrics::Metrics;
use crate::pod_policy::{PolicyPod, ReleaseHooks};
use crate::podsource::{PodMeta, PodSource};
use crate::pool::{now_ms, NodeInfo};
use crate::record::{AllocKey, Allocation, PodKey, QosAnswer, ResourceKind};
use crate::report::{reasons, CniOp, Event, EventTarget, EventType, Reporter};

/// Serves both services; cheap to clone.
pub struct Service<P: PodSource> {
    backends: Backends,
    pods: Arc<P>,
    claims: Claims,
    cfg: Arc<DaemonConfig>,
    node: Arc<NodeInfo>,
    metrics: Arc<Metrics>,
    reporter: Arc<dyn Reporter>,
    events: Arc<Mutex<VecDeque<String>>>,
    hooks: ReleaseHooks,
}

impl<P: PodSource> Clone for Service<P> {
    fn clone(&self) -> Self {
        Service {
            backends: self.backends.clone(),
            pods: self.pods.clone(),
            claims: self.claims.clone(),
            cfg: self.cfg.clone(),
            node: self.node.clone(),
            metrics: self.metrics.clone(),
            reporter: self.reporter.clone(),
            events: self.events.clone(),
            hooks: self.hooks.clone(),
        }
    }
}

/// The pod named by a request, validated as Kubernetes validates pod names (so no two pods can share a
/// record), with its container id and UID.
fn pod_key(pod: &Option<pb::PodRef>) -> Result<(PodKey, String, String), DaemonError> {
    let p = pod
        .as_ref()
        .ok_or_else(|| DaemonError::InvalidRequest("missing pod".into()))?;
    if p.namespace.is_empty() || p.name.is_empty() {
        return Err(DaemonError::InvalidRequest(format!(
            "pod namespace and name are required (got {:?}/{:?}); is K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS?",
            p.namespace, p.name
        )));
    }
    let key = PodKey::validated(&p.namespace, &p.name).map_err(|e| {
        DaemonError::InvalidRequest(format!("{e}; check K8S_POD_NAMESPACE/K8S_POD_NAME"))
    })?;
    Ok((key, p.container_id.clone(), p.uid.clone()))
}

/// A pod interface: the pod plus `CNI_IFNAME` (empty = `eth0`), checked as the kernel checks names.
fn alloc_key(pod: PodKey, if_name: &str) -> Result<AllocKey, DaemonError> {
    let bad = if_name.len() > 15
        || if_name == "."
        || if_name == ".."
        || if_name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(DaemonError::InvalidRequest(format!(
            "pod {pod}: interface name {if_name:?} is not a valid Linux interface name (at most 15 characters, no '/', ':' or whitespace); check CNI_IFNAME"
        )));
    }
    Ok(AllocKey::new(pod, if_name))
}

fn ipset(v4: impl ToString) -> Option<pb::IpSet> {
    Some(pb::IpSet {
        ipv4: v4.to_string(),
        ipv6: String::new(),
    })
}

/// The wire mode of a backend kind (decides the CNI's datapath driver).
pub fn network_mode(kind: ResourceKind) -> pb::NetworkMode {
    match kind {
        ResourceKind::SharedIp => pb::NetworkMode::SharedEni,
        ResourceKind::ExclusiveEni => pb::NetworkMode::ExclusiveEni,
        ResourceKind::PodCidr => pb::NetworkMode::VpcRoute,
        ResourceKind::PodEni => pb::NetworkMode::ExclusiveEni,
    }
}

impl<P: PodSource> Service<P> {
    /// Serve `backends` with pod metadata from `pods`, reporting to `reporter`.
    pub fn new(
        backends: Backends,
        pods: Arc<P>,
        claims: Claims,
        cfg: Arc<DaemonConfig>,
        node: Arc<NodeInfo>,
        metrics: Arc<Metrics>,
        reporter: Arc<dyn Reporter>,
    ) -> Self {
        Service {
            backends,
            pods,
            claims,
            cfg,
            node,
            metrics,
            reporter,
            events: Arc::new(Mutex::new(VecDeque::new())),
            hooks: ReleaseHooks::default(),
        }
    }

    /// What follows each release: with a flush queue, released addresses are queued for the daemon's
    /// conntrack flush and DEL is told it need not walk the table itself (see `conntrack_flush`); with a
    /// policy hook, pods are admitted to the node's NetworkPolicy before AllocIP replies (`pod_policy`).
    pub fn with_release_hooks(mut self, hooks: ReleaseHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Put the pod's NetworkPolicy state in place before AllocIP answers (veth pods only: see
    /// `pod_policy`). When it cannot be, the allocation is undone and the pod does not start.
    async fn admit_to_policy(
        &self,
        a: &Allocation,
        key: &AllocKey,
        meta: Option<&PodMeta>,
    ) -> Result<(), DaemonError> {
        let Some(policy) = &self.hooks.policy else {
            return Ok(());
        };
        if !crate::pod_policy::covers(a.backend) {
            return Ok(());
        }
        let pod = PolicyPod {
            labels: meta.map(|m| m.labels.clone()).unwrap_or_default(),
            ..PolicyPod::of(a)
        };
        let t = Instant::now();
        let res = policy.admit(&pod).await;
        tracing::debug!(us = t.elapsed().as_micros() as u64, "policy admit");
        let Err(message) = res else {
            return Ok(());
        };
        if let Some(b) = self.backends.get(a.backend) {
            if let Err(e) = release_and_queue(b.as_ref(), key, &a.container_id, &self.hooks).await {
                tracing::warn!(error = %e, "releasing the address of a pod whose policy failed");
            }
        }
        Err(DaemonError::Policy {
            pod: key.pod.to_string(),
            message,
        })
    }

    /// Log the event, keep it for terway-cli's status and hand it to the reporter.
    fn emit(&self, ev: Event) {
        tracing::info!(target_object = %ev.target, kind = ev.kind.as_str(), reason = %ev.reason, message = %ev.message, "event");
        // A runtime's container has no object in the API server to hang an event on: log and status only.
        let runtime = matches!(&ev.target, EventTarget::Pod { key, .. } if key.is_runtime());
        self.push_event(format!(
            "{} {} {} {}: {}",
            now_ms(),
            ev.kind.as_str(),
            ev.target,
            ev.reason,
            ev.message
        ));
        self.metrics.event(&ev.reason);
        if !runtime {
            self.reporter.event(ev);
        }
    }

    /// The datapath description of a record: exactly what was recorded at allocation.
    fn net_conf(&self, a: &Allocation) -> pb::NetConf {
        let ans = &a.answer;
        pb::NetConf {
            if_name: a.if_name.clone(),
            pod_ip: ipset(ans.ip),
            subnet: ipset(ans.subnet),
            gateway: ipset(ans.gateway),
            eni: ans.eni.as_ref().map(|e| pb::EniInfo {
                eni_id: e.id.clone(),
                mac: e.mac.clone(),
                trunk: false,
                vid: 0,
                gateway: ipset(e.gateway),
                primary_ip: e.primary_ip.to_string(),
            }),
            service_cidrs: self
                .cfg
                .service_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect(),
            host_stack_cidrs: Vec::new(),
            extra_routes: Vec::new(),
            default_route: true,
            qos: Some(pb::Qos {
                ingress_bps: a.qos.ingress_bps,
                egress_bps: a.qos.egress_bps,
                network_priority: a.qos.priority.clone(),
            }),
            mtu: 0,
        }
    }

    fn node_backends(&self) -> NodeBackends {
        NodeBackends {
            node: self.node.name.clone(),
            default: self.backends.default_kind(),
            available: self.backends.kinds(),
        }
    }

    /// AllocIP, reporting a failure as `AllocIPFailed` on the pod (and on the node when the node is out
    /// of addresses): the CNI reports only what fails after the daemon answered.
    async fn alloc_reported(
        &self,
        req: pb::AllocIpRequest,
    ) -> Result<pb::AllocIpReply, DaemonError> {
        let target = req.pod.as_ref().and_then(|p| {
            PodKey::validated(&p.namespace, &p.name)
                .ok()
                .map(|key| EventTarget::Pod {
                    key,
                    uid: p.uid.clone(),
                })
        });
        let res = self.alloc(req).await;
        if let (Err(e), Some(target)) = (&res, target) {
            if matches!(e, DaemonError::Exhausted { .. }) {
                self.emit(Event {
                    target: EventTarget::Node,
                    kind: EventType::Warning,
                    reason: reasons::ALLOC_IP_FAILED.into(),
                    // The error names the pod already.
                    message: e.to_string(),
                });
            }
            self.emit(Event {
                target,
                kind: EventType::Warning,
                reason: reasons::ALLOC_IP_FAILED.into(),
                message: e.to_string(),
            });
        }
        res
    }

    async fn alloc(&self, req: pb::AllocIpRequest) -> Result<pb::AllocIpReply, DaemonError> {
        let started = Instant::now();
        let (pod, container_id, uid) = pod_key(&req.pod)?;
        let key = alloc_key(pod.clone(), &req.if_name)?;
        if container_id.is_empty() {
            return Err(DaemonError::InvalidRequest(format!(
                "pod {pod}: container id is required"
            )));
        }
        let wanted_ip = match req.ip.as_str() {
            "" => None,
            s => Some(s.parse::<std::net::Ipv4Addr>().map_err(|_| {
                DaemonError::InvalidRequest(format!(
                    "pod {pod}: requested address {s:?} is not an IPv4 address"
                ))
            })?),
        };
        let _claim = self.claims.claim(&pod)?;
        // A non-Kubernetes runtime's container has no pod object to read.
        let meta = if pod.is_runtime() {
            None
        } else {
            let t = Instant::now();
            let m = self.pods.pod(&pod, &uid).await;
            tracing::debug!(us = t.elapsed().as_micros() as u64, "pod source lookup");
            m
        };
        if let Some(m) = &meta {
            if let Some(why) = m.not_ours() {
                return Err(DaemonError::InvalidRequest(why));
            }
            if !uid.is_empty() && !m.uid.is_empty() && m.uid != uid {
                return Err(DaemonError::InvalidRequest(format!(
                    "pod {pod}: this sandbox is for pod UID {uid}, but the API server has UID {} under that name (the pod was deleted and recreated); the kubelet tears this sandbox down and sets up one for the new pod",
                    m.uid
                )));
            }
        }
        if let Some(existing) = self.backends.lookup(&key) {
            let same_pod = uid.is_empty() || existing.uid.is_empty() || existing.uid == uid;
            if existing.container_id == container_id && same_pod {
                self.admit_to_policy(&existing, &key, meta.as_ref()).await?;
                self.metrics.allocation("ok");
                self.metrics
                    .latency("existing", started.elapsed().as_secs_f64());
                return Ok(self.reply(&existing));
            }
            tracing::info!(old = %existing.container_id, old_uid = %existing.uid, "new sandbox or new pod incarnation; releasing the old record first");
            if let Some(b) = self.backends.get(existing.backend) {
                release_and_queue(b.as_ref(), &key, &existing.container_id, &self.hooks).await?;
            }
        }
        let kind = resolve(meta.as_ref(), &self.node_backends())
            .map_err(|e| DaemonError::InvalidRequest(e.0))?;
        let backend = self.backends.get(kind).ok_or_else(|| {
            DaemonError::InvalidRequest(format!("pod {pod}: no {kind} backend on this node"))
        })?;
        let sticky = meta
            .as_ref()
            .is_some_and(|m| m.wants_sticky_ip(&self.cfg.pool.stateful_kinds));
        let areq = AllocRequest {
            key,
            container_id,
            uid,
            sticky,
            qos: meta.as_ref().map(qos_of).unwrap_or_default(),
            ip: wanted_ip,
        };
        let deadline = Instant::now() + self.cfg.alloc_timeout;
        match backend.allocate(&areq, deadline).await {
            Ok((a, path)) => {
                self.admit_to_policy(&a, &areq.key, meta.as_ref()).await?;
                self.metrics.allocation("ok");
                self.metrics
                    .latency(path.label(), started.elapsed().as_secs_f64());
                tracing::info!(ip = %a.ip, eni = %a.eni_id, backend = %kind, path = path.label(), us = started.elapsed().as_micros() as u64, "allocated");
                self.reporter.cni_done(&pod, &areq.uid, CniOp::Added);
                Ok(self.reply(&a))
            }
            Err(e) => {
                let label = match &e {
                    DaemonError::Exhausted { .. } => "exhausted",
                    DaemonError::Timeout { .. } => "timeout",
                    _ => "error",
                };
                self.metrics.allocation(label);
                tracing::warn!(error = %e, "allocation failed");
                Err(e)
            }
        }
    }

    fn reply(&self, a: &Allocation) -> pb::AllocIpReply {
        pb::AllocIpReply {
            mode: network_mode(a.backend) as i32,
            net_confs: vec![self.net_conf(a)],
            node_ip: self.node.primary_ip.to_string(),
            ipv4: true,
            ipv6: false,
        }
    }

    fn push_event(&self, line: String) {
        if let Ok(mut ev) = self.events.lock() {
            if ev.len() >= 50 {
                ev.pop_front();
            }
            ev.push_back(line);
        }
    }
}

/// Pod bandwidth from annotations, in bytes per second (terway-core's unit rules). A malformed
/// annotation is logged and treated as unlimited rather than failing the pod.
fn qos_of(meta: &PodMeta) -> QosAnswer {
    let bw = match terway_core::PodBandwidth::from_annotations(&meta.annotations) {
        Ok(b) => b,
        Err((key, e)) => {
            tracing::warn!(annotation = %key, error = %e, "ignoring malformed bandwidth annotation");
            terway_core::PodBandwidth::default()
        }
    };
    QosAnswer {
        ingress_bps: bw.ingress.unwrap_or(0),
        egress_bps: bw.egress.unwrap_or(0),
        priority: meta
            .annotations
            .get(terway_core::annotations::NETWORK_PRIORITY)
            .cloned()
            .unwrap_or_default(),
    }
}

fn span_for(rpc: &'static str, pod: &Option<pb::PodRef>) -> tracing::Span {
    let (ns, name, cid) = pod
        .as_ref()
        .map(|p| {
            (
                p.namespace.as_str(),
                p.name.as_str(),
                p.container_id.as_str(),
            )
        })
        .unwrap_or(("", "", ""));
    tracing::info_span!("pod", rpc, pod = %format!("{ns}/{name}"), container = %cid)
}

#[tonic::async_trait]
impl<P: PodSource> pb::terway_backend_server::TerwayBackend for Service<P> {
    async fn alloc_ip(
        &self,
        request: Request<pb::AllocIpRequest>,
    ) -> Result<Response<pb::AllocIpReply>, Status> {
        let req = request.into_inner();
        let span = span_for("AllocIP", &req.pod);
        Ok(Response::new(
            self.alloc_reported(req).instrument(span).await?,
        ))
    }

    async fn release_ip(
        &self,
        request: Request<pb::ReleaseIpRequest>,
    ) -> Result<Response<pb::ReleaseIpReply>, Status> {
        let req = request.into_inner();
        let span = span_for("ReleaseIP", &req.pod);
        async move {
            let (pod, container_id, uid) = pod_key(&req.pod)?;
            let key = alloc_key(pod.clone(), &req.if_name)?;
            let _claim = self.claims.claim(&pod)?;
            let released = match self.backends.lookup(&key) {
                Some(a) => match self.backends.get(a.backend) {
                    Some(b) => {
                        release_and_queue(b.as_ref(), &key, &container_id, &self.hooks).await?
                    }
                    None => false,
                },
                None => false,
            };
            tracing::info!(released, reason = %req.reason, "release");
            // Nothing of this pod incarnation is held any more once its record is gone, whether this
            // call released it or an earlier one did (DEL is retried).
            if self.backends.lookup(&key).is_none() {
                self.reporter.cni_done(&pod, &uid, CniOp::Deleted);
            }
            Ok::<_, DaemonError>(pb::ReleaseIpReply { released })
        }
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
    }

    async fn get_ip_info(
        &self,
        request: Request<pb::GetIpInfoRequest>,
    ) -> Result<Response<pb::GetIpInfoReply>, Status> {
        let req = request.into_inner();
        let (pod, container_id, _) = pod_key(&req.pod)?;
        let key = alloc_key(pod, &req.if_name)?;
        let Some(a) = self.backends.lookup(&key) else {
            return Err(DaemonError::NotFound {
                pod: key.to_string(),
            }
            .into());
        };
        // A different sandbox's record is still answered, with its container id: the caller (a DEL for
        // an older sandbox, as the kubelet sends after recreating one) must learn that the pod has a
        // live sandbox whose kernel state it must not touch. NotFound would tell it the opposite.
        if !container_id.is_empty() && a.container_id != container_id {
            tracing::info!(pod = %key, asked = %container_id, current = %a.container_id, "GetIPInfo for an older sandbox; answering with the current one");
        }
        Ok(Response::new(pb::GetIpInfoReply {
            mode: network_mode(a.backend) as i32,
            net_confs: vec![self.net_conf(&a)],
            node_ip: self.node.primary_ip.to_string(),
            container_id: a.container_id,
            conntrack_flushed_on_release: self.hooks.flush.is_some(),
        }))
    }

    async fn record_event(
        &self,
        request: Request<pb::EventRequest>,
    ) -> Result<Response<pb::EventReply>, Status> {
        let req = request.into_inner();
        let target = match req.pod.as_ref().filter(|p| !p.name.is_empty()) {
            Some(p) => EventTarget::Pod {
                key: PodKey::validated(&p.namespace, &p.name).map_err(|e| {
                    Status::invalid_argument(format!("event for an invalid pod: {e}"))
                })?,
                uid: p.uid.clone(),
            },
            None => EventTarget::Node,
        };
        let kind = if req.event_type == pb::EventType::Warning as i32 {
            EventType::Warning
        } else {
            EventType::Normal
        };
        if req.reason.is_empty() || req.reason.len() > 128 {
            return Err(Status::invalid_argument(
                "event reason must be 1..=128 characters (PascalCase, e.g. AllocIPSucceed)",
            ));
        }
        self.emit(Event {
            target,
            kind,
            reason: req.reason,
            message: req.message,
        });
        Ok(Response::new(pb::EventReply {}))
    }
}

#[tonic::async_trait]
impl<P: PodSource> pb::terway_status_server::TerwayStatus for Service<P> {
    async fn get_status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let events = self
            .events
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default();
        Ok(Response::new(crate::status::build(
            &self.node,
            &self.backends,
            events,
        )))
    }

    async fn explain_policy(
        &self,
        request: Request<pb::PolicyRequest>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let req = request.into_inner();
        let key = PodKey::validated(&req.namespace, &req.name)
            .map_err(|e| DaemonError::InvalidRequest(e.to_string()))?;
        let Some(policy) = &self.hooks.policy else {
            return Ok(Response::new(pb::PolicyReply {
                note: "this terwayd does not enforce NetworkPolicy (no Kubernetes, or eni_conf disable_network_policy)".into(),
                ..Default::default()
            }));
        };
        policy
            .explain(&key)
            .await
            .map(Response::new)
            .map_err(|e| Status::from(DaemonError::PolicySync(format!("pod {key}: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_comes_from_annotations_in_bytes() {
        let mut m = PodMeta::default();
        m.annotations
            .insert("k8s.aliyun.com/ingress-bandwidth".into(), "10M".into());
        let q = qos_of(&m);
        assert_eq!(q.ingress_bps, 10 << 20);
        assert_eq!(q.egress_bps, 0);
        m.annotations
            .insert("k8s.aliyun.com/egress-bandwidth".into(), "garbage".into());
        assert_eq!(
            qos_of(&m).ingress_bps,
            0,
            "a malformed annotation means unlimited, not a failed pod"
        );
    }

    #[test]
    fn pods_kubernetes_would_refuse_are_refused_before_anything_is_recorded() {
        for (ns, name) in [("a", "b/c"), ("a/b", "c"), ("..", "x"), ("a", "x\ny")] {
            let p = Some(pb::PodRef {
                namespace: ns.into(),
                name: name.into(),
                container_id: "c".into(),
                uid: String::new(),
            });
            let e = pod_key(&p).unwrap_err();
            assert!(matches!(e, DaemonError::InvalidRequest(_)), "{ns}/{name}");
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        }
        let long = "p".repeat(300);
        let p = Some(pb::PodRef {
            namespace: "a".into(),
            name: long,
            ..Default::default()
        });
        assert!(pod_key(&p).is_err());
        for bad in ["a/b", "..", "veryveryverylong0", "a b"] {
            assert!(alloc_key(PodKey::new("a", "b"), bad).is_err(), "{bad}");
        }
        assert_eq!(
            alloc_key(PodKey::new("a", "b"), "").unwrap().if_name,
            "eth0"
        );
    }

    #[test]
    fn pod_identity_is_validated() {
        assert!(pod_key(&None).is_err());
        let p = Some(pb::PodRef {
            namespace: "".into(),
            name: "a".into(),
            ..Default::default()
        });
        assert!(matches!(pod_key(&p), Err(DaemonError::InvalidRequest(_))));
        let p = Some(pb::PodRef {
            namespace: "n".into(),
            name: "a".into(),
            container_id: "c".into(),
            uid: "u".into(),
        });
        assert_eq!(
            pod_key(&p).unwrap(),
            (PodKey::new("n", "a"), "c".into(), "u".into())
        );
    }
}
