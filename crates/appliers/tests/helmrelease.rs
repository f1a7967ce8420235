//! HelmRelease end to end on the in-memory backend: a Helm repository served on 127.0.0.1 by
//! the test (charts packaged here from tests/fixtures/helmrelease/chart), the seed's HelmRelease
//! shape, install -> upgrade -> failed upgrade rolled back -> valuesFrom -> uninstall, with the
//! release records decoded as Helm stores them.
use async_trait::async_trait;
use base64::Engine;
use serde_json::Value;
use sha2::Digest;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use trueup_appliers::helmrelease::{record, HelmReleaseApplier};
use trueup_core::event::Event;
use trueup_core::memory::MemoryBackend;
use trueup_core::object::{Object, ObjectRef};
use trueup_core::reconcile::helmrelease::HelmReleaseStatus;
use trueup_core::reconcile::{
    HelmChartReconciler, HelmReleaseReconciler, Outcome, Reconciler, Verdict,
};
use trueup_core::status::Status;
use trueup_core::storage::ArtifactStore;
use trueup_core::traits::{
    ApplyAction, ApplyOptions, Backend, BackendError, DeleteOptions, Health, ListParams,
    Propagation, WatchStream,
};
use trueup_sources::helm::HelmChartSource;
use trueup_sources::HelmSource;

const FAIL_ANNOTATION: &str = "trueup.test/health";

/// Packages the fixture chart as `name-version.tgz`; the version picks which optional
/// templates its default values turn on.
fn package(name: &str, version: &str, extra: bool, broken: bool) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helmrelease/chart");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    };
    let chart = format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: v0.73.0\n");
    add(format!("{name}/Chart.yaml"), chart.as_bytes());
    let values = std::fs::read_to_string(root.join("values.yaml"))
        .unwrap()
        .replace("extra: false", &format!("extra: {extra}"))
        .replace("broken: false", &format!("broken: {broken}"));
    add(format!("{name}/values.yaml"), values.as_bytes());
    for t in ["configmap.yaml", "extra.yaml", "broken.yaml", "hook.yaml"] {
        let body = std::fs::read(root.join("templates").join(t)).unwrap();
        add(format!("{name}/templates/{t}"), &body);
    }
    tar.into_inner().unwrap().finish().unwrap()
}

type Files = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A Helm repository whose charts the test can add to while it runs.
struct Repo {
    url: String,
    files: Files,
    charts: Mutex<Vec<(String, String)>>,
}

impl Repo {
    fn serve() -> Repo {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let files: Files = Arc::default();
        let f = files.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                let _ = r.read_line(&mut first);
                let path = first.split(' ').nth(1).unwrap_or("/").to_string();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                        break;
                    }
                }
                let body = f
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, b)| b.clone());
                let (code, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", Vec::new()),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
                let _ = r.read(&mut [0u8; 0]);
            }
        });
        Repo {
            url,
            files,
            charts: Mutex::default(),
        }
    }

    /// Publishes a chart version and regenerates index.yaml.
    fn publish(&self, name: &str, version: &str, extra: bool, broken: bool) {
        let tgz = package(name, version, extra, broken);
        let digest = hex::encode(sha2::Sha256::digest(&tgz));
        let mut charts = self.charts.lock().unwrap();
        charts.push((version.to_string(), digest));
        let mut idx = format!("apiVersion: v1\nentries:\n  {name}:\n");
        for (v, d) in charts.iter() {
            idx.push_str(&format!("  - apiVersion: v2\n    name: {name}\n    version: {v}\n    digest: {d}\n    urls:\n    - charts/{name}-{v}.tgz\n"));
        }
        let mut files = self.files.lock().unwrap();
        files.retain(|(p, _)| p != "/index.yaml");
        files.push((format!("/charts/{name}-{version}.tgz"), tgz));
        files.push(("/index.yaml".into(), idx.into_bytes()));
    }
}

/// The memory backend, except that objects annotated `trueup.test/health: fail` never become
/// healthy (a rollout that fails).
struct FlakyHealth(MemoryBackend);

#[async_trait]
impl Backend for FlakyHealth {
    async fn apply(
        &self,
        obj: &Object,
        opts: &ApplyOptions,
    ) -> Result<(ApplyAction, Object), BackendError> {
        self.0.apply(obj, opts).await
    }
    async fn get(&self, r: &ObjectRef) -> Result<Option<Object>, BackendError> {
        self.0.get(r).await
    }
    async fn list(&self, params: &ListParams) -> Result<Vec<Object>, BackendError> {
        self.0.list(params).await
    }
    async fn delete(&self, r: &ObjectRef) -> Result<bool, BackendError> {
        self.0.delete(r).await
    }
    async fn update_status(&self, r: &ObjectRef, status: &Value) -> Result<(), BackendError> {
        self.0.update_status(r, status).await
    }
    async fn record_event(&self, event: &Event) -> Result<(), BackendError> {
        self.0.record_event(event).await
    }
    async fn health(&self, r: &ObjectRef) -> Result<Health, BackendError> {
        if let Some(o) = self.0.get(r).await? {
            if o.annotation(FAIL_ANNOTATION) == Some("fail") {
                return Ok(Health::Failed(
                    "Deployment exceeded its progress deadline".into(),
                ));
            }
        }
        self.0.health(r).await
    }
    async fn watch(&self, kinds: &[(String, String)]) -> Result<WatchStream, BackendError> {
        self.0.watch(kinds).await
    }
    fn describe(&self) -> String {
        "memory with failing health".into()
    }
    fn runs_workloads(&self) -> bool {
        self.0.runs_workloads()
    }
}

fn obj(yaml: &str) -> Object {
    Object::from_value(serde_yaml::from_str(yaml).unwrap()).unwrap()
}

/// The HelmRelease reconciler and the HelmChart reconciler that fetches the chart its
/// `spec.chart` describes (the runtime runs both; these tests call them in turn).
struct Rec {
    chart: HelmChartReconciler<HelmSource>,
    release: HelmReleaseReconciler<HelmReleaseApplier>,
}

impl Rec {
    async fn finalize(&self, o: &Object, b: &dyn Backend) -> Vec<Event> {
        self.release.finalize(o, b).await
    }
}

fn reconciler(store: &Path) -> Rec {
    let store = ArtifactStore::new(store).unwrap();
    Rec {
        chart: HelmChartReconciler::new(HelmSource::new(), store.clone(), |repository, chart| {
            HelmChartSource { repository, chart }
        }),
        release: HelmReleaseReconciler::new(
            HelmReleaseApplier {
                poll: std::time::Duration::from_millis(20),
            },
            store,
        ),
    }
}

fn chart_ref() -> ObjectRef {
    ObjectRef::new(
        "source.toolkit.fluxcd.io",
        "HelmChart",
        "flux-system",
        "monitoring-kube-prometheus-stack",
    )
}

/// The seed's HelmRelease, with `${GRAFANA_ADMIN_PASSWORD}` as the parent Kustomization's
/// substitution leaves it.
fn seed_release(extra_spec: &str) -> Object {
    obj(&format!(
        r#"
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: kube-prometheus-stack
  namespace: monitoring
spec:
  interval: 1h
  timeout: 2s
  chart:
    spec:
      chart: kube-prometheus-stack
      version: ">=58.0.0 <59.0.0"
      sourceRef:
        kind: HelmRepository
        name: prometheus-community
        namespace: flux-system
  values:
    grafana:
      adminPassword: "substituted-pw"
    prometheus:
      prometheusSpec:
        retention: 15d
  install:
    remediation:
      retries: 3
  upgrade:
    cleanupOnFail: true
    remediation:
      retries: 3
      strategy: rollback
{extra_spec}"#
    ))
}

async fn setup(repo: &Repo, hr: Object) -> FlakyHealth {
    let b = FlakyHealth(MemoryBackend::new());
    let repo_obj = obj(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: prometheus-community, namespace: flux-system}}\nspec: {{interval: 12h, url: '{}'}}\n",
        repo.url
    ));
    b.apply(&repo_obj, &ApplyOptions::default()).await.unwrap();
    b.apply(&hr, &ApplyOptions::default()).await.unwrap();
    b
}

fn hr_ref() -> ObjectRef {
    ObjectRef::new(
        "helm.toolkit.fluxcd.io",
        "HelmRelease",
        "monitoring",
        "kube-prometheus-stack",
    )
}

/// One reconcile, with the status written back as the runtime does.
async fn run(rec: &Rec, b: &FlakyHealth) -> Outcome {
    // The release creates its HelmChart on its first run and waits for it; the chart
    // reconciler then fetches the chart, and the release runs again.
    let mut chart_ran = false;
    loop {
        if let Some(c) = b.get(&chart_ref()).await.unwrap() {
            let mut out = rec.chart.reconcile(&c, b).await;
            out.status.observed_generation = c.generation();
            b.update_status(&chart_ref(), &out.status.to_value())
                .await
                .unwrap();
            chart_ran = true;
        }
        let o = b.get(&hr_ref()).await.unwrap().unwrap();
        let out = rec.release.reconcile(&o, b).await;
        b.update_status(&hr_ref(), &out.status.to_value())
            .await
            .unwrap();
        if out.verdict != Verdict::Waiting || chart_ran {
            return out;
        }
    }
}

async fn configmap(b: &FlakyHealth, name: &str) -> Option<Object> {
    b.get(&ObjectRef::new("", "ConfigMap", "monitoring", name))
        .await
        .unwrap()
}

/// Release records by version: (status label, decoded release).
async fn records(b: &FlakyHealth) -> Vec<(String, record::Release)> {
    let mut p = ListParams::kind("", "Secret");
    p.namespace = Some("monitoring".into());
    p.labels.insert("owner".into(), "helm".into());
    let mut out: Vec<(String, record::Release)> = b
        .list(&p)
        .await
        .unwrap()
        .iter()
        .map(|s| {
            (
                s.label("status").unwrap().to_string(),
                record::from_secret(s).unwrap(),
            )
        })
        .collect();
    out.sort_by_key(|(_, r)| r.version);
    out
}

fn cond<'a>(st: &'a Status, t: &str) -> &'a trueup_core::status::Condition {
    st.condition(t)
        .unwrap_or_else(|| panic!("no {t} condition in {st:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_rollback() {
    let repo = Repo::serve();
    repo.publish("kube-prometheus-stack", "58.0.0", false, false);
    repo.publish("kube-prometheus-stack", "57.9.0", true, false);
    let store = tempfile::tempdir().unwrap();
    let rec = reconciler(store.path());
    let b = setup(&repo, seed_release("")).await;

    // Install: the version range picks 58.0.0, inline values flow into the objects.
    let out = run(&rec, &b).await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(cond(&out.status, "Released").reason, "InstallSucceeded");
    let cm = configmap(&b, "kube-prometheus-stack-config").await.unwrap();
    assert_eq!(cm.0["data"]["retention"], "15d");
    assert_eq!(cm.0["data"]["password"], "substituted-pw");
    assert_eq!(cm.0["data"]["chartVersion"], "58.0.0");
    assert_eq!(cm.label("app.kubernetes.io/managed-by"), Some("Helm"));
    assert_eq!(
        cm.annotation("meta.helm.sh/release-name"),
        Some("kube-prometheus-stack")
    );
    assert_eq!(
        cm.annotation("meta.helm.sh/release-namespace"),
        Some("monitoring")
    );
    // The pre-install hook Job is created; nothing runs it here, and the status says so
    // instead of claiming it completed.
    assert!(b
        .get(&ObjectRef::new(
            "batch",
            "Job",
            "monitoring",
            "kube-prometheus-stack-hook"
        ))
        .await
        .unwrap()
        .is_some());
    let ready = &cond(&out.status, "Ready").message;
    assert!(
        ready.contains("pre-install hooks Job/kube-prometheus-stack-hook counted as done once written: memory with failing health runs no workloads"),
        "{ready}"
    );

    // The record, as Helm's Secrets driver stores it.
    let secret = b
        .get(&ObjectRef::new(
            "",
            "Secret",
            "monitoring",
            "sh.helm.release.v1.kube-prometheus-stack.v1",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret.0["type"], "helm.sh/release.v1");
    for (k, v) in [
        ("owner", "helm"),
        ("name", "kube-prometheus-stack"),
        ("status", "deployed"),
        ("version", "1"),
    ] {
        assert_eq!(secret.label(k), Some(v), "label {k}");
    }
    // data.release = base64(base64(gzip(JSON))): decode it by hand, with Helm's field names.
    let b64 = base64::engine::general_purpose::STANDARD;
    let inner = b64
        .decode(secret.0["data"]["release"].as_str().unwrap())
        .unwrap();
    let gz = b64.decode(inner).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .unwrap();
    let rel: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rel["name"], "kube-prometheus-stack");
    assert_eq!(rel["namespace"], "monitoring");
    assert_eq!(rel["version"], 1);
    assert_eq!(rel["info"]["status"], "deployed");
    assert_eq!(rel["info"]["description"], "Install complete");
    assert!(rel["info"]["first_deployed"].as_str().unwrap().len() > 10);
    assert!(rel["info"]["last_deployed"].as_str().unwrap().len() > 10);
    assert_eq!(rel["chart"]["metadata"]["name"], "kube-prometheus-stack");
    assert_eq!(rel["chart"]["metadata"]["version"], "58.0.0");
    assert_eq!(rel["chart"]["metadata"]["appVersion"], "v0.73.0");
    assert_eq!(
        rel["chart"]["values"]["prometheus"]["prometheusSpec"]["retention"],
        "10d"
    );
    assert!(rel["chart"]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "templates/configmap.yaml"));
    assert_eq!(
        rel["config"]["prometheus"]["prometheusSpec"]["retention"],
        "15d"
    );
    let manifest = rel["manifest"].as_str().unwrap();
    assert!(manifest.starts_with("---\n# Source: kube-prometheus-stack/templates/configmap.yaml\n"));
    assert!(!manifest.contains("helm.sh/hook"));

    // Status history and digests.
    let hst = HelmReleaseStatus::from_status(&out.status);
    assert_eq!(hst.history.len(), 1);
    assert_eq!(hst.history[0].chart_version, "58.0.0");
    assert_eq!(hst.history[0].status, "deployed");
    assert!(hst.history[0].config_digest.starts_with("sha256:"));
    assert_eq!(
        hst.last_attempted_config_digest,
        hst.history[0].config_digest
    );
    assert_eq!(out.status.last_attempted_revision, "58.0.0");

    // Templates see an install of revision 1, as under `helm install`.
    let data = configmap(&b, "kube-prometheus-stack-config")
        .await
        .unwrap()
        .0["data"]
        .clone();
    assert_eq!(
        (&data["revision"], &data["operation"]),
        (&"1".into(), &"install".into())
    );

    // Nothing changed: no new revision.
    let out = run(&rec, &b).await;
    assert_eq!(out.verdict, Verdict::Ready);
    assert_eq!(records(&b).await.len(), 1);

    // Upgrade to a new chart version in range.
    repo.publish("kube-prometheus-stack", "58.1.0", true, false);
    let out = run(&rec, &b).await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(cond(&out.status, "Released").reason, "UpgradeSucceeded");
    let recs = records(&b).await;
    let states: Vec<(&str, i64)> = recs.iter().map(|(s, r)| (s.as_str(), r.version)).collect();
    assert_eq!(states, [("superseded", 1), ("deployed", 2)]);
    assert_eq!(recs[1].1.info.description, "Upgrade complete");
    // ... and an upgrade to revision 2 renders with `.Release.IsUpgrade`.
    let data = configmap(&b, "kube-prometheus-stack-config")
        .await
        .unwrap()
        .0["data"]
        .clone();
    assert_eq!(
        (&data["revision"], &data["operation"]),
        (&"2".into(), &"upgrade".into())
    );
    assert_eq!(
        configmap(&b, "kube-prometheus-stack-extra")
            .await
            .unwrap()
            .0["data"]["from"],
        "58.1.0"
    );

    // An upgrade whose rollout fails: rolled back to revision 2, which is deployed again as 4.
    repo.publish("kube-prometheus-stack", "58.2.0", false, true);
    let out = run(&rec, &b).await;
    assert_eq!(
        out.verdict,
        Verdict::Failed { stalled: false },
        "{:?}",
        out.status
    );
    assert_eq!(cond(&out.status, "Released").reason, "UpgradeFailed");
    assert_eq!(cond(&out.status, "Remediated").reason, "RollbackSucceeded");
    assert_eq!(cond(&out.status, "Ready").reason, "UpgradeFailed");
    let recs = records(&b).await;
    let states: Vec<(&str, i64)> = recs.iter().map(|(s, r)| (s.as_str(), r.version)).collect();
    assert_eq!(
        states,
        [
            ("superseded", 1),
            ("superseded", 2),
            ("superseded", 3),
            ("deployed", 4)
        ]
    );
    assert!(recs[2]
        .1
        .info
        .description
        .starts_with("Upgrade \"kube-prometheus-stack\" failed"));
    assert_eq!(recs[3].1.info.description, "Rollback to 2");
    assert_eq!(recs[3].1.chart.metadata["version"], "58.1.0");
    let cm = configmap(&b, "kube-prometheus-stack-config").await.unwrap();
    assert_eq!(cm.0["data"]["chartVersion"], "58.1.0");
    assert!(configmap(&b, "kube-prometheus-stack-extra").await.is_some());
    assert!(b
        .get(&ObjectRef::new(
            "apps",
            "Deployment",
            "monitoring",
            "kube-prometheus-stack-operator"
        ))
        .await
        .unwrap()
        .is_none());
    let hst = HelmReleaseStatus::from_status(&out.status);
    assert_eq!(hst.upgrade_failures, 1);
    assert_eq!(hst.failures, 1);
    assert_eq!(hst.history[0].version, 4);
    assert_eq!(out.status.last_attempted_revision, "58.2.0");
    assert_eq!(out.status.last_applied_revision, "58.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_and_uninstall() {
    let repo = Repo::serve();
    repo.publish("kube-prometheus-stack", "58.0.0", false, false);
    let store = tempfile::tempdir().unwrap();
    let rec = reconciler(store.path());
    let hr = seed_release(
        r#"  valuesFrom:
  - kind: Secret
    name: prom-values
  - kind: ConfigMap
    name: dashboards
    valuesKey: list
    targetPath: dashboards
  - kind: Secret
    name: missing
    optional: true
"#,
    );
    let b = setup(&repo, hr).await;
    let secret_values = "grafana:\n  adminPassword: from-secret\nprometheus:\n  prometheusSpec:\n    retention: 30d\n";
    let s = obj(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: prom-values, namespace: monitoring}}\ndata: {{values.yaml: {}}}\n",
        base64::engine::general_purpose::STANDARD.encode(secret_values)
    ));
    b.apply(&s, &ApplyOptions::default()).await.unwrap();
    // The ConfigMap is missing at first: a clear failure naming it, nothing installed.
    let out = run(&rec, &b).await;
    assert!(matches!(out.verdict, Verdict::Failed { .. }));
    let ready = cond(&out.status, "Ready");
    assert!(
        ready.message.contains("ConfigMap 'monitoring/dashboards'"),
        "{}",
        ready.message
    );
    assert!(records(&b).await.is_empty());

    let cm = obj("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dashboards, namespace: monitoring}\ndata: {list: 'node,k8s'}\n");
    b.apply(&cm, &ApplyOptions::default()).await.unwrap();
    let out = run(&rec, &b).await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let cm = configmap(&b, "kube-prometheus-stack-config").await.unwrap();
    // Inline values win over valuesFrom; valuesFrom fills in the rest.
    assert_eq!(cm.0["data"]["password"], "substituted-pw");
    assert_eq!(cm.0["data"]["retention"], "15d");
    assert_eq!(cm.0["data"]["dashboards"], "node,k8s");
    // Secret content never lands in events.
    for e in &out.events {
        assert!(!e.message.contains("from-secret"), "{}", e.message);
    }

    // Deletion: objects and records go away.
    let o = b.get(&hr_ref()).await.unwrap().unwrap();
    let events = rec.finalize(&o, &b).await;
    assert_eq!(events[0].reason, "UninstallSucceeded", "{events:?}");
    assert!(configmap(&b, "kube-prometheus-stack-config")
        .await
        .is_none());
    assert!(records(&b).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_and_bad_chart_are_clear_failures() {
    let repo = Repo::serve();
    repo.publish("kube-prometheus-stack", "58.0.0", false, false);
    let store = tempfile::tempdir().unwrap();
    let rec = reconciler(store.path());
    let hr = seed_release("  valuesFrom:\n  - kind: ConfigMap\n    name: bad\n");
    let b = setup(&repo, hr).await;
    let cm = obj("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: monitoring}\ndata: {values.yaml: 'a: [1'}\n");
    b.apply(&cm, &ApplyOptions::default()).await.unwrap();
    let out = run(&rec, &b).await;
    assert!(matches!(out.verdict, Verdict::Failed { .. }));
    let msg = &cond(&out.status, "Ready").message;
    assert!(
        msg.contains("key 'values.yaml' in ConfigMap 'monitoring/bad'"),
        "{msg}"
    );

    // A version range nothing matches: the HelmChart stalls naming the range, and the
    // release waits for it (helm-controller's SourceNotReady), not a panic.
    let b2 = setup(&repo, seed_release("")).await;
    let mut o = b2.get(&hr_ref()).await.unwrap().unwrap();
    o.0["spec"]["chart"]["spec"]["version"] = Value::String(">=60.0.0".into());
    b2.apply(&o, &ApplyOptions::default()).await.unwrap();
    let out = run(&rec, &b2).await;
    assert_eq!(out.verdict, Verdict::Waiting, "{:?}", out.status);
    let ready = cond(&out.status, "Ready");
    assert_eq!(ready.reason, "SourceNotReady");
    assert!(
        ready
            .message
            .contains("HelmChart 'flux-system/monitoring-kube-prometheus-stack' is not ready")
            && ready.message.contains(">=60.0.0"),
        "{}",
        ready.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_tests_are_not_pretended_where_nothing_runs() {
    let repo = Repo::serve();
    repo.publish("kube-prometheus-stack", "58.0.0", false, false);
    let store = tempfile::tempdir().unwrap();
    let rec = reconciler(store.path());
    let b = setup(&repo, seed_release("  test:\n    enable: true\n")).await;
    let out = run(&rec, &b).await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let c = cond(&out.status, "TestSuccess");
    assert_eq!(c.status, trueup_core::status::ConditionStatus::Unknown);
    assert_eq!(c.reason, "TestNotRun");
    assert!(
        c.message
            .contains("were not run: memory with failing health runs no workloads"),
        "{}",
        c.message
    );
    assert!(cond(&out.status, "Ready").message.contains("were not run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_renderers_patch_the_release_and_a_change_upgrades() {
    let repo = Repo::serve();
    repo.publish("kube-prometheus-stack", "58.0.0", false, false);
    let store = tempfile::tempdir().unwrap();
    let rec = reconciler(store.path());
    let pr = r#"  postRenderers:
  - kustomize:
      patches:
      - target: {kind: ConfigMap, name: kube-prometheus-stack-config}
        patch: |
          - op: add
            path: /metadata/labels/team
            value: observability
      patchesStrategicMerge:
      - apiVersion: v1
        kind: ConfigMap
        metadata: {name: kube-prometheus-stack-config}
        data: {extra: from-post-renderer}
"#;
    let b = setup(&repo, seed_release(pr)).await;
    let out = run(&rec, &b).await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let cm = configmap(&b, "kube-prometheus-stack-config").await.unwrap();
    assert_eq!(cm.label("team"), Some("observability"));
    assert_eq!(cm.0["data"]["extra"], "from-post-renderer");
    assert_eq!(cm.0["data"]["retention"], "15d");
    // The stored manifest is the post-rendered one (what `helm get manifest` shows).
    let recs = records(&b).await;
    assert!(recs[0].1.manifest.contains("team: observability"));
    // Unchanged: nothing to do. A changed post-renderer alone upgrades the release.
    let out = run(&rec, &b).await;
    assert_eq!(records(&b).await.len(), 1, "{:?}", out.status);
    let mut hr = b.get(&hr_ref()).await.unwrap().unwrap();
    hr.0["spec"]["postRenderers"][0]["kustomize"]["patches"][0]["patch"] =
        Value::String("- op: add\n  path: /metadata/labels/team\n  value: platform\n".into());
    hr.0["metadata"]["generation"] = 2.into();
    b.apply(&hr, &ApplyOptions::default()).await.unwrap();
    let out = run(&rec, &b).await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(cond(&out.status, "Released").reason, "UpgradeSucceeded");
    let cm = configmap(&b, "kube-prometheus-stack-config").await.unwrap();
    assert_eq!(cm.label("team"), Some("platform"));

    // A patch that does not parse fails the release and names the post-renderer.
    let mut hr = b.get(&hr_ref()).await.unwrap().unwrap();
    hr.0["spec"]["postRenderers"][0]["kustomize"]["patches"][0]["patch"] =
        Value::String("- op: [unclosed\n".into());
    b.apply(&hr, &ApplyOptions::default()).await.unwrap();
    let out = run(&rec, &b).await;
    let msg = &cond(&out.status, "Ready").message;
    assert!(msg.contains("spec.postRenderers[0].kustomize"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_and_reset_requests() {
    use trueup_core::reconcile::helmrelease::{request_force, request_reset};
    let repo = Repo::serve();
    repo.publish("kube-prometheus-stack", "58.0.0", false, false);
    let store = tempfile::tempdir().unwrap();
    let rec = reconciler(store.path());
    let b = setup(&repo, seed_release("")).await;
    assert_eq!(run(&rec, &b).await.verdict, Verdict::Ready);
    assert_eq!(run(&rec, &b).await.verdict, Verdict::Ready);
    assert_eq!(records(&b).await.len(), 1, "nothing changed, nothing run");

    // forceAt equal to requestedAt: one upgrade although nothing changed.
    let annotate = |f: &dyn Fn(&mut Object)| {
        let b = &b;
        let mut hr = block_on(b.get(&hr_ref())).unwrap().unwrap();
        f(&mut hr);
        block_on(b.apply(&hr, &ApplyOptions::default())).unwrap();
    };
    annotate(&|o| request_force(o, "t1"));
    let out = run(&rec, &b).await;
    assert_eq!(cond(&out.status, "Released").reason, "UpgradeSucceeded");
    assert_eq!(records(&b).await.len(), 2);
    assert_eq!(
        HelmReleaseStatus::from_status(&out.status).last_handled_force_at,
        "t1"
    );
    // Handled once: the same token does nothing more; a forceAt that is not the requestedAt
    // token does nothing either (helm-controller's rule).
    run(&rec, &b).await;
    annotate(&|o| o.set_annotation("reconcile.fluxcd.io/forceAt", "t2"));
    run(&rec, &b).await;
    assert_eq!(records(&b).await.len(), 2);

    // Exhausted retries: a broken upgrade with no retries stalls and is not retried...
    let mut hr = b.get(&hr_ref()).await.unwrap().unwrap();
    hr.0["spec"]["upgrade"] = serde_json::json!({"remediation": {"retries": 0}});
    hr.0["spec"]["values"]["broken"] = true.into();
    hr.0["metadata"]["generation"] = 2.into();
    b.apply(&hr, &ApplyOptions::default()).await.unwrap();
    let out = run(&rec, &b).await;
    assert_eq!(
        out.verdict,
        Verdict::Failed { stalled: true },
        "{:?}",
        out.status
    );
    let n = records(&b).await.len();
    let out = run(&rec, &b).await;
    assert_eq!(cond(&out.status, "Ready").reason, "RetriesExceeded");
    assert!(cond(&out.status, "Ready").message.contains("resetAt"));
    assert_eq!(records(&b).await.len(), n);
    // ...until a reset: the counts start over and the upgrade is attempted again.
    annotate(&|o| request_reset(o, "r1"));
    let out = run(&rec, &b).await;
    assert_eq!(
        cond(&out.status, "Ready").reason,
        "UpgradeFailed",
        "{:?}",
        out.status
    );
    assert_eq!(records(&b).await.len(), n + 1);
    let st = HelmReleaseStatus::from_status(&out.status);
    assert_eq!(
        (st.last_handled_reset_at.as_str(), st.upgrade_failures),
        ("r1", 1)
    );
    // A forced run also goes through exhausted retries.
    annotate(&|o| request_force(o, "t3"));
    run(&rec, &b).await;
    assert_eq!(records(&b).await.len(), n + 2);
}

/// Runs a future to completion from synchronous test code inside the multi-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A backend whose deletes of ConfigMaps are accepted but never complete (as if a finalizer
/// held them), recording the options of every delete.
struct Held<'a> {
    inner: &'a FlakyHealth,
    deletes: Mutex<Vec<(ObjectRef, DeleteOptions)>>,
}

#[async_trait]
impl Backend for Held<'_> {
    async fn apply(
        &self,
        obj: &Object,
        opts: &ApplyOptions,
    ) -> Result<(ApplyAction, Object), BackendError> {
        self.inner.apply(obj, opts).await
    }
    async fn get(&self, r: &ObjectRef) -> Result<Option<Object>, BackendError> {
        self.inner.get(r).await
    }
    async fn list(&self, params: &ListParams) -> Result<Vec<Object>, BackendError> {
        self.inner.list(params).await
    }
    async fn delete(&self, r: &ObjectRef) -> Result<bool, BackendError> {
        self.delete_with(r, &DeleteOptions::default()).await
    }
    async fn delete_with(&self, r: &ObjectRef, opts: &DeleteOptions) -> Result<bool, BackendError> {
        self.deletes.lock().unwrap().push((r.clone(), opts.clone()));
        if r.kind == "ConfigMap" {
            return Ok(self.inner.get(r).await?.is_some());
        }
        self.inner.delete(r).await
    }
    async fn update_status(&self, r: &ObjectRef, status: &Value) -> Result<(), BackendError> {
        self.inner.update_status(r, status).await
    }
    async fn record_event(&self, event: &Event) -> Result<(), BackendError> {
        self.inner.record_event(event).await
    }
    async fn health(&self, r: &ObjectRef) -> Result<Health, BackendError> {
        self.inner.health(r).await
    }
    async fn watch(&self, kinds: &[(String, String)]) -> Result<WatchStream, BackendError> {
        self.inner.watch(kinds).await
    }
    fn describe(&self) -> String {
        "memory holding deleted ConfigMaps".into()
    }
}

/// The uninstall deletes the release's objects with `deletionPropagation` (records with the
/// default) and waits for them to go, up to `uninstall.timeout`: a timeout fails it once the
/// records are gone (as Helm's `--wait`); with `disableWait` it does not wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_propagates_and_waits_unless_disable_wait() {
    let repo = Repo::serve();
    repo.publish("kube-prometheus-stack", "58.0.0", false, false);
    for disable_wait in [false, true] {
        let store = tempfile::tempdir().unwrap();
        let rec = reconciler(store.path());
        let spec = format!(
            "  uninstall:\n    deletionPropagation: orphan\n    timeout: 300ms\n    disableWait: {disable_wait}\n"
        );
        let b = setup(&repo, seed_release(&spec)).await;
        let out = run(&rec, &b).await;
        assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
        let held = Held {
            inner: &b,
            deletes: Mutex::default(),
        };
        let o = b.get(&hr_ref()).await.unwrap().unwrap();
        let events = rec.finalize(&o, &held).await;
        let deletes = held.deletes.lock().unwrap().clone();
        let cm = ObjectRef::new(
            "",
            "ConfigMap",
            "monitoring",
            "kube-prometheus-stack-config",
        );
        let orphan = DeleteOptions::propagation(Propagation::Orphan);
        assert!(deletes.contains(&(cm.clone(), orphan)), "{deletes:?}");
        for (r, opts) in &deletes {
            // The release's objects with the release's propagation; its records, and the
            // HelmChart the HelmRelease created, with the default.
            let record = r.kind == "Secret" && r.name.starts_with("sh.helm.release");
            let expected = if record || r.kind == "HelmChart" {
                None
            } else {
                Some(Propagation::Orphan)
            };
            assert_eq!(opts.propagation, expected, "{r}");
        }
        assert!(records(&b).await.is_empty(), "records go either way");
        if disable_wait {
            assert_eq!(events[0].reason, "UninstallSucceeded", "{events:?}");
        } else {
            assert_eq!(events[0].reason, "UninstallFailed", "{events:?}");
            let msg = &events[0].message;
            assert!(
                msg.starts_with("uninstallation completed with 1 error(s): timed out"),
                "{msg}"
            );
            assert!(msg.contains("kube-prometheus-stack-config"), "{msg}");
        }
    }
}
