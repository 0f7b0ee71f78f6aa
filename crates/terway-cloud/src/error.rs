//! Typed cloud errors: what the pool needs to decide (retry, inhibit, treat as done), with the raw API
//! code and request id kept for the message.

/// An error from the cloud API, classified.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    /// `Throttling*`: the per-API quota is exhausted; retry later.
    #[error("{action} throttled by the cloud ({code}, request {request_id}); the client backs off and retries")]
    Throttled {
        action: String,
        code: String,
        request_id: String,
    },
    /// `InvalidVSwitchId.IpNotEnough` / `QuotaExceeded.PrivateIpAddress`: the vSwitch has no free address.
    #[error("vSwitch {vswitch_id} has no free IP ({code}, request {request_id}); add vSwitches to eni_conf.vswitches or free addresses")]
    IpNotEnough {
        vswitch_id: String,
        code: String,
        request_id: String,
    },
    /// `EniPerInstanceLimitExceeded`: the instance cannot take another ENI.
    #[error("instance {instance_id} already has the maximum number of ENIs ({code}, request {request_id}); lower max_eni or use a larger instance type")]
    EniLimitExceeded {
        instance_id: String,
        code: String,
        request_id: String,
    },
    /// `InvalidOperation.Ipv4CountExceeded` / `Ipv6CountExceeded`: the ENI cannot take more addresses.
    #[error("ENI {eni_id} cannot take more addresses ({code}, request {request_id})")]
    IpCountExceeded {
        eni_id: String,
        code: String,
        request_id: String,
    },
    /// `InvalidEniId.NotFound` / `InvalidEcsId.NotFound`.
    #[error("{resource} not found ({code}, request {request_id})")]
    NotFound {
        resource: String,
        code: String,
        request_id: String,
    },
    /// `InvalidOperation.InvalidEniState`: the ENI is in the wrong state for this action.
    #[error(
        "ENI {eni_id} is in the wrong state for {action} ({code}: {message}, request {request_id})"
    )]
    InvalidEniState {
        eni_id: String,
        action: String,
        code: String,
        message: String,
        request_id: String,
    },
    /// `Operation.Conflict`: another operation on the same resource is running; retry.
    #[error("{action} conflicts with another operation on {resource} ({code}, request {request_id}); retried")]
    Conflict {
        action: String,
        resource: String,
        code: String,
        request_id: String,
    },
    /// Signature, AccessKey or RAM permission problems: not retried.
    #[error("{action} was refused: {code}: {message} (request {request_id}); check the AccessKey / RAM policy")]
    Auth {
        action: String,
        code: String,
        message: String,
        request_id: String,
    },
    /// The request never got an API answer (connect, timeout, malformed body).
    #[error("{action} failed in transport: {message}; the cloud endpoint may be unreachable")]
    Transport { action: String, message: String },
    /// Any other API error.
    #[error("{action} failed: {code}: {message} (HTTP {status}, request {request_id})")]
    Api {
        action: String,
        code: String,
        message: String,
        status: u16,
        request_id: String,
    },
    /// A logical operation did not reach its goal in time (e.g. ENI never became InUse).
    #[error("timed out waiting for {what}")]
    Timeout { what: String },
}

impl CloudError {
    /// Whether repeating the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CloudError::Throttled { .. }
            | CloudError::Conflict { .. }
            | CloudError::Transport { .. } => true,
            CloudError::Api { code, status, .. } => {
                *status >= 500 || code == "InternalError" || code == "ServiceUnavailable"
            }
            _ => false,
        }
    }

    /// The API error code, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CloudError::Throttled { code, .. }
            | CloudError::IpNotEnough { code, .. }
            | CloudError::EniLimitExceeded { code, .. }
            | CloudError::IpCountExceeded { code, .. }
            | CloudError::NotFound { code, .. }
            | CloudError::InvalidEniState { code, .. }
            | CloudError::Conflict { code, .. }
            | CloudError::Auth { code, .. }
            | CloudError::Api { code, .. } => Some(code),
            CloudError::Transport { .. } | CloudError::Timeout { .. } => None,
        }
    }
}
