//! 64 parallel clients allocate and release over 1,000 pods against the emulator: no address is ever
//! held by two pods (asserted on every reply and on the daemon's own state), and the pool ends within
//! its watermarks, in agreement with the cloud.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use terway_daemon::pool::now_ms;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn churn_1000_pods_64_parallel_never_double_assigns() {
    let env = Env::new(|_| {});
    let mut cfg = env.daemon_config();
    cfg.pool.min_idle = 5;
    cfg.pool.max_idle = 10;
    cfg.pool.ip_reuse_cooldown = Duration::from_millis(200);
    cfg.alloc_timeout = Duration::from_secs(60);
    let d = env.start(cfg).await;
    let holders: Arc<Mutex<HashMap<Ipv4Addr, String>>> = Arc::default();
    let stop_check = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A checker samples the daemon's own state while the churn runs.
    let checker = {
        let pool = d.pool().unwrap().clone();
        let stop = stop_check.clone();
        tokio::spawn(async move {
            let mut samples = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                pool.with_state(|st| {
                    let mut seen = HashMap::new();
                    for a in st.pods.values() {
                        if let Some(p) = seen.insert(a.ip, a.pod.clone()) {
                            panic!("daemon state: {} held by {p} and {}", a.ip, a.pod);
                        }
                        let slot = st.enis.get(&a.eni_id).and_then(|e| e.ips.get(&a.ip));
                        assert!(
                            matches!(slot, Some(terway_daemon::pool::state::IpSlot::InUse { pod, .. }) if *pod == a.pod),
                            "slot of {} does not name {}: {slot:?}",
                            a.ip,
                            a.pod
                        );
                    }
                });
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            samples
        })
    };

    let mut workers = Vec::new();
    for w in 0..64u32 {
        let socket = env.socket();
        let holders = holders.clone();
        workers.push(tokio::spawn(async move {
            let mut c = client(&socket).await;
            let mut pod_no = w;
            while pod_no < 1000 {
                let name = format!("churn-{pod_no}");
                let r = loop {
                    match alloc(&mut c, &name, "c").await {
                        Ok(r) => break r,
                        Err(e) if e.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("{name}: {e:?}"),
                    }
                };
                let ip = ip_of(&r);
                if let Some(other) = holders.lock().unwrap().insert(ip, name.clone()) {
                    panic!("{ip} handed to {name} while {other} holds it");
                }
                tokio::time::sleep(Duration::from_millis(u64::from(pod_no % 7))).await;
                holders.lock().unwrap().remove(&ip);
                assert!(release(&mut c, &name, "c").await.unwrap(), "{name} release");
                pod_no += 64;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    stop_check.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(checker.await.unwrap() > 10, "the checker barely ran");
    assert!(d.pool().unwrap().with_state(|s| s.pods.is_empty()));

    // After cooldowns end and the periodic sync trims, the pool sits within its watermarks.
    eventually(30, "pool within watermarks", || {
        d.pool().unwrap().with_state(|s| {
            let c = s.counts(now_ms());
            c.cooldown == 0
                && c.releasing == 0
                && s.adding == 0
                && (5..=10).contains(&c.idle)
                && s.enis.values().all(|e| !e.busy)
        })
    })
    .await;
    assert_agrees(&env, &d, INSTANCE);
    let calls = d.pool().unwrap().cloud_call_count();
    println!("cloud calls for 1000 pods: {calls}");
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_pool_reports_latency_and_calls_per_pod() {
    let env = Env::new(|_| {});
    let (cloud, md) = env.clients(INSTANCE);
    let opts = terway_daemon::bench::BenchOptions {
        work_dir: env.dir.path().join("bench"),
        churn_pods: 200,
        concurrency: 16,
        warm_samples: 30,
        min_idle: 5,
        max_idle: 10,
        cooldown_ms: 300,
    };
    let r = terway_daemon::bench::bench_pool(cloud, md, opts)
        .await
        .expect("bench runs");
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert_eq!(r.warm_samples, 30);
    assert!(r.warm_p50_ms > 0.0 && r.warm_p50_ms <= r.warm_p99_ms);
    assert!(
        r.cloud_calls_per_pod > 0.0 && r.cloud_calls_per_pod < 2.0,
        "{r:?}"
    );
    assert_eq!(r.calls_by_action.values().sum::<u64>(), r.cloud_calls);
}
