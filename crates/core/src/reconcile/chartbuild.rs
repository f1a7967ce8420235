//! Building a HelmChart's artifact from a chart: the chart archive as pulled, or packaged again
//! the way source-controller does when it must change it (`valuesFiles` merged into
//! `values.yaml`, build metadata added to the version), or packaged from a chart directory in a
//! GitRepository artifact (`.helmignore` honoured). Synchronous file work: callers run it on the
//! blocking pool.

use super::helmrelease::merge_values;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a build failed, with Flux's condition reason (`chart.BuildErrorReason`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    pub reason: &'static str,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Flux's build error reasons.
pub mod build_reason {
    pub const INVALID_CHART_REFERENCE: &str = "InvalidChartReference";
    pub const CHART_PULL: &str = "ChartPullError";
    pub const METADATA_PATCH: &str = "MetadataPatchError";
    pub const VALUES_FILES: &str = "ValuesFilesError";
    pub const CHART_PACKAGE: &str = "ChartPackageError";
    pub const DEPENDENCY_BUILD: &str = "DependencyBuildError";
}

impl BuildError {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        BuildError {
            reason,
            message: message.into(),
            source: None,
        }
    }

    fn io(reason: &'static str, what: String, e: std::io::Error) -> Self {
        BuildError {
            reason,
            message: format!("{what}: {e}"),
            source: Some(Box::new(e)),
        }
    }

    /// Errors that a retry without a change cannot fix (Flux's `IsPersistentBuildErrorReason`).
    pub fn is_persistent(&self) -> bool {
        matches!(
            self.reason,
            build_reason::INVALID_CHART_REFERENCE
                | build_reason::VALUES_FILES
                | build_reason::CHART_PACKAGE
                | build_reason::DEPENDENCY_BUILD
        )
    }
}

/// What the build is asked to do besides taking the chart as it is.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Merged in order over each other; the result replaces the chart's `values.yaml`.
    pub values_files: Vec<String>,
    pub ignore_missing_values_files: bool,
    /// Replaces the build metadata of the chart version (`1.2.3+<metadata>`).
    pub version_metadata: Option<String>,
    /// A chart from a source tree: dependencies in `Chart.yaml` must be in `charts/`, or be
    /// `file://` paths inside the source, which are copied there (as `helm dependency build`).
    pub local_dependencies: bool,
    /// Dependencies fetched from chart repositories, written to `charts/` before the local
    /// ones are checked.
    pub fetched_dependencies: Vec<FetchedDependency>,
}

/// A dependency fetched from a chart repository, placed in `charts/<name>-<version>.tgz`.
#[derive(Clone, Default)]
pub struct FetchedDependency {
    pub name: String,
    pub version: String,
    pub tgz: Vec<u8>,
}

impl std::fmt::Debug for FetchedDependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedDependency")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("bytes", &self.tgz.len())
            .finish()
    }
}

/// A built chart.
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    pub version: String,
    /// The chart archive (`<name>/Chart.yaml`, ... in a tar.gz).
    pub tgz: Vec<u8>,
    /// The values files that were found and merged.
    pub values_files: Vec<String>,
    /// Whether the archive was packaged here (false: as pulled).
    pub packaged: bool,
}

impl Built {
    /// Flux's summary of a build, used as condition and event message.
    pub fn summary(&self) -> String {
        let action = if self.packaged { "packaged" } else { "pulled" };
        let mut s = format!(
            "{action} '{}' chart with version '{}'",
            self.name, self.version
        );
        if !self.values_files.is_empty() {
            s.push_str(&format!(
                " and merged values files [{}]",
                self.values_files.join(" ")
            ));
        }
        s
    }
}

/// The effective values files of a HelmChart spec: the deprecated `valuesFile` first, then
/// `valuesFiles`; a lone `values.yaml` means none (it is the chart's own).
pub fn effective_values_files(values_file: Option<&str>, values_files: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(f) = values_file.filter(|f| !f.is_empty()) {
        out.push(f.to_string());
    }
    out.extend(values_files.iter().filter(|f| !f.is_empty()).cloned());
    if out.len() == 1 && clean(&out[0]) == "values.yaml" {
        out.clear();
    }
    out
}

fn clean(p: &str) -> String {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// `1.2.3+old` with `meta` → `1.2.3+meta`.
pub fn with_metadata(version: &str, meta: &str) -> String {
    let base = version.split_once('+').map_or(version, |(b, _)| b);
    format!("{base}+{meta}")
}

/// Reads `Chart.yaml` of a chart directory: the document, its name and version.
fn read_chart_yaml(
    dir: &Path,
    shown: &str,
) -> Result<(serde_yaml::Value, String, String), BuildError> {
    let path = dir.join("Chart.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        BuildError::io(
            build_reason::INVALID_CHART_REFERENCE,
            format!("{shown}: no chart found (Chart.yaml)"),
            e,
        )
    })?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
        BuildError::new(
            build_reason::INVALID_CHART_REFERENCE,
            format!("{shown}/Chart.yaml: invalid YAML: {e}"),
        )
    })?;
    let field = |k: &str| {
        doc.get(k)
            .and_then(|v| match v {
                serde_yaml::Value::String(s) => Some(s.clone()),
                serde_yaml::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    let name = field("name").ok_or_else(|| {
        BuildError::new(
            build_reason::INVALID_CHART_REFERENCE,
            format!("{shown}/Chart.yaml: chart.metadata.name is required"),
        )
    })?;
    let version = field("version").ok_or_else(|| {
        BuildError::new(
            build_reason::INVALID_CHART_REFERENCE,
            format!("{shown}/Chart.yaml: chart.metadata.version is required"),
        )
    })?;
    if semver::Version::parse(version.trim_start_matches('v')).is_err() {
        return Err(BuildError::new(
            build_reason::INVALID_CHART_REFERENCE,
            format!("{shown}/Chart.yaml: version '{version}' is not a valid SemVer 2 version"),
        ));
    }
    if name.contains(['/', '\\']) || name == ".." || name == "." {
        return Err(BuildError::new(
            build_reason::INVALID_CHART_REFERENCE,
            format!("{shown}/Chart.yaml: invalid chart name '{name}'"),
        ));
    }
    Ok((doc, name, version))
}

/// The version a local chart would get, without packaging it (to decide whether the stored
/// artifact is still current).
pub fn local_version(
    chart_dir: &Path,
    shown: &str,
    opts: &BuildOptions,
) -> Result<String, BuildError> {
    let (_, _, version) = read_chart_yaml(chart_dir, shown)?;
    Ok(match &opts.version_metadata {
        Some(m) => with_metadata(&version, m),
        None => version,
    })
}

/// Reads and merges values files, relative to `base` (a path may not leave it).
fn merge_values_files(
    base: &Path,
    chart_values: Option<&Path>,
    opts: &BuildOptions,
) -> Result<(Value, Vec<String>), BuildError> {
    let mut merged = Value::Object(Default::default());
    let mut used = Vec::new();
    for f in &opts.values_files {
        let path = match crate::paths::join_inside(base, f) {
            Ok(p) => p,
            Err(crate::paths::PathError::Missing(_)) if clean(f) != "values.yaml" => {
                if opts.ignore_missing_values_files {
                    continue;
                }
                return Err(BuildError::new(
                    build_reason::VALUES_FILES,
                    format!("no values file found at path '{f}'"),
                ));
            }
            Err(crate::paths::PathError::Missing(_)) => base.join("values.yaml"),
            Err(e) => {
                return Err(BuildError::new(
                    build_reason::VALUES_FILES,
                    format!("values file '{f}': {e}"),
                ))
            }
        };
        // The chart's own values.yaml may sit elsewhere than `base` (a remote chart).
        let path = if clean(f) == "values.yaml" {
            chart_values.map(Path::to_path_buf).unwrap_or(path)
        } else {
            path
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if opts.ignore_missing_values_files {
                    continue;
                }
                return Err(BuildError::new(
                    build_reason::VALUES_FILES,
                    format!("no values file found at path '{f}'"),
                ));
            }
            Err(e) => {
                return Err(BuildError::io(
                    build_reason::VALUES_FILES,
                    format!("values file '{f}'"),
                    e,
                ))
            }
        };
        let v: Value = serde_yaml::from_str(&text).map_err(|e| {
            BuildError::new(
                build_reason::VALUES_FILES,
                format!("failed to parse values file '{f}': {e}"),
            )
        })?;
        match v {
            Value::Null => {}
            v @ Value::Object(_) => merge_values(&mut merged, v),
            _ => {
                return Err(BuildError::new(
                    build_reason::VALUES_FILES,
                    format!("values file '{f}' is not a map"),
                ))
            }
        }
        used.push(f.clone());
    }
    Ok((merged, used))
}

/// `.helmignore` of a chart directory, gitignore-style as Helm reads it.
fn helmignore(chart_dir: &Path) -> Option<ignore::gitignore::Gitignore> {
    let file = chart_dir.join(".helmignore");
    if !file.is_file() {
        return None;
    }
    let mut b = ignore::gitignore::GitignoreBuilder::new(chart_dir);
    b.add(&file);
    b.build().ok()
}

/// Copies a chart directory to `dest` minus what `.helmignore` excludes; symlinks are skipped.
fn copy_chart(
    src: &Path,
    dest: &Path,
    ig: Option<&ignore::gitignore::Gitignore>,
) -> std::io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        std::fs::create_dir_all(dest.join(&rel))?;
        for e in std::fs::read_dir(src.join(&rel))? {
            let e = e?;
            let ft = e.file_type()?;
            let rel_child = rel.join(e.file_name());
            if let Some(ig) = ig {
                if ig
                    .matched_path_or_any_parents(&rel_child, ft.is_dir())
                    .is_ignore()
                {
                    continue;
                }
            }
            if ft.is_dir() {
                stack.push(rel_child);
            } else if ft.is_file() {
                std::fs::copy(e.path(), dest.join(&rel_child))?;
            }
        }
    }
    Ok(())
}

/// Packages the chart at `chart_dir` (values files relative to `values_base`).
pub fn package_dir(
    chart_dir: &Path,
    values_base: &Path,
    shown: &str,
    opts: &BuildOptions,
) -> Result<Built, BuildError> {
    let (mut doc, name, version) = read_chart_yaml(chart_dir, shown)?;
    let version = match &opts.version_metadata {
        Some(m) => with_metadata(&version, m),
        None => version,
    };
    let tmp = tempfile::tempdir().map_err(|e| {
        BuildError::io(
            build_reason::CHART_PACKAGE,
            "creating a working directory".into(),
            e,
        )
    })?;
    let root = tmp.path().join(&name);
    copy_chart(chart_dir, &root, helmignore(chart_dir).as_ref())
        .map_err(|e| BuildError::io(build_reason::CHART_PACKAGE, format!("copying {shown}"), e))?;
    for d in &opts.fetched_dependencies {
        check_fetched(d, shown)?;
        let charts = root.join("charts");
        let file = charts.join(format!("{}-{}.tgz", d.name, d.version));
        std::fs::create_dir_all(&charts)
            .and_then(|_| std::fs::write(&file, &d.tgz))
            .map_err(|e| {
                BuildError::io(
                    build_reason::DEPENDENCY_BUILD,
                    format!("{shown}: writing dependency '{}'", d.name),
                    e,
                )
            })?;
    }
    if opts.local_dependencies {
        vendor_dependencies(&doc, chart_dir, values_base, &root, shown)?;
    }
    if let Some(map) = doc.as_mapping_mut() {
        map.insert("version".into(), serde_yaml::Value::String(version.clone()));
    }
    let chart_yaml = serde_yaml::to_string(&doc).map_err(|e| {
        BuildError::new(
            build_reason::METADATA_PATCH,
            format!("{shown}/Chart.yaml: {e}"),
        )
    })?;
    std::fs::write(root.join("Chart.yaml"), chart_yaml)
        .map_err(|e| BuildError::io(build_reason::CHART_PACKAGE, "writing Chart.yaml".into(), e))?;
    let mut used = Vec::new();
    if !opts.values_files.is_empty() {
        let (merged, u) =
            merge_values_files(values_base, Some(&chart_dir.join("values.yaml")), opts)?;
        used = u;
        let text = serde_yaml::to_string(&merged).map_err(|e| {
            BuildError::new(build_reason::VALUES_FILES, format!("encoding values: {e}"))
        })?;
        std::fs::write(root.join("values.yaml"), text).map_err(|e| {
            BuildError::io(build_reason::CHART_PACKAGE, "writing values.yaml".into(), e)
        })?;
    }
    let tgz = crate::storage::pack_dir(tmp.path(), &crate::storage::keep_all).map_err(|e| {
        BuildError::new(
            build_reason::CHART_PACKAGE,
            format!("packaging {shown}: {e}"),
        )
    })?;
    Ok(Built {
        name,
        version,
        tgz,
        values_files: used,
        packaged: true,
    })
}

/// Makes sure each dependency of a local chart is in its `charts/`: present already (a
/// directory or an archive), or copied from a `file://` path that stays inside `source_root`.
/// Dependencies from chart repositories are not fetched: the error says so.
fn vendor_dependencies(
    doc: &serde_yaml::Value,
    chart_dir: &Path,
    source_root: &Path,
    dest_root: &Path,
    shown: &str,
) -> Result<(), BuildError> {
    let Some(deps) = doc.get("dependencies").and_then(|d| d.as_sequence()) else {
        return Ok(());
    };
    let err = |m: String| BuildError::new(build_reason::DEPENDENCY_BUILD, m);
    for d in deps {
        let field = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let name = field("name");
        if name.is_empty() || name.contains(['/', '\\']) || name == ".." {
            return Err(err(format!(
                "{shown}/Chart.yaml: a dependency without a valid name"
            )));
        }
        let charts = dest_root.join("charts");
        if dependency_present(&charts, name) {
            continue;
        }
        let repo = field("repository");
        let Some(rel) = repo.strip_prefix("file://") else {
            return Err(err(format!(
                "{shown}: dependency '{name}' from '{repo}' is not in charts/ and this build fetches no dependencies from chart repositories (no ChartDependencyFetcher): vendor it (helm dependency build) or use a file:// path"
            )));
        };
        // Relative to the chart, and never outside the source.
        let chart_rel = chart_dir.strip_prefix(source_root).unwrap_or(Path::new(""));
        let joined = chart_rel.join(rel);
        let path = crate::paths::join_inside(source_root, &joined.to_string_lossy())
            .map_err(|e| err(format!("{shown}: dependency '{name}' at '{repo}': {e}")))?;
        if !path.join("Chart.yaml").is_file() {
            return Err(err(format!(
                "{shown}: dependency '{name}' at '{repo}': no chart found there"
            )));
        }
        copy_chart(&path, &charts.join(name), helmignore(&path).as_ref()).map_err(|e| {
            BuildError::io(
                build_reason::DEPENDENCY_BUILD,
                format!("{shown}: copying dependency '{name}'"),
                e,
            )
        })?;
    }
    Ok(())
}

/// A fetched dependency must be a chart archive holding that chart (as Flux loads it before
/// adding it): a broken download fails the build, not the release that renders it.
fn check_fetched(d: &FetchedDependency, shown: &str) -> Result<(), BuildError> {
    let what = format!("{shown}: dependency '{}' version '{}'", d.name, d.version);
    let tmp = tempfile::tempdir().map_err(|e| {
        BuildError::io(
            build_reason::DEPENDENCY_BUILD,
            "creating a working directory".into(),
            e,
        )
    })?;
    crate::storage::extract(&d.tgz[..], tmp.path(), &what, &Default::default()).map_err(|e| {
        BuildError::new(
            build_reason::DEPENDENCY_BUILD,
            format!("{what}: invalid chart archive: {e}"),
        )
    })?;
    let root = chart_root(tmp.path(), &what).map_err(|e| BuildError {
        reason: build_reason::DEPENDENCY_BUILD,
        ..e
    })?;
    let (_, name, _) = read_chart_yaml(&root, &what).map_err(|e| BuildError {
        reason: build_reason::DEPENDENCY_BUILD,
        ..e
    })?;
    if name != d.name {
        return Err(BuildError::new(
            build_reason::DEPENDENCY_BUILD,
            format!("{what}: the archive holds chart '{name}'"),
        ));
    }
    Ok(())
}

/// A dependency of a chart from a source tree that must come from a chart repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDependency {
    pub name: String,
    /// The repository as `Chart.yaml` writes it (`https://...`, `oci://...`).
    pub repository: String,
    /// The version constraint of `Chart.yaml`, or the exact version `Chart.lock` holds.
    pub version: String,
    /// Whether `version` comes from `Chart.lock`.
    pub locked: bool,
}

/// A chart repository URL as source-controller compares them: an `oci://` URL without a
/// trailing `/`, an HTTP one with exactly one.
pub fn normalize_repository_url(url: &str) -> String {
    let url = url.trim();
    if url.starts_with("oci://") {
        url.trim_end_matches('/').to_string()
    } else {
        format!("{}/", url.trim_end_matches('/'))
    }
}

/// Whether a dependency named `name` is in the chart's `charts/` (a directory or an archive).
fn dependency_present(charts: &Path, name: &str) -> bool {
    charts.join(name).join("Chart.yaml").is_file()
        || std::fs::read_dir(charts)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let f = e.file_name().to_string_lossy().to_string();
                f.starts_with(&format!("{name}-")) && f.ends_with(".tgz")
            })
}

/// The dependencies of the chart at `chart_dir` that are not in its `charts/` and come from
/// chart repositories (`http(s)://` or `oci://`; `file://` ones are copied from the source at
/// packaging). When a `Chart.lock` lists the same dependencies (names and repositories) as
/// `Chart.yaml`, its exact versions are used, as `helm dependency build` does; a lock that
/// differs is an error, as it is for helm. `@name` and `alias:name` repositories refer to the
/// helm CLI's repository configuration, which a HelmChart has not: an error says so (Flux:
/// "aliased repository dependency is not supported").
pub fn remote_dependencies(
    chart_dir: &Path,
    shown: &str,
) -> Result<Vec<RemoteDependency>, BuildError> {
    let (doc, _, _) = read_chart_yaml(chart_dir, shown)?;
    let err = |m: String| BuildError::new(build_reason::DEPENDENCY_BUILD, m);
    let Some(deps) = doc.get("dependencies").and_then(|d| d.as_sequence()) else {
        return Ok(Vec::new());
    };
    let text = |v: &serde_yaml::Value, k: &str| match v.get(k) {
        Some(serde_yaml::Value::String(s)) => s.trim().to_string(),
        Some(serde_yaml::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let wanted: Vec<(String, String, String)> = deps
        .iter()
        .map(|d| (text(d, "name"), text(d, "repository"), text(d, "version")))
        .collect();
    // Chart.lock, when there is one and it matches Chart.yaml.
    let mut locked: Option<std::collections::BTreeMap<String, String>> = None;
    let lock_path = chart_dir.join("Chart.lock");
    if lock_path.is_file() {
        let lock_text = std::fs::read_to_string(&lock_path).map_err(|e| {
            BuildError::io(
                build_reason::DEPENDENCY_BUILD,
                format!("{shown}/Chart.lock"),
                e,
            )
        })?;
        let lock: serde_yaml::Value = serde_yaml::from_str(&lock_text)
            .map_err(|e| err(format!("{shown}/Chart.lock: invalid YAML: {e}")))?;
        let entries: Vec<(String, String, String)> = lock
            .get("dependencies")
            .and_then(|d| d.as_sequence())
            .map(|s| {
                s.iter()
                    .map(|d| (text(d, "name"), text(d, "repository"), text(d, "version")))
                    .collect()
            })
            .unwrap_or_default();
        let key = |n: &str, r: &str| (n.to_string(), normalize_repository_url(r));
        let mut want_keys: Vec<_> = wanted.iter().map(|(n, r, _)| key(n, r)).collect();
        let mut lock_keys: Vec<_> = entries.iter().map(|(n, r, _)| key(n, r)).collect();
        want_keys.sort();
        lock_keys.sort();
        if want_keys != lock_keys {
            return Err(err(format!(
                "{shown}: Chart.lock is out of sync with the dependencies of Chart.yaml: run 'helm dependency update' and commit Chart.lock"
            )));
        }
        locked = Some(
            entries
                .into_iter()
                .map(|(n, r, v)| (format!("{n}\n{}", normalize_repository_url(&r)), v))
                .collect(),
        );
    }
    let charts = chart_dir.join("charts");
    let mut out = Vec::new();
    for (name, repo, version) in wanted {
        if name.is_empty() || name.contains(['/', '\\']) || name == ".." {
            return Err(err(format!(
                "{shown}/Chart.yaml: a dependency without a valid name"
            )));
        }
        if dependency_present(&charts, &name) || repo.is_empty() || repo.starts_with("file://") {
            continue;
        }
        if repo.starts_with('@') || repo.starts_with("alias:") {
            return Err(err(format!(
                "{shown}: dependency '{name}' (version '{version}') from repository '{repo}': aliased repository dependency is not supported: '{repo}' names a repository of the helm CLI's configuration, which a HelmChart does not have; write the repository URL (https:// or oci://) instead"
            )));
        }
        if !(repo.starts_with("https://")
            || repo.starts_with("http://")
            || repo.starts_with("oci://"))
        {
            return Err(err(format!(
                "{shown}: dependency '{name}' (version '{version}') from repository '{repo}': invalid dependency repository URL: want http://, https://, oci:// or file://"
            )));
        }
        let lock_version = locked
            .as_ref()
            .and_then(|l| l.get(&format!("{name}\n{}", normalize_repository_url(&repo))))
            .filter(|v| !v.is_empty());
        out.push(RemoteDependency {
            name,
            repository: repo,
            locked: lock_version.is_some(),
            version: lock_version.cloned().unwrap_or(version),
        });
    }
    Ok(out)
}

/// The single chart directory inside an unpacked chart archive.
pub fn chart_root(dir: &Path, shown: &str) -> Result<PathBuf, BuildError> {
    if dir.join("Chart.yaml").is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().join("Chart.yaml").is_file() {
                found.push(e.path());
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(BuildError::new(
            build_reason::CHART_PULL,
            format!("{shown}: not a Helm chart archive (no Chart.yaml)"),
        )),
        _ => Err(BuildError::new(
            build_reason::CHART_PULL,
            format!("{shown}: more than one chart in the archive"),
        )),
    }
}

/// A pulled chart archive: kept as it is when nothing must change, else packaged again.
pub fn from_archive(
    tgz: Vec<u8>,
    shown: &str,
    opts: &BuildOptions,
    limits: &crate::storage::Limits,
) -> Result<Built, BuildError> {
    let tmp = tempfile::tempdir().map_err(|e| {
        BuildError::io(
            build_reason::CHART_PULL,
            "creating a working directory".into(),
            e,
        )
    })?;
    crate::storage::extract(&tgz[..], tmp.path(), shown, limits).map_err(|e| {
        BuildError::new(
            build_reason::CHART_PULL,
            format!("{shown}: invalid chart archive: {e}"),
        )
    })?;
    let root = chart_root(tmp.path(), shown)?;
    if opts.values_files.is_empty() && opts.version_metadata.is_none() {
        let (_, name, version) = read_chart_yaml(&root, shown)?;
        return Ok(Built {
            name,
            version,
            tgz,
            values_files: Vec::new(),
            packaged: false,
        });
    }
    // Values files of a remote chart are paths inside the chart.
    package_dir(&root, &root, shown, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (p, c) in files {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
    }

    fn unpack(tgz: &[u8]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        crate::storage::extract(tgz, t.path(), "t", &Default::default()).unwrap();
        t
    }

    #[test]
    fn values_files_merge_in_order_and_version_gets_metadata() {
        let src = tempfile::tempdir().unwrap();
        write(
            src.path(),
            &[
                (
                    "charts/app/Chart.yaml",
                    "apiVersion: v2\nname: app\nversion: 1.2.3+old\n",
                ),
                ("charts/app/values.yaml", "a: {b: 1, c: 2}\nlist: [1, 2]\n"),
                ("charts/app/values-prod.yaml", "a: {b: 3}\nlist: [9]\n"),
                ("charts/app/templates/cm.yaml", "kind: ConfigMap\n"),
                ("charts/app/secret.txt", "x"),
                ("charts/app/.helmignore", "*.txt\n"),
            ],
        );
        let opts = BuildOptions {
            values_files: vec![
                "charts/app/values.yaml".into(),
                "charts/app/values-prod.yaml".into(),
                "charts/app/missing.yaml".into(),
            ],
            ignore_missing_values_files: true,
            version_metadata: Some("abcdef012345.2".into()),
            local_dependencies: false,
            fetched_dependencies: Vec::new(),
        };
        let b = package_dir(
            &src.path().join("charts/app"),
            src.path(),
            "charts/app",
            &opts,
        )
        .unwrap();
        assert_eq!(b.name, "app");
        assert_eq!(b.version, "1.2.3+abcdef012345.2");
        assert_eq!(
            b.values_files,
            vec!["charts/app/values.yaml", "charts/app/values-prod.yaml"]
        );
        assert_eq!(
            b.summary(),
            "packaged 'app' chart with version '1.2.3+abcdef012345.2' and merged values files [charts/app/values.yaml charts/app/values-prod.yaml]"
        );
        let out = unpack(&b.tgz);
        let values: Value = serde_yaml::from_str(
            &std::fs::read_to_string(out.path().join("app/values.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            values,
            serde_json::json!({"a": {"b": 3, "c": 2}, "list": [9]})
        );
        let chart: Value = serde_yaml::from_str(
            &std::fs::read_to_string(out.path().join("app/Chart.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(chart["version"], "1.2.3+abcdef012345.2");
        assert!(out.path().join("app/templates/cm.yaml").exists());
        assert!(!out.path().join("app/secret.txt").exists(), ".helmignore");

        // Without ignoreMissingValuesFiles a missing file names itself.
        let strict = BuildOptions {
            ignore_missing_values_files: false,
            ..opts.clone()
        };
        let e = package_dir(
            &src.path().join("charts/app"),
            src.path(),
            "charts/app",
            &strict,
        )
        .unwrap_err();
        assert_eq!(e.reason, build_reason::VALUES_FILES);
        assert!(e.message.contains("charts/app/missing.yaml"), "{e}");
        // A path may not leave the source.
        let escape = BuildOptions {
            values_files: vec!["../../etc/passwd".into()],
            ..Default::default()
        };
        assert!(package_dir(&src.path().join("charts/app"), src.path(), "x", &escape).is_err());
    }

    #[test]
    fn local_dependencies_are_vendored_or_named() {
        let src = tempfile::tempdir().unwrap();
        write(
            src.path(),
            &[
                (
                    "charts/app/Chart.yaml",
                    "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: lib\n  version: 0.1.0\n  repository: file://../lib\n- name: vendored\n  version: 2.0.0\n  repository: https://charts.example\n",
                ),
                ("charts/app/charts/vendored/Chart.yaml", "apiVersion: v2\nname: vendored\nversion: 2.0.0\n"),
                ("charts/lib/Chart.yaml", "apiVersion: v2\nname: lib\nversion: 0.1.0\n"),
                ("charts/lib/templates/x.yaml", "kind: ConfigMap\n"),
            ],
        );
        let opts = BuildOptions {
            local_dependencies: true,
            ..Default::default()
        };
        let b = package_dir(
            &src.path().join("charts/app"),
            src.path(),
            "charts/app",
            &opts,
        )
        .unwrap();
        let out = unpack(&b.tgz);
        assert!(out.path().join("app/charts/lib/templates/x.yaml").exists());
        assert!(out.path().join("app/charts/vendored/Chart.yaml").exists());

        std::fs::remove_dir_all(src.path().join("charts/app/charts/vendored")).unwrap();
        let e = package_dir(
            &src.path().join("charts/app"),
            src.path(),
            "charts/app",
            &opts,
        )
        .unwrap_err();
        assert_eq!(e.reason, build_reason::DEPENDENCY_BUILD);
        assert!(
            e.message.contains("'vendored'") && e.message.contains("https://charts.example"),
            "{e}"
        );
        write(
            src.path(),
            &[(
                "charts/app/Chart.yaml",
                "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: lib\n  repository: file://../../../outside\n",
            )],
        );
        let e = package_dir(
            &src.path().join("charts/app"),
            src.path(),
            "charts/app",
            &opts,
        )
        .unwrap_err();
        assert!(e.message.contains("escapes"), "{e}");
    }

    #[test]
    fn remote_dependencies_follow_chart_lock_and_refuse_aliases() {
        let src = tempfile::tempdir().unwrap();
        let chart = "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: db\n  version: ^1.0.0\n  repository: https://charts.example/stable\n- name: cache\n  version: '>=0.1'\n  repository: oci://r.example/charts/\n  alias: sessions\n- name: lib\n  repository: file://../lib\n- name: vendored\n  version: 2.0.0\n  repository: https://charts.example/stable\n";
        write(
            src.path(),
            &[
                ("app/Chart.yaml", chart),
                ("app/charts/vendored-2.0.0.tgz", "x"),
            ],
        );
        let dir = src.path().join("app");
        let deps = remote_dependencies(&dir, "app").unwrap();
        let got: Vec<_> = deps
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.repository.as_str(),
                    d.version.as_str(),
                    d.locked,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("db", "https://charts.example/stable", "^1.0.0", false),
                ("cache", "oci://r.example/charts/", ">=0.1", false),
            ]
        );
        // A lock listing the same dependencies pins their versions.
        write(
            src.path(),
            &[(
                "app/Chart.lock",
                "dependencies:\n- name: db\n  repository: https://charts.example/stable/\n  version: 1.2.3\n- name: cache\n  repository: oci://r.example/charts\n  version: 0.1.5\n- name: lib\n  repository: file://../lib\n  version: 0.1.0\n- name: vendored\n  repository: https://charts.example/stable\n  version: 2.0.0\ndigest: sha256:0\n",
            )],
        );
        let deps = remote_dependencies(&dir, "app").unwrap();
        assert_eq!(
            deps.iter()
                .map(|d| (d.version.as_str(), d.locked))
                .collect::<Vec<_>>(),
            vec![("1.2.3", true), ("0.1.5", true)]
        );
        // A lock that lists other dependencies is out of sync, as helm says.
        write(
            src.path(),
            &[(
                "app/Chart.lock",
                "dependencies:\n- name: db\n  repository: https://charts.example/stable\n  version: 1.2.3\n",
            )],
        );
        let e = remote_dependencies(&dir, "app").unwrap_err();
        assert_eq!(e.reason, build_reason::DEPENDENCY_BUILD);
        assert!(e.message.contains("out of sync"), "{e}");
        std::fs::remove_file(dir.join("Chart.lock")).unwrap();
        // Repositories named by the helm CLI's configuration cannot be resolved.
        for repo in ["'@stable'", "alias:stable", "ftp://x.example"] {
            write(
                src.path(),
                &[(
                    "app/Chart.yaml",
                    &format!("apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: db\n  version: 1.x\n  repository: {repo}\n"),
                )],
            );
            let e = remote_dependencies(&dir, "app").unwrap_err();
            assert!(e.message.contains("dependency 'db'"), "{e}");
            let want = if repo.starts_with('f') {
                "invalid dependency repository URL"
            } else {
                "aliased repository dependency is not supported"
            };
            assert!(e.message.contains(want), "{e}");
        }
        assert_eq!(
            normalize_repository_url("https://x.example/a//"),
            "https://x.example/a/"
        );
        assert_eq!(normalize_repository_url("oci://r/c/"), "oci://r/c");

        // Fetched dependencies land in charts/ as <name>-<version>.tgz.
        let chart_tgz = |name: &str| {
            let d = tempfile::tempdir().unwrap();
            write(
                d.path(),
                &[(
                    &format!("{name}/Chart.yaml"),
                    &format!("apiVersion: v2\nname: {name}\nversion: 1.4.0\n"),
                )],
            );
            crate::storage::pack_dir(d.path(), &crate::storage::keep_all).unwrap()
        };
        let (db, app_tgz) = (chart_tgz("db"), chart_tgz("other"));
        write(
            src.path(),
            &[("app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: db\n  version: ^1.0.0\n  repository: https://charts.example/stable\n")],
        );
        let opts = BuildOptions {
            local_dependencies: true,
            fetched_dependencies: vec![FetchedDependency {
                name: "db".into(),
                version: "1.4.0".into(),
                tgz: db.clone(),
            }],
            ..Default::default()
        };
        let b = package_dir(&dir, src.path(), "app", &opts).unwrap();
        let out = unpack(&b.tgz);
        assert_eq!(
            std::fs::read(out.path().join("app/charts/db-1.4.0.tgz")).unwrap(),
            db
        );
        // Not a chart, or another chart: the build fails naming the dependency.
        for tgz in [b"not a chart".to_vec(), app_tgz] {
            let opts = BuildOptions {
                fetched_dependencies: vec![FetchedDependency {
                    name: "db".into(),
                    version: "1.4.0".into(),
                    tgz,
                }],
                ..opts.clone()
            };
            let e = package_dir(&dir, src.path(), "app", &opts).unwrap_err();
            assert_eq!(e.reason, build_reason::DEPENDENCY_BUILD);
            assert!(e.message.contains("dependency 'db' version '1.4.0'"), "{e}");
        }
    }

    #[test]
    fn pulled_archives_stay_as_they_are_unless_changed() {
        let src = tempfile::tempdir().unwrap();
        write(
            src.path(),
            &[
                (
                    "app/Chart.yaml",
                    "apiVersion: v2\nname: app\nversion: 0.1.0\n",
                ),
                ("app/values.yaml", "x: 1\n"),
                ("app/values-prod.yaml", "x: 2\n"),
            ],
        );
        let tgz = crate::storage::pack_dir(src.path(), &crate::storage::keep_all).unwrap();
        let b = from_archive(
            tgz.clone(),
            "app",
            &BuildOptions::default(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!((b.name.as_str(), b.version.as_str()), ("app", "0.1.0"));
        assert_eq!(b.tgz, tgz);
        assert_eq!(b.summary(), "pulled 'app' chart with version '0.1.0'");
        let opts = BuildOptions {
            values_files: effective_values_files(
                None,
                &["values.yaml".into(), "values-prod.yaml".into()],
            ),
            version_metadata: Some("3".into()),
            ..Default::default()
        };
        let b = from_archive(tgz, "app", &opts, &Default::default()).unwrap();
        assert_eq!(b.version, "0.1.0+3");
        let out = unpack(&b.tgz);
        assert_eq!(
            std::fs::read_to_string(out.path().join("app/values.yaml")).unwrap(),
            "x: 2\n"
        );
        assert!(effective_values_files(None, &["./values.yaml".into()]).is_empty());
        let e = from_archive(
            b"not a tgz".to_vec(),
            "bad",
            &BuildOptions::default(),
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(e.reason, build_reason::CHART_PULL);
    }
}
