//! The Terraform reconciler (tofu-controller's `Terraform` object): source artifact -> plan ->
//! approval -> apply of exactly the approved plan -> outputs, with drift detection on every
//! interval.
//!
//! Approval is bound to what was reviewed: a plan's id is `plan-<ref>-<sha10>-<digest8>` (see
//! [`plan_id`]), where the digest covers the planned changes. `approvePlan: "<id>"` applies the
//! saved plan with that id only while it is still the pending plan for the current source
//! revision; otherwise nothing is applied and the status says so.
//!
//! What is kept in the backend (all in the object's namespace, names as tofu-controller's):
//! - `Secret tfplan-<ws>-<name>`: the last plan: `tfplan` (gzipped saved plan file) and
//!   `tfplan.json` (gzipped `show -json`), annotated with its id, revision and kind.
//! - `storeReadablePlan: human` -> `ConfigMap tfplan-<ws>-<name>` (`tfplan`: the CLI's text,
//!   sensitive values masked); `json` -> `Secret tfplan-<ws>-<name>.json` (`tfplan`: the JSON;
//!   a Secret because the JSON holds sensitive values in clear).
//! - `writeOutputsToSecret` -> that Secret: strings as they are, other values as JSON.
//! - The state itself is the runner's business (the CLI runner keeps `tfstate-<ws>-<suffix>`).

use super::{object_data, source_ref, Outcome, Reconciler, Schedule, Verdict};
use crate::api::tofu::TerraformSpec;
use crate::api::{from_object, ApiError, FluxKind, Terraform};
use crate::event::{Event, Severity};
use crate::object::{Object, ObjectRef};
use crate::status::{reason, Condition, ConditionStatus, Status};
use crate::storage::ArtifactStore;
use crate::traits::plan::{plan_id, Outputs, Plan, PlanError, PlanRequest, PlanRunner};
use crate::traits::{ApplyOptions, Backend};
use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Condition types a Terraform object reports, besides Ready/Reconciling/Stalled.
pub const PLAN: &str = "Plan";
pub const APPLY: &str = "Apply";
pub const OUTPUT: &str = "Output";
pub const DRIFT_DETECTED: &str = "DriftDetected";

/// Reasons, as tofu-controller names them.
pub mod tf_reason {
    pub const PLANNED_NO_CHANGES: &str = "TerraformPlannedNoChanges";
    pub const PLANNED_WITH_CHANGES: &str = "TerraformPlannedWithChanges";
    pub const PLAN_FAILED: &str = "TFExecPlanFailed";
    pub const APPLY_SUCCEEDED: &str = "TerraformAppliedSucceed";
    pub const APPLY_FAILED: &str = "TFExecApplyFailed";
    pub const DESTROY_SUCCEEDED: &str = "TerraformDestroySucceed";
    pub const DESTROY_FAILED: &str = "TFExecDestroyFailed";
    pub const OUTPUT_FAILED: &str = "TFExecOutputFailed";
    pub const OUTPUTS_WRITTEN: &str = "TerraformOutputsWritten";
    pub const OUTPUTS_WRITING_FAILED: &str = "OutputsWritingFailed";
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    pub const NO_DRIFT: &str = "NoDrift";
    pub const VARS_GENERATION_FAILED: &str = "VarsGenerationFailed";
    pub const ARTIFACT_FAILED: &str = "ArtifactFailed";
    /// trueup's own: an approval that no longer names the pending plan.
    pub const PLAN_APPROVAL_MISMATCH: &str = "PlanApprovalMismatch";
}

/// tofu-controller's default `retryInterval`.
const DEFAULT_RETRY: Duration = Duration::from_secs(15);
/// Budget for one reconcile when nothing else is configured (the spec has no timeout field).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const PLAN_ID_ANNOTATION: &str = "savedPlan";
const REVISION_ANNOTATION: &str = "trueup.dev/revision";
const DESTROY_ANNOTATION: &str = "trueup.dev/destroy-plan";

/// Reconciles Terraform objects with any [`PlanRunner`].
pub struct TerraformReconciler<R> {
    runner: R,
    store: ArtifactStore,
    timeout: Duration,
}

impl<R> TerraformReconciler<R> {
    pub fn new(runner: R, store: ArtifactStore) -> Self {
        TerraformReconciler {
            runner,
            store,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Budget for one reconcile (plan and apply together). Default 20 minutes.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// `status.plan`, as tofu-controller keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PlanStatus {
    pending: String,
    last_applied: String,
    is_destroy_plan: bool,
    is_drift_detection_plan: bool,
}

impl PlanStatus {
    fn read(status: &Status) -> Self {
        let p = status.extra.get("plan");
        let s = |k: &str| {
            p.and_then(|p| p.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let b = |k: &str| {
            p.and_then(|p| p.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        PlanStatus {
            pending: s("pending"),
            last_applied: s("lastApplied"),
            is_destroy_plan: b("isDestroyPlan"),
            is_drift_detection_plan: b("isDriftDetectionPlan"),
        }
    }

    fn write(&self, status: &mut Status) {
        let mut m = Map::new();
        if !self.last_applied.is_empty() {
            m.insert("lastApplied".into(), json!(self.last_applied));
        }
        if !self.pending.is_empty() {
            m.insert("pending".into(), json!(self.pending));
        }
        if self.is_destroy_plan {
            m.insert("isDestroyPlan".into(), json!(true));
        }
        if self.is_drift_detection_plan {
            m.insert("isDriftDetectionPlan".into(), json!(true));
        }
        status.extra.insert("plan".into(), Value::Object(m));
    }
}

/// Everything one reconcile works with.
struct Run<'a> {
    obj: &'a Object,
    spec: &'a TerraformSpec,
    me: ObjectRef,
    ns: String,
    ws: String,
    revision: String,
    status: Status,
    events: Vec<Event>,
    sensitive: Vec<String>,
    backend: &'a dyn Backend,
    interval: Duration,
}

impl Run<'_> {
    fn now(&self) -> String {
        crate::time::now_rfc3339()
    }

    fn set(&mut self, type_: &str, status: ConditionStatus, why: &str, message: impl Into<String>) {
        let now = self.now();
        let generation = self.obj.generation();
        self.status.set_condition(
            Condition::new(type_, status, why, message),
            generation,
            &now,
        );
    }

    fn event(&mut self, severity: Severity, why: &str, message: impl Into<String>) {
        self.events.push(
            Event::new(self.me.clone(), severity, why, message)
                .with_revision(self.revision.clone()),
        );
    }

    /// Never lets a secret value out in a message.
    fn redact(&self, msg: &str) -> String {
        redact(msg, &self.sensitive)
    }

    fn plan_name(&self) -> String {
        format!("tfplan-{}-{}", self.ws, self.me.name)
    }

    fn ready(mut self, why: &str, message: String) -> Outcome {
        let now = self.now();
        self.status
            .mark_ready(why, message, self.obj.generation(), &now);
        let mut out = Outcome::new(Verdict::Ready, self.status);
        out.events = self.events;
        out
    }

    fn fail(self, why: &str, message: String) -> Outcome {
        let message = self.redact(&message);
        let revision = self.revision.clone();
        let mut out = Outcome::failed(self.obj, self.status, why, message, false);
        for ev in &mut out.events {
            ev.metadata.insert("revision".into(), revision.clone());
            ev.revision = Some(revision.clone());
        }
        let mut events = self.events;
        events.append(&mut out.events);
        out.events = events;
        out
    }
}

fn redact(msg: &str, sensitive: &[String]) -> String {
    let mut out = msg.to_string();
    // Longest first, so a secret containing another is masked whole.
    let mut secrets: Vec<&String> = sensitive.iter().filter(|s| s.len() >= 3).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        out = out.replace(s.as_str(), "***");
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| format!("not gzip: {e}"))?;
    Ok(out)
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A Secret (data base64-encoded) or ConfigMap (data as strings) owned by trueup.
fn data_object(kind: &str, ns: &str, name: &str, data: &BTreeMap<String, Vec<u8>>) -> Object {
    let mut o = Object::new("v1", kind, Some(ns), name);
    let mut m = Map::new();
    for (k, v) in data {
        let v = if kind == "Secret" {
            b64(v)
        } else {
            Value::String(String::from_utf8_lossy(v).into_owned())
        };
        m.insert(k.clone(), v);
    }
    o.as_map_mut().insert("data".into(), Value::Object(m));
    if kind == "Secret" {
        o.as_map_mut().insert("type".into(), json!("Opaque"));
    }
    o.set_label("app.kubernetes.io/managed-by", "trueup");
    o
}

/// A saved plan read back from its Secret.
struct StoredPlan {
    id: String,
    revision: String,
    destroy: bool,
    plan: Plan,
}

/// Resolves `spec.vars` then `spec.varsFrom` (later entries win, as in tofu-controller).
/// Values read from Secrets are returned as sensitive, for redaction.
async fn resolve_vars(
    spec: &TerraformSpec,
    ns: &str,
    backend: &dyn Backend,
) -> Result<(Map<String, Value>, Vec<String>), String> {
    let mut vars = Map::new();
    let mut sensitive = Vec::new();
    // A value read from a Secret/ConfigMap is a string; JSON lists and maps are taken as such,
    // so list(string) and map variables can come from data too.
    let parse = |bytes: &[u8]| -> Value {
        let s = String::from_utf8_lossy(bytes).into_owned();
        match serde_json::from_str::<Value>(&s) {
            Ok(v @ (Value::Array(_) | Value::Object(_))) => v,
            _ => Value::String(s),
        }
    };
    let read = |kind: &'static str, name: String| async move {
        let r = ObjectRef::new("", kind, ns, &name);
        match backend.get(&r).await {
            Ok(Some(o)) => object_data(&o).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("failed to get {kind} '{ns}/{name}': {e}")),
        }
    };
    for v in &spec.vars {
        if let Some(value) = &v.value {
            vars.insert(v.name.clone(), value.clone());
            continue;
        }
        let Some(from) = &v.value_from else {
            return Err(format!(
                "spec.vars: '{}' has neither value nor valueFrom",
                v.name
            ));
        };
        let (kind, sel) = if let Some(s) = from.get("secretKeyRef") {
            ("Secret", s)
        } else if let Some(s) = from.get("configMapKeyRef") {
            ("ConfigMap", s)
        } else {
            return Err(format!(
                "spec.vars: '{}': valueFrom needs secretKeyRef or configMapKeyRef",
                v.name
            ));
        };
        let name = sel
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let key = sel
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let optional = sel
            .get("optional")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let data = read(kind, name.clone()).await?;
        match data.as_ref().and_then(|d| d.get(&key)) {
            Some(bytes) => {
                if kind == "Secret" {
                    sensitive.push(String::from_utf8_lossy(bytes).into_owned());
                }
                vars.insert(v.name.clone(), parse(bytes));
            }
            None if optional => {}
            None => {
                return Err(format!(
                    "spec.vars: '{}': key '{key}' not found in {kind} '{ns}/{name}'",
                    v.name
                ))
            }
        }
    }
    for from in &spec.vars_from {
        let kind = match from.kind.as_str() {
            "Secret" => "Secret",
            "ConfigMap" => "ConfigMap",
            other => {
                return Err(format!(
                    "spec.varsFrom: unsupported kind '{other}' (Secret, ConfigMap)"
                ))
            }
        };
        let Some(data) = read(kind, from.name.clone()).await? else {
            if from.optional {
                continue;
            }
            return Err(format!(
                "spec.varsFrom: {kind} '{ns}/{}' not found",
                from.name
            ));
        };
        // varsKeys: all keys, or the named ones (`key` or `key:variable`).
        let selected: Vec<(String, String)> = if from.vars_keys.is_empty() {
            data.keys().map(|k| (k.clone(), k.clone())).collect()
        } else {
            from.vars_keys
                .iter()
                .map(|k| match k.split_once(':') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => (k.clone(), k.clone()),
                })
                .collect()
        };
        for (key, var) in selected {
            match data.get(&key) {
                Some(bytes) => {
                    if kind == "Secret" {
                        sensitive.push(String::from_utf8_lossy(bytes).into_owned());
                    }
                    vars.insert(var, parse(bytes));
                }
                None if from.optional => {}
                None => {
                    return Err(format!(
                        "spec.varsFrom: key '{key}' not found in {kind} '{ns}/{}'",
                        from.name
                    ))
                }
            }
        }
    }
    Ok((vars, sensitive))
}

impl<R: PlanRunner> TerraformReconciler<R> {
    /// The source artifact, unpacked, and its revision.
    async fn artifact(
        &self,
        obj: &Object,
        spec: &TerraformSpec,
        backend: &dyn Backend,
    ) -> Result<(PathBuf, String), Outcome> {
        let ns = obj.namespace().unwrap_or_default().to_string();
        let status = Status::from_value(obj.status());
        let Some(src_ref) = source_ref(&ns, &spec.source_ref)
            .filter(|r| r.kind == "GitRepository" || r.kind == "OCIRepository")
        else {
            return Err(Outcome::failed(
                obj,
                status,
                reason::INVALID_SPEC,
                format!(
                    "spec.sourceRef.kind: unsupported source kind '{}' (GitRepository, OCIRepository)",
                    spec.source_ref.kind
                ),
                true,
            ));
        };
        let source = match backend.get(&src_ref).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Outcome::waiting(
                    obj,
                    status,
                    tf_reason::ARTIFACT_FAILED,
                    format!("Source '{src_ref}' not found"),
                ))
            }
            Err(e) => {
                return Err(Outcome::failed(
                    obj,
                    status,
                    tf_reason::ARTIFACT_FAILED,
                    e.to_string(),
                    false,
                ))
            }
        };
        let Some(artifact) = Status::from_value(source.status()).artifact else {
            return Err(Outcome::waiting(
                obj,
                status,
                tf_reason::ARTIFACT_FAILED,
                format!("Source artifact not found for '{src_ref}', waiting for it to be stored"),
            ));
        };
        let revision = artifact.revision.clone();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.unpacked(&artifact)).await {
            Ok(Ok(d)) => Ok((d, revision)),
            Ok(Err(e)) => Err(Outcome::failed(
                obj,
                status,
                tf_reason::ARTIFACT_FAILED,
                e.to_string(),
                false,
            )),
            Err(e) => Err(Outcome::failed(
                obj,
                status,
                tf_reason::ARTIFACT_FAILED,
                e.to_string(),
                false,
            )),
        }
    }

    async fn load_plan(&self, run: &Run<'_>) -> Result<Option<StoredPlan>, String> {
        let r = ObjectRef::new("", "Secret", &run.ns, &run.plan_name());
        let Some(o) = run.backend.get(&r).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let data = object_data(&o)?;
        let (Some(file), Some(js)) = (data.get("tfplan"), data.get("tfplan.json")) else {
            return Ok(None);
        };
        let json: Value =
            serde_json::from_slice(&gunzip(js)?).map_err(|e| format!("tfplan.json: {e}"))?;
        Ok(Some(StoredPlan {
            id: o
                .annotation(PLAN_ID_ANNOTATION)
                .unwrap_or_default()
                .to_string(),
            revision: o
                .annotation(REVISION_ANNOTATION)
                .unwrap_or_default()
                .to_string(),
            destroy: o.annotation(DESTROY_ANNOTATION) == Some("true"),
            plan: Plan {
                file: gunzip(file)?,
                json,
                human: String::new(),
            },
        }))
    }

    /// Stores the plan (and its readable form when asked) so it can be applied and read later.
    async fn save_plan(&self, run: &Run<'_>, id: &str, plan: &Plan) -> Result<(), String> {
        let json_bytes = serde_json::to_vec(&plan.json).map_err(|e| e.to_string())?;
        let mut data = BTreeMap::new();
        data.insert("tfplan".to_string(), gzip(&plan.file));
        data.insert("tfplan.json".to_string(), gzip(&json_bytes));
        let mut o = data_object("Secret", &run.ns, &run.plan_name(), &data);
        o.set_annotation(PLAN_ID_ANNOTATION, id);
        o.set_annotation(REVISION_ANNOTATION, &run.revision);
        o.set_annotation(
            DESTROY_ANNOTATION,
            if run.spec.destroy { "true" } else { "false" },
        );
        o.set_label("infra.contrib.fluxcd.io/terraform", &run.me.name);
        run.backend
            .apply(&o, &ApplyOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let readable = match run.spec.store_readable_plan.as_deref().unwrap_or("none") {
            "human" => Some((
                "ConfigMap",
                run.plan_name(),
                run.redact(&plan.human).into_bytes(),
            )),
            "json" => Some(("Secret", format!("{}.json", run.plan_name()), json_bytes)),
            _ => None,
        };
        if let Some((kind, name, bytes)) = readable {
            let mut o = data_object(
                kind,
                &run.ns,
                &name,
                &BTreeMap::from([("tfplan".to_string(), bytes)]),
            );
            o.set_annotation(PLAN_ID_ANNOTATION, id);
            run.backend
                .apply(&o, &ApplyOptions::default())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Writes `status.availableOutputs` and the outputs Secret when asked.
    async fn write_outputs(&self, run: &mut Run<'_>, outputs: &Outputs) {
        run.status.extra.insert(
            "availableOutputs".into(),
            json!(outputs.keys().collect::<Vec<_>>()),
        );
        let Some(w) = &run.spec.write_outputs_to_secret else {
            return;
        };
        let mut data = BTreeMap::new();
        let mut missing = Vec::new();
        // `outputs: [name]` or `[name:key]` to rename; all outputs when empty.
        let selected: Vec<(String, String)> = if w.outputs.is_empty() {
            outputs.keys().map(|k| (k.clone(), k.clone())).collect()
        } else {
            w.outputs
                .iter()
                .map(|o| match o.split_once(':') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => (o.clone(), o.clone()),
                })
                .collect()
        };
        for (name, key) in selected {
            match outputs.get(&name) {
                Some(v) => {
                    let bytes = match &v.value {
                        Value::String(s) => s.clone().into_bytes(),
                        other => other.to_string().into_bytes(),
                    };
                    data.insert(key, bytes);
                }
                None => missing.push(name),
            }
        }
        let mut o = data_object("Secret", &run.ns, &w.name, &data);
        for (k, v) in &w.labels {
            o.set_label(k, v);
        }
        for (k, v) in &w.annotations {
            o.set_annotation(k, v);
        }
        o.set_label("infra.contrib.fluxcd.io/terraform", &run.me.name);
        match run.backend.apply(&o, &ApplyOptions::default()).await {
            Err(e) => {
                let msg = format!("writing outputs to Secret '{}/{}': {e}", run.ns, w.name);
                run.set(
                    OUTPUT,
                    ConditionStatus::False,
                    tf_reason::OUTPUTS_WRITING_FAILED,
                    msg.clone(),
                );
                run.event(Severity::Error, tf_reason::OUTPUTS_WRITING_FAILED, msg);
            }
            Ok(_) if !missing.is_empty() => {
                let msg = format!(
                    "Outputs written to Secret '{}', but not found: {}",
                    w.name,
                    missing.join(", ")
                );
                run.set(
                    OUTPUT,
                    ConditionStatus::False,
                    tf_reason::OUTPUTS_WRITING_FAILED,
                    msg,
                );
            }
            Ok(_) => {
                let msg = format!("Outputs written: {}", run.revision);
                run.set(
                    OUTPUT,
                    ConditionStatus::True,
                    tf_reason::OUTPUTS_WRITTEN,
                    msg,
                );
            }
        }
    }

    /// Applies `plan` (whose id is `id`) and finishes the reconcile.
    async fn apply(
        &self,
        mut run: Run<'_>,
        req: &PlanRequest<'_>,
        plan: &Plan,
        id: &str,
        drift: bool,
    ) -> Outcome {
        let summary = plan.summary();
        let mut ps = PlanStatus::read(&run.status);
        let destroy = run.spec.destroy;
        match self.runner.apply(req, plan).await {
            Ok(outputs) => {
                ps.pending.clear();
                ps.last_applied = id.to_string();
                ps.is_destroy_plan = destroy;
                ps.is_drift_detection_plan = drift;
                ps.write(&mut run.status);
                run.status.last_applied_revision = run.revision.clone();
                let (why, what) = if destroy {
                    (tf_reason::DESTROY_SUCCEEDED, "Destroyed")
                } else {
                    (tf_reason::APPLY_SUCCEEDED, "Applied")
                };
                run.set(
                    APPLY,
                    ConditionStatus::True,
                    why,
                    format!("{what} successfully: plan {id}"),
                );
                if drift {
                    run.set(
                        DRIFT_DETECTED,
                        ConditionStatus::False,
                        tf_reason::NO_DRIFT,
                        format!("Drift corrected by applying plan {id}"),
                    );
                }
                self.write_outputs(&mut run, &outputs).await;
                let msg = format!("{what} plan {id}: {summary}");
                run.event(Severity::Info, why, msg);
                let rev = run.revision.clone();
                run.ready(why, format!("{what} successfully: {rev}"))
            }
            Err(e) => {
                // The saved plan is spent or stale either way: re-plan on the next run.
                ps.pending.clear();
                ps.write(&mut run.status);
                let why = if destroy {
                    tf_reason::DESTROY_FAILED
                } else {
                    tf_reason::APPLY_FAILED
                };
                let msg = format!("{}: applying plan {id}: {e}", run.me);
                let msg = run.redact(&msg);
                run.set(APPLY, ConditionStatus::False, why, msg.clone());
                run.fail(why, msg)
            }
        }
    }
}

#[async_trait]
impl<R: PlanRunner> Reconciler for TerraformReconciler<R> {
    // The Reconciler trait now returns a GroupKind, so custom controllers can serve their
    // own kinds; Flux's kinds convert with `.into()`.
    fn kind(&self) -> crate::object::GroupKind {
        FluxKind::Terraform.into()
    }

    fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError> {
        let tf: Terraform = from_object(obj)?;
        let interval = tf.spec.interval.duration().max(Duration::from_secs(1));
        let ns = tf.namespace().to_string();
        Ok(Schedule {
            interval,
            retry_interval: tf
                .spec
                .retry_interval
                .as_ref()
                .map(|d| d.duration())
                .unwrap_or(DEFAULT_RETRY),
            timeout: self.timeout,
            suspend: tf.spec.suspend,
            depends_on: tf
                .spec
                .depends_on
                .iter()
                .map(|d| FluxKind::Terraform.ref_to(d.namespace.as_deref().unwrap_or(&ns), &d.name))
                .collect(),
            watches: source_ref(&ns, &tf.spec.source_ref).into_iter().collect(),
        })
    }

    async fn reconcile(&self, obj: &Object, backend: &dyn Backend) -> Outcome {
        let tf: Terraform = match from_object(obj) {
            Ok(t) => t,
            Err(e) => return super::invalid_spec(obj, &e),
        };
        let spec = &tf.spec;
        let (dir, revision) = match self.artifact(obj, spec, backend).await {
            Ok(x) => x,
            Err(out) => return out,
        };
        let ns = obj.namespace().unwrap_or_default().to_string();
        let mut status = Status::from_value(obj.status());
        status.last_attempted_revision = revision.clone();
        status.observed_generation = obj.generation();
        let mut run = Run {
            obj,
            spec,
            me: obj.object_ref(),
            ns: ns.clone(),
            ws: spec
                .workspace
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "default".into()),
            revision: revision.clone(),
            status,
            events: Vec::new(),
            sensitive: Vec::new(),
            backend,
            interval: spec.interval.duration().max(Duration::from_secs(1)),
        };
        let (vars, sensitive) = match resolve_vars(spec, &ns, backend).await {
            Ok(v) => v,
            Err(msg) => {
                let msg = format!("{}: {msg}", run.me);
                return run.fail(tf_reason::VARS_GENERATION_FAILED, msg);
            }
        };
        run.sensitive = sensitive.clone();
        let bc = spec.backend_config.as_ref();
        let custom = bc
            .and_then(|b| b.custom_configuration.as_deref())
            .filter(|c| !c.trim().is_empty());
        let suffix = bc
            .and_then(|b| b.secret_suffix.clone())
            .unwrap_or_else(|| run.me.name.clone());
        let me = run.me.clone();
        let ws = run.ws.clone();
        let req = PlanRequest {
            object: &me,
            source_dir: &dir,
            path: spec.path.as_deref().unwrap_or("."),
            workspace: &ws,
            backend_config: custom,
            state_suffix: &suffix,
            vars: &vars,
            sensitive: &sensitive,
            destroy: spec.destroy,
            timeout: self.timeout,
            backend,
        };

        let approve = spec.approve_plan.trim().to_string();
        let manual = !approve.is_empty() && approve != "auto";
        let prev = PlanStatus::read(&run.status);
        // An approval of the pending plan applies the saved plan itself, when it still is the
        // plan for this revision. Anything else about the approval is explained after re-planning.
        let mut note = String::new();
        if manual && !spec.plan_only && approve == prev.pending {
            match self.load_plan(&run).await {
                Ok(Some(saved))
                    if saved.id == approve
                        && saved.revision == revision
                        && saved.destroy == spec.destroy =>
                {
                    let drift = prev.is_drift_detection_plan;
                    return self.apply(run, &req, &saved.plan, &approve, drift).await;
                }
                Ok(Some(saved)) if saved.id == approve && saved.revision != revision => {
                    note = format!(
                        "approved plan '{approve}' was made for revision {} but the source is now at {revision}: nothing applied. ",
                        saved.revision
                    );
                }
                Ok(_) => {
                    note = format!(
                        "approved plan '{approve}' is no longer stored or valid: nothing applied. "
                    );
                }
                Err(e) => {
                    note = format!(
                        "approved plan '{approve}' could not be read ({e}): nothing applied. "
                    );
                }
            }
        } else if manual && approve != prev.pending && !prev.pending.is_empty() {
            note = format!(
                "approvePlan '{approve}' is not the pending plan '{}': nothing applied. ",
                prev.pending
            );
        } else if manual && prev.pending.is_empty() && approve != prev.last_applied {
            note = format!("approvePlan '{approve}' names no pending plan: nothing applied. ");
        }

        let plan = match self.runner.plan(&req).await {
            Ok(p) => p,
            Err(e) => {
                let msg = run.redact(&format!("{}: {e}", run.me));
                run.set(
                    PLAN,
                    ConditionStatus::False,
                    tf_reason::PLAN_FAILED,
                    msg.clone(),
                );
                return run.fail(tf_reason::PLAN_FAILED, msg);
            }
        };
        let id = plan_id(&revision, &plan);
        run.status
            .extra
            .insert("lastPlannedRevision".into(), json!(revision));
        run.status
            .extra
            .insert("lastPlanAt".into(), json!(run.now()));
        if let Err(e) = self.save_plan(&run, &id, &plan).await {
            let msg = format!("{}: storing plan {id}: {e}", run.me);
            return run.fail(tf_reason::PLAN_FAILED, msg);
        }
        if !note.is_empty() && approve != id {
            if approve.starts_with("plan-") {
                note.push_str(&format!("The current plan is '{id}'. "));
            }
            let n = note.trim().to_string();
            run.event(Severity::Error, tf_reason::PLAN_APPROVAL_MISMATCH, n);
        } else {
            note.clear();
        }
        let mut ps = prev.clone();

        if !plan.has_changes() {
            run.set(
                PLAN,
                ConditionStatus::True,
                tf_reason::PLANNED_NO_CHANGES,
                "Plan no changes",
            );
            ps.pending.clear();
            ps.write(&mut run.status);
            if !spec.destroy {
                if !run.status.last_applied_revision.is_empty() {
                    run.set(
                        DRIFT_DETECTED,
                        ConditionStatus::False,
                        tf_reason::NO_DRIFT,
                        "No drift",
                    );
                }
                // The infrastructure is what this revision describes.
                run.status.last_applied_revision = revision.clone();
            }
            match self.runner.outputs(&req).await {
                Ok(outputs) => self.write_outputs(&mut run, &outputs).await,
                Err(e) => {
                    let msg = run.redact(&format!("{}: {e}", run.me));
                    run.set(
                        OUTPUT,
                        ConditionStatus::False,
                        tf_reason::OUTPUT_FAILED,
                        msg,
                    );
                }
            }
            return run.ready(
                tf_reason::PLANNED_NO_CHANGES,
                format!("{note}Plan no changes: {revision}"),
            );
        }

        let changes = plan.resource_changes();
        let summary = plan.summary();
        let drift = !spec.destroy
            && !spec.disable_drift_detection
            && run.status.last_applied_revision == revision;
        if drift {
            let what: Vec<String> = changes
                .iter()
                .map(|c| format!("{} ({})", c.address, c.actions.join("/")))
                .collect();
            let outs = plan.output_changes();
            let mut msg = format!("Drift detected at {revision}: {}", what.join(", "));
            if !outs.is_empty() {
                msg.push_str(&format!("; outputs: {}", outs.join(", ")));
            }
            run.status
                .extra
                .insert("lastDriftDetectedAt".into(), json!(run.now()));
            run.set(
                DRIFT_DETECTED,
                ConditionStatus::True,
                tf_reason::DRIFT_DETECTED,
                msg.clone(),
            );
            run.event(Severity::Error, tf_reason::DRIFT_DETECTED, msg);
        }
        run.set(
            PLAN,
            ConditionStatus::True,
            tf_reason::PLANNED_WITH_CHANGES,
            format!("Plan generated: {id}: {summary}"),
        );

        if spec.plan_only {
            ps.pending.clear();
            ps.write(&mut run.status);
            return run.ready(
                tf_reason::PLANNED_WITH_CHANGES,
                format!("{note}Plan generated: This object is in the plan only mode."),
            );
        }
        if approve == "auto" || approve == id {
            return self.apply(run, &req, &plan, &id, drift).await;
        }

        // Wait for a human: keep the plan, say which value approves it.
        let is_new = ps.pending != id;
        ps.pending = id.clone();
        ps.is_destroy_plan = spec.destroy;
        ps.is_drift_detection_plan = drift;
        ps.write(&mut run.status);
        let message =
            format!("{note}Plan generated: set approvePlan: \"{id}\" to approve this plan.");
        if is_new {
            run.event(
                Severity::Info,
                tf_reason::PLANNED_WITH_CHANGES,
                format!("Plan {id} generated: {summary}; set approvePlan: \"{id}\" to apply it"),
            );
        }
        let now = run.now();
        let interval = run.interval;
        run.status.mark_failed(
            tf_reason::PLANNED_WITH_CHANGES,
            message,
            false,
            obj.generation(),
            &now,
        );
        // The run itself concluded: the verdict is Ready (no retry backoff, no error), while the
        // Ready condition stays False so dependents wait. It re-plans at the interval, and at
        // once when the spec (approvePlan) or the source changes.
        let mut out = Outcome::new(Verdict::Ready, run.status);
        out.events = run.events;
        out.requeue_after = Some(interval);
        out
    }

    async fn finalize(&self, obj: &Object, backend: &dyn Backend) -> Vec<Event> {
        let Ok(tf) = from_object::<Terraform>(obj) else {
            return Vec::new();
        };
        let me = obj.object_ref();
        let ns = tf.namespace().to_string();
        let ws = tf
            .spec
            .workspace
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "default".into());
        let mut events = Vec::new();
        if tf.spec.destroy_resources_on_deletion {
            let destroyed = async {
                let (dir, _rev) = self.artifact(obj, &tf.spec, backend).await.map_err(|o| {
                    o.status
                        .condition(crate::status::READY)
                        .map(|c| c.message.clone())
                        .unwrap_or_default()
                })?;
                let (vars, sensitive) = resolve_vars(&tf.spec, &ns, backend).await?;
                let bc = tf.spec.backend_config.as_ref();
                let custom = bc
                    .and_then(|b| b.custom_configuration.as_deref())
                    .filter(|c| !c.trim().is_empty());
                let suffix = bc
                    .and_then(|b| b.secret_suffix.clone())
                    .unwrap_or_else(|| me.name.clone());
                let req = PlanRequest {
                    object: &me,
                    source_dir: &dir,
                    path: tf.spec.path.as_deref().unwrap_or("."),
                    workspace: &ws,
                    backend_config: custom,
                    state_suffix: &suffix,
                    vars: &vars,
                    sensitive: &sensitive,
                    destroy: true,
                    timeout: self.timeout,
                    backend,
                };
                self.runner
                    .destroy(&req)
                    .await
                    .map_err(|e: PlanError| redact(&e.to_string(), &sensitive))
            }
            .await;
            match destroyed {
                Ok(()) => events.push(Event::new(
                    me.clone(),
                    Severity::Info,
                    tf_reason::DESTROY_SUCCEEDED,
                    "Destroyed the resources of the deleted object",
                )),
                Err(msg) => {
                    // Keep the plan and output Secrets: the resources still exist.
                    events.push(Event::new(
                        me.clone(),
                        Severity::Error,
                        tf_reason::DESTROY_FAILED,
                        format!("{me}: destroying resources on deletion: {msg}"),
                    ));
                    return events;
                }
            }
        }
        // What trueup wrote for this object goes with it; the state stays (it is the record of
        // what exists, and is empty after a destroy).
        let plan_name = format!("tfplan-{ws}-{}", me.name);
        let mut gone = vec![
            ObjectRef::new("", "Secret", &ns, &plan_name),
            ObjectRef::new("", "Secret", &ns, &format!("{plan_name}.json")),
            ObjectRef::new("", "ConfigMap", &ns, &plan_name),
        ];
        if let Some(w) = &tf.spec.write_outputs_to_secret {
            gone.push(ObjectRef::new("", "Secret", &ns, &w.name));
        }
        for r in gone {
            if let Err(e) = backend.delete(&r).await {
                events.push(Event::new(
                    me.clone(),
                    Severity::Error,
                    "CleanupFailed",
                    format!("deleting {r}: {e}"),
                ));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    //! The approval logic against a fake runner: a "cloud" of named values. The source's
    //! `<path>/desired.json` says what should exist; plans diff it against the state; a saved plan
    //! records the state it was made from, and applying it on another state fails as stale, as the
    //! CLI does.
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::traits::plan::OutputValue;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeRunner {
        state: Mutex<BTreeMap<String, String>>,
        applies: Mutex<usize>,
        fail_plan: Mutex<Option<String>>,
    }

    impl FakeRunner {
        fn desired(req: &PlanRequest<'_>) -> BTreeMap<String, String> {
            let text = std::fs::read_to_string(req.source_dir.join(req.path).join("desired.json"))
                .unwrap_or_default();
            serde_json::from_str(&text).unwrap_or_default()
        }
    }

    #[async_trait]
    impl PlanRunner for FakeRunner {
        async fn plan(&self, req: &PlanRequest<'_>) -> Result<Plan, PlanError> {
            if let Some(msg) = self.fail_plan.lock().unwrap().clone() {
                return Err(PlanError::new("fake plan", msg));
            }
            let state = self.state.lock().unwrap().clone();
            let desired = if req.destroy {
                BTreeMap::new()
            } else {
                Self::desired(req)
            };
            let mut changes = Vec::new();
            for k in state
                .keys()
                .chain(desired.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                let action = match (state.get(k), desired.get(k)) {
                    (None, Some(_)) => "create",
                    (Some(_), None) => "delete",
                    (Some(a), Some(b)) if a != b => "update",
                    _ => "no-op",
                };
                changes.push(
                    json!({"address": k, "change": {"actions": [action], "after": desired.get(k)}}),
                );
            }
            let file = serde_json::to_vec(&json!({"from": state, "to": desired})).unwrap();
            Ok(Plan {
                file,
                json: json!({"resource_changes": changes, "output_changes": {}}),
                human: "fake".into(),
            })
        }

        async fn apply(&self, _req: &PlanRequest<'_>, plan: &Plan) -> Result<Outputs, PlanError> {
            let saved: Value = serde_json::from_slice(&plan.file).unwrap();
            let from: BTreeMap<String, String> =
                serde_json::from_value(saved["from"].clone()).unwrap();
            let to: BTreeMap<String, String> = serde_json::from_value(saved["to"].clone()).unwrap();
            let mut state = self.state.lock().unwrap();
            if *state != from {
                return Err(PlanError::new("fake apply", "Saved plan is stale"));
            }
            *state = to;
            *self.applies.lock().unwrap() += 1;
            Ok(state
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        OutputValue {
                            value: json!(v),
                            sensitive: false,
                        },
                    )
                })
                .collect())
        }

        async fn outputs(&self, _req: &PlanRequest<'_>) -> Result<Outputs, PlanError> {
            let state = self.state.lock().unwrap();
            Ok(state
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        OutputValue {
                            value: json!(v),
                            sensitive: false,
                        },
                    )
                })
                .collect())
        }
    }

    struct Fixture {
        backend: MemoryBackend,
        rec: TerraformReconciler<std::sync::Arc<FakeRunner>>,
        fake: std::sync::Arc<FakeRunner>,
        store: ArtifactStore,
        _dirs: Vec<tempfile::TempDir>,
    }

    #[async_trait]
    impl<T: PlanRunner + ?Sized> PlanRunner for std::sync::Arc<T> {
        async fn plan(&self, req: &PlanRequest<'_>) -> Result<Plan, PlanError> {
            (**self).plan(req).await
        }
        async fn apply(&self, req: &PlanRequest<'_>, plan: &Plan) -> Result<Outputs, PlanError> {
            (**self).apply(req, plan).await
        }
        async fn outputs(&self, req: &PlanRequest<'_>) -> Result<Outputs, PlanError> {
            (**self).outputs(req).await
        }
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = ArtifactStore::new(dir.path()).unwrap();
            let fake = std::sync::Arc::new(FakeRunner::default());
            Fixture {
                backend: MemoryBackend::new(),
                rec: TerraformReconciler::new(fake.clone(), store.clone()),
                fake,
                store,
                _dirs: vec![dir],
            }
        }

        async fn publish(&mut self, desired: Value, sha: &str) -> String {
            let src = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(src.path().join("tf")).unwrap();
            std::fs::write(src.path().join("tf/desired.json"), desired.to_string()).unwrap();
            let rev = format!("main@sha1:{sha}");
            let owner = ObjectRef::new("source.toolkit.fluxcd.io", "GitRepository", "ns", "repo");
            let a = self
                .store
                .archive_dir(&owner, src.path(), &rev, &crate::storage::keep_all)
                .unwrap();
            let repo = Object::from_value(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                "metadata": {"name": "repo", "namespace": "ns"}, "spec": {"interval": "1m", "url": "file:///x"}}))
            .unwrap();
            self.backend
                .apply(&repo, &ApplyOptions::default())
                .await
                .unwrap();
            let st = Status {
                artifact: Some(a),
                ..Default::default()
            };
            self.backend
                .update_status(&owner, &st.to_value())
                .await
                .unwrap();
            self._dirs.push(src);
            rev
        }

        async fn set(&self, approve: &str, extra: Value) {
            let mut spec = json!({"interval": "5m", "approvePlan": approve, "path": "tf",
                "sourceRef": {"kind": "GitRepository", "name": "repo"}});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().cloned().unwrap_or_default());
            let o = Object::from_value(
                json!({"apiVersion": "infra.contrib.fluxcd.io/v1alpha2", "kind": "Terraform",
                "metadata": {"name": "t", "namespace": "ns"}, "spec": spec}),
            )
            .unwrap();
            self.backend
                .apply(&o, &ApplyOptions::default())
                .await
                .unwrap();
        }

        async fn run(&self) -> Outcome {
            let r = ObjectRef::new("infra.contrib.fluxcd.io", "Terraform", "ns", "t");
            let obj = self.backend.get(&r).await.unwrap().unwrap();
            let out = self.rec.reconcile(&obj, &self.backend).await;
            self.backend
                .update_status(&r, &out.status.to_value())
                .await
                .unwrap();
            out
        }

        fn applies(&self) -> usize {
            *self.fake.applies.lock().unwrap()
        }
    }

    fn pending(out: &Outcome) -> String {
        PlanStatus::read(&out.status).pending
    }

    #[tokio::test]
    async fn approval_binds_to_the_reviewed_plan() {
        let mut f = Fixture::new();
        f.publish(json!({"a": "1"}), "1111111111aaaa").await;
        f.set("", json!({})).await;
        let out = f.run().await;
        let id = pending(&out);
        assert!(id.starts_with("plan-main-1111111111-"), "{id}");
        assert_eq!(out.requeue_after, Some(Duration::from_secs(300)));
        assert_eq!(out.verdict, Verdict::Ready);
        assert!(!out.status.is_ready());
        assert_eq!(f.applies(), 0);

        // Stable across re-plans.
        assert_eq!(pending(&f.run().await), id);

        // A wrong id applies nothing and says so.
        f.set("plan-main-1111111111-deadbeef", json!({})).await;
        let out = f.run().await;
        assert_eq!(f.applies(), 0);
        let msg = &out.status.condition("Ready").unwrap().message;
        assert!(
            msg.contains("is not the pending plan") && msg.contains(&id),
            "{msg}"
        );

        // Drift of the state between plan and approval: the approved plan is stale, nothing
        // changes, and the next plan gets a new id.
        f.fake.state.lock().unwrap().insert("b".into(), "x".into());
        f.set(&id, json!({})).await;
        let out = f.run().await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: false });
        assert_eq!(
            out.status.condition(APPLY).unwrap().reason,
            tf_reason::APPLY_FAILED
        );
        assert_eq!(f.applies(), 0);
        let out = f.run().await;
        let id2 = pending(&out);
        assert_ne!(id2, id);
        f.set(&id2, json!({})).await;
        let out = f.run().await;
        assert!(out.status.is_ready(), "{:?}", out.status.condition("Ready"));
        assert_eq!(f.applies(), 1);
        assert_eq!(
            *f.fake.state.lock().unwrap(),
            BTreeMap::from([("a".to_string(), "1".to_string())])
        );
    }

    #[tokio::test]
    async fn plan_only_never_applies_and_failures_name_the_step_without_secrets() {
        let mut f = Fixture::new();
        f.publish(json!({"a": "1"}), "2222222222bbbb").await;
        f.set("auto", json!({"planOnly": true})).await;
        let out = f.run().await;
        assert_eq!(f.applies(), 0);
        assert!(out
            .status
            .condition("Ready")
            .unwrap()
            .message
            .contains("plan only mode"));
        assert!(pending(&out).is_empty());

        let secret = Object::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns"}, "stringData": {"pw": "topsecret"}}))
        .unwrap();
        f.backend
            .apply(&secret, &ApplyOptions::default())
            .await
            .unwrap();
        *f.fake.fail_plan.lock().unwrap() = Some("Error: bad value topsecret".into());
        f.set(
            "auto",
            json!({"varsFrom": [{"kind": "Secret", "name": "s"}]}),
        )
        .await;
        let out = f.run().await;
        let ready = out.status.condition("Ready").unwrap();
        assert_eq!(ready.reason, tf_reason::PLAN_FAILED);
        assert!(
            ready.message.contains("Terraform/ns/t") || ready.message.contains("ns/t"),
            "{}",
            ready.message
        );
        assert!(
            ready.message.contains("fake plan: Error: bad value ***"),
            "{}",
            ready.message
        );
        assert!(out.events.iter().all(|e| !e.message.contains("topsecret")));

        // Missing varsFrom: a clear VarsGenerationFailed.
        f.set(
            "auto",
            json!({"varsFrom": [{"kind": "Secret", "name": "missing"}]}),
        )
        .await;
        let out = f.run().await;
        assert_eq!(
            out.status.condition("Ready").unwrap().reason,
            tf_reason::VARS_GENERATION_FAILED
        );
    }

    #[tokio::test]
    async fn auto_applies_writes_outputs_and_destroys_on_deletion() {
        let mut f = Fixture::new();
        let rev = f
            .publish(json!({"a": "1", "b": "[1,2]"}), "3333333333cccc")
            .await;
        f.set(
            "auto",
            json!({"writeOutputsToSecret": {"name": "outs", "outputs": ["a:alpha"]},
                             "destroyResourcesOnDeletion": true}),
        )
        .await;
        let out = f.run().await;
        assert!(out.status.is_ready());
        assert_eq!(out.status.last_applied_revision, rev);
        assert_eq!(out.status.extra["availableOutputs"], json!(["a", "b"]));
        let s = f
            .backend
            .get(&ObjectRef::new("", "Secret", "ns", "outs"))
            .await
            .unwrap()
            .unwrap();
        let data = object_data(&s).unwrap();
        assert_eq!(data.get("alpha").map(Vec::as_slice), Some(&b"1"[..]));
        assert!(!data.contains_key("b"));
        let r = ObjectRef::new("infra.contrib.fluxcd.io", "Terraform", "ns", "t");
        let obj = f.backend.get(&r).await.unwrap().unwrap();
        let events = f.rec.finalize(&obj, &f.backend).await;
        assert!(
            events
                .iter()
                .any(|e| e.reason == tf_reason::DESTROY_SUCCEEDED),
            "{events:?}"
        );
        assert!(f.fake.state.lock().unwrap().is_empty());
        assert!(f
            .backend
            .get(&ObjectRef::new("", "Secret", "ns", "outs"))
            .await
            .unwrap()
            .is_none());
    }
}
