//! Registry credentials (`kubernetes.io/dockerconfigjson` Secrets) and `WWW-Authenticate`
//! challenges.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;
use trueup_core::traits::source::{Credentials, SourceError, SourceErrorKind};

/// A user name and password (or token) for one registry. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl BasicAuth {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        BasicAuth {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// Credentials per registry host, as a `.dockerconfigjson` holds them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuths {
    by_host: BTreeMap<String, BasicAuth>,
}

impl fmt::Debug for RegistryAuths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_host.keys()).finish()
    }
}

fn invalid(msg: impl Into<String>) -> SourceError {
    SourceError::new(SourceErrorKind::InvalidSpec, msg)
}

/// `https://host:port/v1/` → `host:port`, lower-cased; Docker Hub's aliases → `docker.io`.
fn normalize_host(key: &str) -> String {
    let k = key
        .split_once("://")
        .map_or(key, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => k,
    }
}

impl RegistryAuths {
    /// One set of credentials for one host.
    pub fn single(host: &str, auth: BasicAuth) -> Self {
        let mut by_host = BTreeMap::new();
        by_host.insert(normalize_host(host), auth);
        RegistryAuths { by_host }
    }

    /// Parses a `.dockerconfigjson` document: `{"auths": {"<host>": {"auth": base64(user:pass)}
    /// | {"username": .., "password": ..}}}`. Errors never quote the document (it holds secrets).
    pub fn from_docker_config(json: &[u8]) -> Result<Self, SourceError> {
        let value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|_| invalid("invalid secret: .dockerconfigjson is not valid JSON"))?;
        let auths = value
            .get("auths")
            .and_then(|a| a.as_object())
            .ok_or_else(|| invalid("invalid secret: .dockerconfigjson has no 'auths' object"))?;
        let mut by_host = BTreeMap::new();
        for (host, entry) in auths {
            let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let auth = if !field("auth").is_empty() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(field("auth").trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        invalid(format!(
                            "invalid secret: .dockerconfigjson auth for '{host}' is not base64 of user:password"
                        ))
                    })?;
                let (u, p) = decoded.split_once(':').ok_or_else(|| {
                    invalid(format!(
                        "invalid secret: .dockerconfigjson auth for '{host}' is not user:password"
                    ))
                })?;
                BasicAuth::new(u, p)
            } else if !field("username").is_empty() {
                BasicAuth::new(field("username"), field("password"))
            } else {
                // An identity token alone is exchanged with the OAuth2 refresh flow, which
                // trueup does not speak; skipping beats sending it as a password.
                continue;
            };
            if auth.username.contains(['\r', '\n']) || auth.password.contains(['\r', '\n']) {
                return Err(invalid(format!(
                    "invalid secret: credentials for '{host}' contain a newline"
                )));
            }
            by_host.insert(normalize_host(host), auth);
        }
        Ok(RegistryAuths { by_host })
    }

    /// Reads a Secret: `.dockerconfigjson` (type `kubernetes.io/dockerconfigjson`), or
    /// `username`/`password` keys as a convenience for embedders (applied to every host).
    pub fn from_credentials(creds: Option<&Credentials>) -> Result<Self, SourceError> {
        let Some(creds) = creds else {
            return Ok(RegistryAuths::default());
        };
        if let Some(json) = creds.0.get(".dockerconfigjson") {
            return RegistryAuths::from_docker_config(json);
        }
        if let Some(user) = creds.get_str("username") {
            let mut by_host = BTreeMap::new();
            by_host.insert(
                "*".to_string(),
                BasicAuth::new(user, creds.get_str("password").unwrap_or_default()),
            );
            return Ok(RegistryAuths { by_host });
        }
        if creds.0.keys().all(|k| {
            [
                "ca.crt", "tls.crt", "tls.key", "caFile", "certFile", "keyFile",
            ]
            .contains(&k.as_str())
        }) {
            return Ok(RegistryAuths::default());
        }
        Err(invalid(
            "invalid secret: want a kubernetes.io/dockerconfigjson Secret with a '.dockerconfigjson' key",
        ))
    }

    /// The credentials for `registry` (`host[:port]`), if any.
    pub fn for_registry(&self, registry: &str) -> Option<&BasicAuth> {
        self.by_host
            .get(&normalize_host(registry))
            .or_else(|| self.by_host.get("*"))
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Other(String),
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted values may contain commas, as a
/// scope `repository:x:pull,push` does) or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    _ => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
            value = value.trim().to_string();
        }
        params.insert(key, value);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic,
        "bearer" => match params.remove("realm") {
            Some(realm) if !realm.is_empty() => Challenge::Bearer {
                realm,
                service: params.remove("service"),
                scope: params.remove("scope"),
            },
            _ => Challenge::Other(scheme.to_string()),
        },
        _ => Challenge::Other(scheme.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Challenge::Basic
        );
        assert_eq!(
            parse_challenge("Bearer realm=https://t/x"),
            Challenge::Bearer {
                realm: "https://t/x".into(),
                service: None,
                scope: None
            }
        );
        assert!(matches!(parse_challenge("Bearer"), Challenge::Other(_)));
        assert!(matches!(parse_challenge(""), Challenge::Other(_)));
    }

    #[test]
    fn docker_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("u1:p:w");
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"127.0.0.1:5000":{{"username":"u2","password":"p2"}}}}}}"#
        );
        let a = RegistryAuths::from_docker_config(json.as_bytes()).unwrap();
        assert_eq!(
            a.for_registry("docker.io"),
            Some(&BasicAuth::new("u1", "p:w"))
        );
        assert_eq!(
            a.for_registry("127.0.0.1:5000"),
            Some(&BasicAuth::new("u2", "p2"))
        );
        assert_eq!(a.for_registry("ghcr.io"), None);
        assert!(!format!("{a:?}").contains("p2"));
        assert!(!format!("{:?}", a.for_registry("127.0.0.1:5000")).contains("p2"));
        let e =
            RegistryAuths::from_docker_config(br#"{"auths":{"h":{"auth":"%%%"}}}"#).unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::InvalidSpec);
        assert!(RegistryAuths::from_docker_config(b"{").is_err());
        let creds = Credentials(
            [("ca.crt".to_string(), b"x".to_vec())]
                .into_iter()
                .collect(),
        );
        assert!(RegistryAuths::from_credentials(Some(&creds))
            .unwrap()
            .is_empty());
        let creds = Credentials([("token".to_string(), b"x".to_vec())].into_iter().collect());
        assert!(RegistryAuths::from_credentials(Some(&creds)).is_err());
    }
}
