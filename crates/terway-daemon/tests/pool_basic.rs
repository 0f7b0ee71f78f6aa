//! The daemon against the emulator over HTTP with a real redb file: warm pool, cold start,
//! idempotence, concurrency guard, capacity exhaustion, restart recovery.

mod common;

use std::time::{Duration, Instant};

use common::*;
use terway_rpc::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_start_creates_an_eni_and_replies_with_datapath_facts() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 0;
    cfg.service_cidrs = vec!["172.21.0.0/20".parse().unwrap()];
    let metrics_sock = env.dir.path().join("metrics.sock");
    cfg.metrics_addr = Some(terway_daemon::MetricsAddr::Unix(metrics_sock.clone()));
    let d = env.start(cfg).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.socket()), 0o600, "socket must be root-only");
    assert_eq!(mode(env.socket().parent().unwrap()), 0o700);
    assert_eq!(
        d.pool().unwrap().with_state(|s| s.enis.len()),
        0,
        "pool starts empty"
    );
    let mut c = client(&env.socket()).await;
    let r = alloc(&mut c, "p1", "c1").await.expect("alloc");
    assert_eq!(r.mode, pb::NetworkMode::SharedEni as i32);
    let nc = &r.net_confs[0];
    let eni = nc.eni.as_ref().unwrap();
    let cloud = env.cloud_enis();
    let (status, inst, ips) = cloud.get(&eni.eni_id).expect("ENI exists in the cloud");
    assert_eq!(status, "InUse");
    assert_eq!(inst.as_deref(), Some(INSTANCE));
    assert!(ips.contains(&ip_of(&r)));
    let world = env.emu.state();
    let ce = &world.enis[&eni.eni_id];
    assert_eq!(eni.mac, ce.mac);
    assert_eq!(ce.tags.get("creator").map(String::as_str), Some("terway"));
    let vsw = &world.vswitches[VSW];
    assert_eq!(nc.subnet.as_ref().unwrap().ipv4, vsw.cidr.to_string());
    assert_eq!(
        nc.gateway.as_ref().unwrap().ipv4,
        terway_core::vswitch_gateway(vsw.cidr.into())
            .unwrap()
            .to_string()
    );
    assert_eq!(nc.service_cidrs, vec!["172.21.0.0/20".to_string()]);
    assert!(!r.node_ip.is_empty());
    assert_agrees(&env, &d, INSTANCE);
    // Prometheus over the second unix socket.
    let text = http_get_unix(&metrics_sock, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("terwayd_allocations_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "terwayd_cloud_calls_total{action=\"CreateNetworkInterface\",result=\"ok\"} 1"
        ),
        "{text}"
    );
    // Start-up recovery and the start-up passes of the reconcilers are counted by name.
    for r in ["shared-ip-recovery", "pod-gc", "shared-ip-enis"] {
        assert!(
            text.contains(&format!(
                "terwayd_reconciles_total{{reconciler=\"{r}\",result=\"ok\"}}"
            )),
            "{r}: {text}"
        );
    }
    d.stop().await.unwrap();
    assert!(!env.socket().exists(), "socket removed on clean stop");
}

async fn http_get_unix(path: &std::path::Path, url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    s.write_all(
        format!("GET {url} HTTP/1.1\r\nHost: terwayd\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_pool_serves_without_cloud_calls() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 4;
    cfg.pool.max_idle = 8;
    let d = env.start(cfg).await;
    eventually(20, "pool warm", || {
        d.pool()
            .unwrap()
            .with_state(|s| s.counts(terway_daemon::pool::now_ms()).idle >= 4)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut c = client(&env.socket()).await;
    let t = Instant::now();
    let r = alloc(&mut c, "fast", "c1").await.expect("alloc");
    let took = t.elapsed();
    // "fast" = served from an idle slot without waiting on any cloud call (the refill that follows
    // runs in the background); the latency metric below records the path.
    assert!(took < Duration::from_millis(500), "fast path took {took:?}");
    // The manager refills towards min idle in the background.
    eventually(20, "refill to min", || {
        d.pool()
            .unwrap()
            .with_state(|s| s.counts(terway_daemon::pool::now_ms()).idle >= 4)
    })
    .await;
    let text = d.pool().unwrap().metrics().encode();
    assert!(
        text.contains("terwayd_alloc_latency_seconds_count{path=\"fast\"} 1"),
        "{text}"
    );
    assert!(env
        .cloud_enis()
        .values()
        .any(|(_, _, ips)| ips.contains(&ip_of(&r))));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_alloc_stale_release_and_sandbox_change() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 3;
    cfg.pool.ip_reuse_cooldown = Duration::from_secs(30);
    let d = env.start(cfg).await;
    let mut c = client(&env.socket()).await;
    let a = alloc(&mut c, "p", "c1").await.unwrap();
    let again = alloc(&mut c, "p", "c1").await.unwrap();
    assert_eq!(a, again, "same (pod, container) must get the same answer");
    // A stale container id is ignored by release; GetIPInfo names the sandbox that holds the pod, so
    // a DEL for an older sandbox knows not to touch the current one's kernel state.
    assert!(!release(&mut c, "p", "old").await.unwrap());
    let info = c
        .get_ip_info(pb::GetIpInfoRequest {
            pod: pod("p", "old"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.container_id, "c1");
    let info = c
        .get_ip_info(pb::GetIpInfoRequest {
            pod: pod("p", "c1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.container_id, "c1");
    assert_eq!(info.net_confs[0].pod_ip, a.net_confs[0].pod_ip);
    // New sandbox for the same pod: the old address is released (into cooldown) first.
    let b = alloc(&mut c, "p", "c2").await.unwrap();
    assert_ne!(ip_of(&a), ip_of(&b), "the old IP is in cooldown");
    let slot = d
        .pool()
        .unwrap()
        .with_state(|s| s.slot_of(ip_of(&a)).map(|(_, s)| s.clone()));
    assert!(
        matches!(
            slot,
            Some(terway_daemon::pool::state::IpSlot::Cooldown { .. })
        ),
        "{slot:?}"
    );
    assert!(release(&mut c, "p", "c2").await.unwrap());
    assert!(
        !release(&mut c, "p", "c2").await.unwrap(),
        "second DEL is a no-op"
    );
    let bad = c
        .alloc_ip(pb::AllocIpRequest {
            pod: pod("", "c"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_pod_get_aborted() {
    let env = Env::new(|c| {
        c.delays.attach_min_ms = 600;
        c.delays.attach_max_ms = 700;
    });
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 0;
    let d = env.start(cfg).await;
    let mut c1 = client(&env.socket()).await;
    let mut c2 = client(&env.socket()).await;
    let first = tokio::spawn(async move { alloc(&mut c1, "p", "c1").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = alloc(&mut c2, "p", "c1").await.unwrap_err();
    assert_eq!(second.code(), tonic::Code::Aborted, "{second:?}");
    assert!(first.await.unwrap().is_ok());
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_capacity_exhaustion_is_a_clear_error() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 0;
    cfg.pool.max_eni = Some(1);
    cfg.pool.ip_reuse_cooldown = Duration::ZERO;
    let d = env.start(cfg).await;
    let cap = d.pool().unwrap().capacity().total();
    let mut c = client(&env.socket()).await;
    for i in 0..cap {
        alloc(&mut c, &format!("p{i}"), "c")
            .await
            .unwrap_or_else(|e| panic!("pod {i} of {cap}: {e:?}"));
    }
    let t = Instant::now();
    let err = alloc(&mut c, "one-too-many", "c").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("at capacity") && err.message().contains(INSTANCE),
        "{}",
        err.message()
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "exhaustion must fail fast, took {:?}",
        t.elapsed()
    );
    // Releasing one makes room again.
    assert!(release(&mut c, "p0", "c").await.unwrap());
    alloc(&mut c, "one-too-many", "c")
        .await
        .expect("room after release");
    assert_agrees(&env, &d, INSTANCE);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_recovers_allocations_and_cooldowns() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 2;
    cfg.pool.ip_reuse_cooldown = Duration::from_secs(60);
    let d = env.start(cfg.clone()).await;
    let mut c = client(&env.socket()).await;
    let a = alloc(&mut c, "keep", "c1").await.unwrap();
    let b = alloc(&mut c, "gone", "c1").await.unwrap();
    assert!(release(&mut c, "gone", "c1").await.unwrap());
    d.stop().await.unwrap();

    let d = env.start(cfg).await;
    let mut c = client(&env.socket()).await;
    let info = c
        .get_ip_info(pb::GetIpInfoRequest {
            pod: pod("keep", "c1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.net_confs[0].pod_ip, a.net_confs[0].pod_ip);
    let slot = d
        .pool()
        .unwrap()
        .with_state(|s| s.slot_of(ip_of(&b)).map(|(_, s)| s.clone()));
    assert!(
        matches!(
            slot,
            Some(terway_daemon::pool::state::IpSlot::Cooldown { .. })
        ),
        "cooldown not persisted: {slot:?}"
    );
    assert_eq!(alloc(&mut c, "keep", "c1").await.unwrap(), a);
    assert_agrees(&env, &d, INSTANCE);
    d.stop().await.unwrap();
}
