//! Fault injection: per-action error rates (before the call takes effect, or after it committed so the
//! caller sees an error for something that happened), extra latency and Describe lag. Set at start
//! from the configuration and at runtime through `POST /_emulator/faults` or
//! [`crate::RunningEmulator::set_faults`]; every fault that fires is recorded.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Key in the per-action maps that applies to every action without an own entry.
pub const ALL_ACTIONS: &str = "*";

/// What can go wrong, per action name (or [`ALL_ACTIONS`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability (0..=1) that a call fails with `InternalError` 500 / `ServiceUnavailable` 503
    /// before it has any effect.
    pub error_rate: BTreeMap<String, f64>,
    /// Probability that a *mutating* call takes effect but still answers `InternalError` 500: the
    /// case ClientToken idempotency exists for.
    pub error_after_commit_rate: BTreeMap<String, f64>,
    /// Extra latency per call in milliseconds.
    pub extra_latency_ms: BTreeMap<String, u64>,
    /// Describe* calls answer from a snapshot up to this many milliseconds old (eventual consistency).
    pub describe_lag_ms: u64,
    /// The metadata service answers from a snapshot up to this many milliseconds old (new ENIs and
    /// addresses show up late, as Terway's metadata polling expects).
    pub metadata_lag_ms: u64,
    /// Probability (0..=1) that an attach fails in the cloud: the ENI goes from `Attaching` back to
    /// `Available` (how the real API reports a failed attach) and the fabric is never told.
    pub attach_failure_rate: f64,
}

/// A fault that fired.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FiredFault {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Action.
    pub action: String,
    /// Request id of the failed call.
    pub request_id: String,
    /// `error`, `error_after_commit`, `latency`.
    pub kind: String,
    /// Code answered (or latency in ms).
    pub detail: String,
}

impl FaultConfig {
    fn lookup<T: Copy>(map: &BTreeMap<String, T>, action: &str) -> Option<T> {
        map.get(action).or_else(|| map.get(ALL_ACTIONS)).copied()
    }

    /// Extra latency for `action`, if any.
    pub fn latency_for(&self, action: &str) -> Option<u64> {
        Self::lookup(&self.extra_latency_ms, action).filter(|ms| *ms > 0)
    }

    /// Roll the dice for a pre-execution error.
    pub fn roll_error(&self, action: &str) -> Option<ApiError> {
        let rate = Self::lookup(&self.error_rate, action)?;
        let mut rng = rand::rng();
        if rate > 0.0 && rng.random_bool(rate.clamp(0.0, 1.0)) {
            if rng.random_bool(0.5) {
                Some(ApiError::internal(
                    "The request processing has failed due to some unknown error.",
                ))
            } else {
                Some(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "The request has failed due to a temporary failure of the server.",
                ))
            }
        } else {
            None
        }
    }

    /// Roll the dice for an error after a mutating call committed.
    pub fn roll_after_commit(&self, action: &str) -> Option<ApiError> {
        let rate = Self::lookup(&self.error_after_commit_rate, action)?;
        if rate > 0.0 && rand::rng().random_bool(rate.clamp(0.0, 1.0)) {
            Some(ApiError::internal(
                "The request processing has failed due to some unknown error.",
            ))
        } else {
            None
        }
    }
}
