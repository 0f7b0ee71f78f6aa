//! Unit tests of the pure pool decisions.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::*;
use crate::pool::state::{Eni, PoolState};

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn eni(id: &str, slots: &[(u8, IpSlot)]) -> Eni {
    let ips: BTreeMap<Ipv4Addr, IpSlot> = slots.iter().map(|(n, s)| (ip(*n), s.clone())).collect();
    Eni {
        id: id.into(),
        mac: "00:16:3e:00:00:01".into(),
        vswitch_id: "vsw-a".into(),
        cidr: "10.0.0.0/24".parse().unwrap(),
        gateway: ip(253),
        primary_ip: slots.first().map(|(n, _)| ip(*n)).unwrap_or(ip(1)),
        phase: EniPhase::Ready,
        ips,
        version: 0,
        busy: false,
        full: false,
    }
}

fn pod(n: &str) -> PodKey {
    PodKey::new("ns", n)
}

fn used(n: &str) -> IpSlot {
    IpSlot::InUse {
        pod: pod(n),
        if_name: "eth0".into(),
    }
}

fn state(enis: Vec<Eni>) -> PoolState {
    let mut s = PoolState {
        warm_up_done: true,
        ..Default::default()
    };
    for e in enis {
        s.enis.insert(e.id.clone(), e);
    }
    s
}

const CAP: Capacity = Capacity {
    max_enis: 3,
    slots_per_eni: 10,
};

fn params(cfg: &PoolConfig) -> PlanParams<'_> {
    PlanParams {
        cfg,
        kind: EniPoolKind::SharedIps,
        cap: CAP,
        now_ms: 1_000,
        allow_release: true,
        reclaim_extra: 0,
        max_concurrent_creates: 1,
        vswitch_available: true,
    }
}

fn cfg(min: u32, max: u32) -> PoolConfig {
    PoolConfig {
        min_idle: min,
        max_idle: max,
        ..Default::default()
    }
}

#[test]
fn watermarks_apply_min_eni_and_capacity() {
    let c = PoolConfig {
        min_idle: 2,
        max_idle: 5,
        min_eni: 1,
        ..Default::default()
    };
    assert_eq!(
        watermarks(&c, CAP),
        Watermarks {
            min_idle: 10,
            max_idle: 10
        }
    );
    let c = cfg(50, 100);
    assert_eq!(
        watermarks(&c, CAP),
        Watermarks {
            min_idle: 30,
            max_idle: 30
        }
    );
    assert_eq!(
        watermarks(&cfg(1, 4), CAP),
        Watermarks {
            min_idle: 1,
            max_idle: 4
        }
    );
}

/// eni-a with two idle addresses, eni-b with web-0's sticky one.
fn two_free_and_a_sticky() -> PoolState {
    state(vec![
        eni("eni-a", &[(1, IpSlot::Idle), (2, IpSlot::Idle)]),
        eni(
            "eni-b",
            &[(
                3,
                IpSlot::Sticky {
                    pod: pod("web-0"),
                    until_ms: 99_999,
                },
            )],
        ),
    ])
}

#[test]
fn pick_prefers_the_pods_sticky_address() {
    let s = two_free_and_a_sticky();
    assert_eq!(
        pick_slot(&s, &pod("web-0"), 1_000, EniSelectionPolicy::MostIps),
        Some(("eni-b".into(), ip(3)))
    );
    // Somebody else never gets a live sticky slot.
    assert_eq!(
        pick_slot(&s, &pod("other"), 1_000, EniSelectionPolicy::MostIps).map(|x| x.1),
        Some(ip(1))
    );
}

#[test]
fn pick_skips_cooldown_until_it_expires() {
    let s = state(vec![eni(
        "eni-a",
        &[(1, IpSlot::Cooldown { until_ms: 5_000 }), (2, used("x"))],
    )]);
    assert_eq!(
        pick_slot(&s, &pod("p"), 4_999, EniSelectionPolicy::MostIps),
        None
    );
    assert_eq!(
        pick_slot(&s, &pod("p"), 5_000, EniSelectionPolicy::MostIps),
        Some(("eni-a".into(), ip(1)))
    );
    let s = state(vec![eni(
        "eni-a",
        &[(
            1,
            IpSlot::Sticky {
                pod: pod("q"),
                until_ms: 5_000,
            },
        )],
    )]);
    assert_eq!(
        pick_slot(&s, &pod("p"), 4_999, EniSelectionPolicy::MostIps),
        None
    );
    assert!(pick_slot(&s, &pod("p"), 5_001, EniSelectionPolicy::MostIps).is_some());
}

#[test]
fn pick_follows_eni_selection_policy() {
    let s = state(vec![
        eni(
            "eni-a",
            &[(1, used("a")), (2, used("b")), (3, IpSlot::Idle)],
        ),
        eni("eni-b", &[(11, IpSlot::Idle), (12, IpSlot::Idle)]),
    ]);
    assert_eq!(
        pick_slot(&s, &pod("p"), 0, EniSelectionPolicy::MostIps)
            .unwrap()
            .0,
        "eni-a"
    );
    assert_eq!(
        pick_slot(&s, &pod("p"), 0, EniSelectionPolicy::LeastIps)
            .unwrap()
            .0,
        "eni-b"
    );
}

#[test]
fn pick_ignores_deleting_enis_and_releasing_slots() {
    let mut e = eni("eni-a", &[(1, IpSlot::Idle)]);
    e.phase = EniPhase::Deleting;
    let s = state(vec![e, eni("eni-b", &[(2, IpSlot::Releasing)])]);
    assert_eq!(
        pick_slot(&s, &pod("p"), 0, EniSelectionPolicy::MostIps),
        None
    );
}

#[test]
fn cold_pool_creates_an_eni_sized_for_the_demand_and_the_high_watermark() {
    let mut s = state(vec![]);
    s.demand = 4;
    let c = cfg(2, 10);
    // 4 waiting + 10 high watermark, capped by the ENI's 10 slots.
    assert_eq!(plan(&s, &params(&c)), vec![Op::Create { secondary: 9 }]);
}

#[test]
fn create_is_capped_at_ten_secondaries_and_one_in_flight() {
    let mut s = state(vec![]);
    s.demand = 25;
    let c = cfg(0, 10);
    let mut p = params(&c);
    p.cap = Capacity {
        max_enis: 3,
        slots_per_eni: 20,
    };
    assert_eq!(plan(&s, &p), vec![Op::Create { secondary: 10 }]);
    p.max_concurrent_creates = 3;
    assert_eq!(
        plan(&s, &p),
        vec![
            Op::Create { secondary: 10 },
            Op::Create { secondary: 10 },
            Op::Create { secondary: 10 }
        ]
    );
    s.creating = 1;
    s.adding = 11;
    // 25 waiting + 10 high watermark − 11 on the way: two more, the third ENI being the node's last.
    assert_eq!(
        plan(&s, &p),
        vec![Op::Create { secondary: 10 }, Op::Create { secondary: 10 }]
    );
}

#[test]
fn existing_enis_are_filled_before_creating_and_busy_ones_skipped() {
    let mut a = eni("eni-a", &[(1, used("a")), (2, used("b"))]);
    a.busy = true;
    let b = eni("eni-b", &[(11, used("c"))]);
    let mut s = state(vec![a, b]);
    s.demand = 12;
    let c = cfg(0, 10);
    assert_eq!(
        plan(&s, &params(&c)),
        vec![
            Op::Assign {
                eni_id: "eni-b".into(),
                count: 9
            },
            Op::Create { secondary: 9 }
        ]
    );
}

#[test]
fn assign_skips_full_enis_and_blocked_vswitches() {
    let mut a = eni("eni-a", &[(1, used("a"))]);
    a.full = true;
    let mut b = eni("eni-b", &[(11, used("c"))]);
    b.vswitch_id = "vsw-b".into();
    let mut s = state(vec![a, b]);
    s.inhibits.vswitch_exhausted("vsw-b", 0, 10_000);
    s.demand = 1;
    let c = cfg(0, 10);
    assert_eq!(plan(&s, &params(&c)), vec![Op::Create { secondary: 9 }]);
}

#[test]
fn no_growth_during_backoff_or_inhibit_or_at_capacity() {
    let mut s = state(vec![]);
    s.demand = 1;
    let c = cfg(0, 10);
    s.backoff_until_ms = 2_000;
    assert!(plan(&s, &params(&c)).is_empty());
    s.backoff_until_ms = 0;
    s.inhibits.eni_limit_hit(0, 60_000);
    assert!(plan(&s, &params(&c)).is_empty());
    let why = blocked_reason(&s, &params(&c), "i-1").unwrap();
    assert!(why.contains("EniPerInstanceLimitExceeded"), "{why}");

    let full: Vec<(u8, IpSlot)> = (1..=10).map(|n| (n, used(&format!("p{n}")))).collect();
    let mut s = state(vec![eni("eni-a", &full)]);
    s.demand = 1;
    let mut p = params(&c);
    p.cap = Capacity {
        max_enis: 1,
        slots_per_eni: 10,
    };
    assert!(plan(&s, &p).is_empty());
    let why = blocked_reason(&s, &p, "i-1").unwrap();
    assert!(why.contains("at capacity") && why.contains("i-1"), "{why}");
}

#[test]
fn blocked_reason_waits_for_cooldown_and_in_flight_work() {
    let mut s = state(vec![eni(
        "eni-a",
        &[(1, IpSlot::Cooldown { until_ms: 9_000 })],
    )]);
    let c = cfg(0, 10);
    let mut p = params(&c);
    p.cap = Capacity {
        max_enis: 1,
        slots_per_eni: 1,
    };
    assert_eq!(blocked_reason(&s, &p, "i"), None);
    s.enis.clear();
    s.adding = 1;
    assert_eq!(blocked_reason(&s, &p, "i"), None);
    s.adding = 0;
    p.vswitch_available = false;
    assert!(blocked_reason(&s, &p, "i").unwrap().contains("vSwitch"));
}

#[test]
fn below_the_low_watermark_a_shared_pool_refills_to_the_high_one() {
    let s = state(vec![eni("eni-a", &[(1, used("a")), (2, IpSlot::Idle)])]);
    let c = cfg(4, 8);
    // 1 idle < 4: one call brings it to 8, not one call per address that dips under 4.
    assert_eq!(
        plan(&s, &params(&c)),
        vec![Op::Assign {
            eni_id: "eni-a".into(),
            count: 7
        }]
    );
    // At or above the low watermark nothing is asked for.
    let s = state(vec![eni(
        "eni-a",
        &[
            (1, used("a")),
            (2, IpSlot::Idle),
            (3, IpSlot::Idle),
            (4, IpSlot::Idle),
            (5, IpSlot::Idle),
        ],
    )]);
    assert!(plan(&s, &params(&c)).is_empty());
}

#[test]
fn warm_up_targets_total_slots_once() {
    let mut s = state(vec![]);
    s.warm_up_done = false;
    let c = PoolConfig {
        warm_up: 6,
        ..cfg(0, 10)
    };
    assert_eq!(plan(&s, &params(&c)), vec![Op::Create { secondary: 5 }]);
    s.warm_up_done = true;
    assert!(plan(&s, &params(&c)).is_empty());
}

#[test]
fn release_above_high_watermark_unassigns_secondaries_never_the_primary() {
    let slots: Vec<(u8, IpSlot)> = std::iter::once((1, used("a")))
        .chain((2..=9).map(|n| (n, IpSlot::Idle)))
        .collect();
    let s = state(vec![eni("eni-a", &slots)]);
    let c = cfg(1, 5);
    let ops = plan(&s, &params(&c));
    assert_eq!(
        ops,
        vec![Op::Unassign {
            eni_id: "eni-a".into(),
            ips: vec![ip(2), ip(3), ip(4)]
        }]
    );
    // Primary idle, others in use: the primary is never unassigned.
    let s = state(vec![eni(
        "eni-b",
        &[(1, IpSlot::Idle), (2, IpSlot::Idle), (3, used("x"))],
    )]);
    let ops = plan(&s, &params(&cfg(0, 0)));
    assert_eq!(
        ops,
        vec![Op::Unassign {
            eni_id: "eni-b".into(),
            ips: vec![ip(2)]
        }]
    );
}

#[test]
fn whole_idle_eni_is_deleted_but_not_below_min_eni() {
    let a = eni("eni-a", &[(1, used("a")), (2, IpSlot::Idle)]);
    let b = eni("eni-b", &[(11, IpSlot::Idle), (12, IpSlot::Idle)]);
    let s = state(vec![a, b]);
    let c = cfg(0, 1);
    assert_eq!(
        plan(&s, &params(&c)),
        vec![Op::DeleteEni {
            eni_id: "eni-b".into()
        }]
    );
    let c = PoolConfig {
        min_eni: 2,
        ..cfg(0, 1)
    };
    // min_eni raises min idle to 2 ENIs worth of slots: the pool grows instead of deleting an ENI.
    let ops = plan(&s, &params(&c));
    assert!(
        !ops.iter()
            .any(|o| matches!(o, Op::DeleteEni { .. } | Op::Unassign { .. })),
        "{ops:?}"
    );
    assert!(
        ops.iter().any(|o| matches!(o, Op::Assign { .. })),
        "{ops:?}"
    );
}

#[test]
fn release_waits_while_pods_are_waiting_or_growth_is_in_flight() {
    let s0 = state(vec![eni(
        "eni-a",
        &[(1, IpSlot::Idle), (2, IpSlot::Idle), (3, IpSlot::Idle)],
    )]);
    let c = cfg(0, 0);
    let mut p = params(&c);
    p.allow_release = false;
    assert!(plan(&s0, &p).is_empty());
    let mut s = state(vec![eni("eni-a", &[(1, IpSlot::Idle), (2, IpSlot::Idle)])]);
    s.adding = 1;
    assert!(plan(&s, &params(&c)).is_empty());
}

#[test]
fn cooldown_and_sticky_slots_are_not_released() {
    let s = state(vec![eni(
        "eni-a",
        &[
            (1, used("a")),
            (2, IpSlot::Cooldown { until_ms: 9_999 }),
            (
                3,
                IpSlot::Sticky {
                    pod: pod("s"),
                    until_ms: 9_999,
                },
            ),
        ],
    )]);
    assert!(plan(&s, &params(&cfg(0, 0))).is_empty());
}

#[test]
fn idle_reclaim_never_goes_below_min() {
    let slots: Vec<(u8, IpSlot)> = std::iter::once((1, used("a")))
        .chain((2..=6).map(|n| (n, IpSlot::Idle)))
        .collect();
    let s = state(vec![eni("eni-a", &slots)]);
    let c = cfg(3, 10);
    let mut p = params(&c);
    p.reclaim_extra = 5;
    assert_eq!(
        plan(&s, &p),
        vec![Op::Unassign {
            eni_id: "eni-a".into(),
            ips: vec![ip(2), ip(3)]
        }]
    );
}

#[test]
fn exclusive_mode_creates_one_eni_per_slot_and_deletes_idle_enis() {
    let mut s = state(vec![]);
    s.demand = 2;
    let c = cfg(0, 0);
    let mut p = params(&c);
    p.kind = EniPoolKind::Exclusive;
    p.cap = Capacity {
        max_enis: 3,
        slots_per_eni: 1,
    };
    p.max_concurrent_creates = 2;
    assert_eq!(
        plan(&s, &p),
        vec![Op::Create { secondary: 0 }, Op::Create { secondary: 0 }]
    );
    let s = state(vec![
        eni("eni-a", &[(1, IpSlot::Idle)]),
        eni("eni-b", &[(2, used("x"))]),
    ]);
    assert_eq!(
        plan(&s, &p),
        vec![Op::DeleteEni {
            eni_id: "eni-a".into()
        }]
    );
}

#[test]
fn capacity_follows_terway_formula() {
    let c = PoolConfig::default();
    assert_eq!(
        capacity(4, 10, &c, EniPoolKind::SharedIps),
        Capacity {
            max_enis: 3,
            slots_per_eni: 10
        }
    );
    assert_eq!(
        capacity(4, 10, &c, EniPoolKind::Exclusive),
        Capacity {
            max_enis: 3,
            slots_per_eni: 1
        }
    );
    let c = PoolConfig {
        max_eni: Some(2),
        ..Default::default()
    };
    assert_eq!(capacity(4, 10, &c, EniPoolKind::SharedIps).total(), 20);
    let c = PoolConfig {
        eni_cap_ratio: 0.5,
        eni_cap_shift: 2,
        ..Default::default()
    };
    assert_eq!(capacity(8, 6, &c, EniPoolKind::SharedIps).max_enis, 5);
    let c = PoolConfig {
        eni_cap_shift: -5,
        ..Default::default()
    };
    assert_eq!(capacity(2, 6, &c, EniPoolKind::SharedIps).max_enis, 0);
}

#[test]
fn a_requested_address_is_given_back_while_cooling_down_but_never_taken_from_another_pod() {
    let mut deleting = eni("eni-b", &[(20, IpSlot::Idle)]);
    deleting.phase = EniPhase::Deleting;
    let s = state(vec![
        eni(
            "eni-a",
            &[
                (1, used("primary")),
                (2, IpSlot::Idle),
                (3, IpSlot::Cooldown { until_ms: 9_000 }),
                (4, used("other")),
                (
                    5,
                    IpSlot::Sticky {
                        pod: pod("sts-0"),
                        until_ms: 9_000,
                    },
                ),
                (6, IpSlot::Releasing),
            ],
        ),
        deleting,
    ]);
    let me = pod("me");
    let got = |n: u8| pick_requested(&s, &me, ip(n), 1_000);
    assert_eq!(got(2), Ok(("eni-a".into(), ip(2))));
    assert_eq!(got(3), Ok(("eni-a".into(), ip(3))), "cooling down");
    for (n, why) in [
        (4, "in use by ns/other"),
        (5, "reserved for ns/sts-0"),
        (6, "being returned"),
        (20, "being detached"),
        (99, "not on any of this node's ENIs"),
    ] {
        let e = got(n).unwrap_err();
        assert!(e.contains(why), "{n}: {e}");
    }
    // The sticky reservation's own pod, or anyone once it ended.
    assert!(pick_requested(&s, &pod("sts-0"), ip(5), 1_000).is_ok());
    assert!(pick_requested(&s, &me, ip(5), 9_000).is_ok());
}

#[test]
fn waiting_pods_are_served_in_turn() {
    let s = two_free_and_a_sticky();
    let p = EniSelectionPolicy::MostIps;
    // Two free slots: the second in line and a newcomer behind one waiter get one, the third does not.
    assert!(pick_slot_in_turn(&s, &pod("x"), 1_000, p, 1).is_some());
    assert_eq!(pick_slot_in_turn(&s, &pod("x"), 1_000, p, 2), None);
    assert_eq!(
        pick_slot_in_turn(&s, &pod("x"), 1_000, p, 0).map(|x| x.1),
        Some(ip(1))
    );
    // A pod's own sticky address is not anybody else's turn.
    assert_eq!(
        pick_slot_in_turn(&s, &pod("web-0"), 1_000, p, 5),
        Some(("eni-b".into(), ip(3)))
    );
}
