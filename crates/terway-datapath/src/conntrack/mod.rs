//! Conntrack entries of pod addresses: list them and flush them over ctnetlink (`NETLINK_NETFILTER`).
//!
//! Why: a released pod IP returns to the pool after the daemon's reuse cooldown (`ip_reuse_cooldown`, 30 s by
//! default) while conntrack keeps what it learnt about the IP much longer (`nf_conntrack_tcp_timeout_syn_sent`
//! 120 s, established flows days). A client retrying a SYN with the same tuple matches such an entry, and its
//! DNAT or routing decision delivers the connection to whichever pod owns the IP by then (AWS VPC CNI issue
//! #3634). Deleting the IP's entries in the node namespace when the pod goes means nothing learnt during the old
//! pod's lifetime survives into the new one's; see docs/architecture.md for what that does and does not cover.
//!
//! An entry involves the pod when the pod IP is any of its four addresses: original source (the pod
//! connected out), original destination (someone connected to the pod IP), reply source (a DNATed
//! connection, e.g. to a Service, answered by the pod), reply destination (the pod's connection SNATed).
//! The flush dumps the table once (`AF_UNSPEC`: IPv4 and IPv6 in the same walk) and matches all four
//! positions here, then deletes each match by its original tuple, zone and id. Kernel-side filtering
//! (`CTA_FILTER`) is not used: every dump walks the whole conntrack hash table whatever the filter (≈20 ms
//! for 262144 buckets, measured on a 2-core machine; the cost that dominates), the OR of four positions would take four walks, and the
//! kernel's IPv6 address filter is inverted (`!ipv6_addr_cmp`, since 5.8 and still in 6.18). A flush by
//! filter is not used either: older kernels widen it to the whole table.
//!
//! The namespace's own entry count (`net.netfilter.nf_conntrack_count`, per namespace) is read first: no
//! entries, no dump — the common case where nothing in the node namespace ever enabled conntrack. A namespace
//! without conntrack at all (the sysctl, nfnetlink or `nf_conntrack_netlink` absent) is reported as
//! [`Flush::Unavailable`], not as an error.

mod msg;

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use rtnetlink::sys::{protocols::NETLINK_NETFILTER, Socket};

pub use msg::{family_of, Entry, Position, Tuple, AF_INET, AF_INET6};

use crate::error::{Error, Result};
use crate::netns::Netns;
use msg::Reply;

/// What a flush did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// The namespace has no conntrack (no nfnetlink or no `nf_conntrack_netlink`): nothing to flush.
    Unavailable,
    /// Entries were looked for; this many were deleted.
    Deleted(usize),
}

/// A reply never takes this long; a socket that stays silent is reported instead of hanging the CNI call.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Dump datagrams are at most 32 KiB (the kernel sizes them by the reader's buffer, capped there).
const RECV_BUF: usize = 64 * 1024;

fn unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EPROTONOSUPPORT)
            | Some(nix::libc::EOPNOTSUPP)
            | Some(nix::libc::EAFNOSUPPORT)
    )
}

/// Per-namespace number of conntrack entries; absent when conntrack is not loaded.
const COUNT_SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

/// What opening a namespace's conntrack found.
enum Opened {
    /// No conntrack in the kernel or the namespace.
    Unavailable,
    /// Conntrack is there but holds no entry in this namespace.
    Empty,
    /// Entries to look at.
    Ready(Ct),
}

/// One ctnetlink socket bound to a namespace, used synchronously (one request in flight).
struct Ct {
    sock: Socket,
    seq: u32,
    ns: String,
}

/// Inside the namespace: the entry count, then (when there are entries) a bound ctnetlink socket.
fn open_here() -> io::Result<Option<Socket>> {
    let count = std::fs::read_to_string(COUNT_SYSCTL)?;
    if count.trim() == "0" {
        return Ok(None);
    }
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    let tv = TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
    setsockopt(&s, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
    Ok(Some(s))
}

impl Ct {
    fn open(ns: &Netns) -> Result<Opened> {
        // The node namespace is usually the one the plugin runs in: no thread needed to enter it. The socket
        // stays bound to the namespace it is created in, whichever thread uses it afterwards.
        let here = Netns::current().is_ok_and(|cur| cur.same_as(ns));
        let opened = if here {
            open_here()
        } else {
            ns.run(open_here)?
        };
        match opened {
            Ok(Some(sock)) => Ok(Opened::Ready(Self {
                sock,
                seq: 0,
                ns: ns.path().display().to_string(),
            })),
            Ok(None) => Ok(Opened::Empty),
            Err(e) if e.kind() == io::ErrorKind::NotFound || unavailable(&e) => {
                Ok(Opened::Unavailable)
            }
            Err(e) => Err(Error::Netns {
                path: ns.path().to_path_buf(),
                what: "open conntrack netlink socket",
                source: e,
            }),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, req: &[u8]) -> io::Result<()> {
        let n = self.sock.send(req, 0)?;
        if n != req.len() {
            return Err(io::Error::other(format!(
                "short netlink send ({n} of {} bytes)",
                req.len()
            )));
        }
        Ok(())
    }

    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<Vec<Reply>> {
        buf.clear();
        let n = self.sock.recv(buf, 0)?;
        if n > buf.len() {
            return Err(io::Error::other(format!(
                "netlink reply of {n} bytes truncated to {}",
                buf.len()
            )));
        }
        Ok(msg::parse_datagram(buf))
    }

    /// Run a dump request to its end, keeping the entries `keep` accepts (a node's table can be large).
    fn dump(&mut self, req: &[u8], keep: impl Fn(&Entry) -> bool) -> io::Result<Vec<Entry>> {
        self.send(req)?;
        let mut buf = Vec::with_capacity(RECV_BUF);
        let mut out = Vec::new();
        loop {
            for r in self.recv(&mut buf)? {
                match r {
                    Reply::Entry(e) if keep(&e) => out.push(e),
                    Reply::Entry(_) => {}
                    Reply::Other | Reply::Ack(0) => {}
                    Reply::Ack(code) | Reply::Done(code) if code < 0 => {
                        return Err(io::Error::from_raw_os_error(-code))
                    }
                    Reply::Ack(_) | Reply::Done(_) => return Ok(out),
                }
            }
        }
    }

    /// Delete `e`; an entry that is already gone (expired, or deleted by someone else) is fine.
    fn delete(&mut self, e: &Entry) -> io::Result<()> {
        let seq = self.next_seq();
        self.send(&msg::delete_request(seq, e))?;
        let mut buf = Vec::with_capacity(RECV_BUF);
        loop {
            for r in self.recv(&mut buf)? {
                match r {
                    Reply::Ack(0) => return Ok(()),
                    Reply::Ack(code) if -code == nix::libc::ENOENT => return Ok(()),
                    Reply::Ack(code) => return Err(io::Error::from_raw_os_error(-code)),
                    _ => {}
                }
            }
        }
    }

    fn err(&self, op: String, e: io::Error) -> Error {
        Error::Netlink {
            op: format!("conntrack {op} (in {})", self.ns),
            source: e,
        }
    }

    /// The entries of `family` that `keep` accepts; `None` when the kernel has no ctnetlink for it.
    fn all(&mut self, family: u8, keep: impl Fn(&Entry) -> bool) -> Result<Option<Vec<Entry>>> {
        let seq = self.next_seq();
        match self.dump(&msg::dump_all_request(seq, family), keep) {
            Ok(v) => Ok(Some(v)),
            Err(e) if unavailable(&e) => Ok(None),
            Err(e) => Err(self.err(format!("dump family {family}"), e)),
        }
    }

    /// The entries that have one of `ips` at any of the four positions: one walk of the table for every
    /// family (`AF_UNSPEC` dumps them all), however many addresses.
    fn involving(&mut self, ips: &[IpAddr]) -> Result<Option<Vec<Entry>>> {
        let family = match ips {
            [one] => family_of(one),
            _ => msg::AF_UNSPEC,
        };
        self.all(family, |e| ips.iter().any(|ip| e.involves(*ip)))
    }
}

/// Every conntrack entry of `family` ([`AF_INET`] or [`AF_INET6`]) in `ns`; `None` when the namespace has
/// no conntrack.
pub fn list(ns: &Netns, family: u8) -> Result<Option<Vec<Entry>>> {
    match Ct::open(ns)? {
        Opened::Unavailable => Ok(None),
        Opened::Empty => Ok(Some(Vec::new())),
        Opened::Ready(mut ct) => ct.all(family, |_| true),
    }
}

/// The entries in `ns` that have `ip` as any of their four addresses; `None` without conntrack.
pub fn entries_of(ns: &Netns, ip: IpAddr) -> Result<Option<Vec<Entry>>> {
    match Ct::open(ns)? {
        Opened::Unavailable => Ok(None),
        Opened::Empty => Ok(Some(Vec::new())),
        Opened::Ready(mut ct) => ct.involving(&[ip]),
    }
}

/// Delete every conntrack entry in `ns` that has one of `ips` as its original or reply source or
/// destination. Blocking (one walk of the conntrack table); from async code use [`flush_addresses_async`].
pub fn flush_addresses(ns: &Netns, ips: &[IpAddr]) -> Result<Flush> {
    let mut ct = match Ct::open(ns)? {
        Opened::Unavailable => return Ok(Flush::Unavailable),
        Opened::Empty => return Ok(Flush::Deleted(0)),
        Opened::Ready(ct) => ct,
    };
    if ips.is_empty() {
        return Ok(Flush::Deleted(0));
    }
    let Some(entries) = ct.involving(ips)? else {
        return Ok(Flush::Unavailable);
    };
    for e in &entries {
        ct.delete(e).map_err(|err| {
            ct.err(
                format!(
                    "delete proto {} {} -> {} (reply {} -> {})",
                    e.proto, e.orig.src, e.orig.dst, e.reply.src, e.reply.dst
                ),
                err,
            )
        })?;
    }
    Ok(Flush::Deleted(entries.len()))
}

/// [`flush_addresses`] from async code: the blocking exchange runs on tokio's blocking pool.
pub async fn flush_addresses_async(ns: &Netns, ips: Vec<IpAddr>) -> Result<Flush> {
    let ns = ns.try_clone()?;
    let path = ns.path().to_path_buf();
    tokio::task::spawn_blocking(move || flush_addresses(&ns, &ips))
        .await
        .map_err(|e| Error::Netns {
            path,
            what: "flush conntrack",
            source: io::Error::other(e.to_string()),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_conntrack_is_told_apart_from_failures() {
        for errno in [
            nix::libc::EPROTONOSUPPORT,
            nix::libc::EOPNOTSUPP,
            nix::libc::EAFNOSUPPORT,
        ] {
            assert!(unavailable(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [nix::libc::EPERM, nix::libc::ENOBUFS, nix::libc::EINVAL] {
            assert!(
                !unavailable(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }
}
