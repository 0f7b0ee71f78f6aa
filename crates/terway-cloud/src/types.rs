//! Cloud-side resources as the pool sees them, independent of the wire format.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Lifecycle state of an ENI as the cloud reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EniStatus {
    /// Created, not attached to any instance.
    Available,
    /// Attach requested, not finished.
    Attaching,
    /// Attached and usable.
    InUse,
    /// Detach requested, not finished.
    Detaching,
    /// Being deleted.
    Deleting,
}

impl EniStatus {
    /// The wire name used by the ECS API.
    pub fn as_api_str(self) -> &'static str {
        match self {
            EniStatus::Available => "Available",
            EniStatus::Attaching => "Attaching",
            EniStatus::InUse => "InUse",
            EniStatus::Detaching => "Detaching",
            EniStatus::Deleting => "Deleting",
        }
    }

    /// Parse the ECS API name; `None` for a status this client does not know.
    pub fn from_api_str(s: &str) -> Option<Self> {
        Some(match s {
            "Available" => EniStatus::Available,
            "Attaching" => EniStatus::Attaching,
            "InUse" => EniStatus::InUse,
            "Detaching" => EniStatus::Detaching,
            "Deleting" => EniStatus::Deleting,
            _ => return None,
        })
    }
}

/// Kind of ENI (`Type` in DescribeNetworkInterfaces, `InstanceType` in CreateNetworkInterface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EniType {
    /// The instance's own first ENI.
    Primary,
    /// A secondary ENI created by us or the user.
    Secondary,
    /// A trunk ENI carrying member ENIs as VLANs.
    Trunk,
    /// A member ENI attached to a trunk.
    Member,
}

impl EniType {
    /// The wire name used by the ECS API.
    pub fn as_api_str(self) -> &'static str {
        match self {
            EniType::Primary => "Primary",
            EniType::Secondary => "Secondary",
            EniType::Trunk => "Trunk",
            EniType::Member => "Member",
        }
    }

    /// Parse the ECS API name.
    pub fn from_api_str(s: &str) -> Option<Self> {
        Some(match s {
            "Primary" => EniType::Primary,
            "Secondary" => EniType::Secondary,
            "Trunk" => EniType::Trunk,
            "Member" => EniType::Member,
            _ => return None,
        })
    }
}

/// One private IPv4 address on an ENI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrivateIp {
    /// The address.
    pub address: Ipv4Addr,
    /// Whether it is the ENI's primary address.
    pub primary: bool,
}

/// An elastic network interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkInterface {
    /// `eni-…` id.
    pub id: String,
    /// MAC address, lower case.
    pub mac: String,
    /// Lifecycle state.
    pub status: EniStatus,
    /// Kind of ENI.
    pub eni_type: EniType,
    /// vSwitch the ENI's addresses come from.
    pub vswitch_id: String,
    /// VPC of the ENI.
    pub vpc_id: String,
    /// Zone of the vSwitch.
    pub zone_id: String,
    /// Instance it is attached to, if any.
    pub instance_id: Option<String>,
    /// Trunk ENI it is attached through (member ENIs).
    pub trunk_eni_id: Option<String>,
    /// The ENI's primary private IPv4 address.
    pub primary_ip: Ipv4Addr,
    /// All private IPv4 addresses, primary included.
    pub private_ips: Vec<PrivateIp>,
    /// IPv6 addresses.
    pub ipv6_addresses: Vec<Ipv6Addr>,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Parameters of CreateNetworkInterface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateEniRequest {
    /// vSwitch to create the ENI in.
    pub vswitch_id: String,
    /// Security groups (1..=10).
    pub security_group_ids: Vec<String>,
    /// `Trunk` instead of `Secondary`.
    pub trunk: bool,
    /// Secondary private IPs to assign at creation (the primary IP comes in addition).
    pub secondary_ip_count: u32,
    /// IPv6 addresses to assign at creation.
    pub ipv6_count: u32,
    /// Tags, `creator=terway` included by the caller.
    pub tags: BTreeMap<String, String>,
    /// Free-text description.
    pub description: String,
    /// Resource group, if any.
    pub resource_group_id: Option<String>,
    /// ClientToken to send (default: a fresh one per call, reused on its retries). A caller that may
    /// repeat the logical request from another process (a new controlplane leader) passes a token
    /// derived from what the ENI is for, so the cloud answers the repeat with the first ENI.
    pub client_token: Option<String>,
}

/// Filters of DescribeNetworkInterfaces; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EniFilter {
    /// Attached to this instance.
    pub instance_id: Option<String>,
    /// In this VPC.
    pub vpc_id: Option<String>,
    /// One of these ids.
    pub eni_ids: Vec<String>,
    /// In this status.
    pub status: Option<EniStatus>,
    /// Of this kind.
    pub eni_type: Option<EniType>,
    /// Carrying all of these tags.
    pub tags: BTreeMap<String, String>,
}

/// ENI and IP quotas of an instance type (DescribeInstanceTypes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceTypeLimits {
    /// e.g. `ecs.g7.4xlarge`.
    pub instance_type: String,
    /// EniQuantity: ENIs attachable, primary included.
    pub eni_quantity: u32,
    /// EniPrivateIpAddressQuantity: IPv4 addresses per ENI, primary included.
    pub eni_private_ip_quantity: u32,
    /// EniIpv6AddressQuantity.
    pub eni_ipv6_quantity: u32,
    /// EniTotalQuantity: ENIs including trunk members.
    pub eni_total_quantity: u32,
    /// EniTrunkSupported.
    pub trunk_supported: bool,
}

/// A vSwitch (DescribeVSwitches).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VSwitch {
    /// `vsw-…` id.
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// VPC.
    pub vpc_id: String,
    /// IPv4 CIDR.
    pub cidr: ipnet::Ipv4Net,
    /// IPv6 CIDR, if enabled.
    pub ipv6_cidr: Option<ipnet::Ipv6Net>,
    /// Free IPv4 addresses.
    pub available_ip_count: u64,
}

/// A security group (DescribeSecurityGroups).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecurityGroup {
    /// `sg-…` id.
    pub id: String,
    /// Name.
    pub name: String,
    /// VPC the group belongs to.
    pub vpc_id: String,
}

/// A custom route entry (VPC-route mode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteEntry {
    /// Route table id.
    pub route_table_id: String,
    /// Destination CIDR.
    pub destination_cidr: ipnet::Ipv4Net,
    /// Next hop id (an instance id).
    pub next_hop_id: String,
    /// Next hop kind, e.g. `Instance`.
    pub next_hop_type: String,
    /// `Available`, `Pending`, …
    pub status: String,
}
