//! Test harness: an in-process fake terwayd (tonic on a unix socket) and a runner for the real `terway`
//! binary with real environment and stdin.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use terway_datapath::testbed::Testbed;
use terway_datapath::{link, rule};
use terway_rpc::v1::terway_backend_server::{TerwayBackend, TerwayBackendServer};
use terway_rpc::v1::terway_status_server::{TerwayStatus, TerwayStatusServer};
use terway_rpc::v1::*;
use tonic::{Code, Request, Response, Status};

/// What the fake daemon answers and what it saw.
#[derive(Default)]
pub struct State {
    pub mode: i32,
    pub template: NetConf,
    pub node_ip: String,
    pub next_ip: Vec<String>,
    /// pod key → (container id, ip)
    pub allocs: HashMap<String, (String, String)>,
    pub released: Vec<(String, String)>,
    pub events: Vec<(String, String)>,
    pub alloc_error: Option<Code>,
    /// Delay before answering AllocIP (deadline tests).
    pub alloc_delay: Option<std::time::Duration>,
    /// A second interface returned with every allocation (multi-NIC pods).
    pub extra_conf: Option<NetConf>,
}

#[derive(Clone)]
pub struct FakeDaemon(pub Arc<Mutex<State>>);

fn key(p: &Option<PodRef>) -> (String, String) {
    let p = p.clone().unwrap_or_default();
    (format!("{}/{}", p.namespace, p.name), p.container_id)
}

impl FakeDaemon {
    fn confs_for(&self, ip: &str) -> Vec<NetConf> {
        let s = self.0.lock().unwrap();
        let mut nc = s.template.clone();
        // The template may carry a fixed IPv6 (dual-stack tests); IPv4 comes from the pool.
        let ipv6 = nc
            .pod_ip
            .as_ref()
            .map(|p| p.ipv6.clone())
            .unwrap_or_default();
        nc.pod_ip = Some(IpSet {
            ipv4: ip.to_string(),
            ipv6,
        });
        let mut v = vec![nc];
        v.extend(s.extra_conf.clone());
        v
    }
}

#[tonic::async_trait]
impl TerwayBackend for FakeDaemon {
    async fn alloc_ip(&self, r: Request<AllocIpRequest>) -> Result<Response<AllocIpReply>, Status> {
        let (pod, cid) = key(&r.get_ref().pod);
        let delay = self.0.lock().unwrap().alloc_delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let ip = {
            let mut s = self.0.lock().unwrap();
            if let Some(code) = s.alloc_error {
                return Err(Status::new(code, "injected failure"));
            }
            match s.allocs.get(&pod).cloned() {
                // A new sandbox of the same pod takes the allocation over (as terwayd does).
                Some((_, ip)) => {
                    s.allocs.insert(pod.clone(), (cid.clone(), ip.clone()));
                    ip
                }
                None => {
                    let ip = s.next_ip.remove(0);
                    s.allocs.insert(pod.clone(), (cid.clone(), ip.clone()));
                    ip
                }
            }
        };
        let (mode, node_ip) = {
            let s = self.0.lock().unwrap();
            (s.mode, s.node_ip.clone())
        };
        Ok(Response::new(AllocIpReply {
            mode,
            net_confs: self.confs_for(&ip),
            node_ip,
            ipv4: true,
            ipv6: false,
        }))
    }

    async fn release_ip(
        &self,
        r: Request<ReleaseIpRequest>,
    ) -> Result<Response<ReleaseIpReply>, Status> {
        let (pod, cid) = key(&r.get_ref().pod);
        let mut s = self.0.lock().unwrap();
        s.released.push((pod.clone(), r.get_ref().reason.clone()));
        let released = matches!(s.allocs.get(&pod), Some((c, _)) if *c == cid);
        if released {
            s.allocs.remove(&pod);
        }
        Ok(Response::new(ReleaseIpReply { released }))
    }

    async fn get_ip_info(
        &self,
        r: Request<GetIpInfoRequest>,
    ) -> Result<Response<GetIpInfoReply>, Status> {
        let (pod, _) = key(&r.get_ref().pod);
        let found = self.0.lock().unwrap().allocs.get(&pod).cloned();
        let Some((cid, ip)) = found else {
            return Err(Status::not_found(format!("no allocation for {pod}")));
        };
        let (mode, node_ip) = {
            let s = self.0.lock().unwrap();
            (s.mode, s.node_ip.clone())
        };
        Ok(Response::new(GetIpInfoReply {
            mode,
            net_confs: self.confs_for(&ip),
            node_ip,
            container_id: cid,
            // This test daemon leaves the flush to DEL, as terwayd does without a conntrack flusher.
            conntrack_flushed_on_release: false,
        }))
    }

    async fn record_event(&self, r: Request<EventRequest>) -> Result<Response<EventReply>, Status> {
        let e = r.into_inner();
        self.0.lock().unwrap().events.push((e.reason, e.message));
        Ok(Response::new(EventReply {}))
    }
}

#[tonic::async_trait]
impl TerwayStatus for FakeDaemon {
    async fn get_status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let s = self.0.lock().unwrap();
        let pods = s
            .allocs
            .iter()
            .map(|(p, (cid, ip))| PodAllocation {
                pod: p.clone(),
                container_id: cid.clone(),
                ipv4: ip.clone(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(StatusReply {
            pods,
            ..Default::default()
        }))
    }

    async fn explain_policy(
        &self,
        _: Request<terway_rpc::v1::PolicyRequest>,
    ) -> Result<Response<terway_rpc::v1::PolicyReply>, Status> {
        // The plugin never asks; the fake enforces no policy.
        Ok(Response::new(terway_rpc::v1::PolicyReply::default()))
    }
}

/// Serve the fake daemon on `sock` until the test's runtime ends.
pub fn serve(sock: &Path, state: State) -> FakeDaemon {
    let d = FakeDaemon(Arc::new(Mutex::new(state)));
    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    let svc = d.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TerwayBackendServer::new(svc.clone()))
            .add_service(TerwayStatusServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
    });
    d
}

/// A shared-ENI NetConf template for the testbed's ENI.
pub fn shared_template(tb: &Testbed) -> NetConf {
    NetConf {
        if_name: String::new(),
        pod_ip: None,
        subnet: Some(IpSet {
            ipv4: tb.vswitch.to_string(),
            ipv6: String::new(),
        }),
        gateway: Some(IpSet {
            ipv4: tb.gateway.to_string(),
            ipv6: String::new(),
        }),
        eni: Some(EniInfo {
            eni_id: "eni-test".into(),
            mac: tb.eni_mac.to_string(),
            gateway: Some(IpSet {
                ipv4: tb.gateway.to_string(),
                ipv6: String::new(),
            }),
            primary_ip: tb.node_ip.to_string(),
            ..Default::default()
        }),
        service_cidrs: vec!["172.21.0.0/20".into()],
        host_stack_cidrs: vec![],
        extra_routes: vec![],
        default_route: true,
        qos: None,
        mtu: 1500,
    }
}

/// The plugin configuration used by the tests.
pub fn plugin_conf(tb: &Testbed, sock: &Path, dir: &Path, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "terway",
        "type": "terway",
        "daemon_socket": sock,
        "host_netns": terway_datapath::Netns::named_path(&tb.host_name),
        "lock_dir": dir.join("locks"),
        "eni_wait_attempts": 3,
        "eni_wait_interval_ms": 50,
        "debug": true,
        "log_file": dir.join("terway.log"),
        "capabilities": {"bandwidth": true},
    });
    if let (Some(o), Value::Object(e)) = (c.as_object_mut(), extra) {
        o.extend(e);
    }
    c
}

/// Result of one plugin run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }
}

/// Run the real binary with CNI env + stdin.
pub async fn cni(cmd: &str, cid: &str, netns: &str, pod: &str, conf: &Value) -> Run {
    cni_in(None, cmd, cid, netns, pod, conf).await
}

/// Run the real binary with CNI env + stdin; with `run_in` the plugin process starts inside that
/// network namespace (it `setns`es between fork and exec), as if that namespace were the node's.
pub async fn cni_in(
    run_in: Option<&Path>,
    cmd: &str,
    cid: &str,
    netns: &str,
    pod: &str,
    conf: &Value,
) -> Run {
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncWriteExt;
    let (ns, name) = pod.split_once('/').unwrap();
    let target = run_in.map(|p| std::fs::File::open(p).unwrap());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_terway"));
    if let Some(f) = &target {
        let fd = f.as_raw_fd();
        // SAFETY: only the async-signal-safe setns(2) runs between fork and exec; the fd stays open
        // in the parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                if nix::libc::setns(fd, nix::libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = command
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(conf.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Path of a fresh socket in `dir`.
pub fn sock_path(dir: &Path) -> PathBuf {
    dir.join("eni.socket")
}

pub fn ping(ns_name: &str, dst: impl ToString) -> bool {
    let dst = dst.to_string();
    // A few tries so a loaded CI machine does not turn a slow first neighbour resolution into a failure.
    (0..3).any(|_| {
        std::process::Command::new("ip")
            .args(["netns", "exec", ns_name, "ping", "-c", "1", "-W", "2", &dst])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

pub async fn our_rules(tb: &Testbed) -> Vec<String> {
    rule::list_rules(&tb.host_nl, true)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.priority == 512 || r.priority == 2048)
        .map(|r| r.to_string())
        .collect()
}

/// Live host veths: `cali…` links not retired by a DEL (a retired one waits, down, for its netns to go).
pub async fn cali_links(tb: &Testbed) -> Vec<String> {
    all_cali(tb)
        .await
        .into_iter()
        .filter(|l| !is_retired(l))
        .map(|l| l.name)
        .collect()
}

fn is_retired(l: &link::Link) -> bool {
    l.alias
        .as_deref()
        .is_some_and(|a| a.starts_with(terway_datapath::driver::retire::RETIRED_ALIAS_PREFIX))
}

async fn all_cali(tb: &Testbed) -> Vec<link::Link> {
    link::list_links(&tb.host_nl)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.name.starts_with("cali"))
        .collect()
}

/// Host routes (main table) whose destination is `ip`/32.
pub async fn host_routes_to(tb: &Testbed, ip: &str) -> Vec<String> {
    let want: ipnet::IpNet = format!("{ip}/32").parse().unwrap();
    terway_datapath::route::list_routes(&tb.host_nl, true, Some(254))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.dst == want)
        .map(|r| r.to_string())
        .collect()
}

/// Retired host veths (down, tagged by DEL).
pub async fn retired_links(tb: &Testbed) -> Vec<link::Link> {
    all_cali(tb).await.into_iter().filter(is_retired).collect()
}

/// Wait (bounded) until no `cali…` link at all is left: the kernel destroys a deleted netns's veths
/// asynchronously.
pub async fn wait_no_cali(tb: &Testbed) -> Vec<String> {
    for _ in 0..100 {
        if all_cali(tb).await.is_empty() {
            return vec![];
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    all_cali(tb).await.into_iter().map(|l| l.name).collect()
}

pub fn shared_state(tb: &Testbed, ips: &[&str]) -> State {
    State {
        mode: NetworkMode::SharedEni as i32,
        template: shared_template(tb),
        node_ip: tb.node_ip.to_string(),
        next_ip: ips.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub async fn futures_join<F: std::future::Future<Output = Run>>(
    it: impl Iterator<Item = F>,
) -> Vec<Run> {
    let handles: Vec<_> = it.collect();
    let mut out = Vec::new();
    // Start all children first, then wait: the futures spawn on first poll, so poll them together.
    let joined = futures::future::join_all(handles).await;
    out.extend(joined);
    out
}
