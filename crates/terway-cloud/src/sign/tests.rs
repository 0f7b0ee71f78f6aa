//! Known-answer and round-trip tests of the signers.

use super::*;
use std::time::{Duration, UNIX_EPOCH};

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// Known-answer vector: the fixed-value worked example of Alibaba Cloud's "V3 request structure and
// signature" documentation (RunInstances, YourAccessKeyId / YourAccessKeySecret).
fn doc_example() -> (Pairs, Pairs) {
    let query = pairs(&[
        ("RegionId", "cn-shanghai"),
        (
            "ImageId",
            "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
        ),
    ]);
    let headers = pairs(&[
        ("host", "ecs.cn-shanghai.aliyuncs.com"),
        ("x-acs-action", "RunInstances"),
        ("x-acs-version", "2014-05-26"),
        ("x-acs-date", "2023-10-26T10:22:32Z"),
        ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
        ("x-acs-content-sha256", EMPTY_SHA256),
    ]);
    (query, headers)
}

const DOC_SIGNATURE: &str = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0";

#[test]
fn acs3_matches_the_published_example() {
    let (query, headers) = doc_example();
    let c = canonical_request("POST", "/", &query, &headers, EMPTY_SHA256);
    assert_eq!(
        c.text,
        "POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n\
         host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n\
         x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
         x-acs-version:2014-05-26\n\n\
         host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let sts = string_to_sign(&c.text);
    assert_eq!(
        sts,
        "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    );
    assert_eq!(acs3_signature("YourAccessKeySecret", &sts), DOC_SIGNATURE);
}

#[test]
fn sign_acs3_reproduces_the_published_authorization_and_verifies() {
    let (query, _) = doc_example();
    let req = Acs3Request {
        method: "POST",
        host: "ecs.cn-shanghai.aliyuncs.com",
        path: "/",
        query: &query,
        body: b"",
        content_type: None,
        action: "RunInstances",
        version: "2014-05-26",
        date: "2023-10-26T10:22:32Z",
        nonce: "3156853299f313e23d1673dc12e1703d",
        security_token: None,
    };
    let headers = sign_acs3(&req, "YourAccessKeyId", "YourAccessKeySecret");
    let auth = headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(
        auth,
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;\
         x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=\
         06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    );
    let parsed = Acs3Authorization::parse(&auth).unwrap();
    assert_eq!(parsed.access_key_id, "YourAccessKeyId");
    verify_acs3(
        "POST",
        "/",
        &query,
        &headers,
        b"",
        &parsed,
        "YourAccessKeySecret",
    )
    .unwrap();
    assert!(matches!(
        verify_acs3("POST", "/", &query, &headers, b"", &parsed, "wrong"),
        Err(SignError::SignatureMismatch { .. })
    ));
    // A tampered parameter, body or header breaks the signature.
    let mut q2 = query.clone();
    q2[0].1 = "cn-beijing".into();
    assert!(verify_acs3(
        "POST",
        "/",
        &q2,
        &headers,
        b"",
        &parsed,
        "YourAccessKeySecret"
    )
    .is_err());
    assert_eq!(
        verify_acs3(
            "POST",
            "/",
            &query,
            &headers,
            b"x",
            &parsed,
            "YourAccessKeySecret"
        ),
        Err(SignError::ContentHashMismatch)
    );
}

#[test]
fn signing_with_body_content_type_and_sts_token_round_trips() {
    let body = encode_query(&pairs(&[
        ("NetworkInterfaceId", "eni-1"),
        ("Tag.1.Key", "a b*c"),
    ]));
    let req = Acs3Request {
        method: "POST",
        host: "127.0.0.1:9000",
        path: "/",
        query: &[],
        body: body.as_bytes(),
        content_type: Some("application/x-www-form-urlencoded"),
        action: "DeleteNetworkInterface",
        version: "2014-05-26",
        date: "2026-01-01T00:00:00Z",
        nonce: "n1",
        security_token: Some("sts-token"),
    };
    let headers = sign_acs3(&req, "STS.ak", "sk");
    let auth = Acs3Authorization::parse(&headers.last().unwrap().1).unwrap();
    assert!(auth.signed_headers.contains(&"content-type".to_string()));
    assert!(auth
        .signed_headers
        .contains(&"x-acs-security-token".to_string()));
    verify_acs3("POST", "/", &[], &headers, body.as_bytes(), &auth, "sk").unwrap();
    // Naming a header the request does not carry is refused.
    let mut extra = auth.clone();
    extra.signed_headers.push("x-acs-missing".into());
    assert_eq!(
        verify_acs3("POST", "/", &[], &headers, body.as_bytes(), &extra, "sk"),
        Err(SignError::MissingSignedHeader("x-acs-missing".into()))
    );
    // Dropping a required header from SignedHeaders is refused.
    let mut weak = auth.clone();
    weak.signed_headers.retain(|h| h != "x-acs-date");
    assert_eq!(
        verify_acs3("POST", "/", &[], &headers, body.as_bytes(), &weak, "sk"),
        Err(SignError::UnsignedRequiredHeader("x-acs-date".into()))
    );
}

#[test]
fn authorization_parse_rejects_garbage() {
    for bad in [
        "",
        "ACS3-HMAC-SHA256",
        "HMAC Credential=a,SignedHeaders=host,Signature=x",
        "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host",
        "ACS3-HMAC-SHA256 Credential=a,Bogus=1,Signature=x",
        "ACS3-HMAC-SHA256Credential=a,SignedHeaders=host,Signature=x",
    ] {
        assert!(Acs3Authorization::parse(bad).is_err(), "{bad}");
    }
}

// Known-answer vector: the DescribeRegions example of Alibaba Cloud's RPC signature documentation
// (AccessKeyId testid, secret testsecret, GET).
fn rpc_doc_params() -> Vec<(String, String)> {
    pairs(&[
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Format", "XML"),
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("Version", "2014-05-26"),
        ("SignatureVersion", "1.0"),
    ])
}

#[test]
fn rpc_matches_the_published_example() {
    let params = rpc_doc_params();
    assert_eq!(
        rpc_string_to_sign("GET", &params),
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
         %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
         %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
    );
    assert_eq!(
        rpc_signature("testsecret", "GET", &params),
        "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    );
    let mut signed = params.clone();
    signed.push(("Signature".into(), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=".into()));
    verify_rpc("GET", &signed, "testsecret").unwrap();
    assert!(verify_rpc("POST", &signed, "testsecret").is_err());
    assert!(verify_rpc("GET", &params, "testsecret").is_err());
}

#[test]
fn percent_encoding_follows_the_alibaba_rules() {
    assert_eq!(percent_encode("a b*c~d/é+"), "a%20b%2Ac~d%2F%C3%A9%2B");
    assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
    let q = parse_query(&encode_query(&pairs(&[
        ("Tag.1.Key", "a b+c/d"),
        ("X", ""),
    ])));
    assert_eq!(q, pairs(&[("Tag.1.Key", "a b+c/d"), ("X", "")]));
    assert_eq!(parse_query("a=1+2&b"), pairs(&[("a", "1 2"), ("b", "")]));
}

#[test]
fn canonical_query_sorts_by_encoded_key() {
    let q = pairs(&[
        ("b", "2"),
        ("a", "x y"),
        ("Tag.2.Key", "k"),
        ("Tag.10.Key", "j"),
    ]);
    assert_eq!(
        canonical_query_string(&q),
        "Tag.10.Key=j&Tag.2.Key=k&a=x%20y&b=2"
    );
    assert_eq!(canonical_uri("/api/v1/a b"), "/api/v1/a%20b");
}

#[test]
fn timestamps_round_trip() {
    let t = UNIX_EPOCH + Duration::from_secs(1_698_315_752);
    assert_eq!(format_timestamp(t), "2023-10-26T10:22:32Z");
    assert_eq!(parse_timestamp("2023-10-26T10:22:32Z"), Some(t));
    assert_eq!(
        format_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(
        parse_timestamp("2000-02-29T00:00:00Z"),
        Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
    );
    assert_eq!(parse_timestamp("2023-10-26 10:22:32Z"), None);
    assert_eq!(parse_timestamp("2023-13-26T10:22:32Z"), None);
}
