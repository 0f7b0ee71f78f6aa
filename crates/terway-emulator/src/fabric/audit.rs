//! Does the kernel say what the cloud says? Compares the emulator's view (attached ENIs, their addresses,
//! route entries) with the fabric's model and with the routes actually present in the vpc netns. Used by
//! `terway-lab check` and the lab tests after a run settles: any difference is a fabric or hook bug.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use terway_cloud::types::{EniStatus, NetworkInterface};

use super::topology::Topology;

/// Every difference between the cloud (`enis`, `route_entries`), the model and the kernel routes.
pub fn differences(
    topo: &Topology,
    enis: &[NetworkInterface],
    route_entries: &[(Ipv4Net, String)],
    kernel: &BTreeMap<Ipv4Net, String>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let attached: BTreeMap<&str, &NetworkInterface> = enis
        .iter()
        .filter(|e| e.status == EniStatus::InUse)
        .filter(|e| {
            e.instance_id
                .as_ref()
                .is_some_and(|i| topo.nodes.contains_key(i))
        })
        .map(|e| (e.id.as_str(), e))
        .collect();
    for (id, eni) in &attached {
        let Some(port) = topo.ports.get(*id) else {
            diffs.push(format!(
                "ENI {id} is InUse on {:?} but has no link",
                eni.instance_id
            ));
            continue;
        };
        if eni.instance_id.as_deref() != Some(port.instance_id.as_str()) {
            diffs.push(format!(
                "ENI {id} is attached to {:?} but wired to {}",
                eni.instance_id, port.instance_id
            ));
        }
        let cloud: BTreeSet<Ipv4Addr> = eni.private_ips.iter().map(|p| p.address).collect();
        if cloud != port.ips {
            diffs.push(format!(
                "ENI {id}: cloud has {cloud:?}, fabric routes {:?}",
                port.ips
            ));
        }
    }
    // Between the attach hook and the InUse flip (and during a detach) a link legitimately exists.
    let wired_ok: BTreeSet<&str> = enis
        .iter()
        .filter(|e| {
            matches!(
                e.status,
                EniStatus::InUse | EniStatus::Attaching | EniStatus::Detaching
            )
        })
        .map(|e| e.id.as_str())
        .collect();
    for (id, port) in &topo.ports {
        if !wired_ok.contains(id.as_str()) {
            diffs.push(format!(
                "link {} of ENI {id} exists but the ENI is not InUse",
                port.vpc_ifname
            ));
        }
        for ip in &port.ips {
            match kernel.get(&Ipv4Net::from(*ip)) {
                Some(dev) if *dev == port.vpc_ifname => {}
                Some(dev) => diffs.push(format!(
                    "{ip} of ENI {id} is routed via {dev}, not {}",
                    port.vpc_ifname
                )),
                None => diffs.push(format!("{ip} of ENI {id} has no route in the vpc netns")),
            }
        }
    }
    let owned: BTreeSet<Ipv4Net> = topo
        .ports
        .values()
        .flat_map(|p| p.ips.iter().map(|ip| Ipv4Net::from(*ip)))
        .collect();
    let cloud_routes: BTreeMap<Ipv4Net, &str> = route_entries
        .iter()
        .map(|(d, i)| (*d, i.as_str()))
        .collect();
    for (dst, dev) in kernel {
        if !owned.contains(dst) && !cloud_routes.contains_key(dst) {
            diffs.push(format!("stale route {dst} via {dev} in the vpc netns"));
        }
    }
    for (dst, inst) in &cloud_routes {
        match topo.route_entries.get(dst) {
            Some(i) if i == inst => {
                let expected = topo.primary_port(inst).map(|p| p.vpc_ifname.as_str());
                if kernel.get(dst).map(String::as_str) != expected {
                    diffs.push(format!(
                        "route entry {dst} → {inst} is not in the kernel via {expected:?}"
                    ));
                }
            }
            _ => diffs.push(format!(
                "route entry {dst} → {inst} exists in the cloud but not in the fabric"
            )),
        }
    }
    for (dst, inst) in &topo.route_entries {
        if !cloud_routes.contains_key(dst) {
            diffs.push(format!(
                "fabric routes {dst} → {inst} but the cloud has no such entry"
            ));
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::topology::{EniPort, NodeEntry};
    use std::collections::BTreeMap as Map;
    use terway_cloud::types::{EniType, PrivateIp};

    fn eni(id: &str, inst: &str, ips: &[&str]) -> NetworkInterface {
        NetworkInterface {
            id: id.into(),
            mac: "00:16:3e:00:00:01".into(),
            status: EniStatus::InUse,
            eni_type: EniType::Secondary,
            vswitch_id: "vsw".into(),
            vpc_id: "vpc".into(),
            zone_id: "z".into(),
            instance_id: Some(inst.into()),
            trunk_eni_id: None,
            primary_ip: ips[0].parse().unwrap(),
            private_ips: ips
                .iter()
                .map(|a| PrivateIp {
                    address: a.parse().unwrap(),
                    primary: false,
                })
                .collect(),
            ipv6_addresses: vec![],
            security_group_ids: vec![],
            tags: Map::new(),
        }
    }

    fn topo() -> Topology {
        let mut t = Topology::default();
        t.nodes.insert(
            "i-1".into(),
            NodeEntry {
                instance_id: "i-1".into(),
                netns: "n".into(),
                primary_eni: "eni-p".into(),
                primary_ip: "10.0.0.1".parse().unwrap(),
            },
        );
        t.ports.insert(
            "eni-p".into(),
            EniPort {
                eni_id: "eni-p".into(),
                instance_id: "i-1".into(),
                mac: "m".into(),
                primary: true,
                node_ifname: "eth0".into(),
                vpc_ifname: "eni1".into(),
                ips: ["10.0.0.1".parse().unwrap()].into(),
                security_groups: vec![],
            },
        );
        t
    }

    #[test]
    fn agreement_has_no_differences_and_each_kind_of_drift_is_named() {
        let t = topo();
        let kernel: Map<Ipv4Net, String> =
            [("10.0.0.1/32".parse().unwrap(), "eni1".to_string())].into();
        assert!(differences(&t, &[eni("eni-p", "i-1", &["10.0.0.1"])], &[], &kernel).is_empty());
        // The cloud assigned an address the fabric never routed.
        let d = differences(
            &t,
            &[eni("eni-p", "i-1", &["10.0.0.1", "10.0.0.9"])],
            &[],
            &kernel,
        );
        assert!(d[0].contains("10.0.0.9"), "{d:?}");
        // A route left behind in the kernel.
        let mut k2 = kernel.clone();
        k2.insert("10.0.0.7/32".parse().unwrap(), "eni4".into());
        let d = differences(&t, &[eni("eni-p", "i-1", &["10.0.0.1"])], &[], &k2);
        assert!(
            d.iter().any(|x| x.contains("stale route 10.0.0.7")),
            "{d:?}"
        );
        // An attached ENI without a link, and a route entry the fabric never installed.
        let d = differences(
            &t,
            &[
                eni("eni-p", "i-1", &["10.0.0.1"]),
                eni("eni-x", "i-1", &["10.0.0.5"]),
            ],
            &[("172.20.0.0/24".parse().unwrap(), "i-1".into())],
            &kernel,
        );
        assert!(
            d.iter()
                .any(|x| x.contains("eni-x") && x.contains("no link")),
            "{d:?}"
        );
        assert!(d.iter().any(|x| x.contains("172.20.0.0/24")), "{d:?}");
    }
}
