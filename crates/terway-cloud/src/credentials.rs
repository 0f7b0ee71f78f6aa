//! Where the AccessKey comes from. The chain, first match wins:
//! 1. static `access_key_id`/`access_key_secret` from the config;
//! 2. env `ALIBABA_CLOUD_ACCESS_KEY_ID`/`ALIBABA_CLOUD_ACCESS_KEY_SECRET`
//!    (+ `ALIBABA_CLOUD_SECURITY_TOKEN`);
//! 3. `access-key-id`/`access-key-secret` files in `secret_dir` (Terway's `/var/alibaba-addon-secret`);
//! 4. the credentials file (Alibaba CLI/SDK ini: `[profile]`, `type = access_key` with
//!    `access_key_id`/`access_key_secret`, or `type = ecs_ram_role` with `role_name`), path from the
//!    config, `$ALIBABA_CLOUD_CREDENTIALS_FILE`, or `~/.alibabacloud/credentials`;
//! 5. the instance RAM role via metadata `ram/security-credentials/<role>` (STS: sent as
//!    `x-acs-security-token`, refreshed before it expires).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::api::CloudResult;
use crate::config::CredentialsConfig;
use crate::error::CloudError;
use crate::metadata::MetadataClient;
use crate::sign;

/// STS credentials are refreshed when they expire within this margin.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// One AccessKey, possibly temporary.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// AccessKey id.
    pub access_key_id: String,
    /// AccessKey secret.
    pub access_key_secret: String,
    /// STS token for temporary keys.
    pub security_token: Option<String>,
    /// When a temporary key stops working.
    pub expiration: Option<SystemTime>,
}

impl std::fmt::Debug for Credential {
    // Never print the secret or token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "***"),
            )
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Which link of the chain supplied the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// From the config.
    Static,
    /// From the environment.
    Env,
    /// From `access-key-id`/`access-key-secret` files in this directory.
    SecretDir(PathBuf),
    /// From the credentials file at this path.
    File(PathBuf),
    /// Instance RAM role (name discovered from metadata when `None`).
    RamRole(Option<String>),
}

/// Resolves and caches the credential the client signs with.
#[derive(Debug)]
pub struct CredentialProvider {
    source: CredentialSource,
    fixed: Option<Credential>,
    metadata: Option<Arc<MetadataClient>>,
    cached: tokio::sync::Mutex<Option<(Credential, SystemTime)>>,
}

fn no_credentials(why: &str) -> CloudError {
    CloudError::Auth {
        action: "load credentials".into(),
        code: "MissingCredentials".into(),
        message: why.into(),
        request_id: String::new(),
    }
}

/// The parts of a credentials file profile this client understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileProfile {
    /// `type = access_key`.
    AccessKey(Credential),
    /// `type = ecs_ram_role`.
    RamRole(String),
}

/// Parse the ini credentials file and return `profile`. Unknown types are errors that name the file.
pub fn parse_credentials_file(
    text: &str,
    profile: &str,
    path: &str,
) -> CloudResult<Option<FileProfile>> {
    let mut section = String::new();
    let mut kv: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section == profile {
            if let Some((k, v)) = line.split_once('=') {
                kv.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
            }
        }
    }
    if kv.is_empty() {
        return Ok(None);
    }
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    match get("type").as_deref().unwrap_or("access_key") {
        "access_key" => match (get("access_key_id"), get("access_key_secret")) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Some(FileProfile::AccessKey(Credential {
                    access_key_id: id,
                    access_key_secret: secret,
                    security_token: None,
                    expiration: None,
                })))
            }
            _ => Err(no_credentials(&format!(
                "profile [{profile}] of {path} lacks access_key_id/access_key_secret"
            ))),
        },
        "ecs_ram_role" => Ok(Some(FileProfile::RamRole(
            get("role_name").unwrap_or_default(),
        ))),
        other => Err(no_credentials(&format!(
            "profile [{profile}] of {path} has type {other}; use access_key or ecs_ram_role"
        ))),
    }
}

impl CredentialProvider {
    /// Walk the chain with the real environment and home directory.
    pub fn resolve(
        cfg: &CredentialsConfig,
        metadata: Option<Arc<MetadataClient>>,
    ) -> CloudResult<Self> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::resolve_with(cfg, |k| std::env::var(k).ok(), home, metadata)
    }

    /// Walk the chain with an injected environment (tests).
    pub fn resolve_with(
        cfg: &CredentialsConfig,
        env: impl Fn(&str) -> Option<String>,
        home: Option<PathBuf>,
        metadata: Option<Arc<MetadataClient>>,
    ) -> CloudResult<Self> {
        let make = |source, fixed| Self {
            source,
            fixed,
            metadata: metadata.clone(),
            cached: tokio::sync::Mutex::new(None),
        };
        let key = |id: String, secret: String, token: Option<String>| Credential {
            access_key_id: id,
            access_key_secret: secret,
            security_token: token.filter(|t| !t.is_empty()),
            expiration: None,
        };
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.access_key_secret) {
            if !id.is_empty() && !secret.is_empty() {
                return Ok(make(
                    CredentialSource::Static,
                    Some(key(id.clone(), secret.clone(), None)),
                ));
            }
        }
        if !cfg.ignore_env {
            let id = env("ALIBABA_CLOUD_ACCESS_KEY_ID").filter(|s| !s.is_empty());
            let secret = env("ALIBABA_CLOUD_ACCESS_KEY_SECRET").filter(|s| !s.is_empty());
            if let (Some(id), Some(secret)) = (id, secret) {
                let token = env("ALIBABA_CLOUD_SECURITY_TOKEN");
                return Ok(make(CredentialSource::Env, Some(key(id, secret, token))));
            }
        }
        if let Some(dir) = &cfg.secret_dir {
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            };
            if let (Some(id), Some(secret)) = (read("access-key-id"), read("access-key-secret")) {
                return Ok(make(
                    CredentialSource::SecretDir(dir.clone()),
                    Some(key(id, secret, None)),
                ));
            }
        }
        let path = cfg
            .credentials_file
            .clone()
            .or_else(|| {
                if cfg.ignore_env {
                    None
                } else {
                    env("ALIBABA_CLOUD_CREDENTIALS_FILE").map(PathBuf::from)
                }
            })
            .or_else(|| home.map(|h| h.join(".alibabacloud").join("credentials")));
        if let Some(path) = path {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let profile = cfg
                    .profile
                    .clone()
                    .or_else(|| {
                        if cfg.ignore_env {
                            None
                        } else {
                            env("ALIBABA_CLOUD_PROFILE")
                        }
                    })
                    .unwrap_or_else(|| "default".into());
                match parse_credentials_file(&text, &profile, &path.display().to_string())? {
                    Some(FileProfile::AccessKey(c)) => {
                        return Ok(make(CredentialSource::File(path), Some(c)))
                    }
                    Some(FileProfile::RamRole(role)) => {
                        let role = Some(role)
                            .filter(|r| !r.is_empty())
                            .or_else(|| cfg.ram_role.clone());
                        return Ok(make(CredentialSource::RamRole(role), None));
                    }
                    None => {}
                }
            }
        }
        if metadata.is_some() {
            return Ok(make(CredentialSource::RamRole(cfg.ram_role.clone()), None));
        }
        Err(no_credentials(
            "no AccessKey in the config, ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET, the credentials file, and no metadata service for a RAM role",
        ))
    }

    /// The link of the chain in use.
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// The credential to sign with now; RAM-role credentials are fetched and refreshed as needed.
    pub async fn get(&self) -> CloudResult<Credential> {
        if let Some(c) = &self.fixed {
            return Ok(c.clone());
        }
        let mut cached = self.cached.lock().await;
        if let Some((c, fetched_at)) = cached.as_ref() {
            if !needs_refresh(SystemTime::now(), *fetched_at, c.expiration) {
                return Ok(c.clone());
            }
        }
        let fetched = self.fetch_ram_role().await?;
        *cached = Some((fetched.clone(), SystemTime::now()));
        Ok(fetched)
    }

    /// Drop a cached temporary credential the cloud refused (e.g. `InvalidSecurityToken.Expired`);
    /// returns whether there was one, i.e. whether fetching again can help.
    pub async fn invalidate(&self) -> bool {
        if self.fixed.is_some() {
            return false;
        }
        self.cached.lock().await.take().is_some()
    }

    async fn fetch_ram_role(&self) -> CloudResult<Credential> {
        let md = self
            .metadata
            .as_ref()
            .ok_or_else(|| no_credentials("RAM role credentials need the metadata service"))?;
        let role = match &self.source {
            CredentialSource::RamRole(Some(r)) => r.clone(),
            _ => {
                let listed = md
                    .get("ram/security-credentials/")
                    .await?
                    .unwrap_or_default();
                crate::metadata::parse_list(&listed)
                    .into_iter()
                    .next()
                    .ok_or_else(|| no_credentials("the instance has no RAM role attached; attach one or configure an AccessKey"))?
            }
        };
        let raw = md
            .get_required(&format!("ram/security-credentials/{role}"))
            .await?;
        parse_sts(&raw, &role)
    }
}

/// Whether a temporary credential fetched at `fetched_at` should be replaced now: when less than
/// [`REFRESH_MARGIN`] or a quarter of its lifetime (whichever is shorter) is left, so short-lived
/// tokens are not refetched on every call and long-lived ones are renewed well before they expire.
pub fn needs_refresh(
    now: SystemTime,
    fetched_at: SystemTime,
    expiration: Option<SystemTime>,
) -> bool {
    let Some(exp) = expiration else { return false };
    let lifetime = exp.duration_since(fetched_at).unwrap_or_default();
    let margin = REFRESH_MARGIN.min(lifetime / 4);
    match exp.duration_since(now) {
        Ok(left) => left <= margin,
        Err(_) => true,
    }
}

/// Parse the metadata STS document (`AccessKeyId`, `AccessKeySecret`, `SecurityToken`, `Expiration`).
pub fn parse_sts(raw: &str, role: &str) -> CloudResult<Credential> {
    let bad = |why: &str| no_credentials(&format!("RAM role {role}: {why}"));
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|_| bad("credentials document is not JSON"))?;
    if let Some(code) = v.get("Code").and_then(|c| c.as_str()) {
        if code != "Success" {
            return Err(bad(&format!("metadata returned Code {code}")));
        }
    }
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .filter(|s| !s.is_empty())
    };
    Ok(Credential {
        access_key_id: field("AccessKeyId").ok_or_else(|| bad("AccessKeyId missing"))?,
        access_key_secret: field("AccessKeySecret")
            .ok_or_else(|| bad("AccessKeySecret missing"))?,
        security_token: field("SecurityToken"),
        expiration: field("Expiration").and_then(|e| sign::parse_timestamp(&e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn write_file(dir: &tempfile::TempDir, body: &str) -> PathBuf {
        let p = dir.path().join(".alibabacloud");
        std::fs::create_dir_all(&p).unwrap();
        let f = p.join("credentials");
        std::fs::write(&f, body).unwrap();
        f
    }

    const FILE: &str = "[default]\ntype = access_key\naccess_key_id = FILEAK\naccess_key_secret = FILESK\n\n[other]\ntype = ecs_ram_role\nrole_name = node-role\n";
    const ENV: [(&str, &str); 2] = [
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ENVAK"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ENVSK"),
    ];

    async fn key_of(p: &CredentialProvider) -> String {
        p.get().await.unwrap().access_key_id
    }

    #[tokio::test]
    async fn chain_order_static_env_file_role() {
        let home = tempfile::tempdir().unwrap();
        write_file(&home, FILE);
        let h = || Some(home.path().to_path_buf());
        let static_cfg = CredentialsConfig {
            access_key_id: Some("CFGAK".into()),
            access_key_secret: Some("CFGSK".into()),
            ..Default::default()
        };
        let p = CredentialProvider::resolve_with(&static_cfg, env_of(&ENV), h(), None).unwrap();
        assert_eq!(
            (p.source(), key_of(&p).await.as_str()),
            (&CredentialSource::Static, "CFGAK")
        );

        let none = CredentialsConfig::default();
        let p = CredentialProvider::resolve_with(&none, env_of(&ENV), h(), None).unwrap();
        assert_eq!(
            (p.source(), key_of(&p).await.as_str()),
            (&CredentialSource::Env, "ENVAK")
        );

        let secrets = tempfile::tempdir().unwrap();
        std::fs::write(secrets.path().join("access-key-id"), "DIRAK\n").unwrap();
        std::fs::write(secrets.path().join("access-key-secret"), "DIRSK\n").unwrap();
        let with_dir = CredentialsConfig {
            secret_dir: Some(secrets.path().into()),
            ..Default::default()
        };
        let p = CredentialProvider::resolve_with(&with_dir, env_of(&ENV), h(), None).unwrap();
        assert_eq!(
            p.source(),
            &CredentialSource::Env,
            "the environment comes before the secret dir"
        );
        let p = CredentialProvider::resolve_with(&with_dir, env_of(&[]), h(), None).unwrap();
        assert_eq!(
            p.source(),
            &CredentialSource::SecretDir(secrets.path().into())
        );
        assert_eq!(key_of(&p).await, "DIRAK");

        let p = CredentialProvider::resolve_with(&none, env_of(&[]), h(), None).unwrap();
        assert!(matches!(p.source(), CredentialSource::File(_)));
        assert_eq!(key_of(&p).await, "FILEAK");

        // The profile can come from the environment and select a RAM role.
        let p = CredentialProvider::resolve_with(
            &none,
            env_of(&[("ALIBABA_CLOUD_PROFILE", "other")]),
            h(),
            None,
        )
        .unwrap();
        assert_eq!(
            p.source(),
            &CredentialSource::RamRole(Some("node-role".into()))
        );

        // Nothing anywhere and no metadata: a clear error.
        let empty_home = tempfile::tempdir().unwrap();
        let err = CredentialProvider::resolve_with(
            &none,
            env_of(&[]),
            Some(empty_home.path().into()),
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("ALIBABA_CLOUD_ACCESS_KEY_ID"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn explicit_file_path_and_ignore_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(&dir, FILE);
        let cfg = CredentialsConfig {
            credentials_file: Some(path.clone()),
            ignore_env: true,
            ..Default::default()
        };
        let p = CredentialProvider::resolve_with(&cfg, env_of(&ENV), None, None).unwrap();
        assert_eq!(p.source(), &CredentialSource::File(path));
        assert_eq!(key_of(&p).await, "FILEAK");
    }

    #[test]
    fn credentials_file_errors_name_the_file() {
        let err = parse_credentials_file(
            "[default]\ntype = access_key\naccess_key_id = A\n",
            "default",
            "/x/credentials",
        )
        .unwrap_err();
        assert!(err.to_string().contains("/x/credentials"));
        let err = parse_credentials_file("[default]\ntype = oidc_role_arn\n", "default", "/f")
            .unwrap_err();
        assert!(err.to_string().contains("oidc_role_arn"));
        assert_eq!(
            parse_credentials_file("[a]\nx=1\n", "default", "/f").unwrap(),
            None
        );
    }

    #[test]
    fn temporary_credentials_refresh_before_expiry() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Some(t0 + Duration::from_secs(3600));
        assert!(!needs_refresh(t0 + Duration::from_secs(3000), t0, hour));
        assert!(
            needs_refresh(t0 + Duration::from_secs(3301), t0, hour),
            "inside the 5 min margin"
        );
        let minute = Some(t0 + Duration::from_secs(60));
        assert!(
            !needs_refresh(t0 + Duration::from_secs(40), t0, minute),
            "short tokens are not refetched every call"
        );
        assert!(needs_refresh(t0 + Duration::from_secs(46), t0, minute));
        assert!(
            needs_refresh(t0 + Duration::from_secs(90), t0, minute),
            "expired"
        );
        assert!(
            !needs_refresh(t0 + Duration::from_secs(1_000_000), t0, None),
            "static keys never expire"
        );
    }

    #[test]
    fn sts_document_parses() {
        let c = parse_sts(
            r#"{"AccessKeyId":"STS.A","AccessKeySecret":"S","Expiration":"2030-01-01T00:00:00Z","SecurityToken":"T","LastUpdated":"2029-12-31T18:00:00Z","Code":"Success"}"#,
            "r",
        )
        .unwrap();
        assert_eq!(c.security_token.as_deref(), Some("T"));
        assert_eq!(c.expiration, sign::parse_timestamp("2030-01-01T00:00:00Z"));
        assert!(parse_sts(r#"{"Code":"Failed"}"#, "r").is_err());
        assert!(!format!("{c:?}").contains("\"S\""));
    }
}
