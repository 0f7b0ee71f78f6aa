//! Calls the lab itself makes to its emulated cloud, through the real client over the real protocol (so
//! the emulator's state and the fabric stay in step): the VPC route entries a cloud-controller-manager
//! would create for VPC-route nodes. Runs inside the supervisor, which lives in the vpc netns.

use ipnet::Ipv4Net;
use terway_cloud::{AlibabaCloud, Cloud, CloudConfig};

use crate::node_files::{ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION};
use crate::plan::LabPlan;

fn client(plan: &LabPlan) -> anyhow::Result<AlibabaCloud> {
    let cfg = CloudConfig::for_endpoint(REGION, &plan.api_url(), ACCESS_KEY_ID, ACCESS_KEY_SECRET);
    AlibabaCloud::new(cfg)
        .map_err(|e| anyhow::anyhow!("cannot build the cloud client for the lab: {e}"))
}

/// CreateRouteEntry `cidr` → `instance_id` in the VPC's route table.
pub async fn create_route_entry(
    plan: &LabPlan,
    route_table_id: &str,
    cidr: Ipv4Net,
    instance_id: &str,
) -> anyhow::Result<()> {
    client(plan)?
        .create_route_entry(route_table_id, cidr, instance_id)
        .await
        .map_err(|e| anyhow::anyhow!("CreateRouteEntry {cidr} via {instance_id}: {e}"))
}
