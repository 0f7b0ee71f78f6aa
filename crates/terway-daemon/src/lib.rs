//! terwayd: the node daemon. It owns every network resource of its node: a pool of ENIs and IPs
//! obtained from the cloud, a crash-safe record of which pod holds what (redb), garbage collection,
//! and the gRPC services the CNI binary and terway-cli call over a unix socket.
//!
//! Start it in-process with [`Daemon::start`] (tests, benchmarks) or [`run_with`] (until shutdown)
//! with any [`terway_cloud::Cloud`] + [`terway_cloud::Metadata`] + [`PodSource`]; [`run`] builds the
//! Alibaba Cloud HTTP clients from [`DaemonConfig::cloud`] — that is what the `terwayd` binary does.
//!
//! ```no_run
//! # async fn demo() -> terway_daemon::Result<()> {
//! let mut cfg = terway_daemon::DaemonConfig::default();
//! cfg.socket_path = "/tmp/t/eni.socket".into();
//! cfg.state_dir = "/tmp/t/state".into();
//! cfg.cloud.endpoint = Some("http://127.0.0.1:8080".into());
//! cfg.cloud.metadata_url = Some("http://127.0.0.1:8081".into());
//! cfg.cloud.metadata_headers.insert("X-Emulator-Instance-Id".into(), "i-emu00000000000000001".into());
//! terway_daemon::run(cfg, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod backend;
#[cfg(feature = "bench")]
pub mod bench;
pub mod claims;
pub mod config;
pub mod conntrack_flush;
pub mod error;
pub mod gc;
pub mod metrics;
pub mod node_state;
pub mod pod_policy;
pub mod podsource;
pub mod pool;
pub mod reconciler;
pub mod record;
pub mod report;
pub mod server;
mod startup;
pub mod status;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use terway_cloud::{Cloud, Metadata};
use terway_rpc::v1::{
    terway_backend_server::TerwayBackendServer, terway_status_server::TerwayStatusServer,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use backend::{Backends, ResourceBackend};
pub use config::{
    DaemonConfig, EniSelectionPolicy, MetricsAddr, Mode, PoolConfig, VSwitchSelectionPolicy,
};
pub use error::{DaemonError, Result};
pub use podsource::{LocalPodSource, PodMeta, PodSource, PodsFile};
pub use pool::{EniPoolKind, Pool};
pub use record::{AllocKey, Allocation, PodKey, ResourceKind};
pub use report::{CniOp, Event, EventTarget, EventType, IpSufficiency, LogReporter, Reporter};
pub use terway_cloud::CloudOptions;

/// How often the node's IP sufficiency is looked at (cheap: no cloud call).
const NODE_STATE_PERIOD: Duration = Duration::from_secs(5);
/// How often the node's resources are compared with what was last reported (no cloud call).
const NODE_RESOURCES_PERIOD: Duration = Duration::from_secs(5);

/// What one full GC round did (pods, then the ENIs of the ENI pool).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Allocations released because their pod is gone.
    pub released_pods: u32,
    /// Sticky reservations dropped because their pod is gone.
    pub dropped_sticky: u32,
    /// ENIs adopted (ours, attached, unknown locally).
    pub adopted_enis: u32,
    /// Addresses adopted as idle.
    pub adopted_ips: u32,
    /// Local addresses forgotten because the cloud no longer has them.
    pub forgotten_ips: u32,
    /// Leftover Available ENIs deleted.
    pub deleted_enis: u32,
}

/// A running daemon.
pub struct Daemon<C: Cloud, M: Metadata, P: PodSource> {
    backends: Backends,
    eni_pool: Option<Pool<C, M>>,
    pod_gc: Arc<gc::PodGc<P>>,
    metrics: Arc<metrics::Metrics>,
    pods: Arc<P>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
    socket_path: PathBuf,
    node: Arc<pool::NodeInfo>,
}

/// The backends of this node from its configuration: the ENI pool (shared IPs or exclusive ENIs) or
/// the PodCIDR. Registering a new backend is one more arm here.
fn build_backends<C: Cloud, M: Metadata>(
    cfg: &DaemonConfig,
    node: &pool::NodeInfo,
    cloud: C,
    meta: M,
    store: &store::Store,
    metrics: &Arc<metrics::Metrics>,
    pod_enis: Option<Arc<dyn backend::pod_eni::PodEniSource>>,
) -> Result<(Backends, Option<Pool<C, M>>)> {
    let default = ResourceKind::default_for(cfg.mode);
    let mut eni_pool = None;
    let backend: Arc<dyn ResourceBackend> = match EniPoolKind::serving(default) {
        Some(kind) => {
            let limits = node.limits.as_ref().ok_or_else(|| {
                DaemonError::Config("the ENI pool needs the instance type's quotas".into())
            })?;
            let cap = pool::decide::capacity(
                limits.eni_quantity,
                limits.eni_private_ip_quantity,
                &cfg.pool,
                kind,
            );
            let p = Pool::new(
                cfg.clone(),
                kind,
                node.clone(),
                cap,
                cloud,
                meta,
                store.clone(),
                metrics.clone(),
                Default::default(),
            );
            eni_pool = Some(p.clone());
            Arc::new(p)
        }
        None => {
            let cidr = cfg
                .pod_cidr
                .ok_or_else(|| DaemonError::Config("vpc-route mode needs pod_cidr".into()))?;
            Arc::new(backend::pod_cidr::PodCidr::new(
                &node.name,
                cidr,
                cfg.pool.ip_reuse_cooldown,
                store.clone(),
                metrics.clone(),
            ))
        }
    };
    let mut list = vec![backend];
    if let Some(source) = pod_enis {
        // Every node with the API server serves PodNetworking pods from the ENIs the controlplane
        // attaches; the scheduler sends them only where `aliyun/eni` is left.
        list.push(Arc::new(backend::pod_eni::PodEniBackend::new(
            &node.name,
            &node.instance_id,
            source,
            store.clone(),
        )));
    }
    Ok((Backends::new(default, list), eni_pool))
}

/// What the binary wires into the daemon beyond its cloud, metadata, pod source and reporter.
#[derive(Default, Clone)]
pub struct Wiring {
    /// PodENIs of PodNetworking pods (the Kubernetes implementation reads them from the API server).
    pub pod_enis: Option<Arc<dyn backend::pod_eni::PodEniSource>>,
    /// Deletes the node's conntrack entries of released addresses (the kernel implementation).
    pub conntrack: Option<Arc<dyn conntrack_flush::ConntrackFlusher>>,
    /// Enforces NetworkPolicy on the node; admitted in AllocIP before the reply (see `pod_policy`).
    pub policy: Option<Arc<dyn pod_policy::PodPolicy>>,
    /// The binary's own control loops, run like the daemon's (period, error policy, metric, shutdown).
    pub reconcilers: Vec<Arc<dyn reconciler::Reconciler>>,
}

impl<C: Cloud, M: Metadata, P: PodSource> Daemon<C, M, P> {
    /// Recover state, start the backends, the reconcilers, metrics and the gRPC server. Returns once
    /// the socket accepts requests. Reports go to the log.
    pub async fn start(cfg: DaemonConfig, cloud: C, meta: M, pods: P) -> Result<Self> {
        Self::start_reporting(cfg, cloud, meta, pods, Arc::new(LogReporter)).await
    }

    /// [`Daemon::start`], reporting events, node state and CNI progress to `reporter`.
    pub async fn start_reporting(
        cfg: DaemonConfig,
        cloud: C,
        meta: M,
        pods: P,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Self> {
        Self::start_full(cfg, cloud, meta, pods, reporter, Wiring::default()).await
    }

    /// [`Daemon::start_reporting`] with what the binary wires in: PodNetworking pods served from the PodENIs
    /// `wiring.pod_enis` reads, released addresses' conntrack entries deleted by `wiring.conntrack`.
    pub async fn start_full(
        cfg: DaemonConfig,
        cloud: C,
        meta: M,
        pods: P,
        reporter: Arc<dyn Reporter>,
        wiring: Wiring,
    ) -> Result<Self> {
        let Wiring {
            pod_enis,
            conntrack,
            policy,
            reconcilers: extra_reconcilers,
        } = wiring;
        cfg.validate().map_err(DaemonError::Config)?;
        let metrics = Arc::new(metrics::Metrics::new());
        let store = store::Store::open(&cfg.db_path())?;
        let node =
            startup::node_info_with_retry(&cfg, &cloud, &meta, Duration::from_secs(60)).await?;
        let (backends, eni_pool) =
            build_backends(&cfg, &node, cloud, meta, &store, &metrics, pod_enis)?;
        tracing::info!(instance = %node.instance_id, instance_type = %node.instance_type, backends = ?backends.kinds(), default = %backends.default_kind(), "starting terwayd");
        let snapshot = Arc::new(store.load()?);
        for b in backends.all() {
            // Run through the reconciler plumbing for its log line and metric; a failure here stops
            // the start (serving from an unrecovered state could hand out an address twice).
            let recovery = backend::Recovery::new(b.clone(), snapshot.clone());
            reconciler::run_once(&recovery, &metrics).await?;
        }
        let max_ips: Vec<u32> = backends
            .all()
            .iter()
            .filter_map(|b| b.max_pod_ips())
            .collect();
        if !max_ips.is_empty() {
            reporter.node_capacity(max_ips.iter().sum());
        }
        let pods = Arc::new(pods);
        let claims = claims::Claims::default();
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for b in backends.all() {
            tasks.extend(b.start(stop_rx.clone()));
        }
        // The daemon deletes released addresses' conntrack entries itself only when the binary gave it the
        // means and the reuse cooldown leaves its passes the time (see `conntrack_flush`); otherwise DEL does.
        let flush_queue = match &conntrack {
            Some(_) if cfg.pool.ip_reuse_cooldown >= conntrack_flush::MIN_COOLDOWN => {
                Some(Arc::new(conntrack_flush::FlushQueue::default()))
            }
            Some(_) => {
                tracing::info!(cooldown = ?cfg.pool.ip_reuse_cooldown, "ip_reuse_cooldown is below {:?}: CNI DEL flushes conntrack itself", conntrack_flush::MIN_COOLDOWN);
                None
            }
            None => None,
        };
        if let Some(p) = &policy {
            let recovered: Vec<pod_policy::PolicyPod> = backends
                .all()
                .iter()
                .flat_map(|b| b.allocations())
                .filter(|a| pod_policy::covers(a.backend))
                .map(|a| pod_policy::PolicyPod::of(&a))
                .collect();
            p.restore(recovered);
        }
        let drop_counters = policy.clone().map(|p| {
            Arc::new(pod_policy::PolicyDropCounters::new(p, metrics.clone()))
                as Arc<dyn reconciler::Reconciler>
        });
        let hooks = pod_policy::ReleaseHooks {
            flush: flush_queue.clone(),
            policy,
        };
        let pod_gc = Arc::new(
            gc::PodGc::new(
                backends.clone(),
                pods.clone(),
                claims.clone(),
                cfg.gc_period,
            )
            .with_grace(cfg.gc_grace)
            .with_reporter(reporter.clone())
            .with_release_hooks(hooks.clone()),
        );
        let node_state = Arc::new(node_state::NodeState::new(
            backends.clone(),
            reporter.clone(),
            NODE_STATE_PERIOD,
        ));
        let node = Arc::new(node);
        let node_resources = Arc::new(node_state::NodeResourcesReporter::new(
            node.clone(),
            cfg.cloud.region.clone().unwrap_or_default(),
            backends.clone(),
            reporter.clone(),
            NODE_RESOURCES_PERIOD,
        ));
        let mut reconcilers: Vec<Arc<dyn reconciler::Reconciler>> =
            vec![pod_gc.clone(), node_state, node_resources];
        if let (Some(flusher), Some(q)) = (conntrack, &flush_queue) {
            reconcilers.push(Arc::new(conntrack_flush::ConntrackFlush::new(
                q.clone(),
                flusher,
                backends.clone(),
            )));
        }
        for b in backends.all() {
            reconcilers.extend(b.reconcilers());
        }
        reconcilers.extend(extra_reconcilers);
        reconcilers.extend(drop_counters);
        for r in reconcilers {
            // First pass right away (pods that vanished while we were down); failures are retried
            // by the loop.
            let _ = reconciler::run_once(r.as_ref(), &metrics).await;
            tasks.push(reconciler::spawn(r, metrics.clone(), stop_rx.clone()));
        }
        if let Some(addr) = &cfg.metrics_addr {
            let mut rx = stop_rx.clone();
            let h = metrics::serve(addr, metrics.clone(), async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await?;
            tasks.push(h);
        }
        let listener = startup::bind_socket(&cfg.socket_path)?;
        let svc = server::Service::new(
            backends.clone(),
            pods.clone(),
            claims,
            Arc::new(cfg.clone()),
            node.clone(),
            metrics.clone(),
            reporter,
        )
        .with_release_hooks(hooks);
        let mut rx = stop_rx;
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TerwayBackendServer::new(svc.clone()))
                .add_service(TerwayStatusServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async move {
                        let _ = rx.wait_for(|v| *v).await;
                    },
                ),
        );
        tracing::info!(socket = %cfg.socket_path.display(), "terwayd ready");
        Ok(Daemon {
            backends,
            eni_pool,
            pod_gc,
            metrics,
            pods,
            stop,
            server,
            tasks,
            socket_path: cfg.socket_path.clone(),
            node,
        })
    }

    /// The ENI pool, on nodes whose backends use ENIs (tests and benchmarks inspect it).
    pub fn pool(&self) -> Option<&Pool<C, M>> {
        self.eni_pool.as_ref()
    }

    /// What the daemon learned about its node at start (instance, quotas).
    pub fn node(&self) -> &pool::NodeInfo {
        &self.node
    }

    /// The registered backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// The pod source.
    pub fn pods(&self) -> &Arc<P> {
        &self.pods
    }

    /// Run one GC round now: the pod GC, then the ENI reconciler of the ENI pool.
    pub async fn gc(&self) -> Result<GcReport> {
        let p = self.pod_gc.pass().await?;
        let mut r = GcReport {
            released_pods: p.released_pods,
            dropped_sticky: p.dropped_sticky,
            ..Default::default()
        };
        if let Some(pool) = &self.eni_pool {
            let e = pool.reconcile_enis().await?;
            r.adopted_enis = e.adopted_enis;
            r.adopted_ips = e.adopted_ips;
            r.forgotten_ips = e.forgotten_ips;
            r.deleted_enis = e.deleted_enis;
        }
        Ok(r)
    }

    /// Stop serving: finish in-flight requests, wait for cloud operations (bounded), remove the socket.
    pub async fn stop(self) -> Result<()> {
        for b in self.backends.all() {
            b.begin_stop();
        }
        let _ = self.stop.send(true);
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        }
        for t in self.tasks {
            let _ = t.await;
        }
        for b in self.backends.all() {
            b.drain(Duration::from_secs(30)).await;
        }
        let _ = std::fs::remove_file(&self.socket_path);
        tracing::info!("terwayd stopped");
        Ok(())
    }
}

/// Run the daemon until `shutdown` resolves, then stop cleanly.
pub async fn run_with<C: Cloud, M: Metadata, P: PodSource>(
    cfg: DaemonConfig,
    cloud: C,
    meta: M,
    pods: P,
    reporter: Arc<dyn Reporter>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let d = Daemon::start_reporting(cfg, cloud, meta, pods, reporter).await?;
    shutdown.await;
    d.stop().await
}

/// Run `terwayd` against the cloud described by `cfg.cloud` (HTTP OpenAPI + metadata), with the local
/// pod source, until `shutdown` resolves.
pub async fn run(cfg: DaemonConfig, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let (cloud, meta) = cfg.cloud.connect().await?;
    let pods = LocalPodSource::new(cfg.pods_file.clone());
    run_with(cfg, cloud, meta, pods, Arc::new(LogReporter), shutdown).await
}
