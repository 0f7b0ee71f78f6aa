//! Asynchronous ENI transitions and fabric notifications. An attach completes after a random delay
//! from the configured range: the fabric hook runs first (outside the state lock, on a blocking
//! thread) and only then is the ENI reported `InUse`; a failing hook sends it back to `Available`.
//! Detach is symmetric. A transition superseded meanwhile (its `op_seq` changed) is dropped.

use std::sync::Arc;

use terway_cloud::{EniStatus, EniType};
use tracing::{debug, warn};

use crate::actions::Effect;
use crate::hook::FabricHook;
use crate::service::{lock, random_delay, Service};

/// Run a hook call on a blocking thread and wait for it.
async fn blocking<T: Send + 'static>(
    hook: &Arc<dyn FabricHook>,
    f: impl FnOnce(&dyn FabricHook) -> T + Send + 'static,
) -> Option<T> {
    let hook = Arc::clone(hook);
    match tokio::task::spawn_blocking(move || f(hook.as_ref())).await {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(error = %e, "fabric hook panicked");
            None
        }
    }
}

impl Service {
    /// Run the follow-ups of an action: fabric notifications now, transitions later.
    pub(crate) async fn run_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::CompleteAttach { eni_id, seq } => {
                    let svc = Arc::clone(self);
                    let d = self.delays();
                    let delay = random_delay(d.attach_min_ms, d.attach_max_ms);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        svc.finish_attach(&eni_id, seq).await;
                    });
                }
                Effect::CompleteDetach { eni_id, seq } => {
                    let svc = Arc::clone(self);
                    let d = self.delays();
                    let delay = random_delay(d.detach_min_ms, d.detach_max_ms);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        svc.finish_detach(&eni_id, seq).await;
                    });
                }
                Effect::CompleteDelete { eni_id, seq } => {
                    let svc = Arc::clone(self);
                    let d = self.delays();
                    let delay = random_delay(d.delete_min_ms, d.delete_max_ms);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        svc.mutate(|world| {
                            let current = world.enis.get(&eni_id).map(|e| (e.status, e.op_seq));
                            if current == Some((EniStatus::Deleting, seq)) {
                                world.remove_eni(&eni_id);
                            }
                        });
                    });
                }
                Effect::IpsAssigned(eni, ips) => {
                    blocking(&self.hook, move |h| h.ips_assigned(&eni, &ips)).await;
                }
                Effect::IpsUnassigned(eni, ips) => {
                    blocking(&self.hook, move |h| h.ips_unassigned(&eni, &ips)).await;
                }
                Effect::RouteAdded(dst, inst) => {
                    blocking(&self.hook, move |h| h.route_entry_added(dst, &inst)).await;
                }
                Effect::RouteRemoved(dst, inst) => {
                    blocking(&self.hook, move |h| h.route_entry_removed(dst, &inst)).await;
                }
                Effect::SecurityGroups(groups) => {
                    blocking(&self.hook, move |h| h.security_groups_changed(&groups)).await;
                }
            }
        }
    }

    /// Re-arm transitions that were in flight when the state was persisted (restart after a crash).
    pub(crate) async fn resume_pending(self: &Arc<Self>) {
        // The fabric learns the security groups first, so no ENI is ever unfiltered for long.
        let groups = Effect::SecurityGroups(
            lock(&self.world)
                .security_groups
                .values()
                .cloned()
                .collect(),
        );
        self.run_effects(vec![groups]).await;
        let pending: Vec<Effect> = lock(&self.world)
            .enis
            .values()
            .filter_map(|e| match e.status {
                EniStatus::Attaching => Some(Effect::CompleteAttach {
                    eni_id: e.id.clone(),
                    seq: e.op_seq,
                }),
                EniStatus::Detaching => Some(Effect::CompleteDetach {
                    eni_id: e.id.clone(),
                    seq: e.op_seq,
                }),
                EniStatus::Deleting => Some(Effect::CompleteDelete {
                    eni_id: e.id.clone(),
                    seq: e.op_seq,
                }),
                _ => None,
            })
            .collect();
        self.run_effects(pending).await;
    }

    async fn finish_attach(self: &Arc<Self>, eni_id: &str, seq: u64) {
        let snapshot = {
            let world = lock(&self.world);
            match world.enis.get(eni_id) {
                Some(e) if e.status == EniStatus::Attaching && e.op_seq == seq => {
                    e.instance_id.clone().map(|inst| (inst, e.to_api()))
                }
                _ => None,
            }
        };
        let Some((instance_id, eni)) = snapshot else {
            debug!(eni_id, seq, "attach completion superseded");
            return;
        };
        let cloud_failed = {
            let rate = self.faults().attach_failure_rate;
            rate > 0.0 && rand::Rng::random_bool(&mut rand::rng(), rate.clamp(0.0, 1.0))
        };
        let outcome = if cloud_failed {
            Err("injected attach failure".to_string())
        } else {
            let inst = instance_id.clone();
            blocking(&self.hook, move |h| h.eni_attached(&inst, &eni))
                .await
                .unwrap_or_else(|| Err("fabric hook panicked".to_string()))
        };
        let id = eni_id.to_string();
        self.mutate(|world| {
            let Some(e) = world.enis.get_mut(&id) else {
                return;
            };
            if e.status != EniStatus::Attaching || e.op_seq != seq {
                return;
            }
            match &outcome {
                Ok(()) => {
                    e.status = EniStatus::InUse;
                    if e.trunk_eni_id.is_some() {
                        e.eni_type = EniType::Member;
                    }
                }
                Err(_) => {
                    e.status = EniStatus::Available;
                    e.instance_id = None;
                    e.trunk_eni_id = None;
                    e.device_index = None;
                }
            }
        });
        if let Err(why) = &outcome {
            warn!(eni_id, instance_id, %why, "attach failed; ENI is Available again");
            let kind = if cloud_failed {
                "attach_failed"
            } else {
                "fabric_attach_failed"
            };
            self.record_fault(
                "AttachNetworkInterface",
                "",
                kind,
                format!("{eni_id} on {instance_id}: {why}"),
            );
        }
    }

    async fn finish_detach(self: &Arc<Self>, eni_id: &str, seq: u64) {
        let snapshot = {
            let world = lock(&self.world);
            match world.enis.get(eni_id) {
                Some(e) if e.status == EniStatus::Detaching && e.op_seq == seq => {
                    e.instance_id.clone().map(|inst| (inst, e.to_api()))
                }
                _ => None,
            }
        };
        let Some((instance_id, eni)) = snapshot else {
            debug!(eni_id, seq, "detach completion superseded");
            return;
        };
        blocking(&self.hook, move |h| h.eni_detached(&instance_id, &eni)).await;
        let id = eni_id.to_string();
        self.mutate(|world| {
            let Some(e) = world.enis.get_mut(&id) else {
                return;
            };
            if e.status != EniStatus::Detaching || e.op_seq != seq {
                return;
            }
            e.status = EniStatus::Available;
            e.instance_id = None;
            e.trunk_eni_id = None;
            e.device_index = None;
            e.eni_type = e.created_type;
        });
    }
}
