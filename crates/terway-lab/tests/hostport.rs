//! hostPort from outside the node on a shared-ENI node, against the lab's real kubelet, containerd, Debian's
//! `portmap` chained after `terway` (as deploy/eni-config.yaml chains it) and the emulated VPC's
//! anti-spoofing. The connection arrives on the node's primary interface and is DNATed to a pod whose
//! address lives on a secondary ENI; without terwayd's symmetric routing the reply leaves through that ENI
//! with the node's address and the VPC drops it.

mod common;

use std::process::Command;

use common::k8s::{apply, get_json, kubectl};
use common::{eventually, http_from_outside, Lab};

const HOST_PORT: u16 = 18080;
#[test]
fn a_host_port_answers_a_client_outside_the_node() {
    let lab = Lab::up(&["--k8s", "--node", "shared"]);
    apply(
        &lab,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  terminationGracePeriodSeconds: 5\n  \
             containers:\n  - name: main\n    image: terway-lab.local/workload:1\n    imagePullPolicy: Never\n    \
             command: [/bin/sh, -c, \"httpd -p 80 -h /tmp && trap 'exit 0' TERM INT; sleep 2147483647 & wait\"]\n    \
             ports:\n    - {{containerPort: 80, hostPort: {HOST_PORT}, protocol: TCP}}\n"
        ),
    );
    let ready = eventually(90, || {
        common::k8s::pod_is_ready(&get_json(&lab, &["pod", "web"]))
    });
    assert!(
        ready,
        "pod web not Ready: {}",
        kubectl(&lab, &["describe", "pod", "web"])
    );
    let pod = get_json(&lab, &["pod", "web"]);
    let node = get_json(&lab, &["node", "node0"]);
    let node_ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .expect("node0 InternalIP")
        .to_string();
    let node_ns = lab.desc["nodes"][0]["netns"]
        .as_str()
        .expect("node netns")
        .to_string();
    let pod_ip = pod["status"]["podIP"].as_str().unwrap_or_default();

    // The pod answers directly (the VPC routes its address to its ENI) …
    let direct = http_from_outside(&lab, &format!("http://{pod_ip}:80/"));
    assert!(direct.is_ok(), "pod {pod_ip} itself: {direct:?}");
    // … and through the node's hostPort, which is the case that needs symmetric routing.
    let url = format!("http://{node_ip}:{HOST_PORT}/");
    let via_node = http_from_outside(&lab, &url);
    let rules = Command::new("ip")
        .args(["-n", &node_ns, "rule", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        via_node.is_ok(),
        "hostPort {url} from the outside host: {via_node:?}; node rules:\n{rules}"
    );
    assert!(
        rules.contains("600:\tfrom all fwmark 0x10/0x10 lookup main"),
        "symmetric routing rule missing:\n{rules}"
    );
    // Every later connection too (the mark is per connection, not a one-off).
    for _ in 0..5 {
        assert!(http_from_outside(&lab, &url).is_ok());
    }
}
