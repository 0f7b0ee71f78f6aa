//! The pool's bookkeeping around cloud operations, pure: what a planned operation reserves before it
//! runs, what its end gives back (and the backoff after a failure), and which state a released address
//! goes to. The engine and the pool simulator both call these, so they count the same way.

use super::decide::{plan, Op, PlanParams};
use super::state::{EniPhase, IpSlot, PodKey, PoolState};
use crate::config::PoolConfig;

/// Mark what `ops` are about to do: slots expected from assigns and creates, ENIs busy, addresses being
/// unassigned, ENIs being deleted (none of which a pod may take meanwhile).
pub fn reserve(st: &mut PoolState, ops: &[Op]) {
    for op in ops {
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
}

/// One manager round, pure: expire inhibits, plan, retry ENIs whose delete failed earlier, reserve what the
/// operations will do and check the one-time warm-up. Returns the operations to start and whether warm-up
/// (`warm_target` slots) was reached in this round.
pub fn plan_round(st: &mut PoolState, p: &PlanParams<'_>, warm_target: u32) -> (Vec<Op>, bool) {
    st.inhibits.expire(p.now_ms);
    let mut ops = plan(st, p);
    for e in st
        .enis
        .values()
        .filter(|e| e.phase == EniPhase::Deleting && !e.busy)
    {
        ops.push(Op::DeleteEni {
            eni_id: e.id.clone(),
        });
    }
    reserve(st, &ops);
    let warmed = warm_up_reached(st, warm_target, p.now_ms);
    (ops, warmed)
}

/// Whether the one-time warm-up (`warm_target` slots, counting those on the way) is reached now for the
/// first time; it is then marked done.
pub fn warm_up_reached(st: &mut PoolState, warm_target: u32, now_ms: u64) -> bool {
    if st.warm_up_done || st.counts(now_ms).total + st.adding < warm_target {
        return false;
    }
    st.warm_up_done = true;
    true
}

/// How a cloud operation of the pool ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was planned for.
    Done,
    /// It failed with this message; `eni_limit` when the instance has no room for another ENI.
    Failed {
        /// The error, quoted later in allocation timeouts.
        message: String,
        /// The cloud answered EniPerInstanceLimitExceeded.
        eni_limit: bool,
    },
}

/// Undo [`reserve`]'s expectations for a finished `op` and apply the failure backoff: after the n-th
/// failure in a row no growth for 250 ms × 2ⁿ (at most 10 s), and no creation for `inhibit_eni_limit_ms`
/// after the ENI limit was hit.
pub fn settle(
    st: &mut PoolState,
    op: &Op,
    outcome: &Outcome,
    now_ms: u64,
    inhibit_eni_limit_ms: u64,
) {
    match op {
        Op::Assign { eni_id, count } => {
            st.adding = st.adding.saturating_sub(*count);
            if let Some(e) = st.enis.get_mut(eni_id) {
                e.busy = false;
            }
        }
        Op::Create { secondary } => {
            st.adding = st.adding.saturating_sub(secondary + 1);
            st.creating = st.creating.saturating_sub(1);
        }
        // Their operations reset `busy` themselves, together with the slots they changed.
        Op::Unassign { .. } | Op::DeleteEni { .. } => {}
    }
    match outcome {
        Outcome::Done => {
            st.failures = 0;
            st.backoff_until_ms = 0;
        }
        Outcome::Failed { message, eni_limit } => {
            st.failures = (st.failures + 1).min(6);
            st.backoff_until_ms = now_ms + (250u64 << st.failures).min(10_000);
            if *eni_limit {
                st.inhibits.eni_limit_hit(now_ms, inhibit_eni_limit_ms);
            }
            st.last_error = Some(message.clone());
        }
    }
}

/// The state of an address `pod` released at `now_ms`: kept for the pod when it is sticky (at least as long
/// as the cooldown), else cooling down before another pod may have it, else idle at once.
pub fn released_slot(cfg: &PoolConfig, pod: &PodKey, sticky: bool, now_ms: u64) -> IpSlot {
    let cooldown = cfg.ip_reuse_cooldown.as_millis() as u64;
    if sticky {
        let hold = (cfg.ip_sticky_time.as_millis() as u64).max(cooldown);
        IpSlot::Sticky {
            pod: pod.clone(),
            until_ms: now_ms + hold,
        }
    } else if cooldown > 0 {
        IpSlot::Cooldown {
            until_ms: now_ms + cooldown,
        }
    } else {
        IpSlot::Idle
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_reserved_create_is_given_back_when_it_ends_and_failures_back_off() {
        let mut st = PoolState::default();
        let op = Op::Create { secondary: 4 };
        reserve(&mut st, std::slice::from_ref(&op));
        assert_eq!((st.creating, st.adding), (1, 5));
        settle(&mut st, &op, &Outcome::Done, 1_000, 60_000);
        assert_eq!((st.creating, st.adding, st.backoff_until_ms), (0, 0, 0));
        let failed = Outcome::Failed {
            message: "EniPerInstanceLimitExceeded".into(),
            eni_limit: true,
        };
        reserve(&mut st, std::slice::from_ref(&op));
        settle(&mut st, &op, &failed, 1_000, 60_000);
        assert_eq!(st.backoff_until_ms, 1_500);
        assert!(st.inhibits.create_blocked(1_001).is_some());
        reserve(&mut st, std::slice::from_ref(&op));
        settle(&mut st, &op, &failed, 2_000, 60_000);
        assert_eq!(st.backoff_until_ms, 3_000);
        assert_eq!(
            st.last_error.as_deref(),
            Some("EniPerInstanceLimitExceeded")
        );
    }

    #[test]
    fn warm_up_is_reached_once() {
        let mut st = PoolState {
            adding: 10,
            ..PoolState::default()
        };
        assert!(!warm_up_reached(&mut st, 11, 0));
        assert!(warm_up_reached(&mut st, 10, 0));
        assert!(!warm_up_reached(&mut st, 10, 0));
    }

    #[test]
    fn released_addresses_cool_down_or_stay_with_a_sticky_pod() {
        let cfg = PoolConfig {
            ip_reuse_cooldown: Duration::from_secs(2),
            ip_sticky_time: Duration::from_secs(1),
            ..PoolConfig::default()
        };
        let pod = PodKey::new("ns", "web-0");
        assert_eq!(
            released_slot(&cfg, &pod, true, 100),
            IpSlot::Sticky {
                pod: pod.clone(),
                until_ms: 2_100
            }
        );
        assert_eq!(
            released_slot(&cfg, &pod, false, 100),
            IpSlot::Cooldown { until_ms: 2_100 }
        );
        let no_cooldown = PoolConfig {
            ip_reuse_cooldown: Duration::ZERO,
            ..cfg
        };
        assert_eq!(released_slot(&no_cooldown, &pod, false, 100), IpSlot::Idle);
    }
}
