//! An in-memory [`Backend`]: for tests, examples and embedding trueup where nothing needs to
//! persist. It keeps generation and resourceVersion the way an API server does. A delete removes
//! the object at once; nothing follows `ownerReferences`, so every deletion propagation
//! ([`Backend::delete_with`]) means the same here.

use crate::event::Event;
use crate::object::{Object, ObjectRef};
use crate::traits::backend::*;
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// A cluster held in memory.
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<ObjectRef, Object>>,
    events: Mutex<Vec<Event>>,
    changes: broadcast::Sender<WatchEvent>,
    counter: Mutex<u64>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend {
            objects: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            changes: broadcast::channel(1024).0,
            counter: Mutex::new(0),
        }
    }
}

/// Everything of an object except status and the fields the server owns: a change here is a
/// change of generation.
pub fn generation_relevant(obj: &Object) -> Value {
    let mut m = obj.0.clone();
    m.remove("status");
    m.remove("metadata");
    Value::Object(m)
}

/// Copies the fields an API server owns (uid, creationTimestamp, generation, resourceVersion)
/// from the stored object to the applied one.
pub fn carry_system_metadata(
    stored: Option<&Object>,
    applied: &mut Object,
    next_version: u64,
) -> ApplyAction {
    let action = match stored {
        None => ApplyAction::Created,
        Some(old) => {
            let mut a = applied.clone();
            let mut o = old.clone();
            for x in [&mut a, &mut o] {
                x.0.remove("status");
                let md = x.metadata_mut();
                for k in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "resourceVersion",
                    "managedFields",
                ] {
                    md.remove(k);
                }
            }
            if a == o {
                ApplyAction::Unchanged
            } else {
                ApplyAction::Configured
            }
        }
    };
    let generation = match stored {
        None => 1,
        Some(old) if generation_relevant(old) != generation_relevant(applied) => {
            old.generation() + 1
        }
        Some(old) => old.generation().max(1),
    };
    let (uid, created) = match stored {
        Some(old) => (
            old.metadata().and_then(|m| m.get("uid")).cloned(),
            old.metadata()
                .and_then(|m| m.get("creationTimestamp"))
                .cloned(),
        ),
        None => (None, None),
    };
    let version = if action == ApplyAction::Unchanged {
        stored
            .and_then(|o| o.metadata())
            .and_then(|m| m.get("resourceVersion"))
            .cloned()
    } else {
        None
    };
    let status = stored.and_then(|o| o.0.get("status")).cloned();
    let md = applied.metadata_mut();
    md.insert("generation".into(), Value::from(generation));
    md.insert(
        "uid".into(),
        uid.unwrap_or_else(|| Value::String(format!("uid-{next_version:08}"))),
    );
    md.insert(
        "creationTimestamp".into(),
        created.unwrap_or_else(|| Value::String(crate::time::now_rfc3339())),
    );
    md.insert(
        "resourceVersion".into(),
        version.unwrap_or_else(|| Value::String(next_version.to_string())),
    );
    applied.0.remove("status");
    if let Some(s) = status {
        applied.0.insert("status".into(), s);
    }
    action
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }

    fn next(&self) -> u64 {
        let mut c = self.counter.lock().expect("counter lock");
        *c += 1;
        *c
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn apply(
        &self,
        obj: &Object,
        opts: &ApplyOptions,
    ) -> Result<(ApplyAction, Object), BackendError> {
        let r = obj.object_ref();
        if r.name.is_empty() {
            return Err(BackendError::Invalid {
                object: r,
                message: "metadata.name is required".into(),
            });
        }
        let version = self.next();
        let mut objects = self.objects.lock().expect("objects lock");
        let mut applied = obj.clone();
        let action = carry_system_metadata(objects.get(&r), &mut applied, version);
        if !opts.dry_run && action != ApplyAction::Unchanged {
            objects.insert(r, applied.clone());
            let _ = self.changes.send(WatchEvent::Applied(applied.clone()));
        }
        Ok((action, applied))
    }

    async fn get(&self, r: &ObjectRef) -> Result<Option<Object>, BackendError> {
        Ok(self.objects.lock().expect("objects lock").get(r).cloned())
    }

    async fn list(&self, p: &ListParams) -> Result<Vec<Object>, BackendError> {
        let objects = self.objects.lock().expect("objects lock");
        Ok(objects
            .iter()
            .filter(|(r, _)| r.group == p.group && r.kind == p.kind)
            .filter(|(r, _)| p.namespace.as_ref().is_none_or(|ns| &r.namespace == ns))
            .filter(|(_, o)| p.labels.iter().all(|(k, v)| o.label(k) == Some(v.as_str())))
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn delete(&self, r: &ObjectRef) -> Result<bool, BackendError> {
        let removed = self
            .objects
            .lock()
            .expect("objects lock")
            .remove(r)
            .is_some();
        if removed {
            let _ = self.changes.send(WatchEvent::Deleted(r.clone()));
        }
        Ok(removed)
    }

    async fn update_status(&self, r: &ObjectRef, status: &Value) -> Result<(), BackendError> {
        let mut objects = self.objects.lock().expect("objects lock");
        let obj = objects
            .get_mut(r)
            .ok_or_else(|| BackendError::NotFound(r.clone()))?;
        obj.0.insert("status".into(), status.clone());
        let _ = self.changes.send(WatchEvent::Applied(obj.clone()));
        Ok(())
    }

    async fn record_event(&self, event: &Event) -> Result<(), BackendError> {
        self.events.lock().expect("events lock").push(event.clone());
        Ok(())
    }

    async fn health(&self, r: &ObjectRef) -> Result<Health, BackendError> {
        Ok(
            if self.objects.lock().expect("objects lock").contains_key(r) {
                Health::Current
            } else {
                Health::NotFound
            },
        )
    }

    async fn watch(&self, kinds: &[(String, String)]) -> Result<WatchStream, BackendError> {
        let kinds: Vec<(String, String)> = kinds.to_vec();
        let rx = self.changes.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((ev, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |ev| {
            let r = match ev {
                WatchEvent::Applied(o) => o.object_ref(),
                WatchEvent::Deleted(r) => r.clone(),
            };
            let keep = kinds.iter().any(|(g, k)| *g == r.group && *k == r.kind);
            async move { keep }
        });
        Ok(stream.boxed())
    }

    fn runs_workloads(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        "in-memory backend".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generation_moves_with_spec_not_with_metadata_or_status() {
        let b = MemoryBackend::new();
        let mut o = Object::new("v1", "ConfigMap", Some("default"), "c");
        o.0.insert("data".into(), serde_json::json!({"a": "1"}));
        let (a, stored) = b.apply(&o, &ApplyOptions::default()).await.unwrap();
        assert_eq!((a, stored.generation()), (ApplyAction::Created, 1));
        let (a, _) = b.apply(&o, &ApplyOptions::default()).await.unwrap();
        assert_eq!(a, ApplyAction::Unchanged);
        o.set_label("team", "x");
        let (a, stored) = b.apply(&o, &ApplyOptions::default()).await.unwrap();
        assert_eq!((a, stored.generation()), (ApplyAction::Configured, 1));
        b.update_status(&o.object_ref(), &serde_json::json!({"x": 1}))
            .await
            .unwrap();
        o.0.insert("data".into(), serde_json::json!({"a": "2"}));
        let (a, stored) = b.apply(&o, &ApplyOptions::default()).await.unwrap();
        assert_eq!((a, stored.generation()), (ApplyAction::Configured, 2));
        assert_eq!(stored.status().unwrap()["x"], 1, "apply keeps status");
    }

    #[tokio::test]
    async fn every_propagation_deletes_at_once_here() {
        let b = MemoryBackend::new();
        for p in [
            None,
            Some(Propagation::Background),
            Some(Propagation::Foreground),
            Some(Propagation::Orphan),
        ] {
            let o = Object::new("v1", "ConfigMap", Some("default"), "c");
            b.apply(&o, &ApplyOptions::default()).await.unwrap();
            let opts = DeleteOptions { propagation: p };
            assert!(
                b.delete_with(&o.object_ref(), &opts).await.unwrap(),
                "{p:?}"
            );
            assert!(b.get(&o.object_ref()).await.unwrap().is_none(), "{p:?}");
            assert!(
                !b.delete_with(&o.object_ref(), &opts).await.unwrap(),
                "{p:?}"
            );
        }
    }

    #[test]
    fn deletion_propagation_parses_flux_spelling_and_names_the_field() {
        use crate::api::helm::HelmReleaseSpec;
        let spec = |v: &str| -> HelmReleaseSpec {
            serde_json::from_value(serde_json::json!({
                "interval": "1m",
                "uninstall": {"deletionPropagation": v},
            }))
            .unwrap()
        };
        for p in [
            Propagation::Background,
            Propagation::Foreground,
            Propagation::Orphan,
        ] {
            assert_eq!(Propagation::parse(p.as_str()), Some(p));
            assert_eq!(spec(p.as_str()).deletion_propagation(), Ok(p));
        }
        let unset: HelmReleaseSpec =
            serde_json::from_value(serde_json::json!({"interval": "1m"})).unwrap();
        assert_eq!(unset.deletion_propagation(), Ok(Propagation::Background));
        let e = spec("Orphan").deletion_propagation().unwrap_err();
        assert!(e.starts_with("spec.uninstall.deletionPropagation:"), "{e}");
        assert!(e.contains("'Orphan'"), "{e}");
    }

    #[tokio::test]
    async fn wait_until_deleted_names_what_is_left_or_sees_it_go() {
        let b = std::sync::Arc::new(MemoryBackend::new());
        let o = Object::new("v1", "ConfigMap", Some("default"), "held");
        b.apply(&o, &ApplyOptions::default()).await.unwrap();
        let r = o.object_ref();
        let short = std::time::Duration::from_millis(100);
        let poll = std::time::Duration::from_millis(10);
        let e = wait_until_deleted(b.as_ref(), std::slice::from_ref(&r), short, poll)
            .await
            .unwrap_err();
        assert!(e.contains("held") && e.starts_with("timed out"), "{e}");
        let (b2, r2) = (b.clone(), r.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            b2.delete(&r2).await.unwrap();
        });
        let long = std::time::Duration::from_secs(10);
        wait_until_deleted(b.as_ref(), &[r], long, poll)
            .await
            .unwrap();
    }
}
