//! The real daemon against a misbehaving cloud: 15 % of API calls fail (some after taking effect), Describe
//! and metadata answer late and some attaches fail. Pods still come up (a failed ADD is retried, as the
//! kubelet does), every pod is reachable, and once the faults stop nothing is leaked.

mod common;

use common::{available_enis, check_failures, eventually, instance_ips, pod_ips, run, Lab};

#[test]
fn pods_connect_and_nothing_leaks_under_cloud_faults() {
    let lab = Lab::up(&[
        "--node",
        "shared",
        "--node",
        "exclusive",
        "--min-pool",
        "0",
        "--max-pool",
        "4",
    ]);
    let (ok, _, err) = run(&[
        "faults",
        "--lab",
        &lab.name,
        "set",
        "--error-rate",
        "0.15",
        "--error-after-commit-rate",
        "0.05",
        "--describe-lag-ms",
        "300",
        "--metadata-lag-ms",
        "300",
        "--attach-failure-rate",
        "0.1",
    ]);
    assert!(ok, "faults set: {err}");
    let pods: Vec<(String, String)> = (0..6)
        .map(|i| (format!("node{}", i % 2), format!("f-{i}")))
        .collect();
    let mut failed = Vec::new();
    for (node, pod) in &pods {
        // The kubelet retries a failed sandbox; so do we, a few times.
        let started = std::time::Instant::now();
        let ok = (0..5).any(|attempt| match lab.pod_add(node, pod) {
            Ok(_) => true,
            Err(e) => {
                eprintln!(
                    "{node}/{pod} attempt {attempt} failed after {:?}: {e}",
                    started.elapsed()
                );
                false
            }
        });
        eprintln!("{node}/{pod}: {:?}", started.elapsed());
        if !ok {
            failed.push(pod.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "pods that never came up under faults: {failed:?}"
    );
    let (ok, out, _) = run(&["faults", "--lab", &lab.name, "show"]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        shown["fired"].as_u64().unwrap_or(0) > 0,
        "no fault fired: {out}"
    );

    let (ok, _, err) = run(&["faults", "--lab", &lab.name, "clear"]);
    assert!(ok, "{err}");
    let report = lab.check(&["--no-spoof"]);
    assert_eq!(report["ok"], true, "{}", check_failures(&report));

    // Delete half of the pods; then every address in the cloud is a live pod's or idle in a pool within its
    // bound, and no ENI is left unattached.
    let gone: Vec<(String, String)> = pods.iter().step_by(2).cloned().collect();
    assert!(lab.pods_del_parallel(&gone, 2).is_empty());
    let settled = eventually(90, || {
        let world = lab.world();
        let pods = lab.pods();
        let shared_ok = {
            let (held, _) = instance_ips(&world, &lab.instance("node0"));
            let live = pod_ips(&pods, "node0");
            live.is_subset(&held) && held.difference(&live).count() <= 4
        };
        shared_ok && available_enis(&world).is_empty()
    });
    let world = lab.world();
    assert!(
        settled,
        "leak after faults: node0 {:?} live {:?} available {:?}",
        instance_ips(&world, &lab.instance("node0")),
        pod_ips(&lab.pods(), "node0"),
        available_enis(&world)
    );
}
