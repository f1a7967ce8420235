//! Delivery: one bounded queue and one worker per Provider, with a rate limit, backoff on 429
//! (honouring `Retry-After`), retries with jitter on 5xx and network errors, and counters.
//!
//! Why a queue per Provider: the runtime calls notifiers in spawned tasks, so a dead webhook
//! would otherwise accumulate one stuck task per event. Here a Provider holds at most
//! `queue_capacity` pending notifications; beyond that new ones are dropped and counted, and
//! other Providers are unaffected.

use crate::providers::{Notification, OutgoingRequest, ProviderConfig, ProviderType};
use crate::redact::Redactor;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use trueup_core::{ObjectRef, Severity};

/// How deliveries are queued, paced and retried.
#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    /// Pending notifications per Provider; more are dropped (and counted).
    pub queue_capacity: usize,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The first retry waits about this long; each further one twice as long (with jitter).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; longer ones are cut to this.
    pub max_retry_after: Duration,
    /// Requests a Provider may send at once before the rate applies.
    pub rate_burst: u32,
    /// Sustained requests per second per Provider (Slack webhooks allow about one). Zero or
    /// less means no limit.
    pub rate_per_second: f64,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            queue_capacity: 64,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            rate_burst: 10,
            rate_per_second: 1.0,
        }
    }
}

/// Counters of what happened to notifications.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Notifications handed to a Provider's queue.
    pub enqueued: u64,
    /// Notifications whose requests all succeeded.
    pub delivered: u64,
    /// Notifications given up on (permanent error or attempts exhausted).
    pub failed: u64,
    /// Requests retried (after 429, 5xx or a network error).
    pub retries: u64,
    /// HTTP 429 answers.
    pub throttled: u64,
    /// Notifications dropped because the Provider's queue was full.
    pub dropped: u64,
    /// Notifications not sent because an identical one was sent within the dedup window.
    pub suppressed_duplicates: u64,
    /// Error notifications held back because the failure threshold was not reached.
    pub suppressed_below_threshold: u64,
    /// Recovery notifications sent.
    pub recoveries: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    dropped: AtomicU64,
    pub(crate) suppressed_duplicates: AtomicU64,
    pub(crate) suppressed_below_threshold: AtomicU64,
    pub(crate) recoveries: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            enqueued: g(&self.enqueued),
            delivered: g(&self.delivered),
            failed: g(&self.failed),
            retries: g(&self.retries),
            throttled: g(&self.throttled),
            dropped: g(&self.dropped),
            suppressed_duplicates: g(&self.suppressed_duplicates),
            suppressed_below_threshold: g(&self.suppressed_below_threshold),
            recoveries: g(&self.recoveries),
        }
    }
}

pub(crate) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// What happened to one notification, handed to the delivery observer (the example operator
/// prints these). Holds no secrets.
#[derive(Clone, Debug)]
pub struct DeliveryReport {
    /// `namespace/name` of the Provider.
    pub provider: String,
    pub provider_type: ProviderType,
    /// `namespace/name` of the Alert that routed the event.
    pub alert: String,
    pub object: ObjectRef,
    pub severity: Severity,
    pub reason: String,
    pub message: String,
    /// Requests sent (0 when the Provider type ignores the event).
    pub requests: usize,
    /// `Err` with a redacted reason when delivery failed.
    pub outcome: Result<(), String>,
}

/// Called after every delivery, successful or not.
pub type DeliveryObserver = Arc<dyn Fn(&DeliveryReport) + Send + Sync>;

pub(crate) struct Job {
    pub alert: String,
    pub notification: Notification,
    pub requests: Vec<OutgoingRequest>,
}

struct Worker {
    config: ProviderConfig,
    tx: mpsc::Sender<Job>,
}

struct Shared {
    options: DeliveryOptions,
    totals: Counters,
    per_provider: Mutex<HashMap<String, Arc<Counters>>>,
    observer: Mutex<Option<DeliveryObserver>>,
    pending: AtomicU64,
    idle: Notify,
}

/// Routes jobs to per-Provider workers.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    workers: Arc<Mutex<HashMap<String, Worker>>>,
}

impl Dispatcher {
    pub fn new(options: DeliveryOptions) -> Self {
        Dispatcher {
            shared: Arc::new(Shared {
                options,
                totals: Counters::default(),
                per_provider: Mutex::new(HashMap::new()),
                observer: Mutex::new(None),
                pending: AtomicU64::new(0),
                idle: Notify::new(),
            }),
            workers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn set_observer(&self, observer: DeliveryObserver) {
        *lock(&self.shared.observer) = Some(observer);
    }

    pub fn totals(&self) -> &Counters {
        &self.shared.totals
    }

    pub fn stats(&self) -> Stats {
        self.shared.totals.snapshot()
    }

    pub fn provider_stats(&self) -> BTreeMap<String, Stats> {
        lock(&self.shared.per_provider)
            .iter()
            .map(|(k, v)| (k.clone(), v.snapshot()))
            .collect()
    }

    fn counters_for(&self, provider: &str) -> Arc<Counters> {
        lock(&self.shared.per_provider)
            .entry(provider.to_string())
            .or_default()
            .clone()
    }

    /// Queues a job for its Provider without waiting. Returns whether it was queued.
    pub fn submit(&self, config: &ProviderConfig, job: Job) -> bool {
        let counters = self.counters_for(&config.id);
        let mut workers = lock(&self.workers);
        // A changed config (rotated token, new address) gets a fresh worker and client; the
        // old worker finishes its queue and ends when its sender is dropped.
        let stale = match workers.get(&config.id) {
            Some(w) => w.config != *config || w.tx.is_closed(),
            None => true,
        };
        if stale {
            let (tx, rx) = mpsc::channel(self.shared.options.queue_capacity.max(1));
            tokio::spawn(run_worker(
                config.clone(),
                rx,
                self.shared.clone(),
                counters.clone(),
            ));
            workers.insert(
                config.id.clone(),
                Worker {
                    config: config.clone(),
                    tx,
                },
            );
        }
        let Some(worker) = workers.get(&config.id) else {
            return false;
        };
        // Count before sending: the worker may finish the job before try_send returns.
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        match worker.tx.try_send(job) {
            Ok(()) => {
                bump(&self.shared.totals.enqueued);
                bump(&counters.enqueued);
                true
            }
            Err(_) => {
                self.finish_one();
                bump(&self.shared.totals.dropped);
                bump(&counters.dropped);
                tracing::warn!(
                    provider = %config.id,
                    "notification dropped: the provider's delivery queue is full"
                );
                false
            }
        }
    }

    fn finish_one(&self) {
        finish_one(&self.shared);
    }

    /// Waits until every queued notification is delivered or given up on.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.pending.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.shared.pending.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

fn finish_one(shared: &Shared) {
    if shared.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.idle.notify_waiters();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not stop notifications: the data here stays consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A token bucket: `burst` requests at once, then `rate` per second.
struct TokenBucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(burst: u32, rate: f64) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            tokens: burst,
            burst,
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                f64::INFINITY
            },
            last: Instant::now(),
        }
    }

    async fn acquire(&mut self) {
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.last = now;
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait.min(60.0))).await;
        }
    }
}

async fn run_worker(
    config: ProviderConfig,
    mut rx: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
) {
    let redactor = config.redactor();
    let client = build_client(&config);
    let mut bucket = TokenBucket::new(shared.options.rate_burst, shared.options.rate_per_second);
    // Set by a 429: nothing is sent to this Provider before then.
    let mut blocked_until: Option<Instant> = None;
    while let Some(job) = rx.recv().await {
        let outcome = match &client {
            Ok(client) => {
                let mut result = Ok(());
                for req in &job.requests {
                    result = send_with_retries(
                        client,
                        req,
                        &config,
                        &shared,
                        &counters,
                        &redactor,
                        &mut bucket,
                        &mut blocked_until,
                    )
                    .await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
            Err(e) => Err(e.clone()),
        };
        let ev = &job.notification.event;
        match &outcome {
            Ok(()) => {
                bump(&shared.totals.delivered);
                bump(&counters.delivered);
                tracing::info!(
                    provider = %config.id,
                    alert = %job.alert,
                    object = %ev.involved_object,
                    reason = %ev.reason,
                    "notification delivered"
                );
            }
            Err(e) => {
                bump(&shared.totals.failed);
                bump(&counters.failed);
                tracing::warn!(
                    provider = %config.id,
                    alert = %job.alert,
                    object = %ev.involved_object,
                    error = %e,
                    "notification delivery failed"
                );
            }
        }
        let observer = lock(&shared.observer).clone();
        if let Some(observer) = observer {
            observer(&DeliveryReport {
                provider: config.id.clone(),
                provider_type: config.provider_type,
                alert: job.alert.clone(),
                object: ev.involved_object.clone(),
                severity: ev.severity,
                reason: ev.reason.clone(),
                message: ev.message.clone(),
                requests: job.requests.len(),
                outcome,
            });
        }
        finish_one(&shared);
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_with_retries(
    client: &reqwest::Client,
    req: &OutgoingRequest,
    config: &ProviderConfig,
    shared: &Shared,
    counters: &Counters,
    redactor: &Redactor,
    bucket: &mut TokenBucket,
    blocked_until: &mut Option<Instant>,
) -> Result<(), String> {
    let opts = &shared.options;
    let what = format!("{} provider {}", config.provider_type.as_str(), config.id);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        if let Some(t) = blocked_until.take() {
            tokio::time::sleep_until(t).await;
        }
        bucket.acquire().await;
        let wait = match send_once(client, req).await {
            Ok((status, body)) if (200..300).contains(&status) => {
                if req.check_slack_ok {
                    return check_slack_response(&body).map_err(|e| format!("{what}: {e}"));
                }
                return Ok(());
            }
            Ok((status, _)) if status >= 500 || status == 408 => {
                if attempt >= opts.max_attempts {
                    return Err(format!("{what}: HTTP {status} after {attempt} attempts"));
                }
                tracing::debug!(provider = %config.id, status, attempt, "retrying delivery");
                backoff(attempt, opts)
            }
            Ok((status, _)) => {
                // Other 4xx: the request itself is wrong (bad token, unknown channel);
                // repeating it cannot help.
                return Err(format!("{what}: HTTP {status}"));
            }
            Err(SendError::Throttled(retry_after)) => {
                bump(&shared.totals.throttled);
                bump(&counters.throttled);
                if attempt >= opts.max_attempts {
                    return Err(format!(
                        "{what}: HTTP 429 Too Many Requests after {attempt} attempts"
                    ));
                }
                let wait = retry_after
                    .map(|w| w.min(opts.max_retry_after))
                    .unwrap_or_else(|| backoff(attempt, opts));
                tracing::warn!(
                    provider = %config.id,
                    wait_ms = wait.as_millis() as u64,
                    "provider answered 429 Too Many Requests; backing off"
                );
                *blocked_until = Some(Instant::now() + wait);
                Duration::ZERO
            }
            Err(SendError::Transport(e)) => {
                let e = redactor.redact(&e);
                if attempt >= opts.max_attempts {
                    return Err(format!("{what}: {e} (after {attempt} attempts)"));
                }
                tracing::debug!(provider = %config.id, error = %e, attempt, "retrying delivery");
                backoff(attempt, opts)
            }
        };
        bump(&shared.totals.retries);
        bump(&counters.retries);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

enum SendError {
    /// HTTP 429, with the `Retry-After` it carried.
    Throttled(Option<Duration>),
    /// No HTTP answer (connect, TLS, timeout); the message is not yet redacted.
    Transport(String),
}

/// The largest response body read (Slack's `{"ok": ...}` is tiny; others are ignored).
const MAX_RESPONSE: usize = 64 * 1024;

async fn send_once(
    client: &reqwest::Client,
    req: &OutgoingRequest,
) -> Result<(u16, Vec<u8>), SendError> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| SendError::Transport("invalid method".into()))?;
    let mut rb = client.request(method, &req.url);
    for (k, v) in &req.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let mut resp = rb
        .body(req.body.clone())
        .send()
        .await
        // reqwest quotes the URL in its errors; the URL may be the secret.
        .map_err(|e| SendError::Transport(describe(e.without_url())))?;
    let status = resp.status().as_u16();
    if status == 429 {
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        return Err(SendError::Throttled(retry_after));
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_RESPONSE {
            break;
        }
    }
    Ok((status, body))
}

fn describe(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// `Retry-After` in seconds. The HTTP-date form is rare for APIs; it falls back to backoff.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// Exponential backoff with jitter: between half and all of `initial * 2^(attempt-1)`, so
/// that many workers retrying together spread out.
fn backoff(attempt: u32, opts: &DeliveryOptions) -> Duration {
    let exp = opts
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let full = exp.min(opts.max_backoff);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(fastrand::f64())
}

fn check_slack_response(body: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct SlackResponse {
        #[serde(default)]
        ok: bool,
        #[serde(default)]
        error: String,
    }
    let r: SlackResponse = serde_json::from_slice(body)
        .map_err(|_| "unable to read the Slack API response".to_string())?;
    if r.ok {
        Ok(())
    } else {
        Err(format!("Slack responded with error: {}", r.error))
    }
}

fn build_client(cfg: &ProviderConfig) -> Result<reqwest::Client, String> {
    let tls = tls_config(cfg.ca_pem.as_deref())?;
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("trueup/", env!("CARGO_PKG_VERSION")));
    if let Some(proxy) = cfg.proxy.as_deref().filter(|p| !p.is_empty()) {
        let p = reqwest::Proxy::all(proxy).map_err(|_| {
            format!(
                "{} provider {}: invalid proxy URL",
                cfg.provider_type.as_str(),
                cfg.id
            )
        })?;
        b = b.proxy(p);
    }
    b.build().map_err(|e| {
        format!(
            "{} provider {}: HTTP client setup failed: {}",
            cfg.provider_type.as_str(),
            cfg.id,
            cfg.redactor().redact(&describe(e.without_url()))
        )
    })
}

/// rustls with the `ring` provider (like trueup-sources): the platform's roots plus the
/// Provider's CA from `certSecretRef`.
fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut extra: Vec<CertificateDer<'static>> = Vec::new();
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            extra.push(cert.map_err(|e| format!("invalid CA certificate: {e}"))?);
        }
        if extra.is_empty() {
            return Err("invalid CA certificate: no PEM certificate found".into());
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("TLS setup failed: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let opts = DeliveryOptions::default();
        for attempt in 1..10 {
            let d = backoff(attempt, &opts);
            let full = opts
                .initial_backoff
                .saturating_mul(1 << (attempt - 1))
                .min(opts.max_backoff);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
