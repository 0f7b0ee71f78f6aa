//! ENIs of their own for the pods a PodNetworking selects, recorded in a PodENI named after the pod:
//!
//! - `pod` (a controller on Pods): a scheduled pod of a PodNetworking gets its PodENI, written as an
//!   intent (vSwitch of the node's zone, security groups) *before* any cloud call;
//! - `pod-eni` (a controller on PodENIs, also woken by their pods): creates the ENI with a ClientToken
//!   derived from the PodENI (a new leader repeating the create gets the same ENI), attaches it to the
//!   pod's instance, records Bind; once the pod is gone, detaches and deletes the ENI and then lets
//!   the PodENI go (finalizer);
//! - `pod-eni-orphans` (periodic): ENIs made for a PodENI that no longer exists, or duplicates of the
//!   ENI it records, are released. An ENI whose PodENI has no ENI id yet is a create in flight.
//!
//! The daemon on the node waits for the PodENI to be Bind and moves the ENI into the pod.

mod bind;
mod intent;
mod orphans;
pub mod plan;

pub use bind::{pod_eni_error, reconcile_pod_eni};
pub use intent::{pod_error, reconcile_pod};
pub use orphans::collect_orphans;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use terway_apis::{Node as NodeCr, PodEni};
use terway_cloud::backoff::Backoff;
use terway_cloud::Cloud;
use terway_core::annotations::POD_NETWORKING;

use crate::error::Error;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::retry::Failures;

/// Controller names (metrics, logs).
pub const POD: &str = "pod";
/// See [`POD`].
pub const POD_ENI: &str = "pod-eni";
/// See [`POD`].
pub const ORPHANS: &str = "pod-eni-orphans";

/// What the controllers need.
pub struct Context<C> {
    /// The API server.
    pub client: kube::Client,
    /// The cloud.
    pub cloud: C,
    /// The cluster's VPC.
    pub vpc_id: String,
    /// eni-config's security groups, for PodNetworkings that name none.
    pub default_security_groups: Vec<String>,
    /// How long to wait for attach/detach (the cloud client's `wait_eni_status`).
    pub wait_status: Backoff,
    /// How long to wait for a delete to show (`eni_delete_confirm`).
    pub wait_deleted: Backoff,
    /// Event writer.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
    pub(super) failures: Failures,
}

impl<C: Cloud> Context<C> {
    /// A context for the controllers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        cloud: C,
        vpc_id: String,
        default_security_groups: Vec<String>,
        wait_status: Backoff,
        wait_deleted: Backoff,
        events: Events,
        metrics: Metrics,
    ) -> Self {
        Self {
            client,
            cloud,
            vpc_id,
            default_security_groups,
            wait_status,
            wait_deleted,
            events,
            metrics,
            failures: Failures::default(),
        }
    }

    /// The instance and zone of `node`, from the Node CR its terwayd writes.
    async fn node_identity(&self, node: &str) -> Result<(String, String), Error> {
        let api: Api<NodeCr> = Api::all(self.client.clone());
        let cr = api
            .get_opt(node)
            .await
            .map_err(|e| Error::kube(format!("read the Node CR of {node}"), e))?;
        let meta = cr.map(|n| n.spec.node_metadata).unwrap_or_default();
        if meta.instance_id.is_empty() {
            return Err(Error::Config(format!(
                "node {node} has no Node CR with its instance yet (terwayd writes it at start); waiting"
            )));
        }
        Ok((meta.instance_id, meta.zone_id))
    }
}

/// Whether `pod` is one the controllers serve: in a PodNetworking, not host-network, not finished.
fn ours(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.get(POD_NETWORKING).is_some_and(|v| !v.is_empty()));
    let spec = pod.spec.clone().unwrap_or_default();
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    annotated && spec.host_network != Some(true) && phase != "Succeeded" && phase != "Failed"
}

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The delay before retrying an object that failed `n` times in a row.
fn backoff(n: u32) -> Duration {
    crate::retry::error_backoff(n).min(Duration::from_secs(30))
}

/// Run the three until `shutdown` resolves. `orphan_period` spaces the orphan GC passes.
pub async fn run<C: Cloud>(
    ctx: Arc<Context<C>>,
    orphan_period: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let pod_enis: Api<PodEni> = Api::all(ctx.client.clone());
    let pod_controller = Controller::new(pods.clone(), watcher::Config::default())
        .graceful_shutdown_on(until(stop_rx.clone()))
        .run(reconcile_pod, pod_error, ctx.clone())
        .for_each(|_| async {});
    let pod_eni_controller = Controller::new(pod_enis, watcher::Config::default())
        // A pod's changes (scheduled, deleted) wake the PodENI of the same name.
        .watches(pods, watcher::Config::default(), |pod: Pod| {
            Some(
                ObjectRef::<PodEni>::new(&pod.name_any())
                    .within(&pod.namespace().unwrap_or_default()),
            )
        })
        .graceful_shutdown_on(until(stop_rx.clone()))
        .run(reconcile_pod_eni, pod_eni_error, ctx.clone())
        .for_each(|_| async {});
    let gc_ctx = ctx.clone();
    let mut gc_stop = stop_rx.clone();
    let orphans = async move {
        loop {
            let started = Instant::now();
            let r = collect_orphans(&gc_ctx).await;
            gc_ctx
                .metrics
                .reconciled(ORPHANS, r.is_ok(), started.elapsed());
            match r {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "orphan GC pass"),
                Err(e) => tracing::warn!(error = %e, "orphan GC pass failed; next pass retries"),
            }
            tokio::select! {
                _ = tokio::time::sleep(orphan_period) => {}
                _ = gc_stop.wait_for(|v| *v) => break,
            }
        }
    };
    let stopper = async move {
        shutdown.await;
        stop_tx.send_replace(true);
    };
    futures::join!(pod_controller, pod_eni_controller, orphans, stopper);
}
