//! Connectivity probes from inside network namespaces, for NetworkPolicy truth tables: listeners on ports
//! 80 and 81 over TCP and UDP in every endpoint, and many probes at once, each from a socket made in its
//! source's namespace (which is what a process of that pod would use).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use terway_datapath::netns::Netns;
use terway_policy::oracle::{self, endpoint};
use terway_policy::{Proto, World};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

/// The ports every endpoint serves.
pub const PORTS: [u16; 2] = [80, 81];

/// An endpoint: its network namespace (a path) and address.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// What to call it in messages (`x/a`).
    pub name: String,
    /// Its network namespace.
    pub netns: std::path::PathBuf,
    /// Its address.
    pub ip: IpAddr,
}

/// One probe: from endpoint `src` to endpoint `dst` (indices) on `port`, over UDP or TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Probe {
    /// Source index.
    pub src: usize,
    /// Destination index.
    pub dst: usize,
    /// Port.
    pub port: u16,
    /// UDP (else TCP).
    pub udp: bool,
}

impl Probe {
    /// Its protocol.
    pub fn proto(&self) -> Proto {
        if self.udp {
            Proto::Udp
        } else {
            Proto::Tcp
        }
    }

    /// What the oracle says of it in `w`.
    pub fn expected(&self, w: &World, eps: &[Endpoint]) -> bool {
        oracle::allowed(
            w,
            endpoint(w, eps[self.src].ip),
            endpoint(w, eps[self.dst].ip),
            self.port,
            self.proto(),
        )
    }

    /// `x/a -> y/b 80/TCP`.
    pub fn describe(&self, eps: &[Endpoint]) -> String {
        format!(
            "{} ({}) -> {} ({}) {}/{}",
            eps[self.src].name,
            eps[self.src].ip,
            eps[self.dst].name,
            eps[self.dst].ip,
            self.port,
            self.proto()
        )
    }
}

/// Every probe between two different endpoints (a pod's traffic to itself never leaves it).
pub fn all_probes(n: usize) -> Vec<Probe> {
    let mut v = Vec::new();
    for src in 0..n {
        for dst in (0..n).filter(|d| *d != src) {
            for port in PORTS {
                for udp in [false, true] {
                    v.push(Probe {
                        src,
                        dst,
                        port,
                        udp,
                    });
                }
            }
        }
    }
    v
}

/// Listeners on [`PORTS`], TCP and UDP, in every endpoint: TCP accepts and closes, UDP echoes. They live
/// as long as the runtime.
pub async fn serve(eps: &[Endpoint]) {
    for e in eps {
        let ns = Netns::open(&e.netns).expect("open the endpoint's namespace");
        for port in PORTS {
            let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let (tcp, udp) = ns
                .run(|| {
                    let tcp = std::net::TcpListener::bind(any)?;
                    let udp = std::net::UdpSocket::bind(any)?;
                    tcp.set_nonblocking(true)?;
                    udp.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>((tcp, udp))
                })
                .expect("enter the endpoint's namespace")
                .unwrap_or_else(|err| panic!("bind the probe servers in {}: {err}", e.name));
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

enum Client {
    Tcp(TcpSocket),
    Udp(std::net::UdpSocket),
}

type Sockets = (Vec<TcpSocket>, Vec<std::net::UdpSocket>);

fn clients(ns: &Netns, n_tcp: usize, n_udp: usize) -> Sockets {
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
    .expect("enter the endpoint's namespace")
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

/// Run `probes` at once, each waiting up to `wait` (drops are silent, so a blocked probe costs that);
/// whether each got through.
pub async fn run(eps: &[Endpoint], probes: &[Probe], wait: Duration) -> BTreeMap<Probe, bool> {
    let mut set = tokio::task::JoinSet::new();
    for (src, e) in eps.iter().enumerate() {
        let mine: Vec<Probe> = probes.iter().copied().filter(|p| p.src == src).collect();
        if mine.is_empty() {
            continue;
        }
        let ns = Netns::open(&e.netns).expect("open the endpoint's namespace");
        let n_udp = mine.iter().filter(|p| p.udp).count();
        let (mut tcp, mut udp) = clients(&ns, mine.len() - n_udp, n_udp);
        for p in mine {
            let client = if p.udp {
                Client::Udp(udp.pop().expect("one socket per probe"))
            } else {
                Client::Tcp(tcp.pop().expect("one socket per probe"))
            };
            let dst = SocketAddr::new(eps[p.dst].ip, p.port);
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

/// Probe until every result is what `want` says or `deadline` passes; each round waits `wait` per probe.
/// `before_round` runs first each time (e.g. flushing conntrack). The mismatches of the last round.
pub async fn until_agreed(
    eps: &[Endpoint],
    probes: &[Probe],
    want: &dyn Fn(&Probe) -> bool,
    wait: Duration,
    deadline: Duration,
    before_round: &dyn Fn(),
) -> Vec<(Probe, bool)> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        before_round();
        let got = run(eps, probes, wait).await;
        let wrong: Vec<(Probe, bool)> = got.into_iter().filter(|(p, ok)| *ok != want(p)).collect();
        if wrong.is_empty() || tokio::time::Instant::now() >= end {
            return wrong;
        }
    }
}
