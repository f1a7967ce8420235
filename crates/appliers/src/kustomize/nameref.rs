//! Name references: after prefixes, suffixes and content hashes changed names, every field
//! that names another resource (a ConfigMap volume, a Secret env ref, a RoleBinding's
//! ServiceAccount subject, an Ingress backend Service, ...) is rewritten to the new name.
//!
//! The table follows kustomize's built-in `nameReference` configuration, written here as the
//! pod-spec paths crossed with the workload kinds that embed a pod spec.

use super::resource::{effective_ns, Res};
use super::transform::{walk, Fs};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A kind that can be referred to, and the fields that refer to it.
pub struct RefRule {
    pub kind: String,
    pub group: Option<String>,
    pub referrers: Vec<Fs>,
}

const POD_KINDS: &[(&str, &str)] = &[
    ("Pod", "spec"),
    ("PodTemplate", "template/spec"),
    ("Deployment", "spec/template/spec"),
    ("ReplicaSet", "spec/template/spec"),
    ("DaemonSet", "spec/template/spec"),
    ("StatefulSet", "spec/template/spec"),
    ("Job", "spec/template/spec"),
    ("CronJob", "spec/jobTemplate/spec/template/spec"),
];

/// Kinds whose pod spec refers to ServiceAccounts, PVCs and PriorityClasses.
const POD_KINDS_SA: &[(&str, &str)] = &[
    ("Pod", "spec"),
    ("StatefulSet", "spec/template/spec"),
    ("Deployment", "spec/template/spec"),
    ("ReplicationController", "spec/template/spec"),
    ("CronJob", "spec/jobTemplate/spec/template/spec"),
    ("Job", "spec/template/spec"),
    ("DaemonSet", "spec/template/spec"),
];

fn pod_rules(kinds: &[(&str, &str)], paths: &[&str]) -> Vec<Fs> {
    let mut v = Vec::new();
    for (kind, prefix) in kinds {
        for p in paths {
            v.push(Fs::new(
                None,
                None,
                Some(kind),
                &format!("{prefix}/{p}"),
                false,
            ));
        }
    }
    v
}

fn fs(kind: &str, group: Option<&str>, path: &str) -> Fs {
    Fs::new(group, None, Some(kind), path, false)
}

pub fn builtin_rules() -> &'static [RefRule] {
    static R: OnceLock<Vec<RefRule>> = OnceLock::new();
    R.get_or_init(|| {
        let mut rules = Vec::new();
        for target in [
            "Deployment",
            "ReplicationController",
            "ReplicaSet",
            "StatefulSet",
        ] {
            rules.push(RefRule {
                kind: target.into(),
                group: None,
                referrers: vec![fs(
                    "HorizontalPodAutoscaler",
                    None,
                    "spec/scaleTargetRef/name",
                )],
            });
        }
        let mut cm = pod_rules(
            POD_KINDS,
            &[
                "volumes/configMap/name",
                "containers/env/valueFrom/configMapKeyRef/name",
                "initContainers/env/valueFrom/configMapKeyRef/name",
                "containers/envFrom/configMapRef/name",
                "initContainers/envFrom/configMapRef/name",
                "volumes/projected/sources/configMap/name",
            ],
        );
        cm.push(fs("Node", None, "spec/configSource/configMap"));
        cm.push(fs("Role", None, "rules/resourceNames"));
        cm.push(fs("ClusterRole", None, "rules/resourceNames"));
        cm.push(fs(
            "Ingress",
            None,
            "metadata/annotations/nginx.ingress.kubernetes.io\\/fastcgi-params-configmap",
        ));
        rules.push(RefRule {
            kind: "ConfigMap".into(),
            group: Some(String::new()),
            referrers: cm,
        });

        let mut sec = pod_rules(
            POD_KINDS,
            &[
                "volumes/secret/secretName",
                "containers/env/valueFrom/secretKeyRef/name",
                "initContainers/env/valueFrom/secretKeyRef/name",
                "containers/envFrom/secretRef/name",
                "initContainers/envFrom/secretRef/name",
                "imagePullSecrets/name",
                "volumes/projected/sources/secret/name",
            ],
        );
        for p in [
            "spec/tls/secretName",
            "metadata/annotations/ingress.kubernetes.io\\/auth-secret",
            "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-secret",
            "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-tls-secret",
        ] {
            sec.push(fs("Ingress", None, p));
        }
        sec.push(fs("ServiceAccount", None, "imagePullSecrets/name"));
        for p in [
            "parameters/secretName",
            "parameters/adminSecretName",
            "parameters/userSecretName",
            "parameters/secretRef",
        ] {
            sec.push(fs("StorageClass", None, p));
        }
        sec.push(fs("Role", None, "rules/resourceNames"));
        sec.push(fs("ClusterRole", None, "rules/resourceNames"));
        sec.push(Fs::new(
            Some("serving.knative.dev"),
            Some("v1"),
            Some("Service"),
            "spec/template/spec/containers/env/valueFrom/secretKeyRef/name",
            false,
        ));
        sec.push(fs("PersistentVolume", None, "spec/azureFile/secretName"));
        rules.push(RefRule {
            kind: "Secret".into(),
            group: Some(String::new()),
            referrers: sec,
        });

        rules.push(RefRule {
            kind: "Service".into(),
            group: Some(String::new()),
            referrers: vec![
                fs("StatefulSet", Some("apps"), "spec/serviceName"),
                fs("Ingress", None, "spec/rules/http/paths/backend/serviceName"),
                fs("Ingress", None, "spec/backend/serviceName"),
                fs(
                    "Ingress",
                    None,
                    "spec/rules/http/paths/backend/service/name",
                ),
                fs("Ingress", None, "spec/defaultBackend/service/name"),
                fs(
                    "APIService",
                    Some("apiregistration.k8s.io"),
                    "spec/service/name",
                ),
                fs(
                    "ValidatingWebhookConfiguration",
                    Some("admissionregistration.k8s.io"),
                    "webhooks/clientConfig/service",
                ),
                fs(
                    "MutatingWebhookConfiguration",
                    Some("admissionregistration.k8s.io"),
                    "webhooks/clientConfig/service",
                ),
                fs("HTTPRoute", None, "spec/rules/backendRefs/name"),
            ],
        });
        rules.push(RefRule {
            kind: "Role".into(),
            group: Some("rbac.authorization.k8s.io".into()),
            referrers: vec![fs(
                "RoleBinding",
                Some("rbac.authorization.k8s.io"),
                "roleRef/name",
            )],
        });
        rules.push(RefRule {
            kind: "ClusterRole".into(),
            group: Some("rbac.authorization.k8s.io".into()),
            referrers: vec![
                fs(
                    "RoleBinding",
                    Some("rbac.authorization.k8s.io"),
                    "roleRef/name",
                ),
                fs(
                    "ClusterRoleBinding",
                    Some("rbac.authorization.k8s.io"),
                    "roleRef/name",
                ),
            ],
        });
        let mut sa = vec![
            fs("RoleBinding", Some("rbac.authorization.k8s.io"), "subjects"),
            fs(
                "ClusterRoleBinding",
                Some("rbac.authorization.k8s.io"),
                "subjects",
            ),
        ];
        sa.extend(pod_rules(POD_KINDS_SA, &["serviceAccountName"]));
        rules.push(RefRule {
            kind: "ServiceAccount".into(),
            group: Some(String::new()),
            referrers: sa,
        });
        rules.push(RefRule {
            kind: "PersistentVolumeClaim".into(),
            group: Some(String::new()),
            referrers: pod_rules(POD_KINDS_SA, &["volumes/persistentVolumeClaim/claimName"]),
        });
        rules.push(RefRule {
            kind: "PersistentVolume".into(),
            group: Some(String::new()),
            referrers: vec![
                fs("PersistentVolumeClaim", None, "spec/volumeName"),
                fs("ClusterRole", None, "rules/resourceNames"),
            ],
        });
        rules.push(RefRule {
            kind: "StorageClass".into(),
            group: Some("storage.k8s.io".into()),
            referrers: vec![
                fs("PersistentVolume", None, "spec/storageClassName"),
                fs("PersistentVolumeClaim", None, "spec/storageClassName"),
                fs(
                    "StatefulSet",
                    None,
                    "spec/volumeClaimTemplates/spec/storageClassName",
                ),
            ],
        });
        rules.push(RefRule {
            kind: "PriorityClass".into(),
            group: Some("scheduling.k8s.io".into()),
            referrers: pod_rules(POD_KINDS_SA, &["priorityClassName"]),
        });
        rules.push(RefRule {
            kind: "IngressClass".into(),
            group: None,
            referrers: vec![fs("Ingress", None, "spec/ingressClassName")],
        });
        rules
    })
}

/// What the fix-up needs to know about a possible referral target.
struct Cand {
    kind: String,
    group: String,
    name: String,
    ns: String,
    names: Vec<String>,
    ids: Vec<(String, String)>,
    cluster: bool,
    /// Whether the name ever changed: unchanged names need no rewrite.
    renamed: bool,
    prefixes: Vec<std::sync::Arc<str>>,
    suffixes: Vec<std::sync::Arc<str>>,
}

/// kustomize's `SameEndingSubSlice`: the shorter list ends the longer one (two empty lists
/// match; an empty list matches only an empty one).
fn same_ending(a: &[std::sync::Arc<str>], b: &[std::sync::Arc<str>]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short.is_empty() {
        return long.is_empty();
    }
    long[long.len() - short.len()..] == *short
}

/// Rewrites every reference in `res` to the current names, using extra rules (from
/// `configurations:`) after the built-in ones.
pub fn fix(res: &mut [Res], extra: &[RefRule]) {
    let cands: Vec<Cand> = res
        .iter()
        .map(|r| {
            let mut names: Vec<String> = r.prev.iter().map(|(n, _)| n.clone()).collect();
            names.push(r.name().to_string());
            let mut ids: Vec<(String, String)> = r.prev.clone();
            ids.push((r.name().to_string(), r.namespace().to_string()));
            Cand {
                kind: r.kind().to_string(),
                group: r.group().to_string(),
                name: r.name().to_string(),
                ns: r.namespace().to_string(),
                renamed: r.prev.iter().any(|(n, _)| n != r.name())
                    || r.prev.iter().any(|(_, s)| s != r.namespace()),
                names,
                ids,
                cluster: r.is_cluster_scoped(),
                prefixes: r.prefixes.clone(),
                suffixes: r.suffixes.clone(),
            }
        })
        .collect();
    if !cands.iter().any(|c| c.renamed) {
        return;
    }
    let rules: Vec<&RefRule> = builtin_rules().iter().chain(extra.iter()).collect();
    // Per rule, the possible targets indexed by every name they ever had: the fix-up is then
    // linear in the number of resources instead of quadratic.
    struct Prepared<'a> {
        rule: &'a RefRule,
        targets: Vec<&'a Cand>,
        by_name: HashMap<&'a str, Vec<&'a Cand>>,
    }
    let prepared: Vec<Prepared> = rules
        .iter()
        .filter_map(|rule| {
            let targets: Vec<&Cand> = cands
                .iter()
                .filter(|c| {
                    c.kind == rule.kind && rule.group.as_deref().is_none_or(|g| g == c.group)
                })
                .collect();
            if !targets.iter().any(|c| c.renamed) {
                return None;
            }
            let mut by_name: HashMap<&str, Vec<&Cand>> = HashMap::new();
            for c in &targets {
                for n in &c.names {
                    let list = by_name.entry(n.as_str()).or_default();
                    if !list.iter().any(|x| std::ptr::eq(*x, *c)) {
                        list.push(c);
                    }
                }
            }
            Some(Prepared {
                rule,
                targets,
                by_name,
            })
        })
        .collect();
    for r in res.iter_mut() {
        let referrer_cluster = r.is_cluster_scoped();
        let referrer_ns = r.namespace().to_string();
        let (r_prefixes, r_suffixes) = (r.prefixes.clone(), r.suffixes.clone());
        let (r_kind, r_group, r_version) = (
            r.kind().to_string(),
            r.group().to_string(),
            r.version().to_string(),
        );
        for p in &prepared {
            let targets = &p.targets;
            for f in &p.rule.referrers {
                if !f.selects_gvk(&r_kind, &r_group, &r_version) {
                    continue;
                }
                let ns_ok = |c: &&Cand| {
                    referrer_cluster
                        || c.cluster
                        || c.kind == "ServiceAccount"
                        || effective_ns(&c.ns) == effective_ns(&referrer_ns)
                };
                // As kustomize's `selectReferral`: one candidate in reach is the referral;
                // among several, the one named with the referrer's prefixes and suffixes.
                let pick = |old: &str| -> Option<&Cand> {
                    let list = p.by_name.get(old)?;
                    let mut reach = list.iter().copied().filter(ns_ok);
                    let first = reach.next()?;
                    if reach.next().is_none() {
                        return Some(first);
                    }
                    list.iter().copied().filter(ns_ok).find(|c| {
                        same_ending(&c.prefixes, &r_prefixes)
                            && same_ending(&c.suffixes, &r_suffixes)
                    })
                };
                let is_subjects = f.path.last().map(String::as_str) == Some("subjects");
                let is_service_map = f.path.last().map(String::as_str) == Some("service");
                let mut root = Value::Object(std::mem::take(&mut r.obj));
                walk(&mut root, &f.path, false, &mut |v| {
                    if is_subjects {
                        fix_subjects(v, targets, &r_prefixes, &r_suffixes);
                    } else if is_service_map {
                        if let Value::Object(m) = v {
                            let name = m
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string();
                            let ns = m
                                .get("namespace")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string();
                            if let Some(c) = targets.iter().find(|c| {
                                c.ids.iter().any(|(n, s)| {
                                    *n == name
                                        && (ns.is_empty() || effective_ns(s) == effective_ns(&ns))
                                })
                            }) {
                                m.insert("name".into(), Value::String(c.name.clone()));
                                if m.contains_key("namespace") && !c.ns.is_empty() {
                                    m.insert("namespace".into(), Value::String(c.ns.clone()));
                                }
                            }
                        }
                    } else {
                        match v {
                            Value::String(s) => {
                                if let Some(c) = pick(s) {
                                    *s = c.name.clone();
                                }
                            }
                            Value::Array(items) => {
                                for it in items {
                                    if let Value::String(s) = it {
                                        if let Some(c) = pick(s) {
                                            *s = c.name.clone();
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                });
                if let Value::Object(m) = root {
                    r.obj = m;
                }
            }
        }
    }
}

/// RoleBinding subjects, as kustomize matches them: a subject of any kind whose name a
/// ServiceAccount ever had is that account; a subject with a namespace looks among the
/// accounts whose original namespace it is (or, failing that, whose current one). Name and,
/// when the account has one, namespace are updated.
fn fix_subjects(
    v: &mut Value,
    targets: &[&Cand],
    prefixes: &[std::sync::Arc<str>],
    suffixes: &[std::sync::Arc<str>],
) {
    let Value::Array(items) = v else { return };
    for s in items.iter_mut().filter_map(Value::as_object_mut) {
        let Some(name) = s.get("name").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        let ns = s
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let in_ns: Vec<&Cand> = match &ns {
            None => targets.to_vec(),
            Some(ns) => {
                let original_ns = |c: &Cand| c.ids.first().map_or(c.ns.clone(), |i| i.1.clone());
                let by_original: Vec<&Cand> = targets
                    .iter()
                    .copied()
                    .filter(|c| effective_ns(&original_ns(c)) == effective_ns(ns))
                    .collect();
                if by_original.is_empty() {
                    targets
                        .iter()
                        .copied()
                        .filter(|c| effective_ns(&c.ns) == effective_ns(ns))
                        .collect()
                } else {
                    by_original
                }
            }
        };
        // Several accounts had that name: as kustomize's `selectReferral`, the one named
        // with the referrer's prefixes and suffixes.
        let named: Vec<&Cand> = in_ns
            .into_iter()
            .filter(|c| c.names.contains(&name))
            .collect();
        let c = match named.as_slice() {
            [] => continue,
            [one] => *one,
            several => several
                .iter()
                .copied()
                .find(|c| same_ending(&c.prefixes, prefixes) && same_ending(&c.suffixes, suffixes))
                .unwrap_or(several[0]),
        };
        s.insert("name".into(), Value::String(c.name.clone()));
        if !c.ns.is_empty() {
            s.insert("namespace".into(), Value::String(c.ns.clone()));
        }
    }
}
