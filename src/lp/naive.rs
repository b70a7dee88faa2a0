//! Slow reference scanner and parser, for property tests only.
//!
//! Each function is a line-by-line transliteration of its Go counterpart in
//! <https://github.com/influxdata/influxdb/blob/004d1cf413d9dd5ed27fb3e761033ceff3def206/models/points.go>
//! (`scanLine`, `scanKey`, `scanFields`, ...), index loops and allocations included,
//! so it can be audited against that file by eye. The deliberate differences from
//! InfluxDB documented in `scan.rs` and `line.rs` are applied on top, marked
//! "fluxgate:". The fast code in `scan.rs` and `line.rs` must agree with it on every
//! input.

use super::line::{Excerpt, Line, LineError, MAX_KEY_LENGTH};

const TAG_KEY_STATE: u8 = 0;
const TAG_VALUE_STATE: u8 = 1;
const FIELDS_STATE: u8 = 2;

/// `ParsePointsWithPrecision`'s loop: every point with its starting line number.
pub fn lines(body: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let number = 1 + body[..pos].iter().filter(|&&b| b == b'\n').count();
        let start = skip_whitespace(body, pos);
        let end = if body.get(start) == Some(&b'#') {
            // fluxgate: a comment is exactly one physical line.
            (pos..body.len())
                .find(|&i| body[i] == b'\n')
                .unwrap_or(body.len())
        } else {
            scan_line(body, pos).min(body.len())
        };
        let block = &body[start.min(end)..end];
        pos = end + 1;
        if block.first() == Some(&b'#') {
            continue;
        }
        // fluxgate: trailing whitespace is trimmed.
        let mut block = block.to_vec();
        while matches!(block.last(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            block.pop();
        }
        if !block.is_empty() {
            out.push((number, block));
        }
    }
    out
}

fn skip_whitespace(buf: &[u8], mut i: usize) -> usize {
    while i < buf.len() {
        if buf[i] != b' ' && buf[i] != b'\t' && buf[i] != 0 {
            break;
        }
        i += 1;
    }
    i
}

fn scan_line(buf: &[u8], mut i: usize) -> usize {
    let mut quoted = false;
    let mut fields = false;
    let mut equals = 0;
    let mut commas = 0;
    loop {
        if i >= buf.len() {
            break;
        }
        if buf[i] == b'\\' {
            i += 2;
            continue;
        }
        if buf[i] == b' ' {
            fields = true;
        }
        if fields {
            if !quoted && buf[i] == b'=' {
                i += 1;
                equals += 1;
                continue;
            } else if !quoted && buf[i] == b',' {
                i += 1;
                commas += 1;
                continue;
            } else if buf[i] == b'"' && equals > commas {
                i += 1;
                quoted = !quoted;
                continue;
            }
        }
        if buf[i] == b'\n' && !quoted {
            break;
        }
        i += 1;
    }
    i
}

/// `escape.Unescape`.
pub fn unescape(inp: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < inp.len() {
        if inp[i] == b'\\' && i + 1 < inp.len() {
            match inp[i + 1] {
                b',' | b'"' | b' ' | b'=' => {
                    out.push(inp[i + 1]);
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(inp[i]);
        i += 1;
    }
    out
}

/// `parsePoint`.
pub fn parse(buf: &[u8]) -> Result<Line, LineError> {
    let (pos, start, measurement_end) = scan_key(buf, 0)?;
    let key_len = pos - start;
    if key_len == 0 {
        return Err(LineError::MissingMeasurement);
    }
    if key_len > MAX_KEY_LENGTH {
        return Err(LineError::MaxKeyLengthExceeded { len: key_len });
    }
    let (pos, fields, field_keys) = scan_fields(buf, pos)?;
    if fields == 0 {
        return Err(LineError::MissingFields);
    }
    // fluxgate: field keys measured as scanFields sees them.
    for k in field_keys {
        let sz = key_len + 4 + k;
        if sz > MAX_KEY_LENGTH {
            return Err(LineError::MaxKeyLengthExceeded { len: sz });
        }
    }
    let (mut pos, ts) = scan_time(buf, pos)?;
    if !ts.is_empty() {
        let text = std::str::from_utf8(ts).unwrap();
        let ns: i64 = match text.parse() {
            Ok(v) => v,
            Err(_) if text == "-" => return Err(LineError::TimestampSyntax),
            Err(_) => return Err(LineError::TimestampOutOfRange(Excerpt::new(ts))),
        };
        if !(i64::MIN + 2..=i64::MAX - 1).contains(&ns) {
            return Err(LineError::TimeOutOfRange);
        }
        while pos < buf.len() {
            if buf[pos] != b' ' {
                return Err(LineError::InvalidPoint);
            }
            pos += 1;
        }
    }
    Ok(Line {
        measurement_end,
        measurement_escaped: buf[start..measurement_end].contains(&b'\\'),
        has_timestamp: !ts.is_empty(),
    })
}

/// `scanKey`: returns (end of key, start of key, end of measurement).
fn scan_key(buf: &[u8], i: usize) -> Result<(usize, usize, usize), LineError> {
    let start = skip_whitespace(buf, i);
    let (state, mut i) = scan_measurement(buf, start)?;
    let measurement_end = if state == TAG_KEY_STATE { i - 1 } else { i };
    let mut indices = Vec::new();
    let mut commas = 0;
    if state == TAG_KEY_STATE {
        let (j, c, idx) = scan_tags(buf, i)?;
        i = j;
        commas = c;
        indices = idx;
    }
    let mut sorted = true;
    let mut j = 0;
    while j + 1 < commas {
        let left = scan_to(&buf[indices[j]..indices[j + 1] - 1], 0, b'=');
        let right = scan_to(&buf[indices[j + 1]..indices[j + 2] - 1], 0, b'=');
        match left.cmp(right) {
            std::cmp::Ordering::Greater => {
                sorted = false;
                break;
            }
            std::cmp::Ordering::Equal => return Err(LineError::DuplicateTags),
            std::cmp::Ordering::Less => {}
        }
        j += 1;
    }
    if !sorted && commas > 0 {
        let mut idx = indices[..commas].to_vec();
        // insertionSort
        for a in 1..idx.len() {
            let mut b = a;
            while b > 0 && scan_to(buf, idx[b], b'=') < scan_to(buf, idx[b - 1], b'=') {
                idx.swap(b, b - 1);
                b -= 1;
            }
        }
        for j in 0..commas - 1 {
            if scan_to(&buf[idx[j]..], 0, b'=') == scan_to(&buf[idx[j + 1]..], 0, b'=') {
                return Err(LineError::DuplicateTags);
            }
        }
    }
    Ok((i, start, measurement_end))
}

fn scan_measurement(buf: &[u8], mut i: usize) -> Result<(u8, usize), LineError> {
    if i >= buf.len() || buf[i] == b',' {
        return Err(LineError::MissingMeasurement);
    }
    loop {
        i += 1;
        if i >= buf.len() {
            return Err(LineError::MissingFields);
        }
        if buf[i - 1] == b'\\' {
            continue;
        }
        if buf[i] == b',' {
            return Ok((TAG_KEY_STATE, i + 1));
        }
        if buf[i] == b' ' {
            return Ok((FIELDS_STATE, i));
        }
    }
}

fn scan_tags(buf: &[u8], mut i: usize) -> Result<(usize, usize, Vec<usize>), LineError> {
    let mut indices = Vec::new();
    let mut state = TAG_KEY_STATE;
    loop {
        match state {
            TAG_KEY_STATE => {
                indices.push(i);
                i = scan_tags_key(buf, i)?;
                state = TAG_VALUE_STATE;
            }
            TAG_VALUE_STATE => {
                let (s, j) = scan_tags_value(buf, i)?;
                state = s;
                i = j;
            }
            _ => {
                let commas = indices.len();
                indices.push(i + 1);
                return Ok((i, commas, indices));
            }
        }
    }
}

fn scan_tags_key(buf: &[u8], mut i: usize) -> Result<usize, LineError> {
    if i >= buf.len() || buf[i] == b' ' || buf[i] == b',' || buf[i] == b'=' {
        return Err(LineError::MissingTagKey);
    }
    loop {
        i += 1;
        if i >= buf.len() || ((buf[i] == b' ' || buf[i] == b',') && buf[i - 1] != b'\\') {
            return Err(LineError::MissingTagValue);
        }
        if buf[i] == b'=' && buf[i - 1] != b'\\' {
            return Ok(i + 1);
        }
    }
}

fn scan_tags_value(buf: &[u8], mut i: usize) -> Result<(u8, usize), LineError> {
    if i >= buf.len() || buf[i] == b',' || buf[i] == b' ' {
        return Err(LineError::MissingTagValue);
    }
    loop {
        i += 1;
        if i >= buf.len() {
            return Err(LineError::MissingFields);
        }
        if buf[i] == b'=' && buf[i - 1] != b'\\' {
            return Err(LineError::InvalidTagFormat);
        }
        if buf[i] == b',' && buf[i - 1] != b'\\' {
            return Ok((TAG_KEY_STATE, i + 1));
        }
        if buf[i] == b' ' && buf[i - 1] != b'\\' {
            return Ok((FIELDS_STATE, i));
        }
    }
}

fn scan_to(buf: &[u8], mut i: usize, stop: u8) -> &[u8] {
    let start = i;
    loop {
        if i >= buf.len() {
            break;
        }
        if buf[i] == stop && (i == 0 || buf[i - 1] != b'\\') {
            break;
        }
        i += 1;
    }
    &buf[start..i]
}

/// `scanFields`: returns (end, length of the field set, field key lengths).
fn scan_fields(buf: &[u8], i: usize) -> Result<(usize, usize, Vec<usize>), LineError> {
    let start = skip_whitespace(buf, i);
    let mut i = start;
    let mut quoted = false;
    let mut equals = 0;
    let mut commas = 0;
    let mut key_start = start;
    let mut keys = Vec::new();
    loop {
        if i >= buf.len() {
            break;
        }
        if buf[i] == b'\\' && i + 1 < buf.len() {
            i += 2;
            continue;
        }
        if buf[i] == b'"' && equals > commas {
            quoted = !quoted;
            i += 1;
            continue;
        }
        if buf[i] == b'=' && !quoted {
            equals += 1;
            keys.push(i - key_start);
            let at = |k: usize| if k < buf.len() { buf[k] } else { 0 };
            let back = |n: usize| if i >= n { at(i - n) } else { 0 };
            if back(1) == b' ' && back(2) != b'\\' {
                return Err(LineError::MissingFieldKey);
            }
            if back(1) == b',' && back(2) != b'\\' {
                return Err(LineError::MissingFieldKey);
            }
            if i + 1 >= buf.len() {
                return Err(LineError::MissingFieldValue);
            }
            if buf[i + 1] == b',' || buf[i + 1] == b' ' {
                return Err(LineError::MissingFieldValue);
            }
            let n = buf[i + 1];
            if n.is_ascii_digit() || n == b'.' || n == b'-' || n == b'N' || n == b'n' {
                i = scan_number(buf, i + 1)?;
                continue;
            }
            if buf[i + 1] != b'"' {
                i = scan_boolean(buf, i + 1)?;
                continue;
            }
        }
        if buf[i] == b',' && !quoted {
            commas += 1;
            key_start = i + 1;
        }
        if buf[i] == b' ' && !quoted {
            break;
        }
        i += 1;
    }
    if quoted {
        return Err(LineError::UnbalancedQuotes);
    }
    if equals == 0 || commas != equals - 1 {
        return Err(LineError::InvalidFieldFormat);
    }
    Ok((i, i - start, keys))
}

fn scan_time(buf: &[u8], i: usize) -> Result<(usize, &[u8]), LineError> {
    let start = skip_whitespace(buf, i);
    let mut i = start;
    loop {
        if i >= buf.len() {
            break;
        }
        if buf[i] == b'\n' || buf[i] == b' ' {
            break;
        }
        if i == start && buf[i] == b'-' {
            i += 1;
            continue;
        }
        if buf[i] < b'0' || buf[i] > b'9' {
            return Err(LineError::BadTimestamp);
        }
        i += 1;
    }
    Ok((i, &buf[start..i]))
}

fn is_numeric(b: u8) -> bool {
    b.is_ascii_digit() || b == b'.'
}

fn scan_number(buf: &[u8], mut i: usize) -> Result<usize, LineError> {
    let start = i;
    let (mut is_int, mut is_unsigned) = (false, false);
    if i < buf.len() && buf[i] == b'-' {
        i += 1;
        if i == buf.len() {
            return Err(LineError::InvalidNumber);
        }
    }
    let mut decimal = false;
    let mut scientific = false;
    loop {
        if i >= buf.len() {
            break;
        }
        if buf[i] == b',' || buf[i] == b' ' {
            break;
        }
        if buf[i] == b'i' && i > start && !(is_int || is_unsigned) {
            is_int = true;
            i += 1;
            continue;
        } else if buf[i] == b'u' && i > start && !(is_int || is_unsigned) {
            is_unsigned = true;
            i += 1;
            continue;
        }
        if buf[i] == b'.' {
            if decimal {
                return Err(LineError::InvalidNumber);
            }
            decimal = true;
        }
        if i > start && (buf[i] == b'e' || buf[i] == b'E') {
            scientific = true;
            i += 1;
            continue;
        }
        if (buf[i] == b'+' || buf[i] == b'-') && (buf[i - 1] == b'e' || buf[i - 1] == b'E') {
            i += 1;
            continue;
        }
        if i + 2 < buf.len() && (buf[i] == b'N' || buf[i] == b'n') {
            return Err(LineError::InvalidNumber);
        }
        if !is_numeric(buf[i]) {
            return Err(LineError::InvalidNumber);
        }
        i += 1;
    }
    if (is_int || is_unsigned) && (decimal || scientific) {
        return Err(LineError::InvalidNumber);
    }
    let mut numeric_digits = i - start;
    if is_int {
        numeric_digits -= 1;
    }
    if decimal {
        numeric_digits -= 1;
    }
    if buf[start] == b'-' {
        numeric_digits -= 1;
    }
    if numeric_digits == 0 {
        return Err(LineError::InvalidNumber);
    }
    let text = std::str::from_utf8(&buf[start..i]).unwrap();
    if is_int {
        if buf[i - 1] != b'i' {
            return Err(LineError::InvalidNumber);
        }
        let digits = &text[..text.len() - 1];
        if digits.len() >= 19 && digits.parse::<i64>().is_err() {
            return Err(LineError::IntegerOutOfRange(Excerpt::new(
                digits.as_bytes(),
            )));
        }
    } else if is_unsigned {
        if buf[i - 1] != b'u' {
            return Err(LineError::InvalidNumber);
        }
        if buf[start] == b'-' {
            return Err(LineError::InvalidNumber);
        }
        let digits = &text[..text.len() - 1];
        if digits.len() >= 20 && digits.parse::<u64>().is_err() {
            return Err(LineError::UnsignedOutOfRange(Excerpt::new(
                digits.as_bytes(),
            )));
        }
    } else if scientific || text.len() >= 25 {
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => {}
            _ => return Err(LineError::InvalidFloat),
        }
    }
    Ok(i)
}

fn scan_boolean(buf: &[u8], mut i: usize) -> Result<usize, LineError> {
    let start = i;
    if i < buf.len() && buf[i] != b't' && buf[i] != b'f' && buf[i] != b'T' && buf[i] != b'F' {
        return Err(LineError::InvalidBoolean);
    }
    i += 1;
    loop {
        if i >= buf.len() {
            break;
        }
        if buf[i] == b',' || buf[i] == b' ' {
            break;
        }
        i += 1;
    }
    if i - start == 1 {
        return Ok(i);
    }
    if (buf[start] == b't' || buf[start] == b'T') && i - start != 4 {
        return Err(LineError::InvalidBoolean);
    }
    if (buf[start] == b'f' || buf[start] == b'F') && i - start != 5 {
        return Err(LineError::InvalidBoolean);
    }
    let v = &buf[start..i];
    let valid = match buf[start] {
        b't' => v == b"true",
        b'f' => v == b"false",
        b'T' => v == b"TRUE" || v == b"True",
        b'F' => v == b"FALSE" || v == b"False",
        _ => false,
    };
    if !valid {
        return Err(LineError::InvalidBoolean);
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::super::line::{parse_in_full, parse_line, unescape_measurement};
    use super::super::scan::scan_lines;
    use super::*;
    use proptest::prelude::*;

    /// The fast code and the oracle agree on `body`: same points, same verdicts,
    /// same measurements.
    fn agree(body: &[u8]) -> Result<(), TestCaseError> {
        let fast: Vec<(usize, &[u8])> = scan_lines(body).collect();
        let slow = lines(body);
        let slow_ref: Vec<(usize, &[u8])> = slow.iter().map(|(n, l)| (*n, l.as_slice())).collect();
        prop_assert_eq!(&fast, &slow_ref);
        for (_, line) in fast {
            let got = parse_line(line);
            prop_assert_eq!(got, parse(line), "line {:?}", String::from_utf8_lossy(line));
            // And without the fast path for plain lines.
            prop_assert_eq!(
                parse_in_full(line),
                got,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
            if let Ok(l) = got {
                let mut out = Vec::new();
                unescape_measurement(&line[..l.measurement_end], &mut out);
                prop_assert_eq!(out, unescape(&line[..l.measurement_end]));
            }
        }
        Ok(())
    }

    /// Characters for names, weighted towards plain ones, including every byte that
    /// needs escaping.
    fn name() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            6 => proptest::char::range('a', 'z'),
            1 => proptest::sample::select(vec![',', ' ', '=', '"', '0', '-', '.', 'é', '_', '#']),
        ];
        proptest::collection::vec(c, 1..8).prop_map(String::from_iter)
    }

    fn escape(raw: &str, specials: &[char]) -> String {
        let mut s = String::new();
        for c in raw.chars() {
            if specials.contains(&c) {
                s.push('\\');
            }
            s.push(c);
        }
        s
    }

    fn field_value() -> impl Strategy<Value = String> {
        let text = proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('a', 'z'),
                1 => proptest::sample::select(vec!['"', '\\', '\n', ' ', ',', '=', '\r', '#']),
            ],
            0..10,
        )
        .prop_map(|cs| {
            let s: String = cs.into_iter().collect();
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        });
        prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f}")),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            any::<i64>().prop_map(|i| format!("{i}i")),
            any::<u64>().prop_map(|u| format!("{u}u")),
            proptest::sample::select(vec![
                "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"
            ])
            .prop_map(String::from),
            text,
        ]
    }

    /// A valid point: (raw measurement, has timestamp, text).
    fn point() -> impl Strategy<Value = (String, bool, String)> {
        (
            name().prop_filter("no comment", |m| !m.starts_with('#')),
            proptest::collection::btree_map(name(), name(), 0..4),
            proptest::collection::vec((name(), field_value()), 1..4),
            proptest::option::of(i64::MIN + 2..=i64::MAX - 1),
        )
            .prop_map(|(m, tags, fields, ts)| {
                let mut s = escape(&m, &[',', ' ']);
                for (k, v) in &tags {
                    s.push(',');
                    s.push_str(&escape(k, &[',', '=', ' ']));
                    s.push('=');
                    s.push_str(&escape(v, &[',', '=', ' ']));
                }
                for (i, (k, v)) in fields.iter().enumerate() {
                    s.push(if i == 0 { ' ' } else { ',' });
                    s.push_str(&escape(k, &[',', '=', ' ']));
                    s.push('=');
                    s.push_str(v);
                }
                if let Some(ts) = ts {
                    s.push_str(&format!(" {ts}"));
                }
                (m, ts.is_some(), s)
            })
    }

    #[derive(Debug, Clone)]
    enum Item {
        Point(String, bool, String),
        Blank(String),
        Comment(String),
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            6 => point().prop_map(|(m, ts, s)| Item::Point(m, ts, s)),
            1 => "[ \t]{0,3}".prop_map(Item::Blank),
            1 => "[ \t]{0,2}#[^\n]{0,12}".prop_map(Item::Comment),
        ]
    }

    /// A body and, for each point, (line number, raw measurement, has timestamp).
    fn body() -> impl Strategy<Value = (Vec<u8>, Vec<(usize, String, bool)>)> {
        (
            proptest::collection::vec(item(), 0..8),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(items, crlf, final_newline)| {
                let sep = if crlf { "\r\n" } else { "\n" };
                let mut body = String::new();
                let mut want = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        body.push_str(sep);
                    }
                    let number = 1 + body.matches('\n').count();
                    match item {
                        Item::Point(m, ts, s) => {
                            want.push((number, m.clone(), *ts));
                            body.push_str(s);
                        }
                        Item::Blank(s) | Item::Comment(s) => body.push_str(s),
                    }
                }
                if final_newline {
                    body.push_str(sep);
                }
                (body.into_bytes(), want)
            })
    }

    /// Bytes that steer the parser, plus anything.
    fn mutation_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            3 => proptest::sample::select(b",= \"\\\n\r\t#-+.0123456789eEiutfTFNn\0".to_vec()),
            1 => any::<u8>(),
        ]
    }

    proptest! {
        #[test]
        fn valid_bodies_are_found_and_accepted((body, want) in body()) {
            let got: Vec<(usize, &[u8])> = scan_lines(&body).collect();
            prop_assert_eq!(got.len(), want.len(), "{:?}", String::from_utf8_lossy(&body));
            for ((number, line), (want_number, measurement, ts)) in got.iter().zip(&want) {
                prop_assert_eq!(number, want_number);
                let parsed = parse_line(line);
                prop_assert!(parsed.is_ok(), "{:?}: {:?}", String::from_utf8_lossy(line), parsed);
                let parsed = parsed.unwrap();
                let mut out = Vec::new();
                unescape_measurement(&line[..parsed.measurement_end], &mut out);
                prop_assert_eq!(out, measurement.as_bytes());
                prop_assert_eq!(parsed.has_timestamp, *ts);
            }
            agree(&body)?;
        }

        #[test]
        fn mutated_bodies_agree_with_oracle(
            (body, _) in body(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, mutation_byte()), 1..6),
        ) {
            let mut body = body;
            for (at, kind, byte) in edits {
                let i = at.index(body.len() + 1);
                match kind {
                    0 => body.insert(i, byte),
                    1 if i < body.len() => { body.remove(i); }
                    _ if i < body.len() => body[i] = byte,
                    _ => body.push(byte),
                }
            }
            agree(&body)?;
        }

        #[test]
        fn arbitrary_bytes_agree_with_oracle(body in proptest::collection::vec(mutation_byte(), 0..64)) {
            agree(&body)?;
            // And as one line, even with newlines or leading blanks in it.
            prop_assert_eq!(parse_line(&body), parse(&body));
            prop_assert_eq!(parse_in_full(&body), parse(&body));
        }
    }
}
