//! The extension traits. Sources make artifacts; appliers turn an artifact into applied state on
//! a backend; plan runners turn an artifact into infrastructure; notifiers tell people. The
//! backend is the cluster they all work against.

pub mod applier;
pub mod backend;
pub mod cluster;
pub mod notifier;
pub mod plan;
pub mod source;

pub use applier::{Applied, Applier, ApplyError, ApplyRequest};
pub use backend::{
    ApplyAction, ApplyOptions, Backend, BackendError, DeleteOptions, Health, ListParams,
    Propagation, WatchEvent, WatchStream,
};
pub use cluster::{ClusterConnector, ConnectError};
pub use notifier::{Notifier, NotifyError};
pub use plan::{
    plan_id, OutputValue, Outputs, Plan, PlanError, PlanRequest, PlanRunner, PlanSummary,
};
pub use source::{
    ChartDependencyFetcher, ChartDependencyRequest, Credentials, FetchedChart, FetchedRevision,
    Source, SourceError, SourceErrorKind, SourceRequest,
};
