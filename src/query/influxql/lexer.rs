//! InfluxQL tokens: just enough to split statements and find what they read.
//!
//! [`tokenize`] turns a whole query into [`Token`]s with byte spans, dropping
//! whitespace and comments. It follows InfluxDB 1.x's scanner (see
//! <https://github.com/influxdata/influxql/blob/b05a8ba1688934336797df9b4fc6dc2512937c09/scanner.go>):
//!
//! - `'...'` strings and `"..."` identifiers end at the same quote; a backslash
//!   escapes the next character. A newline (or `\r`) before the closing quote is an
//!   error, as in InfluxDB's `ScanString`.
//! - A bare word immediately followed by `"` is one identifier whose value is the
//!   quoted part (`a"b"` is `b`), as in InfluxDB's `scanIdent`.
//! - `/.../` is a regex only where InfluxDB's parser asks for one
//!   ([`Lexer::regex_allowed`]); elsewhere `/` is division or starts a `/* */` comment.
//!   Inside a regex, `\/` is an escaped slash and any other backslash is literal,
//!   so `/a\\/` is still open, as in InfluxDB's `ScanDelimited`.
//! - `--` comments run to the end of the line, `/* */` comments do not nest.
//! - Numbers and durations (`1`, `.5`, `1.5`, `10m`, `1700000000000ms`) are one token.
//!
//! Where InfluxDB rejects a character (non-ASCII letters, stray `#`), we accept it
//! as part of a word or as an [`TokenKind::Other`] token: the backend will reject the
//! query anyway, and being lenient there cannot make us read different statements
//! or measurements than InfluxDB does when it accepts a query.

use super::ParseError;

/// What a [`Token`] is; the text is in its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenKind {
    /// An unquoted identifier or a keyword (`cpu`, `SELECT`, `température`).
    Word,
    /// `"..."`, possibly glued to a bare word before it (`a"b"`).
    QuotedIdent,
    /// `'...'`.
    StringLit,
    /// `/.../`, only where a regex may appear.
    Regex,
    /// An integer, a decimal number or a duration.
    Number,
    Dot,
    Comma,
    LParen,
    RParen,
    Semicolon,
    /// `=~`
    EqRegex,
    /// `!~`
    NotEqRegex,
    /// `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`.
    Compare,
    /// Anything else: `+ - * / % & | ^ : :: $` and characters InfluxQL does not know.
    Other,
}

/// One token; `start..end` is always a valid, non-empty slice of the lexed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

/// InfluxQL keywords (InfluxDB's `token.go`, plus `AND`, `OR`, `IN`, `TRUE`,
/// `FALSE`): a bare word spelled like one is never an identifier.
const KEYWORDS: &[&str] = &[
    "all",
    "alter",
    "analyze",
    "and",
    "any",
    "as",
    "asc",
    "begin",
    "by",
    "cardinality",
    "continuous",
    "create",
    "database",
    "databases",
    "default",
    "delete",
    "desc",
    "destinations",
    "diagnostics",
    "distinct",
    "drop",
    "duration",
    "end",
    "every",
    "exact",
    "explain",
    "false",
    "field",
    "for",
    "from",
    "grant",
    "grants",
    "group",
    "groups",
    "in",
    "inf",
    "insert",
    "into",
    "key",
    "keys",
    "kill",
    "limit",
    "measurement",
    "measurements",
    "name",
    "offset",
    "on",
    "or",
    "order",
    "password",
    "policies",
    "policy",
    "privileges",
    "queries",
    "query",
    "read",
    "replication",
    "resample",
    "retention",
    "revoke",
    "select",
    "series",
    "set",
    "shard",
    "shards",
    "show",
    "slimit",
    "soffset",
    "stats",
    "subscription",
    "subscriptions",
    "tag",
    "to",
    "true",
    "user",
    "users",
    "values",
    "where",
    "with",
    "write",
];

/// Whether `word` is a keyword, case-insensitively.
pub(super) fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// The tokens of `src`, without whitespace and comments.
///
/// # Errors
///
/// An unterminated string, quoted identifier, regex or block comment, at the byte
/// offset of its opening delimiter.
pub(super) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer {
        src,
        pos: 0,
        prev: None,
        source_context: SourceContext::None,
        enclosing: Vec::new(),
    };
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next_token()? {
        tokens.push(token);
    }
    Ok(tokens)
}

/// Whether the lexer is inside a source, where `.` (and in a list `,`) may be
/// followed by a regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceContext {
    None,
    /// After `FROM`: `a, rp./re/, (SELECT ...), /re/`.
    List,
    /// After `WITH MEASUREMENT =` or `=~`: one source, no list.
    Single,
}

struct Lexer<'a> {
    src: &'a str,
    /// Next byte to read; always on a char boundary, `<= src.len()`.
    pos: usize,
    /// The last token, which decides whether `/` starts a regex.
    prev: Option<Token>,
    /// Where a source may continue with a regex.
    source_context: SourceContext,
    /// `source_context` of each enclosing `(`, restored at its `)`, so a subquery
    /// `FROM (SELECT ...), /re/` continues the outer list.
    enclosing: Vec<SourceContext>,
}

impl Lexer<'_> {
    fn next_token(&mut self) -> Result<Option<Token>, ParseError> {
        loop {
            let bytes = self.src.as_bytes();
            let Some(&b) = bytes.get(self.pos) else {
                return Ok(None);
            };
            let start = self.pos;
            let next = bytes.get(start + 1).copied();
            let kind = match b {
                b'/' if self.regex_allowed() => {
                    self.pos = scan_regex(bytes, start)?;
                    TokenKind::Regex
                }
                b'/' if next == Some(b'*') => {
                    self.pos = scan_block_comment(bytes, start)?;
                    continue;
                }
                b'-' if next == Some(b'-') => {
                    self.pos = line_end(bytes, start);
                    continue;
                }
                b'\'' => {
                    self.pos = scan_quoted(bytes, start)
                        .ok_or(ParseError::UnterminatedString { at: start })?;
                    TokenKind::StringLit
                }
                b'"' => {
                    self.pos = scan_quoted(bytes, start)
                        .ok_or(ParseError::UnterminatedIdentifier { at: start })?;
                    TokenKind::QuotedIdent
                }
                b'0'..=b'9' => {
                    self.pos = scan_number(self.src, start);
                    TokenKind::Number
                }
                b'.' if next.is_some_and(|c| c.is_ascii_digit()) => {
                    self.pos = scan_number(self.src, start);
                    TokenKind::Number
                }
                b'.' => self.single(TokenKind::Dot),
                b',' => self.single(TokenKind::Comma),
                b'(' => self.single(TokenKind::LParen),
                b')' => self.single(TokenKind::RParen),
                b';' => self.single(TokenKind::Semicolon),
                b'=' if next == Some(b'~') => self.double(TokenKind::EqRegex),
                b'!' if next == Some(b'~') => self.double(TokenKind::NotEqRegex),
                b'!' if next == Some(b'=') => self.double(TokenKind::Compare),
                b'<' if matches!(next, Some(b'=' | b'>')) => self.double(TokenKind::Compare),
                b'>' if next == Some(b'=') => self.double(TokenKind::Compare),
                b'=' | b'<' | b'>' => self.single(TokenKind::Compare),
                _ => {
                    // Not ASCII punctuation: a whitespace, a word, or something else.
                    let c = self.src[start..].chars().next().unwrap_or('\0');
                    self.pos = start + c.len_utf8();
                    if c.is_whitespace() {
                        continue;
                    } else if is_word_start(c) {
                        self.pos = scan_word(self.src, start);
                        if bytes.get(self.pos) == Some(&b'"') {
                            let quote = self.pos;
                            self.pos = scan_quoted(bytes, quote)
                                .ok_or(ParseError::UnterminatedIdentifier { at: quote })?;
                            TokenKind::QuotedIdent
                        } else {
                            TokenKind::Word
                        }
                    } else {
                        TokenKind::Other
                    }
                }
            };
            let token = Token {
                kind,
                start,
                end: self.pos,
            };
            self.after(token);
            return Ok(Some(token));
        }
    }

    fn single(&mut self, kind: TokenKind) -> TokenKind {
        self.pos += 1;
        kind
    }

    fn double(&mut self, kind: TokenKind) -> TokenKind {
        self.pos += 2;
        kind
    }

    /// Whether InfluxDB's parser would call `parseRegex` here: after `=~` and `!~`,
    /// and where a source may start (after `FROM`, after `,` in a `FROM` list, after
    /// `.` right after a segment, after `WITH MEASUREMENT =`). There `/` always
    /// starts a regex, even `/*`, as in InfluxDB (whose regex parser does not know
    /// comments).
    fn regex_allowed(&self) -> bool {
        let Some(prev) = self.prev else {
            return false;
        };
        match prev.kind {
            TokenKind::EqRegex | TokenKind::NotEqRegex => true,
            TokenKind::Comma => self.source_context == SourceContext::List,
            TokenKind::Dot => self.source_context != SourceContext::None,
            TokenKind::Compare => self.source_context == SourceContext::Single,
            TokenKind::Word => self.word_is(prev, "from"),
            _ => false,
        }
    }

    /// Tracks `source_context` and `prev` after `token`.
    fn after(&mut self, token: Token) {
        use SourceContext as C;
        let was_measurement = self.prev.is_some_and(|p| self.word_is(p, "measurement"));
        let text = &self.src[token.start..token.end];
        self.source_context = match token.kind {
            TokenKind::Word if text.eq_ignore_ascii_case("from") => C::List,
            TokenKind::Word if is_keyword(text) => C::None,
            TokenKind::Word | TokenKind::QuotedIdent | TokenKind::Regex => self.source_context,
            // A dot continues a source only after a segment (`db.`, `"db".`, `db..`).
            TokenKind::Dot
                if self.prev.is_some_and(|p| match p.kind {
                    TokenKind::Word => !is_keyword(&self.src[p.start..p.end]),
                    TokenKind::QuotedIdent | TokenKind::Dot => true,
                    _ => false,
                }) =>
            {
                self.source_context
            }
            TokenKind::Comma if self.source_context == C::List => C::List,
            TokenKind::LParen => {
                self.enclosing.push(self.source_context);
                C::None
            }
            TokenKind::RParen => self.enclosing.pop().unwrap_or(C::None),
            TokenKind::Semicolon => {
                self.enclosing.clear();
                C::None
            }
            // `SHOW MEASUREMENTS WITH MEASUREMENT = /re/` takes a source, regex included.
            TokenKind::Compare if was_measurement && text == "=" => C::Single,
            TokenKind::EqRegex if was_measurement => C::Single,
            _ => C::None,
        };
        self.prev = Some(token);
    }

    fn word_is(&self, token: Token, keyword: &str) -> bool {
        token.kind == TokenKind::Word
            && self.src[token.start..token.end].eq_ignore_ascii_case(keyword)
    }
}

fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// End of the word starting at `start`.
fn scan_word(src: &str, start: usize) -> usize {
    src[start..]
        .char_indices()
        .find(|&(_, c)| !is_word_char(c))
        .map_or(src.len(), |(i, _)| start + i)
}

/// End of the number or duration at `start`: digits, an optional `.digits`, then
/// any word characters (`10m`, `5µs`; InfluxDB also makes these one token).
fn scan_number(src: &str, start: usize) -> usize {
    let bytes = src.as_bytes();
    let digits = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut end = digits(start);
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end = digits(end + 1);
    }
    scan_word(src, end)
}

/// End (after the closing quote) of the string or quoted identifier opening at
/// `start`, or `None` if a line or the input ends first.
///
/// Byte-wise scanning is safe on UTF-8: every delimiter is ASCII and never part of
/// a multi-byte character.
fn scan_quoted(bytes: &[u8], start: usize) -> Option<usize> {
    let quote = bytes[start];
    let mut i = start + 1;
    loop {
        match *bytes.get(i)? {
            b if b == quote => return Some(i + 1),
            b'\n' | b'\r' => return None,
            // InfluxDB rejects escapes other than \n \\ \' \"; the backend reports them.
            b'\\' => match *bytes.get(i + 1)? {
                b'\n' | b'\r' => return None,
                _ => i += 2,
            },
            _ => i += 1,
        }
    }
}

/// End (after the closing `/`) of the regex opening at `start`.
fn scan_regex(bytes: &[u8], start: usize) -> Result<usize, ParseError> {
    let unterminated = ParseError::UnterminatedRegex { at: start };
    let mut i = start + 1;
    loop {
        match *bytes.get(i).ok_or(unterminated.clone())? {
            b'/' => return Ok(i + 1),
            b'\n' | b'\r' => return Err(unterminated),
            // Only `\/` is an escape; any other backslash stands for itself and the
            // next byte is read normally (so `\\/` is `\` then an escaped `/`).
            b'\\' if bytes.get(i + 1) == Some(&b'/') => i += 2,
            _ => i += 1,
        }
    }
}

/// End (after `*/`) of the block comment opening at `start`.
fn scan_block_comment(bytes: &[u8], start: usize) -> Result<usize, ParseError> {
    bytes[start + 2..]
        .windows(2)
        .position(|w| w == b"*/")
        .map(|i| start + 2 + i + 2)
        .ok_or(ParseError::UnterminatedComment { at: start })
}

/// End of the line comment at `start` (the newline is left as whitespace).
fn line_end(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(bytes.len(), |i| start + i)
}

/// The value of a quoted identifier or string token: without quotes (and without a
/// glued bare prefix), with `\n`, `\\`, `\'`, `\"` unescaped. Other escapes, which
/// InfluxDB rejects, are kept as written.
pub(super) fn unquote(text: &str) -> String {
    let Some(open) = text.find(['"', '\'']) else {
        return text.to_owned();
    };
    let body = &text[open + 1..text.len().saturating_sub(1).max(open + 1)];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(e @ ('\\' | '\'' | '"')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The body of a regex token, with `\/` unescaped.
pub(super) fn regex_body(text: &str) -> String {
    let body = text
        .strip_prefix('/')
        .and_then(|t| t.strip_suffix('/'))
        .unwrap_or(text);
    body.replace("\\/", "/")
}
