//! Per-action call statistics the daemon reads to export as metrics (count, latency, error codes,
//! retries, time spent in the client rate limiter). Kept in-crate so the client has no dependency on
//! a metrics library; the daemon copies a [`MetricsSnapshot`] into its registry.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Statistics of one API action.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActionStats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// Logical calls (one per trait method invocation, however many attempts it took).
    pub calls: u64,
    /// Logical calls that finally failed.
    pub failed_calls: u64,
    /// Attempts repeated after a retryable error.
    pub retries: u64,
    /// Error responses by API code (`Throttling.User`, `Transport`, …).
    pub errors: BTreeMap<String, u64>,
    /// Sum of request latencies, milliseconds.
    pub latency_ms_total: f64,
    /// Slowest request, milliseconds.
    pub latency_ms_max: f64,
    /// Time spent waiting for the client-side rate limiter, milliseconds.
    pub rate_limit_wait_ms_total: f64,
}

impl ActionStats {
    /// Mean request latency in milliseconds (0 when there were none).
    pub fn latency_ms_mean(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.latency_ms_total / self.requests as f64
        }
    }
}

/// A copy of all statistics, by action.
pub type MetricsSnapshot = BTreeMap<String, ActionStats>;

/// Thread-safe recorder shared by the client's calls.
#[derive(Debug, Default)]
pub struct CloudMetrics {
    inner: Mutex<MetricsSnapshot>,
}

impl CloudMetrics {
    fn with<R>(&self, action: &str, f: impl FnOnce(&mut ActionStats) -> R) -> R {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(action.to_string()).or_default())
    }

    /// One HTTP request finished after `latency`; `error_code` is set when it failed.
    pub fn record_request(&self, action: &str, latency: Duration, error_code: Option<&str>) {
        let ms = latency.as_secs_f64() * 1000.0;
        self.with(action, |s| {
            s.requests += 1;
            s.latency_ms_total += ms;
            if ms > s.latency_ms_max {
                s.latency_ms_max = ms;
            }
            if let Some(code) = error_code {
                *s.errors.entry(code.to_string()).or_default() += 1;
            }
        });
    }

    /// A retry of `action` is about to happen.
    pub fn record_retry(&self, action: &str) {
        self.with(action, |s| s.retries += 1);
    }

    /// The client rate limiter delayed a request of `action`.
    pub fn record_rate_limit_wait(&self, action: &str, waited: Duration) {
        self.with(action, |s| {
            s.rate_limit_wait_ms_total += waited.as_secs_f64() * 1000.0
        });
    }

    /// A logical call of `action` ended.
    pub fn record_call(&self, action: &str, ok: bool) {
        self.with(action, |s| {
            s.calls += 1;
            if !ok {
                s.failed_calls += 1;
            }
        });
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_requests_errors_and_calls() {
        let m = CloudMetrics::default();
        m.record_request("A", Duration::from_millis(10), Some("Throttling.User"));
        m.record_retry("A");
        m.record_request("A", Duration::from_millis(30), None);
        m.record_call("A", true);
        let s = &m.snapshot()["A"];
        assert_eq!(
            (s.requests, s.calls, s.failed_calls, s.retries),
            (2, 1, 0, 1)
        );
        assert_eq!(s.errors["Throttling.User"], 1);
        assert!((s.latency_ms_mean() - 20.0).abs() < 0.5);
        assert!(s.latency_ms_max >= 29.0);
    }
}
