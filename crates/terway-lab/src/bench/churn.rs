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
use super::lab::{daemon_status, wait_idle, Lab, LabSpec};
use super::report::{fmt, Chart, Section, Table, Target};
use super::stats::{ms, Summary};
use super::{ChurnOpts, CommonOpts};
use crate::simulate::trace::Trace;
use terway_daemon::pool::waits::{WaitKind, WaitReason};

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
pub struct PodOutcome {
    /// When its ADD started, after the churn's start.
    pub started: Duration,
    /// ADD → ready, or why it failed.
    pub add: Result<Duration, String>,
    /// DEL, when measured (the simulator does not model it).
    pub del: Option<Result<Duration, String>>,
    /// What the ADD waited on, when it could not take a free address at once (the daemon's status service
    /// or the simulator says).
    pub waited_for: Option<WaitReason>,
}

/// What one churn measured.
pub struct ChurnResult {
    /// Pod outcomes.
    pub outcomes: Vec<PodOutcome>,
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

/// The trace a churn runs: `--trace FILE`, else `--pods` arrivals at `--rate` (steady or Poisson), each
/// living `--lifetime` s — the same trace `terway-lab simulate` generates from the same flags.
pub fn trace_of(o: &ChurnOpts) -> anyhow::Result<Trace> {
    match &o.trace {
        Some(p) => Trace::load(p),
        None => Trace::generate(o.pods, o.rate, o.lifetime, o.arrivals, o.seed),
    }
}

/// `--settle` as a duration.
pub fn settle_time(o: &ChurnOpts) -> anyhow::Result<Duration> {
    if o.settle >= 0.0 && o.settle.is_finite() {
        Ok(Duration::from_secs_f64(o.settle))
    } else {
        anyhow::bail!("--settle must be zero or more seconds, not {}", o.settle)
    }
}

/// Run a churn on the lab's shared node: each pod of `trace` ADDed at its arrival time (however long earlier
/// ADDs take) and deleted its lifetime after its ADD returned.
pub fn churn(
    lab: &Lab,
    subject: &Subject,
    trace: &Trace,
    o: &ChurnOpts,
    run_id: &str,
    quiet: bool,
) -> anyhow::Result<ChurnResult> {
    let node = lab.node("shared")?;
    let socket = node.socket.clone();
    // Start from a pool at its low watermark, not in the middle of the daemon's first fill: "cold" means no
    // pod has grown it yet, and `terway-lab simulate` starts from the same point.
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(wait_idle(&socket, o.min_pool, Duration::from_secs(60)))?;
    }
    let set = Arc::new(PodSet::create(run_id, "ch", trace.pods.len())?);
    let listed = subject.list(&set)?;
    let since_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    // Slow allocations the daemon reported, by pod name; sampled with the pool so that none falls out
    // of the daemon's bounded list before it is read.
    let slow = Arc::new(Mutex::new(BTreeMap::<String, WaitReason>::new()));
    let sampler = {
        let (stop, samples, slow) = (stop.clone(), samples.clone(), slow.clone());
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            loop {
                // One more reading after the stop, for the allocations of the last samples' interval.
                let last = stop.load(std::sync::atomic::Ordering::Relaxed);
                if let Ok(reply) = rt.block_on(daemon_status(&socket)) {
                    if let Some(p) = reply.pool {
                        let s = PoolSample {
                            t_s: start.elapsed().as_secs_f64(),
                            total: p.total,
                            idle: p.idle,
                            in_use: p.in_use,
                        };
                        samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                    }
                    let mut slow = slow.lock().unwrap_or_else(|e| e.into_inner());
                    for a in &reply.slow_allocations {
                        if let Some((pod, reason)) = wait_reason_of(a) {
                            slow.insert(pod, reason);
                        }
                    }
                }
                if last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let outcomes: Mutex<Vec<(usize, PodOutcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for (i, tp) in trace.pods.iter().enumerate() {
            let due = start + Duration::from_millis(tp.at_ms);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if !quiet && i % 100 == 0 && i > 0 {
                eprintln!("bench churn: {i}/{} pods started…", trace.pods.len());
            }
            let (set, outcomes) = (&set, &outcomes);
            let lifetime = Duration::from_millis(tp.lifetime_ms);
            sc.spawn(move || {
                let pod: &Pod = &set.pods[i];
                let started = start.elapsed();
                let add = call(subject, "ADD", pod).map(|(d, _)| d);
                std::thread::sleep(lifetime);
                let del = Some(call(subject, "DEL", pod).map(|(d, _)| d));
                let o = PodOutcome {
                    started,
                    add,
                    del,
                    waited_for: None,
                };
                outcomes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, o));
            });
        }
    });
    let wall = start.elapsed();
    // Let the pool settle back towards its watermarks before the last samples.
    std::thread::sleep(settle_time(o)?);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by_key(|(i, _)| *i);
    {
        let mut slow = slow.lock().unwrap_or_else(|e| e.into_inner());
        for (i, o) in outcomes.iter_mut() {
            if let Some(p) = set.pods.get(*i) {
                o.waited_for = slow.remove(&p.name);
            }
        }
    }
    drop(listed);
    drop(set);
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
        arrival_span: Duration::from_millis(trace.arrival_span_ms()),
    })
}

/// A slow allocation of the daemon's status reply as (pod name, reason).
fn wait_reason_of(a: &terway_rpc::v1::SlowAllocation) -> Option<(String, WaitReason)> {
    let kind = WaitKind::from_label(&a.waited_on)?;
    let name = a.pod.rsplit('/').next().unwrap_or(&a.pod).to_string();
    let reason = WaitReason {
        kind,
        eni: (!a.eni_id.is_empty()).then(|| a.eni_id.clone()),
        attach_ms: (kind == WaitKind::NewEni).then_some(a.attach_ms),
        enis_ready_meanwhile: a.enis_ready_meanwhile,
    };
    Some((name, reason))
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

/// ADD→ready over the pods whose ADD succeeded.
pub fn add_summary(r: &ChurnResult) -> Option<Summary> {
    let adds: Vec<Duration> = r
        .outcomes
        .iter()
        .filter_map(|p| p.add.as_ref().ok().copied())
        .collect();
    Summary::of(&adds)
}

/// Pods whose ADD took longer than `limit`, grouped by what they waited on (most common first).
pub fn slow_waits(r: &ChurnResult, limit: Duration) -> (usize, Vec<(String, usize)>) {
    group_waits(r, |o| o.add.as_ref().is_ok_and(|d| *d > limit))
}

/// Pods that could not take a free address at once, grouped by what they waited on.
pub fn cloud_waits(r: &ChurnResult) -> (usize, Vec<(String, usize)>) {
    group_waits(r, |o| o.add.is_ok() && o.waited_for.is_some())
}

fn group_waits(
    r: &ChurnResult,
    counted: impl Fn(&PodOutcome) -> bool,
) -> (usize, Vec<(String, usize)>) {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut n = 0;
    for o in r.outcomes.iter().filter(|o| counted(o)) {
        n += 1;
        let why = match &o.waited_for {
            Some(w) if w.enis_ready_meanwhile > 1 => {
                format!(
                    "{}, after earlier ones went to other pods",
                    w.kind.describe()
                )
            }
            Some(w) => w.kind.describe().to_string(),
            None => "not reported".into(),
        };
        *by.entry(why).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    (n, v)
}

/// Build the section for a churn result.
pub fn section(name: &'static str, r: &ChurnResult, o: &ChurnOpts, extra: Value) -> Section {
    let dels: Vec<Duration> = r
        .outcomes
        .iter()
        .filter_map(|p| p.del.as_ref().and_then(|d| d.as_ref().ok()).copied())
        .collect();
    let failures: Vec<&String> = r
        .outcomes
        .iter()
        .flat_map(|p| {
            p.add
                .as_ref()
                .err()
                .into_iter()
                .chain(p.del.as_ref().and_then(|d| d.as_ref().err()))
        })
        .collect();
    let throttled_pods = failures.iter().filter(|e| e.contains("Throttl")).count();
    let add = add_summary(r);
    let attach_max = super::lab::attach_max_ms(&o.attach_delay_ms);
    let (slow, slow_why) = slow_waits(r, Duration::from_millis(attach_max));
    let (waited, waited_why) = cloud_waits(r);
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
        format!("pods waiting longer than one attach ({attach_max} ms)"),
        slow.to_string(),
    ]);
    for (why, n) in &slow_why {
        t.row(vec![format!("  waiting for {why}"), n.to_string()]);
    }
    t.row(vec![
        "pods that waited for the pool at all".into(),
        waited.to_string(),
    ]);
    for (why, n) in &waited_why {
        t.row(vec![format!("  waiting for {why}"), n.to_string()]);
    }
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
        "slow_pods": { "longer_than_ms": attach_max, "count": slow, "waiting_for": slow_why.iter().map(|(w, n)| json!({"what": w, "pods": n})).collect::<Vec<_>>() },
        "waited_for_pool": { "count": waited, "waiting_for": waited_why.iter().map(|(w, n)| json!({"what": w, "pods": n})).collect::<Vec<_>>() },
        "first_failures": failures.iter().take(3).collect::<Vec<_>>(),
        "cloud_calls": calls,
        "pool_samples": r.samples,
        // Every call of the run, ms after the first arrival: what each phase cost, and when.
        "call_log": r.calls.iter().map(|c| json!({
            "t_ms": c.get("at_ms").and_then(Value::as_u64).map(|t| t as i64 - r.start_ms as i64),
            "action": c.get("action"),
            "code": c.get("code"),
        })).collect::<Vec<_>>(),
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
    let trace = trace_of(o)?;
    // A trace file decides the pod count, not --pods.
    let o = &ChurnOpts {
        pods: trace.pods.len(),
        ..o.clone()
    };
    let r = churn(&lab, &subject, &trace, o, run_id, opts.json);
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
            del: Some(Ok(Duration::from_millis(5))),
            waited_for: None,
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

    #[test]
    fn waits_are_grouped_by_what_the_daemon_says() {
        let reason = |kind, meanwhile| WaitReason {
            kind,
            eni: Some("eni-1".into()),
            attach_ms: None,
            enis_ready_meanwhile: meanwhile,
        };
        let pod = |add_ms: u64, w: Option<WaitReason>| PodOutcome {
            started: Duration::ZERO,
            add: Ok(Duration::from_millis(add_ms)),
            del: None,
            waited_for: w,
        };
        let r = ChurnResult {
            outcomes: vec![
                pod(2500, Some(reason(WaitKind::NewEni, 1))),
                pod(2600, Some(reason(WaitKind::NewEni, 2))),
                pod(2700, None),
                pod(300, Some(reason(WaitKind::AssignIps, 0))),
                pod(40, None),
            ],
            samples: vec![],
            calls: vec![],
            wall: Duration::from_secs(1),
            start_ms: 0,
            arrival_span: Duration::from_secs(1),
        };
        let (n, why) = slow_waits(&r, Duration::from_millis(2000));
        assert_eq!(n, 3);
        assert!(
            why.contains(&("a new ENI to attach".to_string(), 1)),
            "{why:?}"
        );
        assert!(why.contains(&(
            "a new ENI to attach, after earlier ones went to other pods".to_string(),
            1
        )));
        assert!(why.contains(&("not reported".to_string(), 1)));
        let (n, why) = cloud_waits(&r);
        assert_eq!(n, 3);
        assert!(why.contains(&("AssignPrivateIpAddresses".to_string(), 1)));
    }

    #[test]
    fn the_daemons_slow_allocation_becomes_a_reason() {
        let a = terway_rpc::v1::SlowAllocation {
            pod: "default/ch-1".into(),
            waited_ms: 2100,
            waited_on: "new-eni".into(),
            eni_id: "eni-9".into(),
            attach_ms: 2003,
            enis_ready_meanwhile: 1,
            reason: String::new(),
            at_unix_ms: 1,
        };
        let (pod, r) = wait_reason_of(&a).unwrap();
        assert_eq!(pod, "ch-1");
        assert_eq!(r.to_string(), "a new ENI (eni-9, attach 2003 ms)");
        let unknown = terway_rpc::v1::SlowAllocation {
            waited_on: "something-new".into(),
            ..a
        };
        assert!(wait_reason_of(&unknown).is_none());
    }
}
