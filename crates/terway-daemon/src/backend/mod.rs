//! Resource backends: where a pod interface's address comes from is chosen per pod
//! ([`resolve::resolve`]) among the backends registered on the node ([`Backends`]). Each backend owns
//! its resources, its allocation records (all in the shared store, tagged with its kind), its
//! reconcilers and its status. Adding a backend is one module implementing [`ResourceBackend`] plus a
//! line in [`Backends::build`].
//!
//! - [`eni_pool`]: the ENI pool ([`crate::pool::Pool`]) as shared secondary IPs or exclusive ENIs.
//! - [`pod_cidr`]: addresses of the node PodCIDR, routed by the VPC route table.
//! - [`pod_eni`]: ENIs the controlplane made for a pod (its PodENI), waited for and moved into it.

pub mod eni_pool;
pub mod pod_cidr;
pub mod pod_eni;
pub mod resolve;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use terway_rpc::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::reconciler::Reconciler;
use crate::record::{AllocKey, Allocation, PodKey, QosAnswer, ResourceKind};
use crate::store::Snapshot;

pub use crate::pool::alloc::AllocPath;

/// A pod interface asking for an address.
#[derive(Debug, Clone)]
pub struct AllocRequest {
    /// Pod and interface.
    pub key: AllocKey,
    /// Sandbox.
    pub container_id: String,
    /// UID.
    pub uid: String,
    /// Keep the IP for the pod after release.
    pub sticky: bool,
    /// QoS to record with the allocation.
    pub qos: QosAnswer,
    /// The address the runtime asks for (CNI_ARGS `IP=`), if any.
    pub ip: Option<std::net::Ipv4Addr>,
}

/// One source of pod addresses.
pub trait ResourceBackend: Send + Sync + 'static {
    /// Which kind of resource it hands out.
    fn kind(&self) -> ResourceKind;
    /// Rebuild state from the store (its own records only) and the cloud; runs before serving.
    fn recover<'a>(&'a self, snap: &'a Snapshot) -> BoxFuture<'a, Result<()>>;
    /// Start background work (pool managers); handles end when `stop` turns true.
    fn start(&self, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>>;
    /// Give the interface an address, waiting until `deadline` for the cloud if needed. The record is
    /// durable when this returns.
    fn allocate<'a>(
        &'a self,
        req: &'a AllocRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<(Allocation, AllocPath)>>;
    /// Release the interface's address if `container_id` matches (empty = any); whether anything was.
    fn release<'a>(
        &'a self,
        key: &'a AllocKey,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
    /// The interface's current record.
    fn lookup(&self, key: &AllocKey) -> Option<Allocation>;
    /// Every current record (GC, status).
    fn allocations(&self) -> Vec<Allocation>;
    /// Pods with an address kept for them after release (sticky IPs).
    fn sticky_pods(&self) -> Vec<PodKey>;
    /// End the sticky reservations of a pod that is gone.
    fn drop_sticky<'a>(&'a self, pod: &'a PodKey) -> BoxFuture<'a, Result<()>>;
    /// The most pod addresses this backend can ever hold on this node (`None`: not bounded by ENIs).
    fn max_pod_ips(&self) -> Option<u32> {
        None
    }
    /// Why this backend cannot get new addresses right now (`None`: it can, or it never asks the cloud).
    fn ip_shortage(&self) -> Option<String> {
        None
    }
    /// This backend's reconcilers (e.g. the ENI GC against the cloud).
    fn reconcilers(&self) -> Vec<Arc<dyn Reconciler>>;
    /// Add this backend's part to the status reply.
    fn fill_status(&self, reply: &mut pb::StatusReply);
    /// Make waiting allocations give up (shutdown).
    fn begin_stop(&self);
    /// Wait (bounded) for in-flight cloud work.
    fn drain(&self, limit: Duration) -> BoxFuture<'_, ()>;
}

/// The backends registered on this node, and the kind serving pods that ask for nothing else.
#[derive(Clone)]
pub struct Backends {
    default: ResourceKind,
    list: Vec<Arc<dyn ResourceBackend>>,
}

impl Backends {
    /// A registry of `list` whose default is `default` (which must be in the list).
    pub fn new(default: ResourceKind, list: Vec<Arc<dyn ResourceBackend>>) -> Self {
        Backends { default, list }
    }

    /// The kind serving pods that ask for nothing else.
    pub fn default_kind(&self) -> ResourceKind {
        self.default
    }

    /// The kinds registered.
    pub fn kinds(&self) -> Vec<ResourceKind> {
        self.list.iter().map(|b| b.kind()).collect()
    }

    /// The backend of `kind`, if registered.
    pub fn get(&self, kind: ResourceKind) -> Option<&Arc<dyn ResourceBackend>> {
        self.list.iter().find(|b| b.kind() == kind)
    }

    /// Every backend.
    pub fn all(&self) -> &[Arc<dyn ResourceBackend>] {
        &self.list
    }

    /// The record of a pod interface, whichever backend holds it.
    pub fn lookup(&self, key: &AllocKey) -> Option<Allocation> {
        self.list.iter().find_map(|b| b.lookup(key))
    }
}

/// Start-up recovery of one backend as a one-shot reconciler (`<kind>-recovery`): the store snapshot and
/// the cloud are observed, the backend's state is rebuilt, leftovers of interrupted operations are
/// finished or rolled back.
pub struct Recovery {
    backend: Arc<dyn ResourceBackend>,
    snapshot: Arc<Snapshot>,
}

impl Recovery {
    /// Recovery of `backend` from `snapshot`.
    pub fn new(backend: Arc<dyn ResourceBackend>, snapshot: Arc<Snapshot>) -> Self {
        Recovery { backend, snapshot }
    }
}

impl Reconciler for Recovery {
    fn name(&self) -> &'static str {
        match self.backend.kind() {
            ResourceKind::SharedIp => "shared-ip-recovery",
            ResourceKind::ExclusiveEni => "exclusive-eni-recovery",
            ResourceKind::PodCidr => "pod-cidr-recovery",
            ResourceKind::PodEni => "pod-eni-recovery",
        }
    }

    fn period(&self) -> Duration {
        // Runs once at start; the period is never used.
        Duration::MAX
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            self.backend.recover(&self.snapshot).await?;
            Ok(format!(
                "{} records of {}",
                self.backend.allocations().len(),
                self.backend.kind()
            ))
        })
    }
}
