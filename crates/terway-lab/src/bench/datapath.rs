//! `bench datapath`: TCP throughput (iperf3) and request/response latency (a built-in 1-byte TCP
//! ping-pong) between two pods on one node, two pods on different nodes, and — the reference — the two
//! nodes themselves over the same emulated VPC fabric. Ratios pod/node.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use terway_datapath::Netns;

use super::cni::{call, terway, PodSet};
use super::exec::in_netns;
use super::lab::{Lab, LabSpec};
use super::report::{fmt, fmt_ratio, Chart, Section, Table, Target};
use super::stats::{ratio, Summary};
use super::{CommonOpts, DatapathOpts};

const PING_PORT: u16 = 47_001;
const IPERF_PORT: u16 = 47_002;

/// An endpoint: a namespace and the address it is reached at.
#[derive(Debug, Clone)]
struct End {
    netns: String,
    addr: Ipv4Addr,
}

/// iperf3 from `client` to `server`; returns bits/s received.
fn iperf(client: &End, server: &End, seconds: u64) -> anyhow::Result<f64> {
    let server_ns = Netns::open_named(&server.netns)?;
    let client_ns = Netns::open_named(&client.netns)?;
    let mut srv = Command::new("iperf3");
    srv.args([
        "-s",
        "-1",
        "-B",
        &server.addr.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    let _fd = in_netns(&mut srv, &server_ns)?;
    let mut child = srv
        .spawn()
        .map_err(|e| anyhow::anyhow!("iperf3 not runnable (install package iperf3): {e}"))?;
    // Give the server a moment to listen; the client retries the connect for up to 2 s.
    let deadline = Instant::now() + Duration::from_secs(3);
    let result = loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut cli = Command::new("iperf3");
        cli.args([
            "-c",
            &server.addr.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ]);
        let _cfd = in_netns(&mut cli, &client_ns)?;
        let out = cli.output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v
            .pointer("/end/sum_received/bits_per_second")
            .and_then(Value::as_f64)
        {
            break Ok(bps);
        }
        if Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "iperf3 {} -> {}: {}",
                client.netns,
                server.addr,
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no result")
            ));
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// `n` 1-byte round trips from `client` to a ping-pong server in `server`; per-trip latencies.
fn ping_pong(client: &End, server: &End, n: usize) -> anyhow::Result<Vec<Duration>> {
    let server_ns = Netns::open_named(&server.netns)?;
    let client_ns = Netns::open_named(&client.netns)?;
    let addr = SocketAddr::from((server.addr, PING_PORT));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let srv = std::thread::spawn(move || {
        server_ns.run(move || -> std::io::Result<()> {
            let l = TcpListener::bind(addr);
            let _ = ready_tx.send(l.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            // Accept with a deadline: a client that cannot reach us must not leave this thread behind.
            let l = l?;
            l.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => return Err(e),
                }
            };
            s.set_nonblocking(false)?;
            s.set_nodelay(true)?;
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).is_ok() {
                s.write_all(&b)?;
            }
            Ok(())
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow::anyhow!("ping-pong server did not start"))?
        .map_err(|e| anyhow::anyhow!("ping-pong server bind {addr}: {e}"))?;
    let samples = client_ns.run(move || -> std::io::Result<Vec<Duration>> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [7u8; 1];
        // Warm-up: ARP/neighbour entries and slow start out of the measurement.
        for _ in 0..50 {
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            out.push(t.elapsed());
        }
        Ok(out)
    });
    let _ = srv.join();
    Ok(samples??)
}

/// `bench datapath`.
pub fn bench(opts: &CommonOpts, o: &DatapathOpts) -> anyhow::Result<Section> {
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let lab = match &opts.lab {
        Some(n) => Lab::existing(n)?,
        None => Lab::up(&LabSpec {
            modes: vec!["shared", "shared"],
            min_pool: 2,
            max_pool: 5,
            attach_delay_ms: "200-600".into(),
        })?,
    };
    let shared: Vec<_> = lab.nodes.iter().filter(|n| n.mode == "shared").collect();
    if shared.len() < 2 {
        anyhow::bail!(
            "lab {} needs two shared nodes for the datapath benchmark",
            lab.name
        );
    }
    let (n0, n1) = (shared[0].clone(), shared[1].clone());
    let s0 = terway(&lab, &n0.name)?;
    let s1 = terway(&lab, &n1.name)?;
    let set0 = PodSet::create(run_id, "dpa", 2)?;
    let set1 = PodSet::create(run_id, "dpb", 1)?;
    let add = |s: &super::cni::Subject, p: &super::cni::Pod| -> anyhow::Result<End> {
        let (_, out) = call(s, "ADD", p).map_err(|e| anyhow::anyhow!(e))?;
        let v: Value = serde_json::from_slice(&out)?;
        let addr = crate::pod::result_ipv4(&v)
            .ok_or_else(|| anyhow::anyhow!("no IPv4 in the CNI result of {}", p.name))?;
        Ok(End {
            netns: p.netns.clone(),
            addr,
        })
    };
    let outcome = (|| -> anyhow::Result<Value> {
        let a = add(&s0, &set0.pods[0])?;
        let b = add(&s0, &set0.pods[1])?;
        let c = add(&s1, &set1.pods[0])?;
        let node_ip = |n: &str| -> anyhow::Result<Ipv4Addr> { node_primary_ip(&lab, n) };
        let na = End {
            netns: n0.netns.clone(),
            addr: node_ip(&n0.name)?,
        };
        let nb = End {
            netns: n1.netns.clone(),
            addr: node_ip(&n1.name)?,
        };
        let mut res = serde_json::Map::new();
        for (label, from, to) in [
            ("node_to_node", &na, &nb),
            ("pod_to_pod_same_node", &a, &b),
            ("pod_to_pod_cross_node", &a, &c),
        ] {
            if !opts.json {
                eprintln!("bench datapath: {label} ({} -> {})…", from.addr, to.addr);
            }
            let bps = iperf(from, to, o.seconds);
            let rtt = ping_pong(from, to, o.round_trips);
            res.insert(
                label.into(),
                json!({
                    "from": from.addr, "to": to.addr,
                    "throughput_bits_per_s": bps.as_ref().ok(),
                    "throughput_error": bps.as_ref().err().map(|e| format!("{e:#}")),
                    "rtt": rtt.as_ref().ok().and_then(|v| Summary::of(v)),
                    "rtt_error": rtt.as_ref().err().map(|e| format!("{e:#}")),
                }),
            );
        }
        Ok(Value::Object(res))
    })();
    for (s, set) in [(&s0, &set0), (&s1, &set1)] {
        for p in &set.pods {
            let _ = call(s, "DEL", p);
        }
    }
    drop((set0, set1));
    Ok(section(outcome?, o))
}

/// The node's primary IP as the lab reports it.
fn node_primary_ip(lab: &Lab, node: &str) -> anyhow::Result<Ipv4Addr> {
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.nodes
                .iter()
                .find(|n| n.name == node)
                .map(|n| n.netns.clone())
                .unwrap_or_default(),
            "-4",
            "-j",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    v.pointer("/0/addr_info/0/local")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("node {node} has no IPv4 address on eth0"))
}

fn section(res: Value, o: &DatapathOpts) -> Section {
    let mut s = Section::new("datapath");
    let g = |p: &str| res.pointer(p).and_then(Value::as_f64);
    let gbps = |k: &str| g(&format!("/{k}/throughput_bits_per_s")).map(|b| b / 1e9);
    let mut t = Table::new(
        format!(
            "Datapath: iperf3 TCP {} s, ping-pong {} round trips (RTT ms)",
            o.seconds, o.round_trips
        ),
        &[
            "path",
            "Gbit/s",
            "ratio",
            "RTT p50",
            "p99",
            "ratio p50",
            "ratio p99",
        ],
    );
    let mut ratios = serde_json::Map::new();
    for k in [
        "node_to_node",
        "pod_to_pod_same_node",
        "pod_to_pod_cross_node",
    ] {
        let tr = ratio(gbps(k), gbps("node_to_node"));
        let r50 = ratio(
            g(&format!("/{k}/rtt/p50_ms")),
            g("/node_to_node/rtt/p50_ms"),
        );
        let r99 = ratio(
            g(&format!("/{k}/rtt/p99_ms")),
            g("/node_to_node/rtt/p99_ms"),
        );
        t.row(vec![
            k.replace('_', " "),
            fmt(gbps(k), 2),
            fmt_ratio(tr),
            fmt(g(&format!("/{k}/rtt/p50_ms")), 3),
            fmt(g(&format!("/{k}/rtt/p99_ms")), 3),
            fmt_ratio(r50),
            fmt_ratio(r99),
        ]);
        ratios.insert(
            k.into(),
            json!({ "throughput": tr, "rtt_p50": r50, "rtt_p99": r99 }),
        );
    }
    s.tables.push(t);
    for k in ["pod_to_pod_same_node", "pod_to_pod_cross_node"] {
        let r = &ratios[k];
        s.targets.push(Target::new(
            format!("{} throughput / node↔node", k.replace('_', " ")),
            r["throughput"].as_f64(),
            0.95,
            false,
            "x",
        ));
        s.targets.push(Target::new(
            format!("{} RTT p50 / node↔node", k.replace('_', " ")),
            r["rtt_p50"].as_f64(),
            1.1,
            true,
            "x",
        ));
    }
    let names = [
        "node_to_node",
        "pod_to_pod_same_node",
        "pod_to_pod_cross_node",
    ];
    s.charts.push(Chart::Bars {
        title: "Datapath throughput (iperf3)".into(),
        y_label: "Gbit/s".into(),
        groups: vec!["throughput".into()],
        series: names
            .iter()
            .map(|k| (k.replace('_', " "), vec![gbps(k).unwrap_or(0.0)]))
            .collect(),
    });
    let errors: Vec<String> = [
        "node_to_node",
        "pod_to_pod_same_node",
        "pod_to_pod_cross_node",
    ]
    .iter()
    .flat_map(|k| {
        ["throughput_error", "rtt_error"].map(|e| {
            res.pointer(&format!("/{k}/{e}"))
                .and_then(Value::as_str)
                .map(|m| format!("{k}: {m}"))
        })
    })
    .flatten()
    .collect();
    s.json = json!({ "errors": errors, "paths": res, "ratios_vs_node_to_node": ratios, "iperf_seconds": o.seconds, "round_trips": o.round_trips });
    s
}
