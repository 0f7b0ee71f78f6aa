//! `terway-lab daemon stop|kill|start NODE`: control one node's `terwayd` through the supervisor (crash
//! and restart scenarios).

use std::time::Duration;

use crate::control::{self, Request};
use crate::state;

/// Arguments of `daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Lab name (optional when exactly one lab exists).
    #[arg(long, global = true)]
    pub lab: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: DaemonCmd,
}

/// `daemon` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DaemonCmd {
    /// SIGTERM the node's terwayd and wait for it.
    Stop {
        /// Node name.
        node: String,
    },
    /// SIGKILL the node's terwayd (a crash).
    Kill {
        /// Node name.
        node: String,
    },
    /// Start the node's terwayd again and wait until its socket answers.
    Start {
        /// Node name.
        node: String,
    },
}

/// Send a daemon request to the lab's supervisor.
pub fn request(lab: &str, req: &Request) -> anyhow::Result<serde_json::Value> {
    let st = state::load(lab)?;
    control::call(&st.plan.dir, req, Duration::from_secs(90))
}

/// `terway-lab daemon …`.
pub fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let lab = state::resolve_lab(args.lab.as_deref())?;
    let (req, what) = match &args.cmd {
        DaemonCmd::Stop { node } => (
            Request::StopDaemon {
                node: node.clone(),
                kill: false,
            },
            format!("terwayd on {node} stopped"),
        ),
        DaemonCmd::Kill { node } => (
            Request::StopDaemon {
                node: node.clone(),
                kill: true,
            },
            format!("terwayd on {node} killed"),
        ),
        DaemonCmd::Start { node } => (
            Request::StartDaemon { node: node.clone() },
            format!("terwayd on {node} started"),
        ),
    };
    let out = request(&lab, &req)?;
    match out.get("pid") {
        Some(pid) => println!("{what} (pid {pid})"),
        None => println!("{what}"),
    }
    Ok(())
}

/// `terway-lab runtime stop|kill|start NODE`: a Kubernetes node's containerd and kubelet (its pods and
/// shims stay, as when a runtime restarts on a real node).
pub fn run_runtime(args: DaemonArgs) -> anyhow::Result<()> {
    let lab = state::resolve_lab(args.lab.as_deref())?;
    let (node, start, crash, what) = match &args.cmd {
        DaemonCmd::Stop { node } => (node, false, false, "stopped"),
        DaemonCmd::Kill { node } => (node, false, true, "killed"),
        DaemonCmd::Start { node } => (node, true, false, "started"),
    };
    request(
        &lab,
        &Request::KubeRuntime {
            node: node.clone(),
            start,
            crash,
        },
    )?;
    println!("containerd and kubelet on {node} {what}");
    Ok(())
}
