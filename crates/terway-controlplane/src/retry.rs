//! The controllers' one error policy: consecutive failures counted per object, and the backoff they
//! give before the object is tried again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Retry after an error starts here and doubles per consecutive failure of the object…
pub const ERROR_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// …up to this.
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(120);

/// The delay before retrying an object that failed `n` times in a row (n ≥ 1).
pub fn error_backoff(n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    (ERROR_BACKOFF_MIN * factor).min(ERROR_BACKOFF_MAX)
}

/// Consecutive failures per object key.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// One more failure of `key`; returns how many in a row.
    pub fn record(&self, key: &str) -> u32 {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// `key` succeeded: its count starts over.
    pub fn clear(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_and_caps() {
        assert_eq!(error_backoff(1), Duration::from_secs(1));
        assert_eq!(error_backoff(2), Duration::from_secs(2));
        assert_eq!(error_backoff(5), Duration::from_secs(16));
        assert_eq!(error_backoff(40), ERROR_BACKOFF_MAX);
    }

    #[test]
    fn failures_count_in_a_row_and_start_over_on_success() {
        let f = Failures::default();
        assert_eq!((f.record("a"), f.record("a"), f.record("b")), (1, 2, 1));
        f.clear("a");
        assert_eq!(f.record("a"), 1);
    }
}
