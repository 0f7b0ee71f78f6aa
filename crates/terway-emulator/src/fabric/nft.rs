//! The VPC's packet filters in the vpc netns, as a real VPC applies them: anti-spoofing (a packet that
//! enters the router from an ENI with a source address the ENI does not own is dropped) and security
//! groups (what may be forwarded to an ENI). The whole table is rewritten in one `nft -f` transaction per
//! update (add + delete + re-create), so there is never a moment without the rules or with half of them.

use std::fmt::Write;

use super::topology::{SgChain, SpoofRule};

/// Family and name of the fabric's table inside the vpc netns.
pub const TABLE_FAMILY: &str = "ip";
/// Name of the fabric's table inside the vpc netns.
pub const TABLE_NAME: &str = "terway_fabric";

/// Render the complete, atomic ruleset script for the given rules.
pub fn render(rules: &[SpoofRule], groups: &[SgChain]) -> String {
    let mut s = String::new();
    // `add` makes the following `delete` valid on the first run; all three run as one transaction.
    let _ = writeln!(s, "add table {TABLE_FAMILY} {TABLE_NAME}");
    let _ = writeln!(s, "delete table {TABLE_FAMILY} {TABLE_NAME}");
    let _ = writeln!(s, "table {TABLE_FAMILY} {TABLE_NAME} {{");
    let _ = writeln!(s, "  chain antispoof {{");
    let _ = writeln!(
        s,
        "    type filter hook prerouting priority raw; policy accept;"
    );
    for rule in rules {
        let set: Vec<String> = rule
            .allowed
            .iter()
            .map(|n| {
                if n.prefix_len() == 32 {
                    n.addr().to_string()
                } else {
                    n.to_string()
                }
            })
            .collect();
        // An ENI always owns its primary IP; an empty set would be a syntax error, so drop everything then.
        if set.is_empty() {
            let _ = writeln!(
                s,
                "    iifname \"{}\" counter drop comment \"{}\"",
                rule.ifname, rule.eni_id
            );
        } else {
            let _ = writeln!(
                s,
                "    iifname \"{}\" ip saddr != {{ {} }} counter drop comment \"{}\"",
                rule.ifname,
                set.join(", "),
                rule.eni_id
            );
        }
    }
    let _ = writeln!(s, "  }}");
    // Security groups filter what is forwarded to an ENI; replies to what it sent always pass.
    let _ = writeln!(s, "  chain secgroups {{");
    let _ = writeln!(
        s,
        "    type filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(s, "    ct state established,related accept");
    for (i, g) in groups.iter().enumerate() {
        let _ = writeln!(
            s,
            "    oifname \"{}\" jump sg{i} comment \"{}\"",
            g.ifname, g.eni_id
        );
    }
    let _ = writeln!(s, "  }}");
    for (i, g) in groups.iter().enumerate() {
        let _ = writeln!(s, "  chain sg{i} {{");
        for r in &g.rules {
            let _ = writeln!(s, "    {r}");
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    s
}

/// Sum of the packets counted by the drop rules in an `nft list table` output (spoofed packets dropped).
pub fn dropped_packets(listing: &str) -> u64 {
    // Only the anti-spoofing chain's drops: a security group's are a tenant's choice, not spoofing.
    let mut inside = false;
    listing
        .lines()
        .filter(|l| {
            let t = l.trim();
            if t.starts_with("chain ") {
                inside = t.starts_with("chain antispoof");
            }
            inside
        })
        .filter(|l| l.contains(" drop"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.by_ref().find(|w| *w == "packets")?;
            words.next()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_transaction_with_a_rule_per_eni() {
        let rules = vec![
            SpoofRule {
                ifname: "eni1".into(),
                eni_id: "eni-a".into(),
                allowed: vec![
                    "10.0.0.4/32".parse().unwrap(),
                    "172.20.1.0/24".parse().unwrap(),
                ],
            },
            SpoofRule {
                ifname: "eni2".into(),
                eni_id: "eni-b".into(),
                allowed: vec!["10.0.0.9/32".parse().unwrap()],
            },
        ];
        let groups = vec![SgChain {
            ifname: "eni2".into(),
            eni_id: "eni-b".into(),
            rules: vec!["tcp dport 80 counter drop".into(), "counter drop".into()],
        }];
        let s = render(&rules, &groups);
        assert!(s.contains("hook forward priority filter"), "{s}");
        assert!(s.contains("ct state established,related accept"), "{s}");
        assert!(
            s.contains("oifname \"eni2\" jump sg0 comment \"eni-b\""),
            "{s}"
        );
        assert!(
            s.contains("  chain sg0 {\n    tcp dport 80 counter drop\n    counter drop\n  }"),
            "{s}"
        );
        assert!(s.starts_with("add table ip terway_fabric\ndelete table ip terway_fabric\n"));
        assert!(s.contains("iifname \"eni1\" ip saddr != { 10.0.0.4, 172.20.1.0/24 } counter drop comment \"eni-a\""));
        assert!(
            s.contains("iifname \"eni2\" ip saddr != { 10.0.0.9 } counter drop comment \"eni-b\"")
        );
        assert!(s.contains("hook prerouting priority raw"));
    }

    #[test]
    fn counts_dropped_packets_from_listing() {
        let listing = "table ip terway_fabric {\n chain antispoof {\n  iifname \"eni1\" ip saddr != { 10.0.0.4 } counter packets 3 bytes 252 drop comment \"eni-a\"\n  iifname \"eni2\" ip saddr != { 10.0.0.9 } counter packets 2 bytes 100 drop comment \"eni-b\"\n }\n chain sg0 {\n  tcp dport 80 counter packets 7 bytes 420 drop\n }\n}\n";
        assert_eq!(dropped_packets(listing), 5);
    }
}
