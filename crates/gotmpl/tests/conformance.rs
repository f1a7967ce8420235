//! Conformance against real Helm: every chart under tests/charts is
//! rendered by `helm template` and by this crate, and the texts must match.
//!
//! Helm comes from `TRUEUP_HELM` or /work/tools/helm/helm (installed by
//! scripts/install-helm.sh); without it the test prints a skip message.
//! Each chart may have a `conformance-values.yaml` passed with `-f`.

use std::path::{Path, PathBuf};
use std::process::Command;
use trueup_gotmpl::{format_manifests, render_chart, ChartOptions};

fn helm() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TRUEUP_HELM") {
        let p = PathBuf::from(p);
        if p.exists() {
            return Some(p);
        }
    }
    let p = PathBuf::from("/work/tools/helm/helm");
    p.exists().then_some(p)
}

fn charts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts")
}

/// Masks values that are random by design (`randAlphaNum` output etc.):
/// any line containing `# masked` has its value replaced.
fn mask(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.contains("masked-") {
                match l.find("masked-") {
                    Some(i) => format!("{}masked-XXX", &l[..i]),
                    None => l.to_string(),
                }
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ours(chart: &Path, values: &serde_json::Value) -> Result<String, String> {
    let opts = ChartOptions {
        release_name: "conf".into(),
        namespace: "default".into(),
        ..ChartOptions::default()
    };
    render_chart(chart, &opts, values)
        .map(|f| format_manifests(&f))
        .map_err(|e| format!("Error: {}", e.helm_message()))
}

#[test]
fn charts_render_like_helm() {
    let Some(helm) = helm() else {
        println!("SKIP conformance: no helm binary (set TRUEUP_HELM or run scripts/install-helm.sh /work/tools/helm)");
        return;
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(charts_dir())
        .expect("tests/charts")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Chart.yaml").exists())
        .collect();
    dirs.sort();
    let mut passed = 0;
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let vals_file = dir.join("conformance-values.yaml");
        let mut cmd = Command::new(&helm);
        cmd.arg("template")
            .arg("conf")
            .arg(dir)
            .arg("--namespace")
            .arg("default");
        let mut values = serde_json::json!({});
        if vals_file.exists() {
            cmd.arg("-f").arg(&vals_file);
            let text = std::fs::read_to_string(&vals_file).expect("values");
            let v = trueup_gotmpl::yaml::from_yaml_str(&text).expect("values parse");
            values = v.to_json();
        }
        let out = cmd.output().expect("run helm");
        let expected = if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err
                .lines()
                .find(|l| l.starts_with("Error:"))
                .unwrap_or_default()
                .to_string())
        };
        let got = ours(dir, &values);
        let (e, g) = match (&expected, &got) {
            (Ok(e), Ok(g)) => (mask(e), mask(g)),
            (Err(e), Err(g)) => (e.clone(), g.lines().next().unwrap_or_default().to_string()),
            (Ok(e), Err(g)) => (e.clone(), g.clone()),
            (Err(e), Ok(g)) => (e.clone(), g.clone()),
        };
        if e == g {
            passed += 1;
        } else {
            let diff: Vec<String> = e
                .lines()
                .zip(g.lines())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .take(5)
                .map(|(i, (a, b))| format!("  line {}: helm {a:?}\n           ours {b:?}", i + 1))
                .collect();
            failures.push(format!(
                "{name}: output differs ({} vs {} lines)\n{}",
                e.lines().count(),
                g.lines().count(),
                diff.join("\n")
            ));
        }
    }
    println!("conformance: {passed} passed, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "charts differing from helm:\n{}",
        failures.join("\n")
    );
}
