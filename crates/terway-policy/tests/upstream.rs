//! The upstream e2e scenarios ([`terway_policy::upstream`]): the compiler must agree with the oracle on
//! every probe of every step, and a few connections per step are stated here outright — what the upstream
//! test expects — so that a misreading the compiler and the oracle share still fails.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use terway_policy::gen::{self, OUTSIDE};
use terway_policy::oracle::{self, endpoint};
use terway_policy::upstream::{scenarios, Scenario, Suite};
use terway_policy::{compile, Compiled, Proto, World};

/// An address outside an IPv6 model.
const OUTSIDE_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));

fn outside(w: &World) -> IpAddr {
    match w.pods.first().and_then(|p| p.ips.first()) {
        Some(IpAddr::V6(_)) => OUTSIDE_V6,
        _ => OUTSIDE,
    }
}

/// Every pod address of `w` and the outside one.
fn addresses(w: &World) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = w
        .pods
        .iter()
        .filter_map(|p| p.ips.first().copied())
        .collect();
    v.push(outside(w));
    v
}

/// The first probe on which the compiled rules and the oracle part, described.
fn disagreement(w: &World, c: &Compiled) -> Option<String> {
    let ips = addresses(w);
    for &src in &ips {
        for &dst in ips.iter().filter(|d| **d != src) {
            for port in [80u16, 81] {
                for proto in Proto::ALL {
                    let want = oracle::allowed(w, endpoint(w, src), endpoint(w, dst), port, proto);
                    let got = c.allows(w, src, dst, port, proto);
                    if want != got {
                        return Some(format!(
                            "{src} -> {dst} {port}/{proto}: oracle {want}, compiled {got}"
                        ));
                    }
                }
            }
        }
    }
    None
}

/// `ns/pod` (or `out`) as an address of `w`.
fn addr(w: &World, who: &str) -> IpAddr {
    if who == "out" {
        return outside(w);
    }
    let (ns, pod) = who.split_once('/').expect("ns/pod");
    w.pod(ns, pod)
        .and_then(|p| p.ips.first().copied())
        .unwrap_or_else(|| panic!("no address for {who}"))
}

type Check = (&'static str, &'static str, u16, Proto, bool);

const T: Suite = Suite::Tcp;
const U: Suite = Suite::Udp;
const S: Suite = Suite::Sctp;
const TCP: Proto = Proto::Tcp;
const UDP: Proto = Proto::Udp;
const SCTP: Proto = Proto::Sctp;

/// What each step of each upstream test expects, a few connections at a time: (suite, title, step, checks).
#[rustfmt::skip]
const CHECKS: &[(Suite, &str, u8, &[Check])] = &[
    (T, "should support a 'default-deny-ingress' policy", 1, &[
        ("y/b", "x/a", 80, TCP, false), ("x/b", "x/a", 80, TCP, false),
        ("x/a", "y/b", 80, TCP, true), ("y/a", "y/b", 80, TCP, true)]),
    (T, "should support a 'default-deny-all' policy", 1, &[
        ("y/a", "x/a", 80, TCP, false), ("x/a", "y/a", 80, TCP, false),
        ("x/a", "x/b", 80, TCP, false), ("x/a", "out", 80, TCP, false), ("y/a", "y/b", 80, TCP, true)]),
    (T, "should enforce policy to allow traffic from pods within server namespace based on PodSelector", 1, &[
        ("x/b", "x/a", 80, TCP, true), ("x/c", "x/a", 80, TCP, false),
        ("y/a", "x/a", 80, TCP, false), ("y/a", "x/b", 80, TCP, true)]),
    (T, "should enforce policy to allow ingress traffic for a target", 1, &[
        ("y/a", "x/a", 80, TCP, true), ("z/c", "x/a", 80, TCP, true),
        ("y/a", "x/b", 80, TCP, false), ("x/a", "x/b", 80, TCP, false)]),
    (T, "should enforce policy to allow ingress traffic from pods in all namespaces", 1, &[
        ("x/b", "x/a", 80, TCP, true), ("y/a", "x/a", 80, TCP, true),
        ("z/a", "x/a", 80, TCP, true), ("out", "x/a", 80, TCP, false)]),
    (T, "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", 1, &[
        ("y/a", "x/a", 80, TCP, true), ("x/b", "x/a", 80, TCP, false),
        ("z/a", "x/a", 80, TCP, false), ("z/a", "x/b", 80, TCP, true)]),
    (T, "should enforce policy based on PodSelector with MatchExpressions", 1, &[
        ("x/b", "x/a", 80, TCP, true), ("y/a", "x/a", 80, TCP, false), ("y/b", "x/a", 80, TCP, false)]),
    (T, "should enforce policy based on NamespaceSelector with MatchExpressions", 1, &[
        ("y/a", "x/a", 80, TCP, true), ("x/b", "x/a", 80, TCP, false), ("z/a", "x/a", 80, TCP, false)]),
    (T, "should enforce policy based on PodSelector or NamespaceSelector", 1, &[
        ("x/b", "x/a", 80, TCP, true), ("x/c", "x/a", 80, TCP, false),
        ("y/a", "x/a", 80, TCP, true), ("z/c", "x/a", 80, TCP, true)]),
    (T, "should enforce policy based on PodSelector and NamespaceSelector", 1, &[
        ("y/b", "x/a", 80, TCP, true), ("z/b", "x/a", 80, TCP, true),
        ("x/b", "x/a", 80, TCP, false), ("y/a", "x/a", 80, TCP, false)]),
    (T, "should enforce policy based on Multiple PodSelectors and NamespaceSelectors", 1, &[
        ("y/b", "x/a", 80, TCP, true), ("y/c", "x/a", 80, TCP, true), ("z/c", "x/a", 80, TCP, true),
        ("y/a", "x/a", 80, TCP, false), ("x/b", "x/a", 80, TCP, false)]),
    (T, "should enforce policy based on any PodSelectors", 1, &[
        ("x/b", "x/a", 80, TCP, true), ("x/c", "x/a", 80, TCP, true), ("y/b", "x/a", 80, TCP, false)]),
    (T, "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", 1, &[
        ("y/a", "x/a", 80, TCP, true), ("y/b", "x/a", 80, TCP, false),
        ("z/a", "x/a", 80, TCP, false), ("x/b", "x/a", 80, TCP, false)]),
    (T, "should enforce policy based on Ports", 1, &[
        ("y/a", "x/a", 81, TCP, true), ("y/b", "x/a", 81, TCP, true), ("y/a", "x/a", 80, TCP, false),
        ("x/b", "x/a", 81, TCP, false), ("z/a", "x/a", 81, TCP, false), ("y/a", "x/a", 81, UDP, false)]),
    (T, "should enforce multiple, stacked policies with overlapping podSelectors", 1, &[
        ("y/a", "x/a", 81, TCP, true), ("y/a", "x/a", 80, TCP, false), ("z/a", "x/a", 81, TCP, false)]),
    (T, "should enforce multiple, stacked policies with overlapping podSelectors", 2, &[
        ("y/a", "x/a", 80, TCP, true), ("y/b", "x/a", 81, TCP, true),
        ("z/a", "x/a", 80, TCP, false), ("x/b", "x/a", 80, TCP, false)]),
    (T, "should support allow-all policy", 1, &[
        ("y/a", "x/a", 80, TCP, true), ("y/a", "x/a", 81, TCP, true),
        ("x/b", "x/a", 81, TCP, true), ("out", "x/a", 80, TCP, true), ("y/a", "x/a", 81, UDP, true)]),
    (T, "should allow ingress access on one named port", 1, &[
        ("y/a", "x/a", 81, TCP, true), ("x/b", "x/a", 81, TCP, true), ("y/a", "x/a", 80, TCP, false),
        ("x/a", "x/b", 80, TCP, false), ("y/a", "x/a", 81, UDP, false)]),
    (T, "should allow ingress access from namespace on one named port", 1, &[
        ("y/a", "x/a", 80, TCP, true), ("y/a", "x/a", 81, TCP, false),
        ("z/a", "x/a", 80, TCP, false), ("x/b", "x/a", 80, TCP, false)]),
    (T, "should allow egress access on one named port", 1, &[
        ("x/a", "y/a", 80, TCP, true), ("x/b", "x/a", 80, TCP, true), ("x/a", "y/a", 81, TCP, false),
        ("x/a", "y/a", 80, UDP, false), ("y/a", "x/a", 81, TCP, true)]),
    (T, "should enforce updated policy", 1, &[("y/a", "x/a", 81, TCP, true), ("x/a", "y/a", 81, TCP, true)]),
    (T, "should enforce updated policy", 2, &[("y/a", "x/a", 81, TCP, false), ("x/a", "y/a", 81, TCP, true)]),
    (T, "should allow ingress access from updated namespace", 1, &[
        ("y/a", "x/a", 80, TCP, false), ("y/a", "x/b", 80, TCP, true)]),
    (T, "should allow ingress access from updated namespace", 2, &[
        ("y/a", "x/a", 80, TCP, true), ("y/c", "x/a", 80, TCP, true),
        ("z/a", "x/a", 80, TCP, false), ("x/b", "x/a", 80, TCP, false)]),
    (T, "should allow ingress access from updated pod", 1, &[("x/b", "x/a", 80, TCP, false)]),
    (T, "should allow ingress access from updated pod", 2, &[
        ("x/b", "x/a", 80, TCP, true), ("x/c", "x/a", 80, TCP, false), ("y/b", "x/a", 80, TCP, false)]),
    (T, "should deny ingress from pods on other namespaces", 1, &[
        ("x/b", "x/a", 80, TCP, true), ("y/a", "x/a", 80, TCP, false),
        ("z/a", "x/b", 80, TCP, false), ("x/a", "y/a", 80, TCP, true)]),
    (T, "should deny ingress access to updated pod", 1, &[("y/a", "x/a", 80, TCP, true)]),
    (T, "should deny ingress access to updated pod", 2, &[
        ("y/a", "x/a", 80, TCP, false), ("y/a", "x/b", 80, TCP, true), ("x/a", "y/a", 80, TCP, true)]),
    (T, "should deny egress from pods based on PodSelector", 1, &[
        ("x/a", "y/a", 80, TCP, false), ("x/a", "x/b", 80, TCP, false),
        ("x/b", "x/a", 80, TCP, true), ("y/a", "x/a", 80, TCP, true)]),
    (T, "should deny egress from all pods in a namespace", 1, &[
        ("x/a", "x/b", 80, TCP, false), ("x/b", "y/a", 80, TCP, false), ("y/a", "x/a", 80, TCP, true)]),
    (T, "should work with Ingress, Egress specified together", 1, &[
        ("x/b", "x/a", 80, TCP, true), ("x/b", "x/a", 81, TCP, true), ("x/c", "x/a", 80, TCP, false),
        ("y/a", "x/a", 80, TCP, false), ("x/a", "y/a", 80, TCP, true), ("x/a", "y/a", 81, TCP, false)]),
    (T, "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", 1, &[
        ("x/a", "y/a", 80, TCP, true), ("x/a", "y/b", 80, TCP, false), ("x/b", "y/a", 80, TCP, false),
        ("x/b", "y/b", 80, TCP, false), ("y/c", "y/a", 80, TCP, false), ("x/a", "x/b", 80, TCP, false)]),
    (T, "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", 1, &[
        ("x/a", "y/a", 80, TCP, true), ("x/a", "y/b", 80, TCP, false),
        ("x/a", "x/b", 80, TCP, false), ("x/b", "y/b", 80, TCP, true)]),
    (T, "should enforce ingress policy allowing any port traffic to a server on a specific protocol", 1, &[
        ("y/a", "x/a", 80, TCP, true), ("y/a", "x/a", 81, TCP, true),
        ("y/a", "x/a", 80, UDP, false), ("y/a", "x/a", 80, SCTP, false)]),
    (T, "should enforce multiple ingress policies with ingress allow-all policy taking precedence", 1, &[
        ("y/a", "x/a", 81, TCP, false), ("y/a", "x/a", 80, TCP, true)]),
    (T, "should enforce multiple ingress policies with ingress allow-all policy taking precedence", 2, &[
        ("y/a", "x/a", 81, TCP, true), ("x/b", "x/a", 81, TCP, true)]),
    (T, "should enforce multiple egress policies with egress allow-all policy taking precedence", 1, &[
        ("x/a", "y/a", 81, TCP, false), ("x/a", "y/a", 80, TCP, true)]),
    (T, "should enforce multiple egress policies with egress allow-all policy taking precedence", 2, &[
        ("x/a", "y/a", 81, TCP, true), ("x/b", "out", 81, TCP, true)]),
    (T, "should stop enforcing policies after they are deleted", 1, &[
        ("x/a", "y/a", 80, TCP, false), ("y/a", "x/a", 80, TCP, false)]),
    (T, "should stop enforcing policies after they are deleted", 2, &[
        ("x/a", "y/a", 80, TCP, true), ("y/a", "x/a", 80, TCP, true)]),
    (T, "should allow egress access to server in CIDR block", 1, &[
        ("x/a", "y/b", 80, TCP, true), ("x/a", "y/a", 80, TCP, false), ("x/a", "x/b", 80, TCP, false)]),
    (T, "should enforce except clause while egress access to server in CIDR block", 1, &[
        ("x/a", "x/b", 80, TCP, false), ("x/a", "x/c", 80, TCP, true), ("x/a", "out", 80, TCP, false)]),
    (T, "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", 1, &[
        ("x/a", "x/b", 80, TCP, false), ("x/a", "x/c", 80, TCP, true)]),
    (T, "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", 2, &[
        ("x/a", "x/b", 80, TCP, true), ("x/a", "x/c", 80, TCP, false), ("x/a", "y/a", 80, TCP, false)]),
    (T, "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", 1, &[
        ("x/a", "x/b", 80, TCP, true), ("x/b", "x/a", 80, TCP, true), ("y/a", "x/a", 80, TCP, true)]),
    (T, "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", 2, &[
        ("x/b", "x/a", 80, TCP, false), ("y/a", "x/a", 80, TCP, false),
        ("x/a", "x/b", 80, TCP, true), ("x/a", "y/a", 80, TCP, true)]),
    (T, "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", 1, &[
        ("y/a", "x/a", 81, TCP, false), ("y/a", "x/a", 81, UDP, false),
        ("y/a", "x/a", 81, SCTP, true), ("y/a", "x/b", 81, SCTP, false)]),
    (T, "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP", 1, &[
        ("y/a", "x/a", 81, TCP, false), ("y/a", "x/a", 80, TCP, false), ("y/a", "x/a", 80, SCTP, true)]),
    (T, "should not allow access by TCP when a policy specifies only UDP", 1, &[
        ("y/a", "x/a", 81, TCP, false), ("y/a", "x/a", 81, UDP, true), ("y/a", "x/a", 80, UDP, false)]),
    (T, "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label", 1, &[
        ("y/a", "x/a", 80, TCP, true), ("x/b", "x/a", 80, TCP, false), ("z/a", "x/a", 80, TCP, false)]),
    (T, "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label", 1, &[
        ("x/a", "y/a", 80, TCP, false), ("x/a", "y/c", 80, TCP, false), ("x/a", "z/a", 80, TCP, true),
        ("x/a", "x/b", 80, TCP, true), ("x/a", "out", 80, TCP, false), ("y/a", "x/a", 80, TCP, true)]),
    (U, "should support a 'default-deny-ingress' policy", 1, &[
        ("y/a", "x/a", 80, UDP, false), ("x/b", "x/a", 80, UDP, false), ("x/a", "y/b", 80, UDP, true)]),
    (U, "should enforce policy based on Ports", 1, &[
        ("y/a", "x/a", 81, UDP, true), ("y/a", "x/a", 81, TCP, false),
        ("z/a", "x/a", 81, UDP, false), ("x/b", "x/a", 81, UDP, false)]),
    (U, "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", 1, &[
        ("y/a", "x/a", 80, UDP, true), ("x/b", "x/a", 80, UDP, false), ("y/b", "x/a", 80, UDP, false)]),
    (S, "should support a 'default-deny-ingress' policy", 1, &[
        ("y/a", "x/a", 80, SCTP, false), ("x/b", "x/a", 80, SCTP, false), ("x/a", "y/b", 80, SCTP, true)]),
    (S, "should enforce policy based on Ports", 1, &[
        ("y/a", "x/a", 81, SCTP, true), ("y/a", "x/a", 81, UDP, false),
        ("z/a", "x/a", 81, SCTP, false), ("x/b", "x/a", 81, SCTP, false)]),
    (S, "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", 1, &[
        ("y/a", "x/a", 80, SCTP, true), ("x/b", "x/a", 80, SCTP, false), ("y/b", "x/a", 80, SCTP, false)]),
];

fn checks_of(s: &Scenario) -> &'static [Check] {
    CHECKS
        .iter()
        .find(|(suite, it, step, _)| *suite == s.suite && *it == s.it && *step == s.step)
        .map(|c| c.3)
        .unwrap_or_else(|| panic!("no spot checks for {}", s.name))
}

/// Agreement on every probe, then the spot checks, for every scenario over `model`; the counts.
fn run(model: &World) -> (usize, usize) {
    let all = scenarios(model);
    let mut checked = 0;
    for s in &all {
        let w = &s.world;
        let c = compile(w).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        if let Some(d) = disagreement(w, &c) {
            panic!("{}: {d}", s.name);
        }
        for &(src, dst, port, proto, want) in checks_of(s) {
            let (a, b) = (addr(w, src), addr(w, dst));
            let got = oracle::allowed(w, endpoint(w, a), endpoint(w, b), port, proto);
            assert_eq!(
                c.allows(w, a, b, port, proto),
                got,
                "{}: {src} -> {dst}",
                s.name
            );
            assert_eq!(got, want, "{}: {src} -> {dst} {port}/{proto}", s.name);
            checked += 1;
        }
    }
    (all.len(), checked)
}

/// The model with every pod renumbered by `ip(namespace index, pod index)`.
fn renumbered(ip: impl Fn(usize, usize) -> IpAddr) -> World {
    let mut w = gen::model();
    for p in &mut w.pods {
        let n = gen::NAMESPACES
            .iter()
            .position(|x| *x == p.namespace)
            .expect("namespace");
        let i = gen::PODS.iter().position(|x| *x == p.name).expect("pod");
        p.ips = vec![ip(n, i)];
    }
    w
}

#[test]
fn every_step_of_every_upstream_test_agrees_and_meets_its_expectations() {
    let (scenarios, checked) = run(&gen::model());
    assert_eq!(scenarios, 58, "48 tests, 10 of them in two steps");
    assert!(checked >= 200, "{checked} spot checks");
}

#[test]
fn every_spot_check_belongs_to_a_scenario() {
    let all = scenarios(&gen::model());
    for (suite, it, step, _) in CHECKS {
        assert!(
            all.iter()
                .any(|s| s.suite == *suite && s.it == *it && s.step == *step),
            "checks for {it} step {step} match no scenario"
        );
    }
}

#[test]
fn address_blocks_follow_the_addresses_the_pods_really_have() {
    let v4 = renumbered(|n, i| IpAddr::V4(Ipv4Addr::new(172, 16, n as u8, i as u8 + 20)));
    let v6 =
        renumbered(|n, i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, n as u16, i as u16 + 1)));
    for model in [v4, v6] {
        let (scenarios, _) = run(&model);
        assert_eq!(scenarios, 58);
        for s in terway_policy::upstream::scenarios(&model) {
            let text = format!("{:?}", s.world.policies);
            assert!(
                !text.contains("10.100."),
                "{} keeps the default model's addresses",
                s.name
            );
        }
    }
}
