//! The status snapshot served to terway-cli.

use terway_cloud::{Cloud, Metadata};
use terway_rpc::v1 as pb;

use crate::pool::decide::watermarks;
use crate::pool::state::IpSlot;
use crate::pool::{now_ms, Pool};

/// Build the status reply from the pool.
pub fn build<C: Cloud, M: Metadata>(
    pool: &Pool<C, M>,
    mode: pb::NetworkMode,
    events: Vec<String>,
) -> pb::StatusReply {
    let now = now_ms();
    let node = pool.node();
    let wm = watermarks(&pool.config().pool, node.capacity);
    let (counts, enis, mut pods, inhibits) = pool.with_state(|st| {
        let enis: Vec<pb::EniStatus> = st
            .enis
            .values()
            .map(|e| pb::EniStatus {
                eni_id: e.id.clone(),
                mac: e.mac.clone(),
                status: format!(
                    "{:?}{}",
                    e.phase,
                    if e.busy { " (cloud op running)" } else { "" }
                ),
                vswitch_id: e.vswitch_id.clone(),
                cidr: e.cidr.to_string(),
                ips: e
                    .ips
                    .iter()
                    .map(|(ip, s)| pb::IpStatus {
                        ip: ip.to_string(),
                        state: s.label(now).into(),
                        pod: match s {
                            IpSlot::InUse { pod } | IpSlot::Sticky { pod, .. }
                                if !s.is_free(now) =>
                            {
                                pod.to_string()
                            }
                            _ => String::new(),
                        },
                    })
                    .collect(),
            })
            .collect();
        let pods: Vec<pb::PodAllocation> = st
            .pods
            .values()
            .map(|a| pb::PodAllocation {
                pod: a.pod.to_string(),
                container_id: a.container_id.clone(),
                ipv4: a.ip.to_string(),
                ipv6: String::new(),
                eni_id: a.eni_id.clone(),
            })
            .collect();
        (st.counts(now), enis, pods, st.inhibits.describe(now))
    });
    pods.sort_by(|a, b| a.pod.cmp(&b.pod));
    pb::StatusReply {
        node: node.name.clone(),
        instance_id: node.instance_id.clone(),
        instance_type: node.instance_type.clone(),
        mode: mode as i32,
        pool: Some(pb::PoolStatus {
            total: counts.total,
            idle: counts.idle,
            in_use: counts.in_use,
            cooldown: counts.cooldown,
            min_idle: wm.min_idle,
            max_idle: wm.max_idle,
            capacity: node.capacity.total(),
            max_enis: node.capacity.max_enis,
        }),
        enis,
        pods,
        recent_calls: pool
            .recent_calls()
            .into_iter()
            .map(|c| pb::CloudCall {
                action: c.action,
                result: c.result,
                duration_ms: c.duration_ms,
                at_unix_ms: c.at_ms,
            })
            .collect(),
        inhibits,
        events,
        limits: node.limits.as_ref().map(|l| pb::InstanceLimits {
            eni_quantity: l.eni_quantity,
            eni_private_ip_quantity: l.eni_private_ip_quantity,
            eni_ipv6_quantity: l.eni_ipv6_quantity,
            eni_total_quantity: l.eni_total_quantity,
        }),
    }
}
