use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::compile::compile;
use crate::gen::{model, pod_ip};
use crate::model::Pod;

fn labels(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        ..Default::default()
    }
}

fn policy(name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("x".into()),
            ..Default::default()
        },
        spec: Some(spec),
    }
}

/// x/a admits ingress from pods labelled pod=b of its namespace, on TCP 80.
fn allow_b_to_a() -> NetworkPolicy {
    policy(
        "allow-b",
        NetworkPolicySpec {
            pod_selector: Some(labels("pod", "a")),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(labels("pod", "b")),
                    ..Default::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(80)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            policy_types: Some(vec!["Ingress".into()]),
            ..Default::default()
        },
    )
}

fn local_a() -> LocalPod {
    LocalPod {
        key: "x/a".into(),
        host_if: "cali0000000000a".into(),
        ips: vec![pod_ip(0, 0)],
    }
}

fn rules_for(w: &World, local: &[LocalPod]) -> NodeRuleset {
    let c = compile(w).unwrap();
    ruleset(&c, w, local)
}

#[test]
fn an_isolated_pod_gets_a_chain_its_address_jumps_to_and_a_drop_counter_at_the_end() {
    let mut w = model();
    w.policies.push(allow_b_to_a());
    let r = rules_for(&w, &[local_a()]);
    let chain = r.chain_of("x/a", Direction::Ingress).unwrap();
    assert!(r.chain_of("x/a", Direction::Egress).is_none());
    assert_eq!(r.maps[INGRESS4_MAP].get("10.100.0.10"), Some(&chain));
    assert!(r.maps[EGRESS_MAP].is_empty());
    let body = &r.chains[&chain];
    assert!(
        body[0].starts_with("ip saddr @p4_")
            && body[0].ends_with("meta l4proto tcp th dport 80 return")
    );
    assert_eq!(
        body.last().unwrap(),
        &format!("counter name \"drop_{chain}\" drop")
    );
    let set = body[0]
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_start_matches('@');
    let members: Vec<&str> = r.sets[set].elements.iter().map(String::as_str).collect();
    assert_eq!(members, ["10.100.0.11"], "x/b is the only pod=b of x");
}

#[test]
fn a_peer_pod_appearing_changes_set_elements_only() {
    let mut w = model();
    w.policies.push(allow_b_to_a());
    let before = rules_for(&w, &[local_a()]);
    w.pods.push(Pod {
        namespace: "x".into(),
        name: "b2".into(),
        labels: BTreeMap::from([("pod".into(), "b".into())]),
        ips: vec![IpAddr::V4(Ipv4Addr::new(10, 100, 0, 99))],
        ..Default::default()
    });
    let after = rules_for(&w, &[local_a()]);
    let script = update_script(&before, &after).unwrap();
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines.len(), 1, "{script}");
    assert!(
        lines[0].starts_with("add element inet terway_policy p4_")
            && lines[0].ends_with("{ 10.100.0.99 }"),
        "{script}"
    );
    assert!(update_script(&after, &after).is_none());
    let back = update_script(&after, &before).unwrap();
    assert!(
        back.starts_with("delete element inet terway_policy p4_") && back.lines().count() == 1,
        "{back}"
    );
}

#[test]
fn a_pod_leaving_unhooks_its_chain_before_deleting_it() {
    let mut w = model();
    w.policies.push(allow_b_to_a());
    let before = rules_for(&w, &[local_a()]);
    let after = rules_for(&w, &[]);
    let script = update_script(&before, &after).unwrap();
    let chain = before.chain_of("x/a", Direction::Ingress).unwrap();
    let pos = |needle: &str| {
        script
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} in {script}"))
    };
    let unhook = pos("delete element inet terway_policy ingress4 { 10.100.0.10 }");
    let flush = pos(&format!("flush chain inet terway_policy {chain}"));
    let delete = pos(&format!("delete chain inet terway_policy {chain}"));
    let counter = pos(&format!("delete counter inet terway_policy drop_{chain}"));
    let set = pos("delete set inet terway_policy p4_");
    assert!(
        unhook < flush && flush < delete && delete < counter && delete < set,
        "{script}"
    );
}

#[test]
fn a_policy_change_rewrites_the_chain_in_place() {
    let mut w = model();
    w.policies.push(allow_b_to_a());
    let before = rules_for(&w, &[local_a()]);
    if let Some(spec) = w.policies[0].spec.as_mut() {
        if let Some(rule) = spec.ingress.as_mut().and_then(|r| r.first_mut()) {
            rule.ports = None;
        }
    }
    let after = rules_for(&w, &[local_a()]);
    let chain = before.chain_of("x/a", Direction::Ingress).unwrap();
    let script = update_script(&before, &after).unwrap();
    assert!(
        script.starts_with(&format!("flush chain inet terway_policy {chain}\n")),
        "{script}"
    );
    assert!(
        !script.contains("add chain") && !script.contains("ingress4"),
        "{script}"
    );
}

#[test]
fn egress_is_keyed_by_the_host_interface_and_named_ports_by_destination_address_and_port() {
    let mut w = model();
    w.policies.push(policy(
        "egress-named",
        NetworkPolicySpec {
            pod_selector: Some(labels("pod", "a")),
            egress: Some(vec![NetworkPolicyEgressRule {
                to: None,
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::String("serve-81-udp".into())),
                    protocol: Some("UDP".into()),
                    ..Default::default()
                }]),
            }]),
            policy_types: Some(vec!["Egress".into()]),
            ..Default::default()
        },
    ));
    let r = rules_for(&w, &[local_a()]);
    let chain = r.chain_of("x/a", Direction::Egress).unwrap();
    assert_eq!(r.maps[EGRESS_MAP].get("\"cali0000000000a\""), Some(&chain));
    let body = &r.chains[&chain];
    assert_eq!(body.len(), 3, "one rule per family and the drop: {body:?}");
    assert!(
        body[0].starts_with("meta l4proto udp ip daddr . th dport @n4_udp_"),
        "{body:?}"
    );
    let set = body[0]
        .split('@')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        r.sets[set].elements.len(),
        9,
        "every model pod serves 81/udp"
    );
    assert!(r.sets[set].elements.contains("10.100.2.12 . 81"));
}

#[test]
fn the_full_script_replaces_the_table_in_one_go() {
    let mut w = model();
    w.policies.push(allow_b_to_a());
    let s = full_script(&rules_for(&w, &[local_a()]));
    assert!(s.starts_with("table inet terway_policy {}\ndelete table inet terway_policy\n"));
    assert!(s.contains("type filter hook forward priority filter; policy accept;"));
    assert!(s.contains("add element inet terway_policy ingress4 { 10.100.0.10 : jump in_"));
    assert_eq!(
        full_script(&NodeRuleset::default()).matches("add ").count(),
        0
    );
}

#[test]
fn an_interval_set_loses_its_old_ranges_before_it_gains_overlapping_ones() {
    use k8s_openapi::api::networking::v1::IPBlock;
    let block = |cidr: &str| {
        policy(
            "block",
            NetworkPolicySpec {
                pod_selector: Some(labels("pod", "a")),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: cidr.into(),
                            except: None,
                        }),
                        ..Default::default()
                    }]),
                    ports: None,
                }]),
                ..Default::default()
            },
        )
    };
    let mut w = model();
    w.policies.push(block("192.168.7.0/24"));
    let before = rules_for(&w, &[local_a()]);
    w.policies[0] = block("0.0.0.0/0");
    let after = rules_for(&w, &[local_a()]);
    let script = update_script(&before, &after).unwrap();
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines.len(), 2, "{script}");
    assert!(
        lines[0].starts_with("delete element")
            && lines[0].ends_with("{ 192.168.7.0-192.168.7.255 }")
    );
    assert!(
        lines[1].starts_with("add element") && lines[1].ends_with("{ 0.0.0.0-255.255.255.255 }")
    );
}
