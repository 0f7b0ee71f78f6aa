//! The pool manager: a loop that plans (see [`super::decide`]) and runs cloud operations, one per ENI
//! at a time, each as its own task so pods never wait behind an unrelated cloud call. Every operation
//! writes its intent before calling the cloud and its result after.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use terway_cloud::{Cloud, CloudError, CreateEniRequest, EniStatus, Metadata, NetworkInterface};
use tokio::sync::watch;
use tracing::Instrument;

use super::decide::{plan, Op, PlanParams};
use super::state::{Eni, EniPhase, IpSlot, PoolState};
use super::vswitch::{order_candidates, VSwitchCandidate};
use super::{now_ms, Pool};
use crate::config::Mode;
use crate::error::{DaemonError, Result};
use crate::store::{Change, Intent, IntentKind};

/// Tag every ENI we create carries (Terway's).
pub const TAG_CREATOR: (&str, &str) = ("creator", "terway");
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
            mode: self.inner.cfg.mode,
            cap: self.inner.node.capacity,
            now_ms: now,
            allow_release,
            reclaim_extra,
            max_concurrent_creates: if self.inner.cfg.mode == Mode::Exclusive {
                2
            } else {
                1
            },
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

    /// The manager loop: runs until `stop` turns true.
    pub async fn run_manager(&self, mut stop: watch::Receiver<bool>) {
        let cfg = &self.inner.cfg.pool;
        let mut last_sync = Instant::now();
        let mut last_reclaim = Instant::now();
        // The first round refills to min idle and finishes warm-up right away.
        self.plan_and_spawn(false, 0);
        loop {
            let waiting = self.lock().demand > 0;
            let tick = if waiting {
                Duration::from_millis(200)
            } else {
                cfg.sync_period.min(Duration::from_secs(1))
            };
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
            let allow_release = last_sync.elapsed() >= cfg.sync_period;
            if allow_release {
                last_sync = Instant::now();
            }
            let mut reclaim = 0;
            if let Some(after) = cfg.idle_reclaim_after {
                let quiet = now_ms().saturating_sub(self.lock().last_activity_ms);
                if allow_release
                    && quiet >= after.as_millis() as u64
                    && last_reclaim.elapsed() >= cfg.idle_reclaim_interval
                {
                    reclaim = cfg.idle_reclaim_batch;
                    last_reclaim = Instant::now();
                }
            }
            self.plan_and_spawn(allow_release, reclaim);
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
            st.inhibits.expire(now);
            let mut ops = plan(
                &st,
                &self.plan_params(&st, now, allow_release, reclaim_extra),
            );
            // ENIs whose delete failed earlier are retried.
            for e in st
                .enis
                .values()
                .filter(|e| e.phase == EniPhase::Deleting && !e.busy)
            {
                ops.push(Op::DeleteEni {
                    eni_id: e.id.clone(),
                });
            }
            for op in &ops {
                match op {
                    Op::Assign { eni_id, count } => {
                        st.adding += count;
                        if let Some(e) = st.enis.get_mut(eni_id) {
                            e.busy = true;
                        }
                    }
                    Op::Create { secondary } => {
                        st.creating += 1;
                        st.adding += secondary + 1;
                    }
                    Op::Unassign { eni_id, ips } => {
                        if let Some(e) = st.enis.get_mut(eni_id) {
                            e.busy = true;
                            for ip in ips {
                                e.ips.insert(*ip, IpSlot::Releasing);
                            }
                            e.version += 1;
                        }
                    }
                    Op::DeleteEni { eni_id } => {
                        if let Some(e) = st.enis.get_mut(eni_id) {
                            e.busy = true;
                            e.phase = EniPhase::Deleting;
                            e.version += 1;
                        }
                    }
                }
            }
            if !st.warm_up_done {
                let total = st.counts(now).total + st.adding;
                if total
                    >= self
                        .inner
                        .cfg
                        .pool
                        .warm_up
                        .min(self.inner.node.capacity.total())
                {
                    st.warm_up_done = true;
                    let store = self.inner.store.clone();
                    tokio::spawn(async move {
                        let _ = store
                            .commit(vec![Change::PutMeta("warm_up_done".into(), "true".into())])
                            .await;
                    });
                }
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
            Op::Assign { eni_id, count } => {
                let r = self.op_assign(&eni_id, count).await;
                let mut st = self.lock();
                st.adding = st.adding.saturating_sub(count);
                if let Some(e) = st.enis.get_mut(&eni_id) {
                    e.busy = false;
                }
                r
            }
            Op::Create { secondary } => {
                let r = self.op_create(secondary).await;
                let mut st = self.lock();
                st.adding = st.adding.saturating_sub(secondary + 1);
                st.creating = st.creating.saturating_sub(1);
                r
            }
            Op::Unassign { eni_id, ips } => self.op_unassign(&eni_id, &ips).await,
            Op::DeleteEni { eni_id } => self.op_delete(&eni_id).await,
        };
        let now = now_ms();
        let mut st = self.lock();
        match res {
            Ok(()) => {
                st.failures = 0;
                st.backoff_until_ms = 0;
            }
            Err(e) => {
                tracing::warn!(op = ?op, error = %e, "pool operation failed");
                st.failures = (st.failures + 1).min(6);
                st.backoff_until_ms = now + (250u64 << st.failures).min(10_000);
                if let DaemonError::Cloud(CloudError::EniLimitExceeded { .. }) = &e {
                    st.inhibits.eni_limit_hit(
                        now,
                        self.inner.cfg.pool.inhibit_eni_limit.as_millis() as u64,
                    );
                }
                st.last_error = Some(e.to_string());
            }
        }
    }

    fn block_vswitch(&self, vswitch_id: &str) {
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

    async fn op_assign(&self, eni_id: &str, count: u32) -> Result<()> {
        let (mac, vswitch) = {
            let st = self.lock();
            let e = st
                .enis
                .get(eni_id)
                .ok_or_else(|| DaemonError::NotReady(format!("ENI {eni_id} is gone")))?;
            (e.mac.clone(), e.vswitch_id.clone())
        };
        let intent = Intent::new(
            IntentKind::AssignIps {
                eni_id: eni_id.into(),
                count,
            },
            now_ms(),
        );
        self.persist(vec![Change::PutIntent(intent.clone())])
            .await?;
        let res = self
            .call(
                "AssignPrivateIpAddresses",
                self.inner.cloud.assign_private_ips(eni_id, count),
            )
            .await;
        let ips = match res {
            Ok(ips) => ips,
            Err(e) => {
                match &e {
                    CloudError::IpNotEnough { .. } => self.block_vswitch(&vswitch),
                    CloudError::IpCountExceeded { .. } => {
                        if let Some(en) = self.lock().enis.get_mut(eni_id) {
                            en.full = true;
                        }
                    }
                    _ => {}
                }
                self.persist(vec![Change::DelIntent(intent.id)]).await?;
                return Err(e.into());
            }
        };
        // Hand the addresses out only once the instance sees them (metadata), as Terway does.
        if let Err(e) = self
            .wait_metadata_ips(&mac, &ips, Duration::from_secs(10))
            .await
        {
            tracing::warn!(eni = eni_id, error = %e, "assigned IPs not yet visible in metadata; using them anyway");
        }
        let snapshot = {
            let mut st = self.lock();
            st.enis.get_mut(eni_id).map(|e| {
                for ip in &ips {
                    e.ips.entry(*ip).or_insert(IpSlot::Idle);
                }
                e.version += 1;
                e.clone()
            })
        };
        let mut changes: Vec<Change> = snapshot.into_iter().map(Change::PutEni).collect();
        changes.push(Change::DelIntent(intent.id));
        self.persist(changes).await?;
        tracing::info!(eni = eni_id, count = ips.len(), "assigned IPs");
        Ok(())
    }

    async fn vswitch_order(&self) -> Vec<String> {
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

    async fn op_create(&self, secondary: u32) -> Result<()> {
        let order = self.vswitch_order().await;
        if order.is_empty() {
            return Err(DaemonError::Exhausted {
                pod: "(pool)".into(),
                reason: "every configured vSwitch is out of addresses".into(),
            });
        }
        let mut last = None;
        for vsw in order {
            match self.create_in(&vsw, secondary).await {
                Ok(()) => return Ok(()),
                Err(DaemonError::Cloud(e @ CloudError::IpNotEnough { .. })) => {
                    self.block_vswitch(&vsw);
                    last = Some(DaemonError::Cloud(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| DaemonError::NotReady("no vSwitch to create an ENI in".into())))
    }

    fn eni_tags(&self, intent_id: &str) -> BTreeMap<String, String> {
        let mut tags = self.inner.cfg.pool.eni_tags.clone();
        tags.insert(TAG_CREATOR.0.into(), TAG_CREATOR.1.into());
        tags.insert(TAG_INSTANCE.into(), self.inner.node.instance_id.clone());
        tags.insert(TAG_INTENT.into(), intent_id.into());
        tags
    }

    async fn create_in(&self, vswitch_id: &str, secondary: u32) -> Result<()> {
        let mut intent = Intent::new(
            IntentKind::CreateEni {
                vswitch_id: vswitch_id.into(),
                eni_id: None,
            },
            now_ms(),
        );
        self.persist(vec![Change::PutIntent(intent.clone())])
            .await?;
        // GC must leave the ENI alone while this create is in flight (it carries the intent tag).
        self.lock().pending_enis.insert(intent.id.clone());
        let req = CreateEniRequest {
            vswitch_id: vswitch_id.into(),
            security_group_ids: self.inner.node.security_groups.clone(),
            trunk: false,
            secondary_ip_count: secondary,
            ipv6_count: 0,
            tags: self.eni_tags(&intent.id),
            description: format!("terway pool of {}", self.inner.node.instance_id),
            resource_group_id: self.inner.cfg.pool.resource_group_id.clone(),
        };
        let created = match self
            .call(
                "CreateNetworkInterface",
                self.inner.cloud.create_network_interface(&req),
            )
            .await
        {
            Ok(n) => n,
            Err(e) => {
                self.lock().pending_enis.remove(&intent.id);
                self.persist(vec![Change::DelIntent(intent.id)]).await?;
                return Err(e.into());
            }
        };
        self.lock().pending_enis.insert(created.id.clone());
        intent.kind = IntentKind::CreateEni {
            vswitch_id: vswitch_id.into(),
            eni_id: Some(created.id.clone()),
        };
        let attached = async {
            self.persist(vec![Change::PutIntent(intent.clone())])
                .await?;
            self.call(
                "AttachNetworkInterface",
                self.inner.cloud.attach_network_interface(
                    &created.id,
                    &self.inner.node.instance_id,
                    None,
                ),
            )
            .await?;
            self.wait_ready(&created.id).await
        }
        .await;
        match attached {
            Ok(eni) => {
                let snapshot = {
                    let mut st = self.lock();
                    st.pending_enis.remove(&eni.id);
                    st.pending_enis.remove(&intent.id);
                    st.enis.insert(eni.id.clone(), eni.clone());
                    eni
                };
                tracing::info!(eni = %snapshot.id, vswitch = vswitch_id, ips = snapshot.ips.len(), "ENI ready");
                self.persist(vec![Change::PutEni(snapshot), Change::DelIntent(intent.id)])
                    .await
            }
            Err(e) => {
                tracing::warn!(eni = %created.id, error = %e, "ENI did not become ready; rolling back");
                let rolled_back = self.destroy_eni(&created.id).await;
                {
                    let mut st = self.lock();
                    st.pending_enis.remove(&created.id);
                    st.pending_enis.remove(&intent.id);
                }
                match rolled_back {
                    Ok(()) => self.persist(vec![Change::DelIntent(intent.id)]).await?,
                    Err(re) => {
                        tracing::error!(eni = %created.id, error = %re, "rollback failed; GC will delete it")
                    }
                }
                Err(e)
            }
        }
    }

    /// Wait until the ENI is InUse and the instance sees its MAC and every address in metadata.
    pub(crate) async fn wait_ready(&self, eni_id: &str) -> Result<Eni> {
        let deadline = Instant::now() + self.inner.cfg.pool.eni_ready_timeout;
        let mut delay = Duration::from_millis(50);
        let nic: NetworkInterface = loop {
            match self
                .call(
                    "DescribeNetworkInterfaceAttribute",
                    self.inner.cloud.describe_network_interface(eni_id),
                )
                .await
            {
                Ok(Some(n)) if n.status == EniStatus::InUse => break n,
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(DaemonError::Cloud(CloudError::NotFound {
                        resource: eni_id.into(),
                        code: "InvalidEniId.NotFound".into(),
                        request_id: String::new(),
                    }))
                }
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(CloudError::Timeout {
                    what: format!("ENI {eni_id} to become InUse"),
                }
                .into());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        };
        let ips: Vec<Ipv4Addr> = nic.private_ips.iter().map(|p| p.address).collect();
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let meta = self.wait_metadata_ips(&nic.mac, &ips, remaining).await?;
        Ok(Eni {
            id: nic.id.clone(),
            mac: nic.mac.to_lowercase(),
            vswitch_id: nic.vswitch_id.clone(),
            cidr: meta.vswitch_cidr,
            gateway: meta.gateway,
            primary_ip: nic.primary_ip,
            phase: EniPhase::Ready,
            ips: ips.into_iter().map(|ip| (ip, IpSlot::Idle)).collect(),
            version: 1,
            busy: false,
            full: false,
        })
    }

    /// Poll metadata until the ENI (by MAC) is visible with all `ips`.
    pub(crate) async fn wait_metadata_ips(
        &self,
        mac: &str,
        ips: &[Ipv4Addr],
        limit: Duration,
    ) -> Result<terway_cloud::EniMetadata> {
        let deadline = Instant::now() + limit;
        let mut delay = Duration::from_millis(20);
        loop {
            match self.inner.meta.eni(mac).await {
                Ok(Some(m)) if ips.iter().all(|ip| m.private_ipv4s.contains(ip)) => return Ok(m),
                Ok(_) => {}
                Err(e) => tracing::debug!(mac, error = %e, "metadata not answering yet"),
            }
            if Instant::now() >= deadline {
                return Err(CloudError::Timeout {
                    what: format!("ENI {mac} and its IPs to appear in metadata"),
                }
                .into());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Detach (if attached), wait until Available, delete. Unknown ENI = done.
    pub(crate) async fn destroy_eni(&self, eni_id: &str) -> Result<()> {
        let deadline = Instant::now() + self.inner.cfg.pool.eni_ready_timeout;
        let mut delay = Duration::from_millis(50);
        let mut detach_sent = false;
        loop {
            let cur = self
                .call(
                    "DescribeNetworkInterfaceAttribute",
                    self.inner.cloud.describe_network_interface(eni_id),
                )
                .await;
            match cur {
                Ok(None) => return Ok(()),
                Ok(Some(n)) if n.status == EniStatus::Available => {
                    self.call(
                        "DeleteNetworkInterface",
                        self.inner.cloud.delete_network_interface(eni_id),
                    )
                    .await?;
                    return Ok(());
                }
                Ok(Some(n))
                    if matches!(n.status, EniStatus::InUse | EniStatus::Attaching)
                        && !detach_sent =>
                {
                    let inst = n
                        .instance_id
                        .clone()
                        .unwrap_or_else(|| self.inner.node.instance_id.clone());
                    match self
                        .call(
                            "DetachNetworkInterface",
                            self.inner.cloud.detach_network_interface(eni_id, &inst),
                        )
                        .await
                    {
                        Ok(()) => detach_sent = true,
                        // Attaching ENIs refuse to detach; try again once attached.
                        Err(CloudError::InvalidEniState { .. }) => {}
                        Err(e) if e.is_retryable() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Some(_)) => {}
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(CloudError::Timeout {
                    what: format!("ENI {eni_id} to detach and delete"),
                }
                .into());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn op_unassign(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Result<()> {
        let intent = Intent::new(
            IntentKind::UnassignIps {
                eni_id: eni_id.into(),
                ips: ips.to_vec(),
            },
            now_ms(),
        );
        let res = async {
            self.persist(vec![Change::PutIntent(intent.clone())])
                .await?;
            self.call(
                "UnassignPrivateIpAddresses",
                self.inner.cloud.unassign_private_ips(eni_id, ips),
            )
            .await?;
            Ok::<(), DaemonError>(())
        }
        .await;
        let snapshot = {
            let mut st = self.lock();
            st.enis.get_mut(eni_id).map(|e| {
                for ip in ips {
                    if res.is_ok() {
                        e.ips.remove(ip);
                    } else if e.ips.get(ip) == Some(&IpSlot::Releasing) {
                        e.ips.insert(*ip, IpSlot::Idle);
                    }
                }
                e.busy = false;
                e.version += 1;
                e.clone()
            })
        };
        let mut changes: Vec<Change> = snapshot.into_iter().map(Change::PutEni).collect();
        changes.push(Change::DelIntent(intent.id));
        self.persist(changes).await?;
        if res.is_ok() {
            tracing::info!(eni = eni_id, count = ips.len(), "unassigned idle IPs");
        }
        res
    }

    async fn op_delete(&self, eni_id: &str) -> Result<()> {
        let intent = Intent::new(
            IntentKind::DeleteEni {
                eni_id: eni_id.into(),
            },
            now_ms(),
        );
        let snapshot = self.lock().enis.get(eni_id).cloned();
        let mut changes: Vec<Change> = snapshot.into_iter().map(Change::PutEni).collect();
        changes.push(Change::PutIntent(intent.clone()));
        self.persist(changes).await?;
        let res = self.destroy_eni(eni_id).await;
        match res {
            Ok(()) => {
                self.lock().enis.remove(eni_id);
                self.persist(vec![
                    Change::DelEni(eni_id.into()),
                    Change::DelIntent(intent.id),
                ])
                .await?;
                tracing::info!(eni = eni_id, "ENI deleted");
                Ok(())
            }
            Err(e) => {
                // Stay in Deleting (no pod can take its slots); the next round retries.
                if let Some(en) = self.lock().enis.get_mut(eni_id) {
                    en.busy = false;
                }
                self.persist(vec![Change::DelIntent(intent.id)]).await?;
                Err(e)
            }
        }
    }
}
