//! The fabric's model of the VPC wiring, without I/O: which ENI is which pair of links, which addresses
//! each ENI may source, which custom routes point at which node. Every kernel update is computed from here,
//! so the decisions (names, routes, anti-spoofing sets) are unit-tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

/// The vSwitch gateway: the third-from-last address of its CIDR (`.253` in a /24), as Alibaba and Terway
/// derive it.
pub fn vswitch_gateway(cidr: Ipv4Net) -> Ipv4Addr {
    let last = u32::from(cidr.broadcast());
    Ipv4Addr::from(last.saturating_sub(2))
}

/// One attached ENI as a veth pair: `node_ifname` (ENI MAC) in the node netns, `vpc_ifname` in the vpc netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EniPort {
    /// `eni-…`.
    pub eni_id: String,
    /// Instance the ENI is attached to.
    pub instance_id: String,
    /// ENI MAC (the node-side link carries it).
    pub mac: String,
    /// Whether this is the instance's primary ENI (`eth0`).
    pub primary: bool,
    /// Name the link got in the node netns (`ethN`); it keeps it if the CNI moves it into a pod netns.
    pub node_ifname: String,
    /// Name of the peer inside the vpc netns.
    pub vpc_ifname: String,
    /// Private IPv4 addresses currently assigned to the ENI (primary included).
    pub ips: BTreeSet<Ipv4Addr>,
}

/// A node: an instance whose primary ENI is `eth0` of its own netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    /// `i-…`.
    pub instance_id: String,
    /// Name of the node's network namespace.
    pub netns: String,
    /// Primary ENI id.
    pub primary_eni: String,
    /// Primary private IP (the address metadata sees as the caller).
    pub primary_ip: Ipv4Addr,
}

/// The whole wiring, as the fabric believes the kernel holds it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Topology {
    /// Nodes by instance id.
    pub nodes: BTreeMap<String, NodeEntry>,
    /// Attached ENIs by ENI id.
    pub ports: BTreeMap<String, EniPort>,
    /// Addresses assigned to ENIs that have no link (not attached); applied when they attach.
    pub detached_ips: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// Custom route entries: destination → next-hop instance.
    pub route_entries: BTreeMap<Ipv4Net, String>,
    /// Counter for vpc-side link names (never reused within one fabric, so a late delete cannot hit a new link).
    next_port: u32,
}

/// An anti-spoofing rule: packets entering the vpc from `ifname` must come from one of `allowed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoofRule {
    /// vpc-side link name.
    pub ifname: String,
    /// ENI id, for the rule comment.
    pub eni_id: String,
    /// Allowed sources: the ENI's addresses as /32, plus custom-route destinations through a primary ENI.
    pub allowed: Vec<Ipv4Net>,
}

impl Topology {
    /// A fresh vpc-side link name (`eniN`, ≤ 15 bytes).
    pub fn alloc_vpc_ifname(&mut self) -> String {
        self.next_port += 1;
        format!("eni{}", self.next_port)
    }

    /// The node-side name for a newly attached ENI: the lowest `ethN` (N ≥ 1) neither present in the node
    /// netns nor held by another attached ENI of the instance — the latter matters in exclusive mode, where
    /// an ENI lives in a pod netns and comes back under its old name on DEL.
    pub fn node_ifname_for(&self, instance_id: &str, present: &[String]) -> String {
        let held: BTreeSet<&str> = self
            .ports
            .values()
            .filter(|p| p.instance_id == instance_id)
            .map(|p| p.node_ifname.as_str())
            .collect();
        (1u32..)
            .map(|n| format!("eth{n}"))
            .find(|name| !held.contains(name.as_str()) && !present.iter().any(|p| p == name))
            .unwrap_or_else(|| "eth1".to_string())
    }

    /// The primary ENI port of an instance, if attached.
    pub fn primary_port(&self, instance_id: &str) -> Option<&EniPort> {
        let node = self.nodes.get(instance_id)?;
        self.ports.get(&node.primary_eni)
    }

    /// Anti-spoofing rules for every attached ENI, in a stable order.
    pub fn spoof_rules(&self) -> Vec<SpoofRule> {
        self.ports
            .values()
            .map(|p| {
                let mut allowed: Vec<Ipv4Net> = p
                    .ips
                    .iter()
                    .map(|ip| Ipv4Net::new(*ip, 32).unwrap_or_else(|_| Ipv4Net::from(*ip)))
                    .collect();
                if p.primary {
                    allowed.extend(
                        self.route_entries
                            .iter()
                            .filter(|(_, inst)| **inst == p.instance_id)
                            .map(|(dst, _)| *dst),
                    );
                }
                SpoofRule {
                    ifname: p.vpc_ifname.clone(),
                    eni_id: p.eni_id.clone(),
                    allowed,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(eni: &str, inst: &str, ifname: &str, primary: bool, ips: &[&str]) -> EniPort {
        EniPort {
            eni_id: eni.into(),
            instance_id: inst.into(),
            mac: "00:16:3e:00:00:01".into(),
            primary,
            node_ifname: ifname.into(),
            vpc_ifname: format!("v{eni}"),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn gateway_is_third_from_last() {
        assert_eq!(
            vswitch_gateway("10.1.2.0/24".parse().unwrap()),
            Ipv4Addr::new(10, 1, 2, 253)
        );
        assert_eq!(
            vswitch_gateway("10.1.0.0/20".parse().unwrap()),
            Ipv4Addr::new(10, 1, 15, 253)
        );
        assert_eq!(
            vswitch_gateway("172.16.0.0/12".parse().unwrap()),
            Ipv4Addr::new(172, 31, 255, 253)
        );
    }

    #[test]
    fn node_ifname_skips_present_and_held_names() {
        let mut t = Topology::default();
        assert_eq!(
            t.node_ifname_for("i-1", &["lo".into(), "eth0".into()]),
            "eth1"
        );
        // eth1 lives in a pod netns (exclusive mode): not present in the node, but still held.
        t.ports.insert(
            "eni-b".into(),
            port("eni-b", "i-1", "eth1", false, &["10.0.0.5"]),
        );
        assert_eq!(
            t.node_ifname_for("i-1", &["lo".into(), "eth0".into()]),
            "eth2"
        );
        // Another instance's names do not matter.
        assert_eq!(t.node_ifname_for("i-2", &["eth0".into()]), "eth1");
        assert_eq!(
            t.node_ifname_for("i-1", &["eth0".into(), "eth2".into()]),
            "eth3"
        );
    }

    #[test]
    fn vpc_ifnames_are_unique_and_short() {
        let mut t = Topology::default();
        let a = t.alloc_vpc_ifname();
        let b = t.alloc_vpc_ifname();
        assert_ne!(a, b);
        for _ in 0..100_000 {
            assert!(t.alloc_vpc_ifname().len() <= 15);
        }
    }

    #[test]
    fn spoof_rules_allow_own_ips_and_route_entries_on_primary_only() {
        let mut t = Topology::default();
        t.nodes.insert(
            "i-1".into(),
            NodeEntry {
                instance_id: "i-1".into(),
                netns: "n1".into(),
                primary_eni: "eni-a".into(),
                primary_ip: "10.0.0.4".parse().unwrap(),
            },
        );
        t.ports.insert(
            "eni-a".into(),
            port("eni-a", "i-1", "eth0", true, &["10.0.0.4"]),
        );
        t.ports.insert(
            "eni-b".into(),
            port("eni-b", "i-1", "eth1", false, &["10.0.0.9", "10.0.0.8"]),
        );
        t.route_entries
            .insert("172.20.1.0/24".parse().unwrap(), "i-1".into());
        t.route_entries
            .insert("172.20.2.0/24".parse().unwrap(), "i-2".into());
        let rules = t.spoof_rules();
        assert_eq!(rules.len(), 2);
        let a = rules.iter().find(|r| r.eni_id == "eni-a").unwrap();
        assert_eq!(
            a.allowed,
            vec![
                "10.0.0.4/32".parse().unwrap(),
                "172.20.1.0/24".parse().unwrap()
            ]
        );
        let b = rules.iter().find(|r| r.eni_id == "eni-b").unwrap();
        assert_eq!(
            b.allowed,
            vec![
                "10.0.0.8/32".parse().unwrap(),
                "10.0.0.9/32".parse().unwrap()
            ]
        );
    }
}
