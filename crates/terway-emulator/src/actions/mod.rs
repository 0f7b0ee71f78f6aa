//! The OpenAPI actions: which exist (and in which product/version), which mutate state, and the
//! dispatcher that runs one against the [`World`]. Actions are pure state transitions: side effects
//! on the data plane and asynchronous completions are returned as [`Effect`]s that the service runs
//! after the state lock is released.

mod describe;
mod eni;
mod ip;
pub mod render;
mod security_group;
mod vpc;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::catalogue::InstanceTypeSpec;
use crate::error::ApiError;
use crate::params::Params;
use crate::world::World;

/// ECS API version.
pub const ECS_VERSION: &str = "2014-05-26";
/// VPC API version.
pub const VPC_VERSION: &str = "2016-04-28";

/// Which product an action belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// ECS, version 2014-05-26.
    Ecs,
    /// VPC, version 2016-04-28.
    Vpc,
}

impl Product {
    /// `HostId` in error answers.
    pub fn host_id(self) -> &'static str {
        match self {
            Product::Ecs => "ecs.aliyuncs.com",
            Product::Vpc => "vpc.aliyuncs.com",
        }
    }
}

const ECS_ACTIONS: &[&str] = &[
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "DescribeNetworkInterfaces",
    "DescribeNetworkInterfaceAttribute",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "AssignIpv6Addresses",
    "UnassignIpv6Addresses",
    "DescribeInstanceTypes",
    "DescribeInstances",
    "CreateSecurityGroup",
    "DeleteSecurityGroup",
    "DescribeSecurityGroups",
    "AuthorizeSecurityGroup",
    "RevokeSecurityGroup",
    "DescribeSecurityGroupAttribute",
];

const VPC_ACTIONS: &[&str] = &[
    "DescribeVSwitches",
    "CreateRouteEntry",
    "DeleteRouteEntry",
    "DescribeRouteEntryList",
];

/// The product of a known action for `version`, if the pair exists.
pub fn product_of(action: &str, version: &str) -> Option<Product> {
    if version == ECS_VERSION && ECS_ACTIONS.contains(&action) {
        Some(Product::Ecs)
    } else if version == VPC_VERSION && VPC_ACTIONS.contains(&action) {
        Some(Product::Vpc)
    } else {
        None
    }
}

/// Whether `version` is one this emulator serves at all.
pub fn known_version(version: &str) -> bool {
    version == ECS_VERSION || version == VPC_VERSION
}

/// Whether the action reads only (served from the lagged snapshot when Describe lag is on).
pub fn is_describe(action: &str) -> bool {
    action.starts_with("Describe")
}

/// Whether the action changes one ENI named by `NetworkInterfaceId` (subject to the busy window).
pub fn targets_one_eni(action: &str) -> bool {
    matches!(
        action,
        "AttachNetworkInterface"
            | "DetachNetworkInterface"
            | "DeleteNetworkInterface"
            | "AssignPrivateIpAddresses"
            | "UnassignPrivateIpAddresses"
            | "AssignIpv6Addresses"
            | "UnassignIpv6Addresses"
    )
}

/// Whether the action honours `ClientToken`.
pub fn uses_client_token(action: &str) -> bool {
    matches!(
        action,
        "CreateNetworkInterface"
            | "AssignPrivateIpAddresses"
            | "AssignIpv6Addresses"
            | "CreateRouteEntry"
    )
}

/// Static facts actions need besides the world.
pub struct Env<'a> {
    /// Instance types by name.
    pub catalogue: &'a BTreeMap<String, InstanceTypeSpec>,
    /// IPv4/IPv6 limit of an ENI attached to no instance.
    pub unattached_eni_ip_limit: u32,
    /// Whether DeleteNetworkInterface goes through `Deleting` (a delete delay is configured).
    pub async_delete: bool,
}

impl Env<'_> {
    /// The spec of an instance's type.
    pub fn spec(&self, instance_type: &str) -> Result<&InstanceTypeSpec, ApiError> {
        self.catalogue.get(instance_type).ok_or_else(|| {
            ApiError::internal(format!(
                "instance type {instance_type} is not in the catalogue"
            ))
        })
    }
}

/// Something to do after the state change, outside the lock.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Complete the attach of an ENI after the attach delay (if its `op_seq` still matches).
    CompleteAttach {
        /// ENI.
        eni_id: String,
        /// Sequence number of the transition.
        seq: u64,
    },
    /// Complete the detach of an ENI after the detach delay.
    CompleteDetach {
        /// ENI.
        eni_id: String,
        /// Sequence number of the transition.
        seq: u64,
    },
    /// Remove a `Deleting` ENI after the delete delay.
    CompleteDelete {
        /// ENI.
        eni_id: String,
        /// Sequence number of the transition.
        seq: u64,
    },
    /// Tell the fabric about new addresses on an attached ENI.
    IpsAssigned(String, Vec<IpAddr>),
    /// Tell the fabric about removed addresses.
    IpsUnassigned(String, Vec<IpAddr>),
    /// A route entry was added.
    RouteAdded(Ipv4Net, String),
    /// A route entry was removed.
    RouteRemoved(Ipv4Net, String),
    /// The security groups changed; every one of them, as they are now.
    SecurityGroups(Vec<crate::world::SecurityGroup>),
}

/// The answer of an action (without RequestId) and what to do next.
#[derive(Debug, Default)]
pub struct Outcome {
    /// JSON body.
    pub body: serde_json::Map<String, Value>,
    /// Follow-ups.
    pub effects: Vec<Effect>,
}

impl Outcome {
    /// An answer without follow-ups.
    pub fn body(body: Value) -> Self {
        Self {
            body: into_map(body),
            effects: Vec::new(),
        }
    }
    /// An answer with follow-ups.
    pub fn with(body: Value, effects: Vec<Effect>) -> Self {
        Self {
            body: into_map(body),
            effects,
        }
    }
}

fn into_map(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// Check `RegionId` (required by every action here except the region-less DescribeInstanceTypes)
/// and answer a `DryRun` the way the API does.
fn check_region(action: &str, p: &Params, world: &World) -> Result<(), ApiError> {
    if p.boolean("DryRun")? == Some(true) {
        return Err(ApiError::new(
            400,
            "DryRunOperation",
            "Request validation has been passed with DryRun flag set.",
        ));
    }
    let region = match (action, p.get("RegionId")) {
        ("DescribeInstanceTypes", None) => return Ok(()),
        (_, None) => return Err(ApiError::missing("RegionId")),
        (_, Some(r)) => r,
    };
    if region != world.region_id {
        return Err(ApiError::new(
            404,
            "InvalidRegionId.NotFound",
            format!(
                "The specified region {region} does not exist; this cloud serves {}.",
                world.region_id
            ),
        ));
    }
    Ok(())
}

/// Run a mutating or reading action against the world.
pub fn execute(
    action: &str,
    p: &Params,
    world: &mut World,
    env: &Env<'_>,
) -> Result<Outcome, ApiError> {
    check_region(action, p, world)?;
    match action {
        "CreateNetworkInterface" => eni::create(p, world, env),
        "AttachNetworkInterface" => eni::attach(p, world, env),
        "DetachNetworkInterface" => eni::detach(p, world),
        "DeleteNetworkInterface" => eni::delete(p, world, env),
        "AssignPrivateIpAddresses" => ip::assign_v4(p, world, env),
        "UnassignPrivateIpAddresses" => ip::unassign_v4(p, world),
        "AssignIpv6Addresses" => ip::assign_v6(p, world, env),
        "UnassignIpv6Addresses" => ip::unassign_v6(p, world),
        "CreateRouteEntry" => vpc::create_route(p, world),
        "DeleteRouteEntry" => vpc::delete_route(p, world),
        "CreateSecurityGroup" => security_group::create(p, world),
        "DeleteSecurityGroup" => security_group::delete(p, world),
        "AuthorizeSecurityGroup" => security_group::authorize(p, world),
        "RevokeSecurityGroup" => security_group::revoke(p, world),
        _ => describe(action, p, world, env),
    }
}

/// Run a read-only action.
pub fn describe(
    action: &str,
    p: &Params,
    world: &World,
    env: &Env<'_>,
) -> Result<Outcome, ApiError> {
    check_region(action, p, world)?;
    match action {
        "DescribeNetworkInterfaces" => describe::network_interfaces(p, world),
        "DescribeNetworkInterfaceAttribute" => describe::network_interface_attribute(p, world),
        "DescribeInstanceTypes" => describe::instance_types(p, env),
        "DescribeInstances" => describe::instances(p, world),
        "DescribeVSwitches" => vpc::describe_vswitches(p, world),
        "DescribeRouteEntryList" => vpc::describe_routes(p, world),
        "DescribeSecurityGroups" => security_group::describe(p, world),
        "DescribeSecurityGroupAttribute" => security_group::describe_attribute(p, world),
        other => Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            format!("Specified api {other} is not found, please check your url and method."),
        )),
    }
}

/// Parse a page size parameter within `1..=max`, defaulting to `default`.
fn page_size(p: &Params, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
    match p.parse::<usize>(name)? {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid(name, format!("{n} is outside 1..={max}"))),
    }
}
