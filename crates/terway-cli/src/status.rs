//! `terway-cli status`: the daemon's status as tables or JSON.

use std::fmt::Write;

use serde_json::{json, Value};
use terway_rpc::v1 as pb;

fn mode_name(m: i32) -> &'static str {
    match pb::NetworkMode::try_from(m) {
        Ok(pb::NetworkMode::SharedEni) => "shared",
        Ok(pb::NetworkMode::ExclusiveEni) => "exclusive",
        Ok(pb::NetworkMode::VpcRoute) => "vpc-route",
        _ => "unspecified",
    }
}

/// The reply as JSON (prost types are not serde).
pub fn to_json(r: &pb::StatusReply) -> Value {
    let pool = r.pool.unwrap_or_default();
    json!({
        "node": r.node,
        "instance_id": r.instance_id,
        "instance_type": r.instance_type,
        "mode": mode_name(r.mode),
        "pool": {
            "total": pool.total, "idle": pool.idle, "in_use": pool.in_use, "cooldown": pool.cooldown,
            "min_idle": pool.min_idle, "max_idle": pool.max_idle, "capacity": pool.capacity, "max_enis": pool.max_enis,
        },
        "limits": r.limits.as_ref().map(|l| json!({
            "eni_quantity": l.eni_quantity, "eni_private_ip_quantity": l.eni_private_ip_quantity,
            "eni_ipv6_quantity": l.eni_ipv6_quantity, "eni_total_quantity": l.eni_total_quantity,
        })),
        "enis": r.enis.iter().map(|e| json!({
            "eni_id": e.eni_id, "mac": e.mac, "status": e.status, "vswitch_id": e.vswitch_id, "cidr": e.cidr,
            "ips": e.ips.iter().map(|i| json!({"ip": i.ip, "state": i.state, "pod": i.pod})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "pods": r.pods.iter().map(|p| json!({
            "pod": p.pod, "if_name": p.if_name, "backend": p.backend, "container_id": p.container_id, "ipv4": p.ipv4, "ipv6": p.ipv6, "eni_id": p.eni_id,
        })).collect::<Vec<_>>(),
        "recent_calls": r.recent_calls.iter().map(|c| json!({
            "action": c.action, "result": c.result, "duration_ms": c.duration_ms, "at_unix_ms": c.at_unix_ms,
        })).collect::<Vec<_>>(),
        "inhibits": r.inhibits,
        "slow_allocations": r.slow_allocations.iter().map(|s| json!({
            "pod": s.pod, "waited_ms": s.waited_ms, "waited_on": s.waited_on, "eni_id": s.eni_id,
            "attach_ms": s.attach_ms, "enis_ready_meanwhile": s.enis_ready_meanwhile, "reason": s.reason,
            "at_unix_ms": s.at_unix_ms,
        })).collect::<Vec<_>>(),
        "events": r.events,
    })
}

/// Left-aligned columns sized to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>| -> String {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(l, "{:<w$}  ", c, w = widths[i]);
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(header.to_vec()));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Human-readable status.
pub fn render(r: &pb::StatusReply, with_ips: bool) -> String {
    let mut out = String::new();
    let pool = r.pool.unwrap_or_default();
    let _ = writeln!(
        out,
        "node {} ({} {}), mode {}",
        r.node,
        r.instance_id,
        r.instance_type,
        mode_name(r.mode)
    );
    let _ = writeln!(
        out,
        "pool: {} total, {} idle, {} in use, {} cooldown; watermarks {}..{}; capacity {} on up to {} ENIs\n",
        pool.total, pool.idle, pool.in_use, pool.cooldown, pool.min_idle, pool.max_idle, pool.capacity, pool.max_enis
    );
    let count =
        |e: &pb::EniStatus, st: &str| e.ips.iter().filter(|i| i.state == st).count().to_string();
    let rows: Vec<Vec<String>> = r
        .enis
        .iter()
        .map(|e| {
            vec![
                e.eni_id.clone(),
                e.mac.clone(),
                e.status.clone(),
                e.vswitch_id.clone(),
                e.cidr.clone(),
                e.ips.len().to_string(),
                count(e, "idle"),
                count(e, "in-use"),
                count(e, "cooldown"),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ENI", "MAC", "STATUS", "VSWITCH", "CIDR", "IPS", "IDLE", "IN-USE", "COOLDOWN",
        ],
        &rows,
    ));
    if with_ips {
        let rows: Vec<Vec<String>> = r
            .enis
            .iter()
            .flat_map(|e| {
                e.ips.iter().map(move |i| {
                    vec![
                        e.eni_id.clone(),
                        i.ip.clone(),
                        i.state.clone(),
                        i.pod.clone(),
                    ]
                })
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["ENI", "IP", "STATE", "POD"], &rows));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .pods
        .iter()
        .map(|p| {
            vec![
                p.pod.clone(),
                p.if_name.clone(),
                p.backend.clone(),
                p.ipv4.clone(),
                p.eni_id.clone(),
                p.container_id.chars().take(12).collect(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["POD", "IF", "BACKEND", "IPV4", "ENI", "CONTAINER"],
        &rows,
    ));
    let _ = writeln!(
        out,
        "\ninhibits: {}",
        if r.inhibits.is_empty() {
            "none".to_string()
        } else {
            r.inhibits.join("; ")
        }
    );
    let calls: Vec<Vec<String>> = r
        .recent_calls
        .iter()
        .rev()
        .take(20)
        .map(|c| {
            vec![
                c.action.clone(),
                c.result.clone(),
                format!("{} ms", c.duration_ms),
                c.at_unix_ms.to_string(),
            ]
        })
        .collect();
    out.push_str("\nrecent cloud calls (newest first):\n");
    out.push_str(&table(
        &["ACTION", "RESULT", "TOOK", "AT (unix ms)"],
        &calls,
    ));
    if !r.slow_allocations.is_empty() {
        let slow: Vec<Vec<String>> = r
            .slow_allocations
            .iter()
            .rev()
            .take(20)
            .map(|s| {
                vec![
                    s.pod.clone(),
                    format!("{} ms", s.waited_ms),
                    s.reason.clone(),
                ]
            })
            .collect();
        out.push_str("\nallocations that waited for the pool (newest first):\n");
        out.push_str(&table(&["POD", "WAITED", "WAITED ON"], &slow));
    }
    if !r.events.is_empty() {
        out.push_str("\nevents:\n");
        for e in &r.events {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::StatusReply {
        pb::StatusReply {
            node: "node-1".into(),
            instance_id: "i-1".into(),
            instance_type: "ecs.g7.large".into(),
            mode: pb::NetworkMode::SharedEni as i32,
            pool: Some(pb::PoolStatus {
                total: 3,
                idle: 1,
                in_use: 2,
                capacity: 30,
                max_enis: 2,
                max_idle: 5,
                ..Default::default()
            }),
            enis: vec![pb::EniStatus {
                eni_id: "eni-1".into(),
                mac: "00:16:3e:00:00:01".into(),
                status: "Ready".into(),
                vswitch_id: "vsw-1".into(),
                cidr: "10.0.0.0/24".into(),
                ips: vec![
                    pb::IpStatus {
                        ip: "10.0.0.5".into(),
                        state: "in-use".into(),
                        pod: "default/a".into(),
                    },
                    pb::IpStatus {
                        ip: "10.0.0.6".into(),
                        state: "idle".into(),
                        pod: String::new(),
                    },
                ],
            }],
            pods: vec![pb::PodAllocation {
                pod: "default/a".into(),
                container_id: "0123456789abcdef".into(),
                ipv4: "10.0.0.5".into(),
                ipv6: String::new(),
                eni_id: "eni-1".into(),
                if_name: "eth0".into(),
                backend: "shared-ip".into(),
            }],
            recent_calls: vec![pb::CloudCall {
                action: "AssignPrivateIpAddresses".into(),
                result: "ok".into(),
                duration_ms: 12,
                at_unix_ms: 1,
            }],
            inhibits: vec!["vSwitch vsw-2 has no free IP".into()],
            events: vec![],
            limits: None,
            slow_allocations: vec![pb::SlowAllocation {
                pod: "default/a".into(),
                waited_ms: 2210,
                waited_on: "new-eni".into(),
                eni_id: "eni-1".into(),
                attach_ms: 2003,
                enis_ready_meanwhile: 1,
                reason: "a new ENI (eni-1, attach 2003 ms)".into(),
                at_unix_ms: 5,
            }],
        }
    }

    #[test]
    fn renders_tables() {
        let text = render(&sample(), true);
        assert!(text.contains("mode shared"), "{text}");
        assert!(
            text.contains("eni-1") && text.contains("default/a") && text.contains("0123456789ab")
        );
        assert!(
            !text.contains("0123456789abcdef"),
            "container id is shortened"
        );
        assert!(text.contains("vsw-2 has no free IP"));
        assert!(text.contains("AssignPrivateIpAddresses"));
        assert!(text.contains("10.0.0.6  idle"), "{text}");
        assert!(
            text.contains("default/a  2210 ms  a new ENI (eni-1, attach 2003 ms)"),
            "{text}"
        );
    }

    #[test]
    fn json_has_every_section() {
        let v = to_json(&sample());
        assert_eq!(v["mode"], "shared");
        assert_eq!(v["pool"]["in_use"], 2);
        assert_eq!(v["enis"][0]["ips"][0]["pod"], "default/a");
        assert_eq!(v["pods"][0]["ipv4"], "10.0.0.5");
        assert_eq!(v["recent_calls"][0]["duration_ms"], 12);
        assert!(v["limits"].is_null());
        assert_eq!(v["slow_allocations"][0]["waited_on"], "new-eni");
        assert_eq!(v["slow_allocations"][0]["attach_ms"], 2003);
    }
}
