//! Helpers for the Kubernetes lab tests: kubectl through `terway-lab kubectl`, manifests, and the
//! daemon's view of a node through terway-cli.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use super::{run, Lab};

/// `kubectl ARGS` against the lab's API server; panics with kubectl's output when it fails.
pub fn kubectl(lab: &Lab, args: &[&str]) -> String {
    let mut full = vec!["kubectl", "--lab", &lab.name, "--"];
    full.extend_from_slice(args);
    let (ok, out, err) = run(&full);
    assert!(ok, "kubectl {args:?}: {err}{out}");
    out
}

/// `kubectl get ARGS -o json`, parsed (Null when the output is not JSON).
pub fn get_json(lab: &Lab, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&kubectl(lab, &full)).unwrap_or(Value::Null)
}

/// `kubectl apply -f -` of `yaml`.
pub fn apply(lab: &Lab, yaml: &str) {
    apply_with(lab, yaml, &[]);
}

/// `kubectl apply EXTRA -f -` of `yaml`.
pub fn apply_with(lab: &Lab, yaml: &str, extra: &[&str]) {
    let mut args = vec!["kubectl", "--lab", &lab.name, "--", "apply"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-f", "-"]);
    let mut child = Command::new(super::lab_bin())
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run terway-lab kubectl");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Deployment of the lab's workload image.
pub fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 5\n      containers:\n      - name: main\n        image: terway-lab.local/workload:1\n        \
         imagePullPolicy: Never\n"
    )
}

/// Whether a pod object's `Ready` condition is True.
pub fn pod_is_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Pods of the Deployment `app`: (name, node, ip, ready).
pub fn app_pods(lab: &Lab, app: &str) -> Vec<(String, String, String, bool)> {
    let list = get_json(lab, &["pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let ready = pod_is_ready(p);
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready && p["metadata"]["deletionTimestamp"].is_null(),
            )
        })
        .collect()
}

/// Where the lab says the terwayd of `node` listens (a DaemonSet's socket is elsewhere than a process's).
pub fn daemon_socket(lab: &Lab, node: &str) -> String {
    lab.desc["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == node)
        .and_then(|n| n["daemon_socket"].as_str())
        .unwrap_or_else(|| panic!("up --json names no daemon_socket for {node}"))
        .to_string()
}

/// `terway-cli --json ARGS` against the daemon of `node`.
fn terway_cli(lab: &Lab, node: &str, args: &[&str]) -> std::process::Output {
    let socket = daemon_socket(lab, node);
    let cli = super::lab_bin()
        .parent()
        .map(|d| d.join("terway-cli"))
        .expect("bin dir");
    Command::new(cli)
        .args(["--socket", &socket, "--json"])
        .args(args)
        .output()
        .expect("run terway-cli")
}

/// The daemon's view of a node: pod → IP, and every IP it holds on its ENIs.
pub fn daemon_status(lab: &Lab, node: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let out = terway_cli(lab, node, &["status", "--ips"]);
    assert!(
        out.status.success(),
        "terway-cli status on {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let pods = v["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["pod"].as_str().unwrap_or_default().to_string(),
                p["ipv4"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let ips = v["enis"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["ips"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["ip"].as_str().map(String::from))
        .collect();
    (pods, ips)
}

/// The events.k8s.io/v1 events of namespace `ns` (what terwayd writes; `kubectl describe` shows them).
pub fn events(lab: &Lab, ns: &str) -> Vec<Value> {
    let out = kubectl(
        lab,
        &[
            "get",
            "--raw",
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        ],
    );
    let v: Value = serde_json::from_str(&out).expect("event list JSON");
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Events with `reason` about the pod `name` in `ns`, as (regarding UID, note).
pub fn pod_events(lab: &Lab, ns: &str, name: &str, reason: &str) -> Vec<(String, String)> {
    events(lab, ns)
        .iter()
        .filter(|e| {
            e["regarding"]["kind"] == "Pod"
                && e["regarding"]["name"] == name
                && e["reason"] == reason
        })
        .map(|e| {
            (
                e["regarding"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The UID of every pod of namespace `ns`, by name.
pub fn pod_uids(lab: &Lab, ns: &str) -> BTreeMap<String, String> {
    let list = get_json(lab, &["pods", "-n", ns]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// The node condition `kind` of `node`: (status, reason, message).
pub fn node_condition(lab: &Lab, node: &str, kind: &str) -> Option<(String, String, String)> {
    let v = get_json(lab, &["node", node]);
    v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
}

/// `terway-cli pod NS/NAME --json` against node's daemon: (success, JSON or stderr).
pub fn cli_pod(lab: &Lab, node: &str, pod: &str) -> (bool, Value, String) {
    let out = terway_cli(lab, node, &["pod", pod]);
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `terway-cli policy POD --json` on `node`: (success, JSON, stderr).
pub fn cli_policy(lab: &Lab, node: &str, pod: &str) -> (bool, Value, String) {
    let out = terway_cli(lab, node, &["policy", pod]);
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait up to `secs` until Deployment `app` has exactly `n` pods, all Ready; panics with them otherwise.
pub fn wait_app_ready(lab: &Lab, app: &str, n: usize, secs: u64) {
    let ready = super::eventually(secs, || {
        let p = app_pods(lab, app);
        p.len() == n && p.iter().all(|p| p.3)
    });
    assert!(ready, "{app}: not {n} Ready pods: {:?}", app_pods(lab, app));
}
