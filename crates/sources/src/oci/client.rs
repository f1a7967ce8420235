//! A client for the OCI distribution API: manifests, blobs, tags, uploads, with basic and
//! Bearer-token authentication, redirects, rate-limit backoff and digest verification.
//!
//! Every error names the repository URL (never credentials) and the ref it was about.

use super::auth::{parse_challenge, BasicAuth, Challenge, RegistryAuths};
use super::manifest::{self, Descriptor, Document, Manifest};
use super::reference::Reference;
use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trueup_core::traits::source::{SourceError, SourceErrorKind};

/// Largest manifest accepted: manifests are small JSON documents; a huge one is an attack or a
/// mistake, and is read into memory.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest tag-list page or token response accepted.
const MAX_JSON_BYTES: u64 = 16 << 20;
/// Redirect hops followed for one request.
const MAX_REDIRECTS: usize = 5;
/// Tag-list pages followed (at 1000 tags each, far beyond any real repository).
const MAX_TAG_PAGES: usize = 1000;

/// How an [`OciClient`] connects.
#[derive(Clone, Debug)]
pub struct OciClientOptions {
    /// Plain HTTP instead of HTTPS (`spec.insecure`).
    pub insecure: bool,
    /// Extra PEM roots (`certSecretRef`'s `ca.crt`).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate for registries that require one (`certSecretRef`'s `tls.crt` and
    /// `tls.key`).
    pub client_cert: Option<crate::tls::ClientCert>,
    /// Per request, body included.
    pub timeout: Duration,
    pub auths: RegistryAuths,
    /// Largest blob downloaded.
    pub max_blob_bytes: u64,
    /// Retries after `429 Too Many Requests` (and 502/503/504) before giving up.
    pub max_retries: u32,
    /// Longest wait between two retries, whatever `Retry-After` asks for.
    pub max_retry_wait: Duration,
    /// Tags asked for per page of the tag list (`n`); the registry may send fewer.
    pub tag_page_size: u32,
}

impl Default for OciClientOptions {
    fn default() -> Self {
        OciClientOptions {
            insecure: false,
            ca_pem: None,
            client_cert: None,
            timeout: Duration::from_secs(60),
            auths: RegistryAuths::default(),
            max_blob_bytes: trueup_core::storage::Limits::default().max_archive_bytes,
            max_retries: 3,
            max_retry_wait: Duration::from_secs(10),
            tag_page_size: 1000,
        }
    }
}

/// A manifest as read from the registry, with the digest of its exact bytes.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub digest: String,
    pub media_type: String,
    pub raw: Bytes,
    pub document: Document,
}

/// The client. Cheap to clone; clones share the HTTP connection pool and the token cache.
#[derive(Clone)]
pub struct OciClient {
    http: reqwest::Client,
    opts: Arc<OciClientOptions>,
    tokens: TokenCache,
}

/// Bearer tokens by registry, repository and a fingerprint of the credentials they were issued
/// for, so that the next request to the same repository goes straight through (the
/// unchanged-tag check stays one request once warmed up). Share one between clients with
/// [`OciClient::with_token_cache`]. An expired token costs one extra 401 and a new token.
#[derive(Clone, Default)]
pub struct TokenCache(Arc<Mutex<HashMap<String, String>>>);

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache")
    }
}

impl std::fmt::Debug for OciClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciClient")
            .field("insecure", &self.opts.insecure)
            .field("auths", &self.opts.auths)
            .field("client_cert", &self.opts.client_cert.is_some())
            .finish()
    }
}

/// What a request is about, for messages: the operation and the ref.
struct Ctx<'a> {
    op: &'a str,
    r: &'a Reference,
    /// What is missing on a 404 ("tag 'v1'", "blob 'sha256:…'").
    thing: String,
}

impl Ctx<'_> {
    fn err(&self, kind: SourceErrorKind, detail: impl std::fmt::Display) -> SourceError {
        SourceError::new(
            kind,
            format!("{} '{}': {detail}", self.op, self.r.repo_url()),
        )
    }
}

/// The registry's JSON error body, `{"errors":[{"code":..,"message":..}]}`, summarised.
fn registry_errors(body: &[u8]) -> (Vec<String>, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (Vec::new(), String::new());
    };
    let mut codes = Vec::new();
    let mut msgs = Vec::new();
    for e in v
        .get("errors")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
    {
        let code = e.get("code").and_then(|c| c.as_str()).unwrap_or_default();
        let msg = e
            .get("message")
            .and_then(|c| c.as_str())
            .unwrap_or_default();
        codes.push(code.to_string());
        // Bounded: this text comes from the remote side and ends up in a status condition.
        msgs.push(
            format!("{code}: {msg}")
                .chars()
                .take(200)
                .collect::<String>(),
        );
    }
    (codes, msgs.join("; "))
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `Retry-After` in seconds (the HTTP-date form falls back to our own backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl OciClient {
    pub fn new(opts: OciClientOptions) -> Result<OciClient, SourceError> {
        let mut builder = reqwest::Client::builder()
            // Redirects are followed by hand: credentials must not follow a redirect to blob
            // storage on another host, and the hop count is ours to bound.
            .redirect(reqwest::redirect::Policy::none())
            // The spec and its Secret are the whole input: no proxy from the environment.
            .no_proxy()
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .timeout(opts.timeout)
            .user_agent(concat!("trueup/", env!("CARGO_PKG_VERSION")));
        // Always our TLS config: without one reqwest would look for a process-wide rustls
        // provider (and panic when there is none), even for plain HTTP.
        builder = builder.tls_backend_preconfigured(crate::tls::client_config(
            opts.ca_pem.as_deref(),
            None,
            opts.client_cert.as_ref(),
        )?);
        if !opts.insecure {
            builder = builder.https_only(true);
        }
        let http = builder.build().map_err(|e| {
            SourceError::new(
                SourceErrorKind::Other,
                format!("HTTP client setup failed: {e}"),
            )
        })?;
        Ok(OciClient {
            http,
            opts: Arc::new(opts),
            tokens: TokenCache::default(),
        })
    }

    /// Shares a token cache with other clients (a source keeps one across reconciles).
    pub fn with_token_cache(mut self, cache: TokenCache) -> Self {
        self.tokens = cache;
        self
    }

    pub fn options(&self) -> &OciClientOptions {
        &self.opts
    }

    fn base(&self, r: &Reference) -> String {
        let scheme = if self.opts.insecure { "http" } else { "https" };
        format!("{scheme}://{}", r.api_host())
    }

    fn url(&self, r: &Reference, ctx: &Ctx<'_>, path: &str) -> Result<Url, SourceError> {
        Url::parse(&format!("{}/v2/{}/{path}", self.base(r), r.repository))
            .map_err(|e| ctx.err(SourceErrorKind::InvalidSpec, format!("invalid URL: {e}")))
    }

    fn token_key(&self, r: &Reference) -> String {
        // A hash, not the credentials: the key must tell users apart without holding secrets.
        let who = self
            .opts
            .auths
            .for_registry(&r.registry)
            .map(|c| hex::encode(&Sha256::digest(format!("{}\0{}", c.username, c.password))[..8]))
            .unwrap_or_default();
        format!("{}|{}|{who}", r.registry, r.repository)
    }

    fn cached_token(&self, r: &Reference) -> Option<String> {
        self.tokens
            .0
            .lock()
            .ok()
            .and_then(|t| t.get(&self.token_key(r)).cloned())
    }

    /// Sends one request with authentication, redirects and retries. Returns any response
    /// that is not a 401 the client could answer, a redirect, or a retried 429/503.
    async fn send(
        &self,
        ctx: &Ctx<'_>,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, SourceError> {
        let r = ctx.r;
        let origin = Url::parse(&self.base(r)).map_err(|e| {
            ctx.err(
                SourceErrorKind::InvalidSpec,
                format!("invalid registry URL: {e}"),
            )
        })?;
        let creds = self.opts.auths.for_registry(&r.registry);
        // Basic credentials go with the first request (as Flux and docker do), so that a
        // registry with basic auth answers the unchanged-tag check in one round trip.
        let mut bearer = self.cached_token(r);
        let mut send_basic = creds.is_some() && bearer.is_none();
        let mut tried_token_for: Option<String> = None;
        let mut tried_basic = false;
        let mut retries = 0u32;
        let mut hops = 0usize;
        let mut url = url;
        let mut method = method;
        let mut body = body;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            // Credentials only ever go to the registry's own origin: a redirect to blob storage
            // (S3, a CDN) carries its own signed query instead.
            if same_origin(&url, &origin) {
                if let Some(token) = &bearer {
                    req = req.bearer_auth(token);
                } else if let (true, Some(c)) = (send_basic, creds) {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            tracing::debug!(method = %method, url = %url, "oci request");
            let resp = req
                .send()
                .await
                .map_err(|e| self.transport_error(ctx, &e))?;
            let status = resp.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let Some(loc) = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                else {
                    return Err(ctx.err(
                        SourceErrorKind::Other,
                        format!("redirect {status} without a Location header"),
                    ));
                };
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(ctx.err(SourceErrorKind::Other, "too many redirects"));
                }
                url = url.join(loc).map_err(|_| {
                    ctx.err(SourceErrorKind::Other, "redirect to an invalid Location")
                })?;
                if url.scheme() != "https" && !self.opts.insecure {
                    return Err(ctx.err(
                        SourceErrorKind::Other,
                        "refusing a redirect from HTTPS to plain HTTP",
                    ));
                }
                // 303 turns anything into a GET; 301/302 do so for POST by convention.
                if status == StatusCode::SEE_OTHER
                    || ((status == StatusCode::MOVED_PERMANENTLY || status == StatusCode::FOUND)
                        && method == Method::POST)
                {
                    method = Method::GET;
                    body = None;
                }
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && same_origin(&url, &origin) {
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .map(parse_challenge);
                match challenge {
                    Some(Challenge::Bearer {
                        realm,
                        service,
                        scope,
                    }) if tried_token_for.as_ref() != Some(&format!("{scope:?}")) => {
                        tried_token_for = Some(format!("{scope:?}"));
                        let token = self
                            .fetch_token(ctx, &realm, service.as_deref(), scope.as_deref(), creds)
                            .await?;
                        if let Ok(mut t) = self.tokens.0.lock() {
                            t.insert(self.token_key(r), token.clone());
                        }
                        bearer = Some(token);
                        continue;
                    }
                    Some(Challenge::Basic) if creds.is_some() && !send_basic && !tried_basic => {
                        tried_basic = true;
                        send_basic = true;
                        bearer = None;
                        continue;
                    }
                    _ => return Ok(resp),
                }
            }
            let transient = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::BAD_GATEWAY
                || status == StatusCode::GATEWAY_TIMEOUT;
            if transient && retries < self.opts.max_retries {
                // Honour Retry-After, else back off exponentially from 500ms; both bounded so
                // that a hostile registry cannot park a reconcile.
                let wait = retry_after(resp.headers())
                    .unwrap_or(Duration::from_millis(500) * 2u32.pow(retries))
                    .min(self.opts.max_retry_wait);
                retries += 1;
                tracing::debug!(status = %status, wait = ?wait, "oci registry asked to retry");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(resp);
        }
    }

    fn transport_error(&self, ctx: &Ctx<'_>, e: &reqwest::Error) -> SourceError {
        // reqwest's messages quote the URL, which never carries credentials here (they go in
        // headers), but the error chain is spelled out for a useful message.
        let mut detail = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            src = s.source();
        }
        if let Some(hint) = crate::tls::handshake_hint(&detail, self.opts.client_cert.is_some()) {
            // A client certificate missing or refused: retrying will not help until the Secret
            // changes.
            return ctx.err(
                SourceErrorKind::Auth,
                format!(
                    "TLS handshake failed: {hint}: {}",
                    crate::git::display_url(&detail)
                ),
            );
        }
        let kind = if e.is_timeout() {
            SourceErrorKind::Timeout
        } else if e.is_connect() {
            SourceErrorKind::Unreachable
        } else {
            SourceErrorKind::Other
        };
        ctx.err(kind, crate::git::display_url(&detail))
    }

    /// The token endpoint of the Bearer flow: GET `realm?service=..&scope=..`, with basic
    /// credentials when there are any (anonymous tokens otherwise).
    async fn fetch_token(
        &self,
        ctx: &Ctx<'_>,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        creds: Option<&BasicAuth>,
    ) -> Result<String, SourceError> {
        let mut url = Url::parse(realm).map_err(|_| {
            ctx.err(
                SourceErrorKind::Auth,
                "the registry's token realm is not a valid URL",
            )
        })?;
        if url.scheme() != "https" && !self.opts.insecure {
            return Err(ctx.err(
                SourceErrorKind::Auth,
                format!(
                    "refusing a plain-HTTP token realm '{}'",
                    url.origin().ascii_serialization()
                ),
            ));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = scope {
                q.append_pair("scope", s);
            }
        }
        let mut req = self.http.get(url.clone());
        if let Some(c) = creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(ctx, &e))?;
        let status = resp.status();
        let body = read_limited(resp, MAX_JSON_BYTES)
            .await
            .map_err(|e| ctx.err(SourceErrorKind::Other, format!("reading token: {e}")))?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ctx.err(
                SourceErrorKind::Auth,
                format!(
                    "authentication failed: the token service '{}' answered {status}{}",
                    url.origin().ascii_serialization(),
                    if creds.is_none() {
                        " (no credentials configured)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if !status.is_success() {
            return Err(ctx.err(
                SourceErrorKind::Auth,
                format!(
                    "the token service '{}' answered {status}",
                    url.origin().ascii_serialization()
                ),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| ctx.err(SourceErrorKind::Auth, "the token service sent invalid JSON"))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty() && !t.contains(['\r', '\n']))
            .map(str::to_string)
            .ok_or_else(|| ctx.err(SourceErrorKind::Auth, "the token service sent no token"))
    }

    /// Turns a non-success response into an error with the right kind.
    async fn status_error(&self, ctx: &Ctx<'_>, resp: reqwest::Response) -> SourceError {
        let status = resp.status();
        let body = read_limited(resp, 64 << 10).await.unwrap_or_default();
        let (codes, detail) = registry_errors(&body);
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        let has = |c: &str| codes.iter().any(|x| x == c);
        match status {
            StatusCode::UNAUTHORIZED => ctx.err(
                SourceErrorKind::Auth,
                format!(
                    "{}: authentication failed (401 Unauthorized{}){detail}",
                    ctx.thing,
                    if self.opts.auths.for_registry(&ctx.r.registry).is_none() {
                        ", no credentials configured for this registry"
                    } else {
                        ", check the credentials"
                    }
                ),
            ),
            StatusCode::FORBIDDEN => ctx.err(
                SourceErrorKind::Auth,
                format!("{}: access denied (403 Forbidden){detail}", ctx.thing),
            ),
            StatusCode::NOT_FOUND if has("NAME_UNKNOWN") => ctx.err(
                SourceErrorKind::NotFound,
                format!("repository not found, looking for {}", ctx.thing),
            ),
            StatusCode::NOT_FOUND => ctx.err(
                SourceErrorKind::NotFound,
                format!("{} not found{detail}", ctx.thing),
            ),
            StatusCode::TOO_MANY_REQUESTS => ctx.err(
                SourceErrorKind::Unreachable,
                format!(
                    "{}: rate limited (429 Too Many Requests) after {} retries{detail}",
                    ctx.thing, self.opts.max_retries
                ),
            ),
            s if s.is_server_error() => ctx.err(
                SourceErrorKind::Unreachable,
                format!("{}: registry error {s}{detail}", ctx.thing),
            ),
            s => ctx.err(
                SourceErrorKind::Other,
                format!("{}: unexpected status {s}{detail}", ctx.thing),
            ),
        }
    }

    fn manifest_ctx<'a>(op: &'a str, r: &'a Reference) -> Ctx<'a> {
        let thing = match (&r.digest, &r.tag) {
            (Some(d), _) => format!("digest '{d}'"),
            (None, Some(t)) => format!("tag '{t}'"),
            (None, None) => "tag 'latest'".to_string(),
        };
        Ctx { op, r, thing }
    }

    fn manifest_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(manifest::MANIFEST_ACCEPT),
        );
        h
    }

    /// The digest the ref (tag or digest) points at, from a HEAD request's
    /// `Docker-Content-Digest`: the cheap check for a changed tag. Falls back to a GET (and
    /// hashing) when the registry does not send the header.
    pub async fn head_manifest(&self, r: &Reference) -> Result<String, SourceError> {
        let ctx = Self::manifest_ctx("failed to resolve", r);
        let url = self.url(r, &ctx, &format!("manifests/{}", r.manifest_ref()))?;
        let resp = self
            .send(&ctx, Method::HEAD, url, Self::manifest_headers(), None)
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&ctx, resp).await);
        }
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .filter(|d| manifest::is_sha256_digest(d))
            .map(str::to_string);
        match header_digest {
            Some(d) => Ok(d),
            None => Ok(self.get_manifest(r).await?.digest),
        }
    }

    /// The manifest (or index) the ref points at, verified: by digest, its bytes must hash to
    /// the digest; by tag, to the `Docker-Content-Digest` the registry announced.
    pub async fn get_manifest(&self, r: &Reference) -> Result<FetchedManifest, SourceError> {
        let ctx = Self::manifest_ctx("failed to get manifest", r);
        let url = self.url(r, &ctx, &format!("manifests/{}", r.manifest_ref()))?;
        let resp = self
            .send(&ctx, Method::GET, url, Self::manifest_headers(), None)
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&ctx, resp).await);
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .map(str::to_string);
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .map(str::to_string);
        let raw = read_limited(resp, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| ctx.err(SourceErrorKind::Other, e))?;
        let digest = sha256_digest(&raw);
        let expected = r
            .digest
            .clone()
            .or(announced.filter(|d| d.starts_with("sha256:")));
        if let Some(expected) = expected {
            if expected != digest {
                return Err(ctx.err(
                    SourceErrorKind::Other,
                    format!(
                        "digest mismatch for manifest {}: expected {expected}, got {digest}",
                        ctx.thing
                    ),
                ));
            }
        }
        let document = manifest::parse_document(content_type.as_deref(), &raw)
            .map_err(|e| ctx.err(SourceErrorKind::Other, format!("{}: {e}", ctx.thing)))?;
        let media_type = match &document {
            Document::Manifest(m) => m.media_type.clone(),
            Document::Index(i) => i.media_type.clone(),
        }
        .or(content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_string()))
        .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string());
        Ok(FetchedManifest {
            digest,
            media_type,
            raw: Bytes::from(raw),
            document,
        })
    }

    /// The image manifest the ref points at: an index is resolved to its linux/amd64 (or only)
    /// manifest. Returns the top-level digest (what tags point at) and the manifest.
    pub async fn resolve_image(
        &self,
        r: &Reference,
    ) -> Result<(String, FetchedManifest, Manifest), SourceError> {
        let top = self.get_manifest(r).await?;
        match top.document.clone() {
            Document::Manifest(m) => Ok((top.digest.clone(), top, m)),
            Document::Index(idx) => {
                let Some(d) = manifest::pick_from_index(&idx) else {
                    let ctx = Self::manifest_ctx("failed to get manifest", r);
                    return Err(ctx.err(
                        SourceErrorKind::NotFound,
                        format!(
                            "the image index of {} has no linux/amd64 manifest and more than one other",
                            ctx.thing
                        ),
                    ));
                };
                let child = r.with_digest(&d.digest);
                let fetched = self.get_manifest(&child).await?;
                match fetched.document.clone() {
                    Document::Manifest(m) => Ok((top.digest, fetched, m)),
                    Document::Index(_) => {
                        let ctx = Self::manifest_ctx("failed to get manifest", r);
                        Err(ctx.err(
                            SourceErrorKind::Other,
                            "nested image indexes are not supported",
                        ))
                    }
                }
            }
        }
    }

    /// Streams a blob into `out`, verifying its size and sha256 digest as it goes. Nothing is
    /// trusted before the digest matched: callers write to a temporary place.
    pub async fn download_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        out: &mut (dyn Write + Send),
    ) -> Result<u64, SourceError> {
        let ctx = Ctx {
            op: "failed to download blob from",
            r,
            thing: format!("blob '{}'", desc.digest),
        };
        if !manifest::is_sha256_digest(&desc.digest) {
            return Err(ctx.err(
                SourceErrorKind::Other,
                format!("unsupported or invalid layer digest '{}'", desc.digest),
            ));
        }
        let limit = self.opts.max_blob_bytes;
        if desc.size < 0 || desc.size as u64 > limit {
            return Err(ctx.err(
                SourceErrorKind::Other,
                format!(
                    "{} has size {} which exceeds the limit of {limit} bytes",
                    ctx.thing, desc.size
                ),
            ));
        }
        let expected_size = desc.size as u64;
        let url = self.url(r, &ctx, &format!("blobs/{}", desc.digest))?;
        let mut resp = self
            .send(&ctx, Method::GET, url, HeaderMap::new(), None)
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&ctx, resp).await);
        }
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(&ctx, &e))?
        {
            total += chunk.len() as u64;
            if total > expected_size {
                return Err(ctx.err(
                    SourceErrorKind::Other,
                    format!(
                        "{} is larger than its declared size of {expected_size} bytes",
                        ctx.thing
                    ),
                ));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .map_err(|e| ctx.err(SourceErrorKind::Other, format!("writing blob: {e}")))?;
        }
        if total != expected_size {
            return Err(ctx.err(
                SourceErrorKind::Other,
                format!(
                    "{} is truncated: got {total} of {expected_size} bytes",
                    ctx.thing
                ),
            ));
        }
        let found = format!("sha256:{}", hex::encode(hasher.finalize()));
        if found != desc.digest {
            return Err(ctx.err(
                SourceErrorKind::Other,
                format!(
                    "digest mismatch for {}: the content hashes to {found}",
                    ctx.thing
                ),
            ));
        }
        Ok(total)
    }

    /// Downloads a blob into memory (verified as by [`OciClient::download_blob`]).
    pub async fn get_blob(&self, r: &Reference, desc: &Descriptor) -> Result<Vec<u8>, SourceError> {
        let mut buf = Vec::new();
        self.download_blob(r, desc, &mut buf).await?;
        Ok(buf)
    }

    /// Every tag of the repository, following `Link: <…>; rel="next"` pagination.
    pub async fn tags(&self, r: &Reference) -> Result<Vec<String>, SourceError> {
        let ctx = Ctx {
            op: "failed to list tags of",
            r,
            thing: "the repository".to_string(),
        };
        let mut url = self.url(
            r,
            &ctx,
            &format!("tags/list?n={}", self.opts.tag_page_size.max(1)),
        )?;
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let resp = self
                .send(&ctx, Method::GET, url.clone(), HeaderMap::new(), None)
                .await?;
            if !resp.status().is_success() {
                return Err(self.status_error(&ctx, resp).await);
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(next_link);
            let body = read_limited(resp, MAX_JSON_BYTES)
                .await
                .map_err(|e| ctx.err(SourceErrorKind::Other, e))?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ctx.err(SourceErrorKind::Other, format!("invalid tag list: {e}")))?;
            // `tags` is null for a repository whose tags were all deleted.
            if let Some(page) = v.get("tags").and_then(|t| t.as_array()) {
                tags.extend(page.iter().filter_map(|t| t.as_str()).map(str::to_string));
            }
            match next {
                Some(link) => {
                    let n = url.join(&link).map_err(|_| {
                        ctx.err(SourceErrorKind::Other, "invalid Link header in tag list")
                    })?;
                    if !same_origin(&n, &url) {
                        return Err(ctx.err(
                            SourceErrorKind::Other,
                            "tag list pagination points to another host",
                        ));
                    }
                    if n == url {
                        break;
                    }
                    url = n;
                }
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// Uploads a blob unless the registry already has it: HEAD, then POST (start an upload)
    /// and a monolithic PUT with the digest.
    pub async fn push_blob(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Descriptor, SourceError> {
        let digest = sha256_digest(&bytes);
        let desc = Descriptor {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size: bytes.len() as i64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let ctx = Ctx {
            op: "failed to push blob to",
            r,
            thing: format!("blob '{digest}'"),
        };
        let url = self.url(r, &ctx, &format!("blobs/{digest}"))?;
        let resp = self
            .send(&ctx, Method::HEAD, url, HeaderMap::new(), None)
            .await?;
        if resp.status().is_success() {
            return Ok(desc);
        }
        if resp.status() != StatusCode::NOT_FOUND {
            return Err(self.status_error(&ctx, resp).await);
        }
        let url = self.url(r, &ctx, "blobs/uploads/")?;
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .send(&ctx, Method::POST, url.clone(), h, Some(Bytes::new()))
            .await?;
        if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
            return Err(self.status_error(&ctx, resp).await);
        }
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| ctx.err(SourceErrorKind::Other, "upload started without a Location"))?;
        let mut put = url
            .join(loc)
            .map_err(|_| ctx.err(SourceErrorKind::Other, "upload Location is not a valid URL"))?;
        put.query_pairs_mut().append_pair("digest", &digest);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let resp = self.send(&ctx, Method::PUT, put, h, Some(bytes)).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&ctx, resp).await);
        }
        Ok(desc)
    }

    /// Puts a manifest under `tag` (or its digest when `tag` is `None`); returns its digest.
    pub async fn put_manifest(
        &self,
        r: &Reference,
        tag: Option<&str>,
        media_type: &str,
        raw: Bytes,
    ) -> Result<String, SourceError> {
        let digest = sha256_digest(&raw);
        let target = tag.unwrap_or(&digest).to_string();
        let ctx = Ctx {
            op: "failed to push manifest to",
            r,
            thing: format!("manifest '{target}'"),
        };
        let url = self.url(r, &ctx, &format!("manifests/{target}"))?;
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .map_err(|_| ctx.err(SourceErrorKind::Other, "invalid media type"))?,
        );
        let resp = self.send(&ctx, Method::PUT, url, h, Some(raw)).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&ctx, resp).await);
        }
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
        {
            if d != digest {
                return Err(ctx.err(
                    SourceErrorKind::Other,
                    format!("digest mismatch: pushed {digest}, the registry stored {d}"),
                ));
            }
        }
        Ok(digest)
    }
}

/// The target of `Link: <url>; rel="next"`.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

/// Reads a response body, refusing more than `limit` bytes.
async fn read_limited(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(format!("response larger than the limit of {limit} bytes"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("response larger than the limit of {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn registry_error_body() {
        let (codes, msg) = registry_errors(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
        );
        assert_eq!(codes, vec!["MANIFEST_UNKNOWN"]);
        assert_eq!(msg, "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(registry_errors(b"<html>").0.len(), 0);
    }

    #[test]
    fn origins() {
        let a = Url::parse("http://127.0.0.1:5000/v2/x").unwrap();
        assert!(same_origin(
            &a,
            &Url::parse("http://127.0.0.1:5000/").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &Url::parse("http://localhost:5000/").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &Url::parse("http://127.0.0.1:5001/").unwrap()
        ));
    }
}
