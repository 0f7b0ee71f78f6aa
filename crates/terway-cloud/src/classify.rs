//! Turning an API error response (`{RequestId, HostId, Code, Message}` + HTTP status) into the
//! [`CloudError`] the pool acts on. The codes are the ones Terway's `errors.go` names (§5.2).

use crate::error::CloudError;

/// What a call was about, so errors can name the ENI / instance / vSwitch involved.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// ENI the call targets.
    pub eni_id: Option<String>,
    /// Instance the call targets.
    pub instance_id: Option<String>,
    /// vSwitch the call allocates from.
    pub vswitch_id: Option<String>,
    /// Any other resource (route table, instance type list, …).
    pub other: Option<String>,
}

impl CallContext {
    /// Best name of the resource for messages.
    pub fn resource(&self) -> String {
        self.eni_id
            .clone()
            .or_else(|| self.vswitch_id.clone())
            .or_else(|| self.instance_id.clone())
            .or_else(|| self.other.clone())
            .unwrap_or_else(|| "resource".into())
    }
}

/// An API error body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiErrorBody {
    /// `Code`.
    pub code: String,
    /// `Message`.
    pub message: String,
    /// `RequestId`.
    pub request_id: String,
}

/// Codes meaning "the key, signature or permission is wrong": retrying cannot help.
fn is_auth_code(code: &str) -> bool {
    code.starts_with("Forbidden")
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidSecurityToken")
        || code.starts_with("SignatureDoesNotMatch")
        || code.starts_with("IncompleteSignature")
        || code.starts_with("InvalidTimeStamp")
        || code == "SignatureNonceUsed"
        || code == "MissingSecurityToken"
        || code == "NoPermission"
        || code == "InvalidAuthorization"
        || code == "MissingAuthorization"
}

/// Classify an error response of `action`.
pub fn classify(action: &str, status: u16, body: ApiErrorBody, ctx: &CallContext) -> CloudError {
    let ApiErrorBody {
        code,
        message,
        request_id,
    } = body;
    let action = action.to_string();
    let c = code.as_str();
    if c.starts_with("Throttling") || (status == 429 && !is_auth_code(c)) {
        return CloudError::Throttled {
            action,
            code,
            request_id,
        };
    }
    match c {
        "InvalidVSwitchId.IpNotEnough"
        | "QuotaExceeded.PrivateIpAddress"
        | "InvalidVSwitchId.IpInsufficient" => CloudError::IpNotEnough {
            vswitch_id: ctx.vswitch_id.clone().unwrap_or_else(|| ctx.resource()),
            code,
            request_id,
        },
        "EniPerInstanceLimitExceeded" | "InvalidOperation.EniCountExceeded" => {
            CloudError::EniLimitExceeded {
                instance_id: ctx.instance_id.clone().unwrap_or_else(|| ctx.resource()),
                code,
                request_id,
            }
        }
        "InvalidOperation.Ipv4CountExceeded" | "InvalidOperation.Ipv6CountExceeded" => {
            CloudError::IpCountExceeded {
                eni_id: ctx.eni_id.clone().unwrap_or_else(|| ctx.resource()),
                code,
                request_id,
            }
        }
        "InvalidOperation.InvalidEniState"
        | "IncorrectInstanceStatus"
        | "IncorrectInstance.Status" => CloudError::InvalidEniState {
            eni_id: ctx.eni_id.clone().unwrap_or_else(|| ctx.resource()),
            action,
            code,
            message,
            request_id,
        },
        "Operation.Conflict"
        | "OperationConflict"
        | "LastTokenProcessing"
        | "IdempotenceProcessing" => CloudError::Conflict {
            action,
            resource: ctx.resource(),
            code,
            request_id,
        },
        _ if is_auth_code(c) => CloudError::Auth {
            action,
            code,
            message,
            request_id,
        },
        _ if is_resource_not_found(c) => CloudError::NotFound {
            resource: not_found_resource(c, ctx),
            code,
            request_id,
        },
        _ => CloudError::Api {
            action,
            code,
            message,
            status,
            request_id,
        },
    }
}

/// `.NotFound` codes about a resource; `InvalidRegionId.NotFound` or `InvalidAction.NotFound` are
/// configuration errors and must never read as "already deleted".
fn is_resource_not_found(code: &str) -> bool {
    const RESOURCES: [&str; 8] = [
        "InvalidEniId",
        "InvalidNetworkInterfaceId",
        "InvalidEcsId",
        "InvalidInstanceId",
        "InvalidVSwitchId",
        "InvalidRouteEntry",
        "InvalidRouteTableId",
        "InvalidSecurityGroupId",
    ];
    (code.ends_with(".NotFound") || code.ends_with(".NotExist"))
        && RESOURCES.iter().any(|r| code.split('.').next() == Some(*r))
}

fn not_found_resource(code: &str, ctx: &CallContext) -> String {
    let named = |v: &Option<String>, kind: &str| {
        v.clone()
            .map(|id| format!("{kind} {id}"))
            .unwrap_or_else(|| kind.to_string())
    };
    if code.starts_with("InvalidEniId") || code.starts_with("InvalidNetworkInterfaceId") {
        named(&ctx.eni_id, "ENI")
    } else if code.starts_with("InvalidEcsId") || code.starts_with("InvalidInstanceId") {
        named(&ctx.instance_id, "instance")
    } else if code.starts_with("InvalidVSwitchId") {
        named(&ctx.vswitch_id, "vSwitch")
    } else {
        ctx.resource()
    }
}

/// Parse an error body leniently (missing fields stay empty; non-JSON bodies become the message).
pub fn parse_error_body(status: u16, body: &[u8]) -> ApiErrorBody {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let field = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let code = field("Code");
            ApiErrorBody {
                code: if code.is_empty() {
                    format!("HTTP{status}")
                } else {
                    code
                },
                message: field("Message"),
                request_id: field("RequestId"),
            }
        }
        Err(_) => ApiErrorBody {
            code: format!("HTTP{status}"),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            request_id: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str) -> ApiErrorBody {
        ApiErrorBody {
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
        }
    }

    fn ctx() -> CallContext {
        CallContext {
            eni_id: Some("eni-1".into()),
            instance_id: Some("i-1".into()),
            vswitch_id: Some("vsw-1".into()),
            other: None,
        }
    }

    #[test]
    fn codes_map_to_the_pool_relevant_kinds() {
        let c = ctx();
        let k = |code: &str, status| classify("A", status, body(code), &c);
        assert!(matches!(
            k("Throttling.User", 400),
            CloudError::Throttled { .. }
        ));
        assert!(matches!(k("Throttling", 503), CloudError::Throttled { .. }));
        assert!(
            matches!(k("InvalidVSwitchId.IpNotEnough", 403), CloudError::IpNotEnough { ref vswitch_id, .. } if vswitch_id == "vsw-1")
        );
        assert!(matches!(
            k("QuotaExceeded.PrivateIpAddress", 403),
            CloudError::IpNotEnough { .. }
        ));
        assert!(
            matches!(k("EniPerInstanceLimitExceeded", 403), CloudError::EniLimitExceeded { ref instance_id, .. } if instance_id == "i-1")
        );
        assert!(matches!(
            k("InvalidOperation.Ipv4CountExceeded", 403),
            CloudError::IpCountExceeded { .. }
        ));
        assert!(matches!(
            k("InvalidOperation.Ipv6CountExceeded", 403),
            CloudError::IpCountExceeded { .. }
        ));
        assert!(
            matches!(k("InvalidEniId.NotFound", 404), CloudError::NotFound { ref resource, .. } if resource == "ENI eni-1")
        );
        assert!(
            matches!(k("InvalidEcsId.NotFound", 404), CloudError::NotFound { ref resource, .. } if resource == "instance i-1")
        );
        assert!(matches!(
            k("InvalidOperation.InvalidEniState", 403),
            CloudError::InvalidEniState { .. }
        ));
        assert!(matches!(
            k("Operation.Conflict", 409),
            CloudError::Conflict { .. }
        ));
        assert!(matches!(k("Forbidden.RAM", 403), CloudError::Auth { .. }));
        assert!(matches!(
            k("SignatureDoesNotMatch", 400),
            CloudError::Auth { .. }
        ));
        assert!(matches!(
            k("InvalidAccessKeyId.NotFound", 404),
            CloudError::Auth { .. }
        ));
        assert!(matches!(
            k("InternalError", 500),
            CloudError::Api { status: 500, .. }
        ));
        assert!(k("InternalError", 500).is_retryable());
        assert!(matches!(
            k("InvalidRegionId.NotFound", 404),
            CloudError::Api { .. }
        ));
        assert!(matches!(
            k("InvalidAction.NotFound", 404),
            CloudError::Api { .. }
        ));
        assert!(k("Throttling.User", 400).is_retryable());
        assert!(!k("Forbidden.RAM", 403).is_retryable());
        assert!(!k("IdempotentFailed", 400).is_retryable());
    }

    #[test]
    fn error_bodies_parse_leniently() {
        let b = parse_error_body(
            400,
            br#"{"RequestId":"R","HostId":"h","Code":"X.Y","Message":"boom"}"#,
        );
        assert_eq!(
            b,
            ApiErrorBody {
                code: "X.Y".into(),
                message: "boom".into(),
                request_id: "R".into()
            }
        );
        assert_eq!(
            parse_error_body(502, b"<html>bad gateway</html>").code,
            "HTTP502"
        );
        assert_eq!(parse_error_body(503, b"{}").code, "HTTP503");
    }
}
