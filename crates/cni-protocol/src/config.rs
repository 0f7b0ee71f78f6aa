//! The network configuration a plugin receives on stdin: a single `.conf`, or one plugin entry of a
//! `.conflist` with `name`/`cniVersion` injected by the runtime. Standard keys are typed; the whole
//! object stays available as `raw` so the plugin reads its own keys from the same JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::result::{CniResult, Dns};
use crate::version::CniVersion;

/// `runtimeConfig.bandwidth` (bits/s and bits; containerd and podman both send camelCase, the
/// capitalised spelling is accepted too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthEntry {
    /// Ingress rate in bits/s.
    #[serde(
        rename = "ingressRate",
        alias = "IngressRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_rate: Option<u64>,
    /// Ingress burst in bits.
    #[serde(
        rename = "ingressBurst",
        alias = "IngressBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_burst: Option<u64>,
    /// Egress rate in bits/s.
    #[serde(
        rename = "egressRate",
        alias = "EgressRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_rate: Option<u64>,
    /// Egress burst in bits.
    #[serde(
        rename = "egressBurst",
        alias = "EgressBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_burst: Option<u64>,
}

/// One `runtimeConfig.portMappings` entry. containerd sends `HostPort`/`ContainerPort`/`Protocol`/
/// `HostIP`; podman sends camelCase. Both are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host.
    #[serde(rename = "hostPort", alias = "HostPort")]
    pub host_port: u16,
    /// Port in the container.
    #[serde(rename = "containerPort", alias = "ContainerPort")]
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (as given).
    #[serde(
        rename = "protocol",
        alias = "Protocol",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol: Option<String>,
    /// Host address to bind, if any.
    #[serde(
        rename = "hostIP",
        alias = "HostIP",
        alias = "hostIp",
        alias = "HostIp",
        default
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// `runtimeConfig.dns` (the runtime's view: servers/searches/options).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeDns {
    /// Name servers.
    #[serde(default, alias = "Servers")]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default, alias = "Searches")]
    pub searches: Vec<String>,
    /// resolv.conf options.
    #[serde(default, alias = "Options")]
    pub options: Vec<String>,
}

/// `runtimeConfig`: typed for the capabilities we use, everything else kept in `other`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// `bandwidth` capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthEntry>,
    /// `portMappings` capability.
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub port_mappings: Vec<PortMapping>,
    /// `dns` capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<RuntimeDns>,
    /// Other runtime config keys (ips, mac, cgroupPath, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValidAttachment {
    /// The container ID that is still valid.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface name.
    pub ifname: String,
}

/// GC: the attachments the runtime still considers live.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The key an early 1.1.0 draft used; libcni sends both, we read it when the first is absent.
pub const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// A parsed plugin configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// The version the runtime speaks; results and errors use it.
    pub cni_version: CniVersion,
    /// Network name.
    pub name: String,
    /// Plugin type (binary name).
    pub plugin_type: String,
    /// Declared capabilities (`{"bandwidth": true}`).
    pub capabilities: BTreeMap<String, bool>,
    /// IPAM section, untouched.
    pub ipam: Option<Value>,
    /// Static DNS of the config.
    pub dns: Option<Dns>,
    /// Runtime-provided capability values.
    pub runtime_config: RuntimeConfig,
    /// `args` section, untouched.
    pub args: Option<Value>,
    /// The previous plugin's result, parsed.
    pub prev_result: Option<CniResult>,
    /// GC only: attachments to keep.
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// The whole JSON object, for plugin-specific keys.
    pub raw: Value,
}

/// Check a network name: alphanumeric first, then alphanumerics, `_`, `.` or `-`.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_config(format!(
            "network name {name:?} is invalid: it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        )))
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<T>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            CniError::decode(format!(
                "failed to decode network config field {key:?}: {e}"
            ))
        }),
    }
}

fn highest_supported(list: &Value) -> Result<CniVersion, CniError> {
    let Value::Array(items) = list else {
        return Err(CniError::decode(
            "network config field \"cniVersions\" must be a list of strings",
        ));
    };
    let mut best = None;
    for item in items {
        let s = item.as_str().ok_or_else(|| {
            CniError::decode("network config field \"cniVersions\" must be a list of strings")
        })?;
        if let Ok(v) = s.parse::<CniVersion>() {
            best = best.max(Some(v));
        }
    }
    best.ok_or_else(|| {
        CniError::incompatible_version(format!(
            "none of cniVersions {list} is supported; this plugin supports {}",
            CniVersion::supported_list()
        ))
    })
}

/// Best effort: the supported `cniVersion` of some stdin bytes, to stamp on an error reply.
pub fn sniff_version(stdin: &[u8]) -> Option<CniVersion> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    match v.get("cniVersion") {
        Some(s) => s.as_str()?.parse().ok(),
        None => highest_supported(v.get("cniVersions")?).ok(),
    }
}

impl NetConf {
    /// Parse stdin bytes. Not JSON / wrong types → 6; missing or invalid `cniVersion`/`name`/`type`
    /// → 7; a version we do not speak → 1.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::decode("no network configuration on stdin"));
        }
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::decode(format!("network configuration is not valid JSON: {e}"))
        })?;
        Self::from_value(raw)
    }

    /// Parse an already-decoded JSON value.
    pub fn from_value(raw: Value) -> Result<Self, CniError> {
        let Value::Object(obj) = &raw else {
            return Err(CniError::decode(
                "network configuration must be a JSON object",
            ));
        };
        let version = match (obj.get("cniVersion"), obj.get("cniVersions")) {
            (Some(Value::String(s)), _) => s
                .parse::<CniVersion>()
                .map_err(|e| CniError::incompatible_version(e.to_string()))?,
            (Some(_), _) => {
                return Err(CniError::decode(
                    "network config field \"cniVersion\" must be a string",
                ))
            }
            // 1.1.0 lets a config list several versions; take the newest one we speak.
            (None, Some(list)) => highest_supported(list)?,
            (None, None) => {
                return Err(CniError::invalid_config(
                    "network configuration has no \"cniVersion\"",
                ))
            }
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(CniError::decode(
                    "network config field \"name\" must be a string",
                ))
            }
            None => {
                return Err(CniError::invalid_config(
                    "network configuration has no \"name\"",
                ))
            }
        };
        validate_network_name(&name)?;
        let plugin_type = match obj.get("type") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => {
                return Err(CniError::invalid_config(
                    "network configuration has no plugin \"type\"",
                ))
            }
            Some(_) => {
                return Err(CniError::decode(
                    "network config field \"type\" must be a string",
                ))
            }
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                CniResult::from_json(v)
                    .map_err(|e| CniError::decode(format!("failed to decode prevResult: {e}")))?,
            ),
        };
        let valid_attachments = match typed::<Vec<ValidAttachment>>(obj, VALID_ATTACHMENTS_KEY)? {
            Some(v) => Some(v),
            None => typed::<Vec<ValidAttachment>>(obj, LEGACY_ATTACHMENTS_KEY)?,
        };
        Ok(NetConf {
            cni_version: version,
            name,
            plugin_type,
            capabilities: typed(obj, "capabilities")?.unwrap_or_default(),
            ipam: obj.get("ipam").cloned().filter(|v| !v.is_null()),
            dns: typed(obj, "dns")?,
            runtime_config: typed(obj, "runtimeConfig")?.unwrap_or_default(),
            args: obj.get("args").cloned().filter(|v| !v.is_null()),
            prev_result,
            valid_attachments,
            raw,
        })
    }

    /// A plugin-specific key from the raw object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key)
    }

    /// True if the config declares capability `name`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).copied().unwrap_or(false)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
