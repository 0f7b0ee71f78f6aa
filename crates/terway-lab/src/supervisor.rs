//! `terway-lab serve-lab`: the background process that owns a lab. It creates the vpc router netns,
//! moves itself into it (so the emulator's OpenAPI and metadata listeners live on VPC addresses and every
//! thread it starts is already inside the VPC), starts the emulator with the fabric as its hook, creates
//! the nodes, starts one real `terwayd` per node, then serves the control socket until told to stop.
//! Every step is recorded in `state.json` before it happens, so `down` can finish the job after a crash.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use terway_emulator::fabric::{Fabric, FabricConfig};
use terway_emulator::{
    AdminListener, Delays, Emulator, EmulatorConfig, InstanceConfig, Listeners, RunningEmulator,
    VSwitchConfig, VpcConfig,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::control::{self, Request};
use crate::daemons::Daemons;
use crate::k8s::api::Api;
use crate::k8s::cluster::Cluster;
use crate::k8s::Toolbox;
use crate::plan::{LabPlan, NodeMode};
use crate::state::{self, DaemonRecord, LabState, NodeRecord, Phase};

/// Arguments of the hidden `serve-lab` subcommand.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Lab directory holding `plan.json`.
    #[arg(long)]
    pub dir: PathBuf,
}

/// Shared state of the running supervisor.
struct Lab {
    dir: PathBuf,
    plan: LabPlan,
    state: Mutex<LabState>,
    fabric: Arc<Fabric>,
    emulator: Mutex<Option<RunningEmulator>>,
    daemons: Mutex<Daemons>,
    kube: Mutex<Option<Cluster>>,
    kube_api: Mutex<Option<Api>>,
}

impl Lab {
    fn save(&self, f: impl FnOnce(&mut LabState)) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut st);
        if let Err(e) = state::write_json_atomic(&state::state_path(&self.dir), &*st) {
            tracing::error!(error = %e, "cannot write the lab state file");
        }
    }

    fn phase(&self, phase: Phase) {
        tracing::info!(?phase, "lab phase");
        self.save(|s| s.phase = phase);
    }

    fn record_kube(&self) {
        let rec = self
            .kube
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .map(Cluster::record);
        self.save(|s| s.kube = rec);
    }

    fn record_daemons(&self) {
        let mut d = self.daemons.lock().unwrap_or_else(|e| e.into_inner());
        let pids = d.pids();
        let recs: BTreeMap<String, DaemonRecord> = self
            .plan
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    DaemonRecord {
                        pid: pids.get(&n.name).copied().unwrap_or(0),
                        starts: d.starts(&n.name),
                    },
                )
            })
            .collect();
        drop(d);
        self.save(|s| s.daemons = recs);
    }
}

/// Entry point of `serve-lab`; returns the process exit code.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let plan: LabPlan = state::read_json(&args.dir.join("plan.json"))?;
    let mut netns = vec![plan.vpc_netns.clone()];
    netns.extend(plan.nodes.iter().map(|n| n.netns.clone()));
    netns.push(plan.outside.netns.clone());
    let initial = LabState {
        plan: plan.clone(),
        supervisor_pid: std::process::id(),
        phase: Phase::Starting("creating the VPC router".into()),
        netns,
        daemons: BTreeMap::new(),
        nodes: BTreeMap::new(),
        kube: None,
    };
    state::write_json_atomic(&state::state_path(&args.dir), &initial)?;
    let fail = |dir: &Path, e: &anyhow::Error| {
        let mut st = initial.clone();
        st.phase = Phase::Failed(format!("{e:#}"));
        let _ = state::write_json_atomic(&state::state_path(dir), &st);
    };

    let binary = match crate::procs::find_binary("terwayd") {
        Ok(b) => b,
        Err(e) => {
            fail(&args.dir, &e);
            return Err(e);
        }
    };
    let toolbox = match plan
        .kubernetes
        .as_ref()
        .map(|_| Toolbox::find())
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            fail(&args.dir, &e);
            return Err(e);
        }
    };
    let fabric = match Fabric::create(FabricConfig {
        vpc_netns: plan.vpc_netns.clone(),
        vswitches: plan
            .vswitches
            .iter()
            .map(|v| (v.id.clone(), v.cidr))
            .collect(),
        service_addrs: std::iter::once(plan.metadata_addr)
            .chain([plan.api_addr])
            .chain(plan.kubernetes.as_ref().map(|k| k.api_addr))
            .collect(),
    }) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            let e = anyhow::Error::from(e);
            fail(&args.dir, &e);
            return Err(e);
        }
    };
    // Still single-threaded: after this every thread (tokio workers included) starts inside the VPC.
    if let Err(e) = crate::probe::enter_netns(&plan.vpc_netns) {
        let e = anyhow::anyhow!("cannot enter {}: {e}", plan.vpc_netns);
        fail(&args.dir, &e);
        return Err(e);
    }
    let lab = Arc::new(Lab {
        dir: args.dir.clone(),
        plan: plan.clone(),
        state: Mutex::new(initial.clone()),
        fabric,
        emulator: Mutex::new(None),
        daemons: Mutex::new(Daemons::new(binary, plan.clone())),
        kube: Mutex::new(None),
        kube_api: Mutex::new(None),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        bring_up(&lab).await?;
        match toolbox {
            // terwayd watches the API server there: the control plane comes first.
            Some(tb) => bring_up_kubernetes(&lab, tb).await?,
            None => start_daemons(&lab).await?,
        }
        lab.phase(Phase::Ready);
        control_loop(&lab).await
    });
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "lab failed");
        lab.phase(Phase::Failed(format!("{e:#}")));
    } else {
        lab.phase(Phase::Stopping);
    }
    teardown(&lab, &runtime);
    drop(runtime);
    result
}

fn emulator_config(plan: &LabPlan) -> EmulatorConfig {
    EmulatorConfig {
        vpc: VpcConfig {
            id: format!("vpc-{}", plan.name),
            cidr: plan.vpc_cidr,
            ..VpcConfig::default()
        },
        vswitches: plan
            .vswitches
            .iter()
            .map(|v| VSwitchConfig {
                id: v.id.clone(),
                zone_id: v.zone_id.clone(),
                cidr: v.cidr,
                ipv6_cidr: None,
            })
            .collect(),
        instances: plan
            .nodes
            .iter()
            .map(|n| InstanceConfig {
                id: n.instance_id.clone(),
                instance_type: n.instance_type.clone(),
                vswitch_id: n.vswitch_id.clone(),
                zone_id: None,
                primary_mac: None,
                primary_ip: None,
                ram_role: None,
                hostname: Some(n.name.clone()),
            })
            .collect(),
        delays: Delays {
            attach_min_ms: plan.attach_delay_ms.0,
            attach_max_ms: plan.attach_delay_ms.1,
            ..Delays::default()
        },
        ..EmulatorConfig::default()
    }
}

async fn bring_up(lab: &Arc<Lab>) -> anyhow::Result<()> {
    let plan = &lab.plan;
    lab.phase(Phase::Starting("starting the emulated cloud".into()));
    let listeners = Listeners {
        api: TcpListener::bind((plan.api_addr, 80))?,
        metadata: TcpListener::bind((plan.metadata_addr, 80))?,
        admin: Some(AdminListener::Unix(bind_admin_socket(
            &plan.admin_socket(),
        )?)),
    };
    let hook: Arc<dyn terway_emulator::FabricHook> = lab.fabric.clone();
    let emu = Emulator::start_with_listeners(emulator_config(plan), hook, listeners)?;
    let world = emu.state();
    *lab.emulator.lock().unwrap_or_else(|e| e.into_inner()) = Some(emu);

    lab.phase(Phase::Starting("creating nodes".into()));
    for node in &plan.nodes {
        let inst = world
            .instances
            .get(&node.instance_id)
            .ok_or_else(|| anyhow::anyhow!("emulator has no instance {}", node.instance_id))?;
        let eni = world
            .enis
            .get(&inst.primary_eni_id)
            .ok_or_else(|| anyhow::anyhow!("emulator has no primary ENI {}", inst.primary_eni_id))?
            .to_api();
        let fabric = lab.fabric.clone();
        let (ns, eni2) = (node.netns.clone(), eni.clone());
        tokio::task::spawn_blocking(move || fabric.add_node(&ns, &eni2)).await??;
        std::fs::create_dir_all(&node.dir)?;
        state::write_json_atomic(
            &node.dir.join("eni_conf.json"),
            &crate::node_files::eni_conf(plan, node),
        )?;
        state::write_json_atomic(
            &node.dir.join("cni.json"),
            &crate::node_files::cni_conf(node),
        )?;
        // No pods yet: an empty (not a missing) list, so the daemon's GC knows liveness from the start.
        state::publish_node_pods(&lab.dir, &node.name)?;
        let rec = NodeRecord {
            primary_eni: eni.id.clone(),
            primary_ip: eni.primary_ip,
            primary_mac: eni.mac.clone(),
        };
        lab.save(|s| {
            s.nodes.insert(node.name.clone(), rec);
        });
    }
    let fabric = lab.fabric.clone();
    let outside = plan.outside.clone();
    tokio::task::spawn_blocking(move || {
        fabric.add_outside_host(&outside.netns, outside.cidr, outside.addr)
    })
    .await??;

    // VPC-route nodes: the lab plays cloud-controller-manager and programs the route table.
    for node in plan.nodes.iter().filter(|n| n.mode == NodeMode::VpcRoute) {
        if let Some(cidr) = node.pod_cidr {
            crate::cloudcalls::create_route_entry(
                plan,
                &world.vpc.route_table_id,
                cidr,
                &node.instance_id,
            )
            .await?;
        }
    }

    Ok(())
}

/// One terwayd per node, each waited for.
async fn start_daemons(lab: &Arc<Lab>) -> anyhow::Result<()> {
    lab.phase(Phase::Starting("starting terwayd on every node".into()));
    for node in &lab.plan.nodes {
        let lab2 = lab.clone();
        let name = node.name.clone();
        tokio::task::spawn_blocking(move || {
            lab2.daemons
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .start(&name, Duration::from_secs(60))
        })
        .await??;
        lab.record_daemons();
    }
    Ok(())
}

/// The control plane, every node's terwayd (watching the API server), then every node's containerd +
/// kubelet; waits until every node is Ready.
async fn bring_up_kubernetes(lab: &Arc<Lab>, tb: Toolbox) -> anyhow::Result<()> {
    let plan = &lab.plan;
    let Some(kube) = plan.kubernetes.clone() else {
        return Ok(());
    };
    lab.phase(Phase::Starting(
        "starting the Kubernetes control plane".into(),
    ));
    let mut cluster = {
        let (p, k) = (plan.clone(), kube.clone());
        tokio::task::spawn_blocking(move || Cluster::prepare(&p, &k, tb)).await??
    };
    // Recorded as soon as anything runs, so a failure below still leaves `down` the PIDs.
    let started = cluster.start_control_plane().await;
    let api = cluster.api();
    *lab.kube.lock().unwrap_or_else(|e| e.into_inner()) = Some(cluster);
    lab.record_kube();
    started?;
    let api = api?;
    *lab.kube_api.lock().unwrap_or_else(|e| e.into_inner()) = Some(api.clone());
    let daemonset = kube.daemonset();
    if !daemonset {
        lab.phase(Phase::Starting(
            "installing terway-rs' CRDs and RBAC (deploy/)".into(),
        ));
        let p = plan.clone();
        tokio::task::spawn_blocking(move || crate::k8s::install::apply(&p))
            .await?
            .context("apply deploy/ (CRDs, RBAC) to the lab's API server")?;
        start_daemons(lab).await?;
    }

    lab.phase(Phase::Starting(
        "starting containerd and kubelet on every node".into(),
    ));
    for node in &plan.nodes {
        let ip = lab
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .nodes
            .get(&node.name)
            .map(|r| r.primary_ip)
            .ok_or_else(|| anyhow::anyhow!("node {} has no primary IP", node.name))?;
        let (lab2, name) = (lab.clone(), node.name.clone());
        let r = tokio::task::spawn_blocking(move || {
            let mut guard = lab2.kube.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_mut() {
                Some(c) => c.start_node(&name, ip),
                None => Ok(()),
            }
        })
        .await?;
        lab.record_kube();
        r?;
    }
    if daemonset {
        install_daemonset(lab, &api).await?;
    }
    lab.phase(Phase::Starting("waiting for every node to be Ready".into()));
    wait_nodes(lab, &api, "Ready", crate::k8s::api::node_ready).await
}

/// Wait up to 120 s until the API server has every node of the lab and each is `what` by `holds`.
async fn wait_nodes(
    lab: &Lab,
    api: &Api,
    what: &str,
    holds: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let nodes = api.nodes().await.unwrap_or_default();
        let count = nodes.iter().filter(|n| holds(n)).count();
        if count >= lab.plan.nodes.len() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{count} of {} Kubernetes nodes were {what} after 120 s; see the kubelet logs in {}",
                lab.plan.nodes.len(),
                crate::k8s::LabPaths::new(&lab.dir).root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Install terway-rs as a user does, once every node has registered: `kubectl apply -k` (the lab's
/// overlay of deploy/), then wait for every node's terwayd pod to answer on its socket and for the
/// controlplane to have elected a leader.
async fn install_daemonset(lab: &Arc<Lab>, api: &Api) -> anyhow::Result<()> {
    let plan = &lab.plan;
    lab.phase(Phase::Starting("waiting for every node to register".into()));
    wait_nodes(lab, api, "registered", |_| true).await?;
    lab.phase(Phase::Starting(format!(
        "installing terway-rs: kubectl apply -k (DaemonSet {})",
        crate::k8s::deploy::DAEMONSET
    )));
    let p = plan.clone();
    tokio::task::spawn_blocking(move || {
        crate::k8s::deploy::install(&p)?;
        crate::k8s::deploy::wait_daemons(&p, Duration::from_secs(180))?;
        crate::k8s::deploy::wait_controlplane(&p, Duration::from_secs(120))
    })
    .await?
    .context("install terway-rs with kubectl apply -k")
}

/// The admin API's unix socket, usable by root only. A socket file is the one place pods cannot reach
/// over the network: everything bound in the vpc netns is routable from them.
fn bind_admin_socket(path: &Path) -> anyhow::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("bind the emulator admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict the emulator admin socket {}", path.display()))?;
    Ok(listener)
}

async fn control_loop(lab: &Arc<Lab>) -> anyhow::Result<()> {
    let path = control::socket_path(&lab.dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = stop_rx.changed() => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let lab = lab.clone();
                let stop = stop_tx.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut line = String::new();
                    if BufReader::new(rd).read_line(&mut line).await.is_err() {
                        return;
                    }
                    let answer = match serde_json::from_str::<Request>(line.trim()) {
                        Ok(Request::Shutdown) => {
                            let _ = stop.send(true);
                            control::ok(serde_json::Value::Null)
                        }
                        Ok(req) => {
                            let lab2 = lab.clone();
                            match tokio::task::spawn_blocking(move || handle(&lab2, req)).await {
                                Ok(Ok(v)) => control::ok(v),
                                Ok(Err(e)) => control::err(format!("{e:#}")),
                                Err(e) => control::err(e),
                            }
                        }
                        Err(e) => control::err(format!("bad request: {e}")),
                    };
                    let _ = wr.write_all(format!("{answer}\n").as_bytes()).await;
                });
            }
        }
    }
}

fn handle(lab: &Arc<Lab>, req: Request) -> anyhow::Result<serde_json::Value> {
    match req {
        Request::Status => {
            lab.record_daemons();
            let st = lab.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let world = lab
                .emulator
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|e| e.state());
            let drops = lab.fabric.spoofed_drops().ok();
            Ok(serde_json::json!({
                "state": st,
                "fabric": lab.fabric.snapshot(),
                "spoofed_drops": drops,
                "emulator": world.map(|w| crate::status::world_summary(&w)),
            }))
        }
        Request::World => {
            let world = lab
                .emulator
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|e| e.state());
            Ok(serde_json::to_value(world)?)
        }
        Request::SetFaults { faults } => {
            let cfg: terway_emulator::FaultConfig = serde_json::from_value(faults)
                .map_err(|e| anyhow::anyhow!("bad fault configuration: {e}"))?;
            let guard = lab.emulator.lock().unwrap_or_else(|e| e.into_inner());
            let emu = guard
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("the emulator is not running"))?;
            emu.set_faults(cfg);
            Ok(serde_json::to_value(emu.faults())?)
        }
        Request::Faults => {
            let guard = lab.emulator.lock().unwrap_or_else(|e| e.into_inner());
            let emu = guard
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("the emulator is not running"))?;
            Ok(serde_json::json!({ "config": emu.faults(), "fired": emu.fired_faults().len() }))
        }
        Request::Audit => {
            // The pool may be assigning addresses right now: only differences that persist count.
            let mut diffs = audit_once(lab)?;
            for _ in 0..4 {
                if diffs.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
                let again = audit_once(lab)?;
                diffs.retain(|d| again.contains(d));
            }
            Ok(serde_json::to_value(diffs)?)
        }
        Request::StopDaemon { .. } | Request::StartDaemon { .. } if lab.plan.terwayd_daemonset() => {
            Err(anyhow::anyhow!(
                "terwayd of lab {lab_name} runs as the DaemonSet {ds} in {ns}, which the kubelet restarts: \
                 delete a node's pod with `terway-lab kubectl --lab {lab_name} -- -n {ns} delete pod -l app={ds} \
                 --field-selector spec.nodeName=NODE`, or bring the lab up with --terwayd process to stop, \
                 crash and start terwayd yourself",
                lab_name = lab.plan.name,
                ds = crate::k8s::deploy::DAEMONSET,
                ns = crate::k8s::deploy::NAMESPACE,
            ))
        }
        Request::StopDaemon { node, kill } => {
            lab.daemons
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stop(&node, kill)?;
            lab.record_daemons();
            Ok(serde_json::Value::Null)
        }
        Request::StartDaemon { node } => {
            let pid = lab
                .daemons
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .start(&node, Duration::from_secs(60))?;
            lab.record_daemons();
            Ok(serde_json::json!({ "pid": pid }))
        }
        Request::KubePods => {
            let api = lab
                .kube_api
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .ok_or_else(|| {
                    anyhow::anyhow!("lab {} has no Kubernetes (up --k8s)", lab.plan.name)
                })?;
            let pods = tokio::runtime::Handle::current().block_on(api.pods())?;
            Ok(serde_json::Value::Array(pods))
        }
        Request::KubeRuntime { node, start, crash } => {
            let result = {
                let mut guard = lab.kube.lock().unwrap_or_else(|e| e.into_inner());
                let cluster = guard.as_mut().ok_or_else(|| {
                    anyhow::anyhow!("lab {} has no Kubernetes (up --k8s)", lab.plan.name)
                })?;
                if start {
                    cluster.start_runtime(&node)
                } else {
                    cluster.stop_runtime(&node, crash);
                    Ok(())
                }
            };
            lab.record_kube();
            result.map(|()| serde_json::Value::Null)
        }
        Request::Shutdown => Ok(serde_json::Value::Null),
    }
}

fn audit_once(lab: &Arc<Lab>) -> anyhow::Result<Vec<String>> {
    let world = lab
        .emulator
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|e| e.state())
        .ok_or_else(|| anyhow::anyhow!("the emulator is not running"))?;
    let enis: Vec<_> = world.enis.values().map(|e| e.to_api()).collect();
    let routes: Vec<_> = world
        .routes
        .iter()
        .map(|r| (r.destination, r.next_hop_id.clone()))
        .collect();
    Ok(lab.fabric.audit(&enis, &routes)?)
}

/// Stop daemons, delete pod namespaces (their host sides die with the node netns), stop the emulator,
/// destroy the fabric. Keeps going past errors.
fn teardown(lab: &Arc<Lab>, runtime: &tokio::runtime::Runtime) {
    // Kubernetes first: its pods use the daemons and the fabric.
    if let Some(mut cluster) = lab.kube.lock().unwrap_or_else(|e| e.into_inner()).take() {
        for e in cluster.shutdown() {
            tracing::warn!(error = %e, "Kubernetes teardown");
        }
    }
    lab.save(|s| s.kube = None);
    lab.daemons
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stop_all();
    lab.record_daemons();
    for pod in state::list_pods(&lab.dir) {
        if let Err(e) = Fabric::delete_netns(&pod.netns) {
            tracing::warn!(netns = %pod.netns, error = %e, "deleting pod netns");
        }
    }
    if let Some(emu) = lab
        .emulator
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        runtime.block_on(emu.shutdown());
    }
    for e in lab.fabric.destroy() {
        tracing::warn!(error = %e, "fabric teardown");
    }
    let _ = std::fs::remove_file(control::socket_path(&lab.dir));
    let _ = std::fs::remove_file(lab.plan.admin_socket());
}
