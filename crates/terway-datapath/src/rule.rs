//! Policy routing rules: ensure (add if not already present), list, and delete by match.

use ipnet::IpNet;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::nl::{tolerate, Netlink, ACK, CREATE_EXCL, EEXIST, ENOENT};

/// An `ip rule` as we program it: match on from/to/iif/oif, then `lookup table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Rule priority (`pref`).
    pub priority: u32,
    /// IPv4 (`true`) or IPv6 rule.
    pub v4: bool,
    /// `from` prefix.
    pub src: Option<IpNet>,
    /// `to` prefix.
    pub dst: Option<IpNet>,
    /// `iif` name.
    pub iif: Option<String>,
    /// `oif` name.
    pub oif: Option<String>,
    /// `fwmark mark/mask`.
    pub fwmark: Option<(u32, u32)>,
    /// Table looked up.
    pub table: u32,
}

impl Rule {
    /// `pref priority from src lookup table`.
    pub fn from_src(priority: u32, src: IpNet, table: u32) -> Self {
        Rule {
            priority,
            v4: src.addr().is_ipv4(),
            src: Some(src),
            dst: None,
            iif: None,
            oif: None,
            fwmark: None,
            table,
        }
    }

    /// `pref priority to dst lookup table`.
    pub fn to_dst(priority: u32, dst: IpNet, table: u32) -> Self {
        Rule {
            priority,
            v4: dst.addr().is_ipv4(),
            src: None,
            dst: Some(dst),
            iif: None,
            oif: None,
            fwmark: None,
            table,
        }
    }

    /// `pref priority fwmark mark/mask lookup table`.
    pub fn fwmark(priority: u32, v4: bool, mark: u32, mask: u32, table: u32) -> Self {
        Rule {
            priority,
            v4,
            src: None,
            dst: None,
            iif: None,
            oif: None,
            fwmark: Some((mark, mask)),
            table,
        }
    }

    fn message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = if self.v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.action = RuleAction::ToTable;
        if self.table < 256 {
            m.header.table = self.table as u8;
        }
        m.attributes.push(RuleAttribute::Table(self.table));
        m.attributes.push(RuleAttribute::Priority(self.priority));
        if let Some(s) = self.src {
            m.header.src_len = s.prefix_len();
            m.attributes.push(RuleAttribute::Source(s.addr()));
        }
        if let Some(d) = self.dst {
            m.header.dst_len = d.prefix_len();
            m.attributes.push(RuleAttribute::Destination(d.addr()));
        }
        if let Some(i) = &self.iif {
            m.attributes.push(RuleAttribute::Iifname(i.clone()));
        }
        if let Some(o) = &self.oif {
            m.attributes.push(RuleAttribute::Oifname(o.clone()));
        }
        if let Some((mark, mask)) = self.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
            m.attributes.push(RuleAttribute::FwMask(mask));
        }
        m
    }

    fn from_message(m: &RuleMessage) -> Option<Self> {
        let mut r = Rule {
            priority: 0,
            v4: m.header.family == AddressFamily::Inet,
            src: None,
            dst: None,
            iif: None,
            oif: None,
            fwmark: None,
            table: m.header.table as u32,
        };
        if m.header.action != RuleAction::ToTable {
            return None;
        }
        for a in &m.attributes {
            match a {
                RuleAttribute::Priority(p) => r.priority = *p,
                RuleAttribute::Table(t) => r.table = *t,
                RuleAttribute::Source(s) => r.src = IpNet::new(*s, m.header.src_len).ok(),
                RuleAttribute::Destination(d) => r.dst = IpNet::new(*d, m.header.dst_len).ok(),
                RuleAttribute::Iifname(i) => r.iif = Some(i.clone()),
                RuleAttribute::Oifname(o) => r.oif = Some(o.clone()),
                RuleAttribute::FwMark(v) => {
                    r.fwmark = Some((*v, r.fwmark.map_or(u32::MAX, |(_, mask)| mask)))
                }
                RuleAttribute::FwMask(v) => r.fwmark = Some((r.fwmark.map_or(0, |(m, _)| m), *v)),
                _ => {}
            }
        }
        Some(r)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.priority)?;
        if let Some(s) = self.src {
            write!(f, " from {s}")?;
        }
        if let Some(d) = self.dst {
            write!(f, " to {d}")?;
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " oif {o}")?;
        }
        if let Some((mark, mask)) = self.fwmark {
            write!(f, " fwmark {mark:#x}/{mask:#x}")?;
        }
        write!(f, " lookup {}", self.table)
    }
}

/// Every `lookup` rule of one family.
pub async fn list_rules(nl: &Netlink, v4: bool) -> Result<Vec<Rule>> {
    let mut q = RuleMessage::default();
    q.header.family = if v4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let msgs = nl
        .dump(RouteNetlinkMessage::GetRule(q), || "list rules".into())
        .await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRule(r) => Rule::from_message(r),
            _ => None,
        })
        .collect())
}

/// Add `rule` unless an identical rule exists. The kernel keeps duplicate rules only for a request without
/// `NLM_F_EXCL`; with it, it compares the new rule against the existing ones itself and answers EEXIST, so
/// this is one round trip, not a dump of every pod's rules followed by the add.
pub async fn ensure_rule(nl: &Netlink, rule: &Rule) -> Result<()> {
    let r = nl
        .execute(
            RouteNetlinkMessage::NewRule(rule.message()),
            CREATE_EXCL,
            || format!("add rule {rule}"),
        )
        .await;
    tolerate(r, &[EEXIST])
}

/// Delete exactly `rule` (every duplicate of it); absent is fine.
pub async fn remove_rule(nl: &Netlink, rule: &Rule) -> Result<()> {
    remove_rules_where(nl, rule.v4, |r| r == rule)
        .await
        .map(|_| ())
}

/// Delete every rule of the family for which `pred` holds; returns how many were deleted.
pub async fn remove_rules_where(
    nl: &Netlink,
    v4: bool,
    pred: impl Fn(&Rule) -> bool,
) -> Result<usize> {
    let mut n = 0;
    for r in list_rules(nl, v4).await?.into_iter().filter(|r| pred(r)) {
        let res = nl
            .execute(RouteNetlinkMessage::DelRule(r.message()), ACK, || {
                format!("delete rule {r}")
            })
            .await;
        tolerate(res, &[ENOENT])?;
        n += 1;
    }
    Ok(n)
}
