//! ENI lifecycle actions: Create, Attach, Detach, Delete. Attach and Detach only start the
//! transition (Attaching / Detaching); the service completes it after the configured delay.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::json;
use terway_cloud::{EniStatus, EniType};

use super::{render, Effect, Env, Outcome};
use crate::error::ApiError;
use crate::params::Params;
use crate::world::{alloc, now_iso, Eni, World};

fn parse_ips<T: std::str::FromStr>(p: &Params, name: &str) -> Result<Vec<T>, ApiError> {
    p.list(name)?
        .iter()
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| ApiError::invalid(name, format!("{s:?} is not an IP address")))
        })
        .collect()
}

fn ipv4_count_exceeded(what: &str, limit: u32) -> ApiError {
    ApiError::new(
        403,
        "InvalidOperation.Ipv4CountExceeded",
        format!("{what} would exceed the limit of {limit} private IPv4 addresses per network interface."),
    )
}

fn ipv6_count_exceeded(what: &str, limit: u32) -> ApiError {
    ApiError::new(
        403,
        "InvalidOperation.Ipv6CountExceeded",
        format!("{what} would exceed the limit of {limit} IPv6 addresses per network interface."),
    )
}

/// CreateNetworkInterface.
pub fn create(p: &Params, world: &mut World, env: &Env<'_>) -> Result<Outcome, ApiError> {
    let vsw_id = p.require("VSwitchId")?.to_string();
    let mut sgs = p.list("SecurityGroupIds")?;
    if let Some(sg) = p.get("SecurityGroupId") {
        sgs.insert(0, sg.to_string());
    }
    if sgs.is_empty() {
        return Err(ApiError::missing("SecurityGroupId"));
    }
    if sgs.len() > 10 {
        return Err(ApiError::invalid(
            "SecurityGroupIds",
            "at most 10 security groups are allowed",
        ));
    }
    let eni_type = match p.get("InstanceType").unwrap_or("Secondary") {
        "Secondary" => EniType::Secondary,
        "Trunk" => EniType::Trunk,
        other => {
            return Err(ApiError::invalid(
                "InstanceType",
                format!("{other:?} is neither Secondary nor Trunk"),
            ))
        }
    };
    if p.get("Ipv4PrefixCount").is_some() || p.get("Ipv6PrefixCount").is_some() {
        return Err(ApiError::invalid(
            "Ipv4PrefixCount",
            "IP prefixes are not supported by this emulator",
        ));
    }
    let explicit_secondary: Vec<Ipv4Addr> = parse_ips(p, "PrivateIpAddress")?;
    let secondary_count = p
        .parse::<u32>("SecondaryPrivateIpAddressCount")?
        .unwrap_or(0);
    if secondary_count > 0 && !explicit_secondary.is_empty() {
        return Err(ApiError::invalid(
            "SecondaryPrivateIpAddressCount",
            "cannot be combined with PrivateIpAddress.N",
        ));
    }
    let explicit_v6: Vec<Ipv6Addr> = parse_ips(p, "Ipv6Address")?;
    let v6_count = p.parse::<u32>("Ipv6AddressCount")?.unwrap_or(0);
    if v6_count > 0 && !explicit_v6.is_empty() {
        return Err(ApiError::invalid(
            "Ipv6AddressCount",
            "cannot be combined with Ipv6Address.N",
        ));
    }
    let primary: Option<Ipv4Addr> = p.parse("PrimaryIpAddress")?;
    let tags = p.tags()?;

    let n_secondary = secondary_count as usize + explicit_secondary.len();
    let limit = env.unattached_eni_ip_limit;
    if 1 + n_secondary > limit as usize {
        return Err(ipv4_count_exceeded(
            &format!(
                "Creating a network interface with {} addresses",
                1 + n_secondary
            ),
            limit,
        ));
    }
    let n_v6 = v6_count as usize + explicit_v6.len();
    if n_v6 > limit as usize {
        return Err(ipv6_count_exceeded(
            &format!("Creating a network interface with {n_v6} IPv6 addresses"),
            limit,
        ));
    }

    let eni_id = world.fresh_eni_id();
    let mac = world.fresh_mac();
    let vpc_id = world.vpc.id.clone();
    let vsw = world.vswitch_mut(&vsw_id)?;
    // Validate the IPv6 side before taking IPv4 addresses, so a failure leaves nothing behind.
    if n_v6 > 0 && vsw.ipv6_cidr.is_none() {
        return Err(ApiError::new(
            403,
            "InvalidVSwitchId.Ipv6NotTurnOn",
            format!("The vSwitch {vsw_id} has no IPv6 CIDR block."),
        ));
    }
    let mut explicit_v4 = explicit_secondary.clone();
    explicit_v4.extend(primary);
    alloc::claim_v4(vsw, &explicit_v4)?;
    let needed_auto = usize::from(primary.is_none()) + secondary_count as usize;
    let auto = match alloc::take_v4(vsw, needed_auto) {
        Ok(a) => a,
        Err(e) => {
            alloc::release_v4(vsw, &explicit_v4);
            return Err(e);
        }
    };
    let mut auto_iter = auto.into_iter();
    let primary_ip = match primary {
        Some(ip) => ip,
        None => auto_iter
            .next()
            .ok_or_else(|| ApiError::internal("address allocation returned too few addresses"))?,
    };
    let mut secondary_ips = explicit_secondary;
    secondary_ips.extend(auto_iter);
    let mut ipv6 = Vec::new();
    if n_v6 > 0 {
        let taken = if explicit_v6.is_empty() {
            alloc::take_v6(vsw, n_v6)
        } else {
            claim_v6(vsw, &explicit_v6)
        };
        match taken {
            Ok(t) => ipv6 = t,
            Err(e) => {
                let mut all = secondary_ips.clone();
                all.push(primary_ip);
                alloc::release_v4(vsw, &all);
                return Err(e);
            }
        }
    }
    let zone_id = vsw.zone_id.clone();
    let eni = Eni {
        id: eni_id.clone(),
        mac,
        status: EniStatus::Available,
        eni_type,
        created_type: eni_type,
        vswitch_id: vsw_id,
        vpc_id,
        zone_id,
        instance_id: None,
        trunk_eni_id: None,
        primary_ip,
        secondary_ips,
        ipv6,
        security_group_ids: sgs,
        tags,
        description: p.get("Description").unwrap_or_default().to_string(),
        name: p
            .get("NetworkInterfaceName")
            .unwrap_or_default()
            .to_string(),
        resource_group_id: p.get("ResourceGroupId").unwrap_or_default().to_string(),
        creation_time: now_iso(),
        device_index: None,
        op_seq: 0,
    };
    let body = render::eni(world, &eni);
    world.enis.insert(eni_id, eni);
    Ok(Outcome::body(body))
}

fn claim_v6(vsw: &mut crate::world::VSwitch, ips: &[Ipv6Addr]) -> Result<Vec<Ipv6Addr>, ApiError> {
    let net = vsw
        .ipv6_cidr
        .ok_or_else(|| ApiError::invalid("Ipv6Address", "the vSwitch has no IPv6 CIDR block"))?;
    for ip in ips {
        if !net.contains(ip) || vsw.used_v6.contains(ip) {
            return Err(ApiError::invalid(
                "Ipv6Address",
                format!("{ip} is outside {net} or already in use"),
            ));
        }
    }
    vsw.used_v6.extend(ips.iter().copied());
    Ok(ips.to_vec())
}

fn limit_exceeded(instance_id: &str, what: &str, limit: u32) -> ApiError {
    ApiError::new(
        403,
        "EniPerInstanceLimitExceeded",
        format!("The instance {instance_id} already has the maximum number of {what} ({limit})."),
    )
}

/// AttachNetworkInterface.
pub fn attach(p: &Params, world: &mut World, env: &Env<'_>) -> Result<Outcome, ApiError> {
    let eni_id = p.require("NetworkInterfaceId")?;
    let instance_id = p.require("InstanceId")?;
    let trunk_id = p.get("TrunkNetworkInstanceId");
    let eni = world.eni(eni_id)?;
    let instance = world.instance(instance_id)?;
    match eni.status {
        EniStatus::Available => {}
        EniStatus::Attaching | EniStatus::Detaching | EniStatus::Deleting => {
            return Err(ApiError::conflict(eni_id, eni.status.as_api_str()))
        }
        EniStatus::InUse => {
            return Err(ApiError::invalid_eni_state(
                eni_id,
                "InUse",
                "AttachNetworkInterface",
            ))
        }
    }
    if eni.zone_id != instance.zone_id {
        return Err(ApiError::new(
            403,
            "InvalidOperation.AvailabilityZoneMismatch",
            format!(
                "The network interface {eni_id} is in zone {} but instance {instance_id} is in {}.",
                eni.zone_id, instance.zone_id
            ),
        ));
    }
    let spec = env.spec(&instance.instance_type)?;
    let n_v4 = eni.all_ipv4().len() as u32;
    if n_v4 > spec.eni_private_ip_quantity {
        return Err(ipv4_count_exceeded(
            &format!(
                "Attaching {eni_id} with {n_v4} addresses to a {}",
                spec.instance_type
            ),
            spec.eni_private_ip_quantity,
        ));
    }
    if eni.ipv6.len() as u32 > spec.eni_ipv6_quantity {
        return Err(ipv6_count_exceeded(
            &format!("Attaching {eni_id} to a {}", spec.instance_type),
            spec.eni_ipv6_quantity,
        ));
    }
    if let Some(trunk_id) = trunk_id {
        if !spec.trunk_supported {
            return Err(ApiError::new(
                403,
                "InvalidOperation.TrunkNotSupported",
                format!(
                    "Instance type {} does not support trunk network interfaces.",
                    spec.instance_type
                ),
            ));
        }
        let trunk = world.eni(trunk_id)?;
        if trunk.eni_type != EniType::Trunk
            || trunk.status != EniStatus::InUse
            || trunk.instance_id.as_deref() != Some(instance_id)
        {
            return Err(ApiError::invalid_eni_state(
                trunk_id,
                trunk.status.as_api_str(),
                "attaching a member through it (it must be an InUse trunk of this instance)",
            ));
        }
        if eni.eni_type != EniType::Secondary {
            return Err(ApiError::invalid(
                "NetworkInterfaceId",
                format!(
                    "{eni_id} is a {} ENI; only Secondary ENIs can be trunk members",
                    eni.eni_type.as_api_str()
                ),
            ));
        }
        let members = world
            .enis_of(instance_id)
            .filter(|e| e.trunk_eni_id.is_some())
            .count() as u32;
        let member_limit = spec.eni_total_quantity.saturating_sub(spec.eni_quantity);
        if members >= member_limit {
            return Err(limit_exceeded(
                instance_id,
                "member network interfaces",
                member_limit,
            ));
        }
    } else {
        let direct = world
            .enis_of(instance_id)
            .filter(|e| e.trunk_eni_id.is_none())
            .count() as u32;
        if direct >= spec.eni_quantity {
            return Err(limit_exceeded(
                instance_id,
                "network interfaces",
                spec.eni_quantity,
            ));
        }
    }
    let used_indexes: Vec<u32> = world
        .enis_of(instance_id)
        .filter_map(|e| e.device_index)
        .collect();
    let device_index = (0..).find(|i| !used_indexes.contains(i)).unwrap_or(0);
    let seq = world.seq();
    let instance_id = instance_id.to_string();
    let eni = world.eni_mut(eni_id)?;
    eni.status = EniStatus::Attaching;
    eni.instance_id = Some(instance_id);
    eni.trunk_eni_id = trunk_id.map(str::to_string);
    eni.device_index = Some(device_index);
    eni.op_seq = seq;
    Ok(Outcome::with(
        json!({}),
        vec![Effect::CompleteAttach {
            eni_id: eni_id.to_string(),
            seq,
        }],
    ))
}

/// DetachNetworkInterface.
pub fn detach(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    let eni_id = p.require("NetworkInterfaceId")?;
    let instance_id = p.require("InstanceId")?;
    world.instance(instance_id)?;
    let eni = world.eni(eni_id)?;
    if eni.eni_type == EniType::Primary {
        return Err(ApiError::new(
            403,
            "InvalidOperation.DetachPrimaryEniNotAllowed",
            format!("{eni_id} is the primary network interface of {instance_id} and cannot be detached."),
        ));
    }
    match eni.status {
        EniStatus::InUse => {}
        EniStatus::Attaching | EniStatus::Detaching | EniStatus::Deleting => {
            return Err(ApiError::conflict(eni_id, eni.status.as_api_str()))
        }
        EniStatus::Available => {
            return Err(ApiError::invalid_eni_state(
                eni_id,
                "Available",
                "DetachNetworkInterface",
            ))
        }
    }
    if eni.instance_id.as_deref() != Some(instance_id) {
        return Err(ApiError::invalid_eni_state(
            eni_id,
            "attached to another instance",
            "detaching it from this one",
        ));
    }
    if eni.eni_type == EniType::Trunk
        && world
            .enis
            .values()
            .any(|e| e.trunk_eni_id.as_deref() == Some(eni_id))
    {
        return Err(ApiError::invalid_eni_state(
            eni_id,
            "a trunk with member ENIs attached",
            "DetachNetworkInterface",
        ));
    }
    let seq = world.seq();
    let eni = world.eni_mut(eni_id)?;
    eni.status = EniStatus::Detaching;
    eni.op_seq = seq;
    Ok(Outcome::with(
        json!({}),
        vec![Effect::CompleteDetach {
            eni_id: eni_id.to_string(),
            seq,
        }],
    ))
}

/// DeleteNetworkInterface: immediate, or `Deleting` until the service completes it when a delete
/// delay is configured.
pub fn delete(p: &Params, world: &mut World, env: &Env<'_>) -> Result<Outcome, ApiError> {
    let eni_id = p.require("NetworkInterfaceId")?;
    let eni = world.eni(eni_id)?;
    if eni.eni_type == EniType::Primary || eni.status != EniStatus::Available {
        return Err(ApiError::invalid_eni_state(
            eni_id,
            eni.status.as_api_str(),
            "DeleteNetworkInterface",
        ));
    }
    if env.async_delete {
        let seq = world.seq();
        let eni = world.eni_mut(eni_id)?;
        eni.status = EniStatus::Deleting;
        eni.op_seq = seq;
        let effect = Effect::CompleteDelete {
            eni_id: eni_id.to_string(),
            seq,
        };
        return Ok(Outcome::with(json!({}), vec![effect]));
    }
    world.remove_eni(eni_id);
    Ok(Outcome::body(json!({})))
}
