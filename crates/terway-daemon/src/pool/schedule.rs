//! The pool's timing, pure: how long the manager sleeps, when one of its rounds may release and reclaim,
//! and when to look again whether an attaching ENI is ready. The pool simulator (`terway-lab simulate`)
//! runs these same functions in virtual time, so what it predicts is what the daemon does.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::PoolConfig;

/// How long the manager sleeps when nothing wakes it: briefly while allocations wait (cooldowns may
/// end and free a slot), else up to the sync period, at most a second.
pub fn manager_tick(cfg: &PoolConfig, waiting: bool) -> Duration {
    if waiting {
        Duration::from_millis(200)
    } else {
        cfg.sync_period.min(Duration::from_secs(1))
    }
}

/// What one manager round may do besides growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Trim idle slots above the high watermark (once per sync period).
    pub allow_release: bool,
    /// Extra idle slots idle reclaim may release in this round.
    pub reclaim_extra: u32,
}

/// The manager's clock for periodic work, on a monotonic millisecond scale the caller chooses.
#[derive(Debug, Clone, Copy)]
pub struct RoundClock {
    last_sync_ms: u64,
    last_reclaim_ms: u64,
}

impl RoundClock {
    /// A clock whose periods start at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        RoundClock {
            last_sync_ms: now_ms,
            last_reclaim_ms: now_ms,
        }
    }

    /// The round starting at `now_ms`, when the pool has seen no allocation or release for `quiet_ms`.
    pub fn next(&mut self, cfg: &PoolConfig, now_ms: u64, quiet_ms: u64) -> Round {
        let allow_release =
            now_ms.saturating_sub(self.last_sync_ms) >= cfg.sync_period.as_millis() as u64;
        if allow_release {
            self.last_sync_ms = now_ms;
        }
        let mut reclaim_extra = 0;
        if let Some(after) = cfg.idle_reclaim_after {
            if allow_release
                && quiet_ms >= after.as_millis() as u64
                && now_ms.saturating_sub(self.last_reclaim_ms)
                    >= cfg.idle_reclaim_interval.as_millis() as u64
            {
                reclaim_extra = cfg.idle_reclaim_batch;
                self.last_reclaim_ms = now_ms;
            }
        }
        Round {
            allow_release,
            reclaim_extra,
        }
    }
}

/// How many recent attach durations the first look at a new ENI is based on.
const ATTACH_HISTORY: usize = 8;
/// Polls of an attaching ENI start this far apart and double up to [`POLL_STEP_MAX`].
const POLL_STEP_MIN: Duration = Duration::from_millis(50);
/// The longest gap between two looks at an attaching ENI: an attach is noticed at most this late.
const POLL_STEP_MAX: Duration = Duration::from_millis(200);

/// Recent ENI attach durations (attach accepted → InUse seen), which say when a new ENI is first worth a
/// Describe: an attach that never took less than 1.5 s will not be done after 50 ms, so the daemon sleeps
/// most of that time instead of polling through it, then looks every [`POLL_STEP_MAX`] at most.
#[derive(Debug, Clone, Default)]
pub struct AttachTimes {
    recent_ms: VecDeque<u64>,
}

impl AttachTimes {
    /// Remember one observed attach duration.
    pub fn record(&mut self, took: Duration) {
        if self.recent_ms.len() == ATTACH_HISTORY {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(took.as_millis() as u64);
    }

    /// How long to wait after the attach was accepted before the first Describe: three quarters of the
    /// quickest recent attach (none yet: look at once). Not all of it: with few attaches seen, the quickest
    /// is still well above the quickest an attach can be, and a late first look delays pods.
    pub fn first_look(&self) -> Duration {
        let quickest = self.recent_ms.iter().copied().min().unwrap_or(0);
        Duration::from_millis(quickest * 3 / 4)
    }

    /// The wait after the `looks`-th Describe (1 = the first) found the ENI still attaching.
    pub fn next_look(looks: u32) -> Duration {
        let doubled = POLL_STEP_MIN.saturating_mul(1u32 << looks.saturating_sub(1).min(8));
        doubled.min(POLL_STEP_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_release_once_per_sync_period_and_reclaim_only_when_quiet() {
        let cfg = PoolConfig {
            sync_period: Duration::from_secs(5),
            idle_reclaim_after: Some(Duration::from_secs(60)),
            idle_reclaim_interval: Duration::from_secs(10),
            idle_reclaim_batch: 3,
            ..PoolConfig::default()
        };
        let mut c = RoundClock::new(0);
        assert!(!c.next(&cfg, 4_999, 0).allow_release);
        assert_eq!(
            c.next(&cfg, 5_000, 0),
            Round {
                allow_release: true,
                reclaim_extra: 0
            }
        );
        assert!(!c.next(&cfg, 9_000, 0).allow_release);
        // Quiet long enough and the reclaim interval passed: this sync round reclaims.
        assert_eq!(c.next(&cfg, 10_000, 60_000).reclaim_extra, 3);
        // The next sync round is too soon after that reclaim.
        assert_eq!(c.next(&cfg, 15_000, 65_000).reclaim_extra, 0);
        assert_eq!(c.next(&cfg, 20_000, 70_000).reclaim_extra, 3);
    }

    #[test]
    fn attach_polls_skip_the_time_no_attach_has_taken_and_never_lag_more_than_the_max_step() {
        let mut t = AttachTimes::default();
        assert_eq!(t.first_look(), Duration::ZERO);
        t.record(Duration::from_millis(2_000));
        t.record(Duration::from_millis(1_500));
        assert_eq!(t.first_look(), Duration::from_millis(1_125));
        let steps: Vec<u64> = (1..=5)
            .map(|n| AttachTimes::next_look(n).as_millis() as u64)
            .collect();
        assert_eq!(steps, [50, 100, 200, 200, 200]);
        for i in 0..20 {
            t.record(Duration::from_millis(3_000 + i));
        }
        // Only recent attaches count: the quick ones have aged out.
        assert_eq!(t.first_look(), Duration::from_millis(3_012 * 3 / 4));
    }
}
