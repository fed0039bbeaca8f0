//! Source files and spans: every name and reference in a workflow keeps where it was written.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::{JsonSchema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// A workflow source file: its path as given by the user and its full text.
#[derive(Clone)]
pub struct SourceFile {
    /// Path as the user wrote it (or as resolved from an `imports:` entry).
    pub path: PathBuf,
    /// The file's text.
    pub text: Arc<str>,
}

impl fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SourceFile {
    /// Wraps text read from `path`.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        Self { path: path.into(), text: text.into() }
    }

    /// The path for messages.
    pub fn display_path(&self) -> String {
        self.path.display().to_string()
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// Byte offset of a 1-based line and column (in characters); clamped to the text.
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let mut start = 0;
        for _ in 1..line {
            match self.text[start..].find('\n') {
                Some(i) => start += i + 1,
                None => return self.text.len(),
            }
        }
        let rest = &self.text[start..];
        let line_text = &rest[..rest.find('\n').unwrap_or(rest.len())];
        start + line_text.char_indices().nth(col.saturating_sub(1)).map_or(line_text.len(), |(i, _)| i)
    }

    /// Directory that relative paths in this file are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// [`Self::dir`] as an absolute path, for paths handed to steps: a step runs in its own
    /// attempt directory, where a path relative to the workflow file means nothing.
    pub fn abs_dir(&self) -> PathBuf {
        absolute(self.dir())
    }
}

/// `p` made absolute against the current directory (lexically: no symlinks resolved, and
/// `p` need not exist); unchanged if that fails.
pub fn absolute(p: &Path) -> PathBuf {
    let p = if p.as_os_str().is_empty() { Path::new(".") } else { p };
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Byte range of a YAML node in its source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Byte offset of the start.
    pub offset: usize,
    /// Length in bytes (0 when only the start is known).
    pub len: usize,
}

impl Span {
    /// A span with a start and length.
    pub const fn new(offset: usize, len: usize) -> Self {
        Self { offset, len }
    }

    /// A sub-span at `start..end` (bytes) inside this span's text, as used for an expression
    /// inside a YAML scalar. Quoted scalars start one byte later than their text.
    pub fn sub(self, start: usize, end: usize) -> Self {
        Self { offset: self.offset + start, len: end.saturating_sub(start) }
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.offset, s.len).into()
    }
}

/// A value with the span of the YAML node it came from.
///
/// Equality and hashing look at the value only, so `Sp<String>` works as a map key that can
/// be looked up by `&str`.
#[derive(Clone, Debug)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Sp<T> {
    /// Pairs a value with a span.
    pub const fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
    /// A value made up by the engine (defaults), with an empty span.
    pub fn synthetic(value: T) -> Self {
        Self { value, span: Span::default() }
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Sp<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for Sp<T> {}
impl<T: Hash> Hash for Sp<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state)
    }
}
impl std::borrow::Borrow<str> for Sp<String> {
    fn borrow(&self) -> &str {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let loc = s.referenced;
        let span = loc.span();
        let span = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) => Span::new(o as usize, l as usize),
            (Some(o), None) => Span::new(o as usize, 0),
            _ => Span::default(),
        };
        Ok(Sp { value: s.value, span })
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}
