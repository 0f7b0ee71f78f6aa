//! An emulated Alibaba Cloud, strict enough to test a CNI against: the ECS (2014-05-26) and VPC
//! (2016-04-28) OpenAPI subset Terway uses, signed like the official SDKs sign (ACS3-HMAC-SHA256 and
//! legacy HMAC-SHA1), with asynchronous ENI attach/detach, quotas from a real instance-type
//! catalogue, vSwitch exhaustion, throttling, ClientToken idempotency, fault injection, crash-safe
//! persistence, an admin/debug API on its own listener, and the instance metadata service on its own
//! listener.
//!
//! ```no_run
//! # async fn demo() -> Result<(), terway_emulator::EmulatorError> {
//! use std::sync::Arc;
//! use terway_emulator::{Emulator, EmulatorConfig, NoFabric};
//! let emu = Emulator::start(EmulatorConfig::default(), Arc::new(NoFabric))?;
//! println!("OpenAPI at {}, metadata at {}", emu.api_url(), emu.metadata_url());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod actions;
pub mod admin;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod error;
pub mod fabric;
pub mod faults;
pub mod hook;
mod lifecycle;
mod listen;
pub mod metadata;
mod params;
mod persist;
pub mod server;
pub mod service;
mod standalone;
pub mod throttle;
pub mod world;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

pub use actions::{ECS_VERSION, VPC_VERSION};
pub use catalogue::InstanceTypeSpec;
pub use config::{
    AccessKeyPair, Delays, EmulatorConfig, InstanceConfig, SecurityGroupConfig, VSwitchConfig,
    VpcConfig, DEFAULT_SECURITY_GROUP,
};
pub use error::{ApiError, EmulatorError};
pub use faults::{FaultConfig, FiredFault};
pub use hook::{FabricHook, NoFabric};
pub use listen::{AdminEndpoint, AdminListener, Listeners};
pub use metadata::INSTANCE_HEADER;
pub use service::CallRecord;
pub use standalone::{run_standalone, run_standalone_until, StandaloneListen};
pub use world::{Eni, Instance, Route, World};

use service::Service;

/// Entry point: start an emulator.
pub struct Emulator;

impl Emulator {
    /// Start on 127.0.0.1 with ephemeral ports for the OpenAPI, metadata and admin listeners. Must be
    /// called inside a Tokio runtime.
    pub fn start(
        config: EmulatorConfig,
        hook: Arc<dyn FabricHook>,
    ) -> Result<RunningEmulator, EmulatorError> {
        let bind = |what| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|source| EmulatorError::Listen { what, source })
        };
        let listeners = Listeners {
            api: bind("api")?,
            metadata: bind("metadata")?,
            admin: Some(AdminListener::Tcp(bind("admin")?)),
        };
        Self::start_with_listeners(config, hook, listeners)
    }

    /// Start on listeners the caller bound (e.g. the OpenAPI and metadata inside the lab's `vpc` netns, the
    /// admin API on a unix socket). Must be called inside a Tokio runtime.
    pub fn start_with_listeners(
        config: EmulatorConfig,
        hook: Arc<dyn FabricHook>,
        listeners: Listeners,
    ) -> Result<RunningEmulator, EmulatorError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| EmulatorError::Listen {
            what: "api",
            source: std::io::Error::other(format!("Emulator::start needs a Tokio runtime: {e}")),
        })?;
        let (api_addr, api_l, md_addr, md_l) = {
            let _guard = runtime.enter();
            let (api_addr, api_l) = listen::tcp_to_tokio(listeners.api, "api")?;
            let (md_addr, md_l) = listen::tcp_to_tokio(listeners.metadata, "metadata")?;
            (api_addr, api_l, md_addr, md_l)
        };
        let svc = Service::new(config, hook)?;
        let (stop_tx, stop_rx) = watch::channel(false);

        let mut tasks = Vec::new();
        let admin = match listeners.admin {
            Some(l) => {
                let router = admin::router(Arc::clone(&svc));
                let (endpoint, task) = listen::spawn_admin(&runtime, l, router, stop_rx.clone())?;
                tasks.push(task);
                Some(endpoint)
            }
            None => None,
        };
        let api_router = server::router(Arc::clone(&svc));
        tasks.push(runtime.spawn(listen::serve_api(api_l, api_router, stop_rx.clone())));
        let md_router = axum::Router::new()
            .fallback(metadata::handle)
            .with_state(metadata::MetadataState::new(Arc::clone(&svc)));
        let mut md_stop = stop_rx;
        tasks.push(runtime.spawn(async move {
            let serve = axum::serve(
                md_l,
                md_router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { listen::stopped(&mut md_stop).await });
            if let Err(e) = serve.await {
                warn!(error = %e, "emulator metadata listener stopped");
            }
        }));
        let resume = Arc::clone(&svc);
        runtime.spawn(async move { resume.resume_pending().await });
        Ok(RunningEmulator {
            svc,
            api_addr,
            md_addr,
            admin,
            stop: stop_tx,
            tasks,
        })
    }
}

/// A running emulator; stops its listeners when shut down or dropped.
pub struct RunningEmulator {
    svc: Arc<Service>,
    api_addr: SocketAddr,
    md_addr: SocketAddr,
    admin: Option<AdminEndpoint>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningEmulator {
    /// `http://host:port` of the OpenAPI (ECS and VPC share it).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }
    /// Address of the OpenAPI listener.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }
    /// `http://host:port` of the metadata service (paths start with `/latest/`).
    pub fn metadata_url(&self) -> String {
        format!("http://{}", self.md_addr)
    }
    /// Address of the metadata listener.
    pub fn metadata_addr(&self) -> SocketAddr {
        self.md_addr
    }
    /// Where the admin API (`/_emulator/*`) listens, if it is served.
    pub fn admin_endpoint(&self) -> Option<&AdminEndpoint> {
        self.admin.as_ref()
    }
    /// `http://host:port` of the admin API when it is served over TCP (as [`Emulator::start`] does).
    pub fn admin_url(&self) -> Option<String> {
        match &self.admin {
            Some(AdminEndpoint::Tcp(a)) => Some(format!("http://{a}")),
            _ => None,
        }
    }
    /// The first configured AccessKey pair.
    pub fn access_key(&self) -> AccessKeyPair {
        self.svc
            .config
            .access_keys
            .first()
            .cloned()
            .unwrap_or(AccessKeyPair {
                id: config::DEFAULT_ACCESS_KEY_ID.into(),
                secret: config::DEFAULT_ACCESS_KEY_SECRET.into(),
            })
    }
    /// Region served.
    pub fn region_id(&self) -> String {
        self.svc.config.region_id.clone()
    }
    /// A consistent copy of the whole state.
    pub fn state(&self) -> World {
        self.svc.world()
    }
    /// Every OpenAPI call so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.svc.calls()
    }
    /// Add an instance (node) with its primary ENI.
    pub fn add_instance(&self, cfg: &InstanceConfig) -> Result<Instance, EmulatorError> {
        self.svc.add_instance(cfg)
    }
    /// Current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.svc.faults()
    }
    /// Replace the fault configuration.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.svc.set_faults(faults)
    }
    /// Faults that fired so far.
    pub fn fired_faults(&self) -> Vec<FiredFault> {
        self.svc.fired_faults()
    }
    /// Replace the server-side rate limits (requests per minute per action).
    pub fn set_rate_limits(
        &self,
        enabled: bool,
        per_minute: std::collections::BTreeMap<String, u32>,
    ) {
        self.svc.set_rate_limits(enabled, per_minute)
    }
    /// Stop the listeners and wait for them (connections still open after 2 s are cut).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for mut t in self.tasks.drain(..) {
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
