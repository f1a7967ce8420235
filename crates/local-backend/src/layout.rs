//! Where objects live on disk, and the name rules that make path traversal impossible.
//!
//! Every path component comes from a validated name: namespaces are DNS-1123 labels, names
//! DNS-1123 subdomains, groups DNS-1123 subdomains (or empty), kinds alphanumeric. None of them
//! can contain `/`, `\`, `..` or start with `.`, so a path built from them stays under the root
//! and never collides with the hidden state folder or temp files.

use std::path::{Path, PathBuf};
use trueup_core::ObjectRef;

/// The directory that stands for "no namespace". `_` is not allowed in namespaces, so it
/// cannot collide with a real one.
pub const CLUSTER_DIR: &str = "_cluster";
/// The state folder under the root.
pub const STATE_DIR: &str = ".trueup";
/// Object records (system metadata and status) under the state folder.
pub const STATUS_DIR: &str = "status";
pub const EVENTS_FILE: &str = "events.jsonl";
pub const LOCK_FILE: &str = "lock";

/// Checks every component of a reference; the error says which one is wrong and why.
pub fn validate_ref(r: &ObjectRef) -> Result<(), String> {
    if !r.namespace.is_empty() {
        check_label(&r.namespace)
            .map_err(|m| format!("invalid namespace {:?}: {m}", r.namespace))?;
    }
    check_subdomain(&r.name).map_err(|m| format!("invalid name {:?}: {m}", r.name))?;
    if !r.group.is_empty() {
        check_subdomain(&r.group).map_err(|m| format!("invalid API group {:?}: {m}", r.group))?;
    }
    check_kind(&r.kind).map_err(|m| format!("invalid kind {:?}: {m}", r.kind))?;
    Ok(())
}

/// DNS-1123 label: at most 63 of `a-z0-9-`, starting and ending alphanumeric.
pub fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "character {c:?} is not allowed (lowercase letters, digits and '-' only)"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// DNS-1123 subdomain: at most 253 characters, dot-separated labels of `a-z0-9-`.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "character {c:?} is not allowed (lowercase letters, digits, '-' and '.' only)"
        ));
    }
    for part in s.split('.') {
        if part.is_empty() || part.starts_with('-') || part.ends_with('-') {
            return Err(
                "every dot-separated part must start and end with a letter or digit".into(),
            );
        }
    }
    Ok(())
}

/// Kinds are CamelCase identifiers.
pub fn check_kind(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err("must not be empty".into()),
        Some(c) if !c.is_ascii_alphabetic() => return Err("must start with a letter".into()),
        _ => {}
    }
    if s.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    if let Some(c) = chars.find(|c| !c.is_ascii_alphanumeric()) {
        return Err(format!(
            "character {c:?} is not allowed (letters and digits only)"
        ));
    }
    Ok(())
}

pub fn namespace_dir(namespace: &str) -> &str {
    if namespace.is_empty() {
        CLUSTER_DIR
    } else {
        namespace
    }
}

pub fn kind_dir(group: &str, kind: &str) -> String {
    format!("{group}_{kind}")
}

/// `<root>/<namespace|_cluster>/<group>_<kind>/<name>.yaml`; `r` must be validated.
pub fn object_path(root: &Path, r: &ObjectRef) -> PathBuf {
    root.join(namespace_dir(&r.namespace))
        .join(kind_dir(&r.group, &r.kind))
        .join(format!("{}.yaml", r.name))
}

/// `<root>/.trueup/status/<namespace|_cluster>/<group>_<kind>/<name>.json`; `r` must be
/// validated.
pub fn record_path(root: &Path, r: &ObjectRef) -> PathBuf {
    root.join(STATE_DIR)
        .join(STATUS_DIR)
        .join(namespace_dir(&r.namespace))
        .join(kind_dir(&r.group, &r.kind))
        .join(format!("{}.json", r.name))
}

/// Reads a namespace directory name back; `None` for directories that are not ours.
pub fn parse_namespace_dir(s: &str) -> Option<String> {
    if s == CLUSTER_DIR {
        Some(String::new())
    } else {
        check_label(s).ok().map(|_| s.to_string())
    }
}

/// Reads `<group>_<kind>` back. Groups never contain `_`, so the first `_` splits.
pub fn parse_kind_dir(s: &str) -> Option<(String, String)> {
    let (group, kind) = s.split_once('_')?;
    if (!group.is_empty() && check_subdomain(group).is_err()) || check_kind(kind).is_err() {
        return None;
    }
    Some((group.to_string(), kind.to_string()))
}

/// Reads `<name>.<ext>` back; `None` for hidden files, temp files and other names.
pub fn parse_file_name(s: &str, ext: &str) -> Option<String> {
    let name = s.strip_suffix(ext)?.strip_suffix('.')?;
    check_subdomain(name).ok().map(|_| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_odd_names_are_rejected() {
        for bad in [
            "..", "../etc", "a/b", ".hidden", "A", "a..b", "-a", "a\\b", "", "a b", "a_b",
        ] {
            assert!(check_subdomain(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "app-1", "podinfo.v2", "0"] {
            assert!(check_subdomain(good).is_ok(), "{good:?}");
        }
        assert!(check_label("a.b").is_err());
        assert!(check_kind("Config_Map").is_err());
        assert!(check_kind("ConfigMap").is_ok());
    }

    #[test]
    fn paths_round_trip() {
        let root = Path::new("/r");
        let r = ObjectRef::new("", "ConfigMap", "default", "app");
        assert_eq!(
            object_path(root, &r),
            Path::new("/r/default/_ConfigMap/app.yaml")
        );
        let r = ObjectRef::new("apps", "Deployment", "apps", "web");
        assert_eq!(
            object_path(root, &r),
            Path::new("/r/apps/apps_Deployment/web.yaml")
        );
        let r = ObjectRef::new("", "Namespace", "", "apps");
        assert_eq!(
            object_path(root, &r),
            Path::new("/r/_cluster/_Namespace/apps.yaml")
        );
        assert_eq!(
            record_path(root, &r),
            Path::new("/r/.trueup/status/_cluster/_Namespace/apps.json")
        );
        assert_eq!(
            parse_kind_dir("apps_Deployment"),
            Some(("apps".into(), "Deployment".into()))
        );
        assert_eq!(
            parse_kind_dir("_ConfigMap"),
            Some(("".into(), "ConfigMap".into()))
        );
        assert_eq!(parse_file_name("web.yaml", "yaml"), Some("web".into()));
        assert_eq!(parse_file_name(".web.yaml.1.2.tmp", "yaml"), None);
        assert_eq!(parse_namespace_dir("_cluster"), Some(String::new()));
        assert_eq!(parse_namespace_dir(".trueup"), None);
    }
}
