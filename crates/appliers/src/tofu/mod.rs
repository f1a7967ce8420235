//! The OpenTofu/Terraform CLI as a [`PlanRunner`].
//!
//! Every call works in a private copy of the source (the whole artifact, so `../modules` work),
//! inits it, selects the workspace and runs one command at a time:
//! `init`, `workspace select -or-create`, `plan -out`, `show -json`, `apply <saved plan>`,
//! `output -json`. The CLI runs with `TF_IN_AUTOMATION=1`, `-input=false` and `-no-color`, in its
//! own process group: a timeout, or the caller dropping the future (cancellation), ends the whole
//! group (TERM, then KILL after a grace period), provisioners included.
//!
//! State: `spec.backendConfig.customConfiguration` is written as `backend_override.tf`
//! (`terraform { <it> }`); without it the runner serves the CLI's `http` backend itself, keeping the
//! state in the trueup backend (see [`state`]). The http backend has only the `default`
//! workspace, so with trueup's store the workspace selects the state Secret
//! (`tfstate-<workspace>-<suffix>`), and `terraform.workspace` reads `default`.
//!
//! Variables go in a `*.tfvars.json` file passed with `-var-file`, never on a command line
//! (where any local user could read them). Captured output has the variables read from Secrets
//! and the state store's password redacted before it reaches a message.

pub mod state;

use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use trueup_core::traits::plan::{OutputValue, Outputs, Plan, PlanError, PlanRequest, PlanRunner};

use state::{LockTable, StateServer};

/// The CLI runner.
#[derive(Clone)]
pub struct TofuRunner {
    binary: PathBuf,
    /// `tofu` or `terraform`: how steps are named in errors.
    name: String,
    grace: Duration,
    env: BTreeMap<String, String>,
    locks: LockTable,
}

impl std::fmt::Debug for TofuRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TofuRunner")
            .field("binary", &self.binary)
            .finish()
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl TofuRunner {
    /// `tofu` from PATH, else `terraform`.
    pub fn detect() -> Result<Self, PlanError> {
        find_on_path("tofu")
            .or_else(|| find_on_path("terraform"))
            .map(Self::with_binary)
            .ok_or_else(|| PlanError::new("tofu", "neither `tofu` nor `terraform` found on PATH"))
    }

    /// An explicit binary (`tofu` or `terraform`, any path).
    pub fn with_binary(binary: impl Into<PathBuf>) -> Self {
        let binary = binary.into();
        let name = match binary.file_name().and_then(|n| n.to_str()) {
            Some(n) if n.contains("terraform") => "terraform".to_string(),
            _ => "tofu".to_string(),
        };
        TofuRunner {
            binary,
            name,
            grace: Duration::from_secs(10),
            env: BTreeMap::new(),
            locks: LockTable::default(),
        }
    }

    /// How long a CLI process gets to stop after TERM (it writes its state and unlocks) before
    /// its process group is killed. Default 10s.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// An environment variable for every CLI process (credentials for providers, say).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// State locks held right now (`namespace/secret` -> lock info JSON), for diagnostics.
    pub fn held_locks(&self) -> BTreeMap<String, String> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Ends a process group: TERM now, or KILL.
fn signal_group(pgid: u32, signal: &str) {
    // `kill -SIG -- -PGID` signals the whole group; no libc, no unsafe.
    let _ = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills the process group if the run did not finish (the future was dropped).
struct GroupGuard {
    pgid: Option<u32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            signal_group(pgid, "KILL");
        }
    }
}

/// One call: its working directory, state server and redaction.
struct Call<'a> {
    runner: &'a TofuRunner,
    req: &'a PlanRequest<'a>,
    _work: tempfile::TempDir,
    root: PathBuf,
    module: PathBuf,
    server: Option<StateServer>,
    deadline: Instant,
    secrets: Vec<String>,
}

struct Ran {
    stdout: String,
    stderr: String,
}

impl<'a> Call<'a> {
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        let mut secrets: Vec<&String> = self.secrets.iter().filter(|s| s.len() >= 3).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }

    fn step(&self, what: &str) -> String {
        format!("{} {what}", self.runner.name)
    }

    /// The part of the CLI's output that says what went wrong.
    fn why(&self, ran: &Ran) -> String {
        let text = if ran.stderr.trim().is_empty() {
            &ran.stdout
        } else {
            &ran.stderr
        };
        let from = text.find("Error: ").unwrap_or(0);
        let mut why = text[from..].trim().to_string();
        if why.len() > 4000 {
            let mut cut = 4000;
            while !why.is_char_boundary(cut) {
                cut -= 1;
            }
            why.truncate(cut);
            why.push_str(" ...");
        }
        self.redact(&why)
    }

    /// Runs one CLI command in its own process group, serving the state store meanwhile.
    async fn run(&self, what: &str, args: &[String]) -> Result<Ran, PlanError> {
        let step = self.step(what);
        let mut cmd = tokio::process::Command::new(&self.runner.binary);
        cmd.args(args)
            .current_dir(&self.module)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            // The workspace is chosen by the spec, not by whoever started trueup.
            .env_remove("TF_WORKSPACE")
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in &self.runner.env {
            cmd.env(k, v);
        }
        if let Some(s) = &self.server {
            for (k, v) in s.env() {
                cmd.env(k, v);
            }
        }
        // Taken before the process starts, dropped after it is gone (or when this future is).
        let _locks = self.server.as_ref().map(|s| s.release_guard());
        let mut child = cmd.spawn().map_err(|e| {
            PlanError::new(
                &step,
                format!("cannot run {}: {e}", self.runner.binary.display()),
            )
        })?;
        let mut guard = GroupGuard { pgid: child.id() };
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let io = async {
            let mut o = Vec::new();
            let mut e = Vec::new();
            let read_o = async {
                if let Some(s) = out.as_mut() {
                    let _ = s.read_to_end(&mut o).await;
                }
            };
            let read_e = async {
                if let Some(s) = err.as_mut() {
                    let _ = s.read_to_end(&mut e).await;
                }
            };
            let (_, _, status) = tokio::join!(read_o, read_e, child.wait());
            (o, e, status)
        };
        tokio::pin!(io);
        let mut deadline = self.deadline;
        let mut stopping = false;
        let mut timed_out = false;
        let (o, e, status) = loop {
            tokio::select! {
                done = &mut io => break done,
                conn = async {
                    match &self.server {
                        Some(s) => s.accept().await,
                        None => futures::future::pending().await,
                    }
                } => {
                    if let (Ok(stream), Some(s)) = (conn, &self.server) {
                        s.serve(stream, self.req.backend).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    timed_out = true;
                    if let Some(pgid) = guard.pgid {
                        if stopping {
                            signal_group(pgid, "KILL");
                            deadline = Instant::now() + Duration::from_secs(3600);
                        } else {
                            // TERM first: the CLI stops, writes its state and unlocks.
                            signal_group(pgid, "TERM");
                            stopping = true;
                            deadline = Instant::now() + self.runner.grace;
                        }
                    }
                }
            }
        };
        // The leader is reaped; end whatever it left in its group.
        if let Some(pgid) = guard.pgid.take() {
            signal_group(pgid, "KILL");
        }
        let ran = Ran {
            stdout: String::from_utf8_lossy(&o).into_owned(),
            stderr: String::from_utf8_lossy(&e).into_owned(),
        };
        if timed_out {
            let mut err = PlanError::new(
                &step,
                format!(
                    "timed out after {:?}; the process group was ended. {}",
                    self.req.timeout,
                    self.why(&ran)
                ),
            );
            err.timed_out = true;
            return Err(err);
        }
        match status {
            Ok(s) if s.success() => Ok(ran),
            Ok(s) => Err(PlanError::new(&step, format!("{} ({s})", self.why(&ran)))),
            Err(e) => Err(PlanError::new(&step, e.to_string())),
        }
    }
}

impl TofuRunner {
    /// Prepares the working directory, inits it and selects the workspace.
    async fn prepare<'a>(&'a self, req: &'a PlanRequest<'a>) -> Result<Call<'a>, PlanError> {
        let prep = |m: String| PlanError::new(format!("{} workspace", self.name), m);
        let deadline = Instant::now() + req.timeout;
        let work = tempfile::Builder::new()
            .prefix("trueup-tofu-")
            .tempdir()
            .map_err(|e| prep(e.to_string()))?;
        let root = work.path().to_path_buf();
        let src = root.join("src");
        let from = req.source_dir.to_path_buf();
        let to = src.clone();
        tokio::task::spawn_blocking(move || trueup_core::paths::copy_tree(&from, &to))
            .await
            .map_err(|e| prep(e.to_string()))?
            .map_err(|e| prep(format!("copying the source: {e}")))?;
        let module = trueup_core::paths::join_inside(&src, req.path)
            .map_err(|e| prep(format!("spec.path: {e}")))?;
        if !module.is_dir() {
            return Err(prep(format!(
                "spec.path: '{}' is not a directory in the source",
                req.path
            )));
        }
        let backend_block = match req.backend_config {
            Some(custom) => format!("terraform {{\n{custom}\n}}\n"),
            None => "terraform {\n  backend \"http\" {}\n}\n".to_string(),
        };
        std::fs::write(module.join("backend_override.tf"), backend_block)
            .map_err(|e| prep(e.to_string()))?;
        let server = match req.backend_config {
            Some(_) => None,
            None => Some(
                StateServer::start(
                    &req.object.namespace,
                    req.workspace,
                    req.state_suffix,
                    self.locks.clone(),
                )
                .await
                .map_err(|e| prep(format!("starting the state store: {e}")))?,
            ),
        };
        let mut secrets: Vec<String> = req.sensitive.to_vec();
        if let Some(s) = &server {
            secrets.push(s.token.clone());
        }
        let call = Call {
            runner: self,
            req,
            _work: work,
            root,
            module,
            server,
            deadline,
            secrets,
        };
        call.run(
            "init",
            &["init".into(), "-input=false".into(), "-no-color".into()],
        )
        .await?;
        if req.backend_config.is_some() && !req.workspace.is_empty() && req.workspace != "default" {
            call.run(
                "workspace select",
                &[
                    "workspace".into(),
                    "select".into(),
                    "-or-create=true".into(),
                    req.workspace.to_string(),
                ],
            )
            .await?;
        }
        Ok(call)
    }
}

fn parse_outputs(stdout: &str) -> Result<Outputs, String> {
    let v: Value =
        serde_json::from_str(stdout).map_err(|e| format!("output -json is not JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("output -json is not an object".into());
    };
    Ok(m.into_iter()
        .map(|(k, o)| {
            let sensitive = o.get("sensitive").and_then(Value::as_bool).unwrap_or(false);
            (
                k,
                OutputValue {
                    value: o.get("value").cloned().unwrap_or(Value::Null),
                    sensitive,
                },
            )
        })
        .collect())
}

#[async_trait]
impl PlanRunner for TofuRunner {
    async fn plan(&self, req: &PlanRequest<'_>) -> Result<Plan, PlanError> {
        let call = self.prepare(req).await?;
        let vars_file = call.root.join("trueup.tfvars.json");
        let plan_file = call.root.join("tfplan");
        let vars = serde_json::to_vec(req.vars)
            .map_err(|e| PlanError::new(call.step("plan"), e.to_string()))?;
        write_private(&vars_file, &vars)
            .map_err(|e| PlanError::new(call.step("plan"), format!("writing variables: {e}")))?;
        let mut args = vec![
            "plan".to_string(),
            "-input=false".into(),
            "-no-color".into(),
            format!("-out={}", plan_file.display()),
            format!("-var-file={}", vars_file.display()),
        ];
        if req.destroy {
            args.push("-destroy".into());
        }
        let planned = call.run("plan", &args).await?;
        let shown = call
            .run(
                "show",
                &[
                    "show".into(),
                    "-json".into(),
                    "-no-color".into(),
                    plan_file.display().to_string(),
                ],
            )
            .await?;
        let json: Value = serde_json::from_str(&shown.stdout).map_err(|e| {
            PlanError::new(call.step("show"), format!("show -json is not JSON: {e}"))
        })?;
        let file = std::fs::read(&plan_file).map_err(|e| {
            PlanError::new(call.step("plan"), format!("reading the saved plan: {e}"))
        })?;
        Ok(Plan {
            file,
            json,
            human: call.redact(&planned.stdout),
        })
    }

    async fn apply(&self, req: &PlanRequest<'_>, plan: &Plan) -> Result<Outputs, PlanError> {
        let call = self.prepare(req).await?;
        let plan_file = call.root.join("tfplan");
        write_private(&plan_file, &plan.file).map_err(|e| {
            PlanError::new(call.step("apply"), format!("writing the saved plan: {e}"))
        })?;
        // A saved plan carries its variables; the CLI applies it as it is, or refuses it as stale.
        call.run(
            "apply",
            &[
                "apply".into(),
                "-input=false".into(),
                "-no-color".into(),
                plan_file.display().to_string(),
            ],
        )
        .await?;
        let out = call
            .run(
                "output",
                &["output".into(), "-json".into(), "-no-color".into()],
            )
            .await?;
        parse_outputs(&out.stdout).map_err(|e| PlanError::new(call.step("output"), e))
    }

    async fn outputs(&self, req: &PlanRequest<'_>) -> Result<Outputs, PlanError> {
        let call = self.prepare(req).await?;
        let out = call
            .run(
                "output",
                &["output".into(), "-json".into(), "-no-color".into()],
            )
            .await?;
        parse_outputs(&out.stdout).map_err(|e| PlanError::new(call.step("output"), e))
    }
}

/// Writes a file only its owner can read (variables may hold secrets).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
