//! Tokenizer for expressions, both standalone and inside `${{ ... }}`.

use super::error::{ExprError, Span};

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Integer literal; kept unsigned so `-9223372036854775808` can be
    /// folded by the parser (the magnitude does not fit in `i64`).
    Int(u64),
    Float(f64),
    Str(String),
    Ident(String),
    True,
    False,
    Null,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Question,
    Colon,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Bang,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    /// End of a standalone expression.
    Eof,
    /// `}}` closing a template expression.
    Close,
}

impl Tok {
    /// Short description used in "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        let sym = match self {
            Tok::Int(n) => return format!("integer `{n}`"),
            Tok::Float(f) => return format!("float `{f:?}`"),
            Tok::Str(_) => return "string literal".to_string(),
            Tok::Ident(name) => return format!("name `{name}`"),
            Tok::Eof => return "end of expression".to_string(),
            Tok::True => "true",
            Tok::False => "false",
            Tok::Null => "null",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Question => "?",
            Tok::Colon => ":",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Bang => "!",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Close => "}}",
        };
        format!("`{sym}`")
    }
}

/// A token with its location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Tokenizes `src[start..]`.
///
/// In template mode (`open` is the offset of the `${{` being closed) lexing
/// stops after the first `}}` outside a string literal, which becomes a
/// [`Tok::Close`] token; otherwise lexing runs to the end and yields
/// [`Tok::Eof`]. Returns the tokens and the offset just past the last one.
pub(crate) fn tokenize(src: &str, start: usize, open: Option<usize>) -> Result<(Vec<Token>, usize), ExprError> {
    let mut lx = Lexer { src, pos: start, tokens: Vec::new() };
    loop {
        lx.skip_whitespace();
        let begin = lx.pos;
        let Some(c) = lx.peek() else {
            return match open {
                Some(open) => Err(ExprError::syntax(Span::new(open, open + 3), "expected `}}` to close `${{`")
                    .with_help("add `}}` after the expression, or write `$${{` for a literal `${{`")),
                None => {
                    lx.push(Tok::Eof, begin);
                    Ok((lx.tokens, begin))
                }
            };
        };
        if c == '}' && lx.peek_at(1) == Some('}') {
            lx.pos += 2;
            if open.is_some() {
                lx.push(Tok::Close, begin);
                return Ok((lx.tokens, lx.pos));
            }
            return Err(ExprError::syntax(Span::new(begin, lx.pos), "unexpected `}}`"));
        }
        if c.is_ascii_digit() {
            lx.number()?;
            continue;
        }
        if c == '_' || c.is_ascii_alphabetic() {
            lx.ident();
            continue;
        }
        if c == '"' || c == '\'' {
            lx.string(c)?;
            continue;
        }
        lx.pos += c.len_utf8();
        let next = lx.peek();
        let two = |lx: &mut Lexer, tok: Tok| {
            lx.pos += 1;
            tok
        };
        let tok = match (c, next) {
            ('=', Some('=')) => two(&mut lx, Tok::EqEq),
            ('!', Some('=')) => two(&mut lx, Tok::NotEq),
            ('<', Some('=')) => two(&mut lx, Tok::Le),
            ('>', Some('=')) => two(&mut lx, Tok::Ge),
            ('&', Some('&')) => two(&mut lx, Tok::AndAnd),
            ('|', Some('|')) => two(&mut lx, Tok::OrOr),
            ('(', _) => Tok::LParen,
            (')', _) => Tok::RParen,
            ('[', _) => Tok::LBracket,
            (']', _) => Tok::RBracket,
            (',', _) => Tok::Comma,
            ('.', _) => Tok::Dot,
            ('?', _) => Tok::Question,
            (':', _) => Tok::Colon,
            ('+', _) => Tok::Plus,
            ('-', _) => Tok::Minus,
            ('*', _) => Tok::Star,
            ('/', _) => Tok::Slash,
            ('%', _) => Tok::Percent,
            ('!', _) => Tok::Bang,
            ('<', _) => Tok::Lt,
            ('>', _) => Tok::Gt,
            _ => {
                let err =
                    ExprError::syntax(Span::new(begin, lx.pos), format!("unexpected character `{}`", c.escape_debug()));
                return Err(match c {
                    '=' => err.with_help("use `==` to compare values"),
                    '&' => err.with_help("use `&&` for logical and"),
                    '|' => err.with_help("use `||` for logical or"),
                    _ => err,
                });
            }
        };
        lx.push(tok, begin);
    }
}

struct Lexer<'a> {
    src: &'a str,
    /// Always on a char boundary: we only ever advance by whole chars.
    pos: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    /// Looks `n` bytes ahead; only used for ASCII look-ahead.
    fn peek_at(&self, n: usize) -> Option<char> {
        self.src.get(self.pos + n..)?.chars().next()
    }

    fn push(&mut self, tok: Tok, begin: usize) {
        self.tokens.push(Token { tok, span: Span::new(begin, self.pos) });
    }

    fn skip_whitespace(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    /// Consumes `[0-9_]*`, returning the digits with underscores removed.
    fn digits(&mut self, out: &mut String) {
        while let Some(c) = self.peek() {
            match c {
                '0'..='9' => out.push(c),
                '_' => {}
                _ => break,
            }
            self.pos += 1;
        }
    }

    fn number(&mut self) -> Result<(), ExprError> {
        let begin = self.pos;
        let mut text = String::new();
        self.digits(&mut text);
        let mut is_float = false;
        let bad = |lx: &Lexer, help: &str| {
            let span = Span::new(begin, lx.pos);
            ExprError::syntax(span, format!("invalid number literal `{}`", lx.src.get(begin..lx.pos).unwrap_or("")))
                .with_help(help.to_string())
        };
        if self.peek() == Some('.') {
            // `1.` followed by a name is most likely a typo for a field
            // access on a number; insist on digits after the point.
            if !self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
                return Err(bad(self, "write at least one digit after `.`, e.g. `1.0`"));
            }
            self.pos += 1;
            text.push('.');
            self.digits(&mut text);
            is_float = true;
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.pos += 1;
            text.push('e');
            if let Some(sign @ ('+' | '-')) = self.peek() {
                self.pos += 1;
                text.push(sign);
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(bad(self, "an exponent needs digits, e.g. `1e-3`"));
            }
            self.digits(&mut text);
            is_float = true;
        }
        if self.src.get(..self.pos).is_some_and(|s| s.ends_with('_')) {
            return Err(bad(self, "`_` may only separate digits, e.g. `1_000`"));
        }
        if self.peek().is_some_and(|c| c == '_' || c.is_ascii_alphanumeric()) {
            while self.peek().is_some_and(|c| c == '_' || c.is_ascii_alphanumeric()) {
                self.pos += 1;
            }
            return Err(bad(self, "names cannot start with a digit"));
        }
        let span = Span::new(begin, self.pos);
        let tok = if is_float {
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Tok::Float(f),
                _ => {
                    return Err(ExprError::syntax(span, "float literal is out of range"));
                }
            }
        } else {
            // Accept up to 2^63 so the parser can fold `-9223372036854775808`.
            match text.parse::<u64>() {
                Ok(n) if n <= 1u64 << 63 => Tok::Int(n),
                _ => {
                    return Err(ExprError::syntax(span, "integer literal is too large")
                        .with_help("integers are 64-bit signed; use a float like `1e20`"));
                }
            }
        };
        self.push(tok, begin);
        Ok(())
    }

    fn ident(&mut self) {
        let begin = self.pos;
        // Hyphens are only part of a name in a dotted position
        // (`steps.flood-sim.out`), never in the first segment, so that
        // `a-b` written without spaces still means something sensible.
        let after_dot = matches!(self.tokens.last(), Some(Token { tok: Tok::Dot, .. }));
        while let Some(c) = self.peek() {
            let continues = c == '_' || c.is_ascii_alphanumeric();
            // A hyphen must be followed by another name character, so a
            // name never ends in `-` (`n- 1` is still a subtraction).
            let hyphen =
                after_dot && c == '-' && self.peek_at(1).is_some_and(|d| d == '_' || d.is_ascii_alphanumeric());
            if !(continues || hyphen) {
                break;
            }
            self.pos += 1;
        }
        let name = self.src.get(begin..self.pos).unwrap_or("").to_string();
        let tok = match name.as_str() {
            _ if after_dot => Tok::Ident(name),
            "true" => Tok::True,
            "false" => Tok::False,
            "null" => Tok::Null,
            _ => Tok::Ident(name),
        };
        self.push(tok, begin);
    }

    fn string(&mut self, quote: char) -> Result<(), ExprError> {
        let begin = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(ExprError::syntax(Span::new(begin, self.pos), "unterminated string literal")
                    .with_help(format!("add a closing {quote}")));
            };
            self.pos += c.len_utf8();
            if c == quote {
                break;
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let esc_start = self.pos - 1;
            let Some(e) = self.peek() else { continue };
            self.pos += e.len_utf8();
            out.push(match e {
                '\\' => '\\',
                '\'' => '\'',
                '"' => '"',
                'n' => '\n',
                't' => '\t',
                _ => {
                    return Err(ExprError::syntax(
                        Span::new(esc_start, self.pos),
                        format!("unknown escape sequence `\\{e}`"),
                    )
                    .with_help("supported escapes are `\\\\`, `\\'`, `\\\"`, `\\n` and `\\t`"));
                }
            });
        }
        self.push(Tok::Str(out), begin);
        Ok(())
    }
}
