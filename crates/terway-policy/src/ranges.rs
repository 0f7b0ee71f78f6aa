//! ipBlocks as disjoint address ranges: `cidr` minus its `except`s, unions of several blocks merged, per
//! address family — the form an interval set holds (one that rejects overlapping elements).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An inclusive range of addresses of one family, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    /// First address.
    pub lo: u128,
    /// Last address.
    pub hi: u128,
}

fn bounds(n: &IpNet) -> Range {
    match n {
        IpNet::V4(n) => Range {
            lo: u32::from(n.network()).into(),
            hi: u32::from(n.broadcast()).into(),
        },
        IpNet::V6(n) => Range {
            lo: u128::from(n.network()),
            hi: u128::from(n.broadcast()),
        },
    }
}

/// `r` minus `cut`: nothing, one range or two.
fn subtract(r: Range, cut: Range) -> Vec<Range> {
    if cut.hi < r.lo || cut.lo > r.hi {
        return vec![r];
    }
    let mut out = Vec::new();
    if cut.lo > r.lo {
        out.push(Range {
            lo: r.lo,
            hi: cut.lo - 1,
        });
    }
    if cut.hi < r.hi {
        out.push(Range {
            lo: cut.hi + 1,
            hi: r.hi,
        });
    }
    out
}

/// The addresses of `blocks` of family `v6` (each a CIDR and its exceptions), as sorted disjoint ranges
/// with no two adjacent.
pub fn block_ranges(blocks: &[(IpNet, Vec<IpNet>)], v6: bool) -> Vec<Range> {
    let mut all: Vec<Range> = Vec::new();
    for (cidr, except) in blocks.iter().filter(|(c, _)| c.addr().is_ipv6() == v6) {
        let mut parts = vec![bounds(cidr)];
        for e in except.iter().filter(|e| e.addr().is_ipv6() == v6) {
            let cut = bounds(e);
            parts = parts.into_iter().flat_map(|p| subtract(p, cut)).collect();
        }
        all.extend(parts);
    }
    all.sort();
    let mut merged: Vec<Range> = Vec::with_capacity(all.len());
    for r in all {
        match merged.last_mut() {
            Some(last) if r.lo <= last.hi.saturating_add(1) => last.hi = last.hi.max(r.hi),
            _ => merged.push(r),
        }
    }
    merged
}

/// The address `n` of family `v6`.
pub fn addr(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        // Ranges of the IPv4 family are built from u32s, so this never truncates.
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn text(rs: &[Range], v6: bool) -> Vec<String> {
        rs.iter()
            .map(|r| format!("{}-{}", addr(r.lo, v6), addr(r.hi, v6)))
            .collect()
    }

    #[test]
    fn an_except_splits_its_block() {
        let r = block_ranges(&[(net("10.0.0.0/24"), vec![net("10.0.0.64/26")])], false);
        assert_eq!(
            text(&r, false),
            ["10.0.0.0-10.0.0.63", "10.0.0.128-10.0.0.255"]
        );
    }

    #[test]
    fn overlapping_and_adjacent_blocks_merge_and_families_stay_apart() {
        let blocks = [
            (net("10.0.0.0/25"), vec![]),
            (net("10.0.0.128/25"), vec![net("10.0.0.200/32")]),
            (net("10.0.0.0/24"), vec![net("10.0.0.0/32")]),
            (net("fd00::/127"), vec![]),
        ];
        assert_eq!(
            text(&block_ranges(&blocks, false), false),
            ["10.0.0.0-10.0.0.255"]
        );
        assert_eq!(text(&block_ranges(&blocks, true), true), ["fd00::-fd00::1"]);
    }

    #[test]
    fn an_except_covering_the_block_leaves_nothing() {
        let r = block_ranges(&[(net("10.1.0.0/16"), vec![net("10.0.0.0/8")])], false);
        assert!(r.is_empty());
        let r = block_ranges(&[(net("0.0.0.0/0"), vec![])], false);
        assert_eq!(text(&r, false), ["0.0.0.0-255.255.255.255"]);
    }
}
