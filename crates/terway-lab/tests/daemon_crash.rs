//! Killing terwayd on one node in the middle of a churn and restarting it: every surviving pod stays
//! reachable and the emulator shows no leaked IP or ENI.

mod common;

use std::collections::BTreeSet;

use common::{available_enis, check_failures, eventually, instance_ips, pod_ips, Lab};

#[test]
fn daemon_crash_mid_churn_leaks_nothing() {
    let lab = Lab::up(&[
        "--node",
        "shared",
        "--node",
        "shared",
        "--min-pool",
        "2",
        "--max-pool",
        "8",
    ]);
    let base: Vec<(String, String)> = (0..16)
        .map(|i| (format!("node{}", i % 2), format!("base-{i}")))
        .collect();
    assert!(lab.pods_add_parallel(&base, 4).is_empty());

    // Churn on node1 while its daemon is killed and restarted; failures during the outage are expected.
    std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut outage_errors = 0;
            for i in 0..24 {
                let pod = format!("churn-{i}");
                match lab.pod_add("node1", &pod) {
                    Ok(_) if i % 2 == 0 => {
                        if lab.pod_del("node1", &pod).is_err() {
                            outage_errors += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => outage_errors += 1,
                }
            }
            outage_errors
        });
        std::thread::sleep(std::time::Duration::from_secs(2));
        lab.daemon("kill", "node1");
        std::thread::sleep(std::time::Duration::from_secs(2));
        lab.daemon("start", "node1");
        let _ = churn.join();
    });
    // Pods whose DEL failed during the outage are retried, as the kubelet would.
    for p in lab.pods() {
        if p["ip"].is_null() {
            let _ = lab.pod_del(p["node"].as_str().unwrap(), p["pod"].as_str().unwrap());
        }
    }

    let report = lab.check(&["--no-spoof"]);
    assert_eq!(report["ok"], true, "{}", check_failures(&report));
    let pods = lab.pods();
    let ips: Vec<&str> = pods.iter().filter_map(|p| p["ip"].as_str()).collect();
    assert_eq!(
        ips.iter().collect::<BTreeSet<_>>().len(),
        ips.len(),
        "an IP was handed to two pods"
    );

    let settled = eventually(90, || {
        let world = lab.world();
        let pods = lab.pods();
        ["node0", "node1"].iter().all(|node| {
            let (held, _) = instance_ips(&world, &lab.instance(node));
            let live = pod_ips(&pods, node);
            live.is_subset(&held) && held.difference(&live).count() <= 8
        }) && available_enis(&world).is_empty()
    });
    let world = lab.world();
    assert!(
        settled,
        "IP/ENI leak after the crash: node1 {:?}, live {:?}, available {:?}",
        instance_ips(&world, &lab.instance("node1")),
        pod_ips(&lab.pods(), "node1"),
        available_enis(&world)
    );
}
