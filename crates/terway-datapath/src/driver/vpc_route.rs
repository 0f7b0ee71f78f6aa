//! VPC route mode (reference §3.1): the pod IP comes from the node's PodCIDR (allocated by the daemon) and
//! the VPC route table forwards that CIDR to the node. Pod: `eth0` podIP/32, default via 169.254.1.1
//! onlink with a permanent neighbour; host: `cali…` with podIP/32 scope link. No ENI, no policy rules.

use super::common::{self, check_link, check_route};
use super::policy_route::teardown_veth;
use super::{qos, Driver, HostCtx, PodCtx, PodNetwork, SetupOutput};
use crate::error::{Context, Error, Result};
use crate::route::{self, Route};

/// The VPC-route veth driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VpcRoute;

impl Driver for VpcRoute {
    fn validate(&self, net: &PodNetwork) -> Result<()> {
        net.validate_common()?;
        if let (Some(ip), Some(cidr)) = (net.ipv4, net.subnet_v4) {
            if !cidr.contains(&ip) {
                return Err(Error::Invalid(format!(
                    "pod {}: {ip} is outside the node PodCIDR {cidr}",
                    net.pod
                )));
            }
        }
        Ok(())
    }

    async fn setup(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<SetupOutput> {
        let hv = net.host_veth();
        let what = || format!("set up veth {hv} for pod {}", net.pod);
        let pod_ips = net.pod_nets()?;
        let (host_link, pod_link) =
            common::create_veth_pair(host, pod, &hv, &net.if_name, net.mtu, &net.pod.container_id)
                .await
                .context(what)?;
        let host_mac = host_link
            .mac
            .ok_or_else(|| Error::LinkNotFound(format!("{hv} has no MAC")))?;
        common::setup_pod_gateway(pod, &pod_link, host_mac, net)
            .await
            .context(what)?;
        common::ensure_host_sysctls(host, &[&hv], net.ipv6.is_some()).context(what)?;
        for ip in &pod_ips {
            route::ensure_route(&host.nl, &Route::link_scope(*ip, host_link.index))
                .await
                .context(what)?;
        }
        common::finish_veth_setup(host, pod, net, &host_link, &pod_link)
            .await
            .context(what)
    }

    async fn check(&self, host: &HostCtx, pod: &PodCtx, net: &PodNetwork) -> Result<()> {
        let hv = net.host_veth();
        let host_link = check_link(&host.nl, &hv, Some(net.mtu)).await?;
        let pod_link = check_link(&pod.nl, &net.if_name, Some(net.mtu)).await?;
        if pod_link.parent_index != Some(host_link.index) {
            return Err(Error::Mismatch(format!(
                "{} in the pod is not the peer of {hv}",
                net.if_name
            )));
        }
        let host_mac = host_link
            .mac
            .ok_or_else(|| Error::Mismatch(format!("{hv} has no MAC")))?;
        common::check_pod_gateway(&pod.nl, &pod_link, host_mac, net).await?;
        common::check_host_sysctls(host, &[&hv])?;
        for ip in net.pod_nets()? {
            check_route(&host.nl, &Route::link_scope(ip, host_link.index)).await?;
        }
        qos::check_shaping(&pod.nl, &pod_link, net.bandwidth.egress).await?;
        qos::check_shaping(&host.nl, &host_link, net.bandwidth.ingress).await
    }

    async fn teardown(&self, host: &HostCtx, pod: Option<&PodCtx>, net: &PodNetwork) -> Result<()> {
        teardown_veth(host, pod, net).await
    }
}
