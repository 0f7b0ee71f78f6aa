//! ENIs the controlplane made for one pod (Terway's PodENI path): the pod's PodENI names an ENI the
//! controlplane created in the pod's PodNetworking (its vSwitch, its security groups) and attached to
//! this instance. This backend never calls the cloud: it waits for the PodENI to be Bind here, and
//! hands the datapath that ENI (moved into the pod as an exclusive ENI). Release forgets the record;
//! detaching and deleting the ENI is the controlplane's, once the pod is gone.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use terway_rpc::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{AllocPath, AllocRequest, ResourceBackend};
use crate::error::{DaemonError, Result};
use crate::pool::now_ms;
use crate::reconciler::Reconciler;
use crate::record::{AllocKey, Allocation, EniAnswer, NetAnswer, PodKey, ResourceKind};
use crate::store::{Change, Snapshot, Store};

/// What the daemon needs of a pod's PodENI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEniView {
    /// The pod UID the PodENI was made for.
    pub pod_uid: String,
    /// Whether its phase is Bind.
    pub bound: bool,
    /// Instance it is bound to.
    pub instance_id: String,
    /// The ENI (empty while it is being created).
    pub eni_id: String,
    /// The ENI's MAC.
    pub mac: String,
    /// The ENI's vSwitch.
    pub vswitch_id: String,
    /// The pod's address (the ENI's primary IP).
    pub ip: Option<Ipv4Addr>,
    /// The vSwitch CIDR.
    pub cidr: Option<Ipv4Net>,
    /// The phase as written, for messages.
    pub phase: String,
}

/// Where the daemon reads PodENIs from (the API server; kube stays out of this crate).
pub trait PodEniSource: Send + Sync + 'static {
    /// The PodENI of `pod`, if one exists.
    fn pod_eni<'a>(
        &'a self,
        pod: &'a PodKey,
    ) -> BoxFuture<'a, std::result::Result<Option<PodEniView>, String>>;
}

/// How often a waiting allocation looks at the PodENI again.
const POLL: Duration = Duration::from_millis(250);

/// The PodENI backend.
#[derive(Clone)]
pub struct PodEniBackend {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    instance_id: String,
    source: Arc<dyn PodEniSource>,
    store: Store,
    records: Mutex<HashMap<AllocKey, Allocation>>,
    /// vSwitch of each ENI handed out since start (status only; the record does not keep it).
    vswitches: Mutex<HashMap<String, String>>,
    stopping: watch::Sender<bool>,
}

/// Why a PodENI cannot serve the request yet (`None`: it can).
pub fn not_ready(view: Option<&PodEniView>, uid: &str, instance: &str) -> Option<String> {
    let Some(v) = view else {
        return Some("no PodENI yet (the controlplane writes it once the pod is scheduled)".into());
    };
    if !uid.is_empty() && !v.pod_uid.is_empty() && v.pod_uid != uid {
        return Some(format!(
            "its PodENI was made for pod UID {}, not this pod ({uid}); the controlplane is releasing it",
            v.pod_uid
        ));
    }
    if v.eni_id.is_empty() {
        return Some("its ENI is being created".into());
    }
    if !v.bound || v.instance_id != instance {
        let phase = if v.phase.is_empty() {
            "none"
        } else {
            v.phase.as_str()
        };
        return Some(format!(
            "ENI {} is not bound to this instance yet (phase {phase}, instance {})",
            v.eni_id,
            if v.instance_id.is_empty() {
                "none"
            } else {
                v.instance_id.as_str()
            }
        ));
    }
    if v.ip.is_none() || v.cidr.is_none() || v.mac.is_empty() {
        return Some(format!(
            "ENI {} lacks its address, CIDR or MAC in the PodENI",
            v.eni_id
        ));
    }
    None
}

/// The datapath answer for a bound PodENI.
pub fn answer(v: &PodEniView) -> Option<NetAnswer> {
    let (ip, cidr) = (v.ip?, v.cidr?);
    let gateway = match terway_core::vswitch_gateway(ipnet::IpNet::V4(cidr)).ok()? {
        IpAddr::V4(g) => g,
        IpAddr::V6(_) => return None,
    };
    Some(NetAnswer {
        ip,
        subnet: cidr,
        gateway,
        eni: Some(EniAnswer {
            id: v.eni_id.clone(),
            mac: v.mac.to_lowercase(),
            gateway,
            primary_ip: ip,
        }),
    })
}

impl PodEniBackend {
    /// The backend of `node` (instance `instance_id`) reading PodENIs from `source`.
    pub fn new(node: &str, instance_id: &str, source: Arc<dyn PodEniSource>, store: Store) -> Self {
        let (stopping, _) = watch::channel(false);
        PodEniBackend {
            inner: Arc::new(Inner {
                node: node.into(),
                instance_id: instance_id.into(),
                source,
                store,
                records: Mutex::new(HashMap::new()),
                vswitches: Mutex::new(HashMap::new()),
                stopping,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AllocKey, Allocation>> {
        self.inner.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn do_allocate(
        &self,
        req: &AllocRequest,
        deadline: Instant,
    ) -> Result<(Allocation, AllocPath)> {
        if let Some(a) = self.lock().get(&req.key).cloned() {
            if a.container_id == req.container_id {
                return Ok((a, AllocPath::Fast));
            }
        }
        let started = Instant::now();
        let mut stopping = self.inner.stopping.subscribe();
        let mut path = AllocPath::Fast;
        let view = loop {
            let why = match self.inner.source.pod_eni(&req.key.pod).await {
                Ok(v) => match not_ready(v.as_ref(), &req.uid, &self.inner.instance_id) {
                    None => break v,
                    Some(w) => w,
                },
                Err(e) => format!("cannot read its PodENI: {e}"),
            };
            path = AllocPath::Slow;
            if Instant::now() + POLL >= deadline || *stopping.borrow() {
                return Err(DaemonError::Timeout {
                    pod: req.key.to_string(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    reason: format!(
                        "{why}; see `kubectl describe podeni -n {} {}` and the controlplane's log",
                        req.key.pod.namespace, req.key.pod.name
                    ),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stopping.changed() => {}
            }
        };
        let Some(view) = view else {
            return Err(DaemonError::NotReady("PodENI vanished".into()));
        };
        let answer = answer(&view).ok_or_else(|| DaemonError::Exhausted {
            pod: req.key.to_string(),
            reason: format!("the PodENI's vSwitch CIDR {:?} has no gateway", view.cidr),
        })?;
        let alloc = Allocation {
            pod: req.key.pod.clone(),
            if_name: req.key.if_name.clone(),
            container_id: req.container_id.clone(),
            uid: req.uid.clone(),
            backend: ResourceKind::PodEni,
            ip: answer.ip,
            eni_id: view.eni_id.clone(),
            answer,
            qos: req.qos.clone(),
            sticky: false,
            at_ms: now_ms(),
        };
        self.inner
            .store
            .commit(vec![Change::PutPod(alloc.clone())])
            .await?;
        self.lock().insert(req.key.clone(), alloc.clone());
        self.inner
            .vswitches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(view.eni_id.clone(), view.vswitch_id.clone());
        tracing::info!(pod = %req.key, eni = %alloc.eni_id, ip = %alloc.ip, node = %self.inner.node, "PodENI handed to the pod");
        Ok((alloc, path))
    }

    async fn do_release(&self, key: &AllocKey, container_id: &str) -> Result<bool> {
        let Some(a) = self.lock().get(key).cloned() else {
            return Ok(false);
        };
        if !container_id.is_empty() && a.container_id != container_id {
            tracing::info!(pod = %key, stale = container_id, current = %a.container_id, "ignoring release for a stale container");
            return Ok(false);
        }
        self.inner
            .store
            .commit(vec![Change::DelPod(key.clone())])
            .await?;
        self.lock().remove(key);
        tracing::info!(pod = %key, eni = %a.eni_id, "released (the controlplane detaches the ENI once the pod is gone)");
        Ok(true)
    }
}

impl ResourceBackend for PodEniBackend {
    fn kind(&self) -> ResourceKind {
        ResourceKind::PodEni
    }

    fn recover<'a>(&'a self, snap: &'a Snapshot) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mine: HashMap<AllocKey, Allocation> = snap
                .pods
                .iter()
                .filter(|a| a.backend == ResourceKind::PodEni)
                .map(|a| (a.key(), a.clone()))
                .collect();
            tracing::info!(backend = "pod-eni", pods = mine.len(), "recovered state");
            *self.lock() = mine;
            Ok(())
        })
    }

    fn start(&self, _stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        Vec::new()
    }

    fn allocate<'a>(
        &'a self,
        req: &'a AllocRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<(Allocation, AllocPath)>> {
        Box::pin(self.do_allocate(req, deadline))
    }

    fn release<'a>(
        &'a self,
        key: &'a AllocKey,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_release(key, container_id))
    }

    fn lookup(&self, key: &AllocKey) -> Option<Allocation> {
        self.lock().get(key).cloned()
    }

    fn allocations(&self) -> Vec<Allocation> {
        self.lock().values().cloned().collect()
    }

    fn sticky_pods(&self) -> Vec<PodKey> {
        Vec::new()
    }

    fn drop_sticky<'a>(&'a self, _pod: &'a PodKey) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn reconcilers(&self) -> Vec<Arc<dyn Reconciler>> {
        Vec::new()
    }

    fn fill_status(&self, reply: &mut pb::StatusReply) {
        // No pool to show; each pod's ENI is listed so `terway-cli pod` can say where the pod is.
        let vswitches = self
            .inner
            .vswitches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for a in self.lock().values() {
            let mac = a
                .answer
                .eni
                .as_ref()
                .map(|e| e.mac.clone())
                .unwrap_or_default();
            reply.enis.push(pb::EniStatus {
                eni_id: a.eni_id.clone(),
                mac,
                status: format!("PodENI {}", a.pod),
                vswitch_id: vswitches.get(&a.eni_id).cloned().unwrap_or_default(),
                cidr: a.answer.subnet.to_string(),
                ips: vec![pb::IpStatus {
                    ip: a.ip.to_string(),
                    state: "in-use".into(),
                    pod: a.pod.to_string(),
                }],
            });
        }
    }

    fn begin_stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    fn drain(&self, _limit: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> PodEniView {
        PodEniView {
            pod_uid: "u1".into(),
            bound: true,
            instance_id: "i-1".into(),
            eni_id: "eni-1".into(),
            mac: "02:AA:00:00:00:01".into(),
            vswitch_id: "vsw-1".into(),
            ip: Some(Ipv4Addr::new(10, 1, 2, 3)),
            cidr: "10.1.2.0/24".parse().ok(),
            phase: "Bind".into(),
        }
    }

    #[test]
    fn only_a_pod_eni_bound_here_for_this_pod_serves() {
        assert!(not_ready(None, "u1", "i-1").is_some_and(|w| w.contains("no PodENI yet")));
        assert_eq!(not_ready(Some(&bound()), "u1", "i-1"), None);
        assert_eq!(
            not_ready(Some(&bound()), "", "i-1"),
            None,
            "an unknown UID is not a mismatch"
        );
        assert!(not_ready(Some(&bound()), "u2", "i-1")
            .is_some_and(|w| w.contains("made for pod UID u1")));
        assert!(not_ready(Some(&bound()), "u1", "i-2")
            .is_some_and(|w| w.contains("not bound to this instance")));
        let mut creating = bound();
        creating.eni_id.clear();
        assert!(
            not_ready(Some(&creating), "u1", "i-1").is_some_and(|w| w.contains("being created"))
        );
        let mut binding = bound();
        binding.bound = false;
        binding.phase = "Binding".into();
        assert!(not_ready(Some(&binding), "u1", "i-1").is_some_and(|w| w.contains("phase Binding")));
    }

    #[test]
    fn the_answer_is_the_enis_address_with_the_vswitch_gateway() {
        let a = answer(&bound()).expect("answer");
        assert_eq!(a.ip, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 1, 2, 253));
        let eni = a.eni.expect("eni");
        assert_eq!(
            (eni.id.as_str(), eni.mac.as_str()),
            ("eni-1", "02:aa:00:00:00:01")
        );
    }
}
