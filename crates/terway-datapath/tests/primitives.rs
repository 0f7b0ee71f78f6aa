//! Every primitive against the real kernel, inside namespaces this test creates.

mod common;

use std::net::IpAddr;

use common::Namespaces;

use terway_datapath::addr::{self, Scope};
use terway_datapath::route::{self, Route, MAIN_TABLE};
use terway_datapath::rule::{self, Rule};
use terway_datapath::tc::{self, Tbf};
use terway_datapath::{link, neigh, sysctl, MacAddr, Netlink, Netns};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn primitives_are_idempotent_and_exact() {
    let sfx = format!("{:08x}", rand::random::<u32>());
    let (a_name, b_name) = (format!("tpa{sfx}"), format!("tpb{sfx}"));
    let _g = Namespaces(vec![a_name.clone(), b_name.clone()]);
    let a = Netns::create_named(&a_name).unwrap();
    let b = Netns::create_named(&b_name).unwrap();
    let nla = Netlink::open(&a).unwrap();
    let nlb = Netlink::open(&b).unwrap();

    // veth with the peer created directly in the other namespace
    let mac: MacAddr = "02:00:00:00:00:aa".parse().unwrap();
    let va = link::create_veth(&nla, "va", "vb", Some(&b), Some(1400), Some(mac))
        .await
        .unwrap();
    assert_eq!(va.mtu, 1400);
    let vb = link::require_link(&nlb, "vb").await.unwrap();
    assert_eq!(vb.mac, Some(mac));
    assert_eq!(
        link::link_by_mac(&nlb, mac).await.unwrap().unwrap().index,
        vb.index
    );
    assert!(
        link::create_veth(&nla, "va", "vb2", None, None, None)
            .await
            .is_err(),
        "exclusive create"
    );
    link::set_up(&nla, va.index).await.unwrap();
    // Admin-up with the peer still down: no carrier, so never operationally up.
    let short = std::time::Duration::from_millis(200);
    let e = link::wait_oper_up(&nla, va.index, short).await.unwrap_err();
    assert!(e.to_string().contains("not operationally up"), "{e}");
    assert!(!link::require_link(&nla, "va").await.unwrap().oper_up);
    link::update_link(
        &nlb,
        vb.index,
        &link::LinkUpdate {
            name: Some("eth9".into()),
            alias: Some("orig:vb".into()),
            up: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let vb = link::require_link(&nlb, "eth9").await.unwrap();
    assert!(vb.up);
    let long = std::time::Duration::from_secs(10);
    assert!(
        link::wait_oper_up(&nla, va.index, long)
            .await
            .unwrap()
            .oper_up
    );
    assert!(
        link::wait_oper_up(&nlb, vb.index, long)
            .await
            .unwrap()
            .oper_up
    );
    assert_eq!(vb.alias.as_deref(), Some("orig:vb"));
    let lo = link::require_link(&nla, "lo").await.unwrap();
    link::set_up(&nla, lo.index).await.unwrap();

    // addresses
    addr::ensure_addr(
        &nla,
        va.index,
        "10.200.0.1/24".parse().unwrap(),
        Scope::Universe,
    )
    .await
    .unwrap();
    addr::ensure_addr(
        &nla,
        va.index,
        "10.200.0.1/24".parse().unwrap(),
        Scope::Universe,
    )
    .await
    .unwrap();
    addr::ensure_addr(
        &nla,
        va.index,
        "10.200.0.9/32".parse().unwrap(),
        Scope::Universe,
    )
    .await
    .unwrap();
    addr::set_addrs(
        &nla,
        va.index,
        &[("10.200.0.1/24".parse().unwrap(), Scope::Universe)],
    )
    .await
    .unwrap();
    let addrs: Vec<_> = addr::list_addrs(&nla, Some(va.index))
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.net.addr().is_ipv4())
        .collect();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].net.to_string(), "10.200.0.1/24");
    addr::ensure_addr(
        &nlb,
        vb.index,
        "10.200.0.2/32".parse().unwrap(),
        Scope::Universe,
    )
    .await
    .unwrap();

    // routes: onlink default via a gw in a numbered table, scope link /32 in main
    let r1 =
        Route::via_onlink("0.0.0.0/0".parse().unwrap(), ip("10.200.0.1"), vb.index).in_table(1005);
    route::ensure_route(&nlb, &r1).await.unwrap();
    route::ensure_route(&nlb, &r1).await.unwrap();
    let r2 = Route::link_scope("10.200.0.1/32".parse().unwrap(), vb.index);
    route::ensure_route(&nlb, &r2).await.unwrap();
    let t = route::list_routes(&nlb, true, Some(1005)).await.unwrap();
    assert_eq!(t.len(), 1);
    assert!(r1.matches(&t[0]), "{:?}", t[0]);
    let main = route::list_routes(&nlb, true, Some(MAIN_TABLE))
        .await
        .unwrap();
    assert!(main.iter().any(|r| r2.matches(r)), "{main:?}");
    route::remove_route(&nlb, &r1).await.unwrap();
    route::remove_route(&nlb, &r1).await.unwrap();
    assert!(route::list_routes(&nlb, true, Some(1005))
        .await
        .unwrap()
        .is_empty());

    // rules
    let rl = Rule::from_src(2048, "10.200.0.2/32".parse().unwrap(), 1005);
    rule::ensure_rule(&nlb, &rl).await.unwrap();
    rule::ensure_rule(&nlb, &rl).await.unwrap();
    let n = rule::list_rules(&nlb, true)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| *r == rl)
        .count();
    assert_eq!(n, 1);
    rule::remove_rule(&nlb, &rl).await.unwrap();
    rule::remove_rule(&nlb, &rl).await.unwrap();
    assert!(!rule::list_rules(&nlb, true).await.unwrap().contains(&rl));

    // permanent neighbour
    neigh::ensure_permanent_neighbour(&nlb, vb.index, ip("169.254.1.1"), va.mac.unwrap())
        .await
        .unwrap();
    neigh::ensure_permanent_neighbour(&nlb, vb.index, ip("169.254.1.1"), va.mac.unwrap())
        .await
        .unwrap();
    let ns = neigh::list_neighbours(&nlb, vb.index).await.unwrap();
    assert!(
        ns.iter()
            .any(|n| n.ip == ip("169.254.1.1") && n.permanent && n.mac == va.mac),
        "{ns:?}"
    );
    neigh::remove_neighbour(&nlb, vb.index, ip("169.254.1.1"))
        .await
        .unwrap();
    neigh::remove_neighbour(&nlb, vb.index, ip("169.254.1.1"))
        .await
        .unwrap();

    // sysctls land in the namespace, not in the root
    let root_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap();
    sysctl::ensure_sysctl(&b, "net.ipv4.conf.all.rp_filter", "2").unwrap();
    assert_eq!(
        sysctl::read_sysctl(&b, "net.ipv4.conf.all.rp_filter").unwrap(),
        "2"
    );
    sysctl::ensure_sysctl(&b, &sysctl::ipv4_link_key("eth9", "forwarding"), "1").unwrap();
    assert_eq!(
        sysctl::read_sysctl(&b, "net.ipv4.conf.eth9.forwarding").unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap(),
        root_fwd
    );

    // tc
    let tbf = Tbf {
        rate: 1_250_000,
        burst: 3000,
        limit: 34_250,
    };
    tc::ensure_tbf(&nla, va.index, &tbf).await.unwrap();
    tc::ensure_tbf(&nla, va.index, &tbf).await.unwrap();
    let q = tc::list_qdiscs(&nla, va.index).await.unwrap();
    let root = q.iter().find(|q| q.is_root()).unwrap();
    assert_eq!(root.kind, "tbf");
    let got = root.tbf.unwrap();
    assert_eq!((got.rate, got.limit), (tbf.rate, tbf.limit));
    assert!(got.burst.abs_diff(tbf.burst) <= 1, "{got:?}");
    tc::remove_root_qdisc(&nla, va.index).await.unwrap();
    tc::remove_root_qdisc(&nla, va.index).await.unwrap();
    assert!(!tc::list_qdiscs(&nla, va.index)
        .await
        .unwrap()
        .iter()
        .any(|q| q.kind == "tbf"));
    tc::ensure_clsact(&nla, va.index).await.unwrap();
    tc::ensure_clsact(&nla, va.index).await.unwrap();
    tc::ensure_redirect_filter(
        &nla,
        va.index,
        40000,
        "10.96.0.0/12".parse().unwrap(),
        lo.index,
        tc::RedirectActions::MirredOnly,
    )
    .await
    .unwrap();
    let f = tc::list_filters(&nla, va.index, tc::CLSACT_EGRESS)
        .await
        .unwrap();
    assert!(
        f.iter().any(|f| f.kind == "u32" && f.priority == 40000),
        "{f:?}"
    );
    tc::remove_filters(&nla, va.index, 40000).await.unwrap();
    assert!(tc::list_filters(&nla, va.index, tc::CLSACT_EGRESS)
        .await
        .unwrap()
        .is_empty());
    tc::remove_clsact(&nla, va.index).await.unwrap();
    tc::remove_clsact(&nla, va.index).await.unwrap();

    // move back and delete
    link::move_to_netns(&nlb, vb.index, &a, Some("vb"))
        .await
        .unwrap();
    assert!(link::link_by_name(&nla, "vb").await.unwrap().is_some());
    assert!(link::remove_link_by_name(&nla, "va").await.unwrap());
    assert!(!link::remove_link_by_name(&nla, "va").await.unwrap());
    assert!(
        link::link_by_name(&nla, "vb").await.unwrap().is_none(),
        "peer goes with it"
    );
}

#[tokio::test]
async fn ensure_veth_and_macvlan_are_idempotent() {
    let name = format!("tpm{:08x}", rand::random::<u32>());
    let _g = Namespaces(vec![name.clone()]);
    let ns = Netns::create_named(&name).unwrap();
    let nl = Netlink::open(&ns).unwrap();
    let a = link::ensure_veth(&nl, "v0", "v1", None, Some(1450), None)
        .await
        .unwrap();
    let b = link::ensure_veth(&nl, "v0", "v1", None, Some(1450), None)
        .await
        .unwrap();
    assert_eq!(a.index, b.index);
    let mac: MacAddr = "02:aa:00:00:00:01".parse().unwrap();
    let m1 = link::ensure_macvlan(&nl, "mv0", a.index, Some(mac), None)
        .await
        .unwrap();
    let m2 = link::ensure_macvlan(&nl, "mv0", a.index, Some(mac), None)
        .await
        .unwrap();
    assert_eq!((m1.index, m1.mac), (m2.index, Some(mac)));
    assert_eq!(m1.kind.as_deref(), Some("macvlan"));
    assert!(
        link::ensure_veth(&nl, "mv0", "x", None, None, None)
            .await
            .is_err(),
        "name taken by a macvlan"
    );
}
