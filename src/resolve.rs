//! Backend host names, resolved off the workers.
//!
//! A worker must never block: `getaddrinfo` can take seconds when a DNS server
//! is slow or away, and every connection on the worker would wait with it.
//! Workers ask [`lookup`], which never blocks. A host name is resolved on the
//! resolver thread (started by the first one asked for), and its addresses are
//! kept and resolved again every [`REFRESH`], so a backend that moves is
//! followed without a reload. A name that failed is tried again when asked for
//! after [`RETRY_FAILED`]. IP addresses need no resolving.
//!
//! Writer and recovery threads connect with the standard blocking resolver:
//! they only block themselves.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// How often the addresses of every name asked for are resolved again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How long a failed resolution is the answer before it is tried again.
pub const RETRY_FAILED: Duration = Duration::from_secs(1);

/// What [`lookup`] knows of a `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Its addresses, in the resolver's order.
    Ready(Arc<[SocketAddr]>),
    /// Being resolved: ask again shortly.
    Pending,
    /// It did not resolve: why.
    Failed(String),
}

/// The addresses of `authority` (`host:port`) if known, without blocking; a
/// name not known yet is handed to the resolver thread.
pub fn lookup(authority: &str) -> Lookup {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Lookup::Ready(Arc::from([addr]));
    }
    resolver().lookup(authority)
}

/// One name's state in the cache.
#[derive(Debug, Clone)]
enum Entry {
    Pending,
    Resolved(Arc<[SocketAddr]>),
    Failed { reason: String, at: Instant },
}

type Entries = Arc<Mutex<HashMap<String, Entry>>>;

struct Resolver {
    entries: Entries,
    requests: Sender<String>,
}

fn resolver() -> &'static Resolver {
    static RESOLVER: OnceLock<Resolver> = OnceLock::new();
    RESOLVER.get_or_init(|| {
        let (requests, incoming) = crossbeam_channel::unbounded();
        let entries = Entries::default();
        let shared = Arc::clone(&entries);
        if let Err(e) = thread::Builder::new()
            .name("fluxgate-resolve".into())
            .spawn(move || run(&shared, &incoming))
        {
            // Every name then stays pending, and queries to it time out.
            tracing::error!(error = %e, "cannot start the resolver thread");
        }
        Resolver { entries, requests }
    })
}

impl Resolver {
    fn lookup(&self, authority: &str) -> Lookup {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(authority) {
            Some(Entry::Resolved(addrs)) => return Lookup::Ready(Arc::clone(addrs)),
            Some(Entry::Pending) => return Lookup::Pending,
            Some(Entry::Failed { reason, at }) if at.elapsed() < RETRY_FAILED => {
                return Lookup::Failed(reason.clone());
            }
            Some(Entry::Failed { .. }) | None => {}
        }
        entries.insert(authority.to_owned(), Entry::Pending);
        // The thread owns the receiver for as long as the process runs.
        let _ = self.requests.send(authority.to_owned());
        Lookup::Pending
    }
}

/// The resolver thread: resolves names as they are asked for, and all of them
/// again every [`REFRESH`].
fn run(entries: &Entries, requests: &Receiver<String>) {
    // A deadline, not a timeout per wait: names asked for keep coming, and
    // must not put the refresh off.
    let mut next_refresh = Instant::now() + REFRESH;
    loop {
        match requests.recv_deadline(next_refresh) {
            Ok(authority) => {
                let entry = resolve(&authority, None);
                store(entries, authority, entry);
            }
            Err(RecvTimeoutError::Timeout) => {
                next_refresh = Instant::now() + REFRESH;
                let known: Vec<(String, Entry)> = entries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(name, entry)| (name.clone(), entry.clone()))
                    .collect();
                for (authority, previous) in known {
                    let entry = resolve(&authority, Some(previous));
                    store(entries, authority, entry);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn store(entries: &Entries, authority: String, entry: Entry) {
    entries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(authority, entry);
}

/// Resolves `authority`, blocking. A refresh that fails keeps the addresses the
/// name had: a DNS server that is briefly away should not take a backend with it.
fn resolve(authority: &str, previous: Option<Entry>) -> Entry {
    let failure = match authority.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Arc<[SocketAddr]> = addrs.collect();
            if !addrs.is_empty() {
                return Entry::Resolved(addrs);
            }
            format!("{authority} resolved to no address")
        }
        Err(e) => format!("cannot resolve {authority}: {e}"),
    };
    match previous {
        Some(Entry::Resolved(addrs)) => {
            tracing::warn!(authority, reason = %failure, "keeping the addresses resolved before");
            Entry::Resolved(addrs)
        }
        _ => Entry::Failed {
            reason: failure,
            at: Instant::now(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks until the answer is no longer pending (bounded: names here resolve,
    /// or fail, from /etc/hosts or the host name's syntax, without DNS).
    fn settled(authority: &str) -> Lookup {
        let started = Instant::now();
        loop {
            match lookup(authority) {
                Lookup::Pending if started.elapsed() < Duration::from_secs(20) => {
                    thread::sleep(Duration::from_millis(1));
                }
                answer => return answer,
            }
        }
    }

    #[test]
    fn ip_addresses_need_no_resolving() {
        let addr: SocketAddr = "127.0.0.1:8086".parse().unwrap();
        assert_eq!(lookup("127.0.0.1:8086"), Lookup::Ready(Arc::from([addr])));
        let v6: SocketAddr = "[::1]:8086".parse().unwrap();
        assert_eq!(lookup("[::1]:8086"), Lookup::Ready(Arc::from([v6])));
    }

    #[test]
    fn a_host_name_is_pending_then_resolved() {
        // `localhost` resolves from /etc/hosts, without a DNS server. No other
        // test asks for this name, so the first answer is "pending".
        assert_eq!(lookup("localhost:8086"), Lookup::Pending);
        match settled("localhost:8086") {
            Lookup::Ready(addrs) => {
                assert!(!addrs.is_empty());
                assert!(addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 8086));
            }
            other => panic!("localhost did not resolve: {other:?}"),
        }
    }

    #[test]
    fn a_name_that_does_not_resolve_fails_with_the_reason() {
        // An empty host name fails at once, without asking a DNS server.
        match settled(":8086") {
            Lookup::Failed(reason) => {
                assert!(reason.starts_with("cannot resolve :8086"), "{reason}")
            }
            other => panic!("expected a failure: {other:?}"),
        }
    }

    #[test]
    fn a_failed_refresh_keeps_the_addresses_known() {
        let addr: SocketAddr = "10.0.0.1:8086".parse().unwrap();
        let known = Entry::Resolved(Arc::from([addr]));
        match resolve(":8086", Some(known)) {
            Entry::Resolved(addrs) => assert_eq!(&addrs[..], &[addr]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(resolve(":8086", None), Entry::Failed { .. }));
    }
}
