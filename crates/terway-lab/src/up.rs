//! `terway-lab up`: plan a lab, start its supervisor in the background (a new session, so it outlives
//! this command and the terminal), and wait until every node's daemon answers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ipnet::Ipv4Net;
use serde_json::json;

use crate::plan::{self, LabPlan, LabRequest, NodeMode};
use crate::state::{self, LabState, Phase};

/// Arguments of `up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Lab name (prefix of every namespace; 1-10 of a-z0-9). Random when absent.
    #[arg(long)]
    pub name: Option<String>,
    /// Number of nodes (modes cycle through --mode).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Node modes, cycled over the nodes.
    #[arg(
        long = "mode",
        value_enum,
        value_delimiter = ',',
        default_value = "shared,exclusive,vpc-route"
    )]
    pub modes: Vec<NodeMode>,
    /// Explicit nodes as MODE[:INSTANCE_TYPE], repeatable; replaces --nodes/--mode.
    #[arg(long = "node")]
    pub node_specs: Vec<String>,
    /// Instance type of nodes without an explicit one.
    #[arg(long, default_value = "ecs.g7.4xlarge")]
    pub instance_type: String,
    /// Number of vSwitches (nodes are spread over them).
    #[arg(long, default_value_t = 2)]
    pub vswitches: usize,
    /// vSwitches no node is in, for PodNetworkings (the j-th shares the zone of node vSwitch j).
    #[arg(long, default_value_t = 0)]
    pub pod_vswitches: usize,
    /// Prefix length of each vSwitch (20 = 4093 addresses; 27 = 28, to run a vSwitch out of addresses).
    #[arg(long, default_value_t = crate::plan::DEFAULT_VSWITCH_PREFIX)]
    pub vswitch_prefix: u8,
    /// Idle-IP low watermark per node (`min_pool_size`).
    #[arg(long, default_value_t = 0)]
    pub min_pool: u32,
    /// Idle-IP high watermark per node (`max_pool_size`).
    #[arg(long, default_value_t = 5)]
    pub max_pool: u32,
    /// ENI attach delay in ms: `N` or `MIN-MAX`.
    #[arg(long, default_value = "200-600")]
    pub attach_delay_ms: String,
    /// VPC CIDR (a /16); by default the first 10.x/16 that overlaps none of this machine's networks.
    #[arg(long)]
    pub vpc_cidr: Option<Ipv4Net>,
    /// Seconds to wait for the lab to be ready (default 180, 420 with --k8s: the supervisor's own
    /// waits for nodes, terwayd pods and readiness fit inside it, so their errors are the ones shown).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Print the machine-readable description (see docs/lab.md).
    #[arg(long)]
    pub json: bool,
    /// Run Kubernetes: the control plane in the VPC, containerd + kubelet on every node, the CNI called
    /// by containerd (needs scripts/k8s-prereqs.sh once).
    #[arg(long)]
    pub k8s: bool,
    /// The CNI chain the Kubernetes nodes run (`bridge` is the reference chain, for benchmarks).
    #[arg(long, value_enum, default_value = "terway", requires = "k8s")]
    pub cni: crate::plan::NodeCni,
    /// How terwayd runs on a Kubernetes lab: the `terway-eniip` DaemonSet of deploy/ (the way a user
    /// installs it), or a process per node the lab starts and crashes (`terway-lab daemon …`).
    #[arg(long, value_enum, default_value = "daemonset", requires = "k8s")]
    pub terwayd: crate::plan::TerwaydInstall,
}

/// `N` or `MIN-MAX` milliseconds.
pub(crate) fn parse_delay(s: &str) -> anyhow::Result<(u64, u64)> {
    let bad = || anyhow::anyhow!("delay {s:?}: expected N or MIN-MAX in milliseconds");
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => {
            let v = s.trim().parse().map_err(|_| bad())?;
            Ok((v, v))
        }
    }
}

/// Turn the arguments into a plan request.
pub fn request(args: &UpArgs) -> anyhow::Result<LabRequest> {
    let nodes: Vec<(NodeMode, String)> = if args.node_specs.is_empty() {
        if args.modes.is_empty() {
            anyhow::bail!("--mode needs at least one mode");
        }
        (0..args.nodes)
            .map(|i| (args.modes[i % args.modes.len()], args.instance_type.clone()))
            .collect()
    } else {
        args.node_specs
            .iter()
            .map(|spec| {
                let (m, t) = spec
                    .split_once(':')
                    .unwrap_or((spec.as_str(), args.instance_type.as_str()));
                let mode = <NodeMode as clap::ValueEnum>::from_str(m, true).map_err(|_| {
                    anyhow::anyhow!("--node {spec:?}: mode must be shared, exclusive or vpc-route")
                })?;
                Ok((mode, t.to_string()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    Ok(LabRequest {
        name: args.name.clone(),
        nodes,
        vswitches: args.vswitches,
        pod_vswitches: args.pod_vswitches,
        vswitch_prefix: args.vswitch_prefix,
        min_pool: args.min_pool,
        max_pool: args.max_pool,
        attach_delay_ms: parse_delay(&args.attach_delay_ms)?,
        vpc_cidr: args.vpc_cidr,
        kubernetes: args.k8s.then_some(args.cni),
        terwayd: args.terwayd,
    })
}

/// The machine-readable description of a lab (`up --json`, `status --json`).
pub fn describe(plan: &LabPlan) -> serde_json::Value {
    json!({
        "name": plan.name,
        "dir": plan.dir,
        "vpc_netns": plan.vpc_netns,
        "vpc_cidr": plan.vpc_cidr,
        "api_endpoint": plan.api_url(),
        "metadata_url": plan.metadata_url(),
        "emulator_admin_socket": plan.admin_socket(),
        "outside_host": { "netns": plan.outside.netns, "addr": plan.outside.addr },
        "kubernetes": plan.kubernetes.as_ref().map(|k| json!({
            "api_server": k.api_url(),
            "cni": k.cni,
            "terwayd": if k.daemonset() { "daemonset" } else { "process" },
            // What `kubectl apply -k` installed terway-rs from (a DaemonSet lab only).
            "deploy": k.daemonset().then(|| crate::k8s::deploy::dir(plan)),
            "admin_kubeconfig": crate::k8s::LabPaths::new(&plan.dir).admin_kubeconfig(),
            "kubectl": format!("terway-lab kubectl --lab {} -- get pods -o wide", plan.name),
        })),
        "vswitches": plan.vswitches.iter().map(|v| json!({
            "id": v.id,
            "zone_id": v.zone_id,
            "cidr": v.cidr,
            "nodes": plan.nodes.iter().filter(|n| n.vswitch_id == v.id).map(|n| n.name.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "nodes": plan.nodes.iter().map(|n| json!({
            "name": n.name,
            "netns": n.netns,
            "mode": n.mode,
            "instance_id": n.instance_id,
            "instance_type": n.instance_type,
            "vswitch_id": n.vswitch_id,
            "pod_cidr": n.pod_cidr,
            "daemon_socket": n.socket,
            "state_dir": n.state_dir,
            "cni_config": n.dir.join("cni.json"),
            // A DaemonSet's terwayd reads eni-config and its node's override, and logs to its
            // container (`kubectl logs`).
            "eni_conf": (!plan.terwayd_daemonset()).then(|| n.dir.join("eni_conf.json")),
            "daemon_log": (!plan.terwayd_daemonset()).then(|| n.dir.join("terwayd.log")),
        })).collect::<Vec<_>>(),
    })
}

/// Bring a lab up; returns its plan once ready. On failure everything created is removed again.
pub fn up(args: &UpArgs, quiet: bool) -> anyhow::Result<LabPlan> {
    let req = request(args)?;
    let host = plan::host_networks()
        .map_err(|e| anyhow::anyhow!("cannot list this machine's addresses: {e}"))?;
    let plan = plan::make_plan(&req, &host)?;
    if plan.dir.exists() {
        anyhow::bail!(
            "lab {:?} already exists ({}); pick another --name or `terway-lab down {}`",
            plan.name,
            plan.dir.display(),
            plan.name
        );
    }
    for ns in std::iter::once(&plan.vpc_netns).chain(plan.nodes.iter().map(|n| &n.netns)) {
        if Path::new("/run/netns").join(ns).exists() {
            anyhow::bail!(
                "network namespace {ns} already exists: another lab uses the name {:?}",
                plan.name
            );
        }
    }
    std::fs::create_dir_all(state::pods_dir(&plan.dir))?;
    state::write_json_atomic(&plan.dir.join("plan.json"), &plan)?;
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(plan.dir.join("supervisor.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve-lab")
        .arg("--dir")
        .arg(&plan.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // A new session: the supervisor must outlive this command and ignore the terminal's Ctrl-C.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn()?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} lab {prefix}: {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(plan.name.clone());
    bar.enable_steady_tick(Duration::from_millis(120));
    let timeout = args.timeout.unwrap_or(if args.k8s { 420 } else { 180 });
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut step = String::from("starting the supervisor");
    let outcome = loop {
        let st: Option<LabState> = state::read_json(&state::state_path(&plan.dir)).ok();
        match st.as_ref().map(|s| &s.phase) {
            Some(Phase::Ready) => break Ok(()),
            Some(Phase::Failed(msg)) => break Err(anyhow::anyhow!("{msg}")),
            Some(Phase::Starting(now)) => {
                step = now.clone();
                bar.set_message(step.clone())
            }
            _ => bar.set_message("starting the supervisor"),
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!(
                "the lab supervisor exited ({status}) before the lab was ready"
            ));
        }
        if Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "the lab was not ready within {timeout}s (still {step}); raise --timeout if the \
                 machine is busy"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    bar.finish_and_clear();
    match outcome {
        Ok(()) => {
            // The supervisor runs on in its own session; do not leave a zombie-to-be attached to us.
            std::mem::drop(child);
            Ok(plan)
        }
        Err(e) => {
            let log = crate::daemons::tail_of(&plan.dir.join("supervisor.log"));
            let _ = crate::down::down(&plan.name, true);
            let _ = child.wait();
            Err(anyhow::anyhow!(
                "lab {} failed to start: {e:#}\nlast lines of its supervisor log:\n{log}",
                plan.name
            ))
        }
    }
}

/// `terway-lab up`.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let plan = up(&args, args.json)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&describe(&plan))?);
    } else {
        println!(
            "lab {} is up: {} node(s), VPC {} (router netns {})",
            plan.name,
            plan.nodes.len(),
            plan.vpc_cidr,
            plan.vpc_netns
        );
        for n in &plan.nodes {
            println!(
                "  {:<7} {:<10} netns {:<20} {}",
                n.name,
                n.mode.as_str(),
                n.netns,
                n.instance_type
            );
        }
        if plan.kubernetes.is_some() {
            println!(
                "Kubernetes v1.20.2 is up: terway-lab kubectl --lab {} -- get nodes -o wide",
                plan.name
            );
        }
        println!("next: terway-lab pod add --lab {} node0 web-0   |   terway-lab check --lab {}   |   terway-lab down {}", plan.name, plan.name, plan.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse() {
        assert_eq!(parse_delay("2000").unwrap(), (2000, 2000));
        assert_eq!(parse_delay("100-300").unwrap(), (100, 300));
        assert!(parse_delay("300-100").is_err());
        assert!(parse_delay("x").is_err());
    }
}
