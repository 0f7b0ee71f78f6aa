//! Terway's named backoff table (`pkg/backoff/backoff.go`) and the retry schedule it produces.
//!
//! Semantics follow the Kubernetes `wait.Backoff` Terway uses: `steps` is the number of attempts,
//! each wait is `duration` plus up to `jitter × duration` of random extra, `duration` grows by `factor`
//! after every wait and never exceeds `cap` (when set). `initial_delay` is slept once before the first
//! attempt (the wait_* entries use it to give the cloud time to act).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use terway_core::backoff::{apply_overrides, backoff_for};

pub use terway_core::backoff::{Backoff, BackoffOverride};

/// Default entry (`""` in Terway's table).
pub const DEFAULT: &str = "";
/// CreateNetworkInterface.
pub const ENI_CREATE: &str = "eni_create";
/// Attach/Detach/Delete.
pub const ENI_OPS: &str = "eni_ops";
/// Releasing ENIs in the pool.
pub const ENI_RELEASE: &str = "eni_release";
/// Polling until a deleted ENI is gone.
pub const ENI_DELETE_CONFIRM: &str = "eni_delete_confirm";
/// Assign/Unassign of IPv4/IPv6 addresses.
pub const ENI_IP_OPS: &str = "eni_ip_ops";
/// Polling until removed IPs disappear.
pub const WAIT_ENI_IP_REMOVED: &str = "wait_eni_ip_removed";
/// Polling an ENI until it reaches a status.
pub const WAIT_ENI_STATUS: &str = "wait_eni_status";
/// Polling a member ENI until it reaches a status.
pub const WAIT_MEMBER_ENI_STATUS: &str = "wait_member_eni_status";
/// Waiting for STS credentials from the metadata service.
pub const WAIT_STS_TOKEN_READY: &str = "wait_sts_token_ready";
/// Metadata service requests (not in Terway's table; its metadata client hard-codes these values).
pub const METADATA: &str = "metadata";

/// Terway's built-in table (§4.5 of the reference, kept in terway-core), plus the metadata client's schedule.
pub fn default_table() -> BTreeMap<String, Backoff> {
    let mut table: BTreeMap<String, Backoff> = terway_core::backoff::default_backoffs()
        .into_iter()
        .map(|(name, b)| (name.to_string(), b))
        .collect();
    table.insert(METADATA.to_string(), Backoff::new(0, 500, 1.2, 0.1, 4));
    table
}

/// The table with `backoff_override` entries applied; unknown names fall back to the default entry.
#[derive(Debug, Clone)]
pub struct BackoffTable {
    entries: BTreeMap<String, Backoff>,
}

impl BackoffTable {
    /// The defaults with `overrides` applied by terway-core's rule ([`apply_overrides`]: field by
    /// field, a full override replaces the entry).
    pub fn new(overrides: &BTreeMap<String, BackoffOverride>) -> Self {
        let mut entries = default_table();
        apply_overrides(&mut entries, overrides);
        Self { entries }
    }

    /// The schedule named `name`, or the default one.
    pub fn get(&self, name: &str) -> Backoff {
        backoff_for(&self.entries, name)
    }
}

impl Default for BackoffTable {
    fn default() -> Self {
        Self::new(&BTreeMap::new())
    }
}

/// The retry schedule of a [`Backoff`]; a trait because the type lives in terway-core, which has no
/// randomness or clock.
pub trait BackoffExt {
    /// The waits between attempts: `steps - 1` of them.
    fn delays(&self) -> Delays;

    /// Upper bound of the total time the waits can take (jitter at its maximum), initial delay
    /// included — used to size test timeouts and logs.
    fn max_total(&self) -> Duration;
}

impl BackoffExt for Backoff {
    fn delays(&self) -> Delays {
        Delays {
            next: self.duration,
            remaining: self.steps.saturating_sub(1),
            spec: *self,
        }
    }

    fn max_total(&self) -> Duration {
        let mut total = self.initial_delay;
        let mut d = self.delays();
        while let Some(wait) = d.next_max() {
            total += wait;
        }
        total
    }
}

/// Iterator over the waits of one [`Backoff`].
#[derive(Debug, Clone)]
pub struct Delays {
    next: Duration,
    remaining: u32,
    spec: Backoff,
}

impl Delays {
    fn step(&mut self, jitter_fraction: f64) -> Option<Duration> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let cap = self.spec.cap.unwrap_or(Duration::MAX);
        let base = self.next.min(cap);
        self.next = base.mul_f64(self.spec.factor.max(0.0)).min(cap);
        let extra = if self.spec.jitter > 0.0 {
            base.mul_f64(self.spec.jitter * jitter_fraction)
        } else {
            Duration::ZERO
        };
        Some(base + extra)
    }

    fn next_max(&mut self) -> Option<Duration> {
        self.step(1.0)
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let r: f64 = rand::rng().random();
        self.step(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steps_are_attempts_and_waits_grow_by_factor() {
        let b = Backoff::new(0, 100, 2.0, 0.0, 4);
        let waits: Vec<_> = b.delays().collect();
        assert_eq!(waits, vec![ms(100), ms(200), ms(400)]);
        assert_eq!(Backoff::new(0, 100, 2.0, 0.0, 1).delays().count(), 0);
        assert_eq!(Backoff::new(0, 100, 2.0, 0.0, 0).delays().count(), 0);
    }

    #[test]
    fn cap_bounds_the_wait_and_jitter_only_adds() {
        let table = BackoffTable::default();
        let confirm = table.get(ENI_DELETE_CONFIRM);
        let waits: Vec<_> = confirm.delays().collect();
        assert_eq!(waits, vec![ms(2_000), ms(3_000), ms(4_000)]);
        assert_eq!(confirm.max_total(), ms(1_000 + 2_000 + 3_000 + 4_000));
        let ip = table.get(ENI_IP_OPS);
        for w in ip.delays() {
            assert!(w >= ms(5_000) && w <= ms(11_500), "{w:?}");
        }
    }

    #[test]
    fn overrides_apply_field_by_field_and_unknown_names_use_default() {
        let mut o = BTreeMap::new();
        o.insert(
            ENI_CREATE.to_string(),
            Backoff::new(0, 10, 1.0, 0.0, 9).into(),
        );
        o.insert(
            METADATA.to_string(),
            BackoffOverride {
                steps: Some(2),
                ..Default::default()
            },
        );
        let t = BackoffTable::new(&o);
        assert_eq!(t.get(ENI_CREATE), Backoff::new(0, 10, 1.0, 0.0, 9));
        assert_eq!(t.get(METADATA).steps, 2);
        assert_eq!(t.get(METADATA).duration, ms(500));
        assert_eq!(t.get("no_such_entry"), t.get(DEFAULT));
        assert_eq!(t.get(ENI_OPS).duration, ms(5_000));
    }

    #[test]
    fn config_form_is_terways() {
        let o: BTreeMap<String, BackoffOverride> = serde_json::from_str(
            r#"{"eni_ops":{"InitialDelay":"5ms","Duration":"20ms","Steps":3}}"#,
        )
        .unwrap();
        let b = BackoffTable::new(&o).get(ENI_OPS);
        assert_eq!((b.initial_delay, b.duration, b.steps), (ms(5), ms(20), 3));
        assert_eq!(b.factor, 2.0);
    }
}
