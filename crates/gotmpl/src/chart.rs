//! Helm chart rendering: what `helm template` does after the chart is on
//! disk. Loads a chart directory (Chart.yaml, values.yaml, templates/,
//! `_*.tpl` partials, unpacked subcharts in charts/ with `condition` and
//! `alias`), coalesces values the way Helm does (user values over chart
//! defaults, `null` deletes, subchart values under their name, `global`
//! passed down), renders every template with Helm's built-in objects and
//! prints the manifests like `helm template` (documents split, sorted by
//! Helm's install order, `# Source:` headers, hooks last).

use crate::value::{Object, Value};
use crate::{yaml, Error, Templates};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Release and cluster settings for [`render_chart`].
#[derive(Debug, Clone)]
pub struct ChartOptions {
    /// `.Release.Name`.
    pub release_name: String,
    /// `.Release.Namespace`.
    pub namespace: String,
    /// `.Capabilities.KubeVersion.Version` (Helm v4.3's default: v1.37.0).
    pub kube_version: String,
    /// Extra `.Capabilities.APIVersions` on top of Helm's built-in list.
    pub api_versions: Vec<String>,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            release_name: "release-name".into(),
            namespace: "default".into(),
            kube_version: "v1.37.0".into(),
            api_versions: Vec::new(),
        }
    }
}

/// One manifest of the output: the template it came from and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedFile {
    /// Template path, e.g. `mychart/templates/deployment.yaml`.
    pub path: String,
    /// The document text (trimmed, without `---`).
    pub content: String,
    /// A `helm.sh/hook` resource (printed after the manifests).
    pub hook: bool,
}

/// The API versions `helm template` reports by default (Helm v4.3.1).
const DEFAULT_API_VERSIONS: &str = "v1 admissionregistration.k8s.io/v1 admissionregistration.k8s.io/v1alpha1 admissionregistration.k8s.io/v1beta1 internal.apiserver.k8s.io/v1alpha1 apps/v1 apps/v1beta1 apps/v1beta2 authentication.k8s.io/v1 authentication.k8s.io/v1alpha1 authentication.k8s.io/v1beta1 authorization.k8s.io/v1 authorization.k8s.io/v1beta1 autoscaling/v1 autoscaling/v2 batch/v1 batch/v1beta1 certificates.k8s.io/v1 certificates.k8s.io/v1beta1 certificates.k8s.io/v1alpha1 coordination.k8s.io/v1alpha2 coordination.k8s.io/v1beta1 coordination.k8s.io/v1 discovery.k8s.io/v1 discovery.k8s.io/v1beta1 events.k8s.io/v1 events.k8s.io/v1beta1 extensions/v1beta1 flowcontrol.apiserver.k8s.io/v1 flowcontrol.apiserver.k8s.io/v1beta1 flowcontrol.apiserver.k8s.io/v1beta2 flowcontrol.apiserver.k8s.io/v1beta3 lifecycle.k8s.io/v1alpha1 networking.k8s.io/v1 networking.k8s.io/v1beta1 node.k8s.io/v1 node.k8s.io/v1alpha1 node.k8s.io/v1beta1 policy/v1 policy/v1beta1 rbac.authorization.k8s.io/v1 rbac.authorization.k8s.io/v1beta1 rbac.authorization.k8s.io/v1alpha1 resource.k8s.io/v1 resource.k8s.io/v1beta2 resource.k8s.io/v1beta1 resource.k8s.io/v1alpha3 scheduling.k8s.io/v1alpha3 scheduling.k8s.io/v1beta1 scheduling.k8s.io/v1 storage.k8s.io/v1beta1 storage.k8s.io/v1 storage.k8s.io/v1alpha1 storagemigration.k8s.io/v1 storagemigration.k8s.io/v1beta1 apiextensions.k8s.io/v1beta1 apiextensions.k8s.io/v1";

/// Helm's InstallOrder of kinds.
const INSTALL_ORDER: &[&str] = &[
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// A loaded chart.
struct Chart {
    /// Name used in template paths (alias if any).
    name: String,
    metadata: BTreeMap<String, Value>,
    values: Value,
    /// (path relative to chart root, content)
    templates: Vec<(String, String)>,
    files: Rc<BTreeMap<String, Vec<u8>>>,
    subcharts: Vec<Chart>,
    /// `condition` from the parent's dependency entry.
    condition: Option<String>,
    is_library: bool,
}

fn other<E: std::fmt::Display>(ctx: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Other(format!("{ctx}: {e}"))
}

fn read_dir_recursive(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(other(&dir.display().to_string()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = rel.join(e.file_name());
        let ft = e.file_type().map_err(other("file type"))?;
        if ft.is_dir() {
            read_dir_recursive(root, &p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn load_chart(dir: &Path) -> Result<Chart, Error> {
    let chart_yaml = std::fs::read_to_string(dir.join("Chart.yaml")).map_err(other(&format!(
        "Chart.yaml file is missing in {}",
        dir.display()
    )))?;
    let meta = yaml::from_yaml_str(&chart_yaml).map_err(other("Chart.yaml"))?;
    let Value::Map(meta) = meta else {
        return Err(Error::Other("Chart.yaml is not a mapping".into()));
    };
    let meta = meta.borrow().clone();
    let name = meta
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(Error::Other(
            "validation: chart.metadata.name is required".into(),
        ));
    }
    let values = match std::fs::read_to_string(dir.join("values.yaml")) {
        Ok(s) => match yaml::from_yaml_str(&s).map_err(other("values.yaml"))? {
            Value::Nil => Value::empty_map(),
            v => v,
        },
        Err(_) => Value::empty_map(),
    };
    let mut all = Vec::new();
    read_dir_recursive(dir, Path::new(""), &mut all)?;
    let mut templates = Vec::new();
    let mut files = BTreeMap::new();
    for rel in all {
        let rels = rel.to_string_lossy().replace('\\', "/");
        if rels.starts_with("charts/") {
            continue;
        }
        let data = std::fs::read(dir.join(&rel)).map_err(other(&rels))?;
        if rels.starts_with("templates/") {
            templates.push((rels, String::from_utf8_lossy(&data).into_owned()));
        } else if rels != "Chart.yaml" && rels != "values.yaml" {
            files.insert(rels, data);
        }
    }
    // Dependencies: unpacked chart directories under charts/.
    let deps: Vec<BTreeMap<String, Value>> = match meta.get("dependencies") {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|d| match d {
                Value::Map(m) => Some(m.borrow().clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut subcharts = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("charts")) {
        let mut dirs: Vec<_> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .collect();
        dirs.sort_by_key(|e| e.file_name());
        for d in dirs {
            let mut sub = load_chart(&d.path())?;
            let dep = deps
                .iter()
                .find(|m| m.get("name").and_then(|v| v.as_str()) == Some(sub.name.as_str()));
            if let Some(dep) = dep {
                if let Some(alias) = dep.get("alias").and_then(|v| v.as_str()) {
                    // Helm renames the subchart: paths and .Chart.Name change.
                    sub.name = alias.to_string();
                    sub.metadata.insert("name".into(), Value::str(alias));
                }
                sub.condition = dep
                    .get("condition")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
            }
            subcharts.push(sub);
        }
    }
    let is_library = meta.get("type").and_then(|v| v.as_str()) == Some("library");
    Ok(Chart {
        name,
        metadata: meta,
        values,
        templates,
        files: Rc::new(files),
        subcharts,
        condition: None,
        is_library,
    })
}

/// Helm's coalesce: `user` wins over `defaults`, maps merge recursively and a
/// user `null` removes the key.
fn coalesce(user: &Value, defaults: &Value) -> Value {
    match (user, defaults) {
        (Value::Map(u), Value::Map(d)) => {
            let mut out = d.borrow().clone();
            for (k, uv) in u.borrow().iter() {
                if uv.is_nil() {
                    out.remove(k);
                    continue;
                }
                let merged = match out.get(k) {
                    Some(dv @ Value::Map(_)) if matches!(uv, Value::Map(_)) => coalesce(uv, dv),
                    _ => uv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            // Defaults that are null are dropped too.
            out.retain(|_, v| !v.is_nil());
            Value::map(out)
        }
        (u, _) => u.deep_copy(),
    }
}

fn get_path(v: &Value, path: &str) -> Option<Value> {
    let mut cur = v.clone();
    for p in path.split('.') {
        let next = match &cur {
            Value::Map(m) => m.borrow().get(p).cloned()?,
            _ => return None,
        };
        cur = next;
    }
    Some(cur)
}

/// Values for a chart and its enabled subcharts, Helm style.
fn coalesce_chart(chart: &Chart, user: &Value) -> Value {
    let vals = coalesce(user, &chart.values);
    let Value::Map(m) = &vals else { return vals };
    for sub in &chart.subcharts {
        let parent_part = m
            .borrow()
            .get(&sub.name)
            .cloned()
            .unwrap_or_else(Value::empty_map);
        let parent_part = if matches!(parent_part, Value::Map(_)) {
            parent_part
        } else {
            Value::empty_map()
        };
        // Parent globals override the subchart's.
        let globals = m
            .borrow()
            .get("global")
            .cloned()
            .unwrap_or_else(Value::empty_map);
        let sub_vals = coalesce_chart(sub, &parent_part);
        if let Value::Map(sm) = &sub_vals {
            let sub_global = sm
                .borrow()
                .get("global")
                .cloned()
                .unwrap_or_else(Value::empty_map);
            let g = coalesce(&globals, &sub_global);
            sm.borrow_mut().insert("global".into(), g);
        }
        m.borrow_mut().insert(sub.name.clone(), sub_vals);
    }
    if !m.borrow().contains_key("global") && !chart.subcharts.is_empty() {
        m.borrow_mut().insert("global".into(), Value::empty_map());
    }
    vals
}

/// `.Files`: the chart's non-template files.
struct Files {
    files: Rc<BTreeMap<String, Vec<u8>>>,
}

fn glob_match(pat: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                if p.get(1) == Some(&b'*') {
                    let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
                    (0..=n.len()).any(|i| rec(rest, &n[i..]))
                } else {
                    (0..=n.len())
                        .take_while(|i| *i == 0 || n[i - 1] != b'/')
                        .any(|i| rec(&p[1..], &n[i..]))
                }
            }
            (Some(b'?'), Some(c)) => *c != b'/' && rec(&p[1..], &n[1..]),
            (Some(a), Some(b)) => a == b && rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    rec(pat.as_bytes(), name.as_bytes())
}

impl Object for Files {
    fn type_name(&self) -> &str {
        "engine.files"
    }
    fn field(&self, _name: &str) -> Option<Value> {
        None
    }
    fn has_method(&self, name: &str) -> bool {
        matches!(
            name,
            "Get" | "GetBytes" | "Glob" | "AsConfig" | "AsSecrets" | "Lines"
        )
    }
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let arg0 = || {
            args.first()
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let text = |k: &str| {
            self.files
                .get(k)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        Some(Ok(match name {
            "Get" => Value::string(text(&arg0())),
            "GetBytes" => Value::string(text(&arg0())),
            "Lines" => {
                let t = text(&arg0());
                let t = t.strip_suffix('\n').unwrap_or(&t).to_string();
                if t.is_empty() {
                    Value::list(Vec::new())
                } else {
                    Value::list(t.split('\n').map(Value::str).collect())
                }
            }
            "Glob" => {
                let pat = arg0();
                let sub: BTreeMap<String, Vec<u8>> = self
                    .files
                    .iter()
                    .filter(|(k, _)| glob_match(&pat, k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Value::Object(Rc::new(Files {
                    files: Rc::new(sub),
                }))
            }
            "AsConfig" | "AsSecrets" => {
                let mut m = BTreeMap::new();
                for (k, v) in self.files.iter() {
                    let base = k.rsplit('/').next().unwrap_or(k).to_string();
                    let val = if name == "AsSecrets" {
                        crate::encoding::b64_encode(v)
                    } else {
                        String::from_utf8_lossy(v).into_owned()
                    };
                    m.insert(base, Value::string(val));
                }
                if m.is_empty() {
                    Value::str("")
                } else {
                    Value::string(yaml::to_yaml(&Value::map(m)))
                }
            }
            _ => return None,
        }))
    }
    fn display(&self) -> String {
        format!(
            "map[{}]",
            self.files
                .keys()
                .map(|k| format!("{k}:[...]"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

struct ApiVersions(Vec<String>);

impl Object for ApiVersions {
    fn type_name(&self) -> &str {
        "common.VersionSet"
    }
    fn field(&self, _name: &str) -> Option<Value> {
        None
    }
    fn has_method(&self, name: &str) -> bool {
        name == "Has"
    }
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        if name != "Has" {
            return None;
        }
        let want = args.first().and_then(|v| v.as_str()).unwrap_or_default();
        Some(Ok(Value::Bool(self.0.iter().any(|v| v == want))))
    }
    fn display(&self) -> String {
        format!("[{}]", self.0.join(" "))
    }
    fn to_data(&self) -> Value {
        Value::list(self.0.iter().map(|s| Value::str(s)).collect())
    }
}

fn capabilities(opts: &ChartOptions) -> Value {
    let kv = if opts.kube_version.starts_with('v') {
        opts.kube_version.clone()
    } else {
        format!("v{}", opts.kube_version)
    };
    let parts: Vec<&str> = kv.trim_start_matches('v').split('.').collect();
    let mut k = BTreeMap::new();
    k.insert("Version".into(), Value::str(&kv));
    k.insert("GitVersion".into(), Value::str(&kv));
    k.insert(
        "Major".into(),
        Value::str(parts.first().copied().unwrap_or("1")),
    );
    k.insert(
        "Minor".into(),
        Value::str(parts.get(1).copied().unwrap_or("0")),
    );
    let mut api: Vec<String> = DEFAULT_API_VERSIONS
        .split(' ')
        .map(str::to_string)
        .collect();
    api.extend(opts.api_versions.iter().cloned());
    let mut h = BTreeMap::new();
    h.insert("Version".into(), Value::str("v4.3.1"));
    h.insert(
        "GitCommit".into(),
        Value::str("c0d08d0d6d9424d4a14febb5e8a3e51b0dd00dff"),
    );
    h.insert("GitTreeState".into(), Value::str("clean"));
    h.insert("GoVersion".into(), Value::str("go1.27.2"));
    let mut c = BTreeMap::new();
    c.insert("KubeVersion".into(), Value::map(k));
    c.insert(
        "APIVersions".into(),
        Value::Object(Rc::new(ApiVersions(api))),
    );
    c.insert("HelmVersion".into(), Value::map(h));
    Value::map(c)
}

/// `.Chart`: Helm v4 passes the metadata as a map with Go field names.
fn chart_object(meta: &BTreeMap<String, Value>, is_root: bool) -> Value {
    let s = |k: &str| meta.get(k).cloned().unwrap_or_else(|| Value::str(""));
    let l = |k: &str| {
        meta.get(k)
            .cloned()
            .unwrap_or_else(|| Value::list(Vec::new()))
    };
    let mut m = BTreeMap::new();
    m.insert("APIVersion".into(), s("apiVersion"));
    m.insert(
        "Annotations".into(),
        meta.get("annotations")
            .cloned()
            .unwrap_or_else(Value::empty_map),
    );
    m.insert("AppVersion".into(), s("appVersion"));
    m.insert("Condition".into(), s("condition"));
    m.insert("Dependencies".into(), l("dependencies"));
    m.insert(
        "Deprecated".into(),
        meta.get("deprecated")
            .cloned()
            .unwrap_or(Value::Bool(false)),
    );
    m.insert("Description".into(), s("description"));
    m.insert("Home".into(), s("home"));
    m.insert("Icon".into(), s("icon"));
    m.insert("IsRoot".into(), Value::Bool(is_root));
    m.insert("Keywords".into(), l("keywords"));
    m.insert("KubeVersion".into(), s("kubeVersion"));
    m.insert("Maintainers".into(), l("maintainers"));
    m.insert("Name".into(), s("name"));
    m.insert("Sources".into(), l("sources"));
    m.insert("Tags".into(), s("tags"));
    m.insert("Type".into(), s("type"));
    m.insert("Version".into(), s("version"));
    Value::map(m)
}

struct Job {
    path: String,
    base: String,
    values: Value,
    chart: Value,
    files: Rc<BTreeMap<String, Vec<u8>>>,
    library: bool,
}

fn collect(
    chart: &Chart,
    prefix: &str,
    values: &Value,
    is_root: bool,
    set: &mut Vec<(String, String)>,
    jobs: &mut Vec<Job>,
) {
    let base = format!("{prefix}{}", chart.name);
    for (rel, src) in &chart.templates {
        let path = format!("{base}/{rel}");
        set.push((path.clone(), src.clone()));
        jobs.push(Job {
            path,
            base: format!("{base}/templates"),
            values: values.clone(),
            chart: chart_object(&chart.metadata, is_root),
            files: chart.files.clone(),
            library: chart.is_library,
        });
    }
    for sub in &chart.subcharts {
        if let Some(cond) = &sub.condition {
            // First path that resolves to a bool decides (Helm semantics).
            let enabled = cond
                .split(',')
                .map(str::trim)
                .find_map(|p| match get_path(values, p) {
                    Some(Value::Bool(b)) => Some(b),
                    _ => None,
                })
                .unwrap_or(true);
            if !enabled {
                continue;
            }
        }
        let sub_vals = match values {
            Value::Map(m) => m
                .borrow()
                .get(&sub.name)
                .cloned()
                .unwrap_or_else(Value::empty_map),
            _ => Value::empty_map(),
        };
        collect(sub, &format!("{base}/charts/"), &sub_vals, false, set, jobs);
    }
}

/// Helm's template parse order: deeper paths first, then reverse
/// lexicographic, so that the parent chart's definitions win.
fn parse_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (ca, cb) = (a.matches('/').count(), b.matches('/').count());
    cb.cmp(&ca).then_with(|| b.cmp(a))
}

/// Renders every template of the chart in `dir` (Helm's `engine.Render`):
/// returns (template path, rendered text) for every non-partial template,
/// sorted by path. NOTES.txt is included as rendered.
pub fn render_templates(
    dir: &Path,
    opts: &ChartOptions,
    user_values: &Value,
) -> Result<Vec<(String, String)>, Error> {
    let chart = load_chart(dir)?;
    let values = coalesce_chart(&chart, user_values);
    let mut set = Vec::new();
    let mut jobs = Vec::new();
    collect(&chart, "", &values, true, &mut set, &mut jobs);
    set.sort_by(|a, b| parse_order(&a.0, &b.0));
    let mut t = Templates::new();
    for (path, src) in &set {
        t.add(path, src)?;
    }
    let caps = capabilities(opts);
    let mut release = BTreeMap::new();
    release.insert("Name".into(), Value::str(&opts.release_name));
    release.insert("Namespace".into(), Value::str(&opts.namespace));
    release.insert("IsInstall".into(), Value::Bool(true));
    release.insert("IsUpgrade".into(), Value::Bool(false));
    release.insert("Revision".into(), Value::Int(1));
    release.insert("Service".into(), Value::str("Helm"));
    let release = Value::map(release);
    let mut out = Vec::new();
    jobs.sort_by(|a, b| a.path.cmp(&b.path));
    for job in &jobs {
        let file = job.path.rsplit('/').next().unwrap_or_default();
        if file.starts_with('_') || job.library {
            continue;
        }
        let mut top = BTreeMap::new();
        top.insert("Values".into(), job.values.clone());
        top.insert("Release".into(), release.clone());
        top.insert("Chart".into(), job.chart.clone());
        top.insert("Capabilities".into(), caps.clone());
        top.insert(
            "Files".into(),
            Value::Object(Rc::new(Files {
                files: job.files.clone(),
            })),
        );
        let mut tm = BTreeMap::new();
        tm.insert("Name".into(), Value::str(&job.path));
        tm.insert("BasePath".into(), Value::str(&job.base));
        top.insert("Template".into(), Value::map(tm));
        let text = t.render(&job.path, &Value::map(top))?;
        out.push((job.path.clone(), text));
    }
    Ok(out)
}

/// Splits a rendered file into YAML documents like Helm's SplitManifests.
fn split_manifests(content: &str) -> Vec<String> {
    let sep = regex::Regex::new(r"(?:^|\s*\n)---\s*").ok();
    let trimmed = content.trim();
    let parts: Vec<&str> = match &sep {
        Some(re) => re.split(trimmed).collect(),
        None => vec![trimmed],
    };
    parts
        .into_iter()
        .filter(|d| !d.is_empty())
        .map(|d| d.trim().to_string())
        .collect()
}

fn head_of(doc: &str) -> (String, bool) {
    match yaml::from_yaml_str(doc) {
        Ok(Value::Map(m)) => {
            let m = m.borrow();
            let kind = m
                .get("kind")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let hook = match m.get("metadata") {
                Some(Value::Map(md)) => match md.borrow().get("annotations") {
                    Some(Value::Map(a)) => a.borrow().contains_key("helm.sh/hook"),
                    _ => false,
                },
                _ => false,
            };
            (kind, hook)
        }
        _ => (String::new(), false),
    }
}

/// `helm template`: renders the chart and returns the manifests in Helm's
/// output order (by install order of kinds, then hooks).
pub fn render_chart(
    dir: &Path,
    opts: &ChartOptions,
    user_values: &serde_json::Value,
) -> Result<Vec<RenderedFile>, Error> {
    let files = render_templates(dir, opts, &Value::from_json(user_values))?;
    let mut manifests: Vec<(String, RenderedFile)> = Vec::new();
    let mut hooks: Vec<(String, RenderedFile)> = Vec::new();
    for (path, content) in files {
        if path.ends_with("NOTES.txt") || content.trim().is_empty() {
            continue;
        }
        for doc in split_manifests(&content) {
            let (kind, hook) = head_of(&doc);
            let f = RenderedFile {
                path: path.clone(),
                content: doc,
                hook,
            };
            if hook {
                hooks.push((kind, f));
            } else {
                manifests.push((kind, f));
            }
        }
    }
    let rank = |k: &str| INSTALL_ORDER.iter().position(|x| *x == k);
    let order =
        |a: &(String, RenderedFile), b: &(String, RenderedFile)| match (rank(&a.0), rank(&b.0)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.0.cmp(&b.0),
        };
    manifests.sort_by(order);
    hooks.sort_by(order);
    Ok(manifests.into_iter().chain(hooks).map(|(_, f)| f).collect())
}

/// Formats manifests the way `helm template` (v4) prints them: each
/// document followed by a blank line, the manifest block trimmed, then the
/// hooks.
pub fn format_manifests(files: &[RenderedFile]) -> String {
    let mut out = String::new();
    for f in files.iter().filter(|f| !f.hook) {
        out.push_str("---\n# Source: ");
        out.push_str(&f.path);
        out.push('\n');
        out.push_str(&f.content);
        out.push_str("\n\n");
    }
    let mut out = out.trim().to_string();
    out.push('\n');
    for f in files.iter().filter(|f| f.hook) {
        out.push_str("---\n# Source: ");
        out.push_str(&f.path);
        out.push('\n');
        out.push_str(&f.content);
        out.push_str("\n\n");
    }
    out
}
