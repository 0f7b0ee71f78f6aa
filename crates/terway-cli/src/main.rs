//! `terway-cli`: inspect a running terwayd over its unix socket (`status`, `pod`, `policy`) and compute
//! how many pods an instance type can hold (`maxpods`).

mod maxpods;
mod pod;
mod policy;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Inspect terwayd and compute pod limits.
#[derive(Debug, Parser)]
#[command(name = "terway-cli", version)]
struct Cli {
    /// terwayd's gRPC unix socket.
    #[arg(long, global = true, default_value = terway_rpc::DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Pool, ENIs, IPs, pods, recent cloud calls and inhibits of the daemon.
    Status {
        /// Also list every IP of every ENI.
        #[arg(long)]
        ips: bool,
    },
    /// Pod limits of an instance type, from quotas given as flags or the daemon's node.
    Maxpods(maxpods::MaxpodsArgs),
    /// One pod: its addresses, their ENIs and the daemon's recent events about it.
    Pod {
        /// `NAMESPACE/NAME`, as Kubernetes names it.
        pod: String,
    },
    /// Which NetworkPolicies select a pod and what they let in and out, with its drop counters.
    Policy {
        /// `NAMESPACE/NAME`, as Kubernetes names it.
        pod: String,
    },
}

fn pod_key(pod: &str) -> anyhow::Result<terway_core::PodKey> {
    let key: terway_core::PodKey = pod
        .parse()
        .map_err(|e| anyhow::anyhow!("{e} (expected NAMESPACE/NAME)"))?;
    terway_core::PodKey::validated(&key.namespace, &key.name)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(key)
}

async fn status_client(socket: &std::path::Path) -> anyhow::Result<terway_rpc::v1::StatusReply> {
    let ch = terway_rpc::connect_unix(socket, Duration::from_secs(3)).await?;
    let mut c = terway_rpc::v1::terway_status_client::TerwayStatusClient::new(ch);
    Ok(c.get_status(terway_rpc::v1::StatusRequest {})
        .await?
        .into_inner())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Status { ips } => {
            let reply = status_client(&cli.socket).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status::to_json(&reply))?
                );
            } else {
                print!("{}", status::render(&reply, ips));
            }
        }
        Cmd::Policy { pod } => {
            let key = pod_key(&pod)?;
            let ch = terway_rpc::connect_unix(&cli.socket, Duration::from_secs(3)).await?;
            let mut c = terway_rpc::v1::terway_status_client::TerwayStatusClient::new(ch);
            let reply = c
                .explain_policy(terway_rpc::v1::PolicyRequest {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                })
                .await?
                .into_inner();
            let name = key.to_string();
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&policy::to_json(&name, &reply))?
                );
            } else {
                print!("{}", policy::render(&name, &reply));
            }
        }
        Cmd::Pod { pod } => {
            let key = pod_key(&pod)?;
            let reply = status_client(&cli.socket).await?;
            let Some(view) = pod::find(&reply, &key) else {
                anyhow::bail!(
                    "terwayd on node {} ({}) holds nothing for pod {key} and has no recent event about it; is the pod on this node?",
                    reply.node,
                    cli.socket.display()
                );
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&pod::to_json(&view))?);
            } else {
                print!("{}", pod::render(&view));
            }
        }
        Cmd::Maxpods(args) => {
            let from_daemon = if args.has_quotas() {
                None
            } else {
                Some(status_client(&cli.socket).await?)
            };
            let report = maxpods::compute(&args, from_daemon.as_ref())?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", maxpods::render(&report));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("terway-cli: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terway-cli: {e:#}");
            ExitCode::FAILURE
        }
    }
}
