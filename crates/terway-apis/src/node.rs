//! Terway's `Node` (cluster-scoped, named after the Kubernetes node): ENI capacity, pool
//! settings and the node's ENIs and IPs. Not to be confused with the core `v1/Node`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{is_default, EniType, SelectionPolicy};

pub use crate::node_status::{
    Ip, IpPrefix, IpPrefixStatus, IpStatus, Nic, NicCondition, NodeStatus,
};

/// Desired ENI and IP pool configuration of a node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "network.alibabacloud.com",
    version = "v1beta1",
    kind = "Node",
    status = "NodeStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Node holds Terway's per-node ENI capacity, pool settings and the node's ENIs and IPs."
)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Identity of the ECS instance.
    #[serde(default, skip_serializing_if = "is_default")]
    pub node_metadata: NodeMetadata,
    /// ENI and IP capacity of the instance type.
    #[serde(default, skip_serializing_if = "is_default")]
    pub node_cap: NodeCap,
    /// Datapath used on the node.
    #[serde(default, skip_serializing_if = "is_default")]
    pub datapath: Datapath,
    /// How ENIs are created for the node.
    #[serde(rename = "eni", default, skip_serializing_if = "Option::is_none")]
    pub eni_spec: Option<EniSpec>,
    /// IP pool settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolSpec>,
    /// ENIs the controller should create, by type and traffic mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flavor: Vec<Flavor>,
}

/// Identity of the ECS instance behind a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetadata {
    /// Region id.
    #[serde(rename = "regionID", default, skip_serializing_if = "String::is_empty")]
    pub region_id: String,
    /// ECS instance type.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_type: String,
    /// ECS instance id.
    #[serde(
        rename = "instanceID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub instance_id: String,
    /// Zone id.
    #[serde(rename = "zoneID", default, skip_serializing_if = "String::is_empty")]
    pub zone_id: String,
}

/// ENI and IP capacity of a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCap {
    /// ENIs usable for pods.
    #[serde(default, skip_serializing_if = "is_default")]
    pub adapters: i32,
    /// ERI (elastic RDMA) ENIs available.
    #[serde(default, skip_serializing_if = "is_default")]
    pub eri_quantity: i32,
    /// All ENIs the instance supports, primary included.
    #[serde(default, skip_serializing_if = "is_default")]
    pub total_adapters: i32,
    /// IPv4 addresses per ENI.
    #[serde(rename = "ipv4PerAdapter", default, skip_serializing_if = "is_default")]
    pub ipv4_per_adapter: i32,
    /// IPv6 addresses per ENI.
    #[serde(rename = "ipv6PerAdapter", default, skip_serializing_if = "is_default")]
    pub ipv6_per_adapter: i32,
    /// Member ENIs allowed on the trunk ENI.
    #[serde(default, skip_serializing_if = "is_default")]
    pub member_adapter_limit: i32,
    /// Upper bound of member ENIs for the instance type.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_member_adapter_limit: i32,
    /// Inbound bandwidth of the instance.
    #[serde(default, skip_serializing_if = "is_default")]
    pub instance_bandwidth_rx: i32,
    /// Outbound bandwidth of the instance.
    #[serde(default, skip_serializing_if = "is_default")]
    pub instance_bandwidth_tx: i32,
    /// Network cards of the instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_cards: Vec<NetworkCard>,
    /// Number of network cards.
    #[serde(default, skip_serializing_if = "is_default")]
    pub network_cards_count: i32,
}

/// A network card of the instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkCard {
    /// Network card index.
    pub index: i32,
}

/// Datapath selection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Datapath {
    /// Datapath type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub datapath_type: Option<DatapathType>,
}

/// Pod datapath.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatapathType {
    /// veth pair with policy routing.
    Veth,
    /// IPVLAN on the ENI.
    Ipvlan,
    /// Terway datapath v2 (eBPF).
    Datapathv2,
}

/// How ENIs are created for a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EniSpec {
    /// Tags set on created ENIs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag: BTreeMap<String, String>,
    /// Only ENIs with these tags are adopted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_filter: BTreeMap<String, String>,
    /// ENIs with any of these tags are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_block_list: Vec<Tag>,
    /// vSwitches to create ENIs in.
    #[serde(
        rename = "vSwitchOptions",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub v_switch_options: Vec<String>,
    /// Security groups for created ENIs.
    #[serde(
        rename = "securityGroupIDs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub security_group_ids: Vec<String>,
    /// Resource group for created ENIs.
    #[serde(
        rename = "resourceGroupID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_group_id: String,
    /// Allocate IPv4 addresses.
    #[serde(rename = "enableIPv4", default, skip_serializing_if = "is_default")]
    pub enable_ipv4: bool,
    /// Allocate IPv6 addresses.
    #[serde(rename = "enableIPv6", default, skip_serializing_if = "is_default")]
    pub enable_ipv6: bool,
    /// Use elastic RDMA ENIs.
    #[serde(rename = "enableERDMA", default, skip_serializing_if = "is_default")]
    pub enable_erdma: bool,
    /// Use a trunk ENI.
    #[serde(default, skip_serializing_if = "is_default")]
    pub enable_trunk: bool,
    /// How a vSwitch is chosen from `vSwitchOptions`.
    #[serde(
        rename = "vSwitchSelectPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v_switch_select_policy: Option<SelectionPolicy>,
    /// Allocate IP prefixes instead of single IPs.
    #[serde(rename = "enableIPPrefix", default, skip_serializing_if = "is_default")]
    pub enable_ip_prefix: bool,
    /// IPv4 prefixes wanted on the node.
    #[serde(
        rename = "ipv4PrefixCount",
        default,
        skip_serializing_if = "is_default"
    )]
    pub ipv4_prefix_count: i32,
    /// IPv6 prefixes wanted on the node.
    #[serde(
        rename = "ipv6PrefixCount",
        default,
        skip_serializing_if = "is_default"
    )]
    pub ipv6_prefix_count: i32,
}

/// A key/value tag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Tag key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Tag value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// IP pool settings of a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// Most idle IPs kept.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_pool_size: i32,
    /// Fewest idle IPs kept.
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_pool_size: i32,
    /// Go duration between syncs with the cloud API.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pool_sync_period: String,
    /// Idle IP reclaim policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim: Option<IpReclaimPolicy>,
    /// IPs to allocate ahead of the first pods.
    #[serde(default, skip_serializing_if = "is_default")]
    pub warm_up_size: i32,
}

/// When and how idle IPs are given back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpReclaimPolicy {
    /// Go duration an IP must stay idle before it is reclaimed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub after: String,
    /// Go duration between reclaim passes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    /// Most IPs reclaimed per pass.
    #[serde(default, skip_serializing_if = "is_default")]
    pub batch_size: i32,
    /// Jitter applied to `interval`, as a decimal string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jitter_factor: String,
}

/// ENIs of one type and traffic mode the controller should keep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Flavor {
    /// ENI type.
    pub network_interface_type: EniType,
    /// ENI traffic mode.
    pub network_interface_traffic_mode: NetworkInterfaceTrafficMode,
    /// Number of ENIs.
    pub count: i32,
}

/// Traffic mode of an ENI.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NetworkInterfaceTrafficMode {
    /// Ordinary ENI.
    Standard,
    /// RDMA-capable ENI.
    HighPerformance,
}
