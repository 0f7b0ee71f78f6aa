//! Leader election on a coordination.k8s.io/v1 Lease, with the semantics of client-go's
//! `leaderelection` so a mixed fleet behaves predictably: a holder renews every `retry_period`; a
//! candidate takes the Lease over once its record has not changed for `lease_duration` *as observed
//! by the candidate's own clock* (clocks of different machines are never compared); a leader that
//! cannot renew within `renew_deadline` stops leading; a leader shutting down releases the Lease so
//! the next one does not wait out the duration. Every write is a replace with the resourceVersion read,
//! so two candidates can never both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How the Lease is contended.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This candidate's identity (unique per process).
    pub identity: String,
    /// How long a record stands without renewal before others may take it.
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s duration, 10 s renew deadline, 2 s retry period.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Refuse timings that would let two leaders overlap or a leader flap.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "renew deadline {:?} must be shorter than the lease duration {:?}, or a leader that lost the Lease could still be leading when another takes it",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "retry period {:?} must be shorter than the renew deadline {:?}",
                self.retry_period, self.renew_deadline
            ));
        }
        if self.identity.is_empty() {
            return Err("the leader-election identity is empty".into());
        }
        Ok(())
    }
}

/// The parts of a Lease record that tell whether its holder is still alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `holderIdentity` (empty: released).
    pub holder: String,
    /// `renewTime` as written by the holder (compared for change only, never with our clock).
    pub renew_time: Option<Timestamp>,
    /// `leaseTransitions`.
    pub transitions: i32,
}

impl Record {
    /// The record of a Lease object.
    pub fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What one attempt should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it, held by us.
    Create,
    /// Take the Lease over (free, released or expired); `transitions` is the new count.
    Acquire {
        /// `leaseTransitions` to write.
        transitions: i32,
    },
    /// We hold it: write a new `renewTime`.
    Renew,
    /// Someone else holds a live record.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// Decide from the current record (if any), who we are, and how long that record has stood unchanged
/// by our own clock.
pub fn decide(
    current: Option<&Record>,
    me: &str,
    unchanged_for: Duration,
    cfg: &LeaseConfig,
) -> Step {
    let Some(rec) = current else {
        return Step::Create;
    };
    if rec.holder == me {
        return Step::Renew;
    }
    if rec.holder.is_empty() || unchanged_for >= cfg.lease_duration {
        return Step::Acquire {
            transitions: rec.transitions + 1,
        };
    }
    Step::Follow {
        holder: rec.holder.clone(),
    }
}

/// The spec we write when holding the Lease.
fn held_spec(cfg: &LeaseConfig, acquire: Option<Timestamp>, transitions: i32) -> LeaseSpec {
    let now = Timestamp::now();
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(acquire.unwrap_or(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// A candidate for the Lease.
pub struct LeaderElection {
    api: Api<Lease>,
    cfg: LeaseConfig,
    metrics: Metrics,
    /// The record last read and when it last changed by our clock.
    observed: Option<(Record, Instant)>,
    /// When we last renewed successfully while leading.
    renewed_at: Option<Instant>,
}

/// Why the candidate stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Leading, but no renewal succeeded within the renew deadline.
    #[error("lost the Lease {namespace}/{name}: no renewal succeeded for {deadline:?} (last error: {last}); stopping so that another replica leads")]
    Lost {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The renew deadline.
        deadline: Duration,
        /// The last failure.
        last: String,
    },
}

impl LeaderElection {
    /// A candidate using `client` in the Lease's namespace.
    pub fn new(client: kube::Client, cfg: LeaseConfig, metrics: Metrics) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            metrics,
            observed: None,
            renewed_at: None,
        }
    }

    /// Contend until `stop` flips to true. `leading` is set while we hold the Lease. On stop, a held
    /// Lease is released. Returns an error when leadership was lost (the caller must stop reconciling).
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), LeaderError> {
        loop {
            if *stop.borrow() {
                break;
            }
            match self.attempt().await {
                Ok(true) => {
                    self.renewed_at = Some(Instant::now());
                    if !*leading.borrow() {
                        tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became the leader");
                        self.metrics.leader_acquired();
                        leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    if *leading.borrow() {
                        // Someone else holds it now: we must not reconcile a moment longer.
                        leading.send_replace(false);
                        self.metrics.set_leading(false);
                        return Err(self.lost("another candidate holds the Lease".into()));
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "leader election attempt failed");
                    if *leading.borrow()
                        && self
                            .renewed_at
                            .is_some_and(|t| t.elapsed() >= self.cfg.renew_deadline)
                    {
                        leading.send_replace(false);
                        self.metrics.set_leading(false);
                        return Err(self.lost(e));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
                _ = stop.changed() => {}
            }
        }
        if *leading.borrow() {
            self.release().await;
            leading.send_replace(false);
            self.metrics.set_leading(false);
        }
        Ok(())
    }

    fn lost(&self, last: String) -> LeaderError {
        LeaderError::Lost {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            deadline: self.cfg.renew_deadline,
            last,
        }
    }

    /// One observe → decide → apply round; `Ok(true)` when we hold the Lease afterwards.
    async fn attempt(&mut self) -> Result<bool, String> {
        let current = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| format!("get Lease: {e}"))?;
        let record = current.as_ref().map(Record::of);
        let unchanged_for = match (&record, &self.observed) {
            (Some(r), Some((seen, since))) if r == seen => since.elapsed(),
            _ => Duration::ZERO,
        };
        if let Some(r) = &record {
            if self.observed.as_ref().is_none_or(|(seen, _)| seen != r) {
                self.observed = Some((r.clone(), Instant::now()));
            }
        }
        let step = decide(
            record.as_ref(),
            &self.cfg.identity,
            unchanged_for,
            &self.cfg,
        );
        let pp = PostParams::default();
        match (step, current) {
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(held_spec(&self.cfg, None, 0)),
                };
                self.api
                    .create(&pp, &lease)
                    .await
                    .map(|_| true)
                    .map_err(|e| format!("create Lease: {e}"))
            }
            (Step::Acquire { transitions }, Some(mut lease)) => {
                let prior = Record::of(&lease).holder;
                lease.spec = Some(held_spec(&self.cfg, None, transitions));
                self.replace(lease).await?;
                tracing::info!(lease = %self.cfg.name, previous = %prior, "took the Lease over");
                Ok(true)
            }
            (Step::Renew, Some(mut lease)) => {
                let spec = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(held_spec(
                    &self.cfg,
                    spec.acquire_time.map(|t| t.0),
                    spec.lease_transitions.unwrap_or(0),
                ));
                self.replace(lease).await.map(|_| true)
            }
            (Step::Follow { holder }, _) => {
                tracing::debug!(lease = %self.cfg.name, %holder, "following");
                Ok(false)
            }
            (_, None) => Err("the Lease vanished between read and write".into()),
        }
    }

    async fn replace(&self, lease: Lease) -> Result<(), String> {
        // `lease` carries the resourceVersion read: a concurrent writer makes this a 409.
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
            .map_err(|e| format!("update Lease: {e}"))
    }

    /// Give the Lease up (holder cleared, duration 1 s) so a follower takes over at its next try.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        if Record::of(&lease).holder != self.cfg.identity {
            return;
        }
        let mut spec = lease.spec.clone().unwrap_or_default();
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self.replace(lease).await {
            Ok(()) => tracing::info!(lease = %self.cfg.name, "released the Lease"),
            Err(e) => {
                tracing::warn!(lease = %self.cfg.name, error = %e, "could not release the Lease; the next leader waits out its duration")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaseConfig {
        LeaseConfig::new("l", "ns", "me")
    }

    fn rec(holder: &str, transitions: i32) -> Record {
        Record {
            holder: holder.into(),
            renew_time: Some(Timestamp::UNIX_EPOCH),
            transitions,
        }
    }

    #[test]
    fn no_lease_is_created_and_our_own_is_renewed() {
        assert_eq!(decide(None, "me", Duration::ZERO, &cfg()), Step::Create);
        assert_eq!(
            decide(Some(&rec("me", 3)), "me", Duration::from_secs(60), &cfg()),
            Step::Renew
        );
    }

    #[test]
    fn a_live_holder_is_followed_until_its_record_stood_for_the_duration() {
        let other = rec("other", 2);
        assert_eq!(
            decide(Some(&other), "me", Duration::from_secs(14), &cfg()),
            Step::Follow {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&other), "me", Duration::from_secs(15), &cfg()),
            Step::Acquire { transitions: 3 }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        assert_eq!(
            decide(Some(&rec("", 4)), "me", Duration::ZERO, &cfg()),
            Step::Acquire { transitions: 5 }
        );
    }

    #[test]
    fn timings_that_could_overlap_two_leaders_are_refused() {
        let mut c = cfg();
        assert!(c.validate().is_ok());
        c.renew_deadline = c.lease_duration;
        assert!(c
            .validate()
            .unwrap_err()
            .contains("shorter than the lease duration"));
        let mut c = cfg();
        c.retry_period = c.renew_deadline;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.identity.clear();
        assert!(c.validate().is_err());
    }
}
