//! `terway-lab kubectl [--lab N] -- ARGS`: the real `kubectl` against the lab's API server, run inside the
//! VPC router's namespace (where the API server's VPC address is) with the lab's administrator kubeconfig.

use std::process::{Command, Output};

use anyhow::Context;

use crate::plan::LabPlan;
use crate::state;

/// Arguments of `kubectl`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubectlArgs {
    /// Lab name (optional when exactly one lab exists).
    #[arg(long)]
    pub lab: Option<String>,
    /// Arguments for kubectl (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// The kubectl command line for `plan`'s cluster.
pub fn command(plan: &LabPlan) -> anyhow::Result<Command> {
    if plan.kubernetes.is_none() {
        anyhow::bail!(
            "lab {} runs no Kubernetes; bring one up with `terway-lab up --k8s`",
            plan.name
        );
    }
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", plan.vpc_netns))
        .args(["--", "kubectl", "--kubeconfig"])
        .arg(crate::k8s::LabPaths::new(&plan.dir).admin_kubeconfig())
        // kubectl is newer than the 1.20 server; the skew warning says nothing the lab does not know.
        .arg("--warnings-as-errors=false");
    Ok(c)
}

/// Run kubectl with `args`, capturing its output; an error carries kubectl's stderr.
pub fn kubectl(plan: &LabPlan, args: &[&str]) -> anyhow::Result<Output> {
    let out = command(plan)?
        .args(args)
        .output()
        .context("run kubectl (is it installed?)")?;
    succeeded(args, out)
}

/// kubectl's output, or an error carrying its stderr.
fn succeeded(args: &[&str], out: Output) -> anyhow::Result<Output> {
    if !out.status.success() {
        anyhow::bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Run kubectl with `stdin` as its input (e.g. `apply -f -`).
pub fn kubectl_stdin(plan: &LabPlan, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    use std::io::Write;
    let mut child = command(plan)?
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run kubectl (is it installed?)")?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes())?;
    }
    succeeded(args, child.wait_with_output()?)
}

/// `terway-lab kubectl`.
pub fn run(args: KubectlArgs) -> anyhow::Result<()> {
    let name = state::resolve_lab(args.lab.as_deref())?;
    let plan: LabPlan = state::read_json(&crate::plan::labs_root().join(&name).join("plan.json"))
        .with_context(|| format!("read the plan of lab {name}"))?;
    let status = command(&plan)?
        .args(&args.args)
        .status()
        .context("run kubectl (is it installed?)")?;
    if status.success() {
        Ok(())
    } else {
        std::process::exit(status.code().unwrap_or(1))
    }
}
