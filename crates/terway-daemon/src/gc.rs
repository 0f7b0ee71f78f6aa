//! The pod GC reconciler: releases what pods that no longer exist still hold, in every backend, and
//! ends sticky reservations of pods that are gone. Only the pod source can say a pod is gone; while it
//! does not know (no pods file yet, watch not synced) nothing is released.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::backend::Backends;
use crate::claims::Claims;
use crate::conntrack_flush::release_and_queue;
use crate::error::Result;
use crate::pod_policy::ReleaseHooks;
use crate::podsource::PodSource;
use crate::pool::now_ms;
use crate::reconciler::Reconciler;
use crate::record::{AllocKey, Allocation, PodKey, ResourceKind};
use crate::report::{CniOp, LogReporter, Reporter};

/// What the pod GC should do.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodGcPlan {
    /// Records of pods that are gone, with the backend holding each.
    pub release: Vec<(ResourceKind, AllocKey, String)>,
    /// Pods that are gone whose sticky reservations end now.
    pub drop_sticky: Vec<(ResourceKind, PodKey)>,
}

/// What a pod GC pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodGcReport {
    /// Allocations released because their pod is gone.
    pub released_pods: u32,
    /// Sticky reservations dropped because their pod is gone.
    pub dropped_sticky: u32,
    /// Releases left for the next pass (a request for the pod was in flight).
    pub deferred: u32,
}

/// Pure plan: every record and sticky reservation whose pod is not in `live`. Containers of
/// non-Kubernetes runtimes (`_runtime/<container id>`) are never in a pod source: only their runtime's DEL
/// (or a CNI GC) ends them.
pub fn plan(
    live: &HashSet<PodKey>,
    records: &[Allocation],
    sticky: &[(ResourceKind, PodKey)],
) -> PodGcPlan {
    let mut p = PodGcPlan {
        release: records
            .iter()
            .filter(|a| !a.pod.is_runtime() && !live.contains(&a.pod))
            .map(|a| (a.backend, a.key(), a.container_id.clone()))
            .collect(),
        drop_sticky: sticky
            .iter()
            .filter(|(_, pod)| !pod.is_runtime() && !live.contains(pod))
            .cloned()
            .collect(),
    };
    p.release.sort();
    p.drop_sticky.sort();
    p
}

/// Releases the resources of pods that are gone.
pub struct PodGc<P: PodSource> {
    backends: Backends,
    pods: Arc<P>,
    claims: Claims,
    period: Duration,
    grace: Duration,
    reporter: Arc<dyn Reporter>,
    hooks: ReleaseHooks,
}

impl<P: PodSource> PodGc<P> {
    /// A pod GC over `backends`, asking `pods` which pods live, every `period`.
    pub fn new(backends: Backends, pods: Arc<P>, claims: Claims, period: Duration) -> Self {
        PodGc {
            backends,
            pods,
            claims,
            period,
            grace: Duration::ZERO,
            reporter: Arc::new(LogReporter),
            hooks: ReleaseHooks::default(),
        }
    }

    /// What follows each release (the conntrack flush queue, the policy state).
    pub fn with_release_hooks(mut self, hooks: ReleaseHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Report what the GC releases as torn down (the pod is gone and so is its address).
    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// Leave allocations younger than `grace` alone (the pod source may not list their pod yet).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// One pass: observe → plan → apply.
    pub async fn pass(&self) -> Result<PodGcReport> {
        let mut report = PodGcReport::default();
        let Some(live) = self.pods.live_pods().await else {
            return Ok(report);
        };
        let settled_before = now_ms().saturating_sub(self.grace.as_millis() as u64);
        let records: Vec<Allocation> = self
            .backends
            .all()
            .iter()
            .flat_map(|b| b.allocations())
            .filter(|a| a.at_ms <= settled_before)
            .collect();
        let sticky: Vec<(ResourceKind, PodKey)> = self
            .backends
            .all()
            .iter()
            .flat_map(|b| b.sticky_pods().into_iter().map(|p| (b.kind(), p)))
            .collect();
        let plan = plan(&live, &records, &sticky);
        for (kind, key, container_id) in plan.release {
            let Some(b) = self.backends.get(kind) else {
                continue;
            };
            // A pod with a request in flight is left for the next pass.
            let Ok(_claim) = self.claims.claim(&key.pod) else {
                report.deferred += 1;
                continue;
            };
            let uid = b.lookup(&key).map(|a| a.uid).unwrap_or_default();
            if release_and_queue(b.as_ref(), &key, &container_id, &self.hooks).await? {
                tracing::info!(pod = %key, backend = %kind, "GC released the address of a pod that no longer exists");
                report.released_pods += 1;
                if !uid.is_empty() {
                    self.reporter.cni_done(&key.pod, &uid, CniOp::Deleted);
                }
            }
        }
        for (kind, pod) in plan.drop_sticky {
            if let Some(b) = self.backends.get(kind) {
                b.drop_sticky(&pod).await?;
                report.dropped_sticky += 1;
            }
        }
        Ok(report)
    }
}

impl<P: PodSource> Reconciler for PodGc<P> {
    fn name(&self) -> &'static str {
        "pod-gc"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let r = self.pass().await?;
            Ok(if r == PodGcReport::default() {
                String::new()
            } else {
                format!("{r:?}")
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NetAnswer;

    fn rec(ns: &str, name: &str, ifn: &str) -> Allocation {
        Allocation {
            pod: PodKey::new(ns, name),
            if_name: ifn.into(),
            container_id: "c".into(),
            uid: String::new(),
            backend: ResourceKind::SharedIp,
            ip: "10.0.0.2".parse().unwrap(),
            eni_id: "eni-1".into(),
            answer: NetAnswer {
                ip: "10.0.0.2".parse().unwrap(),
                subnet: "10.0.0.0/24".parse().unwrap(),
                gateway: "10.0.0.253".parse().unwrap(),
                eni: None,
            },
            qos: Default::default(),
            sticky: false,
            at_ms: 0,
        }
    }

    #[test]
    fn only_pods_that_are_gone_are_released_every_interface_of_them() {
        let live: HashSet<PodKey> = [PodKey::new("a", "live")].into();
        let records = vec![
            rec("a", "live", "eth0"),
            rec("a", "gone", "eth0"),
            rec("a", "gone", "net1"),
        ];
        let sticky = vec![
            (ResourceKind::SharedIp, PodKey::new("a", "live")),
            (ResourceKind::SharedIp, PodKey::new("a", "sts-0")),
        ];
        let p = plan(&live, &records, &sticky);
        let released: Vec<String> = p.release.iter().map(|(_, k, _)| k.to_string()).collect();
        assert_eq!(released, vec!["a/gone", "a/gone (net1)"]);
        assert_eq!(
            p.drop_sticky,
            vec![(ResourceKind::SharedIp, PodKey::new("a", "sts-0"))]
        );
        assert_eq!(
            plan(&[PodKey::new("a", "gone")].into(), &records[1..], &[]),
            PodGcPlan::default()
        );
    }

    #[test]
    fn runtime_containers_are_left_to_their_runtime() {
        let records = vec![
            rec(terway_core::RUNTIME_NAMESPACE, "web1", "eth0"),
            rec("a", "gone", "eth0"),
        ];
        let sticky = vec![(ResourceKind::SharedIp, PodKey::runtime("web1").unwrap())];
        let p = plan(&HashSet::new(), &records, &sticky);
        let released: Vec<String> = p.release.iter().map(|(_, k, _)| k.to_string()).collect();
        assert_eq!(released, vec!["a/gone"]);
        assert!(p.drop_sticky.is_empty());
    }
}
