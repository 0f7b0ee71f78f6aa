//! VPC actions: DescribeVSwitches and the custom route entries of VPC-route mode
//! (CreateRouteEntry, DeleteRouteEntry, DescribeRouteEntryList).

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::{page_size, Effect, Outcome};
use crate::error::ApiError;
use crate::params::Params;
use crate::world::{alloc, random_id, Route, World};

/// DescribeVSwitches.
pub fn describe_vswitches(p: &Params, world: &World) -> Result<Outcome, ApiError> {
    // VSwitchId may carry several ids separated by commas.
    let ids: Vec<&str> = p
        .get("VSwitchId")
        .map(|s| s.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let vpc = p.get("VpcId");
    let zone = p.get("ZoneId");
    let size = page_size(p, "PageSize", 10, 50)?;
    let number = p.parse::<usize>("PageNumber")?.unwrap_or(1).max(1);
    if vpc.is_some_and(|v| v != world.vpc.id) {
        return Ok(Outcome::body(
            json!({ "VSwitches": { "VSwitch": [] }, "TotalCount": 0, "PageNumber": number, "PageSize": size }),
        ));
    }
    let matching: Vec<_> = world
        .vswitches
        .values()
        .filter(|v| ids.is_empty() || ids.contains(&v.id.as_str()))
        .filter(|v| zone.is_none_or(|z| z == v.zone_id))
        .collect();
    let list: Vec<Value> = matching
        .iter()
        .skip((number - 1) * size)
        .take(size)
        .map(|v| {
            json!({
                "VSwitchId": v.id,
                "VSwitchName": v.id,
                "VpcId": world.vpc.id,
                "ZoneId": v.zone_id,
                "CidrBlock": v.cidr.to_string(),
                "Ipv6CidrBlock": v.ipv6_cidr.map(|n| n.to_string()).unwrap_or_default(),
                "EnabledIpv6": v.ipv6_cidr.is_some(),
                "AvailableIpAddressCount": alloc::available(v),
                "Status": "Available",
                "IsDefault": false,
                "Description": "",
                "ResourceGroupId": "",
                "RouteTable": { "RouteTableId": world.vpc.route_table_id, "RouteTableType": "System" },
            })
        })
        .collect();
    Ok(Outcome::body(json!({
        "VSwitches": { "VSwitch": list },
        "TotalCount": matching.len(),
        "PageNumber": number,
        "PageSize": size,
    })))
}

fn route_table(p: &Params, world: &World) -> Result<String, ApiError> {
    let id = p.require("RouteTableId")?;
    if id != world.vpc.route_table_id {
        return Err(ApiError::new(
            404,
            "InvalidRouteTableId.NotFound",
            format!("The specified route table {id} does not exist."),
        ));
    }
    Ok(id.to_string())
}

fn destination(p: &Params) -> Result<Ipv4Net, ApiError> {
    let raw = p.require("DestinationCidrBlock")?;
    raw.parse::<Ipv4Net>().map(|n| n.trunc()).map_err(|_| {
        ApiError::invalid(
            "DestinationCidrBlock",
            format!("{raw:?} is not an IPv4 CIDR block"),
        )
    })
}

/// CreateRouteEntry.
pub fn create_route(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    let table = route_table(p, world)?;
    let dst = destination(p)?;
    let hop_type = p.get("NextHopType").unwrap_or("Instance");
    if hop_type != "Instance" {
        return Err(ApiError::invalid(
            "NextHopType",
            format!("{hop_type:?} is not supported here; use Instance"),
        ));
    }
    let hop = p.require("NextHopId")?.to_string();
    if !world.instances.contains_key(&hop) {
        return Err(ApiError::new(
            404,
            "InvalidInstanceId.NotFound",
            format!("The specified next hop instance {hop} does not exist."),
        ));
    }
    if world
        .vswitches
        .values()
        .any(|v| v.cidr.contains(&dst) || dst.contains(&v.cidr))
    {
        return Err(ApiError::new(
            400,
            "InvalidDestinationCidrBlock.Overlap",
            format!("The destination {dst} overlaps a vSwitch CIDR block."),
        ));
    }
    if world
        .routes
        .iter()
        .any(|r| r.route_table_id == table && r.destination == dst)
    {
        return Err(ApiError::new(
            400,
            "RouterEntryConflict.Duplicated",
            format!("A route entry for {dst} already exists in {table}."),
        ));
    }
    let route = Route {
        id: random_id("rte-"),
        route_table_id: table,
        destination: dst,
        next_hop_id: hop.clone(),
        next_hop_type: hop_type.to_string(),
        name: p.get("RouteEntryName").unwrap_or_default().to_string(),
        description: p.get("Description").unwrap_or_default().to_string(),
    };
    let id = route.id.clone();
    world.routes.push(route);
    Ok(Outcome::with(
        json!({ "RouteEntryId": id }),
        vec![Effect::RouteAdded(dst, hop)],
    ))
}

/// DeleteRouteEntry (by RouteEntryId, or by table + destination [+ next hop]).
pub fn delete_route(p: &Params, world: &mut World) -> Result<Outcome, ApiError> {
    let pos = if let Some(id) = p.get("RouteEntryId") {
        world.routes.iter().position(|r| r.id == id)
    } else {
        let table = route_table(p, world)?;
        let dst = destination(p)?;
        let hop = p.get("NextHopId");
        world.routes.iter().position(|r| {
            r.route_table_id == table
                && r.destination == dst
                && hop.is_none_or(|h| h == r.next_hop_id)
        })
    };
    let Some(pos) = pos else {
        return Err(ApiError::new(
            404,
            "InvalidRouteEntry.NotFound",
            "The specified route entry does not exist.",
        ));
    };
    let route = world.routes.remove(pos);
    Ok(Outcome::with(
        json!({}),
        vec![Effect::RouteRemoved(route.destination, route.next_hop_id)],
    ))
}

fn route_json(r: &Route) -> Value {
    json!({
        "RouteEntryId": r.id,
        "RouteTableId": r.route_table_id,
        "DestinationCidrBlock": r.destination.to_string(),
        "Type": "Custom",
        "Status": "Available",
        "IpVersion": "ipv4",
        "RouteEntryName": r.name,
        "Description": r.description,
        "Origin": "",
        "NextHops": { "NextHop": [ {
            "NextHopId": r.next_hop_id,
            "NextHopType": r.next_hop_type,
            "Enabled": 1,
            "Weight": 0,
            "NextHopRelatedInfo": { "InstanceId": r.next_hop_id, "InstanceType": "", "RegionId": "" },
        } ] },
    })
}

/// DescribeRouteEntryList (custom entries; paging with MaxResult/NextToken).
pub fn describe_routes(p: &Params, world: &World) -> Result<Outcome, ApiError> {
    let table = route_table(p, world)?;
    let dst = match p.get("DestinationCidrBlock") {
        Some(_) => Some(destination(p)?),
        None => None,
    };
    let hop = p.get("NextHopId");
    if p.get("RouteEntryType").is_some_and(|t| t != "Custom") {
        return Ok(Outcome::body(
            json!({ "RouteEntrys": { "RouteEntry": [] }, "NextToken": "", "TotalCount": 0 }),
        ));
    }
    let max = page_size(p, "MaxResult", 50, 100)?;
    let after = p.get("NextToken");
    let mut matching: Vec<&Route> = world
        .routes
        .iter()
        .filter(|r| r.route_table_id == table)
        .filter(|r| dst.is_none_or(|d| d == r.destination))
        .filter(|r| hop.is_none_or(|h| h == r.next_hop_id))
        .filter(|r| p.get("RouteEntryId").is_none_or(|id| id == r.id))
        .collect();
    matching.sort_by(|a, b| a.id.cmp(&b.id));
    let page: Vec<&Route> = matching
        .iter()
        .copied()
        .filter(|r| after.is_none_or(|a| r.id.as_str() > a))
        .take(max)
        .collect();
    let next = match page.last() {
        Some(l) if matching.iter().any(|r| r.id > l.id) => l.id.clone(),
        _ => String::new(),
    };
    let list: Vec<Value> = page.iter().map(|r| route_json(r)).collect();
    Ok(Outcome::body(
        json!({ "RouteEntrys": { "RouteEntry": list }, "NextToken": next, "TotalCount": matching.len() }),
    ))
}
