//! The gRPC services on the daemon's unix socket: `TerwayBackend` for the CNI and `TerwayStatus` for
//! terway-cli. One tracing span per pod request; errors map to statuses once (see [`crate::error`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use terway_cloud::{Cloud, Metadata};
use terway_rpc::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::Mode;
use crate::error::DaemonError;
use crate::podsource::{PodMeta, PodSource};
use crate::pool::alloc::AllocRequest;
use crate::pool::state::{Allocation, Eni, PodKey};
use crate::pool::{now_ms, Pool};

/// Serves both services; cheap to clone.
pub struct Service<C: Cloud, M: Metadata, P: PodSource> {
    pool: Pool<C, M>,
    pods: Arc<P>,
    events: Arc<Mutex<VecDeque<String>>>,
}

impl<C: Cloud, M: Metadata, P: PodSource> Clone for Service<C, M, P> {
    fn clone(&self) -> Self {
        Service {
            pool: self.pool.clone(),
            pods: self.pods.clone(),
            events: self.events.clone(),
        }
    }
}

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
    Ok((
        PodKey::new(&p.namespace, &p.name),
        p.container_id.clone(),
        p.uid.clone(),
    ))
}

fn ipset(v4: impl ToString) -> Option<pb::IpSet> {
    Some(pb::IpSet {
        ipv4: v4.to_string(),
        ipv6: String::new(),
    })
}

impl<C: Cloud, M: Metadata, P: PodSource> Service<C, M, P> {
    /// Wrap a pool and a pod source.
    pub fn new(pool: Pool<C, M>, pods: Arc<P>) -> Self {
        Service {
            pool,
            pods,
            events: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    fn mode(&self) -> pb::NetworkMode {
        match self.pool.config().mode {
            Mode::Shared => pb::NetworkMode::SharedEni,
            Mode::Exclusive => pb::NetworkMode::ExclusiveEni,
            Mode::VpcRoute => pb::NetworkMode::VpcRoute,
        }
    }

    /// The datapath description of an allocation.
    fn net_conf(
        &self,
        a: &Allocation,
        eni: &Eni,
        if_name: &str,
        meta: Option<&PodMeta>,
    ) -> pb::NetConf {
        let cfg = self.pool.config();
        let eni_info = match cfg.mode {
            Mode::VpcRoute => None,
            _ => Some(pb::EniInfo {
                eni_id: eni.id.clone(),
                mac: eni.mac.clone(),
                trunk: false,
                vid: 0,
                gateway: ipset(eni.gateway),
                primary_ip: eni.primary_ip.to_string(),
            }),
        };
        pb::NetConf {
            if_name: if if_name.is_empty() {
                "eth0".into()
            } else {
                if_name.into()
            },
            pod_ip: ipset(a.ip),
            subnet: ipset(eni.cidr),
            gateway: ipset(eni.gateway),
            eni: eni_info,
            service_cidrs: cfg.service_cidrs.iter().map(|c| c.to_string()).collect(),
            host_stack_cidrs: Vec::new(),
            extra_routes: Vec::new(),
            default_route: true,
            qos: meta.map(qos_of),
            mtu: 0,
        }
    }

    async fn alloc(&self, req: pb::AllocIpRequest) -> Result<pb::AllocIpReply, DaemonError> {
        let started = Instant::now();
        let (pod, container_id, uid) = pod_key(&req.pod)?;
        if container_id.is_empty() {
            return Err(DaemonError::InvalidRequest(format!(
                "pod {pod}: container id is required"
            )));
        }
        let _claim = self.pool.claim(&pod)?;
        let meta = self.pods.pod(&pod).await;
        if let Some((existing, eni)) = self.pool.lookup(&pod) {
            if existing.container_id == container_id {
                self.pool.metrics().allocation("ok");
                self.pool
                    .metrics()
                    .latency("existing", started.elapsed().as_secs_f64());
                return Ok(self.reply(&existing, &eni, &req.if_name, meta.as_ref()));
            }
            tracing::info!(old = %existing.container_id, "new sandbox for the pod; releasing the old one first");
            self.pool.release(&pod, &existing.container_id).await?;
        }
        let sticky = meta
            .as_ref()
            .is_some_and(|m| m.wants_sticky_ip(&self.pool.config().pool.stateful_kinds));
        let areq = AllocRequest {
            pod: pod.clone(),
            container_id,
            uid,
            sticky,
        };
        let deadline = Instant::now() + self.pool.config().alloc_timeout;
        match self.pool.allocate(&areq, deadline).await {
            Ok((a, eni, path)) => {
                self.pool.metrics().allocation("ok");
                self.pool
                    .metrics()
                    .latency(path.label(), started.elapsed().as_secs_f64());
                tracing::info!(ip = %a.ip, eni = %a.eni_id, path = path.label(), ms = started.elapsed().as_millis() as u64, "allocated");
                Ok(self.reply(&a, &eni, &req.if_name, meta.as_ref()))
            }
            Err(e) => {
                let label = match &e {
                    DaemonError::Exhausted { .. } => "exhausted",
                    DaemonError::Timeout { .. } => "timeout",
                    _ => "error",
                };
                self.pool.metrics().allocation(label);
                tracing::warn!(error = %e, "allocation failed");
                Err(e)
            }
        }
    }

    fn reply(
        &self,
        a: &Allocation,
        eni: &Eni,
        if_name: &str,
        meta: Option<&PodMeta>,
    ) -> pb::AllocIpReply {
        pb::AllocIpReply {
            mode: self.mode() as i32,
            net_confs: vec![self.net_conf(a, eni, if_name, meta)],
            node_ip: self.pool.node().primary_ip.to_string(),
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
fn qos_of(meta: &PodMeta) -> pb::Qos {
    let bw = match terway_core::PodBandwidth::from_annotations(&meta.annotations) {
        Ok(b) => b,
        Err((key, e)) => {
            tracing::warn!(annotation = %key, error = %e, "ignoring malformed bandwidth annotation");
            terway_core::PodBandwidth::default()
        }
    };
    pb::Qos {
        ingress_bps: bw.ingress.unwrap_or(0),
        egress_bps: bw.egress.unwrap_or(0),
        network_priority: meta
            .annotations
            .get("k8s.aliyun.com/network-priority")
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
impl<C: Cloud, M: Metadata, P: PodSource> pb::terway_backend_server::TerwayBackend
    for Service<C, M, P>
{
    async fn alloc_ip(
        &self,
        request: Request<pb::AllocIpRequest>,
    ) -> Result<Response<pb::AllocIpReply>, Status> {
        let req = request.into_inner();
        let span = span_for("AllocIP", &req.pod);
        Ok(Response::new(self.alloc(req).instrument(span).await?))
    }

    async fn release_ip(
        &self,
        request: Request<pb::ReleaseIpRequest>,
    ) -> Result<Response<pb::ReleaseIpReply>, Status> {
        let req = request.into_inner();
        let span = span_for("ReleaseIP", &req.pod);
        async move {
            let (pod, container_id, _) = pod_key(&req.pod)?;
            let _claim = self.pool.claim(&pod)?;
            let released = self.pool.release(&pod, &container_id).await?;
            tracing::info!(released, reason = %req.reason, "release");
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
        let Some((a, eni)) = self.pool.lookup(&pod) else {
            return Err(DaemonError::NotFound {
                pod: pod.to_string(),
            }
            .into());
        };
        if !container_id.is_empty() && a.container_id != container_id {
            return Err(DaemonError::NotFound {
                pod: format!("{pod} (container {container_id})"),
            }
            .into());
        }
        let meta = self.pods.pod(&pod).await;
        Ok(Response::new(pb::GetIpInfoReply {
            mode: self.mode() as i32,
            net_confs: vec![self.net_conf(&a, &eni, "eth0", meta.as_ref())],
            node_ip: self.pool.node().primary_ip.to_string(),
            container_id: a.container_id,
        }))
    }

    async fn record_event(
        &self,
        request: Request<pb::EventRequest>,
    ) -> Result<Response<pb::EventReply>, Status> {
        let req = request.into_inner();
        let target = req
            .pod
            .as_ref()
            .filter(|p| !p.name.is_empty())
            .map(|p| format!("pod {}/{}", p.namespace, p.name))
            .unwrap_or_else(|| "node".into());
        let kind = if req.event_type == pb::EventType::Warning as i32 {
            "Warning"
        } else {
            "Normal"
        };
        tracing::info!(%target, kind, reason = %req.reason, message = %req.message, "event");
        self.push_event(format!(
            "{} {kind} {target} {}: {}",
            now_ms(),
            req.reason,
            req.message
        ));
        Ok(Response::new(pb::EventReply {}))
    }
}

#[tonic::async_trait]
impl<C: Cloud, M: Metadata, P: PodSource> pb::terway_status_server::TerwayStatus
    for Service<C, M, P>
{
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
            &self.pool,
            self.mode(),
            events,
        )))
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
