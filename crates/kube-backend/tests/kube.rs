//! The Kubernetes backend against a REAL kube-apiserver (v1.20.2 built by
//! `scripts/kube-apiserver/setup.sh`), read back with the real `kubectl`.
//!
//! The server comes from `tests/support/apiserver.rs`: `TRUEUP_KUBECONFIG` when set, else one
//! started by `scripts/kube-apiserver/start.sh` (no controller-manager, so the statuses the tests
//! write stay as written) and stopped when this test binary exits. Without the built binaries the
//! tests print SKIP and pass, unless `TRUEUP_REQUIRE_ORACLES=1` (CI), where they fail.
//!
//! Every test works in its own namespace, so the tests run in parallel on one server. With
//! `TRUEUP_KUBECONFIG` pointing at a server that runs controllers, the Deployment health test
//! races the Deployment controller for `.status`: use a server without a controller-manager
//! (`TRUEUP_KUBE_CONTROLLER_MANAGER=0 scripts/kube-apiserver/start.sh`).

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use trueup_core::event::{Event, Severity};
use trueup_core::object::{Object, ObjectRef};
use trueup_core::traits::backend::{
    ApplyAction, ApplyOptions, Backend, BackendError, Health, ListParams, WatchEvent,
};
use trueup_kube::KubeBackend;

mod support;

use support::apiserver::{repo_root, server};

async fn backend() -> Option<(KubeBackend, &'static Path)> {
    let s = server()?;
    let b = KubeBackend::from_kubeconfig(&s.kubeconfig)
        .await
        .expect("backend from kubeconfig");
    Some((b, s.kubeconfig.as_path()))
}

fn kubectl(kc: &Path, args: &[&str]) -> Value {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl json")
}

fn obj(v: Value) -> Object {
    Object::from_value(v).expect("test object")
}

fn opts() -> ApplyOptions {
    ApplyOptions::default()
}

async fn namespace(b: &KubeBackend, name: &str) {
    b.apply(
        &obj(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
        &opts(),
    )
    .await
    .expect("namespace");
}

fn config_map(ns: &str, name: &str, data: Value) -> Object {
    obj(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns}, "data": data}))
}

async fn wait_health(b: &KubeBackend, r: &ObjectRef, want: &Health) -> Health {
    let mut last = Health::NotFound;
    for _ in 0..100 {
        last = b.health(r).await.expect("health");
        if &last == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssa_actions_field_manager_and_dry_run() {
    let Some((b, kc)) = backend().await else {
        return;
    };
    assert!(b.describe().starts_with("cluster https://127.0.0.1:"));
    assert!(b.runs_workloads());
    namespace(&b, "t-ssa").await;
    let cm = config_map("t-ssa", "app", json!({"a": "1"}));
    let (a, stored) = b.apply(&cm, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Created);
    assert_eq!(stored.kind(), "ConfigMap");
    assert_eq!(stored.api_version(), "v1");
    assert!(stored.metadata().unwrap().contains_key("uid"));
    let (a, _) = b.apply(&cm, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Unchanged, "re-applying the same object");
    // The object read back from the server (with resourceVersion, managedFields) applies too.
    let (a, _) = b.apply(&stored, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Unchanged, "re-applying the stored object");

    let (a, _) = b
        .apply(
            &cm,
            &ApplyOptions {
                dry_run: true,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert_eq!(a, ApplyAction::Unchanged, "dry run of the same object");
    let changed = config_map("t-ssa", "app", json!({"a": "2"}));
    let (a, dry) = b
        .apply(
            &changed,
            &ApplyOptions {
                dry_run: true,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert_eq!(a, ApplyAction::Configured, "dry run reports the change");
    assert_eq!(dry.0["data"]["a"], "2");
    let live = kubectl(kc, &["get", "configmap", "app", "-n", "t-ssa"]);
    assert_eq!(live["data"]["a"], "1", "dry run did not persist");
    let (a, _) = b
        .apply(
            &config_map("t-ssa", "never", json!({})),
            &ApplyOptions {
                dry_run: true,
                ..opts()
            },
        )
        .await
        .unwrap();
    assert_eq!(a, ApplyAction::Created);
    assert_eq!(
        b.get(&ObjectRef::new("", "ConfigMap", "t-ssa", "never"))
            .await
            .unwrap(),
        None,
        "dry-run create did not persist"
    );

    let (a, stored) = b.apply(&changed, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Configured);
    assert_eq!(stored.0["data"]["a"], "2");
    let live = kubectl(
        kc,
        &[
            "get",
            "configmap",
            "app",
            "-n",
            "t-ssa",
            "--show-managed-fields",
        ],
    );
    assert_eq!(live["data"]["a"], "2");
    let managers = live["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        managers
            .iter()
            .any(|m| m["manager"] == "trueup" && m["operation"] == "Apply"),
        "trueup owns the fields by server-side apply: {managers:?}"
    );

    // Another manager takes a field; forcing (the default, as Flux does) takes it back, and
    // without force the conflict is reported naming the object.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args([
            "patch",
            "configmap",
            "app",
            "-n",
            "t-ssa",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"edited"}}"#,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = b
        .apply(
            &changed,
            &ApplyOptions {
                force_conflicts: false,
                ..opts()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Conflict { object, .. } if object.name == "app"),
        "{err}"
    );
    assert!(err.to_string().contains("ConfigMap/t-ssa/app"), "{err}");
    let (a, stored) = b.apply(&changed, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Configured, "drift corrected");
    assert_eq!(stored.0["data"]["a"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_object() {
    let Some((b, _)) = backend().await else {
        return;
    };
    let err = b
        .apply(&config_map("t-missing-ns", "x", json!({})), &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Invalid { .. }), "{err}");
    assert!(
        err.to_string().contains("ConfigMap/t-missing-ns/x"),
        "{err}"
    );
    let err = b
        .apply(
            &obj(json!({"apiVersion": "nope.example.com/v1", "kind": "Thing", "metadata": {"name": "t", "namespace": "default"}})),
            &opts(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not serve"), "{err}");
    let err = b
        .apply(
            &obj(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "no-ns"}})),
            &opts(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("namespaced"), "{err}");
    // Schema rejection: a string where an int belongs.
    namespace(&b, "t-errors").await;
    let err = b
        .apply(
            &obj(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "t-errors"},
                "spec": {"ports": [{"port": "eighty"}]}})),
            &opts(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Service/t-errors/s"), "{err}");
}

/// The committed CRDs of every Flux kind (`config/crd`, generated from the API types).
fn flux_crd_objects() -> Vec<Object> {
    let dir = repo_root().join("config/crd");
    let listing: Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml"))
            .expect("config/crd/kustomization.yaml"),
    )
    .expect("kustomization yaml");
    let mut out = Vec::new();
    for file in listing["resources"].as_array().expect("resources") {
        let file = file.as_str().unwrap();
        let text = std::fs::read_to_string(dir.join(file)).expect(file);
        out.extend(trueup_core::yaml::parse_objects(&text, file).expect(file));
    }
    out
}

/// Installs the generated Flux CRDs once per test process, by server-side apply through the
/// backend, and waits until each is Established. The first caller also checks that a backend
/// which found a kind missing serves it once its CRD is applied (discovery must not remember
/// the absence). Every test that needs Flux kinds goes through here, so none races another.
async fn flux_crds(b: &KubeBackend) {
    static DONE: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let mut done = DONE.lock().await;
    if *done {
        return;
    }
    let gr = ObjectRef::new(
        "source.toolkit.fluxcd.io",
        "GitRepository",
        "flux-system",
        "my-api",
    );
    let err = b
        .get(&gr)
        .await
        .expect_err("GitRepository served before its CRD was applied");
    assert!(err.to_string().contains("does not serve"), "{err}");
    let crds = flux_crd_objects();
    assert_eq!(crds.len(), trueup_core::api::FluxKind::ALL.len());
    for crd in &crds {
        let (a, _) = b.apply(crd, &opts()).await.unwrap();
        assert_eq!(a, ApplyAction::Created, "{}", crd.name());
    }
    for crd in &crds {
        assert_eq!(
            wait_health(b, &crd.object_ref(), &Health::Current).await,
            Health::Current,
            "{} established",
            crd.name()
        );
    }
    *done = true;
}

fn yaml(s: &str) -> Object {
    let v: Value = serde_yaml::from_str(s).expect("yaml");
    obj(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_then_flux_gitrepository_with_status_subresource() {
    let Some((b, kc)) = backend().await else {
        return;
    };
    let gr = ObjectRef::new(
        "source.toolkit.fluxcd.io",
        "GitRepository",
        "flux-system",
        "my-api",
    );
    // The generated CRD; before it, the kind is unknown to this very backend.
    flux_crds(&b).await;
    namespace(&b, "flux-system").await;
    let seed = std::fs::read_to_string(repo_root().join("crates/core/tests/seed/apps-source.yaml"))
        .expect("seed GitRepository");
    let repo = yaml(&seed);
    // Discovery of the new kind can lag Established by a moment on a real server.
    let mut applied = None;
    for _ in 0..50 {
        match b.apply(&repo, &opts()).await {
            Ok(x) => {
                applied = Some(x);
                break;
            }
            Err(e) if e.to_string().contains("does not serve") => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (a, stored) = applied.expect("GitRepository applied once its CRD is served");
    assert_eq!(a, ApplyAction::Created);
    assert_eq!(stored.0["spec"]["url"], "https://github.com/my-org/my-api");
    let live = kubectl(
        kc,
        &[
            "get",
            "gitrepositories.source.toolkit.fluxcd.io",
            "my-api",
            "-n",
            "flux-system",
        ],
    );
    assert_eq!(live["spec"]["ref"]["branch"], "main");

    // Status through the subresource: spec and metadata stay, status is replaced whole.
    b.update_status(
        &gr,
        &json!({"observedGeneration": 1, "artifact": {"revision": "main@sha1:abc"},
            "conditions": [{"type": "Ready", "status": "False", "reason": "Progressing",
                "message": "fetching", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}),
    )
    .await
    .unwrap();
    assert!(
        matches!(b.health(&gr).await.unwrap(), Health::InProgress(m) if m.contains("Progressing"))
    );
    b.update_status(
        &gr,
        &json!({"observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                "message": "stored artifact", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}),
    )
    .await
    .unwrap();
    let live = kubectl(kc, &["get", "gitrepository", "my-api", "-n", "flux-system"]);
    assert_eq!(live["status"]["conditions"][0]["status"], "True");
    assert!(
        live["status"].get("artifact").is_none(),
        "status replaced, not merged"
    );
    assert_eq!(live["spec"]["interval"], "1m");
    assert_eq!(b.health(&gr).await.unwrap(), Health::Current);
    // Re-applying the spec keeps the status (SSA on the main resource ignores status).
    let (a, stored) = b.apply(&repo, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Unchanged);
    assert_eq!(stored.0["status"]["conditions"][0]["reason"], "Succeeded");
    let err = b
        .update_status(
            &ObjectRef::new(
                "source.toolkit.fluxcd.io",
                "GitRepository",
                "flux-system",
                "absent",
            ),
            &json!({}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NotFound(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_kind_without_status_subresource() {
    let Some((b, kc)) = backend().await else {
        return;
    };
    let crd = yaml(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.trueup.dev
spec:
  group: test.trueup.dev
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Cluster
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#,
    );
    b.apply(&crd, &opts()).await.unwrap();
    // Right after the CRD, before it is established: the backend waits for the kind to be
    // served instead of failing (a CRD and its objects usually arrive in one batch).
    let w = obj(
        json!({"apiVersion": "test.trueup.dev/v1alpha1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 3}}),
    );
    let (a, _) = b.apply(&w, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Created);
    assert_eq!(
        wait_health(&b, &crd.object_ref(), &Health::Current).await,
        Health::Current
    );
    let r = ObjectRef::new("test.trueup.dev", "Widget", "", "w");
    b.update_status(
        &r,
        &json!({"conditions": [{"type": "Ready", "status": "True"}]}),
    )
    .await
    .unwrap();
    let live = kubectl(kc, &["get", "widgets.test.trueup.dev", "w"]);
    assert_eq!(live["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(live["spec"]["size"], 3);
    assert_eq!(b.health(&r).await.unwrap(), Health::Current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_by_labels_get_and_delete() {
    let Some((b, _)) = backend().await else {
        return;
    };
    namespace(&b, "t-list").await;
    namespace(&b, "t-list2").await;
    for (ns, name, team) in [
        ("t-list", "a", "web"),
        ("t-list", "b", "web"),
        ("t-list", "c", "db"),
        ("t-list2", "d", "web"),
    ] {
        let mut cm = config_map(ns, name, json!({}));
        cm.set_label("team", team);
        cm.set_label("suite", "t-list");
        b.apply(&cm, &opts()).await.unwrap();
    }
    let mut p = ListParams::kind("", "ConfigMap");
    p.labels.insert("suite".into(), "t-list".into());
    assert_eq!(b.list(&p).await.unwrap().len(), 4, "all namespaces");
    p.labels.insert("team".into(), "web".into());
    let names = |v: Vec<Object>| {
        let mut n: Vec<String> = v.iter().map(|o| o.name().to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(b.list(&p).await.unwrap()), ["a", "b", "d"]);
    p.namespace = Some("t-list".into());
    let listed = b.list(&p).await.unwrap();
    assert!(listed
        .iter()
        .all(|o| o.kind() == "ConfigMap" && o.api_version() == "v1"));
    assert_eq!(names(listed), ["a", "b"]);

    let r = ObjectRef::new("", "ConfigMap", "t-list", "a");
    assert!(b.get(&r).await.unwrap().is_some());
    assert!(b.delete(&r).await.unwrap());
    assert_eq!(b.get(&r).await.unwrap(), None);
    assert!(!b.delete(&r).await.unwrap(), "already gone");
    // A cluster-scoped kind ignores a stray namespace in the reference.
    let ns = ObjectRef::new("", "Namespace", "whatever", "t-list2");
    assert!(b.get(&ns).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_recorded() {
    let Some((b, kc)) = backend().await else {
        return;
    };
    namespace(&b, "t-events").await;
    let (_, cm) = b
        .apply(&config_map("t-events", "app", json!({})), &opts())
        .await
        .unwrap();
    let r = cm.object_ref();
    b.record_event(
        &Event::new(
            r.clone(),
            Severity::Info,
            "ReconciliationSucceeded",
            "applied 1 object",
        )
        .with_revision("main@sha1:abc"),
    )
    .await
    .unwrap();
    b.record_event(&Event::new(
        r.clone(),
        Severity::Error,
        "HealthCheckFailed",
        "x".repeat(10_000),
    ))
    .await
    .unwrap();
    // About a cluster-scoped object: recorded in "default", as client-go does.
    b.record_event(&Event::new(
        ObjectRef::new("", "Namespace", "", "t-events"),
        Severity::Info,
        "Created",
        "namespace made",
    ))
    .await
    .unwrap();
    let events = kubectl(kc, &["get", "events", "-n", "t-events"]);
    let items = events["items"].as_array().unwrap();
    let ok = items
        .iter()
        .find(|e| e["reason"] == "ReconciliationSucceeded")
        .expect("info event");
    assert_eq!(ok["type"], "Normal");
    assert_eq!(ok["message"], "applied 1 object");
    assert_eq!(ok["source"]["component"], "trueup");
    assert_eq!(ok["involvedObject"]["kind"], "ConfigMap");
    assert_eq!(ok["involvedObject"]["name"], "app");
    assert_eq!(ok["involvedObject"]["uid"], cm.0["metadata"]["uid"]);
    assert_eq!(
        ok["metadata"]["annotations"]["event.toolkit.fluxcd.io/revision"],
        "main@sha1:abc"
    );
    let bad = items
        .iter()
        .find(|e| e["reason"] == "HealthCheckFailed")
        .expect("warning event");
    assert_eq!(bad["type"], "Warning");
    assert!(
        bad["message"].as_str().unwrap().len() < 5000,
        "message capped"
    );
    let defaults = kubectl(kc, &["get", "events", "-n", "default"]);
    assert!(defaults["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["involvedObject"]["kind"] == "Namespace"
            && e["involvedObject"]["name"] == "t-events"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_of_deployment_job_and_missing() {
    let Some((b, _)) = backend().await else {
        return;
    };
    namespace(&b, "t-health").await;
    let deploy = obj(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "t-health"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}}));
    let (_, stored) = b.apply(&deploy, &opts()).await.unwrap();
    let r = stored.object_ref();
    assert!(
        matches!(b.health(&r).await.unwrap(), Health::InProgress(_)),
        "no status yet"
    );
    // No kubelet runs Pods here: the test plays the Deployment controller.
    b.update_status(
        &r,
        &json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}),
    )
    .await
    .unwrap();
    assert!(matches!(b.health(&r).await.unwrap(), Health::InProgress(m) if m.contains("1 of 2")));
    b.update_status(
        &r,
        &json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2}),
    )
    .await
    .unwrap();
    assert_eq!(b.health(&r).await.unwrap(), Health::Current);
    // A new spec makes the old status stale (observedGeneration behind generation).
    let mut scaled = deploy.clone();
    scaled.0["spec"]["replicas"] = json!(3);
    let (a, _) = b.apply(&scaled, &opts()).await.unwrap();
    assert_eq!(a, ApplyAction::Configured);
    assert!(
        matches!(b.health(&r).await.unwrap(), Health::InProgress(m) if m.contains("generation"))
    );

    let job = obj(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "t-health"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "m", "image": "busybox", "command": ["true"]}]}}}}));
    let (_, stored) = b.apply(&job, &opts()).await.unwrap();
    let jr = stored.object_ref();
    assert!(matches!(
        b.health(&jr).await.unwrap(),
        Health::InProgress(_)
    ));
    b.update_status(
        &jr,
        &json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True",
            "lastProbeTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}),
    )
    .await
    .unwrap();
    assert_eq!(b.health(&jr).await.unwrap(), Health::Current);
    b.update_status(
        &jr,
        &json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "lastProbeTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}),
    )
    .await
    .unwrap();
    assert!(
        matches!(b.health(&jr).await.unwrap(), Health::Failed(m) if m.contains("BackoffLimitExceeded"))
    );

    let ns = ObjectRef::new("", "Namespace", "", "t-health");
    assert_eq!(b.health(&ns).await.unwrap(), Health::Current);
    assert_eq!(
        b.health(&ObjectRef::new("apps", "Deployment", "t-health", "absent"))
            .await
            .unwrap(),
        Health::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_field_change_recreates_when_asked() {
    let Some((b, _)) = backend().await else {
        return;
    };
    namespace(&b, "t-immutable").await;
    let job = |image: &str| {
        obj(json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "namespace": "t-immutable"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "m", "image": image}]}}}}))
    };
    let (_, first) = b.apply(&job("busybox:1.36"), &opts()).await.unwrap();
    let err = b.apply(&job("busybox:1.37"), &opts()).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Invalid { message, .. } if message.contains("immutable")),
        "{err}"
    );
    assert!(err.to_string().contains("Job/t-immutable/migrate"), "{err}");
    let force = ApplyOptions {
        recreate_on_immutable: true,
        ..opts()
    };
    let (a, _) = b
        .apply(
            &job("busybox:1.37"),
            &ApplyOptions {
                dry_run: true,
                ..force.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(a, ApplyAction::Configured, "dry run of a recreate");
    let (a, second) = b.apply(&job("busybox:1.37"), &force).await.unwrap();
    assert_eq!(a, ApplyAction::Created, "recreated");
    assert_ne!(first.0["metadata"]["uid"], second.0["metadata"]["uid"]);
    assert_eq!(
        second.0["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    // Nothing immutable changed: an ordinary apply, even with recreate allowed.
    let (a, _) = b.apply(&job("busybox:1.37"), &force).await.unwrap();
    assert_eq!(a, ApplyAction::Unchanged);

    let service = |ip: &str| {
        obj(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "t-immutable"},
            // v1.20 rejects an apply of ports without protocol (a list-map key without default).
            "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]}}))
    };
    b.apply(&service("10.96.100.10"), &opts()).await.unwrap();
    let err = b
        .apply(&service("10.96.100.11"), &opts())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    let (a, svc) = b.apply(&service("10.96.100.11"), &force).await.unwrap();
    assert_eq!(a, ApplyAction::Created);
    assert_eq!(svc.0["spec"]["clusterIP"], "10.96.100.11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_changes_from_now_on() {
    use futures::StreamExt;
    let Some((b, _)) = backend().await else {
        return;
    };
    namespace(&b, "t-watch").await;
    b.apply(&config_map("t-watch", "before", json!({})), &opts())
        .await
        .unwrap();
    let mut stream = b
        .watch(&[
            ("".to_string(), "ConfigMap".to_string()),
            ("apps".to_string(), "Deployment".to_string()),
        ])
        .await
        .unwrap();
    b.apply(&config_map("t-watch", "after", json!({"k": "v"})), &opts())
        .await
        .unwrap();
    async fn next(stream: &mut trueup_core::traits::backend::WatchStream) -> WatchEvent {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("a watch event within 30s")
                .expect("stream open");
            let r = match &ev {
                WatchEvent::Applied(o) => o.object_ref(),
                WatchEvent::Deleted(r) => r.clone(),
            };
            // Other tests change ConfigMaps in their own namespaces meanwhile.
            if r.namespace == "t-watch" {
                return ev;
            }
        }
    }
    match next(&mut stream).await {
        WatchEvent::Applied(o) => {
            assert_eq!(
                o.name(),
                "after",
                "the object that existed before is not reported"
            );
            assert_eq!(o.kind(), "ConfigMap");
            assert_eq!(o.0["data"]["k"], "v");
        }
        other => panic!("expected Applied, got {other:?}"),
    }
    b.delete(&ObjectRef::new("", "ConfigMap", "t-watch", "after"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut stream).await,
        WatchEvent::Deleted(ObjectRef::new("", "ConfigMap", "t-watch", "after"))
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=trueup tests",
            "-c",
            "user.email=tests@trueup.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Retries an apply while the API server does not serve a just-established CRD's kind yet.
async fn apply_when_served(b: &KubeBackend, o: &Object) {
    for _ in 0..50 {
        match b.apply(o, &opts()).await {
            Ok(_) => return,
            Err(e) if e.to_string().contains("does not serve") => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{} never served", o.display_name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_reconciles_git_into_the_cluster_and_prunes() {
    use trueup_core::reconcile::{GitRepositoryReconciler, KustomizationReconciler};
    use trueup_core::runtime::{CancellationToken, Runtime};
    use trueup_core::storage::ArtifactStore;
    let Some((b, kc)) = backend().await else {
        return;
    };
    let b = Arc::new(b);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("apps")).unwrap();
    std::fs::write(
        work.join("apps/namespace.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t-e2e\n",
    )
    .unwrap();
    for name in ["settings", "extra"] {
        std::fs::write(
            work.join(format!("apps/{name}.yaml")),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: t-e2e\ndata:\n  from: git\n"),
        )
        .unwrap();
    }
    // A CRD and an object of its kind in the same commit: the object can only be applied once
    // the CRD is established and discovery has been refreshed.
    std::fs::write(
        work.join("apps/crd.yaml"),
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gadgets.e2e.trueup.dev\nspec:\n  group: e2e.trueup.dev\n  names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n",
    )
    .unwrap();
    std::fs::write(
        work.join("apps/gadget.yaml"),
        "apiVersion: e2e.trueup.dev/v1\nkind: Gadget\nmetadata:\n  name: g\n  namespace: t-e2e\nspec:\n  size: 1\n",
    )
    .unwrap();
    let job = |image: &str| {
        format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  namespace: t-e2e\n  annotations:\n    kustomize.toolkit.fluxcd.io/force: Enabled\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: {image}\n")
    };
    std::fs::write(work.join("apps/job.yaml"), job("busybox:1.36")).unwrap();
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "apps"]);
    git(tmp.path(), &["clone", "-q", "--bare", "work", "fleet.git"]);
    git(&work, &["remote", "add", "origin", "../fleet.git"]);
    let url = format!("file://{}", tmp.path().join("fleet.git").display());

    flux_crds(&b).await;
    namespace(&b, "t-e2e-flux").await;
    apply_when_served(
        &b,
        &yaml(&format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: t-e2e-flux}}\nspec:\n  interval: 1m\n  url: {url}\n  ref: {{branch: main}}\n"
        )),
    )
    .await;
    apply_when_served(
        &b,
        &yaml("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: t-e2e-flux}\nspec:\n  interval: 10m\n  path: ./apps\n  prune: true\n  sourceRef: {kind: GitRepository, name: fleet}\n"),
    )
    .await;

    let store = ArtifactStore::new(tmp.path().join("artifacts")).unwrap();
    let runtime = |store: ArtifactStore| {
        Runtime::builder(b.clone())
            .reconciler(GitRepositoryReconciler::new(
                trueup_sources::GitSource::new(),
                store.clone(),
            ))
            .reconciler(KustomizationReconciler::new(
                trueup_appliers::KustomizeApplier::default(),
                store,
            ))
            .build()
    };
    let settle = |rt: Runtime| async move {
        tokio::time::timeout(
            Duration::from_secs(120),
            rt.run_until_settled(CancellationToken::new()),
        )
        .await
        .expect("settles within 2 minutes")
        .expect("runtime runs")
    };
    let ours = |s: &&trueup_core::runtime::ObjectSummary| s.object.namespace == "t-e2e-flux";
    let summary = settle(runtime(store.clone())).await;
    let mine: Vec<_> = summary.iter().filter(ours).collect();
    assert_eq!(mine.len(), 2, "{summary:?}");
    assert!(mine.iter().all(|s| s.is_ready()), "{mine:?}");

    let cm = kubectl(
        kc,
        &[
            "get",
            "configmap",
            "extra",
            "-n",
            "t-e2e",
            "--show-managed-fields",
        ],
    );
    assert_eq!(cm["data"]["from"], "git");
    assert!(
        cm["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "trueup" && m["operation"] == "Apply"),
        "applied with trueup's field manager"
    );
    // The Flux objects carry their status in the status subresource, readable with kubectl.
    let ks = kubectl(
        kc,
        &[
            "get",
            "kustomizations.kustomize.toolkit.fluxcd.io",
            "apps",
            "-n",
            "t-e2e-flux",
        ],
    );
    let ready = ks["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready condition");
    assert_eq!(ready["status"], "True", "{ks}");
    let inventory = ks["status"]["inventory"]["entries"].as_array().unwrap();
    assert!(
        inventory
            .iter()
            .any(|e| e["id"] == "t-e2e_extra__ConfigMap"),
        "{inventory:?}"
    );

    let gadget = ObjectRef::new("e2e.trueup.dev", "Gadget", "t-e2e", "g");
    assert!(
        b.get(&gadget).await.unwrap().is_some(),
        "custom resource of a CRD from the same commit"
    );
    let job_ref = ObjectRef::new("batch", "Job", "t-e2e", "migrate");
    let first_uid = b.get(&job_ref).await.unwrap().expect("job").0["metadata"]["uid"].clone();

    // A commit that deletes a manifest prunes its object; one that changes an immutable field of
    // an object marked `force: Enabled` recreates it.
    std::fs::remove_file(work.join("apps/extra.yaml")).unwrap();
    std::fs::write(work.join("apps/job.yaml"), job("busybox:1.37")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "drop extra, new job image"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let summary = settle(runtime(store)).await;
    assert!(
        summary.iter().filter(ours).all(|s| s.is_ready()),
        "{summary:?}"
    );
    assert_eq!(
        b.get(&ObjectRef::new("", "ConfigMap", "t-e2e", "extra"))
            .await
            .unwrap(),
        None,
        "pruned"
    );
    assert!(b
        .get(&ObjectRef::new("", "ConfigMap", "t-e2e", "settings"))
        .await
        .unwrap()
        .is_some());
    let job = b.get(&job_ref).await.unwrap().expect("job recreated");
    assert_ne!(
        job.0["metadata"]["uid"], first_uid,
        "recreated, not patched"
    );
    assert_eq!(
        job.0["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    let events = kubectl(kc, &["get", "events", "-n", "t-e2e-flux"]);
    assert!(
        events["items"].as_array().unwrap().iter().any(|e| {
            e["source"]["component"] == "trueup" && e["involvedObject"]["kind"] == "Kustomization"
        }),
        "the runtime recorded Kubernetes events: {events}"
    );
}

/// Runs kubectl with `stdin`, returning (success, stdout, stderr).
fn kubectl_stdin(kc: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The seed article's Flux manifests, as written, moved into the test's own namespaces.
fn seed_objects(ns: &str) -> Vec<(String, Object)> {
    let dir = repo_root().join("crates/core/tests/seed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        // clusters/production/kustomization.yaml is read by kustomize, never applied.
        if name == "cluster-kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for mut o in trueup_core::yaml::parse_objects(&text, &name).unwrap() {
            let target = match o.namespace() {
                Some("flux-system") => ns.to_string(),
                Some(other) => format!("{ns}-{other}"),
                None => continue,
            };
            o.metadata_mut()
                .insert("namespace".into(), Value::String(target));
            out.push((name.clone(), o));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_article_manifests_are_accepted_by_the_generated_crds() {
    let Some((b, kc)) = backend().await else {
        return;
    };
    flux_crds(&b).await;
    // Every CRD Established, as kubectl reports it, with Flux's storage version.
    for crd in flux_crd_objects() {
        let live = kubectl(kc, &["get", "crd", crd.name()]);
        let established = live["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        assert!(established, "{} not Established: {live}", crd.name());
        let kind = trueup_core::api::FluxKind::from_group_kind(
            live["spec"]["group"].as_str().unwrap(),
            live["spec"]["names"]["kind"].as_str().unwrap(),
        )
        .expect("a Flux kind");
        assert_eq!(
            live["status"]["storedVersions"],
            json!([kind.versions()[0]]),
            "{}",
            crd.name()
        );
    }

    let objects = seed_objects("t-seed");
    let kinds: std::collections::BTreeSet<&str> = objects.iter().map(|(_, o)| o.kind()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "Alert",
            "GitRepository",
            "HelmRelease",
            "HelmRepository",
            "Kustomization",
            "Provider",
            "ServiceAccount",
            "Terraform"
        ]
    );
    let mut namespaces: Vec<String> = objects
        .iter()
        .filter_map(|(_, o)| o.namespace().map(str::to_string))
        .collect();
    namespaces.dedup();
    for ns in &namespaces {
        namespace(&b, ns).await;
    }
    for (file, o) in &objects {
        let text = trueup_core::yaml::to_string(&o.clone().into_value()).unwrap();
        let what = format!("{file}: {}", o.display_name());
        let (ok, _, err) = kubectl_stdin(kc, &["apply", "--dry-run=server", "-f", "-"], &text);
        assert!(ok, "{what}: server dry run refused it: {err}");
        let (ok, _, err) = kubectl_stdin(kc, &["apply", "-f", "-"], &text);
        assert!(ok, "{what}: apply refused it: {err}");
        // What the server stored is what was written: no field pruned, none defaulted.
        let plural = format!(
            "{}.{}",
            o.kind().to_lowercase(),
            o.api_version().rsplit_once('/').map_or("", |(g, _)| g)
        );
        let resource = if o.group().is_empty() {
            o.kind().to_lowercase()
        } else {
            plural
        };
        let live = kubectl(
            kc,
            &["get", &resource, o.name(), "-n", o.namespace().unwrap()],
        );
        if let Some(spec) = o.0.get("spec") {
            assert_eq!(&live["spec"], spec, "{what}: stored spec differs");
        }
        assert_eq!(live["apiVersion"], o.api_version(), "{what}");
    }
    // Read back through the backend as the typed Flux objects trueup reconciles.
    for (file, o) in &objects {
        let Some(live) = b.get(&o.object_ref()).await.unwrap() else {
            panic!("{file}: {} not found", o.display_name())
        };
        if trueup_core::api::FluxKind::from_group_kind(o.group(), o.kind()).is_some() {
            trueup_core::api::FluxObject::from_object(&live)
                .unwrap_or_else(|e| panic!("{file}: stored object does not parse: {e}"));
        }
    }
    // Flux's short names and printer columns.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(["get", "gitrepo,ks,hr,tf,helmrepo", "-n", "t-seed"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "gitrepository.source.toolkit.fluxcd.io/my-api",
        "kustomization.kustomize.toolkit.fluxcd.io/apps",
        "terraform.infra.contrib.fluxcd.io/vpc",
        "helmrepository.source.toolkit.fluxcd.io/prometheus-community",
        "https://github.com/my-org/my-api",
    ] {
        assert!(table.contains(want), "{want} missing from:\n{table}");
    }
    let header = table.lines().next().unwrap_or("");
    for col in ["NAME", "URL", "AGE", "READY", "STATUS"] {
        assert!(header.contains(col), "{col} missing from {header}");
    }
    // An older version Flux still serves is accepted and warned about.
    let (ok, _, err) = kubectl_stdin(
        kc,
        &["apply", "--dry-run=server", "-f", "-"],
        "apiVersion: source.toolkit.fluxcd.io/v1beta2\nkind: GitRepository\nmetadata: {name: old, namespace: t-seed}\nspec: {interval: 5m, url: 'https://example.invalid/x'}\n",
    );
    assert!(ok, "{err}");
    assert!(err.contains("v1beta2 GitRepository is deprecated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_rejects_wrong_flux_objects_naming_the_field() {
    let Some((b, kc)) = backend().await else {
        return;
    };
    flux_crds(&b).await;
    namespace(&b, "t-reject").await;
    let ks = |spec: &str| {
        format!("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: bad, namespace: t-reject}}\nspec:\n{spec}")
    };
    let source_ref = "  sourceRef: {kind: GitRepository, name: fleet}\n";
    let cases = [
        (
            ks(&format!("  interval: 5\n{source_ref}")),
            &["spec.interval", "string"][..],
        ),
        (
            ks(&format!("  interval: 5 minutes\n{source_ref}")),
            &["spec.interval", "should match"][..],
        ),
        (
            ks("  interval: 5m\n  sourceRef: {kind: Git, name: fleet}\n"),
            &["spec.sourceRef.kind", "Unsupported value", "GitRepository"][..],
        ),
        (
            ks("  interval: 5m\n"),
            &["spec.sourceRef", "Required value"][..],
        ),
        (
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: bad, namespace: t-reject}\nspec: {interval: 1m}\n".to_string(),
            &["spec.url", "Required value"][..],
        ),
        (
            "apiVersion: notification.toolkit.fluxcd.io/v1beta3\nkind: Alert\nmetadata: {name: bad, namespace: t-reject}\nspec:\n  providerRef: {name: slack}\n  eventSeverity: critical\n  eventSources: [{kind: Kustomization, name: '*'}]\n".to_string(),
            &["spec.eventSeverity", "Unsupported value"][..],
        ),
        (
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: bad, namespace: t-reject}\nspec:\n  interval: 1h\n  chart: {spec: {chart: c, sourceRef: {kind: HelmRepository, name: r}}}\n  install: {remediation: {retries: three}}\n".to_string(),
            &["spec.install.remediation.retries", "integer"][..],
        ),
    ];
    for (text, wants) in &cases {
        let (ok, _, err) = kubectl_stdin(
            kc,
            &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
            text,
        );
        assert!(!ok, "accepted:\n{text}");
        for want in *wants {
            assert!(
                err.contains(want),
                "`{want}` missing from: {err}\nfor:\n{text}"
            );
        }
    }
    // Through the backend, the error names the object and the server's field message.
    let (text, _) = &cases[0];
    let err = b.apply(&yaml(text), &opts()).await.unwrap_err();
    assert!(matches!(err, BackendError::Invalid { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("Kustomization/t-reject/bad"), "{msg}");
    assert!(msg.contains("spec.interval"), "{msg}");
    assert_eq!(
        b.get(&ObjectRef::new(
            "kustomize.toolkit.fluxcd.io",
            "Kustomization",
            "t-reject",
            "bad"
        ))
        .await
        .unwrap(),
        None,
        "nothing stored"
    );
}

/// `kubectl auth can-i` as a ServiceAccount (impersonated): true for "yes".
fn can_i(kc: &Path, sa: &str, args: &[&str]) -> bool {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(["auth", "can-i", "--as", sa])
        .args(args)
        .output()
        .expect("running kubectl auth can-i");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {args:?}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

/// One request, as RBAC sees it: verb, group, resource, subresource, namespace ("" = all).
#[derive(Debug)]
struct Request(&'static str, String, String, &'static str, &'static str);

/// Asks the API server whether `user` may make each request: a SelfSubjectAccessReview sent
/// by a client impersonating `user` (what `kubectl auth can-i --as` does, without a process
/// per question). Returns the requests denied.
async fn denied(kc: &Path, user: &str, requests: &[Request]) -> Vec<String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kc).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    let client = kube::Client::try_from(config).unwrap();
    let ar = kube::core::ApiResource {
        group: "authorization.k8s.io".into(),
        version: "v1".into(),
        api_version: "authorization.k8s.io/v1".into(),
        kind: "SelfSubjectAccessReview".into(),
        plural: "selfsubjectaccessreviews".into(),
    };
    let api: kube::Api<kube::core::DynamicObject> = kube::Api::all_with(client, &ar);
    let mut out = Vec::new();
    for r in requests {
        let review: kube::core::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {},
            "spec": {"resourceAttributes": {"verb": r.0, "group": r.1, "resource": r.2,
                "subresource": r.3, "namespace": r.4}},
        }))
        .unwrap();
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .unwrap();
        if answer.data["status"]["allowed"] != true {
            out.push(format!("{r:?}"));
        }
    }
    out
}

/// Every request the operator makes for its own bookkeeping.
fn operator_requests() -> Vec<Request> {
    let mut out = Vec::new();
    let core = || String::new();
    for k in trueup_core::api::FluxKind::ALL {
        let g = || k.group().to_string();
        let res = || trueup_kube::crd::names(k).plural.to_string();
        for verb in [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ] {
            out.push(Request(verb, g(), res(), "", "t-any"));
        }
        // Watches and lists across namespaces.
        out.push(Request("list", g(), res(), "", ""));
        out.push(Request("watch", g(), res(), "", ""));
        for verb in ["get", "update", "patch"] {
            out.push(Request(verb, g(), res(), "status", "t-any"));
        }
        out.push(Request("update", g(), res(), "finalizers", "t-any"));
    }
    for res in ["secrets", "configmaps"] {
        for verb in ["get", "list", "watch"] {
            out.push(Request(verb, core(), res.into(), "", "t-any"));
            out.push(Request(verb, core(), res.into(), "", ""));
        }
    }
    out.push(Request("create", core(), "events".into(), "", "t-any"));
    out.push(Request("patch", core(), "events".into(), "", "t-any"));
    out.push(Request(
        "create",
        "events.k8s.io".into(),
        "events".into(),
        "",
        "t-any",
    ));
    for verb in ["get", "list", "watch"] {
        out.push(Request(
            verb,
            "apiextensions.k8s.io".into(),
            "customresourcedefinitions".into(),
            "",
            "",
        ));
    }
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        out.push(Request(
            verb,
            "coordination.k8s.io".into(),
            "leases".into(),
            "",
            "flux-system",
        ));
    }
    out
}

/// What reconciling arbitrary manifests needs beyond the operator's bookkeeping.
fn apply_requests() -> Vec<Request> {
    vec![
        Request("create", "apps".into(), "deployments".into(), "", "t-any"),
        Request("create", String::new(), "secrets".into(), "", "t-any"),
        Request("delete", String::new(), "namespaces".into(), "", ""),
        Request(
            "create",
            "rbac.authorization.k8s.io".into(),
            "clusterroles".into(),
            "",
            "",
        ),
        Request(
            "patch",
            "apiextensions.k8s.io".into(),
            "customresourcedefinitions".into(),
            "",
            "",
        ),
        Request(
            "create",
            "coordination.k8s.io".into(),
            "leases".into(),
            "",
            "t-any",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_apply_and_grant_what_the_operator_uses() {
    let Some((b, kc)) = backend().await else {
        return;
    };
    // The CRDs of config/default are installed by the shared step (its checks run first).
    flux_crds(&b).await;
    let dir = repo_root().join("config/default");
    // As the README installs it. Server-side: the CRDs are too large for the annotation a
    // client-side apply keeps, and the fields trueup applied to them already are the same.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(["apply", "--server-side", "-k"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apply -k config/default: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deploy = kubectl(kc, &["get", "deployment", "trueup", "-n", "flux-system"]);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["args"],
        json!([
            "operator",
            "--in-cluster",
            "--leader-elect",
            "--health-addr=:9440"
        ])
    );
    kubectl(
        kc,
        &["get", "serviceaccount", "trueup", "-n", "flux-system"],
    );

    let sa = "system:serviceaccount:flux-system:trueup";
    let no = denied(kc, sa, &operator_requests()).await;
    assert!(no.is_empty(), "the operator's account may not: {no:?}");
    // Apply rights for what Kustomizations reconcile, as kustomize-controller has them.
    let no = denied(kc, sa, &apply_requests()).await;
    assert!(no.is_empty(), "the operator's account may not: {no:?}");
    // The same answers as `kubectl auth can-i` gives a user.
    assert!(can_i(
        kc,
        sa,
        &[
            "update",
            "kustomizations.kustomize.toolkit.fluxcd.io",
            "--subresource=status",
            "-n",
            "apps"
        ]
    ));
    assert!(can_i(
        kc,
        sa,
        &["create", "leases.coordination.k8s.io", "-n", "flux-system"]
    ));

    // The manager role alone (no cluster-admin) covers the operator's own requests, and
    // nothing beyond them: the apply rights come only from the reconciler binding.
    namespace(&b, "t-rbac").await;
    let probe_sa = "system:serviceaccount:t-rbac:probe";
    for o in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "probe", "namespace": "t-rbac"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "t-rbac-probe"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "trueup-manager"},
            "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": "t-rbac"}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "t-rbac-probe", "namespace": "flux-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trueup-leader-election"},
            "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": "t-rbac"}]}),
    ] {
        b.apply(&obj(o), &opts()).await.unwrap();
    }
    let no = denied(kc, probe_sa, &operator_requests()).await;
    assert!(no.is_empty(), "trueup-manager lacks: {no:?}");
    let apply = apply_requests();
    let no = denied(kc, probe_sa, &apply).await;
    assert_eq!(
        no.len(),
        apply.len(),
        "trueup-manager alone grants more than bookkeeping: denied only {no:?}"
    );
    assert!(!can_i(
        kc,
        probe_sa,
        &["create", "deployments.apps", "-n", "t-any"]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_kustomization_is_held_by_its_finalizer_until_pruned() {
    use trueup_core::reconcile::{KustomizationReconciler, Reconciler};
    use trueup_core::traits::backend::FLUX_FINALIZER;
    let Some((b, kc)) = backend().await else {
        return;
    };
    assert!(b.holds_finalizers());
    flux_crds(&b).await;
    namespace(&b, "t-fin").await;
    b.apply(&config_map("t-fin", "app", json!({"k": "v"})), &opts())
        .await
        .unwrap();
    let ks = yaml("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: t-fin}\nspec:\n  interval: 10m\n  prune: true\n  sourceRef: {kind: GitRepository, name: fleet}\n");
    apply_when_served(&b, &ks).await;
    let r = ks.object_ref();
    b.update_status(
        &r,
        &json!({"inventory": {"entries": [{"id": "t-fin_app__ConfigMap", "v": "v1"}]}}),
    )
    .await
    .unwrap();
    // Another controller's finalizer is kept alongside.
    let (ok, _, err) = kubectl_stdin(
        kc,
        &[
            "patch",
            "kustomizations.kustomize.toolkit.fluxcd.io",
            "apps",
            "-n",
            "t-fin",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/other"]}}"#,
        ],
        "",
    );
    assert!(ok, "{err}");
    assert!(b.add_finalizer(&r, FLUX_FINALIZER).await.unwrap());
    assert!(
        !b.add_finalizer(&r, FLUX_FINALIZER).await.unwrap(),
        "already there"
    );
    let live = kubectl(kc, &["get", "kustomization", "apps", "-n", "t-fin"]);
    assert_eq!(
        live["metadata"]["finalizers"],
        json!(["example.com/other", FLUX_FINALIZER])
    );

    // Deleting marks the object; it stays, with its inventory, until the finalizer goes.
    assert!(b.delete(&r).await.unwrap());
    let held = b.get(&r).await.unwrap().expect("held by its finalizers");
    assert!(held.metadata().unwrap().contains_key("deletionTimestamp"));
    // What the runtime does on seeing it: clean up, then let it go.
    let tmp = tempfile::tempdir().unwrap();
    let rec = KustomizationReconciler::new(
        trueup_appliers::KustomizeApplier::default(),
        trueup_core::storage::ArtifactStore::new(tmp.path().join("artifacts")).unwrap(),
    );
    let events = rec.finalize(&held, &b).await;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "Pruned" && e.message.contains("ConfigMap/t-fin/app")),
        "{events:?}"
    );
    assert_eq!(
        b.get(&ObjectRef::new("", "ConfigMap", "t-fin", "app"))
            .await
            .unwrap(),
        None,
        "pruned before the Kustomization goes"
    );
    assert!(b.get(&r).await.unwrap().is_some(), "still held");
    assert!(b.remove_finalizer(&r, FLUX_FINALIZER).await.unwrap());
    let live = kubectl(kc, &["get", "kustomization", "apps", "-n", "t-fin"]);
    assert_eq!(live["metadata"]["finalizers"], json!(["example.com/other"]));
    // The last finalizer removed lets it go.
    assert!(b.remove_finalizer(&r, "example.com/other").await.unwrap());
    let mut gone = false;
    for _ in 0..50 {
        if b.get(&r).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "deleted once its finalizers were removed");
    assert!(
        !b.remove_finalizer(&r, FLUX_FINALIZER).await.unwrap(),
        "gone"
    );
    let err = b
        .add_finalizer(
            &ObjectRef::new(
                "kustomize.toolkit.fluxcd.io",
                "Kustomization",
                "t-fin",
                "absent",
            ),
            FLUX_FINALIZER,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NotFound(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_trueup_accepts_is_kept_by_the_server_in_every_version() {
    let Some((b, _)) = backend().await else {
        return;
    };
    flux_crds(&b).await;
    namespace(&b, "t-every").await;
    for kind in trueup_core::api::FluxKind::ALL {
        let spec = trueup_kube::crd::example(&trueup_kube::crd::spec_schema(kind).unwrap());
        for version in kind.versions() {
            let o = obj(json!({
                "apiVersion": format!("{}/{version}", kind.group()),
                "kind": kind.kind(),
                "metadata": {"name": "every-field", "namespace": "t-every"},
                "spec": spec,
            }));
            let dry = ApplyOptions {
                dry_run: true,
                ..opts()
            };
            let mut result = None;
            for _ in 0..50 {
                match b.apply(&o, &dry).await {
                    Err(e) if e.to_string().contains("does not serve") => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    other => {
                        result = Some(other);
                        break;
                    }
                }
            }
            let (_, stored) = result
                .expect("served")
                .unwrap_or_else(|e| panic!("{kind} {version}: {e}"));
            assert_eq!(
                stored.0["spec"], spec,
                "{kind} {version}: the server pruned or changed a field"
            );
        }
    }
}

// ---------- leader election ----------

use trueup_core::runtime::CancellationToken;
use trueup_kube::leader::{Attempt, LeaderElectionConfig, LeaderElector, LeaseRecord};

fn elector(b: &KubeBackend, ns: &str, lease: &str, id: &str) -> Arc<LeaderElector> {
    Arc::new(
        LeaderElector::new(
            b.client().clone(),
            LeaderElectionConfig {
                lease_name: lease.into(),
                namespace: ns.into(),
                identity: id.into(),
                lease_duration: Duration::from_secs(4),
                renew_deadline: Duration::from_secs(3),
                retry_period: Duration::from_millis(500),
            },
        )
        .expect("valid settings"),
    )
}

fn lease_spec(kc: &Path, ns: &str, name: &str) -> Value {
    kubectl(kc, &["get", "leases.coordination.k8s.io", name, "-n", ns])["spec"].clone()
}

async fn acquire_within(e: &Arc<LeaderElector>, secs: u64) -> trueup_kube::Leadership {
    tokio::time::timeout(
        Duration::from_secs(secs),
        e.acquire(&CancellationToken::new()),
    )
    .await
    .unwrap_or_else(|_| panic!("{} did not lead within {secs}s", e.config().identity))
    .expect("acquire")
    .expect("not cancelled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_candidates_race_and_exactly_one_leads() {
    let Some((b, _)) = backend().await else {
        return;
    };
    namespace(&b, "t-lease-race").await;
    for round in 0..8 {
        let lease = format!("race-{round}");
        let candidates: Vec<_> = (0..3)
            .map(|i| elector(&b, "t-lease-race", &lease, &format!("c{i}")))
            .collect();
        let tries =
            futures::future::join_all(candidates.iter().map(|c| c.try_acquire_or_renew())).await;
        let leaders: Vec<usize> = tries
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t, Ok(Attempt::Leading)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(leaders.len(), 1, "round {round}: {tries:?}");
        let winner = format!("c{}", leaders[0]);
        let stored = candidates[0].current().await.unwrap().unwrap();
        assert_eq!(stored.holder_identity, winner);
        // Everyone else now sees the winner holding a Lease that has not expired.
        for (i, c) in candidates.iter().enumerate() {
            if i != leaders[0] {
                assert_eq!(
                    c.try_acquire_or_renew().await.unwrap(),
                    Attempt::HeldBy(winner.clone())
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewal_release_expiry_and_loss() {
    let Some((b, kc)) = backend().await else {
        return;
    };
    let ns = "t-lease";
    namespace(&b, ns).await;
    let a = elector(&b, ns, "trueup", "replica-a");
    let bb = elector(&b, ns, "trueup", "replica-b");

    // a creates the Lease and leads; while it renews, b never gets it.
    let la = acquire_within(&a, 20).await;
    let spec = lease_spec(kc, ns, "trueup");
    assert_eq!(spec["holderIdentity"], "replica-a");
    assert_eq!(spec["leaseDurationSeconds"], 4);
    assert_eq!(spec["leaseTransitions"], 0);
    let first_renew = spec["renewTime"].as_str().unwrap().to_string();
    assert!(spec["acquireTime"].as_str().unwrap().ends_with('Z'));
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < watch_until {
        assert_eq!(
            bb.try_acquire_or_renew().await.unwrap(),
            Attempt::HeldBy("replica-a".into()),
            "the Lease is renewed, so it never expires for b"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let spec = lease_spec(kc, ns, "trueup");
    assert_ne!(spec["renewTime"], first_renew, "a renewed the Lease");
    assert!(!la.lost().is_cancelled());

    // A released Lease has no holder and is taken by the next single try, without waiting
    // for it to expire.
    assert!(la.release().await.unwrap(), "released");
    let spec = lease_spec(kc, ns, "trueup");
    assert!(
        spec.get("holderIdentity").is_none_or(Value::is_null),
        "{spec}"
    );
    assert_eq!(bb.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    let spec = lease_spec(kc, ns, "trueup");
    assert_eq!(spec["holderIdentity"], "replica-b");
    assert_eq!(spec["leaseTransitions"], 1);

    // b stops renewing without releasing (a crash): a takes over only once the Lease expired.
    let lb = acquire_within(&bb, 5).await;
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy("replica-b".into())
    );
    let crashed = tokio::time::Instant::now();
    drop(lb);
    let la = acquire_within(&a, 60).await;
    assert!(
        crashed.elapsed() >= Duration::from_secs(2),
        "taken after expiry, not at once: {:?}",
        crashed.elapsed()
    );
    let rec: LeaseRecord = a.current().await.unwrap().unwrap();
    assert_eq!(rec.holder_identity, "replica-a");
    assert_eq!(rec.lease_transitions, 2);

    // Another writer takes the Lease: the leader notices on its next renewal and stops.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args([
            "patch",
            "leases.coordination.k8s.io",
            "trueup",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"holderIdentity":"intruder"}}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::timeout(Duration::from_secs(30), la.lost().cancelled())
        .await
        .expect("the leader noticed it lost the Lease");
    // A lost Lease is not released: the intruder keeps it.
    assert!(!la.release().await.unwrap());
    assert_eq!(lease_spec(kc, ns, "trueup")["holderIdentity"], "intruder");
}

#[test]
fn lease_settings_are_checked() {
    let cfg = LeaderElectionConfig {
        lease_duration: Duration::from_secs(10),
        renew_deadline: Duration::from_secs(15),
        ..Default::default()
    };
    // No server needed to reject bad settings; a client for an unreachable address will do.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let e = LeaderElector::new(client.clone(), cfg)
            .err()
            .expect("rejected");
        assert!(
            e.to_string().contains("greater than the renew deadline"),
            "{e}"
        );
        let d = LeaderElectionConfig::default();
        assert_eq!(
            (d.lease_duration, d.renew_deadline, d.retry_period),
            (
                Duration::from_secs(35),
                Duration::from_secs(30),
                Duration::from_secs(5)
            ),
            "Flux's defaults"
        );
        assert_eq!(d.lease_name, "trueup-leader-election");
        assert!(LeaderElector::new(client, d).is_ok());
    });
}

// ---------- sharding ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_label_selector_limits_list_and_watch() {
    let Some((plain, kc)) = backend().await else {
        return;
    };
    let ns = "t-shard";
    namespace(&plain, ns).await;
    let selector: trueup_kube::LabelSelector =
        "sharding.fluxcd.io/key notin (shard1)".parse().unwrap();
    let b = KubeBackend::from_kubeconfig(kc)
        .await
        .unwrap()
        .with_watch_selector(selector, [(String::new(), "ConfigMap".to_string())]);
    let cm = |name: &str, shard: Option<&str>| {
        let mut o = config_map(ns, name, json!({}));
        if let Some(s) = shard {
            o.metadata_mut()
                .insert("labels".into(), json!({ "sharding.fluxcd.io/key": s }));
        }
        o
    };
    plain.apply(&cm("main", None), &opts()).await.unwrap();
    plain
        .apply(&cm("two", Some("shard2")), &opts())
        .await
        .unwrap();
    plain
        .apply(&cm("one", Some("shard1")), &opts())
        .await
        .unwrap();
    let names = |v: Vec<Object>| {
        let mut n: Vec<String> = v.iter().map(|o| o.name().to_string()).collect();
        n.sort();
        n
    };
    let mut lp = ListParams::kind("", "ConfigMap");
    lp.namespace = Some(ns.into());
    assert_eq!(names(b.list(&lp).await.unwrap()), ["main", "two"]);
    assert_eq!(
        names(plain.list(&lp).await.unwrap()),
        ["main", "one", "two"]
    );
    // Gets by name are not sharded (a source in another shard can still be read).
    assert!(b
        .get(&ObjectRef::new("", "ConfigMap", ns, "one"))
        .await
        .unwrap()
        .is_some());

    use futures::StreamExt;
    let mut w = b
        .watch(&[(String::new(), "ConfigMap".into())])
        .await
        .unwrap();
    async fn next(w: &mut trueup_core::traits::backend::WatchStream) -> WatchEvent {
        tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .expect("a watch event")
            .expect("stream open")
    }
    // Changes in shard1 are not seen; the next event is the one in this shard.
    let mut one = cm("one", Some("shard1"));
    one.0.insert("data".into(), json!({"x": "2"}));
    plain.apply(&one, &opts()).await.unwrap();
    let mut two = cm("two", Some("shard2"));
    two.0.insert("data".into(), json!({"x": "2"}));
    plain.apply(&two, &opts()).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Applied(o) => assert_eq!(o.name(), "two"),
        other => panic!("unexpected {other:?}"),
    }
    // Moving an object to shard1 takes it out of this shard's view.
    plain
        .apply(&cm("main", Some("shard1")), &opts())
        .await
        .unwrap();
    assert_eq!(
        next(&mut w).await,
        WatchEvent::Deleted(ObjectRef::new("", "ConfigMap", ns, "main"))
    );
    assert_eq!(names(b.list(&lp).await.unwrap()), ["two"]);
}
