//! The demo on the lab's Kubernetes: a Deployment scheduled by kube-scheduler onto the three nodes, each
//! pod's network made by containerd → `terway` → `terwayd`, shown with `kubectl get pods -o wide`; then
//! the connectivity matrix, a churn of deleted pods the ReplicaSet replaces, the matrix again, and a
//! scale to zero that must hand every address back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::check;
use crate::kubectl_cmd::{kubectl, kubectl_stdin};
use crate::plan::LabPlan;

/// The demo's Deployment: the workload image, never pulled, a short grace period.
pub fn deployment(name: &str, replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 5\n      containers:\n      - name: main\n        image: {image}\n        \
         imagePullPolicy: Never\n",
        image = crate::k8s::WORKLOAD_IMAGE
    )
}

/// A pod of the demo as kubectl lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubePod {
    /// Name.
    pub name: String,
    /// Node it runs on.
    pub node: String,
    /// Its address (empty until assigned).
    pub ip: String,
    /// Ready and not being deleted.
    pub ready: bool,
}

/// The pods labelled `app=<app>`.
pub fn app_pods(plan: &LabPlan, app: &str) -> anyhow::Result<Vec<KubePod>> {
    let out = kubectl(
        plan,
        &["get", "pods", "-l", &format!("app={app}"), "-o", "json"],
    )?;
    let list: Value = serde_json::from_slice(&out.stdout)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| KubePod {
            name: p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            node: p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ip: p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ready: p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        })
        .collect())
}

/// Wait until `f` holds for the pods of `app`, up to `timeout`.
pub fn wait_pods(
    plan: &LabPlan,
    app: &str,
    timeout: Duration,
    what: &str,
    f: impl Fn(&[KubePod]) -> bool,
) -> anyhow::Result<Vec<KubePod>> {
    let deadline = Instant::now() + timeout;
    loop {
        crate::demo::interrupted()?;
        let pods = app_pods(plan, app)?;
        if f(&pods) {
            return Ok(pods);
        }
        if Instant::now() >= deadline {
            let ready = pods.iter().filter(|p| p.ready).count();
            anyhow::bail!(
                "{what}: not done after {}s ({} pods, {ready} Ready); `terway-lab kubectl --lab {} -- describe pods` tells why",
                timeout.as_secs(),
                pods.len(),
                plan.name
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The demo's steps on a Kubernetes lab; the JSON report has the same keys as the lab-only demo.
pub fn steps(plan: &LabPlan, pods: usize, churn: usize, quiet: bool) -> anyhow::Result<Value> {
    let app = "demo";
    if !quiet && plan.terwayd_daemonset() {
        println!(
            "\nterway-rs was installed as a user installs it, kubectl apply -k deploy/ (the lab's overlay: {}):",
            crate::k8s::deploy::dir(plan).display()
        );
        let out = kubectl(
            plan,
            &[
                "-n",
                "kube-system",
                "get",
                "daemonset",
                crate::k8s::deploy::DAEMONSET,
                "-o",
                "wide",
            ],
        )?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    let t = Instant::now();
    kubectl_stdin(plan, &["apply", "-f", "-"], &deployment(app, pods))?;
    let running = wait_pods(
        plan,
        app,
        Duration::from_secs(240),
        "creating the Deployment",
        |p| p.len() == pods && p.iter().all(|p| p.ready),
    )?;
    let add_secs = t.elapsed().as_secs_f64();
    if !quiet {
        println!("\n{pods} pods Ready in {add_secs:.1}s, each with a VPC address from its node's ENIs or PodCIDR:");
        let out = kubectl(
            plan,
            &["get", "pods", "-o", "wide", "-l", &format!("app={app}")],
        )?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    let first = check::check(&plan.name, 0, true)?;
    if !quiet {
        println!("\nconnectivity between the Kubernetes pods:");
        print!("{}", check::render(&first));
    }
    crate::demo::interrupted()?;

    // Churn: delete a few pods of every node; the ReplicaSet replaces them.
    let victims: Vec<String> = running
        .iter()
        .step_by((running.len() / churn.max(1)).max(1))
        .take(churn)
        .map(|p| p.name.clone())
        .collect();
    let mut args = vec!["delete", "pod", "--wait=false"];
    args.extend(victims.iter().map(String::as_str));
    kubectl(plan, &args)?;
    let gone: BTreeSet<String> = victims.iter().cloned().collect();
    wait_pods(
        plan,
        app,
        Duration::from_secs(180),
        "replacing the churned pods",
        |p| p.len() == pods && p.iter().all(|p| p.ready && !gone.contains(&p.name)),
    )?;
    let second = check::check(&plan.name, 0, true)?;
    if !quiet {
        println!(
            "\nconnectivity after deleting {} pods (the ReplicaSet replaced them):",
            victims.len()
        );
        print!("{}", check::render(&second));
    }
    let pod_netns: Vec<String> = crate::state::load(&plan.name)
        .ok()
        .and_then(|st| crate::k8s::pods::records(&st).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.netns)
        .collect();

    kubectl(plan, &["scale", "deployment", app, "--replicas=0"])?;
    wait_pods(
        plan,
        app,
        Duration::from_secs(180),
        "scaling to zero",
        |p| p.is_empty(),
    )?;
    if !quiet {
        println!(
            "{}",
            if first.ok && second.ok {
                "demo: every check passed; the Deployment is scaled to zero"
            } else {
                "demo: SOME CHECKS FAILED"
            }
        );
    }
    Ok(json!({
        "lab": plan.name,
        "kubernetes": true,
        "pod_netns": pod_netns,
        "pods": pods,
        "churned": victims.len(),
        "add_seconds": add_secs,
        "first": first,
        "after_churn": second,
        "ok": first.ok && second.ok,
    }))
}
