//! Running the emulator on its own (`terway-lab cloud --listen ADDR [--config FILE]`): no fabric,
//! prints where it listens and the AccessKey it accepts, serves until Ctrl-C.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use crate::config::EmulatorConfig;
use crate::error::EmulatorError;
use crate::hook::NoFabric;
use crate::Emulator;

/// Serve the OpenAPI on `listen` and the metadata service on `metadata_listen` (default: same IP,
/// an ephemeral port) until Ctrl-C. `config` is a JSON [`EmulatorConfig`] file; defaults otherwise.
pub async fn run_standalone(
    listen: SocketAddr,
    metadata_listen: Option<SocketAddr>,
    config: Option<&Path>,
) -> Result<(), EmulatorError> {
    let cfg = match config {
        Some(path) => EmulatorConfig::from_file(path)?,
        None => EmulatorConfig::default(),
    };
    let api = TcpListener::bind(listen).map_err(|source| EmulatorError::Listen {
        what: "api",
        source,
    })?;
    let md_addr = metadata_listen.unwrap_or_else(|| SocketAddr::new(listen.ip(), 0));
    let md = TcpListener::bind(md_addr).map_err(|source| EmulatorError::Listen {
        what: "metadata",
        source,
    })?;
    let emu = Emulator::start_with_listeners(cfg, Arc::new(NoFabric), api, md)?;
    let ak = emu.access_key();
    println!(
        "OpenAPI endpoint:  {} (ECS {}, VPC {})",
        emu.api_url(),
        crate::ECS_VERSION,
        crate::VPC_VERSION
    );
    println!(
        "metadata endpoint: {} (instance by source IP or header {})",
        emu.metadata_url(),
        crate::INSTANCE_HEADER
    );
    println!("region:            {}", emu.region_id());
    println!("AccessKeyId:       {}", ak.id);
    println!("AccessKeySecret:   {}", ak.secret);
    println!(
        "admin:             {}/_emulator/state | /calls | /faults",
        emu.api_url()
    );
    let stopped = tokio::signal::ctrl_c().await;
    emu.shutdown().await;
    stopped.map_err(|source| EmulatorError::Listen {
        what: "api",
        source,
    })
}
