//! Pod-limit formulas of Alibaba Cloud's documentation (per instance type and mode), node admission
//! thresholds, and the node-local pool sizing of reference §4.2.

use crate::types::Mode;

/// The instance-type quotas the formulas need (from `DescribeInstanceTypes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceLimits {
    /// `EniQuantity`: ENIs the instance supports, the primary included.
    pub eni_quantity: u32,
    /// `EniPrivateIpAddressQuantity`: private IPv4 addresses per ENI.
    pub eni_private_ip_address_quantity: u32,
    /// `EniTotalQuantity`: ENIs including trunk member ENIs.
    pub eni_total_quantity: u32,
    /// `EniIpv6AddressQuantity`: IPv6 addresses per ENI.
    pub eni_ipv6_address_quantity: u32,
}

/// Shared ENI mode: `(EniQuantity − 1) × EniPrivateIpAddressQuantity`.
pub fn shared_pod_limit(l: &InstanceLimits) -> u32 {
    l.eni_quantity
        .saturating_sub(1)
        .saturating_mul(l.eni_private_ip_address_quantity)
}

/// Trunk pods on a shared-mode node: `EniTotalQuantity − EniQuantity`.
pub fn trunk_pod_limit(l: &InstanceLimits) -> u32 {
    l.eni_total_quantity.saturating_sub(l.eni_quantity)
}

/// Exclusive ENI mode: `EniQuantity − 1`.
pub fn exclusive_pod_limit(l: &InstanceLimits) -> u32 {
    l.eni_quantity.saturating_sub(1)
}

/// Exclusive ENI mode on Lingjun (EFLO) nodes: `LeniQuota − 1`.
pub fn lingjun_exclusive_pod_limit(leni_quota: u32) -> u32 {
    leni_quota.saturating_sub(1)
}

/// Prefix mode's advertised pod IPs (node annotation `max-available-ip`):
/// `(IPv4PerAdapter − 1) × 16 × (TotalAdapters − 1)`, one /28 per secondary IP slot.
pub fn prefix_mode_max_ips(ipv4_per_adapter: u32, total_adapters: u32) -> u32 {
    ipv4_per_adapter
        .saturating_sub(1)
        .saturating_mul(16)
        .saturating_mul(total_adapters.saturating_sub(1))
}

/// A shared-mode node joins the cluster only if its pod limit is greater than this.
pub const SHARED_MIN_POD_LIMIT_EXCLUSIVE_BOUND: u32 = 11;
/// An exclusive-mode node joins the cluster only if its pod limit is greater than this.
pub const EXCLUSIVE_MIN_POD_LIMIT_EXCLUSIVE_BOUND: u32 = 6;

/// Why a node may not join the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{mode} mode allows only {limit} pods on this instance type; a node needs more than {bound} (pick a larger instance type)")]
pub struct AdmissionError {
    /// The node's mode.
    pub mode: Mode,
    /// Its computed pod limit.
    pub limit: u32,
    /// The threshold it must exceed.
    pub bound: u32,
}

/// The pod limit of a node in `mode` (VPC-route nodes have no ENI-bound limit: `None`).
pub fn pod_limit(mode: Mode, l: &InstanceLimits) -> Option<u32> {
    match mode {
        Mode::Shared => Some(shared_pod_limit(l)),
        Mode::Exclusive => Some(exclusive_pod_limit(l)),
        Mode::VpcRoute => None,
    }
}

/// Check the admission threshold (>11 shared, >6 exclusive; VPC-route has none).
pub fn check_node_admission(mode: Mode, l: &InstanceLimits) -> Result<u32, AdmissionError> {
    let (limit, bound) = match mode {
        Mode::Shared => (shared_pod_limit(l), SHARED_MIN_POD_LIMIT_EXCLUSIVE_BOUND),
        Mode::Exclusive => (
            exclusive_pod_limit(l),
            EXCLUSIVE_MIN_POD_LIMIT_EXCLUSIVE_BOUND,
        ),
        Mode::VpcRoute => return Ok(u32::MAX),
    };
    if limit > bound {
        Ok(limit)
    } else {
        Err(AdmissionError { mode, limit, bound })
    }
}

/// Inputs of the pool sizing (the `eni_conf` knobs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolKnobs {
    /// `eni_cap_ratio`.
    pub eni_cap_ratio: f64,
    /// `eni_cap_shift`.
    pub eni_cap_shift: i32,
    /// `max_eni` (0 = no cap).
    pub max_eni: u32,
    /// `min_eni` (0 = use `min_pool_size`).
    pub min_eni: u32,
    /// `max_pool_size`.
    pub max_pool_size: u32,
    /// `min_pool_size`.
    pub min_pool_size: u32,
}

impl PoolKnobs {
    /// Take the knobs from an `eni_conf`.
    pub fn from_conf(c: &crate::eni_conf::EniConf) -> Self {
        Self {
            eni_cap_ratio: c.eni_cap_ratio,
            eni_cap_shift: c.eni_cap_shift,
            max_eni: c.max_eni,
            min_eni: c.min_eni,
            max_pool_size: c.max_pool_size,
            min_pool_size: c.min_pool_size,
        }
    }
}

/// The node-local pool's size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizing {
    /// Secondary ENIs the pool may use.
    pub max_eni: u32,
    /// IPs the pool can hold at most (`max_eni × ips_per_eni`).
    pub capacity: u32,
    /// Idle high watermark, clamped to capacity.
    pub max_pool_size: u32,
    /// Idle low watermark, clamped to `max_pool_size`.
    pub min_pool_size: u32,
}

/// Compute the pool sizing (reference §4.2): `maxENI = ⌊Adapters × eni_cap_ratio⌋ + eni_cap_shift − 1`
/// (the primary ENI excluded), capped by `max_eni`; `capacity = maxENI × ips_per_eni` (a secondary
/// ENI's primary IP is usable); `max_pool = min(max_pool_size, capacity)`; `min_pool = min_pool_size`,
/// or `min_eni × ips_per_eni` when `min_eni` is set; finally `min_pool ≤ max_pool`.
pub fn pool_sizing(adapters: u32, ips_per_eni: u32, k: &PoolKnobs) -> PoolSizing {
    let scaled = (f64::from(adapters) * k.eni_cap_ratio).floor();
    // Out-of-range floats saturate; validation keeps the ratio positive and finite anyway.
    let scaled = if scaled.is_finite() && scaled > 0.0 {
        scaled.min(f64::from(u32::MAX)) as i64
    } else {
        0
    };
    let mut max_eni =
        (scaled + i64::from(k.eni_cap_shift) - 1).clamp(0, i64::from(u32::MAX)) as u32;
    if k.max_eni > 0 {
        max_eni = max_eni.min(k.max_eni);
    }
    let capacity = max_eni.saturating_mul(ips_per_eni);
    let max_pool_size = k.max_pool_size.min(capacity);
    let min_pool_size = if k.min_eni > 0 {
        k.min_eni.saturating_mul(ips_per_eni)
    } else {
        k.min_pool_size
    }
    .min(max_pool_size);
    PoolSizing {
        max_eni,
        capacity,
        max_pool_size,
        min_pool_size,
    }
}

/// How many idle IPs a pool sync should release (reference §4.2, `calculateToDel`): everything above
/// `max_pool_size`, plus — when an idle-reclaim round is due — up to `reclaim_batch` more, never
/// going below `min_pool_size`.
pub fn ips_to_release(idle: u32, sizing: &PoolSizing, reclaim_batch: Option<u32>) -> u32 {
    let over = idle.saturating_sub(sizing.max_pool_size);
    let remaining = idle - over;
    let extra = reclaim_batch.map_or(0, |batch| {
        batch.min(remaining.saturating_sub(sizing.min_pool_size))
    });
    over + extra
}

/// How many IPs a pool sync should pre-allocate: up to `min_pool_size` idle, without exceeding the
/// pool's capacity given `in_use` IPs already held by pods.
pub fn ips_to_add(idle: u32, in_use: u32, sizing: &PoolSizing) -> u32 {
    let deficit = sizing.min_pool_size.saturating_sub(idle);
    let room = sizing.capacity.saturating_sub(idle.saturating_add(in_use));
    deficit.min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G7_4XLARGE: InstanceLimits = InstanceLimits {
        eni_quantity: 8,
        eni_private_ip_address_quantity: 30,
        eni_total_quantity: 24,
        eni_ipv6_address_quantity: 30,
    };

    #[test]
    fn seed_example_g7_4xlarge() {
        assert_eq!(shared_pod_limit(&G7_4XLARGE), 210);
        assert_eq!(exclusive_pod_limit(&G7_4XLARGE), 7);
        assert_eq!(trunk_pod_limit(&G7_4XLARGE), 16);
        assert_eq!(check_node_admission(Mode::Shared, &G7_4XLARGE), Ok(210));
        assert_eq!(check_node_admission(Mode::Exclusive, &G7_4XLARGE), Ok(7));
        assert_eq!(pod_limit(Mode::VpcRoute, &G7_4XLARGE), None);
        assert_eq!(lingjun_exclusive_pod_limit(4), 3);
        assert_eq!(lingjun_exclusive_pod_limit(0), 0);
        assert_eq!(prefix_mode_max_ips(30, 8), 29 * 16 * 7);
        assert_eq!(prefix_mode_max_ips(0, 0), 0);
    }

    #[test]
    fn admission_thresholds_are_strict() {
        // (3-1)*6 = 12 > 11 ok; (2-1)*11 = 11 not ok; exclusive 7-1 = 6 not ok, 8-1 = 7 ok.
        let l = |eni, ips| InstanceLimits {
            eni_quantity: eni,
            eni_private_ip_address_quantity: ips,
            ..Default::default()
        };
        assert_eq!(check_node_admission(Mode::Shared, &l(3, 6)), Ok(12));
        let err = check_node_admission(Mode::Shared, &l(2, 11)).unwrap_err();
        assert_eq!((err.limit, err.bound), (11, 11));
        assert!(err.to_string().contains("shared mode allows only 11 pods"));
        assert!(check_node_admission(Mode::Exclusive, &l(7, 1)).is_err());
        assert_eq!(check_node_admission(Mode::Exclusive, &l(8, 1)), Ok(7));
        assert_eq!(shared_pod_limit(&l(0, 10)), 0);
        assert_eq!(
            trunk_pod_limit(&InstanceLimits {
                eni_quantity: 8,
                eni_total_quantity: 4,
                ..Default::default()
            }),
            0
        );
    }

    fn knobs() -> PoolKnobs {
        PoolKnobs {
            eni_cap_ratio: 1.0,
            eni_cap_shift: 0,
            max_eni: 0,
            min_eni: 0,
            max_pool_size: 5,
            min_pool_size: 0,
        }
    }

    #[test]
    fn release_and_add() {
        let s = PoolSizing {
            max_eni: 3,
            capacity: 30,
            max_pool_size: 5,
            min_pool_size: 2,
        };
        assert_eq!(ips_to_release(8, &s, None), 3);
        assert_eq!(
            ips_to_release(8, &s, Some(5)),
            6,
            "reclaim stops at min_pool_size"
        );
        assert_eq!(ips_to_release(4, &s, Some(1)), 1);
        assert_eq!(ips_to_release(2, &s, Some(5)), 0);
        assert_eq!(ips_to_release(0, &s, Some(5)), 0);
        assert_eq!(ips_to_add(0, 10, &s), 2);
        assert_eq!(ips_to_add(1, 10, &s), 1);
        assert_eq!(ips_to_add(3, 10, &s), 0);
        assert_eq!(ips_to_add(0, 29, &s), 1, "capacity bounds pre-allocation");
        assert_eq!(ips_to_add(0, 30, &s), 0);
    }

    #[test]
    fn pool_capacity() {
        let s = pool_sizing(8, 30, &knobs());
        assert_eq!(
            s,
            PoolSizing {
                max_eni: 7,
                capacity: 210,
                max_pool_size: 5,
                min_pool_size: 0
            }
        );
        let s = pool_sizing(
            8,
            30,
            &PoolKnobs {
                max_eni: 3,
                max_pool_size: 500,
                min_pool_size: 400,
                ..knobs()
            },
        );
        assert_eq!(
            s,
            PoolSizing {
                max_eni: 3,
                capacity: 90,
                max_pool_size: 90,
                min_pool_size: 90
            }
        );
        let s = pool_sizing(
            8,
            30,
            &PoolKnobs {
                eni_cap_ratio: 0.5,
                eni_cap_shift: 1,
                ..knobs()
            },
        );
        assert_eq!(s.max_eni, 4);
        let s = pool_sizing(
            8,
            10,
            &PoolKnobs {
                min_eni: 2,
                max_pool_size: 50,
                ..knobs()
            },
        );
        assert_eq!((s.min_pool_size, s.max_pool_size), (20, 50));
        let s = pool_sizing(
            1,
            10,
            &PoolKnobs {
                eni_cap_shift: -5,
                ..knobs()
            },
        );
        assert_eq!((s.max_eni, s.capacity, s.max_pool_size), (0, 0, 0));
        let s = pool_sizing(
            u32::MAX,
            u32::MAX,
            &PoolKnobs {
                eni_cap_ratio: 1e30,
                eni_cap_shift: i32::MAX,
                ..knobs()
            },
        );
        assert_eq!(s.capacity, u32::MAX);
    }
}
