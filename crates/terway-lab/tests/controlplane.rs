//! terway-controlplane in the lab's real cluster, installed by `kubectl apply -k` with two replicas:
//! PodNetworkings are judged against the emulated cloud (Ready with zones, Fail naming what is
//! missing, events); exactly one replica reconciles and the Lease changes hands when the leader is
//! killed (within the lease duration) or deleted (at once); the webhook puts pods into their
//! PodNetworking or refuses them with the reason; pods get ENIs of their PodNetworking's vSwitch and
//! give them back; a StatefulSet pod keeps its fixed IP across recreation and nodes until its TTL; a
//! leader killed mid-burst leaks and duplicates nothing; security groups decide reachability per port.

mod common;

use std::time::{Duration, Instant};

use common::k8s::{apply, events, get_json, kubectl, pod_is_ready};
use common::{eventually, Lab};
use serde_json::Value;

const NS: &str = "kube-system";

/// The four-node burst test has the machine to itself (its timing is the point); the two-node tests
/// share it with each other.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}
const LEASE_DURATION: Duration = Duration::from_secs(15);

fn podnetworking(name: &str, vswitches: &[&str], groups: &[&str]) -> String {
    format!(
        "apiVersion: network.alibabacloud.com/v1beta1\nkind: PodNetworking\nmetadata: {{name: {name}}}\n\
         spec:\n  vSwitchOptions: {vswitches:?}\n  securityGroupIDs: {groups:?}\n"
    )
}

fn status(lab: &Lab, name: &str) -> Value {
    get_json(lab, &["podnetworking", name])["status"].clone()
}

/// The Lease's holder identity and transitions.
fn lease(lab: &Lab) -> (String, i64) {
    let l = get_json(lab, &["-n", NS, "lease", "terway-controlplane"]);
    (
        l["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        l["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
    )
}

/// The controlplane's pods (name, phase, ready).
fn replicas(lab: &Lab) -> Vec<(String, bool)> {
    get_json(lab, &["-n", NS, "pods", "-l", "app=terway-controlplane"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                pod_is_ready(p),
            )
        })
        .collect()
}

/// GET `path` of a replica's HTTP endpoint through the API server's pod proxy.
fn endpoint(lab: &Lab, pod: &str, path: &str) -> String {
    let (ok, out, err) = common::run(&[
        "kubectl",
        "--lab",
        &lab.name,
        "--",
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{NS}/pods/{pod}:9487/proxy{path}"),
    ]);
    if ok {
        out
    } else {
        format!("(unreachable: {err})")
    }
}

/// The value of the sample `line_prefix` in a metrics page (0 when absent).
fn sample(metrics: &str, line_prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The PID of the controlplane process of pod `pod` (its environment names the pod).
fn process_of(pod: &str) -> Option<i32> {
    let want = format!("POD_NAME={pod}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !cmd.starts_with(b"/usr/bin/terway-controlplane") {
            return None;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        env.split(|b| *b == 0)
            .any(|kv| kv == want.as_bytes())
            .then_some(pid)
    })
}

fn holder_pod(identity: &str) -> String {
    identity
        .rsplit_once('_')
        .map(|(pod, _)| pod.to_string())
        .unwrap_or_default()
}

#[test]
fn podnetworkings_are_judged_and_the_lease_changes_hands() {
    let _machine = shared();
    let lab = Lab::up(&["--k8s", "--node", "shared", "--node", "shared"]);
    let vsws: Vec<String> = lab.desc["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["vswitch_id"].as_str().map(String::from))
        .collect();
    let vsw: Vec<&str> = vsws.iter().map(String::as_str).collect();
    let default_sg = "sg-emu0000000000000001";

    // Both replicas run; one holds the Lease and only it reconciles.
    assert!(
        eventually(60, || replicas(&lab).iter().filter(|(_, r)| *r).count()
            == 2),
        "two Ready replicas: {:?}",
        replicas(&lab)
    );
    let (first, transitions) = lease(&lab);
    let leader = holder_pod(&first);
    assert!(
        replicas(&lab).iter().any(|(p, _)| *p == leader),
        "the holder {first} is one of the replicas {:?}",
        replicas(&lab)
    );

    apply(&lab, &podnetworking("good", &vsw, &[default_sg]));
    apply(
        &lab,
        &podnetworking("bad", &["vsw-missing"], &["sg-missing"]),
    );
    assert!(
        eventually(30, || status(&lab, "good")["status"] == "Ready"
            && status(&lab, "bad")["status"] == "Fail"),
        "good: {} bad: {}",
        status(&lab, "good"),
        status(&lab, "bad")
    );
    let good = status(&lab, "good");
    let zones: Vec<(String, String)> = good["vSwitches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["zone"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        zones.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        vsws,
        "{good}"
    );
    assert!(
        zones.iter().all(|(_, z)| z.starts_with("cn-hangzhou-")),
        "{good}"
    );
    let message = status(&lab, "bad")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("vSwitch vsw-missing does not exist")
            && message.contains("security group sg-missing does not exist"),
        "{message}"
    );
    let about = |name: &str, reason: &str| {
        events(&lab, NS).iter().any(|e| {
            e["regarding"]["kind"] == "PodNetworking"
                && e["regarding"]["name"] == name
                && e["reason"] == reason
        })
    };
    assert!(
        eventually(10, || about("bad", "SyncPodNetworkingFailed")
            && about("good", "SyncPodNetworkingSucceed")),
        "events: {:?}",
        events(&lab, NS)
    );

    // Fixing the spec makes it Ready without waiting for the periodic re-check.
    kubectl(
        &lab,
        &[
            "patch",
            "podnetworking",
            "bad",
            "--type=merge",
            "-p",
            &format!(
                r#"{{"spec":{{"vSwitchOptions":["{}"],"securityGroupIDs":["{default_sg}"]}}}}"#,
                vsw[0]
            ),
        ],
    );
    assert!(
        eventually(15, || status(&lab, "bad")["status"] == "Ready"),
        "{}",
        status(&lab, "bad")
    );

    // Exactly one replica leads; the follower has reconciled nothing.
    let pods = replicas(&lab);
    let follower = pods
        .iter()
        .map(|(p, _)| p.clone())
        .find(|p| *p != leader)
        .expect("a follower");
    assert_eq!(endpoint(&lab, &leader, "/leader").trim(), "true");
    assert_eq!(endpoint(&lab, &follower, "/leader").trim(), "false");
    let lm = endpoint(&lab, &leader, "/metrics");
    let fm = endpoint(&lab, &follower, "/metrics");
    let reconciles =
        "terway_controlplane_reconciles_total{controller=\"pod-networking\",result=\"ok\"}";
    assert!(sample(&lm, reconciles) >= 3.0, "{lm}");
    assert_eq!(sample(&fm, reconciles), 0.0, "{fm}");
    assert!(
        sample(
            &lm,
            "terway_controlplane_cloud_calls_total{action=\"DescribeVSwitches\",result=\"ok\"}"
        ) >= 3.0,
        "{lm}"
    );

    // Kill the leader without warning: the follower takes over once the record stood for the lease
    // duration, and serves a new PodNetworking.
    let pid = process_of(&leader).expect("the leader's process");
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the leader");
    assert!(
        eventually(40, || lease(&lab).0 != first && !lease(&lab).0.is_empty()),
        "the Lease stayed with {first}"
    );
    let took = killed.elapsed();
    let (second, after_kill) = lease(&lab);
    eprintln!("handover after SIGKILL of the leader: {took:?}");
    assert!(
        took <= LEASE_DURATION + Duration::from_secs(5),
        "handover after a kill took {took:?} (lease duration {LEASE_DURATION:?})"
    );
    assert_eq!(after_kill, transitions + 1);
    apply(&lab, &podnetworking("after-kill", &vsw[..1], &[]));
    assert!(
        eventually(15, || status(&lab, "after-kill")["status"] == "Ready"),
        "{}",
        status(&lab, "after-kill")
    );
    assert!(
        status(&lab, "after-kill")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("eni-config's security groups"),
        "{}",
        status(&lab, "after-kill")
    );

    // Delete the new leader's pod: it releases the Lease on SIGTERM, so the handover does not wait
    // out the duration.
    let second_pod = holder_pod(&second);
    assert!(
        eventually(60, || replicas(&lab).iter().filter(|(_, r)| *r).count()
            == 2),
        "both replicas back: {:?}",
        replicas(&lab)
    );
    let deleted = Instant::now();
    kubectl(
        &lab,
        &["-n", NS, "delete", "pod", &second_pod, "--wait=false"],
    );
    assert!(
        eventually(30, || {
            let (h, _) = lease(&lab);
            !h.is_empty() && h != second
        }),
        "the Lease stayed with {second}"
    );
    let took = deleted.elapsed();
    eprintln!("handover after deleting the leader's pod: {took:?}");
    assert!(
        took < LEASE_DURATION,
        "a released Lease was taken over after {took:?}, no faster than an expired one"
    );
    apply(&lab, &podnetworking("after-delete", &["vsw-nope"], &[]));
    assert!(
        eventually(15, || status(&lab, "after-delete")["status"] == "Fail"),
        "{}",
        status(&lab, "after-delete")
    );
}

/// A PodNetworking selecting pods by `label=value`.
fn selecting(name: &str, label: &str, value: &str, vswitches: &[&str]) -> String {
    format!(
        "apiVersion: network.alibabacloud.com/v1beta1\nkind: PodNetworking\nmetadata: {{name: {name}}}\n\
         spec:\n  selector:\n    podSelector:\n      matchLabels: {{{label}: {value}}}\n  \
         vSwitchOptions: {vswitches:?}\n  securityGroupIDs: [sg-emu0000000000000001]\n"
    )
}

/// A pod of the lab's workload image with `labels` (a YAML flow map).
fn labelled_pod(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  \
         terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: terway-lab.local/workload:1\n    \
         imagePullPolicy: Never\n"
    )
}

/// `kubectl apply` of `yaml`, expecting a refusal; returns kubectl's error output.
fn refused(lab: &Lab, yaml: &str) -> String {
    let path =
        std::env::temp_dir().join(format!("refused-{}-{}.yaml", lab.name, std::process::id()));
    std::fs::write(&path, yaml).expect("write manifest");
    let (ok, out, err) = common::run(&[
        "kubectl",
        "--lab",
        &lab.name,
        "--",
        "apply",
        "-f",
        &path.display().to_string(),
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(!ok, "the API server admitted it: {out}");
    err
}

#[test]
fn the_webhook_puts_pods_into_their_podnetworking_or_refuses_them_with_the_reason() {
    let _machine = shared();
    let lab = Lab::up(&["--k8s", "--node", "exclusive", "--node", "shared"]);
    let node = |i: usize, key: &str| {
        lab.desc["nodes"][i][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (exclusive, exclusive_vsw) = (node(0, "name"), node(0, "vswitch_id"));
    apply(&lab, &selecting("blue", "app", "blue", &[&exclusive_vsw]));
    apply(&lab, &selecting("red", "tier", "front", &[&exclusive_vsw]));
    apply(
        &lab,
        &selecting("broken", "app", "broken", &["vsw-missing"]),
    );
    assert!(
        eventually(30, || status(&lab, "blue")["status"] == "Ready"
            && status(&lab, "red")["status"] == "Ready"
            && status(&lab, "broken")["status"] == "Fail"),
        "blue {} red {} broken {}",
        status(&lab, "blue"),
        status(&lab, "red"),
        status(&lab, "broken")
    );
    let zone = status(&lab, "blue")["vSwitches"][0]["zone"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // A pod no PodNetworking selects is admitted as it is.
    apply(&lab, &labelled_pod("plain", "{app: plain}"));
    let plain = get_json(&lab, &["pod", "plain"]);
    assert!(
        plain["metadata"]["annotations"]["k8s.aliyun.com/pod-networking"].is_null(),
        "{plain}"
    );

    // A selected pod carries its PodNetworking, the ENI request and the zone, and is placed on the
    // node that has ENIs to give in that zone.
    apply(&lab, &labelled_pod("b1", "{app: blue}"));
    let b1 = get_json(&lab, &["pod", "b1"]);
    assert_eq!(
        b1["metadata"]["annotations"]["k8s.aliyun.com/pod-networking"], "blue",
        "{b1}"
    );
    assert_eq!(
        b1["metadata"]["annotations"]["k8s.aliyun.com/pod-eni"], "true",
        "{b1}"
    );
    assert_eq!(
        b1["spec"]["containers"][0]["resources"]["limits"]["aliyun/eni"], "1",
        "{b1}"
    );
    assert_eq!(
        b1["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0],
        serde_json::json!({"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}),
        "{b1}"
    );
    assert!(
        eventually(60, || get_json(&lab, &["pod", "b1"])["spec"]["nodeName"]
            == exclusive.as_str()),
        "b1 not scheduled to {exclusive}: {}",
        get_json(&lab, &["pod", "b1"])
    );

    // Two PodNetworkings selecting one pod, or one that is not Ready: refused, saying which and why.
    let err = refused(&lab, &labelled_pod("both", "{app: blue, tier: front}"));
    assert!(
        err.contains("selected by PodNetworkings blue and red"),
        "{err}"
    );
    let err = refused(&lab, &labelled_pod("wrong", "{app: broken}"));
    assert!(
        err.contains("PodNetworking broken, which is not Ready")
            && err.contains("vSwitch vsw-missing does not exist"),
        "{err}"
    );
    // Once fixed, the same pod is admitted into it.
    kubectl(
        &lab,
        &[
            "patch",
            "podnetworking",
            "broken",
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"vSwitchOptions":["{exclusive_vsw}"]}}}}"#),
        ],
    );
    assert!(
        eventually(15, || status(&lab, "broken")["status"] == "Ready"),
        "{}",
        status(&lab, "broken")
    );
    apply(&lab, &labelled_pod("fixed", "{app: broken}"));
    assert_eq!(
        get_json(&lab, &["pod", "fixed"])["metadata"]["annotations"]
            ["k8s.aliyun.com/pod-networking"],
        "broken"
    );

    // The replicas counted what they answered.
    let mut counts = (0.0, 0.0);
    for (pod, _) in replicas(&lab) {
        let m = endpoint(&lab, &pod, "/metrics");
        counts.0 += sample(
            &m,
            "terway_controlplane_webhook_requests_total{result=\"patched\"}",
        );
        counts.1 += sample(
            &m,
            "terway_controlplane_webhook_requests_total{result=\"denied\"}",
        );
    }
    assert!(
        counts.0 >= 2.0 && counts.1 >= 2.0,
        "patched, denied = {counts:?}"
    );
}

/// The ENIs of the emulated cloud that the controlplane created (tag creator=terway-controller).
fn controlplane_enis(lab: &Lab) -> Vec<Value> {
    lab.world()["enis"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|e| e["tags"]["creator"] == "terway-controller")
        .cloned()
        .collect()
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    match (
        ip.parse::<std::net::Ipv4Addr>(),
        cidr.parse::<ipnet::Ipv4Net>(),
    ) {
        (Ok(ip), Ok(net)) => net.contains(&ip),
        _ => false,
    }
}

#[test]
fn pods_of_two_podnetworkings_get_enis_of_their_own_vswitches_and_give_them_back() {
    let _machine = shared();
    let lab = Lab::up(&[
        "--k8s",
        "--node",
        "exclusive",
        "--node",
        "shared",
        "--pod-vswitches",
        "3",
    ]);
    let instance = lab.instance("node0");
    let vsws = lab.desc["vswitches"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let zone = vsws
        .iter()
        .find(|v| {
            v["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == "node0"))
        })
        .and_then(|v| v["zone_id"].as_str())
        .unwrap_or_default()
        .to_string();
    // Two vSwitches of node0's zone that no node is in: one per PodNetworking.
    let spare: Vec<(String, String)> = vsws
        .iter()
        .filter(|v| {
            v["zone_id"] == zone.as_str() && v["nodes"].as_array().is_some_and(Vec::is_empty)
        })
        .map(|v| {
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["cidr"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(spare.len(), 2, "{vsws:?}");
    let (alpha, beta) = (&spare[0], &spare[1]);
    apply(&lab, &selecting("alpha", "app", "alpha", &[&alpha.0]));
    apply(&lab, &selecting("beta", "app", "beta", &[&beta.0]));
    assert!(
        eventually(30, || status(&lab, "alpha")["status"] == "Ready"
            && status(&lab, "beta")["status"] == "Ready"),
        "alpha {} beta {}",
        status(&lab, "alpha"),
        status(&lab, "beta")
    );
    apply(&lab, &labelled_pod("a1", "{app: alpha}"));
    apply(&lab, &labelled_pod("b1", "{app: beta}"));
    apply(&lab, &labelled_pod("plain", "{app: plain}"));
    let running = |name: &str| ready_pod(&lab, name).map(|(_, ip, _)| ip);
    assert!(
        eventually(120, || running("a1").is_some()
            && running("b1").is_some()
            && running("plain").is_some()),
        "pods not Ready: a1 {} b1 {} podenis {}",
        get_json(&lab, &["pod", "a1"])["status"],
        get_json(&lab, &["pod", "b1"])["status"],
        kubectl(&lab, &["get", "podenis", "-o", "wide"])
    );

    // Each pod's address comes from its own PodNetworking's vSwitch, on an ENI made for it.
    for (pod, (vsw, cidr)) in [("a1", alpha), ("b1", beta)] {
        let ip = running(pod).unwrap_or_default();
        assert!(in_cidr(&ip, cidr), "{pod} has {ip}, not in {vsw} {cidr}");
        let pe = get_json(&lab, &["podeni", pod]);
        assert_eq!(pe["status"]["phase"], "Bind", "{pe}");
        assert_eq!(pe["status"]["instanceID"], instance.as_str(), "{pe}");
        let alloc = &pe["spec"]["allocations"][0];
        assert_eq!(alloc["eni"]["vSwitchID"], vsw.as_str(), "{pe}");
        assert_eq!(alloc["ipv4"], ip.as_str(), "{pe}");
        let eni = alloc["eni"]["id"].as_str().unwrap_or_default().to_string();
        let ni = get_json(&lab, &["networkinterface", &eni]);
        assert_eq!(ni["spec"]["podENIRef"]["name"], pod, "{ni}");
        assert_eq!(ni["status"]["phase"], "Bind", "{ni}");
        // terway-cli on the node says which PodENI and ENI the pod is on.
        let (ok, view, text) = common::k8s::cli_pod(&lab, "node0", &format!("default/{pod}"));
        assert!(ok, "{text}");
        let iface = &view["interfaces"][0];
        assert_eq!(iface["backend"], "pod-eni", "{view}");
        assert_eq!(iface["eni"]["id"], eni.as_str(), "{view}");
        assert_eq!(iface["eni"]["vswitch_id"], vsw.as_str(), "{view}");
        assert_eq!(
            iface["eni"]["status"],
            format!("PodENI default/{pod}"),
            "{view}"
        );
        let cloud = &lab.world()["enis"][&eni];
        assert_eq!(cloud["status"], "InUse", "{cloud}");
        assert_eq!(cloud["instance_id"], instance.as_str(), "{cloud}");
        assert_eq!(cloud["vswitch_id"], vsw.as_str(), "{cloud}");
    }
    assert_eq!(controlplane_enis(&lab).len(), 2, "one ENI per pod");
    // The node's own pods keep the node's network, and everyone reaches everyone.
    let plain_ip = running("plain").unwrap_or_default();
    assert!(
        !spare.iter().any(|(_, c)| in_cidr(&plain_ip, c)),
        "plain got {plain_ip}"
    );
    let report = lab.check(&[]);
    assert_eq!(report["ok"], true, "{}", common::check_failures(&report));

    // The pods go: their ENIs are detached and deleted, then their PodENIs and NetworkInterfaces.
    kubectl(
        &lab,
        &["delete", "pod", "a1", "b1", "--wait=true", "--timeout=60s"],
    );
    assert!(
        eventually(60, || controlplane_enis(&lab).is_empty()
            && get_json(&lab, &["podenis"])["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
            && get_json(&lab, &["networkinterfaces"])["items"]
                .as_array()
                .is_some_and(Vec::is_empty)),
        "left behind: enis {:?} podenis {} networkinterfaces {}",
        controlplane_enis(&lab),
        kubectl(&lab, &["get", "podenis", "-A"]),
        kubectl(&lab, &["get", "networkinterfaces"])
    );
}

/// The (node, IP, UID) of pod `name` once it is Ready.
fn ready_pod(lab: &Lab, name: &str) -> Option<(String, String, String)> {
    // Between a StatefulSet pod's deletion and its recreation there is no pod of that name: not ready yet.
    let p = get_json(lab, &["pod", name, "--ignore-not-found"]);
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (pod_is_ready(&p) && p["metadata"]["deletionTimestamp"].is_null()).then(|| {
        (
            s(&p["spec"]["nodeName"]),
            s(&p["status"]["podIP"]),
            s(&p["metadata"]["uid"]),
        )
    })
}

#[test]
fn a_statefulset_pod_keeps_its_fixed_ip_when_recreated_and_moved_until_its_ttl_ends() {
    let _machine = shared();
    let lab = Lab::up(&[
        "--k8s",
        "--vswitches",
        "1",
        "--node",
        "exclusive",
        "--node",
        "exclusive",
        "--pod-vswitches",
        "1",
    ]);
    let vsws = lab.desc["vswitches"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let spare = vsws
        .iter()
        .find(|v| v["nodes"].as_array().is_some_and(Vec::is_empty))
        .cloned()
        .unwrap_or(Value::Null);
    let (vsw, cidr) = (
        spare["id"].as_str().unwrap_or_default().to_string(),
        spare["cidr"].as_str().unwrap_or_default().to_string(),
    );
    apply(
        &lab,
        &format!(
            "apiVersion: network.alibabacloud.com/v1beta1\nkind: PodNetworking\nmetadata: {{name: fixed}}\n\
             spec:\n  selector:\n    podSelector:\n      matchLabels: {{app: db}}\n  \
             allocationType: {{type: Fixed, releaseStrategy: TTL, releaseAfter: 20s}}\n  vSwitchOptions: [{vsw}]\n"
        ),
    );
    assert!(
        eventually(30, || status(&lab, "fixed")["status"] == "Ready"),
        "{}",
        status(&lab, "fixed")
    );
    apply(
        &lab,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 1\n  \
         selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      \
         terminationGracePeriodSeconds: 5\n      containers:\n      - name: main\n        image: terway-lab.local/workload:1\n        \
         imagePullPolicy: Never\n",
    );
    assert!(
        eventually(120, || ready_pod(&lab, "db-0").is_some()),
        "db-0 not Ready: {} {}",
        get_json(&lab, &["pod", "db-0"])["status"],
        kubectl(&lab, &["get", "podenis", "-o", "wide"])
    );
    let (_, ip, uid) = ready_pod(&lab, "db-0").unwrap_or_default();
    assert!(in_cidr(&ip, &cidr), "db-0 has {ip}, not in {vsw} {cidr}");
    let eni = get_json(&lab, &["podeni", "db-0"])["spec"]["allocations"][0]["eni"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Deleted and recreated by its StatefulSet: the same IP on the same ENI.
    kubectl(&lab, &["delete", "pod", "db-0", "--wait=false"]);
    assert!(
        eventually(120, || ready_pod(&lab, "db-0")
            .is_some_and(|(_, _, u)| u != uid)),
        "db-0 not back: {}",
        get_json(&lab, &["pod", "db-0"])["status"]
    );
    let (node, ip2, uid2) = ready_pod(&lab, "db-0").unwrap_or_default();
    assert_eq!(ip2, ip, "the recreated pod got another address");

    // Moved to the other node (the one it is on cordoned): the ENI follows it, detached and attached
    // again.
    let other = if node == "node0" { "node1" } else { "node0" };
    kubectl(&lab, &["cordon", &node]);
    kubectl(&lab, &["delete", "pod", "db-0", "--wait=false"]);
    assert!(
        eventually(120, || ready_pod(&lab, "db-0")
            .is_some_and(|(n, _, u)| u != uid2 && n == other)),
        "db-0 not moved to {other}: {} {}",
        get_json(&lab, &["pod", "db-0"])["status"],
        kubectl(&lab, &["get", "podenis", "-o", "wide"])
    );
    let (_, ip3, _) = ready_pod(&lab, "db-0").unwrap_or_default();
    assert_eq!(ip3, ip, "the moved pod got another address");
    let pe = get_json(&lab, &["podeni", "db-0"]);
    assert_eq!(
        pe["spec"]["allocations"][0]["eni"]["id"],
        eni.as_str(),
        "{pe}"
    );
    assert_eq!(
        pe["status"]["instanceID"],
        lab.instance(other).as_str(),
        "{pe}\n{}",
        controlplane_log(&lab)
    );
    assert_eq!(
        lab.world()["enis"][&eni]["instance_id"],
        lab.instance(other).as_str()
    );
    kubectl(&lab, &["uncordon", &node]);
    let report = lab.check(&[]);
    assert_eq!(report["ok"], true, "{}", common::check_failures(&report));
    assert_eq!(controlplane_enis(&lab).len(), 1, "one ENI all along");

    // Scaled to zero: the IP is kept (ENI detached) for its 20 s TTL, then released.
    kubectl(&lab, &["scale", "statefulset", "db", "--replicas=0"]);
    assert!(
        eventually(60, || get_json(&lab, &["podeni", "db-0"])["status"]
            ["phase"]
            == "Unbind"),
        "{}",
        get_json(&lab, &["podeni", "db-0"])
    );
    assert_eq!(lab.world()["enis"][&eni]["status"], "Available");
    let unbound = Instant::now();
    assert!(
        eventually(60, || controlplane_enis(&lab).is_empty()
            && get_json(&lab, &["podenis"])["items"]
                .as_array()
                .is_some_and(Vec::is_empty)),
        "the fixed IP outlived its TTL: {:?} {}",
        controlplane_enis(&lab),
        kubectl(&lab, &["get", "podenis", "-o", "wide"])
    );
    assert!(
        unbound.elapsed() >= Duration::from_secs(15),
        "released after {:?}, before its 20 s TTL",
        unbound.elapsed()
    );
}

#[test]
fn killing_the_leader_during_a_burst_of_twenty_pods_leaks_and_duplicates_no_eni() {
    let _machine = alone();
    // Four exclusive nodes: 7 pods each, less the DaemonSet's and the controlplane's pods.
    let lab = Lab::up(&[
        "--k8s",
        "--vswitches",
        "1",
        "--node",
        "exclusive",
        "--node",
        "exclusive",
        "--node",
        "exclusive",
        "--node",
        "exclusive",
        "--pod-vswitches",
        "1",
    ]);
    let vsws = lab.desc["vswitches"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let vsw = vsws
        .iter()
        .find(|v| v["nodes"].as_array().is_some_and(Vec::is_empty))
        .and_then(|v| v["id"].as_str())
        .unwrap_or_default()
        .to_string();
    apply(&lab, &selecting("burst", "app", "burst", &[&vsw]));
    assert!(
        eventually(30, || status(&lab, "burst")["status"] == "Ready"),
        "{}",
        status(&lab, "burst")
    );
    let (first, _) = lease(&lab);
    let leader = holder_pod(&first);
    let pid = process_of(&leader).expect("the leader's process");

    apply(&lab, &common::k8s::deployment("burst", 20));
    // Kill the leader in the middle of the burst: once some PodENIs exist and not all are bound.
    let bound = |lab: &Lab| {
        get_json(lab, &["podenis"])["items"]
            .as_array()
            .map(|l| l.iter().filter(|p| p["status"]["phase"] == "Bind").count())
            .unwrap_or(0)
    };
    assert!(
        eventually(60, || get_json(&lab, &["podenis"])["items"]
            .as_array()
            .is_some_and(|l| !l.is_empty())),
        "no PodENI was written"
    );
    let before_kill = bound(&lab);
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the leader");
    eprintln!("leader killed with {before_kill} of 20 PodENIs bound");
    assert!(before_kill < 20, "the burst was over before the kill");

    common::k8s::wait_app_ready(&lab, "burst", 20, 180);
    let took = killed.elapsed();
    eprintln!("all 20 pods Ready {took:?} after the leader was killed");
    assert_ne!(lease(&lab).0, first, "the Lease did not change hands");

    // One ENI per pod: every controlplane ENI is its PodENI's, no PodENI has two, none is left over.
    let enis = controlplane_enis(&lab);
    let mut per_owner: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in &enis {
        per_owner
            .entry(
                e["tags"]["terway.pod-eni"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_default()
            .push(e["id"].as_str().unwrap_or_default().to_string());
    }
    let dups: Vec<_> = per_owner.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(dups.is_empty(), "PodENIs with two ENIs: {dups:?}");
    assert_eq!(enis.len(), 20, "{per_owner:?}");
    let recorded: std::collections::BTreeSet<String> = get_json(&lab, &["podenis"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            p["spec"]["allocations"][0]["eni"]["id"]
                .as_str()
                .map(String::from)
        })
        .collect();
    for e in &enis {
        let id = e["id"].as_str().unwrap_or_default();
        assert!(
            recorded.contains(id),
            "ENI {id} is recorded by no PodENI (leaked)"
        );
    }

    kubectl(&lab, &["scale", "deployment", "burst", "--replicas=0"]);
    assert!(
        eventually(120, || controlplane_enis(&lab).is_empty()),
        "ENIs left after the scale-down: {:?}",
        controlplane_enis(&lab)
    );
}

/// `terway-lab api ACTION K=V…` in `lab`: the answer's JSON (panics with the error otherwise).
fn cloud_api(lab: &Lab, action: &str, params: &[(&str, &str)]) -> Value {
    let kv: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["api", "--lab", &lab.name, action];
    args.extend(kv.iter().map(String::as_str));
    let (ok, out, err) = common::run(&args);
    assert!(ok, "{action}: {err}{out}");
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

/// A pod serving HTTP on ports 80 and 8080 (busybox httpd).
fn serving_pod(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  \
         terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: terway-lab.local/workload:1\n    \
         imagePullPolicy: Never\n    command: [/bin/sh, -c, \"httpd -p 80 -h /tmp && httpd -p 8080 -h /tmp && \
         trap 'exit 0' TERM INT; sleep 2147483647 & wait\"]\n"
    )
}

/// Whether pod `from` gets an HTTP answer (any status) from `ip:port` within 3 s (busybox nc; its
/// static wget crashes).
fn reaches(lab: &Lab, from: &str, ip: &str, port: u16) -> bool {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port} 2>&1; true");
    let (_, out, err) = common::run(&[
        "kubectl", "--lab", &lab.name, "--", "exec", from, "--", "sh", "-c", &script,
    ]);
    format!("{out}{err}").contains("HTTP/1")
}

/// The controlplane replicas' last log lines, for a failure message.
fn controlplane_log(lab: &Lab) -> String {
    let (_, out, err) = common::run(&[
        "kubectl",
        "--lab",
        &lab.name,
        "--",
        "-n",
        NS,
        "logs",
        "-l",
        "app=terway-controlplane",
        "--prefix",
        "--tail=40",
    ]);
    format!("{out}{err}")
}

#[test]
fn each_podnetworkings_security_groups_decide_who_reaches_its_pods_on_which_port() {
    let _machine = shared();
    let lab = Lab::up(&[
        "--k8s",
        "--node",
        "exclusive",
        "--node",
        "shared",
        "--pod-vswitches",
        "3",
    ]);
    let vpc = lab.world()["vpc"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let vsws = lab.desc["vswitches"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let zone = vsws
        .iter()
        .find(|v| {
            v["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == "node0"))
        })
        .and_then(|v| v["zone_id"].as_str())
        .unwrap_or_default()
        .to_string();
    let spare: Vec<String> = vsws
        .iter()
        .filter(|v| {
            v["zone_id"] == zone.as_str() && v["nodes"].as_array().is_some_and(Vec::is_empty)
        })
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect();
    assert_eq!(spare.len(), 2, "{vsws:?}");

    // sg deny-80: every inbound packet but TCP 80, as a user would set it up in the console.
    let sg = cloud_api(
        &lab,
        "CreateSecurityGroup",
        &[("VpcId", &vpc), ("SecurityGroupName", "deny-80")],
    )["SecurityGroupId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let drop_80 = [
        ("SecurityGroupId", sg.as_str()),
        ("IpProtocol", "TCP"),
        ("PortRange", "80/80"),
        ("SourceCidrIp", "0.0.0.0/0"),
        ("Policy", "drop"),
        ("Priority", "1"),
    ];
    cloud_api(
        &lab,
        "AuthorizeSecurityGroup",
        &[
            ("SecurityGroupId", &sg),
            ("IpProtocol", "ALL"),
            ("PortRange", "-1/-1"),
            ("SourceCidrIp", "0.0.0.0/0"),
            ("Priority", "100"),
        ],
    );
    cloud_api(&lab, "AuthorizeSecurityGroup", &drop_80);
    let attr = cloud_api(
        &lab,
        "DescribeSecurityGroupAttribute",
        &[("SecurityGroupId", &sg)],
    );
    assert_eq!(
        attr["Permissions"]["Permission"].as_array().map(Vec::len),
        Some(2),
        "{attr}"
    );

    apply(&lab, &selecting("open", "app", "open", &[&spare[0]]));
    apply(
        &lab,
        &format!(
            "apiVersion: network.alibabacloud.com/v1beta1\nkind: PodNetworking\nmetadata: {{name: closed}}\n\
             spec:\n  selector:\n    podSelector:\n      matchLabels: {{app: closed}}\n  \
             vSwitchOptions: [{}]\n  securityGroupIDs: [{sg}]\n",
            spare[1]
        ),
    );
    assert!(
        eventually(30, || status(&lab, "open")["status"] == "Ready"
            && status(&lab, "closed")["status"] == "Ready"),
        "open {} closed {}",
        status(&lab, "open"),
        status(&lab, "closed")
    );
    apply(&lab, &serving_pod("open-web", "{app: open}"));
    apply(&lab, &serving_pod("closed-web", "{app: closed}"));
    apply(&lab, &labelled_pod("client", "{app: client}"));
    let ip_of = |name: &str| ready_pod(&lab, name).map(|(_, ip, _)| ip);
    assert!(
        eventually(120, || ["open-web", "closed-web", "client"]
            .iter()
            .all(|p| ip_of(p).is_some())),
        "pods not Ready: {}",
        kubectl(&lab, &["get", "pods", "-o", "wide"])
    );
    let (open_ip, closed_ip) = (
        ip_of("open-web").unwrap_or_default(),
        ip_of("closed-web").unwrap_or_default(),
    );
    assert_eq!(
        lab.world()["enis"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .find(|e| e["primary_ip"] == closed_ip.as_str())
            .map(|e| e["security_group_ids"].clone()),
        Some(serde_json::json!([sg])),
        "closed-web's ENI is not in {sg}"
    );

    // The matrix per port, from a pod of the node's own network and from the other PodNetworking.
    for from in ["client", "open-web"] {
        for (name, ip, port, want) in [
            ("open-web", &open_ip, 80, true),
            ("open-web", &open_ip, 8080, true),
            ("closed-web", &closed_ip, 80, false),
            ("closed-web", &closed_ip, 8080, true),
        ] {
            if from == name {
                continue;
            }
            assert_eq!(
                reaches(&lab, from, ip, port),
                want,
                "{from} → {name} ({ip}) port {port}: expected {}",
                if want {
                    "an answer"
                } else {
                    "the security group to drop it"
                }
            );
        }
    }
    // Revoking the drop rule opens port 80 without touching the pod.
    cloud_api(&lab, "RevokeSecurityGroup", &drop_80);
    assert!(
        eventually(15, || reaches(&lab, "client", &closed_ip, 80)),
        "port 80 still closed after the revoke"
    );
}
