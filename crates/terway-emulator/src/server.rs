//! HTTP routing of the OpenAPI listener: every path that is not an admin path is an RPC-style call
//! (any method, parameters in query and/or form body, signed), plus the unauthenticated admin/debug
//! endpoints under `/_emulator/` for tests and the lab:
//!
//! - `GET /_emulator/state` — the whole world (ENIs, IPs, instances, routes, tokens)
//! - `GET /_emulator/calls` — every call: action, parameters, result code, latency, time
//! - `GET /_emulator/faults` — fault configuration and the faults that fired
//! - `POST /_emulator/faults` — replace the fault configuration (JSON [`FaultConfig`])
//! - `POST /_emulator/rate-limits` — `{"enabled": bool, "per_minute": {"Action": n}}`
//! - `POST /_emulator/instances` — add an instance (JSON [`InstanceConfig`])

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::config::InstanceConfig;
use crate::faults::FaultConfig;
use crate::service::{RawRequest, Service};

/// The router of the OpenAPI listener.
pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/_emulator/state", get(state))
        .route("/_emulator/calls", get(calls))
        .route("/_emulator/faults", get(get_faults).post(set_faults))
        .route("/_emulator/rate-limits", post(set_rate_limits))
        .route("/_emulator/instances", post(add_instance))
        .fallback(api)
        .with_state(svc)
}

async fn api(
    State(svc): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers_vec: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let raw = RawRequest {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers_vec,
        body: body.to_vec(),
    };
    let answer = svc.call(raw).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, answer.body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&answer.request_id) {
        h.insert("x-acs-request-id", v);
    }
    resp
}

async fn state(State(svc): State<Arc<Service>>) -> Response {
    Json(svc.world()).into_response()
}

async fn calls(State(svc): State<Arc<Service>>) -> Response {
    Json(svc.calls()).into_response()
}

async fn get_faults(State(svc): State<Arc<Service>>) -> Response {
    Json(serde_json::json!({ "config": svc.faults(), "fired": svc.fired_faults() })).into_response()
}

async fn set_faults(State(svc): State<Arc<Service>>, Json(cfg): Json<FaultConfig>) -> Response {
    svc.set_faults(cfg);
    Json(svc.faults()).into_response()
}

/// Body of `POST /_emulator/rate-limits`.
#[derive(Deserialize)]
struct RateLimits {
    enabled: bool,
    #[serde(default)]
    per_minute: BTreeMap<String, u32>,
}

async fn set_rate_limits(State(svc): State<Arc<Service>>, Json(rl): Json<RateLimits>) -> Response {
    svc.set_rate_limits(rl.enabled, rl.per_minute);
    StatusCode::NO_CONTENT.into_response()
}

async fn add_instance(
    State(svc): State<Arc<Service>>,
    Json(cfg): Json<InstanceConfig>,
) -> Response {
    match svc.add_instance(&cfg) {
        Ok(inst) => Json(inst).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
