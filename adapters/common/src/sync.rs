//! Runtime-neutral synchronization: a one-way flag that can be awaited, a
//! counter of live tasks with an optional limit, a first-come first-served
//! semaphore, and a race of two futures. They wake tasks through wakers and
//! `event-listener`, so they work on any executor.

use event_listener::{listener, Event};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

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

/// A counting semaphore that serves waiters strictly in arrival order.
///
/// A released permit goes straight to the longest waiter, never to a task
/// that asks later, so under overload every waiter's wait is bounded by
/// the queue ahead of it. (A semaphore that lets a newcomer take a permit
/// that just came free can starve a queued waiter for as long as newcomers
/// keep arriving: behind a wait timeout, that turned overload into 503s.)
#[derive(Debug)]
pub struct FairSemaphore {
    state: Mutex<FairState>,
}

#[derive(Debug)]
struct FairState {
    /// Permits free now; never above zero while someone waits.
    available: usize,
    /// Waiters not yet served, oldest first.
    queue: VecDeque<(u64, Waker)>,
    /// Waiters handed a permit that have not yet taken it (their future is
    /// polled, or dropped, next).
    granted: Vec<u64>,
    next_id: u64,
}

/// A permit of a [`FairSemaphore`]; dropping it hands the permit to the
/// longest waiter, or frees it.
#[derive(Debug)]
#[must_use = "the permit is released when dropped"]
pub struct FairPermit {
    semaphore: Arc<FairSemaphore>,
}

impl FairSemaphore {
    /// A semaphore with `permits` permits.
    pub fn new(permits: usize) -> Self {
        FairSemaphore {
            state: Mutex::new(FairState {
                available: permits,
                queue: VecDeque::new(),
                granted: Vec::new(),
                next_id: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FairState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit now, if one is free and nobody is waiting for one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<FairPermit> {
        let mut state = self.lock();
        if state.available > 0 && state.queue.is_empty() {
            state.available -= 1;
            return Some(FairPermit {
                semaphore: Arc::clone(self),
            });
        }
        None
    }

    /// Waits for a permit, behind everyone already waiting. Dropping the
    /// future gives up its place (and passes on a permit it was handed).
    pub fn acquire(self: &Arc<Self>) -> FairAcquire {
        FairAcquire {
            semaphore: Arc::clone(self),
            waiting: None,
        }
    }

    /// Permits free now.
    pub fn available_permits(&self) -> usize {
        self.lock().available
    }

    /// Tasks waiting for a permit now.
    pub fn waiters(&self) -> usize {
        self.lock().queue.len()
    }

    /// Returns a permit: to the longest waiter if there is one.
    fn release(&self) {
        let waker = {
            let mut state = self.lock();
            match state.queue.pop_front() {
                Some((id, waker)) => {
                    state.granted.push(id);
                    Some(waker)
                }
                None => {
                    state.available += 1;
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        self.semaphore.release();
    }
}

/// The future of [`FairSemaphore::acquire`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct FairAcquire {
    semaphore: Arc<FairSemaphore>,
    /// Our place in the queue, once we have one.
    waiting: Option<u64>,
}

impl Future for FairAcquire {
    type Output = FairPermit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FairPermit> {
        let this = &mut *self;
        let mut state = this.semaphore.lock();
        match this.waiting {
            None => {
                if state.available > 0 && state.queue.is_empty() {
                    state.available -= 1;
                } else {
                    let id = state.next_id;
                    state.next_id += 1;
                    state.queue.push_back((id, cx.waker().clone()));
                    this.waiting = Some(id);
                    return Poll::Pending;
                }
            }
            Some(id) => {
                if let Some(i) = state.granted.iter().position(|g| *g == id) {
                    state.granted.swap_remove(i);
                    this.waiting = None;
                } else {
                    if let Some(entry) = state.queue.iter_mut().find(|(w, _)| *w == id) {
                        entry.1.clone_from(cx.waker());
                    }
                    debug_assert!(
                        state.queue.iter().any(|(w, _)| *w == id),
                        "a waiter is either queued or granted"
                    );
                    return Poll::Pending;
                }
            }
        }
        drop(state);
        Poll::Ready(FairPermit {
            semaphore: Arc::clone(&this.semaphore),
        })
    }
}

impl Drop for FairAcquire {
    fn drop(&mut self) {
        let Some(id) = self.waiting else {
            return;
        };
        let handed_one = {
            let mut state = self.semaphore.lock();
            if let Some(i) = state.granted.iter().position(|g| *g == id) {
                state.granted.swap_remove(i);
                true
            } else {
                if let Some(i) = state.queue.iter().position(|(w, _)| *w == id) {
                    state.queue.remove(i);
                }
                false
            }
        };
        if handed_one {
            // Handed a permit it never took: pass it on.
            self.semaphore.release();
        }
    }
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

    #[test]
    fn fair_semaphore_serves_waiters_in_arrival_order() {
        let semaphore = Arc::new(FairSemaphore::new(1));
        let held = semaphore.try_acquire().expect("a free permit");
        let mut first = pin!(semaphore.acquire());
        let mut second = pin!(semaphore.acquire());
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        assert_eq!(semaphore.waiters(), 2);
        drop(held);
        // The freed permit is the first waiter's: a newcomer cannot take
        // it, and neither can the second waiter.
        assert!(semaphore.try_acquire().is_none());
        assert!(poll_once(pin!(semaphore.acquire())).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        let Poll::Ready(permit) = poll_once(first.as_mut()) else {
            panic!("the first waiter was handed the permit");
        };
        drop(permit);
        assert!(poll_once(second.as_mut()).is_ready());
    }

    #[test]
    fn fair_semaphore_passes_on_a_permit_its_waiter_dropped() {
        let semaphore = Arc::new(FairSemaphore::new(1));
        let held = semaphore.try_acquire().expect("a free permit");
        let mut first = Box::pin(semaphore.acquire());
        let mut second = pin!(semaphore.acquire());
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        drop(held);
        // Handed the permit, then given up (a timeout): the next one gets it.
        drop(first);
        assert!(poll_once(second.as_mut()).is_ready());
        // A waiter that gives up before it is served leaves the queue.
        let held = semaphore.try_acquire().expect("the permit is free again");
        let mut gone = Box::pin(semaphore.acquire());
        assert!(poll_once(gone.as_mut()).is_pending());
        drop(gone);
        assert_eq!(semaphore.waiters(), 0);
        drop(held);
        assert_eq!(semaphore.available_permits(), 1);
    }

    #[test]
    fn fair_semaphore_wakes_the_served_waiter() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let semaphore = Arc::new(FairSemaphore::new(1));
        let held = semaphore.try_acquire().expect("a free permit");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut waiting = pin!(semaphore.acquire());
        assert!(waiting
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        drop(held);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(poll_once(waiting.as_mut()).is_ready());
    }
}
