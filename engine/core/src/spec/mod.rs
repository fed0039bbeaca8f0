//! Phase 1, parse: YAML text → [`raw::RawWorkflow`] with spans.
//!
//! Parsing uses serde-saphyr, a panic-free YAML parser that keeps source positions and
//! bounds alias expansion ("billion laughs"), with duplicate keys rejected. Files above
//! [`MAX_WORKFLOW_BYTES`] are refused before parsing.

pub mod raw;
pub mod schema;
pub mod span;

use std::path::Path;

use crate::diag::{Diag, DiagKind, Diagnostics, did_you_mean};
use raw::RawWorkflow;
use span::{SourceFile, Span};

/// Largest workflow file accepted (4 MiB): real workflows are a few KiB; anything larger is
/// almost certainly the wrong file or hostile input.
pub const MAX_WORKFLOW_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a workflow file, refusing oversized and non-UTF-8 files.
pub fn read_source(path: &Path) -> Result<SourceFile, Diag> {
    let shown = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| Diag::detached(DiagKind::Io, "", format!("cannot read `{shown}`: {e}")))?;
    if !meta.is_file() {
        return Err(Diag::detached(DiagKind::Io, "", format!("`{shown}` is not a file")));
    }
    if meta.len() > MAX_WORKFLOW_BYTES {
        return Err(Diag::detached(
            DiagKind::TooLarge,
            "",
            format!("`{shown}` is {} bytes; workflow files are limited to {MAX_WORKFLOW_BYTES} bytes", meta.len()),
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Diag::detached(DiagKind::Io, "", format!("cannot read `{shown}`: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Diag::detached(DiagKind::Io, "", format!("`{shown}` is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
    })?;
    Ok(SourceFile::new(path, text))
}

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    // Bound alias replay well below the library default: a workflow has no reason to expand
    // more than a few thousand nodes through aliases.
    o.alias_limits.max_total_replayed_events = 100_000;
    o.alias_limits.max_alias_expansions_per_anchor = 1_000;
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    o.with_snippet = false;
    o
}

/// Parses a workflow's text into its raw shape.
pub fn parse(file: &SourceFile) -> Result<RawWorkflow, Diagnostics> {
    if file.text.trim().is_empty() {
        let mut d = Diagnostics::default();
        d.push(
            Diag::new(DiagKind::MissingKey, file, Span::default(), "", "workflow file is empty")
                .with_help("a workflow needs at least `name:` and `steps:`"),
        );
        return Err(d);
    }
    serde_saphyr::from_str_with_options::<RawWorkflow>(&file.text, options()).map_err(|e| {
        let mut d = Diagnostics::default();
        d.push(convert_error(file, &e));
        d
    })
}

fn convert_error(file: &SourceFile, e: &serde_saphyr::Error) -> Diag {
    let span = e
        .location()
        .map(|loc| {
            let s = loc.span();
            Span::new(s.byte_offset().unwrap_or(0) as usize, s.byte_len().unwrap_or(0) as usize)
        })
        .unwrap_or_default();
    let raw = e.without_snippet().to_string();
    // serde-saphyr appends " at line L, column C" to some messages; miette shows the place.
    let msg = strip_location_suffix(&raw);
    let (kind, message, help) = classify(&msg);
    let mut d = Diag::new(kind, file, span, "", message);
    if let Some(h) = help {
        d = d.with_help(h);
    }
    d
}

fn strip_location_suffix(msg: &str) -> String {
    let first_line = msg.lines().next().unwrap_or(msg);
    match first_line.rfind(" at line ") {
        Some(i) => first_line[..i].to_string(),
        None => first_line.to_string(),
    }
}

/// Turns serde's messages into ours: "unknown field `x`, expected one of ..." becomes an
/// unknown-key diagnostic with a "did you mean" hint.
fn classify(msg: &str) -> (DiagKind, String, Option<String>) {
    if let Some(rest) = msg.find("unknown field `").map(|i| &msg[i + "unknown field `".len()..]) {
        let name = rest.split('`').next().unwrap_or("");
        let expected: Vec<&str> =
            rest.split('`').skip(1).enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, s)| s).collect();
        let help = did_you_mean(name, expected.iter().copied()).or_else(|| {
            (!expected.is_empty()).then(|| {
                format!(
                    "allowed keys here: {}",
                    expected.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                )
            })
        });
        return (DiagKind::UnknownKey, format!("unknown key `{name}`"), help);
    }
    if let Some(i) = msg.find("unknown variant `") {
        let rest = &msg[i + "unknown variant `".len()..];
        let name = rest.split('`').next().unwrap_or("");
        let expected: Vec<&str> =
            rest.split('`').skip(1).enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, s)| s).collect();
        let help = did_you_mean(name, expected.iter().copied()).or_else(|| {
            Some(format!(
                "expected one of {}",
                expected.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            ))
        });
        return (DiagKind::InvalidValue, format!("unknown value `{name}`"), help);
    }
    if let Some(i) = msg.find("missing field `") {
        let name = msg[i + "missing field `".len()..].split('`').next().unwrap_or("");
        return (DiagKind::MissingKey, format!("missing key `{name}`"), None);
    }
    if msg.contains("duplicate") {
        return (DiagKind::DuplicateName, lowercase_first(msg), Some("names must be unique within a map".into()));
    }
    if msg.contains("invalid type") || msg.contains("expected") {
        return (DiagKind::Type, lowercase_first(msg), None);
    }
    (DiagKind::Syntax, lowercase_first(msg), None)
}

fn lowercase_first(s: &str) -> String {
    let s = s.trim().trim_end_matches('.');
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
