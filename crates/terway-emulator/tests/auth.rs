//! Request authentication over HTTP: ACS3-HMAC-SHA256 and legacy HMAC-SHA1 signatures, unknown
//! AccessKeys, stale timestamps, replayed nonces, missing signatures, and STS credentials from the
//! metadata service.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use terway_cloud::sign;
use terway_emulator::{AccessKeyPair, ECS_VERSION, VPC_VERSION};

fn q(region: &str) -> Vec<(String, String)> {
    vec![("RegionId".into(), region.into())]
}

#[tokio::test]
async fn acs3_good_bad_unknown_replayed_and_stale() {
    let emu = start(fast_config());
    let api = Api::new(&emu);

    // Good signature.
    let n = nonce();
    let good = api
        .acs3_raw(
            "DescribeInstanceTypes",
            ECS_VERSION,
            q(&api.region),
            &now(),
            &n,
            &api.secret,
        )
        .await;
    assert_eq!(good.status, 200, "{}", good.body);
    assert!(good.body["RequestId"].is_string());

    // Same nonce again: replay.
    api.acs3_raw(
        "DescribeInstanceTypes",
        ECS_VERSION,
        q(&api.region),
        &now(),
        &n,
        &api.secret,
    )
    .await
    .expect_err(400, "SignatureNonceUsed");

    // Wrong secret.
    api.acs3_raw(
        "DescribeInstanceTypes",
        ECS_VERSION,
        q(&api.region),
        &now(),
        &nonce(),
        "not-the-secret",
    )
    .await
    .expect_err(400, "SignatureDoesNotMatch");

    // Unknown AccessKey.
    let mut stranger = Api::new(&emu);
    stranger.ak = "LTAIUNKNOWN".into();
    stranger
        .ecs("DescribeInstanceTypes", &[])
        .await
        .expect_err(404, "InvalidAccessKeyId.NotFound");

    // Stale timestamp (20 minutes ago).
    let old = sign::format_timestamp(SystemTime::now() - Duration::from_secs(20 * 60));
    api.acs3_raw(
        "DescribeInstanceTypes",
        ECS_VERSION,
        q(&api.region),
        &old,
        &nonce(),
        &api.secret,
    )
    .await
    .expect_err(400, "InvalidTimeStamp.Expired");

    // A parameter changed after signing.
    let signed_q = q(&api.region);
    let req = sign::Acs3Request {
        method: "POST",
        host: &api.host,
        path: "/",
        query: &signed_q,
        body: b"",
        content_type: None,
        action: "DescribeInstanceTypes",
        version: ECS_VERSION,
        date: &now(),
        nonce: &nonce(),
        security_token: None,
    };
    let headers = sign::sign_acs3(&req, &api.ak, &api.secret);
    let mut rb = api.http.post(format!(
        "{}/?RegionId={}&InstanceTypes.1=ecs.g7.large",
        api.url, api.region
    ));
    for (k, v) in headers {
        if k != "host" {
            rb = rb.header(k, v);
        }
    }
    send(rb).await.expect_err(400, "SignatureDoesNotMatch");

    // Nothing signed at all.
    send(api.http.post(format!(
        "{}/?Action=DescribeInstanceTypes&Version={ECS_VERSION}&RegionId={}",
        api.url, api.region
    )))
    .await
    .expect_err(400, "MissingParameter");
    emu.shutdown().await;
}

#[tokio::test]
async fn legacy_hmac_sha1_query_signing() {
    let mut cfg = fast_config();
    cfg.access_keys.push(AccessKeyPair {
        id: "LTAISECOND".into(),
        secret: "second-secret".into(),
    });
    let emu = start(cfg);
    let mut api = Api::new(&emu);

    let ok = api
        .rpc_sha1("DescribeVSwitches", VPC_VERSION, &[], "nonce-1")
        .await
        .ok();
    assert!(ok["VSwitches"]["VSwitch"]
        .as_array()
        .is_some_and(|l| l.len() == 2));
    api.rpc_sha1("DescribeVSwitches", VPC_VERSION, &[], "nonce-1")
        .await
        .expect_err(400, "SignatureNonceUsed");

    api.ak = "LTAISECOND".into();
    api.secret = "second-secret".into();
    api.rpc_sha1(
        "DescribeInstanceTypes",
        ECS_VERSION,
        &[("InstanceTypes.1", "ecs.g7.4xlarge")],
        "nonce-2",
    )
    .await
    .ok();

    api.secret = "wrong".into();
    api.rpc_sha1("DescribeInstanceTypes", ECS_VERSION, &[], "nonce-3")
        .await
        .expect_err(400, "SignatureDoesNotMatch");
    emu.shutdown().await;
}

#[tokio::test]
async fn unknown_action_and_version() {
    let emu = start(fast_config());
    let api = Api::new(&emu);
    api.ecs("RunInstances", &[])
        .await
        .expect_err(404, "InvalidAction.NotFound");
    api.call("DescribeVSwitches", ECS_VERSION, &[])
        .await
        .expect_err(404, "InvalidAction.NotFound");
    api.call("DescribeVSwitches", "2099-01-01", &[])
        .await
        .expect_err(400, "InvalidVersion");
    let mut wrong_region = Api::new(&emu);
    wrong_region.region = "us-west-1".into();
    wrong_region
        .ecs("DescribeInstanceTypes", &[])
        .await
        .expect_err(404, "InvalidRegionId.NotFound");
    emu.shutdown().await;
}

#[tokio::test]
async fn sts_credentials_from_metadata_are_accepted() {
    let cfg = fast_config();
    let inst = node(&cfg);
    let emu = start(cfg);
    let http = http_client();
    let md = emu.metadata_url();
    let token = http
        .put(format!("{md}/latest/api/token"))
        .header("X-aliyun-ecs-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let get = |path: String| {
        http.get(format!("{md}/latest/meta-data/{path}"))
            .header("X-aliyun-ecs-metadata-token", &token)
            .header("X-Emulator-Instance-Id", &inst)
            .send()
    };
    let role = get("ram/security-credentials/".into())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(role, "TerwayEmulatorRole");
    let creds: serde_json::Value = serde_json::from_str(
        &get(format!("ram/security-credentials/{role}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(creds["Code"], "Success");
    let ak = creds["AccessKeyId"].as_str().unwrap();
    assert!(ak.starts_with("STS."));

    let mut api = Api::new(&emu);
    api.ak = ak.to_string();
    api.secret = creds["AccessKeySecret"].as_str().unwrap().to_string();
    // Without the token the temporary key is refused.
    api.ecs("DescribeInstanceTypes", &[])
        .await
        .expect_err(400, "InvalidSecurityToken.Missing");
    api.security_token = Some("forged".into());
    api.ecs("DescribeInstanceTypes", &[])
        .await
        .expect_err(400, "InvalidSecurityToken.MismatchWithAccessKey");
    api.security_token = Some(creds["SecurityToken"].as_str().unwrap().to_string());
    api.ecs("DescribeInstanceTypes", &[]).await.ok();
    assert!(emu
        .calls()
        .iter()
        .any(|c| c.access_key_id == ak && c.code == "OK"));
    emu.shutdown().await;
}

/// RFC 3986 encoding written out independently of `terway_cloud::sign`.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sign exactly as the V3 documentation describes, without the shared signing code, so a bug
/// shared by client and server cannot hide.
#[tokio::test]
async fn independently_hand_signed_requests_are_accepted() {
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Digest;

    let emu = start(fast_config());
    let api = Api::new(&emu);
    let query = [
        ("InstanceTypes.1", "ecs.g7.4xlarge"),
        ("RegionId", api.region.as_str()),
    ];
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let (date, nonce) = (now(), nonce());
    let empty_hash = hex::encode(sha2::Sha256::digest(b""));
    let headers = [
        ("host", api.host.clone()),
        ("x-acs-action", "DescribeInstanceTypes".to_string()),
        ("x-acs-content-sha256", empty_hash.clone()),
        ("x-acs-date", date.clone()),
        ("x-acs-signature-nonce", nonce.clone()),
        ("x-acs-version", ECS_VERSION.to_string()),
    ];
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = headers
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request =
        format!("POST\n/\n{canonical_query}\n{canonical_headers}\n{signed}\n{empty_hash}");
    let to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex::encode(sha2::Sha256::digest(canonical_request.as_bytes()))
    );
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(api.secret.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let mut rb = api
        .http
        .post(format!("{}/?{canonical_query}", api.url))
        .header(
            "Authorization",
            format!(
                "ACS3-HMAC-SHA256 Credential={},SignedHeaders={signed},Signature={signature}",
                api.ak
            ),
        );
    for (k, v) in &headers[1..] {
        rb = rb.header(*k, v);
    }
    let body = send(rb).await.ok();
    assert_eq!(body["InstanceTypes"]["InstanceType"][0]["EniQuantity"], 8);

    // Legacy RPC: GET, HMAC-SHA1 over "GET&%2F&" + enc(sorted query), key = secret + "&".
    let ts = now();
    let mut params = vec![
        ("AccessKeyId", api.ak.as_str()),
        ("Action", "DescribeVSwitches"),
        ("Format", "JSON"),
        ("RegionId", api.region.as_str()),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "hand-rolled-nonce"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", ts.as_str()),
        ("Version", terway_emulator::VPC_VERSION),
    ];
    params.sort();
    let cq = params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let sts = format!("GET&{}&{}", enc("/"), enc(&cq));
    let mut mac =
        <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(format!("{}&", api.secret).as_bytes())
            .unwrap();
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let body = send(
        api.http
            .get(format!("{}/?{cq}&Signature={}", api.url, enc(&sig))),
    )
    .await
    .ok();
    assert_eq!(body["VSwitches"]["VSwitch"].as_array().unwrap().len(), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn expired_sts_credentials_are_refused() {
    let mut cfg = fast_config();
    cfg.sts_ttl_secs = 1;
    let inst = node(&cfg);
    let emu = start(cfg);
    let http = http_client();
    let md = emu.metadata_url();
    let token = http
        .put(format!("{md}/latest/api/token"))
        .header("X-aliyun-ecs-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let creds: serde_json::Value = http
        .get(format!(
            "{md}/latest/meta-data/ram/security-credentials/TerwayEmulatorRole"
        ))
        .header("X-aliyun-ecs-metadata-token", &token)
        .header("X-Emulator-Instance-Id", &inst)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut api = Api::new(&emu);
    api.ak = creds["AccessKeyId"].as_str().unwrap().to_string();
    api.secret = creds["AccessKeySecret"].as_str().unwrap().to_string();
    api.security_token = Some(creds["SecurityToken"].as_str().unwrap().to_string());
    api.ecs("DescribeInstanceTypes", &[]).await.ok();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.ecs("DescribeInstanceTypes", &[])
        .await
        .expect_err(400, "InvalidSecurityToken.Expired");
    emu.shutdown().await;
}
