//! The TLS client configuration the Git, Helm and OCI sources share: rustls with the `ring`
//! provider (aws-lc-rs needs a C toolchain and is slow to build), the platform's roots plus a
//! Secret's `ca.crt`, and a client certificate (mutual TLS) from its `tls.crt` and `tls.key`.
//!
//! Flux's keys: `ca.crt`, `tls.crt`, `tls.key` (Kubernetes TLS Secrets) in `certSecretRef` for
//! OCIRepository and HelmRepository, in `secretRef` for GitRepository; a HelmRepository's
//! deprecated `caFile`, `certFile`, `keyFile` are read when none of those keys is present.
//! Messages name the Secret and the key, never the key material.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use trueup_core::traits::source::{Credentials, SourceError, SourceErrorKind};

const CA: &str = "ca.crt";
const CERT: &str = "tls.crt";
const KEY: &str = "tls.key";
const LEGACY_CA: &str = "caFile";
const LEGACY_CERT: &str = "certFile";
const LEGACY_KEY: &str = "keyFile";

/// A client certificate and its private key, PEM, with where they came from for messages.
#[derive(Clone)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key_pem: Vec<u8>,
    /// The Secret, for messages (`secret 'tls' (certSecretRef)`).
    pub secret: String,
    pub cert_key: String,
    pub key_key: String,
}

impl ClientCert {
    /// A certificate and key not read from a Secret (embedders, tests).
    pub fn new(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> ClientCert {
        ClientCert {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            secret: "the client certificate".into(),
            cert_key: CERT.into(),
            key_key: KEY.into(),
        }
    }
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// What a Secret says about TLS: extra roots and a client certificate.
#[derive(Clone, Debug, Default)]
pub struct TlsSecret {
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert: Option<ClientCert>,
    /// The Secret the CA came from, for messages.
    pub ca_origin: Option<(String, String)>,
}

/// Describes a Secret for messages: `secret 'name' (field)`, or `the field secret`.
pub fn describe_secret(name: Option<&str>, field: &str) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => format!("secret '{n}' ({field})"),
        None => format!("the {field} secret"),
    }
}

fn invalid(msg: String) -> SourceError {
    SourceError::new(SourceErrorKind::InvalidSpec, msg)
}

impl TlsSecret {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `creds` (the Secret `secret` describes);
    /// with `legacy` (a HelmRepository's `secretRef`, described by it), `caFile`, `certFile`
    /// and `keyFile` when none of those is set. Only one of a certificate and its key is an
    /// error naming the Secret and the missing key.
    pub fn from_credentials(
        creds: Option<&Credentials>,
        secret: &str,
        legacy: Option<&str>,
    ) -> Result<TlsSecret, SourceError> {
        let Some(creds) = creds else {
            return Ok(TlsSecret::default());
        };
        let get = |k: &str| creds.0.get(k).filter(|v| !v.is_empty()).cloned();
        let (keys, origin) = match legacy {
            Some(legacy_secret)
                if [CA, CERT, KEY].iter().all(|k| get(k).is_none())
                    && [LEGACY_CA, LEGACY_CERT, LEGACY_KEY]
                        .iter()
                        .any(|k| get(k).is_some()) =>
            {
                ([LEGACY_CA, LEGACY_CERT, LEGACY_KEY], legacy_secret)
            }
            _ => ([CA, CERT, KEY], secret),
        };
        let [ca, cert, key] = keys;
        let client_cert = match (get(cert), get(key)) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(format!(
                    "invalid {origin}: '{cert}' is set but '{key}' is missing (a client certificate needs both)"
                )))
            }
            (None, Some(_)) => {
                return Err(invalid(format!(
                    "invalid {origin}: '{key}' is set but '{cert}' is missing (a client certificate needs both)"
                )))
            }
            (Some(c), Some(k)) => Some(ClientCert {
                cert_pem: c,
                key_pem: k,
                secret: origin.to_string(),
                cert_key: cert.to_string(),
                key_key: key.to_string(),
            }),
        };
        let ca_pem = get(ca);
        Ok(TlsSecret {
            ca_origin: ca_pem
                .as_ref()
                .map(|_| (origin.to_string(), ca.to_string())),
            ca_pem,
            client_cert,
        })
    }
}

/// The rustls client configuration: platform roots plus `ca_pem`, and `client_cert` presented
/// when the server asks. Only HTTP/1.1 is offered (ALPN). `ca_origin` names where the CA came
/// from in messages (`secret 'x' (certSecretRef)`, `'ca.crt'`).
pub fn client_config(
    ca_pem: Option<&[u8]>,
    ca_origin: Option<(&str, &str)>,
    client_cert: Option<&ClientCert>,
) -> Result<rustls::ClientConfig, SourceError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_where = match ca_origin {
        Some((secret, key)) => format!("'{key}' of {secret}"),
        None => "the secret".to_string(),
    };
    let mut extra: Vec<CertificateDer<'static>> = Vec::new();
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            extra.push(
                cert.map_err(|e| invalid(format!("invalid CA certificate in {ca_where}: {e}")))?,
            );
        }
        if extra.is_empty() {
            return Err(invalid(format!(
                "invalid CA certificate in {ca_where}: no PEM certificate found"
            )));
        }
    }
    let identity = client_cert.map(parse_client_cert).transpose()?;
    let tls_err = |e: rustls::Error| {
        SourceError::new(SourceErrorKind::Other, format!("TLS setup failed: {e}"))
    };
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(tls_err)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (identity, client_cert) {
        (Some((certs, key)), Some(c)) => {
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                let why = match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "the private key does not match the certificate".to_string()
                    }
                    // rustls's own words about the key type; no key material.
                    other => other.to_string(),
                };
                invalid(format!(
                    "invalid client certificate in {}: '{}' and '{}': {why}",
                    c.secret, c.cert_key, c.key_key
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificate chain and key, PEM. Errors name the Secret and the key; the key's parse
/// error is not passed on (it could quote the key's bytes).
fn parse_client_cert(c: &ClientCert) -> Result<Identity, SourceError> {
    let certs = CertificateDer::pem_slice_iter(&c.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            invalid(format!(
                "invalid client certificate in {}: '{}' is not a PEM certificate",
                c.secret, c.cert_key
            ))
        })?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "invalid client certificate in {}: '{}' holds no PEM certificate",
            c.secret, c.cert_key
        )));
    }
    // PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`).
    let key = PrivateKeyDer::from_pem_slice(&c.key_pem).map_err(|_| {
        invalid(format!(
            "invalid client certificate in {}: '{}' holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC, unencrypted)",
            c.secret, c.key_key
        ))
    })?;
    Ok((certs, key))
}

/// A hint for a failed handshake, from the error chain's text: whether the server wanted a
/// client certificate or refused the one it got. `None` when the text is about something else.
pub fn handshake_hint(detail: &str, sent_client_cert: bool) -> Option<&'static str> {
    let t = detail.to_ascii_lowercase().replace([' ', '_'], "");
    if t.contains("certificaterequired") {
        return Some(
            "the server requires a client certificate: set tls.crt and tls.key in the Secret",
        );
    }
    let refused = [
        "badcertificate",
        "unknownca",
        "certificateunknown",
        "unsupportedcertificate",
        "certificaterevoked",
        "certificateexpired",
        "accessdenied",
        "decrypterror",
    ];
    if refused
        .iter()
        .any(|a| t.contains(&format!("alert{a}")) || t.contains(&format!("alert:{a}")))
    {
        return Some(if sent_client_cert {
            "the server refused the client certificate (tls.crt/tls.key): is it signed by a CA the server trusts?"
        } else {
            "the server requires a client certificate: set tls.crt and tls.key in the Secret"
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn creds(kv: &[(&str, &str)]) -> Credentials {
        Credentials(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn one_half_of_a_pair_is_named() {
        let e = TlsSecret::from_credentials(
            Some(&creds(&[("tls.crt", "x")])),
            "secret 'c' (certSecretRef)",
            None,
        )
        .unwrap_err();
        assert!(
            e.message.contains("secret 'c' (certSecretRef)")
                && e.message.contains("'tls.key' is missing"),
            "{}",
            e.message
        );
        let e = TlsSecret::from_credentials(
            Some(&creds(&[("tls.key", "s3cret-key")])),
            "secret 'c' (certSecretRef)",
            None,
        )
        .unwrap_err();
        assert!(
            e.message.contains("'tls.crt' is missing") && !e.message.contains("s3cret"),
            "{}",
            e.message
        );
        let e = TlsSecret::from_credentials(
            Some(&creds(&[("certFile", "x")])),
            "k",
            Some("secret 'h' (secretRef)"),
        )
        .unwrap_err();
        assert!(
            e.message.contains("secret 'h' (secretRef)")
                && e.message.contains("'keyFile' is missing"),
            "{}",
            e.message
        );
    }

    #[test]
    fn kubernetes_keys_win_over_legacy_ones() {
        let t = TlsSecret::from_credentials(
            Some(&creds(&[("ca.crt", "a"), ("caFile", "b")])),
            "k",
            Some("l"),
        )
        .unwrap();
        assert_eq!(t.ca_pem.as_deref(), Some(&b"a"[..]));
        let t =
            TlsSecret::from_credentials(Some(&creds(&[("caFile", "b")])), "k", Some("l")).unwrap();
        assert_eq!(t.ca_pem.as_deref(), Some(&b"b"[..]));
        let t = TlsSecret::from_credentials(Some(&creds(&[("caFile", "b")])), "k", None).unwrap();
        assert!(t.ca_pem.is_none());
    }

    #[test]
    fn unparsable_pem_names_the_key_not_its_content() {
        let c = ClientCert::new(
            "not a cert",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
        );
        let e = client_config(None, None, Some(&c)).unwrap_err();
        assert!(e.message.contains("'tls.crt'"), "{}", e.message);
        assert!(client_config(Some(b"not pem"), None, None).is_err());
        assert!(client_config(None, None, None).is_ok());
    }

    #[test]
    fn hints() {
        assert!(
            handshake_hint("received fatal alert: CertificateRequired", false)
                .unwrap()
                .contains("requires")
        );
        assert!(handshake_hint("received fatal alert: BadCertificate", true)
            .unwrap()
            .contains("refused"));
        assert!(handshake_hint("connection refused", true).is_none());
    }
}
