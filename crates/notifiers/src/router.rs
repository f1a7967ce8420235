//! The Alert router: a [`Notifier`] that sends each event to the Providers of the Alerts that
//! select it, the way Flux's notification-controller does, plus deduplication, failure
//! thresholds and recovery messages.

use crate::delivery::{
    bump, lock, DeliveryObserver, DeliveryOptions, DeliveryReport, Dispatcher, Job, Stats,
};
use crate::providers::{build_requests, Notification, ProviderConfig, ProviderType};
use async_trait::async_trait;
use regex::Regex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use trueup_core::api::{self, GoDuration, NOTIFICATION_GROUP};
use trueup_core::traits::backend::{Backend, ListParams};
use trueup_core::traits::notifier::{Notifier, NotifyError};
use trueup_core::{Event, Object, ObjectRef, Severity};

/// An Alert annotation overriding [`RouterOptions::dedup_window`] for that Alert (`10m`, `0`
/// to disable).
pub const DEDUP_WINDOW_ANNOTATION: &str = "notifications.trueup.dev/dedup-window";
/// An Alert annotation setting a failure threshold for that Alert: `N/duration`, e.g. `3/10m`
/// (notify only from the 3rd failure of an object within 10 minutes).
pub const THRESHOLD_ANNOTATION: &str = "notifications.trueup.dev/threshold";

/// Notify about an object's failures only once there were `failures` of them within `within`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub failures: u32,
    pub within: Duration,
}

impl Threshold {
    /// Parses `N/duration` (`3/10m`).
    pub fn parse(s: &str) -> Option<Self> {
        let (n, d) = s.trim().split_once('/')?;
        let failures: u32 = n.trim().parse().ok()?;
        let within = GoDuration::parse(d.trim()).ok()?.duration();
        (failures >= 1).then_some(Threshold { failures, within })
    }
}

/// How the router filters and paces notifications.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// How long the list of Alerts is reused before it is read from the backend again.
    pub alert_refresh: Duration,
    /// Identical notifications (same Alert, object, reason, message and revision) within this
    /// window are sent once. Zero disables deduplication.
    pub dedup_window: Duration,
    /// A failure threshold for every Alert (Alerts may set their own by annotation).
    pub threshold: Option<Threshold>,
    /// After an Alert was told about an object's failure, tell it when the object succeeds
    /// again, even when the Alert only wants errors.
    pub recovery_messages: bool,
    /// The Provider timeout when `spec.timeout` is not set.
    pub default_timeout: Duration,
    pub delivery: DeliveryOptions,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            alert_refresh: Duration::from_secs(5),
            dedup_window: Duration::from_secs(300),
            threshold: None,
            recovery_messages: true,
            default_timeout: Duration::from_secs(15),
            delivery: DeliveryOptions::default(),
        }
    }
}

/// An Alert read from the backend, with its regexes compiled.
struct CompiledAlert {
    alert: api::Alert,
    /// `namespace/name`.
    id: String,
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    dedup_window: Option<Duration>,
    threshold: Option<Threshold>,
}

type StateKey = (String, ObjectRef);

/// When a Provider was read, and what it resolved to (`None`: suspended).
type CachedProvider = (Instant, Option<ProviderConfig>);

#[derive(Default)]
struct State {
    /// Dedup key -> when it was last sent.
    sent: HashMap<String, Instant>,
    /// Failure times per (Alert, object), for thresholds.
    failures: HashMap<StateKey, VecDeque<Instant>>,
    /// (Alert, object) pairs whose failure the Alert was told about, with the number of
    /// failures seen since: the next success is reported as a recovery.
    failing: HashMap<StateKey, u32>,
    last_prune: Option<Instant>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    options: RouterOptions,
    alerts: Mutex<Option<(Instant, Arc<Vec<CompiledAlert>>)>>,
    /// Resolved Providers (`None`: suspended), reused like the Alerts so that a burst of
    /// events does not read the same Secrets again and again.
    providers: Mutex<HashMap<(String, String), CachedProvider>>,
    state: Mutex<State>,
    dispatcher: Dispatcher,
}

/// Routes events to Providers through the Alerts stored in the backend. Cheap to clone: clones
/// share queues, state and counters, so keep one to read [`AlertRouter::stats`] and hand
/// another to the runtime.
#[derive(Clone)]
pub struct AlertRouter {
    inner: Arc<Inner>,
}

impl AlertRouter {
    /// A router with default options: Alerts re-read every 5s, a 5 minute dedup window,
    /// recovery messages, no threshold.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_options(backend, RouterOptions::default())
    }

    pub fn with_options(backend: Arc<dyn Backend>, options: RouterOptions) -> Self {
        let dispatcher = Dispatcher::new(options.delivery.clone());
        AlertRouter {
            inner: Arc::new(Inner {
                backend,
                options,
                alerts: Mutex::new(None),
                providers: Mutex::new(HashMap::new()),
                state: Mutex::new(State::default()),
                dispatcher,
            }),
        }
    }

    /// Calls `f` after each delivery (success or failure), e.g. to print alerts sent.
    pub fn on_delivery(self, f: impl Fn(&DeliveryReport) + Send + Sync + 'static) -> Self {
        let observer: DeliveryObserver = Arc::new(f);
        self.inner.dispatcher.set_observer(observer);
        self
    }

    /// Counters over all Providers.
    pub fn stats(&self) -> Stats {
        self.inner.dispatcher.stats()
    }

    /// Delivery counters per Provider (`namespace/name`).
    pub fn provider_stats(&self) -> BTreeMap<String, Stats> {
        self.inner.dispatcher.provider_stats()
    }

    /// Waits until every queued notification has been delivered or given up on; `false` on
    /// timeout. For tests and graceful shutdown.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        self.inner.dispatcher.wait_idle(timeout).await
    }

    /// Forgets the cached Alerts, so that the next event reads them again.
    pub fn refresh_alerts(&self) {
        *lock(&self.inner.alerts) = None;
        lock(&self.inner.providers).clear();
    }

    /// Routes one event: returns how many notifications were queued. Never waits for a
    /// delivery.
    pub async fn route(&self, event: &Event) -> Result<usize, NotifyError> {
        let inner = &self.inner;
        let alerts = self.alerts().await?;
        let mut object: Option<Option<Object>> = None;
        let mut queued = 0;
        for ca in alerts.iter() {
            let spec = &ca.alert.spec;
            if spec.suspend {
                continue;
            }
            if !self.selects(ca, &event.involved_object, &mut object).await {
                continue;
            }
            let key: StateKey = (ca.id.clone(), event.involved_object.clone());
            let Some(mut note) = self.decide(ca, &key, event) else {
                continue;
            };
            // What the backend knows of the object: apiVersion and uid (PagerDuty dedup keys,
            // generic payloads).
            let obj = self.object(&event.involved_object, &mut object).await;
            if let Some(o) = obj {
                note.api_version = Some(o.api_version().to_string());
                note.uid = o
                    .metadata()
                    .and_then(|m| m.get("uid"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
            }
            // The Alert's metadata and summary, as Flux merges them: the event's own keys win
            // over eventMetadata; `summary` is the Alert's.
            for (k, v) in &spec.event_metadata {
                note.event
                    .metadata
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            if let Some(summary) = spec.summary.as_ref().filter(|s| !s.is_empty()) {
                note.event
                    .metadata
                    .insert("summary".into(), summary.clone());
            }
            let provider_ns = ca.alert.namespace().to_string();
            let config = match self
                .resolve_provider(&provider_ns, &spec.provider_ref.name)
                .await
            {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(alert = %ca.id, error = %e, "cannot resolve the alert's provider");
                    continue;
                }
            };
            let requests = match build_requests(&config, &note) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(alert = %ca.id, provider = %config.id, error = %e, "cannot build the notification");
                    continue;
                }
            };
            if requests.is_empty() {
                continue;
            }
            if inner.dispatcher.submit(
                &config,
                Job {
                    alert: ca.id.clone(),
                    notification: note,
                    requests,
                },
            ) {
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Applies severity, inclusion/exclusion, threshold, dedup and recovery to one Alert and
    /// event; returns the notification to send, if any.
    fn decide(&self, ca: &CompiledAlert, key: &StateKey, event: &Event) -> Option<Notification> {
        let opts = &self.inner.options;
        let spec = &ca.alert.spec;
        let now = Instant::now();
        let mut st = lock(&self.inner.state);
        prune(&mut st, now, opts);

        if event.severity == Severity::Info && opts.recovery_messages && is_success(&event.reason) {
            st.failures.remove(key);
            if let Some(failures) = st.failing.remove(key) {
                bump(&self.inner.dispatcher.totals().recoveries);
                let mut ev = event.clone();
                ev.message = format!(
                    "Recovered after {failures} failure{}: {}",
                    if failures == 1 { "" } else { "s" },
                    event.message
                );
                ev.metadata.insert("recovered".into(), "true".into());
                // The recovery stands for this event: an identical one soon after is a
                // duplicate.
                st.sent.insert(dedup_key(ca, event), now);
                return Some(Notification::new(ev));
            }
        }

        let wants_info = spec.event_severity.as_deref().unwrap_or("info") != "error";
        if event.severity == Severity::Info && !wants_info {
            return None;
        }
        if ca.exclude.iter().any(|r| r.is_match(&event.message)) {
            return None;
        }
        if !ca.include.is_empty() && !ca.include.iter().any(|r| r.is_match(&event.message)) {
            return None;
        }

        if event.severity == Severity::Error {
            if let Some(n) = st.failing.get_mut(key) {
                *n += 1;
            }
            if let Some(t) = ca.threshold.or(opts.threshold) {
                let times = st.failures.entry(key.clone()).or_default();
                times.push_back(now);
                while times
                    .front()
                    .is_some_and(|t0| now.duration_since(*t0) > t.within)
                {
                    times.pop_front();
                }
                if (times.len() as u64) < u64::from(t.failures) {
                    bump(&self.inner.dispatcher.totals().suppressed_below_threshold);
                    tracing::debug!(alert = %ca.id, object = %event.involved_object, "below the failure threshold");
                    return None;
                }
            }
        }

        let window = ca.dedup_window.unwrap_or(opts.dedup_window);
        if !window.is_zero() {
            let dedup_key = dedup_key(ca, event);
            if let Some(at) = st.sent.get(&dedup_key) {
                if now.duration_since(*at) < window {
                    bump(&self.inner.dispatcher.totals().suppressed_duplicates);
                    return None;
                }
            }
            st.sent.insert(dedup_key, now);
        }
        if event.severity == Severity::Error {
            st.failing.entry(key.clone()).or_insert(1);
        }
        Some(Notification::new(event.clone()))
    }

    async fn selects(
        &self,
        ca: &CompiledAlert,
        r: &ObjectRef,
        object: &mut Option<Option<Object>>,
    ) -> bool {
        let alert_ns = ca.alert.namespace();
        for src in &ca.alert.spec.event_sources {
            if src.kind != r.kind {
                continue;
            }
            if let Some(av) = src.api_version.as_deref() {
                if trueup_core::object::split_api_version(av).0 != r.group {
                    continue;
                }
            }
            let ns = src
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(alert_ns);
            if ns != "*" && ns != r.namespace {
                continue;
            }
            let name = if src.name.is_empty() { "*" } else { &src.name };
            if !glob_match(name, &r.name) {
                continue;
            }
            if !src.match_labels.is_empty() {
                let Some(obj) = self.object(r, object).await else {
                    continue;
                };
                let all = src
                    .match_labels
                    .iter()
                    .all(|(k, v)| obj.label(k) == Some(v.as_str()));
                if !all {
                    continue;
                }
            }
            return true;
        }
        false
    }

    /// The involved object, read from the backend at most once per event.
    async fn object<'a>(
        &self,
        r: &ObjectRef,
        cache: &'a mut Option<Option<Object>>,
    ) -> Option<&'a Object> {
        if cache.is_none() {
            let got = match self.inner.backend.get(r).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(object = %r, error = %e, "cannot read the involved object");
                    None
                }
            };
            *cache = Some(got);
        }
        cache.as_ref().and_then(|o| o.as_ref())
    }

    async fn alerts(&self) -> Result<Arc<Vec<CompiledAlert>>, NotifyError> {
        let refresh = self.inner.options.alert_refresh;
        if let Some((at, alerts)) = lock(&self.inner.alerts).as_ref() {
            if at.elapsed() < refresh {
                return Ok(alerts.clone());
            }
        }
        let objects = self
            .inner
            .backend
            .list(&ListParams::kind(NOTIFICATION_GROUP, "Alert"))
            .await
            .map_err(|e| NotifyError(format!("listing Alerts failed: {e}")))?;
        let mut out = Vec::new();
        for obj in &objects {
            match api::from_object::<api::Alert>(obj) {
                Ok(alert) => out.push(compile(alert)),
                Err(e) => tracing::warn!(error = %e, "ignoring an invalid Alert"),
            }
        }
        let alerts = Arc::new(out);
        *lock(&self.inner.alerts) = Some((Instant::now(), alerts.clone()));
        Ok(alerts)
    }

    /// A Provider and its Secrets, cached for `alert_refresh`. `Ok(None)` when suspended.
    async fn resolve_provider(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ProviderConfig>, String> {
        let key = (namespace.to_string(), name.to_string());
        let ttl = self.inner.options.alert_refresh;
        if let Some((at, cfg)) = lock(&self.inner.providers).get(&key) {
            if at.elapsed() < ttl {
                return Ok(cfg.clone());
            }
        }
        let cfg = self.read_provider(namespace, name).await?;
        let mut cache = lock(&self.inner.providers);
        // Bounded: Providers are few; a flood of distinct names (bad Alerts) just resets it.
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), cfg.clone()));
        Ok(cfg)
    }

    /// Reads a Provider and its Secrets. `Ok(None)` when it is suspended.
    async fn read_provider(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ProviderConfig>, String> {
        let backend = &self.inner.backend;
        let r = ObjectRef::new(NOTIFICATION_GROUP, "Provider", namespace, name);
        let obj = backend
            .get(&r)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("Provider {namespace}/{name} not found"))?;
        let provider: api::Provider = api::from_object(&obj).map_err(|e| e.to_string())?;
        let spec = &provider.spec;
        if spec.suspend {
            return Ok(None);
        }
        let id = format!("{namespace}/{name}");
        let provider_type = ProviderType::parse(&spec.provider_type).ok_or_else(|| {
            format!(
                "Provider {id}: type {:?} is not supported",
                spec.provider_type
            )
        })?;
        let mut cfg =
            ProviderConfig::new(provider_type, &id, spec.address.as_deref().unwrap_or(""));
        cfg.uid = provider.metadata.uid.clone();
        cfg.channel = spec.channel.clone().filter(|c| !c.is_empty());
        cfg.username = spec.username.clone().filter(|c| !c.is_empty());
        cfg.proxy = spec.proxy.clone().filter(|c| !c.is_empty());
        cfg.timeout = spec
            .timeout
            .as_ref()
            .map(|t| t.duration())
            .filter(|d| !d.is_zero())
            .unwrap_or(self.inner.options.default_timeout);
        if let Some(sr) = &spec.secret_ref {
            let data = self.secret(namespace, &sr.name, &id).await?;
            if let Some(a) = data.get("address") {
                cfg.address = text(a).trim().to_string();
            }
            if let Some(t) = data.get("token") {
                cfg.token = Some(text(t));
            }
            if let Some(u) = data.get("username") {
                cfg.username = Some(text(u));
            }
            if let Some(p) = data.get("password") {
                cfg.password = Some(text(p));
            }
            if let Some(p) = data.get("proxy") {
                cfg.proxy = Some(text(p).trim().to_string());
            }
            if let Some(h) = data.get("headers") {
                cfg.headers =
                    serde_yaml::from_slice::<BTreeMap<String, String>>(h).map_err(|_| {
                        format!("Provider {id}: the secret's `headers` is not a map of strings")
                    })?;
            }
        }
        if let Some(pr) = &spec.proxy_secret_ref {
            let data = self.secret(namespace, &pr.name, &id).await?;
            let address = data
                .get("address")
                .map(|a| text(a).trim().to_string())
                .ok_or_else(|| format!("Provider {id}: the proxy secret has no `address`"))?;
            cfg.proxy = Some(match (data.get("username"), data.get("password")) {
                (Some(u), Some(p)) => with_userinfo(&address, &text(u), &text(p)),
                _ => address,
            });
        }
        if let Some(cr) = &spec.cert_secret_ref {
            let data = self.secret(namespace, &cr.name, &id).await?;
            let ca = data
                .get("ca.crt")
                .or_else(|| data.get("caFile"))
                .ok_or_else(|| format!("Provider {id}: the cert secret has no `ca.crt`"))?;
            cfg.ca_pem = Some(ca.clone());
        }
        Ok(Some(cfg))
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        provider: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let r = ObjectRef::new("", "Secret", namespace, name);
        let obj = self
            .inner
            .backend
            .get(&r)
            .await
            .map_err(|e| format!("Provider {provider}: reading Secret {namespace}/{name}: {e}"))?
            .ok_or_else(|| format!("Provider {provider}: Secret {namespace}/{name} not found"))?;
        trueup_core::reconcile::object_data(&obj).map_err(|e| format!("Provider {provider}: {e}"))
    }
}

#[async_trait]
impl Notifier for AlertRouter {
    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        self.route(event).await.map(|_| ())
    }
}

fn compile(alert: api::Alert) -> CompiledAlert {
    let id = format!("{}/{}", alert.namespace(), alert.name());
    let regexes = |list: &[String]| -> Vec<Regex> {
        list.iter()
            .filter_map(|exp| match Regex::new(exp) {
                Ok(r) => Some(r),
                Err(e) => {
                    // Flux skips a pattern that does not compile and keeps the rest.
                    tracing::warn!(alert = %id, pattern = %exp, error = %e, "ignoring an invalid regex");
                    None
                }
            })
            .collect()
    };
    let include = regexes(&alert.spec.inclusion_list);
    let exclude = regexes(&alert.spec.exclusion_list);
    let annotations = &alert.metadata.annotations;
    let dedup_window = annotations
        .get(DEDUP_WINDOW_ANNOTATION)
        .and_then(|s| GoDuration::parse(s).ok())
        .map(|d| d.duration());
    let threshold = annotations
        .get(THRESHOLD_ANNOTATION)
        .and_then(|s| Threshold::parse(s));
    CompiledAlert {
        alert,
        id,
        include,
        exclude,
        dedup_window,
        threshold,
    }
}

/// Identical notifications: same Alert, object, severity, reason, message and revision.
fn dedup_key(ca: &CompiledAlert, event: &Event) -> String {
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        ca.id,
        event.involved_object.inventory_id(),
        event.severity.as_str(),
        event.reason,
        event.message,
        event
            .revision
            .as_deref()
            .or(event.metadata.get("revision").map(String::as_str))
            .unwrap_or("")
    )
}

/// Info reasons that mean "the object is healthy again": `ReconciliationSucceeded`,
/// Helm's `UpgradeSucceeded`, tofu-controller's `TerraformAppliedSucceed`, plans without changes.
fn is_success(reason: &str) -> bool {
    reason.ends_with("Succeeded")
        || reason.ends_with("Succeed")
        || reason.ends_with("NoChanges")
        || reason == "Ready"
}

fn prune(st: &mut State, now: Instant, opts: &RouterOptions) {
    // Bounded memory: forget what can no longer matter, at most once a minute.
    if st
        .last_prune
        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
    {
        return;
    }
    st.last_prune = Some(now);
    // Alert-specific windows may be longer than the default; an hour covers sane values.
    let keep = opts.dedup_window.max(Duration::from_secs(3600));
    st.sent.retain(|_, at| now.duration_since(*at) < keep);
    st.failures.retain(|_, times| {
        times
            .back()
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(24 * 3600))
    });
}

/// `*` matches any run of characters; everything else literally.
fn glob_match(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if !pattern.contains('*') {
        return pattern == name;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `http://host:3128` + user + password -> `http://user:password@host:3128`.
fn with_userinfo(url: &str, user: &str, pass: &str) -> String {
    fn esc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}:{}@{rest}", esc(user), esc(pass)),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_thresholds() {
        assert!(glob_match("*", "x"));
        assert!(glob_match("app-*", "app-web"));
        assert!(!glob_match("app-*", "web"));
        assert!(glob_match("*-prod", "web-prod"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert_eq!(
            Threshold::parse("3/10m"),
            Some(Threshold {
                failures: 3,
                within: Duration::from_secs(600)
            })
        );
        assert_eq!(Threshold::parse("0/10m"), None);
        assert_eq!(Threshold::parse("x"), None);
        assert_eq!(
            with_userinfo("http://proxy:3128", "u", "p@ss"),
            "http://u:p%40ss@proxy:3128"
        );
        assert!(is_success("ReconciliationSucceeded"));
        assert!(is_success("TerraformAppliedSucceed"));
        assert!(!is_success("Progressing"));
    }
}
