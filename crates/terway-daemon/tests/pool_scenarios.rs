//! Scenarios against the emulator: vSwitch exhaustion, throttling storms, sticky IPs, cooldown,
//! exclusive ENI and VPC-route modes, garbage collection.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use terway_cloud::{Cloud, CreateEniRequest, EniStatus};
use terway_daemon::pool::now_ms;
use terway_daemon::pool::state::IpSlot;
use terway_daemon::{Mode, VSwitchSelectionPolicy};
use terway_emulator::VSwitchConfig;
use terway_rpc::v1 as pb;

const SMALL: &str = "vsw-emusmall00000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_vswitch_is_blocked_and_another_used() {
    let env = Env::new(|c| {
        c.vswitches.push(VSwitchConfig {
            id: SMALL.into(),
            zone_id: "cn-hangzhou-i".into(),
            cidr: "10.128.32.0/29".parse().unwrap(),
            ipv6_cidr: None,
        });
    });
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 0;
    cfg.pool.vswitches = vec![SMALL.into(), VSW.into()];
    cfg.pool.vswitch_selection = VSwitchSelectionPolicy::Ordered;
    let d = env.start(cfg).await;
    let mut c = client(&env.socket()).await;
    // Six pods at once: the first create asks for 6 addresses, more than the /29 has.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut c = client(&env.socket()).await;
        tasks.push(tokio::spawn(async move {
            alloc(&mut c, &format!("p{i}"), "c").await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("allocated from the other vSwitch");
    }
    let world = env.emu.state();
    let ours: Vec<_> = world
        .enis
        .values()
        .filter(|e| e.tags.get("creator").map(String::as_str) == Some("terway"))
        .collect();
    assert!(!ours.is_empty());
    assert!(
        ours.iter().all(|e| e.vswitch_id == VSW),
        "ENI left in the exhausted vSwitch"
    );
    let status = terway_rpc::v1::terway_status_client::TerwayStatusClient::new(
        terway_rpc::connect_unix(&env.socket(), Duration::from_secs(5))
            .await
            .unwrap(),
    )
    .get_status(pb::StatusRequest {})
    .await
    .unwrap()
    .into_inner();
    assert!(
        status
            .inhibits
            .iter()
            .any(|i| i.contains(SMALL) && i.contains("IpNotEnough")),
        "{:?}",
        status.inhibits
    );
    assert!(status
        .recent_calls
        .iter()
        .any(|c| c.action == "CreateNetworkInterface" && c.result.contains("IpNotEnough")));
    assert!(d
        .metrics()
        .encode()
        .contains("terwayd_inhibit_active{kind=\"vswitch_exhausted\"} 1"));
    // A pod now still works (the good vSwitch is used).
    alloc(&mut c, "late", "c").await.unwrap();
    assert_agrees(&env, &d, INSTANCE);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_vswitch_exhausted_is_resource_exhausted() {
    let env = Env::new(|c| {
        c.vswitches.push(VSwitchConfig {
            id: SMALL.into(),
            zone_id: "cn-hangzhou-i".into(),
            cidr: "10.128.32.0/29".parse().unwrap(),
            ipv6_cidr: None,
        });
    });
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 8;
    cfg.pool.max_idle = 8;
    cfg.pool.vswitches = vec![SMALL.into()];
    let d = env.start(cfg).await;
    eventually(10, "vSwitch blocked", || {
        d.pool()
            .unwrap()
            .with_state(|s| !s.inhibits.vswitch_blocked_until_ms.is_empty())
    })
    .await;
    let mut c = client(&env.socket()).await;
    let err = alloc(&mut c, "p", "c").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains(SMALL), "{}", err.message());
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_storm_is_absorbed() {
    let env = Env::new(|c| {
        c.throttling = true;
        c.rate_limits = BTreeMap::from([
            ("AssignPrivateIpAddresses".to_string(), 30),
            ("CreateNetworkInterface".to_string(), 6),
            ("AttachNetworkInterface".to_string(), 6),
            ("DescribeNetworkInterfaceAttribute".to_string(), 120),
        ]);
        c.faults.error_rate = BTreeMap::from([("*".to_string(), 0.25)]);
    });
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 0;
    cfg.pool.max_idle = 40;
    cfg.alloc_timeout = Duration::from_secs(60);
    let d = env.start(cfg).await;
    let mut ips = std::collections::HashSet::new();
    // Batching keeps a round of 40 pods to a handful of cloud calls, so a 25 % error rate misses all of
    // them about one round in ten: another round of 40 (more ENIs, more calls) follows until the
    // storm has hit, at most 4 rounds.
    for round in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let mut c = client(&env.socket()).await;
            tasks.push(tokio::spawn(async move {
                let pod = format!("p{round}-{i}");
                // The CNI retries "try again later" (UNAVAILABLE/ABORTED); so do we.
                loop {
                    match alloc(&mut c, &pod, "c").await {
                        Ok(r) => return r,
                        Err(e)
                            if matches!(
                                e.code(),
                                tonic::Code::Unavailable | tonic::Code::Aborted
                            ) =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        Err(e) => panic!("pod {pod}: {e:?}"),
                    }
                }
            }));
        }
        for t in tasks {
            assert!(ips.insert(ip_of(&t.await.unwrap())), "duplicate IP");
        }
        if !env.emu.fired_faults().is_empty() {
            break;
        }
    }
    assert!(
        !env.emu.fired_faults().is_empty(),
        "the storm never happened in 4 rounds"
    );
    env.emu.set_faults(Default::default());
    assert_agrees(&env, &d, INSTANCE);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_ip_comes_back_to_the_restarted_statefulset_pod() {
    let env = Env::new(|_| {});
    let mut pods = vec![stateful("web-0")];
    pods.extend((0..6).map(|i| plain(&format!("other{i}"))));
    env.write_pods(&pods);
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 2;
    cfg.pool.ip_reuse_cooldown = Duration::ZERO;
    let d = env.start(cfg).await;
    let mut c = client(&env.socket()).await;
    let first = ip_of(&alloc(&mut c, "web-0", "sandbox-1").await.unwrap());
    assert!(release(&mut c, "web-0", "sandbox-1").await.unwrap());
    let slot = d
        .pool()
        .unwrap()
        .with_state(|s| s.slot_of(first).map(|(_, s)| s.clone()));
    assert!(matches!(slot, Some(IpSlot::Sticky { .. })), "{slot:?}");
    for i in 0..6 {
        let ip = ip_of(&alloc(&mut c, &format!("other{i}"), "c").await.unwrap());
        assert_ne!(
            ip, first,
            "another pod took the StatefulSet pod's reserved IP"
        );
    }
    let again = ip_of(&alloc(&mut c, "web-0", "sandbox-2").await.unwrap());
    assert_eq!(
        again, first,
        "the restarted StatefulSet pod must get its IP back"
    );

    // Once the pod is deleted for good, GC ends the reservation.
    assert!(release(&mut c, "web-0", "sandbox-2").await.unwrap());
    env.write_pods(&pods[1..]);
    let report = d.gc().await.unwrap();
    assert_eq!(report.dropped_sticky, 1, "{report:?}");
    let slot = d
        .pool()
        .unwrap()
        .with_state(|s| s.slot_of(first).map(|(_, s)| s.clone()));
    assert!(
        matches!(slot, Some(IpSlot::Idle) | Some(IpSlot::Cooldown { .. })),
        "{slot:?}"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooldown_is_respected_even_when_it_is_the_only_free_ip() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 0;
    cfg.pool.max_eni = Some(1);
    cfg.pool.ip_reuse_cooldown = Duration::from_millis(1500);
    let d = env.start(cfg).await;
    let cap = d.pool().unwrap().capacity().total();
    let mut c = client(&env.socket()).await;
    let mut first = None;
    for i in 0..cap {
        let r = alloc(&mut c, &format!("p{i}"), "c").await.unwrap();
        first.get_or_insert(ip_of(&r));
    }
    let x = first.unwrap();
    assert!(release(&mut c, "p0", "c").await.unwrap());
    let released_at = Instant::now();
    let r = alloc(&mut c, "newcomer", "c")
        .await
        .expect("waits for the cooldown, then succeeds");
    assert_eq!(ip_of(&r), x);
    assert!(
        released_at.elapsed() >= Duration::from_millis(1400),
        "cooldown not respected: {:?}",
        released_at.elapsed()
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exclusive_mode_gives_each_pod_a_whole_eni() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.mode = Mode::Exclusive;
    cfg.pool.min_idle = 0;
    cfg.pool.max_idle = 0;
    cfg.pool.max_eni = Some(2);
    cfg.pool.ip_reuse_cooldown = Duration::ZERO;
    let d = env.start(cfg).await;
    assert_eq!(d.pool().unwrap().capacity().slots_per_eni, 1);
    let mut c = client(&env.socket()).await;
    let a = alloc(&mut c, "a", "c").await.unwrap();
    let b = alloc(&mut c, "b", "c").await.unwrap();
    assert_eq!(a.mode, pb::NetworkMode::ExclusiveEni as i32);
    let world = env.emu.state();
    for r in [&a, &b] {
        let eni = r.net_confs[0].eni.as_ref().unwrap();
        let ce = &world.enis[&eni.eni_id];
        assert_eq!(ce.mac, eni.mac);
        assert_eq!(
            ce.primary_ip,
            ip_of(r),
            "exclusive pod gets the ENI's primary IP"
        );
    }
    assert_ne!(
        a.net_confs[0].eni.as_ref().unwrap().eni_id,
        b.net_confs[0].eni.as_ref().unwrap().eni_id
    );
    let err = alloc(&mut c, "third", "c").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    // Released ENIs above max idle are detached and deleted.
    let gone = a.net_confs[0].eni.as_ref().unwrap().eni_id.clone();
    assert!(release(&mut c, "a", "c").await.unwrap());
    eventually(15, "idle ENI deleted", || {
        !env.emu.state().enis.contains_key(&gone)
            && d.pool()
                .unwrap()
                .with_state(|s| !s.enis.contains_key(&gone))
    })
    .await;
    assert_agrees(&env, &d, INSTANCE);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vpc_route_mode_allocates_from_the_pod_cidr_without_cloud_calls() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.mode = Mode::VpcRoute;
    cfg.pod_cidr = Some("10.244.1.0/28".parse().unwrap());
    cfg.pool.ip_reuse_cooldown = Duration::ZERO;
    let d = env.start(cfg.clone()).await;
    let mut c = client(&env.socket()).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..13 {
        let r = alloc(&mut c, &format!("p{i}"), "c").await.unwrap();
        assert_eq!(r.mode, pb::NetworkMode::VpcRoute as i32);
        let nc = &r.net_confs[0];
        assert!(nc.eni.is_none());
        assert_eq!(nc.subnet.as_ref().unwrap().ipv4, "10.244.1.0/28");
        assert_eq!(nc.gateway.as_ref().unwrap().ipv4, "10.244.1.1");
        let ip = ip_of(&r);
        assert!(ip != "10.244.1.1".parse::<std::net::Ipv4Addr>().unwrap() && seen.insert(ip));
    }
    let err = alloc(&mut c, "p13", "c").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        d.pool().is_none(),
        "a vpc-route node has no ENI pool: nothing can call the cloud per pod"
    );
    // The pseudo-ENI of old is gone: PodCIDR addresses have their own backend and records.
    let status = d.backends().all()[0].kind();
    assert_eq!(status, terway_daemon::ResourceKind::PodCidr);
    // Allocations survive a restart.
    let held = ip_of(&alloc(&mut c, "p3", "c").await.unwrap());
    d.stop().await.unwrap();
    let d = env.start(cfg).await;
    let mut c = client(&env.socket()).await;
    assert_eq!(ip_of(&alloc(&mut c, "p3", "c").await.unwrap()), held);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_releases_gone_pods_adopts_unknown_ips_and_enis_and_deletes_leftovers() {
    let env = Env::new(|_| {});
    env.write_pods(&[plain("p1"), plain("p2"), plain("p3")]);
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 0;
    cfg.pool.max_idle = 50;
    let d = env.start(cfg).await;
    let mut c = client(&env.socket()).await;
    for p in ["p1", "p2", "p3"] {
        alloc(&mut c, p, "c").await.unwrap();
    }
    env.write_pods(&[plain("p1"), plain("p2")]);
    let (cloud, _) = env.clients(INSTANCE);
    // An address assigned behind the daemon's back on its ENI.
    let eni_id = d
        .pool()
        .unwrap()
        .with_state(|s| s.enis.keys().next().unwrap().clone());
    let extra = cloud.assign_private_ips(&eni_id, 1).await.unwrap();
    // An ENI of ours left Available (crash between create and attach) ...
    let tags = BTreeMap::from([
        ("creator".to_string(), "terway".to_string()),
        ("terway.instance-id".to_string(), INSTANCE.to_string()),
    ]);
    let req = CreateEniRequest {
        vswitch_id: VSW.into(),
        security_group_ids: env
            .emu
            .state()
            .enis
            .values()
            .find(|e| e.instance_id.as_deref() == Some(INSTANCE))
            .unwrap()
            .security_group_ids
            .clone(),
        tags: tags.clone(),
        ..Default::default()
    };
    let leftover = cloud.create_network_interface(&req).await.unwrap();
    // ... and one attached to us that the daemon never heard of.
    let stray = cloud.create_network_interface(&req).await.unwrap();
    cloud
        .attach_network_interface(&stray.id, INSTANCE, None)
        .await
        .unwrap();
    eventually(10, "stray attached", || {
        env.emu
            .state()
            .enis
            .get(&stray.id)
            .is_some_and(|e| format!("{:?}", e.status) == format!("{:?}", EniStatus::InUse))
    })
    .await;
    let report = d.gc().await.unwrap();
    assert_eq!(report.released_pods, 1, "{report:?}");
    assert_eq!(report.adopted_ips, 1, "{report:?}");
    assert_eq!(report.adopted_enis, 1, "{report:?}");
    assert_eq!(report.deleted_enis, 1, "{report:?}");
    assert!(!env.emu.state().enis.contains_key(&leftover.id));
    let slot = d
        .pool()
        .unwrap()
        .with_state(|s| s.slot_of(extra[0]).map(|(_, s)| s.clone()));
    assert_eq!(slot, Some(IpSlot::Idle));
    assert!(d
        .backends()
        .lookup(&terway_daemon::AllocKey::new(
            terway_daemon::PodKey::new("default", "p3"),
            "eth0"
        ))
        .is_none());
    assert_agrees(&env, &d, INSTANCE);
    let _ = now_ms();
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_up_once_then_idle_reclaim_shrinks_to_min() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 2;
    cfg.pool.max_idle = 30;
    cfg.pool.warm_up = 12;
    cfg.pool.ip_reuse_cooldown = Duration::ZERO;
    cfg.pool.idle_reclaim_after = Some(Duration::from_millis(300));
    cfg.pool.idle_reclaim_interval = Duration::from_millis(300);
    cfg.pool.idle_reclaim_batch = 4;
    let d = env.start(cfg.clone()).await;
    // Warm-up pre-allocates 12 slots once ...
    eventually(20, "warm-up", || {
        d.pool()
            .unwrap()
            .with_state(|s| s.counts(now_ms()).total >= 12)
    })
    .await;
    // ... then, with nobody allocating, idle reclaim releases down to min idle (2), never below.
    eventually(30, "idle reclaim to min", || {
        d.pool()
            .unwrap()
            .with_state(|s| s.counts(now_ms()).idle == 2 && s.enis.values().all(|e| !e.busy))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        d.pool().unwrap().with_state(|s| s.counts(now_ms()).idle),
        2,
        "reclaim went below min idle"
    );
    assert_agrees(&env, &d, INSTANCE);
    d.stop().await.unwrap();
    // Warm-up is remembered: a restart does not pre-allocate again.
    let d = env.start(cfg).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        d.pool().unwrap().with_state(|s| s.counts(now_ms()).total) < 12,
        "warm-up ran twice"
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_and_restart_leave_excluded_and_filtered_out_enis_alone() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 1;
    cfg.pool.max_idle = 10;
    cfg.pool.eni_tags.insert("env".into(), "prod".into());
    cfg.pool.eni_tag_policy.filter = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    let d = env.start(cfg.clone()).await;
    let mut c = client(&env.socket()).await;
    alloc(&mut c, "p1", "c").await.unwrap();
    // The daemon's own ENI carries the filter's tag.
    let own = d
        .pool()
        .unwrap()
        .with_state(|s| s.enis.keys().next().unwrap().clone());
    assert_eq!(
        env.emu.state().enis[&own]
            .tags
            .get("env")
            .map(String::as_str),
        Some("prod")
    );
    let (cloud, _) = env.clients(INSTANCE);
    let sgs = env.emu.state().enis[&own].security_group_ids.clone();
    let create = |extra: &[(&str, &str)]| {
        let mut tags = BTreeMap::from([
            ("creator".to_string(), "terway".to_string()),
            ("terway.instance-id".to_string(), INSTANCE.to_string()),
        ]);
        for (k, v) in extra {
            tags.insert(k.to_string(), v.to_string());
        }
        CreateEniRequest {
            vswitch_id: VSW.into(),
            security_group_ids: sgs.clone(),
            tags,
            ..Default::default()
        }
    };
    // Left Available: one excluded by an operator, one of another team (no env=prod), one of ours.
    let excluded = [
        ("env", "prod"),
        ("terway.alibabacloud.com/excluded", "true"),
    ];
    let kept_excluded = cloud
        .create_network_interface(&create(&excluded))
        .await
        .unwrap();
    let kept_other = cloud.create_network_interface(&create(&[])).await.unwrap();
    let leftover = cloud
        .create_network_interface(&create(&[("env", "prod")]))
        .await
        .unwrap();
    // Attached to this instance behind the daemon's back: an excluded one and one of another team.
    let mut attached = Vec::new();
    for tags in [&excluded[..], &[("env", "dev")][..]] {
        let n = cloud.create_network_interface(&create(tags)).await.unwrap();
        cloud
            .attach_network_interface(&n.id, INSTANCE, None)
            .await
            .unwrap();
        attached.push(n.id);
    }
    eventually(10, "foreign ENIs attached", || {
        let st = env.emu.state();
        attached
            .iter()
            .all(|id| format!("{:?}", st.enis[id].status) == format!("{:?}", EniStatus::InUse))
    })
    .await;
    let report = d.gc().await.unwrap();
    assert_eq!(report.adopted_enis, 0, "{report:?}");
    assert_eq!(report.deleted_enis, 1, "{report:?}");
    let st = env.emu.state();
    assert!(
        !st.enis.contains_key(&leftover.id),
        "our leftover is deleted"
    );
    assert!(
        st.enis.contains_key(&kept_excluded.id),
        "excluded ENI deleted"
    );
    assert!(
        st.enis.contains_key(&kept_other.id),
        "another team's ENI deleted"
    );
    drop(st);
    // A restart does not adopt them either, and keeps the daemon's own ENI.
    d.stop().await.unwrap();
    let d = env.start(cfg).await;
    d.pool().unwrap().with_state(|s| {
        assert!(s.enis.contains_key(&own));
        for id in &attached {
            assert!(!s.enis.contains_key(id), "{id} adopted at restart");
        }
    });
    d.stop().await.unwrap();
}
