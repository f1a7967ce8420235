//! Strategic merge patch, as Kubernetes' apimachinery applies it for built-in kinds.
//!
//! Lists of built-in kinds merge by their patch merge key (containers by `name`, volume
//! mounts by `mountPath`, ...); everything else, and every list of a custom resource, is
//! replaced by the patch, like a JSON merge patch. Directives: `$patch: replace|delete` in maps
//! and list items, `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`,
//! `$retainKeys`. A `null` deletes a field.
//!
//! Merged lists keep kustomize's order (kyaml's merge with the patch's items prepended): the
//! patch's items in patch order, then the items only the target has, in their order. In lists
//! keyed by more than one field (ports, spread constraints) the items the patch merged into
//! stay at their place in the target and only the patch's new items go first.

use serde_json::{Map, Value};

/// How the list under a given field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// Replace the whole list (no merge strategy in the schema).
    Replace,
    /// Merge maps by this key.
    MergeKey(&'static str),
    /// A list of scalars merged as a set (`finalizers`).
    PrimitiveMerge,
}

/// The schema context of a value: which built-in type it is, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// A custom resource or a field the built-in schema does not describe: plain merge.
    Unknown,
    /// The top of a built-in object of this kind.
    Root(&'static str),
    ObjectMeta,
    PodSpec,
    Container,
    ServiceSpec,
    /// Any other part of a built-in object: maps merge, lists replace.
    Other,
}

/// Kinds whose lists merge by key. Anything not here is treated like a custom resource.
fn builtin_kind(group: &str, kind: &str) -> Option<&'static str> {
    const KINDS: &[(&str, &str)] = &[
        ("", "Pod"),
        ("", "PodTemplate"),
        ("", "ReplicationController"),
        ("", "Service"),
        ("", "ServiceAccount"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "Namespace"),
        ("", "PersistentVolumeClaim"),
        ("", "PersistentVolume"),
        ("", "Endpoints"),
        ("", "LimitRange"),
        ("", "ResourceQuota"),
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("extensions", "Deployment"),
        ("extensions", "DaemonSet"),
        ("extensions", "ReplicaSet"),
        ("extensions", "Ingress"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("policy", "PodDisruptionBudget"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("storage.k8s.io", "StorageClass"),
        ("scheduling.k8s.io", "PriorityClass"),
    ];
    KINDS
        .iter()
        .find(|(g, k)| *g == group && *k == kind)
        .map(|(_, k)| *k)
}

/// The context of a field's value given its parent context.
fn child_ctx(parent: Ctx, field: &str) -> Ctx {
    match (parent, field) {
        (Ctx::Unknown, _) => Ctx::Unknown,
        (_, "metadata") if matches!(parent, Ctx::Root(_) | Ctx::Other) => Ctx::ObjectMeta,
        (Ctx::Root("Pod"), "spec") => Ctx::PodSpec,
        (Ctx::Root("Service"), "spec") => Ctx::ServiceSpec,
        (Ctx::Root(_), "spec") | (Ctx::Other, "spec") => Ctx::Other,
        // A pod template's `spec` (under `template`) is a PodSpec; `template` itself is
        // reached as Other.
        (Ctx::Other, "template") => Ctx::Other,
        (Ctx::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => Ctx::Container,
        _ => Ctx::Other,
    }
}

/// `spec` directly under a `template` is a PodSpec in workloads; tracked with the path.
fn ctx_for(parent: Ctx, parent_field: Option<&str>, field: &str) -> Ctx {
    if parent == Ctx::Other && field == "spec" && parent_field == Some("template") {
        return Ctx::PodSpec;
    }
    child_ctx(parent, field)
}

fn list_strategy(ctx: Ctx, field: &str) -> ListStrategy {
    use ListStrategy::*;
    match (ctx, field) {
        (Ctx::Unknown, _) => Replace,
        (Ctx::ObjectMeta, "finalizers") => PrimitiveMerge,
        (Ctx::ObjectMeta, "ownerReferences") => MergeKey("uid"),
        (Ctx::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => MergeKey("name"),
        (Ctx::PodSpec, "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates") => {
            MergeKey("name")
        }
        (Ctx::PodSpec, "hostAliases") => MergeKey("ip"),
        (Ctx::PodSpec, "topologySpreadConstraints") => MergeKey("topologyKey"),
        (Ctx::Container, "env") => MergeKey("name"),
        (Ctx::Container, "ports") => MergeKey("containerPort"),
        (Ctx::Container, "volumeMounts") => MergeKey("mountPath"),
        (Ctx::Container, "volumeDevices") => MergeKey("devicePath"),
        (Ctx::ServiceSpec, "ports") => MergeKey("port"),
        (Ctx::Root("ServiceAccount"), "secrets") => MergeKey("name"),
        (
            Ctx::Root("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration"),
            "webhooks",
        ) => MergeKey("name"),
        (Ctx::Other, "conditions") => MergeKey("type"),
        _ => Replace,
    }
}

/// Applies a strategic merge patch to `target` (an object of the given group and kind).
pub fn apply(target: &mut Value, patch: &Value, group: &str, kind: &str) {
    let ctx = match builtin_kind(group, kind) {
        Some(k) => Ctx::Root(k),
        None => Ctx::Unknown,
    };
    merge_value(target, patch, ctx, None);
}

fn merge_value(target: &mut Value, patch: &Value, ctx: Ctx, field: Option<&str>) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            if let Some(directive) = p.get("$patch").and_then(Value::as_str) {
                if directive == "replace" {
                    let mut p = p.clone();
                    p.remove("$patch");
                    strip_directives(&mut p);
                    *t = p;
                    return;
                }
            }
            merge_map(t, p, ctx, field);
        }
        (t, p) => {
            let mut p = p.clone();
            if let Value::Object(m) = &mut p {
                m.remove("$patch");
                strip_directives(m);
            }
            *t = p;
        }
    }
}

fn strip_directives(m: &mut Map<String, Value>) {
    m.retain(|k, _| {
        !k.starts_with("$setElementOrder/")
            && !k.starts_with("$deleteFromPrimitiveList/")
            && k != "$retainKeys"
    });
    for v in m.values_mut() {
        match v {
            Value::Object(c) => strip_directives(c),
            Value::Array(items) => {
                for i in items {
                    if let Value::Object(c) = i {
                        strip_directives(c)
                    }
                }
            }
            _ => {}
        }
    }
}

fn merge_map(t: &mut Map<String, Value>, p: &Map<String, Value>, ctx: Ctx, field: Option<&str>) {
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(f) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (t.get_mut(f), pv) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        if let Value::Object(pm) = pv {
            if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                t.remove(k);
                continue;
            }
        }
        let cctx = ctx_for(ctx, field, k);
        match (t.get_mut(k), pv) {
            (Some(Value::Array(tl)), Value::Array(pl)) => {
                let order = match p.get(&format!("$setElementOrder/{k}")) {
                    Some(Value::Array(o)) => Some(o.as_slice()),
                    _ => None,
                };
                let merged = merge_list(std::mem::take(tl), pl, list_strategy(ctx, k), cctx, order);
                t.insert(k.clone(), Value::Array(merged));
            }
            (Some(tv), _) => merge_value(tv, pv, cctx, Some(k)),
            (None, _) => {
                let mut v = pv.clone();
                clean_new(&mut v);
                t.insert(k.clone(), v);
            }
        }
    }
}

/// A value added by a patch where the target had nothing: directives and `$patch: delete`
/// items are dropped, nulls inside maps vanish.
fn clean_new(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("$patch");
            strip_directives(m);
            m.retain(|_, v| !v.is_null());
            for c in m.values_mut() {
                clean_new(c);
            }
        }
        Value::Array(items) => {
            items.retain(|i| {
                !(i.get("$patch").and_then(Value::as_str) == Some("delete")
                    || (i.get("$patch").and_then(Value::as_str) == Some("replace")
                        && i.as_object().is_some_and(|m| m.len() == 1)))
            });
            for i in items {
                clean_new(i);
            }
        }
        _ => {}
    }
}

fn key_of<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| m.get(key))
}

fn merge_list(
    target: Vec<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    elem_ctx: Ctx,
    order: Option<&[Value]>,
) -> Vec<Value> {
    // `$patch: replace` as a list item replaces the whole list.
    let replace_all = patch
        .iter()
        .any(|i| key_of(i, "$patch").and_then(Value::as_str) == Some("replace"));
    if replace_all || strategy == ListStrategy::Replace {
        let mut out: Vec<Value> = patch
            .iter()
            .filter(|i| key_of(i, "$patch").is_none())
            .cloned()
            .collect();
        for v in &mut out {
            clean_new(v);
        }
        return out;
    }
    match strategy {
        ListStrategy::PrimitiveMerge => {
            let server_only: Vec<Value> = target
                .iter()
                .filter(|v| !patch.contains(v))
                .cloned()
                .collect();
            let mut patched: Vec<Value> = patch.to_vec();
            patched.dedup();
            let server_order = target.clone();
            let patched = match order {
                Some(o) => sort_by_order(patched, o, |v| Some(v.clone())),
                None => patched,
            };
            merge_sorted(server_only, patched, &server_order, |v| Some(v.clone()))
        }
        ListStrategy::MergeKey(key) => {
            // Lists whose schema names more than one list-map key (ports by port and
            // protocol, spread constraints by key and condition).
            let multi_key = matches!(key, "containerPort" | "port" | "topologyKey");
            let mut target: Vec<Option<Value>> = target.into_iter().map(Some).collect();
            let mut patched: Vec<Value> = Vec::new();
            let mut merged_in_place: Vec<Option<Value>> = vec![None; target.len()];
            for pi in patch {
                let pk = key_of(pi, key);
                let is_delete = key_of(pi, "$patch").and_then(Value::as_str) == Some("delete");
                let pos = pk.and_then(|pk| {
                    target
                        .iter()
                        .position(|t| t.as_ref().and_then(|t| key_of(t, key)) == Some(pk))
                });
                if is_delete {
                    if let Some(i) = pos {
                        target[i] = None;
                    }
                    continue;
                }
                match pos {
                    Some(i) => {
                        let mut t = target[i].take().unwrap_or(Value::Null);
                        merge_value(&mut t, pi, elem_ctx, None);
                        if multi_key {
                            merged_in_place[i] = Some(t);
                        } else {
                            patched.push(t);
                        }
                    }
                    None => {
                        let mut v = pi.clone();
                        clean_new(&mut v);
                        patched.push(v);
                    }
                }
            }
            if let Some(o) = order {
                patched =
                    sort_by_order(patched, o, |v| key_of(v, key).cloned().or(Some(v.clone())));
            }
            // kustomize's merge (kyaml, patch items prepended): the patch's items in patch
            // order, then the items only the target has in their order. For multi-key lists
            // the items the patch merged stay where they were in the target.
            let mut out = patched;
            for (t, m) in target.into_iter().zip(merged_in_place) {
                out.extend(m.or(t));
            }
            out
        }
        ListStrategy::Replace => unreachable!("handled above"),
    }
}

fn sort_by_order(
    mut items: Vec<Value>,
    order: &[Value],
    key: impl Fn(&Value) -> Option<Value>,
) -> Vec<Value> {
    items.sort_by_key(|v| {
        let k = key(v);
        order
            .iter()
            .position(|o| Some(o) == k.as_ref() || key(o) == k)
            .unwrap_or(usize::MAX)
    });
    items
}

/// apimachinery's `mergeSortedSlice`: server-only items are slotted into the patch's items
/// wherever their original order says they come first.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: impl Fn(&Value) -> Option<Value>,
) -> Vec<Value> {
    let index = |v: &Value| -> Option<usize> {
        let k = key(v)?;
        server_order
            .iter()
            .position(|s| key(s).as_ref() == Some(&k))
    };
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(l.next()),
            (None, Some(_)) => out.extend(r.next()),
            (Some(a), Some(b)) => {
                let less = matches!((index(a), index(b)), (Some(x), Some(y)) if x < y);
                if less {
                    out.extend(l.next());
                } else {
                    out.extend(r.next());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_in_patch_order() {
        let mut t = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "A", "value": "a"}, {"name": "B", "value": "b"}]},
            {"name": "b", "image": "b"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "new"},
            {"name": "a", "env": [{"name": "NEW", "value": "n"}]}]}}}});
        apply(&mut t, &p, "apps", "Deployment");
        let c = &t["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["name"], "b");
        assert_eq!(c[0]["image"], "new");
        let env: Vec<_> = c[1]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(env, ["NEW", "A", "B"]);
    }

    #[test]
    fn delete_directive_removes_list_items_and_custom_resources_replace_lists() {
        let mut t =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}});
        apply(&mut t, &p, "apps", "Deployment");
        assert_eq!(
            t["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b"}])
        );
        let mut w = json!({"spec": {"items": [{"name": "x"}]}});
        apply(
            &mut w,
            &json!({"spec": {"items": [{"name": "y"}]}}),
            "example.com",
            "Widget",
        );
        assert_eq!(w["spec"]["items"], json!([{"name": "y"}]));
    }
}
