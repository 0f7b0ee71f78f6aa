//! `bench k8s`: pod start-up through the whole Kubernetes path (API server → scheduler → kubelet → CRI
//! → CNI), from the pod's creation to an IP in its status and to Ready, for pods created one at a time
//! and for a burst. The same lab runs it twice: with `terway` and with the reference `bridge` +
//! `host-local` chain swapped into every node's CNI directory, so the ratio isolates the CNI. The bar is
//! Kubernetes' pod start-up SLO: p99 ≤ 5 s (image pulls excluded; the lab's images are local).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::report::{fmt, fmt_ratio, Section, Table, Target};
use super::stats::{ratio, Summary};
use super::CommonOpts;
use crate::k8s::api::Api;
use crate::plan::{LabPlan, NodeCni, NodeMode};

/// `bench k8s` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sOpts {
    /// Pods created one after the other (each waited for).
    #[arg(long, default_value_t = 20)]
    pub pods: usize,
    /// Pods created at once.
    #[arg(long, default_value_t = 30)]
    pub burst: usize,
}

/// When each pod of a run got its address and became Ready, from its creation.
#[derive(Debug, Default, Clone)]
struct Times {
    ip: Vec<Duration>,
    ready: Vec<Duration>,
}

fn pod_manifest(name: &str, run: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "bench": run } },
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": crate::k8s::WORKLOAD_IMAGE,
                "imagePullPolicy": "Never",
            }],
        },
    })
}

fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Create `names` (all at once), then poll until each has an IP and is Ready.
async fn start_pods(api: &Api, run: &str, names: &[String]) -> anyhow::Result<Times> {
    let mut created = BTreeMap::new();
    for n in names {
        api.send(
            reqwest::Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(&pod_manifest(n, run)),
        )
        .await?;
        created.insert(n.clone(), Instant::now());
    }
    let (mut ip, mut ready) = (BTreeMap::new(), BTreeMap::new());
    let deadline = Instant::now() + Duration::from_secs(180);
    while ready.len() < names.len() {
        let list = api
            .get(&format!(
                "/api/v1/namespaces/default/pods?labelSelector=bench%3D{run}"
            ))
            .await?;
        let now = Instant::now();
        for p in list["items"].as_array().into_iter().flatten() {
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let Some(t0) = created.get(&name) else {
                continue;
            };
            if p.pointer("/status/podIP").and_then(Value::as_str).is_some() {
                ip.entry(name.clone()).or_insert(now - *t0);
            }
            if is_ready(p) {
                ready.entry(name).or_insert(now - *t0);
            }
        }
        if now >= deadline {
            anyhow::bail!(
                "{} of {} pods were Ready after 180 s (run {run})",
                ready.len(),
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Times {
        ip: ip.into_values().collect(),
        ready: ready.into_values().collect(),
    })
}

/// Delete a run's pods and wait until they are gone (their CNI DEL done).
async fn delete_pods(api: &Api, run: &str, names: &[String]) -> anyhow::Result<()> {
    for n in names {
        api.send(
            reqwest::Method::DELETE,
            &format!("/api/v1/namespaces/default/pods/{n}?gracePeriodSeconds=0"),
            None,
        )
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list = api
            .get(&format!(
                "/api/v1/namespaces/default/pods?labelSelector=bench%3D{run}"
            ))
            .await?;
        if list["items"].as_array().is_none_or(|a| a.is_empty()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the pods of run {run} were not deleted within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One CNI: a warm-up pod (also proves the chain is live: its address must come from `expect`), then
/// the sequential run and the burst.
async fn measure(
    api: &Api,
    cni: NodeCni,
    expect: ipnet::Ipv4Net,
    o: &K8sOpts,
    quiet: bool,
) -> anyhow::Result<(Times, Times)> {
    let tag = match cni {
        NodeCni::Terway => "terway",
        NodeCni::Bridge => "bridge",
    };
    let id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    // containerd reloads a changed CNI directory asynchronously: wait for a pod that got the new chain.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let run = format!("warm-{tag}-{id}-{attempt}");
        let names = vec![run.clone()];
        start_pods(api, &run, &names).await?;
        let pod = api
            .get(&format!("/api/v1/namespaces/default/pods/{run}"))
            .await?;
        delete_pods(api, &run, &names).await?;
        let ip: Option<std::net::Ipv4Addr> = pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        if ip.is_some_and(|ip| expect.contains(&ip)) {
            break;
        }
        if Instant::now() >= deadline {
            anyhow::bail!("pods never got an address from {tag} (last {ip:?}, expected {expect})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !quiet {
        eprintln!("bench k8s: {tag}: {} pods one at a time", o.pods);
    }
    let mut seq = Times::default();
    let run = format!("seq-{tag}-{id}");
    let mut names = Vec::new();
    for i in 0..o.pods {
        let one = vec![format!("{run}-{i}")];
        let t = start_pods(api, &run, &one).await?;
        seq.ip.extend(t.ip);
        seq.ready.extend(t.ready);
        names.extend(one);
    }
    delete_pods(api, &run, &names).await?;
    if !quiet {
        eprintln!("bench k8s: {tag}: a burst of {}", o.burst);
    }
    let run = format!("burst-{tag}-{id}");
    let names: Vec<String> = (0..o.burst).map(|i| format!("{run}-{i}")).collect();
    let burst = start_pods(api, &run, &names).await?;
    delete_pods(api, &run, &names).await?;
    Ok((seq, burst))
}

/// A future run on the benchmark's own thread.
pub(super) type LocalFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>>>>;

/// The lab's administrator token, from its kubeconfig.
fn admin_token(plan: &LabPlan) -> anyhow::Result<String> {
    let path = crate::k8s::LabPaths::new(&plan.dir).admin_kubeconfig();
    let text = std::fs::read_to_string(&path)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no token in {}", path.display()))
}

/// Run `f` with an API client on a thread inside the lab's VPC (where the API server's address is).
pub(super) fn in_vpc<T: Send + 'static>(
    plan: &LabPlan,
    f: impl FnOnce(Api) -> LocalFuture<T> + Send + 'static,
) -> anyhow::Result<T> {
    let kube = plan
        .kubernetes
        .clone()
        .ok_or_else(|| anyhow::anyhow!("lab {} runs no Kubernetes", plan.name))?;
    let (vpc, ca, token) = (
        plan.vpc_netns.clone(),
        crate::k8s::LabPaths::new(&plan.dir).pki().join("ca.crt"),
        admin_token(plan)?,
    );
    std::thread::spawn(move || -> anyhow::Result<T> {
        crate::probe::enter_netns(&vpc)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let api = Api::new(&kube.api_url(), &ca, &token)?;
        rt.block_on(f(api))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))?
}

/// The lab `--lab` names, or a new one-node Kubernetes lab (shared ENI, pool `min`/`max`) named
/// `<prefix><random>`, which the caller takes down.
pub(super) fn k8s_lab(
    opts: &CommonOpts,
    prefix: &str,
    (min_pool, max_pool): (u32, u32),
    terwayd: crate::plan::TerwaydInstall,
) -> anyhow::Result<LabPlan> {
    match &opts.lab {
        Some(name) => Ok(crate::state::load(name)?.plan),
        None => crate::up::up(
            &crate::up::UpArgs {
                name: Some(format!(
                    "{prefix}{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..6]
                )),
                nodes: 1,
                modes: vec![NodeMode::Shared],
                node_specs: Vec::new(),
                instance_type: "ecs.g7.4xlarge".into(),
                vswitches: 1,
                pod_vswitches: 0,
                vswitch_prefix: crate::plan::DEFAULT_VSWITCH_PREFIX,
                min_pool,
                max_pool,
                attach_delay_ms: "200-600".into(),
                vpc_cidr: None,
                timeout: Some(240),
                json: false,
                k8s: true,
                cni: NodeCni::Terway,
                terwayd,
            },
            true,
        ),
    }
}

/// `terway-lab bench k8s`.
pub fn bench(opts: &CommonOpts, o: &K8sOpts) -> anyhow::Result<Section> {
    let quiet = opts.json;
    let owned = opts.lab.is_none();
    // It switches nodes between terway and the reference chain, whose plugins only the lab's CNI
    // directory holds: terwayd runs as processes.
    let plan = k8s_lab(opts, "bk", (2, 10), crate::plan::TerwaydInstall::Process)?;
    let result = run_both(&plan, o, quiet);
    // Leave a borrowed lab as it was found: terway on every node.
    for i in 0..plan.nodes.len() {
        let _ = crate::k8s::node_files::switch_cni(&plan, i, NodeCni::Terway);
    }
    if owned {
        let _ = crate::down::down(&plan.name, true);
    }
    let (terway, bridge) = result?;

    let mut section = Section::new("k8s");
    let mut t = Table::new(
        format!(
            "bench k8s: pod creation → IP assigned / → Ready through kube-apiserver, kube-scheduler, kubelet, \
             containerd ({} node(s), pool min 2 / max 10 on shared ENIs)",
            plan.nodes.len()
        ),
        &["run", "to", "terway p50", "terway p99", "bridge p50", "bridge p99", "ratio p50", "ratio p99"],
    );
    let mut json_rows = Vec::new();
    for (run, ours, reference) in [
        (format!("sequential × {}", o.pods), &terway.0, &bridge.0),
        (format!("burst of {}", o.burst), &terway.1, &bridge.1),
    ] {
        for (to, a, b) in [
            ("IP", &ours.ip, &reference.ip),
            ("Ready", &ours.ready, &reference.ready),
        ] {
            let (sa, sb) = (Summary::of(a), Summary::of(b));
            let (a50, a99) = (sa.map(|s| s.p50_ms), sa.map(|s| s.p99_ms));
            let (b50, b99) = (sb.map(|s| s.p50_ms), sb.map(|s| s.p99_ms));
            t.row(vec![
                run.clone(),
                to.into(),
                format!("{} ms", fmt(a50, 0)),
                format!("{} ms", fmt(a99, 0)),
                format!("{} ms", fmt(b50, 0)),
                format!("{} ms", fmt(b99, 0)),
                fmt_ratio(ratio(a50, b50)),
                fmt_ratio(ratio(a99, b99)),
            ]);
            json_rows.push(json!({
                "run": run, "to": to, "terway": sa, "bridge": sb,
                "ratio_p50": ratio(a50, b50), "ratio_p99": ratio(a99, b99),
            }));
            if to == "Ready" {
                section.targets.push(Target::new(
                    format!("k8s pod start-up p99, {run} (SLO, images local)"),
                    a99.map(|v| v / 1000.0),
                    5.0,
                    true,
                    " s",
                ));
            }
        }
    }
    section.tables.push(t);
    section.json = json!({ "pods": o.pods, "burst": o.burst, "rows": json_rows });
    Ok(section)
}

fn run_both(
    plan: &LabPlan,
    o: &K8sOpts,
    quiet: bool,
) -> anyhow::Result<((Times, Times), (Times, Times))> {
    let mut out = Vec::new();
    for cni in [NodeCni::Terway, NodeCni::Bridge] {
        for i in 0..plan.nodes.len() {
            crate::k8s::node_files::switch_cni(plan, i, cni)?;
        }
        let expect = match cni {
            NodeCni::Terway => plan.vpc_cidr,
            NodeCni::Bridge => {
                ipnet::Ipv4Net::new(crate::k8s::node_files::bridge_subnet(plan, 0).network(), 16)
                    .map(|n| n.trunc())
                    .unwrap_or(plan.vpc_cidr)
            }
        };
        let (o2, q) = (o.clone(), quiet);
        out.push(in_vpc(plan, move |api| {
            Box::pin(async move { measure(&api, cni, expect, &o2, q).await })
        })?);
    }
    let bridge = out.pop().ok_or_else(|| anyhow::anyhow!("no bridge run"))?;
    let terway = out.pop().ok_or_else(|| anyhow::anyhow!("no terway run"))?;
    Ok((terway, bridge))
}
