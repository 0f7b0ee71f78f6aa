//! terway-cli against a real terwayd (in-process, backed by the emulator over HTTP).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use terway_cloud::backoff::BackoffTable;
use terway_cloud::{AlibabaCloud, CloudConfig, MetadataClient, MetadataConfig};
use terway_daemon::{Daemon, DaemonConfig, LocalPodSource};
use terway_emulator::{Emulator, EmulatorConfig, NoFabric};
use terway_rpc::v1 as pb;

const INSTANCE: &str = "i-emu00000000000000001";

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_terway-cli"))
        .args(args)
        .output()
        .expect("run terway-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_maxpods_against_a_running_daemon() {
    let mut ec = EmulatorConfig {
        throttling: false,
        ..Default::default()
    };
    ec.delays.attach_min_ms = 20;
    ec.delays.attach_max_ms = 40;
    let emu = Emulator::start(ec, Arc::new(NoFabric)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ak = emu.access_key();
    let mut cc = CloudConfig::for_endpoint(&emu.region_id(), &emu.api_url(), &ak.id, &ak.secret);
    let mut md = MetadataConfig {
        base_url: emu.metadata_url(),
        ..Default::default()
    };
    md.extra_headers
        .insert(terway_emulator::INSTANCE_HEADER.into(), INSTANCE.into());
    cc.metadata = md.clone();
    let cloud = AlibabaCloud::new(cc).unwrap();
    let meta = MetadataClient::new(md, &BackoffTable::new(&Default::default())).unwrap();
    let socket = dir.path().join("eni.socket");
    let mut cfg = DaemonConfig {
        socket_path: socket.clone(),
        state_dir: dir.path().join("state"),
        ..Default::default()
    };
    cfg.pool.min_idle = 2;
    cfg.pool.batch_window = Duration::from_millis(20);
    let d = Daemon::start(cfg, cloud, meta, LocalPodSource::new(None))
        .await
        .unwrap();
    let ch = terway_rpc::connect_unix(&socket, Duration::from_secs(5))
        .await
        .unwrap();
    let mut c = pb::terway_backend_client::TerwayBackendClient::new(ch);
    let pod = pb::PodRef {
        namespace: "default".into(),
        name: "web".into(),
        container_id: "c1".into(),
        uid: String::new(),
    };
    let r = c
        .alloc_ip(pb::AllocIpRequest {
            pod: Some(pod),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ip = r.net_confs[0].pod_ip.clone().unwrap().ipv4;

    let s = socket.to_str().unwrap();
    let (ok, text) = cli(&["status", "--socket", s, "--ips"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("default/web")
            && text.contains(&ip)
            && text.contains("CreateNetworkInterface"),
        "{text}"
    );
    let (ok, json) = cli(&["status", "--socket", s, "--json"]);
    assert!(ok, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["pods"][0]["ipv4"], ip.as_str());
    assert_eq!(v["instance_id"], INSTANCE);
    assert_eq!(v["limits"]["eni_quantity"], 8);

    let (ok, text) = cli(&["maxpods", "--socket", s]);
    assert!(ok && text.contains("shared ENI:    210 pods"), "{text}");
    let (ok, text) = cli(&[
        "maxpods",
        "--eni-quantity",
        "3",
        "--ips-per-eni",
        "10",
        "--json",
    ]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["shared"], 20);
    let (ok, text) = cli(&["status", "--socket", "/nonexistent/eni.socket"]);
    assert!(!ok && text.contains("cannot connect to terwayd"), "{text}");
    d.stop().await.unwrap();
    emu.shutdown().await;
}
