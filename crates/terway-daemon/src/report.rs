//! What the daemon tells the cluster: events on pods and on its node, whether the node can still get
//! addresses (the `SufficientIP` condition), and when CNI ADD/DEL finished for a pod UID. The daemon
//! knows only the [`Reporter`] trait; the `terwayd` binary wires in the Kubernetes implementation, and
//! without Kubernetes [`LogReporter`] writes the node facts to the log (events are logged where they
//! are raised, whichever reporter publishes them).
//!
//! Every method is called on the request path, so implementations queue and return at once: a slow
//! or unreachable API server must never delay a pod's network.

use crate::record::PodKey;

/// Severity of an event, as Kubernetes has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something worked.
    Normal,
    /// Something the user may need to act on.
    Warning,
}

impl EventType {
    /// `Normal` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventTarget {
    /// A pod, with its UID when known (events then attach to this incarnation only).
    Pod {
        /// Namespace and name.
        key: PodKey,
        /// UID, may be empty.
        uid: String,
    },
    /// The daemon's node.
    Node,
}

impl std::fmt::Display for EventTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventTarget::Pod { key, .. } => write!(f, "pod {key}"),
            EventTarget::Node => f.write_str("node"),
        }
    }
}

/// Event reasons (defined in terway-core, where the CNI finds them too).
pub use terway_core::reasons;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What it is about.
    pub target: EventTarget,
    /// Severity.
    pub kind: EventType,
    /// PascalCase reason (see [`reasons`]).
    pub reason: String,
    /// What happened and, for warnings, what the user can do.
    pub message: String,
}

/// Whether the node can still get addresses from the cloud (condition `SufficientIP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSufficiency {
    /// False while the vSwitches are out of addresses or the instance is at its quota.
    pub sufficient: bool,
    /// `SufficientIP` or `InsufficientIP`.
    pub reason: String,
    /// What is short and what the user can do.
    pub message: String,
}

impl IpSufficiency {
    /// The node can get addresses.
    pub fn ok() -> Self {
        IpSufficiency {
            sufficient: true,
            reason: "SufficientIP".into(),
            message: "the node's vSwitches have free addresses".into(),
        }
    }

    /// The node cannot get addresses, because of `why`.
    pub fn short(why: impl Into<String>) -> Self {
        IpSufficiency {
            sufficient: false,
            reason: "InsufficientIP".into(),
            message: why.into(),
        }
    }
}

/// Which CNI operation finished for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniOp {
    /// ADD finished: the pod has its network.
    Added,
    /// DEL finished: nothing of the pod is left on the node.
    Deleted,
}

/// The node's network resources as the daemon holds them: instance facts and quotas, every ENI with
/// its addresses and the pod (and UID) holding each. Kubernetes keeps it as Terway's `Node` CR.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResources {
    /// Region, when configured.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Instance-type quotas (absent without ENIs).
    pub limits: Option<terway_cloud::InstanceTypeLimits>,
    /// The status snapshot (ENIs, addresses, pool), as terway-cli sees it, without calls and events.
    pub status: terway_rpc::v1::StatusReply,
    /// UID of each pod holding an address, by `namespace/name`.
    pub pod_uids: std::collections::BTreeMap<String, String>,
}

/// How the daemon reports to the cluster. Implementations must return without waiting on the network.
pub trait Reporter: Send + Sync + 'static {
    /// Publish an event the caller has logged (may be dropped under a flood: events are rate-limited
    /// per object and reason).
    fn event(&self, ev: Event);
    /// The node's IP sufficiency changed.
    fn ip_sufficiency(&self, state: &IpSufficiency);
    /// CNI ADD or DEL finished for the pod with `uid`.
    fn cni_done(&self, pod: &PodKey, uid: &str, op: CniOp);
    /// How many pod addresses this node can hold at most (node annotation `max-available-ip`).
    fn node_capacity(&self, max_pod_ips: u32);
    /// The node's resources changed (sent only on change).
    fn node_resources(&self, res: &NodeResources);
}

/// Writes everything to the log (no Kubernetes).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogReporter;

impl Reporter for LogReporter {
    // Whoever raises an event logs it; without Kubernetes there is nowhere else to publish it.
    fn event(&self, _ev: Event) {}

    fn ip_sufficiency(&self, state: &IpSufficiency) {
        if state.sufficient {
            tracing::info!(reason = %state.reason, "the node can get addresses again");
        } else {
            tracing::warn!(reason = %state.reason, message = %state.message, "the node cannot get addresses");
        }
    }

    fn cni_done(&self, pod: &PodKey, uid: &str, op: CniOp) {
        tracing::debug!(pod = %pod, uid, op = ?op, "cni done");
    }

    fn node_capacity(&self, max_pod_ips: u32) {
        tracing::info!(max_pod_ips, "node capacity");
    }

    fn node_resources(&self, res: &NodeResources) {
        tracing::debug!(
            enis = res.status.enis.len(),
            pods = res.pod_uids.len(),
            "node resources changed"
        );
    }
}
