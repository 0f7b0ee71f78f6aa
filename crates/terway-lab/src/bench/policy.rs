//! `bench policy`: NetworkPolicy in the Kubernetes lab. How long a new policy takes to be enforced — from
//! its create request until the first probe it should stop is dropped (the way Kubernetes' perf-tests
//! measure it) — for 1, 10 and 100 policies at once over 100 pods; pod start-up (creation → IP) with 100
//! policies selecting the new pods vs none; and the datapath with 100 policies in the way vs none (TCP
//! connection setup, ping-pong round trips on an established connection, bulk throughput).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use terway_datapath::netns::Netns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::k8s::{in_vpc, k8s_lab};
use super::report::{fmt, fmt_ratio, Section, Table, Target};
use super::stats::{ratio, Summary};
use super::CommonOpts;
use crate::k8s::api::Api;
use crate::plan::LabPlan;

/// `bench policy` sizes.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyOpts {
    /// Server pods the policies select.
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Rounds per policy count (each on other pods).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Pods started one at a time, with and without the policies.
    #[arg(long, default_value_t = 20)]
    pub starts: usize,
}

/// The server pods listen here: 80 accepts and closes, 81 echoes, 82 swallows.
const ACCEPT: u16 = 80;
const ECHO: u16 = 81;
const SINK: u16 = 82;
/// Time between probe waves while waiting for enforcement, and how long one probe waits.
const TICK: Duration = Duration::from_millis(20);
const PROBE: Duration = Duration::from_millis(100);
const ENFORCE_DEADLINE: Duration = Duration::from_secs(15);

/// A server pod: its name, address and namespace.
struct Server {
    name: String,
    ip: IpAddr,
}

/// Everything a measurement needs.
struct Setup {
    ns: String,
    servers: Vec<Server>,
    client: Netns,
}

fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

fn policies_path(ns: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")
}

/// A policy selecting `selector` that admits ingress only from pods labelled `role=<from>`.
fn policy(name: &str, selector: Value, from: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": from}}}]}]}
    })
}

fn workload(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "main", "image": crate::k8s::WORKLOAD_IMAGE, "imagePullPolicy": "Never"}]}
    })
}

/// Wait until the namespace's pods named in `names` all run with an address; their addresses.
async fn wait_running(
    api: &Api,
    ns: &str,
    names: &[String],
) -> anyhow::Result<BTreeMap<String, IpAddr>> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let list = api.get(&pods_path(ns)).await?;
        let ips: BTreeMap<String, IpAddr> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
            .filter_map(|p| {
                let ip = p.pointer("/status/podIP")?.as_str()?.parse().ok()?;
                Some((p.pointer("/metadata/name")?.as_str()?.to_string(), ip))
            })
            .collect();
        if names.iter().all(|n| ips.contains_key(n)) {
            return Ok(ips);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} of {} pods of namespace {ns} run after 300 s",
                ips.len(),
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The namespace, the servers (with listeners inside their namespaces) and the client's namespace.
async fn set_up(api: &Api, plan: &LabPlan, o: &PolicyOpts) -> anyhow::Result<Setup> {
    let ns = format!(
        "bench-policy-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    api.send(
        reqwest::Method::POST,
        "/api/v1/namespaces",
        Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
    )
    .await?;
    // A namespace admits pods only once its default service account has its token (1.20 makes it
    // asynchronously, and refuses pods until then).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sa = api
            .get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/default"))
            .await
            .unwrap_or(Value::Null);
        if sa["secrets"].as_array().is_some_and(|s| !s.is_empty()) {
            break;
        }
        if Instant::now() >= deadline {
            anyhow::bail!("namespace {ns} got no default service account token within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut names: Vec<String> = (0..o.pods).map(|i| format!("srv-{i}")).collect();
    for n in &names {
        let labels = json!({"app": "srv", "idx": n});
        api.send(
            reqwest::Method::POST,
            &pods_path(&ns),
            Some(&workload(n, labels)),
        )
        .await?;
    }
    api.send(
        reqwest::Method::POST,
        &pods_path(&ns),
        Some(&workload("client", json!({"role": "client"}))),
    )
    .await?;
    names.push("client".into());
    let ips = wait_running(api, &ns, &names).await?;
    let st = crate::state::load(&plan.name)?;
    let records = crate::k8s::pods::records(&st)?;
    let netns_of = |name: &str| -> anyhow::Result<Netns> {
        let r = records
            .iter()
            .find(|r| r.namespace == ns && r.pod == name)
            .ok_or_else(|| anyhow::anyhow!("no network namespace found for pod {ns}/{name}"))?;
        Ok(Netns::open(&r.netns)?)
    };
    let mut servers = Vec::new();
    for n in names.iter().filter(|n| n.starts_with("srv-")) {
        let pod_ns = netns_of(n)?;
        let listeners = pod_ns.run(|| {
            [ACCEPT, ECHO, SINK]
                .into_iter()
                .map(|port| {
                    let l = std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                })
                .collect::<std::io::Result<Vec<_>>>()
        })??;
        for (port, l) in [ACCEPT, ECHO, SINK].into_iter().zip(listeners) {
            let l = TcpListener::from_std(l)?;
            tokio::spawn(serve(l, port));
        }
        servers.push(Server {
            name: n.clone(),
            ip: ips[n],
        });
    }
    Ok(Setup {
        client: netns_of("client")?,
        ns,
        servers,
    })
}

async fn serve(l: TcpListener, port: u16) {
    while let Ok((mut s, _)) = l.accept().await {
        match port {
            ACCEPT => drop(s),
            _ => {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || (port == ECHO && s.write_all(&buf[..n]).await.is_err()) {
                            break;
                        }
                    }
                });
            }
        }
    }
}

/// A TCP connection from the client pod, or `None` when it did not connect within `wait`.
async fn connect(
    client: &Netns,
    dst: SocketAddr,
    wait: Duration,
) -> anyhow::Result<Option<TcpStream>> {
    let sock = client.run(TcpSocket::new_v4)??;
    Ok(tokio::time::timeout(wait, sock.connect(dst))
        .await
        .ok()
        .and_then(Result::ok))
}

/// Probe `targets` every [`TICK`] until a probe of each fails (`want_open` false) or succeeds (true);
/// when each target's first such probe was sent, from `since`. Probes overlap (each waits up to
/// [`PROBE`]); all wait as long, so failures come back in the order they were sent.
async fn until_each(
    s: &Setup,
    targets: &[usize],
    want_open: bool,
    since: &[Instant],
) -> anyhow::Result<Vec<Duration>> {
    let mut done: BTreeMap<usize, Duration> = BTreeMap::new();
    let deadline = Instant::now() + ENFORCE_DEADLINE;
    let mut inflight = tokio::task::JoinSet::new();
    while done.len() < targets.len() {
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} of {} pods were still {} after {ENFORCE_DEADLINE:?}",
                targets.len() - done.len(),
                targets.len(),
                if want_open { "closed" } else { "open" }
            );
        }
        for (j, &t) in targets
            .iter()
            .enumerate()
            .filter(|(j, _)| !done.contains_key(j))
        {
            let sock = s.client.run(TcpSocket::new_v4)??;
            let dst = SocketAddr::new(s.servers[t].ip, ACCEPT);
            let sent = Instant::now();
            inflight.spawn(async move {
                let ok = tokio::time::timeout(PROBE, sock.connect(dst))
                    .await
                    .is_ok_and(|r| r.is_ok());
                (j, sent, ok)
            });
        }
        tokio::time::sleep(TICK).await;
        while let Some(r) = inflight.try_join_next() {
            let (j, sent, ok) = r?;
            if ok == want_open {
                done.entry(j)
                    .or_insert(sent.saturating_duration_since(since[j]));
            }
        }
    }
    inflight.abort_all();
    Ok(done.into_values().collect())
}

/// Create `k` policies at once, each isolating one server; how long each took to be enforced.
async fn enforcement(
    api: &Api,
    s: &Setup,
    k: usize,
    round: usize,
) -> anyhow::Result<Vec<Duration>> {
    let targets: Vec<usize> = (0..k).map(|j| (round * k + j) % s.servers.len()).collect();
    let mut created = Vec::new();
    for (j, &t) in targets.iter().enumerate() {
        let p = policy(
            &format!("isolate-{k}-{round}-{j}"),
            json!({"idx": s.servers[t].name}),
            "nobody",
        );
        created.push(Instant::now());
        api.send(reqwest::Method::POST, &policies_path(&s.ns), Some(&p))
            .await?;
    }
    let took = until_each(s, &targets, false, &created).await?;
    delete_policies(api, &s.ns).await?;
    let now = vec![Instant::now(); targets.len()];
    until_each(s, &targets, true, &now).await?;
    Ok(took)
}

async fn delete_policies(api: &Api, ns: &str) -> anyhow::Result<()> {
    api.send(reqwest::Method::DELETE, &policies_path(ns), None)
        .await?;
    Ok(())
}

/// `n` pods labelled `app=srv` created one at a time: creation → IP of each.
async fn starts(api: &Api, ns: &str, n: usize, tag: &str) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("start-{tag}-{i}");
        let t0 = Instant::now();
        api.send(
            reqwest::Method::POST,
            &pods_path(ns),
            Some(&workload(&name, json!({"app": "srv", "idx": name}))),
        )
        .await?;
        wait_running(api, ns, std::slice::from_ref(&name)).await?;
        out.push(t0.elapsed());
        api.send(
            reqwest::Method::DELETE,
            &format!("{}/{name}?gracePeriodSeconds=0", pods_path(ns)),
            None,
        )
        .await?;
    }
    Ok(out)
}

/// Datapath figures from the client to server 0: connection setups, round trips, throughput.
struct Path {
    connect: Vec<Duration>,
    rtt: Vec<Duration>,
    mbit_s: f64,
}

async fn datapath(s: &Setup) -> anyhow::Result<Path> {
    let ip = s.servers[0].ip;
    let mut connect_times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let c = connect(
            &s.client,
            SocketAddr::new(ip, ACCEPT),
            Duration::from_secs(2),
        )
        .await?;
        anyhow::ensure!(c.is_some(), "the client could not connect to {ip}:{ACCEPT}");
        connect_times.push(t.elapsed());
    }
    let mut echo = connect(&s.client, SocketAddr::new(ip, ECHO), Duration::from_secs(2))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the client could not connect to {ip}:{ECHO}"))?;
    echo.set_nodelay(true)?;
    let mut rtt = Vec::new();
    let mut b = [0u8; 1];
    for _ in 0..2000 {
        let t = Instant::now();
        echo.write_all(b"x").await?;
        echo.read_exact(&mut b).await?;
        rtt.push(t.elapsed());
    }
    let mut sink = connect(&s.client, SocketAddr::new(ip, SINK), Duration::from_secs(2))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the client could not connect to {ip}:{SINK}"))?;
    let chunk = vec![0u8; 256 * 1024];
    let (t, mut sent) = (Instant::now(), 0u64);
    while t.elapsed() < Duration::from_secs(3) {
        sink.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    let mbit_s = sent as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6;
    Ok(Path {
        connect: connect_times,
        rtt,
        mbit_s,
    })
}

/// What one run measured.
struct Measured {
    enforce: Vec<(usize, Vec<Duration>)>,
    starts_none: Vec<Duration>,
    starts_many: Vec<Duration>,
    path_none: Path,
    path_many: Path,
}

async fn measure(
    api: &Api,
    plan: &LabPlan,
    o: &PolicyOpts,
    quiet: bool,
) -> anyhow::Result<Measured> {
    let s = set_up(api, plan, o).await?;
    let mut enforce = Vec::new();
    for k in [1usize, 10, 100]
        .into_iter()
        .filter(|k| *k <= s.servers.len())
    {
        if !quiet {
            eprintln!("bench policy: {k} policies at once, {} rounds", o.rounds);
        }
        let mut all = Vec::new();
        for r in 0..o.rounds {
            all.extend(enforcement(api, &s, k, r).await?);
        }
        enforce.push((k, all));
    }
    if !quiet {
        eprintln!("bench policy: pod starts and the datapath, without policies");
    }
    let starts_none = starts(api, &s.ns, o.starts, "none").await?;
    let path_none = datapath(&s).await?;
    // 100 policies select every server pod (and every new one); only the last admits the client, so the
    // first packet of a connection meets all of their rules.
    for i in 0..100 {
        let from = if i == 99 { "client" } else { "nobody" };
        api.send(
            reqwest::Method::POST,
            &policies_path(&s.ns),
            Some(&policy(
                &format!("many-{i:03}"),
                json!({"app": "srv"}),
                from,
            )),
        )
        .await?;
    }
    if !quiet {
        eprintln!("bench policy: pod starts and the datapath, with 100 policies");
    }
    // Nothing the client can see changes (the last policy admits it): give the node the time the
    // enforcement figures above say it needs, with a wide margin.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starts_many = starts(api, &s.ns, o.starts, "many").await?;
    let path_many = datapath(&s).await?;
    api.send(
        reqwest::Method::DELETE,
        &format!("/api/v1/namespaces/{}", s.ns),
        None,
    )
    .await?;
    Ok(Measured {
        enforce,
        starts_none,
        starts_many,
        path_none,
        path_many,
    })
}

/// `terway-lab bench policy`.
pub fn bench(opts: &CommonOpts, o: &PolicyOpts) -> anyhow::Result<Section> {
    let quiet = opts.json;
    let owned = opts.lab.is_none();
    let plan = k8s_lab(opts, "bp", (10, 40), crate::plan::TerwaydInstall::Daemonset)?;
    let (o2, plan2) = (o.clone(), plan.clone());
    let result = in_vpc(&plan, move |api| {
        Box::pin(async move { measure(&api, &plan2, &o2, quiet).await })
    });
    if owned {
        let _ = crate::down::down(&plan.name, true);
    }
    let m = result?;
    Ok(report(o, &m))
}

fn report(o: &PolicyOpts, m: &Measured) -> Section {
    let mut section = Section::new("policy");
    let mut t = Table::new(
        format!(
            "bench policy: NetworkPolicy create → enforced (first probe dropped), over {} pods, {} rounds each",
            o.pods, o.rounds
        ),
        &["policies at once", "samples", "p50", "p99", "max"],
    );
    let mut rows = Vec::new();
    for (k, d) in &m.enforce {
        let s = Summary::of(d);
        t.row(vec![
            k.to_string(),
            d.len().to_string(),
            format!("{} ms", fmt(s.map(|s| s.p50_ms), 0)),
            format!("{} ms", fmt(s.map(|s| s.p99_ms), 0)),
            format!("{} ms", fmt(s.map(|s| s.max_ms), 0)),
        ]);
        rows.push(json!({"policies": k, "enforced": s}));
        section.targets.push(Target::new(
            format!(
                "policy create → enforced p99, {k} at once over {} pods",
                o.pods
            ),
            s.map(|s| s.p99_ms),
            700.0,
            true,
            " ms",
        ));
    }
    section.tables.push(t);

    let mut t = Table::new(
        "bench policy: cost of 100 policies selecting the pods (vs none)",
        &[
            "measure",
            "none p50",
            "none p99",
            "100 policies p50",
            "100 policies p99",
            "ratio p50",
        ],
    );
    let mut cmp = |name: &str, a: &[Duration], b: &[Duration]| {
        let (sa, sb) = (Summary::of(a), Summary::of(b));
        let (a50, b50) = (sa.map(|s| s.p50_ms), sb.map(|s| s.p50_ms));
        t.row(vec![
            name.into(),
            format!("{} ms", fmt(a50, 3)),
            format!("{} ms", fmt(sa.map(|s| s.p99_ms), 3)),
            format!("{} ms", fmt(b50, 3)),
            format!("{} ms", fmt(sb.map(|s| s.p99_ms), 3)),
            fmt_ratio(ratio(b50, a50)),
        ]);
        ratio(b50, a50)
    };
    let start_ratio = cmp(
        "pod start (creation → running with an IP)",
        &m.starts_none,
        &m.starts_many,
    );
    let connect_ratio = cmp(
        "TCP connection setup",
        &m.path_none.connect,
        &m.path_many.connect,
    );
    let rtt_ratio = cmp(
        "round trip, established connection",
        &m.path_none.rtt,
        &m.path_many.rtt,
    );
    let tput = ratio(Some(m.path_none.mbit_s), Some(m.path_many.mbit_s));
    t.row(vec![
        "bulk throughput".into(),
        format!("{:.0} Mbit/s", m.path_none.mbit_s),
        String::new(),
        format!("{:.0} Mbit/s", m.path_many.mbit_s),
        String::new(),
        fmt_ratio(tput),
    ]);
    section.tables.push(t);
    section.targets.push(Target::new(
        "round-trip time with 100 policies vs none",
        rtt_ratio,
        1.05,
        true,
        "x",
    ));
    section.targets.push(Target::new(
        "throughput cost of 100 policies (none / with)",
        tput,
        1.05,
        true,
        "x",
    ));
    section.json = json!({
        "pods": o.pods, "rounds": o.rounds, "enforce": rows,
        "start_ratio_p50": start_ratio, "connect_ratio_p50": connect_ratio, "rtt_ratio_p50": rtt_ratio,
        "mbit_s": {"none": m.path_none.mbit_s, "many": m.path_many.mbit_s},
    });
    section
}
