//! Records of pod interfaces against the emulator: pod identity is validated before anything is
//! recorded, pods whose names once collided in the store keep separate records, a pod's interfaces each
//! hold their own address, and DEL/CHECK get back exactly what ADD was told — also after a restart.

mod common;

use common::*;
use terway_rpc::v1 as pb;

fn pod_in(ns: &str, name: &str, cid: &str) -> Option<pb::PodRef> {
    Some(pb::PodRef {
        namespace: ns.into(),
        name: name.into(),
        container_id: cid.into(),
        uid: String::new(),
    })
}

async fn alloc_if(
    c: &mut pb::terway_backend_client::TerwayBackendClient<tonic::transport::Channel>,
    pod: Option<pb::PodRef>,
    if_name: &str,
) -> Result<pb::AllocIpReply, tonic::Status> {
    alloc_with(c, pod, if_name, "").await
}

/// AllocIP for one interface, asking for `ip` (empty: any).
async fn alloc_with(
    c: &mut pb::terway_backend_client::TerwayBackendClient<tonic::transport::Channel>,
    pod: Option<pb::PodRef>,
    if_name: &str,
    ip: &str,
) -> Result<pb::AllocIpReply, tonic::Status> {
    c.alloc_ip(pb::AllocIpRequest {
        pod,
        netns: "/var/run/netns/x".into(),
        if_name: if_name.into(),
        ip: ip.into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn info_if(
    c: &mut pb::terway_backend_client::TerwayBackendClient<tonic::transport::Channel>,
    pod: Option<pb::PodRef>,
    if_name: &str,
) -> Result<pb::GetIpInfoReply, tonic::Status> {
    c.get_ip_info(pb::GetIpInfoRequest {
        pod,
        if_name: if_name.into(),
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_kubernetes_would_refuse_are_refused_and_never_share_a_record() {
    let env = Env::new(|_| {});
    let d = env.start(env.daemon_config()).await;
    let mut c = client(&env.socket()).await;
    // On the old main both were accepted and stored under the one key "a/b/c".
    for (ns, name) in [
        ("a", "b/c"),
        ("a/b", "c"),
        ("..", ".."),
        ("a", "x\ny"),
        ("a", &"p".repeat(300)),
    ] {
        let e = alloc_if(&mut c, pod_in(ns, name, "c1"), "eth0")
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{ns:?}/{name:?}");
        assert!(e.message().contains("not valid"), "{}", e.message());
    }
    let e = alloc_if(&mut c, pod_in("a", "ok", "c1"), "../x")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(d
        .backends()
        .all()
        .iter()
        .all(|b| b.allocations().is_empty()));
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_interface_of_a_pod_holds_its_own_address_and_is_answered_with_its_own_name() {
    let env = Env::new(|_| {});
    let cfg = env.daemon_config();
    let d = env.start(cfg.clone()).await;
    let mut c = client(&env.socket()).await;
    let eth0 = alloc_if(&mut c, pod("multi", "c1"), "eth0").await.unwrap();
    let net1 = alloc_if(&mut c, pod("multi", "c1"), "net1").await.unwrap();
    assert_eq!(net1.net_confs[0].if_name, "net1");
    assert_ne!(ip_of(&eth0), ip_of(&net1), "two interfaces, two addresses");
    // Asked again (a runtime retry): the same answer, not a third address.
    assert_eq!(
        ip_of(&alloc_if(&mut c, pod("multi", "c1"), "net1").await.unwrap()),
        ip_of(&net1)
    );
    // What DEL and CHECK are told is the interface's own record (the old daemon said eth0 for both).
    let i = info_if(&mut c, pod("multi", "c1"), "net1").await.unwrap();
    assert_eq!(i.net_confs[0].if_name, "net1");
    assert_eq!(i.net_confs[0].pod_ip, net1.net_confs[0].pod_ip);
    assert_eq!(i.net_confs[0].eni, net1.net_confs[0].eni);
    // ...also after a restart, read back from the store.
    d.stop().await.unwrap();
    let d = env.start(cfg).await;
    let mut c = client(&env.socket()).await;
    let i = info_if(&mut c, pod("multi", "c1"), "net1").await.unwrap();
    assert_eq!(i.net_confs[0].if_name, "net1");
    assert_eq!(i.net_confs[0].pod_ip, net1.net_confs[0].pod_ip);
    let i = info_if(&mut c, pod("multi", "c1"), "").await.unwrap();
    assert_eq!(
        i.net_confs[0].pod_ip, eth0.net_confs[0].pod_ip,
        "empty = eth0"
    );
    // Releasing net1 leaves eth0 alone.
    let r = c
        .release_ip(pb::ReleaseIpRequest {
            pod: pod("multi", "c1"),
            reason: "test".into(),
            if_name: "net1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.released);
    assert_eq!(
        info_if(&mut c, pod("multi", "c1"), "net1")
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    assert!(info_if(&mut c, pod("multi", "c1"), "eth0").await.is_ok());
    assert_agrees(&env, &d, common::INSTANCE);
    d.stop().await.unwrap();
}

/// The pods table as the daemon writes it (keys are internal; the test rewrites one row by hand).
const PODS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("pods");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_file_from_before_interface_records_is_upgraded_on_start() {
    use redb::{ReadableDatabase, ReadableTable};
    let env = Env::new(|_| {});
    let cfg = env.daemon_config();
    let d = env.start(cfg.clone()).await;
    let mut c = client(&env.socket()).await;
    let r = alloc(&mut c, "old", "c1").await.unwrap();
    let ip = ip_of(&r);
    let eni = r.net_confs[0].eni.clone().unwrap();
    d.stop().await.unwrap();
    // Rewrite the record the way the previous release stored it: keyed "namespace/name", no
    // interface, backend or answer.
    {
        let db = redb::Database::create(cfg.db_path()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut pods = txn.open_table(PODS).unwrap();
            let keys: Vec<String> = pods
                .iter()
                .unwrap()
                .map(|row| row.unwrap().0.value().to_string())
                .collect();
            assert_eq!(keys, vec![r#"["default","old","eth0"]"#.to_string()]);
            pods.remove(keys[0].as_str()).unwrap();
            let legacy = format!(
                r#"{{"pod":{{"namespace":"default","name":"old"}},"container_id":"c1","uid":"","ip":"{ip}","eni_id":"{}","sticky":false,"at_ms":1}}"#,
                eni.eni_id
            );
            pods.insert("default/old", legacy.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    }
    let d = env.start(cfg.clone()).await;
    let mut c = client(&env.socket()).await;
    let i = info_if(&mut c, pod("old", "c1"), "eth0").await.unwrap();
    assert_eq!(i.container_id, "c1");
    assert_eq!(i.net_confs[0].if_name, "eth0");
    assert_eq!(i.net_confs[0].pod_ip, r.net_confs[0].pod_ip);
    assert_eq!(
        i.net_confs[0].eni,
        Some(eni),
        "the answer is rebuilt from the record's ENI"
    );
    // The same sandbox asking again keeps its address; nobody else can get it.
    assert_eq!(ip_of(&alloc(&mut c, "old", "c1").await.unwrap()), ip);
    assert_ne!(ip_of(&alloc(&mut c, "new", "c2").await.unwrap()), ip);
    assert_agrees(&env, &d, common::INSTANCE);
    d.stop().await.unwrap();
    // The legacy row is gone; only today's key remains.
    let db = redb::Database::create(cfg.db_path()).unwrap();
    let txn = db.begin_read().unwrap();
    let pods = txn.open_table(PODS).unwrap();
    let keys: Vec<String> = pods
        .iter()
        .unwrap()
        .map(|row| row.unwrap().0.value().to_string())
        .collect();
    assert!(!keys.contains(&"default/old".to_string()), "{keys:?}");
    assert!(
        keys.contains(&r#"["default","old","eth0"]"#.to_string()),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtime_containers_get_addresses_survive_the_pod_gc_and_get_their_address_back_on_request()
{
    let env = Env::new(|_| {});
    // The pods file lists no pod at all: a Kubernetes pod allocated now would be released by the GC.
    env.write_pods(&[]);
    let d = env.start(env.daemon_config()).await;
    let mut c = client(&env.socket()).await;
    let rt = terway_core::RUNTIME_NAMESPACE;
    let a = alloc_if(&mut c, pod_in(rt, "ctr-web1", "ctr-web1"), "eth0")
        .await
        .expect("a runtime container gets an address without a pod object");
    let ip_a = ip_of(&a);
    let gc = d.gc().await.unwrap();
    assert_eq!(
        gc.released_pods, 0,
        "the pod GC leaves runtime containers alone"
    );
    let info = c
        .get_ip_info(pb::GetIpInfoRequest {
            pod: pod_in(rt, "ctr-web1", "ctr-web1"),
            if_name: "eth0".into(),
        })
        .await
        .expect("still allocated after GC")
        .into_inner();
    assert!(format!("{info:?}").contains(&ip_a.to_string()));
    // A second container asking for the first one's address is refused, naming the holder.
    let e = alloc_with(
        &mut c,
        pod_in(rt, "other", "other"),
        "eth0",
        &ip_a.to_string(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("in use by _runtime/ctr-web1"),
        "{}",
        e.message()
    );
    // podman's `network reload`: DEL, then ADD with IP= of the old address, within the cooldown.
    c.release_ip(pb::ReleaseIpRequest {
        pod: pod_in(rt, "ctr-web1", "ctr-web1"),
        reason: "reload".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let again = alloc_with(
        &mut c,
        pod_in(rt, "ctr-web1", "ctr-web1"),
        "eth0",
        &ip_a.to_string(),
    )
    .await
    .expect("the address just released comes back on request");
    assert_eq!(ip_of(&again), ip_a);
    // An address this node does not hold cannot be had.
    let e = alloc_with(&mut c, pod_in(rt, "x", "x"), "eth0", "192.0.2.7")
        .await
        .unwrap_err();
    assert!(
        e.message().contains("not on any of this node's ENIs"),
        "{}",
        e.message()
    );
    d.stop().await.unwrap();
}
