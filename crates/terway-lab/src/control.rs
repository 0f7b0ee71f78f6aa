//! The supervisor's control socket (`<lab dir>/control.sock`): one JSON request per line, one JSON answer
//! per line. `down`, `status`, `daemon stop|start` and the tests use it to reach the emulator and the fabric
//! that live inside the supervisor process.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A request to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Daemons, fabric topology, anti-spoof drops and a summary of the emulator's state.
    Status,
    /// The emulator's whole state (`World`) as JSON.
    World,
    /// Stop a node's daemon: SIGKILL when `kill`, SIGTERM otherwise.
    StopDaemon {
        /// Node name.
        node: String,
        /// Crash it instead of a clean stop.
        kill: bool,
    },
    /// Start a node's daemon again.
    StartDaemon {
        /// Node name.
        node: String,
    },
    /// Replace the emulator's fault injection (a `FaultConfig` JSON object; `{}` clears it).
    SetFaults {
        /// The fault configuration.
        faults: serde_json::Value,
    },
    /// The emulator's fault configuration and how many faults fired.
    Faults,
    /// Compare the emulator's state with the fabric and the kernel; answers the list of differences.
    Audit,
    /// Every pod of the lab's Kubernetes, as the API server lists them (`items` of a PodList).
    KubePods,
    /// Stop (SIGTERM, or SIGKILL when `crash`) or start again a node's containerd and kubelet; its pods
    /// and shims stay, as when a runtime restarts on a real node.
    KubeRuntime {
        /// Node name.
        node: String,
        /// Start them (true) or stop them (false).
        start: bool,
        /// Stop with SIGKILL.
        crash: bool,
    },
    /// Tear the lab down and exit.
    Shutdown,
}

/// Path of the control socket in a lab directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// Send one request and return the `data` of a successful answer.
pub fn call(dir: &Path, req: &Request, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let path = socket_path(dir);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        anyhow::anyhow!(
            "lab supervisor not reachable at {} ({e}); is the lab up?",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    let v: serde_json::Value = serde_json::from_str(answer.trim())
        .map_err(|e| anyhow::anyhow!("bad answer from the lab supervisor ({e}): {answer:?}"))?;
    if v.get("ok").and_then(|o| o.as_bool()) == Some(true) {
        Ok(v.get("data").cloned().unwrap_or(serde_json::Value::Null))
    } else {
        let msg = v
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("unknown error");
        Err(anyhow::anyhow!("lab supervisor: {msg}"))
    }
}

/// Encode a successful answer.
pub fn ok(data: serde_json::Value) -> String {
    serde_json::json!({ "ok": true, "data": data }).to_string()
}

/// Encode a failed answer.
pub fn err(message: impl std::fmt::Display) -> String {
    serde_json::json!({ "ok": false, "error": message.to_string() }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let r = Request::StopDaemon {
            node: "node1".into(),
            kill: true,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"cmd":"stop-daemon","node":"node1","kill":true}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status
        );
    }
}
