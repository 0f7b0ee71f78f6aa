//! The `pod` controller: a scheduled pod of a PodNetworking gets its PodENI, written as an intent
//! (the vSwitch of the node's zone, the security groups) before any cloud call is made for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use terway_apis::events::Note;
use terway_apis::{Allocation, Eni, NetworkingStatus, PodEni, PodEniSpec, PodNetworking};
use terway_cloud::Cloud;
use terway_core::annotations::POD_NETWORKING;

use super::plan::{choose_vswitch, FINALIZER, NODE_LABEL, POD_UID_ANNOTATION};
use super::{backoff, key_of, ours, Context, POD};
use crate::error::Error;

/// One reconcile of a pod: make sure its PodENI exists (as an intent when new).
pub async fn reconcile_pod<C: Cloud>(pod: Arc<Pod>, ctx: Arc<Context<C>>) -> Result<Action, Error> {
    let started = Instant::now();
    let r = ensure_intent(&pod, &ctx).await;
    ctx.metrics.reconciled(POD, r.is_ok(), started.elapsed());
    if r.is_ok() {
        ctx.succeeded(&format!(
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
        return Ok(if made_for == uid {
            Action::await_change()
        } else {
            // The PodENI of an earlier pod of this name is being released.
            Action::requeue(Duration::from_secs(1))
        });
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
    let (_, zone) = ctx.node_identity(&node).await?;
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
    let groups = if pn.spec.security_group_ids.is_empty() {
        ctx.default_security_groups.clone()
    } else {
        pn.spec.security_group_ids.clone()
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
    let n = ctx.fail_count(&key);
    tracing::warn!(object = %key, error = %err, failures = n, "reconcile failed");
    Action::requeue(backoff(n))
}
