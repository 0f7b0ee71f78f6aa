//! Compiled rules in words, for `terway-cli policy`: who a rule admits as resolved now, and on which ports.

use crate::compile::{PeerMatch, PortMatch};

/// How many addresses a description lists before it only counts the rest.
const LISTED: usize = 10;

/// The peers a rule admits.
pub fn peers(p: &PeerMatch) -> String {
    let PeerMatch::Set { ips, blocks } = p else {
        return "any peer".into();
    };
    let mut parts = Vec::new();
    if !ips.is_empty() {
        let shown: Vec<String> = ips.iter().take(LISTED).map(|ip| ip.to_string()).collect();
        let more = ips.len().saturating_sub(LISTED);
        parts.push(if more > 0 {
            format!("pods {} and {more} more", shown.join(", "))
        } else {
            format!("pods {}", shown.join(", "))
        });
    }
    for (cidr, except) in blocks {
        if except.is_empty() {
            parts.push(cidr.to_string());
        } else {
            let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
            parts.push(format!("{cidr} except {}", ex.join(", ")));
        }
    }
    if parts.is_empty() {
        "no peer (its selectors match no pod now)".into()
    } else {
        parts.join("; ")
    }
}

/// The ports a rule admits.
pub fn ports(p: &Option<Vec<PortMatch>>) -> String {
    let Some(list) = p else {
        return "all ports".into();
    };
    if list.is_empty() {
        return "no port (the named ports it lists are not the pod's)".into();
    }
    list.iter()
        .map(|m| match m {
            PortMatch::AllOf(proto) => format!("{proto} all"),
            PortMatch::Range { proto, lo, hi } if lo == hi => format!("{proto} {lo}"),
            PortMatch::Range { proto, lo, hi } => format!("{proto} {lo}-{hi}"),
            PortMatch::Named { proto, name } => format!("{proto} named {name:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;
    use std::collections::BTreeSet;

    #[test]
    fn rules_read_as_what_they_admit() {
        assert_eq!(peers(&PeerMatch::Any), "any peer");
        let set = PeerMatch::Set {
            ips: BTreeSet::from(["10.0.0.2".parse().unwrap()]),
            blocks: vec![(
                "10.1.0.0/16".parse().unwrap(),
                vec!["10.1.2.0/24".parse().unwrap()],
            )],
        };
        assert_eq!(peers(&set), "pods 10.0.0.2; 10.1.0.0/16 except 10.1.2.0/24");
        let none = PeerMatch::Set {
            ips: BTreeSet::new(),
            blocks: vec![],
        };
        assert!(peers(&none).starts_with("no peer"));
        let p = Some(vec![
            PortMatch::Range {
                proto: Proto::Tcp,
                lo: 80,
                hi: 80,
            },
            PortMatch::Range {
                proto: Proto::Udp,
                lo: 81,
                hi: 90,
            },
            PortMatch::Named {
                proto: Proto::Tcp,
                name: "web".into(),
            },
            PortMatch::AllOf(Proto::Sctp),
        ]);
        assert_eq!(ports(&p), "TCP 80, UDP 81-90, TCP named \"web\", SCTP all");
        assert_eq!(ports(&None), "all ports");
        assert!(ports(&Some(vec![])).starts_with("no port"));
    }
}
