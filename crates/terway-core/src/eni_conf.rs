//! The daemon's `eni_conf` (ConfigMap `kube-system/eni-config`, reference §6.2): every key Terway
//! reads, with Terway's defaults, plus the keys our daemon needs (`mode`, `pod_cidr`, timings).
//! Loading = RFC 7396 merge-patch of an optional per-node document over the base, then parse, then
//! [`EniConf::validate`]. Known Terway bugs are fixed: `ip_stack: "ipv6"` is accepted, and
//! `vswitch_selection_policy: "ordered"` means list order (`most` is most-available-IPs first).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::backoff::{effective_backoffs, Backoff, BackoffOverride};
use crate::config_error::{
    config_enum, deserialize_naming_key, into_object, parse_object_text, ConfigError,
};
use crate::duration::GoDuration;
use crate::eni_tags::{EniTagPolicy, CREATOR_TAG, DEFAULT_ENI_TAG_BLOCK_LIST};
use crate::merge_patch::merge_patch;
use crate::rate_limit::{rate_limit_for, RateLimit};
use crate::types::Mode;

config_enum! {
    /// How a vSwitch is chosen among the candidates of the node's zone.
    VSwitchSelectionPolicy {
        /// Shuffle the candidates (Terway's default).
        Random = "random",
        /// Try the candidates in the order they are listed (Terway silently meant `most`; we do not).
        Ordered = "ordered",
        /// Most available IP addresses first.
        Most = "most",
    }
}

config_enum! {
    /// Which ENI secondary IPs are taken from.
    EniSelectionPolicy {
        /// Pack pods onto the fullest ENI (Terway's default).
        MostIps = "most_ips",
        /// Spread pods over the emptiest ENI.
        LeastIps = "least_ips",
    }
}

config_enum! {
    /// Address families pods get.
    IpStack {
        /// IPv4 only (default; `""` as Terway allows).
        Ipv4 = "ipv4" | "",
        /// IPv4 and IPv6.
        Dual = "dual",
        /// IPv6 only (Terway's daemon rejected it by mistake).
        Ipv6 = "ipv6",
    }
}

config_enum! {
    /// Which IPAM is used.
    IpamType {
        /// Node-local pool managed by the daemon (`""` in Terway).
        Default = "default" | "",
        /// Centralised IPAM through the Node CR.
        Crd = "crd",
        /// Prefer CRD IPAM where available.
        PreferCrd = "preferCRD" | "prefer_crd",
    }
}

/// A secret string whose Debug output does not reveal it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// A tag key/value pair (block list entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagKv {
    /// Tag key.
    pub key: String,
    /// Tag value.
    pub value: String,
}

/// An extra route pushed to pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraRoute {
    /// Destination CIDR.
    pub dst: IpNet,
}

/// The whole `eni_conf` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EniConf {
    /// Informational version string.
    pub version: String,
    /// Static AccessKey ID.
    pub access_key: Option<String>,
    /// Static AccessKey secret (redacted in Debug).
    pub access_secret: Option<Secret>,
    /// Encrypted STS token file.
    pub credential_path: Option<String>,
    /// Region; normally read from metadata.
    pub region_id: Option<String>,
    /// Service CIDRs (Terway writes a comma-separated string; a JSON array is accepted too).
    #[serde(serialize_with = "ser_cidrs", deserialize_with = "de_cidrs")]
    pub service_cidr: Vec<IpNet>,
    /// Candidate vSwitches per zone.
    pub vswitches: BTreeMap<String, Vec<String>>,
    /// vSwitch choice among candidates.
    pub vswitch_selection_policy: VSwitchSelectionPolicy,
    /// ENI choice for secondary IPs.
    pub eni_selection_policy: EniSelectionPolicy,
    /// A single security group, merged with `security_groups`.
    pub security_group: Option<String>,
    /// Security groups for new ENIs (at most 10 in total).
    pub security_groups: Vec<String>,
    /// Resource group for new ENIs.
    pub resource_group_id: Option<String>,
    /// Tags put on ENIs we create (`creator=terway` is always added).
    pub eni_tags: BTreeMap<String, String>,
    /// Only manage ENIs carrying these tags.
    pub eni_tag_filter: BTreeMap<String, String>,
    /// ENIs with any of these tags are never used.
    pub eni_tag_block_list: Vec<TagKv>,
    /// High watermark of idle IPs.
    pub max_pool_size: u32,
    /// Low watermark of idle IPs.
    pub min_pool_size: u32,
    /// One-time pre-allocation per node.
    pub ip_warm_up_size: Option<u32>,
    /// Enable idle reclaim after this quiet period.
    pub idle_ip_reclaim_after: Option<GoDuration>,
    /// How often idle reclaim runs.
    pub idle_ip_reclaim_interval: GoDuration,
    /// IPs released per reclaim round.
    pub idle_ip_reclaim_batch_size: u32,
    /// Jitter of the reclaim interval (Terway writes it as a string, "0.1").
    #[serde(deserialize_with = "de_float_or_string")]
    pub idle_ip_reclaim_jitter_factor: f64,
    /// Pool sync period.
    pub ip_pool_sync_period: GoDuration,
    /// Minimum ENIs (min pool = min_eni × IPs per ENI); 0 = unset.
    pub min_eni: u32,
    /// Cap on secondary ENIs; 0 = no cap.
    pub max_eni: u32,
    /// Scale of the instance ENI quota.
    pub eni_cap_ratio: f64,
    /// Shift of the instance ENI quota.
    pub eni_cap_shift: i32,
    /// Unused (kept for compatibility).
    pub prefix: Option<String>,
    /// Address families.
    pub ip_stack: IpStack,
    /// Trunk ENI with member ENIs.
    pub enable_eni_trunking: bool,
    /// ERDMA ENIs.
    pub enable_erdma: bool,
    /// IPAM implementation.
    pub ipam_type: IpamType,
    /// Owner kinds treated like StatefulSet (sticky IP).
    pub custom_stateful_workload_kinds: Vec<String>,
    /// Overrides of the named backoffs.
    pub backoff_override: BTreeMap<String, BackoffOverride>,
    /// Extra routes for pods.
    pub extra_routes: Vec<ExtraRoute>,
    /// Do not run the device plugins.
    pub disable_device_plugin: bool,
    /// Kubernetes client QPS.
    pub kube_client_qps: Option<f32>,
    /// Kubernetes client burst.
    pub kube_client_burst: Option<u32>,
    /// Per-action OpenAPI limits (requests per minute).
    pub rate_limit: BTreeMap<String, u32>,
    /// Write the `k8s.aliyun.com/pod-ips` annotation.
    pub enable_patch_pod_ips: bool,
    /// Prefix mode.
    pub enable_ip_prefix: bool,
    /// IPv4 /28 prefixes to keep.
    pub ipv4_prefix_count: u32,
    /// IPv6 prefixes (0 or 1).
    pub ipv6_prefix_count: u32,
    /// Deprecated EIP pool switch (ignored).
    pub enable_eip_pool: Option<Value>,
    /// Deprecated EIP migration switch (ignored).
    pub enable_eip_migrate: Option<Value>,

    // ---- our own keys ----
    /// Network mode of the node.
    pub mode: Mode,
    /// Pod CIDR in `vpc-route` mode.
    pub pod_cidr: Option<IpNet>,
    /// A released IP waits this long before another pod may get it.
    pub ip_reuse_cooldown: GoDuration,
    /// How long a sticky pod's IP stays reserved after release.
    pub ip_sticky_time: GoDuration,
    /// How long the allocator waits to batch cloud requests.
    pub alloc_batch_window: GoDuration,
    /// No new ENI after `EniPerInstanceLimitExceeded` for this long.
    pub inhibit_eni_limit: GoDuration,
    /// No allocation after `IpNotEnough`/`QuotaExceeded.PrivateIpAddress` for this long.
    pub inhibit_ip_not_enough: GoDuration,
    /// Route replies of connections that entered through the node's primary interface (hostPort,
    /// NodePort) back out of it; on by default.
    pub symmetric_routing: bool,
    /// Leave NetworkPolicy to something else (Terway's key): terwayd then programs no policy table.
    pub disable_network_policy: bool,

    /// Keys we do not know; kept so the daemon can warn about typos.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl Default for EniConf {
    fn default() -> Self {
        Self {
            version: "1".into(),
            access_key: None,
            access_secret: None,
            credential_path: None,
            region_id: None,
            service_cidr: Vec::new(),
            vswitches: BTreeMap::new(),
            vswitch_selection_policy: VSwitchSelectionPolicy::Random,
            eni_selection_policy: EniSelectionPolicy::MostIps,
            security_group: None,
            security_groups: Vec::new(),
            resource_group_id: None,
            eni_tags: BTreeMap::new(),
            eni_tag_filter: BTreeMap::new(),
            eni_tag_block_list: Vec::new(),
            max_pool_size: 5,
            min_pool_size: 0,
            ip_warm_up_size: None,
            idle_ip_reclaim_after: None,
            idle_ip_reclaim_interval: GoDuration::from_secs(600),
            idle_ip_reclaim_batch_size: 5,
            idle_ip_reclaim_jitter_factor: 0.1,
            ip_pool_sync_period: GoDuration::from_secs(120),
            min_eni: 0,
            max_eni: 0,
            eni_cap_ratio: 1.0,
            eni_cap_shift: 0,
            prefix: None,
            ip_stack: IpStack::Ipv4,
            enable_eni_trunking: false,
            enable_erdma: false,
            ipam_type: IpamType::Default,
            custom_stateful_workload_kinds: Vec::new(),
            backoff_override: BTreeMap::new(),
            extra_routes: Vec::new(),
            disable_device_plugin: false,
            kube_client_qps: None,
            kube_client_burst: None,
            rate_limit: BTreeMap::new(),
            enable_patch_pod_ips: true,
            enable_ip_prefix: false,
            ipv4_prefix_count: 0,
            ipv6_prefix_count: 0,
            enable_eip_pool: None,
            enable_eip_migrate: None,
            mode: Mode::Shared,
            pod_cidr: None,
            ip_reuse_cooldown: GoDuration::from_secs(30),
            ip_sticky_time: GoDuration::from_secs(300),
            alloc_batch_window: GoDuration::from_millis(300),
            inhibit_eni_limit: GoDuration::from_secs(60),
            inhibit_ip_not_enough: GoDuration::from_secs(600),
            symmetric_routing: true,
            disable_network_policy: false,
            unknown: BTreeMap::new(),
        }
    }
}

/// Most security groups one ENI may carry.
pub const MAX_SECURITY_GROUPS: usize = 10;

impl EniConf {
    /// Parse and validate one `eni_conf` document.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Self::from_json_with_override(text, None)
    }

    /// Merge-patch `node_override` (RFC 7396) over `base`, then parse and validate the result.
    pub fn from_json_with_override(
        base: &str,
        node_override: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut doc = Value::Object(parse_object_text("eni_conf", base)?);
        if let Some(patch) = node_override {
            let patch = Value::Object(parse_object_text("per-node eni_conf", patch)?);
            merge_patch(&mut doc, &patch);
        }
        Self::from_value(doc)
    }

    /// Parse and validate an already-merged JSON value.
    pub fn from_value(v: Value) -> Result<Self, ConfigError> {
        let obj = into_object("eni_conf", v)?;
        let conf: EniConf = deserialize_naming_key("eni_conf", obj)?;
        conf.validate()?;
        Ok(conf)
    }

    /// Check cross-field rules and value ranges; the error names the key and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, m: String| Err(ConfigError::invalid(format!("eni_conf.{k}"), m));
        if self.min_pool_size > self.max_pool_size {
            return bad(
                "min_pool_size",
                format!(
                    "{} is larger than max_pool_size {}",
                    self.min_pool_size, self.max_pool_size
                ),
            );
        }
        if self.max_eni > 0 && self.min_eni > self.max_eni {
            return bad(
                "min_eni",
                format!("{} is larger than max_eni {}", self.min_eni, self.max_eni),
            );
        }
        if !self.eni_cap_ratio.is_finite() || self.eni_cap_ratio <= 0.0 {
            return bad(
                "eni_cap_ratio",
                format!("{} must be a number greater than 0", self.eni_cap_ratio),
            );
        }
        let jitter = self.idle_ip_reclaim_jitter_factor;
        if !jitter.is_finite() || jitter < 0.0 {
            return bad(
                "idle_ip_reclaim_jitter_factor",
                format!("{jitter} must be 0 or more"),
            );
        }
        for (key, d) in [
            ("idle_ip_reclaim_interval", self.idle_ip_reclaim_interval),
            ("ip_pool_sync_period", self.ip_pool_sync_period),
        ] {
            if d.is_zero() {
                return bad(key, format!("\"{d}\" must be longer than zero"));
            }
        }
        if self.idle_ip_reclaim_after.is_some() && self.idle_ip_reclaim_batch_size == 0 {
            return bad(
                "idle_ip_reclaim_batch_size",
                "0 must be at least 1 when idle_ip_reclaim_after is set".into(),
            );
        }
        let sgs = self.all_security_groups();
        if sgs.len() > MAX_SECURITY_GROUPS {
            return bad(
                "security_groups",
                format!(
                    "{} security groups given, an ENI takes at most {MAX_SECURITY_GROUPS}",
                    sgs.len()
                ),
            );
        }
        if let Some(sg) = sgs.iter().find(|s| s.trim().is_empty()) {
            return bad(
                "security_groups",
                format!("{sg:?} is not a security group ID"),
            );
        }
        for (zone, list) in &self.vswitches {
            if let Some(v) = list.iter().find(|v| v.trim().is_empty()) {
                return bad(
                    &format!("vswitches.{zone}"),
                    format!("{v:?} is not a vSwitch ID"),
                );
            }
        }
        if self.ipv6_prefix_count > 1 {
            return bad(
                "ipv6_prefix_count",
                format!("{} must be 0 or 1", self.ipv6_prefix_count),
            );
        }
        for (key, ov) in &self.backoff_override {
            ov.validate(key)
                .map_err(|m| ConfigError::invalid("eni_conf.backoff_override", m))?;
        }
        for (action, n) in &self.rate_limit {
            if *n == 0 {
                return bad(
                    &format!("rate_limit.{action}"),
                    "0 must be at least 1 request per minute".into(),
                );
            }
        }
        match (self.mode, self.pod_cidr) {
            (Mode::VpcRoute, None) => {
                return bad("pod_cidr", "is required when mode is \"vpc-route\"".into());
            }
            (_, Some(c)) if c.prefix_len() == c.max_prefix_len() => {
                return bad(
                    "pod_cidr",
                    format!("{c} holds a single address; give a pod CIDR such as /24"),
                );
            }
            _ => {}
        }
        for (k, v) in &self.eni_tag_filter {
            if let Some(theirs) = self.eni_tags.get(k).filter(|t| *t != v) {
                return bad(
                    &format!("eni_tag_filter.{k}"),
                    format!("{v:?} contradicts eni_tags.{k} {theirs:?}: new ENIs would not match the filter"),
                );
            }
        }
        if let Some((k, v)) = self.tag_policy().blocked_pair(&self.creation_tags()) {
            return bad(
                "eni_tag_block_list",
                format!("{k}={v} is also a tag of the ENIs this node creates (eni_tags/eni_tag_filter); it would never use them"),
            );
        }
        if self.mode == Mode::Exclusive && self.enable_eni_trunking {
            return bad(
                "enable_eni_trunking",
                "true cannot be combined with mode \"exclusive\"".into(),
            );
        }
        Ok(())
    }

    /// `security_group` and `security_groups` merged, duplicates removed, order kept.
    pub fn all_security_groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for sg in self
            .security_group
            .iter()
            .chain(self.security_groups.iter())
        {
            if !out.contains(sg) {
                out.push(sg.clone());
            }
        }
        out
    }

    /// Tags to put on ENIs we create: `eni_tags`, the `eni_tag_filter` pairs (so that what we create is
    /// what we manage, also after a restart) and `creator=terway`.
    pub fn creation_tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.eni_tags.clone();
        tags.extend(self.eni_tag_filter.clone());
        tags.insert(CREATOR_TAG.0.into(), CREATOR_TAG.1.into());
        tags
    }

    /// Which existing ENIs this node may take over or clean up, from `eni_tag_filter` and
    /// `eni_tag_block_list` (plus the built-in block list).
    pub fn tag_policy(&self) -> EniTagPolicy {
        let mut block: Vec<(String, String)> = DEFAULT_ENI_TAG_BLOCK_LIST
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for t in &self.eni_tag_block_list {
            let pair = (t.key.clone(), t.value.clone());
            if !block.contains(&pair) {
                block.push(pair);
            }
        }
        EniTagPolicy {
            filter: self.eni_tag_filter.clone(),
            block,
        }
    }

    /// The effective named backoffs (built-ins with `backoff_override` applied).
    pub fn backoffs(&self) -> BTreeMap<String, Backoff> {
        effective_backoffs(&self.backoff_override)
    }

    /// The rate limit for one OpenAPI action.
    pub fn rate_limit_for(&self, action: &str) -> RateLimit {
        rate_limit_for(&self.rate_limit, action)
    }

    /// Idle reclaim quiet period, if enabled.
    pub fn idle_reclaim_after(&self) -> Option<Duration> {
        self.idle_ip_reclaim_after.map(Duration::from)
    }

    /// Names of keys we did not recognise (typos, newer Terway keys).
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.unknown.keys().map(String::as_str).collect()
    }
}

fn ser_cidrs<S: Serializer>(cidrs: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    let joined: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    s.serialize_str(&joined.join(","))
}

fn de_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        List(Vec<String>),
    }
    let items: Vec<String> = match Repr::deserialize(d)? {
        Repr::Text(s) => s.split(',').map(str::to_string).collect(),
        Repr::List(l) => l,
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>().map_err(|_| {
                serde::de::Error::custom(format!("{s:?} is not a CIDR like 172.21.0.0/20"))
            })
        })
        .collect()
}

fn de_float_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Text(String),
    }
    match Repr::deserialize(d)? {
        Repr::Num(n) => Ok(n),
        Repr::Text(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number like \"0.1\""))),
    }
}

#[cfg(test)]
#[path = "eni_conf_tests.rs"]
mod tests;
