//! The Kubernetes side of the NetworkPolicy lab tests: the cyclonus model as real namespaces and pods,
//! policies as the API server stores them, and each node's nftables table for failure messages.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};
use terway_datapath::conntrack;
use terway_datapath::netns::Netns;
use terway_policy::{ClusterNetworkPolicy, Proto, World};

use super::k8s::{apply, get_json, kubectl};
use super::probe::{self, Endpoint, Probe};
use super::{eventually, Lab};

/// How long a probe waits before it counts as blocked.
pub const PROBE: Duration = Duration::from_millis(200);
/// How long a case may take to agree: the watch delivering the policy, one reconciler period, the nft
/// transaction — well under a second here; the margin is for a loaded 2-core CI machine.
pub const AGREE: Duration = Duration::from_secs(15);

/// The cyclonus model running in a lab: its pods as probe endpoints (in the model's order), every probe
/// between them, and the nodes whose conntrack entries each probing round clears.
pub struct ModelPods {
    /// The model's pods.
    pub eps: Vec<Endpoint>,
    /// Every probe between two of them.
    pub probes: Vec<Probe>,
    nodes: Vec<Netns>,
    pod_ips: Vec<IpAddr>,
}

impl ModelPods {
    /// Create `model`'s namespaces and pods, wait until they run, give `model` their addresses, start the
    /// listeners, and check that every probe passes while there is no policy.
    pub async fn start(lab: &Lab, model: &mut World) -> ModelPods {
        apply(lab, &model_manifest(model));
        let mut eps = None;
        assert!(
            eventually(120, || {
                eps = running_pods(lab, model);
                eps.is_some()
            }),
            "the model's {} pods did not all run: {}",
            model.pods.len(),
            kubectl(lab, &["get", "pods", "-A", "-o", "wide"])
        );
        let eps = eps.unwrap_or_default();
        assert_eq!(eps.len(), model.pods.len());
        for (p, e) in model.pods.iter_mut().zip(&eps) {
            p.ips = vec![e.ip];
        }
        let nodes = lab.desc["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                Netns::open_named(n["netns"].as_str().unwrap_or_default()).expect("node netns")
            })
            .collect();
        let pod_ips = eps.iter().map(|e| e.ip).collect();
        probe::serve(&eps).await;
        let m = ModelPods {
            probes: probe::all_probes(eps.len()),
            eps,
            nodes,
            pod_ips,
        };
        let wrong = m.until_agreed(&|_| true).await;
        assert!(
            wrong.is_empty(),
            "without policies, these probes failed: {wrong:?}"
        );
        m
    }

    /// Probe until every result is what `want` says or [`AGREE`] passes; the mismatches of the last round.
    /// Each round first clears the pods' conntrack entries on every node: entries of earlier flows would
    /// admit a probe as an established one.
    pub async fn until_agreed(&self, want: &dyn Fn(&Probe) -> bool) -> Vec<(Probe, bool)> {
        let flush = || {
            for n in &self.nodes {
                conntrack::flush_addresses(n, &self.pod_ips)
                    .expect("flush a node's conntrack entries");
            }
        };
        probe::until_agreed(&self.eps, &self.probes, want, PROBE, AGREE, &flush).await
    }
}

/// Namespaces and pods of the cyclonus model, with the model's labels and named container ports.
pub fn model_manifest(model: &World) -> String {
    let mut items: Vec<Value> = model
        .namespaces
        .iter()
        .map(|n| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": n.name, "labels": n.labels}})
        })
        .collect();
    for p in &model.pods {
        let ports: Vec<Value> = p
            .ports
            .iter()
            .map(|np| {
                json!({"name": np.name, "containerPort": np.port,
                       "protocol": if np.proto == Proto::Udp { "UDP" } else { "TCP" }})
            })
            .collect();
        items.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "terway-lab.local/workload:1", "imagePullPolicy": "Never",
                "ports": ports}]}
        }));
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// The model's pods as they run: name, IP and network namespace of each, in the model's order.
pub fn running_pods(lab: &Lab, model: &World) -> Option<Vec<Endpoint>> {
    let listed = lab.pods();
    let mut out = Vec::new();
    for p in &model.pods {
        let obj = get_json(lab, &["pod", "-n", &p.namespace, &p.name]);
        if obj["status"]["phase"] != "Running" {
            return None;
        }
        let ip: IpAddr = obj["status"]["podIP"].as_str()?.parse().ok()?;
        let netns = listed
            .iter()
            .find(|l| l["namespace"] == p.namespace.as_str() && l["pod"] == p.name.as_str())
            .and_then(|l| l["netns"].as_str())?;
        out.push(Endpoint {
            name: p.key(),
            netns: netns.into(),
            ip,
        });
    }
    Some(out)
}

/// The NetworkPolicies as the API server stored them (a 1.20 server drops fields it does not know, such
/// as `endPort`: the oracle must judge what the nodes see).
pub fn stored_policies(lab: &Lab) -> Vec<NetworkPolicy> {
    let list = get_json(lab, &["networkpolicies", "--all-namespaces"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            serde_json::from_value(v.clone()).expect("a NetworkPolicy the API server returned")
        })
        .collect()
}

/// The policies as one List, each renamed `c<seed>-<name>` so that no two cases share a name.
pub fn policies_manifest(seed: u64, policies: &[NetworkPolicy]) -> String {
    let items: Vec<Value> = policies
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).expect("serialize a NetworkPolicy");
            v["apiVersion"] = json!("networking.k8s.io/v1");
            v["kind"] = json!("NetworkPolicy");
            v["metadata"]["name"] = json!(format!(
                "c{seed}-{}",
                p.metadata.name.as_deref().unwrap_or("p")
            ));
            v
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Each node's nftables policy table, for a failure message.
pub fn tables(lab: &Lab) -> String {
    let mut s = String::new();
    for n in lab.desc["nodes"].as_array().into_iter().flatten() {
        let ns = n["netns"].as_str().unwrap_or_default();
        let listing = Netns::open_named(ns).ok().and_then(|ns| {
            terway_datapath::nft::query(&ns, &["list", "table", "inet", "terway_policy"], "listing")
                .ok()
                .flatten()
        });
        s.push_str(&format!("--- {ns}\n{}\n", listing.unwrap_or_default()));
    }
    s
}

/// Delete every NetworkPolicy and wait until they are gone.
pub fn delete_all_policies(lab: &Lab) {
    kubectl(
        lab,
        &[
            "delete",
            "networkpolicies",
            "--all",
            "--all-namespaces",
            "--wait=true",
        ],
    );
}

/// The ClusterNetworkPolicies as the API server stored them.
pub fn stored_cluster_policies(lab: &Lab) -> Vec<ClusterNetworkPolicy> {
    let list = get_json(lab, &["clusternetworkpolicies"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            serde_json::from_value(v.clone())
                .expect("a ClusterNetworkPolicy the API server returned")
        })
        .collect()
}

/// The cluster policies as one List, each renamed `c<seed>-<name>`.
pub fn cluster_policies_manifest(seed: u64, policies: &[ClusterNetworkPolicy]) -> String {
    let items: Vec<Value> = policies
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).expect("serialize a ClusterNetworkPolicy");
            v["apiVersion"] = json!("policy.networking.k8s.io/v1alpha2");
            v["kind"] = json!("ClusterNetworkPolicy");
            v["metadata"]["name"] = json!(format!(
                "c{seed}-{}",
                p.metadata.name.as_deref().unwrap_or("p")
            ));
            v
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Delete every ClusterNetworkPolicy and wait until they are gone.
pub fn delete_all_cluster_policies(lab: &Lab) {
    kubectl(
        lab,
        &["delete", "clusternetworkpolicies", "--all", "--wait=true"],
    );
}

/// The cluster's nodes as a `nodes` peer sees them (labels, addresses).
pub fn nodes(lab: &Lab) -> Vec<terway_policy::Node> {
    let list = get_json(lab, &["nodes"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let node: k8s_openapi::api::core::v1::Node =
                serde_json::from_value(n.clone()).expect("a Node the API server returned");
            terway_k8s::netpol::node(&node)
        })
        .collect()
}
