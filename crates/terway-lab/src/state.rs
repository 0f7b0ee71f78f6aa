//! The lab's on-disk record of everything it created, so `down` can remove it all even after a crash:
//! `state.json` (written atomically by the supervisor) and one file per pod under `pods/` (written by
//! `pod add` *before* it creates the pod's namespace).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::LabPlan;

/// Where the supervisor is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "phase", content = "detail")]
pub enum Phase {
    /// Creating namespaces, emulator, daemons.
    Starting(String),
    /// Everything is up.
    Ready,
    /// Start failed; the message says why (the supervisor cleans up and exits).
    Failed(String),
    /// Tearing down.
    Stopping,
}

/// One running daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// Process id of `terwayd` (0 when stopped).
    pub pid: u32,
    /// How many times it was started.
    pub starts: u32,
}

/// A node as it came up: the plan plus what the emulator assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Primary ENI id.
    pub primary_eni: String,
    /// Primary IP.
    pub primary_ip: Ipv4Addr,
    /// Primary ENI MAC.
    pub primary_mac: String,
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    /// The plan the lab was built from.
    pub plan: LabPlan,
    /// Supervisor process id.
    pub supervisor_pid: u32,
    /// Life phase.
    pub phase: Phase,
    /// Every namespace created so far (vpc, nodes, outside host), recorded before creation.
    pub netns: Vec<String>,
    /// Daemons by node name.
    pub daemons: BTreeMap<String, DaemonRecord>,
    /// Nodes by name, once they exist.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// The Kubernetes processes, mount namespaces and cgroups, once started.
    #[serde(default)]
    pub kube: Option<crate::k8s::cluster::KubeRecord>,
}

/// Path of `state.json` in a lab directory.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Write `value` as JSON atomically (temp file + rename), so readers never see half a file.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Read a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<T> {
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
}

/// Read a lab's state by name.
pub fn load(name: &str) -> anyhow::Result<LabState> {
    let path = state_path(&crate::plan::labs_root().join(name));
    read_json(&path).map_err(|e| {
        anyhow::anyhow!(
            "lab {name:?} not found or unreadable ({}: {e}); `terway-lab status` lists labs",
            path.display()
        )
    })
}

/// One pod created by `pod add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Node name.
    pub node: String,
    /// Pod name.
    pub pod: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Sandbox container id.
    pub container_id: String,
    /// `CNI_IFNAME` of the pod's interface.
    #[serde(default = "default_if_name")]
    pub if_name: String,
    /// Pod netns name (`cni-<uuid>`).
    pub netns: String,
    /// Pod IPv4 from the CNI result, once ADD succeeded.
    pub ip: Option<Ipv4Addr>,
    /// The CNI result JSON, once ADD succeeded.
    pub result: Option<serde_json::Value>,
}

fn default_if_name() -> String {
    "eth0".into()
}

/// Directory of pod records.
pub fn pods_dir(dir: &Path) -> PathBuf {
    dir.join("pods")
}

/// Path of one pod record.
pub fn pod_path(dir: &Path, node: &str, pod: &str) -> PathBuf {
    pods_dir(dir).join(format!("{node}__{pod}.json"))
}

/// Every pod record of a lab (unreadable files are skipped with a warning).
pub fn list_pods(dir: &Path) -> Vec<PodRecord> {
    let Ok(entries) = std::fs::read_dir(pods_dir(dir)) else {
        return Vec::new();
    };
    let mut pods: Vec<PodRecord> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| match read_json(&e.path()) {
            Ok(p) => Some(p),
            Err(err) => {
                tracing::warn!(path = %e.path().display(), error = %err, "skipping unreadable pod record");
                None
            }
        })
        .collect();
    pods.sort_by(|a: &PodRecord, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
    pods
}

/// Names of the labs that have a directory under the labs root.
pub fn list_labs() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(crate::plan::labs_root()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The lab a command acts on: the given name, or the only lab present.
pub fn resolve_lab(name: Option<&str>) -> anyhow::Result<String> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let labs = list_labs();
    match labs.as_slice() {
        [only] => Ok(only.clone()),
        [] => anyhow::bail!("no lab is up; start one with `terway-lab up`"),
        many => anyhow::bail!(
            "several labs are up ({}); name one with --lab",
            many.join(", ")
        ),
    }
}

/// Path of a node's pods file (the daemon's local pod source, `terwayd --pods-file`).
pub fn node_pods_path(dir: &Path, node: &str) -> PathBuf {
    dir.join("nodes").join(node).join("pods.json")
}

/// Rewrite a node's pods file from the pod records, as the kubelet's view of "pods on this node": a pod is
/// listed from before its ADD until its DEL succeeded, so the daemon's GC only releases what is really gone.
/// Writers (several `pod add` processes or threads) take turns on a lock file, so none drops another's pod.
pub fn publish_node_pods(dir: &Path, node: &str) -> std::io::Result<()> {
    let path = node_pods_path(dir, node);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    let pods: Vec<serde_json::Value> = list_pods(dir)
        .into_iter()
        .filter(|p| p.node == node)
        .map(|p| serde_json::json!({ "namespace": p.namespace, "name": p.pod, "uid": p.uid }))
        .collect();
    write_json_atomic(&path, &serde_json::json!({ "pods": pods }))
}
