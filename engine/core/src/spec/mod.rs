//! Phase 1, parse: YAML text → [`raw::RawWorkflow`] with spans.
//!
//! Parsing uses serde-saphyr, a panic-free YAML parser that keeps source positions and
//! bounds alias expansion ("billion laughs"), with duplicate keys rejected. Files above
//! [`MAX_WORKFLOW_BYTES`] are refused before parsing.

mod path;
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
    // The path serde walked to a failing node names the field in the message.
    let mut path = None;
    serde_saphyr::with_deserializer_from_str_with_options(&file.text, options(), |de| {
        serde_path_to_error::deserialize::<_, RawWorkflow>(de).map_err(|e| {
            path = Some(e.path().clone());
            e.into_inner()
        })
    })
    .map_err(|e| Diagnostics(vec![convert_error(file, &e, path.as_ref())]))
}

/// Whether a file holds no YAML content: only blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// One serde-saphyr error as a diagnostic: its place, the field it concerns (from the path
/// serde walked to it, when the error came from deserializing) and a message in our words.
fn convert_error(file: &SourceFile, e: &serde_saphyr::Error, path: Option<&serde_path_to_error::Path>) -> Diag {
    use serde_saphyr::Error as E;
    let e = e.without_snippet();
    let span = error_span(file, e);
    // Alias errors wrap the error met while replaying the alias; say what that was.
    let inner = match e {
        E::AliasError { error, .. } => error.without_snippet(),
        other => other,
    };
    let text = &file.text;
    let at = path.map(|p| path::field_path(text, span.offset, p)).unwrap_or_default();
    let (kind, field, message, help): (DiagKind, String, String, Option<String>) = match inner {
        E::SerdeUnknownField { field, expected, .. } => {
            let help = did_you_mean(field, expected.iter().copied())
                .or_else(|| (!expected.is_empty()).then(|| format!("allowed keys here: {}", quoted_list(expected))));
            // The path ends at the unknown key itself.
            let path = match at.rsplit_once('.') {
                _ if at.is_empty() => field.to_string(),
                Some((_, last)) if last == *field => at.clone(),
                None if at == *field => at.clone(),
                _ => format!("{at}.{field}"),
            };
            (DiagKind::UnknownKey, path, format!("unknown key `{field}`"), help)
        }
        E::SerdeUnknownVariant { variant, expected, .. } => {
            let help = did_you_mean(variant, expected.iter().copied())
                .or_else(|| Some(format!("expected one of {}", quoted_list(expected))));
            (DiagKind::InvalidValue, at.clone(), format!("unknown value `{variant}`"), help)
        }
        E::SerdeMissingField { field, .. } => {
            let parent = at.clone();
            let help = parent.is_empty().then(|| "a workflow needs at least `name:` and `steps:`".to_string());
            (DiagKind::MissingKey, parent, format!("missing key `{field}`"), help)
        }
        E::DuplicateMappingKey { key, .. } => {
            let parent = at.clone();
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
            // The limit that was crossed, and the count where it was.
            use serde_saphyr::budget::BudgetBreach as B;
            let (count, what) = match breach {
                B::Nodes { nodes } => (Some(*nodes), "YAML nodes (mappings, lists and values)"),
                B::Events { events } => (Some(*events), "YAML parser events"),
                B::Depth { depth } => (Some(*depth), "levels of nesting"),
                B::ScalarBytes { total_scalar_bytes } => (Some(*total_scalar_bytes), "bytes of values"),
                B::CommentBytes { total_comment_bytes } => (Some(*total_comment_bytes), "bytes of comments"),
                B::Anchors { anchors } => (Some(*anchors), "anchors"),
                B::Aliases { aliases } => (Some(*aliases), "aliases"),
                B::Documents { documents } => (Some(*documents), "documents"),
                _ => (None, ""),
            };
            let message = match count {
                Some(n) => format!("workflow file is too large: more than {} {what}", n.saturating_sub(1)),
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
            (DiagKind::Type, at.clone(), format!("expected {}, found `{found}`", type_words(ty)), None)
        }
        E::Unexpected { expected, .. } => {
            let field = at.clone();
            let want = match *expected {
                "sequence start" | "seq" => "a list",
                "mapping start" | "map" => "a map",
                other => other,
            };
            let found = text.get(span.offset..span.offset + span.len).unwrap_or("").trim();
            if want == "a list" && (field == "run" || field.ends_with(".run")) && !found.is_empty() {
                let line = found.trim_matches(|c| c == '"' || c == '\'');
                let words: Vec<&str> = line.split_whitespace().collect();
                // A script (a block scalar, quotes, pipes...) only a shell reads: show the
                // form that runs it as is; a plain command line splits into its words.
                let script = found.starts_with(['|', '>'])
                    || found.contains('\n')
                    || line.contains(['|', '>', '<', ';', '&', '$', '`', '*', '"', '\'', '\\']);
                let help = if script {
                    "to run it through `/bin/sh`, make it a list of one item and add `shell: true`:\n  \
                     run:\n    - |\n      your script, as it is\n  shell: true"
                        .to_string()
                } else {
                    format!(
                        "write `run: [{}]`, or `run: [\"{}\"]` with `shell: true` to run it through `/bin/sh`",
                        words.join(", "),
                        words.join(" ")
                    )
                };
                (
                    DiagKind::InvalidValue,
                    field,
                    "`run` is an argv list, not a shell command line".to_string(),
                    Some(help),
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
        E::SerdeInvalidType { unexpected, expected, .. } | E::SerdeInvalidValue { unexpected, expected, .. } => {
            (DiagKind::Type, at.clone(), format!("expected {}, found {unexpected}", type_words(expected)), None)
        }
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
            let field = if kind == DiagKind::Syntax { String::new() } else { at.clone() };
            (kind, field, message, help)
        }
    };
    // In a flow list or map (`[...]`, `{...}`), YAML reads the `{` of an unquoted `${{` as
    // the start of a map: the parser's words say nothing of the expression.
    let help = match unquoted_flow_expression(text, span.offset) {
        Some(expr) if kind == DiagKind::Syntax || kind == DiagKind::Type => Some(format!(
            "quote it: an unquoted `${{{{ }}}}` inside `[...]` or `{{...}}` is read as YAML, not as an expression; write `\"{expr}\"`"
        )),
        _ => help,
    };
    let mut d = Diag::new(kind, file, span, field, message);
    if let Some(h) = help {
        d = d.with_help(h);
    }
    d
}

/// The first unquoted `${{ ... }}` on the line of `offset` (or the line before: the parser
/// may stop at the next line) that sits inside a flow list or map, as written.
fn unquoted_flow_expression(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let prev_start = text[..line_start.saturating_sub(1)].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    for line in text[prev_start..line_end].lines() {
        let code = line.split(" #").next().unwrap_or(line);
        let mut from = 0;
        while let Some(i) = code[from..].find("${{").map(|i| from + i) {
            let before = code[..i].trim_end();
            let quoted = before.ends_with(['"', '\'']);
            let in_flow = before.ends_with(['[', ',']) || (before.ends_with(':') && before.contains('{'));
            if !quoted && in_flow && (before.contains('[') || before.contains('{')) {
                let end = code[i..].find("}}").map_or(code.len(), |j| i + j + 2);
                return Some(code[i..end].to_string());
            }
            from = i + 3;
        }
    }
    None
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
    use super::*;

    fn field_of(text: &str) -> String {
        let file = SourceFile::new("wf.yaml", text);
        let d = parse(&file).expect_err("invalid");
        d.0[0].field.clone()
    }

    #[test]
    fn errors_name_their_field_by_the_path_serde_walked() {
        let step = "name: w\nsteps:\n  sim:\n    run: [echo]\n";
        assert_eq!(
            field_of(&format!("{step}    resources:\n      # note\n      cpus: 4\n")),
            "steps.sim.resources.cpus"
        );
        assert_eq!(field_of(&format!("{step}    resources:\n      ranks: [1]\n")), "steps.sim.resources.ranks");
        assert_eq!(field_of(&format!("{step}    retry: {{ count: 2, cnt: 1 }}\n")), "steps.sim.retry.cnt");
        assert_eq!(field_of(&format!("{step}    retry: {{ backoff: 1s }}\n")), "steps.sim.retry");
        assert_eq!(field_of("name: w\nsteps:\n  a:\n    run: echo hi\n"), "steps.a.run");
        // The second of two steps, and a step after a quoted one.
        let two =
            "name: w\nsteps:\n  a:\n    run: [x]\n  \"b c\":\n    run: [x]\n  d:\n    run: [y]\n    timeout: [1]\n";
        assert_eq!(field_of(two), "steps.d.timeout");
        assert_eq!(field_of("name: w\nparams:\n  n:\n    type: integer\nsteps: {}\n"), "params.n.type");
        // Not `params.n.n` (as once reported): in flow style, after another parameter, and
        // for a parameter named like the key.
        assert_eq!(field_of("name: w\nparams:\n  n: { type: integer, default: 3 }\nsteps: {}\n"), "params.n.type");
        assert_eq!(
            field_of("name: w\nparams:\n  m: { type: int }\n  n:\n    default: 1\n    type: integr\nsteps: {}\n"),
            "params.n.type"
        );
        assert_eq!(field_of("name: w\nparams:\n  type: { type: integer }\nsteps: {}\n"), "params.type.type");
        assert_eq!(field_of("name: w\nsteps:\n  - run: [a]\n"), "steps");
        assert_eq!(field_of("name: w\nstepz: 1\nsteps: {}\n"), "stepz");
        assert_eq!(field_of("steps:\n  a:\n    run: [echo]\n"), "");
        assert_eq!(field_of("name: w\nsteps:\n  a:\n    run: [x]\n  a:\n    run: [y]\n"), "steps");
    }

    #[test]
    fn an_unquoted_expression_in_a_flow_list_or_map_is_told_to_be_quoted() {
        let help = |text: &str| {
            let d = parse(&SourceFile::new("wf.yaml", text)).expect_err("invalid");
            d.0[0].help.clone().unwrap_or_default()
        };
        let h = help("name: w\nsteps:\n  a:\n    run: [echo, ${{ params.n }}]\n");
        assert!(h.starts_with("quote it") && h.contains("`\"${{ params.n }}\"`"), "{h}");
        let h = help("name: w\nsteps:\n  a:\n    run: [echo]\n    env: { N: ${{ params.n }} }\n");
        assert!(h.starts_with("quote it"), "{h}");
        // Quoted, or outside a flow collection: other problems keep their own help.
        assert_eq!(unquoted_flow_expression("run: [echo, \"${{ x }}\"]", 5), None);
        assert_eq!(unquoted_flow_expression("in: ${{ x }}", 4), None);
    }
}
