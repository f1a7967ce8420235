//! The built-in transformers: namespace, name prefix/suffix, labels, annotations, images,
//! replicas, and the field-spec machinery they share.

use super::kustfile::{FieldSpec, ImageSpec, StringMap};
use super::resource::Res;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// A field spec with its path split into segments (`\/` escapes a slash in a key).
#[derive(Clone, Debug)]
pub struct Fs {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub path: Vec<String>,
    pub create: bool,
}

impl Fs {
    pub fn new(
        group: Option<&str>,
        version: Option<&str>,
        kind: Option<&str>,
        path: &str,
        create: bool,
    ) -> Self {
        Fs {
            group: group.map(str::to_string),
            version: version.map(str::to_string),
            kind: kind.map(str::to_string),
            path: split_path(path),
            create,
        }
    }

    pub fn from_spec(s: &FieldSpec) -> Self {
        Fs {
            group: s.group.clone().filter(|g| !g.is_empty()),
            version: s.version.clone().filter(|g| !g.is_empty()),
            kind: s.kind.clone().filter(|g| !g.is_empty()),
            path: split_path(&s.path),
            create: s.create,
        }
    }

    pub fn selects(&self, r: &Res) -> bool {
        self.kind.as_deref().is_none_or(|k| k == r.kind())
            && self.group.as_deref().is_none_or(|g| g == r.group())
            && self.version.as_deref().is_none_or(|v| v == r.version())
    }

    /// `selects` with the resource's kind, group and version looked up once by the caller.
    pub fn selects_gvk(&self, kind: &str, group: &str, version: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.group.as_deref().is_none_or(|g| g == group)
            && self.version.as_deref().is_none_or(|v| v == version)
    }
}

pub fn split_path(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'/') => {
                cur.push('/');
                chars.next();
            }
            '/' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.strip_suffix("[]").map(str::to_string).unwrap_or(s))
        .collect()
}

/// Visits the values at `path`, descending into every item of the lists met on the way.
/// With `create`, missing maps on the way and a missing final field (as `null`) are made.
pub fn walk(v: &mut Value, path: &[String], create: bool, f: &mut dyn FnMut(&mut Value)) {
    let Some((seg, rest)) = path.split_first() else {
        f(v);
        return;
    };
    match v {
        Value::Array(items) => {
            for it in items {
                walk(it, path, create, f);
            }
        }
        Value::Object(m) => {
            // One lookup on the common path (the key exists, or it is absent and nothing is
            // created); the second lookup only happens after an insert.
            if let Some(child) = m.get_mut(seg.as_str()) {
                walk(child, rest, create, f);
                return;
            }
            if !create {
                return;
            }
            let fresh = if rest.is_empty() {
                Value::Null
            } else {
                Value::Object(Map::new())
            };
            m.insert(seg.clone(), fresh);
            if let Some(child) = m.get_mut(seg.as_str()) {
                walk(child, rest, create, f);
            }
        }
        _ => {}
    }
}

/// Applies `f` at every field spec that selects `r`.
pub fn apply_specs(r: &mut Res, specs: &[Fs], f: &mut dyn FnMut(&mut Value)) {
    for fs in specs {
        if !fs.selects(r) {
            continue;
        }
        let mut root = Value::Object(std::mem::take(&mut r.obj));
        walk(&mut root, &fs.path, fs.create, f);
        if let Value::Object(m) = root {
            r.obj = m;
        }
    }
}

/// Sets string pairs into the map at the visited value (creating it when it is null).
pub fn set_pairs(v: &mut Value, pairs: &StringMap) {
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    if let Value::Object(m) = v {
        for (k, val) in pairs {
            m.insert(k.clone(), Value::String(val.clone()));
        }
    }
}

/// (group, version, kind, path, create)
type SpecLine<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a str, bool);

fn specs(lines: &[SpecLine]) -> Vec<Fs> {
    lines
        .iter()
        .map(|(g, v, k, p, c)| Fs::new(Some(*g).filter(|g| !g.is_empty()), *v, *k, p, *c))
        .collect()
}

/// Where `metadata.labels`, pod-template labels and StatefulSet claim-template labels live
/// (labels with includeTemplates).
pub fn template_label_specs() -> &'static [Fs] {
    static S: OnceLock<Vec<Fs>> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = vec![Fs::new(None, None, None, "metadata/labels", true)];
        v.extend(template_meta_specs("labels"));
        v.push(Fs::new(
            Some("apps"),
            None,
            Some("StatefulSet"),
            "spec/volumeClaimTemplates[]/metadata/labels",
            true,
        ));
        v
    })
}

fn template_meta_specs(field: &str) -> Vec<Fs> {
    let mut v = Vec::new();
    v.push(Fs::new(
        None,
        Some("v1"),
        Some("ReplicationController"),
        &format!("spec/template/metadata/{field}"),
        true,
    ));
    for k in ["Deployment", "ReplicaSet", "DaemonSet"] {
        v.push(Fs::new(
            None,
            None,
            Some(k),
            &format!("spec/template/metadata/{field}"),
            true,
        ));
    }
    v.push(Fs::new(
        Some("apps"),
        None,
        Some("StatefulSet"),
        &format!("spec/template/metadata/{field}"),
        true,
    ));
    v.push(Fs::new(
        Some("batch"),
        None,
        Some("Job"),
        &format!("spec/template/metadata/{field}"),
        true,
    ));
    v.push(Fs::new(
        Some("batch"),
        None,
        Some("CronJob"),
        &format!("spec/jobTemplate/metadata/{field}"),
        true,
    ));
    v.push(Fs::new(
        Some("batch"),
        None,
        Some("CronJob"),
        &format!("spec/jobTemplate/spec/template/metadata/{field}"),
        true,
    ));
    v
}

/// Where commonLabels (and labels with includeSelectors) go: metadata, templates and
/// selectors of the built-in workload kinds.
pub fn common_label_specs() -> &'static [Fs] {
    static S: OnceLock<Vec<Fs>> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = specs(&[
            ("", Some("v1"), Some("Service"), "spec/selector", true),
            ("", Some("v1"), Some("ReplicationController"), "spec/selector", true),
            ("", None, Some("Deployment"), "spec/selector/matchLabels", true),
            ("", None, Some("ReplicaSet"), "spec/selector/matchLabels", true),
            ("", None, Some("DaemonSet"), "spec/selector/matchLabels", true),
            ("apps", None, Some("StatefulSet"), "spec/selector/matchLabels", true),
            ("batch", None, Some("Job"), "spec/selector/matchLabels", false),
            ("batch", None, Some("CronJob"), "spec/jobTemplate/spec/selector/matchLabels", false),
            ("policy", None, Some("PodDisruptionBudget"), "spec/selector/matchLabels", false),
            ("networking.k8s.io", None, Some("NetworkPolicy"), "spec/podSelector/matchLabels", false),
            ("networking.k8s.io", None, Some("NetworkPolicy"), "spec/ingress/from/podSelector/matchLabels", false),
            ("networking.k8s.io", None, Some("NetworkPolicy"), "spec/egress/to/podSelector/matchLabels", false),
        ]);
        for kind in ["Deployment", "StatefulSet"] {
            for aff in ["podAffinity", "podAntiAffinity"] {
                v.push(Fs::new(Some("apps"), None, Some(kind), &format!("spec/template/spec/affinity/{aff}/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels"), false));
                v.push(Fs::new(Some("apps"), None, Some(kind), &format!("spec/template/spec/affinity/{aff}/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels"), false));
            }
            v.push(Fs::new(Some("apps"), None, Some(kind), "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels", false));
        }
        v.extend(template_label_specs().iter().cloned());
        v
    })
}

pub fn annotation_specs() -> &'static [Fs] {
    static S: OnceLock<Vec<Fs>> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = vec![Fs::new(None, None, None, "metadata/annotations", true)];
        v.extend(template_meta_specs("annotations"));
        v
    })
}

/// Adds labels at the given field specs.
pub fn add_labels(r: &mut Res, pairs: &StringMap, specs: &[Fs]) {
    if pairs.is_empty() {
        return;
    }
    apply_specs(r, specs, &mut |v| set_pairs(v, pairs));
}

/// namePrefix / nameSuffix. CustomResourceDefinitions keep their names (they must be
/// `<plural>.<group>`), and so do Namespaces and APIServices, as in kustomize.
pub fn prefix_suffix(r: &mut Res, prefix: &str, suffix: &str) {
    if prefix.is_empty() && suffix.is_empty() {
        return;
    }
    if matches!(r.kind(), "CustomResourceDefinition" | "Namespace")
        || (r.kind() == "APIService" && r.group() == "apiregistration.k8s.io")
    {
        return;
    }
    if !prefix.is_empty() {
        r.prefixes.push(Arc::from(prefix));
    }
    if !suffix.is_empty() {
        r.suffixes.push(Arc::from(suffix));
    }
    let name = format!("{prefix}{}{suffix}", r.name());
    r.set_name(name);
}

/// Sets the namespace of namespaced objects, and of the subjects of role bindings named
/// `default`.
pub fn set_namespace(r: &mut Res, ns: &str) {
    if ns.is_empty() {
        return;
    }
    if !r.is_cluster_scoped() {
        r.set_namespace(ns);
    }
    if matches!(r.kind(), "RoleBinding" | "ClusterRoleBinding") {
        if let Some(Value::Array(subjects)) = r.obj.get_mut("subjects") {
            // kustomize forces the namespace of every subject named `default` (whatever its
            // kind or namespace) and leaves the others to the name references.
            for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
                if s.get("name").and_then(Value::as_str) == Some("default") {
                    s.insert("namespace".into(), Value::String(ns.into()));
                }
            }
        }
    }
    // kustomize's namespace field specs also name a Namespace object after the namespace;
    // webhook configurations' service namespaces are left alone (only name references
    // update them).
    if r.kind() == "Namespace" {
        r.set_name(ns.to_string());
    }
    if r.kind() == "APIService" {
        if let Some(svc) = r
            .obj
            .get_mut("spec")
            .and_then(|s| s.get_mut("service"))
            .and_then(Value::as_object_mut)
        {
            svc.insert("namespace".into(), Value::String(ns.into()));
        }
    }
    if r.kind() == "CustomResourceDefinition" {
        if let Some(svc) = r
            .obj
            .get_mut("spec")
            .and_then(|v| v.pointer_mut("/conversion/webhook/clientConfig/service"))
            .and_then(Value::as_object_mut)
        {
            svc.insert("namespace".into(), Value::String(ns.into()));
        }
    }
}

/// Splits an image reference into name, tag (with its `:`) and digest (with its `@`).
fn split_image(image: &str) -> (&str, &str, &str) {
    let (rest, digest) = match image.find('@') {
        Some(i) => (&image[..i], &image[i..]),
        None => (image, ""),
    };
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], &rest[slash + i..], digest),
        None => (rest, "", digest),
    }
}

fn new_image(image: &str, spec: &ImageSpec) -> Option<String> {
    let (name, tag, digest) = split_image(image);
    if name != spec.name {
        return None;
    }
    let name = spec.new_name.as_deref().unwrap_or(name);
    let mut tag = tag.to_string();
    let mut digest = digest.to_string();
    if let Some(t) = &spec.new_tag {
        tag = format!(":{t}");
        digest.clear();
    }
    if let Some(d) = &spec.digest {
        digest = format!("@{d}");
        tag.clear();
    }
    if let Some(sfx) = &spec.tag_suffix {
        if !tag.is_empty() {
            tag.push_str(sfx);
        }
    }
    Some(format!("{name}{tag}{digest}"))
}

/// Rewrites `image` fields the way kustomize's image transformer does: each entry of `images`
/// is its own pass over the object, in order (so one entry can rename an image for the next
/// to match), and each pass first rewrites every container list anywhere in the object
/// (`containers` and `initContainers` in any kind, custom resources included), then once more
/// those at kustomize's default image paths (`spec/containers`, `spec/initContainers` and
/// their `spec/template/spec/` forms). An entry that is not idempotent (`tagSuffix`) is
/// therefore applied twice to the images at those paths, as kustomize does.
pub fn images(r: &mut Res, specs: &[ImageSpec]) {
    if specs.is_empty() {
        return;
    }
    fn rewrite(items: &mut [Value], spec: &ImageSpec) {
        for it in items.iter_mut() {
            if let Some(Value::String(img)) = it.get_mut("image") {
                if let Some(n) = new_image(img, spec) {
                    *img = n;
                }
            }
        }
    }
    fn visit(v: &mut Value, spec: &ImageSpec) {
        match v {
            Value::Object(m) => {
                for (k, c) in m.iter_mut() {
                    if k == "containers" || k == "initContainers" {
                        if let Value::Array(items) = c {
                            rewrite(items, spec);
                        }
                    }
                    visit(c, spec);
                }
            }
            Value::Array(items) => {
                for it in items {
                    visit(it, spec);
                }
            }
            _ => {}
        }
    }
    let mut root = Value::Object(std::mem::take(&mut r.obj));
    for spec in specs {
        visit(&mut root, spec);
        for pod in ["/spec", "/spec/template/spec"] {
            if let Some(Value::Object(p)) = root.pointer_mut(pod) {
                for list in ["containers", "initContainers"] {
                    if let Some(Value::Array(items)) = p.get_mut(list) {
                        rewrite(items, spec);
                    }
                }
            }
        }
    }
    if let Value::Object(m) = root {
        r.obj = m;
    }
}

/// `replicas:` sets `spec.replicas` of the workload kinds with that name.
pub fn replicas(r: &mut Res, name: &str, count: i64) -> bool {
    if !matches!(
        r.kind(),
        "Deployment" | "ReplicationController" | "ReplicaSet" | "StatefulSet"
    ) {
        return false;
    }
    if !r.had_name(name) {
        return false;
    }
    let spec = r
        .obj
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(s) = spec {
        s.insert("replicas".into(), Value::from(count));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_on_registry_ports() {
        assert_eq!(
            split_image("reg:5000/app:1.0"),
            ("reg:5000/app", ":1.0", "")
        );
        assert_eq!(
            split_image("nginx@sha256:abc"),
            ("nginx", "", "@sha256:abc")
        );
        let spec = ImageSpec {
            name: "nginx".into(),
            new_tag: Some("2".into()),
            ..Default::default()
        };
        assert_eq!(new_image("nginx:1", &spec).as_deref(), Some("nginx:2"));
        assert_eq!(new_image("nginxx:1", &spec), None);
    }

    #[test]
    fn escaped_slashes_stay_in_keys() {
        assert_eq!(
            split_path("metadata/annotations/nginx.ingress.kubernetes.io\\/auth-secret"),
            [
                "metadata",
                "annotations",
                "nginx.ingress.kubernetes.io/auth-secret"
            ]
        );
    }
}
