//! Recovery at start and periodic garbage collection, both against the cloud as the source of truth
//! for which ENIs and addresses exist, and the store as the source of truth for which pod holds what.
//!
//! Start: every leftover intent is finished (unassign, delete) or rolled back (an ENI created but not
//! attached is deleted); tagged ENIs attached to us are adopted with all their addresses; allocations
//! whose address no longer exists are dropped. GC: pods that are gone are released, unknown addresses
//! and ENIs of ours are adopted, our ENIs left Available are deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use terway_cloud::{Cloud, EniFilter, EniStatus, EniType, Metadata, NetworkInterface};

use super::alloc::answer_for;
use super::engine::{TAG_CREATOR, TAG_INSTANCE};
use super::state::{Allocation, Eni, EniPhase, IpSlot};
use super::{now_ms, Pool};
use crate::error::Result;
use crate::store::{Change, IntentKind, Snapshot};

/// Id the PodCIDR pseudo-ENI had in state files written before PodCIDR addresses got their own backend.
pub const LEGACY_POD_CIDR_ID: &str = "pod-cidr";

/// What an ENI GC pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EniGcReport {
    /// ENIs adopted (ours, attached, unknown locally).
    pub adopted_enis: u32,
    /// Addresses adopted as idle.
    pub adopted_ips: u32,
    /// Local addresses forgotten because the cloud no longer has them.
    pub forgotten_ips: u32,
    /// Leftover Available ENIs deleted.
    pub deleted_enis: u32,
}

/// Carry cooldown/sticky leases (and in-progress releases, conservatively as cooldown) of a stored
/// ENI record over to the ENI rebuilt from the cloud.
fn overlay_leases(e: &mut Eni, old: &Eni, cooldown_ms: u64) {
    e.version = old.version + 1;
    for (ip, slot) in &old.ips {
        if !e.ips.contains_key(ip) {
            continue;
        }
        match slot {
            IpSlot::Cooldown { .. } | IpSlot::Sticky { .. } => {
                e.ips.insert(*ip, slot.clone());
            }
            IpSlot::Releasing => {
                e.ips.insert(
                    *ip,
                    IpSlot::Cooldown {
                        until_ms: now_ms() + cooldown_ms,
                    },
                );
            }
            IpSlot::Idle | IpSlot::InUse { .. } => {}
        }
    }
}

impl<C: Cloud, M: Metadata> Pool<C, M> {
    /// True when `n` is an ENI this node may take over or clean up without having recorded it:
    /// a secondary ENI of ours that passes `eni_tag_filter` and the block list. Logged when refused, so
    /// an operator who tagged an ENI `terway.alibabacloud.com/excluded=true` sees that it is left alone.
    fn manageable(&self, n: &NetworkInterface) -> bool {
        if n.eni_type == EniType::Primary {
            return false;
        }
        match self.inner.cfg.pool.eni_tag_policy.refusal(&n.tags) {
            None => true,
            Some(why) => {
                // Someone else's ENI (no creator tag) is normal and not worth a line.
                if n.tags.get(TAG_CREATOR.0).map(String::as_str) == Some(TAG_CREATOR.1) {
                    tracing::debug!(eni = %n.id, "leaving an ENI alone: it {why}");
                }
                false
            }
        }
    }

    async fn describe_attached(&self) -> Result<Vec<NetworkInterface>> {
        let filter = EniFilter {
            instance_id: Some(self.inner.node.instance_id.clone()),
            ..Default::default()
        };
        Ok(self
            .call(
                "DescribeNetworkInterfaces",
                self.inner.cloud.describe_network_interfaces(&filter),
            )
            .await?)
    }

    async fn describe_leftovers(&self) -> Result<Vec<NetworkInterface>> {
        let mut tags = self.inner.cfg.pool.eni_tag_policy.filter.clone();
        tags.extend(self.node_tags());
        let filter = EniFilter {
            status: Some(EniStatus::Available),
            tags,
            ..Default::default()
        };
        let list = self
            .call(
                "DescribeNetworkInterfaces",
                self.inner.cloud.describe_network_interfaces(&filter),
            )
            .await?;
        // Filter again locally: an API that ignored a filter must not make us delete someone else's ENI.
        Ok(list
            .into_iter()
            .filter(|n| {
                n.status == EniStatus::Available
                    && self.manageable(n)
                    && n.tags.get(TAG_INSTANCE) == Some(&self.inner.node.instance_id)
            })
            .collect())
    }

    /// Build an [`Eni`] for an attached ENI from the cloud's view plus metadata (gateway, CIDR).
    async fn adopt(&self, n: &NetworkInterface) -> Option<Eni> {
        let meta = match self.inner.meta.eni(&n.mac.to_lowercase()).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                tracing::info!(eni = %n.id, "ENI not yet visible in metadata; adopting it later");
                return None;
            }
            Err(e) => {
                tracing::warn!(eni = %n.id, error = %e, "metadata failed; adopting it later");
                return None;
            }
        };
        Some(Eni {
            id: n.id.clone(),
            mac: n.mac.to_lowercase(),
            vswitch_id: n.vswitch_id.clone(),
            cidr: meta.vswitch_cidr,
            gateway: meta.gateway,
            primary_ip: n.primary_ip,
            phase: EniPhase::Ready,
            ips: n
                .private_ips
                .iter()
                .map(|p| (p.address, IpSlot::Idle))
                .collect(),
            version: 1,
            busy: false,
            full: false,
        })
    }

    /// Rebuild the pool from the store snapshot and the cloud at start. Must run before serving.
    pub async fn recover(&self, snap: &Snapshot) -> Result<()> {
        let warm_up_done = snap
            .meta
            .iter()
            .any(|(k, v)| k == "warm_up_done" && v == "true");
        let stored: HashMap<String, Eni> = snap
            .enis
            .iter()
            .filter(|e| e.id != LEGACY_POD_CIDR_ID)
            .map(|e| (e.id.clone(), e.clone()))
            .collect();
        let mut changes: Vec<Change> = snap
            .intents
            .iter()
            .map(|i| Change::DelIntent(i.id.clone()))
            .collect();
        let mut enis: BTreeMap<String, Eni> = BTreeMap::new();

        {
            let mut to_destroy: BTreeSet<String> = BTreeSet::new();
            let mut to_unassign: Vec<(String, Vec<Ipv4Addr>)> = Vec::new();
            for intent in &snap.intents {
                tracing::info!(intent = ?intent.kind, "finishing an operation interrupted by a restart");
                match &intent.kind {
                    IntentKind::DeleteEni { eni_id } => {
                        to_destroy.insert(eni_id.clone());
                    }
                    IntentKind::UnassignIps { eni_id, ips } => {
                        to_unassign.push((eni_id.clone(), ips.clone()))
                    }
                    // Created-but-unattached ENIs are found by tag below; assigned IPs are adopted.
                    IntentKind::CreateEni { .. } | IntentKind::AssignIps { .. } => {}
                }
            }
            for (id, e) in &stored {
                if e.phase == EniPhase::Deleting {
                    to_destroy.insert(id.clone());
                }
            }
            let cooldown = self.inner.cfg.pool.ip_reuse_cooldown.as_millis() as u64;
            for n in self.describe_attached().await? {
                // An ENI we recorded stays ours even if its tags changed since; only unknown ones
                // must pass the tag policy.
                let known = stored.contains_key(&n.id);
                if !(known || self.manageable(&n))
                    || to_destroy.contains(&n.id)
                    || n.status != EniStatus::InUse
                {
                    continue;
                }
                let Some(mut e) = self.adopt(&n).await else {
                    continue;
                };
                match stored.get(&n.id) {
                    Some(old) => overlay_leases(&mut e, old, cooldown),
                    None => {
                        tracing::info!(eni = %n.id, ips = e.ips.len(), "adopting an attached ENI of ours")
                    }
                }
                enis.insert(e.id.clone(), e);
            }
            // Describe may lag behind; the instance's own view (metadata) of an ENI we recorded wins
            // over its absence from Describe, so no pod loses its address to a stale answer.
            for old in stored.values() {
                if enis.contains_key(&old.id) || to_destroy.contains(&old.id) {
                    continue;
                }
                if let Ok(Some(m)) = self.inner.meta.eni(&old.mac).await {
                    if m.eni_id == old.id {
                        tracing::warn!(eni = %old.id, "ENI missing from DescribeNetworkInterfaces but attached per metadata; keeping it");
                        let mut e = Eni {
                            id: old.id.clone(),
                            mac: old.mac.clone(),
                            vswitch_id: m.vswitch_id.clone(),
                            cidr: m.vswitch_cidr,
                            gateway: m.gateway,
                            primary_ip: m.primary_ip,
                            phase: EniPhase::Ready,
                            ips: m
                                .private_ipv4s
                                .iter()
                                .map(|ip| (*ip, IpSlot::Idle))
                                .collect(),
                            version: 1,
                            busy: false,
                            full: false,
                        };
                        overlay_leases(&mut e, old, cooldown);
                        enis.insert(e.id.clone(), e);
                    }
                }
            }
            for (eni_id, ips) in to_unassign {
                let Some(e) = enis.get(&eni_id) else { continue };
                let present: Vec<Ipv4Addr> = ips
                    .into_iter()
                    .filter(|ip| e.ips.contains_key(ip) && *ip != e.primary_ip)
                    .collect();
                let in_use: BTreeSet<Ipv4Addr> = snap
                    .pods
                    .iter()
                    .map(|a| a.ip)
                    .chain(snap.legacy_pods.iter().map(|a| a.ip))
                    .collect();
                let present: Vec<Ipv4Addr> = present
                    .into_iter()
                    .filter(|ip| !in_use.contains(ip))
                    .collect();
                if present.is_empty() {
                    continue;
                }
                match self
                    .call(
                        "UnassignPrivateIpAddresses",
                        self.inner.cloud.unassign_private_ips(&eni_id, &present),
                    )
                    .await
                {
                    Ok(()) => {
                        if let Some(e) = enis.get_mut(&eni_id) {
                            for ip in &present {
                                e.ips.remove(ip);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(eni = %eni_id, error = %e, "could not finish unassign; keeping the IPs idle")
                    }
                }
            }
            for id in &to_destroy {
                match self.destroy_eni(id).await {
                    Ok(()) => changes.push(Change::DelEni(id.clone())),
                    Err(e) => {
                        tracing::warn!(eni = %id, error = %e, "could not finish ENI delete; GC retries")
                    }
                }
            }
            for n in self.describe_leftovers().await? {
                if enis.contains_key(&n.id) {
                    continue;
                }
                tracing::info!(eni = %n.id, "deleting an ENI of ours left Available by an interrupted create");
                if let Err(e) = self.destroy_eni(&n.id).await {
                    tracing::warn!(eni = %n.id, error = %e, "leftover ENI not deleted yet; GC retries");
                }
            }
        }

        // Pod allocations of this backend: kept only where the address still exists, and never twice.
        // Records from before the backend was recorded take the answer from their ENI.
        let kind = self.inner.kind.resource_kind();
        let mut mine: Vec<Allocation> = snap
            .pods
            .iter()
            .filter(|a| a.backend == kind)
            .cloned()
            .collect();
        for l in snap
            .legacy_pods
            .iter()
            .filter(|l| l.eni_id != LEGACY_POD_CIDR_ID)
        {
            let Some(e) = enis.get(&l.eni_id) else {
                tracing::warn!(pod = %l.pod, ip = %l.ip, eni = %l.eni_id, "allocation's ENI is gone; dropping it");
                changes.push(Change::DelLegacyPod(l.pod.clone()));
                continue;
            };
            changes.push(Change::DelLegacyPod(l.pod.clone()));
            let a = l.upgrade(kind, answer_for(e, l.ip));
            changes.push(Change::PutPod(a.clone()));
            mine.push(a);
        }
        let mut pods = HashMap::new();
        for a in mine {
            let slot = enis.get_mut(&a.eni_id).and_then(|e| e.ips.get_mut(&a.ip));
            match slot {
                Some(s) if !matches!(s, IpSlot::InUse { .. }) => {
                    *s = IpSlot::in_use(&a.key());
                    pods.insert(a.key(), a);
                }
                _ => {
                    tracing::warn!(pod = %a.key(), ip = %a.ip, eni = %a.eni_id, "allocation's address is gone; dropping it");
                    changes.push(Change::DelPod(a.key()));
                }
            }
        }
        if snap.enis.iter().any(|e| e.id == LEGACY_POD_CIDR_ID) {
            changes.push(Change::DelEni(LEGACY_POD_CIDR_ID.into()));
        }
        for id in stored.keys() {
            if !enis.contains_key(id) {
                changes.push(Change::DelEni(id.clone()));
            }
        }
        changes.extend(enis.values().cloned().map(Change::PutEni));
        tracing::info!(backend = %kind, enis = enis.len(), pods = pods.len(), "recovered state");
        {
            let mut st = self.lock();
            st.enis = enis;
            st.pods = pods;
            for v in st.violations() {
                tracing::error!(violation = %v, "inconsistent state after recovery");
            }
            st.warm_up_done = warm_up_done;
            st.last_activity_ms = now_ms();
        }
        self.persist(changes).await?;
        self.publish_metrics();
        Ok(())
    }

    /// One pass of the ENI reconciler: adopt attached ENIs and addresses of ours the pool does not know,
    /// forget addresses the cloud no longer has, delete our ENIs left Available.
    pub async fn reconcile_enis(&self) -> Result<EniGcReport> {
        let mut report = EniGcReport::default();
        let attached = self.describe_attached().await?;
        let mut changes = Vec::new();
        for n in attached.iter().filter(|n| n.status == EniStatus::InUse) {
            let known = {
                let st = self.lock();
                st.enis.contains_key(&n.id) || st.pending_enis.contains(&n.id)
            };
            if known || !self.manageable(n) {
                continue;
            }
            if let Some(e) = self.adopt(n).await {
                let mut st = self.lock();
                if !st.enis.contains_key(&e.id) && !st.pending_enis.contains(&e.id) {
                    tracing::info!(eni = %e.id, "GC adopted an attached ENI of ours");
                    report.adopted_enis += 1;
                    st.enis.insert(e.id.clone(), e.clone());
                    changes.push(Change::PutEni(e));
                }
            }
        }
        let by_id: HashMap<&str, &NetworkInterface> =
            attached.iter().map(|n| (n.id.as_str(), n)).collect();
        {
            let mut st = self.lock();
            let ids: Vec<String> = st.enis.keys().cloned().collect();
            for id in ids {
                let pending = st.pending_enis.contains(&id);
                let Some(e) = st.enis.get_mut(&id) else {
                    continue;
                };
                if e.busy || pending || e.phase != EniPhase::Ready {
                    continue;
                }
                let Some(n) = by_id.get(id.as_str()) else {
                    tracing::warn!(eni = %id, "ENI is no longer attached; forgetting it");
                    continue;
                };
                let cloud_ips: BTreeSet<Ipv4Addr> =
                    n.private_ips.iter().map(|p| p.address).collect();
                let mut touched = false;
                for ip in &cloud_ips {
                    if !e.ips.contains_key(ip) {
                        e.ips.insert(*ip, IpSlot::Idle);
                        report.adopted_ips += 1;
                        touched = true;
                    }
                }
                let missing: Vec<Ipv4Addr> = e
                    .ips
                    .keys()
                    .filter(|ip| !cloud_ips.contains(ip))
                    .copied()
                    .collect();
                for ip in missing {
                    if matches!(e.ips.get(&ip), Some(IpSlot::InUse { .. })) {
                        tracing::error!(eni = %id, %ip, "the cloud removed an address a pod still holds");
                        continue;
                    }
                    e.ips.remove(&ip);
                    report.forgotten_ips += 1;
                    touched = true;
                }
                if touched {
                    e.version += 1;
                    changes.push(Change::PutEni(e.clone()));
                }
            }
        }
        for n in self.describe_leftovers().await? {
            let intent_tag = n
                .tags
                .get(super::engine::TAG_INTENT)
                .cloned()
                .unwrap_or_default();
            let pending = {
                let st = self.lock();
                st.pending_enis.contains(&n.id) || st.pending_enis.contains(&intent_tag)
            };
            if pending {
                continue;
            }
            match self.destroy_eni(&n.id).await {
                Ok(()) => report.deleted_enis += 1,
                Err(e) => tracing::warn!(eni = %n.id, error = %e, "leftover ENI not deleted"),
            }
        }
        self.persist(changes).await?;
        for v in self.lock().violations() {
            tracing::error!(violation = %v, "inconsistent state after GC");
        }
        if report != EniGcReport::default() {
            tracing::info!(?report, "ENI GC pass");
            self.inner.changed.notify_waiters();
        }
        Ok(report)
    }
}
