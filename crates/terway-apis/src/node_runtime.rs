//! `NodeRuntime` (cluster-scoped, named after the node): the daemon's report of CNI ADD/DEL
//! per pod, so the controller only frees a pod's IP once the CNI has cleaned up.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Empty spec: a NodeRuntime carries only status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "network.alibabacloud.com",
    version = "v1beta1",
    kind = "NodeRuntime",
    status = "NodeRuntimeStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "NodeRuntime is the daemon's per-node record of which pods the CNI has set up or torn down."
)]
pub struct NodeRuntimeSpec {}

/// CNI state of the node's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRuntimeStatus {
    /// CNI state per pod, by pod UID.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<String, RuntimePodStatus>,
}

/// CNI state of one pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimePodStatus {
    /// The pod as `namespace/name`.
    #[serde(rename = "podID")]
    pub pod_id: String,
    /// When each CNI event last happened.
    pub status: BTreeMap<CniStatus, CniStatusInfo>,
}

/// A CNI event recorded for a pod.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CniStatus {
    /// CNI ADD set the pod up.
    Initial,
    /// CNI DEL tore the pod down.
    Deleted,
}

/// Time of a CNI event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CniStatusInfo {
    /// When the event was last recorded.
    pub last_update_time: Time,
}

impl RuntimePodStatus {
    /// The most recent event; on equal times `Initial` wins, so a pod set up again within
    /// the same second as its teardown is not taken for deleted.
    pub fn final_status(&self) -> Option<(CniStatus, &CniStatusInfo)> {
        let initial = self.status.get(&CniStatus::Initial);
        let deleted = self.status.get(&CniStatus::Deleted);
        match (initial, deleted) {
            (Some(i), Some(d)) if d.last_update_time > i.last_update_time => {
                Some((CniStatus::Deleted, d))
            }
            (Some(i), _) => Some((CniStatus::Initial, i)),
            (None, Some(d)) => Some((CniStatus::Deleted, d)),
            (None, None) => None,
        }
    }
}

impl NodeRuntimeStatus {
    /// Records `status` at `now` for the pod with `uid`, creating its entry if needed.
    /// A non-empty `pod_id` (`namespace/name`) replaces the stored one.
    pub fn mark(&mut self, uid: &str, pod_id: &str, status: CniStatus, now: Time) {
        let pod = self.pods.entry(uid.to_owned()).or_default();
        if !pod_id.is_empty() {
            pod_id.clone_into(&mut pod.pod_id);
        }
        pod.status.insert(
            status,
            CniStatusInfo {
                last_update_time: now,
            },
        );
    }

    /// True when the pod's latest recorded CNI event is `Deleted`.
    pub fn is_deleted(&self, uid: &str) -> bool {
        self.final_status(uid) == Some(CniStatus::Deleted)
    }

    /// The pod's latest recorded CNI event (see [`RuntimePodStatus::final_status`]).
    pub fn final_status(&self, uid: &str) -> Option<CniStatus> {
        self.pods
            .get(uid)
            .and_then(RuntimePodStatus::final_status)
            .map(|(s, _)| s)
    }

    /// Drops the pod's entry; returns it if there was one.
    pub fn forget(&mut self, uid: &str) -> Option<RuntimePodStatus> {
        self.pods.remove(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(1_714_557_600 + secs).unwrap())
    }

    const TERWAY_JSON: &str = r#"{
  "apiVersion": "network.alibabacloud.com/v1beta1",
  "kind": "NodeRuntime",
  "metadata": {"name": "cn-hangzhou.10.0.0.10"},
  "spec": {},
  "status": {
    "pods": {
      "u-1": {"podID": "default/web-1", "status": {"initial": {"lastUpdateTime": "2024-05-01T10:00:00Z"}}},
      "u-2": {"podID": "default/web-2", "status": {
        "initial": {"lastUpdateTime": "2024-05-01T10:00:00Z"},
        "deleted": {"lastUpdateTime": "2024-05-01T10:05:00Z"}}}
    }
  }
}"#;

    #[test]
    fn round_trips_terway_json() {
        let obj: NodeRuntime = serde_json::from_str(TERWAY_JSON).unwrap();
        let status = obj.status.as_ref().unwrap();
        assert!(!status.is_deleted("u-1"));
        assert!(status.is_deleted("u-2"));
        assert_eq!(
            status.pods["u-2"].status[&CniStatus::Deleted].last_update_time,
            at(300)
        );
        let back = serde_json::to_value(&obj).unwrap();
        let orig: serde_json::Value = serde_json::from_str(TERWAY_JSON).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn mark_creates_and_updates_entries() {
        let mut s = NodeRuntimeStatus::default();
        assert_eq!(s.final_status("u"), None);
        assert!(!s.is_deleted("u"));

        s.mark("u", "ns/a", CniStatus::Initial, at(0));
        assert_eq!(s.pods["u"].pod_id, "ns/a");
        assert_eq!(s.final_status("u"), Some(CniStatus::Initial));

        s.mark("u", "", CniStatus::Deleted, at(10));
        assert_eq!(s.pods["u"].pod_id, "ns/a", "empty pod id keeps the old one");
        assert!(s.is_deleted("u"));

        // Set up again later (sandbox recreated): no longer deleted.
        s.mark("u", "ns/a", CniStatus::Initial, at(20));
        assert!(!s.is_deleted("u"));
        assert_eq!(s.pods["u"].status.len(), 2);

        assert!(s.forget("u").is_some());
        assert!(s.pods.is_empty());
    }

    #[test]
    fn equal_times_are_not_deleted() {
        let mut s = NodeRuntimeStatus::default();
        s.mark("u", "ns/a", CniStatus::Deleted, at(5));
        assert!(s.is_deleted("u"), "only a DEL recorded");
        s.mark("u", "ns/a", CniStatus::Initial, at(5));
        assert!(!s.is_deleted("u"));
    }

    #[test]
    fn cni_status_keys_serialize_lowercase() {
        let mut s = NodeRuntimeStatus::default();
        s.mark("u", "ns/a", CniStatus::Deleted, at(0));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["pods"]["u"]["status"]["deleted"]["lastUpdateTime"],
            "2024-05-01T10:00:00Z"
        );
    }
}
