//! Fault handling of the real `terway` binary: vanished netns, half-way failures, stale and repeated DELs,
//! an unreachable, slow or failing daemon.

mod support;

use serde_json::json;
use support::*;
use terway_datapath::testbed::Testbed;
use terway_datapath::{link, Netns};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_after_netns_vanished_cleans_host_side() {
    let tb = Testbed::new(42).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.42.0.7"]));
    // an older runtime: results in the 0.4.0 shape
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({"cniVersion": "0.4.0"}));
    let (_, ns_path) = tb.pod_ns("v").unwrap();
    let netns = ns_path.display().to_string();
    let add = cni("ADD", "c9", &netns, "kube-system/dns", &conf).await;
    assert_eq!(add.code, 0, "{}", add.stdout);
    let j = add.json();
    assert_eq!(j["cniVersion"], "0.4.0");
    assert_eq!(j["ips"][0]["version"], "4");
    assert_eq!(j["ips"][0]["address"], "10.42.0.7/32");
    Netns::delete_path(&ns_path).unwrap();
    let del = cni("DEL", "c9", &netns, "kube-system/dns", &conf).await;
    assert_eq!(del.code, 0, "{} {}", del.stdout, del.stderr);
    assert!(our_rules(&tb).await.is_empty());
    assert!(cali_links(&tb).await.is_empty());
    assert!(d.0.lock().unwrap().allocs.is_empty());
    // and with an empty CNI_NETNS
    assert_eq!(cni("DEL", "c9", "", "kube-system/dns", &conf).await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_fails_half_way_and_rolls_back() {
    let tb = Testbed::new(43).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let mut st = shared_state(&tb, &["10.43.0.9"]);
    if let Some(e) = st.template.eni.as_mut() {
        e.mac = "02:00:5e:00:99:99".into();
    }
    let d = serve(&sock, st);
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns_path) = tb.pod_ns("f").unwrap();
    let r = cni(
        "ADD",
        "c2",
        &ns_path.display().to_string(),
        "default/ghost",
        &conf,
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    let j = r.json();
    assert_eq!(j["code"], 11, "missing ENI is transient: {j}");
    assert!(
        j["msg"].as_str().unwrap().contains("02:00:5e:00:99:99"),
        "{j}"
    );
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("backtrace"));
    assert!(our_rules(&tb).await.is_empty());
    assert!(cali_links(&tb).await.is_empty());
    let pod = terway_datapath::driver::PodCtx::open(&ns_path).unwrap();
    let names: Vec<String> = link::list_links(&pod.nl)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["lo"]);
    let s = d.0.lock().unwrap();
    assert_eq!(
        s.released,
        [(
            "default/ghost".to_string(),
            "roll back ip for error".to_string()
        )]
    );
    assert!(s.events.iter().any(|(r, _)| r == "AllocIPFailed"));
    assert!(s.allocs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_errors_map_to_cni_codes_and_status() {
    let tb = Testbed::new(45).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({"cniVersion": "1.1.0"}));
    let (_, ns_path) = tb.pod_ns("e").unwrap();
    let netns = ns_path.display().to_string();
    // no daemon yet
    let r = cni("ADD", "c4", &netns, "default/x", &conf).await;
    assert_eq!(r.json()["code"], 11, "{}", r.stdout);
    let s = cni("STATUS", "", "", "default/x", &conf).await;
    assert_eq!(s.json()["code"], 50, "{}", s.stdout);
    let mut st = shared_state(&tb, &["10.45.0.3"]);
    st.alloc_error = Some(Code::ResourceExhausted);
    let d = serve(&sock, st);
    assert_eq!(cni("STATUS", "", "", "default/x", &conf).await.code, 0);
    let r = cni("ADD", "c4", &netns, "default/x", &conf).await;
    assert_eq!(r.json()["code"], 100, "{}", r.stdout);
    d.0.lock().unwrap().alloc_error = Some(Code::Aborted);
    assert_eq!(
        cni("ADD", "c4", &netns, "default/x", &conf).await.json()["code"],
        11
    );
    assert!(cali_links(&tb).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_nic_add_failing_on_second_interface_rolls_back_the_first() {
    let tb = Testbed::new(48).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let mut st = shared_state(&tb, &["10.48.0.5"]);
    let mut second = shared_template(&tb);
    second.if_name = "eth1".into();
    second.default_route = false;
    second.pod_ip = Some(terway_rpc::v1::IpSet {
        ipv4: "10.48.0.6".into(),
        ipv6: String::new(),
    });
    if let Some(e) = second.eni.as_mut() {
        e.mac = "02:00:5e:00:77:77".into();
    }
    st.extra_conf = Some(second);
    let d = serve(&sock, st);
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns_path) = tb.pod_ns("m").unwrap();
    let r = cni(
        "ADD",
        "cm",
        &ns_path.display().to_string(),
        "default/multi",
        &conf,
    )
    .await;
    assert_eq!(r.json()["code"], 11, "{}", r.stdout);
    // eth0 had been fully programmed before eth1 failed; all of it is gone again
    assert!(cali_links(&tb).await.is_empty());
    assert!(our_rules(&tb).await.is_empty());
    let pod = terway_datapath::driver::PodCtx::open(&ns_path).unwrap();
    let names: Vec<String> = link::list_links(&pod.nl)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["lo"]);
    let routes = terway_datapath::route::list_routes(&tb.host_nl, true, None)
        .await
        .unwrap();
    assert!(
        routes
            .iter()
            .all(|r| !r.dst.to_string().starts_with("10.48.0.5")),
        "{routes:?}"
    );
    assert_eq!(
        d.0.lock().unwrap().released,
        [(
            "default/multi".to_string(),
            "roll back ip for error".to_string()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_timeout_bounds_every_call() {
    let tb = Testbed::new(52).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let mut st = shared_state(&tb, &["10.52.0.5"]);
    st.alloc_delay = Some(std::time::Duration::from_secs(30));
    let _d = serve(&sock, st);
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({"daemon_timeout": "500ms"}));
    let (_, ns_path) = tb.pod_ns("t").unwrap();
    let started = std::time::Instant::now();
    let r = cni(
        "ADD",
        "ct",
        &ns_path.display().to_string(),
        "default/slow",
        &conf,
    )
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(r.code, 0);
    assert!(
        r.json()["msg"]
            .as_str()
            .unwrap()
            .contains("allocate IP for pod default/slow"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_del_of_an_old_sandbox_leaves_the_new_one_alone() {
    let tb = Testbed::new(53).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.53.0.5"]));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, old_ns) = tb.pod_ns("o").unwrap();
    let (_, new_ns) = tb.pod_ns("n").unwrap();
    let (old_ns, new_ns) = (old_ns.display().to_string(), new_ns.display().to_string());
    assert_eq!(
        cni("ADD", "old", &old_ns, "default/web", &conf).await.code,
        0
    );
    // the pod's sandbox is recreated before the runtime deleted the old one
    assert_eq!(
        cni("ADD", "new", &new_ns, "default/web", &conf).await.code,
        0
    );
    let del = cni("DEL", "old", &old_ns, "default/web", &conf).await;
    assert_eq!(del.code, 0, "{}", del.stdout);
    assert_eq!(
        cni("CHECK", "new", &new_ns, "default/web", &conf)
            .await
            .code,
        0,
        "new sandbox untouched"
    );
    assert_eq!(our_rules(&tb).await.len(), 2);
    assert!(
        d.0.lock().unwrap().allocs.contains_key("default/web"),
        "stale release ignored"
    );
    assert_eq!(
        cni("DEL", "new", &new_ns, "default/web", &conf).await.code,
        0
    );
    assert!(our_rules(&tb).await.is_empty());
    assert!(cali_links(&tb).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_with_daemon_down_cleans_only_this_sandbox_and_asks_to_retry() {
    let tb = Testbed::new(54).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns) = tb.pod_ns("d").unwrap();
    let ns = ns.display().to_string();
    {
        // a daemon that answers ADD, then goes away with its runtime
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sock2 = sock.clone();
        let st = shared_state(&tb, &["10.54.0.5"]);
        let conf2 = conf.clone();
        let ns2 = ns.clone();
        let code = std::thread::spawn(move || {
            rt.block_on(async move {
                let _d = serve(&sock2, st);
                cni("ADD", "c1", &ns2, "default/web", &conf2).await.code
            })
        })
        .join()
        .unwrap();
        assert_eq!(code, 0);
    }
    std::fs::remove_file(&sock).unwrap();
    let del = cni("DEL", "c1", &ns, "default/web", &conf).await;
    assert_eq!(del.json()["code"], 11, "{}", del.stdout);
    // this sandbox's pair is gone (deleted from inside its own netns)
    assert!(cali_links(&tb).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_spec_errors_never_a_panic() {
    use tokio::io::AsyncWriteExt;
    for (stdin, code) in [
        (&b"not json"[..], 6),
        (
            &br#"{"cniVersion":"1.0.0","name":"terway","type":"terway","mtu":"big"}"#[..],
            7,
        ),
        (
            &br#"{"cniVersion":"1.0.0","name":"terway","type":"terway","eni_wait_attempts":-1}"#[..],
            7,
        ),
    ] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_terway"))
            .env_clear()
            .env("RUST_BACKTRACE", "1")
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "c1")
            .env("CNI_NETNS", "/run/netns/does-not-exist")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env("CNI_ARGS", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut si = child.stdin.take().unwrap();
        si.write_all(stdin).await.unwrap();
        drop(si);
        let out = child.wait_with_output().await.unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["code"], code, "{j}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("stack backtrace"),
            "{err}"
        );
    }
}
