//! Running the emulator on its own (`terway-lab cloud --listen ADDR [--config FILE]`): no fabric,
//! prints where it listens and the AccessKey it accepts, serves until Ctrl-C.

use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use crate::config::EmulatorConfig;
use crate::error::EmulatorError;
use crate::hook::NoFabric;
use crate::{Emulator, RunningEmulator};

/// Serve the OpenAPI on `listen` and the metadata service on `metadata_listen` (default: same IP,
/// an ephemeral port) until Ctrl-C. `config` is a JSON [`EmulatorConfig`] file; defaults otherwise.
pub async fn run_standalone(
    listen: SocketAddr,
    metadata_listen: Option<SocketAddr>,
    config: Option<&Path>,
) -> Result<(), EmulatorError> {
    let mut out = std::io::stdout();
    let emu = start_standalone(listen, metadata_listen, config, &mut out)?;
    let stopped = tokio::signal::ctrl_c().await;
    emu.shutdown().await;
    stopped.map_err(|source| EmulatorError::Listen {
        what: "api",
        source,
    })
}

/// Like [`run_standalone`] but stops when `stop` completes and prints to `out` (tests, embedding).
pub async fn run_standalone_until(
    listen: SocketAddr,
    metadata_listen: Option<SocketAddr>,
    config: Option<&Path>,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<(), EmulatorError> {
    let emu = start_standalone(listen, metadata_listen, config, out)?;
    stop.await;
    emu.shutdown().await;
    Ok(())
}

fn start_standalone(
    listen: SocketAddr,
    metadata_listen: Option<SocketAddr>,
    config: Option<&Path>,
    out: &mut (dyn Write + Send),
) -> Result<RunningEmulator, EmulatorError> {
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
    let text = format!(
        "OpenAPI endpoint:  {api} (ECS {ecs}, VPC {vpc})\n\
         metadata endpoint: {md} (instance by source IP or header {hdr})\n\
         region:            {region}\n\
         AccessKeyId:       {id}\n\
         AccessKeySecret:   {secret}\n\
         admin:             {api}/_emulator/state | /_emulator/calls | /_emulator/faults\n",
        api = emu.api_url(),
        ecs = crate::ECS_VERSION,
        vpc = crate::VPC_VERSION,
        md = emu.metadata_url(),
        hdr = crate::INSTANCE_HEADER,
        region = emu.region_id(),
        id = ak.id,
        secret = ak.secret,
    );
    // Printing is best effort: a closed stdout must not stop the emulator.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(emu)
}
