//! Request bodies, built before the timed run so that generating (and gzipping)
//! lines does not count against the target.
//!
//! A run may send far more requests than it is reasonable to keep in memory, so at
//! most [`MAX_DISTINCT_BODIES`] bodies (and [`MAX_PREGEN_BYTES`]) are built and
//! request `k` sends body `k % count`. Each pass over the bodies is a *round*; to
//! keep later rounds from overwriting earlier points, round `r` moves every
//! timestamp `r * rows_per_round` rows later, past anything the earlier rounds
//! wrote. Plain bodies get this by patching the timestamp digits into a per-thread
//! copy (a memcpy and a few digits per line, no line generation).
//!
//! Gzip bodies are compressed once and cannot be patched, so with `--gzip` more
//! distinct bodies are built instead, up to [`MAX_GZIP_LINES`] lines; rounds past
//! the first then resend identical points (see [`Bodies::repeats_points`]).
//! When the run length is known (`--points`, or `--rate` with `--duration`) only
//! what it needs is built.

use std::thread;

use anyhow::{bail, Result};
use libdeflater::{CompressionLvl, Compressor};

use crate::gen::{format_decimal, Generator};

/// Distinct plain bodies: enough that the server does not see one body over and
/// over, few enough to build in well under a second.
pub const MAX_DISTINCT_BODIES: u64 = 64;
/// Lines pre-built as gzip bodies when the run length is unknown or larger: higher
/// than the plain cap because gzip bodies cannot be shifted per round, lower than
/// one would like because building them takes ~4 s on two cores (level 6, the
/// level most clients use).
pub const MAX_GZIP_LINES: u64 = 1_500_000;
/// Memory budget for the bodies kept during the run.
pub const MAX_PREGEN_BYTES: u64 = 512 << 20; // 512 MiB
/// Rough bytes per line, used only to size the budget before generating.
const ESTIMATED_LINE_BYTES: u64 = 400;

/// What the run will ask for.
#[derive(Clone, Copy, Debug)]
pub struct BodyPlan {
    pub batch_lines: usize,
    /// Requests in the whole run, when known (`--points`, or `--rate` with
    /// `--duration`).
    pub requests_needed: Option<u64>,
    /// Lines in the last request when `--points` is not a multiple of the batch.
    pub last_request_lines: Option<usize>,
    pub gzip: bool,
}

/// One pre-built body.
struct Body {
    /// Plain or gzip bytes, as sent.
    bytes: Vec<u8>,
    /// Offset of each line's timestamp in `bytes`; empty for gzip bodies.
    ts_offsets: Vec<usize>,
    /// Global index of the body's first line, for recomputing its timestamps.
    first_line: u64,
    lines: usize,
}

/// The rotating set of bodies plus the rule mapping a request index to its bytes.
pub struct Bodies {
    bodies: Vec<Body>,
    /// The short last request of a `--points` run: (request index, body).
    last: Option<(u64, Body)>,
    /// Rows each round moves timestamps forward; covers every row of one round.
    rows_per_round: u64,
    gzip: bool,
}

/// The bytes of one request, borrowed from the body set or a thread's scratch.
pub struct RequestBody<'a> {
    pub bytes: &'a [u8],
    pub lines: usize,
}

impl Bodies {
    /// Builds the bodies on all cores.
    ///
    /// # Errors
    ///
    /// If gzip compression fails (it only does when the output bound is wrong).
    pub fn build(generator: &Generator, plan: BodyPlan) -> Result<Bodies> {
        let cap = if plan.gzip {
            (MAX_GZIP_LINES / plan.batch_lines as u64).max(1)
        } else {
            MAX_DISTINCT_BODIES
        };
        // Gzip bodies are budgeted at their compressed size: estimated at a third.
        let body_bytes =
            plan.batch_lines as u64 * ESTIMATED_LINE_BYTES / if plan.gzip { 3 } else { 1 };
        let budget = (MAX_PREGEN_BYTES / body_bytes.max(1)).max(1);
        let count = plan
            .requests_needed
            .unwrap_or(cap)
            .min(cap)
            .min(budget)
            .max(1);

        let threads = thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let built: Vec<Result<Vec<Body>>> = thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        (t..count)
                            .step_by(threads as usize)
                            .map(|i| {
                                build_body(
                                    generator,
                                    i * plan.batch_lines as u64,
                                    plan.batch_lines,
                                    plan.gzip,
                                )
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("body builder panicked"))
                .collect()
        });
        let mut slots: Vec<Option<Body>> = (0..count).map(|_| None).collect();
        for (t, bodies) in built.into_iter().enumerate() {
            for (j, body) in bodies?.into_iter().enumerate() {
                slots[t + j * threads as usize] = Some(body);
            }
        }
        let bodies: Vec<Body> = slots
            .into_iter()
            .map(|b| b.expect("every slot built"))
            .collect();

        let rows_per_round = (count * plan.batch_lines as u64).div_ceil(generator.series_count());
        let mut set = Bodies {
            bodies,
            last: None,
            rows_per_round,
            gzip: plan.gzip,
        };
        if let (Some(requests), Some(lines)) = (plan.requests_needed, plan.last_request_lines) {
            if lines < plan.batch_lines && requests > 0 {
                let index = requests - 1;
                let first_line = set.bodies[(index % count) as usize].first_line;
                let mut body = build_body(generator, first_line, lines, false)?;
                if plan.gzip {
                    body = gzip_body(&body.bytes, first_line, lines)?;
                }
                set.last = Some((index, body));
            }
        }
        Ok(set)
    }

    /// Number of distinct bodies.
    pub fn len(&self) -> u64 {
        self.bodies.len() as u64
    }

    /// Total bytes held, for the startup message.
    pub fn bytes(&self) -> u64 {
        self.bodies.iter().map(|b| b.bytes.len() as u64).sum()
    }

    /// Whether `requests` requests resend points already sent: only gzip bodies past
    /// the first round, as they cannot be shifted.
    pub fn repeats_points(&self, requests: u64) -> bool {
        self.gzip && requests > self.len()
    }

    /// Bytes of request `index`. Round 0 (and any gzip round) borrows the shared
    /// body; later plain rounds copy it into `scratch` with shifted timestamps.
    pub fn request_body<'a>(
        &'a self,
        generator: &Generator,
        index: u64,
        scratch: &'a mut Vec<u8>,
    ) -> RequestBody<'a> {
        let round = index / self.len();
        let body = match &self.last {
            Some((last, body)) if *last == index => body,
            _ => &self.bodies[(index % self.len()) as usize],
        };
        if round == 0 || self.gzip {
            return RequestBody {
                bytes: &body.bytes,
                lines: body.lines,
            };
        }
        let round_rows = round * self.rows_per_round;
        scratch.clear();
        scratch.extend_from_slice(&body.bytes);
        if !patch_timestamps(generator, body, round_rows, scratch) {
            // A timestamp gained a digit (centuries of simulated time): rebuild.
            scratch.clear();
            generator.write_lines(
                body.first_line,
                body.lines,
                round_rows,
                scratch,
                &mut Vec::new(),
            );
        }
        RequestBody {
            bytes: scratch,
            lines: body.lines,
        }
    }
}

fn build_body(generator: &Generator, first_line: u64, lines: usize, gzip: bool) -> Result<Body> {
    let mut bytes = Vec::with_capacity(lines * ESTIMATED_LINE_BYTES as usize);
    let mut ts_offsets = Vec::with_capacity(lines);
    generator.write_lines(first_line, lines, 0, &mut bytes, &mut ts_offsets);
    if gzip {
        return gzip_body(&bytes, first_line, lines);
    }
    Ok(Body {
        bytes,
        ts_offsets,
        first_line,
        lines,
    })
}

fn gzip_body(plain: &[u8], first_line: u64, lines: usize) -> Result<Body> {
    let mut compressor = Compressor::new(CompressionLvl::default());
    let mut bytes = vec![0; compressor.gzip_compress_bound(plain.len())];
    let Ok(len) = compressor.gzip_compress(plain, &mut bytes) else {
        bail!("gzip of a {} byte body did not fit its bound", plain.len());
    };
    bytes.truncate(len);
    Ok(Body {
        bytes,
        ts_offsets: Vec::new(),
        first_line,
        lines,
    })
}

/// Overwrites each timestamp of `body` (copied into `out`) with its value
/// `round_rows` later. Returns false if a value no longer fits its digits.
fn patch_timestamps(generator: &Generator, body: &Body, round_rows: u64, out: &mut [u8]) -> bool {
    let mut digits = [0u8; 20];
    for (i, &offset) in body.ts_offsets.iter().enumerate() {
        let line = body.first_line + i as u64;
        let old_start = format_decimal(generator.timestamp(line, 0), &mut digits);
        let width = digits.len() - old_start;
        let new_start = format_decimal(generator.timestamp(line, round_rows), &mut digits);
        if new_start != old_start {
            return false;
        }
        out[offset..offset + width].copy_from_slice(&digits[new_start..]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::Shape;

    const SHAPE: Shape = Shape {
        hosts: 10,
        measurements: 1,
        seed: 3,
        ns_per_unit: 1,
        sorted_tags: false,
    };

    fn plan(requests: Option<u64>, last: Option<usize>, gzip: bool) -> BodyPlan {
        BodyPlan {
            batch_lines: 25,
            requests_needed: requests,
            last_request_lines: last,
            gzip,
        }
    }

    fn expected(generator: &Generator, first_line: u64, lines: usize, round_rows: u64) -> Vec<u8> {
        let mut out = Vec::new();
        generator.write_lines(first_line, lines, round_rows, &mut out, &mut Vec::new());
        out
    }

    #[test]
    fn later_rounds_equal_regenerated_lines_with_later_timestamps() {
        let generator = Generator::new(SHAPE);
        let bodies = Bodies::build(&generator, plan(Some(3), None, false)).unwrap();
        assert_eq!(bodies.len(), 3);
        // 3 bodies * 25 lines over 10 series = 7.5 rows, rounded up.
        assert_eq!(bodies.rows_per_round, 8);
        let mut scratch = Vec::new();
        for index in 0..9 {
            let got = bodies
                .request_body(&generator, index, &mut scratch)
                .bytes
                .to_vec();
            let round = index / 3;
            let want = expected(&generator, (index % 3) * 25, 25, round * 8);
            assert_eq!(got, want, "request {index}");
        }
    }

    #[test]
    fn no_point_is_sent_twice_across_rounds() {
        let generator = Generator::new(SHAPE);
        let bodies = Bodies::build(&generator, plan(Some(4), None, false)).unwrap();
        let mut scratch = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for index in 0..12 {
            let body = bodies.request_body(&generator, index, &mut scratch);
            for line in std::str::from_utf8(body.bytes).unwrap().lines() {
                let (series, rest) = line.split_once(' ').unwrap();
                let timestamp = rest.rsplit(' ').next().unwrap();
                assert!(keys.insert(format!("{series} {timestamp}")), "{line}");
            }
        }
        assert_eq!(keys.len(), 12 * 25);
    }

    #[test]
    fn short_last_request_sends_only_the_remaining_lines() {
        let generator = Generator::new(SHAPE);
        for gzip in [false, true] {
            let bodies = Bodies::build(&generator, plan(Some(3), Some(7), gzip)).unwrap();
            let mut scratch = Vec::new();
            let body = bodies.request_body(&generator, 2, &mut scratch);
            assert_eq!(body.lines, 7);
            let plain = if gzip {
                gunzip(body.bytes)
            } else {
                body.bytes.to_vec()
            };
            assert_eq!(plain, expected(&generator, 50, 7, 0), "gzip {gzip}");
        }
    }

    #[test]
    fn gzip_bodies_decompress_to_the_plain_lines() {
        let generator = Generator::new(SHAPE);
        let bodies = Bodies::build(&generator, plan(Some(2), None, true)).unwrap();
        let mut scratch = Vec::new();
        let body = bodies.request_body(&generator, 1, &mut scratch);
        assert_eq!(gunzip(body.bytes), expected(&generator, 25, 25, 0));
        assert!(!bodies.repeats_points(2));
        assert!(bodies.repeats_points(3));
    }

    #[test]
    fn unknown_run_length_builds_the_cap() {
        let generator = Generator::new(SHAPE);
        let bodies = Bodies::build(&generator, plan(None, None, false)).unwrap();
        assert_eq!(bodies.len(), MAX_DISTINCT_BODIES);
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![0; 1 << 20];
        let len = libdeflater::Decompressor::new()
            .gzip_decompress(bytes, &mut out)
            .unwrap();
        out.truncate(len);
        out
    }
}
