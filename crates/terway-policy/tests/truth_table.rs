//! The compiler against the oracle on generated cases of the cyclonus model, and the semantic points the
//! upstream suites probe, each written out so that a misreading shared by both cannot pass unseen.

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
mod common;

use terway_policy::gen::{self, OUTSIDE};
use terway_policy::oracle::{self, endpoint};
use terway_policy::{compile, Proto, World};

#[test]
fn compiler_agrees_with_the_oracle_on_generated_cases() {
    let mut isolating = 0;
    for seed in 0..600u64 {
        let w = gen::case(seed);
        compile(&w).unwrap_or_else(|e| panic!("case {seed}: generated policies must compile: {e}"));
        if let Err(d) = common::table(&w) {
            panic!("case {seed}: {d}");
        }
        let c = compile(&w).unwrap();
        if c.pods
            .values()
            .any(|p| p.ingress != terway_policy::Rules::Unrestricted)
        {
            isolating += 1;
        }
    }
    // The cases must exercise isolation, not only unrestricted pods.
    assert!(
        isolating > 300,
        "only {isolating} of 600 cases isolate a pod"
    );
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

fn labels(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(k.to_string(), v.to_string())].into()),
        match_expressions: None,
    }
}

fn with(policies: Vec<NetworkPolicy>) -> World {
    let mut w = gen::model();
    w.policies = policies;
    w
}

fn allowed(w: &World, src: IpAddr, dst: IpAddr, port: u16, proto: Proto) -> bool {
    let o = oracle::allowed(w, endpoint(w, src), endpoint(w, dst), port, proto);
    let c = compile(w).unwrap().allows(w, src, dst, port, proto);
    assert_eq!(o, c, "{src} -> {dst} {port}/{proto}");
    o
}

const XA: (usize, usize) = (0, 0);
const XB: (usize, usize) = (0, 1);
const YA: (usize, usize) = (1, 0);

fn ip(p: (usize, usize)) -> IpAddr {
    gen::pod_ip(p.0, p.1)
}

#[test]
fn default_deny_ingress_isolates_only_ingress_of_its_namespace() {
    let w = with(vec![NetworkPolicy {
        metadata: meta("x", "deny"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into()]),
            ..Default::default()
        }),
    }]);
    assert!(!allowed(&w, ip(YA), ip(XA), 80, Proto::Tcp));
    assert!(
        !allowed(&w, ip(XB), ip(XA), 80, Proto::Tcp),
        "same namespace too"
    );
    assert!(
        allowed(&w, ip(XA), ip(YA), 80, Proto::Tcp),
        "egress is not isolated"
    );
    assert!(allowed(&w, ip(XA), OUTSIDE, 80, Proto::Udp));
}

#[test]
fn an_ip_block_over_pod_addresses_admits_those_pods() {
    // Terway #904: denied in its eBPF mode; the API admits pods whose address is in the block.
    let w = with(vec![NetworkPolicy {
        metadata: meta("x", "from-y-block"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(labels("pod", "a")),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: "10.100.1.0/24".into(),
                        except: Some(vec![format!("{}/32", gen::pod_ip(1, 1))]),
                    }),
                    ..Default::default()
                }]),
                ports: None,
            }]),
            ..Default::default()
        }),
    }]);
    assert!(allowed(&w, ip(YA), ip(XA), 80, Proto::Tcp));
    assert!(
        !allowed(&w, gen::pod_ip(1, 1), ip(XA), 80, Proto::Tcp),
        "the exception"
    );
    assert!(
        !allowed(&w, ip(XB), ip(XA), 80, Proto::Tcp),
        "outside the block"
    );
}

#[test]
fn a_peer_with_both_selectors_is_an_and_two_peers_are_an_or() {
    let peer_and = NetworkPolicyPeer {
        namespace_selector: Some(labels("ns", "y")),
        pod_selector: Some(labels("pod", "b")),
        ..Default::default()
    };
    let and = with(vec![NetworkPolicy {
        metadata: meta("x", "and"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(labels("pod", "a")),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![peer_and]),
                ports: None,
            }]),
            ..Default::default()
        }),
    }]);
    assert!(
        allowed(&and, gen::pod_ip(1, 1), ip(XA), 80, Proto::Tcp),
        "y/b"
    );
    assert!(
        !allowed(&and, ip(YA), ip(XA), 80, Proto::Tcp),
        "y/a is not b"
    );
    assert!(
        !allowed(&and, ip(XB), ip(XA), 80, Proto::Tcp),
        "x/b is not in y"
    );
    let or = with(vec![NetworkPolicy {
        metadata: meta("x", "or"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(labels("pod", "a")),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    NetworkPolicyPeer {
                        namespace_selector: Some(labels("ns", "y")),
                        ..Default::default()
                    },
                    NetworkPolicyPeer {
                        pod_selector: Some(labels("pod", "b")),
                        ..Default::default()
                    },
                ]),
                ports: None,
            }]),
            ..Default::default()
        }),
    }]);
    assert!(allowed(&or, ip(YA), ip(XA), 80, Proto::Tcp), "any pod of y");
    assert!(
        allowed(&or, ip(XB), ip(XA), 80, Proto::Tcp),
        "b of the policy's own namespace"
    );
    assert!(
        !allowed(&or, gen::pod_ip(2, 1), ip(XA), 80, Proto::Tcp),
        "b of z is neither"
    );
}

#[test]
fn named_and_ranged_ports_and_the_tcp_default() {
    let rule = |ports: Vec<NetworkPolicyPort>| {
        with(vec![NetworkPolicy {
            metadata: meta("x", "ports"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(labels("pod", "a")),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(ports),
                }]),
                ..Default::default()
            }),
        }])
    };
    let named = rule(vec![NetworkPolicyPort {
        port: Some(IntOrString::String("serve-81-udp".into())),
        protocol: Some("UDP".into()),
        end_port: None,
    }]);
    assert!(allowed(&named, ip(YA), ip(XA), 81, Proto::Udp));
    assert!(!allowed(&named, ip(YA), ip(XA), 81, Proto::Tcp));
    assert!(!allowed(&named, ip(YA), ip(XA), 80, Proto::Udp));
    let range = rule(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(80)),
        end_port: Some(81),
        protocol: None,
    }]);
    assert!(
        allowed(&range, ip(YA), ip(XA), 81, Proto::Tcp),
        "TCP by default"
    );
    assert!(!allowed(&range, ip(YA), ip(XA), 82, Proto::Tcp));
    assert!(!allowed(&range, ip(YA), ip(XA), 80, Proto::Udp));
}

#[test]
fn egress_rules_without_policy_types_isolate_egress_and_ingress() {
    let w = with(vec![NetworkPolicy {
        metadata: meta("x", "egress-only-to-y"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(labels("pod", "a")),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(labels("ns", "y")),
                    ..Default::default()
                }]),
                ports: None,
            }]),
            policy_types: None,
            ..Default::default()
        }),
    }]);
    assert!(allowed(&w, ip(XA), ip(YA), 80, Proto::Tcp));
    assert!(
        !allowed(&w, ip(XA), ip(XB), 80, Proto::Tcp),
        "egress to x is not listed"
    );
    assert!(!allowed(&w, ip(XA), OUTSIDE, 53, Proto::Udp));
    assert!(
        !allowed(&w, ip(YA), ip(XA), 80, Proto::Tcp),
        "no ingress rules: ingress denied"
    );
}
