//! Start-up helpers: learning the node from metadata and the cloud, and binding the socket.

use std::path::Path;

use terway_cloud::{Cloud, EniFilter, EniType, Metadata};
use tokio::net::UnixListener;

use crate::config::DaemonConfig;
use crate::error::{DaemonError, Result};
use crate::pool::NodeInfo;

/// [`node_info`], retried while the failure is transient (metadata or OpenAPI not reachable yet at
/// boot), for up to `limit`.
pub async fn node_info_with_retry<C: Cloud, M: Metadata>(
    cfg: &DaemonConfig,
    cloud: &C,
    meta: &M,
    limit: std::time::Duration,
) -> Result<NodeInfo> {
    let deadline = std::time::Instant::now() + limit;
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match node_info(cfg, cloud, meta).await {
            Err(DaemonError::Cloud(e))
                if e.is_retryable() && std::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "cloud not reachable yet; retrying start-up");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Identity, capacity and security groups of this node.
pub async fn node_info<C: Cloud, M: Metadata>(
    cfg: &DaemonConfig,
    cloud: &C,
    meta: &M,
) -> Result<NodeInfo> {
    let id = meta.instance().await?;
    let primary = meta.eni(&id.primary_mac).await?.ok_or_else(|| {
        DaemonError::NotReady(format!(
            "metadata does not show the primary ENI {} of {}",
            id.primary_mac, id.instance_id
        ))
    })?;
    // Only backends that use ENIs need the instance type's quotas (and its security groups).
    let uses_enis =
        crate::pool::EniPoolKind::serving(crate::record::ResourceKind::default_for(cfg.mode))
            .is_some();
    let mut limits = None;
    if uses_enis {
        let all = cloud
            .describe_instance_types(std::slice::from_ref(&id.instance_type))
            .await?;
        let l = all
            .into_iter()
            .find(|l| l.instance_type == id.instance_type)
            .ok_or_else(|| {
                DaemonError::Config(format!(
                    "DescribeInstanceTypes does not know instance type {}; cannot size the ENI pool",
                    id.instance_type
                ))
            })?;
        limits = Some(l);
    }
    let mut security_groups = cfg.pool.security_groups.clone();
    if security_groups.is_empty() && uses_enis {
        let filter = EniFilter {
            instance_id: Some(id.instance_id.clone()),
            eni_type: Some(EniType::Primary),
            ..Default::default()
        };
        let prim = cloud.describe_network_interfaces(&filter).await?;
        security_groups = prim
            .into_iter()
            .flat_map(|n| n.security_group_ids)
            .collect();
        security_groups.dedup();
    }
    Ok(NodeInfo {
        name: cfg
            .node_name
            .clone()
            .unwrap_or_else(|| id.instance_id.clone()),
        instance_id: id.instance_id,
        instance_type: id.instance_type,
        zone_id: id.zone_id,
        vpc_id: id.vpc_id,
        vswitch_id: id.vswitch_id,
        primary_ip: primary.primary_ip,
        security_groups,
        limits,
    })
}

/// Bind the gRPC unix socket: parent dir 0700, stale socket removed, socket 0600.
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| DaemonError::io(format!("create socket dir {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| DaemonError::io(format!("chmod 700 {}", dir.display()), e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DaemonError::io(
                format!("remove stale socket {}", path.display()),
                e,
            ))
        }
    }
    let l = UnixListener::bind(path)
        .map_err(|e| DaemonError::io(format!("bind {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| DaemonError::io(format!("chmod 600 {}", path.display()), e))?;
    Ok(l)
}
