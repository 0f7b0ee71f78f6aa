//! The lab's Kubernetes pods as pod records, so `check` and the benchmarks treat them like the pods the
//! lab makes itself. A pod's network namespace is a file containerd bind-mounted under its state dir in
//! the node's private mount namespace; the lab reaches it through the holder's `/proc/<pid>/root` and
//! matches it to the pod by the address on its `eth0`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::api::meta;
use super::NodePaths;
use crate::control::{self, Request};
use crate::state::{LabState, PodRecord};

/// Every pod the API server lists (via the supervisor, which lives where the API server is reachable).
pub fn api_pods(st: &LabState) -> anyhow::Result<Vec<Value>> {
    match control::call(&st.plan.dir, &Request::KubePods, Duration::from_secs(15))? {
        Value::Array(a) => Ok(a),
        other => anyhow::bail!("the supervisor answered {other} for the pod list"),
    }
}

/// The IPv4 address on `eth0` of the namespace at `path`.
fn eth0_addr(path: &str) -> Option<Ipv4Addr> {
    let out = crate::probe::command_in(path, "ip")
        .args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    word.split('/').next()?.parse().ok()
}

/// Pod network namespaces of a node by the address on their `eth0`.
pub fn netns_by_ip(st: &LabState, node: &str) -> BTreeMap<Ipv4Addr, String> {
    let (Some(plan), Some(holder)) = (
        st.plan.node(node),
        st.kube
            .as_ref()
            .and_then(|k| k.nodes.get(node))
            .map(|r| r.holder),
    ) else {
        return BTreeMap::new();
    };
    let state = NodePaths::new(&plan.dir).containerd_state();
    let dir = PathBuf::from(format!("/proc/{holder}/root")).join(
        state
            .strip_prefix("/")
            .unwrap_or(&state)
            .join("io.containerd.grpc.v1.cri/netns"),
    );
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path().display().to_string();
            eth0_addr(&path).map(|ip| (ip, path))
        })
        .collect()
}

/// Running pods with an address, as records whose `netns` is a path.
pub fn records(st: &LabState) -> anyhow::Result<Vec<PodRecord>> {
    let pods = api_pods(st)?;
    let mut netns: BTreeMap<String, BTreeMap<Ipv4Addr, String>> = BTreeMap::new();
    let mut out = Vec::new();
    for p in &pods {
        let Some(node) = p.pointer("/spec/nodeName").and_then(Value::as_str) else {
            continue;
        };
        if p.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
            || p.pointer("/status/phase").and_then(Value::as_str) != Some("Running")
        {
            continue;
        }
        let Some(ip) = p
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let by_ip = netns
            .entry(node.to_string())
            .or_insert_with(|| netns_by_ip(st, node));
        let Some(path) = by_ip.get(&ip) else {
            continue;
        };
        out.push(PodRecord {
            node: node.to_string(),
            pod: meta(p, "name").to_string(),
            namespace: meta(p, "namespace").to_string(),
            uid: meta(p, "uid").to_string(),
            container_id: String::new(),
            if_name: "eth0".into(),
            netns: path.clone(),
            ip: Some(ip),
            result: None,
        });
    }
    Ok(out)
}
