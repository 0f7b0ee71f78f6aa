//! Typed errors of the daemon, and their single mapping to gRPC statuses (and from there to CNI codes,
//! see the table at the top of terway.proto).

use terway_cloud::CloudError;

/// Everything that can go wrong while serving a pod or running the pool.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The request does not identify a pod.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Another request for the same pod is still being served.
    #[error("another request for pod {pod} is in flight; try again later")]
    PodBusy {
        /// `namespace/name`.
        pod: String,
    },
    /// The daemon knows nothing about this pod.
    #[error("no allocation recorded for pod {pod}")]
    NotFound {
        /// `namespace/name`.
        pod: String,
    },
    /// Allocation is blocked: node capacity reached, vSwitches exhausted or an inhibit is active.
    #[error("no IP available for pod {pod}: {reason}")]
    Exhausted {
        /// `namespace/name`.
        pod: String,
        /// Why, and what the operator can do.
        reason: String,
    },
    /// The pool could not produce an address in time (cloud slow or failing); retryable.
    #[error("no IP for pod {pod} within {waited_ms} ms: {reason}; the CNI will retry")]
    Timeout {
        /// `namespace/name`.
        pod: String,
        /// How long the request waited.
        waited_ms: u64,
        /// Last known cause.
        reason: String,
    },
    /// The daemon is starting or shutting down.
    #[error("terwayd is not ready: {0}")]
    NotReady(String),
    /// A cloud call failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The state database failed.
    #[error("state store {path}: {message}; check the disk and permissions of the state dir")]
    Store {
        /// Database file.
        path: String,
        /// Underlying error.
        message: String,
    },
    /// Configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The pod's NetworkPolicy could not be put in place, so it does not start.
    #[error("pod {pod}: its NetworkPolicy could not be programmed on this node, so it does not start: {message}; the kubelet retries the sandbox, and terwayd's log says more")]
    Policy {
        /// `namespace/name`.
        pod: String,
        /// Why.
        message: String,
    },
    /// The node's NetworkPolicy table could not be brought up to date (retried by its reconciler).
    #[error("NetworkPolicy: {0}")]
    PolicySync(String),
    /// Deleting released addresses' conntrack entries failed.
    #[error("conntrack: {0}")]
    Conntrack(String),
    /// Local I/O (sockets, files).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    /// Wrap an I/O error with what was being attempted.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DaemonError::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<DaemonError> for tonic::Status {
    fn from(e: DaemonError) -> Self {
        let msg = e.to_string();
        match e {
            DaemonError::InvalidRequest(_) | DaemonError::Config(_) => {
                tonic::Status::invalid_argument(msg)
            }
            DaemonError::PodBusy { .. } => tonic::Status::aborted(msg),
            DaemonError::NotFound { .. } => tonic::Status::not_found(msg),
            DaemonError::Exhausted { .. } => tonic::Status::resource_exhausted(msg),
            DaemonError::Timeout { .. } | DaemonError::NotReady(_) => {
                tonic::Status::unavailable(msg)
            }
            DaemonError::Cloud(c) if c.is_retryable() => tonic::Status::unavailable(msg),
            DaemonError::Cloud(_)
            | DaemonError::Store { .. }
            | DaemonError::Io { .. }
            | DaemonError::Conntrack(_)
            | DaemonError::PolicySync(_) => tonic::Status::internal(msg),
            DaemonError::Policy { .. } => tonic::Status::unavailable(msg),
        }
    }
}

/// Result alias of the daemon.
pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping_follows_the_proto_table() {
        let busy: tonic::Status = DaemonError::PodBusy { pod: "a/b".into() }.into();
        assert_eq!(busy.code(), tonic::Code::Aborted);
        let ex: tonic::Status = DaemonError::Exhausted {
            pod: "a/b".into(),
            reason: "full".into(),
        }
        .into();
        assert_eq!(ex.code(), tonic::Code::ResourceExhausted);
        assert!(ex.message().contains("a/b"));
        let nf: tonic::Status = DaemonError::NotFound { pod: "a/b".into() }.into();
        assert_eq!(nf.code(), tonic::Code::NotFound);
        let to: tonic::Status = DaemonError::Timeout {
            pod: "a/b".into(),
            waited_ms: 5,
            reason: "slow".into(),
        }
        .into();
        assert_eq!(to.code(), tonic::Code::Unavailable);
        let thr: tonic::Status = DaemonError::Cloud(CloudError::Throttled {
            action: "AssignPrivateIpAddresses".into(),
            code: "Throttling".into(),
            request_id: "r".into(),
        })
        .into();
        assert_eq!(thr.code(), tonic::Code::Unavailable);
    }
}
