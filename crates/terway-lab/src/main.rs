//! `terway-lab`: an emulated Alibaba Cloud VPC with N nodes in network namespaces on one machine, running
//! the real `terwayd` per node and the real `terway` CNI binary per pod. See docs/lab.md.
//!
//! Each subcommand lives in its own module; `cloud` and `bench` are wired separately.

mod api_cmd;
mod bench;
mod check;
mod cloud;
mod cloudcalls;
mod control;
mod daemon_cmd;
mod daemons;
mod demo;
mod demo_k8s;
mod down;
mod faults_cmd;
mod k8s;
mod kubectl_cmd;
mod node_exec;
mod node_files;
mod plan;
mod pod;
mod probe;
mod procs;
mod simulate;
mod state;
mod status;
mod supervisor;
mod table;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `terway-lab`.
#[derive(Debug, Parser)]
#[command(
    name = "terway-lab",
    version,
    about = "An emulated multi-node VPC for the Terway CNI, in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring up a lab: VPC router, nodes, emulated cloud, one terwayd per node.
    Up(up::UpArgs),
    /// Stop a lab and remove every namespace, process and file it made.
    Down(down::DownArgs),
    /// Add, delete or list pods (runs the real terway CNI binary).
    Pod(pod::PodArgs),
    /// Connectivity matrix (TCP + ICMP) and anti-spoofing check over the lab's pods.
    Check(check::CheckArgs),
    /// Show labs, nodes, daemons, ENIs and addresses.
    Status(status::StatusArgs),
    /// Stop, crash or start one node's terwayd.
    Daemon(daemon_cmd::DaemonArgs),
    /// Stop, crash or start one Kubernetes node's containerd and kubelet (`up --k8s`).
    Runtime(daemon_cmd::DaemonArgs),
    /// Up 3 nodes (one per mode), 30 pods, connectivity matrix, churn, down.
    Demo(demo::DemoArgs),
    /// Inject faults into a lab's emulated cloud (errors, lag, failed attaches).
    Faults(faults_cmd::FaultsArgs),
    #[command(about = "Benchmarks against the peers, side by side (docs/benchmarks.md)")]
    Bench(bench::BenchArgs),
    /// Run the emulated Alibaba Cloud (OpenAPI + metadata) alone, without the fabric.
    Cloud(cloud::CloudArgs),
    /// Run the real kubectl against a Kubernetes lab (`up --k8s`): `terway-lab kubectl -- get pods -o wide`.
    Kubectl(kubectl_cmd::KubectlArgs),
    /// Run a command inside a Kubernetes lab node (its network and mount namespaces): `terway-lab node-exec node0 -- ctr containers ls`.
    NodeExec(node_exec::NodeExecArgs),
    /// The daemon's pool decisions against a model of the cloud in virtual time: start latency, cloud calls
    /// and idle addresses for a trace; `--sweep` finds min/max pool settings.
    Simulate(simulate::SimulateArgs),
    /// Run an OpenAPI action on a lab's emulated cloud as its owner: `terway-lab api CreateSecurityGroup VpcId=…`.
    Api(api_cmd::ApiArgs),
    /// Internal: the background process that owns a lab (started by `up`).
    #[command(hide = true)]
    ServeLab(supervisor::ServeArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(a) => up::run(a),
        Command::Down(a) => down::run(a),
        Command::Pod(a) => pod::run(a),
        Command::Check(a) => check::run(a),
        Command::Status(a) => status::run(a),
        Command::Daemon(a) => daemon_cmd::run(a),
        Command::Runtime(a) => daemon_cmd::run_runtime(a),
        Command::Demo(a) => demo::run(a),
        Command::Faults(a) => faults_cmd::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Cloud(a) => cloud::run(a),
        Command::Kubectl(a) => kubectl_cmd::run(a),
        Command::NodeExec(a) => node_exec::run(a),
        Command::Api(a) => api_cmd::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::ServeLab(a) => supervisor::serve(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terway-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
