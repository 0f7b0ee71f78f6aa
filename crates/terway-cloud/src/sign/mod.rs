//! Alibaba Cloud request signing, shared by the client (which signs) and the emulator (which verifies
//! with the very same canonicalisation): ACS3-HMAC-SHA256 (the "V3" signature the current SDKs use)
//! and the legacy RPC HMAC-SHA1 query signature (`Signature`, `SignatureNonce`, …).
//!
//! Everything here is pure: no clock, no randomness, no I/O — callers pass the date and nonce in, so
//! the published known-answer vectors can be reproduced byte for byte.

mod time;

pub use time::{format_timestamp, parse_timestamp};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Algorithm name in the `Authorization` header and the first line of the string to sign.
pub const ACS3_ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// Header carrying the hex SHA-256 of the request body.
pub const CONTENT_SHA256_HEADER: &str = "x-acs-content-sha256";
/// SHA-256 of the empty body, in hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Ordered name/value pairs (query parameters, form fields, headers).
pub type Pairs = Vec<(String, String)>;

/// Why a signature could not be computed or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The `Authorization` header is not `ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(String),
    /// A header named in `SignedHeaders` is absent from the request.
    #[error("signed header {0} is missing from the request")]
    MissingSignedHeader(String),
    /// A header the protocol requires (host, x-acs-action, …) is not signed.
    #[error("required header {0} is not in SignedHeaders")]
    UnsignedRequiredHeader(String),
    /// `x-acs-content-sha256` does not match the body.
    #[error("x-acs-content-sha256 does not match the request body")]
    ContentHashMismatch,
    /// The recomputed signature differs; the string to sign is returned to help debugging clients.
    #[error("signature does not match; the server computed the string to sign {string_to_sign:?}")]
    SignatureMismatch {
        /// What the verifier signed.
        string_to_sign: String,
    },
    /// A required RPC parameter (`Signature`, `AccessKeyId`, …) is absent.
    #[error("missing parameter {0}")]
    MissingParameter(String),
}

/// RFC 3986 percent-encoding as Alibaba specifies it: `A-Z a-z 0-9 - _ . ~` stay, every other byte of
/// the UTF-8 form becomes `%XY` with upper-case hex (so space is `%20`, `*` is `%2A`, `/` is `%2F`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n & 0x0f)])
}

/// Decode a raw `application/x-www-form-urlencoded` or query string into pairs (`+` is a space,
/// invalid escapes are kept literally). A key without `=` gets the empty value.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8_lossy()
        .into_owned()
}

/// Encode pairs as a query string/form body with [`percent_encode`], in the order given.
pub fn encode_query(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Canonical URI: every `/`-separated segment percent-encoded; `/` for the RPC style's empty path.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() || path == "/" {
        return "/".to_string();
    }
    path.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Canonical query string: `enc(key)=enc(value)` sorted by encoded key (then value), joined by `&`.
/// Parameters without a value contribute `key=`.
pub fn canonical_query_string(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether ACS3 signs a header of this (lower-case) name: `host`, `content-type` and every `x-acs-*`.
pub fn is_signable_header(lower_name: &str) -> bool {
    lower_name == "host" || lower_name == "content-type" || lower_name.starts_with("x-acs-")
}

/// Names (lower-case, sorted, unique) of the headers a signer includes from `headers`.
pub fn signable_header_names(headers: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<String> = headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| is_signable_header(k))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A canonical request and the `SignedHeaders` list that went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The full canonical request text (what gets hashed).
    pub text: String,
    /// `;`-joined lower-case header names.
    pub signed_headers: String,
}

/// Build the canonical request signing exactly the headers named in `names` (lower-case). Headers
/// occurring several times are joined with `,` after sorting their trimmed values.
pub fn canonical_request_with(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    names: &[String],
    payload_hash: &str,
) -> Result<CanonicalRequest, SignError> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    if let Some(missing) = names
        .iter()
        .find(|n| !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n)))
    {
        return Err(SignError::MissingSignedHeader(missing.clone()));
    }
    Ok(assemble(method, path, query, headers, &names, payload_hash))
}

/// Build the canonical request the way a signer does: signing `host`, `content-type` and `x-acs-*`.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    payload_hash: &str,
) -> CanonicalRequest {
    assemble(
        method,
        path,
        query,
        headers,
        &signable_header_names(headers),
        payload_hash,
    )
}

/// The canonical request for sorted, unique, lower-case `names` (a name without a header contributes
/// an empty value; callers check presence first when that matters).
fn assemble(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    names: &[String],
    payload_hash: &str,
) -> CanonicalRequest {
    let mut canonical_headers = String::new();
    for name in names {
        let mut values: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect();
        values.sort_unstable();
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let signed_headers = names.join(";");
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        canonical_uri(path),
        canonical_query_string(query),
        canonical_headers,
        signed_headers,
        payload_hash
    );
    CanonicalRequest {
        text,
        signed_headers,
    }
}

/// `ACS3-HMAC-SHA256\n` + hex(sha256(canonical request)).
pub fn string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ACS3_ALGORITHM}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Lower-case hex HMAC-SHA256 of the string to sign, keyed with the AccessKey secret.
pub fn acs3_signature(secret: &str, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `Authorization` header value.
pub fn acs3_authorization(access_key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!("{ACS3_ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}")
}

/// A parsed ACS3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acs3Authorization {
    /// AccessKey id (`Credential=`).
    pub access_key_id: String,
    /// Lower-case signed header names.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

impl Acs3Authorization {
    /// Parse `ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=hex`.
    pub fn parse(header: &str) -> Result<Self, SignError> {
        let malformed = || SignError::MalformedAuthorization(header.to_string());
        let rest = header
            .trim()
            .strip_prefix(ACS3_ALGORITHM)
            .filter(|r| r.starts_with(' '))
            .ok_or_else(malformed)?;
        let (mut ak, mut signed, mut sig) = (None, None, None);
        for part in rest.trim().split(',') {
            let (k, v) = part.trim().split_once('=').ok_or_else(malformed)?;
            match k {
                "Credential" => ak = Some(v.to_string()),
                "SignedHeaders" => signed = Some(v.to_string()),
                "Signature" => sig = Some(v.to_string()),
                _ => return Err(malformed()),
            }
        }
        let (access_key_id, signed, signature) = match (ak, signed, sig) {
            (Some(a), Some(s), Some(g)) if !a.is_empty() && !g.is_empty() => (a, s, g),
            _ => return Err(malformed()),
        };
        let signed_headers = signed
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase())
            .collect();
        Ok(Self {
            access_key_id,
            signed_headers,
            signature,
        })
    }
}

/// Everything a signer needs for one ACS3 request; `date` is `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone)]
pub struct Acs3Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Host header value (`ecs-vpc.cn-hangzhou.aliyuncs.com`, `127.0.0.1:8080`).
    pub host: &'a str,
    /// Path, `/` for RPC style.
    pub path: &'a str,
    /// Query parameters.
    pub query: &'a [(String, String)],
    /// Request body.
    pub body: &'a [u8],
    /// `Content-Type` of the body, if there is one.
    pub content_type: Option<&'a str>,
    /// `x-acs-action`.
    pub action: &'a str,
    /// `x-acs-version`.
    pub version: &'a str,
    /// `x-acs-date`.
    pub date: &'a str,
    /// `x-acs-signature-nonce`.
    pub nonce: &'a str,
    /// STS security token (`x-acs-security-token`), when signing with temporary credentials.
    pub security_token: Option<&'a str>,
}

/// Sign `req`; returns every header to send (host, x-acs-*, content-type if any, Authorization).
pub fn sign_acs3(
    req: &Acs3Request<'_>,
    access_key_id: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), req.host.into()),
        ("x-acs-action".into(), req.action.into()),
        ("x-acs-version".into(), req.version.into()),
        ("x-acs-date".into(), req.date.into()),
        ("x-acs-signature-nonce".into(), req.nonce.into()),
        (CONTENT_SHA256_HEADER.into(), sha256_hex(req.body)),
    ];
    if let Some(ct) = req.content_type {
        headers.push(("content-type".into(), ct.into()));
    }
    if let Some(token) = req.security_token {
        headers.push(("x-acs-security-token".into(), token.into()));
    }
    let payload_hash = sha256_hex(req.body);
    let canonical = canonical_request(req.method, req.path, req.query, &headers, &payload_hash);
    let signature = acs3_signature(secret, &string_to_sign(&canonical.text));
    headers.push((
        "authorization".into(),
        acs3_authorization(access_key_id, &canonical.signed_headers, &signature),
    ));
    headers
}

/// Headers a verifier insists are signed: without them a signature could be replayed for another
/// action, time or host.
pub const ACS3_REQUIRED_SIGNED: [&str; 5] = [
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
];

/// Verify an ACS3-signed request against `secret` (look the secret up by the parsed
/// [`Acs3Authorization::access_key_id`] first). Checks that the required headers are signed, that the
/// body matches `x-acs-content-sha256`, and the signature itself (constant time).
pub fn verify_acs3(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: &[u8],
    auth: &Acs3Authorization,
    secret: &str,
) -> Result<(), SignError> {
    for required in ACS3_REQUIRED_SIGNED {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SignError::UnsignedRequiredHeader(required.to_string()));
        }
    }
    let declared = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(CONTENT_SHA256_HEADER))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .ok_or_else(|| SignError::MissingSignedHeader(CONTENT_SHA256_HEADER.into()))?;
    if declared != sha256_hex(body) {
        return Err(SignError::ContentHashMismatch);
    }
    let canonical = canonical_request_with(
        method,
        path,
        query,
        headers,
        &auth.signed_headers,
        &declared,
    )?;
    let sts = string_to_sign(&canonical.text);
    let expected = acs3_signature(secret, &sts);
    if constant_time_eq(
        expected.as_bytes(),
        auth.signature.to_ascii_lowercase().as_bytes(),
    ) {
        Ok(())
    } else {
        Err(SignError::SignatureMismatch {
            string_to_sign: sts,
        })
    }
}

/// Legacy RPC canonicalised query: all parameters except `Signature`, sorted by name, each
/// `percentEncode(k)=percentEncode(v)`, joined by `&`.
pub fn rpc_canonicalized_query(params: &[(String, String)]) -> String {
    let without_sig: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .cloned()
        .collect();
    canonical_query_string(&without_sig)
}

/// Legacy RPC string to sign: `METHOD&%2F&percentEncode(canonicalised query)`.
pub fn rpc_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&rpc_canonicalized_query(params))
    )
}

/// Legacy RPC signature: base64(HMAC-SHA1(secret + "&", string to sign)).
pub fn rpc_signature(secret: &str, method: &str, params: &[(String, String)]) -> String {
    let key = format!("{secret}&");
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(rpc_string_to_sign(method, params).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Verify a legacy RPC request: `params` are all parameters (query and form body) including
/// `Signature`.
pub fn verify_rpc(
    method: &str,
    params: &[(String, String)],
    secret: &str,
) -> Result<(), SignError> {
    let given = params
        .iter()
        .find(|(k, _)| k == "Signature")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| SignError::MissingParameter("Signature".into()))?;
    let expected = rpc_signature(secret, method, params);
    if constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(SignError::SignatureMismatch {
            string_to_sign: rpc_string_to_sign(method, params),
        })
    }
}

/// Compare without an early exit so the time taken does not reveal how much of a signature matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
