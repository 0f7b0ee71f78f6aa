//! The fabric's links, addresses, routes and neighbours, programmed with terway-datapath's netlink
//! primitives (one socket per namespace per update). The primitives are async; the fabric's callers are
//! synchronous (hook callbacks on blocking threads, the lab's setup code), so every update runs on one
//! dedicated kernel thread with its own single-threaded runtime and the caller waits for the answer. This
//! works from any context (even a runtime worker) and serializes kernel updates in call order.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use ipnet::{IpNet, Ipv4Net};
use terway_datapath::addr::{ensure_addr, Scope};
use terway_datapath::link::{
    create_veth, link_by_name, list_links, remove_link_by_name, require_link, set_up, wait_oper_up,
};
use terway_datapath::neigh::{ensure_permanent_neighbour, remove_neighbour};
use terway_datapath::route::{ensure_route, list_routes, remove_route, Route, MAIN_TABLE};
use terway_datapath::{MacAddr, Netlink, Netns};

use super::error::{FabricError, FabricResult};

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The kernel thread.
pub(crate) struct Kernel {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn err(context: impl Into<String>) -> impl FnOnce(terway_datapath::Error) -> FabricError {
    let context = context.into();
    move |source| FabricError::Kernel { context, source }
}

fn open(netns: &str) -> FabricResult<Netlink> {
    let ns = Netns::open_named(netns).map_err(err(format!("open netns {netns}")))?;
    Netlink::open(&ns).map_err(err(format!("netlink in {netns}")))
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(ip))
}

fn default_route(gw: Ipv4Addr, oif: u32) -> Route {
    Route {
        dst: IpNet::V4(Ipv4Net::default()),
        gateway: Some(IpAddr::V4(gw)),
        oif: Some(oif),
        table: MAIN_TABLE,
        scope: Scope::Universe,
        onlink: false,
        src: None,
    }
}

impl Kernel {
    /// Start the kernel thread.
    pub(crate) fn start() -> FabricResult<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| FabricError::Spawn {
                program: "kernel thread".into(),
                context: "runtime".into(),
                source,
            })?;
        let thread = std::thread::Builder::new()
            .name("fabric-kernel".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    runtime.block_on(job());
                }
            })
            .map_err(|source| FabricError::Spawn {
                program: "kernel thread".into(),
                context: "spawn".into(),
                source,
            })?;
        Ok(Kernel {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Run `f`'s future on the kernel thread and wait for its result.
    pub(crate) fn exec<T, F, Fut>(&self, f: F) -> FabricResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = FabricResult<T>> + 'static,
    {
        let (rtx, rrx) = mpsc::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = rtx.send(f().await);
            })
        });
        let sent = match &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(FabricError::Unknown(
                "the fabric's kernel thread is gone".into(),
            ));
        }
        rrx.recv().map_err(|_| {
            FabricError::Unknown("the fabric's kernel thread died during an update".into())
        })?
    }

    /// Stop the thread (after the queued updates).
    pub(crate) fn stop(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Create a named namespace; an existing one is an error so two labs never share one.
pub(crate) fn netns_add(name: &str) -> FabricResult<()> {
    if Netns::named_path(name).exists() {
        return Err(FabricError::Invalid(format!(
            "network namespace {name} already exists"
        )));
    }
    Netns::create_named(name)
        .map(|_| ())
        .map_err(err(format!("create netns {name}")))
}

/// Delete a named namespace; a missing one is fine.
pub(crate) fn netns_del(name: &str) -> FabricResult<()> {
    Netns::delete_named(name).map_err(err(format!("delete netns {name}")))
}

/// Whether `/run/netns/<name>` exists.
pub(crate) fn netns_exists(name: &str) -> bool {
    Netns::named_path(name).exists()
}

/// Per-namespace sysctls.
pub(crate) fn sysctls(netns: &str, pairs: &[(&str, &str)]) -> FabricResult<()> {
    let ns = Netns::open_named(netns).map_err(err(format!("open netns {netns}")))?;
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    terway_datapath::sysctl::ensure_sysctls(&ns, &owned).map_err(err(format!("sysctls in {netns}")))
}

/// `lo` up and `addrs` as /32 on it.
pub(crate) async fn lo_with_addrs(netns: String, addrs: Vec<Ipv4Addr>) -> FabricResult<()> {
    let nl = open(&netns)?;
    let lo = require_link(&nl, "lo")
        .await
        .map_err(err(format!("lo in {netns}")))?;
    set_up(&nl, lo.index)
        .await
        .map_err(err(format!("lo up in {netns}")))?;
    for a in addrs {
        ensure_addr(&nl, lo.index, host(a), Scope::Universe)
            .await
            .map_err(err(format!("add {a} to lo in {netns}")))?;
    }
    Ok(())
}

/// One ENI's veth pair: `vpc_if` in the vpc netns, `node_if` with `mac` created directly in `node_ns`,
/// plus a /32 route and a permanent neighbour for each address.
pub(crate) async fn plug(
    vpc: String,
    node_ns: String,
    vpc_if: String,
    node_if: String,
    mac: String,
    ips: Vec<Ipv4Addr>,
) -> FabricResult<()> {
    let mac: MacAddr = mac.parse().map_err(err(format!("ENI MAC {mac}")))?;
    let nl = open(&vpc)?;
    let peer_ns = Netns::open_named(&node_ns).map_err(err(format!("open netns {node_ns}")))?;
    let link = create_veth(&nl, &vpc_if, &node_if, Some(&peer_ns), None, Some(mac))
        .await
        .map_err(err(format!("veth {vpc_if} ↔ {node_ns}/{node_if}")))?;
    set_up(&nl, link.index)
        .await
        .map_err(err(format!("{vpc_if} up")))?;
    route_addrs(&nl, link.index, mac, &ips).await
}

async fn route_addrs(nl: &Netlink, index: u32, mac: MacAddr, ips: &[Ipv4Addr]) -> FabricResult<()> {
    for ip in ips {
        ensure_route(nl, &Route::link_scope(host(*ip), index))
            .await
            .map_err(err(format!("route {ip}/32")))?;
        ensure_permanent_neighbour(nl, index, IpAddr::V4(*ip), mac)
            .await
            .map_err(err(format!("neighbour {ip}")))?;
    }
    Ok(())
}

/// Route more addresses through an existing port.
pub(crate) async fn add_addrs(
    vpc: String,
    vpc_if: String,
    mac: String,
    ips: Vec<Ipv4Addr>,
) -> FabricResult<()> {
    let mac: MacAddr = mac.parse().map_err(err(format!("ENI MAC {mac}")))?;
    let nl = open(&vpc)?;
    let link = require_link(&nl, &vpc_if)
        .await
        .map_err(err(format!("link {vpc_if}")))?;
    route_addrs(&nl, link.index, mac, &ips).await
}

/// Stop routing addresses through a port (missing routes/neighbours are fine).
pub(crate) async fn remove_addrs(
    vpc: String,
    vpc_if: String,
    ips: Vec<Ipv4Addr>,
) -> FabricResult<()> {
    let nl = open(&vpc)?;
    let Some(link) = link_by_name(&nl, &vpc_if)
        .await
        .map_err(err(format!("link {vpc_if}")))?
    else {
        return Ok(());
    };
    for ip in ips {
        remove_route(&nl, &Route::link_scope(host(ip), link.index))
            .await
            .map_err(err(format!("route {ip}/32")))?;
        remove_neighbour(&nl, link.index, IpAddr::V4(ip))
            .await
            .map_err(err(format!("neighbour {ip}")))?;
    }
    Ok(())
}

/// Delete a port (its peer goes with it, wherever it lives).
pub(crate) async fn unplug(vpc: String, vpc_if: String) -> FabricResult<()> {
    let nl = open(&vpc)?;
    remove_link_by_name(&nl, &vpc_if)
        .await
        .map(|_| ())
        .map_err(err(format!("delete {vpc_if}")))
}

/// A route entry: `dst via gw dev vpc_if`.
pub(crate) async fn add_route_entry(
    vpc: String,
    dst: Ipv4Net,
    gw: Ipv4Addr,
    vpc_if: String,
) -> FabricResult<()> {
    let nl = open(&vpc)?;
    let link = require_link(&nl, &vpc_if)
        .await
        .map_err(err(format!("link {vpc_if}")))?;
    let mut r = default_route(gw, link.index);
    r.dst = IpNet::V4(dst);
    ensure_route(&nl, &r)
        .await
        .map_err(err(format!("route entry {dst} via {gw}")))
}

/// Remove a route entry (missing is fine).
pub(crate) async fn remove_route_entry(vpc: String, dst: Ipv4Net) -> FabricResult<()> {
    let nl = open(&vpc)?;
    let r = Route {
        dst: IpNet::V4(dst),
        gateway: None,
        oif: None,
        table: MAIN_TABLE,
        scope: Scope::Universe,
        onlink: false,
        src: None,
    };
    remove_route(&nl, &r)
        .await
        .map_err(err(format!("route entry {dst}")))
}

/// How long a freshly plugged veth may take to become operationally up; seconds only on a host busy
/// with namespace teardown (the link watcher waits for the RTNL lock).
const LINK_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Configure a host's `eth0`: `lo` up, `eth0` up with `addr/prefix`, default route via `gw`; returns
/// once both `eth0` and its vpc-side peer `vpc/vpc_if` pass packets, so the first ping is not lost.
pub(crate) async fn configure_host(
    netns: String,
    addr: Ipv4Addr,
    prefix: u8,
    gw: Ipv4Addr,
    (vpc, vpc_if): (String, String),
) -> FabricResult<()> {
    let nl = open(&netns)?;
    for name in ["lo", "eth0"] {
        let l = require_link(&nl, name)
            .await
            .map_err(err(format!("{name} in {netns}")))?;
        set_up(&nl, l.index)
            .await
            .map_err(err(format!("{name} up in {netns}")))?;
    }
    let eth0 = require_link(&nl, "eth0")
        .await
        .map_err(err(format!("eth0 in {netns}")))?;
    let net = Ipv4Net::new(addr, prefix).map_err(|e| FabricError::Invalid(e.to_string()))?;
    ensure_addr(&nl, eth0.index, IpNet::V4(net), Scope::Universe)
        .await
        .map_err(err(format!("{net} on eth0 in {netns}")))?;
    ensure_route(&nl, &default_route(gw, eth0.index))
        .await
        .map_err(err(format!("default via {gw} in {netns}")))?;
    wait_oper_up(&nl, eth0.index, LINK_UP_TIMEOUT)
        .await
        .map_err(err(format!("eth0 in {netns}")))?;
    let vpc_nl = open(&vpc)?;
    let peer = require_link(&vpc_nl, &vpc_if)
        .await
        .map_err(err(format!("{vpc_if} in {vpc}")))?;
    wait_oper_up(&vpc_nl, peer.index, LINK_UP_TIMEOUT)
        .await
        .map_err(err(format!("{vpc_if} in {vpc}")))?;
    Ok(())
}

/// A veth `vpc_if` (address `gw/prefix`) ↔ `eth0` in `host_ns`, for the outside host.
pub(crate) async fn plug_host(
    vpc: String,
    host_ns: String,
    vpc_if: String,
    gw: Ipv4Addr,
    prefix: u8,
) -> FabricResult<()> {
    let nl = open(&vpc)?;
    let peer_ns = Netns::open_named(&host_ns).map_err(err(format!("open netns {host_ns}")))?;
    let link = create_veth(&nl, &vpc_if, "eth0", Some(&peer_ns), None, None)
        .await
        .map_err(err(format!("veth {vpc_if} ↔ {host_ns}/eth0")))?;
    let net = Ipv4Net::new(gw, prefix).map_err(|e| FabricError::Invalid(e.to_string()))?;
    ensure_addr(&nl, link.index, IpNet::V4(net), Scope::Universe)
        .await
        .map_err(err(format!("{net} on {vpc_if}")))?;
    set_up(&nl, link.index)
        .await
        .map_err(err(format!("{vpc_if} up")))
}

/// Link names in a namespace.
pub(crate) async fn link_names(netns: String) -> FabricResult<Vec<String>> {
    let nl = open(&netns)?;
    Ok(list_links(&nl)
        .await
        .map_err(err(format!("list links in {netns}")))?
        .into_iter()
        .map(|l| l.name)
        .collect())
}

/// IPv4 routes of the main table whose device is one of the ENI ports (`eni…`): destination → device.
pub(crate) async fn port_routes(
    vpc: String,
) -> FabricResult<std::collections::BTreeMap<Ipv4Net, String>> {
    let nl = open(&vpc)?;
    let names: std::collections::BTreeMap<u32, String> = list_links(&nl)
        .await
        .map_err(err("list links"))?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let routes = list_routes(&nl, true, Some(MAIN_TABLE))
        .await
        .map_err(err("list routes"))?;
    Ok(routes
        .into_iter()
        .filter_map(|r| {
            let dev = names.get(&r.oif?)?.clone();
            let IpNet::V4(dst) = r.dst else { return None };
            dev.starts_with("eni").then_some((dst, dev))
        })
        .collect())
}
