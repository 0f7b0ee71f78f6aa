//! Terway's configuration in the cluster: the `eni-config` ConfigMap in kube-system (key `eni_conf`,
//! which a DaemonSet mounts as terwayd's `--config` file) and the per-node override, the ConfigMap a
//! node names with its label `terway-config=<name>` (key `eni_conf`, an RFC 7396 merge patch).
//!
//! The override is read once at start. Edits are checked as they happen: a ConfigMap that would not
//! load is reported as a `ConfigError` event on the node, naming the ConfigMap and the key, while
//! terwayd keeps serving with the configuration it started with (it reads the files only at start,
//! so a bad edit never takes the node's pod networking down).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use terway_daemon::report::{reasons, Event, EventTarget, EventType, Reporter};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Namespace of Terway's ConfigMaps.
pub const NAMESPACE: &str = "kube-system";
/// The cluster-wide ConfigMap.
pub const ENI_CONFIG: &str = "eni-config";
/// Its key holding the daemon's configuration.
pub const ENI_CONF_KEY: &str = "eni_conf";

/// The per-node override named by the node's `terway-config` label, as (ConfigMap name, patch text).
pub async fn node_override(
    client: &Client,
    node: &str,
) -> Result<Option<(String, String)>, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    // Not registered yet (terwayd may start before the kubelet): no label can name an override.
    let Some(n) = nodes
        .get_opt(node)
        .await
        .map_err(|e| format!("read node {node}: {e}"))?
    else {
        return Ok(None);
    };
    let Some(name) = n
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(terway_core::annotations::LABEL_TERWAY_CONFIG))
        .cloned()
    else {
        return Ok(None);
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let cm = cms.get_opt(&name).await.map_err(|e| {
        format!("read ConfigMap {NAMESPACE}/{name} (node label terway-config): {e}")
    })?;
    let cm = cm.ok_or_else(|| {
        format!("node {node} has label terway-config={name} but ConfigMap {NAMESPACE}/{name} does not exist; create it or remove the label")
    })?;
    let patch = cm
        .data
        .as_ref()
        .and_then(|d| d.get(ENI_CONF_KEY))
        .cloned()
        .ok_or_else(|| {
            format!("ConfigMap {NAMESPACE}/{name} has no key {ENI_CONF_KEY} (the per-node eni_conf merge patch)")
        })?;
    Ok(Some((name, patch)))
}

/// Why a ConfigMap's content would not load, or `None` when it would. `base` is the running
/// eni_conf text (for checking an override as it would be merged).
pub fn check(name: &str, data: &BTreeMap<String, String>, base: Option<&str>) -> Option<String> {
    let Some(text) = data.get(ENI_CONF_KEY) else {
        return (name == ENI_CONFIG)
            .then(|| format!("ConfigMap {NAMESPACE}/{name} has no key {ENI_CONF_KEY}"));
    };
    let res = if name == ENI_CONFIG {
        terway_core::EniConf::from_json(text)
    } else {
        match base {
            Some(b) => terway_core::EniConf::from_json_with_override(b, Some(text)),
            None => return None,
        }
    };
    res.err().map(|e| {
        format!(
            "ConfigMap {NAMESPACE}/{name} key {ENI_CONF_KEY}: {e}; terwayd keeps its running configuration (fix the ConfigMap, then restart terwayd to apply it)"
        )
    })
}

/// Watches the ConfigMaps that configure this node and reports the ones that would not load.
pub fn watch_config(
    client: Client,
    node_override_name: Option<String>,
    base_file: Option<PathBuf>,
    reporter: Arc<dyn Reporter>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        // Last verdict per ConfigMap, so a resync does not repeat an unchanged complaint.
        let mut last: BTreeMap<String, Option<String>> = BTreeMap::new();
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = stop.wait_for(|v| *v) => break,
            };
            let cm = match next {
                Some(Ok(cm)) => cm,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "ConfigMap watch error; retrying");
                    continue;
                }
                None => break,
            };
            let name = cm.metadata.name.clone().unwrap_or_default();
            if name != ENI_CONFIG && node_override_name.as_deref() != Some(name.as_str()) {
                continue;
            }
            let base = base_file
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok());
            let verdict = check(&name, &cm.data.clone().unwrap_or_default(), base.as_deref());
            if last.get(&name) == Some(&verdict) {
                continue;
            }
            match &verdict {
                Some(why) => {
                    tracing::warn!(configmap = %name, "{why}");
                    reporter.event(Event {
                        target: EventTarget::Node,
                        kind: EventType::Warning,
                        reason: reasons::CONFIG_ERROR.into(),
                        message: why.clone(),
                    });
                }
                None => {
                    tracing::info!(configmap = %name, "ConfigMap is valid; terwayd applies it when it restarts")
                }
            }
            last.insert(name, verdict);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ENI_CONF_KEY.to_string(), text.to_string())])
    }

    #[test]
    fn a_broken_eni_config_is_named_with_its_key() {
        let why = check(ENI_CONFIG, &data("{not json"), None).unwrap();
        assert!(why.contains("kube-system/eni-config key eni_conf"), "{why}");
        assert!(why.contains("keeps its running configuration"), "{why}");
        assert!(check(ENI_CONFIG, &BTreeMap::new(), None).is_some());
        assert_eq!(check(ENI_CONFIG, &data(r#"{"version":"1"}"#), None), None);
    }

    #[test]
    fn an_override_is_checked_merged_over_the_running_base() {
        let base = r#"{"version":"1","max_pool_size":5,"min_pool_size":0}"#;
        let why = check("node0-conf", &data(r#"{"min_pool_size":9}"#), Some(base)).unwrap();
        assert!(why.contains("min_pool_size"), "{why}");
        assert_eq!(
            check("node0-conf", &data(r#"{"max_pool_size":9}"#), Some(base)),
            None
        );
    }
}
