//! `terway-lab simulate` must predict a live `bench churn` of the same trace: cloud calls per pod and the
//! ADD→ready p99 within ±15 %. The trace is short, the attach time fixed (so the two runs draw the same
//! attach times), both runs settle long enough for the pool's trim to finish, and the simulator is given
//! the one cost it does not model, the plugin's own work per ADD, as the live run's median.

mod common;

use serde_json::Value;

/// The agreement the simulator promises.
const TOLERANCE: f64 = 0.15;

fn terway_lab_json(args: &[&str]) -> Value {
    let (ok, out, err) = common::run(args);
    assert!(ok, "terway-lab {args:?} failed:\n{err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("terway-lab {args:?}: not JSON ({e}):\n{out}\n{err}"))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for k in path {
        cur = &cur[*k];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v:#}"))
}

/// Seconds both runs go on after the last pod: more than two pool sync rounds (5 s in the lab), so the
/// trim back to the watermarks has finished in both, whatever the phase of the daemon's rounds.
const SETTLE_S: &str = "12";

/// Cloud calls per pod over the whole run, the drain included.
fn calls_per_pod(churn: &Value) -> f64 {
    num(churn, &["cloud_calls", "total"]) / num(churn, &["pods"])
}

fn within(what: &str, sim: f64, live: f64, report: &str) {
    let off = (sim - live).abs() / live;
    assert!(
        off <= TOLERANCE,
        "{what}: simulated {sim:.4} vs live {live:.4} ({:.1} % apart, more than {:.0} %)\n{report}",
        off * 100.0,
        TOLERANCE * 100.0
    );
}

#[test]
fn simulator_agrees_with_a_live_churn_of_the_same_trace() {
    common::require_binaries();
    let dir = std::env::temp_dir().join(format!("sim-agree-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let trace = dir.join("trace.json");
    let trace = trace.to_str().expect("utf-8 temp path");
    let shape = [
        "--pods",
        "300",
        "--rate",
        "10",
        "--lifetime",
        "5",
        "--arrivals",
        "poisson",
        "--seed",
        "7",
        "--attach-delay-ms",
        "2000",
        "--settle",
        SETTLE_S,
    ];
    // The trace, written by the simulator (a first, uncalibrated run) and replayed by both.
    let mut args = vec!["simulate", "--json", "--trace-out", trace];
    args.extend(shape);
    terway_lab_json(&args);

    let live = terway_lab_json(&[
        "bench",
        "churn",
        "--json",
        "--trace",
        trace,
        "--attach-delay-ms",
        "2000",
        "--settle",
        SETTLE_S,
    ]);
    let live = &live["churn"];
    assert!(
        live.get("error").is_none(),
        "bench churn failed: {}",
        live["error"]
    );
    assert_eq!(
        num(live, &["pod_failures"]),
        0.0,
        "live pods failed: {live:#}"
    );
    let overhead = format!("{:.1}", num(live, &["add_to_ready", "p50_ms"]));
    let sim = terway_lab_json(&[
        "simulate",
        "--json",
        "--trace",
        trace,
        "--attach-delay-ms",
        "2000",
        "--add-overhead-ms",
        &overhead,
        "--settle",
        SETTLE_S,
    ]);
    assert_eq!(
        num(&sim, &["pod_failures"]),
        0.0,
        "simulated pods failed: {sim:#}"
    );

    let report = format!(
        "live: p50 {} p99 {} ms, calls {} (drain {}), by action {}\nsimulated: p50 {} p99 {} ms, calls {} (drain {}), by action {}",
        live["add_to_ready"]["p50_ms"],
        live["add_to_ready"]["p99_ms"],
        live["cloud_calls"]["total"],
        live["cloud_calls"]["drain"]["calls"],
        live["cloud_calls"]["by_action"],
        sim["add_to_ready"]["p50_ms"],
        sim["add_to_ready"]["p99_ms"],
        sim["cloud_calls"]["total"],
        sim["cloud_calls"]["drain"]["calls"],
        sim["cloud_calls"]["by_action"],
    );
    eprintln!("{report}");
    within(
        "cloud calls per pod",
        calls_per_pod(&sim),
        calls_per_pod(live),
        &report,
    );
    within(
        "ADD→ready p99",
        num(&sim, &["add_to_ready", "p99_ms"]),
        num(live, &["add_to_ready", "p99_ms"]),
        &report,
    );
    // Pods that waited for the pool are explained by the daemon's status service, as the simulator
    // explains its own: a cold pool makes some wait, and none of them is left "not reported".
    let waited = |v: &Value, what: &str| {
        v["waited_for_pool"]["waiting_for"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|w| w["what"].as_str().is_some_and(|s| s.starts_with(what)))
                    .map(|w| w["pods"].as_u64().unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    for (name, v) in [("live", live), ("simulated", &sim)] {
        assert!(
            waited(v, "a new ENI") > 0,
            "{name}: no pod reported waiting for a new ENI on a cold pool: {}",
            v["waited_for_pool"]
        );
        assert_eq!(
            waited(v, "not reported"),
            0,
            "{name}: a pod that waited has no reason: {}",
            v["waited_for_pool"]
        );
    }
}
