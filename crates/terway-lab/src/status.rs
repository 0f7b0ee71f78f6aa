//! `terway-lab status`: what a lab is made of right now — nodes and their daemons, ENIs and addresses as the
//! emulator sees them, the fabric's links, and anti-spoofing drops.

use std::time::Duration;

use serde_json::{json, Value};
use terway_cloud::EniStatus;
use terway_emulator::World;

use crate::control::{self, Request};
use crate::state;

/// Arguments of `status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Lab name (all labs when absent).
    pub name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the emulator's whole state (ENIs, IPs, instances, routes) as JSON instead.
    #[arg(long)]
    pub world: bool,
}

/// A compact summary of the emulator's state: per instance, its ENIs by status and addresses.
pub fn world_summary(w: &World) -> Value {
    let instances: Vec<Value> = w
        .instances
        .values()
        .map(|inst| {
            let enis: Vec<&terway_emulator::Eni> = w
                .enis
                .values()
                .filter(|e| e.instance_id.as_deref() == Some(inst.id.as_str()))
                .collect();
            json!({
                "instance_id": inst.id,
                "instance_type": inst.instance_type,
                "enis": enis.len(),
                "enis_in_use": enis.iter().filter(|e| e.status == EniStatus::InUse).count(),
                "secondary_ips": enis.iter().map(|e| e.secondary_ips.len()).sum::<usize>(),
            })
        })
        .collect();
    json!({
        "instances": instances,
        "enis_total": w.enis.len(),
        "enis_available": w.enis.values().filter(|e| e.status == EniStatus::Available).count(),
        "route_entries": w.routes.len(),
    })
}

fn print_lab(name: &str, json_out: bool) -> anyhow::Result<Value> {
    let st = state::load(name)?;
    let live = control::call(&st.plan.dir, &Request::Status, Duration::from_secs(10));
    let pods = state::list_pods(&st.plan.dir);
    let out = json!({
        "lab": crate::up::describe(&st.plan),
        "phase": st.phase,
        "supervisor_pid": st.supervisor_pid,
        "live": live.as_ref().ok(),
        "error": live.as_ref().err().map(|e| e.to_string()),
        "pods": pods,
    });
    if !json_out {
        println!(
            "lab {} ({:?}), supervisor pid {}",
            name, st.phase, st.supervisor_pid
        );
        let live = live.unwrap_or(Value::Null);
        for n in &st.plan.nodes {
            let pid = live
                .pointer(&format!("/state/daemons/{}/pid", n.name))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let inst = live
                .pointer("/emulator/instances")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|i| i["instance_id"] == n.instance_id.as_str())
                        .cloned()
                })
                .unwrap_or(Value::Null);
            let npods = pods.iter().filter(|p| p.node == n.name).count();
            println!(
                "  {:<7} {:<10} {:<16} terwayd {:<8} ENIs {:>2} (in use {:>2})  secondary IPs {:>3}  pods {:>3}",
                n.name,
                n.mode.as_str(),
                n.instance_type,
                if pid > 0 {
                    format!("pid {pid}")
                } else if st.plan.terwayd_daemonset()
                    && std::os::unix::net::UnixStream::connect(&n.socket).is_ok()
                {
                    // A DaemonSet pod: the kubelet owns the process; it answers on its socket.
                    "pod".into()
                } else {
                    "DOWN".into()
                },
                inst["enis"].as_u64().unwrap_or(0),
                inst["enis_in_use"].as_u64().unwrap_or(0),
                inst["secondary_ips"].as_u64().unwrap_or(0),
                npods
            );
        }
        if let Some(d) = live.get("spoofed_drops").and_then(Value::as_u64) {
            println!("  anti-spoofing drops since the last fabric update: {d}");
        }
    }
    Ok(out)
}

/// `terway-lab status`.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    if args.world {
        let name = state::resolve_lab(args.name.as_deref())?;
        let st = state::load(&name)?;
        let world = control::call(&st.plan.dir, &Request::World, Duration::from_secs(10))?;
        println!("{}", serde_json::to_string_pretty(&world)?);
        return Ok(());
    }
    let names = match args.name {
        Some(n) => vec![n],
        None => state::list_labs(),
    };
    if names.is_empty() && !args.json {
        println!("no lab is up");
    }
    let mut all = Vec::new();
    for n in names {
        all.push(print_lab(&n, args.json)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}
