//! The cloud as the node daemon sees it: the [`Cloud`] and [`Metadata`] traits with their types and
//! typed errors, and the Alibaba Cloud implementation over HTTP (request signing, per-API rate limits,
//! retries with Terway's named backoffs, ClientToken idempotency, paging, credentials).

pub mod api;
pub mod backoff;
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
pub use types::*;
