//! Per-node files the lab writes for the real binaries: the daemon's `eni_conf` (Terway's keys plus ours)
//! and the CNI network configuration the lab feeds to `terway` on stdin, exactly what containerd would
//! read from `/etc/cni/net.d/`.

use serde_json::{json, Value};

use crate::plan::{LabPlan, NodeMode, NodePlan};

/// AccessKey pair the lab's emulator accepts (the emulator's documented default).
pub const ACCESS_KEY_ID: &str = "LTAIEMULATORKEY";
/// Secret of [`ACCESS_KEY_ID`].
pub const ACCESS_KEY_SECRET: &str = "emulator-secret";
/// Region of the lab's emulator.
pub const REGION: &str = "cn-hangzhou";

/// The daemon's `eni_conf` JSON for `node`: the lab-wide keys with the node's own merged over them.
pub fn eni_conf(plan: &LabPlan, node: &NodePlan) -> Value {
    let mut conf = eni_conf_common(plan);
    if let (Some(obj), Value::Object(own)) = (conf.as_object_mut(), eni_conf_node(plan, node)) {
        obj.extend(own);
    }
    conf
}

/// The `eni_conf` keys every node of the lab shares (a DaemonSet lab's `eni-config` ConfigMap).
pub fn eni_conf_common(plan: &LabPlan) -> Value {
    let mut conf = json!({
        "version": "1",
        "access_key": ACCESS_KEY_ID,
        "access_secret": ACCESS_KEY_SECRET,
        "region_id": REGION,
        "service_cidr": plan.service_cidr.to_string(),
    });
    if let (Some(c), Value::Object(knobs)) = (conf.as_object_mut(), lab_pool_knobs()) {
        c.extend(knobs);
    }
    conf
}

/// The pool knobs where every lab node departs from Terway's defaults (`simulate` starts from them too).
pub fn lab_pool_knobs() -> Value {
    json!({
        // The lab churns pods quickly: a short cooldown keeps addresses flowing without disabling it.
        "ip_reuse_cooldown": "2s",
        // Trim the pool above max_pool_size every 5 s instead of Terway's 2 min, so a lab converges
        // (and a leak shows) within a test's patience.
        "ip_pool_sync_period": "5s",
    })
}

/// The `eni_conf` keys of `node` alone (a DaemonSet lab's per-node `terway-config` override).
pub fn eni_conf_node(plan: &LabPlan, node: &NodePlan) -> Value {
    let vsw = plan.vswitches.iter().find(|v| v.id == node.vswitch_id);
    let zone = vsw.map(|v| v.zone_id.clone()).unwrap_or_default();
    let mut conf = json!({
        "vswitches": { zone: [node.vswitch_id.clone()] },
        "max_pool_size": node.max_pool,
        "min_pool_size": node.min_pool,
        "mode": node.mode.as_str(),
    });
    if node.mode == NodeMode::VpcRoute {
        if let (Some(obj), Some(cidr)) = (conf.as_object_mut(), node.pod_cidr) {
            obj.insert("pod_cidr".into(), json!(cidr.to_string()));
        }
    }
    conf
}

/// The CNI network configuration (one plugin object, as containerd passes it) for `node`.
pub fn cni_conf(node: &NodePlan) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "terway",
        "type": "terway",
        "capabilities": { "bandwidth": true },
        "eniip_virtual_type": "veth",
        "daemon_socket": node.socket.display().to_string(),
        "daemon_timeout": "60s",
    })
}
