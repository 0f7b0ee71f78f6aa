//! ClusterNetworkPolicy: the compiler against the oracle on generated cases, and the tier semantics the
//! network-policy-api states, each written out (Admin before NetworkPolicy before Baseline; Accept, Deny and
//! Pass; priorities; failing closed) so that a misreading shared by both cannot pass unseen.

mod common;

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use terway_apis::{
    Action, ClusterNetworkPolicy, ClusterNetworkPolicyEgressPeer, ClusterNetworkPolicyEgressRule,
    ClusterNetworkPolicyIngressPeer, ClusterNetworkPolicyIngressRule, ClusterNetworkPolicyProtocol,
    ClusterNetworkPolicySpec, ClusterNetworkPolicySubject, NamespacedPod, Port, ProtocolPort, Tier,
};
use terway_policy::gen::{self, OUTSIDE};
use terway_policy::oracle::{self, endpoint};
use terway_policy::{compile, gen_cluster, Proto, World};

#[test]
fn compiler_agrees_with_the_oracle_on_generated_cluster_cases() {
    let mut changed = 0;
    for seed in 0..600u64 {
        let w = gen_cluster::case(seed);
        let with = common::table(&w).unwrap_or_else(|e| panic!("case {seed}: {e}"));
        let mut without = w.clone();
        without.cluster_policies.clear();
        let base =
            common::table(&without).unwrap_or_else(|e| panic!("case {seed} without CNPs: {e}"));
        if with != base {
            changed += 1;
        }
    }
    // The cluster policies must decide something in most cases, not sit beside the NetworkPolicies.
    assert!(
        changed > 350,
        "cluster policies changed only {changed} of 600 tables"
    );
}

const XA: (usize, usize) = (0, 0);
const XB: (usize, usize) = (0, 1);
const YA: (usize, usize) = (1, 0);
const YB: (usize, usize) = (1, 1);
const ZA: (usize, usize) = (2, 0);
const ZB: (usize, usize) = (2, 1);

fn ip(p: (usize, usize)) -> IpAddr {
    gen::pod_ip(p.0, p.1)
}

fn ns_is(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([("ns".to_string(), name.to_string())].into()),
        match_expressions: None,
    }
}

fn pod_is(ns: &str, pod: &str) -> NamespacedPod {
    NamespacedPod {
        namespace_selector: ns_is(ns),
        pod_selector: LabelSelector {
            match_labels: Some([("pod".to_string(), pod.to_string())].into()),
            match_expressions: None,
        },
    }
}

fn from_ns(action: Action, ns: &str) -> ClusterNetworkPolicyIngressRule {
    ClusterNetworkPolicyIngressRule {
        name: format!("{action:?} from {ns}"),
        action,
        from: vec![ClusterNetworkPolicyIngressPeer {
            namespaces: Some(ns_is(ns)),
            pods: None,
        }],
        protocols: Vec::new(),
    }
}

fn from_all(action: Action) -> ClusterNetworkPolicyIngressRule {
    ClusterNetworkPolicyIngressRule {
        name: String::new(),
        action,
        from: vec![ClusterNetworkPolicyIngressPeer {
            namespaces: Some(LabelSelector::default()),
            pods: None,
        }],
        protocols: Vec::new(),
    }
}

fn cnp(
    name: &str,
    tier: Tier,
    priority: i32,
    subject_ns: &str,
    ingress: Vec<ClusterNetworkPolicyIngressRule>,
    egress: Vec<ClusterNetworkPolicyEgressRule>,
) -> ClusterNetworkPolicy {
    ClusterNetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: ClusterNetworkPolicySpec {
            tier,
            priority,
            subject: ClusterNetworkPolicySubject {
                namespaces: Some(ns_is(subject_ns)),
                pods: None,
            },
            ingress,
            egress,
        },
        status: None,
    }
}

/// A NetworkPolicy in `ns` selecting pod `pod` that allows ingress from the namespace `from`.
fn np_allow_from(ns: &str, pod: &str, from: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(format!("allow-{from}")),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some([("pod".to_string(), pod.to_string())].into()),
                match_expressions: None,
            }),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![k8s_openapi::api::networking::v1::NetworkPolicyPeer {
                    namespace_selector: Some(ns_is(from)),
                    ..Default::default()
                }]),
                ports: None,
            }]),
            egress: None,
            policy_types: Some(vec!["Ingress".into()]),
        }),
    }
}

fn world(cnps: Vec<ClusterNetworkPolicy>, nps: Vec<NetworkPolicy>) -> World {
    let mut w = gen_cluster::model();
    w.cluster_policies = cnps;
    w.policies = nps;
    w
}

/// The verdict, checked to be the same from the oracle and the compiled rules.
fn allowed(w: &World, src: IpAddr, dst: IpAddr, port: u16, proto: Proto) -> bool {
    let o = oracle::allowed(w, endpoint(w, src), endpoint(w, dst), port, proto);
    let c = compile(w).unwrap().allows(w, src, dst, port, proto);
    assert_eq!(o, c, "{src} -> {dst} {port}/{proto}");
    o
}

fn tcp80(w: &World, src: (usize, usize), dst: (usize, usize)) -> bool {
    allowed(w, ip(src), ip(dst), 80, Proto::Tcp)
}

#[test]
fn an_admin_deny_beats_a_network_policy_allow() {
    let w = world(
        vec![cnp(
            "deny-y",
            Tier::Admin,
            10,
            "x",
            vec![from_ns(Action::Deny, "y")],
            vec![],
        )],
        vec![np_allow_from("x", "a", "y")],
    );
    assert!(
        !tcp80(&w, YA, XA),
        "the NetworkPolicy allows y, the Admin tier denies it first"
    );
    assert!(
        !tcp80(&w, ZA, XA),
        "the NetworkPolicy isolates x/a: z is not in its allow-list"
    );
    assert!(!tcp80(&w, YA, XB), "the Admin Deny covers every pod of x");
    assert!(
        tcp80(&w, ZA, XB),
        "x/b: no NetworkPolicy, no matching cluster rule"
    );
}

#[test]
fn pass_hands_the_decision_to_network_policy() {
    let w = world(
        vec![cnp(
            "pass-y-deny-rest",
            Tier::Admin,
            10,
            "x",
            vec![from_ns(Action::Pass, "y"), from_all(Action::Deny)],
            vec![],
        )],
        vec![np_allow_from("x", "a", "y")],
    );
    assert!(tcp80(&w, YA, XA), "Pass, then the NetworkPolicy allows y");
    assert!(
        tcp80(&w, YA, XB),
        "Pass, and no NetworkPolicy selects x/b: allowed"
    );
    assert!(!tcp80(&w, ZA, XA), "z meets the Admin Deny");
    // Pass skips the rest of the Admin tier, also lower-precedence policies.
    let mut w = w;
    w.cluster_policies.push(cnp(
        "later-deny-y",
        Tier::Admin,
        20,
        "x",
        vec![from_ns(Action::Deny, "y")],
        vec![],
    ));
    assert!(
        tcp80(&w, YA, XA),
        "a later Admin Deny is skipped after a Pass"
    );
}

#[test]
fn baseline_applies_only_where_no_network_policy_selects_the_pod() {
    let w = world(
        vec![cnp(
            "base-deny",
            Tier::Baseline,
            10,
            "z",
            vec![from_all(Action::Deny)],
            vec![],
        )],
        vec![np_allow_from("z", "a", "x")],
    );
    assert!(
        tcp80(&w, XA, ZA),
        "z/a is selected by a NetworkPolicy that allows x"
    );
    assert!(
        !tcp80(&w, YA, ZA),
        "z/a: the NetworkPolicy decides, and it does not allow y"
    );
    assert!(
        !tcp80(&w, XA, ZB),
        "z/b: no NetworkPolicy, so the Baseline Deny applies"
    );
    assert!(
        tcp80(&w, XA, YB),
        "y/b is no subject of the Baseline policy"
    );
    // A Baseline Pass, or no matching rule, leaves the default: allowed.
    let w = world(
        vec![cnp(
            "base-pass",
            Tier::Baseline,
            10,
            "z",
            vec![from_ns(Action::Pass, "x"), from_all(Action::Deny)],
            vec![],
        )],
        vec![],
    );
    assert!(tcp80(&w, XA, ZB));
    assert!(!tcp80(&w, YA, ZB));
}

#[test]
fn lower_priority_values_and_earlier_rules_decide_first() {
    let w = world(
        vec![
            cnp(
                "deny",
                Tier::Admin,
                20,
                "x",
                vec![from_all(Action::Deny)],
                vec![],
            ),
            cnp(
                "accept-y",
                Tier::Admin,
                5,
                "x",
                vec![from_ns(Action::Accept, "y")],
                vec![],
            ),
        ],
        vec![],
    );
    assert!(
        tcp80(&w, YA, XA),
        "priority 5 Accept before priority 20 Deny"
    );
    assert!(!tcp80(&w, ZA, XA));
    // Within one policy, rule order: the Deny written first wins.
    let w = world(
        vec![cnp(
            "ordered",
            Tier::Admin,
            5,
            "x",
            vec![from_ns(Action::Deny, "y"), from_ns(Action::Accept, "y")],
            vec![],
        )],
        vec![],
    );
    assert!(!tcp80(&w, YA, XA));
    // An Admin Accept is final even over a NetworkPolicy that would deny.
    let w = world(
        vec![cnp(
            "accept-z",
            Tier::Admin,
            5,
            "x",
            vec![from_ns(Action::Accept, "z")],
            vec![],
        )],
        vec![np_allow_from("x", "a", "y")],
    );
    assert!(tcp80(&w, ZA, XA));
}

fn to(peer: ClusterNetworkPolicyEgressPeer, action: Action) -> ClusterNetworkPolicyEgressRule {
    ClusterNetworkPolicyEgressRule {
        name: String::new(),
        action,
        to: vec![peer],
        protocols: Vec::new(),
    }
}

#[test]
fn an_egress_accept_still_meets_the_destinations_ingress() {
    let w = world(
        vec![
            cnp(
                "x-out",
                Tier::Admin,
                5,
                "x",
                vec![],
                vec![to(
                    ClusterNetworkPolicyEgressPeer {
                        pods: Some(pod_is("y", "a")),
                        ..Default::default()
                    },
                    Action::Accept,
                )],
            ),
            cnp(
                "y-in",
                Tier::Admin,
                6,
                "y",
                vec![from_ns(Action::Deny, "x")],
                vec![],
            ),
        ],
        vec![],
    );
    assert!(!tcp80(&w, XA, YA), "x's egress accepts, y's ingress denies");
}

#[test]
fn nodes_and_networks_peers_select_addresses() {
    let node = ClusterNetworkPolicyEgressPeer {
        nodes: Some(LabelSelector {
            match_labels: Some(
                [(
                    gen_cluster::NODE_LABEL.0.to_string(),
                    gen_cluster::NODE_LABEL.1.to_string(),
                )]
                .into(),
            ),
            match_expressions: None,
        }),
        ..Default::default()
    };
    let w = world(
        vec![cnp(
            "no-node",
            Tier::Admin,
            5,
            "x",
            vec![],
            vec![to(node, Action::Deny)],
        )],
        vec![],
    );
    assert!(!allowed(&w, ip(XA), OUTSIDE, 80, Proto::Tcp));
    assert!(allowed(&w, ip(XA), ip(YA), 80, Proto::Tcp));
    let net = ClusterNetworkPolicyEgressPeer {
        networks: vec!["10.100.1.0/24".into()],
        ..Default::default()
    };
    let mut rule = to(net, Action::Deny);
    rule.protocols = vec![ClusterNetworkPolicyProtocol {
        udp: Some(ProtocolPort {
            destination_port: Some(Port {
                number: 81,
                range: None,
            }),
        }),
        ..Default::default()
    }];
    let w = world(
        vec![cnp("no-y-udp81", Tier::Admin, 5, "x", vec![], vec![rule])],
        vec![],
    );
    assert!(
        !allowed(&w, ip(XA), ip(YB), 81, Proto::Udp),
        "networks match pod addresses too"
    );
    assert!(allowed(&w, ip(XA), ip(YB), 80, Proto::Udp));
    assert!(allowed(&w, ip(XA), ip(YB), 81, Proto::Tcp));
    assert!(allowed(&w, ip(XA), ip(ZB), 81, Proto::Udp));
}

#[test]
fn malformed_rules_fail_closed() {
    let empty_peer = ClusterNetworkPolicyIngressRule {
        name: String::new(),
        action: Action::Pass,
        from: vec![ClusterNetworkPolicyIngressPeer::default()],
        protocols: Vec::new(),
    };
    let w = world(
        vec![cnp(
            "bad-pass",
            Tier::Admin,
            5,
            "x",
            vec![empty_peer],
            vec![],
        )],
        vec![],
    );
    assert!(
        !tcp80(&w, YA, XA),
        "a Pass rule with a peer of no field denies everything"
    );
    let bad_accept = ClusterNetworkPolicyIngressRule {
        name: String::new(),
        action: Action::Accept,
        from: vec![
            ClusterNetworkPolicyIngressPeer::default(),
            ClusterNetworkPolicyIngressPeer {
                namespaces: Some(ns_is("z")),
                pods: None,
            },
        ],
        protocols: Vec::new(),
    };
    let w = world(
        vec![cnp(
            "bad-accept",
            Tier::Admin,
            5,
            "x",
            vec![bad_accept, from_all(Action::Deny)],
            vec![],
        )],
        vec![],
    );
    assert!(
        !tcp80(&w, YA, XA),
        "the bad peer of an Accept rule matches nothing"
    );
    assert!(tcp80(&w, ZA, XA), "its good peer still matches");
    let domains = ClusterNetworkPolicyEgressPeer {
        domain_names: vec!["www.example.com".into()],
        ..Default::default()
    };
    let w = world(
        vec![cnp(
            "fqdn",
            Tier::Admin,
            5,
            "x",
            vec![],
            vec![
                to(domains, Action::Accept),
                to(
                    ClusterNetworkPolicyEgressPeer {
                        networks: vec!["0.0.0.0/0".into()],
                        ..Default::default()
                    },
                    Action::Deny,
                ),
            ],
        )],
        vec![],
    );
    assert!(
        !allowed(&w, ip(XA), OUTSIDE, 80, Proto::Tcp),
        "domain names are not enforced: nothing is accepted by them"
    );
}
