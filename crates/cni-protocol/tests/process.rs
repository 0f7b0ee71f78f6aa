//! `run_process` as a real process: the test binary re-executes itself as a "plugin" so that the
//! real environment, stdin, stdout, exit status and panic hook are exercised. Whatever happens,
//! stderr must not show a panic message or backtrace and stdout must carry spec JSON.

use std::io::Write;
use std::process::{Command, Stdio};

use cni_protocol::{run_process, CniError, CniRequest, CniResult};
use serde_json::Value;

const CHILD_FLAG: &str = "CNI_PROTOCOL_TEST_CHILD";

/// Entry point of the child process; a no-op when run as an ordinary test.
#[test]
fn plugin_child() {
    let Ok(mode) = std::env::var(CHILD_FLAG) else {
        return;
    };
    let code = run_process(|req| match (mode.as_str(), req) {
        ("panic", _) => panic!("handler exploded"),
        ("error", _) => Err(CniError::no_ip_available("vSwitch vsw-1 has no free IP")),
        (_, CniRequest::Add(_)) => Ok(Some(CniResult::new())),
        _ => Ok(None),
    });
    std::process::exit(code);
}

struct Outcome {
    code: i32,
    json: Option<Value>,
    stderr: String,
}

fn spawn(mode: &str, env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "plugin_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env_clear()
    .env(CHILD_FLAG, mode)
    .env("RUST_BACKTRACE", "full")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    // The test harness prints its own banner first; the plugin's JSON is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap());
    Outcome {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

const ADD_ENV: [(&str, &str); 5] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "abc"),
    ("CNI_NETNS", "/var/run/netns/cni-x"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];
const CONF: &[u8] = br#"{"cniVersion":"1.0.0","name":"terway","type":"terway"}"#;

fn assert_quiet(o: &Outcome) {
    assert!(!o.stderr.contains("panicked"), "stderr: {}", o.stderr);
    assert!(!o.stderr.contains("backtrace"), "stderr: {}", o.stderr);
}

#[test]
fn success_prints_result_and_exits_zero() {
    let o = spawn("ok", &ADD_ENV, CONF);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.json.as_ref().unwrap()["cniVersion"], "1.0.0");
    assert_quiet(&o);
}

#[test]
fn handler_panic_is_json_without_backtrace() {
    let o = spawn("panic", &ADD_ENV, CONF);
    assert_eq!(o.code, 1);
    let j = o.json.as_ref().unwrap();
    assert_eq!(j["code"], 103);
    assert_quiet(&o);
}

#[test]
fn handler_error_and_garbage_input() {
    let o = spawn("error", &ADD_ENV, CONF);
    assert_eq!(
        (o.code, o.json.as_ref().unwrap()["code"].as_u64()),
        (1, Some(100))
    );
    assert_quiet(&o);
    let o = spawn("ok", &ADD_ENV, b"\x00\xff{{{");
    assert_eq!(
        (o.code, o.json.as_ref().unwrap()["code"].as_u64()),
        (1, Some(6))
    );
    assert_quiet(&o);
    let o = spawn("ok", &[], CONF);
    assert_eq!(
        (o.code, o.json.as_ref().unwrap()["code"].as_u64()),
        (1, Some(4))
    );
    assert_quiet(&o);
}

#[test]
fn version_without_stdin() {
    let o = spawn("ok", &[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(o.code, 0);
    assert_eq!(o.json.unwrap()["supportedVersions"][4], "1.1.0");
}
