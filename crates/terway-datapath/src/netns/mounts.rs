//! The mount side of named namespaces: preparing the directory they are bind-mounted into the way iproute2
//! does, and reading `/proc/self/mountinfo` to tell whether a namespace file is really unmounted.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, MsFlags};

use super::ns_err;
use crate::error::Result;

/// Make `dir` a shared mount point before any namespace is bind-mounted into it, as iproute2's `netns_add`
/// does (`mount --make-shared`; on EINVAL bind the directory onto itself and retry).
///
/// A namespace bind-mounted onto a *bare* directory is lost as soon as `ip netns add` runs: iproute2 then
/// bind-mounts the directory onto itself (recursively), the original mounts end up underneath where no path
/// reaches them, and unmounting the path only removes the copy. Doing iproute2's step first means iproute2
/// finds a shared mount point and leaves the directory alone.
pub(crate) fn prepare_run_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ns_err(dir, "create the namespace directory", e))?;
    // Two of our processes binding the directory at once would stack two mounts and hide the first one's
    // namespaces. The lock lives on the directory's inode, which a bind onto itself keeps, so it serializes
    // us; iproute2 does not take it (nor does it guard against itself).
    let dir_file = File::open(dir).map_err(|e| ns_err(dir, "open the namespace directory", e))?;
    let _lock = Flock::lock(dir_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| ns_err(dir, "lock the namespace directory", e))?;
    let mut bound = false;
    loop {
        let shared = mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        );
        match shared {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet. Binding it once is all iproute2 tries, so do the same.
            Err(Errno::EINVAL) if !bound => {
                mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| ns_err(dir, "bind-mount the namespace directory onto itself", e))?;
                bound = true;
            }
            Err(e) => return Err(ns_err(dir, "mount --make-shared", e)),
        }
    }
}

/// One mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: PathBuf,
    /// Filesystem type (`nsfs` for a namespace file).
    pub fs_type: String,
    /// The optional fields (`shared:N`, `master:N`, …).
    pub propagation: Vec<String>,
}

/// Every mount of the calling process's mount namespace, hidden (covered) ones included.
pub(crate) fn read_mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Parse `/proc/self/mountinfo` text; malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: fields.get(sep + 1)?.to_string(),
                propagation: fields[6..sep].iter().map(|f| f.to_string()).collect(),
            })
        })
        .collect()
}

/// Decode the kernel's `\ooo` octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` as the kernel spells mount points: the parent resolved (so `/var/run/netns/x` matches
/// `/run/netns/x`), the file name kept even when the file is gone.
pub(crate) fn canonical(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Whether some namespace file is still mounted at `path`, visible or hidden under a later mount.
pub(crate) fn nsfs_mounted_at(path: &Path) -> io::Result<bool> {
    let want = canonical(path);
    Ok(read_mounts()?
        .iter()
        .any(|m| m.fs_type == "nsfs" && m.mount_point == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
812 27 0:4 net:[4026532301] /run/netns/a\\040b rw shared:400 master:2 - nsfs nsfs rw\n\
garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/"));
        assert!(m[0].propagation.is_empty());
        assert_eq!(m[1].mount_point, PathBuf::from("/run/netns/a b"));
        assert_eq!(m[1].fs_type, "nsfs");
        assert_eq!(m[1].propagation, vec!["shared:400", "master:2"]);
    }

    #[test]
    fn unescape_keeps_plain_backslashes() {
        assert_eq!(unescape(r"a\134b\011c\x"), "a\\b\tc\\x");
        assert_eq!(unescape(r"end\04"), r"end\04");
    }
}
