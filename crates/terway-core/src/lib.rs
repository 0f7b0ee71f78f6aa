//! Pure domain of Terway-rs, shared by the daemon, the CNI plugin and the CLI, with no I/O:
//! Terway-compatible configuration (`eni_conf` and the plugin's CNI keys), per-node merge-patch,
//! Go-style durations, named backoffs and API rate limits, bandwidth units and tbf maths, pod-limit
//! formulas and pool sizing, and small shared types (pod keys, modes, gateways, annotation names).
//!
//! ```
//! use terway_core::{EniConf, VSwitchSelectionPolicy};
//! let base = r#"{"vswitches":{"cn-hangzhou-k":["vsw-1","vsw-2"]},"vswitch_selection_policy":"ordered"}"#;
//! let node = r#"{"max_pool_size":10,"min_pool_size":2}"#;
//! let conf = EniConf::from_json_with_override(base, Some(node)).unwrap();
//! assert_eq!(conf.vswitch_selection_policy, VSwitchSelectionPolicy::Ordered);
//! assert_eq!((conf.min_pool_size, conf.max_pool_size), (2, 10));
//! ```

#![warn(missing_docs)]

pub mod backoff;
pub mod bandwidth;
pub mod cni_conf;
pub mod config_error;
pub mod duration;
pub mod eni_conf;
pub mod eni_tags;
pub mod limits;
pub mod merge_patch;
pub mod rate_limit;
pub mod types;

pub use backoff::{Backoff, BackoffOverride};
pub use bandwidth::{
    parse_aliyun_bandwidth, parse_k8s_quantity, tbf_params, BandwidthError, PodBandwidth, TbfParams,
};
pub use cni_conf::{BandwidthMode, EniipVirtualType, TerwayCniConf, VlanStripType};
pub use config_error::ConfigError;
pub use duration::GoDuration;
pub use eni_conf::{EniConf, EniSelectionPolicy, IpStack, IpamType, VSwitchSelectionPolicy};
pub use eni_tags::{EniTagPolicy, CREATOR_TAG, DEFAULT_ENI_TAG_BLOCK_LIST};
pub use limits::{
    check_node_admission, ips_to_add, ips_to_release, pool_sizing, InstanceLimits, PoolKnobs,
    PoolSizing,
};
pub use merge_patch::merge_patch;
pub use types::{
    annotations, reasons, vswitch_gateway, Mode, PodKey, PodNameError, RUNTIME_NAMESPACE,
};
