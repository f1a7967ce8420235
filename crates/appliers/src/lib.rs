#![forbid(unsafe_code)]
pub mod kustomization;
pub mod kustomize;

pub use kustomization::{KustomizeApplier, KustomizeApplierOptions};
