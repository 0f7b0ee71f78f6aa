//! The compiler: every pod's ingress and egress rule sets, with peers resolved to addresses, as a node
//! enforces them. A pod event changes which addresses a peer set holds; it does not change the rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use terway_apis::Tier;

use crate::cluster::{self, side_allows, Tiers};
use crate::model::{policy_key, policy_namespace, rules_as_written, Pod, Proto, World};
use crate::selector::Selector;
use crate::PolicyError;

/// Which peers a rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMatch {
    /// Every peer (the rule lists none).
    Any,
    /// These pod addresses, and addresses in these blocks but outside their exceptions.
    Set {
        /// Addresses of the pods the peer selectors match.
        ips: BTreeSet<IpAddr>,
        /// `ipBlock`s: the CIDR and its `except` list.
        blocks: Vec<(IpNet, Vec<IpNet>)>,
    },
}

impl PeerMatch {
    /// Whether `ip` is admitted.
    pub fn admits(&self, ip: IpAddr) -> bool {
        match self {
            PeerMatch::Any => true,
            PeerMatch::Set { ips, blocks } => {
                ips.contains(&ip)
                    || blocks
                        .iter()
                        .any(|(c, ex)| c.contains(&ip) && !ex.iter().any(|e| e.contains(&ip)))
            }
        }
    }
}

/// One port entry of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// Every port of the protocol.
    AllOf(Proto),
    /// `lo..=hi` of the protocol.
    Range {
        /// Protocol.
        proto: Proto,
        /// First port.
        lo: u16,
        /// Last port.
        hi: u16,
    },
    /// A named port, resolved against the destination pod (egress rules; ingress names are resolved at
    /// compile time against the selected pod).
    Named {
        /// Protocol.
        proto: Proto,
        /// The container port's name.
        name: String,
    },
}

/// One rule of a policy, compiled for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    /// `namespace/name` of the policy it comes from.
    pub policy: String,
    /// Its position among that policy's rules of the same direction: with `policy` and the direction, the
    /// rule's identity, which stays put while the pods its peers resolve to come and go.
    pub index: usize,
    /// Its peers.
    pub peers: PeerMatch,
    /// Its ports; `None`: every port of every protocol.
    pub ports: Option<Vec<PortMatch>>,
}

impl CompiledRule {
    /// Whether the peer `ip` on `port`/`proto` matches; `dst` is the destination pod.
    pub fn admits(&self, ip: IpAddr, port: u16, proto: Proto, dst: Option<&Pod>) -> bool {
        self.peers.admits(ip)
            && self.ports.as_ref().is_none_or(|ps| {
                ps.iter().any(|p| match p {
                    PortMatch::AllOf(pr) => *pr == proto,
                    PortMatch::Range { proto: pr, lo, hi } => {
                        *pr == proto && (*lo..=*hi).contains(&port)
                    }
                    PortMatch::Named { proto: pr, name } => {
                        *pr == proto && dst.and_then(|d| d.named_port(name, proto)) == Some(port)
                    }
                })
            })
    }
}

/// One direction of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rules {
    /// No policy isolates the pod in this direction.
    Unrestricted,
    /// Isolated: what one of these rules admits is allowed, nothing else (an empty list denies all).
    Allow(Vec<CompiledRule>),
}

impl Rules {
    /// Whether traffic with the peer `ip` on `port`/`proto` is allowed; `dst` is the destination pod
    /// (whose named ports an egress rule's named port means).
    pub fn allows(&self, ip: IpAddr, port: u16, proto: Proto, dst: Option<&Pod>) -> bool {
        match self {
            Rules::Unrestricted => true,
            Rules::Allow(rules) => rules.iter().any(|r| r.admits(ip, port, proto, dst)),
        }
    }

    /// The policies that isolate this direction.
    pub fn policies(&self) -> BTreeSet<&str> {
        match self {
            Rules::Unrestricted => BTreeSet::new(),
            Rules::Allow(rules) => rules.iter().map(|r| r.policy.as_str()).collect(),
        }
    }
}

/// A pod's compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRules {
    /// Traffic to the pod (NetworkPolicy).
    pub ingress: Rules,
    /// Traffic from the pod (NetworkPolicy).
    pub egress: Rules,
    /// Traffic to the pod (ClusterNetworkPolicy, both tiers).
    pub cluster_ingress: Tiers,
    /// Traffic from the pod (ClusterNetworkPolicy, both tiers).
    pub cluster_egress: Tiers,
    /// Policies that select the pod (also those that isolate no direction of it, such as an Egress-only
    /// policy with respect to ingress), cluster policies included.
    pub selected_by: BTreeSet<String>,
}

impl PodRules {
    /// Whether traffic with the peer `ip` on `port`/`proto` passes this pod's side (`ingress`: traffic to
    /// it), all tiers consulted; `dst` is the destination pod.
    pub fn allows(
        &self,
        ingress: bool,
        ip: IpAddr,
        port: u16,
        proto: Proto,
        dst: Option<&Pod>,
    ) -> bool {
        let (np, tiers) = if ingress {
            (&self.ingress, &self.cluster_ingress)
        } else {
            (&self.egress, &self.cluster_egress)
        };
        side_allows(np, tiers, ip, port, proto, dst)
    }

    /// Whether a direction has anything to enforce (some policy of some tier has rules for it).
    pub fn restricted(&self, ingress: bool) -> bool {
        let (np, tiers) = if ingress {
            (&self.ingress, &self.cluster_ingress)
        } else {
            (&self.egress, &self.cluster_egress)
        };
        matches!(np, Rules::Allow(_)) || !tiers.is_empty()
    }
}

/// Every non-host-network pod's rules, keyed by `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    /// The rules.
    pub pods: BTreeMap<String, PodRules>,
}

impl Compiled {
    /// Whether `src_ip` → `dst_ip` on `port`/`proto` is allowed, as the nodes enforce it: the egress of the
    /// source if it is a pod, the ingress of the destination if it is one.
    pub fn allows(
        &self,
        w: &World,
        src_ip: IpAddr,
        dst_ip: IpAddr,
        port: u16,
        proto: Proto,
    ) -> bool {
        let dst_pod = w.pod_by_ip(dst_ip);
        let egress = w
            .pod_by_ip(src_ip)
            .and_then(|p| self.pods.get(&p.key()))
            .is_none_or(|r| r.allows(false, dst_ip, port, proto, dst_pod));
        let ingress = dst_pod
            .and_then(|p| self.pods.get(&p.key()))
            .is_none_or(|r| r.allows(true, src_ip, port, proto, dst_pod));
        egress && ingress
    }
}

/// A policy parsed once: selectors and CIDRs checked.
struct Parsed<'a> {
    key: String,
    namespace: &'a str,
    select: Selector,
    ingress: Option<Vec<ParsedRule>>,
    egress: Option<Vec<ParsedRule>>,
}

struct ParsedRule {
    peers: Option<Vec<ParsedPeer>>,
    ports: Option<Vec<ParsedPort>>,
}

enum ParsedPeer {
    Block(IpNet, Vec<IpNet>),
    Pods {
        namespaces: Option<Selector>,
        pods: Option<Selector>,
    },
}

enum ParsedPort {
    All(Proto),
    Range(Proto, u16, u16),
    Named(Proto, String),
}

/// Compile every policy of `w` into per-pod rules.
pub fn compile(w: &World) -> Result<Compiled, PolicyError> {
    let parsed: Vec<Parsed<'_>> = w.policies.iter().map(parse).collect::<Result<_, _>>()?;
    let cluster = cluster::parse_all(w)?;
    let mut out = Compiled::default();
    for pod in w.pods.iter().filter(|p| !p.host_network) {
        let selecting: Vec<&Parsed<'_>> = parsed
            .iter()
            .filter(|p| p.namespace == pod.namespace && p.select.matches(&pod.labels))
            .collect();
        let direction = |ingress: bool| {
            let isolating: Vec<&Parsed<'_>> = selecting
                .iter()
                .copied()
                .filter(|p| rules_of(p, ingress).is_some())
                .collect();
            if isolating.is_empty() {
                return Rules::Unrestricted;
            }
            let mut rules = Vec::new();
            for p in isolating {
                for (index, r) in rules_of(p, ingress).into_iter().flatten().enumerate() {
                    rules.push(CompiledRule {
                        policy: p.key.clone(),
                        index,
                        peers: resolve_peers(w, p.namespace, r.peers.as_deref()),
                        ports: r.ports.as_ref().map(|ps| {
                            ps.iter()
                                .filter_map(|pt| resolve_port(pt, ingress.then_some(pod)))
                                .collect()
                        }),
                    });
                }
            }
            Rules::Allow(rules)
        };
        let subjects = cluster::selecting(w, &cluster, pod);
        let tiers = |ingress: bool| Tiers {
            admin: cluster::tier_rules(w, &subjects, Tier::Admin, pod, ingress),
            baseline: cluster::tier_rules(w, &subjects, Tier::Baseline, pod, ingress),
        };
        let (cluster_ingress, cluster_egress) = (tiers(true), tiers(false));
        let mut selected_by: BTreeSet<String> = selecting.iter().map(|p| p.key.clone()).collect();
        selected_by.extend(subjects.iter().map(|p| p.key.clone()));
        let rules = PodRules {
            ingress: direction(true),
            egress: direction(false),
            cluster_ingress,
            cluster_egress,
            selected_by,
        };
        out.pods.insert(pod.key(), rules);
    }
    Ok(out)
}

/// A parsed policy's rules of one direction; `None` when it does not isolate that direction.
fn rules_of<'p>(p: &'p Parsed<'_>, ingress: bool) -> Option<&'p Vec<ParsedRule>> {
    if ingress {
        p.ingress.as_ref()
    } else {
        p.egress.as_ref()
    }
}

fn parse(p: &NetworkPolicy) -> Result<Parsed<'_>, PolicyError> {
    let key = policy_key(p);
    let sel_err = |what: String| PolicyError::Selector {
        policy: key.clone(),
        what,
    };
    let spec = p.spec.as_ref();
    let select = match spec.and_then(|s| s.pod_selector.as_ref()) {
        Some(s) => Selector::parse(s).map_err(|e| sel_err(format!("podSelector: {e}")))?,
        None => Selector::default(),
    };
    // The API server defaults policyTypes; a policy read without them is defaulted the same way.
    let (ingress_on, egress_on) = match spec.and_then(|s| s.policy_types.as_ref()) {
        Some(t) => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        None => (
            true,
            spec.and_then(|s| s.egress.as_ref())
                .is_some_and(|e| !e.is_empty()),
        ),
    };
    let parse_rules = |ingress: bool| {
        rules_as_written(p, ingress)
            .into_iter()
            .map(|(peers, ports)| parse_rule(&key, peers, ports))
            .collect::<Result<Vec<_>, _>>()
    };
    let ingress = ingress_on.then(|| parse_rules(true)).transpose()?;
    let egress = egress_on.then(|| parse_rules(false)).transpose()?;
    Ok(Parsed {
        namespace: policy_namespace(p),
        key,
        select,
        ingress,
        egress,
    })
}

fn parse_rule(
    key: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
) -> Result<ParsedRule, PolicyError> {
    let invalid = |what: String| PolicyError::Invalid {
        policy: key.to_string(),
        what,
    };
    let sel = |s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector, field: &str| {
        Selector::parse(s).map_err(|e| PolicyError::Selector {
            policy: key.to_string(),
            what: format!("{field}: {e}"),
        })
    };
    let peers = match peers.filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            v.iter()
                .map(|pp| {
                    if let Some(b) = &pp.ip_block {
                        let cidr = b
                            .cidr
                            .parse::<IpNet>()
                            .map_err(|e| invalid(format!("ipBlock cidr {:?}: {e}", b.cidr)))?;
                        let except = b
                            .except
                            .iter()
                            .flatten()
                            .map(|e| {
                                e.parse::<IpNet>()
                                    .map_err(|err| invalid(format!("ipBlock except {e:?}: {err}")))
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        return Ok(ParsedPeer::Block(cidr, except));
                    }
                    if pp.namespace_selector.is_none() && pp.pod_selector.is_none() {
                        return Err(invalid(
                            "a peer sets none of podSelector, namespaceSelector, ipBlock".into(),
                        ));
                    }
                    Ok(ParsedPeer::Pods {
                        namespaces: pp
                            .namespace_selector
                            .as_ref()
                            .map(|s| sel(s, "namespaceSelector"))
                            .transpose()?,
                        pods: pp
                            .pod_selector
                            .as_ref()
                            .map(|s| sel(s, "podSelector"))
                            .transpose()?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let ports = match ports.filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            v.iter()
                .map(|pt| {
                    let proto = Proto::parse(pt.protocol.as_deref()).ok_or_else(|| {
                        invalid(format!(
                            "protocol {:?} (TCP, UDP or SCTP)",
                            pt.protocol.as_deref().unwrap_or_default()
                        ))
                    })?;
                    match &pt.port {
                        None => Ok(ParsedPort::All(proto)),
                        Some(IntOrString::Int(n)) => {
                            let lo = u16::try_from(*n)
                                .map_err(|_| invalid(format!("port {n} is not a port number")))?;
                            let hi = match pt.end_port {
                                None => lo,
                                Some(e) => {
                                    u16::try_from(e).ok().filter(|e| *e >= lo).ok_or_else(|| {
                                        invalid(format!(
                                            "endPort {e} is below port {lo} or not a port"
                                        ))
                                    })?
                                }
                            };
                            Ok(ParsedPort::Range(proto, lo, hi))
                        }
                        Some(IntOrString::String(name)) => {
                            if pt.end_port.is_some() {
                                return Err(invalid(format!(
                                    "endPort with the named port {name:?} (a range needs a number)"
                                )));
                            }
                            Ok(ParsedPort::Named(proto, name.clone()))
                        }
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(ParsedRule { peers, ports })
}

fn resolve_peers(w: &World, policy_ns: &str, peers: Option<&[ParsedPeer]>) -> PeerMatch {
    let Some(peers) = peers else {
        return PeerMatch::Any;
    };
    let mut ips = BTreeSet::new();
    let mut blocks = Vec::new();
    for p in peers {
        match p {
            ParsedPeer::Block(c, ex) => blocks.push((*c, ex.clone())),
            ParsedPeer::Pods { namespaces, pods } => {
                for pod in w.pods.iter().filter(|p| !p.host_network) {
                    let ns_ok = match namespaces {
                        None => pod.namespace == policy_ns,
                        Some(sel) => sel.matches(
                            &w.namespace(&pod.namespace)
                                .map(|n| n.labels.clone())
                                .unwrap_or_default(),
                        ),
                    };
                    if ns_ok && pods.as_ref().is_none_or(|s| s.matches(&pod.labels)) {
                        ips.extend(pod.ips.iter().copied());
                    }
                }
            }
        }
    }
    PeerMatch::Set { ips, blocks }
}

/// A port entry for the pod it applies to: ingress names resolve against the selected pod now (a name it
/// does not have matches nothing, so the entry is dropped); egress names stay names.
fn resolve_port(p: &ParsedPort, ingress_pod: Option<&Pod>) -> Option<PortMatch> {
    match p {
        ParsedPort::All(proto) => Some(PortMatch::AllOf(*proto)),
        ParsedPort::Range(proto, lo, hi) => Some(PortMatch::Range {
            proto: *proto,
            lo: *lo,
            hi: *hi,
        }),
        ParsedPort::Named(proto, name) => match ingress_pod {
            Some(pod) => pod.named_port(name, *proto).map(|n| PortMatch::Range {
                proto: *proto,
                lo: n,
                hi: n,
            }),
            None => Some(PortMatch::Named {
                proto: *proto,
                name: name.clone(),
            }),
        },
    }
}
