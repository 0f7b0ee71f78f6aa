//! The gRPC contract between the `terway` CNI binary, `terway-cli` and `terwayd`, plus the unix-socket
//! connector both clients use.

#![allow(clippy::all, missing_docs)]
/// Generated protobuf messages and tonic services for package `terway.v1`.
pub mod v1 {
    tonic::include_proto!("terway.v1");
}

mod connect;

pub use connect::{connect_unix, ConnectError, DEFAULT_SOCKET_PATH};
