//! End-to-end through `run`: every verb and version, and every error code path, as a runtime sees
//! them (stdout JSON + exit status).

use cni_protocol::{
    codes, run, CniError, CniRequest, CniResult, CniVersion, Interface, RawEnv, Route,
};
use serde_json::{json, Value};

fn env(cmd: &str) -> RawEnv {
    RawEnv::from_pairs([
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "c0ffee01"),
        ("CNI_NETNS", "/proc/1/ns/net"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
    ])
}

fn conf(version: &str) -> Vec<u8> {
    json!({"cniVersion": version, "name": "terway", "type": "terway"})
        .to_string()
        .into_bytes()
}

fn result() -> CniResult {
    let mut r = CniResult::new();
    let i = r.add_interface(Interface {
        name: "eth0".into(),
        mtu: Some(1500),
        sandbox: Some("/proc/1/ns/net".into()),
        ..Default::default()
    });
    r.add_ip(
        "10.0.0.5/24".parse().unwrap(),
        Some("10.0.0.253".parse().unwrap()),
        Some(i),
    );
    r.add_route(Route::new("0.0.0.0/0".parse().unwrap(), None));
    r
}

/// Run with a handler that answers ADD with `result()` and everything else with nothing.
fn invoke(env: &RawEnv, stdin: &[u8]) -> (i32, String, Option<cni_protocol::Command>) {
    let mut out = Vec::new();
    let mut seen = None;
    let code = run(env, stdin, &mut out, |req| {
        seen = Some(req.command());
        match req {
            CniRequest::Add(_) => Ok(Some(result())),
            _ => Ok(None),
        }
    });
    (code, String::from_utf8(out).unwrap(), seen)
}

fn error_json(out: &str) -> Value {
    let v: Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("stdout {out:?} is not JSON: {e}"));
    assert!(
        v["code"].is_u64() && v["msg"].is_string() && v["cniVersion"].is_string(),
        "{v}"
    );
    v
}

#[test]
fn add_in_every_version() {
    for v in CniVersion::ALL {
        let (code, out, seen) = invoke(&env("ADD"), &conf(v.as_str()));
        assert_eq!((code, seen), (0, Some(cni_protocol::Command::Add)), "{out}");
        let j: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["cniVersion"], v.as_str());
        assert_eq!(j["ips"][0].get("version").is_some(), !v.is_v1());
        assert_eq!(
            j["interfaces"][0].get("mtu").is_some(),
            v == CniVersion::V1_1_0
        );
    }
}

#[test]
fn del_check_status_gc_print_nothing() {
    for (cmd, versions) in [
        ("DEL", &CniVersion::ALL[..]),
        ("CHECK", &CniVersion::ALL[2..]),
        ("STATUS", &CniVersion::ALL[4..]),
        ("GC", &CniVersion::ALL[4..]),
    ] {
        for v in versions {
            let (code, out, seen) = invoke(&env(cmd), &conf(v.as_str()));
            assert_eq!(code, 0, "{cmd} {v}: {out}");
            assert_eq!(out, "", "{cmd} {v}");
            assert_eq!(seen.unwrap().as_str(), cmd);
        }
    }
}

#[test]
fn del_without_netns_reaches_the_handler() {
    let env = RawEnv::from_pairs([
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/x"),
    ]);
    let mut out = Vec::new();
    let code = run(&env, &conf("0.4.0"), &mut out, |req| match req {
        CniRequest::Del(d) => {
            assert!(d.netns.is_none());
            Ok(None)
        }
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(code, 0);
}

#[test]
fn gc_gets_valid_attachments() {
    let stdin = json!({"cniVersion": "1.1.0", "name": "terway", "type": "terway",
        "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth0"}]});
    let env = RawEnv::from_pairs([("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]);
    let mut out = Vec::new();
    let mut ids = Vec::new();
    let code = run(&env, stdin.to_string().as_bytes(), &mut out, |req| {
        if let CniRequest::Gc(gc) = req {
            ids = gc
                .valid_attachments
                .iter()
                .map(|a| a.container_id.clone())
                .collect();
        }
        Ok(None)
    });
    assert_eq!((code, ids), (0, vec!["a".to_string(), "b".to_string()]));
}

#[test]
fn version_replies_without_calling_the_handler() {
    for stdin in [&b""[..], br#"{"cniVersion":"0.4.0"}"#, b"not json"] {
        let (code, out, seen) = invoke(&RawEnv::from_pairs([("CNI_COMMAND", "VERSION")]), stdin);
        assert_eq!((code, seen), (0, None));
        let j: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            j,
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }
}

#[test]
fn protocol_error_codes() {
    let cases: Vec<(RawEnv, Vec<u8>, u32, &str)> = vec![
        (
            env("ADD"),
            conf("0.2.0"),
            codes::INCOMPATIBLE_VERSION,
            "1.1.0",
        ),
        (
            env("CHECK"),
            conf("0.3.1"),
            codes::INCOMPATIBLE_VERSION,
            "0.3.1",
        ),
        (
            env("STATUS"),
            conf("1.0.0"),
            codes::INCOMPATIBLE_VERSION,
            "1.0.0",
        ),
        (
            env("GC"),
            conf("0.4.0"),
            codes::INCOMPATIBLE_VERSION,
            "0.4.0",
        ),
        (
            RawEnv::from_pairs([("CNI_COMMAND", "ADD")]),
            conf("1.0.0"),
            codes::INVALID_ENV,
            "1.0.0",
        ),
        (env("NOPE"), conf("1.0.0"), codes::INVALID_ENV, "1.0.0"),
        (env("ADD"), b"{".to_vec(), codes::DECODE_FAILURE, "1.1.0"),
        (
            env("ADD"),
            br#"{"cniVersion":"0.4.0","name":"n"}"#.to_vec(),
            codes::INVALID_NETWORK_CONFIG,
            "0.4.0",
        ),
    ];
    for (e, stdin, want, stamped) in cases {
        let (code, out, seen) = invoke(&e, &stdin);
        assert_ne!(code, 0);
        assert_eq!(seen, None, "the handler must not run");
        let j = error_json(&out);
        assert_eq!(j["code"], want, "{out}");
        assert_eq!(j["cniVersion"], stamped, "{out}");
    }
}

#[test]
fn handler_error_codes_pass_through() {
    let errs = [
        CniError::unsupported_field("x"),
        CniError::unknown_container("x"),
        CniError::io("x"),
        CniError::try_again_later("pod is being processed"),
        CniError::no_ip_available("vSwitch vsw-1 has no free IP"),
        CniError::daemon("terwayd unreachable").with_details("check that terwayd runs"),
        CniError::datapath("add route failed"),
        CniError::new(codes::PLUGIN_NOT_AVAILABLE, "daemon not ready", ""),
        CniError::new(
            codes::PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY,
            "daemon gone",
            "",
        ),
    ];
    for err in errs {
        let mut out = Vec::new();
        let want = err.clone();
        let code = run(&env("ADD"), &conf("0.3.1"), &mut out, |_| Err(err));
        assert_eq!(code, 1);
        let j = error_json(std::str::from_utf8(&out).unwrap());
        assert_eq!(j["code"], want.code);
        assert_eq!(j["msg"], want.msg);
        assert_eq!(j["cniVersion"], "0.3.1");
        assert_eq!(j.get("details").is_some(), !want.details.is_empty());
    }
}

#[test]
fn handler_panic_becomes_internal_error() {
    let mut out = Vec::new();
    let code = run(&env("ADD"), &conf("1.0.0"), &mut out, |_| panic!("boom"));
    assert_eq!(code, 1);
    let j = error_json(std::str::from_utf8(&out).unwrap());
    assert_eq!(j["code"], codes::INTERNAL_ERROR);
    assert!(j["details"].as_str().unwrap().contains("boom"));
}

#[test]
fn add_without_result_is_an_error() {
    let mut out = Vec::new();
    let code = run(&env("ADD"), &conf("1.0.0"), &mut out, |_| Ok(None));
    assert_eq!(code, 1);
    assert_eq!(
        error_json(std::str::from_utf8(&out).unwrap())["code"],
        codes::INTERNAL_ERROR
    );
}

#[test]
fn broken_stdout_still_fails() {
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let code = run(&env("ADD"), &conf("1.0.0"), &mut Broken, |_| {
        Ok(Some(result()))
    });
    assert_ne!(code, 0);
}
