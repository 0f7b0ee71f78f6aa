//! Dialling the daemon over its unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where terwayd listens unless configured otherwise (Terway's path).
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/eni/eni.socket";

/// The daemon socket could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to terwayd at {path}: {source}; is terwayd running on this node?")]
pub struct ConnectError {
    /// Socket path that was dialled.
    pub path: PathBuf,
    /// Underlying transport error.
    #[source]
    pub source: tonic::transport::Error,
}

/// Open a gRPC channel to the daemon's unix socket, failing after `timeout` if nobody answers.
pub async fn connect_unix(path: &Path, timeout: Duration) -> Result<Channel, ConnectError> {
    let socket = path.to_path_buf();
    // The URI is never dialled: the connector below ignores it and opens the unix socket instead.
    let endpoint = Endpoint::from_static("http://terwayd.local")
        .connect_timeout(timeout)
        .timeout(Duration::from_secs(120));
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|source| ConnectError {
            path: path.to_path_buf(),
            source,
        })
}
