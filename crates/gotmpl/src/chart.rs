//! Helm chart rendering: what `helm template` does after the chart is on
//! disk. Loads a chart directory (Chart.yaml, values.yaml, templates/,
//! `_*.tpl` partials, unpacked subcharts in charts/ with `condition` and
//! `alias`), coalesces values the way Helm does (user values over chart
//! defaults, `null` deletes, subchart values under their name, `global`
//! passed down), renders every template with Helm's built-in objects and
//! prints the manifests like `helm template` (documents split, sorted by
//! Helm's install order, `# Source:` headers, hooks last).

use crate::value::{Object, Value};
use crate::{head_scan, yaml, Error, Templates};
use std::collections::BTreeMap;
use std::path::Path;
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
    /// `.Release.IsInstall` (`helm template`: true).
    pub is_install: bool,
    /// `.Release.IsUpgrade` (`helm template`: false; an upgrade renders with
    /// `is_install: false, is_upgrade: true` and the new revision).
    pub is_upgrade: bool,
    /// `.Release.Revision` (`helm template`: 1).
    pub revision: i64,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            release_name: "release-name".into(),
            namespace: "default".into(),
            kube_version: "v1.37.0".into(),
            api_versions: Vec::new(),
            is_install: true,
            is_upgrade: false,
            revision: 1,
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

use crate::loader::Chart;

/// Whether a dependency is enabled, Helm's `processDependencyTags` then
/// `processDependencyConditions`: tags from the top-level `tags:` values
/// (any true tag enables, all-false disables), then the first condition path
/// that resolves to a bool wins over the tags.
fn dependency_enabled(sub: &Chart, top: &Value, path: &str) -> bool {
    let mut enabled = true;
    if !sub.tags.is_empty() {
        let tags = get_path(top, "tags");
        let (mut has_true, mut has_false) = (false, false);
        for t in &sub.tags {
            if let Some(Value::Map(m)) = &tags {
                match m.borrow().get(t) {
                    Some(Value::Bool(true)) => has_true = true,
                    Some(Value::Bool(false)) => has_false = true,
                    _ => {}
                }
            }
        }
        if !has_true && has_false {
            enabled = false;
        }
    }
    if let Some(cond) = &sub.condition {
        for c in cond.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if let Some(Value::Bool(b)) = get_path(top, &format!("{path}{c}")) {
                enabled = b;
                break;
            }
        }
    }
    enabled
}

/// Applies Chart.yaml's `dependencies` to the loaded subcharts (alias,
/// condition, tags) and drops the disabled ones, recursively (Helm's
/// `processDependencyEnabled`; values are those of the whole release).
fn prune_dependencies(chart: &mut Chart, top: &Value, path: &str) {
    let deps = chart.dependencies();
    let mut kept = Vec::new();
    let mut subs = std::mem::take(&mut chart.subcharts);
    // Subcharts named by a dependency entry, possibly several times with
    // different aliases; the others are kept as they are.
    let mut used = vec![false; subs.len()];
    for dep in &deps {
        let Some(dname) = dep.get("name").and_then(|v| v.as_str()) else {
            continue;
        };
        let Some(i) = subs.iter().position(|c| c.name == dname) else {
            continue;
        };
        used[i] = true;
        let mut sub = subs[i].clone();
        if let Some(alias) = dep.get("alias").and_then(|v| v.as_str()) {
            if !alias.is_empty() {
                // Helm renames the subchart: paths and .Chart.Name change.
                sub.name = alias.to_string();
                sub.metadata.insert("name".into(), Value::str(alias));
            }
        }
        sub.condition = dep
            .get("condition")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        sub.tags = match dep.get("tags") {
            Some(Value::List(l)) => l
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        kept.push(sub);
    }
    for (i, sub) in subs.drain(..).enumerate() {
        if !used[i] {
            kept.push(sub);
        }
    }
    let mut enabled = Vec::new();
    for mut sub in kept {
        if dependency_enabled(&sub, top, path) {
            let sub_path = format!("{path}{}.", sub.name);
            prune_dependencies(&mut sub, top, &sub_path);
            enabled.push(sub);
        }
    }
    chart.subcharts = enabled;
}

/// Builds nested maps for a dotted `parent` path (Helm's `pathToMap`).
fn path_to_map(path: &str, data: Value) -> Value {
    if path == "." || path.is_empty() {
        return data;
    }
    let mut v = data;
    for part in path.split('.').rev().filter(|p| !p.is_empty()) {
        let mut m = BTreeMap::new();
        m.insert(part.to_string(), v);
        v = Value::map(m);
    }
    v
}

/// Helm's `processDependencyImportValues`, children first: each
/// `import-values` entry copies a table of the child's values into the
/// parent's; the parent's own values keep priority over imported ones.
fn import_values(chart: &mut Chart) {
    for sub in &mut chart.subcharts {
        import_values(sub);
    }
    let deps = chart.dependencies();
    if deps.iter().all(|d| !d.contains_key("import-values")) {
        return;
    }
    let cvals = coalesce_chart(chart, &Value::empty_map());
    let mut imported = Value::empty_map();
    for dep in &deps {
        let Some(Value::List(ivs)) = dep.get("import-values") else {
            continue;
        };
        let name = dep
            .get("alias")
            .and_then(|v| v.as_str())
            .filter(|a| !a.is_empty())
            .or_else(|| dep.get("name").and_then(|v| v.as_str()))
            .unwrap_or_default()
            .to_string();
        for iv in ivs.iter() {
            let (child, parent) = match iv {
                Value::String(s) => (format!("exports.{s}"), ".".to_string()),
                Value::Map(m) => {
                    let m = m.borrow();
                    let g = |k: &str| {
                        m.get(k)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    };
                    (g("child"), g("parent"))
                }
                _ => continue,
            };
            // Only tables are imported (Helm's Values.Table); a missing or
            // scalar child is skipped with a warning in Helm.
            let Some(table @ Value::Map(_)) = get_path(&cvals, &format!("{name}.{child}")) else {
                continue;
            };
            imported = coalesce(&imported, &path_to_map(&parent, table.deep_copy()));
        }
    }
    chart.values = coalesce(&cvals, &imported);
}

/// Loads the chart at `path` and computes its values the way `helm
/// template` does: dependencies enabled/disabled by conditions and tags,
/// import-values applied, then the user's values coalesced over all
/// defaults. Returns the pruned chart and the final values.
pub(crate) fn prepare(path: &Path, user: &Value) -> Result<(Chart, Value), Error> {
    let chart = crate::loader::load(path)?;
    prepare_chart(chart, user)
}

pub(crate) fn prepare_chart(mut chart: Chart, user: &Value) -> Result<(Chart, Value), Error> {
    let all = coalesce_chart(&chart, user);
    prune_dependencies(&mut chart, &all, "");
    import_values(&mut chart);
    let values = coalesce_chart(&chart, user);
    Ok((chart, values))
}

/// Helm's coalesce: `user` wins over `defaults`, maps merge recursively and a
/// user `null` removes the chart's key.
fn coalesce(user: &Value, defaults: &Value) -> Value {
    coalesce_mode(user, defaults, false, &[])
}

/// [`coalesce`] for a chart's own values: under a key naming one of its
/// `subcharts` that the user gave a map for, Helm merges instead (nulls on
/// both sides are kept, for the subchart's own coalesce to act on).
fn coalesce_mode(user: &Value, defaults: &Value, merge: bool, subcharts: &[&str]) -> Value {
    match (user, defaults) {
        (Value::Map(u), Value::Map(d)) => {
            let defaults = d.borrow();
            let mut out = defaults.clone();
            if !merge {
                // Defaults that are null are dropped, in nested maps too (not
                // inside lists).
                out.retain(|_, v| !v.is_nil());
                for v in out.values_mut() {
                    if has_nested_nil(v) {
                        *v = without_nils(v);
                    }
                }
            }
            for (k, uv) in u.borrow().iter() {
                // A user null removes a key the chart has; a null for a key
                // the chart does not have stays (and prints as null).
                if !merge && uv.is_nil() && defaults.contains_key(k) {
                    out.remove(k);
                    continue;
                }
                let merged = match defaults.get(k) {
                    Some(dv @ Value::Map(_)) if matches!(uv, Value::Map(_)) => {
                        let sub = merge || subcharts.contains(&k.as_str());
                        coalesce_mode(uv, dv, sub, &[])
                    }
                    _ => uv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::map(out)
        }
        (u, _) => u.deep_copy(),
    }
}

/// Whether a map holds a null at any depth (lists not entered).
fn has_nested_nil(v: &Value) -> bool {
    match v {
        Value::Map(m) => m.borrow().values().any(|x| x.is_nil() || has_nested_nil(x)),
        _ => false,
    }
}

/// A copy of `v` with its maps' null entries removed (lists not entered).
fn without_nils(v: &Value) -> Value {
    match v {
        Value::Map(m) => Value::map(
            m.borrow()
                .iter()
                .filter(|(_, x)| !x.is_nil())
                .map(|(k, x)| (k.clone(), without_nils(x)))
                .collect(),
        ),
        _ => v.clone(),
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
    let names: Vec<&str> = chart.subcharts.iter().map(|s| s.name.as_str()).collect();
    let vals = coalesce_mode(user, &chart.values, false, &names);
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
    fn to_data(&self) -> Value {
        Value::map(
            self.files
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Value::string(String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect(),
        )
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

/// The numeric components of a Kubernetes version, parsed like Kubernetes'
/// `ParseGeneric` (which Helm uses): optional spaces and `v`, at least two
/// dot-separated numbers, anything after them ignored.
pub(crate) fn kube_version_components(s: &str) -> Result<Vec<u64>, String> {
    let t = s.trim_start();
    let t = t.strip_prefix('v').unwrap_or(t);
    let mut end = 0;
    let b = t.as_bytes();
    // `[0-9]+(\.[0-9]+)*`
    loop {
        let start = end;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            // A dot not followed by a digit is not part of the numbers.
            end = start.saturating_sub(1);
            break;
        }
        if end < b.len() && b[end] == b'.' && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end += 1;
        } else {
            break;
        }
    }
    if end == 0 {
        return Err(format!(
            "could not parse {} as version",
            crate::gofmt::go_quote(s)
        ));
    }
    let comps: Vec<&str> = t[..end].split('.').collect();
    if comps.len() < 2 {
        return Err(format!(
            "illegal version string {}",
            crate::gofmt::go_quote(s)
        ));
    }
    let q = crate::gofmt::go_quote;
    comps
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 && c.starts_with('0') && *c != "0" {
                return Err(format!(
                    "illegal zero-prefixed version component {} in {}",
                    q(c),
                    q(s)
                ));
            }
            c.parse::<u64>().map_err(|_| {
                format!(
                    "illegal non-numeric version component {} in {}: strconv.ParseUint: parsing {}: value out of range",
                    q(c),
                    q(s),
                    q(c)
                )
            })
        })
        .collect()
}

fn capabilities(opts: &ChartOptions) -> Value {
    // Helm keeps the version as given (with a `v`); Major, Minor and the
    // printed form come from its numbers.
    let kv = if opts.kube_version.starts_with('v') {
        opts.kube_version.clone()
    } else {
        format!("v{}", opts.kube_version)
    };
    let comps = kube_version_components(&opts.kube_version)
        .or_else(|_| kube_version_components(&kv[1..]))
        .unwrap_or_else(|_| vec![1, 0]);
    let normalized = format!(
        "v{}",
        comps
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    );
    let mut k = BTreeMap::new();
    k.insert("Version".into(), Value::str(&kv));
    k.insert("GitVersion".into(), Value::str(&kv));
    k.insert(" normalized".into(), Value::str(&normalized));
    k.insert("Major".into(), Value::string(comps[0].to_string()));
    k.insert("Minor".into(), Value::string(comps[1].to_string()));
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
    h.insert("KubeClientVersion".into(), Value::str("v1.37"));
    let mut c = BTreeMap::new();
    c.insert(
        "KubeVersion".into(),
        Value::Object(Rc::new(Struct {
            type_name: "common.KubeVersion",
            kind: "struct",
            fields: k,
            data_names: &[],
            // Go prints the struct's fields in order: Version, the
            // normalized version, Major, Minor.
            display_order: &["Version", " normalized", "Major", "Minor"],
            // GitVersion is a deprecated accessor, not serialized; the
            // normalized version is unexported.
            hidden: &["GitVersion", " normalized"],
            // A template action prints it with its String method.
            action_display: Some(normalized),
        })),
    );
    c.insert(
        "APIVersions".into(),
        Value::Object(Rc::new(ApiVersions(api))),
    );
    c.insert(
        "HelmVersion".into(),
        Value::Object(Rc::new(Struct {
            type_name: "version.BuildInfo",
            kind: "struct",
            fields: h,
            display_order: &[
                "Version",
                "GitCommit",
                "GitTreeState",
                "GoVersion",
                "KubeClientVersion",
            ],
            hidden: &[],
            data_names: &[
                ("Version", "version"),
                ("GitCommit", "git_commit"),
                ("GitTreeState", "git_tree_state"),
                ("GoVersion", "go_version"),
                ("KubeClientVersion", "kube_client_version"),
            ],
            action_display: None,
        })),
    );
    Value::Object(Rc::new(Struct {
        type_name: "*common.Capabilities",
        kind: "ptr",
        fields: c,
        // Go prints a pointer to a struct as `&{...}`, fields in order.
        display_order: &["KubeVersion", "APIVersions", "HelmVersion"],
        hidden: &[],
        data_names: &[],
        action_display: None,
    }))
}

/// A Go struct seen by templates: fields by name, `%v` as `{a b c}`, and
/// JSON/YAML without the fields Go keeps out of its encoding.
struct Struct {
    type_name: &'static str,
    fields: BTreeMap<String, Value>,
    /// Go's reflect kind (`ptr` for a pointer to the struct).
    kind: &'static str,
    display_order: &'static [&'static str],
    hidden: &'static [&'static str],
    /// Field names as `toYaml`/`toJson` write them (JSON tags).
    data_names: &'static [(&'static str, &'static str)],
    action_display: Option<String>,
}

impl Object for Struct {
    fn type_name(&self) -> &str {
        self.type_name
    }
    fn field(&self, name: &str) -> Option<Value> {
        if self.hidden.contains(&name) && name.starts_with(' ') {
            return None;
        }
        self.fields.get(name).cloned()
    }
    fn call(&self, _name: &str, _args: &[Value]) -> Option<Result<Value, String>> {
        None
    }
    fn has_method(&self, _name: &str) -> bool {
        false
    }
    fn action_display(&self) -> Option<String> {
        self.action_display.clone()
    }
    fn kind_name(&self) -> &'static str {
        self.kind
    }
    fn display(&self) -> String {
        let parts: Vec<String> = self
            .display_order
            .iter()
            .filter_map(|k| self.fields.get(*k))
            .map(crate::gofmt::sprint_value)
            .collect();
        let amp = if self.kind == "ptr" { "&" } else { "" };
        format!("{amp}{{{}}}", parts.join(" "))
    }
    fn to_data(&self) -> Value {
        Value::map(
            self.fields
                .iter()
                .filter(|(k, _)| !self.hidden.contains(&k.as_str()))
                .map(|(k, v)| {
                    let name = self
                        .data_names
                        .iter()
                        .find(|(f, _)| f == k)
                        .map_or(k.as_str(), |(_, d)| d);
                    // Nested objects become plain data too.
                    let v = match v {
                        Value::Object(o) => o.to_data(),
                        v => v.clone(),
                    };
                    (name.to_string(), v)
                })
                .collect(),
        )
    }
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
        // Absent annotations are a nil map in Go: `toYaml` prints `null`.
        meta.get("annotations").cloned().unwrap_or(Value::Nil),
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
    let (chart, values) = prepare(dir, user_values)?;
    crate::schema::validate_chart(&chart, &values)?;
    render_prepared(&chart, &values, opts)
}

/// Renders the templates of a chart whose values are already computed.
pub(crate) fn render_prepared(
    chart: &Chart,
    values: &Value,
    opts: &ChartOptions,
) -> Result<Vec<(String, String)>, Error> {
    let mut set = Vec::new();
    let mut jobs = Vec::new();
    collect(chart, "", values, true, &mut set, &mut jobs);
    set.sort_by(|a, b| parse_order(&a.0, &b.0));
    let mut t = Templates::new();
    for (path, src) in &set {
        t.add(path, src)?;
    }
    let caps = capabilities(opts);
    let mut release = BTreeMap::new();
    release.insert("Name".into(), Value::str(&opts.release_name));
    release.insert("Namespace".into(), Value::str(&opts.namespace));
    release.insert("IsInstall".into(), Value::Bool(opts.is_install));
    release.insert("IsUpgrade".into(), Value::Bool(opts.is_upgrade));
    release.insert("Revision".into(), Value::Int(opts.revision));
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
    // Helm v4 splits at a `---` that starts the text or a line (one whose
    // newline no earlier separator consumed). Each document loses its
    // leading whitespace but keeps its trailing whitespace, up to and
    // including the newline before the next `---`.
    let trimmed = content.trim_start();
    let bytes = trimmed.as_bytes();
    let mut parts: Vec<&str> = Vec::new();
    let (mut start, mut consumed, mut i) = (0usize, 0usize, 0usize);
    while let Some(off) = trimmed[i..].find("---") {
        let p = i + off;
        let line_start = p == 0 || (bytes[p - 1] == b'\n' && p > consumed);
        if !line_start {
            i = p + 1;
            continue;
        }
        if p > 0 || start > 0 {
            parts.push(&trimmed[start..p]);
        } else {
            parts.push("");
        }
        let mut end = p + 3;
        while end < bytes.len() && bytes[end].is_ascii_whitespace() {
            end += 1;
        }
        start = end;
        consumed = end;
        i = end;
    }
    parts.push(&trimmed[start..]);
    // Consecutive separators (`---\n---`) leave a piece that starts with
    // `---`; Helm v4 drops those separators too.
    parts
        .into_iter()
        .map(|mut d| {
            while let Some(rest) = d.strip_prefix("---") {
                d = rest.trim_start();
            }
            d
        })
        .map(str::trim_start)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Kind and hook flag of a manifest, or Helm's error for text that is not
/// YAML (`YAML parse error on FILE: error converting YAML to JSON: ...`).
fn head_of(doc: &str, path: &str) -> Result<(String, bool), Error> {
    let head = yaml::manifest_head(doc).map_err(|e| {
        Error::Other(format!(
            "YAML parse error on {path}: error converting YAML to JSON: {e}"
        ))
    })?;
    match head {
        yaml::Head::Map { kind, hook } => Ok((kind, hook)),
        yaml::Head::Nil => Ok((String::new(), false)),
        yaml::Head::Other(what) => Err(Error::Other(format!(
            "YAML parse error on {path}: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {what} into Go value of type util.SimpleHead"
        ))),
    }
}

/// The hook events Helm knows; `test-success` is the old name of `test`.
const HOOK_EVENTS: &[&str] = &[
    "pre-install",
    "post-install",
    "pre-delete",
    "post-delete",
    "pre-upgrade",
    "post-upgrade",
    "pre-rollback",
    "post-rollback",
    "test",
    "test-success",
];

/// Whether every type a hook's `helm.sh/hook` annotation lists (comma-separated, compared
/// trimmed and in lower case, as Helm does) is one Helm knows. An empty list or an empty item
/// is unknown too. Hooks are few, so reading the document again here costs little.
fn known_hook_types(doc: &str) -> bool {
    let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(doc) else {
        return true;
    };
    let Some(types) = v
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("helm.sh/hook"))
        .and_then(|t| t.as_str())
    else {
        return true;
    };
    types
        .split(',')
        .all(|t| HOOK_EVENTS.contains(&t.trim().to_ascii_lowercase().as_str()))
}

/// A rendered release, split the way `helm template` prints it.
pub(crate) struct Release {
    /// (path, content) of crds/ files (printed only with --include-crds).
    pub crds: Vec<(String, String)>,
    /// Manifests in install order, then hooks.
    pub files: Vec<RenderedFile>,
}

/// Renders a prepared chart into sorted manifests (Helm's
/// `renderResources` + `SortManifests`).
pub(crate) fn render_release(
    chart: &Chart,
    values: &Value,
    opts: &ChartOptions,
) -> Result<Release, Error> {
    let files = render_prepared(chart, values, opts)?;
    let mut manifests: Vec<(String, RenderedFile)> = Vec::new();
    let mut hooks: Vec<(String, RenderedFile)> = Vec::new();
    let mut docs: Vec<(String, String)> = Vec::new();
    for (path, content) in files {
        if path.ends_with("NOTES.txt") || content.trim().is_empty() {
            continue;
        }
        for doc in split_manifests(&content) {
            docs.push((path.clone(), doc));
        }
    }
    // Most documents are plain block YAML that a quick scan reads. The rest
    // get one YAML parse together; on any problem there, one parse each,
    // which also gives Helm's error for the first bad document.
    let quick: Vec<Option<(String, bool)>> = docs.iter().map(|(_, d)| head_scan::scan(d)).collect();
    let batch = yaml::manifest_heads(
        docs.iter()
            .zip(&quick)
            .filter(|(_, q)| q.is_none())
            .map(|((_, d), _)| d.as_str()),
    );
    let mut slow = 0;
    for ((path, doc), quick) in docs.into_iter().zip(quick) {
        let (kind, hook) = match quick {
            Some(head) => head,
            None => {
                slow += 1;
                match batch.as_ref().and_then(|b| b.get(slow - 1)) {
                    Some(yaml::Head::Map { kind, hook }) => (kind.clone(), *hook),
                    _ => head_of(&doc, &path)?,
                }
            }
        };
        if hook && !known_hook_types(&doc) {
            // Helm leaves such a document out of the release altogether (it logs "skipping
            // unknown hooks"): neither a manifest nor a hook.
            continue;
        }
        let f = RenderedFile {
            path,
            content: doc,
            hook,
        };
        if hook {
            hooks.push((kind, f));
        } else {
            manifests.push((kind, f));
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
    let mut crds = Vec::new();
    collect_crds(chart, "", &mut crds);
    Ok(Release {
        crds,
        files: manifests.into_iter().chain(hooks).map(|(_, f)| f).collect(),
    })
}

/// Helm's `CRDObjects`: the chart's crds/ files, then its (enabled)
/// subcharts', with paths like `parent/charts/sub/crds/x.yaml`.
fn collect_crds(chart: &Chart, prefix: &str, out: &mut Vec<(String, String)>) {
    let base = format!("{prefix}{}", chart.name);
    for (rel, data) in &chart.crds {
        out.push((
            format!("{base}/{rel}"),
            String::from_utf8_lossy(data).into_owned(),
        ));
    }
    for sub in &chart.subcharts {
        collect_crds(sub, &format!("{base}/charts/"), out);
    }
}

/// `helm template`: renders the chart and returns the manifests in Helm's
/// output order (by install order of kinds, then hooks).
pub fn render_chart(
    dir: &Path,
    opts: &ChartOptions,
    user_values: &serde_json::Value,
) -> Result<Vec<RenderedFile>, Error> {
    let (chart, values) = prepare(dir, &Value::from_json(user_values))?;
    crate::schema::validate_chart(&chart, &values)?;
    Ok(render_release(&chart, &values, opts)?.files)
}

/// Formats manifests the way `helm template` (v4) prints them: each
/// document (with its trailing whitespace) followed by a newline, the
/// manifest block trimmed, then the hooks.
pub fn format_manifests(files: &[RenderedFile]) -> String {
    format_output(&[], files)
}

/// [`format_manifests`] with CRDs first (`--include-crds`), each printed
/// as-is after a `# Source:` line.
pub(crate) fn format_output(crds: &[(String, String)], files: &[RenderedFile]) -> String {
    let size: usize = crds
        .iter()
        .map(|(p, c)| p.len() + c.len() + 20)
        .sum::<usize>()
        + files
            .iter()
            .map(|f| f.path.len() + f.content.len() + 20)
            .sum::<usize>();
    let mut out = String::with_capacity(size);
    for (path, content) in crds {
        out.push_str("---\n# Source: ");
        out.push_str(path);
        out.push('\n');
        out.push_str(content);
        out.push('\n');
    }
    for f in files.iter().filter(|f| !f.hook) {
        out.push_str("---\n# Source: ");
        out.push_str(&f.path);
        out.push('\n');
        out.push_str(&f.content);
        out.push('\n');
    }
    // Trim in place (the text starts with `---`, so only the end can have
    // whitespace; a crds-only or empty text is handled the same way).
    let start = out.len() - out.trim_start().len();
    out.drain(..start);
    out.truncate(out.trim_end().len());
    out.push('\n');
    for f in files.iter().filter(|f| f.hook) {
        out.push_str("---\n# Source: ");
        out.push_str(&f.path);
        out.push('\n');
        out.push_str(&f.content);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod split_tests {
    /// Helm's own splitting, with its regular expression.
    fn helm_split(content: &str) -> Vec<String> {
        let re = regex::Regex::new(r"(?:^|\s*\n)---\s*").unwrap();
        re.split(content.trim())
            .map(|mut d| {
                while let Some(rest) = d.strip_prefix("---") {
                    d = rest.trim_start();
                }
                d
            })
            .filter(|d| !d.is_empty())
            .map(|d| d.trim().to_string())
            .collect()
    }

    #[test]
    fn splits_like_helms_regex() {
        for text in [
            "a: 1\n---\nb: 2\n",
            "---\na: 1\n---\n---\nb: 2\n---",
            "a: 1\n  \n---   \n\n---\nb: |\n  x---y\n  ---\nc: d---\n",
            "---a: 1\n---b\n- ---\n",
            "a\n--- # comment\nb\n----\nc",
            "",
            "---",
            "\n\n---\n\n",
            "x: '---'\n---\r\ny: 1\r\n---",
        ] {
            let ours: Vec<String> = super::split_manifests(text)
                .iter()
                .map(|d| d.trim_end().to_string())
                .collect();
            assert_eq!(ours, helm_split(text), "{text:?}");
        }
    }

    #[test]
    fn documents_keep_trailing_whitespace() {
        assert_eq!(
            super::split_manifests("\n  a: 1\n  \n\n---   \n\nb: 2\n  \n---\n---\nc\r\n---\r\nd"),
            ["a: 1\n  \n\n", "b: 2\n  \n", "c\r\n", "d"]
        );
    }
}
