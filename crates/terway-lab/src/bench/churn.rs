//! `bench churn`: pods created at a steady rate and deleted after a fixed lifetime on one node that starts
//! with a cold pool, against the emulated cloud with realistic latencies: ENI attach ~2 s with jitter,
//! per-action API latency between 20 and 100 ms, and the emulator's per-API throttling at Terway's limits.
//! Reports time from ADD to ready per pod, cloud calls per pod by action (from `/_emulator/calls`), throttled
//! calls, failures seen by pods, and the pool size over time (sampled from the daemon's status service).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cni::{call, terway, Pod, PodSet, Subject};
use super::lab::{pool_status, Lab, LabSpec};
use super::report::{fmt, Chart, Section, Table, Target};
use super::stats::{ms, Summary};
use super::{ChurnOpts, CommonOpts};

/// Extra latency per action (ms): reads fast, writes slow, spread over the 20–100 ms real calls take.
/// The lab has no per-call random latency knob, so each action gets a fixed value from that range.
pub const API_LATENCY_MS: [(&str, u64); 11] = [
    ("DescribeNetworkInterfaces", 30),
    ("DescribeNetworkInterfaceAttribute", 20),
    ("DescribeInstanceTypes", 25),
    ("DescribeVSwitches", 25),
    ("DescribeInstances", 25),
    ("CreateNetworkInterface", 100),
    ("AttachNetworkInterface", 80),
    ("DetachNetworkInterface", 80),
    ("DeleteNetworkInterface", 70),
    ("AssignPrivateIpAddresses", 60),
    ("UnassignPrivateIpAddresses", 50),
];

/// One pool sample.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolSample {
    /// Seconds since the churn started.
    pub t_s: f64,
    /// IPs the node holds.
    pub total: u32,
    /// Idle IPs.
    pub idle: u32,
    /// IPs in use.
    pub in_use: u32,
}

/// Per-pod outcome.
struct PodOutcome {
    started: Duration,
    add: Result<Duration, String>,
    del: Result<Duration, String>,
}

/// What one churn measured.
pub struct ChurnResult {
    /// Pod outcomes.
    outcomes: Vec<PodOutcome>,
    /// Pool samples.
    pub samples: Vec<PoolSample>,
    /// Emulator call log (records of this run).
    pub calls: Vec<Value>,
    /// Wall time.
    pub wall: Duration,
    /// Unix ms when the first pod was due.
    pub start_ms: u64,
    /// Time over which pods arrived.
    pub arrival_span: Duration,
}

/// Run a churn on the lab's shared node: `pods` pods, one every 1/`rate` s, each deleted `lifetime` s
/// after its ADD returned.
pub fn churn(
    lab: &Lab,
    subject: &Subject,
    o: &ChurnOpts,
    run_id: &str,
    quiet: bool,
) -> anyhow::Result<ChurnResult> {
    let node = lab.node("shared")?;
    let socket = node.socket.clone();
    let set = Arc::new(PodSet::create(run_id, "ch", o.pods)?);
    let since_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(p) = rt.block_on(pool_status(&socket)) {
                    let s = PoolSample {
                        t_s: start.elapsed().as_secs_f64(),
                        total: p.total,
                        idle: p.idle,
                        in_use: p.in_use,
                    };
                    samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let interval = Duration::from_secs_f64(1.0 / o.rate.max(0.01));
    let lifetime = Duration::from_secs_f64(o.lifetime.max(0.0));
    let outcomes: Mutex<Vec<(usize, PodOutcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for i in 0..o.pods {
            // Steady arrivals: pod i starts at i × interval regardless of how long earlier ADDs take.
            let due = start + interval * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if !quiet && i % 100 == 0 && i > 0 {
                eprintln!("bench churn: {i}/{} pods started…", o.pods);
            }
            let (set, outcomes) = (&set, &outcomes);
            sc.spawn(move || {
                let pod: &Pod = &set.pods[i];
                let started = start.elapsed();
                let add = call(subject, "ADD", pod).map(|(d, _)| d);
                std::thread::sleep(lifetime);
                let del = call(subject, "DEL", pod).map(|(d, _)| d);
                outcomes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, PodOutcome { started, add, del }));
            });
        }
    });
    let wall = start.elapsed();
    // Let the pool settle back towards its watermarks before the last samples.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    drop(set);
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by_key(|(i, _)| *i);
    let calls = lab.emulator("GET", "/_emulator/calls", None)?;
    let calls = calls
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| {
                    c.get("at_ms")
                        .and_then(Value::as_u64)
                        .is_some_and(|t| t >= since_ms)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(ChurnResult {
        outcomes: outcomes.into_iter().map(|(_, o)| o).collect(),
        samples,
        calls,
        wall,
        start_ms: since_ms,
        arrival_span: interval * o.pods as u32,
    })
}

/// Calls by action (all; in the steady state; in the drain after the last arrival) and throttled calls.
pub fn call_stats(r: &ChurnResult, pods: usize) -> Value {
    // Steady state: the second half of the arrival schedule (the pool has warmed up by then) up to the
    // last arrival. After it the load leaves and the pool trims back to its high watermark: that drain is
    // the pool doing its job, not churn, and is reported on its own.
    let half = r.arrival_span / 2;
    let half_ms = r.start_ms + half.as_millis() as u64;
    let end_ms = r.start_ms + r.arrival_span.as_millis() as u64;
    let mut by_action: BTreeMap<String, u64> = BTreeMap::new();
    let mut steady: BTreeMap<String, u64> = BTreeMap::new();
    let mut drain: BTreeMap<String, u64> = BTreeMap::new();
    let mut throttled = 0u64;
    let mut errors = 0u64;
    for c in &r.calls {
        let action = c
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let code = c.get("code").and_then(Value::as_str).unwrap_or("");
        if code.starts_with("Throttling") {
            throttled += 1;
        } else if code != "OK" {
            errors += 1;
        }
        match c.get("at_ms").and_then(Value::as_u64) {
            Some(t) if t > end_ms => *drain.entry(action.clone()).or_default() += 1,
            Some(t) if t >= half_ms => *steady.entry(action.clone()).or_default() += 1,
            _ => {}
        }
        *by_action.entry(action).or_default() += 1;
    }
    let total: u64 = by_action.values().sum();
    // Pods started in the second half of the arrival schedule.
    let steady_pods = r.outcomes.iter().filter(|o| o.started >= half).count();
    let steady_total: u64 = steady.values().sum();
    let drain_total: u64 = drain.values().sum();
    let count = |m: &BTreeMap<String, u64>, a: &str| m.get(a).copied().unwrap_or(0);
    let eni_cycles =
        count(&steady, "CreateNetworkInterface").max(count(&steady, "DeleteNetworkInterface"));
    let per_pod = |n: u64, p: usize| {
        if p == 0 {
            None
        } else {
            Some(n as f64 / p as f64)
        }
    };
    json!({
        "total": total,
        "per_pod": per_pod(total, pods),
        "by_action": by_action,
        "by_action_per_pod": by_action.iter().map(|(k, v)| (k.clone(), json!(per_pod(*v, pods)))).collect::<serde_json::Map<_, _>>(),
        "steady_state": { "pods": steady_pods, "calls": steady_total, "per_pod": per_pod(steady_total, steady_pods), "by_action": steady, "eni_create_delete_cycles": eni_cycles },
        "drain": { "calls": drain_total, "by_action": drain },
        "throttled": throttled,
        "other_errors": errors,
    })
}

/// Build the section for a churn result.
pub fn section(name: &'static str, r: &ChurnResult, o: &ChurnOpts, extra: Value) -> Section {
    let adds: Vec<Duration> = r
        .outcomes
        .iter()
        .filter_map(|p| p.add.as_ref().ok().copied())
        .collect();
    let dels: Vec<Duration> = r
        .outcomes
        .iter()
        .filter_map(|p| p.del.as_ref().ok().copied())
        .collect();
    let failures: Vec<&String> = r
        .outcomes
        .iter()
        .flat_map(|p| p.add.as_ref().err().into_iter().chain(p.del.as_ref().err()))
        .collect();
    let throttled_pods = failures.iter().filter(|e| e.contains("Throttl")).count();
    let add = Summary::of(&adds);
    let del = Summary::of(&dels);
    let calls = call_stats(r, o.pods);
    let mut s = Section::new(name);
    let mut t = Table::new(
        format!(
            "Churn: {} pods at {}/s, lifetime {} s, pool {}/{}, attach {} ms",
            o.pods, o.rate, o.lifetime, o.min_pool, o.max_pool, o.attach_delay_ms
        ),
        &["figure", "value"],
    );
    t.row(vec![
        "ADD→ready p50 / p99 (ms)".into(),
        format!(
            "{} / {}",
            fmt(add.map(|a| a.p50_ms), 1),
            fmt(add.map(|a| a.p99_ms), 1)
        ),
    ]);
    t.row(vec![
        "ADD→ready max (ms)".into(),
        fmt(add.map(|a| a.max_ms), 1),
    ]);
    t.row(vec![
        "DEL p50 / p99 (ms)".into(),
        format!(
            "{} / {}",
            fmt(del.map(|a| a.p50_ms), 1),
            fmt(del.map(|a| a.p99_ms), 1)
        ),
    ]);
    t.row(vec![
        "pod failures (throttling)".into(),
        format!("{} ({throttled_pods})", failures.len()),
    ]);
    if let Some(first) = failures.first() {
        // The first one says why; `--json` has the first few.
        t.row(vec![
            "  first failure".into(),
            first.chars().take(160).collect(),
        ]);
    }
    t.row(vec![
        "cloud calls per pod (all)".into(),
        fmt(calls["per_pod"].as_f64(), 3),
    ]);
    t.row(vec![
        "cloud calls per pod (steady state)".into(),
        fmt(
            calls
                .pointer("/steady_state/per_pod")
                .and_then(Value::as_f64),
            3,
        ),
    ]);
    t.row(vec![
        "ENI create/delete cycles (steady state)".into(),
        calls
            .pointer("/steady_state/eni_create_delete_cycles")
            .map(Value::to_string)
            .unwrap_or_default(),
    ]);
    t.row(vec![
        "cloud calls after the last arrival (drain)".into(),
        calls
            .pointer("/drain/calls")
            .map(Value::to_string)
            .unwrap_or_default(),
    ]);
    t.row(vec![
        "throttled cloud calls".into(),
        calls["throttled"].to_string(),
    ]);
    if let Some(m) = calls["by_action"].as_object() {
        for (k, v) in m {
            t.row(vec![
                format!("  {k}"),
                format!(
                    "{v} ({} per pod)",
                    fmt(calls["by_action_per_pod"][k].as_f64(), 3)
                ),
            ]);
        }
    }
    s.tables.push(t);
    s.targets.push(Target::new(
        format!("{name}: cloud calls per pod in steady state"),
        calls
            .pointer("/steady_state/per_pod")
            .and_then(Value::as_f64),
        0.05,
        true,
        "",
    ));
    s.targets.push(Target::new(
        format!("{name}: throttling errors seen by pods"),
        Some(throttled_pods as f64),
        0.0,
        true,
        "",
    ));
    let pts = |f: fn(&PoolSample) -> u32| {
        r.samples
            .iter()
            .map(|p| (p.t_s, f64::from(f(p))))
            .collect::<Vec<_>>()
    };
    s.charts.push(Chart::Lines {
        title: format!("Pool size during the churn ({} pods)", o.pods),
        x_label: "seconds".into(),
        y_label: "IPs".into(),
        series: vec![
            ("total".into(), pts(|p| p.total)),
            ("idle".into(), pts(|p| p.idle)),
            ("in use".into(), pts(|p| p.in_use)),
        ],
    });
    s.json = json!({
        "pods": o.pods, "rate_per_s": o.rate, "lifetime_s": o.lifetime, "min_pool": o.min_pool, "max_pool": o.max_pool,
        "attach_delay_ms": o.attach_delay_ms,
        "wall_ms": ms(r.wall),
        "add_to_ready": add, "del": del,
        "pod_failures": failures.len(), "pod_throttling_failures": throttled_pods,
        "first_failures": failures.iter().take(3).collect::<Vec<_>>(),
        "cloud_calls": calls,
        "pool_samples": r.samples,
        "setup": extra,
    });
    s
}

/// `bench churn`.
pub fn bench(opts: &CommonOpts, o: &ChurnOpts) -> anyhow::Result<Section> {
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let lab = match &opts.lab {
        Some(n) => Lab::existing(n)?,
        None => Lab::up(&LabSpec {
            modes: vec!["shared"],
            min_pool: o.min_pool,
            max_pool: o.max_pool,
            attach_delay_ms: o.attach_delay_ms.clone(),
        })?,
    };
    let latency: serde_json::Map<String, Value> = API_LATENCY_MS
        .iter()
        .map(|(a, v)| (a.to_string(), json!(v)))
        .collect();
    lab.emulator(
        "POST",
        "/_emulator/faults",
        Some(&json!({ "extra_latency_ms": latency })),
    )?;
    let node = lab.node("shared")?.name.clone();
    let subject = terway(&lab, &node)?;
    let r = churn(&lab, &subject, o, run_id, opts.json);
    // Leave an existing lab as we found it.
    let _ = lab.emulator("POST", "/_emulator/faults", Some(&json!({})));
    let r = r?;
    Ok(section(
        "churn",
        &r,
        o,
        json!({ "api_latency_ms": latency, "throttling": "emulator default (Terway per-API limits)" }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_split_into_warm_up_and_steady_state() {
        let pod = |s: u64| PodOutcome {
            started: Duration::from_secs(s),
            add: Ok(Duration::from_millis(10)),
            del: Ok(Duration::from_millis(5)),
        };
        let call = |at: u64, action: &str, code: &str| json!({ "at_ms": 1_000_000 + at, "action": action, "code": code });
        let r = ChurnResult {
            outcomes: (0..10).map(pod).collect(),
            samples: vec![],
            calls: vec![
                call(0, "CreateNetworkInterface", "OK"),
                call(100, "AssignPrivateIpAddresses", "Throttling.User"),
                call(2_000, "AssignPrivateIpAddresses", "OK"),
                call(6_000, "UnassignPrivateIpAddresses", "OK"),
                call(6_500, "DeleteNetworkInterface", "OK"),
                call(12_000, "DeleteNetworkInterface", "OK"),
            ],
            wall: Duration::from_secs(15),
            start_ms: 1_000_000,
            arrival_span: Duration::from_secs(10),
        };
        let v = call_stats(&r, 10);
        assert_eq!(v["total"], 6);
        assert_eq!(v["throttled"], 1);
        assert_eq!(v["per_pod"].as_f64(), Some(0.6));
        // Second half starts at 5 s and ends with the last arrival at 10 s: pods 5..9, the Unassign and
        // the first Delete; the Delete at 12 s is the drain.
        assert_eq!(
            v.pointer("/steady_state/pods").and_then(Value::as_u64),
            Some(5)
        );
        assert_eq!(
            v.pointer("/steady_state/per_pod").and_then(Value::as_f64),
            Some(0.4)
        );
        assert_eq!(
            v.pointer("/steady_state/eni_create_delete_cycles")
                .and_then(Value::as_u64),
            Some(1)
        );
        assert_eq!(v.pointer("/drain/calls").and_then(Value::as_u64), Some(1));
        assert_eq!(
            v.pointer("/by_action/AssignPrivateIpAddresses")
                .and_then(Value::as_u64),
            Some(2)
        );
    }
}
