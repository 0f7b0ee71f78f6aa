//! Client-side per-API token buckets with Terway's defaults (`pkg/aliyun/client/ratelimit.go`):
//! an API allowed N calls a minute gets `QPS = N/60` and `burst = N`. Staying under the cloud's
//! own quota is cheaper than being throttled and backing off.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-minute budget for APIs not listed in [`default_limits`].
pub const DEFAULT_PER_MINUTE: u32 = terway_core::rate_limit::DEFAULT_PER_MINUTE;

/// Terway's default per-minute budgets (the table lives in terway-core, next to `eni_conf.rate_limit`).
pub fn default_limits() -> BTreeMap<String, u32> {
    terway_core::rate_limit::default_rate_limits()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[derive(Debug)]
struct Bucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Self {
        let burst = f64::from(per_minute.max(1));
        Self {
            per_sec: burst / 60.0,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Take one token, possibly going into debt (a reservation, like Go's `rate.Limiter.Wait`):
    /// returns how long the caller must sleep before its token is really available.
    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }
}

/// Token buckets keyed by API action name.
#[derive(Debug)]
pub struct RateLimiter {
    limits: BTreeMap<String, u32>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Terway's defaults with `overrides` (action → calls per minute) applied.
    pub fn new(overrides: &BTreeMap<String, u32>) -> Self {
        let mut limits = default_limits();
        limits.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The per-minute budget of `action`.
    pub fn per_minute(&self, action: &str) -> u32 {
        self.limits
            .get(action)
            .copied()
            .unwrap_or(DEFAULT_PER_MINUTE)
    }

    /// How long a call to `action` made now must wait; the token is taken.
    pub fn reserve(&self, action: &str) -> Duration {
        self.reserve_at(action, Instant::now())
    }

    /// [`RateLimiter::reserve`] at a given instant (the pool simulator runs the limiter in virtual time).
    pub fn reserve_at(&self, action: &str, now: Instant) -> Duration {
        let per_minute = self.per_minute(action);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets
            .entry(action.to_string())
            .or_insert_with(|| Bucket::new(per_minute, now))
            .reserve(now)
    }

    /// Wait for a token of `action`; returns the time waited.
    pub async fn acquire(&self, action: &str) -> Duration {
        let wait = self.reserve(action);
        if !wait.is_zero() {
            if wait >= Duration::from_secs(5) {
                tracing::info!(
                    action,
                    wait_ms = wait.as_millis() as u64,
                    "client rate limiter delays the call"
                );
            }
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_n_per_minute() {
        let t0 = Instant::now();
        let mut b = Bucket::new(60, t0);
        for _ in 0..60 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        // 61st call in the same instant waits one token = 1 s at 60/min.
        let w = b.reserve(t0);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
        // Two seconds later one token of debt is repaid and one more accrued.
        let w = b.reserve(t0 + Duration::from_secs(2));
        assert_eq!(w, Duration::ZERO);
    }

    #[test]
    fn overrides_and_defaults() {
        let mut o = BTreeMap::new();
        o.insert("DescribeVSwitches".to_string(), 6);
        let rl = RateLimiter::new(&o);
        assert_eq!(rl.per_minute("DescribeVSwitches"), 6);
        assert_eq!(rl.per_minute("DescribeNetworkInterfaces"), 800);
        assert_eq!(rl.per_minute("CreateRouteEntry"), DEFAULT_PER_MINUTE);
        for _ in 0..6 {
            assert_eq!(rl.reserve("DescribeVSwitches"), Duration::ZERO);
        }
        assert!(rl.reserve("DescribeVSwitches") > Duration::from_secs(9));
    }
}
