//! NetworkPolicy as the node enforces it, probed through the kernel: the cyclonus model (namespaces x, y, z
//! × pods a, b, c, and an address outside the cluster), each pod a real network namespace behind a host
//! veth of one node namespace, the node's `terway_policy` table rendered from the compiled policy and moved
//! from case to case by the incremental scripts alone. Every pod-to-pod (and pod-to-outside) probe on ports
//! 80 and 81 over TCP and UDP must get the answer the oracle gives, for 200 generated cases.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use common::probe::{self, Endpoint};
use terway_datapath::conntrack;
use terway_datapath::netns::Netns;
use terway_datapath::nft as nft_cmd;
use terway_policy::compile;
use terway_policy::gen::{self, NAMESPACES, OUTSIDE, PODS};
use terway_policy::nft::{self, LocalPod, NodeRuleset};

/// How long a probe waits before it counts as blocked. Drops are silent, so every blocked probe costs this.
const PROBE: Duration = Duration::from_millis(200);
/// How long a case may take to agree: the table is in place before the probes start, so only a probe
/// that lost a race with the scheduler (a 2-core machine under CI) needs a second round.
const AGREE: Duration = Duration::from_secs(3);
const CASES: u64 = 200;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl_in(ns: &str, key: &str, value: &str) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .output()
        .expect("run sysctl");
    assert!(
        out.status.success(),
        "sysctl {key} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An endpoint of the model: its namespace, its address, the node-side veth.
struct Member {
    ns: String,
    ip: IpAddr,
    host_if: String,
    key: Option<String>,
}

/// The node namespace and every member's namespace, deleted by name on drop (also when the test fails).
struct Topology {
    node: String,
    members: Vec<Member>,
}

impl Topology {
    fn build() -> Topology {
        let tag = format!("{:05}", std::process::id() % 100_000);
        let node = format!("tpn{tag}");
        let mut t = Topology {
            node: node.clone(),
            members: Vec::new(),
        };
        Netns::create_named(&node).expect("create the node namespace");
        ip(&["-n", &node, "link", "set", "lo", "up"]);
        sysctl_in(&node, "net.ipv4.ip_forward", "1");
        let mut want: Vec<(String, IpAddr, Option<String>)> = Vec::new();
        for (ni, ns) in NAMESPACES.iter().enumerate() {
            for (pi, pod) in PODS.iter().enumerate() {
                want.push((
                    format!("{ni}{pi}"),
                    gen::pod_ip(ni, pi),
                    Some(format!("{ns}/{pod}")),
                ));
            }
        }
        want.push(("oo".into(), OUTSIDE, None));
        for (suffix, addr, key) in want {
            let ns = format!("tp{tag}{suffix}");
            Netns::create_named(&ns).expect("create a member namespace");
            let host_if = format!("tv{tag}{suffix}");
            t.members.push(Member {
                ns: ns.clone(),
                ip: addr,
                host_if: host_if.clone(),
                key,
            });
            ip(&[
                "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            // No gateway: the member asks for every address on its link and the node answers by proxy ARP.
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"]);
            ip(&["-n", &node, "link", "set", &host_if, "up"]);
            ip(&[
                "-n",
                &node,
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                &host_if,
            ]);
            sysctl_in(&node, &format!("net.ipv4.conf.{host_if}.proxy_arp"), "1");
        }
        t
    }

    fn local_pods(&self) -> Vec<LocalPod> {
        self.members
            .iter()
            .filter_map(|m| {
                m.key.as_ref().map(|k| LocalPod {
                    key: k.clone(),
                    host_if: m.host_if.clone(),
                    ips: vec![m.ip],
                })
            })
            .collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for m in &self.members {
            let _ = Netns::delete_named(&m.ns);
        }
        let _ = Netns::delete_named(&self.node);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_kernel_enforces_what_the_oracle_says_on_200_generated_cases() {
    let t = Topology::build();
    let eps: Vec<Endpoint> = t
        .members
        .iter()
        .map(|m| Endpoint {
            name: m.key.clone().unwrap_or_else(|| "outside".into()),
            netns: Netns::named_path(&m.ns),
            ip: m.ip,
        })
        .collect();
    probe::serve(&eps).await;
    let node = Netns::open_named(&t.node).expect("open the node namespace");
    let all_ips: Vec<IpAddr> = t.members.iter().map(|m| m.ip).collect();
    let probes = probe::all_probes(eps.len());
    // Entries of earlier flows would admit a probe as an established one.
    let flush = || {
        conntrack::flush_addresses(&node, &all_ips).expect("flush the node's conntrack entries");
    };

    // Without a policy everything gets through: the topology itself works.
    let wrong = probe::until_agreed(&eps, &probes, &|_| true, PROBE, AGREE, &flush).await;
    assert!(
        wrong.is_empty(),
        "with no table, these probes failed: {wrong:?}"
    );

    let local = t.local_pods();
    let mut applied: Option<NodeRuleset> = None;
    let (mut isolated_cases, mut denied_probes) = (0, 0);
    for seed in 0..CASES {
        let w = gen::case(seed);
        let compiled = compile(&w).unwrap_or_else(|e| panic!("case {seed}: {e}"));
        let next = nft::ruleset(&compiled, &w, &local);
        let script = match &applied {
            None => Some(nft::full_script(&next)),
            Some(prev) => nft::update_script(prev, &next),
        };
        if let Some(s) = script {
            nft_cmd::apply(&node, &s, "policy case")
                .unwrap_or_else(|e| panic!("case {seed}: {e}\nscript:\n{s}"));
        }
        applied = Some(next);
        let want = |p: &probe::Probe| p.expected(&w, &eps);
        let wrong = probe::until_agreed(&eps, &probes, &want, PROBE, AGREE, &flush).await;
        if let Some((p, got)) = wrong.first() {
            let listing = nft_cmd::query(&node, &["list", "table", "inet", nft::TABLE], "listing")
                .ok()
                .flatten()
                .unwrap_or_default();
            panic!(
                "case {seed}: {}: the oracle says {}, the kernel {} ({} probes disagree)\npolicies: {:#?}\ntable:\n{listing}",
                p.describe(&eps),
                if *got { "denied" } else { "allowed" },
                if *got { "delivered it" } else { "dropped it" },
                wrong.len(),
                w.policies
            );
        }
        denied_probes += probes.iter().filter(|p| !want(p)).count();
        if !compiled
            .pods
            .values()
            .all(|r| r.ingress.policies().is_empty() && r.egress.policies().is_empty())
        {
            isolated_cases += 1;
        }
    }
    // The cases must exercise the table, not only the empty one.
    assert!(
        isolated_cases > CASES as usize / 2,
        "only {isolated_cases} cases isolated a pod"
    );
    assert!(
        denied_probes > 1000,
        "only {denied_probes} probes were denied across the cases"
    );

    nft_cmd::apply(&node, &nft::teardown_script(), "teardown").expect("remove the table");
    assert!(
        nft_cmd::query(&node, &["list", "table", "inet", nft::TABLE], "listing")
            .unwrap()
            .is_none()
    );
}
