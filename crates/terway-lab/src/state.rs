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
    let mut pods: Vec<serde_json::Value> = list_pods(dir)
        .into_iter()
        .filter(|p| p.node == node)
        .map(|p| serde_json::json!({ "namespace": p.namespace, "name": p.pod, "uid": p.uid }))
        .collect();
    pods.extend(listed_pods(dir, node));
    write_json_atomic(&path, &serde_json::json!({ "pods": pods }))
}

/// Directory of a node's externally listed pod sets (one file per [`ListedPods`]).
fn listed_dir(dir: &Path, node: &str) -> PathBuf {
    dir.join("nodes").join(node).join("listed")
}

/// Every pod of every listed set of `node`, as pods-file entries.
fn listed_pods(dir: &Path, node: &str) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(listed_dir(dir, node)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| read_json::<serde_json::Value>(&e.path()).ok())
        .filter_map(|v| v.get("pods").and_then(|p| p.as_array()).cloned())
        .flatten()
        .collect()
}

/// Pods that something other than `pod add` drives with direct CNI calls (a benchmark), listed as living
/// on a node from before their first ADD until this guard drops, after their DEL: the daemon's pod GC
/// would otherwise release them as leaked once its grace ran out, racing the benchmark's own DEL.
#[derive(Debug)]
pub struct ListedPods {
    dir: PathBuf,
    node: String,
    file: PathBuf,
}

impl ListedPods {
    /// List `pods` (namespace, name) on `node` under the set name `set` (unique per run).
    pub fn list(
        dir: &Path,
        node: &str,
        set: &str,
        pods: impl IntoIterator<Item = (String, String)>,
    ) -> std::io::Result<ListedPods> {
        let ldir = listed_dir(dir, node);
        std::fs::create_dir_all(&ldir)?;
        let file = ldir.join(format!("{set}.json"));
        let pods: Vec<serde_json::Value> = pods
            .into_iter()
            .map(|(namespace, name)| serde_json::json!({ "namespace": namespace, "name": name }))
            .collect();
        write_json_atomic(&file, &serde_json::json!({ "pods": pods }))?;
        let listed = ListedPods {
            dir: dir.to_path_buf(),
            node: node.to_string(),
            file,
        };
        publish_node_pods(dir, node)?;
        Ok(listed)
    }
}

impl Drop for ListedPods {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if let Err(e) = publish_node_pods(&self.dir, &self.node) {
            tracing::warn!(node = %self.node, error = %e, "cannot republish the node's pods after unlisting a pod set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(dir: &Path, node: &str) -> Vec<String> {
        let v: serde_json::Value = read_json(&node_pods_path(dir, node)).unwrap_or_default();
        let mut names: Vec<String> = v["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(format!(
                    "{}/{}",
                    p["namespace"].as_str()?,
                    p["name"].as_str()?
                ))
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn listed_pods_are_published_with_the_records_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(pods_dir(&dir)).unwrap();
        let rec = PodRecord {
            node: "node0".into(),
            pod: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            container_id: "c1".into(),
            if_name: "eth0".into(),
            netns: "cni-x".into(),
            ip: None,
            result: None,
        };
        write_json_atomic(&pod_path(&dir, "node0", "web"), &rec).unwrap();
        let a = ListedPods::list(&dir, "node0", "run1-a", [("bench".into(), "p0".into())]).unwrap();
        let b = ListedPods::list(&dir, "node0", "run1-b", [("bench".into(), "q0".into())]).unwrap();
        assert_eq!(
            published(&dir, "node0"),
            ["bench/p0", "bench/q0", "default/web"]
        );
        assert!(
            published(&dir, "node1").is_empty(),
            "another node's file is untouched"
        );
        drop(a);
        assert_eq!(published(&dir, "node0"), ["bench/q0", "default/web"]);
        drop(b);
        assert_eq!(published(&dir, "node0"), ["default/web"]);
    }
}
