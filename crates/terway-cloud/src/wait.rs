//! Waiting for the cloud's asynchronous work: an ENI reaching a status after attach/detach, and a
//! deleted ENI disappearing (`ENIDeleteConfirm`). Generic over [`Cloud`] so fakes work too; the
//! schedule is a named [`Backoff`] (`wait_eni_status`, `eni_delete_confirm`).

use crate::api::{Cloud, CloudResult};
use crate::backoff::{Backoff, BackoffExt};
use crate::error::CloudError;
use crate::types::{EniStatus, NetworkInterface};

/// Poll `eni_id` until its status is `want`; returns the ENI as last seen. `NotFound` while waiting
/// is an error (the ENI vanished), a describe error is retried on the same schedule.
pub async fn wait_eni_status<C: Cloud>(
    cloud: &C,
    eni_id: &str,
    want: EniStatus,
    backoff: Backoff,
) -> CloudResult<NetworkInterface> {
    if !backoff.initial_delay.is_zero() {
        tokio::time::sleep(backoff.initial_delay).await;
    }
    let mut delays = backoff.delays();
    let mut last: String;
    loop {
        match cloud.describe_network_interface(eni_id).await {
            Ok(Some(eni)) if eni.status == want => return Ok(eni),
            Ok(Some(eni)) => last = format!("status {}", eni.status.as_api_str()),
            Ok(None) => {
                return Err(CloudError::NotFound {
                    resource: format!("ENI {eni_id} (waiting for {})", want.as_api_str()),
                    code: "InvalidEniId.NotFound".into(),
                    request_id: String::new(),
                })
            }
            Err(e) if e.is_retryable() => last = e.to_string(),
            Err(e) => return Err(e),
        }
        match delays.next() {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                return Err(CloudError::Timeout {
                    what: format!(
                        "ENI {eni_id} to become {} (last: {last})",
                        want.as_api_str()
                    ),
                })
            }
        }
    }
}

/// Poll until `eni_id` no longer exists after a delete.
pub async fn wait_eni_deleted<C: Cloud>(
    cloud: &C,
    eni_id: &str,
    backoff: Backoff,
) -> CloudResult<()> {
    if !backoff.initial_delay.is_zero() {
        tokio::time::sleep(backoff.initial_delay).await;
    }
    let mut delays = backoff.delays();
    loop {
        match cloud.describe_network_interface(eni_id).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e),
        }
        match delays.next() {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                return Err(CloudError::Timeout {
                    what: format!("ENI {eni_id} to disappear after delete"),
                })
            }
        }
    }
}
