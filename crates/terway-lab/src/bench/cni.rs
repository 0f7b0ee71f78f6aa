//! `bench cni`: ADD/DEL latency and throughput of our `terway` (warm pool, shared-ENI veth mode, on a lab
//! node) next to the Debian reference plugins (`bridge`+`host-local`, `ptp`+`host-local`) run the same way in
//! the same run, plus the floors: exec of a trivial binary, veth create, veth delete.
//!
//! Every plugin is exec'ed with the CNI environment and its configuration on stdin, its "host" namespace
//! entered with setns between fork and exec. The pod namespace exists before ADD and is removed after DEL
//! (the runtime's job, not timed), exactly as containerd orders it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use terway_datapath::Netns;

use crate::state::ListedPods;

use super::exec::{run_cni, CniCall};
use super::lab::{Lab, LabSpec};
use super::report::{fmt, fmt_ratio, Chart, Section, Table, Target};
use super::stats::{ms, per_second, ratio, Summary};
use super::{floors, CommonOpts};

/// Where the Debian package `containernetworking-plugins` installs the reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// A plugin set under test.
pub struct Subject {
    /// Display name.
    pub name: String,
    plugin: PathBuf,
    cni_path: String,
    config: Vec<u8>,
    host: Netns,
    /// Namespaces, links and files to remove afterwards (the reference plugins' host namespace).
    owned_host: Option<String>,
    owned_dir: Option<PathBuf>,
    /// Called before each run (e.g. wait for a warm pool).
    pub before_run: Option<Box<dyn Fn(usize) -> anyhow::Result<()> + Send + Sync>>,
    /// The lab directory and node whose pods file must list this subject's pods while they live.
    listed_on: Option<(PathBuf, String)>,
}

impl Subject {
    /// List `set`'s pods on the subject's lab node (see [`ListedPods`]); nothing for a subject that is not
    /// a lab daemon.
    pub fn list(&self, set: &PodSet) -> anyhow::Result<Option<ListedPods>> {
        let Some((dir, node)) = &self.listed_on else {
            return Ok(None);
        };
        let pods = set
            .pods
            .iter()
            .map(|p| ("bench".to_string(), p.name.clone()));
        ListedPods::list(dir, node, &set.id, pods)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("listing the bench pods on {node}: {e}"))
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        if let Some(ns) = &self.owned_host {
            let _ = Netns::delete_named(ns);
        }
        if let Some(d) = &self.owned_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A reference plugin (`bridge` or `ptp`) with `host-local`, in a fresh host namespace of its own.
pub fn reference(kind: &str, run_id: &str, subnet: &str) -> anyhow::Result<Subject> {
    let plugin = Path::new(REFERENCE_DIR).join(kind);
    if !plugin.is_file() || !Path::new(REFERENCE_DIR).join("host-local").is_file() {
        anyhow::bail!(
            "{} or host-local missing in {REFERENCE_DIR}: install containernetworking-plugins (scripts/prereqs.sh)",
            plugin.display()
        );
    }
    let host_name = format!("bn{run_id}-{kind}");
    let host = Netns::create_named(&host_name)?;
    let dir = std::env::temp_dir().join(format!("terway-bench-{run_id}-{kind}"));
    std::fs::create_dir_all(&dir)?;
    let ipam = json!({ "type": "host-local", "ranges": [[{ "subnet": subnet }]], "dataDir": dir.join("ipam") });
    let mut conf = json!({ "cniVersion": "1.0.0", "name": format!("bench-{kind}"), "type": kind, "ipam": ipam });
    if kind == "bridge" {
        conf["bridge"] = json!(format!("bnbr{}", &run_id[..4.min(run_id.len())]));
        conf["isGateway"] = json!(true);
    }
    Ok(Subject {
        name: format!("{kind}+host-local"),
        plugin,
        cni_path: REFERENCE_DIR.into(),
        config: serde_json::to_vec(&conf)?,
        host,
        owned_host: Some(host_name),
        owned_dir: Some(dir),
        listed_on: None,
        before_run: None,
    })
}

/// Our `terway` on the lab node `node` (shared-ENI veth mode).
pub fn terway(lab: &Lab, node: &str) -> anyhow::Result<Subject> {
    let n = lab
        .nodes
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| anyhow::anyhow!("lab {} has no node {node}", lab.name))?;
    let plugin = crate::procs::find_binary("terway")?;
    let cni_path = plugin
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let config = std::fs::read(&n.cni_config)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", n.cni_config.display()))?;
    let socket = n.socket.clone();
    Ok(Subject {
        name: "terway".into(),
        plugin,
        cni_path,
        config,
        host: Netns::open_named(&n.netns)?,
        owned_host: None,
        owned_dir: None,
        listed_on: lab.dir.clone().map(|d| (d, node.to_string())),
        before_run: Some(Box::new(move |pods| {
            // A warm pool: every pod of the run must find an idle IP (the cooldown of the last run has passed).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(super::lab::wait_idle(
                &socket,
                pods as u32,
                Duration::from_secs(300),
            ))?;
            Ok(())
        })),
    })
}

/// Latencies and wall times of one run.
#[derive(Debug, Default)]
pub struct RunResult {
    /// ADD latencies of successful calls.
    pub add: Vec<Duration>,
    /// DEL latencies of successful calls.
    pub del: Vec<Duration>,
    /// Wall time of the ADD phase.
    pub add_wall: Duration,
    /// Wall time of the DEL phase.
    pub del_wall: Duration,
    /// First few failures.
    pub errors: Vec<String>,
    /// Number of failures.
    pub failures: usize,
}

/// One pod of a run: its namespace (created before ADD) and identity.
pub struct Pod {
    /// Named netns.
    pub netns: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `K8S_POD_NAME`.
    pub name: String,
}

/// Pods whose namespaces exist; removed on drop (after DEL, as the runtime does).
pub struct PodSet {
    /// Unique name of the set (run and label).
    pub id: String,
    /// The pods.
    pub pods: Vec<Pod>,
}

impl PodSet {
    /// Create `n` pod namespaces named after the run and subject.
    pub fn create(run_id: &str, label: &str, n: usize) -> anyhow::Result<PodSet> {
        let mut set = PodSet {
            id: format!("{run_id}-{label}"),
            pods: Vec::with_capacity(n),
        };
        for i in 0..n {
            let p = Pod {
                netns: format!("bn{run_id}-{label}-{i}"),
                container_id: format!("{:0>64}", format!("{run_id}{label}{i}")),
                name: format!("bench-{label}-{i}"),
            };
            Netns::create_named(&p.netns)?;
            set.pods.push(p);
        }
        Ok(set)
    }
}

impl Drop for PodSet {
    fn drop(&mut self) {
        for p in &self.pods {
            let _ = Netns::delete_named(&p.netns);
        }
    }
}

/// Run `f(i)` for i in 0..n on `workers` threads; returns per-call results (in index order) and the wall time.
pub fn parallel<T: Send>(
    n: usize,
    workers: usize,
    f: impl Fn(usize) -> T + Sync,
) -> (Vec<T>, Duration) {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, T)>> = Mutex::new(Vec::with_capacity(n));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = f(i);
                out.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
            });
        }
    });
    let wall = start.elapsed();
    let mut v = out.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by_key(|(i, _)| *i);
    (v.into_iter().map(|(_, r)| r).collect(), wall)
}

/// Outcome of one CNI call: latency and stdout, or the failure text.
pub type CallResult = Result<(Duration, Vec<u8>), String>;

/// One CNI call for `pod`: latency and stdout.
pub fn call(subject: &Subject, command: &str, pod: &Pod) -> CallResult {
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.name, pod.container_id, pod.container_id
    );
    let path = Netns::named_path(&pod.netns).display().to_string();
    let c = CniCall {
        plugin: &subject.plugin,
        cni_path: &subject.cni_path,
        command,
        container_id: &pod.container_id,
        netns_path: &path,
        ifname: "eth0",
        args: &args,
        config: &subject.config,
    };
    run_cni(&c, &subject.host, CALL_TIMEOUT).map_err(|e| e.to_string())
}

/// `command` for every pod of `set` with `workers` concurrent callers.
pub fn phase(
    subject: &Subject,
    set: &PodSet,
    command: &str,
    workers: usize,
) -> (Vec<CallResult>, Duration) {
    parallel(set.pods.len(), workers, |i| {
        call(subject, command, &set.pods[i])
    })
}

/// ADD `pods` pods with `workers` concurrent callers, then DEL them the same way.
pub fn run(
    subject: &Subject,
    run_id: &str,
    tag: &str,
    pods: usize,
    workers: usize,
) -> anyhow::Result<RunResult> {
    if let Some(f) = &subject.before_run {
        f(pods)?;
    }
    let short = subject.name.split('+').next().unwrap_or("x");
    let set = PodSet::create(run_id, &format!("{short}{tag}"), pods)?;
    let _listed = subject.list(&set)?;
    let mut res = RunResult::default();
    let (adds, wall) = phase(subject, &set, "ADD", workers);
    res.add_wall = wall;
    let (dels, wall) = phase(subject, &set, "DEL", workers);
    res.del_wall = wall;
    for (r, is_add) in adds
        .into_iter()
        .map(|r| (r, true))
        .chain(dels.into_iter().map(|r| (r, false)))
    {
        match r {
            Ok((d, _)) if is_add => res.add.push(d),
            Ok((d, _)) => res.del.push(d),
            Err(e) => {
                res.failures += 1;
                if res.errors.len() < 3 {
                    res.errors.push(e);
                }
            }
        }
    }
    Ok(res)
}

/// Everything `bench cni` measured for one subject in one mode.
fn run_json(r: &RunResult, pods: usize) -> Value {
    json!({
        "add": Summary::of(&r.add),
        "del": Summary::of(&r.del),
        "add_per_s": per_second(r.add.len(), r.add_wall),
        "del_per_s": per_second(r.del.len(), r.del_wall),
        "add_wall_ms": ms(r.add_wall),
        "del_wall_ms": ms(r.del_wall),
        "pods": pods,
        "failures": r.failures,
        "errors": r.errors,
    })
}

fn pick(v: &Value, ptr: &str) -> Option<f64> {
    v.pointer(ptr).and_then(Value::as_f64)
}

/// `bench cni`.
pub fn bench(
    opts: &CommonOpts,
    pods: usize,
    workers: usize,
    lab_name: Option<&str>,
    references_only: bool,
) -> anyhow::Result<Section> {
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let mut subjects: Vec<anyhow::Result<Subject>> = Vec::new();
    // Our plugin first, so a lab that fails to come up is reported and the references still run.
    let lab = match lab_name {
        Some(name) => Lab::existing(name),
        None if references_only => Err(anyhow::anyhow!("skipped (--references-only)")),
        None => Lab::up(&LabSpec {
            modes: vec!["shared"],
            min_pool: pods as u32,
            max_pool: pods as u32,
            attach_delay_ms: "200-600".into(),
        }),
    };
    match &lab {
        Ok(l) => subjects.push(
            l.node("shared")
                .map(|n| n.name.clone())
                .and_then(|n| terway(l, &n)),
        ),
        Err(e) => subjects.push(Err(anyhow::anyhow!("no lab for terway: {e:#}"))),
    }
    subjects.push(reference("bridge", run_id, "172.30.0.0/16"));
    subjects.push(reference("ptp", run_id, "172.31.0.0/16"));

    let modes = [("sequential", 1usize), ("concurrent", workers)];
    let mut results: serde_json::Map<String, Value> = serde_json::Map::new();
    for s in &subjects {
        let Ok(s) = s else { continue };
        results.insert(s.name.clone(), json!({}));
    }
    for (mode, w) in modes {
        for s in subjects.iter().flatten() {
            let tag = if w == 1 { "s" } else { "c" };
            if !opts.json {
                eprintln!("bench cni: {} {mode} ({pods} pods, {w} way)…", s.name);
            }
            let v = match run(s, run_id, tag, pods, w) {
                Ok(r) => run_json(&r, pods),
                Err(e) => json!({ "error": format!("{e:#}") }),
            };
            if let Some(obj) = results.get_mut(&s.name).and_then(Value::as_object_mut) {
                obj.insert(mode.into(), v);
            }
        }
    }
    let errors: Vec<String> = subjects
        .iter()
        .filter_map(|s| s.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    drop(subjects);
    drop(lab);
    let floors = floors::measure(pods.min(200));
    Ok(section(
        Value::Object(results),
        floors,
        errors,
        pods,
        workers,
    ))
}

/// Ratios of terway to each reference, the tables, targets and chart.
fn section(
    results: Value,
    floors: Value,
    errors: Vec<String>,
    pods: usize,
    workers: usize,
) -> Section {
    let mut sec = Section::new("cni");
    let refs = ["bridge+host-local", "ptp+host-local"];
    let mut ratios = serde_json::Map::new();
    let fields = [
        "/add/p50_ms",
        "/add/p90_ms",
        "/add/p99_ms",
        "/del/p50_ms",
        "/del/p90_ms",
        "/del/p99_ms",
        "/add_per_s",
        "/del_per_s",
    ];
    for r in refs {
        let mut per_mode = serde_json::Map::new();
        for mode in ["sequential", "concurrent"] {
            let mut m = serde_json::Map::new();
            for f in fields {
                let ours = pick(&results, &format!("/terway/{mode}{f}"));
                let theirs = pick(&results, &format!("/{r}/{mode}{f}"));
                m.insert(
                    f.trim_start_matches('/').replace('/', "_"),
                    json!(ratio(ours, theirs)),
                );
            }
            per_mode.insert(mode.into(), Value::Object(m));
        }
        ratios.insert(format!("terway_vs_{r}"), Value::Object(per_mode));
    }
    let ratios = Value::Object(ratios);
    for mode in ["sequential", "concurrent"] {
        let title = format!(
            "CNI {mode} ({pods} pods, {} way) — latency in ms, ratio = terway / reference",
            if mode == "sequential" { 1 } else { workers }
        );
        let mut t = Table::new(
            title,
            &[
                "plugin", "ADD p50", "p90", "p99", "ADD/s", "DEL p50", "p90", "p99", "DEL/s",
                "fail",
            ],
        );
        for name in ["terway", refs[0], refs[1]] {
            let g = |f: &str| pick(&results, &format!("/{name}/{mode}{f}"));
            if results.pointer(&format!("/{name}/{mode}")).is_none() {
                continue;
            }
            t.row(vec![
                name.into(),
                fmt(g("/add/p50_ms"), 2),
                fmt(g("/add/p90_ms"), 2),
                fmt(g("/add/p99_ms"), 2),
                fmt(g("/add_per_s"), 1),
                fmt(g("/del/p50_ms"), 2),
                fmt(g("/del/p90_ms"), 2),
                fmt(g("/del/p99_ms"), 2),
                fmt(g("/del_per_s"), 1),
                results
                    .pointer(&format!("/{name}/{mode}/failures"))
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        for r in refs {
            let g = |f: &str| pick(&ratios, &format!("/terway_vs_{r}/{mode}/{f}"));
            if g("add_p50_ms").is_none() && g("del_p50_ms").is_none() {
                continue;
            }
            t.row(vec![
                format!("terway / {}", r.split('+').next().unwrap_or(r)),
                fmt_ratio(g("add_p50_ms")),
                fmt_ratio(g("add_p90_ms")),
                fmt_ratio(g("add_p99_ms")),
                fmt_ratio(g("add_per_s")),
                fmt_ratio(g("del_p50_ms")),
                fmt_ratio(g("del_p90_ms")),
                fmt_ratio(g("del_p99_ms")),
                fmt_ratio(g("del_per_s")),
                String::new(),
            ]);
        }
        sec.tables.push(t);
    }
    let mut ft = Table::new(
        "Floors (kernel / exec limits), ms",
        &["operation", "p50", "p90", "p99"],
    );
    for (k, label) in [
        ("exec_true", "exec /bin/true"),
        ("veth_create", "veth create (peer in pod netns)"),
        ("veth_delete", "veth delete"),
    ] {
        let g = |f: &str| pick(&floors, &format!("/{k}/{f}"));
        ft.row(vec![
            label.into(),
            fmt(g("p50_ms"), 3),
            fmt(g("p90_ms"), 3),
            fmt(g("p99_ms"), 3),
        ]);
    }
    sec.tables.push(ft);
    let bridge = |f: &str| {
        pick(
            &ratios,
            &format!("/terway_vs_bridge+host-local/sequential/{f}"),
        )
    };
    sec.targets.push(Target::new(
        "CNI ADD p50, terway / bridge+host-local",
        bridge("add_p50_ms"),
        0.3,
        true,
        "x",
    ));
    sec.targets.push(Target::new(
        "CNI ADD p99, terway / bridge+host-local",
        bridge("add_p99_ms"),
        0.5,
        true,
        "x",
    ));
    sec.targets.push(Target::new(
        "CNI DEL p50, terway / bridge+host-local",
        bridge("del_p50_ms"),
        0.3,
        true,
        "x",
    ));
    sec.targets.push(Target::new(
        format!("terway ADD/s at {workers}-way concurrency"),
        pick(&results, "/terway/concurrent/add_per_s"),
        200.0,
        false,
        "/s",
    ));
    // Chart: p50/p99 ADD and DEL per plugin (sequential).
    let names = ["terway", refs[0], refs[1]];
    let groups = vec![
        "ADD p50".to_string(),
        "ADD p99".into(),
        "DEL p50".into(),
        "DEL p99".into(),
    ];
    let series = names
        .iter()
        .filter(|n| results.get(**n).is_some())
        .map(|n| {
            let g = |f: &str| pick(&results, &format!("/{n}/sequential{f}")).unwrap_or(0.0);
            (
                n.to_string(),
                vec![
                    g("/add/p50_ms"),
                    g("/add/p99_ms"),
                    g("/del/p50_ms"),
                    g("/del/p99_ms"),
                ],
            )
        })
        .collect();
    sec.charts.push(Chart::Bars {
        title: format!("CNI latency, sequential, {pods} pods"),
        y_label: "ms".into(),
        groups,
        series,
    });
    sec.json = json!({ "pods": pods, "concurrency": workers, "plugins": results, "ratios": ratios, "floors": floors, "errors": errors });
    sec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_terway_to_each_reference() {
        let run = |add: f64, del: f64, rate: f64| json!({ "add": {"p50_ms": add, "p90_ms": add, "p99_ms": add * 2.0}, "del": {"p50_ms": del, "p90_ms": del, "p99_ms": del}, "add_per_s": rate, "del_per_s": rate });
        let results = json!({
            "terway": { "sequential": run(5.0, 3.0, 200.0), "concurrent": run(10.0, 6.0, 250.0) },
            "bridge+host-local": { "sequential": run(20.0, 30.0, 50.0), "concurrent": run(40.0, 60.0, 50.0) },
            "ptp+host-local": { "sequential": run(10.0, 30.0, 100.0), "concurrent": run(20.0, 60.0, 100.0) },
        });
        let s = section(results, json!({}), vec![], 10, 8);
        assert_eq!(
            pick(
                &s.json,
                "/ratios/terway_vs_bridge+host-local/sequential/add_p50_ms"
            ),
            Some(0.25)
        );
        assert_eq!(
            pick(
                &s.json,
                "/ratios/terway_vs_ptp+host-local/sequential/add_p50_ms"
            ),
            Some(0.5)
        );
        assert_eq!(
            pick(
                &s.json,
                "/ratios/terway_vs_bridge+host-local/sequential/del_p50_ms"
            ),
            Some(0.1)
        );
        assert_eq!(
            pick(
                &s.json,
                "/ratios/terway_vs_bridge+host-local/concurrent/add_per_s"
            ),
            Some(5.0)
        );
        let verdicts: Vec<_> = s.targets.iter().map(|t| t.verdict).collect();
        use crate::bench::stats::Verdict::*;
        assert_eq!(verdicts, vec![Met, Met, Met, Met]);
    }

    /// The reference-plugin path end to end with a few pods (root; plugins from scripts/prereqs.sh).
    #[test]
    fn reference_plugins_and_floors_run() {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..6];
        for (kind, subnet) in [("bridge", "172.30.0.0/16"), ("ptp", "172.31.0.0/16")] {
            let s = reference(kind, id, subnet).unwrap();
            let r = run(&s, id, "t", 3, 2).unwrap();
            assert_eq!(r.failures, 0, "{kind}: {:?}", r.errors);
            assert_eq!((r.add.len(), r.del.len()), (3, 3));
            assert!(per_second(r.add.len(), r.add_wall).unwrap() > 0.0);
        }
        let f = floors::measure(3);
        assert!(pick(&f, "/veth_delete/p50_ms").is_some(), "{f}");
        assert!(pick(&f, "/exec_true/p50_ms").is_some(), "{f}");
        // Nothing of ours is left behind.
        let left: Vec<_> = std::fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("bn{id}"))
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
