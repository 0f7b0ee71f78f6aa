//! GC (CNI 1.1) and STATUS.
//!
//! GC removes host-side leftovers of containers the runtime no longer knows: `cali*` veths and the
//! 512/2048 rules of pod IPs that belong to no valid attachment. Which pod a valid container id is comes from
//! the daemon's status (pod name → host veth name, IPv4 → rules); when the daemon cannot say, GC does nothing
//! and reports "try again later" rather than guess.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use cni_protocol::{CniError, GcRequest};
use ipnet::IpNet;
use terway_datapath::driver::{
    self, FROM_CONTAINER_PRIORITY, HOST_VETH_PREFIX, TO_CONTAINER_PRIORITY,
};
use terway_datapath::{link, rule, ErrorList};
use terway_rpc::v1::{PodAllocation, StatusRequest};

use crate::config::PluginConf;
use crate::daemon::{self, map_status};
use crate::{datapath_error, host_ctx};

/// What must survive a GC.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// Host veth names of valid attachments.
    pub veths: HashSet<String>,
    /// Pod IPv4s of valid attachments.
    pub ips: HashSet<IpAddr>,
}

/// Pure: the host state to keep, from the valid attachments and the daemon's allocations.
pub fn keep_set(valid: &[(String, String)], pods: &[PodAllocation]) -> Keep {
    let mut k = Keep::default();
    for (cid, ifname) in valid {
        for p in pods.iter().filter(|p| &p.container_id == cid) {
            if let Some((ns, name)) = p.pod.split_once('/') {
                k.veths.insert(driver::host_veth_name(ns, name, ifname));
            }
            if let Ok(ip) = p.ipv4.parse::<IpAddr>() {
                k.ips.insert(ip);
            }
        }
    }
    k
}

fn rule_ip(r: &rule::Rule) -> Option<IpAddr> {
    let host = |n: &IpNet| (n.prefix_len() == n.max_prefix_len()).then_some(n.addr());
    match r.priority {
        TO_CONTAINER_PRIORITY => r.dst.as_ref().and_then(host).filter(|_| r.src.is_none()),
        FROM_CONTAINER_PRIORITY => r.src.as_ref().and_then(host).filter(|_| r.dst.is_none()),
        _ => None,
    }
}

/// Run GC.
pub async fn gc(req: &GcRequest, conf: &PluginConf) -> Result<(), CniError> {
    let mut d = daemon::connect(
        Path::new(&conf.terway.daemon_socket),
        conf.terway.daemon_timeout(),
    )
    .await?;
    let status = d
        .status
        .get_status(StatusRequest {})
        .await
        .map_err(|s| map_status("read pod allocations for GC", &s))?
        .into_inner();
    let valid: Vec<(String, String)> = req
        .valid_attachments
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let keep = keep_set(&valid, &status.pods);
    let host = host_ctx(conf)?;
    crate::sweep_retired(&host, true).await;
    let mut errs = ErrorList::new();
    for l in link::list_links(&host.nl).await.map_err(datapath_error)? {
        if l.name.starts_with(HOST_VETH_PREFIX)
            && l.kind.as_deref() == Some("veth")
            && !keep.veths.contains(&l.name)
        {
            tracing::info!("GC: deleting leftover host veth {}", l.name);
            errs.collect(link::remove_link(&host.nl, l.index).await);
        }
    }
    let stale = |r: &rule::Rule| rule_ip(r).is_some_and(|ip| !keep.ips.contains(&ip));
    errs.collect(
        rule::remove_rules_where(&host.nl, true, stale)
            .await
            .map(|n| {
                if n > 0 {
                    tracing::info!("GC: deleted {n} leftover pod rules");
                }
            }),
    );
    errs.into_result().map_err(datapath_error)
}

/// Run STATUS: ready when the daemon answers; code 50 otherwise.
pub async fn status(conf: &PluginConf) -> Result<(), CniError> {
    let unavailable = |m: String| {
        CniError::new(
            cni_protocol::codes::PLUGIN_NOT_AVAILABLE,
            m,
            "terwayd must be running on this node",
        )
    };
    let mut d = daemon::connect(
        Path::new(&conf.terway.daemon_socket),
        conf.terway.daemon_timeout(),
    )
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    d.status
        .get_status(StatusRequest {})
        .await
        .map_err(|s| unavailable(format!("terwayd status: {}", s.message())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_set_follows_valid_attachments_only() {
        let pods = vec![
            PodAllocation {
                pod: "default/a".into(),
                container_id: "c1".into(),
                ipv4: "10.0.0.5".into(),
                ..Default::default()
            },
            PodAllocation {
                pod: "default/b".into(),
                container_id: "c2".into(),
                ipv4: "10.0.0.6".into(),
                ..Default::default()
            },
        ];
        let k = keep_set(&[("c1".into(), "eth0".into())], &pods);
        assert!(k
            .veths
            .contains(&driver::host_veth_name("default", "a", "eth0")));
        assert!(!k
            .veths
            .contains(&driver::host_veth_name("default", "b", "eth0")));
        assert_eq!(k.ips, HashSet::from(["10.0.0.5".parse().unwrap()]));
        assert_eq!(keep_set(&[], &pods), Keep::default());
    }

    #[test]
    fn only_our_rule_shapes_are_candidates() {
        let ip: IpNet = "10.0.0.5/32".parse().unwrap();
        assert_eq!(rule_ip(&rule::Rule::to_dst(512, ip, 254)), Some(ip.addr()));
        assert_eq!(
            rule_ip(&rule::Rule::from_src(2048, ip, 1005)),
            Some(ip.addr())
        );
        assert_eq!(rule_ip(&rule::Rule::from_src(600, ip, 100)), None);
        assert_eq!(
            rule_ip(&rule::Rule::from_src(
                2048,
                "10.0.0.0/24".parse().unwrap(),
                1005
            )),
            None
        );
    }
}
