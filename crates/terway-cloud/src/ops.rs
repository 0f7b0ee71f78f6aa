//! The [`Cloud`] operations over [`AlibabaCloud`]: request parameters as Terway sends them (§5.1),
//! paging, and the "already done" outcomes Terway treats as success.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::api::{Cloud, CloudResult};
use crate::backoff::{DEFAULT, ENI_CREATE, ENI_IP_OPS, ENI_OPS};
use crate::client::{ok_if_not_found, AlibabaCloud, Call};
use crate::error::CloudError;
use crate::parse;
use crate::types::{
    CreateEniRequest, EniFilter, EniStatus, InstanceTypeLimits, NetworkInterface, RouteEntry,
    SecurityGroup, VSwitch,
};

/// Page size of DescribeNetworkInterfaces (the API maximum, as Terway uses).
pub const ENI_PAGE_SIZE: usize = 500;
/// `NetworkInterfaceId.N` accepts at most this many ids per request.
pub const ENI_IDS_PER_REQUEST: usize = 100;
/// `SecurityGroupIds` accepts at most this many ids per request.
pub const SECURITY_GROUP_IDS_PER_REQUEST: usize = 100;
/// Page size of DescribeSecurityGroups (the API maximum).
const SECURITY_GROUP_PAGE_SIZE: u64 = 50;

/// `InstanceTypes.N` accepts at most this many types per request.
pub const INSTANCE_TYPES_PER_REQUEST: usize = 10;

fn indexed(call: Call, prefix: &str, values: impl IntoIterator<Item = String>) -> Call {
    values
        .into_iter()
        .enumerate()
        .fold(call, |c, (i, v)| c.param(&format!("{prefix}.{}", i + 1), v))
}

const ENI_NOT_FOUND: &str = "InvalidEniId.NotFound";
const ECS_NOT_FOUND: &str = "InvalidEcsId.NotFound";

fn unassigned_already(e: &CloudError) -> bool {
    e.code()
        .is_some_and(|c| c == ENI_NOT_FOUND || c.contains("IpUnassigned"))
}

impl AlibabaCloud {
    /// One filtered DescribeNetworkInterfaces query, every page followed.
    async fn describe_pages(
        &self,
        filter: &EniFilter,
        ids: &[String],
    ) -> CloudResult<Vec<NetworkInterface>> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut call = Call::ecs("DescribeNetworkInterfaces", DEFAULT)
                .param("MaxResults", ENI_PAGE_SIZE.to_string())
                .other("ENI list");
            if let Some(i) = &filter.instance_id {
                call = call.param("InstanceId", i.clone());
            }
            if let Some(v) = &filter.vpc_id {
                call = call.param("VpcId", v.clone());
            }
            if let Some(s) = filter.status {
                call = call.param("Status", s.as_api_str());
            }
            if let Some(t) = filter.eni_type {
                call = call.param("Type", t.as_api_str());
            }
            call = indexed(call, "NetworkInterfaceId", ids.iter().cloned());
            for (i, (k, v)) in filter.tags.iter().enumerate() {
                call = call
                    .param(&format!("Tag.{}.Key", i + 1), k.clone())
                    .param(&format!("Tag.{}.Value", i + 1), v.clone());
            }
            if let Some(t) = &next {
                call = call.param("NextToken", t.clone());
            }
            let (page, token) = parse::eni_page(&self.call(call).await?)?;
            out.extend(page);
            match token {
                Some(t) if Some(&t) != next.as_ref() => next = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// Whether `eni_id` is already attached (or attaching) where an attach asked it to be.
    async fn attached_as_requested(
        &self,
        eni_id: &str,
        instance_id: &str,
        trunk: Option<&str>,
    ) -> CloudResult<bool> {
        Ok(self
            .describe_network_interface(eni_id)
            .await?
            .is_some_and(|e| {
                matches!(e.status, EniStatus::Attaching | EniStatus::InUse)
                    && e.instance_id.as_deref() == Some(instance_id)
                    && (trunk.is_none() || e.trunk_eni_id.as_deref() == trunk)
            }))
    }
}

impl Cloud for AlibabaCloud {
    async fn create_network_interface(
        &self,
        req: &CreateEniRequest,
    ) -> CloudResult<NetworkInterface> {
        let mut call = Call::ecs("CreateNetworkInterface", ENI_CREATE)
            .vswitch(&req.vswitch_id)
            .idempotent()
            .token(req.client_token.as_deref())
            .param("VSwitchId", req.vswitch_id.clone())
            .param(
                "InstanceType",
                if req.trunk { "Trunk" } else { "Secondary" },
            )
            .param("Description", req.description.clone());
        call = indexed(
            call,
            "SecurityGroupIds",
            req.security_group_ids.iter().cloned(),
        );
        if req.secondary_ip_count > 0 {
            call = call.param(
                "SecondaryPrivateIpAddressCount",
                req.secondary_ip_count.to_string(),
            );
        }
        if req.ipv6_count > 0 {
            call = call.param("Ipv6AddressCount", req.ipv6_count.to_string());
        }
        if let Some(rg) = &req.resource_group_id {
            call = call.param("ResourceGroupId", rg.clone());
        }
        for (i, (k, v)) in req.tags.iter().enumerate() {
            call = call
                .param(&format!("Tag.{}.Key", i + 1), k.clone())
                .param(&format!("Tag.{}.Value", i + 1), v.clone());
        }
        let v = self.call(call).await?;
        parse::eni("CreateNetworkInterface", &v)
    }

    async fn attach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
        trunk_eni_id: Option<&str>,
    ) -> CloudResult<()> {
        let mut call = Call::ecs("AttachNetworkInterface", ENI_OPS)
            .eni(eni_id)
            .instance(instance_id)
            .param("NetworkInterfaceId", eni_id)
            .param("InstanceId", instance_id);
        if let Some(t) = trunk_eni_id {
            call = call.param("TrunkNetworkInstanceId", t);
        }
        match self.call(call).await {
            Ok(_) => Ok(()),
            // A retried attach whose first attempt did land finds the ENI busy: that is success.
            Err(e @ CloudError::InvalidEniState { .. }) => {
                if self
                    .attached_as_requested(eni_id, instance_id, trunk_eni_id)
                    .await?
                {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn detach_network_interface(&self, eni_id: &str, instance_id: &str) -> CloudResult<()> {
        let call = Call::ecs("DetachNetworkInterface", ENI_OPS)
            .eni(eni_id)
            .instance(instance_id)
            .param("NetworkInterfaceId", eni_id)
            .param("InstanceId", instance_id);
        match self.call(call).await {
            Ok(_) => Ok(()),
            Err(e)
                if e.code()
                    .is_some_and(|c| c == ENI_NOT_FOUND || c == ECS_NOT_FOUND) =>
            {
                Ok(())
            }
            Err(e @ CloudError::InvalidEniState { .. }) => {
                let detached = self
                    .describe_network_interface(eni_id)
                    .await?
                    .is_none_or(|e| {
                        matches!(e.status, EniStatus::Available | EniStatus::Detaching)
                            || e.instance_id.as_deref() != Some(instance_id)
                    });
                if detached {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_network_interface(&self, eni_id: &str) -> CloudResult<()> {
        let call = Call::ecs("DeleteNetworkInterface", ENI_OPS)
            .eni(eni_id)
            .param("NetworkInterfaceId", eni_id);
        ok_if_not_found(self.call(call).await, &[ENI_NOT_FOUND])
    }

    async fn describe_network_interfaces(
        &self,
        filter: &EniFilter,
    ) -> CloudResult<Vec<NetworkInterface>> {
        if filter.eni_ids.is_empty() {
            return self.describe_pages(filter, &[]).await;
        }
        let mut out = Vec::new();
        for chunk in filter.eni_ids.chunks(ENI_IDS_PER_REQUEST) {
            out.extend(self.describe_pages(filter, chunk).await?);
        }
        Ok(out)
    }

    async fn describe_network_interface(
        &self,
        eni_id: &str,
    ) -> CloudResult<Option<NetworkInterface>> {
        let call = Call::ecs("DescribeNetworkInterfaceAttribute", DEFAULT)
            .eni(eni_id)
            .param("NetworkInterfaceId", eni_id);
        match self.call(call).await {
            Ok(v) => parse::eni("DescribeNetworkInterfaceAttribute", &v).map(Some),
            Err(CloudError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn assign_private_ips(&self, eni_id: &str, count: u32) -> CloudResult<Vec<Ipv4Addr>> {
        let call = Call::ecs("AssignPrivateIpAddresses", ENI_IP_OPS)
            .eni(eni_id)
            .idempotent()
            .param("NetworkInterfaceId", eni_id)
            .param("SecondaryPrivateIpAddressCount", count.to_string());
        parse::assigned_ipv4(&self.call(call).await?)
    }

    async fn unassign_private_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> CloudResult<()> {
        if ips.is_empty() {
            return Ok(());
        }
        let call = Call::ecs("UnassignPrivateIpAddresses", ENI_IP_OPS)
            .eni(eni_id)
            .param("NetworkInterfaceId", eni_id);
        let call = indexed(
            call,
            "PrivateIpAddress",
            ips.iter().map(ToString::to_string),
        );
        match self.call(call).await {
            Ok(_) => Ok(()),
            Err(e) if unassigned_already(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn assign_ipv6_addresses(&self, eni_id: &str, count: u32) -> CloudResult<Vec<Ipv6Addr>> {
        let call = Call::ecs("AssignIpv6Addresses", ENI_IP_OPS)
            .eni(eni_id)
            .idempotent()
            .param("NetworkInterfaceId", eni_id)
            .param("Ipv6AddressCount", count.to_string());
        parse::assigned_ipv6(&self.call(call).await?)
    }

    async fn unassign_ipv6_addresses(&self, eni_id: &str, ips: &[Ipv6Addr]) -> CloudResult<()> {
        if ips.is_empty() {
            return Ok(());
        }
        let call = Call::ecs("UnassignIpv6Addresses", ENI_IP_OPS)
            .eni(eni_id)
            .param("NetworkInterfaceId", eni_id);
        let call = indexed(call, "Ipv6Address", ips.iter().map(ToString::to_string));
        match self.call(call).await {
            Ok(_) => Ok(()),
            Err(e) if unassigned_already(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn describe_instance_types(
        &self,
        instance_types: &[String],
    ) -> CloudResult<Vec<InstanceTypeLimits>> {
        let mut out = Vec::new();
        for chunk in instance_types.chunks(INSTANCE_TYPES_PER_REQUEST) {
            let mut next: Option<String> = None;
            loop {
                let mut call = Call::ecs("DescribeInstanceTypes", DEFAULT)
                    .other(&chunk.join(","))
                    .param("MaxResults", "100");
                call = indexed(call, "InstanceTypes", chunk.iter().cloned());
                if let Some(t) = &next {
                    call = call.param("NextToken", t.clone());
                }
                let (page, token) = parse::instance_types(&self.call(call).await?);
                out.extend(page);
                match token {
                    Some(t) if Some(&t) != next.as_ref() => next = Some(t),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    async fn describe_vswitches(&self, ids: &[String]) -> CloudResult<Vec<VSwitch>> {
        let mut out = Vec::new();
        for id in ids {
            let call = Call::vpc("DescribeVSwitches", DEFAULT)
                .vswitch(id)
                .param("VSwitchId", id.clone())
                .param("PageSize", "50");
            out.extend(parse::vswitches(&self.call(call).await?)?);
        }
        Ok(out)
    }

    async fn describe_security_groups(&self, ids: &[String]) -> CloudResult<Vec<SecurityGroup>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(SECURITY_GROUP_IDS_PER_REQUEST) {
            // The API takes the ids as one JSON array string.
            let list = serde_json::to_string(chunk).map_err(|e| CloudError::Transport {
                action: "DescribeSecurityGroups".into(),
                message: format!("encode the ids: {e}"),
            })?;
            let mut page = 1u64;
            loop {
                let call = Call::ecs("DescribeSecurityGroups", DEFAULT)
                    .other(&chunk.join(","))
                    .param("SecurityGroupIds", list.clone())
                    .param("PageSize", SECURITY_GROUP_PAGE_SIZE.to_string())
                    .param("PageNumber", page.to_string());
                let (groups, total) = parse::security_groups(&self.call(call).await?);
                let got = groups.len() as u64;
                out.extend(groups);
                if got < SECURITY_GROUP_PAGE_SIZE || page * SECURITY_GROUP_PAGE_SIZE >= total {
                    break;
                }
                page += 1;
            }
        }
        Ok(out)
    }

    async fn create_route_entry(
        &self,
        route_table_id: &str,
        destination: ipnet::Ipv4Net,
        next_hop_instance: &str,
    ) -> CloudResult<()> {
        let call = Call::vpc("CreateRouteEntry", ENI_OPS)
            .instance(next_hop_instance)
            .other(route_table_id)
            .idempotent()
            .param("RouteTableId", route_table_id)
            .param("DestinationCidrBlock", destination.to_string())
            .param("NextHopType", "Instance")
            .param("NextHopId", next_hop_instance);
        match self.call(call).await {
            Ok(_) => Ok(()),
            // The same route already exists (an earlier attempt landed): nothing to do.
            Err(e)
                if e.code()
                    .is_some_and(|c| c.ends_with("EntryConflict.Duplicated")) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_route_entry(
        &self,
        route_table_id: &str,
        destination: ipnet::Ipv4Net,
        next_hop_instance: &str,
    ) -> CloudResult<()> {
        let call = Call::vpc("DeleteRouteEntry", ENI_OPS)
            .instance(next_hop_instance)
            .other(route_table_id)
            .param("RouteTableId", route_table_id)
            .param("DestinationCidrBlock", destination.to_string())
            .param("NextHopId", next_hop_instance);
        ok_if_not_found(self.call(call).await, &["InvalidRouteEntry.NotFound"])
    }

    async fn describe_route_entries(&self, route_table_id: &str) -> CloudResult<Vec<RouteEntry>> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut call = Call::vpc("DescribeRouteEntryList", DEFAULT)
                .other(route_table_id)
                .param("RouteTableId", route_table_id)
                .param("MaxResult", "100");
            if let Some(t) = &next {
                call = call.param("NextToken", t.clone());
            }
            let (page, token) = parse::route_entries(route_table_id, &self.call(call).await?);
            out.extend(page);
            match token {
                Some(t) if Some(&t) != next.as_ref() => next = Some(t),
                _ => return Ok(out),
            }
        }
    }
}
