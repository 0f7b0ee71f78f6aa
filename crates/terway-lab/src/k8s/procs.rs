//! The Kubernetes processes of a lab: named children with a log file each, stopped by PID; and the
//! processes that are not our children but belong to a node all the same (containerd's shims and the
//! pods' processes), found by the node's mount namespace and cgroups.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Named child processes.
#[derive(Default)]
pub struct Children {
    children: BTreeMap<String, Child>,
}

impl Children {
    /// Start `cmd` as `name`, appending its output to `log`.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<u32> {
        if let Some(pid) = self.pid(name) {
            anyhow::bail!("{name} is already running (pid {pid})");
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
        let pid = child.id();
        self.children.insert(name.to_string(), child);
        Ok(pid)
    }

    /// PID of `name` while it runs (reaps it once it exited).
    pub fn pid(&mut self, name: &str) -> Option<u32> {
        let child = self.children.get_mut(name)?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => {
                self.children.remove(name);
                None
            }
        }
    }

    /// PIDs of every running child.
    pub fn pids(&mut self) -> BTreeMap<String, u32> {
        let names: Vec<String> = self.children.keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|n| self.pid(&n).map(|p| (n, p)))
            .collect()
    }

    /// SIGTERM (or SIGKILL when `kill_now`), wait up to `grace`, then SIGKILL; reaps the child.
    pub fn stop(&mut self, name: &str, kill_now: bool, grace: Duration) {
        let Some(mut child) = self.children.remove(name) else {
            return;
        };
        let sig = if kill_now {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stop every child whose name starts with `prefix`, in reverse name order.
    pub fn stop_prefix(&mut self, prefix: &str, grace: Duration) {
        let names: Vec<String> = self
            .children
            .keys()
            .filter(|n| n.starts_with(prefix))
            .rev()
            .cloned()
            .collect();
        for n in names {
            self.stop(&n, false, grace);
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for n in names {
            self.stop(&n, false, Duration::from_secs(5));
        }
    }
}

/// The inode of a process's mount namespace (`/proc/<pid>/ns/mnt`), which names the namespace.
pub fn mount_ns_inode(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    let text = link.to_string_lossy();
    text.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

/// Every process whose mount namespace is `inode`.
pub fn processes_in_mount_ns(inode: u64) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && mount_ns_inode(*pid) == Some(inode))
        .collect()
}

/// SIGKILL `pids` and wait up to `timeout` until they are gone; returns those still there.
pub fn kill_all(pids: &[u32], timeout: Duration) -> Vec<u32> {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| crate::procs::cmdline(*p).is_some())
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
