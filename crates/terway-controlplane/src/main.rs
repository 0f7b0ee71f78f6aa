//! `terway-controlplane`: contends for the leader Lease and, while leading, runs the controllers.
//! Losing the Lease ends the process (exit 1) so the controllers stop at once and the Deployment
//! restarts it as a follower; SIGTERM stops the controllers first and then releases the Lease.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use terway_cloud::{CloudOptions, Metadata};
use terway_controlplane::{
    kube_client, pod_eni, pod_networking, Error, LeaderElection, LeaseConfig, Metrics, LEASE_NAME,
    LEASE_NAMESPACE,
};
use tokio::sync::watch;

/// terway-controlplane: PodNetworking validation (more controllers to come), leader-elected.
#[derive(Debug, Parser)]
#[command(name = "terway-controlplane", version)]
struct Args {
    /// eni_conf JSON (the eni-config ConfigMap's `eni_conf`): region, AccessKey, rate limits, backoffs.
    #[arg(long, env = "TERWAY_ENI_CONF", default_value = "/etc/eni/eni_conf")]
    config: PathBuf,
    /// Kubeconfig (default: the in-cluster service account).
    #[arg(long, env = "TERWAY_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// OpenAPI endpoint override for ECS and VPC (e.g. the emulator).
    #[arg(long)]
    cloud_endpoint: Option<String>,
    /// Region (default: eni_conf's region_id, else the metadata service).
    #[arg(long)]
    region: Option<String>,
    /// Metadata service URL override.
    #[arg(long)]
    metadata_url: Option<String>,
    /// The cluster's VPC (default: the metadata service's, i.e. the node's).
    #[arg(long)]
    vpc_id: Option<String>,
    /// AccessKey id (else eni_conf, env, credentials file or RAM role).
    #[arg(long, env = "ALIBABA_CLOUD_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// AccessKey secret.
    #[arg(long, env = "ALIBABA_CLOUD_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: Option<String>,
    /// Address of /metrics, /healthz, /readyz and /leader.
    #[arg(long, default_value = "0.0.0.0:9487")]
    listen: SocketAddr,
    /// Address of the pod webhook (HTTPS).
    #[arg(long, default_value = "0.0.0.0:4443")]
    webhook_listen: SocketAddr,
    /// Do not serve the pod webhook (PodNetworkings are then only validated, not applied to pods).
    #[arg(long)]
    disable_webhook: bool,
    /// Seconds between passes of the orphaned-ENI GC.
    #[arg(long, default_value_t = 60)]
    orphan_gc_secs: u64,
    /// Lease name.
    #[arg(long, default_value = LEASE_NAME)]
    lease_name: String,
    /// Lease namespace.
    #[arg(long, default_value = LEASE_NAMESPACE)]
    lease_namespace: String,
    /// This replica's name in the Lease (default: POD_NAME or the host name); a random suffix is added.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease record stands without renewal before another replica takes over.
    #[arg(long, default_value_t = 15)]
    lease_duration_secs: u64,
    /// Seconds a leader keeps leading without a successful renewal.
    #[arg(long, default_value_t = 10)]
    renew_deadline_secs: u64,
    /// Seconds between acquire/renew attempts.
    #[arg(long, default_value_t = 2)]
    retry_period_secs: u64,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "TERWAY_LOG", default_value = "info")]
    log_level: String,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn init_logging(a: &Args) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(&a.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if a.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The cloud options from eni_conf (when the file exists) with the flags over them, and eni_conf's
/// security groups (for PodNetworkings that name none).
fn cloud_options(a: &Args) -> Result<(CloudOptions, Vec<String>), Error> {
    let (mut opts, groups) = match std::fs::read_to_string(&a.config) {
        Ok(text) => {
            let conf = terway_core::EniConf::from_json_with_override(&text, None)
                .map_err(|e| Error::Config(format!("{}: {e}", a.config.display())))?;
            (CloudOptions::from(&conf), conf.all_security_groups())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (CloudOptions::default(), Vec::new()),
        Err(e) => return Err(Error::Config(format!("read {}: {e}", a.config.display()))),
    };
    opts.endpoint = a.cloud_endpoint.clone().or(opts.endpoint);
    opts.region = a.region.clone().or(opts.region);
    opts.metadata_url = a.metadata_url.clone().or(opts.metadata_url);
    if a.access_key_id.is_some() {
        opts.access_key_id = a.access_key_id.clone();
        opts.access_key_secret = a.access_key_secret.clone();
    }
    Ok((opts, groups))
}

fn identity(a: &Args) -> String {
    let base = a.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "terway-controlplane".into())
    });
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{base}_{}", &suffix[..8])
}

async fn signal(stop: watch::Sender<bool>) {
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
            stop.send_replace(true);
        }
        _ => tracing::error!("cannot install signal handlers; stop with SIGKILL"),
    }
}

/// Resolves once `rx` is true.
async fn until_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Resolves once `rx` is false (or its sender is gone).
async fn until_false(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| !*v).await;
}

async fn run(a: Args) -> Result<(), Error> {
    let me = identity(&a);
    let mut lease = LeaseConfig::new(&a.lease_name, &a.lease_namespace, &me);
    lease.lease_duration = Duration::from_secs(a.lease_duration_secs);
    lease.renew_deadline = Duration::from_secs(a.renew_deadline_secs);
    lease.retry_period = Duration::from_secs(a.retry_period_secs);
    lease.validate().map_err(Error::Config)?;

    let (opts, default_groups) = cloud_options(&a)?;
    let (cloud, meta) = opts
        .connect()
        .await
        .map_err(|e| Error::cloud("connect to the cloud", e))?;
    let vpc_id = match &a.vpc_id {
        Some(v) => v.clone(),
        None => {
            meta.instance()
                .await
                .map_err(|e| {
                    Error::cloud(
                        "learn the VPC from the metadata service (or pass --vpc-id)",
                        e,
                    )
                })?
                .vpc_id
        }
    };
    let client = kube_client(a.kubeconfig.as_deref()).await?;
    let metrics = Metrics::new();
    metrics.watch_cloud(cloud.metrics_handle());

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signal(stop_tx));
    let server =
        terway_controlplane::metrics::serve(a.listen, metrics.clone(), until_true(stop_rx.clone()))
            .await
            .map_err(|e| Error::Config(format!("listen on {}: {e}", a.listen)))?;
    if !a.disable_webhook {
        start_webhook(&a, &client, &metrics, stop_rx.clone()).await?;
    }
    metrics.set_ready(true);
    tracing::info!(identity = %lease.identity, lease = %format!("{}/{}", lease.namespace, lease.name), %vpc_id, listen = %a.listen, "terway-controlplane started; contending for the Lease");

    let (leading_tx, leading_rx) = watch::channel(false);
    let (elector_stop_tx, elector_stop_rx) = watch::channel(false);
    let elector = tokio::spawn(
        LeaderElection::new(client.clone(), lease, metrics.clone())
            .run(leading_tx, elector_stop_rx),
    );

    tokio::select! {
        _ = until_true(leading_rx.clone()) => {}
        _ = until_true(stop_rx.clone()) => {}
    }
    if *leading_rx.borrow() && !*stop_rx.borrow() {
        let events = terway_controlplane::events::Events::new(client.clone(), &me);
        let eni_ctx = Arc::new(pod_eni::Context::new(
            client.clone(),
            cloud.clone(),
            vpc_id.clone(),
            default_groups,
            cloud.backoff(terway_cloud::backoff::WAIT_ENI_STATUS),
            cloud.backoff(terway_cloud::backoff::ENI_DELETE_CONFIRM),
            events.clone(),
            metrics.clone(),
        ));
        let pn_ctx = Arc::new(pod_networking::Context::new(
            client, cloud, vpc_id, events, metrics,
        ));
        // Every controller stops on SIGTERM or when the Lease is lost, whichever comes first.
        let done = || {
            let (stop, lost) = (until_true(stop_rx.clone()), until_false(leading_rx.clone()));
            async move {
                tokio::select! {
                    _ = stop => {}
                    _ = lost => {}
                }
            }
        };
        futures::join!(
            pod_networking::run(pn_ctx, done()),
            pod_eni::run(
                eni_ctx,
                Duration::from_secs(a.orphan_gc_secs.max(1)),
                done()
            ),
        );
        tracing::info!("controllers stopped");
    }
    // The controllers are stopped: only now may the Lease go to another replica.
    elector_stop_tx.send_replace(true);
    let outcome = match elector.await {
        Ok(r) => r.map_err(|e| Error::Config(e.to_string())),
        Err(e) => Err(Error::Config(format!("leader election task: {e}"))),
    };
    server.abort();
    outcome
}

/// The pod webhook: certificate (from its Secret, made when missing), the watch caches, the HTTPS
/// server, and the `webhook-ca` loop that keeps the CA in the MutatingWebhookConfiguration.
async fn start_webhook(
    a: &Args,
    client: &kube::Client,
    metrics: &Metrics,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    use terway_controlplane::webhook::{self, cert};
    let ns = &a.lease_namespace;
    let names = cert::service_dns_names(webhook::SERVICE, ns);
    let pem = cert::ensure_secret(client, ns, webhook::CERT_SECRET, &names).await?;
    let tls = cert::server_config(&pem).map_err(Error::Config)?;
    let state = webhook::WebhookState::start(client.clone(), metrics.clone());
    state.synced().await;
    webhook::serve(a.webhook_listen, tls, state, until_true(stop.clone()))
        .await
        .map_err(|e| Error::Config(format!("listen on {}: {e}", a.webhook_listen)))?;
    tracing::info!(listen = %a.webhook_listen, "pod webhook serving");
    let (client, metrics) = (client.clone(), metrics.clone());
    tokio::spawn(async move {
        let mut stop = stop;
        loop {
            let started = std::time::Instant::now();
            let r = cert::inject_ca(&client, webhook::CONFIGURATION, &pem.ca_pem).await;
            metrics.reconciled("webhook-ca", r.is_ok(), started.elapsed());
            match r {
                Ok(true) => tracing::info!(
                    configuration = webhook::CONFIGURATION,
                    "CA injected into the MutatingWebhookConfiguration"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not inject the webhook CA; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = stop.wait_for(|v| *v) => break,
            }
        }
    });
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
