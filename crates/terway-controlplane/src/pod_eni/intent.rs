//! The `pod` controller: a scheduled pod of a PodNetworking gets its PodENI, written as an intent
//! (the vSwitch of the node's zone, the security groups) before any cloud call is made for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use terway_apis::events::Note;
use terway_apis::{Allocation, Eni, NetworkingStatus, Phase, PodEni, PodEniSpec, PodNetworking};
use terway_cloud::{Cloud, EniFilter, EniType};
use terway_core::annotations::POD_NETWORKING;

use super::plan::{choose_vswitch, is_fixed, FINALIZER, NODE_LABEL, POD_UID_ANNOTATION};
use super::{backoff, key_of, ours, Context, POD};
use crate::error::Error;

/// One reconcile of a pod: make sure its PodENI exists (as an intent when new).
pub async fn reconcile_pod<C: Cloud>(pod: Arc<Pod>, ctx: Arc<Context<C>>) -> Result<Action, Error> {
    let started = Instant::now();
    let r = ensure_intent(&pod, &ctx).await;
    ctx.metrics.reconciled(POD, r.is_ok(), started.elapsed());
    if r.is_ok() {
        ctx.failures.clear(&format!(
            "pod/{}",
            key_of(&pod.namespace().unwrap_or_default(), &pod.name_any())
        ));
    }
    r
}

async fn ensure_intent<C: Cloud>(pod: &Pod, ctx: &Context<C>) -> Result<Action, Error> {
    if !ours(pod) || pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        // Not scheduled yet: the binding is an update we are woken by.
        return Ok(Action::await_change());
    };
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let uid = pod.uid().unwrap_or_default();
    let pe_api: Api<PodEni> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(pe) = pe_api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read PodENI {ns}/{name}"), e))?
    {
        let made_for = pe
            .annotations()
            .get(POD_UID_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        if made_for == uid {
            return Ok(Action::await_change());
        }
        if !is_fixed(&pe) || pe.metadata.deletion_timestamp.is_some() {
            // The PodENI of an earlier pod of this name is being released.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        return adopt(ctx, pod, &pe, &node).await;
    }
    let pn_name = pod
        .annotations()
        .get(POD_NETWORKING)
        .cloned()
        .unwrap_or_default();
    let pn_api: Api<PodNetworking> = Api::all(ctx.client.clone());
    let Some(pn) = pn_api
        .get_opt(&pn_name)
        .await
        .map_err(|e| Error::kube(format!("read PodNetworking {pn_name}"), e))?
    else {
        warn_pod(
            ctx,
            pod,
            format!("PodNetworking {pn_name} does not exist; the pod waits for it"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let status = pn.status.clone().unwrap_or_default();
    if status.status != Some(NetworkingStatus::Ready) {
        warn_pod(
            ctx,
            pod,
            format!(
                "PodNetworking {pn_name} is not Ready ({}); the pod waits for it",
                status.message
            ),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let (instance, zone) = ctx.node_identity(&node).await?;
    let in_zone: Vec<String> = status
        .v_switches
        .iter()
        .filter(|v| v.zone == zone)
        .map(|v| v.id.clone())
        .collect();
    let free: BTreeMap<String, u64> = if in_zone.is_empty() {
        BTreeMap::new()
    } else {
        ctx.cloud
            .describe_vswitches(&in_zone)
            .await
            .map_err(|e| {
                Error::cloud(
                    format!("pod {ns}/{name}: describe the vSwitches of {pn_name}"),
                    e,
                )
            })?
            .into_iter()
            .map(|v| (v.id, v.available_ip_count))
            .collect()
    };
    let Some(vswitch) = choose_vswitch(
        &status.v_switches,
        &zone,
        &free,
        pn.spec.v_switch_select_options.v_switch_selection_policy,
        &key_of(&ns, &name),
    ) else {
        warn_pod(
            ctx,
            pod,
            format!("no vSwitch of PodNetworking {pn_name} in zone {zone} (node {node}) has a free IP; add one to its vSwitchOptions"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let groups = if !pn.spec.security_group_ids.is_empty() {
        pn.spec.security_group_ids.clone()
    } else if !ctx.default_security_groups.is_empty() {
        ctx.default_security_groups.clone()
    } else {
        // Neither names one: the node's own groups (its primary ENI's), as terwayd does.
        primary_groups(ctx, &instance).await?
    };
    let pe = PodEni {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([(NODE_LABEL.to_string(), node.clone())])),
            annotations: Some(BTreeMap::from([
                (POD_UID_ANNOTATION.to_string(), uid),
                (POD_NETWORKING.to_string(), pn_name.clone()),
            ])),
            finalizers: Some(vec![FINALIZER.to_string()]),
            ..ObjectMeta::default()
        },
        spec: PodEniSpec {
            allocations: vec![Allocation {
                allocation_type: pn.spec.allocation_type.clone(),
                eni: Eni {
                    vpc_id: ctx.vpc_id.clone(),
                    zone: zone.clone(),
                    v_switch_id: vswitch.clone(),
                    security_group_ids: groups,
                    ..Eni::default()
                },
                interface: "eth0".into(),
                default_route: true,
                ..Allocation::default()
            }],
            zone,
        },
        status: None,
    };
    match pe_api.create(&PostParams::default(), &pe).await {
        Ok(_) => {
            tracing::info!(pod = %key_of(&ns, &name), podnetworking = %pn_name, %vswitch, "PodENI intent written");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(Error::kube(format!("create PodENI {ns}/{name}"), e)),
    }
}

/// The security groups of `instance`'s primary ENI.
async fn primary_groups<C: Cloud>(ctx: &Context<C>, instance: &str) -> Result<Vec<String>, Error> {
    let filter = EniFilter {
        instance_id: Some(instance.to_string()),
        eni_type: Some(EniType::Primary),
        ..EniFilter::default()
    };
    let enis = ctx
        .cloud
        .describe_network_interfaces(&filter)
        .await
        .map_err(|e| Error::cloud(format!("describe the primary ENI of {instance}"), e))?;
    let groups: Vec<String> = enis
        .into_iter()
        .flat_map(|e| e.security_group_ids)
        .collect();
    if groups.is_empty() {
        return Err(Error::Config(format!(
            "no security group for the ENI: the PodNetworking names none, eni-config has no security_groups and instance {instance}'s primary ENI shows none"
        )));
    }
    Ok(groups)
}

/// A recreated pod takes over the fixed IP of its name: the PodENI is re-addressed to it (and its node);
/// the pod-eni controller then moves the ENI there. An ENI is zonal, so a pod in another zone waits.
async fn adopt<C: Cloud>(
    ctx: &Context<C>,
    pod: &Pod,
    pe: &PodEni,
    node: &str,
) -> Result<Action, Error> {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let (_, zone) = ctx.node_identity(node).await?;
    if !pe.spec.zone.is_empty() && pe.spec.zone != zone {
        warn_pod(
            ctx,
            pod,
            format!(
                "the fixed IP of pod {ns}/{name} lives in zone {}, and the pod is on node {node} in zone {zone}; delete the pod so it is placed in {} (or delete PodENI {ns}/{name} to give up the IP)",
                pe.spec.zone, pe.spec.zone
            ),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let api = Api::<PodEni>::namespaced(ctx.client.clone(), &ns);
    // First the binding is declared stale (Binding, no instance), then the PodENI names the new pod:
    // in the other order the new pod's terwayd could take the old pod's Bind for its own and use an
    // ENI the controller is about to move.
    let stale = serde_json::json!({"status": {"phase": Phase::Binding, "instanceID": null}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .map_err(|e| Error::kube(format!("mark PodENI {ns}/{name} Binding"), e))?;
    let patch = serde_json::json!({"metadata": {
        "annotations": {POD_UID_ANNOTATION: pod.uid().unwrap_or_default()},
        "labels": {NODE_LABEL: node},
    }});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("hand PodENI {ns}/{name} to the recreated pod"), e))?;
    tracing::info!(pod = %key_of(&ns, &name), %node, eni = %super::plan::eni_id(pe), "recreated pod takes over its fixed IP");
    Ok(Action::await_change())
}

async fn warn_pod<C: Cloud>(ctx: &Context<C>, pod: &Pod, note: String) {
    tracing::warn!(pod = %key_of(&pod.namespace().unwrap_or_default(), &pod.name_any()), "{note}");
    ctx.events
        .publish(
            pod.object_ref(&()),
            Note {
                type_: "Warning",
                reason: "AllocIPFailed",
                action: "AllocateENI",
                note: &note,
            },
        )
        .await;
}

/// The error policy of the `pod` controller.
pub fn pod_error<C: Cloud>(pod: Arc<Pod>, err: &Error, ctx: Arc<Context<C>>) -> Action {
    let key = format!(
        "pod/{}",
        key_of(&pod.namespace().unwrap_or_default(), &pod.name_any())
    );
    let n = ctx.failures.record(&key);
    tracing::warn!(object = %key, error = %err, failures = n, "reconcile failed");
    Action::requeue(backoff(n))
}
