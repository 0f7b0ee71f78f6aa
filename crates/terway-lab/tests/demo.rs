//! `terway-lab demo` exits 0 and leaves nothing behind: no namespace, root link, process or file.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

fn root_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
        })
        .collect()
}

fn netns() -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn processes_mentioning(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().into_string().unwrap_or_default();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(text) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

#[test]
fn demo_passes_and_leaves_nothing_behind() {
    common::require_binaries();
    let links_before = root_links();
    let netns_before = netns();
    let (ok, out, err) = common::run(&["demo", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    let name = report["lab"].as_str().unwrap_or_default().to_string();
    if !ok && !name.is_empty() {
        let _ = common::run(&["down", &name]);
    }
    assert!(ok, "demo failed:\n{err}\n{out}");
    assert_eq!(report["ok"], true, "{out}");
    assert!(!name.is_empty());

    // Every cell of both matrices passed for every mode, and every mode was present.
    for key in ["first", "after_churn"] {
        let modes: BTreeSet<&str> = report[key]["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["mode"].as_str())
            .collect();
        assert_eq!(
            modes,
            BTreeSet::from(["exclusive", "shared", "vpc-route"]),
            "{key}"
        );
        assert_eq!(
            report[key]["ok"],
            true,
            "{}",
            common::check_failures(&report[key])
        );
    }

    // Nothing left: the lab's namespaces, its pods' namespaces, root links, processes, files.
    let netns_after = netns();
    let leaked: Vec<&String> = netns_after
        .iter()
        .filter(|n| n.starts_with(&format!("{name}-")))
        .collect();
    assert!(leaked.is_empty(), "namespaces left: {leaked:?}");
    for pod_ns in report["pod_netns"].as_array().unwrap() {
        assert!(
            !netns_after.contains(pod_ns.as_str().unwrap()),
            "pod netns {pod_ns} left"
        );
    }
    let new_cni: Vec<&String> = netns_after
        .difference(&netns_before)
        .filter(|n| {
            report["pod_netns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == *n)
        })
        .collect();
    assert!(new_cni.is_empty(), "{new_cni:?}");
    assert_eq!(
        root_links(),
        links_before,
        "links in the root namespace changed"
    );
    let procs = processes_mentioning(&format!("/run/terway-lab/{name}"));
    assert!(procs.is_empty(), "processes left: {procs:?}");
    assert!(
        !std::path::Path::new(&format!("/run/terway-lab/{name}")).exists(),
        "lab directory left"
    );
}
