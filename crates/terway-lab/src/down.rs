//! `terway-lab down NAME`: stop a lab and remove everything it made — also after a crash of the supervisor,
//! from what `state.json`, `plan.json` and the pod records say. Processes are stopped by PID only after
//! checking their command line; namespaces are deleted by name (the lab's own prefix or recorded pod netns).

use std::time::Duration;

use serde::Serialize;
use terway_emulator::fabric::Fabric;

use crate::control::{self, Request};
use crate::plan::{labs_root, LabPlan};
use crate::procs;
use crate::state::{self, LabState};

/// Arguments of `down`.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// Lab name (optional when exactly one lab exists).
    pub name: Option<String>,
    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `down` removed.
#[derive(Debug, Default, Serialize)]
pub struct DownReport {
    /// Lab name.
    pub name: String,
    /// Processes stopped.
    pub processes: Vec<u32>,
    /// Namespaces deleted.
    pub netns: Vec<String>,
    /// Whether the lab directory was removed.
    pub dir_removed: bool,
    /// Problems met on the way (cleanup went on regardless).
    pub errors: Vec<String>,
}

fn lab_netns_on_machine(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Stop and remove lab `name`.
pub fn down(name: &str, quiet: bool) -> anyhow::Result<DownReport> {
    crate::plan::check_name(name)?;
    let dir = labs_root().join(name);
    let mut report = DownReport {
        name: name.to_string(),
        ..DownReport::default()
    };
    let st: Option<LabState> = state::read_json(&state::state_path(&dir)).ok();
    let plan: Option<LabPlan> = st
        .as_ref()
        .map(|s| s.plan.clone())
        .or_else(|| state::read_json(&dir.join("plan.json")).ok());
    let dir_text = dir.display().to_string();

    // 1. The supervisor: ask nicely (it tears down in order), then signals.
    if let Some(st) = &st {
        let pid = st.supervisor_pid;
        let markers = ["serve-lab", dir_text.as_str()];
        if procs::is_ours(pid, &markers) {
            if !quiet {
                eprintln!("stopping lab supervisor (pid {pid})");
            }
            let _ = control::call(&dir, &Request::Shutdown, Duration::from_secs(5));
            if !procs::wait_gone(pid, Duration::from_secs(60)) {
                procs::stop(pid, &markers, Duration::from_secs(5));
            }
            report.processes.push(pid);
        }
        // 2. Kubernetes the supervisor could not stop: its recorded processes (their command lines name
        //    the lab directory), then each node's pods, shims and cgroups.
        if let Some(kube) = state::read_json::<LabState>(&state::state_path(&dir))
            .ok()
            .and_then(|s| s.kube)
        {
            for (name, pid) in kube.processes.iter().rev() {
                let markers = [dir_text.as_str()];
                if procs::is_ours(*pid, &markers) {
                    procs::stop(*pid, &markers, Duration::from_secs(5));
                    report.processes.push(*pid);
                    tracing::info!(process = %name, pid, "stopped a leftover Kubernetes process");
                }
            }
            for (node, rec) in &kube.nodes {
                for e in crate::k8s::cluster::remove_node(rec, &dir_text) {
                    report.errors.push(format!("node {node}: {e}"));
                }
            }
        }
        // 3. Daemons the supervisor could not stop (it crashed or was killed).
        for (node, d) in &st.daemons {
            let socket = plan
                .as_ref()
                .and_then(|p| p.node(node))
                .map(|n| n.socket.display().to_string());
            let Some(socket) = socket else { continue };
            let markers = ["terwayd", socket.as_str()];
            if procs::is_ours(d.pid, &markers) {
                procs::stop(d.pid, &markers, Duration::from_secs(5));
                report.processes.push(d.pid);
            }
        }
    }
    // 4. Pod namespaces (named cni-<uuid>, recorded before creation).
    for pod in state::list_pods(&dir) {
        if Fabric::netns_exists(&pod.netns) {
            match Fabric::delete_netns(&pod.netns) {
                Ok(()) => report.netns.push(pod.netns),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }
    // 5. The lab's own namespaces: recorded ones and anything else carrying the lab prefix.
    let mut names: Vec<String> = st.as_ref().map(|s| s.netns.clone()).unwrap_or_default();
    if let Some(p) = &plan {
        names.push(p.vpc_netns.clone());
        names.extend(p.nodes.iter().map(|n| n.netns.clone()));
        names.push(p.outside.netns.clone());
    }
    names.extend(lab_netns_on_machine(name));
    names.sort();
    names.dedup();
    for ns in names {
        if !ns.starts_with(&format!("{name}-")) || !Fabric::netns_exists(&ns) {
            continue;
        }
        match Fabric::delete_netns(&ns) {
            Ok(()) => report.netns.push(ns),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    // 6. Files.
    if dir.exists() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => report.dir_removed = true,
            Err(e) => report
                .errors
                .push(format!("removing {}: {e}", dir.display())),
        }
    }
    if st.is_none() && plan.is_none() && report.netns.is_empty() && !report.dir_removed {
        anyhow::bail!(
            "no lab named {name:?} (nothing under {} and no namespace {name}-*)",
            labs_root().display()
        );
    }
    Ok(report)
}

/// `terway-lab down`.
pub fn run(args: DownArgs) -> anyhow::Result<()> {
    let name = state::resolve_lab(args.name.as_deref())?;
    let report = down(&name, args.json)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            // The supervisor removes what it built as it stops; this counts what was left after it.
            "lab {} is down: {} process(es) stopped, {} leftover namespace(s) deleted{}",
            report.name,
            report.processes.len(),
            report.netns.len(),
            if report.dir_removed {
                ", files removed"
            } else {
                ""
            }
        );
        for e in &report.errors {
            eprintln!("  warning: {e}");
        }
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("lab {name} was not removed completely")
    }
}
