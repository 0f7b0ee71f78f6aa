//! A churn of 200 pods on 2 nodes with cross-node traffic checks after every round; at the end the
//! emulator holds no leaked IP or ENI.

mod common;

use common::{available_enis, check_failures, eventually, instance_ips, pod_ips, Lab};

#[test]
fn churn_200_pods_on_two_nodes() {
    let lab = Lab::up(&[
        "--node",
        "shared",
        "--node",
        "shared",
        "--min-pool",
        "2",
        "--max-pool",
        "10",
    ]);
    let rounds = 5;
    let per_round = 40;
    for r in 0..rounds {
        let pods: Vec<(String, String)> = (0..per_round)
            .map(|i| (format!("node{}", i % 2), format!("churn-{r}-{i}")))
            .collect();
        let errors = lab.pods_add_parallel(&pods, 4);
        assert!(errors.is_empty(), "round {r}: ADD failures: {errors:#?}");
        let report = lab.check(&["--sample", "6", "--no-spoof"]);
        assert_eq!(
            report["ok"],
            true,
            "round {r}:\n{}",
            check_failures(&report)
        );
        let listed = lab.pods();
        let mut ips: Vec<&str> = listed.iter().filter_map(|p| p["ip"].as_str()).collect();
        let n = ips.len();
        ips.sort_unstable();
        ips.dedup();
        assert_eq!(ips.len(), n, "an IP was handed to two pods");
        let errors = lab.pods_del_parallel(&pods, 4);
        assert!(errors.is_empty(), "round {r}: DEL failures: {errors:#?}");
    }
    // Once the pools settle, each node holds at most max_pool idle IPs and no ENI is left unattached.
    let settled = eventually(90, || {
        let world = lab.world();
        let pods = lab.pods();
        ["node0", "node1"].iter().all(|node| {
            let (ips, _) = instance_ips(&world, &lab.instance(node));
            ips.difference(&pod_ips(&pods, node)).count() <= 10
        }) && available_enis(&world).is_empty()
    });
    let world = lab.world();
    assert!(
        settled,
        "leaked IPs or ENIs: {:?} / {:?} / available {:?}",
        instance_ips(&world, &lab.instance("node0")),
        instance_ips(&world, &lab.instance("node1")),
        available_enis(&world)
    );
}
