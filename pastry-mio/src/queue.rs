//! Sending datagrams: the bounded queue of datagrams the socket refused with `WouldBlock`, and
//! the counters of what happened to every datagram.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use pastry_core::Transmit;

/// Default bound on the datagrams waiting in a node's send queue.
pub const DEFAULT_QUEUE_DATAGRAMS: usize = 1024;
/// Default bound on the bytes waiting in a node's send queue.
pub const DEFAULT_QUEUE_BYTES: usize = 1 << 20;

/// Attempts at one datagram when the socket reports an error that is not about it (an
/// interrupted call, or an ICMP report of an earlier datagram surfacing on this send).
const SEND_ATTEMPTS: u32 = 3;

/// What the adapter did with datagrams, beside what the core counts in
/// [`pastry_core::Counters`].
///
/// ```
/// use pastry_mio::IoCounters;
/// let c = IoCounters::default();
/// assert_eq!(c.sent + c.dropped_sends + c.send_errors, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoCounters {
    /// Datagrams the socket accepted.
    pub sent: u64,
    /// Datagrams read from the socket and handed to the core.
    pub received: u64,
    /// Datagrams the socket refused with `WouldBlock` and that went into the send queue.
    pub queued: u64,
    /// Datagrams dropped because the send queue was full (the newest is dropped: the queue
    /// keeps what it holds, in order).
    pub dropped_sends: u64,
    /// Datagrams dropped because sending failed for another reason (message too long,
    /// network or host unreachable, ...).
    pub send_errors: u64,
    /// Errors the socket reported that cost none of our datagrams: mostly ICMP reports of
    /// earlier datagrams (connection refused or reset) surfacing on a later read or send. The
    /// node carries on after each; a send it interrupted is tried again.
    pub socket_errors: u64,
}

/// How one attempt to send a datagram ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Sent, or dropped for good (counted).
    Done,
    /// The socket's buffer is full: try again when it is writable.
    WouldBlock,
}

/// Whether an error from a send is the socket reporting something that happened to an earlier
/// datagram (an ICMP port unreachable), rather than a failure of this one. The datagram may
/// be sent again at once.
fn is_stale_report(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Interrupted | ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
    )
}

/// Tries to send `t` with `send`, counting the result.
pub(crate) fn send_one(
    send: &mut impl FnMut(&[u8], SocketAddr) -> io::Result<usize>,
    t: &Transmit<SocketAddr>,
    counters: &mut IoCounters,
) -> Outcome {
    for _ in 0..SEND_ATTEMPTS {
        match send(&t.contents, t.destination) {
            Ok(_) => {
                counters.sent += 1;
                return Outcome::Done;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Outcome::WouldBlock,
            Err(e) if is_stale_report(&e) => {
                if e.kind() != ErrorKind::Interrupted {
                    counters.socket_errors += 1;
                }
            }
            Err(_) => break,
        }
    }
    counters.send_errors += 1;
    Outcome::Done
}

/// Datagrams waiting for the socket to become writable, in order, bounded in count and bytes.
#[derive(Debug)]
pub(crate) struct SendQueue {
    items: VecDeque<Transmit<SocketAddr>>,
    bytes: usize,
    max_datagrams: usize,
    max_bytes: usize,
}

impl SendQueue {
    pub(crate) fn new(max_datagrams: usize, max_bytes: usize) -> Self {
        SendQueue {
            items: VecDeque::new(),
            bytes: 0,
            max_datagrams,
            max_bytes,
        }
    }

    /// Sets new bounds; datagrams over them are dropped (counted), newest first, as a full
    /// queue would have dropped them.
    pub(crate) fn set_limits(
        &mut self,
        max_datagrams: usize,
        max_bytes: usize,
        counters: &mut IoCounters,
    ) {
        self.max_datagrams = max_datagrams;
        self.max_bytes = max_bytes;
        while self.items.len() > self.max_datagrams || self.bytes > self.max_bytes {
            if let Some(t) = self.items.pop_back() {
                self.bytes -= t.contents.len();
                counters.dropped_sends += 1;
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends `t`, or drops it (counted) if the queue is full.
    pub(crate) fn push(&mut self, t: Transmit<SocketAddr>, counters: &mut IoCounters) {
        let len = t.contents.len();
        if self.items.len() >= self.max_datagrams || self.bytes + len > self.max_bytes {
            counters.dropped_sends += 1;
            return;
        }
        counters.queued += 1;
        self.bytes += len;
        self.items.push_back(t);
    }

    /// Sends from the front until the queue is empty or the socket would block.
    pub(crate) fn flush(
        &mut self,
        send: &mut impl FnMut(&[u8], SocketAddr) -> io::Result<usize>,
        counters: &mut IoCounters,
    ) {
        while let Some(t) = self.items.front() {
            if send_one(send, t, counters) == Outcome::WouldBlock {
                return;
            }
            if let Some(t) = self.items.pop_front() {
                self.bytes -= t.contents.len();
            }
        }
        if self.items.capacity() > 64 {
            self.items.shrink_to_fit();
        }
    }

    /// Sends `t` unless earlier datagrams still wait (order is kept); queues it if the socket
    /// would block.
    pub(crate) fn send_or_queue(
        &mut self,
        send: &mut impl FnMut(&[u8], SocketAddr) -> io::Result<usize>,
        t: Transmit<SocketAddr>,
        counters: &mut IoCounters,
    ) {
        if self.is_empty() && send_one(send, &t, counters) == Outcome::Done {
            return;
        }
        self.push(t, counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn datagram(len: usize, tag: u8) -> Transmit<SocketAddr> {
        Transmit {
            destination: addr(),
            contents: vec![tag; len],
        }
    }

    fn would_block(_: &[u8], _: SocketAddr) -> io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }

    #[test]
    fn a_socket_that_always_blocks_cannot_grow_the_queue_past_its_bounds() {
        let mut q = SendQueue::new(16, 1 << 20);
        let mut c = IoCounters::default();
        for i in 0..10_000u32 {
            q.send_or_queue(&mut would_block, datagram(100, i as u8), &mut c);
            assert!(q.len() <= 16);
        }
        assert_eq!(q.len(), 16);
        assert_eq!(q.bytes(), 1600);
        assert_eq!(c.queued, 16);
        assert_eq!(c.dropped_sends, 10_000 - 16);
        assert_eq!(c.sent, 0);

        // The byte budget binds too.
        let mut q = SendQueue::new(1024, 1000);
        let mut c = IoCounters::default();
        for _ in 0..100 {
            q.send_or_queue(&mut would_block, datagram(300, 0), &mut c);
        }
        assert_eq!((q.len(), q.bytes()), (3, 900));
        assert_eq!(c.dropped_sends, 97);
    }

    #[test]
    fn a_full_queue_keeps_the_oldest_in_order_and_drains_when_writable() {
        let mut q = SendQueue::new(3, 1 << 20);
        let mut c = IoCounters::default();
        for tag in 0..5 {
            q.send_or_queue(&mut would_block, datagram(10, tag), &mut c);
        }
        // Writable again: two datagrams fit, then the socket blocks once more.
        let mut sent = Vec::new();
        let mut room = 2;
        let mut socket = |b: &[u8], _: SocketAddr| {
            if room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            room -= 1;
            sent.push(b[0]);
            Ok(b.len())
        };
        q.flush(&mut socket, &mut c);
        assert_eq!(q.len(), 1);
        // A new datagram waits behind the queued one instead of overtaking it.
        q.send_or_queue(&mut socket, datagram(10, 9), &mut c);
        assert_eq!(q.len(), 2);
        let mut socket = |b: &[u8], _: SocketAddr| {
            sent.push(b[0]);
            Ok(b.len())
        };
        q.flush(&mut socket, &mut c);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        assert_eq!(sent, vec![0, 1, 2, 9]);
        assert_eq!(c.sent, 4);
        assert_eq!(c.dropped_sends, 2);
    }

    #[test]
    fn send_errors_drop_the_datagram_and_stale_reports_are_retried() {
        let mut c = IoCounters::default();
        let mut q = SendQueue::new(8, 1 << 20);
        let mut too_long = |_: &[u8], _: SocketAddr| -> io::Result<usize> {
            Err(io::Error::other("message too long"))
        };
        q.send_or_queue(&mut too_long, datagram(10, 0), &mut c);
        assert!(q.is_empty());
        assert_eq!(c.send_errors, 1);

        // An ICMP report of an earlier datagram surfaces on this send: it goes out on the retry.
        let mut reported = false;
        let mut socket = |b: &[u8], _: SocketAddr| {
            if !reported {
                reported = true;
                return Err(ErrorKind::ConnectionRefused.into());
            }
            Ok(b.len())
        };
        q.send_or_queue(&mut socket, datagram(10, 0), &mut c);
        assert_eq!((c.sent, c.send_errors, c.socket_errors), (1, 1, 1));

        // A socket that reports refusals forever cannot hold the caller in a loop.
        let mut refused = |_: &[u8], _: SocketAddr| -> io::Result<usize> {
            Err(ErrorKind::ConnectionRefused.into())
        };
        q.send_or_queue(&mut refused, datagram(10, 0), &mut c);
        assert_eq!((c.sent, c.send_errors, c.socket_errors), (1, 2, 4));
        assert!(q.is_empty());
    }

    #[test]
    fn lowering_the_limits_keeps_the_oldest() {
        let mut q = SendQueue::new(8, 1 << 20);
        let mut c = IoCounters::default();
        for tag in 0..8 {
            q.push(datagram(10, tag), &mut c);
        }
        q.set_limits(3, 1 << 20, &mut c);
        assert_eq!((q.len(), q.bytes()), (3, 30));
        assert_eq!(c.dropped_sends, 5);
        let mut sent = Vec::new();
        q.flush(
            &mut |b: &[u8], _: SocketAddr| {
                sent.push(b[0]);
                Ok(b.len())
            },
            &mut c,
        );
        assert_eq!(sent, vec![0, 1, 2]);
    }
}
