//! The pod source from the API server: a reflector on the pods bound to this node (`spec.nodeName`
//! field selector), so the daemon learns owner kinds, annotations and labels, and its GC learns which
//! pods still exist. Until the first list completed, liveness is unknown and nothing is collected; a pod
//! the cache does not hold yet (created a moment ago) is fetched directly.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config};
use terway_daemon::{PodKey, PodMeta, PodSource};

/// Why the Kubernetes client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig cannot be read or used.
    #[error("kubeconfig {path}: {message}; pass --kubeconfig with a readable file or run terwayd in the cluster")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Neither a kubeconfig nor the in-cluster environment.
    #[error("no Kubernetes client configuration: {0}")]
    Config(String),
}

/// Metadata of a pod object as the daemon needs it.
pub fn pod_meta(pod: &Pod) -> PodMeta {
    let m = &pod.metadata;
    let owner_kind = m
        .owner_references
        .as_ref()
        .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)))
        .map(|r| r.kind.clone());
    PodMeta {
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        owner_kind,
        annotations: m.annotations.clone().unwrap_or_default(),
        labels: m.labels.clone().unwrap_or_default(),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
    }
}

/// Pods of this node from the API server.
#[derive(Clone)]
pub struct KubePodSource {
    client: Client,
    store: Store<Pod>,
    synced: tokio::sync::watch::Receiver<bool>,
}

impl KubePodSource {
    /// A client from `kubeconfig`, or the in-cluster configuration when `None`.
    pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
        let config = match kubeconfig {
            Some(path) => {
                let bad = |message: String| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    message,
                };
                let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| bad(e.to_string()))?
            }
            None => Config::incluster().map_err(|e| KubeError::Config(e.to_string()))?,
        };
        Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))
    }

    /// Start watching the pods bound to `node` (the watch retries with backoff on its own).
    pub fn start(client: Client, node: &str) -> KubePodSource {
        let api: Api<Pod> = Api::all(client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let (store, writer) = reflector::store();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let node = node.to_string();
        tokio::spawn(async move {
            let stream = reflector::reflector(writer, watcher(api, cfg)).default_backoff();
            futures::pin_mut!(stream);
            let mut failing = false;
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        let _ = tx.send(true);
                        failing = false;
                        tracing::info!(node = %node, "pod watch synced");
                    }
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(node = %node, error = %e, "pod watch failed; retrying with backoff");
                    }
                    Err(_) => {}
                }
            }
        });
        KubePodSource {
            client,
            store,
            synced: rx,
        }
    }

    /// `uid` when given, else the UID of the cached pod `key` (the CNI may not send one).
    pub fn uid_or_cached(&self, key: &PodKey, uid: &str) -> Option<String> {
        if !uid.is_empty() {
            return Some(uid.to_string());
        }
        self.cached(key).and_then(|p| p.metadata.uid.clone())
    }

    fn cached(&self, key: &PodKey) -> Option<Arc<Pod>> {
        self.store
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }
}

impl PodSource for KubePodSource {
    async fn pod(&self, key: &PodKey, uid: &str) -> Option<PodMeta> {
        if let Some(p) = self.cached(key) {
            let cached_uid = p.metadata.uid.as_deref().unwrap_or_default();
            if uid.is_empty() || cached_uid == uid {
                return Some(pod_meta(&p));
            }
            tracing::info!(pod = %key, cached_uid, uid, "cached pod is another incarnation; reading it again");
        }
        // Created a moment ago (or recreated): the watch may not have delivered it yet.
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(p) => p.as_ref().map(pod_meta),
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "cannot read the pod from the API server");
                None
            }
        }
    }

    async fn live_pods(&self) -> Option<HashSet<PodKey>> {
        if !*self.synced.borrow() {
            return None;
        }
        Some(
            self.store
                .state()
                .iter()
                .map(|p| {
                    PodKey::new(
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                        p.metadata.name.as_deref().unwrap_or_default(),
                    )
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use std::collections::BTreeMap;

    #[test]
    fn the_controlling_owner_and_metadata_are_kept() {
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("db-0".into()),
                uid: Some("u-1".into()),
                owner_references: Some(vec![
                    OwnerReference {
                        kind: "Other".into(),
                        controller: Some(false),
                        ..Default::default()
                    },
                    OwnerReference {
                        kind: "StatefulSet".into(),
                        controller: Some(true),
                        ..Default::default()
                    },
                ]),
                annotations: Some(BTreeMap::from([(
                    "k8s.aliyun.com/pod-ip-reservation".to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        let m = pod_meta(&pod);
        assert_eq!(m.owner_kind.as_deref(), Some("StatefulSet"));
        assert_eq!(
            (m.namespace.as_str(), m.name.as_str(), m.uid.as_str()),
            ("default", "db-0", "u-1")
        );
        assert!(m.wants_sticky_ip(&[]));
    }
}
