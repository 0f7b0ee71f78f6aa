//! Typed datapath errors. Every kernel failure carries the operation and object it concerned, and callers
//! wrap it with the pod-level context (`set up veth cali1234 for pod ns/name: …`) via [`Context`].

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias for the datapath crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A datapath failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a netlink request.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// What was asked, e.g. `add route 0.0.0.0/0 via 169.254.1.1 table 1005`.
        op: String,
        /// Errno from the kernel.
        #[source]
        source: io::Error,
    },
    /// Opening, entering, creating or deleting a network namespace failed.
    #[error("network namespace {path}: {what}: {source}")]
    Netns {
        /// Namespace path.
        path: PathBuf,
        /// What was attempted.
        what: &'static str,
        /// Errno.
        #[source]
        source: io::Error,
    },
    /// Unmounting a namespace file did not free it: a namespace is still mounted at its path, usually
    /// underneath a later mount of the namespace directory, where no path reaches it.
    #[error(
        "network namespace {name} is still mounted at {path} after unmounting it: the mount is hidden under a \
         later mount of {dir} (which `ip netns add` makes when {dir} is not a mount point yet), so the namespace \
         stays alive; `umount -l {dir}` uncovers it (and drops the namespaces mounted on top of it), then delete \
         it again, or reboot"
    )]
    NetnsStillMounted {
        /// Namespace name (the file name).
        name: String,
        /// The namespace file.
        path: PathBuf,
        /// The directory whose later mount covers it.
        dir: PathBuf,
    },
    /// Reading or writing a sysctl failed.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// Dotted key, e.g. `net.ipv4.conf.all.forwarding`.
        key: String,
        /// Errno.
        #[source]
        source: io::Error,
    },
    /// A link that must exist does not.
    #[error("link {0} not found")]
    LinkNotFound(String),
    /// A link exists and is up but never became operationally up (no carrier).
    #[error("link {0}")]
    LinkNotReady(String),
    /// The ENI with this MAC never showed up in the host namespace.
    #[error("no link with MAC {mac} after {attempts} attempts; is the ENI attached to this instance and visible to the kernel?")]
    EniNotFound {
        /// MAC looked for.
        mac: String,
        /// How many lookups were made.
        attempts: u32,
    },
    /// The namespace a pod was to be programmed in is the node's own (the plugin's, or `host_netns`).
    #[error("CNI_NETNS {path} is the node's own network namespace (the same namespace as {host}); terway only programs pod sandboxes and would replace the node's eth0 and default route. Pass the sandbox's namespace (e.g. /var/run/netns/cni-<id>) and check the container runtime's CNI configuration")]
    HostNamespace {
        /// The CNI_NETNS path as given.
        path: PathBuf,
        /// The node namespace it resolved to.
        host: PathBuf,
    },
    /// A link holds a name terway needs but terway did not create it for this container.
    #[error("link {name} in {namespace} was not created by terway for container {container_id}; refusing to delete, rename or move it. Remove it yourself or give this attachment another CNI_IFNAME")]
    ForeignLink {
        /// Link name.
        name: String,
        /// Namespace it lives in (for the message).
        namespace: String,
        /// The container the plugin is working for.
        container_id: String,
    },
    /// The request itself is unusable (bad address, missing field).
    #[error("invalid pod network configuration: {0}")]
    Invalid(String),
    /// CHECK found a difference between the wanted and the actual state.
    #[error("datapath check failed: {0}")]
    Mismatch(String),
    /// A wrapped error with the operation that was running.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
    /// Several independent failures (teardown keeps going and reports all of them).
    #[error("{0}")]
    Multiple(ErrorList),
}

impl Error {
    /// Build a netlink error from the kernel's negative errno.
    pub(crate) fn netlink(op: impl Into<String>, source: io::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }

    /// The innermost errno, if the root cause was a kernel error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. }
            | Error::Netns { source, .. }
            | Error::Sysctl { source, .. } => source.raw_os_error(),
            Error::Context { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// True when the root cause is "operation not supported" (e.g. a link kind the kernel lacks).
    pub fn is_not_supported(&self) -> bool {
        matches!(self.errno(), Some(e) if e == libc_eopnotsupp() || e == nix::libc::EPROTONOSUPPORT)
    }
}

fn libc_eopnotsupp() -> i32 {
    nix::libc::EOPNOTSUPP
}

/// Attach context to a datapath result, netavark's `wrap!` as a trait.
pub trait Context<T> {
    /// Wrap the error with `context()` evaluated lazily.
    fn context<C: Into<String>, F: FnOnce() -> C>(self, context: F) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context<C: Into<String>, F: FnOnce() -> C>(self, context: F) -> Result<T> {
        self.map_err(|source| Error::Context {
            context: context().into(),
            source: Box::new(source),
        })
    }
}

/// Errors collected while continuing past failures (teardown).
#[derive(Debug, Default)]
pub struct ErrorList(pub Vec<Error>);

impl ErrorList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record the error of `result`, if any, and keep going.
    pub fn collect<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// Add one error.
    pub fn push(&mut self, e: Error) {
        self.0.push(e);
    }

    /// Ok when nothing failed, the single error, or all of them.
    pub fn into_result(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(Error::Multiple(self)),
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_read_outside_in() {
        let r: Result<()> = Err(Error::netlink(
            "add route 10.0.0.0/8",
            io::Error::from_raw_os_error(17),
        ));
        let e = r
            .context(|| "set up veth cali1234 for pod default/web")
            .unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("set up veth cali1234 for pod default/web: netlink add route 10.0.0.0/8"),
            "{s}"
        );
        assert_eq!(e.errno(), Some(17));
    }

    #[test]
    fn error_list_keeps_all() {
        let mut l = ErrorList::new();
        l.collect::<()>(Err(Error::LinkNotFound("a".into())));
        l.collect(Ok(1));
        l.collect::<()>(Err(Error::LinkNotFound("b".into())));
        let s = l.into_result().unwrap_err().to_string();
        assert_eq!(s, "link a not found; link b not found");
    }
}
