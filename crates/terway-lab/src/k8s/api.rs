//! The few Kubernetes API calls the lab itself makes (listing pods and nodes), over HTTPS with the lab's
//! CA and the administrator token. Everything a user does goes through the real `kubectl` instead.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// A client of the lab's API server.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// A client for `base` (`https://addr:port`) trusting the CA in `ca_file`.
    pub fn new(base: &str, ca_file: &Path, token: &str) -> anyhow::Result<Api> {
        terway_cloud::http::install_crypto_provider();
        let pem = std::fs::read(ca_file).with_context(|| format!("read {}", ca_file.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem).context("parse the lab CA")?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .context("build the API client")?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// GET `path` (with its query) as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Send `method path` with an optional JSON body; the answer as JSON (404 on DELETE counts as done).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{method} {url}"))?;
        if method == reqwest::Method::DELETE && status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Value::Null);
        }
        if !status.is_success() {
            anyhow::bail!("{method} {url}: {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: not JSON"))
    }

    /// Whether `/readyz` answers `ok`.
    pub async fn ready(&self) -> bool {
        let url = format!("{}/readyz", self.base);
        match self.http.get(&url).bearer_auth(&self.token).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Every pod of the cluster.
    pub async fn pods(&self) -> anyhow::Result<Vec<Value>> {
        Ok(items(self.get("/api/v1/pods").await?))
    }

    /// Every node of the cluster.
    pub async fn nodes(&self) -> anyhow::Result<Vec<Value>> {
        Ok(items(self.get("/api/v1/nodes").await?))
    }
}

fn items(list: Value) -> Vec<Value> {
    match list.get("items") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// Whether a Node object's `Ready` condition is `True`.
pub fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// `metadata.<field>` of an object as a string ("" when absent).
pub fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readiness_comes_from_the_ready_condition() {
        let ready = json!({"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}});
        let not = json!({"status":{"conditions":[{"type":"Ready","status":"False"}]}});
        assert!(node_ready(&ready));
        assert!(!node_ready(&not));
        assert!(!node_ready(&json!({})));
        assert_eq!(meta(&json!({"metadata":{"name":"n"}}), "name"), "n");
    }
}
