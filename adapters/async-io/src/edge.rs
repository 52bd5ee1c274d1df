//! Edge-triggered readiness for connected sockets (Linux).
//!
//! async-io registers every source `EPOLLONESHOT`, so each wait for a
//! socket re-arms it with an `epoll_ctl`: on a keep-alive connection that is
//! one system call per request, about 9 % of `ouli replay`'s CPU at 4,096
//! connections (perf, smol, wrk -c4096). Here every connected socket is
//! registered once, edge-triggered, in an epoll instance of our own; that
//! epoll's descriptor is itself an async-io source, so async-io still does
//! all the blocking and the timers, and a single driver task turns one
//! wake-up of it into the wake-ups of every socket with news. A request then
//! costs one `recv` and one `send`, and `epoll_ctl` is paid once per batch of
//! events, not once per socket.
//!
//! Readiness is a count of edges per direction. A reader remembers the count
//! it saw before a read that drained the socket (`WouldBlock`, or a short
//! read: the kernel's receive queue was empty when it returned) and waits
//! only while the count is unchanged, so an edge that lands during the read
//! is never lost. A hang-up or an error is sticky: once seen, the socket is
//! always ready, and the read or write says what happened.

use crate::Spawner;
use async_io::Async;
use atomic_waker::AtomicWaker;
use rustix::event::epoll;
use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, PoisonError};
use std::task::{Context, Poll};

/// How many events the driver takes from the epoll per `epoll_wait`; after
/// a full batch it yields to the executor before the next, so the sockets
/// it just woke run first.
pub const EVENTS_PER_BATCH: usize = 256;

/// Not yet drained: a fresh socket is tried before anyone waits for it (a
/// client's first request is often there by the time it is accepted).
const NEVER_DRAINED: u64 = u64::MAX;

/// One direction (read or write) of a registered socket.
#[derive(Default)]
struct Direction {
    /// Edges the driver has seen for this direction.
    edges: AtomicU64,
    /// The task waiting for the next edge, if any.
    waker: AtomicWaker,
    /// This direction is finished for good (read: the peer sent its FIN,
    /// or the socket hung up or failed; write: hung up or failed). Every
    /// wait ends at once, and the read or write says what happened. A
    /// peer's FIN does not finish the write side: the peer may still be
    /// reading, and a writer waiting for room must keep waiting.
    closed: AtomicBool,
}

impl Direction {
    fn edge(&self, closed: bool) {
        if closed {
            self.closed.store(true, Ordering::Release);
        }
        self.edges.fetch_add(1, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Ready once the edge count differs from `drained_at`, or the
    /// direction is closed.
    fn poll_changed(&self, drained_at: u64, cx: &mut Context<'_>) -> Poll<()> {
        let changed = || {
            self.edges.load(Ordering::Acquire) != drained_at || self.closed.load(Ordering::Acquire)
        };
        if changed() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // An edge between the check and the registration woke nobody.
        if changed() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// What the driver updates for one socket.
#[derive(Default)]
struct Readiness {
    read: Direction,
    write: Direction,
}

/// A slot of the registry: which socket an event's key names. The
/// generation makes a key stale once its socket is gone, so an event read
/// just before a deregistration cannot reach the slot's next owner.
struct Slot {
    generation: u32,
    readiness: Option<Arc<Readiness>>,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

/// The process-wide edge-triggered epoll and the sockets registered in it.
struct Registry {
    epoll: Async<OwnedFd>,
    slots: Mutex<Slots>,
}

fn key(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

impl Registry {
    fn new() -> io::Result<Self> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Self {
            // An epoll descriptor is readable when it has events; epoll_wait
            // with a zero timeout never blocks, so it needs no O_NONBLOCK.
            epoll: Async::new_nonblocking(fd)?,
            slots: Mutex::new(Slots::default()),
        })
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, stream: &TcpStream) -> io::Result<(u64, Arc<Readiness>)> {
        let readiness = Arc::new(Readiness::default());
        let key = {
            let mut slots = self.slots();
            let index = match slots.free.pop() {
                Some(index) => index,
                None => {
                    let index = u32::try_from(slots.slots.len())
                        .map_err(|_| io::Error::other("more than 2^32 sockets registered"))?;
                    slots.slots.push(Slot {
                        generation: 0,
                        readiness: None,
                    });
                    index
                }
            };
            let slot = &mut slots.slots[index as usize];
            slot.readiness = Some(Arc::clone(&readiness));
            key(index, slot.generation)
        };
        let interest = epoll::EventFlags::IN
            | epoll::EventFlags::OUT
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::ET;
        if let Err(e) = epoll::add(
            self.epoll.get_ref(),
            stream,
            epoll::EventData::new_u64(key),
            interest,
        ) {
            self.release(key);
            return Err(e.into());
        }
        Ok((key, readiness))
    }

    fn deregister(&self, key: u64, stream: &TcpStream) {
        // The descriptor closes right after; if the delete failed, closing
        // it removes it from the epoll anyway (it is never duplicated).
        let _ = epoll::delete(self.epoll.get_ref(), stream);
        self.release(key);
    }

    fn release(&self, key: u64) {
        let index = key as u32;
        let mut slots = self.slots();
        let slot = &mut slots.slots[index as usize];
        debug_assert_eq!(u64::from(slot.generation), key >> 32, "released twice");
        slot.readiness = None;
        slot.generation = slot.generation.wrapping_add(1);
        slots.free.push(index);
    }

    /// Hands each event to its socket's directions.
    fn dispatch(&self, events: &[epoll::Event]) {
        use epoll::EventFlags as F;
        let slots = self.slots();
        for event in events {
            let key = event.data.u64();
            let Some(slot) = slots.slots.get(key as u32 as usize) else {
                continue;
            };
            if u64::from(slot.generation) != key >> 32 {
                continue;
            }
            let Some(readiness) = &slot.readiness else {
                continue;
            };
            let flags = event.flags;
            let failed = flags.intersects(F::HUP | F::ERR);
            if failed || flags.intersects(F::IN | F::PRI | F::RDHUP) {
                readiness.read.edge(failed || flags.contains(F::RDHUP));
            }
            if failed || flags.contains(F::OUT) {
                readiness.write.edge(failed);
            }
        }
    }

    /// Takes one batch of events without blocking and dispatches it;
    /// returns how many there were.
    fn take_batch(&self) -> usize {
        let mut buf = [MaybeUninit::<epoll::Event>::uninit(); EVENTS_PER_BATCH];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match epoll::wait(self.epoll.get_ref(), &mut buf[..], Some(&zero)) {
                Ok((events, _)) => {
                    self.dispatch(events);
                    return events.len();
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::error!("epoll_wait on the socket readiness epoll failed: {e}");
                    return 0;
                }
            }
        }
    }

    /// The driver: waits (through async-io) until the epoll has events,
    /// takes them in batches and wakes their sockets. Runs for the life of
    /// the process.
    async fn drive(&self) {
        loop {
            if let Err(e) = self.epoll.readable().await {
                // Not expected from an epoll descriptor; keep serving
                // rather than strand every socket.
                tracing::error!("the socket readiness epoll failed: {e}");
                async_io::Timer::after(std::time::Duration::from_millis(10)).await;
            }
            while self.take_batch() == EVENTS_PER_BATCH {
                yield_now().await;
            }
        }
    }
}

/// Yields once to the executor.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

static REGISTRY: OnceLock<Result<Registry, String>> = OnceLock::new();
static DRIVER: Once = Once::new();

/// The registry, its driver spawned with `S` on first use. There is one
/// registry and one driver per process: the driver runs for the life of the
/// process on the executor of the first adapter that registered a socket
/// (smol's and async-std's executors both run until the process exits, so
/// a process serving with both is served by one driver).
fn registry<S: Spawner>() -> io::Result<&'static Registry> {
    let registry = REGISTRY
        .get_or_init(|| Registry::new().map_err(|e| format!("cannot create an epoll: {e}")))
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))?;
    DRIVER.call_once(|| S::spawn(registry.drive()));
    Ok(registry)
}

/// A connected, non-blocking TCP socket with edge-triggered readiness.
pub struct EdgeStream {
    stream: TcpStream,
    registry: &'static Registry,
    key: u64,
    readiness: Arc<Readiness>,
    /// The read edge count seen before the last read that drained the
    /// socket ([`NEVER_DRAINED`] until one has).
    read_drained_at: AtomicU64,
}

impl EdgeStream {
    /// Registers `stream` (made non-blocking here). The first socket of the
    /// process spawns the driver task with `S`.
    pub fn new<S: Spawner>(stream: TcpStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        let registry = registry::<S>()?;
        let (key, readiness) = registry.register(&stream)?;
        Ok(Self {
            stream,
            registry,
            key,
            readiness,
            read_drained_at: AtomicU64::new(NEVER_DRAINED),
        })
    }

    /// Accepts the next connection of `listener`.
    pub async fn accept<S: Spawner>(listener: &Async<TcpListener>) -> io::Result<Self> {
        let (stream, _peer) = listener.read_with(|l| l.accept()).await?;
        Self::new::<S>(stream)
    }

    /// Connects to `addr`.
    pub async fn connect<S: Spawner>(addr: SocketAddr) -> io::Result<Self> {
        // async-io's connect handles the non-blocking handshake; the socket
        // then moves here (a connect is rare next to the reads it saves).
        let stream = Async::<TcpStream>::connect(addr).await?.into_inner()?;
        Self::new::<S>(stream)
    }

    /// The std socket, for options.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// Completes when the socket may have bytes, an end of stream or an
    /// error to read.
    pub fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        poll_fn(move |cx| {
            let drained_at = self.read_drained_at.load(Ordering::Acquire);
            self.readiness.read.poll_changed(drained_at, cx).map(Ok)
        })
    }

    /// Reads without waiting; notes when the read drained the socket.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let edges = self.readiness.read.edges.load(Ordering::Acquire);
        let read = (&self.stream).read(buf);
        let drained = match &read {
            Ok(n) => 0 < *n && *n < buf.len(),
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        if drained {
            self.read_drained_at.store(edges, Ordering::Release);
        }
        read
    }

    /// Writes all of `buf`, waiting for room as needed.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            let edges = self.readiness.write.edges.load(Ordering::Acquire);
            match (&self.stream).write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let write = &self.readiness.write;
                    poll_fn(|cx| write.poll_changed(edges, cx)).await;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for EdgeStream {
    fn drop(&mut self) {
        self.registry.deregister(self.key, &self.stream);
    }
}

impl std::fmt::Debug for EdgeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStream")
            .field("stream", &self.stream)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(flags: epoll::EventFlags, key: u64) -> epoll::Event {
        epoll::Event {
            flags,
            data: epoll::EventData::new_u64(key),
        }
    }

    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// An event read just before its socket went away carries the old
    /// generation: it must not reach the socket that reuses the slot.
    #[test]
    fn a_stale_key_does_not_reach_the_slots_next_owner() {
        let registry = Registry::new().unwrap();
        let (_c1, first) = connected_pair();
        let (_c2, second) = connected_pair();
        let (old_key, _) = registry.register(&first).unwrap();
        registry.deregister(old_key, &first);
        let (new_key, readiness) = registry.register(&second).unwrap();
        assert_eq!(old_key as u32, new_key as u32, "the slot is reused");
        assert_ne!(old_key, new_key);

        registry.dispatch(&[event(
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
            old_key,
        )]);
        assert_eq!(readiness.read.edges.load(Ordering::Acquire), 0);
        assert!(!readiness.read.closed.load(Ordering::Acquire));

        registry.dispatch(&[event(epoll::EventFlags::IN, new_key)]);
        assert_eq!(readiness.read.edges.load(Ordering::Acquire), 1);
        assert_eq!(readiness.write.edges.load(Ordering::Acquire), 0);
        registry.dispatch(&[event(epoll::EventFlags::OUT, new_key)]);
        assert_eq!(readiness.write.edges.load(Ordering::Acquire), 1);
        assert!(!readiness.read.closed.load(Ordering::Acquire));
        assert!(!readiness.write.closed.load(Ordering::Acquire));
        registry.dispatch(&[event(epoll::EventFlags::ERR, new_key)]);
        assert!(readiness.read.closed.load(Ordering::Acquire));
        assert!(readiness.write.closed.load(Ordering::Acquire));
        assert_eq!(readiness.read.edges.load(Ordering::Acquire), 2);
        assert_eq!(readiness.write.edges.load(Ordering::Acquire), 2);
        registry.deregister(new_key, &second);
        assert_eq!(registry.slots().free.len(), 1);
    }

    /// A peer's FIN ends read waits for good, but not write waits: the
    /// peer may still drain what we send, and a writer that took it for a
    /// closed socket would spin on `WouldBlock` until it did.
    #[test]
    fn a_fin_finishes_reading_but_not_writing() {
        let registry = Registry::new().unwrap();
        let (_client, server) = connected_pair();
        let (key, readiness) = registry.register(&server).unwrap();
        registry.dispatch(&[event(
            epoll::EventFlags::IN | epoll::EventFlags::OUT | epoll::EventFlags::RDHUP,
            key,
        )]);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let read_edges = readiness.read.edges.load(Ordering::Acquire);
        let write_edges = readiness.write.edges.load(Ordering::Acquire);
        assert!(readiness.read.poll_changed(read_edges, &mut cx).is_ready());
        assert!(readiness
            .write
            .poll_changed(write_edges, &mut cx)
            .is_pending());
        registry.deregister(key, &server);
    }

    /// More sockets with news than one batch holds: the first take is a
    /// full batch (the driver then yields and takes again), the second
    /// takes the rest, and every socket got its edge.
    #[test]
    fn events_past_one_batch_are_taken_in_the_next() {
        const SOCKETS: usize = EVENTS_PER_BATCH + 44;
        let registry = Registry::new().unwrap();
        let pairs: Vec<(TcpStream, TcpStream)> = (0..SOCKETS).map(|_| connected_pair()).collect();
        let registered: Vec<(u64, Arc<Readiness>)> = pairs
            .iter()
            .map(|(_, server)| registry.register(server).unwrap())
            .collect();
        // Drop the events the registrations queued (a fresh socket is
        // writable), then give every socket something to read.
        while registry.take_batch() > 0 {}
        for (client, _) in &pairs {
            (&*client).write_all(b"x").unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(registry.take_batch(), EVENTS_PER_BATCH);
        assert_eq!(registry.take_batch(), SOCKETS - EVENTS_PER_BATCH);
        assert_eq!(registry.take_batch(), 0);
        for (_, readiness) in &registered {
            assert_eq!(readiness.read.edges.load(Ordering::Acquire), 1);
        }
        for ((key, _), (_, server)) in registered.iter().zip(&pairs) {
            registry.deregister(*key, server);
        }
    }

    /// Keys that name no slot at all (out of range) are ignored.
    /// What one idle connection adds to the registry (BENCHMARKS.md quotes
    /// it): its `Readiness` behind an `Arc`, and a slot.
    #[test]
    fn a_registration_is_small() {
        let readiness = std::mem::size_of::<Readiness>();
        let slot = std::mem::size_of::<Slot>();
        println!("Readiness {readiness} bytes, Slot {slot} bytes");
        assert!(readiness <= 96 && slot <= 16, "{readiness} {slot}");
    }

    #[test]
    fn a_key_out_of_range_is_ignored() {
        let registry = Registry::new().unwrap();
        registry.dispatch(&[event(epoll::EventFlags::IN, key(7, 0))]);
        assert!(registry.slots().slots.is_empty());
    }
}
