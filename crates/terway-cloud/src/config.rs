//! Configuration of the Alibaba Cloud client, as the daemon fills it from `eni_conf` (serde, every
//! field optional with Terway's defaults).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::BackoffOverride;

/// Which OpenAPI product an action belongs to (decides endpoint and API version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Product {
    /// ECS, version 2014-05-26.
    Ecs,
    /// VPC, version 2016-04-28.
    Vpc,
}

impl Product {
    /// API version string.
    pub fn version(self) -> &'static str {
        match self {
            Product::Ecs => "2014-05-26",
            Product::Vpc => "2016-04-28",
        }
    }

    fn service(self) -> &'static str {
        match self {
            Product::Ecs => "ecs",
            Product::Vpc => "vpc",
        }
    }
}

/// VPC-internal endpoints (`ecs-vpc.<region>.aliyuncs.com`, Terway's default) or public ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointType {
    /// `ecs-vpc.<region>.aliyuncs.com`.
    #[default]
    Vpc,
    /// `ecs.<region>.aliyuncs.com`.
    Public,
}

/// How requests are signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureMethod {
    /// ACS3-HMAC-SHA256 in the `Authorization` header (what current SDKs send).
    #[default]
    Acs3,
    /// Legacy RPC `Signature` query parameter, HMAC-SHA1.
    RpcHmacSha1,
}

/// Where the AccessKey comes from; see [`crate::credentials`] for the order tried.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CredentialsConfig {
    /// Static AccessKey id (with `access_key_secret`), tried first.
    pub access_key_id: Option<String>,
    /// Static AccessKey secret.
    pub access_key_secret: Option<String>,
    /// Credentials file (Alibaba CLI ini format); default `~/.alibabacloud/credentials`.
    pub credentials_file: Option<PathBuf>,
    /// Profile in the credentials file; default `$ALIBABA_CLOUD_PROFILE` or `default`.
    pub profile: Option<String>,
    /// RAM role of the instance; discovered from the metadata service when unset.
    pub ram_role: Option<String>,
    /// Skip the environment variables (tests, or to force the RAM role).
    pub ignore_env: bool,
    /// Directory holding `access-key-id` and `access-key-secret` files (Terway's
    /// `/var/alibaba-addon-secret` mounted from a Kubernetes secret), tried after the environment.
    pub secret_dir: Option<PathBuf>,
}

impl std::fmt::Debug for CredentialsConfig {
    // The secret must never reach a log line through `{:?}` of a config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsConfig")
            .field("access_key_id", &self.access_key_id)
            .field(
                "access_key_secret",
                &self.access_key_secret.as_ref().map(|_| "***"),
            )
            .field("credentials_file", &self.credentials_file)
            .field("profile", &self.profile)
            .field("ram_role", &self.ram_role)
            .field("ignore_env", &self.ignore_env)
            .field("secret_dir", &self.secret_dir)
            .finish()
    }
}

/// Instance metadata service client settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MetadataConfig {
    /// Base URL, default `http://100.100.100.200`.
    pub base_url: String,
    /// Token lifetime requested from `PUT /latest/api/token`, seconds.
    pub token_ttl_secs: u64,
    /// Extra headers on every request (the emulator's `X-Emulator-Instance-Id` outside the lab).
    pub extra_headers: BTreeMap<String, String>,
    /// Per-request timeout, seconds.
    pub timeout_secs: u64,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            base_url: "http://100.100.100.200".into(),
            token_ttl_secs: 21_600,
            extra_headers: BTreeMap::new(),
            timeout_secs: 30,
        }
    }
}

/// Everything the OpenAPI client needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CloudConfig {
    /// Region, e.g. `cn-hangzhou`.
    pub region: String,
    /// ECS endpoint override: `host[:port]` or a full `http(s)://host:port` URL.
    pub ecs_endpoint: Option<String>,
    /// VPC endpoint override, same forms.
    pub vpc_endpoint: Option<String>,
    /// VPC-internal (default) or public endpoints, when not overridden.
    pub endpoint_type: EndpointType,
    /// `https` (default) or `http`, for endpoints given without a scheme.
    pub scheme: String,
    /// Signature method.
    pub signature: SignatureMethod,
    /// AccessKey sources.
    pub credentials: CredentialsConfig,
    /// Per-API calls per minute (`rate_limit` in eni_conf), overriding Terway's defaults.
    pub rate_limit: BTreeMap<String, u32>,
    /// `backoff_override` of eni_conf, in its form, applied over Terway's table by [`crate::backoff::BackoffTable`].
    pub backoff_override: BTreeMap<String, BackoffOverride>,
    /// HTTP timeout of one request, seconds (Terway's SDK uses 20).
    pub timeout_secs: u64,
    /// Metadata service (also the RAM-role credential source).
    pub metadata: MetadataConfig,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            region: String::new(),
            ecs_endpoint: None,
            vpc_endpoint: None,
            endpoint_type: EndpointType::Vpc,
            scheme: "https".into(),
            signature: SignatureMethod::Acs3,
            credentials: CredentialsConfig::default(),
            rate_limit: BTreeMap::new(),
            backoff_override: BTreeMap::new(),
            timeout_secs: 20,
            metadata: MetadataConfig::default(),
        }
    }
}

impl CloudConfig {
    /// A config talking to one endpoint URL for both ECS and VPC (the emulator) with a static key.
    pub fn for_endpoint(
        region: &str,
        url: &str,
        access_key_id: &str,
        access_key_secret: &str,
    ) -> Self {
        Self {
            region: region.into(),
            ecs_endpoint: Some(url.into()),
            vpc_endpoint: Some(url.into()),
            credentials: CredentialsConfig {
                access_key_id: Some(access_key_id.into()),
                access_key_secret: Some(access_key_secret.into()),
                ignore_env: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Base URL (`scheme://host[:port]`) of `product`.
    pub fn base_url(&self, product: Product) -> String {
        let configured = match product {
            Product::Ecs => self.ecs_endpoint.as_deref(),
            Product::Vpc => self.vpc_endpoint.as_deref(),
        };
        let host = match configured {
            Some(e) if e.contains("://") => return e.trim_end_matches('/').to_string(),
            Some(e) => e.trim_end_matches('/').to_string(),
            None => match self.endpoint_type {
                EndpointType::Vpc => {
                    format!("{}-vpc.{}.aliyuncs.com", product.service(), self.region)
                }
                EndpointType::Public => {
                    format!("{}.{}.aliyuncs.com", product.service(), self.region)
                }
            },
        };
        format!("{}://{}", self.scheme.to_ascii_lowercase(), host)
    }

    /// Apply Terway's environment switches: `ALICLOUD_ENDPOINT_TYPE=public`, `ECS_ENDPOINT`,
    /// `VPC_ENDPOINT`, `ALICLOUD_CLIENT_SCHEME` (`HTTP`/`HTTPS`). Values already set in the config win
    /// for the endpoints; `env` is injected so tests need not touch the process environment.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        if env("ALICLOUD_ENDPOINT_TYPE").is_some_and(|v| v.eq_ignore_ascii_case("public")) {
            self.endpoint_type = EndpointType::Public;
        }
        if self.ecs_endpoint.is_none() {
            self.ecs_endpoint = env("ECS_ENDPOINT").filter(|v| !v.is_empty());
        }
        if self.vpc_endpoint.is_none() {
            self.vpc_endpoint = env("VPC_ENDPOINT").filter(|v| !v.is_empty());
        }
        if let Some(s) = env("ALICLOUD_CLIENT_SCHEME").filter(|v| !v.is_empty()) {
            self.scheme = s.to_ascii_lowercase();
        }
    }

    /// Request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_default_to_vpc_internal_and_can_be_overridden() {
        let mut c = CloudConfig {
            region: "cn-hangzhou".into(),
            ..Default::default()
        };
        assert_eq!(
            c.base_url(Product::Ecs),
            "https://ecs-vpc.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            c.base_url(Product::Vpc),
            "https://vpc-vpc.cn-hangzhou.aliyuncs.com"
        );
        c.endpoint_type = EndpointType::Public;
        c.scheme = "HTTP".into();
        assert_eq!(
            c.base_url(Product::Ecs),
            "http://ecs.cn-hangzhou.aliyuncs.com"
        );
        c.ecs_endpoint = Some("127.0.0.1:8080".into());
        c.vpc_endpoint = Some("http://10.0.0.1:9/".into());
        assert_eq!(c.base_url(Product::Ecs), "http://127.0.0.1:8080");
        assert_eq!(c.base_url(Product::Vpc), "http://10.0.0.1:9");
    }

    #[test]
    fn terway_environment_switches() {
        let env = |k: &str| match k {
            "ALICLOUD_ENDPOINT_TYPE" => Some("public".to_string()),
            "VPC_ENDPOINT" => Some("vpc.example:80".to_string()),
            "ALICLOUD_CLIENT_SCHEME" => Some("HTTP".to_string()),
            _ => None,
        };
        let mut c = CloudConfig {
            region: "cn-shanghai".into(),
            ..Default::default()
        };
        c.apply_env(env);
        assert_eq!(
            c.base_url(Product::Ecs),
            "http://ecs.cn-shanghai.aliyuncs.com"
        );
        assert_eq!(c.base_url(Product::Vpc), "http://vpc.example:80");
    }

    #[test]
    fn deserialises_from_partial_json() {
        let c: CloudConfig = serde_json::from_str(
            r#"{"region":"cn-beijing","rate_limit":{"DescribeVSwitches":10},
                "backoff_override":{"eni_create":{"Duration":"5ms","Factor":1,"Jitter":0,"Steps":3}},
                "metadata":{"extra_headers":{"X-Emulator-Instance-Id":"i-1"}}}"#,
        )
        .unwrap();
        assert_eq!(c.region, "cn-beijing");
        assert_eq!(c.rate_limit["DescribeVSwitches"], 10);
        assert_eq!(c.backoff_override["eni_create"].steps, Some(3));
        assert_eq!(c.metadata.base_url, "http://100.100.100.200");
        assert_eq!(c.timeout_secs, 20);
        let with_secret = CloudConfig::for_endpoint("r", "http://x", "AK", "very-secret");
        assert!(!format!("{with_secret:?}").contains("very-secret"));
    }
}
