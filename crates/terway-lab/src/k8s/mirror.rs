//! The pod mirror: until terwayd watches the API server itself, the lab plays its pod source and copies
//! every node's pods (name, uid, controlling owner, annotations, labels) from the API server into the
//! node's pods file once a second. A pod is listed from its binding to the node until its object is
//! gone, which is after the kubelet's CNI DEL, so the daemon's GC never releases a live pod's address;
//! the daemon's GC grace covers the second a new pod may be missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::api::{meta, Api};
use crate::plan::LabPlan;
use crate::state;

/// A pod object as the daemon's pods file lists it, with the node it is bound to.
pub fn pod_entry(pod: &Value) -> Option<(String, Value)> {
    let node = pod.pointer("/spec/nodeName")?.as_str()?.to_string();
    let owner_kind = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|r| r.get("kind"))
        .cloned()
        .unwrap_or(Value::Null);
    let entry = json!({
        "namespace": meta(pod, "namespace"),
        "name": meta(pod, "name"),
        "uid": meta(pod, "uid"),
        "owner_kind": owner_kind,
        "annotations": pod.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
        "labels": pod.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
    });
    Some((node, entry))
}

/// Group `pods` by node, every node of `nodes` present (an empty list is news too).
pub fn by_node(pods: &[Value], nodes: &[String]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> =
        nodes.iter().map(|n| (n.clone(), Vec::new())).collect();
    for (node, entry) in pods.iter().filter_map(pod_entry) {
        if let Some(list) = out.get_mut(&node) {
            list.push(entry);
        }
    }
    out
}

/// One pass: list, and rewrite the files of the nodes whose pods changed since `last`.
pub async fn sync_once(
    api: &Api,
    dir: &Path,
    plan: &LabPlan,
    last: &mut BTreeMap<String, Vec<Value>>,
) -> anyhow::Result<()> {
    let pods = api.pods().await?;
    let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    for (node, list) in by_node(&pods, &names) {
        if last.get(&node) == Some(&list) {
            continue;
        }
        state::write_json_atomic(&state::api_pods_path(dir, &node), &list)?;
        state::publish_node_pods(dir, &node)?;
        last.insert(node, list);
    }
    Ok(())
}

/// Mirror until `stop` turns true. A failing API server is logged once per outage, then retried.
pub async fn run(
    api: Api,
    dir: std::path::PathBuf,
    plan: LabPlan,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = BTreeMap::new();
    let mut failing = false;
    loop {
        match sync_once(&api, &dir, &plan, &mut last).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                tracing::warn!(error = %format!("{e:#}"), "pod mirror: cannot list pods; retrying every second");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_grouped_by_node_with_their_controlling_owner() {
        let pods = vec![
            json!({"metadata":{"namespace":"default","name":"web-1","uid":"u1",
                "ownerReferences":[{"kind":"ReplicaSet","controller":true}],
                "annotations":{"k8s.aliyun.com/pod-eni":"true"}},
                "spec":{"nodeName":"node1"}}),
            json!({"metadata":{"namespace":"default","name":"pending"},"spec":{}}),
            json!({"metadata":{"namespace":"x","name":"elsewhere"},"spec":{"nodeName":"other"}}),
        ];
        let g = by_node(&pods, &["node0".into(), "node1".into()]);
        assert_eq!(g["node0"], Vec::<Value>::new());
        assert_eq!(g["node1"].len(), 1);
        let e = &g["node1"][0];
        assert_eq!(e["owner_kind"], "ReplicaSet");
        assert_eq!(e["uid"], "u1");
        assert_eq!(e["annotations"]["k8s.aliyun.com/pod-eni"], "true");
        let parsed: terway_daemon::PodsFile =
            serde_json::from_value(json!({ "pods": g["node1"] })).unwrap();
        assert_eq!(parsed.pods[0].owner_kind.as_deref(), Some("ReplicaSet"));
    }
}
