//! `application/x-www-form-urlencoded` query strings: decoding what clients send,
//! encoding what fluxgate sends to backends.

/// Iterates over the `key=value` pairs of a query string, still encoded.
pub fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Decodes `%XX` escapes and `+` (space). `None` when the result is not UTF-8
/// or an escape is malformed.
pub fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Appends `value` percent-encoded for a query string (RFC 3986 unreserved bytes kept).
pub fn encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(decode("my%20db+x").as_deref(), Some("my db x"));
        assert_eq!(decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(decode("100%"), None);
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%FF"), None);
    }

    #[test]
    fn encode_round_trips() {
        for value in ["plain", "my db", "a&b=c", "caf\u{e9}/\"rp\"", ""] {
            let mut encoded = String::new();
            encode_into(value, &mut encoded);
            assert_eq!(decode(&encoded).as_deref(), Some(value));
        }
    }

    #[test]
    fn pairs_split_on_ampersand_and_equals() {
        let got: Vec<_> = pairs("db=x&&precision=s&flag").collect();
        assert_eq!(got, vec![("db", "x"), ("precision", "s"), ("flag", "")]);
    }
}
