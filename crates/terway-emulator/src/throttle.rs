//! Server-side flow control: one token bucket per action, `N` requests per minute with a burst of
//! `N`, Terway's client defaults unless configured otherwise. An empty bucket answers
//! `Throttling.User`, as the real gateway does.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::error::ApiError;

/// Requests per minute for `action` by Terway's defaults (reference §5.1).
pub fn default_per_minute(action: &str) -> u32 {
    match action {
        "CreateNetworkInterface" | "AttachNetworkInterface" | "DeleteNetworkInterface" => 500,
        "DescribeNetworkInterfaces" => 800,
        "DescribeNetworkInterfaceAttribute" => 2000,
        "DetachNetworkInterface" => 400,
        "AssignPrivateIpAddresses"
        | "UnassignPrivateIpAddresses"
        | "AssignIpv6Addresses"
        | "UnassignIpv6Addresses" => 400,
        "DescribeInstanceTypes" => 400,
        "DescribeVSwitches" => 300,
        _ => 500,
    }
}

struct Bucket {
    tokens: f64,
    per_minute: u32,
    last: Instant,
}

/// Per-action token buckets.
pub struct Throttle {
    enabled: bool,
    overrides: BTreeMap<String, u32>,
    buckets: HashMap<String, Bucket>,
}

impl Throttle {
    /// Buckets with per-minute `overrides` on top of the defaults.
    pub fn new(enabled: bool, overrides: BTreeMap<String, u32>) -> Self {
        Self {
            enabled,
            overrides,
            buckets: HashMap::new(),
        }
    }

    /// Replace the limits (runtime reconfiguration); buckets restart full.
    pub fn reconfigure(&mut self, enabled: bool, overrides: BTreeMap<String, u32>) {
        self.enabled = enabled;
        self.overrides = overrides;
        self.buckets.clear();
    }

    fn limit(&self, action: &str) -> u32 {
        self.overrides
            .get(action)
            .copied()
            .unwrap_or_else(|| default_per_minute(action))
    }

    /// Take one token for `action` or answer `Throttling.User`.
    pub fn take(&mut self, action: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let per_minute = self.limit(action);
        let now = Instant::now();
        let bucket = self
            .buckets
            .entry(action.to_string())
            .or_insert_with(|| Bucket {
                tokens: f64::from(per_minute),
                per_minute,
                last: now,
            });
        let refill =
            now.duration_since(bucket.last).as_secs_f64() * f64::from(bucket.per_minute) / 60.0;
        bucket.tokens = (bucket.tokens + refill).min(f64::from(bucket.per_minute));
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(ApiError::new(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_throttles() {
        let mut t = Throttle::new(true, BTreeMap::from([("X".to_string(), 3)]));
        for _ in 0..3 {
            assert!(t.take("X").is_ok());
        }
        let err = t
            .take("X")
            .expect_err("fourth call within the burst window must be throttled");
        assert_eq!(err.code, "Throttling.User");
        assert!(t.take("Other").is_ok(), "buckets are per action");
    }

    #[test]
    fn disabled_never_throttles() {
        let mut t = Throttle::new(false, BTreeMap::from([("X".to_string(), 1)]));
        for _ in 0..10 {
            assert!(t.take("X").is_ok());
        }
    }
}
