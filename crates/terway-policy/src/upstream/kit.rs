//! Small constructors the scenario files share, so that each scenario reads as the policy it states.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Scenario, Suite};
use crate::model::{Proto, World};

/// The namespace-name label the API server puts on every namespace; upstream selects namespaces by it.
pub(super) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

// The (port, protocol) pairs upstream probes.
pub(super) const TCP_80: (u16, Proto) = (80, Proto::Tcp);
pub(super) const TCP_81: (u16, Proto) = (81, Proto::Tcp);
pub(super) const UDP_80: (u16, Proto) = (80, Proto::Udp);
pub(super) const UDP_81: (u16, Proto) = (81, Proto::Udp);
pub(super) const SCTP_80: (u16, Proto) = (80, Proto::Sctp);
pub(super) const SCTP_81: (u16, Proto) = (81, Proto::Sctp);

/// One upstream test: where it sits and which pods it starts; its steps become scenarios.
pub(super) struct Test<'m> {
    pub model: &'m World,
    pub suite: Suite,
    pub it: &'static str,
    pub pods: &'static [&'static str],
}

impl Test<'_> {
    /// The test as one scenario (it checks connectivity once, after creating every policy).
    pub fn once(&self, probes: &[(u16, Proto)], policies: Vec<NetworkPolicy>) -> Scenario {
        self.build(None, probes, policies)
    }

    /// Step `n` of a test that checks connectivity more than once; `what` says what changed before it.
    pub fn step(
        &self,
        n: u8,
        what: &str,
        probes: &[(u16, Proto)],
        policies: Vec<NetworkPolicy>,
    ) -> Scenario {
        self.build(Some((n, what)), probes, policies)
    }

    fn build(
        &self,
        step: Option<(u8, &str)>,
        probes: &[(u16, Proto)],
        policies: Vec<NetworkPolicy>,
    ) -> Scenario {
        let title = format!("{} {}", self.suite.context(), self.it);
        let name = match step {
            None => title,
            Some((n, what)) => format!("{title} (step {n}: {what})"),
        };
        let mut world = self.model.clone();
        world.policies = policies;
        Scenario {
            name,
            suite: self.suite,
            it: self.it,
            step: step.map_or(1, |(n, _)| n),
            probes: probes.to_vec(),
            upstream_pods: self.pods,
            world,
        }
    }
}

/// Put `key=value` on pod `ns/pod` of `w` (upstream relabels a running pod mid-test).
pub(super) fn label_pod(w: &mut World, ns: &str, pod: &str, key: &str, value: &str) {
    if let Some(p) = w
        .pods
        .iter_mut()
        .find(|p| p.namespace == ns && p.name == pod)
    {
        p.labels.insert(key.into(), value.into());
    }
}

/// Put `key=value` on namespace `ns` of `w`.
pub(super) fn label_namespace(w: &mut World, ns: &str, key: &str, value: &str) {
    if let Some(n) = w.namespaces.iter_mut().find(|n| n.name == ns) {
        n.labels.insert(key.into(), value.into());
    }
}

/// The first address of pod `ns/pod` in the model the caller passed (the lab's real one, if it has it).
fn address(model: &World, ns: &str, pod: &str) -> Option<IpAddr> {
    model.pod(ns, pod).and_then(|p| p.ips.first().copied())
}

/// The pod's address as a single-host block (/32 or /128), as upstream builds it from the pod's status.
pub(super) fn host_block(model: &World, ns: &str, pod: &str) -> Option<String> {
    address(model, ns, pod).map(|ip| IpNet::from(ip).to_string())
}

/// The /4 that holds the pod's address: upstream's "large block around the pod", whatever the family.
pub(super) fn wide_block(model: &World, ns: &str, pod: &str) -> Option<String> {
    let ip = address(model, ns, pod)?;
    IpNet::new(ip, 4).ok().map(|n| n.trunc().to_string())
}

/// A `matchLabels` selector; with no pairs it is upstream's `{matchLabels: {}}`, which selects everything.
pub(super) fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        match_expressions: None,
    }
}

/// The selector with neither field set (upstream's `metav1.LabelSelector{}`).
pub(super) fn everything() -> LabelSelector {
    LabelSelector::default()
}

/// A one-requirement `matchExpressions` selector.
pub(super) fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }]),
    }
}

/// Namespaces selected by their name label.
pub(super) fn ns_named(name: &str) -> LabelSelector {
    labels(&[(NAME_LABEL, name)])
}

/// Pods of the policy's own namespace matching `sel`.
pub(super) fn pods(sel: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(sel),
        ..Default::default()
    }
}

/// Every pod of the namespaces matching `sel`.
pub(super) fn namespaces(sel: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(sel),
        ..Default::default()
    }
}

/// Both selectors in one peer: pods matching `pod` in namespaces matching `ns`.
pub(super) fn pods_in(ns: LabelSelector, pod: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(ns),
        pod_selector: Some(pod),
        ..Default::default()
    }
}

/// Addresses in `cidr` but in none of `except`.
pub(super) fn block(cidr: String, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr,
            except: (!except.is_empty()).then_some(except),
        }),
        ..Default::default()
    }
}

/// A numbered port; `proto` `None` leaves the field out (the API reads TCP).
pub(super) fn port(n: i32, proto: Option<&str>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(n)),
        protocol: proto.map(String::from),
        end_port: None,
    }
}

/// A named container port.
pub(super) fn named(name: &str, proto: Option<&str>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::String(name.into())),
        protocol: proto.map(String::from),
        end_port: None,
    }
}

/// Every port of one protocol.
pub(super) fn any_port(proto: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: None,
        protocol: Some(proto.into()),
        end_port: None,
    }
}

/// An ingress rule; an empty list leaves its field unset, as upstream's rules do (unset admits all).
pub(super) fn from(
    peers: Vec<NetworkPolicyPeer>,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: (!peers.is_empty()).then_some(peers),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

/// An egress rule, likewise.
pub(super) fn to(
    peers: Vec<NetworkPolicyPeer>,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: (!peers.is_empty()).then_some(peers),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

/// A policy in `ns` selecting `target`. Each direction given (even with no rules: deny) is named in
/// `policyTypes`, as every upstream policy names its directions explicitly.
pub(super) fn policy(
    ns: &str,
    name: &str,
    target: LabelSelector,
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let mut types = Vec::new();
    if ingress.is_some() {
        types.push("Ingress".to_string());
    }
    if egress.is_some() {
        types.push("Egress".to_string());
    }
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(target),
            ingress,
            egress,
            policy_types: Some(types),
        }),
    }
}
