//! The pool manager: a loop that plans (see [`super::decide`]) and runs cloud operations, one per ENI
//! at a time, each as its own task so pods never wait behind an unrelated cloud call. Every operation
//! writes its intent before calling the cloud and its result after.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use terway_cloud::{Cloud, CloudError, Metadata};
use tokio::sync::watch;
use tracing::Instrument;

use super::decide::{max_concurrent_creates, Op, PlanParams};
use super::ledger::{plan_round, settle, Outcome};
use super::schedule::{manager_tick, RoundClock};
use super::state::PoolState;
use super::vswitch::{order_candidates, VSwitchCandidate};
use super::{now_ms, Pool};
use crate::error::DaemonError;
use crate::store::Change;

/// Tag every ENI we create carries (Terway's); defined once in terway-core, where the tag policy uses it.
pub const TAG_CREATOR: (&str, &str) = terway_core::CREATOR_TAG;
/// Tag naming the instance an ENI was created for (finds ENIs left Available by a crash).
pub const TAG_INSTANCE: &str = "terway.instance-id";
/// Tag carrying the intent id of the create.
pub const TAG_INTENT: &str = "terway.intent";

const VSWITCH_CACHE_TTL: Duration = Duration::from_secs(60);

impl<C: Cloud, M: Metadata> Pool<C, M> {
    pub(crate) fn plan_params(
        &self,
        st: &PoolState,
        now: u64,
        allow_release: bool,
        reclaim_extra: u32,
    ) -> PlanParams<'_> {
        PlanParams {
            cfg: &self.inner.cfg.pool,
            kind: self.inner.kind,
            cap: self.inner.capacity,
            now_ms: now,
            allow_release,
            reclaim_extra,
            max_concurrent_creates: max_concurrent_creates(self.inner.kind),
            vswitch_available: self.vswitch_usable(st, now),
        }
    }

    fn candidate_ids(&self) -> Vec<String> {
        let cfg = &self.inner.cfg.pool;
        if !cfg.vswitches.is_empty() {
            return cfg.vswitches.clone();
        }
        match cfg.vswitches_by_zone.get(&self.inner.node.zone_id) {
            Some(list) if !list.is_empty() => list.clone(),
            _ => vec![self.inner.node.vswitch_id.clone()],
        }
    }

    fn vswitch_usable(&self, st: &PoolState, now: u64) -> bool {
        let cache = self
            .inner
            .vswitches
            .lock()
            .map(|c| c.available.clone())
            .unwrap_or_default();
        self.candidate_ids().iter().any(|id| {
            !st.inhibits.vswitch_blocked(id, now) && cache.get(id).copied().flatten() != Some(0)
        })
    }

    /// Why the node cannot get new addresses right now, if it cannot: every vSwitch it may use
    /// reported no free address (condition `SufficientIP=False`).
    pub fn ip_shortage(&self) -> Option<String> {
        let now = now_ms();
        let st = self.lock();
        if self.vswitch_usable(&st, now) {
            return None;
        }
        let ids = self.candidate_ids();
        let blocked: Vec<String> = ids
            .iter()
            .map(|id| match st.inhibits.vswitch_blocked_until_ms.get(id) {
                Some(t) if *t > now => format!(
                    "{id}: IpNotEnough, retried in {} s",
                    (t - now).div_ceil(1000)
                ),
                _ => format!("{id}: 0 free addresses"),
            })
            .collect();
        Some(format!(
            "no vSwitch of node {} has a free address ({}); pods that need a new address wait; add vSwitches with free addresses to eni_conf vswitches, or free addresses in these",
            self.inner.node.name,
            blocked.join("; ")
        ))
    }

    /// The manager loop: runs until `stop` turns true.
    pub async fn run_manager(&self, mut stop: watch::Receiver<bool>) {
        let cfg = &self.inner.cfg.pool;
        // Periods are measured on the monotonic clock; cooldowns (persisted) on the wall clock.
        let started = Instant::now();
        let mono_ms = || started.elapsed().as_millis() as u64;
        let mut clock = RoundClock::new(mono_ms());
        // The first round refills to min idle and finishes warm-up right away.
        self.plan_and_spawn(false, 0);
        loop {
            let tick = manager_tick(cfg, self.lock().demand > 0);
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            if self.lock().demand > 0 && !cfg.batch_window.is_zero() {
                // Let concurrent requests pile up so one cloud call serves them all.
                tokio::time::sleep(cfg.batch_window).await;
            }
            let quiet = now_ms().saturating_sub(self.lock().last_activity_ms);
            let round = clock.next(cfg, mono_ms(), quiet);
            self.plan_and_spawn(round.allow_release, round.reclaim_extra);
            // Cooldowns may have ended: let waiters look again.
            self.inner.changed.notify_waiters();
            self.publish_metrics();
        }
    }

    /// Plan one round and start its operations. Returns how many were started.
    pub fn plan_and_spawn(&self, allow_release: bool, reclaim_extra: u32) -> usize {
        let now = now_ms();
        let ops = {
            let mut st = self.lock();
            let params = self.plan_params(&st, now, allow_release, reclaim_extra);
            let warm_target = self.inner.cfg.pool.warm_up.min(self.inner.capacity.total());
            let (ops, warmed) = plan_round(&mut st, &params, warm_target);
            if warmed {
                let store = self.inner.store.clone();
                tokio::spawn(async move {
                    let _ = store
                        .commit(vec![Change::PutMeta("warm_up_done".into(), "true".into())])
                        .await;
                });
            }
            ops
        };
        let n = ops.len();
        for op in ops {
            let pool = self.clone();
            self.inner.ops_in_flight.fetch_add(1, Ordering::SeqCst);
            let span = tracing::info_span!("pool_op", op = ?op);
            tokio::spawn(async move {
                pool.run_op(op).instrument(span).await;
                pool.inner.ops_in_flight.fetch_sub(1, Ordering::SeqCst);
                pool.inner.ops_done.notify_waiters();
                pool.inner.wake.notify_one();
                pool.inner.changed.notify_waiters();
            });
        }
        n
    }

    async fn run_op(&self, op: Op) {
        let res = match op.clone() {
            Op::Assign { eni_id, count } => self.op_assign(&eni_id, count).await,
            Op::Create { secondary } => self.op_create(secondary).await,
            Op::Unassign { eni_id, ips } => self.op_unassign(&eni_id, &ips).await,
            Op::DeleteEni { eni_id } => self.op_delete(&eni_id).await,
        };
        let outcome = match &res {
            Ok(()) => Outcome::Done,
            Err(e) => {
                tracing::warn!(op = ?op, error = %e, "pool operation failed");
                Outcome::Failed {
                    message: e.to_string(),
                    eni_limit: matches!(e, DaemonError::Cloud(CloudError::EniLimitExceeded { .. })),
                }
            }
        };
        let inhibit_ms = self.inner.cfg.pool.inhibit_eni_limit.as_millis() as u64;
        settle(&mut self.lock(), &op, &outcome, now_ms(), inhibit_ms);
    }

    /// Addresses went back to the VPC: a vSwitch that had none may have some again, so its inhibit
    /// ends and the next allocation asks the cloud afresh (Terway lifts it on the next release too).
    pub(crate) fn addresses_returned(&self) {
        let had = {
            let mut st = self.lock();
            let had = !st.inhibits.vswitch_blocked_until_ms.is_empty();
            st.inhibits.clear_vswitches();
            had
        };
        if let Ok(mut c) = self.inner.vswitches.lock() {
            c.available.retain(|_, n| *n != Some(0));
            if had {
                c.fetched = None;
            }
        }
        if had {
            tracing::info!(
                "addresses returned to the VPC; vSwitches that had none are tried again"
            );
        }
    }

    pub(crate) fn block_vswitch(&self, vswitch_id: &str) {
        let ms = self.inner.cfg.pool.inhibit_ip_not_enough.as_millis() as u64;
        self.lock()
            .inhibits
            .vswitch_exhausted(vswitch_id, now_ms(), ms);
        if let Ok(mut c) = self.inner.vswitches.lock() {
            c.available.insert(vswitch_id.to_string(), Some(0));
        }
        tracing::warn!(
            vswitch = vswitch_id,
            "vSwitch has no free IP; skipping it for {:?}",
            self.inner.cfg.pool.inhibit_ip_not_enough
        );
    }

    pub(crate) async fn vswitch_order(&self) -> Vec<String> {
        let ids = self.candidate_ids();
        let stale = self
            .inner
            .vswitches
            .lock()
            .map(|c| c.fetched.is_none_or(|t| t.elapsed() > VSWITCH_CACHE_TTL))
            .unwrap_or(true);
        if stale {
            match self
                .call(
                    "DescribeVSwitches",
                    self.inner.cloud.describe_vswitches(&ids),
                )
                .await
            {
                Ok(list) => {
                    if let Ok(mut c) = self.inner.vswitches.lock() {
                        c.fetched = Some(Instant::now());
                        c.available.clear();
                        for v in list {
                            if v.zone_id != self.inner.node.zone_id {
                                tracing::warn!(vswitch = %v.id, zone = %v.zone_id, "vSwitch is in another zone; skipped");
                                c.available.insert(v.id, Some(0));
                            } else {
                                c.available.insert(v.id, Some(v.available_ip_count));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DescribeVSwitches failed; trying vSwitches in configured order")
                }
            }
        }
        let cache = self
            .inner
            .vswitches
            .lock()
            .map(|c| c.available.clone())
            .unwrap_or_default();
        let cands: Vec<VSwitchCandidate> = ids
            .iter()
            .map(|id| VSwitchCandidate {
                id: id.clone(),
                available: cache.get(id).copied().flatten(),
            })
            .collect();
        let now = now_ms();
        let st = self.lock();
        order_candidates(
            &cands,
            self.inner.cfg.pool.vswitch_selection,
            |id| st.inhibits.vswitch_blocked(id, now),
            &mut rand::rng(),
        )
    }
}
