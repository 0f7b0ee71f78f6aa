//! JSON shapes of the ECS answers, with the field names and nesting of the real API
//! (`NetworkInterfaceSets.NetworkInterfaceSet[].PrivateIpSets.PrivateIpSet[]`, …).

use serde_json::{json, Value};
use terway_cloud::EniStatus;

use crate::world::{Eni, World};

/// Account id reported as `OwnerId`.
pub const OWNER_ID: &str = "1234567890123456";

/// `Tags.Tag[]` with `TagKey`/`TagValue`.
pub fn tags(eni: &Eni) -> Value {
    let list: Vec<Value> = eni
        .tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    json!({ "Tag": list })
}

fn private_ip_sets(eni: &Eni) -> Value {
    let list: Vec<Value> = eni
        .all_ipv4()
        .iter()
        .map(|ip| json!({"PrivateIpAddress": ip.to_string(), "Primary": *ip == eni.primary_ip}))
        .collect();
    json!({ "PrivateIpSet": list })
}

fn ipv6_sets(eni: &Eni) -> Value {
    let list: Vec<Value> = eni
        .ipv6
        .iter()
        .map(|ip| json!({"Ipv6Address": ip.to_string()}))
        .collect();
    json!({ "Ipv6Set": list })
}

/// Member ENIs attached through `trunk_id`.
fn members(world: &World, trunk_id: &str) -> Vec<String> {
    world
        .enis
        .values()
        .filter(|e| e.trunk_eni_id.as_deref() == Some(trunk_id) && e.instance_id.is_some())
        .map(|e| e.id.clone())
        .collect()
}

/// The fields common to CreateNetworkInterface, DescribeNetworkInterfaces and
/// DescribeNetworkInterfaceAttribute answers.
pub fn eni(world: &World, eni: &Eni) -> Value {
    // The real API shows InstanceId only once the ENI is (being) attached.
    let attached = !matches!(eni.status, EniStatus::Available);
    let instance_id = if attached {
        eni.instance_id.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let mut v = json!({
        "NetworkInterfaceId": eni.id,
        "NetworkInterfaceName": eni.name,
        "Description": eni.description,
        "Status": eni.status.as_api_str(),
        "Type": eni.eni_type.as_api_str(),
        "VpcId": eni.vpc_id,
        "VSwitchId": eni.vswitch_id,
        "ZoneId": eni.zone_id,
        "PrivateIpAddress": eni.primary_ip.to_string(),
        "MacAddress": eni.mac,
        "InstanceId": instance_id,
        "CreationTime": eni.creation_time,
        "ResourceGroupId": eni.resource_group_id,
        "OwnerId": OWNER_ID,
        "ServiceManaged": false,
        "DeleteOnRelease": false,
        "NetworkInterfaceTrafficMode": "Standard",
        "SecurityGroupIds": { "SecurityGroupId": eni.security_group_ids },
        "PrivateIpSets": private_ip_sets(eni),
        "Ipv6Sets": ipv6_sets(eni),
        "Ipv4PrefixSets": { "Ipv4PrefixSet": [] },
        "Ipv6PrefixSets": { "Ipv6PrefixSet": [] },
        "Tags": tags(eni),
    });
    if attached {
        let mut attachment = json!({
            "InstanceId": instance_id,
            "DeviceIndex": eni.device_index.unwrap_or(0),
            "NetworkCardIndex": 0,
            "TrunkNetworkInterfaceId": eni.trunk_eni_id.clone().unwrap_or_default(),
        });
        if eni.eni_type == terway_cloud::EniType::Trunk {
            attachment["MemberNetworkInterfaceIds"] =
                json!({ "MemberNetworkInterfaceId": members(world, &eni.id) });
        }
        v["Attachment"] = attachment;
    }
    v
}
