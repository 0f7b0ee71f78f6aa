//! NetworkPolicy enforcement as the daemon sees it: a hook the binary wires in (the Kubernetes
//! implementation watches policies, pods and namespaces and programs the node's nftables table).
//!
//! The daemon calls [`PodPolicy::admit`] inside AllocIP, after the pod's address is chosen and before the
//! reply: the CNI plugin creates the pod's interface only after the reply, so the pod's first packet
//! already meets its policy — no window in which a default-deny pod is open. A pod whose policy cannot be
//! put in place does not start (its address is released and AllocIP fails): failing closed is what a
//! NetworkPolicy user expects. Pods on their own ENI (exclusive ENI, PodENI) have no host-side interface
//! for the node to filter on and are not covered, as in Terway.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::conntrack_flush::FlushQueue;
use crate::error::{DaemonError, Result};
use crate::metrics::{Metrics, PolicyDropLabel};
use crate::reconciler::Reconciler;
use crate::record::AllocKey;
use crate::PodKey;

/// A pod whose policy state the node must have in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPod {
    /// Which pod.
    pub key: PodKey,
    /// Its interface inside the pod (`eth0` unless the runtime asks for another).
    pub if_name: String,
    /// The addresses it got.
    pub ips: Vec<IpAddr>,
    /// Its labels as AllocIP read them (the policy watch may not hold a pod created a moment ago); empty
    /// when not known (pods recovered at start, which the watch holds).
    pub labels: BTreeMap<String, String>,
}

impl PolicyPod {
    /// The pod of allocation `a` (labels unknown).
    pub fn of(a: &crate::record::Allocation) -> PolicyPod {
        PolicyPod {
            key: a.pod.clone(),
            if_name: a.if_name.clone(),
            ips: vec![IpAddr::V4(a.ip)],
            labels: BTreeMap::new(),
        }
    }
}

/// Whether pods of `kind` are covered: those behind a host-side veth (shared ENI, PodCIDR).
pub fn covers(kind: crate::record::ResourceKind) -> bool {
    matches!(
        kind,
        crate::record::ResourceKind::SharedIp | crate::record::ResourceKind::PodCidr
    )
}

/// The node's NetworkPolicy enforcement.
pub trait PodPolicy: Send + Sync + 'static {
    /// Put `pod`'s policy state in place (idempotent); the error says why it could not be.
    fn admit<'a>(&'a self, pod: &'a PolicyPod) -> BoxFuture<'a, Result<(), String>>;
    /// `pod`'s addresses were released: it is no longer a pod of this node.
    fn forget<'a>(&'a self, pod: &'a PodKey) -> BoxFuture<'a, ()>;
    /// The pods the daemon recovered at start: programmed by the next pass, without waiting for it.
    fn restore(&self, pods: Vec<PolicyPod>);
    /// Packets dropped so far, per isolated pod direction.
    fn drops(&self) -> BoxFuture<'_, std::result::Result<Vec<PolicyDrops>, String>>;
    /// Which policies select `pod` and what they admit, for `terway-cli policy`.
    fn explain<'a>(
        &'a self,
        pod: &'a PodKey,
    ) -> BoxFuture<'a, std::result::Result<terway_rpc::v1::PolicyReply, String>>;
}

/// Packets the node's policy dropped for one direction of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDrops {
    /// The pod.
    pub pod: PodKey,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// Packets dropped since the pod's chain was made.
    pub packets: u64,
}

/// Time between readings of the drop counters.
pub const DROPS_PERIOD: Duration = Duration::from_secs(15);

/// Pure plan: the metric values to set, and the label sets of pods no longer isolated (to remove).
pub fn plan_drops(
    shown: &BTreeSet<PolicyDropLabel>,
    drops: &[PolicyDrops],
) -> (Vec<(PolicyDropLabel, u64)>, Vec<PolicyDropLabel>) {
    let set: Vec<(PolicyDropLabel, u64)> = drops
        .iter()
        .map(|d| {
            (
                PolicyDropLabel {
                    namespace: d.pod.namespace.clone(),
                    pod: d.pod.name.clone(),
                    direction: d.direction.to_string(),
                },
                d.packets,
            )
        })
        .collect();
    let now: BTreeSet<&PolicyDropLabel> = set.iter().map(|(l, _)| l).collect();
    let gone = shown.iter().filter(|l| !now.contains(l)).cloned().collect();
    (set, gone)
}

/// The reconciler that publishes the drop counters as `terwayd_policy_dropped_packets`.
pub struct PolicyDropCounters {
    policy: Arc<dyn PodPolicy>,
    metrics: Arc<Metrics>,
    shown: Mutex<BTreeSet<PolicyDropLabel>>,
}

impl PolicyDropCounters {
    /// Read `policy`'s counters into `metrics`.
    pub fn new(policy: Arc<dyn PodPolicy>, metrics: Arc<Metrics>) -> Self {
        PolicyDropCounters {
            policy,
            metrics,
            shown: Mutex::new(BTreeSet::new()),
        }
    }
}

impl Reconciler for PolicyDropCounters {
    fn name(&self) -> &'static str {
        "policy-drop-counters"
    }

    fn period(&self) -> Duration {
        DROPS_PERIOD
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let drops = self.policy.drops().await.map_err(DaemonError::PolicySync)?;
            let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
            let (set, gone) = plan_drops(&shown, &drops);
            for l in &gone {
                self.metrics.policy_drops.remove(l);
                shown.remove(l);
            }
            for (l, packets) in set {
                self.metrics
                    .policy_drops
                    .get_or_create(&l)
                    .set(i64::try_from(packets).unwrap_or(i64::MAX));
                shown.insert(l);
            }
            // Publishing numbers is no change worth a log line.
            Ok(String::new())
        })
    }
}

/// What follows every release on behalf of a pod that is gone: its address queued for the conntrack flush,
/// its policy state dropped.
#[derive(Clone, Default)]
pub struct ReleaseHooks {
    /// The conntrack flush queue (`None`: DEL flushes itself).
    pub flush: Option<Arc<FlushQueue>>,
    /// NetworkPolicy enforcement, when wired in.
    pub policy: Option<Arc<dyn PodPolicy>>,
}

impl ReleaseHooks {
    /// Run the hooks for `key`, whose address `ip` was released just now.
    pub async fn released(&self, key: &AllocKey, ip: IpAddr) {
        if let Some(q) = &self.flush {
            q.push(ip);
        }
        if let Some(p) = &self.policy {
            p.forget(&key.pod).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_of_pods_no_longer_isolated_are_removed() {
        let label = |pod: &str, d: &str| PolicyDropLabel {
            namespace: "x".into(),
            pod: pod.into(),
            direction: d.into(),
        };
        let shown = BTreeSet::from([label("a", "ingress"), label("gone", "egress")]);
        let drops = vec![PolicyDrops {
            pod: PodKey::new("x", "a"),
            direction: "ingress",
            packets: 7,
        }];
        let (set, gone) = plan_drops(&shown, &drops);
        assert_eq!(set, vec![(label("a", "ingress"), 7)]);
        assert_eq!(gone, vec![label("gone", "egress")]);
    }
}
