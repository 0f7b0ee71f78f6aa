//! Network namespace handles.
//!
//! A [`Netns`] is an open file descriptor on a namespace. Work that must run *inside* a namespace (creating a
//! netlink socket, writing `/proc/sys/net`) runs on a short-lived dedicated thread that `setns`es and then
//! exits, so the namespace switch never leaks into tokio's worker threads. Creating a named namespace follows
//! `ip netns add` without forking: `unshare(CLONE_NEWNET)` on a throwaway thread and bind-mount
//! `/proc/thread-self/ns/net` onto `/run/netns/<name>`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

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
        let path = Self::named_path(name);
        if path.exists() {
            if let Ok(ns) = Self::open(&path) {
                if ns.is_mounted_namespace() {
                    return Ok(ns);
                }
            }
        }
        std::fs::create_dir_all(NETNS_RUN_DIR)
            .map_err(|e| ns_err(&path, "create /run/netns", e))?;
        File::create(&path).map_err(|e| ns_err(&path, "create mount point", e))?;
        let target = path.clone();
        let made = std::thread::scope(|s| {
            s.spawn(move || -> Result<()> {
                // The thread owns the new namespace only until it exits; the bind mount keeps it alive.
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(&target, "unshare", e))?;
                mount(
                    Some(Path::new("/proc/thread-self/ns/net")),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| ns_err(&target, "bind mount", e))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(ns_err(
                    &path,
                    "create",
                    io::Error::other("namespace thread panicked"),
                ))
            })
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Self::open(&path)
    }

    /// Delete the named namespace: unmount and remove `/run/netns/<name>`. Missing is fine.
    pub fn delete_named(name: &str) -> Result<()> {
        Self::delete_path(&Self::named_path(name))
    }

    /// Unmount and remove a bind-mounted namespace file. Missing is fine.
    pub fn delete_path(path: &Path) -> Result<()> {
        if !path.exists() {
            return Ok(());
        }
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(ns_err(path, "unmount", e)),
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ns_err(path, "remove", e)),
        }
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
    /// (and no tokio worker) ever changes namespace.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        let fd = self.fd.as_fd();
        let path = &self.path;
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

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn enter(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(path, "setns", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_run_delete_named_namespace() {
        let name = format!("tdpns{}", rand::random::<u32>());
        let ns = Netns::create_named(&name).unwrap();
        let again = Netns::create_named(&name).unwrap();
        assert!(ns.same_as(&again));
        let root = Netns::current().unwrap();
        assert!(!ns.same_as(&root));
        // Inside the namespace only `lo` exists.
        let dev = ns
            .run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
            .unwrap();
        assert_eq!(dev.lines().count(), 3, "{dev}");
        Netns::delete_named(&name).unwrap();
        Netns::delete_named(&name).unwrap();
        assert!(!Netns::named_path(&name).exists());
    }

    #[test]
    fn open_pod_refuses_every_path_to_a_node_namespace() {
        let name = format!("tdpnode{}", rand::random::<u32>());
        let node = Netns::create_named(&name).unwrap();
        let pod_name = format!("tdppod{}", rand::random::<u32>());
        Netns::create_named(&pod_name).unwrap();
        let node_path = Netns::named_path(&name);
        let pod_path = Netns::named_path(&pod_name);
        // Seen from inside the node namespace, /proc/thread-self/ns/net is the node too.
        let refused = node
            .run(|| {
                let own = Netns::own().unwrap();
                let mut v = Vec::new();
                for p in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
                    v.push(Netns::open_pod(Path::new(p), &own).is_err());
                }
                v.push(Netns::open_pod(&node_path, &own).is_err());
                v.push(Netns::open_pod(&pod_path, &own).is_ok());
                v
            })
            .unwrap();
        assert_eq!(refused, [true, true, true, true]);
        let e = Netns::open_pod(&node_path, &[node.try_clone().unwrap()]).unwrap_err();
        assert!(
            matches!(&e, Error::HostNamespace { path, .. } if path == &node_path),
            "{e}"
        );
        assert!(e.to_string().contains(&node_path.display().to_string()));
        Netns::delete_named(&name).unwrap();
        Netns::delete_named(&pod_name).unwrap();
    }
}
