//! Symmetric routing against the real kernel: a connection from outside to the node's address, DNATed to a
//! pod whose `from <pod>` rule points at a secondary ENI (the hostPort case). Without the marking the reply
//! leaves through the secondary ENI and the client never hears back; with it the reply returns through the
//! primary interface. Everything lives in namespaces this test creates and deletes.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::Namespaces;
use ipnet::IpNet;
use terway_datapath::addr::{self, Scope};
use terway_datapath::route::{self, Route, MAIN_TABLE};
use terway_datapath::rule::{self, Rule};
use terway_datapath::symmetric::{self, SymmetricRouting};
use terway_datapath::{link, sysctl, testbed, Netlink, Netns};

const NODE: Ipv4Addr = Ipv4Addr::new(10, 72, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 72, 0, 1);
const ENI_GW: Ipv4Addr = Ipv4Addr::new(10, 73, 0, 1);
const POD: Ipv4Addr = Ipv4Addr::new(10, 73, 0, 5);
const POD_GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const ENI_TABLE: u32 = 1099;

fn net(ip: Ipv4Addr, prefix: u8) -> IpNet {
    IpNet::new(IpAddr::V4(ip), prefix).unwrap()
}

/// A veth `node_if` in the node ↔ `eth0` in `peer`, both up, with these addresses; returns the node end.
async fn wire(
    nl: &Netlink,
    peer: &Netns,
    node_if: &str,
    node_addr: IpNet,
    peer_addr: IpNet,
) -> link::Link {
    let l = link::create_veth(nl, node_if, "eth0", Some(peer), None, None)
        .await
        .unwrap();
    addr::ensure_addr(nl, l.index, node_addr, Scope::Universe)
        .await
        .unwrap();
    link::set_up(nl, l.index).await.unwrap();
    let pnl = Netlink::open(peer).unwrap();
    for name in ["eth0", "lo"] {
        let p = link::require_link(&pnl, name).await.unwrap();
        if name == "eth0" {
            addr::ensure_addr(&pnl, p.index, peer_addr, Scope::Universe)
                .await
                .unwrap();
        }
        link::set_up(&pnl, p.index).await.unwrap();
    }
    l
}

#[test]
fn dnat_replies_return_through_the_primary_interface_only_with_symmetric_routing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sfx = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let names = Namespaces(vec![
        format!("symn{sfx}"),
        format!("symc{sfx}"),
        format!("syme{sfx}"),
        format!("symp{sfx}"),
    ]);
    let node = Netns::create_named(&names.0[0]).unwrap();
    let client = Netns::create_named(&names.0[1]).unwrap();
    let other = Netns::create_named(&names.0[2]).unwrap();
    let pod = Netns::create_named(&names.0[3]).unwrap();
    rt.block_on(async {
        let nl = Netlink::open(&node).unwrap();
        let lo = link::require_link(&nl, "lo").await.unwrap();
        link::set_up(&nl, lo.index).await.unwrap();
        // Primary interface: the node address with its subnet's prefix; default route out of it.
        let eth0 = wire(&nl, &client, "eth0", net(NODE, 24), net(CLIENT, 24)).await;
        route::ensure_route(
            &nl,
            &Route::via_onlink(net(Ipv4Addr::UNSPECIFIED, 0), IpAddr::V4(CLIENT), eth0.index),
        )
        .await
        .unwrap();
        // Secondary ENI: the node address as /32 and its own table, as the shared-ENI datapath programs it.
        let eni = wire(&nl, &other, "eni1", net(NODE, 32), net(ENI_GW, 24)).await;
        route::ensure_route(
            &nl,
            &Route::via_onlink(net(Ipv4Addr::UNSPECIFIED, 0), IpAddr::V4(ENI_GW), eni.index)
                .in_table(ENI_TABLE),
        )
        .await
        .unwrap();
        // The pod behind a veth, with rules 512/2048.
        let cali = wire(&nl, &pod, "calisym", net(POD_GW, 32), net(POD, 32)).await;
        let pnl = Netlink::open(&pod).unwrap();
        let peth = link::require_link(&pnl, "eth0").await.unwrap();
        route::ensure_route(&pnl, &Route::link_scope(net(POD_GW, 32), peth.index))
            .await
            .unwrap();
        route::ensure_route(
            &pnl,
            &Route::via_onlink(net(Ipv4Addr::UNSPECIFIED, 0), IpAddr::V4(POD_GW), peth.index),
        )
        .await
        .unwrap();
        route::ensure_route(&nl, &Route::link_scope(net(POD, 32), cali.index))
            .await
            .unwrap();
        rule::ensure_rule(&nl, &Rule::to_dst(512, net(POD, 32), MAIN_TABLE))
            .await
            .unwrap();
        rule::ensure_rule(&nl, &Rule::from_src(2048, net(POD, 32), ENI_TABLE))
            .await
            .unwrap();
        sysctl::ensure_sysctl(&node, "net.ipv4.ip_forward", "1").unwrap();
        // The hostPort: node:18080 → pod:8080, as portmap's DNAT does it.
        testbed::nft_in(
            &names.0[0],
            &format!(
                "table ip symtest_nat {{\n chain pre {{\n type nat hook prerouting priority dstnat;\n \
                 ip daddr {NODE} tcp dport 18080 dnat to {POD}:8080\n }}\n}}\n"
            ),
        )
        .unwrap();

        let bind = SocketAddr::new(IpAddr::V4(POD), 8080);
        let dial = SocketAddr::new(IpAddr::V4(NODE), 18080);
        let before = testbed::tcp_pair(&pod, &client, bind, dial);
        assert!(
            before.is_err(),
            "without symmetric routing the reply should leave through eni1 and the connection fail"
        );

        let primary = symmetric::primary_interface(&nl, IpAddr::V4(NODE))
            .await
            .unwrap();
        assert_eq!(primary.name, "eth0", "the /32 on eni1 is not the primary");
        let cfg = SymmetricRouting::on(primary.name.clone());
        symmetric::ensure(&node, &nl, &cfg).await.unwrap();
        symmetric::ensure(&node, &nl, &cfg).await.unwrap();
        let ours: Vec<Rule> = rule::list_rules(&nl, true)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.fwmark.is_some())
            .collect();
        assert_eq!(ours, vec![cfg.rule()], "ensure twice leaves exactly one rule");
        let (mut c, mut s) = testbed::tcp_pair(&pod, &client, bind, dial)
            .expect("with symmetric routing the DNATed connection is answered");
        use std::io::{Read, Write};
        s.write_all(b"pong").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        drop((c, s));

        symmetric::remove(&node, &nl).await.unwrap();
        assert!(!symmetric::table_present(&node).unwrap());
        assert!(!rule::list_rules(&nl, true)
            .await
            .unwrap()
            .iter()
            .any(|r| r.fwmark.is_some()));
        symmetric::remove(&node, &nl).await.unwrap();
    });
}
