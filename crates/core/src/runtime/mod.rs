//! The runtime: one work queue for every object of every kind, driven by watches and timers.
//!
//! It owns timing and ordering; reconcilers only decide. An object runs at once when it is new,
//! when its spec changes (generation), when `reconcile.fluxcd.io/requestedAt` changes, or when
//! an object it depends on or watches (its source) changes readiness or revision; otherwise at
//! its interval with jitter, or after a failure at its retry interval with exponential backoff.
//! `dependsOn` is a DAG: a cycle stalls every object in it. A concurrency limit bounds the work
//! in flight, each run has a timeout, and the queue is served oldest-due first, so one slow or
//! failing object never holds up the others.

pub mod graph;

use crate::event::Event;
use crate::object::{GroupKind, Object, ObjectRef};
use crate::reconcile::{Outcome, Reconciler, Schedule, Verdict};
use crate::status::{reason, Status};
use crate::traits::backend::FLUX_FINALIZER;
use crate::traits::{Backend, Notifier};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
pub use tokio_util::sync::CancellationToken;

/// The annotation that asks for an immediate reconcile.
pub const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Reconciles in flight at once.
    pub concurrency: usize,
    /// Spread of intervals, in percent either way, so that objects created together do not
    /// stay in lockstep.
    pub jitter_percent: u32,
    /// Longest wait before re-checking an object that waits on a dependency or an artifact.
    pub dependency_requeue: Duration,
    /// How long a shutdown waits for reconciles in flight before cancelling them.
    pub shutdown_grace: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            concurrency: 4,
            jitter_percent: 5,
            dependency_requeue: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("listing {kind}: {source}")]
    List {
        kind: GroupKind,
        #[source]
        source: crate::traits::BackendError,
    },
    #[error("watching objects: {0}")]
    Watch(#[source] crate::traits::BackendError),
}

/// The state of one object as the runtime last saw it, for `get`-style listings.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectSummary {
    pub object: ObjectRef,
    pub suspended: bool,
    /// None until the first run finished.
    pub verdict: Option<Verdict>,
    pub status: Status,
}

impl ObjectSummary {
    pub fn is_ready(&self) -> bool {
        self.verdict == Some(Verdict::Ready)
    }
}

struct Entry {
    kind: GroupKind,
    object: Object,
    schedule: Result<Schedule, String>,
    due: Option<Instant>,
    running: bool,
    /// Something changed while it ran: run again as soon as it finishes.
    rerun: bool,
    failures: u32,
    verdict: Option<Verdict>,
    /// What dependents care about: readiness and revisions.
    signature: String,
    /// Deleted (with our finalizer) while it ran: finalize when the run ends.
    deleting: Option<Object>,
}

impl Entry {
    fn suspended(&self) -> bool {
        self.schedule.as_ref().is_ok_and(|s| s.suspend)
    }

    fn upstream(&self) -> impl Iterator<Item = &ObjectRef> {
        self.schedule
            .iter()
            .flat_map(|s| s.depends_on.iter().chain(s.watches.iter()))
    }
}

/// Readiness (with the reason of a failure, so that what waits on a source learns why it
/// failed) and revisions: when this changes, dependents and watchers run again.
fn signature(obj: &Object) -> String {
    let st = Status::from_value(obj.status());
    let ready = st.is_ready_for(obj.generation());
    let why = match st.condition(crate::status::READY) {
        Some(c) if !ready => c.reason.as_str(),
        _ => "",
    };
    format!(
        "{ready}|{why}|{}|{}|{}",
        st.artifact
            .as_ref()
            .map(|a| a.digest.as_str())
            .unwrap_or(""),
        st.artifact
            .as_ref()
            .map(|a| a.revision.as_str())
            .unwrap_or(""),
        st.last_applied_revision
    )
}

#[derive(Default)]
struct State {
    entries: HashMap<ObjectRef, Entry>,
    /// Objects in a dependsOn cycle, with the cycle's description.
    cycles: HashMap<ObjectRef, String>,
    graph_dirty: bool,
    /// Objects being deleted whose finalizer the runtime handles, waiting to be started.
    to_finalize: Vec<(ObjectRef, Object)>,
    /// Objects whose finalizer is being handled now: later events for them change nothing.
    finalizing: HashSet<ObjectRef>,
}

/// `metadata.deletionTimestamp` is set: the object is being deleted.
fn being_deleted(obj: &Object) -> bool {
    obj.metadata()
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|t| !t.is_null())
}

/// The object carries `finalizer` in `metadata.finalizers`.
fn has_finalizer(obj: &Object, finalizer: &str) -> bool {
    obj.metadata()
        .and_then(|m| m.get("finalizers"))
        .and_then(|f| f.as_array())
        .is_some_and(|f| f.iter().any(|v| v.as_str() == Some(finalizer)))
}

/// Flux's kinds carry Flux's finalizer; kinds of your own are finalized when their deletion is
/// seen, as on a backend without finalizers.
fn takes_finalizer(kind: &GroupKind) -> bool {
    crate::api::FluxKind::from_group_kind(&kind.group, &kind.kind).is_some()
}

/// Assembles a runtime from a backend and the parts for each kind.
pub struct RuntimeBuilder {
    backend: Arc<dyn Backend>,
    reconcilers: HashMap<GroupKind, Arc<dyn Reconciler>>,
    notifiers: Vec<Arc<dyn Notifier>>,
    options: RuntimeOptions,
}

impl RuntimeBuilder {
    pub fn reconciler(mut self, r: impl Reconciler + 'static) -> Self {
        self.reconcilers.insert(r.kind(), Arc::new(r));
        self
    }

    pub fn reconciler_arc(mut self, r: Arc<dyn Reconciler>) -> Self {
        self.reconcilers.insert(r.kind(), r);
        self
    }

    pub fn notifier(mut self, n: impl Notifier + 'static) -> Self {
        self.notifiers.push(Arc::new(n));
        self
    }

    pub fn options(mut self, o: RuntimeOptions) -> Self {
        self.options = o;
        self
    }

    pub fn build(self) -> Runtime {
        Runtime {
            backend: self.backend,
            reconcilers: self.reconcilers,
            notifiers: self.notifiers,
            options: self.options,
            state: Arc::new(Mutex::new(State::default())),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

/// Drives reconcilers over every object of the kinds they serve.
pub struct Runtime {
    backend: Arc<dyn Backend>,
    reconcilers: HashMap<GroupKind, Arc<dyn Reconciler>>,
    notifiers: Vec<Arc<dyn Notifier>>,
    options: RuntimeOptions,
    state: Arc<Mutex<State>>,
    wake: Arc<tokio::sync::Notify>,
}

struct RunResult {
    object: ObjectRef,
    verdict: Option<Verdict>,
    status: Option<Status>,
    requeue_after: Option<Duration>,
}

impl Runtime {
    pub fn builder(backend: Arc<dyn Backend>) -> RuntimeBuilder {
        RuntimeBuilder {
            backend,
            reconcilers: HashMap::new(),
            notifiers: Vec::new(),
            options: RuntimeOptions::default(),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Asks for an object to be reconciled now (a webhook receiver, a CLI command).
    pub fn request_reconcile(&self, r: &ObjectRef) {
        let mut st = self.state.lock().expect("runtime state");
        if let Some(e) = st.entries.get_mut(r) {
            if e.running {
                e.rerun = true;
            } else {
                e.due = Some(Instant::now());
            }
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Asks for every object that `pred` selects to be reconciled now (a Secret or ConfigMap
    /// they reference changed); returns the objects selected.
    pub fn request_reconcile_matching(&self, pred: impl Fn(&Object) -> bool) -> Vec<ObjectRef> {
        let mut st = self.state.lock().expect("runtime state");
        let now = Instant::now();
        let mut selected = Vec::new();
        for (r, e) in st.entries.iter_mut() {
            if pred(&e.object) {
                if e.running {
                    e.rerun = true;
                } else {
                    e.due = Some(now);
                }
                selected.push(r.clone());
            }
        }
        drop(st);
        self.wake.notify_one();
        selected.sort();
        selected
    }

    /// What the runtime knows of every object, sorted by kind and name.
    pub fn snapshot(&self) -> Vec<ObjectSummary> {
        let st = self.state.lock().expect("runtime state");
        let mut v: Vec<ObjectSummary> = st
            .entries
            .iter()
            .map(|(r, e)| ObjectSummary {
                object: r.clone(),
                suspended: e.suspended(),
                verdict: e.verdict,
                status: Status::from_value(e.object.status()),
            })
            .collect();
        v.sort_by(|a, b| a.object.cmp(&b.object));
        v
    }

    /// Runs until cancelled.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), RuntimeError> {
        self.drive(cancel, false).await.map(|_| ())
    }

    /// Runs until every object is settled: Ready, failed, suspended, or waiting on something
    /// that failed. Returns the final snapshot.
    pub async fn run_until_settled(
        &self,
        cancel: CancellationToken,
    ) -> Result<Vec<ObjectSummary>, RuntimeError> {
        self.drive(cancel, true).await?;
        Ok(self.snapshot())
    }

    fn kinds(&self) -> Vec<(String, String)> {
        self.reconcilers
            .keys()
            .map(|k| (k.group.clone(), k.kind.clone()))
            .collect()
    }

    async fn drive(
        &self,
        cancel: CancellationToken,
        until_settled: bool,
    ) -> Result<(), RuntimeError> {
        // Subscribe before listing, so nothing that changes in between is missed.
        let mut watch = self
            .backend
            .watch(&self.kinds())
            .await
            .map_err(RuntimeError::Watch)?;
        for kind in self.reconcilers.keys() {
            let objs = self
                .backend
                .list(&crate::traits::ListParams::kind(&kind.group, &kind.kind))
                .await
                .map_err(|source| RuntimeError::List {
                    kind: kind.clone(),
                    source,
                })?;
            for o in objs {
                self.observe(o);
            }
        }
        let mut tasks: JoinSet<RunResult> = JoinSet::new();
        let mut finalizers: JoinSet<()> = JoinSet::new();
        loop {
            self.start_due(&mut tasks);
            self.start_finalizers(&mut finalizers);
            if until_settled && tasks.is_empty() {
                // Objects a run has just written (a HelmRelease's HelmChart) are waiting in the
                // watch already: take them in before deciding that everything has settled.
                while let Some(Some(ev)) = futures::FutureExt::now_or_never(watch.next()) {
                    match ev {
                        crate::traits::WatchEvent::Applied(o) => self.observe(o),
                        crate::traits::WatchEvent::Deleted(r) => self.forget(&r, &mut finalizers),
                    }
                }
                self.start_finalizers(&mut finalizers);
                if self.settled() && finalizers.is_empty() {
                    break;
                }
            }
            // At the concurrency limit nothing can start before a run finishes: do not wake
            // for due objects then, or the loop would spin.
            let next_due = if tasks.len() >= self.options.concurrency.max(1) {
                None
            } else {
                self.next_due()
            };
            let sleep = async {
                match next_due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = watch.next() => match ev {
                    Some(crate::traits::WatchEvent::Applied(o)) => self.observe(o),
                    Some(crate::traits::WatchEvent::Deleted(r)) => self.forget(&r, &mut finalizers),
                    None => {
                        // The backend closed the watch: resubscribe and resync.
                        watch = self.backend.watch(&self.kinds()).await.map_err(RuntimeError::Watch)?;
                    }
                },
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(res) = res {
                        self.finish(res);
                    }
                }
                Some(_) = finalizers.join_next(), if !finalizers.is_empty() => {}
                _ = sleep => {}
                _ = self.wake.notified() => {}
            }
        }
        // Let reconciles in flight finish (their writes are atomic anyway), then cancel the rest.
        let grace = tokio::time::sleep(self.options.shutdown_grace);
        tokio::pin!(grace);
        while !tasks.is_empty() || !finalizers.is_empty() {
            tokio::select! {
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(res) = res { self.finish(res); }
                }
                Some(_) = finalizers.join_next(), if !finalizers.is_empty() => {}
                _ = &mut grace => {
                    tasks.abort_all();
                    finalizers.abort_all();
                    break;
                }
            }
        }
        Ok(())
    }

    /// Takes in a new or changed object and decides whether it, or what depends on it, runs now.
    fn observe(&self, obj: Object) {
        let r = obj.object_ref();
        let kind = r.group_kind();
        let Some(rec) = self.reconcilers.get(&kind) else {
            return;
        };
        let mut st = self.state.lock().expect("runtime state");
        if self.backend.holds_finalizers() && being_deleted(&obj) && takes_finalizer(&kind) {
            // Being deleted: it is not reconciled again. With our finalizer on it, its clean-up
            // runs (once: later events change nothing), then the finalizer goes.
            if st.finalizing.contains(&r) {
                return;
            }
            let ours = has_finalizer(&obj, FLUX_FINALIZER);
            match st.entries.get_mut(&r) {
                // Its clean-up waits for the run in flight.
                Some(e) if e.running && ours => {
                    e.deleting = Some(obj);
                    e.due = None;
                    e.rerun = false;
                    return;
                }
                Some(_) => {
                    st.entries.remove(&r);
                    st.graph_dirty = true;
                    trigger_downstream(&mut st, &r, Instant::now());
                }
                None => {}
            }
            if ours {
                st.finalizing.insert(r.clone());
                st.to_finalize.push((r, obj));
            }
            drop(st);
            self.wake.notify_one();
            return;
        }
        // Deleted and created again under the same name.
        st.finalizing.remove(&r);
        let now = Instant::now();
        let sig = signature(&obj);
        let requested = obj.annotation(REQUESTED_AT).map(str::to_string);
        let handled = Status::from_value(obj.status()).last_handled_reconcile_at;
        let request_pending = requested.as_ref().is_some_and(|r| *r != handled);
        let schedule = rec.schedule(&obj).map_err(|e| e.to_string());
        let mut trigger_dependents = false;
        match st.entries.get_mut(&r) {
            None => {
                st.entries.insert(
                    r.clone(),
                    Entry {
                        kind,
                        object: obj,
                        schedule,
                        due: Some(now),
                        running: false,
                        rerun: false,
                        failures: 0,
                        verdict: None,
                        signature: sig,
                        deleting: None,
                    },
                );
                st.graph_dirty = true;
            }
            Some(e) => {
                let spec_changed = obj.generation() != e.object.generation();
                let was_suspended = e.suspended();
                if spec_changed {
                    e.schedule = schedule;
                }
                if sig != e.signature {
                    e.signature = sig;
                    trigger_dependents = true;
                }
                e.object = obj;
                let resumed = was_suspended && !e.suspended();
                if spec_changed || request_pending || resumed {
                    if e.running {
                        e.rerun = true;
                    } else {
                        e.due = Some(now);
                    }
                    e.failures = 0;
                }
                if spec_changed {
                    st.graph_dirty = true;
                }
            }
        }
        if trigger_dependents {
            trigger_downstream(&mut st, &r, now);
        }
        drop(st);
        self.wake.notify_one();
    }

    fn forget(&self, r: &ObjectRef, finalizers: &mut JoinSet<()>) {
        let mut st = self.state.lock().expect("runtime state");
        if st.finalizing.remove(r) {
            // Its finalizer was handled; that clean-up is the only one.
            return;
        }
        let Some(e) = st.entries.remove(r) else {
            return;
        };
        if e.running && e.deleting.is_some() {
            // Gone while it ran, with its finalizer handled elsewhere.
            return;
        }
        st.graph_dirty = true;
        trigger_downstream(&mut st, r, Instant::now());
        drop(st);
        if let Some(rec) = self.reconcilers.get(&e.kind).cloned() {
            let backend = self.backend.clone();
            let notifiers = self.notifiers.clone();
            let r = r.clone();
            finalizers.spawn(async move {
                // A watch also reports an object that is still there but no longer selected
                // (a label selector that shards objects between operators): that object was
                // handed over, not deleted, and its applied objects must stay.
                if let Ok(Some(still)) = backend.get(&r).await {
                    let deleting = still
                        .metadata()
                        .and_then(|m| m.get("deletionTimestamp"))
                        .is_some_and(|t| !t.is_null());
                    if !deleting {
                        tracing::info!(object = %r, "no longer watched; left alone");
                        return;
                    }
                }
                let events = rec.finalize(&e.object, backend.as_ref()).await;
                publish(backend.as_ref(), &notifiers, &events).await;
            });
        }
    }

    /// Starts the clean-up of objects being deleted with our finalizer on them.
    fn start_finalizers(&self, finalizers: &mut JoinSet<()>) {
        let pending = std::mem::take(&mut self.state.lock().expect("runtime state").to_finalize);
        for (r, obj) in pending {
            let Some(rec) = self.reconcilers.get(&r.group_kind()).cloned() else {
                continue;
            };
            let backend = self.backend.clone();
            let notifiers = self.notifiers.clone();
            // It stays in `finalizing` until its deletion is seen, so that events still on
            // their way about it do not clean it up again.
            finalizers.spawn(finalize_with_finalizer(obj, rec, backend, notifiers));
        }
    }

    fn refresh_cycles(st: &mut State) {
        if !st.graph_dirty {
            return;
        }
        let edges: HashMap<ObjectRef, Vec<ObjectRef>> = st
            .entries
            .iter()
            .map(|(r, e)| {
                (
                    r.clone(),
                    e.schedule
                        .as_ref()
                        .map(|s| s.depends_on.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        st.cycles.clear();
        for cycle in graph::find_cycles(&edges) {
            let text = graph::describe_cycle(&cycle);
            for r in cycle {
                st.cycles.insert(r, text.clone());
            }
        }
        st.graph_dirty = false;
    }

    fn next_due(&self) -> Option<Instant> {
        let st = self.state.lock().expect("runtime state");
        st.entries
            .values()
            .filter(|e| !e.running && !e.suspended())
            .filter_map(|e| e.due)
            .min()
    }

    /// Starts due objects, oldest first, up to the concurrency limit.
    fn start_due(&self, tasks: &mut JoinSet<RunResult>) {
        let mut st = self.state.lock().expect("runtime state");
        Self::refresh_cycles(&mut st);
        let now = Instant::now();
        let running = st.entries.values().filter(|e| e.running).count();
        let free = self.options.concurrency.max(1).saturating_sub(running);
        if free == 0 {
            return;
        }
        let mut due: Vec<(Instant, ObjectRef)> = st
            .entries
            .iter()
            .filter(|(_, e)| !e.running && !e.suspended() && e.due.is_some_and(|d| d <= now))
            .map(|(r, e)| (e.due.expect("filtered on due"), r.clone()))
            .collect();
        due.sort();
        for (_, r) in due.into_iter().take(free) {
            let cycle = st.cycles.get(&r).cloned();
            let deps_waiting = self.dependency_problem(&st, &r);
            let e = st.entries.get_mut(&r).expect("due entry exists");
            e.running = true;
            e.due = None;
            let obj = e.object.clone();
            let schedule = e.schedule.clone();
            let rec = self.reconcilers[&e.kind].clone();
            let backend = self.backend.clone();
            let notifiers = self.notifiers.clone();
            tasks.spawn(run_one(
                obj,
                schedule,
                cycle,
                deps_waiting,
                rec,
                backend,
                notifiers,
            ));
        }
    }

    /// Why an object cannot run yet: a dependency that is missing or not Ready.
    fn dependency_problem(&self, st: &State, r: &ObjectRef) -> Option<String> {
        let e = st.entries.get(r)?;
        let schedule = e.schedule.as_ref().ok()?;
        for dep in &schedule.depends_on {
            match st.entries.get(dep) {
                None => {
                    return Some(format!(
                        "dependency '{}/{}' not found",
                        dep.namespace, dep.name
                    ))
                }
                Some(d) => {
                    let ready =
                        Status::from_value(d.object.status()).is_ready_for(d.object.generation());
                    if !ready {
                        return Some(format!(
                            "dependency '{}/{}' is not ready",
                            dep.namespace, dep.name
                        ));
                    }
                }
            }
        }
        None
    }

    fn finish(&self, res: RunResult) {
        let mut st = self.state.lock().expect("runtime state");
        let now = Instant::now();
        let Some(e) = st.entries.get_mut(&res.object) else {
            return;
        };
        e.running = false;
        if let Some(obj) = e.deleting.take() {
            st.entries.remove(&res.object);
            st.graph_dirty = true;
            trigger_downstream(&mut st, &res.object, now);
            st.finalizing.insert(res.object.clone());
            st.to_finalize.push((res.object, obj));
            drop(st);
            self.wake.notify_one();
            return;
        }
        let schedule = e.schedule.clone().ok();
        if let Some(status) = &res.status {
            e.object.0.insert("status".into(), status.to_value());
        }
        let mut trigger = false;
        let sig = signature(&e.object);
        if sig != e.signature {
            e.signature = sig;
            trigger = true;
        }
        if let Some(v) = res.verdict {
            e.verdict = Some(v);
        }
        let delay = match (res.verdict, &schedule) {
            (_, None) => None,
            (Some(Verdict::Ready), Some(s)) => {
                e.failures = 0;
                Some(jitter(s.interval, self.options.jitter_percent))
            }
            (Some(Verdict::Failed { .. }), Some(s)) => {
                e.failures += 1;
                Some(backoff(s.retry_interval, s.interval, e.failures))
            }
            (Some(Verdict::Waiting), Some(s)) => {
                Some(s.retry_interval.min(self.options.dependency_requeue))
            }
            (None, Some(s)) => Some(s.interval),
        };
        let delay = res.requeue_after.or(delay);
        e.due = if e.rerun {
            e.rerun = false;
            Some(now)
        } else {
            delay.map(|d| now + d)
        };
        if trigger {
            trigger_downstream(&mut st, &res.object, now);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Every object has finished a run and is in a final state for now.
    fn settled(&self) -> bool {
        let st = self.state.lock().expect("runtime state");
        let now = Instant::now();
        let mut memo: HashMap<ObjectRef, bool> = HashMap::new();
        st.entries
            .keys()
            .all(|r| settled_rec(&st, r, now, &mut memo, &mut HashSet::new()))
    }
}

fn settled_rec(
    st: &State,
    r: &ObjectRef,
    now: Instant,
    memo: &mut HashMap<ObjectRef, bool>,
    visiting: &mut HashSet<ObjectRef>,
) -> bool {
    if let Some(v) = memo.get(r) {
        return *v;
    }
    let Some(e) = st.entries.get(r) else {
        return true;
    };
    if e.suspended() {
        return true;
    }
    if e.running || e.due.is_some_and(|d| d <= now) || e.rerun {
        return false;
    }
    let v = match e.verdict {
        None => false,
        Some(Verdict::Ready) | Some(Verdict::Failed { .. }) => true,
        Some(Verdict::Waiting) => {
            if !visiting.insert(r.clone()) {
                return true;
            }
            // Settled when something it waits on has failed (or is itself stuck waiting).
            let res = e.upstream().any(|u| match st.entries.get(u) {
                None => true,
                Some(ue) => {
                    !matches!(ue.verdict, Some(Verdict::Ready))
                        && settled_rec(st, u, now, memo, visiting)
                }
            });
            visiting.remove(r);
            res
        }
    };
    memo.insert(r.clone(), v);
    v
}

/// Makes everything that depends on or watches `r` due now.
fn trigger_downstream(st: &mut State, r: &ObjectRef, now: Instant) {
    for e in st.entries.values_mut() {
        if e.upstream().any(|u| u == r) && !e.suspended() {
            if e.running {
                e.rerun = true;
            } else {
                e.due = Some(now);
            }
        }
    }
}

fn jitter(d: Duration, percent: u32) -> Duration {
    if percent == 0 || d.is_zero() {
        return d;
    }
    let spread = d.as_secs_f64() * f64::from(percent.min(50)) / 100.0;
    let offset = (fastrand::f64() * 2.0 - 1.0) * spread;
    Duration::from_secs_f64((d.as_secs_f64() + offset).max(0.001))
}

/// `retry * 2^(failures-1)`, capped at the larger of the interval and the retry interval.
pub fn backoff(retry: Duration, interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(retry);
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    retry.saturating_mul(factor).min(cap)
}

async fn run_one(
    obj: Object,
    schedule: Result<Schedule, String>,
    cycle: Option<String>,
    dependency_problem: Option<String>,
    rec: Arc<dyn Reconciler>,
    backend: Arc<dyn Backend>,
    notifiers: Vec<Arc<dyn Notifier>>,
) -> RunResult {
    let r = obj.object_ref();
    let base = Status::from_value(obj.status());
    let mut outcome = match (&schedule, cycle, dependency_problem) {
        (Err(msg), _, _) => Outcome::failed(&obj, base, reason::INVALID_SPEC, msg.clone(), true),
        (Ok(_), Some(cycle), _) => Outcome::failed(
            &obj,
            base,
            reason::DEPENDENCY_CYCLE,
            format!("circular dependency detected: {cycle}"),
            true,
        ),
        (Ok(_), None, Some(problem)) => {
            Outcome::waiting(&obj, base, reason::DEPENDENCY_NOT_READY, problem)
        }
        (Ok(s), None, None) => match ensure_finalizer(&obj, backend.as_ref()).await {
            Err(msg) => Outcome::failed(&obj, base, reason::RECONCILIATION_FAILED, msg, false),
            Ok(()) => {
                match tokio::time::timeout(s.timeout, rec.reconcile(&obj, backend.as_ref())).await {
                    Ok(o) => o,
                    Err(_) => Outcome::failed(
                        &obj,
                        base,
                        reason::TIMEOUT,
                        format!(
                            "reconciliation timed out after {}",
                            crate::api::GoDuration::from_duration(s.timeout)
                        ),
                        false,
                    ),
                }
            }
        },
    };
    if let Some(req) = obj.annotation(REQUESTED_AT) {
        outcome.status.last_handled_reconcile_at = req.to_string();
    }
    outcome.status.observed_generation = obj.generation();
    let written = match backend.update_status(&r, &outcome.status.to_value()).await {
        Ok(()) => true,
        Err(crate::traits::BackendError::NotFound(_)) => false,
        Err(e) => {
            tracing::warn!(object = %r, error = %e, "writing status failed");
            false
        }
    };
    publish(backend.as_ref(), &notifiers, &outcome.events).await;
    RunResult {
        object: r,
        verdict: Some(outcome.verdict),
        status: written.then_some(outcome.status),
        requeue_after: outcome.requeue_after,
    }
}

/// Puts Flux's finalizer on a Flux object before its first reconcile, on a backend that holds
/// finalizers, so that its deletion waits for its clean-up.
async fn ensure_finalizer(obj: &Object, backend: &dyn Backend) -> Result<(), String> {
    let r = obj.object_ref();
    if !backend.holds_finalizers()
        || !takes_finalizer(&r.group_kind())
        || has_finalizer(obj, FLUX_FINALIZER)
    {
        return Ok(());
    }
    match backend.add_finalizer(&r, FLUX_FINALIZER).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("adding finalizer {FLUX_FINALIZER} to {r}: {e}")),
    }
}

/// The clean-up of an object being deleted with our finalizer on it: the reconciler's
/// `finalize` (skipped for a suspended object, as Flux does), its events published, then the
/// finalizer removed. A clean-up that failed (an event of severity Error) keeps the finalizer
/// and runs again after a backoff, as long as the object is still there with our finalizer.
async fn finalize_with_finalizer(
    mut obj: Object,
    rec: Arc<dyn Reconciler>,
    backend: Arc<dyn Backend>,
    notifiers: Vec<Arc<dyn Notifier>>,
) {
    let r = obj.object_ref();
    let mut failures = 0u32;
    // The clean-up succeeded but the finalizer could not be removed yet: do not clean up again.
    let mut cleaned = false;
    loop {
        let schedule = rec.schedule(&obj).ok();
        let suspended = schedule.as_ref().is_some_and(|s| s.suspend);
        let ok = if cleaned {
            true
        } else if suspended {
            tracing::info!(object = %r, "suspended: finalizer released without clean-up");
            true
        } else {
            let events = rec.finalize(&obj, backend.as_ref()).await;
            let failed = events
                .iter()
                .any(|e| e.severity == crate::event::Severity::Error);
            publish(backend.as_ref(), &notifiers, &events).await;
            !failed
        };
        cleaned = ok;
        if ok {
            match backend.remove_finalizer(&r, FLUX_FINALIZER).await {
                Ok(_) | Err(crate::traits::BackendError::NotFound(_)) => return,
                Err(e) => {
                    tracing::warn!(object = %r, error = %e, "removing finalizer failed");
                }
            }
        }
        failures += 1;
        let (retry, interval) = schedule
            .as_ref()
            .map(|s| (s.retry_interval, s.interval))
            .unwrap_or((Duration::from_secs(10), Duration::from_secs(600)));
        tokio::time::sleep(backoff(retry, interval, failures)).await;
        match backend.get(&r).await {
            Ok(Some(cur)) if being_deleted(&cur) && has_finalizer(&cur, FLUX_FINALIZER) => {
                obj = cur;
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(object = %r, error = %e, "reading object being deleted failed");
            }
        }
    }
}

/// Records events and hands them to notifiers. Notifiers run in the background: a slow or
/// failing delivery never holds up a reconcile.
async fn publish(backend: &dyn Backend, notifiers: &[Arc<dyn Notifier>], events: &[Event]) {
    for ev in events {
        if let Err(e) = backend.record_event(ev).await {
            tracing::warn!(error = %e, "recording event failed");
        }
        for n in notifiers {
            let n = n.clone();
            let ev = ev.clone();
            tokio::spawn(async move {
                if let Err(e) = n.notify(&ev).await {
                    tracing::warn!(error = %e, "notification failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
