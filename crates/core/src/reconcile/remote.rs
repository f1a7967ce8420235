//! `spec.kubeConfig`: where a Kustomization or HelmRelease acts. The kubeconfig Secret is read
//! from the backend the object lives in (its own namespace, as Flux does); the connection comes
//! from a [`ClusterConnector`] and is cached by the kubeconfig's sha256, so reconciles reuse one
//! client (and its discovery) until the Secret changes.

use crate::api::meta::KubeConfigReference;
use crate::object::ObjectRef;
use crate::status::reason;
use crate::traits::{Backend, ClusterConnector, ConnectError};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The keys of a kubeconfig Secret Flux reads when `secretRef.key` is not given, in order.
pub const KUBECONFIG_KEYS: [&str; 2] = ["value", "value.yaml"];

/// How many connected clusters are kept (the least recently used go first).
const CACHE_SIZE: usize = 32;

/// Remote clusters for `spec.kubeConfig`: a [`ClusterConnector`] and the backends it connected,
/// by the sha256 of their kubeconfig. Share one between the reconcilers of a runtime.
pub struct RemoteClusters {
    connector: Arc<dyn ClusterConnector>,
    /// (sha256 hex, backend), most recently used last.
    cache: Mutex<Vec<(String, Arc<dyn Backend>)>>,
}

impl RemoteClusters {
    pub fn new(connector: impl ClusterConnector + 'static) -> Self {
        RemoteClusters {
            connector: Arc::new(connector),
            cache: Mutex::new(Vec::new()),
        }
    }

    /// How many connections are cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The backend of a kubeconfig: the cached one for the same bytes, else a new connection
    /// (given at most `timeout`). Failed connections are not cached.
    pub async fn backend(
        &self,
        kubeconfig: &[u8],
        origin: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn Backend>, ConnectError> {
        let key = hex::encode(Sha256::digest(kubeconfig));
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
                let entry = cache.remove(i);
                let b = entry.1.clone();
                cache.push(entry);
                return Ok(b);
            }
        }
        let b =
            match tokio::time::timeout(timeout, self.connector.connect(kubeconfig, origin)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ConnectError::Unreachable {
                        server: server_of(kubeconfig),
                        source: format!("no answer within {timeout:?}").into(),
                    })
                }
            };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(k, _)| *k != key);
        cache.push((key, b.clone()));
        if cache.len() > CACHE_SIZE {
            cache.remove(0);
        }
        Ok(b)
    }
}

/// The first `server:` of a kubeconfig, for messages (a URL, no credential).
fn server_of(kubeconfig: &[u8]) -> String {
    String::from_utf8_lossy(kubeconfig)
        .lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("server:")?.trim();
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            // A URL with user information would carry a password: keep the host only.
            let v = match v.split_once("://") {
                Some((scheme, rest)) => match rest.rsplit_once('@') {
                    Some((_, host)) => format!("{scheme}://{host}"),
                    None => v.to_string(),
                },
                None => v.to_string(),
            };
            Some(v)
        })
        .unwrap_or_else(|| "the kubeconfig's server".into())
}

/// Why an object has no backend to act on.
#[derive(Debug)]
pub(crate) struct TargetError {
    pub reason: &'static str,
    pub message: String,
    /// Retrying without a change cannot help.
    pub stalled: bool,
    /// The kubeconfig Secret (or its key) does not exist: a deleted object's clean-up is
    /// skipped then, as Flux does when the cluster's credentials are gone.
    pub gone: bool,
}

impl TargetError {
    fn new(reason: &'static str, message: String, stalled: bool) -> Self {
        TargetError {
            reason,
            message,
            stalled,
            gone: false,
        }
    }
}

/// The backend an object acts on: the remote cluster of `spec.kubeConfig` (when set), acting as
/// `spec.serviceAccountName` there (when set, as Flux impersonates on the remote cluster), and
/// what the Ready message adds. `None`: the backend the object lives in, as itself.
#[allow(clippy::type_complexity)]
pub(crate) async fn target_backend(
    object: &ObjectRef,
    kube_config: Option<&KubeConfigReference>,
    service_account_name: Option<&str>,
    management: &dyn Backend,
    remote: Option<&RemoteClusters>,
    timeout: Duration,
) -> Result<(Option<Arc<dyn Backend>>, String), TargetError> {
    let namespace = object.namespace.as_str();
    let Some(kc) = kube_config else {
        return super::acting_backend(namespace, service_account_name, management)
            .map_err(|m| TargetError::new(reason::RECONCILIATION_FAILED, m, false));
    };
    if let Some(cm) = &kc.config_map_ref {
        return Err(TargetError::new(
            reason::INVALID_SPEC,
            format!(
                "spec.kubeConfig.configMapRef ('{}'): cloud-provider kubeconfigs are not supported; use spec.kubeConfig.secretRef",
                cm.name
            ),
            true,
        ));
    }
    let Some(sr) = &kc.secret_ref else {
        return Err(TargetError::new(
            reason::INVALID_SPEC,
            "spec.kubeConfig: secretRef is required".into(),
            true,
        ));
    };
    let Some(remote) = remote else {
        return Err(TargetError::new(
            reason::INVALID_SPEC,
            "this build cannot reach remote clusters (spec.kubeConfig): build with the Kubernetes backend (the `kube` feature)".into(),
            true,
        ));
    };
    let secret_ref = ObjectRef::new("", "Secret", namespace, &sr.name);
    let field = "spec.kubeConfig.secretRef";
    let secret = match management.get(&secret_ref).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(TargetError {
                gone: true,
                ..TargetError::new(
                    reason::RECONCILIATION_FAILED,
                    format!("{field}: Secret '{namespace}/{}' not found", sr.name),
                    false,
                )
            })
        }
        Err(e) => {
            return Err(TargetError::new(
                reason::RECONCILIATION_FAILED,
                format!("{field}: reading Secret '{namespace}/{}': {e}", sr.name),
                false,
            ))
        }
    };
    let data = super::object_data(&secret).map_err(|m| {
        TargetError::new(
            reason::RECONCILIATION_FAILED,
            format!("{field}: {m}"),
            false,
        )
    })?;
    let found = match &sr.key {
        Some(k) => data.get(k).map(|v| (k.as_str(), v)),
        None => KUBECONFIG_KEYS
            .iter()
            .find_map(|k| data.get(*k).map(|v| (*k, v))),
    };
    let Some((key, bytes)) = found else {
        let wanted = match &sr.key {
            Some(k) => format!("key '{k}'"),
            None => "key 'value' or 'value.yaml'".into(),
        };
        return Err(TargetError {
            gone: true,
            ..TargetError::new(
                reason::RECONCILIATION_FAILED,
                format!("{field}: Secret '{namespace}/{}' has no {wanted}", sr.name),
                false,
            )
        });
    };
    let origin = format!("Secret '{namespace}/{}' key '{key}'", sr.name);
    let cluster = remote
        .backend(bytes, &origin, timeout)
        .await
        .map_err(|e| match e {
            ConnectError::Invalid(m) => TargetError::new(
                reason::RECONCILIATION_FAILED,
                format!("{field}: {origin}: {m}"),
                true,
            ),
            e @ ConnectError::Unreachable { .. } => TargetError::new(
                reason::RECONCILIATION_FAILED,
                format!("{field}: {origin}: {}", error_chain(&e)),
                false,
            ),
        })?;
    match super::acting_backend(namespace, service_account_name, cluster.as_ref()) {
        Ok((Some(acting), note)) => Ok((Some(acting), note)),
        Ok((None, note)) => Ok((Some(cluster), note)),
        Err(m) => Err(TargetError::new(reason::RECONCILIATION_FAILED, m, false)),
    }
}

/// An error and its sources, `: `-joined, without repeats (a source already in the message).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::object::Object;
    use crate::traits::ApplyOptions;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Connects to in-memory clusters, counting connections; refuses kubeconfigs saying "bad".
    #[derive(Default)]
    struct Clusters {
        connects: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl ClusterConnector for Clusters {
        async fn connect(
            &self,
            kubeconfig: &[u8],
            _origin: &str,
        ) -> Result<Arc<dyn Backend>, ConnectError> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            if kubeconfig.starts_with(b"bad") {
                return Err(ConnectError::Invalid("refused".into()));
            }
            if kubeconfig.starts_with(b"slow") {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok(Arc::new(MemoryBackend::new()))
        }
    }

    fn me() -> ObjectRef {
        ObjectRef::new(
            "kustomize.toolkit.fluxcd.io",
            "Kustomization",
            "apps",
            "web",
        )
    }

    async fn secret(b: &MemoryBackend, data: &str) {
        let o: Object = serde_json::from_str(&format!(
            r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"kc","namespace":"apps"}},"stringData":{data}}}"#
        ))
        .unwrap();
        b.apply(&o, &ApplyOptions::default()).await.unwrap();
    }

    fn kc(key: Option<&str>) -> KubeConfigReference {
        serde_json::from_value(serde_json::json!({
            "secretRef": {"name": "kc", "key": key}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn connections_are_cached_by_kubeconfig_and_a_change_reconnects() {
        let mgmt = MemoryBackend::new();
        let connector = Clusters::default();
        let connects = connector.connects.clone();
        let remote = RemoteClusters::new(connector);
        let t = Duration::from_secs(5);
        secret(&mgmt, r#"{"value":"one"}"#).await;
        let (a, note) = target_backend(&me(), Some(&kc(None)), None, &mgmt, Some(&remote), t)
            .await
            .unwrap();
        assert!(a.is_some() && note.is_empty());
        target_backend(&me(), Some(&kc(None)), None, &mgmt, Some(&remote), t)
            .await
            .unwrap();
        assert_eq!(connects.load(Ordering::SeqCst), 1);
        secret(&mgmt, r#"{"value":"two"}"#).await;
        target_backend(&me(), Some(&kc(None)), None, &mgmt, Some(&remote), t)
            .await
            .unwrap();
        assert_eq!(connects.load(Ordering::SeqCst), 2);
        assert_eq!(remote.cached(), 2);
    }

    #[tokio::test]
    async fn keys_follow_fluxs_order_and_failures_name_the_secret() {
        let mgmt = MemoryBackend::new();
        let remote = RemoteClusters::new(Clusters::default());
        let t = Duration::from_secs(5);
        let err = target_backend(&me(), Some(&kc(None)), None, &mgmt, Some(&remote), t)
            .await
            .err()
            .unwrap();
        assert!(err.gone && !err.stalled);
        assert_eq!(
            err.message,
            "spec.kubeConfig.secretRef: Secret 'apps/kc' not found"
        );
        secret(&mgmt, r#"{"other":"x"}"#).await;
        let err = target_backend(&me(), Some(&kc(None)), None, &mgmt, Some(&remote), t)
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.message,
            "spec.kubeConfig.secretRef: Secret 'apps/kc' has no key 'value' or 'value.yaml'"
        );
        let err = target_backend(&me(), Some(&kc(Some("k"))), None, &mgmt, Some(&remote), t)
            .await
            .err()
            .unwrap();
        assert!(err.message.ends_with("has no key 'k'"), "{}", err.message);
        // value.yaml when there is no value; a refused kubeconfig stalls, naming key and Secret.
        secret(&mgmt, r#"{"value.yaml":"bad secret-token"}"#).await;
        let err = target_backend(&me(), Some(&kc(None)), None, &mgmt, Some(&remote), t)
            .await
            .err()
            .unwrap();
        assert!(err.stalled);
        assert_eq!(
            err.message,
            "spec.kubeConfig.secretRef: Secret 'apps/kc' key 'value.yaml': refused"
        );
        // No connector, a configMapRef: stalled, naming the field.
        let err = target_backend(&me(), Some(&kc(None)), None, &mgmt, None, t)
            .await
            .err()
            .unwrap();
        assert!(
            err.stalled
                && err
                    .message
                    .contains("cannot reach remote clusters (spec.kubeConfig)")
        );
        let cm: KubeConfigReference =
            serde_json::from_value(serde_json::json!({"configMapRef": {"name": "aws"}})).unwrap();
        let err = target_backend(&me(), Some(&cm), None, &mgmt, Some(&remote), t)
            .await
            .err()
            .unwrap();
        assert!(err.stalled && err.message.starts_with("spec.kubeConfig.configMapRef"));
    }

    #[tokio::test]
    async fn a_connection_that_does_not_answer_gives_up_within_the_timeout() {
        let mgmt = MemoryBackend::new();
        let remote = RemoteClusters::new(Clusters::default());
        secret(
            &mgmt,
            r#"{"value":"slow\nclusters:\n- cluster:\n    server: https://user:pw@10.0.0.1:6443\n"}"#,
        )
        .await;
        let started = std::time::Instant::now();
        let err = target_backend(
            &me(),
            Some(&kc(None)),
            None,
            &mgmt,
            Some(&remote),
            Duration::from_millis(200),
        )
        .await
        .err()
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!err.stalled);
        assert!(
            err.message
                .contains("cannot reach the cluster at https://10.0.0.1:6443: no answer within"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("pw"));
        assert_eq!(remote.cached(), 0);
    }
}
