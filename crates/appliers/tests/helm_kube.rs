//! HelmRelease on a REAL kube-apiserver (v1.20.2), checked with the REAL helm CLI (v4): trueup's
//! release records read in `helm list/history/get/status`, `helm rollback` works on them and
//! trueup respects the rolled-back revision, and a release `helm install`ed is adopted by a
//! HelmRelease of the same name.
//!
//! The server is started like crates/kube-backend/tests/kube.rs does (scripts/kube-apiserver,
//! no controller-manager, stopped when this test binary exits), or `TRUEUP_KUBECONFIG` is used.
//! The deletion-propagation test starts a second server with kube-controller-manager (garbage
//! collector, Deployment and ReplicaSet controllers); with `TRUEUP_KUBECONFIG` that cluster
//! must run a controller-manager.
//! Helm v4.3.1 against kube-apiserver v1.20.2: install, upgrade, rollback (also with
//! `--wait`, the kstatus watcher), uninstall, list, history, get and status need no API that
//! v1.20 lacks. What did need care: Helm 4 records carry `apply_method` (`ssa` here, so that
//! helm applies with its `helm` field manager as trueup does), label records `modifiedAt`
//! (not Helm 3's `createdAt`), write Go `null` for empty lists, and store NOTES.txt in
//! `info.notes`. Pods need the namespace's `default` ServiceAccount, which only the
//! controller-manager (not started here) creates: the tests create it, and test Pods do not
//! mount its token.
//!
//! Without the server binaries, kubectl or helm (`TRUEUP_HELM`, else
//! ~/.cache/trueup-tools/helm/helm) the tests print SKIP and pass, unless
//! `TRUEUP_REQUIRE_ORACLES=1`, where they fail.

use serde_json::{json, Value};
use sha2::Digest;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use trueup_appliers::helmrelease::HelmReleaseApplier;
use trueup_core::object::{Object, ObjectRef};
use trueup_core::reconcile::helmrelease::HelmReleaseStatus;
use trueup_core::reconcile::{
    HelmChartReconciler, HelmReleaseReconciler, Outcome, Reconciler, Verdict,
};
use trueup_core::storage::ArtifactStore;
use trueup_core::traits::{ApplyOptions, Backend, Health, ListParams};
use trueup_kube::KubeBackend;
use trueup_sources::helm::HelmChartSource;
use trueup_sources::HelmSource;

// ---------- the test server and the tools ----------

struct Tools {
    kubeconfig: PathBuf,
    helm: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn skip_or_fail(why: &str) -> Option<Tools> {
    if std::env::var("TRUEUP_REQUIRE_ORACLES").is_ok_and(|v| v == "1") {
        panic!("TRUEUP_REQUIRE_ORACLES=1 but {why}");
    }
    eprintln!("SKIP: {why}");
    None
}

// The stop guard is never waited on: it must outlive this process to stop the server after it.
#[allow(clippy::zombie_processes)]
fn start(controller_manager: bool) -> Option<Tools> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let helm = std::env::var_os("TRUEUP_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/trueup-tools/helm/helm"));
    if !helm.exists() {
        return skip_or_fail(&format!("no helm binary at {}", helm.display()));
    }
    if let Some(kc) = std::env::var_os("TRUEUP_KUBECONFIG") {
        return Some(Tools {
            kubeconfig: kc.into(),
            helm,
        });
    }
    let cache = std::env::var_os("TRUEUP_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/trueup-tools/kube-v1.20"));
    if !cache.join("bin/kube-apiserver").exists() {
        return skip_or_fail("no kube-apiserver (run scripts/kube-apiserver/setup.sh)");
    }
    if Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_err()
    {
        return skip_or_fail("kubectl is not installed");
    }
    let scripts = repo_root().join("scripts/kube-apiserver");
    let out = Command::new(scripts.join("start.sh"))
        .env(
            "TRUEUP_KUBE_CONTROLLER_MANAGER",
            if controller_manager { "1" } else { "0" },
        )
        .stderr(Stdio::inherit())
        .output()
        .expect("running start.sh");
    assert!(out.status.success(), "start.sh failed: {:?}", out.status);
    let run = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    let guard = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; exec '{stop}' '{run}' --clean",
        pid = std::process::id(),
        stop = scripts.join("stop.sh").display(),
    );
    Command::new("setsid")
        .args(["bash", "-c", &guard])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the stop guard");
    Some(Tools {
        kubeconfig: PathBuf::from(run).join("kubeconfig"),
        helm,
    })
}

fn tools() -> Option<&'static Tools> {
    static TOOLS: OnceLock<Option<Tools>> = OnceLock::new();
    static START: Mutex<()> = Mutex::new(());
    let _g = START.lock().unwrap_or_else(|p| p.into_inner());
    TOOLS.get_or_init(|| start(false)).as_ref()
}

/// A second server, with kube-controller-manager (its garbage collector and its Deployment
/// and ReplicaSet controllers), started on first use by the tests that need dependents
/// created and collected; the other tests keep a server where nothing rewrites what they set.
fn gc_tools() -> Option<&'static Tools> {
    static TOOLS: OnceLock<Option<Tools>> = OnceLock::new();
    static START: Mutex<()> = Mutex::new(());
    let _g = START.lock().unwrap_or_else(|p| p.into_inner());
    TOOLS
        .get_or_init(|| {
            let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
            let cache = std::env::var_os("TRUEUP_KUBE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache/trueup-tools/kube-v1.20"));
            if !cache.join("bin/kube-controller-manager").exists() {
                return skip_or_fail(
                    "no kube-controller-manager (run scripts/kube-apiserver/setup.sh)",
                );
            }
            start(true)
        })
        .as_ref()
}

/// The backend, with the namespace `ns` and the HelmRepository and HelmChart CRDs (the
/// generated ones of config/crd) in place.
async fn cluster(ns: &str) -> Option<(KubeBackend, &'static Tools)> {
    cluster_on(ns, tools()?).await
}

async fn cluster_on(ns: &str, t: &'static Tools) -> Option<(KubeBackend, &'static Tools)> {
    let b = KubeBackend::from_kubeconfig(&t.kubeconfig)
        .await
        .expect("backend from kubeconfig");
    for n in [ns, "flux-system"] {
        b.apply(
            &obj(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}"
            )),
            &ApplyOptions::default(),
        )
        .await
        .expect("namespace");
    }
    for file in [
        "source.toolkit.fluxcd.io_helmrepositories.yaml",
        "source.toolkit.fluxcd.io_helmcharts.yaml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/crd")
            .join(file);
        let crd = obj(&std::fs::read_to_string(&path).expect("generated CRD"));
        b.apply(&crd, &ApplyOptions::default()).await.expect("CRD");
        for _ in 0..100 {
            if b.health(&crd.object_ref()).await.ok() == Some(Health::Current) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Some((b, t))
}

/// Runs the real helm CLI against the test server; returns stdout, panics with stderr.
fn helm(t: &Tools, args: &[&str]) -> String {
    let (ok, out, errs) = helm_try(t, args);
    assert!(ok, "helm {args:?} failed: {errs}");
    out
}

fn helm_try(t: &Tools, args: &[&str]) -> (bool, String, String) {
    let home = std::env::temp_dir().join(format!("trueup-helm-home-{}", std::process::id()));
    let out = Command::new(&t.helm)
        .arg("--kubeconfig")
        .arg(&t.kubeconfig)
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("running helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn helm_json(t: &Tools, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = helm(t, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("helm {args:?}: {e}: {out}"))
}

fn obj(yaml: &str) -> Object {
    Object::from_value(serde_yaml::from_str(yaml).expect("yaml")).expect("object")
}

// ---------- a chart repository on 127.0.0.1 ----------

const CHART: &[(&str, &str)] = &[
    (
        "Chart.yaml",
        "apiVersion: v2\nname: demo\nversion: VERSION\nappVersion: \"1.16.0\"\ndescription: A demo chart\n",
    ),
    ("values.yaml", "greeting: hello\ncolor: blue\n"),
    (
        "templates/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n  labels:\n    helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}\ndata:\n  greeting: {{ .Values.greeting | quote }}\n  color: {{ .Values.color | quote }}\n",
    ),
    (
        "templates/serviceaccount.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{ .Release.Name }}\n---\n# a second document in the same file\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-token\nstringData:\n  token: {{ .Values.color | quote }}\n",
    ),
    (
        "templates/NOTES.txt",
        "Release {{ .Release.Name }} says {{ .Values.greeting }}.\n",
    ),
];

/// Writes the demo chart at `version` as a directory (for the helm CLI) and a .tgz.
fn chart(dir: &Path, version: &str) -> (PathBuf, Vec<u8>) {
    chart_with(dir, version, &[])
}

/// The demo chart plus `extra` files.
fn chart_with(dir: &Path, version: &str, extra: &[(&str, &str)]) -> (PathBuf, Vec<u8>) {
    let root = dir.join(format!("demo-{version}")).join("demo");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in CHART.iter().chain(extra) {
        let body = body.replace("VERSION", version);
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &body).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("demo/{name}"), body.as_bytes())
            .unwrap();
    }
    (root, tar.into_inner().unwrap().finish().unwrap())
}

type Files = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct Repo {
    url: String,
    files: Files,
    index: Mutex<String>,
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
            index: Mutex::new("apiVersion: v1\nentries:\n  demo:\n".into()),
        }
    }

    fn publish(&self, version: &str, tgz: Vec<u8>) {
        let d = hex::encode(sha2::Sha256::digest(&tgz));
        let mut idx = self.index.lock().unwrap();
        idx.push_str(&format!("  - apiVersion: v2\n    name: demo\n    version: {version}\n    digest: {d}\n    urls:\n    - charts/demo-{version}.tgz\n"));
        let mut files = self.files.lock().unwrap();
        files.retain(|(p, _)| p != "/index.yaml");
        files.push((format!("/charts/demo-{version}.tgz"), tgz));
        files.push(("/index.yaml".into(), idx.clone().into_bytes()));
    }
}

// ---------- HelmRelease objects and reconciles ----------

/// The HelmRelease reconciler and the HelmChart reconciler that fetches the chart its
/// `spec.chart` describes (the runtime runs both; these tests call them in turn).
struct Rec {
    chart: HelmChartReconciler<HelmSource>,
    release: HelmReleaseReconciler<HelmReleaseApplier>,
}

impl Rec {
    /// One reconcile of `hr`, as the runtime would run it: the release's HelmChart (created by
    /// the release on its first run) is reconciled first, so the newest published chart is the
    /// one the release sees.
    async fn reconcile(&self, hr: &Object, b: &KubeBackend) -> Outcome {
        let chart = ObjectRef::new(
            "source.toolkit.fluxcd.io",
            "HelmChart",
            "flux-system",
            &format!("{}-{}", hr.namespace().unwrap_or_default(), hr.name()),
        );
        let mut chart_ran = false;
        loop {
            if let Some(c) = b.get(&chart).await.unwrap() {
                let mut out = self.chart.reconcile(&c, b).await;
                out.status.observed_generation = c.generation();
                b.update_status(&chart, &out.status.to_value())
                    .await
                    .unwrap();
                chart_ran = true;
            }
            let out = self.release.reconcile(hr, b).await;
            if out.verdict != Verdict::Waiting || chart_ran {
                return out;
            }
        }
    }

    async fn finalize(&self, hr: &Object, b: &KubeBackend) -> Vec<trueup_core::event::Event> {
        self.release.finalize(hr, b).await
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
                poll: Duration::from_millis(50),
            },
            store,
        ),
    }
}

/// The HelmRepository of one test, named after its namespace (tests run in parallel).
async fn helm_repository(b: &KubeBackend, repo: &Repo, ns: &str) {
    let r = obj(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: {ns}, namespace: flux-system}}\nspec: {{interval: 1h, url: '{}'}}\n",
        repo.url
    ));
    for _ in 0..50 {
        match b.apply(&r, &ApplyOptions::default()).await {
            Ok(_) => return,
            // Discovery of a new kind can lag its CRD's Established condition.
            Err(e) if e.to_string().contains("does not serve") => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("HelmRepository kind never served");
}

/// A HelmRelease as a user writes it, at `generation`, with `status` carried over.
fn helm_release(
    ns: &str,
    release: &str,
    generation: i64,
    spec_extra: &str,
    prev: Option<&Outcome>,
) -> Object {
    let mut o = obj(&format!(
        r#"
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: {release}
  namespace: {ns}
  generation: {generation}
spec:
  interval: 1h
  timeout: 30s
  releaseName: {release}
  chart:
    spec:
      chart: demo
      version: "0.1.x"
      sourceRef: {{kind: HelmRepository, name: {ns}, namespace: flux-system}}
{spec_extra}"#
    ));
    if let Some(p) = prev {
        o.0.insert("status".into(), p.status.to_value());
    }
    o
}

async fn config(b: &KubeBackend, ns: &str, name: &str) -> Value {
    b.get(&ObjectRef::new(
        "",
        "ConfigMap",
        ns,
        &format!("{name}-config"),
    ))
    .await
    .unwrap()
    .map(|o| o.0["data"].clone())
    .unwrap_or(Value::Null)
}

fn revision_of(out: &Outcome) -> i64 {
    let h = HelmReleaseStatus::from_status(&out.status);
    h.history.first().map(|r| r.version).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_cli_reads_trueup_releases_and_rollback_is_respected() {
    let ns = "hk-cli";
    let Some((b, t)) = cluster(ns).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    let (_, tgz) = chart(tmp.path(), "0.1.0");
    repo.publish("0.1.0", tgz);
    helm_repository(&b, &repo, ns).await;
    let rec = reconciler(&tmp.path().join("store"));

    // trueup installs (v1) and upgrades (v2) with new values.
    let v1 = "  values:\n    greeting: hi\n";
    let out = rec
        .reconcile(&helm_release(ns, "web", 1, v1, None), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let v2 = "  values:\n    greeting: hey\n    color: red\n";
    let out = rec
        .reconcile(&helm_release(ns, "web", 2, v2, Some(&out)), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(revision_of(&out), 2);
    assert_eq!(config(&b, ns, "web").await["color"], "red");

    // The helm CLI reads what trueup wrote.
    let list = helm_json(t, &["list", "-n", ns]);
    let l = &list.as_array().expect("a list")[0];
    assert_eq!(l["name"], "web");
    assert_eq!(l["namespace"], ns);
    assert_eq!(l["revision"], "2");
    assert_eq!(l["status"], "deployed");
    assert_eq!(l["chart"], "demo-0.1.0");
    assert_eq!(l["app_version"], "1.16.0");
    assert!(l["updated"].as_str().unwrap().contains("UTC"), "{l}");

    let hist = helm_json(t, &["history", "web", "-n", ns]);
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0]["status"], "superseded");
    assert_eq!(hist[0]["description"], "Install complete");
    assert_eq!(hist[1]["status"], "deployed");
    assert_eq!(hist[1]["description"], "Upgrade complete");
    assert_eq!(hist[1]["chart"], "demo-0.1.0");

    let vals = helm_json(t, &["get", "values", "web", "-n", ns]);
    assert_eq!(vals, json!({"greeting": "hey", "color": "red"}));
    let all = helm_json(t, &["get", "values", "web", "-n", ns, "--all"]);
    assert_eq!(all, json!({"greeting": "hey", "color": "red"}));
    let v1_vals = helm_json(t, &["get", "values", "web", "-n", ns, "--revision", "1"]);
    assert_eq!(v1_vals, json!({"greeting": "hi"}));

    let manifest = helm(t, &["get", "manifest", "web", "-n", ns]);
    assert!(
        manifest.contains("# Source: demo/templates/configmap.yaml"),
        "{manifest}"
    );
    assert!(manifest.contains("color: \"red\""), "{manifest}");

    let status = helm_json(t, &["status", "web", "-n", ns]);
    assert_eq!(status["name"], "web");
    assert_eq!(status["version"], 2);
    assert_eq!(status["info"]["status"], "deployed");
    assert_eq!(status["info"]["notes"], "Release web says hey.\n");
    assert_eq!(
        status["info"]["resources"]["v1/ConfigMap"][0]["metadata"]["name"],
        "web-config"
    );
    let notes = helm(t, &["get", "notes", "web", "-n", ns]);
    assert!(notes.contains("Release web says hey."), "{notes}");

    // helm rollback on trueup's records: revision 3 = revision 1's values.
    helm(t, &["rollback", "web", "1", "-n", ns, "--wait=false"]);
    assert_eq!(config(&b, ns, "web").await["greeting"], "hi");
    // hook-failed: the failed Job is deleted too.
    assert!(b
        .get(&ObjectRef::new("batch", "Job", ns, "web-migrate"))
        .await
        .unwrap()
        .is_none());
    let hist = helm_json(t, &["history", "web", "-n", ns]);
    assert_eq!(hist.as_array().unwrap().len(), 3);
    assert_eq!(hist[2]["status"], "deployed");
    assert_eq!(hist[2]["description"], "Rollback to 1");

    // trueup takes revision 3 as current: a HelmRelease that asks for what revision 3 is does
    // nothing (no fight with the operator's rollback)...
    let out = rec
        .reconcile(&helm_release(ns, "web", 3, v1, Some(&out)), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(revision_of(&out), 3, "{:?}", out.status);
    assert!(out.events.iter().all(|e| e.reason != "UpgradeSucceeded"));
    assert_eq!(
        helm_json(t, &["history", "web", "-n", ns])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // ...and one that asks for something else upgrades from revision 3 to 4.
    let out = rec
        .reconcile(&helm_release(ns, "web", 4, v2, Some(&out)), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(revision_of(&out), 4);
    assert_eq!(config(&b, ns, "web").await["color"], "red");
    let hist = helm_json(t, &["history", "web", "-n", ns]);
    let st: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(st, ["superseded", "superseded", "superseded", "deployed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_release_adopts_a_helm_installed_release() {
    let ns = "hk-adopt";
    let Some((b, t)) = cluster(ns).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    let (dir, tgz) = chart(tmp.path(), "0.1.0");
    repo.publish("0.1.0", tgz);
    helm_repository(&b, &repo, ns).await;

    helm(
        t,
        &[
            "install",
            "api",
            dir.to_str().unwrap(),
            "-n",
            ns,
            "--set",
            "greeting=same",
        ],
    );
    assert_eq!(config(&b, ns, "api").await["greeting"], "same");

    // A HelmRelease of that name adopts it with an upgrade, even with the same values.
    let rec = reconciler(&tmp.path().join("store"));
    let out = rec
        .reconcile(
            &helm_release(ns, "api", 1, "  values:\n    greeting: same\n", None),
            &b,
        )
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(revision_of(&out), 2, "{:?}", out.status);
    // Same chart, same values: trueup's manifest is byte for byte the one helm wrote.
    let by_helm = helm(t, &["get", "manifest", "api", "-n", ns, "--revision", "1"]);
    let by_trueup = helm(t, &["get", "manifest", "api", "-n", ns, "--revision", "2"]);
    assert_eq!(by_trueup, by_helm);
    assert_eq!(
        helm(t, &["get", "notes", "api", "-n", ns, "--revision", "2"]),
        helm(t, &["get", "notes", "api", "-n", ns, "--revision", "1"])
    );

    let out = rec
        .reconcile(
            &helm_release(
                ns,
                "api",
                2,
                "  values:\n    greeting: from-trueup\n",
                Some(&out),
            ),
            &b,
        )
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(revision_of(&out), 3, "{:?}", out.status);
    assert_eq!(config(&b, ns, "api").await["greeting"], "from-trueup");
    let hist = helm_json(t, &["history", "api", "-n", ns]);
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 3, "{hist:?}");
    assert_eq!(hist[0]["status"], "superseded");
    assert_eq!(hist[0]["description"], "Install complete");
    assert_eq!(hist[2]["status"], "deployed");
    assert_eq!(hist[2]["description"], "Upgrade complete");
    assert_eq!(
        helm_json(t, &["get", "values", "api", "-n", ns]),
        json!({"greeting": "from-trueup"})
    );
    // helm upgrade after trueup: revision 4, and helm uninstall removes what trueup applied.
    helm(
        t,
        &[
            "upgrade",
            "api",
            dir.to_str().unwrap(),
            "-n",
            ns,
            "--reuse-values",
            "--set",
            "color=green",
        ],
    );
    assert_eq!(config(&b, ns, "api").await["color"], "green");
    assert_eq!(config(&b, ns, "api").await["greeting"], "from-trueup");
    helm(t, &["uninstall", "api", "-n", ns]);
    assert_eq!(config(&b, ns, "api").await, Value::Null);
}

const HOOKS: &[(&str, &str)] = &[(
    "templates/hooks.yaml",
    r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-pre-first
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
data: {n: "1"}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded,hook-failed
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox
        command: ["true"]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-post
  annotations:
    helm.sh/hook: post-install,post-upgrade
data: {greeting: {{ .Values.greeting | quote }}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-rolled-back
  annotations:
    helm.sh/hook: post-rollback
data: {greeting: {{ .Values.greeting | quote }}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-goodbye
  annotations:
    helm.sh/hook: pre-delete
"#,
)];

/// Plays the Job controller for one hook Job: once the Job exists, checks what exists at that
/// moment, then marks the Job `Complete` (or `Failed`) through the status subresource.
async fn finish_job(t: &Tools, ns: String, name: String, complete: bool) -> Vec<String> {
    let b = KubeBackend::from_kubeconfig(&t.kubeconfig).await.unwrap();
    let job = ObjectRef::new("batch", "Job", &ns, &name);
    for _ in 0..1200 {
        if let Ok(Some(j)) = b.get(&job).await {
            if j.0
                .get("status")
                .and_then(|s| s.get("conditions"))
                .is_none()
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the release had created before its hook Job finished.
    let mut seen = Vec::new();
    for n in ["pre-first", "config", "post"] {
        let r = ObjectRef::new("", "ConfigMap", &ns, &format!("web-{n}"));
        if b.get(&r).await.unwrap().is_some() {
            seen.push(n.to_string());
        }
    }
    let cond = if complete { "Complete" } else { "Failed" };
    b.update_status(
        &job,
        &json!({"conditions": [{"type": cond, "status": "True", "reason": if complete { "Done" } else { "BackoffLimitExceeded" },
            "message": if complete { "done" } else { "Job has reached the specified backoff limit" },
            "lastProbeTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"}],
            "succeeded": if complete { 1 } else { 0 }, "failed": if complete { 0 } else { 1 },
            "startTime": "2024-01-01T00:00:00Z"}),
    )
    .await
    .unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_helms_order_and_jobs_are_waited_for() {
    let ns = "hk-hooks";
    let Some((b, t)) = cluster(ns).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    let (_, tgz) = chart_with(tmp.path(), "0.1.0", HOOKS);
    repo.publish("0.1.0", tgz);
    helm_repository(&b, &repo, ns).await;
    let rec = reconciler(&tmp.path().join("store"));

    // Install: the weight -5 ConfigMap, then the Job, which holds the release until it is
    // complete; then the chart's objects, then the post-install hook.
    let job = tokio::spawn(finish_job(t, ns.into(), "web-migrate".into(), true));
    let out = rec
        .reconcile(
            &helm_release(ns, "web", 1, "  values: {greeting: hi}\n", None),
            &b,
        )
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert_eq!(
        job.await.unwrap(),
        ["pre-first"],
        "created before the Job completed"
    );
    assert!(config(&b, ns, "web").await.is_object());
    let post = b
        .get(&ObjectRef::new("", "ConfigMap", ns, "web-post"))
        .await
        .unwrap()
        .expect("post-install hook");
    assert_eq!(post.0["data"]["greeting"], "hi");
    // hook-succeeded: the Job is gone once every pre-install hook succeeded.
    assert!(b
        .get(&ObjectRef::new("batch", "Job", ns, "web-migrate"))
        .await
        .unwrap()
        .is_none());
    let msg = &out.status.condition("Ready").unwrap().message;
    assert!(!msg.contains("counted as done"), "{msg}");

    // Helm reads the recorded hooks.
    let status = helm_json(t, &["status", "web", "-n", ns]);
    let hooks = status["hooks"].as_array().expect("hooks in the record");
    let by_name = |n: &str| hooks.iter().find(|h| h["name"] == n).unwrap().clone();
    assert_eq!(by_name("web-migrate")["last_run"]["phase"], "Succeeded");
    assert_eq!(
        by_name("web-migrate")["events"],
        json!(["pre-install", "pre-upgrade"])
    );
    assert_eq!(
        by_name("web-migrate")["delete_policies"],
        json!(["before-hook-creation", "hook-succeeded", "hook-failed"])
    );
    assert_eq!(by_name("web-pre-first")["weight"], -5);
    assert_eq!(by_name("web-post")["last_run"]["phase"], "Succeeded");
    assert_eq!(by_name("web-goodbye")["last_run"]["phase"], "");
    let hooks_text = helm(t, &["get", "hooks", "web", "-n", ns]);
    assert!(hooks_text.contains("name: web-migrate"), "{hooks_text}");

    // An upgrade whose pre-upgrade Job fails: the upgrade fails naming the hook, the chart's
    // objects are not touched, the record says why; the remediation rolls back to
    // revision 1 and runs its post-rollback hook.
    let job = tokio::spawn(finish_job(t, ns.into(), "web-migrate".into(), false));
    let spec2 = "  values: {greeting: hey}\n  upgrade: {remediation: {retries: 1}}\n";
    let out = rec
        .reconcile(&helm_release(ns, "web", 2, spec2, Some(&out)), &b)
        .await;
    job.await.unwrap();
    assert!(
        matches!(out.verdict, Verdict::Failed { .. }),
        "{:?}",
        out.status
    );
    let msg = &out.status.condition("Ready").unwrap().message;
    assert!(
        msg.contains("pre-upgrade hook failed") && msg.contains("Job/hk-hooks/web-migrate"),
        "{msg}"
    );
    assert_eq!(config(&b, ns, "web").await["greeting"], "hi");
    // hook-failed: the failed Job is deleted too.
    assert!(b
        .get(&ObjectRef::new("batch", "Job", ns, "web-migrate"))
        .await
        .unwrap()
        .is_none());
    let hist = helm_json(t, &["history", "web", "-n", ns]);
    // Helm's rollback supersedes the failed revision; its description keeps the failure.
    assert_eq!(hist[1]["status"], "superseded");
    assert!(
        hist[1]["description"]
            .as_str()
            .unwrap()
            .contains("pre-upgrade hook failed"),
        "{hist}"
    );
    assert_eq!(hist[2]["description"], "Rollback to 1");
    assert_eq!(
        out.status.condition("Remediated").unwrap().reason,
        "RollbackSucceeded"
    );
    let rolled = b
        .get(&ObjectRef::new("", "ConfigMap", ns, "web-rolled-back"))
        .await
        .unwrap()
        .expect("post-rollback hook of revision 1");
    assert_eq!(rolled.0["data"]["greeting"], "hi");

    // Uninstall runs the pre-delete hook (hooks stay, as Helm leaves them).
    let fin = rec
        .finalize(&helm_release(ns, "web", 3, "", Some(&out)), &b)
        .await;
    assert_eq!(fin[0].reason, "UninstallSucceeded", "{fin:?}");
    assert!(b
        .get(&ObjectRef::new("", "ConfigMap", ns, "web-goodbye"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(config(&b, ns, "web").await, Value::Null);
}

const TESTS: &[(&str, &str)] = &[(
    "templates/tests.yaml",
    r#"apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test-connection
  annotations:
    helm.sh/hook: test
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: wget
    image: busybox
    command: ['wget', '{{ .Release.Name }}:80']
---
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test-slow
  annotations:
    helm.sh/hook: test
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: slow
    image: busybox
"#,
)];

/// Plays the kubelet for one test Pod: once a new one exists, sets its phase.
async fn finish_pod(t: &Tools, ns: String, name: String, phase: &'static str) {
    let b = KubeBackend::from_kubeconfig(&t.kubeconfig).await.unwrap();
    let pod = ObjectRef::new("", "Pod", &ns, &name);
    // Bounded, so that a Pod that never comes fails the test's assertions instead of hanging.
    for _ in 0..1200 {
        if let Ok(Some(p)) = b.get(&pod).await {
            // A new Pod is Pending (nothing schedules it here); an old one has its phase.
            if p.0.get("status").and_then(|s| s.get("phase")) == Some(&json!("Pending")) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.update_status(&pod, &json!({"phase": phase}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_tests_run_after_install_with_filters_and_failures() {
    let ns = "hk-tests";
    let Some((b, t)) = cluster(ns).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    let (_, tgz) = chart_with(tmp.path(), "0.1.0", TESTS);
    repo.publish("0.1.0", tgz);
    helm_repository(&b, &repo, ns).await;
    let rec = reconciler(&tmp.path().join("store"));
    let pod = |n: &str| ObjectRef::new("", "Pod", ns, n);
    // Pods need the namespace's default ServiceAccount, which the controller-manager (not
    // running here) would create.
    b.apply(
        &obj(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {ns}}}"
        )),
        &ApplyOptions::default(),
    )
    .await
    .unwrap();

    // Install, then the test Pod the filters keep; it succeeds.
    let spec =
        "  test:\n    enable: true\n    filters:\n    - {name: web-test-slow, exclude: true}\n";
    let job = tokio::spawn(finish_pod(
        t,
        ns.into(),
        "web-test-connection".into(),
        "Succeeded",
    ));
    let out = rec
        .reconcile(&helm_release(ns, "web", 1, spec, None), &b)
        .await;
    job.await.unwrap();
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let c = out.status.condition("TestSuccess").expect("TestSuccess");
    assert_eq!(c.reason, "TestSucceeded");
    assert!(
        c.message.contains("1 test hook(s) completed successfully"),
        "{}",
        c.message
    );
    assert!(
        b.get(&pod("web-test-slow")).await.unwrap().is_none(),
        "excluded by the filter"
    );
    let snap = &HelmReleaseStatus::from_status(&out.status).history[0];
    let th = snap.test_hooks.as_ref().expect("testHooks in the snapshot");
    assert_eq!(th["web-test-connection"].phase, "Succeeded");
    assert!(!th.contains_key("web-test-slow"));
    assert!(out.events.iter().any(|e| e.reason == "TestSucceeded"));
    // Helm sees the test run in the release.
    let status = helm_json(t, &["status", "web", "-n", ns]);
    let h = status["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "web-test-connection")
        .unwrap()
        .clone();
    assert_eq!(h["last_run"]["phase"], "Succeeded");

    // An upgrade whose test fails, failures ignored: released, TestSuccess False, Ready.
    let spec2 = "  values: {greeting: v2}\n  test:\n    enable: true\n    ignoreFailures: true\n    filters:\n    - {name: web-test-connection}\n";
    let job = tokio::spawn(finish_pod(
        t,
        ns.into(),
        "web-test-connection".into(),
        "Failed",
    ));
    let out = rec
        .reconcile(&helm_release(ns, "web", 2, spec2, Some(&out)), &b)
        .await;
    job.await.unwrap();
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let c = out.status.condition("TestSuccess").unwrap();
    assert_eq!(c.reason, "TestFailed");
    assert!(
        c.message
            .contains("Pod/hk-tests/web-test-connection failed"),
        "{}",
        c.message
    );
    assert_eq!(revision_of(&out), 2);

    // Not ignored: the release counts as failed and is rolled back to revision 2.
    let spec3 = "  values: {greeting: v3}\n  upgrade:\n    remediation: {retries: 1}\n  test:\n    enable: true\n    filters:\n    - {name: web-test-connection}\n";
    let job = tokio::spawn(finish_pod(
        t,
        ns.into(),
        "web-test-connection".into(),
        "Failed",
    ));
    let out = rec
        .reconcile(&helm_release(ns, "web", 3, spec3, Some(&out)), &b)
        .await;
    job.await.unwrap();
    assert!(
        matches!(out.verdict, Verdict::Failed { .. }),
        "{:?}",
        out.status
    );
    let ready = out.status.condition("Ready").unwrap();
    assert_eq!(ready.reason, "TestFailed", "{ready:?}");
    assert_eq!(
        out.status.condition("Released").unwrap().status,
        trueup_core::status::ConditionStatus::True
    );
    assert_eq!(
        out.status.condition("Remediated").unwrap().reason,
        "RollbackSucceeded"
    );
    assert_eq!(config(&b, ns, "web").await["greeting"], "v2");
}

fn crd_chart(version: &str) -> Vec<(String, String)> {
    let short = if version == "0.1.0" {
        ""
    } else {
        "\n    shortNames: [wdg]"
    };
    vec![
        (
            "crds/widgets.yaml".into(),
            format!("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names:\n    kind: Widget\n    plural: widgets\n    singular: widget{short}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"),
        ),
        (
            "templates/widget.yaml".into(),
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {{ .Release.Name }}-widget\nspec:\n  size: {{ .Chart.Version | quote }}\n".into(),
        ),
        (
            "templates/job.yaml".into(),
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-setup\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: setup\n        image: \"example/setup:{{ .Chart.Version }}\"\n".into(),
        ),
    ]
}

fn publish_crd_chart(tmp: &Path, repo: &Repo, version: &str) {
    let files = crd_chart(version);
    let extra: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (_, tgz) = chart_with(tmp, version, &extra);
    repo.publish(version, tgz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_policies_force_and_disable_wait() {
    let ns = "hk-crds";
    let Some((b, _t)) = cluster(ns).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    publish_crd_chart(tmp.path(), &repo, "0.1.0");
    helm_repository(&b, &repo, ns).await;
    let rec = reconciler(&tmp.path().join("store"));
    let crd = ObjectRef::new(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "",
        "widgets.example.com",
    );
    let job = ObjectRef::new("batch", "Job", ns, "web-setup");
    let short_names = |o: Object| o.0["spec"]["names"].get("shortNames").cloned();

    // Install (crds: Create by default): the CRD goes in first, so the chart's Widget applies.
    // Nothing runs the Job here; with disableWait the release does not wait for it.
    let spec = "  install: {disableWait: true}\n  upgrade: {disableWait: true}\n";
    let out = rec
        .reconcile(&helm_release(ns, "web", 1, spec, None), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let w = b
        .get(&ObjectRef::new("example.com", "Widget", ns, "web-widget"))
        .await
        .unwrap()
        .expect("the chart's custom resource");
    assert_eq!(w.0["spec"]["size"], "0.1.0");
    assert_eq!(short_names(b.get(&crd).await.unwrap().unwrap()), None);
    let uid1 = b.get(&job).await.unwrap().unwrap().0["metadata"]["uid"].clone();

    // Upgrade (crds: Skip by default): the CRD stays as it was; the Job's template is
    // immutable, so the upgrade fails and says why.
    publish_crd_chart(tmp.path(), &repo, "0.1.1");
    let out = rec
        .reconcile(&helm_release(ns, "web", 1, spec, Some(&out)), &b)
        .await;
    assert!(
        matches!(out.verdict, Verdict::Failed { .. }),
        "{:?}",
        out.status
    );
    let msg = &out.status.condition("Ready").unwrap().message;
    assert!(
        msg.contains("Job/hk-crds/web-setup") && msg.contains("immutable"),
        "{msg}"
    );
    assert_eq!(short_names(b.get(&crd).await.unwrap().unwrap()), None);

    // force recreates the Job; crds: CreateReplace updates the CRD.
    publish_crd_chart(tmp.path(), &repo, "0.1.2");
    let spec = "  install: {disableWait: true}\n  upgrade: {disableWait: true, force: true, crds: CreateReplace}\n";
    let out = rec
        .reconcile(&helm_release(ns, "web", 2, spec, Some(&out)), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let j = b.get(&job).await.unwrap().unwrap();
    assert_eq!(
        j.0["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/setup:0.1.2"
    );
    assert_ne!(j.0["metadata"]["uid"], uid1, "recreated");
    assert_eq!(
        short_names(b.get(&crd).await.unwrap().unwrap()),
        Some(json!(["wdg"]))
    );

    // A policy name that does not exist is a clear error naming the field.
    let bad = "  upgrade: {crds: Sometimes}\n  values: {greeting: x}\n";
    let out = rec
        .reconcile(&helm_release(ns, "web", 3, bad, Some(&out)), &b)
        .await;
    let msg = &out.status.condition("Ready").unwrap().message;
    assert!(
        msg.contains("spec.upgrade.crds: unsupported policy 'Sometimes'"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_history_and_storage_namespace() {
    let ns = "hk-hist";
    let Some((b, t)) = cluster(ns).await else {
        return;
    };
    for n in ["hk-store", "hk-target"] {
        b.apply(
            &obj(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}"
            )),
            &ApplyOptions::default(),
        )
        .await
        .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    let (_, tgz) = chart(tmp.path(), "0.1.0");
    repo.publish("0.1.0", tgz);
    helm_repository(&b, &repo, ns).await;
    let rec = reconciler(&tmp.path().join("store"));
    let mut prev: Option<Outcome> = None;
    for (i, g) in ["a", "b", "c", "d"].iter().enumerate() {
        let spec = format!("  targetNamespace: hk-target\n  storageNamespace: hk-store\n  maxHistory: 2\n  values: {{greeting: {g}}}\n");
        let out = rec
            .reconcile(
                &helm_release(ns, "web", i as i64 + 1, &spec, prev.as_ref()),
                &b,
            )
            .await;
        assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
        prev = Some(out);
    }
    assert_eq!(config(&b, "hk-target", "web").await["greeting"], "d");
    let hist = helm_json(t, &["history", "web", "-n", "hk-store"]);
    let revs: Vec<i64> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revs, [3, 4], "maxHistory: 2 keeps the newest two");
    let (ok, _, _) = helm_try(t, &["status", "web", "-n", "hk-target"]);
    assert!(!ok, "no records in the target namespace");
    let st = HelmReleaseStatus::from_status(&prev.unwrap().status);
    assert_eq!(st.storage_namespace, "hk-store");
}

fn kubectl(t: &Tools, args: &[&str]) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&t.kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_detection_warns_corrects_and_ignores() {
    let ns = "hk-drift";
    let Some((b, t)) = cluster(ns).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    let (_, tgz) = chart(tmp.path(), "0.1.0");
    repo.publish("0.1.0", tgz);
    helm_repository(&b, &repo, ns).await;
    let rec = reconciler(&tmp.path().join("store"));
    let warn = "  driftDetection: {mode: warn}\n";
    let out = rec
        .reconcile(&helm_release(ns, "web", 1, warn, None), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    // No drift: nothing to say.
    let out = rec
        .reconcile(&helm_release(ns, "web", 1, warn, Some(&out)), &b)
        .await;
    assert!(out.events.iter().all(|e| e.reason != "DriftDetected"));

    // Someone edits the ConfigMap: warn mode reports the field and leaves it.
    let patch = r#"{"data":{"greeting":"edited","color":"green"}}"#;
    kubectl(
        t,
        &[
            "-n",
            ns,
            "patch",
            "configmap",
            "web-config",
            "--type=merge",
            "-p",
            patch,
        ],
    );
    let out = rec
        .reconcile(&helm_release(ns, "web", 1, warn, Some(&out)), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let ev = out
        .events
        .iter()
        .find(|e| e.reason == "DriftDetected")
        .expect("a DriftDetected event");
    assert!(
        ev.message
            .contains("ConfigMap/hk-drift/web-config: /data/color, /data/greeting"),
        "{}",
        ev.message
    );
    assert!(out
        .status
        .condition("Ready")
        .unwrap()
        .message
        .contains("drift detected"));
    assert_eq!(config(&b, ns, "web").await["greeting"], "edited");

    // enabled, ignoring /data/color: greeting is corrected, color stays as edited; no upgrade.
    let enabled = "  driftDetection:\n    mode: enabled\n    ignore:\n    - paths: [/data/color]\n      target: {kind: ConfigMap}\n";
    let out = rec
        .reconcile(&helm_release(ns, "web", 2, enabled, Some(&out)), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let ev = out
        .events
        .iter()
        .find(|e| e.reason == "DriftCorrected")
        .expect("a DriftCorrected event");
    assert!(
        ev.message.contains("web-config: /data/greeting"),
        "{}",
        ev.message
    );
    assert!(!ev.message.contains("/data/color"), "{}", ev.message);
    let data = config(&b, ns, "web").await;
    assert_eq!(
        (data["greeting"].as_str(), data["color"].as_str()),
        (Some("hello"), Some("green"))
    );
    assert_eq!(
        revision_of(&out),
        1,
        "drift is corrected without a new revision"
    );

    // A deleted object comes back.
    kubectl(t, &["-n", ns, "delete", "configmap", "web-config"]);
    let out = rec
        .reconcile(&helm_release(ns, "web", 2, enabled, Some(&out)), &b)
        .await;
    let ev = out
        .events
        .iter()
        .find(|e| e.reason == "DriftCorrected")
        .unwrap();
    assert!(ev.message.contains("web-config: missing"), "{}", ev.message);
    assert_eq!(config(&b, ns, "web").await["greeting"], "hello");

    // A mode that does not exist is an invalid spec naming the field.
    let out = rec
        .reconcile(
            &helm_release(
                ns,
                "web",
                3,
                "  driftDetection: {mode: sometimes}\n",
                Some(&out),
            ),
            &b,
        )
        .await;
    assert_eq!(out.verdict, Verdict::Failed { stalled: true });
    assert!(out
        .status
        .condition("Ready")
        .unwrap()
        .message
        .contains("spec.driftDetection.mode"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_namespace_and_jobs_left_unwaited() {
    let ns = "hk-newns";
    let Some((b, _t)) = cluster(ns).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    // A Job nothing will run here (no kubelet): waiting for it could only time out.
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-migrate\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: migrate\n        image: example/migrate:1\n";
    let (_, tgz) = chart_with(tmp.path(), "0.1.0", &[("templates/job.yaml", job)]);
    repo.publish("0.1.0", tgz);
    helm_repository(&b, &repo, ns).await;
    let rec = reconciler(&tmp.path().join("store"));
    let namespace = |n: &str| ObjectRef::new("", "Namespace", "", n);

    // Into a namespace that does not exist: the install fails and names it.
    let spec = "  targetNamespace: hk-fresh-a\n  install: {disableWaitForJobs: true}\n";
    let out = rec
        .reconcile(&helm_release(ns, "a", 1, spec, None), &b)
        .await;
    assert!(
        matches!(out.verdict, Verdict::Failed { .. }),
        "{:?}",
        out.status
    );
    let msg = &out.status.condition("Ready").unwrap().message;
    assert!(msg.contains("hk-fresh-a"), "{msg}");
    assert!(b.get(&namespace("hk-fresh-a")).await.unwrap().is_none());

    // With createNamespace it is made first; with disableWaitForJobs the release waits for
    // everything but the Job, which stays incomplete.
    let spec = "  targetNamespace: hk-fresh-b\n  install: {createNamespace: true, disableWaitForJobs: true}\n";
    let out = rec
        .reconcile(&helm_release(ns, "b", 1, spec, None), &b)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    assert!(b.get(&namespace("hk-fresh-b")).await.unwrap().is_some());
    let j = b
        .get(&ObjectRef::new("batch", "Job", "hk-fresh-b", "b-migrate"))
        .await
        .unwrap()
        .expect("the chart's Job");
    assert!(j.0["status"].get("succeeded").is_none(), "{j:?}");
    let health = b.health(&j.object_ref()).await.unwrap();
    assert!(matches!(health, Health::InProgress(_)), "{health:?}");
}

/// The ReplicaSets of `<release>-web` in `ns` (the Deployment controller labels them with the
/// pod template's labels).
async fn replica_sets(b: &KubeBackend, ns: &str, release: &str) -> Vec<Object> {
    let mut lp = ListParams::kind("apps", "ReplicaSet");
    lp.namespace = Some(ns.into());
    lp.labels.insert("app".into(), format!("{release}-web"));
    b.list(&lp).await.unwrap()
}

/// Polls `what` every 100 ms until it holds, up to `secs`.
async fn eventually<F, Fut>(secs: u64, mut what: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if what().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_deletion_propagation_background_foreground_orphan() {
    let ns = "hk-cascade";
    let Some(t) = gc_tools() else {
        return;
    };
    let Some((b, _)) = cluster_on(ns, t).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::serve();
    // Pods stay Pending (no scheduler, no kubelet): the Deployment never becomes available, so
    // the install does not wait. Its ReplicaSet is what the garbage collector acts on.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {{ .Release.Name }}-web\n  template:\n    metadata:\n      labels:\n        app: {{ .Release.Name }}-web\n    spec:\n      automountServiceAccountToken: false\n      containers:\n      - name: web\n        image: example/web:1\n";
    let (_, tgz) = chart_with(
        tmp.path(),
        "0.1.0",
        &[("templates/deployment.yaml", deployment)],
    );
    repo.publish("0.1.0", tgz);
    helm_repository(&b, &repo, ns).await;
    let rec = reconciler(&tmp.path().join("store"));

    // An unknown value stalls the release before anything is installed, naming the field.
    let out = rec
        .reconcile(
            &helm_release(
                ns,
                "bad",
                1,
                "  uninstall: {deletionPropagation: sideways}\n",
                None,
            ),
            &b,
        )
        .await;
    assert_eq!(
        out.verdict,
        Verdict::Failed { stalled: true },
        "{:?}",
        out.status
    );
    let msg = &out.status.condition("Ready").unwrap().message;
    assert!(msg.contains("spec.uninstall.deletionPropagation"), "{msg}");
    assert!(msg.contains("sideways"), "{msg}");
    assert!(replica_sets(&b, ns, "bad").await.is_empty());

    for (release, policy) in [
        ("orphan", Some("orphan")),
        ("fg", Some("foreground")),
        ("bg", None),
    ] {
        let uninstall = policy
            .map(|p| format!("  uninstall: {{deletionPropagation: {p}}}\n"))
            .unwrap_or_default();
        let spec = format!("  install: {{disableWait: true}}\n{uninstall}");
        let out = rec
            .reconcile(&helm_release(ns, release, 1, &spec, None), &b)
            .await;
        assert_eq!(out.verdict, Verdict::Ready, "{release}: {:?}", out.status);
        let dref = ObjectRef::new("apps", "Deployment", ns, &format!("{release}-web"));
        let uid = b.get(&dref).await.unwrap().expect("the Deployment").0["metadata"]["uid"].clone();
        // The Deployment controller creates its ReplicaSet, owned by the Deployment.
        assert!(
            eventually(20, || async {
                replica_sets(&b, ns, release).await.iter().any(|rs| {
                    rs.0["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
                })
            })
            .await,
            "{release}: no ReplicaSet owned by the Deployment"
        );

        let events = rec
            .finalize(&helm_release(ns, release, 1, &spec, Some(&out)), &b)
            .await;
        assert!(
            events.iter().any(|e| e.reason == "UninstallSucceeded"),
            "{release}: {events:?}"
        );
        // Flux waits (no `disableWait`) until what the uninstall deleted is gone.
        assert!(b.get(&dref).await.unwrap().is_none(), "{release}");
        let left = replica_sets(&b, ns, release).await;
        match policy {
            // Orphaned: the ReplicaSet stays, its owner reference to the Deployment removed
            // before the Deployment went.
            Some("orphan") => {
                assert_eq!(left.len(), 1, "{left:?}");
                let owners = &left[0].0["metadata"]["ownerReferences"];
                assert!(owners.as_array().is_none_or(|o| o.is_empty()), "{owners}");
                // And it is not collected later either.
                tokio::time::sleep(Duration::from_secs(2)).await;
                assert_eq!(replica_sets(&b, ns, release).await.len(), 1);
            }
            // Foreground: the Deployment went only after its dependents, so the uninstall
            // (which waited for the Deployment) returned with the ReplicaSet gone already.
            Some("foreground") => assert!(left.is_empty(), "{left:?}"),
            // Background: the Deployment went at once; the garbage collector follows.
            _ => assert!(
                eventually(20, || async {
                    replica_sets(&b, ns, release).await.is_empty()
                })
                .await,
                "{release}: the ReplicaSet was not garbage-collected"
            ),
        }
    }
}
