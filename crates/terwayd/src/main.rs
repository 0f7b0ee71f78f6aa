//! `terwayd`: the node daemon binary. Reads the eni_conf (plus an optional per-node merge patch),
//! applies command-line overrides, and runs until SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use terway_daemon::{DaemonConfig, MetricsAddr};

mod install;
mod node_setup;
mod policy;

/// What to do instead of serving.
#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Install the `terway` plugin and its conflist on the node (a DaemonSet's init step), then exit.
    InstallCni(install::InstallArgs),
}

/// terwayd: IP/ENI pool, crash-safe state and gRPC for the terway CNI.
#[derive(Debug, Parser)]
#[command(name = "terwayd", version)]
struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// eni_conf JSON file (ConfigMap key `eni_conf`).
    #[arg(long, env = "TERWAY_ENI_CONF")]
    config: Option<PathBuf>,
    /// Per-node RFC 7396 merge patch over the eni_conf.
    #[arg(long)]
    node_config: Option<PathBuf>,
    /// gRPC unix socket.
    #[arg(long, default_value = terway_rpc::DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    /// State directory (redb file inside).
    #[arg(long, default_value = "/var/lib/cni/terway")]
    state_dir: PathBuf,
    /// Prometheus endpoint: `host:port` or a unix socket path.
    #[arg(long)]
    metrics: Option<MetricsAddr>,
    /// Node name (defaults to the instance id).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// JSON file listing the node's pods (local pod source, without Kubernetes).
    #[arg(long, conflicts_with_all = ["kubeconfig", "in_cluster"])]
    pods_file: Option<PathBuf>,
    /// Learn pods from the Kubernetes API server with this kubeconfig (needs --node-name).
    #[arg(long, env = "TERWAY_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Learn pods from the API server with the in-cluster service account (needs --node-name).
    #[arg(long, conflicts_with = "kubeconfig")]
    in_cluster: bool,
    /// OpenAPI endpoint override for ECS and VPC (e.g. the emulator, `http://127.0.0.1:8080`).
    #[arg(long)]
    cloud_endpoint: Option<String>,
    /// Region (default: from metadata).
    #[arg(long)]
    region: Option<String>,
    /// Metadata service URL override.
    #[arg(long)]
    metadata_url: Option<String>,
    /// Instance id sent as `X-Emulator-Instance-Id` to the metadata service (emulator outside the lab).
    #[arg(long)]
    instance_id_header: Option<String>,
    /// AccessKey id (else eni_conf, env, credentials file or RAM role).
    #[arg(long, env = "ALIBABA_CLOUD_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// AccessKey secret.
    #[arg(long, env = "ALIBABA_CLOUD_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: Option<String>,
    /// GC period in seconds.
    #[arg(long, default_value_t = 300)]
    gc_period_secs: u64,
    /// Seconds an allocation is safe from the pod GC after it was made (the pod source may lag).
    #[arg(long, default_value_t = 30)]
    gc_grace_secs: u64,
    /// The kubelet's device-plugin directory (`aliyun/eni` on exclusive-ENI nodes; with the API server).
    #[arg(long, default_value = terway_k8s::device_plugin::DEFAULT_DIR)]
    device_plugin_dir: PathBuf,
    /// Log filter (tracing EnvFilter syntax), e.g. `info,terway_daemon=debug`.
    #[arg(long, env = "TERWAY_LOG", default_value = "info")]
    log_level: String,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// The configuration from the flags and files; `cluster_patch` (the node's `terway-config` ConfigMap)
/// replaces `--node-config` when given.
fn build_config(a: &Args, cluster_patch: Option<&str>) -> Result<DaemonConfig, String> {
    let mut cfg = DaemonConfig::default();
    if let Some(path) = &a.config {
        let base =
            std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let patch = match (cluster_patch, &a.node_config) {
            (Some(p), _) => Some(p.to_string()),
            (None, Some(p)) => {
                Some(std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?)
            }
            (None, None) => None,
        };
        let conf = terway_core::EniConf::from_json_with_override(&base, patch.as_deref())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for k in conf.unknown_keys() {
            tracing::warn!(key = k, "unknown eni_conf key ignored (typo?)");
        }
        cfg.apply_eni_conf(&conf)?;
    }
    cfg.socket_path = a.socket.clone();
    cfg.state_dir = a.state_dir.clone();
    cfg.metrics_addr = a.metrics.clone();
    cfg.node_name = a.node_name.clone();
    cfg.pods_file = a.pods_file.clone();
    cfg.gc_period = std::time::Duration::from_secs(a.gc_period_secs.max(1));
    cfg.gc_grace = std::time::Duration::from_secs(a.gc_grace_secs);
    let cl = &mut cfg.cloud;
    cl.endpoint = a.cloud_endpoint.clone().or(cl.endpoint.take());
    cl.region = a.region.clone().or(cl.region.take());
    cl.metadata_url = a.metadata_url.clone();
    if let Some(id) = &a.instance_id_header {
        cl.metadata_headers = BTreeMap::from([("X-Emulator-Instance-Id".to_string(), id.clone())]);
    }
    if a.access_key_id.is_some() {
        cl.access_key_id = a.access_key_id.clone();
        cl.access_key_secret = a.access_key_secret.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

/// The configuration with the node's `terway-config` ConfigMap merged in. An override that cannot be
/// read or would not load is reported as a `ConfigError` event on the node, and terwayd runs without it
/// (the cluster-wide configuration still serves pods). Also returns the override's ConfigMap name.
async fn with_node_override(
    args: &Args,
    cfg: DaemonConfig,
    client: &terway_k8s::Client,
    node: &str,
    reporter: &dyn terway_daemon::Reporter,
) -> (DaemonConfig, Option<String>) {
    let refuse = |why: String| {
        tracing::error!("{why}");
        reporter.event(terway_daemon::Event {
            target: terway_daemon::EventTarget::Node,
            kind: terway_daemon::EventType::Warning,
            reason: terway_daemon::report::reasons::CONFIG_ERROR.into(),
            message: why,
        });
    };
    match terway_k8s::config_watch::node_override(client, node).await {
        Ok(None) => (cfg, None),
        Ok(Some((name, patch))) => match build_config(args, Some(&patch)) {
            Ok(merged) => {
                tracing::info!(configmap = %name, "per-node eni_conf override applied");
                (merged, Some(name))
            }
            Err(e) => {
                refuse(format!(
                    "ConfigMap {}/{name} key {}: {e}; terwayd runs without this per-node override",
                    terway_k8s::config_watch::NAMESPACE,
                    terway_k8s::config_watch::ENI_CONF_KEY
                ));
                (cfg, Some(name))
            }
        },
        Err(e) => {
            refuse(format!("{e}; terwayd runs without a per-node override"));
            (cfg, None)
        }
    }
}

/// Run with the pod source the flags name: the API server (kubeconfig or in-cluster) or the local file.
async fn serve(args: &Args, cfg: DaemonConfig) -> Result<(), String> {
    let symmetric = cfg.symmetric_routing;
    if args.kubeconfig.is_none() && !args.in_cluster {
        let (cloud, meta) = cfg.cloud.connect().await.map_err(|e| e.to_string())?;
        let pods = terway_daemon::LocalPodSource::new(cfg.pods_file.clone());
        let wiring = terway_daemon::Wiring {
            conntrack: node_setup::conntrack_flusher(),
            ..Default::default()
        };
        let reporter = std::sync::Arc::new(terway_daemon::LogReporter);
        let d = terway_daemon::Daemon::start_full(cfg, cloud, meta, pods, reporter, wiring)
            .await
            .map_err(|e| e.to_string())?;
        node_setup::symmetric_routing(symmetric, d.node().primary_ip.into()).await;
        shutdown_signal().await;
        return d.stop().await.map_err(|e| e.to_string());
    }
    let node = cfg
        .node_name
        .clone()
        .ok_or("--kubeconfig/--in-cluster need --node-name (the Kubernetes node name; NODE_NAME in a DaemonSet)")?;
    let client = terway_k8s::KubePodSource::client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let pods = terway_k8s::KubePodSource::start(client.clone(), &node);
    let (reporter, reports) = terway_k8s::KubeReporter::start(client.clone(), &node, pods.clone());
    let (cfg, override_name) =
        with_node_override(args, cfg, &client, &node, reporter.as_ref()).await;
    let (cloud, meta) = cfg.cloud.connect().await.map_err(|e| e.to_string())?;
    let exclusive = cfg.mode == terway_daemon::Mode::Exclusive;
    let reporter_handle: std::sync::Arc<dyn terway_daemon::Reporter> = reporter.clone();
    // PodNetworking pods get the ENI the controlplane made for them (their PodENI).
    let pod_enis: std::sync::Arc<dyn terway_daemon::backend::pod_eni::PodEniSource> =
        std::sync::Arc::new(terway_k8s::KubePodEniSource::new(client.clone()));
    let mut wiring = terway_daemon::Wiring {
        pod_enis: Some(pod_enis),
        conntrack: node_setup::conntrack_flusher(),
        ..Default::default()
    };
    if cfg.network_policy {
        let watch = terway_k8s::netpol::PolicyWatch::start(client.clone());
        let node_policy = policy::NodePolicy::new(watch)
            .map_err(|e| format!("NetworkPolicy: cannot open terwayd's network namespace: {e}"))?;
        wiring.reconcilers.push(node_policy.reconciler());
        wiring.policy = Some(node_policy);
    } else {
        tracing::info!("NetworkPolicy left to another component (eni_conf disable_network_policy)");
    }
    let d = terway_daemon::Daemon::start_full(cfg, cloud, meta, pods, reporter, wiring)
        .await
        .map_err(|e| e.to_string())?;
    node_setup::symmetric_routing(symmetric, d.node().primary_ip.into()).await;
    let (stop_plugins, plugins_stop) = tokio::sync::watch::channel(false);
    let specs = d
        .node()
        .limits
        .as_ref()
        .map(|l| {
            // aliyun/member-eni waits for the trunk datapath: advertising member ENIs before terwayd
            // can wire them would let the scheduler place pods that then fail in the CNI.
            terway_k8s::device_plugin::resources(
                exclusive,
                false,
                l.eni_quantity,
                l.eni_total_quantity,
            )
        })
        .unwrap_or_default();
    let plugins = terway_k8s::device_plugin::start(
        args.device_plugin_dir.clone(),
        specs,
        plugins_stop.clone(),
    );
    let config_watch = terway_k8s::config_watch::watch_config(
        client,
        override_name,
        args.config.clone(),
        reporter_handle,
        plugins_stop,
    );
    shutdown_signal().await;
    let _ = stop_plugins.send(true);
    for p in plugins {
        let _ = p.await;
    }
    let _ = config_watch.await;
    let res = d.stop().await.map_err(|e| e.to_string());
    // The daemon has dropped its handles: what is still queued goes out, briefly.
    reports.finish(std::time::Duration::from_secs(3)).await;
    res
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::InstallCni(a)) = &args.sub {
        return match install::run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("terwayd install-cni: {e}");
                ExitCode::from(2)
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes would litter a container log or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let cfg = match build_config(&args, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("terwayd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("terwayd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(&args, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terwayd: {e}");
            ExitCode::FAILURE
        }
    }
}
