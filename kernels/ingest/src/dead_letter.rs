//! The dead-letter file: one JSON line per rejected message, never a silent drop.
//!
//! ```json
//! {"window":3,"topic":"gauges/g1","received":1733400000.512,"reason":"out_of_range",
//!  "detail":"field `level` is 51, above the maximum 50","payload":"{\"sensor\": ..."}
//! ```
//!
//! `payload` is the message as text when it is UTF-8; otherwise `payload_hex` holds its
//! bytes in hexadecimal. Lines of a window are appended and flushed to disk before the
//! window is committed (see [`crate::state`]).

use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::IngestError;
use crate::record::Rejection;

/// One rejected message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Topic it arrived on.
    pub topic: String,
    /// Wall-clock time of arrival, Unix seconds.
    pub received: f64,
    /// Why it was rejected.
    pub rejection: Rejection,
    /// The payload as received.
    pub payload: Vec<u8>,
}

#[derive(Serialize)]
struct Line<'a> {
    window: u64,
    topic: &'a str,
    received: f64,
    reason: &'static str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends the dead letters of window `window` to `path`, flushes them to disk and returns
/// the file's new length.
pub fn append(path: &Path, window: u64, letters: &[DeadLetter]) -> Result<u64, IngestError> {
    let io = |action: &'static str| move |source| IngestError::Io { path: path.to_path_buf(), action, source };
    let mut text = Vec::new();
    for d in letters {
        let utf8 = std::str::from_utf8(&d.payload).ok();
        let line = Line {
            window,
            topic: &d.topic,
            received: d.received,
            reason: d.rejection.kind.code(),
            detail: &d.rejection.detail,
            payload: utf8,
            payload_hex: utf8.is_none().then(|| hex(&d.payload)),
        };
        serde_json::to_writer(&mut text, &line).map_err(|e| IngestError::Io {
            path: path.to_path_buf(),
            action: "encode a line of",
            source: e.into(),
        })?;
        text.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io("open"))?;
    if !text.is_empty() {
        f.write_all(&text).map_err(io("append to"))?;
        f.sync_data().map_err(io("flush"))?;
    }
    Ok(f.metadata().map_err(io("read"))?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RejectKind;

    #[test]
    fn lines_keep_the_payload_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let d = |payload: &[u8]| DeadLetter {
            topic: "t/1".into(),
            received: 1.5,
            rejection: Rejection::new(RejectKind::NotJson, "the payload is not JSON"),
            payload: payload.to_vec(),
        };
        let len = append(&path, 7, &[d(b"{\"a\""), d(&[0xff, 0x00])]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(len, text.len() as u64);
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["payload"], "{\"a\"");
        assert_eq!(lines[0]["reason"], "not_json");
        assert_eq!(lines[0]["window"], 7);
        assert_eq!(lines[1]["payload_hex"], "ff00");
        assert_eq!(append(&path, 8, &[]).unwrap(), len);
    }
}
