//! Terway's named backoff settings (reference §4.5) as data, plus the `backoff_override` entries an
//! `eni_conf` may give. The daemon and cloud client look a setting up by name instead of hard-coding
//! retry loops.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;

/// One named backoff: wait `initial_delay`, then retry up to `steps` times, sleeping `duration`
/// multiplied by `factor` after each try, with ±`jitter` randomisation and an optional `cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait before the first try.
    pub initial_delay: Duration,
    /// First sleep between tries.
    pub duration: Duration,
    /// Growth of the sleep after each try (1 = constant).
    pub factor: f64,
    /// Random extra fraction of each sleep (0.3 = up to +30 %).
    pub jitter: f64,
    /// Maximum number of tries.
    pub steps: u32,
    /// Upper bound of a single sleep, if any.
    pub cap: Option<Duration>,
}

impl Backoff {
    /// An uncapped schedule from milliseconds (the unit of Terway's table).
    pub const fn new(
        initial_ms: u64,
        duration_ms: u64,
        factor: f64,
        jitter: f64,
        steps: u32,
    ) -> Self {
        Self {
            initial_delay: Duration::from_millis(initial_ms),
            duration: Duration::from_millis(duration_ms),
            factor,
            jitter,
            steps,
            cap: None,
        }
    }

    /// The sleep before retry number `attempt` (0-based) without jitter, respecting `cap`.
    pub fn delay_for_attempt(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let secs = self.duration.as_secs_f64() * self.factor.powi(exp);
        // Guard against overflow/NaN from huge factors: fall back to the cap or a day.
        let raw = if secs.is_finite() && secs < 86_400.0 {
            Duration::from_secs_f64(secs)
        } else {
            Duration::from_secs(86_400)
        };
        match self.cap {
            Some(cap) if raw > cap => cap,
            _ => raw,
        }
    }
}

/// Name of the fallback entry (Terway's `""` key).
pub const DEFAULT_KEY: &str = "";

/// Terway's built-in table, key → backoff (reference §4.5).
pub fn default_backoffs() -> BTreeMap<&'static str, Backoff> {
    let mut m = BTreeMap::new();
    m.insert(DEFAULT_KEY, Backoff::new(0, 2_000, 1.5, 0.3, 6));
    m.insert("eni_create", Backoff::new(0, 10_000, 2.0, 0.3, 2));
    m.insert("eni_ops", Backoff::new(0, 5_000, 2.0, 0.3, 6));
    m.insert("eni_release", Backoff::new(0, 4_000, 2.0, 0.5, 8));
    let mut confirm = Backoff::new(1_000, 2_000, 1.5, 0.0, 4);
    confirm.cap = Some(Duration::from_secs(4));
    m.insert("eni_delete_confirm", confirm);
    m.insert("eni_ip_ops", Backoff::new(0, 5_000, 1.0, 1.3, 6));
    m.insert(
        "wait_eni_ip_removed",
        Backoff::new(1_000, 2_000, 1.5, 0.5, 4),
    );
    m.insert("wait_eni_status", Backoff::new(3_000, 3_000, 1.5, 0.5, 8));
    m.insert(
        "wait_member_eni_status",
        Backoff::new(2_000, 1_000, 1.5, 0.5, 8),
    );
    m.insert("wait_leni_status", Backoff::new(18_000, 5_000, 1.5, 0.5, 8));
    m.insert(
        "wait_hdeni_status",
        Backoff::new(18_000, 5_000, 1.5, 0.5, 8),
    );
    m.insert(
        "wait_ecs_leni_status",
        Backoff::new(4_000, 3_000, 1.5, 0.5, 8),
    );
    m.insert(
        "wait_ecs_hdeni_status",
        Backoff::new(4_000, 3_000, 1.5, 0.5, 8),
    );
    m.insert(
        "wait_podeni_status",
        Backoff::new(2_000, 1_000, 1.0, 0.3, 100),
    );
    m.insert(
        "wait_networkinterface_status",
        Backoff::new(2_000, 1_000, 1.0, 0.3, 120),
    );
    m.insert(
        "meta_assign_private_ip",
        Backoff::new(0, 1_100, 1.0, 0.2, 10),
    );
    m.insert(
        "meta_unassign_private_ip",
        Backoff::new(0, 1_100, 1.0, 0.2, 10),
    );
    m.insert("wait_sts_token_ready", Backoff::new(0, 1_000, 1.0, 0.2, 60));
    m.insert("wait_node_status", Backoff::new(0, 1_000, 1.0, 0.3, 90));
    m
}

/// One `backoff_override` entry. Field names follow Terway's Go struct (`InitialDelay`, `Duration`,
/// `Factor`, `Jitter`, `Steps`, `Cap`; camelCase and snake_case are accepted too). Durations are Go
/// strings ("5s") or integer nanoseconds as Go marshals them. Fields left out keep the built-in value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffOverride {
    /// Wait before the first try.
    #[serde(
        rename = "InitialDelay",
        alias = "initialDelay",
        alias = "initial_delay",
        default
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<GoDuration>,
    /// First sleep between tries.
    #[serde(
        rename = "Duration",
        alias = "duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<GoDuration>,
    /// Growth factor.
    #[serde(
        rename = "Factor",
        alias = "factor",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub factor: Option<f64>,
    /// Jitter fraction.
    #[serde(
        rename = "Jitter",
        alias = "jitter",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<f64>,
    /// Maximum tries.
    #[serde(
        rename = "Steps",
        alias = "steps",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub steps: Option<u32>,
    /// Upper bound of one sleep.
    #[serde(
        rename = "Cap",
        alias = "cap",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cap: Option<GoDuration>,
}

impl BackoffOverride {
    /// Apply this override on top of `base`.
    pub fn apply(&self, base: Backoff) -> Backoff {
        Backoff {
            initial_delay: self
                .initial_delay
                .map_or(base.initial_delay, Duration::from),
            duration: self.duration.map_or(base.duration, Duration::from),
            factor: self.factor.unwrap_or(base.factor),
            jitter: self.jitter.unwrap_or(base.jitter),
            steps: self.steps.unwrap_or(base.steps),
            cap: match self.cap {
                Some(c) if c.is_zero() => None,
                Some(c) => Some(c.into()),
                None => base.cap,
            },
        }
    }

    /// Check the values, naming `key` in the message.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        let at = |field: &str| format!("eni_conf.backoff_override.{key:?}.{field}");
        if let Some(f) = self.factor {
            if !f.is_finite() || f <= 0.0 {
                return Err(format!(
                    "{}: {f} must be a number greater than 0",
                    at("Factor")
                ));
            }
        }
        if let Some(j) = self.jitter {
            if !j.is_finite() || j < 0.0 {
                return Err(format!(
                    "{}: {j} must be a number of 0 or more",
                    at("Jitter")
                ));
            }
        }
        if self.steps == Some(0) {
            return Err(format!("{}: 0 must be at least 1", at("Steps")));
        }
        Ok(())
    }
}

// Every field set, so applying it replaces the entry whole; "no cap" travels as a zero `Cap`, which
// `apply` reads back as `None`.
impl From<Backoff> for BackoffOverride {
    fn from(b: Backoff) -> Self {
        Self {
            initial_delay: Some(b.initial_delay.into()),
            duration: Some(b.duration.into()),
            factor: Some(b.factor),
            jitter: Some(b.jitter),
            steps: Some(b.steps),
            cap: Some(b.cap.unwrap_or(Duration::ZERO).into()),
        }
    }
}

/// The one override rule: each override is applied field by field over the entry of the same name
/// in `table`, or over the default entry when `table` has none (then it becomes a new entry).
pub fn apply_overrides(
    table: &mut BTreeMap<String, Backoff>,
    overrides: &BTreeMap<String, BackoffOverride>,
) {
    let fallback = backoff_for(table, DEFAULT_KEY);
    for (key, ov) in overrides {
        let base = table.get(key).copied().unwrap_or(fallback);
        table.insert(key.clone(), ov.apply(base));
    }
}

/// The effective table: built-in entries with the overrides applied ([`apply_overrides`]).
pub fn effective_backoffs(
    overrides: &BTreeMap<String, BackoffOverride>,
) -> BTreeMap<String, Backoff> {
    let mut out: BTreeMap<String, Backoff> = default_backoffs()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    apply_overrides(&mut out, overrides);
    out
}

/// Look a backoff up by name in an effective table, falling back to the default entry.
pub fn backoff_for(table: &BTreeMap<String, Backoff>, key: &str) -> Backoff {
    table
        .get(key)
        .or_else(|| table.get(DEFAULT_KEY))
        .copied()
        .unwrap_or_else(|| default_backoffs()[DEFAULT_KEY])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_reference() {
        let t = default_backoffs();
        assert_eq!(t.len(), 19);
        let c = t["eni_create"];
        assert_eq!(
            (c.duration, c.factor, c.jitter, c.steps),
            (Duration::from_secs(10), 2.0, 0.3, 2)
        );
        let d = t["eni_delete_confirm"];
        assert_eq!(d.initial_delay, Duration::from_secs(1));
        assert_eq!(d.cap, Some(Duration::from_secs(4)));
        assert_eq!(d.delay_for_attempt(3), Duration::from_secs(4));
        assert_eq!(t["wait_networkinterface_status"].steps, 120);
        assert_eq!(t[""].delay_for_attempt(1), Duration::from_secs(3));
    }

    #[test]
    fn override_go_and_snake_forms() {
        let go: BTreeMap<String, BackoffOverride> = serde_json::from_str(
            r#"{"eni_create":{"Duration":5000000000,"Steps":5},"custom":{"duration":"1s","factor":1}}"#,
        )
        .unwrap();
        let eff = effective_backoffs(&go);
        assert_eq!(eff["eni_create"].duration, Duration::from_secs(5));
        assert_eq!(eff["eni_create"].steps, 5);
        assert_eq!(eff["eni_create"].factor, 2.0);
        assert_eq!(eff["custom"].duration, Duration::from_secs(1));
        assert_eq!(eff["custom"].steps, 6);
        assert_eq!(backoff_for(&eff, "nope").duration, Duration::from_secs(2));
    }

    #[test]
    fn a_full_override_replaces_the_entry_cap_included() {
        let mut b = Backoff::new(0, 10, 1.0, 0.0, 3);
        let mut o = BTreeMap::new();
        o.insert("eni_delete_confirm".to_string(), BackoffOverride::from(b));
        assert_eq!(effective_backoffs(&o)["eni_delete_confirm"], b);
        b.cap = Some(Duration::from_millis(7));
        o.insert("eni_delete_confirm".to_string(), b.into());
        assert_eq!(effective_backoffs(&o)["eni_delete_confirm"], b);
    }

    #[test]
    fn override_validation_names_key() {
        let ov = BackoffOverride {
            factor: Some(0.0),
            ..Default::default()
        };
        let err = ov.validate("eni_ops").unwrap_err();
        assert!(err.contains("backoff_override.\"eni_ops\".Factor"), "{err}");
        assert!(serde_json::from_str::<BackoffOverride>(r#"{"Stepz":1}"#).is_err());
    }
}
