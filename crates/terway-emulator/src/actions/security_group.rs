//! ECS security groups: CreateSecurityGroup, DeleteSecurityGroup, DescribeSecurityGroups, and their
//! ingress rules (AuthorizeSecurityGroup, RevokeSecurityGroup, DescribeSecurityGroupAttribute). Every
//! change hands the fabric the new set of groups, which it enforces on the ENIs in them.

use serde_json::{json, Value};

use ipnet::Ipv4Net;

use super::{page_size, Effect, Outcome};
use crate::error::ApiError;
use crate::params::Params;
use crate::world::{now_iso, random_id, SecurityGroup, SgRule, World};

/// The most ids `SecurityGroupIds` may carry, as the real API allows.
const MAX_IDS: usize = 100;

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "InvalidSecurityGroupId.NotFound",
        format!("The specified security group {id} does not exist."),
    )
}

fn check_vpc(p: &Params, world: &World, required: bool) -> Result<(), ApiError> {
    match p.get("VpcId") {
        None if required => Err(ApiError::missing("VpcId")),
        Some(v) if v != world.vpc.id => Err(ApiError::new(
            404,
            "InvalidVpcId.NotFound",
            format!("The specified VPC {v} does not exist."),
        )),
        _ => Ok(()),
    }
}

/// CreateSecurityGroup (a VPC-type group in the one VPC).
pub fn create(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    check_vpc(p, world, true)?;
    let name = p.get("SecurityGroupName").unwrap_or_default().to_string();
    if name.len() > 128 {
        return Err(ApiError::invalid(
            "SecurityGroupName",
            "must be at most 128 characters",
        ));
    }
    let sg = SecurityGroup {
        id: random_id("sg-"),
        name,
        description: p.get("Description").unwrap_or_default().to_string(),
        creation_time: now_iso(),
        rules: Vec::new(),
        inner_accept: true,
    };
    let id = sg.id.clone();
    world.security_groups.insert(id.clone(), sg);
    Ok(changed(json!({ "SecurityGroupId": id }), world))
}

/// DeleteSecurityGroup; refused while an ENI is still in the group.
pub fn delete(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    let id = p.require("SecurityGroupId")?;
    if !world.security_groups.contains_key(id) {
        return Err(not_found(id));
    }
    if let Some(eni) = world
        .enis
        .values()
        .find(|e| e.security_group_ids.iter().any(|s| s == id))
    {
        return Err(ApiError::new(
            403,
            "DependencyViolation",
            format!(
                "There is still a network interface ({}) in the specified security group {id}.",
                eni.id
            ),
        ));
    }
    world.security_groups.remove(id);
    Ok(changed(json!({}), world))
}

/// DescribeSecurityGroups by `SecurityGroupIds` (a JSON array) or `SecurityGroupId`, paged by number.
/// Ids that do not exist are left out of the answer, not an error, as the real API does.
pub fn describe(p: &Params, world: &World) -> Result<Outcome, ApiError> {
    let size = page_size(p, "PageSize", 10, 50)?;
    let number = p.parse::<usize>("PageNumber")?.unwrap_or(1).max(1);
    let mut ids = p.list("SecurityGroupIds")?;
    if ids.len() > MAX_IDS {
        return Err(ApiError::invalid(
            "SecurityGroupIds",
            format!("{} ids; at most {MAX_IDS}", ids.len()),
        ));
    }
    if let Some(one) = p.get("SecurityGroupId") {
        ids.push(one.to_string());
    }
    let other_vpc = p.get("VpcId").is_some_and(|v| v != world.vpc.id);
    let matching: Vec<&SecurityGroup> = world
        .security_groups
        .values()
        .filter(|sg| !other_vpc && (ids.is_empty() || ids.contains(&sg.id)))
        .collect();
    let list: Vec<Value> = matching
        .iter()
        .skip((number - 1) * size)
        .take(size)
        .map(|sg| {
            json!({
                "SecurityGroupId": sg.id,
                "SecurityGroupName": sg.name,
                "Description": sg.description,
                "VpcId": world.vpc.id,
                "CreationTime": sg.creation_time,
                "SecurityGroupType": "normal",
                "ServiceManaged": false,
                "ResourceGroupId": "",
                "Tags": { "Tag": [] },
            })
        })
        .collect();
    Ok(Outcome::body(json!({
        "RegionId": world.region_id,
        "SecurityGroups": { "SecurityGroup": list },
        "TotalCount": matching.len(),
        "PageNumber": number,
        "PageSize": size,
    })))
}

/// An answer that also hands the fabric the groups as they are now.
fn changed(body: Value, world: &World) -> Outcome {
    Outcome::with(
        body,
        vec![Effect::SecurityGroups(
            world.security_groups.values().cloned().collect(),
        )],
    )
}

fn group_mut<'a>(p: &Params, world: &'a mut World) -> Result<&'a mut SecurityGroup, ApiError> {
    let id = p.require("SecurityGroupId")?;
    world
        .security_groups
        .get_mut(id)
        .ok_or_else(|| not_found(id))
}

/// The rule an Authorize/Revoke call names (ingress).
fn rule_of(p: &Params, world: &World) -> Result<SgRule, ApiError> {
    let protocol = p.require("IpProtocol")?.to_ascii_lowercase();
    if !matches!(protocol.as_str(), "tcp" | "udp" | "icmp" | "all") {
        return Err(ApiError::new(
            400,
            "InvalidIpProtocol.Malformed",
            format!("The specified IpProtocol {protocol} is not valid; use TCP, UDP, ICMP or ALL."),
        ));
    }
    let range = p.require("PortRange")?;
    let malformed = || {
        ApiError::new(
            400,
            "InvalidPortRange.Malformed",
            format!("The specified PortRange {range} is not valid; use from/to, e.g. 80/80, or -1/-1 for ICMP and ALL."),
        )
    };
    let (from, to) = range.split_once('/').ok_or_else(malformed)?;
    let (from, to): (i32, i32) = (
        from.trim().parse().map_err(|_| malformed())?,
        to.trim().parse().map_err(|_| malformed())?,
    );
    let any = (from, to) == (-1, -1);
    let ported = matches!(protocol.as_str(), "tcp" | "udp");
    if (ported && (any || !(1..=65535).contains(&from) || !(from..=65535).contains(&to)))
        || (!ported && !any)
    {
        return Err(malformed());
    }
    let cidr =
        match p.get("SourceCidrIp") {
            Some(c) => Some(c.parse::<Ipv4Net>().map_err(|_| {
                ApiError::invalid("SourceCidrIp", format!("{c} is not an IPv4 CIDR"))
            })?),
            None => None,
        };
    let group = p.get("SourceGroupId").map(str::to_string);
    if let Some(g) = &group {
        if !world.security_groups.contains_key(g) {
            return Err(not_found(g));
        }
    }
    if cidr.is_none() && group.is_none() {
        return Err(ApiError::missing("SourceCidrIp"));
    }
    let accept = match p.get("Policy").map(str::to_ascii_lowercase).as_deref() {
        None | Some("accept") => true,
        Some("drop") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "Policy",
                format!("{other}: use accept or drop"),
            ))
        }
    };
    let priority = match p.parse::<u8>("Priority")? {
        None => 1,
        Some(n) if (1..=100).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(
                "Priority",
                format!("{n} is outside 1..=100"),
            ))
        }
    };
    Ok(SgRule {
        direction: "ingress".into(),
        protocol,
        port_from: from,
        port_to: to,
        cidr,
        group,
        accept,
        priority,
    })
}

/// AuthorizeSecurityGroup: add an ingress rule (an identical rule already there is success).
pub fn authorize(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    let rule = rule_of(p, world)?;
    let sg = group_mut(p, world)?;
    if !sg.rules.contains(&rule) {
        sg.rules.push(rule);
    }
    Ok(changed(json!({}), world))
}

/// RevokeSecurityGroup: remove an ingress rule (one that is not there is success).
pub fn revoke(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    let rule = rule_of(p, world)?;
    let sg = group_mut(p, world)?;
    sg.rules.retain(|r| r != &rule);
    Ok(changed(json!({}), world))
}

/// DescribeSecurityGroupAttribute: a group's rules.
pub fn describe_attribute(p: &Params, world: &World) -> Result<Outcome, ApiError> {
    let id = p.require("SecurityGroupId")?;
    let sg = world.security_groups.get(id).ok_or_else(|| not_found(id))?;
    let direction = p.get("Direction").unwrap_or("all");
    let permissions: Vec<Value> = sg
        .rules
        .iter()
        .filter(|r| direction == "all" || r.direction == direction)
        .map(|r| {
            json!({
                "Direction": r.direction,
                "IpProtocol": r.protocol.to_ascii_uppercase(),
                "PortRange": format!("{}/{}", r.port_from, r.port_to),
                "SourceCidrIp": r.cidr.map(|c| c.to_string()).unwrap_or_default(),
                "SourceGroupId": r.group.clone().unwrap_or_default(),
                "Policy": if r.accept { "Accept" } else { "Drop" },
                "Priority": r.priority.to_string(),
                "NicType": "intranet",
            })
        })
        .collect();
    Ok(Outcome::body(json!({
        "RegionId": world.region_id,
        "SecurityGroupId": sg.id,
        "SecurityGroupName": sg.name,
        "VpcId": world.vpc.id,
        "Description": sg.description,
        "InnerAccessPolicy": if sg.inner_accept { "Accept" } else { "Drop" },
        "Permissions": { "Permission": permissions },
    })))
}
