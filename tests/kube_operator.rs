//! End to end on a REAL kube-apiserver (v1.20.2, RBAC, see `scripts/kube-apiserver/`): the
//! example `trueup` binary runs as an operator with `--kubeconfig`, the Flux objects are
//! applied with the real `kubectl apply`, the repository is served by `git daemon`, and what
//! the operator did is read back with `kubectl`.
//!
//! The server is the one of `crates/kube-backend/tests/support/apiserver.rs` (one per test
//! process; `TRUEUP_KUBECONFIG` to use another). Each test labels its Flux objects with its own
//! `e2e.trueup.dev/test` value and starts its operators with that `--watch-label-selector`, so
//! the tests share the server without reconciling each other's objects.

#[allow(dead_code)]
mod support;

#[path = "../crates/kube-backend/tests/support/apiserver.rs"]
mod apiserver;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{free_port, git, http_get, trueup_bin, GitDaemon};
use trueup::core::api::FluxKind;

fn kubectl_raw(kc: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kc).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs kubectl and panics with its stderr when it fails.
fn kubectl(kc: &Path, args: &[&str]) -> String {
    let out = kubectl_raw(kc, args, None);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `kubectl apply -f -` of a YAML text.
fn kubectl_apply(kc: &Path, yaml: &str) {
    let out = kubectl_raw(kc, &["apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The object as JSON, or None when it does not exist.
fn get(kc: &Path, kind: &str, ns: &str, name: &str) -> Option<Value> {
    let out = kubectl_raw(
        kc,
        &[
            "get",
            kind,
            name,
            "-n",
            ns,
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    );
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("NotFound"), "kubectl get {kind} {name}: {err}");
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("kubectl json"))
}

/// Polls until `f` returns Some, or panics naming what was awaited (with the operators' logs).
fn wait_for<T>(what: &str, secs: u64, logs: &[&Operator], mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|o| o.log()).collect();
            panic!(
                "timed out after {secs}s waiting for {what}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn ready(obj: &Value) -> Option<&Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

fn is_ready(kc: &Path, kind: &str, ns: &str, name: &str) -> bool {
    get(kc, kind, ns, name)
        .and_then(|o| ready(&o).map(|c| c["status"] == "True"))
        .unwrap_or(false)
}

const KS: &str = "kustomizations.kustomize.toolkit.fluxcd.io";
const GR: &str = "gitrepositories.source.toolkit.fluxcd.io";

fn plural(kind: &str) -> String {
    let k = kind.to_lowercase();
    match k.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{k}s"),
    }
}

/// Minimal CRDs for every Flux kind (any fields, a status subresource), installed once per
/// process with `kubectl apply` and waited on until established.
fn install_crds(kc: &Path) {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    let mut text = String::new();
    let mut names = Vec::new();
    for k in FluxKind::ALL {
        let plural = plural(k.kind());
        let versions: String = k
            .versions()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "  - name: {v}\n    served: true\n    storage: {}\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n    subresources:\n      status: {{}}\n",
                    i == 0
                )
            })
            .collect();
        text.push_str(&format!(
            "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{g}\nspec:\n  group: {g}\n  names:\n    kind: {kind}\n    listKind: {kind}List\n    plural: {plural}\n    singular: {singular}\n  scope: Namespaced\n  versions:\n{versions}",
            g = k.group(),
            kind = k.kind(),
            singular = k.kind().to_lowercase(),
        ));
        names.push(format!("crd/{plural}.{}", k.group()));
    }
    kubectl_apply(kc, &text);
    let mut args = vec!["wait", "--for", "condition=established", "--timeout=60s"];
    args.extend(names.iter().map(String::as_str));
    kubectl(kc, &args);
    *done = true;
}

/// A running `trueup operator`; its output goes to a file; SIGKILLed on drop.
struct Operator {
    child: Option<Child>,
    log: PathBuf,
}

impl Operator {
    fn start(kc: &Path, dir: &Path, name: &str, args: &[&str]) -> Operator {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let storage = dir.join(format!("{name}-artifacts"));
        let child = Command::new(trueup_bin())
            .arg("operator")
            .arg("--kubeconfig")
            .arg(kc)
            .arg("--storage-path")
            .arg(&storage)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the trueup example binary starts");
        Operator {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the process to exit (generous deadline) and returns its exit code.
    fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "operator did not exit within {secs}s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn printed(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(text)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Git repository served by `git daemon`: a work tree to commit from and a bare copy.
struct Repo {
    work: PathBuf,
    daemon: GitDaemon,
}

impl Repo {
    fn new(root: &Path, files: &[(&str, &str)]) -> Repo {
        let work = root.join("work");
        for (p, text) in files {
            let p = work.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        git(&work, &["init", "-q"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial"]);
        let base = root.join("repos");
        std::fs::create_dir_all(&base).unwrap();
        git(
            &base,
            &["clone", "-q", "--bare", work.to_str().unwrap(), "fleet.git"],
        );
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                base.join("fleet.git").to_str().unwrap(),
            ],
        );
        let daemon = GitDaemon::start(&base);
        Repo { work, daemon }
    }

    fn url(&self) -> String {
        self.daemon.url("fleet.git")
    }

    fn write(&self, path: &str, text: &str) {
        std::fs::write(self.work.join(path), text).unwrap();
    }

    fn remove(&self, path: &str) {
        std::fs::remove_file(self.work.join(path)).unwrap();
    }

    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn git_repository(ns: &str, name: &str, url: &str, labels: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  interval: 10m\n  url: {url}\n  ref:\n    branch: main\n"
    )
}

fn kustomization(
    ns: &str,
    name: &str,
    source: &str,
    path: &str,
    labels: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  interval: 10m\n  retryInterval: 2s\n  path: {path}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: {source}\n{extra}"
    )
}

fn config_map(ns: &str, name: &str, annotations: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{{annotations}}}\ndata:\n  v: \"{value}\"\n"
    )
}

fn data_v(kc: &Path, ns: &str, name: &str) -> Option<String> {
    get(kc, "configmap", ns, name).map(|o| o["data"]["v"].as_str().unwrap_or("").to_string())
}

fn requested_at(kc: &Path, kind: &str, ns: &str, name: &str, value: &str) {
    kubectl(
        kc,
        &[
            "annotate",
            "--overwrite",
            kind,
            name,
            "-n",
            ns,
            &format!("reconcile.fluxcd.io/requestedAt={value}"),
        ],
    );
}

fn handled(kc: &Path, kind: &str, ns: &str, name: &str) -> String {
    get(kc, kind, ns, name)
        .map(|o| {
            o["status"]["lastHandledReconcileAt"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

fn job(ns: &str, image: &str) -> String {
    format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  namespace: {ns}\n  annotations:\n    kustomize.toolkit.fluxcd.io/force: Enabled\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: {image}\n")
}

#[test]
fn operator_on_a_cluster_applies_prunes_recreates_and_corrects_drift() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    let (apps, flux) = ("t-op-apps", "t-op-flux");
    let repo = Repo::new(
        tmp.path(),
        &[
            ("apps/namespace.yaml", &namespace(apps)),
            (
                "apps/settings.yaml",
                &config_map(apps, "settings", "", "from-git"),
            ),
            (
                "apps/extra.yaml",
                &config_map(apps, "extra", "", "from-git"),
            ),
            (
                "apps/keep.yaml",
                &config_map(
                    apps,
                    "keep",
                    "kustomize.toolkit.fluxcd.io/prune: disabled",
                    "from-git",
                ),
            ),
            (
                "apps/once.yaml",
                &config_map(
                    apps,
                    "once",
                    "kustomize.toolkit.fluxcd.io/ssa: IfNotPresent",
                    "from-git",
                ),
            ),
            (
                "apps/ignored.yaml",
                &config_map(
                    apps,
                    "ignored",
                    "kustomize.toolkit.fluxcd.io/ssa: Ignore",
                    "from-git",
                ),
            ),
            ("apps/job.yaml", &job(apps, "busybox:1.36")),
            (
                "vars/greeting.yaml",
                &config_map(apps, "greeting", "", "${greeting}"),
            ),
        ],
    );
    let label = "e2e.trueup.dev/test: apply";
    // The live object an `ssa: Ignore` manifest must leave alone.
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}",
            namespace(apps),
            config_map(apps, "ignored", "", "live")
        ),
    );
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\n{}---\n{}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: vars\n  namespace: {flux}\n  labels:\n    reconcile.fluxcd.io/watch: Enabled\nstringData:\n  greeting: hello\n",
            namespace(flux),
            git_repository(flux, "fleet", &repo.url(), label),
            // Drift is corrected at the interval: a short one here.
            kustomization(flux, "apps", "fleet", "./apps", label, "  timeout: 2m\n")
                .replace("interval: 10m", "interval: 5s"),
            // Only the watched Secret can make this one run again soon.
            kustomization(
                flux,
                "vars",
                "fleet",
                "./vars",
                label,
                "  postBuild:\n    substituteFrom:\n    - kind: Secret\n      name: vars\n"
            )
            .replace("interval: 10m", "interval: 1h"),
        ),
    );
    let op = Operator::start(
        kc,
        tmp.path(),
        "apply",
        &["--watch-label-selector", "e2e.trueup.dev/test=apply"],
    );
    let logs = [&op];
    wait_for("Kustomization apps Ready", 180, &logs, || {
        is_ready(kc, KS, flux, "apps").then_some(())
    });
    wait_for("Kustomization vars Ready", 60, &logs, || {
        is_ready(kc, KS, flux, "vars").then_some(())
    });
    let head = git(&repo.work, &["rev-parse", "HEAD"]);
    let gr = get(kc, GR, flux, "fleet").unwrap();
    assert_eq!(
        gr["status"]["artifact"]["revision"],
        format!("main@sha1:{head}")
    );

    // Applied by server-side apply with trueup's field manager.
    let settings = get(kc, "configmap", apps, "settings").expect("settings applied");
    assert_eq!(settings["data"]["v"], "from-git");
    assert!(
        settings["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "trueup" && m["operation"] == "Apply"),
        "{settings}"
    );
    let ks = get(kc, KS, flux, "apps").unwrap();
    let ids: Vec<&str> = ks["status"]["inventory"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"t-op-apps_settings__ConfigMap"), "{ids:?}");
    assert!(ids.contains(&"t-op-apps_migrate_batch_Job"), "{ids:?}");
    assert_eq!(
        data_v(kc, apps, "ignored").as_deref(),
        Some("live"),
        "ssa: Ignore"
    );
    assert_eq!(
        data_v(kc, apps, "greeting").as_deref(),
        Some("hello"),
        "substituted"
    );
    let events = kubectl(kc, &["get", "events", "-n", flux, "-o", "json"]);
    assert!(
        events.contains("\"component\": \"trueup\""),
        "events recorded"
    );

    // Drift: edits made with kubectl are undone at the next interval, except on objects marked
    // `ssa: IfNotPresent`, which are only created.
    kubectl(
        kc,
        &[
            "patch",
            "configmap",
            "settings",
            "-n",
            apps,
            "--type=merge",
            "-p",
            r#"{"data":{"v":"edited"}}"#,
        ],
    );
    kubectl(
        kc,
        &[
            "patch",
            "configmap",
            "once",
            "-n",
            apps,
            "--type=merge",
            "-p",
            r#"{"data":{"v":"edited"}}"#,
        ],
    );
    assert_eq!(data_v(kc, apps, "settings").as_deref(), Some("edited"));
    wait_for("drift corrected", 60, &logs, || {
        (data_v(kc, apps, "settings").as_deref() == Some("from-git")).then_some(())
    });
    assert_eq!(
        data_v(kc, apps, "once").as_deref(),
        Some("edited"),
        "ssa: IfNotPresent"
    );

    // A change of the watched Secret reconciles the Kustomization that substitutes from it at
    // once (its interval is an hour).
    kubectl(
        kc,
        &[
            "patch",
            "secret",
            "vars",
            "-n",
            flux,
            "--type=merge",
            "-p",
            r#"{"stringData":{"greeting":"bonjour"}}"#,
        ],
    );
    wait_for("the watched Secret's new value applied", 60, &logs, || {
        (data_v(kc, apps, "greeting").as_deref() == Some("bonjour")).then_some(())
    });
    assert!(
        !op.log().contains("bonjour"),
        "secret values are not logged"
    );

    // A spec change (a new generation) is reconciled at once, interval or not.
    let generation = |o: &Value| o["metadata"]["generation"].as_i64().unwrap_or(0);
    let before = get(kc, KS, flux, "vars").unwrap();
    kubectl(
        kc,
        &[
            "patch",
            KS,
            "vars",
            "-n",
            flux,
            "--type=merge",
            "-p",
            r#"{"spec":{"postBuild":{"substitute":{"unused":"1"}}}}"#,
        ],
    );
    let after = get(kc, KS, flux, "vars").unwrap();
    assert_eq!(generation(&after), generation(&before) + 1);
    wait_for("the new generation reconciled", 60, &logs, || {
        let o = get(kc, KS, flux, "vars")?;
        (o["status"]["observedGeneration"] == generation(&after)).then_some(())
    });

    // A commit deletes two manifests and changes an immutable field of the forced Job; a
    // `requestedAt` annotation makes the source fetch it now.
    let first_job_uid = get(kc, "job", apps, "migrate").unwrap()["metadata"]["uid"].clone();
    repo.remove("apps/extra.yaml");
    repo.remove("apps/keep.yaml");
    repo.write("apps/job.yaml", &job(apps, "busybox:1.37"));
    let head = repo.commit("drop extra and keep, new job image");
    requested_at(kc, GR, flux, "fleet", "2026-01-01T00:00:00.1Z");
    wait_for("the new revision applied", 120, &logs, || {
        let ks = get(kc, KS, flux, "apps")?;
        (ks["status"]["lastAppliedRevision"] == format!("main@sha1:{head}")).then_some(())
    });
    assert_eq!(handled(kc, GR, flux, "fleet"), "2026-01-01T00:00:00.1Z");
    assert_eq!(data_v(kc, apps, "extra"), None, "pruned");
    assert_eq!(
        data_v(kc, apps, "keep").as_deref(),
        Some("from-git"),
        "prune: disabled"
    );
    let job = get(kc, "job", apps, "migrate").expect("job recreated");
    assert_ne!(
        job["metadata"]["uid"], first_job_uid,
        "recreated, not patched"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );

    // SIGTERM: a clean stop.
    let mut op = op;
    op.signal("TERM");
    assert_eq!(op.wait_exit(60), Some(0), "{}", op.log());
    assert!(op.printed("stopped"), "{}", op.log());
}

/// The holder of the Lease, as stored.
fn lease_holder(kc: &Path, ns: &str, name: &str) -> Option<(String, i64)> {
    let l = get(kc, "leases.coordination.k8s.io", ns, name)?;
    Some((
        l["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        l["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
    ))
}

/// The identity an operator announced ("... waiting for Lease ns/name as ID").
fn identity(op: &Operator) -> String {
    let log = std::fs::read_to_string(&op.log).unwrap_or_default();
    log.lines()
        .find_map(|l| l.split_once(" as ").map(|(_, id)| id.trim().to_string()))
        .unwrap_or_default()
}

#[test]
fn operator_replicas_hand_over_the_lease_on_sigterm_and_after_sigkill() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    let (apps, flux) = ("t-le-apps", "t-le-flux");
    let repo = Repo::new(
        tmp.path(),
        &[
            ("apps/namespace.yaml", &namespace(apps)),
            ("apps/hello.yaml", &config_map(apps, "hello", "", "one")),
        ],
    );
    let label = "e2e.trueup.dev/test: leader";
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\n{}",
            namespace(flux),
            git_repository(flux, "fleet", &repo.url(), label),
            kustomization(flux, "apps", "fleet", "./apps", label, ""),
        ),
    );
    // A lease long enough that a takeover before it expires can only come from a release.
    let args = [
        "--watch-label-selector",
        "e2e.trueup.dev/test=leader",
        "--leader-elect",
        "--leader-election-namespace",
        flux,
        "--leader-election-lease-duration",
        "20s",
        "--leader-election-renew-deadline",
        "15s",
        "--leader-election-retry-period",
        "1s",
    ];
    let lease = "trueup-leader-election";
    let mut a = Operator::start(kc, tmp.path(), "replica-a", &args);
    wait_for("replica a leads", 60, &[&a], || {
        a.printed("acquired Lease").then_some(())
    });
    let id_a = identity(&a);
    assert_eq!(lease_holder(kc, flux, lease), Some((id_a.clone(), 0)));
    wait_for("apps Ready under replica a", 120, &[&a], || {
        is_ready(kc, KS, flux, "apps").then_some(())
    });

    // b serves its health endpoints: a standby replica is ready too (controller-runtime's
    // rule), it only does not reconcile.
    let health_b = format!("127.0.0.1:{}", free_port());
    let mut args_b = args.to_vec();
    args_b.extend(["--health-addr", &health_b]);
    let mut b = Operator::start(kc, tmp.path(), "replica-b", &args_b);
    wait_for("replica b waits on the Lease", 60, &[&b], || {
        b.printed("waiting for Lease").then_some(())
    });
    let id_b = identity(&b);
    assert_ne!(id_a, id_b);
    // b waits while a renews: a full lease duration and more passes without a takeover.
    std::thread::sleep(Duration::from_secs(22));
    assert!(!b.printed("acquired Lease"), "{}", b.log());
    assert_eq!(lease_holder(kc, flux, lease), Some((id_a.clone(), 0)));
    assert_eq!(http_get(&health_b, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(
        http_get(&health_b, "/readyz"),
        Some((200, "ok\n".into())),
        "{}",
        b.log()
    );

    // SIGTERM: a finishes, releases the Lease and exits 0; b takes it well before the 20s
    // lease could have expired.
    a.signal("TERM");
    assert_eq!(a.wait_exit(60), Some(0), "{}", a.log());
    assert!(a.printed("released the Lease"), "{}", a.log());
    let stopped = Instant::now();
    wait_for("replica b takes the released Lease", 15, &[&b], || {
        b.printed("acquired Lease").then_some(())
    });
    assert!(stopped.elapsed() < Duration::from_secs(15));
    eprintln!("released Lease taken after {:?}", stopped.elapsed());
    assert_eq!(lease_holder(kc, flux, lease), Some((id_b.clone(), 1)));
    // b reconciles now: a requested reconcile is handled.
    requested_at(kc, KS, flux, "apps", "b-leads");
    wait_for("replica b handles a requested reconcile", 60, &[&b], || {
        (handled(kc, KS, flux, "apps") == "b-leads").then_some(())
    });

    // SIGKILL: nothing is released; c takes over only after the Lease expired.
    let c = Operator::start(kc, tmp.path(), "replica-c", &args);
    wait_for("replica c waits on the Lease", 60, &[&c], || {
        c.printed("waiting for Lease").then_some(())
    });
    let id_c = identity(&c);
    b.signal("KILL");
    let killed = Instant::now();
    b.wait_exit(30);
    wait_for("replica c takes the expired Lease", 90, &[&c], || {
        c.printed("acquired Lease").then_some(())
    });
    assert!(
        killed.elapsed() >= Duration::from_secs(15),
        "taken only after expiry: {:?}",
        killed.elapsed()
    );
    eprintln!(
        "expired Lease (20s) taken {:?} after SIGKILL",
        killed.elapsed()
    );
    assert_eq!(lease_holder(kc, flux, lease), Some((id_c, 2)));
    requested_at(kc, KS, flux, "apps", "c-leads");
    wait_for("replica c handles a requested reconcile", 60, &[&c], || {
        (handled(kc, KS, flux, "apps") == "c-leads").then_some(())
    });
    assert_eq!(data_v(kc, apps, "hello").as_deref(), Some("one"));

    // The Lease taken from under the leader: it stops reconciling and exits 1.
    let mut c = c;
    kubectl(
        kc,
        &[
            "patch",
            "leases.coordination.k8s.io",
            lease,
            "-n",
            flux,
            "--type=merge",
            "-p",
            r#"{"spec":{"holderIdentity":"intruder"}}"#,
        ],
    );
    assert_eq!(c.wait_exit(60), Some(1), "{}", c.log());
    assert!(c.printed("leader election lost"), "{}", c.log());
}

#[test]
fn sigterm_lets_the_reconcile_in_flight_finish() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    let (apps, flux) = ("t-gs-apps", "t-gs-flux");
    let work_job = format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: work\n  namespace: {apps}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: w\n        image: busybox:1.36\n");
    let repo = Repo::new(
        tmp.path(),
        &[
            ("apps/namespace.yaml", &namespace(apps)),
            ("apps/job.yaml", &work_job),
        ],
    );
    let label = "e2e.trueup.dev/test: graceful";
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\n{}",
            namespace(flux),
            git_repository(flux, "fleet", &repo.url(), label),
            // `wait`: the reconcile lasts until the Job completes (nothing runs it here).
            kustomization(
                flux,
                "apps",
                "fleet",
                "./apps",
                label,
                "  wait: true\n  timeout: 5m\n"
            ),
        ),
    );
    let grace = "3m";
    let mut op = Operator::start(
        kc,
        tmp.path(),
        "graceful",
        &[
            "--watch-label-selector",
            "e2e.trueup.dev/test=graceful",
            "--graceful-shutdown-timeout",
            grace,
        ],
    );
    wait_for("the Job applied", 120, &[&op], || {
        get(kc, "job", apps, "work")
    });
    assert!(!is_ready(kc, KS, flux, "apps"), "still waiting for the Job");
    op.signal("TERM");
    wait_for("the operator saw SIGTERM", 30, &[&op], || {
        op.printed("SIGTERM").then_some(())
    });
    // The Job completes after the signal: only the reconcile already in flight can see it and
    // record the Kustomization Ready.
    kubectl(
        kc,
        &[
            "patch",
            "job",
            "work",
            "-n",
            apps,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"succeeded":1,"conditions":[{"type":"Complete","status":"True"}]}}"#,
        ],
    );
    assert_eq!(op.wait_exit(120), Some(0), "{}", op.log());
    let ks = get(kc, KS, flux, "apps").unwrap();
    let head = git(&repo.work, &["rev-parse", "HEAD"]);
    assert_eq!(ready(&ks).unwrap()["status"], "True", "{ks}");
    assert_eq!(
        ks["status"]["lastAppliedRevision"],
        format!("main@sha1:{head}")
    );
    assert!(
        ks["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "trueup" && m["fieldsV1"]["f:status"].is_object()),
        "status written by trueup: {ks}"
    );
}

#[test]
fn sharded_operators_leave_other_shards_alone() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    let (apps, flux) = ("t-shard-apps", "t-shard-flux");
    let repo = Repo::new(
        tmp.path(),
        &[
            ("main/namespace.yaml", &namespace(apps)),
            ("main/cm.yaml", &config_map(apps, "main", "", "main")),
            ("one/namespace.yaml", &namespace(apps)),
            ("one/cm.yaml", &config_map(apps, "one", "", "one")),
            ("one-b/cm.yaml", &config_map(apps, "one-b", "", "one-b")),
        ],
    );
    let main_labels = "e2e.trueup.dev/test: shard";
    let shard1_labels = "e2e.trueup.dev/test: shard, sharding.fluxcd.io/key: shard1";
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\n{}---\n{}---\n{}---\n{}",
            namespace(flux),
            git_repository(flux, "fleet-main", &repo.url(), main_labels),
            kustomization(flux, "main", "fleet-main", "./main", main_labels, ""),
            git_repository(flux, "fleet-one", &repo.url(), shard1_labels),
            kustomization(flux, "one", "fleet-one", "./one", shard1_labels, ""),
            kustomization(flux, "one-b", "fleet-one", "./one-b", shard1_labels, ""),
        ),
    );
    let main = Operator::start(
        kc,
        tmp.path(),
        "main-shard",
        &[
            "--watch-label-selector",
            "e2e.trueup.dev/test=shard,sharding.fluxcd.io/key notin (shard1, shard2)",
        ],
    );
    wait_for(
        "the main shard's Kustomization Ready",
        120,
        &[&main],
        || is_ready(kc, KS, flux, "main").then_some(()),
    );
    assert_eq!(data_v(kc, apps, "main").as_deref(), Some("main"));
    // The main shard's operator never touched shard1's objects.
    let one = get(kc, KS, flux, "one").unwrap();
    assert!(
        one.get("status")
            .is_none_or(|s| s.get("conditions").is_none()),
        "{one}"
    );
    assert!(get(kc, GR, flux, "fleet-one").unwrap()["status"]["artifact"].is_null());
    assert_eq!(data_v(kc, apps, "one"), None);

    let shard1 = Operator::start(
        kc,
        tmp.path(),
        "shard1",
        &[
            "--watch-label-selector",
            "e2e.trueup.dev/test=shard,sharding.fluxcd.io/key=shard1",
        ],
    );
    wait_for("shard1's Kustomization Ready", 120, &[&shard1], || {
        is_ready(kc, KS, flux, "one").then_some(())
    });
    assert_eq!(data_v(kc, apps, "one").as_deref(), Some("one"));
    wait_for(
        "shard1's second Kustomization Ready",
        60,
        &[&shard1],
        || is_ready(kc, KS, flux, "one-b").then_some(()),
    );

    // An object moved to another shard is handed over, not deleted: shard1 stops watching it
    // and must not prune what it applied. The Kustomization watch delivers events in order, so
    // once shard1 handled a later request on `one-b` it has seen `one` leave.
    kubectl(
        kc,
        &[
            "label",
            "--overwrite",
            KS,
            "one",
            "-n",
            flux,
            "sharding.fluxcd.io/key=shard2",
        ],
    );
    requested_at(kc, KS, flux, "one-b", "after-move");
    wait_for("shard1 handles a later request", 60, &[&shard1], || {
        (handled(kc, KS, flux, "one-b") == "after-move").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        data_v(kc, apps, "one").as_deref(),
        Some("one"),
        "{}",
        shard1.log()
    );
    requested_at(kc, KS, flux, "one", "nobody");
    requested_at(kc, KS, flux, "one-b", "after-move-2");
    wait_for("shard1 handles another request", 60, &[&shard1], || {
        (handled(kc, KS, flux, "one-b") == "after-move-2").then_some(())
    });
    assert_eq!(
        handled(kc, KS, flux, "one"),
        "",
        "no operator reconciles shard2"
    );

    // Each operator reported on its own objects only.
    assert!(
        !main.log().contains("Kustomization/t-shard-flux/one"),
        "{}",
        main.log()
    );
    assert!(
        !shard1.log().contains("Kustomization/t-shard-flux/main"),
        "{}",
        shard1.log()
    );
}

#[test]
fn a_bad_watch_label_selector_is_named() {
    let out = Command::new(trueup_bin())
        .args([
            "operator",
            "--kubeconfig",
            "/nonexistent",
            "--watch-label-selector",
            "sharding.fluxcd.io/key notin ()",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid label selector 'sharding.fluxcd.io/key notin ()'")
            && err.contains("at least one value"),
        "{err}"
    );
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn deleting_a_kustomization_prunes_its_objects_before_it_goes() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    let (apps, flux) = ("t-fin-apps", "t-fin-flux");
    let repo = Repo::new(
        tmp.path(),
        &[
            ("pruned/cm.yaml", &config_map(apps, "pruned", "", "p")),
            ("kept/cm.yaml", &config_map(apps, "kept", "", "k")),
            ("paused/cm.yaml", &config_map(apps, "paused", "", "s")),
        ],
    );
    let label = "e2e.trueup.dev/test: finalizers";
    // The namespace stays out of Git: without a namespace controller a deleted namespace
    // never goes.
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\n{}---\n{}---\n{}---\n{}",
            namespace(apps),
            namespace(flux),
            git_repository(flux, "fleet", &repo.url(), label),
            kustomization(flux, "pruned", "fleet", "./pruned", label, ""),
            kustomization(flux, "kept", "fleet", "./kept", label, "")
                .replace("prune: true", "prune: false"),
            kustomization(flux, "paused", "fleet", "./paused", label, ""),
        ),
    );
    let op = Operator::start(
        kc,
        tmp.path(),
        "finalizers",
        &["--watch-label-selector", "e2e.trueup.dev/test=finalizers"],
    );
    for name in ["pruned", "kept", "paused"] {
        wait_for(&format!("Kustomization {name} Ready"), 120, &[&op], || {
            is_ready(kc, KS, flux, name).then_some(())
        });
        assert!(data_v(kc, apps, name).is_some(), "{name} was applied");
        let ks = get(kc, KS, flux, name).unwrap();
        assert_eq!(finalizers(&ks), vec!["finalizers.fluxcd.io".to_string()]);
    }
    // The GitRepository carries it too, as with Flux.
    assert!(finalizers(&get(kc, GR, flux, "fleet").unwrap())
        .contains(&"finalizers.fluxcd.io".to_string()));

    // `kubectl delete` waits until the object is gone; the finalizer keeps it until the
    // objects it applied are pruned.
    kubectl(
        kc,
        &[
            "delete",
            KS,
            "pruned",
            "-n",
            flux,
            "--wait=true",
            "--timeout=90s",
        ],
    );
    assert_eq!(get(kc, KS, flux, "pruned"), None);
    assert_eq!(
        data_v(kc, apps, "pruned"),
        None,
        "pruned before the Kustomization went\n{}",
        op.log()
    );

    // prune: false leaves its objects.
    kubectl(
        kc,
        &[
            "delete",
            KS,
            "kept",
            "-n",
            flux,
            "--wait=true",
            "--timeout=90s",
        ],
    );
    assert_eq!(get(kc, KS, flux, "kept"), None);
    assert_eq!(data_v(kc, apps, "kept").as_deref(), Some("k"));

    // A suspended Kustomization releases its finalizer without pruning.
    kubectl(
        kc,
        &[
            "patch",
            KS,
            "paused",
            "-n",
            flux,
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
    );
    wait_for("the suspension seen", 60, &[&op], || {
        get(kc, KS, flux, "paused")
            .filter(|o| o["spec"]["suspend"] == true)
            .map(|_| ())
    });
    kubectl(
        kc,
        &[
            "delete",
            KS,
            "paused",
            "-n",
            flux,
            "--wait=true",
            "--timeout=90s",
        ],
    );
    assert_eq!(get(kc, KS, flux, "paused"), None);
    assert_eq!(data_v(kc, apps, "paused").as_deref(), Some("s"));
    // The clean-up ran once: the deletion event that followed the finalizer's removal did not
    // run it again.
    let events: Value = serde_json::from_str(&kubectl(
        kc,
        &[
            "get",
            "events",
            "-n",
            flux,
            "--field-selector",
            "involvedObject.name=pruned,reason=Pruned",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    let pruned: Vec<&Value> = events["items"].as_array().unwrap().iter().collect();
    let count: i64 = pruned
        .iter()
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum();
    assert_eq!(count, 1, "{events}\n{}", op.log());
    assert!(
        pruned[0]["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap/t-fin-apps/pruned deleted"),
        "{events}"
    );
}

/// `spec.deletionPolicy`: Orphan leaves the objects although `prune: true`, Delete deletes them
/// although `prune: false`, WaitForTermination keeps the Kustomization (its finalizer) until
/// they are gone, here until the test removes a finalizer that holds one of them.
#[test]
fn kustomization_deletion_policies_orphan_delete_and_wait_for_termination() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    let (apps, flux) = ("t-dp-apps", "t-dp-flux");
    let held = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: waited\n  namespace: {apps}\n  finalizers: [e2e.trueup.dev/hold]\ndata:\n  v: \"w\"\n"
    );
    let repo = Repo::new(
        tmp.path(),
        &[
            ("orphaned/cm.yaml", &config_map(apps, "orphaned", "", "o")),
            ("deleted/cm.yaml", &config_map(apps, "deleted", "", "d")),
            ("waited/cm.yaml", &held),
        ],
    );
    let label = "e2e.trueup.dev/test: deletionpolicy";
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\n{}---\n{}---\n{}---\n{}",
            namespace(apps),
            namespace(flux),
            git_repository(flux, "fleet", &repo.url(), label),
            kustomization(
                flux,
                "orphaned",
                "fleet",
                "./orphaned",
                label,
                "  deletionPolicy: Orphan\n"
            ),
            kustomization(
                flux,
                "deleted",
                "fleet",
                "./deleted",
                label,
                "  deletionPolicy: Delete\n"
            )
            .replace("prune: true", "prune: false"),
            kustomization(
                flux,
                "waited",
                "fleet",
                "./waited",
                label,
                "  deletionPolicy: WaitForTermination\n  timeout: 60s\n"
            ),
        ),
    );
    let op = Operator::start(
        kc,
        tmp.path(),
        "deletionpolicy",
        &[
            "--watch-label-selector",
            "e2e.trueup.dev/test=deletionpolicy",
        ],
    );
    for name in ["orphaned", "deleted", "waited"] {
        wait_for(&format!("Kustomization {name} Ready"), 120, &[&op], || {
            is_ready(kc, KS, flux, name).then_some(())
        });
        assert!(data_v(kc, apps, name).is_some(), "{name} was applied");
    }
    let delete = |name: &str, wait: bool| {
        kubectl(
            kc,
            &[
                "delete",
                KS,
                name,
                "-n",
                flux,
                if wait { "--wait=true" } else { "--wait=false" },
                "--timeout=90s",
            ],
        )
    };

    delete("orphaned", true);
    assert_eq!(get(kc, KS, flux, "orphaned"), None);
    assert_eq!(data_v(kc, apps, "orphaned").as_deref(), Some("o"));

    delete("deleted", true);
    assert_eq!(get(kc, KS, flux, "deleted"), None);
    assert_eq!(data_v(kc, apps, "deleted"), None, "{}", op.log());

    // The ConfigMap is deleted but held by its finalizer: the Kustomization waits for it.
    delete("waited", false);
    wait_for("the held ConfigMap deleted", 60, &[&op], || {
        get(kc, "configmap", apps, "waited")
            .filter(|o| o["metadata"]["deletionTimestamp"].is_string())
            .map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(2));
    let ks = get(kc, KS, flux, "waited").expect("the Kustomization waits");
    assert!(ks["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(finalizers(&ks), vec!["finalizers.fluxcd.io".to_string()]);
    kubectl(
        kc,
        &[
            "patch",
            "configmap",
            "waited",
            "-n",
            apps,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    );
    wait_for(
        "the Kustomization gone after its objects",
        60,
        &[&op],
        || get(kc, KS, flux, "waited").is_none().then_some(()),
    );
    assert_eq!(get(kc, "configmap", apps, "waited"), None);
}

/// Forwards every connection accepted on `listener` to `target`, byte for byte, in threads.
fn forward(listener: std::net::TcpListener, target: String) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut upstream) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client, &mut u2);
                let _ = u2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut upstream, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// `--health-addr` on a cluster: live at once, not ready (503, saying why) while the API
/// server cannot be reached, ready once it answers and serves the Flux kinds, although this
/// replica never gets the Lease (its namespace does not exist): a standby is ready.
#[test]
fn health_endpoints_on_a_cluster_wait_for_the_api_server_not_for_the_lease() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    // The operator's kubeconfig points at a port where nothing listens yet; the test puts a
    // forwarder to the real server there later (same host: the certificate still matches).
    let text = std::fs::read_to_string(kc).unwrap();
    let real = kubectl(
        kc,
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
    );
    let real = real.trim().to_string();
    let (host, _) = real
        .trim_start_matches("https://")
        .rsplit_once(':')
        .expect("host:port");
    let port = free_port();
    let late = tmp.path().join("late.kubeconfig");
    std::fs::write(
        &late,
        text.replace(&real, &format!("https://{host}:{port}")),
    )
    .unwrap();
    let health = format!("127.0.0.1:{}", free_port());
    let mut op = Operator::start(
        &late,
        tmp.path(),
        "health",
        &[
            "--health-addr",
            &health,
            "--leader-elect",
            "--leader-election-namespace",
            "t-health-nonexistent",
            "--leader-election-retry-period",
            "1s",
            "--watch-label-selector",
            "e2e.trueup.dev/test=health",
        ],
    );
    let live = wait_for("/healthz", 60, &[&op], || http_get(&health, "/healthz"));
    assert_eq!(live, (200, "ok\n".to_string()));
    let (code, body) = wait_for("/readyz naming the API server", 30, &[&op], || {
        http_get(&health, "/readyz").filter(|(_, b)| b.contains("API server"))
    });
    assert_eq!(code, 503, "{body}");
    assert_eq!(http_get(&health, "/other").map(|r| r.0), Some(404));

    let listener = std::net::TcpListener::bind((host, port)).unwrap();
    forward(listener, real.trim_start_matches("https://").to_string());
    let ready = wait_for("/readyz 200", 60, &[&op], || {
        http_get(&health, "/readyz").filter(|(c, _)| *c == 200)
    });
    assert_eq!(ready.1, "ok\n");
    assert!(op.printed("waiting for Lease"), "{}", op.log());
    assert!(!op.printed("acquired Lease"), "{}", op.log());
    op.signal("TERM");
    assert_eq!(op.wait_exit(60), Some(0), "{}", op.log());
}

/// Why a process cannot get a private mount namespace here, if it cannot.
fn no_mount_namespace() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: a private mount namespace needs `unshare --mount` as root".into());
    }
    match Command::new("unshare")
        .args(["--mount", "true"])
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`unshare --mount` fails here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`unshare` is missing: {e}")),
    }
}

/// The manager container's probes: (probe, path), each an httpGet on the named port `healthz`,
/// which the container declares as 9440.
fn deployment_probes() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/manager/deployment.yaml"),
    )
    .unwrap();
    let d: Value = serde_yaml::from_str(&text).unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let ports = c["ports"]
        .as_array()
        .expect("the manager container has ports");
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "healthz" && p["containerPort"] == 9440),
        "{ports:?}"
    );
    ["livenessProbe", "readinessProbe"]
        .iter()
        .map(|probe| {
            let get = &c[*probe]["httpGet"];
            assert_eq!(get["port"], "healthz", "{probe}");
            (
                probe.to_string(),
                get["path"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The container args of the operator Deployment in config/manager.
fn deployment_args() -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/manager/deployment.yaml"),
    )
    .unwrap();
    let d: Value = serde_yaml::from_str(&text).unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "manager");
    c["args"]
        .as_array()
        .expect("the manager container has args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn in_cluster_with_the_deploy_manifests_and_a_service_account_token() {
    let Some(server) = apiserver::server() else {
        return;
    };
    if let Some(why) = no_mount_namespace() {
        // A missing `unshare` is a missing tool; not being root is how the test runs, which
        // no installation changes.
        if apiserver::require_oracles() && why.contains("missing") {
            panic!("TRUEUP_REQUIRE_ORACLES=1 but {why}");
        }
        eprintln!("SKIP: {why}");
        return;
    }
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    // What `kubectl apply -k config/default` installs: the CRDs, flux-system, the
    // ServiceAccount, its RBAC and the Deployment (no kubelet runs it here).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    kubectl(
        kc,
        &["apply", "-k", root.join("config/default").to_str().unwrap()],
    );
    let mut crds = vec!["wait", "--for", "condition=established", "--timeout=60s"];
    let names: Vec<String> = FluxKind::ALL
        .iter()
        .map(|k| format!("crd/{}.{}", plural(k.kind()), k.group()))
        .collect();
    crds.extend(names.iter().map(String::as_str));
    kubectl(kc, &crds);

    // A token for the ServiceAccount, as the kubelet gets one for a pod (TokenRequest API).
    let tmp = tempfile::tempdir().unwrap();
    let request = tmp.path().join("token-request.json");
    std::fs::write(
        &request,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#,
    )
    .unwrap();
    let resp: Value = serde_json::from_str(&kubectl(
        kc,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/flux-system/serviceaccounts/trueup/token",
            "-f",
            request.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let token = resp["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    // The API server authenticates the token as the ServiceAccount.
    let review = kubectl_raw(
        kc,
        &["create", "-o", "json", "-f", "-"],
        Some(&format!(
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n"
        )),
    );
    assert!(review.status.success());
    let review: Value = serde_json::from_slice(&review.stdout).unwrap();
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:flux-system:trueup"
    );

    // What a pod of that Deployment sees: the token, the cluster's CA and the namespace under
    // /var/run/secrets/kubernetes.io/serviceaccount, and the service's address in the env.
    let server_url = kubectl(
        kc,
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
    );
    let (host, port) = server_url
        .trim()
        .trim_start_matches("https://")
        .rsplit_once(':')
        .expect("host:port");
    let ca = kubectl(
        kc,
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ],
    );
    let files = tmp.path().join("sa");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("token"), &token).unwrap();
    std::fs::write(files.join("ca.b64"), ca.trim()).unwrap();
    std::fs::write(files.join("namespace"), "flux-system").unwrap();

    let (apps, flux) = ("t-ic-apps", "t-ic-flux");
    let repo = Repo::new(
        tmp.path(),
        &[("apps/cm.yaml", &config_map(apps, "in-cluster", "", "ok"))],
    );
    let label = "e2e.trueup.dev/test: incluster";
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\n{}---\n{}",
            namespace(apps),
            namespace(flux),
            git_repository(flux, "fleet", &repo.url(), label),
            kustomization(flux, "apps", "fleet", "./apps", label, ""),
        ),
    );

    let mut args = deployment_args();
    assert_eq!(
        args,
        [
            "operator",
            "--in-cluster",
            "--leader-elect",
            "--health-addr=:9440"
        ]
    );
    // The probes the kubelet would run, on the port the args serve.
    let probes = deployment_probes();
    assert_eq!(
        probes,
        [
            ("livenessProbe".to_string(), "/healthz".to_string()),
            ("readinessProbe".to_string(), "/readyz".to_string())
        ]
    );
    // The health endpoints on a free port of 127.0.0.1 (tests share the machine), instead of
    // :9440 on every interface.
    let health = format!("127.0.0.1:{}", free_port());
    for a in &mut args {
        if a.starts_with("--health-addr=") {
            *a = format!("--health-addr={health}");
        }
    }
    // Artifacts in the test's directory; and only this test's Flux objects, as the other
    // tests share the server (the watch selector narrows lists and watches, not rights).
    args.extend([
        "--storage-path".to_string(),
        tmp.path().join("artifacts").to_str().unwrap().to_string(),
        "--watch-label-selector".to_string(),
        "e2e.trueup.dev/test=incluster".to_string(),
    ]);
    let sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let script = format!(
        r#"set -e
if [ ! -d {sa_dir} ]; then
  # Not on this machine: a tmpfs over /run (this namespace only) to make the mount point in.
  mount -t tmpfs -o mode=0755 tmpfs /run
  mkdir -p {sa_dir}
fi
mount -t tmpfs -o mode=0755 tmpfs {sa_dir}
cp "$1/token" "$1/namespace" {sa_dir}/
base64 -d "$1/ca.b64" > {sa_dir}/ca.crt
shift
exec env -i HOME="$HOME_DIR" TMPDIR="$HOME_DIR" KUBERNETES_SERVICE_HOST={host} KUBERNETES_SERVICE_PORT={port} "$@"
"#
    );
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let log = tmp.path().join("in-cluster.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(&files)
        .arg(trueup_bin())
        .args(&args)
        .env("HOME_DIR", &home)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("unshare starts");
    let mut op = Operator {
        child: Some(child),
        log,
    };

    // It takes the Lease in the pod's namespace...
    let holder = wait_for("the Lease taken", 120, &[&op], || {
        lease_holder(kc, "flux-system", "trueup-leader-election")
            .map(|(h, _)| h)
            .filter(|h| !h.is_empty())
    });
    assert_eq!(holder, identity(&op), "{}", op.log());
    // ... and reconciles with nothing but the ServiceAccount's rights.
    wait_for("the in-cluster Kustomization Ready", 120, &[&op], || {
        is_ready(kc, KS, flux, "apps").then_some(())
    });
    assert_eq!(data_v(kc, apps, "in-cluster").as_deref(), Some("ok"));
    assert!(is_ready(kc, GR, flux, "fleet"));
    // Live and ready, as the kubelet's probes would see it.
    assert_eq!(http_get(&health, "/healthz"), Some((200, "ok\n".into())));
    assert_eq!(http_get(&health, "/readyz"), Some((200, "ok\n".into())));
    assert_eq!(http_get(&health, "/nothing").map(|r| r.0), Some(404));
    // SIGTERM, as the kubelet stops a pod: it releases the Lease and exits 0.
    op.signal("TERM");
    assert_eq!(op.wait_exit(60), Some(0), "{}", op.log());
    assert_eq!(
        lease_holder(kc, "flux-system", "trueup-leader-election").map(|(h, _)| h),
        Some(String::new()),
        "{}",
        op.log()
    );
    // No token in what it printed.
    assert!(!op.log().contains(&token));
}

#[test]
fn a_service_account_name_applies_with_that_accounts_rights() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    let (apps, flux) = ("t-sa-apps", "t-sa-flux");
    let repo = Repo::new(
        tmp.path(),
        &[("apps/cm.yaml", &config_map(apps, "tenant", "", "t"))],
    );
    let label = "e2e.trueup.dev/test: impersonation";
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: deployer\n  namespace: {flux}\n---\n{}---\n{}",
            namespace(apps),
            namespace(flux),
            git_repository(flux, "fleet", &repo.url(), label),
            kustomization(
                flux,
                "tenant",
                "fleet",
                "./apps",
                label,
                "  serviceAccountName: deployer\n"
            ),
        ),
    );
    let op = Operator::start(
        kc,
        tmp.path(),
        "impersonation",
        &[
            "--watch-label-selector",
            "e2e.trueup.dev/test=impersonation",
        ],
    );
    // The operator itself may do anything; the account it acts as for this Kustomization may
    // not: Ready=False names the refused request.
    let message = wait_for("the refusal in Ready", 120, &[&op], || {
        let ks = get(kc, KS, flux, "tenant")?;
        let r = ready(&ks)?;
        (r["status"] == "False")
            .then(|| r["message"].as_str().unwrap_or("").to_string())
            .filter(|m| m.contains("forbidden"))
    });
    assert!(
        message.contains("system:serviceaccount:t-sa-flux:deployer")
            && message.contains("configmaps")
            && message.contains(apps),
        "{message}"
    );
    assert_eq!(data_v(kc, apps, "tenant"), None);

    // Rights in the target namespace: it reconciles.
    kubectl_apply(
        kc,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: deployer\n  namespace: {apps}\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list, watch, create, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: deployer\n  namespace: {apps}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: deployer\nsubjects:\n- kind: ServiceAccount\n  name: deployer\n  namespace: {flux}\n"
        ),
    );
    wait_for("the Kustomization Ready with the Role", 120, &[&op], || {
        is_ready(kc, KS, flux, "tenant").then_some(())
    });
    assert_eq!(data_v(kc, apps, "tenant").as_deref(), Some("t"));
    // The Kustomization's own status is still written by the operator: the account was never
    // given rights on it.
    let ks = get(kc, KS, flux, "tenant").unwrap();
    assert!(ready(&ks).unwrap()["message"]
        .as_str()
        .unwrap()
        .starts_with("Applied revision"));

    // The account may not delete: deleting the Kustomization cannot prune, so the finalizer
    // keeps it, and the failure is an event naming the refused request.
    kubectl(kc, &["delete", KS, "tenant", "-n", flux, "--wait=false"]);
    let failure = wait_for("a PruneFailed event", 60, &[&op], || {
        let ev: Value = serde_json::from_str(&kubectl(
            kc,
            &[
                "get",
                "events",
                "-n",
                flux,
                "--field-selector",
                "involvedObject.name=tenant,reason=PruneFailed",
                "-o",
                "json",
            ],
        ))
        .ok()?;
        ev["items"]
            .as_array()?
            .first()
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
    });
    assert!(
        failure.contains("forbidden") && failure.contains("delete"),
        "{failure}"
    );
    let ks = get(kc, KS, flux, "tenant").expect("held by its finalizer");
    assert!(!ks["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(finalizers(&ks), vec!["finalizers.fluxcd.io".to_string()]);
    assert_eq!(data_v(kc, apps, "tenant").as_deref(), Some("t"));

    // Given the right, the retry prunes and lets the Kustomization go.
    kubectl(
        kc,
        &[
            "patch",
            "role",
            "deployer",
            "-n",
            apps,
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/rules/0/verbs/-","value":"delete"}]"#,
        ],
    );
    wait_for(
        "the Kustomization gone after the retry",
        120,
        &[&op],
        || get(kc, KS, flux, "tenant").is_none().then_some(()),
    );
    assert_eq!(data_v(kc, apps, "tenant"), None);
}

#[test]
fn a_helm_release_with_a_service_account_name_installs_and_uninstalls_with_its_rights() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let tmp = tempfile::tempdir().unwrap();
    let ns = "t-sah";
    let repo = Repo::new(
        tmp.path(),
        &[
            (
                "chart/Chart.yaml",
                "apiVersion: v2\nname: tenant\nversion: 0.1.0\n",
            ),
            (
                "chart/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  v: \"h\"\n",
            ),
        ],
    );
    // The HelmChart it creates carries the label too (spec.chart.metadata), or this
    // operator's selector would not see it.
    let label = "e2e.trueup.dev/test: helm-impersonation";
    kubectl_apply(
        kc,
        &format!(
            "{}---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: deployer\n  namespace: {ns}\n---\n{}---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: tenant\n  namespace: {ns}\n  labels: {{{label}}}\nspec:\n  interval: 5s\n  serviceAccountName: deployer\n  chart:\n    metadata:\n      labels: {{{label}}}\n    spec:\n      chart: ./chart\n      sourceRef:\n        kind: GitRepository\n        name: fleet\n",
            namespace(ns),
            git_repository(ns, "fleet", &repo.url(), label),
        ),
    );
    let op = Operator::start(
        kc,
        tmp.path(),
        "helm-impersonation",
        &[
            "--watch-label-selector",
            "e2e.trueup.dev/test=helm-impersonation",
        ],
    );
    let hr = "helmreleases.helm.toolkit.fluxcd.io";
    let message = wait_for(
        "the refusal in the HelmRelease's Ready",
        120,
        &[&op],
        || {
            let o = get(kc, hr, ns, "tenant")?;
            let r = ready(&o)?;
            (r["status"] == "False")
                .then(|| r["message"].as_str().unwrap_or("").to_string())
                .filter(|m| m.contains("forbidden"))
        },
    );
    assert!(
        message.contains("system:serviceaccount:t-sah:deployer"),
        "{message}"
    );
    assert_eq!(data_v(kc, ns, "tenant-cm"), None);

    // Rights on the release's storage (Secrets) and its objects: it installs.
    kubectl_apply(
        kc,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: deployer\n  namespace: {ns}\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps, secrets]\n  verbs: [get, list, watch, create, update, patch, delete]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: deployer\n  namespace: {ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: deployer\nsubjects:\n- kind: ServiceAccount\n  name: deployer\n  namespace: {ns}\n"
        ),
    );
    wait_for("the HelmRelease Ready with the Role", 120, &[&op], || {
        is_ready(kc, hr, ns, "tenant").then_some(())
    });
    assert_eq!(data_v(kc, ns, "tenant-cm").as_deref(), Some("h"));

    // Deleting the HelmRelease uninstalls the release (as the ServiceAccount) before the
    // finalizer lets it go, then its HelmChart goes too.
    let chart = "helmcharts.source.toolkit.fluxcd.io";
    assert!(get(kc, chart, ns, "t-sah-tenant").is_some());
    kubectl(
        kc,
        &[
            "delete",
            hr,
            "tenant",
            "-n",
            ns,
            "--wait=true",
            "--timeout=90s",
        ],
    );
    assert_eq!(get(kc, hr, ns, "tenant"), None);
    assert_eq!(data_v(kc, ns, "tenant-cm"), None, "{}", op.log());
    wait_for("the HelmChart gone", 60, &[&op], || {
        get(kc, chart, ns, "t-sah-tenant").is_none().then_some(())
    });
}

// ---------- spec.kubeConfig: remote clusters ----------

use trueup::core::runtime::{CancellationToken, Runtime};
use trueup::core::status::{ConditionStatus, Status, READY};
use trueup::core::traits::{ApplyOptions, Backend};
use trueup::core::{Object, ObjectRef};

/// The runtime of `presets::gitops` on a local directory (the management side), run on its
/// own tokio runtime so that the test can poll with kubectl; cancelled on drop.
struct Embedded {
    backend: trueup::local::LocalBackend,
    rt: std::sync::Arc<Runtime>,
    tokio: tokio::runtime::Runtime,
    cancel: CancellationToken,
}

impl Embedded {
    /// Applies `objects` to a new local backend under `dir`, then starts reconciling.
    fn start(dir: &Path, objects: &[Object]) -> Embedded {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backend = trueup::local::LocalBackend::open_with(
            dir.join("cluster"),
            trueup::local::LocalOptions {
                durable: false,
                ..Default::default()
            },
        )
        .unwrap();
        let store =
            trueup::core::storage::ArtifactStore::new(backend.state_dir().join("artifacts"))
                .unwrap();
        let rt = std::sync::Arc::new(
            trueup::presets::gitops(std::sync::Arc::new(backend.clone()), store).build(),
        );
        let e = Embedded {
            backend,
            rt,
            tokio,
            cancel: CancellationToken::new(),
        };
        for o in objects {
            e.tokio
                .block_on(e.backend.apply(o, &ApplyOptions::default()))
                .unwrap();
        }
        let (rt, cancel) = (e.rt.clone(), e.cancel.clone());
        e.tokio.spawn(async move { rt.run(cancel).await });
        e
    }

    fn get(&self, r: &ObjectRef) -> Option<Object> {
        self.tokio.block_on(self.backend.get(r)).unwrap()
    }

    fn delete(&self, r: &ObjectRef) {
        self.tokio.block_on(self.backend.delete(r)).unwrap();
    }

    fn ready(&self, r: &ObjectRef) -> Option<trueup::core::Condition> {
        let o = self.get(r)?;
        Status::from_value(o.status()).condition(READY).cloned()
    }

    /// Every event message and the object's status, for checks that a secret is absent.
    fn everything_said(&self, r: &ObjectRef) -> String {
        let mut text: Vec<String> = self
            .backend
            .events(None)
            .unwrap()
            .into_iter()
            .map(|e| format!("{} {}", e.reason, e.message))
            .collect();
        if let Some(o) = self.get(r) {
            text.push(o.status().map(|v| v.to_string()).unwrap_or_default());
        }
        text.join("\n")
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Polls `f` until it returns Some, panicking with `diag()` after `secs`.
fn eventually<T>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> Option<T>,
    diag: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}\n{}",
            diag()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn yaml_objects(text: &str) -> Vec<Object> {
    trueup::core::yaml::parse_objects(text, "test objects").unwrap()
}

/// A Secret holding a kubeconfig under `key`.
fn kubeconfig_secret(ns: &str, name: &str, key: &str, kubeconfig: &str) -> Object {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {key: kubeconfig},
    }))
    .unwrap()
}

/// The bearer token of a kubeconfig (`token: ...`).
fn token_of(kubeconfig: &str) -> String {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .expect("a token in the kubeconfig")
        .trim()
        .to_string()
}

/// The kubeconfig with its token replaced.
fn with_token(kubeconfig: &str, token: &str) -> String {
    kubeconfig
        .lines()
        .map(|l| match l.trim().strip_prefix("token:") {
            Some(_) => format!("    token: {token}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["manager"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_local_kustomization_with_a_kubeconfig_applies_prunes_and_cleans_up_on_the_cluster() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    let kubeconfig = std::fs::read_to_string(kc).unwrap();
    let ns = "t-remote-local";
    kubectl_apply(kc, &namespace(ns));
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(
        tmp.path(),
        &[
            ("apps/a.yaml", &config_map(ns, "a", "", "1")),
            ("apps/b.yaml", &config_map(ns, "b", "", "2")),
        ],
    );
    let mut objects = yaml_objects(&format!(
        "{}---\n{}---\n{}",
        git_repository("fleet", "fleet", &repo.url(), ""),
        kustomization(
            "fleet",
            "remote",
            "fleet",
            "./apps",
            "",
            "  kubeConfig:\n    secretRef:\n      name: remote-cluster\n"
        ),
        // serviceAccountName with a kubeConfig: impersonated on the remote cluster, where
        // that account has no rights.
        kustomization(
            "fleet",
            "as-nobody",
            "fleet",
            "./apps",
            "",
            "  serviceAccountName: nobody\n  kubeConfig:\n    secretRef:\n      name: remote-cluster\n"
        ),
    ));
    objects.push(kubeconfig_secret(
        "fleet",
        "remote-cluster",
        "value",
        &kubeconfig,
    ));
    let started = Instant::now();
    let e = Embedded::start(tmp.path(), &objects);
    let ks = FluxKind::Kustomization.ref_to("fleet", "remote");
    let diag = || format!("{:?}\n{}", e.ready(&ks), e.everything_said(&ks));
    eventually(
        "the Kustomization Ready",
        120,
        || e.ready(&ks).filter(|c| c.status == ConditionStatus::True),
        diag,
    );
    eprintln!("first remote apply ready in {:?}", started.elapsed());
    let nobody = FluxKind::Kustomization.ref_to("fleet", "as-nobody");
    let refusal = eventually(
        "the impersonated Kustomization refused",
        60,
        || {
            e.ready(&nobody)
                .filter(|c| c.status == ConditionStatus::False && c.message.contains("forbidden"))
        },
        diag,
    );
    assert!(
        refusal
            .message
            .contains("system:serviceaccount:fleet:nobody"),
        "{}",
        refusal.message
    );
    let a = get(kc, "configmap", ns, "a").expect("applied on the cluster");
    assert_eq!(a["data"]["v"], "1");
    assert!(managers(&a).contains(&"trueup".to_string()), "{a}");
    assert_eq!(data_v(kc, ns, "b").as_deref(), Some("2"));
    // Nothing of it in the local backend's tree.
    assert!(e.get(&ObjectRef::new("", "ConfigMap", ns, "a")).is_none());
    assert!(!e.backend.root().join(ns).exists());
    let status = Status::from_value(e.get(&ks).unwrap().status());
    let ids: Vec<&str> = status
        .inventory
        .as_ref()
        .unwrap()
        .entries
        .iter()
        .map(|x| x.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [format!("{ns}_a__ConfigMap"), format!("{ns}_b__ConfigMap")]
    );

    // A commit that deletes a manifest prunes it on the cluster.
    repo.remove("apps/b.yaml");
    let head = repo.commit("drop b");
    e.rt.request_reconcile(&FluxKind::GitRepository.ref_to("fleet", "fleet"));
    eventually(
        "b pruned on the cluster",
        120,
        || {
            let r = e.ready(&ks)?;
            (r.message.contains(&head) && data_v(kc, ns, "b").is_none()).then_some(())
        },
        diag,
    );
    assert!(e
        .everything_said(&ks)
        .contains(&format!("ConfigMap/{ns}/b deleted")));
    assert!(!e.everything_said(&ks).contains(&token_of(&kubeconfig)));

    // Deleting the Kustomization (prune: true) removes its objects from the cluster.
    e.delete(&ks);
    eventually(
        "a pruned on the cluster after the deletion",
        60,
        || data_v(kc, ns, "a").is_none().then_some(()),
        diag,
    );
}

#[test]
fn a_kubeconfig_with_a_restricted_service_account_token_applies_only_where_allowed() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    install_crds(kc);
    let (flux, apps, other) = ("t-rk-flux", "t-rk-apps", "t-rk-other");
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}---\n{}---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: remote-deployer\n  namespace: {apps}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: remote-deployer\n  namespace: {apps}\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list, watch, create, update, patch, delete]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: remote-deployer\n  namespace: {apps}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: remote-deployer\nsubjects:\n- kind: ServiceAccount\n  name: remote-deployer\n  namespace: {apps}\n",
            namespace(flux),
            namespace(apps),
            namespace(other),
        ),
    );
    // A token for the ServiceAccount (TokenRequest API), in a kubeconfig for the same server.
    let tmp = tempfile::tempdir().unwrap();
    let request = tmp.path().join("token-request.json");
    std::fs::write(
        &request,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#,
    )
    .unwrap();
    let resp: Value = serde_json::from_str(&kubectl(
        kc,
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{apps}/serviceaccounts/remote-deployer/token"),
            "-f",
            request.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let token = resp["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let remote = with_token(&std::fs::read_to_string(kc).unwrap(), &token);
    let repo = Repo::new(
        tmp.path(),
        &[("apps/cm.yaml", &config_map(apps, "allowed", "", "ok"))],
    );
    let label = "e2e.trueup.dev/test: remote-restricted";
    let secret =
        serde_json::to_string(&kubeconfig_secret(flux, "remote", "kubeconfig", &remote).0).unwrap();
    kubectl_apply(kc, &secret);
    kubectl_apply(
        kc,
        &format!(
            "{}---\n{}",
            git_repository(flux, "fleet", &repo.url(), label),
            kustomization(
                flux,
                "tenant",
                "fleet",
                "./apps",
                label,
                "  kubeConfig:\n    secretRef:\n      name: remote\n      key: kubeconfig\n"
            ),
        ),
    );
    let op = Operator::start(
        kc,
        tmp.path(),
        "remote-restricted",
        &[
            "--watch-label-selector",
            "e2e.trueup.dev/test=remote-restricted",
        ],
    );
    wait_for("the Kustomization Ready", 120, &[&op], || {
        is_ready(kc, KS, flux, "tenant").then_some(())
    });
    let cm = get(kc, "configmap", apps, "allowed").expect("applied with the token");
    assert_eq!(cm["data"]["v"], "ok");
    assert!(managers(&cm).contains(&"trueup".to_string()), "{cm}");

    // A manifest for a namespace the token may not touch: refused, naming the object.
    repo.write("apps/other.yaml", &config_map(other, "refused", "", "no"));
    let head = repo.commit("into another namespace");
    requested_at(kc, GR, flux, "fleet", "1");
    let message = wait_for("the refusal in Ready", 120, &[&op], || {
        let ks = get(kc, KS, flux, "tenant")?;
        let r = ready(&ks)?;
        let m = r["message"].as_str().unwrap_or("").to_string();
        (r["status"] == "False" && m.contains("forbidden")).then_some(m)
    });
    eprintln!("refusal: {message}");
    assert!(
        !message.contains("Status {")
            && message.contains(&format!("ConfigMap/{other}/refused"))
            && message.contains(&format!("system:serviceaccount:{apps}:remote-deployer")),
        "{message}"
    );
    assert_eq!(data_v(kc, other, "refused"), None);
    let ks = get(kc, KS, flux, "tenant").unwrap();
    assert_eq!(
        ks["status"]["lastAttemptedRevision"],
        format!("main@sha1:{head}")
    );
    let events = kubectl(kc, &["get", "events", "-n", flux, "-o", "json"]);
    assert!(events.contains("forbidden"), "{events}");
    for text in [&events, &ks["status"].to_string(), &op.log()] {
        assert!(!text.contains(&token), "the token leaked");
    }

    // Back within its rights, then deleted: the objects go from the cluster with the token.
    repo.remove("apps/other.yaml");
    repo.commit("back home");
    requested_at(kc, GR, flux, "fleet", "2");
    wait_for("Ready again", 120, &[&op], || {
        is_ready(kc, KS, flux, "tenant").then_some(())
    });
    kubectl(
        kc,
        &[
            "delete",
            KS,
            "tenant",
            "-n",
            flux,
            "--wait=true",
            "--timeout=90s",
        ],
    );
    assert_eq!(data_v(kc, apps, "allowed"), None, "{}", op.log());
}

#[test]
fn a_local_helm_release_with_a_kubeconfig_installs_on_the_cluster() {
    let Some(server) = apiserver::server() else {
        return;
    };
    let kc = server.kubeconfig.as_path();
    let kubeconfig = std::fs::read_to_string(kc).unwrap();
    let ns = "t-remote-helm";
    kubectl_apply(kc, &namespace(ns));
    let chart = support::package_chart(
        "remote",
        "0.1.0",
        &[(
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  v: {{ .Values.v | quote }}\n",
        )],
    );
    let charts = support::HelmRepo::serve(vec![("remote".into(), "0.1.0".into(), chart)]);
    let tmp = tempfile::tempdir().unwrap();
    let mut objects = yaml_objects(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, namespace: {ns}}}\nspec: {{interval: 5m, url: '{}'}}\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  interval: 10m\n  values: {{v: remote}}\n  kubeConfig: {{secretRef: {{name: remote-cluster, key: value.yaml}}}}\n  chart: {{spec: {{chart: remote, sourceRef: {{kind: HelmRepository, name: charts}}}}}}\n",
        charts.url
    ));
    objects.push(kubeconfig_secret(
        ns,
        "remote-cluster",
        "value.yaml",
        &kubeconfig,
    ));
    let e = Embedded::start(tmp.path(), &objects);
    let hr = FluxKind::HelmRelease.ref_to(ns, "web");
    let diag = || format!("{:?}\n{}", e.ready(&hr), e.everything_said(&hr));
    eventually(
        "the HelmRelease Ready",
        120,
        || e.ready(&hr).filter(|c| c.status == ConditionStatus::True),
        diag,
    );
    // The objects and the release record are on the cluster, not in the local tree.
    assert_eq!(data_v(kc, ns, "web-cm").as_deref(), Some("remote"));
    let record = get(kc, "secret", ns, "sh.helm.release.v1.web.v1").expect("release record");
    assert_eq!(record["type"], "helm.sh/release.v1");
    assert!(e
        .get(&ObjectRef::new("", "ConfigMap", ns, "web-cm"))
        .is_none());
    assert!(e
        .get(&ObjectRef::new(
            "",
            "Secret",
            ns,
            "sh.helm.release.v1.web.v1"
        ))
        .is_none());
    // The HelmChart (a source) stays with the HelmRelease.
    assert!(e
        .get(&FluxKind::HelmChart.ref_to(ns, &format!("{ns}-web")))
        .is_some());

    // The real helm CLI sees the release deployed.
    let helm = std::env::var_os("TRUEUP_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/trueup-tools/helm/helm")
        });
    if helm.exists() {
        let out = Command::new(&helm)
            .arg("--kubeconfig")
            .arg(kc)
            .args(["list", "-n", ns, "-o", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list[0]["name"], "web", "{list}");
        assert_eq!(list[0]["status"], "deployed", "{list}");
        assert_eq!(list[0]["chart"], "remote-0.1.0", "{list}");
    } else {
        eprintln!("SKIP helm list: no helm binary at {}", helm.display());
    }
    assert!(!e.everything_said(&hr).contains(&token_of(&kubeconfig)));

    // Deleting the HelmRelease uninstalls the release on the cluster.
    e.delete(&hr);
    eventually(
        "the release uninstalled on the cluster",
        60,
        || {
            (data_v(kc, ns, "web-cm").is_none()
                && get(kc, "secret", ns, "sh.helm.release.v1.web.v1").is_none())
            .then_some(())
        },
        diag,
    );
}
