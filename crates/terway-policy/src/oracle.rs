//! The reference answer: may `src` reach `dst` on `port`/`proto`? Written from the API's wording, one
//! question at a time, reading the policies and labels as they are (no precomputation):
//!
//! - a pod is *isolated* for ingress (egress) when a policy of its namespace selects it and lists Ingress
//!   (Egress) in its policy types — or, with no types given, always for Ingress and for Egress when the
//!   policy has egress rules;
//! - a non-isolated direction allows everything; an isolated one allows what at least one rule of one of
//!   the policies that isolate it allows: a rule allows a peer when its peer list is empty or one peer
//!   matches, and a port when its port list is empty or one port matches;
//! - a connection needs the source's egress and the destination's ingress to allow it; pods on the host
//!   network are never selected and are seen by address only;
//! - ClusterNetworkPolicies come around that: the Admin tier first — the policies whose subject is the pod,
//!   by priority (then name), their rules of the direction in order; the first rule whose peers and
//!   protocols match decides: Accept allows, Deny denies, Pass hands over to NetworkPolicy — then
//!   NetworkPolicy if it isolates the direction, else the Baseline tier the same way (Pass or no match:
//!   allowed). A rule with a malformed part (not exactly one field of a peer or protocol, a CIDR or port
//!   that does not parse, no peers) fails closed: that part matches nothing in an Accept rule, and a Deny
//!   or Pass rule denies everything.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use terway_apis::{
    Action, ClusterNetworkPolicy, ClusterNetworkPolicyProtocol, NamespacedPod, Tier,
};

use crate::model::{policy_namespace, rules_as_written, Endpoint, Pod, Proto, World};

/// Whether the connection `src` → `dst` on `port`/`proto` is allowed.
pub fn allowed(w: &World, src: Endpoint<'_>, dst: Endpoint<'_>, port: u16, proto: Proto) -> bool {
    let egress_ok = match src {
        Endpoint::Pod(p) if !p.host_network => side_allows(w, p, Dir::Egress, dst, port, proto),
        _ => true,
    };
    let ingress_ok = match dst {
        Endpoint::Pod(p) if !p.host_network => side_allows(w, p, Dir::Ingress, src, port, proto),
        _ => true,
    };
    egress_ok && ingress_ok
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

/// `pod`'s side of the connection, with `peer` at the other end: the Admin tier, NetworkPolicy, the
/// Baseline tier.
fn side_allows(
    w: &World,
    pod: &Pod,
    dir: Dir,
    peer: Endpoint<'_>,
    port: u16,
    proto: Proto,
) -> bool {
    match tier_decides(w, Tier::Admin, pod, dir, peer, port, proto) {
        Some(Action::Accept) => return true,
        Some(Action::Deny) => return false,
        Some(Action::Pass) | None => {}
    }
    if let Some(v) = network_policy_decides(w, pod, dir, peer, port, proto) {
        return v;
    }
    tier_decides(w, Tier::Baseline, pod, dir, peer, port, proto) != Some(Action::Deny)
}

/// The pod whose container ports a named port means: `pod` itself for ingress, the peer (if it is a pod)
/// for egress.
fn destination<'a>(pod: &'a Pod, dir: Dir, peer: Endpoint<'a>) -> Option<&'a Pod> {
    match dir {
        Dir::Ingress => Some(pod),
        Dir::Egress => match peer {
            Endpoint::Pod(p) if !p.host_network => Some(p),
            _ => None,
        },
    }
}

/// The first matching rule's action in `tier`, for `pod`'s side.
fn tier_decides(
    w: &World,
    tier: Tier,
    pod: &Pod,
    dir: Dir,
    peer: Endpoint<'_>,
    port: u16,
    proto: Proto,
) -> Option<Action> {
    let mut policies: Vec<&ClusterNetworkPolicy> = w
        .cluster_policies
        .iter()
        .filter(|p| p.spec.tier == tier && subject_is(w, p, pod))
        .collect();
    policies.sort_by(|a, b| {
        a.spec
            .priority
            .cmp(&b.spec.priority)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let dst = destination(pod, dir, peer);
    for p in policies {
        let rules: Vec<(Action, Vec<PeerFields<'_>>, &[ClusterNetworkPolicyProtocol])> = match dir {
            Dir::Ingress => p
                .spec
                .ingress
                .iter()
                .map(|r| {
                    let peers = r
                        .from
                        .iter()
                        .map(|f| PeerFields {
                            namespaces: f.namespaces.as_ref(),
                            pods: f.pods.as_ref(),
                            ..PeerFields::default()
                        })
                        .collect();
                    (r.action, peers, r.protocols.as_slice())
                })
                .collect(),
            Dir::Egress => p
                .spec
                .egress
                .iter()
                .map(|r| {
                    let peers =
                        r.to.iter()
                            .map(|t| PeerFields {
                                namespaces: t.namespaces.as_ref(),
                                pods: t.pods.as_ref(),
                                nodes: t.nodes.as_ref(),
                                networks: &t.networks,
                                domain_names: &t.domain_names,
                            })
                            .collect();
                    (r.action, peers, r.protocols.as_slice())
                })
                .collect(),
        };
        for (action, peers, protocols) in rules {
            // `None`: that part is malformed.
            let peer_hits: Vec<Option<bool>> = peers
                .iter()
                .map(|f| cluster_peer_matches(w, f, action, peer))
                .collect();
            let proto_hits: Vec<Option<bool>> = protocols
                .iter()
                .map(|pr| cluster_protocol_matches(pr, dst, port, proto))
                .collect();
            let malformed = peers.is_empty()
                || peer_hits.iter().any(Option::is_none)
                || proto_hits.iter().any(Option::is_none);
            if malformed && action != Action::Accept {
                return Some(Action::Deny);
            }
            let peer_ok = peer_hits.contains(&Some(true));
            let proto_ok = protocols.is_empty() || proto_hits.contains(&Some(true));
            if peer_ok && proto_ok {
                return Some(action);
            }
        }
    }
    None
}

/// The fields of a cluster policy peer (an ingress peer has only the first two).
#[derive(Default)]
struct PeerFields<'a> {
    namespaces: Option<&'a LabelSelector>,
    pods: Option<&'a NamespacedPod>,
    nodes: Option<&'a LabelSelector>,
    networks: &'a [String],
    domain_names: &'a [String],
}

/// Whether the subject of `p` is `pod`: exactly one of its fields, matching.
fn subject_is(w: &World, p: &ClusterNetworkPolicy, pod: &Pod) -> bool {
    if pod.host_network {
        return false;
    }
    let ns = namespace_labels(w, &pod.namespace);
    match (&p.spec.subject.namespaces, &p.spec.subject.pods) {
        (Some(sel), None) => labels_match(sel, &ns),
        (None, Some(np)) => {
            labels_match(&np.namespace_selector, &ns) && labels_match(&np.pod_selector, &pod.labels)
        }
        _ => false,
    }
}

fn namespace_labels(w: &World, name: &str) -> BTreeMap<String, String> {
    w.namespace(name)
        .map(|n| n.labels.clone())
        .unwrap_or_default()
}

/// Whether a cluster policy peer matches the endpoint; `None` when it is malformed. Domain names (only
/// valid in Accept rules) are not enforced: they match nothing.
fn cluster_peer_matches(
    w: &World,
    f: &PeerFields<'_>,
    action: Action,
    peer: Endpoint<'_>,
) -> Option<bool> {
    let fields = [
        f.namespaces.is_some(),
        f.pods.is_some(),
        f.nodes.is_some(),
        !f.networks.is_empty(),
        !f.domain_names.is_empty(),
    ];
    if fields.iter().filter(|b| **b).count() != 1 {
        return None;
    }
    let pod = match peer {
        Endpoint::Pod(p) if !p.host_network => Some(p),
        _ => None,
    };
    if let Some(sel) = f.namespaces {
        return Some(pod.is_some_and(|p| labels_match(sel, &namespace_labels(w, &p.namespace))));
    }
    if let Some(np) = f.pods {
        return Some(pod.is_some_and(|p| {
            labels_match(&np.namespace_selector, &namespace_labels(w, &p.namespace))
                && labels_match(&np.pod_selector, &p.labels)
        }));
    }
    if let Some(sel) = f.nodes {
        let Some(ip) = peer.ip() else {
            return Some(false);
        };
        return Some(
            w.nodes
                .iter()
                .any(|n| n.ips.contains(&ip) && labels_match(sel, &n.labels)),
        );
    }
    if !f.networks.is_empty() {
        let mut hit = false;
        for c in f.networks {
            let net: IpNet = c.parse().ok()?;
            hit |= peer.ip().is_some_and(|ip| net.contains(&ip));
        }
        return Some(hit);
    }
    (action == Action::Accept).then_some(false)
}

/// Whether a protocol entry matches; `None` when it is malformed.
fn cluster_protocol_matches(
    pr: &ClusterNetworkPolicyProtocol,
    dst: Option<&Pod>,
    port: u16,
    proto: Proto,
) -> Option<bool> {
    let entries = [
        (Proto::Tcp, pr.tcp.as_ref()),
        (Proto::Udp, pr.udp.as_ref()),
        (Proto::Sctp, pr.sctp.as_ref()),
    ];
    let set = entries.iter().filter(|(_, e)| e.is_some()).count()
        + usize::from(!pr.destination_named_port.is_empty());
    if set != 1 {
        return None;
    }
    if !pr.destination_named_port.is_empty() {
        return Some(
            dst.and_then(|d| d.named_port(&pr.destination_named_port, proto)) == Some(port),
        );
    }
    let (p, pp) = entries.into_iter().find_map(|(p, e)| e.map(|e| (p, e)))?;
    let ok_port = |n: i32| (1..=65535).contains(&n);
    let in_range = match &pp.destination_port {
        None => true,
        Some(d) => match (d.number, &d.range) {
            (n, None) if ok_port(n) => i64::from(n) == i64::from(port),
            (0, Some(r)) if ok_port(r.start) && ok_port(r.end) && r.start < r.end => {
                (i64::from(r.start)..=i64::from(r.end)).contains(&i64::from(port))
            }
            _ => return None,
        },
    };
    Some(p == proto && in_range)
}

/// What NetworkPolicy says of `pod`'s side; `None` when no policy isolates it.
fn network_policy_decides(
    w: &World,
    pod: &Pod,
    dir: Dir,
    peer: Endpoint<'_>,
    port: u16,
    proto: Proto,
) -> Option<bool> {
    let isolating: Vec<&NetworkPolicy> = w
        .policies
        .iter()
        .filter(|p| selects(p, pod) && affects(p, dir))
        .collect();
    if isolating.is_empty() {
        return None;
    }
    let dst = destination(pod, dir, peer);
    Some(isolating.iter().any(|p| {
        let ns = policy_namespace(p);
        let rules = rules_as_written(p, dir == Dir::Ingress);
        rules.iter().any(|(peers, ports)| {
            let peer_ok = match peers {
                None => true,
                Some([]) => true,
                Some(v) => v.iter().any(|pp| peer_matches(w, ns, pp, peer)),
            };
            let port_ok = match ports {
                None => true,
                Some([]) => true,
                Some(v) => v.iter().any(|pt| port_matches(pt, dst, port, proto)),
            };
            peer_ok && port_ok
        })
    }))
}

/// The policy is in the pod's namespace and its pod selector matches the pod.
fn selects(p: &NetworkPolicy, pod: &Pod) -> bool {
    if pod.host_network || policy_namespace(p) != pod.namespace {
        return false;
    }
    let everything = LabelSelector::default();
    let sel = p
        .spec
        .as_ref()
        .and_then(|s| s.pod_selector.as_ref())
        .unwrap_or(&everything);
    labels_match(sel, &pod.labels)
}

fn affects(p: &NetworkPolicy, dir: Dir) -> bool {
    let Some(spec) = p.spec.as_ref() else {
        return dir == Dir::Ingress;
    };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| match dir {
            Dir::Ingress => t == "Ingress",
            Dir::Egress => t == "Egress",
        }),
        None => match dir {
            Dir::Ingress => true,
            Dir::Egress => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        },
    }
}

fn peer_matches(w: &World, policy_ns: &str, pp: &NetworkPolicyPeer, peer: Endpoint<'_>) -> bool {
    if let Some(b) = &pp.ip_block {
        let Some(ip) = peer.ip() else { return false };
        let Ok(cidr) = b.cidr.parse::<IpNet>() else {
            return false;
        };
        let excepted = b
            .except
            .iter()
            .flatten()
            .filter_map(|e| e.parse::<IpNet>().ok())
            .any(|e| e.contains(&ip));
        return cidr.contains(&ip) && !excepted;
    }
    let pod = match peer {
        Endpoint::Pod(p) if !p.host_network => p,
        _ => return false,
    };
    match (&pp.namespace_selector, &pp.pod_selector) {
        (None, None) => false,
        (None, Some(ps)) => pod.namespace == policy_ns && labels_match(ps, &pod.labels),
        (Some(ns), ps) => {
            let ns_labels = w
                .namespace(&pod.namespace)
                .map(|n| n.labels.clone())
                .unwrap_or_default();
            labels_match(ns, &ns_labels) && ps.as_ref().is_none_or(|s| labels_match(s, &pod.labels))
        }
    }
}

fn port_matches(pt: &NetworkPolicyPort, dst: Option<&Pod>, port: u16, proto: Proto) -> bool {
    if Proto::parse(pt.protocol.as_deref()) != Some(proto) {
        return false;
    }
    match &pt.port {
        None => true,
        Some(IntOrString::Int(n)) => {
            let lo = i64::from(*n);
            let hi = pt.end_port.map(i64::from).unwrap_or(lo);
            (lo..=hi).contains(&i64::from(port))
        }
        Some(IntOrString::String(name)) => {
            dst.and_then(|p| p.named_port(name, proto)) == Some(port)
        }
    }
}

/// The API's selector semantics, read directly (the compiler parses them in `selector` instead).
fn labels_match(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_exprs = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            // Invalid (the API server refuses it): selects nothing.
            _ => false,
        }
    });
    by_labels && by_exprs
}

/// The address `ip` as an endpoint of `w`: its pod, or an external address.
pub fn endpoint(w: &World, ip: IpAddr) -> Endpoint<'_> {
    match w.pod_by_ip(ip) {
        Some(p) => Endpoint::Pod(p),
        None => Endpoint::External(ip),
    }
}
