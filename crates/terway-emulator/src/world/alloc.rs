//! Address allocation inside a vSwitch. Alibaba reserves the first address and the last three of
//! every vSwitch CIDR; the gateway is the third from last (x.x.x.253 in a /24), which is how Terway
//! derives it too. IPv4 is handed out lowest-free first; IPv6 at random inside the /64, like the
//! real cloud.

use std::net::{Ipv4Addr, Ipv6Addr};

use rand::Rng;

use super::model::VSwitch;
use crate::error::ApiError;

/// The vSwitch gateway: third address from the end of the CIDR.
pub fn gateway(vsw: &VSwitch) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(vsw.cidr.broadcast()).saturating_sub(2))
}

/// IPv6 gateway of a vSwitch: the first address after the prefix (`<prefix>::1`).
pub fn ipv6_gateway(vsw: &VSwitch) -> Option<Ipv6Addr> {
    vsw.ipv6_cidr
        .map(|n| Ipv6Addr::from(u128::from(n.network()) | 1))
}

fn usable_range(vsw: &VSwitch) -> (u32, u32) {
    let first = u32::from(vsw.cidr.network()).saturating_add(1);
    let last = u32::from(vsw.cidr.broadcast()).saturating_sub(3);
    (first, last)
}

/// Whether `ip` is an address the vSwitch may hand out.
pub fn is_usable(vsw: &VSwitch, ip: Ipv4Addr) -> bool {
    let (first, last) = usable_range(vsw);
    (first..=last).contains(&u32::from(ip))
}

/// Free IPv4 addresses left.
pub fn available(vsw: &VSwitch) -> u64 {
    let (first, last) = usable_range(vsw);
    let total = if last >= first {
        u64::from(last - first) + 1
    } else {
        0
    };
    total.saturating_sub(vsw.used_v4.len() as u64)
}

fn not_enough(vsw: &VSwitch) -> ApiError {
    ApiError::new(
        403,
        "InvalidVSwitchId.IpNotEnough",
        format!(
            "The specified vSwitch {} does not have enough IP addresses.",
            vsw.id
        ),
    )
}

/// Take `count` free IPv4 addresses (all or nothing).
pub fn take_v4(vsw: &mut VSwitch, count: usize) -> Result<Vec<Ipv4Addr>, ApiError> {
    if (available(vsw) as usize) < count {
        return Err(not_enough(vsw));
    }
    let (first, last) = usable_range(vsw);
    let mut out = Vec::with_capacity(count);
    for n in first..=last {
        if out.len() == count {
            break;
        }
        let ip = Ipv4Addr::from(n);
        if !vsw.used_v4.contains(&ip) {
            out.push(ip);
        }
    }
    if out.len() < count {
        return Err(not_enough(vsw));
    }
    vsw.used_v4.extend(out.iter().copied());
    Ok(out)
}

/// Take specific IPv4 addresses (all or nothing).
pub fn claim_v4(vsw: &mut VSwitch, ips: &[Ipv4Addr]) -> Result<(), ApiError> {
    for ip in ips {
        if !is_usable(vsw, *ip) {
            return Err(ApiError::new(
                400,
                "InvalidPrivateIpAddress.Mismatch",
                format!(
                    "The IP address {ip} is not a usable address of vSwitch {} ({}).",
                    vsw.id, vsw.cidr
                ),
            ));
        }
        if vsw.used_v4.contains(ip) || ips.iter().filter(|x| *x == ip).count() > 1 {
            return Err(ApiError::new(
                400,
                "InvalidPrivateIpAddress.Duplicated",
                format!(
                    "The IP address {ip} is already in use in vSwitch {}.",
                    vsw.id
                ),
            ));
        }
    }
    vsw.used_v4.extend(ips.iter().copied());
    Ok(())
}

/// Give IPv4 addresses back.
pub fn release_v4(vsw: &mut VSwitch, ips: &[Ipv4Addr]) {
    for ip in ips {
        vsw.used_v4.remove(ip);
    }
}

/// Take `count` random IPv6 addresses from the vSwitch's IPv6 CIDR.
pub fn take_v6(vsw: &mut VSwitch, count: usize) -> Result<Vec<Ipv6Addr>, ApiError> {
    let Some(net) = vsw.ipv6_cidr else {
        return Err(ApiError::new(
            403,
            "InvalidVSwitchId.Ipv6NotTurnOn",
            format!("The vSwitch {} has no IPv6 CIDR block.", vsw.id),
        ));
    };
    let host_bits = 128 - u32::from(net.prefix_len());
    let mask: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let base = u128::from(net.network());
    let mut rng = rand::rng();
    let mut out = Vec::with_capacity(count);
    let mut attempts = 0;
    while out.len() < count {
        attempts += 1;
        if attempts > 10_000 {
            return Err(not_enough(vsw));
        }
        let host = rng.random::<u128>() & mask;
        // Skip the low addresses (gateway and reserved ones) and the top of the range.
        if host < 16 || host == mask {
            continue;
        }
        let ip = Ipv6Addr::from(base | host);
        if !vsw.used_v6.contains(&ip) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    vsw.used_v6.extend(out.iter().copied());
    Ok(out)
}

/// Give IPv6 addresses back.
pub fn release_v6(vsw: &mut VSwitch, ips: &[Ipv6Addr]) {
    for ip in ips {
        vsw.used_v6.remove(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn vsw(cidr: &str) -> VSwitch {
        VSwitch {
            id: "vsw-t".into(),
            zone_id: "z".into(),
            cidr: cidr.parse().unwrap(),
            ipv6_cidr: Some("fd00:1::/64".parse().unwrap()),
            used_v4: BTreeSet::new(),
            used_v6: BTreeSet::new(),
        }
    }

    #[test]
    fn reserved_addresses_are_skipped_and_gateway_is_third_from_last() {
        let mut v = vsw("10.0.0.0/24");
        assert_eq!(gateway(&v), Ipv4Addr::new(10, 0, 0, 253));
        assert_eq!(available(&v), 252);
        let all = take_v4(&mut v, 252).unwrap();
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 0, 0, 252)));
        assert_eq!(
            take_v4(&mut v, 1).unwrap_err().code,
            "InvalidVSwitchId.IpNotEnough"
        );
    }

    #[test]
    fn allocation_is_all_or_nothing() {
        let mut v = vsw("10.0.0.0/29");
        // /29: .0 reserved, .5 .6 .7 reserved -> .1..=.4 usable.
        assert_eq!(available(&v), 4);
        assert!(take_v4(&mut v, 5).is_err());
        assert_eq!(available(&v), 4);
        assert_eq!(take_v4(&mut v, 4).unwrap().len(), 4);
    }

    #[test]
    fn claim_rejects_reserved_and_used() {
        let mut v = vsw("10.0.0.0/24");
        assert_eq!(
            claim_v4(&mut v, &[Ipv4Addr::new(10, 0, 0, 253)])
                .unwrap_err()
                .code,
            "InvalidPrivateIpAddress.Mismatch"
        );
        claim_v4(&mut v, &[Ipv4Addr::new(10, 0, 0, 7)]).unwrap();
        assert_eq!(
            claim_v4(&mut v, &[Ipv4Addr::new(10, 0, 0, 7)])
                .unwrap_err()
                .code,
            "InvalidPrivateIpAddress.Duplicated"
        );
        release_v4(&mut v, &[Ipv4Addr::new(10, 0, 0, 7)]);
        claim_v4(&mut v, &[Ipv4Addr::new(10, 0, 0, 7)]).unwrap();
    }

    #[test]
    fn ipv6_addresses_are_unique_and_inside_the_prefix() {
        let mut v = vsw("10.0.0.0/24");
        let ips = take_v6(&mut v, 50).unwrap();
        let set: BTreeSet<_> = ips.iter().collect();
        assert_eq!(set.len(), 50);
        let net: ipnet::Ipv6Net = "fd00:1::/64".parse().unwrap();
        assert!(ips.iter().all(|ip| net.contains(ip)));
    }
}
