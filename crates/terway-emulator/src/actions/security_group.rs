//! ECS security groups: CreateSecurityGroup, DeleteSecurityGroup, DescribeSecurityGroups. Rules are
//! not modelled yet; what a group means here is that it exists and which ENIs are in it.

use serde_json::{json, Value};

use super::{page_size, Outcome};
use crate::error::ApiError;
use crate::params::Params;
use crate::world::{now_iso, random_id, SecurityGroup, World};

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
    };
    let id = sg.id.clone();
    world.security_groups.insert(id.clone(), sg);
    Ok(Outcome::body(json!({ "SecurityGroupId": id })))
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
    Ok(Outcome::body(json!({})))
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
