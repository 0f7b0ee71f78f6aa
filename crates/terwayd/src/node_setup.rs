//! Node-level datapath state terwayd owns (not per pod): symmetric routing for connections DNATed to pods.

use std::net::IpAddr;

use terway_datapath::symmetric::{self, SymmetricRouting};
use terway_datapath::{Netlink, Netns};

/// Program (or, when turned off, remove) symmetric routing in terwayd's own network namespace, the node's.
/// A failure is logged and terwayd keeps serving: pods still get their network, only replies to hostPort
/// and NodePort connections from outside the node are affected.
pub async fn symmetric_routing(enabled: bool, node_ip: IpAddr) {
    if let Err(e) = apply(enabled, node_ip).await {
        tracing::error!(
            "symmetric routing: {e}; replies to hostPort/NodePort connections from outside the node may \
             leave through a secondary ENI and be dropped by the VPC"
        );
    }
}

async fn apply(enabled: bool, node_ip: IpAddr) -> terway_datapath::Result<()> {
    let ns = Netns::current()?;
    let nl = Netlink::open_current()?;
    if !enabled {
        symmetric::remove(&ns, &nl).await?;
        tracing::info!(
            "symmetric routing off (eni_conf symmetric_routing: false); removed its table and rule"
        );
        return Ok(());
    }
    let primary = symmetric::primary_interface(&nl, node_ip).await?;
    let cfg = SymmetricRouting::on(primary.name);
    symmetric::ensure(&ns, &nl, &cfg).await?;
    tracing::info!(interface = %cfg.iface, rule = %cfg.rule(), table = symmetric::TABLE, "symmetric routing in place for connections entering the primary interface");
    Ok(())
}

/// The kernel side of the daemon's conntrack flush (`terway_daemon::conntrack_flush`): one walk of the
/// conntrack table of terwayd's namespace, the node's, which is where the CNI plugin's DEL would walk it.
pub struct NodeConntrack {
    ns: Netns,
}

impl NodeConntrack {
    /// The flusher of terwayd's own namespace.
    pub fn current() -> terway_datapath::Result<Self> {
        Ok(NodeConntrack {
            ns: Netns::current()?,
        })
    }
}

impl terway_daemon::conntrack_flush::ConntrackFlusher for NodeConntrack {
    fn flush(&self, ips: &[IpAddr]) -> Result<usize, String> {
        match terway_datapath::conntrack::flush_addresses(&self.ns, ips) {
            Ok(terway_datapath::conntrack::Flush::Deleted(n)) => Ok(n),
            Ok(terway_datapath::conntrack::Flush::Unavailable) => Ok(0),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The conntrack flusher to wire into the daemon, or none (DEL then flushes itself) when terwayd cannot
/// open its own namespace.
pub fn conntrack_flusher(
) -> Option<std::sync::Arc<dyn terway_daemon::conntrack_flush::ConntrackFlusher>> {
    match NodeConntrack::current() {
        Ok(c) => Some(std::sync::Arc::new(c)),
        Err(e) => {
            tracing::warn!("cannot open terwayd's network namespace for conntrack flushes: {e}; CNI DEL flushes instead");
            None
        }
    }
}
