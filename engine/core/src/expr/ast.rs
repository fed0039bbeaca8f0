//! Syntax tree of expressions and templates.

use super::error::Span;
use super::value::Value;

/// A parsed expression: a node kind plus the source range it covers.
///
/// Obtain one from [`parse_expr`](super::parse_expr) or a template; the
/// parser guarantees the nesting limit that keeps evaluation's recursion
/// bounded, which hand-built trees would bypass.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Source range (relative to the template or expression source).
    pub span: Span,
}

/// The different kinds of expression nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal scalar: number, string, bool or null.
    Literal(Value),
    /// A list literal `[a, b, c]`.
    List(Vec<Expr>),
    /// A dotted reference such as `steps.mesh.out.grid`, resolved by the scope.
    Ref(Vec<String>),
    /// `target[index]`.
    Index {
        /// The indexed list or string.
        target: Box<Expr>,
        /// The index expression.
        index: Box<Expr>,
    },
    /// A call of a built-in function.
    Call {
        /// Function name.
        name: String,
        /// Span of the name alone.
        name_span: Span,
        /// Arguments in source order.
        args: Vec<Expr>,
    },
    /// A prefix operator.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// Its operand.
        operand: Box<Expr>,
    },
    /// An infix operator.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `cond ? then : otherwise`.
    Ternary {
        /// The condition (must be a `bool`).
        cond: Box<Expr>,
        /// Value when the condition holds.
        then: Box<Expr>,
        /// Value otherwise.
        otherwise: Box<Expr>,
    },
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// Arithmetic negation `-x`.
    Neg,
    /// Logical not `!x`.
    Not,
}

/// Infix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

impl BinaryOp {
    /// The operator as written in source.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }
}

/// A dotted reference found in an expression, e.g. `params.n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The path segments, e.g. `["steps", "mesh", "out", "grid"]`.
    pub path: Vec<String>,
    /// Where the reference appears.
    pub span: Span,
}

impl Expr {
    /// All dotted references in source order, including those inside
    /// function arguments, list literals and both ternary branches.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        self.collect_refs(&mut out);
        out
    }

    /// Recursion is bounded by the parser's nesting limit.
    pub(crate) fn collect_refs(&self, out: &mut Vec<Reference>) {
        match &self.kind {
            ExprKind::Literal(_) => {}
            ExprKind::Ref(path) => out.push(Reference { path: path.clone(), span: self.span }),
            ExprKind::List(items) | ExprKind::Call { args: items, .. } => {
                items.iter().for_each(|e| e.collect_refs(out));
            }
            ExprKind::Index { target, index } => {
                target.collect_refs(out);
                index.collect_refs(out);
            }
            ExprKind::Unary { operand, .. } => operand.collect_refs(out),
            ExprKind::Binary { lhs, rhs, .. } => {
                lhs.collect_refs(out);
                rhs.collect_refs(out);
            }
            ExprKind::Ternary { cond, then, otherwise } => {
                cond.collect_refs(out);
                then.collect_refs(out);
                otherwise.collect_refs(out);
            }
        }
    }
}

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Literal text (with `$${{` escapes already resolved).
    Text {
        /// The text.
        text: String,
        /// Where it came from in the template source.
        span: Span,
    },
    /// An embedded `${{ expr }}`.
    Expr(Expr),
}

/// A parsed template string: literal text interleaved with `${{ expr }}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Adjacent text pieces are merged, so there are never two
    /// consecutive [`Segment::Text`] entries.
    pub(crate) segments: Vec<Segment>,
}

impl Template {
    /// The segments in source order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// True when the template is exactly one `${{ expr }}` with nothing
    /// outside the braces; it then evaluates to the expression's typed value.
    pub fn is_single_expr(&self) -> bool {
        self.single_expr().is_some()
    }

    /// The expression when [`is_single_expr`](Self::is_single_expr) holds.
    pub fn single_expr(&self) -> Option<&Expr> {
        match self.segments.as_slice() {
            [Segment::Expr(e)] => Some(e),
            _ => None,
        }
    }

    /// The literal text when the template contains no expressions
    /// (escapes resolved; an empty template gives `""`).
    pub fn literal(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [] => Some(""),
            [Segment::Text { text, .. }] => Some(text),
            _ => None,
        }
    }

    /// All references of all embedded expressions, in source order.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        for seg in &self.segments {
            if let Segment::Expr(e) = seg {
                e.collect_refs(&mut out);
            }
        }
        out
    }
}
