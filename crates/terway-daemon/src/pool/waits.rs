//! Why an allocation had to wait: each free slot remembers the cloud operation that made it, so a pod
//! that waited can be told what it waited on (a new ENI's attach, an AssignPrivateIpAddresses, a reuse
//! cooldown). Pure bookkeeping, shared by the daemon and `terway-lab simulate`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;

/// Slow allocations kept for the status service.
pub const SLOW_ALLOCATIONS_KEPT: usize = 256;

/// Slot origins kept at most; beyond it the oldest are forgotten (a slot that stayed free that long was
/// not waited for).
const ORIGINS_KEPT: usize = 4096;

/// The cloud operation that produced a free slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotOrigin {
    /// It came with a new ENI (its primary or a secondary address), ready after `attach_ms`.
    NewEni {
        /// The ENI.
        eni: String,
        /// From the attach request to the ENI being InUse.
        attach_ms: u64,
    },
    /// AssignPrivateIpAddresses on an attached ENI.
    Assigned {
        /// The ENI.
        eni: String,
    },
}

/// What a slow allocation waited on, by kind (the group `bench churn` counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaitKind {
    /// A new ENI to be created and attached.
    NewEni,
    /// Addresses to be assigned on an attached ENI.
    AssignIps,
    /// A released address to leave its reuse cooldown (no cloud call was needed).
    Cooldown,
}

impl WaitKind {
    /// Metric label and the status service's `kind`.
    pub fn label(self) -> &'static str {
        match self {
            WaitKind::NewEni => "new-eni",
            WaitKind::AssignIps => "assign-ips",
            WaitKind::Cooldown => "cooldown",
        }
    }

    /// What pods of this kind waited on, in words (`bench churn` groups slow pods by it).
    pub fn describe(self) -> &'static str {
        match self {
            WaitKind::NewEni => "a new ENI to attach",
            WaitKind::AssignIps => "AssignPrivateIpAddresses",
            WaitKind::Cooldown => "an address to leave its reuse cooldown",
        }
    }

    /// The kind named by [`WaitKind::label`].
    pub fn from_label(s: &str) -> Option<Self> {
        [WaitKind::NewEni, WaitKind::AssignIps, WaitKind::Cooldown]
            .into_iter()
            .find(|k| k.label() == s)
    }
}

/// Why one allocation waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitReason {
    /// The kind of wait.
    pub kind: WaitKind,
    /// The ENI whose operation served it, when a cloud operation did.
    pub eni: Option<String>,
    /// The ENI's attach time, when it waited for a new ENI.
    pub attach_ms: Option<u64>,
    /// ENIs that became ready while it waited: more than one means it missed earlier ones (other pods
    /// took their slots first).
    pub enis_ready_meanwhile: u32,
}

impl WaitReason {
    /// The reason for a pod that waited and got a slot of `origin` (none: the slot was released by
    /// another pod and left its cooldown).
    pub fn of(origin: Option<&SlotOrigin>, enis_ready_meanwhile: u32) -> Self {
        let (kind, eni, attach_ms) = match origin {
            Some(SlotOrigin::NewEni { eni, attach_ms }) => {
                (WaitKind::NewEni, Some(eni.clone()), Some(*attach_ms))
            }
            Some(SlotOrigin::Assigned { eni }) => (WaitKind::AssignIps, Some(eni.clone()), None),
            None => (WaitKind::Cooldown, None, None),
        };
        WaitReason {
            kind,
            eni,
            attach_ms,
            enis_ready_meanwhile,
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let eni = self.eni.as_deref().unwrap_or("?");
        match (self.kind, self.attach_ms) {
            (WaitKind::NewEni, Some(ms)) => write!(f, "a new ENI ({eni}, attach {ms} ms)")?,
            (WaitKind::NewEni, None) => write!(f, "a new ENI ({eni})")?,
            (WaitKind::AssignIps, _) => write!(f, "AssignPrivateIpAddresses on {eni}")?,
            (WaitKind::Cooldown, _) => write!(f, "an address to leave its reuse cooldown")?,
        }
        if self.enis_ready_meanwhile > 1 {
            write!(
                f,
                "; {} ENIs became ready while it waited",
                self.enis_ready_meanwhile
            )?;
        }
        Ok(())
    }
}

/// One allocation that waited for its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowAllocation {
    /// `namespace/name`.
    pub pod: String,
    /// From the request to its address being durably recorded.
    pub waited_ms: u64,
    /// What it waited on.
    pub reason: WaitReason,
    /// When it was served (unix ms).
    pub at_ms: u64,
}

/// The requests waiting for a slot, in the order they started waiting (tickets ascending).
#[derive(Debug, Default)]
pub struct WaitQueue {
    waiting: std::collections::BTreeSet<u64>,
    next: u64,
}

impl WaitQueue {
    /// Queue a request; its ticket.
    pub fn join(&mut self) -> u64 {
        self.next += 1;
        self.waiting.insert(self.next);
        self.next
    }

    /// The request left (served, gave up).
    pub fn leave(&mut self, ticket: u64) {
        self.waiting.remove(&ticket);
    }

    /// Requests queued before `ticket`; for a request not queued (`None`), every queued one.
    pub fn ahead(&self, ticket: Option<u64>) -> u32 {
        match ticket {
            Some(t) => self.waiting.range(..t).count() as u32,
            None => self.waiting.len() as u32,
        }
    }
}

/// Slot origins, a count of ENIs that became ready, and the recent slow allocations.
#[derive(Debug, Default)]
pub struct WaitLog {
    /// Each origin with the sequence number of its insertion.
    origins: HashMap<Ipv4Addr, (u64, SlotOrigin)>,
    /// Insertions in order, to bound `origins`; entries whose sequence no longer matches are stale.
    order: VecDeque<(u64, Ipv4Addr)>,
    seq: u64,
    enis_ready: u32,
    slow: VecDeque<SlowAllocation>,
    /// Requests waiting for a slot, in order.
    pub queue: WaitQueue,
}

impl WaitLog {
    /// A free slot `ip` was made by `origin`.
    pub fn slot_added(&mut self, ip: Ipv4Addr, origin: SlotOrigin) {
        self.seq += 1;
        self.origins.insert(ip, (self.seq, origin));
        self.order.push_back((self.seq, ip));
        while self.order.len() > ORIGINS_KEPT {
            if let Some((seq, old)) = self.order.pop_front() {
                if self.origins.get(&old).is_some_and(|(s, _)| *s == seq) {
                    self.origins.remove(&old);
                }
            }
        }
    }

    /// AssignPrivateIpAddresses on `eni` made `ips` free slots.
    pub fn ips_assigned(&mut self, eni: &str, ips: &[Ipv4Addr]) {
        for ip in ips {
            self.slot_added(
                *ip,
                SlotOrigin::Assigned {
                    eni: eni.to_string(),
                },
            );
        }
    }

    /// Every address of a new ENI became a free slot; counts the ENI as ready.
    pub fn eni_ready(
        &mut self,
        eni: &str,
        ips: impl IntoIterator<Item = Ipv4Addr>,
        attach_ms: u64,
    ) {
        for ip in ips {
            self.slot_added(
                ip,
                SlotOrigin::NewEni {
                    eni: eni.to_string(),
                    attach_ms,
                },
            );
        }
        self.enis_ready = self.enis_ready.wrapping_add(1);
    }

    /// The slot left the pool (unassigned, its ENI deleted) or was taken: its origin no longer explains a
    /// wait. Returns the origin it had.
    pub fn forget(&mut self, ip: Ipv4Addr) -> Option<SlotOrigin> {
        self.origins.remove(&ip).map(|(_, o)| o)
    }

    /// [`WaitLog::forget`] each of `ips` (unassigned, or their ENI deleted).
    pub fn forget_all<'a>(&mut self, ips: impl IntoIterator<Item = &'a Ipv4Addr>) {
        for ip in ips {
            self.forget(*ip);
        }
    }

    /// ENIs that became ready so far (compare two readings to count those in between).
    pub fn enis_ready(&self) -> u32 {
        self.enis_ready
    }

    /// A pod took slot `ip`; `waited` says whether it had to wait, and `enis_ready_then` is
    /// [`WaitLog::enis_ready`] from when it started. Returns the reason when it waited.
    pub fn slot_taken(
        &mut self,
        ip: Ipv4Addr,
        waited: bool,
        enis_ready_then: u32,
    ) -> Option<WaitReason> {
        let origin = self.forget(ip);
        waited.then(|| {
            WaitReason::of(
                origin.as_ref(),
                self.enis_ready.wrapping_sub(enis_ready_then),
            )
        })
    }

    /// Keep a slow allocation (the oldest go first).
    pub fn record(&mut self, slow: SlowAllocation) {
        if self.slow.len() >= SLOW_ALLOCATIONS_KEPT {
            self.slow.pop_front();
        }
        self.slow.push_back(slow);
    }

    /// The recent slow allocations, oldest first.
    pub fn slow(&self) -> impl Iterator<Item = &SlowAllocation> {
        self.slow.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn a_waiting_pod_is_told_which_operation_served_it() {
        let mut w = WaitLog::default();
        let then = w.enis_ready();
        w.eni_ready("eni-1", [ip(1), ip(2)], 1800);
        w.slot_added(
            ip(3),
            SlotOrigin::Assigned {
                eni: "eni-1".into(),
            },
        );
        let r = w.slot_taken(ip(1), true, then).unwrap();
        assert_eq!(r.kind, WaitKind::NewEni);
        assert_eq!(r.to_string(), "a new ENI (eni-1, attach 1800 ms)");
        let r = w.slot_taken(ip(3), true, then).unwrap();
        assert_eq!(r.to_string(), "AssignPrivateIpAddresses on eni-1");
        // Taken once: a later pod on the same address waited for its cooldown, not for the ENI.
        let r = w.slot_taken(ip(1), true, then).unwrap();
        assert_eq!(r.kind, WaitKind::Cooldown);
        assert_eq!(w.slot_taken(ip(2), false, then), None);
    }

    #[test]
    fn a_pod_that_missed_earlier_enis_says_so() {
        let mut w = WaitLog::default();
        let then = w.enis_ready();
        w.eni_ready("eni-1", [ip(1)], 2000);
        w.eni_ready("eni-2", [ip(2)], 2100);
        let r = w.slot_taken(ip(2), true, then).unwrap();
        assert_eq!(r.enis_ready_meanwhile, 2);
        assert!(r
            .to_string()
            .ends_with("; 2 ENIs became ready while it waited"));
    }

    #[test]
    fn bounded_origins_and_slow_allocations() {
        let mut w = WaitLog::default();
        for i in 0..(ORIGINS_KEPT as u32 + 10) {
            w.slot_added(
                Ipv4Addr::from(0x0a00_0000 + i),
                SlotOrigin::Assigned { eni: "e".into() },
            );
        }
        assert_eq!(w.origins.len(), ORIGINS_KEPT);
        assert!(w.forget(Ipv4Addr::from(0x0a00_0000)).is_none());
        for i in 0..(SLOW_ALLOCATIONS_KEPT + 3) {
            w.record(SlowAllocation {
                pod: format!("ns/p{i}"),
                waited_ms: 1,
                reason: WaitReason::of(None, 0),
                at_ms: 0,
            });
        }
        assert_eq!(w.slow().count(), SLOW_ALLOCATIONS_KEPT);
        assert_eq!(w.slow().next().map(|s| s.pod.as_str()), Some("ns/p3"));
    }

    #[test]
    fn the_queue_counts_who_is_ahead() {
        let mut q = WaitQueue::default();
        let a = q.join();
        let b = q.join();
        let c = q.join();
        assert_eq!(
            (q.ahead(Some(a)), q.ahead(Some(c)), q.ahead(None)),
            (0, 2, 3)
        );
        q.leave(a);
        assert_eq!((q.ahead(Some(b)), q.ahead(Some(c))), (0, 1));
        q.leave(b);
        q.leave(c);
        assert_eq!(q.ahead(None), 0);
    }

    #[test]
    fn kind_labels_round_trip() {
        for k in [WaitKind::NewEni, WaitKind::AssignIps, WaitKind::Cooldown] {
            assert_eq!(WaitKind::from_label(k.label()), Some(k));
        }
        assert_eq!(WaitKind::from_label("other"), None);
    }
}
