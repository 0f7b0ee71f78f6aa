//! Allocate and release pod addresses. The fast path takes a free slot under the pool lock; the slow
//! path registers demand, wakes the manager and waits for a notification with no lock held.

use std::time::Instant;

use terway_cloud::{Cloud, Metadata};

use super::decide::{blocked_reason, pick_requested, pick_slot_in_turn};
use super::ledger::released_slot;
use super::state::{AllocKey, Allocation, Eni, IpSlot, PodKey};
use super::waits::{SlowAllocation, WaitReason};
use super::{now_ms, Pool};
use crate::backend::AllocRequest;
use crate::error::{DaemonError, Result};
use crate::record::{EniAnswer, NetAnswer};
use crate::store::Change;

/// How an allocation was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocPath {
    /// A free slot was there.
    Fast,
    /// The request waited for the cloud.
    Slow,
}

impl AllocPath {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            AllocPath::Fast => "fast",
            AllocPath::Slow => "slow",
        }
    }
}

/// Decrements the registered demand and leaves the wait queue if the waiter leaves without a slot
/// (error, timeout, cancel).
struct DemandGuard<'a, C: Cloud, M: Metadata> {
    pool: &'a Pool<C, M>,
    /// The place in the wait queue, while registered as demand.
    ticket: Option<u64>,
    served_slow: bool,
}

impl<C: Cloud, M: Metadata> Drop for DemandGuard<'_, C, M> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket {
            {
                let mut st = self.pool.lock();
                st.demand = st.demand.saturating_sub(1);
                self.pool.waits().queue.leave(t);
            }
            // Those queued behind it may now be first in line for a free slot.
            self.pool.inner.changed.notify_waiters();
        }
    }
}

impl<C: Cloud, M: Metadata> Pool<C, M> {
    /// Give the pod a slot, waiting for the cloud until `deadline` if none is free.
    pub async fn allocate(
        &self,
        req: &AllocRequest,
        deadline: Instant,
    ) -> Result<(Allocation, AllocPath)> {
        let started = Instant::now();
        let mut guard = DemandGuard {
            pool: self,
            ticket: None,
            served_slow: false,
        };
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        let enis_ready_then = self.waits().enis_ready();
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some((alloc, snapshot, waited)) =
                self.try_take(req, &mut guard, enis_ready_then)?
            {
                let path = if guard.served_slow {
                    AllocPath::Slow
                } else {
                    AllocPath::Fast
                };
                // Below min idle now? Let the manager refill in the background.
                self.inner.wake.notify_one();
                if let Err(e) = self
                    .persist(vec![
                        Change::PutEni(snapshot.clone()),
                        Change::PutPod(alloc.clone()),
                    ])
                    .await
                {
                    self.undo_allocation(&alloc);
                    return Err(e);
                }
                if let Some(reason) = waited {
                    self.record_slow(req, started, reason);
                }
                return Ok((alloc, path));
            }
            self.inner.wake.notify_one();
            if tokio::time::timeout_at(tokio_deadline, notified)
                .await
                .is_err()
            {
                let reason = self
                    .lock()
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the cloud is slow".into());
                return Err(DaemonError::Timeout {
                    pod: req.key.to_string(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    reason,
                });
            }
        }
    }

    /// Keep, log and count an allocation that waited for the pool, with what it waited on.
    fn record_slow(&self, req: &AllocRequest, started: Instant, reason: WaitReason) {
        let waited_ms = started.elapsed().as_millis() as u64;
        tracing::info!(pod = %req.key, waited_ms, waited_on = %reason, "allocation waited for the pool");
        self.inner.metrics.slow_allocation(reason.kind.label());
        self.waits().record(SlowAllocation {
            pod: req.key.pod.to_string(),
            waited_ms,
            reason,
            at_ms: now_ms(),
        });
    }

    /// Take a free slot under the lock, or register demand; `Ok(None)` means "wait". With the slot comes
    /// what the request waited on, when it had to wait.
    #[allow(clippy::type_complexity)]
    fn try_take(
        &self,
        req: &AllocRequest,
        guard: &mut DemandGuard<'_, C, M>,
        enis_ready_then: u32,
    ) -> Result<Option<(Allocation, Eni, Option<WaitReason>)>> {
        let mut st = self.lock();
        if st.stopping {
            return Err(DaemonError::NotReady("terwayd is shutting down".into()));
        }
        let now = now_ms();
        let picked =
            match req.ip {
                // Never waits for the cloud: either the pool has the address or nobody can make it.
                Some(ip) => Some(pick_requested(&st, &req.key.pod, ip, now).map_err(|why| {
                    DaemonError::InvalidRequest(format!("pod {}: {why}", req.key))
                })?),
                None => {
                    let ahead = self.waits().queue.ahead(guard.ticket);
                    pick_slot_in_turn(
                        &st,
                        &req.key.pod,
                        now,
                        self.inner.cfg.pool.eni_selection,
                        ahead,
                    )
                }
            };
        if let Some((eni_id, ip)) = picked {
            let Some(snapshot) = st.set_slot(&eni_id, ip, IpSlot::in_use(&req.key)) else {
                return Err(DaemonError::NotReady(format!(
                    "ENI {eni_id} vanished while allocating"
                )));
            };
            let alloc = Allocation {
                pod: req.key.pod.clone(),
                if_name: req.key.if_name.clone(),
                container_id: req.container_id.clone(),
                uid: req.uid.clone(),
                backend: self.inner.kind.resource_kind(),
                ip,
                eni_id,
                answer: answer_for(&snapshot, ip),
                qos: req.qos.clone(),
                sticky: req.sticky,
                at_ms: now,
            };
            st.pods.insert(req.key.clone(), alloc.clone());
            st.last_activity_ms = now;
            let mut waits = self.waits();
            let waited = waits.slot_taken(ip, guard.ticket.is_some(), enis_ready_then);
            if let Some(t) = guard.ticket.take() {
                waits.queue.leave(t);
                st.demand = st.demand.saturating_sub(1);
                guard.served_slow = true;
            }
            drop(waits);
            return Ok(Some((alloc, snapshot, waited)));
        }
        let params = self.plan_params(&st, now, false, 0);
        if let Some(reason) = blocked_reason(&st, &params, &self.inner.node.instance_id) {
            return Err(DaemonError::Exhausted {
                pod: req.key.to_string(),
                reason,
            });
        }
        if guard.ticket.is_none() {
            st.demand += 1;
            guard.ticket = Some(self.waits().queue.join());
        }
        Ok(None)
    }

    fn undo_allocation(&self, alloc: &Allocation) {
        let mut st = self.lock();
        let key = alloc.key();
        if st.pods.get(&key) == Some(alloc) {
            st.pods.remove(&key);
            st.set_slot(&alloc.eni_id, alloc.ip, IpSlot::Idle);
            drop(st);
            self.inner.changed.notify_waiters();
        }
    }

    /// The pod interface's current allocation.
    pub fn lookup(&self, key: &AllocKey) -> Option<Allocation> {
        self.lock().pods.get(key).cloned()
    }

    /// Release the pod's address if `container_id` matches (empty = any). Returns whether anything
    /// was released. The slot goes to cooldown, or stays reserved for a sticky pod.
    ///
    /// The slot is not reusable until the release is durable: otherwise another pod's allocation
    /// could be committed first and a crash in between would leave both recorded for one address.
    pub async fn release(&self, key: &AllocKey, container_id: &str) -> Result<bool> {
        let pod = &key.pod;
        let (snapshot, alloc, final_slot) = {
            let mut st = self.lock();
            let Some(alloc) = st.pods.get(key).cloned() else {
                return Ok(false);
            };
            if !container_id.is_empty() && alloc.container_id != container_id {
                tracing::info!(pod = %key, stale = container_id, current = %alloc.container_id, "ignoring release for a stale container");
                return Ok(false);
            }
            st.pods.remove(key);
            let now = now_ms();
            st.last_activity_ms = now;
            let final_slot = released_slot(&self.inner.cfg.pool, pod, alloc.sticky, now);
            // In memory: not free yet. On disk: the final state.
            let snapshot = st
                .set_slot(&alloc.eni_id, alloc.ip, IpSlot::Releasing)
                .map(|mut e| {
                    e.ips.insert(alloc.ip, final_slot.clone());
                    e
                });
            (snapshot, alloc, final_slot)
        };
        let mut changes = vec![Change::DelPod(key.clone())];
        changes.extend(snapshot.map(Change::PutEni));
        let persisted = self.persist(changes).await;
        {
            let mut st = self.lock();
            let still_releasing = st
                .enis
                .get(&alloc.eni_id)
                .and_then(|e| e.ips.get(&alloc.ip))
                .is_some_and(|s| *s == IpSlot::Releasing);
            if still_releasing {
                match &persisted {
                    Ok(()) => {
                        st.set_slot(&alloc.eni_id, alloc.ip, final_slot);
                    }
                    Err(_) => {
                        // Nothing changed on disk: the pod still holds the address.
                        st.set_slot(&alloc.eni_id, alloc.ip, IpSlot::in_use(key));
                        st.pods.insert(key.clone(), alloc.clone());
                    }
                }
            }
        }
        persisted?;
        self.inner.changed.notify_waiters();
        tracing::info!(pod = %key, ip = %alloc.ip, eni = %alloc.eni_id, "released");
        Ok(true)
    }

    /// Turn a sticky reservation whose pod is gone into an ordinary cooldown.
    pub(crate) async fn drop_sticky(&self, pod: &PodKey) -> Result<()> {
        let now = now_ms();
        let cooldown = self.inner.cfg.pool.ip_reuse_cooldown.as_millis() as u64;
        let snapshots: Vec<Eni> = {
            let mut st = self.lock();
            let mut out = Vec::new();
            for eni in st.enis.values_mut() {
                let mut touched = false;
                for slot in eni.ips.values_mut() {
                    if let IpSlot::Sticky { pod: p, until_ms } = slot {
                        if p == pod && *until_ms > now {
                            *slot = IpSlot::Cooldown {
                                until_ms: now + cooldown,
                            };
                            touched = true;
                        }
                    }
                }
                if touched {
                    eni.version += 1;
                    out.push(eni.clone());
                }
            }
            out
        };
        self.persist(snapshots.into_iter().map(Change::PutEni).collect())
            .await
    }
}

/// What the datapath needs for address `ip` on `eni`.
pub(crate) fn answer_for(eni: &Eni, ip: std::net::Ipv4Addr) -> NetAnswer {
    NetAnswer {
        ip,
        subnet: eni.cidr,
        gateway: eni.gateway,
        eni: Some(EniAnswer {
            id: eni.id.clone(),
            mac: eni.mac.clone(),
            gateway: eni.gateway,
            primary_ip: eni.primary_ip,
        }),
    }
}
