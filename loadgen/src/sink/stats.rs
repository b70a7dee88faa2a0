//! What the sink counted, per listen address, and its `/stats` JSON.
//!
//! Each listener's counters sit behind one mutex taken once per request, after
//! the body has been counted on the connection's own thread, so connections do
//! not contend per line. With `--verify` a listener also keeps the hash of every
//! point it accepted (about 16 bytes a point, at the hash set's load factor) to
//! count duplicates: points that arrived more than once.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use super::lines::Tally;
use crate::report::json_string;

/// Counters of one listen address (one simulated backend).
#[derive(Default)]
pub struct ListenerStats {
    /// Requests of every kind but `/stats`.
    pub requests: u64,
    /// `/write` requests answered 204.
    pub writes: u64,
    /// Points in those writes.
    pub points: u64,
    /// `/write` body bytes as received (compressed when gzip).
    pub bytes: u64,
    /// `/write` body bytes after gunzip.
    pub bytes_decoded: u64,
    /// `/write` requests answered 500 by `--fail-ratio`; their points not counted.
    pub failures_injected: u64,
    /// Requests answered 503 during `--down-for` (with `--down-mode 503`).
    pub outage_rejected: u64,
    /// Requests answered 4xx (bad parameters, broken gzip, unknown paths).
    pub client_errors: u64,
    /// db -> measurement -> points.
    pub points_by_db: BTreeMap<String, BTreeMap<String, u64>>,
    /// Hashes of accepted points, with `--verify`.
    seen: Option<PointSet>,
    /// Accepted points whose hash was already in `seen`.
    pub duplicates: u64,
}

/// A set of values that are already hashes: hashing them again would only cost.
type PointSet = HashSet<u64, BuildHasherDefault<PrehashedHasher>>;

#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

impl ListenerStats {
    pub fn new(verify: bool) -> ListenerStats {
        ListenerStats {
            seen: verify.then(PointSet::default),
            ..ListenerStats::default()
        }
    }

    /// Zeroes every counter and forgets the points seen (releasing their memory).
    pub fn reset(&mut self) {
        *self = ListenerStats::new(self.seen.is_some());
    }

    /// Adds an accepted write's points: `tally` is drained, `hashes` checked
    /// against the points seen before (ignored without `--verify`).
    pub fn add_points(&mut self, db: &str, tally: &mut Tally, hashes: &[u64]) {
        let by_measurement = match self.points_by_db.get_mut(db) {
            Some(m) => m,
            None => self.points_by_db.entry(db.to_owned()).or_default(),
        };
        tally.drain(|measurement, points| {
            let name = String::from_utf8_lossy(measurement);
            match by_measurement.get_mut(name.as_ref()) {
                Some(count) => *count += points,
                None => {
                    by_measurement.insert(name.into_owned(), points);
                }
            }
        });
        if let Some(seen) = &mut self.seen {
            for &hash in hashes {
                if !seen.insert(hash) {
                    self.duplicates += 1;
                }
            }
        }
    }

    fn write_json(&self, addr: SocketAddr, out: &mut String) {
        let _ = write!(
            out,
            "{{\"port\":{},\"requests\":{},\"writes\":{},\"points\":{},\"bytes\":{},\
             \"bytes_decoded\":{},\"failures_injected\":{},\"outage_rejected\":{},\
             \"client_errors\":{},\"duplicates\":{},\"points_by_db\":{{",
            addr.port(),
            self.requests,
            self.writes,
            self.points,
            self.bytes,
            self.bytes_decoded,
            self.failures_injected,
            self.outage_rejected,
            self.client_errors,
            if self.seen.is_some() {
                self.duplicates.to_string()
            } else {
                "null".to_owned()
            },
        );
        for (i, (db, measurements)) in self.points_by_db.iter().enumerate() {
            let _ = write!(
                out,
                "{}{}:{{",
                if i > 0 { "," } else { "" },
                json_string(db)
            );
            for (j, (name, points)) in measurements.iter().enumerate() {
                let _ = write!(
                    out,
                    "{}{}:{points}",
                    if j > 0 { "," } else { "" },
                    json_string(name)
                );
            }
            out.push('}');
        }
        out.push_str("}}");
    }
}

/// The `/stats` document: each listener by its address, then the sums.
///
/// `{"listeners":{"127.0.0.1:18086":{"port":18086,"requests":..,"points":..,
/// "points_by_db":{"db":{"cpu":..}},"duplicates":null,..}},"total":{..}}`
pub fn stats_json<'a>(
    listeners: impl IntoIterator<Item = (SocketAddr, &'a ListenerStats)>,
) -> String {
    let mut out = String::from("{\"listeners\":{");
    let mut total = ListenerStats::default();
    let mut any_verify = false;
    for (i, (addr, stats)) in listeners.into_iter().enumerate() {
        let _ = write!(out, "{}\"{addr}\":", if i > 0 { "," } else { "" });
        stats.write_json(addr, &mut out);
        total.requests += stats.requests;
        total.writes += stats.writes;
        total.points += stats.points;
        total.bytes += stats.bytes;
        total.bytes_decoded += stats.bytes_decoded;
        total.failures_injected += stats.failures_injected;
        total.outage_rejected += stats.outage_rejected;
        total.client_errors += stats.client_errors;
        total.duplicates += stats.duplicates;
        any_verify |= stats.seen.is_some();
        for (db, measurements) in &stats.points_by_db {
            let sums = total.points_by_db.entry(db.clone()).or_default();
            for (name, points) in measurements {
                *sums.entry(name.clone()).or_default() += points;
            }
        }
    }
    if any_verify {
        total.seen = Some(PointSet::default());
    }
    out.push_str("},\"total\":");
    // The total's port is meaningless; 0 says so.
    total.write_json(SocketAddr::from(([0, 0, 0, 0], 0)), &mut out);
    out.push('}');
    out
}
