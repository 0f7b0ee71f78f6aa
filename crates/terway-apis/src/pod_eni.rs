//! `PodENI` (namespaced, named after its pod): the ENIs allocated to one pod.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{is_default, Allocation, EniInfo, Phase};

/// ENIs allocated to a pod.
// Several printer columns share `type_ = "string"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "network.alibabacloud.com",
    version = "v1beta1",
    kind = "PodENI",
    root = "PodEni",
    namespaced,
    status = "PodEniStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "PodENI records the ENIs allocated to the pod of the same name and their attach state.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "InstanceID",
        type_ = "string",
        json_path = ".status.instanceID"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PodEniSpec {
    /// ENIs and addresses allocated to the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<Allocation>,
    /// Zone the ENIs are in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

/// Observed state of a PodENI.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodEniStatus {
    /// Binding phase.
    #[serde(default, skip_serializing_if = "is_default")]
    pub phase: Phase,
    /// ECS instance the ENIs are attached to.
    #[serde(
        rename = "instanceID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub instance_id: String,
    /// Trunk ENI id (member ENIs).
    #[serde(
        rename = "trunkENIID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub trunk_eni_id: String,
    /// Extra detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub msg: String,
    /// When the pod was last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_last_seen: Option<Time>,
    /// Attach state per ENI, by ENI id.
    #[serde(
        rename = "eniInfos",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub eni_infos: BTreeMap<String, EniInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{EniBindStatus, EniType, IpAllocType};

    const TERWAY_JSON: &str = r#"{
  "apiVersion": "network.alibabacloud.com/v1beta1",
  "kind": "PodENI",
  "metadata": {"name": "db-0", "namespace": "prod", "finalizers": ["network.alibabacloud.com/pod-eni"]},
  "spec": {
    "allocations": [{
      "allocationType": {"type": "Fixed", "releaseStrategy": "Never"},
      "eni": {
        "id": "eni-member1",
        "vpcID": "vpc-1",
        "mac": "00:16:3e:00:00:01",
        "zone": "cn-hangzhou-i",
        "vSwitchID": "vsw-a",
        "securityGroupIDs": ["sg-1"],
        "attachmentOptions": {"trunk": false}
      },
      "ipv4": "10.0.1.5",
      "ipv4CIDR": "10.0.1.0/24",
      "interface": "eth0",
      "defaultRoute": true,
      "extraRoutes": [{"dst": "100.64.0.0/10"}],
      "extraConfig": {"k": "v"}
    }],
    "zone": "cn-hangzhou-i"
  },
  "status": {
    "phase": "Bind",
    "instanceID": "i-1",
    "trunkENIID": "eni-trunk",
    "podLastSeen": "2024-05-01T10:00:00Z",
    "eniInfos": {
      "eni-member1": {"id": "eni-member1", "type": "Member", "vid": 1001, "status": "Bind", "networkCardIndex": 0}
    }
  }
}"#;

    #[test]
    fn round_trips_terway_json() {
        let obj: PodEni = serde_json::from_str(TERWAY_JSON).unwrap();
        let alloc = &obj.spec.allocations[0];
        assert_eq!(alloc.allocation_type.alloc_type, Some(IpAllocType::Fixed));
        assert_eq!(alloc.eni.attachment_options.trunk, Some(false));
        assert!(alloc.default_route);
        let status = obj.status.as_ref().unwrap();
        assert_eq!(status.phase, Phase::Bind);
        let info = &status.eni_infos["eni-member1"];
        assert_eq!(info.eni_type, Some(EniType::Member));
        assert_eq!(info.vid, 1001);
        assert_eq!(info.status, Some(EniBindStatus::Bind));
        assert_eq!(info.network_card_index, Some(0));
        let back = serde_json::to_value(&obj).unwrap();
        let orig: serde_json::Value = serde_json::from_str(TERWAY_JSON).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn initial_phase_is_empty_string() {
        let status: PodEniStatus =
            serde_json::from_str(r#"{"phase": "", "podLastSeen": null}"#).unwrap();
        assert_eq!(status.phase, Phase::Initial);
        assert_eq!(serde_json::to_string(&status).unwrap(), "{}");
        assert_eq!(serde_json::to_string(&Phase::Initial).unwrap(), r#""""#);
    }
}
