//! `terway-lab simulate`: the daemon's pool decision code against a model of the cloud, in virtual time.
//! It answers "how should I set min/max pool for this load?" in seconds instead of a churn per setting: the
//! same trace `bench churn` runs (`--trace`, or generated arrivals), the same report, and `--sweep` over
//! eni_conf knobs with the frontier and a recommendation. Layout: [`trace`] (arrivals), [`cloud`] (the
//! modelled cloud), [`pool`] (the pool loop in virtual time), [`sweep`] (grids and the recommendation).

pub mod cloud;
pub mod pool;
pub mod sweep;
pub mod trace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use terway_core::EniConf;
use terway_daemon::config::PoolConfig;
use terway_daemon::pool::decide::capacity;
use terway_daemon::pool::EniPoolKind;

use crate::bench::churn::{self, ChurnResult, PodOutcome, PoolSample, API_LATENCY_MS};
use crate::bench::{parse_range_ms, ChurnOpts};
use cloud::{CloudModel, SimCloud};
use pool::{Costs, SimPool, WALL_BASE_MS};
use trace::Trace;

/// `terway-lab simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The node's eni_conf (JSON); absent: the lab node `bench churn` uses (its --min-pool/--max-pool,
    /// reuse cooldown 2 s, pool sync 5 s).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The trace (`--trace`, or `--pods`/`--rate`/`--lifetime`/`--arrivals`/`--seed`), the pool when no
    /// --config is given (`--min-pool`/`--max-pool`) and the attach time: the flags of `bench churn`, so the
    /// same flags run the same trace in both.
    #[command(flatten)]
    pub churn: ChurnOpts,
    /// Write the trace that ran (to replay it live: `bench churn --trace FILE`).
    #[arg(long)]
    pub trace_out: Option<PathBuf>,
    /// ENI detach time (`MIN-MAX` ms), the emulator's default.
    #[arg(long, default_value = "100-400")]
    pub detach_delay_ms: String,
    /// Instance type (ENI and address quotas from the emulator's catalogue).
    #[arg(long, default_value = "ecs.g7.4xlarge")]
    pub instance_type: String,
    /// Added to every cloud call, ms, on top of the per-action latency `bench churn` injects.
    #[arg(long, default_value_t = 3)]
    pub api_overhead_ms: u64,
    /// One durable commit of the daemon's store, ms.
    #[arg(long, default_value_t = 2.0)]
    pub commit_ms: f64,
    /// An ADD's cost besides waiting for an address (plugin exec, AllocIP, datapath), ms: the warm ADD
    /// p50 `bench churn` measures on this machine.
    #[arg(long, default_value_t = 45.0)]
    pub add_overhead_ms: f64,
    /// CPUs of the node that ADDs share (default: this machine's, as for `bench churn` here).
    #[arg(long)]
    pub node_cpus: Option<usize>,
    /// ENI garbage-collection period, s (the lab's terwayd runs it every 15 s).
    #[arg(long, default_value_t = 15)]
    pub gc_period_s: u64,
    /// Grid of eni_conf knobs to try: `min_pool_size=0..20,max_pool_size=5..40` (`A..B`, `A..B:STEP`
    /// or `v1|v2|…`); prints every point, the frontier and a recommendation.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Everything one simulation needs besides the eni_conf.
pub struct Setup {
    trace: Trace,
    model: CloudModel,
    costs: Costs,
    eni_quantity: u32,
    ips_per_eni: u32,
    args: SimulateArgs,
}

/// What one simulation measured, in `bench churn`'s shapes.
pub struct SimResult {
    /// Outcomes, calls and samples as a churn result.
    pub churn: ChurnResult,
    /// Addresses held without a pod, integrated over the run (IP·hours).
    pub idle_ip_hours: f64,
    /// Calls the client rate limiter held back (the cloud never throttles a limited client).
    pub limiter_waits: u64,
}

/// `terway-lab simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let conf = base_conf(&args)?;
    let setup = Setup::new(args)?;
    if let Some(path) = &setup.args.trace_out {
        std::fs::write(path, serde_json::to_vec_pretty(&setup.trace)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(spec) = setup.args.sweep.clone() {
        return sweep::run(&setup, &conf, &spec);
    }
    let r = setup.simulate(&conf)?;
    let section = setup.section(&conf, &r)?;
    if setup.args.json {
        println!("{}", serde_json::to_string_pretty(&section.json)?);
    } else {
        for t in &section.tables {
            println!("{}", t.render());
        }
        if let Some(t) = crate::bench::report::targets_table(std::slice::from_ref(&section)) {
            println!("{}", t.render());
        }
    }
    Ok(())
}

/// The eni_conf the simulation starts from, as JSON (sweeps change keys of it).
fn base_conf(args: &SimulateArgs) -> anyhow::Result<Value> {
    match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            // Fail here, with the key named, rather than once per sweep point.
            EniConf::from_value(v.clone())
                .with_context(|| format!("eni_conf {}", path.display()))?;
            Ok(v)
        }
        None => {
            let mut v = crate::node_files::lab_pool_knobs();
            if let Some(o) = v.as_object_mut() {
                o.insert("min_pool_size".into(), json!(args.churn.min_pool));
                o.insert("max_pool_size".into(), json!(args.churn.max_pool));
            }
            Ok(v)
        }
    }
}

impl Setup {
    /// Resolve the trace, the cloud model and the instance type's quotas.
    pub fn new(args: SimulateArgs) -> anyhow::Result<Self> {
        let trace = churn::trace_of(&args.churn)?;
        let spec = terway_emulator::catalogue::builtin()
            .into_iter()
            .find(|s| s.instance_type == args.instance_type)
            .with_context(|| {
                format!(
                    "instance type {} is not in the emulator's catalogue",
                    args.instance_type
                )
            })?;
        let model = CloudModel {
            latency_ms: API_LATENCY_MS
                .iter()
                .map(|(a, ms)| (a.to_string(), *ms))
                .collect(),
            overhead_ms: args.api_overhead_ms,
            attach_ms: parse_range_ms(&args.churn.attach_delay_ms)?,
            detach_ms: parse_range_ms(&args.detach_delay_ms)?,
            rate_limits: BTreeMap::new(),
        };
        let ms = |v: f64, flag: &str| {
            if v >= 0.0 && v.is_finite() {
                Ok(Duration::from_secs_f64(v / 1000.0))
            } else {
                Err(anyhow::anyhow!("{flag} must be zero or more ms, not {v}"))
            }
        };
        let costs = Costs {
            commit: ms(args.commit_ms, "--commit-ms")?,
            add_overhead: ms(args.add_overhead_ms, "--add-overhead-ms")?,
            node_cpus: match args.node_cpus {
                Some(0) => anyhow::bail!("--node-cpus must be at least 1"),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            gc_period: Duration::from_secs(args.gc_period_s.max(1)),
            settle: churn::settle_time(&args.churn)?,
        };
        Ok(Setup {
            trace,
            model,
            costs,
            eni_quantity: spec.eni_quantity,
            ips_per_eni: spec.eni_private_ip_quantity,
            args,
        })
    }

    /// Run one simulation with eni_conf `conf`.
    pub fn simulate(&self, conf: &Value) -> anyhow::Result<SimResult> {
        let eni_conf = EniConf::from_value(conf.clone()).context("eni_conf")?;
        let cfg = PoolConfig::from(&eni_conf);
        let kind = match eni_conf.mode.as_str() {
            "eni-only" | "exclusive" => EniPoolKind::Exclusive,
            _ => EniPoolKind::SharedIps,
        };
        let cap = capacity(self.eni_quantity, self.ips_per_eni, &cfg, kind);
        let mut model = self.model.clone();
        model.rate_limits = eni_conf.rate_limit.clone();
        let cloud = SimCloud::new(model, self.args.churn.seed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()?;
        let local = tokio::task::LocalSet::new();
        let (runs, start_ms, end_ms, samples, pool) = local.block_on(&rt, async {
            let pool = SimPool::new(cfg, kind, cap, self.costs, cloud);
            let (runs, start_ms) = pool.run(&self.trace).await;
            let end_ms = pool.elapsed_ms();
            let samples = pool.samples.borrow().clone();
            (runs, start_ms, end_ms, samples, pool)
        });
        drop(local);
        let cloud = pool
            .into_cloud()
            .context("the simulated pool is still referenced after its run")?;
        let idle_ip_hours = samples
            .windows(2)
            .map(|w| f64::from(w[0].total - w[0].in_use) * (w[1].t_s - w[0].t_s))
            .sum::<f64>()
            / 3600.0;
        let outcomes = runs
            .into_iter()
            .map(|r| PodOutcome {
                started: Duration::from_millis(r.started_ms.saturating_sub(start_ms)),
                add: r.add,
                del: None,
                waited_for: r.waited_for,
            })
            .collect();
        let churn = ChurnResult {
            outcomes,
            samples: samples
                .iter()
                .map(|s| PoolSample {
                    t_s: s.t_s,
                    total: s.total,
                    idle: s.idle,
                    in_use: s.in_use,
                })
                .collect(),
            calls: cloud.calls.clone(),
            wall: Duration::from_millis(end_ms.saturating_sub(start_ms)),
            start_ms: WALL_BASE_MS + start_ms,
            arrival_span: Duration::from_millis(self.trace.arrival_span_ms()),
        };
        Ok(SimResult {
            churn,
            idle_ip_hours,
            limiter_waits: cloud.limiter_waits.0,
        })
    }

    /// The churn options this setup corresponds to (for `bench churn`'s report).
    fn churn_opts(&self, conf: &Value) -> ChurnOpts {
        let get = |k: &str| conf.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
        ChurnOpts {
            pods: self.trace.pods.len(),
            min_pool: get("min_pool_size"),
            max_pool: get("max_pool_size"),
            ..self.args.churn.clone()
        }
    }

    /// The report of one simulation: `bench churn`'s, plus idle IP·hours and limiter waits.
    pub fn section(
        &self,
        conf: &Value,
        r: &SimResult,
    ) -> anyhow::Result<crate::bench::report::Section> {
        let o = self.churn_opts(conf);
        let mut s = churn::section(
            "simulate",
            &r.churn,
            &o,
            json!({ "simulated": true, "eni_conf": conf, "instance_type": self.args.instance_type,
                    "api_overhead_ms": self.args.api_overhead_ms, "commit_ms": self.args.commit_ms,
                    "add_overhead_ms": self.args.add_overhead_ms, "node_cpus": self.costs.node_cpus, "seed": self.args.churn.seed }),
        );
        if let Some(t) = s.tables.first_mut() {
            t.title = format!("Simulated {}", t.title.to_lowercase());
            t.row(vec![
                "idle IP·hours (held without a pod)".into(),
                format!("{:.4}", r.idle_ip_hours),
            ]);
            t.row(vec![
                "calls held back by the client rate limiter".into(),
                r.limiter_waits.to_string(),
            ]);
        }
        if let Some(obj) = s.json.as_object_mut() {
            obj.insert("idle_ip_hours".into(), json!(r.idle_ip_hours));
            obj.insert("limiter_waits".into(), json!(r.limiter_waits));
        }
        Ok(s)
    }

    /// The attach time's upper bound, ms.
    pub fn attach_max_ms(&self) -> u64 {
        self.model.attach_ms.1
    }
}
