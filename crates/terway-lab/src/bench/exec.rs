//! Running a CNI plugin exactly as a container runtime does (environment + config on stdin), with its
//! "host" network namespace entered by `setns` right before `exec` — the same way for our `terway` and for
//! the reference plugins, so the measured latency is the plugin's and not our harness's.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use terway_datapath::Netns;

/// One plugin invocation.
#[derive(Debug, Clone)]
pub struct CniCall<'a> {
    /// Plugin binary.
    pub plugin: &'a Path,
    /// `CNI_PATH` (where chained/IPAM plugins are found).
    pub cni_path: &'a str,
    /// ADD / DEL / CHECK.
    pub command: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS` (empty: the sandbox is gone).
    pub netns_path: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_ARGS`.
    pub args: &'a str,
    /// Network configuration written to stdin.
    pub config: &'a [u8],
}

/// A failed invocation: the plugin's JSON error (or stderr) and exit status.
#[derive(Debug, thiserror::Error)]
#[error("{plugin} {command} for container {container_id} failed ({status}): {message}")]
pub struct CniFailure {
    /// Plugin path.
    pub plugin: PathBuf,
    /// CNI command.
    pub command: String,
    /// Container id.
    pub container_id: String,
    /// Exit status or "not started".
    pub status: String,
    /// Plugin output.
    pub message: String,
}

/// Spawn `cmd` with its network namespace switched to `host_ns` between fork and exec.
pub fn in_netns(cmd: &mut Command, host_ns: &Netns) -> std::io::Result<OwnedFd> {
    // The child gets its own duplicate so the closure owns nothing borrowed from the caller's stack.
    let fd: OwnedFd = host_ns.as_fd_owned()?;
    let raw = fd.as_raw_fd();
    // SAFETY: setns(2) is async-signal-safe; the closure touches no heap and no locks.
    unsafe {
        cmd.pre_exec(move || {
            let borrowed = std::os::fd::BorrowedFd::borrow_raw(raw);
            nix::sched::setns(borrowed, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    Ok(fd)
}

/// Extension: an owned duplicate of the namespace fd.
trait NetnsFd {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd>;
}

impl NetnsFd for Netns {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

/// Run one CNI call inside `host_ns`; returns the wall time from spawn to exit and stdout.
pub fn run_cni(
    call: &CniCall<'_>,
    host_ns: &Netns,
    timeout: Duration,
) -> Result<(Duration, Vec<u8>), CniFailure> {
    let fail = |status: String, message: String| CniFailure {
        plugin: call.plugin.to_path_buf(),
        command: call.command.to_string(),
        container_id: call.container_id.to_string(),
        status,
        message,
    };
    let mut cmd = Command::new(call.plugin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns_path)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", call.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let _keep = in_netns(&mut cmd, host_ns)
        .map_err(|e| fail("not started".into(), format!("namespace fd: {e}")))?;
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| fail("not started".into(), e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(call.config);
    }
    // Wait without burning CPU (this harness shares two cores with the plugins it measures): reader threads
    // block until the plugin closes its output, which it does by exiting; the child is reaped only here,
    // so a timeout kills a process that is still ours.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out_rx = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_rx = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stdout = match out_rx.recv_timeout(timeout) {
        Ok(b) => b,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(
                "timeout".into(),
                format!("no answer within {timeout:?}"),
            ));
        }
    };
    let status = child
        .wait()
        .map_err(|e| fail("lost".into(), e.to_string()))?;
    let elapsed = start.elapsed();
    let stderr = err_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let out = std::process::Output {
        status,
        stdout,
        stderr,
    };
    if status.success() {
        Ok((elapsed, out.stdout))
    } else {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(fail(
            status.to_string(),
            format!("{} {}", stdout.trim(), stderr.trim())
                .trim()
                .to_string(),
        ))
    }
}

/// Time `n` executions of a trivial binary (the floor of any exec-based plugin).
pub fn exec_floor(binary: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let st = Command::new(binary)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        out.push(start.elapsed());
        if !st.success() {
            anyhow::bail!("{} exited with {st}", binary.display());
        }
    }
    Ok(out)
}
