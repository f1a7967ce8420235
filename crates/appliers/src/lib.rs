#![forbid(unsafe_code)]
pub mod helmrelease;
pub mod kustomization;
pub mod kustomize;
pub mod tofu;

pub use kustomization::{KustomizeApplier, KustomizeApplierOptions};
