//! Pool benchmark: AllocIP latency on the warm path over the unix socket, and cloud calls per pod for
//! a churn of pods, against whatever cloud the caller passes (the lab passes its emulator).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use terway_cloud::{Cloud, Metadata};
use terway_rpc::v1 as pb;
use terway_rpc::v1::terway_backend_client::TerwayBackendClient;

use crate::config::DaemonConfig;
use crate::error::{DaemonError, Result};
use crate::podsource::LocalPodSource;
use crate::pool::now_ms;
use crate::Daemon;

/// What to run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchOptions {
    /// Directory for the socket and state (created; the caller removes it).
    pub work_dir: PathBuf,
    /// Pods in the churn.
    pub churn_pods: u32,
    /// Parallel clients in the churn.
    pub concurrency: u32,
    /// Warm-path samples.
    pub warm_samples: u32,
    /// Pool low watermark.
    pub min_idle: u32,
    /// Pool high watermark.
    pub max_idle: u32,
    /// Reuse cooldown in ms.
    pub cooldown_ms: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            work_dir: std::env::temp_dir().join("terway-bench-pool"),
            churn_pods: 1000,
            concurrency: 16,
            warm_samples: 200,
            min_idle: 5,
            max_idle: 10,
            cooldown_ms: 1000,
        }
    }
}

/// Results.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchReport {
    /// Warm-path samples taken.
    pub warm_samples: u32,
    /// Warm-path AllocIP p50 (ms, client side, over the unix socket).
    pub warm_p50_ms: f64,
    /// Warm-path AllocIP p99 (ms).
    pub warm_p99_ms: f64,
    /// Pods churned.
    pub churn_pods: u32,
    /// Parallel clients.
    pub concurrency: u32,
    /// Wall time of the churn (s).
    pub churn_secs: f64,
    /// AllocIP p50 during the churn (ms).
    pub churn_p50_ms: f64,
    /// AllocIP p99 during the churn (ms).
    pub churn_p99_ms: f64,
    /// Cloud calls made during the churn.
    pub cloud_calls: u64,
    /// Cloud calls per churned pod.
    pub cloud_calls_per_pod: f64,
    /// Cloud calls of the churn by action.
    pub calls_by_action: BTreeMap<String, u64>,
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[idx.min(sorted_ms.len() - 1)]
}

fn req(name: &str) -> pb::AllocIpRequest {
    pb::AllocIpRequest {
        pod: Some(pb::PodRef {
            namespace: "bench".into(),
            name: name.into(),
            container_id: format!("{name}-sandbox"),
            uid: String::new(),
        }),
        netns: String::new(),
        if_name: "eth0".into(),
        ip: String::new(),
    }
}

fn rel(name: &str) -> pb::ReleaseIpRequest {
    pb::ReleaseIpRequest {
        pod: Some(pb::PodRef {
            namespace: "bench".into(),
            name: name.into(),
            container_id: format!("{name}-sandbox"),
            uid: String::new(),
        }),
        reason: "bench".into(),
        if_name: "eth0".into(),
    }
}

fn rpc_err(e: tonic::Status) -> DaemonError {
    DaemonError::NotReady(format!("bench RPC failed: {} {}", e.code(), e.message()))
}

/// Run the pool benchmark: start a daemon on `opts.work_dir`, measure, stop it.
pub async fn bench_pool<C: Cloud, M: Metadata>(
    cloud: C,
    meta: M,
    opts: BenchOptions,
) -> Result<BenchReport> {
    std::fs::create_dir_all(&opts.work_dir)
        .map_err(|e| DaemonError::io(format!("create {}", opts.work_dir.display()), e))?;
    let mut cfg = DaemonConfig {
        socket_path: opts.work_dir.join("eni.socket"),
        state_dir: opts.work_dir.join("state"),
        gc_period: Duration::from_secs(3600),
        gc_grace: Duration::ZERO,
        ..Default::default()
    };
    cfg.pool.min_idle = opts.min_idle;
    cfg.pool.max_idle = opts.max_idle;
    cfg.pool.ip_reuse_cooldown = Duration::from_millis(opts.cooldown_ms);
    cfg.pool.sync_period = Duration::from_secs(1);
    let socket = cfg.socket_path.clone();
    let daemon = Daemon::start(cfg, cloud, meta, LocalPodSource::new(None)).await?;
    let result = measure(&daemon, &socket, &opts).await;
    daemon.stop().await?;
    result
}

async fn measure<C: Cloud, M: Metadata>(
    daemon: &Daemon<C, M, LocalPodSource>,
    socket: &std::path::Path,
    opts: &BenchOptions,
) -> Result<BenchReport> {
    let pool = daemon.pool().ok_or_else(|| {
        DaemonError::Config(
            "the pool benchmark needs an ENI pool (mode shared or exclusive)".into(),
        )
    })?;
    let ch = terway_rpc::connect_unix(socket, Duration::from_secs(5))
        .await
        .map_err(|e| DaemonError::NotReady(e.to_string()))?;
    let mut client = TerwayBackendClient::new(ch);
    let idle = || pool.with_state(|s| s.counts(now_ms()).idle);

    // Warm path: every sample starts with at least one idle slot, so it never waits on the cloud.
    let mut warm = Vec::new();
    for i in 0..opts.warm_samples {
        let deadline = Instant::now() + Duration::from_secs(60);
        while idle() == 0 {
            if Instant::now() > deadline {
                return Err(DaemonError::NotReady(
                    "the pool never refilled during the warm phase".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let name = format!("warm-{i}");
        let t = Instant::now();
        client.alloc_ip(req(&name)).await.map_err(rpc_err)?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        client.release_ip(rel(&name)).await.map_err(rpc_err)?;
    }
    warm.sort_by(f64::total_cmp);

    // Churn: every pod allocates and releases once, `concurrency` at a time.
    let calls_before = pool.recent_calls_total_by_action();
    let count_before = pool.cloud_call_count();
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..opts.concurrency.max(1) {
        let mut c = client.clone();
        let (n, step) = (opts.churn_pods, opts.concurrency.max(1));
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w;
            while i < n {
                let name = format!("churn-{i}");
                let t = Instant::now();
                loop {
                    match c.alloc_ip(req(&name)).await {
                        Ok(_) => break,
                        Err(e)
                            if matches!(
                                e.code(),
                                tonic::Code::Unavailable | tonic::Code::Aborted
                            ) =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => return Err(rpc_err(e)),
                    }
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                c.release_ip(rel(&name)).await.map_err(rpc_err)?;
                i += step;
            }
            Ok::<_, DaemonError>(lat)
        }));
    }
    let mut churn = Vec::new();
    for w in workers {
        churn.extend(
            w.await
                .map_err(|e| DaemonError::NotReady(format!("bench worker: {e}")))??,
        );
    }
    let churn_secs = started.elapsed().as_secs_f64();
    churn.sort_by(f64::total_cmp);
    let cloud_calls = pool.cloud_call_count() - count_before;
    let mut calls_by_action = pool.recent_calls_total_by_action();
    for (k, v) in calls_before {
        if let Some(x) = calls_by_action.get_mut(&k) {
            *x -= v.min(*x);
        }
    }
    calls_by_action.retain(|_, v| *v > 0);
    Ok(BenchReport {
        warm_samples: opts.warm_samples,
        warm_p50_ms: percentile(&warm, 0.50),
        warm_p99_ms: percentile(&warm, 0.99),
        churn_pods: opts.churn_pods,
        concurrency: opts.concurrency,
        churn_secs,
        churn_p50_ms: percentile(&churn, 0.50),
        churn_p99_ms: percentile(&churn, 0.99),
        cloud_calls,
        cloud_calls_per_pod: cloud_calls as f64 / f64::from(opts.churn_pods.max(1)),
        calls_by_action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
