//! The kubelet's order when it recreates a pod's sandbox, against the real `terway` and `terwayd`:
//! StopPodSandbox(A) → DEL(A, netns A); RunPodSandbox → ADD(B); RemovePodSandbox(A) → DEL(A, no netns).
//! The last DEL must leave B's network alone. On the old main the daemon answered GetIPInfo for A with
//! NotFound, the plugin concluded no sandbox of the pod was live and deleted the host veth named after the
//! pod — B's — and B lost its network while the daemon still listed its IP.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{eventually, lab_bin, Lab};
use serde_json::Value;

/// A namespace this test made, deleted on drop.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Run the plugin in the node's namespace as containerd would.
fn cni(node_ns: &str, conf: &[u8], cmd: &str, cid: &str, netns: &str, pod: &str) -> Value {
    let bin = lab_bin().parent().expect("bin dir").join("terway");
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_ns])
        .arg(&bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin.parent().expect("bin dir"))
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={cid}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn terway");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf)
        .expect("write conf");
    let out = child.wait_with_output().expect("terway ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd} {cid}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or(Value::Null)
}

#[test]
fn the_old_sandboxs_last_del_leaves_the_new_sandbox_alone() {
    let lab = Lab::up(&["--node", "shared", "--min-pool", "1", "--max-pool", "4"]);
    let node = &lab.desc["nodes"][0];
    let node_ns = node["netns"].as_str().expect("node netns").to_string();
    let conf = std::fs::read(node["cni_config"].as_str().expect("cni config")).expect("cni.json");
    // Sandbox A is the lab's own pod (so the daemon's GC sees the pod as live throughout).
    let a = lab.pod_add("node0", "web").expect("pod add web");
    let cid_a = a["container_id"].as_str().unwrap().to_string();
    let ns_a = a["netns"].as_str().unwrap().to_string();

    // StopPodSandbox(A).
    cni(
        &node_ns,
        &conf,
        "DEL",
        &cid_a,
        &format!("/var/run/netns/{ns_a}"),
        "web",
    );
    // RunPodSandbox: B, same pod, new container id and namespace.
    let ns_b = NetnsGuard(format!("{}-sbb", lab.name));
    assert!(ip(&["netns", "add", &ns_b.0]).0);
    assert!(ip(&["-n", &ns_b.0, "link", "set", "lo", "up"]).0);
    let cid_b = format!("{cid_a}b");
    let b = cni(
        &node_ns,
        &conf,
        "ADD",
        &cid_b,
        &format!("/var/run/netns/{}", ns_b.0),
        "web",
    );
    let ip_b = b["ips"][0]["address"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .expect("B's address")
        .to_string();
    let host_veth = b["interfaces"][0]["name"]
        .as_str()
        .expect("host veth")
        .to_string();
    // RemovePodSandbox(A): A's namespace is gone, the DEL comes without one.
    assert!(ip(&["netns", "del", &ns_a]).0);
    cni(&node_ns, &conf, "DEL", &cid_a, "", "web");

    // B still has its interface, its host veth, its route and its rules, and reaches the node.
    assert!(
        ip(&["-n", &ns_b.0, "link", "show", "eth0"]).0,
        "B lost eth0"
    );
    let (_, link) = ip(&["-n", &node_ns, "-o", "link", "show", &host_veth]);
    assert!(
        link.contains(",UP"),
        "B's host veth {host_veth} is gone or down: {link}"
    );
    let (_, route) = ip(&["-n", &node_ns, "route", "show", &ip_b]);
    assert!(route.contains(&host_veth), "route to B's {ip_b}: {route}");
    let (_, rules) = ip(&["-n", &node_ns, "rule", "show"]);
    assert!(
        rules.contains(&format!("from {ip_b}")),
        "B's rules: {rules}"
    );
    let (_, addr) = ip(&["-n", &node_ns, "-4", "-o", "addr", "show", "eth0"]);
    let node_ip = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .expect("node eth0 address")
        .to_string();
    let ping = Command::new("ip")
        .args(["netns", "exec", &ns_b.0, "ping", "-c1", "-W2", &node_ip])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "B cannot reach its node {node_ip}");

    // Clean up as the kubelet would: DEL B, then the lab's record of A (its DEL finds nothing of A).
    cni(
        &node_ns,
        &conf,
        "DEL",
        &cid_b,
        &format!("/var/run/netns/{}", ns_b.0),
        "web",
    );
    lab.pod_del("node0", "web").expect("pod del web");
    let (_, route) = ip(&["-n", &node_ns, "route", "show", &ip_b]);
    assert!(route.trim().is_empty(), "route to {ip_b} left: {route}");
}

/// Containers of pod `pod` in node0's containerd of CRI kind `kind` (`sandbox`, the pause container, or
/// `container`), as `(id, pid)`; pid 0 when it has no running task.
fn cri_containers(lab: &Lab, pod: &str, kind: &str) -> Vec<(String, u32)> {
    let sh = |script: &str| common::node_sh(lab, script).1;
    let ids = sh(&format!(
        "ctr -n k8s.io containers ls -q \
         'labels.\"io.kubernetes.pod.name\"=={pod},labels.\"io.cri-containerd.kind\"=={kind}'"
    ));
    let tasks = sh("ctr -n k8s.io tasks ls");
    ids.split_whitespace()
        .map(|id| {
            let pid = tasks
                .lines()
                .find(|l| l.starts_with(id) && l.contains("RUNNING"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            (id.to_string(), pid)
        })
        .collect()
}

/// The sandboxes of `pod` (one filter: ctr ORs separate ones).
fn sandboxes(lab: &Lab, pod: &str) -> Vec<(String, u32)> {
    cri_containers(lab, pod, "sandbox")
}

/// How often the kubelet has started the pod's first container again.
fn restarts(lab: &Lab, pod: &str) -> u64 {
    common::k8s::get_json(lab, &["pod", pod])["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

/// The pod's IP and whether it is Ready.
fn pod_ip_ready(lab: &Lab, pod: &str) -> (String, bool) {
    let p = common::k8s::get_json(lab, &["pod", pod]);
    (
        p["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        common::k8s::pod_is_ready(&p),
    )
}

/// The same recreation driven by the real kubelet through containerd's CRI: the pod's sandbox dies, the
/// kubelet stops it (DEL A), runs a new one (ADD B) and its garbage collector removes A a minute or so
/// later (RemovePodSandbox). B must keep its network through all of it.
#[test]
fn a_sandbox_the_kubelet_recreates_keeps_its_network_after_the_old_one_is_removed() {
    let lab = Lab::up(&["--k8s", "--node", "shared"]);
    common::k8s::apply(
        &lab,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  terminationGracePeriodSeconds: 5\n  \
         containers:\n  - name: main\n    image: terway-lab.local/workload:1\n    imagePullPolicy: Never\n    \
         command: [/bin/sh, -c, \"httpd -p 80 -h /tmp && trap 'exit 0' TERM INT; sleep 2147483647 & wait\"]\n",
    );
    assert!(
        eventually(90, || pod_ip_ready(&lab, "web").1),
        "web never Ready"
    );
    let first = sandboxes(&lab, "web");
    assert_eq!(first.len(), 1, "{first:?}");
    let (sandbox_a, pid_a) = first[0].clone();
    assert_ne!(pid_a, 0, "sandbox {sandbox_a} has no running task");
    let (ip_a, _) = pod_ip_ready(&lab, "web");
    assert!(
        eventually(30, || common::http_from_outside(
            &lab,
            &format!("http://{ip_a}/")
        )
        .is_ok()),
        "web at {ip_a}"
    );

    // The sandbox dies (its pause process, which the lab's containerd started).
    assert!(Command::new("kill")
        .args(["-9", &pid_a.to_string()])
        .status()
        .is_ok_and(|s| s.success()));
    // Recreated: a new sandbox runs, and the API server shows the app container started again in it
    // (until the kubelet reports that, the pod's status is the old sandbox's).
    let recreated = eventually(120, || {
        let s = sandboxes(&lab, "web");
        s.iter().any(|(id, pid)| *id != sandbox_a && *pid != 0)
            && restarts(&lab, "web") >= 1
            && pod_ip_ready(&lab, "web").1
    });
    assert!(
        recreated,
        "the kubelet did not recreate web's sandbox: {:?}",
        sandboxes(&lab, "web")
    );
    let (ip_b, _) = pod_ip_ready(&lab, "web");
    assert!(
        eventually(60, || common::http_from_outside(
            &lab,
            &format!("http://{ip_b}/")
        )
        .is_ok()),
        "the recreated sandbox at {ip_b} does not answer: {:?}\n{}",
        common::http_from_outside(&lab, &format!("http://{ip_b}/")),
        common::k8s::kubectl(&lab, &["describe", "pod", "web"])
    );
    // The kubelet's container GC (every minute) removes a dead sandbox once no container refers to it,
    // and it keeps the newest dead container of each name, which still is A's. One restart of the app
    // container (inside B) makes that one B's, and A goes.
    let app = cri_containers(&lab, "web", "container");
    let (_, app_pid) = app
        .iter()
        .find(|(_, pid)| *pid != 0)
        .cloned()
        .unwrap_or_else(|| panic!("web has no running app container: {app:?}"));
    assert!(Command::new("kill")
        .args(["-9", &app_pid.to_string()])
        .status()
        .is_ok_and(|s| s.success()));
    let removed = eventually(150, || {
        sandboxes(&lab, "web")
            .iter()
            .all(|(id, _)| *id != sandbox_a)
    });
    assert!(
        removed,
        "the kubelet never removed sandbox {sandbox_a}: {:?}",
        sandboxes(&lab, "web")
    );
    let (ip_now, ready) = pod_ip_ready(&lab, "web");
    assert!(
        ready && ip_now == ip_b,
        "web after A's removal: {ip_now} ready={ready}"
    );
    for _ in 0..3 {
        assert!(
            common::http_from_outside(&lab, &format!("http://{ip_b}/")).is_ok(),
            "web at {ip_b} lost its network when the kubelet removed the old sandbox"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let node = lab.desc["nodes"][0]["netns"].as_str().expect("node netns");
    let (_, rules) = ip(&["-n", node, "rule", "show"]);
    assert!(
        rules.contains(&format!("from {ip_b} ")),
        "B's rules: {rules}"
    );
    if ip_a != ip_b {
        assert!(
            !rules.contains(&format!("{ip_a} ")),
            "A's rules left: {rules}"
        );
    }
}
