//! [`AlibabaCloud`]: the OpenAPI client core. One logical call = rate-limit token, signed attempt,
//! classification, and retries of retryable errors (throttling, conflicts, 5xx, transport) on the
//! action's named backoff, re-using one ClientToken for all attempts so the cloud can deduplicate.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tracing::Instrument;

use crate::api::CloudResult;
use crate::backoff::{Backoff, BackoffExt, BackoffTable};
use crate::classify::CallContext;
use crate::config::{CloudConfig, Product};
use crate::credentials::CredentialProvider;
use crate::error::CloudError;
use crate::http::{RpcRequest, Transport};
use crate::metadata::MetadataClient;
use crate::metrics::{CloudMetrics, MetricsSnapshot};
use crate::ratelimit::RateLimiter;
use crate::sign::Pairs;

/// The Alibaba Cloud ECS/VPC client. Cheap to clone (shared state behind an `Arc`).
#[derive(Debug, Clone)]
pub struct AlibabaCloud {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: CloudConfig,
    transport: Transport,
    creds: CredentialProvider,
    limiter: RateLimiter,
    backoffs: BackoffTable,
    metrics: Arc<CloudMetrics>,
}

/// One logical call.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub action: &'static str,
    pub product: Product,
    pub params: Pairs,
    /// Name in the backoff table.
    pub backoff: &'static str,
    pub ctx: CallContext,
    /// Add a `ClientToken` (one per logical call, the same on every attempt).
    pub client_token: bool,
    /// The token to send instead of a fresh one.
    pub token: Option<String>,
}

impl Call {
    pub(crate) fn ecs(action: &'static str, backoff: &'static str) -> Self {
        Self {
            action,
            product: Product::Ecs,
            params: Vec::new(),
            backoff,
            ctx: CallContext::default(),
            client_token: false,
            token: None,
        }
    }

    pub(crate) fn vpc(action: &'static str, backoff: &'static str) -> Self {
        Self {
            product: Product::Vpc,
            ..Self::ecs(action, backoff)
        }
    }

    pub(crate) fn param(mut self, k: &str, v: impl Into<String>) -> Self {
        self.params.push((k.to_string(), v.into()));
        self
    }

    pub(crate) fn eni(mut self, id: &str) -> Self {
        self.ctx.eni_id = Some(id.to_string());
        self
    }

    pub(crate) fn instance(mut self, id: &str) -> Self {
        self.ctx.instance_id = Some(id.to_string());
        self
    }

    pub(crate) fn vswitch(mut self, id: &str) -> Self {
        self.ctx.vswitch_id = Some(id.to_string());
        self
    }

    pub(crate) fn other(mut self, what: &str) -> Self {
        self.ctx.other = Some(what.to_string());
        self
    }

    pub(crate) fn idempotent(mut self) -> Self {
        self.client_token = true;
        self
    }

    /// Send `token` as the ClientToken (when set) instead of a fresh one.
    pub(crate) fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }
}

impl AlibabaCloud {
    /// A client for `cfg`, resolving credentials through the chain (with the metadata service as
    /// the RAM-role source).
    pub fn new(cfg: CloudConfig) -> CloudResult<Self> {
        let backoffs = BackoffTable::new(&cfg.backoff_override);
        let metadata = Arc::new(MetadataClient::new(cfg.metadata.clone(), &backoffs)?);
        let creds = CredentialProvider::resolve(&cfg.credentials, Some(metadata))?;
        Self::with_credentials(cfg, creds)
    }

    /// A client with an explicit credential provider.
    pub fn with_credentials(cfg: CloudConfig, creds: CredentialProvider) -> CloudResult<Self> {
        let transport = Transport::new(&cfg)?;
        Ok(Self {
            inner: Arc::new(Inner {
                transport,
                creds,
                limiter: RateLimiter::new(&cfg.rate_limit),
                backoffs: BackoffTable::new(&cfg.backoff_override),
                metrics: Arc::new(CloudMetrics::default()),
                cfg,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &CloudConfig {
        &self.inner.cfg
    }

    /// The named backoff (with overrides applied).
    pub fn backoff(&self, name: &str) -> Backoff {
        self.inner.backoffs.get(name)
    }

    /// Shared handle to the per-action statistics.
    pub fn metrics_handle(&self) -> Arc<CloudMetrics> {
        self.inner.metrics.clone()
    }

    /// Copy of the per-action statistics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Run one logical call with rate limiting, retries and metrics.
    pub(crate) async fn call(&self, call: Call) -> CloudResult<Value> {
        let span = tracing::debug_span!(
            "cloud_call",
            action = call.action,
            resource = %call.ctx.resource(),
            attempts = tracing::field::Empty
        );
        let action = call.action;
        let res = self.call_inner(call).instrument(span).await;
        self.inner.metrics.record_call(action, res.is_ok());
        res
    }

    async fn call_inner(&self, mut call: Call) -> CloudResult<Value> {
        let inner = &self.inner;
        call.params
            .push(("RegionId".into(), inner.cfg.region.clone()));
        if call.client_token {
            let token = call
                .token
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            call.params.push(("ClientToken".into(), token));
        }
        let backoff = inner.backoffs.get(call.backoff);
        let mut delays = backoff.delays();
        let req = RpcRequest {
            action: call.action,
            product: call.product,
            params: &call.params,
        };
        let mut attempts = 0u32;
        let mut refetched_credentials = false;
        loop {
            attempts += 1;
            let waited = inner.limiter.acquire(call.action).await;
            if !waited.is_zero() {
                inner.metrics.record_rate_limit_wait(call.action, waited);
            }
            let cred = inner.creds.get().await?;
            let started = Instant::now();
            let res = inner.transport.send(&req, &cred, &call.ctx).await;
            let code = res
                .as_ref()
                .err()
                .map(|e| e.code().unwrap_or("Transport").to_string());
            inner
                .metrics
                .record_request(call.action, started.elapsed(), code.as_deref());
            tracing::Span::current().record("attempts", attempts);
            let err = match res {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => e,
                // A temporary key that expired or was rotated early: fetch a new one and try again.
                Err(e @ CloudError::Auth { .. })
                    if !refetched_credentials
                        && e.code()
                            .is_some_and(|c| c.starts_with("InvalidSecurityToken"))
                        && inner.creds.invalidate().await =>
                {
                    refetched_credentials = true;
                    e
                }
                Err(e) => return Err(e),
            };
            match delays.next() {
                Some(wait) => {
                    tracing::debug!(action = call.action, attempt = attempts, wait_ms = wait.as_millis() as u64, error = %err, "retrying");
                    inner.metrics.record_retry(call.action);
                    tokio::time::sleep(wait).await;
                }
                None => {
                    tracing::warn!(action = call.action, attempts, error = %err, "giving up after retries");
                    return Err(err);
                }
            }
        }
    }
}

/// Map "already gone" to success for release-type operations, as Terway does: only for the listed
/// codes, so e.g. a missing route *table* still fails.
pub(crate) fn ok_if_not_found(res: CloudResult<Value>, codes: &[&str]) -> CloudResult<()> {
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some_and(|c| codes.contains(&c)) => Ok(()),
        Err(e) => Err(e),
    }
}
