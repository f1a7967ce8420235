//! A native Kustomize renderer: kustomization directories in, Kubernetes objects out, with the
//! same result (and the same YAML text) as `kubectl kustomize` (Kustomize v5.5).
//!
//! No kustomize binary or Go code is involved: files are parsed once, overlays that share a
//! base render it once per call (bases are memoised by canonical path within a render), every
//! transformation works in place on `serde_json` values, and the output is serialized once by
//! an emitter that writes go-yaml v3's style ([`to_yaml`]).
//!
//! Deliberate differences from `kubectl kustomize`:
//! - a directory without a kustomization file renders like Flux's kustomize-controller does
//!   (it generates a kustomization listing every YAML file below the directory), where
//!   kubectl fails; only [`render_dir`] and [`render_to_yaml`] at the top level do this, a
//!   base without a kustomization file is still an error;
//! - remote bases (git or HTTP URLs) are rejected: there is no network here;
//! - exec/container KRM plugins (`generators:`, `transformers:`, `validators:` listing plugin
//!   configs) and `helmCharts` are rejected with a message naming the field.
//!
//! All entry points are synchronous and thread-safe (no shared mutable state).

mod build;
pub mod emit;
mod fastyaml;
mod kustfile;
mod nameref;
mod resource;
mod smp;
mod transform;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use build::RenderError;
use trueup_core::{Object, ResourceSet};

/// Options of a render.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Allow kustomizations to read files outside their own directory (kustomize's
    /// `--load-restrictor LoadRestrictionsNone`). Off by default, like kustomize.
    pub load_restrictor_none: bool,
    /// For [`render_to_yaml`]: render a top-level directory that has no kustomization file the
    /// way Flux does (a generated kustomization listing all YAML files) instead of failing
    /// like kubectl. [`render_dir`] and [`render_with_overlay`] always do.
    pub generate_missing_kustomization: bool,
}

impl RenderOptions {
    /// The options kustomize-controller uses.
    pub fn flux() -> Self {
        RenderOptions {
            load_restrictor_none: false,
            generate_missing_kustomization: true,
        }
    }
}

/// Renders the kustomization in `dir`.
///
/// A directory without a kustomization file is rendered like Flux does: all YAML files below
/// it (recursively, in path order) are the resources. `kubectl kustomize` fails there instead.
pub fn render_dir(dir: &Path, opts: &RenderOptions) -> Result<ResourceSet, RenderError> {
    let objects = build::Builder::new(opts).render_with(dir, None, true)?;
    into_set(dir, objects)
}

/// Renders `dir` to the exact text `kubectl kustomize DIR` prints.
///
/// Like kubectl, a directory without a kustomization file is an error here unless
/// [`RenderOptions::generate_missing_kustomization`] is set.
pub fn render_to_yaml(dir: &Path, opts: &RenderOptions) -> Result<String, RenderError> {
    let objects =
        build::Builder::new(opts).render_with(dir, None, opts.generate_missing_kustomization)?;
    Ok(emit::documents_into_string(
        objects.into_iter().map(|o| o.0),
    ))
}

/// Writes objects the way `kubectl kustomize` prints them: documents separated by `---`,
/// keys sorted, go-yaml v3 quoting and indentation.
pub fn to_yaml(objects: &[Object]) -> String {
    emit::documents_to_string(objects.iter().map(|o| &o.0))
}

/// The fields of a Flux `Kustomization` spec that act like an overlay on the source directory.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    pub name_prefix: Option<String>,
    pub name_suffix: Option<String>,
    /// `spec.targetNamespace`.
    pub namespace: Option<String>,
    pub patches: Vec<trueup_core::api::meta::Patch>,
    pub images: Vec<trueup_core::api::meta::Image>,
    /// Component directories, relative to `dir`.
    pub components: Vec<String>,
    /// `spec.commonMetadata.labels`.
    pub common_labels: BTreeMap<String, String>,
    /// `spec.commonMetadata.annotations`.
    pub common_annotations: BTreeMap<String, String>,
}

/// Renders `dir` with Flux's overlay fields applied on top, as kustomize-controller does by
/// wrapping the directory in a generated kustomization. Like Flux, commonMetadata labels are
/// added to `metadata.labels` only (never to selectors).
pub fn render_with_overlay(
    dir: &Path,
    overlay: &Overlay,
    opts: &RenderOptions,
) -> Result<ResourceSet, RenderError> {
    let objects = build::Builder::new(opts).render_with(dir, Some(overlay), true)?;
    into_set(dir, objects)
}

fn into_set(dir: &Path, objects: Vec<Object>) -> Result<ResourceSet, RenderError> {
    ResourceSet::from_objects(objects).map_err(|e| RenderError::Invalid {
        file: PathBuf::from(dir),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.25\n        envFrom:\n        - configMapRef:\n            name: cfg\n";
    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: b\n";

    #[test]
    fn directory_without_kustomization_renders_all_yaml_like_flux() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "apps/deploy.yaml", DEPLOY);
        write(tmp.path(), "cm.yml", CM);
        write(tmp.path(), "README.md", "not yaml");
        let set = render_dir(tmp.path(), &RenderOptions::default()).unwrap();
        let names: Vec<_> = set.iter().map(|o| o.display_name()).collect();
        assert_eq!(names, ["ConfigMap/cfg", "Deployment/web"]);
        // kubectl fails there, and so does the kubectl-compatible text renderer by default.
        let err = render_to_yaml(tmp.path(), &RenderOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no kustomization.yaml"), "{err}");
        let opts = RenderOptions {
            generate_missing_kustomization: true,
            ..Default::default()
        };
        assert!(render_to_yaml(tmp.path(), &opts)
            .unwrap()
            .contains("name: web"));
    }

    #[test]
    fn flux_overlay_fields_apply_on_top_of_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "kustomization.yaml",
            "resources:\n- deploy.yaml\n- cm.yaml\n",
        );
        write(tmp.path(), "deploy.yaml", DEPLOY);
        write(tmp.path(), "cm.yaml", CM);
        let overlay = Overlay {
            name_prefix: Some("team-".into()),
            namespace: Some("apps".into()),
            images: vec![trueup_core::api::meta::Image {
                name: "nginx".into(),
                new_tag: Some("1.27".into()),
                ..Default::default()
            }],
            patches: vec![trueup_core::api::meta::Patch {
                patch: "- op: add\n  path: /spec/replicas\n  value: 3\n".into(),
                target: Some(trueup_core::api::meta::Selector {
                    kind: Some("Deployment".into()),
                    ..Default::default()
                }),
            }],
            common_labels: [("owner".to_string(), "team".to_string())].into(),
            ..Default::default()
        };
        let set = render_with_overlay(tmp.path(), &overlay, &RenderOptions::default()).unwrap();
        let deploy = set.iter().find(|o| o.kind() == "Deployment").unwrap();
        assert_eq!(deploy.name(), "team-web");
        assert_eq!(deploy.namespace(), Some("apps"));
        assert_eq!(deploy.label("owner"), Some("team"));
        let spec = deploy.spec().unwrap();
        assert_eq!(spec["replicas"], 3);
        let c = &spec["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.27");
        // The reference to the renamed ConfigMap follows the prefix.
        assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "team-cfg");
    }

    #[test]
    fn errors_name_the_file_and_the_entry() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "kustomization.yaml",
            "resources:\n- missing.yaml\n",
        );
        let err = render_dir(tmp.path(), &RenderOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kustomization.yaml") && err.contains("missing.yaml"),
            "{err}"
        );

        write(tmp.path(), "kustomization.yaml", "resources:\n- bad.yaml\n");
        write(tmp.path(), "bad.yaml", "apiVersion: v1\nkind: [unclosed\n");
        let err = render_dir(tmp.path(), &RenderOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.yaml") && err.contains("invalid YAML"),
            "{err}"
        );

        write(
            tmp.path(),
            "kustomization.yaml",
            "resources:\n- github.com/org/repo//deploy?ref=main\n",
        );
        let err = render_dir(tmp.path(), &RenderOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("remote bases are not supported (no network)"),
            "{err}"
        );
    }

    #[test]
    fn load_restrictor_none_allows_files_outside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "shared/cm.yaml", CM);
        write(
            tmp.path(),
            "app/kustomization.yaml",
            "resources:\n- ../shared/cm.yaml\n",
        );
        let app = tmp.path().join("app");
        let err = render_dir(&app, &RenderOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not in or below"), "{err}");
        let opts = RenderOptions {
            load_restrictor_none: true,
            ..Default::default()
        };
        assert_eq!(render_dir(&app, &opts).unwrap().len(), 1);
    }

    #[test]
    fn rendering_is_thread_safe() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "kustomization.yaml",
            "namePrefix: x-\nresources:\n- deploy.yaml\n- cm.yaml\n",
        );
        write(tmp.path(), "deploy.yaml", DEPLOY);
        write(tmp.path(), "cm.yaml", CM);
        let expected = render_to_yaml(tmp.path(), &RenderOptions::default()).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| render_to_yaml(tmp.path(), &RenderOptions::default()).unwrap()))
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), expected);
            }
        });
    }
}
