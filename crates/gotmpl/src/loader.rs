//! Chart loading the way Helm's `loader` package does it: a chart is a list
//! of files (read from a directory, honouring `.helmignore`, or from a
//! `.tgz` archive whose top directory is stripped), sorted into Chart.yaml,
//! values.yaml, values.schema.json, templates/, crds/, subcharts under
//! charts/ (directories and archives) and the remaining `.Files`.

use crate::value::Value;
use crate::{yaml, Error};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

/// A loaded chart with its dependency settings from the parent.
#[derive(Clone)]
pub(crate) struct Chart {
    /// Name used in template paths and values (alias if any).
    pub name: String,
    pub metadata: BTreeMap<String, Value>,
    pub values: Value,
    /// (path relative to chart root, content)
    pub templates: Vec<(String, String)>,
    pub files: Rc<BTreeMap<String, Vec<u8>>>,
    /// crds/ files with a manifest extension, in load order.
    pub crds: Vec<(String, Vec<u8>)>,
    pub schema: Option<Vec<u8>>,
    pub subcharts: Vec<Chart>,
    /// `condition` from the parent's dependency entry.
    pub condition: Option<String>,
    /// `tags` from the parent's dependency entry.
    pub tags: Vec<String>,
    pub is_library: bool,
}

impl Chart {
    /// The `dependencies` entries of Chart.yaml.
    pub fn dependencies(&self) -> Vec<BTreeMap<String, Value>> {
        match self.metadata.get("dependencies") {
            Some(Value::List(l)) => l
                .iter()
                .filter_map(|d| match d {
                    Value::Map(m) => Some(m.borrow().clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn other<E: std::fmt::Display>(ctx: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Other(format!("{ctx}: {e}"))
}

/// Loads a chart from a directory or a `.tgz` archive, failing the way
/// `helm template` does for a name that is not a chart.
pub(crate) fn load(path: &Path) -> Result<Chart, Error> {
    let shown = path.display().to_string();
    let Ok(meta) = std::fs::metadata(path) else {
        // Helm reads a name that is neither absolute nor starts with `.` as
        // a chart in a repository (`repo/chart`).
        return Err(Error::Other(
            if path.is_absolute() || shown.starts_with('.') {
                format!("path {} not found", crate::gofmt::go_quote(&shown))
            } else if let Some((repo, _)) = shown.split_once('/') {
                format!("repo {repo} not found")
            } else {
                format!(
                    "non-absolute URLs should be in form of repo_name/path_to_chart, got: {shown}"
                )
            },
        ));
    };
    let abs = absolute(path);
    if meta.is_dir() {
        let chart_yaml = abs.join("Chart.yaml");
        if !chart_yaml.exists() {
            let c = chart_yaml.display();
            return Err(Error::Other(format!(
                "unable to detect chart at {c}: open {c}: no such file or directory"
            )));
        }
        let files = dir_files(path)?;
        from_files(files)
    } else {
        let data = std::fs::read(path).map_err(other(&shown))?;
        if !data.starts_with(&[0x1f, 0x8b, 0x08]) {
            let a = abs.display();
            return Err(Error::Other(
                if shown.ends_with(".yml") || shown.ends_with(".yaml") {
                    format!("file '{a}' seems to be a YAML file, but expected a gzipped archive")
                } else {
                    format!(
                        "file '{a}' does not appear to be a gzipped archive; got '{}'",
                        sniffed_type(&data)
                    )
                },
            ));
        }
        let files = archive_files(&data).map_err(|e| match e {
            Error::Other(m) if m.starts_with("failed to read chart archive") => {
                Error::Other("unable to load chart archive".into())
            }
            e => e,
        })?;
        from_files(files)
    }
}

/// Go's `filepath.Abs`: joined to the working directory and cleaned.
fn absolute(path: &Path) -> std::path::PathBuf {
    let joined = std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let mut out = std::path::PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// What Go's `http.DetectContentType` says of a file's first 512 bytes (a
/// zero-padded buffer, so short files look binary), for the two answers a
/// non-archive chart file gets in practice.
fn sniffed_type(data: &[u8]) -> &'static str {
    let head = &data[..data.len().min(512)];
    let binary = head.len() < 512
        || head.iter().any(|&b| {
            b <= 0x08 || b == 0x0b || (0x0e..=0x1a).contains(&b) || (0x1c..=0x1f).contains(&b)
        });
    if binary {
        "application/octet-stream"
    } else if std::str::from_utf8(head).is_ok()
        || std::str::from_utf8(&head[..head.len() - 3]).is_ok()
    {
        "text/plain; charset=utf-8"
    } else {
        "text/plain; charset=windows-1252"
    }
}

/// Loads a chart from the bytes of a `.tgz` archive.
pub(crate) fn load_archive(data: &[u8]) -> Result<Chart, Error> {
    from_files(archive_files(data)?)
}

/// `.helmignore` rules (Helm's `ignore` package: `filepath.Match` patterns,
/// `!` negation, a trailing `/` for directories only, patterns without `/`
/// matched against the base name, a leading `/` anchoring at the root).
struct Ignore {
    rules: Vec<Rule>,
}

struct Rule {
    pattern: String,
    negate: bool,
    dir_only: bool,
    base_only: bool,
}

impl Ignore {
    fn parse(text: &str) -> Result<Ignore, Error> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let mut r = line.trim();
            if r.is_empty() || r.starts_with('#') {
                continue;
            }
            if r.contains("**") {
                return Err(Error::Other(
                    "double-star (**) syntax is not supported".into(),
                ));
            }
            let negate = r.starts_with('!');
            if negate {
                r = &r[1..];
            }
            let dir_only = r.ends_with('/');
            let r = r.trim_end_matches('/');
            let (pattern, base_only) = if let Some(a) = r.strip_prefix('/') {
                (a.to_string(), false)
            } else {
                (r.to_string(), !r.contains('/'))
            };
            if !pattern.is_empty() && !valid_pattern(&pattern) {
                return Err(Error::Other("syntax error in pattern".into()));
            }
            rules.push(Rule {
                pattern,
                negate,
                dir_only,
                base_only,
            });
        }
        // Helm's AddDefaults: dotfiles in templates/ are never templates.
        rules.push(Rule {
            pattern: "templates/.?*".into(),
            negate: false,
            dir_only: false,
            base_only: false,
        });
        Ok(Ignore { rules })
    }

    fn ignored(&self, path: &str, is_dir: bool) -> bool {
        if path.is_empty() || path == "." || path == "./" {
            return false;
        }
        for r in &self.rules {
            if r.dir_only && !is_dir {
                continue;
            }
            let subject = if r.base_only {
                path.rsplit('/').next().unwrap_or(path)
            } else {
                path
            };
            let m = fnmatch(&r.pattern, subject);
            if r.negate {
                if m {
                    return false;
                }
                continue;
            }
            if m {
                return true;
            }
        }
        false
    }
}

fn valid_pattern(p: &str) -> bool {
    let mut depth = 0;
    for c in p.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ => {}
        }
    }
    depth == 0
}

/// Go's `filepath.Match`: `*` (no `/`), `?`, `[...]` classes with ranges and
/// `^` negation, `\` escapes.
pub(crate) fn fnmatch(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, chars consumed incl. ']').
        let mut i = 0;
        let negate = p.first() == Some(&'^');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == '\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            let mut hi = lo;
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                hi = p[i + 2];
                if hi == '\\' {
                    hi = *p.get(i + 3)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 1;
        }
        None
    }
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len())
                .take_while(|i| *i == 0 || n[i - 1] != '/')
                .any(|i| rec(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && n[0] != '/' && rec(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                if *c == '/' {
                    return false;
                }
                match class(&p[1..], *c) {
                    Some((true, used)) => rec(&p[1 + used..], &n[1..]),
                    _ => false,
                }
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && rec(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && rec(&p[1..], &n[1..]),
        }
    }
    rec(&p, &n)
}

/// Every regular file of a chart directory (paths relative, `/`-separated,
/// sorted like Go's `filepath.Walk`), minus what `.helmignore` excludes.
fn dir_files(root: &Path) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let ignore = match std::fs::read_to_string(root.join(".helmignore")) {
        Ok(t) => Ignore::parse(&t)?,
        Err(_) => Ignore::parse("")?,
    };
    let mut out = Vec::new();
    walk(root, "", &ignore, &mut out)?;
    Ok(out)
}

fn walk(
    root: &Path,
    rel: &str,
    ignore: &Ignore,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), Error> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(other(&dir.display().to_string()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        // Follow symlinks like Helm's sympath.Walk; the directory entry
        // already knows the type of anything else.
        let ft = e.file_type().map_err(other(&p))?;
        let md = if ft.is_symlink() {
            Some(std::fs::metadata(e.path()).map_err(other(&p))?)
        } else {
            None
        };
        let (is_dir, is_file) = match &md {
            Some(md) => (md.is_dir(), md.is_file()),
            None => (ft.is_dir(), ft.is_file()),
        };
        if is_dir {
            if ignore.ignored(&p, true) {
                continue;
            }
            walk(root, &p, ignore, out)?;
        } else {
            if ignore.ignored(&p, false) {
                continue;
            }
            if !is_file {
                return Err(Error::Other(format!(
                    "cannot load irregular file {} as it has file mode type bits set",
                    root.join(&p).display()
                )));
            }
            let data = std::fs::read(e.path()).map_err(other(&p))?;
            out.push((p, data));
        }
    }
    Ok(())
}

/// The files of a gzipped chart archive, with the top directory stripped.
fn archive_files(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let gz = flate2::read::GzDecoder::new(data);
    let mut ar = tar::Archive::new(gz);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let entries = ar
        .entries()
        .map_err(|e| Error::Other(format!("failed to read chart archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::Other(format!("failed to read chart archive: {e}")))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| Error::Other(format!("failed to read chart archive: {e}")))?
            .to_string_lossy()
            .replace('\\', "/");
        let mut parts = path.splitn(2, '/');
        parts.next();
        let Some(name) = parts.next() else { continue };
        if name.is_empty() {
            continue;
        }
        if name.split('/').any(|p| p == "..") {
            return Err(Error::Other(format!(
                "chart illegally references parent directory: {name}"
            )));
        }
        let mut buf = Vec::new();
        entry
            .read_to_end(&mut buf)
            .map_err(|e| Error::Other(format!("failed to read chart archive: {e}")))?;
        out.push((name.to_string(), buf));
    }
    if out.is_empty() {
        return Err(Error::Other("no files in chart archive".into()));
    }
    Ok(out)
}

/// Helm's `LoadFiles`.
fn from_files(files: Vec<(String, Vec<u8>)>) -> Result<Chart, Error> {
    let mut chart_yaml = None;
    let mut values_text = None;
    let mut schema = None;
    let mut templates = Vec::new();
    let mut crds = Vec::new();
    let mut other_files = BTreeMap::new();
    let mut sub_groups: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (name, data) in files {
        match name.as_str() {
            "Chart.yaml" => chart_yaml = Some(data),
            "values.yaml" => values_text = Some(data),
            "values.schema.json" => schema = Some(data),
            "Chart.lock" | "requirements.yaml" | "requirements.lock" => {}
            n if n.starts_with("templates/") => {
                let text = String::from_utf8(data)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                templates.push((name.clone(), text))
            }
            n if n.starts_with("charts/") => {
                let rest = &n["charts/".len()..];
                if rest.ends_with(".prov") {
                    other_files.insert(name.clone(), data);
                    continue;
                }
                let (cname, _) = rest.split_once('/').unwrap_or((rest, ""));
                sub_groups
                    .entry(cname.to_string())
                    .or_default()
                    .push((rest.to_string(), data));
            }
            _ => {
                if name.starts_with("crds/")
                    && [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e))
                {
                    crds.push((name.clone(), data.clone()));
                }
                other_files.insert(name, data);
            }
        }
    }
    let Some(chart_yaml) = chart_yaml else {
        return Err(Error::Other("Chart.yaml file is missing".into()));
    };
    let meta = yaml::from_yaml_str(&String::from_utf8_lossy(&chart_yaml))
        .map_err(|e| Error::Other(format!("cannot load Chart.yaml: {e}")))?;
    let meta = match meta {
        Value::Map(m) => m.borrow().clone(),
        _ => return Err(Error::Other("cannot load Chart.yaml: not a mapping".into())),
    };
    validate_metadata(&meta)?;
    let name = meta
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let values = match values_text {
        Some(t) => match yaml::from_yaml_str_go(&String::from_utf8_lossy(&t)).map_err(|e| {
            Error::Other(format!(
                "cannot load values.yaml: cannot unmarshal yaml document: error converting YAML to JSON: {e}"
            ))
        })?
        {
            Value::Nil => Value::empty_map(),
            v @ Value::Map(_) => v,
            _ => {
                return Err(Error::Other(
                    "cannot load values.yaml: error unmarshaling JSON: json: cannot unmarshal array into Go value of type map[string]interface {}".into(),
                ))
            }
        },
        None => Value::empty_map(),
    };
    let mut subcharts = Vec::new();
    for (cname, group) in sub_groups {
        if group.len() == 1 && group[0].0 == cname {
            // A file directly in charts/: an archive (others are ignored as
            // Helm does for non-chart files like READMEs).
            if cname.ends_with(".tgz") || cname.ends_with(".tar.gz") {
                let sub = load_archive(&group[0].1).map_err(|e| {
                    Error::Other(format!("error unpacking subchart {cname} in {name}: {e}"))
                })?;
                subcharts.push(sub);
            }
            continue;
        }
        let prefix = format!("{cname}/");
        let files: Vec<(String, Vec<u8>)> = group
            .into_iter()
            .filter_map(|(p, d)| p.strip_prefix(&prefix).map(|s| (s.to_string(), d)))
            .collect();
        let sub = from_files(files).map_err(|e| {
            Error::Other(format!("error unpacking subchart {cname} in {name}: {e}"))
        })?;
        subcharts.push(sub);
    }
    let is_library = meta.get("type").and_then(|v| v.as_str()) == Some("library");
    Ok(Chart {
        name,
        metadata: meta,
        values,
        templates,
        files: Rc::new(other_files),
        crds,
        schema,
        subcharts,
        condition: None,
        tags: Vec::new(),
        is_library,
    })
}

/// Helm's `Metadata.Validate` (the checks `helm template` hits).
fn validate_metadata(meta: &BTreeMap<String, Value>) -> Result<(), Error> {
    let s = |k: &str| {
        meta.get(k)
            .map(crate::gofmt::sprint_value)
            .unwrap_or_default()
    };
    if s("apiVersion").is_empty() {
        return Err(Error::Other(
            "validation: chart.metadata.apiVersion is required".into(),
        ));
    }
    if s("name").is_empty() {
        return Err(Error::Other(
            "validation: chart.metadata.name is required".into(),
        ));
    }
    let name = s("name");
    if name.contains('/') || name.contains('\\') || name == "." || name == ".." {
        return Err(Error::Other(format!(
            "validation: chart.metadata.name {name:?} is invalid"
        )));
    }
    let version = s("version");
    if version.is_empty() {
        return Err(Error::Other(
            "validation: chart.metadata.version is required".into(),
        ));
    }
    if crate::semver::parse_version(&version).is_err() {
        return Err(Error::Other(format!(
            "validation: chart.metadata.version {version:?} is invalid"
        )));
    }
    let ty = s("type");
    if !ty.is_empty() && ty != "application" && ty != "library" {
        return Err(Error::Other(
            "validation: chart.metadata.type must be application or library".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `helm template x NAME` errors for names that are not charts (Helm v4.3.1).
    #[test]
    fn fails_like_helm_for_what_is_not_a_chart() {
        let err = |p: &Path| match load(p) {
            Err(Error::Other(m)) => m,
            _ => panic!("{} loaded", p.display()),
        };
        let dir = std::env::temp_dir().join(format!("trueup-notachart-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        std::fs::write(dir.join("Chart.yaml"), "name: x\n").unwrap();
        std::fs::write(dir.join("short.txt"), "hello").unwrap();
        std::fs::write(dir.join("long.txt"), "a".repeat(600)).unwrap();
        std::fs::write(dir.join("bad.tgz"), b"\x1f\x8b\x08\x00garbage").unwrap();
        let d = dir.display();
        assert_eq!(
            err(Path::new("no-such-chart-here")),
            "non-absolute URLs should be in form of repo_name/path_to_chart, got: no-such-chart-here"
        );
        assert_eq!(err(Path::new("somerepo/chart")), "repo somerepo not found");
        assert_eq!(err(Path::new("./nope")), "path \"./nope\" not found");
        assert_eq!(
            err(&dir.join("empty")),
            format!("unable to detect chart at {d}/empty/Chart.yaml: open {d}/empty/Chart.yaml: no such file or directory")
        );
        assert_eq!(
            err(&dir.join("Chart.yaml")),
            format!(
                "file '{d}/Chart.yaml' seems to be a YAML file, but expected a gzipped archive"
            )
        );
        assert_eq!(
            err(&dir.join("short.txt")),
            format!("file '{d}/short.txt' does not appear to be a gzipped archive; got 'application/octet-stream'")
        );
        assert_eq!(
            err(&dir.join("long.txt")),
            format!("file '{d}/long.txt' does not appear to be a gzipped archive; got 'text/plain; charset=utf-8'")
        );
        assert_eq!(err(&dir.join("bad.tgz")), "unable to load chart archive");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn go_filepath_match() {
        assert!(fnmatch("*.txt", "a.txt"));
        assert!(!fnmatch("*.txt", "d/a.txt"));
        assert!(fnmatch("d/*.txt", "d/a.txt"));
        assert!(fnmatch("[a-c]x", "bx"));
        assert!(!fnmatch("[^a-c]x", "bx"));
        assert!(fnmatch("a?c", "abc"));
        assert!(fnmatch(r"a\*", "a*"));
    }

    #[test]
    fn helmignore_rules() {
        let ig = Ignore::parse("# c\n*.bak\n/secret.txt\ndocs/\n!keep.bak\n").unwrap();
        assert!(ig.ignored("x/y.bak", false));
        assert!(ig.ignored("secret.txt", false));
        assert!(!ig.ignored("sub/secret.txt", false));
        assert!(ig.ignored("docs", true));
        assert!(!ig.ignored("docs", false));
        assert!(ig.ignored("templates/.hidden", false));
    }
}
