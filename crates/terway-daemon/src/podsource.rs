//! Where the daemon learns about pods beyond what the CNI request says: owner kind, annotations,
//! labels, and which pods still exist on the node (for GC). The local implementation reads an optional
//! JSON file the lab writes; a kube-rs implementation can implement the same trait later.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;

use crate::pool::state::PodKey;

/// Annotation that asks for a sticky IP (Terway legacy).
pub const ANNOTATION_IP_RESERVATION: &str = "k8s.aliyun.com/pod-ip-reservation";

/// What the daemon knows about a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodMeta {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, may be empty.
    #[serde(default)]
    pub uid: String,
    /// Kind of the controlling owner (`StatefulSet`, `ReplicaSet`, …).
    #[serde(default)]
    pub owner_kind: Option<String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod shares the node's network namespace (terway never allocates for it).
    #[serde(default)]
    pub host_network: bool,
}

impl PodMeta {
    /// Key of the pod.
    pub fn key(&self) -> PodKey {
        PodKey::new(&self.namespace, &self.name)
    }

    /// Why terway must not network this pod, if it must not: hostNetwork pods use the node's network,
    /// and pods labelled `k8s.aliyun.com/ignore-by-terway=true` belong to another network provider.
    pub fn not_ours(&self) -> Option<String> {
        let key = self.key();
        if self.host_network {
            return Some(format!(
                "pod {key} has hostNetwork: true and uses the node's network; terway allocates nothing for it"
            ));
        }
        let label = terway_core::annotations::LABEL_IGNORE_BY_TERWAY;
        if self.labels.get(label).is_some_and(|v| v == "true") {
            return Some(format!(
                "pod {key} carries the label {label}=true, so terway does not network it; remove the label, or attach the pod with another CNI"
            ));
        }
        None
    }

    /// Whether the pod should keep its IP across restarts (StatefulSet-like owner or the annotation).
    pub fn wants_sticky_ip(&self, custom_stateful_kinds: &[String]) -> bool {
        let stateful_owner = self
            .owner_kind
            .as_deref()
            .is_some_and(|k| k == "StatefulSet" || custom_stateful_kinds.iter().any(|c| c == k));
        stateful_owner
            || self
                .annotations
                .get(ANNOTATION_IP_RESERVATION)
                .is_some_and(|v| v == "true")
    }
}

/// Pod metadata and liveness for the daemon.
pub trait PodSource: Send + Sync + 'static {
    /// Metadata of one pod, if known. With a non-empty `uid`, a cached copy of another incarnation of
    /// the pod (deleted and recreated under the same name) is not trusted: the source looks again.
    fn pod(&self, key: &PodKey, uid: &str) -> impl Future<Output = Option<PodMeta>> + Send;
    /// The pods that currently exist on this node; `None` when that is unknown (GC then keeps all).
    fn live_pods(&self) -> impl Future<Output = Option<HashSet<PodKey>>> + Send;
}

/// The file format of [`LocalPodSource`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PodsFile {
    /// Every pod living on the node.
    pub pods: Vec<PodMeta>,
}

/// Reads a per-node JSON file (`{"pods":[{namespace,name,uid,owner_kind,annotations,labels}]}`).
/// Without a file, pods are known only from their CNI request and nothing is garbage-collected.
#[derive(Debug, Clone, Default)]
pub struct LocalPodSource {
    file: Option<PathBuf>,
}

impl LocalPodSource {
    /// Use this file (or none).
    pub fn new(file: Option<PathBuf>) -> Self {
        LocalPodSource { file }
    }

    async fn read(&self) -> Option<PodsFile> {
        let path = self.file.as_ref()?;
        match tokio::fs::read(path).await {
            Ok(bytes) => match serde_json::from_slice::<PodsFile>(&bytes) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "pods file is not valid JSON; ignoring it");
                    None
                }
            },
            // Not written yet: liveness is unknown, so GC must not release anything.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read pods file");
                None
            }
        }
    }
}

impl PodSource for LocalPodSource {
    async fn pod(&self, key: &PodKey, _uid: &str) -> Option<PodMeta> {
        self.read()
            .await?
            .pods
            .into_iter()
            .find(|p| p.namespace == key.namespace && p.name == key.name)
    }

    async fn live_pods(&self) -> Option<HashSet<PodKey>> {
        self.file.as_ref()?;
        Some(self.read().await?.pods.iter().map(PodMeta::key).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_rules() {
        let mut p = PodMeta {
            namespace: "a".into(),
            name: "b".into(),
            ..Default::default()
        };
        assert!(!p.wants_sticky_ip(&[]));
        p.owner_kind = Some("StatefulSet".into());
        assert!(p.wants_sticky_ip(&[]));
        p.owner_kind = Some("CloneSet".into());
        assert!(!p.wants_sticky_ip(&[]));
        assert!(p.wants_sticky_ip(&["CloneSet".into()]));
        p.owner_kind = None;
        p.annotations
            .insert(ANNOTATION_IP_RESERVATION.into(), "true".into());
        assert!(p.wants_sticky_ip(&[]));
    }

    #[test]
    fn host_network_and_ignored_pods_are_not_ours() {
        let mut p = PodMeta {
            namespace: "a".into(),
            name: "b".into(),
            ..Default::default()
        };
        assert_eq!(p.not_ours(), None);
        p.labels
            .insert("k8s.aliyun.com/ignore-by-terway".into(), "false".into());
        assert_eq!(p.not_ours(), None);
        p.labels
            .insert("k8s.aliyun.com/ignore-by-terway".into(), "true".into());
        assert!(p.not_ours().unwrap().contains("ignore-by-terway=true"));
        p.labels.clear();
        p.host_network = true;
        assert!(p.not_ours().unwrap().contains("hostNetwork"));
    }

    #[tokio::test]
    async fn local_source_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.json");
        let none = LocalPodSource::new(None);
        assert_eq!(none.live_pods().await, None);
        let src = LocalPodSource::new(Some(path.clone()));
        // Missing file = liveness unknown (never "no pods live": that would release everything).
        assert_eq!(src.live_pods().await, None);
        std::fs::write(
            &path,
            r#"{"pods":[{"namespace":"ns","name":"web-0","owner_kind":"StatefulSet"},{"namespace":"ns","name":"x"}]}"#,
        )
        .unwrap();
        let live = src.live_pods().await.unwrap();
        assert!(live.contains(&PodKey::new("ns", "web-0")) && live.len() == 2);
        let meta = src.pod(&PodKey::new("ns", "web-0"), "").await.unwrap();
        assert!(meta.wants_sticky_ip(&[]));
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(
            src.live_pods().await,
            None,
            "a corrupt file must not make GC release every pod"
        );
    }
}
