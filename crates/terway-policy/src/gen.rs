//! Cases: the cyclonus model (namespaces x, y, z × pods a, b, c, each serving 80 and 81 over TCP and UDP)
//! and random NetworkPolicies over it — selectors of every operator, namespaces, ipBlocks with exceptions,
//! numbered, ranged and named ports, TCP/UDP/SCTP, every policyTypes form, default-deny, several policies
//! at once. Deterministic per seed, so a failing case can be printed and replayed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{NamedPort, Namespace, Pod, Proto, World};

/// The model's namespaces.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The model's pods (in every namespace).
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// The ports every pod serves.
pub const PORTS: [u16; 2] = [80, 81];
/// An address outside the cluster, for probes from and to it.
pub const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 7, 7));

/// The address of pod `pod` (index) in namespace `ns` (index).
pub fn pod_ip(ns: usize, pod: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 100, ns as u8, pod as u8 + 10))
}

/// The cyclonus world without policies: `ns=<name>` on each namespace, `pod=<name>` on each pod, named
/// ports `serve-<port>-<tcp|udp>`. Labels some objects lack, so that selectors meet absent keys: `env=prod`
/// on x and y (not z), `tier=web` on every a, `tier=db` on every b (none on c).
pub fn model() -> World {
    let mut w = World::default();
    for (ni, ns) in NAMESPACES.iter().enumerate() {
        let mut ns_labels = BTreeMap::from([
            ("ns".into(), ns.to_string()),
            ("kubernetes.io/metadata.name".into(), ns.to_string()),
        ]);
        if *ns != "z" {
            ns_labels.insert("env".into(), "prod".into());
        }
        w.namespaces.push(Namespace {
            name: ns.to_string(),
            labels: ns_labels,
        });
        for (pi, pod) in PODS.iter().enumerate() {
            let mut ports = Vec::new();
            for port in PORTS {
                for (proto, p) in [(Proto::Tcp, "tcp"), (Proto::Udp, "udp")] {
                    ports.push(NamedPort {
                        name: format!("serve-{port}-{p}"),
                        proto,
                        port,
                    });
                }
            }
            let mut labels = BTreeMap::from([("pod".into(), pod.to_string())]);
            match *pod {
                "a" => labels.insert("tier".into(), "web".into()),
                "b" => labels.insert("tier".into(), "db".into()),
                _ => None,
            };
            w.pods.push(Pod {
                namespace: ns.to_string(),
                name: pod.to_string(),
                labels,
                ips: vec![pod_ip(ni, pi)],
                ports,
                host_network: false,
            });
        }
    }
    w
}

/// A small deterministic generator (xorshift64*), so cases replay from their seed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }

    pub(crate) fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    pub(crate) fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A selector over `key` whose values come from `values`: every operator, and the empty selector.
fn selector(r: &mut Rng, key: &str, values: &[&str]) -> LabelSelector {
    let one = r.pick(values).to_string();
    let two = vec![one.clone(), r.pick(values).to_string()];
    let expr = |op: &str, vals: Option<Vec<String>>| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: vals,
        }]),
        match_labels: None,
    };
    match r.below(7) {
        0 => LabelSelector::default(),
        1 | 2 => LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_string(), one)])),
            match_expressions: None,
        },
        3 => expr("In", Some(two)),
        4 => expr("NotIn", Some(vec![one])),
        5 => expr("Exists", None),
        _ => expr("DoesNotExist", None),
    }
}

/// A selector over pod labels: by name or by the tier some pods lack.
pub(crate) fn pod_selector(r: &mut Rng) -> LabelSelector {
    if r.chance(60) {
        selector(r, "pod", &PODS)
    } else {
        selector(r, "tier", &["web", "db"])
    }
}

/// A selector over namespace labels: by name or by the env z lacks.
pub(crate) fn namespace_selector(r: &mut Rng) -> LabelSelector {
    if r.chance(60) {
        selector(r, "ns", &NAMESPACES)
    } else {
        selector(r, "env", &["prod", "dev"])
    }
}

fn peer(r: &mut Rng) -> NetworkPolicyPeer {
    match r.below(5) {
        0 => NetworkPolicyPeer {
            pod_selector: Some(pod_selector(r)),
            ..Default::default()
        },
        1 => NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector(r)),
            ..Default::default()
        },
        2 => NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector(r)),
            pod_selector: Some(pod_selector(r)),
            ..Default::default()
        },
        3 => {
            // A block over pod addresses (Terway #904: it must cover them), with or without an exception.
            let ns = r.below(NAMESPACES.len());
            let cidr = match r.below(3) {
                0 => "10.100.0.0/16".to_string(),
                1 => format!("10.100.{ns}.0/24"),
                _ => "0.0.0.0/0".to_string(),
            };
            let except = r.chance(50).then(|| {
                let pod = r.below(PODS.len());
                vec![format!("{}/32", pod_ip(ns, pod))]
            });
            NetworkPolicyPeer {
                ip_block: Some(IPBlock { cidr, except }),
                ..Default::default()
            }
        }
        _ => NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: "192.168.7.0/24".into(),
                except: None,
            }),
            ..Default::default()
        },
    }
}

fn port(r: &mut Rng) -> NetworkPolicyPort {
    let protocol = match r.below(5) {
        0 => None,
        1 | 2 => Some("TCP".to_string()),
        3 => Some("UDP".to_string()),
        _ => Some("SCTP".to_string()),
    };
    let (port, end_port) = match r.below(5) {
        0 => (None, None),
        1 => (Some(IntOrString::Int(i32::from(*r.pick(&PORTS)))), None),
        2 => (Some(IntOrString::Int(80)), Some(81)),
        3 => (
            Some(IntOrString::String(format!(
                "serve-{}-{}",
                r.pick(&PORTS),
                r.pick(&["tcp", "udp"])
            ))),
            None,
        ),
        _ => (Some(IntOrString::String("no-such-port".into())), None),
    };
    NetworkPolicyPort {
        end_port,
        port,
        protocol,
    }
}

fn list<T>(r: &mut Rng, max: usize, f: impl Fn(&mut Rng) -> T) -> Option<Vec<T>> {
    match r.below(4) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some((0..1 + r.below(max)).map(|_| f(r)).collect()),
    }
}

/// One random policy named `name` in a random namespace of the model.
pub fn policy(r: &mut Rng, name: &str) -> NetworkPolicy {
    let ns = r.pick(&NAMESPACES).to_string();
    let ingress = list(r, 2, |r| NetworkPolicyIngressRule {
        from: list(r, 2, peer),
        ports: list(r, 2, port),
    });
    let egress = list(r, 2, |r| NetworkPolicyEgressRule {
        to: list(r, 2, peer),
        ports: list(r, 2, port),
    });
    let policy_types = match r.below(4) {
        0 => None,
        1 => Some(strs(&["Ingress"])),
        2 => Some(strs(&["Egress"])),
        _ => Some(strs(&["Ingress", "Egress"])),
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector(r)),
            ingress,
            egress,
            policy_types,
        }),
    }
}

/// Case `seed`: the model with one to three random policies.
pub fn case(seed: u64) -> World {
    let mut r = Rng::new(seed);
    let mut w = model();
    let n = 1 + r.below(3);
    for i in 0..n {
        w.policies.push(policy(&mut r, &format!("p{i}")));
    }
    w
}
