//! Connecting to the real (or emulated) cloud over HTTP: the OpenAPI client and the metadata client,
//! configured from flags and `eni_conf`. The daemon and the controlplane share it, so both read the
//! same keys and the same credential chain.

use std::collections::BTreeMap;
use std::path::PathBuf;

use terway_core::EniConf;

use crate::api::{CloudResult, Metadata};
use crate::backoff::{BackoffOverride, BackoffTable};
use crate::client::AlibabaCloud;
use crate::config::{CloudConfig, CredentialsConfig, MetadataConfig};
use crate::metadata::MetadataClient;

/// How to reach the cloud.
#[derive(Debug, Clone, Default)]
pub struct CloudOptions {
    /// ECS and VPC endpoint override (`host:port` or a URL), e.g. the emulator's.
    pub endpoint: Option<String>,
    /// Region; learnt from metadata when unset.
    pub region: Option<String>,
    /// Metadata service base URL (default `http://100.100.100.200`).
    pub metadata_url: Option<String>,
    /// Extra metadata headers (the emulator's `X-Emulator-Instance-Id` outside the lab).
    pub metadata_headers: BTreeMap<String, String>,
    /// Static AccessKey id.
    pub access_key_id: Option<String>,
    /// Static AccessKey secret.
    pub access_key_secret: Option<String>,
    /// Credentials file (Alibaba CLI format).
    pub credentials_file: Option<PathBuf>,
    /// Per-API calls per minute overrides (`rate_limit`).
    pub rate_limit: BTreeMap<String, u32>,
    /// `backoff_override` of eni_conf, applied over the default table by [`BackoffTable`].
    pub backoff_override: BTreeMap<String, BackoffOverride>,
}

/// The cloud keys of an `eni_conf` (region, static AccessKey, rate limits, backoff overrides);
/// endpoints and the metadata URL are not eni_conf keys and stay unset.
impl From<&EniConf> for CloudOptions {
    fn from(c: &EniConf) -> Self {
        CloudOptions {
            region: c.region_id.clone(),
            access_key_id: c.access_key.clone(),
            access_key_secret: c.access_secret.as_ref().map(|s| s.0.clone()),
            rate_limit: c.rate_limit.clone(),
            backoff_override: c.backoff_override.clone(),
            ..CloudOptions::default()
        }
    }
}

impl CloudOptions {
    /// Metadata client settings.
    pub fn metadata_config(&self) -> MetadataConfig {
        let mut md = MetadataConfig::default();
        if let Some(u) = &self.metadata_url {
            md.base_url = u.clone();
        }
        md.extra_headers = self.metadata_headers.clone();
        md
    }

    /// Build both clients; the region comes from metadata when not configured.
    pub async fn connect(&self) -> CloudResult<(AlibabaCloud, MetadataClient)> {
        let md_cfg = self.metadata_config();
        let backoffs = BackoffTable::new(&self.backoff_override);
        let meta = MetadataClient::new(md_cfg.clone(), &backoffs)?;
        let region = match &self.region {
            Some(r) => r.clone(),
            None => meta.instance().await?.region_id,
        };
        let mut cfg = CloudConfig {
            region,
            credentials: CredentialsConfig {
                access_key_id: self.access_key_id.clone(),
                access_key_secret: self.access_key_secret.clone(),
                credentials_file: self.credentials_file.clone(),
                ..Default::default()
            },
            rate_limit: self.rate_limit.clone(),
            backoff_override: self.backoff_override.clone(),
            metadata: md_cfg,
            ..Default::default()
        };
        if let Some(e) = &self.endpoint {
            cfg.ecs_endpoint = Some(e.clone());
            cfg.vpc_endpoint = Some(e.clone());
            if !e.contains("://") {
                cfg.scheme = "http".into();
            }
        }
        Ok((AlibabaCloud::new(cfg)?, meta))
    }
}
