//! Named reconcilers and the one loop that runs them all: each pass observes, plans (a pure function
//! in the reconciler's module) and applies; the runner owns the period, the error policy (log, then
//! requeue sooner with a doubling delay capped at the period), the metrics and the shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::metrics::Metrics;

/// One long-running control loop of the daemon.
pub trait Reconciler: Send + Sync + 'static {
    /// Stable name, used in logs and the `reconciler` metric label.
    fn name(&self) -> &'static str;
    /// Time between successful passes.
    fn period(&self) -> Duration;
    /// One pass: observe → plan → apply. Returns a one-line summary of what changed (empty: nothing).
    fn reconcile(&self) -> BoxFuture<'_, Result<String>>;
}

/// First retry delay after a failed pass; doubled per consecutive failure, capped at the period.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);

/// The delay before the next pass after `failures` consecutive failures (0 = the last pass worked).
pub fn next_delay(period: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return period;
    }
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    RETRY_INITIAL.saturating_mul(factor).min(period)
}

/// Run one pass now, with the same logging and metrics as the loop.
pub async fn run_once(r: &dyn Reconciler, metrics: &Metrics) -> Result<String> {
    let started = Instant::now();
    let res = r.reconcile().await;
    let secs = started.elapsed().as_secs_f64();
    metrics.reconciled(r.name(), res.is_ok(), secs);
    match &res {
        Ok(summary) if !summary.is_empty() => {
            tracing::info!(reconciler = r.name(), %summary, ms = (secs * 1000.0) as u64, "reconciled")
        }
        Ok(_) => tracing::debug!(reconciler = r.name(), "nothing to reconcile"),
        Err(e) => tracing::warn!(reconciler = r.name(), error = %e, "reconcile failed; requeued"),
    }
    res
}

/// Spawn the loop of `r`: the first pass after one period (callers run start-up passes themselves),
/// then every period, sooner after failures; ends when `stop` turns true.
pub fn spawn(
    r: Arc<dyn Reconciler>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let delay = next_delay(r.period(), failures);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                tracing::debug!(reconciler = r.name(), "stopped");
                return;
            }
            match run_once(r.as_ref(), &metrics).await {
                Ok(_) => failures = 0,
                Err(_) => failures = failures.saturating_add(1),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_requeue_sooner_with_a_capped_doubling() {
        let p = Duration::from_secs(15);
        assert_eq!(next_delay(p, 0), p);
        assert_eq!(next_delay(p, 1), Duration::from_secs(1));
        assert_eq!(next_delay(p, 2), Duration::from_secs(2));
        assert_eq!(next_delay(p, 4), Duration::from_secs(8));
        assert_eq!(next_delay(p, 5), p);
        assert_eq!(next_delay(p, 60), p);
    }

    struct Flaky {
        calls: std::sync::atomic::AtomicU32,
    }

    impl Reconciler for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn period(&self) -> Duration {
            Duration::from_millis(20)
        }
        fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n == 0 {
                    Err(crate::error::DaemonError::NotReady(
                        "first pass fails".into(),
                    ))
                } else {
                    Ok(format!("pass {n}"))
                }
            })
        }
    }

    #[tokio::test]
    async fn the_loop_counts_passes_and_stops_when_told() {
        let metrics = Arc::new(Metrics::new());
        let r = Arc::new(Flaky {
            calls: Default::default(),
        });
        let (tx, rx) = watch::channel(false);
        let h = spawn(r.clone(), metrics.clone(), rx);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tx.send(true);
        tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .expect("the loop ends on stop")
            .unwrap();
        let text = metrics.encode();
        assert!(
            text.contains("terwayd_reconciles_total{reconciler=\"flaky\",result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("reconciler=\"flaky\",result=\"ok\""),
            "{text}"
        );
    }
}
