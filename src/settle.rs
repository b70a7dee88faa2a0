//! Waking durable writes when their batches settle.
//!
//! A write in `ack = "durable"` mode waits on its worker until writer threads
//! have settled its batches. The writer that settles a batch someone waits on
//! pokes that worker's end of a socket pair ([`SettlePoke`]); a task on the
//! worker reads the pokes and wakes the waiting writes, which look again. A
//! write also looks every [`BACKSTOP`], so a lost poke (or a socket pair the
//! system refused) costs time, never an answer.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use monoio::io::AsyncReadRent;

/// How often a waiting write looks at its batches without being poked.
pub const BACKSTOP: Duration = Duration::from_millis(10);

/// The writers' end: pokes one worker. `Send` and `Sync`, shared by batches.
#[derive(Debug)]
pub struct SettlePoke {
    /// `None` when the system refused the socket pair: waits then rely on the
    /// backstop.
    socket: Option<UnixStream>,
}

impl SettlePoke {
    /// Tells the worker a batch it waits on has settled. Never blocks: a full
    /// socket already holds a poke the worker has yet to read.
    pub fn poke(&self) {
        if let Some(mut socket) = self.socket.as_ref() {
            let _ = socket.write(&[1]);
        }
    }
}

/// A worker's end: the pokes, and the writes waiting for them.
pub struct SettleNotices {
    poke: Arc<SettlePoke>,
    /// Taken by [`SettleNotices::run`], which reads it on the worker's runtime.
    socket: RefCell<Option<UnixStream>>,
    /// Counts the pokes read; a waiter wakes when it moves.
    round: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Default for SettleNotices {
    fn default() -> Self {
        let (poke, socket) = match UnixStream::pair().and_then(|(tx, rx)| {
            tx.set_nonblocking(true)?;
            rx.set_nonblocking(true)?;
            Ok((tx, rx))
        }) {
            Ok((tx, rx)) => (Some(tx), Some(rx)),
            Err(e) => {
                tracing::warn!(error = %e, "no socket pair for settle notices; durable writes look every 10 ms");
                (None, None)
            }
        };
        SettleNotices {
            poke: Arc::new(SettlePoke { socket: poke }),
            socket: RefCell::new(socket),
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
        let Some(socket) = self.socket.borrow_mut().take() else {
            return;
        };
        let mut socket = match monoio::net::UnixStream::from_std(socket) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(error = %e, "settle notices unavailable; durable writes look every 10 ms");
                return;
            }
        };
        let mut buf = vec![0u8; 64];
        loop {
            let (result, returned) = socket.read(buf).await;
            buf = returned;
            match result {
                Ok(n) if n > 0 => {
                    self.round.set(self.round.get() + 1);
                    for waker in self.waiters.borrow_mut().drain(..) {
                        waker.wake();
                    }
                }
                // The writers' end lives as long as this; an error is the
                // end of notices, and the backstop carries on.
                _ => return,
            }
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
        let mut socket = notices.socket.borrow_mut().take().unwrap();
        let mut read = || {
            let mut buf = [0u8; 8];
            std::io::Read::read(&mut socket, &mut buf).map_or(0, |n| n)
        };
        batch.settle(None);
        assert_eq!(read(), 0, "poked before the batch settled");
        batch.settle(None);
        assert_eq!(read(), 1);
    }
}
