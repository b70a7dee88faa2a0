//! Hands frozen batches from a worker to each backend's writer queue.
//!
//! Each backend has one bounded crossbeam channel shared by every worker. A
//! worker never blocks its thread on a full channel (that would stall every
//! connection of the worker): the batch waits in the worker's own overflow
//! queue for that backend, and later batches queue behind it so each backend
//! still receives a worker's batches in order. While any overflow is waiting,
//! the worker admits no new writes (see `api::write`), so overflow is bounded
//! by what requests already accepted.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

use crate::batch::Batch;
use crate::route::{BackendId, Router, SetId};

pub struct Dispatcher {
    /// Per backend, the sending side of its writers' queue.
    queues: Vec<Sender<Arc<Batch>>>,
    /// Per backend, batches that found its queue full, oldest first.
    overflow: Vec<VecDeque<Arc<Batch>>>,
}

impl Dispatcher {
    pub fn new(queues: Vec<Sender<Arc<Batch>>>) -> Dispatcher {
        let overflow = queues.iter().map(|_| VecDeque::new()).collect();
        Dispatcher { queues, overflow }
    }

    /// Queues `batch` for every backend of `set`.
    pub fn dispatch(&mut self, router: &Router, set: SetId, batch: &Arc<Batch>) {
        let backends = router.backends(set);
        batch.expect_settlements(backends.len());
        for &backend in backends {
            if self.overflow[backend].is_empty() {
                if let Err(rejected) = self.try_send(backend, batch.clone()) {
                    self.overflow[backend].push_back(rejected);
                }
            } else {
                self.overflow[backend].push_back(batch.clone());
            }
        }
    }

    /// Moves what it can from the overflow queues into the channels.
    /// Returns true when no overflow is left.
    pub fn drain_overflow(&mut self) -> bool {
        let mut empty = true;
        for backend in 0..self.overflow.len() {
            while let Some(batch) = self.overflow[backend].pop_front() {
                if let Err(rejected) = self.try_send(backend, batch) {
                    self.overflow[backend].push_front(rejected);
                    empty = false;
                    break;
                }
            }
        }
        empty
    }

    /// Takes the overflow `older` (a dispatcher of an earlier config
    /// generation) holds for queues this one also feeds (backends a reload
    /// kept), ahead of this one's own, so each backend still receives a
    /// worker's batches in order. `older` keeps the rest.
    pub fn adopt_overflow(&mut self, older: &mut Dispatcher) {
        for (old, queue) in older.queues.iter().enumerate() {
            if older.overflow[old].is_empty() {
                continue;
            }
            if let Some(new) = self.queues.iter().position(|q| q.same_channel(queue)) {
                let mut moved = std::mem::take(&mut older.overflow[old]);
                moved.append(&mut self.overflow[new]);
                self.overflow[new] = moved;
            }
        }
    }

    /// Empties the overflow queues (shutdown), as (backend, batch) pairs.
    pub fn take_overflow(&mut self) -> Vec<(BackendId, Arc<Batch>)> {
        let mut taken = Vec::new();
        for (backend, queue) in self.overflow.iter_mut().enumerate() {
            taken.extend(queue.drain(..).map(|batch| (backend, batch)));
        }
        taken
    }

    pub fn has_overflow(&self) -> bool {
        self.overflow.iter().any(|queue| !queue.is_empty())
    }

    #[cfg(test)]
    /// Lines waiting in overflow queues (counted once per backend).
    pub fn overflow_lines(&self) -> usize {
        self.overflow.iter().flatten().map(|b| b.lines).sum()
    }

    /// Names of the backends whose queues are full, for error messages.
    pub fn blocked_backends(&self) -> impl Iterator<Item = BackendId> + '_ {
        (0..self.overflow.len()).filter(|&b| !self.overflow[b].is_empty())
    }

    fn try_send(&self, backend: BackendId, batch: Arc<Batch>) -> Result<(), Arc<Batch>> {
        match self.queues[backend].try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(batch)) => Err(batch),
            // The writers only stop after every worker has dropped its senders.
            Err(TrySendError::Disconnected(batch)) => {
                debug_assert!(
                    false,
                    "writer queue of backend {backend} closed while a worker runs"
                );
                Err(batch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchKey;
    use crate::config::Config;
    use crate::lp::precision::Precision;

    fn batch(lines: usize) -> Arc<Batch> {
        let key = BatchKey {
            db: "db".into(),
            rp: None,
            precision: Precision::Nanoseconds,
            authorization: None,
        };
        Arc::new(Batch::new(Arc::new(key), Vec::new().into(), lines))
    }

    /// A router sending every measurement to backends a (0) and b (1).
    fn replicated_to_a_and_b() -> (Router, SetId) {
        let config = Config::from_toml(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backends]]\nname = \"b\"\nurl = \"http://h:2\"\n\
             [routes]\n_default_ = [\"a\", \"b\"]",
        )
        .unwrap();
        let router = Router::new(&config);
        let set = router.route(b"m").unwrap();
        (router, set)
    }

    #[test]
    fn full_queues_overflow_in_order_and_drain_later() {
        let (router, set) = replicated_to_a_and_b();
        let (a_tx, a_rx) = crossbeam_channel::bounded(1);
        let (b_tx, b_rx) = crossbeam_channel::bounded(3);
        let mut dispatcher = Dispatcher::new(vec![a_tx, b_tx]);
        for lines in 1..=3 {
            dispatcher.dispatch(&router, set, &batch(lines));
        }
        assert!(dispatcher.has_overflow());
        assert_eq!(dispatcher.blocked_backends().collect::<Vec<_>>(), vec![0]);
        assert_eq!(dispatcher.overflow_lines(), 2 + 3);
        // Replicas share one allocation.
        let from_b: Vec<_> = b_rx.try_iter().collect();
        let first_a = a_rx.try_recv().unwrap();
        assert!(Arc::ptr_eq(&first_a, &from_b[0]));
        assert!(!dispatcher.drain_overflow());
        assert_eq!(a_rx.try_recv().unwrap().lines, 2);
        assert!(dispatcher.drain_overflow());
        assert_eq!(a_rx.try_recv().unwrap().lines, 3);
        assert!(!dispatcher.has_overflow());
    }

    #[test]
    fn a_kept_backend_gets_older_overflow_before_newer_batches() {
        let (router, set) = replicated_to_a_and_b();
        let (a_tx, a_rx) = crossbeam_channel::bounded(1);
        let (b_tx, _b_rx) = crossbeam_channel::bounded(1);
        let mut old = Dispatcher::new(vec![a_tx.clone(), b_tx]);
        for lines in 1..=3 {
            old.dispatch(&router, set, &batch(lines));
        }
        // The reload keeps a (same queue) and removes b.
        let (c_tx, _c_rx) = crossbeam_channel::bounded(1);
        let mut new = Dispatcher::new(vec![c_tx, a_tx]);
        new.adopt_overflow(&mut old);
        assert_eq!(
            old.blocked_backends().collect::<Vec<_>>(),
            vec![1],
            "b's stays behind"
        );
        assert_eq!(
            new.blocked_backends().collect::<Vec<_>>(),
            vec![1],
            "a's came along"
        );
        let single = Router::new(
            &Config::from_toml(
                "[[backends]]\nname = \"c\"\nurl = \"http://h:3\"\n[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n\
                 [routes]\n_default_ = [\"a\"]",
            )
            .unwrap(),
        );
        new.dispatch(&single, single.route(b"m").unwrap(), &batch(4));
        let mut delivered = vec![a_rx.try_recv().unwrap().lines];
        for _ in 0..10 {
            new.drain_overflow();
            delivered.extend(a_rx.try_iter().map(|b| b.lines));
        }
        assert_eq!(delivered, [1, 2, 3, 4]);
    }
}
