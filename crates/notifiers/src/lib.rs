//! # trueup-notifiers
//!
//! Notifications for trueup, compatible with Flux's `notification.toolkit.fluxcd.io` objects:
//!
//! - [`AlertRouter`] is a [`Notifier`](trueup_core::Notifier): give it to the runtime and every
//!   event is matched against the Alerts stored in the backend (`eventSources` with `*` and
//!   `matchLabels`, `eventSeverity`, `inclusionList`/`exclusionList`, `suspend`), merged with
//!   their `eventMetadata` and `summary`, and sent to their Provider (slack, discord, msteams,
//!   generic, generic-hmac, github and gitlab commit statuses, pagerduty, alertmanager,
//!   opsgenie) with the request body and headers each service expects.
//! - Beyond Flux: identical notifications are sent once per window, an optional failure
//!   threshold holds back isolated failures, an object that recovers after a reported failure
//!   gets a recovery message, and each Provider has its own bounded queue, rate limit, backoff
//!   on 429 (honouring `Retry-After`) and retries with jitter. Failures are logged and counted
//!   ([`AlertRouter::stats`]); nothing waits on a delivery.
//! - [`ReceiverServer`] serves Receivers' webhooks (`/hook/<digest>`, see [`webhook_path`]) for
//!   generic, generic-hmac, github and gitlab, and calls back with each object to reconcile.
//!
//! Secrets (tokens, and webhook addresses, which embed them) never appear in logs, errors or
//! `Debug` output.
//!
//! ```no_run
//! use std::sync::Arc;
//! use trueup_core::memory::MemoryBackend;
//! use trueup_core::traits::backend::Backend;
//! use trueup_notifiers::{AlertRouter, ReceiverServer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
//!
//! // Alerts: hand a clone to the runtime (`Runtime::builder(..).notifier(router.clone())`),
//! // keep one for counters.
//! let router = AlertRouter::new(backend.clone()).on_delivery(|report| {
//!     println!("alert {} -> {}: {} {}", report.alert, report.provider, report.object, report.reason);
//! });
//!
//! // Receivers: the callback would be `runtime.request_reconcile(&r)`.
//! let receiver = ReceiverServer::new(backend.clone(), |r| println!("reconcile {r}"));
//! let running = receiver.bind("127.0.0.1:9292".parse().unwrap()).await?;
//! println!("webhooks on http://{}", running.local_addr);
//! println!("{:?}", router.stats());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod crypto;
mod delivery;
pub mod providers;
pub mod receiver;
mod redact;
mod router;

pub use delivery::{DeliveryObserver, DeliveryOptions, DeliveryReport, Stats};
pub use providers::{
    build_requests, BuildError, Notification, OutgoingRequest, ProviderConfig, ProviderType,
};
pub use receiver::{
    webhook_path, ReceiverOptions, ReceiverServer, RunningReceiver, WebhookRequest, WebhookResponse,
};
pub use router::{
    AlertRouter, RouterOptions, Threshold, DEDUP_WINDOW_ANNOTATION, THRESHOLD_ANNOTATION,
};
