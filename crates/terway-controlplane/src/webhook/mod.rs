//! The mutating pod webhook (admission.k8s.io/v1 over HTTPS on `/mutating`): a pod a PodNetworking
//! selects is admitted with that PodNetworking's annotation, the extended resource of its ENI type and
//! a node affinity to its vSwitches' zones; a pod two PodNetworkings select, or one that is not Ready,
//! is refused with a message that says which and why. Every replica serves it (it needs no Lease):
//! the PodNetworkings and Namespaces come from watch caches, the decision from [`mutate`].

pub mod cert;
pub mod mutate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use terway_apis::{PodEni, PodNetworking};

use crate::metrics::Metrics;
use mutate::{decide, Decision};

/// Path the MutatingWebhookConfiguration calls.
pub const PATH: &str = "/mutating";
/// Name of the MutatingWebhookConfiguration in deploy/.
pub const CONFIGURATION: &str = "terway-controlplane";
/// The webhook Service (the serving certificate names it).
pub const SERVICE: &str = "terway-controlplane";
/// The Secret holding the webhook's CA and serving certificate.
pub const CERT_SECRET: &str = "terway-controlplane-webhook-cert";

/// An AdmissionReview (request or response half).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `AdmissionReview`.
    #[serde(default)]
    pub kind: String,
    /// What the API server asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest>,
    /// What we answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

/// The request half of an AdmissionReview (the fields this webhook reads).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// CREATE, UPDATE, …
    #[serde(default)]
    pub operation: String,
    /// Namespace of the object.
    #[serde(default)]
    pub namespace: String,
    /// The object being admitted.
    #[serde(default)]
    pub object: Option<Value>,
}

/// What the handler needs.
pub struct WebhookState {
    /// PodNetworkings (watch cache).
    pub networkings: Store<PodNetworking>,
    /// Namespaces (watch cache; their labels feed namespace selectors).
    pub namespaces: Store<Namespace>,
    /// Metrics.
    pub metrics: Metrics,
    /// For the PodENI of a pod returning to its fixed IP.
    client: kube::Client,
}

impl WebhookState {
    /// Start the watch caches the webhook reads; they retry on their own.
    pub fn start(client: kube::Client, metrics: Metrics) -> Arc<WebhookState> {
        let (networkings, pn_writer) = reflector::store();
        let (namespaces, ns_writer) = reflector::store();
        let pn_api: Api<PodNetworking> = Api::all(client.clone());
        let ns_api: Api<Namespace> = Api::all(client.clone());
        tokio::spawn(
            reflector::reflector(pn_writer, watcher(pn_api, watcher::Config::default()))
                .default_backoff()
                .for_each(|_| async {}),
        );
        tokio::spawn(
            reflector::reflector(ns_writer, watcher(ns_api, watcher::Config::default()))
                .default_backoff()
                .for_each(|_| async {}),
        );
        Arc::new(WebhookState {
            networkings,
            namespaces,
            metrics,
            client,
        })
    }

    /// Resolves once both caches hold a full list.
    pub async fn synced(&self) {
        let _ = self.networkings.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(ns))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// The zone of the fixed IP that a pod named `name` in `ns` already holds, if any.
    async fn fixed_zone(&self, ns: &str, name: &str) -> Option<String> {
        let api: Api<PodEni> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(Some(pe)) if crate::pod_eni::plan::is_fixed(&pe) => Some(pe.spec.zone),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot read the PodENI; not pinning the zone");
                None
            }
        }
    }

    /// The answer to one review.
    pub async fn review(&self, req: &AdmissionRequest) -> (Value, &'static str) {
        let allow = |result: &'static str| (json!({"uid": req.uid, "allowed": true}), result);
        if req.operation != "CREATE" {
            return allow("unchanged");
        }
        let Some(pod) = req
            .object
            .clone()
            .and_then(|o| serde_json::from_value::<Pod>(o).ok())
        else {
            // Not a pod we can read: nothing of ours to add, and refusing would block the cluster.
            return allow("unchanged");
        };
        let networkings: Vec<PodNetworking> = self
            .networkings
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let ns_labels = self.namespace_labels(&req.namespace);
        let mut decision = decide(&pod, &req.namespace, &ns_labels, &networkings, None);
        // A pod of a fixed-IP PodNetworking whose name already holds an IP goes back to its zone.
        if let (Decision::Patch { networking, .. }, Some(name)) =
            (&decision, pod.metadata.name.as_deref())
        {
            let fixed = networkings.iter().any(|p| {
                p.metadata.name.as_deref() == Some(networking.as_str())
                    && p.spec.allocation_type.alloc_type == Some(terway_apis::IpAllocType::Fixed)
            });
            if fixed {
                if let Some(zone) = self.fixed_zone(&req.namespace, name).await {
                    decision = decide(&pod, &req.namespace, &ns_labels, &networkings, Some(&zone));
                }
            }
        }
        match decision {
            Decision::Unchanged => allow("unchanged"),
            Decision::Patch { networking, ops } => {
                tracing::info!(namespace = %req.namespace, pod = ?pod.metadata.name.as_ref().or(pod.metadata.generate_name.as_ref()), %networking, "pod admitted into its PodNetworking");
                let patch = base64::engine::general_purpose::STANDARD
                    .encode(serde_json::to_vec(&ops).unwrap_or_default());
                (
                    json!({"uid": req.uid, "allowed": true, "patchType": "JSONPatch", "patch": patch}),
                    "patched",
                )
            }
            Decision::Deny(message) => {
                tracing::info!(namespace = %req.namespace, %message, "pod refused");
                (
                    json!({
                        "uid": req.uid,
                        "allowed": false,
                        "status": {"code": 403, "reason": "Forbidden", "message": message},
                    }),
                    "denied",
                )
            }
        }
    }
}

async fn mutating(
    State(state): State<Arc<WebhookState>>,
    body: Bytes,
) -> (axum::http::StatusCode, Json<Value>) {
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.webhook("error");
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("not an AdmissionReview: {e}")})),
            );
        }
    };
    let Some(req) = review.request else {
        state.metrics.webhook("error");
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({"error": "AdmissionReview without a request"})),
        );
    };
    let (response, result) = state.review(&req).await;
    state.metrics.webhook(result);
    (
        axum::http::StatusCode::OK,
        Json(json!({
            "apiVersion": if review.api_version.is_empty() { "admission.k8s.io/v1".to_string() } else { review.api_version },
            "kind": "AdmissionReview",
            "response": response,
        })),
    )
}

/// Serve the webhook over TLS on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<WebhookState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let app = axum::Router::new()
        .route(PATH, axum::routing::post(mutating))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    Ok(tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                        return;
                    }
                };
                let svc = TowerToHyperService::new(app);
                if let Err(e) = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "webhook connection ended");
                }
            });
        }
    }))
}
