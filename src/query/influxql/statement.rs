//! One statement's tokens: its kind, its sources, and the spans the timeshift
//! rewrite needs ([`select_aliases`], [`time_conditions`]).
//!
//! Everything here walks token slices with indices and explicit depth counters,
//! never recursion, so nesting depth costs no stack.

use std::ops::Range;

use super::lexer::{self, is_keyword, Token, TokenKind};
use super::{MeasurementName, ParseError, Source, Sources, Statement, StatementKind};

/// Most segments in `db.rp.measurement`.
const MAX_SOURCE_SEGMENTS: usize = 3;

/// Keywords that end a `SELECT`'s `WHERE` clause (InfluxDB's
/// `parseSelectStatement` order: GROUP BY, fill, ORDER BY, LIMIT, OFFSET, SLIMIT,
/// SOFFSET, tz); `fill(` and `tz(` are checked apart since they are not keywords.
const AFTER_WHERE: &[&str] = &["group", "order", "limit", "offset", "slimit", "soffset"];

/// The kind and sources of one statement: `toks` is its (non-empty) token slice,
/// with spans into `src`.
pub(super) fn classify(src: &str, toks: &[Token]) -> Result<(StatementKind, Sources), ParseError> {
    use StatementKind::*;
    let t = Tokens::new(src, toks);
    let word = |i: usize| t.word(i);
    Ok(match word(0) {
        "select" => {
            let into = t.find_top(0, |i| t.is(i, "into")).is_some();
            (
                if into { SelectInto } else { Select },
                t.select_sources(0, None)?,
            )
        }
        "explain" => {
            let select = if t.is(1, "analyze") { 2 } else { 1 };
            if t.is(select, "select") {
                (Explain, t.select_sources(select, None)?)
            } else {
                (Unknown, Sources::None)
            }
        }
        "show" => {
            let kind = match (word(1), word(2)) {
                ("measurements", _) => ShowMeasurements,
                ("measurement", "cardinality" | "exact") => ShowMeasurements,
                ("series", _) => ShowSeries,
                ("tag", "keys" | "key") => ShowTagKeys,
                ("tag", "values") => ShowTagValues,
                ("field", "keys" | "key") => ShowFieldKeys,
                ("databases", _) => ShowDatabases,
                ("retention", "policies") => ShowRetentionPolicies,
                ("users", _) => ShowUsers,
                ("shards", _) => ShowShards,
                ("stats", _) => ShowStats,
                ("diagnostics", _) => ShowDiagnostics,
                ("continuous", "queries") => ShowContinuousQueries,
                ("queries", _) => ShowQueries,
                _ => ShowOther,
            };
            let sources = match kind {
                ShowMeasurements | ShowSeries | ShowTagKeys | ShowTagValues | ShowFieldKeys => {
                    t.show_sources(kind == ShowMeasurements)?
                }
                _ => Sources::None,
            };
            (kind, sources)
        }
        "create" => match (word(1), word(2)) {
            ("database", _) => (CreateDatabase, Sources::None),
            ("retention", "policy") => (CreateRetentionPolicy, Sources::None),
            ("user", _) => (CreateUser, Sources::None),
            ("continuous", "query") => {
                // The inner SELECT's measurements default to the query's database.
                let db = t.on_database();
                let begin = t.find_top(0, |i| t.is(i, "begin")).unwrap_or(toks.len());
                (
                    CreateContinuousQuery,
                    t.select_sources(begin, db.as_deref())?,
                )
            }
            _ => (CreateOther, Sources::None),
        },
        "drop" => match word(1) {
            "measurement" => {
                let name = t
                    .ident(2)
                    .ok_or(ParseError::ExpectedMeasurement { at: t.at(2) })?;
                (Drop, Sources::Some(vec![Source::named(name)]))
            }
            "series" => (Drop, t.sources_or_all(None)?),
            _ => (Drop, Sources::None),
        },
        "delete" => (Delete, t.sources_or_all(None)?),
        "grant" => (Grant, Sources::None),
        "revoke" => (Revoke, Sources::None),
        "alter" => (Alter, Sources::None),
        "set" => (Set, Sources::None),
        "kill" => (Kill, Sources::None),
        _ => (Unknown, Sources::None),
    })
}

/// The tokens of a `SELECT` (or `SELECT ... INTO`); None for other kinds or
/// text the lexer cannot read.
fn select_tokens(statement: &Statement) -> Option<Vec<lexer::Token>> {
    matches!(
        statement.kind,
        StatementKind::Select | StatementKind::SelectInto
    )
    .then(|| lexer::tokenize(statement.text).ok())
    .flatten()
}

/// For a `SELECT` (or `SELECT ... INTO`), each `AS alias` of the field list: the
/// alias token's byte range in `statement.text` and its unquoted value.
///
/// Recognised: `AS` at the top level of the field list (before `INTO`/`FROM`),
/// followed by a bare or double-quoted identifier. Aliases inside subqueries, and
/// statements of any other kind, give nothing.
pub fn select_aliases(statement: &Statement) -> Vec<(Range<usize>, String)> {
    let Some(toks) = select_tokens(statement) else {
        return Vec::new();
    };
    let t = Tokens::new(statement.text, &toks);
    let end = t
        .find_top(1, |i| t.is(i, "from") || t.is(i, "into"))
        .unwrap_or(toks.len());
    let mut aliases = Vec::new();
    let mut depth = 0usize;
    for i in 1..end {
        depth = t.depth_after(i, depth);
        if depth == 0 && t.is(i, "as") {
            if let Some(alias) = t.ident(i + 1) {
                aliases.push((toks[i + 1].start..toks[i + 1].end, alias));
            }
        }
    }
    aliases
}

/// For a `SELECT` (or `SELECT ... INTO`), the byte ranges in `statement.text` of
/// the comparisons on `time` in the outer `WHERE` clause, so they can be rewritten.
///
/// Recognised: `time OP rhs`, where `time` may be quoted, `OP` is one of
/// `= != <> < <= > >=`, and `rhs` is `now()`, a string (`'2024-01-01T00:00:00Z'`) or
/// a number or duration (`1700000000000000000`, `1700000000000ms`), followed by any
/// number of `+ duration` / `- duration`. The comparison must stand alone between
/// `WHERE`, `AND`, `OR` and parentheses (`time > now() - 1h AND ...`,
/// `(time < 5)`). Not recognised, so not returned: the reversed form
/// (`now() - 1h < time`), bound parameters, other arithmetic, and `WHERE` clauses
/// of subqueries.
pub fn time_conditions(statement: &Statement) -> Vec<Range<usize>> {
    let Some(toks) = select_tokens(statement) else {
        return Vec::new();
    };
    let t = Tokens::new(statement.text, &toks);
    let Some(where_at) = t.find_top(0, |i| t.is(i, "where")) else {
        return Vec::new();
    };
    let end = t
        .find_top(where_at, |i| {
            AFTER_WHERE.iter().any(|k| t.is(i, k))
                || ((t.is_word(i, "fill") || t.is_word(i, "tz"))
                    && t.kind(i + 1) == Some(TokenKind::LParen))
        })
        .unwrap_or(toks.len());
    let mut found = Vec::new();
    for i in where_at + 1..end {
        let standalone = i == where_at + 1
            || t.is(i - 1, "and")
            || t.is(i - 1, "or")
            || t.kind(i - 1) == Some(TokenKind::LParen);
        if !(standalone && t.is_time(i) && t.kind(i + 1) == Some(TokenKind::Compare)) {
            continue;
        }
        let rhs = i + 2;
        let mut last = if t.is_word(rhs, "now")
            && t.kind(rhs + 1) == Some(TokenKind::LParen)
            && t.kind(rhs + 2) == Some(TokenKind::RParen)
        {
            rhs + 2
        } else if matches!(t.kind(rhs), Some(TokenKind::StringLit | TokenKind::Number)) {
            rhs
        } else {
            continue;
        };
        while last + 2 < end
            && matches!(t.text(last + 1), "+" | "-")
            && t.kind(last + 2) == Some(TokenKind::Number)
        {
            last += 2;
        }
        let next = last + 1;
        if next == end
            || t.is(next, "and")
            || t.is(next, "or")
            || t.kind(next) == Some(TokenKind::RParen)
        {
            found.push(toks[i].start..toks[last].end);
        }
    }
    found
}

impl Source {
    fn named(name: String) -> Self {
        Source {
            database: None,
            retention_policy: None,
            name: MeasurementName::Name(name),
        }
    }
}

/// A statement's tokens with the text their spans index.
struct Tokens<'a> {
    src: &'a str,
    toks: &'a [Token],
    /// For each `(`, the index of its `)`; `None` for other tokens and unclosed `(`.
    closing: Vec<Option<usize>>,
}

impl<'a> Tokens<'a> {
    fn new(src: &'a str, toks: &'a [Token]) -> Self {
        let mut closing = vec![None; toks.len()];
        let mut open = Vec::new();
        for (i, tok) in toks.iter().enumerate() {
            match tok.kind {
                TokenKind::LParen => open.push(i),
                TokenKind::RParen => {
                    if let Some(o) = open.pop() {
                        closing[o] = Some(i);
                    }
                }
                _ => {}
            }
        }
        Tokens { src, toks, closing }
    }

    fn kind(&self, i: usize) -> Option<TokenKind> {
        self.toks.get(i).map(|t| t.kind)
    }

    fn text(&self, i: usize) -> &'a str {
        self.toks.get(i).map_or("", |t| &self.src[t.start..t.end])
    }

    /// Token `i` as a lowercase keyword, or `""` if it is not a keyword (so it can
    /// be matched against keyword literals).
    fn word(&self, i: usize) -> &'static str {
        const WORDS: &[&str] = &[
            "select",
            "explain",
            "show",
            "create",
            "drop",
            "delete",
            "grant",
            "revoke",
            "alter",
            "set",
            "kill",
            "measurements",
            "measurement",
            "cardinality",
            "exact",
            "series",
            "tag",
            "keys",
            "key",
            "values",
            "field",
            "databases",
            "retention",
            "policies",
            "policy",
            "users",
            "user",
            "shards",
            "stats",
            "diagnostics",
            "continuous",
            "queries",
            "query",
            "database",
        ];
        if self.kind(i) != Some(TokenKind::Word) {
            return "";
        }
        let text = self.text(i);
        WORDS
            .iter()
            .find(|w| w.eq_ignore_ascii_case(text))
            .copied()
            .unwrap_or("")
    }

    /// Whether token `i` is the bare word `keyword` (ASCII case-insensitive).
    fn is_word(&self, i: usize, keyword: &str) -> bool {
        self.kind(i) == Some(TokenKind::Word) && self.text(i).eq_ignore_ascii_case(keyword)
    }

    /// [`Self::is_word`] for keywords, named so call sites read as grammar.
    fn is(&self, i: usize, keyword: &str) -> bool {
        self.is_word(i, keyword)
    }

    fn is_time(&self, i: usize) -> bool {
        match self.kind(i) {
            Some(TokenKind::Word) => self.text(i).eq_ignore_ascii_case("time"),
            Some(TokenKind::QuotedIdent) => lexer::unquote(self.text(i)) == "time",
            _ => false,
        }
    }

    /// Token `i` as an identifier: a bare non-keyword word, or a quoted identifier.
    fn ident(&self, i: usize) -> Option<String> {
        match self.kind(i)? {
            TokenKind::Word if !is_keyword(self.text(i)) => Some(self.text(i).to_owned()),
            TokenKind::QuotedIdent => Some(lexer::unquote(self.text(i))),
            _ => None,
        }
    }

    /// Byte offset of token `i`, or the statement's end past the last token.
    fn at(&self, i: usize) -> usize {
        self.toks.get(i).or(self.toks.last()).map_or(0, |t| {
            if i < self.toks.len() {
                t.start
            } else {
                t.end
            }
        })
    }

    /// Paren depth after token `i`, given the depth before it.
    fn depth_after(&self, i: usize, depth: usize) -> usize {
        match self.kind(i) {
            Some(TokenKind::LParen) => depth + 1,
            Some(TokenKind::RParen) => depth.saturating_sub(1),
            _ => depth,
        }
    }

    /// The first index `>= from` at paren depth 0 (counted from `from`) where
    /// `pred` holds.
    fn find_top(&self, from: usize, pred: impl Fn(usize) -> bool) -> Option<usize> {
        let mut depth = 0usize;
        for i in from..self.toks.len() {
            if depth == 0 && pred(i) {
                return Some(i);
            }
            depth = self.depth_after(i, depth);
        }
        None
    }

    /// The identifier after the first top-level `ON`.
    fn on_database(&self) -> Option<String> {
        self.find_top(0, |i| self.is(i, "on"))
            .and_then(|on| self.ident(on + 1))
    }

    /// `SHOW SERIES / TAG KEYS / TAG VALUES / FIELD KEYS / MEASUREMENTS`.
    fn show_sources(&self, measurements: bool) -> Result<Sources, ParseError> {
        let db = self.on_database();
        if let Some(from) = self.find_top(0, |i| self.is(i, "from")) {
            return self.sources_after(from, false, db.as_deref());
        }
        if measurements {
            let with = self.find_top(0, |i| self.is(i, "with") && self.is(i + 1, "measurement"));
            if let Some(op) = with.map(|w| w + 2) {
                let limits = self.text(op) == "=" || self.kind(op) == Some(TokenKind::EqRegex);
                if limits {
                    let (source, _) = self.source(op + 1, db.as_deref())?;
                    return Ok(Sources::Some(vec![source]));
                }
            }
        }
        Ok(Sources::All)
    }

    /// The top-level `FROM` list, or `All` without one (`DELETE`, `DROP SERIES`).
    fn sources_or_all(&self, db: Option<&str>) -> Result<Sources, ParseError> {
        match self.find_top(0, |i| self.is(i, "from")) {
            Some(from) => self.sources_after(from, false, db),
            None => Ok(Sources::All),
        }
    }

    fn sources_after(
        &self,
        from: usize,
        subqueries: bool,
        db: Option<&str>,
    ) -> Result<Sources, ParseError> {
        let mut found = Vec::new();
        self.source_list(from + 1, subqueries, db, &mut found)?;
        Ok(into_sources(found))
    }

    /// Sources of the `SELECT` starting at token `start`: every `FROM` list at any
    /// depth, so subqueries contribute their own, in the order written.
    fn select_sources(&self, start: usize, db: Option<&str>) -> Result<Sources, ParseError> {
        let mut found = Vec::new();
        for i in start..self.toks.len() {
            if self.is(i, "from") {
                self.source_list(i + 1, true, db, &mut found)?;
            }
        }
        // Outer lists are read before the subqueries inside them.
        found.sort_by_key(|&(at, _)| at);
        Ok(into_sources(found))
    }

    /// Reads `source {, source}` from token `i` into `found` as (offset, source).
    /// A subquery is skipped: its own `FROM` is read by the caller's scan.
    fn source_list(
        &self,
        mut i: usize,
        subqueries: bool,
        db: Option<&str>,
        found: &mut Vec<(usize, Source)>,
    ) -> Result<(), ParseError> {
        loop {
            if subqueries && self.kind(i) == Some(TokenKind::LParen) {
                if !self.is(i + 1, "select") {
                    return Err(ParseError::ExpectedMeasurement { at: self.at(i + 1) });
                }
                match self.closing[i] {
                    Some(close) => i = close + 1,
                    // Unclosed: nothing of this list follows; the backend complains.
                    None => return Ok(()),
                }
            } else {
                let at = self.at(i);
                let (source, next) = self.source(i, db)?;
                found.push((at, source));
                i = next;
            }
            if self.kind(i) != Some(TokenKind::Comma) {
                return Ok(());
            }
            i += 1;
        }
    }

    /// One `/re/`, `m`, `rp.m`, `db.rp.m`, `db..m`, `rp./re/` or `db.rp./re/` at
    /// token `i`, as InfluxDB's `parseSource`; returns it and the next index.
    fn source(&self, mut i: usize, db: Option<&str>) -> Result<(Source, usize), ParseError> {
        let expected = |i| ParseError::ExpectedMeasurement { at: self.at(i) };
        // Segments before the name; `None` is an empty one (`db..m`).
        let mut segments: Vec<Option<String>> = Vec::new();
        let name = loop {
            match self.kind(i) {
                Some(TokenKind::Regex) => {
                    i += 1;
                    break MeasurementName::Regex(lexer::regex_body(self.text(i - 1)));
                }
                _ => {
                    let ident = self.ident(i).ok_or_else(|| expected(i))?;
                    i += 1;
                    if self.kind(i) != Some(TokenKind::Dot) {
                        break MeasurementName::Name(ident);
                    }
                    segments.push(Some(ident));
                }
            }
            // At a `.`: further dots are empty segments.
            i += 1;
            while self.kind(i) == Some(TokenKind::Dot) {
                segments.push(None);
                i += 1;
            }
            if segments.len() >= MAX_SOURCE_SEGMENTS {
                return Err(expected(i));
            }
        };
        let mut segments = segments.into_iter().map(|s| s.filter(|s| !s.is_empty()));
        let (database, retention_policy) = match (segments.next(), segments.next()) {
            (Some(rp), None) => (None, rp),
            (Some(db), Some(rp)) => (db, rp),
            _ => (None, None),
        };
        let source = Source {
            database: database.or_else(|| db.map(str::to_owned)),
            retention_policy,
            name,
        };
        Ok((source, i))
    }
}

fn into_sources(found: Vec<(usize, Source)>) -> Sources {
    if found.is_empty() {
        // Only subqueries without FROM: the backend rejects it; nothing to route.
        Sources::None
    } else {
        Sources::Some(found.into_iter().map(|(_, s)| s).collect())
    }
}
