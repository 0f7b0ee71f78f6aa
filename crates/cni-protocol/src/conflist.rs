//! Runtime-side helpers for `.conflist` files: derive the JSON a runtime hands to one plugin of the
//! list (spec §3: `name` and `cniVersion` of the list replace the plugin's own), so the lab, the CLI
//! and tests can invoke the plugin exactly as containerd or CRI-O would.

use serde_json::{Map, Value};

use crate::error::CniError;
use crate::version::CniVersion;

/// The configuration the runtime passes to the first plugin of `conflist` whose `type` is
/// `plugin_type`, with the list's `name` and `cniVersion` injected (the highest supported entry of
/// `cniVersions` when the list gives one), plus `runtime_config` if any.
pub fn plugin_config(
    conflist: &Value,
    plugin_type: &str,
    runtime_config: Option<Value>,
) -> Result<Value, CniError> {
    let list = conflist
        .as_object()
        .ok_or_else(|| CniError::decode("network configuration list must be a JSON object"))?;
    let name = list
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| CniError::invalid_config("network configuration list has no \"name\""))?;
    let version = pick_version(list)?;
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            CniError::invalid_config("network configuration list has no \"plugins\" array")
        })?;
    let plugin = plugins
        .iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some(plugin_type))
        .and_then(Value::as_object)
        .ok_or_else(|| {
            CniError::invalid_config(format!(
                "no plugin of type {plugin_type:?} in list {name:?}"
            ))
        })?;
    let mut out: Map<String, Value> = plugin.clone();
    out.insert("name".into(), Value::String(name.to_string()));
    out.insert(
        "cniVersion".into(),
        Value::String(version.as_str().to_string()),
    );
    if let Some(rc) = runtime_config {
        out.insert("runtimeConfig".into(), rc);
    }
    Ok(Value::Object(out))
}

fn pick_version(list: &Map<String, Value>) -> Result<CniVersion, CniError> {
    if let Some(Value::Array(versions)) = list.get("cniVersions") {
        if let Some(best) = versions
            .iter()
            .filter_map(|v| v.as_str()?.parse::<CniVersion>().ok())
            .max()
        {
            return Ok(best);
        }
    }
    match list.get("cniVersion").and_then(Value::as_str) {
        Some(v) => v.parse().map_err(|e: crate::version::UnsupportedVersion| {
            CniError::incompatible_version(e.to_string())
        }),
        None => Err(CniError::invalid_config(
            "network configuration list has no \"cniVersion\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetConf;
    use crate::error::codes;
    use serde_json::json;

    fn terway_conflist() -> Value {
        json!({
            "cniVersion": "0.4.0", "name": "terway-chainer",
            "plugins": [
                {"type": "terway", "eniip_virtual_type": "veth", "capabilities": {"bandwidth": true}, "mtu": 1500},
                {"type": "cilium-cni", "enable-debug": false}
            ]
        })
    }

    #[test]
    fn injects_name_version_and_runtime_config() {
        let rc = json!({"bandwidth": {"ingressRate": 8000}});
        let v = plugin_config(&terway_conflist(), "terway", Some(rc)).unwrap();
        let conf = NetConf::from_value(v).unwrap();
        assert_eq!(
            (conf.name.as_str(), conf.cni_version),
            ("terway-chainer", CniVersion::V0_4_0)
        );
        assert_eq!(
            conf.runtime_config.bandwidth.unwrap().ingress_rate,
            Some(8000)
        );
        assert_eq!(conf.raw["eniip_virtual_type"], "veth");
        let cilium = plugin_config(&terway_conflist(), "cilium-cni", None).unwrap();
        assert_eq!(cilium["name"], "terway-chainer");
    }

    #[test]
    fn picks_highest_of_cni_versions() {
        let mut list = terway_conflist();
        list["cniVersions"] = json!(["0.4.0", "1.1.0", "9.0.0"]);
        let v = plugin_config(&list, "terway", None).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn errors() {
        assert_eq!(
            plugin_config(&json!([]), "terway", None).unwrap_err().code,
            codes::DECODE_FAILURE
        );
        assert_eq!(
            plugin_config(&terway_conflist(), "bridge", None)
                .unwrap_err()
                .code,
            codes::INVALID_NETWORK_CONFIG
        );
        let mut list = terway_conflist();
        list["cniVersion"] = json!("0.1.0");
        assert_eq!(
            plugin_config(&list, "terway", None).unwrap_err().code,
            codes::INCOMPATIBLE_VERSION
        );
        list.as_object_mut().unwrap().remove("name");
        assert_eq!(
            plugin_config(&list, "terway", None).unwrap_err().code,
            codes::INVALID_NETWORK_CONFIG
        );
    }
}
