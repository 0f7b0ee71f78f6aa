//! `terway-lab bench …`: benchmarks against the peers, measured side by side in one run on this machine
//! (issue 7): CNI latency vs the reference plugins, pool churn against the emulated cloud, datapath
//! throughput/latency vs node↔node, daemon footprint, cloud client/emulator throughput, warm-path AllocIP.
//! Results print as tables; `--json` prints one JSON document; `--plot FILE.png|svg` draws the charts.
//! Everything runs in namespaces the benchmark (or the lab it brings up) creates. See docs/benchmarks.md.

pub(crate) mod churn;
mod cloud;
mod cni;
mod datapath;
mod exec;
mod floors;
mod footprint;
mod k8s;
mod lab;
mod plot;
mod policy;
mod pool;
pub(crate) mod report;
mod stats;

use std::path::PathBuf;

use serde_json::json;

use report::{targets_table, Section};

/// Arguments of `terway-lab bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub what: BenchCmd,
    /// Print one JSON document (every figure in ms, per-second or bytes) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Draw the charts to FILE.png or FILE.svg.
    #[arg(long, global = true, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Use this running lab instead of bringing up (and tearing down) a fresh one.
    #[arg(long, global = true)]
    pub lab: Option<String>,
}

/// The benchmarks.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCmd {
    /// CNI ADD/DEL latency and pods/s: terway vs bridge+host-local and ptp+host-local, plus floors.
    Cni(CniOpts),
    /// Pods created and deleted at a steady rate on a cold pool with realistic cloud latencies.
    Churn(ChurnOpts),
    /// iperf3 throughput and TCP ping-pong latency: pod↔pod same node, cross node, vs node↔node.
    Datapath(DatapathOpts),
    /// Daemon RSS and CPU time idle and with pods; binary sizes.
    Footprint(FootprintOpts),
    /// Emulator throughput (requests/s) and cloud client overhead per call.
    Cloud(CloudOpts),
    /// Warm-path AllocIP latency over the unix socket; cloud calls per pod in a churn with pool 5/10.
    Pool(PoolOpts),
    /// Pod creation → IP and → Ready through the real Kubernetes path: terway vs bridge+host-local.
    K8s(k8s::K8sOpts),
    /// NetworkPolicy create → enforced for 1/10/100 policies; pod start and datapath with 100 vs none.
    Policy(policy::PolicyOpts),
    /// Everything above with the given sizes.
    All(AllOpts),
}

/// `bench cni` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct CniOpts {
    /// Pods per run.
    #[arg(long, default_value_t = 200)]
    pub pods: usize,
    /// Concurrent callers in the concurrent run.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Only the reference plugins and floors (no lab; for smoke tests and machines without terwayd).
    #[arg(long)]
    pub references_only: bool,
}

/// `bench churn` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct ChurnOpts {
    /// Pods created (and deleted) in total.
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    /// Pod creations per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds each pod lives before it is deleted.
    #[arg(long, default_value_t = 5.0)]
    pub lifetime: f64,
    /// `min_pool_size` of the node.
    #[arg(long, default_value_t = 5)]
    pub min_pool: u32,
    /// `max_pool_size` of the node.
    #[arg(long, default_value_t = 10)]
    pub max_pool: u32,
    /// ENI attach delay (`MIN-MAX` ms).
    #[arg(long, default_value = "1500-2500")]
    pub attach_delay_ms: String,
    /// Run this arrival trace (`{"pods": [{"at_ms", "lifetime_ms"}]}`, e.g. from `simulate --trace-out`)
    /// instead of --pods/--rate/--lifetime.
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
    /// Spacing of generated arrivals.
    #[arg(long, value_enum, default_value = "steady")]
    pub arrivals: crate::simulate::trace::Arrivals,
    /// Seed of generated Poisson arrivals (`simulate` seeds its attach times with it too).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds the run goes on after the last pod is deleted, while the pool trims back to its watermarks
    /// (its calls count as the drain).
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
}

/// `MIN-MAX` (or `N`) milliseconds, as `--attach-delay-ms` takes them.
pub fn parse_range_ms(s: &str) -> anyhow::Result<(u64, u64)> {
    crate::up::parse_delay(s)
}

/// `bench datapath` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct DatapathOpts {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Round trips per latency test.
    #[arg(long, default_value_t = 5000)]
    pub round_trips: usize,
}

/// `bench footprint` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct FootprintOpts {
    /// Pods on the node for the loaded measurement.
    #[arg(long, default_value_t = 200)]
    pub pods: usize,
    /// Seconds of CPU-time sampling in each state.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// `bench cloud` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct CloudOpts {
    /// Requests per measurement.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Concurrent callers for the throughput measurement.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// `bench pool` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolOpts {
    /// Warm-path AllocIP/ReleaseIP round trips.
    #[arg(long, default_value_t = 1000)]
    pub allocs: usize,
    /// Pods in the churn (min/max pool 5/10).
    #[arg(long, default_value_t = 1000)]
    pub churn_pods: usize,
}

/// `bench all` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct AllOpts {
    /// Pods for cni and footprint.
    #[arg(long, default_value_t = 200)]
    pub pods: usize,
    /// Pods for churn and the pool churn.
    #[arg(long, default_value_t = 1000)]
    pub churn_pods: usize,
}

/// Options every benchmark sees.
#[derive(Debug, Clone)]
pub struct CommonOpts {
    /// JSON output (progress lines stay off stdout either way).
    pub json: bool,
    /// Existing lab to use.
    pub lab: Option<String>,
}

fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string());
    let mem_kb = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
    json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "memory_bytes": mem_kb.map(|k| k * 1024),
        "loadavg": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "unix_time_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    })
}

/// `terway-lab bench …`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let opts = CommonOpts {
        json: args.json,
        lab: args.lab.clone(),
    };
    let mut sections: Vec<Section> = Vec::new();
    let mut push = |name: &'static str, r: anyhow::Result<Section>| match r {
        Ok(s) => sections.push(s),
        Err(e) => {
            let mut s = Section::new(name);
            s.json = json!({ "error": format!("{e:#}") });
            sections.push(s);
        }
    };
    match &args.what {
        BenchCmd::Cni(o) => push(
            "cni",
            cni::bench(
                &opts,
                o.pods,
                o.concurrency,
                opts.lab.as_deref(),
                o.references_only,
            ),
        ),
        BenchCmd::Churn(o) => push("churn", churn::bench(&opts, o)),
        BenchCmd::Datapath(o) => push("datapath", datapath::bench(&opts, o)),
        BenchCmd::Footprint(o) => push("footprint", footprint::bench(&opts, o)),
        BenchCmd::Cloud(o) => push("cloud", cloud::bench(&opts, o)),
        BenchCmd::Pool(o) => push("pool", pool::bench(&opts, o)),
        BenchCmd::K8s(o) => push("k8s", k8s::bench(&opts, o)),
        BenchCmd::Policy(o) => push("policy", policy::bench(&opts, o)),
        BenchCmd::All(o) => {
            push(
                "cloud",
                cloud::bench(
                    &opts,
                    &CloudOpts {
                        requests: 2000,
                        concurrency: 16,
                    },
                ),
            );
            push(
                "cni",
                cni::bench(&opts, o.pods, 8, opts.lab.as_deref(), false),
            );
            push(
                "footprint",
                footprint::bench(
                    &opts,
                    &FootprintOpts {
                        pods: o.pods,
                        seconds: 10,
                    },
                ),
            );
            push(
                "datapath",
                datapath::bench(
                    &opts,
                    &DatapathOpts {
                        seconds: 5,
                        round_trips: 5000,
                    },
                ),
            );
            push(
                "pool",
                pool::bench(
                    &opts,
                    &PoolOpts {
                        allocs: 1000,
                        churn_pods: o.churn_pods,
                    },
                ),
            );
            let churn = ChurnOpts {
                pods: o.churn_pods,
                rate: 10.0,
                lifetime: 5.0,
                min_pool: 5,
                max_pool: 10,
                attach_delay_ms: "1500-2500".into(),
                trace: None,
                arrivals: crate::simulate::trace::Arrivals::Steady,
                seed: 1,
                settle: 3.0,
            };
            push("churn", churn::bench(&opts, &churn));
        }
    }
    if let Some(path) = &args.plot {
        let charts: Vec<_> = sections
            .iter()
            .flat_map(|s| s.charts.iter().cloned())
            .collect();
        plot::draw(path, &charts)?;
    }
    if args.json {
        let mut doc = serde_json::Map::new();
        doc.insert("machine".into(), machine());
        for s in &sections {
            doc.insert(s.name.into(), s.json.clone());
        }
        let targets: Vec<_> = sections
            .iter()
            .flat_map(|s| s.targets.iter().cloned())
            .collect();
        doc.insert("targets".into(), serde_json::to_value(targets)?);
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Object(doc))?
        );
    } else {
        let m = machine();
        println!(
            "machine: {} CPU(s), kernel {}, load {}",
            m["cpus"],
            m["kernel"].as_str().unwrap_or("?"),
            m["loadavg"].as_str().unwrap_or("?")
        );
        for s in &sections {
            println!();
            if let Some(e) = s.json.get("error").and_then(|v| v.as_str()) {
                println!("bench {}: FAILED: {e}", s.name);
                continue;
            }
            for t in &s.tables {
                println!("{}", t.render());
            }
            if let Some(errs) = s
                .json
                .get("errors")
                .and_then(|v| v.as_array())
                .filter(|a| !a.is_empty())
            {
                for e in errs {
                    println!("note: {}", e.as_str().unwrap_or(""));
                }
            }
        }
        if let Some(t) = targets_table(&sections) {
            println!("\n{}", t.render());
        }
        if let Some(p) = &args.plot {
            println!("plot written to {}", p.display());
        }
    }
    Ok(())
}
