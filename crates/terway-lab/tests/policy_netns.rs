//! NetworkPolicy as the node enforces it, probed through the kernel: the cyclonus model (namespaces x, y, z
//! × pods a, b, c, and an address outside the cluster), each pod a real network namespace behind a host
//! veth of one node namespace, the node's `terway_policy` table rendered from the compiled policy and moved
//! from case to case by the incremental scripts alone. Every pod-to-pod (and pod-to-outside) probe on ports
//! 80 and 81 over TCP and UDP must get the answer the oracle gives, for 200 generated cases.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use terway_datapath::conntrack;
use terway_datapath::netns::Netns;
use terway_datapath::nft as nft_cmd;
use terway_policy::gen::{self, NAMESPACES, OUTSIDE, PODS};
use terway_policy::nft::{self, LocalPod, NodeRuleset};
use terway_policy::oracle::{self, endpoint};
use terway_policy::{compile, Proto, World};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

/// How long a probe waits before it counts as blocked. Drops are silent, so every blocked probe costs this;
/// a probe the oracle allows but that timed out is retried with [`RETRY`] before it counts as a mismatch.
const PROBE: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_secs(2);
const CASES: u64 = 200;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl_in(ns: &str, key: &str, value: &str) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .output()
        .expect("run sysctl");
    assert!(
        out.status.success(),
        "sysctl {key} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An endpoint of the model: its namespace, its address, the node-side veth.
struct Member {
    ns: String,
    ip: IpAddr,
    host_if: String,
    key: Option<String>,
}

/// The node namespace and every member's namespace, deleted by name on drop (also when the test fails).
struct Topology {
    node: String,
    members: Vec<Member>,
}

impl Topology {
    fn build() -> Topology {
        let tag = format!("{:05}", std::process::id() % 100_000);
        let node = format!("tpn{tag}");
        let mut t = Topology {
            node: node.clone(),
            members: Vec::new(),
        };
        Netns::create_named(&node).expect("create the node namespace");
        ip(&["-n", &node, "link", "set", "lo", "up"]);
        sysctl_in(&node, "net.ipv4.ip_forward", "1");
        let mut want: Vec<(String, IpAddr, Option<String>)> = Vec::new();
        for (ni, ns) in NAMESPACES.iter().enumerate() {
            for (pi, pod) in PODS.iter().enumerate() {
                want.push((
                    format!("{ni}{pi}"),
                    gen::pod_ip(ni, pi),
                    Some(format!("{ns}/{pod}")),
                ));
            }
        }
        want.push(("oo".into(), OUTSIDE, None));
        for (suffix, addr, key) in want {
            let ns = format!("tp{tag}{suffix}");
            Netns::create_named(&ns).expect("create a member namespace");
            let host_if = format!("tv{tag}{suffix}");
            t.members.push(Member {
                ns: ns.clone(),
                ip: addr,
                host_if: host_if.clone(),
                key,
            });
            ip(&[
                "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            // No gateway: the member asks for every address on its link and the node answers by proxy ARP.
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"]);
            ip(&["-n", &node, "link", "set", &host_if, "up"]);
            ip(&[
                "-n",
                &node,
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                &host_if,
            ]);
            sysctl_in(&node, &format!("net.ipv4.conf.{host_if}.proxy_arp"), "1");
        }
        t
    }

    fn local_pods(&self) -> Vec<LocalPod> {
        self.members
            .iter()
            .filter_map(|m| {
                m.key.as_ref().map(|k| LocalPod {
                    key: k.clone(),
                    host_if: m.host_if.clone(),
                    ips: vec![m.ip],
                })
            })
            .collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for m in &self.members {
            let _ = Netns::delete_named(&m.ns);
        }
        let _ = Netns::delete_named(&self.node);
    }
}

/// Listeners on 80 and 81, TCP and UDP, in every member: TCP accepts and closes, UDP echoes.
async fn serve(t: &Topology) {
    for m in &t.members {
        let ns = Netns::open_named(&m.ns).expect("open member namespace");
        for port in gen::PORTS {
            let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let (tcp, udp) = ns
                .run(|| {
                    let tcp = std::net::TcpListener::bind(any)?;
                    let udp = std::net::UdpSocket::bind(any)?;
                    tcp.set_nonblocking(true)?;
                    udp.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>((tcp, udp))
                })
                .expect("enter member namespace")
                .expect("bind the probe servers");
            let tcp = TcpListener::from_std(tcp).expect("tokio listener");
            let udp = UdpSocket::from_std(udp).expect("tokio udp socket");
            tokio::spawn(async move {
                while let Ok((s, _)) = tcp.accept().await {
                    drop(s);
                }
            });
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                    let _ = udp.send_to(&buf[..n], from).await;
                }
            });
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Probe {
    src: usize,
    dst: usize,
    port: u16,
    udp: bool,
}

/// Sockets for `probes` from member `src`, made inside its namespace.
enum Client {
    Tcp(TcpSocket),
    Udp(std::net::UdpSocket),
}

fn clients(ns: &Netns, n_tcp: usize, n_udp: usize) -> (Vec<TcpSocket>, Vec<std::net::UdpSocket>) {
    ns.run(|| {
        let tcp = (0..n_tcp)
            .map(|_| TcpSocket::new_v4())
            .collect::<Result<Vec<_>, _>>()?;
        let udp = (0..n_udp)
            .map(|_| {
                let s = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<Result<Vec<_>, std::io::Error>>()?;
        Ok::<_, std::io::Error>((tcp, udp))
    })
    .expect("enter member namespace")
    .expect("make probe sockets")
}

async fn probe_one(client: Client, dst: SocketAddr, wait: Duration) -> bool {
    match client {
        Client::Tcp(s) => matches!(tokio::time::timeout(wait, s.connect(dst)).await, Ok(Ok(_))),
        Client::Udp(s) => {
            let Ok(s) = UdpSocket::from_std(s) else {
                return false;
            };
            if s.send_to(b"probe", dst).await.is_err() {
                return false;
            }
            let mut buf = [0u8; 16];
            matches!(
                tokio::time::timeout(wait, s.recv_from(&mut buf)).await,
                Ok(Ok(_))
            )
        }
    }
}

/// Run `probes` at once, each waiting up to `wait`; whether each got through.
async fn run_probes(t: &Topology, probes: &[Probe], wait: Duration) -> BTreeMap<Probe, bool> {
    let mut set = tokio::task::JoinSet::new();
    for (src, m) in t.members.iter().enumerate() {
        let mine: Vec<Probe> = probes.iter().copied().filter(|p| p.src == src).collect();
        if mine.is_empty() {
            continue;
        }
        let ns = Netns::open_named(&m.ns).expect("open member namespace");
        let n_udp = mine.iter().filter(|p| p.udp).count();
        let (mut tcp, mut udp) = clients(&ns, mine.len() - n_udp, n_udp);
        for p in mine {
            let client = if p.udp {
                Client::Udp(udp.pop().expect("one socket per probe"))
            } else {
                Client::Tcp(tcp.pop().expect("one socket per probe"))
            };
            let dst = SocketAddr::new(t.members[p.dst].ip, p.port);
            set.spawn(async move { (p, probe_one(client, dst, wait).await) });
        }
    }
    let mut out = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let (p, ok) = r.expect("probe task");
        out.insert(p, ok);
    }
    out
}

fn expected(w: &World, t: &Topology, p: Probe) -> bool {
    let proto = if p.udp { Proto::Udp } else { Proto::Tcp };
    oracle::allowed(
        w,
        endpoint(w, t.members[p.src].ip),
        endpoint(w, t.members[p.dst].ip),
        p.port,
        proto,
    )
}

#[tokio::test(flavor = "current_thread")]
async fn the_kernel_enforces_what_the_oracle_says_on_200_generated_cases() {
    let t = Topology::build();
    serve(&t).await;
    let node = Netns::open_named(&t.node).expect("open the node namespace");
    let all_ips: Vec<IpAddr> = t.members.iter().map(|m| m.ip).collect();
    let mut probes = Vec::new();
    for src in 0..t.members.len() {
        for dst in 0..t.members.len() {
            // A pod's traffic to itself never leaves it; the outside address is not probed against itself.
            if src != dst {
                for port in gen::PORTS {
                    for udp in [false, true] {
                        probes.push(Probe {
                            src,
                            dst,
                            port,
                            udp,
                        });
                    }
                }
            }
        }
    }

    // Without a policy everything gets through: the topology itself works.
    let open = run_probes(&t, &probes, RETRY).await;
    let blocked: Vec<&Probe> = open
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(p, _)| p)
        .collect();
    assert!(
        blocked.is_empty(),
        "with no table, these probes failed: {blocked:?}"
    );

    let local = t.local_pods();
    let mut applied: Option<NodeRuleset> = None;
    let (mut isolated_cases, mut denied_probes) = (0, 0);
    for seed in 0..CASES {
        let w = gen::case(seed);
        let compiled = compile(&w).unwrap_or_else(|e| panic!("case {seed}: {e}"));
        let next = nft::ruleset(&compiled, &w, &local);
        let script = match &applied {
            None => Some(nft::full_script(&next)),
            Some(prev) => nft::update_script(prev, &next),
        };
        if let Some(s) = script {
            nft_cmd::apply(&node, &s, "policy case")
                .unwrap_or_else(|e| panic!("case {seed}: {e}\nscript:\n{s}"));
        }
        applied = Some(next);
        // Entries of the previous case's flows would admit this case's probes as established ones.
        conntrack::flush_addresses(&node, &all_ips).expect("flush the node's conntrack entries");

        let got = run_probes(&t, &probes, PROBE).await;
        let retry: Vec<Probe> = got
            .iter()
            .filter(|(p, ok)| !**ok && expected(&w, &t, **p))
            .map(|(p, _)| *p)
            .collect();
        let again = run_probes(&t, &retry, RETRY).await;
        for (p, ok) in &got {
            let ok = again.get(p).copied().unwrap_or(*ok);
            let want = expected(&w, &t, *p);
            if ok != want {
                let listing =
                    nft_cmd::query(&node, &["list", "table", "inet", nft::TABLE], "listing")
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                panic!(
                    "case {seed}: {} -> {}:{} {}: the oracle says {}, the kernel {}\npolicies: {:#?}\ntable:\n{listing}",
                    t.members[p.src].ip,
                    t.members[p.dst].ip,
                    p.port,
                    if p.udp { "udp" } else { "tcp" },
                    if want { "allowed" } else { "denied" },
                    if ok { "delivered it" } else { "dropped it" },
                    w.policies
                );
            }
            if !want {
                denied_probes += 1;
            }
        }
        if !compiled
            .pods
            .values()
            .all(|r| r.ingress.policies().is_empty() && r.egress.policies().is_empty())
        {
            isolated_cases += 1;
        }
    }
    // The cases must exercise the table, not only the empty one.
    assert!(
        isolated_cases > CASES as usize / 2,
        "only {isolated_cases} cases isolated a pod"
    );
    assert!(
        denied_probes > 1000,
        "only {denied_probes} probes were denied across the cases"
    );

    nft_cmd::apply(&node, &nft::teardown_script(), "teardown").expect("remove the table");
    assert!(
        nft_cmd::query(&node, &["list", "table", "inet", nft::TABLE], "listing")
            .unwrap()
            .is_none()
    );
}
