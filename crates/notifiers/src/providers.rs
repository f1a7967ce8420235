//! Provider types and the exact requests each one sends.
//!
//! Building a request is a pure function of a resolved [`ProviderConfig`] and a
//! [`Notification`], so every payload can be checked byte for byte without a network. The
//! shapes follow Flux's notification-controller (field names, colours, titles), so that
//! dashboards and chat rooms fed by Flux keep looking the same when trueup feeds them.

use crate::redact::Redactor;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use trueup_core::{Event, Severity};

/// The Provider types trueup delivers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderType {
    Slack,
    Generic,
    GenericHmac,
    GitHub,
    GitLab,
    MsTeams,
    Discord,
    PagerDuty,
    Alertmanager,
    Opsgenie,
}

impl ProviderType {
    /// Parses `spec.type`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "slack" => ProviderType::Slack,
            "generic" => ProviderType::Generic,
            "generic-hmac" => ProviderType::GenericHmac,
            "github" => ProviderType::GitHub,
            "gitlab" => ProviderType::GitLab,
            "msteams" => ProviderType::MsTeams,
            "discord" => ProviderType::Discord,
            "pagerduty" => ProviderType::PagerDuty,
            "alertmanager" => ProviderType::Alertmanager,
            "opsgenie" => ProviderType::Opsgenie,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Slack => "slack",
            ProviderType::Generic => "generic",
            ProviderType::GenericHmac => "generic-hmac",
            ProviderType::GitHub => "github",
            ProviderType::GitLab => "gitlab",
            ProviderType::MsTeams => "msteams",
            ProviderType::Discord => "discord",
            ProviderType::PagerDuty => "pagerduty",
            ProviderType::Alertmanager => "alertmanager",
            ProviderType::Opsgenie => "opsgenie",
        }
    }
}

/// The default address of Slack's Web API method, used when a Slack Provider has a token but
/// no address (a bot token rather than an incoming webhook).
pub const SLACK_POST_MESSAGE: &str = "https://slack.com/api/chat.postMessage";
/// PagerDuty's Events API v2 host, the default of pagerduty Providers.
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com";

/// A Provider with its Secrets read: everything needed to deliver. Its `Debug` hides the
/// address, token, password and proxy, which carry credentials.
#[derive(Clone, PartialEq)]
pub struct ProviderConfig {
    pub provider_type: ProviderType,
    /// `namespace/name` of the Provider, for logs and counters.
    pub id: String,
    /// The Provider's uid (commit status contexts use its first segment, as Flux does).
    pub uid: Option<String>,
    pub address: String,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub token: Option<String>,
    pub password: Option<String>,
    /// Extra headers (the Secret's `headers` key), sent by generic providers.
    pub headers: BTreeMap<String, String>,
    pub proxy: Option<String>,
    /// Extra trusted CA certificates (PEM), from `certSecretRef`.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("provider_type", &self.provider_type)
            .field("id", &self.id)
            .field("address", &"<redacted>")
            .field("channel", &self.channel)
            .field("username", &self.username)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("proxy", &self.proxy.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ProviderConfig {
    /// A config with defaults, for tests and embedders that build providers without a backend.
    pub fn new(provider_type: ProviderType, id: &str, address: &str) -> Self {
        ProviderConfig {
            provider_type,
            id: id.into(),
            uid: None,
            address: address.into(),
            channel: None,
            username: None,
            token: None,
            password: None,
            headers: BTreeMap::new(),
            proxy: None,
            ca_pem: None,
            timeout: Duration::from_secs(15),
        }
    }

    /// Everything secret in this config, for scrubbing messages.
    pub(crate) fn redactor(&self) -> Redactor {
        let mut r = Redactor::default();
        r.add(&self.address);
        for s in [&self.token, &self.password, &self.proxy]
            .into_iter()
            .flatten()
        {
            r.add(s);
        }
        for v in self.headers.values() {
            r.add(v);
        }
        r
    }
}

/// An event on its way to a Provider: the runtime's event with the Alert's metadata merged in,
/// plus what the backend knows of the involved object.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub event: Event,
    /// `apiVersion` of the involved object, when it could be read.
    pub api_version: Option<String>,
    /// `metadata.uid` of the involved object, when it could be read.
    pub uid: Option<String>,
}

impl Notification {
    pub fn new(event: Event) -> Self {
        Notification {
            event,
            api_version: None,
            uid: None,
        }
    }

    /// The event as Flux's event payload (`involvedObject`, `severity`, `timestamp`, ...): what
    /// generic webhooks receive.
    pub fn flux_json(&self) -> Value {
        let ev = &self.event;
        let o = &ev.involved_object;
        let mut involved = Map::new();
        involved.insert("kind".into(), json!(o.kind));
        if !o.namespace.is_empty() {
            involved.insert("namespace".into(), json!(o.namespace));
        }
        involved.insert("name".into(), json!(o.name));
        if let Some(uid) = &self.uid {
            involved.insert("uid".into(), json!(uid));
        }
        let api_version = self.api_version.clone().or_else(|| {
            // Without the object, the group is all we know; Flux kinds are served at v1.
            (!o.group.is_empty()).then(|| format!("{}/v1", o.group))
        });
        if let Some(v) = api_version {
            involved.insert("apiVersion".into(), json!(v));
        }
        let mut out = Map::new();
        out.insert("involvedObject".into(), Value::Object(involved));
        out.insert("severity".into(), json!(ev.severity.as_str()));
        out.insert("timestamp".into(), json!(ev.timestamp));
        out.insert("message".into(), json!(ev.message));
        out.insert("reason".into(), json!(ev.reason));
        if !ev.metadata.is_empty() {
            out.insert("metadata".into(), json!(ev.metadata));
        }
        out.insert("reportingController".into(), json!(ev.reporting_controller));
        Value::Object(out)
    }

    /// `kustomization/name.namespace`: how Flux titles an object in chat messages.
    fn chat_title(&self) -> String {
        let o = &self.event.involved_object;
        format!("{}/{}.{}", o.kind.to_lowercase(), o.name, o.namespace)
    }

    /// Flux's (name, description) pair: `kustomization/name` and the reason split into
    /// lower-case words (`ReconciliationFailed` -> `reconciliation failed`).
    fn name_and_description(&self) -> (String, String) {
        let o = &self.event.involved_object;
        let name = format!("{}/{}", o.kind, o.name).to_lowercase();
        let desc = split_camel_case(&self.event.reason)
            .join(" ")
            .to_lowercase();
        (name, desc)
    }

    fn is_progressing(&self) -> bool {
        self.event.reason == "Progressing"
    }
}

/// One HTTP request to send. Its `Debug` shows neither the URL nor header values.
#[derive(Clone, PartialEq)]
pub struct OutgoingRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Slack's Web API answers 200 with `{"ok": false}` on errors: check the body.
    pub(crate) check_slack_ok: bool,
}

impl fmt::Debug for OutgoingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingRequest")
            .field("method", &self.method)
            .field("url", &"<redacted>")
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl OutgoingRequest {
    fn post_json(url: String, body: &Value) -> Self {
        OutgoingRequest {
            method: "POST",
            url,
            headers: vec![("Content-Type".into(), "application/json".into())],
            // Serializing a Value cannot fail.
            body: serde_json::to_vec(body).unwrap_or_default(),
            check_slack_ok: false,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body as JSON, for tests and printing.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why a notification cannot be turned into requests. Messages never include secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// The requests a Provider sends for a notification: usually one, none when the Provider type
/// ignores the event (commit statuses skip `Progressing`), two for PagerDuty info events (a
/// resolve and a change event).
pub fn build_requests(
    cfg: &ProviderConfig,
    n: &Notification,
) -> Result<Vec<OutgoingRequest>, BuildError> {
    let ev = &n.event;
    match cfg.provider_type {
        ProviderType::Slack => {
            let address = if cfg.address.is_empty() && cfg.token.is_some() {
                SLACK_POST_MESSAGE.to_string()
            } else {
                require_address(cfg)?
            };
            let is_web_api = address
                .trim_end_matches('/')
                .ends_with("/api/chat.postMessage");
            let mut req = OutgoingRequest::post_json(address, &slack_payload(cfg, n, true));
            if let Some(token) = &cfg.token {
                req = req.header("Authorization", format!("Bearer {token}"));
            }
            req.check_slack_ok = is_web_api;
            Ok(vec![req])
        }
        ProviderType::Discord => {
            // Discord accepts Slack-formatted messages on the webhook URL + `/slack`.
            let address = require_address(cfg)?;
            // Append to the path, keeping a query (`?thread_id=...`) where it was.
            let (path, query) = match address.split_once('?') {
                Some((p, q)) => (p.to_string(), format!("?{q}")),
                None => (address.clone(), String::new()),
            };
            let address = if path.ends_with("/slack") {
                address
            } else {
                format!("{}/slack{query}", path.trim_end_matches('/'))
            };
            Ok(vec![OutgoingRequest::post_json(
                address,
                &slack_payload(cfg, n, false),
            )])
        }
        ProviderType::Generic | ProviderType::GenericHmac => {
            let address = require_address(cfg)?;
            let mut req = OutgoingRequest::post_json(address, &n.flux_json())
                .header("gotk-component", ev.reporting_controller.clone());
            for (k, v) in &cfg.headers {
                req.headers
                    .retain(|(name, _)| !name.eq_ignore_ascii_case(k));
                req.headers.push((k.clone(), v.clone()));
            }
            if cfg.provider_type == ProviderType::GenericHmac {
                let key = cfg.token.as_deref().unwrap_or_default();
                if key.is_empty() {
                    return Err(BuildError(
                        "generic-hmac provider needs a `token` in its secret".into(),
                    ));
                }
                let mac = crate::crypto::hmac_sha256(key.as_bytes(), &req.body);
                req = req.header("X-Signature", format!("sha256={}", hex::encode(mac)));
            }
            Ok(vec![req])
        }
        ProviderType::MsTeams => {
            let address = require_address(cfg)?;
            let host = host_of(&address);
            // Old Office 365 connectors only understand MessageCards; Workflows (the
            // replacement Microsoft points to) want Adaptive Cards. Flux decides by host.
            let body = if host.ends_with(".webhook.office.com") {
                teams_message_card(n)
            } else {
                teams_adaptive_card(n)
            };
            Ok(vec![OutgoingRequest::post_json(address, &body)])
        }
        ProviderType::PagerDuty => {
            if n.is_progressing() {
                return Ok(vec![]);
            }
            let base = if cfg.address.is_empty() {
                PAGERDUTY_EVENTS.to_string()
            } else {
                scheme_and_host(&cfg.address)
                    .ok_or_else(|| BuildError("invalid pagerduty address".into()))?
            };
            let routing_key = cfg.channel.clone().unwrap_or_default();
            if routing_key.is_empty() {
                return Err(BuildError(
                    "pagerduty provider needs `channel` (the routing key)".into(),
                ));
            }
            let (name, desc) = n.name_and_description();
            let dedup_key = pagerduty_dedup_key(n);
            let mut out = Vec::new();
            let source = format!("Flux {}", ev.reporting_controller);
            let details = json!({"message": ev.message, "metadata": ev.metadata});
            if ev.severity == Severity::Error {
                out.push(OutgoingRequest::post_json(
                    format!("{base}/v2/enqueue"),
                    &json!({
                        "routing_key": routing_key,
                        "event_action": "trigger",
                        "dedup_key": dedup_key,
                        "payload": {
                            "summary": format!("{desc}: {name}"),
                            "source": source,
                            "severity": "error",
                            "timestamp": ev.timestamp,
                            "component": ev.involved_object.name,
                            "group": ev.involved_object.kind,
                            "custom_details": details,
                        }
                    }),
                ));
            } else {
                // An info event resolves the incident an earlier error opened (same dedup
                // key) and is recorded as a change.
                out.push(OutgoingRequest::post_json(
                    format!("{base}/v2/enqueue"),
                    &json!({
                        "routing_key": routing_key,
                        "event_action": "resolve",
                        "dedup_key": dedup_key,
                    }),
                ));
                out.push(OutgoingRequest::post_json(
                    format!("{base}/v2/change/enqueue"),
                    &json!({
                        "routing_key": routing_key,
                        "payload": {
                            "summary": format!("{desc}: {name}"),
                            "source": source,
                            "timestamp": ev.timestamp,
                            "custom_details": details,
                        }
                    }),
                ));
            }
            Ok(out)
        }
        ProviderType::Alertmanager => {
            let address = require_address(cfg)?;
            let mut labels: BTreeMap<String, String> = ev.metadata.clone();
            let mut annotations = BTreeMap::new();
            annotations.insert("message".to_string(), ev.message.clone());
            if let Some(summary) = labels.remove("summary") {
                annotations.insert("summary".to_string(), summary);
            }
            let o = &ev.involved_object;
            labels.insert(
                "alertname".into(),
                format!("Flux{}{}", o.kind, title_case(&ev.reason)),
            );
            labels.insert("severity".into(), ev.severity.as_str().into());
            labels.insert("reason".into(), ev.reason.clone());
            labels.insert("kind".into(), o.kind.clone());
            labels.insert("name".into(), o.name.clone());
            labels.insert("namespace".into(), o.namespace.clone());
            labels.insert(
                "reportingcontroller".into(),
                ev.reporting_controller.clone(),
            );
            let body = json!([{
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": ev.timestamp,
                // What Flux sends (Go's zero time): Alertmanager treats it as unset and
                // resolves the alert after its `resolve_timeout`.
                "endsAt": "0001-01-01T00:00:00Z",
            }]);
            let mut req = OutgoingRequest::post_json(address, &body);
            if let Some(token) = &cfg.token {
                req = req.header("Authorization", format!("Bearer {token}"));
            } else if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                req = req.header("Authorization", format!("Basic {b}"));
            }
            Ok(vec![req])
        }
        ProviderType::Opsgenie => {
            let address = require_address(cfg)?;
            let token = cfg
                .token
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| BuildError("opsgenie provider needs a `token`".into()))?;
            let mut details = ev.metadata.clone();
            details.insert("severity".into(), ev.severity.as_str().into());
            let o = &ev.involved_object;
            let body = json!({
                "message": format!("{}/{}", o.kind, o.name),
                "description": ev.message,
                "details": details,
            });
            Ok(vec![OutgoingRequest::post_json(address, &body)
                .header("Authorization", format!("GenieKey {token}"))])
        }
        ProviderType::GitHub | ProviderType::GitLab => {
            if n.is_progressing() {
                return Ok(vec![]);
            }
            let token = cfg
                .token
                .as_deref()
                .or(cfg.password.as_deref())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    BuildError(format!(
                        "{} provider needs a `token`",
                        cfg.provider_type.as_str()
                    ))
                })?;
            let revision = ev
                .metadata
                .get("revision")
                .or(ev.revision.as_ref())
                .ok_or_else(|| BuildError("missing revision metadata".into()))?;
            let sha = commit_of_revision(revision).ok_or_else(|| {
                BuildError(format!(
                    "failed to extract commit hash from '{revision}' revision"
                ))
            })?;
            let (host, id) = parse_git_address(&require_address(cfg)?)
                .ok_or_else(|| BuildError("invalid git repository address".into()))?;
            let (_, desc) = n.name_and_description();
            let context = commit_status_id(cfg, n);
            let success = ev.severity == Severity::Info;
            if cfg.provider_type == ProviderType::GitHub {
                let parts: Vec<&str> = id.split('/').collect();
                if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                    return Err(BuildError(format!("invalid repository id {id:?}")));
                }
                let api = if host == "https://github.com" {
                    "https://api.github.com".to_string()
                } else {
                    format!("{host}/api/v3")
                };
                let body = json!({
                    "state": if success { "success" } else { "failure" },
                    "context": context,
                    "description": desc,
                });
                Ok(vec![OutgoingRequest::post_json(
                    format!("{api}/repos/{}/{}/statuses/{sha}", parts[0], parts[1]),
                    &body,
                )
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .header("Authorization", format!("Bearer {token}"))])
            } else {
                let body = json!({
                    "state": if success { "success" } else { "failed" },
                    "name": context,
                    "description": desc,
                });
                Ok(vec![OutgoingRequest::post_json(
                    format!("{host}/api/v4/projects/{}/statuses/{sha}", path_escape(&id)),
                    &body,
                )
                .header("PRIVATE-TOKEN", token)])
            }
        }
    }
}

fn require_address(cfg: &ProviderConfig) -> Result<String, BuildError> {
    if cfg.address.is_empty() {
        return Err(BuildError(format!(
            "{} provider has no address (spec.address or the secret's `address`)",
            cfg.provider_type.as_str()
        )));
    }
    let is_http = cfg.address.starts_with("http://") || cfg.address.starts_with("https://");
    let git_provider = matches!(
        cfg.provider_type,
        ProviderType::GitHub | ProviderType::GitLab
    );
    if !is_http && !git_provider {
        // The address may be a webhook URL with its secret inside: never echo it.
        return Err(BuildError(format!(
            "{} provider address is not an http(s) URL",
            cfg.provider_type.as_str()
        )));
    }
    Ok(cfg.address.clone())
}

fn slack_payload(cfg: &ProviderConfig, n: &Notification, with_channel: bool) -> Value {
    let ev = &n.event;
    let username = cfg
        .username
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| ev.reporting_controller.clone());
    let fields: Vec<Value> = ev
        .metadata
        .iter()
        .map(|(k, v)| json!({"title": k, "value": v, "short": false}))
        .collect();
    json!({
        "channel": if with_channel { cfg.channel.clone().unwrap_or_default() } else { String::new() },
        "username": username,
        "icon_url": "",
        "icon_emoji": "",
        "attachments": [{
            "color": if ev.severity == Severity::Error { "danger" } else { "good" },
            "author_name": n.chat_title(),
            "text": ev.message,
            "mrkdwn_in": ["text"],
            "fields": fields,
        }],
    })
}

fn teams_message_card(n: &Notification) -> Value {
    let ev = &n.event;
    let title = n.chat_title();
    let facts: Vec<Value> = ev
        .metadata
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": if ev.severity == Severity::Error { "FF0000" } else { "0076D7" },
        "summary": title,
        "sections": [{
            "activityTitle": ev.message,
            "activitySubtitle": title,
            "facts": facts,
        }],
    })
}

fn teams_adaptive_card(n: &Notification) -> Value {
    let ev = &n.event;
    let mut message = json!({"type": "TextBlock", "text": ev.message, "wrap": true});
    if ev.severity == Severity::Error {
        message["color"] = json!("attention");
    }
    // `summary` first, then the rest sorted by key, as Flux orders the facts.
    let mut facts = Vec::new();
    if let Some(s) = ev.metadata.get("summary") {
        facts.push(json!({"title": "summary", "value": s}));
    }
    for (k, v) in &ev.metadata {
        if k != "summary" {
            facts.push(json!({"title": k, "value": v}));
        }
    }
    let mut items = vec![
        json!({"type": "TextBlock", "text": n.chat_title(), "size": "large", "weight": "bolder", "wrap": true}),
        message,
    ];
    let mut fact_set = json!({"type": "FactSet"});
    if !facts.is_empty() {
        fact_set["facts"] = Value::Array(facts);
    }
    items.push(fact_set);
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [{"type": "Container", "items": items}],
                "msteams": {"width": "Full"},
            }
        }],
    })
}

/// The PagerDuty dedup key: the object's uid (what Flux uses), or its identity when the uid is
/// unknown, so that an info event resolves the incident its error opened.
pub fn pagerduty_dedup_key(n: &Notification) -> String {
    match &n.uid {
        Some(uid) if !uid.is_empty() => uid.clone(),
        _ => n.event.involved_object.inventory_id(),
    }
}

/// `kind/name/<first segment of the Provider uid>`, lower-case: one status context per object
/// and cluster, as Flux names them.
fn commit_status_id(cfg: &ProviderConfig, n: &Notification) -> String {
    let first = cfg
        .uid
        .as_deref()
        .and_then(|u| u.split('-').next())
        .unwrap_or_default();
    // A Kubernetes uid starts with 8 hex digits; other backends' uids (or none) are hashed
    // into the same shape so that contexts stay short and distinct per Provider.
    let uid_part = if first.len() == 8 && first.bytes().all(|b| b.is_ascii_hexdigit()) {
        first.to_ascii_lowercase()
    } else {
        use sha2::Digest;
        let seed = cfg.uid.as_deref().unwrap_or(&cfg.id);
        hex::encode(&sha2::Sha256::digest(seed.as_bytes())[..4])
    };
    let o = &n.event.involved_object;
    format!("{}/{}/{}", o.kind, o.name, uid_part).to_lowercase()
}

/// The commit hash of a Flux revision: `main@sha1:<hash>`, `sha1:<hash>`, legacy
/// `main/<hash>`, or a bare hash.
pub fn commit_of_revision(rev: &str) -> Option<String> {
    let rev = rev.trim();
    let candidate = if let Some((_, digest)) = rev.rsplit_once('@') {
        digest
    } else {
        rev
    };
    let hash = if let Some((algo, h)) = candidate.split_once(':') {
        if algo != "sha1" && algo != "sha256" {
            return None;
        }
        h
    } else if let Some((_, h)) = candidate.rsplit_once('/') {
        h
    } else {
        candidate
    };
    let ok = (hash.len() == 40 || hash.len() == 64) && hash.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| hash.to_ascii_lowercase())
}

/// `(scheme://host[:port], owner/repo)` of a repository URL; `ssh://` and scp-like
/// `git@host:owner/repo` addresses map to https, as Flux does.
pub fn parse_git_address(addr: &str) -> Option<(String, String)> {
    let addr = addr.trim();
    let (scheme, rest) = if let Some((s, r)) = addr.split_once("://") {
        (if s == "ssh" { "https" } else { s }, r)
    } else if let Some((userhost, path)) = addr.split_once(':') {
        // scp-like: git@github.com:owner/repo.git
        let host = userhost.rsplit('@').next()?;
        let id = path.trim_start_matches('/').trim_end_matches(".git");
        return (!host.is_empty() && !id.is_empty())
            .then(|| (format!("https://{host}"), id.to_string()));
    } else {
        return None;
    };
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit('@').next()?;
    if host.is_empty() {
        return None;
    }
    let host = if scheme == "https" {
        host.strip_suffix(":22").unwrap_or(host)
    } else {
        host
    };
    let id = path.trim_matches('/').trim_end_matches(".git").to_string();
    (!id.is_empty()).then(|| (format!("{scheme}://{host}"), id))
}

fn scheme_and_host(addr: &str) -> Option<String> {
    let (scheme, rest) = addr.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

fn host_of(addr: &str) -> String {
    scheme_and_host(addr)
        .and_then(|s| s.split_once("://").map(|(_, h)| h.to_string()))
        .map(|h| h.split(':').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Escapes a GitLab project path for the URL (`group/sub/repo` -> `group%2Fsub%2Frepo`).
fn path_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Go's `cases.Title`: the first letter upper-case, the rest lower-case
/// (`ReconciliationFailed` -> `Reconciliationfailed`), which is what Flux puts in alert names.
fn title_case(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if c.is_alphanumeric() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = true;
        }
    }
    out
}

/// Splits `CamelCase` into words the way Flux does (`HealthCheckFailed` -> `Health`, `Check`,
/// `Failed`; `PDFLoader` -> `PDF`, `Loader`).
pub(crate) fn split_camel_case(src: &str) -> Vec<String> {
    fn class(c: char) -> u8 {
        if c.is_lowercase() {
            1
        } else if c.is_uppercase() {
            2
        } else if c.is_numeric() {
            3
        } else {
            4
        }
    }
    let mut runs: Vec<Vec<char>> = Vec::new();
    let mut last = 0;
    for c in src.chars() {
        let cl = class(c);
        match runs.last_mut() {
            Some(run) if cl == last => run.push(c),
            _ => runs.push(vec![c]),
        }
        last = cl;
    }
    for i in 0..runs.len().saturating_sub(1) {
        let upper_then_lower = runs[i].first().is_some_and(|c| c.is_uppercase())
            && runs[i + 1].first().is_some_and(|c| c.is_lowercase());
        if upper_then_lower {
            if let Some(c) = runs[i].pop() {
                runs[i + 1].insert(0, c);
            }
        }
    }
    runs.into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.into_iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_like_flux() {
        assert_eq!(
            split_camel_case("ReconciliationFailed"),
            ["Reconciliation", "Failed"]
        );
        assert_eq!(split_camel_case("PDFLoader"), ["PDF", "Loader"]);
        assert_eq!(title_case("ReconciliationFailed"), "Reconciliationfailed");
    }

    #[test]
    fn revisions_and_addresses() {
        let h = "a".repeat(40);
        assert_eq!(
            commit_of_revision(&format!("main@sha1:{h}")),
            Some(h.clone())
        );
        assert_eq!(commit_of_revision(&format!("sha1:{h}")), Some(h.clone()));
        assert_eq!(commit_of_revision(&format!("main/{h}")), Some(h.clone()));
        assert_eq!(commit_of_revision("v1.2.3"), None);
        assert_eq!(
            parse_git_address("https://github.com/org/repo.git"),
            Some(("https://github.com".into(), "org/repo".into()))
        );
        assert_eq!(
            parse_git_address("git@gitlab.com:group/sub/repo.git"),
            Some(("https://gitlab.com".into(), "group/sub/repo".into()))
        );
        assert_eq!(
            parse_git_address("ssh://git@github.com/org/repo"),
            Some(("https://github.com".into(), "org/repo".into()))
        );
        assert_eq!(path_escape("group/sub/repo"), "group%2Fsub%2Frepo");
        assert_eq!(
            host_of("https://x.webhook.office.com:443/a"),
            "x.webhook.office.com"
        );
    }
}
