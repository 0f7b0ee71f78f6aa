//! The shared-ENI drivers (policy routing, ipvlan detection) against the real kernel: setup → exact state →
//! traffic → check → teardown → nothing left; faults.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use terway_core::{EniipVirtualType, Mode};
use terway_datapath::driver::{
    self, eni_table, retire, AnyDriver, Bandwidth, Driver, DriverKind, PodCtx,
};
use terway_datapath::route::{self, MAIN_TABLE};
use terway_datapath::testbed::Testbed;
use terway_datapath::{addr, link, neigh, rule, sysctl, tc, Netns};

#[tokio::test]
async fn policy_route_full_lifecycle() {
    let tb = Testbed::new(31).await.unwrap();
    let locks = lock_dir();
    let host = host_ctx(&tb, locks.path());
    let (pod_name, pod_path) = tb.pod_ns("a").unwrap();
    let pod = PodCtx::open(&pod_path).unwrap();
    let pod_ip = Ipv4Addr::new(10, 31, 0, 5);
    let mut net = pod_net(&tb, "web", pod_ip);
    net.bandwidth = Bandwidth {
        ingress: Some(1_250_000),
        egress: Some(2_500_000),
    };
    let d = AnyDriver::new(DriverKind::PolicyRoute);
    d.validate(&net).unwrap();
    let out = d.setup(&host, &pod, &net).await.unwrap();
    let hv = net.host_veth();
    assert_eq!(out.host_if.as_ref().unwrap().0, hv);
    tb.vpc_learn(pod_ip).await.unwrap();

    // pod side, exactly
    let plinks = link::list_links(&pod.nl).await.unwrap();
    let names: Vec<_> = plinks.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth0"]);
    let eth0 = &plinks[1];
    let host_link = link::require_link(&host.nl, &hv).await.unwrap();
    let paddrs: Vec<_> = addr::list_addrs(&pod.nl, Some(eth0.index))
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.net.addr().is_ipv4())
        .collect();
    assert_eq!(paddrs.len(), 1);
    assert_eq!(paddrs[0].net.to_string(), "10.31.0.5/32");
    let proutes = route::list_routes(&pod.nl, true, Some(MAIN_TABLE))
        .await
        .unwrap();
    assert_eq!(proutes.len(), 1, "{proutes:?}");
    assert_eq!(
        proutes[0].to_string(),
        format!(
            "0.0.0.0/0 via 169.254.1.1 dev #{} onlink table 254",
            eth0.index
        )
    );
    let n = neigh::list_neighbours(&pod.nl, eth0.index).await.unwrap();
    assert!(n
        .iter()
        .any(|n| n.ip == IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1))
            && n.permanent
            && n.mac == host_link.mac));

    // host side, exactly
    let eni = link::require_link(&host.nl, &tb.eni_name).await.unwrap();
    let eaddrs: Vec<_> = addr::list_addrs(&host.nl, Some(eni.index))
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.net.addr().is_ipv4())
        .collect();
    assert_eq!(eaddrs.len(), 1);
    assert_eq!(eaddrs[0].net.to_string(), "10.31.0.10/32");
    let table = eni_table(eni.index);
    let troutes = route::list_routes(&host.nl, true, Some(table))
        .await
        .unwrap();
    assert_eq!(troutes.len(), 1);
    assert_eq!(
        troutes[0].to_string(),
        format!(
            "0.0.0.0/0 via 10.31.0.253 dev #{} onlink table {table}",
            eni.index
        )
    );
    let hroutes = route::list_routes(&host.nl, true, Some(MAIN_TABLE))
        .await
        .unwrap();
    assert!(
        hroutes.iter().any(|r| r.to_string()
            == format!("10.31.0.5/32 dev #{} scope link table 254", host_link.index)),
        "{hroutes:?}"
    );
    let rules: Vec<String> = rule::list_rules(&host.nl, true)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.priority == 512 || r.priority == 2048)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        rules,
        [
            "512: to 10.31.0.5/32 lookup 254".to_string(),
            format!("2048: from 10.31.0.5/32 lookup {table}")
        ]
    );
    for (k, v) in [
        ("net.ipv4.conf.all.forwarding", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        (&format!("net.ipv4.conf.{hv}.rp_filter") as &str, "0"),
        ("net.ipv4.conf.eth1.forwarding", "1"),
    ] {
        assert_eq!(sysctl::read_sysctl(&tb.host, k).unwrap(), v, "{k}");
    }
    let pq = tc::list_qdiscs(&pod.nl, eth0.index).await.unwrap();
    let t = pq.iter().find(|q| q.is_root()).unwrap();
    assert_eq!((t.kind.as_str(), t.tbf.unwrap().rate), ("tbf", 2_500_000));
    let hq = tc::list_qdiscs(&host.nl, host_link.index).await.unwrap();
    assert_eq!(
        hq.iter().find(|q| q.is_root()).unwrap().tbf.unwrap().rate,
        1_250_000
    );

    // traffic: the peer behind the ENI and the node
    assert!(ping(&pod_name, tb.peer_ip), "pod -> vpc peer");
    assert!(ping(&pod_name, tb.node_ip), "pod -> node");
    assert!(
        tcp_connects(&tb.vpc, &pod.ns, tb.peer_ip, 18080),
        "pod -> peer TCP"
    );
    assert!(
        tcp_connects(&pod.ns, &tb.vpc, pod_ip, 18081),
        "peer -> pod TCP"
    );

    d.check(&host, &pod, &net).await.unwrap();
    // drift is reported with the first difference
    neigh::remove_neighbour(
        &pod.nl,
        eth0.index,
        IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1)),
    )
    .await
    .unwrap();
    let e = d.check(&host, &pod, &net).await.unwrap_err().to_string();
    assert!(e.contains("permanent neighbour 169.254.1.1"), "{e}");

    // ADD again for the same container repairs everything
    d.setup(&host, &pod, &net).await.unwrap();
    d.check(&host, &pod, &net).await.unwrap();
    // sysctl drift is caught too
    let hv_rp = format!("net.ipv4.conf.{hv}.rp_filter");
    sysctl::ensure_sysctl(&tb.host, &hv_rp, "1").unwrap();
    let e = d.check(&host, &pod, &net).await.unwrap_err().to_string();
    assert!(e.contains(&format!("sysctl {hv_rp} is 1, want 0")), "{e}");

    d.setup(&host, &pod, &net).await.unwrap();
    d.check(&host, &pod, &net).await.unwrap();
    let n512 = rule::list_rules(&host.nl, true)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.priority == 512)
        .count();
    assert_eq!(n512, 1);

    d.teardown(&host, Some(&pod), &net).await.unwrap();
    d.teardown(&host, Some(&pod), &net).await.unwrap();
    assert_host_clean(&tb, pod_ip).await;
    assert!(
        !ping(&pod_name, tb.node_ip),
        "a retired veth carries nothing"
    );
    // The ENI's shared state stays for the other pods on it.
    assert_eq!(
        route::list_routes(&host.nl, true, Some(table))
            .await
            .unwrap()
            .len(),
        1
    );
    // A new sandbox of the same pod reuses the host veth name right away.
    let (_, path2) = tb.pod_ns("a2").unwrap();
    let pod2 = PodCtx::open(&path2).unwrap();
    d.setup(&host, &pod2, &net).await.unwrap();
    d.check(&host, &pod2, &net).await.unwrap();
    d.teardown(&host, Some(&pod2), &net).await.unwrap();
    // The runtime removes the netns: the kernel destroys the retired pair.
    drop(pod2);
    Netns::delete_path(&path2).unwrap();
    assert!(wait_no_cali(&tb).await.is_empty());
}

/// Teardown retires the host veth; when the netns is never removed, the sweep deletes it after the grace
/// period and not before.
#[tokio::test]
async fn retired_veth_is_swept_when_the_netns_stays() {
    let tb = Testbed::new(38).await.unwrap();
    let ld = lock_dir();
    let host = host_ctx(&tb, ld.path());
    let (_, path) = tb.pod_ns("s").unwrap();
    let pod = PodCtx::open(&path).unwrap();
    let net = pod_net(&tb, "sweep", Ipv4Addr::new(10, 38, 0, 9));
    let d = AnyDriver::new(DriverKind::PolicyRoute);
    d.setup(&host, &pod, &net).await.unwrap();
    d.teardown(&host, Some(&pod), &net).await.unwrap();
    let hv = net.host_veth();
    assert!(is_retired(
        &link::link_by_name(&host.nl, &hv).await.unwrap().unwrap()
    ));
    let grace = std::time::Duration::from_secs(3600);
    assert_eq!(retire::sweep_retired(&host.nl, grace).await.unwrap(), 0);
    assert!(link::link_by_name(&host.nl, &hv).await.unwrap().is_some());
    let zero = std::time::Duration::ZERO;
    assert_eq!(retire::sweep_retired(&host.nl, zero).await.unwrap(), 1);
    assert!(link::link_by_name(&host.nl, &hv).await.unwrap().is_none());
    let plinks = link::list_links(&pod.nl).await.unwrap();
    assert_eq!(plinks.len(), 1, "the peer went too, only lo: {plinks:?}");
}

#[tokio::test]
async fn teardown_after_netns_vanished_and_parallel_pods() {
    let tb = Testbed::new(32).await.unwrap();
    let locks = lock_dir();
    let host = host_ctx(&tb, locks.path());
    let d = AnyDriver::new(DriverKind::PolicyRoute);
    let mut pods = Vec::new();
    for i in 0..6u8 {
        let (_, path) = tb.pod_ns(&format!("p{i}")).unwrap();
        pods.push((
            path,
            pod_net(&tb, &format!("pod{i}"), Ipv4Addr::new(10, 32, 0, 20 + i)),
        ));
    }
    // parallel ADDs on one ENI
    let ctxs: Vec<PodCtx> = pods.iter().map(|(p, _)| PodCtx::open(p).unwrap()).collect();
    let futs = ctxs
        .iter()
        .zip(pods.iter())
        .map(|(c, (_, n))| d.setup(&host, c, n));
    for r in futures::future::join_all(futs).await {
        r.unwrap();
    }
    for (c, (_, n)) in ctxs.iter().zip(pods.iter()) {
        d.check(&host, c, n).await.unwrap();
    }
    let rules = rule::list_rules(&host.nl, true).await.unwrap();
    assert_eq!(rules.iter().filter(|r| r.priority == 2048).count(), 6);

    // the netns disappears between ADD and DEL: DEL still removes host state by identity
    drop(ctxs);
    for (path, _) in &pods {
        Netns::delete_path(path).unwrap();
    }
    for (_, n) in &pods {
        d.teardown(&host, None, n).await.unwrap();
        d.teardown(&host, None, n).await.unwrap();
    }
    assert_host_clean(&tb, Ipv4Addr::new(10, 32, 0, 20)).await;
}

#[tokio::test]
async fn missing_eni_fails_before_touching_anything() {
    let tb = Testbed::new(33).await.unwrap();
    let locks = lock_dir();
    let host = host_ctx(&tb, locks.path());
    let (_, path) = tb.pod_ns("x").unwrap();
    let pod = PodCtx::open(&path).unwrap();
    let mut net = pod_net(&tb, "ghost", Ipv4Addr::new(10, 33, 0, 7));
    net.eni.as_mut().unwrap().mac = "02:ff:ff:00:00:01".parse().unwrap();
    let e = AnyDriver::new(DriverKind::PolicyRoute)
        .setup(&host, &pod, &net)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no link with MAC 02:ff:ff:00:00:01 after 3 attempts"),
        "{e}"
    );
    assert_host_clean(&tb, Ipv4Addr::new(10, 33, 0, 7)).await;
    assert_eq!(link::list_links(&pod.nl).await.unwrap().len(), 1);
}

#[tokio::test]
async fn ipvlan_falls_back_to_policy_route_here() {
    let tb = Testbed::new(34).await.unwrap();
    let locks = lock_dir();
    let host = host_ctx(&tb, locks.path());
    let net = pod_net(&tb, "ipv", Ipv4Addr::new(10, 34, 0, 9));
    let eni = link::require_link(&host.nl, &tb.eni_name).await.unwrap();
    let supported = driver::probe_ipvlan(&host.nl, eni.index).await.unwrap();
    // Ground truth independent of the probe: the kernel config says whether ipvlan can exist at all.
    let config = std::process::Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep -E '^(# )?CONFIG_IPVLAN[ =]'",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if config.contains("CONFIG_IPVLAN is not set") {
        assert!(!supported, "kernel built without ipvlan: {config}");
    } else if config.contains("CONFIG_IPVLAN=y") {
        assert!(supported, "ipvlan built in: {config}");
    }
    let kernel_has_ipvlan = supported;
    let (d, fb) = driver::select_driver(&host, Mode::Shared, EniipVirtualType::Ipvlan, &net)
        .await
        .unwrap();
    if kernel_has_ipvlan {
        assert_eq!(d.kind(), DriverKind::Ipvlan);
        assert!(fb.is_none());
    } else {
        assert_eq!(d.kind(), DriverKind::PolicyRoute);
        assert_eq!(fb.unwrap().requested, DriverKind::Ipvlan);
        // the probe leaves nothing behind
        let links = link::list_links(&host.nl).await.unwrap();
        assert!(
            links.iter().all(|l| !l.name.starts_with("ipvlprobe")),
            "{links:?}"
        );
    }
}

#[tokio::test]
async fn policy_route_dual_stack() {
    let tb = Testbed::new(37).await.unwrap();
    let locks = lock_dir();
    let host = host_ctx(&tb, locks.path());
    let (pod_name, path) = tb.pod_ns("d").unwrap();
    let pod = PodCtx::open(&path).unwrap();
    let v4 = Ipv4Addr::new(10, 37, 0, 5);
    // inside the testbed's fd00:<n>::/64 (n = 37 = 0x25)
    let v6: std::net::Ipv6Addr = "fd00:25::5".parse().unwrap();
    assert!(tb.vswitch6.contains(&v6));
    let mut net = pod_net(&tb, "dual", v4);
    net.ipv6 = Some(v6);
    let d = AnyDriver::new(DriverKind::PolicyRoute);
    let out = d.setup(&host, &pod, &net).await.unwrap();
    assert_eq!(out.ips.len(), 2);
    assert_eq!(out.ips[1].1, Some("fe80::1".parse().unwrap()));
    tb.vpc_learn(v4).await.unwrap();
    tb.vpc_learn(v6).await.unwrap();
    let eth0 = link::require_link(&pod.nl, "eth0").await.unwrap();
    let r6: Vec<String> = route::list_routes(&pod.nl, false, Some(MAIN_TABLE))
        .await
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert!(
        r6.contains(&format!(
            "::/0 via fe80::1 dev #{} onlink table 254",
            eth0.index
        )),
        "{r6:?}"
    );
    let eni = link::require_link(&host.nl, &tb.eni_name).await.unwrap();
    let rules6: Vec<String> = rule::list_rules(&host.nl, false)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.priority == 512 || r.priority == 2048)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        rules6,
        [
            "512: to fd00:25::5/128 lookup 254".to_string(),
            format!("2048: from fd00:25::5/128 lookup {}", eni_table(eni.index))
        ]
    );
    assert_eq!(
        sysctl::read_sysctl(&tb.host, "net.ipv6.conf.all.forwarding").unwrap(),
        "1"
    );
    d.check(&host, &pod, &net).await.unwrap();
    assert!(ping(&pod_name, tb.peer_ip), "v4 still works");
    assert!(
        ping(&pod_name, tb.peer_ip6),
        "pod -> v6 peer behind the ENI"
    );
    d.teardown(&host, Some(&pod), &net).await.unwrap();
    assert_host_clean(&tb, v4).await;
    let rules6 = rule::list_rules(&host.nl, false).await.unwrap();
    assert!(
        rules6
            .iter()
            .all(|r| r.priority != 512 && r.priority != 2048),
        "{rules6:?}"
    );
}
