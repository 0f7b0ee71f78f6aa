//! Prometheus metrics of the controlplane and its HTTP endpoint: `/metrics`, `/healthz` (the process
//! serves), `/readyz` (the caches of a leader are synced; a follower is ready as soon as it serves, so a
//! rollout does not wait for the Lease), and `/leader` (`true`/`false`, for probes and tests).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use terway_cloud::CloudMetrics;

/// Labels of one reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabel {
    /// Controller name.
    pub controller: String,
    /// ok | error.
    pub result: String,
}

/// Label: a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// Controller name.
    pub controller: String,
}

/// Label: a webhook answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    /// patched | unchanged | denied | error.
    pub result: String,
}

/// Labels of a cloud call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    /// API action.
    pub action: String,
    /// ok | error.
    pub result: String,
}

struct Inner {
    registry: Registry,
    reconciles: Family<ReconcileLabel, Counter>,
    reconcile_seconds: Family<ControllerLabel, Histogram>,
    leader: Gauge,
    acquisitions: Counter,
    cloud_calls: Family<CallLabel, Counter>,
    webhook: Family<WebhookLabel, Counter>,
    /// Cloud calls already counted, per action: (ok, failed).
    cloud_seen: Mutex<BTreeMap<String, (u64, u64)>>,
    cloud: Mutex<Option<Arc<CloudMetrics>>>,
    ready: AtomicBool,
}

/// The controlplane's metrics (cheap to clone; one registry).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (prefix `terway_controlplane`).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("terway_controlplane");
        let reconciles = Family::<ReconcileLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and result",
            reconciles.clone(),
        );
        let reconcile_seconds = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_seconds.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let acquisitions = Counter::default();
        registry.register(
            "leader_acquisitions",
            "Times this replica became the leader",
            acquisitions.clone(),
        );
        let cloud_calls = Family::<CallLabel, Counter>::default();
        registry.register(
            "cloud_calls",
            "Logical OpenAPI calls by action and result",
            cloud_calls.clone(),
        );
        let webhook = Family::<WebhookLabel, Counter>::default();
        registry.register(
            "webhook_requests",
            "Pod admission reviews answered, by result",
            webhook.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            reconciles,
            reconcile_seconds,
            leader,
            acquisitions,
            cloud_calls,
            webhook,
            cloud_seen: Mutex::new(BTreeMap::new()),
            cloud: Mutex::new(None),
            ready: AtomicBool::new(false),
        }))
    }

    /// Count one reconcile of `controller`.
    pub fn reconciled(&self, controller: &str, ok: bool, took: Duration) {
        self.0
            .reconciles
            .get_or_create(&ReconcileLabel {
                controller: controller.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        self.0
            .reconcile_seconds
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Count one webhook answer.
    pub fn webhook(&self, result: &str) {
        self.0
            .webhook
            .get_or_create(&WebhookLabel {
                result: result.into(),
            })
            .inc();
    }

    /// This replica just became the leader.
    pub fn leader_acquired(&self) {
        self.0.acquisitions.inc();
        self.set_leading(true);
    }

    /// Whether this replica leads.
    pub fn set_leading(&self, leading: bool) {
        self.0.leader.set(i64::from(leading));
    }

    /// Whether this replica leads (as last set).
    pub fn leading(&self) -> bool {
        self.0.leader.get() == 1
    }

    /// Mark the replica ready (`/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::Relaxed);
    }

    /// Export the cloud client's call statistics as `cloud_calls_total`.
    pub fn watch_cloud(&self, cloud: Arc<CloudMetrics>) {
        *self.0.cloud.lock().unwrap_or_else(|e| e.into_inner()) = Some(cloud);
    }

    /// Bring the cloud counters up to the client's statistics (the client counts; we only mirror).
    fn sync_cloud(&self) {
        let Some(cloud) = self
            .0
            .cloud
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let mut seen = self.0.cloud_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (action, stats) in cloud.snapshot() {
            let failed = stats.failed_calls;
            let ok = stats.calls.saturating_sub(failed);
            let entry = seen.entry(action.clone()).or_default();
            for (result, now, before) in [("ok", ok, &mut entry.0), ("error", failed, &mut entry.1)]
            {
                if now > *before {
                    self.0
                        .cloud_calls
                        .get_or_create(&CallLabel {
                            action: action.clone(),
                            result: result.into(),
                        })
                        .inc_by(now - *before);
                    *before = now;
                }
            }
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        self.sync_cloud();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

/// Serve the endpoints on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let (m1, m2, m3) = (metrics.clone(), metrics.clone(), metrics);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let m = m2.clone();
                async move {
                    if m.0.ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
                    }
                }
            }),
        )
        .route(
            "/leader",
            get(move || {
                let m = m3.clone();
                async move {
                    if m.leading() {
                        "true"
                    } else {
                        "false"
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_leadership_and_cloud_calls_are_exported() {
        let m = Metrics::new();
        m.reconciled("pod-networking", true, Duration::from_millis(3));
        m.reconciled("pod-networking", false, Duration::from_millis(3));
        m.leader_acquired();
        m.webhook("denied");
        let cloud = Arc::new(CloudMetrics::default());
        cloud.record_call("DescribeVSwitches", true);
        cloud.record_call("DescribeVSwitches", false);
        m.watch_cloud(cloud.clone());
        let text = m.encode();
        for line in [
            "terway_controlplane_reconciles_total{controller=\"pod-networking\",result=\"ok\"} 1",
            "terway_controlplane_reconciles_total{controller=\"pod-networking\",result=\"error\"} 1",
            "terway_controlplane_leader 1",
            "terway_controlplane_webhook_requests_total{result=\"denied\"} 1",
            "terway_controlplane_leader_acquisitions_total 1",
            "terway_controlplane_cloud_calls_total{action=\"DescribeVSwitches\",result=\"ok\"} 1",
            "terway_controlplane_cloud_calls_total{action=\"DescribeVSwitches\",result=\"error\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // A second scrape does not count the same calls again.
        cloud.record_call("DescribeVSwitches", true);
        let text = m.encode();
        assert!(text.contains(
            "terway_controlplane_cloud_calls_total{action=\"DescribeVSwitches\",result=\"ok\"} 2"
        ));
    }
}
