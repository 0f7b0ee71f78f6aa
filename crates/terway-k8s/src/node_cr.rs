//! Terway's `Node` CR (cluster-scoped, named after the node), kept by terwayd: the instance's identity
//! and quotas in `spec`, and in `status` every ENI with its addresses and the pod holding each — what
//! a platform team reads to see where a pod's address lives without logging into the node.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use terway_apis::{EniType, Ip, IpStatus, Nic, Node, NodeCap, NodeMetadata, NodeSpec, NodeStatus};
use terway_daemon::report::NodeResources;

/// The CR's spec: identity and quotas.
pub fn spec_of(res: &NodeResources) -> NodeSpec {
    let st = &res.status;
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let q = |f: fn(&terway_cloud::InstanceTypeLimits) -> u32| res.limits.as_ref().map_or(0, f);
    NodeSpec {
        node_metadata: NodeMetadata {
            region_id: res.region.clone(),
            instance_type: st.instance_type.clone(),
            instance_id: st.instance_id.clone(),
            zone_id: res.zone.clone(),
        },
        node_cap: NodeCap {
            adapters: n(q(|l| l.eni_quantity)),
            total_adapters: n(q(|l| l.eni_total_quantity)),
            ipv4_per_adapter: n(q(|l| l.eni_private_ip_quantity)),
            ipv6_per_adapter: n(q(|l| l.eni_ipv6_quantity)),
            member_adapter_limit: n(q(|l| l.eni_total_quantity.saturating_sub(l.eni_quantity))),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The CR's status: ENIs and their addresses with pod owners.
pub fn status_of(res: &NodeResources, now: Timestamp) -> NodeStatus {
    let network_interfaces = res
        .status
        .enis
        .iter()
        .map(|e| {
            let ipv4: BTreeMap<String, Ip> = e
                .ips
                .iter()
                .map(|i| {
                    let ip = Ip {
                        ip: i.ip.clone(),
                        primary: false,
                        // Addresses on their way back to the VPC; every other state is usable.
                        status: if i.state == "releasing" {
                            IpStatus::Deleting
                        } else {
                            IpStatus::Valid
                        },
                        pod_id: i.pod.clone(),
                        pod_uid: res.pod_uids.get(&i.pod).cloned().unwrap_or_default(),
                        ip_name: String::new(),
                    };
                    (i.ip.clone(), ip)
                })
                .collect();
            let nic = Nic {
                id: e.eni_id.clone(),
                status: e.status.clone(),
                mac_address: e.mac.clone(),
                v_switch_id: e.vswitch_id.clone(),
                network_interface_type: Some(EniType::Secondary),
                ipv4,
                ipv4_cidr: e.cidr.clone(),
                ..Default::default()
            };
            (e.eni_id.clone(), nic)
        })
        .collect();
    NodeStatus {
        last_modified_time: Some(Time(now)),
        network_interfaces,
        ..Default::default()
    }
}

/// Create the CR if needed, set its spec, and replace its status with `res`.
pub async fn apply(client: &Client, node: &str, res: &NodeResources) -> Result<(), String> {
    let api: Api<Node> = Api::all(client.clone());
    let spec = spec_of(res);
    let existing = api.get_opt(node).await.map_err(|e| e.to_string())?;
    let mut obj = match existing {
        Some(mut o) => {
            if o.spec != spec {
                let patch = serde_json::json!({ "spec": spec });
                o = api
                    .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            o
        }
        None => api
            .create(
                &PostParams::default(),
                &Node {
                    metadata: ObjectMeta {
                        name: Some(node.to_string()),
                        ..Default::default()
                    },
                    spec,
                    status: None,
                },
            )
            .await
            .map_err(|e| e.to_string())?,
    };
    // A whole replacement, so ENIs and addresses that are gone disappear (a merge patch would keep
    // them); the resourceVersion makes a concurrent writer's change fail this one, retried later.
    obj.status = Some(status_of(res, Timestamp::now()));
    api.replace_status(node, &PostParams::default(), &obj)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use terway_rpc::v1 as pb;

    #[test]
    fn the_cr_carries_quotas_enis_and_pod_owners() {
        let res = NodeResources {
            region: "cn-hangzhou".into(),
            zone: "cn-hangzhou-h".into(),
            limits: Some(terway_cloud::InstanceTypeLimits {
                instance_type: "ecs.g7.4xlarge".into(),
                eni_quantity: 8,
                eni_private_ip_quantity: 30,
                eni_ipv6_quantity: 30,
                eni_total_quantity: 48,
                trunk_supported: true,
            }),
            status: pb::StatusReply {
                instance_id: "i-1".into(),
                instance_type: "ecs.g7.4xlarge".into(),
                enis: vec![pb::EniStatus {
                    eni_id: "eni-a".into(),
                    mac: "00:16:3e:00:00:01".into(),
                    status: "InUse".into(),
                    vswitch_id: "vsw-1".into(),
                    cidr: "10.0.0.0/20".into(),
                    ips: vec![
                        pb::IpStatus {
                            ip: "10.0.0.5".into(),
                            state: "in-use".into(),
                            pod: "default/web-1".into(),
                        },
                        pb::IpStatus {
                            ip: "10.0.0.6".into(),
                            state: "releasing".into(),
                            pod: String::new(),
                        },
                    ],
                }],
                ..Default::default()
            },
            pod_uids: BTreeMap::from([("default/web-1".into(), "u-1".into())]),
        };
        let spec = spec_of(&res);
        assert_eq!(spec.node_cap.adapters, 8);
        assert_eq!(spec.node_cap.member_adapter_limit, 40);
        assert_eq!(spec.node_metadata.instance_id, "i-1");
        let st = status_of(&res, Timestamp::now());
        let nic = &st.network_interfaces["eni-a"];
        assert_eq!(nic.mac_address, "00:16:3e:00:00:01");
        assert_eq!(nic.ipv4["10.0.0.5"].pod_uid, "u-1");
        assert_eq!(nic.ipv4["10.0.0.5"].status, IpStatus::Valid);
        assert_eq!(nic.ipv4["10.0.0.6"].status, IpStatus::Deleting);
    }
}
