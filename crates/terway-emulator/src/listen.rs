//! The emulator's listeners and their serve loops: the OpenAPI (hyper configured by hand, for its header
//! limits), the metadata service (with the peer address, which identifies the instance) and the admin API
//! (loopback TCP or a unix socket, so it can be kept where pods cannot reach it).

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::error::EmulatorError;

/// hyper's own caps, far above the limits the OpenAPI router enforces (see `server::MAX_HEAD_BYTES`), so
/// that oversize requests reach the router and get a proper error body instead of hyper's bare 431.
const HYPER_MAX_HEADERS: usize = 1024;
const HYPER_MAX_BUF_BYTES: usize = 1024 * 1024;

/// The listeners an emulator serves; bind them where the callers that need them (and only those) can
/// connect.
pub struct Listeners {
    /// The OpenAPI (ECS and VPC).
    pub api: TcpListener,
    /// The instance metadata service.
    pub metadata: TcpListener,
    /// The admin API (`/_emulator/*`); `None` serves none (the [`crate::RunningEmulator`] methods remain).
    pub admin: Option<AdminListener>,
}

/// Where the admin API is served.
pub enum AdminListener {
    /// A TCP listener; bind it to loopback (or another address pods cannot reach).
    Tcp(TcpListener),
    /// A unix socket; its file permissions decide who may use it.
    Unix(std::os::unix::net::UnixListener),
}

/// The address of the admin API, for printing and for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminEndpoint {
    /// `http://addr`.
    Tcp(SocketAddr),
    /// A unix socket path (HTTP over it).
    Unix(PathBuf),
}

impl fmt::Display for AdminEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminEndpoint::Tcp(a) => write!(f, "http://{a}"),
            AdminEndpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn listen_err(what: &'static str) -> impl Fn(std::io::Error) -> EmulatorError {
    move |source| EmulatorError::Listen { what, source }
}

/// A std TCP listener as a tokio one (non-blocking, registered with the current runtime).
pub(crate) fn tcp_to_tokio(
    l: TcpListener,
    what: &'static str,
) -> Result<(SocketAddr, tokio::net::TcpListener), EmulatorError> {
    l.set_nonblocking(true).map_err(listen_err(what))?;
    let addr = l.local_addr().map_err(listen_err(what))?;
    Ok((
        addr,
        tokio::net::TcpListener::from_std(l).map_err(listen_err(what))?,
    ))
}

/// Start serving `admin` with `router`; answers where it listens.
pub(crate) fn spawn_admin(
    runtime: &tokio::runtime::Handle,
    admin: AdminListener,
    router: Router,
    stop: watch::Receiver<bool>,
) -> Result<(AdminEndpoint, tokio::task::JoinHandle<()>), EmulatorError> {
    let _guard = runtime.enter();
    match admin {
        AdminListener::Tcp(l) => {
            let (addr, l) = tcp_to_tokio(l, "admin")?;
            let task = runtime.spawn(serve_axum(l, router, stop, "admin"));
            Ok((AdminEndpoint::Tcp(addr), task))
        }
        AdminListener::Unix(l) => {
            let err = listen_err("admin");
            l.set_nonblocking(true).map_err(&err)?;
            let path = l
                .local_addr()
                .map_err(&err)?
                .as_pathname()
                .map(PathBuf::from)
                .ok_or_else(|| err(std::io::Error::other("the admin unix socket has no path")))?;
            let l = tokio::net::UnixListener::from_std(l).map_err(&err)?;
            let task = runtime.spawn(serve_axum(l, router, stop, "admin"));
            Ok((AdminEndpoint::Unix(path), task))
        }
    }
}

/// `axum::serve` until `stop` turns true.
pub(crate) async fn serve_axum<L>(
    listener: L,
    router: Router,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) where
    L: axum::serve::Listener,
    L::Addr: fmt::Debug,
{
    let serve = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stopped(&mut stop).await });
    if let Err(e) = serve.await {
        warn!(error = %e, "emulator {what} listener stopped");
    }
}

/// Serve the OpenAPI until `stop` turns true, then let open connections finish (graceful shutdown).
/// Written against hyper rather than `axum::serve` because only hyper's builder sets the header caps.
pub(crate) async fn serve_api(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF_BYTES);
    let mut conns = JoinSet::new();
    let conn_stop = stop.clone();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning on accept.
                        warn!(error = %e, "emulator OpenAPI listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let builder = builder.clone();
                let service = TowerToHyperService::new(router.clone());
                let mut stop = conn_stop.clone();
                conns.spawn(async move {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    let done = tokio::select! {
                        r = conn.as_mut() => Some(r),
                        () = stopped(&mut stop) => None,
                    };
                    let result = match done {
                        Some(r) => r,
                        None => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        debug!(error = %e, "emulator OpenAPI connection ended with an error");
                    }
                });
            }
        }
    }
    while conns.join_next().await.is_some() {}
}

/// Resolves once `stop` turns true (or its sender is gone, which means the same). The borrow guard
/// `wait_for` returns is dropped here, so callers stay `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
