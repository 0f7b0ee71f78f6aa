//! Read-only ECS actions: DescribeNetworkInterfaces (filters, NextToken and page-number paging),
//! DescribeNetworkInterfaceAttribute, DescribeInstanceTypes and a minimal DescribeInstances.

use serde_json::{json, Value};
use terway_cloud::{EniStatus, EniType};

use super::{page_size, render, Env, Outcome};
use crate::error::ApiError;
use crate::params::Params;
use crate::world::{Eni, World};

struct EniFilter {
    ids: Vec<String>,
    instance_id: Option<String>,
    vpc_id: Option<String>,
    vswitch_id: Option<String>,
    status: Option<EniStatus>,
    eni_type: Option<EniType>,
    tags: std::collections::BTreeMap<String, String>,
    primary_ip: Option<String>,
}

impl EniFilter {
    fn parse(p: &Params) -> Result<Self, ApiError> {
        let ids = p.list("NetworkInterfaceId")?;
        if ids.len() > 100 {
            return Err(ApiError::invalid(
                "NetworkInterfaceId",
                "at most 100 ids are allowed",
            ));
        }
        let status = match p.get("Status") {
            None => None,
            Some(s) => Some(
                EniStatus::from_api_str(s)
                    .ok_or_else(|| ApiError::invalid("Status", format!("{s:?} is not a status")))?,
            ),
        };
        let eni_type = match p.get("Type") {
            None => None,
            Some(s) => Some(
                EniType::from_api_str(s)
                    .ok_or_else(|| ApiError::invalid("Type", format!("{s:?} is not a type")))?,
            ),
        };
        Ok(Self {
            ids,
            instance_id: p.get("InstanceId").map(str::to_string),
            vpc_id: p.get("VpcId").map(str::to_string),
            vswitch_id: p.get("VSwitchId").map(str::to_string),
            status,
            eni_type,
            tags: p.tags()?,
            primary_ip: p.get("PrimaryIpAddress").map(str::to_string),
        })
    }

    fn matches(&self, e: &Eni) -> bool {
        // An ENI still Available shows no InstanceId, so it never matches an instance filter.
        let shown_instance = if e.status == EniStatus::Available {
            None
        } else {
            e.instance_id.as_deref()
        };
        (self.ids.is_empty() || self.ids.contains(&e.id))
            && self
                .instance_id
                .as_deref()
                .is_none_or(|i| shown_instance == Some(i))
            && self.vpc_id.as_deref().is_none_or(|v| v == e.vpc_id)
            && self.vswitch_id.as_deref().is_none_or(|v| v == e.vswitch_id)
            && self.status.is_none_or(|s| s == e.status)
            && self.eni_type.is_none_or(|t| t == e.eni_type)
            && self
                .primary_ip
                .as_deref()
                .is_none_or(|ip| ip == e.primary_ip.to_string())
            && self.tags.iter().all(|(k, v)| e.tags.get(k) == Some(v))
    }
}

/// DescribeNetworkInterfaces.
pub fn network_interfaces(p: &Params, world: &World) -> Result<Outcome, ApiError> {
    let filter = EniFilter::parse(p)?;
    let matching: Vec<&Eni> = world.enis.values().filter(|e| filter.matches(e)).collect();
    let total = matching.len();
    let token_mode = p.get("MaxResults").is_some() || p.get("NextToken").is_some();
    if token_mode {
        let max = page_size(p, "MaxResults", 10, 500)?;
        // The token is the id of the last ENI of the previous page: ids are ordered, so ENIs created
        // or deleted meanwhile never shift the pages.
        let after = p.get("NextToken");
        if let Some(t) = after {
            if !t.starts_with("eni-") {
                return Err(ApiError::invalid(
                    "NextToken",
                    format!("{t:?} was not issued by this service"),
                ));
            }
        }
        let page: Vec<&Eni> = matching
            .iter()
            .copied()
            .filter(|e| after.is_none_or(|a| e.id.as_str() > a))
            .take(max)
            .collect();
        let last_shown = page.last().map(|e| e.id.clone());
        let more = last_shown
            .as_ref()
            .is_some_and(|l| matching.iter().any(|e| e.id > *l));
        let next = if more {
            last_shown.unwrap_or_default()
        } else {
            String::new()
        };
        let list: Vec<Value> = page.iter().map(|e| render::eni(world, e)).collect();
        return Ok(Outcome::body(json!({
            "NetworkInterfaceSets": { "NetworkInterfaceSet": list },
            "NextToken": next,
            "TotalCount": total,
        })));
    }
    let size = page_size(p, "PageSize", 10, 1000)?;
    let number = p.parse::<usize>("PageNumber")?.unwrap_or(1).max(1);
    let list: Vec<Value> = matching
        .iter()
        .skip((number - 1) * size)
        .take(size)
        .map(|e| render::eni(world, e))
        .collect();
    Ok(Outcome::body(json!({
        "NetworkInterfaceSets": { "NetworkInterfaceSet": list },
        "TotalCount": total,
        "PageNumber": number,
        "PageSize": size,
    })))
}

/// DescribeNetworkInterfaceAttribute.
pub fn network_interface_attribute(p: &Params, world: &World) -> Result<Outcome, ApiError> {
    let eni_id = p.require("NetworkInterfaceId")?;
    let eni = world.eni(eni_id)?;
    Ok(Outcome::body(render::eni(world, eni)))
}

/// DescribeInstanceTypes.
pub fn instance_types(p: &Params, env: &Env<'_>) -> Result<Outcome, ApiError> {
    let wanted = p.list("InstanceTypes")?;
    if wanted.len() > 10 {
        return Err(ApiError::invalid(
            "InstanceTypes",
            "at most 10 instance types per call",
        ));
    }
    let max = page_size(p, "MaxResults", 100, 1600)?;
    let after = p.get("NextToken");
    let selected: Vec<_> = env
        .catalogue
        .values()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.instance_type))
        .collect();
    let page: Vec<_> = selected
        .iter()
        .filter(|s| after.is_none_or(|a| s.instance_type.as_str() > a))
        .take(max)
        .collect();
    let next = match page.last() {
        Some(l) if selected.iter().any(|s| s.instance_type > l.instance_type) => {
            l.instance_type.clone()
        }
        _ => String::new(),
    };
    let list: Vec<Value> = page
        .iter()
        .map(|s| {
            json!({
                "InstanceTypeId": s.instance_type,
                "InstanceTypeFamily": s.family,
                "CpuCoreCount": s.cpu_core_count,
                "MemorySize": s.memory_gib,
                "EniQuantity": s.eni_quantity,
                "EniPrivateIpAddressQuantity": s.eni_private_ip_quantity,
                "EniIpv6AddressQuantity": s.eni_ipv6_quantity,
                "EniTotalQuantity": s.eni_total_quantity,
                "EniTrunkSupported": s.trunk_supported,
                "EriQuantity": 0,
                "InstanceBandwidthRx": s.bandwidth_kbps,
                "InstanceBandwidthTx": s.bandwidth_kbps,
                "NetworkCards": { "NetworkCardInfo": [ { "NetworkCardIndex": 0 } ] },
            })
        })
        .collect();
    Ok(Outcome::body(
        json!({ "InstanceTypes": { "InstanceType": list }, "NextToken": next }),
    ))
}

/// DescribeInstances (instance facts and their ENIs; enough for node bootstrapping).
pub fn instances(p: &Params, world: &World) -> Result<Outcome, ApiError> {
    let ids = p.list("InstanceIds")?;
    let vpc = p.get("VpcId");
    let vsw = p.get("VSwitchId");
    let size = page_size(p, "PageSize", 10, 100)?;
    let number = p.parse::<usize>("PageNumber")?.unwrap_or(1).max(1);
    let matching: Vec<_> = world
        .instances
        .values()
        .filter(|i| ids.is_empty() || ids.contains(&i.id))
        .filter(|_| vpc.is_none_or(|v| v == world.vpc.id))
        .filter(|i| vsw.is_none_or(|v| v == i.vswitch_id))
        .collect();
    let list: Vec<Value> = matching
        .iter()
        .skip((number - 1) * size)
        .take(size)
        .map(|inst| {
            let primary_ip = world
                .enis
                .get(&inst.primary_eni_id)
                .map(|e| e.primary_ip.to_string())
                .unwrap_or_default();
            let nics: Vec<Value> = world
                .enis_of(&inst.id)
                .filter(|e| e.status == EniStatus::InUse && e.trunk_eni_id.is_none())
                .map(|e| {
                    json!({
                        "NetworkInterfaceId": e.id,
                        "MacAddress": e.mac,
                        "PrimaryIpAddress": e.primary_ip.to_string(),
                        "Type": e.eni_type.as_api_str(),
                    })
                })
                .collect();
            json!({
                "InstanceId": inst.id,
                "InstanceName": inst.hostname,
                "HostName": inst.hostname,
                "InstanceType": inst.instance_type,
                "RegionId": world.region_id,
                "ZoneId": inst.zone_id,
                "Status": "Running",
                "InstanceNetworkType": "vpc",
                "CreationTime": inst.creation_time,
                "VpcAttributes": {
                    "VpcId": world.vpc.id,
                    "VSwitchId": inst.vswitch_id,
                    "PrivateIpAddress": { "IpAddress": [primary_ip] },
                },
                "NetworkInterfaces": { "NetworkInterface": nics },
            })
        })
        .collect();
    Ok(Outcome::body(json!({
        "Instances": { "Instance": list },
        "TotalCount": matching.len(),
        "PageNumber": number,
        "PageSize": size,
        "NextToken": "",
    })))
}
