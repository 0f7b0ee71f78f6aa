//! The cloud as the node daemon sees it: the [`Cloud`] and [`Metadata`] traits with their types and
//! typed errors, and the Alibaba Cloud implementation over HTTP (request signing, per-API rate limits,
//! retries with Terway's named backoffs, ClientToken idempotency, paging, credentials).
//!
//! ```no_run
//! # async fn demo() -> Result<(), terway_cloud::CloudError> {
//! use terway_cloud::{backoff, wait, AlibabaCloud, Cloud, CloudConfig, CreateEniRequest, EniStatus};
//! // Against the emulator (or any endpoint); in production leave the endpoints unset for the
//! // VPC-internal ones and let the credential chain find the AccessKey or the RAM role.
//! let cfg = CloudConfig::for_endpoint("cn-hangzhou", "http://127.0.0.1:8080", "LTAIEMULATORKEY", "emulator-secret");
//! let cloud = AlibabaCloud::new(cfg)?;
//! let req = CreateEniRequest { vswitch_id: "vsw-1".into(), security_group_ids: vec!["sg-1".into()], ..Default::default() };
//! let eni = cloud.create_network_interface(&req).await?;
//! cloud.attach_network_interface(&eni.id, "i-1", None).await?;
//! wait::wait_eni_status(&cloud, &eni.id, EniStatus::InUse, cloud.backoff(backoff::WAIT_ENI_STATUS)).await?;
//! println!("{:?}", cloud.metrics()["CreateNetworkInterface"]);
//! # Ok(()) }
//! ```

pub mod api;
pub mod backoff;
#[cfg(feature = "bench")]
pub mod bench;
pub mod classify;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod http;
pub mod metadata;
pub mod metrics;
mod ops;
pub mod options;
pub mod parse;
pub mod ratelimit;
pub mod sign;
pub mod types;
pub mod wait;

pub use api::{Cloud, CloudResult, EniMetadata, InstanceIdentity, Metadata};
pub use client::AlibabaCloud;
pub use config::{
    CloudConfig, CredentialsConfig, EndpointType, MetadataConfig, Product, SignatureMethod,
};
pub use credentials::{Credential, CredentialProvider, CredentialSource};
pub use error::CloudError;
pub use metadata::MetadataClient;
pub use metrics::{ActionStats, CloudMetrics, MetricsSnapshot};
pub use ops::{ENI_IDS_PER_REQUEST, ENI_PAGE_SIZE};
pub use options::CloudOptions;
pub use types::*;
