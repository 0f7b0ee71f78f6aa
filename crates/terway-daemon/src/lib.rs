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

pub mod bench;
pub mod cloudconn;
pub mod config;
pub mod error;
pub mod metrics;
pub mod podsource;
pub mod pool;
pub mod server;
mod startup;
pub mod status;

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

pub use cloudconn::CloudOptions;
pub use config::{DaemonConfig, EniSelection, MetricsAddr, Mode, PoolConfig, VSwitchSelection};
pub use error::{DaemonError, Result};
pub use podsource::{LocalPodSource, PodMeta, PodSource, PodsFile};
pub use pool::state::PodKey;
pub use pool::Pool;

/// A running daemon.
pub struct Daemon<C: Cloud, M: Metadata, P: PodSource> {
    pool: Pool<C, M>,
    pods: Arc<P>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
    socket_path: PathBuf,
}

impl<C: Cloud, M: Metadata, P: PodSource> Daemon<C, M, P> {
    /// Recover state, start the pool manager, GC, metrics and the gRPC server. Returns once the
    /// socket accepts requests.
    pub async fn start(cfg: DaemonConfig, cloud: C, meta: M, pods: P) -> Result<Self> {
        cfg.validate().map_err(DaemonError::Config)?;
        let metrics = Arc::new(metrics::Metrics::new());
        let store = store::Store::open(&cfg.db_path())?;
        let node =
            startup::node_info_with_retry(&cfg, &cloud, &meta, Duration::from_secs(60)).await?;
        tracing::info!(instance = %node.instance_id, instance_type = %node.instance_type, capacity = ?node.capacity, mode = ?cfg.mode, "starting terwayd");
        let pool = Pool::new(
            cfg.clone(),
            node,
            cloud,
            meta,
            store,
            metrics.clone(),
            Default::default(),
        );
        pool.recover().await?;
        let pods = Arc::new(pods);
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        {
            let pool = pool.clone();
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move { pool.run_manager(rx).await }));
        }
        {
            let pool = pool.clone();
            let pods = pods.clone();
            let mut rx = stop_rx.clone();
            let period = cfg.gc_period;
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(period) => {}
                        _ = rx.changed() => {}
                    }
                    if *rx.borrow() {
                        break;
                    }
                    if let Err(e) = pool.gc(pods.as_ref()).await {
                        tracing::warn!(error = %e, "GC pass failed; retrying next period");
                    }
                }
            }));
        }
        // First GC right away (pods that vanished while we were down).
        if let Err(e) = pool.gc(pods.as_ref()).await {
            tracing::warn!(error = %e, "start-up GC failed; the periodic GC retries");
        }
        if let Some(addr) = &cfg.metrics_addr {
            let mut rx = stop_rx.clone();
            let h = metrics::serve(addr, metrics, async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await?;
            tasks.push(h);
        }
        let listener = startup::bind_socket(&cfg.socket_path)?;
        let svc = server::Service::new(pool.clone(), pods.clone());
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
            pool,
            pods,
            stop,
            server,
            tasks,
            socket_path: cfg.socket_path.clone(),
        })
    }

    /// The pool (tests inspect it).
    pub fn pool(&self) -> &Pool<C, M> {
        &self.pool
    }

    /// The pod source.
    pub fn pods(&self) -> &Arc<P> {
        &self.pods
    }

    /// Run one GC pass now.
    pub async fn gc(&self) -> Result<pool::reconcile::GcReport> {
        self.pool.gc(self.pods.as_ref()).await
    }

    /// Stop serving: finish in-flight requests, wait for cloud operations (bounded), remove the socket.
    pub async fn stop(self) -> Result<()> {
        self.pool.begin_stop();
        let _ = self.stop.send(true);
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.pool.drain(Duration::from_secs(30)).await;
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
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let d = Daemon::start(cfg, cloud, meta, pods).await?;
    shutdown.await;
    d.stop().await
}

pub mod store;

/// Run `terwayd` against the cloud described by `cfg.cloud` (HTTP OpenAPI + metadata), with the local
/// pod source, until `shutdown` resolves.
pub async fn run(cfg: DaemonConfig, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let (cloud, meta) = cfg.cloud.connect().await?;
    let pods = LocalPodSource::new(cfg.pods_file.clone());
    run_with(cfg, cloud, meta, pods, shutdown).await
}
