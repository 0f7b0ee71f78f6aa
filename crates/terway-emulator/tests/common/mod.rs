//! Shared helpers of the emulator's HTTP-level tests: start an emulator, sign requests by hand
//! (ACS3 headers or legacy HMAC-SHA1 query), wait for ENI states.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use terway_cloud::sign;
use terway_emulator::{
    Delays, Emulator, EmulatorConfig, FabricHook, NoFabric, RunningEmulator, ECS_VERSION,
    VPC_VERSION,
};

/// A configuration with fast transitions and one g7.4xlarge node.
pub fn fast_config() -> EmulatorConfig {
    EmulatorConfig {
        delays: Delays {
            attach_min_ms: 50,
            attach_max_ms: 100,
            detach_min_ms: 30,
            detach_max_ms: 60,
            ..Delays::default()
        },
        ..EmulatorConfig::default()
    }
}

/// The instance of the default configuration.
pub fn node(cfg: &EmulatorConfig) -> String {
    cfg.instances[0].id.clone()
}

/// The first vSwitch of the configuration.
pub fn vswitch(cfg: &EmulatorConfig) -> String {
    cfg.vswitches[0].id.clone()
}

/// Start with no fabric.
pub fn start(cfg: EmulatorConfig) -> RunningEmulator {
    start_with(cfg, Arc::new(NoFabric))
}

/// Start with a fabric hook.
pub fn start_with(cfg: EmulatorConfig, hook: Arc<dyn FabricHook>) -> RunningEmulator {
    Emulator::start(cfg, hook).expect("emulator starts")
}

/// A hand-rolled OpenAPI client.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub host: String,
    pub ak: String,
    pub secret: String,
    pub region: String,
    pub security_token: Option<String>,
}

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The error code, or "OK".
    pub fn code(&self) -> &str {
        self.body
            .get("Code")
            .and_then(Value::as_str)
            .unwrap_or("OK")
    }
    /// Panic unless it is a success.
    pub fn ok(self) -> Value {
        assert_eq!(
            self.status, 200,
            "expected success, got {}: {}",
            self.status, self.body
        );
        self.body
    }
    /// Assert an error code and status.
    pub fn expect_err(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer {}",
            self.body
        );
        assert!(
            self.body.get("RequestId").is_some()
                && self.body.get("HostId").is_some()
                && self.body.get("Message").is_some()
        );
    }
}

pub fn nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn now() -> String {
    sign::format_timestamp(SystemTime::now())
}

/// A plain-HTTP reqwest client (reqwest needs a rustls provider even for http).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

impl Api {
    pub fn new(emu: &RunningEmulator) -> Self {
        let ak = emu.access_key();
        Self {
            http: http_client(),
            url: emu.api_url(),
            host: emu.api_addr().to_string(),
            ak: ak.id,
            secret: ak.secret,
            region: emu.region_id(),
            security_token: None,
        }
    }

    fn pairs(&self, params: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vec![("RegionId".into(), self.region.clone())];
        v.extend(
            params
                .iter()
                .map(|(k, val)| (k.to_string(), val.to_string())),
        );
        v
    }

    /// Sign with ACS3 (explicit date and nonce) and send as POST with the parameters in the query.
    pub async fn acs3_raw(
        &self,
        action: &str,
        version: &str,
        query: Vec<(String, String)>,
        date: &str,
        nonce: &str,
        secret: &str,
    ) -> Answer {
        let req = sign::Acs3Request {
            method: "POST",
            host: &self.host,
            path: "/",
            query: &query,
            body: b"",
            content_type: None,
            action,
            version,
            date,
            nonce,
            security_token: self.security_token.as_deref(),
        };
        let headers = sign::sign_acs3(&req, &self.ak, secret);
        let url = format!("{}/?{}", self.url, sign::encode_query(&query));
        let mut rb = self.http.post(url);
        for (k, v) in headers {
            if k != "host" {
                rb = rb.header(k, v);
            }
        }
        send(rb).await
    }

    /// ACS3-signed call.
    pub async fn call(&self, action: &str, version: &str, params: &[(&str, &str)]) -> Answer {
        let q = self.pairs(params);
        self.acs3_raw(action, version, q, &now(), &nonce(), &self.secret.clone())
            .await
    }

    /// ECS call.
    pub async fn ecs(&self, action: &str, params: &[(&str, &str)]) -> Answer {
        self.call(action, ECS_VERSION, params).await
    }

    /// VPC call.
    pub async fn vpc(&self, action: &str, params: &[(&str, &str)]) -> Answer {
        self.call(action, VPC_VERSION, params).await
    }

    /// Legacy HMAC-SHA1 query-signed GET.
    pub async fn rpc_sha1(
        &self,
        action: &str,
        version: &str,
        params: &[(&str, &str)],
        nonce: &str,
    ) -> Answer {
        let mut q = self.pairs(params);
        q.extend([
            ("Action".into(), action.into()),
            ("Version".into(), version.into()),
            ("Format".into(), "JSON".into()),
            ("AccessKeyId".into(), self.ak.clone()),
            ("SignatureMethod".into(), "HMAC-SHA1".into()),
            ("SignatureVersion".into(), "1.0".into()),
            ("SignatureNonce".into(), nonce.into()),
            ("Timestamp".into(), now()),
        ]);
        let sig = sign::rpc_signature(&self.secret, "GET", &q);
        q.push(("Signature".into(), sig));
        send(
            self.http
                .get(format!("{}/?{}", self.url, sign::encode_query(&q))),
        )
        .await
    }
}

pub async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let resp = rb.send().await.expect("request reaches the emulator");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON answer {status}: {text}"));
    Answer { status, body }
}

/// Create a secondary ENI in `vsw` with `secondary` extra IPs; returns its id.
pub async fn create_eni(api: &Api, vsw: &str, secondary: u32) -> String {
    let n = secondary.to_string();
    let body = api
        .ecs(
            "CreateNetworkInterface",
            &[
                ("VSwitchId", vsw),
                ("SecurityGroupId", "sg-test"),
                ("SecondaryPrivateIpAddressCount", &n),
            ],
        )
        .await
        .ok();
    body["NetworkInterfaceId"]
        .as_str()
        .expect("NetworkInterfaceId")
        .to_string()
}

/// Status of an ENI by DescribeNetworkInterfaces.
pub async fn eni_status(api: &Api, eni: &str) -> Option<String> {
    let body = api
        .ecs(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", eni)],
        )
        .await
        .ok();
    body["NetworkInterfaceSets"]["NetworkInterfaceSet"]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|e| e["Status"].as_str())
        .map(str::to_string)
}

/// Poll until the ENI has `status`; returns how long it took.
pub async fn wait_status(api: &Api, eni: &str, status: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if eni_status(api, eni).await.as_deref() == Some(status) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "ENI {eni} did not become {status} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Business params of a call as a map (helper for call-log assertions).
pub fn params_of(v: &[(&str, &str)]) -> BTreeMap<String, String> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Replace the running emulator's faults through its admin API at `admin` (its base URL); panics unless
/// the admin API accepts them.
pub async fn post_faults(
    http: &reqwest::Client,
    admin: &str,
    faults: &terway_emulator::FaultConfig,
) {
    let resp = http
        .post(format!("{admin}/_emulator/faults"))
        .json(faults)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// The fault configuration and the fired faults, as the admin API at `admin` lists them.
pub async fn get_faults(http: &reqwest::Client, admin: &str) -> serde_json::Value {
    http.get(format!("{admin}/_emulator/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
