//! The lab plan: names, address ranges and per-node settings, decided once by `up` and then read by every
//! other command. Pure: the only input from the machine is the list of its own IPv4 networks, which the
//! plan must not overlap (so no lab address can ever shadow a real one).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// How pods are networked on a node (one daemon mode per node).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum NodeMode {
    /// Secondary IPs of shared ENIs (Terway ENIIP, veth + policy routing).
    Shared,
    /// One whole ENI per pod.
    Exclusive,
    /// IPs from the node PodCIDR, routed by a VPC route entry.
    VpcRoute,
}

impl NodeMode {
    /// The name used on the command line and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeMode::Shared => "shared",
            NodeMode::Exclusive => "exclusive",
            NodeMode::VpcRoute => "vpc-route",
        }
    }
}

/// One vSwitch of the lab VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VSwitchPlan {
    /// `vsw-…`.
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// CIDR.
    pub cidr: Ipv4Net,
}

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlan {
    /// Short name used on the command line (`node0`).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Emulated instance id.
    pub instance_id: String,
    /// Instance type (sets ENI/IP quotas).
    pub instance_type: String,
    /// Pod networking mode.
    pub mode: NodeMode,
    /// vSwitch of the primary ENI (and of new ENIs).
    pub vswitch_id: String,
    /// PodCIDR (VPC-route mode only).
    pub pod_cidr: Option<Ipv4Net>,
    /// Idle-IP low watermark.
    pub min_pool: u32,
    /// Idle-IP high watermark.
    pub max_pool: u32,
    /// Directory with this node's files (config, daemon state, logs).
    pub dir: PathBuf,
    /// The daemon's gRPC socket.
    pub socket: PathBuf,
    /// The daemon's state directory.
    pub state_dir: PathBuf,
}

/// A host in the VPC outside the nodes (pod → VPC resource checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsidePlan {
    /// Its network namespace.
    pub netns: String,
    /// Its subnet.
    pub cidr: Ipv4Net,
    /// Its address.
    pub addr: Ipv4Addr,
}

/// Everything `up` decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabPlan {
    /// Lab name: prefix of every namespace the lab creates.
    pub name: String,
    /// Directory holding the lab's state and files.
    pub dir: PathBuf,
    /// The VPC router's netns.
    pub vpc_netns: String,
    /// VPC CIDR.
    pub vpc_cidr: Ipv4Net,
    /// vSwitches.
    pub vswitches: Vec<VSwitchPlan>,
    /// Kubernetes-style service CIDR handed to the daemons (no kube-proxy here; it only shapes routes).
    pub service_cidr: Ipv4Net,
    /// Outside host.
    pub outside: OutsidePlan,
    /// Metadata service address (port 80) inside the vpc netns.
    pub metadata_addr: Ipv4Addr,
    /// OpenAPI endpoint address (port 80) inside the vpc netns.
    pub api_addr: Ipv4Addr,
    /// Asynchronous ENI attach delay range in ms.
    pub attach_delay_ms: (u64, u64),
    /// Nodes.
    pub nodes: Vec<NodePlan>,
    /// The lab's Kubernetes, when it has one (`up --k8s`).
    #[serde(default)]
    pub kubernetes: Option<KubePlan>,
}

/// Which CNI chain a Kubernetes lab's containerd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NodeCni {
    /// `terway` talking to the node's `terwayd` (what Terway installs).
    Terway,
    /// The reference chain `bridge` + `host-local` on a node-local bridge (benchmarks only).
    Bridge,
}

/// How a Kubernetes lab runs terwayd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TerwaydInstall {
    /// The way a user installs it: `kubectl apply -k` of deploy/ (the `terway-eniip` DaemonSet, whose
    /// image the lab builds from this workspace and imports into every node's containerd).
    #[default]
    Daemonset,
    /// A process per node that the lab's supervisor starts, stops and crashes (`terway-lab daemon …`).
    Process,
}

/// The lab's Kubernetes control plane and the CNI its nodes run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubePlan {
    /// The API server's address in the VPC (port [`K8S_API_PORT`]), like a managed control-plane endpoint.
    pub api_addr: Ipv4Addr,
    /// CNI chain on every node.
    pub cni: NodeCni,
    /// How terwayd runs (labs recorded before there was a choice ran it as a process).
    #[serde(default = "process_install")]
    pub terwayd: TerwaydInstall,
}

fn process_install() -> TerwaydInstall {
    TerwaydInstall::Process
}

impl KubePlan {
    /// The API server URL as seen from the nodes and the VPC.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.api_addr, K8S_API_PORT)
    }

    /// Whether terwayd runs as the DaemonSet (with the terway CNI; the bridge chain has no terwayd user).
    pub fn daemonset(&self) -> bool {
        self.terwayd == TerwaydInstall::Daemonset && self.cni == NodeCni::Terway
    }
}

impl LabPlan {
    /// Whether terwayd runs as the `terway-eniip` DaemonSet (not as the supervisor's processes).
    pub fn terwayd_daemonset(&self) -> bool {
        self.kubernetes.as_ref().is_some_and(KubePlan::daemonset)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// OpenAPI endpoint URL as seen from a node.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Metadata base URL as seen from a node.
    pub fn metadata_url(&self) -> String {
        format!("http://{}", self.metadata_addr)
    }

    /// The emulator's admin API (HTTP over this unix socket, root only). Not on the OpenAPI address: pods
    /// reach that one, and the admin API rewrites the cloud's behaviour.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("emulator-admin.sock")
    }
}

/// vSwitch size unless asked otherwise: a /20.
pub const DEFAULT_VSWITCH_PREFIX: u8 = 20;

/// What the user asked `up` for.
#[derive(Debug, Clone, PartialEq)]
pub struct LabRequest {
    /// Lab name; random when absent.
    pub name: Option<String>,
    /// Per node: mode and instance type.
    pub nodes: Vec<(NodeMode, String)>,
    /// Number of vSwitches (nodes are spread over them).
    pub vswitches: usize,
    /// vSwitches no node is in, for PodNetworkings: the j-th is in the zone of node vSwitch j mod n.
    pub pod_vswitches: usize,
    /// Prefix length of each vSwitch (20..=28).
    pub vswitch_prefix: u8,
    /// Idle-IP low watermark per node.
    pub min_pool: u32,
    /// Idle-IP high watermark per node.
    pub max_pool: u32,
    /// ENI attach delay range in ms.
    pub attach_delay_ms: (u64, u64),
    /// Run Kubernetes (control plane in the VPC, containerd + kubelet per node) with this CNI.
    pub kubernetes: Option<NodeCni>,
    /// How a Kubernetes lab runs terwayd.
    pub terwayd: TerwaydInstall,
    /// First octets to try for the VPC, e.g. `10.240.0.0/16`; the plan moves on if it overlaps the machine.
    pub vpc_cidr: Option<Ipv4Net>,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// Bad lab name.
    #[error("lab name {0:?} must be 1-10 characters of a-z, 0-9 (it prefixes namespace names)")]
    BadName(String),
    /// No nodes requested.
    #[error("a lab needs at least one node")]
    NoNodes,
    /// Too many nodes or vSwitches for the address plan.
    #[error("{0}")]
    TooBig(String),
    /// Every candidate range overlaps the machine's own networks.
    #[error("no free address range: every candidate overlaps this machine's networks ({0}); pass --vpc-cidr")]
    NoFreeRange(String),
    /// A lab range (VPC, PodCIDRs, services, service addresses) overlaps the machine's own networks.
    #[error("lab range {0} overlaps this machine's network {1}; pick another --vpc-cidr (the metadata, OpenAPI and Kubernetes API addresses 100.100.100.200, 100.100.80.10 and 100.100.80.20 are fixed)")]
    Overlap(Ipv4Net, Ipv4Net),
    /// The watermarks are inverted.
    #[error("--min-pool {0} is larger than --max-pool {1}")]
    Pool(u32, u32),
}

/// The metadata service address, as on a real instance.
pub const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// The OpenAPI endpoint address inside the VPC (a VPC-internal endpoint).
pub const API_ADDR: Ipv4Addr = Ipv4Addr::new(100, 100, 80, 10);
/// The Kubernetes API server's address inside the VPC (a managed control plane's internal endpoint).
pub const K8S_API_ADDR: Ipv4Addr = Ipv4Addr::new(100, 100, 80, 20);
/// The Kubernetes API server's port.
pub const K8S_API_PORT: u16 = 6443;

/// Root of every lab's directory.
pub fn labs_root() -> PathBuf {
    std::env::var_os("TERWAY_LAB_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/terway-lab"))
}

/// A fresh random lab name (`tl` + 6 hex digits).
pub fn random_name() -> String {
    format!("tl{:06x}", rand_u32() & 0x00ff_ffff)
}

fn rand_u32() -> u32 {
    let u = uuid::Uuid::new_v4();
    let b = u.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Validate a lab name.
pub fn check_name(name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 10
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(PlanError::BadName(name.to_string()))
    }
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The ranges a plan based on `vpc` uses: the VPC, the PodCIDR block and the service CIDR.
fn ranges_for(vpc: Ipv4Net) -> Option<[Ipv4Net; 3]> {
    // PodCIDRs and services sit in the two /16 blocks after the VPC (outside it, as ACK requires).
    let base = u32::from(vpc.network());
    let pods = Ipv4Net::new(Ipv4Addr::from(base.checked_add(1 << 16)?), 16).ok()?;
    let svc = Ipv4Net::new(Ipv4Addr::from(base.checked_add(2 << 16)?), 20).ok()?;
    Some([vpc, pods, svc])
}

/// Build the plan, avoiding every network in `host_nets` (the machine's own `ip -4 addr`).
pub fn make_plan(req: &LabRequest, host_nets: &[Ipv4Net]) -> Result<LabPlan, PlanError> {
    let name = match &req.name {
        Some(n) => n.clone(),
        None => random_name(),
    };
    check_name(&name)?;
    if req.nodes.is_empty() {
        return Err(PlanError::NoNodes);
    }
    if req.nodes.len() > 200 {
        return Err(PlanError::TooBig(format!(
            "{} nodes: at most 200",
            req.nodes.len()
        )));
    }
    if req.vswitches == 0 || req.vswitches > 8 {
        return Err(PlanError::TooBig(format!(
            "{} vSwitches: 1 to 8",
            req.vswitches
        )));
    }
    if req.pod_vswitches > 4 {
        return Err(PlanError::TooBig(format!(
            "{} PodNetworking vSwitches: at most 4",
            req.pod_vswitches
        )));
    }
    if !(20..=28).contains(&req.vswitch_prefix) {
        return Err(PlanError::TooBig(format!(
            "vSwitch prefix /{}: 20 to 28 (each vSwitch sits in its own /20 of the VPC)",
            req.vswitch_prefix
        )));
    }
    if req.min_pool > req.max_pool {
        return Err(PlanError::Pool(req.min_pool, req.max_pool));
    }
    let conflict = |ranges: &[Ipv4Net; 3]| -> Option<(Ipv4Net, Ipv4Net)> {
        ranges.iter().find_map(|r| {
            host_nets
                .iter()
                .find(|h| overlaps(*r, **h))
                .map(|h| (*r, *h))
        })
    };
    let ranges = match req.vpc_cidr {
        Some(vpc) => {
            let vpc =
                Ipv4Net::new(vpc.network(), 16).map_err(|e| PlanError::TooBig(e.to_string()))?;
            let r =
                ranges_for(vpc).ok_or_else(|| PlanError::TooBig(format!("no room after {vpc}")))?;
            if let Some((_, h)) = conflict(&r) {
                return Err(PlanError::Overlap(vpc, h));
            }
            r
        }
        None => (0u8..16)
            .filter_map(|i| {
                ranges_for(Ipv4Net::new(Ipv4Addr::new(10, 200 + 3 * i, 0, 0), 16).ok()?)
            })
            .find(|r| conflict(r).is_none())
            .ok_or_else(|| {
                PlanError::NoFreeRange(
                    host_nets
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?,
    };
    let [vpc_cidr, pod_block, service_cidr] = ranges;
    // The service addresses inside the vpc netns must not shadow one of the machine's networks either.
    for svc in [METADATA_ADDR, API_ADDR, K8S_API_ADDR] {
        if let Some(h) = host_nets.iter().find(|h| h.contains(&svc)) {
            return Err(PlanError::Overlap(Ipv4Net::from(svc), *h));
        }
    }
    let base = u32::from(vpc_cidr.network());
    let vswitches: Vec<VSwitchPlan> = (0..req.vswitches + req.pod_vswitches)
        .map(|k| VSwitchPlan {
            id: format!("vsw-{name}{k:02}"),
            zone_id: format!(
                "cn-hangzhou-{}",
                (b'h' + (k % req.vswitches.max(1)) as u8) as char
            ),
            // Each in its own /20; a /20 (4093 usable addresses) is never exhausted by accident, a
            // smaller one is asked for to exhaust it.
            cidr: Ipv4Net::new(
                Ipv4Addr::from(base + ((k as u32) << 12)),
                req.vswitch_prefix,
            )
            .unwrap_or(vpc_cidr),
        })
        .collect();
    let outside_cidr = Ipv4Net::new(Ipv4Addr::from(base + (250 << 8)), 24).unwrap_or(vpc_cidr);
    let dir = labs_root().join(&name);
    let kubernetes = req.kubernetes.map(|cni| KubePlan {
        api_addr: K8S_API_ADDR,
        cni,
        terwayd: req.terwayd,
    });
    let daemonset = kubernetes.as_ref().is_some_and(KubePlan::daemonset);
    let nodes = req
        .nodes
        .iter()
        .enumerate()
        .map(|(i, (mode, itype))| {
            let node_name = format!("node{i}");
            let node_dir = dir.join("nodes").join(&node_name);
            NodePlan {
                netns: format!("{name}-{node_name}"),
                instance_id: format!("i-{name}{i:04}"),
                instance_type: itype.clone(),
                mode: *mode,
                vswitch_id: vswitches[i % req.vswitches.max(1)].id.clone(),
                pod_cidr: (*mode == NodeMode::VpcRoute)
                    .then(|| {
                        Ipv4Net::new(
                            Ipv4Addr::from(u32::from(pod_block.network()) + ((i as u32) << 8)),
                            24,
                        )
                        .ok()
                    })
                    .flatten(),
                min_pool: req.min_pool,
                max_pool: req.max_pool,
                // A DaemonSet's terwayd serves /var/run/eni/eni.socket, which the node's mount
                // namespace binds to k8s/run-eni (k8s::node_files::mount_ns_script).
                socket: if daemonset {
                    node_dir.join("k8s/run-eni/eni.socket")
                } else {
                    node_dir.join("eni.socket")
                },
                state_dir: node_dir.join("state"),
                dir: node_dir,
                name: node_name,
            }
        })
        .collect();
    Ok(LabPlan {
        vpc_netns: format!("{name}-vpc"),
        outside: OutsidePlan {
            netns: format!("{name}-ext"),
            cidr: outside_cidr,
            addr: Ipv4Addr::from(u32::from(outside_cidr.network()) + 10),
        },
        metadata_addr: METADATA_ADDR,
        api_addr: API_ADDR,
        attach_delay_ms: req.attach_delay_ms,
        name,
        dir,
        vpc_cidr,
        vswitches,
        service_cidr,
        nodes,
        kubernetes,
    })
}

/// Parse `ip -4 -o addr` output into the machine's networks (prefix as configured).
pub fn parse_host_networks(ip_output: &str) -> Vec<Ipv4Net> {
    ip_output
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.by_ref().find(|x| *x == "inet")?;
            w.next()?.parse::<Ipv4Net>().ok().map(|n| n.trunc())
        })
        .collect()
}

/// The machine's own IPv4 networks (`ip -4 -o addr` in the namespace we run in, i.e. the root one).
pub fn host_networks() -> std::io::Result<Vec<Ipv4Net>> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(parse_host_networks(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(nodes: &[NodeMode]) -> LabRequest {
        LabRequest {
            name: Some("tltest".into()),
            nodes: nodes
                .iter()
                .map(|m| (*m, "ecs.g7.xlarge".to_string()))
                .collect(),
            vswitches: 2,
            pod_vswitches: 0,
            vswitch_prefix: DEFAULT_VSWITCH_PREFIX,
            min_pool: 2,
            max_pool: 5,
            attach_delay_ms: (200, 600),
            kubernetes: None,
            terwayd: TerwaydInstall::Process,
            vpc_cidr: None,
        }
    }

    #[test]
    fn parses_ip_addr_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\n";
        assert_eq!(
            parse_host_networks(out),
            vec![
                "127.0.0.0/8".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap()
            ]
        );
    }

    #[test]
    fn plan_avoids_host_networks_and_spreads_nodes() {
        let host = vec![
            "10.200.5.0/24".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ];
        let p = make_plan(
            &req(&[NodeMode::Shared, NodeMode::Exclusive, NodeMode::VpcRoute]),
            &host,
        )
        .unwrap();
        assert_eq!(p.vpc_cidr, "10.203.0.0/16".parse::<Ipv4Net>().unwrap());
        assert_eq!(
            p.vswitches[0].cidr,
            "10.203.0.0/20".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(
            p.vswitches[1].cidr,
            "10.203.16.0/20".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(p.nodes[1].vswitch_id, p.vswitches[1].id);
        assert_eq!(p.nodes[2].vswitch_id, p.vswitches[0].id);
        assert_eq!(p.nodes[0].pod_cidr, None);
        assert_eq!(p.nodes[2].pod_cidr, Some("10.204.2.0/24".parse().unwrap()));
        assert_eq!(p.service_cidr, "10.205.0.0/20".parse::<Ipv4Net>().unwrap());
        assert_eq!(p.outside.addr, Ipv4Addr::new(10, 203, 250, 10));
        assert_eq!(p.nodes[0].netns, "tltest-node0");
        assert_eq!(p.vpc_netns, "tltest-vpc");
        for r in [p.vpc_cidr, p.service_cidr, p.nodes[2].pod_cidr.unwrap()] {
            assert!(host.iter().all(|h| !overlaps(r, *h)));
        }
        // Every vSwitch is inside the VPC, the outside host is in the VPC but in no vSwitch.
        for v in &p.vswitches {
            assert!(p.vpc_cidr.contains(&v.cidr));
            assert!(!v.cidr.contains(&p.outside.addr));
        }
    }

    #[test]
    fn explicit_overlapping_cidr_is_refused() {
        let host = vec!["10.50.1.0/24".parse().unwrap()];
        let mut r = req(&[NodeMode::Shared]);
        r.vpc_cidr = Some("10.49.0.0/16".parse().unwrap());
        // 10.50.0.0/16 is the PodCIDR block derived from 10.49/16.
        assert!(matches!(make_plan(&r, &host), Err(PlanError::Overlap(..))));
        r.vpc_cidr = Some("10.60.0.0/16".parse().unwrap());
        assert!(make_plan(&r, &host).is_ok());
        // A machine network covering the metadata address is refused too.
        let host = vec!["100.100.0.0/16".parse().unwrap()];
        assert!(matches!(make_plan(&r, &host), Err(PlanError::Overlap(..))));
    }

    #[test]
    fn names_and_sizes_are_checked() {
        assert!(check_name("tl0abc12").is_ok());
        assert!(check_name("Bad").is_err());
        assert!(check_name("waytoolongname").is_err());
        assert!(check_name("").is_err());
        let n = random_name();
        assert!(check_name(&n).is_ok(), "{n}");
        assert_eq!(make_plan(&req(&[]), &[]), Err(PlanError::NoNodes));
        let mut r = req(&[NodeMode::Shared]);
        r.min_pool = 9;
        assert_eq!(make_plan(&r, &[]), Err(PlanError::Pool(9, 5)));
    }
}
