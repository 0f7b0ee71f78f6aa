//! Kernel tests of the fabric in real namespaces (root required, as in CI): links appear with the ENI MAC,
//! addresses are routed, anti-spoofing drops forged sources, route entries reach a node's PodCIDR, and
//! everything disappears on destroy.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use terway_cloud::types::{EniStatus, EniType, NetworkInterface, PrivateIp};

use super::*;

fn eni(id: &str, mac: &str, instance: &str, kind: EniType, ips: &[&str]) -> NetworkInterface {
    let private_ips: Vec<PrivateIp> = ips
        .iter()
        .enumerate()
        .map(|(i, a)| PrivateIp {
            address: a.parse().unwrap(),
            primary: i == 0,
        })
        .collect();
    NetworkInterface {
        id: id.into(),
        mac: mac.into(),
        status: EniStatus::InUse,
        eni_type: kind,
        vswitch_id: "vsw-a".into(),
        vpc_id: "vpc-1".into(),
        zone_id: "z-a".into(),
        instance_id: Some(instance.into()),
        trunk_eni_id: None,
        primary_ip: private_ips[0].address,
        private_ips,
        ipv6_addresses: vec![],
        security_group_ids: vec![],
        tags: BTreeMap::new(),
    }
}

fn sh(netns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Test-side setup of the "pod" (what a CNI would do), with the `ip` tool.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True when `to` answers within 3 s (ping keeps probing once a second until then): a link brought up a
/// moment ago may drop the very first packet on a busy host.
fn ping(netns: &str, from: Option<&str>, to: &str) -> bool {
    probe(netns, from, to, &["-c", "1", "-w", "3"])
}

/// True when one probe to `to` goes unanswered for 1 s; for paths that must be blocked.
fn blocked(netns: &str, from: Option<&str>, to: &str) -> bool {
    !probe(netns, from, to, &["-c", "1", "-W", "1"])
}

fn probe(netns: &str, from: Option<&str>, to: &str, count: &[&str]) -> bool {
    let mut args = vec!["ping", "-q"];
    args.extend(count);
    if let Some(src) = from {
        args.extend(["-I", src]);
    }
    args.push(to);
    sh(netns, &args).0
}

struct Names {
    prefix: String,
}

impl Names {
    fn new() -> Self {
        Names {
            prefix: format!("tf{:06x}", rand::random::<u32>() & 0xff_ffff),
        }
    }
    fn ns(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }
}

impl Drop for Names {
    // Belt and braces: the fabric deletes its namespaces on drop; the test's own "pod" netns is ours.
    fn drop(&mut self) {
        for what in ["vpc", "n1", "n2", "pod", "ext"] {
            let _ = kernel::netns_del(&self.ns(what));
        }
    }
}

#[test]
fn fabric_routes_enis_blocks_spoofing_and_cleans_up() {
    let names = Names::new();
    let vsw: Ipv4Net = "10.77.0.0/24".parse().unwrap();
    let fabric = Fabric::create(FabricConfig {
        vpc_netns: names.ns("vpc"),
        vswitches: BTreeMap::from([("vsw-a".to_string(), vsw)]),
        service_addrs: vec![Ipv4Addr::new(100, 100, 100, 200)],
    })
    .unwrap();

    let n1 = fabric
        .add_node(
            &names.ns("n1"),
            &eni(
                "eni-p1",
                "00:16:3e:00:00:01",
                "i-1",
                EniType::Primary,
                &["10.77.0.10"],
            ),
        )
        .unwrap();
    fabric
        .add_node(
            &names.ns("n2"),
            &eni(
                "eni-p2",
                "00:16:3e:00:00:02",
                "i-2",
                EniType::Primary,
                &["10.77.0.20"],
            ),
        )
        .unwrap();
    assert_eq!(n1.primary_ip, Ipv4Addr::new(10, 77, 0, 10));

    // eth0 carries the primary ENI's MAC; nodes reach each other, the gateway and the metadata address.
    let (_, link) = sh(&names.ns("n1"), &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("00:16:3e:00:00:01"), "{link}");
    assert!(ping(&names.ns("n1"), None, "10.77.0.20"));
    assert!(ping(&names.ns("n1"), None, "10.77.0.253"));
    assert!(ping(&names.ns("n2"), None, "100.100.100.200"));

    // A secondary ENI appears as eth1 with its MAC; move it into a "pod" (exclusive style) and use it.
    let sec = eni(
        "eni-s1",
        "00:16:3e:00:00:11",
        "i-1",
        EniType::Secondary,
        &["10.77.0.30"],
    );
    fabric.attach_eni("i-1", &sec).unwrap();
    fabric.attach_eni("i-1", &sec).unwrap(); // idempotent
    let (_, link) = sh(&names.ns("n1"), &["ip", "-o", "link", "show", "eth1"]);
    assert!(link.contains("00:16:3e:00:00:11"), "{link}");
    let pod = names.ns("pod");
    kernel::netns_add(&pod).unwrap();
    ip(&["-n", &names.ns("n1"), "link", "set", "eth1", "netns", &pod]);
    ip(&["-n", &pod, "link", "set", "lo", "up"]);
    ip(&["-n", &pod, "link", "set", "eth1", "up"]);
    ip(&["-n", &pod, "addr", "add", "10.77.0.30/32", "dev", "eth1"]);
    ip(&["-n", &pod, "addr", "add", "10.77.0.31/32", "dev", "eth1"]);
    ip(&[
        "-n",
        &pod,
        "route",
        "add",
        "default",
        "via",
        "10.77.0.253",
        "dev",
        "eth1",
        "onlink",
    ]);
    assert!(
        ping(&pod, Some("10.77.0.30"), "10.77.0.20"),
        "assigned source must pass"
    );
    // 10.77.0.31 is not assigned to eni-s1: forged, dropped at the vpc router.
    assert!(
        blocked(&pod, Some("10.77.0.31"), "10.77.0.20"),
        "forged source must be dropped"
    );
    assert!(fabric.spoofed_drops().unwrap() >= 1);
    // Once assigned, the same source passes; once unassigned again, it does not.
    fabric
        .assign_ips("eni-s1", &["10.77.0.31".parse().unwrap()])
        .unwrap();
    assert!(ping(&pod, Some("10.77.0.31"), "10.77.0.20"));
    fabric
        .unassign_ips("eni-s1", &["10.77.0.31".parse().unwrap()])
        .unwrap();
    assert!(blocked(&pod, Some("10.77.0.31"), "10.77.0.20"));
    // A new ENI for the same instance must not take eth1's name although eth1 lives in the pod now.
    let sec2 = eni(
        "eni-s2",
        "00:16:3e:00:00:12",
        "i-1",
        EniType::Secondary,
        &["10.77.0.40"],
    );
    fabric.attach_eni("i-1", &sec2).unwrap();
    assert_eq!(fabric.snapshot().ports["eni-s2"].node_ifname, "eth2");

    // Route entry (VPC-route mode): a PodCIDR address on node 2 becomes reachable only through the entry.
    ip(&[
        "-n",
        &names.ns("n2"),
        "addr",
        "add",
        "172.30.2.5/32",
        "dev",
        "lo",
    ]);
    assert!(blocked(&names.ns("n1"), None, "172.30.2.5"));
    fabric
        .add_route_entry("172.30.2.0/24".parse().unwrap(), "i-2")
        .unwrap();
    assert!(ping(&names.ns("n1"), None, "172.30.2.5"));
    fabric
        .remove_route_entry("172.30.2.0/24".parse().unwrap(), "i-2")
        .unwrap();
    assert!(blocked(&names.ns("n1"), None, "172.30.2.5"));

    // Outside host in its own subnet, reachable from a node.
    let ext = fabric
        .add_outside_host(
            &names.ns("ext"),
            "10.77.9.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 77, 9, 10),
        )
        .unwrap();
    assert!(ping(&names.ns("n2"), None, &ext.addr.to_string()));

    // Detach removes the link even from the pod netns.
    fabric.detach_eni("i-1", &sec).unwrap();
    let (_, links) = sh(&pod, &["ip", "-o", "link", "show"]);
    assert!(!links.contains("eth1"), "{links}");
    assert!(!fabric.snapshot().ports.contains_key("eni-s1"));

    // Unknown instance: attach fails with a message naming it.
    let err = fabric
        .attach_eni(
            "i-9",
            &eni(
                "eni-x",
                "00:16:3e:00:00:99",
                "i-9",
                EniType::Secondary,
                &["10.77.0.50"],
            ),
        )
        .unwrap_err();
    assert!(err.to_string().contains("i-9"), "{err}");

    let all = fabric.netns_names();
    assert!(fabric.destroy().is_empty());
    for ns in all {
        assert!(!kernel::netns_exists(&ns), "{ns} left behind");
    }
}
