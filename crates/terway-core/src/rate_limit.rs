//! Per-OpenAPI-action client rate limits (reference §5.1): a token bucket of `N` requests per minute
//! with burst `N`, overridable per action through `eni_conf.rate_limit`.

use std::collections::BTreeMap;

/// Requests per minute for actions that have no entry of their own.
pub const DEFAULT_PER_MINUTE: u32 = 500;

/// Terway's built-in per-minute limits, action → N.
pub fn default_rate_limits() -> BTreeMap<&'static str, u32> {
    BTreeMap::from([
        ("CreateNetworkInterface", 500),
        ("AttachNetworkInterface", 500),
        ("DeleteNetworkInterface", 500),
        ("DescribeNetworkInterfaces", 800),
        ("DescribeNetworkInterfaceAttribute", 2000),
        ("DetachNetworkInterface", 400),
        ("AssignPrivateIpAddresses", 400),
        ("UnassignPrivateIpAddresses", 400),
        ("AssignIpv6Addresses", 400),
        ("UnassignIpv6Addresses", 400),
        ("DescribeInstanceTypes", 400),
        ("DescribeVSwitches", 300),
    ])
}

/// A token bucket setting: `qps` refill per second and `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second (N / 60).
    pub qps: f64,
    /// Bucket size (N).
    pub burst: u32,
}

/// The limit for `action`: the override if given, else the built-in entry, else 500/min.
pub fn rate_limit_for(overrides: &BTreeMap<String, u32>, action: &str) -> RateLimit {
    let per_minute = overrides
        .get(action)
        .copied()
        .or_else(|| default_rate_limits().get(action).copied())
        .unwrap_or(DEFAULT_PER_MINUTE);
    RateLimit {
        qps: f64::from(per_minute) / 60.0,
        burst: per_minute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let none = BTreeMap::new();
        assert_eq!(
            rate_limit_for(&none, "DescribeNetworkInterfaces").burst,
            800
        );
        assert_eq!(rate_limit_for(&none, "DescribeVSwitches").burst, 300);
        assert_eq!(rate_limit_for(&none, "Whatever").burst, 500);
        let ov = BTreeMap::from([("DescribeVSwitches".to_string(), 60)]);
        let l = rate_limit_for(&ov, "DescribeVSwitches");
        assert_eq!((l.qps, l.burst), (1.0, 60));
    }
}
