//! VPC-route and exclusive-ENI drivers against the real kernel.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use terway_datapath::driver::{AnyDriver, Driver, DriverKind, PodCtx};
use terway_datapath::route::{self, MAIN_TABLE};
use terway_datapath::testbed::Testbed;
use terway_datapath::{addr, link, rule, tc};

#[tokio::test]
async fn vpc_route_lifecycle() {
    let tb = Testbed::new(35).await.unwrap();
    let locks = lock_dir();
    let host = host_ctx(&tb, locks.path());
    let (pod_name, path) = tb.pod_ns("v").unwrap();
    let pod = PodCtx::open(&path).unwrap();
    let pod_ip = Ipv4Addr::new(172, 20, 1, 5);
    let mut net = pod_net(&tb, "vpcpod", pod_ip);
    net.eni = None;
    net.subnet_v4 = Some("172.20.1.0/24".parse().unwrap());
    net.bandwidth.egress = Some(1_000_000);
    // In VPC-route mode the node's own address sits on its primary interface.
    let eth1 = link::require_link(&host.nl, &tb.eni_name).await.unwrap();
    addr::ensure_addr(
        &host.nl,
        eth1.index,
        "10.35.0.10/24".parse().unwrap(),
        addr::Scope::Universe,
    )
    .await
    .unwrap();
    let d = AnyDriver::new(DriverKind::VpcRoute);
    d.validate(&net).unwrap();
    let mut bad = net.clone();
    bad.ipv4 = Some(Ipv4Addr::new(172, 20, 2, 5));
    assert!(d.validate(&bad).is_err(), "IP outside the PodCIDR");
    d.setup(&host, &pod, &net).await.unwrap();
    d.check(&host, &pod, &net).await.unwrap();
    assert!(ping(&pod_name, tb.node_ip), "pod -> node");
    assert!(tcp_connects(&tb.host, &pod.ns, tb.node_ip, 18082));
    let rules = rule::list_rules(&host.nl, true).await.unwrap();
    assert!(rules.iter().all(|r| r.priority != 2048));
    d.teardown(&host, Some(&pod), &net).await.unwrap();
    d.teardown(&host, Some(&pod), &net).await.unwrap();
    assert_host_clean(&tb, pod_ip).await;
}

#[tokio::test]
async fn exclusive_eni_moves_in_and_back_under_its_name() {
    let tb = Testbed::new(36).await.unwrap();
    let locks = lock_dir();
    let host = host_ctx(&tb, locks.path());
    let (pod_name, path) = tb.pod_ns("e").unwrap();
    let pod = PodCtx::open(&path).unwrap();
    let pod_ip = Ipv4Addr::new(10, 36, 0, 44);
    let mut net = pod_net(&tb, "excl", pod_ip);
    // The node reaches the pod through the veth1/cali pair; give the host an address of its own for that.
    net.node_ip = Some(IpAddr::V4(Ipv4Addr::new(192, 168, 77, 1)));
    net.bandwidth.egress = Some(5_000_000);
    let lo = link::require_link(&host.nl, "lo").await.unwrap();
    addr::ensure_addr(
        &host.nl,
        lo.index,
        "192.168.77.1/32".parse().unwrap(),
        addr::Scope::Universe,
    )
    .await
    .unwrap();
    let d = AnyDriver::new(DriverKind::ExclusiveEni);
    d.validate(&net).unwrap();
    d.setup(&host, &pod, &net).await.unwrap();
    assert!(
        link::link_by_name(&host.nl, &tb.eni_name)
            .await
            .unwrap()
            .is_none(),
        "ENI left the host"
    );
    let eth0 = link::require_link(&pod.nl, "eth0").await.unwrap();
    assert_eq!(eth0.mac, Some(tb.eni_mac));
    let q = tc::list_qdiscs(&pod.nl, eth0.index).await.unwrap();
    assert_eq!(
        q.iter()
            .find(|q| q.is_root())
            .and_then(|q| q.tbf)
            .map(|t| t.rate),
        Some(5_000_000)
    );
    let veth1 = link::require_link(&pod.nl, "veth1").await.unwrap();
    let proutes: Vec<String> = route::list_routes(&pod.nl, true, Some(MAIN_TABLE))
        .await
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    for want in [
        format!(
            "0.0.0.0/0 via 10.36.0.253 dev #{} onlink table 254",
            eth0.index
        ),
        format!("169.254.1.1/32 dev #{} scope link table 254", veth1.index),
        format!(
            "172.21.0.0/20 via 169.254.1.1 dev #{} onlink table 254",
            veth1.index
        ),
        format!(
            "192.168.77.1/32 via 169.254.1.1 dev #{} onlink table 254",
            veth1.index
        ),
        format!(
            "169.254.20.10/32 via 169.254.1.1 dev #{} onlink table 254",
            veth1.index
        ),
    ] {
        assert!(proutes.contains(&want), "{want} not in {proutes:?}");
    }
    d.check(&host, &pod, &net).await.unwrap();
    assert!(
        ping(&pod_name, tb.peer_ip),
        "pod -> vpc peer over its own ENI"
    );
    assert!(tcp_connects(&tb.vpc, &pod.ns, tb.peer_ip, 18083));
    assert!(
        ping(&pod_name, Ipv4Addr::new(192, 168, 77, 1)),
        "pod -> node over veth1"
    );
    // ADD again is harmless
    d.setup(&host, &pod, &net).await.unwrap();
    d.check(&host, &pod, &net).await.unwrap();

    d.teardown(&host, Some(&pod), &net).await.unwrap();
    d.teardown(&host, Some(&pod), &net).await.unwrap();
    let back = link::require_link(&host.nl, &tb.eni_name).await.unwrap();
    assert_eq!(back.mac, Some(tb.eni_mac));
    assert_eq!(back.alias, None);
    assert_eq!(link::list_links(&pod.nl).await.unwrap().len(), 1);
    assert_host_clean(&tb, pod_ip).await;
    // reusable: a second pod gets the same ENI (this one without host peer and shaping)
    let (_, path2) = tb.pod_ns("f").unwrap();
    let pod2 = PodCtx::open(&path2).unwrap();
    net.disable_host_peer = true;
    net.bandwidth.egress = None;
    d.setup(&host, &pod2, &net).await.unwrap();
    d.check(&host, &pod2, &net).await.unwrap();
    let names: Vec<String> = link::list_links(&pod2.nl)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["lo", "eth0"], "no veth1 with disable_host_peer");
    assert!(link::list_links(&host.nl)
        .await
        .unwrap()
        .iter()
        .all(|l| !l.name.starts_with("cali")));
    d.teardown(&host, Some(&pod2), &net).await.unwrap();
    assert!(link::link_by_name(&host.nl, &tb.eni_name)
        .await
        .unwrap()
        .is_some());
}

/// Every driver refuses to replace a pod interface it did not create, and its teardown leaves it alone; the
/// exclusive ENI is not even moved.
#[tokio::test]
async fn no_driver_deletes_a_foreign_pod_interface() {
    let tb = Testbed::new(37).await.unwrap();
    let locks = lock_dir();
    let host = host_ctx(&tb, locks.path());
    for (i, kind) in [
        DriverKind::PolicyRoute,
        DriverKind::VpcRoute,
        DriverKind::ExclusiveEni,
        DriverKind::Ipvlan,
    ]
    .into_iter()
    .enumerate()
    {
        let (_, path) = tb.pod_ns(&format!("f{i}")).unwrap();
        let (_, peer) = tb.pod_ns(&format!("g{i}")).unwrap();
        let pod = PodCtx::open(&path).unwrap();
        let peer = terway_datapath::Netns::open(&peer).unwrap();
        let theirs = link::create_veth(&pod.nl, "eth0", "other0", Some(&peer), None, None)
            .await
            .unwrap();
        let net = pod_net(
            &tb,
            &format!("foreign{i}"),
            Ipv4Addr::new(10, 37, 0, 20 + i as u8),
        );
        let d = AnyDriver::new(kind);
        let e = d.setup(&host, &pod, &net).await.unwrap_err();
        assert!(
            e.to_string().contains("not created by terway"),
            "{kind:?}: {e}"
        );
        d.teardown(&host, Some(&pod), &net).await.ok();
        let still = link::require_link(&pod.nl, "eth0").await.unwrap();
        assert_eq!(still.index, theirs.index, "{kind:?}");
        let eni = link::require_link(&host.nl, &tb.eni_name).await.unwrap();
        assert_eq!(
            eni.mac,
            Some(tb.eni_mac),
            "{kind:?}: the ENI stays in the host"
        );
    }
}
