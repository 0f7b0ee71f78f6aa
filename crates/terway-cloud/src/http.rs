//! One signed RPC-style request and its response: parameters in the query string of a `POST` with
//! an empty body (as the official SDKs send ECS/VPC calls), ACS3 or legacy HMAC-SHA1 signing, JSON
//! on success, `{RequestId, HostId, Code, Message}` classified into [`CloudError`] otherwise.

use std::sync::Once;
use std::time::SystemTime;

use crate::api::CloudResult;
use crate::classify::{classify, parse_error_body, CallContext};
use crate::config::{CloudConfig, Product, SignatureMethod};
use crate::credentials::Credential;
use crate::error::CloudError;
use crate::sign::{self, Pairs};

static CRYPTO: Once = Once::new();

/// Install rustls' ring provider once per process (reqwest is built without a default provider so
/// the workspace does not compile aws-lc). Harmless if someone installed one already.
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Sends signed requests to the configured endpoints.
#[derive(Debug, Clone)]
pub struct Transport {
    http: reqwest::Client,
    ecs_url: String,
    vpc_url: String,
    signature: SignatureMethod,
}

/// One request: action, product, business parameters.
#[derive(Debug, Clone)]
pub struct RpcRequest<'a> {
    /// Action name.
    pub action: &'a str,
    /// ECS or VPC.
    pub product: Product,
    /// Business parameters (RegionId included by the caller).
    pub params: &'a Pairs,
}

/// The `Host` header the HTTP client will send for `url`: authority without a default port (which
/// clients omit, and a signed host must match byte for byte).
fn split_host(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else {
        ":80"
    };
    authority
        .strip_suffix(default_port)
        .unwrap_or(authority)
        .to_string()
}

impl Transport {
    /// A transport for `cfg`'s endpoints and timeout.
    pub fn new(cfg: &CloudConfig) -> CloudResult<Self> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout())
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| CloudError::Transport {
                action: "build HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            ecs_url: cfg.base_url(Product::Ecs),
            vpc_url: cfg.base_url(Product::Vpc),
            signature: cfg.signature,
        })
    }

    fn base(&self, product: Product) -> &str {
        match product {
            Product::Ecs => &self.ecs_url,
            Product::Vpc => &self.vpc_url,
        }
    }

    /// Sign and send one attempt; a fresh nonce and timestamp every time.
    pub async fn send(
        &self,
        req: &RpcRequest<'_>,
        cred: &Credential,
        ctx: &CallContext,
    ) -> CloudResult<serde_json::Value> {
        let base = self.base(req.product);
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let date = sign::format_timestamp(SystemTime::now());
        let (query, headers) = match self.signature {
            SignatureMethod::Acs3 => {
                let host = split_host(base);
                let signed = sign::sign_acs3(
                    &sign::Acs3Request {
                        method: "POST",
                        host: &host,
                        path: "/",
                        query: req.params,
                        body: b"",
                        content_type: None,
                        action: req.action,
                        version: req.product.version(),
                        date: &date,
                        nonce: &nonce,
                        security_token: cred.security_token.as_deref(),
                    },
                    &cred.access_key_id,
                    &cred.access_key_secret,
                );
                // reqwest derives Host from the URL; sending it twice would be a protocol error.
                let headers: Pairs = signed.into_iter().filter(|(k, _)| k != "host").collect();
                (req.params.clone(), headers)
            }
            SignatureMethod::RpcHmacSha1 => {
                let mut q = req.params.clone();
                for (k, v) in [
                    ("Action", req.action),
                    ("Version", req.product.version()),
                    ("Format", "JSON"),
                    ("AccessKeyId", cred.access_key_id.as_str()),
                    ("SignatureMethod", "HMAC-SHA1"),
                    ("SignatureVersion", "1.0"),
                    ("SignatureNonce", nonce.as_str()),
                    ("Timestamp", date.as_str()),
                ] {
                    q.push((k.into(), v.into()));
                }
                if let Some(t) = &cred.security_token {
                    q.push(("SecurityToken".into(), t.clone()));
                }
                let signature = sign::rpc_signature(&cred.access_key_secret, "POST", &q);
                q.push(("Signature".into(), signature));
                (q, Vec::new())
            }
        };
        let url = if query.is_empty() {
            format!("{base}/")
        } else {
            format!("{base}/?{}", sign::encode_query(&query))
        };
        let mut rb = self.http.post(url);
        for (k, v) in &headers {
            rb = rb.header(k, v);
        }
        let transport = |e: reqwest::Error| CloudError::Transport {
            action: req.action.to_string(),
            message: e.to_string(),
        };
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&body).map_err(|e| CloudError::Transport {
                action: req.action.to_string(),
                message: format!("response is not JSON: {e}"),
            })
        } else {
            Err(classify(
                req.action,
                status,
                parse_error_body(status, &body),
                ctx,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_base_url() {
        assert_eq!(split_host("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(split_host("http://10.0.0.1:80"), "10.0.0.1");
        assert_eq!(split_host("https://h.example:443/"), "h.example");
        assert_eq!(split_host("https://h.example:80"), "h.example:80");
        assert_eq!(
            split_host("https://ecs-vpc.cn-hangzhou.aliyuncs.com/"),
            "ecs-vpc.cn-hangzhou.aliyuncs.com"
        );
    }
}
