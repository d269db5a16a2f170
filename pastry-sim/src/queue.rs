//! The simulator's event queue: a calendar queue of one-millisecond buckets over the next few
//! seconds, with a binary heap for events further out.
//!
//! Almost every event is a datagram due within a few hundred milliseconds, so a push is an
//! append to a bucket and a pop sorts each bucket once; only timers far in the future pay
//! for the heap. Events come out strictly in key order (time, then sequence), exactly as a
//! single heap would give them, so runs stay deterministic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Microseconds per bucket, as a shift: 1,024 µs.
const SHIFT: u32 = 10;
/// Buckets in the ring: about 4.2 s of simulated time.
const BUCKETS: u64 = 4096;

/// A queue of `(key, item)` popped in increasing key order. The key's upper 64 bits are the
/// event time in microseconds; keys are unique.
pub(crate) struct EventQueue<T> {
    ring: Vec<Vec<(u128, T)>>,
    /// Absolute index of the current bucket (time >> SHIFT).
    cur: u64,
    /// Whether the current bucket is sorted in decreasing key order (pop from its end).
    sorted: bool,
    /// Events in the ring.
    near: usize,
    far: BinaryHeap<Reverse<(u128, T)>>,
}

fn bucket_of(key: u128) -> u64 {
    ((key >> 64) as u64) >> SHIFT
}

impl<T: Copy + Ord> EventQueue<T> {
    pub(crate) fn new() -> Self {
        EventQueue {
            ring: (0..BUCKETS).map(|_| Vec::new()).collect(),
            cur: 0,
            sorted: false,
            near: 0,
            far: BinaryHeap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.near + self.far.len()
    }

    pub(crate) fn push(&mut self, key: u128, item: T) {
        // An event due before the current bucket (a caller acting at an earlier `now` than
        // the next queued event) belongs at the head of the current bucket: every earlier
        // bucket is empty.
        let b = bucket_of(key).max(self.cur);
        if b >= self.cur + BUCKETS {
            self.far.push(Reverse((key, item)));
            return;
        }
        let bucket = &mut self.ring[(b % BUCKETS) as usize];
        if b == self.cur && self.sorted {
            let at = bucket.partition_point(|(k, _)| *k > key);
            bucket.insert(at, (key, item));
        } else {
            bucket.push((key, item));
        }
        self.near += 1;
    }

    /// The smallest key, making the current bucket the one that holds it.
    pub(crate) fn peek(&mut self) -> Option<u128> {
        loop {
            let bucket = &mut self.ring[(self.cur % BUCKETS) as usize];
            if !bucket.is_empty() {
                if !self.sorted {
                    bucket.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
                    self.sorted = true;
                }
                return bucket.last().map(|(k, _)| *k);
            }
            // Advance: to the next bucket, or straight to the far heap's first event when
            // the ring is empty.
            if self.near == 0 {
                let Reverse((k, _)) = self.far.peek()?;
                self.cur = bucket_of(*k);
            } else {
                self.cur += 1;
            }
            self.sorted = false;
            while let Some(Reverse((k, _))) = self.far.peek()
                && bucket_of(*k) < self.cur + BUCKETS
            {
                let Reverse((k, item)) = self.far.pop().expect("peeked");
                let b = bucket_of(k).max(self.cur);
                self.ring[(b % BUCKETS) as usize].push((k, item));
                self.near += 1;
            }
        }
    }

    /// The item of an event among the next few: the one `n` places after the next one
    /// (`ahead(0)` is the next one) while the current bucket holds it, else one of the
    /// following bucket's (in no particular order).
    /// Only a hint of what comes soon, for prefetching: a push may still come before it.
    pub(crate) fn ahead(&self, n: usize) -> Option<T> {
        let here = &self.ring[(self.cur % BUCKETS) as usize];
        if self.sorted && n < here.len() {
            return Some(here[here.len() - 1 - n].1);
        }
        let rest = n.checked_sub(here.len())?;
        self.ring[((self.cur + 1) % BUCKETS) as usize]
            .get(rest)
            .map(|e| e.1)
    }

    pub(crate) fn pop(&mut self) -> Option<(u128, T)> {
        self.peek()?;
        self.near -= 1;
        self.ring[(self.cur % BUCKETS) as usize].pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Interleaved pushes and pops give the same sequence as a binary heap, for times
        /// near and far, including pushes earlier than the queue's head.
        #[test]
        fn same_order_as_a_heap(ops in proptest::collection::vec((0u8..4, 0u64..20_000_000), 1..400)) {
            let mut q = EventQueue::<u32>::new();
            let mut h: BinaryHeap<Reverse<(u128, u32)>> = BinaryHeap::new();
            let mut seq = 0u64;
            let mut now = 0u64;
            for (op, dt) in ops {
                if op == 0 {
                    prop_assert_eq!(q.pop(), h.pop().map(|Reverse(x)| x));
                    if let Some(Reverse((k, _))) = h.peek() {
                        now = now.max((*k >> 64) as u64);
                    }
                } else {
                    seq += 1;
                    // Mostly soon, sometimes seconds or minutes ahead.
                    let at = now + if op == 1 { dt % 300_000 } else { dt };
                    let key = u128::from(at) << 64 | u128::from(seq);
                    q.push(key, seq as u32);
                    h.push(Reverse((key, seq as u32)));
                }
                prop_assert_eq!(q.len(), h.len());
            }
            while let Some(Reverse(x)) = h.pop() {
                prop_assert_eq!(q.pop(), Some(x));
            }
            prop_assert_eq!(q.pop(), None);
        }

        /// `ahead` names only queued events, and within a sorted current bucket exactly the
        /// one that many pops away (that bucket holds the earliest events), whatever the mix of
        /// pushes (near, far, earlier than the head) and pops before it.
        #[test]
        fn ahead_names_queued_events_in_order(ops in proptest::collection::vec((0u8..4, 0u64..20_000_000), 1..400)) {
            let mut q = EventQueue::<u32>::new();
            let mut left = std::collections::BTreeMap::new();
            let mut seq = 0u64;
            let mut now = 0u64;
            for (op, dt) in ops {
                if op == 0 {
                    if let Some((k, x)) = q.pop() {
                        prop_assert_eq!(left.remove(&k), Some(x));
                        now = now.max((k >> 64) as u64);
                    }
                } else {
                    seq += 1;
                    // Mostly soon, sometimes earlier than the head, sometimes far ahead.
                    let at = match op {
                        1 => now + dt % 3_000,
                        2 => now.saturating_sub(dt % 2_000),
                        _ => now + dt,
                    };
                    let key = u128::from(at) << 64 | u128::from(seq);
                    q.push(key, seq as u32);
                    left.insert(key, seq as u32);
                }
                let order: Vec<u32> = left.values().copied().collect();
                let here = q.ring[(q.cur % BUCKETS) as usize].len();
                for n in 0..12 {
                    if let Some(x) = q.ahead(n) {
                        prop_assert!(order.contains(&x));
                        if q.sorted && n < here {
                            prop_assert_eq!(x, order[n]);
                        }
                    }
                }
            }
        }
    }
}
