//! PodCIDR addresses (Terway's VPC-route mode): the node owns a CIDR that the VPC route table sends to
//! it; the first host is the node-side gateway and every other host can be a pod's. No cloud call is
//! ever made. A released address stays in cooldown (persisted as a lease) before anyone gets it again,
//! and free addresses are handed out round-robin from after the last one given, so a just-released
//! address is the last to be reused even with cooldown 0.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use terway_rpc::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{AllocPath, AllocRequest, ResourceBackend};
use crate::error::{DaemonError, Result};
use crate::metrics::Metrics;
use crate::pool::now_ms;
use crate::pool::reconcile::LEGACY_POD_CIDR_ID;
use crate::pool::state::PoolCounts;
use crate::reconciler::Reconciler;
use crate::record::{AllocKey, Allocation, NetAnswer, PodKey, ResourceKind};
use crate::store::{Change, Snapshot, Store};

/// Prefix of this backend's lease keys in the store.
const LEASE_PREFIX: &str = "pod-cidr/";

/// The allocator's state: who holds what, which addresses cool down until when, where to look next.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CidrState {
    /// Records by interface.
    pub pods: HashMap<AllocKey, Allocation>,
    /// Addresses in use.
    pub in_use: BTreeMap<Ipv4Addr, AllocKey>,
    /// Released addresses not handed out before the given unix ms.
    pub cooldown: BTreeMap<Ipv4Addr, u64>,
    /// The last address handed out (the search starts after it).
    pub cursor: Option<Ipv4Addr>,
}

/// First and last host of a PodCIDR as numbers (the network and broadcast addresses are not hosts
/// unless the prefix is /31 or /32), computed rather than counted: a /16 has 65,534 hosts.
fn host_range(cidr: Ipv4Net) -> (u32, u32) {
    let (net, bcast) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
    if cidr.prefix_len() >= 31 {
        (net, bcast)
    } else {
        (net + 1, bcast - 1)
    }
}

/// The node-side gateway of a PodCIDR: its first host.
pub fn gateway_of(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(host_range(cidr).0)
}

/// Usable pod addresses of a PodCIDR (every host but the gateway).
pub fn pod_addresses(cidr: Ipv4Net) -> u32 {
    let (first, last) = host_range(cidr);
    last - first
}

/// The address to hand out next at `now_ms`: the first free one after the cursor, wrapping around. The
/// search walks from the cursor, so a pool with free addresses ahead answers in a step or two.
pub fn pick(cidr: Ipv4Net, st: &CidrState, now_ms: u64) -> Option<Ipv4Addr> {
    let (first, last) = host_range(cidr);
    let gw = first;
    let free = |n: &u32| {
        let ip = Ipv4Addr::from(*n);
        *n != gw
            && !st.in_use.contains_key(&ip)
            && st.cooldown.get(&ip).is_none_or(|until| *until <= now_ms)
    };
    let start = st
        .cursor
        .map(u32::from)
        .filter(|c| (first..=last).contains(c))
        .unwrap_or(first);
    ((start + 1)..=last)
        .chain(first..=start)
        .find(free)
        .map(Ipv4Addr::from)
}

/// `ip`, asked for by its container (CNI_ARGS `IP=`), if it is a free pod address of `cidr`; a cooling
/// down address is given back, as the runtime names it itself.
pub fn pick_requested(cidr: Ipv4Net, st: &CidrState, ip: Ipv4Addr) -> Result<Ipv4Addr, String> {
    let (first, last) = host_range(cidr);
    let n = u32::from(ip);
    if n == first || !(first..=last).contains(&n) {
        return Err(format!(
            "address {ip} is not a pod address of this node's PodCIDR {cidr}; start the container without IP= \
             to get a new address"
        ));
    }
    match st.in_use.get(&ip) {
        Some(owner) => Err(format!("address {ip} is in use by {owner}")),
        None => Ok(ip),
    }
}

/// Counts in the pool's terms, for metrics and status.
pub fn counts(cidr: Ipv4Net, st: &CidrState, now_ms: u64) -> PoolCounts {
    let total = pod_addresses(cidr);
    let in_use = st.in_use.len() as u32;
    let cooldown = st
        .cooldown
        .iter()
        .filter(|(ip, until)| **until > now_ms && !st.in_use.contains_key(ip))
        .count() as u32;
    PoolCounts {
        total,
        idle: total.saturating_sub(in_use + cooldown),
        in_use,
        cooldown,
        releasing: 0,
    }
}

struct Inner {
    cidr: Ipv4Net,
    cooldown: Duration,
    store: Store,
    metrics: Arc<Metrics>,
    state: Mutex<CidrState>,
    node: String,
}

/// The PodCIDR backend; cheap to clone.
#[derive(Clone)]
pub struct PodCidr {
    inner: Arc<Inner>,
}

impl PodCidr {
    /// A backend over `cidr` with reuse cooldown `cooldown`, recording in `store`.
    pub fn new(
        node: &str,
        cidr: Ipv4Net,
        cooldown: Duration,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Self {
        PodCidr {
            inner: Arc::new(Inner {
                cidr,
                cooldown,
                store,
                metrics,
                state: Mutex::new(CidrState::default()),
                node: node.to_string(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CidrState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn answer(&self, ip: Ipv4Addr) -> NetAnswer {
        NetAnswer {
            ip,
            subnet: self.inner.cidr,
            gateway: gateway_of(self.inner.cidr),
            eni: None,
        }
    }

    fn publish(&self) {
        let c = counts(self.inner.cidr, &self.lock(), now_ms());
        self.inner.metrics.set_pool(ResourceKind::PodCidr, &c);
    }

    async fn do_recover(&self, snap: &Snapshot) -> Result<()> {
        let now = now_ms();
        let mut st = CidrState::default();
        let mut changes = Vec::new();
        let mut mine: Vec<Allocation> = snap
            .pods
            .iter()
            .filter(|a| a.backend == ResourceKind::PodCidr)
            .cloned()
            .collect();
        for l in snap
            .legacy_pods
            .iter()
            .filter(|l| l.eni_id == LEGACY_POD_CIDR_ID)
        {
            let a = l.upgrade(ResourceKind::PodCidr, self.answer(l.ip));
            changes.push(Change::DelLegacyPod(l.pod.clone()));
            changes.push(Change::PutPod(a.clone()));
            mine.push(a);
        }
        for a in mine {
            let key = a.key();
            let inside = self.inner.cidr.contains(&a.ip) && a.ip != gateway_of(self.inner.cidr);
            if !inside || st.in_use.contains_key(&a.ip) {
                // The PodCIDR changed (or the record is corrupt): the pod's address is not ours to give.
                tracing::warn!(pod = %key, ip = %a.ip, cidr = %self.inner.cidr, "allocation outside the node PodCIDR or held twice; dropping it");
                changes.push(Change::DelPod(key));
                continue;
            }
            st.in_use.insert(a.ip, key.clone());
            st.pods.insert(key, a);
        }
        for (k, until) in &snap.leases {
            let Some(ip) = k
                .strip_prefix(LEASE_PREFIX)
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if *until > now && self.inner.cidr.contains(&ip) {
                st.cooldown.insert(ip, *until);
            } else {
                changes.push(Change::DelLease(k.clone()));
            }
        }
        tracing::info!(backend = "pod-cidr", cidr = %self.inner.cidr, pods = st.pods.len(), cooling = st.cooldown.len(), "recovered state");
        *self.lock() = st;
        self.inner.store.commit(changes).await?;
        self.publish();
        Ok(())
    }

    async fn do_allocate(&self, req: &AllocRequest) -> Result<(Allocation, AllocPath)> {
        let now = now_ms();
        let alloc = {
            let mut st = self.lock();
            let picked = match req.ip {
                Some(ip) => Some(pick_requested(self.inner.cidr, &st, ip).map_err(|why| {
                    DaemonError::InvalidRequest(format!("pod {}: {why}", req.key))
                })?),
                None => pick(self.inner.cidr, &st, now),
            };
            let Some(ip) = picked else {
                let c = counts(self.inner.cidr, &st, now);
                return Err(DaemonError::Exhausted {
                    pod: req.key.to_string(),
                    reason: format!(
                        "every address of node {}'s PodCIDR {} is in use or cooling down ({} in use, {} in cooldown); \
                         use a larger pod_cidr or fewer pods per node",
                        self.inner.node, self.inner.cidr, c.in_use, c.cooldown
                    ),
                });
            };
            let alloc = Allocation {
                pod: req.key.pod.clone(),
                if_name: req.key.if_name.clone(),
                container_id: req.container_id.clone(),
                uid: req.uid.clone(),
                backend: ResourceKind::PodCidr,
                ip,
                eni_id: String::new(),
                answer: self.answer(ip),
                qos: req.qos.clone(),
                sticky: false,
                at_ms: now,
            };
            st.in_use.insert(ip, req.key.clone());
            st.cooldown.remove(&ip);
            st.cursor = Some(ip);
            st.pods.insert(req.key.clone(), alloc.clone());
            alloc
        };
        let res = self
            .inner
            .store
            .commit(vec![
                Change::PutPod(alloc.clone()),
                Change::DelLease(lease_key(alloc.ip)),
            ])
            .await;
        if let Err(e) = res {
            let mut st = self.lock();
            st.pods.remove(&req.key);
            st.in_use.remove(&alloc.ip);
            return Err(e);
        }
        self.publish();
        Ok((alloc, AllocPath::Fast))
    }

    async fn do_release(&self, key: &AllocKey, container_id: &str) -> Result<bool> {
        let now = now_ms();
        let cooldown = self.inner.cooldown.as_millis() as u64;
        let alloc = {
            let st = self.lock();
            let Some(a) = st.pods.get(key).cloned() else {
                return Ok(false);
            };
            if !container_id.is_empty() && a.container_id != container_id {
                tracing::info!(pod = %key, stale = container_id, current = %a.container_id, "ignoring release for a stale container");
                return Ok(false);
            }
            a
        };
        // Durable first: until the commit the address stays in use, so no other pod can be given it
        // and lose it again to a crash.
        let until = now + cooldown;
        let mut changes = vec![Change::DelPod(key.clone())];
        if cooldown > 0 {
            changes.push(Change::PutLease(lease_key(alloc.ip), until));
        }
        self.inner.store.commit(changes).await?;
        {
            let mut st = self.lock();
            if st.pods.get(key) == Some(&alloc) {
                st.pods.remove(key);
                st.in_use.remove(&alloc.ip);
                if cooldown > 0 {
                    st.cooldown.insert(alloc.ip, until);
                }
            }
        }
        tracing::info!(pod = %key, ip = %alloc.ip, "released");
        self.publish();
        Ok(true)
    }
}

fn lease_key(ip: Ipv4Addr) -> String {
    format!("{LEASE_PREFIX}{ip}")
}

/// Forgets cooldown leases that have ended, in memory and in the store.
struct LeaseReconciler {
    backend: PodCidr,
    period: Duration,
}

impl Reconciler for LeaseReconciler {
    fn name(&self) -> &'static str {
        "pod-cidr-leases"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let now = now_ms();
            let ended: Vec<Ipv4Addr> = self
                .backend
                .lock()
                .cooldown
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(ip, _)| *ip)
                .collect();
            if ended.is_empty() {
                return Ok(String::new());
            }
            self.backend
                .inner
                .store
                .commit(
                    ended
                        .iter()
                        .map(|ip| Change::DelLease(lease_key(*ip)))
                        .collect(),
                )
                .await?;
            let mut st = self.backend.lock();
            for ip in &ended {
                if st.cooldown.get(ip).is_some_and(|u| *u <= now) {
                    st.cooldown.remove(ip);
                }
            }
            drop(st);
            self.backend.publish();
            Ok(format!("{} cooldowns ended", ended.len()))
        })
    }
}

impl ResourceBackend for PodCidr {
    fn kind(&self) -> ResourceKind {
        ResourceKind::PodCidr
    }

    fn recover<'a>(&'a self, snap: &'a Snapshot) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.do_recover(snap))
    }

    fn start(&self, _stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        Vec::new()
    }

    fn allocate<'a>(
        &'a self,
        req: &'a AllocRequest,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<(Allocation, AllocPath)>> {
        Box::pin(self.do_allocate(req))
    }

    fn release<'a>(
        &'a self,
        key: &'a AllocKey,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.do_release(key, container_id))
    }

    fn lookup(&self, key: &AllocKey) -> Option<Allocation> {
        self.lock().pods.get(key).cloned()
    }

    fn allocations(&self) -> Vec<Allocation> {
        self.lock().pods.values().cloned().collect()
    }

    fn sticky_pods(&self) -> Vec<PodKey> {
        Vec::new()
    }

    fn drop_sticky<'a>(&'a self, _pod: &'a PodKey) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn reconcilers(&self) -> Vec<Arc<dyn Reconciler>> {
        vec![Arc::new(LeaseReconciler {
            backend: self.clone(),
            period: self
                .inner
                .cooldown
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
        })]
    }

    fn fill_status(&self, reply: &mut pb::StatusReply) {
        let now = now_ms();
        let c = counts(self.inner.cidr, &self.lock(), now);
        reply.pool = Some(pb::PoolStatus {
            total: c.total,
            idle: c.idle,
            in_use: c.in_use,
            cooldown: c.cooldown,
            min_idle: 0,
            max_idle: 0,
            capacity: c.total,
            max_enis: 0,
        });
    }

    fn begin_stop(&self) {}

    fn drain(&self, _limit: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr() -> Ipv4Net {
        "10.244.1.0/29".parse().unwrap()
    }

    fn key(n: &str) -> AllocKey {
        AllocKey::new(PodKey::new("ns", n), "eth0")
    }

    #[test]
    fn the_gateway_is_never_handed_out_and_addresses_rotate() {
        let c = cidr();
        assert_eq!(gateway_of(c), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(pod_addresses(c), 5);
        let big: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(pod_addresses(big), big.hosts().count() as u32 - 1);
        assert_eq!(gateway_of(big), Ipv4Addr::new(10, 244, 0, 1));
        let mut st = CidrState::default();
        let mut got = Vec::new();
        for i in 0..5 {
            let ip = pick(c, &st, 0).unwrap();
            st.in_use.insert(ip, key(&format!("p{i}")));
            st.cursor = Some(ip);
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert_eq!(pick(c, &st, 0), None, "full");
        // .3 released: it is the only free one, so it comes back even right after the cursor moved on.
        st.in_use.remove(&Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(pick(c, &st, 0), Some(Ipv4Addr::new(10, 244, 1, 3)));
    }

    #[test]
    fn cooldown_holds_an_address_back_until_it_ends() {
        let c = cidr();
        let mut st = CidrState::default();
        for ip in [2, 3, 4, 5] {
            st.in_use
                .insert(Ipv4Addr::new(10, 244, 1, ip), key(&ip.to_string()));
        }
        st.cooldown.insert(Ipv4Addr::new(10, 244, 1, 6), 1_000);
        assert_eq!(pick(c, &st, 999), None);
        assert_eq!(pick(c, &st, 1_000), Some(Ipv4Addr::new(10, 244, 1, 6)));
        let n = counts(c, &st, 999);
        assert_eq!((n.total, n.in_use, n.cooldown, n.idle), (5, 4, 1, 0));
    }

    #[test]
    fn a_just_released_address_is_reused_last() {
        let c: Ipv4Net = "10.244.1.0/28".parse().unwrap();
        let mut st = CidrState::default();
        let a = pick(c, &st, 0).unwrap();
        st.cursor = Some(a);
        // Released at once, no cooldown: the next pick moves on anyway.
        let b = pick(c, &st, 0).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_requested_address_must_be_a_free_pod_address_of_the_cidr() {
        let c = cidr();
        let mut st = CidrState::default();
        let a = |n: u8| Ipv4Addr::new(10, 244, 1, n);
        st.in_use.insert(a(2), key("other"));
        st.cooldown.insert(a(3), u64::MAX);
        assert_eq!(pick_requested(c, &st, a(3)), Ok(a(3)), "cooling down");
        assert_eq!(pick_requested(c, &st, a(6)), Ok(a(6)));
        assert!(pick_requested(c, &st, a(2))
            .unwrap_err()
            .contains("in use by ns/other"));
        for n in [1, 0, 7, 9] {
            let e = pick_requested(c, &st, a(n)).unwrap_err();
            assert!(e.contains("not a pod address"), "{n}: {e}");
        }
    }
}
