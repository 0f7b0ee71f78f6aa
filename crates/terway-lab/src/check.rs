//! `terway-lab check`: the connectivity matrix over a lab's pods — pod↔pod on the same node, pod↔pod across
//! nodes, pod → own node, node → pod and pod → the VPC's outside host, each over TCP (echo) and ICMP, grouped
//! by the source node and its mode, with latency — plus the anti-spoofing check: a pod that forges another
//! pod's address gets nothing through, while its own address does.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::plan::LabPlan;
use crate::probe::{self, EchoServer, ProbeResult, UdpSink};
use crate::state::{self, LabState, PodRecord};
use crate::table::{self, Cell};

/// Arguments of `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Lab name (optional when exactly one lab exists).
    #[arg(long)]
    pub lab: Option<String>,
    /// At most this many source pods per node and category (0 = all).
    #[arg(long, default_value_t = 0)]
    pub sample: usize,
    /// Skip the anti-spoofing check.
    #[arg(long)]
    pub no_spoof: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The kinds of traffic the matrix covers.
pub const CATEGORIES: [&str; 5] = [
    "pod→pod same node",
    "pod→pod other node",
    "pod→own node",
    "node→pod",
    "pod→outside host",
];

/// One probe between two endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Category (one of [`CATEGORIES`]).
    pub category: &'static str,
    /// Source node name.
    pub node: String,
    /// Source description.
    pub from: String,
    /// Source netns.
    #[serde(skip)]
    pub from_netns: String,
    /// Destination description.
    pub to: String,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// TCP outcome.
    pub tcp: Option<ProbeResult>,
    /// ICMP outcome.
    pub icmp: Option<ProbeResult>,
}

/// One cell of the matrix: a category for one source node.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixCell {
    /// Category.
    pub category: &'static str,
    /// Source node.
    pub node: String,
    /// Its mode.
    pub mode: String,
    /// Probes run.
    pub probes: usize,
    /// TCP successes.
    pub tcp_ok: usize,
    /// ICMP successes.
    pub icmp_ok: usize,
    /// Median TCP round trip (µs).
    pub tcp_p50_us: Option<u64>,
    /// Median ICMP round trip (µs).
    pub icmp_p50_us: Option<u64>,
    /// A few failures, for the reader.
    pub failures: Vec<String>,
}

impl MatrixCell {
    /// Every probe succeeded on both protocols.
    pub fn ok(&self) -> bool {
        self.probes > 0 && self.tcp_ok == self.probes && self.icmp_ok == self.probes
    }
}

/// Outcome of the anti-spoofing check for one attacker pod.
#[derive(Debug, Clone, Serialize)]
pub struct SpoofResult {
    /// Attacker node.
    pub node: String,
    /// Its mode.
    pub mode: String,
    /// Attacker pod.
    pub pod: String,
    /// Its own address.
    pub own_ip: Ipv4Addr,
    /// The address it forged (another pod's).
    pub forged_ip: Ipv4Addr,
    /// Datagrams from its own address that reached the outside host (must be > 0).
    pub genuine_received: usize,
    /// Datagrams from the forged address that reached it (must be 0).
    pub forged_received: usize,
}

impl SpoofResult {
    /// Genuine traffic passes and forged traffic does not.
    pub fn ok(&self) -> bool {
        self.genuine_received > 0 && self.forged_received == 0
    }

    /// One word for the table.
    pub fn verdict(&self) -> &'static str {
        if self.forged_received > 0 {
            "LEAKED"
        } else if self.genuine_received == 0 {
            "NO PATH"
        } else {
            "blocked"
        }
    }
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Lab name.
    pub lab: String,
    /// Pods considered.
    pub pods: usize,
    /// Matrix cells.
    pub cells: Vec<MatrixCell>,
    /// Anti-spoofing results.
    pub spoof: Vec<SpoofResult>,
    /// Differences between the emulator's state, the fabric and the vpc router's routes (must be empty).
    pub fabric_audit: Vec<String>,
    /// Everything passed.
    pub ok: bool,
}

fn pick<T: Clone>(items: &[T], sample: usize) -> Vec<T> {
    if sample == 0 {
        items.to_vec()
    } else {
        items.iter().take(sample).cloned().collect()
    }
}

fn plan_probes(plan: &LabPlan, st: &LabState, pods: &[PodRecord], sample: usize) -> Vec<Probe> {
    let mut by_node: BTreeMap<&str, Vec<&PodRecord>> = BTreeMap::new();
    for p in pods.iter().filter(|p| p.ip.is_some()) {
        by_node.entry(p.node.as_str()).or_default().push(p);
    }
    let mut probes = Vec::new();
    let mk = |category, node: &str, from: String, from_netns: &str, to: String, dst| Probe {
        category,
        node: node.to_string(),
        from,
        from_netns: from_netns.to_string(),
        to,
        dst,
        tcp: None,
        icmp: None,
    };
    let nodes: Vec<&str> = by_node.keys().copied().collect();
    for (ni, node) in nodes.iter().enumerate() {
        let Some(node_plan) = plan.node(node) else {
            continue;
        };
        let Some(node_ip) = st.nodes.get(*node).map(|n| n.primary_ip) else {
            continue;
        };
        let local = &by_node[node];
        let srcs = pick(local, sample);
        for (i, p) in srcs.iter().enumerate() {
            let ip = p.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let label = format!("{}/{}", p.node, p.pod);
            if local.len() > 1 {
                let q = local[(i + 1) % local.len()];
                probes.push(mk(
                    CATEGORIES[0],
                    node,
                    label.clone(),
                    &p.netns,
                    format!("{}/{}", q.node, q.pod),
                    q.ip.unwrap_or(ip),
                ));
            }
            if nodes.len() > 1 {
                let other = nodes[(ni + 1 + i % (nodes.len() - 1)) % nodes.len()];
                let remote = &by_node[other];
                let q = remote[i % remote.len()];
                probes.push(mk(
                    CATEGORIES[1],
                    node,
                    label.clone(),
                    &p.netns,
                    format!("{}/{}", q.node, q.pod),
                    q.ip.unwrap_or(ip),
                ));
            }
            probes.push(mk(
                CATEGORIES[2],
                node,
                label.clone(),
                &p.netns,
                format!("{node} ({node_ip})"),
                node_ip,
            ));
            probes.push(mk(
                CATEGORIES[3],
                node,
                node.to_string(),
                &node_plan.netns,
                label.clone(),
                ip,
            ));
            probes.push(mk(
                CATEGORIES[4],
                node,
                label,
                &p.netns,
                format!("outside {}", plan.outside.addr),
                plan.outside.addr,
            ));
        }
    }
    probes
}

fn run_probes(probes: &mut [Probe], port: u16) {
    let timeout = Duration::from_secs(2);
    // A handful of probes at a time: enough to hide ping's process start, few enough for 2 cores.
    for chunk in probes.chunks_mut(8) {
        std::thread::scope(|s| {
            for p in chunk.iter_mut() {
                s.spawn(move || {
                    p.tcp = Some(probe::tcp_probe(&p.from_netns, p.dst, port, timeout));
                    p.icmp = Some(probe::icmp_probe(&p.from_netns, p.dst, timeout));
                });
            }
        });
    }
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

fn cells(plan: &LabPlan, probes: &[Probe]) -> Vec<MatrixCell> {
    let mut out = Vec::new();
    for node in &plan.nodes {
        for cat in CATEGORIES {
            let ps: Vec<&Probe> = probes
                .iter()
                .filter(|p| p.node == node.name && p.category == cat)
                .collect();
            if ps.is_empty() {
                continue;
            }
            let ok = |r: &Option<ProbeResult>| r.as_ref().is_some_and(|r| r.ok);
            let rtts = |f: fn(&Probe) -> &Option<ProbeResult>| -> Vec<u64> {
                ps.iter()
                    .filter_map(|p| f(p).as_ref().and_then(|r| r.rtt_us))
                    .collect()
            };
            let failures = ps
                .iter()
                .filter(|p| !ok(&p.tcp) || !ok(&p.icmp))
                .take(3)
                .map(|p| {
                    let err = [&p.tcp, &p.icmp]
                        .iter()
                        .filter_map(|r| r.as_ref().and_then(|r| r.error.clone()))
                        .collect::<Vec<_>>()
                        .join("; ");
                    format!("{} → {} ({}): {err}", p.from, p.to, p.dst)
                })
                .collect();
            out.push(MatrixCell {
                category: cat,
                node: node.name.clone(),
                mode: node.mode.as_str().to_string(),
                probes: ps.len(),
                tcp_ok: ps.iter().filter(|p| ok(&p.tcp)).count(),
                icmp_ok: ps.iter().filter(|p| ok(&p.icmp)).count(),
                tcp_p50_us: median(rtts(|p| &p.tcp)),
                icmp_p50_us: median(rtts(|p| &p.icmp)),
                failures,
            });
        }
    }
    out
}

fn ip_cmd(netns: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = probe::command_in(netns, "ip").args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn spoof_checks(plan: &LabPlan, pods: &[PodRecord], port: u16) -> anyhow::Result<Vec<SpoofResult>> {
    let live: Vec<&PodRecord> = pods.iter().filter(|p| p.ip.is_some()).collect();
    let mut results = Vec::new();
    for node in &plan.nodes {
        let Some(attacker) = live.iter().find(|p| p.node == node.name) else {
            continue;
        };
        // Forge the address of a pod on another node if there is one (IP theft), else of a local one.
        let Some(victim) = live.iter().find(|p| p.node != node.name).or_else(|| {
            live.iter()
                .find(|p| p.pod != attacker.pod || p.node != attacker.node)
        }) else {
            continue;
        };
        let (own, forged) = match (attacker.ip, victim.ip) {
            (Some(a), Some(v)) => (a, v),
            _ => continue,
        };
        let sink = UdpSink::start(&plan.outside.netns, port)?;
        probe::udp_send(&attacker.netns, own, plan.outside.addr, port, 3)?;
        let forged_cidr = format!("{forged}/32");
        ip_cmd(
            &attacker.netns,
            &["addr", "add", &forged_cidr, "dev", "eth0"],
        )?;
        let sent = probe::udp_send(&attacker.netns, forged, plan.outside.addr, port, 3);
        let removed = ip_cmd(
            &attacker.netns,
            &["addr", "del", &forged_cidr, "dev", "eth0"],
        );
        std::thread::sleep(Duration::from_millis(200));
        let seen = sink.seen();
        drop(sink);
        sent?;
        removed?;
        results.push(SpoofResult {
            node: node.name.clone(),
            mode: node.mode.as_str().to_string(),
            pod: attacker.pod.clone(),
            own_ip: own,
            forged_ip: forged,
            genuine_received: seen.iter().filter(|ip| **ip == own).count(),
            forged_received: seen.iter().filter(|ip| **ip == forged).count(),
        });
    }
    Ok(results)
}

/// An echo server in every addressed pod, every node and the outside host, on one port. The port is
/// below the kernel's ephemeral range (32768–60999), so no client socket of an earlier check (in
/// TIME_WAIT) can hold it; another check running at the same moment can, so a taken port is retried.
fn start_servers(
    plan: &crate::plan::LabPlan,
    pods: &[state::PodRecord],
) -> anyhow::Result<(u16, Vec<EchoServer>)> {
    let mut attempt = 0;
    loop {
        let port = 20000 + (uuid::Uuid::new_v4().as_u128() % 12000) as u16;
        let netns = pods
            .iter()
            .filter(|p| p.ip.is_some())
            .map(|p| (p.netns.as_str(), format!("pod {}", p.pod)))
            .chain(
                plan.nodes
                    .iter()
                    .map(|n| (n.netns.as_str(), n.name.clone())),
            )
            .chain(std::iter::once((
                plan.outside.netns.as_str(),
                "the outside host".to_string(),
            )));
        let mut servers = Vec::new();
        let mut taken = None;
        for (ns, what) in netns {
            match EchoServer::start(ns, port) {
                Ok(s) => servers.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 4 => {
                    taken = Some(what);
                    break;
                }
                Err(e) => anyhow::bail!("echo server in {what} on port {port}: {e}"),
            }
        }
        match taken {
            None => return Ok((port, servers)),
            Some(what) => {
                tracing::debug!(port, %what, "probe port taken; trying another");
                attempt += 1;
            }
        }
    }
}

/// Run the check against a lab.
pub fn check(lab: &str, sample: usize, spoof: bool) -> anyhow::Result<CheckReport> {
    let st = state::load(lab)?;
    let plan = st.plan.clone();
    let mut pods = state::list_pods(&plan.dir);
    if plan.kubernetes.is_some() {
        pods.extend(crate::k8s::pods::records(&st)?);
    }
    let (port, servers) = start_servers(&plan, &pods)?;
    let mut probes = plan_probes(&plan, &st, &pods, sample);
    run_probes(&mut probes, port);
    drop(servers);
    let cells = cells(&plan, &probes);
    let spoof = if spoof {
        spoof_checks(&plan, &pods, port.wrapping_add(1))?
    } else {
        Vec::new()
    };
    let audit = crate::control::call(
        &plan.dir,
        &crate::control::Request::Audit,
        Duration::from_secs(30),
    )?;
    let fabric_audit: Vec<String> = serde_json::from_value(audit)?;
    let ok = !cells.is_empty()
        && cells.iter().all(MatrixCell::ok)
        && spoof.iter().all(SpoofResult::ok)
        && fabric_audit.is_empty();
    Ok(CheckReport {
        lab: plan.name.clone(),
        pods: pods.len(),
        cells,
        spoof,
        fabric_audit,
        ok,
    })
}

fn us(v: Option<u64>) -> String {
    match v {
        Some(us) if us >= 1000 => format!("{:.1} ms", us as f64 / 1000.0),
        Some(us) => format!("{us} µs"),
        None => "-".into(),
    }
}

/// Human-readable rendering of a report.
pub fn render(report: &CheckReport) -> String {
    let rows: Vec<Vec<Cell>> = report
        .cells
        .iter()
        .map(|c| {
            vec![
                Cell::plain(c.category),
                Cell::plain(format!("{} ({})", c.node, c.mode)),
                Cell::status(format!("{}/{}", c.tcp_ok, c.probes), c.tcp_ok == c.probes),
                Cell::status(format!("{}/{}", c.icmp_ok, c.probes), c.icmp_ok == c.probes),
                Cell::plain(us(c.tcp_p50_us)),
                Cell::plain(us(c.icmp_p50_us)),
            ]
        })
        .collect();
    let mut out = table::render(
        &[
            "traffic",
            "source node",
            "TCP",
            "ICMP",
            "TCP p50",
            "ICMP p50",
        ],
        &rows,
    );
    for c in report.cells.iter().filter(|c| !c.ok()) {
        for f in &c.failures {
            out.push_str(&format!("  FAIL {f}\n"));
        }
    }
    if report.fabric_audit.is_empty() {
        out.push_str("fabric audit: the vpc router's links and routes match the emulator's ENIs and addresses\n");
    } else {
        for d in &report.fabric_audit {
            out.push_str(&format!("  FABRIC DRIFT {d}\n"));
        }
    }
    if !report.spoof.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<Cell>> = report
            .spoof
            .iter()
            .map(|s| {
                vec![
                    Cell::plain(format!("{} ({})", s.node, s.mode)),
                    Cell::plain(format!("{} as {}", s.own_ip, s.forged_ip)),
                    Cell::status(format!("{}/3", s.genuine_received), s.genuine_received > 0),
                    Cell::status(format!("{}/3", s.forged_received), s.forged_received == 0),
                    Cell::status(s.verdict(), s.ok()),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &[
                "anti-spoofing",
                "pod forging",
                "genuine in",
                "forged in",
                "verdict",
            ],
            &rows,
        ));
    }
    out
}

/// `terway-lab check`.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let lab = state::resolve_lab(args.lab.as_deref())?;
    let report = check(&lab, args.sample, !args.no_spoof)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
        println!(
            "{}",
            if report.ok {
                "all checks passed"
            } else {
                "SOME CHECKS FAILED"
            }
        );
    }
    if report.ok {
        Ok(())
    } else if report.cells.is_empty() {
        anyhow::bail!("no pods with an address in lab {lab}: add some with `terway-lab pod add`")
    } else {
        anyhow::bail!("connectivity check failed")
    }
}
