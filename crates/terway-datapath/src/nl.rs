//! One rtnetlink socket per namespace, opened once inside it and handed to drivers (netavark style).
//!
//! The socket is created on a dedicated thread that has `setns`ed into the target namespace; a netlink socket
//! stays bound to the namespace it was created in, so the connection can then be driven from any tokio thread.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use futures::StreamExt;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// Flags for "create, fail if it exists".
pub const CREATE_EXCL: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
/// Flags for "create or replace".
pub const CREATE_REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
/// Flags for a plain acknowledged request (delete, set).
pub const ACK: u16 = NLM_F_REQUEST | NLM_F_ACK;

/// Errno values the ensure-style operations tolerate.
pub(crate) const EEXIST: i32 = nix::libc::EEXIST;
pub(crate) const ENOENT: i32 = nix::libc::ENOENT;
pub(crate) const ESRCH: i32 = nix::libc::ESRCH;
pub(crate) const ENODEV: i32 = nix::libc::ENODEV;
pub(crate) const EADDRNOTAVAIL: i32 = nix::libc::EADDRNOTAVAIL;
pub(crate) const EINVAL_: i32 = nix::libc::EINVAL;

/// An rtnetlink connection bound to one network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    ns: String,
    // The kernel runs one dump per socket at a time (a second one gets EBUSY), so dumps on a shared handle
    // take turns; plain requests do not wait.
    dump_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Netlink {
    /// Open a netlink socket inside `netns` and spawn its connection task on the current tokio runtime.
    pub fn open(netns: &Netns) -> Result<Self> {
        let fd: OwnedFd = netns
            .run(|| -> std::io::Result<OwnedFd> {
                let mut sock = Socket::new(NETLINK_ROUTE)?;
                sock.bind_auto()?;
                // SAFETY-free: ownership of the fd moves from the socket into the OwnedFd.
                let raw = sock.into_raw_fd();
                Ok(unsafe { OwnedFd::from_raw_fd(raw) })
            })?
            .map_err(|e| Error::Netns {
                path: netns.path().to_path_buf(),
                what: "open netlink socket",
                source: e,
            })?;
        Self::from_fd(fd, netns.path().display().to_string())
    }

    /// Netlink of the namespace the process runs in.
    pub fn open_current() -> Result<Self> {
        Self::open(&Netns::current()?)
    }

    fn from_fd(fd: OwnedFd, ns: String) -> Result<Self> {
        let raw = fd.into_raw_fd();
        // TokioSocket::from_raw_fd registers the fd with the reactor; it needs a runtime context.
        if tokio::runtime::Handle::try_current().is_err() {
            // Close the fd we own before failing.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            return Err(Error::Invalid(
                "netlink must be opened inside a tokio runtime".into(),
            ));
        }
        let socket = unsafe { TokioSocket::from_raw_fd(raw) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(conn);
        Ok(Self {
            handle,
            ns,
            dump_lock: Default::default(),
        })
    }

    /// Which namespace this socket talks to (for messages).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The underlying rtnetlink handle, for requests this crate does not wrap.
    pub fn handle(&self) -> rtnetlink::Handle {
        self.handle.clone()
    }

    /// Send a request and wait for its acknowledgement.
    pub async fn execute(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl Fn() -> String,
    ) -> Result<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut resp = handle
            .request(req)
            .map_err(|e| Error::netlink(op(), std::io::Error::other(e.to_string())))?;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(err) = m.payload {
                if err.code.is_some() {
                    return Err(Error::netlink(
                        format!("{} (in {})", op(), self.ns),
                        err.to_io(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Dump objects of one kind.
    pub async fn dump(
        &self,
        msg: RouteNetlinkMessage,
        op: impl Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.query(msg, NLM_F_REQUEST | NLM_F_DUMP, op).await
    }

    /// Send a request and collect every reply message (a dump, or a single `get`).
    pub async fn query(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let _turn = if flags & NLM_F_DUMP == NLM_F_DUMP {
            Some(self.dump_lock.lock().await)
        } else {
            None
        };
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut resp = handle
            .request(req)
            .map_err(|e| Error::netlink(op(), std::io::Error::other(e.to_string())))?;
        let mut out = Vec::new();
        while let Some(m) = resp.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(err) if err.code.is_some() => {
                    return Err(Error::netlink(
                        format!("{} (in {})", op(), self.ns),
                        err.to_io(),
                    ));
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Treat the listed errnos as success (ensure/remove semantics).
pub(crate) fn tolerate(r: Result<()>, errnos: &[i32]) -> Result<()> {
    match r {
        Err(e) if e.errno().is_some_and(|n| errnos.contains(&n)) => Ok(()),
        other => other,
    }
}
