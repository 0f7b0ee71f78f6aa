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
//!   network are never selected and are seen by address only.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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

/// `pod`'s side of the connection, with `peer` at the other end.
fn side_allows(
    w: &World,
    pod: &Pod,
    dir: Dir,
    peer: Endpoint<'_>,
    port: u16,
    proto: Proto,
) -> bool {
    let isolating: Vec<&NetworkPolicy> = w
        .policies
        .iter()
        .filter(|p| selects(p, pod) && affects(p, dir))
        .collect();
    if isolating.is_empty() {
        return true;
    }
    // The destination's named ports decide a named port: the pod itself for ingress, the peer for egress.
    let dst = match dir {
        Dir::Ingress => Some(pod),
        Dir::Egress => match peer {
            Endpoint::Pod(p) if !p.host_network => Some(p),
            _ => None,
        },
    };
    isolating.iter().any(|p| {
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
    })
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
