//! `OCIRepository` and OCI artifacts over the distribution API (plain HTTP(S), no Docker).
//!
//! * [`OciSource::resolve`]: a digest ref resolves without network access; a tag costs one
//!   `HEAD` of its manifest (the `Docker-Content-Digest` is the revision); a semver ref lists the
//!   tags (all pages), picks the highest match, then `HEAD`s it. Revisions are Flux's:
//!   `<tag>@sha256:<hex>`, or `sha256:<hex>` for a digest ref.
//! * [`OciSource::fetch`]: the manifest by digest (an image index resolves to its linux/amd64 or
//!   only manifest), the [`Verifier`] seam, then the selected layer streamed to a temporary file
//!   while its sha256 is checked, then extracted with the artifact store's limits (or copied).
//! * [`OciClient`]: the same client for publishing ([`OciClient::push_artifact`],
//!   [`OciClient::tag`], [`OciClient::list_tags`]) and for Helm charts
//!   ([`OciClient::resolve_chart`]).
//!
//! Credentials: the `secretRef` Secret's `.dockerconfigjson` (type
//! `kubernetes.io/dockerconfigjson`), looked up by registry host; `certSecretRef`'s `ca.crt`
//! (extra roots) and `tls.crt`/`tls.key` (a client certificate, for registries that require
//! mutual TLS) arrive in the same [`Credentials`] (the reconciler merges both Secrets). Basic credentials go
//! with the first request; a `Bearer` challenge is answered with a token from the realm.

mod auth;
mod client;
mod helm;
pub mod manifest;
mod push;
mod reference;
mod verify;

pub use auth::{parse_challenge, BasicAuth, Challenge, RegistryAuths};
pub use client::{FetchedManifest, OciClient, OciClientOptions, TokenCache, MAX_MANIFEST_BYTES};
pub use helm::{ChartVersion, OciChart};
pub use push::{Blob, PushOptions};
pub use reference::Reference;
pub use verify::{Verifier, VerifyRequest};

use async_trait::async_trait;
use manifest::{Descriptor, Manifest};
use regex::Regex;
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use trueup_core::api::source::OciRepositorySpec;
use trueup_core::storage::Limits;
use trueup_core::traits::source::{
    Credentials, FetchedRevision, Source, SourceError, SourceErrorKind, SourceRequest,
};

/// Flux's default `spec.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Metadata key for the manifest digest of a fetched revision (the artifact's other metadata
/// are the manifest's annotations, as in Flux).
pub const META_DIGEST: &str = "oci.digest";

/// What `spec.ref` selects, in Flux's precedence: digest, semver, tag (default `latest`).
#[derive(Clone, Debug)]
pub enum Target {
    Digest(String),
    Semver {
        constraint: crate::semver_constraint::Constraint,
        filter: Option<Regex>,
    },
    Tag(String),
}

impl Target {
    pub fn from_spec(spec: &OciRepositorySpec) -> Result<Target, SourceError> {
        let invalid = |m: String| SourceError::new(SourceErrorKind::InvalidSpec, m);
        let r = spec.reference.clone().unwrap_or_default();
        let nonempty = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        if let Some(d) = nonempty(&r.digest) {
            if !manifest::is_sha256_digest(&d) {
                return Err(invalid(format!(
                    "invalid ref.digest '{d}': want sha256:<64 lower-case hex>"
                )));
            }
            return Ok(Target::Digest(d));
        }
        if let Some(s) = nonempty(&r.semver) {
            let constraint = crate::semver_constraint::Constraint::parse(&s)
                .map_err(|e| invalid(format!("invalid ref.semver: {e}")))?;
            let filter = match nonempty(&r.semver_filter) {
                Some(f) => Some(
                    Regex::new(&f)
                        .map_err(|e| invalid(format!("invalid ref.semverFilter '{f}': {e}")))?,
                ),
                None => None,
            };
            return Ok(Target::Semver { constraint, filter });
        }
        let tag = nonempty(&r.tag).unwrap_or_else(|| "latest".to_string());
        if !reference::valid_tag(&tag) {
            return Err(invalid(format!("invalid ref.tag '{tag}'")));
        }
        Ok(Target::Tag(tag))
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Digest(d) => format!("digest '{d}'"),
            Target::Semver { constraint, .. } => format!("semver '{constraint}'"),
            Target::Tag(t) => format!("tag '{t}'"),
        }
    }
}

/// The OCIRepository source. Holds a token cache so that a registry's Bearer tokens are reused
/// across reconciles; otherwise stateless.
#[derive(Clone, Default)]
pub struct OciSource {
    verifier: Option<Arc<dyn Verifier>>,
    limits: Limits,
    tokens: TokenCache,
}

impl std::fmt::Debug for OciSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciSource")
            .field("verifier", &self.verifier.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl OciSource {
    pub fn new() -> Self {
        OciSource::default()
    }

    /// Size limits for layers (`max_archive_bytes`) and their extraction.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Signature verification for specs with `spec.verify`. Without one such specs are refused.
    pub fn with_verifier(mut self, verifier: Arc<dyn Verifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The timeout for `spec`: its `timeout`, or Flux's default of 60s.
    pub fn timeout_for(spec: &OciRepositorySpec) -> Duration {
        spec.timeout
            .as_ref()
            .map(|t| t.duration())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The client a request's spec and Secrets describe.
    pub fn client_for(
        &self,
        spec: &OciRepositorySpec,
        credentials: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<OciClient, SourceError> {
        let auths = RegistryAuths::from_credentials(credentials)?;
        let secret = crate::tls::describe_secret(
            spec.cert_secret_ref.as_ref().map(|r| r.name.as_str()),
            "certSecretRef",
        );
        // `caFile` was read before Flux settled on `ca.crt`; it still is.
        let tls = crate::tls::TlsSecret::from_credentials(credentials, &secret, Some(&secret))?;
        let opts = OciClientOptions {
            insecure: spec.insecure,
            ca_pem: tls.ca_pem,
            client_cert: tls.client_cert,
            timeout,
            auths,
            max_blob_bytes: self.limits.max_archive_bytes,
            ..Default::default()
        };
        Ok(OciClient::new(opts)?.with_token_cache(self.tokens.clone()))
    }
}

/// Everything a request needs, checked.
struct Job {
    reference: Reference,
    target: Target,
    client: OciClient,
    timeout: Duration,
}

impl Job {
    fn new(
        src: &OciSource,
        req: &SourceRequest<'_, OciRepositorySpec>,
    ) -> Result<Job, SourceError> {
        let spec = req.spec;
        let invalid = |m: String| SourceError::new(SourceErrorKind::InvalidSpec, m);
        let reference = Reference::parse(&spec.url)?;
        if reference.tag.is_some() || reference.digest.is_some() {
            return Err(invalid(format!(
                "invalid URL '{}': it must not hold a tag or digest, set spec.ref instead",
                reference.repo_url()
            )));
        }
        if let Some(p) = spec.provider.as_deref().filter(|p| *p != "generic") {
            return Err(invalid(format!(
                "provider '{p}' is not supported yet: use 'generic' with a secretRef"
            )));
        }
        if spec.verify.is_some() && src.verifier.is_none() {
            return Err(invalid(
                "spec.verify is not supported yet: no signature verifier is configured".into(),
            ));
        }
        if spec.proxy_secret_ref.is_some() {
            return Err(invalid("spec.proxySecretRef is not supported yet".into()));
        }
        let target = Target::from_spec(spec)?;
        let timeout = if req.timeout.is_zero() {
            OciSource::timeout_for(spec)
        } else {
            req.timeout
        };
        let client = src.client_for(spec, req.credentials, timeout)?;
        Ok(Job {
            reference,
            target,
            client,
            timeout,
        })
    }
}

/// Runs `work` under the timeout, and scrubs the Secret's values from any message.
async fn bounded<T>(
    timeout: Duration,
    what: String,
    creds: Option<&Credentials>,
    work: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::new(
            SourceErrorKind::Timeout,
            format!("timed out after {timeout:?} on {what}"),
        )),
    };
    result.map_err(|mut e| {
        if let Some(c) = creds {
            e.message = c.redact(&e.message);
        }
        e
    })
}

/// `<tag>@sha256:<hex>` or `sha256:<hex>` → (tag, digest).
pub fn parse_revision(revision: &str) -> Result<(Option<String>, String), SourceError> {
    let (tag, digest) = match revision.rsplit_once('@') {
        Some((t, d)) => (Some(t.to_string()), d),
        None => (None, revision),
    };
    if !manifest::is_sha256_digest(digest) {
        return Err(SourceError::new(
            SourceErrorKind::InvalidSpec,
            format!("invalid OCI revision '{revision}': want <tag>@sha256:<hex> or sha256:<hex>"),
        ));
    }
    Ok((tag, digest.to_string()))
}

/// Picks the layer: `layerSelector.mediaType` when set (it must exist), else Flux's content
/// type, else the first layer.
fn select_layer<'a>(
    m: &'a Manifest,
    media_type: Option<&str>,
    r: &Reference,
) -> Result<&'a Descriptor, SourceError> {
    let found = match media_type {
        Some(mt) => m.layers.iter().find(|l| l.media_type == mt),
        None => m
            .layers
            .iter()
            .find(|l| l.media_type == manifest::FLUX_CONTENT)
            .or_else(|| m.layers.first()),
    };
    found.ok_or_else(|| {
        SourceError::new(
            SourceErrorKind::NotFound,
            match media_type {
                Some(mt) => format!(
                    "failed to pull '{r}': no layer with media type '{mt}' (the artifact has: {})",
                    m.layers
                        .iter()
                        .map(|l| l.media_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!("failed to pull '{r}': the artifact has no layers"),
            },
        )
    })
}

/// The file name a copied layer gets: its `org.opencontainers.image.title` when that is a plain
/// file name, else the repository's last path component with `.tgz`.
fn copy_name(layer: &Descriptor, r: &Reference) -> String {
    let title = layer
        .annotations
        .get(manifest::ANNOTATION_TITLE)
        .map(String::as_str)
        .filter(|t| {
            !t.is_empty()
                && *t != "."
                && *t != ".."
                && !t.contains(['/', '\\', '\0'])
                && t.len() <= 255
        });
    match title {
        Some(t) => t.to_string(),
        None => format!("{}.tgz", r.repository.rsplit('/').next().unwrap_or("layer")),
    }
}

#[async_trait]
impl Source for OciSource {
    type Spec = OciRepositorySpec;

    async fn resolve(
        &self,
        req: &SourceRequest<'_, OciRepositorySpec>,
    ) -> Result<FetchedRevision, SourceError> {
        let job = Job::new(self, req)?;
        let what = format!("'{}' ({})", job.reference.repo_url(), job.target.describe());
        let work = async {
            let revision = match &job.target {
                // A digest is its own revision: nothing to ask the registry.
                Target::Digest(d) => d.clone(),
                Target::Tag(t) => {
                    let digest = job.client.head_manifest(&job.reference.with_tag(t)).await?;
                    format!("{t}@{digest}")
                }
                Target::Semver { constraint, filter } => {
                    let tags = job.client.tags(&job.reference).await?;
                    let candidates: Vec<&str> = tags
                        .iter()
                        .map(String::as_str)
                        .filter(|t| filter.as_ref().is_none_or(|f| f.is_match(t)))
                        .collect();
                    let Some(tag) = constraint.best(candidates.iter().copied()) else {
                        return Err(SourceError::new(
                            SourceErrorKind::NotFound,
                            format!(
                                "no tag of '{}' matches semver '{constraint}'{} ({} tags)",
                                job.reference.repo_url(),
                                filter
                                    .as_ref()
                                    .map(|f| format!(" and semverFilter '{f}'"))
                                    .unwrap_or_default(),
                                tags.len()
                            ),
                        ));
                    };
                    let digest = job
                        .client
                        .head_manifest(&job.reference.with_tag(tag))
                        .await?;
                    format!("{tag}@{digest}")
                }
            };
            Ok(FetchedRevision {
                revision,
                metadata: BTreeMap::new(),
            })
        };
        bounded(job.timeout, what, req.credentials, work).await
    }

    async fn fetch(
        &self,
        req: &SourceRequest<'_, OciRepositorySpec>,
        revision: &FetchedRevision,
        dir: &Path,
    ) -> Result<FetchedRevision, SourceError> {
        let job = Job::new(self, req)?;
        let (tag, digest) = parse_revision(&revision.revision)?;
        let mut r = job.reference.with_digest(&digest);
        r.tag = tag;
        let what = format!("'{r}'");
        let selector = req.spec.layer_selector.clone().unwrap_or_default();
        let copy = match selector.operation.as_deref() {
            None | Some("") | Some("extract") => false,
            Some("copy") => true,
            Some(other) => {
                return Err(SourceError::new(
                    SourceErrorKind::InvalidSpec,
                    format!("invalid layerSelector.operation '{other}': want extract or copy"),
                ))
            }
        };
        let limits = self.limits;
        let verifier = self.verifier.clone();
        let spec = req.spec;
        let work = async {
            let (top_digest, fetched, m) = job.client.resolve_image(&r).await?;
            if let (Some(v), Some(vspec)) = (&verifier, &spec.verify) {
                v.verify(&VerifyRequest {
                    client: &job.client,
                    reference: &r,
                    digest: &top_digest,
                    manifest: &m,
                    spec: vspec,
                    keys: None,
                })
                .await?;
            }
            let layer = select_layer(
                &m,
                selector.media_type.as_deref().filter(|s| !s.is_empty()),
                &r,
            )?
            .clone();
            let other = |e: std::io::Error| {
                SourceError::new(
                    SourceErrorKind::Other,
                    format!("failed to pull {what}: {e}"),
                )
            };
            // Layers go to an anonymous temp file first: nothing is unpacked before its digest
            // has been verified, and big layers never sit in memory.
            let mut file = tempfile::tempfile().map_err(other)?;
            job.client.download_blob(&r, &layer, &mut file).await?;
            file.seek(SeekFrom::Start(0)).map_err(other)?;
            let dest = dir.to_path_buf();
            let name = copy_name(&layer, &r);
            let shown = format!("layer {} of {r}", layer.digest);
            tokio::task::spawn_blocking(move || -> Result<(), SourceError> {
                let err = |e: String| SourceError::new(SourceErrorKind::Other, e);
                if copy {
                    let mut out = std::fs::File::create(dest.join(&name))
                        .map_err(|e| err(format!("writing {shown}: {e}")))?;
                    std::io::copy(&mut file, &mut out)
                        .map_err(|e| err(format!("writing {shown}: {e}")))?;
                    return Ok(());
                }
                let mut magic = [0u8; 2];
                let n = std::io::Read::read(&mut file, &mut magic)
                    .map_err(|e| err(format!("reading {shown}: {e}")))?;
                if n < 2 || magic != [0x1f, 0x8b] {
                    return Err(err(format!(
                        "cannot extract {shown}: it is not a gzip-compressed tarball (media type '{}'); use layerSelector.operation: copy",
                        layer.media_type
                    )));
                }
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| err(format!("reading {shown}: {e}")))?;
                trueup_core::storage::extract(std::io::BufReader::new(file), &dest, &shown, &limits)
                    .map_err(|e| err(format!("failed to extract {shown}: {e}")))
            })
            .await
            .map_err(|e| SourceError::new(SourceErrorKind::Other, format!("extract worker failed: {e}")))??;
            let mut metadata = match &fetched.document {
                manifest::Document::Manifest(_) => m.annotations.clone(),
                manifest::Document::Index(_) => m.annotations.clone(),
            };
            metadata.insert(META_DIGEST.into(), top_digest);
            Ok(FetchedRevision {
                revision: revision.revision.clone(),
                metadata,
            })
        };
        bounded(job.timeout, what.clone(), req.credentials, work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trueup_core::api::source::OciRepositoryRef;

    fn spec(r: OciRepositoryRef) -> OciRepositorySpec {
        let mut s: OciRepositorySpec =
            serde_json::from_value(serde_json::json!({"url": "oci://h/r", "interval": "1m"}))
                .unwrap();
        s.reference = Some(r);
        s
    }

    #[test]
    fn ref_precedence() {
        let d = format!("sha256:{}", "0".repeat(64));
        let t = Target::from_spec(&spec(OciRepositoryRef {
            digest: Some(d.clone()),
            semver: Some("1.x".into()),
            tag: Some("x".into()),
            ..Default::default()
        }))
        .unwrap();
        assert!(matches!(t, Target::Digest(x) if x == d));
        let t = Target::from_spec(&spec(OciRepositoryRef {
            semver: Some(">=1.0.0".into()),
            semver_filter: Some(".*-rc.*".into()),
            tag: Some("x".into()),
            ..Default::default()
        }))
        .unwrap();
        assert!(matches!(
            t,
            Target::Semver {
                filter: Some(_),
                ..
            }
        ));
        let t = Target::from_spec(&spec(OciRepositoryRef::default())).unwrap();
        assert!(matches!(t, Target::Tag(x) if x == "latest"));
        for bad in [
            OciRepositoryRef {
                digest: Some("sha256:zz".into()),
                ..Default::default()
            },
            OciRepositoryRef {
                semver: Some("not a range".into()),
                ..Default::default()
            },
            OciRepositoryRef {
                semver: Some("1.x".into()),
                semver_filter: Some("(".into()),
                ..Default::default()
            },
            OciRepositoryRef {
                tag: Some("bad tag".into()),
                ..Default::default()
            },
        ] {
            assert_eq!(
                Target::from_spec(&spec(bad)).unwrap_err().kind,
                SourceErrorKind::InvalidSpec
            );
        }
    }

    #[test]
    fn revisions() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_revision(&format!("v1@{d}")).unwrap(),
            (Some("v1".into()), d.clone())
        );
        assert_eq!(parse_revision(&d).unwrap(), (None, d.clone()));
        assert!(parse_revision("v1@sha1:abc").is_err());
    }

    #[test]
    fn copy_names() {
        let r = Reference::parse("oci://h/org/app").unwrap();
        let mut l = Descriptor {
            media_type: "x".into(),
            digest: "sha256:0".into(),
            size: 1,
            platform: None,
            annotations: BTreeMap::new(),
        };
        assert_eq!(copy_name(&l, &r), "app.tgz");
        l.annotations
            .insert(manifest::ANNOTATION_TITLE.into(), "chart-1.0.0.tgz".into());
        assert_eq!(copy_name(&l, &r), "chart-1.0.0.tgz");
        l.annotations
            .insert(manifest::ANNOTATION_TITLE.into(), "../evil".into());
        assert_eq!(copy_name(&l, &r), "app.tgz");
    }
}
