//! CNI DEL forgets the pod's connections in the node namespace (AWS VPC CNI issue #3634: a reused IP must not
//! inherit the previous pod's conntrack entries). The node is a testbed namespace that tracks connections
//! through an nftables rule of its own; nothing is changed in the machine's root namespace.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::*;
use terway_datapath::conntrack;
use terway_datapath::testbed::{self, Testbed};
use terway_datapath::Netns;

/// Tracks every connection of the namespace it is loaded in.
const TRACK: &str = "table inet terway_ct_test {\n chain out { type filter hook output priority 0; ct state new,established accept; }\n}\n";

/// A TCP connection from `client` to `ip:port` served inside `server`; both ends are returned so it stays.
fn connect(server: &Netns, client: &Netns, ip: Ipv4Addr, port: u16) -> (TcpStream, TcpStream) {
    let addr = SocketAddr::new(IpAddr::V4(ip), port);
    testbed::tcp_pair(server, client, addr, addr).unwrap()
}

fn entries(ns: &Netns, ip: Ipv4Addr) -> Vec<conntrack::Entry> {
    conntrack::entries_of(ns, IpAddr::V4(ip))
        .unwrap()
        .expect("this kernel has conntrack")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_flushes_the_pods_conntrack_entries_and_only_those() {
    let tb = Testbed::new(65).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 65, 0, 5), Ipv4Addr::new(10, 65, 0, 6));
    let _d = serve(
        &sock,
        shared_state(&tb, &["10.65.0.7", "10.65.0.5", "10.65.0.6"]),
    );
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let path = |p: &Path| p.display().to_string();

    // Before the node tracks anything: DEL has nothing to flush and succeeds.
    let (_, c_ns) = tb.pod_ns("c").unwrap();
    assert_eq!(
        cni("ADD", "cc", &path(&c_ns), "default/c", &conf)
            .await
            .code,
        0
    );
    let r = cni("DEL", "cc", &path(&c_ns), "default/c", &conf).await;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);

    let (_, a_ns) = tb.pod_ns("a").unwrap();
    let (_, b_ns) = tb.pod_ns("b").unwrap();
    for (cid, ns, pod) in [("ca", &a_ns, "default/a"), ("cb", &b_ns, "default/b")] {
        let r = cni("ADD", cid, &path(ns), pod, &conf).await;
        assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    }
    testbed::nft_in(&tb.host_name, TRACK).expect("nft (scripts/prereqs.sh installs nftables)");
    let (a, b) = (Netns::open(&a_ns).unwrap(), Netns::open(&b_ns).unwrap());
    let keep = vec![
        // node -> pod A, pod A -> node, node -> pod B
        connect(&a, &tb.host, a_ip, 8081),
        connect(&tb.host, &a, tb.node_ip, 9090),
        connect(&b, &tb.host, b_ip, 8081),
    ];
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(entries(&tb.host, a_ip).len(), 2);
    let b_before: Vec<Option<u32>> = entries(&tb.host, b_ip).iter().map(|e| e.id).collect();
    assert_eq!(b_before.len(), 1);

    let r = cni("DEL", "ca", &path(&a_ns), "default/a", &conf).await;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(
        entries(&tb.host, a_ip).is_empty(),
        "{:#?}",
        entries(&tb.host, a_ip)
    );
    let b_after: Vec<Option<u32>> = entries(&tb.host, b_ip).iter().map(|e| e.id).collect();
    assert_eq!(b_after, b_before, "the other pod's flow is untouched");
    let log = std::fs::read_to_string(dir.path().join("terway.log")).unwrap_or_default();
    assert!(
        log.contains("deleted 2 conntrack entries of 10.65.0.5"),
        "{log}"
    );
    // DEL again: nothing left, still success.
    assert_eq!(
        cni("DEL", "ca", &path(&a_ns), "default/a", &conf)
            .await
            .code,
        0
    );
    assert_eq!(
        cni("DEL", "cb", &path(&b_ns), "default/b", &conf)
            .await
            .code,
        0
    );
    assert!(entries(&tb.host, b_ip).is_empty());
    drop(keep);
}
