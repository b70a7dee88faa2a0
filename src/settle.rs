//! Waking durable writes when their batches settle.
//!
//! A write in `ack = "durable"` mode waits on its worker until writer threads
//! have settled its batches. The writer that settles a batch someone waits on
//! pokes that worker's doorbell ([`SettlePoke`]); a task on the worker hears
//! the pokes and wakes the waiting writes, which look again. A
//! write also looks every [`BACKSTOP`], so a lost poke (or a socket pair the
//! system refused) costs time, never an answer.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::doorbell::{doorbell, Bell, Ring};

/// How often a waiting write looks at its batches without being poked.
pub const BACKSTOP: Duration = Duration::from_millis(10);

/// The writers' end: pokes one worker. `Send` and `Sync`, shared by batches.
#[derive(Debug)]
pub struct SettlePoke {
    /// `None` when the system refused the socket pair: waits then rely on the
    /// backstop.
    ring: Option<Ring>,
}

impl SettlePoke {
    /// Tells the worker a batch it waits on has settled. Never blocks.
    pub fn poke(&self) {
        if let Some(ring) = &self.ring {
            ring.ring();
        }
    }
}

/// A worker's end: the pokes, and the writes waiting for them.
pub struct SettleNotices {
    poke: Arc<SettlePoke>,
    /// Taken by [`SettleNotices::run`], which hears it on the worker's runtime.
    bell: RefCell<Option<Bell>>,
    /// Counts the pokes read; a waiter wakes when it moves.
    round: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Default for SettleNotices {
    fn default() -> Self {
        let (ring, bell) = match doorbell() {
            Ok((ring, bell)) => (Some(ring), Some(bell)),
            Err(e) => {
                tracing::warn!(error = %e, "no socket pair for settle notices; durable writes look every 10 ms");
                (None, None)
            }
        };
        SettleNotices {
            poke: Arc::new(SettlePoke { ring }),
            bell: RefCell::new(bell),
            round: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        }
    }
}

impl SettleNotices {
    /// What batches a write waits on are given, to poke this worker.
    pub fn poke(&self) -> &Arc<SettlePoke> {
        &self.poke
    }

    /// Reads pokes and wakes the waiting writes, until the socket fails; run
    /// as a task on the worker's runtime.
    pub async fn run(&self) {
        let Some(bell) = self.bell.borrow_mut().take() else {
            return;
        };
        // The writers' end lives as long as this; the end of the socket is
        // the end of notices, and the backstop carries on.
        let heard = bell.hear(|| {
            self.round.set(self.round.get() + 1);
            for waker in self.waiters.borrow_mut().drain(..) {
                waker.wake();
            }
        });
        if let Err(e) = heard.await {
            tracing::warn!(error = %e, "settle notices unavailable; durable writes look every 10 ms");
        }
    }

    /// Completes at the next poke read after it was made.
    pub fn next(&self) -> NextPoke<'_> {
        NextPoke {
            notices: self,
            round: self.round.get(),
        }
    }
}

/// See [`SettleNotices::next`].
pub struct NextPoke<'a> {
    notices: &'a SettleNotices,
    round: u64,
}

impl Future for NextPoke<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notices.round.get() != self.round {
            return Poll::Ready(());
        }
        // Once per task: a write polled again after its backstop fired must
        // not pile up wakers while no poke comes.
        let mut waiters = self.notices.waiters.borrow_mut();
        if !waiters.iter().any(|waker| waker.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Batch, BatchKey};
    use crate::lp::precision::Precision;
    use std::rc::Rc;

    fn batch() -> Arc<Batch> {
        let key = BatchKey {
            db: "db".into(),
            rp: None,
            precision: Precision::Nanoseconds,
            authorization: None,
        };
        Arc::new(Batch::new(Arc::new(key), Vec::new().into(), 1))
    }

    /// A writer thread settling a watched batch wakes a task waiting for the
    /// next poke (no backstop here: were the poke lost, the wait would time
    /// out).
    async fn a_settled_batch_pokes_its_worker() {
        let notices = Rc::new(SettleNotices::default());
        let reader = notices.clone();
        monoio::spawn(async move { reader.run().await });
        for _ in 0..3 {
            let batch = batch();
            batch.expect_settlements(2);
            batch.watch(notices.poke());
            let next = notices.next();
            let writer = {
                let batch = batch.clone();
                std::thread::spawn(move || {
                    batch.settle(None);
                    batch.settle(None);
                })
            };
            let woken = monoio::time::timeout(Duration::from_secs(20), next).await;
            writer.join().unwrap();
            assert!(woken.is_ok(), "no poke reached the worker");
            assert!(batch.is_settled());
        }
    }

    #[test]
    fn pokes_wake_the_worker_on_both_drivers() {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(a_settled_batch_pokes_its_worker());
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(a_settled_batch_pokes_its_worker());
    }

    #[test]
    fn only_the_last_settlement_pokes() {
        let notices = SettleNotices::default();
        let batch = batch();
        batch.expect_settlements(2);
        batch.watch(notices.poke());
        let mut bell = notices.bell.borrow_mut().take().unwrap();
        batch.settle(None);
        assert_eq!(bell.take_rings(), 0, "poked before the batch settled");
        batch.settle(None);
        assert_eq!(bell.take_rings(), 1);
    }
}
