//! `oci://` references: registry host, repository path, optional tag or digest.

use super::manifest::is_sha256_digest;
use regex::Regex;
use std::fmt;
use std::sync::OnceLock;
use trueup_core::traits::source::{SourceError, SourceErrorKind};

/// A parsed `oci://<registry>/<repository>[:<tag>][@<digest>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (lower-cased), the key for credentials lookup.
    pub registry: String,
    /// The repository path, e.g. `org/app/manifests`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

struct Patterns {
    component: Regex,
    tag: Regex,
    host: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // The distribution spec's grammar for path components and tags.
        component: Regex::new(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$").expect("valid regex"),
        tag: Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("valid regex"),
        host: Regex::new(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
            .expect("valid regex"),
    })
}

fn invalid(msg: String) -> SourceError {
    SourceError::new(SourceErrorKind::InvalidSpec, msg)
}

/// Whether `tag` is a valid tag per the distribution spec.
pub fn valid_tag(tag: &str) -> bool {
    patterns().tag.is_match(tag)
}

impl Reference {
    /// Parses `oci://host[:port]/repo[:tag][@sha256:<hex>]`. Credentials in the URL are refused
    /// (they belong in a Secret), and never repeated in the error.
    pub fn parse(url: &str) -> Result<Reference, SourceError> {
        let Some(rest) = url.strip_prefix("oci://") else {
            let shown = crate::git::display_url(url);
            return Err(invalid(format!(
                "invalid OCI URL '{shown}': it must start with oci://"
            )));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(invalid(format!(
                "invalid OCI URL 'oci://{}/{path}': credentials in the URL are not accepted, use a secretRef",
                authority.rsplit_once('@').map_or("", |(_, h)| h)
            )));
        }
        let shown = format!("oci://{rest}");
        if !patterns().host.is_match(authority) {
            return Err(invalid(format!(
                "invalid OCI URL '{shown}': invalid registry host"
            )));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                if !is_sha256_digest(d) {
                    return Err(invalid(format!(
                        "invalid OCI URL '{shown}': invalid digest '{d}' (want sha256:<64 hex>)"
                    )));
                }
                (p, Some(d.to_string()))
            }
            None => (path, None),
        };
        // A tag follows the last ':' of the last path component (a port lives in the authority).
        let last = path.rsplit('/').next().unwrap_or(path);
        let (repository, tag) = match last.rsplit_once(':') {
            Some((_, t)) => {
                if !valid_tag(t) {
                    return Err(invalid(format!(
                        "invalid OCI URL '{shown}': invalid tag '{t}'"
                    )));
                }
                (&path[..path.len() - t.len() - 1], Some(t.to_string()))
            }
            None => (path, None),
        };
        let repository = repository.trim_end_matches('/');
        if repository.is_empty() {
            return Err(invalid(format!(
                "invalid OCI URL '{shown}': no repository path"
            )));
        }
        if repository.len() > 255
            || !repository
                .split('/')
                .all(|c| patterns().component.is_match(c))
        {
            return Err(invalid(format!(
                "invalid OCI URL '{shown}': invalid repository name '{repository}' (lower-case letters, digits and separators)"
            )));
        }
        let registry = authority.to_ascii_lowercase();
        let mut repository = repository.to_string();
        // Docker Hub's official images live under `library/`.
        if is_docker_hub(&registry) && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The reference without tag or digest, as `oci://host/repo`.
    pub fn repo_url(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }

    /// The host[:port] the API is served on (Docker Hub's API has its own host).
    pub fn api_host(&self) -> &str {
        if is_docker_hub(&self.registry) {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository at a digest (a tag, if any, is kept for messages only).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// What the manifest endpoint is asked for: the digest when there is one, else the tag
    /// (default `latest`).
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn is_docker_hub(registry: &str) -> bool {
    registry == "docker.io" || registry == "index.docker.io"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let r = Reference::parse("oci://127.0.0.1:5000/org/app:v1.0.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "org/app");
        assert_eq!(r.tag.as_deref(), Some("v1.0.0"));
        assert_eq!(r.manifest_ref(), "v1.0.0");
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("oci://ghcr.io/o/a@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.manifest_ref(), d);
        let r = Reference::parse("oci://localhost:5000/app").unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), "latest");
        assert_eq!(r.to_string(), "oci://localhost:5000/app");
        let r = Reference::parse("oci://docker.io/nginx:1").unwrap();
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn rejects() {
        for bad in [
            "https://ghcr.io/o/a",
            "oci://",
            "oci://ghcr.io",
            "oci://ghcr.io/",
            "oci://ghcr.io/Org/App",
            "oci://ghcr.io/o/a:bad tag",
            "oci://ghcr.io/o/a@sha256:short",
            "oci://bad host/o",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert_eq!(e.kind, SourceErrorKind::InvalidSpec, "{bad}");
        }
        let e = Reference::parse("oci://user:s3cret@ghcr.io/o/a").unwrap_err();
        assert!(!e.message.contains("s3cret"), "{}", e.message);
    }
}
