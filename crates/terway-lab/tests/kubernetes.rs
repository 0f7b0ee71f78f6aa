//! The lab as a real Kubernetes cluster: kube-apiserver, kube-scheduler, kubelet and containerd drive the
//! `terway` CNI. A Deployment's pods get ENI addresses of their nodes, talk to each other, and give every
//! address back when scaled to zero; a runtime killed mid-churn leaks nothing; `down` leaves the machine's
//! root namespace as it found it; terwayd, installed as the `terway-eniip` DaemonSet, is deleted and
//! applied again without a pod losing a probe.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::k8s::{
    app_pods, apply, daemon_socket, daemon_status, deployment, kubectl, node_condition, pod_events,
    pod_uids, wait_app_ready,
};
use common::{available_enis, check_failures, eventually, instance_ips, run, Lab};

/// What the machine's root namespace looks like (must be equal before a lab and after its `down`).
#[derive(Debug, PartialEq, Eq)]
struct RootState {
    links: String,
    rules: String,
    routes: String,
    nft: String,
    iptables: String,
    sysctls: BTreeMap<String, String>,
    /// Which of the DaemonSet's hostPaths exist on the machine (the nodes' mount namespaces give
    /// each node its own; the machine must not get them).
    host_paths: Vec<(String, bool)>,
}

fn cmd(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn root_state() -> RootState {
    let sysctls = [
        "kernel/panic",
        "kernel/panic_on_oops",
        "kernel/keys/root_maxkeys",
        "kernel/keys/root_maxbytes",
        "vm/overcommit_memory",
        "vm/panic_on_oom",
        "net/ipv4/ip_forward",
        "net/bridge/bridge-nf-call-iptables",
    ]
    .iter()
    .map(|k| {
        let v = std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_default();
        (k.to_string(), v.trim().to_string())
    })
    .collect();
    RootState {
        // Link names and flags only: counters move.
        links: cmd("ip", &["-o", "link", "show"])
            .lines()
            .map(|l| l.split("link/").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        rules: cmd("ip", &["rule"]),
        routes: cmd("ip", &["route", "show", "table", "all"]),
        nft: cmd("nft", &["list", "ruleset"]),
        iptables: cmd("iptables-save", &[])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        sysctls,
        host_paths: [
            "/etc/cni",
            "/opt/cni",
            "/var/run/eni",
            "/var/lib/cni",
            "/var/lib/kubelet",
        ]
        .iter()
        .map(|p| (p.to_string(), std::path::Path::new(p).exists()))
        .collect(),
    }
}

/// Namespace mounts (`/run/netns/<lab>-*`, pod namespaces under the lab directory) left by a lab; other
/// tests' labs run beside this one, so only the lab's own count.
fn lab_nsfs_mounts(lab: &str) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter(|l| l.contains(" nsfs "))
        .filter(|l| {
            l.contains(&format!("/run/netns/{lab}-")) || l.contains(&format!("/terway-lab/{lab}/"))
        })
        .map(String::from)
        .collect()
}

/// Cgroup directories of a lab in any hierarchy.
fn lab_cgroups(lab: &str) -> Vec<String> {
    let marker = format!("terway-lab.{lab}.");
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&marker) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

fn processes_mentioning(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(text).then_some(cmd)
        })
        .collect()
}

/// Every node's daemon holds exactly the Deployment's pods it runs, and the addresses it holds are the
/// ones the emulator has on the node's ENIs.
fn daemons_agree_with_kubernetes_and_cloud(lab: &Lab, app: &str) -> Result<(), String> {
    let pods = app_pods(lab, app);
    let world = lab.world();
    for node in ["node0", "node1"] {
        let (held, ips) = daemon_status(lab, node);
        let want: BTreeMap<String, String> = pods
            .iter()
            .filter(|p| p.1 == node)
            .map(|p| (format!("default/{}", p.0), p.2.clone()))
            .collect();
        if held != want {
            return Err(format!(
                "{node}: daemon holds {held:?}, Kubernetes runs {want:?}"
            ));
        }
        let (cloud_ips, _) = instance_ips(&world, &lab.instance(node));
        if ips != cloud_ips {
            return Err(format!(
                "{node}: daemon's ENIs hold {ips:?}, the emulator {cloud_ips:?}"
            ));
        }
    }
    Ok(())
}

/// Wait up to `secs` until the daemons agree with Kubernetes and the cloud and `also` holds; the last
/// disagreement otherwise.
fn settles(lab: &Lab, app: &str, secs: u64, also: impl Fn() -> bool) -> Result<(), String> {
    let mut last = String::from("the extra condition never held");
    let ok = eventually(secs, || {
        match daemons_agree_with_kubernetes_and_cloud(lab, app) {
            Ok(()) => also(),
            Err(e) => {
                last = e;
                false
            }
        }
    });
    if ok {
        Ok(())
    } else {
        Err(last)
    }
}

#[test]
fn a_deployment_gets_eni_addresses_talks_and_gives_every_address_back() {
    let before = root_state();
    let mut lab = Lab::up(&[
        "--k8s",
        "--node",
        "shared",
        "--node",
        "exclusive",
        "--max-pool",
        "5",
    ]);
    let nodes = kubectl(&lab, &["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.lines().count(), 2, "{nodes}");
    // terwayd came up the way a user installs it: `kubectl apply -k` of deploy/, a DaemonSet pod Ready
    // on every node.
    assert_eq!(lab.desc["kubernetes"]["terwayd"], "daemonset");
    let ds = common::k8s::get_json(&lab, &["-n", "kube-system", "daemonset", "terway-eniip"]);
    assert_eq!(ds["status"]["numberReady"], 2, "{}", ds["status"]);

    apply(&lab, &deployment("web", 12));
    wait_app_ready(&lab, "web", 12, 180);
    let pods = app_pods(&lab, "web");

    // Every pod has an address on an ENI of its own node, and no address is used twice.
    let world = lab.world();
    let mut seen = BTreeSet::new();
    for (name, node, ip, _) in &pods {
        let (node_ips, _) = instance_ips(&world, &lab.instance(node));
        assert!(
            node_ips.contains(ip),
            "{name} on {node} has {ip}, not an ENI address of {node}: {node_ips:?}"
        );
        assert!(seen.insert(ip.clone()), "{ip} was given to two pods");
    }
    assert!(
        pods.iter().any(|p| p.1 == "node0") && pods.iter().any(|p| p.1 == "node1"),
        "{pods:?}"
    );
    if let Err(e) = daemons_agree_with_kubernetes_and_cloud(&lab, "web") {
        panic!("{e}");
    }

    // Each pod has its "Alloc IP <ip> took <duration>" event, on this incarnation (UID), and each node
    // says it can get addresses.
    let uids = pod_uids(&lab, "default");
    for (name, _, ip, _) in &pods {
        let want = format!("Alloc IP {ip} took ");
        let got = eventually(30, || {
            pod_events(&lab, "default", name, "AllocIPSucceed")
                .iter()
                .any(|(uid, note)| Some(uid) == uids.get(name) && note.starts_with(&want))
        });
        assert!(
            got,
            "{name}: no AllocIPSucceed event for {ip}: {:?}",
            pod_events(&lab, "default", name, "AllocIPSucceed")
        );
    }
    for node in ["node0", "node1"] {
        let c = node_condition(&lab, node, "SufficientIP");
        assert!(
            matches!(&c, Some((s, r, _)) if s == "True" && r == "SufficientIP"),
            "{node}: {c:?}"
        );
        // The daemon's capacity annotation agrees with the pod limit the kubelet was given (both
        // from Terway's formulas: 7 x 30 shared addresses, 7 exclusive ENIs on ecs.g7.4xlarge).
        let node_json = common::k8s::get_json(&lab, &["node", node]);
        let want = if node == "node0" { "210" } else { "7" };
        assert_eq!(
            node_json["metadata"]["annotations"]["k8s.aliyun.com/max-available-ip"], want,
            "{node}"
        );
        assert_eq!(node_json["status"]["capacity"]["pods"], want, "{node}");
    }

    let report = lab.check(&[]);
    assert_eq!(report["ok"], true, "{}", check_failures(&report));
    assert!(
        report["pods"].as_u64().unwrap_or(0) >= 12,
        "the matrix missed pods: {}",
        report["pods"]
    );

    kubectl(&lab, &["scale", "deployment", "web", "--replicas=0"]);
    assert!(
        eventually(120, || app_pods(&lab, "web").is_empty()),
        "pods were not deleted"
    );
    if let Err(e) = settles(&lab, "web", 60, || available_enis(&lab.world()).is_empty()) {
        panic!("addresses were not given back: {e}");
    }

    let name = lab.name.clone();
    let (ok, out, err) = lab.down();
    assert!(ok, "down: {err}{out}");
    assert_eq!(lab_cgroups(&name), Vec::<String>::new(), "cgroups left");
    assert_eq!(
        lab_nsfs_mounts(&name),
        Vec::<String>::new(),
        "namespace mounts left"
    );
    assert_eq!(
        processes_mentioning(&format!("/run/terway-lab/{name}/")),
        Vec::<String>::new(),
        "processes left"
    );
    assert_eq!(root_state(), before, "the root namespace changed");
}

#[test]
fn a_runtime_killed_mid_churn_comes_back_and_leaks_nothing() {
    let lab = Lab::up(&[
        "--k8s",
        "--node",
        "shared",
        "--node",
        "shared",
        "--max-pool",
        "5",
    ]);
    apply(&lab, &deployment("churn", 10));
    // Kill node0's containerd and kubelet while its sandboxes are being created.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (ok, _, err) = run(&["runtime", "--lab", &lab.name, "kill", "node0"]);
    assert!(ok, "runtime kill: {err}");
    kubectl(&lab, &["scale", "deployment", "churn", "--replicas=6"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (ok, _, err) = run(&["runtime", "--lab", &lab.name, "start", "node0"]);
    assert!(ok, "runtime start: {err}");
    kubectl(&lab, &["scale", "deployment", "churn", "--replicas=8"]);

    wait_app_ready(&lab, "churn", 8, 180);
    let pods = app_pods(&lab, "churn");
    let ips: BTreeSet<&String> = pods.iter().map(|p| &p.2).collect();
    assert_eq!(ips.len(), pods.len(), "an address is held twice: {pods:?}");
    if let Err(e) = settles(&lab, "churn", 60, || true) {
        panic!("after the restart: {e}");
    }
    let report = lab.check(&["--no-spoof"]);
    assert_eq!(report["ok"], true, "{}", check_failures(&report));

    kubectl(&lab, &["scale", "deployment", "churn", "--replicas=0"]);
    assert!(
        eventually(120, || app_pods(&lab, "churn").is_empty()),
        "pods were not deleted"
    );
    if let Err(e) = settles(&lab, "churn", 60, || true) {
        panic!("addresses were leaked: {e}");
    }
}

#[test]
fn a_pod_deleted_while_its_node_is_down_is_released_once_the_api_server_says_it_is_gone() {
    // terwayd as a process: the test stops and starts it while the API server stays up.
    let lab = Lab::up(&[
        "--k8s",
        "--terwayd",
        "process",
        "--node",
        "shared",
        "--max-pool",
        "5",
    ]);
    apply(&lab, &deployment("gone", 2));
    wait_app_ready(&lab, "gone", 2, 120);
    let pods = app_pods(&lab, "gone");
    let (victim, survivor) = (&pods[0], &pods[1]);
    // The node is down (daemon, containerd, kubelet): nothing runs a CNI DEL for the victim.
    lab.daemon("stop", "node0");
    let (ok, _, err) = run(&["runtime", "--lab", &lab.name, "kill", "node0"]);
    assert!(ok, "runtime kill: {err}");
    kubectl(
        &lab,
        &["delete", "pod", &victim.0, "--force", "--grace-period=0"],
    );
    // Pin the Deployment at the survivor so no replacement is counted.
    kubectl(&lab, &["scale", "deployment", "gone", "--replicas=1"]);
    lab.daemon("start", "node0");
    // Only the API server can say the victim is gone: the daemon's GC releases it, the survivor stays.
    let released = eventually(90, || {
        let (held, _) = daemon_status(&lab, "node0");
        !held.contains_key(&format!("default/{}", victim.0))
            && held.get(&format!("default/{}", survivor.0)) == Some(&survivor.2)
    });
    assert!(
        released,
        "the daemon still holds {:?}",
        daemon_status(&lab, "node0").0
    );
    let (ok, _, err) = run(&["runtime", "--lab", &lab.name, "start", "node0"]);
    assert!(ok, "runtime start: {err}");
}

/// One connectivity matrix run: when it started and ended, whether every probe got through.
struct Probe {
    start: std::time::Instant,
    end: std::time::Instant,
    ok: bool,
    failures: String,
}

/// terway-eniip pods the API server still has.
fn daemonset_pods(lab: &Lab) -> usize {
    kubectl(
        lab,
        &[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "app=terway-eniip",
            "-o",
            "name",
        ],
    )
    .lines()
    .count()
}

#[test]
fn deleting_and_reapplying_the_daemonset_keeps_every_pod_connected() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    let lab = Lab::up(&[
        "--k8s",
        "--node",
        "shared",
        "--node",
        "exclusive",
        "--max-pool",
        "5",
    ]);
    let deploy = lab.desc["kubernetes"]["deploy"]
        .as_str()
        .expect("a DaemonSet lab names the overlay it applied")
        .to_string();
    apply(&lab, &deployment("steady", 6));
    wait_app_ready(&lab, "steady", 6, 180);

    // The matrix runs back to back while the DaemonSet is deleted (every terwayd stops) and applied
    // again (every terwayd restarts from its state and the init step reinstalls the plugin).
    let probes: Mutex<Vec<Probe>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let probes_done = || probes.lock().map(|p| p.len()).unwrap_or(0);
    let mut window = None;
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let start = Instant::now();
                // A check that cannot run counts as a failed matrix, not as a test crash.
                let (_, out, err) = run(&["check", "--lab", &lab.name, "--json"]);
                let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
                let probe = Probe {
                    start,
                    end: Instant::now(),
                    ok: r["ok"] == true && r["pods"].as_u64().unwrap_or(0) >= 6,
                    failures: format!("{} (pods {}) {err}", check_failures(&r), r["pods"]),
                };
                if let Ok(mut p) = probes.lock() {
                    p.push(probe);
                }
            }
        });
        // Whatever ends this thread (a finished upgrade, a failed kubectl's panic) ends the prober too,
        // or the scope would wait for it forever.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop_prober = StopOnDrop(&stop);
        assert!(
            eventually(60, || probes_done() >= 1),
            "the matrix never finished before the upgrade"
        );
        let deleted = Instant::now();
        kubectl(
            &lab,
            &["-n", "kube-system", "delete", "daemonset", "terway-eniip"],
        );
        assert!(
            eventually(90, || daemonset_pods(&lab) == 0),
            "the DaemonSet's pods were not deleted"
        );
        let down_since = Instant::now();
        for node in ["node0", "node1"] {
            assert!(
                std::os::unix::net::UnixStream::connect(daemon_socket(&lab, node)).is_err(),
                "the terwayd of {node} still answers with its DaemonSet deleted"
            );
        }
        // At least one whole matrix while no terwayd runs.
        let whole_inside = |p: &Probe| p.start >= down_since;
        assert!(
            eventually(60, || {
                probes
                    .lock()
                    .map(|p| p.iter().any(whole_inside))
                    .unwrap_or(false)
            }),
            "no matrix ran while terwayd was down"
        );
        let reapplied = Instant::now();
        kubectl(&lab, &["apply", "-k", &deploy]);
        kubectl(
            &lab,
            &[
                "-n",
                "kube-system",
                "rollout",
                "status",
                "daemonset/terway-eniip",
                "--timeout=180s",
            ],
        );
        let up_again = Instant::now();
        assert!(
            eventually(60, || {
                probes
                    .lock()
                    .map(|p| p.iter().any(|p| p.start >= up_again))
                    .unwrap_or(false)
            }),
            "no matrix ran after the DaemonSet was back"
        );
        window = Some((down_since, reapplied, up_again - deleted));
    });
    let probes = probes.into_inner().unwrap_or_default();
    let failed: Vec<&str> = probes
        .iter()
        .filter(|p| !p.ok)
        .map(|p| p.failures.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} matrices failed during the upgrade: {failed:?}",
        failed.len(),
        probes.len()
    );
    if let Some((down, back, upgrade)) = window {
        let inside = probes
            .iter()
            .filter(|p| p.start >= down && p.end <= back)
            .count();
        assert!(inside >= 1, "no whole matrix ran while terwayd was down");
        eprintln!(
            "{} matrices through the upgrade ({:.1} s from delete to rollout), {inside} of them \
             while no terwayd pod existed ({:.1} s)",
            probes.len(),
            upgrade.as_secs_f64(),
            (back - down).as_secs_f64()
        );
    }

    // The restarted daemons kept their allocations, and serve new pods.
    if let Err(e) = settles(&lab, "steady", 60, || true) {
        panic!("after the upgrade: {e}");
    }
    kubectl(&lab, &["scale", "deployment", "steady", "--replicas=10"]);
    wait_app_ready(&lab, "steady", 10, 180);
    if let Err(e) = settles(&lab, "steady", 60, || true) {
        panic!("after scaling up: {e}");
    }
    let report = lab.check(&[]);
    assert_eq!(report["ok"], true, "{}", check_failures(&report));
}
