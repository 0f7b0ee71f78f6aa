//! `terway-cli policy NAMESPACE/NAME`: which NetworkPolicies select a pod and what they let in and out, as
//! this node's terwayd compiled them, with the pod's nftables chains and drop counters.

use std::fmt::Write;

use serde_json::{json, Value};
use terway_rpc::v1 as pb;

fn direction_json(d: &Option<pb::PolicyDirection>) -> Value {
    let d = d.clone().unwrap_or_default();
    json!({
        "isolated": d.isolated,
        "chain": d.chain,
        "dropped_packets": d.dropped_packets,
        "rules": d.rules.iter().map(|r| json!({
            "policy": r.policy, "index": r.index, "peers": r.peers, "ports": r.ports,
            "tier": r.tier, "action": r.action,
        })).collect::<Vec<_>>(),
    })
}

/// The reply as JSON.
pub fn to_json(pod: &str, r: &pb::PolicyReply) -> Value {
    json!({
        "pod": pod,
        "enforced": r.enforced,
        "local": r.local,
        "selected_by": r.selected_by,
        "ingress": direction_json(&r.ingress),
        "egress": direction_json(&r.egress),
        "note": r.note,
    })
}

fn render_direction(s: &mut String, name: &str, verb: &str, d: &Option<pb::PolicyDirection>) {
    let d = d.clone().unwrap_or_default();
    if !d.isolated && d.rules.is_empty() {
        let _ = writeln!(
            s,
            "{name}: not isolated (no policy of type {name} selects the pod): everything {verb}"
        );
        return;
    }
    let chain = if d.chain.is_empty() {
        String::new()
    } else {
        format!(", chain {}, {} packets dropped", d.chain, d.dropped_packets)
    };
    if d.isolated {
        let _ = writeln!(s, "{name}: isolated{chain}");
    } else {
        let _ = writeln!(
            s,
            "{name}: no NetworkPolicy isolates it; cluster policies decide first, then everything {verb}{chain}"
        );
    }
    if d.isolated && !d.rules.iter().any(|r| r.tier == "NetworkPolicy") {
        let _ = writeln!(s, "  nothing is allowed by NetworkPolicy");
    }
    for r in &d.rules {
        if r.tier == "NetworkPolicy" || r.tier.is_empty() {
            let _ = writeln!(
                s,
                "  {} rule {}: {} on {}",
                r.policy, r.index, r.peers, r.ports
            );
        } else {
            let _ = writeln!(
                s,
                "  {} {} rule {} {}: {} on {}",
                r.tier, r.policy, r.index, r.action, r.peers, r.ports
            );
        }
    }
}

/// The reply as text.
pub fn render(pod: &str, r: &pb::PolicyReply) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pod {pod}");
    if !r.note.is_empty() {
        let _ = writeln!(s, "note: {}", r.note);
    }
    if !r.enforced || (r.ingress.is_none() && r.egress.is_none()) {
        return s;
    }
    if r.selected_by.is_empty() {
        let _ = writeln!(s, "selected by no NetworkPolicy");
    } else {
        let _ = writeln!(s, "selected by: {}", r.selected_by.join(", "));
    }
    render_direction(&mut s, "Ingress", "may reach it", &r.ingress);
    render_direction(&mut s, "Egress", "it sends may leave", &r.egress);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_isolated_pod_shows_its_rules_chain_and_drops() {
        let r = pb::PolicyReply {
            enforced: true,
            local: true,
            selected_by: vec!["x/deny".into(), "x/allow-b".into()],
            ingress: Some(pb::PolicyDirection {
                isolated: true,
                rules: vec![pb::PolicyRule {
                    policy: "x/allow-b".into(),
                    index: 0,
                    peers: "pods 10.0.0.3".into(),
                    ports: "TCP 80".into(),
                    tier: "NetworkPolicy".into(),
                    action: "Allow".into(),
                }],
                chain: "in_0123".into(),
                dropped_packets: 4,
            }),
            egress: Some(pb::PolicyDirection::default()),
            note: String::new(),
        };
        let text = render("x/a", &r);
        assert!(text.contains("selected by: x/deny, x/allow-b"), "{text}");
        assert!(
            text.contains("Ingress: isolated, chain in_0123, 4 packets dropped"),
            "{text}"
        );
        assert!(
            text.contains("x/allow-b rule 0: pods 10.0.0.3 on TCP 80"),
            "{text}"
        );
        assert!(text.contains("Egress: not isolated"), "{text}");
        assert_eq!(to_json("x/a", &r)["ingress"]["dropped_packets"], 4);
    }

    #[test]
    fn cluster_policy_rules_read_in_evaluation_order_with_their_tier_and_action() {
        let rule = |tier: &str, policy: &str, action: &str| pb::PolicyRule {
            policy: policy.into(),
            index: 0,
            peers: "pods 10.0.1.2".into(),
            ports: "all ports".into(),
            tier: tier.into(),
            action: action.into(),
        };
        let r = pb::PolicyReply {
            enforced: true,
            local: true,
            selected_by: vec!["ClusterNetworkPolicy/deny-y".into()],
            ingress: Some(pb::PolicyDirection {
                isolated: false,
                rules: vec![
                    rule("Admin", "ClusterNetworkPolicy/deny-y", "Deny"),
                    rule("Baseline", "ClusterNetworkPolicy/base", "Pass"),
                ],
                chain: "in_42".into(),
                dropped_packets: 1,
            }),
            egress: None,
            note: String::new(),
        };
        let text = render("x/a", &r);
        assert!(
            text.contains("Ingress: no NetworkPolicy isolates it; cluster policies decide first"),
            "{text}"
        );
        let admin = text
            .find("Admin ClusterNetworkPolicy/deny-y rule 0 Deny: pods 10.0.1.2 on all ports")
            .expect("the Admin rule");
        let base = text
            .find("Baseline ClusterNetworkPolicy/base rule 0 Pass")
            .expect("the Baseline rule");
        assert!(admin < base, "{text}");
        assert_eq!(to_json("x/a", &r)["ingress"]["rules"][0]["tier"], "Admin");
    }
}
