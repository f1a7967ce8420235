//! Conformance with the real tool: every fixture under `tests/fixtures/kustomize/` is rendered
//! by `kubectl kustomize` (Kustomize v5.5) and by `render_to_yaml`, and the two must agree.
//!
//! - A fixture is a directory; its kustomization root is the directory itself, or the
//!   relative path written in its `ROOT` file (for trees with bases and overlays).
//! - Fixtures named `error-*` must fail in both tools; an `expect-error` file holds text our
//!   message must contain (so errors keep naming the file and the cause).
//! - Outputs must hold the same documents in the same order with the same values; the test
//!   also counts the fixtures whose text is byte-identical and fails if any is not, printing
//!   a diff of the first lines that differ.
//!
//! Set `KUSTOMIZE_FIXTURE=name` to run one fixture. Without kubectl the test says so and
//! skips: CI installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use trueup_appliers::kustomize::{render_to_yaml, RenderOptions};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kustomize")
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn kubectl_kustomize(dir: &Path) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn docs(text: &str) -> Vec<serde_json::Value> {
    trueup_core::yaml::parse_documents(text, "output").expect("output parses as YAML")
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  kubectl: {x:?}\n  trueup:  {y:?}", i + 1);
        }
    }
    format!(
        "lengths differ: kubectl {} lines, trueup {} lines",
        a.lines().count(),
        b.lines().count()
    )
}

#[test]
fn fixtures_match_kubectl_kustomize() {
    if !kubectl_available() {
        // CI installs kubectl and sets this: there, a missing oracle is a failure, not a skip.
        assert!(
            std::env::var_os("TRUEUP_REQUIRE_ORACLES").is_none(),
            "kubectl is required (TRUEUP_REQUIRE_ORACLES is set)"
        );
        println!("SKIPPED: kubectl is not installed, so the kustomize conformance fixtures cannot be checked");
        return;
    }
    let only = std::env::var("KUSTOMIZE_FIXTURE").ok();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            only.as_deref()
                .is_none_or(|o| p.file_name().is_some_and(|n| n == o))
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixtures found");

    let (mut text_identical, mut value_identical, mut errors_agree) = (0, 0, 0);
    let mut failures: Vec<String> = Vec::new();
    let opts = RenderOptions::default();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let root = match std::fs::read_to_string(case.join("ROOT")) {
            Ok(r) => case.join(r.trim()),
            Err(_) => case.clone(),
        };
        let theirs = kubectl_kustomize(&root);
        let ours = render_to_yaml(&root, &opts);
        if name.starts_with("error-") {
            match (&theirs, &ours) {
                (Err(_), Err(e)) => {
                    let msg = e.to_string();
                    if let Ok(want) = std::fs::read_to_string(case.join("expect-error")) {
                        if !msg.contains(want.trim()) {
                            failures.push(format!(
                                "{name}: our error {msg:?} does not mention {:?}",
                                want.trim()
                            ));
                            continue;
                        }
                    }
                    errors_agree += 1;
                }
                (Ok(_), _) => {
                    failures.push(format!("{name}: kubectl succeeded on an error fixture"))
                }
                (Err(_), Ok(_)) => failures.push(format!("{name}: kubectl failed but we rendered")),
            }
            continue;
        }
        match (theirs, ours) {
            (Ok(t), Ok(o)) => {
                if docs(&t) != docs(&o) {
                    failures.push(format!(
                        "{name}: values differ; {}",
                        first_difference(&t, &o)
                    ));
                    continue;
                }
                value_identical += 1;
                if t == o {
                    text_identical += 1;
                } else {
                    failures.push(format!(
                        "{name}: same values, different text; {}",
                        first_difference(&t, &o)
                    ));
                }
            }
            (Err(e), Ok(_)) => failures.push(format!(
                "{name}: kubectl failed ({}) but we rendered",
                e.trim()
            )),
            (Ok(_), Err(e)) => failures.push(format!("{name}: we failed: {e}")),
            (Err(_), Err(_)) => failures.push(format!("{name}: both failed on a success fixture")),
        }
    }
    let ok_cases = cases.len()
        - cases
            .iter()
            .filter(|c| {
                c.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("error-")
            })
            .count();
    println!(
        "kustomize conformance: {} fixtures; {value_identical}/{ok_cases} value-identical, {text_identical}/{ok_cases} text-identical, {errors_agree} error fixtures agree",
        cases.len()
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) disagree with kubectl kustomize:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
