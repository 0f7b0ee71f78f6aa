//! Running the emulator on its own (`terway-lab cloud --listen ADDR [--admin-listen ADDR] [--config FILE]`):
//! no fabric, prints where it listens (the admin API on its own listener, loopback by default) and the
//! AccessKey it accepts, serves until Ctrl-C.

use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use crate::config::EmulatorConfig;
use crate::error::EmulatorError;
use crate::hook::NoFabric;
use crate::listen::{AdminListener, Listeners};
use crate::{Emulator, RunningEmulator};

/// Where a standalone emulator listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandaloneListen {
    /// The OpenAPI endpoint.
    pub api: SocketAddr,
    /// The metadata service; `None`: the OpenAPI's IP, an ephemeral port.
    pub metadata: Option<SocketAddr>,
    /// The admin API; `None`: 127.0.0.1, an ephemeral port. It is never the OpenAPI's listener, so whoever
    /// may call the cloud cannot also reconfigure it.
    pub admin: Option<SocketAddr>,
}

impl StandaloneListen {
    /// The OpenAPI on `api`, the rest by default.
    pub fn api(api: SocketAddr) -> Self {
        Self {
            api,
            metadata: None,
            admin: None,
        }
    }
}

/// Serve until Ctrl-C. `config` is a JSON [`EmulatorConfig`] file; defaults otherwise.
pub async fn run_standalone(
    listen: StandaloneListen,
    config: Option<&Path>,
) -> Result<(), EmulatorError> {
    let mut out = std::io::stdout();
    let emu = start_standalone(listen, config, &mut out)?;
    let stopped = tokio::signal::ctrl_c().await;
    emu.shutdown().await;
    stopped.map_err(|source| EmulatorError::Listen {
        what: "api",
        source,
    })
}

/// Like [`run_standalone`] but stops when `stop` completes and prints to `out` (tests, embedding).
pub async fn run_standalone_until(
    listen: StandaloneListen,
    config: Option<&Path>,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<(), EmulatorError> {
    let emu = start_standalone(listen, config, out)?;
    stop.await;
    emu.shutdown().await;
    Ok(())
}

fn start_standalone(
    listen: StandaloneListen,
    config: Option<&Path>,
    out: &mut (dyn Write + Send),
) -> Result<RunningEmulator, EmulatorError> {
    let cfg = match config {
        Some(path) => EmulatorConfig::from_file(path)?,
        None => EmulatorConfig::default(),
    };
    let bind = |addr: SocketAddr, what| {
        TcpListener::bind(addr).map_err(|source| EmulatorError::Listen { what, source })
    };
    let listeners = Listeners {
        api: bind(listen.api, "api")?,
        metadata: bind(
            listen
                .metadata
                .unwrap_or_else(|| SocketAddr::new(listen.api.ip(), 0)),
            "metadata",
        )?,
        admin: Some(AdminListener::Tcp(bind(
            listen
                .admin
                .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            "admin",
        )?)),
    };
    let emu = Emulator::start_with_listeners(cfg, Arc::new(NoFabric), listeners)?;
    let ak = emu.access_key();
    let admin = emu
        .admin_endpoint()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let text = format!(
        "OpenAPI endpoint:  {api} (ECS {ecs}, VPC {vpc})\n\
         metadata endpoint: {md} (instance by source IP or header {hdr})\n\
         region:            {region}\n\
         AccessKeyId:       {id}\n\
         AccessKeySecret:   {secret}\n\
         admin API:         {admin} (its own listener, not the OpenAPI endpoint): /_emulator/state, \
         /_emulator/calls, /_emulator/faults, /_emulator/rate-limits, /_emulator/instances\n",
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
