//! A cold pool with a 2 s ENI attach delay still gives every pod connectivity (shared and exclusive).

mod common;

use common::{check_failures, Lab};

#[test]
fn slow_attach_on_cold_pool_still_connects_every_pod() {
    let lab = Lab::up(&[
        "--node",
        "shared",
        "--node",
        "exclusive",
        "--min-pool",
        "0",
        "--max-pool",
        "0",
        "--attach-delay-ms",
        "2000",
    ]);
    let pods: Vec<(String, String)> = (0..3)
        .flat_map(|i| {
            [
                ("node0".to_string(), format!("cold-s{i}")),
                ("node1".to_string(), format!("cold-x{i}")),
            ]
        })
        .collect();
    let started = std::time::Instant::now();
    let errors = lab.pods_add_parallel(&pods, 3);
    assert!(errors.is_empty(), "ADD failures: {errors:#?}");
    // The exclusive pods needed an attach each: the delay was really paid.
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let report = lab.check(&[]);
    assert_eq!(report["ok"], true, "{}", check_failures(&report));
    assert_eq!(report["pods"], 6);
}
