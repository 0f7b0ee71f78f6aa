//! What NetworkPolicy enforcement reads from the API server: every NetworkPolicy, ClusterNetworkPolicy,
//! namespace, pod and node of the cluster (peers are resolved to addresses cluster-wide), kept by reflectors, handed out as one
//! [`World`] snapshot with a generation that moves on every change, so a pass that sees the same
//! generation knows there is nothing new.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use terway_policy::model;
use terway_policy::{ClusterNetworkPolicy, NamedPort, Proto, World};

/// The reflectors and their progress.
#[derive(Clone)]
pub struct PolicyWatch {
    policies: Store<NetworkPolicy>,
    cluster_policies: Store<ClusterNetworkPolicy>,
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    generation: Arc<AtomicU64>,
    synced: tokio::sync::watch::Receiver<u8>,
}

/// The five kinds watched; synced when all have listed once.
const KINDS: u8 = 5;

impl PolicyWatch {
    /// Start the five watches (each retries with backoff on its own).
    pub fn start(client: Client) -> PolicyWatch {
        let generation = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::watch::channel(0u8);
        let tx = Arc::new(tx);
        let g = || generation.clone();
        let policies = watch(Api::all(client.clone()), g(), tx.clone(), false);
        // A cluster without the ClusterNetworkPolicy CRD has no cluster policies: that is not a reason to
        // hold every pod start, so a missing CRD counts as listed (empty) and the watch keeps retrying.
        let cluster_policies = watch(Api::all(client.clone()), g(), tx.clone(), true);
        let namespaces = watch(Api::all(client.clone()), g(), tx.clone(), false);
        let nodes = watch(Api::all(client.clone()), g(), tx.clone(), false);
        let pods = watch(Api::all(client), g(), tx, false);
        PolicyWatch {
            policies,
            cluster_policies,
            namespaces,
            pods,
            nodes,
            generation,
            synced: rx,
        }
    }

    /// Whether every watch has completed its first list.
    pub fn synced(&self) -> bool {
        *self.synced.borrow() >= KINDS
    }

    /// Wait until [`PolicyWatch::synced`]; `false` if `timeout` passed first.
    pub async fn wait_synced(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.synced.clone();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= KINDS))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A number that changes whenever any watched object does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cluster as the policy code reads it, and the generation it reflects (read before the stores,
    /// so a change during the read shows up as a newer generation next time).
    pub fn snapshot(&self) -> (u64, World) {
        let generation = self.generation();
        let world = World {
            namespaces: self
                .namespaces
                .state()
                .iter()
                .map(|n| namespace(n))
                .collect(),
            pods: self.pods.state().iter().filter_map(|p| pod(p)).collect(),
            policies: self
                .policies
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect(),
            cluster_policies: self
                .cluster_policies
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect(),
            nodes: self.nodes.state().iter().map(|n| node(n)).collect(),
        };
        (generation, world)
    }
}

/// A reflector on `api` that bumps `generation` on every event and counts its first completed list (or,
/// with `absent_ok`, a list refused because the API server does not serve the kind).
fn watch<K>(
    api: Api<K>,
    generation: Arc<AtomicU64>,
    synced: Arc<tokio::sync::watch::Sender<u8>>,
    absent_ok: bool,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        futures::pin_mut!(stream);
        let (mut listed, mut failing) = (false, false);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    failing = false;
                    generation.fetch_add(1, Ordering::AcqRel);
                    if matches!(ev, watcher::Event::InitDone) && !listed {
                        listed = true;
                        synced.send_modify(|n| *n += 1);
                        tracing::info!(kind = %kind, "NetworkPolicy watch synced");
                    }
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                    if absent_ok && status.is_not_found() =>
                {
                    if !listed {
                        listed = true;
                        synced.send_modify(|n| *n += 1);
                        tracing::warn!(kind = %kind, "the API server does not serve this kind (its CRD is not installed): none are enforced until it is; install deploy/crds");
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(kind = %kind, error = %e, "NetworkPolicy watch failed; retrying with backoff");
                }
                Err(_) => {}
            }
        }
    });
    store
}

fn namespace(n: &Namespace) -> model::Namespace {
    model::Namespace {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
    }
}

/// A node as a ClusterNetworkPolicy `nodes` peer reads it: its labels and the IPs among its addresses.
pub fn node(n: &Node) -> model::Node {
    model::Node {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        ips: n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|a| a.address.parse().ok())
            .collect(),
    }
}

/// A pod as the policy code reads it; `None` for one that has finished (its address may be another's).
pub fn pod(p: &Pod) -> Option<model::Pod> {
    let status = p.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let spec = p.spec.as_ref();
    let mut ips: Vec<std::net::IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok()),
        );
    }
    let ports = spec
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|cp| {
            let name = cp.name.clone()?;
            let proto = Proto::parse(cp.protocol.as_deref())?;
            let port = u16::try_from(cp.container_port).ok()?;
            Some(NamedPort { name, proto, port })
        })
        .collect();
    Some(model::Pod {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ips,
        ports,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodIP, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn a_pod_brings_its_addresses_named_ports_and_host_network() {
        let p = Pod {
            metadata: ObjectMeta {
                namespace: Some("x".into()),
                name: Some("a".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![
                        ContainerPort {
                            name: Some("web".into()),
                            container_port: 8080,
                            ..Default::default()
                        },
                        ContainerPort {
                            container_port: 9,
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ips: Some(vec![PodIP {
                    ip: "10.0.0.5".into(),
                }]),
                phase: Some("Running".into()),
                ..Default::default()
            }),
        };
        let m = pod(&p).unwrap();
        assert_eq!(m.ips, vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(m.named_port("web", Proto::Tcp), Some(8080));
        assert_eq!(m.ports.len(), 1, "an unnamed port is no named port");
        assert!(!m.host_network);
        let mut done = p.clone();
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        assert!(
            pod(&done).is_none(),
            "a finished pod's address may be another pod's"
        );
    }
}
