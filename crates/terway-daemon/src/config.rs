//! The daemon's resolved configuration: paths, mode and pool knobs with their defaults. Built from
//! Terway's `eni_conf` keys ([`DaemonConfig::apply_eni_conf`]) plus command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use terway_core::{EniConf, EniTagPolicy, IpStack};

use terway_cloud::CloudOptions;

pub use terway_core::{EniSelectionPolicy, Mode, VSwitchSelectionPolicy};

/// Where the Prometheus endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    /// A TCP address, e.g. `127.0.0.1:9450`.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            return Ok(MetricsAddr::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(MetricsAddr::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>()
            .map(MetricsAddr::Tcp)
            .map_err(|e| format!("metrics address {s:?} is neither host:port nor a unix path: {e}"))
    }
}

/// Knobs of the IP/ENI pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Low watermark of idle IPs (refilled in the background).
    pub min_idle: u32,
    /// High watermark of idle IPs (released above it).
    pub max_idle: u32,
    /// Keep at least this many ENIs (min pool = min_eni × IPs per ENI when set).
    pub min_eni: u32,
    /// Hard cap on secondary ENIs, if any.
    pub max_eni: Option<u32>,
    /// Scales the instance's ENI quota.
    pub eni_cap_ratio: f64,
    /// Shifts the instance's ENI quota.
    pub eni_cap_shift: i32,
    /// One-time pre-allocation of this many IPs on a fresh node.
    pub warm_up: u32,
    /// How long the allocator waits to batch demand before calling the cloud.
    pub batch_window: Duration,
    /// At most this many IPs per Create/Assign call (the API limit is 10).
    pub max_ips_per_call: u32,
    /// ENI choice for allocations.
    pub eni_selection: EniSelectionPolicy,
    /// vSwitch choice for new ENIs.
    pub vswitch_selection: VSwitchSelectionPolicy,
    /// Candidate vSwitches; empty = those of `vswitches_by_zone` for the node's zone, else the node's
    /// own vSwitch.
    pub vswitches: Vec<String>,
    /// `eni_conf.vswitches`: candidates per zone.
    pub vswitches_by_zone: BTreeMap<String, Vec<String>>,
    /// Security groups of new ENIs; empty = those of the primary ENI.
    pub security_groups: Vec<String>,
    /// Extra tags on new ENIs (`creator=terway` is always added).
    pub eni_tags: BTreeMap<String, String>,
    /// Which ENIs this node did not record it may adopt or delete (`eni_tag_filter`, block list).
    pub eni_tag_policy: EniTagPolicy,
    /// Resource group of new ENIs.
    pub resource_group_id: Option<String>,
    /// No ENI creation for this long after EniPerInstanceLimitExceeded.
    pub inhibit_eni_limit: Duration,
    /// No allocation from a vSwitch for this long after IpNotEnough / QuotaExceeded.
    pub inhibit_ip_not_enough: Duration,
    /// A released IP is not handed out again for this long.
    pub ip_reuse_cooldown: Duration,
    /// A StatefulSet-like pod's IP is kept for it this long after release.
    pub ip_sticky_time: Duration,
    /// Owner kinds treated like StatefulSet (StatefulSet itself is always included).
    pub stateful_kinds: Vec<String>,
    /// Release idle IPs above min after this long without allocations; `None` disables.
    pub idle_reclaim_after: Option<Duration>,
    /// How often idle reclaim runs.
    pub idle_reclaim_interval: Duration,
    /// IPs released per reclaim round.
    pub idle_reclaim_batch: u32,
    /// Period of the background pool sync (refill/trim).
    pub sync_period: Duration,
    /// How long an ENI may take to become InUse and visible in metadata.
    pub eni_ready_timeout: Duration,
}

// One source of defaults: the pool's are those of an empty eni_conf.
impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig::from(&EniConf::default())
    }
}

/// The pool knobs of an `eni_conf`; knobs it has no key for (`vswitches`, `max_ips_per_call`,
/// `eni_ready_timeout`) get fixed defaults.
impl From<&EniConf> for PoolConfig {
    fn from(c: &EniConf) -> Self {
        PoolConfig {
            min_idle: c.min_pool_size,
            max_idle: c.max_pool_size,
            min_eni: c.min_eni,
            // Terway's 0 means "no cap".
            max_eni: (c.max_eni > 0).then_some(c.max_eni),
            eni_cap_ratio: c.eni_cap_ratio,
            eni_cap_shift: c.eni_cap_shift,
            warm_up: c.ip_warm_up_size.unwrap_or(0),
            batch_window: c.alloc_batch_window.as_duration(),
            eni_selection: c.eni_selection_policy,
            vswitch_selection: c.vswitch_selection_policy,
            vswitches_by_zone: c.vswitches.clone(),
            security_groups: c.all_security_groups(),
            eni_tags: c.creation_tags(),
            eni_tag_policy: c.tag_policy(),
            resource_group_id: c.resource_group_id.clone(),
            inhibit_eni_limit: c.inhibit_eni_limit.as_duration(),
            inhibit_ip_not_enough: c.inhibit_ip_not_enough.as_duration(),
            ip_reuse_cooldown: c.ip_reuse_cooldown.as_duration(),
            ip_sticky_time: c.ip_sticky_time.as_duration(),
            stateful_kinds: c.custom_stateful_workload_kinds.clone(),
            idle_reclaim_after: c.idle_reclaim_after(),
            idle_reclaim_interval: c.idle_ip_reclaim_interval.as_duration(),
            idle_reclaim_batch: c.idle_ip_reclaim_batch_size,
            sync_period: c.ip_pool_sync_period.as_duration(),
            vswitches: Vec::new(),
            max_ips_per_call: 10,
            eni_ready_timeout: Duration::from_secs(120),
        }
    }
}

/// Everything `terwayd` needs to run.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// gRPC unix socket (parent dir is created 0700, socket 0600).
    pub socket_path: PathBuf,
    /// Directory of the redb state file.
    pub state_dir: PathBuf,
    /// Prometheus endpoint, if any.
    pub metrics_addr: Option<MetricsAddr>,
    /// Node name (reported in status; defaults to the instance id).
    pub node_name: Option<String>,
    /// Pod networking mode.
    pub mode: Mode,
    /// The node PodCIDR (vpc-route mode).
    pub pod_cidr: Option<Ipv4Net>,
    /// Service CIDRs pushed to the CNI.
    pub service_cidrs: Vec<Ipv4Net>,
    /// Pool knobs.
    pub pool: PoolConfig,
    /// Optional JSON file describing the node's live pods (local pod source).
    pub pods_file: Option<PathBuf>,
    /// Period of garbage collection (stale pods, leaked ENIs/IPs).
    pub gc_period: Duration,
    /// How old an allocation must be before the pod GC may release it: a pod source (a watch, a file
    /// written from one) lags the API, and a pod allocated just now may not be listed yet.
    pub gc_grace: Duration,
    /// Longest an AllocIP waits for the pool before answering "try again later".
    pub alloc_timeout: Duration,
    /// How to reach the cloud (used by [`crate::run`]).
    pub cloud: CloudOptions,
    /// Program symmetric routing for DNATed connections in the node (done by the terwayd binary).
    pub symmetric_routing: bool,
    /// Enforce NetworkPolicy on the node (wired in by the terwayd binary in Kubernetes mode).
    pub network_policy: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket_path: PathBuf::from(terway_rpc::DEFAULT_SOCKET_PATH),
            state_dir: PathBuf::from("/var/lib/cni/terway"),
            metrics_addr: None,
            node_name: None,
            mode: Mode::Shared,
            pod_cidr: None,
            service_cidrs: Vec::new(),
            pool: PoolConfig::default(),
            pods_file: None,
            gc_period: Duration::from_secs(300),
            gc_grace: Duration::from_secs(30),
            alloc_timeout: Duration::from_secs(90),
            cloud: Default::default(),
            symmetric_routing: true,
            network_policy: true,
        }
    }
}

impl DaemonConfig {
    /// Check the combination of settings before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.mode == Mode::VpcRoute && self.pod_cidr.is_none() {
            return Err(
                "mode vpc-route needs pod_cidr (the node PodCIDR) in eni_conf or --pod-cidr".into(),
            );
        }
        if let Some(c) = self.pod_cidr {
            if c.prefix_len() > 30 {
                return Err(format!(
                    "pod_cidr {c} is too small: it needs at least 2 usable addresses"
                ));
            }
        }
        if self.pool.min_idle > self.pool.max_idle {
            return Err(format!(
                "min_pool_size ({}) is larger than max_pool_size ({})",
                self.pool.min_idle, self.pool.max_idle
            ));
        }
        if self.pool.max_ips_per_call == 0 || self.pool.max_ips_per_call > 10 {
            return Err("IPs per cloud call must be 1..=10 (the ECS API limit)".into());
        }
        if self.pool.eni_cap_ratio <= 0.0 {
            return Err("eni_cap_ratio must be positive".into());
        }
        Ok(())
    }

    /// Take every mode, pool and cloud knob from an `eni_conf` (already merge-patched and validated),
    /// composing [`PoolConfig::from`] and [`CloudOptions::from`]. What eni_conf has no key for (socket,
    /// paths, endpoints, the pool's call size and ENI timeout) keeps its value; the command line is
    /// applied afterwards and wins.
    pub fn apply_eni_conf(&mut self, c: &EniConf) -> Result<(), String> {
        // The pool allocates IPv4 only so far; saying so beats handing out IPv4 to a dual-stack cluster.
        if c.ip_stack != IpStack::Ipv4 {
            return Err(format!(
                "eni_conf.ip_stack: {:?} is not supported by this terwayd yet (pods would get IPv4 only); set \"ip_stack\": \"ipv4\"",
                c.ip_stack
            ));
        }
        self.pod_cidr = match c.pod_cidr {
            Some(IpNet::V4(n)) => Some(n),
            Some(IpNet::V6(n)) => return Err(format!("eni_conf.pod_cidr: {n} must be IPv4")),
            None => None,
        };
        self.mode = c.mode;
        self.symmetric_routing = c.symmetric_routing;
        self.network_policy = !c.disable_network_policy;
        self.service_cidrs = c
            .service_cidr
            .iter()
            .filter_map(|n| match n {
                IpNet::V4(v4) => Some(*v4),
                IpNet::V6(_) => None,
            })
            .collect();
        let pool = std::mem::take(&mut self.pool);
        self.pool = PoolConfig {
            vswitches: pool.vswitches,
            max_ips_per_call: pool.max_ips_per_call,
            eni_ready_timeout: pool.eni_ready_timeout,
            ..PoolConfig::from(c)
        };
        let cloud = std::mem::take(&mut self.cloud);
        self.cloud = CloudOptions {
            endpoint: cloud.endpoint,
            metadata_url: cloud.metadata_url,
            metadata_headers: cloud.metadata_headers,
            credentials_file: cloud.credentials_file,
            ..CloudOptions::from(c)
        };
        Ok(())
    }

    /// The redb file inside the state dir.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("terwayd.redb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_parses_tcp_and_unix() {
        assert_eq!(
            "127.0.0.1:9".parse::<MetricsAddr>(),
            Ok(MetricsAddr::Tcp("127.0.0.1:9".parse().unwrap()))
        );
        assert_eq!(
            "/run/m.sock".parse::<MetricsAddr>(),
            Ok(MetricsAddr::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            "unix:///x".parse::<MetricsAddr>(),
            Ok(MetricsAddr::Unix("/x".into()))
        );
        assert!("nonsense".parse::<MetricsAddr>().is_err());
    }

    #[test]
    fn eni_conf_keys_map_onto_the_pool() {
        let conf = terway_core::EniConf::from_json_with_override(
            r#"{"max_pool_size":10,"min_pool_size":2,"vswitches":{"z":["vsw-1"]},"vswitch_selection_policy":"ordered",
               "eni_selection_policy":"least_ips","ip_reuse_cooldown":"5s","custom_stateful_workload_kinds":["CloneSet"],
               "service_cidr":"172.21.0.0/20"}"#,
            Some(r#"{"mode":"vpc-route","pod_cidr":"10.244.1.0/24","max_eni":3}"#),
        )
        .unwrap();
        let mut c = DaemonConfig::default();
        c.apply_eni_conf(&conf).unwrap();
        assert_eq!(c.mode, Mode::VpcRoute);
        assert_eq!(c.pod_cidr, Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!(
            (c.pool.min_idle, c.pool.max_idle, c.pool.max_eni),
            (2, 10, Some(3))
        );
        assert_eq!(c.pool.vswitch_selection, VSwitchSelectionPolicy::Ordered);
        assert_eq!(c.pool.eni_selection, EniSelectionPolicy::LeastIps);
        assert_eq!(c.pool.ip_reuse_cooldown, Duration::from_secs(5));
        assert_eq!(c.pool.vswitches_by_zone["z"], vec!["vsw-1".to_string()]);
        assert_eq!(c.pool.stateful_kinds, vec!["CloneSet".to_string()]);
        assert_eq!(c.service_cidrs.len(), 1);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn pool_defaults_are_terways() {
        let p = PoolConfig::default();
        assert_eq!((p.min_idle, p.max_idle, p.max_eni), (0, 5, None));
        assert_eq!(p.batch_window, Duration::from_millis(300));
        assert_eq!(p.ip_reuse_cooldown, Duration::from_secs(30));
        assert_eq!(p.eni_selection, EniSelectionPolicy::MostIps);
        assert_eq!(p.max_ips_per_call, 10);
    }

    #[test]
    fn apply_keeps_what_eni_conf_has_no_key_for_and_takes_cloud_keys() {
        let conf = EniConf::from_json(
            r#"{"region_id":"cn-x","access_key":"AK","access_secret":"SK","rate_limit":{"AssignPrivateIpAddresses":7},
               "backoff_override":{"eni_ops":{"Steps":2}}}"#,
        )
        .unwrap();
        let mut c = DaemonConfig::default();
        c.pool.max_ips_per_call = 4;
        c.pool.vswitches = vec!["vsw-flag".into()];
        c.cloud.endpoint = Some("http://emu".into());
        c.apply_eni_conf(&conf).unwrap();
        assert_eq!(c.pool.max_ips_per_call, 4);
        assert_eq!(c.pool.vswitches, vec!["vsw-flag".to_string()]);
        assert_eq!(c.cloud.endpoint.as_deref(), Some("http://emu"));
        assert_eq!(c.cloud.region.as_deref(), Some("cn-x"));
        assert_eq!(c.cloud.access_key_id.as_deref(), Some("AK"));
        assert_eq!(c.cloud.access_key_secret.as_deref(), Some("SK"));
        assert_eq!(c.cloud.rate_limit["AssignPrivateIpAddresses"], 7);
        assert_eq!(c.cloud.backoff_override["eni_ops"].steps, Some(2));
    }

    #[test]
    fn validate_rejects_bad_combinations() {
        let mut c = DaemonConfig::default();
        assert!(c.validate().is_ok());
        c.mode = Mode::VpcRoute;
        assert!(c.validate().unwrap_err().contains("pod_cidr"));
        c.pod_cidr = Some("10.1.0.0/31".parse().unwrap());
        assert!(c.validate().is_err());
        c.pod_cidr = Some("10.1.0.0/24".parse().unwrap());
        assert!(c.validate().is_ok());
        c.pool.min_idle = 9;
        assert!(c.validate().unwrap_err().contains("min_pool_size"));
    }

    #[test]
    fn dual_stack_is_refused_with_the_key_named() {
        let conf =
            terway_core::EniConf::from_json_with_override(r#"{"ip_stack":"dual"}"#, None).unwrap();
        let err = DaemonConfig::default().apply_eni_conf(&conf).unwrap_err();
        assert!(
            err.contains("eni_conf.ip_stack") && err.contains("ipv4"),
            "{err}"
        );
    }
}
