//! # trueup-core
//!
//! The vocabulary of trueup: dynamic [`Object`]s and [`ObjectRef`]s, ordered
//! [`ResourceSet`]s, the Flux-compatible [`api`] types, the status model, and the extension
//! traits ([`Source`], [`Applier`], [`PlanRunner`], [`Notifier`], [`Backend`]) that the other
//! crates implement. It also holds the reconcile [`runtime`] and the reconcilers, written
//! against those traits only: core names no concrete source, applier or backend, opens no
//! network connection and spawns no process.
//!
//! ```
//! use trueup_core::{api::FluxObject, yaml};
//!
//! let text = r#"
//! apiVersion: source.toolkit.fluxcd.io/v1
//! kind: GitRepository
//! metadata: {name: podinfo, namespace: flux-system}
//! spec:
//!   interval: 1m
//!   url: https://example.com/podinfo
//!   ref: {branch: main}
//! "#;
//! let objects = yaml::parse_objects(text, "source.yaml").unwrap();
//! let Some(FluxObject::GitRepository(repo)) = FluxObject::from_object(&objects[0]).unwrap() else {
//!     unreachable!()
//! };
//! assert_eq!(repo.spec.reference.unwrap().branch.as_deref(), Some("main"));
//! assert_eq!(objects[0].object_ref().inventory_id(),
//!            "flux-system_podinfo_source.toolkit.fluxcd.io_GitRepository");
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod object;
pub mod resources;
pub mod yaml;

pub use object::{Object, ObjectRef};
pub use resources::ResourceSet;
pub mod event;
pub mod status;
pub mod time;
pub mod traits;

pub use event::{Event, Severity};
pub use status::{Artifact, Condition, Inventory, Status};
pub use traits::{Applier, Backend, Notifier, PlanRunner, Source};
pub mod memory;
pub mod paths;
pub mod reconcile;
pub mod runtime;
pub mod scope;
pub mod sourceignore;
pub mod storage;
pub mod substitute;
