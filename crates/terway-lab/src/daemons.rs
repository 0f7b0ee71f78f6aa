//! The node daemons: one real `terwayd` per node, started inside the node's netns (`ip netns exec`, which
//! also gives it the node's own `/sys`), with its files under the node directory. The supervisor owns the
//! child processes; `stop`/`start` serve `terway-lab daemon …` and the crash tests.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::plan::{LabPlan, NodePlan};

/// A running (or stopped) daemon.
struct Daemon {
    child: Option<Child>,
    starts: u32,
}

/// Every node's daemon.
pub struct Daemons {
    binary: PathBuf,
    plan: LabPlan,
    daemons: BTreeMap<String, Daemon>,
}

/// The flags every terwayd of a lab gets, as a process or in the DaemonSet: the emulator's endpoints and
/// region, the lab's short GC, the log level.
pub fn lab_flags(plan: &LabPlan) -> Vec<String> {
    let mut flags = cloud_flags(plan);
    flags.extend([
        // GC every 15 s instead of Terway's 5 min, like the short pool sync period: leftovers of a failed
        // rollback (e.g. under injected cloud faults) are removed within a test's patience.
        "--gc-period-secs=15".into(),
        // A pod source lags a moment behind its pods (the lab's file is written before ADD, the Kubernetes
        // lab's watch trails the API server); 5 s of grace covers that without slowing the GC tests.
        "--gc-grace-secs=5".into(),
        log_level_flag(),
    ]);
    flags
}

/// Where the emulated cloud is, as terwayd and terway-controlplane take it.
pub fn cloud_flags(plan: &LabPlan) -> Vec<String> {
    vec![
        format!("--cloud-endpoint={}", plan.api_url()),
        format!("--metadata-url={}", plan.metadata_url()),
        format!("--region={}", crate::node_files::REGION),
    ]
}

/// `--log-level` of the lab's daemons (`TERWAY_LAB_DAEMON_LOG`, default info).
pub fn log_level_flag() -> String {
    format!(
        "--log-level={}",
        std::env::var("TERWAY_LAB_DAEMON_LOG").unwrap_or_else(|_| "info".into())
    )
}

/// The `terwayd` command line for a node (after `ip netns exec <netns>`).
pub fn daemon_args(plan: &LabPlan, node: &NodePlan) -> Vec<String> {
    let mut args = vec![
        "--config".into(),
        node.dir.join("eni_conf.json").display().to_string(),
        "--socket".into(),
        node.socket.display().to_string(),
        "--state-dir".into(),
        node.state_dir.display().to_string(),
        "--node-name".into(),
        node.name.clone(),
        // The pod source: the API server in a Kubernetes lab, else the pods file the lab writes.
        if plan.kubernetes.is_some() {
            "--kubeconfig"
        } else {
            "--pods-file"
        }
        .into(),
        if plan.kubernetes.is_some() {
            crate::k8s::NodePaths::new(&node.dir).at("terwayd.kubeconfig")
        } else {
            node.dir.join("pods.json")
        }
        .display()
        .to_string(),
    ];
    args.extend(lab_flags(plan));
    if plan.kubernetes.is_some() {
        // The node's kubelet sees this directory as /var/lib/kubelet/device-plugins (mount-ns.sh).
        args.push("--device-plugin-dir".into());
        args.push(
            crate::k8s::NodePaths::new(&node.dir)
                .at("device-plugins")
                .display()
                .to_string(),
        );
    }
    args
}

impl Daemons {
    /// Prepare (nothing starts yet).
    pub fn new(binary: PathBuf, plan: LabPlan) -> Self {
        Daemons {
            binary,
            plan,
            daemons: BTreeMap::new(),
        }
    }

    fn node(&self, name: &str) -> anyhow::Result<NodePlan> {
        self.plan
            .node(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no node {name:?} in lab {}", self.plan.name))
    }

    /// Start the daemon of `node` and wait until its socket answers connections.
    pub fn start(&mut self, node_name: &str, timeout: Duration) -> anyhow::Result<u32> {
        let node = self.node(node_name)?;
        if let Some(pid) = self.pid(node_name) {
            return Err(anyhow::anyhow!(
                "daemon of {node_name} is already running (pid {pid})"
            ));
        }
        std::fs::create_dir_all(&node.state_dir)?;
        // A stale socket from a killed daemon must not make us think the new one is ready.
        let _ = std::fs::remove_file(&node.socket);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("terwayd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(&self.binary)
            .args(daemon_args(&self.plan, &node))
            .env(
                "RUST_LOG",
                std::env::var("TERWAY_LAB_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start terwayd for {node_name}: {e}"))?;
        let pid = child.id();
        let entry = self.daemons.entry(node_name.to_string()).or_insert(Daemon {
            child: None,
            starts: 0,
        });
        entry.child = Some(child);
        entry.starts += 1;
        self.wait_ready(node_name, &node.socket, timeout)?;
        Ok(pid)
    }

    fn wait_ready(
        &mut self,
        node_name: &str,
        socket: &Path,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            if self.pid(node_name).is_none() {
                let log = self.plan.node(node_name).map(|n| n.dir.join("terwayd.log"));
                let tail = log.as_deref().map(tail_of).unwrap_or_default();
                return Err(anyhow::anyhow!(
                    "terwayd of {node_name} exited during start-up; last log lines:\n{tail}"
                ));
            }
            if Instant::now() >= deadline {
                return Err(anyhow::anyhow!(
                    "terwayd of {node_name} did not open {} within {timeout:?}",
                    socket.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// PID of the daemon if it is running (reaps it if it exited).
    pub fn pid(&mut self, node_name: &str) -> Option<u32> {
        let d = self.daemons.get_mut(node_name)?;
        let child = d.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => {
                d.child = None;
                None
            }
        }
    }

    /// How many times the daemon of `node_name` was started.
    pub fn starts(&self, node_name: &str) -> u32 {
        self.daemons.get(node_name).map(|d| d.starts).unwrap_or(0)
    }

    /// Stop the daemon: SIGKILL (a crash) or SIGTERM with a grace period, then reap it.
    pub fn stop(&mut self, node_name: &str, crash: bool) -> anyhow::Result<()> {
        let Some(d) = self.daemons.get_mut(node_name) else {
            return Ok(());
        };
        let Some(mut child) = d.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(
            pid,
            if crash {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            },
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop every daemon (clean stop).
    pub fn stop_all(&mut self) {
        let names: Vec<String> = self.daemons.keys().cloned().collect();
        for n in names {
            if let Err(e) = self.stop(&n, false) {
                tracing::warn!(node = %n, error = %e, "stopping terwayd");
            }
        }
    }

    /// PIDs of all running daemons by node.
    pub fn pids(&mut self) -> BTreeMap<String, u32> {
        let names: Vec<String> = self.daemons.keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|n| self.pid(&n).map(|p| (n, p)))
            .collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The last lines of a log file, for error messages.
pub fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
