//! The committed CRDs (`config/crd/`) are what the generator prints, and the deploy manifests
//! (`config/default`) render the same with `kubectl kustomize` and with trueup's own renderer.
//!
//! After changing an API type, regenerate the CRDs:
//!
//! ```sh
//! TRUEUP_UPDATE_CRDS=1 cargo test -p trueup-kube --test crds
//! ```

use std::path::{Path, PathBuf};
use trueup_core::api::FluxKind;
use trueup_kube::crd;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

#[test]
fn committed_crds_are_what_the_generator_prints() {
    let dir = repo_root().join("config/crd");
    let mut expected: Vec<(String, String)> = FluxKind::ALL
        .into_iter()
        .map(|k| {
            (
                crd::file_name(k),
                crd::crd_yaml(k).unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .collect();
    expected.push(("kustomization.yaml".into(), crd::kustomization_yaml()));
    if std::env::var("TRUEUP_UPDATE_CRDS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &expected {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut stale = Vec::new();
    for (name, text) in &expected {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if &committed == text => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    // A CRD file of a kind trueup no longer serves would still be installed by hand.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !expected.iter().any(|(n, _)| *n == name) {
            stale.push(format!("{name} is not generated"));
        }
    }
    assert!(
        stale.is_empty(),
        "config/crd is stale ({}); regenerate with TRUEUP_UPDATE_CRDS=1 cargo test -p trueup-kube --test crds",
        stale.join(", ")
    );
}
