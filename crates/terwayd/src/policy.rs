//! NetworkPolicy on this node, without a sidecar: the cluster's policies, pods and namespaces from the API
//! server (`terway_k8s::netpol`), compiled (`terway_policy`) into the node's `terway_policy` nftables table
//! for the pods behind its host veths, moved from state to state by the smallest atomic script.
//!
//! Two ways in, one lock: AllocIP admits a pod (its state is in place before the reply, so its first packet
//! meets it), and the `network-policy` reconciler follows every other change — a policy, a namespace's
//! labels, a pod anywhere in the cluster — within one period of the watch delivering it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use terway_daemon::pod_policy::{PodPolicy, PolicyDrops, PolicyPod};
use terway_daemon::reconciler::Reconciler;
use terway_daemon::{DaemonError, PodKey};
use terway_datapath::driver::host_veth_name;
use terway_datapath::Netns;
use terway_k8s::netpol::PolicyWatch;
use terway_policy::nft::{self, Direction, LocalPod, NodeRuleset};
use terway_policy::{explain, Compiled, CompiledRule, PolicyError, Rules, World};
use terway_rpc::v1 as pb;

/// Time between passes of the reconciler; a pass with nothing new only compares two numbers.
pub const PERIOD: Duration = Duration::from_millis(200);

/// How long an AllocIP waits for the watch's first list after a start before it refuses the pod: without
/// the cluster's policies the node cannot know what the pod may receive.
pub const SYNC_WAIT: Duration = Duration::from_secs(10);

/// A pod of this node as the table knows it, with the labels AllocIP read.
#[derive(Clone)]
struct Local {
    pod: LocalPod,
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    local: BTreeMap<String, Local>,
    /// What the kernel holds (`None`: unknown, so the next update replaces the whole table).
    applied: Option<NodeRuleset>,
    /// The watch generation `applied` reflects.
    generation: Option<u64>,
    /// Local pods changed since `applied`.
    dirty: bool,
}

/// The node's NetworkPolicy enforcement.
pub struct NodePolicy {
    watch: PolicyWatch,
    ns: Netns,
    state: tokio::sync::Mutex<State>,
}

impl NodePolicy {
    /// Enforce in terwayd's own namespace (the node's), reading the cluster through `watch`.
    pub fn new(watch: PolicyWatch) -> terway_datapath::Result<Arc<NodePolicy>> {
        Ok(Arc::new(NodePolicy {
            watch,
            ns: Netns::current()?,
            state: tokio::sync::Mutex::new(State::default()),
        }))
    }

    /// The reconciler that follows the cluster.
    pub fn reconciler(self: &Arc<Self>) -> Arc<dyn Reconciler> {
        Arc::new(PolicyReconciler(self.clone()))
    }

    /// Packets of every named counter in the table (none before the first pass made it).
    async fn counters(&self) -> Result<BTreeMap<String, u64>, String> {
        let ns = self.ns.try_clone().map_err(|e| e.to_string())?;
        let listing = tokio::task::spawn_blocking(move || {
            terway_datapath::nft::query(
                &ns,
                &["-j", "list", "counters", "table", "inet", nft::TABLE],
                "NetworkPolicy drop counters",
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        match listing {
            Some(l) => counter_values(&l),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Bring the table up to date with the watch and the local pods; a summary of what changed.
    async fn sync(&self, st: &mut State) -> Result<String, String> {
        let (generation, world) = self.watch.snapshot();
        let world = with_local_pods(world, &st.local);
        let (compiled, invalid) = compile_valid(&world);
        for e in &invalid {
            tracing::warn!(error = %e, "NetworkPolicy skipped: it does not compile (fix or delete it)");
        }
        let local: Vec<LocalPod> = st.local.values().map(|l| l.pod.clone()).collect();
        let next = nft::ruleset(&compiled, &world, &local);
        let script = match &st.applied {
            None => Some(nft::full_script(&next)),
            Some(prev) => nft::update_script(prev, &next),
        };
        let mut summary = String::new();
        if let Some(script) = script {
            let ns = self.ns.try_clone().map_err(|e| e.to_string())?;
            let lines = script.lines().count();
            let t = Instant::now();
            let res = tokio::task::spawn_blocking(move || {
                terway_datapath::nft::apply(&ns, &script, "NetworkPolicy")
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = res {
                // The kernel may hold anything between the two states: replace it whole next time.
                st.applied = None;
                return Err(e);
            }
            summary = format!(
                "{lines} nft commands in {} ms; {} local pods, {} chains",
                t.elapsed().as_millis(),
                local.len(),
                next.chains.len()
            );
        }
        st.applied = Some(next);
        st.generation = Some(generation);
        st.dirty = false;
        Ok(summary)
    }
}

/// Compile `w`, leaving out policies that do not compile (each named in the returned errors) so that one
/// bad object does not stop enforcement of every other.
fn compile_valid(w: &World) -> (Compiled, Vec<PolicyError>) {
    let mut w = w.clone();
    let mut invalid = Vec::new();
    loop {
        match terway_policy::compile(&w) {
            Ok(c) => return (c, invalid),
            Err(e) => {
                let key = match &e {
                    PolicyError::Selector { policy, .. } | PolicyError::Invalid { policy, .. } => {
                        policy.clone()
                    }
                };
                let before = w.policies.len() + w.cluster_policies.len();
                w.policies
                    .retain(|p| terway_policy::model::policy_key(p) != key);
                w.cluster_policies
                    .retain(|p| terway_policy::model::cluster_policy_key(p) != key);
                invalid.push(e);
                if w.policies.len() + w.cluster_policies.len() == before {
                    return (Compiled::default(), invalid);
                }
            }
        }
    }
}

/// `w` with this node's pods as the node knows them: their addresses are the ones it gave them (the API
/// server's status may not carry them yet), and no other pod keeps a claim on those addresses.
fn with_local_pods(mut w: World, local: &BTreeMap<String, Local>) -> World {
    let ours: std::collections::BTreeSet<std::net::IpAddr> = local
        .values()
        .flat_map(|l| l.pod.ips.iter().copied())
        .collect();
    for p in w.pods.iter_mut() {
        match local.get(&p.key()) {
            Some(l) => p.ips = l.pod.ips.clone(),
            None => p.ips.retain(|ip| !ours.contains(ip)),
        }
    }
    for l in local.values() {
        if w.pod(&l.namespace, &l.name).is_none() {
            w.pods.push(terway_policy::Pod {
                namespace: l.namespace.clone(),
                name: l.name.clone(),
                labels: l.labels.clone(),
                ips: l.pod.ips.clone(),
                ..Default::default()
            });
        }
    }
    w
}

/// Packets of each named counter in `nft -j list counters` output.
fn counter_values(json: &str) -> Result<BTreeMap<String, u64>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("nft -j list counters: {e}"))?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let c = &o["counter"];
            Some((c["name"].as_str()?.to_string(), c["packets"].as_u64()?))
        })
        .collect())
}

fn local_of(p: &PolicyPod) -> Local {
    Local {
        pod: LocalPod {
            key: format!("{}/{}", p.key.namespace, p.key.name),
            host_if: host_veth_name(&p.key.namespace, &p.key.name, &p.if_name),
            ips: p.ips.clone(),
        },
        namespace: p.key.namespace.clone(),
        name: p.key.name.clone(),
        labels: p.labels.clone(),
    }
}

impl PodPolicy for NodePolicy {
    fn admit<'a>(&'a self, pod: &'a PolicyPod) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if !self.watch.synced() && !self.watch.wait_synced(SYNC_WAIT).await {
                return Err(format!(
                    "the NetworkPolicy watch has not listed policies, pods and namespaces from the API server within {SYNC_WAIT:?}, so what the pod may receive is unknown"
                ));
            }
            let mut st = self.state.lock().await;
            let l = local_of(pod);
            st.local.insert(l.pod.key.clone(), l);
            self.sync(&mut st).await.map(|summary| {
                if !summary.is_empty() {
                    tracing::info!(pod = %pod.key, %summary, "NetworkPolicy in place for the new pod");
                }
            })
        })
    }

    fn forget<'a>(&'a self, pod: &'a PodKey) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            if st
                .local
                .remove(&format!("{}/{}", pod.namespace, pod.name))
                .is_some()
            {
                st.dirty = true;
            }
        })
    }

    fn drops(&self) -> BoxFuture<'_, Result<Vec<PolicyDrops>, String>> {
        Box::pin(async move {
            let counters = self.counters().await?;
            let st = self.state.lock().await;
            let mut out = Vec::new();
            for l in st.local.values() {
                for (dir, label) in [
                    (Direction::Ingress, "ingress"),
                    (Direction::Egress, "egress"),
                ] {
                    let name = nft::drop_counter(&nft::chain_name(dir, &l.pod.key));
                    if let Some(packets) = counters.get(&name) {
                        out.push(PolicyDrops {
                            pod: PodKey::new(&l.namespace, &l.name),
                            direction: label,
                            packets: *packets,
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    fn explain<'a>(&'a self, pod: &'a PodKey) -> BoxFuture<'a, Result<pb::PolicyReply, String>> {
        Box::pin(async move {
            let key = format!("{}/{}", pod.namespace, pod.name);
            let counters = self.counters().await?;
            let st = self.state.lock().await;
            let (_, world) = self.watch.snapshot();
            let world = with_local_pods(world, &st.local);
            let (compiled, _) = compile_valid(&world);
            let local = st.local.contains_key(&key);
            let Some(rules) = compiled.pods.get(&key) else {
                let note = match world.pod(&pod.namespace, &pod.name) {
                    None => "no such pod in the API server (as this node's watch has it)",
                    Some(_) => "a hostNetwork pod: NetworkPolicy does not apply to it",
                };
                return Ok(pb::PolicyReply {
                    enforced: true,
                    local,
                    note: note.into(),
                    ..Default::default()
                });
            };
            let rule = |tier: &str, action: &str, cr: &CompiledRule| pb::PolicyRule {
                policy: cr.policy.clone(),
                index: u32::try_from(cr.index).unwrap_or(u32::MAX),
                peers: explain::peers(&cr.peers),
                ports: explain::ports(&cr.ports),
                tier: tier.into(),
                action: action.into(),
            };
            let direction = |dir: Direction, ingress: bool| {
                if !rules.restricted(ingress) {
                    return pb::PolicyDirection::default();
                }
                let (np, tiers) = if ingress {
                    (&rules.ingress, &rules.cluster_ingress)
                } else {
                    (&rules.egress, &rules.cluster_egress)
                };
                let chain = nft::chain_name(dir, &key);
                let cluster = |t: &terway_policy::TierRule, tier: &str| {
                    rule(tier, &format!("{:?}", t.action), &t.rule)
                };
                let mut list: Vec<pb::PolicyRule> =
                    tiers.admin.iter().map(|t| cluster(t, "Admin")).collect();
                if let Rules::Allow(np) = np {
                    list.extend(np.iter().map(|cr| rule("NetworkPolicy", "Allow", cr)));
                }
                list.extend(tiers.baseline.iter().map(|t| cluster(t, "Baseline")));
                pb::PolicyDirection {
                    isolated: matches!(np, Rules::Allow(_)),
                    rules: list,
                    dropped_packets: counters
                        .get(&nft::drop_counter(&chain))
                        .copied()
                        .unwrap_or(0),
                    chain: if local { chain } else { String::new() },
                }
            };
            Ok(pb::PolicyReply {
                enforced: true,
                local,
                selected_by: rules.selected_by.iter().cloned().collect(),
                ingress: Some(direction(Direction::Ingress, true)),
                egress: Some(direction(Direction::Egress, false)),
                note: if local {
                    String::new()
                } else {
                    "not a covered pod of this node (its own node enforces its policy); shown as this node compiles it".into()
                },
            })
        })
    }

    fn restore(&self, pods: Vec<PolicyPod>) {
        // Called once at start, before anything else can hold the lock.
        if let Ok(mut st) = self.state.try_lock() {
            for p in &pods {
                let l = local_of(p);
                st.local.insert(l.pod.key.clone(), l);
            }
            st.dirty = true;
        }
    }
}

struct PolicyReconciler(Arc<NodePolicy>);

impl Reconciler for PolicyReconciler {
    fn name(&self) -> &'static str {
        "network-policy"
    }

    fn period(&self) -> Duration {
        PERIOD
    }

    fn reconcile(
        &self,
    ) -> Pin<Box<dyn Future<Output = terway_daemon::Result<String>> + Send + '_>> {
        Box::pin(async move {
            let p = &self.0;
            // Until the first list, the table the kernel holds (an earlier terwayd's) stays as it is: an
            // empty cluster would open every isolated pod.
            if !p.watch.synced() {
                return Ok(String::new());
            }
            let mut st = p.state.lock().await;
            if !st.dirty && st.generation == Some(p.watch.generation()) {
                return Ok(String::new());
            }
            p.sync(&mut st).await.map_err(DaemonError::PolicySync)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn local(ns: &str, name: &str, ip: &str) -> (String, Local) {
        let p = PolicyPod {
            key: PodKey::new(ns, name),
            if_name: "eth0".into(),
            ips: vec![ip.parse().unwrap()],
            labels: BTreeMap::from([("app".into(), "web".into())]),
        };
        let l = local_of(&p);
        (l.pod.key.clone(), l)
    }

    #[test]
    fn local_pods_bring_their_addresses_and_take_them_from_stale_pods() {
        let mut w = World::default();
        w.pods.push(terway_policy::Pod {
            namespace: "x".into(),
            name: "old".into(),
            ips: vec!["10.0.0.5".parse().unwrap()],
            ..Default::default()
        });
        w.pods.push(terway_policy::Pod {
            namespace: "x".into(),
            name: "known".into(),
            ..Default::default()
        });
        let locals = BTreeMap::from([
            local("x", "new", "10.0.0.5"),
            local("x", "known", "10.0.0.6"),
        ]);
        let w = with_local_pods(w, &locals);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(
            w.pod("x", "old").unwrap().ips.is_empty(),
            "the address is the new pod's now"
        );
        assert_eq!(w.pod("x", "known").unwrap().ips, vec![ip("10.0.0.6")]);
        let new = w.pod("x", "new").unwrap();
        assert_eq!(
            (new.ips.clone(), new.labels.get("app").map(String::as_str)),
            (vec![ip("10.0.0.5")], Some("web"))
        );
        assert_eq!(
            locals["x/new"].pod.host_if,
            host_veth_name("x", "new", "eth0")
        );
    }

    #[test]
    fn counters_are_read_by_name_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"counter": {"family": "inet", "name": "drop_in_ab", "table": "terway_policy", "handle": 3, "packets": 12, "bytes": 720}}]}"#;
        assert_eq!(
            counter_values(json).unwrap(),
            BTreeMap::from([("drop_in_ab".to_string(), 12)])
        );
        assert!(counter_values("not json").is_err());
    }

    #[test]
    fn a_policy_that_does_not_compile_is_left_out_and_named() {
        let mut w = terway_policy::gen::case(3);
        let good = w.policies.len();
        let mut bad = w.policies[0].clone();
        bad.metadata.name = Some("bad".into());
        if let Some(spec) = bad.spec.as_mut() {
            spec.ingress = Some(vec![k8s_like_bad_rule()]);
            spec.policy_types = Some(vec!["Ingress".into()]);
        }
        w.policies.push(bad);
        let (c, invalid) = compile_valid(&w);
        assert_eq!(invalid.len(), 1);
        assert!(invalid[0].to_string().contains("/bad"), "{}", invalid[0]);
        let mut only_good = w.clone();
        only_good.policies.truncate(good);
        assert_eq!(c, terway_policy::compile(&only_good).unwrap());
    }

    fn k8s_like_bad_rule() -> k8s_openapi::api::networking::v1::NetworkPolicyIngressRule {
        k8s_openapi::api::networking::v1::NetworkPolicyIngressRule {
            from: Some(vec![k8s_openapi::api::networking::v1::NetworkPolicyPeer {
                ip_block: Some(k8s_openapi::api::networking::v1::IPBlock {
                    cidr: "not-a-cidr".into(),
                    except: None,
                }),
                ..Default::default()
            }]),
            ports: None,
        }
    }
}
