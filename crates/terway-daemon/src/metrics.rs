//! Prometheus metrics of the daemon and the HTTP endpoint (`/metrics`) on TCP or a unix socket.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::config::MetricsAddr;
use crate::error::{DaemonError, Result};
use crate::pool::state::PoolCounts;

/// Label: a pool slot state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// shared-ip | exclusive-eni | pod-cidr.
    pub backend: String,
    /// total | idle | in_use | cooldown | releasing.
    pub state: String,
}

/// Labels of one reconciler pass.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabel {
    /// Reconciler name.
    pub reconciler: String,
    /// ok | error.
    pub result: String,
}

/// Label: a reconciler.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcilerLabel {
    /// Reconciler name.
    pub reconciler: String,
}

/// Label: an allocation result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// ok | exhausted | busy | timeout | error.
    pub result: String,
}

/// Label: fast or slow path.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    /// fast | slow | existing.
    pub path: String,
}

/// Labels of a cloud call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    /// API action.
    pub action: String,
    /// "ok" or the error code.
    pub result: String,
}

/// Label: an inhibit kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InhibitLabel {
    /// eni_limit | vswitch_exhausted.
    pub kind: String,
}

/// Label: what a slow allocation waited on.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitedOnLabel {
    /// new-eni | assign-ips | cooldown.
    pub waited_on: String,
}

/// Label: an event reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// PascalCase reason.
    pub reason: String,
}

/// Label: one direction of one pod's NetworkPolicy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PolicyDropLabel {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// ingress | egress.
    pub direction: String,
}

/// All metrics of the daemon.
pub struct Metrics {
    registry: Registry,
    /// Pool slots by state.
    pub pool: Family<StateLabel, Gauge>,
    /// Allocations by result.
    pub allocations: Family<ResultLabel, Counter>,
    /// Allocation latency by path.
    pub alloc_latency: Family<PathLabel, Histogram>,
    /// Cloud calls by action and result.
    pub cloud_calls: Family<CallLabel, Counter>,
    /// Active inhibits by kind.
    pub inhibits: Family<InhibitLabel, Gauge>,
    /// Reconciler passes by reconciler and result.
    pub reconciles: Family<ReconcileLabel, Counter>,
    /// Reconciler pass duration.
    pub reconcile_seconds: Family<ReconcilerLabel, Histogram>,
    /// Events recorded by reason.
    pub events: Family<ReasonLabel, Counter>,
    /// Allocations that waited for the pool, by what they waited on.
    pub slow_allocations: Family<WaitedOnLabel, Counter>,
    /// Packets the node's NetworkPolicy dropped, per pod and direction.
    pub policy_drops: Family<PolicyDropLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric under the `terwayd_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("terwayd");
        let pool = Family::<StateLabel, Gauge>::default();
        let allocations = Family::<ResultLabel, Counter>::default();
        let alloc_latency = Family::<PathLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0002, 2.0, 18))) as fn() -> Histogram,
        );
        let cloud_calls = Family::<CallLabel, Counter>::default();
        let inhibits = Family::<InhibitLabel, Gauge>::default();
        let reconciles = Family::<ReconcileLabel, Counter>::default();
        let reconcile_seconds = Family::<ReconcilerLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "reconciles",
            "Reconciler passes by reconciler and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconciler pass duration",
            reconcile_seconds.clone(),
        );
        registry.register("pool_ips", "Pool address slots by state", pool.clone());
        registry.register("allocations", "AllocIP results", allocations.clone());
        registry.register(
            "alloc_latency_seconds",
            "AllocIP latency by path",
            alloc_latency.clone(),
        );
        registry.register(
            "cloud_calls",
            "Cloud API calls by action and result",
            cloud_calls.clone(),
        );
        let events = Family::<ReasonLabel, Counter>::default();
        registry.register("events", "Events recorded by reason", events.clone());
        let slow_allocations = Family::<WaitedOnLabel, Counter>::default();
        registry.register(
            "slow_allocations",
            "Allocations that waited for the pool, by what they waited on",
            slow_allocations.clone(),
        );
        registry.register(
            "inhibit_active",
            "Active allocation inhibits by kind",
            inhibits.clone(),
        );
        let policy_drops = Family::<PolicyDropLabel, Gauge>::default();
        registry.register(
            "policy_dropped_packets",
            "Packets the node's NetworkPolicy dropped, per pod and direction (read from the pod's nftables \
             counter; starts again from 0 when the pod's chain is recreated)",
            policy_drops.clone(),
        );
        Metrics {
            registry,
            policy_drops,
            pool,
            allocations,
            alloc_latency,
            cloud_calls,
            inhibits,
            reconciles,
            reconcile_seconds,
            events,
            slow_allocations,
        }
    }

    /// Count one recorded event.
    pub fn event(&self, reason: &str) {
        self.events
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Count one reconciler pass.
    pub fn reconciled(&self, reconciler: &str, ok: bool, secs: f64) {
        self.reconciles
            .get_or_create(&ReconcileLabel {
                reconciler: reconciler.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        self.reconcile_seconds
            .get_or_create(&ReconcilerLabel {
                reconciler: reconciler.into(),
            })
            .observe(secs);
    }

    /// Publish pool counts.
    pub fn set_pool(&self, backend: crate::record::ResourceKind, c: &PoolCounts) {
        for (state, v) in [
            ("total", c.total),
            ("idle", c.idle),
            ("in_use", c.in_use),
            ("cooldown", c.cooldown),
            ("releasing", c.releasing),
        ] {
            self.pool
                .get_or_create(&StateLabel {
                    backend: backend.label().into(),
                    state: state.into(),
                })
                .set(v as i64);
        }
    }

    /// Count one allocation result.
    pub fn allocation(&self, result: &str) {
        self.allocations
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Observe an allocation latency.
    pub fn latency(&self, path: &str, secs: f64) {
        self.alloc_latency
            .get_or_create(&PathLabel { path: path.into() })
            .observe(secs);
    }

    /// Count an allocation that waited for the pool.
    pub fn slow_allocation(&self, waited_on: &str) {
        self.slow_allocations
            .get_or_create(&WaitedOnLabel {
                waited_on: waited_on.into(),
            })
            .inc();
    }

    /// Count a cloud call.
    pub fn cloud_call(&self, action: &str, result: &str) {
        self.cloud_calls
            .get_or_create(&CallLabel {
                action: action.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Publish inhibit state.
    pub fn set_inhibits(&self, eni_limit: bool, vswitches_blocked: usize) {
        self.inhibits
            .get_or_create(&InhibitLabel {
                kind: "eni_limit".into(),
            })
            .set(eni_limit as i64);
        self.inhibits
            .get_or_create(&InhibitLabel {
                kind: "vswitch_exhausted".into(),
            })
            .set(vswitches_blocked as i64);
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serve `/metrics` until `shutdown` resolves.
pub async fn serve(
    addr: &MetricsAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
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
    );
    match addr {
        MetricsAddr::Tcp(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| DaemonError::io(format!("bind metrics address {a}"), e))?;
            Ok(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
                    tracing::warn!(error = %e, "metrics server stopped");
                }
            }))
        }
        MetricsAddr::Unix(p) => {
            let _ = std::fs::remove_file(p);
            let l = tokio::net::UnixListener::bind(p)
                .map_err(|e| DaemonError::io(format!("bind metrics socket {}", p.display()), e))?;
            Ok(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
                    tracing::warn!(error = %e, "metrics server stopped");
                }
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family() {
        let m = Metrics::new();
        m.reconciled("pod-gc", true, 0.01);
        m.set_pool(
            crate::record::ResourceKind::SharedIp,
            &PoolCounts {
                total: 3,
                idle: 1,
                in_use: 2,
                cooldown: 0,
                releasing: 0,
            },
        );
        m.allocation("ok");
        m.latency("fast", 0.001);
        m.cloud_call("AssignPrivateIpAddresses", "ok");
        m.set_inhibits(true, 2);
        m.slow_allocation("new-eni");
        let text = m.encode();
        for needle in [
            "terwayd_pool_ips{backend=\"shared-ip\",state=\"in_use\"} 2",
            "terwayd_reconciles_total{reconciler=\"pod-gc\",result=\"ok\"} 1",
            "terwayd_allocations_total{result=\"ok\"} 1",
            "terwayd_alloc_latency_seconds_count{path=\"fast\"} 1",
            "terwayd_cloud_calls_total{action=\"AssignPrivateIpAddresses\",result=\"ok\"} 1",
            "terwayd_inhibit_active{kind=\"vswitch_exhausted\"} 2",
            "terwayd_slow_allocations_total{waited_on=\"new-eni\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
