//! `PodNetworking` (cluster-scoped): which pods get which ENI networking.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{is_default, AllocationType, SelectionPolicy};

/// Desired ENI networking for the pods it selects.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "network.alibabacloud.com",
    version = "v1beta1",
    kind = "PodNetworking",
    status = "PodNetworkingStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "PodNetworking selects pods and namespaces and sets their ENI networking.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PodNetworkingSpec {
    /// ENI attach options.
    #[serde(default)]
    pub eni_options: EniOptions,
    /// IP allocation type and release strategy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub allocation_type: AllocationType,
    /// Pods and namespaces this applies to.
    #[serde(default, skip_serializing_if = "is_default")]
    pub selector: Selector,
    /// Security groups for the pods' ENIs.
    #[serde(
        rename = "securityGroupIDs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub security_group_ids: Vec<String>,
    /// vSwitches to allocate from.
    #[serde(
        rename = "vSwitchOptions",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub v_switch_options: Vec<String>,
    /// How a vSwitch is chosen from `vSwitchOptions`.
    #[serde(
        rename = "vSwitchSelectOptions",
        default,
        skip_serializing_if = "is_default"
    )]
    pub v_switch_select_options: VSwitchSelectOptions,
}

/// ENI attach options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EniOptions {
    /// How the ENI is attached.
    #[serde(rename = "eniType", default)]
    pub eni_type: EniAttachType,
}

/// ENI attach type of a PodNetworking.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum EniAttachType {
    /// Follow the cluster configuration.
    #[default]
    Default,
    /// Exclusive secondary ENI.
    #[serde(rename = "ENI")]
    Eni,
    /// Member ENI on the node's trunk ENI.
    Trunk,
}

/// Pod and namespace selectors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Selects pods by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Selects namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// vSwitch selection options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VSwitchSelectOptions {
    /// vSwitch selection policy.
    #[serde(
        rename = "vSwitchSelectionPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v_switch_selection_policy: Option<SelectionPolicy>,
}

/// Observed state of a PodNetworking.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodNetworkingStatus {
    /// Whether the PodNetworking is usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NetworkingStatus>,
    /// vSwitches resolved from `vSwitchOptions`.
    #[serde(rename = "vSwitches", default, skip_serializing_if = "Vec::is_empty")]
    pub v_switches: Vec<VSwitch>,
    /// When the status was last updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_at: Option<Time>,
    /// Human-readable detail for the status.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Readiness of a PodNetworking.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NetworkingStatus {
    /// Usable.
    Ready,
    /// Not usable; see `message`.
    Fail,
}

/// A vSwitch and its zone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VSwitch {
    /// vSwitch id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Zone of the vSwitch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{IpAllocType, ReleaseStrategy};

    const TERWAY_JSON: &str = r#"{
  "apiVersion": "network.alibabacloud.com/v1beta1",
  "kind": "PodNetworking",
  "metadata": {"name": "stateful"},
  "spec": {
    "eniOptions": {"eniType": "Trunk"},
    "allocationType": {"type": "Fixed", "releaseStrategy": "TTL", "releaseAfter": "10m0s"},
    "selector": {
      "podSelector": {"matchLabels": {"app": "db"}},
      "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}
    },
    "securityGroupIDs": ["sg-1"],
    "vSwitchOptions": ["vsw-a", "vsw-b"],
    "vSwitchSelectOptions": {"vSwitchSelectionPolicy": "most"}
  },
  "status": {
    "status": "Ready",
    "vSwitches": [{"id": "vsw-a", "zone": "cn-hangzhou-i"}],
    "updateAt": "2024-05-01T10:00:00Z"
  }
}"#;

    #[test]
    fn round_trips_terway_json() {
        let obj: PodNetworking = serde_json::from_str(TERWAY_JSON).unwrap();
        assert_eq!(obj.spec.eni_options.eni_type, EniAttachType::Trunk);
        assert_eq!(
            obj.spec.allocation_type.alloc_type,
            Some(IpAllocType::Fixed)
        );
        assert_eq!(
            obj.spec.allocation_type.release_strategy,
            Some(ReleaseStrategy::Ttl)
        );
        assert_eq!(
            obj.spec.v_switch_select_options.v_switch_selection_policy,
            Some(SelectionPolicy::Most)
        );
        let status = obj.status.as_ref().unwrap();
        assert_eq!(status.status, Some(NetworkingStatus::Ready));
        let back = serde_json::to_value(&obj).unwrap();
        let orig: serde_json::Value = serde_json::from_str(TERWAY_JSON).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn minimal_spec_gets_default_eni_type() {
        let obj: PodNetworking = serde_json::from_str(
            r#"{"apiVersion":"network.alibabacloud.com/v1beta1","kind":"PodNetworking",
                "metadata":{"name":"x"},"spec":{},"status":{"updateAt":null}}"#,
        )
        .unwrap();
        assert_eq!(obj.spec.eni_options.eni_type, EniAttachType::Default);
        assert_eq!(obj.status.unwrap().update_at, None);
    }
}
