//! The `pod-networking` controller: resolves each PodNetworking's vSwitches (zone, free addresses) and
//! security groups against the cloud and sets `status.status` Ready or Fail with a message, plus an
//! event when the verdict changes. Observe (two Describe calls) → judge (pure, [`verdict`]) → apply
//! (status patch, event) → requeue. A cloud or API failure leaves the status alone: a throttled
//! Describe must not flip a working PodNetworking to Fail.

pub mod verdict;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use terway_apis::events::Note;
use terway_apis::{NetworkingStatus, PodNetworking, PodNetworkingStatus};
use terway_cloud::Cloud;

use crate::error::Error;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::retry::{error_backoff, Failures};
use verdict::{judge, Observed, Verdict};

/// Controller name (metrics, logs, field manager).
pub const NAME: &str = "pod-networking";
/// Event reason when a PodNetworking became Ready.
pub const REASON_SUCCEED: &str = "SyncPodNetworkingSucceed";
/// Event reason when a PodNetworking became Fail.
pub const REASON_FAILED: &str = "SyncPodNetworkingFailed";
/// A Ready PodNetworking is re-checked this often (a vSwitch can run out of addresses or be deleted).
pub const READY_RECHECK: Duration = Duration::from_secs(300);
/// A failed one sooner: the fix is often made in the cloud (a vSwitch created), not in the object.
pub const FAIL_RECHECK: Duration = Duration::from_secs(30);
/// What the reconciler needs.
pub struct Context<C> {
    /// The API server.
    pub client: kube::Client,
    /// The cloud.
    pub cloud: C,
    /// The cluster's VPC.
    pub vpc_id: String,
    /// Event writer.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
    /// Consecutive failures per object, for the error backoff.
    failures: Failures,
}

impl<C: Cloud> Context<C> {
    /// A context for the controller.
    pub fn new(
        client: kube::Client,
        cloud: C,
        vpc_id: String,
        events: Events,
        metrics: Metrics,
    ) -> Self {
        Self {
            client,
            cloud,
            vpc_id,
            events,
            metrics,
            failures: Failures::default(),
        }
    }
}

/// Whether `verdict` differs from what the object's status says (`updateAt` aside).
fn differs(current: Option<&PodNetworkingStatus>, verdict: &Verdict) -> bool {
    match current {
        None => true,
        Some(s) => {
            s.status != Some(verdict.status)
                || s.v_switches != verdict.vswitches
                || s.message != verdict.message
        }
    }
}

/// One reconcile of `pn`.
pub async fn reconcile<C: Cloud>(
    pn: Arc<PodNetworking>,
    ctx: Arc<Context<C>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let name = pn.name_any();
    let result = reconcile_inner(&pn, &ctx).await;
    ctx.metrics
        .reconciled(NAME, result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.failures.clear(&name);
    }
    result
}

async fn reconcile_inner<C: Cloud>(pn: &PodNetworking, ctx: &Context<C>) -> Result<Action, Error> {
    let name = pn.name_any();
    let spec = &pn.spec;
    let seen = Observed {
        vswitches: ctx
            .cloud
            .describe_vswitches(&spec.v_switch_options)
            .await
            .map_err(|e| Error::cloud(format!("PodNetworking {name}: describe vSwitches"), e))?,
        security_groups: if spec.security_group_ids.is_empty() {
            Vec::new()
        } else {
            ctx.cloud
                .describe_security_groups(&spec.security_group_ids)
                .await
                .map_err(|e| {
                    Error::cloud(format!("PodNetworking {name}: describe security groups"), e)
                })?
        },
    };
    let verdict = judge(spec, &seen, &ctx.vpc_id);
    let requeue = if verdict.is_ready() {
        READY_RECHECK
    } else {
        FAIL_RECHECK
    };
    let previous = pn.status.as_ref();
    if !differs(previous, &verdict) {
        return Ok(Action::requeue(requeue));
    }
    let status = PodNetworkingStatus {
        status: Some(verdict.status),
        v_switches: verdict.vswitches.clone(),
        update_at: Some(Time(Timestamp::now())),
        message: verdict.message.clone(),
    };
    let api: Api<PodNetworking> = Api::all(ctx.client.clone());
    // A merge patch of the whole status: lists (vSwitches) are replaced, so a vSwitch removed from the
    // spec leaves the status too.
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &name,
        &PatchParams::apply(crate::FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::kube(format!("PodNetworking {name}: update status"), e))?;
    let status_changed = previous.and_then(|s| s.status) != Some(verdict.status);
    tracing::info!(
        podnetworking = %name,
        status = ?verdict.status,
        message = %verdict.message,
        "PodNetworking status updated"
    );
    if status_changed {
        let (type_, reason, note) = match verdict.status {
            NetworkingStatus::Ready => (
                "Normal",
                REASON_SUCCEED,
                format!(
                    "PodNetworking {name} is Ready: vSwitches {}",
                    verdict
                        .vswitches
                        .iter()
                        .map(|v| format!("{} ({})", v.id, v.zone))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            NetworkingStatus::Fail => (
                "Warning",
                REASON_FAILED,
                format!("PodNetworking {name} is Fail: {}", verdict.message),
            ),
        };
        ctx.events
            .publish(
                pn.object_ref(&()),
                Note {
                    type_,
                    reason,
                    action: "Validate",
                    note: &note,
                },
            )
            .await;
    }
    Ok(Action::requeue(requeue))
}

/// The one error policy: log, and retry the object with a backoff that doubles per failure in a row.
pub fn error_policy<C: Cloud>(pn: Arc<PodNetworking>, err: &Error, ctx: Arc<Context<C>>) -> Action {
    let name = pn.name_any();
    let n = ctx.failures.record(&name);
    let delay = error_backoff(n);
    tracing::warn!(podnetworking = %name, error = %err, failures = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Run the controller until `shutdown` resolves.
pub async fn run<C: Cloud>(
    ctx: Arc<Context<C>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<PodNetworking> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "pod-networking controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_verdict_writes_nothing() {
        let v = Verdict {
            status: NetworkingStatus::Ready,
            vswitches: vec![],
            message: String::new(),
        };
        let same = PodNetworkingStatus {
            status: Some(NetworkingStatus::Ready),
            update_at: Some(Time(Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        assert!(!differs(Some(&same), &v));
        assert!(differs(None, &v));
        let failed = PodNetworkingStatus {
            status: Some(NetworkingStatus::Fail),
            ..Default::default()
        };
        assert!(differs(Some(&failed), &v));
    }
}
