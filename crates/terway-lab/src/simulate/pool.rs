//! The daemon's pool run in virtual time: the manager loop, the four cloud operations and pods allocating and
//! releasing, step for step after `terway_daemon::pool` (engine, ops, alloc), calling its pure parts — `plan`,
//! `pick_slot_in_turn`, `blocked_reason`, `reserve`/`settle`, `released_slot`, `RoundClock`, `manager_tick` and the
//! attach-poll schedule — on the daemon's own `PoolState`. What is modelled rather than shared: durable
//! commits (a fixed time), the plugin's own work around AllocIP (a fixed time), and the cloud
//! ([`super::cloud`]). Everything runs on one thread of a paused tokio runtime, so a run is deterministic
//! for a seed and thousands of pods take well under a second.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use terway_daemon::config::PoolConfig;
use terway_daemon::pool::decide::{
    blocked_reason, max_concurrent_creates, pick_slot_in_turn, Op, PlanParams,
};
use terway_daemon::pool::ledger::{plan_round, released_slot, settle, Outcome};
use terway_daemon::pool::schedule::{manager_tick, AttachTimes, RoundClock};
use terway_daemon::pool::state::{Capacity, Eni, EniPhase, IpSlot, PodKey, PoolState};
use terway_daemon::pool::waits::{WaitLog, WaitReason};
use terway_daemon::pool::EniPoolKind;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::cloud::{EniStatus, SimCloud};
use super::trace::Trace;

/// Unix ms that virtual time 0 maps to (cooldowns and the call log use wall-clock ms, as in the daemon).
pub const WALL_BASE_MS: u64 = 1_700_000_000_000;
/// The daemon caches DescribeVSwitches this long.
const VSWITCH_CACHE_MS: u64 = 60_000;
/// The plugin's AllocIP deadline (`daemon_timeout` of the lab's CNI config).
const ALLOC_DEADLINE: Duration = Duration::from_secs(60);

/// Fixed costs the simulator does not derive from the pool code.
#[derive(Debug, Clone, Copy)]
pub struct Costs {
    /// One durable commit of the daemon's store.
    pub commit: Duration,
    /// An ADD's work besides waiting for an address (plugin exec, AllocIP round trip, datapath setup).
    pub add_overhead: Duration,
    /// CPUs of the node: ADDs doing that work at once share them, so pods that an ENI's arrival wakes
    /// together finish one after another rather than all at once.
    pub node_cpus: usize,
    /// The period of the ENI garbage collector (two DescribeNetworkInterfaces per pass).
    pub gc_period: Duration,
    /// How long the run goes on after the last pod is gone (`--settle`, as in `bench churn`).
    pub settle: Duration,
}

/// One pod's outcome.
#[derive(Debug, Clone)]
pub struct PodRun {
    /// When its ADD started, virtual ms.
    pub started_ms: u64,
    /// ADD → ready, or why it failed.
    pub add: Result<Duration, String>,
    /// What it waited on, when it could not take a free slot at once.
    pub waited_for: Option<WaitReason>,
}

/// One sample of the pool's size.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Virtual seconds.
    pub t_s: f64,
    /// Slots the node holds.
    pub total: u32,
    /// Free slots.
    pub idle: u32,
    /// Slots held by pods.
    pub in_use: u32,
}

/// The simulated pool.
pub struct SimPool {
    cfg: PoolConfig,
    kind: EniPoolKind,
    cap: Capacity,
    costs: Costs,
    st: RefCell<PoolState>,
    cloud: RefCell<SimCloud>,
    attach: RefCell<AttachTimes>,
    wake: Notify,
    changed: Notify,
    t0: Instant,
    in_flight: Cell<usize>,
    vswitches_fetched: Cell<Option<u64>>,
    waits: RefCell<WaitLog>,
    cpus: tokio::sync::Semaphore,
    stop: Cell<bool>,
    pub(super) samples: RefCell<Vec<Sample>>,
}

impl SimPool {
    /// A cold pool (no ENIs) of `kind` on a node of capacity `cap`.
    pub fn new(
        cfg: PoolConfig,
        kind: EniPoolKind,
        cap: Capacity,
        costs: Costs,
        cloud: SimCloud,
    ) -> Rc<Self> {
        Rc::new(SimPool {
            cfg,
            kind,
            cap,
            costs,
            st: RefCell::new(PoolState::default()),
            cloud: RefCell::new(cloud),
            attach: RefCell::new(AttachTimes::default()),
            wake: Notify::new(),
            changed: Notify::new(),
            t0: Instant::now(),
            in_flight: Cell::new(0),
            vswitches_fetched: Cell::new(None),
            waits: RefCell::new(WaitLog::default()),
            cpus: tokio::sync::Semaphore::new(costs.node_cpus.max(1)),
            stop: Cell::new(false),
            samples: RefCell::new(Vec::new()),
        })
    }

    /// Virtual ms since the start (the monotonic scale of the round clock).
    fn mono_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Virtual ms since the pool started.
    pub fn elapsed_ms(&self) -> u64 {
        self.mono_ms()
    }

    /// Virtual wall-clock ms.
    fn now_ms(&self) -> u64 {
        WALL_BASE_MS + self.mono_ms()
    }

    /// The cloud, for the report.
    pub fn into_cloud(self: Rc<Self>) -> Option<SimCloud> {
        Rc::try_unwrap(self).ok().map(|p| p.cloud.into_inner())
    }

    async fn commit(&self) {
        tokio::time::sleep(self.costs.commit).await;
    }

    async fn call(&self, action: &'static str) {
        let d = self.cloud.borrow_mut().begin(action, self.mono_ms());
        tokio::time::sleep(d).await;
        let at = self.mono_ms();
        self.cloud.borrow_mut().answered(action, at, WALL_BASE_MS);
    }

    fn params(&self, allow_release: bool, reclaim_extra: u32) -> PlanParams<'_> {
        PlanParams {
            cfg: &self.cfg,
            kind: self.kind,
            cap: self.cap,
            now_ms: self.now_ms(),
            allow_release,
            reclaim_extra,
            max_concurrent_creates: max_concurrent_creates(self.kind),
            vswitch_available: true,
        }
    }

    /// Run the trace: the daemon starts, fills its pool to the low watermark, then pods come. Returns the
    /// pods' outcomes and the virtual ms at which the first pod arrived.
    pub async fn run(self: &Rc<Self>, trace: &Trace) -> (Vec<PodRun>, u64) {
        let manager = tokio::task::spawn_local(self.clone().manager());
        let gc = tokio::task::spawn_local(self.clone().gc());
        // The lab brings the node up before the churn: let the first fill finish.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while self.in_flight.get() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let start_ms = self.mono_ms();
        self.cloud.borrow_mut().calls.clear();
        let sampler = tokio::task::spawn_local(self.clone().sampler(start_ms));
        let pods: Vec<_> = trace
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let me = self.clone();
                let (at, life) = (
                    Duration::from_millis(start_ms + p.at_ms),
                    Duration::from_millis(p.lifetime_ms),
                );
                tokio::task::spawn_local(async move { me.pod(i, at, life).await })
            })
            .collect();
        let mut runs = Vec::with_capacity(pods.len());
        for p in pods {
            if let Ok(r) = p.await {
                runs.push(r);
            }
        }
        tokio::time::sleep(self.costs.settle).await;
        self.stop.set(true);
        self.wake.notify_one();
        let _ = manager.await;
        gc.abort();
        sampler.abort();
        (runs, start_ms)
    }

    async fn sampler(self: Rc<Self>, start_ms: u64) {
        loop {
            let c = self.st.borrow().counts(self.now_ms());
            let t_s = self.mono_ms().saturating_sub(start_ms) as f64 / 1000.0;
            self.samples.borrow_mut().push(Sample {
                t_s,
                total: c.total,
                idle: c.idle,
                in_use: c.in_use,
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn gc(self: Rc<Self>) {
        loop {
            tokio::time::sleep(self.costs.gc_period).await;
            self.call("DescribeNetworkInterfaces").await;
            self.call("DescribeNetworkInterfaces").await;
        }
    }

    /// `run_manager`.
    async fn manager(self: Rc<Self>) {
        let mut clock = RoundClock::new(self.mono_ms());
        self.plan_and_spawn(false, 0);
        loop {
            let tick = manager_tick(&self.cfg, self.st.borrow().demand > 0);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            if self.stop.get() {
                break;
            }
            if self.st.borrow().demand > 0 && !self.cfg.batch_window.is_zero() {
                tokio::time::sleep(self.cfg.batch_window).await;
            }
            let quiet = self
                .now_ms()
                .saturating_sub(self.st.borrow().last_activity_ms);
            let round = clock.next(&self.cfg, self.mono_ms(), quiet);
            self.plan_and_spawn(round.allow_release, round.reclaim_extra);
            self.changed.notify_waiters();
        }
    }

    /// `plan_and_spawn`.
    fn plan_and_spawn(self: &Rc<Self>, allow_release: bool, reclaim_extra: u32) {
        let ops = {
            let mut st = self.st.borrow_mut();
            let warm_target = self.cfg.warm_up.min(self.cap.total());
            plan_round(
                &mut st,
                &self.params(allow_release, reclaim_extra),
                warm_target,
            )
            .0
        };
        for op in ops {
            self.in_flight.set(self.in_flight.get() + 1);
            let me = self.clone();
            tokio::task::spawn_local(async move {
                me.run_op(op).await;
                me.in_flight.set(me.in_flight.get() - 1);
                me.wake.notify_one();
                me.changed.notify_waiters();
            });
        }
    }

    async fn run_op(&self, op: Op) {
        match &op {
            Op::Assign { eni_id, count } => self.op_assign(eni_id, *count).await,
            Op::Create { secondary } => self.op_create(*secondary).await,
            Op::Unassign { eni_id, ips } => self.op_unassign(eni_id, ips).await,
            Op::DeleteEni { eni_id } => self.op_delete(eni_id).await,
        }
        let inhibit_ms = self.cfg.inhibit_eni_limit.as_millis() as u64;
        let now = self.now_ms();
        settle(
            &mut self.st.borrow_mut(),
            &op,
            &Outcome::Done,
            now,
            inhibit_ms,
        );
    }

    async fn op_assign(&self, eni_id: &str, count: u32) {
        self.commit().await;
        self.call("AssignPrivateIpAddresses").await;
        let ips = self.cloud.borrow_mut().addresses(count);
        {
            let mut st = self.st.borrow_mut();
            if let Some(e) = st.enis.get_mut(eni_id) {
                for ip in &ips {
                    e.ips.entry(*ip).or_insert(IpSlot::Idle);
                }
                self.waits.borrow_mut().ips_assigned(eni_id, &ips);
                e.version += 1;
            }
        }
        self.commit().await;
    }

    async fn op_create(&self, secondary: u32) {
        let fresh = self
            .vswitches_fetched
            .get()
            .is_some_and(|t| self.mono_ms().saturating_sub(t) <= VSWITCH_CACHE_MS);
        if !fresh {
            self.call("DescribeVSwitches").await;
            self.vswitches_fetched.set(Some(self.mono_ms()));
        }
        self.commit().await;
        self.call("CreateNetworkInterface").await;
        let (id, ips) = self.cloud.borrow_mut().create_eni(secondary + 1);
        self.commit().await;
        self.call("AttachNetworkInterface").await;
        let asked = self.mono_ms();
        self.cloud.borrow_mut().attach(&id, asked);
        // `wait_ready`.
        let first = self.attach.borrow().first_look();
        tokio::time::sleep(first).await;
        let mut looks = 0;
        loop {
            looks += 1;
            self.call("DescribeNetworkInterfaceAttribute").await;
            if self.cloud.borrow().status(&id, self.mono_ms()) == Some(EniStatus::InUse) {
                break;
            }
            tokio::time::sleep(AttachTimes::next_look(looks)).await;
        }
        let attach_ms = self.mono_ms() - asked;
        self.attach
            .borrow_mut()
            .record(Duration::from_millis(attach_ms));
        let eni = Eni {
            id: id.clone(),
            mac: String::new(),
            vswitch_id: "vsw-sim".into(),
            cidr: ipnet::Ipv4Net::new(Ipv4Addr::new(10, 16, 0, 0), 12)
                .unwrap_or_else(|_| ipnet::Ipv4Net::default()),
            gateway: Ipv4Addr::new(10, 16, 0, 1),
            primary_ip: ips.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
            phase: EniPhase::Ready,
            ips: ips.iter().map(|ip| (*ip, IpSlot::Idle)).collect(),
            version: 1,
            busy: false,
            full: false,
        };
        self.st.borrow_mut().enis.insert(id.clone(), eni);
        self.waits
            .borrow_mut()
            .eni_ready(&id, ips.iter().copied(), attach_ms);
        self.commit().await;
    }

    async fn op_unassign(&self, eni_id: &str, ips: &[Ipv4Addr]) {
        self.commit().await;
        self.call("UnassignPrivateIpAddresses").await;
        if let Some(e) = self.st.borrow_mut().enis.get_mut(eni_id) {
            for ip in ips {
                e.ips.remove(ip);
            }
            self.waits.borrow_mut().forget_all(ips);
            e.busy = false;
            e.version += 1;
        }
        self.commit().await;
    }

    /// `op_delete` with `destroy_eni`'s polling.
    async fn op_delete(&self, eni_id: &str) {
        self.commit().await;
        let mut delay = Duration::from_millis(50);
        let mut detach_sent = false;
        loop {
            self.call("DescribeNetworkInterfaceAttribute").await;
            let status = self.cloud.borrow().status(eni_id, self.mono_ms());
            match status {
                None => break,
                Some(EniStatus::Available) => {
                    self.call("DeleteNetworkInterface").await;
                    self.cloud.borrow_mut().delete(eni_id);
                }
                Some(EniStatus::InUse | EniStatus::Attaching) if !detach_sent => {
                    self.call("DetachNetworkInterface").await;
                    let now = self.mono_ms();
                    self.cloud.borrow_mut().detach(eni_id, now);
                    detach_sent = true;
                }
                Some(_) => {}
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        if let Some(gone) = self.st.borrow_mut().enis.remove(eni_id) {
            self.waits.borrow_mut().forget_all(gone.ips.keys());
        }
        self.commit().await;
    }

    /// One pod: ADD (`allocate` + the plugin's own work), its lifetime, then DEL (`release`).
    async fn pod(self: Rc<Self>, i: usize, at: Duration, lifetime: Duration) -> PodRun {
        tokio::time::sleep_until(self.t0 + at).await;
        let started = Instant::now();
        let started_ms = self.mono_ms();
        let key = PodKey::new("sim", format!("pod-{i}"));
        let deadline = started + ALLOC_DEADLINE;
        let mut ticket = None;
        let enis_ready_then = self.waits.borrow().enis_ready();
        let taken = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_take(&key, &mut ticket, enis_ready_then) {
                Ok(Some(slot)) => break Ok(slot),
                Ok(None) => {}
                Err(why) => break Err(why),
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if let Some(t) = ticket {
                    let mut st = self.st.borrow_mut();
                    st.demand = st.demand.saturating_sub(1);
                    self.waits.borrow_mut().queue.leave(t);
                    self.changed.notify_waiters();
                }
                break Err(format!(
                    "pod {key}: no address within {} s",
                    ALLOC_DEADLINE.as_secs()
                ));
            }
        };
        let (eni_id, ip, waited_for) = match taken {
            Ok(t) => t,
            Err(why) => {
                return PodRun {
                    started_ms,
                    add: Err(why),
                    waited_for: None,
                }
            }
        };
        self.wake.notify_one();
        self.commit().await;
        {
            // The semaphore is never closed; if it were, the work would simply not queue.
            let _cpu = self.cpus.acquire().await;
            tokio::time::sleep(self.costs.add_overhead).await;
        }
        let add = started.elapsed();
        tokio::time::sleep(lifetime).await;
        self.release(&eni_id, ip, &key).await;
        PodRun {
            started_ms,
            add: Ok(add),
            waited_for,
        }
    }

    /// `try_take`: a free slot, or demand registered; with the slot, what the pod waited on if it waited.
    #[allow(clippy::type_complexity)]
    fn try_take(
        &self,
        key: &PodKey,
        ticket: &mut Option<u64>,
        enis_ready_then: u32,
    ) -> Result<Option<(String, Ipv4Addr, Option<WaitReason>)>, String> {
        let now = self.now_ms();
        let mut st = self.st.borrow_mut();
        let ahead = self.waits.borrow().queue.ahead(*ticket);
        if let Some((eni_id, ip)) = pick_slot_in_turn(&st, key, now, self.cfg.eni_selection, ahead)
        {
            st.set_slot(
                &eni_id,
                ip,
                IpSlot::InUse {
                    pod: key.clone(),
                    if_name: "eth0".into(),
                },
            );
            st.last_activity_ms = now;
            let mut waits = self.waits.borrow_mut();
            let waited = waits.slot_taken(ip, ticket.is_some(), enis_ready_then);
            if let Some(t) = ticket.take() {
                waits.queue.leave(t);
                st.demand = st.demand.saturating_sub(1);
            }
            return Ok(Some((eni_id, ip, waited)));
        }
        if let Some(why) = blocked_reason(&st, &self.params(false, 0), "i-sim") {
            return Err(format!("pod {key}: {why}"));
        }
        if ticket.is_none() {
            st.demand += 1;
            *ticket = Some(self.waits.borrow_mut().queue.join());
        }
        Ok(None)
    }

    /// `release`: the slot is not free until the release is durable.
    async fn release(&self, eni_id: &str, ip: Ipv4Addr, key: &PodKey) {
        let now = self.now_ms();
        {
            let mut st = self.st.borrow_mut();
            st.last_activity_ms = now;
            st.set_slot(eni_id, ip, IpSlot::Releasing);
        }
        self.commit().await;
        let slot = released_slot(&self.cfg, key, false, now);
        self.st.borrow_mut().set_slot(eni_id, ip, slot);
        self.changed.notify_waiters();
    }
}
