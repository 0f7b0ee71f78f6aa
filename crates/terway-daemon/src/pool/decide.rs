//! Pure pool decisions, no I/O: which slot a pod gets, what the pool should ask the cloud for
//! (assign / create / unassign / delete) and why an allocation cannot make progress.

use std::net::Ipv4Addr;

use super::state::{Capacity, EniPhase, IpSlot, PodKey, PoolState};
use super::EniPoolKind;
use crate::config::{EniSelectionPolicy, PoolConfig};

/// One cloud operation the pool wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// AssignPrivateIpAddresses on an existing ENI.
    Assign {
        /// ENI.
        eni_id: String,
        /// Addresses to add (≤ max per call).
        count: u32,
    },
    /// CreateNetworkInterface + Attach, with this many secondary IPs (the primary is one more slot).
    Create {
        /// Secondary IPs at creation.
        secondary: u32,
    },
    /// UnassignPrivateIpAddresses of idle secondaries.
    Unassign {
        /// ENI.
        eni_id: String,
        /// Addresses.
        ips: Vec<Ipv4Addr>,
    },
    /// Detach + delete an ENI whose slots are all idle.
    DeleteEni {
        /// ENI.
        eni_id: String,
    },
}

/// Effective watermarks after `min_eni` and capacity are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Keep at least this many idle slots.
    pub min_idle: u32,
    /// Release idle slots above this.
    pub max_idle: u32,
}

/// Watermarks for a pool of the given capacity.
pub fn watermarks(cfg: &PoolConfig, cap: Capacity) -> Watermarks {
    let total = cap.total();
    let min = cfg
        .min_idle
        .max(cfg.min_eni.saturating_mul(cap.slots_per_eni))
        .min(total);
    let max = cfg.max_idle.min(total).max(min);
    Watermarks {
        min_idle: min,
        max_idle: max,
    }
}

/// Pool capacity from the instance type's quotas (Terway: `maxENI = EniQuantity × eni_cap_ratio +
/// eni_cap_shift − 1` without the primary ENI, capped by `max_eni`; every slot of a secondary ENI,
/// its primary IP included, is usable; one slot per ENI in exclusive mode).
pub fn capacity(
    eni_quantity: u32,
    ips_per_eni: u32,
    cfg: &PoolConfig,
    kind: EniPoolKind,
) -> Capacity {
    let knobs = terway_core::PoolKnobs {
        eni_cap_ratio: cfg.eni_cap_ratio,
        eni_cap_shift: cfg.eni_cap_shift,
        max_eni: cfg.max_eni.unwrap_or(0),
        min_eni: cfg.min_eni,
        max_pool_size: cfg.max_idle,
        min_pool_size: cfg.min_idle,
    };
    let sizing = terway_core::pool_sizing(eni_quantity, ips_per_eni, &knobs);
    let slots_per_eni = match kind {
        EniPoolKind::Exclusive => 1,
        EniPoolKind::SharedIps => ips_per_eni,
    };
    Capacity {
        max_enis: sizing.max_eni,
        slots_per_eni,
    }
}

/// The free slot `pod` should get: its own sticky address first, then a free slot on a ready ENI
/// chosen by the ENI selection policy (ties broken by ENI id, then address, for determinism).
pub fn pick_slot(
    state: &PoolState,
    pod: &PodKey,
    now_ms: u64,
    policy: EniSelectionPolicy,
) -> Option<(String, Ipv4Addr)> {
    if let Some(own) = own_sticky_slot(state, pod) {
        return Some(own);
    }
    let mut candidates: Vec<_> = state
        .enis
        .values()
        .filter(|e| e.phase == EniPhase::Ready && e.free(now_ms) > 0)
        .collect();
    match policy {
        EniSelectionPolicy::MostIps => candidates.sort_by_key(|e| std::cmp::Reverse(e.in_use())),
        EniSelectionPolicy::LeastIps => candidates.sort_by_key(|e| e.in_use()),
    }
    let eni = candidates.first()?;
    let ip = eni
        .ips
        .iter()
        .find(|(_, s)| s.is_free(now_ms))
        .map(|(ip, _)| *ip)?;
    Some((eni.id.clone(), ip))
}

/// [`pick_slot`] for a request with `waiting_ahead` requests queued before it: waiting pods are served in
/// the order they started waiting, so a request takes an ordinary free slot only while more are free than
/// requests ahead of it (its own sticky slot it takes regardless). Without the order, the pods an ENI's
/// arrival wakes race for its slots, and one that waited longest can lose to a pod that just arrived.
pub fn pick_slot_in_turn(
    state: &PoolState,
    pod: &PodKey,
    now_ms: u64,
    policy: EniSelectionPolicy,
    waiting_ahead: u32,
) -> Option<(String, Ipv4Addr)> {
    if waiting_ahead > 0 && own_sticky_slot(state, pod).is_none() {
        let free: usize = state
            .enis
            .values()
            .filter(|e| e.phase == EniPhase::Ready)
            .map(|e| e.free(now_ms))
            .sum();
        if free <= waiting_ahead as usize {
            return None;
        }
    }
    pick_slot(state, pod, now_ms, policy)
}

/// The address reserved for `pod` (a sticky slot on a ready ENI), if any.
fn own_sticky_slot(state: &PoolState, pod: &PodKey) -> Option<(String, Ipv4Addr)> {
    state
        .enis
        .values()
        .filter(|e| e.phase == EniPhase::Ready)
        .find_map(|e| {
            e.ips
                .iter()
                .find(|(_, s)| matches!(s, IpSlot::Sticky { pod: p, .. } if p == pod))
                .map(|(ip, _)| (e.id.clone(), *ip))
        })
}

/// The slot of `ip` for `pod`, which asked for that address (CNI_ARGS `IP=`: podman's `network reload`
/// re-adds a container with the address it had). A recently released address is given back although it
/// is cooling down: the cooldown keeps a *different* pod from inheriting an address unasked, and here the
/// runtime names the address itself. Err says why it cannot be had.
pub fn pick_requested(
    state: &PoolState,
    pod: &PodKey,
    ip: Ipv4Addr,
    now_ms: u64,
) -> Result<(String, Ipv4Addr), String> {
    let Some((eni, slot)) = state
        .enis
        .values()
        .find_map(|e| e.ips.get(&ip).map(|s| (e, s)))
    else {
        return Err(format!(
            "address {ip} is not on any of this node's ENIs (released to the cloud, or never this node's); \
             start the container without IP= to get a new address"
        ));
    };
    if eni.phase != EniPhase::Ready {
        return Err(format!(
            "address {ip} is on ENI {}, which is being detached and deleted",
            eni.id
        ));
    }
    match slot {
        IpSlot::InUse { pod: owner, .. } => Err(format!("address {ip} is in use by {owner}")),
        IpSlot::Releasing => Err(format!("address {ip} is being returned to the cloud")),
        IpSlot::Sticky {
            pod: owner,
            until_ms,
        } if owner != pod && *until_ms > now_ms => Err(format!(
            "address {ip} is reserved for {owner} (a sticky address) for another {} s",
            (until_ms - now_ms).div_ceil(1000)
        )),
        IpSlot::Idle | IpSlot::Cooldown { .. } | IpSlot::Sticky { .. } => Ok((eni.id.clone(), ip)),
    }
}

/// ENI creations a pool of `kind` runs at once: exclusive pods each wait for a whole ENI, so two attach
/// side by side; a shared pool's one creation brings many slots and Assign fills it further.
pub fn max_concurrent_creates(kind: EniPoolKind) -> u32 {
    match kind {
        EniPoolKind::Exclusive => 2,
        EniPoolKind::SharedIps => 1,
    }
}

/// Inputs of [`plan`] besides the state.
#[derive(Debug, Clone, Copy)]
pub struct PlanParams<'a> {
    /// Pool knobs.
    pub cfg: &'a PoolConfig,
    /// What the pool's ENIs are for.
    pub kind: EniPoolKind,
    /// Node capacity.
    pub cap: Capacity,
    /// Now (unix ms).
    pub now_ms: u64,
    /// Whether this round may release (periodic sync) or only grow (demand wake-up).
    pub allow_release: bool,
    /// Extra idle slots to release for idle reclaim (never below min).
    pub reclaim_extra: u32,
    /// At most this many ENI creations in flight.
    pub max_concurrent_creates: u32,
    /// Whether a usable vSwitch exists for new ENIs.
    pub vswitch_available: bool,
}

/// What the pool should do next. Growth starts when waiting pods plus the low watermark exceed what the
/// pool has (and for warm-up) and, for shared addresses, fills to the high watermark; release trims idle
/// slots above the high watermark, whole ENIs first when they are entirely idle.
pub fn plan(state: &PoolState, p: &PlanParams<'_>) -> Vec<Op> {
    let mut ops = Vec::new();
    let counts = state.counts(p.now_ms);
    let wm = watermarks(p.cfg, p.cap);
    let have = counts.idle + state.adding;
    let short = (state.demand + wm.min_idle).saturating_sub(have);
    // Below the low watermark a shared pool refills to the high one: pods keep arriving while the call is
    // out, and asking for one address per pod that dipped under min is one cloud call per pod. Holding up to
    // max idle is what max_pool_size allows. Exclusive slots are whole ENIs, too dear to hold ahead.
    let mut deficit = match p.kind {
        EniPoolKind::SharedIps if short > 0 => (state.demand + wm.max_idle).saturating_sub(have),
        _ => short,
    };
    if !state.warm_up_done {
        let warm = p.cfg.warm_up.min(p.cap.total());
        deficit = deficit.max(warm.saturating_sub(counts.total + state.adding));
    }
    let room = p.cap.total().saturating_sub(counts.total + state.adding);
    deficit = deficit.min(room);
    let growing = deficit > 0 && state.backoff_until_ms <= p.now_ms;

    if growing {
        if p.kind == EniPoolKind::SharedIps {
            let mut enis: Vec<_> = state
                .enis
                .values()
                .filter(|e| {
                    e.phase == EniPhase::Ready
                        && !e.busy
                        && !e.full
                        && !state.inhibits.vswitch_blocked(&e.vswitch_id, p.now_ms)
                        && (e.ips.len() as u32) < p.cap.slots_per_eni
                })
                .collect();
            match p.cfg.eni_selection {
                EniSelectionPolicy::MostIps => enis.sort_by_key(|e| std::cmp::Reverse(e.ips.len())),
                EniSelectionPolicy::LeastIps => enis.sort_by_key(|e| e.ips.len()),
            }
            for eni in enis {
                if deficit == 0 {
                    break;
                }
                let n = deficit
                    .min(p.cap.slots_per_eni - eni.ips.len() as u32)
                    .min(p.cfg.max_ips_per_call);
                ops.push(Op::Assign {
                    eni_id: eni.id.clone(),
                    count: n,
                });
                deficit -= n;
            }
        }
        let mut enis_now = state.enis.len() as u32 + state.creating;
        let mut creating = state.creating;
        let create_ok = state.inhibits.create_blocked(p.now_ms).is_none() && p.vswitch_available;
        while deficit > 0
            && create_ok
            && enis_now < p.cap.max_enis
            && creating < p.max_concurrent_creates
        {
            let secondary = match p.kind {
                EniPoolKind::Exclusive => 0,
                EniPoolKind::SharedIps => (deficit - 1)
                    .min(p.cap.slots_per_eni.saturating_sub(1))
                    .min(p.cfg.max_ips_per_call),
            };
            ops.push(Op::Create { secondary });
            deficit = deficit.saturating_sub(secondary + 1);
            enis_now += 1;
            creating += 1;
        }
    }

    if p.allow_release && state.demand == 0 && state.adding == 0 {
        let over = counts.idle.saturating_sub(wm.max_idle);
        let reclaim = p
            .reclaim_extra
            .min(counts.idle.saturating_sub(wm.min_idle).saturating_sub(over));
        let mut excess = over + reclaim;
        let mut enis: Vec<_> = state
            .enis
            .values()
            .filter(|e| e.phase == EniPhase::Ready && !e.busy)
            .collect();
        // Least-loaded ENIs first, so whole ENIs empty out and can be deleted.
        enis.sort_by_key(|e| (e.in_use(), e.ips.len(), e.id.clone()));
        let mut eni_count = state.enis.len() as u32;
        for eni in enis {
            if excess == 0 {
                break;
            }
            let free: Vec<Ipv4Addr> = eni
                .ips
                .iter()
                .filter(|(_, s)| s.is_free(p.now_ms))
                .map(|(ip, _)| *ip)
                .collect();
            if free.is_empty() {
                continue;
            }
            let all_free = free.len() == eni.ips.len();
            if all_free && free.len() as u32 <= excess && eni_count > p.cfg.min_eni {
                ops.push(Op::DeleteEni {
                    eni_id: eni.id.clone(),
                });
                excess -= free.len() as u32;
                eni_count -= 1;
                continue;
            }
            if p.kind == EniPoolKind::SharedIps {
                let ips: Vec<Ipv4Addr> = free
                    .into_iter()
                    .filter(|ip| *ip != eni.primary_ip)
                    .take(excess.min(p.cfg.max_ips_per_call) as usize)
                    .collect();
                if !ips.is_empty() {
                    excess -= ips.len() as u32;
                    ops.push(Op::Unassign {
                        eni_id: eni.id.clone(),
                        ips,
                    });
                }
            }
        }
    }
    ops
}

/// Why a waiting allocation cannot be served by anything the pool could do, if so: no free slot,
/// nothing in flight, nothing in cooldown that will free up, and no way to grow.
pub fn blocked_reason(state: &PoolState, p: &PlanParams<'_>, instance_id: &str) -> Option<String> {
    let counts = state.counts(p.now_ms);
    if counts.idle > 0 || state.adding > 0 || state.creating > 0 {
        return None;
    }
    if counts.cooldown > 0 {
        // Some address will come back when its cooldown or sticky reservation ends.
        return None;
    }
    let total = counts.total + state.adding;
    if total >= p.cap.total() {
        return Some(format!(
            "node {instance_id} is at capacity: {} of {} pod addresses in use ({} ENIs × {} slots); \
             lower the pod count or use an instance type with more ENIs/IPs (max_eni, eni_cap_ratio)",
            counts.in_use,
            p.cap.total(),
            p.cap.max_enis,
            p.cap.slots_per_eni
        ));
    }
    let can_assign = p.kind == EniPoolKind::SharedIps
        && state.enis.values().any(|e| {
            e.phase == EniPhase::Ready
                && !e.full
                && (e.ips.len() as u32) < p.cap.slots_per_eni
                && !state.inhibits.vswitch_blocked(&e.vswitch_id, p.now_ms)
        });
    if can_assign {
        return None;
    }
    let can_create = (state.enis.len() as u32) < p.cap.max_enis;
    if !can_create {
        return Some(format!(
            "node {instance_id} has all {} ENIs and they cannot take more addresses",
            p.cap.max_enis
        ));
    }
    if let Some(why) = state.inhibits.create_blocked(p.now_ms) {
        return Some(why);
    }
    if !p.vswitch_available {
        let mut why = state.inhibits.describe(p.now_ms).join("; ");
        if why.is_empty() {
            why = "no usable vSwitch".into();
        }
        return Some(format!(
            "{why}; add vSwitches to eni_conf.vswitches or free addresses in them"
        ));
    }
    None
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
