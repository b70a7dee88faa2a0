//! The line of writes waiting for room in the writer queues, per worker.
//!
//! When a slow backend's queue is full, writes wait before their bodies are
//! read. Only the first in line looks for room (every few milliseconds); the
//! others sleep until every write ahead of them was admitted or gave up. A
//! stall then costs one timer per worker, not one per waiting client, and
//! writes are admitted in the order they arrived. Each admitted write holds a
//! [`BodyPass`] while its body is read and ingested, so the line can let in
//! only a few bodies at a time.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::stats::WorkerStats;

/// A place in line: waiting (with the task to wake once it is first), or left
/// while not first (removed once it reaches the front).
enum Place {
    Waiting(Option<Waker>),
    Left,
}

pub struct AdmissionLine {
    next_ticket: Cell<u64>,
    /// Places by ticket, oldest first: tickets only grow, so the line is
    /// sorted and a place is found by binary search.
    places: RefCell<VecDeque<(u64, Place)>>,
    /// Where `/metrics` reads how many writes wait (`writes_waiting`), and
    /// other workers how many bodies this one reads or ingests
    /// (`write_bodies`).
    stats: Arc<WorkerStats>,
}

impl AdmissionLine {
    pub fn new(stats: Arc<WorkerStats>) -> AdmissionLine {
        AdmissionLine {
            next_ticket: Cell::new(0),
            places: RefCell::new(VecDeque::new()),
            stats,
        }
    }

    /// Admitted writes whose bodies are being read or ingested.
    pub fn bodies_in_flight(&self) -> usize {
        self.stats.write_bodies.load(Ordering::Relaxed) as usize
    }

    /// Counts an admitted write's body in flight until the pass drops.
    pub fn body_pass(&self) -> BodyPass<'_> {
        self.stats.write_bodies.fetch_add(1, Ordering::Relaxed);
        BodyPass { line: self }
    }

    /// True when no write waits: a new one may be admitted at once.
    pub fn is_empty(&self) -> bool {
        self.places.borrow().is_empty()
    }

    /// Joins the back of the line. Dropping the ticket leaves it, and hands
    /// the turn to the next write if this one was first.
    pub fn join(&self) -> Ticket<'_> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        self.places
            .borrow_mut()
            .push_back((ticket, Place::Waiting(None)));
        self.stats.writes_waiting.fetch_add(1, Ordering::Relaxed);
        Ticket { line: self, ticket }
    }

    /// Removes the front and every place left behind it, then wakes the new
    /// front.
    fn advance(&self, places: &mut VecDeque<(u64, Place)>) {
        places.pop_front();
        while let Some((_, Place::Left)) = places.front() {
            places.pop_front();
        }
        if let Some((_, Place::Waiting(Some(waker)))) = places.front_mut() {
            waker.wake_by_ref();
        }
    }
}

/// A write's place in an [`AdmissionLine`].
pub struct Ticket<'a> {
    line: &'a AdmissionLine,
    ticket: u64,
}

impl Ticket<'_> {
    /// Completes once this write is first in line.
    pub fn first(&self) -> First<'_, '_> {
        First { ticket: self }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.line
            .stats
            .writes_waiting
            .fetch_sub(1, Ordering::Relaxed);
        let mut places = self.line.places.borrow_mut();
        match places.front() {
            Some((front, _)) if *front == self.ticket => self.line.advance(&mut places),
            _ => {
                if let Ok(index) = places.binary_search_by_key(&self.ticket, |(t, _)| *t) {
                    places[index].1 = Place::Left;
                }
            }
        }
    }
}

/// An admitted write whose body is being read or ingested; see
/// [`AdmissionLine::body_pass`].
pub struct BodyPass<'a> {
    line: &'a AdmissionLine,
}

impl Drop for BodyPass<'_> {
    fn drop(&mut self) {
        self.line.stats.write_bodies.fetch_sub(1, Ordering::Relaxed);
    }
}

/// See [`Ticket::first`].
pub struct First<'t, 'a> {
    ticket: &'t Ticket<'a>,
}

impl Future for First<'_, '_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut places = self.ticket.line.places.borrow_mut();
        if places.front().map(|(t, _)| *t) == Some(self.ticket.ticket) {
            return Poll::Ready(());
        }
        if let Ok(index) = places.binary_search_by_key(&self.ticket.ticket, |(t, _)| *t) {
            places[index].1 = Place::Waiting(Some(cx.waker().clone()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll_first(ticket: &Ticket<'_>, counter: &Arc<Counter>) -> bool {
        let waker = Waker::from(counter.clone());
        let mut first = ticket.first();
        Pin::new(&mut first)
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
    }

    fn wakes(counter: &Arc<Counter>) -> usize {
        counter.0.load(Ordering::Relaxed)
    }

    #[test]
    fn writes_take_their_turn_in_the_order_they_joined() {
        let line = AdmissionLine::new(Arc::default());
        assert!(line.is_empty());
        let counters: Vec<Arc<Counter>> = (0..3).map(|_| Arc::default()).collect();
        let mut waiting: VecDeque<(usize, Ticket<'_>)> = (0..3).map(|i| (i, line.join())).collect();
        assert!(!line.is_empty());
        assert_eq!(line.stats.writes_waiting.load(Ordering::Relaxed), 3);
        for (i, ticket) in &waiting {
            poll_first(ticket, &counters[*i]);
        }
        while let Some((i, ticket)) = waiting.pop_front() {
            assert!(poll_first(&ticket, &counters[i]), "write {i} is first");
            for (later, ticket) in &waiting {
                assert!(
                    !poll_first(ticket, &counters[*later]),
                    "write {later} waits"
                );
            }
            let before: Vec<usize> = counters.iter().map(wakes).collect();
            drop(ticket);
            // Only the next in line is woken.
            let next = waiting.front().map(|(n, _)| *n);
            for (j, counter) in counters.iter().enumerate() {
                assert_eq!(wakes(counter) - before[j], usize::from(next == Some(j)));
            }
        }
        assert!(line.is_empty());
        assert_eq!(line.stats.writes_waiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn writes_that_give_up_behind_the_first_are_skipped_when_it_leaves() {
        let line = AdmissionLine::new(Arc::default());
        let first = line.join();
        let second = line.join();
        let third = line.join();
        let fourth = line.join();
        let counters: Vec<Arc<Counter>> = (0..4).map(|_| Arc::default()).collect();
        for (ticket, counter) in [&first, &second, &third, &fourth]
            .into_iter()
            .zip(&counters)
        {
            poll_first(ticket, counter);
        }
        drop(third);
        drop(second);
        assert_eq!(wakes(&counters[3]), 0, "the first still looks for room");
        drop(first);
        assert_eq!(wakes(&counters[3]), 1);
        assert!(poll_first(&fourth, &counters[3]));
        drop(fourth);
        assert!(line.is_empty());
        assert_eq!(line.stats.writes_waiting.load(Ordering::Relaxed), 0);
        // A write joining later is first at once.
        let fifth = line.join();
        assert!(poll_first(&fifth, &counters[0]));
    }

    #[test]
    fn body_passes_count_bodies_in_flight() {
        let line = AdmissionLine::new(Arc::default());
        let first = line.body_pass();
        let second = line.body_pass();
        assert_eq!(line.bodies_in_flight(), 2);
        drop(first);
        assert_eq!(line.bodies_in_flight(), 1);
        drop(second);
        assert_eq!(line.bodies_in_flight(), 0);
    }
}
