//! Installing terway-rs into a lab the way a user installs it into a cluster: `kubectl apply -k` of
//! deploy/, through an overlay that says what a user's overlay says for their VPC. The overlay
//! (`<lab>/k8s/deploy/`) puts the lab's settings in the `eni-config` ConfigMap, gives every node a
//! `terway-config-<node>` override ConfigMap (its vSwitch, pool and mode) that the node's
//! `terway-config` label names, and adds to terwayd's command line what only an emulated cloud needs:
//! its OpenAPI endpoint, its metadata URL, and the API server's VPC address (the lab runs no
//! kube-proxy, so the `kubernetes` Service's ClusterIP leads nowhere).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::plan::LabPlan;

/// deploy/ as shipped (compiled in, so the lab cannot drift from it), by path below deploy/.
pub const BASE: [(&str, &str); 12] = [
    (
        "kustomization.yaml",
        include_str!("../../../../deploy/kustomization.yaml"),
    ),
    ("rbac.yaml", include_str!("../../../../deploy/rbac.yaml")),
    (
        "eni-config.yaml",
        include_str!("../../../../deploy/eni-config.yaml"),
    ),
    (
        "daemonset.yaml",
        include_str!("../../../../deploy/daemonset.yaml"),
    ),
    (
        "controlplane.yaml",
        include_str!("../../../../deploy/controlplane.yaml"),
    ),
    (
        "crds/kustomization.yaml",
        include_str!("../../../../deploy/crds/kustomization.yaml"),
    ),
    (
        "crds/podnetworkings.network.alibabacloud.com.yaml",
        include_str!("../../../../deploy/crds/podnetworkings.network.alibabacloud.com.yaml"),
    ),
    (
        "crds/podenis.network.alibabacloud.com.yaml",
        include_str!("../../../../deploy/crds/podenis.network.alibabacloud.com.yaml"),
    ),
    (
        "crds/networkinterfaces.network.alibabacloud.com.yaml",
        include_str!("../../../../deploy/crds/networkinterfaces.network.alibabacloud.com.yaml"),
    ),
    (
        "crds/nodes.network.alibabacloud.com.yaml",
        include_str!("../../../../deploy/crds/nodes.network.alibabacloud.com.yaml"),
    ),
    (
        "crds/noderuntimes.network.alibabacloud.com.yaml",
        include_str!("../../../../deploy/crds/noderuntimes.network.alibabacloud.com.yaml"),
    ),
    (
        "crds/clusternetworkpolicies.policy.networking.k8s.io.yaml",
        include_str!(
            "../../../../deploy/crds/clusternetworkpolicies.policy.networking.k8s.io.yaml"
        ),
    ),
];

/// Namespace of the DaemonSet and the ConfigMaps.
pub const NAMESPACE: &str = "kube-system";
/// The DaemonSet's name (Terway's).
pub const DAEMONSET: &str = "terway-eniip";
/// The controlplane Deployment's name.
pub const CONTROLPLANE: &str = "terway-controlplane";

/// The override ConfigMap of `node`.
pub fn node_config_name(node: &str) -> String {
    format!("terway-config-{node}")
}

/// Where the lab writes its overlay.
pub fn dir(plan: &LabPlan) -> PathBuf {
    super::LabPaths::new(&plan.dir).root.join("deploy")
}

fn config_map(name: &str, eni_conf: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {
            "eni_conf": serde_json::to_string_pretty(eni_conf).unwrap_or_default() + "\n",
        },
    })
}

/// The extra arguments and environment of a workload's first container in the lab, as JSON-patch
/// operations: `args` appended, and the API server's VPC address.
fn container_patch(plan: &LabPlan, args: &[String]) -> Value {
    let mut ops: Vec<Value> = args
        .iter()
        .map(
            |a| json!({"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": a}),
        )
        .collect();
    if let Some(k) = &plan.kubernetes {
        // A container's own env wins over the Service variables the kubelet injects.
        for (name, value) in [
            ("KUBERNETES_SERVICE_HOST", k.api_addr.to_string()),
            (
                "KUBERNETES_SERVICE_PORT",
                crate::plan::K8S_API_PORT.to_string(),
            ),
        ] {
            ops.push(json!({
                "op": "add",
                "path": "/spec/template/spec/containers/0/env/-",
                "value": {"name": name, "value": value},
            }));
        }
    }
    Value::Array(ops)
}

/// terwayd's extra arguments in the lab.
fn daemonset_patch(plan: &LabPlan) -> Value {
    container_patch(plan, &crate::daemons::lab_flags(plan))
}

/// terway-controlplane's: where the emulated cloud is.
fn controlplane_patch(plan: &LabPlan) -> Value {
    let mut args = crate::daemons::cloud_flags(plan);
    args.push(crate::daemons::log_level_flag());
    // Orphaned ENIs within a test's patience, like the daemons' short GC.
    args.push("--orphan-gc-secs=10".into());
    container_patch(plan, &args)
}

/// The overlay's files (path below [`dir`], content). kustomize reads YAML, of which JSON is a part.
pub fn overlay(plan: &LabPlan) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = BASE
        .iter()
        .map(|(path, text)| (format!("base/{path}"), text.to_string()))
        .collect();
    let mut resources = vec![json!("base")];
    for node in &plan.nodes {
        let file = format!("{}.yaml", node_config_name(&node.name));
        let cm = config_map(
            &node_config_name(&node.name),
            &crate::node_files::eni_conf_node(plan, node),
        );
        files.push((file.clone(), cm.to_string()));
        resources.push(json!(file));
    }
    files.push((
        "eni-config.yaml".into(),
        config_map("eni-config", &crate::node_files::eni_conf_common(plan)).to_string(),
    ));
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "patches": [
            {"path": "eni-config.yaml"},
            {
                "target": {"kind": "DaemonSet", "name": DAEMONSET},
                "patch": daemonset_patch(plan).to_string(),
            },
            {
                "target": {"kind": "Deployment", "name": CONTROLPLANE},
                "patch": controlplane_patch(plan).to_string(),
            },
        ],
    });
    files.push((
        "kustomization.yaml".into(),
        serde_json::to_string_pretty(&kustomization).unwrap_or_default() + "\n",
    ));
    files
}

/// Write the overlay under [`dir`]; returns the directory.
pub fn write(plan: &LabPlan) -> anyhow::Result<PathBuf> {
    let root = dir(plan);
    for (rel, text) in overlay(plan) {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
    }
    Ok(root)
}

/// Label every node with its override, then `kubectl apply -k` the overlay. The labels come first:
/// terwayd reads its node's override once, at start.
pub fn install(plan: &LabPlan) -> anyhow::Result<()> {
    let root = write(plan)?;
    for node in &plan.nodes {
        let label = format!(
            "{}={}",
            terway_core::annotations::LABEL_TERWAY_CONFIG,
            node_config_name(&node.name)
        );
        crate::kubectl_cmd::kubectl(plan, &["label", "node", &node.name, &label, "--overwrite"])?;
    }
    apply(plan, &root)
}

/// `kubectl apply -k` of the overlay in `root`: the CRDs first, served before any terwayd starts
/// writing its Node and NodeRuntime objects, then everything.
pub fn apply(plan: &LabPlan, root: &Path) -> anyhow::Result<()> {
    let crds = root.join("base/crds").display().to_string();
    crate::kubectl_cmd::kubectl(plan, &["apply", "-k", &crds])?;
    super::install::wait_crds(plan)?;
    let root = root.display().to_string();
    crate::kubectl_cmd::kubectl(plan, &["apply", "-k", &root])?;
    Ok(())
}

/// The DaemonSet's pods and the last log lines of each, for an error message.
fn daemon_pods_report(plan: &LabPlan) -> String {
    let text = |args: &[&str]| {
        crate::kubectl_cmd::kubectl(plan, args)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("({e:#})\n"))
    };
    let selector = format!("app={DAEMONSET}");
    let mut out = text(&[
        "-n", NAMESPACE, "get", "pods", "-l", &selector, "-o", "wide",
    ]);
    out.push_str(&text(&[
        "-n",
        NAMESPACE,
        "logs",
        "-l",
        &selector,
        "--all-containers",
        "--prefix",
        "--tail=5",
    ]));
    out
}

/// One field of a kube-system object by JSONPath, as kubectl prints it ("" when unreadable).
fn field(plan: &LabPlan, kind: &str, name: &str, path: &str) -> String {
    crate::kubectl_cmd::kubectl(
        plan,
        &[
            "-n",
            NAMESPACE,
            "get",
            kind,
            name,
            "-o",
            &format!("jsonpath={{{path}}}"),
        ],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    .unwrap_or_default()
}

/// How many of the DaemonSet's pods are Ready, as the API server says.
fn ready_pods(plan: &LabPlan) -> u64 {
    field(plan, "daemonset", DAEMONSET, ".status.numberReady")
        .parse()
        .unwrap_or(0)
}

/// Wait until the controlplane Deployment has a Ready replica per node (at most its two), one of them
/// holds the leader Lease, and the webhook configuration carries its CA.
pub fn wait_controlplane(plan: &LabPlan, timeout: Duration) -> anyhow::Result<()> {
    let want = plan.nodes.len().min(2) as u64;
    let deadline = Instant::now() + timeout;
    loop {
        let ready: u64 = field(plan, "deployment", CONTROLPLANE, ".status.readyReplicas")
            .parse()
            .unwrap_or(0);
        let holder = field(plan, "lease", CONTROLPLANE, ".spec.holderIdentity");
        // Until the CA is in the webhook configuration, every pod create fails (failurePolicy Fail).
        let ca = field(
            plan,
            "mutatingwebhookconfiguration",
            CONTROLPLANE,
            ".webhooks[0].clientConfig.caBundle",
        );
        if ready >= want && !holder.is_empty() && !ca.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let selector = format!("app={CONTROLPLANE}");
            let text = |args: &[&str]| {
                crate::kubectl_cmd::kubectl(plan, args)
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_else(|e| format!("({e:#})\n"))
            };
            anyhow::bail!(
                "terway-controlplane had {ready} of {want} replicas Ready, Lease holder {holder:?} and \
                 {} webhook CA after {timeout:?}; its pods and their last log lines:\n{}{}",
                if ca.is_empty() { "no" } else { "its" },
                text(&["-n", NAMESPACE, "get", "pods", "-l", &selector, "-o", "wide"]),
                text(&["-n", NAMESPACE, "logs", "-l", &selector, "--prefix", "--tail=5"])
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Wait until every node's terwayd (a DaemonSet pod) answers on its socket and the DaemonSet counts
/// all of them Ready (its readiness probe asks terwayd's status).
pub fn wait_daemons(plan: &LabPlan, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let waiting: Vec<&str> = plan
            .nodes
            .iter()
            .filter(|n| std::os::unix::net::UnixStream::connect(&n.socket).is_err())
            .map(|n| n.name.as_str())
            .collect();
        if waiting.is_empty() && ready_pods(plan) >= plan.nodes.len() as u64 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let waiting = if waiting.is_empty() {
                "some node (the DaemonSet's pods are not all Ready)".to_string()
            } else {
                waiting.join(", ")
            };
            anyhow::bail!(
                "terwayd of {waiting} did not answer within {timeout:?} after kubectl apply -k \
                 (the lab's overlay in {}); its pods and their last log lines:\n{}",
                dir(plan).display(),
                daemon_pods_report(plan)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{make_plan, LabRequest, NodeCni, NodeMode, TerwaydInstall};

    fn lab() -> LabPlan {
        let req = LabRequest {
            name: Some("dstest".into()),
            nodes: vec![
                (NodeMode::Shared, "ecs.g7.xlarge".into()),
                (NodeMode::VpcRoute, "ecs.g7.xlarge".into()),
            ],
            vswitches: 2,
            pod_vswitches: 0,
            vswitch_prefix: crate::plan::DEFAULT_VSWITCH_PREFIX,
            min_pool: 1,
            max_pool: 4,
            attach_delay_ms: (200, 600),
            kubernetes: Some(NodeCni::Terway),
            terwayd: TerwaydInstall::Daemonset,
            vpc_cidr: None,
        };
        make_plan(&req, &[]).expect("plan")
    }

    fn file(files: &[(String, String)], name: &str) -> Value {
        let text = &files
            .iter()
            .find(|(p, _)| p == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1;
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn each_node_gets_its_own_settings_and_together_they_make_its_eni_conf() {
        let p = lab();
        let files = overlay(&p);
        let common: Value = serde_json::from_str(
            file(&files, "eni-config.yaml")["data"]["eni_conf"]
                .as_str()
                .unwrap_or_default(),
        )
        .expect("eni_conf");
        for node in &p.nodes {
            let cm = file(&files, &format!("terway-config-{}.yaml", node.name));
            assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
            let own: Value =
                serde_json::from_str(cm["data"]["eni_conf"].as_str().unwrap_or_default())
                    .expect("override");
            let mut merged = common.clone();
            terway_core::merge_patch(&mut merged, &own);
            assert_eq!(
                merged,
                crate::node_files::eni_conf(&p, node),
                "{}",
                node.name
            );
        }
        let k = file(&files, "kustomization.yaml");
        assert_eq!(k["resources"][0], "base");
        assert_eq!(k["resources"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn terwayd_and_the_controlplane_get_the_emulator_and_the_api_servers_vpc_address() {
        let p = lab();
        let k = file(&overlay(&p), "kustomization.yaml");
        for (index, kind, name, base_file) in [
            (1, "DaemonSet", DAEMONSET, "daemonset.yaml"),
            (2, "Deployment", CONTROLPLANE, "controlplane.yaml"),
        ] {
            let patch = &k["patches"][index];
            assert_eq!(patch["target"]["kind"], kind);
            assert_eq!(patch["target"]["name"], name);
            let ops: Value =
                serde_json::from_str(patch["patch"].as_str().unwrap_or("[]")).expect("patch");
            let values: Vec<String> = ops
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| o["value"].to_string())
                .collect();
            let all = values.join(" ");
            assert!(
                all.contains(&format!("--cloud-endpoint={}", p.api_url())),
                "{kind}: {all}"
            );
            assert!(
                all.contains(&format!("--metadata-url={}", p.metadata_url())),
                "{kind}: {all}"
            );
            assert!(all.contains("\"KUBERNETES_SERVICE_HOST\""), "{kind}: {all}");
            assert!(
                all.contains(&crate::plan::K8S_API_ADDR.to_string()),
                "{kind}: {all}"
            );
            // The base's workload has the lists the operations append to.
            let base = BASE
                .iter()
                .find(|(p, _)| *p == base_file)
                .map(|(_, t)| *t)
                .unwrap_or_default();
            assert!(
                base.contains(&format!("kind: {kind}\nmetadata:\n  name: {name}\n")),
                "{base_file}"
            );
            assert!(base.contains("        args:\n") && base.contains("        env:\n"));
        }
        // Only terwayd takes the GC flags; the controlplane would refuse them.
        assert!(!k["patches"][2]["patch"]
            .as_str()
            .unwrap_or_default()
            .contains("--gc-"));
    }

    #[test]
    fn the_base_is_every_file_of_deploy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let mut on_disk = Vec::new();
        for dir in [root.clone(), root.join("crds")] {
            for e in std::fs::read_dir(&dir).expect("deploy/").flatten() {
                let p = e.path();
                if p.is_file() {
                    let rel = p.strip_prefix(&root).expect("below deploy/");
                    on_disk.push(rel.display().to_string());
                }
            }
        }
        on_disk.sort();
        let mut compiled: Vec<String> = BASE.iter().map(|(p, _)| p.to_string()).collect();
        compiled.sort();
        assert_eq!(on_disk, compiled);
    }
}
