//! Cases with ClusterNetworkPolicies: the cyclonus model, a node whose address is the outside one, zero to
//! two random NetworkPolicies and one to three random cluster policies — both tiers, priorities that
//! sometimes tie, subjects by namespace or by pod, Accept/Deny/Pass rules over namespaces, pods, nodes and
//! networks, protocols with numbered, ranged and named ports, and now and then a malformed part (a peer or a
//! protocol entry with no field) that must fail closed. Deterministic per seed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use terway_apis::{
    Action, ClusterNetworkPolicy, ClusterNetworkPolicyEgressPeer, ClusterNetworkPolicyEgressRule,
    ClusterNetworkPolicyIngressPeer, ClusterNetworkPolicyIngressRule, ClusterNetworkPolicyProtocol,
    ClusterNetworkPolicySpec, ClusterNetworkPolicySubject, NamespacedPod, Port, PortRange,
    ProtocolPort, Tier,
};

use crate::gen::{self, Rng, NAMESPACES, OUTSIDE, PORTS};
use crate::model::{Node, World};

/// The label of the model's node.
pub const NODE_LABEL: (&str, &str) = ("node-role", "edge");

fn labels(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        match_expressions: None,
    }
}

fn namespaced_pod(r: &mut Rng) -> NamespacedPod {
    NamespacedPod {
        namespace_selector: if r.chance(30) {
            LabelSelector::default()
        } else {
            gen::namespace_selector(r)
        },
        pod_selector: gen::pod_selector(r),
    }
}

fn ingress_peer(r: &mut Rng) -> ClusterNetworkPolicyIngressPeer {
    match r.below(20) {
        0 => ClusterNetworkPolicyIngressPeer::default(),
        1..=8 => ClusterNetworkPolicyIngressPeer {
            namespaces: Some(gen::namespace_selector(r)),
            pods: None,
        },
        _ => ClusterNetworkPolicyIngressPeer {
            namespaces: None,
            pods: Some(namespaced_pod(r)),
        },
    }
}

fn egress_peer(r: &mut Rng, action: Action) -> ClusterNetworkPolicyEgressPeer {
    let none = ClusterNetworkPolicyEgressPeer::default();
    match r.below(20) {
        0 => none,
        1..=6 => ClusterNetworkPolicyEgressPeer {
            namespaces: Some(gen::namespace_selector(r)),
            ..none
        },
        7..=12 => ClusterNetworkPolicyEgressPeer {
            pods: Some(namespaced_pod(r)),
            ..none
        },
        13 | 14 => ClusterNetworkPolicyEgressPeer {
            nodes: Some(if r.chance(50) {
                labels(NODE_LABEL.0, NODE_LABEL.1)
            } else {
                LabelSelector::default()
            }),
            ..none
        },
        15..=18 => {
            let ns = r.below(NAMESPACES.len());
            let mut nets = vec![match r.below(4) {
                0 => "10.100.0.0/16".to_string(),
                1 => format!("10.100.{ns}.0/24"),
                2 => format!("{}/32", gen::pod_ip(ns, r.below(3))),
                _ => "192.168.7.0/24".to_string(),
            }];
            if r.chance(20) {
                nets.push("0.0.0.0/0".into());
            }
            ClusterNetworkPolicyEgressPeer {
                networks: nets,
                ..none
            }
        }
        // Domain names are valid in Accept rules only; elsewhere they are the malformed case.
        _ => ClusterNetworkPolicyEgressPeer {
            domain_names: vec![if action == Action::Accept {
                "www.example.com".into()
            } else {
                "*.example.com".into()
            }],
            ..none
        },
    }
}

fn protocol(r: &mut Rng) -> ClusterNetworkPolicyProtocol {
    let port = |r: &mut Rng| ProtocolPort {
        destination_port: match r.below(4) {
            0 => None,
            1 | 2 => Some(Port {
                number: i32::from(PORTS[r.below(PORTS.len())]),
                range: None,
            }),
            _ => Some(Port {
                number: 0,
                range: Some(PortRange { start: 80, end: 81 }),
            }),
        },
    };
    let none = ClusterNetworkPolicyProtocol::default();
    match r.below(20) {
        0 => none,
        1..=7 => ClusterNetworkPolicyProtocol {
            tcp: Some(port(r)),
            ..none
        },
        8..=12 => ClusterNetworkPolicyProtocol {
            udp: Some(port(r)),
            ..none
        },
        13 | 14 => ClusterNetworkPolicyProtocol {
            sctp: Some(port(r)),
            ..none
        },
        _ => ClusterNetworkPolicyProtocol {
            destination_named_port: format!(
                "serve-{}-{}",
                PORTS[r.below(PORTS.len())],
                ["tcp", "udp"][r.below(2)]
            ),
            ..none
        },
    }
}

fn action(r: &mut Rng) -> Action {
    [Action::Accept, Action::Deny, Action::Pass][r.below(3)]
}

fn some<T>(r: &mut Rng, max: usize, mut f: impl FnMut(&mut Rng) -> T) -> Vec<T> {
    (0..1 + r.below(max)).map(|_| f(r)).collect()
}

fn protocols(r: &mut Rng) -> Vec<ClusterNetworkPolicyProtocol> {
    if r.chance(50) {
        Vec::new()
    } else {
        some(r, 2, protocol)
    }
}

/// One random cluster policy named `name`.
pub fn cluster_policy(r: &mut Rng, name: &str) -> ClusterNetworkPolicy {
    let tier = if r.chance(60) {
        Tier::Admin
    } else {
        Tier::Baseline
    };
    let subject = if r.chance(40) {
        ClusterNetworkPolicySubject {
            namespaces: Some(gen::namespace_selector(r)),
            pods: None,
        }
    } else {
        ClusterNetworkPolicySubject {
            namespaces: None,
            pods: Some(namespaced_pod(r)),
        }
    };
    let n_in = r.below(3);
    let ingress = (0..n_in)
        .map(|_| {
            let action = action(r);
            ClusterNetworkPolicyIngressRule {
                name: String::new(),
                action,
                from: some(r, 2, ingress_peer),
                protocols: protocols(r),
            }
        })
        .collect();
    let n_eg = r.below(3);
    let egress = (0..n_eg)
        .map(|_| {
            let action = action(r);
            ClusterNetworkPolicyEgressRule {
                name: String::new(),
                action,
                to: some(r, 2, |r| egress_peer(r, action)),
                protocols: protocols(r),
            }
        })
        .collect();
    ClusterNetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: ClusterNetworkPolicySpec {
            tier,
            priority: [5, 10, 10, 20][r.below(4)],
            subject,
            ingress,
            egress,
        },
        status: None,
    }
}

/// The model with its one node (address [`OUTSIDE`], labelled [`NODE_LABEL`]).
pub fn model() -> World {
    let mut w = gen::model();
    w.nodes.push(Node {
        name: "edge-0".into(),
        labels: BTreeMap::from([(NODE_LABEL.0.to_string(), NODE_LABEL.1.to_string())]),
        ips: vec![OUTSIDE],
    });
    w
}

/// Case `seed`: [`model`] with zero to two random NetworkPolicies and one to three cluster policies.
pub fn case(seed: u64) -> World {
    let mut r = Rng::new(seed ^ 0xC1A5_7E12);
    let mut w = model();
    for i in 0..r.below(3) {
        w.policies.push(gen::policy(&mut r, &format!("p{i}")));
    }
    for i in 0..1 + r.below(3) {
        w.cluster_policies
            .push(cluster_policy(&mut r, &format!("cnp{i}")));
    }
    w
}
