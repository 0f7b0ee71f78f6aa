//! Emulator configuration: the VPC it pretends to be (region, VPC, vSwitches, instances), the
//! AccessKeys it accepts, and how strict/slow/faulty it is. Loadable from a JSON file; every field has
//! a default so `{}` is a valid configuration.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::catalogue::InstanceTypeSpec;
use crate::error::EmulatorError;
use crate::faults::FaultConfig;

/// Default AccessKey id accepted when the configuration lists none.
pub const DEFAULT_ACCESS_KEY_ID: &str = "LTAIEMULATORKEY";
/// Default AccessKey secret.
pub const DEFAULT_ACCESS_KEY_SECRET: &str = "emulator-secret";

/// The security group every instance's primary ENI is in (the VPC's default group).
pub const DEFAULT_SECURITY_GROUP: &str = "sg-emu0000000000000001";

/// Everything the emulator can be told at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Region id (`RegionId` is checked against it).
    pub region_id: String,
    /// The one VPC.
    pub vpc: VpcConfig,
    /// vSwitches of the VPC.
    pub vswitches: Vec<VSwitchConfig>,
    /// Instances existing at start (more can be added at runtime).
    pub instances: Vec<InstanceConfig>,
    /// Security groups existing at start (more with CreateSecurityGroup); must include
    /// [`DEFAULT_SECURITY_GROUP`], which primary ENIs are in.
    pub security_groups: Vec<SecurityGroupConfig>,
    /// Accepted AccessKey pairs.
    pub access_keys: Vec<AccessKeyPair>,
    /// Per-action server-side rate limits in requests per minute, overriding Terway's defaults.
    pub rate_limits: BTreeMap<String, u32>,
    /// Whether the per-action token buckets are enforced at all.
    pub throttling: bool,
    /// Asynchronous transition and API latency settings.
    pub delays: Delays,
    /// Fault injection at start (changeable at runtime).
    pub faults: FaultConfig,
    /// Where state is persisted after every mutating call and reloaded from on start.
    pub state_file: Option<PathBuf>,
    /// Instance types in addition to the built-in catalogue (same name replaces a built-in one).
    pub instance_types: Vec<InstanceTypeSpec>,
    /// Lifetime of the STS credentials the metadata service hands out, in seconds.
    pub sts_ttl_secs: u64,
    /// Maximum allowed clock skew of signed requests, in seconds (the real gateway allows 15 min).
    pub max_clock_skew_secs: u64,
    /// Whether metadata requests need the `X-aliyun-ecs-metadata-token` (hardened mode).
    pub metadata_require_token: bool,
    /// Private IPv4 limit of an ENI that is not attached to any instance.
    pub unattached_eni_ip_limit: u32,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            region_id: "cn-hangzhou".into(),
            vpc: VpcConfig::default(),
            vswitches: vec![
                VSwitchConfig {
                    id: "vsw-emu0000000000000001".into(),
                    zone_id: "cn-hangzhou-i".into(),
                    cidr: net4(Ipv4Addr::new(10, 128, 0, 0), 20),
                    ipv6_cidr: None,
                },
                VSwitchConfig {
                    id: "vsw-emu0000000000000002".into(),
                    zone_id: "cn-hangzhou-j".into(),
                    cidr: net4(Ipv4Addr::new(10, 128, 16, 0), 20),
                    ipv6_cidr: None,
                },
            ],
            instances: vec![InstanceConfig {
                id: "i-emu00000000000000001".into(),
                instance_type: "ecs.g7.4xlarge".into(),
                vswitch_id: "vsw-emu0000000000000001".into(),
                zone_id: None,
                primary_mac: None,
                primary_ip: None,
                ram_role: Some("TerwayEmulatorRole".into()),
                hostname: None,
            }],
            security_groups: vec![SecurityGroupConfig {
                id: DEFAULT_SECURITY_GROUP.into(),
                name: "default".into(),
                open: true,
            }],
            access_keys: vec![AccessKeyPair {
                id: DEFAULT_ACCESS_KEY_ID.into(),
                secret: DEFAULT_ACCESS_KEY_SECRET.into(),
            }],
            rate_limits: BTreeMap::new(),
            throttling: true,
            delays: Delays::default(),
            faults: FaultConfig::default(),
            state_file: None,
            instance_types: Vec::new(),
            sts_ttl_secs: 3600,
            max_clock_skew_secs: 900,
            metadata_require_token: true,
            unattached_eni_ip_limit: 50,
        }
    }
}

fn net4(addr: Ipv4Addr, len: u8) -> Ipv4Net {
    Ipv4Net::new(addr, len).unwrap_or_default()
}

impl EmulatorConfig {
    /// Read a JSON configuration file.
    pub fn from_file(path: &Path) -> Result<Self, EmulatorError> {
        let text = std::fs::read_to_string(path).map_err(|source| EmulatorError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| EmulatorError::ParseConfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Check cross references (instances name existing vSwitches, CIDRs inside the VPC, …).
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let bad = |m: String| Err(EmulatorError::InvalidConfig(m));
        if self.access_keys.is_empty() {
            return bad("access_keys is empty: no request could ever be signed".into());
        }
        for vsw in &self.vswitches {
            if !self.vpc.cidr.contains(&vsw.cidr) {
                return bad(format!(
                    "vSwitch {} CIDR {} is outside VPC CIDR {}",
                    vsw.id, vsw.cidr, self.vpc.cidr
                ));
            }
            if vsw.cidr.prefix_len() > 29 {
                return bad(format!(
                    "vSwitch {} CIDR {} is smaller than a /29",
                    vsw.id, vsw.cidr
                ));
            }
        }
        for inst in &self.instances {
            if !self.vswitches.iter().any(|v| v.id == inst.vswitch_id) {
                return bad(format!(
                    "instance {} names unknown vSwitch {}",
                    inst.id, inst.vswitch_id
                ));
            }
        }
        if !self
            .security_groups
            .iter()
            .any(|sg| sg.id == DEFAULT_SECURITY_GROUP)
        {
            return bad(format!(
                "security_groups lacks {DEFAULT_SECURITY_GROUP}, the group primary ENIs are in"
            ));
        }
        let d = &self.delays;
        if d.attach_min_ms > d.attach_max_ms
            || d.detach_min_ms > d.detach_max_ms
            || d.delete_min_ms > d.delete_max_ms
            || d.api_latency_min_ms > d.api_latency_max_ms
        {
            return bad("a delay minimum is larger than its maximum".into());
        }
        Ok(())
    }
}

/// A security group present at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupConfig {
    /// `sg-…`.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Starts with a rule accepting all inbound traffic (else with none: only its own members get in).
    #[serde(default)]
    pub open: bool,
}

/// The VPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcConfig {
    /// `vpc-…`.
    pub id: String,
    /// IPv4 CIDR.
    pub cidr: Ipv4Net,
    /// IPv6 CIDR, if the VPC has one.
    #[serde(default)]
    pub ipv6_cidr: Option<Ipv6Net>,
    /// The system route table custom route entries go to.
    #[serde(default = "default_route_table")]
    pub route_table_id: String,
}

fn default_route_table() -> String {
    "vtb-emu0000000000000001".into()
}

impl Default for VpcConfig {
    fn default() -> Self {
        Self {
            id: "vpc-emu0000000000000001".into(),
            cidr: net4(Ipv4Addr::new(10, 128, 0, 0), 16),
            ipv6_cidr: None,
            route_table_id: default_route_table(),
        }
    }
}

/// One vSwitch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VSwitchConfig {
    /// `vsw-…`.
    pub id: String,
    /// Zone.
    pub zone_id: String,
    /// IPv4 CIDR (inside the VPC's).
    pub cidr: Ipv4Net,
    /// IPv6 CIDR (a /64), if IPv6 is enabled.
    #[serde(default)]
    pub ipv6_cidr: Option<Ipv6Net>,
}

/// One instance (node).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// `i-…`.
    pub id: String,
    /// Must be in the catalogue.
    pub instance_type: String,
    /// vSwitch of the primary ENI.
    pub vswitch_id: String,
    /// Zone; defaults to the vSwitch's.
    #[serde(default)]
    pub zone_id: Option<String>,
    /// MAC of the primary ENI; generated if absent.
    #[serde(default)]
    pub primary_mac: Option<String>,
    /// Primary IP; allocated from the vSwitch if absent.
    #[serde(default)]
    pub primary_ip: Option<Ipv4Addr>,
    /// RAM role attached to the instance (metadata STS credentials).
    #[serde(default)]
    pub ram_role: Option<String>,
    /// Hostname reported by metadata; defaults to the instance id.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// An accepted AccessKey pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyPair {
    /// AccessKey id.
    pub id: String,
    /// AccessKey secret.
    pub secret: String,
}

/// Timing of asynchronous transitions and API calls, in milliseconds (uniform in `[min, max]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delays {
    /// Attaching → InUse, minimum.
    pub attach_min_ms: u64,
    /// Attaching → InUse, maximum.
    pub attach_max_ms: u64,
    /// Detaching → Available, minimum.
    pub detach_min_ms: u64,
    /// Detaching → Available, maximum.
    pub detach_max_ms: u64,
    /// Deleting → gone, minimum (0 with a 0 maximum: DeleteNetworkInterface is immediate).
    pub delete_min_ms: u64,
    /// Deleting → gone, maximum.
    pub delete_max_ms: u64,
    /// Latency added to every API call, minimum.
    pub api_latency_min_ms: u64,
    /// Latency added to every API call, maximum.
    pub api_latency_max_ms: u64,
    /// After an Attach/Detach/Assign/Unassign/Delete on an ENI, further such calls on the same ENI
    /// answer `Operation.Conflict` for this long (the real service processes them asynchronously).
    pub eni_busy_ms: u64,
}

impl Default for Delays {
    fn default() -> Self {
        // Real attaches take 1–3 s; the default is shorter so tests stay fast but still async.
        Self {
            attach_min_ms: 200,
            attach_max_ms: 600,
            detach_min_ms: 100,
            detach_max_ms: 400,
            delete_min_ms: 0,
            delete_max_ms: 0,
            api_latency_min_ms: 0,
            api_latency_max_ms: 0,
            eni_busy_ms: 0,
        }
    }
}
