//! `NetworkInterface` (cluster-scoped, named after the ENI id): one ENI and who uses it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{is_default, Eni, EniInfo, Phase};

/// An ENI, its addresses and the PodENI using it.
// Several printer columns share `type_ = "string"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "network.alibabacloud.com",
    version = "v1beta1",
    kind = "NetworkInterface",
    status = "NetworkInterfaceStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "NetworkInterface tracks one ENI, its addresses and the PodENI it belongs to.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "InstanceID",
        type_ = "string",
        json_path = ".status.instanceID"
    ),
    printcolumn(name = "NodeName", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(
        name = "PodNamespace",
        type_ = "string",
        json_path = ".spec.podENIRef.namespace"
    ),
    printcolumn(name = "PodName", type_ = "string", json_path = ".spec.podENIRef.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.eniInfo.type")
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterfaceSpec {
    /// The ENI.
    #[serde(default, skip_serializing_if = "is_default")]
    pub eni: Eni,
    /// IPv4 address on the ENI.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    /// IPv6 address on the ENI.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    /// CIDR of the IPv4 vSwitch.
    #[serde(rename = "ipv4CIDR", default, skip_serializing_if = "String::is_empty")]
    pub ipv4_cidr: String,
    /// CIDR of the IPv6 vSwitch.
    #[serde(rename = "ipv6CIDR", default, skip_serializing_if = "String::is_empty")]
    pub ipv6_cidr: String,
    /// Free-form extra settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_config: BTreeMap<String, String>,
    /// How the controller manages this ENI.
    #[serde(default, skip_serializing_if = "is_default")]
    pub manage_policy: ManagePolicy,
    /// The PodENI using this ENI (uid, name and namespace are used).
    #[serde(rename = "podENIRef", default, skip_serializing_if = "Option::is_none")]
    pub pod_eni_ref: Option<ObjectReference>,
}

/// Management flags of a NetworkInterface.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagePolicy {
    /// Keep the ENI cached on the node after the pod goes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cache: bool,
    /// The controller must not touch this ENI.
    #[serde(default, skip_serializing_if = "is_default")]
    pub un_managed: bool,
}

/// Observed state of a NetworkInterface.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterfaceStatus {
    /// Binding phase.
    #[serde(default, skip_serializing_if = "is_default")]
    pub phase: Phase,
    /// Attach state of the ENI.
    #[serde(default, skip_serializing_if = "is_default")]
    pub eni_info: EniInfo,
    /// ECS instance the ENI is attached to.
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
    /// Network card the ENI is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_card_index: Option<i32>,
    /// Node the ENI is attached to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{EniBindStatus, EniType};

    const TERWAY_JSON: &str = r#"{
  "apiVersion": "network.alibabacloud.com/v1beta1",
  "kind": "NetworkInterface",
  "metadata": {"name": "eni-member1", "finalizers": ["network.alibabacloud.com/eni"]},
  "spec": {
    "eni": {"id": "eni-member1", "vpcID": "vpc-1", "mac": "00:16:3e:00:00:01", "zone": "cn-hangzhou-i",
            "vSwitchID": "vsw-a", "securityGroupIDs": ["sg-1"], "attachmentOptions": {}},
    "ipv4": "10.0.1.5",
    "ipv4CIDR": "10.0.1.0/24",
    "managePolicy": {"cache": true},
    "podENIRef": {"kind": "PodENI", "namespace": "prod", "name": "db-0", "uid": "3c1d0e4a"}
  },
  "status": {
    "phase": "Bind",
    "eniInfo": {"id": "eni-member1", "type": "Member", "vid": 1001, "status": "Bind"},
    "instanceID": "i-1",
    "trunkENIID": "eni-trunk",
    "networkCardIndex": 1,
    "nodeName": "cn-hangzhou.10.0.0.10"
  }
}"#;

    #[test]
    fn round_trips_terway_json() {
        let obj: NetworkInterface = serde_json::from_str(TERWAY_JSON).unwrap();
        assert!(obj.spec.manage_policy.cache);
        let pod = obj.spec.pod_eni_ref.as_ref().unwrap();
        assert_eq!(pod.name.as_deref(), Some("db-0"));
        let status = obj.status.as_ref().unwrap();
        assert_eq!(status.phase, Phase::Bind);
        assert_eq!(status.eni_info.eni_type, Some(EniType::Member));
        assert_eq!(status.eni_info.status, Some(EniBindStatus::Bind));
        assert_eq!(status.network_card_index, Some(1));
        // Go writes an empty `attachmentOptions: {}`; it is dropped on the way back.
        let mut orig: serde_json::Value = serde_json::from_str(TERWAY_JSON).unwrap();
        if let Some(eni) = orig["spec"]["eni"].as_object_mut() {
            eni.remove("attachmentOptions");
        }
        assert_eq!(serde_json::to_value(&obj).unwrap(), orig);
    }

    #[test]
    fn phase_written_as_empty_string_parses() {
        let status: NetworkInterfaceStatus =
            serde_json::from_str(r#"{"phase": "", "eniInfo": {}}"#).unwrap();
        assert_eq!(status, NetworkInterfaceStatus::default());
    }
}
