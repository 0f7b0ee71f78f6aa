//! The admin/debug API, for tests and the lab's own tools. It is served on its own listener (loopback TCP
//! or a unix socket chosen by whoever starts the emulator), never on the OpenAPI listener: in the lab the
//! OpenAPI endpoint is reachable from every pod, and these endpoints rewrite the cloud's behaviour.
//!
//! - `GET /_emulator/state` — the whole world (ENIs, IPs, instances, routes, tokens)
//! - `GET /_emulator/calls` — every call: action, parameters, result code, latency, time
//! - `GET /_emulator/faults` — fault configuration and the faults that fired
//! - `POST /_emulator/faults` — replace the fault configuration (JSON [`FaultConfig`])
//! - `POST /_emulator/rate-limits` — `{"enabled": bool, "per_minute": {"Action": n}}`
//! - `POST /_emulator/instances` — add an instance (JSON [`InstanceConfig`])
//! - `POST /_emulator/call` — run an OpenAPI action as the account owner: `{"action": "…", "params": {…}}`

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::config::InstanceConfig;
use crate::faults::FaultConfig;
use crate::service::Service;

/// Path prefix of every admin endpoint.
pub const ADMIN_PREFIX: &str = "/_emulator";

/// The router of the admin listener.
pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/_emulator/state", get(state))
        .route("/_emulator/calls", get(calls))
        .route("/_emulator/faults", get(get_faults).post(set_faults))
        .route("/_emulator/rate-limits", post(set_rate_limits))
        .route("/_emulator/instances", post(add_instance))
        .route("/_emulator/call", post(call_as_owner))
        .with_state(svc)
}

/// An OpenAPI action run as the account owner.
#[derive(Debug, serde::Deserialize)]
struct OwnerCall {
    action: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

async fn call_as_owner(State(svc): State<Arc<Service>>, Json(c): Json<OwnerCall>) -> Response {
    match svc.call_as_owner(&c.action, &c.params).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            Json(serde_json::json!({"Code": e.code, "Message": e.message})),
        )
            .into_response(),
    }
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
