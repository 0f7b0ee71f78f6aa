//! terwayd as a Kubernetes citizen, against the lab's real API server and kubelet: it networks each
//! pod as the API server describes it (hostNetwork, ignore label, StatefulSet identity, bandwidth
//! annotations), tells users what happened through events, and says through the node condition
//! `SufficientIP` when its vSwitch runs out of addresses and when they are back.

mod common;

use std::process::Command;

use common::k8s::{
    app_pods, apply, cli_pod, daemon_status, deployment, events, get_json, kubectl, node_condition,
    pod_events, pod_uids, wait_app_ready,
};
use common::{eventually, Lab};
use serde_json::Value;

/// A pod of the lab's workload image with extra `metadata` and `spec` lines (YAML, indented by 2).
fn pod(name: &str, metadata: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{metadata}spec:\n{spec}  \
         terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: terway-lab.local/workload:1\n    \
         imagePullPolicy: Never\n"
    )
}

/// (node, podIP, ready, uid) of pod `name` in `default`, if it exists.
fn pod_state(lab: &Lab, name: &str) -> Option<(String, String, bool, String)> {
    let (ok, out, _) = common::run(&[
        "kubectl", "--lab", &lab.name, "--", "get", "pod", name, "-o", "json",
    ]);
    if !ok {
        return None;
    }
    let p: Value = serde_json::from_str(&out).ok()?;
    let ready = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Some((
        s(&p["spec"]["nodeName"]),
        s(&p["status"]["podIP"]),
        ready && p["metadata"]["deletionTimestamp"].is_null(),
        s(&p["metadata"]["uid"]),
    ))
}

/// The root qdisc of `dev` in the network namespace at `netns` (a path), as `tc -j` prints it.
fn root_qdisc(netns: &str, dev: &str) -> Value {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["--", "tc", "-j", "qdisc", "show", "dev", dev])
        .output()
        .expect("run tc");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list.as_array()
        .into_iter()
        .flatten()
        .find(|q| q["root"] == true)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn each_pod_is_networked_as_the_api_server_describes_it() {
    let lab = Lab::up(&["--k8s", "--node", "shared", "--max-pool", "5"]);
    apply(
        &lab,
        &[
            pod("hostnet", "", "  hostNetwork: true\n"),
            pod(
                "ignored",
                "  labels: {k8s.aliyun.com/ignore-by-terway: \"true\"}\n",
                "",
            ),
            pod(
                "shaped",
                "  annotations: {k8s.aliyun.com/ingress-bandwidth: 1M, k8s.aliyun.com/egress-bandwidth: 2M}\n",
                "",
            ),
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 1\n  \
             selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      \
             terminationGracePeriodSeconds: 5\n      containers:\n      - name: main\n        image: terway-lab.local/workload:1\n        \
             imagePullPolicy: Never\n"
                .to_string(),
        ]
        .join("---\n"),
    );
    let up = eventually(120, || {
        ["hostnet", "shaped", "db-0"]
            .iter()
            .all(|p| pod_state(&lab, p).is_some_and(|s| s.2))
    });
    assert!(
        up,
        "pods not Ready: hostnet {:?} shaped {:?} db-0 {:?}",
        pod_state(&lab, "hostnet"),
        pod_state(&lab, "shaped"),
        pod_state(&lab, "db-0")
    );

    // The ignored pod is refused with a reason naming the label; nothing is held for it.
    let refused = eventually(60, || {
        pod_events(&lab, "default", "ignored", "AllocIPFailed")
            .iter()
            .any(|(_, note)| note.contains("k8s.aliyun.com/ignore-by-terway=true"))
    });
    assert!(
        refused,
        "no AllocIPFailed naming the label: {:?}",
        pod_events(&lab, "default", "ignored", "AllocIPFailed")
    );
    assert!(!pod_state(&lab, "ignored").is_some_and(|s| s.2));

    // hostNetwork: the node's address, and the daemon holds nothing for it.
    let node_ip = kubectl(
        &lab,
        &[
            "get",
            "node",
            "node0",
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ],
    );
    let host = pod_state(&lab, "hostnet").unwrap_or_default();
    assert_eq!(host.1, node_ip, "hostNetwork pod: {host:?}");
    let (held, _) = daemon_status(&lab, "node0");
    assert_eq!(
        held.keys().cloned().collect::<Vec<_>>(),
        ["default/db-0", "default/shaped"],
        "the daemon holds {held:?}"
    );

    // Bandwidth annotations (bytes/s, binary units) become tbf on the pod side (egress).
    let shaped_ip = pod_state(&lab, "shaped").unwrap_or_default().1;
    let netns = lab
        .pods()
        .iter()
        .find(|p| p["ip"] == shaped_ip.as_str())
        .and_then(|p| p["netns"].as_str().map(String::from))
        .expect("the shaped pod's netns");
    let q = root_qdisc(&netns, "eth0");
    assert_eq!(q["kind"], "tbf", "pod eth0 root qdisc: {q}");
    assert_eq!(q["options"]["rate"].as_u64(), Some(2 << 20), "{q}");

    // A StatefulSet pod deleted and recreated (new UID) gets its address back.
    let (_, db_ip, _, db_uid) = pod_state(&lab, "db-0").unwrap_or_default();
    kubectl(&lab, &["delete", "pod", "db-0", "--wait=false"]);
    let back = eventually(120, || {
        pod_state(&lab, "db-0").is_some_and(|s| s.2 && s.3 != db_uid)
    });
    let again = pod_state(&lab, "db-0").unwrap_or_default();
    assert!(back, "db-0 did not come back: {again:?}");
    assert_eq!(
        again.1, db_ip,
        "the recreated StatefulSet pod got another address"
    );
    let uids = pod_uids(&lab, "default");
    let events_of_new = pod_events(&lab, "default", "db-0", "AllocIPSucceed");
    assert!(
        events_of_new
            .iter()
            .any(|(uid, note)| Some(uid) == uids.get("db-0") && note.contains(&db_ip)),
        "no AllocIPSucceed on the new db-0: {events_of_new:?}"
    );

    // NodeRuntime records the old incarnation's DEL and the new one's ADD, by UID.
    let new_uid = again.3.clone();
    let node_runtime = || get_json(&lab, &["noderuntimes.network.alibabacloud.com", "node0"]);
    let recorded = eventually(30, || {
        let v = node_runtime();
        let pods = &v["status"]["pods"];
        pods[&db_uid]["status"]["deleted"].is_object()
            && pods[&db_uid]["podID"] == "default/db-0"
            && pods[&new_uid]["status"]["initial"].is_object()
    });
    assert!(recorded, "NodeRuntime: {}", node_runtime()["status"]);

    // The Node CR: the instance's quotas, and the ENI address held by db-0 with its owner.
    let node_cr = || get_json(&lab, &["nodes.network.alibabacloud.com", "node0"]);
    let owned = eventually(30, || {
        let v = node_cr();
        v["spec"]["nodeCap"]["adapters"] == 8
            && v["status"]["networkInterfaces"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .any(|nic| {
                    let ip = &nic["ipv4"][&db_ip];
                    ip["podID"] == "default/db-0" && ip["podUID"] == new_uid.as_str()
                })
    });
    assert!(owned, "Node CR: {}", node_cr());

    // terway-cli shows the pod by namespace/name: its address, ENI and the daemon's events.
    let (ok, view, err) = cli_pod(&lab, "node0", "default/db-0");
    assert!(ok, "terway-cli pod: {err}");
    assert_eq!(view["interfaces"][0]["ipv4"], db_ip.as_str(), "{view}");
    assert!(view["interfaces"][0]["eni"]["id"].is_string(), "{view}");
    assert!(
        view["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e.as_str().is_some_and(|e| e.contains("AllocIPSucceed"))),
        "{view}"
    );
    let (ok, _, err) = cli_pod(&lab, "node0", "default/never-was");
    assert!(
        !ok && err.contains("holds nothing for pod default/never-was"),
        "{err}"
    );
    let (ok, _, err) = cli_pod(&lab, "node0", "not-a-pod-name");
    assert!(!ok && err.contains("NAMESPACE/NAME"), "{err}");

    // deploy/ as a user applies it: the 1.20 API server accepts every object (server-side dry run).
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let out = kubectl(&lab, &["apply", "-k", deploy, "--dry-run=server"]);
    for object in [
        "daemonset.apps/terway-eniip",
        "configmap/eni-config",
        "customresourcedefinition.apiextensions.k8s.io/podenis.network.alibabacloud.com",
        "clusterrole.rbac.authorization.k8s.io/terway",
    ] {
        assert!(out.contains(object), "{object} missing from: {out}");
    }
}

#[test]
fn sufficient_ip_turns_false_when_the_vswitch_runs_dry_and_true_when_addresses_return() {
    // One /27 vSwitch: 28 addresses for the node, its ENIs and every pod.
    let lab = Lab::up(&[
        "--k8s",
        "--node",
        "shared",
        "--vswitches",
        "1",
        "--vswitch-prefix",
        "27",
        "--max-pool",
        "2",
    ]);
    let condition = || node_condition(&lab, "node0", "SufficientIP");
    assert!(
        eventually(30, || condition().is_some_and(|c| c.0 == "True")),
        "{:?}",
        condition()
    );
    apply(&lab, &deployment("fill", 35));
    let dry = eventually(120, || {
        condition().is_some_and(|c| c.0 == "False" && c.1 == "InsufficientIP")
    });
    let c = condition();
    assert!(dry, "SufficientIP did not turn False: {c:?}");
    let message = c.map(|c| c.2).unwrap_or_default();
    assert!(message.contains("vsw-"), "{message}");

    // The pods left without an address say why, and so does the node.
    let pods = app_pods(&lab, "fill");
    let waiting: Vec<&String> = pods.iter().filter(|p| !p.3).map(|p| &p.0).collect();
    assert!(!waiting.is_empty(), "every pod got an address: {pods:?}");
    let told = eventually(60, || {
        waiting.iter().any(|name| {
            pod_events(&lab, "default", name, "AllocIPFailed")
                .iter()
                .any(|(_, note)| note.contains("IpNotEnough"))
        })
    });
    assert!(told, "no pod has an AllocIPFailed event naming IpNotEnough");
    assert!(
        events(&lab, "kube-system")
            .iter()
            .any(|e| e["regarding"]["kind"] == "Node" && e["reason"] == "AllocIPFailed"),
        "no AllocIPFailed event on the node"
    );

    // Scaled down, the pool returns what it does not keep; the node can get addresses again.
    kubectl(&lab, &["scale", "deployment", "fill", "--replicas=3"]);
    let back = eventually(90, || {
        condition().is_some_and(|c| c.0 == "True" && c.1 == "SufficientIP")
    });
    assert!(back, "SufficientIP did not come back: {:?}", condition());
}

/// A pod asking for `enis` of the node's `aliyun/eni` devices.
fn eni_pod(name: &str, enis: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  \
         - name: main\n    image: terway-lab.local/workload:1\n    imagePullPolicy: Never\n    \
         resources: {{limits: {{aliyun/eni: \"{enis}\"}}}}\n"
    )
}

/// The scheduler's reason a pod is not scheduled, if it says one.
fn unschedulable_reason(lab: &Lab, name: &str) -> String {
    kubectl(
        lab,
        &[
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
    )
}

#[test]
fn the_scheduler_keeps_exclusive_eni_pods_within_the_nodes_enis_across_a_kubelet_restart() {
    // ecs.g7.4xlarge: 8 ENIs, the primary included, so 7 aliyun/eni devices.
    let lab = Lab::up(&["--k8s", "--node", "exclusive"]);
    let allocatable = || {
        kubectl(
            &lab,
            &[
                "get",
                "node",
                "node0",
                "-o",
                "jsonpath={.status.allocatable.aliyun/eni}",
            ],
        )
    };
    assert!(
        eventually(60, || allocatable() == "7"),
        "aliyun/eni allocatable: {:?}",
        allocatable()
    );
    apply(&lab, &eni_pod("big", 7));
    assert!(
        eventually(120, || pod_state(&lab, "big").is_some_and(|s| s.2)),
        "big: {:?}",
        pod_state(&lab, "big")
    );
    apply(&lab, &eni_pod("small", 1));
    // Pending by the scheduler, with its reason: never bound to the node to fail in the CNI.
    let held = eventually(30, || {
        unschedulable_reason(&lab, "small").contains("Insufficient aliyun/eni")
    });
    assert!(held, "small: {:?}", unschedulable_reason(&lab, "small"));
    assert_eq!(
        pod_state(&lab, "small").map(|s| s.0),
        Some(String::new()),
        "small was bound to a node"
    );

    // A restarted kubelet forgets its device plugins; terwayd registers again, so the kubelet admits
    // the waiting pod once the devices are free (it rejects pods whose devices it does not know).
    let (ok, _, err) = common::run(&["runtime", "--lab", &lab.name, "stop", "node0"]);
    assert!(ok, "runtime stop: {err}");
    let (ok, _, err) = common::run(&["runtime", "--lab", &lab.name, "start", "node0"]);
    assert!(ok, "runtime start: {err}");
    kubectl(&lab, &["delete", "pod", "big", "--wait=false"]);
    let admitted = eventually(120, || pod_state(&lab, "small").is_some_and(|s| s.2));
    assert!(
        admitted,
        "small after the kubelet restart: {:?} ({})",
        pod_state(&lab, "small"),
        unschedulable_reason(&lab, "small")
    );
}

/// `ConfigError` events on node0 (they live in kube-system), as notes.
fn config_errors(lab: &Lab) -> Vec<String> {
    events(lab, "kube-system")
        .iter()
        .filter(|e| e["regarding"]["kind"] == "Node" && e["reason"] == "ConfigError")
        .filter_map(|e| e["note"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_bad_eni_config_is_reported_by_key_and_the_node_keeps_serving() {
    // terwayd as a process: the test stops and starts it while the API server stays up.
    let lab = Lab::up(&[
        "--k8s",
        "--terwayd",
        "process",
        "--node",
        "shared",
        "--max-pool",
        "5",
    ]);
    // A cluster-wide eni-config that would not load: reported as it is written.
    kubectl(
        &lab,
        &[
            "create",
            "configmap",
            "-n",
            "kube-system",
            "eni-config",
            "--from-literal=eni_conf={\"version\":\"1\",\"max_pool_size\":\"lots\"}",
        ],
    );
    let reported = eventually(30, || {
        config_errors(&lab).iter().any(|n| {
            n.contains("kube-system/eni-config key eni_conf") && n.contains("max_pool_size")
        })
    });
    assert!(reported, "ConfigError events: {:?}", config_errors(&lab));

    // A per-node override whose merge is invalid: refused at start, by ConfigMap and key, and the
    // daemon serves with the cluster-wide configuration.
    kubectl(
        &lab,
        &[
            "create",
            "configmap",
            "-n",
            "kube-system",
            "node0-conf",
            "--from-literal=eni_conf={\"min_pool_size\":50}",
        ],
    );
    kubectl(
        &lab,
        &["label", "node", "node0", "terway-config=node0-conf"],
    );
    lab.daemon("stop", "node0");
    lab.daemon("start", "node0");
    let refused = eventually(30, || {
        config_errors(&lab).iter().any(|n| {
            n.contains("kube-system/node0-conf key eni_conf")
                && n.contains("min_pool_size")
                && n.contains("without this per-node override")
        })
    });
    assert!(refused, "ConfigError events: {:?}", config_errors(&lab));
    apply(&lab, &deployment("after", 2));
    wait_app_ready(&lab, "after", 2, 120);
}
