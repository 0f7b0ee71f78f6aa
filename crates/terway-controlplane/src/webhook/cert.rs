//! The webhook's TLS: a CA and a serving certificate for the webhook Service's DNS names, made by the
//! first replica that finds none and kept in a Secret so every replica serves the same one; the CA is
//! injected into the MutatingWebhookConfiguration's `caBundle` (and put back whenever something, e.g.
//! a re-apply of an older manifest, removed it).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// Secret keys.
const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
/// Years the certificates are valid.
const VALID_YEARS: i32 = 10;

/// The PEM texts the webhook serves with.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookCert {
    /// The CA certificate (what `caBundle` carries).
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving key.
    pub key_pem: String,
}

impl std::fmt::Debug for WebhookCert {
    // The key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCert").finish_non_exhaustive()
    }
}

/// The names the API server dials a Service by.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

/// A new CA and a serving certificate for `dns_names` signed by it.
pub fn generate(dns_names: &[String]) -> Result<WebhookCert, String> {
    let err = |what: &str, e: rcgen::Error| format!("{what}: {e}");
    let year = this_year();
    let (from, until) = (
        date_time_ymd(year - 1, 1, 1),
        date_time_ymd(year + VALID_YEARS, 1, 1),
    );

    let ca_key = KeyPair::generate().map_err(|e| err("generate the CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA params", e))?;
    ca.distinguished_name
        .push(DnType::CommonName, "terway-controlplane webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = from;
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| err("sign the CA", e))?;

    let key = KeyPair::generate().map_err(|e| err("generate the serving key", e))?;
    let mut leaf =
        CertificateParams::new(dns_names.to_vec()).map_err(|e| err("serving params", e))?;
    if let Some(first) = dns_names.first() {
        leaf.distinguished_name
            .push(DnType::CommonName, first.clone());
    }
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = from;
    leaf.not_after = until;
    let issuer = Issuer::new(ca, &ca_key);
    let cert = leaf
        .signed_by(&key, &issuer)
        .map_err(|e| err("sign the serving certificate", e))?;
    Ok(WebhookCert {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn from_secret(s: &Secret) -> Option<WebhookCert> {
    let data = s.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|t| !t.is_empty())
    };
    Some(WebhookCert {
        ca_pem: text(CA_KEY)?,
        cert_pem: text(CERT_KEY)?,
        key_pem: text(KEY_KEY)?,
    })
}

/// The certificate in Secret `namespace/name`, made and stored first when there is none. Two replicas
/// starting together race on the create; the loser reads the winner's.
pub async fn ensure_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    dns_names: &[String],
) -> Result<WebhookCert, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = format!("webhook certificate Secret {namespace}/{name}");
    if let Some(s) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read {what}"), e))?
    {
        return from_secret(&s).ok_or_else(|| {
            Error::Config(format!(
                "{what} lacks {CA_KEY}, {CERT_KEY} or {KEY_KEY}; delete it and the controlplane makes a new one"
            ))
        });
    }
    let cert = generate(dns_names).map_err(|e| Error::Config(format!("make the {what}: {e}")))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (CA_KEY, &cert.ca_pem),
                (CERT_KEY, &cert.cert_pem),
                (KEY_KEY, &cert.key_pem),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
        ),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "made the webhook certificate");
            Ok(cert)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api
                .get(name)
                .await
                .map_err(|e| Error::kube(format!("read {what}"), e))?;
            from_secret(&s).ok_or_else(|| Error::Config(format!("{what} is incomplete")))
        }
        Err(e) => Err(Error::kube(format!("create {what}"), e)),
    }
}

/// Put `ca_pem` into every webhook of the MutatingWebhookConfiguration `name` whose `caBundle`
/// differs. Returns whether anything was written; `Ok(false)` too when the configuration does not
/// exist (a cluster that installed without the webhook).
pub async fn inject_ca(client: &kube::Client, name: &str, ca_pem: &str) -> Result<bool, Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let what = format!("MutatingWebhookConfiguration {name}");
    let Some(cfg) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read {what}"), e))?
    else {
        return Ok(false);
    };
    let want = ca_pem.as_bytes();
    let stale: Vec<serde_json::Value> = cfg
        .webhooks
        .unwrap_or_default()
        .iter()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(want))
        .map(|w| {
            serde_json::json!({
                "name": w.name,
                "clientConfig": {"caBundle": base64::engine::general_purpose::STANDARD.encode(want)},
            })
        })
        .collect();
    if stale.is_empty() {
        return Ok(false);
    }
    // A strategic merge keyed by webhook name: only the caBundle of each stale webhook changes.
    let patch = serde_json::json!({ "webhooks": stale });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(|e| Error::kube(format!("inject the CA into {what}"), e))?;
    Ok(true)
}

/// The rustls server configuration for `cert`.
pub fn server_config(cert: &WebhookCert) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("serving certificate PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| format!("serving key PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map(Arc::new)
        .map_err(|e| format!("TLS server configuration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn the_serving_certificate_chains_to_the_ca_and_names_the_service() {
        let names = service_dns_names("terway-controlplane", "kube-system");
        assert!(names.contains(&"terway-controlplane.kube-system.svc".to_string()));
        let c = generate(&names).expect("generate");
        assert!(c.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server_config(&c).is_ok());
        // A client trusting only the CA accepts the serving certificate for the Service name.
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(c.ca_pem.as_bytes()) {
            roots.add(ca.expect("ca pem")).expect("add root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        let leaf = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
            .next()
            .expect("leaf")
            .expect("leaf pem");
        let name = rustls::pki_types::ServerName::try_from("terway-controlplane.kube-system.svc")
            .expect("name");
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .expect("the CA vouches for the Service name");
        let other = rustls::pki_types::ServerName::try_from("evil.example").expect("name");
        assert!(verifier
            .verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now())
            .is_err());
        assert_eq!(format!("{c:?}"), "WebhookCert { .. }");
    }
}
