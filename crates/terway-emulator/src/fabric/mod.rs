//! The netns fabric: turns the emulator's state into real links so API calls and packets never disagree.
//!
//! One `vpc` network namespace is the VPC router. It owns every vSwitch gateway (the third-from-last address
//! of the CIDR, on its `lo`), the service addresses (metadata `100.100.100.200`, the OpenAPI endpoint), a /32
//! route plus a permanent neighbour for every private IP assigned to an attached ENI (through that ENI's
//! link), custom route entries (VPC-route mode: a node's PodCIDR via its primary ENI) and anti-spoofing in
//! nftables. Each node is a network namespace whose `eth0` is its primary ENI; every ENI is a veth pair,
//! created inside the vpc netns with its peer placed straight into the node netns (nothing ever exists in the
//! root namespace), the node end carrying the ENI's MAC. Attaching an ENI makes `ethN` appear in the node
//! (down and unconfigured, as a hot-plugged NIC); detaching removes it, wherever the CNI moved it.
//!
//! Links, addresses, routes and neighbours go through terway-datapath's netlink primitives (see
//! [`kernel`]); the anti-spoofing table is one atomic `nft` transaction per update (see [`nft`]).
//! The emulator drives the fabric through [`crate::hook::FabricHook`]; the lab creates the namespaces of its
//! nodes with [`Fabric::add_node`] and tears everything down with [`Fabric::destroy`] (also on drop).

mod audit;
mod cmd;
mod error;
mod hook_impl;
mod kernel;
mod nft;
mod topology;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, MutexGuard};

use ipnet::Ipv4Net;
use serde::Serialize;
use terway_cloud::types::{EniType, NetworkInterface};

pub use error::{FabricError, FabricResult};
pub use topology::{vswitch_gateway, EniPort, NodeEntry, Topology};

/// What the fabric needs to know up front.
#[derive(Debug, Clone)]
pub struct FabricConfig {
    /// Name of the vpc netns to create (unique per lab, e.g. `tl1a2b3c-vpc`).
    pub vpc_netns: String,
    /// vSwitches of the VPC: id → CIDR (their gateways live in the vpc netns).
    pub vswitches: BTreeMap<String, Ipv4Net>,
    /// Extra local addresses of the vpc netns, where the lab binds the metadata and OpenAPI listeners.
    pub service_addrs: Vec<Ipv4Addr>,
}

/// A host in the VPC outside every node (a "VPC resource" such as a database), for pod → VPC tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutsideHost {
    /// Its network namespace.
    pub netns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its subnet (routed by the vpc router, not a vSwitch of the emulator).
    pub cidr: Ipv4Net,
}

struct State {
    topo: Topology,
    outside: Vec<OutsideHost>,
    destroyed: bool,
}

/// The fabric of one emulated VPC. All methods are synchronous and serialized: one update at a time.
pub struct Fabric {
    config: FabricConfig,
    state: Mutex<State>,
    kernel: kernel::Kernel,
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("vpc_netns", &self.config.vpc_netns)
            .finish()
    }
}

fn v4(ips: &[IpAddr]) -> Vec<Ipv4Addr> {
    ips.iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            // The fabric routes IPv4 only; IPv6 addresses are accepted by the API but carry no traffic here.
            IpAddr::V6(_) => None,
        })
        .collect()
}

impl Fabric {
    /// Create the vpc netns with forwarding, proxy ARP (the VPC answers ARP for every routed address, as its
    /// SDN does), the vSwitch gateways and service addresses, and an empty anti-spoofing table.
    pub fn create(config: FabricConfig) -> FabricResult<Self> {
        let ns = config.vpc_netns.clone();
        kernel::netns_add(&ns)?;
        let kernel = match kernel::Kernel::start() {
            Ok(k) => k,
            Err(e) => {
                let _ = kernel::netns_del(&ns);
                return Err(e);
            }
        };
        let fabric = Fabric {
            config,
            state: Mutex::new(State {
                topo: Topology::default(),
                outside: Vec::new(),
                destroyed: false,
            }),
            kernel,
        };
        // From here on, a failure drops `fabric`, which deletes the namespace again.
        kernel::sysctls(
            &ns,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.default.proxy_arp", "1"),
            ],
        )?;
        let mut addrs: Vec<Ipv4Addr> = fabric
            .config
            .vswitches
            .values()
            .map(|c| vswitch_gateway(*c))
            .collect();
        addrs.extend(fabric.config.service_addrs.iter().copied());
        let vpc = ns.clone();
        fabric
            .kernel
            .exec(move || kernel::lo_with_addrs(vpc, addrs))?;
        fabric.apply_nft(&fabric.lock().topo)?;
        Ok(fabric)
    }

    /// Name of the vpc netns.
    pub fn vpc_netns(&self) -> &str {
        &self.config.vpc_netns
    }

    /// The gateway of a vSwitch, if the fabric knows it.
    pub fn gateway_of(&self, vswitch_id: &str) -> Option<Ipv4Addr> {
        self.config
            .vswitches
            .get(vswitch_id)
            .map(|c| vswitch_gateway(*c))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another update leaves the model as it was before that update's kernel step; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply_nft(&self, topo: &Topology) -> FabricResult<()> {
        cmd::nft_apply(
            &self.config.vpc_netns,
            &nft::render(&topo.spoof_rules(), &topo.sg_chains()),
            "update anti-spoofing and security groups",
        )
    }

    fn unplug_quietly(&self, vpc_ifname: &str) {
        let (vpc, vpc_if) = (self.config.vpc_netns.clone(), vpc_ifname.to_string());
        if let Err(e) = self.kernel.exec(move || kernel::unplug(vpc, vpc_if)) {
            tracing::warn!(link = vpc_ifname, error = %e, "fabric: rolling back a link");
        }
    }

    /// Create a node: netns `netns` whose `eth0` is the instance's primary ENI, configured as on a booted
    /// instance (primary IP with the vSwitch prefix, default route via the vSwitch gateway).
    pub fn add_node(&self, netns: &str, primary: &NetworkInterface) -> FabricResult<NodeEntry> {
        let instance_id = primary.instance_id.clone().ok_or_else(|| {
            FabricError::Invalid(format!(
                "primary ENI {} is not attached to an instance",
                primary.id
            ))
        })?;
        let cidr = *self
            .config
            .vswitches
            .get(&primary.vswitch_id)
            .ok_or_else(|| {
                FabricError::Invalid(format!(
                    "vSwitch {} of ENI {} is not in the fabric",
                    primary.vswitch_id, primary.id
                ))
            })?;
        let mut st = self.lock();
        if st.topo.nodes.contains_key(&instance_id) {
            return Err(FabricError::Invalid(format!(
                "instance {instance_id} already has a node"
            )));
        }
        kernel::netns_add(netns)?;
        let node = NodeEntry {
            instance_id: instance_id.clone(),
            netns: netns.to_string(),
            primary_eni: primary.id.clone(),
            primary_ip: primary.primary_ip,
        };
        st.topo.nodes.insert(instance_id.clone(), node.clone());
        let vpc_ifname = st.topo.alloc_vpc_ifname();
        let peer = (self.config.vpc_netns.clone(), vpc_ifname.clone());
        let port = EniPort {
            eni_id: primary.id.clone(),
            instance_id: instance_id.clone(),
            mac: primary.mac.clone(),
            primary: true,
            node_ifname: "eth0".into(),
            vpc_ifname,
            ips: primary.private_ips.iter().map(|p| p.address).collect(),
            security_groups: primary.security_group_ids.clone(),
        };
        let result = self.plug(&mut st.topo, &node, port).and_then(|()| {
            let (ns, ip, prefix, gw) = (
                netns.to_string(),
                primary.primary_ip,
                cidr.prefix_len(),
                vswitch_gateway(cidr),
            );
            self.kernel
                .exec(move || kernel::configure_host(ns, ip, prefix, gw, peer))
        });
        if let Err(e) = result {
            if let Some(port) = st.topo.ports.remove(&primary.id) {
                self.unplug_quietly(&port.vpc_ifname);
            }
            st.topo.nodes.remove(&instance_id);
            let _ = kernel::netns_del(netns);
            return Err(e);
        }
        Ok(node)
    }

    /// Wire one ENI: veth pair in the vpc netns with the peer created directly in the node netns, routes
    /// and neighbours for its addresses, then the anti-spoofing table. Rolls the link back on failure.
    fn plug(&self, topo: &mut Topology, node: &NodeEntry, port: EniPort) -> FabricResult<()> {
        let (vpc, node_ns, vpc_if, node_if, mac) = (
            self.config.vpc_netns.clone(),
            node.netns.clone(),
            port.vpc_ifname.clone(),
            port.node_ifname.clone(),
            port.mac.clone(),
        );
        let ips: Vec<Ipv4Addr> = port.ips.iter().copied().collect();
        if let Err(e) = self
            .kernel
            .exec(move || kernel::plug(vpc, node_ns, vpc_if, node_if, mac, ips))
        {
            // A half-made pair (created, then a route failed) must not stay behind.
            self.unplug_quietly(&port.vpc_ifname);
            return Err(e);
        }
        let eni_id = port.eni_id.clone();
        let vpc_ifname = port.vpc_ifname.clone();
        topo.ports.insert(eni_id.clone(), port);
        if let Err(e) = self.apply_nft(topo) {
            topo.ports.remove(&eni_id);
            self.unplug_quietly(&vpc_ifname);
            return Err(e);
        }
        Ok(())
    }

    /// An ENI finished attaching: make its link appear in the node (idempotent for an already wired ENI).
    pub fn attach_eni(&self, instance_id: &str, eni: &NetworkInterface) -> FabricResult<()> {
        if eni.eni_type == EniType::Member {
            return Err(FabricError::Invalid(format!(
                "ENI {}: trunk member ENIs are not emulated by the fabric; use Secondary ENIs",
                eni.id
            )));
        }
        let mut st = self.lock();
        let node = st.topo.nodes.get(instance_id).cloned().ok_or_else(|| {
            FabricError::Unknown(format!(
                "instance {instance_id} has no node netns; create it with add_node first"
            ))
        })?;
        let mut ips: BTreeSet<Ipv4Addr> = eni.private_ips.iter().map(|p| p.address).collect();
        if let Some(pending) = st.topo.detached_ips.remove(&eni.id) {
            ips.extend(pending);
        }
        if let Some(existing) = st.topo.ports.get(&eni.id).cloned() {
            if existing.instance_id == instance_id {
                let missing: Vec<Ipv4Addr> = ips.difference(&existing.ips).copied().collect();
                drop(st);
                return self.assign_ips(&eni.id, &missing);
            }
            return Err(FabricError::Invalid(format!(
                "ENI {} is wired to {}, cannot attach it to {instance_id}",
                eni.id, existing.instance_id
            )));
        }
        let node_ns = node.netns.clone();
        let present = self.kernel.exec(move || kernel::link_names(node_ns))?;
        let node_ifname = st.topo.node_ifname_for(instance_id, &present);
        let vpc_ifname = st.topo.alloc_vpc_ifname();
        let port = EniPort {
            eni_id: eni.id.clone(),
            instance_id: instance_id.to_string(),
            mac: eni.mac.clone(),
            primary: eni.eni_type == EniType::Primary,
            node_ifname,
            vpc_ifname,
            ips,
            security_groups: eni.security_group_ids.clone(),
        };
        self.plug(&mut st.topo, &node, port)
    }

    /// An ENI was detached: remove its pair (the node end goes with it, even from a pod netns). Its addresses
    /// stay known so a later attach routes them again.
    pub fn detach_eni(&self, instance_id: &str, eni: &NetworkInterface) -> FabricResult<()> {
        let mut st = self.lock();
        let Some(port) = st.topo.ports.get(&eni.id).cloned() else {
            return Ok(());
        };
        if port.instance_id != instance_id {
            return Err(FabricError::Invalid(format!(
                "ENI {} is wired to {}, not {instance_id}",
                eni.id, port.instance_id
            )));
        }
        let (vpc, vpc_if) = (self.config.vpc_netns.clone(), port.vpc_ifname.clone());
        self.kernel.exec(move || kernel::unplug(vpc, vpc_if))?;
        st.topo.ports.remove(&eni.id);
        st.topo.detached_ips.insert(eni.id.clone(), port.ips);
        self.apply_nft(&st.topo)
    }

    /// Private IPs were assigned to an ENI: route them through its link and allow them as sources.
    pub fn assign_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> FabricResult<()> {
        if ips.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        let Some(port) = st.topo.ports.get(eni_id).cloned() else {
            st.topo
                .detached_ips
                .entry(eni_id.to_string())
                .or_default()
                .extend(ips.iter().copied());
            return Ok(());
        };
        let (vpc, vpc_if, mac, list) = (
            self.config.vpc_netns.clone(),
            port.vpc_ifname.clone(),
            port.mac.clone(),
            ips.to_vec(),
        );
        self.kernel
            .exec(move || kernel::add_addrs(vpc, vpc_if, mac, list))?;
        if let Some(p) = st.topo.ports.get_mut(eni_id) {
            p.ips.extend(ips.iter().copied());
        }
        self.apply_nft(&st.topo)
    }

    /// Private IPs were unassigned: stop routing them and stop accepting them as sources (in that order
    /// inside one update, so a released address is never forwarded to the old ENI).
    pub fn unassign_ips(&self, eni_id: &str, ips: &[Ipv4Addr]) -> FabricResult<()> {
        if ips.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        let Some(port) = st.topo.ports.get(eni_id).cloned() else {
            if let Some(set) = st.topo.detached_ips.get_mut(eni_id) {
                for ip in ips {
                    set.remove(ip);
                }
            }
            return Ok(());
        };
        let gone: Vec<Ipv4Addr> = ips
            .iter()
            .filter(|ip| port.ips.contains(ip))
            .copied()
            .collect();
        let (vpc, vpc_if) = (self.config.vpc_netns.clone(), port.vpc_ifname.clone());
        self.kernel
            .exec(move || kernel::remove_addrs(vpc, vpc_if, gone))?;
        if let Some(p) = st.topo.ports.get_mut(eni_id) {
            for ip in ips {
                p.ips.remove(ip);
            }
        }
        self.apply_nft(&st.topo)
    }

    /// The cloud's security groups changed: enforce them (one nft transaction).
    pub fn set_security_groups(&self, groups: &[crate::world::SecurityGroup]) -> FabricResult<()> {
        let mut st = self.lock();
        st.topo.groups = groups.iter().map(|g| (g.id.clone(), g.clone())).collect();
        self.apply_nft(&st.topo)
    }

    /// A custom route entry appeared: `dst` via the instance's primary ENI (VPC-route mode).
    pub fn add_route_entry(&self, dst: Ipv4Net, instance_id: &str) -> FabricResult<()> {
        let mut st = self.lock();
        let node = st.topo.nodes.get(instance_id).cloned().ok_or_else(|| {
            FabricError::Unknown(format!(
                "route entry {dst}: next-hop instance {instance_id} has no node"
            ))
        })?;
        let port = st.topo.primary_port(instance_id).cloned().ok_or_else(|| {
            FabricError::Unknown(format!(
                "route entry {dst}: instance {instance_id} has no primary ENI link"
            ))
        })?;
        let (vpc, gw, vpc_if) = (
            self.config.vpc_netns.clone(),
            node.primary_ip,
            port.vpc_ifname.clone(),
        );
        self.kernel
            .exec(move || kernel::add_route_entry(vpc, dst, gw, vpc_if))?;
        st.topo.route_entries.insert(dst, instance_id.to_string());
        self.apply_nft(&st.topo)
    }

    /// A custom route entry was deleted.
    pub fn remove_route_entry(&self, dst: Ipv4Net, instance_id: &str) -> FabricResult<()> {
        let mut st = self.lock();
        if st.topo.route_entries.get(&dst).map(String::as_str) != Some(instance_id) {
            return Ok(());
        }
        let vpc = self.config.vpc_netns.clone();
        self.kernel
            .exec(move || kernel::remove_route_entry(vpc, dst))?;
        st.topo.route_entries.remove(&dst);
        self.apply_nft(&st.topo)
    }

    /// Add a host outside every node: netns `netns`, address `addr` in `cidr`, routed by the vpc router
    /// (the router holds the subnet's third-from-last address as its gateway).
    pub fn add_outside_host(
        &self,
        netns: &str,
        cidr: Ipv4Net,
        addr: Ipv4Addr,
    ) -> FabricResult<OutsideHost> {
        if !cidr.contains(&addr) {
            return Err(FabricError::Invalid(format!(
                "outside host address {addr} is not in {cidr}"
            )));
        }
        let mut st = self.lock();
        kernel::netns_add(netns)?;
        let ifname = format!("ext{}", st.outside.len());
        let gw = vswitch_gateway(cidr);
        let prefix = cidr.prefix_len();
        let (vpc, ns, vpc_if) = (
            self.config.vpc_netns.clone(),
            netns.to_string(),
            ifname.clone(),
        );
        let done = self
            .kernel
            .exec(move || kernel::plug_host(vpc, ns, vpc_if, gw, prefix))
            .and_then(|()| {
                let ns = netns.to_string();
                let peer = (self.config.vpc_netns.clone(), ifname.clone());
                self.kernel
                    .exec(move || kernel::configure_host(ns, addr, prefix, gw, peer))
            });
        if let Err(e) = done {
            self.unplug_quietly(&ifname);
            let _ = kernel::netns_del(netns);
            return Err(e);
        }
        let host = OutsideHost {
            netns: netns.to_string(),
            addr,
            cidr,
        };
        st.outside.push(host.clone());
        Ok(host)
    }

    /// A copy of the fabric's model (nodes, ENI links, addresses, route entries).
    pub fn snapshot(&self) -> Topology {
        self.lock().topo.clone()
    }

    /// Outside hosts created so far.
    pub fn outside_hosts(&self) -> Vec<OutsideHost> {
        self.lock().outside.clone()
    }

    /// Packets dropped by anti-spoofing since the last ruleset update.
    pub fn spoofed_drops(&self) -> FabricResult<u64> {
        let listing = cmd::nft_list(
            &self.config.vpc_netns,
            nft::TABLE_FAMILY,
            nft::TABLE_NAME,
            "read counters",
        )?;
        Ok(nft::dropped_packets(&listing))
    }

    /// The current anti-spoofing ruleset as `nft` prints it (for `status` and debugging).
    pub fn ruleset(&self) -> FabricResult<String> {
        cmd::nft_list(
            &self.config.vpc_netns,
            nft::TABLE_FAMILY,
            nft::TABLE_NAME,
            "read ruleset",
        )
    }

    /// Compare the cloud's view (`enis`, route entries as destination → next-hop instance) with the fabric's
    /// model and the routes in the vpc netns; returns every difference (empty = they agree).
    pub fn audit(
        &self,
        enis: &[NetworkInterface],
        route_entries: &[(Ipv4Net, String)],
    ) -> FabricResult<Vec<String>> {
        let st = self.lock();
        let vpc = self.config.vpc_netns.clone();
        let kernel_routes = self.kernel.exec(move || kernel::port_routes(vpc))?;
        Ok(audit::differences(
            &st.topo,
            enis,
            route_entries,
            &kernel_routes,
        ))
    }

    /// Every namespace the fabric created (vpc, nodes, outside hosts).
    pub fn netns_names(&self) -> Vec<String> {
        let st = self.lock();
        let mut names = vec![self.config.vpc_netns.clone()];
        names.extend(st.topo.nodes.values().map(|n| n.netns.clone()));
        names.extend(st.outside.iter().map(|o| o.netns.clone()));
        names
    }

    /// Delete everything: the vpc netns first (every ENI pair dies with it, also ends inside pod netns),
    /// then the node and outside-host namespaces. Keeps going past errors and returns them all.
    pub fn destroy(&self) -> Vec<FabricError> {
        let names = self.netns_names();
        let mut st = self.lock();
        if st.destroyed {
            return Vec::new();
        }
        st.destroyed = true;
        let errors: Vec<FabricError> = names
            .iter()
            .filter_map(|n| kernel::netns_del(n).err())
            .collect();
        st.topo = Topology::default();
        st.outside.clear();
        errors
    }

    /// Whether the named namespace exists (helper for callers that clean up after a crash).
    pub fn netns_exists(name: &str) -> bool {
        kernel::netns_exists(name)
    }

    /// Delete a namespace by name (crash cleanup by the lab); a missing one is fine.
    pub fn delete_netns(name: &str) -> FabricResult<()> {
        kernel::netns_del(name)
    }

    /// Convert hook addresses (IPv4 only is routed).
    pub fn ipv4_only(ips: &[IpAddr]) -> Vec<Ipv4Addr> {
        v4(ips)
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for e in self.destroy() {
            tracing::warn!(error = %e, "fabric teardown");
        }
    }
}
