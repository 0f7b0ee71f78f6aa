//! The lab as a benchmark sees it: brought up and torn down by running the `terway-lab` binary exactly as a
//! user would (`up --json`, `down`), so the benchmarks stay decoupled from the lab's internals; plus the two
//! side doors a benchmark needs — the daemon's status service (pool size) and the emulator's admin API
//! (`/_emulator/calls`, runtime faults), served on the supervisor's unix socket, out of the pods' reach.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use terway_rpc::v1::terway_status_client::TerwayStatusClient;
use terway_rpc::v1::{PoolStatus, StatusRequest};

/// What `terway-lab up --json` told us about one node.
#[derive(Debug, Clone)]
pub struct LabNode {
    /// `node0`…
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// `shared`, `exclusive`, `vpc-route`.
    pub mode: String,
    /// The daemon's gRPC socket.
    pub socket: PathBuf,
    /// The CNI network configuration the lab feeds to `terway`.
    pub cni_config: PathBuf,
}

/// A running lab; removed on drop when this benchmark created it.
#[derive(Debug)]
pub struct Lab {
    /// Lab name.
    pub name: String,
    /// The emulator's admin API (HTTP over this unix socket).
    pub admin_socket: PathBuf,
    /// Nodes.
    pub nodes: Vec<LabNode>,
    /// The lab's state directory, when its description names one.
    pub dir: Option<PathBuf>,
    owned: bool,
}

/// Options for a lab the benchmark brings up.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Node modes, one node each.
    pub modes: Vec<&'static str>,
    /// `min_pool_size`.
    pub min_pool: u32,
    /// `max_pool_size`.
    pub max_pool: u32,
    /// `N` or `MIN-MAX` ms.
    pub attach_delay_ms: String,
}

fn lab_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the terway-lab binary itself: {e}"))
}

fn parse_desc(desc: &Value, owned: bool) -> anyhow::Result<Lab> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let name =
        s(desc, "name").ok_or_else(|| anyhow::anyhow!("lab description has no name: {desc}"))?;
    let nodes = desc
        .get("nodes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|n| {
                    Some(LabNode {
                        name: s(n, "name")?,
                        netns: s(n, "netns")?,
                        mode: s(n, "mode").unwrap_or_default(),
                        socket: PathBuf::from(s(n, "daemon_socket")?),
                        cni_config: PathBuf::from(s(n, "cni_config")?),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let admin_socket = match (s(desc, "emulator_admin_socket"), s(desc, "dir")) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(dir)) => Path::new(&dir).join("emulator-admin.sock"),
        (None, None) => anyhow::bail!("lab {name}: the description names no emulator admin socket"),
    };
    Ok(Lab {
        name,
        admin_socket,
        nodes,
        dir: s(desc, "dir").map(PathBuf::from),
        owned,
    })
}

impl Lab {
    /// Bring up a new lab with a fresh name.
    pub fn up(spec: &LabSpec) -> anyhow::Result<Lab> {
        let name = format!("bn{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let out = Command::new(lab_binary()?)
            .args([
                "up",
                "--name",
                &name,
                "--nodes",
                &spec.modes.len().to_string(),
            ])
            .arg(format!("--mode={}", spec.modes.join(",")))
            .args([
                "--min-pool",
                &spec.min_pool.to_string(),
                "--max-pool",
                &spec.max_pool.to_string(),
            ])
            .args(["--attach-delay-ms", &spec.attach_delay_ms, "--json"])
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "terway-lab up failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let desc: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            anyhow::anyhow!(
                "terway-lab up --json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        parse_desc(&desc, true)
    }

    /// Attach to an existing lab (`terway-lab status --json`); it is left running afterwards.
    pub fn existing(name: &str) -> anyhow::Result<Lab> {
        let v = status_json(name)?;
        let desc = v
            .get("lab")
            .ok_or_else(|| anyhow::anyhow!("terway-lab status {name}: no lab description"))?;
        parse_desc(desc, false)
    }

    /// PID of `node`'s terwayd as the lab supervisor reports it.
    pub fn daemon_pid(&self, node: &str) -> anyhow::Result<u32> {
        let v = status_json(&self.name)?;
        v.pointer(&format!("/live/state/daemons/{node}/pid"))
            .and_then(Value::as_u64)
            .filter(|p| *p > 0)
            .map(|p| p as u32)
            .ok_or_else(|| anyhow::anyhow!("lab {}: no running terwayd on {node}", self.name))
    }

    /// The first node running `mode`.
    pub fn node(&self, mode: &str) -> anyhow::Result<&LabNode> {
        self.nodes
            .iter()
            .find(|n| n.mode == mode)
            .ok_or_else(|| anyhow::anyhow!("lab {} has no {mode} node", self.name))
    }

    /// HTTP request to the emulator's admin API over the supervisor's unix socket.
    pub fn emulator(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: emulator-admin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sock = &self.admin_socket;
        let exchange = || -> std::io::Result<Vec<u8>> {
            let mut s = UnixStream::connect(sock)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            s.write_all(req.as_bytes())?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            Ok(buf)
        };
        let raw = exchange().map_err(|e| {
            anyhow::anyhow!(
                "emulator admin API at {} ({method} {path}): {e}; is lab {} up?",
                sock.display(),
                self.name
            )
        })?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        if !head.starts_with("HTTP/1.1 2") && !head.starts_with("HTTP/1.0 2") {
            anyhow::bail!(
                "emulator {method} {path}: {}",
                head.lines().next().unwrap_or("")
            );
        }
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(body).map_err(|e| anyhow::anyhow!("emulator {path}: bad JSON: {e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Ok(exe) = lab_binary() {
            match Command::new(exe).args(["down", &self.name]).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "bench: terway-lab down {} failed: {}",
                    self.name,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("bench: terway-lab down {}: {e}", self.name),
            }
        }
    }
}

/// The daemon's whole status reply.
pub async fn daemon_status(socket: &Path) -> anyhow::Result<terway_rpc::v1::StatusReply> {
    let ch = terway_rpc::connect_unix(socket, Duration::from_secs(5)).await?;
    Ok(TerwayStatusClient::new(ch)
        .get_status(StatusRequest {})
        .await?
        .into_inner())
}

/// The daemon's pool status over its unix socket.
pub async fn pool_status(socket: &Path) -> anyhow::Result<PoolStatus> {
    daemon_status(socket)
        .await?
        .pool
        .ok_or_else(|| anyhow::anyhow!("daemon at {} reports no pool", socket.display()))
}

/// Wait until the daemon at `socket` has at least `idle` idle IPs (a warm pool), up to `timeout`.
pub async fn wait_idle(socket: &Path, idle: u32, timeout: Duration) -> anyhow::Result<PoolStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = pool_status(socket).await;
        match st {
            Ok(p) if p.idle >= idle => return Ok(p),
            Ok(p) if Instant::now() >= deadline => {
                anyhow::bail!(
                    "pool at {} has {} idle IPs after {timeout:?}, wanted {idle} ({p:?})",
                    socket.display(),
                    p.idle
                )
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// `terway-lab status NAME --json`, the entry of that lab.
fn status_json(name: &str) -> anyhow::Result<Value> {
    let out = Command::new(lab_binary()?)
        .args(["status", name, "--json"])
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "terway-lab status {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let entry = match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        other => other,
    };
    Ok(entry)
}

/// The upper end of a `MIN-MAX` attach delay in ms (0 when it does not parse: no pod is then "slow").
pub fn attach_max_ms(range: &str) -> u64 {
    super::parse_range_ms(range).map(|r| r.1).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_up_json() {
        let d = serde_json::json!({
            "name": "bnx", "dir": "/x", "vpc_netns": "bnx-vpc", "api_endpoint": "http://10.9.0.3",
            "nodes": [{"name":"node0","netns":"bnx-node0","mode":"shared","daemon_socket":"/x/s.sock","cni_config":"/x/cni.json"}]
        });
        let lab = parse_desc(&d, false).unwrap();
        assert_eq!(lab.admin_socket, PathBuf::from("/x/emulator-admin.sock"));
        assert_eq!(lab.node("shared").unwrap().netns, "bnx-node0");
        assert!(lab.node("exclusive").is_err());
    }
}
