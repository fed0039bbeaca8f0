//! Phase 1, parse: YAML text → [`raw::RawWorkflow`] with spans.
//!
//! Parsing uses serde-saphyr, a panic-free YAML parser that keeps source positions and
//! bounds alias expansion ("billion laughs"), with duplicate keys rejected. Files above
//! [`MAX_WORKFLOW_BYTES`] are refused before parsing.

pub mod raw;
pub mod schema;
pub mod span;

use std::path::Path;

use crate::diag::{Diag, DiagKind, Diagnostics};
use crate::suggest::did_you_mean;
use raw::RawWorkflow;
use span::{SourceFile, Span};

/// Largest workflow file accepted (4 MiB): real workflows are a few KiB; anything larger is
/// almost certainly the wrong file or hostile input.
pub const MAX_WORKFLOW_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a workflow file, refusing oversized and non-UTF-8 files.
#[allow(clippy::result_large_err)] // a Diag is built once per failed read; boxing buys nothing
pub fn read_source(path: &Path) -> Result<SourceFile, Diag> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Diag::detached(DiagKind::Io, "", io_message(&shown, &e)))?;
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
    let bytes = std::fs::read(path).map_err(|e| Diag::detached(DiagKind::Io, "", io_message(&shown, &e)))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Diag::detached(DiagKind::Io, "", format!("`{shown}` is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
    })?;
    Ok(SourceFile::new(path, text))
}

/// "cannot read `x`: ..." in our style (lowercase, no "(os error 2)").
fn io_message(shown: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("`{shown}` does not exist"),
        std::io::ErrorKind::PermissionDenied => format!("cannot read `{shown}`: permission denied"),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            format!("cannot read `{shown}`: {}", lowercase_first(text))
        }
    }
}

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    // Bound alias replay well below the library default: a workflow has no reason to expand
    // more than a few thousand nodes through aliases.
    o.alias_limits.max_total_replayed_events = 100_000;
    o.alias_limits.max_alias_expansions_per_anchor = 1_000;
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // YAML 1.2 core booleans only: with the 1.1 set, a sweep over `[x, y, n]` or countries
    // `[se, no]` would silently turn `y`/`no` into booleans (the "Norway problem").
    o.strict_booleans = true;
    o.with_snippet = false;
    o
}

/// Parses a workflow's text into its raw shape.
pub fn parse(file: &SourceFile) -> Result<RawWorkflow, Diagnostics> {
    if is_blank(&file.text) {
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

/// Whether a file holds no YAML content: only blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// One serde-saphyr error as a diagnostic: its place, the field it concerns (recovered from
/// the indentation around that place) and a message in our words.
fn convert_error(file: &SourceFile, e: &serde_saphyr::Error) -> Diag {
    use serde_saphyr::Error as E;
    let e = e.without_snippet();
    let span = error_span(file, e);
    // Alias errors wrap the error met while replaying the alias; say what that was.
    let inner = match e {
        E::AliasError { error, .. } => error.without_snippet(),
        other => other,
    };
    let text = &file.text;
    let (kind, field, message, help): (DiagKind, String, String, Option<String>) = match inner {
        E::SerdeUnknownField { field, expected, .. } => {
            let help = did_you_mean(field, expected.iter().copied())
                .or_else(|| (!expected.is_empty()).then(|| format!("allowed keys here: {}", quoted_list(expected))));
            let parent = yaml_path(text, span.offset, false);
            let path = if parent.is_empty() { field.to_string() } else { format!("{parent}.{field}") };
            (DiagKind::UnknownKey, path, format!("unknown key `{field}`"), help)
        }
        E::SerdeUnknownVariant { variant, expected, .. } => {
            let help = did_you_mean(variant, expected.iter().copied())
                .or_else(|| Some(format!("expected one of {}", quoted_list(expected))));
            (DiagKind::InvalidValue, yaml_path(text, span.offset, true), format!("unknown value `{variant}`"), help)
        }
        E::SerdeMissingField { field, .. } => {
            let parent = yaml_path(text, span.offset, false);
            let help = parent.is_empty().then(|| "a workflow needs at least `name:` and `steps:`".to_string());
            (DiagKind::MissingKey, parent, format!("missing key `{field}`"), help)
        }
        E::DuplicateMappingKey { key, .. } => {
            let parent = yaml_path(text, span.offset, false);
            let what = key.as_deref().map_or_else(|| "duplicate key".to_string(), |k| format!("duplicate key `{k}`"));
            let help = if parent == "steps" {
                "step names must be unique; rename one of the steps"
            } else {
                "each key can appear only once in a map"
            };
            (DiagKind::DuplicateName, parent, what, Some(help.to_string()))
        }
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => (
            DiagKind::TooLarge,
            String::new(),
            "yaml aliases expand to too many nodes".to_string(),
            Some("anchors and aliases (`&name`, `*name`) are for small repeated values; write the values out".into()),
        ),
        E::Budget { breach, .. } => {
            // `Nodes { nodes: 250001 }`: the limit's name and the count where it was crossed
            // (the breach type itself is not exported by serde-saphyr).
            let debug = format!("{breach:?}");
            let kind = debug.split([' ', '{']).next().unwrap_or_default();
            let count: Option<u64> = debug.chars().filter(char::is_ascii_digit).collect::<String>().parse().ok();
            let what = match kind {
                "Nodes" => "YAML nodes (mappings, lists and values)",
                "Events" => "YAML parser events",
                "Depth" => "levels of nesting",
                "ScalarBytes" => "bytes of values",
                "CommentBytes" => "bytes of comments",
                "Anchors" => "anchors",
                "Aliases" => "aliases",
                "Documents" => "documents",
                _ => "",
            };
            let message = match count {
                Some(n) if !what.is_empty() => format!("workflow file is too large: more than {} {what}", n - 1),
                _ => format!(
                    "workflow file is too large: {}",
                    lowercase_first(&strip_location_suffix(&inner.to_string()))
                ),
            };
            (
                DiagKind::TooLarge,
                String::new(),
                message,
                Some("generate large ensembles and sweeps with `scatter:` over `range(...)` or a list parameter, or split the workflow into sub-workflows (`imports:`)".into()),
            )
        }
        E::Eof { .. } => (DiagKind::Syntax, String::new(), "unexpected end of file".to_string(), None),
        E::MultipleDocuments { .. } => (
            DiagKind::Syntax,
            String::new(),
            "a workflow file holds one yaml document, but a second one starts here".to_string(),
            Some("remove the `---` line and what follows, or move it to its own file".into()),
        ),
        E::InvalidScalar { ty, .. } => {
            let found = text.get(span.offset..span.offset + span.len).unwrap_or("").trim();
            (
                DiagKind::Type,
                yaml_path(text, span.offset, true),
                format!("expected {}, found `{found}`", type_words(ty)),
                None,
            )
        }
        E::Unexpected { expected, .. } => {
            let field = yaml_path(text, span.offset, true);
            let want = match *expected {
                "sequence start" | "seq" => "a list",
                "mapping start" | "map" => "a map",
                other => other,
            };
            let found = text.get(span.offset..span.offset + span.len).unwrap_or("").trim();
            if want == "a list" && (field == "run" || field.ends_with(".run")) && !found.is_empty() {
                let words: Vec<&str> = found.trim_matches(|c| c == '"' || c == '\'').split_whitespace().collect();
                (
                    DiagKind::InvalidValue,
                    field,
                    "`run` is an argv list, not a shell command line".to_string(),
                    Some(format!(
                        "write `run: [{}]`, or `run: [\"{}\"]` with `shell: true` to run it through `/bin/sh`",
                        words.join(", "),
                        words.join(" ")
                    )),
                )
            } else {
                let help = match (field.as_str(), want) {
                    ("", "a map") => Some("a workflow is a map with at least `name:` and `steps:`".to_string()),
                    ("steps", "a map") if text[span.offset..].starts_with('-') => {
                        Some("write each step as `NAME:` with its keys below it, not as a `- ` list item".to_string())
                    }
                    ("steps", "a map") => {
                        Some("add steps below `steps:`, each as `NAME:` with its keys below it".into())
                    }
                    _ => None,
                };
                if found.is_empty() || found.contains('\n') {
                    (DiagKind::Type, field, format!("expected {want}"), help)
                } else {
                    (DiagKind::Type, field, format!("expected {want}, found `{found}`"), help)
                }
            }
        }
        E::SerdeInvalidType { unexpected, expected, .. } | E::SerdeInvalidValue { unexpected, expected, .. } => (
            DiagKind::Type,
            yaml_path(text, span.offset, true),
            format!("expected {}, found {unexpected}", type_words(expected)),
            None,
        ),
        E::ExternalMessage { .. } | E::IndentationError { .. } | E::ContainerEndMismatch { .. } => {
            let msg = lowercase_first(&strip_location_suffix(&inner.to_string()));
            let help = if msg.contains("tab") {
                Some("indent with spaces: yaml does not allow tabs for indentation")
            } else if msg.contains("recursion limit") {
                Some("lists and maps are nested too deeply; workflows need only a few levels")
            } else if msg.contains("quote") {
                Some("end the string with the same quote it starts with")
            } else if msg.contains("block mapping") || msg.contains("indent") || msg.contains("mapping values") {
                Some("check the indentation: keys of one map start in the same column, values further right")
            } else {
                None
            };
            (DiagKind::Syntax, String::new(), format!("invalid yaml: {msg}"), help.map(String::from))
        }
        other => {
            let msg = strip_location_suffix(&other.to_string());
            let (kind, message, help) = classify(&msg);
            let field = if kind == DiagKind::Syntax { String::new() } else { yaml_path(text, span.offset, true) };
            (kind, field, message, help)
        }
    };
    let mut d = Diag::new(kind, file, span, field, message);
    if let Some(h) = help {
        d = d.with_help(h);
    }
    d
}

/// Byte span of an error. Scanner errors carry only a line and a column (in characters).
fn error_span(file: &SourceFile, e: &serde_saphyr::Error) -> Span {
    let Some(loc) = e.location() else { return Span::default() };
    let s = loc.span();
    if let Some(o) = s.byte_offset() {
        return Span::new(o as usize, s.byte_len().unwrap_or(0) as usize);
    }
    if loc.line() == 0 {
        return Span::default();
    }
    let start = file.offset_of(loc.line() as usize, loc.column() as usize);
    let len = file.text[start..].chars().take(s.len().max(1) as usize).map(char::len_utf8).sum();
    Span::new(start, len)
}

fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

/// serde's "expected" phrases for our types, in plain words.
fn type_words(expected: &str) -> String {
    match expected {
        "u32" | "u64" | "usize" => "a non-negative integer".into(),
        "i64" | "i32" => "an integer".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" | "bool" => "`true` or `false`".into(),
        "a sequence" => "a list".into(),
        "a map" => "a map".into(),
        other => other.to_string(),
    }
}

/// Best-effort dotted path (`steps.sim.resources`) of the YAML node at `offset`, read from
/// the block indentation above it. With `leaf`, a `key:` written before `offset` on the
/// same line is included. Flow collections (`{...}`, `[...]`) add no levels.
fn yaml_path(text: &str, offset: usize, leaf: bool) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let (content_col, key) = line_key(&text[line_start..line_end]);
    let mut indent = content_col.min(offset - line_start);
    let mut parts = vec![];
    if leaf
        && let Some((k, colon)) = key
        && line_start + colon <= offset
    {
        parts.push(k);
    }
    for l in text[..line_start].lines().rev() {
        if indent == 0 {
            break;
        }
        let t = l.trim_start_matches(' ');
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let line_indent = l.len() - t.len();
        let (col, key) = line_key(l);
        // `- key:` lines: the key sits at `col`, the sequence item at `line_indent`; a block
        // sequence may be indented as far as its parent key.
        let dash = col > line_indent;
        if col < indent {
            if let Some((k, _)) = key {
                parts.push(k);
            }
            indent = if dash { line_indent + 1 } else { col };
        } else if dash && line_indent < indent {
            indent = line_indent + 1;
        }
    }
    parts.reverse();
    // Flow collections opened earlier on the same line (`retry: { cnt: 1 }`).
    parts.extend(flow_parents(&text[line_start..offset]));
    parts.join(".")
}

/// Keys of the flow mappings and sequences still open at the end of `prefix` (the part of a
/// line before a place): `  retry: { count: 2, bad` → `["retry"]`. Quoted text is skipped.
fn flow_parents(prefix: &str) -> Vec<String> {
    let mut stack: Vec<String> = vec![];
    let mut last_key = String::new();
    let mut token = String::new();
    let mut quote: Option<char> = None;
    for c in prefix.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            ':' => {
                last_key = token.trim().trim_start_matches("- ").to_string();
                token.clear();
            }
            '{' | '[' => {
                stack.push(std::mem::take(&mut last_key));
                token.clear();
            }
            '}' | ']' => {
                stack.pop();
                token.clear();
            }
            ',' => {
                token.clear();
                last_key.clear();
            }
            _ => token.push(c),
        }
    }
    stack.into_iter().filter(|k| !k.is_empty()).collect()
}

/// The column where a line's content starts (after any `- `) and its leading `key:` with
/// the byte index of the colon.
fn line_key(line: &str) -> (usize, Option<(String, usize)>) {
    let mut rest = line.trim_start_matches(' ');
    while let Some(r) = rest.strip_prefix("- ") {
        rest = r.trim_start_matches(' ');
    }
    let col = line.len() - rest.len();
    let colon = rest.char_indices().find(|&(i, c)| c == ':' && rest[i + 1..].chars().next().is_none_or(|n| n == ' '));
    let key = colon.and_then(|(i, _)| {
        let k = rest[..i].trim();
        let plain = !k.is_empty() && !k.starts_with(['[', '{', '#', '&', '*', '!']) && !k.contains(['"', '\'']);
        plain.then(|| (k.to_string(), col + i))
    });
    (col, key)
}

fn strip_location_suffix(msg: &str) -> String {
    let first_line = msg.lines().next().unwrap_or(msg);
    match first_line.find(" at line ") {
        Some(i) => first_line[..i].to_string(),
        None => first_line.to_string(),
    }
}

/// Fallback for errors without a dedicated case: turns serde's text into our style.
fn classify(msg: &str) -> (DiagKind, String, Option<String>) {
    if msg.contains("untagged enum Scalar") {
        return (DiagKind::Type, "expected a single value (a number, a string or a boolean)".into(), None);
    }
    if msg.contains("duplicate") {
        return (DiagKind::DuplicateName, lowercase_first(msg), Some("each key can appear only once in a map".into()));
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

#[cfg(test)]
mod tests {
    use super::yaml_path;

    #[test]
    fn yaml_path_follows_block_indentation() {
        let t = "name: x\nsteps:\n  a:\n    run: [echo]\n    # note\n    resources:\n      cpus: 4\n";
        let at = |needle: &str| t.find(needle).unwrap();
        assert_eq!(yaml_path(t, at("cpus"), false), "steps.a.resources");
        assert_eq!(yaml_path(t, at("4\n"), true), "steps.a.resources.cpus");
        assert_eq!(yaml_path(t, at("[echo]"), true), "steps.a.run");
        assert_eq!(yaml_path(t, at("steps"), false), "");
        let l = "steps:\n  - run: [a]\n    out: x\n";
        assert_eq!(yaml_path(l, l.find('-').unwrap(), true), "steps");
        assert_eq!(yaml_path(l, l.find(" x").unwrap() + 1, true), "steps.out");
        let flat = "steps:\n- run:\n    - 1\n";
        assert_eq!(yaml_path(flat, flat.find('1').unwrap(), true), "steps.run");
        let flow = "steps:\n  a:\n    retry: { count: 2, cnt: 1 }\n    x: { \"q:{\": [1, {y: 2, bad: 3}] }\n";
        assert_eq!(yaml_path(flow, flow.find("cnt").unwrap(), false), "steps.a.retry");
        // A quoted key is not named, nor is a list element.
        assert_eq!(yaml_path(flow, flow.find("bad").unwrap(), false), "steps.a.x");
    }
}
