//! `bench cloud`: the emulated cloud's throughput (requests/s) and the cloud client's overhead per call,
//! using `terway_cloud::bench` (the client crate's own bounded benchmark) against an emulator started here
//! on loopback with throttling off, so the figures are the server's and the client's, not the rate limits'.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use terway_cloud::bench::{BenchOptions, BenchReport};
use terway_cloud::CloudConfig;
use terway_emulator::{Emulator, EmulatorConfig, NoFabric};

use super::report::{fmt, Section, Table};
use super::{CloudOpts, CommonOpts};

/// `bench cloud`.
pub fn bench(_opts: &CommonOpts, o: &CloudOpts) -> anyhow::Result<Section> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report: BenchReport = rt.block_on(async {
        let cfg = EmulatorConfig {
            throttling: false,
            ..EmulatorConfig::default()
        };
        let vsw = cfg.vswitches.first().map(|v| v.id.clone());
        let emu = Emulator::start(cfg, Arc::new(NoFabric))?;
        let key = emu.access_key();
        let ccfg =
            CloudConfig::for_endpoint(&emu.region_id(), &emu.api_url(), &key.id, &key.secret);
        // The phase length follows from the requested size at a conservative 500 req/s, bounded.
        let duration_ms = ((o.requests as u64) * 2).clamp(500, 20_000);
        let opts = BenchOptions {
            duration_ms,
            concurrency: o.concurrency,
            vswitch_id: vsw,
            overhead_iterations: o.requests.clamp(100, 100_000) as u32,
            ..BenchOptions::default()
        };
        let r = terway_cloud::bench::run(ccfg, opts).await;
        emu.shutdown().await;
        r.map_err(|e| anyhow::anyhow!("cloud benchmark: {e}"))
    })?;
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(section(&report))
}

fn section(r: &BenchReport) -> Section {
    let mut s = Section::new("cloud");
    let mut t = Table::new(
        format!(
            "Emulated cloud over HTTP, {} concurrent callers (latency ms)",
            r.concurrency
        ),
        &[
            "workload",
            "calls",
            "errors",
            "requests/s",
            "p50",
            "p99",
            "max",
        ],
    );
    for p in std::iter::once(&r.read).chain(r.write.as_ref()) {
        t.row(vec![
            p.workload.clone(),
            p.calls.to_string(),
            p.errors.to_string(),
            fmt(Some(p.requests_per_sec), 0),
            fmt(Some(p.latency_ms_p50), 2),
            fmt(Some(p.latency_ms_p99), 2),
            fmt(Some(p.latency_ms_max), 2),
        ]);
    }
    s.tables.push(t);
    let mut c = Table::new(
        "Cloud client CPU per call without I/O (µs)",
        &["sign+encode+parse", "of which ACS3 signing"],
    );
    c.row(vec![
        fmt(Some(r.client_overhead_us_per_call), 1),
        fmt(Some(r.signing_us_per_call), 1),
    ]);
    s.tables.push(c);
    let ms = |us: f64| us / 1000.0;
    s.json = json!({
        "concurrency": r.concurrency,
        "read": r.read,
        "write": r.write,
        "read_requests_per_s": r.read.requests_per_sec,
        "write_requests_per_s": r.write.as_ref().map(|w| w.requests_per_sec),
        "client_overhead_ms_per_call": ms(r.client_overhead_us_per_call),
        "signing_ms_per_call": ms(r.signing_us_per_call),
        // Share of a read call's median latency spent in the client's own CPU work.
        "client_overhead_share_of_read_p50": (r.read.latency_ms_p50 > 0.0).then(|| ms(r.client_overhead_us_per_call) / r.read.latency_ms_p50),
    });
    s
}
