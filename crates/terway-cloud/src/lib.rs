//! The cloud as the node daemon sees it: the [`Cloud`] and [`Metadata`] traits with their types and
//! typed errors, and the Alibaba Cloud implementation over HTTP (request signing, per-API rate limits,
//! retries with Terway's named backoffs, ClientToken idempotency, paging, credentials).

pub mod api;
pub mod error;
pub mod sign;
pub mod types;

pub use api::{Cloud, CloudResult, EniMetadata, InstanceIdentity, Metadata};
pub use error::CloudError;
pub use types::*;
