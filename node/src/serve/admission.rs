//! Admission control per model: a semaphore of `concurrency` slots plus a bounded queue of waiters.
//! A request that finds the queue full is rejected (429) instead of waiting without bound. The
//! queue's length is set (`--queue-size`) or given with each request (the node's, from its wait
//! bound: `Node::queue_limit`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

pub struct Admission {
    slots: Semaphore,
    /// Slots in all, held or free.
    limit: AtomicUsize,
    waiting: AtomicUsize,
    /// Waiters allowed, when set; else each `enter` says.
    queue: Option<usize>,
}

/// Decrements the waiter count however the wait ends (admitted, or the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(concurrency: usize, queue: Option<usize>) -> Self {
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

    /// A slot, and how long it took; `None` when the queue is full: its set length, else `auto`.
    pub async fn enter(&self, auto: usize) -> Option<(SemaphorePermit<'_>, Duration)> {
        let start = Instant::now();
        if let Ok(p) = self.slots.try_acquire() {
            return Some((p, Duration::ZERO));
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue(auto) {
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

    /// Waiters allowed: the set length, else `auto`.
    pub fn queue(&self, auto: usize) -> usize {
        self.queue.unwrap_or(auto)
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
        let a = Admission::new(4, Some(0));
        a.cap(8);
        // Never raised: still four slots, no queue, so a fifth request is turned away.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(a.enter(99).await.unwrap());
        }
        assert!(a.enter(99).await.is_none());
        drop(held);
        a.cap(1);
        let (held, _) = a.enter(99).await.unwrap();
        // One slot, no queue: a second request is turned away.
        assert!(a.enter(99).await.is_none());
        drop(held);
        assert!(a.enter(99).await.is_some());
    }

    #[tokio::test]
    async fn rejects_beyond_the_queue() {
        let a = Admission::new(1, Some(1));
        let (held, _) = a.enter(99).await.unwrap();
        // One waiter fits in the queue…
        let waiter = a.enter(99);
        tokio::pin!(waiter);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut waiter).await.is_err());
        assert_eq!(a.waiting(), 1);
        // …a second is rejected at once.
        assert!(a.enter(99).await.is_none());
        drop(held);
        assert!(waiter.await.is_some());
        assert_eq!(a.waiting(), 0);
    }

    #[tokio::test]
    async fn without_a_set_length_each_request_says() {
        let a = Admission::new(1, None);
        let (held, _) = a.enter(0).await.unwrap();
        // No waiter allowed by this request…
        assert!(a.enter(0).await.is_none());
        // …two by these.
        let (w1, w2) = (a.enter(2), a.enter(2));
        tokio::pin!(w1, w2);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut w1).await.is_err());
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut w2).await.is_err());
        assert!(a.enter(2).await.is_none());
        drop(held);
        assert!(w1.await.is_some());
        assert_eq!(a.queue(5), 5);
    }
}
