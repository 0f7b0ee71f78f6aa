//! The emulated cloud's resources as stored (and persisted): VPC, vSwitches with their address
//! books, instances, ENIs, route entries and remembered ClientTokens.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use terway_cloud::{EniStatus, EniType, NetworkInterface, PrivateIp};

/// The VPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vpc {
    /// `vpc-…`.
    pub id: String,
    /// IPv4 CIDR.
    pub cidr: Ipv4Net,
    /// IPv6 CIDR.
    pub ipv6_cidr: Option<Ipv6Net>,
    /// System route table.
    pub route_table_id: String,
}

/// A vSwitch and the addresses taken from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VSwitch {
    /// `vsw-…`.
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// IPv4 CIDR.
    pub cidr: Ipv4Net,
    /// IPv6 CIDR.
    pub ipv6_cidr: Option<Ipv6Net>,
    /// IPv4 addresses in use (primary and secondary IPs of every ENI).
    pub used_v4: BTreeSet<Ipv4Addr>,
    /// IPv6 addresses in use.
    pub used_v6: BTreeSet<Ipv6Addr>,
}

/// An instance (node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// Instance type (catalogue key).
    pub instance_type: String,
    /// Zone.
    pub zone_id: String,
    /// vSwitch of the primary ENI.
    pub vswitch_id: String,
    /// The primary ENI.
    pub primary_eni_id: String,
    /// RAM role for metadata STS credentials.
    pub ram_role: Option<String>,
    /// Hostname.
    pub hostname: String,
    /// ISO 8601 creation time.
    pub creation_time: String,
}

/// An ENI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Eni {
    /// `eni-…`.
    pub id: String,
    /// MAC, lower case.
    pub mac: String,
    /// Lifecycle state.
    pub status: EniStatus,
    /// Primary / Secondary / Trunk / Member.
    pub eni_type: EniType,
    /// Type it was created as (a Member goes back to this on detach).
    pub created_type: EniType,
    /// vSwitch.
    pub vswitch_id: String,
    /// VPC.
    pub vpc_id: String,
    /// Zone.
    pub zone_id: String,
    /// Attached (or attaching/detaching) instance.
    pub instance_id: Option<String>,
    /// Trunk ENI for member ENIs.
    pub trunk_eni_id: Option<String>,
    /// Primary private IPv4.
    pub primary_ip: Ipv4Addr,
    /// Secondary private IPv4s, in assignment order.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Description.
    pub description: String,
    /// Name.
    pub name: String,
    /// Resource group.
    pub resource_group_id: String,
    /// ISO 8601 creation time.
    pub creation_time: String,
    /// Device index on the instance while attached.
    pub device_index: Option<u32>,
    /// Bumped by every transition so a stale completion task recognises it was superseded.
    pub op_seq: u64,
}

impl Eni {
    /// Every private IPv4, primary first.
    pub fn all_ipv4(&self) -> Vec<Ipv4Addr> {
        std::iter::once(self.primary_ip)
            .chain(self.secondary_ips.iter().copied())
            .collect()
    }

    /// The cloud-client view of this ENI (what the fabric hook receives).
    pub fn to_api(&self) -> NetworkInterface {
        NetworkInterface {
            id: self.id.clone(),
            mac: self.mac.clone(),
            status: self.status,
            eni_type: self.eni_type,
            vswitch_id: self.vswitch_id.clone(),
            vpc_id: self.vpc_id.clone(),
            zone_id: self.zone_id.clone(),
            instance_id: self.instance_id.clone(),
            trunk_eni_id: self.trunk_eni_id.clone(),
            primary_ip: self.primary_ip,
            private_ips: self
                .all_ipv4()
                .into_iter()
                .map(|address| PrivateIp {
                    address,
                    primary: address == self.primary_ip,
                })
                .collect(),
            ipv6_addresses: self.ipv6.clone(),
            security_group_ids: self.security_group_ids.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// A custom route entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `rte-…`.
    pub id: String,
    /// Route table.
    pub route_table_id: String,
    /// Destination.
    pub destination: Ipv4Net,
    /// Next hop id (instance).
    pub next_hop_id: String,
    /// Next hop type (`Instance`).
    pub next_hop_type: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
}

/// A security group of the VPC: its ingress and egress rules, and whether its members reach each other.
/// The fabric enforces the ingress side on every ENI in the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// When it was created (ISO 8601).
    pub creation_time: String,
    /// Rules, in the order they were authorized.
    #[serde(default)]
    pub rules: Vec<SgRule>,
    /// `InnerAccessPolicy` Accept: ENIs of the group reach each other whatever the rules say.
    #[serde(default = "inner_accept_default")]
    pub inner_accept: bool,
}

fn inner_accept_default() -> bool {
    true
}

/// One security-group rule (AuthorizeSecurityGroup / AuthorizeSecurityGroupEgress).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRule {
    /// `ingress` or `egress`.
    pub direction: String,
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    /// First port (-1 with `all`/`icmp`).
    pub port_from: i32,
    /// Last port.
    pub port_to: i32,
    /// Source (ingress) or destination (egress) CIDR, when the rule names one.
    pub cidr: Option<Ipv4Net>,
    /// Source (ingress) group, when the rule names one instead of a CIDR.
    pub group: Option<String>,
    /// `accept` (true) or `drop`.
    pub accept: bool,
    /// 1 (first) to 100.
    pub priority: u8,
}

/// A successful call remembered under its ClientToken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Business parameters of the original call.
    pub fingerprint: BTreeMap<String, String>,
    /// The original answer (without RequestId).
    pub response: serde_json::Value,
    /// When it was recorded (ms since the Unix epoch), for pruning.
    #[serde(default)]
    pub at_ms: u64,
}
