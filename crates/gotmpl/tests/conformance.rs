//! Conformance against real Helm: every chart under tests/charts is
//! rendered by `helm template` and by this crate, and the texts must match.
//!
//! Helm comes from `TRUEUP_HELM` or /work/tools/helm/helm (installed by
//! scripts/install-helm.sh); without it the test prints a skip message.
//! Each chart may have a `conformance-values.yaml` passed with `-f`.

use std::path::{Path, PathBuf};
use std::process::Command;
use trueup_gotmpl::{template, TemplateOptions};

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

/// Extra `helm template` arguments for a chart: `conformance-args`, one
/// argument per line (e.g. `--set` then `a=b`, or `--include-crds`).
fn extra_args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("conformance-args"))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn ours(chart: &Path, values_file: Option<&Path>, args: &[String]) -> Result<String, String> {
    let mut opts = TemplateOptions {
        release_name: "conf".into(),
        chart: chart.to_path_buf(),
        namespace: Some("default".into()),
        ..TemplateOptions::default()
    };
    if let Some(f) = values_file {
        opts.values_files.push(f.to_path_buf());
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut next = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--set" => opts.set.push(next()),
            "--set-string" => opts.set_string.push(next()),
            "-f" | "--values" => opts.values_files.push(chart.join(next())),
            "--kube-version" => opts.kube_version = Some(next()),
            "--api-versions" => opts.api_versions.push(next()),
            "--include-crds" => opts.include_crds = true,
            "-n" | "--namespace" => opts.namespace = Some(next()),
            other => panic!("conformance-args: unsupported {other}"),
        }
    }
    template(&opts).map_err(|e| format!("Error: {e}"))
}

#[test]
fn charts_render_like_helm() {
    let Some(helm) = helm() else {
        // CI installs helm and sets this: there, a missing oracle is a failure, not a skip.
        assert!(
            std::env::var_os("TRUEUP_REQUIRE_ORACLES").is_none(),
            "helm is required (TRUEUP_REQUIRE_ORACLES is set): run crates/gotmpl/scripts/install-helm.sh"
        );
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
    let mut masked: Vec<String> = Vec::new();
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
        if vals_file.exists() {
            cmd.arg("-f").arg(&vals_file);
        }
        let args = extra_args(dir);
        for a in &args {
            // Values files named in the args are relative to the chart.
            if a.ends_with(".yaml") && !a.contains('=') {
                cmd.arg(dir.join(a));
            } else {
                cmd.arg(a);
            }
        }
        let out = cmd.output().expect("run helm");
        let expected = if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            // Helm may print warnings first; the error runs to the end.
            let at = err.find("Error:").unwrap_or(0);
            Err(err[at..].trim_end().to_string())
        };
        let got = ours(
            dir,
            vals_file.exists().then_some(vals_file.as_path()),
            &args,
        );
        let (e, g) = match (&expected, &got) {
            (Ok(e), Ok(g)) => {
                if e.contains("masked-") {
                    masked.push(name.clone());
                }
                (mask(e), mask(g))
            }
            (Err(e), Err(g)) => (e.clone(), g.trim_end().to_string()),
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
    println!(
        "conformance: {passed} passed, {} failed ({} of the passed compared with random values masked: {})",
        failures.len(),
        masked.len(),
        masked.join(", ")
    );
    assert!(
        failures.is_empty(),
        "charts differing from helm:\n{}",
        failures.join("\n")
    );
}
