//! The local backend against a real directory: semantics, layout, concurrency, and kill -9.

use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trueup_core::traits::{
    ApplyAction, ApplyOptions, Backend, BackendError, Health, ListParams, WatchEvent,
};
use trueup_core::{Event, Object, ObjectRef, Severity};
use trueup_local::{LocalBackend, LocalError, LocalOptions};

fn cm(ns: &str, name: &str, data: Value) -> Object {
    let mut o = Object::new("v1", "ConfigMap", Some(ns), name);
    o.as_map_mut().insert("data".into(), data);
    o
}

fn opts() -> ApplyOptions {
    ApplyOptions::default()
}

fn fast() -> LocalOptions {
    LocalOptions {
        durable: false,
        poll_interval: Duration::from_millis(50),
        ..LocalOptions::default()
    }
}

fn rv(o: &Object) -> String {
    o.metadata().unwrap()["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn uid(o: &Object) -> String {
    o.metadata().unwrap()["uid"].as_str().unwrap().to_string()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn create_configure_unchanged_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let obj = cm("default", "app", json!({"k": "1"}));

    let (a, created) = b.apply(&obj, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Created);
    assert_eq!(created.generation(), 1);
    assert_eq!(rv(&created), "1");
    assert!(created.metadata().unwrap()["creationTimestamp"].is_string());

    let (a, same) = b.apply(&obj, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Unchanged);
    assert_eq!(
        (same.generation(), rv(&same), uid(&same)),
        (1, "1".into(), uid(&created))
    );

    // Metadata only: resourceVersion moves, generation does not.
    let mut labelled = obj.clone();
    labelled.set_label("team", "a");
    let (a, o) = b.apply(&labelled, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Configured);
    assert_eq!((o.generation(), rv(&o)), (1, "2".into()));

    // Data changes: both move; uid and creationTimestamp stay.
    let mut changed = cm("default", "app", json!({"k": "2"}));
    changed.set_label("team", "a");
    let (a, o) = b.apply(&changed, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Configured);
    assert_eq!((o.generation(), rv(&o)), (2, "3".into()));
    assert_eq!(uid(&o), uid(&created));
    assert_eq!(
        o.metadata().unwrap()["creationTimestamp"],
        created.metadata().unwrap()["creationTimestamp"]
    );

    // System fields and status in the applied object are ignored, not stored.
    let mut noisy = o.clone();
    noisy
        .metadata_mut()
        .insert("resourceVersion".into(), json!("999"));
    noisy.as_map_mut().insert("status".into(), json!({"x": 1}));
    let (a, _) = b.apply(&noisy, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Unchanged);

    // Apply replaces: a label left out is gone (single field manager owns everything).
    let (a, o) = b
        .apply(&cm("default", "app", json!({"k": "2"})), &opts())
        .await
        .unwrap();
    assert_eq!(a, ApplyAction::Configured);
    assert!(o.labels().is_none());

    // Dry run computes without writing.
    let (a, o) = b
        .apply(
            &cm("default", "app", json!({"k": "3"})),
            &ApplyOptions {
                dry_run: true,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert_eq!((a, o.generation()), (ApplyAction::Configured, 3));
    assert_eq!(
        b.get(&obj.object_ref())
            .await
            .unwrap()
            .unwrap()
            .generation(),
        2
    );
    let (a, _) = b
        .apply(
            &cm("default", "new", json!({})),
            &ApplyOptions {
                dry_run: true,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert_eq!(a, ApplyAction::Created);
    assert!(b
        .get(&ObjectRef::new("", "ConfigMap", "default", "new"))
        .await
        .unwrap()
        .is_none());

    // State survives a reopen.
    drop(b);
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let o = b.get(&obj.object_ref()).await.unwrap().unwrap();
    assert_eq!((o.generation(), uid(&o)), (2, uid(&created)));
    assert_eq!(b.health(&obj.object_ref()).await.unwrap(), Health::Current);
    assert_eq!(
        b.health(&ObjectRef::new("", "ConfigMap", "default", "nope"))
            .await
            .unwrap(),
        Health::NotFound
    );
    assert!(!b.runs_workloads());
    assert!(b.describe().starts_with("local directory "));
}

#[tokio::test]
async fn layout_and_clean_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let mut deploy = Object::new("apps/v1", "Deployment", Some("apps"), "web");
    deploy
        .as_map_mut()
        .insert("spec".into(), json!({"replicas": 2, "b": 1, "a": 2}));
    b.apply(&deploy, &opts()).await.unwrap();
    b.apply(&Object::new("v1", "Namespace", None, "apps"), &opts())
        .await
        .unwrap();
    b.apply(&cm("default", "app", json!({})), &opts())
        .await
        .unwrap();
    b.update_status(&deploy.object_ref(), &json!({"readyReplicas": 2}))
        .await
        .unwrap();

    let root = dir.path();
    assert!(root.join("apps/apps_Deployment/web.yaml").is_file());
    assert!(root.join("_cluster/_Namespace/apps.yaml").is_file());
    assert!(root.join("default/_ConfigMap/app.yaml").is_file());
    assert!(root
        .join(".trueup/status/apps/apps_Deployment/web.json")
        .is_file());
    assert_eq!(b.state_dir(), root.join(".trueup"));

    let text = std::fs::read_to_string(root.join("apps/apps_Deployment/web.yaml")).unwrap();
    assert_eq!(
        text,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  a: 2\n  b: 1\n  replicas: 2\n"
    );
}

#[tokio::test]
async fn status_lives_apart_from_the_object_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let obj = cm("default", "app", json!({"k": "v"}));
    let r = obj.object_ref();
    b.apply(&obj, &opts()).await.unwrap();
    let file = dir.path().join("default/_ConfigMap/app.yaml");
    let before = std::fs::read(&file).unwrap();

    b.update_status(
        &r,
        &json!({"conditions": [{"type": "Ready", "status": "True"}]}),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "status must not touch the object file"
    );
    let got = b.get(&r).await.unwrap().unwrap();
    assert_eq!(got.status().unwrap()["conditions"][0]["type"], "Ready");
    assert_eq!((got.generation(), rv(&got)), (1, "2".into()));

    // The same status again is a no-op.
    b.update_status(
        &r,
        &json!({"conditions": [{"type": "Ready", "status": "True"}]}),
    )
    .await
    .unwrap();
    assert_eq!(rv(&b.get(&r).await.unwrap().unwrap()), "2");

    // Apply keeps the status.
    let (_, o) = b
        .apply(&cm("default", "app", json!({"k": "w"})), &opts())
        .await
        .unwrap();
    assert_eq!(o.status().unwrap()["conditions"][0]["status"], "True");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("status"));

    let missing = ObjectRef::new("", "ConfigMap", "default", "nope");
    assert!(matches!(
        b.update_status(&missing, &json!({})).await,
        Err(BackendError::NotFound(_))
    ));
}

#[tokio::test]
async fn list_by_kind_namespace_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    for (ns, name, team) in [("a", "one", "x"), ("a", "two", "y"), ("b", "three", "x")] {
        let mut o = cm(ns, name, json!({}));
        o.set_label("team", team);
        o.set_label("app", "demo");
        b.apply(&o, &opts()).await.unwrap();
    }
    b.apply(&Object::new("v1", "Secret", Some("a"), "s"), &opts())
        .await
        .unwrap();
    // Things that are not objects are ignored: other files, a `.git` folder, temp files.
    std::fs::write(dir.path().join("README.md"), "hi").unwrap();
    std::fs::create_dir_all(dir.path().join(".git/x_Y")).unwrap();
    std::fs::write(dir.path().join("a/_ConfigMap/.one.yaml.1.2.tmp"), "half").unwrap();

    let names = |v: Vec<Object>| v.iter().map(|o| o.name().to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(b.list(&ListParams::kind("", "ConfigMap")).await.unwrap()),
        ["one", "two", "three"]
    );
    let mut p = ListParams::kind("", "ConfigMap");
    p.namespace = Some("a".into());
    assert_eq!(names(b.list(&p).await.unwrap()), ["one", "two"]);
    p.namespace = None;
    p.labels = BTreeMap::from([("team".into(), "x".into()), ("app".into(), "demo".into())]);
    assert_eq!(names(b.list(&p).await.unwrap()), ["one", "three"]);
    p.labels.insert("missing".into(), "z".into());
    assert!(b.list(&p).await.unwrap().is_empty());
    assert!(b
        .list(&ListParams::kind("apps", "Deployment"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn delete_removes_record_and_empty_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let one = cm("gone", "one", json!({}));
    let two = cm("gone", "two", json!({}));
    b.apply(&one, &opts()).await.unwrap();
    b.apply(&two, &opts()).await.unwrap();
    b.update_status(&one.object_ref(), &json!({"ok": true}))
        .await
        .unwrap();

    assert!(b.delete(&one.object_ref()).await.unwrap());
    assert!(!dir
        .path()
        .join(".trueup/status/gone/_ConfigMap/one.json")
        .exists());
    assert!(
        dir.path().join("gone/_ConfigMap").is_dir(),
        "still holds two"
    );
    assert!(b.delete(&two.object_ref()).await.unwrap());
    assert!(!dir.path().join("gone").exists());
    assert!(!dir.path().join(".trueup/status/gone").exists());
    assert!(!b.delete(&two.object_ref()).await.unwrap());
    assert!(b.get(&two.object_ref()).await.unwrap().is_none());

    // Recreated: a new object with a new uid.
    let (a, o) = b.apply(&one, &opts()).await.unwrap();
    assert_eq!(
        (a, o.generation(), o.status()),
        (ApplyAction::Created, 1, None)
    );
}

#[tokio::test]
async fn names_that_could_escape_the_root_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let b = LocalBackend::open_with(&root, fast()).unwrap();
    let bad_refs = [
        ObjectRef::new("", "ConfigMap", "default", "../../escape"),
        ObjectRef::new("", "ConfigMap", "default", ".."),
        ObjectRef::new("", "ConfigMap", "default", "a/b"),
        ObjectRef::new("", "ConfigMap", "default", ".trueup"),
        ObjectRef::new("", "ConfigMap", "default", "Upper"),
        ObjectRef::new("", "ConfigMap", "..", "x"),
        ObjectRef::new("", "ConfigMap", ".trueup", "x"),
        ObjectRef::new("", "Config/Map", "default", "x"),
        ObjectRef::new("../x", "ConfigMap", "default", "x"),
        ObjectRef::new("a_b", "ConfigMap", "default", "x"),
    ];
    for r in &bad_refs {
        let obj = {
            let mut o = Object::new("v1", "ConfigMap", None, "x");
            let api = if r.group.is_empty() {
                "v1".to_string()
            } else {
                format!("{}/v1", r.group)
            };
            o.as_map_mut().insert("apiVersion".into(), json!(api));
            o.as_map_mut().insert("kind".into(), json!(r.kind));
            o.set_name(&r.name);
            o.set_namespace(&r.namespace);
            o
        };
        let err = b.apply(&obj, &opts()).await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Invalid { object, .. } if object == r),
            "{r:?}: {err}"
        );
        assert!(
            err.to_string().contains(&r.name),
            "error names the object: {err}"
        );
        assert!(
            matches!(b.get(r).await, Err(BackendError::Invalid { .. })),
            "{r:?}"
        );
        assert!(
            matches!(b.delete(r).await, Err(BackendError::Invalid { .. })),
            "{r:?}"
        );
        assert!(
            matches!(
                b.update_status(r, &json!({})).await,
                Err(BackendError::Invalid { .. })
            ),
            "{r:?}"
        );
    }
    let mut p = ListParams::kind("", "ConfigMap");
    p.namespace = Some("../..".into());
    assert!(matches!(
        b.list(&p).await,
        Err(BackendError::Invalid { .. })
    ));
    // Nothing was written outside the root's layout.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(
        files(&root)
            .iter()
            .all(|f| f.starts_with(root.join(".trueup"))),
        "{:?}",
        files(&root)
    );
}

#[tokio::test]
async fn malformed_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    b.apply(&cm("default", "good", json!({})), &opts())
        .await
        .unwrap();
    let bad = dir.path().join("default/_ConfigMap/bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: [unclosed\n").unwrap();
    let r = ObjectRef::new("", "ConfigMap", "default", "bad");
    let err = b.get(&r).await.unwrap_err().to_string();
    assert!(err.contains(&bad.display().to_string()), "{err}");
    let err = b
        .list(&ListParams::kind("", "ConfigMap"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.yaml"), "{err}");

    // A file holding another object than its path says.
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other, namespace: default}\n",
    )
    .unwrap();
    let err = b.get(&r).await.unwrap_err().to_string();
    assert!(
        err.contains("bad.yaml") && err.contains("ConfigMap/default/other"),
        "{err}"
    );

    // A hand-written file may leave the namespace to its folder; it gets a record on first read.
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {a: b}\n",
    )
    .unwrap();
    let o = b.get(&r).await.unwrap().unwrap();
    assert_eq!((o.namespace(), o.generation()), (Some("default"), 1));

    // A broken record is reported too.
    let rec = dir
        .path()
        .join(".trueup/status/default/_ConfigMap/good.json");
    std::fs::write(&rec, "{not json").unwrap();
    let err = b
        .get(&ObjectRef::new("", "ConfigMap", "default", "good"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("good.json"), "{err}");
}

#[tokio::test]
async fn hand_edits_bump_versions_like_an_apply() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let obj = cm("default", "app", json!({"k": "1"}));
    b.apply(&obj, &opts()).await.unwrap();
    let file = dir.path().join("default/_ConfigMap/app.yaml");
    // Reformatting is not a change.
    std::fs::write(&file, "kind: ConfigMap\napiVersion: v1\nmetadata: {namespace: default, name: app}\ndata: {k: '1'}\n").unwrap();
    let o = b.get(&obj.object_ref()).await.unwrap().unwrap();
    assert_eq!((o.generation(), rv(&o)), (1, "1".into()));
    std::fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: default, name: app}\ndata: {k: '2'}\n").unwrap();
    let o = b.get(&obj.object_ref()).await.unwrap().unwrap();
    assert_eq!((o.generation(), rv(&o)), (2, "2".into()));
    // Read again: the record was repaired, nothing moves.
    let o = b.get(&obj.object_ref()).await.unwrap().unwrap();
    assert_eq!((o.generation(), rv(&o)), (2, "2".into()));
}

#[tokio::test]
async fn yaml_round_trip_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let tricky = json!({
        "num": "1", "yes": "yes", "no": "NO", "on": "on", "null": "null", "tilde": "~", "empty": "",
        "float": 1.5, "int": 7, "big": 9007199254740993u64, "neg": -3, "bool": true, "nil": null,
        "multi": "line one\nline two\n", "colon": "a: b", "hash": "# not a comment", "star": "*x",
        "unicode": "grüße ✓", "date": "2024-01-01", "octal": "0755", "hex": "0x1f", "sci": "1e3",
        "list": [1, "2", {"a": []}], "obj": {}, "space": " padded ", "quote": "it's \"q\""
    });
    let obj = cm("default", "tricky", tricky.clone());
    b.apply(&obj, &opts()).await.unwrap();
    let got = b.get(&obj.object_ref()).await.unwrap().unwrap();
    assert_eq!(got.as_map()["data"], tricky);
    let (a, o) = b.apply(&obj, &opts()).await.unwrap();
    assert_eq!((a, rv(&o)), (ApplyAction::Unchanged, "1".into()));
}

#[tokio::test]
async fn events_log_tolerates_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let r = ObjectRef::new(
        "kustomize.toolkit.fluxcd.io",
        "Kustomization",
        "flux-system",
        "apps",
    );
    let mut sub = b.subscribe_events();
    b.record_event(&Event::new(
        r.clone(),
        Severity::Info,
        "ReconciliationSucceeded",
        "one",
    ))
    .await
    .unwrap();
    assert_eq!(sub.recv().await.unwrap().message, "one");
    let log = dir.path().join(".trueup/events.jsonl");
    // A crash in the middle of an append.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(br#"{"involvedObject":{"group":"x","kind":"Y","na"#)
            .unwrap();
    }
    // A reader tailing the log now leaves the torn line for later.
    let page = b.read_events(0).unwrap();
    assert_eq!(page.events.len(), 1);
    drop(b);

    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    b.record_event(&Event::new(
        r.clone(),
        Severity::Error,
        "BuildFailed",
        "two",
    ))
    .await
    .unwrap();
    let all = b.events(None).unwrap();
    assert_eq!(
        all.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(all[1].severity, Severity::Error);

    // Tailing from an offset sees only what came after.
    let page = b.read_events(0).unwrap();
    b.record_event(&Event::new(r, Severity::Info, "Progressing", "three"))
        .await
        .unwrap();
    let next = b.read_events(page.next_offset).unwrap();
    assert_eq!(next.events.len(), 1);
    assert_eq!(next.events[0].message, "three");
    assert!(b.events(Some("2999-01-01T00:00:00Z")).unwrap().is_empty());
}

async fn next_event(s: &mut trueup_core::traits::WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a watch event within 10s")
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_own_and_outside_changes() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let mut cms = b.watch(&[("".into(), "ConfigMap".into())]).await.unwrap();

    // Other kinds are filtered out.
    b.apply(&Object::new("v1", "Secret", Some("default"), "s"), &opts())
        .await
        .unwrap();
    let obj = cm("default", "app", json!({"k": "1"}));
    b.apply(&obj, &opts()).await.unwrap();
    match next_event(&mut cms).await {
        WatchEvent::Applied(o) => assert_eq!((o.name(), o.kind()), ("app", "ConfigMap")),
        other => panic!("{other:?}"),
    }
    b.update_status(&obj.object_ref(), &json!({"ok": true}))
        .await
        .unwrap();
    match next_event(&mut cms).await {
        WatchEvent::Applied(o) => assert_eq!(o.status(), Some(&json!({"ok": true}))),
        other => panic!("{other:?}"),
    }
    b.delete(&obj.object_ref()).await.unwrap();
    assert_eq!(
        next_event(&mut cms).await,
        WatchEvent::Deleted(obj.object_ref())
    );

    // Another process (here: another instance on the same root) and a hand edit.
    let other = LocalBackend::open_with(dir.path(), fast()).unwrap();
    other
        .apply(&cm("default", "elsewhere", json!({})), &opts())
        .await
        .unwrap();
    match next_event(&mut cms).await {
        WatchEvent::Applied(o) => assert_eq!(o.name(), "elsewhere"),
        other => panic!("{other:?}"),
    }
    let file = dir.path().join("default/_ConfigMap/elsewhere.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: elsewhere, namespace: default}\ndata: {edited: 'yes'}\n").unwrap();
    loop {
        // The poll may first report the record repaired by the other instance; wait for the edit.
        match next_event(&mut cms).await {
            WatchEvent::Applied(o) if o.as_map().get("data") == Some(&json!({"edited": "yes"})) => {
                assert_eq!(o.generation(), 2);
                break;
            }
            WatchEvent::Applied(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    std::fs::remove_file(&file).unwrap();
    loop {
        match next_event(&mut cms).await {
            WatchEvent::Deleted(r) => {
                assert_eq!(r.name, "elsewhere");
                break;
            }
            WatchEvent::Applied(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_from_many_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(LocalBackend::open_with(dir.path(), fast()).unwrap());
    let mut tasks = Vec::new();
    // 16 tasks with objects of their own, 8 tasks fighting over one object.
    for t in 0..16 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut actions = Vec::new();
            for i in 0..15 {
                let o = cm(
                    &format!("ns{}", t % 4),
                    &format!("own-{t}-{i}"),
                    json!({"i": i}),
                );
                actions.push(b.apply(&o, &opts()).await.unwrap().0);
            }
            actions
        }));
    }
    for t in 0..8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut actions = Vec::new();
            for i in 0..15 {
                let o = cm("shared", "hot", json!({"writer": t, "i": i % 3}));
                let (a, _) = b.apply(&o, &opts()).await.unwrap();
                b.update_status(&o.object_ref(), &json!({"by": t}))
                    .await
                    .unwrap();
                actions.push(a);
            }
            actions
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    for own in &all[..16] {
        assert!(own.iter().all(|a| *a == ApplyAction::Created));
    }
    let hot: Vec<ApplyAction> = all[16..].iter().flatten().copied().collect();
    let creates = hot.iter().filter(|a| **a == ApplyAction::Created).count();
    let configures = hot
        .iter()
        .filter(|a| **a == ApplyAction::Configured)
        .count();
    assert_eq!(creates, 1);
    let o = b
        .get(&ObjectRef::new("", "ConfigMap", "shared", "hot"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        o.generation() as usize,
        1 + configures,
        "every change counted exactly once"
    );
    assert_eq!(
        b.list(&ListParams::kind("", "ConfigMap"))
            .await
            .unwrap()
            .len(),
        16 * 15 + 1
    );
    assert!(files(dir.path())
        .iter()
        .all(|f| !f.to_string_lossy().ends_with(".tmp")));
}

#[tokio::test]
async fn one_operator_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let a = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let b = LocalBackend::open_with(dir.path(), fast()).unwrap();
    let guard = a.acquire_exclusive().unwrap();
    let err = b.acquire_exclusive().unwrap_err();
    assert!(matches!(err, LocalError::Locked { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(guard);
    let _again = b.acquire_exclusive().unwrap();
}

// ---- kill -9 ----

const CRASH_ENV: &str = "TRUEUP_LOCAL_CRASH_ROOT";
const CRASH_NS: &str = "crash";
const WRITERS: usize = 4;
const PER_WRITER: usize = 3;

fn blob_len(v: u64) -> usize {
    (v as usize * 997) % 20_000
}

fn crash_object(name: &str, v: u64) -> Object {
    let mut o = cm(
        CRASH_NS,
        name,
        json!({"v": v.to_string(), "blob": "x".repeat(blob_len(v))}),
    );
    o.set_label("writer", "child");
    o
}

/// Not a test of its own: the child process of `survives_kill_9`. Without the environment
/// variable it returns at once.
#[test]
fn crash_writer_child() {
    let Ok(root) = std::env::var(CRASH_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Durable writes: the real configuration.
        let b = Arc::new(LocalBackend::open(&root).unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    for j in 0..PER_WRITER {
                        let name = format!("cm-{w}-{j}");
                        let r = ObjectRef::new("", "ConfigMap", CRASH_NS, &name);
                        let v = match b.get(&r).await.unwrap() {
                            Some(o) => {
                                o.as_map()["data"]["v"]
                                    .as_str()
                                    .unwrap()
                                    .parse::<u64>()
                                    .unwrap()
                                    + 1
                            }
                            None => 0,
                        };
                        b.apply(&crash_object(&name, v), &opts()).await.unwrap();
                        b.update_status(&r, &json!({"observedV": v})).await.unwrap();
                        b.record_event(&Event::new(
                            r,
                            Severity::Info,
                            "Progressing",
                            format!("v{v} {}", "y".repeat(v as usize % 300)),
                        ))
                        .await
                        .unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let exe = std::env::current_exe().unwrap();
    let mut last_v: HashMap<String, (u64, Option<u64>)> = HashMap::new();
    let rounds = 8;
    let (mut temp_files_seen, mut records_repaired) = (0, 0);
    for round in 0..rounds {
        let mut child = std::process::Command::new(&exe)
            .args([
                "crash_writer_child",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CRASH_ENV, &root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let the child get going, then kill it at a random moment.
        let ms = if round == 0 { 400 } else { 60 } + fastrand::u64(0..400);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer died on its own in round {round}"
        );
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();

        // What the kill left: temp files of interrupted writes, records behind their objects.
        let all_files = files(&root);
        temp_files_seen += all_files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(".tmp"))
            .count();
        let records_on_disk: HashMap<String, Value> = all_files
            .iter()
            .filter(|f| {
                f.starts_with(root.join(".trueup/status"))
                    && f.extension().is_some_and(|e| e == "json")
            })
            .map(|f| {
                let name = f.file_stem().unwrap().to_string_lossy().into_owned();
                (
                    name,
                    serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap(),
                )
            })
            .collect();

        let b = LocalBackend::open_with(
            &root,
            LocalOptions {
                stale_temp_age: Duration::ZERO,
                ..LocalOptions::default()
            },
        )
        .unwrap();
        let leftovers: Vec<_> = files(&root)
            .into_iter()
            .filter(|f| f.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "round {round}: temp files survived open: {leftovers:?}"
        );

        let mut p = ListParams::kind("", "ConfigMap");
        p.namespace = Some(CRASH_NS.into());
        let objects = b
            .list(&p)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        for o in &objects {
            let name = o.name().to_string();
            let v: u64 = o.as_map()["data"]["v"].as_str().unwrap().parse().unwrap();
            let blob = o.as_map()["data"]["blob"].as_str().unwrap();
            assert_eq!(
                blob.len(),
                blob_len(v),
                "round {round}: {name} is a mix of versions"
            );
            assert_eq!(o.label("writer"), Some("child"));
            // Every apply changed the data once: no generation bump lost or doubled.
            assert_eq!(o.generation() as u64, v + 1, "round {round}: {name} v{v}");
            let rv: u64 = rv(o).parse().unwrap();
            assert!(
                rv > v,
                "round {round}: {name} resourceVersion {rv} < generation"
            );
            // The writer sets the status right after each apply. A kill between the two leaves
            // the status one behind; if the kill hit between them in several rounds in a row,
            // more. But it never goes back, never runs ahead, and an object applied twice since
            // the last check had its status written in between.
            let seen = o
                .status()
                .and_then(|s| s.get("observedV"))
                .and_then(Value::as_u64);
            let (prev_v, prev_seen) = last_v
                .get(&name)
                .copied()
                .map_or((None, None), |(v, s)| (Some(v), s));
            if let Some(prev_v) = prev_v {
                assert!(
                    v >= prev_v,
                    "round {round}: {name} went back from v{prev_v} to v{v}"
                );
            }
            assert!(
                seen <= Some(v),
                "round {round}: {name} v{v} status {seen:?} runs ahead"
            );
            assert!(
                seen >= prev_seen,
                "round {round}: {name} status went back from {prev_seen:?} to {seen:?}"
            );
            let applied_twice = prev_v.map_or(v >= 1, |p| v >= p + 2);
            if applied_twice {
                assert!(
                    seen >= Some(v - 1),
                    "round {round}: {name} v{v} lost status {seen:?}"
                );
            }
            if records_on_disk
                .get(&name)
                .and_then(|r| r["generation"].as_i64())
                != Some(o.generation())
            {
                records_repaired += 1;
            }
            last_v.insert(name, (v, seen));
        }
        // Objects never disappear once seen.
        assert_eq!(
            objects.len(),
            last_v.len(),
            "round {round}: an object vanished"
        );
        // The event log reads (a torn last line is skipped).
        b.read_events(0)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // And the backend keeps working on the recovered state.
        if let Some(o) = objects.first() {
            b.update_status(&o.object_ref(), &o.status().cloned().unwrap_or(json!({})))
                .await
                .unwrap();
        }
    }
    let total: u64 = last_v.values().map(|(v, _)| v).sum();
    assert!(
        total >= 10,
        "the writer made too little progress to prove anything: {last_v:?}"
    );
    eprintln!(
        "kill -9: {rounds} rounds, {} objects, {total} versions written, {temp_files_seen} temp files swept, {records_repaired} records repaired",
        last_v.len()
    );
}
