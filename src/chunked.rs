//! Incremental decoder of `Transfer-Encoding: chunked` bodies (RFC 9112 §7.1),
//! shared by the server (request bodies) and the backend client (responses).
//!
//! Pure: it consumes whatever bytes have arrived and says how many it used, so the
//! caller owns all I/O and buffers. Chunk extensions and trailers are skipped.

use std::fmt;

/// Longest chunk-size line (size, extensions, CRLF) or trailer line accepted;
/// nothing legitimate comes close, and it bounds what a peer can make us scan.
const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `value` so far, `digits` seen.
    Size {
        value: u64,
        digits: u8,
    },
    /// Skipping a chunk extension up to the end of the size line.
    Extension {
        value: u64,
    },
    /// Copying `remaining` data bytes.
    Data {
        remaining: u64,
    },
    /// Expecting the CRLF after a chunk's data (`seen_cr` once '\r' was read).
    DataEnd {
        seen_cr: bool,
    },
    /// After the last chunk: trailer lines until an empty one. `line_len` counts
    /// the bytes of the current line.
    Trailer {
        line_len: usize,
    },
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk size that is not hex or does not fit in 64 bits.
    InvalidSize,
    /// Data not followed by CRLF.
    MissingCrlf,
    /// A size, extension or trailer line longer than `MAX_LINE_BYTES`.
    LineTooLong,
    /// The decoded body would exceed the caller's limit.
    TooLarge { limit: usize },
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkedError::InvalidSize => f.write_str("invalid chunk size in chunked body"),
            ChunkedError::MissingCrlf => f.write_str("chunk data not followed by CRLF"),
            ChunkedError::LineTooLong => f.write_str("chunk size or trailer line too long"),
            ChunkedError::TooLarge { limit } => write!(f, "body exceeds {limit} bytes"),
        }
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current size/extension line, against `MAX_LINE_BYTES`.
    line_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub const fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line_len: 0,
        }
    }

    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending chunk data to `out`. Returns the number of
    /// input bytes consumed: all of them, unless the body ended inside `input`
    /// (what follows belongs to the next message).
    ///
    /// # Errors
    /// A malformed body, or `out` growing past `max_out` bytes.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data { remaining } => {
                    let take =
                        (input.len() - i).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    if out.len() + take > max_out {
                        return Err(ChunkedError::TooLarge { limit: max_out });
                    }
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataEnd { seen_cr: false }
                    } else {
                        State::Data { remaining }
                    };
                }
                State::DataEnd { seen_cr } => {
                    match (input[i], seen_cr) {
                        (b'\r', false) => self.state = State::DataEnd { seen_cr: true },
                        (b'\n', _) => self.start_size_line(),
                        _ => return Err(ChunkedError::MissingCrlf),
                    }
                    i += 1;
                }
                State::Size { value, digits } => {
                    let byte = input[i];
                    i += 1;
                    self.count_line_byte()?;
                    if let Some(digit) = (byte as char).to_digit(16) {
                        if digits >= 16 {
                            return Err(ChunkedError::InvalidSize);
                        }
                        self.state = State::Size {
                            value: value << 4 | u64::from(digit),
                            digits: digits + 1,
                        };
                        continue;
                    }
                    if digits == 0 {
                        return Err(ChunkedError::InvalidSize);
                    }
                    match byte {
                        b'\n' => self.end_size_line(value, out, max_out)?,
                        b';' | b' ' | b'\t' | b'\r' => self.state = State::Extension { value },
                        _ => return Err(ChunkedError::InvalidSize),
                    }
                }
                State::Extension { value } => {
                    let byte = input[i];
                    i += 1;
                    self.count_line_byte()?;
                    if byte == b'\n' {
                        self.end_size_line(value, out, max_out)?;
                    }
                }
                State::Trailer { line_len } => {
                    let byte = input[i];
                    i += 1;
                    self.state = match (byte, line_len) {
                        (b'\n', 0) => State::Done,
                        (b'\n', _) => State::Trailer { line_len: 0 },
                        // A lone CR does not make a line non-empty.
                        (b'\r', 0) => State::Trailer { line_len: 0 },
                        _ if line_len >= MAX_LINE_BYTES => return Err(ChunkedError::LineTooLong),
                        _ => State::Trailer {
                            line_len: line_len + 1,
                        },
                    };
                }
            }
        }
        Ok(i)
    }

    fn start_size_line(&mut self) {
        self.state = State::Size {
            value: 0,
            digits: 0,
        };
        self.line_len = 0;
    }

    fn count_line_byte(&mut self) -> Result<(), ChunkedError> {
        self.line_len += 1;
        if self.line_len > MAX_LINE_BYTES {
            return Err(ChunkedError::LineTooLong);
        }
        Ok(())
    }

    fn end_size_line(&mut self, size: u64, out: &[u8], max_out: usize) -> Result<(), ChunkedError> {
        if size == 0 {
            self.state = State::Trailer { line_len: 0 };
            return Ok(());
        }
        // Refuse before copying anything when the announced size cannot fit.
        if (out.len() as u64).saturating_add(size) > max_out as u64 {
            return Err(ChunkedError::TooLarge { limit: max_out });
        }
        self.state = State::Data { remaining: size };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes.
    fn decode_in_steps(
        input: &[u8],
        step: usize,
        max_out: usize,
    ) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step.max(1)) {
            let used = decoder.decode(piece, &mut out, max_out)?;
            consumed += used;
            if used < piece.len() {
                break;
            }
        }
        Ok((out, consumed, decoder.is_done()))
    }

    #[track_caller]
    fn decodes(input: &str, expected: &str) {
        for step in [1, 2, 3, 7, input.len()] {
            let (out, consumed, done) = decode_in_steps(input.as_bytes(), step, 1 << 20).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "step {step}");
            assert!(done, "step {step}");
            assert_eq!(consumed, input.len(), "step {step}");
        }
    }

    #[track_caller]
    fn fails(input: &str, max_out: usize, expected: ChunkedError) {
        for step in [1, input.len()] {
            assert_eq!(
                decode_in_steps(input.as_bytes(), step, max_out).unwrap_err(),
                expected
            );
        }
    }

    #[test]
    fn well_formed_bodies() {
        decodes("0\r\n\r\n", "");
        decodes("5\r\nhello\r\n0\r\n\r\n", "hello");
        decodes("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
        decodes("A\r\n0123456789\r\n0\r\n\r\n", "0123456789");
        // Extensions and trailers are skipped.
        decodes(
            "5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
            "hello",
        );
        // Bare LF line endings, as some clients send.
        decodes("5\nhello\n0\n\n", "hello");
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let input = b"3\r\nabc\r\n0\r\n\r\nPOST /next";
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let used = decoder.decode(input, &mut out, 100).unwrap();
        assert_eq!(&input[used..], b"POST /next");
        assert_eq!(out, b"abc");
    }

    #[test]
    fn malformed_bodies() {
        fails("x\r\n", 100, ChunkedError::InvalidSize);
        fails("\r\n", 100, ChunkedError::InvalidSize);
        fails("11111111111111111\r\n", 100, ChunkedError::InvalidSize);
        fails("3\r\nabcX", 100, ChunkedError::MissingCrlf);
        fails(
            &format!("3;{}\r\n", "e".repeat(MAX_LINE_BYTES)),
            100,
            ChunkedError::LineTooLong,
        );
        fails(
            &format!("0\r\n{}\r\n", "t".repeat(MAX_LINE_BYTES + 1)),
            100,
            ChunkedError::LineTooLong,
        );
    }

    #[test]
    fn output_limit_is_exact() {
        decode_in_steps(b"5\r\nhello\r\n0\r\n\r\n", 1, 5).unwrap();
        fails(
            "5\r\nhello\r\n0\r\n\r\n",
            4,
            ChunkedError::TooLarge { limit: 4 },
        );
        // A huge announced size is refused before any data arrives.
        fails(
            "fffffffff\r\n",
            1 << 20,
            ChunkedError::TooLarge { limit: 1 << 20 },
        );
    }
}
