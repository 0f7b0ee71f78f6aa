//! A pod interface that is not `eth0`, through the real `terway` CNI and `terwayd`: DEL removes exactly
//! what ADD made (the host veth and the /32 route on it), for each of a pod's interfaces. On the old main
//! the daemon answered DEL with `eth0`, so the `net1` veth and its route stayed behind and hijacked the
//! next pod given that address.

mod common;

use common::{run, Lab};

/// `ip -n NS ARGS…` output.
fn ip_in(ns: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pod_add_if(lab: &Lab, node: &str, pod: &str, ifname: &str) -> serde_json::Value {
    let (ok, out, err) = run(&[
        "pod", "add", "--lab", &lab.name, "--json", node, pod, "--ifname", ifname,
    ]);
    assert!(ok, "pod add {pod} --ifname {ifname}: {err}");
    serde_json::from_str(&out).expect("pod add --json")
}

#[test]
fn del_removes_the_host_side_of_an_interface_that_is_not_eth0() {
    let lab = Lab::up(&["--node", "shared", "--min-pool", "0", "--max-pool", "4"]);
    let node_ns = lab.desc["nodes"][0]["netns"]
        .as_str()
        .expect("node netns in up --json")
        .to_string();
    let a = pod_add_if(&lab, "node0", "if-a", "net1");
    let b = pod_add_if(&lab, "node0", "if-b", "eth0");
    let (ip_a, ip_b) = (a["ip"].as_str().unwrap(), b["ip"].as_str().unwrap());
    let ifaces = a["cni_result"]["interfaces"].as_array().unwrap();
    assert_eq!(ifaces[1]["name"], "net1", "{a}");
    let host_veth = ifaces[0]["name"].as_str().unwrap().to_string();
    assert!(ip_in(&node_ns, &["route", "show", ip_a]).contains(&host_veth));
    assert!(!ip_in(&node_ns, &["link", "show", &host_veth]).is_empty());

    lab.pod_del("node0", "if-a").expect("pod del if-a");
    let route = ip_in(&node_ns, &["route", "show", ip_a]);
    assert!(
        route.trim().is_empty(),
        "route to {ip_a} left behind: {route}"
    );
    let rules = ip_in(&node_ns, &["rule", "show"]);
    assert!(!rules.contains(&format!("{ip_a} ")), "rules left: {rules}");
    // The veth is retired (down, then destroyed with the pod's namespace), never left carrying traffic.
    let link = ip_in(&node_ns, &["-o", "link", "show", &host_veth]);
    assert!(
        link.trim().is_empty() || !link.contains(",UP"),
        "host veth {host_veth} of the deleted pod is still up: {link}"
    );
    // The neighbour on eth0 is untouched.
    assert!(ip_in(&node_ns, &["route", "show", ip_b]).contains("cali"));
    lab.pod_del("node0", "if-b").expect("pod del if-b");
}
