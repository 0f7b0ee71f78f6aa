//! HTTP layer of the OpenAPI listener: every path is an RPC-style call (any method, parameters in query
//! and/or form body, signed).
//!
//! The admin endpoints are not served here (see [`crate::admin`]): pods reach this listener. Their paths
//! answer 404 so a caller still pointing at the old place learns where the admin API went.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::admin::ADMIN_PREFIX;
use crate::error::ApiError;
use crate::service::{ApiAnswer, RawRequest, Service};

/// The router of the OpenAPI listener.
pub fn router(svc: Arc<Service>) -> Router {
    Router::new().fallback(api).with_state(svc)
}

async fn api(
    State(svc): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path == ADMIN_PREFIX || path.starts_with(&format!("{ADMIN_PREFIX}/")) {
        return render(ApiAnswer::error(&ApiError::new(
            404,
            "InvalidAction.NotFound",
            format!(
                "{path} is not served on the OpenAPI endpoint: the emulator's admin API has its own listener \
                 (printed by `terway-lab cloud`; in a lab, the supervisor's admin socket)."
            ),
        )));
    }
    let headers = headers
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
        path: path.to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body: body.to_vec(),
    };
    render(svc.call(raw).await)
}

/// An answer as the gateway sends it: JSON body, `x-acs-request-id` header.
fn render(answer: ApiAnswer) -> Response {
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
