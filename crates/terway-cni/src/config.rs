//! The plugin's configuration: Terway's keys (parsed by `terway_core::TerwayCniConf`) plus a few of ours
//! that make every path configurable (tests and the lab run the plugin against their own namespaces).

use std::path::PathBuf;
use std::time::Duration;

use cni_protocol::{CniError, NetConf};
use serde_json::Value;
use terway_core::TerwayCniConf;

/// Default log file when `debug` is set (Terway's path).
pub const DEFAULT_LOG_FILE: &str = "/var/log/terway.cni.log";
/// Default directory for per-ENI lock files.
pub const DEFAULT_LOCK_DIR: &str = "/var/run/terway/locks";

/// Everything the plugin reads from its network configuration.
#[derive(Debug, Clone)]
pub struct PluginConf {
    /// Terway's own keys.
    pub terway: TerwayCniConf,
    /// Namespace holding the node's interfaces; `None` = the namespace the plugin runs in.
    pub host_netns: Option<PathBuf>,
    /// Per-ENI lock files.
    pub lock_dir: PathBuf,
    /// Log file used when `debug` is on.
    pub log_file: PathBuf,
    /// How many times to look for a freshly attached ENI by MAC.
    pub eni_wait_attempts: u32,
    /// Pause between those lookups.
    pub eni_wait_interval: Duration,
}

fn str_key(raw: &Value, key: &str) -> Result<Option<String>, CniError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(other) => Err(CniError::invalid_config(format!(
            "CNI config.{key}: {other} must be a non-empty string"
        ))),
    }
}

fn u64_key(raw: &Value, key: &str) -> Result<Option<u64>, CniError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            CniError::invalid_config(format!(
                "CNI config.{key}: {v} must be a non-negative integer"
            ))
        }),
    }
}

impl PluginConf {
    /// Read and validate the plugin keys of `config`.
    pub fn from_netconf(config: &NetConf) -> Result<Self, CniError> {
        let raw = &config.raw;
        let terway =
            TerwayCniConf::from_value(raw).map_err(|e| CniError::invalid_config(e.to_string()))?;
        let attempts = u64_key(raw, "eni_wait_attempts")?.unwrap_or(10);
        let interval = u64_key(raw, "eni_wait_interval_ms")?.unwrap_or(1000);
        Ok(Self {
            terway,
            host_netns: str_key(raw, "host_netns")?.map(PathBuf::from),
            lock_dir: str_key(raw, "lock_dir")?
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCK_DIR)),
            log_file: str_key(raw, "log_file")?
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_FILE)),
            eni_wait_attempts: u32::try_from(attempts.clamp(1, 600)).unwrap_or(10),
            eni_wait_interval: Duration::from_millis(interval.min(60_000)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"terway","type":"terway"}"#).unwrap();
        let p = PluginConf::from_netconf(&c).unwrap();
        assert_eq!(p.lock_dir, PathBuf::from(DEFAULT_LOCK_DIR));
        assert_eq!(p.eni_wait_attempts, 10);
        assert!(p.host_netns.is_none());
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"terway","type":"terway","host_netns":"/run/netns/x","eni_wait_attempts":2,"eni_wait_interval_ms":10,"mtu":1400}"#,
        )
        .unwrap();
        let p = PluginConf::from_netconf(&c).unwrap();
        assert_eq!(p.host_netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!(
            (p.eni_wait_attempts, p.eni_wait_interval),
            (2, Duration::from_millis(10))
        );
        assert_eq!(p.terway.mtu, 1400);
        let bad = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"terway","type":"terway","eni_wait_attempts":"x"}"#,
        )
        .unwrap();
        assert_eq!(PluginConf::from_netconf(&bad).unwrap_err().code, 7);
    }
}
