//! The Terway plugin's own keys inside its CNI network configuration (reference §6.3), read from
//! the same JSON object the CNI protocol layer parses. Standard CNI keys (`cniVersion`, `name`,
//! `type`, `capabilities`, `runtimeConfig`, `prevResult`, …) are left to the protocol layer.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config_error::{config_enum, deserialize_naming_key, into_object, ConfigError};
use crate::duration::GoDuration;

config_enum! {
    /// Datapath for shared-ENI pods.
    EniipVirtualType {
        /// veth pair + policy routing (default).
        Veth = "veth",
        /// IPvlan L2 on the ENI.
        Ipvlan = "ipvlan" | "IPVlan",
        /// Terway's DataPath V2 (veth + eBPF).
        DatapathV2 = "datapathv2",
    }
}

config_enum! {
    /// How bandwidth limits are enforced.
    BandwidthMode {
        /// tbf qdiscs.
        Tc = "tc",
        /// Earliest-departure-time with fq.
        Edt = "edt",
    }
}

config_enum! {
    /// How trunk VLAN tags are stripped.
    VlanStripType {
        /// tc push/pop (default).
        Filter = "filter",
        /// A VLAN sub-interface.
        Vlan = "vlan",
    }
}

config_enum! {
    /// Network policy engine.
    NetworkPolicyProvider {
        /// Felix/iptables.
        Iptables = "iptables",
        /// Cilium/eBPF.
        Ebpf = "ebpf",
    }
}

/// Default daemon socket path.
pub const DEFAULT_DAEMON_SOCKET: &str = "/var/run/eni/eni.socket";

/// Settings of the host connmark-based symmetric routing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SymmetricRoutingConfig {
    /// Interface the rules apply to.
    pub interface: Option<String>,
    /// Firewall mark.
    pub mark: Option<u32>,
    /// Mark mask.
    pub mask: Option<u32>,
    /// Routing table.
    pub table_id: Option<u32>,
    /// Rule priority.
    pub rule_priority: Option<u32>,
    /// Comment on the firewall rules.
    pub comment: Option<String>,
    /// Firewall backend.
    pub backend: Option<String>,
}

/// Terway's plugin-specific CNI configuration keys plus ours (`daemon_socket`, `daemon_timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TerwayCniConf {
    /// Shared-ENI datapath.
    pub eniip_virtual_type: EniipVirtualType,
    /// CIDRs forced to the host stack.
    pub host_stack_cidrs: Vec<IpNet>,
    /// Pod/ENI MTU.
    pub mtu: u32,
    /// terway-cli: take `mtu` from eth0.
    pub auto_mtu: bool,
    /// QoS enforcement.
    pub bandwidth_mode: BandwidthMode,
    /// Trunk VLAN handling.
    pub vlan_strip_type: VlanStripType,
    /// Exclusive ENI: no host peer veth (services then unreachable).
    pub disable_host_peer: bool,
    /// tc prio classes on the ENI.
    pub enable_network_priority: bool,
    /// Host symmetric routing.
    pub symmetric_routing: bool,
    /// Symmetric routing details.
    pub symmetric_routing_config: Option<SymmetricRoutingConfig>,
    /// Verbose plugin logging.
    pub debug: bool,
    /// Network policy engine.
    pub network_policy_provider: Option<NetworkPolicyProvider>,
    /// Parsed but unused (Terway hard-codes `cali`).
    pub veth_prefix: Option<String>,
    /// Daemon gRPC socket.
    pub daemon_socket: String,
    /// Deadline of one daemon call.
    pub daemon_timeout: GoDuration,
    /// Everything else (standard CNI keys, cilium_* keys, …).
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

impl Default for TerwayCniConf {
    fn default() -> Self {
        Self {
            eniip_virtual_type: EniipVirtualType::Veth,
            host_stack_cidrs: Vec::new(),
            mtu: 1500,
            auto_mtu: false,
            bandwidth_mode: BandwidthMode::Tc,
            vlan_strip_type: VlanStripType::Filter,
            disable_host_peer: false,
            enable_network_priority: false,
            symmetric_routing: false,
            symmetric_routing_config: None,
            debug: false,
            network_policy_provider: None,
            veth_prefix: None,
            daemon_socket: DEFAULT_DAEMON_SOCKET.into(),
            daemon_timeout: GoDuration::from_secs(120),
            other: serde_json::Map::new(),
        }
    }
}

/// Smallest MTU we accept (IPv6 minimum).
pub const MIN_MTU: u32 = 1280;
/// Largest MTU we accept (jumbo frames on Alibaba Cloud ENIs).
pub const MAX_MTU: u32 = 9000;

impl TerwayCniConf {
    /// Read the plugin keys from the plugin's JSON object and validate them.
    pub fn from_value(v: &Value) -> Result<Self, ConfigError> {
        let obj = into_object("CNI config", v.clone())?;
        let conf: Self = deserialize_naming_key("CNI config", obj)?;
        conf.validate()?;
        Ok(conf)
    }

    /// Check value ranges; the error names the key and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(ConfigError::invalid(
                "CNI config.mtu",
                format!("{} is outside {MIN_MTU}..={MAX_MTU}", self.mtu),
            ));
        }
        if self.daemon_socket.trim().is_empty() {
            return Err(ConfigError::invalid(
                "CNI config.daemon_socket",
                "\"\" must be a unix socket path",
            ));
        }
        if self.daemon_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "CNI config.daemon_timeout",
                "\"0s\" must be longer than zero",
            ));
        }
        Ok(())
    }

    /// The daemon call deadline.
    pub fn daemon_timeout(&self) -> Duration {
        self.daemon_timeout.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let c = TerwayCniConf::from_value(
            &json!({"cniVersion":"0.4.0","name":"terway","type":"terway"}),
        )
        .unwrap();
        assert_eq!(c.eniip_virtual_type, EniipVirtualType::Veth);
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.bandwidth_mode, BandwidthMode::Tc);
        assert_eq!(c.vlan_strip_type, VlanStripType::Filter);
        assert_eq!(c.daemon_socket, "/var/run/eni/eni.socket");
        assert_eq!(c.daemon_timeout(), Duration::from_secs(120));
        assert_eq!(c.other["name"], "terway");
    }

    #[test]
    fn full_terway_conf() {
        let c = TerwayCniConf::from_value(&json!({
            "cniVersion":"0.4.0","name":"terway","type":"terway",
            "capabilities":{"bandwidth":true},
            "eniip_virtual_type":"ipvlan","host_stack_cidrs":["169.254.20.10/32"],
            "mtu":9000,"bandwidth_mode":"edt","vlan_strip_type":"vlan","disable_host_peer":true,
            "enable_network_priority":true,"symmetric_routing":true,
            "symmetric_routing_config":{"interface":"eth0","mark":16,"mask":16,"table_id":100,"rule_priority":600},
            "debug":true,"network_policy_provider":"ebpf","daemon_socket":"/tmp/x.sock","daemon_timeout":"5s",
            "cilium_enable_hubble":"true"
        }))
        .unwrap();
        assert_eq!(c.eniip_virtual_type, EniipVirtualType::Ipvlan);
        assert_eq!(
            c.host_stack_cidrs,
            vec!["169.254.20.10/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(c.bandwidth_mode, BandwidthMode::Edt);
        assert_eq!(
            c.symmetric_routing_config.as_ref().unwrap().table_id,
            Some(100)
        );
        assert_eq!(c.daemon_timeout(), Duration::from_secs(5));
        assert!(c.other.contains_key("cilium_enable_hubble"));
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = TerwayCniConf::from_value(&json!({"eniip_virtual_type":"macvlan"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CNI config.eniip_virtual_type: \"macvlan\" is not one of veth|ipvlan|datapathv2"
        );
        let e = TerwayCniConf::from_value(&json!({"mtu":100})).unwrap_err();
        assert_eq!(e.to_string(), "CNI config.mtu: 100 is outside 1280..=9000");
        let e = TerwayCniConf::from_value(&json!({"host_stack_cidrs":["nope"]})).unwrap_err();
        assert!(
            e.to_string().starts_with("CNI config.host_stack_cidrs:"),
            "{e}"
        );
        assert!(TerwayCniConf::from_value(&json!([1])).is_err());
    }
}
