//! The daemon's reports written to the API server: events (events.k8s.io/v1) on pods and on the node,
//! the Node object's `SufficientIP` condition and capacity annotation, the `Node` CR, and CNI progress
//! per pod UID in the `NodeRuntime` CR. The daemon's calls only queue; one publisher task owns the API
//! traffic, so a slow API server delays reports, never a pod's network. What is state rather than
//! history (the Node object, the Node CR) is kept as its latest value and written on the next flush
//! while it differs from what was written; a failed write is simply due again.
//!
//! Events are rate-limited per object and reason (a crash-looping pod must not flood etcd), and an
//! event repeating within a few minutes becomes a series (`count`) on the first one, as kubelet does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use terway_daemon::report::{
    reasons, CniOp, Event, EventTarget, IpSufficiency, NodeResources, Reporter,
};
use terway_daemon::PodKey;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::node_runtime::{NodeRuntimeBook, FLUSH_PERIOD, PRUNE_PERIOD};
use crate::KubePodSource;

/// A CNI mark waiting for the NodeRuntime writer: (pod UID, `namespace/name`, what finished).
type Mark = (String, String, terway_apis::CniStatus);

/// `reportingController` of every event terwayd writes.
pub const REPORTING_CONTROLLER: &str = "terway.alibabacloud.com/terwayd";
/// Namespace of the events about the node.
pub const NODE_EVENT_NAMESPACE: &str = terway_apis::events::CLUSTER_EVENT_NAMESPACE;
/// Node condition type for IP sufficiency.
pub const CONDITION_SUFFICIENT_IP: &str = "SufficientIP";

/// Queued events beyond this are dropped (and counted): the API server is far behind.
const QUEUE: usize = 512;
/// Events per object and reason in a burst, then one more per [`REFILL`].
const BURST: f64 = 10.0;
/// Time to earn back one event of the burst.
const REFILL: Duration = Duration::from_secs(30);
/// A repeat within this time becomes a series on the earlier event.
const SERIES_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Per-request bound, so one hung request cannot stall the queue for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A token bucket per (object, reason).
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        self.tokens = (self.tokens + earned).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The latest value of something kept on the API server, and whether it still has to be written.
struct Due<T> {
    value: T,
    due: bool,
}

/// A [`Due`] shared between the reporter (which changes it) and the publisher (which writes it).
struct Shared<T>(Arc<Mutex<Due<T>>>);

impl<T: Clone> Shared<T> {
    fn new(value: T) -> Self {
        Shared(Arc::new(Mutex::new(Due { value, due: false })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Due<T>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the value; it is due to be written.
    fn update(&self, f: impl FnOnce(&mut T)) {
        let mut d = self.lock();
        f(&mut d.value);
        d.due = true;
    }

    /// The value, if it is due (no longer due afterwards).
    fn take_due(&self) -> Option<T> {
        let mut d = self.lock();
        std::mem::take(&mut d.due).then(|| d.value.clone())
    }

    /// A write failed: the (possibly newer) value is due again.
    fn retry(&self) {
        self.lock().due = true;
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

/// What the daemon says about its Node object: the `SufficientIP` condition and the capacity
/// annotation, each once known. Applied as a whole, so a retry never loses either.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeReport {
    /// Condition `SufficientIP`.
    pub sufficiency: Option<IpSufficiency>,
    /// Annotation `k8s.aliyun.com/max-available-ip`.
    pub max_pod_ips: Option<u32>,
}

/// Reports to the API server; cheap to share.
pub struct KubeReporter {
    events: mpsc::Sender<Event>,
    node_report: Shared<NodeReport>,
    // Never dropped, unlike events: the NodeRuntime record is what makes address reuse safe.
    marks: Arc<Mutex<Vec<Mark>>>,
    /// The latest node resources, for the Node CR.
    resources: Shared<Option<NodeResources>>,
    pods: KubePodSource,
    dropped: AtomicU64,
}

impl Reporter for KubeReporter {
    fn event(&self, ev: Event) {
        if self.events.try_send(ev).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "event queue full: the API server is not keeping up; events are dropped"
                );
            }
        }
    }

    fn ip_sufficiency(&self, state: &IpSufficiency) {
        self.node_report
            .update(|r| r.sufficiency = Some(state.clone()));
    }

    fn node_capacity(&self, max_pod_ips: u32) {
        self.node_report
            .update(|r| r.max_pod_ips = Some(max_pod_ips));
    }

    fn node_resources(&self, res: &NodeResources) {
        self.resources.update(|r| *r = Some(res.clone()));
    }

    fn cni_done(&self, pod: &PodKey, uid: &str, op: CniOp) {
        let Some(uid) = self.pods.uid_or_cached(pod, uid) else {
            tracing::debug!(pod = %pod, "pod UID unknown; NodeRuntime not updated");
            return;
        };
        let status = match op {
            CniOp::Added => terway_apis::CniStatus::Initial,
            CniOp::Deleted => terway_apis::CniStatus::Deleted,
        };
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((uid, pod.to_string(), status));
    }
}

/// The publisher task; ends once every [`KubeReporter`] handle is dropped and the queue is drained.
pub struct ReporterTask(JoinHandle<()>);

impl ReporterTask {
    /// Wait for the queue to drain, at most `limit`.
    pub async fn finish(self, limit: Duration) {
        let abort = self.0.abort_handle();
        if tokio::time::timeout(limit, self.0).await.is_err() {
            tracing::warn!("reports still queued at shutdown were dropped");
            abort.abort();
        }
    }
}

impl KubeReporter {
    /// Start publishing for node `node`; `pods` fills in pod UIDs the CNI did not send.
    pub fn start(
        client: Client,
        node: &str,
        pods: KubePodSource,
    ) -> (Arc<KubeReporter>, ReporterTask) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let node_report = Shared::new(NodeReport::default());
        let marks = Arc::new(Mutex::new(Vec::new()));
        let resources = Shared::new(None);
        let publisher = Publisher {
            client,
            node: node.to_string(),
            pods: pods.clone(),
            buckets: HashMap::new(),
            recent: HashMap::new(),
            warned: false,
            marks: marks.clone(),
            book: NodeRuntimeBook::default(),
            resources: resources.clone(),
            node_report: node_report.clone(),
        };
        let task = tokio::spawn(publisher.run(rx));
        let reporter = Arc::new(KubeReporter {
            events: tx,
            node_report,
            marks,
            resources,
            pods,
            dropped: AtomicU64::new(0),
        });
        (reporter, ReporterTask(task))
    }
}

/// Key of a series: the same message about the same object.
type SeriesKey = (EventTarget, String, String);

struct Publisher {
    client: Client,
    node: String,
    pods: KubePodSource,
    buckets: HashMap<(EventTarget, String), Bucket>,
    recent: HashMap<SeriesKey, (K8sEvent, Instant)>,
    warned: bool,
    marks: Arc<Mutex<Vec<Mark>>>,
    book: NodeRuntimeBook,
    resources: Shared<Option<NodeResources>>,
    node_report: Shared<NodeReport>,
}

impl Publisher {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut flush = tokio::time::interval(FLUSH_PERIOD);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = Instant::now();
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.publish(ev).await,
                    None => break,
                },
                _ = flush.tick() => {
                    self.flush_node().await;
                    self.flush_marks().await;
                    self.flush_resources().await;
                    if last_prune.elapsed() >= PRUNE_PERIOD {
                        last_prune = Instant::now();
                        match self.book.prune(&self.client, &self.node).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(node = %self.node, pruned = n, "NodeRuntime: forgot pods deleted long ago"),
                            Err(e) => tracing::warn!(node = %self.node, error = %e, "NodeRuntime prune failed"),
                        }
                    }
                }
            }
        }
        // Shutting down: what finished last still gets recorded.
        self.flush_marks().await;
    }

    /// Write the Node object's condition and annotation when they changed.
    async fn flush_node(&self) {
        let Some(report) = self.node_report.take_due() else {
            return;
        };
        match self.set_node(&report).await {
            Ok(()) => {}
            // terwayd may start before kubelet registers the node.
            Err(Failure::NotFound) => {
                tracing::debug!(node = %self.node, "node not registered yet; its condition and annotations are set once it is");
                self.node_report.retry();
            }
            Err(Failure::Other(e)) => {
                tracing::warn!(node = %self.node, error = %e, "cannot update the Node object; retrying");
                self.node_report.retry();
            }
        }
    }

    /// Write the latest node resources to the Node CR when they changed.
    async fn flush_resources(&self) {
        let Some(Some(res)) = self.resources.take_due() else {
            return;
        };
        if let Err(e) = crate::node_cr::apply(&self.client, &self.node, &res).await {
            tracing::warn!(node = %self.node, error = %e, "cannot update the Node CR; retrying");
            self.resources.retry();
        }
    }

    /// Move queued CNI marks into the book and write them.
    async fn flush_marks(&mut self) {
        let marks = std::mem::take(&mut *self.marks.lock().unwrap_or_else(|e| e.into_inner()));
        for (uid, pod_id, status) in marks {
            self.book.mark(&uid, &pod_id, status);
        }
        match self.book.flush(&self.client, &self.node).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(node = %self.node, pods = n, "NodeRuntime updated"),
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "cannot update NodeRuntime; retrying")
            }
        }
    }

    fn allowed(&mut self, ev: &Event, now: Instant) -> bool {
        self.buckets
            .retain(|_, b| now.duration_since(b.at) < REFILL.mul_f64(BURST));
        self.buckets
            .entry((ev.target.clone(), ev.reason.clone()))
            .or_insert(Bucket {
                tokens: BURST,
                at: now,
            })
            .take(now)
    }

    fn regarding(&self, target: &EventTarget) -> ObjectReference {
        match target {
            EventTarget::Pod { key, uid } => {
                let uid = self.pods.uid_or_cached(key, uid);
                ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    namespace: Some(key.namespace.clone()),
                    name: Some(key.name.clone()),
                    uid,
                    ..Default::default()
                }
            }
            // kubelet's convention (and what `kubectl describe node` looks for): UID = node name.
            EventTarget::Node => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.node.clone()),
                uid: Some(self.node.clone()),
                ..Default::default()
            },
        }
    }

    async fn publish(&mut self, ev: Event) {
        let now = Instant::now();
        if !self.allowed(&ev, now) {
            tracing::debug!(target_object = %ev.target, reason = %ev.reason, "event rate-limited");
            return;
        }
        self.recent
            .retain(|_, (_, at)| now.duration_since(*at) < SERIES_WINDOW);
        let key: SeriesKey = (ev.target.clone(), ev.reason.clone(), ev.message.clone());
        let regarding = self.regarding(&ev.target);
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &event_namespace(&regarding));
        let stamp = MicroTime(Timestamp::now());
        let res = match self.recent.get(&key) {
            Some((earlier, _)) => {
                let mut e = earlier.clone();
                let count = e.series.as_ref().map_or(2, |s| s.count + 1);
                e.series = Some(EventSeries {
                    count,
                    last_observed_time: stamp,
                });
                let name = e.metadata.name.clone().unwrap_or_default();
                let patch = serde_json::json!({ "series": e.series });
                timed(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)))
                    .await
                    .map(|_| e)
            }
            None => {
                let e = new_event(&ev, regarding, &self.node, stamp);
                timed(api.create(&PostParams::default(), &e)).await
            }
        };
        match res {
            Ok(e) => {
                self.recent.insert(key, (e, now));
            }
            Err(msg) => {
                // Logged loudly once: a missing RBAC rule would otherwise fill the log per pod.
                if !self.warned {
                    tracing::warn!(target_object = %ev.target, reason = %ev.reason, error = %msg, "cannot write an event to the API server (further failures are logged at debug)");
                    self.warned = true;
                } else {
                    tracing::debug!(target_object = %ev.target, reason = %ev.reason, error = %msg, "event not written");
                }
            }
        }
    }

    /// Apply the whole report to the Node object.
    async fn set_node(&self, report: &NodeReport) -> Result<(), Failure> {
        if let Some(n) = report.max_pod_ips {
            let patch = serde_json::json!({ "metadata": { "annotations": {
                terway_core::annotations::MAX_AVAILABLE_IP: n.to_string(),
            }}});
            let api: Api<Node> = Api::all(self.client.clone());
            timed(api.patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))).await?;
        }
        if let Some(state) = &report.sufficiency {
            self.set_condition(state).await?;
        }
        Ok(())
    }

    async fn set_condition(&self, state: &IpSufficiency) -> Result<(), Failure> {
        let api: Api<Node> = Api::all(self.client.clone());
        let now = Timestamp::now().to_string();
        // Strategic merge on `type`: kubelet's own conditions are left as they are.
        let patch = serde_json::json!({
            "status": { "conditions": [{
                "type": CONDITION_SUFFICIENT_IP,
                "status": if state.sufficient { "True" } else { "False" },
                "reason": state.reason,
                "message": state.message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }]}
        });
        timed(api.patch_status(
            &self.node,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        ))
        .await?;
        tracing::info!(node = %self.node, sufficient = state.sufficient, reason = %state.reason, "node condition SufficientIP set");
        Ok(())
    }
}

/// Why a request to the API server failed.
#[derive(Debug)]
enum Failure {
    /// The object does not exist (yet).
    NotFound,
    /// Anything else, as text.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotFound => f.write_str("the object does not exist"),
            Failure::Other(e) => f.write_str(e),
        }
    }
}

/// `f` within [`REQUEST_TIMEOUT`], its error classified.
async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(s))) if s.is_not_found() => Err(Failure::NotFound),
        Ok(Err(e)) => Err(Failure::Other(e.to_string())),
        Err(_) => Err(Failure::Other(format!(
            "no answer from the API server in {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// The events.k8s.io/v1 object for `ev`. Names are unique per object and time, as kubelet makes them.
fn new_event(ev: &Event, regarding: ObjectReference, node: &str, stamp: MicroTime) -> K8sEvent {
    terway_apis::events::new_event(
        regarding,
        &terway_apis::events::Note {
            type_: ev.kind.as_str(),
            reason: &ev.reason,
            action: action_of(&ev.reason),
            note: &ev.message,
        },
        &terway_apis::events::Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: format!("terwayd-{node}"),
        },
        stamp,
    )
}

fn event_namespace(regarding: &ObjectReference) -> String {
    terway_apis::events::namespace_for(regarding)
}

/// The `action` of an event (required by events.k8s.io/v1): what the daemon was doing.
fn action_of(reason: &str) -> &'static str {
    match reason {
        reasons::ALLOC_IP_SUCCEED | reasons::ALLOC_IP_FAILED => "AllocIP",
        reasons::CNI_POD_DELETE_ERROR => "ReleaseIP",
        reasons::CONFIG_ERROR => "LoadConfig",
        _ => "SetupNetwork",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use terway_daemon::report::EventType;

    #[test]
    fn a_burst_is_allowed_then_one_per_refill() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: BURST,
            at: t0,
        };
        let allowed = (0..20).filter(|_| b.take(t0)).count();
        assert_eq!(allowed, BURST as usize);
        assert!(!b.take(t0 + REFILL / 2));
        assert!(b.take(t0 + REFILL + REFILL / 2));
        assert!(!b.take(t0 + REFILL + REFILL / 2));
    }

    #[test]
    fn events_carry_what_the_api_server_requires() {
        let ev = Event {
            target: EventTarget::Pod {
                key: PodKey::new("default", "web-1"),
                uid: "u1".into(),
            },
            kind: EventType::Warning,
            reason: "AllocIPFailed".into(),
            message: "x".repeat(2000),
        };
        let r = ObjectReference {
            namespace: Some("default".into()),
            name: Some("web-1".into()),
            ..Default::default()
        };
        let e = new_event(&ev, r, "node-a", MicroTime(Timestamp::now()));
        assert!(e.metadata.name.as_deref().unwrap().starts_with("web-1."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.action.as_deref(), Some("AllocIP"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert!(e.note.as_ref().unwrap().len() <= 1024);
        assert!(e.reporting_instance.as_deref() == Some("terwayd-node-a"));
        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("node-a".into()),
            ..Default::default()
        };
        let e = new_event(&ev, node, "node-a", MicroTime(Timestamp::now()));
        assert_eq!(e.metadata.namespace.as_deref(), Some("kube-system"));
    }
}
