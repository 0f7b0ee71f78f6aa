//! Anti-spoofing in the vpc netns, as a real VPC does it: a packet that enters the router from an ENI with a
//! source address the ENI does not own is dropped. The whole table is rewritten in one `nft -f` transaction
//! per update (add + delete + re-create), so there is never a moment without the rules or with half of them.

use std::fmt::Write;

use super::topology::SpoofRule;

/// Family and name of the fabric's table inside the vpc netns.
pub const TABLE_FAMILY: &str = "ip";
/// Name of the fabric's table inside the vpc netns.
pub const TABLE_NAME: &str = "terway_fabric";

/// Render the complete, atomic ruleset script for the given rules.
pub fn render(rules: &[SpoofRule]) -> String {
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
    let _ = writeln!(s, "}}");
    s
}

/// Sum of the packets counted by the drop rules in an `nft list table` output (spoofed packets dropped).
pub fn dropped_packets(listing: &str) -> u64 {
    listing
        .lines()
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
        let s = render(&rules);
        assert!(s.starts_with("add table ip terway_fabric\ndelete table ip terway_fabric\n"));
        assert!(s.contains("iifname \"eni1\" ip saddr != { 10.0.0.4, 172.20.1.0/24 } counter drop comment \"eni-a\""));
        assert!(
            s.contains("iifname \"eni2\" ip saddr != { 10.0.0.9 } counter drop comment \"eni-b\"")
        );
        assert!(s.contains("hook prerouting priority raw"));
    }

    #[test]
    fn counts_dropped_packets_from_listing() {
        let listing = "table ip terway_fabric {\n chain antispoof {\n  iifname \"eni1\" ip saddr != { 10.0.0.4 } counter packets 3 bytes 252 drop comment \"eni-a\"\n  iifname \"eni2\" ip saddr != { 10.0.0.9 } counter packets 2 bytes 100 drop comment \"eni-b\"\n }\n}\n";
        assert_eq!(dropped_packets(listing), 5);
    }
}
