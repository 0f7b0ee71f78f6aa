//! The daemon's NetConf + the plugin configuration → the datapath's `PodNetwork`.

use std::net::IpAddr;

use cni_protocol::{CniError, NetConf as CniNetConf};
use ipnet::IpNet;
use terway_core::{Mode, PodBandwidth};
use terway_datapath::driver::{Bandwidth, EniRef, PodIdentity, PodNetwork};
use terway_datapath::MacAddr;
use terway_rpc::v1::{NetConf, NetworkMode};

use crate::config::PluginConf;

fn bad(pod: &PodIdentity, what: impl std::fmt::Display) -> CniError {
    CniError::daemon(format!(
        "terwayd answered with an unusable network config for pod {pod}: {what}"
    ))
}

fn opt_ip<T: std::str::FromStr>(
    s: &str,
    pod: &PodIdentity,
    field: &str,
) -> Result<Option<T>, CniError>
where
    T::Err: std::fmt::Display,
{
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    // Some producers put a prefix on single addresses; accept "a.b.c.d/32" too.
    let s = if field.ends_with("ip") || field.ends_with("gateway") {
        s.split('/').next().unwrap_or(s)
    } else {
        s
    };
    s.parse::<T>()
        .map(Some)
        .map_err(|e| bad(pod, format!("{field} {s:?}: {e}")))
}

fn cidrs(v: &[String], pod: &PodIdentity, field: &str) -> Result<Vec<IpNet>, CniError> {
    v.iter()
        .map(|s| {
            s.trim()
                .parse::<IpNet>()
                .map_err(|e| bad(pod, format!("{field} {s:?}: {e}")))
        })
        .collect()
}

/// The datapath mode of a reply.
pub fn mode_of(mode: i32) -> Result<Mode, CniError> {
    match NetworkMode::try_from(mode) {
        Ok(NetworkMode::SharedEni) => Ok(Mode::Shared),
        Ok(NetworkMode::ExclusiveEni) => Ok(Mode::Exclusive),
        Ok(NetworkMode::VpcRoute) => Ok(Mode::VpcRoute),
        _ => Err(CniError::daemon(format!(
            "terwayd answered with network mode {mode}, which this plugin does not handle"
        ))),
    }
}

/// Bandwidth: `runtimeConfig.bandwidth` (bits/s) overrides the daemon's QoS (bytes/s, from annotations).
pub fn bandwidth(nc: &NetConf, cni: &CniNetConf) -> Bandwidth {
    let q = nc.qos.as_ref();
    let base = PodBandwidth {
        ingress: q.map(|q| q.ingress_bps).filter(|v| *v > 0),
        egress: q.map(|q| q.egress_bps).filter(|v| *v > 0),
    };
    let rc = cni.runtime_config.bandwidth.as_ref();
    let bw = base.with_runtime_config(
        rc.and_then(|b| b.ingress_rate),
        rc.and_then(|b| b.egress_rate),
    );
    Bandwidth {
        ingress: bw.ingress,
        egress: bw.egress,
    }
}

/// Build the datapath request for one NetConf of a reply.
pub fn pod_network(
    pod: &PodIdentity,
    nc: &NetConf,
    node_ip: &str,
    conf: &PluginConf,
    cni: &CniNetConf,
    default_ifname: &str,
) -> Result<PodNetwork, CniError> {
    let ips = nc.pod_ip.clone().unwrap_or_default();
    let subnet = nc.subnet.clone().unwrap_or_default();
    let gw = nc.gateway.clone().unwrap_or_default();
    let node_ip: Option<IpAddr> = opt_ip(node_ip, pod, "node_ip")?;
    let eni = match &nc.eni {
        Some(e) if !e.mac.is_empty() => {
            let mac: MacAddr = e
                .mac
                .parse()
                .map_err(|err| bad(pod, format!("ENI MAC: {err}")))?;
            let egw = e.gateway.clone().unwrap_or_default();
            Some(EniRef {
                mac,
                gateway: opt_ip(&egw.ipv4, pod, "eni gateway")?,
                gateway_v6: opt_ip(&egw.ipv6, pod, "eni ipv6 gateway")?,
                primary_ip: opt_ip(&e.primary_ip, pod, "eni primary_ip")?,
            })
        }
        _ => None,
    };
    let mut host_stack = cidrs(&nc.host_stack_cidrs, pod, "host_stack_cidrs")?;
    for c in &conf.terway.host_stack_cidrs {
        if !host_stack.contains(c) {
            host_stack.push(*c);
        }
    }
    let mtu = if nc.mtu > 0 { nc.mtu } else { conf.terway.mtu };
    Ok(PodNetwork {
        pod: pod.clone(),
        if_name: if nc.if_name.is_empty() {
            default_ifname.to_string()
        } else {
            nc.if_name.clone()
        },
        ipv4: opt_ip(&ips.ipv4, pod, "pod ip")?,
        ipv6: opt_ip(&ips.ipv6, pod, "pod ipv6 ip")?,
        subnet_v4: opt_ip(&subnet.ipv4, pod, "subnet")?,
        gateway_v4: opt_ip(&gw.ipv4, pod, "gateway")?,
        eni,
        node_ip,
        service_cidrs: cidrs(&nc.service_cidrs, pod, "service_cidrs")?,
        host_stack_cidrs: host_stack,
        extra_routes: cidrs(&nc.extra_routes, pod, "extra_routes")?,
        default_route: nc.default_route,
        mtu,
        bandwidth: bandwidth(nc, cni),
        disable_host_peer: conf.terway.disable_host_peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use terway_rpc::v1::{EniInfo, IpSet, Qos};

    fn conf(extra: &str) -> (PluginConf, CniNetConf) {
        let raw = format!(
            r#"{{"cniVersion":"1.0.0","name":"terway","type":"terway","host_stack_cidrs":["169.254.20.10/32"]{extra}}}"#
        );
        let c = CniNetConf::parse(raw.as_bytes()).unwrap();
        (PluginConf::from_netconf(&c).unwrap(), c)
    }

    fn nc() -> NetConf {
        NetConf {
            if_name: String::new(),
            pod_ip: Some(IpSet {
                ipv4: "10.0.0.5".into(),
                ipv6: String::new(),
            }),
            subnet: Some(IpSet {
                ipv4: "10.0.0.0/24".into(),
                ipv6: String::new(),
            }),
            gateway: Some(IpSet {
                ipv4: "10.0.0.253".into(),
                ipv6: String::new(),
            }),
            eni: Some(EniInfo {
                eni_id: "eni-1".into(),
                mac: "02:16:3E:00:00:01".into(),
                gateway: Some(IpSet {
                    ipv4: "10.0.0.253".into(),
                    ipv6: String::new(),
                }),
                primary_ip: "10.0.0.10".into(),
                ..Default::default()
            }),
            service_cidrs: vec!["172.21.0.0/20".into()],
            default_route: true,
            qos: Some(Qos {
                ingress_bps: 1000,
                egress_bps: 2000,
                network_priority: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn netconf_becomes_pod_network() {
        let (p, c) = conf("");
        let pod = PodIdentity {
            namespace: "default".into(),
            name: "web".into(),
            container_id: "c1".into(),
        };
        let n = pod_network(&pod, &nc(), "10.0.0.10", &p, &c, "eth0").unwrap();
        assert_eq!(n.if_name, "eth0");
        assert_eq!(n.ipv4.unwrap().to_string(), "10.0.0.5");
        assert_eq!(n.eni.as_ref().unwrap().mac.to_string(), "02:16:3e:00:00:01");
        assert_eq!(n.mtu, 1500);
        assert_eq!(n.host_stack_cidrs.len(), 1);
        assert_eq!(
            n.bandwidth,
            Bandwidth {
                ingress: Some(1000),
                egress: Some(2000)
            }
        );
        let mut broken = nc();
        broken.pod_ip = Some(IpSet {
            ipv4: "10.0.0.999".into(),
            ipv6: String::new(),
        });
        assert_eq!(
            pod_network(&pod, &broken, "", &p, &c, "eth0")
                .unwrap_err()
                .code,
            101
        );
    }

    #[test]
    fn runtime_bandwidth_in_bits_overrides_qos() {
        let (p, c) =
            conf(r#","runtimeConfig":{"bandwidth":{"ingressRate":8000000,"egressRate":16000000}}"#);
        let pod = PodIdentity::default();
        let n = pod_network(&pod, &nc(), "", &p, &c, "eth0").unwrap();
        assert_eq!(
            n.bandwidth,
            Bandwidth {
                ingress: Some(1_000_000),
                egress: Some(2_000_000)
            }
        );
        assert_eq!(mode_of(1).unwrap(), Mode::Shared);
        assert!(mode_of(0).is_err());
    }
}
