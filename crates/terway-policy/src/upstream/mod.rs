//! The Kubernetes NetworkPolicy e2e suite (`test/e2e/network/netpol/network_policy.go`: 42 tests probing
//! TCP, 3 probing UDP, 3 probing SCTP) restated as worlds of the cyclonus model ([`crate::gen`]).
//!
//! Upstream runs the same model — namespaces x, y, z with pods a, b, c serving 80 and 81 — so each test
//! maps onto it directly: a test that checks connectivity once is one [`Scenario`]; one that checks it,
//! changes something (updates or adds a policy, relabels a pod or a namespace, deletes the policies) and
//! checks again is one scenario per check, each holding the whole world as it stands at that check.
//! Upstream starts only the pods a test needs; here every scenario has all nine (the others are extra
//! observers whose answers the oracle gives), and [`Scenario::upstream_pods`] lists the ones it started.
//! No upstream test needs a pod the model lacks.
//!
//! Address blocks are computed from the pod addresses of the model passed in, as upstream computes them
//! from the pods' status, so a lab can pass the addresses its pods really got.

mod kit;
mod other;
mod tcp_a;
mod tcp_b;

use crate::model::{Proto, World};

/// The upstream `Context` a test sits in; the three differ in the protocol they probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suite {
    /// The main suite (probes TCP, except where a test says otherwise).
    Tcp,
    /// The UDP suite.
    Udp,
    /// The SCTP suite (the lab probes TCP and UDP only; its scenarios are checked here, not there).
    Sctp,
}

impl Suite {
    /// The upstream `Context` text, which precedes the test title in the full test name.
    pub fn context(self) -> &'static str {
        match self {
            Suite::Tcp => "NetworkPolicy between server and client",
            Suite::Udp => "NetworkPolicy between server and client using UDP",
            Suite::Sctp => "NetworkPolicy between server and client using SCTP",
        }
    }
}

/// One check of one upstream test: the world at that moment and what upstream probes in it.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// `<context> <title>`, with ` (step N: …)` appended when the test checks more than once.
    pub name: String,
    /// The suite of the upstream test.
    pub suite: Suite,
    /// The upstream test's title (its `f.It` text).
    pub it: &'static str,
    /// Which check of the test this is, from 1.
    pub step: u8,
    /// The (port, protocol) pairs upstream probes at this check.
    pub probes: Vec<(u16, Proto)>,
    /// The pods upstream starts for the test (`ns/pod`); its expectations cover only these.
    pub upstream_pods: &'static [&'static str],
    /// The model with the labels and policies of this step.
    pub world: World,
}

/// Every upstream test, by suite and title, in upstream's order.
pub const TESTS: [(Suite, &str); 48] = [
    (Suite::Tcp, "should support a 'default-deny-ingress' policy"),
    (Suite::Tcp, "should support a 'default-deny-all' policy"),
    (Suite::Tcp, "should enforce policy to allow traffic from pods within server namespace based on PodSelector"),
    (Suite::Tcp, "should enforce policy to allow ingress traffic for a target"),
    (Suite::Tcp, "should enforce policy to allow ingress traffic from pods in all namespaces"),
    (Suite::Tcp, "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector"),
    (Suite::Tcp, "should enforce policy based on PodSelector with MatchExpressions"),
    (Suite::Tcp, "should enforce policy based on NamespaceSelector with MatchExpressions"),
    (Suite::Tcp, "should enforce policy based on PodSelector or NamespaceSelector"),
    (Suite::Tcp, "should enforce policy based on PodSelector and NamespaceSelector"),
    (Suite::Tcp, "should enforce policy based on Multiple PodSelectors and NamespaceSelectors"),
    (Suite::Tcp, "should enforce policy based on any PodSelectors"),
    (Suite::Tcp, "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector"),
    (Suite::Tcp, "should enforce policy based on Ports"),
    (Suite::Tcp, "should enforce multiple, stacked policies with overlapping podSelectors"),
    (Suite::Tcp, "should support allow-all policy"),
    (Suite::Tcp, "should allow ingress access on one named port"),
    (Suite::Tcp, "should allow ingress access from namespace on one named port"),
    (Suite::Tcp, "should allow egress access on one named port"),
    (Suite::Tcp, "should enforce updated policy"),
    (Suite::Tcp, "should allow ingress access from updated namespace"),
    (Suite::Tcp, "should allow ingress access from updated pod"),
    (Suite::Tcp, "should deny ingress from pods on other namespaces"),
    (Suite::Tcp, "should deny ingress access to updated pod"),
    (Suite::Tcp, "should deny egress from pods based on PodSelector"),
    (Suite::Tcp, "should deny egress from all pods in a namespace"),
    (Suite::Tcp, "should work with Ingress, Egress specified together"),
    (Suite::Tcp, "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)"),
    (Suite::Tcp, "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector"),
    (Suite::Tcp, "should enforce ingress policy allowing any port traffic to a server on a specific protocol"),
    (Suite::Tcp, "should enforce multiple ingress policies with ingress allow-all policy taking precedence"),
    (Suite::Tcp, "should enforce multiple egress policies with egress allow-all policy taking precedence"),
    (Suite::Tcp, "should stop enforcing policies after they are deleted"),
    (Suite::Tcp, "should allow egress access to server in CIDR block"),
    (Suite::Tcp, "should enforce except clause while egress access to server in CIDR block"),
    (Suite::Tcp, "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"),
    (Suite::Tcp, "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector"),
    (Suite::Tcp, "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP"),
    (Suite::Tcp, "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP"),
    (Suite::Tcp, "should not allow access by TCP when a policy specifies only UDP"),
    (Suite::Tcp, "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label"),
    (Suite::Tcp, "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label"),
    (Suite::Udp, "should support a 'default-deny-ingress' policy"),
    (Suite::Udp, "should enforce policy based on Ports"),
    (Suite::Udp, "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector"),
    (Suite::Sctp, "should support a 'default-deny-ingress' policy"),
    (Suite::Sctp, "should enforce policy based on Ports"),
    (Suite::Sctp, "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector"),
];

/// Every step of every upstream test over `model` (normally [`crate::gen::model`], perhaps with the
/// lab's pod addresses). A test whose address block needs a pod the model gives no address is left out,
/// since its block cannot be computed.
pub fn scenarios(model: &World) -> Vec<Scenario> {
    let mut out = Vec::new();
    tcp_a::push(model, &mut out);
    tcp_b::push(model, &mut out);
    other::push(model, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_upstream_test_has_a_scenario_and_no_scenario_is_unnamed() {
        let all = scenarios(&crate::gen::model());
        for (suite, it) in TESTS {
            assert!(
                all.iter().any(|s| s.suite == suite && s.it == it),
                "no scenario for {} {it}",
                suite.context()
            );
        }
        for s in &all {
            assert!(
                TESTS.contains(&(s.suite, s.it)),
                "scenario {} is no upstream test",
                s.name
            );
            assert!(s
                .name
                .starts_with(&format!("{} {}", s.suite.context(), s.it)));
            assert!(
                !s.probes.is_empty() && !s.upstream_pods.is_empty(),
                "{}",
                s.name
            );
        }
        let names: BTreeSet<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), all.len(), "scenario names are unique");
        let distinct: BTreeSet<_> = TESTS.iter().collect();
        assert_eq!(distinct.len(), TESTS.len(), "titles are listed once");
    }

    #[test]
    fn steps_are_numbered_from_one_without_gaps() {
        let all = scenarios(&crate::gen::model());
        for (suite, it) in TESTS {
            let steps: Vec<u8> = all
                .iter()
                .filter(|s| s.suite == suite && s.it == it)
                .map(|s| s.step)
                .collect();
            let want: Vec<u8> = (1..=steps.len() as u8).collect();
            assert_eq!(steps, want, "{it}");
        }
    }

    #[test]
    fn policy_names_are_unique_within_a_scenario_and_namespaced() {
        for s in scenarios(&crate::gen::model()) {
            let keys: BTreeSet<String> = s
                .world
                .policies
                .iter()
                .map(crate::model::policy_key)
                .collect();
            assert_eq!(keys.len(), s.world.policies.len(), "{}", s.name);
            assert!(s
                .world
                .policies
                .iter()
                .all(|p| p.metadata.namespace.is_some()));
        }
    }

    #[test]
    fn a_model_without_addresses_loses_only_the_block_tests() {
        let mut bare = crate::gen::model();
        for p in &mut bare.pods {
            p.ips.clear();
        }
        let full = scenarios(&crate::gen::model()).len();
        let some = scenarios(&bare);
        assert_eq!(
            full - some.len(),
            4,
            "three block tests, one of them with two steps"
        );
        assert!(some.iter().all(|s| !s.it.contains("CIDR")));
    }
}
