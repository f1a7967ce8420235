//! Notifications end to end: Alerts and Providers in a MemoryBackend, deliveries to an HTTP
//! server on 127.0.0.1 that records every request, and Receivers called over TCP.

use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trueup_core::memory::MemoryBackend;
use trueup_core::traits::backend::{ApplyOptions, Backend};
use trueup_core::{Event, Notifier, ObjectRef, Severity};
use trueup_notifiers::crypto::{hmac_sha1, hmac_sha256};
use trueup_notifiers::{
    webhook_path, AlertRouter, DeliveryOptions, DeliveryReport, ReceiverServer, RouterOptions,
};

// ---------------------------------------------------------------------------------------------
// A recording HTTP server.

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

impl Recorded {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: r#"{"ok":true}"#.into(),
    }
}

#[derive(Clone)]
struct Recorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rec = Recorder {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            script: Arc::default(),
        };
        let r = rec.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let r = r.clone();
                tokio::spawn(async move { r.serve(stream).await });
            }
        });
        rec
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    async fn serve(&self, mut stream: TcpStream) {
        // Keep-alive: serve requests until the client closes.
        let mut buf = Vec::new();
        loop {
            let head_end = loop {
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p;
                }
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let mut rl = lines.next().unwrap().split(' ');
            let method = rl.next().unwrap().to_string();
            let path = rl.next().unwrap().to_string();
            let headers: BTreeMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            buf.drain(..head_end + 4);
            while buf.len() < len {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Vec<u8> = buf.drain(..len).collect();
            self.requests.lock().unwrap().push(Recorded {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
            });
            let reply = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(reply(200));
            let mut out = format!(
                "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                reply.status,
                reply.body.len()
            );
            for (k, v) in &reply.headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&reply.body);
            if stream.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.requests();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

async fn apply_yaml(backend: &MemoryBackend, text: &str) {
    for obj in trueup_core::yaml::parse_objects(text, "test.yaml").unwrap() {
        backend.apply(&obj, &ApplyOptions::default()).await.unwrap();
    }
}

async fn secret(backend: &MemoryBackend, name: &str, data: &[(&str, &str)]) {
    let mut string_data = serde_json::Map::new();
    for (k, v) in data {
        string_data.insert(k.to_string(), json!(v));
    }
    let obj = trueup_core::Object::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "flux-system"},
        "stringData": string_data,
    }))
    .unwrap();
    backend.apply(&obj, &ApplyOptions::default()).await.unwrap();
}

fn fast_options() -> RouterOptions {
    RouterOptions {
        alert_refresh: Duration::ZERO,
        delivery: DeliveryOptions {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            rate_burst: 100,
            rate_per_second: 1000.0,
            ..DeliveryOptions::default()
        },
        ..RouterOptions::default()
    }
}

fn kustomization(name: &str) -> ObjectRef {
    ObjectRef::new(
        "kustomize.toolkit.fluxcd.io",
        "Kustomization",
        "flux-system",
        name,
    )
}

fn error_event(obj: ObjectRef, message: &str) -> Event {
    Event::new(obj, Severity::Error, "ReconciliationFailed", message)
        .with_revision(format!("main@sha1:{SHA}"))
}

fn info_event(obj: ObjectRef, message: &str) -> Event {
    Event::new(obj, Severity::Info, "ReconciliationSucceeded", message)
        .with_revision(format!("main@sha1:{SHA}"))
}

/// A Provider `p` of `spec` and an Alert `a` for every Kustomization, info severity.
async fn provider_and_alert(backend: &MemoryBackend, spec: &str) {
    apply_yaml(
        backend,
        &format!(
            r#"
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: p, namespace: flux-system}}
spec:
{spec}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: a, namespace: flux-system}}
spec:
  providerRef: {{name: p}}
  eventSources:
    - kind: Kustomization
      name: "*"
"#
        ),
    )
    .await;
}

/// Delivers one event through a fresh backend with the given Provider spec and Secret.
async fn deliver(spec: &str, secret_data: &[(&str, &str)], events: &[Event]) -> Vec<Recorded> {
    let rec = Recorder::start().await;
    let backend = Arc::new(MemoryBackend::new());
    let spec = spec.replace("ADDR", &rec.url(""));
    let data: Vec<(String, String)> = secret_data
        .iter()
        .map(|(k, v)| (k.to_string(), v.replace("ADDR", &rec.url(""))))
        .collect();
    let data: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    secret(&backend, "p-secret", &data).await;
    provider_and_alert(&backend, &spec).await;
    let router = AlertRouter::with_options(backend.clone(), fast_options());
    for ev in events {
        router.notify(ev).await.unwrap();
        // Keep the order of requests equal to the order of events.
        assert!(router.wait_idle(Duration::from_secs(10)).await);
    }
    let stats = router.stats();
    assert_eq!(stats.failed, 0, "{stats:?}");
    rec.requests()
}

fn assert_no_secret_in_logs_like(report: &DeliveryReport, secret: &str) {
    if let Err(e) = &report.outcome {
        assert!(!e.contains(secret), "secret leaked in {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The seed example: Slack Provider + Alert.

#[tokio::test]
async fn seed_slack_alert_delivers_failures_of_kustomizations_helmreleases_and_terraforms() {
    let rec = Recorder::start().await;
    let backend = Arc::new(MemoryBackend::new());
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/seed/notifications.yaml"
    ))
    .unwrap();
    apply_yaml(&backend, &seed).await;
    let hook = rec.url("/services/T000/B000/XXXXSECRET");
    secret(&backend, "slack-webhook-url", &[("address", &hook)]).await;

    let reports: Arc<Mutex<Vec<DeliveryReport>>> = Arc::default();
    let r2 = reports.clone();
    let router = AlertRouter::with_options(backend.clone(), fast_options())
        .on_delivery(move |r| r2.lock().unwrap().push(r.clone()));

    let ks = kustomization("apps");
    let hr = ObjectRef::new(
        "helm.toolkit.fluxcd.io",
        "HelmRelease",
        "flux-system",
        "podinfo",
    );
    let tf = ObjectRef::new("infra.contrib.fluxcd.io", "Terraform", "flux-system", "vpc");
    let git = ObjectRef::new(
        "source.toolkit.fluxcd.io",
        "GitRepository",
        "flux-system",
        "fleet",
    );
    let other_ns = ObjectRef::new("kustomize.toolkit.fluxcd.io", "Kustomization", "apps", "x");

    // Info events: the Alert wants errors only (and nothing failed yet, so no recovery).
    router
        .notify(&info_event(ks.clone(), "Applied revision"))
        .await
        .unwrap();
    router
        .notify(&info_event(hr.clone(), "Upgrade succeeded"))
        .await
        .unwrap();
    // Errors of kinds or namespaces the Alert does not select.
    router
        .notify(&error_event(git.clone(), "auth failed"))
        .await
        .unwrap();
    router
        .notify(&error_event(other_ns, "elsewhere"))
        .await
        .unwrap();
    // Errors it selects.
    router
        .notify(&error_event(ks.clone(), "kustomize build failed"))
        .await
        .unwrap();
    router
        .notify(&Event::new(
            hr.clone(),
            Severity::Error,
            "UpgradeFailed",
            "Helm upgrade failed",
        ))
        .await
        .unwrap();
    router
        .notify(&Event::new(
            tf.clone(),
            Severity::Error,
            "TFExecApplyFailed",
            "error running Apply",
        ))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);

    let reqs = rec.wait_for(3).await;
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/services/T000/B000/XXXXSECRET");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), None);
    }
    let ev = error_event(ks.clone(), "kustomize build failed");
    assert_eq!(
        reqs[0].json(),
        json!({
            "channel": "#deployments",
            "username": "trueup",
            "icon_url": "",
            "icon_emoji": "",
            "attachments": [{
                "color": "danger",
                "author_name": "kustomization/apps.flux-system",
                "text": "kustomize build failed",
                "mrkdwn_in": ["text"],
                "fields": [
                    {"title": "revision", "value": ev.metadata["revision"], "short": false},
                    {"title": "summary", "value": "Flux reconciliation failure in production", "short": false},
                ],
            }],
        })
    );
    assert_eq!(
        reqs[1].json()["attachments"][0]["author_name"],
        "helmrelease/podinfo.flux-system"
    );
    assert_eq!(
        reqs[1].json()["attachments"][0]["text"],
        "Helm upgrade failed"
    );
    assert_eq!(
        reqs[2].json()["attachments"][0]["author_name"],
        "terraform/vpc.flux-system"
    );
    let stats = router.stats();
    assert_eq!((stats.enqueued, stats.delivered, stats.failed), (3, 3, 0));
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 3);
    assert!(reports
        .iter()
        .all(|r| r.outcome.is_ok() && r.provider == "flux-system/slack-ops"));
}

// ---------------------------------------------------------------------------------------------
// Each provider type: the exact request.

#[tokio::test]
async fn slack_chat_post_message_with_bearer_token() {
    let ev = error_event(kustomization("apps"), "failed");
    let reqs = deliver(
        "  type: slack\n  channel: C123\n  username: flux-bot\n  address: ADDR/api/chat.postMessage\n  secretRef: {name: p-secret}",
        &[("token", "xoxb-secret")],
        std::slice::from_ref(&ev),
    )
    .await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/api/chat.postMessage");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer xoxb-secret"));
    let body = reqs[0].json();
    assert_eq!(body["channel"], "C123");
    assert_eq!(body["username"], "flux-bot");
    assert_eq!(body["attachments"][0]["color"], "danger");
}

#[tokio::test]
async fn slack_web_api_ok_false_is_a_failure() {
    let rec = Recorder::start().await;
    rec.script([Reply {
        status: 200,
        headers: vec![],
        body: r#"{"ok":false,"error":"channel_not_found"}"#.into(),
    }]);
    let backend = Arc::new(MemoryBackend::new());
    secret(&backend, "p-secret", &[("token", "xoxb-secret")]).await;
    provider_and_alert(
        &backend,
        &format!(
            "  type: slack\n  address: {}\n  secretRef: {{name: p-secret}}",
            rec.url("/api/chat.postMessage")
        ),
    )
    .await;
    let reports: Arc<Mutex<Vec<DeliveryReport>>> = Arc::default();
    let r2 = reports.clone();
    let router = AlertRouter::with_options(backend.clone(), fast_options())
        .on_delivery(move |r| r2.lock().unwrap().push(r.clone()));
    router
        .notify(&error_event(kustomization("apps"), "x"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(router.stats().failed, 1);
    let reports = reports.lock().unwrap();
    let err = reports[0].outcome.clone().unwrap_err();
    assert!(err.contains("channel_not_found"), "{err}");
    assert_no_secret_in_logs_like(&reports[0], "xoxb-secret");
}

#[tokio::test]
async fn generic_posts_the_flux_event_with_headers() {
    let ev = error_event(kustomization("apps"), "failed");
    let reqs = deliver(
        "  type: generic\n  secretRef: {name: p-secret}",
        &[
            ("address", "ADDR/events"),
            ("headers", "X-Team: platform\nAuthorization: Bearer abc\n"),
        ],
        std::slice::from_ref(&ev),
    )
    .await;
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/events");
    assert_eq!(r.header("gotk-component"), Some("trueup"));
    assert_eq!(r.header("x-team"), Some("platform"));
    assert_eq!(r.header("authorization"), Some("Bearer abc"));
    assert_eq!(r.header("x-signature"), None);
    let body = r.json();
    assert_eq!(body["involvedObject"]["kind"], "Kustomization");
    assert_eq!(body["involvedObject"]["name"], "apps");
    assert_eq!(body["involvedObject"]["namespace"], "flux-system");
    assert_eq!(
        body["involvedObject"]["apiVersion"],
        "kustomize.toolkit.fluxcd.io/v1"
    );
    assert_eq!(body["severity"], "error");
    assert_eq!(body["reason"], "ReconciliationFailed");
    assert_eq!(body["message"], "failed");
    assert_eq!(body["timestamp"], ev.timestamp.as_str());
    assert_eq!(body["reportingController"], "trueup");
    assert_eq!(body["metadata"]["revision"], format!("main@sha1:{SHA}"));
}

#[tokio::test]
async fn generic_hmac_signs_the_body() {
    let reqs = deliver(
        "  type: generic-hmac\n  address: ADDR/hook\n  secretRef: {name: p-secret}",
        &[("token", "hmac-key")],
        &[error_event(kustomization("apps"), "failed")],
    )
    .await;
    assert_eq!(reqs.len(), 1);
    let expected = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"hmac-key", &reqs[0].body))
    );
    assert_eq!(reqs[0].header("x-signature"), Some(expected.as_str()));
    assert_eq!(reqs[0].json()["message"], "failed");
}

#[tokio::test]
async fn github_commit_status_on_the_revision() {
    let reqs = deliver(
        "  type: github\n  address: ADDR/org/repo.git\n  secretRef: {name: p-secret}",
        &[("token", "ghp_secret")],
        &[
            Event::new(
                kustomization("apps"),
                Severity::Info,
                "Progressing",
                "ignored",
            )
            .with_revision(format!("main@sha1:{SHA}")),
            error_event(kustomization("apps"), "failed"),
            info_event(kustomization("apps"), "ok"),
        ],
    )
    .await;
    // Progressing is skipped, as Flux does; the info event after the error is reported (as
    // a recovery) with state success.
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    let r = &reqs[0];
    assert_eq!(r.path, format!("/api/v3/repos/org/repo/statuses/{SHA}"));
    assert_eq!(r.header("authorization"), Some("Bearer ghp_secret"));
    assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
    let context = r.json()["context"].as_str().unwrap().to_string();
    assert!(
        context.starts_with("kustomization/apps/")
            && context.len() == "kustomization/apps/".len() + 8,
        "{context}"
    );
    assert_eq!(
        r.json(),
        json!({"state": "failure", "context": context, "description": "reconciliation failed"})
    );
    assert_eq!(
        reqs[1].json(),
        json!({"state": "success", "context": context, "description": "reconciliation succeeded"})
    );
}

#[tokio::test]
async fn gitlab_commit_status() {
    let reqs = deliver(
        "  type: gitlab\n  address: ADDR/group/sub/repo\n  secretRef: {name: p-secret}",
        &[("token", "glpat-secret")],
        &[error_event(kustomization("apps"), "failed")],
    )
    .await;
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        r.path,
        format!("/api/v4/projects/group%2Fsub%2Frepo/statuses/{SHA}")
    );
    assert_eq!(r.header("private-token"), Some("glpat-secret"));
    let name = r.json()["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("kustomization/apps/"), "{name}");
    assert_eq!(
        r.json(),
        json!({"state": "failed", "name": name, "description": "reconciliation failed"})
    );
}

#[tokio::test]
async fn msteams_adaptive_card() {
    let ev = error_event(kustomization("apps"), "failed");
    let reqs = deliver(
        "  type: msteams\n  secretRef: {name: p-secret}",
        &[("address", "ADDR/workflows/abc")],
        std::slice::from_ref(&ev),
    )
    .await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].json(),
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{
                        "type": "Container",
                        "items": [
                            {"type": "TextBlock", "text": "kustomization/apps.flux-system", "size": "large", "weight": "bolder", "wrap": true},
                            {"type": "TextBlock", "text": "failed", "wrap": true, "color": "attention"},
                            {"type": "FactSet", "facts": [{"title": "revision", "value": ev.metadata["revision"]}]},
                        ],
                    }],
                    "msteams": {"width": "Full"},
                },
            }],
        })
    );
}

#[test]
fn msteams_message_card_for_office_connectors() {
    use trueup_notifiers::{build_requests, Notification, ProviderConfig, ProviderType};
    let cfg = ProviderConfig::new(
        ProviderType::MsTeams,
        "ns/p",
        "https://x.webhook.office.com/webhookb2/secret",
    );
    let ev = Event::new(
        kustomization("apps"),
        Severity::Error,
        "ReconciliationFailed",
        "failed",
    );
    let reqs = build_requests(&cfg, &Notification::new(ev)).unwrap();
    assert_eq!(
        reqs[0].json().unwrap(),
        json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": "FF0000",
            "summary": "kustomization/apps.flux-system",
            "sections": [{"activityTitle": "failed", "activitySubtitle": "kustomization/apps.flux-system", "facts": []}],
        })
    );
    // Debug output hides the address (it embeds the webhook's secret).
    assert!(!format!("{cfg:?} {:?}", reqs[0]).contains("secret"));
}

#[tokio::test]
async fn discord_uses_the_slack_compatible_endpoint() {
    let reqs = deliver(
        "  type: discord\n  username: bot\n  secretRef: {name: p-secret}",
        &[("address", "ADDR/api/webhooks/1/tok")],
        &[error_event(kustomization("apps"), "failed")],
    )
    .await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/api/webhooks/1/tok/slack");
    let body = reqs[0].json();
    assert_eq!(body["username"], "bot");
    assert_eq!(body["channel"], "");
    assert_eq!(body["attachments"][0]["color"], "danger");
    assert_eq!(
        body["attachments"][0]["author_name"],
        "kustomization/apps.flux-system"
    );
}

#[tokio::test]
async fn pagerduty_triggers_on_error_and_resolves_on_info() {
    let err = error_event(kustomization("apps"), "failed");
    let ok = info_event(kustomization("apps"), "applied");
    let reqs = deliver(
        "  type: pagerduty\n  address: ADDR\n  channel: R0UTINGKEY",
        &[],
        &[err.clone(), ok.clone()],
    )
    .await;
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    assert_eq!(reqs[0].path, "/v2/enqueue");
    let trigger = reqs[0].json();
    let dedup = trigger["dedup_key"].as_str().unwrap().to_string();
    assert!(!dedup.is_empty());
    assert_eq!(
        trigger,
        json!({
            "routing_key": "R0UTINGKEY",
            "event_action": "trigger",
            "dedup_key": dedup,
            "payload": {
                "summary": "reconciliation failed: kustomization/apps",
                "source": "Flux trueup",
                "severity": "error",
                "timestamp": err.timestamp,
                "component": "apps",
                "group": "Kustomization",
                "custom_details": {"message": "failed", "metadata": {"revision": format!("main@sha1:{SHA}")}},
            },
        })
    );
    assert_eq!(reqs[1].path, "/v2/enqueue");
    assert_eq!(
        reqs[1].json(),
        json!({"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": dedup})
    );
    assert_eq!(reqs[2].path, "/v2/change/enqueue");
    assert_eq!(
        reqs[2].json()["payload"]["summary"],
        "reconciliation succeeded: kustomization/apps"
    );
}

#[tokio::test]
async fn alertmanager_posts_an_alert_array() {
    let ev = error_event(kustomization("apps"), "failed");
    let reqs = deliver(
        "  type: alertmanager\n  address: ADDR/api/v2/alerts\n  secretRef: {name: p-secret}",
        &[("token", "am-token")],
        std::slice::from_ref(&ev),
    )
    .await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/api/v2/alerts");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer am-token"));
    assert_eq!(
        reqs[0].json(),
        json!([{
            "status": "firing",
            "labels": {
                "alertname": "FluxKustomizationReconciliationfailed",
                "severity": "error",
                "reason": "ReconciliationFailed",
                "kind": "Kustomization",
                "name": "apps",
                "namespace": "flux-system",
                "reportingcontroller": "trueup",
                "revision": format!("main@sha1:{SHA}"),
            },
            "annotations": {"message": "failed"},
            "startsAt": ev.timestamp,
            "endsAt": "0001-01-01T00:00:00Z",
        }])
    );
}

#[tokio::test]
async fn opsgenie_with_genie_key() {
    let reqs = deliver(
        "  type: opsgenie\n  address: ADDR/v2/alerts\n  secretRef: {name: p-secret}",
        &[("token", "og-key")],
        &[error_event(kustomization("apps"), "failed")],
    )
    .await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), Some("GenieKey og-key"));
    assert_eq!(
        reqs[0].json(),
        json!({
            "message": "Kustomization/apps",
            "description": "failed",
            "details": {"revision": format!("main@sha1:{SHA}"), "severity": "error"},
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Alert filters.

#[tokio::test]
async fn alert_filters_labels_regexes_metadata_and_suspend() {
    let rec = Recorder::start().await;
    let backend = Arc::new(MemoryBackend::new());
    apply_yaml(
        &backend,
        &format!(
            r#"
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: p, namespace: flux-system}}
spec: {{type: generic, address: "{}"}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: labelled, namespace: flux-system}}
spec:
  providerRef: {{name: p}}
  eventSources:
    - kind: Kustomization
      name: "*"
      matchLabels: {{team: web}}
  inclusionList: ["^deploy"]
  exclusionList: ["ignore me"]
  eventMetadata: {{cluster: prod, revision: not-this}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: off, namespace: flux-system}}
spec:
  providerRef: {{name: p}}
  suspend: true
  eventSources: [{{kind: Kustomization, name: "*"}}]
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: web, namespace: flux-system, labels: {{team: web}}}}
spec: {{interval: 1m, path: ./web, prune: true, sourceRef: {{kind: GitRepository, name: fleet}}}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: db, namespace: flux-system, labels: {{team: db}}}}
spec: {{interval: 1m, path: ./db, prune: true, sourceRef: {{kind: GitRepository, name: fleet}}}}
"#,
            rec.url("/x")
        ),
    )
    .await;
    let router = AlertRouter::with_options(backend.clone(), fast_options());
    router
        .notify(&error_event(kustomization("db"), "deploy failed"))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("web"), "build failed"))
        .await
        .unwrap();
    router
        .notify(&error_event(
            kustomization("web"),
            "deploy failed, ignore me",
        ))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("web"), "deploy failed"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let body = reqs[0].json();
    assert_eq!(body["message"], "deploy failed");
    assert_eq!(body["metadata"]["cluster"], "prod");
    // The event's own metadata wins over the Alert's.
    assert_eq!(body["metadata"]["revision"], format!("main@sha1:{SHA}"));
    // The object was read: its uid is in the payload.
    assert!(body["involvedObject"]["uid"].is_string());
}

// ---------------------------------------------------------------------------------------------
// Beyond Flux: dedup, threshold, recovery, 429, retries, dead endpoints.

async fn generic_setup(
    rec: &Recorder,
    alert_extra: &str,
    opts: RouterOptions,
) -> (Arc<MemoryBackend>, AlertRouter) {
    let backend = Arc::new(MemoryBackend::new());
    apply_yaml(
        &backend,
        &format!(
            r#"
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: p, namespace: flux-system}}
spec: {{type: generic, address: "{}"}}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata:
  name: a
  namespace: flux-system
{alert_extra}
spec:
  providerRef: {{name: p}}
  eventSeverity: error
  eventSources: [{{kind: Kustomization, name: "*"}}]
"#,
            rec.url("/x")
        ),
    )
    .await;
    let router = AlertRouter::with_options(backend.clone(), opts);
    (backend, router)
}

#[tokio::test]
async fn identical_events_are_sent_once_per_window() {
    let rec = Recorder::start().await;
    let (_b, router) = generic_setup(&rec, "", fast_options()).await;
    for _ in 0..3 {
        router
            .notify(&error_event(kustomization("apps"), "same"))
            .await
            .unwrap();
    }
    router
        .notify(&error_event(kustomization("apps"), "different"))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("other"), "same"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(rec.requests().len(), 3);
    assert_eq!(router.stats().suppressed_duplicates, 2);

    // A zero window (here by annotation) disables dedup.
    let rec = Recorder::start().await;
    let (_b, router) = generic_setup(
        &rec,
        "  annotations: {notifications.trueup.dev/dedup-window: \"0\"}",
        fast_options(),
    )
    .await;
    for _ in 0..3 {
        router
            .notify(&error_event(kustomization("apps"), "same"))
            .await
            .unwrap();
    }
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(rec.requests().len(), 3);
}

#[tokio::test]
async fn threshold_holds_back_isolated_failures() {
    let rec = Recorder::start().await;
    let (_b, router) = generic_setup(
        &rec,
        "  annotations: {notifications.trueup.dev/threshold: 3/10m}",
        fast_options(),
    )
    .await;
    router
        .notify(&error_event(kustomization("apps"), "f1"))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("apps"), "f2"))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("other"), "o1"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(rec.requests().len(), 0);
    router
        .notify(&error_event(kustomization("apps"), "f3"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].json()["message"], "f3");
    assert_eq!(router.stats().suppressed_below_threshold, 3);

    // Global option: the same with RouterOptions::threshold.
    let rec = Recorder::start().await;
    let opts = RouterOptions {
        threshold: Some(trueup_notifiers::Threshold {
            failures: 2,
            within: Duration::from_secs(60),
        }),
        ..fast_options()
    };
    let (_b, router) = generic_setup(&rec, "", opts).await;
    router
        .notify(&error_event(kustomization("apps"), "f1"))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("apps"), "f2"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(rec.requests().len(), 1);
}

#[tokio::test]
async fn recovery_message_after_errors() {
    let rec = Recorder::start().await;
    let (_b, router) = generic_setup(&rec, "", fast_options()).await;
    // An error-only Alert: the success that follows a reported failure still reaches it.
    router
        .notify(&info_event(kustomization("apps"), "fine"))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("apps"), "broken"))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("apps"), "still broken"))
        .await
        .unwrap();
    router
        .notify(&info_event(
            kustomization("apps"),
            "Applied revision main@sha1:0123",
        ))
        .await
        .unwrap();
    router
        .notify(&info_event(kustomization("apps"), "Applied again"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    let rec_body = reqs[2].json();
    assert_eq!(rec_body["severity"], "info");
    assert_eq!(rec_body["reason"], "ReconciliationSucceeded");
    assert_eq!(
        rec_body["message"],
        "Recovered after 2 failures: Applied revision main@sha1:0123"
    );
    assert_eq!(rec_body["metadata"]["recovered"], "true");
    assert_eq!(router.stats().recoveries, 1);
}

#[tokio::test]
async fn backs_off_on_429_honouring_retry_after() {
    let rec = Recorder::start().await;
    rec.script([Reply {
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
        body: "{}".into(),
    }]);
    let (_b, router) = generic_setup(&rec, "", fast_options()).await;
    router
        .notify(&error_event(kustomization("apps"), "x"))
        .await
        .unwrap();
    router
        .notify(&error_event(kustomization("apps"), "y"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 3);
    let waited = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    // The retried request is the same one.
    assert_eq!(reqs[0].body, reqs[1].body);
    let s = router.stats();
    assert_eq!(
        (s.throttled, s.retries, s.delivered, s.failed),
        (1, 1, 2, 0)
    );
}

#[tokio::test]
async fn retries_5xx_and_gives_up_after_max_attempts() {
    let rec = Recorder::start().await;
    rec.script([reply(500), reply(502)]);
    let (_b, router) = generic_setup(&rec, "", fast_options()).await;
    router
        .notify(&error_event(kustomization("apps"), "x"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(rec.requests().len(), 3);
    let s = router.stats();
    assert_eq!((s.retries, s.delivered, s.failed), (2, 1, 0));

    rec.script([reply(503), reply(503), reply(503), reply(503), reply(503)]);
    router
        .notify(&error_event(kustomization("apps"), "y"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(rec.requests().len(), 3 + 5);
    assert_eq!(router.stats().failed, 1);

    // A 4xx other than 429 is not retried.
    rec.script([reply(404)]);
    router
        .notify(&error_event(kustomization("apps"), "z"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(rec.requests().len(), 9);
    assert_eq!(router.stats().failed, 2);
    assert_eq!(router.provider_stats()["flux-system/p"].failed, 2);
}

#[tokio::test]
async fn a_dead_endpoint_does_not_block_and_its_queue_is_bounded() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let backend = Arc::new(MemoryBackend::new());
    let secret_path = "/services/T0/B0/DEADSECRET";
    secret(
        &backend,
        "p-secret",
        &[("address", &format!("http://{addr}{secret_path}"))],
    )
    .await;
    provider_and_alert(
        &backend,
        "  type: slack\n  timeout: 1s\n  secretRef: {name: p-secret}",
    )
    .await;
    let mut opts = fast_options();
    opts.dedup_window = Duration::ZERO;
    opts.delivery.queue_capacity = 4;
    opts.delivery.max_attempts = 1;
    let reports: Arc<Mutex<Vec<DeliveryReport>>> = Arc::default();
    let r2 = reports.clone();
    let router = AlertRouter::with_options(backend.clone(), opts)
        .on_delivery(move |r| r2.lock().unwrap().push(r.clone()));
    let start = Instant::now();
    for i in 0..50 {
        router
            .notify(&error_event(kustomization("apps"), &format!("e{i}")))
            .await
            .unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "notify blocked: {:?}",
        start.elapsed()
    );
    let s = router.stats();
    // One in flight at most, four queued, the rest dropped.
    assert!(s.dropped >= 45, "{s:?}");
    assert!(s.enqueued <= 5, "{s:?}");
    // Deliveries time out (1s each) and fail; the failure message hides the webhook secret.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reports = reports.lock().unwrap();
    assert!(!reports.is_empty());
    for r in reports.iter() {
        let e = r.outcome.clone().unwrap_err();
        assert!(!e.contains("DEADSECRET"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Receivers.

async fn call(addr: SocketAddr, raw: Vec<u8>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer before reading everything (413): ignore write errors.
    let _ = s.write_all(&raw).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn post(path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn receiver_setup() -> (SocketAddr, Arc<Mutex<Vec<ObjectRef>>>) {
    let backend = Arc::new(MemoryBackend::new());
    apply_yaml(
        &backend,
        r#"
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: gh, namespace: flux-system}
spec:
  type: github
  events: [push]
  secretRef: {name: webhook-token}
  resources:
    - kind: GitRepository
      name: fleet
    - apiVersion: kustomize.toolkit.fluxcd.io/v1
      kind: Kustomization
      name: "*"
      matchLabels: {tier: apps}
---
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: gl, namespace: flux-system}
spec:
  type: gitlab
  secretRef: {name: webhook-token}
  resources: [{kind: GitRepository, name: fleet}]
---
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: hmac, namespace: flux-system}
spec:
  type: generic-hmac
  secretRef: {name: webhook-token}
  resources: [{kind: GitRepository, name: fleet}]
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet, namespace: flux-system}
spec: {interval: 1m, url: "https://example.com/fleet", ref: {branch: main}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: web, namespace: flux-system, labels: {tier: apps}}
spec: {interval: 1m, path: ./web, prune: true, sourceRef: {kind: GitRepository, name: fleet}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: infra, namespace: flux-system, labels: {tier: infra}}
spec: {interval: 1m, path: ./infra, prune: true, sourceRef: {kind: GitRepository, name: fleet}}
"#,
    )
    .await;
    secret(&backend, "webhook-token", &[("token", "s3cret")]).await;
    let calls: Arc<Mutex<Vec<ObjectRef>>> = Arc::default();
    let c2 = calls.clone();
    let server = ReceiverServer::new(backend.clone(), move |r| c2.lock().unwrap().push(r));
    let running = server.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (running.local_addr, calls)
}

fn github_sig(body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(b"s3cret", body)))
}

#[tokio::test]
async fn receiver_github_push_requests_reconciles() {
    let (addr, calls) = receiver_setup().await;
    let path = webhook_path("s3cret", "gh", "flux-system");
    let body = br#"{"ref":"refs/heads/main","after":"0123"}"#;
    let (status, _) = call(
        addr,
        post(
            &path,
            &[
                ("X-GitHub-Event", "push".into()),
                ("X-Hub-Signature-256", github_sig(body)),
                ("Content-Type", "application/json".into()),
            ],
            body,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            ObjectRef::new(
                "source.toolkit.fluxcd.io",
                "GitRepository",
                "flux-system",
                "fleet"
            ),
            ObjectRef::new(
                "kustomize.toolkit.fluxcd.io",
                "Kustomization",
                "flux-system",
                "web"
            ),
        ]
    );
}

#[tokio::test]
async fn receiver_rejects_bad_signatures_and_answers_ping() {
    let (addr, calls) = receiver_setup().await;
    let path = webhook_path("s3cret", "gh", "flux-system");
    let body = br#"{"ref":"refs/heads/main"}"#;
    let forged = format!("sha256={}", hex::encode(hmac_sha256(b"wrong", body)));
    let (status, _) = call(
        addr,
        post(
            &path,
            &[
                ("X-GitHub-Event", "push".into()),
                ("X-Hub-Signature-256", forged),
            ],
            body,
        ),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        addr,
        post(&path, &[("X-GitHub-Event", "push".into())], body),
    )
    .await;
    assert_eq!(status, 401);
    // A valid signature over another body.
    let (status, _) = call(
        addr,
        post(
            &path,
            &[
                ("X-GitHub-Event", "push".into()),
                ("X-Hub-Signature-256", github_sig(b"other")),
            ],
            body,
        ),
    )
    .await;
    assert_eq!(status, 401);
    // ping: 200, nothing triggered.
    let (status, _) = call(
        addr,
        post(
            &path,
            &[
                ("X-GitHub-Event", "ping".into()),
                ("X-Hub-Signature-256", github_sig(body)),
            ],
            body,
        ),
    )
    .await;
    assert_eq!(status, 200);
    // An event the Receiver does not accept.
    let (status, _) = call(
        addr,
        post(
            &path,
            &[
                ("X-GitHub-Event", "issues".into()),
                ("X-Hub-Signature-256", github_sig(body)),
            ],
            body,
        ),
    )
    .await;
    assert_eq!(status, 400);
    // Unknown path, wrong method.
    let (status, _) = call(addr, post("/hook/0000", &[], b"")).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
    )
    .await;
    assert_eq!(status, 405);
    assert!(calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn receiver_rejects_oversized_bodies() {
    let (addr, calls) = receiver_setup().await;
    let path = webhook_path("s3cret", "gh", "flux-system");
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    let (status, _) = call(addr, raw.into_bytes()).await;
    assert_eq!(status, 413);
    assert!(calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn receiver_gitlab_and_generic_hmac() {
    let (addr, calls) = receiver_setup().await;
    let gl = webhook_path("s3cret", "gl", "flux-system");
    let (status, _) = call(
        addr,
        post(
            &gl,
            &[
                ("X-Gitlab-Token", "nope".into()),
                ("X-Gitlab-Event", "Push Hook".into()),
            ],
            b"{}",
        ),
    )
    .await;
    assert_eq!(status, 401);
    assert!(calls.lock().unwrap().is_empty());
    let (status, _) = call(
        addr,
        post(
            &gl,
            &[
                ("X-Gitlab-Token", "s3cret".into()),
                ("X-Gitlab-Event", "Push Hook".into()),
            ],
            b"{}",
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(calls.lock().unwrap().len(), 1);

    let hm = webhook_path("s3cret", "hmac", "flux-system");
    let body = b"{\"x\":1}";
    let sig = format!("sha1={}", hex::encode(hmac_sha1(b"s3cret", body)));
    let (status, _) = call(addr, post(&hm, &[("X-Signature", sig)], body)).await;
    assert_eq!(status, 200);
    let (status, _) = call(addr, post(&hm, &[("X-Signature", "sha1=00".into())], body)).await;
    assert_eq!(status, 401);
    assert_eq!(calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn proxy_secret_ref_is_honoured() {
    // The recorder acts as the HTTP proxy: it sees the absolute-form request for the target.
    let rec = Recorder::start().await;
    let backend = Arc::new(MemoryBackend::new());
    secret(&backend, "proxy", &[("address", &rec.url(""))]).await;
    provider_and_alert(
        &backend,
        "  type: generic\n  address: http://hooks.example.invalid/events\n  proxySecretRef: {name: proxy}",
    )
    .await;
    let router = AlertRouter::with_options(backend.clone(), fast_options());
    router
        .notify(&error_event(kustomization("apps"), "via proxy"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 1, "{:?}", router.stats());
    assert_eq!(reqs[0].path, "http://hooks.example.invalid/events");
    assert_eq!(reqs[0].json()["message"], "via proxy");
}

#[tokio::test]
async fn receiver_lists_webhook_paths() {
    let backend = Arc::new(MemoryBackend::new());
    apply_yaml(
        &backend,
        r#"
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: gh, namespace: flux-system}
spec:
  type: github
  secretRef: {name: webhook-token}
  resources: [{kind: GitRepository, name: fleet}]
"#,
    )
    .await;
    secret(&backend, "webhook-token", &[("token", "s3cret")]).await;
    let server = ReceiverServer::new(backend.clone(), |_| {});
    let paths = server.webhook_paths().await.unwrap();
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0].0.name, "gh");
    assert_eq!(paths[0].1, webhook_path("s3cret", "gh", "flux-system"));
}

#[tokio::test]
async fn an_invalid_ca_fails_the_delivery_without_panicking() {
    let rec = Recorder::start().await;
    let backend = Arc::new(MemoryBackend::new());
    secret(&backend, "ca", &[("ca.crt", "not a certificate")]).await;
    provider_and_alert(
        &backend,
        &format!(
            "  type: generic\n  address: {}\n  certSecretRef: {{name: ca}}",
            rec.url("/x")
        ),
    )
    .await;
    let reports: Arc<Mutex<Vec<DeliveryReport>>> = Arc::default();
    let r2 = reports.clone();
    let router = AlertRouter::with_options(backend.clone(), fast_options())
        .on_delivery(move |r| r2.lock().unwrap().push(r.clone()));
    router
        .notify(&error_event(kustomization("apps"), "x"))
        .await
        .unwrap();
    assert!(router.wait_idle(Duration::from_secs(10)).await);
    assert_eq!(rec.requests().len(), 0);
    let reports = reports.lock().unwrap();
    let err = reports[0].outcome.clone().unwrap_err();
    assert!(err.contains("CA certificate"), "{err}");
}

#[test]
fn discord_keeps_the_query() {
    use trueup_notifiers::{build_requests, Notification, ProviderConfig, ProviderType};
    let cfg = ProviderConfig::new(
        ProviderType::Discord,
        "ns/p",
        "https://discord.com/api/webhooks/1/t?thread_id=9",
    );
    let ev = Event::new(
        kustomization("apps"),
        Severity::Error,
        "ReconciliationFailed",
        "failed",
    );
    let reqs = build_requests(&cfg, &Notification::new(ev)).unwrap();
    assert_eq!(
        reqs[0].url,
        "https://discord.com/api/webhooks/1/t/slack?thread_id=9"
    );
}
