//! Pod arrival traces for the simulator: read from a file, or generated like `bench churn` runs them
//! (steady arrivals) or as a Poisson process.

use std::path::Path;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One pod of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TracePod {
    /// When its ADD starts, ms after the trace begins.
    pub at_ms: u64,
    /// How long it lives after its ADD returned, ms.
    pub lifetime_ms: u64,
}

/// A trace: `{"pods": [{"at_ms": 0, "lifetime_ms": 5000}, …]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Pods in arrival order.
    pub pods: Vec<TracePod>,
}

/// How generated arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// One pod every 1/rate s (what `bench churn` does).
    Steady,
    /// Exponential gaps with mean 1/rate s.
    Poisson,
}

impl Trace {
    /// Read a trace file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading trace {}", path.display()))?;
        let mut t: Trace = serde_json::from_str(&text).with_context(|| {
            format!(
                "trace {} is not {{\"pods\": [{{\"at_ms\": …, \"lifetime_ms\": …}}, …]}}",
                path.display()
            )
        })?;
        if t.pods.is_empty() {
            anyhow::bail!("trace {} has no pods", path.display());
        }
        t.pods.sort_by_key(|p| p.at_ms);
        Ok(t)
    }

    /// `pods` pods arriving at `rate` per second, each living `lifetime_s`.
    pub fn generate(
        pods: usize,
        rate: f64,
        lifetime_s: f64,
        arrivals: Arrivals,
        seed: u64,
    ) -> anyhow::Result<Self> {
        if !(rate > 0.0 && rate.is_finite()) {
            anyhow::bail!("--rate must be a positive number of pods per second, not {rate}");
        }
        if !(lifetime_s >= 0.0 && lifetime_s.is_finite()) {
            anyhow::bail!("--lifetime must be zero or more seconds, not {lifetime_s}");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let gap_ms = 1000.0 / rate;
        let lifetime_ms = (lifetime_s * 1000.0).round() as u64;
        let mut at = 0.0f64;
        let pods = (0..pods)
            .map(|i| {
                let p = TracePod {
                    at_ms: match arrivals {
                        Arrivals::Steady => (i as f64 * gap_ms).round() as u64,
                        Arrivals::Poisson => at.round() as u64,
                    },
                    lifetime_ms,
                };
                // Inverse-CDF draw of an exponential gap; 1 - u keeps ln away from 0.
                let u: f64 = rng.random();
                at += -gap_ms * (1.0 - u).ln();
                p
            })
            .collect();
        Ok(Trace { pods })
    }

    /// When the last pod arrives, ms.
    pub fn arrival_span_ms(&self) -> u64 {
        self.pods.last().map(|p| p.at_ms).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_arrivals_are_evenly_spaced_and_poisson_ones_average_the_rate() {
        let t = Trace::generate(5, 10.0, 5.0, Arrivals::Steady, 1).unwrap_or_default();
        let at: Vec<u64> = t.pods.iter().map(|p| p.at_ms).collect();
        assert_eq!(at, [0, 100, 200, 300, 400]);
        assert!(t.pods.iter().all(|p| p.lifetime_ms == 5000));
        let p = Trace::generate(10_000, 10.0, 1.0, Arrivals::Poisson, 7).unwrap_or_default();
        let mean_gap = p.arrival_span_ms() as f64 / 9_999.0;
        assert!((mean_gap - 100.0).abs() < 5.0, "mean gap {mean_gap} ms");
        assert!(Trace::generate(1, 0.0, 1.0, Arrivals::Steady, 1).is_err());
    }
}
