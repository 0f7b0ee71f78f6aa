//! Shared helpers of the driver tests: contexts on a testbed, a pod request, traffic probes, and the
//! "nothing of ours is left" assertion.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use ipnet::IpNet;
use terway_datapath::driver::{retire, Bandwidth, EniRef, HostCtx, PodIdentity, PodNetwork};
use terway_datapath::route;
use terway_datapath::testbed::Testbed;
use terway_datapath::{link, rule, tc, Netns};

pub fn host_ctx(tb: &Testbed, lock_dir: &std::path::Path) -> HostCtx {
    let mut h = HostCtx::new(tb.host.try_clone().unwrap(), lock_dir.to_path_buf()).unwrap();
    h.eni_wait_attempts = 3;
    h.eni_wait_interval = Duration::from_millis(50);
    h
}

pub fn pod_net(tb: &Testbed, name: &str, ip: Ipv4Addr) -> PodNetwork {
    PodNetwork {
        pod: PodIdentity {
            namespace: "default".into(),
            name: name.into(),
            container_id: format!("cid-{name}"),
        },
        if_name: "eth0".into(),
        ipv4: Some(ip),
        ipv6: None,
        subnet_v4: Some(tb.vswitch),
        gateway_v4: Some(tb.gateway),
        eni: Some(EniRef {
            gateway_v6: Some(tb.gateway6),
            mac: tb.eni_mac,
            gateway: Some(IpAddr::V4(tb.gateway)),
            primary_ip: Some(IpAddr::V4(tb.node_ip)),
        }),
        node_ip: Some(IpAddr::V4(tb.node_ip)),
        service_cidrs: vec!["172.21.0.0/20".parse().unwrap()],
        host_stack_cidrs: vec!["169.254.20.10/32".parse().unwrap()],
        extra_routes: vec![],
        default_route: true,
        mtu: 1500,
        bandwidth: Bandwidth::default(),
        disable_host_peer: false,
    }
}

pub fn ping(ns_name: &str, dst: impl Into<IpAddr>) -> bool {
    let dst = dst.into().to_string();
    // A few tries: the very first IPv6 packet may wait for neighbour discovery on the host side.
    (0..3).any(|_| {
        std::process::Command::new("ip")
            .args(["netns", "exec", ns_name, "ping", "-c", "1", "-W", "2", &dst])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// Listen on `ip:port` inside `server`, connect from `client`, exchange one byte.
pub fn tcp_connects(server: &Netns, client: &Netns, ip: Ipv4Addr, port: u16) -> bool {
    let listener = server
        .run(move || TcpListener::bind((ip, port)))
        .unwrap()
        .unwrap();
    let accept = std::thread::spawn(move || {
        listener.set_nonblocking(false).ok();
        listener.accept().map(|(mut s, _)| {
            use std::io::Write;
            s.write_all(b"k").is_ok()
        })
    });
    let ok = client
        .run(move || {
            use std::io::Read;
            let mut s = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(3))?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            Ok::<_, std::io::Error>(b[0] == b'k')
        })
        .unwrap()
        .unwrap_or(false);
    ok && accept.join().map(|r| r.unwrap_or(false)).unwrap_or(false)
}

/// Whether `l` is a host veth retired by teardown (down, tagged, waiting for its netns to go).
pub fn is_retired(l: &link::Link) -> bool {
    !l.up
        && l.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(retire::RETIRED_ALIAS_PREFIX))
}

/// Nothing of ours in the host namespace: no live cali*/ipvl_* links (retired ones are down and go with
/// their netns), no 512/2048 rules, no route to the pod, no tbf on a live link.
pub async fn assert_host_clean(tb: &Testbed, pod_ip: Ipv4Addr) {
    let links: Vec<link::Link> = link::list_links(&tb.host_nl)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| !is_retired(l))
        .collect();
    assert!(
        links
            .iter()
            .all(|l| !l.name.starts_with("cali") && !l.name.starts_with("ipvl_")),
        "{links:?}"
    );
    let rules = rule::list_rules(&tb.host_nl, true).await.unwrap();
    assert!(
        rules
            .iter()
            .all(|r| r.priority != 512 && r.priority != 2048),
        "{rules:?}"
    );
    let pod = IpNet::from(IpAddr::V4(pod_ip));
    let routes = route::list_routes(&tb.host_nl, true, None).await.unwrap();
    assert!(routes.iter().all(|r| r.dst != pod), "{routes:?}");
    for l in &links {
        let q = tc::list_qdiscs(&tb.host_nl, l.index).await.unwrap();
        assert!(q.iter().all(|q| q.kind != "tbf"), "{q:?}");
    }
}

/// Wait (bounded) until no `cali…` link is left in the host namespace (a deleted netns's veths are
/// destroyed by the kernel asynchronously); returns what is still there.
pub async fn wait_no_cali(tb: &Testbed) -> Vec<String> {
    let left = || async {
        link::list_links(&tb.host_nl)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n.starts_with("cali"))
            .collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if left().await.is_empty() {
            return vec![];
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    left().await
}

pub fn lock_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Named network namespaces a test made, deleted on drop (and only those), even when the test fails.
pub struct Namespaces(pub Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = terway_datapath::Netns::delete_named(n);
        }
    }
}
