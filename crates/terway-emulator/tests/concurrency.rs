//! Concurrent calls: the busy window answering `Operation.Conflict`, API latency, and parallel
//! address assignment never handing one address out twice.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn busy_eni_answers_conflict_until_the_window_passes() {
    let mut cfg = fast_config();
    cfg.delays.eni_busy_ms = 300;
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = Api::new(&emu);
    let eni = create_eni(&api, &vsw, 0).await;
    let other = create_eni(&api, &vsw, 0).await;
    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("SecondaryPrivateIpAddressCount", "1"),
        ],
    )
    .await
    .ok();
    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("SecondaryPrivateIpAddressCount", "1"),
        ],
    )
    .await
    .expect_err(403, "Operation.Conflict");
    // Only that ENI is busy.
    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &other),
            ("SecondaryPrivateIpAddressCount", "1"),
        ],
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(350)).await;
    api.ecs(
        "AssignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &eni),
            ("SecondaryPrivateIpAddressCount", "1"),
        ],
    )
    .await
    .ok();
    assert_eq!(emu.state().enis[&eni].secondary_ips.len(), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn api_latency_is_added_to_every_call() {
    let mut cfg = fast_config();
    cfg.delays.api_latency_min_ms = 100;
    cfg.delays.api_latency_max_ms = 150;
    let emu = start(cfg);
    let api = Api::new(&emu);
    let t = Instant::now();
    api.vpc("DescribeVSwitches", &[]).await.ok();
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(emu.calls().last().unwrap().latency_ms >= 100);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_assignments_never_share_an_address() {
    let mut cfg = fast_config();
    cfg.throttling = false;
    let vsw = vswitch(&cfg);
    let emu = start(cfg);
    let api = Arc::new(Api::new(&emu));
    let mut enis = Vec::new();
    for _ in 0..10 {
        enis.push(create_eni(&api, &vsw, 0).await);
    }
    let mut tasks = Vec::new();
    for eni in enis.clone() {
        for _ in 0..4 {
            let api = Arc::clone(&api);
            let eni = eni.clone();
            tasks.push(tokio::spawn(async move {
                api.ecs(
                    "AssignPrivateIpAddresses",
                    &[
                        ("NetworkInterfaceId", &eni),
                        ("SecondaryPrivateIpAddressCount", "5"),
                    ],
                )
                .await
                .ok();
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = emu.state();
    let mut seen = BTreeSet::new();
    for e in st.enis.values() {
        for ip in e.all_ipv4() {
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }
    assert_eq!(seen.len(), 1 + 10 + 10 * 4 * 5);
    assert_eq!(
        st.vswitches[&vsw].used_v4, seen,
        "the address book matches the ENIs"
    );
    emu.shutdown().await;
}
