//! The committed CRDs (`config/crd/`) are what the generator prints, and the deploy manifests
//! (`config/default`) render the same with `kubectl kustomize` and with trueup's own renderer.
//!
//! After changing an API type, regenerate the CRDs:
//!
//! ```sh
//! TRUEUP_UPDATE_CRDS=1 cargo test -p trueup-kube --test crds
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
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

fn kubectl_kustomize(dir: &Path) -> Option<String> {
    match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "kubectl kustomize {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8(out.stdout).expect("utf-8"))
        }
        Err(e) => {
            if std::env::var("TRUEUP_REQUIRE_ORACLES").is_ok_and(|v| v == "1") {
                panic!("TRUEUP_REQUIRE_ORACLES=1 but kubectl cannot run: {e}");
            }
            eprintln!("SKIP: kubectl cannot run: {e}");
            None
        }
    }
}

#[test]
fn deploy_manifests_render_the_same_with_kubectl_and_trueup() {
    use trueup_appliers::kustomize::{render_to_yaml, RenderOptions};
    for dir in [
        "config/default",
        "config/crd",
        "config/rbac",
        "config/manager",
    ] {
        let dir = repo_root().join(dir);
        let Some(reference) = kubectl_kustomize(&dir) else {
            return;
        };
        let ours = render_to_yaml(&dir, &RenderOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(ours, reference, "{}", dir.display());
    }
    // What config/default installs.
    let all = render_to_yaml(
        &repo_root().join("config/default"),
        &RenderOptions::default(),
    )
    .unwrap();
    let objects = trueup_core::yaml::parse_objects(&all, "config/default").unwrap();
    let mut kinds: Vec<String> = objects.iter().map(|o| o.kind().to_string()).collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "Deployment"
        ]
    );
    let deploy = objects.iter().find(|o| o.kind() == "Deployment").unwrap();
    let container = &deploy.0["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!([
            "operator",
            "--in-cluster",
            "--leader-elect",
            "--health-addr=:9440"
        ])
    );
    // Flux's probes: /healthz and /readyz on the named port `healthz`.
    assert_eq!(
        container["ports"],
        serde_json::json!([{"containerPort": 9440, "name": "healthz", "protocol": "TCP"}])
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        serde_json::json!({"path": "/healthz", "port": "healthz"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        serde_json::json!({"path": "/readyz", "port": "healthz"})
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        deploy.0["spec"]["template"]["spec"]["serviceAccountName"],
        "trueup"
    );
}
