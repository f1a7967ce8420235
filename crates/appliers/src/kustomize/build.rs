//! Accumulation of a kustomization tree, in kustomize's order: resources (recursively), then
//! components, then generators, then transformers (patchesStrategicMerge, patches, namespace,
//! prefix/suffix, labels, annotations, patchesJson6902, replicas, images, replacements). At
//! the very end, once for the whole tree: content-hash suffixes, name-reference fix-ups, vars,
//! and the output order.

use super::kustfile::{
    self, GeneratorOptions, GeneratorSpec, Kustomization, PatchSpec, Replacement, ReplacementEntry,
    StringMap, Target, VarSpec,
};
use super::nameref::{self, RefRule};
use super::resource::{effective_ns, split_gv, Res};
use super::transform::{self, Fs};
use super::{smp, Overlay, RenderOptions};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use trueup_core::Object;

/// Why a kustomization cannot be rendered. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", file.display())]
    Yaml {
        file: PathBuf,
        #[source]
        source: trueup_core::yaml::YamlError,
    },
    #[error("{}: invalid kustomization: {source}", file.display())]
    Kustomization {
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {field}: '{entry}' does not exist ({})", file.display(), path.display())]
    Missing {
        file: PathBuf,
        field: &'static str,
        entry: String,
        path: PathBuf,
    },
    #[error("{}: no kustomization.yaml, kustomization.yml or Kustomization in the directory", dir.display())]
    NoKustomization { dir: PathBuf },
    #[error("{}: {field}: '{entry}': security; file '{}' is not in or below '{}' (load restrictions allow only files inside the kustomization root)", file.display(), path.display(), root.display())]
    OutsideRoot {
        file: PathBuf,
        field: &'static str,
        entry: String,
        path: PathBuf,
        root: PathBuf,
    },
    #[error("{}: cycle in kustomizations: {}", file.display(), chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -> "))]
    Cycle { file: PathBuf, chain: Vec<PathBuf> },
    #[error("{}: {field}: '{entry}': remote bases are not supported (no network)", file.display())]
    Remote {
        file: PathBuf,
        field: &'static str,
        entry: String,
    },
    #[error("{}: {field}: {message}", file.display())]
    Field {
        file: PathBuf,
        field: String,
        message: String,
    },
    #[error("{}: {field}: invalid JSON patch: {source}", file.display())]
    JsonPatch {
        file: PathBuf,
        field: String,
        #[source]
        source: json_patch::PatchError,
    },
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// What a kustomization directory accumulates.
#[derive(Clone, Default)]
pub struct Acc {
    pub res: Vec<Res>,
    pub vars: Vec<(VarSpec, PathBuf)>,
    pub refs: Vec<Arc<RefRule>>,
    pub label_specs: Vec<Fs>,
    pub annotation_specs: Vec<Fs>,
    pub var_specs: Vec<Fs>,
    pub image_specs: Vec<Fs>,
}

pub struct Builder<'a> {
    opts: &'a RenderOptions,
    /// Accumulated bases by canonical path: overlays that share a base render it once.
    memo: HashMap<PathBuf, Acc>,
    /// Kustomizations being accumulated, outermost first, to report cycles.
    stack: Vec<PathBuf>,
    /// How many more times each base directory will be included: bases used more than once
    /// are memoised, and the last user takes the memoised copy instead of cloning it.
    uses: HashMap<PathBuf, usize>,
    sort: Option<kustfile::SortOptions>,
    build_metadata: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RenderError + '_ {
    move |source| RenderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn field_err(file: &Path, field: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError::Field {
        file: file.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.starts_with("github.com/")
        || entry.starts_with("gitlab.com/")
        || entry.starts_with("bitbucket.org/")
        || entry.contains("?ref=")
        || entry.contains(".git//")
}

/// Lexically normalizes `a/b/../c` to `a/c` (for error messages and root checks of files
/// that do not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A kustomization file located in a directory.
struct KFile {
    dir: PathBuf,
    file: PathBuf,
    k: Kustomization,
}

impl<'a> Builder<'a> {
    pub fn new(opts: &'a RenderOptions) -> Self {
        Builder {
            opts,
            memo: HashMap::new(),
            stack: Vec::new(),
            uses: HashMap::new(),
            sort: None,
            build_metadata: Vec::new(),
        }
    }

    pub fn render_with(
        &mut self,
        dir: &Path,
        overlay: Option<&Overlay>,
        generate_missing: bool,
    ) -> Result<Vec<Object>, RenderError> {
        let root = dir.canonicalize().map_err(io_err(dir))?;
        let kf = match self.find_kustomization(&root)? {
            Some(kf) => kf,
            None if generate_missing => self.generated_kustomization(&root)?,
            None => {
                return Err(RenderError::NoKustomization {
                    dir: dir.to_path_buf(),
                })
            }
        };
        let mut seen = std::collections::HashSet::new();
        self.count_uses(&kf.dir, &kf.k, &mut seen);
        self.sort = kf.k.sort_options.clone();
        self.build_metadata = kf.k.build_metadata.clone();
        let mut acc = self.accumulate(kf, None, false)?;
        if let Some(ov) = overlay {
            self.apply_overlay(&root, &mut acc, ov)?;
        }
        self.finish(acc, &root)
    }

    /// Counts how often each base directory is included in the tree (a cheap pre-pass over
    /// kustomization files only). Unreadable entries are skipped here; the real pass reports
    /// them.
    fn count_uses(
        &mut self,
        dir: &Path,
        k: &Kustomization,
        seen: &mut std::collections::HashSet<PathBuf>,
    ) {
        for entry in k.bases.iter().chain(&k.resources).chain(&k.components) {
            if is_remote(entry) {
                continue;
            }
            let Ok(canon) = normalize(&dir.join(entry)).canonicalize() else {
                continue;
            };
            if !canon.is_dir() {
                continue;
            }
            *self.uses.entry(canon.clone()).or_insert(0) += 1;
            if seen.insert(canon.clone()) {
                if let Ok(Some(sub)) = self.find_kustomization(&canon) {
                    self.count_uses(&canon, &sub.k, seen);
                }
            }
        }
    }

    fn find_kustomization(&self, dir: &Path) -> Result<Option<KFile>, RenderError> {
        let mut found: Vec<PathBuf> = Vec::new();
        for name in KUSTOMIZATION_FILES {
            let p = dir.join(name);
            if p.is_file() {
                found.push(p);
            }
        }
        let Some(file) = found.first().cloned() else {
            return Ok(None);
        };
        if found.len() > 1 {
            return Err(RenderError::Invalid {
                file: dir.to_path_buf(),
                message: format!(
                    "found multiple kustomization files: {}",
                    found
                        .iter()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let text = std::fs::read_to_string(&file).map_err(io_err(&file))?;
        let docs = super::fastyaml::parse_documents(&text, &file.display().to_string()).map_err(
            |source| RenderError::Yaml {
                file: file.clone(),
                source,
            },
        )?;
        let value = docs.into_iter().next().unwrap_or(Value::Object(Map::new()));
        let k: Kustomization =
            serde_json::from_value(value).map_err(|source| RenderError::Kustomization {
                file: file.clone(),
                source,
            })?;
        Ok(Some(KFile {
            dir: dir.to_path_buf(),
            file,
            k,
        }))
    }

    /// Flux's generated kustomization: every `.yaml`/`.yml` file below `dir`, in path order.
    fn generated_kustomization(&self, dir: &Path) -> Result<KFile, RenderError> {
        fn collect(dir: &Path, base: &Path, out: &mut Vec<String>) -> Result<(), RenderError> {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .map_err(io_err(dir))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    collect(&p, base, out)?;
                } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                    if let Ok(rel) = p.strip_prefix(base) {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
            }
            Ok(())
        }
        let mut resources = Vec::new();
        collect(dir, dir, &mut resources)?;
        Ok(KFile {
            dir: dir.to_path_buf(),
            file: dir.join("kustomization.yaml"),
            k: Kustomization {
                resources,
                ..Default::default()
            },
        })
    }

    /// Accumulates a kustomization (or applies a component to `incoming`).
    fn accumulate(
        &mut self,
        kf: KFile,
        incoming: Option<Acc>,
        is_component: bool,
    ) -> Result<Acc, RenderError> {
        let KFile { dir, file, k } = kf;
        let kind = k
            .kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or("Kustomization");
        if kind != "Component" && kind != "Kustomization" {
            return Err(field_err(&file, "kind", format!("unknown kind '{kind}'")));
        }
        // kustomize checks the apiVersion against the kind (an empty one is defaulted).
        let required_version = if kind == "Component" {
            "kustomize.config.k8s.io/v1alpha1"
        } else {
            "kustomize.config.k8s.io/v1beta1"
        };
        if let Some(v) = k.api_version.as_deref().filter(|v| !v.is_empty()) {
            if v != required_version {
                return Err(field_err(
                    &file,
                    "apiVersion",
                    format!("apiVersion for {kind} should be {required_version}, found '{v}'"),
                ));
            }
        }
        if is_component && kind != "Component" {
            return Err(field_err(
                &file,
                "kind",
                format!("expected kind 'Component' for a component, found '{kind}'"),
            ));
        }
        if !is_component && kind == "Component" {
            return Err(field_err(
                &file,
                "kind",
                "a Component can only be listed under `components`",
            ));
        }
        for (field, present) in [
            ("generators", !k.generators.is_empty()),
            ("transformers", !k.transformers.is_empty()),
            ("validators", !k.validators.is_empty()),
            (
                "helmCharts",
                k.helm_charts.is_some() || k.helm_chart_inflation_generator.is_some(),
            ),
        ] {
            if present {
                return Err(field_err(
                    &file,
                    field,
                    "plugins and Helm charts are not supported by the native renderer",
                ));
            }
        }
        self.stack.push(dir.clone());
        let result = self.accumulate_inner(&dir, &file, &k, incoming);
        self.stack.pop();
        result
    }

    fn accumulate_inner(
        &mut self,
        dir: &Path,
        file: &Path,
        k: &Kustomization,
        incoming: Option<Acc>,
    ) -> Result<Acc, RenderError> {
        let mut acc = incoming.unwrap_or_default();
        for cfg in &k.configurations {
            self.load_configuration(dir, file, cfg, &mut acc)?;
        }
        for crd in &k.crds {
            // CRD schemas only add name references via openapi extensions; they must exist.
            self.restricted_file(dir, file, "crds", crd)?;
        }
        for (field, list) in [("bases", &k.bases), ("resources", &k.resources)] {
            for entry in list {
                self.add_resource(dir, file, field, entry, &mut acc)?;
            }
        }
        for entry in &k.components {
            if is_remote(entry) {
                return Err(RenderError::Remote {
                    file: file.to_path_buf(),
                    field: "components",
                    entry: entry.clone(),
                });
            }
            let p = normalize(&dir.join(entry));
            let canon = p.canonicalize().map_err(|_| RenderError::Missing {
                file: file.to_path_buf(),
                field: "components",
                entry: entry.clone(),
                path: p.clone(),
            })?;
            if self.stack.contains(&canon) {
                let mut chain = self.stack.clone();
                chain.push(canon);
                return Err(RenderError::Cycle {
                    file: file.to_path_buf(),
                    chain,
                });
            }
            let kf = self
                .find_kustomization(&canon)?
                .ok_or(RenderError::NoKustomization { dir: p.clone() })?;
            acc = self.accumulate(kf, Some(acc), true)?;
        }
        check_duplicates(file, &acc.res)?;
        let global = k.generator_options.clone().unwrap_or_default();
        for g in &k.config_map_generator {
            self.generate(dir, file, "configMapGenerator", g, &global, false, &mut acc)?;
        }
        for g in &k.secret_generator {
            self.generate(dir, file, "secretGenerator", g, &global, true, &mut acc)?;
        }
        for entry in &k.patches_strategic_merge {
            let text = if entry.contains('\n') || !looks_like_path(entry) {
                entry.clone()
            } else {
                let p = self.restricted_file(dir, file, "patchesStrategicMerge", entry)?;
                std::fs::read_to_string(&p).map_err(io_err(&p))?
            };
            let spec = PatchSpec {
                patch: Some(text),
                ..Default::default()
            };
            self.apply_patch(dir, file, "patchesStrategicMerge", &spec, &mut acc)?;
        }
        for p in &k.patches {
            self.apply_patch(dir, file, "patches", p, &mut acc)?;
        }
        if let Some(ns) = k.namespace.as_deref().filter(|s| !s.is_empty()) {
            for r in &mut acc.res {
                transform::set_namespace(r, ns);
            }
        }
        let prefix = k.name_prefix.as_deref().unwrap_or("");
        let suffix = k.name_suffix.as_deref().unwrap_or("");
        for r in &mut acc.res {
            transform::prefix_suffix(r, prefix, suffix);
        }
        if !k.common_labels.is_empty() {
            let mut specs: Vec<Fs> = transform::common_label_specs().to_vec();
            specs.extend(acc.label_specs.iter().cloned());
            for r in &mut acc.res {
                transform::add_labels(r, &k.common_labels, &specs);
            }
        }
        for l in &k.labels {
            let mut specs: Vec<Fs> = if l.include_selectors {
                let mut s = transform::common_label_specs().to_vec();
                s.extend(acc.label_specs.iter().cloned());
                s
            } else if l.include_templates {
                transform::template_label_specs().to_vec()
            } else {
                vec![Fs::new(None, None, None, "metadata/labels", true)]
            };
            specs.extend(l.fields.iter().map(Fs::from_spec));
            for r in &mut acc.res {
                transform::add_labels(r, &l.pairs, &specs);
            }
        }
        if !k.common_annotations.is_empty() {
            let mut specs = transform::annotation_specs().to_vec();
            specs.extend(acc.annotation_specs.iter().cloned());
            for r in &mut acc.res {
                transform::apply_specs(r, &specs, &mut |v| {
                    transform::set_pairs(v, &k.common_annotations)
                });
            }
        }
        for p in &k.patches_json6902 {
            self.apply_patch(dir, file, "patchesJson6902", p, &mut acc)?;
        }
        for rep in &k.replicas {
            let mut hit = false;
            for r in &mut acc.res {
                hit |= transform::replicas(r, &rep.name, rep.count);
            }
            let _ = hit;
        }
        if !k.images.is_empty() {
            for r in &mut acc.res {
                transform::images(r, &k.images);
            }
            if !acc.image_specs.is_empty() {
                let specs = acc.image_specs.clone();
                for r in &mut acc.res {
                    transform::apply_specs(r, &specs, &mut |v| {
                        if let Value::String(s) = v {
                            let mut tmp = Res::new(Map::new(), Arc::from(""));
                            tmp.obj.insert(
                                "containers".into(),
                                serde_json::json!([{"image": s.clone()}]),
                            );
                            transform::images(&mut tmp, &k.images);
                            if let Some(n) = tmp
                                .obj
                                .get("containers")
                                .and_then(|c| c.get(0))
                                .and_then(|c| c.get("image"))
                                .and_then(Value::as_str)
                            {
                                *s = n.to_string();
                            }
                        }
                    });
                }
            }
        }
        for entry in &k.replacements {
            let list: Vec<Replacement> = match entry {
                ReplacementEntry::Inline(r) => vec![r.clone()],
                ReplacementEntry::Path { path } => {
                    let p = self.restricted_file(dir, file, "replacements", path)?;
                    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
                    let docs = super::fastyaml::parse_documents(&text, &p.display().to_string())
                        .map_err(|source| RenderError::Yaml {
                            file: p.clone(),
                            source,
                        })?;
                    let mut out = Vec::new();
                    for d in docs {
                        let items = match d {
                            Value::Array(a) => a,
                            other => vec![other],
                        };
                        for it in items {
                            out.push(serde_json::from_value(it).map_err(|source| {
                                RenderError::Kustomization {
                                    file: p.clone(),
                                    source,
                                }
                            })?);
                        }
                    }
                    out
                }
            };
            for r in &list {
                super::build::replace(file, r, &mut acc.res)?;
            }
        }
        for v in &k.vars {
            if acc.vars.iter().any(|(x, _)| x.name == v.name) {
                return Err(field_err(
                    file,
                    "vars",
                    format!("var '{}' already encountered", v.name),
                ));
            }
            acc.vars.push((v.clone(), file.to_path_buf()));
        }
        Ok(acc)
    }

    fn load_configuration(
        &mut self,
        dir: &Path,
        file: &Path,
        entry: &str,
        acc: &mut Acc,
    ) -> Result<(), RenderError> {
        let p = self.restricted_file(dir, file, "configurations", entry)?;
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        let docs = super::fastyaml::parse_documents(&text, &p.display().to_string()).map_err(
            |source| RenderError::Yaml {
                file: p.clone(),
                source,
            },
        )?;
        let specs_of = |v: Option<&Value>| -> Result<Vec<Fs>, RenderError> {
            let Some(v) = v else { return Ok(Vec::new()) };
            let list: Vec<kustfile::FieldSpec> =
                serde_json::from_value(v.clone()).map_err(|source| RenderError::Kustomization {
                    file: p.clone(),
                    source,
                })?;
            Ok(list.iter().map(Fs::from_spec).collect())
        };
        for d in docs {
            acc.label_specs.extend(specs_of(d.get("commonLabels"))?);
            acc.annotation_specs
                .extend(specs_of(d.get("commonAnnotations"))?);
            acc.var_specs.extend(specs_of(d.get("varReference"))?);
            acc.image_specs.extend(specs_of(d.get("images"))?);
            if let Some(Value::Array(refs)) = d.get("nameReference") {
                for r in refs {
                    let kind = r
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let group = r.get("group").and_then(Value::as_str).map(str::to_string);
                    let referrers = specs_of(r.get("fieldSpecs"))?;
                    acc.refs.push(Arc::new(RefRule {
                        kind,
                        group,
                        referrers,
                    }));
                }
            }
        }
        Ok(())
    }

    /// Resolves a file entry, enforcing the load restrictions.
    fn restricted_file(
        &self,
        dir: &Path,
        file: &Path,
        field: &'static str,
        entry: &str,
    ) -> Result<PathBuf, RenderError> {
        if is_remote(entry) {
            return Err(RenderError::Remote {
                file: file.to_path_buf(),
                field,
                entry: entry.into(),
            });
        }
        let p = normalize(&dir.join(entry));
        let canon = p.canonicalize().map_err(|_| RenderError::Missing {
            file: file.to_path_buf(),
            field,
            entry: entry.into(),
            path: p.clone(),
        })?;
        if !self.opts.load_restrictor_none && !canon.starts_with(dir) {
            return Err(RenderError::OutsideRoot {
                file: file.to_path_buf(),
                field,
                entry: entry.into(),
                path: canon,
                root: dir.to_path_buf(),
            });
        }
        Ok(canon)
    }

    fn add_resource(
        &mut self,
        dir: &Path,
        file: &Path,
        field: &'static str,
        entry: &str,
        acc: &mut Acc,
    ) -> Result<(), RenderError> {
        if is_remote(entry) {
            return Err(RenderError::Remote {
                file: file.to_path_buf(),
                field,
                entry: entry.into(),
            });
        }
        let p = normalize(&dir.join(entry));
        let canon = p.canonicalize().map_err(|_| RenderError::Missing {
            file: file.to_path_buf(),
            field,
            entry: entry.into(),
            path: p.clone(),
        })?;
        if canon.is_dir() {
            if self.stack.contains(&canon) {
                let mut chain = self.stack.clone();
                chain.push(canon);
                return Err(RenderError::Cycle {
                    file: file.to_path_buf(),
                    chain,
                });
            }
            let remaining = self.uses.get(&canon).copied().unwrap_or(1);
            let sub = match self.memo.remove(&canon) {
                Some(a) if remaining > 1 => {
                    let copy = a.clone();
                    self.memo.insert(canon.clone(), a);
                    copy
                }
                Some(a) => a,
                None => {
                    let kf = self
                        .find_kustomization(&canon)?
                        .ok_or_else(|| RenderError::NoKustomization { dir: p.clone() })?;
                    let a = self.accumulate(kf, None, false)?;
                    if remaining > 1 {
                        self.memo.insert(canon.clone(), a.clone());
                    }
                    a
                }
            };
            if remaining > 1 {
                self.uses.insert(canon.clone(), remaining - 1);
            }
            return self.append(file, acc, sub);
        }
        if !self.opts.load_restrictor_none && !canon.starts_with(dir) {
            return Err(RenderError::OutsideRoot {
                file: file.to_path_buf(),
                field,
                entry: entry.into(),
                path: canon,
                root: dir.to_path_buf(),
            });
        }
        let objs = self.parse_file(&canon)?;
        let origin: Arc<str> = Arc::from(canon.display().to_string());
        for o in objs {
            self.push_res(file, acc, Res::new(o, origin.clone()))?;
        }
        Ok(())
    }

    fn parse_file(&mut self, path: &Path) -> Result<Vec<Map<String, Value>>, RenderError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        super::fastyaml::parse_objects(&text, &path.display().to_string()).map_err(|source| {
            RenderError::Yaml {
                file: path.to_path_buf(),
                source,
            }
        })
    }

    fn push_res(&self, _file: &Path, acc: &mut Acc, r: Res) -> Result<(), RenderError> {
        // Duplicates are checked once per kustomization by `check_duplicates` (hashing), not
        // on every push (which would be quadratic on large trees).
        acc.res.push(r);
        Ok(())
    }

    fn append(&self, file: &Path, acc: &mut Acc, sub: Acc) -> Result<(), RenderError> {
        for r in sub.res {
            self.push_res(file, acc, r)?;
        }
        for v in sub.vars {
            if acc.vars.iter().any(|(x, _)| x.name == v.0.name) {
                return Err(field_err(
                    file,
                    "vars",
                    format!("var '{}' already encountered", v.0.name),
                ));
            }
            acc.vars.push(v);
        }
        acc.refs.extend(sub.refs);
        acc.label_specs.extend(sub.label_specs);
        acc.annotation_specs.extend(sub.annotation_specs);
        acc.var_specs.extend(sub.var_specs);
        acc.image_specs.extend(sub.image_specs);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn generate(
        &mut self,
        dir: &Path,
        file: &Path,
        field: &'static str,
        g: &GeneratorSpec,
        global: &GeneratorOptions,
        secret: bool,
        acc: &mut Acc,
    ) -> Result<(), RenderError> {
        let Some(name) = g.name.clone().filter(|n| !n.is_empty()) else {
            return Err(field_err(file, field, "a generator needs a name"));
        };
        let mut data: BTreeMap<String, String> = BTreeMap::new();
        let mut binary: BTreeMap<String, String> = BTreeMap::new();
        let put = |k: String,
                   v: String,
                   data: &mut BTreeMap<String, String>|
         -> Result<(), RenderError> {
            if data.contains_key(&k) {
                return Err(field_err(
                    file,
                    field,
                    format!("{name}: duplicate key '{k}'"),
                ));
            }
            data.insert(k, v);
            Ok(())
        };
        let envs: Vec<&String> = g.envs.iter().chain(g.env.iter()).collect();
        for e in envs {
            let p = self.restricted_file(dir, file, field, e)?;
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            for (k, v) in parse_env(&text, &p)? {
                put(k, v, &mut data)?;
            }
        }
        for lit in &g.literals {
            let Some((k, v)) = lit.split_once('=') else {
                return Err(field_err(
                    file,
                    field,
                    format!("{name}: literal '{lit}' is not KEY=VALUE"),
                ));
            };
            put(k.to_string(), unquote(v).to_string(), &mut data)?;
        }
        for f in &g.files {
            let (key, path) = match f.split_once('=') {
                Some((k, p)) => (k.to_string(), p),
                None => {
                    let key = Path::new(f)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (key, f.as_str())
                }
            };
            let p = self.restricted_file(dir, file, field, path)?;
            if p.is_dir() {
                return Err(field_err(
                    file,
                    field,
                    format!("{name}: '{path}' is a directory"),
                ));
            }
            let bytes = std::fs::read(&p).map_err(io_err(&p))?;
            match String::from_utf8(bytes) {
                Ok(s) => put(key, s, &mut data)?,
                Err(e) => {
                    if data.contains_key(&key) || binary.contains_key(&key) {
                        return Err(field_err(
                            file,
                            field,
                            format!("{name}: duplicate key '{key}'"),
                        ));
                    }
                    binary.insert(key, base64(e.as_bytes()));
                }
            }
        }
        // Per-generator options override the kustomization-wide generatorOptions.
        let opts = g.options.clone().unwrap_or_default();
        let mut labels = global.labels.clone();
        labels.extend(opts.labels.clone());
        let mut annotations = global.annotations.clone();
        annotations.extend(opts.annotations.clone());
        // kustomize ORs the two levels: a generator cannot turn a global option back off.
        let disable_hash = opts.disable_name_suffix_hash.unwrap_or(false)
            || global.disable_name_suffix_hash.unwrap_or(false);
        let immutable = opts.immutable.unwrap_or(false) || global.immutable.unwrap_or(false);

        let mut meta = Map::new();
        meta.insert("name".into(), Value::String(name.clone()));
        if let Some(ns) = g.namespace.as_deref().filter(|s| !s.is_empty()) {
            meta.insert("namespace".into(), Value::String(ns.into()));
        }
        if !labels.is_empty() {
            meta.insert("labels".into(), string_map_value(&labels));
        }
        if !annotations.is_empty() {
            meta.insert("annotations".into(), string_map_value(&annotations));
        }
        let mut obj = Map::new();
        obj.insert("apiVersion".into(), Value::String("v1".into()));
        obj.insert(
            "kind".into(),
            Value::String(if secret { "Secret" } else { "ConfigMap" }.into()),
        );
        obj.insert("metadata".into(), Value::Object(meta));
        let data_map: Map<String, Value> = if secret {
            data.iter()
                .map(|(k, v)| (k.clone(), Value::String(base64(v.as_bytes()))))
                .chain(
                    binary
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone()))),
                )
                .collect()
        } else {
            data.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        };
        if !data_map.is_empty() || binary.is_empty() || secret {
            obj.insert("data".into(), Value::Object(data_map));
        }
        if !secret && !binary.is_empty() {
            obj.insert("binaryData".into(), string_map_value(&binary));
        }
        if secret {
            obj.insert(
                "type".into(),
                Value::String(g.type_.clone().unwrap_or_else(|| "Opaque".into())),
            );
        }
        if immutable {
            obj.insert("immutable".into(), Value::Bool(true));
        }
        let kind = if secret { "Secret" } else { "ConfigMap" };
        let ns = g.namespace.clone().unwrap_or_default();
        let behavior = g.behavior.as_deref().unwrap_or("create");
        let existing = acc
            .res
            .iter()
            .position(|r| r.kind() == kind && r.had_id(&name, &ns));
        match (behavior, existing) {
            ("create", None) => {
                let mut r = Res::new(obj, Arc::from(file.display().to_string()));
                r.needs_hash = !disable_hash;
                self.push_res(file, acc, r)?;
            }
            ("create", Some(_)) => {
                return Err(field_err(
                    file,
                    field,
                    format!("{kind} '{name}' already exists; use behavior: merge or replace"),
                ));
            }
            ("merge" | "replace", None) => {
                return Err(field_err(file, field, format!("{kind} '{name}': behavior {behavior} needs an existing {kind} of that name from a base")));
            }
            ("merge" | "replace", Some(i)) => {
                // kustomize puts the newly generated object in place of the old one: its
                // type and `immutable` win; labels and annotations are merged (the new ones
                // over the old), `merge` also keeps the old data under the new, and the name
                // and namespace stay the old object's.
                let r = &mut acc.res[i];
                let merge = behavior == "merge";
                let mut new_obj = obj;
                if merge {
                    for key in ["data", "binaryData"] {
                        if let Some(Value::Object(old)) = r.obj.get(key) {
                            let mut merged = old.clone();
                            if let Some(Value::Object(new)) = new_obj.remove(key) {
                                merged.extend(new);
                            }
                            new_obj.insert(key.into(), Value::Object(merged));
                        }
                    }
                }
                let old_meta = r.meta_mut().clone();
                if let Some(Value::Object(meta)) = new_obj.get_mut("metadata") {
                    for key in ["labels", "annotations"] {
                        if let Some(Value::Object(old)) = old_meta.get(key) {
                            let mut merged = old.clone();
                            if let Some(Value::Object(new)) = meta.remove(key) {
                                merged.extend(new);
                            }
                            meta.insert(key.into(), Value::Object(merged));
                        }
                    }
                    for key in ["name", "namespace"] {
                        match old_meta.get(key) {
                            Some(v) => {
                                meta.insert(key.into(), v.clone());
                            }
                            None => {
                                meta.remove(key);
                            }
                        }
                    }
                }
                r.obj = new_obj;
                if g.options
                    .as_ref()
                    .and_then(|o| o.disable_name_suffix_hash)
                    .is_some()
                    || global.disable_name_suffix_hash.is_some()
                {
                    r.needs_hash = !disable_hash;
                }
            }
            (other, _) => {
                return Err(field_err(
                    file,
                    field,
                    format!("{name}: unknown behavior '{other}' (create, merge or replace)"),
                ));
            }
        }
        Ok(())
    }

    fn apply_patch(
        &mut self,
        dir: &Path,
        file: &Path,
        field: &'static str,
        spec: &PatchSpec,
        acc: &mut Acc,
    ) -> Result<(), RenderError> {
        let text = match (&spec.patch, &spec.path) {
            (Some(t), None) => t.clone(),
            (None, Some(path)) => {
                let p = self.restricted_file(dir, file, field, path)?;
                std::fs::read_to_string(&p).map_err(io_err(&p))?
            }
            (Some(_), Some(_)) => {
                return Err(field_err(
                    file,
                    field,
                    "a patch has both `patch` and `path`",
                ))
            }
            (None, None) => return Err(field_err(file, field, "a patch needs `patch` or `path`")),
        };
        let origin = format!("{} ({field})", file.display());
        let docs = super::fastyaml::parse_documents(&text, &origin).map_err(|source| {
            RenderError::Yaml {
                file: file.to_path_buf(),
                source,
            }
        })?;
        let allow_name = spec.options.as_ref().is_some_and(|o| o.allow_name_change);
        let allow_kind = spec.options.as_ref().is_some_and(|o| o.allow_kind_change);
        let is_json6902 =
            field == "patchesJson6902" || matches!(docs.first(), Some(Value::Array(_)));
        if is_json6902 {
            let Some(target) = &spec.target else {
                return Err(field_err(file, field, "a JSON 6902 patch needs a target"));
            };
            let ops = match docs.into_iter().next() {
                Some(v @ Value::Array(_)) => v,
                Some(Value::Null) | None => Value::Array(Vec::new()),
                Some(_) => {
                    return Err(field_err(
                        file,
                        field,
                        "a JSON 6902 patch must be a list of operations",
                    ))
                }
            };
            // kustomize's JSON patch library lets `replace` set a key its object lacks (as
            // `add` would): each such op also gets an `add` form, used when the key is missing.
            let raw_ops: Vec<Value> = match &ops {
                Value::Array(a) => a.clone(),
                _ => Vec::new(),
            };
            let patch: json_patch::Patch =
                serde_json::from_value(ops).map_err(|source| RenderError::Kustomization {
                    file: file.to_path_buf(),
                    source,
                })?;
            let add_forms: Vec<Option<(String, String, json_patch::PatchOperation)>> = raw_ops
                .iter()
                .map(|op| {
                    let o = op.as_object()?;
                    if o.get("op").and_then(Value::as_str) != Some("replace") {
                        return None;
                    }
                    let path = o.get("path").and_then(Value::as_str)?;
                    let (parent, key) = path.rsplit_once('/')?;
                    let mut add = o.clone();
                    add.insert("op".into(), Value::String("add".into()));
                    let add: json_patch::PatchOperation =
                        serde_json::from_value(Value::Object(add)).ok()?;
                    let key = key.replace("~1", "/").replace("~0", "~");
                    Some((parent.to_string(), key, add))
                })
                .collect();
            let needs_steps = add_forms.iter().any(Option::is_some);
            let sel = Selector::new(file, field, target)?;
            for r in acc.res.iter_mut() {
                if !sel.matches(r) {
                    continue;
                }
                let old = (r.name().to_string(), r.namespace().to_string());
                let mut v = Value::Object(std::mem::take(&mut r.obj));
                let res = if needs_steps {
                    let mut res = Ok(());
                    for (op, add) in patch.iter().zip(&add_forms) {
                        let op = match add {
                            Some((parent, key, add))
                                if v.pointer(parent)
                                    .and_then(Value::as_object)
                                    .is_some_and(|m| !m.contains_key(key)) =>
                            {
                                add
                            }
                            _ => op,
                        };
                        res = json_patch::patch(&mut v, std::slice::from_ref(op));
                        if res.is_err() {
                            break;
                        }
                    }
                    res
                } else {
                    json_patch::patch(&mut v, &patch)
                };
                if let Value::Object(m) = v {
                    r.obj = m;
                }
                res.map_err(|source| RenderError::JsonPatch {
                    file: file.to_path_buf(),
                    field: format!("{field} on {}", r.display()),
                    source,
                })?;
                record_rename(r, old);
            }
            return Ok(());
        }
        for doc in docs {
            let Value::Object(pm) = doc else {
                return Err(field_err(
                    file,
                    field,
                    "a strategic merge patch must be a mapping",
                ));
            };
            let targets: Vec<usize> = match &spec.target {
                Some(t) => {
                    let sel = Selector::new(file, field, t)?;
                    (0..acc.res.len())
                        .filter(|i| sel.matches(&acc.res[*i]))
                        .collect()
                }
                None => {
                    let (g, _) =
                        split_gv(pm.get("apiVersion").and_then(Value::as_str).unwrap_or(""));
                    let kind = pm.get("kind").and_then(Value::as_str).unwrap_or("");
                    let meta = pm.get("metadata");
                    let name = meta
                        .and_then(|m| m.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let ns = meta
                        .and_then(|m| m.get("namespace"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let mut hits: Vec<usize> = (0..acc.res.len())
                        .filter(|i| {
                            let r = &acc.res[*i];
                            r.kind() == kind && r.group() == g && r.had_id(name, ns)
                        })
                        .collect();
                    if hits.is_empty() && ns.is_empty() {
                        hits = (0..acc.res.len())
                            .filter(|i| {
                                let r = &acc.res[*i];
                                r.kind() == kind && r.group() == g && r.had_name(name)
                            })
                            .collect();
                    }
                    if hits.len() != 1 {
                        let what = if hits.is_empty() {
                            "no resource matches"
                        } else {
                            "several resources match"
                        };
                        return Err(field_err(
                            file,
                            field,
                            format!(
                                "failed to find unique target for patch {kind}/{name}{}: {what}",
                                if ns.is_empty() {
                                    String::new()
                                } else {
                                    format!(" in namespace {ns}")
                                }
                            ),
                        ));
                    }
                    hits
                }
            };
            let mut delete: Vec<usize> = Vec::new();
            for i in targets {
                let r = &mut acc.res[i];
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    delete.push(i);
                    continue;
                }
                let mut p = pm.clone();
                // The patch names its target; it does not rename it (unless allowed).
                if let Some(Value::Object(meta)) = p.get_mut("metadata") {
                    if !allow_name {
                        meta.remove("name");
                    }
                    meta.remove("namespace");
                }
                if !allow_kind {
                    p.remove("kind");
                    p.remove("apiVersion");
                }
                let old = (r.name().to_string(), r.namespace().to_string());
                let (g, kind) = (r.group().to_string(), r.kind().to_string());
                let mut v = Value::Object(std::mem::take(&mut r.obj));
                smp::apply(&mut v, &Value::Object(p), &g, &kind);
                if let Value::Object(m) = v {
                    r.obj = m;
                }
                record_rename(r, old);
            }
            for i in delete.into_iter().rev() {
                acc.res.remove(i);
            }
        }
        Ok(())
    }

    fn apply_overlay(
        &mut self,
        root: &Path,
        acc: &mut Acc,
        ov: &Overlay,
    ) -> Result<(), RenderError> {
        let file = root.join("kustomization.yaml");
        for c in &ov.components {
            let p = normalize(&root.join(c));
            let canon = p.canonicalize().map_err(|_| RenderError::Missing {
                file: file.clone(),
                field: "components",
                entry: c.clone(),
                path: p.clone(),
            })?;
            let kf = self
                .find_kustomization(&canon)?
                .ok_or(RenderError::NoKustomization { dir: p })?;
            *acc = self.accumulate(kf, Some(std::mem::take(acc)), true)?;
        }
        for p in &ov.patches {
            let spec = PatchSpec {
                patch: Some(p.patch.clone()),
                target: p.target.as_ref().map(|t| Target {
                    group: t.group.clone(),
                    version: t.version.clone(),
                    kind: t.kind.clone(),
                    name: t.name.clone(),
                    namespace: t.namespace.clone(),
                    label_selector: t.label_selector.clone(),
                    annotation_selector: t.annotation_selector.clone(),
                }),
                ..Default::default()
            };
            self.apply_patch(root, &file, "spec.patches", &spec, acc)?;
        }
        if let Some(ns) = ov.namespace.as_deref().filter(|s| !s.is_empty()) {
            for r in &mut acc.res {
                transform::set_namespace(r, ns);
            }
        }
        let prefix = ov.name_prefix.as_deref().unwrap_or("");
        let suffix = ov.name_suffix.as_deref().unwrap_or("");
        for r in &mut acc.res {
            transform::prefix_suffix(r, prefix, suffix);
        }
        let labels: StringMap = ov.common_labels.clone();
        let annotations: StringMap = ov.common_annotations.clone();
        let meta_labels = [Fs::new(None, None, None, "metadata/labels", true)];
        let meta_annotations = [Fs::new(None, None, None, "metadata/annotations", true)];
        for r in &mut acc.res {
            transform::add_labels(r, &labels, &meta_labels);
            if !annotations.is_empty() {
                transform::apply_specs(r, &meta_annotations, &mut |v| {
                    transform::set_pairs(v, &annotations)
                });
            }
        }
        if !ov.images.is_empty() {
            let images: Vec<kustfile::ImageSpec> = ov
                .images
                .iter()
                .map(|i| kustfile::ImageSpec {
                    name: i.name.clone(),
                    new_name: i.new_name.clone(),
                    new_tag: i.new_tag.clone(),
                    digest: i.digest.clone(),
                    tag_suffix: None,
                })
                .collect();
            for r in &mut acc.res {
                transform::images(r, &images);
            }
        }
        Ok(())
    }

    /// The steps kustomize runs once for the whole tree.
    fn finish(&mut self, mut acc: Acc, root: &Path) -> Result<Vec<Object>, RenderError> {
        for r in &mut acc.res {
            if r.needs_hash {
                let h = content_hash(&r.obj);
                let name = format!("{}-{h}", r.name());
                r.set_name(name);
                r.needs_hash = false;
            }
        }
        let extra: Vec<RefRule> = acc
            .refs
            .iter()
            .map(|r| RefRule {
                kind: r.kind.clone(),
                group: r.group.clone(),
                referrers: r.referrers.clone(),
            })
            .collect();
        nameref::fix(&mut acc.res, &extra);
        resolve_vars(&mut acc, root)?;
        let file = root.join("kustomization.yaml");
        for bm in &self.build_metadata {
            match bm.as_str() {
                // kubectl embeds kustomize without a release version, so it labels
                // `kustomize-(devel)`; match the tool the conformance suite compares with.
                "managedByLabel" => {
                    for r in &mut acc.res {
                        let labels = r
                            .meta_mut()
                            .entry("labels")
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(m) = labels {
                            m.insert(
                                "app.kubernetes.io/managed-by".into(),
                                Value::String("kustomize-(devel)".into()),
                            );
                        }
                    }
                }
                "originAnnotations" => {
                    for r in &mut acc.res {
                        let rel = Path::new(&*r.origin)
                            .strip_prefix(root)
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|_| r.origin.to_string());
                        let ann = r
                            .meta_mut()
                            .entry("annotations")
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(m) = ann {
                            m.insert(
                                "config.kubernetes.io/origin".into(),
                                Value::String(format!("path: {rel}\n")),
                            );
                        }
                    }
                }
                "transformerAnnotations" => {}
                other => {
                    return Err(field_err(
                        &file,
                        "buildMetadata",
                        format!("unknown option '{other}'"),
                    ))
                }
            }
        }
        let mut res = acc.res;
        let order = self
            .sort
            .as_ref()
            .and_then(|s| s.order.clone())
            .unwrap_or_else(|| "legacy".into());
        match order.as_str() {
            "fifo" => {}
            "legacy" => {
                let (first, last) = match self
                    .sort
                    .as_ref()
                    .and_then(|s| s.legacy_sort_options.as_ref())
                {
                    Some(l) => (l.order_first.clone(), l.order_last.clone()),
                    None => (
                        ORDER_FIRST.iter().map(|s| s.to_string()).collect(),
                        ORDER_LAST.iter().map(|s| s.to_string()).collect(),
                    ),
                };
                legacy_sort(&mut res, &first, &last);
            }
            other => {
                return Err(field_err(
                    &file,
                    "sortOptions.order",
                    format!("unknown order '{other}' (legacy or fifo)"),
                ))
            }
        }
        Ok(res
            .into_iter()
            .map(|mut r| {
                drop_empty_annotations(&mut r.obj);
                Object(r.obj)
            })
            .collect())
    }
}

/// kustomize keeps its bookkeeping in annotations and clears them before printing, which
/// removes an empty (or null) `metadata.annotations` and turns the values left into strings;
/// labels and nested metadata are kept as they are.
fn drop_empty_annotations(obj: &mut Map<String, Value>) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        let empty = match meta.get("annotations") {
            Some(Value::Null) => true,
            Some(Value::Object(a)) => a.is_empty(),
            _ => false,
        };
        if empty {
            meta.remove("annotations");
        } else if let Some(Value::Object(a)) = meta.get_mut("annotations") {
            // Clearing rewrites the map as strings: a number or bool becomes its text.
            for v in a.values_mut() {
                if matches!(v, Value::Number(_) | Value::Bool(_)) {
                    *v = Value::String(kustfile::scalar_text(v));
                }
            }
        }
    }
}

fn looks_like_path(s: &str) -> bool {
    !s.trim_start().starts_with('{') && !s.contains(": ")
}

fn record_rename(r: &mut Res, old: (String, String)) {
    if r.name() != old.0 || r.namespace() != old.1 {
        r.prev.push(old);
    }
}

/// kustomize refuses two resources with the same group, kind, namespace and name.
fn check_duplicates(file: &Path, res: &[Res]) -> Result<(), RenderError> {
    let mut seen: HashMap<(&str, &str, &str, &str), usize> = HashMap::with_capacity(res.len());
    for (i, r) in res.iter().enumerate() {
        let ns = if r.is_cluster_scoped() {
            ""
        } else {
            effective_ns(r.namespace())
        };
        if let Some(j) = seen.insert((r.group(), r.kind(), ns, r.name()), i) {
            return Err(RenderError::Invalid {
                file: file.to_path_buf(),
                message: format!(
                    "may not add resource with an already registered id: {} (from {} and {})",
                    r.display(),
                    res[j].origin,
                    r.origin
                ),
            });
        }
    }
    Ok(())
}

fn string_map_value(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// `KEY="value"` or `KEY='value'` literals lose their quotes, as in kustomize.
fn unquote(v: &str) -> &str {
    if v.len() >= 2 {
        let b = v.as_bytes();
        if (b[0] == b'"' && b[v.len() - 1] == b'"') || (b[0] == b'\'' && b[v.len() - 1] == b'\'') {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// An env file: `KEY=VALUE` lines; blank lines and `#` comments are skipped.
fn parse_env(text: &str, path: &Path) -> Result<Vec<(String, String)>, RenderError> {
    let mut out = Vec::new();
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.split_once('=') {
            // kustomize takes any key as written (`export K`, `a/b`) and drops an empty one.
            Some(("", _)) => {}
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                // kustomize takes a bare KEY from the environment; with no network and no
                // ambient environment in a reconciler, an unset KEY is an error.
                match std::env::var(l) {
                    Ok(v) => out.push((l.to_string(), v)),
                    Err(_) => {
                        return Err(RenderError::Invalid {
                            file: path.to_path_buf(),
                            message: format!("line {}: '{l}' is not KEY=VALUE", i + 1),
                        })
                    }
                }
            }
        }
    }
    Ok(out)
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Go's `encoding/json` string quoting (HTML-safe: `<`, `>`, `&` escaped).
fn go_json_string(s: &str, out: &mut String) {
    out.push('"');
    // Runs of characters that need no escape are copied whole.
    let plain =
        |c: char| c >= ' ' && !matches!(c, '"' | '\\' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}');
    let mut rest = s;
    while let Some(i) = rest.find(|c: char| !plain(c)) {
        out.push_str(&rest[..i]);
        let c = rest[i..].chars().next().unwrap_or(' ');
        go_json_escape(c, out);
        rest = &rest[i + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
}

fn go_json_escape(c: char, out: &mut String) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '<' => out.push_str("\\u003c"),
        '>' => out.push_str("\\u003e"),
        '&' => out.push_str("\\u0026"),
        '\u{2028}' => out.push_str("\\u2028"),
        '\u{2029}' => out.push_str("\\u2029"),
        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&super::emit::format_number(n)),
        Value::String(s) => go_json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                go_json(x, out);
            }
            out.push('}');
        }
    }
}

/// kustomize's content hash of a generated ConfigMap or Secret: SHA-256 of the JSON of
/// kind, data (and binaryData / type), with an empty name, the first ten hex digits with
/// some letters swapped so the suffix never looks like a word or a number.
pub(crate) fn content_hash(obj: &Map<String, Value>) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut m = Map::new();
    m.insert("kind".into(), Value::String(kind.into()));
    m.insert("name".into(), Value::String(String::new()));
    m.insert(
        "data".into(),
        obj.get("data")
            .cloned()
            .filter(|d| !d.is_null())
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    match kind {
        "ConfigMap" => {
            if let Some(Value::Object(b)) = obj.get("binaryData") {
                if !b.is_empty() {
                    m.insert("binaryData".into(), Value::Object(b.clone()));
                }
            }
        }
        "Secret" => {
            m.insert(
                "type".into(),
                obj.get("type")
                    .cloned()
                    .unwrap_or(Value::String(String::new())),
            );
            if let Some(Value::Object(b)) = obj.get("stringData") {
                if !b.is_empty() {
                    m.insert("stringData".into(), Value::Object(b.clone()));
                }
            }
        }
        _ => {
            m = obj.clone();
        }
    }
    let mut json = String::new();
    go_json(&Value::Object(m), &mut json);
    let digest = hex::encode(Sha256::digest(json.as_bytes()));
    digest[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

const ORDER_FIRST: &[&str] = &[
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
const ORDER_LAST: &[&str] = &[
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// kustomize's legacy order: kinds listed first, then everything else, then kinds listed
/// last; within a rank by group/version/kind text, then namespace and name.
fn legacy_sort(res: &mut [Res], first: &[String], last: &[String]) {
    let rank = |kind: &str| -> i64 {
        if let Some(i) = first.iter().position(|k| k == kind) {
            return i as i64 - first.len() as i64;
        }
        if let Some(i) = last.iter().position(|k| k == kind) {
            return 1 + i as i64;
        }
        0
    };
    let gvk = |r: &Res| {
        let (g, v) = split_gv(r.api_version());
        let g = if g.is_empty() { "~G" } else { g };
        let v = if v.is_empty() { "~V" } else { v };
        let k = if r.kind().is_empty() { "~K" } else { r.kind() };
        format!("{g}_{v}_{k}")
    };
    res.sort_by_cached_key(|r| {
        (
            rank(r.kind()),
            gvk(r),
            if r.namespace().is_empty() {
                "~X".to_string()
            } else {
                r.namespace().to_string()
            },
            r.name().to_string(),
        )
    });
}

/// A patch target: kind/group/version compared exactly, name and namespace as anchored
/// regular expressions, label and annotation selectors in Kubernetes' selector syntax.
struct Selector<'a> {
    t: &'a Target,
    name: Option<regex::Regex>,
    namespace: Option<regex::Regex>,
    labels: Vec<Req>,
    annotations: Vec<Req>,
}

enum Req {
    Exists(String, bool),
    Eq(String, String, bool),
    In(String, Vec<String>, bool),
}

impl<'a> Selector<'a> {
    fn new(file: &Path, field: &str, t: &'a Target) -> Result<Self, RenderError> {
        let re = |s: &Option<String>| -> Result<Option<regex::Regex>, RenderError> {
            match s.as_deref().filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(p) => regex::Regex::new(&format!("^(?:{p})$"))
                    .map(Some)
                    .map_err(|e| {
                        field_err(
                            file,
                            field,
                            format!("target: invalid regular expression '{p}': {e}"),
                        )
                    }),
            }
        };
        Ok(Selector {
            t,
            name: re(&t.name)?,
            namespace: re(&t.namespace)?,
            labels: parse_selector(t.label_selector.as_deref().unwrap_or(""))
                .map_err(|m| field_err(file, field, format!("target.labelSelector: {m}")))?,
            annotations: parse_selector(t.annotation_selector.as_deref().unwrap_or(""))
                .map_err(|m| field_err(file, field, format!("target.annotationSelector: {m}")))?,
        })
    }

    fn matches(&self, r: &Res) -> bool {
        let t = self.t;
        let opt = |o: &Option<String>, v: &str| o.as_deref().is_none_or(|x| x.is_empty() || x == v);
        if !opt(&t.kind, r.kind()) || !opt(&t.group, r.group()) || !opt(&t.version, r.version()) {
            return false;
        }
        if let Some(re) = &self.name {
            if !re.is_match(r.name()) {
                return false;
            }
        }
        if let Some(re) = &self.namespace {
            if !re.is_match(r.namespace()) {
                return false;
            }
        }
        let meta = r.meta();
        let get = |which: &str, k: &str| -> Option<String> {
            meta.and_then(|m| m.get(which))
                .and_then(|l| l.get(k))
                .map(kustfile::scalar_text)
        };
        self.labels.iter().all(|q| q.matches(&|k| get("labels", k)))
            && self
                .annotations
                .iter()
                .all(|q| q.matches(&|k| get("annotations", k)))
    }
}

impl Req {
    fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Req::Exists(k, want) => get(k).is_some() == *want,
            Req::Eq(k, v, want) => (get(k).as_deref() == Some(v.as_str())) == *want,
            Req::In(k, vs, want) => match get(k) {
                Some(x) => vs.contains(&x) == *want,
                None => !*want,
            },
        }
    }
}

fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        if let Some(k) = p.strip_prefix('!') {
            out.push(Req::Exists(k.trim().into(), false));
        } else if let Some((k, v)) = p.split_once("!=") {
            out.push(Req::Eq(k.trim().into(), v.trim().into(), false));
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            out.push(Req::Eq(k.trim().into(), v.trim().into(), true));
        } else if let Some(i) = p.find(" notin ").or_else(|| p.find(" in ")) {
            let (k, rest) = p.split_at(i);
            let rest = rest.trim();
            let (neg, list) = match rest.strip_prefix("notin") {
                Some(l) => (true, l),
                None => (false, rest.trim_start_matches("in")),
            };
            let list = list.trim().trim_start_matches('(').trim_end_matches(')');
            out.push(Req::In(
                k.trim().into(),
                list.split(',').map(|x| x.trim().to_string()).collect(),
                !neg,
            ));
        } else if p.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
            out.push(Req::Exists(p.into(), true));
        } else {
            return Err(format!("cannot parse requirement '{p}'"));
        }
    }
    Ok(out)
}

/// One replacement: copy a field of a source resource into fields of the target resources.
fn replace(file: &Path, rep: &Replacement, res: &mut [Res]) -> Result<(), RenderError> {
    let Some(src) = &rep.source else {
        return Err(field_err(
            file,
            "replacements",
            "a replacement needs a source",
        ));
    };
    let matches_src = |r: &Res| {
        let opt = |o: &Option<String>, v: &str| o.as_deref().is_none_or(|x| x.is_empty() || x == v);
        opt(&src.kind, r.kind())
            && opt(&src.group, r.group())
            && opt(&src.version, r.version())
            && src.name.as_deref().is_none_or(|n| r.had_name(n))
            && opt(&src.namespace, r.namespace())
    };
    let found: Vec<&Res> = res.iter().filter(|r| matches_src(r)).collect();
    let source = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(field_err(
                file,
                "replacements",
                format!("nothing selected by source {}", describe_source(src)),
            ))
        }
        _ => {
            return Err(field_err(
                file,
                "replacements",
                format!("multiple matches for source {}", describe_source(src)),
            ))
        }
    };
    let path = src
        .field_path
        .clone()
        .unwrap_or_else(|| "metadata.name".into());
    let segs = split_field_path(&path);
    let mut value = Value::Object(source.obj.clone());
    let mut picked: Option<Value> = None;
    get_path(&mut value, &segs, false, &mut |v| {
        if picked.is_none() {
            picked = Some(v.clone())
        }
    });
    let Some(mut val) = picked else {
        return Err(field_err(
            file,
            "replacements",
            format!("source field '{path}' not found in {}", source.display()),
        ));
    };
    if let Some(opts) = &src.options {
        if let (Some(d), Value::String(s)) = (&opts.delimiter, &val) {
            let parts: Vec<&str> = s.split(d.as_str()).collect();
            let i = opts.index;
            if i < 0 || i as usize >= parts.len() {
                return Err(field_err(
                    file,
                    "replacements",
                    format!("options.index {i} out of bounds for '{s}'"),
                ));
            }
            val = Value::String(parts[i as usize].to_string());
        }
    }
    for t in &rep.targets {
        let Some(sel) = &t.select else {
            return Err(field_err(file, "replacements", "a target needs select"));
        };
        let to_target = |s: &kustfile::ReplSelector| Target {
            group: s.group.clone(),
            version: s.version.clone(),
            kind: s.kind.clone(),
            name: s.name.as_ref().map(|n| regex::escape(n)),
            namespace: s.namespace.as_ref().map(|n| regex::escape(n)),
            label_selector: s.label_selector.clone(),
            annotation_selector: s.annotation_selector.clone(),
        };
        let st = to_target(sel);
        let selector = Selector::new(file, "replacements", &st)?;
        let rejects: Vec<Target> = t.reject.iter().map(to_target).collect();
        let reject_sel: Vec<Selector> = rejects
            .iter()
            .map(|r| Selector::new(file, "replacements", r))
            .collect::<Result<_, _>>()?;
        for r in res.iter_mut() {
            let sel_ok = selector.matches(r)
                || sel.name.as_deref().is_some_and(|n| {
                    r.had_name(n) && {
                        let mut s2 = st.clone();
                        s2.name = None;
                        Selector::new(file, "replacements", &s2)
                            .map(|s| s.matches(r))
                            .unwrap_or(false)
                    }
                });
            if !sel_ok || reject_sel.iter().any(|s| s.matches(r)) {
                continue;
            }
            let opts = t.options.clone().unwrap_or_default();
            for fp in &t.field_paths {
                let segs = split_field_path(fp);
                let mut root = Value::Object(std::mem::take(&mut r.obj));
                let mut hit = false;
                get_path(&mut root, &segs, opts.create, &mut |v| {
                    hit = true;
                    match (&opts.delimiter, &*v, &val) {
                        (Some(d), Value::String(old), Value::String(newv)) => {
                            let mut parts: Vec<String> =
                                old.split(d.as_str()).map(str::to_string).collect();
                            let i = opts.index;
                            if i >= 0 && (i as usize) < parts.len() {
                                parts[i as usize] = newv.clone();
                            } else if i < 0 {
                                parts.insert(0, newv.clone());
                            } else {
                                parts.push(newv.clone());
                            }
                            *v = Value::String(parts.join(d));
                        }
                        _ => *v = val.clone(),
                    }
                });
                if let Value::Object(m) = root {
                    r.obj = m;
                }
                if !hit && !opts.create {
                    // kustomize errors when a selected target lacks the field (unless
                    // create is set); keep its behaviour.
                    return Err(field_err(
                        file,
                        "replacements",
                        format!(
                            "unable to find field '{fp}' in replacement target {}",
                            r.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn describe_source(s: &kustfile::ReplSource) -> String {
    format!(
        "{}/{}",
        s.kind.as_deref().unwrap_or("*"),
        s.name.as_deref().unwrap_or("*")
    )
}

/// `spec.template.spec.containers.[name=app].image`, `a.b.0.c`, `metadata.annotations.[x.y/z]`.
fn split_field_path(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in p.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                cur.push(c);
            }
            '.' if depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    // `ports[0]` (the legacy vars syntax) is `ports.0`.
    let out: Vec<String> = out
        .into_iter()
        .flat_map(|s| match (s.find('['), s.ends_with(']')) {
            (Some(i), true)
                if i > 0 && s[i + 1..s.len() - 1].bytes().all(|b| b.is_ascii_digit()) =>
            {
                vec![s[..i].to_string(), s[i + 1..s.len() - 1].to_string()]
            }
            _ => vec![s],
        })
        .collect();
    out.into_iter()
        .map(|s| {
            // `[a.b/c]` without `=` is a key containing dots.
            if s.starts_with('[') && s.ends_with(']') && !s.contains('=') {
                s[1..s.len() - 1].to_string()
            } else {
                s
            }
        })
        .collect()
}

/// What a created field holds when the path goes on with `next`: a list for an index or a
/// `[key=value]` selector, else a map.
fn created_for(next: Option<&String>) -> Value {
    match next {
        None => Value::Null,
        Some(n) if (n.starts_with('[') && n.ends_with(']')) || n.parse::<usize>().is_ok() => {
            Value::Array(Vec::new())
        }
        Some(_) => Value::Object(Map::new()),
    }
}

fn get_path(v: &mut Value, segs: &[String], create: bool, f: &mut dyn FnMut(&mut Value)) {
    let Some((seg, rest)) = segs.split_first() else {
        f(v);
        return;
    };
    if seg.starts_with('[') && seg.ends_with(']') {
        if let Some((k, want)) = seg[1..seg.len() - 1].split_once('=') {
            if create && v.is_null() {
                *v = Value::Array(Vec::new());
            }
            if let Value::Array(items) = v {
                let mut found = false;
                for it in items.iter_mut() {
                    if it.get(k).map(kustfile::scalar_text).as_deref() == Some(want) {
                        found = true;
                        get_path(it, rest, create, f);
                    }
                }
                if !found && create {
                    let mut m = Map::new();
                    m.insert(k.to_string(), Value::String(want.to_string()));
                    items.push(Value::Object(m));
                    if let Some(last) = items.last_mut() {
                        get_path(last, rest, create, f);
                    }
                }
            }
            return;
        }
    }
    match v {
        Value::Array(items) => {
            if seg == "*" {
                for it in items.iter_mut() {
                    get_path(it, rest, create, f);
                }
            } else if let Ok(i) = seg.parse::<usize>() {
                if create && i == items.len() {
                    items.push(created_for(rest.first()));
                }
                if let Some(it) = items.get_mut(i) {
                    get_path(it, rest, create, f);
                }
            }
        }
        Value::Object(m) => {
            if seg == "*" {
                for c in m.values_mut() {
                    get_path(c, rest, create, f);
                }
                return;
            }
            if !m.contains_key(seg.as_str()) {
                if !create {
                    return;
                }
                m.insert(seg.clone(), created_for(rest.first()));
            }
            if let Some(c) = m.get_mut(seg.as_str()) {
                get_path(c, rest, create, f);
            }
        }
        Value::Null if create => {
            *v = created_for(Some(seg));
            get_path(v, segs, create, f);
        }
        _ => {}
    }
}

/// Legacy vars: `$(NAME)` in the var-reference fields becomes the value of the referenced
/// field. Unused vars are fine; a `$(NAME)` with no var is left as is (like kustomize).
fn resolve_vars(acc: &mut Acc, root: &Path) -> Result<(), RenderError> {
    if acc.vars.is_empty() {
        return Ok(());
    }
    let mut values: Vec<(String, Value)> = Vec::new();
    for (v, file) in &acc.vars {
        let kind = v.obj_ref.kind.as_deref().unwrap_or("");
        let found: Vec<&Res> = acc
            .res
            .iter()
            .filter(|r| (kind.is_empty() || r.kind() == kind) && r.had_name(&v.obj_ref.name))
            .filter(|r| {
                v.obj_ref
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| r.had_id(&v.obj_ref.name, ns))
            })
            .collect();
        let r = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(field_err(
                    file,
                    "vars",
                    format!(
                        "var '{}' refers to {kind}/{} which is not in the output",
                        v.name, v.obj_ref.name
                    ),
                ))
            }
            _ => {
                return Err(field_err(
                    file,
                    "vars",
                    format!("var '{}' matches more than one resource", v.name),
                ))
            }
        };
        let fp = v
            .field_ref
            .as_ref()
            .map(|f| f.field_path.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "metadata.name".into());
        let mut val = None;
        let mut obj = Value::Object(r.obj.clone());
        get_path(&mut obj, &split_field_path(&fp), false, &mut |x| {
            val = Some(x.clone())
        });
        let Some(val) = val else {
            return Err(field_err(
                file,
                "vars",
                format!(
                    "var '{}': field '{fp}' not found in {}",
                    v.name,
                    r.display()
                ),
            ));
        };
        values.push((v.name.clone(), val));
    }
    let _ = root;
    // kustomize's default varReference field specs: each workload kind's containers and
    // init containers (args, command, env values, mount paths) and NFS servers, a few
    // Ingress and Service fields, and every object's labels and annotations.
    let mut specs: Vec<Fs> = Vec::new();
    let workloads = [
        ("CronJob", "spec/jobTemplate/spec/template/spec"),
        ("DaemonSet", "spec/template/spec"),
        ("Deployment", "spec/template/spec"),
        ("Job", "spec/template/spec"),
        ("Pod", "spec"),
        ("ReplicaSet", "spec/template/spec"),
        ("StatefulSet", "spec/template/spec"),
    ];
    for (kind, prefix) in workloads {
        for c in ["containers", "initContainers"] {
            for f in ["args", "command", "env/value", "volumeMounts/mountPath"] {
                specs.push(Fs::new(
                    None,
                    None,
                    Some(kind),
                    &format!("{prefix}/{c}/{f}"),
                    false,
                ));
            }
        }
        // kustomize's CronJob entry leaves out the pod template's `spec` (so it never
        // matches); StatefulSets have theirs under volumeClaimTemplates instead.
        let nfs = match kind {
            "CronJob" => Some("spec/jobTemplate/spec/template/volumes/nfs/server".to_string()),
            "StatefulSet" => None,
            _ => Some(format!("{prefix}/volumes/nfs/server")),
        };
        if let Some(path) = nfs {
            specs.push(Fs::new(None, None, Some(kind), &path, false));
        }
    }
    for (kind, path) in [
        ("Ingress", "spec/rules/host"),
        ("Ingress", "spec/tls/hosts"),
        ("Ingress", "spec/tls/secretName"),
        ("Service", "spec/ports/port"),
        ("Service", "spec/ports/targetPort"),
        ("StatefulSet", "spec/volumeClaimTemplates/spec/nfs/server"),
        ("PersistentVolume", "spec/nfs/server"),
    ] {
        specs.push(Fs::new(None, None, Some(kind), path, false));
    }
    specs.push(Fs::new(None, None, None, "metadata/labels", false));
    specs.push(Fs::new(None, None, None, "metadata/annotations", false));
    specs.extend(acc.var_specs.iter().cloned());
    let lookup = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    // Kubernetes' `$(VAR)` expansion, as kustomize applies it: `$$` is an escaped `$`, an
    // unknown or unterminated reference stays as written, and a value that is exactly one
    // reference takes the variable's value with its type (a number stays a number).
    let subst = |v: &mut Value| {
        let Value::String(s) = v else { return };
        if !s.contains('$') {
            return;
        }
        if let Some(name) = s.strip_prefix("$(").and_then(|r| r.strip_suffix(')')) {
            if !name.contains(')') {
                if let Some(val) = lookup(name) {
                    *v = val.clone();
                    return;
                }
            }
        }
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut checkpoint = 0;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' && i + 1 < b.len() {
                out.push_str(&s[checkpoint..i]);
                let rest = &s[i + 1..];
                let advance = match rest.as_bytes()[0] {
                    b'$' => {
                        out.push('$');
                        1
                    }
                    b'(' => match rest.find(')') {
                        Some(close) => {
                            let name = &rest[1..close];
                            match lookup(name) {
                                Some(val) => out.push_str(&kustfile::scalar_text(val)),
                                None => {
                                    out.push_str("$(");
                                    out.push_str(name);
                                    out.push(')');
                                }
                            }
                            close + 1
                        }
                        None => {
                            out.push_str("$(");
                            1
                        }
                    },
                    _ => {
                        // `$` and the next character, as written.
                        let ch = rest.chars().next().map_or(0, char::len_utf8);
                        out.push('$');
                        out.push_str(&rest[..ch]);
                        ch
                    }
                };
                i += advance;
                checkpoint = i + 1;
            }
            i += 1;
        }
        out.push_str(&s[checkpoint.min(s.len())..]);
        *s = out;
    };
    fn visit(v: &mut Value, f: &dyn Fn(&mut Value)) {
        match v {
            Value::Array(a) => a.iter_mut().for_each(|x| visit(x, f)),
            Value::Object(m) => m.values_mut().for_each(|x| visit(x, f)),
            _ => f(v),
        }
    }
    for r in &mut acc.res {
        transform::apply_specs(r, &specs, &mut |v| visit(v, &subst));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_hash_matches_kustomize() {
        let obj: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"A": "1"}
        }))
        .unwrap();
        assert_eq!(content_hash(&obj), "89g4tffbfk");
        let sec: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "kind": "Secret", "data": {"P": "cHc="}, "type": "Opaque"
        }))
        .unwrap();
        assert_eq!(content_hash(&sec), "9bf7ght95b");
        let html: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "kind": "ConfigMap", "data": {"A": "1", "B": "<x&y>"}
        }))
        .unwrap();
        assert_eq!(content_hash(&html), "kh7f5d858d");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"pw"), "cHc=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn selectors_parse() {
        let r = parse_selector("app=web,tier in (a, b),!canary").unwrap();
        assert_eq!(r.len(), 3);
    }
}
