//! `terway-cli pod NAMESPACE/NAME`: one pod as this node's daemon sees it — the address of each of its
//! interfaces, the ENI behind it, and the daemon's recent events about the pod.

use std::fmt::Write;

use serde_json::{json, Value};
use terway_core::PodKey;
use terway_rpc::v1 as pb;

/// What the daemon knows about one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// `namespace/name`.
    pub pod: String,
    /// Its allocations, with the ENI each lives on.
    pub interfaces: Vec<(pb::PodAllocation, Option<pb::EniStatus>)>,
    /// Recent events about it, oldest first.
    pub events: Vec<String>,
}

/// The pod named `key` in a status reply; `None` when the daemon neither holds nor mentions it.
pub fn find(reply: &pb::StatusReply, key: &PodKey) -> Option<PodView> {
    let pod = key.to_string();
    let interfaces: Vec<_> = reply
        .pods
        .iter()
        .filter(|p| p.pod == pod)
        .map(|p| {
            let eni = reply.enis.iter().find(|e| e.eni_id == p.eni_id).cloned();
            (p.clone(), eni)
        })
        .collect();
    // Event lines read "<unix ms> <type> pod <ns/name> <reason>: <message>".
    let marker = format!(" pod {pod} ");
    let events: Vec<String> = reply
        .events
        .iter()
        .filter(|e| e.contains(&marker))
        .cloned()
        .collect();
    if interfaces.is_empty() && events.is_empty() {
        return None;
    }
    Some(PodView {
        pod,
        interfaces,
        events,
    })
}

/// The view as JSON.
pub fn to_json(v: &PodView) -> Value {
    json!({
        "pod": v.pod,
        "interfaces": v.interfaces.iter().map(|(a, eni)| json!({
            "if_name": a.if_name,
            "ipv4": a.ipv4,
            "ipv6": a.ipv6,
            "backend": a.backend,
            "container_id": a.container_id,
            "eni": eni.as_ref().map(|e| json!({
                "id": e.eni_id, "mac": e.mac, "vswitch_id": e.vswitch_id, "cidr": e.cidr, "status": e.status,
            })),
        })).collect::<Vec<_>>(),
        "events": v.events,
    })
}

/// The view as text.
pub fn render(v: &PodView) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pod {}", v.pod);
    if v.interfaces.is_empty() {
        let _ = writeln!(s, "  holds no address on this node");
    }
    for (a, eni) in &v.interfaces {
        let _ = writeln!(
            s,
            "  {:<6} {:<16} {:<14} container {}",
            a.if_name, a.ipv4, a.backend, a.container_id
        );
        match eni {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "         on {} ({}, vSwitch {} {}, {})",
                    e.eni_id, e.mac, e.vswitch_id, e.cidr, e.status
                );
            }
            None if !a.eni_id.is_empty() => {
                let _ = writeln!(s, "         on {}", a.eni_id);
            }
            None => {}
        }
    }
    if !v.events.is_empty() {
        let _ = writeln!(s, "events (this daemon's, newest last):");
        for e in &v.events {
            let _ = writeln!(s, "  {e}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> pb::StatusReply {
        pb::StatusReply {
            pods: vec![
                pb::PodAllocation {
                    pod: "default/web-1".into(),
                    ipv4: "10.0.0.5".into(),
                    eni_id: "eni-a".into(),
                    if_name: "eth0".into(),
                    backend: "shared-ip".into(),
                    container_id: "c1".into(),
                    ..Default::default()
                },
                pb::PodAllocation {
                    pod: "default/web-10".into(),
                    ipv4: "10.0.0.6".into(),
                    ..Default::default()
                },
            ],
            enis: vec![pb::EniStatus {
                eni_id: "eni-a".into(),
                mac: "00:16:3e:00:00:01".into(),
                vswitch_id: "vsw-1".into(),
                ..Default::default()
            }],
            events: vec![
                "1 Normal pod default/web-1 AllocIPSucceed: Alloc IP 10.0.0.5 took 3ms".into(),
                "2 Normal pod default/web-10 AllocIPSucceed: Alloc IP 10.0.0.6 took 3ms".into(),
                "3 Warning pod default/gone AllocIPFailed: no IP".into(),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_is_found_with_its_eni_and_only_its_own_events() {
        let v = find(&reply(), &PodKey::new("default", "web-1")).unwrap();
        assert_eq!(v.interfaces.len(), 1);
        assert_eq!(
            v.interfaces[0].1.as_ref().map(|e| e.mac.as_str()),
            Some("00:16:3e:00:00:01")
        );
        assert_eq!(v.events.len(), 1, "{:?}", v.events);
        let text = render(&v);
        assert!(
            text.contains("10.0.0.5") && text.contains("vSwitch vsw-1"),
            "{text}"
        );
        assert_eq!(to_json(&v)["interfaces"][0]["eni"]["id"], "eni-a");
    }

    #[test]
    fn a_pod_known_only_by_its_events_is_shown_and_an_unknown_one_is_not() {
        let v = find(&reply(), &PodKey::new("default", "gone")).unwrap();
        assert!(v.interfaces.is_empty());
        assert!(render(&v).contains("holds no address"));
        assert_eq!(find(&reply(), &PodKey::new("default", "nope")), None);
    }
}
