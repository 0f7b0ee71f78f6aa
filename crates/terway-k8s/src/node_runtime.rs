//! The node's `NodeRuntime` CR (cluster-scoped, named after the node): per pod UID, when CNI ADD and
//! CNI DEL last finished. A control plane frees a pod's address for reuse only once the pod is gone
//! from the API server *and* its DEL is recorded here, so an address is never handed to a new pod
//! while the old one may still hold it on the node.
//!
//! Marks are batched (written every few seconds as one merge patch, as Terway does) and entries of
//! pods deleted long ago are pruned.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use terway_apis::{CniStatus, NodeRuntime, NodeRuntimeSpec, NodeRuntimeStatus};

/// How often queued marks are written.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(3);
/// How often old entries are pruned.
pub const PRUNE_PERIOD: Duration = Duration::from_secs(5 * 60);
/// A pod deleted this long ago is forgotten.
const KEEP_DELETED: SignedDuration = SignedDuration::from_hours(1);

/// Marks waiting to be written, and whether the object is known to exist.
#[derive(Debug, Default)]
pub struct NodeRuntimeBook {
    pending: NodeRuntimeStatus,
    created: bool,
}

/// The merge patch that removes `uids` and adds `marks` under `status.pods`.
pub fn status_patch(marks: &NodeRuntimeStatus, remove: &[String]) -> serde_json::Value {
    let mut pods = serde_json::Map::new();
    for uid in remove {
        pods.insert(uid.clone(), serde_json::Value::Null);
    }
    for (uid, p) in &marks.pods {
        pods.insert(uid.clone(), serde_json::to_value(p).unwrap_or_default());
    }
    serde_json::json!({ "status": { "pods": pods } })
}

/// Pure plan of a prune: UIDs whose latest event is a DEL older than the retention.
pub fn stale(status: &NodeRuntimeStatus, now: Timestamp) -> Vec<String> {
    status
        .pods
        .iter()
        .filter_map(|(uid, p)| match p.final_status() {
            Some((CniStatus::Deleted, info))
                if now.duration_since(info.last_update_time.0) > KEEP_DELETED =>
            {
                Some(uid.clone())
            }
            _ => None,
        })
        .collect()
}

impl NodeRuntimeBook {
    /// Queue a mark.
    pub fn mark(&mut self, uid: &str, pod_id: &str, status: CniStatus) {
        self.pending
            .mark(uid, pod_id, status, Time(Timestamp::now()));
    }

    /// Whether marks are queued.
    pub fn is_dirty(&self) -> bool {
        !self.pending.pods.is_empty()
    }

    async fn ensure(&mut self, api: &Api<NodeRuntime>, node: &str) -> Result<(), kube::Error> {
        if self.created {
            return Ok(());
        }
        let obj = NodeRuntime {
            metadata: ObjectMeta {
                name: Some(node.to_string()),
                ..Default::default()
            },
            spec: NodeRuntimeSpec {},
            status: None,
        };
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
        self.created = true;
        Ok(())
    }

    /// Write the queued marks; on failure they stay queued (newer marks win when merged back).
    pub async fn flush(&mut self, client: &Client, node: &str) -> Result<usize, String> {
        if !self.is_dirty() {
            return Ok(0);
        }
        let api: Api<NodeRuntime> = Api::all(client.clone());
        self.ensure(&api, node).await.map_err(|e| e.to_string())?;
        let marks = std::mem::take(&mut self.pending);
        let patch = status_patch(&marks, &[]);
        match api
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(marks.pods.len()),
            Err(e) => {
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    self.created = false;
                }
                for (uid, p) in marks.pods {
                    self.pending.pods.entry(uid).or_insert(p);
                }
                Err(e.to_string())
            }
        }
    }

    /// Forget pods deleted long ago.
    pub async fn prune(&mut self, client: &Client, node: &str) -> Result<usize, String> {
        let api: Api<NodeRuntime> = Api::all(client.clone());
        let Some(obj) = api.get_opt(node).await.map_err(|e| e.to_string())? else {
            return Ok(0);
        };
        let old = stale(&obj.status.unwrap_or_default(), Timestamp::now());
        if old.is_empty() {
            return Ok(0);
        }
        let patch = status_patch(&NodeRuntimeStatus::default(), &old);
        api.patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| e.to_string())?;
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_adds_marks_and_removes_pruned_pods() {
        let mut book = NodeRuntimeBook::default();
        book.mark("u1", "default/a", CniStatus::Initial);
        book.mark("u1", "", CniStatus::Deleted);
        let p = status_patch(&book.pending, &["u0".into()]);
        assert!(p["status"]["pods"]["u0"].is_null());
        assert_eq!(p["status"]["pods"]["u1"]["podID"], "default/a");
        assert!(p["status"]["pods"]["u1"]["status"]["deleted"]["lastUpdateTime"].is_string());
        assert!(p["status"]["pods"]["u1"]["status"]["initial"].is_object());
    }

    #[test]
    fn only_pods_deleted_long_ago_are_stale() {
        let now = Timestamp::now();
        let mut st = NodeRuntimeStatus::default();
        let long_ago = Time(now - SignedDuration::from_hours(2));
        let earlier = Time(now - SignedDuration::from_hours(3));
        st.mark("gone", "ns/a", CniStatus::Initial, earlier);
        st.mark("gone", "", CniStatus::Deleted, long_ago.clone());
        st.mark("running", "ns/b", CniStatus::Initial, long_ago);
        st.mark("just-deleted", "ns/c", CniStatus::Deleted, Time(now));
        assert_eq!(stale(&st, now), ["gone".to_string()]);
    }
}
