//! End to end: a Flux fleet in a real Git repository served by `git daemon`, reconciled by the
//! runtime onto the local backend; the example operator killed with SIGKILL mid-reconcile and
//! restarted.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use trueup::core::api::FluxKind;
use trueup::core::runtime::{CancellationToken, Runtime};
use trueup::core::status::{Status, READY};
use trueup::core::storage::ArtifactStore;
use trueup::core::traits::{ApplyOptions, Backend};
use trueup::core::ObjectRef;
use trueup::local::{LocalBackend, LocalOptions};

async fn bootstrap(backend: &LocalBackend, url: &str, branch: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: flux-system}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: flux-system, namespace: flux-system}}\nspec:\n  interval: 1m\n  url: {url}\n  ref: {{branch: {branch}}}\n---\n\
         apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: flux-system, namespace: flux-system}}\nspec:\n  interval: 10m\n  path: ./clusters/production\n  prune: true\n  sourceRef: {{kind: GitRepository, name: flux-system}}\n"
    );
    apply_yaml(backend, &text).await;
}

/// A local cluster under `root/cluster`; durable writes are not what these tests check.
fn local_cluster(root: &Path) -> LocalBackend {
    LocalBackend::open_with(
        root.join("cluster"),
        LocalOptions {
            durable: false,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Applies every object of a multi-document YAML text.
async fn apply_yaml(backend: &LocalBackend, text: &str) {
    for o in trueup::core::yaml::parse_objects(text, "test objects").unwrap() {
        backend.apply(&o, &ApplyOptions::default()).await.unwrap();
    }
}

fn runtime(backend: &LocalBackend) -> Runtime {
    let store = ArtifactStore::new(backend.state_dir().join("artifacts")).unwrap();
    trueup::presets::gitops(Arc::new(backend.clone()), store).build()
}

fn deployment() -> ObjectRef {
    ObjectRef::new("apps", "Deployment", "apps", "podinfo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_from_git_daemon_reconciles_prunes_and_skips_unchanged_revisions() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let daemon = GitDaemon::start(&repo.base);
    let backend = local_cluster(tmp.path());
    bootstrap(&backend, &daemon.url("fleet.git"), "main").await;
    let rt = runtime(&backend);

    let snap = rt
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    // GitRepository, three Kustomizations and the seed's Terraform `vpc`.
    assert_eq!(snap.len(), 5, "{snap:?}");
    assert!(snap.iter().all(|s| s.is_ready()), "{snap:#?}");
    let head = git(&repo.work, &["rev-parse", "HEAD"]);
    let apps = Status::from_value(
        backend
            .get(&FluxKind::Kustomization.ref_to("flux-system", "apps"))
            .await
            .unwrap()
            .unwrap()
            .status(),
    );
    assert_eq!(apps.last_applied_revision, format!("main@sha1:{head}"));
    assert_eq!(
        apps.condition(READY).unwrap().message,
        format!("Applied revision: main@sha1:{head}")
    );
    let inventory: Vec<&str> = apps
        .inventory
        .as_ref()
        .unwrap()
        .entries
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert!(
        inventory.contains(&"apps_podinfo_apps_Deployment"),
        "{inventory:?}"
    );

    // The overlay, the generator merge and the substitutions all reached the applied object.
    let d = backend
        .get(&deployment())
        .await
        .unwrap()
        .expect("deployment applied");
    assert_eq!(d.0["spec"]["replicas"], 3);
    let c = &d.0["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/stefanprodan/podinfo:6.7.1");
    assert_eq!(c["env"][0]["value"], "production-eks");
    assert_eq!(c["env"][1]["value"], "us-east-1");
    let cm_name = c["envFrom"][0]["configMapRef"]["name"].as_str().unwrap();
    assert!(cm_name.starts_with("podinfo-config-"));
    assert!(backend
        .get(&ObjectRef::new("", "ConfigMap", "apps", cm_name))
        .await
        .unwrap()
        .is_some());

    // The seed's Terraform object ran the real CLI and wrote its outputs.
    let outputs = backend
        .get(&ObjectRef::new("", "Secret", "flux-system", "vpc-outputs"))
        .await
        .unwrap();
    let outputs = trueup::core::reconcile::object_data(&outputs.expect("outputs secret")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&outputs["vpc_name"]),
        "production-eks-vpc"
    );

    // An unchanged remote: a reconcile of the source stores no new artifact and sends no event.
    let events_before = backend.events(None).unwrap().len();
    let git_ref = FluxKind::GitRepository.ref_to("flux-system", "flux-system");
    rt.request_reconcile(&git_ref);
    rt.run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    let new_artifacts = backend.events(None).unwrap()[events_before..]
        .iter()
        .filter(|e| e.reason == "NewArtifact")
        .count();
    assert_eq!(new_artifacts, 0);

    // A commit that deletes a manifest prunes the object it held.
    let overlay = repo.work.join("apps/overlays/production");
    std::fs::remove_file(overlay.join("hpa.yaml")).unwrap();
    let k = std::fs::read_to_string(overlay.join("kustomization.yaml"))
        .unwrap()
        .replace("  - hpa.yaml\n", "");
    std::fs::write(overlay.join("kustomization.yaml"), k).unwrap();
    let new_head = repo.commit("Drop the HPA");
    rt.request_reconcile(&git_ref);
    let snap = rt
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(snap.iter().all(|s| s.is_ready()), "{snap:#?}");
    let hpa = ObjectRef::new("autoscaling", "HorizontalPodAutoscaler", "apps", "podinfo");
    assert!(
        backend.get(&hpa).await.unwrap().is_none(),
        "the HPA was pruned"
    );
    assert!(!backend.object_path(&hpa).unwrap().exists());
    let pruned = backend.events(None).unwrap().into_iter().any(|e| {
        e.message
            .contains("HorizontalPodAutoscaler/apps/podinfo deleted")
    });
    assert!(pruned, "a prune event names the object");
    let apps = Status::from_value(
        backend
            .get(&FluxKind::Kustomization.ref_to("flux-system", "apps"))
            .await
            .unwrap()
            .unwrap()
            .status(),
    );
    assert_eq!(apps.last_applied_revision, format!("main@sha1:{new_head}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_branch_is_named_in_the_condition_and_dependents_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let daemon = GitDaemon::start(&repo.base);
    let backend = local_cluster(tmp.path());
    bootstrap(&backend, &daemon.url("fleet.git"), "no-such-branch").await;
    let snap = runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(snap.iter().all(|s| !s.is_ready()));
    let src = Status::from_value(
        backend
            .get(&FluxKind::GitRepository.ref_to("flux-system", "flux-system"))
            .await
            .unwrap()
            .unwrap()
            .status(),
    );
    let ready = src.condition(READY).unwrap();
    assert_eq!(ready.reason, "GitOperationFailed");
    assert!(
        ready.message.contains("no-such-branch"),
        "{}",
        ready.message
    );
    let ks = Status::from_value(
        backend
            .get(&FluxKind::Kustomization.ref_to("flux-system", "flux-system"))
            .await
            .unwrap()
            .unwrap()
            .status(),
    );
    assert_eq!(ks.condition(READY).unwrap().reason, "ArtifactFailed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_name_is_reported_as_not_enforced_on_the_local_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let daemon = GitDaemon::start(&repo.base);
    let backend = local_cluster(tmp.path());
    bootstrap(&backend, &daemon.url("fleet.git"), "main").await;
    // The same root Kustomization, asking to apply as a ServiceAccount.
    let r = FluxKind::Kustomization.ref_to("flux-system", "flux-system");
    let mut ks = backend.get(&r).await.unwrap().unwrap();
    ks.0["spec"]
        .as_object_mut()
        .unwrap()
        .insert("serviceAccountName".into(), "deployer".into());
    backend.apply(&ks, &ApplyOptions::default()).await.unwrap();
    runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    // The local backend has no identities: it applies, and says that the account was not
    // enforced.
    let st = Status::from_value(backend.get(&r).await.unwrap().unwrap().status());
    let ready = st.condition(READY).unwrap();
    assert_eq!(
        ready.status,
        trueup::core::status::ConditionStatus::True,
        "{}",
        ready.message
    );
    assert!(
        ready
            .message
            .contains("spec.serviceAccountName 'deployer' not enforced"),
        "{}",
        ready.message
    );
    assert!(backend.get(&deployment()).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let backend = local_cluster(tmp.path());
    bootstrap(
        &backend,
        &format!("git://127.0.0.1:{port}/fleet.git"),
        "main",
    )
    .await;
    let started = std::time::Instant::now();
    runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    let src = Status::from_value(
        backend
            .get(&FluxKind::GitRepository.ref_to("flux-system", "flux-system"))
            .await
            .unwrap()
            .unwrap()
            .status(),
    );
    let msg = &src.condition(READY).unwrap().message;
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

/// The example operator is killed with SIGKILL at random points while it reconciles new
/// commits; every file it leaves is whole, and a restart converges to exactly what an
/// uninterrupted run produces, file for file.
#[test]
fn the_operator_converges_after_kill_9_at_any_point() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let url = format!("file://{}", repo.bare.display());
    let bin = trueup_bin();
    let run = |dir: &Path| {
        std::process::Command::new(&bin)
            .args([
                "operator",
                "--once",
                "--dir",
                dir.to_str().unwrap(),
                "--bootstrap",
                &url,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // How long a full first reconcile takes here, to aim the kills inside it.
    let t = std::time::Instant::now();
    let out = run(&tmp.path().join("warmup")).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = t.elapsed().as_millis() as u64;

    let crashed = tmp.path().join("crashed");
    let mut kills = 0;
    for round in 0..10u32 {
        // Every round brings new work: a changed value, and an object that comes and goes.
        let vars = repo
            .work
            .join("infrastructure/production/cluster-vars.yaml");
        let text = std::fs::read_to_string(&vars).unwrap();
        std::fs::write(
            &vars,
            text.replace(
                &format!("replicas: \"{}\"", round + 3),
                &format!("replicas: \"{}\"", round + 4),
            ),
        )
        .unwrap();
        let extra = repo.work.join("infrastructure/production/extra.yaml");
        let k = repo
            .work
            .join("infrastructure/production/kustomization.yaml");
        let ktext = std::fs::read_to_string(&k).unwrap();
        if round % 2 == 0 {
            std::fs::write(&extra, format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{round}\n  namespace: flux-system\n")).unwrap();
            std::fs::write(&k, ktext + "  - extra.yaml\n").unwrap();
        } else {
            std::fs::remove_file(&extra).unwrap();
            std::fs::write(&k, ktext.replace("  - extra.yaml\n", "")).unwrap();
        }
        repo.commit(&format!("round {round}"));

        let mut child = run(&crashed);
        std::thread::sleep(Duration::from_millis(fastrand::u64(full / 10..=full)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        for (path, text) in manifest_tree(&crashed) {
            trueup::core::yaml::parse_objects(&text, &path)
                .unwrap_or_else(|e| panic!("round {round}: half-written file: {e}"));
        }
    }
    assert!(
        kills >= 3,
        "the operator was killed mid-run only {kills} times out of 10"
    );

    let out = run(&crashed).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "restart after kills: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = tmp.path().join("reference");
    let out = run(&reference).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Terraform's state and saved plans carry a random lineage and timestamps: they are
    // compared by what they hold, the rest byte for byte.
    let volatile = |p: &String| p.contains("_Secret/tfstate-") || p.contains("_Secret/tfplan-");
    let (mut got, mut expected) = (manifest_tree(&crashed), manifest_tree(&reference));
    let state = got
        .get("flux-system/_Secret/tfstate-default-vpc.yaml")
        .cloned()
        .expect("state secret");
    let state = trueup::core::yaml::parse_objects(&state, "tfstate")
        .unwrap()
        .remove(0);
    let state = trueup::core::reconcile::object_data(&state).unwrap();
    let json = flate2_or_plain(&state["tfstate"]);
    assert!(
        json.contains("\"terraform_data\"") && json.contains("production-eks-vpc"),
        "{json}"
    );
    got.retain(|p, _| !volatile(p));
    expected.retain(|p, _| !volatile(p));
    let names =
        |t: &std::collections::BTreeMap<String, String>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&expected));
    for (path, text) in &expected {
        assert_eq!(&got[path], text, "{path}");
    }
}

/// Every object file of a local cluster, relative path to content (state folder excluded).
fn manifest_tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == ".trueup" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                );
            }
        }
    }
    walk(root, root, &mut out);
    out
}

#[test]
fn the_cli_exits_by_readiness_and_get_prints_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let bin = trueup_bin();
    let dir = tmp.path().join("cluster");
    let url = format!("file://{}", repo.bare.display());
    let out = std::process::Command::new(&bin)
        .args([
            "operator",
            "--once",
            "--dir",
            dir.to_str().unwrap(),
            "--bootstrap",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = std::process::Command::new(&bin)
        .args(["get", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8(get.stdout).unwrap();
    let head = git(&repo.work, &["rev-parse", "HEAD"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAMESPACE") && header.contains("REVISION") && header.contains("READY"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains("kustomization/apps"))
        .expect("apps row");
    assert!(
        row.contains(&format!("main@sha1:{head}"))
            && row.contains("True")
            && row.contains("Applied revision"),
        "{row}"
    );

    // A branch that does not exist: exit 1, and the table says why.
    let dir2 = tmp.path().join("cluster2");
    let out = std::process::Command::new(&bin)
        .args([
            "operator",
            "--once",
            "--dir",
            dir2.to_str().unwrap(),
            "--bootstrap",
            &url,
            "--branch",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout
        .lines()
        .find(|l| l.contains("gitrepository/flux-system"))
        .expect("source row");
    assert!(row.contains("False") && row.contains("nope"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn includes_and_ignore_rules_shape_the_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    // A second repository whose `shared/` folder the first one includes.
    let lib = tmp.path().join("lib");
    std::fs::create_dir_all(lib.join("shared")).unwrap();
    std::fs::write(lib.join("shared/policy.yaml"), "kind: Policy\n").unwrap();
    std::fs::write(lib.join("shared/notes.md"), "not for the cluster\n").unwrap();
    git(&lib, &["init", "-q"]);
    git(&lib, &["add", "-A"]);
    git(&lib, &["commit", "-q", "-m", "lib"]);
    std::fs::write(repo.work.join(".sourceignore"), "*.md\n").unwrap();
    std::fs::write(repo.work.join("README.md"), "docs\n").unwrap();
    std::fs::create_dir_all(repo.work.join("scratch")).unwrap();
    std::fs::write(repo.work.join("scratch/tmp.yaml"), "x: 1\n").unwrap();
    repo.commit("docs and scratch");

    let backend = local_cluster(tmp.path());
    let text = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: lib, namespace: flux-system}}\nspec:\n  interval: 1m\n  url: file://{lib}\n  ref: {{branch: main}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: flux-system}}\nspec:\n  interval: 1m\n  url: file://{fleet}\n  ref: {{branch: main}}\n  ignore: |\n    /scratch/\n  include:\n    - repository: {{name: lib}}\n      fromPath: shared\n      toPath: vendor/lib\n",
        lib = lib.display(),
        fleet = repo.bare.display()
    );
    apply_yaml(&backend, &text).await;
    let snap = runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(snap.iter().all(|s| s.is_ready()), "{snap:#?}");
    let fleet = backend
        .get(&FluxKind::GitRepository.ref_to("flux-system", "fleet"))
        .await
        .unwrap()
        .unwrap();
    let artifact = Status::from_value(fleet.status()).artifact.unwrap();
    let store = ArtifactStore::new(backend.state_dir().join("artifacts")).unwrap();
    let dir = store.unpacked(&artifact).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("vendor/lib/policy.yaml")).unwrap(),
        "kind: Policy\n"
    );
    // Ignore rules apply to the whole tree after includes are copied in, as in Flux.
    assert!(
        !dir.join("vendor/lib/notes.md").exists(),
        "the fleet's .sourceignore covers included files"
    );
    assert!(
        !dir.join("README.md").exists(),
        ".sourceignore excludes *.md"
    );
    assert!(
        !dir.join("scratch").exists(),
        "spec.ignore excludes /scratch/"
    );
    assert!(dir.join("clusters/production/apps.yaml").exists());
}

/// The state Secret holds gzipped JSON (or plain JSON from older writers).
fn flate2_or_plain(bytes: &[u8]) -> String {
    use std::io::Read;
    let mut out = String::new();
    if flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .is_ok()
    {
        return out;
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// The seed article's Slack Provider and Alert: a failing Kustomization reaches the webhook (a
/// server on 127.0.0.1 standing in for Slack), a healthy one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_slack_alert_delivers_reconcile_failures() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then the body by Content-Length.
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = tx.send(String::from_utf8_lossy(&buf).to_string());
        }
    });

    let backend = local_cluster(tmp.path());
    let seed = include_str!("../crates/core/tests/seed/notifications.yaml");
    let extra = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: slack-webhook-url, namespace: flux-system}}\nstringData:\n  address: http://127.0.0.1:{port}/services/T000/B000/XXXX\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: flux-system}}\nspec:\n  interval: 1m\n  url: file://{}\n  ref: {{branch: main}}\n---\n\
         apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: broken, namespace: flux-system}}\nspec:\n  interval: 10m\n  path: ./no/such/path\n  prune: true\n  sourceRef: {{kind: GitRepository, name: fleet}}\n",
        repo.bare.display()
    );
    for o in trueup::core::yaml::parse_objects(seed, "seed")
        .unwrap()
        .into_iter()
        .chain(trueup::core::yaml::parse_objects(&extra, "extra").unwrap())
    {
        backend.apply(&o, &ApplyOptions::default()).await.unwrap();
    }
    let store = ArtifactStore::new(backend.state_dir().join("artifacts")).unwrap();
    let shared: Arc<dyn Backend> = Arc::new(backend.clone());
    let router = trueup::notifiers::AlertRouter::new(shared.clone());
    let rt = trueup::presets::gitops(shared, store)
        .notifier(router)
        .build();
    rt.run_until_settled(CancellationToken::new())
        .await
        .unwrap();

    let request = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the Slack webhook was called");
    assert!(
        request.starts_with("POST /services/T000/B000/XXXX "),
        "{request}"
    );
    let body: serde_json::Value =
        serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["channel"], "#deployments");
    let text = body.to_string();
    assert!(text.contains("kustomization/broken.flux-system"), "{text}");
    assert!(text.contains("no/such/path"), "{text}");
    assert!(
        text.contains("Flux reconciliation failure in production"),
        "the Alert's summary: {text}"
    );
    // The GitRepository's success (an info event) is not sent: the Alert asks for errors.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
}

/// The seed's Terraform object with `approvePlan: ""` on the local backend: the run stops at a
/// pending plan whose id the status names; approving that id applies exactly that plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_plans_wait_for_approval_by_id() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let backend = local_cluster(tmp.path());
    let tf = |approve: &str| {
        format!(
            "apiVersion: infra.contrib.fluxcd.io/v1alpha2\nkind: Terraform\nmetadata: {{name: vpc, namespace: flux-system}}\nspec:\n  interval: 15m\n  approvePlan: \"{approve}\"\n  path: ./terraform/vpc\n  sourceRef: {{kind: GitRepository, name: fleet, namespace: flux-system}}\n  vars:\n    - {{name: cluster_name, value: production-eks}}\n    - {{name: vpc_cidr, value: \"10.0.0.0/16\"}}\n"
        )
    };
    let git_repo = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: flux-system}}\nspec:\n  interval: 1m\n  url: file://{}\n  ref: {{branch: main}}\n",
        repo.bare.display()
    );
    for text in [git_repo, tf("")] {
        apply_yaml(&backend, &text).await;
    }
    let rt = runtime(&backend);
    rt.run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    let tf_ref = FluxKind::Terraform.ref_to("flux-system", "vpc");
    let st = Status::from_value(backend.get(&tf_ref).await.unwrap().unwrap().status());
    let pending = st.extra["plan"]["pending"]
        .as_str()
        .expect("a pending plan")
        .to_string();
    let head = git(&repo.work, &["rev-parse", "HEAD"]);
    assert!(
        pending.starts_with(&format!("plan-main-{}-", &head[..10])),
        "{pending}"
    );
    let ready = st.condition(READY).unwrap();
    assert!(
        ready
            .message
            .contains(&format!("set approvePlan: \"{pending}\"")),
        "{}",
        ready.message
    );
    assert!(
        st.extra["plan"].get("lastApplied").is_none(),
        "nothing applied before approval"
    );
    assert!(st.last_applied_revision.is_empty());

    apply_yaml(&backend, &tf(&pending)).await;
    let snap = rt
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    let st = Status::from_value(backend.get(&tf_ref).await.unwrap().unwrap().status());
    assert!(snap.iter().all(|s| s.is_ready()), "{:?}", st.conditions);
    assert_eq!(st.extra["plan"]["lastApplied"], pending.as_str());
    assert_eq!(st.last_applied_revision, format!("main@sha1:{head}"));
}

/// `flux push artifact` then an OCIRepository-backed Kustomization, against a real registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kustomization_from_an_oci_artifact_pushed_to_a_real_registry() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet");
    let client = trueup::sources::oci::OciClient::new(trueup::sources::oci::OciClientOptions {
        insecure: true,
        ..Default::default()
    })
    .unwrap();
    let url = format!("oci://{}/fleet/manifests:v1.0.0", registry.addr);
    let digest = client
        .push_artifact(
            &fleet,
            &url,
            "https://git.example/fleet",
            "main@sha1:0123456789abcdef0123456789abcdef01234567",
        )
        .await
        .unwrap();

    let backend = local_cluster(tmp.path());
    let text = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {{name: manifests, namespace: flux-system}}\nspec:\n  interval: 5m\n  url: oci://{}/fleet/manifests\n  insecure: true\n  ref: {{semver: \">=1.0.0\"}}\n---\n\
         apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: infrastructure, namespace: flux-system}}\nspec:\n  interval: 10m\n  path: ./infrastructure/production\n  prune: true\n  sourceRef: {{kind: OCIRepository, name: manifests}}\n",
        registry.addr
    );
    apply_yaml(&backend, &text).await;
    let snap = runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(snap.iter().all(|s| s.is_ready()), "{snap:#?}");
    let src = Status::from_value(
        backend
            .get(&FluxKind::OciRepository.ref_to("flux-system", "manifests"))
            .await
            .unwrap()
            .unwrap()
            .status(),
    );
    let artifact = src.artifact.unwrap();
    assert_eq!(artifact.revision, format!("v1.0.0@{digest}"));
    assert_eq!(
        artifact
            .metadata
            .get("org.opencontainers.image.revision")
            .map(String::as_str),
        Some("main@sha1:0123456789abcdef0123456789abcdef01234567")
    );
    assert!(backend
        .get(&ObjectRef::new("", "Namespace", "", "monitoring"))
        .await
        .unwrap()
        .is_some());
    assert!(backend
        .get(&ObjectRef::new(
            "",
            "ConfigMap",
            "flux-system",
            "cluster-vars"
        ))
        .await
        .unwrap()
        .is_some());
}

/// `trueup reconcile --with-source` from another process: the running operator notices the
/// annotation, fetches the new commit at once (not at its 1m interval) and echoes the request.
#[test]
fn reconcile_from_another_process_reaches_a_running_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let bin = trueup_bin();
    let dir = tmp.path().join("cluster");
    let url = format!("file://{}", repo.bare.display());
    let mut operator = std::process::Command::new(&bin)
        .args([
            "operator",
            "--dir",
            dir.to_str().unwrap(),
            "--bootstrap",
            &url,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let read = |name: &str, kind: FluxKind| {
        let b = LocalBackend::open(&dir).unwrap();
        rt.block_on(b.get(&kind.ref_to("flux-system", name)))
            .ok()
            .flatten()
            .map(|o| Status::from_value(o.status()))
    };
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("apps to be ready", &|| {
        read("apps", FluxKind::Kustomization).is_some_and(|s| s.is_ready())
    });

    std::fs::write(
        repo.work.join("infrastructure/production/extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: flux-system}\n",
    )
    .unwrap();
    let k = repo
        .work
        .join("infrastructure/production/kustomization.yaml");
    std::fs::write(
        &k,
        std::fs::read_to_string(&k).unwrap() + "  - extra.yaml\n",
    )
    .unwrap();
    let head = repo.commit("add extra");
    let out = std::process::Command::new(&bin)
        .args([
            "reconcile",
            "kustomization",
            "infrastructure",
            "--with-source",
            "--dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requested = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    wait_for("the new commit to be applied", &|| {
        read("infrastructure", FluxKind::Kustomization)
            .is_some_and(|s| s.last_applied_revision == format!("main@sha1:{head}"))
    });
    let src = read("flux-system", FluxKind::GitRepository).unwrap();
    assert_eq!(src.last_handled_reconcile_at, requested);
    operator.kill().unwrap();
    operator.wait().unwrap();
}

/// The seed article's HelmRepository + HelmRelease, as written (only the repository URL points
/// at a server on 127.0.0.1), applied by a Kustomization that substitutes
/// `${GRAFANA_ADMIN_PASSWORD}` from a Secret: the version range picks 58.x, and the release is
/// installed on the local backend with a Helm release record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_helm_release_installs_on_the_local_backend() {
    let templates: &[(&str, &str)] = &[
        ("values.yaml", "grafana:\n  adminPassword: admin\nprometheus:\n  prometheusSpec:\n    retention: 10d\n"),
        (
            "templates/grafana.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-grafana\n  namespace: {{ .Release.Namespace }}\nstringData:\n  admin-password: {{ .Values.grafana.adminPassword | quote }}\n",
        ),
        (
            "templates/prometheus.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-prometheus\n  namespace: {{ .Release.Namespace }}\ndata:\n  retention: {{ .Values.prometheus.prometheusSpec.retention | quote }}\n  storageClassName: {{ .Values.prometheus.prometheusSpec.storageSpec.volumeClaimTemplate.spec.storageClassName | quote }}\n  chart: {{ .Chart.Version | quote }}\n",
        ),
    ];
    let charts = ["57.2.0", "58.0.0", "58.3.1", "59.0.0"]
        .iter()
        .map(|v| {
            (
                "kube-prometheus-stack".to_string(),
                v.to_string(),
                package_chart("kube-prometheus-stack", v, templates),
            )
        })
        .collect();
    let helm = HelmRepo::serve(charts);

    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let seed = include_str!("../crates/core/tests/seed/monitoring-prometheus.yaml").replace(
        "https://prometheus-community.github.io/helm-charts",
        &helm.url,
    );
    std::fs::create_dir_all(repo.work.join("monitoring")).unwrap();
    std::fs::write(repo.work.join("monitoring/prometheus.yaml"), seed).unwrap();
    std::fs::write(
        repo.work.join("monitoring/namespace.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: monitoring}\n",
    )
    .unwrap();
    repo.commit("monitoring");

    let backend = local_cluster(tmp.path());
    let text = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: grafana-creds, namespace: flux-system}}\nstringData:\n  GRAFANA_ADMIN_PASSWORD: s3cr3t-from-secret\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: flux-system}}\nspec:\n  interval: 1m\n  url: file://{}\n  ref: {{branch: main}}\n---\n\
         apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: monitoring, namespace: flux-system}}\nspec:\n  interval: 10m\n  path: ./monitoring\n  prune: true\n  sourceRef: {{kind: GitRepository, name: fleet}}\n  postBuild:\n    substituteFrom:\n      - {{kind: Secret, name: grafana-creds}}\n",
        repo.bare.display()
    );
    apply_yaml(&backend, &text).await;
    let snap = runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    let hr_ref = FluxKind::HelmRelease.ref_to("monitoring", "kube-prometheus-stack");
    let hr = Status::from_value(
        backend
            .get(&hr_ref)
            .await
            .unwrap()
            .expect("HelmRelease applied by the Kustomization")
            .status(),
    );
    assert!(snap.iter().all(|s| s.is_ready()), "{:#?}", hr.conditions);

    let cm = backend
        .get(&ObjectRef::new(
            "",
            "ConfigMap",
            "monitoring",
            "kube-prometheus-stack-prometheus",
        ))
        .await
        .unwrap()
        .expect("chart objects installed");
    assert_eq!(
        cm.0["data"]["chart"], "58.3.1",
        "the highest version inside >=58.0.0 <59.0.0"
    );
    assert_eq!(
        cm.0["data"]["retention"], "15d",
        "inline values over the chart's defaults"
    );
    assert_eq!(cm.0["data"]["storageClassName"], "gp3");
    let secret = backend
        .get(&ObjectRef::new(
            "",
            "Secret",
            "monitoring",
            "kube-prometheus-stack-grafana",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        secret.0["stringData"]["admin-password"], "s3cr3t-from-secret",
        "substituted from the Secret by the parent Kustomization"
    );
    let record = backend
        .get(&ObjectRef::new(
            "",
            "Secret",
            "monitoring",
            "sh.helm.release.v1.kube-prometheus-stack.v1",
        ))
        .await
        .unwrap()
        .expect("Helm release record");
    assert_eq!(record.0["type"], "helm.sh/release.v1");
    assert_eq!(record.label("status"), Some("deployed"));
    // The password reached the cluster but no event or status message.
    let events = serde_json::to_string(&backend.events(None).unwrap()).unwrap();
    assert!(!events.contains("s3cr3t-from-secret"));
    assert!(!serde_json::to_string(&hr.conditions)
        .unwrap()
        .contains("s3cr3t-from-secret"));
}

/// A chart as `helm package` lays it out, rendering one ConfigMap from its values.
fn podinfo_chart(version: &str) -> Vec<u8> {
    package_chart(
        "podinfo",
        version,
        &[
            ("values.yaml", "replicas: 1\ncolor: blue\ntier: dev\n"),
            ("values-prod.yaml", "color: green\ntier: prod\n"),
            (
                "templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-podinfo\n  namespace: {{ .Release.Namespace }}\ndata:\n  chart: {{ .Chart.Version | quote }}\n  replicas: {{ .Values.replicas | quote }}\n  color: {{ .Values.color | quote }}\n  tier: {{ .Values.tier | quote }}\n",
            ),
        ],
    )
}

async fn get_status(backend: &LocalBackend, r: &ObjectRef) -> Status {
    Status::from_value(
        backend
            .get(r)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{r} exists"))
            .status(),
    )
}

async fn configmap_data(backend: &LocalBackend, ns: &str, name: &str) -> serde_json::Value {
    backend
        .get(&ObjectRef::new("", "ConfigMap", ns, name))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("ConfigMap {ns}/{name} installed"))
        .0["data"]
        .clone()
}

/// Charts pushed to a real registry, installed (a) through a HelmRepository `type: oci` and the
/// HelmChart the HelmRelease creates, with values files merged, and (b) through an
/// OCIRepository selecting the chart layer and a HelmRelease `chartRef`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_releases_install_charts_from_a_real_registry() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr.clone();
    for v in ["1.0.0", "1.1.0+build.1", "2.0.0"] {
        push_chart(&addr, "charts/podinfo", v, podinfo_chart(v), None).await;
    }
    let digest_100 = push_chart(
        &addr,
        "charts/podinfo",
        "1.0.0",
        podinfo_chart("1.0.0"),
        None,
    )
    .await;

    let tmp = tempfile::tempdir().unwrap();
    let backend = local_cluster(tmp.path());
    let text = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, namespace: flux-system}}\nspec:\n  type: oci\n  interval: 5m\n  url: oci://{addr}/charts\n  insecure: true\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: web, namespace: apps}}\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: podinfo\n      version: 1.x\n      sourceRef: {{kind: HelmRepository, name: charts, namespace: flux-system}}\n      valuesFiles: [values.yaml, values-prod.yaml]\n  values:\n    replicas: 3\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {{name: podinfo-chart, namespace: flux-system}}\nspec:\n  interval: 5m\n  url: oci://{addr}/charts/podinfo\n  insecure: true\n  ref: {{tag: 1.0.0}}\n  layerSelector:\n    mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip\n    operation: copy\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: api, namespace: apps}}\nspec:\n  interval: 10m\n  chartRef: {{kind: OCIRepository, name: podinfo-chart, namespace: flux-system}}\n"
    );
    apply_yaml(&backend, &text).await;
    let snap = runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(snap.iter().all(|s| s.is_ready()), "{snap:#?}");

    // (a) The HelmChart helm-controller would create, owned by the release by its labels.
    let chart_ref = FluxKind::HelmChart.ref_to("flux-system", "apps-web");
    let chart = backend
        .get(&chart_ref)
        .await
        .unwrap()
        .expect("HelmChart created");
    assert_eq!(chart.label("helm.toolkit.fluxcd.io/name"), Some("web"));
    assert_eq!(
        chart.label("helm.toolkit.fluxcd.io/namespace"),
        Some("apps")
    );
    let cst = get_status(&backend, &chart_ref).await;
    // 1.1.0+build.1 is the highest 1.x (stored under the tag 1.1.0_build.1); values files
    // replace the build metadata with the HelmChart's generation, as in Flux.
    assert_eq!(cst.artifact.as_ref().unwrap().revision, "1.1.0+1");
    assert_eq!(cst.extra["observedChartName"], "podinfo");
    let ready = cst.condition(READY).unwrap();
    assert_eq!(ready.reason, "ChartPackageSucceeded");
    assert!(
        ready
            .message
            .contains("merged values files [values.yaml values-prod.yaml]"),
        "{}",
        ready.message
    );
    let data = configmap_data(&backend, "apps", "web-podinfo").await;
    assert_eq!(data["chart"], "1.1.0+1");
    assert_eq!(data["color"], "green", "values-prod.yaml over values.yaml");
    assert_eq!(data["tier"], "prod");
    assert_eq!(
        data["replicas"], "3",
        "the release's values over the chart's"
    );
    let hr = get_status(&backend, &FluxKind::HelmRelease.ref_to("apps", "web")).await;
    assert_eq!(hr.extra["helmChart"], "flux-system/apps-web");

    // (b) chartRef to the OCIRepository: the chart layer copied, its version tagged with the
    // manifest digest as helm-controller does.
    let hex = digest_100.strip_prefix("sha256:").unwrap();
    let data = configmap_data(&backend, "apps", "api-podinfo").await;
    assert_eq!(data["chart"], format!("1.0.0+{}", &hex[..12]));
    assert_eq!(data["color"], "blue");
    let hr = get_status(&backend, &FluxKind::HelmRelease.ref_to("apps", "api")).await;
    assert_eq!(hr.last_applied_revision, format!("1.0.0+{}", &hex[..12]));
    let record = backend
        .get(&ObjectRef::new(
            "",
            "Secret",
            "apps",
            "sh.helm.release.v1.api.v1",
        ))
        .await
        .unwrap()
        .expect("Helm release record");
    assert_eq!(record.label("status"), Some("deployed"));
}

/// A missing version, a bad reference and wrong registry credentials each leave a Ready=False
/// condition that names the problem on the source and on the release; good credentials
/// (`username`/`password` Secret keys) install; the password appears in no status or event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_chart_failures_are_named_and_secrets_stay_secret() {
    const USER: &str = "chart-bot";
    const PASSWORD: &str = "Regi5try-pa55word";
    const WRONG: &str = "N0t-the-pa55word";
    let Some(registry) = Registry::start_with_htpasswd(USER, PASSWORD) else {
        return;
    };
    let addr = registry.addr.clone();
    push_chart(
        &addr,
        "charts/podinfo",
        "1.0.0",
        podinfo_chart("1.0.0"),
        Some((USER, PASSWORD)),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let backend = local_cluster(tmp.path());
    let text = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: good-creds, namespace: flux-system}}\nstringData: {{username: {USER}, password: {PASSWORD}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: wrong-creds, namespace: flux-system}}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{{\"auths\":{{\"{addr}\":{{\"username\":\"{USER}\",\"password\":\"{WRONG}\"}}}}}}'\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: good, namespace: flux-system}}\nspec: {{type: oci, interval: 5m, url: 'oci://{addr}/charts', insecure: true, secretRef: {{name: good-creds}}}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: wrong, namespace: flux-system}}\nspec: {{type: oci, interval: 5m, url: 'oci://{addr}/charts', insecure: true, secretRef: {{name: wrong-creds}}}}\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: ok, namespace: apps}}\nspec: {{interval: 10m, chart: {{spec: {{chart: podinfo, version: '1.0.0', sourceRef: {{kind: HelmRepository, name: good, namespace: flux-system}}}}}}}}\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: missing-tag, namespace: apps}}\nspec: {{interval: 10m, chart: {{spec: {{chart: podinfo, version: '9.9.9', sourceRef: {{kind: HelmRepository, name: good, namespace: flux-system}}}}}}}}\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: denied, namespace: apps}}\nspec: {{interval: 10m, chart: {{spec: {{chart: podinfo, sourceRef: {{kind: HelmRepository, name: wrong, namespace: flux-system}}}}}}}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {{name: bad-ref, namespace: flux-system}}\nspec: {{interval: 5m, url: 'oci://{addr}/charts/Pod Info', insecure: true, ref: {{tag: 1.0.0}}, secretRef: {{name: wrong-creds}}}}\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: bad-ref, namespace: apps}}\nspec: {{interval: 10m, chartRef: {{kind: OCIRepository, name: bad-ref, namespace: flux-system}}}}\n"
    );
    apply_yaml(&backend, &text).await;
    runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();

    let ok = get_status(&backend, &FluxKind::HelmRelease.ref_to("apps", "ok")).await;
    assert!(ok.is_ready(), "{:?}", ok.conditions);
    assert_eq!(
        configmap_data(&backend, "apps", "ok-podinfo").await["chart"],
        "1.0.0"
    );

    let not_ready = |st: &Status| {
        let c = st.condition(READY).cloned().expect("a Ready condition");
        assert_eq!(
            c.status,
            trueup::core::status::ConditionStatus::False,
            "{c:?}"
        );
        c
    };
    // The missing version: the HelmChart stalls naming it; the release waits on it.
    let chart = get_status(
        &backend,
        &FluxKind::HelmChart.ref_to("flux-system", "apps-missing-tag"),
    )
    .await;
    let c = not_ready(&chart);
    assert_eq!(c.reason, "InvalidChartReference");
    assert!(
        c.message.contains("9.9.9") && c.message.contains("not found"),
        "{}",
        c.message
    );
    let hr = get_status(
        &backend,
        &FluxKind::HelmRelease.ref_to("apps", "missing-tag"),
    )
    .await;
    let c = not_ready(&hr);
    assert_eq!(c.reason, "SourceNotReady");
    assert!(
        c.message
            .contains("HelmChart 'flux-system/apps-missing-tag' is not ready")
            && c.message.contains("9.9.9"),
        "{}",
        c.message
    );
    // Wrong credentials: the registry's 401, named as an authentication failure.
    let chart = get_status(
        &backend,
        &FluxKind::HelmChart.ref_to("flux-system", "apps-denied"),
    )
    .await;
    let c = not_ready(&chart);
    assert_eq!(c.reason, "AuthenticationFailed");
    assert!(c.message.contains("401"), "{}", c.message);
    let hr = get_status(&backend, &FluxKind::HelmRelease.ref_to("apps", "denied")).await;
    let c = not_ready(&hr);
    assert!(
        c.message.contains("401") && c.message.contains("apps-denied"),
        "{}",
        c.message
    );
    // A bad reference: the OCIRepository names the URL, the release waits on it.
    let repo = get_status(
        &backend,
        &FluxKind::OciRepository.ref_to("flux-system", "bad-ref"),
    )
    .await;
    let c = not_ready(&repo);
    assert!(c.message.contains("Pod Info"), "{}", c.message);
    let hr = get_status(&backend, &FluxKind::HelmRelease.ref_to("apps", "bad-ref")).await;
    let c = not_ready(&hr);
    assert!(
        c.message
            .contains("OCIRepository 'flux-system/bad-ref' is not ready")
            && c.message.contains("Pod Info"),
        "{}",
        c.message
    );

    // No password in any status, condition or event.
    let mut everything = serde_json::to_string(&backend.events(None).unwrap()).unwrap();
    for kind in [
        FluxKind::HelmChart,
        FluxKind::HelmRelease,
        FluxKind::OciRepository,
        FluxKind::HelmRepository,
    ] {
        for o in backend
            .list(&trueup::core::traits::ListParams::kind(
                kind.group(),
                kind.kind(),
            ))
            .await
            .unwrap()
        {
            everything.push_str(&serde_json::to_string(&o.status()).unwrap());
        }
    }
    assert!(everything.contains("401"), "the failures are recorded");
    for secret in [PASSWORD, WRONG] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }
}

/// A HelmChart packaged from a path in a GitRepository, with `reconcileStrategy: Revision` and
/// values files relative to the repository (one missing and ignored), installed by a
/// HelmRelease `chartRef`; a new commit gives a new chart version and an upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_from_git_is_packaged_per_revision_and_upgraded() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let files = [
        ("charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n"),
        ("charts/app/values.yaml", "color: blue\nsize: s\n"),
        ("charts/app/.helmignore", "*.md\n"),
        ("charts/app/NOTES.md", "not packaged\n"),
        (
            "charts/app/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-app\n  namespace: {{ .Release.Namespace }}\ndata:\n  chart: {{ .Chart.Version | quote }}\n  color: {{ .Values.color | quote }}\n  size: {{ .Values.size | quote }}\n",
        ),
        ("env/prod-values.yaml", "color: green\n"),
    ];
    for (p, c) in files {
        let p = repo.work.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    let head = repo.commit("add the app chart");
    let backend = local_cluster(tmp.path());
    let text = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: flux-system}}\nspec:\n  interval: 1m\n  url: file://{}\n  ref: {{branch: main}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata: {{name: app, namespace: flux-system}}\nspec:\n  interval: 5m\n  chart: ./charts/app\n  reconcileStrategy: Revision\n  sourceRef: {{kind: GitRepository, name: fleet}}\n  valuesFiles: [charts/app/values.yaml, env/prod-values.yaml, env/missing.yaml]\n  ignoreMissingValuesFiles: true\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: app, namespace: apps}}\nspec:\n  interval: 10m\n  chartRef: {{kind: HelmChart, name: app, namespace: flux-system}}\n",
        repo.bare.display()
    );
    apply_yaml(&backend, &text).await;
    let snap = runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(snap.iter().all(|s| s.is_ready()), "{snap:#?}");
    let chart_ref = FluxKind::HelmChart.ref_to("flux-system", "app");
    let st = get_status(&backend, &chart_ref).await;
    let want = format!("0.1.0+{}.1", &head[..12]);
    assert_eq!(st.artifact.as_ref().unwrap().revision, want);
    assert_eq!(
        st.extra["observedSourceArtifactRevision"],
        format!("main@sha1:{head}")
    );
    assert_eq!(
        st.extra["observedValuesFiles"],
        serde_json::json!(["charts/app/values.yaml", "env/prod-values.yaml"])
    );
    let data = configmap_data(&backend, "apps", "app-app").await;
    assert_eq!(data["chart"], want.as_str());
    assert_eq!(data["color"], "green");
    assert_eq!(data["size"], "s");
    let store = ArtifactStore::new(backend.state_dir().join("artifacts")).unwrap();
    let unpacked = store.unpacked(st.artifact.as_ref().unwrap()).unwrap();
    assert!(unpacked.join("app/templates/cm.yaml").exists());
    assert!(
        !unpacked.join("app/NOTES.md").exists(),
        ".helmignore applies"
    );

    std::fs::write(
        repo.work.join("env/prod-values.yaml"),
        "color: red\nsize: l\n",
    )
    .unwrap();
    let head2 = repo.commit("prod: red, large");
    let snap = runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    assert!(snap.iter().all(|s| s.is_ready()), "{snap:#?}");
    let want2 = format!("0.1.0+{}.1", &head2[..12]);
    let data = configmap_data(&backend, "apps", "app-app").await;
    assert_eq!(data["chart"], want2.as_str());
    assert_eq!(
        (data["color"].as_str(), data["size"].as_str()),
        (Some("red"), Some("l"))
    );
    let hr = get_status(&backend, &FluxKind::HelmRelease.ref_to("apps", "app")).await;
    assert_eq!(hr.last_applied_revision, want2);
    assert!(
        backend
            .get(&ObjectRef::new(
                "",
                "Secret",
                "apps",
                "sh.helm.release.v1.app.v2"
            ))
            .await
            .unwrap()
            .is_some(),
        "an upgrade to release v2"
    );
}

/// Deleting a HelmRelease while the operator runs uninstalls the release and deletes the
/// HelmChart it created, as helm-controller does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_release_deletes_its_helm_chart() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr.clone();
    push_chart(
        &addr,
        "charts/podinfo",
        "1.0.0",
        podinfo_chart("1.0.0"),
        None,
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let backend = local_cluster(tmp.path());
    apply_yaml(
        &backend,
        &format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: charts, namespace: apps}}\nspec: {{type: oci, interval: 5m, url: 'oci://{addr}/charts', insecure: true}}\n---\n\
             apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: web, namespace: apps}}\nspec: {{interval: 10m, chart: {{spec: {{chart: podinfo, sourceRef: {{kind: HelmRepository, name: charts}}}}}}}}\n"
        ),
    )
    .await;
    let rt = Arc::new(runtime(&backend));
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (rt, cancel) = (rt.clone(), cancel.clone());
        async move { rt.run(cancel).await }
    });
    let chart_ref = FluxKind::HelmChart.ref_to("apps", "apps-web");
    let hr_ref = FluxKind::HelmRelease.ref_to("apps", "web");
    let wait_for = |what: &'static str,
                    backend: LocalBackend,
                    cond: fn(Option<Status>, bool) -> bool,
                    r: ObjectRef| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let o = backend.get(&r).await.unwrap();
            let cm = backend
                .get(&ObjectRef::new("", "ConfigMap", "apps", "web-podinfo"))
                .await
                .unwrap()
                .is_some();
            if cond(o.map(|o| Status::from_value(o.status())), cm) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_for(
        "the release to be installed",
        backend.clone(),
        |st, cm| st.is_some_and(|s| s.is_ready()) && cm,
        hr_ref.clone(),
    )
    .await;
    assert!(backend.get(&chart_ref).await.unwrap().is_some());
    backend.delete(&hr_ref).await.unwrap();
    wait_for(
        "the HelmChart to be deleted",
        backend.clone(),
        |st, cm| st.is_none() && !cm,
        chart_ref.clone(),
    )
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    let events = backend.events(None).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason == "HelmChartDeleted" && e.message.contains("apps/apps-web")),
        "{events:#?}"
    );
}

/// `spec.kubeConfig` that cannot be used: each Kustomization gets a Ready=False naming the
/// field and the Secret (Stalled where only a change can help), fast, and no message carries
/// the kubeconfig's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_kubeconfigs_are_named_without_their_content() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let daemon = GitDaemon::start(&repo.base);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let backend = local_cluster(tmp.path());
    let kubeconfig = |server: &str, user: &str| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        )
    };
    let secrets = [
        ("no-key", "other", "whatever".to_string()),
        ("garbage", "value", "token: hunter2-garbage\n- [".to_string()),
        (
            "unreachable",
            "value",
            kubeconfig(
                &format!("https://127.0.0.1:{closed}"),
                "    token: hunter2-unreachable\n",
            ),
        ),
        (
            "exec",
            "value",
            kubeconfig(
                "https://127.0.0.1:6443",
                "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, hunter2-exec]}\n",
            ),
        ),
    ];
    let mut text = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: flux-system}}\nspec: {{interval: 10m, url: '{}', ref: {{branch: main}}}}\n",
        daemon.url("fleet.git")
    );
    for (name, key, value) in &secrets {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: flux-system}}\nstringData: {}\n",
            serde_json::json!({ *key: value })
        ));
    }
    let kustomizations = [
        ("missing-secret", "{secretRef: {name: nope}}"),
        ("missing-key", "{secretRef: {name: no-key}}"),
        ("garbage", "{secretRef: {name: garbage}}"),
        ("unreachable", "{secretRef: {name: unreachable}}"),
        ("exec", "{secretRef: {name: exec}}"),
        ("configmap", "{configMapRef: {name: aws}}"),
    ];
    for (name, kube_config) in kustomizations {
        text.push_str(&format!(
            "---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {name}, namespace: flux-system}}\nspec:\n  interval: 10m\n  timeout: 20s\n  path: ./apps/base\n  prune: true\n  sourceRef: {{kind: GitRepository, name: fleet}}\n  kubeConfig: {kube_config}\n"
        ));
    }
    apply_yaml(&backend, &text).await;
    let started = std::time::Instant::now();
    runtime(&backend)
        .run_until_settled(CancellationToken::new())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    eprintln!("six unusable kubeconfigs settled in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let expected = [
        (
            "missing-secret",
            "spec.kubeConfig.secretRef: Secret 'flux-system/nope' not found".to_string(),
            false,
        ),
        (
            "missing-key",
            "spec.kubeConfig.secretRef: Secret 'flux-system/no-key' has no key 'value' or 'value.yaml'".to_string(),
            false,
        ),
        (
            "garbage",
            "spec.kubeConfig.secretRef: Secret 'flux-system/garbage' key 'value': not a kubeconfig (the YAML does not parse as one)".to_string(),
            true,
        ),
        (
            "unreachable",
            format!("spec.kubeConfig.secretRef: Secret 'flux-system/unreachable' key 'value': cannot reach the cluster at https://127.0.0.1:{closed}: "),
            false,
        ),
        (
            "exec",
            "spec.kubeConfig.secretRef: Secret 'flux-system/exec' key 'value': user 'u': exec (credential plugins run local commands) is not allowed in a kubeconfig from a Secret".to_string(),
            true,
        ),
        (
            "configmap",
            "spec.kubeConfig.configMapRef ('aws'): cloud-provider kubeconfigs are not supported; use spec.kubeConfig.secretRef".to_string(),
            true,
        ),
    ];
    let mut statuses = String::new();
    for (name, message, stalled) in expected {
        let obj = backend
            .get(&FluxKind::Kustomization.ref_to("flux-system", name))
            .await
            .unwrap()
            .unwrap();
        statuses.push_str(&obj.status().map(|v| v.to_string()).unwrap_or_default());
        let st = Status::from_value(obj.status());
        let ready = st.condition(READY).unwrap();
        assert_eq!(ready.status, trueup::core::status::ConditionStatus::False);
        assert!(
            ready.message.starts_with(&message),
            "{name}: {}\nwanted: {message}",
            ready.message
        );
        assert_eq!(
            st.condition(trueup::core::status::STALLED).is_some(),
            stalled,
            "{name}: {st:?}"
        );
    }
    let said: String = backend
        .events(None)
        .unwrap()
        .iter()
        .map(|e| e.message.clone())
        .chain(std::iter::once(statuses))
        .collect();
    assert!(said.contains("cannot reach the cluster"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
    // Nothing was applied anywhere.
    assert!(backend
        .get(&ObjectRef::new("apps", "Deployment", "apps", "podinfo"))
        .await
        .unwrap()
        .is_none());
}

/// `--health-addr`: /healthz answers as soon as the operator serves, /readyz is 503 until its
/// runtime starts (here: held while it loads a fleet file the test writes late), then 200;
/// other paths are 404.
#[test]
fn health_endpoints_answer_live_then_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = tmp.path().join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    std::fs::write(
        fleet.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- gate.yaml\n",
    )
    .unwrap();
    // A FIFO: reading it blocks until the test writes, so the operator is held before its
    // runtime starts for as long as the test needs.
    let gate = fleet.join("gate.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&gate)
        .status()
        .unwrap();
    assert!(made.success());
    let addr = format!("127.0.0.1:{}", free_port());
    let log = tmp.path().join("operator.log");
    let mut operator = std::process::Command::new(trueup_bin())
        .args(["operator", "--dir"])
        .arg(tmp.path().join("cluster"))
        .arg("--fleet")
        .arg(&fleet)
        .args(["--health-addr", &addr])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let live = loop {
        if let Some(r) = http_get(&addr, "/healthz") {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no /healthz on {addr}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(live, (200, "ok\n".to_string()));
    let (code, body) = http_get(&addr, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready"), "{body}");
    assert_eq!(http_get(&addr, "/metrics").unwrap().0, 404);
    assert_eq!(http_get(&addr, "/healthz/x").unwrap().0, 404);

    // Release the fleet (opening a FIFO to write waits for its reader: in a thread, bounded).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::fs::write(
            &gate,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: gate}\ndata: {a: b}\n",
        );
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the operator reads the fleet")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http_get(&addr, "/readyz").map(|r| r.0) != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never 200: {:?}\n{}",
            http_get(&addr, "/readyz"),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(out.contains("loaded 1 objects"), "{out}");
    operator.kill().unwrap();
    operator.wait().unwrap();
}

/// A chart with one ConfigMap named after the release and the chart (an alias renames it).
fn dependency_chart(name: &str, version: &str) -> Vec<u8> {
    package_chart(
        name,
        version,
        &[(
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-{{ .Chart.Name }}\n  namespace: {{ .Release.Namespace }}\ndata:\n  chart: {{ .Chart.Version | quote }}\n",
        )],
    )
}

/// A chart in a GitRepository (served by `git daemon`) whose `Chart.yaml` depends on a chart
/// of an HTTP Helm repository behind basic auth (the credentials of the HelmRepository whose
/// URL matches; `^1.0.0` picks the newest 1.x) and on one of a real OCI registry (under an
/// alias): the HelmChart packages both into `charts/`, and a HelmRelease renders their
/// objects; a `Chart.lock` pins its version. A version nothing matches, an unreachable repository and a wrong password each
/// leave Ready=False naming the dependency and the repository, and no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_dependencies_come_from_helm_and_oci_repositories() {
    const USER: &str = "deps-bot";
    const PASSWORD: &str = "Dep5-pa55word";
    const WRONG: &str = "N0t-the-dep5-pa55word";
    let Some(registry) = Registry::start() else {
        return;
    };
    let addr = registry.addr.clone();
    for v in ["0.1.0", "0.2.0", "1.0.0"] {
        push_chart(&addr, "charts/cache", v, dependency_chart("cache", v), None).await;
    }
    let db = |v: &str| ("db".to_string(), v.to_string(), dependency_chart("db", v));
    let helm = HelmRepo::serve_with_auth(
        vec![
            db("0.9.0"),
            db("1.0.0"),
            db("1.2.0"),
            db("1.10.0"),
            db("2.0.0"),
        ],
        Some((USER, PASSWORD)),
    );
    let other = HelmRepo::serve_with_auth(vec![db("1.0.0")], Some((USER, PASSWORD)));
    let unreachable = format!("http://127.0.0.1:{}", free_port());

    let tmp = tempfile::tempdir().unwrap();
    let repo = FleetRepo::new(tmp.path());
    let chart_yaml =
        |deps: &str| format!("apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n{deps}");
    let app_deps = format!(
        "- name: db\n  version: ^1.0.0\n  repository: {}/\n- name: cache\n  version: '>=0.1.0 <1.0.0'\n  repository: oci://{addr}/charts\n  alias: sessions\n",
        helm.url
    );
    let files = [
        ("charts/app/Chart.yaml".to_string(), chart_yaml(&app_deps)),
        (
            "charts/app/templates/cm.yaml".to_string(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-app\n  namespace: {{ .Release.Namespace }}\ndata:\n  chart: {{ .Chart.Version | quote }}\n".to_string(),
        ),
        (
            "charts/nomatch/Chart.yaml".to_string(),
            chart_yaml(&format!("- name: db\n  version: ^3.0.0\n  repository: {}\n", helm.url)),
        ),
        (
            "charts/unreachable/Chart.yaml".to_string(),
            chart_yaml(&format!("- name: db\n  version: 1.x\n  repository: {unreachable}\n")),
        ),
        (
            "charts/locked/Chart.yaml".to_string(),
            chart_yaml(&format!(
                "- name: db\n  version: ^1.0.0\n  repository: {}\n",
                helm.url
            )),
        ),
        (
            "charts/locked/Chart.lock".to_string(),
            format!(
                "dependencies:\n- name: db\n  repository: {}/\n  version: 1.2.0\ndigest: sha256:0\ngenerated: \"2026-01-01T00:00:00Z\"\n",
                helm.url
            ),
        ),
        (
            "charts/denied/Chart.yaml".to_string(),
            chart_yaml(&format!("- name: db\n  version: 1.x\n  repository: {}\n", other.url)),
        ),
    ];
    for (p, c) in &files {
        let p = repo.work.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    repo.commit("charts with dependencies");
    let daemon = GitDaemon::start(&repo.base);
    let backend = local_cluster(tmp.path());
    let mut text = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: deps-creds, namespace: flux-system}}\nstringData: {{username: {USER}, password: {PASSWORD}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: wrong-creds, namespace: flux-system}}\nstringData: {{username: {USER}, password: {WRONG}}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: deps, namespace: flux-system}}\nspec: {{interval: 5m, url: '{}', secretRef: {{name: deps-creds}}}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: other, namespace: flux-system}}\nspec: {{interval: 5m, url: '{}/', secretRef: {{name: wrong-creds}}}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {{name: oci-charts, namespace: flux-system}}\nspec: {{type: oci, interval: 5m, url: 'oci://{addr}/charts/', insecure: true}}\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {{name: fleet, namespace: flux-system}}\nspec: {{interval: 1m, url: '{}', ref: {{branch: main}}}}\n---\n\
         apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: app, namespace: apps}}\nspec: {{interval: 10m, chartRef: {{kind: HelmChart, name: app, namespace: flux-system}}}}\n",
        helm.url,
        other.url,
        daemon.url("fleet.git"),
    );
    for name in ["app", "locked", "nomatch", "unreachable", "denied"] {
        text.push_str(&format!(
            "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata: {{name: {name}, namespace: flux-system}}\nspec: {{interval: 5m, chart: ./charts/{name}, sourceRef: {{kind: GitRepository, name: fleet}}}}\n"
        ));
    }
    apply_yaml(&backend, &text).await;
    // A fetch that fails on a loaded machine settles the run (a failure is final for now):
    // run again until the GitRepository has its artifact.
    let git_ref = FluxKind::GitRepository.ref_to("flux-system", "fleet");
    for round in 0..5 {
        runtime(&backend)
            .run_until_settled(CancellationToken::new())
            .await
            .unwrap();
        let git = get_status(&backend, &git_ref).await;
        if git.is_ready() {
            break;
        }
        assert!(round < 4, "{:?}", git.conditions);
        println!("GitRepository not ready yet: {:?}", git.conditions);
    }
    let st = get_status(&backend, &FluxKind::HelmChart.ref_to("flux-system", "app")).await;
    let ready = st.condition(READY).cloned().unwrap();
    assert!(st.is_ready(), "{ready:?}");
    assert_eq!(ready.reason, "ChartPackageSucceeded");
    let store = ArtifactStore::new(backend.state_dir().join("artifacts")).unwrap();
    let unpacked = store.unpacked(st.artifact.as_ref().unwrap()).unwrap();
    let mut vendored: Vec<String> = std::fs::read_dir(unpacked.join("app/charts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    vendored.sort();
    assert_eq!(vendored, ["cache-0.2.0.tgz", "db-1.10.0.tgz"]);
    assert_eq!(
        std::fs::read(unpacked.join("app/charts/db-1.10.0.tgz")).unwrap(),
        dependency_chart("db", "1.10.0"),
        "the archive as the repository serves it"
    );
    let hr = get_status(&backend, &FluxKind::HelmRelease.ref_to("apps", "app")).await;
    assert!(hr.is_ready(), "{:?}", hr.conditions);
    assert_eq!(
        configmap_data(&backend, "apps", "app-app").await["chart"],
        "0.1.0"
    );
    assert_eq!(
        configmap_data(&backend, "apps", "app-db").await["chart"],
        "1.10.0"
    );
    assert_eq!(
        configmap_data(&backend, "apps", "app-sessions").await["chart"],
        "0.2.0",
        "the OCI dependency, under its alias"
    );

    // Chart.lock pins the version it holds.
    let st = get_status(
        &backend,
        &FluxKind::HelmChart.ref_to("flux-system", "locked"),
    )
    .await;
    assert!(st.is_ready(), "{:?}", st.conditions);
    let unpacked = store.unpacked(st.artifact.as_ref().unwrap()).unwrap();
    assert!(unpacked.join("app/charts/db-1.2.0.tgz").is_file());

    let failed = |name: &'static str| {
        let backend = backend.clone();
        async move {
            let st = get_status(&backend, &FluxKind::HelmChart.ref_to("flux-system", name)).await;
            let c = st.condition(READY).cloned().expect("a Ready condition");
            assert_eq!(
                c.status,
                trueup::core::status::ConditionStatus::False,
                "{c:?}"
            );
            assert_eq!(c.reason, "DependencyBuildError", "{c:?}");
            assert!(
                c.message
                    .contains(&format!("HelmChart 'flux-system/{name}'"))
                    && c.message.contains("remote dependency 'db'"),
                "{}",
                c.message
            );
            c.message
        }
    };
    let m = failed("nomatch").await;
    assert!(
        m.contains("^3.0.0")
            && m.contains(&helm.url)
            && m.contains("(HelmRepository 'flux-system/deps')"),
        "{m}"
    );
    let m = failed("unreachable").await;
    assert!(
        m.contains(&unreachable) && m.contains("failed to fetch"),
        "{m}"
    );
    let m = failed("denied").await;
    assert!(m.contains(&other.url) && m.contains("401"), "{m}");

    let mut everything = serde_json::to_string(&backend.events(None).unwrap()).unwrap();
    for kind in [FluxKind::HelmChart, FluxKind::HelmRelease] {
        for o in backend
            .list(&trueup::core::traits::ListParams::kind(
                kind.group(),
                kind.kind(),
            ))
            .await
            .unwrap()
        {
            everything.push_str(&serde_json::to_string(&o.status()).unwrap());
        }
    }
    assert!(everything.contains("401"));
    for secret in [PASSWORD, WRONG] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked: {everything}"
        );
    }

    // Real helm, when there is one, picks the same version from the same repository.
    if let Some(helm_bin) = std::env::var_os("TRUEUP_HELM") {
        let work = tempfile::tempdir().unwrap();
        let chart = work.path().join("app");
        std::fs::create_dir_all(&chart).unwrap();
        std::fs::write(
            chart.join("Chart.yaml"),
            chart_yaml(&format!(
                "- name: db\n  version: ^1.0.0\n  repository: {}/\n",
                helm.url
            )),
        )
        .unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new(&helm_bin)
                .args(args)
                .env("HELM_CONFIG_HOME", work.path().join("config"))
                .env("HELM_CACHE_HOME", work.path().join("cache"))
                .env("HELM_DATA_HOME", work.path().join("data"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "helm {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "repo",
            "add",
            "deps",
            &helm.url,
            "--username",
            USER,
            "--password",
            PASSWORD,
        ]);
        run(&["dependency", "build", chart.to_str().unwrap()]);
        assert!(
            chart.join("charts/db-1.10.0.tgz").is_file(),
            "helm picked {:?}",
            std::fs::read_dir(chart.join("charts"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
    }
}
