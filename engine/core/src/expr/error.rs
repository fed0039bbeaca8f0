//! Error types shared by every stage of the expression language.

/// A half-open byte range `start..end` into the source text.
///
/// For templates the offsets are relative to the whole template string, so a
/// caller that knows where the template sits inside a larger document (for
/// example a YAML scalar) only has to add its own base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Byte offset of the first byte covered.
    pub start: usize,
    /// Byte offset one past the last byte covered.
    pub end: usize,
}

impl Span {
    /// Creates a span covering `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// Number of bytes covered.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// True when the span covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Broad classification of an [`ExprError`], for callers that want to react
/// differently (e.g. report syntax errors at load time, runtime errors later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExprErrorKind {
    /// The source text is not a well-formed template or expression.
    Syntax,
    /// An operand or argument has the wrong type.
    Type,
    /// A call names a function that does not exist.
    UnknownFunction,
    /// A function was called with the wrong number of arguments.
    Arity,
    /// The scope could not resolve a reference.
    Reference,
    /// Evaluation failed on a value: division by zero, overflow, bad
    /// conversion, index out of range, ...
    Runtime,
    /// A resource limit was hit: nesting depth, source length, list or
    /// string size.
    Limit,
}

/// An error from parsing, type checking or evaluating an expression.
///
/// `message` is lowercase without a trailing period and quotes source
/// fragments in backticks; `help` is an optional hint for the user.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
#[error("{message}")]
pub struct ExprError {
    /// What class of problem this is.
    pub kind: ExprErrorKind,
    /// Where in the source the problem is.
    pub span: Span,
    /// Human readable description, e.g. "division by zero".
    pub message: String,
    /// Optional hint, e.g. "did you mean `len`?".
    pub help: Option<String>,
}

impl ExprError {
    /// Creates an error without a help text.
    pub fn new(kind: ExprErrorKind, span: Span, message: impl Into<String>) -> Self {
        ExprError { kind, span, message: message.into(), help: None }
    }

    /// Attaches a help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub(crate) fn syntax(span: Span, message: impl Into<String>) -> Self {
        Self::new(ExprErrorKind::Syntax, span, message)
    }

    pub(crate) fn type_error(span: Span, message: impl Into<String>) -> Self {
        Self::new(ExprErrorKind::Type, span, message)
    }

    pub(crate) fn runtime(span: Span, message: impl Into<String>) -> Self {
        Self::new(ExprErrorKind::Runtime, span, message)
    }

    pub(crate) fn limit(span: Span, message: impl Into<String>) -> Self {
        Self::new(ExprErrorKind::Limit, span, message)
    }
}

/// Failure of a [`Scope`](super::Scope) or [`TypeScope`](super::TypeScope)
/// to resolve a reference; the evaluator turns it into an [`ExprError`] of
/// kind [`ExprErrorKind::Reference`] spanning the reference.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{message}")]
pub struct LookupError {
    /// Description, e.g. "unknown parameter `nn`".
    pub message: String,
    /// Optional hint, e.g. "did you mean `params.n`?".
    pub help: Option<String>,
}

impl LookupError {
    /// Creates a lookup error without help text.
    pub fn new(message: impl Into<String>) -> Self {
        LookupError { message: message.into(), help: None }
    }

    /// Attaches a help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Converts into an [`ExprError`] located at `span`.
    pub fn at(self, span: Span) -> ExprError {
        ExprError { kind: ExprErrorKind::Reference, span, message: self.message, help: self.help }
    }
}
