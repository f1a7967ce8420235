//! The tofu runner and the Terraform reconciler against the real CLI (`tofu`, else `terraform`
//! on PATH: a missing binary fails these tests, it does not skip them). Only built-in resources
//! (`terraform_data`, outputs, variables, workspaces, `local-exec`) so nothing is downloaded.
//!
//! Sources are real Git commits: a repository made with `git`, each commit archived into the
//! artifact store with its `main@sha1:<commit>` revision, as the GitRepository reconciler does.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use trueup_appliers::tofu::{state, TofuRunner};
use trueup_core::memory::MemoryBackend;
use trueup_core::object::{Object, ObjectRef};
use trueup_core::reconcile::{object_data, Reconciler, TerraformReconciler};
use trueup_core::status::{Artifact, Status};
use trueup_core::storage::ArtifactStore;
use trueup_core::traits::plan::{PlanRequest, PlanRunner};
use trueup_core::traits::{ApplyOptions, Backend};

const NS: &str = "flux-system";

fn runner() -> TofuRunner {
    TofuRunner::detect().expect("the tofu or terraform CLI must be on PATH for these tests")
}

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("repo");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let r = Repo { _tmp: tmp, dir };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commits files and returns the revision as a GitRepository reports it.
    fn commit(&self, files: &[(&str, &str)], msg: &str) -> String {
        for (p, text) in files {
            let p = self.dir.join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        format!("main@sha1:{}", self.git(&["rev-parse", "HEAD"]))
    }
}

struct Env {
    backend: MemoryBackend,
    store: ArtifactStore,
    repo: Repo,
    _store_dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let store_dir = tempfile::tempdir().expect("tempdir");
        Env {
            backend: MemoryBackend::new(),
            store: ArtifactStore::new(store_dir.path()).expect("store"),
            repo: Repo::new(),
            _store_dir: store_dir,
        }
    }

    /// Commits and publishes the commit as the GitRepository's artifact.
    async fn push(&self, files: &[(&str, &str)], msg: &str) -> String {
        let rev = self.repo.commit(files, msg);
        let owner = ObjectRef::new("source.toolkit.fluxcd.io", "GitRepository", NS, "repo");
        let filter = |p: &str, _dir: bool| p == ".git" || p.starts_with(".git/");
        let artifact: Artifact = self
            .store
            .archive_dir(&owner, &self.repo.dir, &rev, &filter)
            .expect("archive");
        let mut src = Object::from_value(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "repo", "namespace": NS},
            "spec": {"interval": "1m", "url": format!("file://{}", self.repo.dir.display()), "ref": {"branch": "main"}}
        }))
        .expect("object");
        src.0.remove("status");
        self.backend
            .apply(&src, &ApplyOptions::default())
            .await
            .expect("apply source");
        let status = Status {
            artifact: Some(artifact),
            ..Default::default()
        };
        self.backend
            .update_status(&owner, &status.to_value())
            .await
            .expect("status");
        rev
    }

    async fn put(&self, v: Value) {
        let o = Object::from_value(v).expect("object");
        self.backend
            .apply(&o, &ApplyOptions::default())
            .await
            .expect("apply");
    }

    async fn get(&self, kind: &str, name: &str) -> Option<Object> {
        let group = if kind == "Terraform" {
            "infra.contrib.fluxcd.io"
        } else {
            ""
        };
        self.backend
            .get(&ObjectRef::new(group, kind, NS, name))
            .await
            .expect("get")
    }

    async fn secret(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let o = self
            .get("Secret", name)
            .await
            .unwrap_or_else(|| panic!("Secret {name} missing"));
        object_data(&o)
            .expect("data")
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    }

    /// One reconcile of Terraform `name`, its status written back. Returns the outcome's events.
    async fn reconcile(
        &self,
        rec: &TerraformReconciler<TofuRunner>,
        name: &str,
    ) -> (Status, Vec<trueup_core::Event>) {
        let obj = self.get("Terraform", name).await.expect("terraform object");
        let out = rec.reconcile(&obj, &self.backend).await;
        self.backend
            .update_status(&obj.object_ref(), &out.status.to_value())
            .await
            .expect("status");
        (out.status, out.events)
    }

    async fn state(&self, name: &str) -> Value {
        let r = ObjectRef::new("", "Secret", NS, name);
        let bytes = state::read_state(&self.backend, &r)
            .await
            .expect("read state")
            .expect("a state");
        serde_json::from_slice(&bytes).expect("state is JSON")
    }
}

fn terraform(name: &str, path: &str, approve: &str, extra: Value) -> Value {
    let mut spec = json!({
        "interval": "10m",
        "approvePlan": approve,
        "path": path,
        "sourceRef": {"kind": "GitRepository", "name": "repo"},
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    json!({
        "apiVersion": "infra.contrib.fluxcd.io/v1alpha2", "kind": "Terraform",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
}

fn ready(s: &Status) -> (String, String, String) {
    let c = s.condition("Ready").expect("Ready condition");
    (
        format!("{:?}", c.status),
        c.reason.clone(),
        c.message.clone(),
    )
}

fn cond(s: &Status, t: &str) -> Option<(String, String)> {
    s.condition(t)
        .map(|c| (format!("{:?}", c.status), c.reason.clone()))
}

fn plan_field(s: &Status, f: &str) -> String {
    s.extra
        .get("plan")
        .and_then(|p| p.get(f))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn resource_input(state: &Value, name: &str) -> Value {
    state["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name)
        // terraform_data's input is dynamic: stored as {"type", "value"}.
        .map(|r| r["instances"][0]["attributes"]["input"]["value"].clone())
        .unwrap_or(Value::Null)
}

const HELLO: &str = r#"
variable "greeting" {
  type    = string
  default = "hello"
}
variable "token" {
  type      = string
  default   = ""
  sensitive = true
}
resource "terraform_data" "hello" {
  input = var.greeting
}
output "greeting" {
  value = terraform_data.hello.output
}
output "numbers" {
  value = [1, 2, 3]
}
output "token" {
  value     = var.token
  sensitive = true
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_apply_keeps_state_in_the_backend_and_writes_outputs() {
    let env = Env::new();
    let rev = env.push(&[("infra/main.tf", HELLO)], "first").await;
    env.put(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
                   "stringData": {"token": "s3cr3t-t0ken"}}),
    )
    .await;
    env.put(terraform(
        "hello",
        "./infra",
        "auto",
        json!({
            "vars": [{"name": "greeting", "value": "hi there"}],
            "varsFrom": [{"kind": "Secret", "name": "creds"}],
            "writeOutputsToSecret": {"name": "hello-outputs", "outputs": ["greeting", "numbers"]},
            "storeReadablePlan": "human",
        }),
    ))
    .await;
    let r = runner();
    let rec = TerraformReconciler::new(r.clone(), env.store.clone());
    let (s, events) = env.reconcile(&rec, "hello").await;
    assert_eq!(ready(&s).0, "True", "{:?}", ready(&s));
    assert_eq!(ready(&s).1, "TerraformAppliedSucceed");
    assert_eq!(s.last_applied_revision, rev);
    assert_eq!(
        cond(&s, "Apply"),
        Some(("True".into(), "TerraformAppliedSucceed".into()))
    );
    assert_eq!(
        cond(&s, "Output"),
        Some(("True".into(), "TerraformOutputsWritten".into()))
    );
    let applied = plan_field(&s, "lastApplied");
    let sha = rev.trim_start_matches("main@sha1:");
    assert!(
        applied.starts_with(&format!("plan-main-{}-", &sha[..10])),
        "{applied}"
    );
    assert_eq!(plan_field(&s, "pending"), "");
    assert_eq!(
        s.extra["availableOutputs"],
        json!(["greeting", "numbers", "token"])
    );
    assert_eq!(s.extra["lastPlannedRevision"], json!(rev));
    assert!(
        events.iter().any(|e| e.reason == "TerraformAppliedSucceed"),
        "{events:?}"
    );

    // Named outputs only: strings as they are, the rest as JSON.
    let out = env.secret("hello-outputs").await;
    assert_eq!(out.get("greeting").map(String::as_str), Some("hi there"));
    assert_eq!(out.get("numbers").map(String::as_str), Some("[1,2,3]"));
    assert!(!out.contains_key("token"));

    // The state is in the backend, gzipped, and the variables came through the var file.
    let st = env.state("tfstate-default-hello").await;
    assert_eq!(resource_input(&st, "hello"), json!("hi there"));
    let raw = env
        .get("Secret", "tfstate-default-hello")
        .await
        .expect("state secret");
    let data = object_data(&raw).expect("data");
    assert!(data["tfstate"].starts_with(&[0x1f, 0x8b]), "gzip");
    assert_eq!(raw.label("tfstateWorkspace"), Some("default"));

    // The plan is stored (gzipped) and readable; the readable plan never shows the secret.
    let plan = env.secret("tfplan-default-hello").await;
    assert!(plan.contains_key("tfplan") && plan.contains_key("tfplan.json"));
    let human = env
        .get("ConfigMap", "tfplan-default-hello")
        .await
        .expect("readable plan");
    let text = human.0["data"]["tfplan"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("terraform_data.hello"), "{text}");
    assert!(!text.contains("s3cr3t-t0ken"), "{text}");

    // Nothing changed: the next interval plans no changes, and it is not drift.
    let (s, _) = env.reconcile(&rec, "hello").await;
    assert_eq!(ready(&s).1, "TerraformPlannedNoChanges", "{:?}", ready(&s));
    assert_eq!(
        cond(&s, "DriftDetected"),
        Some(("False".into(), "NoDrift".into()))
    );
    assert!(r.held_locks().is_empty());
}

async fn set_approve(env: &Env, name: &str, path: &str, approve: &str, extra: Value) {
    env.put(terraform(name, path, approve, extra)).await;
}

fn pending_id_from_message(s: &Status) -> String {
    let msg = ready(s).2;
    let start = msg
        .find("set approvePlan: \"")
        .expect("message names the value to set")
        + "set approvePlan: \"".len();
    msg[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_approval_applies_exactly_the_reviewed_plan_and_a_new_commit_invalidates_it() {
    let env = Env::new();
    let rev1 = env.push(&[("infra/main.tf", HELLO)], "first").await;
    set_approve(&env, "hello", "./infra", "", json!({})).await;
    let r = runner();
    let rec = TerraformReconciler::new(r.clone(), env.store.clone());

    // Planned, not applied: the Ready message says which value to set.
    let (s, events) = env.reconcile(&rec, "hello").await;
    let (st, why, msg) = ready(&s);
    assert_eq!(
        (st.as_str(), why.as_str()),
        ("False", "TerraformPlannedWithChanges"),
        "{msg}"
    );
    let id1 = plan_field(&s, "pending");
    assert!(
        id1.starts_with(&format!(
            "plan-main-{}-",
            &rev1["main@sha1:".len()..]["".len()..][..10]
        )),
        "{id1}"
    );
    assert_eq!(
        msg,
        format!("Plan generated: set approvePlan: \"{id1}\" to approve this plan.")
    );
    assert_eq!(pending_id_from_message(&s), id1);
    assert!(events
        .iter()
        .any(|e| e.reason == "TerraformPlannedWithChanges" && e.message.contains(&id1)));
    assert!(
        env.get("Secret", "tfstate-default-hello").await.is_none(),
        "nothing applied yet"
    );

    // Re-planning on the next interval gives the same id: the approval survives.
    let (s, events) = env.reconcile(&rec, "hello").await;
    assert_eq!(plan_field(&s, "pending"), id1);
    assert!(
        events.is_empty(),
        "no new event for the same plan: {events:?}"
    );

    // Approving the id applies that saved plan.
    set_approve(&env, "hello", "./infra", &id1, json!({})).await;
    let (s, _) = env.reconcile(&rec, "hello").await;
    assert_eq!(ready(&s).0, "True", "{:?}", ready(&s));
    assert_eq!(plan_field(&s, "lastApplied"), id1);
    assert_eq!(plan_field(&s, "pending"), "");
    assert_eq!(
        resource_input(&env.state("tfstate-default-hello").await, "hello"),
        json!("hello")
    );

    // A new commit: a new plan with a new id, pending again (the old approval applies nothing).
    let rev2 = env
        .push(
            &[(
                "infra/main.tf",
                &HELLO.replace("default = \"hello\"", "default = \"hello v2\""),
            )],
            "second",
        )
        .await;
    let (s, _) = env.reconcile(&rec, "hello").await;
    let id2 = plan_field(&s, "pending");
    assert!(
        id2.starts_with(&format!("plan-main-{}-", &rev2["main@sha1:".len()..][..10])),
        "{id2}"
    );
    assert_ne!(id2, id1);
    assert_eq!(ready(&s).0, "False");

    // Approve id2, but a third commit lands before the reconcile: nothing is applied, and the
    // status says why and which id to approve now.
    set_approve(&env, "hello", "./infra", &id2, json!({})).await;
    let rev3 = env
        .push(
            &[(
                "infra/main.tf",
                &HELLO.replace("default = \"hello\"", "default = \"hello v3\""),
            )],
            "third",
        )
        .await;
    let (s, events) = env.reconcile(&rec, "hello").await;
    let id3 = plan_field(&s, "pending");
    assert_ne!(id3, id2);
    let msg = ready(&s).2;
    assert!(
        msg.contains(&format!("approved plan '{id2}'")) && msg.contains("nothing applied"),
        "{msg}"
    );
    assert!(msg.contains(&rev3), "{msg}");
    assert_eq!(pending_id_from_message(&s), id3);
    assert!(
        events.iter().any(|e| e.reason == "PlanApprovalMismatch"),
        "{events:?}"
    );
    assert_eq!(
        resource_input(&env.state("tfstate-default-hello").await, "hello"),
        json!("hello"),
        "still v1"
    );
    assert_eq!(plan_field(&s, "lastApplied"), id1);

    set_approve(&env, "hello", "./infra", &id3, json!({})).await;
    let (s, _) = env.reconcile(&rec, "hello").await;
    assert_eq!(ready(&s).0, "True", "{:?}", ready(&s));
    assert_eq!(plan_field(&s, "lastApplied"), id3);
    assert_eq!(s.last_applied_revision, rev3);
    assert_eq!(
        resource_input(&env.state("tfstate-default-hello").await, "hello"),
        json!("hello v3")
    );
    assert!(r.held_locks().is_empty());
}

/// Changes the stored state out of band, as someone with access to the state would.
async fn edit_state(env: &Env, secret: &str, resource: &str, input: &str) {
    let mut st = env.state(secret).await;
    for r in st["resources"].as_array_mut().expect("resources") {
        if r["name"] == resource {
            r["instances"][0]["attributes"]["input"]["value"] = json!(input);
            r["instances"][0]["attributes"]["output"]["value"] = json!(input);
        }
    }
    st["serial"] = json!(st["serial"].as_u64().unwrap_or(0) + 1);
    let o = state::state_secret(
        NS,
        "default",
        &secret["tfstate-default-".len()..],
        &serde_json::to_vec(&st).expect("json"),
    );
    env.backend
        .apply(&o, &ApplyOptions::default())
        .await
        .expect("apply state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_detected_and_corrected_with_auto_and_waits_for_approval_otherwise() {
    let env = Env::new();
    env.push(&[("infra/main.tf", HELLO)], "first").await;
    set_approve(&env, "hello", "./infra", "auto", json!({})).await;
    let rec = TerraformReconciler::new(runner(), env.store.clone());
    let (s, _) = env.reconcile(&rec, "hello").await;
    assert_eq!(ready(&s).0, "True");
    let applied = plan_field(&s, "lastApplied");

    edit_state(&env, "tfstate-default-hello", "hello", "tampered").await;
    let (s, events) = env.reconcile(&rec, "hello").await;
    let drift = events
        .iter()
        .find(|e| e.reason == "DriftDetected")
        .expect("a DriftDetected event");
    assert!(
        drift.message.contains("terraform_data.hello"),
        "{}",
        drift.message
    );
    assert_eq!(ready(&s).0, "True", "auto re-applies: {:?}", ready(&s));
    assert_ne!(
        plan_field(&s, "lastApplied"),
        applied,
        "drift made a new plan id"
    );
    assert_eq!(
        resource_input(&env.state("tfstate-default-hello").await, "hello"),
        json!("hello")
    );
    assert!(s.extra.contains_key("lastDriftDetectedAt"));

    // Manual: drift makes a pending plan and the DriftDetected condition, nothing is applied.
    let last = plan_field(&s, "lastApplied");
    set_approve(&env, "hello", "./infra", &last, json!({})).await;
    edit_state(&env, "tfstate-default-hello", "hello", "tampered again").await;
    let (s, _) = env.reconcile(&rec, "hello").await;
    assert_eq!(
        cond(&s, "DriftDetected"),
        Some(("True".into(), "DriftDetected".into()))
    );
    let pending = plan_field(&s, "pending");
    assert!(!pending.is_empty() && pending != last);
    assert_eq!(
        resource_input(&env.state("tfstate-default-hello").await, "hello"),
        json!("tampered again")
    );
    set_approve(&env, "hello", "./infra", &pending, json!({})).await;
    let (s, _) = env.reconcile(&rec, "hello").await;
    assert_eq!(ready(&s).0, "True", "{:?}", ready(&s));
    assert_eq!(
        cond(&s, "DriftDetected"),
        Some(("False".into(), "NoDrift".into()))
    );
    assert_eq!(
        resource_input(&env.state("tfstate-default-hello").await, "hello"),
        json!("hello")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plan_gives_a_clear_condition_without_secrets() {
    let env = Env::new();
    let tf = r#"
variable "path" {
  type = string
}
resource "terraform_data" "x" {
  input = file(var.path)
}
"#;
    env.push(&[("infra/main.tf", tf)], "broken").await;
    env.put(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vars", "namespace": NS},
                   "stringData": {"path": "/nonexistent/hunter2-secret-path"}}),
    )
    .await;
    set_approve(
        &env,
        "broken",
        "./infra",
        "auto",
        json!({"varsFrom": [{"kind": "Secret", "name": "vars"}]}),
    )
    .await;
    let rec = TerraformReconciler::new(runner(), env.store.clone());
    let (s, events) = env.reconcile(&rec, "broken").await;
    let (st, why, msg) = ready(&s);
    assert_eq!(
        (st.as_str(), why.as_str()),
        ("False", "TFExecPlanFailed"),
        "{msg}"
    );
    assert_eq!(
        cond(&s, "Plan"),
        Some(("False".into(), "TFExecPlanFailed".into()))
    );
    assert!(
        msg.contains("Terraform/flux-system/broken") || msg.contains("broken"),
        "names the object: {msg}"
    );
    assert!(
        msg.contains(" plan: ") && msg.contains("Error: "),
        "names the step and the CLI's error: {msg}"
    );
    assert!(!msg.contains("hunter2"), "secret redacted: {msg}");
    assert!(msg.contains("***"), "{msg}");
    for e in &events {
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }

    // A bad path is a clear error too, and never escapes the source.
    set_approve(&env, "broken", "../../etc", "auto", json!({})).await;
    let (s, _) = env.reconcile(&rec, "broken").await;
    assert!(ready(&s).2.contains("spec.path"), "{:?}", ready(&s));
}

const SLOW: &str = r#"
resource "terraform_data" "fast" {
  input = "fast"
}
resource "terraform_data" "slow" {
  depends_on = [terraform_data.fast]
  input      = "slow"
  provisioner "local-exec" {
    command = "sleep 37"
  }
}
"#;

fn sleepers() -> usize {
    let out = Command::new("pgrep")
        .args(["-f", "sleep 37"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_leaves_the_state_consistent_and_the_lock_released() {
    let env = Env::new();
    env.push(&[("infra/main.tf", SLOW)], "slow").await;
    let repo_obj = env
        .backend
        .get(&ObjectRef::new(
            "source.toolkit.fluxcd.io",
            "GitRepository",
            NS,
            "repo",
        ))
        .await
        .expect("get")
        .expect("repo");
    let artifact = Status::from_value(repo_obj.status())
        .artifact
        .expect("artifact");
    let dir = env.store.unpacked(&artifact).expect("unpacked");
    let me = ObjectRef::new("infra.contrib.fluxcd.io", "Terraform", NS, "slow");
    let vars = serde_json::Map::new();
    let req = |timeout: Duration| PlanRequest {
        object: &me,
        source_dir: &dir,
        path: "infra",
        workspace: "default",
        backend_config: None,
        state_suffix: "slow",
        vars: &vars,
        sensitive: &[],
        destroy: false,
        timeout,
        backend: &env.backend,
    };
    let r = runner().with_grace(Duration::from_secs(5));
    let plan = r.plan(&req(Duration::from_secs(60))).await.expect("plan");
    assert_eq!(plan.summary().add, 2);

    // The apply runs out of time in the provisioner; meanwhile a second run finds the state locked.
    let short = req(Duration::from_secs(4));
    let (applied, contender) = tokio::join!(r.apply(&short, &plan), async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let held = r.held_locks();
        (held, r.plan(&req(Duration::from_secs(30))).await)
    });
    let (held, contender) = contender;
    assert_eq!(held.len(), 1, "the apply holds the lock: {held:?}");
    let e = contender.expect_err("the state is locked");
    assert!(e.message.contains("lock"), "{e}");
    let e = applied.expect_err("the apply timed out");
    assert!(e.timed_out, "{e}");
    assert!(
        e.step.ends_with("apply") && e.message.contains("timed out"),
        "{e}"
    );
    assert!(
        r.held_locks().is_empty(),
        "lock released: {:?}",
        r.held_locks()
    );
    assert_eq!(sleepers(), 0, "the provisioner's process group was ended");

    // The state is whole: what finished is in it, and the next plan works from it.
    let st = env.state("tfstate-default-slow").await;
    assert_eq!(resource_input(&st, "fast"), json!("fast"));
    let again = r
        .plan(&req(Duration::from_secs(60)))
        .await
        .expect("plan after the kill");
    assert!(
        again
            .resource_changes()
            .iter()
            .all(|c| c.address == "terraform_data.slow"),
        "{:?}",
        again.resource_changes()
    );

    // Cancellation (the future dropped) ends the process group and releases the lock as well.
    let long = req(Duration::from_secs(600));
    let dropped = tokio::time::timeout(Duration::from_secs(3), r.apply(&long, &again)).await;
    assert!(dropped.is_err(), "still running when dropped");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sleepers(), 0, "killed on drop");
    assert!(
        r.held_locks().is_empty(),
        "lock released on drop: {:?}",
        r.held_locks()
    );
    let st = env.state("tfstate-default-slow").await;
    assert!(st["lineage"].is_string());
    r.plan(&req(Duration::from_secs(60)))
        .await
        .expect("plan after the cancellation");
}

fn seed_vpc(approve: &str, backend_config: Option<Value>, workspace: Option<&str>) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/seed/infrastructure-vpc.yaml"
    ))
    .expect("seed example");
    let mut v: Value = serde_yaml::from_str(&text).expect("yaml");
    v["spec"]["approvePlan"] = json!(approve);
    v["spec"]["sourceRef"]["name"] = json!("repo");
    // S3 is not reachable from a test: trueup's own store, or a local backend.
    match backend_config {
        Some(bc) => v["spec"]["backendConfig"] = bc,
        None => {
            v["spec"]
                .as_object_mut()
                .expect("spec")
                .remove("backendConfig");
        }
    }
    if let Some(ws) = workspace {
        v["spec"]["workspace"] = json!(ws);
    }
    v
}

const VPC_TF: &str = include_str!("fixtures/tofu/vpc/main.tf");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_vpc_example_runs_with_auto_and_manual_approval() {
    let env = Env::new();
    let rev = env.push(&[("terraform/vpc/main.tf", VPC_TF)], "vpc").await;
    let rec = TerraformReconciler::new(runner(), env.store.clone());

    // As written (approvePlan auto, its vars), with trueup's state store.
    env.put(seed_vpc("auto", None, None)).await;
    let (s, _) = env.reconcile(&rec, "vpc").await;
    assert_eq!(ready(&s).0, "True", "{:?}", ready(&s));
    assert_eq!(s.last_applied_revision, rev);
    let st = env.state("tfstate-default-vpc").await;
    assert_eq!(
        resource_input(&st, "vpc"),
        json!({"name": "production-eks-vpc", "cidr": "10.0.0.0/16"})
    );
    assert_eq!(
        st["outputs"]["private_subnets"]["value"],
        json!(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"])
    );

    // Manual approval, on a local backend given as customConfiguration, in a workspace.
    let tmp = tempfile::tempdir().expect("tempdir");
    let custom = format!(
        "backend \"local\" {{\n  path          = \"{0}/vpc.tfstate\"\n  workspace_dir = \"{0}/workspaces\"\n}}\n",
        tmp.path().display()
    );
    let mut manual = seed_vpc(
        "",
        Some(json!({"customConfiguration": custom})),
        Some("staging"),
    );
    manual["metadata"]["name"] = json!("vpc-staging");
    env.put(manual.clone()).await;
    let (s, _) = env.reconcile(&rec, "vpc-staging").await;
    assert_eq!(
        ready(&s).1,
        "TerraformPlannedWithChanges",
        "{:?}",
        ready(&s)
    );
    let id = pending_id_from_message(&s);
    assert_eq!(plan_field(&s, "pending"), id);
    // The local backend keeps a non-default workspace's state under workspace_dir/<ws>/.
    let local_state = |ws: &str| -> Option<Value> {
        let dir = tmp.path().join("workspaces").join(ws);
        let f = std::fs::read_dir(&dir).ok()?.flatten().next()?;
        serde_json::from_slice(&std::fs::read(f.path()).ok()?).ok()
    };
    let before = local_state("staging");
    assert!(
        before
            .as_ref()
            .is_none_or(|s| s["resources"].as_array().is_none_or(|r| r.is_empty())),
        "nothing applied yet: {before:?}"
    );
    manual["spec"]["approvePlan"] = json!(id);
    env.put(manual).await;
    let (s, _) = env.reconcile(&rec, "vpc-staging").await;
    assert_eq!(ready(&s).0, "True", "{:?}", ready(&s));
    assert_eq!(plan_field(&s, "lastApplied"), id);
    let st = local_state("staging").unwrap_or_else(|| {
        panic!(
            "no state in the staging workspace: {:?}",
            std::fs::read_dir(tmp.path())
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        )
    });
    assert_eq!(st["outputs"]["workspace"]["value"], json!("staging"));
    assert_eq!(
        st["outputs"]["vpc_name"]["value"],
        json!("production-eks-vpc")
    );
}
