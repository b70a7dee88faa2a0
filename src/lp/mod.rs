//! InfluxDB 1.x line protocol: finding points in a write body, validating them,
//! and the request-level helpers around them (timestamp precision, gzip bodies).
//!
//! The data flow for one `/write` request is:
//!
//! 1. [`gzip::Gunzip`] inflates the body when `Content-Encoding: gzip`, bounded by a
//!    caller-supplied limit.
//! 2. [`scan::scan_lines`] walks the body in place and yields each point with the
//!    number of the physical line it starts on (blank and comment lines skipped).
//! 3. [`line::parse_line`] validates each point exactly as InfluxDB 1.x's parser
//!    would, without allocating, and reports where the measurement ends so the
//!    router can pick a backend.
//!    Plain points (no escapes, no strings) take a fast path (`plain`) that checks
//!    their structure from a bitmask of delimiters; the rest take the full port.
//! 4. [`precision::Precision`] turns the `precision=` query parameter into the value
//!    forwarded to backends and the timestamp given to points that lack one.
//!
//! Nothing here allocates per line on the hot path; errors are small `Copy` enums
//! whose `Display` uses InfluxDB 1.x's own wording so clients see the same messages
//! through the proxy as without it.
//!
//! The behaviour mirrored is that of `models/points.go` in InfluxDB 1.x, as pinned at
//! <https://github.com/influxdata/influxdb/blob/004d1cf413d9dd5ed27fb3e761033ceff3def206/models/points.go>.
//! Each deliberate difference is documented where it happens.

mod classify;
pub mod gzip;
pub mod line;
mod plain;
pub mod precision;
pub mod scan;
mod swar;

#[cfg(test)]
mod naive;
