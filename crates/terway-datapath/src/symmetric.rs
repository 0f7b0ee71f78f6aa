//! Symmetric routing for connections that enter the node through its primary interface and are forwarded to a
//! pod (hostPort, NodePort: a DNAT in the node).
//!
//! The pod's reply leaves the pod with the pod's address as source, so rule `2048: from <pod ip>` sends it
//! to the pod's secondary ENI; the DNAT is undone only after routing, in POSTROUTING, and the reply leaves
//! that ENI with the node's primary address — which the VPC's anti-spoofing drops, because the address
//! belongs to the primary ENI. The fix marks such connections when their first packet arrives on the primary
//! interface, copies the mark onto every later packet of the connection that arrives from elsewhere (the
//! pod's replies), and routes marked packets with the main table (the node's own route out of the primary
//! interface) ahead of 2048.
//!
//! The marking is one nftables table, replaced in one `nft -f` transaction; the rule is an `ip rule`.

use std::net::IpAddr;

use crate::addr;
use crate::error::{Error, Result};
use crate::link::{self, Link};
use crate::netns::Netns;
use crate::nft;
use crate::nl::Netlink;
use crate::route::MAIN_TABLE;
use crate::rule::{self, Rule};

/// nftables table (family inet) holding the marking chain.
pub const TABLE: &str = "terway_symmetric";
/// The connection/packet mark bit, Terway's default.
pub const DEFAULT_MARK: u32 = 0x10;
/// Priority of `fwmark MARK/MARK lookup main`: after 512 (to pod), before 2048 (from pod).
pub const DEFAULT_PRIORITY: u32 = 600;

/// What to program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymmetricRouting {
    /// The node's primary interface (where connections to the node's address arrive).
    pub iface: String,
    /// Mark bit (also the mask).
    pub mark: u32,
    /// `ip rule` priority.
    pub priority: u32,
}

impl SymmetricRouting {
    /// Terway's defaults on `iface`.
    pub fn on(iface: impl Into<String>) -> Self {
        SymmetricRouting {
            iface: iface.into(),
            mark: DEFAULT_MARK,
            priority: DEFAULT_PRIORITY,
        }
    }

    /// The nftables script: (re)create the table with exactly these chains, atomically.
    pub fn ruleset(&self) -> String {
        let (iface, mark) = (&self.iface, self.mark);
        // Mangle priority, before conntrack's NAT: the mark must be on the packet before routing.
        format!(
            "table inet {TABLE} {{}}\n\
             delete table inet {TABLE}\n\
             table inet {TABLE} {{\n\
             \tchain prerouting {{\n\
             \t\ttype filter hook prerouting priority mangle; policy accept;\n\
             \t\tiifname \"{iface}\" ct state new ct mark set ct mark | {mark:#x}\n\
             \t\tiifname != \"{iface}\" ct mark & {mark:#x} == {mark:#x} meta mark set meta mark | {mark:#x}\n\
             \t}}\n\
             }}\n"
        )
    }

    /// The routing rule for marked packets.
    pub fn rule(&self) -> Rule {
        Rule::fwmark(self.priority, true, self.mark, self.mark, MAIN_TABLE)
    }
}

/// The node's primary interface: the link holding `node_ip` with the shortest prefix. The shared-ENI
/// datapath puts the node address on every secondary ENI too, but as a /32; the primary holds it with its
/// vSwitch's prefix.
pub async fn primary_interface(nl: &Netlink, node_ip: IpAddr) -> Result<Link> {
    let holder = addr::list_addrs(nl, None)
        .await?
        .into_iter()
        .filter(|a| a.net.addr() == node_ip)
        .min_by_key(|a| a.net.prefix_len())
        .ok_or_else(|| {
            Error::LinkNotFound(format!(
                "no interface in {} holds the node address {node_ip}",
                nl.namespace()
            ))
        })?;
    link::link_by_index(nl, holder.index)
        .await?
        .ok_or_else(|| Error::LinkNotFound(format!("interface {} (holds {node_ip})", holder.index)))
}

/// Program the marking table and the rule in `netns` (idempotent: the table is replaced, the rule ensured).
pub async fn ensure(netns: &Netns, nl: &Netlink, cfg: &SymmetricRouting) -> Result<()> {
    nft::apply(netns, &cfg.ruleset(), WHAT)?;
    // A rule of ours with another mark (an earlier terwayd's) must not linger beside the wanted one.
    let wanted = cfg.rule();
    rule::remove_rules_where(nl, true, |r| is_ours(r) && *r != wanted).await?;
    rule::ensure_rule(nl, &wanted).await
}

/// Remove the table and the rule (symmetric routing turned off); absent is fine.
pub async fn remove(netns: &Netns, nl: &Netlink) -> Result<()> {
    nft::apply(
        netns,
        &format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"),
        WHAT,
    )?;
    rule::remove_rules_where(nl, true, is_ours).await?;
    Ok(())
}

/// Whether the marking table is present in `netns`.
pub fn table_present(netns: &Netns) -> Result<bool> {
    Ok(nft::query(netns, &["list", "table", "inet", TABLE], WHAT)?.is_some())
}

/// The rules this module makes: an fwmark rule at our priority that looks up the main table.
fn is_ours(r: &Rule) -> bool {
    r.priority == DEFAULT_PRIORITY
        && r.table == MAIN_TABLE
        && r.fwmark.is_some()
        && r.src.is_none()
        && r.dst.is_none()
}

/// What the table is for, in nft's error messages; the fix, if nft is missing, is in them too.
const WHAT: &str = "symmetric routing (or set \"symmetric_routing\": false in eni_conf)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_replaces_the_table_and_marks_only_primary_arrivals() {
        let s = SymmetricRouting::on("eth0").ruleset();
        assert!(
            s.starts_with("table inet terway_symmetric {}\ndelete table inet terway_symmetric\n")
        );
        assert!(s.contains("iifname \"eth0\" ct state new ct mark set ct mark | 0x10"));
        assert!(
            s.contains("iifname != \"eth0\" ct mark & 0x10 == 0x10 meta mark set meta mark | 0x10")
        );
        assert!(s.contains("priority mangle"));
    }

    #[test]
    fn rule_sits_between_the_pod_rules() {
        let r = SymmetricRouting::on("eth0").rule();
        assert_eq!(r.to_string(), "600: fwmark 0x10/0x10 lookup 254");
        assert!(
            r.priority > crate::driver::TO_CONTAINER_PRIORITY
                && r.priority < crate::driver::FROM_CONTAINER_PRIORITY
        );
    }
}
