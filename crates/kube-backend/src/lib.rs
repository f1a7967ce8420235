#![forbid(unsafe_code)]
// BackendError is the trait's error type (trueup-core): its size is not this crate's to change.
#![allow(clippy::result_large_err)]
//! trueup's Kubernetes backend: the [`Backend`] trait over a real API server, through kube-rs.
//!
//! Everything is dynamic: kinds are resolved through the discovery API (cached, refreshed on a
//! miss so that CRDs applied a moment ago become usable), objects travel as JSON
//! ([`DynamicObject`]), so the library picks no Kubernetes version and needs no typed API.
//!
//! - `apply` is server-side apply with the caller's field manager, `force` for conflicts and
//!   `dryRun=All`; the action (created / configured / unchanged) comes from comparing the object
//!   before and after. With `recreate_on_immutable`, an "field is immutable" rejection deletes
//!   the object, waits until it is gone and applies again.
//! - `update_status` replaces `.status` through the status subresource (or the whole object for
//!   kinds without one) with the read resourceVersion, retrying on conflicts.
//! - `record_event` writes core/v1 Events; `health` follows kstatus rules ([`health`]);
//!   `watch` merges kube-runtime watchers (which list, watch and re-list with backoff).
//!
//! [`crd`] generates the CustomResourceDefinitions of every kind trueup serves from trueup-core's
//! API types; the YAML ships in `config/crd/`, and `config/default` installs them with the
//! operator's namespace, RBAC and Deployment (`kubectl apply --server-side -k config/default`).
//!
//! # Which k8s-openapi version feature
//!
//! This crate enables no version feature of k8s-openapi (a library must not: the final binary
//! picks exactly one, or sets `K8S_OPENAPI_ENABLED_VERSION`, as this workspace does in
//! `.cargo/config.toml`). Any of them works, against v1.20 and current servers alike: k8s-openapi
//! 0.29 offers `v1_33` (`earliest`) to `v1_37` (`latest`), and the feature only decides which
//! typed APIs it compiles, none of which this crate uses. What this crate does use are the
//! apimachinery types kube-rs is built on (`ObjectMeta`, `ListMeta`, `Status`, watch events),
//! whose wire format has not changed since long before v1.20; every kind travels as JSON
//! through discovery. Pick `earliest` unless the program itself uses typed APIs, then the
//! oldest version that has them. A server older than the chosen version is fine as long as the
//! program's own typed calls exist there (tested: a v1.20.2 API server with `earliest`).

pub mod crd;
pub mod health;
pub mod leader;
pub mod remote;
pub mod selector;
pub mod triggers;

pub use leader::{LeaderElectionConfig, LeaderElector, Leadership};
pub use remote::KubeConnector;
pub use selector::LabelSelector;

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::discovery::{self, Scope};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trueup_core::event::{Event, Severity};
use trueup_core::object::{Object, ObjectRef};
use trueup_core::traits::backend::{
    ApplyAction, ApplyOptions, Backend, BackendError, DeleteOptions, Health, ListParams,
    Propagation, WatchEvent, WatchStream,
};

/// What discovery says about one kind at one version.
#[derive(Clone, Debug)]
struct Resolved {
    ar: ApiResource,
    namespaced: bool,
    has_status: bool,
}

/// Discovery results per group. Filled group by group on demand: a full discovery of every
/// group costs one request per group-version, and most reconciles touch a handful of groups.
#[derive(Default)]
struct DiscoveryCache {
    /// (group, version, kind) -> resource
    exact: HashMap<(String, String, String), Resolved>,
    /// (group, kind) -> resource at its preferred (most stable) version
    preferred: HashMap<(String, String), Resolved>,
}

/// How long `apply` waits for an object deleted because of an immutable-field change to be
/// gone before it re-creates it (finalizers can hold it).
const RECREATE_WAIT: Duration = Duration::from_secs(60);
/// How long `apply` waits for the kind of an object to be served when a CRD defining it exists
/// but is not established yet (it was applied a moment ago, often in the same batch).
const CRD_WAIT: Duration = Duration::from_secs(30);
/// The field manager of status writes.
const STATUS_MANAGER: &str = "trueup";
/// Attempts of a status write that loses a race with another writer.
const STATUS_ATTEMPTS: usize = 5;

/// A [`Backend`] on a Kubernetes API server.
pub struct KubeBackend {
    client: Client,
    cluster_url: String,
    discovery: Mutex<DiscoveryCache>,
    shard: Option<Shard>,
    /// The configuration the client was built from, to build impersonating clients from.
    config: Option<kube::Config>,
    /// Backends acting as ServiceAccounts (`spec.serviceAccountName`), by namespace and name.
    impersonated: Mutex<HashMap<(String, String), Arc<KubeBackend>>>,
}

/// The objects of some kinds this backend lists and watches: those a label selector selects
/// (Flux's `--watch-label-selector`). The selector goes to the API server with every list and
/// watch of those kinds; gets by name are not filtered.
#[derive(Clone, Debug)]
struct Shard {
    kinds: std::collections::HashSet<(String, String)>,
    selector: LabelSelector,
}

/// The label that asks for changes of a Secret or ConfigMap to reconcile the objects that
/// reference it at once (with the value `Enabled`), as Flux does.
pub const WATCH_LABEL: &str = "reconcile.fluxcd.io/watch";

fn other(context: String, source: impl std::error::Error + Send + Sync + 'static) -> BackendError {
    BackendError::Other {
        context,
        source: Box::new(source),
    }
}

/// Maps a kube error to a [`BackendError`] naming the object. API errors keep the server's
/// message (it says which field and why); transport errors keep the kube error as source.
fn kube_err(r: &ObjectRef, action: &str, e: kube::Error) -> BackendError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => BackendError::NotFound(r.clone()),
        kube::Error::Api(s) if s.code == 409 => BackendError::Conflict {
            object: r.clone(),
            message: format!("{action}: {}", s.message),
        },
        kube::Error::Api(s) if s.code == 400 || s.code == 422 => BackendError::Invalid {
            object: r.clone(),
            message: format!("{action}: {}", s.message),
        },
        // Older servers (v1.20 among them) answer a server-side apply whose field has the wrong type with
        // 500 and "failed to create typed patch object: .spec.interval: expected string, ...":
        // the input is at fault, not the server.
        kube::Error::Api(s)
            if s.code == 500 && s.message.starts_with("failed to create typed patch object") =>
        {
            BackendError::Invalid {
                object: r.clone(),
                message: format!("{action}: {}", s.message),
            }
        }
        _ => match e {
            // The server's Status is the error: its message and reason, not kube's debug
            // rendering of it.
            kube::Error::Api(status) => BackendError::Other {
                context: format!("{action} {r}"),
                source: status,
            },
            e => other(format!("{action} {r}"), e),
        },
    }
}

fn is_immutable_error(e: &kube::Error) -> bool {
    // The apiserver reports immutable fields as 422 Invalid with "field is immutable"
    // (some kinds say "may not change once set" or "Forbidden: updates to ... are forbidden").
    matches!(e, kube::Error::Api(s) if s.code == 422
        && (s.message.contains("field is immutable")
            || s.message.contains("may not change once set")
            || (s.message.contains("Forbidden: updates to") && s.message.contains("are forbidden"))))
}

/// The server-owned metadata an apply body must not carry: a stale resourceVersion would turn
/// the apply into a conditional update, and non-empty managedFields are rejected outright.
const SERVER_METADATA: [&str; 6] = [
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
];

fn apply_body(obj: &Object, namespaced: bool) -> Value {
    let mut body = obj.clone();
    let md = body.metadata_mut();
    for k in SERVER_METADATA {
        md.remove(k);
    }
    if !namespaced {
        md.remove("namespace");
    }
    body.into_value()
}

/// The parts of an object an apply can change, for telling "configured" from "unchanged":
/// managedFields carry apply timestamps and resourceVersion moves with them.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("managedFields");
        md.remove("resourceVersion");
    }
    v
}

fn resource_version(v: &Value) -> Option<&str> {
    v.get("metadata")?.get("resourceVersion")?.as_str()
}

/// A kube object as trueup's [`Object`], with apiVersion and kind filled in (list responses
/// leave them out of items).
fn to_object(d: &DynamicObject, ar: &ApiResource) -> Result<Object, BackendError> {
    to_object_raw(d, ar).map_err(|e| other(format!("encoding {}", ar.kind), e))
}

fn to_object_raw(d: &DynamicObject, ar: &ApiResource) -> Result<Object, serde_json::Error> {
    let v = serde_json::to_value(d)?;
    let mut map = match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if !map.get("apiVersion").is_some_and(Value::is_string) {
        map.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
    }
    if !map.get("kind").is_some_and(Value::is_string) {
        map.insert("kind".into(), Value::String(ar.kind.clone()));
    }
    Ok(Object(map))
}

fn to_value(d: &DynamicObject, r: &ObjectRef) -> Result<Value, BackendError> {
    serde_json::to_value(d).map_err(|e| other(format!("encoding {r}"), e))
}

fn from_value(v: Value, r: &ObjectRef) -> Result<DynamicObject, BackendError> {
    serde_json::from_value(v).map_err(|e| BackendError::Invalid {
        object: r.clone(),
        message: format!("not a Kubernetes object: {e}"),
    })
}

fn label_selector(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn object_ref_of(d: &DynamicObject, ar: &ApiResource) -> ObjectRef {
    ObjectRef::new(
        &ar.group,
        &ar.kind,
        d.metadata.namespace.as_deref().unwrap_or(""),
        d.metadata.name.as_deref().unwrap_or(""),
    )
}

/// core/v1 Event names must be DNS subdomains of at most 253 characters; client-go names them
/// `<object>.<hex nanoseconds>`.
fn event_name(object_name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let suffix = format!(".{nanos:x}");
    let mut base: String = object_name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    base.truncate(253 - suffix.len());
    let base = base.trim_matches(|c: char| c == '-' || c == '.');
    if base.is_empty() {
        format!("trueup{suffix}")
    } else {
        format!("{base}{suffix}")
    }
}

/// Event messages are capped so that a huge error (a full render log) cannot make the Event
/// itself fail to be stored.
const EVENT_MESSAGE_MAX: usize = 4096;

fn truncate_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl KubeBackend {
    /// A backend on an existing client; `cluster_url` is only used in messages.
    pub fn new(client: Client, cluster_url: impl Into<String>) -> Self {
        KubeBackend {
            client,
            cluster_url: cluster_url.into(),
            discovery: Mutex::new(DiscoveryCache::default()),
            shard: None,
            config: None,
            impersonated: Mutex::new(HashMap::new()),
        }
    }

    /// Lists and watches only the objects of `kinds` (group, kind) that `selector` selects,
    /// like Flux controllers started with `--watch-label-selector`. An empty selector selects
    /// everything.
    pub fn with_watch_selector(
        mut self,
        selector: LabelSelector,
        kinds: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        self.shard = (!selector.is_empty()).then(|| Shard {
            kinds: kinds.into_iter().collect(),
            selector,
        });
        self
    }

    /// The label selector for a list or watch of one kind: the caller's equality labels and,
    /// for sharded kinds, the shard's selector.
    fn selector_for(
        &self,
        group: &str,
        kind: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<String> {
        let mut parts = Vec::new();
        if !labels.is_empty() {
            parts.push(label_selector(labels));
        }
        if let Some(shard) = &self.shard {
            if shard.kinds.contains(&(group.to_string(), kind.to_string())) {
                parts.push(shard.selector.to_string());
            }
        }
        (!parts.is_empty()).then(|| parts.join(","))
    }

    /// A backend from a kube client configuration.
    pub fn from_config(config: kube::Config) -> Result<Self, BackendError> {
        let url = config.cluster_url.to_string();
        let url = url.trim_end_matches('/').to_string();
        let client = Client::try_from(config.clone())
            .map_err(|e| other(format!("creating a client for {url}"), e))?;
        let mut b = Self::new(client, url);
        b.config = Some(config);
        Ok(b)
    }

    /// This backend acting as `system:serviceaccount:<namespace>:<name>` (impersonation: the
    /// API server checks that account's rights; the user this backend authenticates as needs
    /// the `impersonate` verb on serviceaccounts).
    pub fn impersonating(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<KubeBackend>, BackendError> {
        let user = trueup_core::traits::backend::service_account_user(namespace, name);
        let key = (namespace.to_string(), name.to_string());
        let mut cache = self.impersonated.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = cache.get(&key) {
            return Ok(b.clone());
        }
        let Some(config) = &self.config else {
            return Err(BackendError::Other {
                context: format!("acting as {user}"),
                source: "this backend was built from a client, not a configuration: build it with KubeBackend::from_config to impersonate".into(),
            });
        };
        let mut config = config.clone();
        // The API server adds the ServiceAccount's groups itself when none are given.
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config.clone())
            .map_err(|e| other(format!("creating a client acting as {user}"), e))?;
        let mut b = Self::new(client, self.cluster_url.clone());
        b.config = Some(config);
        let b = Arc::new(b);
        cache.insert(key, b.clone());
        Ok(b)
    }

    /// A backend from a kubeconfig file (its current context).
    pub async fn from_kubeconfig(path: &Path) -> Result<Self, BackendError> {
        Self::from_kubeconfig_context(path, None).await
    }

    /// A backend from a kubeconfig file and one of its contexts (default: the current one).
    pub async fn from_kubeconfig_context(
        path: &Path,
        context_name: Option<&str>,
    ) -> Result<Self, BackendError> {
        let context = match context_name {
            Some(c) => format!("reading kubeconfig {} (context {c})", path.display()),
            None => format!("reading kubeconfig {}", path.display()),
        };
        let kc =
            kube::config::Kubeconfig::read_from(path).map_err(|e| other(context.clone(), e))?;
        let options = kube::config::KubeConfigOptions {
            context: context_name.map(str::to_string),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| other(context, e))?;
        Self::from_config(config)
    }

    /// A backend from the service account of the pod it runs in.
    pub fn in_cluster() -> Result<Self, BackendError> {
        let config = kube::Config::incluster().map_err(|e| {
            other(
                "reading the in-cluster configuration (service account token, KUBERNETES_SERVICE_HOST)".into(),
                e,
            )
        })?;
        Self::from_config(config)
    }

    /// A backend from the environment: `$KUBECONFIG` / `~/.kube/config`, else the in-cluster
    /// service account.
    pub async fn infer() -> Result<Self, BackendError> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| other("finding a Kubernetes configuration".into(), e))?;
        Self::from_config(config)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Forgets everything discovery found; the next use of each kind asks the server again.
    pub fn invalidate_discovery(&self) {
        let mut c = self.discovery.lock().unwrap_or_else(|p| p.into_inner());
        *c = DiscoveryCache::default();
    }

    fn cached(&self, group: &str, version: Option<&str>, kind: &str) -> Option<Resolved> {
        let c = self.discovery.lock().unwrap_or_else(|p| p.into_inner());
        match version {
            Some(v) => c
                .exact
                .get(&(group.to_string(), v.to_string(), kind.to_string()))
                .cloned(),
            None => c
                .preferred
                .get(&(group.to_string(), kind.to_string()))
                .cloned(),
        }
    }

    /// Asks the server about one group and replaces what the cache knew about it.
    async fn refresh_group(&self, group: &str) -> Result<(), kube::Error> {
        let ag = match discovery::group(&self.client, group).await {
            Ok(ag) => Some(ag),
            // The group is not served (yet): forget it, the caller reports the missing kind.
            // Right after a CRD is created the group can be listed while its version endpoint
            // still answers 404 for a moment: that is "not served yet" too.
            Err(kube::Error::Discovery(_)) => None,
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(e),
        };
        let mut c = self.discovery.lock().unwrap_or_else(|p| p.into_inner());
        c.exact.retain(|(g, _, _), _| g != group);
        c.preferred.retain(|(g, _), _| g != group);
        let Some(ag) = ag else { return Ok(()) };
        let resolved = |(ar, caps): (ApiResource, discovery::ApiCapabilities)| Resolved {
            namespaced: caps.scope == Scope::Namespaced,
            has_status: caps.subresources.iter().any(|(s, _)| s.plural == "status"),
            ar,
        };
        let versions: Vec<String> = ag.versions().map(str::to_string).collect();
        for v in versions {
            for rc in ag.versioned_resources(&v) {
                let r = resolved(rc);
                c.exact.insert(
                    (r.ar.group.clone(), r.ar.version.clone(), r.ar.kind.clone()),
                    r,
                );
            }
        }
        // The server's preferred version first, then each remaining kind at its most stable
        // version (a kind may exist only in an older version of a group).
        for rc in ag.recommended_resources() {
            let r = resolved(rc);
            c.preferred
                .insert((r.ar.group.clone(), r.ar.kind.clone()), r);
        }
        for rc in ag.resources_by_stability() {
            let r = resolved(rc);
            c.preferred
                .entry((r.ar.group.clone(), r.ar.kind.clone()))
                .or_insert(r);
        }
        Ok(())
    }

    /// (group, version?, kind) -> resource, refreshing the group once on a miss.
    async fn resolve(
        &self,
        r: &ObjectRef,
        version: Option<&str>,
    ) -> Result<Resolved, BackendError> {
        if let Some(x) = self.cached(&r.group, version, &r.kind) {
            return Ok(x);
        }
        self.refresh_group(&r.group)
            .await
            .map_err(|e| other(format!("discovering {} for {r}", r.group_kind()), e))?;
        self.cached(&r.group, version, &r.kind)
            .ok_or_else(|| BackendError::Invalid {
                object: r.clone(),
                message: match version {
                    Some(v) => format!(
                        "the server does not serve kind {} in {}{v} (is its CRD installed and established?)",
                        r.kind,
                        if r.group.is_empty() { String::new() } else { format!("{}/", r.group) }
                    ),
                    None => format!(
                        "the server does not serve kind {} (is its CRD installed and established?)",
                        r.group_kind()
                    ),
                },
            })
    }

    /// When a kind is not served, but a CRD defining it exists (applied a moment ago), waits for
    /// the server to serve it. `None`: no such CRD, or it was not served in time.
    async fn await_crd_kind(
        &self,
        r: &ObjectRef,
        version: &str,
    ) -> Result<Option<Resolved>, BackendError> {
        // CRD groups always contain a dot; built-in groups are never waited for.
        if !r.group.contains('.') {
            return Ok(None);
        }
        let crds = self
            .list(&ListParams::kind(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
            ))
            .await?;
        let defined = crds.iter().any(|c| {
            let spec = c.spec();
            let s = |p: &[&str]| {
                p.iter()
                    .try_fold(spec?, |v, k| v.get(*k))
                    .and_then(Value::as_str)
            };
            s(&["group"]) == Some(r.group.as_str())
                && s(&["names", "kind"]) == Some(r.kind.as_str())
                && c.metadata()
                    .is_none_or(|m| m.get("deletionTimestamp").is_none_or(Value::is_null))
        });
        if !defined {
            return Ok(None);
        }
        tracing::debug!(object = %r, "waiting for the CRD of this kind to be served");
        let deadline = tokio::time::Instant::now() + CRD_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.refresh_group(&r.group)
                .await
                .map_err(|e| other(format!("discovering {} for {r}", r.group_kind()), e))?;
            if let Some(x) = self.cached(&r.group, Some(version), &r.kind) {
                return Ok(Some(x));
            }
        }
        Ok(None)
    }

    /// The API for one object: namespaced kinds need a namespace, cluster-scoped kinds ignore it.
    fn api_for(&self, res: &Resolved, r: &ObjectRef) -> Result<Api<DynamicObject>, BackendError> {
        if res.namespaced {
            if r.namespace.is_empty() {
                return Err(BackendError::Invalid {
                    object: r.clone(),
                    message: format!("{} is namespaced: metadata.namespace is required", r.kind),
                });
            }
            Ok(Api::namespaced_with(
                self.client.clone(),
                &r.namespace,
                &res.ar,
            ))
        } else {
            Ok(Api::all_with(self.client.clone(), &res.ar))
        }
    }

    /// The reference with the namespace dropped for cluster-scoped kinds, so that a caller's
    /// stray namespace does not break lookups.
    fn normalize(r: &ObjectRef, res: &Resolved) -> ObjectRef {
        let mut r = r.clone();
        if !res.namespaced {
            r.namespace.clear();
        }
        r
    }

    async fn wait_gone(
        &self,
        api: &Api<DynamicObject>,
        r: &ObjectRef,
        uid: Option<&str>,
    ) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + RECREATE_WAIT;
        loop {
            match api.get_opt(&r.name).await {
                Ok(None) => return Ok(()),
                // A new object of the same name (someone else re-created it) also ends the wait.
                Ok(Some(d)) if uid.is_some() && d.metadata.uid.as_deref() != uid => return Ok(()),
                Ok(Some(_)) => {}
                Err(e) => return Err(kube_err(r, "waiting for deletion", e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::Conflict {
                    object: r.clone(),
                    message: format!(
                        "deleted to recreate it, but still present after {}s (finalizers?)",
                        RECREATE_WAIT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn do_apply(
        &self,
        api: &Api<DynamicObject>,
        r: &ObjectRef,
        res: &Resolved,
        body: &Value,
        opts: &ApplyOptions,
    ) -> Result<(ApplyAction, Object), kube::Error> {
        let before = api.get_opt(&r.name).await?;
        let before = before
            .map(|d| serde_json::to_value(&d))
            .transpose()
            .map_err(kube::Error::SerdeError)?;
        let mut pp = PatchParams::apply(&opts.field_manager);
        if opts.force_conflicts {
            pp = pp.force();
        }
        if opts.dry_run {
            pp = pp.dry_run();
        }
        let after = api.patch(&r.name, &pp, &Patch::Apply(body)).await?;
        let after_v = serde_json::to_value(&after).map_err(kube::Error::SerdeError)?;
        let action = match &before {
            None => ApplyAction::Created,
            // A dry run returns the old resourceVersion even when it would change the object,
            // so only the content comparison counts there.
            Some(b)
                if (!opts.dry_run
                    && resource_version(b).is_some()
                    && resource_version(b) == resource_version(&after_v))
                    || comparable(b) == comparable(&after_v) =>
            {
                ApplyAction::Unchanged
            }
            Some(_) => ApplyAction::Configured,
        };
        let obj = to_object_raw(&after, &res.ar).map_err(kube::Error::SerdeError)?;
        Ok((action, obj))
    }
}

impl KubeBackend {
    /// Changes to the objects of one kind (those the shard selector and `labels` select),
    /// from now on.
    async fn watch_kind(
        &self,
        group: &str,
        kind: &str,
        labels: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<WatchStream, BackendError> {
        let r = ObjectRef::new(group, kind, "", "*");
        let res = self.resolve(&r, None).await?;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &res.ar);
        let selector = self.selector_for(
            &res.ar.group,
            &res.ar.kind,
            labels.unwrap_or(&Default::default()),
        );
        // "From now on": what exists now is remembered (name -> resourceVersion) and the
        // watcher's initial listing only reports differences from it. The same diff on
        // every re-list after a reconnect reports changes and deletions missed meanwhile.
        let mut known: HashMap<ObjectRef, String> = HashMap::new();
        let mut lp = kube::api::ListParams::default().limit(500);
        let mut wc = watcher::Config::default();
        if let Some(sel) = &selector {
            lp = lp.labels(sel);
            wc = wc.labels(sel);
        }
        loop {
            let page = api
                .list(&lp)
                .await
                .map_err(|e| kube_err(&r, "watch (list)", e))?;
            for d in &page.items {
                known.insert(
                    object_ref_of(d, &res.ar),
                    d.metadata.resource_version.clone().unwrap_or_default(),
                );
            }
            match page.metadata.continue_ {
                Some(t) if !t.is_empty() => lp = lp.continue_token(&t),
                _ => break,
            }
        }
        let ar = res.ar.clone();
        let state = WatchState {
            known,
            relisting: None,
        };
        Ok(watcher(api, wc)
            .default_backoff()
            .scan(state, move |st, ev| {
                futures::future::ready(Some(st.step(ev, &ar)))
            })
            .flat_map(futures::stream::iter)
            .boxed())
    }

    /// Changes, from now on, to the Secrets and ConfigMaps labelled
    /// `reconcile.fluxcd.io/watch: Enabled` (see [`triggers`]).
    pub async fn watch_labelled_configs(&self) -> Result<WatchStream, BackendError> {
        let labels: std::collections::BTreeMap<String, String> =
            [(WATCH_LABEL.to_string(), "Enabled".to_string())].into();
        let secrets = self.watch_kind("", "Secret", Some(&labels)).await?;
        let config_maps = self.watch_kind("", "ConfigMap", Some(&labels)).await?;
        Ok(futures::stream::select(secrets, config_maps).boxed())
    }
}

#[async_trait]
impl Backend for KubeBackend {
    async fn apply(
        &self,
        obj: &Object,
        opts: &ApplyOptions,
    ) -> Result<(ApplyAction, Object), BackendError> {
        let r = obj.object_ref();
        if r.name.is_empty() || r.kind.is_empty() || obj.version().is_empty() {
            return Err(BackendError::Invalid {
                object: r,
                message: "apiVersion, kind and metadata.name are required".into(),
            });
        }
        if opts.field_manager.is_empty() {
            return Err(BackendError::Invalid {
                object: r,
                message: "server-side apply needs a field manager".into(),
            });
        }
        let res = match self.resolve(&r, Some(obj.version())).await {
            Ok(x) => x,
            Err(e @ BackendError::Invalid { .. }) => {
                match self.await_crd_kind(&r, obj.version()).await? {
                    Some(x) => x,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let r = Self::normalize(&r, &res);
        let api = self.api_for(&res, &r)?;
        let body = apply_body(obj, res.namespaced);
        let result = match self.do_apply(&api, &r, &res, &body, opts).await {
            Ok(x) => x,
            Err(e) if opts.recreate_on_immutable && is_immutable_error(&e) => {
                if opts.dry_run {
                    // A dry run cannot show the re-created object; the desired one is the
                    // closest answer, and "configured" is what a real run would report.
                    return Ok((ApplyAction::Configured, obj.clone()));
                }
                tracing::info!(object = %r, "immutable field changed: deleting to recreate");
                let uid = api
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| kube_err(&r, "reading before recreate", e))?
                    .and_then(|d| d.metadata.uid);
                match api.delete(&r.name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(kube_err(&r, "deleting to recreate", e)),
                }
                self.wait_gone(&api, &r, uid.as_deref()).await?;
                let (_, o) = self
                    .do_apply(&api, &r, &res, &body, opts)
                    .await
                    .map_err(|e| kube_err(&r, "re-creating after an immutable-field change", e))?;
                // Flux reports a recreated object as created.
                (ApplyAction::Created, o)
            }
            // A missing namespace is a 404 too; it is not "this object was not found".
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(BackendError::Invalid {
                    object: r,
                    message: format!("apply: {}", s.message),
                })
            }
            Err(e) => return Err(kube_err(&r, "apply", e)),
        };
        // A CRD that was just applied adds kinds: the group it defines must be discovered
        // again (the cache would otherwise remember the kind as absent, or with old versions).
        if !opts.dry_run
            && r.group == "apiextensions.k8s.io"
            && r.kind == "CustomResourceDefinition"
        {
            if let Some(group) = obj
                .spec()
                .and_then(|s| s.get("group"))
                .and_then(Value::as_str)
            {
                let mut c = self.discovery.lock().unwrap_or_else(|p| p.into_inner());
                c.exact.retain(|(g, _, _), _| g != group);
                c.preferred.retain(|(g, _), _| g != group);
            }
        }
        Ok(result)
    }

    async fn get(&self, r: &ObjectRef) -> Result<Option<Object>, BackendError> {
        let res = self.resolve(r, None).await?;
        let r = Self::normalize(r, &res);
        let api = self.api_for(&res, &r)?;
        match api.get_opt(&r.name).await {
            Ok(Some(d)) => Ok(Some(to_object(&d, &res.ar)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(kube_err(&r, "get", e)),
        }
    }

    async fn list(&self, params: &ListParams) -> Result<Vec<Object>, BackendError> {
        let r = ObjectRef::new(
            &params.group,
            &params.kind,
            params.namespace.as_deref().unwrap_or(""),
            "*",
        );
        let res = self.resolve(&r, None).await?;
        let api: Api<DynamicObject> = match (&params.namespace, res.namespaced) {
            (Some(ns), true) if !ns.is_empty() => {
                Api::namespaced_with(self.client.clone(), ns, &res.ar)
            }
            _ => Api::all_with(self.client.clone(), &res.ar),
        };
        // Pages keep a list of a large kind from arriving as one huge response.
        let mut lp = kube::api::ListParams::default().limit(500);
        if let Some(sel) = self.selector_for(&res.ar.group, &res.ar.kind, &params.labels) {
            lp = lp.labels(&sel);
        }
        let mut out = Vec::new();
        loop {
            let page = api.list(&lp).await.map_err(|e| kube_err(&r, "list", e))?;
            for d in &page.items {
                out.push(to_object(d, &res.ar)?);
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, r: &ObjectRef) -> Result<bool, BackendError> {
        self.delete_with(r, &DeleteOptions::default()).await
    }

    /// Deletes with `propagationPolicy` (background when none is given, as kubectl and Flux
    /// delete): the API server and the garbage collector handle the dependents.
    async fn delete_with(&self, r: &ObjectRef, opts: &DeleteOptions) -> Result<bool, BackendError> {
        let res = self.resolve(r, None).await?;
        let r = Self::normalize(r, &res);
        let api = self.api_for(&res, &r)?;
        let dp = match opts.propagation.unwrap_or_default() {
            Propagation::Background => DeleteParams::background(),
            Propagation::Foreground => DeleteParams::foreground(),
            Propagation::Orphan => DeleteParams::orphan(),
        };
        match api.delete(&r.name, &dp).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(kube_err(&r, "delete", e)),
        }
    }

    async fn update_status(&self, r: &ObjectRef, status: &Value) -> Result<(), BackendError> {
        let res = self.resolve(r, None).await?;
        let r = Self::normalize(r, &res);
        let api = self.api_for(&res, &r)?;
        // Read, replace .status, write with the read resourceVersion: the write is a full
        // replacement (a merge patch would keep keys the new status dropped) and it cannot
        // clobber a concurrent write unseen. A lost race re-reads and tries again.
        for attempt in 1..=STATUS_ATTEMPTS {
            let cur = api
                .get_opt(&r.name)
                .await
                .map_err(|e| kube_err(&r, "reading for a status update", e))?
                .ok_or_else(|| BackendError::NotFound(r.clone()))?;
            let mut v = to_value(&cur, &r)?;
            if let Some(m) = v.as_object_mut() {
                m.insert("status".into(), status.clone());
            }
            let d = from_value(v, &r)?;
            // The status fields are owned by trueup in managedFields, as Flux's controllers own
            // theirs (instead of "unknown").
            let pp = PostParams {
                field_manager: Some(STATUS_MANAGER.into()),
                ..PostParams::default()
            };
            let written = if res.has_status {
                api.replace_status(&r.name, &pp, &d).await
            } else {
                // No status subresource: status is an ordinary field of the object.
                api.replace(&r.name, &pp, &d).await
            };
            match written {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < STATUS_ATTEMPTS => {
                    tracing::debug!(object = %r, attempt, "status write conflict, retrying");
                }
                Err(e) => return Err(kube_err(&r, "update status", e)),
            }
        }
        Err(BackendError::Conflict {
            object: r.clone(),
            message: "status update kept conflicting".into(),
        })
    }

    async fn record_event(&self, event: &Event) -> Result<(), BackendError> {
        let inv = &event.involved_object;
        // The involved object's apiVersion and uid let `kubectl describe` match the event; an
        // event about an object that is gone (or of an unknown kind) is still worth recording.
        let mut api_version = if inv.group.is_empty() {
            "v1".to_string()
        } else {
            String::new()
        };
        let mut uid = None;
        let mut inv_ns = inv.namespace.clone();
        if let Ok(res) = self.resolve(inv, None).await {
            api_version = res.ar.api_version.clone();
            if !res.namespaced {
                inv_ns.clear();
            }
            let r = Self::normalize(inv, &res);
            if let Ok(api) = self.api_for(&res, &r) {
                if let Ok(Some(d)) = api.get_opt(&r.name).await {
                    uid = d.metadata.uid;
                }
            }
        }
        // Events of cluster-scoped objects live in "default", as client-go puts them.
        let ns = if inv_ns.is_empty() {
            "default".to_string()
        } else {
            inv_ns.clone()
        };
        let mut involved = serde_json::json!({
            "kind": inv.kind,
            "name": inv.name,
        });
        if !api_version.is_empty() {
            involved["apiVersion"] = Value::String(api_version);
        }
        if !inv_ns.is_empty() {
            involved["namespace"] = Value::String(inv_ns);
        }
        if let Some(uid) = uid {
            involved["uid"] = Value::String(uid);
        }
        // Flux puts event metadata (revision, ...) in annotations prefixed by the involved
        // object's API group.
        let prefix = if inv.group.is_empty() {
            "event.toolkit.fluxcd.io"
        } else {
            inv.group.as_str()
        };
        let annotations: Map<String, Value> = event
            .metadata
            .iter()
            .map(|(k, v)| (format!("{prefix}/{k}"), Value::String(v.clone())))
            .collect();
        let component = if event.reporting_controller.is_empty() {
            "trueup"
        } else {
            event.reporting_controller.as_str()
        };
        let mut ev = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name(&inv.name), "namespace": ns},
            "involvedObject": involved,
            "reason": event.reason,
            "message": truncate_chars(&event.message, EVENT_MESSAGE_MAX),
            "type": match event.severity { Severity::Info => "Normal", Severity::Error => "Warning" },
            "source": {"component": component},
            "reportingComponent": component,
            "count": 1,
        });
        if !annotations.is_empty() {
            ev["metadata"]["annotations"] = Value::Object(annotations);
        }
        if !event.timestamp.is_empty() {
            ev["firstTimestamp"] = Value::String(event.timestamp.clone());
            ev["lastTimestamp"] = Value::String(event.timestamp.clone());
        }
        let ar = ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Event".into(),
            plural: "events".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
        let d = from_value(ev, inv)?;
        api.create(&PostParams::default(), &d)
            .await
            .map_err(|e| kube_err(inv, "record event", e))?;
        Ok(())
    }

    async fn health(&self, r: &ObjectRef) -> Result<Health, BackendError> {
        match self.get(r).await? {
            None => Ok(Health::NotFound),
            Some(obj) => Ok(health::health_of(&obj)),
        }
    }

    async fn watch(&self, kinds: &[(String, String)]) -> Result<WatchStream, BackendError> {
        let mut streams = Vec::new();
        for (group, kind) in kinds {
            streams.push(self.watch_kind(group, kind, None).await?);
        }
        Ok(futures::stream::select_all(streams).boxed())
    }

    fn runs_workloads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("cluster {}", self.cluster_url)
    }

    fn for_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<dyn Backend>>, BackendError> {
        let b: Arc<dyn Backend> = self.impersonating(namespace, name)?;
        Ok(Some(b))
    }

    fn holds_finalizers(&self) -> bool {
        true
    }

    async fn add_finalizer(&self, r: &ObjectRef, finalizer: &str) -> Result<bool, BackendError> {
        self.set_finalizer(r, finalizer, true).await
    }

    async fn remove_finalizer(&self, r: &ObjectRef, finalizer: &str) -> Result<bool, BackendError> {
        self.set_finalizer(r, finalizer, false).await
    }
}

impl KubeBackend {
    /// Adds or removes one finalizer, leaving the others alone: the new list is written with
    /// the resourceVersion it was computed from, so a concurrent change to the list is a
    /// conflict (re-read and retried), never overwritten.
    async fn set_finalizer(
        &self,
        r: &ObjectRef,
        finalizer: &str,
        present: bool,
    ) -> Result<bool, BackendError> {
        let res = self.resolve(r, None).await?;
        let r = Self::normalize(r, &res);
        let api = self.api_for(&res, &r)?;
        let action = if present {
            "adding finalizer"
        } else {
            "removing finalizer"
        };
        for attempt in 1..=STATUS_ATTEMPTS {
            let cur = match api.get_opt(&r.name).await {
                Ok(Some(d)) => d,
                Ok(None) if !present => return Ok(false),
                Ok(None) => return Err(BackendError::NotFound(r.clone())),
                Err(e) => return Err(kube_err(&r, action, e)),
            };
            let mut finalizers = cur.metadata.finalizers.clone().unwrap_or_default();
            if finalizers.iter().any(|f| f == finalizer) == present {
                return Ok(false);
            }
            if present {
                finalizers.push(finalizer.to_string());
            } else {
                finalizers.retain(|f| f != finalizer);
            }
            let patch = serde_json::json!({"metadata": {
                "finalizers": finalizers,
                "resourceVersion": cur.metadata.resource_version,
            }});
            match api
                .patch(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < STATUS_ATTEMPTS => {
                    tracing::debug!(object = %r, attempt, "finalizer write conflict, retrying");
                }
                Err(kube::Error::Api(s)) if s.code == 404 && !present => return Ok(false),
                Err(e) => return Err(kube_err(&r, action, e)),
            }
        }
        Err(BackendError::Conflict {
            object: r.clone(),
            message: format!("{action} {finalizer}: kept conflicting"),
        })
    }
}

/// Per-kind watch bookkeeping: what the consumer has been told exists.
struct WatchState {
    known: HashMap<ObjectRef, String>,
    /// Objects seen during a re-list in progress.
    relisting: Option<HashMap<ObjectRef, String>>,
}

impl WatchState {
    fn step(
        &mut self,
        ev: Result<watcher::Event<DynamicObject>, watcher::Error>,
        ar: &ApiResource,
    ) -> Vec<WatchEvent> {
        let rv = |d: &DynamicObject| d.metadata.resource_version.clone().unwrap_or_default();
        let applied = |d: &DynamicObject| match to_object(d, ar) {
            Ok(o) => vec![WatchEvent::Applied(o)],
            Err(_) => Vec::new(),
        };
        match ev {
            Err(e) => {
                // The backoff layer retries; the consumer only needs to know nothing was lost
                // for good, which the re-list diff guarantees.
                tracing::warn!(kind = %ar.kind, error = %e, "watch error, retrying");
                Vec::new()
            }
            Ok(watcher::Event::Apply(d)) => {
                self.known.insert(object_ref_of(&d, ar), rv(&d));
                applied(&d)
            }
            Ok(watcher::Event::Delete(d)) => {
                let r = object_ref_of(&d, ar);
                self.known.remove(&r);
                vec![WatchEvent::Deleted(r)]
            }
            Ok(watcher::Event::Init) => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            Ok(watcher::Event::InitApply(d)) => {
                let r = object_ref_of(&d, ar);
                let v = rv(&d);
                let changed = self.known.get(&r) != Some(&v);
                self.relisting.get_or_insert_with(HashMap::new).insert(r, v);
                if changed {
                    applied(&d)
                } else {
                    Vec::new()
                }
            }
            Ok(watcher::Event::InitDone) => {
                let seen = self.relisting.take().unwrap_or_default();
                let gone: Vec<WatchEvent> = self
                    .known
                    .keys()
                    .filter(|r| !seen.contains_key(*r))
                    .map(|r| WatchEvent::Deleted(r.clone()))
                    .collect();
                for ev in &gone {
                    if let WatchEvent::Deleted(r) = ev {
                        self.known.remove(r);
                    }
                }
                self.known.extend(seen);
                gone
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_dns_subdomains() {
        let n = event_name("Podinfo_X");
        assert!(n.starts_with("podinfox."), "{n}");
        assert!(event_name(&"a".repeat(400)).len() <= 253);
        assert!(event_name("__").starts_with("trueup."));
    }

    #[test]
    fn apply_body_drops_server_fields() {
        let mut o = Object::new("v1", "Namespace", Some("x"), "n");
        o.metadata_mut()
            .insert("resourceVersion".into(), Value::from("5"));
        o.metadata_mut()
            .insert("managedFields".into(), serde_json::json!([{}]));
        let b = apply_body(&o, false);
        assert_eq!(b["metadata"], serde_json::json!({"name": "n"}));
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let s = "é".repeat(10);
        assert_eq!(truncate_chars(&s, 3), "é...");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }
}
