//! Terway's named backoff table (`pkg/backoff/backoff.go`) and the retry schedule it produces.
//!
//! Semantics follow the Kubernetes `wait.Backoff` Terway uses: `steps` is the number of attempts,
//! each wait is `duration` plus up to `jitter × duration` of random extra, `duration` grows by `factor`
//! after every wait and never exceeds `cap` (when set). `initial_delay` is slept once before the first
//! attempt (the wait_* entries use it to give the cloud time to act).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;

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

/// One backoff schedule. Durations are milliseconds in configuration files.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    /// Sleep before the first attempt.
    #[serde(rename = "initial_delay_ms", with = "millis")]
    pub initial_delay: Duration,
    /// First wait between attempts.
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// Growth of the wait after each retry.
    pub factor: f64,
    /// Random extra wait, as a fraction of the wait (0 = none).
    pub jitter: f64,
    /// Number of attempts (≥ 1).
    pub steps: u32,
    /// Upper bound of the wait before jitter; zero = unbounded.
    #[serde(rename = "cap_ms", with = "millis", default)]
    pub cap: Duration,
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn entry(
    initial: u64,
    duration: u64,
    factor: f64,
    jitter: f64,
    steps: u32,
    cap: u64,
) -> Backoff {
    Backoff {
        initial_delay: ms(initial),
        duration: ms(duration),
        factor,
        jitter,
        steps,
        cap: ms(cap),
    }
}

/// Terway's built-in table (§4.5 of the reference, kept in terway-core), plus the metadata client's schedule.
pub fn default_table() -> BTreeMap<String, Backoff> {
    let mut table: BTreeMap<String, Backoff> = terway_core::backoff::default_backoffs()
        .into_iter()
        .map(|(name, b)| (name.to_string(), Backoff::from(b)))
        .collect();
    table.insert(METADATA.to_string(), entry(0, 500, 1.2, 0.1, 4, 0));
    table
}

impl From<terway_core::Backoff> for Backoff {
    fn from(b: terway_core::Backoff) -> Self {
        Backoff {
            initial_delay: b.initial_delay,
            duration: b.duration,
            factor: b.factor,
            jitter: b.jitter,
            steps: b.steps,
            cap: b.cap.unwrap_or(Duration::ZERO),
        }
    }
}

/// The table with `backoff_override` entries applied; unknown names fall back to the default entry.
#[derive(Debug, Clone)]
pub struct BackoffTable {
    entries: BTreeMap<String, Backoff>,
}

impl BackoffTable {
    /// Terway's defaults overridden by `overrides` (whole entries replace, as in Terway).
    pub fn new(overrides: &BTreeMap<String, Backoff>) -> Self {
        let mut entries = default_table();
        for (k, v) in overrides {
            entries.insert(k.clone(), *v);
        }
        Self { entries }
    }

    /// The schedule named `name`, or the default one.
    pub fn get(&self, name: &str) -> Backoff {
        self.entries
            .get(name)
            .or_else(|| self.entries.get(DEFAULT))
            .copied()
            .unwrap_or(entry(0, 2_000, 1.5, 0.3, 6, 0))
    }
}

impl Default for BackoffTable {
    fn default() -> Self {
        Self::new(&BTreeMap::new())
    }
}

impl Backoff {
    /// The waits between attempts: `steps - 1` of them.
    pub fn delays(&self) -> Delays {
        Delays {
            next: self.duration,
            remaining: self.steps.saturating_sub(1),
            spec: *self,
        }
    }

    /// Upper bound of the total time the waits can take (jitter at its maximum), initial delay
    /// included — used to size test timeouts and logs.
    pub fn max_total(&self) -> Duration {
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
        let mut base = self.next;
        if !self.spec.cap.is_zero() && base > self.spec.cap {
            base = self.spec.cap;
        }
        let grown = base.mul_f64(self.spec.factor.max(0.0));
        self.next = if !self.spec.cap.is_zero() && grown > self.spec.cap {
            self.spec.cap
        } else {
            grown
        };
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

    #[test]
    fn steps_are_attempts_and_waits_grow_by_factor() {
        let b = entry(0, 100, 2.0, 0.0, 4, 0);
        let waits: Vec<_> = b.delays().collect();
        assert_eq!(waits, vec![ms(100), ms(200), ms(400)]);
        assert_eq!(entry(0, 100, 2.0, 0.0, 1, 0).delays().count(), 0);
        assert_eq!(entry(0, 100, 2.0, 0.0, 0, 0).delays().count(), 0);
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
    fn overrides_replace_entries_and_unknown_names_use_default() {
        let mut o = BTreeMap::new();
        o.insert(ENI_CREATE.to_string(), entry(0, 10, 1.0, 0.0, 9, 0));
        let t = BackoffTable::new(&o);
        assert_eq!(t.get(ENI_CREATE).steps, 9);
        assert_eq!(t.get("no_such_entry"), t.get(DEFAULT));
        assert_eq!(t.get(ENI_OPS).duration, ms(5_000));
    }

    #[test]
    fn config_form_is_milliseconds() {
        let b: Backoff = serde_json::from_str(
            r#"{"initial_delay_ms":5,"duration_ms":20,"factor":1.5,"jitter":0.1,"steps":3}"#,
        )
        .unwrap();
        assert_eq!(b, entry(5, 20, 1.5, 0.1, 3, 0));
    }
}
