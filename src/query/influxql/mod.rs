//! Just enough InfluxQL to route `/query`: split a query into statements, classify
//! each, and find the measurements it reads.
//!
//! The proxy never evaluates queries, so this is not a parser: it tokenizes like
//! InfluxDB 1.x (`lexer.rs` has the rules and the pinned Go source), splits on
//! `;` tokens, and reads only the clauses routing needs: the statement's leading
//! keywords, `FROM` lists (with subqueries), `ON db`, `INTO`, and
//! `WITH MEASUREMENT`. Everything else is left to the backend, which reports its own
//! errors.
//!
//! What it guarantees:
//!
//! - No input panics; work and memory are linear in the query length (no recursion,
//!   so deeply nested parentheses cannot overflow the stack).
//! - Where InfluxDB accepts a query, we split it into the same statements and find
//!   the same measurements: `;`, `FROM` and `/` inside strings, quoted identifiers,
//!   regexes and comments do not count, and a regex is lexed only where InfluxDB's
//!   parser reads one. Where InfluxDB rejects a query we may accept it (we check
//!   far less); we only reject what makes the split itself unknowable
//!   (an unterminated string, identifier, regex or comment), a `FROM` without a
//!   measurement, and a query without statements.
//!
//! # Statement forms
//!
//! | Statement | [`StatementKind`] | [`Sources`] |
//! | --- | --- | --- |
//! | `SELECT ... FROM s, ...` (subqueries: their `FROM`s) | `Select` | `Some` |
//! | `SELECT ... INTO t FROM s` (`t` is not a source) | `SelectInto` | `Some` |
//! | `EXPLAIN [ANALYZE] SELECT ...` | `Explain` | as the `SELECT` |
//! | `SHOW SERIES / TAG KEYS / TAG VALUES / FIELD KEYS [ON db] [FROM s]` | `ShowSeries`, ... | `Some` with `FROM`, else `All` |
//! | `SHOW MEASUREMENTS [ON db] [WITH MEASUREMENT = m \| =~ /re/]` | `ShowMeasurements` | `Some([m])` / `Some([/re/])`, else `All` |
//! | `SHOW ... [EXACT] CARDINALITY` of the above | the same kind | the same |
//! | `SHOW DATABASES`, `RETENTION POLICIES`, `USERS`, `SHARDS`, `STATS`, `DIAGNOSTICS`, `CONTINUOUS QUERIES`, `QUERIES` | their kind | `None` |
//! | other `SHOW` (`GRANTS`, `SHARD GROUPS`, `SUBSCRIPTIONS`, ...) | `ShowOther` | `None` |
//! | `CREATE CONTINUOUS QUERY cq ON db ... BEGIN SELECT ... END` | `CreateContinuousQuery` | the `SELECT`'s, in `db` |
//! | `CREATE DATABASE / RETENTION POLICY / USER`, other `CREATE` | their kind, `CreateOther` | `None` |
//! | `DROP MEASUREMENT m`, `DROP SERIES [FROM s]` | `Drop` | `Some`, else `All` |
//! | `DELETE [FROM s] [WHERE ...]` | `Delete` | `Some`, else `All` |
//! | other `DROP`, `GRANT`, `REVOKE` (its `FROM user` is no source), `ALTER`, `SET`, `KILL` | their kind | `None` |
//! | anything else | `Unknown` | `None` |
//!
//! `WITH MEASUREMENT =~ /re/` limits `SHOW MEASUREMENTS` to a regex source rather
//! than `All`: it lists exactly the measurements a `FROM /re/` would read, so the
//! router can narrow it the same way. `!~` and `!=` stay `All`.
//!
//! # Examples
//!
//! ```
//! use fluxgate::query::influxql::{parse_query, MeasurementName, Sources, StatementKind};
//!
//! let statements = parse_query("SELECT mean(v) FROM \"db\".\"rp\".cpu; SHOW DATABASES").unwrap();
//! assert_eq!(statements[0].kind, StatementKind::Select);
//! let Sources::Some(sources) = &statements[0].sources else { panic!() };
//! assert_eq!(sources[0].database.as_deref(), Some("db"));
//! assert_eq!(sources[0].name, MeasurementName::Name("cpu".into()));
//! assert_eq!(statements[1].sources, Sources::None);
//! ```

mod lexer;
mod statement;

#[cfg(test)]
mod naive;
#[cfg(test)]
mod tests;

use std::fmt;

use lexer::TokenKind;
pub use statement::{select_aliases, time_conditions};

/// One statement of a query, as written, with what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement without its `;` and without surrounding whitespace and
    /// comments, so statements can be joined again with `;` (a trailing `--`
    /// comment would otherwise swallow the next one). Comments inside are kept.
    pub text: &'a str,
    pub kind: StatementKind,
    pub sources: Sources,
}

/// What a statement does, from its leading keywords; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    Select,
    SelectInto,
    ShowMeasurements,
    ShowSeries,
    ShowTagKeys,
    ShowTagValues,
    ShowFieldKeys,
    ShowDatabases,
    ShowRetentionPolicies,
    ShowUsers,
    ShowShards,
    ShowStats,
    ShowDiagnostics,
    ShowContinuousQueries,
    ShowQueries,
    ShowOther,
    CreateDatabase,
    CreateRetentionPolicy,
    CreateUser,
    CreateContinuousQuery,
    CreateOther,
    /// `DROP` anything.
    Drop,
    Delete,
    Grant,
    Revoke,
    Alter,
    Set,
    Kill,
    /// `EXPLAIN [ANALYZE] SELECT`; the sources are the inner `SELECT`'s.
    Explain,
    Unknown,
}

impl StatementKind {
    /// Whether the statement changes data, schema or access: `CREATE`, `DROP`,
    /// `DELETE`, `GRANT`, `REVOKE`, `ALTER`, `SET PASSWORD`, `KILL`, and
    /// `SELECT ... INTO` (it writes points).
    ///
    /// `Unknown` counts as admin so that a statement we cannot read fails closed.
    pub fn is_admin(self) -> bool {
        use StatementKind::*;
        matches!(
            self,
            SelectInto
                | CreateDatabase
                | CreateRetentionPolicy
                | CreateUser
                | CreateContinuousQuery
                | CreateOther
                | Drop
                | Delete
                | Grant
                | Revoke
                | Alter
                | Set
                | Kill
                | Unknown
        )
    }

    /// Whether this is a `SHOW` statement.
    pub fn is_show(self) -> bool {
        use StatementKind::*;
        matches!(
            self,
            ShowMeasurements
                | ShowSeries
                | ShowTagKeys
                | ShowTagValues
                | ShowFieldKeys
                | ShowDatabases
                | ShowRetentionPolicies
                | ShowUsers
                | ShowShards
                | ShowStats
                | ShowDiagnostics
                | ShowContinuousQueries
                | ShowQueries
                | ShowOther
        )
    }
}

/// The measurements a statement reads (or, for `DROP` and `DELETE`, changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// Reads no measurement (`SHOW DATABASES`, `CREATE USER`, ...).
    None,
    /// Reads every measurement (`SHOW MEASUREMENTS`, `SHOW TAG KEYS` without `FROM`).
    All,
    /// Reads these, in the order written, duplicates kept; never empty.
    Some(Vec<Source>),
}

/// One measurement reference of a `FROM` clause.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// `db` of `db.rp.m`, else the statement's `ON db` where the grammar has one;
    /// `None` means the request's `db` parameter.
    pub database: Option<String>,
    /// `rp` of `rp.m` or `db.rp.m`; `None` for the default (also `db..m`).
    pub retention_policy: Option<String>,
    pub name: MeasurementName,
}

/// A measurement name or pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MeasurementName {
    /// The name, unquoted and unescaped.
    Name(String),
    /// The regex body between the slashes, with `\/` unescaped.
    Regex(String),
}

/// Why a query cannot be split or routed; `at` is a byte offset into the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A `'` string without its closing quote on the same line.
    UnterminatedString { at: usize },
    /// A `"` identifier without its closing quote on the same line.
    UnterminatedIdentifier { at: usize },
    /// A `/` regex without its closing slash on the same line.
    UnterminatedRegex { at: usize },
    /// A `/*` comment without `*/`.
    UnterminatedComment { at: usize },
    /// A `FROM` (or `,` in a `FROM` list) not followed by a measurement, regex or
    /// subquery; `at` is where one was expected.
    ExpectedMeasurement { at: usize },
    /// No statement at all (only whitespace, comments and `;`).
    Empty,
}

impl fmt::Display for ParseError {
    /// InfluxDB's "found ..., expected ..." shape, with a byte offset instead of
    /// line and char.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnterminatedString { at } => {
                write!(
                    f,
                    "found unterminated string at byte {at}, expected closing '"
                )
            }
            Self::UnterminatedIdentifier { at } => write!(
                f,
                "found unterminated quoted identifier at byte {at}, expected closing \""
            ),
            Self::UnterminatedRegex { at } => {
                write!(
                    f,
                    "found unterminated regex at byte {at}, expected closing /"
                )
            }
            Self::UnterminatedComment { at } => {
                write!(f, "found unterminated comment at byte {at}, expected */")
            }
            Self::ExpectedMeasurement { at } => {
                write!(f, "expected identifier, regex or subquery at byte {at}")
            }
            // InfluxDB's own message for a query without statements.
            Self::Empty => f.write_str(
                "found EOF, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, \
                 REVOKE, ALTER, SET, KILL",
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Splits `query` on `;` outside strings, quoted identifiers, regexes and comments,
/// skips empty statements, and classifies each; see the [module docs](self).
///
/// # Errors
///
/// [`ParseError`]: the first unterminated string, identifier, regex or comment in
/// the query (then no statement is returned: the split is unknowable past it),
/// a `FROM` without a measurement, or [`ParseError::Empty`].
pub fn parse_query(query: &str) -> Result<Vec<Statement<'_>>, ParseError> {
    let tokens = lexer::tokenize(query)?;
    let mut statements = Vec::new();
    for part in tokens.split(|t| t.kind == TokenKind::Semicolon) {
        let (Some(first), Some(last)) = (part.first(), part.last()) else {
            continue;
        };
        let (kind, sources) = statement::classify(query, part)?;
        statements.push(Statement {
            text: &query[first.start..last.end],
            kind,
            sources,
        });
    }
    if statements.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(statements)
}
