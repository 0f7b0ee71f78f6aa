//! The conntrack-flush reconciler: deletes the node's conntrack entries of released pod addresses in the
//! background, in one walk of the conntrack table for every address released since the last pass.
//!
//! Why here and not in CNI DEL: a released address must not carry conntrack state into its next pod, but
//! the kernel can only find an address's entries by walking the whole conntrack hash table (262144 buckets
//! here: ≈10–20 ms, more than the rest of DEL together), and it has to as soon as anything in the node's
//! namespace uses conntrack (symmetric routing does). The address cannot get a new pod before its reuse
//! cooldown ends, so the daemon takes the walk off DEL's path and batches it: DEL learns from GetIPInfo
//! that the daemon flushes (`conntrack_flushed_on_release`) and skips its own walk. The daemon offers this
//! only with a cooldown of at least [`MIN_COOLDOWN`], so a pass (every [`PERIOD`]) always ends before the
//! address can be handed out again. Addresses the pod GC releases are flushed the same way, which DEL never
//! did for them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::backend::Backends;
use crate::error::{DaemonError, Result};
use crate::reconciler::Reconciler;

/// Time between passes. A pass with nothing queued only looks at the queue.
pub const PERIOD: Duration = Duration::from_millis(200);

/// The shortest reuse cooldown under which the daemon takes the flush over from DEL: five passes fit in it
/// (a pass over a few addresses is one table walk, tens of milliseconds).
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);

/// Deletes every conntrack entry that has one of the addresses as its original or reply source or
/// destination, in the node's namespace. Blocking. The binary wires in the kernel implementation.
pub trait ConntrackFlusher: Send + Sync + 'static {
    /// Delete the entries of `ips`; how many were deleted.
    fn flush(&self, ips: &[IpAddr]) -> std::result::Result<usize, String>;
}

/// Released addresses waiting for their flush.
#[derive(Default)]
pub struct FlushQueue {
    pending: Mutex<BTreeSet<IpAddr>>,
}

impl FlushQueue {
    /// Queue `ip` (released just now).
    pub fn push(&self, ip: IpAddr) {
        self.lock().insert(ip);
    }

    /// How many addresses wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn take(&self) -> BTreeSet<IpAddr> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<IpAddr>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Release `key`'s record in `b` if `container_id` matches (empty: any), and run the release hooks (the
/// conntrack flush queue, the policy state) when it was released. Every release on behalf of a pod that is
/// gone (ReleaseIP, the pod GC, a new sandbox replacing an old one) goes through here.
pub async fn release_and_queue(
    b: &dyn crate::backend::ResourceBackend,
    key: &crate::record::AllocKey,
    container_id: &str,
    hooks: &crate::pod_policy::ReleaseHooks,
) -> Result<bool> {
    let held = b.lookup(key);
    let released = b.release(key, container_id).await?;
    if let (true, Some(a)) = (released, held) {
        hooks.released(key, IpAddr::V4(a.ip)).await;
    }
    Ok(released)
}

/// Pure plan: the queued addresses that no pod holds by now. One that a pod got back in the meantime (a
/// sticky or runtime-named address, which skips the cooldown) keeps its entries: they are that pod's.
pub fn plan(queued: &BTreeSet<IpAddr>, held: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
    queued.difference(held).copied().collect()
}

/// The reconciler.
pub struct ConntrackFlush {
    queue: Arc<FlushQueue>,
    flusher: Arc<dyn ConntrackFlusher>,
    backends: Backends,
}

impl ConntrackFlush {
    /// Flush what `queue` collects with `flusher`, skipping addresses `backends` hold again.
    pub fn new(
        queue: Arc<FlushQueue>,
        flusher: Arc<dyn ConntrackFlusher>,
        backends: Backends,
    ) -> Self {
        ConntrackFlush {
            queue,
            flusher,
            backends,
        }
    }

    async fn pass(&self) -> Result<String> {
        let queued = self.queue.take();
        if queued.is_empty() {
            return Ok(String::new());
        }
        let held: BTreeSet<IpAddr> = self
            .backends
            .all()
            .iter()
            .flat_map(|b| b.allocations())
            .map(|a| IpAddr::V4(a.ip))
            .collect();
        let ips = plan(&queued, &held);
        if ips.is_empty() {
            return Ok(String::new());
        }
        let flusher = self.flusher.clone();
        let batch = ips.clone();
        let res = tokio::task::spawn_blocking(move || flusher.flush(&batch))
            .await
            .map_err(|e| DaemonError::Conntrack(format!("flush task: {e}")))?;
        match res {
            Ok(n) => Ok(format!(
                "deleted {n} conntrack entries of {} released address(es)",
                ips.len()
            )),
            Err(e) => {
                // Back in the queue: the next pass retries them, within the cooldown as a rule.
                for ip in &ips {
                    self.queue.push(*ip);
                }
                Err(DaemonError::Conntrack(format!(
                    "could not delete the conntrack entries of {} released address(es) ({}): {e}; retried, \
                     and until then a new pod given one of them may receive flows meant for the old one",
                    ips.len(),
                    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(",")
                )))
            }
        }
    }
}

impl Reconciler for ConntrackFlush {
    fn name(&self) -> &'static str {
        "conntrack-flush"
    }

    fn period(&self) -> Duration {
        PERIOD
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(self.pass())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn addresses_held_again_keep_their_entries() {
        let queued = ips(&["10.0.0.5", "10.0.0.6", "10.0.0.7"]);
        let held = ips(&["10.0.0.6", "10.0.0.9"]);
        assert_eq!(
            plan(&queued, &held),
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "10.0.0.7".parse().unwrap()
            ]
        );
        assert!(plan(&BTreeSet::new(), &held).is_empty());
    }

    #[test]
    fn the_queue_collects_each_address_once() {
        let q = FlushQueue::default();
        q.push("10.0.0.5".parse().unwrap());
        q.push("10.0.0.5".parse().unwrap());
        assert_eq!(q.len(), 1);
        assert_eq!(q.take().len(), 1);
        assert!(q.is_empty());
    }
}
