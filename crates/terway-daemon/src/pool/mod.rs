//! The IP/ENI pool: pods take free slots under a short lock (fast path) or wait for the background
//! manager to get more from the cloud (slow path) without holding any lock while the cloud works.
//!
//! Layout: [`state`] (the model), [`decide`] (pure decisions), [`ledger`] (pure bookkeeping around
//! operations), [`schedule`] (pure timing), [`inhibit`], [`vswitch`] and [`waits`] (pure helpers), [`engine`] (the
//! manager loop), [`ops`] (crash-safe cloud operations), [`alloc`] (allocate/release),
//! [`reconcile`] (start-up recovery and GC against the cloud).

pub mod alloc;
pub mod decide;
pub mod engine;
pub mod inhibit;
pub mod ledger;
pub mod ops;
pub mod reconcile;
pub mod schedule;
pub mod state;
pub mod vswitch;
pub mod waits;

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use terway_cloud::{Cloud, CloudResult, Metadata};
use tokio::sync::Notify;

use crate::config::DaemonConfig;
use crate::metrics::Metrics;
use crate::record::ResourceKind;
use crate::store::{Change, Store};
use state::{Capacity, PoolState};

/// What the ENIs of a pool are for: secondary IPs shared by pods, or one whole ENI per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EniPoolKind {
    /// Pods take secondary IPs (and the primary IP) of shared ENIs.
    SharedIps,
    /// Each pod takes a whole ENI (one slot per ENI).
    Exclusive,
}

impl EniPoolKind {
    /// The pool kind that serves backend kind `kind`, if ENIs serve it at all.
    pub fn serving(kind: ResourceKind) -> Option<Self> {
        match kind {
            ResourceKind::SharedIp => Some(EniPoolKind::SharedIps),
            ResourceKind::ExclusiveEni => Some(EniPoolKind::Exclusive),
            ResourceKind::PodCidr | ResourceKind::PodEni => None,
        }
    }

    /// The backend kind a pool of this kind serves.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            EniPoolKind::SharedIps => ResourceKind::SharedIp,
            EniPoolKind::Exclusive => ResourceKind::ExclusiveEni,
        }
    }
}

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
    /// Security groups for new ENIs.
    pub security_groups: Vec<String>,
    /// Instance-type quotas (absent when no backend of the node uses ENIs).
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
    kind: EniPoolKind,
    node: NodeInfo,
    capacity: Capacity,
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
    attach_times: Mutex<schedule::AttachTimes>,
    waits: Mutex<waits::WaitLog>,
}

impl<C: Cloud, M: Metadata> Pool<C, M> {
    /// Build a pool of `kind` around an initial state (then [`Pool::recover`] fills it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: DaemonConfig,
        kind: EniPoolKind,
        node: NodeInfo,
        capacity: Capacity,
        cloud: C,
        meta: M,
        store: Store,
        metrics: Arc<Metrics>,
        state: PoolState,
    ) -> Self {
        Pool {
            inner: Arc::new(Inner {
                cfg,
                kind,
                node,
                capacity,
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
                attach_times: Mutex::new(schedule::AttachTimes::default()),
                waits: Mutex::new(waits::WaitLog::default()),
            }),
        }
    }

    /// What this pool's ENIs are for.
    pub fn kind(&self) -> EniPoolKind {
        self.inner.kind
    }

    /// How big the pool may grow.
    pub fn capacity(&self) -> Capacity {
        self.inner.capacity
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

    /// Recent attach durations (for when to first look at a new ENI).
    pub(crate) fn attach_times(&self) -> MutexGuard<'_, schedule::AttachTimes> {
        self.inner
            .attach_times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Slot origins and slow allocations (why pods waited).
    pub(crate) fn waits(&self) -> MutexGuard<'_, waits::WaitLog> {
        self.inner.waits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recent allocations that waited for the pool, oldest first.
    pub fn slow_allocations(&self) -> Vec<waits::SlowAllocation> {
        self.waits().slow().cloned().collect()
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
        self.inner.store.commit(changes).await
    }

    /// Publish pool gauges.
    pub fn publish_metrics(&self) {
        let now = now_ms();
        let st = self.lock();
        self.inner
            .metrics
            .set_pool(self.inner.kind.resource_kind(), &st.counts(now));
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
