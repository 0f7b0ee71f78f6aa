//! ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) enforced by terwayd in the Kubernetes lab, with
//! NetworkPolicy between its two tiers. The cyclonus model runs as real pods on two nodes; each scenario is
//! applied as the upstream YAML a user writes, and every pod-to-pod probe (ports 80 and 81, TCP and UDP,
//! from inside the pods' network namespaces) must equal the oracle evaluated on the objects as the API
//! server stored them. Each scenario also pins the probes it is about — the oracle must say what the API
//! says, so that the lab cannot agree with a misreading:
//! - an Admin Deny beats a NetworkPolicy allow;
//! - Pass hands the decision to NetworkPolicy (and skips the rest of the Admin tier);
//! - the Baseline tier applies only to pods no NetworkPolicy selects;
//! - an egress Accept followed by a Deny of the VPC's network (which covers pod addresses).
//!
//! Then generated cases (`terway_policy::gen_cluster`): both tiers, priorities, Accept/Deny/Pass, all peer
//! kinds, named ports, malformed parts that must fail closed.

mod common;

use common::k8s::{apply, apply_with, cli_policy, get_json, kubectl};
use common::netpol::{
    cluster_policies_manifest, delete_all_cluster_policies, delete_all_policies, nodes,
    policies_manifest, stored_cluster_policies, stored_policies, tables, ModelPods,
};
use common::probe::{Endpoint, Probe};
use common::Lab;
use terway_policy::gen::{NAMESPACES, PODS};
use terway_policy::{gen_cluster, World};

/// Generated cases after the named scenarios.
const CASES: u64 = 60;
/// A model pod's index (the model's order: x/a, x/b, x/c, y/a, ...).
fn at(ns: &str, pod: &str) -> usize {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap_or(0);
    let p = PODS.iter().position(|x| *x == pod).unwrap_or(0);
    n * PODS.len() + p
}

fn tcp(src: usize, dst: usize, port: u16) -> Probe {
    Probe {
        src,
        dst,
        port,
        udp: false,
    }
}

/// A scenario: its YAML and the probes it is about, with the verdict the API's wording gives each, and
/// the verdict with its ClusterNetworkPolicies left out (which must differ for at least one probe, or the
/// scenario would not be about them).
struct Scenario {
    name: &'static str,
    yaml: String,
    pinned: Vec<(Probe, bool)>,
}

fn scenarios(vpc: &str) -> Vec<Scenario> {
    vec![
        Scenario {
            name: "an Admin Deny beats a NetworkPolicy allow",
            yaml: "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                   metadata: {name: admin-deny-y}\nspec:\n  tier: Admin\n  priority: 10\n  \
                   subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress:\n  \
                   - {name: no-y, action: Deny, from: [{namespaces: {matchLabels: {ns: 'y'}}}]}\n---\n\
                   apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-y, namespace: x}\n\
                   spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  \
                   ingress: [{from: [{namespaceSelector: {matchLabels: {ns: 'y'}}}]}]\n"
                .into(),
            pinned: vec![
                (tcp(at("y", "a"), at("x", "a"), 80), false),
                (tcp(at("y", "b"), at("x", "c"), 81), false),
                (tcp(at("z", "a"), at("x", "a"), 80), false),
                (tcp(at("z", "a"), at("y", "a"), 80), true),
            ],
        },
        Scenario {
            name: "Pass defers to NetworkPolicy",
            yaml: "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                   metadata: {name: admin-pass-y}\nspec:\n  tier: Admin\n  priority: 10\n  \
                   subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress:\n  \
                   - {name: y-to-np, action: Pass, from: [{namespaces: {matchLabels: {ns: 'y'}}}]}\n  \
                   - {name: rest, action: Deny, from: [{namespaces: {}}]}\n---\n\
                   apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                   metadata: {name: admin-later-deny-y}\nspec:\n  tier: Admin\n  priority: 20\n  \
                   subject: {namespaces: {matchLabels: {ns: x}}}\n  ingress:\n  \
                   - {action: Deny, from: [{namespaces: {matchLabels: {ns: 'y'}}}]}\n---\n\
                   apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-from-y-80, namespace: x}\n\
                   spec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  \
                   ingress: [{from: [{namespaceSelector: {matchLabels: {ns: 'y'}}}], ports: [{port: 80}]}]\n"
                .into(),
            pinned: vec![
                // Pass, then the NetworkPolicy allows it (the later Admin Deny is skipped).
                (tcp(at("y", "b"), at("x", "a"), 80), true),
                // Pass, then the NetworkPolicy does not allow port 81.
                (tcp(at("y", "b"), at("x", "a"), 81), false),
                // Pass, and no NetworkPolicy selects x/b: allowed.
                (tcp(at("y", "c"), at("x", "b"), 81), true),
                // Not y: the Admin Deny.
                (tcp(at("z", "a"), at("x", "b"), 80), false),
            ],
        },
        Scenario {
            name: "Baseline applies only where no NetworkPolicy selects the pod",
            yaml: "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                   metadata: {name: baseline-deny-z}\nspec:\n  tier: Baseline\n  priority: 10\n  \
                   subject: {namespaces: {matchLabels: {ns: z}}}\n  ingress:\n  \
                   - {action: Deny, from: [{namespaces: {}}]}\n---\n\
                   apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-from-x, namespace: z}\n\
                   spec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  \
                   ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}]\n"
                .into(),
            pinned: vec![
                (tcp(at("x", "a"), at("z", "a"), 80), true),
                (tcp(at("y", "a"), at("z", "a"), 80), false),
                (tcp(at("x", "a"), at("z", "b"), 80), false),
                (tcp(at("z", "c"), at("z", "b"), 81), false),
                (tcp(at("z", "c"), at("y", "b"), 81), true),
            ],
        },
        Scenario {
            name: "an egress Accept, then a Deny of the VPC network that covers pod addresses",
            yaml: format!(
                "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
                 metadata: {{name: admin-egress-x}}\nspec:\n  tier: Admin\n  priority: 10\n  \
                 subject: {{pods: {{namespaceSelector: {{matchLabels: {{ns: x}}}}, podSelector: {{matchLabels: {{pod: a}}}}}}}}\n  \
                 egress:\n  \
                 - {{action: Accept, to: [{{pods: {{namespaceSelector: {{matchLabels: {{ns: 'y'}}}}, podSelector: {{matchLabels: {{pod: a}}}}}}}}]}}\n  \
                 - {{action: Accept, to: [{{namespaces: {{matchLabels: {{ns: z}}}}}}], protocols: [{{tcp: {{destinationPort: {{number: 81}}}}}}]}}\n  \
                 - {{action: Deny, to: [{{networks: [{vpc}]}}]}}\n"
            ),
            pinned: vec![
                (tcp(at("x", "a"), at("y", "a"), 80), true),
                (tcp(at("x", "a"), at("y", "b"), 80), false),
                (tcp(at("x", "a"), at("z", "b"), 81), true),
                (tcp(at("x", "a"), at("z", "b"), 80), false),
                (tcp(at("x", "b"), at("y", "b"), 80), true),
            ],
        },
    ]
}

/// The oracle's verdicts on the cluster as stored now.
fn stored_world(lab: &Lab, model: &World) -> World {
    let mut w = model.clone();
    w.policies = stored_policies(lab);
    w.cluster_policies = stored_cluster_policies(lab);
    w.nodes = nodes(lab);
    w
}

fn node_of(lab: &Lab, ep: &Endpoint) -> String {
    let (ns, name) = ep.name.split_once('/').unwrap_or_default();
    get_json(lab, &["pod", "-n", ns, name])["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "current_thread")]
async fn terwayd_enforces_cluster_network_policy_tiers_as_the_oracle_says() {
    let lab = Lab::up(&[
        "--k8s",
        "--node",
        "shared",
        "--node",
        "shared",
        "--max-pool",
        "12",
    ]);
    let established = kubectl(
        &lab,
        &[
            "get",
            "crd",
            "clusternetworkpolicies.policy.networking.k8s.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ],
    );
    assert_eq!(
        established.trim(),
        "True",
        "the lab installs the ClusterNetworkPolicy CRD from deploy/crds"
    );
    let mut model = terway_policy::gen::model();
    let m = ModelPods::start(&lab, &mut model).await;
    let (eps, probes) = (&m.eps, &m.probes);

    let vpc = lab.desc["vpc_cidr"]
        .as_str()
        .expect("vpc_cidr in up --json")
        .to_string();
    for sc in scenarios(&vpc) {
        apply(&lab, &sc.yaml);
        let w = stored_world(&lab, &model);
        assert!(
            !w.cluster_policies.is_empty(),
            "{}: the API server stored no ClusterNetworkPolicy",
            sc.name
        );
        let mut without = w.clone();
        without.cluster_policies.clear();
        let mut about_tiers = false;
        for (p, want) in &sc.pinned {
            assert_eq!(
                p.expected(&w, eps),
                *want,
                "{}: the oracle misreads {}",
                sc.name,
                p.describe(eps)
            );
            about_tiers |= p.expected(&without, eps) != *want;
        }
        assert!(
            about_tiers,
            "{}: no pinned probe depends on the cluster policies",
            sc.name
        );
        let want = |p: &Probe| p.expected(&w, eps);
        let wrong = m.until_agreed(&want).await;
        if let Some((p, got)) = wrong.first() {
            panic!(
                "{}: {}: the oracle says {}, the cluster {} ({} probes disagree)\ncluster policies: {:#?}\ntables:\n{}",
                sc.name,
                p.describe(eps),
                if *got { "denied" } else { "allowed" },
                if *got { "delivered it" } else { "dropped it" },
                wrong.len(),
                w.cluster_policies,
                tables(&lab)
            );
        }
        if sc.name.starts_with("an Admin Deny") {
            // terway-cli explains the tiers, in evaluation order.
            let xa = &eps[at("x", "a")];
            let (ok, v, err) = cli_policy(&lab, &node_of(&lab, xa), &xa.name);
            assert!(ok, "terway-cli policy {}: {err}", xa.name);
            let rules = v["ingress"]["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let tiers: Vec<&str> = rules.iter().filter_map(|r| r["tier"].as_str()).collect();
            assert_eq!(tiers, ["Admin", "NetworkPolicy"], "{v:#}");
            assert_eq!(
                rules[0]["policy"], "ClusterNetworkPolicy/admin-deny-y",
                "{v:#}"
            );
            assert_eq!(rules[0]["action"], "Deny", "{v:#}");
            assert!(
                v["ingress"]["dropped_packets"].as_u64().unwrap_or(0) > 0,
                "{v:#}"
            );
        }
        delete_all_cluster_policies(&lab);
        delete_all_policies(&lab);
        let wrong = m.until_agreed(&|_| true).await;
        assert!(
            wrong.is_empty(),
            "{}: with its policies deleted, {} probes still fail",
            sc.name,
            wrong.len()
        );
    }

    let mut decided = 0usize;
    for seed in 0..CASES {
        let case = gen_cluster::case(seed);
        apply_with(
            &lab,
            &cluster_policies_manifest(seed, &case.cluster_policies),
            &["--validate=false"],
        );
        if !case.policies.is_empty() {
            apply_with(
                &lab,
                &policies_manifest(seed, &case.policies),
                &["--validate=false"],
            );
        }
        let w = stored_world(&lab, &model);
        let mut without = w.clone();
        without.cluster_policies.clear();
        let want = |p: &Probe| p.expected(&w, eps);
        if probes.iter().any(|p| want(p) != p.expected(&without, eps)) {
            decided += 1;
        }
        let wrong = m.until_agreed(&want).await;
        if let Some((p, got)) = wrong.first() {
            panic!(
                "cluster case {seed}: {}: the oracle says {}, the cluster {} ({} probes disagree)\ncluster policies: {:#?}\npolicies: {:#?}\ntables:\n{}",
                p.describe(eps),
                if *got { "denied" } else { "allowed" },
                if *got { "delivered it" } else { "dropped it" },
                wrong.len(),
                w.cluster_policies,
                w.policies,
                tables(&lab)
            );
        }
        delete_all_cluster_policies(&lab);
        delete_all_policies(&lab);
        let wrong = m.until_agreed(&|_| true).await;
        assert!(
            wrong.is_empty(),
            "cluster case {seed}: with its policies deleted, {} probes still fail",
            wrong.len()
        );
    }
    assert!(
        decided > CASES as usize / 2,
        "cluster policies decided a probe in only {decided} of {CASES} cases"
    );
    eprintln!(
        "4 scenarios and {CASES} generated cluster cases agreed ({decided} decided by the tiers)"
    );
}
