//! Secondary address actions: Assign/Unassign PrivateIpAddresses and Ipv6Addresses. An ENI with an
//! attach or detach in flight refuses them with `Operation.Conflict`; quotas follow the instance
//! type of the instance the ENI is attached to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::json;
use terway_cloud::EniStatus;

use super::{Effect, Env, Outcome};
use crate::error::ApiError;
use crate::params::Params;
use crate::world::{alloc, World};

/// Whether the ENI accepts address changes now; returns (eni id, attached instance type limits).
fn ready<'w>(world: &'w World, eni_id: &str) -> Result<&'w crate::world::Eni, ApiError> {
    let eni = world.eni(eni_id)?;
    match eni.status {
        EniStatus::Available | EniStatus::InUse => Ok(eni),
        other => Err(ApiError::conflict(eni_id, other.as_api_str())),
    }
}

/// (IPv4 limit, IPv6 limit) for an ENI now.
fn limits(world: &World, env: &Env<'_>, eni_id: &str) -> Result<(u32, u32), ApiError> {
    let eni = world.eni(eni_id)?;
    match &eni.instance_id {
        Some(inst) => {
            let spec = env.spec(&world.instance(inst)?.instance_type)?;
            Ok((spec.eni_private_ip_quantity, spec.eni_ipv6_quantity))
        }
        None => Ok((env.unattached_eni_ip_limit, env.unattached_eni_ip_limit)),
    }
}

fn parse_list<T: std::str::FromStr>(p: &Params, name: &str) -> Result<Vec<T>, ApiError> {
    p.list(name)?
        .iter()
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| ApiError::invalid(name, format!("{s:?} is not an IP address")))
        })
        .collect()
}

fn notify_if_attached(
    world: &World,
    eni_id: &str,
    ips: Vec<IpAddr>,
    assigned: bool,
) -> Vec<Effect> {
    let attached = world
        .enis
        .get(eni_id)
        .is_some_and(|e| e.status == EniStatus::InUse);
    if !attached || ips.is_empty() {
        return Vec::new();
    }
    if assigned {
        vec![Effect::IpsAssigned(eni_id.to_string(), ips)]
    } else {
        vec![Effect::IpsUnassigned(eni_id.to_string(), ips)]
    }
}

/// AssignPrivateIpAddresses.
pub fn assign_v4(p: &Params, world: &mut World, env: &Env<'_>) -> Result<Outcome, ApiError> {
    let eni_id = p.require("NetworkInterfaceId")?.to_string();
    if p.get("Ipv4PrefixCount").is_some() || !p.list("Ipv4Prefix")?.is_empty() {
        return Err(ApiError::invalid(
            "Ipv4PrefixCount",
            "IP prefixes are not supported by this emulator",
        ));
    }
    let explicit: Vec<Ipv4Addr> = parse_list(p, "PrivateIpAddress")?;
    let count = p.parse::<u32>("SecondaryPrivateIpAddressCount")?;
    let wanted = match (count, explicit.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::invalid(
                "SecondaryPrivateIpAddressCount",
                "cannot be combined with PrivateIpAddress.N",
            ))
        }
        (Some(0), true) => {
            return Err(ApiError::invalid(
                "SecondaryPrivateIpAddressCount",
                "must be at least 1",
            ))
        }
        (Some(n), true) => n as usize,
        (None, false) => explicit.len(),
        (None, true) => return Err(ApiError::missing("SecondaryPrivateIpAddressCount")),
    };
    let eni = ready(world, &eni_id)?;
    let (limit, _) = limits(world, env, &eni_id)?;
    let have = eni.all_ipv4().len();
    if have + wanted > limit as usize {
        return Err(ApiError::new(
            403,
            "InvalidOperation.Ipv4CountExceeded",
            format!("The network interface {eni_id} has {have} private IPv4 addresses; {wanted} more would exceed the limit of {limit}."),
        ));
    }
    let vsw_id = eni.vswitch_id.clone();
    let vsw = world.vswitch_mut(&vsw_id)?;
    let new = if explicit.is_empty() {
        alloc::take_v4(vsw, wanted)?
    } else {
        alloc::claim_v4(vsw, &explicit)?;
        explicit
    };
    world
        .eni_mut(&eni_id)?
        .secondary_ips
        .extend(new.iter().copied());
    let effects = notify_if_attached(
        world,
        &eni_id,
        new.iter().map(|ip| IpAddr::V4(*ip)).collect(),
        true,
    );
    let list: Vec<String> = new.iter().map(ToString::to_string).collect();
    Ok(Outcome::with(
        json!({
            "AssignedPrivateIpAddressesSet": {
                "NetworkInterfaceId": eni_id,
                "PrivateIpSet": { "PrivateIpAddress": list },
            }
        }),
        effects,
    ))
}

fn unassigned(eni_id: &str, ip: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        400,
        "InvalidIp.IpUnassigned",
        format!("The IP address {ip} is not assigned to the network interface {eni_id}."),
    )
}

/// UnassignPrivateIpAddresses.
pub fn unassign_v4(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    let eni_id = p.require("NetworkInterfaceId")?.to_string();
    let ips: Vec<Ipv4Addr> = parse_list(p, "PrivateIpAddress")?;
    if ips.is_empty() {
        return Err(ApiError::missing("PrivateIpAddress.1"));
    }
    let eni = ready(world, &eni_id)?;
    for ip in &ips {
        if *ip == eni.primary_ip {
            return Err(ApiError::invalid(
                "PrivateIpAddress",
                format!("{ip} is the primary address of {eni_id}"),
            ));
        }
        if !eni.secondary_ips.contains(ip) {
            return Err(unassigned(&eni_id, ip));
        }
    }
    let vsw_id = eni.vswitch_id.clone();
    world
        .eni_mut(&eni_id)?
        .secondary_ips
        .retain(|ip| !ips.contains(ip));
    alloc::release_v4(world.vswitch_mut(&vsw_id)?, &ips);
    let effects = notify_if_attached(
        world,
        &eni_id,
        ips.iter().map(|ip| IpAddr::V4(*ip)).collect(),
        false,
    );
    Ok(Outcome::with(json!({}), effects))
}

/// AssignIpv6Addresses.
pub fn assign_v6(p: &Params, world: &mut World, env: &Env<'_>) -> Result<Outcome, ApiError> {
    let eni_id = p.require("NetworkInterfaceId")?.to_string();
    if p.get("Ipv6PrefixCount").is_some() {
        return Err(ApiError::invalid(
            "Ipv6PrefixCount",
            "IP prefixes are not supported by this emulator",
        ));
    }
    let explicit: Vec<Ipv6Addr> = parse_list(p, "Ipv6Address")?;
    let count = p.parse::<u32>("Ipv6AddressCount")?;
    let wanted = match (count, explicit.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::invalid(
                "Ipv6AddressCount",
                "cannot be combined with Ipv6Address.N",
            ))
        }
        (Some(0), true) => return Err(ApiError::invalid("Ipv6AddressCount", "must be at least 1")),
        (Some(n), true) => n as usize,
        (None, false) => explicit.len(),
        (None, true) => return Err(ApiError::missing("Ipv6AddressCount")),
    };
    let eni = ready(world, &eni_id)?;
    let (_, limit) = limits(world, env, &eni_id)?;
    let have = eni.ipv6.len();
    if have + wanted > limit as usize {
        return Err(ApiError::new(
            403,
            "InvalidOperation.Ipv6CountExceeded",
            format!("The network interface {eni_id} has {have} IPv6 addresses; {wanted} more would exceed the limit of {limit}."),
        ));
    }
    let vsw_id = eni.vswitch_id.clone();
    let vsw = world.vswitch_mut(&vsw_id)?;
    let new = if explicit.is_empty() {
        alloc::take_v6(vsw, wanted)?
    } else {
        let net = vsw.ipv6_cidr.ok_or_else(|| {
            ApiError::new(
                403,
                "InvalidVSwitchId.Ipv6NotTurnOn",
                format!("The vSwitch {vsw_id} has no IPv6 CIDR block."),
            )
        })?;
        if let Some(bad) = explicit
            .iter()
            .find(|ip| !net.contains(*ip) || vsw.used_v6.contains(*ip))
        {
            return Err(ApiError::invalid(
                "Ipv6Address",
                format!("{bad} is outside {net} or already in use"),
            ));
        }
        vsw.used_v6.extend(explicit.iter().copied());
        explicit
    };
    world.eni_mut(&eni_id)?.ipv6.extend(new.iter().copied());
    let effects = notify_if_attached(
        world,
        &eni_id,
        new.iter().map(|ip| IpAddr::V6(*ip)).collect(),
        true,
    );
    let list: Vec<String> = new.iter().map(ToString::to_string).collect();
    Ok(Outcome::with(
        json!({ "NetworkInterfaceId": eni_id, "Ipv6Sets": { "Ipv6Address": list } }),
        effects,
    ))
}

/// UnassignIpv6Addresses.
pub fn unassign_v6(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    let eni_id = p.require("NetworkInterfaceId")?.to_string();
    let ips: Vec<Ipv6Addr> = parse_list(p, "Ipv6Address")?;
    if ips.is_empty() {
        return Err(ApiError::missing("Ipv6Address.1"));
    }
    let eni = ready(world, &eni_id)?;
    if let Some(ip) = ips.iter().find(|ip| !eni.ipv6.contains(ip)) {
        return Err(unassigned(&eni_id, ip));
    }
    let vsw_id = eni.vswitch_id.clone();
    world.eni_mut(&eni_id)?.ipv6.retain(|ip| !ips.contains(ip));
    alloc::release_v6(world.vswitch_mut(&vsw_id)?, &ips);
    let effects = notify_if_attached(
        world,
        &eni_id,
        ips.iter().map(|ip| IpAddr::V6(*ip)).collect(),
        false,
    );
    Ok(Outcome::with(json!({}), effects))
}
