//! The seam between the emulated cloud and the network fabric: the state machine calls these hooks at
//! the moments a real cloud would change the data plane (an ENI appears on a node, an IP becomes
//! routable, a VPC route is installed). The fabric implements them; the default does nothing, so the
//! OpenAPI and metadata service can run alone (tests outside netns, `terway-lab cloud`).

use std::net::IpAddr;

use ipnet::Ipv4Net;
use terway_cloud::NetworkInterface;

/// Callbacks from the emulator's state machine into the data plane.
///
/// Calls are synchronous and made from a blocking thread (never while the emulator's state lock is
/// held), so an implementation may do netlink or spawn processes. An error from
/// [`FabricHook::eni_attached`] fails the attach: the ENI goes back to `Available`.
pub trait FabricHook: Send + Sync {
    /// The attach delay of `eni` to `instance_id` elapsed; called before the ENI is reported `InUse`.
    fn eni_attached(&self, instance_id: &str, eni: &NetworkInterface) -> Result<(), String> {
        let _ = (instance_id, eni);
        Ok(())
    }
    /// The detach of `eni` from `instance_id` completed (before it is reported `Available`).
    fn eni_detached(&self, instance_id: &str, eni: &NetworkInterface) {
        let _ = (instance_id, eni);
    }
    /// Addresses were assigned to `eni_id` (secondary IPv4 or IPv6).
    fn ips_assigned(&self, eni_id: &str, ips: &[IpAddr]) {
        let _ = (eni_id, ips);
    }
    /// Addresses were removed from `eni_id`.
    fn ips_unassigned(&self, eni_id: &str, ips: &[IpAddr]) {
        let _ = (eni_id, ips);
    }
    /// A custom route entry `dst` via `instance_id` was created.
    fn route_entry_added(&self, dst: Ipv4Net, instance_id: &str) {
        let _ = (dst, instance_id);
    }
    /// A custom route entry `dst` via `instance_id` was deleted.
    fn route_entry_removed(&self, dst: Ipv4Net, instance_id: &str) {
        let _ = (dst, instance_id);
    }
    /// The security groups (all of them, with their rules) are now `groups`; also called once at start.
    fn security_groups_changed(&self, groups: &[crate::world::SecurityGroup]) {
        let _ = groups;
    }
}

/// A fabric that does nothing: the emulator as a pure API server.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFabric;

impl FabricHook for NoFabric {}
