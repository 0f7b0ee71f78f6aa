//! `bench pool`: the daemon's warm path — AllocIP then ReleaseIP over its unix socket, as the CNI binary
//! calls them, with the pool already holding idle IPs — and the cloud calls per pod of a churn with
//! min/max pool 5/10 (the emulator's default latencies; `bench churn` adds realistic ones).

use std::time::{Duration, Instant};

use serde_json::json;
use terway_rpc::v1::terway_backend_client::TerwayBackendClient;
use terway_rpc::v1::{AllocIpRequest, PodRef, ReleaseIpRequest};

use super::churn;
use super::cni::terway;
use super::lab::{wait_idle, Lab, LabSpec};
use super::report::{fmt, Section, Table};
use super::stats::{per_second, Summary};
use super::{ChurnOpts, CommonOpts, PoolOpts};
use crate::simulate::trace::Arrivals;

/// Warm-path AllocIP/ReleaseIP on one connection: in rounds, allocate as many pods as the pool has idle
/// IPs, then release them, then wait for the released IPs to leave their reuse cooldown — so every timed
/// AllocIP is served from idle IPs and never waits for the cloud. Returns (alloc, release, busy time).
async fn warm_path(
    socket: &std::path::Path,
    n: usize,
    run_id: &str,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, Duration)> {
    let ch = terway_rpc::connect_unix(socket, Duration::from_secs(5)).await?;
    let mut client = TerwayBackendClient::new(ch);
    let mut alloc = Vec::with_capacity(n);
    let mut release = Vec::with_capacity(n);
    let mut busy = Duration::ZERO;
    let mut i = 0;
    while i < n {
        let idle = wait_idle(socket, 1, Duration::from_secs(120)).await?.idle as usize;
        let round: Vec<PodRef> = (i..n.min(i + idle))
            .map(|j| PodRef {
                namespace: "bench".into(),
                name: format!("warm-{run_id}-{j}"),
                container_id: format!("{run_id}{j:058}"),
                uid: format!("{run_id}-{j}"),
            })
            .collect();
        let t0 = Instant::now();
        for pod in &round {
            let t = Instant::now();
            client
                .alloc_ip(AllocIpRequest {
                    pod: Some(pod.clone()),
                    netns: String::new(),
                    if_name: "eth0".into(),
                    ip: String::new(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("AllocIP for {}: {e}", pod.name))?;
            alloc.push(t.elapsed());
        }
        for pod in &round {
            let t = Instant::now();
            client
                .release_ip(ReleaseIpRequest {
                    pod: Some(pod.clone()),
                    reason: "bench".into(),
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("ReleaseIP for {}: {e}", pod.name))?;
            release.push(t.elapsed());
        }
        busy += t0.elapsed();
        i += round.len();
        // Let the released IPs leave their cooldown before the next round.
        let want = idle as u32;
        let _ = wait_idle(socket, want, Duration::from_secs(30)).await;
    }
    Ok((alloc, release, busy))
}

/// `bench pool`.
pub fn bench(opts: &CommonOpts, o: &PoolOpts) -> anyhow::Result<Section> {
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let churn_opts = ChurnOpts {
        pods: o.churn_pods,
        rate: 10.0,
        lifetime: 5.0,
        min_pool: 5,
        max_pool: 10,
        attach_delay_ms: "200-600".into(),
        trace: None,
        arrivals: Arrivals::Steady,
        seed: 1,
        settle: 3.0,
    };
    let lab = match &opts.lab {
        Some(n) => Lab::existing(n)?,
        None => Lab::up(&LabSpec {
            modes: vec!["shared"],
            min_pool: 5,
            max_pool: 10,
            attach_delay_ms: churn_opts.attach_delay_ms.clone(),
        })?,
    };
    let node = lab.node("shared")?.clone();
    // The warm path runs in rounds of "all idle IPs"; a larger pool makes the rounds fewer.
    let warm_lab = match &opts.lab {
        Some(_) => None,
        None => Some(Lab::up(&LabSpec {
            modes: vec!["shared"],
            min_pool: 50,
            max_pool: 50,
            attach_delay_ms: "200-600".into(),
        })?),
    };
    let warm_node = warm_lab
        .as_ref()
        .map(|l| l.node("shared").cloned())
        .transpose()?
        .unwrap_or_else(|| node.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !opts.json {
        eprintln!(
            "bench pool: {} warm AllocIP/ReleaseIP round trips…",
            o.allocs
        );
    }
    let (alloc, release, wall) =
        rt.block_on(async { warm_path(&warm_node.socket, o.allocs, run_id).await })?;
    drop(warm_lab);
    let a = Summary::of(&alloc);
    let r = Summary::of(&release);
    if !opts.json {
        eprintln!("bench pool: churn of {} pods with pool 5/10…", o.churn_pods);
    }
    let subject = terway(&lab, &node.name)?;
    let trace = churn::trace_of(&churn_opts)?;
    let ch = churn::churn(&lab, &subject, &trace, &churn_opts, run_id, opts.json)?;
    let mut sec = churn::section(
        "pool",
        &ch,
        &churn_opts,
        json!({ "api_latency_ms": "emulator default (0)" }),
    );
    let mut t = Table::new(
        "Warm path over the unix socket (ms)",
        &["call", "p50", "p90", "p99", "max", "round trips/s"],
    );
    for (name, s) in [("AllocIP", a), ("ReleaseIP", r)] {
        t.row(vec![
            name.into(),
            fmt(s.map(|x| x.p50_ms), 3),
            fmt(s.map(|x| x.p90_ms), 3),
            fmt(s.map(|x| x.p99_ms), 3),
            fmt(s.map(|x| x.max_ms), 3),
            fmt(per_second(alloc.len(), wall), 0),
        ]);
    }
    sec.tables.insert(0, t);
    if let Some(obj) = sec.json.as_object_mut() {
        obj.insert("warm_alloc".into(), json!(a));
        obj.insert("warm_release".into(), json!(r));
        obj.insert(
            "warm_round_trips_per_s".into(),
            json!(per_second(alloc.len(), wall)),
        );
    }
    Ok(sec)
}
