//! `bench footprint`: terwayd's resident memory (VmRSS, VmHWM from /proc/<pid>/status) and CPU time
//! (utime+stime from /proc/<pid>/stat) idle and with N pods, and the sizes of the binaries.

use std::time::Duration;

use serde_json::{json, Value};

use super::cni::{phase, terway, PodSet};
use super::lab::{Lab, LabSpec};
use super::report::{fmt, Section, Table, Target};
use super::{CommonOpts, FootprintOpts};

/// Memory and CPU of a process over an interval.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Usage {
    /// Resident set at the end, bytes.
    pub rss_bytes: u64,
    /// Peak resident set so far, bytes.
    pub hwm_bytes: u64,
    /// CPU time used during the interval, ms.
    pub cpu_ms: f64,
    /// Interval length, ms.
    pub interval_ms: f64,
    /// CPU share of one core during the interval (0..1 per core).
    pub cpu_share: f64,
}

/// `VmRSS`/`VmHWM` of `pid` in bytes.
pub fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_status(&status))
}

fn parse_status(status: &str) -> (u64, u64) {
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// utime+stime of `pid` in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_ticks(&stat).ok_or_else(|| anyhow::anyhow!("cannot parse /proc/{pid}/stat"))
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces; fields after the closing paren are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Sample `pid` over `interval`.
pub fn usage(pid: u32, interval: Duration) -> anyhow::Result<Usage> {
    let t0 = cpu_ticks(pid)?;
    std::thread::sleep(interval);
    let t1 = cpu_ticks(pid)?;
    let (rss, hwm) = memory(pid)?;
    let cpu_ms = (t1.saturating_sub(t0)) as f64 * 1000.0 / ticks_per_second();
    let interval_ms = interval.as_secs_f64() * 1000.0;
    Ok(Usage {
        rss_bytes: rss,
        hwm_bytes: hwm,
        cpu_ms,
        interval_ms,
        cpu_share: cpu_ms / interval_ms,
    })
}

/// Sizes of our binaries (whatever profile they were built with).
pub fn binary_sizes() -> Value {
    let mut m = serde_json::Map::new();
    for name in ["terway", "terwayd", "terway-cli", "terway-lab"] {
        let v = crate::procs::find_binary(name)
            .ok()
            .and_then(|p| Some(json!({ "bytes": std::fs::metadata(&p).ok()?.len(), "path": p })))
            .unwrap_or(Value::Null);
        m.insert(name.into(), v);
    }
    Value::Object(m)
}

/// `bench footprint`.
pub fn bench(opts: &CommonOpts, o: &FootprintOpts) -> anyhow::Result<Section> {
    let sizes = binary_sizes();
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let lab = match &opts.lab {
        Some(n) => Lab::existing(n)?,
        None => Lab::up(&LabSpec {
            modes: vec!["shared"],
            min_pool: 0,
            max_pool: 5,
            attach_delay_ms: "200-600".into(),
        })?,
    };
    let node = lab.node("shared")?.name.clone();
    let pid = lab.daemon_pid(&node)?;
    let interval = Duration::from_secs(o.seconds.max(1));
    if !opts.json {
        eprintln!(
            "bench footprint: terwayd pid {pid} idle for {}s…",
            interval.as_secs()
        );
    }
    let idle = usage(pid, interval)?;
    let subject = terway(&lab, &node)?;
    let set = PodSet::create(run_id, "fp", o.pods)?;
    if !opts.json {
        eprintln!("bench footprint: adding {} pods…", o.pods);
    }
    let ticks0 = cpu_ticks(pid)?;
    let (adds, add_wall) = phase(&subject, &set, "ADD", 8);
    let add_cpu_ms = cpu_ticks(pid)?.saturating_sub(ticks0) as f64 * 1000.0 / ticks_per_second();
    let failed = adds.iter().filter(|r| r.is_err()).count();
    let first_err = adds.iter().find_map(|r| r.as_ref().err().cloned());
    let loaded = usage(pid, interval)?;
    let (_dels, _) = phase(&subject, &set, "DEL", 8);
    drop(set);
    let mut s = Section::new("footprint");
    let mut t = Table::new(
        format!("terwayd footprint (pid {pid})"),
        &[
            "state",
            "RSS MB",
            "peak RSS MB",
            "CPU ms",
            "CPU % of a core",
        ],
    );
    let mb = |b: u64| b as f64 / 1_048_576.0;
    for (label, u) in [
        ("idle".to_string(), idle),
        (format!("{} pods", o.pods - failed), loaded),
    ] {
        t.row(vec![
            label,
            fmt(Some(mb(u.rss_bytes)), 1),
            fmt(Some(mb(u.hwm_bytes)), 1),
            fmt(Some(u.cpu_ms), 0),
            fmt(Some(u.cpu_share * 100.0), 2),
        ]);
    }
    s.tables.push(t);
    let mut b = Table::new("Binary sizes", &["binary", "MB", "path"]);
    if let Some(obj) = sizes.as_object() {
        for (k, v) in obj {
            b.row(vec![
                k.clone(),
                fmt(
                    v.get("bytes")
                        .and_then(Value::as_u64)
                        .map(|x| x as f64 / 1_048_576.0),
                    1,
                ),
                v.get("path")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_string(),
            ]);
        }
    }
    s.tables.push(b);
    s.targets.push(Target::new(
        format!("terwayd RSS with {} pods (MB)", o.pods),
        Some(mb(loaded.rss_bytes)),
        20.0,
        true,
        " MB",
    ));
    s.json = json!({
        "daemon_pid": pid,
        "idle": idle,
        "loaded": loaded,
        "pods": o.pods,
        "pods_failed": failed,
        "add_wall_ms": add_wall.as_secs_f64() * 1000.0,
        // Daemon CPU spent serving the ADDs (AllocIP, persistence, pool refills).
        "add_phase_cpu_ms": add_cpu_ms,
        "binaries": sizes,
        "errors": first_err.into_iter().collect::<Vec<_>>(),
    });
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let st = "Name:\tterwayd\nVmHWM:\t  12000 kB\nVmRSS:\t   9000 kB\n";
        assert_eq!(parse_status(st), (9000 * 1024, 12000 * 1024));
        let stat = "123 (terway d) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        // Our own process is readable and uses some memory.
        let (rss, _) = memory(std::process::id()).unwrap();
        assert!(rss > 0);
        assert!(cpu_ticks(std::process::id()).is_ok());
    }
}
