//! Latency statistics and ratios: the arithmetic every benchmark shares, kept pure so it is unit-tested.

use std::time::Duration;

use serde::Serialize;

/// Summary of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Smallest sample.
    pub min_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// Nearest-rank percentile of an ascending-sorted slice (`q` in 0..=100): the smallest sample such that
/// at least q % of the samples are ≤ it. `None` for an empty slice.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 100.0);
    // ceil(q/100 * n) is the 1-based rank; rank 0 (q = 0) means the minimum.
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

impl Summary {
    /// Summarise samples given in milliseconds; `None` when there are none.
    pub fn of_ms(samples: &[f64]) -> Option<Self> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        Some(Self {
            n: s.len(),
            p50_ms: percentile(&s, 50.0)?,
            p90_ms: percentile(&s, 90.0)?,
            p99_ms: percentile(&s, 99.0)?,
            mean_ms: mean,
            min_ms: s[0],
            max_ms: s[s.len() - 1],
        })
    }

    /// Summarise durations.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        Self::of_ms(&samples.iter().map(|d| ms(*d)).collect::<Vec<_>>())
    }
}

/// A duration in (fractional) milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `ours / reference`, `None` when the reference is zero or either side is missing or not finite.
pub fn ratio(ours: Option<f64>, reference: Option<f64>) -> Option<f64> {
    match (ours, reference) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// Operations per second for `count` operations over `wall`; `None` for an empty interval.
pub fn per_second(count: usize, wall: Duration) -> Option<f64> {
    let secs = wall.as_secs_f64();
    (secs > 0.0).then(|| count as f64 / secs)
}

/// How a measured figure compares to a goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Goal reached.
    Met,
    /// Goal missed.
    Missed,
    /// Nothing measured.
    Unknown,
}

/// Compare `value` to a goal: `at_most` goals are met when value ≤ goal, otherwise when value ≥ goal.
pub fn verdict(value: Option<f64>, goal: f64, at_most: bool) -> Verdict {
    match value {
        None => Verdict::Unknown,
        Some(v) if (at_most && v <= goal) || (!at_most && v >= goal) => Verdict::Met,
        Some(_) => Verdict::Missed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 90.0), Some(90.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        // 10 samples: p99 is the largest, p50 the fifth.
        let t: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&t, 99.0), Some(10.0));
        assert_eq!(percentile(&t, 50.0), Some(5.0));
    }

    #[test]
    fn summary_sorts_and_drops_non_finite() {
        let s = Summary::of_ms(&[3.0, f64::NAN, 1.0, 2.0, 4.0]).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 4.0);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.mean_ms, 2.5);
        assert!(Summary::of_ms(&[]).is_none());
        let d = Summary::of(&[Duration::from_micros(1500)]).unwrap();
        assert!((d.p99_ms - 1.5).abs() < 1e-9);
    }

    #[test]
    fn ratios_and_rates() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(per_second(200, Duration::from_millis(500)), Some(400.0));
        assert_eq!(per_second(1, Duration::ZERO), None);
        assert_eq!(verdict(Some(0.2), 0.3, true), Verdict::Met);
        assert_eq!(verdict(Some(0.4), 0.3, true), Verdict::Missed);
        assert_eq!(verdict(Some(250.0), 200.0, false), Verdict::Met);
        assert_eq!(verdict(None, 1.0, true), Verdict::Unknown);
    }
}
