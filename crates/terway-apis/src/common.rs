//! Types shared by several kinds: the ENI record, IP allocations and ENI attach state.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// True when `v` equals its type's default (serde `skip_serializing_if` helper, like Go's omitempty).
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// An elastic network interface as recorded in a CR.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Eni {
    /// ENI id (`eni-...`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// VPC the ENI belongs to.
    #[serde(rename = "vpcID", default, skip_serializing_if = "String::is_empty")]
    pub vpc_id: String,
    /// MAC address of the ENI.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Zone the ENI lives in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// vSwitch the ENI was created in.
    #[serde(
        rename = "vSwitchID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub v_switch_id: String,
    /// Resource group of the ENI.
    #[serde(
        rename = "resourceGroupID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_group_id: String,
    /// Security groups bound to the ENI.
    #[serde(
        rename = "securityGroupIDs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub security_group_ids: Vec<String>,
    /// How the ENI is attached.
    #[serde(default, skip_serializing_if = "is_default")]
    pub attachment_options: AttachmentOptions,
}

/// Attach-time options of an ENI.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentOptions {
    /// Whether the ENI is attached as a trunk ENI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<bool>,
}

/// One ENI (and its addresses) allocated to a pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// IP allocation type and release strategy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub allocation_type: AllocationType,
    /// The allocated ENI.
    #[serde(default, skip_serializing_if = "is_default")]
    pub eni: Eni,
    /// IPv4 address of the pod on this ENI.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    /// IPv6 address of the pod on this ENI.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    /// CIDR of the IPv4 vSwitch.
    #[serde(rename = "ipv4CIDR", default, skip_serializing_if = "String::is_empty")]
    pub ipv4_cidr: String,
    /// CIDR of the IPv6 vSwitch.
    #[serde(rename = "ipv6CIDR", default, skip_serializing_if = "String::is_empty")]
    pub ipv6_cidr: String,
    /// Interface name inside the pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// Whether the default route goes through this interface.
    #[serde(default, skip_serializing_if = "is_default")]
    pub default_route: bool,
    /// Additional routes through this interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_routes: Vec<Route>,
    /// Free-form extra settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_config: BTreeMap<String, String>,
}

/// A route to add in the pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination CIDR.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dst: String,
}

/// How IPs are allocated and when they are released.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationType {
    /// Allocation type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub alloc_type: Option<IpAllocType>,
    /// When a fixed IP is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_strategy: Option<ReleaseStrategy>,
    /// Go duration (e.g. `5m0s`) after which a TTL IP is released.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release_after: String,
}

/// IP allocation type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IpAllocType {
    /// The IP follows the pod and is released with it.
    Elastic,
    /// The IP is kept for the pod (stateful workloads).
    Fixed,
}

/// Release strategy of a fixed IP.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ReleaseStrategy {
    /// Release after `releaseAfter` has passed.
    #[serde(rename = "TTL")]
    Ttl,
    /// Never release.
    Never,
}

/// Phase of an ENI binding (PodENI and NetworkInterface).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Just created, nothing done yet (the empty string).
    #[default]
    #[serde(rename = "")]
    Initial,
    /// The ENI is attached to the instance.
    Bind,
    /// The ENI is being attached again (e.g. a recreated stateful pod).
    Binding,
    /// The ENI is not attached.
    Unbind,
    /// The ENI is being detached.
    Detaching,
    /// The CR is being removed.
    Deleting,
}

/// Type of an ENI.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum EniType {
    /// Secondary ENI.
    Secondary,
    /// Trunk ENI.
    Trunk,
    /// Primary ENI of the instance.
    Primary,
    /// Member ENI on a trunk.
    Member,
}

/// Attach state of one ENI.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum EniBindStatus {
    /// Attached.
    Bind,
    /// Not attached.
    Unbind,
    /// Already deleted.
    Deleted,
}

/// State of an ENI once it is attached.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EniInfo {
    /// ENI id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// ENI type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub eni_type: Option<EniType>,
    /// VLAN id on the trunk ENI (member ENIs).
    #[serde(default, skip_serializing_if = "is_default")]
    pub vid: i32,
    /// Attach state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EniBindStatus>,
    /// Network card the ENI is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_card_index: Option<i32>,
    /// Virtual function id (VF-backed ENIs).
    #[serde(rename = "vfID", default, skip_serializing_if = "Option::is_none")]
    pub vf_id: Option<i32>,
}

/// vSwitch selection policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SelectionPolicy {
    /// Use the vSwitches in the listed order.
    Ordered,
    /// Pick a vSwitch at random.
    Random,
    /// Pick the vSwitch with the most free IPs.
    Most,
}
