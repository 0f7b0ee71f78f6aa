//! The whole state of the emulated cloud in one serialisable value. Actions mutate it under one lock;
//! it is persisted as JSON after every mutating call and is what `GET /_emulator/state` shows.

pub mod alloc;
pub mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use rand::Rng;
use serde::{Deserialize, Serialize};
use terway_cloud::{EniStatus, EniType};

use ipnet::Ipv4Net;

use crate::config::{EmulatorConfig, InstanceConfig};
use crate::error::ApiError;
pub use model::{Eni, Instance, Route, SecurityGroup, SgRule, TokenRecord, VSwitch, Vpc};

/// ClientTokens remembered at most (pruned by a tenth, oldest first, when exceeded). Kept small
/// because the whole world is rewritten after every mutating call when persistence is on.
pub const MAX_TOKENS: usize = 5_000;
/// How long a ClientToken is remembered: far longer than any client's retry window.
pub const TOKEN_TTL_MS: u64 = 3_600_000;

/// Everything the cloud knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct World {
    /// Region.
    pub region_id: String,
    /// The VPC.
    pub vpc: Vpc,
    /// vSwitches by id.
    pub vswitches: BTreeMap<String, VSwitch>,
    /// Instances by id.
    pub instances: BTreeMap<String, Instance>,
    /// ENIs by id (sorted: paging walks this order).
    pub enis: BTreeMap<String, Eni>,
    /// Custom route entries.
    pub routes: Vec<Route>,
    /// Security groups by id (a state file written before they existed loads with none).
    #[serde(default)]
    pub security_groups: BTreeMap<String, SecurityGroup>,
    /// Successful calls by `Action/ClientToken`.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Source of [`Eni::op_seq`] values.
    pub next_seq: u64,
}

/// The current time in the API's ISO 8601 form.
pub fn now_iso() -> String {
    terway_cloud::sign::format_timestamp(SystemTime::now())
}

/// A random resource id: `prefix` + 20 lower-case alphanumerics, like `eni-bp1…`.
pub fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}{tail}")
}

impl World {
    /// The state a fresh emulator starts with.
    pub fn from_config(cfg: &EmulatorConfig) -> Result<Self, ApiError> {
        let mut world = World {
            region_id: cfg.region_id.clone(),
            vpc: Vpc {
                id: cfg.vpc.id.clone(),
                cidr: cfg.vpc.cidr,
                ipv6_cidr: cfg.vpc.ipv6_cidr,
                route_table_id: cfg.vpc.route_table_id.clone(),
            },
            vswitches: cfg
                .vswitches
                .iter()
                .map(|v| {
                    (
                        v.id.clone(),
                        VSwitch {
                            id: v.id.clone(),
                            zone_id: v.zone_id.clone(),
                            cidr: v.cidr,
                            ipv6_cidr: v.ipv6_cidr,
                            used_v4: BTreeSet::new(),
                            used_v6: BTreeSet::new(),
                        },
                    )
                })
                .collect(),
            instances: BTreeMap::new(),
            enis: BTreeMap::new(),
            routes: Vec::new(),
            security_groups: cfg
                .security_groups
                .iter()
                .map(|sg| {
                    (
                        sg.id.clone(),
                        SecurityGroup {
                            id: sg.id.clone(),
                            name: sg.name.clone(),
                            description: String::new(),
                            creation_time: now_iso(),
                            // An open group takes every inbound packet (the lab's default group).
                            rules: if sg.open {
                                vec![SgRule {
                                    direction: "ingress".into(),
                                    protocol: "all".into(),
                                    port_from: -1,
                                    port_to: -1,
                                    cidr: Some(Ipv4Net::default()),
                                    group: None,
                                    accept: true,
                                    priority: 100,
                                }]
                            } else {
                                Vec::new()
                            },
                            inner_accept: true,
                        },
                    )
                })
                .collect(),
            tokens: BTreeMap::new(),
            next_seq: 1,
        };
        for inst in &cfg.instances {
            world.add_instance(inst)?;
        }
        Ok(world)
    }

    /// Remember a successful call under its ClientToken, forgetting records older than
    /// [`TOKEN_TTL_MS`] and the oldest beyond [`MAX_TOKENS`] (the real service forgets them too).
    pub fn remember_token(&mut self, key: String, record: TokenRecord) {
        let horizon = record.at_ms.saturating_sub(TOKEN_TTL_MS);
        self.tokens.retain(|_, r| r.at_ms >= horizon);
        self.tokens.insert(key, record);
        if self.tokens.len() > MAX_TOKENS {
            let mut ages: Vec<(u64, String)> = self
                .tokens
                .iter()
                .map(|(k, r)| (r.at_ms, k.clone()))
                .collect();
            ages.sort();
            for (_, k) in ages.into_iter().take(MAX_TOKENS / 10) {
                self.tokens.remove(&k);
            }
        }
    }

    /// Remove an ENI and give its addresses back to its vSwitch.
    pub fn remove_eni(&mut self, id: &str) -> Option<Eni> {
        let eni = self.enis.remove(id)?;
        if let Some(vsw) = self.vswitches.get_mut(&eni.vswitch_id) {
            alloc::release_v4(vsw, &eni.all_ipv4());
            alloc::release_v6(vsw, &eni.ipv6);
        }
        Some(eni)
    }

    /// A fresh transition sequence number.
    pub fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A MAC in Alibaba's OUI (00:16:3e) not used by any ENI.
    pub fn fresh_mac(&self) -> String {
        let mut rng = rand::rng();
        loop {
            let mac = format!(
                "00:16:3e:{:02x}:{:02x}:{:02x}",
                rng.random::<u8>(),
                rng.random::<u8>(),
                rng.random::<u8>()
            );
            if !self.enis.values().any(|e| e.mac == mac) {
                return mac;
            }
        }
    }

    /// An ENI id not in use.
    pub fn fresh_eni_id(&self) -> String {
        loop {
            let id = random_id("eni-");
            if !self.enis.contains_key(&id) {
                return id;
            }
        }
    }

    /// Look an ENI up or answer `InvalidEniId.NotFound`.
    pub fn eni(&self, id: &str) -> Result<&Eni, ApiError> {
        self.enis.get(id).ok_or_else(|| ApiError::eni_not_found(id))
    }

    /// Mutable ENI or `InvalidEniId.NotFound`.
    pub fn eni_mut(&mut self, id: &str) -> Result<&mut Eni, ApiError> {
        self.enis
            .get_mut(id)
            .ok_or_else(|| ApiError::eni_not_found(id))
    }

    /// Instance or `InvalidEcsId.NotFound`.
    pub fn instance(&self, id: &str) -> Result<&Instance, ApiError> {
        self.instances
            .get(id)
            .ok_or_else(|| ApiError::instance_not_found(id))
    }

    /// vSwitch or `InvalidVSwitchId.NotFound`.
    pub fn vswitch_mut(&mut self, id: &str) -> Result<&mut VSwitch, ApiError> {
        self.vswitches
            .get_mut(id)
            .ok_or_else(|| ApiError::vswitch_not_found(id))
    }

    /// ENIs attached or being attached to `instance_id` (members included).
    pub fn enis_of<'a>(&'a self, instance_id: &'a str) -> impl Iterator<Item = &'a Eni> + 'a {
        self.enis
            .values()
            .filter(move |e| e.instance_id.as_deref() == Some(instance_id))
    }

    /// Create an instance with its primary ENI (InUse). Used at start and at runtime.
    pub fn add_instance(&mut self, cfg: &InstanceConfig) -> Result<Instance, ApiError> {
        if self.instances.contains_key(&cfg.id) {
            return Err(ApiError::invalid(
                "InstanceId",
                format!("instance {} already exists", cfg.id),
            ));
        }
        let mac = match &cfg.primary_mac {
            Some(m) => {
                let m = m.to_ascii_lowercase();
                if self.enis.values().any(|e| e.mac == m) {
                    return Err(ApiError::invalid(
                        "MacAddress",
                        format!("MAC {m} is already used"),
                    ));
                }
                m
            }
            None => self.fresh_mac(),
        };
        let eni_id = self.fresh_eni_id();
        let vpc_id = self.vpc.id.clone();
        let vsw = self.vswitch_mut(&cfg.vswitch_id)?;
        let zone_id = cfg.zone_id.clone().unwrap_or_else(|| vsw.zone_id.clone());
        let primary_ip = match cfg.primary_ip {
            Some(ip) => {
                alloc::claim_v4(vsw, &[ip])?;
                ip
            }
            None => alloc::take_v4(vsw, 1)?[0],
        };
        let now = now_iso();
        let eni = Eni {
            id: eni_id.clone(),
            mac,
            status: EniStatus::InUse,
            eni_type: EniType::Primary,
            created_type: EniType::Primary,
            vswitch_id: cfg.vswitch_id.clone(),
            vpc_id,
            zone_id: zone_id.clone(),
            instance_id: Some(cfg.id.clone()),
            trunk_eni_id: None,
            primary_ip,
            secondary_ips: Vec::new(),
            ipv6: Vec::new(),
            security_group_ids: vec![crate::config::DEFAULT_SECURITY_GROUP.into()],
            tags: BTreeMap::new(),
            description: String::new(),
            name: String::new(),
            resource_group_id: String::new(),
            creation_time: now.clone(),
            device_index: Some(0),
            op_seq: 0,
        };
        let instance = Instance {
            id: cfg.id.clone(),
            instance_type: cfg.instance_type.clone(),
            zone_id,
            vswitch_id: cfg.vswitch_id.clone(),
            primary_eni_id: eni_id.clone(),
            ram_role: cfg.ram_role.clone(),
            hostname: cfg.hostname.clone().unwrap_or_else(|| cfg.id.clone()),
            creation_time: now,
        };
        self.enis.insert(eni_id, eni);
        self.instances.insert(cfg.id.clone(), instance.clone());
        Ok(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_book_forgets_the_oldest_beyond_its_capacity() {
        let mut world = World::from_config(&EmulatorConfig::default()).unwrap();
        for i in 0..=MAX_TOKENS as u64 {
            let rec = TokenRecord {
                fingerprint: BTreeMap::new(),
                response: serde_json::Value::Null,
                at_ms: i,
            };
            world.remember_token(format!("A/{i}"), rec);
        }
        assert_eq!(world.tokens.len(), MAX_TOKENS + 1 - MAX_TOKENS / 10);
        assert!(
            !world.tokens.contains_key("A/0"),
            "the oldest token is forgotten"
        );
        assert!(
            world.tokens.contains_key(&format!("A/{MAX_TOKENS}")),
            "the newest is kept"
        );
        let late = TokenRecord {
            fingerprint: BTreeMap::new(),
            response: serde_json::Value::Null,
            at_ms: TOKEN_TTL_MS * 3,
        };
        world.remember_token("A/late".into(), late);
        assert_eq!(
            world.tokens.len(),
            1,
            "tokens older than the TTL are forgotten"
        );
    }

    #[test]
    fn configured_instances_get_a_primary_eni_in_use() {
        let cfg = EmulatorConfig::default();
        let world = World::from_config(&cfg).unwrap();
        let inst = &world.instances[&cfg.instances[0].id];
        let eni = &world.enis[&inst.primary_eni_id];
        assert_eq!(
            (eni.status, eni.eni_type),
            (EniStatus::InUse, EniType::Primary)
        );
        assert!(world.vswitches[&inst.vswitch_id]
            .used_v4
            .contains(&eni.primary_ip));
    }
}
