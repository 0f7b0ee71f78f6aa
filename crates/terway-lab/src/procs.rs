//! Processes the lab starts (the supervisor, one `terwayd` per node) and how it stops them: by PID only,
//! and only after checking that the PID still runs the program we started (PIDs get reused after a crash).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The command line of a process (`/proc/<pid>/cmdline`, NUL separators as spaces); `None` if it is gone.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // a zombie or kernel thread
    }
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_string(),
    )
}

/// Whether `pid` is alive and its command line contains every marker (e.g. the program and the lab dir).
pub fn is_ours(pid: u32, markers: &[&str]) -> bool {
    if pid == 0 {
        return false;
    }
    match cmdline(pid) {
        Some(cmd) => markers.iter().all(|m| cmd.contains(m)),
        None => false,
    }
}

/// Send `sig` to `pid` if it is still ours.
pub fn signal_if_ours(pid: u32, markers: &[&str], sig: Signal) -> bool {
    if !is_ours(pid, markers) {
        return false;
    }
    kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// Wait until `pid` is gone (or a zombie), up to `timeout`.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cmdline(pid).is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; returns whether the process is gone.
pub fn stop(pid: u32, markers: &[&str], grace: Duration) -> bool {
    if !signal_if_ours(pid, markers, Signal::SIGTERM) {
        return !is_ours(pid, markers);
    }
    if wait_gone(pid, grace) {
        return true;
    }
    signal_if_ours(pid, markers, Signal::SIGKILL);
    wait_gone(pid, Duration::from_secs(5))
}

/// Directory of the running `terway-lab` binary, where `terwayd` and `terway` are looked for first.
pub fn own_bin_dir() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // Test binaries live in target/<profile>/deps; the real binaries one level up.
    let dir = exe.parent()?.to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        return dir.parent().map(Path::to_path_buf);
    }
    Some(dir)
}

/// Find a sibling binary (`terwayd`, `terway`): `$TERWAY_BIN_DIR`, then next to this binary, then `$PATH`.
pub fn find_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("TERWAY_BIN_DIR") {
        candidates.push(std::path::PathBuf::from(dir).join(name));
    }
    if let Some(dir) = own_bin_dir() {
        candidates.push(dir.join(name));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "binary `{name}` not found next to terway-lab, in $TERWAY_BIN_DIR or $PATH; build it first \
             (`cargo build -p terwayd -p terway-cni -p terway-cli`)"
        )
    })
}
