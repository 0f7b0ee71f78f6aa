//! Traffic probes run inside lab namespaces: a small TCP echo server and client, a UDP sink for the
//! anti-spoofing check, and ICMP via `ping` under `nsenter --net`. Each probe runs on its own thread that
//! enters the namespace first, so nothing ever runs (or listens) in the root namespace. A namespace is a
//! name under `/run/netns` or, for a Kubernetes pod whose netns containerd keeps in its own mount
//! namespace, an absolute path (`/proc/<pid>/root/…`).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// The file of a namespace given by name (under `/run/netns`) or by absolute path.
pub fn netns_file(name: &str) -> std::path::PathBuf {
    if name.starts_with('/') {
        std::path::PathBuf::from(name)
    } else {
        Path::new("/run/netns").join(name)
    }
}

/// `program` to be run inside the namespace `netns` (name or path), mounts untouched.
pub fn command_in(netns: &str, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("nsenter");
    c.arg(format!("--net={}", netns_file(netns).display()))
        .arg("--")
        .arg(program);
    c
}

/// Enter the named namespace on the calling thread (call only on threads made for it).
pub fn enter_netns(name: &str) -> std::io::Result<()> {
    let file = File::open(netns_file(name))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Run `f` on a fresh thread inside the namespace and wait for it.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let name = name.to_string();
    std::thread::spawn(move || {
        enter_netns(&name)?;
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("probe thread panicked")))
}

/// A TCP echo server in a namespace; stops when dropped.
pub struct EchoServer {
    netns: String,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listen on `0.0.0.0:port` inside `netns`.
    pub fn start(netns: &str, port: u16) -> std::io::Result<Self> {
        let listener = in_netns(netns, move || {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let accept = listener.try_clone()?;
        // The socket already belongs to the namespace; the serving thread needs no setns.
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match accept.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 256];
                        if let Ok(n) = conn.read(&mut buf) {
                            let _ = conn.write_all(&buf[..n]);
                        }
                    }
                    Err(_) if flag.load(Ordering::Relaxed) => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(EchoServer {
            netns: netns.to_string(),
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocked accept() with one last local connection from inside the namespace.
        let port = self.port;
        let _ = in_netns(&self.netns, move || {
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_secs(1),
            )
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Outcome of one probe.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    /// Whether the probe got its answer.
    pub ok: bool,
    /// Round-trip time in microseconds when ok.
    pub rtt_us: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl ProbeResult {
    fn fail(e: impl ToString) -> Self {
        ProbeResult {
            ok: false,
            rtt_us: None,
            error: Some(e.to_string()),
        }
    }
}

/// Connect from inside `netns` to `dst:port`, send a token and expect it back.
pub fn tcp_probe(netns: &str, dst: Ipv4Addr, port: u16, timeout: Duration) -> ProbeResult {
    let token = format!("terway-lab {}", uuid::Uuid::new_v4());
    let r = in_netns(netns, move || {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(token.as_bytes())?;
        let mut buf = vec![0u8; token.len()];
        s.read_exact(&mut buf)?;
        let rtt = start.elapsed();
        if buf == token.as_bytes() {
            Ok(rtt)
        } else {
            Err(std::io::Error::other("echo mismatch"))
        }
    });
    match r {
        Ok(rtt) => ProbeResult {
            ok: true,
            rtt_us: Some(rtt.as_micros() as u64),
            error: None,
        },
        Err(e) => ProbeResult::fail(format!("tcp {dst}:{port}: {e}")),
    }
}

/// `ping -c 1` from inside `netns`; the RTT is ping's own measurement.
pub fn icmp_probe(netns: &str, dst: Ipv4Addr, timeout: Duration) -> ProbeResult {
    let wait = timeout.as_secs().max(1).to_string();
    let out = command_in(netns, "ping")
        .args(["-n", "-c", "1", "-W", &wait, &dst.to_string()])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            ProbeResult {
                ok: true,
                rtt_us: parse_ping_rtt_us(&text),
                error: None,
            }
        }
        Ok(o) => ProbeResult::fail(format!(
            "ping {dst}: {}",
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.contains("loss"))
                .unwrap_or("no reply")
        )),
        Err(e) => ProbeResult::fail(format!("cannot run ping: {e}")),
    }
}

/// Parse `time=0.045 ms` from ping output.
pub fn parse_ping_rtt_us(text: &str) -> Option<u64> {
    let t = text.split("time=").nth(1)?;
    let ms: f64 = t.split_whitespace().next()?.parse().ok()?;
    Some((ms * 1000.0) as u64)
}

/// A UDP sink in a namespace that records the source address of every datagram it gets.
pub struct UdpSink {
    seen: Arc<Mutex<Vec<IpAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpSink {
    /// Listen on `0.0.0.0:port` inside `netns`.
    pub fn start(netns: &str, port: u16) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, flag, name) = (seen.clone(), stop.clone(), netns.to_string());
        let thread = std::thread::spawn(move || {
            let sock = match enter_netns(&name)
                .and_then(|()| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))
                .and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_millis(20)))
                        .map(|()| s)
                }) {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    seen2
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(from.ip());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(UdpSink {
                seen,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other(format!(
                "udp sink in {netns} did not start"
            ))),
        }
    }

    /// Sources seen so far.
    pub fn seen(&self) -> Vec<IpAddr> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Send `count` UDP datagrams from inside `netns`, bound to source `src` (which must be local there).
pub fn udp_send(
    netns: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    count: usize,
) -> std::io::Result<()> {
    in_netns(netns, move || {
        let s = UdpSocket::bind((src, 0))?;
        for i in 0..count {
            s.send_to(format!("probe {i}").as_bytes(), (dst, port))?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_rtt() {
        let out = "PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.\n64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.045 ms\n";
        assert_eq!(parse_ping_rtt_us(out), Some(45));
        assert_eq!(parse_ping_rtt_us("nothing"), None);
    }
}
