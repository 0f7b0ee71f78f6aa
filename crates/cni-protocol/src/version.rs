//! CNI specification versions this crate speaks, and the VERSION reply.

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

/// A CNI spec version we support (0.3.0 … 1.1.0). Ordered oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.3.0: results with `interfaces`, `ips[].version`.
    V0_3_0,
    /// 0.3.1: same result shape as 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK and `prevResult` on DEL.
    V0_4_0,
    /// 1.0.0: `ips[].version` dropped.
    V1_0_0,
    /// 1.1.0: STATUS, GC, interface `mtu`/`socketPath`/`pciID`, route `mtu`/`advmss`/`priority`/`table`/`scope`.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first (the VERSION reply lists these).
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest version we speak.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// True for the 1.x result shape (no `ips[].version`).
    pub fn is_v1(self) -> bool {
        self >= CniVersion::V1_0_0
    }

    /// The supported versions as a comma-separated list, for messages.
    pub fn supported_list() -> String {
        Self::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A version string we do not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI version {0:?} is not supported; this plugin supports {list}", list = CniVersion::supported_list())]
pub struct UnsupportedVersion(pub String);

impl FromStr for CniVersion {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnsupportedVersion(s.to_string()))
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON printed for the VERSION command.
pub fn version_reply() -> Value {
    let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
    json!({"cniVersion": CniVersion::LATEST.as_str(), "supportedVersions": supported})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        for v in CniVersion::ALL {
            assert_eq!(v.as_str().parse::<CniVersion>().unwrap(), v);
        }
        assert!(CniVersion::V0_4_0 < CniVersion::V1_0_0);
        assert!(!CniVersion::V0_4_0.is_v1());
        assert!(CniVersion::V1_0_0.is_v1());
        let e = "0.2.0".parse::<CniVersion>().unwrap_err();
        assert_eq!(e.to_string(), "CNI version \"0.2.0\" is not supported; this plugin supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
        assert!("1.1".parse::<CniVersion>().is_err());
    }

    #[test]
    fn version_reply_lists_all() {
        let r = version_reply();
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(
            r["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }
}
