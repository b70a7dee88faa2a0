//! Measurement -> backend set.
//!
//! A route key matches a measurement exactly or as a prefix. Lookup order, as in
//! influx-proxy: the exact name first, then the longest matching prefix, then
//! `_default_`. Routes naming the same backends share one [`SetId`], so a worker
//! keeps one batch per set, and replicas of a set share each frozen batch.

use std::collections::HashMap;

use crate::config::{Config, DEFAULT_ROUTE};

/// Index of a backend in `Config::backends` (and in every per-backend table).
pub type BackendId = usize;

/// Index of a distinct set of backends, dense from 0 to `Router::set_count()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetId(pub u32);

#[derive(Debug, Clone)]
pub struct Router {
    exact: HashMap<Box<[u8]>, SetId>,
    /// Every route key as a prefix, longest first, so the first hit is the longest.
    prefixes: Vec<(Box<[u8]>, SetId)>,
    default: Option<SetId>,
    /// Backends of each set, sorted and without duplicates.
    sets: Vec<Box<[BackendId]>>,
}

impl Router {
    /// Builds the routing table of a validated config.
    ///
    /// # Panics
    /// If a route names a backend missing from `config.backends`, which
    /// `Config::validate` rules out.
    pub fn new(config: &Config) -> Router {
        let mut sets: Vec<Box<[BackendId]>> = Vec::new();
        let mut intern = |names: &[String]| -> SetId {
            let mut ids: Vec<BackendId> = names
                .iter()
                .map(|name| {
                    config
                        .backends
                        .iter()
                        .position(|b| &b.name == name)
                        .expect("routes are validated against backends")
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            match sets.iter().position(|set| **set == *ids) {
                Some(i) => SetId(i as u32),
                None => {
                    sets.push(ids.into_boxed_slice());
                    SetId(sets.len() as u32 - 1)
                }
            }
        };
        let mut exact = HashMap::new();
        let mut prefixes = Vec::new();
        let mut default = None;
        for (key, names) in &config.routes {
            let set = intern(names);
            if key == DEFAULT_ROUTE {
                default = Some(set);
            } else {
                exact.insert(key.as_bytes().into(), set);
                prefixes.push((key.as_bytes().into(), set));
            }
        }
        prefixes.sort_by(|a: &(Box<[u8]>, SetId), b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Router {
            exact,
            prefixes,
            default,
            sets,
        }
    }

    /// The backend set of an (unescaped) measurement name, if any route matches.
    pub fn route(&self, measurement: &[u8]) -> Option<SetId> {
        if let Some(set) = self.exact.get(measurement) {
            return Some(*set);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| measurement.starts_with(prefix))
            .map(|(_, set)| *set)
            .or(self.default)
    }

    pub fn backends(&self, set: SetId) -> &[BackendId] {
        &self.sets[set.0 as usize]
    }

    pub fn set_count(&self) -> usize {
        self.sets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &str) -> Router {
        let config = Config::from_toml(&format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n\
             [[backends]]\nname = \"b\"\nurl = \"http://h:2\"\n\
             [[backends]]\nname = \"c\"\nurl = \"http://h:3\"\n[routes]\n{routes}"
        ))
        .unwrap();
        Router::new(&config)
    }

    #[track_caller]
    fn routes_to(router: &Router, measurement: &str, expected: Option<&[BackendId]>) {
        let got = router
            .route(measurement.as_bytes())
            .map(|set| router.backends(set));
        assert_eq!(got, expected, "measurement {measurement:?}");
    }

    #[test]
    fn exact_then_longest_prefix_then_default() {
        let r = router(
            "_default_ = [\"a\", \"b\"]\ncpu = [\"a\"]\ncpu_load = [\"b\"]\ncpu_load_short = [\"c\"]\nmem = [\"c\"]",
        );
        // Exact
        routes_to(&r, "cpu", Some(&[0]));
        routes_to(&r, "mem", Some(&[2]));
        // Longest prefix
        routes_to(&r, "cpu_x", Some(&[0]));
        routes_to(&r, "cpu_load", Some(&[1]));
        routes_to(&r, "cpu_load_1m", Some(&[1]));
        routes_to(&r, "cpu_load_shortest", Some(&[2]));
        // Default
        routes_to(&r, "cp", Some(&[0, 1]));
        routes_to(&r, "disk", Some(&[0, 1]));
        routes_to(&r, "", Some(&[0, 1]));
    }

    #[test]
    fn no_default_means_no_route() {
        let r = router("cpu = [\"a\"]");
        routes_to(&r, "cpu", Some(&[0]));
        routes_to(&r, "disk", None);
    }

    #[test]
    fn routes_naming_the_same_backends_share_a_set() {
        let r = router("_default_ = [\"a\", \"b\"]\ncpu = [\"b\", \"a\"]\nmem = [\"a\", \"a\", \"b\"]\ndisk = [\"c\"]");
        assert_eq!(r.set_count(), 2);
        assert_eq!(r.route(b"cpu"), r.route(b"mem"));
        assert_eq!(r.route(b"cpu"), r.route(b"other"));
        assert_ne!(r.route(b"cpu"), r.route(b"disk"));
    }
}
