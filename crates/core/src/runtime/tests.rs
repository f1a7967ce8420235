use super::*;
use crate::api::{ApiError, FluxKind, GoDuration};
use crate::memory::MemoryBackend;
use crate::reconcile::Outcome;
use crate::status::{READY, STALLED};
use crate::traits::ApplyOptions;
use async_trait::async_trait;
use serde_json::{json, Value};

/// A reconciler whose behaviour each object scripts through the `test/behavior` annotation:
/// `ok` (default), `fail`, or `slow` (never finishes on its own).
struct Scripted {
    log: Arc<Mutex<Vec<String>>>,
}

fn dur(obj: &Object, field: &str) -> Option<Duration> {
    obj.spec()?
        .get(field)?
        .as_str()
        .and_then(|s| GoDuration::parse(s).ok())
        .map(|d| d.duration())
}

#[async_trait]
impl Reconciler for Scripted {
    fn kind(&self) -> GroupKind {
        FluxKind::Kustomization.into()
    }

    fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError> {
        let interval = dur(obj, "interval").unwrap_or(Duration::from_secs(600));
        let deps = obj
            .spec()
            .and_then(|s| s.get("dependsOn"))
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["name"].as_str())
                    .map(|n| FluxKind::Kustomization.ref_to("flux-system", n))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Schedule {
            interval,
            retry_interval: dur(obj, "retryInterval").unwrap_or(interval),
            timeout: dur(obj, "timeout").unwrap_or(Duration::from_secs(60)),
            suspend: obj
                .spec()
                .and_then(|s| s.get("suspend"))
                .and_then(|s| s.as_bool())
                .unwrap_or(false),
            depends_on: deps,
            watches: vec![],
        })
    }

    async fn reconcile(&self, obj: &Object, _backend: &dyn Backend) -> Outcome {
        self.log.lock().unwrap().push(obj.name().to_string());
        let status = Status::from_value(obj.status());
        let now = crate::time::now_rfc3339();
        match obj.annotation("test/behavior") {
            Some("fail") => {
                Outcome::failed(obj, status, "Boom", format!("{} failed", obj.name()), false)
            }
            Some("slow") => {
                tokio::time::sleep(Duration::from_secs(3600 * 24)).await;
                unreachable!("the runtime's timeout ends this first")
            }
            _ => {
                let mut status = status;
                status.mark_ready("Succeeded", "ok", obj.generation(), &now);
                Outcome::new(Verdict::Ready, status)
            }
        }
    }

    async fn finalize(&self, obj: &Object, _backend: &dyn Backend) -> Vec<Event> {
        let entry = format!("finalize {}", obj.name());
        let mut log = self.log.lock().unwrap();
        let before = log.iter().filter(|l| **l == entry).count();
        log.push(entry);
        if obj.annotation("test/finalize") == Some("fail-once") && before == 0 {
            return vec![Event::new(
                obj.object_ref(),
                crate::event::Severity::Error,
                "PruneFailed",
                "boom",
            )];
        }
        Vec::new()
    }
}

fn kustomization(name: &str, spec: serde_json::Value, behavior: Option<&str>) -> Object {
    let mut o = Object::new(
        "kustomize.toolkit.fluxcd.io/v1",
        "Kustomization",
        Some("flux-system"),
        name,
    );
    o.0.insert("spec".into(), spec);
    if let Some(b) = behavior {
        o.set_annotation("test/behavior", b);
    }
    o
}

async fn setup(
    objs: Vec<Object>,
    options: RuntimeOptions,
) -> (Arc<MemoryBackend>, Runtime, Arc<Mutex<Vec<String>>>) {
    let backend = Arc::new(MemoryBackend::new());
    for o in &objs {
        backend.apply(o, &ApplyOptions::default()).await.unwrap();
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let rt = Runtime::builder(backend.clone())
        .reconciler(Scripted { log: log.clone() })
        .options(options)
        .build();
    (backend, rt, log)
}

fn status_of(snap: &[ObjectSummary], name: &str) -> Status {
    snap.iter()
        .find(|s| s.object.name == name)
        .unwrap()
        .status
        .clone()
}

#[tokio::test(start_paused = true)]
async fn dependencies_run_first_and_dependents_follow_at_once() {
    let (_, rt, log) = setup(
        vec![
            kustomization(
                "apps",
                json!({"interval": "10m", "dependsOn": [{"name": "infra"}]}),
                None,
            ),
            kustomization("infra", json!({"interval": "10m"}), None),
        ],
        RuntimeOptions::default(),
    )
    .await;
    let started = Instant::now();
    let snap = rt
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(snap.iter().all(|s| s.is_ready()), "{snap:?}");
    assert_eq!(*log.lock().unwrap(), ["infra", "apps"]);
    // apps did not wait for its 30s dependency requeue: infra becoming Ready triggered it.
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_dependency_cycle_stalls_its_members_only() {
    let (_, rt, _) = setup(
        vec![
            kustomization(
                "a",
                json!({"interval": "10m", "dependsOn": [{"name": "b"}]}),
                None,
            ),
            kustomization(
                "b",
                json!({"interval": "10m", "dependsOn": [{"name": "a"}]}),
                None,
            ),
            kustomization("c", json!({"interval": "10m"}), None),
        ],
        RuntimeOptions::default(),
    )
    .await;
    let snap = rt
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    for name in ["a", "b"] {
        let st = status_of(&snap, name);
        let stalled = st.condition(STALLED).expect("stalled");
        assert_eq!(stalled.reason, "DependencyCycle");
        assert_eq!(
            stalled.message,
            "circular dependency detected: flux-system/a -> flux-system/b -> flux-system/a"
        );
    }
    assert!(status_of(&snap, "c").is_ready());
}

#[tokio::test(start_paused = true)]
async fn a_failed_dependency_settles_its_dependents_as_not_ready() {
    let (_, rt, log) = setup(
        vec![
            kustomization("infra", json!({"interval": "10m"}), Some("fail")),
            kustomization(
                "apps",
                json!({"interval": "10m", "dependsOn": [{"name": "infra"}]}),
                None,
            ),
        ],
        RuntimeOptions::default(),
    )
    .await;
    let snap = rt
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    let apps = status_of(&snap, "apps");
    let ready = apps.condition(READY).unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        (
            "DependencyNotReady",
            "dependency 'flux-system/infra' is not ready"
        )
    );
    assert!(
        !log.lock().unwrap().contains(&"apps".to_string()),
        "apps never ran its reconcile"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_while_others_keep_their_interval() {
    let (_, rt, log) = setup(
        vec![
            kustomization(
                "bad",
                json!({"interval": "10m", "retryInterval": "30s"}),
                Some("fail"),
            ),
            kustomization("good", json!({"interval": "1m"}), None),
        ],
        RuntimeOptions {
            jitter_percent: 0,
            ..RuntimeOptions::default()
        },
    )
    .await;
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let rt = Arc::new(rt);
    let rt2 = rt.clone();
    let h = tokio::spawn(async move { rt2.run(c2).await });
    tokio::time::sleep(Duration::from_secs(16 * 60)).await;
    cancel.cancel();
    h.await.unwrap().unwrap();
    let log = log.lock().unwrap();
    let bad = log.iter().filter(|n| *n == "bad").count();
    let good = log.iter().filter(|n| *n == "good").count();
    // bad: t=0, +30s, +1m, +2m, +4m, +8m (cap 10m) -> 6 runs in 16 minutes, not 32.
    assert_eq!(bad, 6, "{log:?}");
    assert!((16..=17).contains(&good), "good ran {good} times");
}

#[tokio::test(start_paused = true)]
async fn a_slow_object_times_out_without_blocking_the_others() {
    let (_, rt, _) = setup(
        vec![
            kustomization(
                "a-slow",
                json!({"interval": "10m", "timeout": "5s"}),
                Some("slow"),
            ),
            kustomization("b", json!({"interval": "10m"}), None),
            kustomization("c", json!({"interval": "10m"}), None),
        ],
        RuntimeOptions {
            concurrency: 1,
            ..RuntimeOptions::default()
        },
    )
    .await;
    let snap = rt
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    let slow = status_of(&snap, "a-slow");
    let ready = slow.condition(READY).unwrap();
    assert_eq!(ready.reason, "ReconciliationTimeout");
    assert_eq!(ready.message, "reconciliation timed out after 5s");
    assert!(status_of(&snap, "b").is_ready() && status_of(&snap, "c").is_ready());
}

#[tokio::test(start_paused = true)]
async fn spec_changes_requests_suspend_and_deletion() {
    let (backend, rt, log) = setup(
        vec![kustomization("app", json!({"interval": "1h"}), None)],
        RuntimeOptions::default(),
    )
    .await;
    let cancel = CancellationToken::new();
    let rt = Arc::new(rt);
    let (rt2, c2) = (rt.clone(), cancel.clone());
    let h = tokio::spawn(async move { rt2.run(c2).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(log.lock().unwrap().len(), 1);

    // A spec change runs at once, long before the 1h interval.
    let mut o = kustomization("app", json!({"interval": "1h", "path": "./v2"}), None);
    backend.apply(&o, &ApplyOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(log.lock().unwrap().len(), 2);

    // requestedAt runs at once and is echoed to lastHandledReconcileAt.
    o.set_annotation(REQUESTED_AT, "2024-01-01T00:00:00Z");
    backend.apply(&o, &ApplyOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(log.lock().unwrap().len(), 3);
    let stored = backend.get(&o.object_ref()).await.unwrap().unwrap();
    assert_eq!(
        Status::from_value(stored.status()).last_handled_reconcile_at,
        "2024-01-01T00:00:00Z"
    );

    // Suspended objects do not run, not even at their interval.
    let mut s = kustomization(
        "app",
        json!({"interval": "1h", "path": "./v2", "suspend": true}),
        None,
    );
    s.set_annotation(REQUESTED_AT, "2024-01-01T00:00:00Z");
    backend.apply(&s, &ApplyOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert_eq!(log.lock().unwrap().len(), 3);

    backend.delete(&o.object_ref()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(log.lock().unwrap().last().unwrap(), "finalize app");
    cancel.cancel();
    h.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_invalid_spec_stalls_with_the_field_named() {
    struct Strict;
    #[async_trait]
    impl Reconciler for Strict {
        fn kind(&self) -> GroupKind {
            FluxKind::Kustomization.into()
        }
        fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError> {
            crate::api::from_object::<crate::api::Kustomization>(obj)?;
            unreachable!("the test object is invalid")
        }
        async fn reconcile(&self, _: &Object, _: &dyn Backend) -> Outcome {
            unreachable!()
        }
    }
    let backend = Arc::new(MemoryBackend::new());
    let o = kustomization(
        "bad",
        json!({"interval": "10m", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "x"}, "pruen": 1}),
        None,
    );
    backend.apply(&o, &ApplyOptions::default()).await.unwrap();
    let rt = Runtime::builder(backend.clone()).reconciler(Strict).build();
    let snap = rt
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    let st = &snap[0].status;
    let stalled = st.condition(STALLED).unwrap();
    assert!(
        stalled
            .message
            .contains("field `spec.pruen`: unknown field `pruen`"),
        "{}",
        stalled.message
    );
    assert_eq!(backend.events()[0].reason, "InvalidSpec");
}

#[test]
fn backoff_doubles_up_to_the_interval() {
    let s = Duration::from_secs;
    assert_eq!(backoff(s(30), s(600), 1), s(30));
    assert_eq!(backoff(s(30), s(600), 2), s(60));
    assert_eq!(backoff(s(30), s(600), 5), s(480));
    assert_eq!(backoff(s(30), s(600), 6), s(600));
    assert_eq!(backoff(s(30), s(600), 60), s(600));
    assert_eq!(backoff(s(600), s(600), 3), s(600));
}

/// The in-memory backend with Kubernetes' deletion rules: an object with finalizers is only
/// marked (`deletionTimestamp`) until the last one is removed.
struct Finalizing(Arc<MemoryBackend>);

impl Finalizing {
    async fn set_finalizers(&self, r: &ObjectRef, f: impl FnOnce(&mut Vec<Value>)) -> bool {
        let Some(mut o) = self.0.get(r).await.unwrap() else {
            return false;
        };
        let md = o.metadata_mut();
        let mut list = md
            .get("finalizers")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        f(&mut list);
        let empty = list.is_empty();
        md.insert("finalizers".into(), Value::Array(list));
        let deleting = md.get("deletionTimestamp").is_some();
        if empty && deleting {
            self.0.delete(r).await.unwrap();
        } else {
            self.0.apply(&o, &ApplyOptions::default()).await.unwrap();
        }
        true
    }
}

#[async_trait]
impl Backend for Finalizing {
    async fn apply(
        &self,
        obj: &Object,
        opts: &ApplyOptions,
    ) -> Result<(crate::traits::ApplyAction, Object), crate::traits::BackendError> {
        self.0.apply(obj, opts).await
    }
    async fn get(&self, r: &ObjectRef) -> Result<Option<Object>, crate::traits::BackendError> {
        self.0.get(r).await
    }
    async fn list(
        &self,
        params: &crate::traits::ListParams,
    ) -> Result<Vec<Object>, crate::traits::BackendError> {
        self.0.list(params).await
    }
    async fn delete(&self, r: &ObjectRef) -> Result<bool, crate::traits::BackendError> {
        let Some(mut o) = self.0.get(r).await? else {
            return Ok(false);
        };
        if !has_finalizer(&o, FLUX_FINALIZER) {
            return self.0.delete(r).await;
        }
        o.metadata_mut()
            .insert("deletionTimestamp".into(), "2024-01-01T00:00:00Z".into());
        self.0.apply(&o, &ApplyOptions::default()).await?;
        Ok(true)
    }
    async fn update_status(
        &self,
        r: &ObjectRef,
        status: &Value,
    ) -> Result<(), crate::traits::BackendError> {
        self.0.update_status(r, status).await
    }
    async fn record_event(&self, event: &Event) -> Result<(), crate::traits::BackendError> {
        self.0.record_event(event).await
    }
    async fn health(
        &self,
        r: &ObjectRef,
    ) -> Result<crate::traits::Health, crate::traits::BackendError> {
        self.0.health(r).await
    }
    async fn watch(
        &self,
        kinds: &[(String, String)],
    ) -> Result<crate::traits::WatchStream, crate::traits::BackendError> {
        self.0.watch(kinds).await
    }
    fn describe(&self) -> String {
        "memory with finalizers".into()
    }
    fn holds_finalizers(&self) -> bool {
        true
    }
    async fn add_finalizer(
        &self,
        r: &ObjectRef,
        finalizer: &str,
    ) -> Result<bool, crate::traits::BackendError> {
        let f = finalizer.to_string();
        Ok(self
            .set_finalizers(r, |l| {
                if !l.iter().any(|v| v.as_str() == Some(&f)) {
                    l.push(Value::String(f.clone()));
                }
            })
            .await)
    }
    async fn remove_finalizer(
        &self,
        r: &ObjectRef,
        finalizer: &str,
    ) -> Result<bool, crate::traits::BackendError> {
        let f = finalizer.to_string();
        Ok(self
            .set_finalizers(r, |l| l.retain(|v| v.as_str() != Some(&f)))
            .await)
    }
}

#[tokio::test(start_paused = true)]
async fn a_deleted_object_is_cleaned_up_once_before_its_finalizer_goes() {
    let mem = Arc::new(MemoryBackend::new());
    let backend = Arc::new(Finalizing(mem.clone()));
    let mut o = kustomization(
        "app",
        json!({"interval": "1h", "retryInterval": "10s"}),
        None,
    );
    o.set_annotation("test/finalize", "fail-once");
    backend.apply(&o, &ApplyOptions::default()).await.unwrap();
    let r = o.object_ref();
    let log = Arc::new(Mutex::new(Vec::new()));
    let rt = Arc::new(
        Runtime::builder(backend.clone())
            .reconciler(Scripted { log: log.clone() })
            .build(),
    );
    let cancel = CancellationToken::new();
    let (rt2, c2) = (rt.clone(), cancel.clone());
    let h = tokio::spawn(async move { rt2.run(c2).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Reconciled once, with the finalizer put on first.
    assert_eq!(*log.lock().unwrap(), ["app"]);
    let stored = backend.get(&r).await.unwrap().unwrap();
    assert!(has_finalizer(&stored, FLUX_FINALIZER), "{stored:?}");

    // Deleted: the clean-up fails, so the object stays, finalizer and all.
    backend.delete(&r).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*log.lock().unwrap(), ["app", "finalize app"]);
    let stored = backend
        .get(&r)
        .await
        .unwrap()
        .expect("held by the finalizer");
    assert!(has_finalizer(&stored, FLUX_FINALIZER));

    // After the retry interval it runs again, succeeds, and the object goes.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        *log.lock().unwrap(),
        ["app", "finalize app", "finalize app"]
    );
    assert!(backend.get(&r).await.unwrap().is_none());

    // Nothing more: the deletion that followed did not clean up again, and the object is not
    // reconciled after it was marked for deletion.
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert_eq!(
        *log.lock().unwrap(),
        ["app", "finalize app", "finalize app"]
    );
    cancel.cancel();
    h.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_suspended_object_releases_its_finalizer_without_clean_up() {
    let mem = Arc::new(MemoryBackend::new());
    let backend = Arc::new(Finalizing(mem.clone()));
    let o = kustomization("app", json!({"interval": "1h"}), None);
    backend.apply(&o, &ApplyOptions::default()).await.unwrap();
    let r = o.object_ref();
    let log = Arc::new(Mutex::new(Vec::new()));
    let rt = Arc::new(
        Runtime::builder(backend.clone())
            .reconciler(Scripted { log: log.clone() })
            .build(),
    );
    let cancel = CancellationToken::new();
    let (rt2, c2) = (rt.clone(), cancel.clone());
    let h = tokio::spawn(async move { rt2.run(c2).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut stored = backend.get(&r).await.unwrap().unwrap();
    assert!(has_finalizer(&stored, FLUX_FINALIZER));
    stored.0["spec"]["suspend"] = json!(true);
    backend
        .apply(&stored, &ApplyOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    backend.delete(&r).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(backend.get(&r).await.unwrap().is_none());
    assert_eq!(*log.lock().unwrap(), ["app"]);
    cancel.cancel();
    h.await.unwrap().unwrap();
}
