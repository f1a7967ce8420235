//! The per-object record in the state folder: system metadata (uid, creationTimestamp,
//! resourceVersion, generation), the status, and hashes of the manifest it belongs to.
//!
//! The object file and its record are two files, so a crash can leave a new object file next to
//! an old record (or no record). The hashes make that detectable: when the manifest on disk does
//! not hash to what the record says, the object changed since the record was written (by a crash
//! between the two writes, or by someone editing the file), and the record is brought up to date
//! exactly as an apply of that content would have: resourceVersion + 1, and generation + 1 when
//! more than metadata changed. So a crash never loses a generation bump.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Metadata fields the backend owns; they are never stored in object files and are ignored
/// when applied.
pub const SYSTEM_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub uid: String,
    pub creation_timestamp: String,
    pub resource_version: u64,
    pub generation: i64,
    /// sha256 of the canonical manifest (the object file without system fields and status).
    pub manifest_hash: String,
    /// sha256 of the manifest without metadata: what generation counts.
    pub spec_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl Record {
    /// The record of a newly created object.
    pub fn new(manifest: &Map<String, Value>) -> Self {
        Record {
            uid: new_uid(),
            creation_timestamp: trueup_core::time::now_rfc3339(),
            resource_version: 1,
            generation: 1,
            manifest_hash: manifest_hash(manifest),
            spec_hash: spec_hash(manifest),
            status: None,
        }
    }

    /// The record after `manifest` replaced the one this record describes. Returns whether
    /// anything changed.
    pub fn advance_to(&mut self, manifest: &Map<String, Value>) -> bool {
        let mh = manifest_hash(manifest);
        if mh == self.manifest_hash {
            return false;
        }
        let sh = spec_hash(manifest);
        if sh != self.spec_hash {
            self.generation += 1;
        }
        self.resource_version += 1;
        self.manifest_hash = mh;
        self.spec_hash = sh;
        true
    }
}

/// The manifest as stored: the object without system metadata and status, keys sorted.
pub fn manifest_of(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut m = obj.clone();
    m.remove("status");
    if let Some(Value::Object(meta)) = m.get_mut("metadata") {
        for f in SYSTEM_METADATA {
            meta.remove(*f);
        }
    }
    match sorted(&Value::Object(m)) {
        Value::Object(m) => m,
        _ => unreachable!("sorted keeps the shape"),
    }
}

/// The object as returned to callers: manifest + system metadata + status.
pub fn full_object(manifest: &Map<String, Value>, rec: &Record) -> Map<String, Value> {
    let mut m = manifest.clone();
    let meta = m
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert("uid".into(), Value::String(rec.uid.clone()));
        meta.insert(
            "creationTimestamp".into(),
            Value::String(rec.creation_timestamp.clone()),
        );
        // A string, as Kubernetes makes it: clients must treat it as opaque.
        meta.insert(
            "resourceVersion".into(),
            Value::String(rec.resource_version.to_string()),
        );
        meta.insert("generation".into(), Value::from(rec.generation));
    }
    if let Some(status) = &rec.status {
        m.insert("status".into(), status.clone());
    }
    m
}

/// Recursively sorts mapping keys, so files are stable even if some crate in the build turns on
/// serde_json's `preserve_order`.
pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn hash(v: &Value) -> String {
    // serde_json writes maps in key order and `sorted` fixed that order, so equal values hash
    // equal. Serializing a Value cannot fail.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

pub fn manifest_hash(manifest: &Map<String, Value>) -> String {
    hash(&sorted(&Value::Object(manifest.clone())))
}

pub fn spec_hash(manifest: &Map<String, Value>) -> String {
    let mut m = manifest.clone();
    m.remove("metadata");
    hash(&sorted(&Value::Object(m)))
}

/// A random RFC 4122 version 4 UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!(),
        }
    }

    #[test]
    fn generation_counts_only_non_metadata_changes() {
        let a = map(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}}),
        );
        let mut rec = Record::new(&a);
        let labelled = map(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "1"}}),
        );
        assert!(rec.advance_to(&labelled));
        assert_eq!((rec.resource_version, rec.generation), (2, 1));
        let changed = map(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "2"}}),
        );
        assert!(rec.advance_to(&changed));
        assert_eq!((rec.resource_version, rec.generation), (3, 2));
        assert!(!rec.advance_to(&changed));
    }

    #[test]
    fn manifest_drops_system_fields_and_status() {
        let o = map(
            json!({"kind": "X", "metadata": {"name": "a", "uid": "u", "resourceVersion": "3"}, "status": {}}),
        );
        assert_eq!(
            Value::Object(manifest_of(&o)),
            json!({"kind": "X", "metadata": {"name": "a"}})
        );
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }
}
