//! Lab life cycle: two labs side by side never collide (same address plan, separate namespaces), and `down`
//! removes everything after the supervisor was killed (daemons, namespaces, pod namespaces, files).

mod common;

use common::{check_failures, run, Lab};

fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn processes_mentioning(text: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().into_string().ok()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&raw).contains(text).then_some(pid)
        })
        .collect()
}

#[test]
fn two_labs_side_by_side_are_isolated() {
    let a = Lab::up(&["--node", "vpc-route", "--node", "exclusive"]);
    let b = Lab::up(&["--node", "vpc-route", "--node", "exclusive"]);
    // Same address plan in both (they live in different namespaces), different names everywhere.
    assert_eq!(a.desc["vpc_cidr"], b.desc["vpc_cidr"]);
    assert_ne!(a.desc["vpc_netns"], b.desc["vpc_netns"]);
    for lab in [&a, &b] {
        lab.pod_add("node0", "p0").unwrap();
        lab.pod_add("node1", "p1").unwrap();
    }
    for lab in [&a, &b] {
        let report = lab.check(&[]);
        assert_eq!(
            report["ok"],
            true,
            "{}: {}",
            lab.name,
            check_failures(&report)
        );
    }
}

#[test]
fn down_cleans_up_after_a_killed_supervisor() {
    let lab = Lab::up(&["--node", "vpc-route", "--node", "exclusive"]);
    let pod = lab.pod_add("node1", "victim").unwrap();
    let pod_netns = pod["netns"].as_str().unwrap().to_string();
    let dir = lab.desc["dir"].as_str().unwrap().to_string();
    let (ok, out, err) = run(&["status", &lab.name, "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pid = status[0]["supervisor_pid"].as_u64().unwrap() as i32;
    assert!(!processes_mentioning(&dir).is_empty());
    // A crash: the supervisor gets no chance to clean up; its daemons keep running.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!netns_with_prefix(&format!("{}-", lab.name)).is_empty());

    let (ok, out, err) = run(&["down", &lab.name, "--json"]);
    assert!(ok, "down after a crash failed: {err}{out}");
    assert!(netns_with_prefix(&format!("{}-", lab.name)).is_empty());
    assert!(
        netns_with_prefix(&pod_netns).is_empty(),
        "pod netns {pod_netns} left"
    );
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(!std::path::Path::new(&dir).exists());
}
