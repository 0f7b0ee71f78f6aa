//! The fabric's model of the VPC wiring, without I/O: which ENI is which pair of links, which addresses
//! each ENI may source, which custom routes point at which node. Every kernel update is computed from here,
//! so the decisions (names, routes, anti-spoofing sets) are unit-tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::world::{SecurityGroup, SgRule};

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
    /// Security groups the ENI is in.
    pub security_groups: Vec<String>,
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
    /// Security groups by id, as the cloud last told (an ENI in a group not known here is unfiltered).
    pub groups: BTreeMap<String, SecurityGroup>,
    /// Counter for vpc-side link names (never reused within one fabric, so a late delete cannot hit a new link).
    next_port: u32,
}

/// The ingress filter of one ENI: what may be forwarded to `ifname`, in order; the last rule drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgChain {
    /// vpc-side link name.
    pub ifname: String,
    /// ENI id (comment).
    pub eni_id: String,
    /// nft rule bodies (match + verdict).
    pub rules: Vec<String>,
}

fn addr_set(ips: &BTreeSet<Ipv4Addr>) -> String {
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
    /// The addresses of every attached ENI in group `g` except `but` (the ENI being filtered).
    fn members(&self, g: &str, but: &str) -> BTreeSet<Ipv4Addr> {
        self.ports
            .values()
            .filter(|p| p.eni_id != but && p.security_groups.iter().any(|s| s == g))
            .flat_map(|p| p.ips.iter().copied())
            .collect()
    }

    /// The ingress filters, one per attached ENI whose groups are all known. A group's rules apply by
    /// priority (1 first), a drop before an accept of the same priority; members of a group with
    /// `InnerAccessPolicy` Accept reach each other; everything else is dropped. Replies to traffic the
    /// ENI sent are let through before any of this (security groups are stateful).
    pub fn sg_chains(&self) -> Vec<SgChain> {
        let mut out = Vec::new();
        for p in self.ports.values() {
            let groups: Vec<&SecurityGroup> = p
                .security_groups
                .iter()
                .filter_map(|g| self.groups.get(g))
                .collect();
            if groups.is_empty() || groups.len() != p.security_groups.len() {
                continue;
            }
            let mut rules: Vec<&SgRule> = groups
                .iter()
                .flat_map(|g| g.rules.iter())
                .filter(|r| r.direction == "ingress")
                .collect();
            rules.sort_by_key(|r| (r.priority, r.accept));
            let mut lines = Vec::new();
            for r in rules {
                let source = match (&r.cidr, &r.group) {
                    (Some(c), _) if c.prefix_len() == 0 => String::new(),
                    (Some(c), _) => format!("ip saddr {c} "),
                    (None, Some(g)) => {
                        let ips = self.members(g, &p.eni_id);
                        if ips.is_empty() {
                            continue;
                        }
                        format!("ip saddr {{ {} }} ", addr_set(&ips))
                    }
                    (None, None) => continue,
                };
                let proto = match r.protocol.as_str() {
                    "tcp" | "udp" if r.port_from == r.port_to => {
                        format!("{} dport {} ", r.protocol, r.port_from)
                    }
                    "tcp" | "udp" => format!("{} dport {}-{} ", r.protocol, r.port_from, r.port_to),
                    "icmp" => "ip protocol icmp ".to_string(),
                    _ => String::new(),
                };
                let verdict = if r.accept { "accept" } else { "drop" };
                lines.push(format!("{source}{proto}counter {verdict}"));
            }
            for g in groups.iter().filter(|g| g.inner_accept) {
                let ips = self.members(&g.id, &p.eni_id);
                if !ips.is_empty() {
                    lines.push(format!("ip saddr {{ {} }} accept", addr_set(&ips)));
                }
            }
            lines.push("counter drop".into());
            out.push(SgChain {
                ifname: p.vpc_ifname.clone(),
                eni_id: p.eni_id.clone(),
                rules: lines,
            });
        }
        out
    }

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
            security_groups: vec![],
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

    fn group(id: &str, inner: bool, rules: Vec<SgRule>) -> SecurityGroup {
        SecurityGroup {
            id: id.into(),
            name: String::new(),
            description: String::new(),
            creation_time: String::new(),
            rules,
            inner_accept: inner,
        }
    }

    fn rule(protocol: &str, ports: (i32, i32), cidr: &str, accept: bool, priority: u8) -> SgRule {
        SgRule {
            direction: "ingress".into(),
            protocol: protocol.into(),
            port_from: ports.0,
            port_to: ports.1,
            cidr: Some(cidr.parse().unwrap()),
            group: None,
            accept,
            priority,
        }
    }

    #[test]
    fn sg_chains_order_rules_by_priority_drop_first_admit_members_and_drop_the_rest() {
        let mut t = Topology::default();
        let mut a = port("eni-a", "i-1", "eth1", false, &["10.0.0.9"]);
        a.security_groups = vec!["sg-web".into()];
        let mut b = port("eni-b", "i-1", "eth2", false, &["10.0.0.7"]);
        b.security_groups = vec!["sg-web".into()];
        let mut c = port("eni-c", "i-1", "eth3", false, &["10.0.0.5"]);
        c.security_groups = vec!["sg-unknown".into()];
        for p in [a, b, c] {
            t.ports.insert(p.eni_id.clone(), p);
        }
        t.groups.insert(
            "sg-web".into(),
            group(
                "sg-web",
                true,
                vec![
                    rule("all", (-1, -1), "0.0.0.0/0", true, 5),
                    rule("tcp", (80, 80), "0.0.0.0/0", false, 1),
                    rule("tcp", (8000, 8080), "10.1.0.0/16", true, 1),
                    rule("icmp", (-1, -1), "10.0.0.0/8", true, 2),
                ],
            ),
        );
        let chains = t.sg_chains();
        assert_eq!(
            chains.len(),
            2,
            "an ENI in an unknown group is not filtered: {chains:?}"
        );
        let a = chains.iter().find(|c| c.eni_id == "eni-a").unwrap();
        assert_eq!(a.ifname, "veni-a");
        assert_eq!(
            a.rules,
            vec![
                "tcp dport 80 counter drop".to_string(),
                "ip saddr 10.1.0.0/16 tcp dport 8000-8080 counter accept".to_string(),
                "ip saddr 10.0.0.0/8 ip protocol icmp counter accept".to_string(),
                "counter accept".to_string(),
                "ip saddr { 10.0.0.7 } accept".to_string(),
                "counter drop".to_string(),
            ]
        );
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
