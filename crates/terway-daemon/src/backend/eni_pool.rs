//! The ENI pool as a backend: shared secondary IPs ([`EniPoolKind::SharedIps`]) or one whole ENI per
//! pod ([`EniPoolKind::Exclusive`]). The pool itself lives in [`crate::pool`]; this module is its
//! face towards the daemon, and its ENI reconciler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use terway_cloud::{Cloud, Metadata};
use terway_rpc::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{AllocPath, AllocRequest, ResourceBackend};
use crate::error::Result;
use crate::pool::decide::watermarks;
use crate::pool::state::IpSlot;
use crate::pool::{now_ms, Pool};
use crate::reconciler::Reconciler;
use crate::record::{AllocKey, Allocation, PodKey, ResourceKind};
use crate::store::Snapshot;

pub use crate::pool::EniPoolKind;

impl<C: Cloud, M: Metadata> ResourceBackend for Pool<C, M> {
    fn kind(&self) -> ResourceKind {
        Pool::kind(self).resource_kind()
    }

    fn ip_shortage(&self) -> Option<String> {
        Pool::ip_shortage(self)
    }

    fn max_pod_ips(&self) -> Option<u32> {
        let cap = self.capacity();
        Some(cap.max_enis.saturating_mul(cap.slots_per_eni))
    }

    fn recover<'a>(&'a self, snap: &'a Snapshot) -> BoxFuture<'a, Result<()>> {
        Box::pin(Pool::recover(self, snap))
    }

    fn start(&self, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let pool = self.clone();
        vec![tokio::spawn(async move { pool.run_manager(stop).await })]
    }

    fn allocate<'a>(
        &'a self,
        req: &'a AllocRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<(Allocation, AllocPath)>> {
        Box::pin(Pool::allocate(self, req, deadline))
    }

    fn release<'a>(
        &'a self,
        key: &'a AllocKey,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Pool::release(self, key, container_id))
    }

    fn lookup(&self, key: &AllocKey) -> Option<Allocation> {
        Pool::lookup(self, key)
    }

    fn allocations(&self) -> Vec<Allocation> {
        self.with_state(|st| st.pods.values().cloned().collect())
    }

    fn sticky_pods(&self) -> Vec<PodKey> {
        let now = now_ms();
        let mut pods: Vec<PodKey> = self.with_state(|st| {
            st.enis
                .values()
                .flat_map(|e| e.ips.values())
                .filter_map(|s| match s {
                    IpSlot::Sticky { pod, until_ms } if *until_ms > now => Some(pod.clone()),
                    _ => None,
                })
                .collect()
        });
        pods.sort();
        pods.dedup();
        pods
    }

    fn drop_sticky<'a>(&'a self, pod: &'a PodKey) -> BoxFuture<'a, Result<()>> {
        Box::pin(Pool::drop_sticky(self, pod))
    }

    fn reconcilers(&self) -> Vec<Arc<dyn Reconciler>> {
        vec![Arc::new(EniReconciler { pool: self.clone() })]
    }

    fn fill_status(&self, reply: &mut pb::StatusReply) {
        fill_pool_status(self, reply)
    }

    fn begin_stop(&self) {
        Pool::begin_stop(self)
    }

    fn drain(&self, limit: Duration) -> BoxFuture<'_, ()> {
        Box::pin(Pool::drain(self, limit))
    }
}

/// Keeps the pool's ENIs and addresses in line with the cloud (adopt ours, forget what is gone, delete
/// our leftovers).
struct EniReconciler<C: Cloud, M: Metadata> {
    pool: Pool<C, M>,
}

impl<C: Cloud, M: Metadata> Reconciler for EniReconciler<C, M> {
    fn name(&self) -> &'static str {
        match self.pool.kind() {
            EniPoolKind::SharedIps => "shared-ip-enis",
            EniPoolKind::Exclusive => "exclusive-enis",
        }
    }

    fn period(&self) -> Duration {
        self.pool.config().gc_period
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let r = self.pool.reconcile_enis().await?;
            Ok(if r == Default::default() {
                String::new()
            } else {
                format!("{r:?}")
            })
        })
    }
}

/// The pool's ENIs, slots, counts, limits and recent cloud calls in the status reply.
fn fill_pool_status<C: Cloud, M: Metadata>(pool: &Pool<C, M>, reply: &mut pb::StatusReply) {
    let now = now_ms();
    let cap = pool.capacity();
    let wm = watermarks(&pool.config().pool, cap);
    let (counts, enis, inhibits) = pool.with_state(|st| {
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
                            IpSlot::InUse { pod, if_name } if !s.is_free(now) => {
                                AllocKey::new(pod.clone(), if_name).to_string()
                            }
                            IpSlot::Sticky { pod, .. } if !s.is_free(now) => pod.to_string(),
                            _ => String::new(),
                        },
                    })
                    .collect(),
            })
            .collect();
        (st.counts(now), enis, st.inhibits.describe(now))
    });
    reply.pool = Some(pb::PoolStatus {
        total: counts.total,
        idle: counts.idle,
        in_use: counts.in_use,
        cooldown: counts.cooldown,
        min_idle: wm.min_idle,
        max_idle: wm.max_idle,
        capacity: cap.total(),
        max_enis: cap.max_enis,
    });
    reply.enis.extend(enis);
    reply.inhibits.extend(inhibits);
    reply
        .recent_calls
        .extend(pool.recent_calls().into_iter().map(|c| pb::CloudCall {
            action: c.action,
            result: c.result,
            duration_ms: c.duration_ms,
            at_unix_ms: c.at_ms,
        }));
    reply
        .slow_allocations
        .extend(
            pool.slow_allocations()
                .into_iter()
                .map(|s| pb::SlowAllocation {
                    reason: s.reason.to_string(),
                    pod: s.pod,
                    waited_ms: s.waited_ms,
                    waited_on: s.reason.kind.label().into(),
                    eni_id: s.reason.eni.unwrap_or_default(),
                    attach_ms: s.reason.attach_ms.unwrap_or(0),
                    enis_ready_meanwhile: s.reason.enis_ready_meanwhile,
                    at_unix_ms: s.at_ms,
                }),
        );
    reply.limits = pool.node().limits.as_ref().map(|l| pb::InstanceLimits {
        eni_quantity: l.eni_quantity,
        eni_private_ip_quantity: l.eni_private_ip_quantity,
        eni_ipv6_quantity: l.eni_ipv6_quantity,
        eni_total_quantity: l.eni_total_quantity,
    });
}
