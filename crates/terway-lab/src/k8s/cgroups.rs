//! A node's cgroup root. Two kubelets on one cgroup root treat each other's pod cgroups as orphans and
//! kill them, so every node gets its own root (kubelet's `cgroupRoot`), made in every hierarchy before
//! the kubelet starts (it refuses a root that does not exist) and removed bottom-up at teardown, in the
//! v2 (`unified`) hierarchy too, where runc makes per-pod directories kubelet 1.20 never removes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The mount points of the machine's cgroup hierarchies (v1 controllers and the v2 tree).
pub fn hierarchies() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text.lines().filter_map(parse_cgroup_mount).collect();
    out.sort();
    out.dedup();
    out
}

/// The mount point of a `cgroup`/`cgroup2` line of mountinfo.
fn parse_cgroup_mount(line: &str) -> Option<PathBuf> {
    let (left, right) = line.split_once(" - ")?;
    let fstype = right.split_whitespace().next()?;
    if fstype != "cgroup" && fstype != "cgroup2" {
        return None;
    }
    left.split_whitespace().nth(4).map(PathBuf::from)
}

/// The cgroup root (`/terway-lab.<lab>.<node>`) of a node, as kubelet's `cgroupRoot` names it.
pub fn root_name(lab: &str, node: &str) -> String {
    format!("/terway-lab.{lab}.{node}")
}

/// Make `root` in every hierarchy; cpuset needs its CPUs and memory nodes copied from the parent before
/// a task may join.
pub fn create(root: &str) -> anyhow::Result<()> {
    for h in hierarchies() {
        let dir = h.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("create cgroup {}", dir.display()))?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let parent = h.join(f);
            if parent.exists() {
                let v = std::fs::read_to_string(&parent)?;
                std::fs::write(dir.join(f), v.trim())
                    .with_context(|| format!("copy {f} into {}", dir.display()))?;
            }
        }
    }
    Ok(())
}

/// Every directory below (and including) `dir`, deepest first.
fn tree_bottom_up(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(tree_bottom_up(&e.path()));
            }
        }
    }
    out.push(dir.to_path_buf());
    out
}

/// PIDs of every process in `root` or below, in any hierarchy.
pub fn processes(root: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = hierarchies()
        .iter()
        .flat_map(|h| tree_bottom_up(&h.join(root.trim_start_matches('/'))))
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Remove `root` bottom-up in every hierarchy, retrying while exiting processes still hold a cgroup.
/// Returns the directories that could not be removed.
pub fn remove(root: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for h in hierarchies() {
            let top = h.join(root.trim_start_matches('/'));
            if !top.exists() {
                continue;
            }
            for d in tree_bottom_up(&top) {
                if let Err(e) = std::fs::remove_dir(&d) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        left.push(format!("{}: {e}", d.display()));
                    }
                }
            }
        }
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_of_cgroup_filesystems_only() {
        let v1 = "35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:12 - cgroup cgroup rw,cpu";
        let v2 = "40 25 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        let tmp = "25 24 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755";
        assert_eq!(
            parse_cgroup_mount(v1),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            parse_cgroup_mount(v2),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(parse_cgroup_mount(tmp), None);
        assert_eq!(root_name("lab1", "node0"), "/terway-lab.lab1.node0");
    }
}
