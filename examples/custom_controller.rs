//! A custom controller in one file: a `Greeting` kind of our own, reconciled into ConfigMaps by
//! trueup's runtime, with a notifier that prints events as JSON. It runs on the in-memory
//! backend; swap in `trueup::local::LocalBackend` (or the Kubernetes backend) unchanged.
//!
//! `cargo run --example custom_controller`

use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use trueup::core::api::ApiError;
use trueup::core::event::{Event, Severity};
use trueup::core::memory::MemoryBackend;
use trueup::core::object::{GroupKind, Object};
use trueup::core::reconcile::{Outcome, Reconciler, Schedule, Verdict};
use trueup::core::runtime::{CancellationToken, Runtime};
use trueup::core::status::Status;
use trueup::core::traits::{ApplyOptions, Backend, Notifier, NotifyError};

/// Turns `Greeting{spec.message}` into a ConfigMap `greeting-<name>`.
struct GreetingController;

#[async_trait]
impl Reconciler for GreetingController {
    fn kind(&self) -> GroupKind {
        GroupKind::new("demo.trueup.dev", "Greeting")
    }

    fn schedule(&self, _obj: &Object) -> Result<Schedule, ApiError> {
        Ok(Schedule {
            interval: Duration::from_secs(300),
            retry_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            suspend: false,
            depends_on: vec![],
            watches: vec![],
        })
    }

    async fn reconcile(&self, obj: &Object, backend: &dyn Backend) -> Outcome {
        let status = Status::from_value(obj.status());
        let Some(message) = obj.spec().and_then(|s| s["message"].as_str()) else {
            return Outcome::failed(
                obj,
                status,
                "InvalidSpec",
                "spec.message is required".into(),
                true,
            );
        };
        let ns = obj.namespace().unwrap_or("default");
        let mut cm = Object::new(
            "v1",
            "ConfigMap",
            Some(ns),
            &format!("greeting-{}", obj.name()),
        );
        cm.0.insert("data".into(), json!({ "message": message }));
        match backend.apply(&cm, &ApplyOptions::default()).await {
            Ok((action, _)) => {
                let mut status = status;
                let now = trueup::core::time::now_rfc3339();
                status.mark_ready(
                    "Succeeded",
                    format!("ConfigMap/{ns}/{} {}", cm.name(), action.as_str()),
                    obj.generation(),
                    &now,
                );
                let mut out = Outcome::new(Verdict::Ready, status);
                out.events.push(Event::new(
                    obj.object_ref(),
                    Severity::Info,
                    "Greeted",
                    message.to_string(),
                ));
                out
            }
            Err(e) => Outcome::failed(obj, status, "ApplyFailed", e.to_string(), false),
        }
    }
}

/// Prints every event as one JSON line.
struct JsonLines;

#[async_trait]
impl Notifier for JsonLines {
    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        println!(
            "{}",
            serde_json::to_string(event).map_err(|e| NotifyError(e.to_string()))?
        );
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let backend = Arc::new(MemoryBackend::new());
    for (name, message) in [("alice", "hello, Alice"), ("bob", "hello, Bob")] {
        let mut g = Object::new("demo.trueup.dev/v1", "Greeting", Some("default"), name);
        g.0.insert("spec".into(), json!({ "message": message }));
        backend.apply(&g, &ApplyOptions::default()).await?;
    }
    let runtime = Runtime::builder(backend.clone())
        .reconciler(GreetingController)
        .notifier(JsonLines)
        .build();
    let summary = runtime.run_until_settled(CancellationToken::new()).await?;
    for s in &summary {
        println!("{}: ready={}", s.object, s.is_ready());
    }
    let cm = backend
        .get(&trueup::core::ObjectRef::new(
            "",
            "ConfigMap",
            "default",
            "greeting-alice",
        ))
        .await?;
    println!(
        "{}",
        trueup::core::yaml::to_string(&cm.expect("created").into_value())?
    );
    Ok(())
}
