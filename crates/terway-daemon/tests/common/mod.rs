//! Shared harness: an emulator on loopback (real HTTP, fast delays), the terway-cloud HTTP clients
//! pointed at it, a daemon started in-process on a temp socket with a real redb file, and a gRPC
//! client over the unix socket. Everything lives in a temp dir removed on drop.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use terway_cloud::backoff::{self, Backoff, BackoffOverride, BackoffTable};
use terway_cloud::{AlibabaCloud, CloudConfig, MetadataClient, MetadataConfig};
use terway_daemon::{Daemon, DaemonConfig, LocalPodSource, PodMeta, PodsFile};
use terway_emulator::{EmulatorConfig, NoFabric, RunningEmulator};
use terway_rpc::v1 as pb;
use terway_rpc::v1::terway_backend_client::TerwayBackendClient;
use tonic::transport::Channel;

/// Instance of the default emulator configuration.
pub const INSTANCE: &str = "i-emu00000000000000001";
/// Its vSwitch.
pub const VSW: &str = "vsw-emu0000000000000001";

/// The daemon type the tests run.
pub type TestDaemon = Daemon<AlibabaCloud, MetadataClient, LocalPodSource>;

fn quick(ms: u64, steps: u32) -> Backoff {
    Backoff {
        initial_delay: Duration::ZERO,
        duration: Duration::from_millis(ms),
        factor: 1.5,
        jitter: 0.2,
        steps,
        cap: Some(Duration::from_millis(500)),
    }
}

/// Client backoffs shortened for tests.
pub fn fast_backoffs() -> BTreeMap<String, BackoffOverride> {
    [
        (backoff::DEFAULT, quick(30, 10)),
        (backoff::ENI_CREATE, quick(30, 10)),
        (backoff::ENI_OPS, quick(30, 10)),
        (backoff::ENI_RELEASE, quick(30, 10)),
        (backoff::ENI_IP_OPS, quick(30, 12)),
        (backoff::WAIT_ENI_STATUS, quick(30, 40)),
        (backoff::ENI_DELETE_CONFIRM, quick(30, 20)),
        (backoff::WAIT_ENI_IP_REMOVED, quick(30, 10)),
        (backoff::METADATA, quick(20, 5)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into()))
    .collect()
}

/// Emulator config with fast asynchronous transitions and throttling off (tests enable it).
pub fn emulator_config() -> EmulatorConfig {
    let mut c = EmulatorConfig::default();
    c.delays.attach_min_ms = 20;
    c.delays.attach_max_ms = 60;
    c.delays.detach_min_ms = 10;
    c.delays.detach_max_ms = 30;
    c.throttling = false;
    c
}

/// A test world: emulator + temp dir.
pub struct Env {
    /// The emulator.
    pub emu: RunningEmulator,
    /// Temp dir (socket, state, pods file).
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Start an emulator with `tweak` applied.
    pub fn new(tweak: impl FnOnce(&mut EmulatorConfig)) -> Env {
        let mut c = emulator_config();
        tweak(&mut c);
        let emu = terway_emulator::Emulator::start(c, Arc::new(NoFabric)).expect("start emulator");
        Env {
            emu,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Cloud client settings for `instance`.
    pub fn cloud_config(&self, instance: &str) -> CloudConfig {
        let ak = self.emu.access_key();
        let mut cfg = CloudConfig::for_endpoint(
            &self.emu.region_id(),
            &self.emu.api_url(),
            &ak.id,
            &ak.secret,
        );
        cfg.backoff_override = fast_backoffs();
        cfg.timeout_secs = 10;
        cfg.metadata = self.metadata_config(instance);
        cfg
    }

    /// Metadata settings for `instance`.
    pub fn metadata_config(&self, instance: &str) -> MetadataConfig {
        let mut md = MetadataConfig {
            base_url: self.emu.metadata_url(),
            timeout_secs: 5,
            ..Default::default()
        };
        md.extra_headers.insert(
            terway_emulator::INSTANCE_HEADER.to_string(),
            instance.to_string(),
        );
        md
    }

    /// Both HTTP clients for `instance`.
    pub fn clients(&self, instance: &str) -> (AlibabaCloud, MetadataClient) {
        let cfg = self.cloud_config(instance);
        let cloud = AlibabaCloud::new(cfg.clone()).expect("cloud client");
        let md = MetadataClient::new(
            cfg.metadata.clone(),
            &BackoffTable::new(&cfg.backoff_override),
        )
        .expect("metadata");
        (cloud, md)
    }

    /// Socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/eni.socket")
    }

    /// Pods file path.
    pub fn pods_file(&self) -> PathBuf {
        self.dir.path().join("pods.json")
    }

    /// Daemon config with test-friendly timings.
    pub fn daemon_config(&self) -> DaemonConfig {
        let mut c = DaemonConfig {
            socket_path: self.socket(),
            state_dir: self.dir.path().join("state"),
            pods_file: Some(self.pods_file()),
            gc_period: Duration::from_secs(3600),
            gc_grace: Duration::ZERO,
            alloc_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        c.pool.batch_window = Duration::from_millis(30);
        c.pool.sync_period = Duration::from_millis(300);
        c.pool.ip_reuse_cooldown = Duration::from_millis(500);
        c.pool.eni_ready_timeout = Duration::from_secs(20);
        c
    }

    /// Start the daemon in-process for the default instance.
    pub async fn start(&self, cfg: DaemonConfig) -> TestDaemon {
        self.start_for(cfg, INSTANCE).await
    }

    /// Start the daemon in-process for `instance`.
    pub async fn start_for(&self, cfg: DaemonConfig, instance: &str) -> TestDaemon {
        let (cloud, md) = self.clients(instance);
        let pods = LocalPodSource::new(cfg.pods_file.clone());
        Daemon::start(cfg, cloud, md, pods)
            .await
            .expect("daemon starts")
    }

    /// Write the pods file.
    pub fn write_pods(&self, pods: &[PodMeta]) {
        let f = PodsFile {
            pods: pods.to_vec(),
        };
        std::fs::write(self.pods_file(), serde_json::to_vec(&f).unwrap()).unwrap();
    }

    /// Our ENIs (tag creator=terway) on the emulator: id -> (status, attached instance, all IPs).
    pub fn cloud_enis(&self) -> HashMap<String, (String, Option<String>, HashSet<Ipv4Addr>)> {
        self.emu
            .state()
            .enis
            .values()
            .filter(|e| e.tags.get("creator").map(String::as_str) == Some("terway"))
            .map(|e| {
                let mut ips: HashSet<Ipv4Addr> = e.secondary_ips.iter().copied().collect();
                ips.insert(e.primary_ip);
                (
                    e.id.clone(),
                    (format!("{:?}", e.status), e.instance_id.clone(), ips),
                )
            })
            .collect()
    }
}

/// gRPC client over the daemon socket.
pub async fn client(socket: &Path) -> TerwayBackendClient<Channel> {
    let ch = terway_rpc::connect_unix(socket, Duration::from_secs(5))
        .await
        .expect("connect");
    TerwayBackendClient::new(ch)
}

/// Pod reference.
pub fn pod(name: &str, cid: &str) -> Option<pb::PodRef> {
    Some(pb::PodRef {
        namespace: "default".into(),
        name: name.into(),
        container_id: cid.into(),
        uid: String::new(),
    })
}

/// AllocIP for a pod.
pub async fn alloc(
    c: &mut TerwayBackendClient<Channel>,
    name: &str,
    cid: &str,
) -> Result<pb::AllocIpReply, tonic::Status> {
    c.alloc_ip(pb::AllocIpRequest {
        pod: pod(name, cid),
        netns: "/var/run/netns/x".into(),
        if_name: "eth0".into(),
        ip: String::new(),
    })
    .await
    .map(|r| r.into_inner())
}

/// ReleaseIP for a pod.
pub async fn release(
    c: &mut TerwayBackendClient<Channel>,
    name: &str,
    cid: &str,
) -> Result<bool, tonic::Status> {
    c.release_ip(pb::ReleaseIpRequest {
        pod: pod(name, cid),
        reason: "test".into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().released)
}

/// The pod IPv4 of a reply.
pub fn ip_of(r: &pb::AllocIpReply) -> Ipv4Addr {
    r.net_confs[0]
        .pod_ip
        .as_ref()
        .unwrap()
        .ipv4
        .parse()
        .unwrap()
}

/// Metadata of a StatefulSet pod.
pub fn stateful(name: &str) -> PodMeta {
    PodMeta {
        namespace: "default".into(),
        name: name.into(),
        owner_kind: Some("StatefulSet".into()),
        ..Default::default()
    }
}

/// Plain pod metadata.
pub fn plain(name: &str) -> PodMeta {
    PodMeta {
        namespace: "default".into(),
        name: name.into(),
        ..Default::default()
    }
}

/// Poll `f` until it returns true or `secs` pass.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Daemon and cloud agree: every daemon ENI is attached to the instance with exactly the daemon's
/// addresses, every tagged ENI of the instance is known, no address is held by two pods.
pub fn assert_agrees(env: &Env, d: &TestDaemon, instance: &str) {
    let cloud = env.cloud_enis();
    d.pool().unwrap().with_state(|st| {
        let mut owners: HashMap<Ipv4Addr, String> = HashMap::new();
        for a in st.pods.values() {
            if let Some(prev) = owners.insert(a.ip, a.pod.to_string()) {
                panic!("{} held by {} and {}", a.ip, prev, a.pod);
            }
        }
        for e in st.enis.values() {
            let (status, inst, ips) = cloud
                .get(&e.id)
                .unwrap_or_else(|| panic!("daemon ENI {} not in cloud", e.id));
            assert_eq!(
                inst.as_deref(),
                Some(instance),
                "ENI {} attached elsewhere ({status})",
                e.id
            );
            let mine: HashSet<Ipv4Addr> = e.ips.keys().copied().collect();
            assert_eq!(
                &mine, ips,
                "ENI {} addresses differ between daemon and cloud",
                e.id
            );
        }
        for (id, (status, inst, _)) in &cloud {
            if inst.as_deref() == Some(instance) || status == "Available" {
                assert!(
                    st.enis.contains_key(id),
                    "leaked ENI {id} ({status}) unknown to the daemon"
                );
            }
        }
    });
}
