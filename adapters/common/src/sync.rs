//! Runtime-neutral synchronization: a one-way flag that can be awaited, a
//! counter of live tasks with an optional limit, and a race of two futures.
//! They wake tasks through `event-listener`, so they work on any executor.

use event_listener::{listener, Event};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// A flag that goes from unset to set once; any number of tasks can await it.
#[derive(Debug, Default)]
pub struct Latch {
    set: AtomicBool,
    event: Event,
}

impl Latch {
    /// An unset latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes every waiter. Setting twice is harmless.
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Completes once the flag is set (at once if it already is). The
    /// waiter lives inside the future: waiting allocates nothing.
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            listener!(self.event => listener);
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }
}

/// Counts live things (connections, accept loops) and lets a task wait until
/// none is left. Entries are [`GaugeGuard`]s: dropping one leaves.
#[derive(Debug, Default)]
pub struct Gauge {
    count: AtomicUsize,
    empty: Event,
}

/// One entry in a [`Gauge`]; dropping it leaves the gauge.
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: Arc<Gauge>,
}

impl Gauge {
    /// An empty gauge.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Enters, whatever the count.
    pub fn enter(self: &Arc<Self>) -> GaugeGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        GaugeGuard {
            gauge: Arc::clone(self),
        }
    }

    /// Enters if fewer than `limit` are in; `None` otherwise.
    pub fn try_enter(self: &Arc<Self>, limit: usize) -> Option<GaugeGuard> {
        self.count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| GaugeGuard {
                gauge: Arc::clone(self),
            })
    }

    /// How many are in now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Completes when the count is zero.
    pub async fn wait_empty(&self) {
        loop {
            if self.count() == 0 {
                return;
            }
            listener!(self.empty => listener);
            if self.count() == 0 {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        if self.gauge.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.gauge.empty.notify(usize::MAX);
        }
    }
}

/// Which of two raced futures finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first one.
    Left(A),
    /// The second one.
    Right(B),
}

pin_project_lite::pin_project! {
    /// The future of [`race`]. Both futures live inline (no copy, no box), so
    /// racing a connection's task against a signal costs no extra memory.
    #[must_use = "futures do nothing unless polled"]
    pub struct Race<A, B> {
        #[pin]
        a: A,
        #[pin]
        b: B,
    }
}

impl<A: Future, B: Future> Future for Race<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.a.poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = this.b.poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    }
}

/// Polls `a` then `b` until one completes; the other is dropped.
pub fn race<A: Future, B: Future>(a: A, b: B) -> Race<A, B> {
    Race { a, b }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::Waker;

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn latch_wakes_waiters_and_stays_set() {
        let latch = Latch::new();
        let mut waiting = pin!(latch.wait());
        assert!(poll_once(waiting.as_mut()).is_pending());
        latch.set();
        assert!(poll_once(waiting.as_mut()).is_ready());
        assert!(poll_once(pin!(latch.wait())).is_ready());
    }

    #[test]
    fn gauge_limit_and_empty() {
        let gauge = Gauge::new();
        let a = gauge.try_enter(2).unwrap();
        let b = gauge.enter();
        assert!(gauge.try_enter(2).is_none());
        assert_eq!(gauge.count(), 2);
        let mut empty = pin!(gauge.wait_empty());
        assert!(poll_once(empty.as_mut()).is_pending());
        drop(a);
        assert!(poll_once(empty.as_mut()).is_pending());
        drop(b);
        assert!(poll_once(empty.as_mut()).is_ready());
    }

    #[test]
    fn race_prefers_the_first_ready() {
        let r = poll_once(pin!(race(async { 1 }, async { 2 })));
        assert_eq!(r, Poll::Ready(Either::Left(1)));
        let r = poll_once(pin!(race(std::future::pending::<()>(), async { 2 })));
        assert_eq!(r, Poll::Ready(Either::Right(2)));
    }
}
