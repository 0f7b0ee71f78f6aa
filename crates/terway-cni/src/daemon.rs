//! Talking to terwayd: dial the unix socket, and map gRPC statuses to CNI error codes exactly once, as
//! documented at the top of terway.proto.

use std::path::Path;
use std::time::Duration;

use cni_protocol::{codes, CniError};
use terway_rpc::v1::terway_backend_client::TerwayBackendClient;
use terway_rpc::v1::terway_status_client::TerwayStatusClient;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::Code;

/// Connect deadline; the per-call deadline comes from `daemon_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Puts `daemon_timeout` on every call (the channel enforces the `grpc-timeout` it sets).
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Duration);

impl Interceptor for Deadline {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.set_timeout(self.0);
        Ok(req)
    }
}

/// A daemon client channel with the per-call deadline.
pub type Client = InterceptedService<Channel, Deadline>;

/// Clients of both daemon services over one channel.
pub struct Daemon {
    /// Pod backend.
    pub backend: TerwayBackendClient<Client>,
    /// Introspection (GC, STATUS).
    pub status: TerwayStatusClient<Client>,
}

/// Dial the daemon; every call then has `call_timeout`. Unreachable means "try again later".
pub async fn connect(socket: &Path, call_timeout: Duration) -> Result<Daemon, CniError> {
    let ch = terway_rpc::connect_unix(socket, CONNECT_TIMEOUT)
        .await
        .map_err(|e| CniError::try_again_later(e.to_string()))?;
    let d = Deadline(call_timeout);
    Ok(Daemon {
        backend: TerwayBackendClient::with_interceptor(ch.clone(), d),
        status: TerwayStatusClient::with_interceptor(ch, d),
    })
}

/// gRPC status → CNI code (terway.proto header).
pub fn code_for(code: Code) -> u32 {
    match code {
        Code::Aborted | Code::Unavailable | Code::DeadlineExceeded => codes::TRY_AGAIN_LATER,
        Code::ResourceExhausted => codes::NO_IP_AVAILABLE,
        Code::InvalidArgument => codes::INVALID_ENV,
        Code::NotFound => codes::UNKNOWN_CONTAINER,
        _ => codes::DAEMON_ERROR,
    }
}

/// Turn a failed RPC into the CNI error the runtime sees.
pub fn map_status(what: &str, s: &tonic::Status) -> CniError {
    CniError::new(
        code_for(s.code()),
        format!("{what}: {}", s.message()),
        format!("terwayd returned {:?}", s.code()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_matches_the_proto_contract() {
        assert_eq!(code_for(Code::Aborted), 11);
        assert_eq!(code_for(Code::Unavailable), 11);
        assert_eq!(code_for(Code::DeadlineExceeded), 11);
        assert_eq!(code_for(Code::ResourceExhausted), 100);
        assert_eq!(code_for(Code::InvalidArgument), 4);
        assert_eq!(code_for(Code::NotFound), 3);
        assert_eq!(code_for(Code::Internal), 101);
        assert_eq!(code_for(Code::Unknown), 101);
        let e = map_status(
            "allocate IP for pod default/web",
            &tonic::Status::resource_exhausted("vSwitch full"),
        );
        assert_eq!(e.code, 100);
        assert!(e.msg.contains("vSwitch full"));
    }
}
