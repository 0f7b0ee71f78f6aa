//! The admin API lives on its own listener, never on the OpenAPI one (which pods reach in the lab); and the
//! OpenAPI listener's size limits answer with the same Alibaba error body as every other error.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use common::*;
use serde_json::Value;
use terway_emulator::{AdminEndpoint, AdminListener, Emulator, FaultConfig, Listeners, NoFabric};

/// Status, `x-acs-request-id` and JSON body of an answer.
async fn parts(resp: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let rid = resp
        .headers()
        .get("x-acs-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, rid, body)
}

/// The fields every error body of the emulator carries, with the RequestId echoed in the header.
fn assert_alibaba_error(
    (status, rid, body): &(u16, Option<String>, Value),
    want_status: u16,
    code: &str,
) {
    assert_eq!(*status, want_status, "{body}");
    assert_eq!(body["Code"], code, "{body}");
    for field in ["Message", "RequestId", "HostId", "Recommend"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} missing: {body}"
        );
    }
    assert_eq!(rid.as_deref(), body["RequestId"].as_str(), "{body}");
}

#[tokio::test]
async fn admin_api_is_refused_on_the_openapi_listener() {
    let emu = start(fast_config());
    let http = http_client();
    let api = emu.api_url();
    let faults = FaultConfig {
        error_rate: BTreeMap::from([("DescribeVSwitches".to_string(), 1.0)]),
        ..FaultConfig::default()
    };
    for path in ["state", "calls", "faults"] {
        let got = parts(
            http.get(format!("{api}/_emulator/{path}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_alibaba_error(&got, 404, "InvalidAction.NotFound");
    }
    let posts = [
        ("faults", serde_json::to_value(&faults).unwrap()),
        (
            "rate-limits",
            serde_json::json!({"enabled": true, "per_minute": {"DescribeVSwitches": 1}}),
        ),
        (
            "instances",
            serde_json::json!({"id": "i-intruder", "instance_type": "ecs.g7.large",
                "vswitch_id": vswitch(&fast_config())}),
        ),
    ];
    for (path, body) in &posts {
        let got = parts(
            http.post(format!("{api}/_emulator/{path}"))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_alibaba_error(&got, 404, "InvalidAction.NotFound");
    }
    assert_eq!(
        emu.faults(),
        FaultConfig::default(),
        "faults changed through the OpenAPI"
    );
    assert!(!emu.state().instances.contains_key("i-intruder"));
    // And the OpenAPI itself still works on that listener.
    Api::new(&emu).vpc("DescribeVSwitches", &[]).await.ok();
    emu.shutdown().await;
}

#[tokio::test]
async fn admin_api_is_served_on_its_own_loopback_listener() {
    let emu = start(fast_config());
    let http = http_client();
    match emu.admin_endpoint() {
        Some(AdminEndpoint::Tcp(a)) => {
            assert!(a.ip().is_loopback(), "{a}");
            assert_ne!(*a, emu.api_addr());
        }
        other => panic!("Emulator::start serves admin on loopback TCP, got {other:?}"),
    }
    let admin = emu.admin_url().unwrap();
    let faults = FaultConfig {
        error_rate: BTreeMap::from([("DescribeVSwitches".to_string(), 1.0)]),
        ..FaultConfig::default()
    };
    post_faults(&http, &admin, &faults).await;
    assert_eq!(emu.faults(), faults);
    let listed = get_faults(&http, &admin).await;
    assert_eq!(listed["config"], serde_json::to_value(&faults).unwrap());
    // The admin listener serves nothing but the admin API.
    let other = http.get(format!("{admin}/")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn admin_api_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let listeners = Listeners {
        api: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        metadata: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        admin: Some(AdminListener::Unix(
            std::os::unix::net::UnixListener::bind(&sock).unwrap(),
        )),
    };
    let emu = Emulator::start_with_listeners(fast_config(), Arc::new(NoFabric), listeners).unwrap();
    assert_eq!(
        emu.admin_endpoint(),
        Some(&AdminEndpoint::Unix(sock.clone()))
    );
    assert_eq!(emu.admin_url(), None);
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(b"GET /_emulator/faults HTTP/1.0\r\nHost: admin\r\n\r\n")
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let v: Value = serde_json::from_str(body).unwrap();
    assert!(v.get("config").is_some(), "{v}");
    // No admin API on the OpenAPI listener here either.
    let got = http_client()
        .get(format!("{}/_emulator/faults", emu.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn oversize_body_answers_413_with_the_alibaba_error_body() {
    let emu = start(fast_config());
    let http = http_client();
    let limit = terway_emulator::server::MAX_BODY_BYTES;
    let body = format!("Action=DescribeVSwitches&Pad={}", "x".repeat(limit));
    let got = parts(
        http.post(emu.api_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_alibaba_error(&got, 413, "RequestBodyTooLarge");
    let msg = got.2["Message"].as_str().unwrap();
    assert!(
        msg.contains(&limit.to_string()) && msg.contains("2 MiB"),
        "{msg}"
    );

    // Chunked, with no Content-Length to refuse up front: the limit applies while reading.
    let addr = emu.api_addr();
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        // The server may answer and close before all of it is sent; that is the point.
        for _ in 0..(limit / chunk.len() + 2) {
            if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
                || s.write_all(&chunk).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(head.starts_with("HTTP/1.1 413"), "{raw:?}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert_eq!(v["Code"], "RequestBodyTooLarge", "{v}");
    emu.shutdown().await;
}

#[tokio::test]
async fn oversize_headers_answer_431_with_the_alibaba_error_body() {
    let emu = start(fast_config());
    let http = http_client();
    let max_fields = terway_emulator::server::MAX_HEADER_FIELDS;
    let mut many = http.get(format!("{}/?Action=DescribeVSwitches", emu.api_url()));
    for i in 0..max_fields + 20 {
        many = many.header(format!("x-pad-{i}"), "1");
    }
    let got = parts(many.send().await.unwrap()).await;
    assert_alibaba_error(&got, 431, "RequestHeaderFieldsTooLarge");
    assert!(
        got.2["Message"]
            .as_str()
            .unwrap()
            .contains(&format!("the limit is {max_fields}")),
        "{}",
        got.2
    );

    let max_head = terway_emulator::server::MAX_HEAD_BYTES;
    let got = parts(
        http.get(format!("{}/?Action=DescribeVSwitches", emu.api_url()))
            .header("x-pad", "y".repeat(max_head + 1))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_alibaba_error(&got, 431, "RequestHeaderFieldsTooLarge");
    let msg = got.2["Message"].as_str().unwrap();
    assert!(
        msg.contains(&max_head.to_string()) && msg.contains("64 KiB"),
        "{msg}"
    );

    // hyper's own default limits (100 fields, ~400 KB) used to answer a bare 431 first.
    let got = parts(
        http.get(format!("{}/?Action=DescribeVSwitches", emu.api_url()))
            .header("x-pad", "z".repeat(500 * 1024))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_alibaba_error(&got, 431, "RequestHeaderFieldsTooLarge");
    emu.shutdown().await;
}
