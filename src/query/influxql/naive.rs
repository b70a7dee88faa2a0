//! A slow, plain statement splitter to check [`super::parse_query`] against.
//!
//! It walks characters and decides whether `/` opens a regex by looking back over
//! the text already read (literals replaced by placeholders, one string per paren
//! level), instead of the lexer's token-by-token state. Quadratic; tests only.

use super::lexer::is_keyword;

/// The statements of `query` (trimmed of whitespace and comments, empty ones
/// skipped), or `None` if a literal or comment is unterminated.
pub(super) fn split(query: &str) -> Option<Vec<&str>> {
    let chars: Vec<(usize, char)> = query.char_indices().collect();
    let char_at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let byte_at = |i: usize| chars.get(i).map_or(query.len(), |&(b, _)| b);
    let mut statements = Vec::new();
    // What we read so far in the current statement, per open paren.
    let mut levels = vec![String::new()];
    // Byte span of the significant text of the current statement.
    let mut span: Option<(usize, usize)> = None;
    let mut i = 0;
    while let Some(c) = char_at(i) {
        let start = i;
        let placeholder: &str = match c {
            '/' if regex_allowed(levels.last()?) => {
                i += 1;
                loop {
                    match char_at(i)? {
                        '/' => break,
                        '\n' | '\r' => return None,
                        '\\' if char_at(i + 1) == Some('/') => i += 2,
                        _ => i += 1,
                    }
                }
                "`r`"
            }
            '/' if char_at(i + 1) == Some('*') => {
                i += 2;
                while !(char_at(i)? == '*' && char_at(i + 1) == Some('/')) {
                    i += 1;
                }
                i += 2;
                continue;
            }
            '-' if char_at(i + 1) == Some('-') => {
                while char_at(i).is_some_and(|c| c != '\n' && c != '\r') {
                    i += 1;
                }
                continue;
            }
            '\'' | '"' => {
                // `a"b"` is one identifier (not `a`), as `FROM"x"` is no FROM; a
                // number before the quote stays a number.
                let glued = start > 0 && is_word_char(chars[start - 1].1);
                let level = levels.last_mut()?;
                let word = last_word(level);
                if c == '"' && glued && !word.starts_with(|c: char| c.is_ascii_digit()) {
                    level.truncate(level.len() - word.len());
                }
                i += 1;
                loop {
                    match char_at(i)? {
                        q if q == c => break,
                        '\n' | '\r' => return None,
                        '\\' if matches!(char_at(i + 1)?, '\n' | '\r') => return None,
                        '\\' => i += 2,
                        _ => i += 1,
                    }
                }
                if c == '"' {
                    "\"i\""
                } else {
                    "'s'"
                }
            }
            ';' => {
                if let Some((from, to)) = span.take() {
                    statements.push(&query[from..to]);
                }
                levels = vec![String::new()];
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                levels.last_mut()?.push(' ');
                i += 1;
                continue;
            }
            '(' => {
                levels.push(String::new());
                ""
            }
            ')' if levels.len() > 1 => {
                levels.pop();
                "(q)"
            }
            _ => {
                // An unmatched `)` ends any source list.
                // So is a backtick, which only regex placeholders may hold.
                levels
                    .last_mut()?
                    .push(if matches!(c, ')' | '`') { '#' } else { c });
                ""
            }
        };
        levels.last_mut()?.push_str(placeholder);
        i += 1;
        let end = byte_at(i);
        span = Some((span.map_or(byte_at(start), |(from, _)| from), end));
    }
    if let Some((from, to)) = span {
        statements.push(&query[from..to]);
    }
    Some(statements)
}

/// Whether a `/` after `read` (the current paren level so far) opens a regex.
fn regex_allowed(read: &str) -> bool {
    let read = read.trim_end();
    if (read.ends_with("=~") && !read.ends_with("!=~")) || read.ends_with("!~") {
        return true;
    }
    if last_word(read).eq_ignore_ascii_case("from") {
        return true;
    }
    if let Some(before) = read.strip_suffix('=') {
        if !before.ends_with(['!', '<', '>', '=']) {
            return last_word(before.trim_end()).eq_ignore_ascii_case("measurement");
        }
    }
    if read.ends_with(',') {
        return in_from_list(read);
    }
    // A dot right after a segment (`db.`, `"db".`, `db..`) of a source.
    let segment = read.trim_end_matches(['.', ' ']);
    read.ends_with('.')
        && segment.ends_with(|c: char| is_word_char(c) || c == '"')
        && (in_from_list(read) || in_measurement_source(read))
}

/// Whether `read` ends inside the one source of `WITH MEASUREMENT =` (or `=~`).
fn in_measurement_source(read: &str) -> bool {
    // ASCII lowercase keeps byte offsets.
    let lower = read.to_ascii_lowercase();
    let Some(at) = lower.rfind("measurement") else {
        return false;
    };
    if read[..at].ends_with(is_word_char) {
        return false;
    }
    let tail = read[at..]
        .get("measurement".len()..)
        .unwrap_or("")
        .trim_start();
    let Some(tail) = tail.strip_prefix("=~").or_else(|| tail.strip_prefix('=')) else {
        return false;
    };
    tail.chars()
        .all(|c| is_word_char(c) || matches!(c, ' ' | '"' | '.'))
        && tail.split(|c: char| !is_word_char(c)).all(|w| {
            w.is_empty() || !(is_keyword(w) || w.starts_with(|c: char| c.is_ascii_digit()))
        })
        && dots_follow_segments(tail)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The trailing run of word characters.
fn last_word(read: &str) -> &str {
    let start = read
        .char_indices()
        .rev()
        .find(|&(_, c)| !is_word_char(c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &read[start..]
}

/// Whether `read` ends inside a `FROM` list: after its last `FROM` word come only
/// identifiers, placeholders, `.`, `,` and spaces.
fn in_from_list(read: &str) -> bool {
    let mut after_last_from = None;
    let mut word_start = None;
    for (i, c) in read.char_indices().chain([(read.len(), ' ')]) {
        if is_word_char(c) {
            word_start.get_or_insert(i);
        } else if let Some(start) = word_start.take() {
            if read[start..i].eq_ignore_ascii_case("from") {
                after_last_from = Some(i);
            }
        }
    }
    let Some(end) = after_last_from else {
        return false;
    };
    let tail = &read[end..];
    tail.chars()
        .all(|c| is_word_char(c) || matches!(c, ' ' | '"' | '`' | '.' | ',' | '(' | ')'))
        && tail.split(|c: char| !is_word_char(c)).all(|w| {
            w.is_empty() || !(is_keyword(w) || w.starts_with(|c: char| c.is_ascii_digit()))
        })
        && dots_follow_segments(tail)
}

/// Whether every `.` in `tail` follows a segment: a word, a quoted identifier or
/// another dot (spaces between allowed).
fn dots_follow_segments(tail: &str) -> bool {
    let mut before = ' ';
    for c in tail.chars() {
        if c == '.' && !(is_word_char(before) || before == '"' || before == '.') {
            return false;
        }
        if c != ' ' {
            before = c;
        }
    }
    true
}
