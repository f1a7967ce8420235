//! Helm's release records: the `release.Release` JSON, encoded and stored the way Helm's
//! Secrets storage driver does, so that `helm list/get/history/rollback` read what trueup wrote.
//!
//! Helm encodes a release as base64(gzip(JSON)) and puts that string in the Secret's
//! `data.release` as bytes; Kubernetes then shows Secret bytes base64-encoded, so the API value
//! is base64 of the base64 text. Objects in a trueup backend use the API form, hence the two
//! layers here.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use trueup_core::object::Object;
use trueup_core::reconcile::helmrelease::{config_digest, ReleaseInfo, TestHookStatus};

/// The Secret type Helm gives release records.
pub const SECRET_TYPE: &str = "helm.sh/release.v1";

/// Helm's `release.Release` (field names as its JSON tags).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    #[serde(default)]
    pub info: Info,
    #[serde(default)]
    pub chart: Chart,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub config: Value,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hooks: Vec<super::hooks::Hook>,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// How the objects were applied: `ssa` (server-side apply, what trueup does) or `csa`.
    /// Helm 4 reads it to pick how `helm rollback`/`upgrade` apply; Helm 3 records lack it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub apply_method: String,
}

/// The apply method trueup records: server-side apply with the field manager `helm`, as Helm 4.
pub const APPLY_METHOD_SSA: &str = "ssa";

/// Go writes empty slices and maps as `null`; read those as empty.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Helm's `release.Info`. Times are RFC 3339; Helm writes a zero time as `""`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Info {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub first_deployed: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_deployed: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deleted: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// Helm's `chart.Chart`: Chart.yaml as `metadata`, the default values, the raw templates and
/// files (Go `[]byte`, so base64 in JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    #[serde(default)]
    pub metadata: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub templates: Vec<File>,
    #[serde(default)]
    pub values: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub files: Vec<File>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub name: String,
    /// base64 of the content.
    pub data: String,
}

/// `sh.helm.release.v1.<name>.v<version>`.
pub fn secret_name(name: &str, version: i64) -> String {
    format!("sh.helm.release.v1.{name}.v{version}")
}

/// base64(gzip(JSON)): Helm's `encodeRelease`.
pub fn encode(rel: &Release) -> Result<String, String> {
    let json = serde_json::to_vec(rel).map_err(|e| format!("encoding release: {e}"))?;
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json)
        .and_then(|_| gz.finish())
        .map(|bytes| B64.encode(bytes))
        .map_err(|e| format!("compressing release: {e}"))
}

/// Helm's `decodeRelease`: base64, then gzip when the magic header is there (Helm 2 records
/// were plain JSON).
pub fn decode(text: &str) -> Result<Release, String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("release data is not base64: {e}"))?;
    let json = if bytes.starts_with(&[0x1f, 0x8b, 0x08]) {
        let mut out = Vec::new();
        GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("release data is not valid gzip: {e}"))?;
        out
    } else {
        bytes
    };
    serde_json::from_slice(&json).map_err(|e| format!("release data is not a Helm release: {e}"))
}

/// The Secret Helm's driver writes for a release (Helm 4 labels it `modifiedAt`, unix seconds).
pub fn to_secret(rel: &Release, namespace: &str, modified_at: u64) -> Result<Object, String> {
    let encoded = encode(rel)?;
    let v = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(&rel.name, rel.version),
            "namespace": namespace,
            "labels": {
                "name": rel.name,
                "owner": "helm",
                "status": rel.info.status,
                "version": rel.version.to_string(),
                "modifiedAt": modified_at.to_string(),
            },
        },
        "type": SECRET_TYPE,
        "data": {"release": B64.encode(encoded.as_bytes())},
    });
    Object::from_value(v).map_err(|e| e.to_string())
}

/// Reads a release Secret (API form: `data.release` is base64 of Helm's base64 text).
pub fn from_secret(obj: &Object) -> Result<Release, String> {
    let outer = obj
        .0
        .get("data")
        .and_then(|d| d.get("release"))
        .and_then(|r| r.as_str())
        .ok_or_else(|| format!("{}: no data.release", obj.display_name()))?;
    let inner = B64
        .decode(outer.trim())
        .map_err(|e| format!("{}: data.release is not base64: {e}", obj.display_name()))?;
    let inner = String::from_utf8(inner)
        .map_err(|_| format!("{}: data.release is not text", obj.display_name()))?;
    decode(&inner).map_err(|e| format!("{}: {e}", obj.display_name()))
}

/// The status snapshot of a record.
pub fn info_of(rel: &Release) -> ReleaseInfo {
    let meta = |k: &str| {
        rel.chart
            .metadata
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let digest = serde_json::to_vec(rel)
        .map(|b| format!("sha256:{}", hex::encode(Sha256::digest(&b))))
        .unwrap_or_default();
    let config = if rel.config.is_null() {
        json!({})
    } else {
        rel.config.clone()
    };
    ReleaseInfo {
        name: rel.name.clone(),
        namespace: rel.namespace.clone(),
        version: rel.version,
        status: rel.info.status.clone(),
        chart_name: meta("name"),
        chart_version: meta("version"),
        app_version: meta("appVersion"),
        config_digest: config_digest(&config),
        digest,
        first_deployed: rel.info.first_deployed.clone(),
        last_deployed: rel.info.last_deployed.clone(),
        deleted: rel.info.deleted.clone(),
        description: rel.info.description.clone(),
        test_hooks: {
            let tests: std::collections::BTreeMap<String, TestHookStatus> = rel
                .hooks
                .iter()
                .filter(|h| h.has_event(super::hooks::TEST) && !h.last_run.phase.is_empty())
                .map(|h| {
                    (
                        h.name.clone(),
                        TestHookStatus {
                            last_started: h.last_run.started_at.clone(),
                            last_completed: h.last_run.completed_at.clone(),
                            phase: h.last_run.phase.clone(),
                        },
                    )
                })
                .collect();
            (!tests.is_empty()).then_some(tests)
        },
        messages: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_secret_form() {
        let rel = Release {
            name: "web".into(),
            version: 2,
            namespace: "apps".into(),
            info: Info {
                status: "deployed".into(),
                ..Default::default()
            },
            config: json!({"a": 1}),
            ..Default::default()
        };
        let s = to_secret(&rel, "apps", 1).unwrap();
        assert_eq!(s.name(), "sh.helm.release.v1.web.v2");
        assert_eq!(from_secret(&s).unwrap(), rel);
        assert!(from_secret(&Object::new("v1", "Secret", Some("a"), "x")).is_err());
        assert!(decode("!!").is_err());
        // What Helm 4 writes: Go's nulls for empty lists, times with nanoseconds.
        let helm = r#"{"name":"x","info":{"first_deployed":"2026-11-24T04:45:12.673458105Z",
            "last_deployed":"2026-11-24T04:45:12.673458105Z","description":"Install complete",
            "status":"deployed","notes":"n\n"},"chart":{"metadata":{"name":"demo","version":"0.1.0"},
            "lock":null,"templates":null,"values":{},"schema":null,"files":null},
            "config":null,"hooks":null,"version":1,"namespace":"default","apply_method":"ssa"}"#;
        let r: Release = serde_json::from_str(helm).unwrap();
        assert_eq!(r.chart.files, Vec::new());
        assert_eq!(r.apply_method, "ssa");
        assert_eq!(info_of(&r).chart_version, "0.1.0");
    }
}
