//! Wire JSON of the ECS/VPC responses into our types. Parsing is lenient about representation
//! (numbers as strings, `TagKey` or `Key`, absent lists) because the SDKs are, but strict about the
//! facts the pool relies on: an ENI without an id or a parsable primary IP is an error.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::error::CloudError;
use crate::types::{
    EniStatus, EniType, InstanceTypeLimits, NetworkInterface, PrivateIp, RouteEntry, SecurityGroup,
    VSwitch,
};

fn bad(action: &str, what: String) -> CloudError {
    CloudError::Transport {
        action: action.to_string(),
        message: format!("unexpected response: {what}"),
    }
}

/// String field (empty if absent or not a string/number).
pub fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Unsigned field from a number or a numeric string.
pub fn u(v: &Value, key: &str) -> u64 {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(x)) => x.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn b(v: &Value, key: &str) -> bool {
    match v.get(key) {
        Some(Value::Bool(x)) => *x,
        Some(Value::String(x)) => x.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// `v[outer][inner]` as an array (the SDKs' `{"Xs": {"X": [...]}}` nesting); empty if absent.
pub fn nested<'a>(v: &'a Value, outer: &str, inner: &str) -> &'a [Value] {
    v.get(outer)
        .and_then(|o| o.get(inner))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn opt(x: String) -> Option<String> {
    Some(x).filter(|s| !s.is_empty())
}

/// One ENI from DescribeNetworkInterfaces / DescribeNetworkInterfaceAttribute / CreateNetworkInterface.
pub fn eni(action: &str, v: &Value) -> Result<NetworkInterface, CloudError> {
    let id = s(v, "NetworkInterfaceId");
    if id.is_empty() {
        return Err(bad(action, "ENI without NetworkInterfaceId".into()));
    }
    let primary_ip: Ipv4Addr = s(v, "PrivateIpAddress")
        .parse()
        .map_err(|_| bad(action, format!("ENI {id} has no valid PrivateIpAddress")))?;
    let status_raw = s(v, "Status");
    let status = EniStatus::from_api_str(&status_raw).ok_or_else(|| {
        bad(
            action,
            format!("ENI {id} has unknown Status {status_raw:?}"),
        )
    })?;
    // CreateNetworkInterface reports the kind as `Type`; absent means Secondary.
    let eni_type = EniType::from_api_str(&s(v, "Type")).unwrap_or(EniType::Secondary);
    let attachment = v.get("Attachment").cloned().unwrap_or(Value::Null);
    let instance_id = opt(s(v, "InstanceId")).or_else(|| opt(s(&attachment, "InstanceId")));
    let trunk_eni_id = opt(s(&attachment, "TrunkNetworkInterfaceId"));
    let mut private_ips: Vec<PrivateIp> = nested(v, "PrivateIpSets", "PrivateIpSet")
        .iter()
        .filter_map(|p| {
            let address = s(p, "PrivateIpAddress").parse().ok()?;
            Some(PrivateIp {
                address,
                primary: b(p, "Primary"),
            })
        })
        .collect();
    if !private_ips.iter().any(|p| p.address == primary_ip) {
        private_ips.insert(
            0,
            PrivateIp {
                address: primary_ip,
                primary: true,
            },
        );
    }
    let ipv6_addresses = nested(v, "Ipv6Sets", "Ipv6Set")
        .iter()
        .filter_map(|p| s(p, "Ipv6Address").parse::<Ipv6Addr>().ok())
        .collect();
    let security_group_ids = nested(v, "SecurityGroupIds", "SecurityGroupId")
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    let tags: BTreeMap<String, String> = nested(v, "Tags", "Tag")
        .iter()
        .filter_map(|t| {
            let k = opt(s(t, "TagKey")).or_else(|| opt(s(t, "Key")))?;
            let val = opt(s(t, "TagValue"))
                .or_else(|| opt(s(t, "Value")))
                .unwrap_or_default();
            Some((k, val))
        })
        .collect();
    Ok(NetworkInterface {
        id,
        mac: s(v, "MacAddress").to_ascii_lowercase(),
        status,
        eni_type,
        vswitch_id: s(v, "VSwitchId"),
        vpc_id: s(v, "VpcId"),
        zone_id: s(v, "ZoneId"),
        instance_id,
        trunk_eni_id,
        primary_ip,
        private_ips,
        ipv6_addresses,
        security_group_ids,
        tags,
    })
}

/// The ENIs of one DescribeNetworkInterfaces page and its NextToken.
pub fn eni_page(v: &Value) -> Result<(Vec<NetworkInterface>, Option<String>), CloudError> {
    let enis = nested(v, "NetworkInterfaceSets", "NetworkInterfaceSet")
        .iter()
        .map(|e| eni("DescribeNetworkInterfaces", e))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((enis, opt(s(v, "NextToken"))))
}

/// Addresses of an AssignPrivateIpAddresses response.
pub fn assigned_ipv4(v: &Value) -> Result<Vec<Ipv4Addr>, CloudError> {
    let set = v
        .get("AssignedPrivateIpAddressesSet")
        .unwrap_or(&Value::Null);
    nested(set, "PrivateIpSet", "PrivateIpAddress")
        .iter()
        .map(|x| {
            x.as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| bad("AssignPrivateIpAddresses", format!("address {x}")))
        })
        .collect()
}

/// Addresses of an AssignIpv6Addresses response.
pub fn assigned_ipv6(v: &Value) -> Result<Vec<Ipv6Addr>, CloudError> {
    nested(v, "Ipv6Sets", "Ipv6Address")
        .iter()
        .map(|x| {
            x.as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| bad("AssignIpv6Addresses", format!("address {x}")))
        })
        .collect()
}

/// Instance types of a DescribeInstanceTypes page and its NextToken.
pub fn instance_types(v: &Value) -> (Vec<InstanceTypeLimits>, Option<String>) {
    let types = nested(v, "InstanceTypes", "InstanceType")
        .iter()
        .map(|t| InstanceTypeLimits {
            instance_type: s(t, "InstanceTypeId"),
            eni_quantity: u(t, "EniQuantity") as u32,
            eni_private_ip_quantity: u(t, "EniPrivateIpAddressQuantity") as u32,
            eni_ipv6_quantity: u(t, "EniIpv6AddressQuantity") as u32,
            eni_total_quantity: u(t, "EniTotalQuantity") as u32,
            trunk_supported: b(t, "EniTrunkSupported"),
        })
        .collect();
    (types, opt(s(v, "NextToken")))
}

/// vSwitches of a DescribeVSwitches response.
pub fn vswitches(v: &Value) -> Result<Vec<VSwitch>, CloudError> {
    nested(v, "VSwitches", "VSwitch")
        .iter()
        .map(|x| {
            let id = s(x, "VSwitchId");
            let cidr = s(x, "CidrBlock")
                .parse()
                .map_err(|_| bad("DescribeVSwitches", format!("vSwitch {id} CidrBlock")))?;
            Ok(VSwitch {
                zone_id: s(x, "ZoneId"),
                vpc_id: s(x, "VpcId"),
                cidr,
                ipv6_cidr: s(x, "Ipv6CidrBlock").parse().ok(),
                available_ip_count: u(x, "AvailableIpAddressCount"),
                id,
            })
        })
        .collect()
}

/// Security groups of a DescribeSecurityGroups page and the answer's TotalCount.
pub fn security_groups(v: &Value) -> (Vec<SecurityGroup>, u64) {
    let groups = nested(v, "SecurityGroups", "SecurityGroup")
        .iter()
        .map(|x| SecurityGroup {
            id: s(x, "SecurityGroupId"),
            name: s(x, "SecurityGroupName"),
            vpc_id: s(x, "VpcId"),
        })
        .collect();
    (groups, u(v, "TotalCount"))
}

/// Route entries of a DescribeRouteEntryList page and its NextToken.
pub fn route_entries(route_table_id: &str, v: &Value) -> (Vec<RouteEntry>, Option<String>) {
    let entries = nested(v, "RouteEntrys", "RouteEntry")
        .iter()
        .filter_map(|e| {
            let destination_cidr = s(e, "DestinationCidrBlock").parse().ok()?;
            let hop = nested(e, "NextHops", "NextHop")
                .first()
                .cloned()
                .unwrap_or(Value::Null);
            let next_hop_id = opt(s(&hop, "NextHopId"))
                .or_else(|| opt(s(e, "NextHopId")))
                .unwrap_or_default();
            let next_hop_type = opt(s(&hop, "NextHopType"))
                .or_else(|| opt(s(e, "NextHopType")))
                .unwrap_or_default();
            Some(RouteEntry {
                route_table_id: opt(s(e, "RouteTableId"))
                    .unwrap_or_else(|| route_table_id.to_string()),
                destination_cidr,
                next_hop_id,
                next_hop_type,
                status: s(e, "Status"),
            })
        })
        .collect();
    (entries, opt(s(v, "NextToken")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describe_page_with_member_eni_and_tags() {
        let v = json!({
            "RequestId": "R", "NextToken": "t2",
            "NetworkInterfaceSets": {"NetworkInterfaceSet": [{
                "NetworkInterfaceId": "eni-m", "Status": "InUse", "Type": "Member",
                "VpcId": "vpc-1", "VSwitchId": "vsw-1", "ZoneId": "z", "PrivateIpAddress": "10.0.0.5",
                "MacAddress": "00:16:3E:00:00:01", "InstanceId": "",
                "Attachment": {"InstanceId": "i-1", "TrunkNetworkInterfaceId": "eni-t", "DeviceIndex": 0},
                "SecurityGroupIds": {"SecurityGroupId": ["sg-1"]},
                "PrivateIpSets": {"PrivateIpSet": [
                    {"PrivateIpAddress": "10.0.0.5", "Primary": true},
                    {"PrivateIpAddress": "10.0.0.6", "Primary": false}]},
                "Ipv6Sets": {"Ipv6Set": [{"Ipv6Address": "2408::1"}]},
                "Tags": {"Tag": [{"TagKey": "creator", "TagValue": "terway"}]}
            }]}
        });
        let (enis, next) = eni_page(&v).unwrap();
        assert_eq!(next.as_deref(), Some("t2"));
        let e = &enis[0];
        assert_eq!((e.eni_type, e.status), (EniType::Member, EniStatus::InUse));
        assert_eq!(e.instance_id.as_deref(), Some("i-1"));
        assert_eq!(e.trunk_eni_id.as_deref(), Some("eni-t"));
        assert_eq!(e.mac, "00:16:3e:00:00:01");
        assert_eq!(e.private_ips.len(), 2);
        assert_eq!(
            e.ipv6_addresses,
            vec!["2408::1".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(e.tags["creator"], "terway");
        assert!(eni(
            "X",
            &json!({"NetworkInterfaceId": "eni-1", "Status": "InUse"})
        )
        .is_err());
        assert!(eni("X", &json!({"NetworkInterfaceId": "eni-1", "Status": "Weird", "PrivateIpAddress": "10.0.0.1"})).is_err());
    }

    #[test]
    fn assign_and_catalogue_responses() {
        let v = json!({"AssignedPrivateIpAddressesSet": {"NetworkInterfaceId": "eni-1",
            "PrivateIpSet": {"PrivateIpAddress": ["10.0.0.7", "10.0.0.8"]}}});
        assert_eq!(assigned_ipv4(&v).unwrap().len(), 2);
        let v = json!({"NetworkInterfaceId": "eni-1", "Ipv6Sets": {"Ipv6Address": ["2408::2"]}});
        assert_eq!(assigned_ipv6(&v).unwrap().len(), 1);
        let v = json!({"InstanceTypes": {"InstanceType": [{"InstanceTypeId": "ecs.g7.4xlarge",
            "EniQuantity": 8, "EniPrivateIpAddressQuantity": "30", "EniIpv6AddressQuantity": 30,
            "EniTotalQuantity": 24, "EniTrunkSupported": true}]}});
        let (t, next) = instance_types(&v);
        assert_eq!(
            (
                t[0].eni_quantity,
                t[0].eni_private_ip_quantity,
                t[0].trunk_supported
            ),
            (8, 30, true)
        );
        assert!(next.is_none());
        let v = json!({"VSwitches": {"VSwitch": [{"VSwitchId": "vsw-1", "ZoneId": "z", "VpcId": "v",
            "CidrBlock": "10.0.0.0/24", "AvailableIpAddressCount": 250, "Ipv6CidrBlock": ""}]}});
        let vs = vswitches(&v).unwrap();
        assert_eq!((vs[0].available_ip_count, vs[0].ipv6_cidr), (250, None));
        let v = json!({"RouteEntrys": {"RouteEntry": [{"RouteTableId": "vtb-1", "DestinationCidrBlock": "172.16.0.0/24",
            "Status": "Available", "NextHops": {"NextHop": [{"NextHopId": "i-1", "NextHopType": "Instance"}]}}]}});
        let (r, _) = route_entries("vtb-1", &v);
        assert_eq!(
            (r[0].next_hop_id.as_str(), r[0].next_hop_type.as_str()),
            ("i-1", "Instance")
        );
    }
}
