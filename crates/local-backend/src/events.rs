//! The event log: `<state>/events.jsonl`, one JSON event per line, append-only.
//!
//! Appends are one `write` of a whole line on a file opened for appending, so lines from
//! concurrent writers (tasks or processes) do not interleave. A crash can still tear the last
//! line; readers skip lines that do not parse (with a warning), and open terminates a torn tail
//! with a newline so the next append starts a clean line instead of gluing onto garbage.
//!
//! Events are not fsynced: they are information for people, not state, and one fsync per event
//! would dominate reconcile time. A process kill loses nothing (the page cache survives it); a
//! power loss may lose the last few.

use crate::LocalError;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use trueup_core::Event;

/// Events read from the log, and where to continue reading.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// The byte offset after the last complete line read; pass it to the next read to tail
    /// the log. A line still being written is left for the next read.
    pub next_offset: u64,
}

pub(crate) fn append(path: &Path, event: &Event) -> Result<(), LocalError> {
    let mut line = serde_json::to_string(event).map_err(|e| LocalError::Malformed {
        path: path.to_path_buf(),
        message: format!("cannot encode event: {e}"),
    })?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| LocalError::io(e, "opening", path))?;
    f.write_all(line.as_bytes())
        .map_err(|e| LocalError::io(e, "appending to", path))
}

/// Ends a torn last line with a newline, so that later appends start on a line of their own.
pub(crate) fn seal_torn_tail(path: &Path) -> Result<(), LocalError> {
    let mut f = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LocalError::io(e, "opening", path)),
    };
    let len = f
        .metadata()
        .map_err(|e| LocalError::io(e, "reading", path))?
        .len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))
        .and_then(|_| f.read_exact(&mut last))
        .map_err(|e| LocalError::io(e, "reading", path))?;
    if last[0] != b'\n' {
        tracing::warn!(file = %path.display(), "event log ends with a torn line (a crash while writing); it will be skipped");
        f.write_all(b"\n")
            .map_err(|e| LocalError::io(e, "repairing", path))?;
    }
    Ok(())
}

pub(crate) fn read_from(path: &Path, offset: u64) -> Result<EventPage, LocalError> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(EventPage::default()),
        Err(e) => return Err(LocalError::io(e, "opening", path)),
    };
    let len = f
        .metadata()
        .map_err(|e| LocalError::io(e, "reading", path))?
        .len();
    // A log shorter than the cursor was replaced (someone deleted it): start over.
    let offset = if offset > len { 0 } else { offset };
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_to_end(&mut buf))
        .map_err(|e| LocalError::io(e, "reading", path))?;
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut events = Vec::new();
    let mut pos = offset;
    for line in buf[..complete].split_inclusive(|b| *b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if !text.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Event>(text) {
                Ok(ev) => events.push(ev),
                Err(e) => {
                    tracing::warn!(file = %path.display(), offset = pos, "skipping an unreadable event line: {e}")
                }
            }
        }
        pos += line.len() as u64;
    }
    Ok(EventPage {
        events,
        next_offset: offset + complete as u64,
    })
}
