//! `helm template` as a library call: [`template`] takes the same inputs as
//! `helm template RELEASE CHART [-n NS] [-f VALUES]... [--set k=v]...
//! [--set-string k=v]... [--kube-version V] [--api-versions G/V]...
//! [--include-crds]` and returns exactly what helm prints on stdout, or an
//! error whose text is what helm prints after `Error: `.

use crate::chart::{format_output, prepare, render_release, ChartOptions};
use crate::value::Value;
use crate::{strvals, yaml, Error};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The arguments of `helm template`.
#[derive(Debug, Clone, Default)]
pub struct TemplateOptions {
    /// RELEASE (`.Release.Name`).
    pub release_name: String,
    /// CHART: a chart directory or a packaged `.tgz`.
    pub chart: PathBuf,
    /// `-n/--namespace` (Helm's default: `default`).
    pub namespace: Option<String>,
    /// `-f/--values`, merged in order (later files win).
    pub values_files: Vec<PathBuf>,
    /// `--set`, applied after the files, in order.
    pub set: Vec<String>,
    /// `--set-string`, applied after `--set`, in order.
    pub set_string: Vec<String>,
    /// `--kube-version` (`.Capabilities.KubeVersion`; default v1.37.0).
    pub kube_version: Option<String>,
    /// `--api-versions`, added to `.Capabilities.APIVersions`.
    pub api_versions: Vec<String>,
    /// `--include-crds`: print the crds/ files first.
    pub include_crds: bool,
}

/// Merges `src` over `dst` like Helm's `mergeMaps` (maps merge recursively,
/// anything else replaces).
fn merge_maps(dst: &Value, src: &Value) -> Value {
    match (dst, src) {
        (Value::Map(d), Value::Map(s)) => {
            let mut out: BTreeMap<String, Value> = d.borrow().clone();
            for (k, v) in s.borrow().iter() {
                let merged = match (out.get(k), v) {
                    (Some(dv @ Value::Map(_)), Value::Map(_)) => merge_maps(dv, v),
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::map(out)
        }
        (_, s) => s.clone(),
    }
}

/// The user-supplied values: `-f` files, then `--set`, then `--set-string`
/// (Helm's `values.Options.MergeValues`).
pub fn user_values(opts: &TemplateOptions) -> Result<Value, Error> {
    let mut base = Value::empty_map();
    for f in &opts.values_files {
        let text = std::fs::read_to_string(f).map_err(|_| {
            Error::Other(format!("open {}: no such file or directory", f.display()))
        })?;
        let v = yaml::from_yaml_str_go(&text).map_err(|e| {
            Error::Other(format!(
                "failed to parse {}: cannot unmarshal yaml document: error converting YAML to JSON: {e}",
                f.display()
            ))
        })?;
        let v = match v {
            Value::Nil => Value::empty_map(),
            v @ Value::Map(_) => v,
            _ => {
                return Err(Error::Other(format!(
                    "failed to parse {}: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal array into Go value of type map[string]interface {{}}",
                    f.display()
                )))
            }
        };
        base = merge_maps(&base, &v);
    }
    for s in &opts.set {
        base = strvals::parse_into(s, &base, false)
            .map_err(|e| Error::Other(format!("failed parsing --set data: {}", e.0)))?;
    }
    for s in &opts.set_string {
        base = strvals::parse_into(s, &base, true)
            .map_err(|e| Error::Other(format!("failed parsing --set-string data: {}", e.0)))?;
    }
    Ok(base)
}

/// Runs `helm template` in-process. On error, the returned [`Error`]'s
/// `Display` is Helm's message (print it as `Error: {e}` on stderr and exit
/// 1, like helm).
pub fn template(opts: &TemplateOptions) -> Result<String, Error> {
    let values = user_values(opts)?;
    let kube_version = match &opts.kube_version {
        Some(v) => normalize_kube_version(v)?,
        None => "v1.37.0".to_string(),
    };
    let copts = ChartOptions {
        release_name: opts.release_name.clone(),
        namespace: opts
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        kube_version,
        api_versions: opts.api_versions.clone(),
        ..ChartOptions::default()
    };
    validate_release_name(&copts.release_name)?;
    let run = || -> Result<String, Error> {
        let (chart, values) = prepare(&opts.chart, &values)?;
        if let Some(Value::String(kv)) = chart.metadata.get("kubeVersion") {
            // Helm checks against the version's printed form (numbers only).
            let printed = crate::chart::kube_version_components(&copts.kube_version)
                .map(|c| {
                    let c: Vec<String> = c.iter().map(u64::to_string).collect();
                    format!("v{}", c.join("."))
                })
                .unwrap_or_else(|_| copts.kube_version.clone());
            check_kube_version(kv, &printed, &chart.name)?;
        }
        crate::schema::validate_chart(&chart, &values)?;
        // Helm has created the release by now: its render errors get a hint.
        let rel = render_release(&chart, &values, &copts).map_err(|e| {
            let m = match e {
                Error::Other(m) => m,
                other => other.helm_message(),
            };
            Error::Other(format!(
                "{m}\n\nUse --debug flag to render out invalid YAML"
            ))
        })?;
        let crds: &[(String, String)] = if opts.include_crds { &rel.crds } else { &[] };
        Ok(format_output(crds, &rel.files))
    };
    run().map_err(|e| match e {
        Error::Other(m) => Error::Other(m),
        other => Error::Other(other.helm_message()),
    })
}

/// Helm's release name rule (DNS-1123 subdomain, at most 53 chars).
fn validate_release_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 53
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "release name {name:?}: invalid release name, must match regex ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ and the length must not be longer than 53"
        )))
    }
}

/// `--kube-version 1.30` → `v1.30`: Helm keeps the version as given, after
/// checking it the way Kubernetes' `ParseGeneric` does.
fn normalize_kube_version(v: &str) -> Result<String, Error> {
    crate::chart::kube_version_components(v)
        .map_err(|e| Error::Other(format!("invalid kube version '{v}': {e}")))?;
    Ok(if v.starts_with('v') {
        v.to_string()
    } else {
        format!("v{v}")
    })
}

/// Chart.yaml's `kubeVersion` constraint against the target version.
fn check_kube_version(constraint: &str, kube: &str, chart: &str) -> Result<(), Error> {
    match crate::semver::semver_compare(constraint, kube) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Other(format!(
            "chart requires kubeVersion: {constraint} which is incompatible with Kubernetes {kube}"
        ))),
        Err(_) => {
            let _ = chart;
            Ok(())
        }
    }
}
