//! Request authentication as the Alibaba gateway does it: ACS3-HMAC-SHA256 (`Authorization` header)
//! or the legacy HMAC-SHA1 RPC query signature, against configured AccessKey pairs and the STS
//! credentials the metadata service handed out; plus timestamp freshness and nonce replay checks.
//! The canonicalisation itself is `terway_cloud::sign`, the very code the client signs with.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use serde::Serialize;
use terway_cloud::sign::{self, Acs3Authorization, SignError};

use crate::config::AccessKeyPair;
use crate::error::ApiError;

/// Temporary credentials of a RAM role (what `ram/security-credentials/<role>` returns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StsCredential {
    /// `STS.…` AccessKey id.
    pub access_key_id: String,
    /// Secret.
    pub access_key_secret: String,
    /// Must accompany every request (`x-acs-security-token` / `SecurityToken`).
    pub security_token: String,
    /// Expiry.
    #[serde(skip)]
    pub expires: SystemTime,
    /// Role the credentials belong to.
    pub role: String,
}

/// The parts of an HTTP request that signatures cover.
pub struct Incoming<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// Decoded query string pairs.
    pub query: &'a [(String, String)],
    /// Decoded query + form body pairs (what RPC signatures cover).
    pub params: &'a [(String, String)],
    /// Headers.
    pub headers: &'a [(String, String)],
    /// Raw body.
    pub body: &'a [u8],
}

impl Incoming<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Accepted keys and recently seen nonces.
pub struct Authenticator {
    static_keys: HashMap<String, String>,
    sts: HashMap<String, StsCredential>,
    /// Current STS credential per (instance, role).
    sts_current: HashMap<(String, String), String>,
    nonces: HashSet<String>,
    nonce_order: VecDeque<(Instant, String)>,
    max_skew: Duration,
}

fn sig_mismatch(detail: &str) -> ApiError {
    ApiError::new(
        400,
        "SignatureDoesNotMatch",
        format!("Specified signature is not matched with our calculation. {detail}"),
    )
}

fn map_sign_error(e: SignError) -> ApiError {
    match e {
        SignError::MalformedAuthorization(h) => ApiError::new(
            400,
            "IncompleteSignature",
            format!("The request signature does not conform to Aliyun standards: {h}"),
        ),
        SignError::SignatureMismatch { string_to_sign } => {
            sig_mismatch(&format!("server string to sign is:{string_to_sign}"))
        }
        SignError::MissingParameter(p) => ApiError::missing(&p),
        other => sig_mismatch(&other.to_string()),
    }
}

impl Authenticator {
    /// Accept `keys`; signed requests may be at most `max_skew` away from now.
    pub fn new(keys: &[AccessKeyPair], max_skew: Duration) -> Self {
        Self {
            static_keys: keys
                .iter()
                .map(|k| (k.id.clone(), k.secret.clone()))
                .collect(),
            sts: HashMap::new(),
            sts_current: HashMap::new(),
            nonces: HashSet::new(),
            nonce_order: VecDeque::new(),
            max_skew,
        }
    }

    /// Credentials for `role` of `instance_id`, minting new ones when the current ones are past
    /// half their lifetime (old ones stay valid until they expire, as with real STS).
    pub fn sts_credential(
        &mut self,
        instance_id: &str,
        role: &str,
        ttl: Duration,
    ) -> StsCredential {
        let key = (instance_id.to_string(), role.to_string());
        let now = SystemTime::now();
        if let Some(cur) = self.sts_current.get(&key).and_then(|ak| self.sts.get(ak)) {
            if cur.expires.duration_since(now).unwrap_or_default() > ttl / 2 {
                return cur.clone();
            }
        }
        self.sts.retain(|_, c| c.expires > now);
        let mut rng = rand::rng();
        let rand_str = |n: usize, rng: &mut rand::rngs::ThreadRng| -> String {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            (0..n)
                .map(|_| char::from(A[rng.random_range(0..A.len())]))
                .collect()
        };
        let cred = StsCredential {
            access_key_id: format!("STS.{}", rand_str(24, &mut rng)),
            access_key_secret: rand_str(40, &mut rng),
            security_token: format!("CAIS{}", rand_str(120, &mut rng)),
            expires: now + ttl,
            role: role.to_string(),
        };
        self.sts.insert(cred.access_key_id.clone(), cred.clone());
        self.sts_current.insert(key, cred.access_key_id.clone());
        cred
    }

    /// Secret for `ak`, checking the STS token when the key is temporary.
    fn secret_for(&self, ak: &str, token: Option<&str>) -> Result<String, ApiError> {
        if let Some(secret) = self.static_keys.get(ak) {
            return Ok(secret.clone());
        }
        let Some(cred) = self.sts.get(ak) else {
            return Err(ApiError::new(
                404,
                "InvalidAccessKeyId.NotFound",
                format!("Specified access key {ak} is not found."),
            ));
        };
        if cred.expires <= SystemTime::now() {
            return Err(ApiError::new(
                400,
                "InvalidSecurityToken.Expired",
                "Specified SecurityToken is expired.",
            ));
        }
        match token {
            None => Err(ApiError::new(
                400,
                "InvalidSecurityToken.Missing",
                "A temporary AccessKey needs its SecurityToken.",
            )),
            Some(t) if t == cred.security_token => Ok(cred.access_key_secret.clone()),
            Some(_) => Err(ApiError::new(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            )),
        }
    }

    fn check_time(&self, raw: &str) -> Result<(), ApiError> {
        let t = sign::parse_timestamp(raw).ok_or_else(|| {
            ApiError::new(
                400,
                "InvalidTimeStamp.Format",
                format!("Specified time stamp {raw:?} is not in the format YYYY-MM-DDThh:mm:ssZ."),
            )
        })?;
        let now = SystemTime::now();
        let skew = now
            .duration_since(t)
            .or_else(|_| t.duration_since(now))
            .unwrap_or_default();
        if skew > self.max_skew {
            return Err(ApiError::new(
                400,
                "InvalidTimeStamp.Expired",
                format!("Specified time stamp or date value {raw} is expired."),
            ));
        }
        Ok(())
    }

    fn use_nonce(&mut self, nonce: &str) -> Result<(), ApiError> {
        let horizon = self.max_skew * 2;
        while let Some((at, _)) = self.nonce_order.front() {
            if at.elapsed() <= horizon {
                break;
            }
            if let Some((_, old)) = self.nonce_order.pop_front() {
                self.nonces.remove(&old);
            }
        }
        if !self.nonces.insert(nonce.to_string()) {
            return Err(ApiError::new(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        self.nonce_order
            .push_back((Instant::now(), nonce.to_string()));
        Ok(())
    }

    /// Authenticate a request; returns the AccessKey id it was signed with.
    pub fn authenticate(&mut self, req: &Incoming<'_>) -> Result<String, ApiError> {
        if let Some(header) = req.header("authorization") {
            return self.authenticate_acs3(req, header);
        }
        if req.param("Signature").is_some() {
            return self.authenticate_rpc(req);
        }
        Err(ApiError::missing("Signature"))
    }

    fn authenticate_acs3(&mut self, req: &Incoming<'_>, header: &str) -> Result<String, ApiError> {
        let auth = Acs3Authorization::parse(header).map_err(map_sign_error)?;
        let secret = self.secret_for(&auth.access_key_id, req.header("x-acs-security-token"))?;
        let date = req
            .header("x-acs-date")
            .ok_or_else(|| ApiError::missing("x-acs-date"))?;
        self.check_time(date)?;
        let nonce = req
            .header("x-acs-signature-nonce")
            .ok_or_else(|| ApiError::missing("x-acs-signature-nonce"))?;
        sign::verify_acs3(
            req.method,
            req.path,
            req.query,
            req.headers,
            req.body,
            &auth,
            &secret,
        )
        .map_err(map_sign_error)?;
        self.use_nonce(nonce)?;
        Ok(auth.access_key_id)
    }

    fn authenticate_rpc(&mut self, req: &Incoming<'_>) -> Result<String, ApiError> {
        let ak = req
            .param("AccessKeyId")
            .ok_or_else(|| ApiError::missing("AccessKeyId"))?;
        let method = req
            .param("SignatureMethod")
            .ok_or_else(|| ApiError::missing("SignatureMethod"))?;
        if method != "HMAC-SHA1" {
            return Err(ApiError::invalid(
                "SignatureMethod",
                format!("{method:?} is not supported; use HMAC-SHA1"),
            ));
        }
        if let Some(v) = req.param("SignatureVersion") {
            if v != "1.0" {
                return Err(ApiError::invalid(
                    "SignatureVersion",
                    format!("{v:?} is not supported; use 1.0"),
                ));
            }
        }
        let secret = self.secret_for(ak, req.param("SecurityToken"))?;
        let ts = req
            .param("Timestamp")
            .ok_or_else(|| ApiError::missing("Timestamp"))?;
        self.check_time(ts)?;
        let nonce = req
            .param("SignatureNonce")
            .ok_or_else(|| ApiError::missing("SignatureNonce"))?
            .to_string();
        sign::verify_rpc(req.method, req.params, &secret).map_err(map_sign_error)?;
        self.use_nonce(&nonce)?;
        Ok(ak.to_string())
    }
}
