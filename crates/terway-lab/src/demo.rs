//! `terway-lab demo`: the whole story on one machine — up 3 nodes (shared, exclusive, VPC-route), network
//! 30 pods through the real CNI and daemons, prove traffic with the connectivity matrix and the
//! anti-spoofing check, churn a few pods and prove it again, then tear everything down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::check;
use crate::plan::{LabPlan, NodeMode};
use crate::pod;
use crate::state;
use crate::up::{self, UpArgs};

/// Set by Ctrl-C: the demo stops taking new work and still tears its lab down.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT/SIGTERM with a flag (not SIG_IGN, which child processes would inherit).
fn catch_interrupts() {
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_interrupt),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
}

/// Stop with an error once Ctrl-C was pressed.
pub fn interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Arguments of `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Pods to create.
    #[arg(long, default_value_t = 30)]
    pub pods: usize,
    /// Pods to delete and re-create during the churn step.
    #[arg(long, default_value_t = 6)]
    pub churn: usize,
    /// Parallel CNI invocations.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Leave the lab up at the end (for poking around; `terway-lab down NAME` later).
    #[arg(long)]
    pub keep: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Without Kubernetes: the lab plays the kubelet and runs the CNI itself (no containerd/kubelet).
    #[arg(long)]
    pub no_k8s: bool,
}

fn bar(len: usize, what: &str, quiet: bool) -> ProgressBar {
    let b = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    b.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

/// Spread `count` pods over the nodes, respecting exclusive nodes' ENI capacity (one ENI per pod).
pub fn assign_pods(plan: &LabPlan, count: usize, exclusive_cap: usize) -> Vec<(String, String)> {
    let mut per_node = vec![0usize; plan.nodes.len()];
    let mut out = Vec::new();
    let mut i = 0usize;
    while out.len() < count {
        let n = i % plan.nodes.len();
        i += 1;
        let node = &plan.nodes[n];
        if node.mode == NodeMode::Exclusive && per_node[n] >= exclusive_cap {
            if plan.nodes.iter().all(|x| x.mode == NodeMode::Exclusive) {
                break;
            }
            continue;
        }
        per_node[n] += 1;
        out.push((
            node.name.clone(),
            format!("demo-{}-{}", node.name, per_node[n]),
        ));
    }
    out
}

fn run_parallel(
    plan: &LabPlan,
    work: Vec<(String, String)>,
    parallel: usize,
    add: bool,
    pb: &ProgressBar,
) -> Vec<String> {
    let queue = Mutex::new(work.into_iter().collect::<VecDeque<_>>());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    break;
                }
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some((node, pod_name)) = next else { break };
                let r = if add {
                    pod::add(plan, &node, &pod_name, "default", "eth0").map(|_| ())
                } else {
                    pod::del(plan, &node, &pod_name).map(|_| ())
                };
                if let Err(e) = r {
                    errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{e:#}"));
                }
                pb.inc(1);
            });
        }
    });
    pb.finish();
    errors.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// `terway-lab demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let quiet = args.json;
    catch_interrupts();
    let up_args = UpArgs {
        name: None,
        nodes: 3,
        modes: vec![NodeMode::Shared, NodeMode::Exclusive, NodeMode::VpcRoute],
        node_specs: Vec::new(),
        instance_type: "ecs.g7.4xlarge".into(),
        vswitches: 2,
        pod_vswitches: 0,
        vswitch_prefix: crate::plan::DEFAULT_VSWITCH_PREFIX,
        min_pool: 2,
        max_pool: 10,
        attach_delay_ms: "200-600".into(),
        vpc_cidr: None,
        timeout: None,
        json: false,
        k8s: !args.no_k8s,
        cni: crate::plan::NodeCni::Terway,
        terwayd: crate::plan::TerwaydInstall::Daemonset,
    };
    if !args.no_k8s {
        crate::k8s::Toolbox::find()?;
    }
    if !quiet {
        println!(
            "terway-lab demo: 3 nodes (shared, exclusive, vpc-route){}, {} pods, churn {}",
            if args.no_k8s {
                ""
            } else {
                " running Kubernetes v1.20.2 (containerd + kubelet call terway)"
            },
            args.pods,
            args.churn
        );
    }
    let plan = up::up(&up_args, quiet)?;
    if !quiet {
        println!(
            "lab {} is up ({:.1}s)",
            plan.name,
            started.elapsed().as_secs_f64()
        );
    }
    let result = if args.no_k8s {
        demo_steps(&plan, &args, quiet)
    } else {
        crate::demo_k8s::steps(&plan, args.pods, args.churn, quiet)
    };
    let down_result = if args.keep {
        Ok(())
    } else {
        // `down` keeps going past failures and lists them; a lab with leftovers is not "removed".
        crate::down::down(&plan.name, true).and_then(|report| {
            if report.errors.is_empty() {
                Ok(())
            } else {
                anyhow::bail!(
                    "lab {} was not removed completely: {}",
                    plan.name,
                    report.errors.join("; ")
                )
            }
        })
    };
    if !quiet && !args.keep && down_result.is_ok() {
        println!(
            "lab {} removed; demo took {:.1}s",
            plan.name,
            started.elapsed().as_secs_f64()
        );
    }
    let report = result?;
    down_result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if report.get("ok").and_then(|v| v.as_bool()) == Some(true) {
        Ok(())
    } else {
        anyhow::bail!("demo failed: see the tables above")
    }
}

fn demo_steps(plan: &LabPlan, args: &DemoArgs, quiet: bool) -> anyhow::Result<serde_json::Value> {
    interrupted()?;
    // g7.4xlarge: 8 ENIs, the primary stays with the node → at most 7 exclusive pods.
    let pods = assign_pods(plan, args.pods, 7);
    let t = Instant::now();
    let pb = bar(pods.len(), "creating pods (CNI ADD)", quiet);
    let errors = run_parallel(plan, pods.clone(), args.parallel, true, &pb);
    let add_secs = t.elapsed().as_secs_f64();
    interrupted()?;
    if !errors.is_empty() {
        anyhow::bail!(
            "{} pod(s) failed CNI ADD; first: {}",
            errors.len(),
            errors[0]
        );
    }
    let first = check::check(&plan.name, 0, true)?;
    let first_netns: Vec<String> = state::list_pods(&plan.dir)
        .into_iter()
        .map(|p| p.netns)
        .collect();
    if !quiet {
        println!(
            "\nconnectivity after creating {} pods ({add_secs:.1}s):",
            pods.len()
        );
        print!("{}", check::render(&first));
    }
    interrupted()?;
    // Churn: delete some pods of every node and create new ones.
    let victims: Vec<(String, String)> = pods
        .iter()
        .step_by((pods.len() / args.churn.max(1)).max(1))
        .take(args.churn)
        .cloned()
        .collect();
    let pb = bar(victims.len(), "churn: deleting pods (DEL×2)", quiet);
    let mut errors = run_parallel(plan, victims.clone(), args.parallel, false, &pb);
    let fresh: Vec<(String, String)> = victims
        .iter()
        .map(|(n, p)| (n.clone(), format!("{p}-b")))
        .collect();
    let pb = bar(fresh.len(), "churn: creating pods", quiet);
    errors.extend(run_parallel(plan, fresh, args.parallel, true, &pb));
    if !errors.is_empty() {
        anyhow::bail!(
            "{} churn operation(s) failed; first: {}",
            errors.len(),
            errors[0]
        );
    }
    interrupted()?;
    let second = check::check(&plan.name, 0, true)?;
    if !quiet {
        println!("\nconnectivity after churning {} pods:", victims.len());
        print!("{}", check::render(&second));
        println!(
            "{}",
            if first.ok && second.ok {
                "demo: every check passed"
            } else {
                "demo: SOME CHECKS FAILED"
            }
        );
    }
    let mut pod_netns: Vec<String> = first_netns;
    pod_netns.extend(state::list_pods(&plan.dir).into_iter().map(|p| p.netns));
    pod_netns.sort();
    pod_netns.dedup();
    Ok(serde_json::json!({
        "lab": plan.name,
        "pod_netns": pod_netns,
        "pods": pods.len(),
        "churned": victims.len(),
        "add_seconds": add_secs,
        "first": first,
        "after_churn": second,
        "ok": first.ok && second.ok,
    }))
}
