//! The real `terway` binary, driven with real env + stdin against a fake terwayd and real namespaces.

mod support;

use std::net::Ipv4Addr;

use serde_json::json;
use support::*;
use terway_datapath::testbed::Testbed;
use terway_datapath::{link, rule};
use terway_rpc::v1::NetworkMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_eni_add_check_del_via_binary() {
    let tb = Testbed::new(41).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.41.0.5"]));
    let conf = plugin_conf(
        &tb,
        &sock,
        dir.path(),
        json!({"runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000, "egressRate": 16_000_000}}}),
    );
    let (ns_name, ns_path) = tb.pod_ns("a").unwrap();
    let netns = ns_path.display().to_string();

    let r = cni("ADD", "c1", &netns, "default/web", &conf).await;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let res = r.json();
    assert_eq!(res["cniVersion"], "1.0.0");
    assert_eq!(
        res["interfaces"][0]["name"].as_str().unwrap(),
        terway_datapath::driver::host_veth_name("default", "web", "eth0")
    );
    assert_eq!(res["interfaces"][1]["name"], "eth0");
    assert_eq!(res["interfaces"][1]["sandbox"], netns.as_str());
    assert_eq!(res["ips"][0]["address"], "10.41.0.5/32");
    assert_eq!(res["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(res["ips"][0]["interface"], 1);
    assert_eq!(res["routes"][0]["dst"], "0.0.0.0/0");
    tb.vpc_learn(Ipv4Addr::new(10, 41, 0, 5)).await.unwrap();
    assert!(ping(&ns_name, tb.peer_ip), "pod -> peer behind the ENI");
    assert!(ping(&ns_name, tb.node_ip), "pod -> node");
    let eni = link::require_link(&tb.host_nl, &tb.eni_name).await.unwrap();
    assert_eq!(
        our_rules(&tb).await,
        [
            "512: to 10.41.0.5/32 lookup 254".to_string(),
            format!("2048: from 10.41.0.5/32 lookup {}", 1000 + eni.index)
        ]
    );
    assert!(d
        .0
        .lock()
        .unwrap()
        .events
        .iter()
        .any(|(r, m)| r == "AllocIPSucceed" && m.contains("10.41.0.5")));

    // ADD again for the same container: same answer, no duplicate state
    let r2 = cni("ADD", "c1", &netns, "default/web", &conf).await;
    assert_eq!(r2.code, 0, "{}", r2.stdout);
    assert_eq!(r2.json()["ips"], res["ips"]);
    assert_eq!(our_rules(&tb).await.len(), 2);

    let c = cni("CHECK", "c1", &netns, "default/web", &conf).await;
    assert_eq!(c.code, 0, "{}", c.stdout);
    assert!(c.stdout.is_empty());
    // CHECK with the ADD result as prevResult (as runtimes send it), and with a wrong one
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = res.clone();
    assert_eq!(
        cni("CHECK", "c1", &netns, "default/web", &with_prev)
            .await
            .code,
        0
    );
    with_prev["prevResult"]["ips"][0]["address"] = json!("10.41.0.99/32");
    let c = cni("CHECK", "c1", &netns, "default/web", &with_prev).await;
    assert!(
        c.json()["msg"]
            .as_str()
            .unwrap()
            .contains("prevResult does not contain 10.41.0.5"),
        "{}",
        c.stdout
    );
    // CHECK for another sandbox of the pod is an unknown container
    let c = cni("CHECK", "c0", &netns, "default/web", &conf).await;
    assert_eq!(c.json()["code"], 3, "{}", c.stdout);

    let del = cni("DEL", "c1", &netns, "default/web", &conf).await;
    assert_eq!(del.code, 0, "{} {}", del.stdout, del.stderr);
    // Everything that references the pod IP is gone when DEL returns ...
    assert!(our_rules(&tb).await.is_empty());
    assert!(host_routes_to(&tb, "10.41.0.5").await.is_empty());
    assert!(cali_links(&tb).await.is_empty());
    assert!(
        !ping(&ns_name, tb.node_ip),
        "retired veth carries no traffic"
    );
    assert_eq!(
        d.0.lock().unwrap().released,
        [("default/web".to_string(), "normal release".to_string())]
    );
    // ... the host veth is only retired: down, tagged with the sandbox, waiting for the netns to go.
    let retired = retired_links(&tb).await;
    assert_eq!(retired.len(), 1);
    assert!(!retired[0].up);
    assert!(
        retired[0].alias.as_deref().unwrap().ends_with(":c1"),
        "{:?}",
        retired[0].alias
    );
    let del2 = cni("DEL", "c1", &netns, "default/web", &conf).await;
    assert_eq!(del2.code, 0, "{}", del2.stdout);
    assert_eq!(
        retired_links(&tb).await.len(),
        1,
        "DEL twice changes nothing"
    );
    // A new sandbox of the same pod right away: same host veth name, the retired one must not be in the way.
    d.0.lock().unwrap().next_ip.push("10.41.0.6".into());
    let (_, ns2_path) = tb.pod_ns("a2").unwrap();
    let netns2 = ns2_path.display().to_string();
    let r = cni("ADD", "c2", &netns2, "default/web", &conf).await;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(
        cni("CHECK", "c2", &netns2, "default/web", &conf).await.code,
        0
    );
    assert!(retired_links(&tb).await.is_empty());
    assert_eq!(
        cni("DEL", "c2", &netns2, "default/web", &conf).await.code,
        0
    );
    // The runtime removes the netns: the kernel destroys the pair.
    terway_datapath::netns::Netns::delete_path(&ns2_path).unwrap();
    assert!(wait_no_cali(&tb).await.is_empty());
    assert!(
        dir.path().join("terway.log").exists(),
        "debug logs to the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipvlan_request_falls_back_and_reports_it() {
    let tb = Testbed::new(44).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.44.0.3"]));
    let conf = plugin_conf(
        &tb,
        &sock,
        dir.path(),
        json!({"eniip_virtual_type": "ipvlan", "host_stack_cidrs": ["169.254.20.10/32"]}),
    );
    let (ns_name, ns_path) = tb.pod_ns("i").unwrap();
    let netns = ns_path.display().to_string();
    let r = cni("ADD", "c3", &netns, "default/ipv", &conf).await;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let lacks_ipvlan = std::process::Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep -q '# CONFIG_IPVLAN is not set'",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if lacks_ipvlan {
        let ev = d.0.lock().unwrap().events.clone();
        assert!(
            ev.iter()
                .any(|(r, m)| r == "VirtualModeChanged" && m.contains("ipvlan")),
            "{ev:?}"
        );
        assert_eq!(our_rules(&tb).await.len(), 2, "policy routing in place");
        tb.vpc_learn(Ipv4Addr::new(10, 44, 0, 3)).await.unwrap();
        assert!(ping(&ns_name, tb.peer_ip));
    }
    assert_eq!(
        cni("CHECK", "c3", &netns, "default/ipv", &conf).await.code,
        0
    );
    assert_eq!(cni("DEL", "c3", &netns, "default/ipv", &conf).await.code, 0);
    assert!(our_rules(&tb).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_invalid_attachments() {
    let tb = Testbed::new(46).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let _d = serve(&sock, shared_state(&tb, &["10.46.0.3", "10.46.0.4"]));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({"cniVersion": "1.1.0"}));
    let (_, a) = tb.pod_ns("a").unwrap();
    let (_, b) = tb.pod_ns("b").unwrap();
    assert_eq!(
        cni("ADD", "ca", &a.display().to_string(), "default/a", &conf)
            .await
            .code,
        0
    );
    assert_eq!(
        cni("ADD", "cb", &b.display().to_string(), "default/b", &conf)
            .await
            .code,
        0
    );
    assert_eq!(cali_links(&tb).await.len(), 2);
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "ca", "ifname": "eth0"}]);
    let r = cni("GC", "", "", "default/a", &gc_conf).await;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(
        cali_links(&tb).await,
        [terway_datapath::driver::host_veth_name(
            "default", "a", "eth0"
        )]
    );
    let rules = our_rules(&tb).await;
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().all(|r| r.contains("10.46.0.3")), "{rules:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_eni_via_binary() {
    let tb = Testbed::new(47).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let mut st = shared_state(&tb, &["10.47.0.8"]);
    st.mode = NetworkMode::ExclusiveEni as i32;
    let _d = serve(&sock, st);
    let conf = plugin_conf(
        &tb,
        &sock,
        dir.path(),
        json!({"host_stack_cidrs": ["169.254.20.10/32"]}),
    );
    let (ns_name, ns_path) = tb.pod_ns("x").unwrap();
    let netns = ns_path.display().to_string();
    let r = cni("ADD", "cx", &netns, "default/db", &conf).await;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.json()["ips"][0]["gateway"], tb.gateway.to_string());
    assert!(link::link_by_name(&tb.host_nl, &tb.eni_name)
        .await
        .unwrap()
        .is_none());
    assert!(ping(&ns_name, tb.peer_ip));
    assert_eq!(
        cni("CHECK", "cx", &netns, "default/db", &conf).await.code,
        0
    );
    assert_eq!(cni("DEL", "cx", &netns, "default/db", &conf).await.code, 0);
    let back = link::require_link(&tb.host_nl, &tb.eni_name).await.unwrap();
    assert_eq!(back.mac, Some(tb.eni_mac));
    assert!(cali_links(&tb).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_adds_and_dels_on_one_eni() {
    let tb = Testbed::new(49).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let ips: Vec<String> = (10..18).map(|i| format!("10.49.0.{i}")).collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let _d = serve(&sock, shared_state(&tb, &refs));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let mut pods = Vec::new();
    for i in 0..8 {
        let (_, p) = tb.pod_ns(&format!("q{i}")).unwrap();
        pods.push((
            format!("c{i}"),
            p.display().to_string(),
            format!("default/par{i}"),
        ));
    }
    let adds = pods.iter().map(|(c, n, p)| cni("ADD", c, n, p, &conf));
    for r in futures_join(adds).await {
        assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    }
    assert_eq!(our_rules(&tb).await.len(), 16);
    let checks = pods.iter().map(|(c, n, p)| cni("CHECK", c, n, p, &conf));
    for r in futures_join(checks).await {
        assert_eq!(r.code, 0, "{}", r.stdout);
    }
    let dels = pods.iter().map(|(c, n, p)| cni("DEL", c, n, p, &conf));
    for r in futures_join(dels).await {
        assert_eq!(r.code, 0, "{}", r.stdout);
    }
    assert!(our_rules(&tb).await.is_empty());
    assert!(cali_links(&tb).await.is_empty());
    for (_, n, _) in &pods {
        terway_datapath::netns::Netns::delete_path(std::path::Path::new(n)).unwrap();
    }
    assert!(
        wait_no_cali(&tb).await.is_empty(),
        "pairs go with their netns"
    );
}

/// The runtime never removes the netns after DEL: the sweep of a later ADD/DEL/GC deletes the retired
/// veth once it is older than the grace period, so nothing leaks. ADD and DEL sweep at most once per
/// sweep interval (a stamp in the lock directory); the test removes the stamp to stand for its passing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_veth_is_swept_when_the_netns_stays() {
    let tb = Testbed::new(55).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let _d = serve(&sock, shared_state(&tb, &["10.55.0.5"]));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns_path) = tb.pod_ns("s").unwrap();
    let netns = ns_path.display().to_string();
    assert_eq!(
        cni("ADD", "c1", &netns, "default/keep", &conf).await.code,
        0
    );
    assert_eq!(
        cni("DEL", "c1", &netns, "default/keep", &conf).await.code,
        0
    );
    let retired = retired_links(&tb).await;
    assert_eq!(retired.len(), 1);
    let stamp = dir.path().join("locks").join("retired-sweep.stamp");
    assert!(stamp.exists(), "the ADD swept and recorded it");
    // A sweep within the grace period leaves it (the runtime is about to remove the netns).
    std::fs::remove_file(&stamp).unwrap();
    assert_eq!(cni("DEL", "c9", "", "default/other", &conf).await.code, 0);
    assert_eq!(retired_links(&tb).await.len(), 1);
    // Pretend the grace period has passed.
    link::update_link(
        &tb.host_nl,
        retired[0].index,
        &link::LinkUpdate {
            alias: Some(terway_datapath::driver::retire::retired_alias(1, "c1")),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Within the sweep interval a DEL does not look ...
    assert_eq!(cni("DEL", "c9", "", "default/other", &conf).await.code, 0);
    assert_eq!(
        retired_links(&tb).await.len(),
        1,
        "no sweep within the interval"
    );
    // ... once it has passed, it does.
    std::fs::remove_file(&stamp).unwrap();
    assert_eq!(cni("DEL", "c9", "", "default/other", &conf).await.code, 0);
    assert!(retired_links(&tb).await.is_empty(), "swept");
    assert!(link::link_by_name(&tb.host_nl, &retired[0].name)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_first_difference() {
    let tb = Testbed::new(50).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let _d = serve(&sock, shared_state(&tb, &["10.50.0.5"]));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns_path) = tb.pod_ns("k").unwrap();
    let netns = ns_path.display().to_string();
    assert_eq!(cni("ADD", "ck", &netns, "default/chk", &conf).await.code, 0);
    let ip: ipnet::IpNet = "10.50.0.5/32".parse().unwrap();
    terway_datapath::driver::policy_route::remove_pod_rules(&tb.host_nl, ip)
        .await
        .unwrap();
    let c = cni("CHECK", "ck", &netns, "default/chk", &conf).await;
    let j = c.json();
    assert_eq!(j["code"], 102, "{j}");
    assert!(
        j["msg"]
            .as_str()
            .unwrap()
            .contains("rule 512: to 10.50.0.5/32 lookup 254 is missing"),
        "{j}"
    );
    // ADD repairs it
    assert_eq!(cni("ADD", "ck", &netns, "default/chk", &conf).await.code, 0);
    assert_eq!(
        cni("CHECK", "ck", &netns, "default/chk", &conf).await.code,
        0
    );
    assert_eq!(cni("DEL", "ck", &netns, "default/chk", &conf).await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pod_via_binary() {
    let tb = Testbed::new(51).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let mut st = shared_state(&tb, &["10.51.0.5"]);
    let v6 = std::net::Ipv6Addr::new(0xfd00, 51, 0, 0, 0, 0, 0, 5);
    st.template.pod_ip = Some(terway_rpc::v1::IpSet {
        ipv4: String::new(),
        ipv6: v6.to_string(),
    });
    if let Some(e) = st.template.eni.as_mut() {
        if let Some(g) = e.gateway.as_mut() {
            g.ipv6 = tb.gateway6.to_string();
        }
    }
    let _d = serve(&sock, st);
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (ns_name, ns_path) = tb.pod_ns("6").unwrap();
    let netns = ns_path.display().to_string();
    let r = cni("ADD", "c6", &netns, "default/v6", &conf).await;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["ips"][1]["address"], format!("{v6}/128"));
    assert_eq!(j["ips"][1]["gateway"], "fe80::1");
    assert_eq!(j["routes"][1]["dst"], "::/0");
    tb.vpc_learn(Ipv4Addr::new(10, 51, 0, 5)).await.unwrap();
    tb.vpc_learn(v6).await.unwrap();
    assert!(
        (0..3).any(|_| ping(&ns_name, tb.peer_ip6.to_string())),
        "v6 traffic"
    );
    assert_eq!(
        cni("CHECK", "c6", &netns, "default/v6", &conf).await.code,
        0
    );
    assert_eq!(cni("DEL", "c6", &netns, "default/v6", &conf).await.code, 0);
    let rules6 = rule::list_rules(&tb.host_nl, false).await.unwrap();
    assert!(
        rules6
            .iter()
            .all(|r| r.priority != 512 && r.priority != 2048),
        "{rules6:?}"
    );
}
