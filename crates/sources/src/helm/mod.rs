//! HelmRepository / HelmChart source: resolves a chart version from an HTTP
//! Helm repository's `index.yaml` and downloads the chart archive.
//!
//! - The index is fetched with `If-None-Match`; an unchanged index (HTTP 304)
//!   costs one request and reuses the entries kept from the last fetch.
//! - The index is read as a stream and only the requested chart's entries are
//!   kept ([`index::read_chart_entries`]), so a 100 MB index does not cost
//!   hundreds of MB.
//! - Versions are chosen with Helm's constraint syntax
//!   ([`crate::semver_constraint::Constraint`], Masterminds semantics); no
//!   version means the latest stable one, as Helm does.
//! - The archive is checked against the index's sha256 digest and written to
//!   the fetch directory as `NAME-VERSION.tgz`; the revision is the version.
//! - `username`/`password` credentials become HTTP basic auth (sent to another
//!   host than the repository's only with `passCredentials`); `certSecretRef`'s
//!   `ca.crt` is trusted on top of the platform roots (rustls with ring) and its
//!   `tls.crt`/`tls.key` are presented as a client certificate (mutual TLS), for
//!   HTTP and `type: oci` repositories alike (the deprecated `caFile`,
//!   `certFile`, `keyFile` of `secretRef` are read when none is set).
//! - A `type: oci` HelmRepository is a registry: no index; the chart's tags are
//!   listed (all pages) and matched with Helm's `+` → `_` convention, or an exact
//!   version is looked up by its tag; the chart layer is pulled with its digest
//!   checked ([`crate::oci::OciClient::resolve_chart_version`]).
//!
//! The core [`Source`] trait hands a source only its own spec, while a
//! HelmChart needs its HelmRepository's too, so [`HelmSource`]'s spec is
//! [`HelmChartSource`], the pair.

pub mod index;

use crate::semver_constraint::{parse_version, Constraint};
use async_trait::async_trait;
use index::ChartVersion;
use sha2::Digest;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trueup_core::api::source::{HelmChartSpec, HelmRepositorySpec};
use trueup_core::traits::source::{
    ChartDependencyFetcher, ChartDependencyRequest, Credentials, FetchedChart, FetchedRevision,
    Source, SourceError, SourceErrorKind, SourceRequest,
};

/// What [`HelmSource`] works on: the HelmChart and the HelmRepository its
/// `sourceRef` names (resolved by the caller).
#[derive(Debug, Clone)]
pub struct HelmChartSource {
    pub repository: HelmRepositorySpec,
    pub chart: HelmChartSpec,
}

/// Cached index entries of one chart in one repository.
#[derive(Clone)]
struct CachedIndex {
    etag: String,
    entries: Arc<Vec<ChartVersion>>,
}

/// The Helm repository source. Cheap to clone; clones share the index cache and the OCI
/// registries' token cache.
#[derive(Clone, Default)]
pub struct HelmSource {
    cache: Arc<Mutex<HashMap<(String, String), CachedIndex>>>,
    tokens: crate::oci::TokenCache,
}

/// Whether a HelmRepository is an OCI registry (`type: oci`). An `oci://` URL without the type
/// is a mistake Flux refuses too.
fn is_oci(repo: &HelmRepositorySpec) -> Result<bool, SourceError> {
    let oci_type = repo.repo_type.as_deref() == Some("oci");
    let oci_url = repo.url.starts_with("oci://");
    match (oci_type, oci_url) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(err(
            SourceErrorKind::InvalidSpec,
            format!(
                "invalid OCI registry URL: {}: want oci://<host>/<path>",
                repo.url
            ),
        )),
        (false, true) => Err(err(
            SourceErrorKind::InvalidSpec,
            format!(
                "'{}' is an OCI registry URL: set spec.type: oci on the HelmRepository",
                repo.url
            ),
        )),
    }
}

/// The chart's repository in a registry: the HelmRepository URL joined with the chart name.
fn oci_chart_url(spec: &HelmChartSource) -> Result<String, SourceError> {
    let chart = spec.chart.chart.trim_matches('/');
    if chart.is_empty() || chart.contains("..") || chart.contains(['@', ':']) {
        return Err(err(
            SourceErrorKind::InvalidSpec,
            format!("invalid chart name '{}'", spec.chart.chart),
        ));
    }
    Ok(format!(
        "{}/{chart}",
        spec.repository.url.trim_end_matches('/')
    ))
}

fn err(kind: SourceErrorKind, msg: impl Into<String>) -> SourceError {
    SourceError::new(kind, msg)
}

/// The TLS material of a HelmRepository, as Flux reads it: `ca.crt`, `tls.crt` and `tls.key`
/// from `certSecretRef`; the deprecated `caFile`, `certFile` and `keyFile` from `secretRef` when
/// none of those is set.
fn tls_secret(
    repo: &HelmRepositorySpec,
    creds: Option<&Credentials>,
) -> Result<crate::tls::TlsSecret, SourceError> {
    let name = |r: &Option<trueup_core::api::meta::LocalObjectReference>| {
        r.as_ref().map(|r| r.name.clone())
    };
    let legacy = crate::tls::describe_secret(name(&repo.secret_ref).as_deref(), "secretRef");
    let secret = match name(&repo.cert_secret_ref) {
        Some(n) => crate::tls::describe_secret(Some(&n), "certSecretRef"),
        None => legacy.clone(),
    };
    crate::tls::TlsSecret::from_credentials(creds, &secret, Some(&legacy))
}

struct Http {
    client: reqwest::blocking::Client,
    auth: Option<(String, String)>,
    /// A client certificate is configured (for messages about failed handshakes).
    client_cert: bool,
}

impl Http {
    fn new(
        repo: &HelmRepositorySpec,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<Http, SourceError> {
        let secret = tls_secret(repo, creds)?;
        let ca_origin = secret
            .ca_origin
            .as_ref()
            .map(|(s, k)| (s.as_str(), k.as_str()));
        let tls = crate::tls::client_config(
            secret.ca_pem.as_deref(),
            ca_origin,
            secret.client_cert.as_ref(),
        )?;
        let client = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build()
            .map_err(|e| err(SourceErrorKind::Other, format!("HTTP client: {e}")))?;
        let auth = creds.and_then(|c| {
            Some((
                c.get_str("username")?.to_string(),
                c.get_str("password").unwrap_or("").to_string(),
            ))
        });
        Ok(Http {
            client,
            auth,
            client_cert: secret.client_cert.is_some(),
        })
    }

    fn get(&self, url: &str) -> reqwest::blocking::RequestBuilder {
        let rb = self.client.get(url);
        match &self.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }
}

fn status_error(url: &str, status: reqwest::StatusCode) -> SourceError {
    let kind = match status.as_u16() {
        401 | 403 => SourceErrorKind::Auth,
        404 => SourceErrorKind::NotFound,
        _ => SourceErrorKind::Unreachable,
    };
    err(kind, format!("failed to fetch {url}: {status}"))
}

fn request_error(url: &str, e: reqwest::Error, client_cert: bool) -> SourceError {
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let m = s.to_string();
        if !detail.contains(&m) {
            detail.push_str(": ");
            detail.push_str(&m);
        }
        src = s.source();
    }
    if let Some(hint) = crate::tls::handshake_hint(&detail, client_cert) {
        return err(
            SourceErrorKind::Auth,
            format!("failed to fetch {url}: TLS handshake failed: {hint}: {detail}"),
        );
    }
    let kind = if e.is_timeout() {
        SourceErrorKind::Timeout
    } else {
        SourceErrorKind::Unreachable
    };
    err(kind, format!("failed to fetch {url}: {detail}"))
}

/// `index.yaml` next to the repository URL.
fn index_url(repo: &str) -> String {
    format!("{}/index.yaml", repo.trim_end_matches('/'))
}

/// Picks the version: Helm's constraint syntax; no constraint (or `*`) means
/// the highest stable version.
pub fn select_version<'a>(
    entries: &'a [ChartVersion],
    constraint: Option<&str>,
) -> Result<&'a ChartVersion, String> {
    let c = constraint
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or("*");
    // An exact version that exists wins even if it is not semver.
    if let Some(e) = entries.iter().find(|e| e.version == c) {
        return Ok(e);
    }
    let cons = Constraint::parse(c).map_err(|e| e.to_string())?;
    let mut best: Option<(&ChartVersion, semver::Version)> = None;
    for e in entries {
        let Some(v) = parse_version(&e.version) else {
            continue;
        };
        if !cons.matches(&v) {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(_, b)| v.cmp_precedence(b) == std::cmp::Ordering::Greater)
        {
            best = Some((e, v));
        }
    }
    best.map(|(e, _)| e)
        .ok_or_else(|| format!("no chart version found for {c}"))
}

/// Resolves a chart URL from the index against the repository URL.
fn chart_url(repo: &str, url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!(
            "{}/{}",
            repo.trim_end_matches('/'),
            url.trim_start_matches('/')
        )
    }
}

impl HelmSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry client for a `type: oci` HelmRepository: `secretRef` (a dockerconfigjson
    /// Secret, or `username`/`password` keys), `certSecretRef`'s TLS keys, `insecure`.
    fn oci_client(
        &self,
        repo: &HelmRepositorySpec,
        creds: Option<&Credentials>,
        timeout: Duration,
        max_blob_bytes: u64,
    ) -> Result<crate::oci::OciClient, SourceError> {
        if let Some(p) = repo
            .provider
            .as_deref()
            .filter(|p| !p.is_empty() && *p != "generic")
        {
            return Err(err(
                SourceErrorKind::InvalidSpec,
                format!("provider '{p}' is not supported yet: use 'generic' with a secretRef"),
            ));
        }
        let auths = crate::oci::RegistryAuths::from_credentials(creds)?;
        let tls = tls_secret(repo, creds)?;
        let opts = crate::oci::OciClientOptions {
            insecure: repo.insecure,
            ca_pem: tls.ca_pem,
            client_cert: tls.client_cert,
            timeout,
            auths,
            max_blob_bytes,
            ..Default::default()
        };
        Ok(crate::oci::OciClient::new(opts)?.with_token_cache(self.tokens.clone()))
    }

    async fn oci_resolve(
        &self,
        req: &SourceRequest<'_, HelmChartSource>,
    ) -> Result<FetchedRevision, SourceError> {
        let client = self.oci_client(
            &req.spec.repository,
            req.credentials,
            req.timeout,
            trueup_core::storage::Limits::default().max_archive_bytes,
        )?;
        let url = oci_chart_url(req.spec)?;
        let v = client
            .resolve_chart_version(&url, req.spec.chart.version.as_deref())
            .await?;
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("chart".into(), req.spec.chart.chart.clone());
        metadata.insert(crate::oci::META_DIGEST.into(), v.digest);
        metadata.insert("oci.tag".into(), v.tag);
        Ok(FetchedRevision {
            revision: v.version,
            metadata,
        })
    }

    async fn oci_fetch(
        &self,
        req: &SourceRequest<'_, HelmChartSource>,
        revision: &FetchedRevision,
        dir: &Path,
    ) -> Result<FetchedRevision, SourceError> {
        let client = self.oci_client(
            &req.spec.repository,
            req.credentials,
            req.timeout,
            trueup_core::storage::Limits::default().max_archive_bytes,
        )?;
        let url = oci_chart_url(req.spec)?;
        let known = (
            revision.metadata.get(crate::oci::META_DIGEST),
            revision.metadata.get("oci.tag"),
        );
        let version = match known {
            (Some(d), Some(t)) => crate::oci::ChartVersion {
                version: revision.revision.clone(),
                tag: t.clone(),
                digest: d.clone(),
            },
            _ => {
                client
                    .resolve_chart_version(&url, Some(&revision.revision))
                    .await?
            }
        };
        let chart = client.pull_chart(&url, version).await?;
        let name = req.spec.chart.chart.rsplit('/').next().unwrap_or("chart");
        let file = dir.join(format!("{name}-{}.tgz", chart.version.version));
        std::fs::write(&file, &chart.tgz).map_err(|e| {
            err(
                SourceErrorKind::Other,
                format!("writing {}: {e}", file.display()),
            )
        })?;
        let mut out = revision.clone();
        out.metadata
            .insert(crate::oci::META_DIGEST.into(), chart.version.digest);
        Ok(out)
    }

    /// The entries of `chart` in the repository's index, through the ETag cache.
    fn entries(
        &self,
        http: &Http,
        repo: &str,
        chart: &str,
    ) -> Result<Arc<Vec<ChartVersion>>, SourceError> {
        let url = index_url(repo);
        let key = (url.clone(), chart.to_string());
        let cached = self.cache.lock().ok().and_then(|c| c.get(&key).cloned());
        let mut rb = http.get(&url);
        if let Some(c) = &cached {
            rb = rb.header(reqwest::header::IF_NONE_MATCH, c.etag.clone());
        }
        let resp = rb
            .send()
            .map_err(|e| request_error(&url, e, http.client_cert))?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            if let Some(c) = cached {
                return Ok(c.entries);
            }
        }
        if !resp.status().is_success() {
            return Err(status_error(&url, resp.status()));
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // The body is streamed through the scanner, never held whole.
        let reader = std::io::BufReader::with_capacity(64 * 1024, resp);
        let entries = Arc::new(
            index::read_chart_entries(reader, chart)
                .map_err(|e| err(SourceErrorKind::Other, format!("{url}: {e}")))?,
        );
        if let (Some(etag), Ok(mut c)) = (etag, self.cache.lock()) {
            c.insert(
                key,
                CachedIndex {
                    etag,
                    entries: entries.clone(),
                },
            );
        }
        Ok(entries)
    }

    fn resolve_blocking(
        &self,
        spec: &HelmChartSource,
        creds: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<(ChartVersion, Http), SourceError> {
        let http = Http::new(&spec.repository, creds, timeout)?;
        let repo = &spec.repository.url;
        let chart = &spec.chart.chart;
        let entries = self.entries(&http, repo, chart)?;
        if entries.is_empty() {
            return Err(err(
                SourceErrorKind::NotFound,
                format!("chart {chart:?} not found in {repo}"),
            ));
        }
        let v = select_version(&entries, spec.chart.version.as_deref()).map_err(|m| {
            err(
                SourceErrorKind::NotFound,
                format!("chart {chart:?} in {repo}: {m}"),
            )
        })?;
        Ok((v.clone(), http))
    }
}

/// Downloads the archive of an index entry: credentials go to the repository's own host only,
/// unless `passCredentials` lets them follow the index to another one (as Helm and Flux do);
/// at most `max_bytes`; checked against the index's sha256 digest when it has one.
fn download(
    http: &Http,
    repository: &HelmRepositorySpec,
    v: &ChartVersion,
    max_bytes: u64,
) -> Result<Vec<u8>, SourceError> {
    use std::io::Read;
    let Some(url) = v.urls.first() else {
        return Err(err(
            SourceErrorKind::Other,
            format!("chart {} {} has no URL in the index", v.name, v.version),
        ));
    };
    let url = chart_url(&repository.url, url);
    let host = |u: &str| {
        u.split_once("://")
            .map(|(_, r)| r.split('/').next().unwrap_or("").to_ascii_lowercase())
    };
    let rb = if repository.pass_credentials || host(&url) == host(&repository.url) {
        http.get(&url)
    } else {
        http.client.get(&url)
    };
    let resp = rb
        .send()
        .map_err(|e| request_error(&url, e, http.client_cert))?;
    if !resp.status().is_success() {
        return Err(status_error(&url, resp.status()));
    }
    let too_big = || {
        err(
            SourceErrorKind::Other,
            format!(
                "chart {} {} from {url}: larger than the limit of {max_bytes} bytes",
                v.name, v.version
            ),
        )
    };
    if resp.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    resp.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| {
            err(
                SourceErrorKind::Unreachable,
                format!("failed to fetch {url}: {e}"),
            )
        })?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big());
    }
    if let Some(want) = v.digest.as_deref().filter(|d| !d.is_empty()) {
        let got = hex::encode(sha2::Sha256::digest(&bytes));
        let want = want.trim_start_matches("sha256:");
        if !got.eq_ignore_ascii_case(want) {
            return Err(err(
                SourceErrorKind::Other,
                format!(
                    "chart {} {} from {url}: digest mismatch: index says sha256:{want}, got sha256:{got}",
                    v.name, v.version
                ),
            ));
        }
    }
    Ok(bytes)
}

#[async_trait]
impl ChartDependencyFetcher for HelmSource {
    /// A dependency of a chart from a source tree: from an HTTP repository's index (Helm's
    /// constraint syntax, digest-checked download) or from an OCI registry (`<repository>/<chart>`,
    /// tags with `+` as `_`), with the matching HelmRepository's credentials and TLS settings.
    async fn fetch_dependency(
        &self,
        req: &ChartDependencyRequest<'_>,
    ) -> Result<FetchedChart, SourceError> {
        let redact = |mut e: SourceError| {
            if let Some(c) = req.credentials {
                e.message = c.redact(&e.message);
            }
            e
        };
        let mut repository = req.repository_spec.clone();
        repository.url = req.repository.trim().to_string();
        let chart = req.chart.trim();
        if chart.is_empty() || chart.contains(['/', '\\', '@', ':']) || chart.contains("..") {
            return Err(err(
                SourceErrorKind::InvalidSpec,
                format!("invalid chart name '{}'", req.chart),
            ));
        }
        let version = Some(req.version.trim()).filter(|v| !v.is_empty());
        if repository.url.starts_with("oci://") {
            repository.repo_type = Some("oci".into());
            let client = self
                .oci_client(&repository, req.credentials, req.timeout, req.max_bytes)
                .map_err(redact)?;
            let url = format!("{}/{chart}", repository.url.trim_end_matches('/'));
            let v = client
                .resolve_chart_version(&url, version)
                .await
                .map_err(redact)?;
            let pulled = client.pull_chart(&url, v).await.map_err(redact)?;
            return Ok(FetchedChart {
                version: pulled.version.version,
                tgz: pulled.tgz,
            });
        }
        let this = self.clone();
        let creds = req.credentials.cloned();
        let (timeout, max_bytes) = (req.timeout, req.max_bytes);
        let (chart, version) = (chart.to_string(), version.map(str::to_string));
        tokio::task::spawn_blocking(move || -> Result<FetchedChart, SourceError> {
            let http = Http::new(&repository, creds.as_ref(), timeout)?;
            let entries = this.entries(&http, &repository.url, &chart)?;
            if entries.is_empty() {
                return Err(err(
                    SourceErrorKind::NotFound,
                    format!("chart {chart:?} not found in {}", repository.url),
                ));
            }
            let v = select_version(&entries, version.as_deref()).map_err(|m| {
                err(
                    SourceErrorKind::NotFound,
                    format!("chart {chart:?} in {}: {m}", repository.url),
                )
            })?;
            let tgz = download(&http, &repository, v, max_bytes)?;
            Ok(FetchedChart {
                version: v.version.clone(),
                tgz,
            })
        })
        .await
        .map_err(|e| err(SourceErrorKind::Other, format!("fetch task failed: {e}")))?
        .map_err(redact)
    }
}

fn revision_of(v: &ChartVersion) -> FetchedRevision {
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("chart".into(), v.name.clone());
    if let Some(d) = &v.digest {
        metadata.insert("digest".into(), d.clone());
    }
    if let Some(a) = &v.app_version {
        metadata.insert("appVersion".into(), a.clone());
    }
    FetchedRevision {
        revision: v.version.clone(),
        metadata,
    }
}

#[async_trait]
impl Source for HelmSource {
    type Spec = HelmChartSource;

    async fn resolve(
        &self,
        req: &SourceRequest<'_, HelmChartSource>,
    ) -> Result<FetchedRevision, SourceError> {
        if is_oci(&req.spec.repository)? {
            return self.oci_resolve(req).await.map_err(|mut e| {
                if let Some(c) = req.credentials {
                    e.message = c.redact(&e.message);
                }
                e
            });
        }
        let this = self.clone();
        let spec = req.spec.clone();
        let creds = req.credentials.cloned();
        let timeout = req.timeout;
        let (v, _) = tokio::task::spawn_blocking(move || {
            this.resolve_blocking(&spec, creds.as_ref(), timeout)
        })
        .await
        .map_err(|e| err(SourceErrorKind::Other, format!("resolve task failed: {e}")))??;
        Ok(revision_of(&v))
    }

    async fn fetch(
        &self,
        req: &SourceRequest<'_, HelmChartSource>,
        revision: &FetchedRevision,
        dir: &Path,
    ) -> Result<FetchedRevision, SourceError> {
        if is_oci(&req.spec.repository)? {
            return self.oci_fetch(req, revision, dir).await.map_err(|mut e| {
                if let Some(c) = req.credentials {
                    e.message = c.redact(&e.message);
                }
                e
            });
        }
        let this = self.clone();
        let mut spec = req.spec.clone();
        // Fetch exactly the resolved version.
        spec.chart.version = Some(revision.revision.clone());
        let creds = req.credentials.cloned();
        let timeout = req.timeout;
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<FetchedRevision, SourceError> {
            let (v, http) = this.resolve_blocking(&spec, creds.as_ref(), timeout)?;
            let bytes = download(
                &http,
                &spec.repository,
                &v,
                trueup_core::storage::Limits::default().max_archive_bytes,
            )?;
            let file = dir.join(format!("{}-{}.tgz", v.name, v.version));
            std::fs::write(&file, &bytes).map_err(|e| {
                err(
                    SourceErrorKind::Other,
                    format!("writing {}: {e}", file.display()),
                )
            })?;
            Ok(revision_of(&v))
        })
        .await
        .map_err(|e| err(SourceErrorKind::Other, format!("fetch task failed: {e}")))?
    }
}
