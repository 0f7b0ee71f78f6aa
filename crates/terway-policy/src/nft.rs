//! A node's policy as one nftables table (family inet), and the smallest `nft -f` script from one state of
//! it to the next.
//!
//! Shape: the base chains (`forward`, and `input` for traffic from a pod to the node itself) accept packets
//! of established connections, then look the packet up in three verdict maps — `egress` by the host-side
//! interface it came in on (a pod cannot change that, as it can its source address), `ingress4`/`ingress6`
//! by destination address — which jump to the pod's own chain for that direction. A pod chain `return`s what
//! a rule admits and ends in a named drop counter. Rule peers are named sets, one per policy rule (its
//! identity: policy, direction, index), so that a pod appearing or going away anywhere in the cluster changes
//! set elements, never a chain; a chain changes only when the policies that select its pod do. Traffic the
//! node itself sends to a pod (kubelet probes) passes no hook of this table, so it is always allowed, and
//! IPv6 neighbour discovery from a pod to its gateway (the node) is never taken for egress.
//!
//! ClusterNetworkPolicy: a pod chain starts with the Admin tier's rules (Accept `return`s, Deny drops, Pass
//! `goto`s the pod chain's tail, which holds the NetworkPolicy rules or, where none isolates the pod, the
//! Baseline tier's).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use terway_apis::Action;

use crate::cluster::Tiers;
use crate::compile::{Compiled, CompiledRule, PeerMatch, PortMatch, Rules};
use crate::model::{Proto, World};
use crate::ranges;

/// The table's name (family inet).
pub const TABLE: &str = "terway_policy";
/// Verdict map: host-side interface of a pod → its egress chain.
pub const EGRESS_MAP: &str = "egress";
/// Verdict map: IPv4 address of a pod → its ingress chain.
pub const INGRESS4_MAP: &str = "ingress4";
/// Verdict map: IPv6 address of a pod → its ingress chain.
pub const INGRESS6_MAP: &str = "ingress6";

/// A pod on this node, as the node's datapath knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    /// `namespace/name`.
    pub key: String,
    /// Its host-side interface.
    pub host_if: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
}

/// Which way traffic goes, seen from the selected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// To the pod.
    Ingress,
    /// From the pod.
    Egress,
}

impl Direction {
    fn tag(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        }
    }

    /// The address field that names the peer.
    fn peer_field(self, v6: bool) -> &'static str {
        match (self, v6) {
            (Direction::Ingress, false) => "ip saddr",
            (Direction::Ingress, true) => "ip6 saddr",
            (Direction::Egress, false) => "ip daddr",
            (Direction::Egress, true) => "ip6 daddr",
        }
    }
}

/// What a named set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetKind {
    /// IPv4 addresses (pods a rule's selectors match).
    Addr4,
    /// IPv6 addresses.
    Addr6,
    /// Disjoint IPv4 ranges (a rule's ipBlocks).
    Ranges4,
    /// Disjoint IPv6 ranges.
    Ranges6,
    /// IPv4 address . port pairs (pods that have a named port).
    AddrPort4,
    /// IPv6 address . port pairs.
    AddrPort6,
}

impl SetKind {
    fn decl(self) -> &'static str {
        match self {
            SetKind::Addr4 => "type ipv4_addr;",
            SetKind::Addr6 => "type ipv6_addr;",
            SetKind::Ranges4 => "type ipv4_addr; flags interval;",
            SetKind::Ranges6 => "type ipv6_addr; flags interval;",
            SetKind::AddrPort4 => "type ipv4_addr . inet_service;",
            SetKind::AddrPort6 => "type ipv6_addr . inet_service;",
        }
    }
}

/// A named set: its kind and its elements, in nft syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftSet {
    /// What it holds.
    pub kind: SetKind,
    /// Its elements.
    pub elements: BTreeSet<String>,
}

/// The whole table's variable part: what [`ruleset`] computes and [`update_script`] diffs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRuleset {
    /// Named sets by name.
    pub sets: BTreeMap<String, NftSet>,
    /// Pod chains by name: their rules (each chain also has the counter [`drop_counter`] names).
    pub chains: BTreeMap<String, Vec<String>>,
    /// Verdict maps ([`EGRESS_MAP`], [`INGRESS4_MAP`], [`INGRESS6_MAP`]): key → chain jumped to.
    pub maps: BTreeMap<&'static str, BTreeMap<String, String>>,
}

impl NodeRuleset {
    /// The chain `pod_key`'s traffic in `dir` jumps to, if that direction of it is isolated.
    pub fn chain_of(&self, pod_key: &str, dir: Direction) -> Option<String> {
        let name = chain_name(dir, pod_key);
        self.chains.contains_key(&name).then_some(name)
    }
}

/// 64-bit FNV-1a, hex: stable short names for objects whose natural names (pod and policy keys) may be
/// longer than nftables accepts or hold characters its names cannot.
fn short_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // A byte no UTF-8 text holds separates the parts, so ("ab", "c") and ("a", "bc") differ.
            h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The chain of `pod_key`'s traffic in `dir`.
pub fn chain_name(dir: Direction, pod_key: &str) -> String {
    format!("{}_{}", dir.tag(), short_hash(&[pod_key]))
}

/// The named counter of drops at the end of `chain`.
pub fn drop_counter(chain: &str) -> String {
    format!("drop_{chain}")
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "6"
    } else {
        "4"
    }
}

fn proto_kw(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Sctp => "sctp",
    }
}

/// One port entry, rendered.
enum PortExpr {
    /// A plain match (empty: any port of any protocol).
    Plain(String),
    /// A named port: the destination address and port must be one of the pods that have it.
    Named(Proto, String),
}

struct Builder<'w> {
    world: &'w World,
    out: NodeRuleset,
}

impl Builder<'_> {
    fn set(&mut self, name: &str, kind: SetKind, elements: BTreeSet<String>) {
        self.out
            .sets
            .insert(name.to_string(), NftSet { kind, elements });
    }

    /// The set of `ip . port` of every pod with the named port `name`/`proto`; its name.
    fn named_port_set(&mut self, proto: Proto, name: &str, v6: bool) -> String {
        let set = format!(
            "n{}_{}_{}",
            family(v6),
            proto_kw(proto),
            short_hash(&[name])
        );
        if !self.out.sets.contains_key(&set) {
            let mut elements = BTreeSet::new();
            for pod in self.world.pods.iter().filter(|p| !p.host_network) {
                if let Some(port) = pod.named_port(name, proto) {
                    for ip in pod.ips.iter().filter(|ip| ip.is_ipv6() == v6) {
                        elements.insert(format!("{ip} . {port}"));
                    }
                }
            }
            let kind = if v6 {
                SetKind::AddrPort6
            } else {
                SetKind::AddrPort4
            };
            self.set(&set, kind, elements);
        }
        set
    }

    /// The peer matches of `r`: each with its family (`None`: any) and its text.
    fn peers(&mut self, dir: Direction, r: &CompiledRule) -> Vec<(Option<bool>, String)> {
        let PeerMatch::Set { ips, blocks } = &r.peers else {
            return vec![(None, String::new())];
        };
        let id = short_hash(&[&r.policy, dir.tag(), &r.index.to_string()]);
        let mut out = Vec::new();
        for v6 in [false, true] {
            let name = format!("p{}_{id}", family(v6));
            let elements = ips
                .iter()
                .filter(|ip| ip.is_ipv6() == v6)
                .map(|ip| ip.to_string())
                .collect();
            let kind = if v6 { SetKind::Addr6 } else { SetKind::Addr4 };
            self.set(&name, kind, elements);
            out.push((Some(v6), format!("{} @{name}", dir.peer_field(v6))));
            let rs = ranges::block_ranges(blocks, v6);
            if !rs.is_empty() {
                let name = format!("b{}_{id}", family(v6));
                let elements = rs
                    .iter()
                    .map(|r| {
                        let (lo, hi) = (ranges::addr(r.lo, v6), ranges::addr(r.hi, v6));
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}-{hi}")
                        }
                    })
                    .collect();
                let kind = if v6 {
                    SetKind::Ranges6
                } else {
                    SetKind::Ranges4
                };
                self.set(&name, kind, elements);
                out.push((Some(v6), format!("{} @{name}", dir.peer_field(v6))));
            }
        }
        out
    }

    /// The lines of rules, each ending in its verdict when it matches.
    fn rule_lines<'r>(
        &mut self,
        dir: Direction,
        rules: impl IntoIterator<Item = (&'r CompiledRule, String)>,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        for (r, verdict) in rules {
            let verdict = verdict.as_str();
            let ports: Vec<PortExpr> = match &r.ports {
                None => vec![PortExpr::Plain(String::new())],
                Some(ps) => ps
                    .iter()
                    .map(|p| match p {
                        PortMatch::AllOf(proto) => {
                            PortExpr::Plain(format!("meta l4proto {}", proto_kw(*proto)))
                        }
                        PortMatch::Range { proto, lo, hi } => {
                            let range = if lo == hi {
                                lo.to_string()
                            } else {
                                format!("{lo}-{hi}")
                            };
                            PortExpr::Plain(format!(
                                "meta l4proto {} th dport {range}",
                                proto_kw(*proto)
                            ))
                        }
                        PortMatch::Named { proto, name } => PortExpr::Named(*proto, name.clone()),
                    })
                    .collect(),
            };
            // A rule whose every port is a name the pod lacks admits nothing: it has no lines.
            for (fam, peer) in self.peers(dir, r) {
                for port in &ports {
                    match port {
                        PortExpr::Plain(p) => lines.push(join(&[&peer, p, verdict])),
                        PortExpr::Named(proto, name) => {
                            let fams: &[bool] = match fam {
                                Some(v6) => {
                                    if v6 {
                                        &[true]
                                    } else {
                                        &[false]
                                    }
                                }
                                None => &[false, true],
                            };
                            for &v6 in fams {
                                let set = self.named_port_set(*proto, name, v6);
                                let ip = if v6 { "ip6" } else { "ip" };
                                let m = format!(
                                    "meta l4proto {} {ip} daddr . th dport @{set}",
                                    proto_kw(*proto)
                                );
                                lines.push(join(&[&peer, &m, verdict]));
                            }
                        }
                    }
                }
            }
        }
        lines
    }

    /// The chains of one direction of a pod: `chain` itself and, when an Admin tier rule may Pass, its
    /// tail (what comes after the Admin tier: NetworkPolicy, or the Baseline tier where none isolates).
    fn direction(&mut self, dir: Direction, chain: &str, np: &Rules, tiers: &Tiers) {
        let deny = format!("counter name \"{}\" drop", drop_counter(chain));
        let verdict = |a: Action, pass: &str| match a {
            Action::Accept => "return".to_string(),
            Action::Deny => deny.clone(),
            Action::Pass => pass.to_string(),
        };
        let tail = match np {
            Rules::Allow(list) => {
                let mut lines = self.rule_lines(dir, list.iter().map(|r| (r, "return".into())));
                lines.push(deny.clone());
                lines
            }
            // A Baseline Pass leaves the decision to the default: allowed.
            Rules::Unrestricted => self.rule_lines(
                dir,
                tiers
                    .baseline
                    .iter()
                    .map(|t| (&t.rule, verdict(t.action, "return"))),
            ),
        };
        if tiers.admin.is_empty() {
            self.out.chains.insert(chain.to_string(), tail);
            return;
        }
        let tail_chain = format!("{chain}{TAIL_SUFFIX}");
        let pass = if tail.is_empty() {
            "return".to_string()
        } else {
            format!("goto {tail_chain}")
        };
        let mut lines = self.rule_lines(
            dir,
            tiers
                .admin
                .iter()
                .map(|t| (&t.rule, verdict(t.action, &pass))),
        );
        if !tail.is_empty() {
            lines.push(pass);
            self.out.chains.insert(tail_chain, tail);
        }
        self.out.chains.insert(chain.to_string(), lines);
    }
}

/// What the tail chain of a pod chain adds to its name.
const TAIL_SUFFIX: &str = "_t";

/// A pod chain has a drop counter; its tail chain counts in the pod chain's.
fn has_counter(chain: &str) -> bool {
    !chain.ends_with(TAIL_SUFFIX)
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table's variable part for the pods of this node (`local`), from the cluster's compiled policy.
/// A local pod the compilation does not know is not isolated.
pub fn ruleset(compiled: &Compiled, world: &World, local: &[LocalPod]) -> NodeRuleset {
    let mut b = Builder {
        world,
        out: NodeRuleset::default(),
    };
    for m in [EGRESS_MAP, INGRESS4_MAP, INGRESS6_MAP] {
        b.out.maps.insert(m, BTreeMap::new());
    }
    for pod in local {
        let Some(rules) = compiled.pods.get(&pod.key) else {
            continue;
        };
        for (dir, np, tiers) in [
            (Direction::Ingress, &rules.ingress, &rules.cluster_ingress),
            (Direction::Egress, &rules.egress, &rules.cluster_egress),
        ] {
            if matches!(np, Rules::Unrestricted) && tiers.is_empty() {
                continue;
            }
            let chain = chain_name(dir, &pod.key);
            b.direction(dir, &chain, np, tiers);
            match dir {
                Direction::Egress => {
                    b.out
                        .maps
                        .entry(EGRESS_MAP)
                        .or_default()
                        .insert(format!("\"{}\"", pod.host_if), chain);
                }
                Direction::Ingress => {
                    for ip in &pod.ips {
                        let map = if ip.is_ipv6() {
                            INGRESS6_MAP
                        } else {
                            INGRESS4_MAP
                        };
                        b.out
                            .maps
                            .entry(map)
                            .or_default()
                            .insert(ip.to_string(), chain.clone());
                    }
                }
            }
        }
    }
    b.out
}

/// The script that replaces the table, whatever it held, with `new` — in one transaction.
pub fn full_script(new: &NodeRuleset) -> String {
    let mut s = format!(
        "table inet {TABLE} {{}}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tmap {EGRESS_MAP} {{ type ifname : verdict; }}\n\
         \tmap {INGRESS4_MAP} {{ type ipv4_addr : verdict; }}\n\
         \tmap {INGRESS6_MAP} {{ type ipv6_addr : verdict; }}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\
         \t\tiifname vmap @{EGRESS_MAP}\n\
         \t\tip daddr vmap @{INGRESS4_MAP}\n\
         \t\tip6 daddr vmap @{INGRESS6_MAP}\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tct state established,related accept\n\
         \t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept\n\
         \t\tiifname vmap @{EGRESS_MAP}\n\
         \t}}\n\
         }}\n"
    );
    s.push_str(&update_script(&NodeRuleset::default(), new).unwrap_or_default());
    s
}

/// The script that removes the table; absent is fine.
pub fn teardown_script() -> String {
    format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
}

fn elements_cmd(s: &mut String, verb: &str, set: &str, elements: &[&str]) {
    if !elements.is_empty() {
        let _ = writeln!(
            s,
            "{verb} element inet {TABLE} {set} {{ {} }}",
            elements.join(", ")
        );
    }
}

/// The script from `old` to `new` (a table with the base chains already in place), ordered so that nothing
/// is referenced before it exists or removed while referenced; `None` when they are the same.
pub fn update_script(old: &NodeRuleset, new: &NodeRuleset) -> Option<String> {
    if old == new {
        return None;
    }
    let mut s = String::new();
    // Sets first, with their new elements: rules and chains below may reference them. Within the one
    // transaction nothing sees a set between its losses and its gains, and losing first is what lets an
    // interval set trade a range for an overlapping one.
    for (name, set) in &new.sets {
        // A set's name says its kind (p4, b6, n4, ...), so a set of the same name is the same set.
        let had = old.sets.get(name);
        match had {
            None => {
                let _ = writeln!(s, "add set inet {TABLE} {name} {{ {} }}", set.kind.decl());
            }
            Some(o) => {
                let lost: Vec<&str> = o
                    .elements
                    .iter()
                    .filter(|e| !set.elements.contains(*e))
                    .map(String::as_str)
                    .collect();
                elements_cmd(&mut s, "delete", name, &lost);
            }
        }
        let gained: Vec<&str> = set
            .elements
            .iter()
            .filter(|e| had.is_none_or(|o| !o.elements.contains(*e)))
            .map(String::as_str)
            .collect();
        elements_cmd(&mut s, "add", name, &gained);
    }
    // New chains are declared before any rule is written, since a pod chain's rules go to its tail.
    for name in new.chains.keys().filter(|c| !old.chains.contains_key(*c)) {
        let _ = writeln!(s, "add chain inet {TABLE} {name}");
        if has_counter(name) {
            let _ = writeln!(s, "add counter inet {TABLE} {}", drop_counter(name));
        }
    }
    // Chains, new or rewritten (a rewrite keeps the chain's counter and its map entries).
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(o) if o == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain inet {TABLE} {name}");
            }
            None => {}
        }
        for r in rules {
            let _ = writeln!(s, "add rule inet {TABLE} {name} {r}");
        }
    }
    // Map entries: gone or changed ones out, then new or changed ones in.
    let empty = BTreeMap::new();
    for m in [EGRESS_MAP, INGRESS4_MAP, INGRESS6_MAP] {
        let (o, n) = (
            old.maps.get(m).unwrap_or(&empty),
            new.maps.get(m).unwrap_or(&empty),
        );
        let out: Vec<&str> = o
            .iter()
            .filter(|(k, v)| n.get(*k) != Some(*v))
            .map(|(k, _)| k.as_str())
            .collect();
        elements_cmd(&mut s, "delete", m, &out);
        let into: Vec<String> = n
            .iter()
            .filter(|(k, v)| o.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} : jump {v}"))
            .collect();
        elements_cmd(
            &mut s,
            "add",
            m,
            &into.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    // Chains, counters and sets nothing references any more.
    // All flushed before any is deleted: a pod chain that goes may be the one jumping to a tail that goes.
    let gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|c| !new.chains.contains_key(*c))
        .collect();
    for name in &gone {
        let _ = writeln!(s, "flush chain inet {TABLE} {name}");
    }
    for name in &gone {
        let _ = writeln!(s, "delete chain inet {TABLE} {name}");
        if has_counter(name) {
            let _ = writeln!(s, "delete counter inet {TABLE} {}", drop_counter(name));
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(s, "delete set inet {TABLE} {name}");
        }
    }
    Some(s)
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
