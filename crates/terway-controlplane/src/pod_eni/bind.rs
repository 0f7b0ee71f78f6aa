//! The `pod-eni` controller: creates a PodENI's ENI (ClientToken derived from the PodENI, so a new
//! leader repeating the create gets the same ENI), attaches it to the pod's instance and records Bind;
//! once the pod is gone, detaches and deletes the ENI and lets the PodENI go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use terway_apis::{
    EniBindStatus, EniInfo, EniType, NetworkInterface as NetworkInterfaceCr, NetworkInterfaceSpec,
    Phase, PodEni,
};
use terway_cloud::{wait, Cloud, CreateEniRequest, EniStatus};

use super::plan::{
    bind_step, eni_id, is_fixed, release_step, when_pod_gone, BindStep, Gone, ReleaseStep,
    CREATOR_TAG, FINALIZER, POD_UID_ANNOTATION, TAG_POD_ENI,
};
use super::{backoff, key_of, ours, Context, POD_ENI};
use crate::error::Error;

/// One reconcile of a PodENI: bind it to its pod's instance, or release it once the pod is gone.
pub async fn reconcile_pod_eni<C: Cloud>(
    pe: Arc<PodEni>,
    ctx: Arc<Context<C>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let key = key_of(&pe.namespace().unwrap_or_default(), &pe.name_any());
    let r = drive(&pe, &ctx).await;
    ctx.metrics
        .reconciled(POD_ENI, r.is_ok(), started.elapsed());
    if r.is_ok() {
        ctx.failures.clear(&format!("podeni/{key}"));
    }
    r
}

async fn drive<C: Cloud>(seen: &PodEni, ctx: &Context<C>) -> Result<Action, Error> {
    let (ns, name) = (seen.namespace().unwrap_or_default(), seen.name_any());
    // Decide on the PodENI as it is now, not as the watch cache last saw it: a reconcile woken by the
    // pod can run before the cache has our own latest write (a recreated pod's adoption), and judging
    // the pod by a stale UID would detach the ENI from the pod that just got it.
    let Some(fresh) = pe_now(ctx, &ns, &name).await? else {
        return Ok(Action::await_change());
    };
    let pe = &fresh;
    if pe.metadata.deletion_timestamp.is_some() {
        return release(pe, ctx).await;
    }
    let pod = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read pod {ns}/{name}"), e))?;
    let made_for = pe
        .annotations()
        .get(POD_UID_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let live = pod
        .as_ref()
        .filter(|p| p.uid().unwrap_or_default() == made_for && ours(p));
    let Some(pod) = live else {
        let recreated = pod
            .as_ref()
            .is_some_and(|p| ours(p) && p.uid().unwrap_or_default() != made_for);
        if recreated && is_fixed(pe) {
            // A new pod of this name: the `pod` controller hands it this fixed IP, and that change
            // brings us back to bind it. Treating it as gone would detach the ENI it is about to get.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        return pod_gone(pe, ctx).await;
    };
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(Action::await_change());
    };
    let (instance, _) = ctx.node_identity(&node).await?;
    // Walk the steps; each is one call, and the next is recomputed from what the cloud says.
    for _ in 0..8 {
        let current = pe_now(ctx, &ns, &name).await?.unwrap_or_else(|| pe.clone());
        let id = eni_id(&current).to_string();
        let cloud_eni = describe(ctx, &id).await?;
        match bind_step(&current, cloud_eni.as_ref(), &instance) {
            BindStep::Create => create_eni(ctx, &current).await?,
            BindStep::Attach => {
                ctx.cloud
                    .attach_network_interface(&id, &instance, None)
                    .await
                    .map_err(|e| Error::cloud(format!("PodENI {ns}/{name}: attach {id} to {instance}"), e))?;
                wait::wait_eni_status(&ctx.cloud, &id, EniStatus::InUse, ctx.wait_status)
                    .await
                    .map_err(|e| Error::cloud(format!("PodENI {ns}/{name}: wait for {id} to attach"), e))?;
            }
            BindStep::Detach { from } => {
                detach_and_wait(ctx, &id, &from, &format!("PodENI {ns}/{name}")).await?
            }
            BindStep::Wait => tokio::time::sleep(Duration::from_millis(300)).await,
            BindStep::MarkBound => mark_bound(ctx, &current, &instance, &node).await?,
            BindStep::Done => return Ok(Action::requeue(Duration::from_secs(300))),
            BindStep::Vanished { eni } => {
                return Err(Error::Config(format!(
                    "PodENI {ns}/{name} records ENI {eni}, which the cloud no longer has; delete the pod to get a new ENI"
                )))
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// The pod a PodENI was made for is gone (or finished): an elastic ENI goes with it; a fixed one is
/// detached and kept for the pod's return (TTL or for good).
async fn pod_gone<C: Cloud>(pe: &PodEni, ctx: &Context<C>) -> Result<Action, Error> {
    let (ns, name) = (pe.namespace().unwrap_or_default(), pe.name_any());
    let status = pe.status.clone().unwrap_or_default();
    let since = status.pod_last_seen.as_ref().map(|t| {
        let secs = (Timestamp::now().as_second() - t.0.as_second()).max(0);
        Duration::from_secs(secs as u64)
    });
    match when_pod_gone(pe, since) {
        Gone::Release => {
            tracing::info!(podeni = %key_of(&ns, &name), fixed = is_fixed(pe), "pod gone; releasing its ENI");
            Api::<PodEni>::namespaced(ctx.client.clone(), &ns)
                .delete(&name, &DeleteParams::default())
                .await
                .map_err(|e| Error::kube(format!("delete PodENI {ns}/{name}"), e))?;
            Ok(Action::await_change())
        }
        Gone::Unbind => {
            let id = eni_id(pe).to_string();
            if !id.is_empty() {
                release_eni(ctx, &id, &format!("PodENI {ns}/{name}"), false).await?;
            }
            let mut infos = status.eni_infos.clone();
            if let Some(info) = infos.get_mut(&id) {
                info.status = Some(EniBindStatus::Unbind);
            }
            let patch = serde_json::json!({"status": {
                "phase": Phase::Unbind,
                "instanceID": null,
                "podLastSeen": Time(Timestamp::now()),
                "eniInfos": infos,
            }});
            Api::<PodEni>::namespaced(ctx.client.clone(), &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube(format!("mark PodENI {ns}/{name} Unbind"), e))?;
            tracing::info!(podeni = %key_of(&ns, &name), eni = %id, "pod gone; its fixed IP is detached and kept");
            // Recomputed at once: the TTL starts now.
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Gone::KeepFor(d) => Ok(Action::requeue(d + Duration::from_secs(1))),
        Gone::Keep => Ok(Action::await_change()),
    }
}

/// The PodENI as the API server has it now (our own writes change it between steps).
async fn pe_now<C: Cloud>(ctx: &Context<C>, ns: &str, name: &str) -> Result<Option<PodEni>, Error> {
    Api::<PodEni>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read PodENI {ns}/{name}"), e))
}

pub(super) async fn describe<C: Cloud>(
    ctx: &Context<C>,
    id: &str,
) -> Result<Option<terway_cloud::NetworkInterface>, Error> {
    if id.is_empty() {
        return Ok(None);
    }
    ctx.cloud
        .describe_network_interface(id)
        .await
        .map_err(|e| Error::cloud(format!("describe ENI {id}"), e))
}

/// Create the ENI the intent describes and record it in the PodENI and a NetworkInterface CR.
async fn create_eni<C: Cloud>(ctx: &Context<C>, pe: &PodEni) -> Result<(), Error> {
    let (ns, name) = (pe.namespace().unwrap_or_default(), pe.name_any());
    let mut alloc = pe.spec.allocations.first().cloned().unwrap_or_default();
    let token = pe.uid().unwrap_or_default();
    let req = CreateEniRequest {
        vswitch_id: alloc.eni.v_switch_id.clone(),
        security_group_ids: alloc.eni.security_group_ids.clone(),
        tags: BTreeMap::from([
            (CREATOR_TAG.0.to_string(), CREATOR_TAG.1.to_string()),
            (TAG_POD_ENI.to_string(), key_of(&ns, &name)),
        ]),
        description: format!("terway-controlplane: pod {ns}/{name}"),
        // One ENI per PodENI whoever asks: a new leader repeating this create gets the same answer.
        client_token: (!token.is_empty()).then_some(token),
        ..CreateEniRequest::default()
    };
    let eni = ctx
        .cloud
        .create_network_interface(&req)
        .await
        .map_err(|e| {
            Error::cloud(
                format!("PodENI {ns}/{name}: create its ENI in {}", req.vswitch_id),
                e,
            )
        })?;
    let cidr = ctx
        .cloud
        .describe_vswitches(std::slice::from_ref(&eni.vswitch_id))
        .await
        .map_err(|e| Error::cloud(format!("describe vSwitch {}", eni.vswitch_id), e))?
        .first()
        .map(|v| v.cidr.to_string())
        .unwrap_or_default();
    alloc.eni.id = eni.id.clone();
    alloc.eni.mac = eni.mac.clone();
    alloc.eni.vpc_id = eni.vpc_id.clone();
    alloc.ipv4 = eni.primary_ip.to_string();
    alloc.ipv4_cidr = cidr.clone();
    let patch = serde_json::json!({"spec": {"allocations": [alloc]}});
    Api::<PodEni>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("record ENI {} in PodENI {ns}/{name}", eni.id), e))?;
    tracing::info!(podeni = %key_of(&ns, &name), eni = %eni.id, ip = %eni.primary_ip, "ENI created");
    let ni = NetworkInterfaceCr {
        metadata: ObjectMeta {
            name: Some(eni.id.clone()),
            ..ObjectMeta::default()
        },
        spec: NetworkInterfaceSpec {
            eni: alloc.eni.clone(),
            ipv4: alloc.ipv4.clone(),
            ipv4_cidr: cidr,
            pod_eni_ref: Some(ObjectReference {
                kind: Some("PodENI".into()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: pe.uid(),
                ..ObjectReference::default()
            }),
            ..NetworkInterfaceSpec::default()
        },
        status: None,
    };
    match Api::<NetworkInterfaceCr>::all(ctx.client.clone())
        .create(&PostParams::default(), &ni)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(
            format!("create NetworkInterface {}", eni.id),
            e,
        )),
    }
}

async fn mark_bound<C: Cloud>(
    ctx: &Context<C>,
    pe: &PodEni,
    instance: &str,
    node: &str,
) -> Result<(), Error> {
    let (ns, name) = (pe.namespace().unwrap_or_default(), pe.name_any());
    let id = eni_id(pe).to_string();
    let now = Time(Timestamp::now());
    let info = EniInfo {
        id: id.clone(),
        eni_type: Some(EniType::Secondary),
        status: Some(EniBindStatus::Bind),
        ..EniInfo::default()
    };
    let patch = serde_json::json!({"status": {
        "phase": Phase::Bind,
        "instanceID": instance,
        "podLastSeen": now,
        "eniInfos": {id.clone(): info.clone()},
    }});
    Api::<PodEni>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("mark PodENI {ns}/{name} Bind"), e))?;
    let ni_patch = serde_json::json!({"status": {
        "phase": Phase::Bind, "instanceID": instance, "nodeName": node, "eniInfo": info,
    }});
    if let Err(e) = Api::<NetworkInterfaceCr>::all(ctx.client.clone())
        .patch_status(&id, &PatchParams::default(), &Patch::Merge(&ni_patch))
        .await
    {
        tracing::warn!(eni = %id, error = %e, "could not update the NetworkInterface status");
    }
    tracing::info!(podeni = %key_of(&ns, &name), eni = %id, %instance, "PodENI bound");
    Ok(())
}

/// Release a PodENI being deleted: its ENI detached and deleted, its NetworkInterface CR removed,
/// then the finalizer dropped so the object goes.
async fn release<C: Cloud>(pe: &PodEni, ctx: &Context<C>) -> Result<Action, Error> {
    let (ns, name) = (pe.namespace().unwrap_or_default(), pe.name_any());
    let id = eni_id(pe).to_string();
    if !id.is_empty() {
        release_eni(ctx, &id, &format!("PodENI {ns}/{name}"), true).await?;
        match Api::<NetworkInterfaceCr>::all(ctx.client.clone())
            .delete(&id, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("delete NetworkInterface {id}"), e)),
        }
    }
    let keep: Vec<String> = pe
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({"metadata": {"finalizers": keep}});
    match Api::<PodEni>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(Error::kube(
                format!("drop the finalizer of PodENI {ns}/{name}"),
                e,
            ))
        }
    }
    tracing::info!(podeni = %key_of(&ns, &name), eni = %id, "PodENI released");
    Ok(Action::await_change())
}

/// Detach ENI `id` from `from` and wait until it is Available; `what` names its owner in errors.
async fn detach_and_wait<C: Cloud>(
    ctx: &Context<C>,
    id: &str,
    from: &str,
    what: &str,
) -> Result<(), Error> {
    ctx.cloud
        .detach_network_interface(id, from)
        .await
        .map_err(|e| Error::cloud(format!("{what}: detach {id} from {from}"), e))?;
    wait::wait_eni_status(&ctx.cloud, id, EniStatus::Available, ctx.wait_status)
        .await
        .map_err(|e| Error::cloud(format!("{what}: wait for {id} to detach"), e))?;
    Ok(())
}

/// Detach ENI `id` when attached, then delete it when `delete` (else keep it Available, a fixed IP
/// waiting for its pod); `what` names its owner in errors.
pub(super) async fn release_eni<C: Cloud>(
    ctx: &Context<C>,
    id: &str,
    what: &str,
    delete: bool,
) -> Result<(), Error> {
    for _ in 0..8 {
        match release_step(describe(ctx, id).await?.as_ref()) {
            ReleaseStep::Forget => return Ok(()),
            ReleaseStep::Delete if !delete => return Ok(()),
            ReleaseStep::Wait => tokio::time::sleep(Duration::from_millis(300)).await,
            ReleaseStep::Detach { from } => detach_and_wait(ctx, id, &from, what).await?,
            ReleaseStep::Delete => {
                ctx.cloud
                    .delete_network_interface(id)
                    .await
                    .map_err(|e| Error::cloud(format!("{what}: delete {id}"), e))?;
                wait::wait_eni_deleted(&ctx.cloud, id, ctx.wait_deleted)
                    .await
                    .map_err(|e| Error::cloud(format!("{what}: wait for {id} to be deleted"), e))?;
            }
        }
    }
    Err(Error::Config(format!(
        "{what}: ENI {id} is still changing state; retrying"
    )))
}

/// The error policy of the `pod-eni` controller.
pub fn pod_eni_error<C: Cloud>(pe: Arc<PodEni>, err: &Error, ctx: Arc<Context<C>>) -> Action {
    let key = format!(
        "podeni/{}",
        key_of(&pe.namespace().unwrap_or_default(), &pe.name_any())
    );
    let n = ctx.failures.record(&key);
    tracing::warn!(object = %key, error = %err, failures = n, "reconcile failed");
    Action::requeue(backoff(n))
}
