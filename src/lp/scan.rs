//! Splitting a write body into points, in place.
//!
//! [`scan_lines`] yields each point of a line-protocol body with the 1-based number of
//! the physical line it starts on, skipping blank and comment lines. It follows
//! InfluxDB 1.x's `scanLine` (see
//! <https://github.com/influxdata/influxdb/blob/004d1cf413d9dd5ed27fb3e761033ceff3def206/models/points.go>):
//!
//! - A point ends at a `\n` that is neither inside a double-quoted string nor escaped.
//!   A quote counts only after the first space of the line and when more `=` than `,`
//!   have been seen since then (that is, in a field value), and a backslash skips the
//!   next byte everywhere, so `\` right before a newline joins the next line.
//! - Each candidate line is found with `memchr2` (for a newline or a quote, in one
//!   pass); the quote-tracking state machine only runs when that line holds a `"` or
//!   ends in a backslash.
//!
//! An unterminated quote behaves as in InfluxDB: the point runs on to the next quote
//! that closes it, or to the end of the body, and is yielded as one (invalid) point
//! that [`parse_line`](super::line::parse_line) rejects, typically with
//! "unbalanced quotes". The lines it swallowed are not lost silently: the error names
//! the line where the point started and quotes it.
//!
//! Differences from InfluxDB, each chosen:
//!
//! - A comment always ends at the next newline. InfluxDB runs the quote tracker over
//!   comments too, so a comment like `# a="` silently swallows the lines after it.
//! - Trailing `\r`, space and tab are trimmed, so CRLF bodies work. InfluxDB 1.x
//!   rejects `m f=1\r` ("invalid number") and treats a `\r`-only line as a point.
//! - Leading spaces, tabs and NULs are trimmed, as InfluxDB's `skipWhitespace` does.

use memchr::{memchr, memchr2};

/// Iterator over the points of a line-protocol body, in place, using memchr.
///
/// # Examples
///
/// See [`Lines`].
pub fn scan_lines(body: &[u8]) -> Lines<'_> {
    Lines {
        body,
        pos: 0,
        line: 1,
    }
}

/// The points of a body as `(line_number, point)`; see the [module docs](self).
///
/// The point excludes its terminating `\n`, leading blanks and trailing whitespace
/// (space, tab, `\r`, and `\n` at the end of a run-on quoted point), and is never
/// empty.
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    body: &'a [u8],
    /// Start of the next physical line; always `<= body.len()`.
    pos: usize,
    /// 1-based number of the physical line starting at `pos`.
    line: usize,
}

impl Lines<'_> {
    /// Where the next physical line starts in the body, and its 1-based number.
    pub fn position(&self) -> (usize, usize) {
        (self.pos, self.line)
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos < self.body.len() {
            let rest = &self.body[self.pos..];
            let number = self.line;
            let lead = rest
                .iter()
                .position(|&b| !matches!(b, b' ' | b'\t' | 0))
                .unwrap_or(rest.len());
            let comment = rest.get(lead) == Some(&b'#');
            let (end, spanned) = if comment {
                (memchr(b'\n', rest).unwrap_or(rest.len()), 0)
            } else {
                point_end(rest)
            };
            // Skip the terminating newline too; `end` may be `rest.len()`.
            self.pos += (end + 1).min(rest.len());
            self.line += 1 + spanned;
            if comment {
                continue;
            }
            let point = trim_end(&rest[lead.min(end)..end]);
            if !point.is_empty() {
                return Some((number, point));
            }
        }
        None
    }
}

/// Where the point starting at `rest[0]` ends (the index of its terminating `\n`, or
/// `rest.len()`), and how many newlines it spans before that.
fn point_end(rest: &[u8]) -> (usize, usize) {
    // One pass finds the newline and tells whether a quote comes before it.
    match memchr2(b'\n', b'"', rest) {
        Some(newline) if rest[newline] == b'\n' => {
            if newline == 0 || rest[newline - 1] != b'\\' {
                return (newline, 0);
            }
        }
        Some(quote) => {
            if memchr(b'\n', &rest[quote..]).is_none() {
                // Without a newline the point runs to the end whatever the quotes say.
                return (rest.len(), 0);
            }
        }
        None => return (rest.len(), 0),
    }
    let end = quoted_point_end(rest);
    let spanned = memchr::memchr_iter(b'\n', &rest[..end]).count();
    (end, spanned)
}

/// InfluxDB's `scanLine` from the start of a physical line: the index of the first
/// `\n` outside a string value and not escaped, or `rest.len()`.
fn quoted_point_end(rest: &[u8]) -> usize {
    let mut i = 0;
    let mut quoted = false;
    let mut fields = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    while i < rest.len() {
        if quoted {
            // Inside a string only the closing quote or a backslash matter.
            match memchr2(b'"', b'\\', &rest[i..]) {
                None => return rest.len(),
                Some(off) => i += off,
            }
        }
        let b = rest[i];
        if b == b'\\' {
            i += 2;
            continue;
        }
        if b == b' ' {
            fields = true;
        }
        if fields {
            if !quoted && b == b'=' {
                equals += 1;
                i += 1;
                continue;
            }
            if !quoted && b == b',' {
                commas += 1;
                i += 1;
                continue;
            }
            if b == b'"' && equals > commas {
                quoted = !quoted;
                i += 1;
                continue;
            }
        }
        if b == b'\n' && !quoted {
            return i;
        }
        i += 1;
    }
    // A backslash as the last byte steps past the end.
    rest.len()
}

/// Trims trailing spaces, tabs and carriage returns, and the newlines a point that
/// runs to the end of the body inside a quote may end with (InfluxDB strips one).
fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [head @ .., b' ' | b'\t' | b'\r' | b'\n'] = s {
        s = head;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` twice and checks the `(line, point)` pairs.
    #[track_caller]
    fn case(body: &str, want: &[(usize, &str)]) {
        for _ in 0..2 {
            let got: Vec<(usize, &[u8])> = scan_lines(body.as_bytes()).collect();
            let want: Vec<(usize, &[u8])> = want.iter().map(|&(n, l)| (n, l.as_bytes())).collect();
            assert_eq!(got, want, "{body:?}");
        }
    }

    #[test]
    fn splits_lines() {
        // Empty and blank bodies
        case("", &[]);
        case("\n", &[]);
        case("\n\n \t\n", &[]);
        case("\0\0\n", &[]);
        // Plain lines, with and without a final newline
        case("a f=1", &[(1, "a f=1")]);
        case("a f=1\n", &[(1, "a f=1")]);
        case("a f=1\nb f=2", &[(1, "a f=1"), (2, "b f=2")]);
        case("\n\na f=1\n\nb f=2\n\n", &[(3, "a f=1"), (5, "b f=2")]);
        // Blanks trimmed on both sides, NULs only at the start (as InfluxDB)
        case("  \ta f=1 \t\nb f=2  ", &[(1, "a f=1"), (2, "b f=2")]);
        case("\0a f=1\0", &[(1, "a f=1\0")]);
        // CRLF bodies
        case("a f=1\r\nb f=2\r\n", &[(1, "a f=1"), (2, "b f=2")]);
        case("a f=1\r\n\r\n\r\nb f=2", &[(1, "a f=1"), (4, "b f=2")]);
        case("a f=\"x\"\r\n", &[(1, "a f=\"x\"")]);
        // Comments
        case("# hello\na f=1", &[(2, "a f=1")]);
        case("  # hello\n\t#x\na f=1\n#", &[(3, "a f=1")]);
        case("a f=1 # not a comment", &[(1, "a f=1 # not a comment")]);
        // A comment ends at its newline even with a quote in it (unlike InfluxDB).
        case(
            "# a b=\"\na f=1\n# \"\nb f=2",
            &[(2, "a f=1"), (4, "b f=2")],
        );
    }

    #[test]
    fn quotes_and_escapes() {
        // Newlines inside string values do not end the point; numbering continues.
        case(
            "a s=\"x\ny\" 1\nb f=2\n",
            &[(1, "a s=\"x\ny\" 1"), (3, "b f=2")],
        );
        case(
            "a s=\"x\r\n\r\ny\"\r\nb f=2\r\n",
            &[(1, "a s=\"x\r\n\r\ny\""), (4, "b f=2")],
        );
        case(
            "a f=1,s=\"1\n2\n3\",t=\"4\n5\"\nb f=2",
            &[(1, "a f=1,s=\"1\n2\n3\",t=\"4\n5\""), (5, "b f=2")],
        );
        // Escaped quotes do not toggle.
        case(
            "a s=\"x\\\"\ny\"\nb f=2",
            &[(1, "a s=\"x\\\"\ny\""), (3, "b f=2")],
        );
        case(
            "a s=\"x\\\\\"\nb f=2",
            &[(1, "a s=\"x\\\\\""), (2, "b f=2")],
        );
        // Quotes in the measurement, tags and field keys are not string delimiters.
        case("a\"b f=1\nc f=2", &[(1, "a\"b f=1"), (2, "c f=2")]);
        case("a,t=\"v f=1\nc f=2", &[(1, "a,t=\"v f=1"), (2, "c f=2")]);
        case("a f=1,\"g=2\nc f=2", &[(1, "a f=1,\"g=2"), (2, "c f=2")]);
        case("a \"f=1\nc f=2", &[(1, "a \"f=1"), (2, "c f=2")]);
        // An unterminated quote runs to the end of the body (InfluxDB).
        case(
            "x f=1\na s=\"open\nb f=2\nc f=3\n",
            &[(1, "x f=1"), (2, "a s=\"open\nb f=2\nc f=3")],
        );
        // ... or to the next quote, which closes it.
        case(
            "a s=\"open\nb\" f=2\nc f=3",
            &[(1, "a s=\"open\nb\" f=2"), (3, "c f=3")],
        );
        // A quote in what looks like the next point's value reopens the string.
        case(
            "a s=\"open\nb s=\"x\"\nc f=3",
            &[(1, "a s=\"open\nb s=\"x\"\nc f=3")],
        );
        // A backslash escapes the newline after it (InfluxDB joins the lines).
        case(
            "a f=1\\\nb f=2\nc f=3",
            &[(1, "a f=1\\\nb f=2"), (3, "c f=3")],
        );
        case("a f=1\\\\\nb f=2", &[(1, "a f=1\\\\"), (2, "b f=2")]);
        case("a f=1\\", &[(1, "a f=1\\")]);
        case("\\", &[(1, "\\")]);
        case("a s=\"\\", &[(1, "a s=\"\\")]);
    }

    #[test]
    fn fast_and_slow_paths_agree() {
        // Every fast-path line also goes through the slow path unchanged.
        for line in [
            "",
            "a f=1",
            "a,t=v f=1,g=2i 5",
            "# c",
            "  a f=1  ",
            "a\\ b f=1",
        ] {
            let body = format!("{line}\nnext");
            let (end, spanned) = point_end(body.as_bytes());
            assert_eq!(quoted_point_end(body.as_bytes()), end, "{line:?}");
            assert_eq!((end, spanned), (line.len(), 0), "{line:?}");
        }
    }
}
