//! NetworkPolicy enforced by terwayd in the Kubernetes lab, proved by truth tables: the cyclonus model
//! (namespaces x, y, z × pods a, b, c, with their labels and named ports) as real pods on two nodes, the
//! generated cases applied as real NetworkPolicy objects, and every pod-to-pod probe on ports 80 and 81 over
//! TCP and UDP — made from inside each pod's network namespace — compared with the oracle evaluated on the
//! policies as the API server stored them. Between cases every policy is deleted and the test waits until
//! everything is open again, so a case can only agree once its own policies are enforced. Then the 48
//! upstream e2e tests, restated over the same model (`terway_policy::upstream`, one case per check), with
//! the namespace and pod labels each check has set on the real objects first.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::k8s::{apply, apply_with, kubectl};
use common::netpol::{
    delete_all_policies, policies_manifest, stored_policies, tables, ModelPods, AGREE,
};
use common::probe::Probe;
use common::Lab;
use terway_policy::gen::{self, NAMESPACES, PODS};
use terway_policy::World;

/// Generated cases (the issue asks for at least 200).
const CASES: u64 = 200;
#[tokio::test(flavor = "current_thread")]
async fn terwayd_enforces_what_the_oracle_says_on_generated_and_upstream_cases() {
    let lab = Lab::up(&[
        "--k8s",
        "--node",
        "shared",
        "--node",
        "shared",
        "--max-pool",
        "12",
    ]);
    let mut world = gen::model();
    let m = ModelPods::start(&lab, &mut world).await;
    let (eps, probes) = (&m.eps, &m.probes);
    assert_eq!(eps.len(), NAMESPACES.len() * PODS.len());

    let (mut denied, mut slowest) = (0usize, Duration::ZERO);
    for seed in 0..CASES {
        let case = gen::case(seed);
        // kubectl's own schema (newer than the server) would refuse what the 1.20 server merely drops.
        apply_with(
            &lab,
            &policies_manifest(seed, &case.policies),
            &["--validate=false"],
        );
        let started = Instant::now();
        world.policies = stored_policies(&lab);
        let want = |p: &Probe| p.expected(&world, eps);
        let wrong = m.until_agreed(&want).await;
        if let Some((p, got)) = wrong.first() {
            panic!(
                "case {seed}: {}: the oracle says {}, the cluster {} ({} probes disagree after {AGREE:?})\npolicies: {:#?}\ntables:\n{}",
                p.describe(eps),
                if *got { "denied" } else { "allowed" },
                if *got { "delivered it" } else { "dropped it" },
                wrong.len(),
                world.policies,
                tables(&lab)
            );
        }
        slowest = slowest.max(started.elapsed());
        denied += probes.iter().filter(|p| !want(p)).count();
        delete_all_policies(&lab);
        let wrong = m.until_agreed(&|_| true).await;
        assert!(
            wrong.is_empty(),
            "case {seed}: with its policies deleted, {} probes still fail, e.g. {}",
            wrong.len(),
            wrong
                .first()
                .map(|(p, _)| p.describe(eps))
                .unwrap_or_default()
        );
    }
    assert!(
        denied > 1000,
        "only {denied} probes were denied across the cases"
    );
    eprintln!(
        "{CASES} cases agreed; {denied} probes denied; slowest case agreed after {slowest:?}"
    );

    // An ipBlock that covers pod addresses admits those pods (Terway #904: its eBPF mode denies them).
    let vpc = lab.desc["vpc_cidr"]
        .as_str()
        .expect("vpc_cidr in up --json")
        .to_string();
    // The model's order is x/a, x/b, x/c, y/a, y/b, ...
    let (xa, yb_index) = (0, PODS.len() + 1);
    assert_eq!(eps[yb_index].name, "y/b");
    let yb = eps[yb_index].ip;
    let block = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: block-over-pods, namespace: x}}\n\
         spec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Ingress]\n  ingress:\n  \
         - from: [{{ipBlock: {{cidr: {vpc}, except: [{yb}/32]}}}}]\n"
    );
    apply(&lab, &block);
    world.policies = stored_policies(&lab);
    let want = |p: &Probe| p.expected(&world, eps);
    assert!(
        probes
            .iter()
            .any(|p| p.dst == xa && p.src != yb_index && want(p))
            && probes
                .iter()
                .any(|p| p.dst == xa && p.src == yb_index && !want(p)),
        "the oracle must admit the pods in the block and deny the excepted one"
    );
    let wrong = m.until_agreed(&want).await;
    assert!(
        wrong.is_empty(),
        "ipBlock over pod addresses: {} probes disagree, e.g. {}\ntables:\n{}",
        wrong.len(),
        wrong
            .first()
            .map(|(p, _)| p.describe(eps))
            .unwrap_or_default(),
        tables(&lab)
    );
    delete_all_policies(&lab);

    // The upstream suite, each check with its labels on the real objects.
    let scenarios = terway_policy::upstream::scenarios(&world);
    // Three titles recur in the UDP and SCTP suites: a test is its suite and its title.
    let titles: std::collections::BTreeSet<(terway_policy::upstream::Suite, &str)> =
        scenarios.iter().map(|s| (s.suite, s.it)).collect();
    assert_eq!(
        titles.len(),
        terway_policy::upstream::TESTS.len(),
        "every upstream test has a case"
    );
    let mut labelled = world.clone();
    for (i, sc) in scenarios.iter().enumerate() {
        relabel(&lab, &labelled, &sc.world);
        labelled = sc.world.clone();
        // kubectl refuses an empty list; a check without policies (e.g. after a delete) applies none.
        if !sc.world.policies.is_empty() {
            apply_with(
                &lab,
                &policies_manifest(1000 + i as u64, &sc.world.policies),
                &["--validate=false"],
            );
        }
        let mut w = sc.world.clone();
        w.policies = stored_policies(&lab);
        let want = |p: &Probe| p.expected(&w, eps);
        let wrong = m.until_agreed(&want).await;
        if let Some((p, got)) = wrong.first() {
            panic!(
                "upstream case {:?}: {}: the oracle says {}, the cluster {} ({} probes disagree)\npolicies: {:#?}\ntables:\n{}",
                sc.name,
                p.describe(eps),
                if *got { "denied" } else { "allowed" },
                if *got { "delivered it" } else { "dropped it" },
                wrong.len(),
                w.policies,
                tables(&lab)
            );
        }
        delete_all_policies(&lab);
        let wrong = m.until_agreed(&|_| true).await;
        assert!(
            wrong.is_empty(),
            "upstream case {:?}: with its policies deleted, {} probes still fail",
            sc.name,
            wrong.len()
        );
    }
    eprintln!(
        "{} upstream cases ({} tests) agreed",
        scenarios.len(),
        titles.len()
    );
}

/// `kubectl label` the namespaces and pods whose labels differ between `from` and `to`.
fn relabel(lab: &Lab, from: &World, to: &World) {
    let changes = |old: &BTreeMap<String, String>, new: &BTreeMap<String, String>| {
        let mut a: Vec<String> = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| format!("{k}-"))
            .collect();
        a.extend(
            new.iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}={v}")),
        );
        a
    };
    for n in &to.namespaces {
        let old = from
            .namespace(&n.name)
            .map(|o| o.labels.clone())
            .unwrap_or_default();
        let c = changes(&old, &n.labels);
        if !c.is_empty() {
            let mut a = vec!["label", "--overwrite", "namespace", n.name.as_str()];
            a.extend(c.iter().map(String::as_str));
            kubectl(lab, &a);
        }
    }
    for p in &to.pods {
        let old = from
            .pod(&p.namespace, &p.name)
            .map(|o| o.labels.clone())
            .unwrap_or_default();
        let c = changes(&old, &p.labels);
        if !c.is_empty() {
            let mut a = vec![
                "label",
                "--overwrite",
                "pod",
                "-n",
                p.namespace.as_str(),
                p.name.as_str(),
            ];
            a.extend(c.iter().map(String::as_str));
            kubectl(lab, &a);
        }
    }
}
