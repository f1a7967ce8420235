//! `.Release.IsInstall`, `.Release.IsUpgrade` and `.Release.Revision` come
//! from the render options; the defaults are those of `helm template`, and
//! an upgrade render matches `helm template --is-upgrade`.

use std::path::{Path, PathBuf};
use std::process::Command;
use trueup_gotmpl::{format_manifests, render_chart, ChartOptions};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/release-chart")
}

fn helm() -> Option<PathBuf> {
    let p = std::env::var("TRUEUP_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/work/tools/helm/helm"));
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("TRUEUP_REQUIRE_ORACLES").is_none(),
        "helm is required (TRUEUP_REQUIRE_ORACLES is set): run crates/gotmpl/scripts/install-helm.sh"
    );
    println!("SKIP: no helm binary (set TRUEUP_HELM)");
    None
}

fn render(opts: &ChartOptions) -> String {
    let files = render_chart(&chart(), opts, &serde_json::json!({})).expect("render");
    format_manifests(&files)
}

fn data_line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .trim()
}

#[test]
fn defaults_are_those_of_helm_template() {
    let opts = ChartOptions {
        release_name: "rel".into(),
        ..Default::default()
    };
    let out = render(&opts);
    assert_eq!(data_line(&out, "isInstall"), "isInstall: \"true\"");
    assert_eq!(data_line(&out, "isUpgrade"), "isUpgrade: \"false\"");
    assert_eq!(data_line(&out, "revision"), "revision: \"1\"");
    let Some(helm) = helm() else { return };
    let h = Command::new(helm)
        .args(["template", "rel"])
        .arg(chart())
        .output()
        .expect("run helm");
    assert!(h.status.success(), "{}", String::from_utf8_lossy(&h.stderr));
    assert_eq!(String::from_utf8_lossy(&h.stdout), out);
}

#[test]
fn upgrade_render_sets_is_upgrade_and_revision() {
    let opts = ChartOptions {
        release_name: "rel".into(),
        is_install: false,
        is_upgrade: true,
        revision: 7,
        ..Default::default()
    };
    let out = render(&opts);
    assert_eq!(data_line(&out, "isInstall"), "isInstall: \"false\"");
    assert_eq!(data_line(&out, "isUpgrade"), "isUpgrade: \"true\"");
    assert_eq!(data_line(&out, "revision"), "revision: \"7\"");
    assert_eq!(data_line(&out, "mode"), "mode: upgrade");
    // helm template --is-upgrade renders the same, except the revision it
    // cannot set (always 1).
    let Some(helm) = helm() else { return };
    let h = Command::new(helm)
        .args(["template", "rel", "--is-upgrade"])
        .arg(chart())
        .output()
        .expect("run helm");
    assert!(h.status.success(), "{}", String::from_utf8_lossy(&h.stderr));
    let one = render(&ChartOptions {
        revision: 1,
        ..opts
    });
    assert_eq!(String::from_utf8_lossy(&h.stdout), one);
}
