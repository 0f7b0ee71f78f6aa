//! A throwaway node for kernel tests: a `host` namespace whose ENI stand-in (a veth with a chosen MAC) is
//! wired to a `vpc` namespace acting as the vSwitch gateway and as a peer behind it, plus pod namespaces.
//! Everything is named with a random suffix and deleted on drop, so tests can run in parallel.
//!
//! Addresses (all inside the namespaces): vSwitch 10.<n>.0.0/24 with gateway .253, node primary IP .10 on the
//! ENI, a VPC peer at .100. The VPC side learns pod IPs the way the cloud does: a permanent neighbour per IP
//! pointing at the ENI's MAC ([`Testbed::vpc_learn`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::addr::{self, Scope};
use crate::error::Result;
use crate::link::{self, MacAddr};
use crate::neigh;
use crate::netns::Netns;
use crate::nl::Netlink;

/// A host + vpc namespace pair with one ENI stand-in.
pub struct Testbed {
    /// Random suffix used in every name.
    pub suffix: String,
    /// Name of the host namespace.
    pub host_name: String,
    /// Name of the vpc namespace.
    pub vpc_name: String,
    /// Host namespace.
    pub host: Netns,
    /// Netlink in the host namespace.
    pub host_nl: Netlink,
    /// vpc namespace.
    pub vpc: Netns,
    /// Netlink in the vpc namespace.
    pub vpc_nl: Netlink,
    /// Name of the ENI link in the host namespace.
    pub eni_name: String,
    /// ENI MAC.
    pub eni_mac: MacAddr,
    /// vSwitch CIDR.
    pub vswitch: Ipv4Net,
    /// vSwitch gateway (.253).
    pub gateway: Ipv4Addr,
    /// Node primary IP (.10).
    pub node_ip: Ipv4Addr,
    /// Peer behind the ENI (.100).
    pub peer_ip: Ipv4Addr,
    /// IPv6 vSwitch CIDR `fd00:<n>::/64`.
    pub vswitch6: Ipv6Net,
    /// IPv6 vSwitch gateway (`…::fffd`).
    pub gateway6: Ipv6Addr,
    /// IPv6 peer behind the ENI (`…::100`).
    pub peer_ip6: Ipv6Addr,
    extra_ns: std::sync::Mutex<Vec<String>>,
}

impl Testbed {
    /// Build the host/vpc pair; `octet` picks the 10.<octet>.0.0/24 vSwitch.
    pub async fn new(octet: u8) -> Result<Self> {
        let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let host_name = format!("tbh{suffix}");
        let vpc_name = format!("tbv{suffix}");
        let host = Netns::create_named(&host_name)?;
        let vpc = Netns::create_named(&vpc_name)?;
        let host_nl = Netlink::open(&host)?;
        let vpc_nl = Netlink::open(&vpc)?;
        let vswitch = Ipv4Net::new(Ipv4Addr::new(10, octet, 0, 0), 24).unwrap_or_default();
        let tb = Testbed {
            eni_name: "eth1".into(),
            eni_mac: MacAddr([0x02, 0x16, 0x3e, octet, (rand::random::<u8>()) | 1, 0x01]),
            gateway: Ipv4Addr::new(10, octet, 0, 253),
            node_ip: Ipv4Addr::new(10, octet, 0, 10),
            peer_ip: Ipv4Addr::new(10, octet, 0, 100),
            vswitch,
            vswitch6: Ipv6Net::new(Ipv6Addr::new(0xfd00, octet as u16, 0, 0, 0, 0, 0, 0), 64)
                .unwrap_or_default(),
            gateway6: Ipv6Addr::new(0xfd00, octet as u16, 0, 0, 0, 0, 0, 0xfffd),
            peer_ip6: Ipv6Addr::new(0xfd00, octet as u16, 0, 0, 0, 0, 0, 0x100),
            suffix,
            host_name,
            vpc_name,
            host,
            host_nl,
            vpc,
            vpc_nl,
            extra_ns: std::sync::Mutex::new(Vec::new()),
        };
        for nl in [&tb.host_nl, &tb.vpc_nl] {
            let lo = link::require_link(nl, "lo").await?;
            link::set_up(nl, lo.index).await?;
        }
        // The ENI's peer in the vpc namespace is the vSwitch port; it must be created from the vpc side so the
        // ENI end can carry the chosen MAC as the peer.
        link::create_veth(
            &tb.vpc_nl,
            "vsw0",
            &tb.eni_name,
            Some(&tb.host),
            None,
            Some(tb.eni_mac),
        )
        .await?;
        let vsw = link::require_link(&tb.vpc_nl, "vsw0").await?;
        link::set_up(&tb.vpc_nl, vsw.index).await?;
        for ip in [tb.gateway, tb.peer_ip] {
            addr::ensure_addr(
                &tb.vpc_nl,
                vsw.index,
                IpNet::V4(Ipv4Net::new(ip, 24).unwrap_or_default()),
                Scope::Universe,
            )
            .await?;
        }
        for ip in [tb.gateway6, tb.peer_ip6] {
            addr::ensure_addr(
                &tb.vpc_nl,
                vsw.index,
                IpNet::V6(Ipv6Net::new(ip, 64).unwrap_or_default()),
                Scope::Universe,
            )
            .await?;
        }
        let eni = link::require_link(&tb.host_nl, &tb.eni_name).await?;
        link::set_up(&tb.host_nl, eni.index).await?;
        Ok(tb)
    }

    /// Tell the vpc side that `ip` lives behind the ENI (what the cloud's vSwitch knows).
    pub async fn vpc_learn(&self, ip: impl Into<IpAddr>) -> Result<()> {
        let vsw = link::require_link(&self.vpc_nl, "vsw0").await?;
        neigh::ensure_permanent_neighbour(&self.vpc_nl, vsw.index, ip.into(), self.eni_mac).await
    }

    /// Create a pod namespace (deleted with the testbed); returns its name and path.
    pub fn pod_ns(&self, tag: &str) -> Result<(String, std::path::PathBuf)> {
        let name = format!("tbp{}{tag}", self.suffix);
        Netns::create_named(&name)?;
        if let Ok(mut v) = self.extra_ns.lock() {
            v.push(name.clone());
        }
        Ok((name.clone(), Netns::named_path(&name)))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let extra = self.extra_ns.lock().map(|v| v.clone()).unwrap_or_default();
        for n in extra.iter().chain([&self.host_name, &self.vpc_name]) {
            let _ = Netns::delete_named(n);
        }
    }
}

/// Load an nftables ruleset in the namespace named `ns_name` only, e.g. to make a test namespace track
/// connections; never touches the caller's namespace.
pub fn nft_in(ns_name: &str, ruleset: &str) -> std::io::Result<()> {
    let ns = Netns::open_named(ns_name).map_err(|e| std::io::Error::other(e.to_string()))?;
    crate::nft::apply(&ns, ruleset, "test ruleset")
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// An open TCP connection: a listener on `bind` inside `server`, and `client` connecting to `dial` (the same
/// address, or one that is DNATed to it). Both ends are returned so the flow stays alive.
pub fn tcp_pair(
    server: &Netns,
    client: &Netns,
    bind: SocketAddr,
    dial: SocketAddr,
) -> std::io::Result<(TcpStream, TcpStream)> {
    let in_ns = |e: crate::Error| std::io::Error::other(e.to_string());
    let listener = server
        .run(move || TcpListener::bind(bind))
        .map_err(in_ns)??;
    let c = client
        .run(move || TcpStream::connect_timeout(&dial, Duration::from_secs(3)))
        .map_err(in_ns)?
        .map_err(|e| std::io::Error::new(e.kind(), format!("connect {dial}: {e}")))?;
    let (s, _) = listener.accept()?;
    Ok((c, s))
}
