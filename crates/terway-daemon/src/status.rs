//! The status snapshot served to terway-cli: node facts, then each backend's part, then every pod
//! interface's record.

use terway_rpc::v1 as pb;

use crate::backend::Backends;
use crate::pool::NodeInfo;
use crate::server::network_mode;

/// Build the status reply from the node and its backends.
pub fn build(node: &NodeInfo, backends: &Backends, events: Vec<String>) -> pb::StatusReply {
    let mut reply = pb::StatusReply {
        node: node.name.clone(),
        instance_id: node.instance_id.clone(),
        instance_type: node.instance_type.clone(),
        mode: network_mode(backends.default_kind()) as i32,
        events,
        ..Default::default()
    };
    for b in backends.all() {
        b.fill_status(&mut reply);
        reply
            .pods
            .extend(b.allocations().into_iter().map(|a| pb::PodAllocation {
                pod: a.pod.to_string(),
                container_id: a.container_id.clone(),
                ipv4: a.ip.to_string(),
                ipv6: String::new(),
                eni_id: a.eni_id.clone(),
                if_name: a.if_name.clone(),
                backend: a.backend.label().into(),
            }));
    }
    reply
        .pods
        .sort_by(|a, b| (&a.pod, &a.if_name).cmp(&(&b.pod, &b.if_name)));
    reply
}
