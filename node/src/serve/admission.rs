//! Admission control per model: a semaphore of `concurrency` slots plus a bounded queue of waiters.
//! A request that finds the queue full is rejected at once (429) instead of waiting without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

pub struct Admission {
    slots: Semaphore,
    /// Slots in all, held or free.
    limit: AtomicUsize,
    waiting: AtomicUsize,
    queue: usize,
}

/// Decrements the waiter count however the wait ends (admitted, or the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let n = concurrency.max(1);
        Self { slots: Semaphore::new(n), limit: AtomicUsize::new(n), waiting: AtomicUsize::new(0), queue }
    }

    /// Lowers the slots to `n` (never raises them): set when the model is loaded, before any
    /// request is admitted, to what its engine can run at once.
    pub fn cap(&self, n: usize) {
        let n = n.max(1);
        let was = self.limit.fetch_min(n, Ordering::SeqCst);
        if n < was {
            // Only free slots can go: hence "before any request is admitted".
            self.slots.forget_permits(was - n);
        }
    }

    /// A slot, and how long it took; `None` when the queue is full.
    pub async fn enter(&self) -> Option<(SemaphorePermit<'_>, Duration)> {
        let start = Instant::now();
        if let Ok(p) = self.slots.try_acquire() {
            return Some((p, Duration::ZERO));
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let _w = Waiting(&self.waiting);
        let permit = self.slots.acquire().await.ok()?;
        Some((permit, start.elapsed()))
    }

    /// Slots in all, held or free.
    pub fn slots(&self) -> usize {
        self.limit.load(Ordering::SeqCst)
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cap_lowers_the_slots() {
        let a = Admission::new(4, 0);
        a.cap(8);
        // Never raised: still four slots, no queue, so a fifth request is turned away.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(a.enter().await.unwrap());
        }
        assert!(a.enter().await.is_none());
        drop(held);
        a.cap(1);
        let (held, _) = a.enter().await.unwrap();
        // One slot, no queue: a second request is turned away.
        assert!(a.enter().await.is_none());
        drop(held);
        assert!(a.enter().await.is_some());
    }

    #[tokio::test]
    async fn rejects_beyond_the_queue() {
        let a = Admission::new(1, 1);
        let (held, _) = a.enter().await.unwrap();
        // One waiter fits in the queue…
        let waiter = a.enter();
        tokio::pin!(waiter);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut waiter).await.is_err());
        assert_eq!(a.waiting(), 1);
        // …a second is rejected at once.
        assert!(a.enter().await.is_none());
        drop(held);
        assert!(waiter.await.is_some());
        assert_eq!(a.waiting(), 0);
    }
}
