//! Instance-type catalogue: the ENI and address quotas DescribeInstanceTypes reports and the state
//! machine enforces. Figures follow Alibaba Cloud's published instance-family tables (ENIs per
//! instance, private IPv4 per ENI, IPv6 per ENI); `EniTotalQuantity` (ENIs including trunk members) is
//! an approximation where the public tables do not list it.

use serde::{Deserialize, Serialize};

/// Quotas and facts of one instance type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceTypeSpec {
    /// e.g. `ecs.g7.4xlarge`.
    pub instance_type: String,
    /// Family, e.g. `ecs.g7`.
    pub family: String,
    /// vCPUs.
    pub cpu_core_count: u32,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// EniQuantity: ENIs attachable, primary included.
    pub eni_quantity: u32,
    /// EniPrivateIpAddressQuantity: IPv4 addresses per ENI, primary included.
    pub eni_private_ip_quantity: u32,
    /// EniIpv6AddressQuantity.
    pub eni_ipv6_quantity: u32,
    /// EniTotalQuantity: ENIs including trunk member ENIs.
    pub eni_total_quantity: u32,
    /// EniTrunkSupported.
    pub trunk_supported: bool,
    /// InstanceBandwidthRx/Tx in Kbit/s.
    pub bandwidth_kbps: u64,
}

#[allow(clippy::too_many_arguments)]
fn spec(
    name: &str,
    cpu: u32,
    mem: f64,
    enis: u32,
    ipv4: u32,
    ipv6: u32,
    total: u32,
    trunk: bool,
    bw_gbps: u64,
) -> InstanceTypeSpec {
    let family = name
        .rsplit_once('.')
        .map(|(f, _)| f.to_string())
        .unwrap_or_default();
    InstanceTypeSpec {
        instance_type: name.to_string(),
        family,
        cpu_core_count: cpu,
        memory_gib: mem,
        eni_quantity: enis,
        eni_private_ip_quantity: ipv4,
        eni_ipv6_quantity: ipv6,
        eni_total_quantity: total,
        trunk_supported: trunk,
        bandwidth_kbps: bw_gbps * 1_000_000,
    }
}

/// The built-in catalogue (more types can be added through the configuration).
pub fn builtin() -> Vec<InstanceTypeSpec> {
    vec![
        spec("ecs.g6.large", 2, 8.0, 2, 6, 1, 2, false, 1),
        spec("ecs.g6.xlarge", 4, 16.0, 3, 10, 1, 3, false, 1),
        spec("ecs.g7.large", 2, 8.0, 3, 6, 1, 6, true, 2),
        spec("ecs.g7.xlarge", 4, 16.0, 4, 15, 15, 12, true, 3),
        spec("ecs.g7.2xlarge", 8, 32.0, 6, 15, 15, 24, true, 5),
        spec("ecs.g7.4xlarge", 16, 64.0, 8, 30, 30, 48, true, 8),
        spec("ecs.g7.8xlarge", 32, 128.0, 8, 30, 30, 96, true, 16),
        spec("ecs.c7.xlarge", 4, 8.0, 4, 15, 15, 12, true, 3),
        spec("ecs.r7.2xlarge", 8, 64.0, 6, 15, 15, 24, true, 5),
        spec("ecs.g8i.4xlarge", 16, 64.0, 8, 30, 30, 48, true, 10),
    ]
}
