//! Streaming reader of a Helm repository `index.yaml` that keeps only the
//! entries of one chart.
//!
//! Large public indexes are 40-100 MB; parsing them whole into a YAML tree
//! costs many times that in memory (Flux's source-controller is known to be
//! OOM-killed on them). The index is a block mapping whose `entries:` key maps
//! chart names to lists of versions, so a line scanner can find the requested
//! chart's block by indentation, skip every other chart without
//! materializing it, and hand only that block to the YAML parser. Peak memory
//! is one line of input plus the chart's own entries.
//!
//! Indexes that are not in that shape (flow style / JSON) fall back to a full
//! parse, which is correct but not memory-bounded.

use std::io::BufRead;

/// One version of a chart in the index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChartVersion {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default, rename = "apiVersion")]
    pub api_version: Option<String>,
    #[serde(default, rename = "appVersion")]
    pub app_version: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("reading the index: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid index.yaml: {0}")]
    Yaml(String),
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether a line is blank or a comment (never ends a block).
fn is_filler(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The mapping key of `line` (after indentation), unquoted, if it is a
/// `key:` line.
fn key_of(line: &str) -> Option<String> {
    let t = line.trim_start();
    let (k, rest) = if let Some(q) = t.strip_prefix('"') {
        let end = q.find('"')?;
        (q[..end].to_string(), &q[end + 1..])
    } else if let Some(q) = t.strip_prefix('\'') {
        let end = q.find('\'')?;
        (q[..end].to_string(), &q[end + 1..])
    } else {
        let end = t.find(':')?;
        (t[..end].trim_end().to_string(), &t[end..])
    };
    let rest = rest.trim_start();
    if rest.starts_with(':') && (rest.len() == 1 || rest[1..].starts_with([' ', '\t'])) {
        Some(k)
    } else {
        None
    }
}

/// Reads `index.yaml` from `r` and returns the entries of `chart` (empty if
/// the chart is not in the index).
pub fn read_chart_entries<R: BufRead>(
    mut r: R,
    chart: &str,
) -> Result<Vec<ChartVersion>, IndexError> {
    let mut line = String::new();
    // States: looking for `entries:` at column 0; inside entries looking for
    // the chart key; inside the chart's block collecting lines.
    let mut in_entries = false;
    let mut chart_indent: Option<usize> = None;
    let mut collecting = false;
    let mut block = String::new();
    let mut saw_entries = false;
    let mut head = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        // Until `entries:` shows up the text is kept for the fallback parse.
        if !saw_entries {
            head.push_str(&line);
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if collecting {
            if is_filler(l)
                || indent_of(l) > chart_indent.unwrap_or(0)
                || (indent_of(l) == chart_indent.unwrap_or(0) && l.trim_start().starts_with('-'))
            {
                block.push_str(l);
                block.push('\n');
                continue;
            }
            // The chart's block ended; a key appears only once.
            break;
        }
        if is_filler(l) {
            continue;
        }
        let ind = indent_of(l);
        if ind == 0 {
            in_entries = key_of(l).as_deref() == Some("entries") && l.trim_end().ends_with(':');
            if in_entries {
                saw_entries = true;
                head = String::new();
            }
            chart_indent = None;
            continue;
        }
        if !in_entries {
            continue;
        }
        // The first key under entries fixes the indentation of chart names.
        let ci = *chart_indent.get_or_insert(ind);
        if ind == ci && !l.trim_start().starts_with('-') && key_of(l).as_deref() == Some(chart) {
            collecting = true;
            // Keep the key so the block parses as a one-key mapping.
            block.push_str(l.trim_start());
            block.push('\n');
        }
    }
    if !saw_entries {
        return full_parse(&head, chart);
    }
    if block.is_empty() {
        return Ok(Vec::new());
    }
    // Re-indent: the block's lines keep their original indentation, which is
    // deeper than the key's; YAML only needs it consistent, so dedent by ci.
    let ci = chart_indent.unwrap_or(0);
    let mut text = String::with_capacity(block.len());
    for (i, l) in block.lines().enumerate() {
        if i == 0 {
            text.push_str(l);
        } else if l.len() >= ci && l[..ci].trim().is_empty() {
            text.push_str(&l[ci..]);
        } else {
            text.push_str(l.trim_start());
        }
        text.push('\n');
    }
    let mut m: std::collections::BTreeMap<String, Option<Vec<ChartVersion>>> =
        serde_yaml::from_str(&text).map_err(|e| IndexError::Yaml(e.to_string()))?;
    Ok(m.remove(chart).flatten().unwrap_or_default())
}

/// Fallback for indexes not in block style (JSON / flow): parse everything.
fn full_parse(text: &str, chart: &str) -> Result<Vec<ChartVersion>, IndexError> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        entries: std::collections::BTreeMap<String, Vec<ChartVersion>>,
    }
    let idx: Index = serde_yaml::from_str(text).map_err(|e| IndexError::Yaml(e.to_string()))?;
    Ok(idx.entries.get(chart).cloned().unwrap_or_default())
}
