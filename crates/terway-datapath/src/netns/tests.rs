//! Named namespaces against the real kernel (root). Directory-level cases run on a fresh directory under
//! `/tmp`, never on `/run/netns`, which other processes on the machine may be using.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::*;

/// A fresh, bare (not mounted) directory for namespace files; on drop every mount under it is removed,
/// covered ones included, and the directory deleted.
struct TempNetnsDir {
    path: PathBuf,
}

impl TempNetnsDir {
    fn new(tag: &str) -> Self {
        let path = PathBuf::from(format!(
            "/tmp/tdp-netns-{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempNetnsDir {
    fn drop(&mut self) {
        // A covering mount hides what lies below it, so peel newest-first until nothing is left.
        for _ in 0..16 {
            let under: Vec<PathBuf> = mountinfo_lines()
                .iter()
                .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
                .filter(|mp| mp.starts_with(&self.path))
                .collect();
            if under.is_empty() {
                break;
            }
            for mp in under.iter().rev() {
                let _ = umount2(mp, MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn mountinfo_lines() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Lines of the mount table mounted exactly at `path` (parsed independently of the code under test).
fn mounts_at(path: &Path) -> Vec<String> {
    let want = path.to_str().unwrap();
    mountinfo_lines()
        .into_iter()
        .filter(|l| l.split(' ').nth(4) == Some(want))
        .collect()
}

fn nsfs_mounts_at(path: &Path) -> usize {
    mounts_at(path)
        .iter()
        .filter(|l| l.contains(" - nsfs "))
        .count()
}

/// What `ip netns add` does to its directory before mounting anything (iproute2 `netns_add`).
fn iproute2_netns_add_step(dir: &Path) {
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => {}
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .unwrap();
            make_shared().unwrap();
        }
        Err(e) => panic!("mount --make-shared {}: {e}", dir.display()),
    }
}

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
fn run_stays_on_the_calling_thread_in_its_own_namespace_and_uses_a_thread_elsewhere() {
    let here = std::thread::current().id();
    let own = Netns::current().unwrap();
    assert_eq!(own.run(|| std::thread::current().id()).unwrap(), here);
    let e = own.run(|| panic!("boom")).unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");
    let name = format!("tdpns{}", rand::random::<u32>());
    let other = Netns::create_named(&name).unwrap();
    let (tid, dev) = other
        .run(|| {
            let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
            (std::thread::current().id(), dev)
        })
        .unwrap();
    Netns::delete_named(&name).unwrap();
    assert_ne!(
        tid, here,
        "another namespace is entered on a thread of its own"
    );
    assert_eq!(
        dev.lines().count(),
        3,
        "only lo in the new namespace: {dev}"
    );
}

#[test]
fn namespace_in_a_bare_directory_survives_iproute2_remounting_it() {
    let dir = TempNetnsDir::new("bare");
    assert!(mounts_at(dir.path()).is_empty(), "fresh dir is a mount");
    let path = dir.path().join("a");
    drop(Netns::create_in(dir.path(), "a").unwrap());
    let dir_mounts = mounts_at(dir.path());
    assert!(
        dir_mounts.iter().any(|l| l.contains(" shared:")),
        "create must leave the directory a shared mount point, as iproute2 does: {dir_mounts:?}"
    );
    // A later `ip netns add` now finds a shared mount point and leaves it alone.
    iproute2_netns_add_step(dir.path());
    Netns::delete_path(&path).unwrap();
    assert_eq!(
        nsfs_mounts_at(&path),
        0,
        "namespace still mounted after delete: {:?}",
        mountinfo_lines()
    );
    assert!(!path.exists());
}

#[test]
fn deleting_a_namespace_hidden_under_a_later_mount_is_an_error_naming_it() {
    let dir = TempNetnsDir::new("hidden");
    let path = dir.path().join("b");
    // What an earlier binary did: mount onto the bare directory, then `ip netns add` covered it.
    std::fs::File::create(&path).unwrap();
    bind_new_namespace(&path).unwrap();
    iproute2_netns_add_step(dir.path());
    let err = Netns::delete_path(&path).unwrap_err();
    assert!(
        matches!(&err, Error::NetnsStillMounted { name, .. } if name == "b"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("network namespace b is still mounted"),
        "{err}"
    );
    assert!(nsfs_mounts_at(&path) >= 1, "the hidden mount went away");
}

#[test]
fn delete_removes_stacked_mounts() {
    let dir = TempNetnsDir::new("stacked");
    let path = dir.path().join("c");
    drop(Netns::create_in(dir.path(), "c").unwrap());
    // A second create racing the first mounts another namespace on top of the same file.
    bind_new_namespace(&path).unwrap();
    assert_eq!(nsfs_mounts_at(&path), 2);
    Netns::delete_path(&path).unwrap();
    assert_eq!(nsfs_mounts_at(&path), 0);
    assert!(!path.exists());
}

#[test]
fn deleting_a_missing_namespace_is_fine() {
    let dir = TempNetnsDir::new("missing");
    Netns::delete_path(&dir.path().join("never")).unwrap();
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
