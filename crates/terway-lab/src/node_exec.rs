//! `terway-lab node-exec [--lab N] NODE -- CMD…`: run a command inside a Kubernetes lab node, in its network
//! namespace and its private mount namespace — where its containerd socket, `/etc/cni/net.d`, `/opt/cni/bin`,
//! `/var/lib/cni` and `/run` are the node's own, not the machine's. This is how another container runtime
//! (`ctr run --cni`, podman) is tried against the node's `terway` without touching the machine.

use std::process::Command;

use anyhow::Context;

use crate::state;

/// Arguments of `node-exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeExecArgs {
    /// Lab name (optional when exactly one lab exists).
    #[arg(long)]
    pub lab: Option<String>,
    /// Node name (`node0`, …).
    pub node: String,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// The command line that runs `program` inside `node` of lab `name`; `CONTAINERD_ADDRESS` points `ctr` at
/// the node's containerd.
pub fn command(name: &str, node: &str, program: &str) -> anyhow::Result<Command> {
    let st = state::load(name)?;
    let plan = st
        .plan
        .node(node)
        .ok_or_else(|| anyhow::anyhow!("lab {name} has no node {node}"))?;
    let holder = st
        .kube
        .as_ref()
        .and_then(|k| k.nodes.get(node))
        .map(|r| r.holder)
        .filter(|pid| *pid != 0)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "node {node} of lab {name} runs no Kubernetes node (bring the lab up with --k8s)"
            )
        })?;
    let mut c = Command::new("nsenter");
    c.args(["-t", &holder.to_string(), "-n", "-m", "--", program])
        .env(
            "CONTAINERD_ADDRESS",
            crate::k8s::NodePaths::new(&plan.dir).containerd_socket(),
        );
    Ok(c)
}

/// `terway-lab node-exec`.
pub fn run(args: NodeExecArgs) -> anyhow::Result<()> {
    let name = state::resolve_lab(args.lab.as_deref())?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("node-exec needs a command after --"))?;
    let status = command(&name, &args.node, program)?
        .args(rest)
        .status()
        .context("run nsenter")?;
    if status.success() {
        Ok(())
    } else {
        std::process::exit(status.code().unwrap_or(1))
    }
}
