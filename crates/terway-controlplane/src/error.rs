//! The controlplane's errors: each names the object and the call that failed.

use terway_cloud::CloudError;

/// A reconcile or start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cloud call failed (after the client's own retries).
    #[error("{what}: {source}")]
    Cloud {
        /// The object and the call.
        what: String,
        /// The cloud's error (boxed, as the client's below).
        source: Box<CloudError>,
    },
    /// An API-server call failed.
    #[error("{what}: {source}")]
    Kube {
        /// The object and the call.
        what: String,
        /// The client's error (boxed: it is large and errors travel by value).
        source: Box<kube::Error>,
    },
    /// The configuration cannot be used.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// A cloud failure of `what`.
    pub fn cloud(what: impl Into<String>, source: CloudError) -> Self {
        Error::Cloud {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// An API-server failure of `what`.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source: Box::new(source),
        }
    }
}
