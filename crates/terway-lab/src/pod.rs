//! `terway-lab pod add|del|list`: run the real `terway` CNI binary exactly as containerd does — environment
//! (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS=/var/run/netns/cni-<uuid>`, `CNI_IFNAME`, `CNI_ARGS` with
//! the `K8S_POD_*` keys, `CNI_PATH`), the network configuration on stdin, and the node's network namespace as
//! the "host" (via `ip netns exec`). DEL runs twice, the second time with an empty netns, as the kubelet
//! does once the sandbox is gone.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::plan::{LabPlan, NodePlan};
use crate::state::{self, PodRecord};

/// Arguments of `pod`.
#[derive(Debug, Clone, clap::Args)]
pub struct PodArgs {
    /// Lab name (optional when exactly one lab exists).
    #[arg(long, global = true)]
    pub lab: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub cmd: PodCmd,
}

/// `pod` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PodCmd {
    /// Create a pod netns and run CNI ADD on NODE.
    Add {
        /// Node name (`node0`…).
        node: String,
        /// Pod name.
        pod: String,
        /// Kubernetes namespace of the pod.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The pod interface's name (`CNI_IFNAME`).
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// Run CNI DEL (twice, as the kubelet does) and remove the pod netns.
    Del {
        /// Node name.
        node: String,
        /// Pod name.
        pod: String,
    },
    /// List the lab's pods.
    List,
}

/// Failure of one CNI invocation, with the plugin's own error object when it printed one.
#[derive(Debug, thiserror::Error)]
#[error("CNI {command} for pod {pod} on {node} failed ({status}): {message}")]
pub struct CniError {
    /// ADD / DEL.
    pub command: String,
    /// Pod name.
    pub pod: String,
    /// Node name.
    pub node: String,
    /// Exit status text.
    pub status: String,
    /// The plugin's error (`msg`, `details`, `code`) or its stderr.
    pub message: String,
}

const CNI_TIMEOUT: Duration = Duration::from_secs(150);

fn cni_args(rec: &PodRecord) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        rec.namespace, rec.pod, rec.container_id, rec.uid
    )
}

/// Run the plugin once; `netns_path` empty means "sandbox gone".
fn run_cni(
    command: &str,
    node: &NodePlan,
    rec: &PodRecord,
    netns_path: &str,
) -> Result<Value, CniError> {
    let err = |status: String, message: String| CniError {
        command: command.into(),
        pod: rec.pod.clone(),
        node: node.name.clone(),
        status,
        message,
    };
    let binary = crate::procs::find_binary("terway")
        .map_err(|e| err("not started".into(), e.to_string()))?;
    let bin_dir = binary.parent().map(Path::to_path_buf).unwrap_or_default();
    let conf = std::fs::read(node.dir.join("cni.json"))
        .map_err(|e| err("not started".into(), format!("reading cni.json: {e}")))?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(&binary)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &rec.container_id)
        .env("CNI_NETNS", netns_path)
        .env("CNI_IFNAME", &rec.if_name)
        .env("CNI_ARGS", cni_args(rec))
        .env("CNI_PATH", &bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err("not started".into(), e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&conf);
    }
    let deadline = Instant::now() + CNI_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(
                    "timeout".into(),
                    format!("no answer within {CNI_TIMEOUT:?}"),
                ));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err("lost".into(), e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        if stdout.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&stdout)
            .map_err(|e| err("bad output".into(), format!("{e}: {stdout}")));
    }
    let message = match serde_json::from_str::<Value>(&stdout) {
        Ok(v) => format!(
            "code {} {}{}",
            v.get("code").cloned().unwrap_or(Value::Null),
            v.get("msg").and_then(Value::as_str).unwrap_or(""),
            v.get("details")
                .and_then(Value::as_str)
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        Err(_) => format!("{stdout} {}", String::from_utf8_lossy(&out.stderr).trim()),
    };
    Err(err(out.status.to_string(), message))
}

/// The first IPv4 address of a CNI result.
pub fn result_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result.get("ips")?.as_array()?.iter().find_map(|ip| {
        let addr = ip.get("address")?.as_str()?;
        addr.split('/').next()?.parse::<Ipv4Addr>().ok()
    })
}

fn random_hex(bytes: usize) -> String {
    let mut s = String::new();
    while s.len() < bytes * 2 {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(bytes * 2);
    s
}

fn netns_cmd(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// Create pod `pod` on `node`: record, netns, CNI ADD. Everything is undone when ADD fails.
pub fn add(
    plan: &LabPlan,
    node_name: &str,
    pod: &str,
    namespace: &str,
    if_name: &str,
) -> anyhow::Result<PodRecord> {
    let node = plan
        .node(node_name)
        .ok_or_else(|| anyhow::anyhow!("no node {node_name:?} in lab {}", plan.name))?;
    if plan.kubernetes.is_some() {
        // terwayd learns pods from the API server there: a pod Kubernetes does not know would be
        // collected by its GC.
        anyhow::bail!(
            "lab {} runs Kubernetes: create pods through it (`terway-lab kubectl --lab {} -- run {pod} --image={} --image-pull-policy=Never`)",
            plan.name,
            plan.name,
            crate::k8s::WORKLOAD_IMAGE
        );
    }
    let path = state::pod_path(&plan.dir, node_name, pod);
    if path.exists() {
        anyhow::bail!("pod {pod} already exists on {node_name}; delete it first");
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let mut rec = PodRecord {
        node: node_name.into(),
        pod: pod.into(),
        namespace: namespace.into(),
        container_id: random_hex(32),
        if_name: if_name.into(),
        netns: format!("cni-{uid}"),
        uid,
        ip: None,
        result: None,
    };
    // Record first: a crash from here on leaves a netns `down` knows about; the daemon sees the pod as live.
    state::write_json_atomic(&path, &rec)?;
    state::publish_node_pods(&plan.dir, node_name)?;
    let created = netns_cmd(&["netns", "add", &rec.netns])
        .and_then(|()| netns_cmd(&["-n", &rec.netns, "link", "set", "lo", "up"]));
    if let Err(e) = created {
        let _ = netns_cmd(&["netns", "del", &rec.netns]);
        let _ = std::fs::remove_file(&path);
        let _ = state::publish_node_pods(&plan.dir, node_name);
        return Err(e.context(format!("creating the netns of pod {pod}")));
    }
    match run_cni("ADD", node, &rec, &format!("/var/run/netns/{}", rec.netns)) {
        Ok(result) => {
            rec.ip = result_ipv4(&result);
            rec.result = Some(result);
            state::write_json_atomic(&path, &rec)?;
            Ok(rec)
        }
        Err(e) => {
            // As containerd does after a failed ADD: DEL, then drop the sandbox. If that DEL fails too the
            // sandbox stays (record without an IP, netns kept) for a later `pod del`, as the kubelet retries.
            let ns_path = format!("/var/run/netns/{}", rec.netns);
            match run_cni("DEL", node, &rec, &ns_path) {
                Ok(_) => {
                    let _ = netns_cmd(&["netns", "del", &rec.netns]);
                    let _ = run_cni("DEL", node, &rec, "");
                    let _ = std::fs::remove_file(&path);
                    let _ = state::publish_node_pods(&plan.dir, node_name);
                    Err(e.into())
                }
                Err(del) => Err(anyhow::Error::from(e).context(format!(
                    "cleanup DEL failed too ({del}); pod {pod} is left for `terway-lab pod del {node_name} {pod}`"
                ))),
            }
        }
    }
}

/// Delete pod `pod` on `node`: DEL with the netns, remove the netns, DEL again without it.
pub fn del(plan: &LabPlan, node_name: &str, pod: &str) -> anyhow::Result<PodRecord> {
    let node = plan
        .node(node_name)
        .ok_or_else(|| anyhow::anyhow!("no node {node_name:?} in lab {}", plan.name))?;
    let path = state::pod_path(&plan.dir, node_name, pod);
    let rec: PodRecord =
        state::read_json(&path).map_err(|e| anyhow::anyhow!("no pod {pod} on {node_name}: {e}"))?;
    let ns_path = format!("/var/run/netns/{}", rec.netns);
    let with_ns = if Path::new(&ns_path).exists() {
        ns_path.as_str()
    } else {
        ""
    };
    run_cni("DEL", node, &rec, with_ns)?;
    netns_cmd(&["netns", "del", &rec.netns]).or_else(|e| {
        if Path::new(&ns_path).exists() {
            Err(e)
        } else {
            Ok(())
        }
    })?;
    run_cni("DEL", node, &rec, "")?;
    std::fs::remove_file(&path)?;
    state::publish_node_pods(&plan.dir, node_name)?;
    Ok(rec)
}

/// `terway-lab pod …`.
pub fn run(args: PodArgs) -> anyhow::Result<()> {
    let name = state::resolve_lab(args.lab.as_deref())?;
    let st = state::load(&name)?;
    let plan = st.plan;
    match args.cmd {
        PodCmd::Add {
            node,
            pod,
            namespace,
            ifname,
        } => {
            let rec = add(&plan, &node, &pod, &namespace, &ifname)?;
            if args.json {
                let out = serde_json::json!({
                    "lab": plan.name, "node": rec.node, "pod": rec.pod, "namespace": rec.namespace,
                    "if_name": rec.if_name, "netns": rec.netns, "netns_path": format!("/var/run/netns/{}", rec.netns),
                    "container_id": rec.container_id, "ip": rec.ip, "cni_result": rec.result,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let ip = rec.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "pod {}/{} on {}: {} (netns {})",
                    rec.namespace, rec.pod, rec.node, ip, rec.netns
                );
            }
        }
        PodCmd::Del { node, pod } => {
            let rec = del(&plan, &node, &pod)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "lab": plan.name, "node": rec.node, "pod": rec.pod, "deleted": true })
                );
            } else {
                println!("pod {} on {} deleted", rec.pod, rec.node);
            }
        }
        PodCmd::List => {
            let mut pods = state::list_pods(&plan.dir);
            // On a Kubernetes lab the running Kubernetes pods too, with their netns paths.
            if plan.kubernetes.is_some() {
                pods.extend(crate::k8s::pods::records(&state::load(&plan.name)?)?);
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&pods)?);
            } else {
                for p in pods {
                    let ip = p.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
                    println!("{:<8} {:<20} {:<16} {}", p.node, p.pod, ip, p.netns);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ipv4_from_cni_result() {
        let r: Value = serde_json::json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/32","gateway":"169.254.1.1"}]});
        assert_eq!(result_ipv4(&r), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(result_ipv4(&serde_json::json!({})), None);
    }

    #[test]
    fn cni_args_carry_the_k8s_keys() {
        let rec = PodRecord {
            node: "node0".into(),
            pod: "web-0".into(),
            namespace: "default".into(),
            uid: "u".into(),
            container_id: "c".into(),
            if_name: "eth0".into(),
            netns: "cni-x".into(),
            ip: None,
            result: None,
        };
        assert_eq!(
            cni_args(&rec),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c;K8S_POD_UID=u"
        );
        assert_eq!(random_hex(32).len(), 64);
    }
}
