//! Errors: [`ApiError`] is what an OpenAPI call answers (code, message, HTTP status, as the real
//! gateway does); [`EmulatorError`] is what starting or running the emulator itself can fail with.

use std::path::PathBuf;

use serde::Serialize;

/// An OpenAPI error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code} (HTTP {status}): {message}")]
pub struct ApiError {
    /// Alibaba error code, e.g. `InvalidEniId.NotFound`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

impl ApiError {
    /// Any error.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            status,
        }
    }
    /// `MissingParameter` (400) naming the parameter.
    pub fn missing(param: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!("The input parameter \"{param}\" that is mandatory for processing this request is not supplied."),
        )
    }
    /// `InvalidParameter` (400) naming the parameter and why.
    pub fn invalid(param: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            "InvalidParameter",
            format!("The specified parameter \"{param}\" is not valid: {why}."),
        )
    }
    /// `InvalidEniId.NotFound` (404).
    pub fn eni_not_found(eni_id: &str) -> Self {
        Self::new(
            404,
            "InvalidEniId.NotFound",
            format!("The specified network interface {eni_id} does not exist."),
        )
    }
    /// `InvalidEcsId.NotFound` (404).
    pub fn instance_not_found(instance_id: &str) -> Self {
        Self::new(
            404,
            "InvalidEcsId.NotFound",
            format!("The specified instance {instance_id} does not exist."),
        )
    }
    /// `InvalidVSwitchId.NotFound` (404).
    pub fn vswitch_not_found(vsw: &str) -> Self {
        Self::new(
            404,
            "InvalidVSwitchId.NotFound",
            format!("The specified vSwitch {vsw} does not exist."),
        )
    }
    /// `InvalidOperation.InvalidEniState` (403).
    pub fn invalid_eni_state(eni_id: &str, status: &str, action: &str) -> Self {
        Self::new(
            403,
            "InvalidOperation.InvalidEniState",
            format!("The network interface {eni_id} is {status}; {action} is not allowed in this state."),
        )
    }
    /// `Operation.Conflict` (403): another operation on the resource is in flight.
    pub fn conflict(eni_id: &str, status: &str) -> Self {
        Self::new(
            403,
            "Operation.Conflict",
            format!("The operation conflicts with another operation on {eni_id}, which is {status}; retry later."),
        )
    }
    /// `InternalError` (500).
    pub fn internal(why: impl Into<String>) -> Self {
        Self::new(500, "InternalError", why)
    }
    /// `RequestBodyTooLarge` (413) naming the limit.
    pub fn body_too_large(limit_bytes: usize) -> Self {
        Self::new(
            413,
            "RequestBodyTooLarge",
            format!(
                "The request body is larger than the limit of {limit_bytes} bytes ({}); send fewer parameters per call.",
                human_bytes(limit_bytes)
            ),
        )
    }
    /// `RequestHeaderFieldsTooLarge` (431): too many header fields.
    pub fn too_many_headers(count: usize, limit: usize) -> Self {
        Self::new(
            431,
            "RequestHeaderFieldsTooLarge",
            format!("The request has {count} header fields; the limit is {limit}."),
        )
    }
    /// `RequestHeaderFieldsTooLarge` (431): the request line and headers are too long.
    pub fn head_too_large(size: usize, limit_bytes: usize) -> Self {
        Self::new(
            431,
            "RequestHeaderFieldsTooLarge",
            format!(
                "The request line and headers take {size} bytes; the limit is {limit_bytes} bytes ({}).",
                human_bytes(limit_bytes)
            ),
        )
    }

    /// The JSON body the gateway answers for this error: `Code`, `Message`, `HostId`, `Recommend`,
    /// `RequestId`. Every error answer of the OpenAPI listener is built here, so they all look alike.
    pub fn body(&self, host_id: &str, request_id: &str) -> serde_json::Value {
        serde_json::json!({
            "Code": self.code,
            "Message": self.message,
            "HostId": host_id,
            "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}", self.code),
            "RequestId": request_id,
        })
    }
}

/// `2 MiB`, `64 KiB`, `100 bytes`: limits as people write them.
fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// Failure to start, configure or persist the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The configuration file could not be read.
    #[error("cannot read emulator config {path}: {source}")]
    ReadConfig {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The configuration file is not valid JSON for [`crate::EmulatorConfig`].
    #[error("cannot parse emulator config {path}: {source}")]
    ParseConfig {
        /// File.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid emulator config: {0}")]
    InvalidConfig(String),
    /// Binding or serving a listener failed.
    #[error("emulator {what} listener: {source}")]
    Listen {
        /// Which listener (api / metadata / admin).
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The state file could not be written or read back.
    #[error("emulator state file {path}: {why}; delete it to start from the configuration")]
    State {
        /// File.
        path: PathBuf,
        /// Cause.
        why: String,
    },
}
