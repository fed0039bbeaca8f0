//! Recursive-descent / Pratt parser for expressions and templates.

use super::ast::{BinaryOp, Expr, ExprKind, Segment, Template, UnaryOp};
use super::error::{ExprError, Span};
use super::functions;
use super::lexer::{Tok, Token, tokenize};
use super::value::Value;

/// Longest accepted template or expression source, in bytes.
pub const MAX_SOURCE_LEN: usize = 64 * 1024;

/// Deepest accepted nesting, counted both as parser recursion (parentheses,
/// brackets, operands) and as syntax-tree height, so evaluation, type
/// checking and dropping the tree can never overflow the stack.
pub const MAX_DEPTH: usize = 64;

// Binding powers, low to high.
const TERNARY_BP: u8 = 1;
const OR_BP: u8 = 2;
const AND_BP: u8 = 3;
const EQ_BP: u8 = 4;
const CMP_BP: u8 = 5;
const ADD_BP: u8 = 6;
const MUL_BP: u8 = 7;
const UNARY_BP: u8 = 8;

/// Parses a standalone expression (no `${{ }}` delimiters).
pub fn parse_expr(src: &str) -> Result<Expr, ExprError> {
    check_len(src)?;
    let (tokens, _) = tokenize(src, 0, None)?;
    let mut p = Parser::new(&tokens);
    let (expr, _) = p.parse_bp(0)?;
    p.expect_end()?;
    Ok(expr)
}

/// Parses a template: literal text with embedded `${{ expr }}` segments.
///
/// `$${{` produces a literal `${{`; an unterminated `${{` is an error.
/// All spans are byte offsets into `src`.
pub fn parse_template(src: &str) -> Result<Template, ExprError> {
    check_len(src)?;
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut text_start = 0;
    let mut pos = 0;
    while let Some(rest) = src.get(pos..) {
        let Some(c) = rest.chars().next() else { break };
        if rest.starts_with("$${{") {
            text.push_str("${{");
            pos += 4;
        } else if rest.starts_with("${{") {
            if !text.is_empty() {
                segments.push(Segment::Text { text: std::mem::take(&mut text), span: Span::new(text_start, pos) });
            }
            let (tokens, end) = tokenize(src, pos + 3, Some(pos))?;
            if matches!(tokens.first(), Some(Token { tok: Tok::Close, .. })) {
                return Err(ExprError::syntax(Span::new(pos, end), "empty expression")
                    .with_help("put an expression between `${{` and `}}`"));
            }
            let mut p = Parser::new(&tokens);
            let (expr, _) = p.parse_bp(0)?;
            p.expect_end()?;
            segments.push(Segment::Expr(expr));
            pos = end;
            text_start = end;
        } else {
            text.push(c);
            pos += c.len_utf8();
        }
    }
    if !text.is_empty() {
        segments.push(Segment::Text { text, span: Span::new(text_start, pos) });
    }
    Ok(Template { segments })
}

fn check_len(src: &str) -> Result<(), ExprError> {
    if src.len() > MAX_SOURCE_LEN {
        return Err(ExprError::limit(
            Span::new(0, src.len()),
            format!("expression source is too long ({} bytes, limit {MAX_SOURCE_LEN})", src.len()),
        ));
    }
    Ok(())
}

/// A parsed node together with its tree height.
type Parsed = Result<(Expr, usize), ExprError>;

static EOF: Token = Token { tok: Tok::Eof, span: Span { start: 0, end: 0 } };

struct Parser<'t> {
    /// Never empty in practice: the lexer always ends with `Eof`/`Close`.
    tokens: &'t [Token],
    pos: usize,
    depth: usize,
}

fn binary_op(tok: &Tok) -> Option<(BinaryOp, u8)> {
    Some(match tok {
        Tok::OrOr => (BinaryOp::Or, OR_BP),
        Tok::AndAnd => (BinaryOp::And, AND_BP),
        Tok::EqEq => (BinaryOp::Eq, EQ_BP),
        Tok::NotEq => (BinaryOp::Ne, EQ_BP),
        Tok::Lt => (BinaryOp::Lt, CMP_BP),
        Tok::Le => (BinaryOp::Le, CMP_BP),
        Tok::Gt => (BinaryOp::Gt, CMP_BP),
        Tok::Ge => (BinaryOp::Ge, CMP_BP),
        Tok::Plus => (BinaryOp::Add, ADD_BP),
        Tok::Minus => (BinaryOp::Sub, ADD_BP),
        Tok::Star => (BinaryOp::Mul, MUL_BP),
        Tok::Slash => (BinaryOp::Div, MUL_BP),
        Tok::Percent => (BinaryOp::Rem, MUL_BP),
        _ => return None,
    })
}

impl<'t> Parser<'t> {
    fn new(tokens: &'t [Token]) -> Self {
        Parser { tokens, pos: 0, depth: 0 }
    }

    fn peek(&self) -> &'t Token {
        self.tokens.get(self.pos).or(self.tokens.last()).unwrap_or(&EOF)
    }

    fn peek2(&self) -> &'t Token {
        self.tokens.get(self.pos + 1).unwrap_or_else(|| self.peek())
    }

    fn advance(&mut self) -> &'t Token {
        let tok = self.peek();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        tok
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<&'t Token, ExprError> {
        let tok = self.peek();
        if tok.tok == want {
            return Ok(self.advance());
        }
        Err(ExprError::syntax(tok.span, format!("expected {what}, found {}", tok.tok.describe())))
    }

    fn expect_end(&mut self) -> Result<(), ExprError> {
        let tok = self.peek();
        match tok.tok {
            Tok::Eof | Tok::Close => Ok(()),
            _ => Err(ExprError::syntax(tok.span, format!("unexpected {} after expression", tok.tok.describe()))
                .with_help("expected an operator or the end of the expression")),
        }
    }

    /// Builds a node, enforcing the tree height limit.
    fn node(&self, kind: ExprKind, span: Span, height: usize) -> Parsed {
        if height > MAX_DEPTH {
            return Err(too_deep(span));
        }
        Ok((Expr { kind, span }, height))
    }

    fn parse_bp(&mut self, min_bp: u8) -> Parsed {
        self.depth += 1;
        let result = if self.depth > MAX_DEPTH { Err(too_deep(self.peek().span)) } else { self.parse_bp_inner(min_bp) };
        self.depth -= 1;
        result
    }

    fn parse_bp_inner(&mut self, min_bp: u8) -> Parsed {
        let (mut lhs, mut height) = self.parse_prefix()?;
        let mut last_bp = None;
        loop {
            let tok = self.peek();
            if tok.tok == Tok::Question {
                if min_bp > TERNARY_BP {
                    break;
                }
                self.advance();
                let (then, th) = self.parse_bp(TERNARY_BP)?;
                self.expect(Tok::Colon, "`:` of the `? :` operator")?;
                let (otherwise, oh) = self.parse_bp(TERNARY_BP)?;
                let span = lhs.span.to(otherwise.span);
                height = 1 + height.max(th).max(oh);
                let kind =
                    ExprKind::Ternary { cond: Box::new(lhs), then: Box::new(then), otherwise: Box::new(otherwise) };
                (lhs, height) = self.node(kind, span, height)?;
                last_bp = Some(TERNARY_BP);
                continue;
            }
            let Some((op, bp)) = binary_op(&tok.tok) else {
                break;
            };
            if bp < min_bp {
                break;
            }
            // `a < b < c` parses in C but never means what it says; refuse it.
            if (bp == EQ_BP || bp == CMP_BP) && last_bp == Some(bp) {
                return Err(ExprError::syntax(lhs.span.to(tok.span), "comparison operators cannot be chained")
                    .with_help("combine comparisons with `&&`, e.g. `a < b && b < c`"));
            }
            self.advance();
            let (rhs, rh) = self.parse_bp(bp + 1)?;
            let span = lhs.span.to(rhs.span);
            height = 1 + height.max(rh);
            let kind = ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
            (lhs, height) = self.node(kind, span, height)?;
            last_bp = Some(bp);
        }
        Ok((lhs, height))
    }

    fn parse_prefix(&mut self) -> Parsed {
        let tok = self.peek();
        let op = match tok.tok {
            Tok::Minus => UnaryOp::Neg,
            Tok::Bang => UnaryOp::Not,
            _ => {
                let (expr, height) = self.parse_primary()?;
                return self.parse_postfix(expr, height);
            }
        };
        self.advance();
        let next = self.peek();
        if op == UnaryOp::Neg && next.tok == Tok::Int(1 << 63) {
            // The only literal whose magnitude exceeds i64::MAX.
            self.advance();
            return self.node(ExprKind::Literal(Value::Int(i64::MIN)), tok.span.to(next.span), 1);
        }
        let (operand, oh) = self.parse_bp(UNARY_BP)?;
        let span = tok.span.to(operand.span);
        let kind = ExprKind::Unary { op, operand: Box::new(operand) };
        self.node(kind, span, oh + 1)
    }

    fn parse_postfix(&mut self, mut expr: Expr, mut height: usize) -> Parsed {
        while self.peek().tok == Tok::LBracket {
            self.advance();
            let (index, ih) = self.parse_bp(0)?;
            let close = self.expect(Tok::RBracket, "`]` to close the index")?;
            let span = expr.span.to(close.span);
            height = 1 + height.max(ih);
            let kind = ExprKind::Index { target: Box::new(expr), index: Box::new(index) };
            (expr, height) = self.node(kind, span, height)?;
        }
        Ok((expr, height))
    }

    fn parse_primary(&mut self) -> Parsed {
        let tok = self.peek();
        let literal = match &tok.tok {
            Tok::Int(n) => match i64::try_from(*n) {
                Ok(n) => Value::Int(n),
                Err(_) => {
                    return Err(ExprError::syntax(tok.span, "integer literal is too large"));
                }
            },
            Tok::Float(f) => Value::Float(*f),
            Tok::Str(s) => Value::Str(s.clone()),
            Tok::True => Value::Bool(true),
            Tok::False => Value::Bool(false),
            Tok::Null => Value::Null,
            Tok::LParen => {
                self.advance();
                let inner = self.parse_bp(0)?;
                self.expect(Tok::RParen, "`)` to close `(`")?;
                return Ok(inner);
            }
            Tok::LBracket => {
                self.advance();
                let (items, height, close) = self.parse_seq(Tok::RBracket, "`]`")?;
                return self.node(ExprKind::List(items), tok.span.to(close), height + 1);
            }
            Tok::Ident(_) => return self.parse_name(),
            _ => {
                let err = ExprError::syntax(tok.span, format!("expected an expression, found {}", tok.tok.describe()));
                return Err(if tok.tok == Tok::Dot && matches!(self.peek2().tok, Tok::Int(_)) {
                    err.with_help("write a leading zero, e.g. `0.5`")
                } else {
                    err
                });
            }
        };
        self.advance();
        self.node(ExprKind::Literal(literal), tok.span, 1)
    }

    /// A dotted reference, or a function call when a plain name is
    /// followed by `(`.
    fn parse_name(&mut self) -> Parsed {
        let first = self.advance();
        let mut span = first.span;
        let mut path = Vec::new();
        if let Tok::Ident(name) = &first.tok {
            path.push(name.clone());
        }
        while self.peek().tok == Tok::Dot {
            self.advance();
            let seg = self.peek();
            let Tok::Ident(name) = &seg.tok else {
                let err =
                    ExprError::syntax(seg.span, format!("expected a name after `.`, found {}", seg.tok.describe()));
                return Err(match seg.tok {
                    Tok::Int(_) | Tok::Float(_) => err.with_help("use `list[0]` to index a list"),
                    _ => err,
                });
            };
            self.advance();
            path.push(name.clone());
            span = span.to(seg.span);
        }
        if self.peek().tok != Tok::LParen {
            return self.node(ExprKind::Ref(path), span, 1);
        }
        let [name] = <[String; 1]>::try_from(path).map_err(|path| {
            ExprError::syntax(span, format!("`{}` is not a function", path.join(".")))
                .with_help("only built-in functions can be called, e.g. `len(x)`")
        })?;
        self.advance();
        let (args, height, close) = self.parse_seq(Tok::RParen, "`)`")?;
        let call_span = span.to(close);
        functions::check_call(&name, span, call_span, args.len())?;
        let kind = ExprKind::Call { name, name_span: span, args };
        self.node(kind, call_span, height + 1)
    }

    /// Comma-separated expressions up to `close` (trailing comma allowed);
    /// returns them, their maximum height and the closing token's span.
    fn parse_seq(&mut self, close: Tok, what: &str) -> Result<(Vec<Expr>, usize, Span), ExprError> {
        let mut items = Vec::new();
        let mut height = 0;
        loop {
            if self.peek().tok == close {
                break;
            }
            let (item, h) = self.parse_bp(0)?;
            items.push(item);
            height = height.max(h);
            if self.peek().tok == Tok::Comma {
                self.advance();
            } else if self.peek().tok != close {
                let tok = self.peek();
                return Err(ExprError::syntax(
                    tok.span,
                    format!("expected `,` or {what}, found {}", tok.tok.describe()),
                ));
            }
        }
        let end = self.advance().span;
        Ok((items, height, end))
    }
}

fn too_deep(span: Span) -> ExprError {
    ExprError::limit(span, "expression nested too deeply")
        .with_help(format!("expressions may nest at most {MAX_DEPTH} levels"))
}
