//! Receivers: an HTTP endpoint that turns webhook calls (a push to GitHub, a GitLab event, a
//! signed generic call) into immediate reconciles of the Receiver's `resources`.
//!
//! The server is a small HTTP/1.1 implementation on tokio: one request per connection, a
//! header size limit, a body size limit (413 beyond it), a read timeout, and a cap on
//! concurrent connections. Webhook senders need nothing more, and it keeps the dependency tree
//! (and compile time) at what the crate already uses.

use crate::crypto::{ct_eq, verify_signature_header};
use crate::delivery::lock;
use sha2::Digest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use trueup_core::api::{self, FluxKind, NOTIFICATION_GROUP};
use trueup_core::traits::backend::{Backend, ListParams};
use trueup_core::ObjectRef;

/// The prefix of every Receiver's path.
pub const WEBHOOK_PREFIX: &str = "/hook/";

/// A Receiver's `status.webhookPath`: `/hook/` + hex sha256 of token, name and namespace, in
/// that order (Flux's digest, so existing webhooks keep their URLs).
pub fn webhook_path(token: &str, name: &str, namespace: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{token}{name}{namespace}").as_bytes());
    format!("{WEBHOOK_PREFIX}{}", hex::encode(digest))
}

/// What receives reconcile requests: the lead wires it to `Runtime::request_reconcile`.
pub type ReconcileCallback = Arc<dyn Fn(ObjectRef) + Send + Sync>;

/// Limits of the receiver server.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// Larger bodies get 413 without being read.
    pub max_body: usize,
    /// Larger request heads get 431.
    pub max_header: usize,
    /// A client must send its whole request within this time.
    pub read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long the table of webhook paths (which needs every Receiver's Secret) is reused.
    pub cache_ttl: Duration,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            max_body: 1024 * 1024,
            max_header: 16 * 1024,
            read_timeout: Duration::from_secs(10),
            max_connections: 64,
            cache_ttl: Duration::from_secs(10),
        }
    }
}

/// A parsed HTTP request.
#[derive(Clone, Debug, Default)]
pub struct WebhookRequest {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl WebhookRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The answer to a webhook call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub body: String,
}

impl WebhookResponse {
    fn new(status: u16, body: impl Into<String>) -> Self {
        WebhookResponse {
            status,
            body: body.into(),
        }
    }
}

/// A Receiver with its token, as the path table keeps it.
#[derive(Clone)]
struct Entry {
    path: String,
    receiver: api::Receiver,
    token: String,
}

struct Inner {
    backend: Arc<dyn Backend>,
    on_reconcile: ReconcileCallback,
    options: ReceiverOptions,
    table: Mutex<Option<(Instant, Arc<Vec<Entry>>)>>,
    /// Refreshing the table on an unknown path is rate limited: unknown paths are what
    /// scanners send, and each refresh reads every Receiver's Secret.
    last_miss_refresh: Mutex<Option<Instant>>,
}

/// The webhook endpoint. Cheap to clone.
#[derive(Clone)]
pub struct ReceiverServer {
    inner: Arc<Inner>,
}

/// A running server: its address, and a way to stop it.
pub struct RunningReceiver {
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RunningReceiver {
    /// Stops accepting connections.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl ReceiverServer {
    /// A server reading Receivers and their Secrets from `backend`, calling `on_reconcile` for
    /// each object a valid webhook call asks to reconcile.
    pub fn new(
        backend: Arc<dyn Backend>,
        on_reconcile: impl Fn(ObjectRef) + Send + Sync + 'static,
    ) -> Self {
        Self::with_options(backend, on_reconcile, ReceiverOptions::default())
    }

    pub fn with_options(
        backend: Arc<dyn Backend>,
        on_reconcile: impl Fn(ObjectRef) + Send + Sync + 'static,
        options: ReceiverOptions,
    ) -> Self {
        ReceiverServer {
            inner: Arc::new(Inner {
                backend,
                on_reconcile: Arc::new(on_reconcile),
                options,
                table: Mutex::new(None),
                last_miss_refresh: Mutex::new(None),
            }),
        }
    }

    /// Every Receiver with a readable token and its `status.webhookPath`, read fresh from the
    /// backend (to print URLs or write status).
    pub async fn webhook_paths(&self) -> Result<Vec<(ObjectRef, String)>, String> {
        let table = self.load_table().await?;
        Ok(table
            .iter()
            .map(|e| (e.receiver.object_ref(), e.path.clone()))
            .collect())
    }

    /// Binds `addr` and serves in a background task.
    pub async fn bind(self, addr: SocketAddr) -> std::io::Result<RunningReceiver> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        tracing::info!(%local_addr, "webhook receiver listening");
        let task = tokio::spawn(async move { self.serve(listener).await });
        Ok(RunningReceiver { local_addr, task })
    }

    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        let permits = Arc::new(Semaphore::new(self.inner.options.max_connections.max(1)));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a webhook connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(e) = server.serve_connection(stream).await {
                    tracing::debug!(%peer, error = %e, "webhook connection ended");
                }
                drop(permit);
            });
        }
    }

    async fn serve_connection(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let opts = &self.inner.options;
        let parsed = tokio::time::timeout(opts.read_timeout, read_request(&mut stream, opts)).await;
        let response = match parsed {
            Err(_) => WebhookResponse::new(408, "request timeout"),
            Ok(Err(resp)) => resp,
            Ok(Ok(req)) => self.handle(req).await,
        };
        write_response(&mut stream, &response).await
    }

    /// Handles one request: finds the Receiver by path, checks the call, requests reconciles.
    pub async fn handle(&self, req: WebhookRequest) -> WebhookResponse {
        if !req.path.starts_with(WEBHOOK_PREFIX) {
            return WebhookResponse::new(404, "not found");
        }
        if req.method != "POST" {
            return WebhookResponse::new(405, "method not allowed");
        }
        if req.body.len() > self.inner.options.max_body {
            return WebhookResponse::new(413, "payload too large");
        }
        let entry = match self.lookup(&req.path).await {
            Ok(Some(e)) => e,
            Ok(None) => return WebhookResponse::new(404, "not found"),
            Err(e) => {
                tracing::warn!(error = %e, "reading receivers failed");
                return WebhookResponse::new(500, "internal error");
            }
        };
        let receiver = &entry.receiver;
        let id = format!("{}/{}", receiver.namespace(), receiver.name());
        if receiver.spec.suspend {
            tracing::info!(receiver = %id, "webhook call to a suspended receiver");
            return WebhookResponse::new(503, "receiver is suspended");
        }
        let events = &receiver.spec.events;
        let allowed =
            |event: &str| events.is_empty() || events.iter().any(|e| e.eq_ignore_ascii_case(event));
        match receiver.spec.receiver_type.as_str() {
            "generic" => {}
            "generic-hmac" => {
                let ok = req.header("x-signature").is_some_and(|sig| {
                    verify_signature_header(sig, entry.token.as_bytes(), &req.body)
                });
                if !ok {
                    tracing::warn!(receiver = %id, "webhook call with an invalid X-Signature");
                    return WebhookResponse::new(401, "invalid signature");
                }
            }
            "github" => {
                // Prefer the SHA-256 signature; GitHub still sends the SHA-1 one too.
                let ok = match (
                    req.header("x-hub-signature-256"),
                    req.header("x-hub-signature"),
                ) {
                    (Some(sig), _) => {
                        verify_signature_header(sig, entry.token.as_bytes(), &req.body)
                    }
                    (None, Some(sig)) => {
                        verify_signature_header(sig, entry.token.as_bytes(), &req.body)
                    }
                    (None, None) => false,
                };
                if !ok {
                    tracing::warn!(receiver = %id, "GitHub webhook call with an invalid signature");
                    return WebhookResponse::new(401, "invalid signature");
                }
                let event = req.header("x-github-event").unwrap_or("");
                // GitHub sends `ping` when a webhook is created: answer it, trigger nothing.
                if event == "ping" {
                    return WebhookResponse::new(200, "pong");
                }
                if !allowed(event) {
                    tracing::info!(receiver = %id, event, "GitHub event not in the receiver's events");
                    return WebhookResponse::new(400, "event not accepted by this receiver");
                }
            }
            "gitlab" => {
                let ok = req
                    .header("x-gitlab-token")
                    .is_some_and(|t| ct_eq(t.as_bytes(), entry.token.as_bytes()));
                if !ok {
                    tracing::warn!(receiver = %id, "GitLab webhook call with an invalid X-Gitlab-Token");
                    return WebhookResponse::new(401, "invalid token");
                }
                let event = req.header("x-gitlab-event").unwrap_or("");
                if !allowed(event) {
                    tracing::info!(receiver = %id, event, "GitLab event not in the receiver's events");
                    return WebhookResponse::new(400, "event not accepted by this receiver");
                }
            }
            other => {
                tracing::warn!(receiver = %id, receiver_type = other, "unsupported receiver type");
                return WebhookResponse::new(400, "unsupported receiver type");
            }
        }
        if receiver.spec.resource_filter.is_some() {
            // CEL is not evaluated here: every listed resource is reconciled, which is more,
            // never less, than the filter would allow.
            tracing::warn!(receiver = %id, "resourceFilter is not supported and is ignored");
        }
        let mut failed = false;
        let mut triggered = 0;
        for res in &receiver.spec.resources {
            match self.targets(receiver, res).await {
                Ok(refs) => {
                    for r in refs {
                        tracing::info!(receiver = %id, object = %r, "reconcile requested by webhook");
                        (self.inner.on_reconcile)(r);
                        triggered += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(receiver = %id, error = %e, "cannot request reconciliation");
                    failed = true;
                }
            }
        }
        if failed {
            WebhookResponse::new(500, "some resources could not be reconciled")
        } else {
            WebhookResponse::new(200, format!("{triggered} reconcile(s) requested"))
        }
    }

    /// The objects one `resources` entry names.
    async fn targets(
        &self,
        receiver: &api::Receiver,
        res: &api::meta::CrossNamespaceSelectorReference,
    ) -> Result<Vec<ObjectRef>, String> {
        let ns = res
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(receiver.namespace());
        let group = match res.api_version.as_deref() {
            Some(av) if !av.is_empty() => trueup_core::object::split_api_version(av).0.to_string(),
            _ => FluxKind::ALL
                .iter()
                .find(|k| k.kind() == res.kind)
                .map(|k| k.group().to_string())
                .ok_or_else(|| format!("kind {} needs an apiVersion", res.kind))?,
        };
        let backend = &self.inner.backend;
        if res.name == "*" || res.name.is_empty() {
            if res.match_labels.is_empty() {
                return Err("matchLabels field not set when using wildcard '*' as name".into());
            }
            let objects = backend
                .list(&ListParams {
                    group,
                    kind: res.kind.clone(),
                    namespace: Some(ns.to_string()),
                    labels: res.match_labels.clone(),
                })
                .await
                .map_err(|e| e.to_string())?;
            // Backends filter by labels already; checking again costs nothing.
            Ok(objects
                .iter()
                .filter(|o| {
                    res.match_labels
                        .iter()
                        .all(|(k, v)| o.label(k) == Some(v.as_str()))
                })
                .map(|o| o.object_ref())
                .collect())
        } else {
            let r = ObjectRef::new(&group, &res.kind, ns, &res.name);
            match backend.get(&r).await.map_err(|e| e.to_string())? {
                Some(_) => Ok(vec![r]),
                None => Err(format!("{r} not found")),
            }
        }
    }

    async fn lookup(&self, path: &str) -> Result<Option<Entry>, String> {
        let ttl = self.inner.options.cache_ttl;
        let cached = lock(&self.inner.table).clone();
        let table = match cached {
            Some((at, t)) if at.elapsed() < ttl => {
                if let Some(e) = find(&t, path) {
                    return Ok(Some(e));
                }
                // A Receiver created since the last read: refresh, at most once a second.
                let recently = {
                    let mut last = lock(&self.inner.last_miss_refresh);
                    let recently = last.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
                    if !recently {
                        *last = Some(Instant::now());
                    }
                    recently
                };
                if recently {
                    return Ok(None);
                }
                self.load_table().await?
            }
            _ => self.load_table().await?,
        };
        Ok(find(&table, path))
    }

    async fn load_table(&self) -> Result<Arc<Vec<Entry>>, String> {
        let backend = &self.inner.backend;
        let objects = backend
            .list(&ListParams::kind(NOTIFICATION_GROUP, "Receiver"))
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for obj in &objects {
            let receiver: api::Receiver = match api::from_object(obj) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an invalid Receiver");
                    continue;
                }
            };
            let ns = receiver.namespace().to_string();
            let sr = ObjectRef::new("", "Secret", &ns, &receiver.spec.secret_ref.name);
            let token = match backend.get(&sr).await {
                Ok(Some(secret)) => match trueup_core::reconcile::object_data(&secret) {
                    Ok(data) => match data.get("token") {
                        Some(t) => String::from_utf8_lossy(t).into_owned(),
                        None => {
                            tracing::warn!(receiver = %receiver.name(), "receiver secret has no `token`");
                            continue;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable receiver secret");
                        continue;
                    }
                },
                Ok(None) => {
                    tracing::warn!(receiver = %receiver.name(), secret = %sr, "receiver secret not found");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a receiver secret failed");
                    continue;
                }
            };
            out.push(Entry {
                path: webhook_path(&token, receiver.name(), &ns),
                receiver,
                token,
            });
        }
        let table = Arc::new(out);
        *lock(&self.inner.table) = Some((Instant::now(), table.clone()));
        Ok(table)
    }
}

/// The entry for a path. Every entry is compared, in constant time: the path is derived from
/// the token, so how fast a guess fails must not tell how close it was.
fn find(table: &[Entry], path: &str) -> Option<Entry> {
    let mut found = None;
    for e in table {
        if ct_eq(e.path.as_bytes(), path.as_bytes()) && found.is_none() {
            found = Some(e.clone());
        }
    }
    found
}

/// Reads one request. Errors are the response to send.
async fn read_request(
    stream: &mut TcpStream,
    opts: &ReceiverOptions,
) -> Result<WebhookRequest, WebhookResponse> {
    let io_err = |_| WebhookResponse::new(400, "bad request");
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = find_subslice(&buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > opts.max_header {
            return Err(WebhookResponse::new(431, "request header fields too large"));
        }
        let n = stream.read(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            return Err(WebhookResponse::new(400, "bad request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > opts.max_header {
        return Err(WebhookResponse::new(431, "request header fields too large"));
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| WebhookResponse::new(400, "bad request"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(WebhookResponse::new(400, "bad request"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(WebhookResponse::new(505, "HTTP version not supported"));
    }
    let mut headers = BTreeMap::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Err(WebhookResponse::new(400, "bad request"));
        };
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    if headers.contains_key("transfer-encoding") {
        // Webhook senders (GitHub, GitLab, curl) send Content-Length; chunked bodies are not
        // worth a parser here.
        return Err(WebhookResponse::new(411, "length required"));
    }
    let len: usize = match headers.get("content-length") {
        Some(v) => v
            .parse()
            .map_err(|_| WebhookResponse::new(400, "bad content-length"))?,
        None => 0,
    };
    if len > opts.max_body {
        return Err(WebhookResponse::new(413, "payload too large"));
    }
    if headers
        .get("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(io_err)?;
    }
    let mut body = buf[head_end + 4..].to_vec();
    body.truncate(len);
    while body.len() < len {
        let n = stream.read(&mut chunk).await.map_err(io_err)?;
        if n == 0 {
            return Err(WebhookResponse::new(400, "incomplete body"));
        }
        let take = n.min(len - body.len());
        body.extend_from_slice(&chunk[..take]);
    }
    // The path without a query string: Flux matches the path alone.
    let path = target.split('?').next().unwrap_or_default().to_string();
    Ok(WebhookRequest {
        method: method.to_string(),
        path,
        headers,
        body,
    })
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn write_response(stream: &mut TcpStream, resp: &WebhookResponse) -> std::io::Result<()> {
    let reason = match resp.status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    };
    let body = format!("{}\n", resp.body);
    let out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        resp.status,
        body.len()
    );
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_path_is_flux_digest() {
        // sha256("token" + "name" + "namespace")
        let expected = hex::encode(sha2::Sha256::digest(b"s3cretgithub-receiverflux-system"));
        assert_eq!(
            webhook_path("s3cret", "github-receiver", "flux-system"),
            format!("/hook/{expected}")
        );
    }
}
