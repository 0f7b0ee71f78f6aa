//! The fabric as the emulator's [`FabricHook`]: every state change of the cloud becomes a kernel change.
//! Only `eni_attached` can refuse (the attach then fails as on a real cloud whose data plane broke); the
//! other callbacks cannot report errors to the API caller, so a failure is logged loudly with the ENI/IP.

use std::net::IpAddr;

use ipnet::Ipv4Net;
use terway_cloud::types::NetworkInterface;

use super::Fabric;
use crate::hook::FabricHook;

impl FabricHook for Fabric {
    fn eni_attached(&self, instance_id: &str, eni: &NetworkInterface) -> Result<(), String> {
        self.attach_eni(instance_id, eni).map_err(|e| e.to_string())
    }

    fn eni_detached(&self, instance_id: &str, eni: &NetworkInterface) {
        if let Err(e) = self.detach_eni(instance_id, eni) {
            tracing::error!(eni = %eni.id, instance = instance_id, error = %e, "fabric: detach left a link behind");
        }
    }

    fn ips_assigned(&self, eni_id: &str, ips: &[IpAddr]) {
        if let Err(e) = self.assign_ips(eni_id, &Fabric::ipv4_only(ips)) {
            tracing::error!(eni = eni_id, ?ips, error = %e, "fabric: assigned addresses are not routed");
        }
    }

    fn ips_unassigned(&self, eni_id: &str, ips: &[IpAddr]) {
        if let Err(e) = self.unassign_ips(eni_id, &Fabric::ipv4_only(ips)) {
            tracing::error!(eni = eni_id, ?ips, error = %e, "fabric: unassigned addresses are still routed");
        }
    }

    fn route_entry_added(&self, dst: Ipv4Net, instance_id: &str) {
        if let Err(e) = self.add_route_entry(dst, instance_id) {
            tracing::error!(%dst, instance = instance_id, error = %e, "fabric: route entry not installed");
        }
    }

    fn security_groups_changed(&self, groups: &[crate::world::SecurityGroup]) {
        if let Err(e) = self.set_security_groups(groups) {
            tracing::error!(error = %e, "fabric: security groups not enforced");
        }
    }

    fn route_entry_removed(&self, dst: Ipv4Net, instance_id: &str) {
        if let Err(e) = self.remove_route_entry(dst, instance_id) {
            tracing::error!(%dst, instance = instance_id, error = %e, "fabric: route entry not removed");
        }
    }
}
