//! The pool's in-memory model: ENIs with their address slots, pod allocations, in-flight bookkeeping.
//! Mutated only under the pool lock, and only by short, non-blocking code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::inhibit::Inhibits;

pub use crate::record::{AllocKey, Allocation, PodKey};

/// State of one address slot on an ENI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IpSlot {
    /// Free and ready for a pod.
    Idle,
    /// Held by a pod interface.
    InUse {
        /// Owner.
        pod: PodKey,
        /// The owner's interface.
        #[serde(default = "crate::record::default_if_name_owned")]
        if_name: String,
    },
    /// Released recently; not handed out before `until_ms` (unix ms).
    Cooldown {
        /// When it becomes idle.
        until_ms: u64,
    },
    /// Kept for a StatefulSet-like pod until `until_ms`; only that pod may take it.
    Sticky {
        /// The pod it is kept for.
        pod: PodKey,
        /// When the reservation ends (the IP then becomes idle).
        until_ms: u64,
    },
    /// Being unassigned from the ENI.
    Releasing,
}

impl IpSlot {
    /// The slot of an address held by `key`.
    pub fn in_use(key: &AllocKey) -> IpSlot {
        IpSlot::InUse {
            pod: key.pod.clone(),
            if_name: key.if_name.clone(),
        }
    }

    /// Usable by any pod at `now_ms`.
    pub fn is_free(&self, now_ms: u64) -> bool {
        match self {
            IpSlot::Idle => true,
            IpSlot::Cooldown { until_ms } | IpSlot::Sticky { until_ms, .. } => *until_ms <= now_ms,
            IpSlot::InUse { .. } | IpSlot::Releasing => false,
        }
    }

    /// Short name for status output.
    pub fn label(&self, now_ms: u64) -> &'static str {
        match self {
            s if s.is_free(now_ms) => "idle",
            IpSlot::InUse { .. } => "in-use",
            IpSlot::Cooldown { .. } => "cooldown",
            IpSlot::Sticky { .. } => "sticky",
            _ => "releasing",
        }
    }
}

/// Lifecycle of an ENI inside the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EniPhase {
    /// Attached, visible in metadata, serving pods.
    Ready,
    /// Being detached and deleted.
    Deleting,
}

/// An ENI the pool owns (or, in vpc-route mode, the node PodCIDR).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Eni {
    /// `eni-…` (or `pod-cidr`).
    pub id: String,
    /// MAC, lower case (empty for the PodCIDR).
    pub mac: String,
    /// vSwitch.
    pub vswitch_id: String,
    /// vSwitch CIDR (or the PodCIDR).
    pub cidr: Ipv4Net,
    /// vSwitch gateway (or the PodCIDR's node-side gateway).
    pub gateway: Ipv4Addr,
    /// The ENI's primary IP (a slot too: Terway lets pods use it).
    pub primary_ip: Ipv4Addr,
    /// Lifecycle.
    pub phase: EniPhase,
    /// Address slots.
    pub ips: BTreeMap<Ipv4Addr, IpSlot>,
    /// Bumped on every change; the store keeps the newest.
    pub version: u64,
    /// A cloud operation on this ENI is running (one at a time).
    #[serde(skip)]
    pub busy: bool,
    /// The cloud said the ENI cannot take more addresses.
    #[serde(skip)]
    pub full: bool,
}

impl Eni {
    /// Pods holding an address on this ENI.
    pub fn in_use(&self) -> usize {
        self.ips
            .values()
            .filter(|s| matches!(s, IpSlot::InUse { .. }))
            .count()
    }

    /// Free slots at `now_ms`.
    pub fn free(&self, now_ms: u64) -> usize {
        self.ips.values().filter(|s| s.is_free(now_ms)).count()
    }
}

/// Counts for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolCounts {
    /// All slots.
    pub total: u32,
    /// Free now.
    pub idle: u32,
    /// Held by pods.
    pub in_use: u32,
    /// In cooldown or kept for a sticky pod.
    pub cooldown: u32,
    /// Being released.
    pub releasing: u32,
}

/// How big the pool may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// Secondary ENIs the pool may own.
    pub max_enis: u32,
    /// Pod slots per ENI (primary IP included; 1 in exclusive mode).
    pub slots_per_eni: u32,
}

impl Capacity {
    /// Pod slots on the whole node.
    pub fn total(&self) -> u32 {
        self.max_enis.saturating_mul(self.slots_per_eni)
    }
}

/// The whole mutable pool.
#[derive(Debug, Default)]
pub struct PoolState {
    /// ENIs by id.
    pub enis: BTreeMap<String, Eni>,
    /// Allocations by pod interface.
    pub pods: HashMap<AllocKey, Allocation>,
    /// Allocations waiting for an address.
    pub demand: u32,
    /// ENI creations in flight.
    pub creating: u32,
    /// Slots expected from in-flight creations/assignments.
    pub adding: u32,
    /// ENIs under an in-flight create/delete, which GC must not touch.
    pub pending_enis: BTreeSet<String>,
    /// Active inhibits.
    pub inhibits: Inhibits,
    /// Last allocation or release (unix ms), for idle reclaim.
    pub last_activity_ms: u64,
    /// Warm-up already reached once.
    pub warm_up_done: bool,
    /// Consecutive failed cloud operations (for backoff).
    pub failures: u32,
    /// No growth before this time (unix ms) after failures.
    pub backoff_until_ms: u64,
    /// Last cloud error, quoted in timeouts.
    pub last_error: Option<String>,
    /// The daemon is shutting down: waiting allocations give up.
    pub stopping: bool,
}

impl PoolState {
    /// Slot counts at `now_ms`.
    pub fn counts(&self, now_ms: u64) -> PoolCounts {
        let mut c = PoolCounts::default();
        for eni in self.enis.values() {
            for slot in eni.ips.values() {
                c.total += 1;
                match slot {
                    s if s.is_free(now_ms) => {
                        if eni.phase == EniPhase::Ready {
                            c.idle += 1
                        } else {
                            c.releasing += 1
                        }
                    }
                    IpSlot::InUse { .. } => c.in_use += 1,
                    IpSlot::Cooldown { .. } | IpSlot::Sticky { .. } => c.cooldown += 1,
                    _ => c.releasing += 1,
                }
            }
        }
        c
    }

    /// Which ENI and slot a pod currently holds, looked up from the slots themselves.
    pub fn slot_of(&self, ip: Ipv4Addr) -> Option<(&Eni, &IpSlot)> {
        self.enis
            .values()
            .find_map(|e| e.ips.get(&ip).map(|s| (e, s)))
    }

    /// Set a slot and bump its ENI's version; returns a snapshot of the ENI for persisting.
    pub fn set_slot(&mut self, eni_id: &str, ip: Ipv4Addr, slot: IpSlot) -> Option<Eni> {
        let eni = self.enis.get_mut(eni_id)?;
        eni.ips.insert(ip, slot);
        eni.version += 1;
        Some(eni.clone())
    }

    /// Inconsistencies between allocations and slots (empty when healthy): every allocation's slot
    /// must name its pod, every in-use slot must have an allocation, no address twice.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in self.pods.values() {
            match self.enis.get(&a.eni_id).and_then(|e| e.ips.get(&a.ip)) {
                Some(IpSlot::InUse { pod, if_name }) if *pod == a.pod && *if_name == a.if_name => {}
                other => out.push(format!(
                    "{} holds {} on {} but the slot is {other:?}",
                    a.pod, a.ip, a.eni_id
                )),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for e in self.enis.values() {
            for (ip, s) in &e.ips {
                if !seen.insert(*ip) {
                    out.push(format!("{ip} appears on two ENIs"));
                }
                if let IpSlot::InUse { pod, if_name } = s {
                    let key = AllocKey::new(pod.clone(), if_name);
                    if self.pods.get(&key).is_none_or(|a| a.ip != *ip) {
                        out.push(format!(
                            "{ip} on {} is in use by {pod} without an allocation",
                            e.id
                        ));
                    }
                }
            }
        }
        out
    }

    /// Earliest moment a cooldown or sticky slot becomes free, if any.
    pub fn next_release_ms(&self) -> Option<u64> {
        self.enis
            .values()
            .flat_map(|e| e.ips.values())
            .filter_map(|s| match s {
                IpSlot::Cooldown { until_ms } | IpSlot::Sticky { until_ms, .. } => Some(*until_ms),
                _ => None,
            })
            .min()
    }
}
