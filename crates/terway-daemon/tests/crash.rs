//! Crash safety of the real `terwayd` process: SIGKILL it at random points during a churn, restart it,
//! and at the end check that the daemon's redb state, the emulator's state and the set of live pods
//! agree: no leaked IP, no leaked ENI, no address held by two pods.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rand::Rng;
use terway_daemon::store::Store;
use terway_rpc::v1 as pb;

/// The `terwayd` binary (package `terwayd`), built next to this test's target directory by
/// `cargo build --workspace --bins` (scripts/test.sh does that first).
fn terwayd_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .to_path_buf();
    let bin = dir.join("terwayd");
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build -p terwayd` first",
        bin.display()
    );
    bin
}

/// The terwayd child; killed on drop so a failing test leaves no process behind.
struct Terwayd {
    child: Option<Child>,
}

impl Terwayd {
    fn spawn(env: &Env, conf: &PathBuf) -> Terwayd {
        let ak = env.emu.access_key();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path())
            .unwrap();
        let child = Command::new(terwayd_binary())
            .arg("--config")
            .arg(conf)
            .arg("--socket")
            .arg(env.socket())
            .arg("--state-dir")
            .arg(env.dir.path().join("state"))
            .arg("--pods-file")
            .arg(env.pods_file())
            .args(["--cloud-endpoint", &env.emu.api_url()])
            .args(["--metadata-url", &env.emu.metadata_url()])
            .args(["--instance-id-header", INSTANCE])
            .args(["--access-key-id", &ak.id, "--access-key-secret", &ak.secret])
            .args(["--gc-period-secs", "3600", "--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn terwayd");
        Terwayd { child: Some(child) }
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn sigterm(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let status = c.wait().expect("wait terwayd");
            assert!(status.success(), "terwayd exited with {status} on SIGTERM");
        }
    }
}

impl Drop for Terwayd {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Kept outside the temp dir so a failure can be investigated.
fn log_path() -> PathBuf {
    std::env::temp_dir().join(format!("terwayd-crash-test-{}.log", std::process::id()))
}

async fn wait_ready(env: &Env) {
    for _ in 0..200 {
        if let Ok(ch) = terway_rpc::connect_unix(&env.socket(), Duration::from_millis(200)).await {
            let mut s = pb::terway_status_client::TerwayStatusClient::new(ch);
            if s.get_status(pb::StatusRequest {}).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(log_path()).unwrap_or_default();
    panic!("terwayd never became ready; log:\n{log}");
}

#[derive(Debug, Clone, Default)]
struct PodModel {
    generation: u32,
    ip: Option<Ipv4Addr>,
}

/// Retry one operation until the daemon answers it (it may be dead or restarting).
async fn until_ok<T, F, Fut>(env_socket: &std::path::Path, mut op: F) -> T
where
    F: FnMut(
        terway_rpc::v1::terway_backend_client::TerwayBackendClient<tonic::transport::Channel>,
    ) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        if let Ok(ch) = terway_rpc::connect_unix(env_socket, Duration::from_millis(300)).await {
            let c = terway_rpc::v1::terway_backend_client::TerwayBackendClient::new(ch);
            match op(c).await {
                Ok(v) => return v,
                Err(e)
                    if matches!(
                        e.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Aborted
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                            | tonic::Code::Internal
                    ) => {}
                Err(e) => panic!("unexpected daemon error: {e:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_churn_leaks_nothing_and_never_double_assigns() {
    let env = Env::new(|_| {});
    let conf = env.dir.path().join("eni_conf.json");
    std::fs::write(
        &conf,
        r#"{"min_pool_size":3,"max_pool_size":8,"ip_reuse_cooldown":"200ms","alloc_batch_window":"30ms",
            "ip_pool_sync_period":"300ms","max_eni":4}"#,
    )
    .unwrap();
    let mut daemon = Terwayd::spawn(&env, &conf);
    wait_ready(&env).await;

    const PODS: u32 = 60;
    const WORKERS: u32 = 12;
    let model: Arc<Mutex<HashMap<String, PodModel>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let model = model.clone();
        let stop = stop.clone();
        let socket = env.socket();
        workers.push(tokio::spawn(async move {
            let mine: Vec<String> = (0..PODS)
                .filter(|p| p % WORKERS == w)
                .map(|p| format!("crash-{p}"))
                .collect();
            let mut ops = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let name = mine[rand::rng().random_range(0..mine.len())].clone();
                let cur = model
                    .lock()
                    .unwrap()
                    .get(&name)
                    .cloned()
                    .unwrap_or_default();
                let cid = format!("{name}-{}", cur.generation);
                if cur.ip.is_some() {
                    // The pod stops using its address before asking for the release (CNI DEL order).
                    model.lock().unwrap().entry(name.clone()).or_default().ip = None;
                    let (n, c) = (name.clone(), cid.clone());
                    until_ok(&socket, move |mut cl| {
                        let (n, c) = (n.clone(), c.clone());
                        async move {
                            cl.release_ip(pb::ReleaseIpRequest {
                                pod: pod(&n, &c),
                                reason: "churn".into(),
                                ..Default::default()
                            })
                            .await
                        }
                    })
                    .await;
                    let mut m = model.lock().unwrap();
                    let e = m.entry(name).or_default();
                    e.ip = None;
                    e.generation += 1;
                } else {
                    let (n, c) = (name.clone(), cid.clone());
                    let r = until_ok(&socket, move |mut cl| {
                        let (n, c) = (n.clone(), c.clone());
                        async move {
                            cl.alloc_ip(pb::AllocIpRequest {
                                pod: pod(&n, &c),
                                netns: String::new(),
                                if_name: "eth0".into(),
                                ip: String::new(),
                            })
                            .await
                        }
                    })
                    .await
                    .into_inner();
                    let ip = ip_of(&r);
                    let mut m = model.lock().unwrap();
                    if let Some((other, _)) =
                        m.iter().find(|(k, v)| v.ip == Some(ip) && **k != name)
                    {
                        panic!("{ip} handed to {name} while {other} holds it");
                    }
                    m.entry(name).or_default().ip = Some(ip);
                }
                ops += 1;
            }
            ops
        }));
    }

    // Kill the daemon at random points, restart it each time.
    for _ in 0..6 {
        let wait = rand::rng().random_range(200..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        daemon.sigkill();
        tokio::time::sleep(Duration::from_millis(50)).await;
        daemon = Terwayd::spawn(&env, &conf);
        wait_ready(&env).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total_ops = 0;
    for w in workers {
        total_ops += w.await.unwrap();
    }
    assert!(total_ops > 50, "churn too small: {total_ops} operations");

    // The live pods are the lab's truth; restart once more so recovery and start-up GC run with it.
    let live: BTreeMap<String, (String, Ipv4Addr)> = model
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            v.ip.map(|ip| (k.clone(), (format!("{k}-{}", v.generation), ip)))
        })
        .collect();
    env.write_pods(&live.keys().map(|k| plain(k)).collect::<Vec<_>>());
    daemon.sigterm();
    daemon = Terwayd::spawn(&env, &conf);
    wait_ready(&env).await;
    let mut c = client(&env.socket()).await;
    for (name, (cid, ip)) in &live {
        let info = c
            .get_ip_info(pb::GetIpInfoRequest {
                pod: pod(name, cid),
                ..Default::default()
            })
            .await
            .expect("live pod known")
            .into_inner();
        assert_eq!(
            info.net_confs[0].pod_ip.as_ref().unwrap().ipv4,
            ip.to_string(),
            "{name}"
        );
    }
    // Let the pool settle (cooldowns end, sync trims), then stop cleanly and read the redb file.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.sigterm();

    let store = Store::open(&env.dir.path().join("state/terwayd.redb")).unwrap();
    let snap = store.load().unwrap();
    assert!(
        snap.intents.is_empty(),
        "unfinished intents after a clean stop: {:?}",
        snap.intents
    );
    let stored_pods: BTreeMap<String, Ipv4Addr> = snap
        .pods
        .iter()
        .map(|a| (a.pod.name.clone(), a.ip))
        .collect();
    let live_ips: BTreeMap<String, Ipv4Addr> =
        live.iter().map(|(k, (_, ip))| (k.clone(), *ip)).collect();
    assert_eq!(stored_pods, live_ips, "local state and live pods disagree");
    let unique: HashSet<Ipv4Addr> = live_ips.values().copied().collect();
    assert_eq!(
        unique.len(),
        live_ips.len(),
        "double assignment among live pods"
    );

    let cloud = env.cloud_enis();
    let stored_enis: HashMap<String, HashSet<Ipv4Addr>> = snap
        .enis
        .iter()
        .map(|e| (e.id.clone(), e.ips.keys().copied().collect()))
        .collect();
    for (id, (status, inst, ips)) in &cloud {
        assert_eq!(status, "InUse", "leaked ENI {id} in state {status}");
        assert_eq!(inst.as_deref(), Some(INSTANCE));
        let mine = stored_enis
            .get(id)
            .unwrap_or_else(|| panic!("leaked ENI {id}: attached but unknown to terwayd"));
        assert_eq!(mine, ips, "ENI {id}: leaked or phantom IPs");
    }
    assert_eq!(
        stored_enis.len(),
        cloud.len(),
        "terwayd remembers ENIs the cloud does not have"
    );
    for (name, ip) in &live_ips {
        assert!(
            cloud.values().any(|(_, _, ips)| ips.contains(ip)),
            "{name}'s {ip} is not on any ENI"
        );
    }
    println!(
        "crash test: {total_ops} operations, {} live pods, {} ENIs",
        live_ips.len(),
        cloud.len()
    );
    // Passed: the log is only worth keeping for a failure.
    let _ = std::fs::remove_file(log_path());
}
