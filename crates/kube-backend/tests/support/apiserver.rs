//! One real kube-apiserver per test process, shared by the test files that need one
//! (`crates/kube-backend/tests/kube.rs`, and `tests/kube_operator.rs` at the repository root,
//! which includes this file by path).
//!
//! The server: `TRUEUP_KUBECONFIG` when set (nothing is started or stopped), else the first
//! caller starts one with `scripts/kube-apiserver/start.sh` (no controller-manager) and a guard
//! process stops exactly that run when the test binary exits, whichever way it exits. Without
//! the built binaries callers get `None` after a SKIP message, unless
//! `TRUEUP_REQUIRE_ORACLES=1` (CI), where that is a failure.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

pub struct Server {
    pub kubeconfig: PathBuf,
}

/// The repository root: the first ancestor of the crate under test that holds the scripts.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("scripts/kube-apiserver/start.sh").exists())
        .unwrap_or(here)
        .canonicalize()
        .expect("repository root")
}

pub fn require_oracles() -> bool {
    std::env::var("TRUEUP_REQUIRE_ORACLES").is_ok_and(|v| v == "1")
}

fn skip_or_fail(why: &str) -> Option<Server> {
    if require_oracles() {
        panic!("TRUEUP_REQUIRE_ORACLES=1 but {why}");
    }
    eprintln!("SKIP: {why} (run scripts/kube-apiserver/setup.sh)");
    None
}

// The stop guard is never waited on: it must outlive this process to stop the server after it.
#[allow(clippy::zombie_processes)]
fn start_server() -> Option<Server> {
    if let Some(kc) = std::env::var_os("TRUEUP_KUBECONFIG") {
        return Some(Server {
            kubeconfig: PathBuf::from(kc),
        });
    }
    let cache = std::env::var_os("TRUEUP_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/trueup-tools/kube-v1.20")
        });
    if !cache.join("bin/kube-apiserver").exists() {
        return skip_or_fail(&format!(
            "no kube-apiserver in {}",
            cache.join("bin").display()
        ));
    }
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        return skip_or_fail("kubectl is not installed");
    }
    let scripts = repo_root().join("scripts/kube-apiserver");
    let out = Command::new(scripts.join("start.sh"))
        .env("TRUEUP_KUBE_CONTROLLER_MANAGER", "0")
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
    assert!(!run.is_empty(), "start.sh printed no run directory");
    // The guard outlives nothing but this process: when the test binary exits (pass, fail or
    // abort) it stops exactly the PIDs that this run started.
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
    Some(Server {
        kubeconfig: PathBuf::from(run).join("kubeconfig"),
    })
}

/// The shared server, started on first use.
pub fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    static START: Mutex<()> = Mutex::new(());
    let _g = START.lock().unwrap_or_else(|p| p.into_inner());
    SERVER.get_or_init(start_server).as_ref()
}
