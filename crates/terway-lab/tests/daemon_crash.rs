//! Killing terwayd on one node in the middle of a churn and restarting it: every surviving pod stays
//! reachable and the emulator shows no leaked IP or ENI.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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

    // Churn on node1 until told to stop, while its daemon is killed and restarted. Operations that hit the
    // outage fail (the CNI cannot reach terwayd), exactly as they would on a real node.
    let stop = AtomicBool::new(false);
    let phase = AtomicUsize::new(0); // 0 = before the kill, 1 = outage, 2 = after the restart
    let (ops, outage_errors, failed) = std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut ops = [0usize; 3];
            let mut outage_errors = 0;
            let mut failed = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let pod = format!("churn-{i}");
                let p = phase.load(Ordering::Relaxed);
                let ok = match lab.pod_add("node1", &pod) {
                    Ok(_) if i % 2 == 0 => lab.pod_del("node1", &pod).is_ok(),
                    Ok(_) => true,
                    Err(_) => false,
                };
                if !ok {
                    failed.push(pod);
                }
                ops[p] += 1;
                if !ok && p == 1 {
                    outage_errors += 1;
                }
                i += 1;
            }
            (ops, outage_errors, failed)
        });
        std::thread::sleep(Duration::from_secs(2));
        phase.store(1, Ordering::Relaxed);
        lab.daemon("kill", "node1");
        std::thread::sleep(Duration::from_secs(2));
        lab.daemon("start", "node1");
        phase.store(2, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        churn.join().expect("churn thread")
    });
    assert!(
        ops[0] > 0 && ops[2] > 0,
        "churn did not run around the crash: {ops:?}"
    );
    assert!(outage_errors > 0, "no operation hit the outage: {ops:?}");

    // Pods whose ADD or DEL failed during the outage are torn down again once the daemon is back, as the
    // kubelet retries a sandbox teardown until it succeeds.
    for pod in failed {
        let still_there = lab
            .pods()
            .iter()
            .any(|p| p["node"] == "node1" && p["pod"] == pod.as_str());
        if still_there {
            lab.pod_del("node1", &pod)
                .unwrap_or_else(|e| panic!("retried DEL of {pod} failed: {e}"));
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
