//! Instance metadata service client (`100.100.100.200` on a real instance, the emulator in tests):
//! session token from `PUT /latest/api/token` cached for half its TTL, one refresh on 401, retries
//! on 429/5xx/network errors with the metadata backoff (4 attempts, 500 ms × 1.2, jitter 0.1).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::api::{CloudResult, EniMetadata, InstanceIdentity, Metadata};
use crate::backoff::{self, Backoff, BackoffExt, BackoffTable};
use crate::config::MetadataConfig;
use crate::error::CloudError;

const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";
const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";

#[derive(Debug, Clone)]
struct CachedToken {
    /// `None` when the service has no token endpoint (404/405): requests then go without one.
    value: Option<String>,
    fetched: Instant,
}

/// Why one attempt failed.
enum AttemptError {
    /// Worth retrying (network, 429, 5xx).
    Retry(CloudError),
    /// The token was refused.
    Unauthorized,
    /// Anything else.
    Fatal(CloudError),
}

/// The metadata service client.
#[derive(Debug)]
pub struct MetadataClient {
    http: reqwest::Client,
    cfg: MetadataConfig,
    backoff: Backoff,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl MetadataClient {
    /// A client for `cfg`, retrying with the table's `metadata` entry.
    pub fn new(cfg: MetadataConfig, backoffs: &BackoffTable) -> CloudResult<Self> {
        crate::http::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
            .no_proxy()
            .build()
            .map_err(|e| CloudError::Transport {
                action: "metadata client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            backoff: backoffs.get(backoff::METADATA),
            token: tokio::sync::Mutex::new(None),
            cfg,
        })
    }

    fn url(&self, rest: &str) -> String {
        format!(
            "{}/latest/{}",
            self.cfg.base_url.trim_end_matches('/'),
            rest.trim_start_matches('/')
        )
    }

    fn with_extra(&self, mut rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (k, v) in &self.cfg.extra_headers {
            rb = rb.header(k, v);
        }
        rb
    }

    /// The cached token, fetched when absent, older than TTL/2, or `force`d. The mutex is held while
    /// fetching so concurrent callers share one token request.
    async fn token(&self, force: bool) -> CloudResult<Option<String>> {
        let mut guard = self.token.lock().await;
        let fresh_for = Duration::from_secs(self.cfg.token_ttl_secs.max(2) / 2);
        if let Some(t) = guard.as_ref() {
            if !force && t.fetched.elapsed() < fresh_for {
                return Ok(t.value.clone());
            }
        }
        let mut delays = self.backoff.delays();
        let value = loop {
            let res = self
                .with_extra(self.http.put(self.url("api/token")))
                .header(TOKEN_TTL_HEADER, self.cfg.token_ttl_secs.to_string())
                .send()
                .await;
            let err = match res {
                Ok(r) if r.status().is_success() => match r.text().await {
                    Ok(t) => break Some(t.trim().to_string()),
                    Err(e) => transport("PUT api/token", &e),
                },
                Ok(r) if matches!(r.status().as_u16(), 404 | 405) => break None,
                Ok(r) if is_retryable_status(r.status().as_u16()) => {
                    http_error("PUT api/token", r.status().as_u16())
                }
                Ok(r) => return Err(http_error("PUT api/token", r.status().as_u16())),
                Err(e) => transport("PUT api/token", &e),
            };
            match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(err),
            }
        };
        *guard = Some(CachedToken {
            value: value.clone(),
            fetched: Instant::now(),
        });
        Ok(value)
    }

    async fn attempt(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<Option<String>, AttemptError> {
        let what = format!("metadata GET {path}");
        let mut rb = self.with_extra(self.http.get(self.url(&format!("meta-data/{path}"))));
        if let Some(t) = token {
            rb = rb.header(TOKEN_HEADER, t);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| AttemptError::Retry(transport(&what, &e)))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => resp
                .text()
                .await
                .map(Some)
                .map_err(|e| AttemptError::Retry(transport(&what, &e))),
            404 => Ok(None),
            401 => Err(AttemptError::Unauthorized),
            s if is_retryable_status(s) => Err(AttemptError::Retry(http_error(&what, s))),
            s => Err(AttemptError::Fatal(http_error(&what, s))),
        }
    }

    /// GET `/latest/meta-data/<path>`; `None` on 404.
    pub async fn get(&self, path: &str) -> CloudResult<Option<String>> {
        let mut delays = self.backoff.delays();
        let mut refreshed = false;
        let mut token = self.token(false).await?;
        loop {
            let err = match self.attempt(path, token.as_deref()).await {
                Ok(v) => return Ok(v),
                Err(AttemptError::Unauthorized) if !refreshed => {
                    refreshed = true;
                    token = self.token(true).await?;
                    continue;
                }
                Err(AttemptError::Unauthorized) => {
                    return Err(http_error(&format!("metadata GET {path}"), 401))
                }
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry(e)) => e,
            };
            match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(err),
            }
        }
    }

    /// GET a path that must exist.
    pub async fn get_required(&self, path: &str) -> CloudResult<String> {
        self.get(path)
            .await?
            .map(|s| s.trim().to_string())
            .ok_or_else(|| CloudError::NotFound {
                resource: format!("metadata path {path}"),
                code: "HTTP404".into(),
                request_id: String::new(),
            })
    }

    async fn parsed<T: std::str::FromStr>(&self, path: &str) -> CloudResult<T> {
        let raw = self.get_required(path).await?;
        raw.parse().map_err(|_| CloudError::Transport {
            action: format!("metadata GET {path}"),
            message: format!("unexpected value {raw:?}"),
        })
    }
}

fn is_retryable_status(s: u16) -> bool {
    s == 429 || s >= 500
}

fn transport(what: &str, e: &reqwest::Error) -> CloudError {
    CloudError::Transport {
        action: what.to_string(),
        message: e.to_string(),
    }
}

fn http_error(what: &str, status: u16) -> CloudError {
    CloudError::Api {
        action: what.to_string(),
        code: format!("HTTP{status}"),
        message: "metadata service error".into(),
        status,
        request_id: String::new(),
    }
}

/// Split a metadata list: a JSON array (`["a","b"]`), a bracketed list (`[a,b]`) or one item per line;
/// trailing `/` of directory entries removed.
pub fn parse_list(raw: &str) -> Vec<String> {
    let trimmed = raw.trim();
    let inner = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    inner
        .split([',', '\n'])
        .map(|s| {
            s.trim()
                .trim_matches('"')
                .trim()
                .trim_end_matches('/')
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

impl Metadata for MetadataClient {
    async fn instance(&self) -> CloudResult<InstanceIdentity> {
        Ok(InstanceIdentity {
            instance_id: self.get_required("instance-id").await?,
            instance_type: self.get_required("instance/instance-type").await?,
            region_id: self.get_required("region-id").await?,
            zone_id: self.get_required("zone-id").await?,
            vpc_id: self.get_required("vpc-id").await?,
            vswitch_id: self.get_required("vswitch-id").await?,
            primary_mac: self.get_required("mac").await?.to_ascii_lowercase(),
        })
    }

    async fn eni_macs(&self) -> CloudResult<Vec<String>> {
        let raw = self
            .get("network/interfaces/macs/")
            .await?
            .unwrap_or_default();
        Ok(parse_list(&raw)
            .into_iter()
            .map(|m| m.to_ascii_lowercase())
            .collect())
    }

    async fn eni(&self, mac: &str) -> CloudResult<Option<EniMetadata>> {
        let base = format!("network/interfaces/macs/{}", mac.to_ascii_lowercase());
        let Some(eni_id) = self.get(&format!("{base}/network-interface-id")).await? else {
            return Ok(None);
        };
        let primary_ip: Ipv4Addr = self.parsed(&format!("{base}/primary-ip-address")).await?;
        let gateway: Ipv4Addr = self.parsed(&format!("{base}/gateway")).await?;
        let vswitch_id = self.get_required(&format!("{base}/vswitch-id")).await?;
        let vswitch_cidr: ipnet::Ipv4Net =
            self.parsed(&format!("{base}/vswitch-cidr-block")).await?;
        let private_ipv4s = parse_list(
            &self
                .get(&format!("{base}/private-ipv4s"))
                .await?
                .unwrap_or_default(),
        )
        .iter()
        .filter_map(|s| s.parse::<Ipv4Addr>().ok())
        .collect();
        let ipv6s = parse_list(
            &self
                .get(&format!("{base}/ipv6s"))
                .await?
                .unwrap_or_default(),
        )
        .iter()
        .filter_map(|s| s.parse::<Ipv6Addr>().ok())
        .collect();
        Ok(Some(EniMetadata {
            mac: mac.to_ascii_lowercase(),
            eni_id: eni_id.trim().to_string(),
            primary_ip,
            gateway,
            vswitch_id,
            vswitch_cidr,
            private_ipv4s,
            ipv6s,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_in_every_form_the_service_uses() {
        assert_eq!(
            parse_list(r#"["10.0.0.2","10.0.0.3"]"#),
            vec!["10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(parse_list("[2408::1, 2408::2]"), vec!["2408::1", "2408::2"]);
        assert_eq!(
            parse_list("00:16:3e:00:00:01/\n00:16:3e:00:00:02/\n"),
            vec!["00:16:3e:00:00:01", "00:16:3e:00:00:02"]
        );
        assert!(parse_list("").is_empty());
        assert!(parse_list("[]").is_empty());
    }
}
