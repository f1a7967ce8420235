//! Sources: resolve a spec to a revision cheaply, then fetch that revision's content.

use crate::object::ObjectRef;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Secret data handed to a source (`secretRef`): keys such as `username`, `password`,
/// `bearerToken`, `ca.crt`. Its Debug output never shows the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials(pub BTreeMap<String, Vec<u8>>);

impl Credentials {
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value, for redacting them from messages.
    pub fn secret_values(&self) -> impl Iterator<Item = &str> {
        self.0
            .values()
            .filter_map(|v| std::str::from_utf8(v).ok())
            .filter(|s| s.len() >= 3)
    }

    /// Replaces every secret value that occurs in `text` with `*****`, including the user
    /// names and passwords inside a `.dockerconfigjson` (its strings and their base64 `auth`
    /// `user:password` pairs), which appear in messages on their own.
    pub fn redact(&self, text: &str) -> String {
        use base64::Engine as _;
        let mut parts: Vec<String> = self.secret_values().map(str::to_string).collect();
        if let Some(json) = self.0.get(".dockerconfigjson") {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) {
                let mut stack = vec![&v];
                while let Some(v) = stack.pop() {
                    match v {
                        serde_json::Value::Object(m) => stack.extend(m.values()),
                        serde_json::Value::Array(a) => stack.extend(a.iter()),
                        serde_json::Value::String(s) => {
                            parts.push(s.clone());
                            if let Some(decoded) = base64::engine::general_purpose::STANDARD
                                .decode(s.trim())
                                .ok()
                                .and_then(|b| String::from_utf8(b).ok())
                            {
                                if let Some((u, p)) = decoded.split_once(':') {
                                    parts.push(p.to_string());
                                    parts.push(u.to_string());
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // Longest first, so that a value containing another is replaced whole.
        parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let mut out = text.to_string();
        for p in parts.iter().filter(|p| p.len() >= 3) {
            out = out.replace(p.as_str(), "*****");
        }
        out
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// What a source is asked to work on.
#[derive(Debug)]
pub struct SourceRequest<'a, S> {
    /// The source object, for messages.
    pub object: &'a ObjectRef,
    pub spec: &'a S,
    /// From the spec's secretRef, already read from the backend.
    pub credentials: Option<&'a Credentials>,
    pub timeout: Duration,
}

/// A resolved revision, in Flux's format (`main@sha1:<hex>`, `v1.2.3@sha1:<hex>`,
/// `sha1:<hex>`, `latest@sha256:<hex>`, `6.1.0`), plus metadata kept in the artifact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchedRevision {
    pub revision: String,
    pub metadata: BTreeMap<String, String>,
}

/// The kind of failure, so that reconcilers pick the right condition reason and retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// Wrong or missing credentials.
    Auth,
    /// The ref (branch, tag, version) does not exist.
    NotFound,
    /// The server could not be reached.
    Unreachable,
    Timeout,
    /// The spec is invalid: retrying without a change cannot help.
    InvalidSpec,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: SourceErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Something that produces artifacts: a Git repository, a Helm repository, an OCI registry.
#[async_trait]
pub trait Source: Send + Sync {
    /// The spec this source reads (e.g. `GitRepositorySpec`).
    type Spec: Send + Sync;

    /// The revision the spec points at now. Must be cheap (one remote round trip, no download):
    /// reconcilers call it on every interval and skip [`Source::fetch`] when nothing changed.
    async fn resolve(
        &self,
        req: &SourceRequest<'_, Self::Spec>,
    ) -> Result<FetchedRevision, SourceError>;

    /// Writes the content of `revision` into `dir` (an empty directory created by the caller).
    async fn fetch(
        &self,
        req: &SourceRequest<'_, Self::Spec>,
        revision: &FetchedRevision,
        dir: &Path,
    ) -> Result<FetchedRevision, SourceError>;
}

/// What a [`ChartDependencyFetcher`] is asked for: one dependency of a chart built from a
/// source tree (`dependencies:` of its `Chart.yaml`, or the locked version of `Chart.lock`).
#[derive(Debug)]
pub struct ChartDependencyRequest<'a> {
    /// The dependency's chart repository: `https://...`, `http://...` or `oci://...`.
    pub repository: &'a str,
    /// The chart's name in that repository.
    pub chart: &'a str,
    /// A Helm version constraint (`^1.0.0`, `1.2.3`); empty means the latest stable version.
    pub version: &'a str,
    /// The HelmRepository of the HelmChart's namespace whose `spec.url` matches `repository`
    /// (its `type`, `insecure`, `passCredentials`, `provider`), or a plain one with that URL
    /// when none does (the chart is then fetched anonymously).
    pub repository_spec: &'a crate::api::source::HelmRepositorySpec,
    /// The data of that HelmRepository's `secretRef` and `certSecretRef`.
    pub credentials: Option<&'a Credentials>,
    pub timeout: Duration,
    /// The largest chart archive accepted.
    pub max_bytes: u64,
}

/// A dependency fetched: the chart archive and the version it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedChart {
    pub version: String,
    /// The chart `.tgz`, digest-checked where the repository gives a digest.
    pub tgz: Vec<u8>,
}

/// Fetches the charts a chart from a GitRepository depends on from HTTP or OCI chart
/// repositories, as source-controller's dependency manager does. Core names no concrete
/// implementation: the sources crate has one over its Helm index and OCI clients.
#[async_trait]
pub trait ChartDependencyFetcher: Send + Sync {
    async fn fetch_dependency(
        &self,
        req: &ChartDependencyRequest<'_>,
    ) -> Result<FetchedChart, SourceError>;
}
