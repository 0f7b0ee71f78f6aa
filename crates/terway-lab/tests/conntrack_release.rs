//! A released address's conntrack entries in the node's namespace are deleted by terwayd's conntrack-flush
//! reconciler, in the background, before the address's reuse cooldown ends; CNI DEL no longer walks the
//! conntrack table for it. The lab node tracks connections (its symmetric routing uses conntrack marks), so
//! a ping from the node to the pod leaves an entry to find.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{eventually, Lab};
use terway_datapath::{conntrack, Netns};

fn entries(ns: &Netns, ip: Ipv4Addr) -> usize {
    conntrack::entries_of(ns, IpAddr::V4(ip))
        .expect("read the node's conntrack table")
        .map(|v| v.len())
        .unwrap_or(0)
}

#[test]
fn terwayd_deletes_the_conntrack_entries_of_a_released_address() {
    let lab = Lab::up(&["--node", "shared", "--min-pool", "0", "--max-pool", "4"]);
    let node_ns = lab.desc["nodes"][0]["netns"]
        .as_str()
        .expect("node netns in up --json")
        .to_string();
    let dir = lab.desc["dir"]
        .as_str()
        .expect("lab dir in up --json")
        .to_string();
    let pod = lab.pod_add("node0", "ct-a").expect("pod add ct-a");
    let ip: Ipv4Addr = pod["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("pod IP in pod add --json");
    let ping = std::process::Command::new("ip")
        .args(["netns", "exec", &node_ns, "ping", "-c", "1", "-W", "2"])
        .arg(ip.to_string())
        .output()
        .expect("run ping");
    assert!(ping.status.success(), "node -> pod ping: {ping:?}");
    let ns = Netns::open_named(&node_ns).expect("open the node's namespace");
    assert!(
        entries(&ns, ip) > 0,
        "the ping left no conntrack entry for {ip} in {node_ns}: the lab node does not track connections"
    );

    lab.pod_del("node0", "ct-a").expect("pod del ct-a");
    // The lab's reuse cooldown is 2 s: the flush must be done well within it.
    assert!(
        eventually(2, || entries(&ns, ip) == 0),
        "conntrack entries of {ip} are still there {} s after DEL",
        2
    );
    let log = std::fs::read_to_string(format!("{dir}/nodes/node0/terwayd.log")).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("conntrack-flush")
            && l.contains("released address")
            && !l.contains("deleted 0 conntrack")),
        "terwayd's log has no conntrack-flush pass that deleted the entries:\n{log}"
    );
}
