//! No early packets: 200 pods of a default-deny namespace start in a burst while a pod of another
//! namespace floods the addresses they are about to get, from before any of them exists; not one flood
//! packet may reach one of them. Counted in each node's namespace by a table of the test's own, around
//! terwayd's: at a priority before the policy table (the packet is about to leave through a pod's veth) and
//! after it (the policy let it through). A control pod that no policy isolates, started during the same
//! flood, must receive it — so the counters and the flood are shown to work.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::k8s::{apply, get_json, kubectl};
use common::{eventually, Lab};
use ipnet::Ipv4Net;
use serde_json::Value;
use terway_datapath::driver::host_veth_name;
use terway_datapath::netns::Netns;
use terway_datapath::nft;

const PODS: usize = 200;
const PORT: u16 = 9;
/// Addresses of each vSwitch flooded: the emulator hands out the lowest free ones, and 200 pods over two
/// nodes take fewer than this from each.
const FLOODED_PER_VSWITCH: u32 = 160;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: quiet}
---
apiVersion: v1
kind: Namespace
metadata: {name: noisy}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: quiet}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: noisy}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: terway-lab.local/workload:1, imagePullPolicy: Never}
"#;

fn burst_manifest() -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: burst, namespace: quiet}}\nspec:\n  \
         replicas: {PODS}\n  podManagementPolicy: Parallel\n  serviceName: burst\n  \
         selector: {{matchLabels: {{app: burst}}}}\n  template:\n    metadata: {{labels: {{app: burst}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: terway-lab.local/workload:1\n        \
         imagePullPolicy: Never\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: control, namespace: noisy}}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - {{name: main, image: terway-lab.local/workload:1, imagePullPolicy: Never}}\n"
    )
}

/// The counting table, in one node's namespace: flood packets about to leave through a burst pod's veth
/// before the policy table sees them, those still there after it, and those reaching the control pod.
fn counting_table(client: Ipv4Addr) -> String {
    let burst: Vec<String> = (0..PODS)
        .map(|i| {
            format!(
                "\"{}\"",
                host_veth_name("quiet", &format!("burst-{i}"), "eth0")
            )
        })
        .collect();
    let control = host_veth_name("noisy", "control", "eth0");
    format!(
        "table inet t_early {{}}\ndelete table inet t_early\ntable inet t_early {{\n\
         \tset burst {{ type ifname; elements = {{ {} }} }}\n\
         \tcounter reached {{}}\n\tcounter delivered {{}}\n\tcounter control {{}}\n\
         \tchain before {{ type filter hook forward priority -10; policy accept;\n\
         \t\tip saddr {client} udp dport {PORT} oifname @burst counter name \"reached\"\n\t}}\n\
         \tchain after {{ type filter hook forward priority 10; policy accept;\n\
         \t\tip saddr {client} udp dport {PORT} oifname @burst counter name \"delivered\"\n\
         \t\tip saddr {client} udp dport {PORT} oifname \"{control}\" counter name \"control\"\n\t}}\n}}\n",
        burst.join(", ")
    )
}

fn counter(ns: &Netns, name: &str) -> u64 {
    let out = nft::query(
        ns,
        &["-j", "list", "counter", "inet", "t_early", name],
        "counter",
    )
    .expect("run nft")
    .expect("the counting table exists");
    let v: Value = serde_json::from_str(&out).expect("nft -j output");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| o["counter"]["packets"].as_u64())
        .unwrap_or(0)
}

/// The table's removal from every node, even when the test fails (the lab goes with it anyway, but the
/// guard keeps the nodes' namespaces as terwayd left them if the lab were kept).
struct Tables(Vec<Netns>);

impl Drop for Tables {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = nft::apply(
                ns,
                "table inet t_early {}\ndelete table inet t_early\n",
                "cleanup",
            );
        }
    }
}

#[test]
fn a_default_deny_pod_receives_nothing_from_its_first_moment() {
    let lab = Lab::up(&[
        "--k8s",
        "--node",
        "shared",
        "--node",
        "shared",
        "--max-pool",
        "20",
    ]);
    apply(&lab, MANIFEST);
    let mut client: Option<(Ipv4Addr, String)> = None;
    assert!(
        eventually(120, || {
            let p = get_json(&lab, &["pod", "-n", "noisy", "client"]);
            let ip = p["status"]["podIP"].as_str().and_then(|s| s.parse().ok());
            let netns = lab
                .pods()
                .iter()
                .find(|l| l["namespace"] == "noisy" && l["pod"] == "client")
                .and_then(|l| l["netns"].as_str().map(String::from));
            client = ip.zip(netns);
            p["status"]["phase"] == "Running" && client.is_some()
        }),
        "the client pod did not run"
    );
    let (client_ip, client_netns) = client.unwrap_or((Ipv4Addr::UNSPECIFIED, String::new()));

    let nodes = Tables(
        lab.desc["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                Netns::open_named(n["netns"].as_str().unwrap_or_default()).expect("node netns")
            })
            .collect(),
    );
    for ns in &nodes.0 {
        nft::apply(ns, &counting_table(client_ip), "counting table").expect("the counting table");
    }

    let targets: Vec<SocketAddr> = lab.desc["vswitches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["cidr"].as_str()?.parse::<Ipv4Net>().ok())
        .flat_map(|net| {
            let base = u32::from(net.network());
            (1..=FLOODED_PER_VSWITCH)
                .map(move |i| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(base + i)), PORT))
        })
        .filter(|a| a.ip() != IpAddr::V4(client_ip))
        .collect();
    let sock = Netns::open(&client_netns)
        .expect("the client's namespace")
        .run(|| UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))))
        .expect("enter the client's namespace")
        .expect("a UDP socket in the client pod");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for t in &targets {
                    if sock.send_to(b"early", t).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    apply(&lab, &burst_manifest());
    let all_ready = eventually(600, || {
        let list = get_json(&lab, &["pods", "-n", "quiet"]);
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| common::k8s::pod_is_ready(p))
            .count();
        let control =
            common::k8s::pod_is_ready(&get_json(&lab, &["pod", "-n", "noisy", "control"]));
        ready == PODS && control
    });
    // Keep flooding the running pods a little: a late opening would show too.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = flood.join();
    assert!(
        all_ready,
        "not all {PODS} burst pods and the control pod became Ready: {}",
        kubectl(&lab, &["get", "pods", "-A", "-o", "wide"])
    );

    let sum = |name: &str| nodes.0.iter().map(|ns| counter(ns, name)).sum::<u64>();
    let (reached, delivered, control) = (sum("reached"), sum("delivered"), sum("control"));
    eprintln!(
        "flood: {} packets sent; {reached} reached a burst pod's veth, {delivered} got past the policy; the control pod got {control}",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        control > 0,
        "the control pod received none of the flood: the flood or the counters do not work"
    );
    assert!(
        reached > 1000,
        "only {reached} flood packets reached the burst pods' veths: the test proves little"
    );
    assert_eq!(
        delivered, 0,
        "{delivered} flood packets reached default-deny pods"
    );

    // terway-cli explains what the node enforces for one of them, with the drops its counter saw.
    let node = get_json(&lab, &["pod", "-n", "quiet", "burst-0"])["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (ok, v, err) = common::k8s::cli_policy(&lab, &node, "quiet/burst-0");
    assert!(ok, "terway-cli policy quiet/burst-0: {err}");
    assert_eq!(
        v["selected_by"],
        serde_json::json!(["quiet/default-deny"]),
        "{v}"
    );
    assert_eq!(v["local"], true, "{v}");
    assert_eq!(v["ingress"]["isolated"], true, "{v}");
    assert_eq!(
        v["ingress"]["rules"].as_array().map(Vec::len),
        Some(0),
        "{v}"
    );
    assert!(
        v["ingress"]["dropped_packets"].as_u64() > Some(0),
        "the flood was dropped: {v}"
    );
    assert_eq!(v["egress"]["isolated"], false, "{v}");
}
