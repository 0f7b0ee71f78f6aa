//! The ADD result (`interfaces`, `ips`, `routes`, `dns`) as version-independent types, printed in
//! the shape of the version the runtime asked for: 0.3.x/0.4.0 put `"version": "4"|"6"` on each IP;
//! 1.x drops it; 1.1.0 adds interface `mtu`/`socketPath`/`pciID` and route `mtu`/`advmss`/
//! `priority`/`table`/`scope`. Parsing (for `prevResult`) accepts every shape.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::version::CniVersion;

/// An interface the plugin created or configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (1.1.0+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for container-side interfaces; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Socket path for socket-based interfaces (1.1.0+).
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// PCI ID of a passed-through device (1.1.0+).
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An assigned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length, e.g. 10.0.0.5/24.
    pub address: IpNet,
    /// Default gateway for this subnet, if any.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// A route to add in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent = the IP's gateway.
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0+).
    pub mtu: Option<u32>,
    /// TCP advertised MSS (1.1.0+).
    pub advmss: Option<u32>,
    /// Route priority / metric (1.1.0+).
    pub priority: Option<u32>,
    /// Routing table (1.1.0+).
    pub table: Option<u32>,
    /// Route scope (1.1.0+).
    pub scope: Option<u8>,
}

impl Route {
    /// A route with only destination and gateway.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Self {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings of the result (and of the config's `dns` key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A version-independent CNI result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
}

/// Why a result JSON cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ResultError(pub String);

impl CniResult {
    /// An empty result.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an interface and return its index (for [`IpConfig::interface`]).
    pub fn add_interface(&mut self, iface: Interface) -> usize {
        self.interfaces.push(iface);
        self.interfaces.len() - 1
    }

    /// Add an address on interface `interface`.
    pub fn add_ip(
        &mut self,
        address: IpNet,
        gateway: Option<IpAddr>,
        interface: Option<usize>,
    ) -> &mut Self {
        self.ips.push(IpConfig {
            address,
            gateway,
            interface,
        });
        self
    }

    /// Add a route.
    pub fn add_route(&mut self, route: Route) -> &mut Self {
        self.routes.push(route);
        self
    }

    /// The JSON of this result in `version`'s shape, with `cniVersion` set.
    pub fn to_json_for_version(&self, version: CniVersion) -> Value {
        let v11 = version >= CniVersion::V1_1_0;
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let ifaces = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if !v11 {
                        i.mtu = None;
                        i.socket_path = None;
                        i.pci_id = None;
                    }
                    serde_json::to_value(i).unwrap_or(Value::Null)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(ifaces));
        }
        if !self.ips.is_empty() {
            let ips = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if !version.is_v1() {
                        let fam = if ip.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        };
                        m.insert("version".into(), json!(fam));
                    }
                    m.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), json!(gw.to_string()));
                    }
                    if let Some(idx) = ip.interface {
                        m.insert("interface".into(), json!(idx));
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            let routes = self
                .routes
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    m.insert("dst".into(), json!(r.dst.to_string()));
                    if let Some(gw) = r.gw {
                        m.insert("gw".into(), json!(gw.to_string()));
                    }
                    if v11 {
                        for (k, v) in [
                            ("mtu", r.mtu),
                            ("advmss", r.advmss),
                            ("priority", r.priority),
                            ("table", r.table),
                        ] {
                            if let Some(v) = v {
                                m.insert(k.into(), json!(v));
                            }
                        }
                        if let Some(s) = r.scope {
                            m.insert("scope".into(), json!(s));
                        }
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).unwrap_or_else(|_| json!({})),
        );
        Value::Object(out)
    }

    /// Read a result of any supported shape (0.3.x, 0.4.0, 1.x), e.g. a `prevResult`.
    pub fn from_json(v: &Value) -> Result<Self, ResultError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ResultError("a result must be a JSON object".into()))?;
        let err = |m: String| ResultError(m);
        let interfaces: Vec<Interface> = match obj.get("interfaces") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| err(format!("interfaces: {e}")))?
            }
        };
        let mut ips = Vec::new();
        for (i, ip) in array(obj.get("ips"), "ips")?.iter().enumerate() {
            let address = cidr_field(ip, "address").map_err(|m| err(format!("ips[{i}].{m}")))?;
            let gateway = addr_field(ip, "gateway").map_err(|m| err(format!("ips[{i}].{m}")))?;
            let interface = match ip.get("interface") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n < interfaces.len() => Some(n),
                    _ => {
                        return Err(err(format!(
                            "ips[{i}].interface {n} does not index interfaces"
                        )))
                    }
                },
                Some(_) => return Err(err(format!("ips[{i}].interface must be a number"))),
            };
            if let Some(ver) = ip.get("version").and_then(Value::as_str) {
                let fam_ok = matches!((ver, address.addr().is_ipv4()), ("4", true) | ("6", false));
                if !fam_ok {
                    return Err(err(format!(
                        "ips[{i}].version {ver:?} does not match address {address}"
                    )));
                }
            }
            ips.push(IpConfig {
                address,
                gateway,
                interface,
            });
        }
        let mut routes = Vec::new();
        for (i, r) in array(obj.get("routes"), "routes")?.iter().enumerate() {
            let dst = cidr_field(r, "dst").map_err(|m| err(format!("routes[{i}].{m}")))?;
            let gw = addr_field(r, "gw").map_err(|m| err(format!("routes[{i}].{m}")))?;
            let num = |k: &str| -> Result<Option<u32>, ResultError> {
                match r.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .map(Some)
                        .ok_or_else(|| {
                            err(format!("routes[{i}].{k} must be a non-negative integer"))
                        }),
                }
            };
            let scope = match num("scope")? {
                None => None,
                Some(s) => Some(
                    u8::try_from(s)
                        .map_err(|_| err(format!("routes[{i}].scope {s} is above 255")))?,
                ),
            };
            routes.push(Route {
                dst,
                gw,
                mtu: num("mtu")?,
                advmss: num("advmss")?,
                priority: num("priority")?,
                table: num("table")?,
                scope,
            });
        }
        let dns: Dns = match obj.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| err(format!("dns: {e}")))?,
        };
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
    }
}

fn array<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a [Value], ResultError> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ResultError(format!("{what} must be an array"))),
    }
}

fn cidr_field(v: &Value, key: &str) -> Result<IpNet, String> {
    match v.get(key) {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("{key} {s:?} is not an address/prefix")),
        _ => Err(format!("{key} is missing or not a string")),
    }
}

fn addr_field(v: &Value, key: &str) -> Result<Option<IpAddr>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{key} {s:?} is not an IP address")),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

#[cfg(test)]
#[path = "result_tests.rs"]
mod tests;
