//! ClusterNetworkPolicy, compiled: for one pod and one direction, the Admin tier's rules and the Baseline
//! tier's, each list in evaluation order (priority, then name, then rule order), peers resolved to
//! addresses like a NetworkPolicy rule's. [`side_allows`] is the order the tiers are consulted in.
//!
//! Rules that are not well formed (a peer or a protocol entry with no field or more than one, a CIDR or
//! a port range that does not parse, an empty peer list) fail closed, as the API asks of an implementation
//! that meets a field it does not know: in an Accept rule the bad part matches nothing; a Deny or Pass
//! rule with a bad part denies everything. `domainNames` peers are not enforced: they match nothing.

use std::collections::BTreeSet;

use ipnet::IpNet;
use terway_apis::{
    Action, ClusterNetworkPolicy, ClusterNetworkPolicyProtocol, NamespacedPod, Tier,
};

use crate::compile::{CompiledRule, PeerMatch, PortMatch, Rules};
use crate::model::{cluster_policy_key, Pod, Proto, World};
use crate::selector::Selector;
use crate::PolicyError;

/// A cluster policy rule for one pod: what it matches and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRule {
    /// What it matches (its `policy` is the cluster policy's key).
    pub rule: CompiledRule,
    /// What it does.
    pub action: Action,
    /// The policy's priority.
    pub priority: i32,
}

/// One direction of one pod, as the two cluster tiers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tiers {
    /// Admin tier rules, in evaluation order.
    pub admin: Vec<TierRule>,
    /// Baseline tier rules, in evaluation order.
    pub baseline: Vec<TierRule>,
}

impl Tiers {
    /// No cluster policy has a rule for this direction of the pod.
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.baseline.is_empty()
    }

    /// The cluster policies with rules here.
    pub fn policies(&self) -> BTreeSet<&str> {
        self.admin
            .iter()
            .chain(&self.baseline)
            .map(|r| r.rule.policy.as_str())
            .collect()
    }
}

/// The first rule of `rules` that matches, if any.
fn first_match(
    rules: &[TierRule],
    ip: std::net::IpAddr,
    port: u16,
    proto: Proto,
    dst: Option<&Pod>,
) -> Option<Action> {
    rules
        .iter()
        .find(|r| r.rule.admits(ip, port, proto, dst))
        .map(|r| r.action)
}

/// Whether one direction of a pod allows the peer `ip` on `port`/`proto`: the Admin tier decides if a rule
/// of it Accepts or Denies; else (no match, or Pass) a NetworkPolicy that isolates the direction decides;
/// else the Baseline tier decides if a rule of it Denies; else it is allowed.
pub fn side_allows(
    np: &Rules,
    tiers: &Tiers,
    ip: std::net::IpAddr,
    port: u16,
    proto: Proto,
    dst: Option<&Pod>,
) -> bool {
    match first_match(&tiers.admin, ip, port, proto, dst) {
        Some(Action::Accept) => return true,
        Some(Action::Deny) => return false,
        Some(Action::Pass) | None => {}
    }
    if let Rules::Allow(_) = np {
        return np.allows(ip, port, proto, dst);
    }
    first_match(&tiers.baseline, ip, port, proto, dst) != Some(Action::Deny)
}

/// A cluster policy parsed once.
pub(crate) struct ParsedCluster {
    pub(crate) key: String,
    tier: Tier,
    priority: i32,
    name: String,
    subject: Option<(Selector, Option<Selector>)>,
    ingress: Vec<ParsedClusterRule>,
    egress: Vec<ParsedClusterRule>,
}

struct ParsedClusterRule {
    action: Action,
    /// `None`: the rule is not well formed and fails closed.
    peers: Option<Vec<ClusterPeer>>,
    protocols: Option<Vec<ClusterProto>>,
}

enum ClusterPeer {
    Pods {
        namespaces: Selector,
        pods: Option<Selector>,
    },
    Nodes(Selector),
    Networks(Vec<IpNet>),
    /// Matches nothing (a bad part of an Accept rule, or domain names).
    Nothing,
}

enum ClusterProto {
    Port(PortMatch),
    Named(String),
    Nothing,
}

/// Parse every cluster policy, sorted in evaluation order within each tier.
pub(crate) fn parse_all(w: &World) -> Result<Vec<ParsedCluster>, PolicyError> {
    let mut out: Vec<ParsedCluster> = w
        .cluster_policies
        .iter()
        .map(parse)
        .collect::<Result<_, _>>()?;
    // Equal priorities may be applied in any order (the API leaves it to the implementation); by name.
    out.sort_by(|a, b| (a.tier, a.priority, &a.name).cmp(&(b.tier, b.priority, &b.name)));
    Ok(out)
}

fn parse(p: &ClusterNetworkPolicy) -> Result<ParsedCluster, PolicyError> {
    let key = cluster_policy_key(p);
    let sel = |s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector, field: &str| {
        Selector::parse(s).map_err(|e| PolicyError::Selector {
            policy: key.clone(),
            what: format!("{field}: {e}"),
        })
    };
    let spec = &p.spec;
    let pods_sel =
        |np: &NamespacedPod, field: &str| -> Result<(Selector, Option<Selector>), PolicyError> {
            Ok((
                sel(
                    &np.namespace_selector,
                    &format!("{field}.namespaceSelector"),
                )?,
                Some(sel(&np.pod_selector, &format!("{field}.podSelector"))?),
            ))
        };
    // Exactly one subject field; otherwise the policy applies to no pod.
    let subject = match (&spec.subject.namespaces, &spec.subject.pods) {
        (Some(ns), None) => Some((sel(ns, "subject.namespaces")?, None)),
        (None, Some(np)) => Some(pods_sel(np, "subject.pods")?),
        _ => None,
    };
    let peer =
        |action: Action,
         namespaces: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
         pods: &Option<NamespacedPod>,
         nodes: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
         networks: &[String],
         domains: &[String]|
         -> Result<Option<ClusterPeer>, PolicyError> {
            let set = usize::from(namespaces.is_some())
                + usize::from(pods.is_some())
                + usize::from(nodes.is_some())
                + usize::from(!networks.is_empty())
                + usize::from(!domains.is_empty());
            if set != 1 {
                return Ok(None);
            }
            Ok(Some(if let Some(ns) = namespaces {
                ClusterPeer::Pods {
                    namespaces: sel(ns, "peer namespaces")?,
                    pods: None,
                }
            } else if let Some(np) = pods {
                let (namespaces, pods) = pods_sel(np, "peer pods")?;
                ClusterPeer::Pods { namespaces, pods }
            } else if let Some(n) = nodes {
                ClusterPeer::Nodes(sel(n, "peer nodes")?)
            } else if !networks.is_empty() {
                match networks.iter().map(|c| c.parse::<IpNet>()).collect() {
                    Ok(v) => ClusterPeer::Networks(v),
                    Err(_) => return Ok(None),
                }
            } else if action == Action::Accept {
                ClusterPeer::Nothing
            } else {
                // Domain names belong in Accept rules only.
                return Ok(None);
            }))
        };
    let rule = |action: Action,
                peers: Vec<Option<ClusterPeer>>,
                protocols: &[ClusterNetworkPolicyProtocol]|
     -> ParsedClusterRule {
        let protocols: Vec<Option<ClusterProto>> = protocols.iter().map(protocol).collect();
        let bad = peers.is_empty()
            || peers.iter().any(Option::is_none)
            || protocols.iter().any(Option::is_none);
        if bad && action != Action::Accept {
            return ParsedClusterRule {
                action: Action::Deny,
                peers: None,
                protocols: None,
            };
        }
        ParsedClusterRule {
            action,
            peers: Some(
                peers
                    .into_iter()
                    .map(|p| p.unwrap_or(ClusterPeer::Nothing))
                    .collect(),
            ),
            protocols: (!protocols.is_empty()).then(|| {
                protocols
                    .into_iter()
                    .map(|p| p.unwrap_or(ClusterProto::Nothing))
                    .collect()
            }),
        }
    };
    let mut ingress = Vec::new();
    for r in &spec.ingress {
        let peers = r
            .from
            .iter()
            .map(|f| peer(r.action, &f.namespaces, &f.pods, None, &[], &[]))
            .collect::<Result<Vec<_>, _>>()?;
        ingress.push(rule(r.action, peers, &r.protocols));
    }
    let mut egress = Vec::new();
    for r in &spec.egress {
        let peers =
            r.to.iter()
                .map(|t| {
                    peer(
                        r.action,
                        &t.namespaces,
                        &t.pods,
                        t.nodes.as_ref(),
                        &t.networks,
                        &t.domain_names,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
        egress.push(rule(r.action, peers, &r.protocols));
    }
    Ok(ParsedCluster {
        key,
        tier: spec.tier,
        priority: spec.priority,
        name: p.metadata.name.clone().unwrap_or_default(),
        subject,
        ingress,
        egress,
    })
}

/// One protocol entry; `None` when it does not set exactly one field or its port does not parse.
fn protocol(p: &ClusterNetworkPolicyProtocol) -> Option<ClusterProto> {
    let set = usize::from(p.tcp.is_some())
        + usize::from(p.udp.is_some())
        + usize::from(p.sctp.is_some())
        + usize::from(!p.destination_named_port.is_empty());
    if set != 1 {
        return None;
    }
    if !p.destination_named_port.is_empty() {
        return Some(ClusterProto::Named(p.destination_named_port.clone()));
    }
    let (proto, pp) = [
        (Proto::Tcp, &p.tcp),
        (Proto::Udp, &p.udp),
        (Proto::Sctp, &p.sctp),
    ]
    .into_iter()
    .find_map(|(proto, pp)| pp.as_ref().map(|pp| (proto, pp)))?;
    let port = |n: i32| u16::try_from(n).ok().filter(|n| *n > 0);
    Some(ClusterProto::Port(match &pp.destination_port {
        None => PortMatch::AllOf(proto),
        Some(d) => match (&d.range, d.number) {
            (None, n) => {
                let n = port(n)?;
                PortMatch::Range {
                    proto,
                    lo: n,
                    hi: n,
                }
            }
            (Some(r), 0) => {
                let (lo, hi) = (port(r.start)?, port(r.end)?);
                if lo >= hi {
                    return None;
                }
                PortMatch::Range { proto, lo, hi }
            }
            (Some(_), _) => return None,
        },
    }))
}

fn subject_selects(w: &World, p: &ParsedCluster, pod: &Pod) -> bool {
    if pod.host_network {
        return false;
    }
    let ns_labels = w
        .namespace(&pod.namespace)
        .map(|n| n.labels.clone())
        .unwrap_or_default();
    p.subject.as_ref().is_some_and(|(ns, pods)| {
        ns.matches(&ns_labels) && pods.as_ref().is_none_or(|s| s.matches(&pod.labels))
    })
}

/// The cluster policies whose subject is `pod`, in evaluation order.
pub(crate) fn selecting<'p>(
    w: &World,
    parsed: &'p [ParsedCluster],
    pod: &Pod,
) -> Vec<&'p ParsedCluster> {
    parsed
        .iter()
        .filter(|p| subject_selects(w, p, pod))
        .collect()
}

/// The rules of the policies of `tier` among `subjects` (those [`selecting`] the pod), for one direction,
/// in evaluation order.
pub(crate) fn tier_rules(
    w: &World,
    subjects: &[&ParsedCluster],
    tier: Tier,
    pod: &Pod,
    ingress: bool,
) -> Vec<TierRule> {
    let mut out = Vec::new();
    for p in subjects.iter().filter(|p| p.tier == tier) {
        let rules = if ingress { &p.ingress } else { &p.egress };
        for (index, r) in rules.iter().enumerate() {
            let (peers, ports) = match &r.peers {
                None => (PeerMatch::Any, None),
                Some(peers) => (
                    resolve(w, peers),
                    r.protocols.as_ref().map(|ps| {
                        ps.iter()
                            .flat_map(|pr| ports(pr, ingress.then_some(pod)))
                            .collect()
                    }),
                ),
            };
            out.push(TierRule {
                rule: CompiledRule {
                    policy: p.key.clone(),
                    index,
                    peers,
                    ports,
                },
                action: r.action,
                priority: p.priority,
            });
        }
    }
    out
}

fn resolve(w: &World, peers: &[ClusterPeer]) -> PeerMatch {
    let mut ips = BTreeSet::new();
    let mut blocks = Vec::new();
    for p in peers {
        match p {
            ClusterPeer::Pods { namespaces, pods } => {
                for pod in w.pods.iter().filter(|p| !p.host_network) {
                    let ns = w
                        .namespace(&pod.namespace)
                        .map(|n| n.labels.clone())
                        .unwrap_or_default();
                    if namespaces.matches(&ns)
                        && pods.as_ref().is_none_or(|s| s.matches(&pod.labels))
                    {
                        ips.extend(pod.ips.iter().copied());
                    }
                }
            }
            ClusterPeer::Nodes(sel) => {
                for n in w.nodes.iter().filter(|n| sel.matches(&n.labels)) {
                    ips.extend(n.ips.iter().copied());
                }
            }
            ClusterPeer::Networks(nets) => blocks.extend(nets.iter().map(|n| (*n, Vec::new()))),
            ClusterPeer::Nothing => {}
        }
    }
    PeerMatch::Set { ips, blocks }
}

/// A protocol entry as port matches: a named port resolves against the subject pod for ingress (one
/// match per protocol it has the name for) and stays a name, per protocol, for egress.
fn ports(p: &ClusterProto, ingress_pod: Option<&Pod>) -> Vec<PortMatch> {
    match p {
        ClusterProto::Port(m) => vec![m.clone()],
        ClusterProto::Nothing => Vec::new(),
        ClusterProto::Named(name) => Proto::ALL
            .into_iter()
            .filter_map(|proto| match ingress_pod {
                Some(pod) => pod.named_port(name, proto).map(|n| PortMatch::Range {
                    proto,
                    lo: n,
                    hi: n,
                }),
                None => Some(PortMatch::Named {
                    proto,
                    name: name.clone(),
                }),
            })
            .collect(),
    }
}
