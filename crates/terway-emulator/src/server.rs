//! HTTP layer of the OpenAPI listener: every path is an RPC-style call (any method, parameters in query
//! and/or form body, signed), within the gateway's size limits. Every error it answers — the limits
//! included — carries the same Alibaba error body as the actions' errors (`Code`, `Message`, `HostId`,
//! `Recommend`, `RequestId`), since SDKs parse that body whatever the status.
//!
//! The admin endpoints are not served here (see [`crate::admin`]): pods reach this listener. Their paths
//! answer 404 so a caller still pointing at the old place learns where the admin API went.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::admin::ADMIN_PREFIX;
use crate::error::ApiError;
use crate::service::{ApiAnswer, RawRequest, Service};

/// Largest request body accepted (form-encoded parameters), as axum's default limit was.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADER_FIELDS: usize = 100;
/// Largest request line plus headers accepted. RPC-style calls carry every parameter in the query, so this
/// leaves room for the longest list an action takes with a wide margin.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The router of the OpenAPI listener.
pub fn router(svc: Arc<Service>) -> Router {
    Router::new().fallback(api).with_state(svc)
}

async fn api(State(svc): State<Arc<Service>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = check_head(&parts) {
        return render(ApiAnswer::error(&e));
    }
    let path = parts.uri.path();
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
    let body = match read_body(&parts, body).await {
        Ok(b) => b,
        Err(e) => return render(ApiAnswer::error(&e)),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let raw = RawRequest {
        method: parts.method.as_str().to_string(),
        path: path.to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    };
    render(svc.call(raw).await)
}

/// The header limits, checked here rather than left to hyper, whose own 431 has no body. (hyper's caps are
/// raised well above these in [`crate::listen`]; beyond them it still answers a bare 431.)
fn check_head(parts: &Parts) -> Result<(), ApiError> {
    let count = parts.headers.len();
    if count > MAX_HEADER_FIELDS {
        return Err(ApiError::too_many_headers(count, MAX_HEADER_FIELDS));
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(1);
    // As on the wire: `METHOD target HTTP/1.1\r\n`, `name: value\r\n` per field, `\r\n`.
    let size = parts.method.as_str().len()
        + 1
        + target
        + " HTTP/1.1\r\n".len()
        + parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
            .sum::<usize>()
        + 2;
    if size > MAX_HEAD_BYTES {
        return Err(ApiError::head_too_large(size, MAX_HEAD_BYTES));
    }
    Ok(())
}

async fn read_body(parts: &Parts, body: Body) -> Result<Vec<u8>, ApiError> {
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Refuse a declared oversize body before reading any of it.
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::body_too_large(MAX_BODY_BYTES));
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::body_too_large(MAX_BODY_BYTES))
        }
        Err(e) => Err(ApiError::new(
            400,
            "InvalidParameter",
            format!("The request body could not be read: {e}."),
        )),
    }
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
