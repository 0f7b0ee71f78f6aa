//! The node-state reconciler: tells the reporter when the node's ability to get new addresses changes
//! (Kubernetes shows it as the node condition `SufficientIP`). It reports the first state right after
//! start, so a condition left False by an earlier run is corrected, and afterwards only changes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::backend::Backends;
use crate::error::Result;
use crate::pool::NodeInfo;
use crate::reconciler::Reconciler;
use crate::report::{IpSufficiency, NodeResources, Reporter};

/// Pure plan: the state to report given what the backends say, or `None` when `last` already says it.
pub fn plan(shortages: &[String], last: Option<&IpSufficiency>) -> Option<IpSufficiency> {
    let now = if shortages.is_empty() {
        IpSufficiency::ok()
    } else {
        IpSufficiency::short(shortages.join("; "))
    };
    match last {
        // The message carries countdowns; only a change of the verdict is news.
        Some(l) if l.sufficient == now.sufficient => None,
        _ => Some(now),
    }
}

/// Watches the backends' shortages and reports changes.
pub struct NodeState {
    backends: Backends,
    reporter: Arc<dyn Reporter>,
    period: Duration,
    last: Mutex<Option<IpSufficiency>>,
}

impl NodeState {
    /// Observe `backends` every `period`, reporting to `reporter`.
    pub fn new(backends: Backends, reporter: Arc<dyn Reporter>, period: Duration) -> Self {
        NodeState {
            backends,
            reporter,
            period,
            last: Mutex::new(None),
        }
    }
}

impl Reconciler for NodeState {
    fn name(&self) -> &'static str {
        "node-state"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let shortages: Vec<String> = self
                .backends
                .all()
                .iter()
                .filter_map(|b| b.ip_shortage())
                .collect();
            // A panic elsewhere while holding it leaves only an old verdict behind: keep going.
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let Some(next) = plan(&shortages, last.as_ref()) else {
                return Ok(String::new());
            };
            self.reporter.ip_sufficiency(&next);
            let summary = format!("SufficientIP={} ({})", next.sufficient, next.reason);
            *last = Some(next);
            Ok(summary)
        })
    }
}

/// Watches the node's ENIs and addresses and reports a new snapshot whenever it changes.
pub struct NodeResourcesReporter {
    node: Arc<NodeInfo>,
    region: String,
    backends: Backends,
    reporter: Arc<dyn Reporter>,
    period: Duration,
    last: Mutex<Option<NodeResources>>,
}

impl NodeResourcesReporter {
    /// Snapshot `backends` of `node` every `period`.
    pub fn new(
        node: Arc<NodeInfo>,
        region: String,
        backends: Backends,
        reporter: Arc<dyn Reporter>,
        period: Duration,
    ) -> Self {
        NodeResourcesReporter {
            node,
            region,
            backends,
            reporter,
            period,
            last: Mutex::new(None),
        }
    }

    /// The snapshot now (pure apart from reading the backends).
    fn observe(&self) -> NodeResources {
        let mut status = crate::status::build(&self.node, &self.backends, Vec::new());
        // Counters of what happens, not of what is held: they would make every pass a change.
        status.recent_calls.clear();
        status.inhibits.clear();
        let pod_uids = self
            .backends
            .all()
            .iter()
            .flat_map(|b| b.allocations())
            .filter(|a| !a.uid.is_empty())
            .map(|a| (a.pod.to_string(), a.uid))
            .collect();
        NodeResources {
            region: self.region.clone(),
            zone: self.node.zone_id.clone(),
            limits: self.node.limits.clone(),
            status,
            pod_uids,
        }
    }
}

impl Reconciler for NodeResourcesReporter {
    fn name(&self) -> &'static str {
        "node-resources"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let now = self.observe();
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_ref() == Some(&now) {
                return Ok(String::new());
            }
            self.reporter.node_resources(&now);
            let summary = format!(
                "{} ENIs, {} pods",
                now.status.enis.len(),
                now.pod_uids.len()
            );
            *last = Some(now);
            Ok(summary)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_state_is_always_reported_then_only_changes() {
        let first = plan(&[], None).unwrap();
        assert!(first.sufficient && first.reason == "SufficientIP");
        assert_eq!(plan(&[], Some(&first)), None);
        let short = plan(&["vsw-a: IpNotEnough".into()], Some(&first)).unwrap();
        assert!(!short.sufficient && short.reason == "InsufficientIP");
        assert!(short.message.contains("vsw-a"));
        assert_eq!(
            plan(&["vsw-a: IpNotEnough, retried in 3 s".into()], Some(&short)),
            None,
            "a new countdown is not a new state"
        );
        assert!(plan(&[], Some(&short)).unwrap().sufficient);
    }
}
