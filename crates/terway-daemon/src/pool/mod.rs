//! The IP/ENI pool: pods take free slots under a short lock (fast path) or wait for the background
//! manager to get more from the cloud (slow path) without holding any lock while the cloud works.
//!
//! Layout: [`state`] (the model), [`decide`] (pure decisions), [`inhibit`] and [`vswitch`] (pure
//! helpers), [`engine`] (the manager loop), [`ops`] (crash-safe cloud operations), [`alloc`] (allocate/release),
//! [`reconcile`] (start-up recovery and GC against the cloud).

pub mod alloc;
pub mod decide;
pub mod engine;
pub mod inhibit;
pub mod ops;
pub mod reconcile;
pub mod state;
pub mod vswitch;

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use terway_cloud::{Cloud, CloudResult, Metadata};
use tokio::sync::Notify;

use crate::config::DaemonConfig;
use crate::metrics::Metrics;
use crate::store::{Change, Store};
use state::{Capacity, Eni, IpSlot, PoolState};

/// Id of the pseudo-ENI holding the node PodCIDR in vpc-route mode.
pub const POD_CIDR_ID: &str = "pod-cidr";

/// Wall clock in unix milliseconds (cooldowns are persisted, so they must survive restarts).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Facts about this node, fixed at start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// `i-…`.
    pub instance_id: String,
    /// Instance type.
    pub instance_type: String,
    /// Zone.
    pub zone_id: String,
    /// VPC.
    pub vpc_id: String,
    /// vSwitch of the primary ENI.
    pub vswitch_id: String,
    /// Primary IP of the node.
    pub primary_ip: Ipv4Addr,
    /// Pool capacity.
    pub capacity: Capacity,
    /// Security groups for new ENIs.
    pub security_groups: Vec<String>,
    /// Instance-type quotas (absent in vpc-route mode).
    pub limits: Option<terway_cloud::InstanceTypeLimits>,
}

/// One recorded cloud call (for `terway-cli status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRecord {
    /// Action.
    pub action: String,
    /// "ok" or the error code.
    pub result: String,
    /// Duration.
    pub duration_ms: u64,
    /// When it finished (unix ms).
    pub at_ms: u64,
}

#[derive(Debug, Default)]
struct VSwitchCache {
    fetched: Option<Instant>,
    available: HashMap<String, Option<u64>>,
}

/// The pool, shared by the gRPC handlers, the manager loop and GC. Cheap to clone.
pub struct Pool<C: Cloud, M: Metadata> {
    inner: Arc<Inner<C, M>>,
}

impl<C: Cloud, M: Metadata> Clone for Pool<C, M> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<C, M> {
    cfg: DaemonConfig,
    node: NodeInfo,
    cloud: C,
    meta: M,
    store: Store,
    state: Mutex<PoolState>,
    metrics: Arc<Metrics>,
    /// Wakes the manager loop (new demand, finished operation).
    wake: Notify,
    /// Wakes waiting allocations (new free slots, or a reason to give up).
    changed: Notify,
    calls: Mutex<VecDeque<CallRecord>>,
    call_count: AtomicU64,
    calls_by_action: Mutex<std::collections::BTreeMap<String, u64>>,
    ops_in_flight: AtomicUsize,
    ops_done: Notify,
    vswitches: Mutex<VSwitchCache>,
    /// Pods with a request (or GC) in progress.
    claims: Mutex<std::collections::HashSet<state::PodKey>>,
}

/// Exclusive right to work on one pod; released on drop.
pub struct PodClaim<C: Cloud, M: Metadata> {
    pool: Pool<C, M>,
    pod: state::PodKey,
}

impl<C: Cloud, M: Metadata> Drop for PodClaim<C, M> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.pool.inner.claims.lock() {
            c.remove(&self.pod);
        }
    }
}

impl<C: Cloud, M: Metadata> Pool<C, M> {
    /// Build a pool around an initial state (from [`reconcile::recover`]).
    pub fn new(
        cfg: DaemonConfig,
        node: NodeInfo,
        cloud: C,
        meta: M,
        store: Store,
        metrics: Arc<Metrics>,
        state: PoolState,
    ) -> Self {
        Pool {
            inner: Arc::new(Inner {
                cfg,
                node,
                cloud,
                meta,
                store,
                state: Mutex::new(state),
                metrics,
                wake: Notify::new(),
                changed: Notify::new(),
                calls: Mutex::new(VecDeque::new()),
                call_count: AtomicU64::new(0),
                calls_by_action: Mutex::new(Default::default()),
                ops_in_flight: AtomicUsize::new(0),
                ops_done: Notify::new(),
                vswitches: Mutex::new(VSwitchCache::default()),
                claims: Mutex::new(Default::default()),
            }),
        }
    }

    /// Claim a pod for one request; `PodBusy` if another request holds it (the CNI retries).
    pub fn claim(&self, pod: &state::PodKey) -> crate::error::Result<PodClaim<C, M>> {
        let mut c = self.inner.claims.lock().unwrap_or_else(|p| p.into_inner());
        if !c.insert(pod.clone()) {
            return Err(crate::error::DaemonError::PodBusy {
                pod: pod.to_string(),
            });
        }
        Ok(PodClaim {
            pool: self.clone(),
            pod: pod.clone(),
        })
    }

    /// Node facts.
    pub fn node(&self) -> &NodeInfo {
        &self.inner.node
    }

    /// Configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.inner.cfg
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Lock the state. Never hold the guard across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves consistent-enough data (every mutation is a few
        // assignments), so keep serving instead of poisoning the whole daemon.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a read-only closure over the state (status, tests).
    pub fn with_state<R>(&self, f: impl FnOnce(&PoolState) -> R) -> R {
        f(&self.lock())
    }

    /// Cloud calls made since start.
    pub fn cloud_call_count(&self) -> u64 {
        self.inner.call_count.load(Ordering::Relaxed)
    }

    /// Cloud calls since start, by action.
    pub fn recent_calls_total_by_action(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner
            .calls_by_action
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// The most recent cloud calls, oldest first.
    pub fn recent_calls(&self) -> Vec<CallRecord> {
        self.inner
            .calls
            .lock()
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Make a cloud call, recording it in metrics and the recent-calls ring.
    pub(crate) async fn call<T>(
        &self,
        action: &'static str,
        fut: impl std::future::Future<Output = CloudResult<T>>,
    ) -> CloudResult<T> {
        let started = Instant::now();
        let res = fut.await;
        let result = match &res {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code().unwrap_or("transport").to_string(),
        };
        self.inner.metrics.cloud_call(action, &result);
        self.inner.call_count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.inner.calls_by_action.lock() {
            *m.entry(action.to_string()).or_default() += 1;
        }
        if let Ok(mut calls) = self.inner.calls.lock() {
            if calls.len() >= 100 {
                calls.pop_front();
            }
            calls.push_back(CallRecord {
                action: action.to_string(),
                result,
                duration_ms: started.elapsed().as_millis() as u64,
                at_ms: now_ms(),
            });
        }
        res
    }

    /// Persist changes; failures are logged with what was lost (the cloud stays the source of truth
    /// for addresses, so the next start-up reconciles them).
    pub(crate) async fn persist(&self, changes: Vec<Change>) -> crate::error::Result<()> {
        let changes: Vec<Change> = changes.into_iter().map(compact).collect();
        self.inner.store.commit(changes).await
    }

    /// Publish pool gauges.
    pub fn publish_metrics(&self) {
        let now = now_ms();
        let st = self.lock();
        self.inner.metrics.set_pool(&st.counts(now));
        let active = st
            .inhibits
            .vswitch_blocked_until_ms
            .values()
            .filter(|t| **t > now)
            .count();
        self.inner
            .metrics
            .set_inhibits(st.inhibits.create_blocked(now).is_some(), active);
    }

    /// Make waiting allocations give up (shutdown).
    pub fn begin_stop(&self) {
        self.lock().stopping = true;
        self.inner.changed.notify_waiters();
    }

    /// Wait until every spawned cloud operation has finished, or `limit` passed.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.inner.ops_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.ops_in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("shutdown: cloud operations still running after {limit:?}; their intents stay recorded");
                return;
            }
        }
    }
}

/// In vpc-route mode only non-idle slots of the PodCIDR are stored (the rest is implied by the CIDR).
fn compact(ch: Change) -> Change {
    match ch {
        Change::PutEni(mut e) if e.id == POD_CIDR_ID => {
            e.ips.retain(|_, s| *s != IpSlot::Idle);
            Change::PutEni(e)
        }
        other => other,
    }
}

/// The PodCIDR as a pseudo-ENI: the first host is the node-side gateway, the rest are pod slots.
pub fn pod_cidr_eni(cidr: ipnet::Ipv4Net) -> Eni {
    let mut hosts = cidr.hosts();
    let gateway = hosts.next().unwrap_or(cidr.network());
    Eni {
        id: POD_CIDR_ID.into(),
        mac: String::new(),
        vswitch_id: String::new(),
        cidr,
        gateway,
        primary_ip: gateway,
        phase: state::EniPhase::Ready,
        ips: hosts.map(|ip| (ip, IpSlot::Idle)).collect(),
        version: 0,
        busy: false,
        full: false,
    }
}
