//! CNI errors as the spec prints them: `{"cniVersion", "code", "msg", "details"}` on stdout with a
//! non-zero exit. Codes 1–99 are the spec's; 100 and up are Terway-rs's own.

use serde_json::{json, Value};

use crate::version::CniVersion;

/// Error codes of the CNI spec and ours.
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, CNI_ARGS, …).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (e.g. reading stdin).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not the expected JSON).
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later: a transient condition the runtime should retry.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (cannot serve ADD).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;
    /// Ours: no IP address available (node capacity or vSwitch exhausted).
    pub const NO_IP_AVAILABLE: u32 = 100;
    /// Ours: the node daemon failed or is unreachable.
    pub const DAEMON_ERROR: u32 = 101;
    /// Ours: programming the kernel datapath failed.
    pub const DATAPATH_ERROR: u32 = 102;
    /// Ours: a bug in the plugin (caught panic).
    pub const INTERNAL_ERROR: u32 = 103;
}

/// A CNI error: spec code, short message, details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// Spec or plugin error code.
    pub code: u32,
    /// Short description.
    pub msg: String,
    /// Longer explanation (what to do), may be empty.
    pub details: String,
}

impl CniError {
    /// An error with a code, message and details.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Code 1.
    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(codes::INCOMPATIBLE_VERSION, msg, "")
    }

    /// Code 2.
    pub fn unsupported_field(msg: impl Into<String>) -> Self {
        Self::new(codes::UNSUPPORTED_FIELD, msg, "")
    }

    /// Code 3.
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        Self::new(codes::UNKNOWN_CONTAINER, msg, "")
    }

    /// Code 4.
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(codes::INVALID_ENV, msg, "")
    }

    /// Code 5.
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(codes::IO_FAILURE, msg, "")
    }

    /// Code 6.
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(codes::DECODE_FAILURE, msg, "")
    }

    /// Code 7.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(codes::INVALID_NETWORK_CONFIG, msg, "")
    }

    /// Code 11.
    pub fn try_again_later(msg: impl Into<String>) -> Self {
        Self::new(codes::TRY_AGAIN_LATER, msg, "")
    }

    /// Code 100.
    pub fn no_ip_available(msg: impl Into<String>) -> Self {
        Self::new(codes::NO_IP_AVAILABLE, msg, "")
    }

    /// Code 101.
    pub fn daemon(msg: impl Into<String>) -> Self {
        Self::new(codes::DAEMON_ERROR, msg, "")
    }

    /// Code 102.
    pub fn datapath(msg: impl Into<String>) -> Self {
        Self::new(codes::DATAPATH_ERROR, msg, "")
    }

    /// Code 103.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL_ERROR, msg, "")
    }

    /// Add or replace the details text.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The spec JSON for this error, stamped with `version`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut v = json!({"cniVersion": version.as_str(), "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }

    /// The process exit status to use with this error (always non-zero; the spec only requires
    /// non-zero, and 1 is what the reference plugins use).
    pub fn exit_code(&self) -> i32 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::invalid_config("bad mtu").with_details("set mtu between 1280 and 9000");
        assert_eq!(
            e.to_json(CniVersion::V1_1_0),
            json!({"cniVersion":"1.1.0","code":7,"msg":"bad mtu","details":"set mtu between 1280 and 9000"})
        );
        assert_eq!(e.to_string(), "bad mtu: set mtu between 1280 and 9000");
        let e = CniError::try_again_later("busy");
        assert_eq!(
            e.to_json(CniVersion::V0_4_0),
            json!({"cniVersion":"0.4.0","code":11,"msg":"busy"})
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn constructors_codes() {
        let all = [
            (CniError::incompatible_version(""), 1),
            (CniError::unsupported_field(""), 2),
            (CniError::unknown_container(""), 3),
            (CniError::invalid_env(""), 4),
            (CniError::io(""), 5),
            (CniError::decode(""), 6),
            (CniError::invalid_config(""), 7),
            (CniError::try_again_later(""), 11),
            (CniError::no_ip_available(""), 100),
            (CniError::daemon(""), 101),
            (CniError::datapath(""), 102),
            (CniError::internal(""), 103),
        ];
        for (e, code) in all {
            assert_eq!(e.code, code);
        }
    }
}
