//! Read buffers shared by all connections, so an idle connection holds none.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Size of one pooled read buffer.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Most buffers kept in the pool when returned; more are freed.
pub const MAX_POOLED_BUFFERS: usize = 1024;

/// A pool of fixed-size read buffers. Connections take one only for the
/// moment a read happens (after the socket is readable) and give it back
/// right after the bytes are handed to the core.
#[derive(Clone, Default)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<Box<[u8]>>>>,
    in_use: Arc<AtomicUsize>,
}

impl BufferPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer of [`READ_BUFFER_BYTES`], from the pool when one is free.
    pub fn take(&self) -> PooledBuffer {
        let buf = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| vec![0u8; READ_BUFFER_BYTES].into_boxed_slice());
        self.in_use.fetch_add(1, Ordering::Relaxed);
        PooledBuffer {
            buf: Some(buf),
            pool: self.clone(),
        }
    }

    /// Buffers currently free in the pool.
    pub fn free_buffers(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Buffers on loan now: taken and not yet given back.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

/// A buffer on loan from a [`BufferPool`]; it goes back when dropped.
pub struct PooledBuffer {
    buf: Option<Box<[u8]>>,
    pool: BufferPool,
}

impl Deref for PooledBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
            let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
            if free.len() < MAX_POOLED_BUFFERS {
                free.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_to_the_pool_and_are_reused() {
        let pool = BufferPool::new();
        let first_ptr = {
            let b = pool.take();
            assert_eq!(b.len(), READ_BUFFER_BYTES);
            b.as_ptr()
        };
        assert_eq!(pool.free_buffers(), 1);
        assert_eq!(pool.in_use(), 0);
        let b = pool.take();
        assert_eq!(pool.in_use(), 1);
        assert_eq!(b.as_ptr(), first_ptr);
        assert_eq!(pool.free_buffers(), 0);
    }

    #[test]
    fn pool_keeps_at_most_the_limit() {
        let pool = BufferPool::new();
        let held: Vec<_> = (0..MAX_POOLED_BUFFERS + 5).map(|_| pool.take()).collect();
        drop(held);
        assert_eq!(pool.free_buffers(), MAX_POOLED_BUFFERS);
    }
}
