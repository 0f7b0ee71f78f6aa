//! `terway-lab cloud`: the emulated Alibaba Cloud alone, without the netns fabric — for pointing an SDK, the
//! Alibaba CLI or a `terwayd` outside the lab at it. It prints its endpoints (the admin API on its own
//! listener) and the AccessKey pair it accepts.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Flags of `terway-lab cloud`.
#[derive(Debug, Args)]
pub struct CloudArgs {
    /// Address of the OpenAPI endpoint (ECS 2014-05-26 and VPC 2016-04-28 on one port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the metadata service; by default an ephemeral port on the same IP. Outside the lab the
    /// instance is chosen with the header `X-Emulator-Instance-Id`.
    #[arg(long)]
    metadata_listen: Option<SocketAddr>,
    /// Address of the admin API (`/_emulator/*`: faults, rate limits, state); by default an ephemeral port
    /// on 127.0.0.1. It is never served on the OpenAPI address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Emulator config (JSON; see crates/terway-emulator/emulator.example.json). Defaults are used without it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Serve until Ctrl-C.
pub fn run(args: CloudArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let listen = terway_emulator::StandaloneListen {
        api: args.listen,
        metadata: args.metadata_listen,
        admin: args.admin_listen,
    };
    rt.block_on(terway_emulator::run_standalone(
        listen,
        args.config.as_deref(),
    ))
    .with_context(|| format!("emulated cloud on {}", args.listen))
}
