//! The plugin never touches what it did not create: a CNI_NETNS that is the node's own namespace is refused
//! before anything is allocated, and a link that merely has the pod's interface name is neither deleted nor
//! renamed by setup, rollback or DEL.
//!
//! The "node" here is always a testbed namespace (a fake host with its own veth `eth0` and default route);
//! the plugin is started inside it, never in the machine's root namespace.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde_json::{json, Value};
use support::*;
use terway_datapath::addr::{self, Scope};
use terway_datapath::route::{self, Route};
use terway_datapath::testbed::Testbed;
use terway_datapath::{link, Netlink, Netns};

/// The fake host's uplink as the test built it.
struct Uplink {
    index: u32,
    mac: Option<terway_datapath::MacAddr>,
    gw: Ipv4Addr,
}

/// Give the testbed's host namespace a node-like `eth0`: a veth to the vpc namespace, an address and the
/// default route through it.
async fn fake_node_eth0(tb: &Testbed, octet: u8) -> Uplink {
    let eth0 = link::create_veth(&tb.host_nl, "eth0", "up0", Some(&tb.vpc), None, None)
        .await
        .unwrap();
    let up0 = link::require_link(&tb.vpc_nl, "up0").await.unwrap();
    let gw = Ipv4Addr::new(10, octet, 1, 1);
    let me = Ipv4Addr::new(10, octet, 1, 10);
    addr::ensure_addr(
        &tb.vpc_nl,
        up0.index,
        IpNet::V4(Ipv4Net::new(gw, 24).unwrap()),
        Scope::Universe,
    )
    .await
    .unwrap();
    link::set_up(&tb.vpc_nl, up0.index).await.unwrap();
    addr::ensure_addr(
        &tb.host_nl,
        eth0.index,
        IpNet::V4(Ipv4Net::new(me, 24).unwrap()),
        Scope::Universe,
    )
    .await
    .unwrap();
    link::set_up(&tb.host_nl, eth0.index).await.unwrap();
    let gw_ip = IpAddr::V4(gw);
    route::ensure_route(
        &tb.host_nl,
        &Route::via_onlink(Route::default_dst(&gw_ip), gw_ip, eth0.index),
    )
    .await
    .unwrap();
    Uplink {
        index: eth0.index,
        mac: eth0.mac,
        gw,
    }
}

/// The node's `eth0` is the same link as before (same index and MAC, still a veth, still up) and the default
/// route still goes through it.
async fn assert_uplink_untouched(tb: &Testbed, up: &Uplink) {
    let eth0 = link::require_link(&tb.host_nl, "eth0").await.unwrap();
    assert_eq!(
        (eth0.index, eth0.mac, eth0.kind.as_deref(), eth0.up),
        (up.index, up.mac, Some("veth"), true),
        "{eth0:?}"
    );
    let defaults: Vec<Route> = route::list_routes(&tb.host_nl, true, Some(254))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.dst.prefix_len() == 0)
        .collect();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].gateway, Some(IpAddr::V4(up.gw)), "{defaults:?}");
    assert_eq!(defaults[0].oif, Some(up.index), "{defaults:?}");
    assert!(cali_links(tb).await.is_empty());
}

fn without_host_netns(mut conf: Value) -> Value {
    if let Some(o) = conf.as_object_mut() {
        o.remove("host_netns");
    }
    conf
}

fn assert_refused(r: &Run, path: &str) {
    let j = r.json();
    assert_eq!(j["code"], 4, "{} {}", r.stdout, r.stderr);
    let msg = j["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(path), "message names the path: {msg}");
    assert!(msg.contains("node's own network namespace"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_del_check_into_the_nodes_own_namespace_are_refused() {
    let tb = Testbed::new(60).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.60.0.5"]));
    let up = fake_node_eth0(&tb, 60).await;
    let node: PathBuf = Netns::named_path(&tb.host_name);
    let node_str = node.display().to_string();
    // As deployed: the plugin runs in the node's namespace and host_netns is unset ...
    let plain = without_host_netns(plugin_conf(&tb, &sock, dir.path(), json!({})));
    // ... or host_netns names the node's namespace explicitly.
    let explicit = plugin_conf(&tb, &sock, dir.path(), json!({}));
    for conf in [&plain, &explicit] {
        for target in ["/proc/self/ns/net", node_str.as_str()] {
            for cmd in ["ADD", "CHECK", "DEL"] {
                let r = cni_in(Some(&node), cmd, "c1", target, "default/web", conf).await;
                assert_refused(&r, target);
                assert_uplink_untouched(&tb, &up).await;
            }
        }
    }
    let s = d.0.lock().unwrap();
    assert!(s.allocs.is_empty(), "nothing was allocated: {:?}", s.allocs);
    assert!(s.released.is_empty(), "{:?}", s.released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_into_a_namespace_the_plugin_runs_in_is_refused_even_with_another_host_netns() {
    // The plugin runs in a namespace other than host_netns (as the tests and the lab run it): that
    // namespace is not a pod sandbox either.
    let tb = Testbed::new(61).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.61.0.5"]));
    let (_, other) = tb.pod_ns("runner").unwrap();
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let r = cni_in(
        Some(&other),
        "ADD",
        "c1",
        "/proc/self/ns/net",
        "default/web",
        &conf,
    )
    .await;
    assert_refused(&r, "/proc/self/ns/net");
    assert!(d.0.lock().unwrap().allocs.is_empty());
}

/// A veth named `eth0` that terway did not create (another plugin's, or the node's own) in `ns`.
async fn foreign_eth0(tb: &Testbed, ns: &Path, peer_tag: &str) -> link::Link {
    let pod = Netns::open(ns).unwrap();
    let nl = Netlink::open(&pod).unwrap();
    let (_, peer) = tb.pod_ns(peer_tag).unwrap();
    let peer = Netns::open(peer).unwrap();
    link::create_veth(&nl, "eth0", "other0", Some(&peer), None, None)
        .await
        .unwrap()
}

async fn eth0_in(ns: &Path) -> Option<link::Link> {
    let nl = Netlink::open(&Netns::open(ns).unwrap()).unwrap();
    link::link_by_name(&nl, "eth0").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_never_deletes_a_foreign_eth0_in_the_pod() {
    let tb = Testbed::new(62).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let d = serve(&sock, shared_state(&tb, &["10.62.0.5"]));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns) = tb.pod_ns("p").unwrap();
    let theirs = foreign_eth0(&tb, &ns, "peer").await;
    let r = cni("ADD", "c1", &ns.display().to_string(), "default/web", &conf).await;
    assert_ne!(r.code, 0, "{}", r.stdout);
    let msg = r.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("eth0") && msg.contains("not created by terway"),
        "{msg}"
    );
    let still = eth0_in(&ns).await.expect("foreign eth0 kept");
    assert_eq!((still.index, still.mac), (theirs.index, theirs.mac));
    assert!(cali_links(&tb).await.is_empty());
    assert!(our_rules(&tb).await.is_empty());
    assert_eq!(
        d.0.lock().unwrap().released,
        [(
            "default/web".to_string(),
            "roll back ip for error".to_string()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_and_del_never_delete_a_foreign_eth0() {
    let tb = Testbed::new(63).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    // The ENI never shows up: ADD fails before it creates anything and rolls back.
    let mut st = shared_state(&tb, &["10.63.0.5"]);
    if let Some(e) = st.template.eni.as_mut() {
        e.mac = "02:00:5e:00:63:63".into();
    }
    let d = serve(&sock, st);
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns) = tb.pod_ns("r").unwrap();
    let netns = ns.display().to_string();
    let theirs = foreign_eth0(&tb, &ns, "peer").await;
    let r = cni("ADD", "c1", &netns, "default/web", &conf).await;
    assert_eq!(r.json()["code"], 11, "{}", r.stdout);
    let still = eth0_in(&ns).await.expect("rollback kept the foreign eth0");
    assert_eq!(still.index, theirs.index);
    // DEL with the daemon answering "unknown pod" and with the daemon gone: both clean by name only.
    assert_eq!(cni("DEL", "c1", &netns, "default/web", &conf).await.code, 0);
    assert_eq!(eth0_in(&ns).await.map(|l| l.index), Some(theirs.index));
    drop(d);
    std::fs::remove_file(&sock).unwrap();
    let del = cni("DEL", "c1", &netns, "default/web", &conf).await;
    assert_eq!(del.json()["code"], 11, "{}", del.stdout);
    assert_eq!(
        eth0_in(&ns).await.map(|l| l.index),
        Some(theirs.index),
        "DEL without the daemon kept the foreign eth0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_add_replaces_our_own_eth0() {
    // The marker must not get in the way of what ADD legitimately replaces: its own earlier pod link.
    let tb = Testbed::new(64).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_path(dir.path());
    let _d = serve(&sock, shared_state(&tb, &["10.64.0.5"]));
    let conf = plugin_conf(&tb, &sock, dir.path(), json!({}));
    let (_, ns) = tb.pod_ns("a").unwrap();
    let netns = ns.display().to_string();
    assert_eq!(cni("ADD", "c1", &netns, "default/web", &conf).await.code, 0);
    let first = eth0_in(&ns).await.unwrap();
    assert_eq!(
        first.alias.as_deref(),
        Some(terway_datapath::driver::owner::pod_if_alias("c1").as_str())
    );
    // The host end no longer has the pod's name (renamed by hand): the pod's eth0 is still found as ours
    // by its mark, deleted with its peer, and the pair rebuilt.
    let hv = terway_datapath::driver::host_veth_name("default", "web", "eth0");
    let host_end = link::require_link(&tb.host_nl, &hv).await.unwrap();
    link::set_down(&tb.host_nl, host_end.index).await.unwrap();
    link::rename(&tb.host_nl, host_end.index, "renamed0")
        .await
        .unwrap();
    let r = cni("ADD", "c1", &netns, "default/web", &conf).await;
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(link::link_by_name(&tb.host_nl, "renamed0")
        .await
        .unwrap()
        .is_none());
    assert_ne!(eth0_in(&ns).await.unwrap().index, first.index);
    assert_eq!(
        cni("CHECK", "c1", &netns, "default/web", &conf).await.code,
        0
    );
    assert_eq!(cni("DEL", "c1", &netns, "default/web", &conf).await.code, 0);
}
