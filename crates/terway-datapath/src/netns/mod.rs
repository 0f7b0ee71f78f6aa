//! Network namespace handles.
//!
//! A [`Netns`] is an open file descriptor on a namespace. Work that must run *inside* a namespace (creating a
//! netlink socket, writing `/proc/sys/net`) runs on a short-lived dedicated thread that `setns`es and then
//! exits, so the namespace switch never leaks into tokio's worker threads. Creating a named namespace follows
//! `ip netns add` without forking: `unshare(CLONE_NEWNET)` on a throwaway thread and bind-mount
//! `/proc/thread-self/ns/net` onto `/run/netns/<name>`, after making `/run/netns` a shared mount point as
//! iproute2 does. Deleting checks the mount table, so a namespace that an unmount could not
//! reach is reported instead of silently leaked.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

mod mounts;
#[cfg(test)]
mod tests;

/// Directory where named namespaces are bind-mounted (same as iproute2).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
}

fn ns_err(path: &Path, what: &'static str, source: impl Into<io::Error>) -> Error {
    Error::Netns {
        path: path.to_path_buf(),
        what,
        source: source.into(),
    }
}

impl Netns {
    /// Open the namespace file at `path` (e.g. `/var/run/netns/cni-1234` or `/proc/123/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| ns_err(path, "open", e))?;
        Ok(Self {
            fd: file.into(),
            path: path.to_path_buf(),
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Open the named namespace `/run/netns/<name>`.
    pub fn open_named(name: &str) -> Result<Self> {
        Self::open(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// Path of a named namespace.
    pub fn named_path(name: &str) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(name)
    }

    /// Create the named namespace `/run/netns/<name>`, or open it if it already exists.
    pub fn create_named(name: &str) -> Result<Self> {
        Self::create_in(Path::new(NETNS_RUN_DIR), name)
    }

    /// Create (or open) the named namespace `<dir>/<name>`; `dir` is made a shared mount point first.
    pub(crate) fn create_in(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        if path.exists() {
            if let Ok(ns) = Self::open(&path) {
                if ns.is_mounted_namespace() {
                    return Ok(ns);
                }
            }
        }
        mounts::prepare_run_dir(dir)?;
        File::create(&path).map_err(|e| ns_err(&path, "create mount point", e))?;
        if let Err(e) = bind_new_namespace(&path) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Self::open(&path)
    }

    /// Delete the named namespace: unmount and remove `/run/netns/<name>`. Missing is fine.
    pub fn delete_named(name: &str) -> Result<()> {
        Self::delete_path(&Self::named_path(name))
    }

    /// Unmount and remove a bind-mounted namespace file. Missing is fine; a namespace that is still mounted
    /// at `path` afterwards (an unmount that did nothing) is [`Error::NetnsStillMounted`].
    pub fn delete_path(path: &Path) -> Result<()> {
        let mut removed = Ok(());
        if path.exists() {
            unmount_all(path)?;
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // EBUSY here usually means a hidden mount; the check below names that precisely.
                Err(e) => removed = Err(ns_err(path, "remove", e)),
            }
        }
        // The unmount can succeed and still free nothing: when the directory was bind-mounted onto itself
        // after the namespace was mounted, the path reaches only a copy. Only the mount table knows.
        let still = mounts::nsfs_mounted_at(path)
            .map_err(|e| ns_err(path, "read /proc/self/mountinfo to verify the unmount", e))?;
        if still {
            return Err(Error::NetnsStillMounted {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: path.to_path_buf(),
                dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            });
        }
        removed
    }

    fn is_mounted_namespace(&self) -> bool {
        // A bare file (never mounted) has a regular inode; a namespace file is an nsfs inode.
        match nix::sys::statfs::fstatfs(&self.fd) {
            Ok(st) => st.filesystem_type().0 == 0x6e73_6673,
            Err(_) => false,
        }
    }

    /// Path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Duplicate the handle (independent fd on the same namespace).
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| ns_err(&self.path, "dup", e))?;
        Ok(Self {
            fd,
            path: self.path.clone(),
        })
    }

    /// Raw fd, for netlink attributes such as `IFLA_NET_NS_FD`.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// True if this is the same namespace as `other` (same nsfs inode).
    pub fn same_as(&self, other: &Netns) -> bool {
        match (
            nix::sys::stat::fstat(&self.fd),
            nix::sys::stat::fstat(&other.fd),
        ) {
            (Ok(a), Ok(b)) => a.st_ino == b.st_ino && a.st_dev == b.st_dev,
            _ => false,
        }
    }

    /// The namespaces the caller itself is in: the process's (`/proc/self/ns/net`) and the calling
    /// thread's (`/proc/thread-self/ns/net`, different only after a `setns`). Neither is ever a pod's.
    pub fn own() -> Result<Vec<Self>> {
        Ok(vec![
            Self::open("/proc/self/ns/net")?,
            Self::open("/proc/thread-self/ns/net")?,
        ])
    }

    /// Open the pod namespace at `path`, refusing it with [`Error::HostNamespace`] when it is one of
    /// `node`. Namespaces are compared by nsfs device and inode, so `/proc/self/ns/net`, `/proc/<pid>/ns/net`
    /// and a bind mount of a node namespace are all recognised; the returned handle is the one that was
    /// compared, so the path cannot be swapped between the check and its use.
    pub fn open_pod(path: &Path, node: &[Self]) -> Result<Self> {
        let ns = Self::open(path)?;
        if let Some(host) = node.iter().find(|h| ns.same_as(h)) {
            return Err(Error::HostNamespace {
                path: path.to_path_buf(),
                host: host.path.clone(),
            });
        }
        Ok(ns)
    }

    /// Run `f` on a dedicated thread inside this namespace. The thread ends afterwards, so no other thread
    /// (and no tokio worker) ever changes namespace. When the calling thread is in this namespace already
    /// (the node's, for the plugin and terwayd), `f` runs right here: a thread costs more than most `f`s.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        let fd = self.fd.as_fd();
        let path = &self.path;
        if is_current(fd) {
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|_| ns_err(path, "run", io::Error::other("namespace closure panicked")));
        }
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                enter(fd, path)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(ns_err(
                    path,
                    "run",
                    io::Error::other("namespace thread panicked"),
                ))
            })
        })
    }
}

/// Mount a fresh network namespace onto the existing file `path`.
pub(crate) fn bind_new_namespace(path: &Path) -> Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // The thread owns the new namespace only until it exits; the bind mount keeps it alive.
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(path, "unshare", e))?;
            mount(
                Some(Path::new("/proc/thread-self/ns/net")),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| ns_err(path, "bind mount", e))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(ns_err(
                path,
                "create",
                io::Error::other("namespace thread panicked"),
            ))
        })
    })
}

/// Unmount everything visibly mounted at `path` (a racing double create can stack two mounts).
fn unmount_all(path: &Path) -> Result<()> {
    const MAX_STACKED: usize = 8;
    for _ in 0..MAX_STACKED {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // Not (or no longer) a mount point as far as this path can see; the caller verifies the rest.
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(ns_err(path, "unmount", e)),
        }
    }
    Ok(())
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether the calling thread is in the namespace `fd` refers to (same nsfs device and inode).
fn is_current(fd: BorrowedFd<'_>) -> bool {
    match (
        nix::sys::stat::fstat(fd),
        nix::sys::stat::stat("/proc/thread-self/ns/net"),
    ) {
        (Ok(target), Ok(here)) => target.st_ino == here.st_ino && target.st_dev == here.st_dev,
        _ => false,
    }
}

fn enter(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    // Already there (e.g. terwayd working in its own namespace): setns would need CAP_SYS_ADMIN, which a
    // container with only NET_ADMIN lacks, for no change at all.
    if is_current(fd) {
        return Ok(());
    }
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(path, "setns", e))
}
