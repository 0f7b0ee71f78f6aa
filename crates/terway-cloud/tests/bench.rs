//! The benchmark runs against a live emulator and reports plausible numbers.

mod common;

use terway_cloud::bench::{run, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_throughput_and_overhead() {
    let env = common::start_with(|c| c.throttling = false, |_| {});
    let opts = BenchOptions {
        duration_ms: 300,
        concurrency: 4,
        vswitch_id: Some(common::VSW.into()),
        overhead_iterations: 50,
        ..Default::default()
    };
    let report = run(env.cfg.clone(), opts).await.unwrap();
    assert!(
        report.read.calls > 0 && report.read.errors == 0,
        "{report:?}"
    );
    assert!(report.read.requests_per_sec > 0.0);
    assert!(report.read.latency_ms_p50 <= report.read.latency_ms_p99);
    let write = report.write.clone().expect("write phase ran");
    assert!(write.calls > 0 && write.errors == 0, "{write:?}");
    assert!(report.client_overhead_us_per_call > 0.0);
    // The write phase cleans up after itself.
    assert_eq!(
        env.emu
            .state()
            .enis
            .values()
            .filter(|e| e.description == "terway bench")
            .count(),
        0
    );
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
