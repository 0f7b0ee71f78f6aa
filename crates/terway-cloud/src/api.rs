//! The operations the pool needs from a cloud, as traits: one for the OpenAPI, one for the instance
//! metadata service. The daemon is generic over them; the Alibaba client implements both over HTTP.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::CloudError;
use crate::types::{
    CreateEniRequest, EniFilter, InstanceTypeLimits, NetworkInterface, RouteEntry, SecurityGroup,
    VSwitch,
};

/// Result of a cloud call.
pub type CloudResult<T> = Result<T, CloudError>;

/// ECS/VPC OpenAPI operations on ENIs, addresses, instance types, vSwitches and routes.
///
/// Implementations apply rate limits, retries and idempotency tokens themselves, so one call here is one
/// *logical* operation. `NotFound` on detach/delete/unassign is reported as success, as Terway does.
pub trait Cloud: Send + Sync + 'static {
    /// CreateNetworkInterface; returns the new ENI (status Available).
    fn create_network_interface(
        &self,
        req: &CreateEniRequest,
    ) -> impl Future<Output = CloudResult<NetworkInterface>> + Send;
    /// AttachNetworkInterface; returns once the request is accepted (the ENI is then Attaching).
    fn attach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
        trunk_eni_id: Option<&str>,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// DetachNetworkInterface; returns once accepted. Unknown ENI or instance = success.
    fn detach_network_interface(
        &self,
        eni_id: &str,
        instance_id: &str,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// DeleteNetworkInterface. Unknown ENI = success.
    fn delete_network_interface(
        &self,
        eni_id: &str,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// DescribeNetworkInterfaces with every page followed.
    fn describe_network_interfaces(
        &self,
        filter: &EniFilter,
    ) -> impl Future<Output = CloudResult<Vec<NetworkInterface>>> + Send;
    /// DescribeNetworkInterfaceAttribute for one ENI; `None` if it does not exist.
    fn describe_network_interface(
        &self,
        eni_id: &str,
    ) -> impl Future<Output = CloudResult<Option<NetworkInterface>>> + Send;
    /// AssignPrivateIpAddresses by count; returns the new addresses.
    fn assign_private_ips(
        &self,
        eni_id: &str,
        count: u32,
    ) -> impl Future<Output = CloudResult<Vec<Ipv4Addr>>> + Send;
    /// UnassignPrivateIpAddresses. Already-unassigned addresses or an unknown ENI = success.
    fn unassign_private_ips(
        &self,
        eni_id: &str,
        ips: &[Ipv4Addr],
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// AssignIpv6Addresses by count.
    fn assign_ipv6_addresses(
        &self,
        eni_id: &str,
        count: u32,
    ) -> impl Future<Output = CloudResult<Vec<Ipv6Addr>>> + Send;
    /// UnassignIpv6Addresses.
    fn unassign_ipv6_addresses(
        &self,
        eni_id: &str,
        ips: &[Ipv6Addr],
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// DescribeInstanceTypes for the given types.
    fn describe_instance_types(
        &self,
        instance_types: &[String],
    ) -> impl Future<Output = CloudResult<Vec<InstanceTypeLimits>>> + Send;
    /// DescribeVSwitches for the given ids.
    fn describe_vswitches(
        &self,
        ids: &[String],
    ) -> impl Future<Output = CloudResult<Vec<VSwitch>>> + Send;
    /// DescribeSecurityGroups for the given ids; ids that do not exist are absent from the answer.
    fn describe_security_groups(
        &self,
        ids: &[String],
    ) -> impl Future<Output = CloudResult<Vec<SecurityGroup>>> + Send;
    /// CreateRouteEntry (VPC-route mode): `destination` via instance `next_hop_instance`.
    fn create_route_entry(
        &self,
        route_table_id: &str,
        destination: ipnet::Ipv4Net,
        next_hop_instance: &str,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// DeleteRouteEntry. Unknown entry = success.
    fn delete_route_entry(
        &self,
        route_table_id: &str,
        destination: ipnet::Ipv4Net,
        next_hop_instance: &str,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    /// DescribeRouteEntryList of one route table.
    fn describe_route_entries(
        &self,
        route_table_id: &str,
    ) -> impl Future<Output = CloudResult<Vec<RouteEntry>>> + Send;
}

/// Facts about this instance from the metadata service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceIdentity {
    /// `i-…`.
    pub instance_id: String,
    /// e.g. `ecs.g7.4xlarge`.
    pub instance_type: String,
    /// Region.
    pub region_id: String,
    /// Zone.
    pub zone_id: String,
    /// VPC.
    pub vpc_id: String,
    /// vSwitch of the primary ENI.
    pub vswitch_id: String,
    /// MAC of the primary ENI.
    pub primary_mac: String,
}

/// What the metadata service says about one attached ENI (by MAC).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EniMetadata {
    /// MAC, lower case.
    pub mac: String,
    /// `eni-…`.
    pub eni_id: String,
    /// Primary IPv4.
    pub primary_ip: Ipv4Addr,
    /// vSwitch gateway.
    pub gateway: Ipv4Addr,
    /// vSwitch.
    pub vswitch_id: String,
    /// vSwitch CIDR.
    pub vswitch_cidr: ipnet::Ipv4Net,
    /// All private IPv4s on the ENI.
    pub private_ipv4s: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub ipv6s: Vec<Ipv6Addr>,
}

/// The instance metadata service (100.100.100.200 on a real instance).
pub trait Metadata: Send + Sync + 'static {
    /// Identity of this instance.
    fn instance(&self) -> impl Future<Output = CloudResult<InstanceIdentity>> + Send;
    /// MACs of every ENI currently attached (`network/interfaces/macs/`).
    fn eni_macs(&self) -> impl Future<Output = CloudResult<Vec<String>>> + Send;
    /// Details of one attached ENI; `None` when the MAC is not (yet) visible.
    fn eni(&self, mac: &str) -> impl Future<Output = CloudResult<Option<EniMetadata>>> + Send;
}
