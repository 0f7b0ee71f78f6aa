//! The emulated cloud's admin API is out of a pod's reach: from a pod's namespace the OpenAPI address
//! answers `/_emulator/*` with 404 and changes nothing; the lab's admin socket serves it.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{run, Lab};
use serde_json::Value;

/// One HTTP/1.0 exchange over `stream`: (status line, body).
fn exchange(mut stream: impl Read + Write, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The exchange made from inside the namespace at `netns_path`, as a process in the pod would.
fn from_netns(netns_path: &str, addr: SocketAddr, request: String) -> (String, String) {
    let netns_path = netns_path.to_string();
    std::thread::spawn(move || {
        let ns = File::open(&netns_path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("pod cannot reach the OpenAPI at {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        exchange(s, &request)
    })
    .join()
    .unwrap()
}

#[test]
fn pods_cannot_drive_the_emulator_admin_api() {
    let lab = Lab::up(&["--node", "shared"]);
    let pod = lab.pod_add("node0", "prober").unwrap();
    let netns_path = pod["netns_path"].as_str().unwrap();
    let api = lab.desc["api_endpoint"].as_str().unwrap();
    let addr: SocketAddr = format!("{}:80", api.trim_start_matches("http://"))
        .parse()
        .unwrap();

    let (status, body) = from_netns(
        netns_path,
        addr,
        format!("GET /_emulator/faults HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    );
    assert!(status.contains(" 404"), "{status}: {body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["Code"], "InvalidAction.NotFound", "{err}");

    let faults = r#"{"error_rate":{"*":1.0}}"#;
    let (status, body) = from_netns(
        netns_path,
        addr,
        format!(
            "POST /_emulator/faults HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{faults}",
            faults.len()
        ),
    );
    assert!(status.contains(" 404"), "{status}: {body}");
    let (ok, out, err) = run(&["faults", "show", "--lab", &lab.name]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(
        shown["config"]["error_rate"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "a pod changed the faults: {out}"
    );

    // The sanctioned path: the supervisor's admin socket.
    let sock = lab.desc["emulator_admin_socket"].as_str().unwrap();
    let (status, body) = exchange(
        UnixStream::connect(sock).unwrap(),
        "GET /_emulator/faults HTTP/1.0\r\nHost: admin\r\n\r\n",
    );
    assert!(status.contains(" 200"), "{status}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("config").is_some(), "{v}");
    lab.pod_del("node0", "prober").unwrap();
}
