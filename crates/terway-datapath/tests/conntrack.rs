//! Conntrack flush against the real kernel, with live connections: a "node" namespace that tracks
//! connections (an nftables `ct state` rule in that namespace only), a "pod" behind a veth and an unrelated
//! peer behind another. Everything lives in namespaces this test creates and deletes.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::Namespaces;
use ipnet::IpNet;
use terway_datapath::addr::{self, Scope};
use terway_datapath::conntrack::{self, Flush, Position};
use terway_datapath::route::{self, Route};
use terway_datapath::{link, testbed, Netlink, Netns};

const POD4: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 5);
const NODE4: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 1);
const OTHER4: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 5);
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd70, 0, 0, 0, 0, 0, 0, 5);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0xfd71, 0, 0, 0, 0, 0, 0, 5);
/// A Service VIP the node DNATs to the pod (the case of AWS VPC CNI issue #3634).
const VIP: Ipv4Addr = Ipv4Addr::new(172, 21, 0, 10);

fn net(ip: IpAddr, prefix: u8) -> IpNet {
    IpNet::new(ip, prefix).unwrap()
}

/// veth `node_if` (node) ↔ `eth0` (peer ns) with the given addresses on both ends.
async fn wire(
    node: &Netlink,
    peer_ns: &Netns,
    node_if: &str,
    node_addrs: &[IpNet],
    peer_addrs: &[IpNet],
) {
    let l = link::create_veth(node, node_if, "eth0", Some(peer_ns), None, None)
        .await
        .unwrap();
    let peer = Netlink::open(peer_ns).unwrap();
    let p = link::require_link(&peer, "eth0").await.unwrap();
    for a in node_addrs {
        addr::ensure_addr(node, l.index, *a, Scope::Universe)
            .await
            .unwrap();
    }
    for a in peer_addrs {
        addr::ensure_addr(&peer, p.index, *a, Scope::Universe)
            .await
            .unwrap();
    }
    link::set_up(node, l.index).await.unwrap();
    link::set_up(&peer, p.index).await.unwrap();
    let lo = link::require_link(&peer, "lo").await.unwrap();
    link::set_up(&peer, lo.index).await.unwrap();
}

/// Makes the node namespace track connections and DNATs the VIP to the pod (loaded with
/// `testbed::nft_in`, inside that namespace only).
const RULESET: &str = "
table inet terway_ct_test {
    chain out { type filter hook output priority 0; ct state new,established accept; }
}
table ip terway_ct_test_nat {
    chain out { type nat hook output priority -100; ip daddr 172.21.0.10 tcp dport 80 dnat to 10.70.0.5:8080; }
}
";

/// An open TCP connection from `client` to `via`, served on `addr` in `server`.
fn connect(
    server: &Netns,
    client: &Netns,
    addr: SocketAddr,
    via: SocketAddr,
) -> (TcpStream, TcpStream) {
    testbed::tcp_pair(server, client, addr, via).unwrap()
}

fn entries(ns: &Netns, ip: impl Into<IpAddr>) -> Vec<conntrack::Entry> {
    conntrack::entries_of(ns, ip.into())
        .unwrap()
        .expect("this kernel has conntrack")
}

#[test]
fn flush_deletes_every_entry_of_the_pod_ips_and_nothing_else() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sfx = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let names = Namespaces(vec![
        format!("ctn{sfx}"),
        format!("ctp{sfx}"),
        format!("cto{sfx}"),
    ]);
    let node = Netns::create_named(&names.0[0]).unwrap();
    let pod = Netns::create_named(&names.0[1]).unwrap();
    let other = Netns::create_named(&names.0[2]).unwrap();
    rt.block_on(async {
        let nl = Netlink::open(&node).unwrap();
        let lo = link::require_link(&nl, "lo").await.unwrap();
        link::set_up(&nl, lo.index).await.unwrap();
        let v4 = |a: Ipv4Addr| net(IpAddr::V4(a), 24);
        let v6 = |a: Ipv6Addr| net(IpAddr::V6(a), 64);
        let node6 = Ipv6Addr::new(0xfd70, 0, 0, 0, 0, 0, 0, 1);
        let onode6 = Ipv6Addr::new(0xfd71, 0, 0, 0, 0, 0, 0, 1);
        wire(
            &nl,
            &pod,
            "vpod",
            &[v4(NODE4), v6(node6)],
            &[v4(POD4), v6(POD6)],
        )
        .await;
        wire(
            &nl,
            &other,
            "voth",
            &[v4(Ipv4Addr::new(10, 71, 0, 1)), v6(onode6)],
            &[v4(OTHER4), v6(OTHER6)],
        )
        .await;
        // The node has a route to the VIP (as to a Service CIDR); DNAT in OUTPUT re-routes to the pod.
        let vpod = link::require_link(&nl, "vpod").await.unwrap();
        route::ensure_route(
            &nl,
            &Route::link_scope(net(IpAddr::V4(VIP), 32), vpod.index),
        )
        .await
        .unwrap();
    });
    testbed::nft_in(&names.0[0], RULESET).expect("nft (scripts/prereqs.sh installs nftables)");

    let sa = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
    let v4 = |ip: Ipv4Addr, port| sa(IpAddr::V4(ip), port);
    let v6 = |ip: Ipv6Addr, port| sa(IpAddr::V6(ip), port);
    let keep = vec![
        // node -> pod (pod is the original destination)
        connect(&pod, &node, v4(POD4, 8081), v4(POD4, 8081)),
        // pod -> node (pod is the original source and the reply destination)
        connect(&node, &pod, v4(NODE4, 9090), v4(NODE4, 9090)),
        // node -> VIP:80, DNATed to the pod (pod is only the reply source)
        connect(&pod, &node, v4(POD4, 8080), v4(VIP, 80)),
        // node -> pod over IPv6
        connect(&pod, &node, v6(POD6, 8081), v6(POD6, 8081)),
        // unrelated flows that must survive
        connect(&other, &node, v4(OTHER4, 8081), v4(OTHER4, 8081)),
        connect(&other, &node, v6(OTHER6, 8081), v6(OTHER6, 8081)),
    ];
    std::thread::sleep(Duration::from_millis(100));

    let pod4 = entries(&node, POD4);
    assert_eq!(pod4.len(), 3, "{pod4:#?}");
    let dnat = pod4
        .iter()
        .find(|e| e.orig.dst == IpAddr::V4(VIP))
        .expect("the DNATed connection is tracked");
    assert_eq!(dnat.at(Position::ReplySrc), IpAddr::V4(POD4));
    assert_eq!(
        (dnat.proto, dnat.orig.dport, dnat.reply.sport),
        (6, Some(80), Some(8080))
    );
    assert!(pod4
        .iter()
        .any(|e| e.at(Position::OrigSrc) == IpAddr::V4(POD4)
            && e.at(Position::ReplyDst) == IpAddr::V4(POD4)));
    assert_eq!(entries(&node, POD6).len(), 1);
    let other_before: Vec<Option<u32>> = [IpAddr::V4(OTHER4), IpAddr::V6(OTHER6)]
        .into_iter()
        .flat_map(|ip| entries(&node, ip))
        .map(|e| e.id)
        .collect();
    assert_eq!(other_before.len(), 2);

    let ips = [IpAddr::V4(POD4), IpAddr::V6(POD6)];
    assert_eq!(
        conntrack::flush_addresses(&node, &ips).unwrap(),
        Flush::Deleted(4)
    );
    assert!(entries(&node, POD4).is_empty());
    assert!(entries(&node, POD6).is_empty());
    let other_after: Vec<Option<u32>> = [IpAddr::V4(OTHER4), IpAddr::V6(OTHER6)]
        .into_iter()
        .flat_map(|ip| entries(&node, ip))
        .map(|e| e.id)
        .collect();
    assert_eq!(other_after, other_before, "unrelated entries untouched");
    // Idempotent, and the full listing agrees.
    assert_eq!(
        conntrack::flush_addresses(&node, &ips).unwrap(),
        Flush::Deleted(0)
    );
    let all4 = conntrack::list(&node, conntrack::AF_INET).unwrap().unwrap();
    assert!(
        all4.iter().all(|e| !e.involves(IpAddr::V4(POD4))),
        "{all4:#?}"
    );
    assert!(all4.iter().any(|e| e.involves(IpAddr::V4(OTHER4))));
    // A namespace that never tracked anything has nothing to flush, and that is not an error.
    assert_eq!(
        conntrack::flush_addresses(&pod, &ips).unwrap(),
        Flush::Deleted(0)
    );
    drop(keep);
}
