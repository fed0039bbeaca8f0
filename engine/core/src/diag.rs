//! Diagnostics about workflow files: a message, the file, labelled spans and a hint.
//!
//! Every problem found while reading a workflow becomes one [`Diag`]; phases collect all of
//! them and return a [`Diagnostics`] list so a user sees every problem at once, each at
//! `file:line:col` with a caret snippet (rendered by miette).

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

use crate::spec::span::{SourceFile, Span};

/// Kinds of workflow problems; the code shown in messages (`twinflow::unknown-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum DiagKind {
    Io,
    TooLarge,
    Syntax,
    UnknownKey,
    Type,
    MissingKey,
    InvalidName,
    DuplicateName,
    UnknownReference,
    Cycle,
    Expression,
    ScatterLength,
    PathEscape,
    InvalidValue,
    Import,
    Param,
    Program,
}

impl DiagKind {
    /// Stable code for the kind.
    pub fn code(self) -> &'static str {
        match self {
            DiagKind::Io => "twinflow::io",
            DiagKind::TooLarge => "twinflow::too-large",
            DiagKind::Syntax => "twinflow::syntax",
            DiagKind::UnknownKey => "twinflow::unknown-key",
            DiagKind::Type => "twinflow::type",
            DiagKind::MissingKey => "twinflow::missing-key",
            DiagKind::InvalidName => "twinflow::invalid-name",
            DiagKind::DuplicateName => "twinflow::duplicate-name",
            DiagKind::UnknownReference => "twinflow::unknown-reference",
            DiagKind::Cycle => "twinflow::cycle",
            DiagKind::Expression => "twinflow::expression",
            DiagKind::ScatterLength => "twinflow::scatter-length",
            DiagKind::PathEscape => "twinflow::path-escape",
            DiagKind::InvalidValue => "twinflow::invalid-value",
            DiagKind::Import => "twinflow::import",
            DiagKind::Param => "twinflow::param",
            DiagKind::Program => "twinflow::program",
        }
    }
}

/// One problem in a workflow file.
pub struct Diag {
    /// What kind of problem.
    pub kind: DiagKind,
    /// Field path (`steps.sim.resources.ranks`), empty when it concerns the whole file.
    pub field: String,
    /// Lowercase message without trailing period.
    pub message: String,
    /// The file.
    pub file: Option<SourceFile>,
    /// Labelled spans; the first is the primary location.
    pub labels: Vec<(Span, String)>,
    /// How to fix it, when known.
    pub help: Option<String>,
    source: Option<NamedSource<Arc<str>>>,
}

impl Diag {
    /// A problem at one span of `file`.
    pub fn new(
        kind: DiagKind,
        file: &SourceFile,
        span: Span,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.into(),
            message: message.into(),
            source: Some(NamedSource::new(file.display_path(), file.text.clone())),
            file: Some(file.clone()),
            labels: vec![(span, String::new())],
            help: None,
        }
    }

    /// A problem not tied to a place in a file (unreadable file, bad `-p` value).
    pub fn detached(kind: DiagKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            field: field.into(),
            message: message.into(),
            file: None,
            labels: vec![],
            help: None,
            source: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the primary label text.
    pub fn with_label(mut self, text: impl Into<String>) -> Self {
        if let Some(first) = self.labels.first_mut() {
            first.1 = text.into();
        }
        self
    }

    /// Adds a secondary labelled span.
    pub fn with_secondary(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push((span, text.into()));
        self
    }

    /// `file:line:col` of the primary span, when there is one.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        let (span, _) = self.labels.first()?;
        let (line, col) = file.line_col(span.offset);
        Some(format!("{}:{line}:{col}", file.display_path()))
    }
}

impl fmt::Debug for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Diag")
            .field("kind", &self.kind)
            .field("field", &self.field)
            .field("message", &self.message)
            .field("location", &self.location())
            .finish()
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.kind.code()))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.source.is_none() || self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().enumerate().map(|(i, (span, text))| {
            let label = if text.is_empty() { None } else { Some(text.clone()) };
            if i == 0 {
                LabeledSpan::new_primary_with_span(label, *span)
            } else {
                LabeledSpan::new_with_span(label, *span)
            }
        })))
    }
}

/// Every problem found in a workflow; returned by parse/validate/compile when any exist.
#[derive(Debug, Default)]
pub struct Diagnostics(pub Vec<Diag>);

impl Diagnostics {
    /// Appends one.
    pub fn push(&mut self, d: Diag) {
        self.0.push(d);
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// `Err(self)` if there are any.
    pub fn into_result<T>(self, ok: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() { Ok(ok) } else { Err(self) }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            1 => write!(f, "{}", self.0[0]),
            n => write!(f, "{n} problems in workflow"),
        }
    }
}

impl std::error::Error for Diagnostics {}

/// "did you mean" hints (in [`crate::suggest`]), here for callers that build diagnostics.
pub use crate::suggest::did_you_mean;
