//! Status of Terway's `Node`: the node's ENIs and their IPs (re-exported from [`crate::node`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{is_default, EniType};
use crate::node::NetworkInterfaceTrafficMode;

/// Observed state of a node: its ENIs and sync times.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Next planned sync with the cloud API.
    #[serde(
        rename = "nextSyncOpenAPITime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub next_sync_open_api_time: Option<Time>,
    /// Last sync with the cloud API.
    #[serde(
        rename = "lastSyncOpenAPITime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_sync_open_api_time: Option<Time>,
    /// Last change to this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_time: Option<Time>,
    /// Next idle IP reclaim pass.
    #[serde(
        rename = "nextIdleIPReclaimTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub next_idle_ip_reclaim_time: Option<Time>,
    /// IPs the warm-up aims for.
    #[serde(default, skip_serializing_if = "is_default")]
    pub warm_up_target: i32,
    /// IPs allocated so far by the warm-up.
    #[serde(default, skip_serializing_if = "is_default")]
    pub warm_up_allocated_count: i32,
    /// Whether the warm-up is done.
    #[serde(default, skip_serializing_if = "is_default")]
    pub warm_up_completed: bool,
    /// The node's ENIs, by ENI id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_interfaces: BTreeMap<String, Nic>,
}

/// One ENI of a node and its addresses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Nic {
    /// ENI id.
    pub id: String,
    /// Cloud-side ENI status (`InUse`, `Attaching`, `Detaching`, `Deleting`, ...).
    pub status: String,
    /// MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// vSwitch of the ENI.
    #[serde(
        rename = "vSwitchID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub v_switch_id: String,
    /// Security groups of the ENI.
    #[serde(
        rename = "securityGroupIDs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub security_group_ids: Vec<String>,
    /// Primary private IP of the ENI.
    #[serde(
        rename = "primaryIPAddress",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub primary_ip_address: String,
    /// Traffic mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_traffic_mode: Option<NetworkInterfaceTrafficMode>,
    /// ENI type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_type: Option<EniType>,
    /// No new IPs are handed out from this ENI.
    #[serde(default, skip_serializing_if = "is_default")]
    pub unschedulable: bool,
    /// IPv4 addresses, by address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ipv4: BTreeMap<String, Ip>,
    /// IPv6 addresses, by address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ipv6: BTreeMap<String, Ip>,
    /// IPv4 prefixes on the ENI.
    #[serde(rename = "ipv4Prefix", default, skip_serializing_if = "Vec::is_empty")]
    pub ipv4_prefix: Vec<IpPrefix>,
    /// IPv6 prefixes on the ENI.
    #[serde(rename = "ipv6Prefix", default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6_prefix: Vec<IpPrefix>,
    /// CIDR of the IPv4 vSwitch.
    #[serde(rename = "ipv4CIDR", default, skip_serializing_if = "String::is_empty")]
    pub ipv4_cidr: String,
    /// CIDR of the IPv6 vSwitch.
    #[serde(rename = "ipv6CIDR", default, skip_serializing_if = "String::is_empty")]
    pub ipv6_cidr: String,
    /// Conditions of the ENI, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, NicCondition>,
}

/// A named condition on an ENI.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NicCondition {
    /// When the condition was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_time: Option<Time>,
    /// Detail of the condition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One IP address on an ENI and the pod holding it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ip {
    /// The address.
    pub ip: String,
    /// Whether it is the ENI's primary IP.
    pub primary: bool,
    /// Address state.
    pub status: IpStatus,
    /// Holder pod as `namespace/name`.
    #[serde(rename = "podID", default, skip_serializing_if = "String::is_empty")]
    pub pod_id: String,
    /// Holder pod's UID.
    #[serde(rename = "podUID", default, skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
    /// Cloud-side IP name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip_name: String,
}

/// State of an IP address.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IpStatus {
    /// Usable.
    Valid,
    /// Gone on the cloud side; waiting for cleanup.
    Invalid,
    /// Being released.
    Deleting,
}

/// An IP prefix on an ENI.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpPrefix {
    /// The prefix in CIDR form.
    pub prefix: String,
    /// Prefix state.
    pub status: IpPrefixStatus,
    /// When a frozen prefix becomes valid again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_expire_at: Option<Time>,
}

/// State of an IP prefix.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IpPrefixStatus {
    /// Usable.
    Valid,
    /// Temporarily not used for new pods.
    Frozen,
    /// Gone on the cloud side; waiting for cleanup.
    Invalid,
    /// Being released.
    Deleting,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::SelectionPolicy;
    use crate::node::{DatapathType, Node};

    const TERWAY_JSON: &str = r#"{
  "apiVersion": "network.alibabacloud.com/v1beta1",
  "kind": "Node",
  "metadata": {"name": "cn-hangzhou.10.0.0.10", "finalizers": ["network.alibabacloud.com/node-controller"],
               "labels": {"k8s.aliyun.com/node": "cn-hangzhou.10.0.0.10"}},
  "spec": {
    "nodeMetadata": {"regionID": "cn-hangzhou", "instanceType": "ecs.g7.xlarge", "instanceID": "i-1", "zoneID": "cn-hangzhou-i"},
    "nodeCap": {"adapters": 3, "totalAdapters": 4, "ipv4PerAdapter": 15, "ipv6PerAdapter": 15,
                "memberAdapterLimit": 12, "maxMemberAdapterLimit": 12, "instanceBandwidthRx": 5000,
                "instanceBandwidthTx": 5000, "networkCards": [{"index": 0}], "networkCardsCount": 1},
    "datapath": {"type": "datapathv2"},
    "eni": {"tag": {"owner": "terway"}, "tagBlockList": [{"key": "skip", "value": "1"}],
            "vSwitchOptions": ["vsw-a"], "securityGroupIDs": ["sg-1"], "enableIPv4": true,
            "vSwitchSelectPolicy": "ordered", "enableIPPrefix": true, "ipv4PrefixCount": 2},
    "pool": {"maxPoolSize": 5, "minPoolSize": 1, "poolSyncPeriod": "2m",
             "reclaim": {"after": "30m", "interval": "5m", "batchSize": 10, "jitterFactor": "0.1"}},
    "flavor": [{"networkInterfaceType": "Secondary", "networkInterfaceTrafficMode": "Standard", "count": 3}]
  },
  "status": {
    "lastSyncOpenAPITime": "2024-05-01T10:00:00Z",
    "nextSyncOpenAPITime": "2024-05-01T10:02:00Z",
    "warmUpTarget": 5, "warmUpAllocatedCount": 5, "warmUpCompleted": true,
    "networkInterfaces": {
      "eni-1": {
        "id": "eni-1", "status": "InUse", "macAddress": "00:16:3e:00:00:02", "vSwitchID": "vsw-a",
        "securityGroupIDs": ["sg-1"], "primaryIPAddress": "10.0.1.10",
        "networkInterfaceTrafficMode": "Standard", "networkInterfaceType": "Secondary",
        "ipv4": {
          "10.0.1.10": {"ip": "10.0.1.10", "primary": true, "status": "Valid"},
          "10.0.1.11": {"ip": "10.0.1.11", "primary": false, "status": "Valid", "podID": "default/web-1", "podUID": "u-1"}
        },
        "ipv4Prefix": [{"prefix": "10.0.1.32/28", "status": "Frozen", "frozenExpireAt": "2024-05-01T10:30:00Z"}],
        "ipv4CIDR": "10.0.1.0/24",
        "conditions": {"Quota": {"observedTime": "2024-05-01T10:00:00Z", "message": "ok"}}
      }
    }
  }
}"#;

    #[test]
    fn round_trips_terway_json() {
        let obj: Node = serde_json::from_str(TERWAY_JSON).unwrap();
        assert_eq!(
            obj.spec.datapath.datapath_type,
            Some(DatapathType::Datapathv2)
        );
        let eni = obj.spec.eni_spec.as_ref().unwrap();
        assert_eq!(eni.v_switch_select_policy, Some(SelectionPolicy::Ordered));
        assert_eq!(obj.spec.node_cap.network_cards[0].index, 0);
        let nic = &obj.status.as_ref().unwrap().network_interfaces["eni-1"];
        assert_eq!(nic.ipv4["10.0.1.11"].pod_id, "default/web-1");
        assert_eq!(nic.ipv4_prefix[0].status, IpPrefixStatus::Frozen);
        let back = serde_json::to_value(&obj).unwrap();
        let orig: serde_json::Value = serde_json::from_str(TERWAY_JSON).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn zero_times_written_as_null_parse() {
        let status: NodeStatus =
            serde_json::from_str(r#"{"lastModifiedTime": null, "nextIdleIPReclaimTime": null}"#)
                .unwrap();
        assert_eq!(status, NodeStatus::default());
    }
}
