//! Helpers for the lab integration tests: drive the real `terway-lab` binary (which drives the real
//! `terwayd` and `terway`), with a guard that tears the lab down even when a test fails.

#![allow(dead_code)]

pub mod k8s;
pub mod netpol;
pub mod probe;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The `terway-lab` binary under test.
pub fn lab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_terway-lab"))
}

/// Fail loudly (not skip) when the daemon or CNI binary is missing next to terway-lab.
pub fn require_binaries() {
    let dir = lab_bin().parent().map(PathBuf::from).unwrap_or_default();
    for b in ["terwayd", "terway"] {
        assert!(
            dir.join(b).is_file() || std::env::var_os("TERWAY_BIN_DIR").is_some(),
            "{b} is not built in {}: run `cargo build -p terwayd -p terway-cni` first",
            dir.display()
        );
    }
}

/// Run `terway-lab ARGS`; returns (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(lab_bin())
        .args(args)
        .output()
        .expect("run terway-lab");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running lab, removed on drop.
pub struct Lab {
    /// Lab name.
    pub name: String,
    /// `up --json` output.
    pub desc: Value,
    /// Already taken down by the test.
    down: bool,
}

impl Lab {
    /// `terway-lab up --json ARGS` with a fresh unique name.
    pub fn up(args: &[&str]) -> Lab {
        require_binaries();
        let name = format!(
            "tt{:06x}",
            uuid::Uuid::new_v4().as_u128() as u32 & 0xff_ffff
        );
        let mut full = vec!["up", "--json", "--name", &name];
        full.extend_from_slice(args);
        let (ok, out, err) = run(&full);
        // Register the guard before asserting so a half-started lab is cleaned too.
        let lab = Lab {
            name: name.clone(),
            desc: serde_json::from_str(&out).unwrap_or(Value::Null),
            down: false,
        };
        assert!(ok, "terway-lab up failed:\n{err}\n{out}");
        lab
    }

    /// `pod add NODE POD --json`; Err with the CLI's stderr on failure.
    pub fn pod_add(&self, node: &str, pod: &str) -> Result<Value, String> {
        let (ok, out, err) = run(&["pod", "add", "--lab", &self.name, "--json", node, pod]);
        if ok {
            serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
        } else {
            Err(err)
        }
    }

    /// `pod del NODE POD`.
    pub fn pod_del(&self, node: &str, pod: &str) -> Result<(), String> {
        let (ok, _, err) = run(&["pod", "del", "--lab", &self.name, node, pod]);
        if ok {
            Ok(())
        } else {
            Err(err)
        }
    }

    /// Add many pods with `parallel` concurrent CLI processes; returns the failures.
    pub fn pods_add_parallel(&self, pods: &[(String, String)], parallel: usize) -> Vec<String> {
        self.parallel(pods, parallel, true)
    }

    /// Delete many pods in parallel; returns the failures.
    pub fn pods_del_parallel(&self, pods: &[(String, String)], parallel: usize) -> Vec<String> {
        self.parallel(pods, parallel, false)
    }

    fn parallel(&self, pods: &[(String, String)], parallel: usize, add: bool) -> Vec<String> {
        let queue = std::sync::Mutex::new(pods.to_vec());
        let errors = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..parallel {
                s.spawn(|| loop {
                    let Some((node, pod)) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let r = if add {
                        self.pod_add(&node, &pod).map(|_| ())
                    } else {
                        self.pod_del(&node, &pod)
                    };
                    if let Err(e) = r {
                        errors.lock().unwrap().push(format!("{node}/{pod}: {e}"));
                    }
                });
            }
        });
        errors.into_inner().unwrap()
    }

    /// `check --json` (ok or not).
    pub fn check(&self, extra: &[&str]) -> Value {
        let mut args = vec!["check", "--lab", &self.name, "--json"];
        args.extend_from_slice(extra);
        let (_, out, err) = run(&args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("check output is not JSON ({e}): {out}\n{err}"))
    }

    /// The emulator's whole state.
    pub fn world(&self) -> Value {
        let (ok, out, err) = run(&["status", &self.name, "--world"]);
        assert!(ok, "status --world: {err}");
        serde_json::from_str(&out).expect("world json")
    }

    /// `pod list --json`.
    pub fn pods(&self) -> Vec<Value> {
        let (ok, out, err) = run(&["pod", "list", "--lab", &self.name, "--json"]);
        assert!(ok, "pod list: {err}");
        serde_json::from_str(&out).expect("pods json")
    }

    /// `daemon stop|kill|start NODE`.
    pub fn daemon(&self, what: &str, node: &str) {
        let (ok, out, err) = run(&["daemon", "--lab", &self.name, what, node]);
        assert!(ok, "daemon {what} {node}: {err}{out}");
    }

    /// Instance id of a node.
    pub fn instance(&self, node: &str) -> String {
        self.desc["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["name"] == node))
            .and_then(|n| n["instance_id"].as_str())
            .expect("node in up --json")
            .to_string()
    }
}

impl Lab {
    /// `down` now (the guard then does nothing); returns (success, stdout, stderr).
    pub fn down(&mut self) -> (bool, String, String) {
        self.down = true;
        run(&["down", &self.name])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        let (ok, out, err) = run(&["down", &self.name]);
        if !ok {
            eprintln!("down {} failed: {err}{out}", self.name);
        }
    }
}

/// Describe a failed check for an assertion message.
pub fn check_failures(report: &Value) -> String {
    let mut s = String::new();
    for c in report["cells"].as_array().into_iter().flatten() {
        if c["tcp_ok"] != c["probes"] || c["icmp_ok"] != c["probes"] {
            s.push_str(&format!(
                "{} {} ({}): tcp {}/{} icmp {}/{}: {}\n",
                c["category"],
                c["node"],
                c["mode"],
                c["tcp_ok"],
                c["probes"],
                c["icmp_ok"],
                c["probes"],
                c["failures"]
            ));
        }
    }
    for d in report["fabric_audit"].as_array().into_iter().flatten() {
        s.push_str(&format!("fabric drift: {d}\n"));
    }
    for d in report["fabric_audit"].as_array().into_iter().flatten() {
        s.push_str(&format!("fabric drift: {d}\n"));
    }
    for sp in report["spoof"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "spoof {}: genuine {} forged {}\n",
            sp["node"], sp["genuine_received"], sp["forged_received"]
        ));
    }
    s
}

/// Per instance: every private IPv4 on its ENIs (primary ENI's primary excluded) and its ENIs by status.
pub fn instance_ips(world: &Value, instance: &str) -> (BTreeSet<String>, BTreeMap<String, usize>) {
    let primary_eni = world["instances"][instance]["primary_eni_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut ips = BTreeSet::new();
    let mut statuses = BTreeMap::new();
    for eni in world["enis"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        if eni["instance_id"].as_str() != Some(instance) {
            continue;
        }
        *statuses
            .entry(eni["status"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        if eni["id"].as_str() != Some(primary_eni.as_str()) {
            if let Some(p) = eni["primary_ip"].as_str() {
                ips.insert(p.to_string());
            }
        }
        for ip in eni["secondary_ips"].as_array().into_iter().flatten() {
            if let Some(s) = ip.as_str() {
                ips.insert(s.to_string());
            }
        }
    }
    (ips, statuses)
}

/// ENIs not attached to anything (a leak once the daemons settled).
pub fn available_enis(world: &Value) -> Vec<String> {
    world["enis"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|e| e["status"] == "Available")
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect()
}

/// Pod IPs of live pods on a node.
pub fn pod_ips(pods: &[Value], node: &str) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p["node"] == node)
        .filter_map(|p| p["ip"].as_str().map(String::from))
        .collect()
}

/// Wait until `f` holds or `secs` pass; returns the last value of `f`.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The HTTP status `url` gives `curl` on the lab's outside host (a VPC host beside the nodes, 2 s at most),
/// or what went wrong.
pub fn http_from_outside(lab: &Lab, url: &str) -> Result<String, String> {
    let outside = lab.desc["outside_host"]["netns"]
        .as_str()
        .ok_or("the lab describes no outside host")?;
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            outside,
            "curl",
            "-s",
            "-m",
            "2",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{http_code}", url])
        .output()
        .map_err(|e| format!("run curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && code != "000" && !code.is_empty() {
        Ok(code)
    } else {
        Err(format!(
            "curl {url}: exit {:?}, code {code}, {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `sh -c script` inside node0 of `lab` (`terway-lab node-exec`: the node's network and mount namespaces).
pub fn node_sh(lab: &Lab, script: &str) -> (bool, String, String) {
    run(&[
        "node-exec",
        "--lab",
        &lab.name,
        "node0",
        "--",
        "sh",
        "-c",
        script,
    ])
}
