//! `simulate --sweep`: the same trace and the same cloud (same seed) under every point of a grid of eni_conf
//! knobs; every point's figures, the frontier (no other point is at least as good on start latency p99,
//! steady-state calls per pod and idle IP·hours, and better on one) and the recommendation.

use serde_json::{json, Value};

use super::{Setup, SimResult};
use crate::bench::churn::{add_summary, call_stats};
use crate::bench::report::Table;

/// One knob and the values to try.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// eni_conf key.
    pub key: String,
    /// Values, as JSON.
    pub values: Vec<Value>,
}

/// Parse `k=A..B[:STEP]` or `k=v1|v2|…`, comma-separated.
pub fn parse(spec: &str) -> anyhow::Result<Vec<Axis>> {
    let mut axes = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, vals) = part.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--sweep {part:?}: expected KEY=A..B, KEY=A..B:STEP or KEY=v1|v2")
        })?;
        let values = if let Some((a, rest)) = vals.split_once("..") {
            let (b, step) = rest.split_once(':').unwrap_or((rest, "1"));
            let bad = || anyhow::anyhow!("--sweep {part:?}: A, B and STEP must be whole numbers");
            let (a, b, step): (u64, u64, u64) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
                step.trim().parse().map_err(|_| bad())?,
            );
            if step == 0 || a > b {
                anyhow::bail!("--sweep {part:?}: needs A ≤ B and STEP ≥ 1");
            }
            (a..=b).step_by(step as usize).map(|v| json!(v)).collect()
        } else {
            vals.split('|')
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map(|n| json!(n))
                        .unwrap_or_else(|_| json!(v.trim()))
                })
                .collect()
        };
        axes.push(Axis {
            key: key.trim().to_string(),
            values,
        });
    }
    if axes.is_empty() {
        anyhow::bail!("--sweep is empty");
    }
    Ok(axes)
}

/// Every combination of the axes' values, in order.
pub fn grid(axes: &[Axis]) -> Vec<Vec<(String, Value)>> {
    axes.iter().fold(vec![Vec::new()], |acc, axis| {
        acc.iter()
            .flat_map(|point| {
                axis.values.iter().map(move |v| {
                    let mut p = point.clone();
                    p.push((axis.key.clone(), v.clone()));
                    p
                })
            })
            .collect()
    })
}

/// The figures of one point.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Point {
    /// The knobs of this point.
    pub knobs: Vec<(String, Value)>,
    /// ADD→ready p50, ms.
    pub p50_ms: f64,
    /// ADD→ready p99, ms.
    pub p99_ms: f64,
    /// ADD→ready max, ms.
    pub max_ms: f64,
    /// Cloud calls per pod, whole run.
    pub calls_per_pod: f64,
    /// Cloud calls per pod in the steady state.
    pub steady_calls_per_pod: f64,
    /// ENI create/delete cycles in the steady state.
    pub eni_cycles: u64,
    /// Addresses held without a pod, IP·hours.
    pub idle_ip_hours: f64,
    /// Pods whose ADD failed.
    pub failures: usize,
}

impl Point {
    fn of(knobs: Vec<(String, Value)>, r: &SimResult) -> Self {
        let add = add_summary(&r.churn);
        let calls = call_stats(&r.churn, r.churn.outcomes.len());
        let f = |p: &str| calls.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
        Point {
            knobs,
            p50_ms: add.map(|a| a.p50_ms).unwrap_or(f64::INFINITY),
            p99_ms: add.map(|a| a.p99_ms).unwrap_or(f64::INFINITY),
            max_ms: add.map(|a| a.max_ms).unwrap_or(f64::INFINITY),
            calls_per_pod: f("/per_pod"),
            steady_calls_per_pod: f("/steady_state/per_pod"),
            eni_cycles: calls
                .pointer("/steady_state/eni_create_delete_cycles")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            idle_ip_hours: r.idle_ip_hours,
            failures: r.churn.outcomes.iter().filter(|o| o.add.is_err()).count(),
        }
    }

    /// At least as good as `other` everywhere and better somewhere (lower is better on all three).
    fn dominates(&self, other: &Point) -> bool {
        let a = [self.p99_ms, self.steady_calls_per_pod, self.idle_ip_hours];
        let b = [
            other.p99_ms,
            other.steady_calls_per_pod,
            other.idle_ip_hours,
        ];
        a.iter().zip(&b).all(|(x, y)| x <= y) && a.iter().zip(&b).any(|(x, y)| x < y)
    }

    fn label(&self) -> String {
        self.knobs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Indices of the points no other point dominates; failing points are never on it.
pub fn frontier(points: &[Point]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| {
            points[i].failures == 0
                && !points
                    .iter()
                    .any(|q| q.failures == 0 && q.dominates(&points[i]))
        })
        .collect()
}

/// The point to recommend: among those meeting the targets (no failures, p99 ≤ attach max + 0.5 s, steady
/// state ≤ 0.05 calls per pod and no ENI cycles) the one holding the fewest idle addresses; if none meets
/// them, the lowest p99 without failures. Returns the index and why.
pub fn recommend(points: &[Point], attach_max_ms: u64) -> Option<(usize, String)> {
    let p99_goal = attach_max_ms as f64 + 500.0;
    let meets = |p: &Point| {
        p.failures == 0
            && p.p99_ms <= p99_goal
            && p.steady_calls_per_pod <= 0.05
            && p.eni_cycles == 0
    };
    let cmp = |a: &f64, b: &f64| a.total_cmp(b);
    if let Some((i, _)) =
        points
            .iter()
            .enumerate()
            .filter(|(_, p)| meets(p))
            .min_by(|(_, a), (_, b)| {
                cmp(&a.idle_ip_hours, &b.idle_ip_hours).then(cmp(&a.p99_ms, &b.p99_ms))
            })
    {
        return Some((
            i,
            format!(
                "meets p99 ≤ {p99_goal} ms, ≤ 0.05 steady-state calls per pod and 0 ENI cycles with the fewest idle IP·hours"
            ),
        ));
    }
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.failures == 0)
        .min_by(|(_, a), (_, b)| cmp(&a.p99_ms, &b.p99_ms).then(cmp(&a.steady_calls_per_pod, &b.steady_calls_per_pod)))
        .map(|(i, _)| {
            (
                i,
                format!("no point meets p99 ≤ {p99_goal} ms, ≤ 0.05 calls per pod and 0 ENI cycles; this one has the lowest p99"),
            )
        })
}

/// Run the sweep and print it.
pub fn run(setup: &Setup, base: &Value, spec: &str) -> anyhow::Result<()> {
    let axes = parse(spec)?;
    let mut points = Vec::new();
    let mut skipped = Vec::new();
    for knobs in grid(&axes) {
        let mut conf = base.clone();
        if let Some(o) = conf.as_object_mut() {
            for (k, v) in &knobs {
                o.insert(k.clone(), v.clone());
            }
        }
        // An invalid combination (max below min, …) is reported, not fatal: grids cross such corners.
        match terway_core::EniConf::from_value(conf.clone()) {
            Ok(_) => {
                let r = setup.simulate(&conf)?;
                points.push(Point::of(knobs, &r));
            }
            Err(e) => skipped.push((knobs, e.to_string())),
        }
    }
    let front = frontier(&points);
    let rec = recommend(&points, setup.attach_max_ms());
    if setup.args.json {
        let doc = json!({
            "points": points,
            "skipped": skipped.iter().map(|(k, e)| json!({"knobs": k, "error": e})).collect::<Vec<_>>(),
            "frontier": front,
            "recommendation": rec.as_ref().map(|(i, why)| json!({"index": i, "point": points[*i], "why": why})),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let mut t = Table::new(
        format!(
            "Sweep over {} points ({} pods, same trace and seed)",
            points.len(),
            setup.trace.pods.len()
        ),
        &[
            "knobs",
            "p50 ms",
            "p99 ms",
            "max ms",
            "calls/pod",
            "steady calls/pod",
            "ENI cycles",
            "idle IP·h",
            "failures",
            "frontier",
        ],
    );
    for (i, p) in points.iter().enumerate() {
        t.row(vec![
            p.label(),
            format!("{:.0}", p.p50_ms),
            format!("{:.0}", p.p99_ms),
            format!("{:.0}", p.max_ms),
            format!("{:.3}", p.calls_per_pod),
            format!("{:.3}", p.steady_calls_per_pod),
            p.eni_cycles.to_string(),
            format!("{:.4}", p.idle_ip_hours),
            p.failures.to_string(),
            if front.contains(&i) {
                "*".into()
            } else {
                String::new()
            },
        ]);
    }
    println!("{}", t.render());
    for (k, e) in &skipped {
        let label: Vec<String> = k.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("skipped {}: {e}", label.join(" "));
    }
    match rec {
        Some((i, why)) => println!("recommended: {} ({why})", points[i].label()),
        None => println!("recommended: none (every point had failed pods)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(p99: f64, calls: f64, idle: f64) -> Point {
        Point {
            knobs: vec![("min_pool_size".into(), json!(p99 as u64))],
            p50_ms: 10.0,
            p99_ms: p99,
            max_ms: p99,
            calls_per_pod: calls,
            steady_calls_per_pod: calls,
            eni_cycles: 0,
            idle_ip_hours: idle,
            failures: 0,
        }
    }

    #[test]
    fn sweep_specs_expand_to_a_grid() {
        let axes = parse("min_pool_size=0..4:2, max_pool_size=10|20").unwrap_or_default();
        assert_eq!(axes[0].values, [json!(0), json!(2), json!(4)]);
        assert_eq!(axes[1].values, [json!(10), json!(20)]);
        let g = grid(&axes);
        assert_eq!(g.len(), 6);
        assert_eq!(
            g[1],
            [
                ("min_pool_size".to_string(), json!(0)),
                ("max_pool_size".to_string(), json!(20))
            ]
        );
        assert!(parse("min_pool_size=5..1").is_err());
        assert!(parse("min_pool_size").is_err());
    }

    #[test]
    fn the_frontier_drops_dominated_points_and_the_recommendation_meets_the_targets_cheapest() {
        let pts = vec![
            point(2_000.0, 0.01, 0.5),
            point(2_500.0, 0.02, 0.6), // dominated by the first
            point(1_000.0, 0.01, 0.9),
            point(4_000.0, 0.00, 0.1),
        ];
        assert_eq!(frontier(&pts), [0, 2, 3]);
        // Attach max 2.5 s: the goal is p99 ≤ 3 s; of 0 and 2, point 0 holds fewer idle addresses.
        assert_eq!(recommend(&pts, 2_500).map(|r| r.0), Some(0));
        // Attach max 0.2 s: nobody meets 0.7 s; the lowest p99 wins.
        assert_eq!(recommend(&pts, 200).map(|r| r.0), Some(2));
    }
}
