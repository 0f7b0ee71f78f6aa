//! Cloud operations of the pool, each crash-safe by ordering: intent first, cloud call, then the
//! result and the intent's removal in one commit. Create waits until the ENI is InUse and visible in
//! metadata (MAC and every address) before its slots are offered to pods.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use terway_cloud::{
    Cloud, CloudError, CreateEniRequest, EniFilter, EniStatus, Metadata, NetworkInterface,
};

use super::engine::{TAG_CREATOR, TAG_INSTANCE, TAG_INTENT};
use super::schedule::AttachTimes;
use super::state::{Eni, EniPhase, IpSlot};
use super::{now_ms, Pool};
use crate::error::{DaemonError, Result};
use crate::store::{Change, Intent, IntentKind};

impl<C: Cloud, M: Metadata> Pool<C, M> {
    pub(crate) async fn op_assign(&self, eni_id: &str, count: u32) -> Result<()> {
        let (mac, vswitch) = {
            let st = self.lock();
            let e = st
                .enis
                .get(eni_id)
                .ok_or_else(|| DaemonError::NotReady(format!("ENI {eni_id} is gone")))?;
            (e.mac.clone(), e.vswitch_id.clone())
        };
        let intent = Intent::new(
            IntentKind::AssignIps {
                eni_id: eni_id.into(),
                count,
            },
            now_ms(),
        );
        self.persist(vec![Change::PutIntent(intent.clone())])
            .await?;
        let res = self
            .call(
                "AssignPrivateIpAddresses",
                self.inner.cloud.assign_private_ips(eni_id, count),
            )
            .await;
        let ips = match res {
            Ok(ips) => ips,
            Err(e) => {
                match &e {
                    CloudError::IpNotEnough { .. } => self.block_vswitch(&vswitch),
                    CloudError::IpCountExceeded { .. } => {
                        if let Some(en) = self.lock().enis.get_mut(eni_id) {
                            en.full = true;
                        }
                    }
                    _ => {}
                }
                self.persist(vec![Change::DelIntent(intent.id)]).await?;
                return Err(e.into());
            }
        };
        // Hand the addresses out only once the instance sees them (metadata), as Terway does.
        if let Err(e) = self
            .wait_metadata_ips(&mac, &ips, Duration::from_secs(10))
            .await
        {
            tracing::warn!(eni = eni_id, error = %e, "assigned IPs not yet visible in metadata; using them anyway");
        }
        let snapshot = {
            let mut st = self.lock();
            st.enis.get_mut(eni_id).map(|e| {
                for ip in &ips {
                    e.ips.entry(*ip).or_insert(IpSlot::Idle);
                }
                self.waits().ips_assigned(eni_id, &ips);
                e.version += 1;
                e.clone()
            })
        };
        let mut changes: Vec<Change> = snapshot.into_iter().map(Change::PutEni).collect();
        changes.push(Change::DelIntent(intent.id));
        self.persist(changes).await?;
        tracing::info!(eni = eni_id, count = ips.len(), "assigned IPs");
        Ok(())
    }

    pub(crate) async fn op_create(&self, secondary: u32) -> Result<()> {
        let order = self.vswitch_order().await;
        if order.is_empty() {
            return Err(DaemonError::Exhausted {
                pod: "(pool)".into(),
                reason: "every configured vSwitch is out of addresses".into(),
            });
        }
        let mut last = None;
        for vsw in order {
            match self.create_in(&vsw, secondary).await {
                Ok(()) => return Ok(()),
                Err(DaemonError::Cloud(e @ CloudError::IpNotEnough { .. })) => {
                    self.block_vswitch(&vsw);
                    last = Some(DaemonError::Cloud(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| DaemonError::NotReady("no vSwitch to create an ENI in".into())))
    }

    /// `creator=terway` and this node's instance tag: what marks an ENI as created by this node.
    pub(super) fn node_tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TAG_CREATOR.0.to_string(), TAG_CREATOR.1.to_string()),
            (
                TAG_INSTANCE.to_string(),
                self.inner.node.instance_id.clone(),
            ),
        ])
    }

    fn eni_tags(&self, intent_id: &str) -> BTreeMap<String, String> {
        let mut tags = self.inner.cfg.pool.eni_tags.clone();
        tags.extend(self.node_tags());
        tags.insert(TAG_INTENT.into(), intent_id.into());
        tags
    }

    async fn create_in(&self, vswitch_id: &str, secondary: u32) -> Result<()> {
        let mut intent = Intent::new(
            IntentKind::CreateEni {
                vswitch_id: vswitch_id.into(),
                eni_id: None,
            },
            now_ms(),
        );
        self.persist(vec![Change::PutIntent(intent.clone())])
            .await?;
        // GC must leave the ENI alone while this create is in flight (it carries the intent tag).
        self.lock().pending_enis.insert(intent.id.clone());
        let req = CreateEniRequest {
            vswitch_id: vswitch_id.into(),
            security_group_ids: self.inner.node.security_groups.clone(),
            trunk: false,
            secondary_ip_count: secondary,
            ipv6_count: 0,
            tags: self.eni_tags(&intent.id),
            description: format!("terway pool of {}", self.inner.node.instance_id),
            resource_group_id: self.inner.cfg.pool.resource_group_id.clone(),
            client_token: None,
        };
        let created = match self
            .call(
                "CreateNetworkInterface",
                self.inner.cloud.create_network_interface(&req),
            )
            .await
        {
            Ok(n) => n,
            Err(e) => {
                // A create can take effect and still fail for us (reply lost, retries exhausted). Its intent
                // tag finds such an ENI now, rather than leaving it to the periodic GC.
                let swept = if create_may_have_happened(&e) {
                    self.destroy_enis_of_intent(&intent.id).await
                } else {
                    Ok(())
                };
                self.lock().pending_enis.remove(&intent.id);
                match swept {
                    Ok(()) => self.persist(vec![Change::DelIntent(intent.id)]).await?,
                    Err(se) => tracing::warn!(
                        intent = %intent.id, error = %se,
                        "could not check for an ENI created despite the error; GC will delete it"
                    ),
                }
                return Err(e.into());
            }
        };
        self.lock().pending_enis.insert(created.id.clone());
        intent.kind = IntentKind::CreateEni {
            vswitch_id: vswitch_id.into(),
            eni_id: Some(created.id.clone()),
        };
        let attached = async {
            self.persist(vec![Change::PutIntent(intent.clone())])
                .await?;
            self.call(
                "AttachNetworkInterface",
                self.inner.cloud.attach_network_interface(
                    &created.id,
                    &self.inner.node.instance_id,
                    None,
                ),
            )
            .await?;
            self.wait_ready(&created.id).await
        }
        .await;
        match attached {
            Ok((eni, attach)) => {
                let snapshot = {
                    let mut st = self.lock();
                    st.pending_enis.remove(&eni.id);
                    st.pending_enis.remove(&intent.id);
                    st.enis.insert(eni.id.clone(), eni.clone());
                    self.waits().eni_ready(
                        &eni.id,
                        eni.ips.keys().copied(),
                        attach.as_millis() as u64,
                    );
                    eni
                };
                tracing::info!(eni = %snapshot.id, vswitch = vswitch_id, ips = snapshot.ips.len(), "ENI ready");
                self.persist(vec![Change::PutEni(snapshot), Change::DelIntent(intent.id)])
                    .await
            }
            Err(e) => {
                tracing::warn!(eni = %created.id, error = %e, "ENI did not become ready; rolling back");
                let rolled_back = self.destroy_eni(&created.id).await;
                {
                    let mut st = self.lock();
                    st.pending_enis.remove(&created.id);
                    st.pending_enis.remove(&intent.id);
                }
                match rolled_back {
                    Ok(()) => self.persist(vec![Change::DelIntent(intent.id)]).await?,
                    Err(re) => {
                        tracing::error!(eni = %created.id, error = %re, "rollback failed; GC will delete it")
                    }
                }
                Err(e)
            }
        }
    }

    /// Delete every ENI carrying this create intent's tag (normally none).
    async fn destroy_enis_of_intent(&self, intent_id: &str) -> Result<()> {
        let mut tags = self.node_tags();
        tags.insert(TAG_INTENT.to_string(), intent_id.to_string());
        let filter = EniFilter {
            tags: tags.clone(),
            ..Default::default()
        };
        let found = self
            .call(
                "DescribeNetworkInterfaces",
                self.inner.cloud.describe_network_interfaces(&filter),
            )
            .await?;
        // Match the tags again locally: never delete an ENI that is not this intent's.
        for n in found
            .iter()
            .filter(|n| tags.iter().all(|(k, v)| n.tags.get(k) == Some(v)))
        {
            tracing::info!(eni = %n.id, intent = intent_id, "deleting an ENI created despite a failed create call");
            self.destroy_eni(&n.id).await?;
        }
        Ok(())
    }

    /// Wait until the ENI is InUse and the instance sees its MAC and every address in metadata. The
    /// Describes start late enough to skip what no recent attach took, then come at most 200 ms apart.
    /// Returns the ENI and how long the attach took (request to InUse).
    pub(crate) async fn wait_ready(&self, eni_id: &str) -> Result<(Eni, Duration)> {
        let deadline = Instant::now() + self.inner.cfg.pool.eni_ready_timeout;
        let asked = Instant::now();
        let first_look = self.attach_times().first_look();
        tokio::time::sleep(first_look).await;
        let mut looks = 0;
        let mut seen_attaching = false;
        let (nic, attach): (NetworkInterface, Duration) = loop {
            looks += 1;
            match self
                .call(
                    "DescribeNetworkInterfaceAttribute",
                    self.inner.cloud.describe_network_interface(eni_id),
                )
                .await
            {
                Ok(Some(n)) if n.status == EniStatus::InUse => {
                    let attach = asked.elapsed();
                    self.attach_times().record(attach);
                    break (n, attach);
                }
                Ok(Some(n)) if n.status == EniStatus::Attaching => seen_attaching = true,
                // Back to Available after Attaching (or for longer than any Describe lag) = the attach failed;
                // waiting out the ready timeout would only delay the pod.
                Ok(Some(n))
                    if n.status == EniStatus::Available
                        && (seen_attaching || asked.elapsed() > ATTACH_FAILED_AFTER) =>
                {
                    return Err(CloudError::InvalidEniState {
                        eni_id: eni_id.into(),
                        action: "AttachNetworkInterface".into(),
                        code: "Available".into(),
                        message: "the attach did not complete: the ENI went back to Available"
                            .into(),
                        request_id: String::new(),
                    }
                    .into());
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(DaemonError::Cloud(CloudError::NotFound {
                        resource: eni_id.into(),
                        code: "InvalidEniId.NotFound".into(),
                        request_id: String::new(),
                    }))
                }
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(CloudError::Timeout {
                    what: format!("ENI {eni_id} to become InUse"),
                }
                .into());
            }
            tokio::time::sleep(AttachTimes::next_look(looks)).await;
        };
        let ips: Vec<Ipv4Addr> = nic.private_ips.iter().map(|p| p.address).collect();
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let meta = self.wait_metadata_ips(&nic.mac, &ips, remaining).await?;
        let eni = Eni {
            id: nic.id.clone(),
            mac: nic.mac.to_lowercase(),
            vswitch_id: nic.vswitch_id.clone(),
            cidr: meta.vswitch_cidr,
            gateway: meta.gateway,
            primary_ip: nic.primary_ip,
            phase: EniPhase::Ready,
            ips: ips.into_iter().map(|ip| (ip, IpSlot::Idle)).collect(),
            version: 1,
            busy: false,
            full: false,
        };
        Ok((eni, attach))
    }

    /// Poll metadata until the ENI (by MAC) is visible with all `ips`.
    pub(crate) async fn wait_metadata_ips(
        &self,
        mac: &str,
        ips: &[Ipv4Addr],
        limit: Duration,
    ) -> Result<terway_cloud::EniMetadata> {
        let deadline = Instant::now() + limit;
        let mut delay = Duration::from_millis(20);
        loop {
            match self.inner.meta.eni(mac).await {
                Ok(Some(m)) if ips.iter().all(|ip| m.private_ipv4s.contains(ip)) => return Ok(m),
                Ok(_) => {}
                Err(e) => tracing::debug!(mac, error = %e, "metadata not answering yet"),
            }
            if Instant::now() >= deadline {
                return Err(CloudError::Timeout {
                    what: format!("ENI {mac} and its IPs to appear in metadata"),
                }
                .into());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Detach (if attached), wait until Available, delete, wait until gone. Unknown ENI = done.
    pub(crate) async fn destroy_eni(&self, eni_id: &str) -> Result<()> {
        let deadline = Instant::now() + self.inner.cfg.pool.eni_ready_timeout;
        let mut delay = Duration::from_millis(50);
        let mut detach_sent = false;
        loop {
            let cur = self
                .call(
                    "DescribeNetworkInterfaceAttribute",
                    self.inner.cloud.describe_network_interface(eni_id),
                )
                .await;
            match cur {
                Ok(None) => return Ok(()),
                // Deletion may be asynchronous (Deleting): done only once Describe no longer
                // finds the ENI, so nothing half-deleted is forgotten.
                Ok(Some(n)) if n.status == EniStatus::Available => {
                    match self
                        .call(
                            "DeleteNetworkInterface",
                            self.inner.cloud.delete_network_interface(eni_id),
                        )
                        .await
                    {
                        Ok(()) => {}
                        Err(e) if e.is_retryable() => {}
                        Err(CloudError::InvalidEniState { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Some(n))
                    if matches!(n.status, EniStatus::InUse | EniStatus::Attaching)
                        && !detach_sent =>
                {
                    let inst = n
                        .instance_id
                        .clone()
                        .unwrap_or_else(|| self.inner.node.instance_id.clone());
                    match self
                        .call(
                            "DetachNetworkInterface",
                            self.inner.cloud.detach_network_interface(eni_id, &inst),
                        )
                        .await
                    {
                        Ok(()) => detach_sent = true,
                        // Attaching ENIs refuse to detach; try again once attached.
                        Err(CloudError::InvalidEniState { .. }) => {}
                        Err(e) if e.is_retryable() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Some(_)) => {}
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(CloudError::Timeout {
                    what: format!("ENI {eni_id} to detach and delete"),
                }
                .into());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    pub(crate) async fn op_unassign(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Result<()> {
        let intent = Intent::new(
            IntentKind::UnassignIps {
                eni_id: eni_id.into(),
                ips: ips.to_vec(),
            },
            now_ms(),
        );
        let res = async {
            self.persist(vec![Change::PutIntent(intent.clone())])
                .await?;
            self.call(
                "UnassignPrivateIpAddresses",
                self.inner.cloud.unassign_private_ips(eni_id, ips),
            )
            .await?;
            Ok::<(), DaemonError>(())
        }
        .await;
        let snapshot = {
            let mut st = self.lock();
            st.enis.get_mut(eni_id).map(|e| {
                for ip in ips {
                    if res.is_ok() {
                        e.ips.remove(ip);
                    } else if e.ips.get(ip) == Some(&IpSlot::Releasing) {
                        e.ips.insert(*ip, IpSlot::Idle);
                    }
                }
                if res.is_ok() {
                    self.waits().forget_all(ips);
                }
                e.busy = false;
                e.version += 1;
                e.clone()
            })
        };
        let mut changes: Vec<Change> = snapshot.into_iter().map(Change::PutEni).collect();
        changes.push(Change::DelIntent(intent.id));
        self.persist(changes).await?;
        if res.is_ok() {
            tracing::info!(eni = eni_id, count = ips.len(), "unassigned idle IPs");
            self.addresses_returned();
        }
        res
    }

    pub(crate) async fn op_delete(&self, eni_id: &str) -> Result<()> {
        let intent = Intent::new(
            IntentKind::DeleteEni {
                eni_id: eni_id.into(),
            },
            now_ms(),
        );
        let snapshot = self.lock().enis.get(eni_id).cloned();
        let mut changes: Vec<Change> = snapshot.into_iter().map(Change::PutEni).collect();
        changes.push(Change::PutIntent(intent.clone()));
        self.persist(changes).await?;
        let res = self.destroy_eni(eni_id).await;
        match res {
            Ok(()) => {
                if let Some(gone) = self.lock().enis.remove(eni_id) {
                    self.waits().forget_all(gone.ips.keys());
                }
                self.persist(vec![
                    Change::DelEni(eni_id.into()),
                    Change::DelIntent(intent.id),
                ])
                .await?;
                tracing::info!(eni = eni_id, "ENI deleted");
                self.addresses_returned();
                Ok(())
            }
            Err(e) => {
                // Stay in Deleting (no pod can take its slots); the next round retries.
                if let Some(en) = self.lock().enis.get_mut(eni_id) {
                    en.busy = false;
                }
                self.persist(vec![Change::DelIntent(intent.id)]).await?;
                Err(e)
            }
        }
    }
}

/// How long an ENI may still look Available after the attach was accepted (Describe lag) before we call the
/// attach failed.
const ATTACH_FAILED_AFTER: Duration = Duration::from_secs(10);

/// Whether a failed CreateNetworkInterface may nonetheless have created the ENI: only when the answer was
/// lost or the service failed; a refusal (quota, vSwitch exhausted, auth, throttling) created nothing.
fn create_may_have_happened(e: &CloudError) -> bool {
    match e {
        CloudError::Transport { .. } | CloudError::Timeout { .. } => true,
        CloudError::Api { status, code, .. } => *status >= 500 || code == "InternalError",
        _ => false,
    }
}
