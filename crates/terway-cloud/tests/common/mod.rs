//! Shared harness: an emulator on loopback per test (ephemeral ports, stopped on drop) and a client
//! pointed at it over real HTTP with fast backoffs, so tests are isolated and quick.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use terway_cloud::backoff::{self, Backoff, BackoffOverride};
use terway_cloud::{AlibabaCloud, CloudConfig, CreateEniRequest, MetadataConfig};
use terway_emulator::{EmulatorConfig, NoFabric, RunningEmulator};

/// Default vSwitch of the default emulator configuration.
pub const VSW: &str = "vsw-emu0000000000000001";
/// Default instance (ecs.g7.4xlarge: 8 ENIs × 30 IPv4).
pub const INSTANCE: &str = "i-emu00000000000000001";

/// A fast schedule: `steps` attempts `ms` apart (×1.5, capped at 1 s).
pub fn quick(ms: u64, steps: u32) -> Backoff {
    Backoff {
        initial_delay: Duration::ZERO,
        duration: Duration::from_millis(ms),
        factor: 1.5,
        jitter: 0.2,
        steps,
        cap: Some(Duration::from_secs(1)),
    }
}

/// Every named backoff the client uses, shortened for tests.
pub fn fast_backoffs() -> BTreeMap<String, BackoffOverride> {
    [
        (backoff::DEFAULT, quick(50, 8)),
        (backoff::ENI_CREATE, quick(50, 8)),
        (backoff::ENI_OPS, quick(50, 8)),
        (backoff::ENI_IP_OPS, quick(50, 10)),
        (backoff::WAIT_ENI_STATUS, quick(50, 40)),
        (backoff::ENI_DELETE_CONFIRM, quick(50, 20)),
        (backoff::METADATA, quick(20, 4)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into()))
    .collect()
}

/// A running emulator plus a client for it.
pub struct Env {
    pub emu: RunningEmulator,
    pub cloud: AlibabaCloud,
    pub cfg: CloudConfig,
}

/// Client configuration for `emu` with fast backoffs.
pub fn client_config(emu: &RunningEmulator) -> CloudConfig {
    let ak = emu.access_key();
    let mut cfg = CloudConfig::for_endpoint(&emu.region_id(), &emu.api_url(), &ak.id, &ak.secret);
    cfg.backoff_override = fast_backoffs();
    cfg.timeout_secs = 10;
    cfg.metadata = metadata_config(emu, INSTANCE);
    cfg
}

/// Metadata client settings for `instance` on `emu` (identified by header on loopback).
pub fn metadata_config(emu: &RunningEmulator, instance: &str) -> MetadataConfig {
    let mut md = MetadataConfig {
        base_url: emu.metadata_url(),
        timeout_secs: 5,
        ..Default::default()
    };
    md.extra_headers.insert(
        terway_emulator::INSTANCE_HEADER.to_string(),
        instance.to_string(),
    );
    md
}

/// Start an emulator (config adjusted by `tweak`) and a client (adjusted by `tweak_client`).
pub fn start_with(
    tweak: impl FnOnce(&mut EmulatorConfig),
    tweak_client: impl FnOnce(&mut CloudConfig),
) -> Env {
    let mut ecfg = EmulatorConfig::default();
    tweak(&mut ecfg);
    let emu = terway_emulator::Emulator::start(ecfg, Arc::new(NoFabric)).expect("emulator starts");
    let mut cfg = client_config(&emu);
    tweak_client(&mut cfg);
    let cloud = AlibabaCloud::new(cfg.clone()).expect("client builds");
    Env { emu, cloud, cfg }
}

/// Default emulator, default test client.
pub fn start() -> Env {
    start_with(|_| {}, |_| {})
}

/// A CreateNetworkInterface request tagged with `tag` so a test can find its own ENIs.
pub fn eni_request(tag: &str, secondary: u32) -> CreateEniRequest {
    let mut tags = BTreeMap::new();
    tags.insert("creator".to_string(), "terway".to_string());
    tags.insert("test".to_string(), tag.to_string());
    CreateEniRequest {
        vswitch_id: VSW.into(),
        security_group_ids: vec!["sg-emu0000000000000001".into()],
        secondary_ip_count: secondary,
        tags,
        description: "interface create by terway".into(),
        ..Default::default()
    }
}

/// Short random suffix for unique names.
pub fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}
