//! What the adapter itself counts: socket errors, back-pressure and dropped events.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals of the adapter (the core's own totals are
/// [`pastry_core::Counters`], from [`PastryNode::counters`](crate::PastryNode::counters)).
///
/// Socket errors never stop a node: each one is counted here and the datagram concerned is
/// dropped (the core retransmits what needs retransmitting).
///
/// ```
/// use pastry_smol::{Config, PastryNode};
/// let (node, _driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
/// let c = node.io_counters();
/// assert_eq!(c.send_errors + c.recv_errors + c.queue_dropped + c.events_dropped, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoCounters {
    /// Datagrams the socket refused to send (any error but "would block"); each was dropped.
    pub send_errors: u64,
    /// Errors `recv_from` returned (for example an ICMP "port unreachable" reported as
    /// connection refused or reset on some platforms).
    pub recv_errors: u64,
    /// Of the send and receive errors: connection refused or reset, host or network
    /// unreachable (what ICMP reports about earlier datagrams).
    pub unreachable: u64,
    /// Of the send and receive errors: "message too long" (`EMSGSIZE`).
    pub too_long: u64,
    /// Times the socket's send buffer was full ("would block"); the datagram stayed queued
    /// and the driver waited for the socket to become writable.
    pub would_block: u64,
    /// Datagrams dropped because the bounded send queue was full.
    pub queue_dropped: u64,
    /// The longest the send queue has been.
    pub queue_peak: u64,
    /// Events dropped from the event stream because nobody read it and it was full (the
    /// oldest event is dropped to make room for the newest).
    pub events_dropped: u64,
}

#[derive(Default, Debug)]
pub(crate) struct SharedStats {
    send_errors: AtomicU64,
    recv_errors: AtomicU64,
    unreachable: AtomicU64,
    too_long: AtomicU64,
    would_block: AtomicU64,
    queue_dropped: AtomicU64,
    queue_peak: AtomicU64,
    events_dropped: AtomicU64,
}

/// `EMSGSIZE` on the platforms we know; std has no `ErrorKind` for it.
#[cfg(any(target_os = "linux", target_os = "android"))]
const EMSGSIZE: Option<i32> = Some(90);
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
const EMSGSIZE: Option<i32> = Some(40);
#[cfg(windows)]
const EMSGSIZE: Option<i32> = Some(10040); // WSAEMSGSIZE
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly",
    windows
)))]
const EMSGSIZE: Option<i32> = None;

/// What a socket error was about, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    Unreachable,
    TooLong,
    Other,
}

pub(crate) fn classify(e: &io::Error) -> ErrorClass {
    use io::ErrorKind::*;
    if EMSGSIZE.is_some() && e.raw_os_error() == EMSGSIZE {
        return ErrorClass::TooLong;
    }
    match e.kind() {
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable => {
            ErrorClass::Unreachable
        }
        _ => ErrorClass::Other,
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl SharedStats {
    fn class(&self, e: &io::Error) {
        match classify(e) {
            ErrorClass::Unreachable => bump(&self.unreachable),
            ErrorClass::TooLong => bump(&self.too_long),
            ErrorClass::Other => {}
        }
    }

    pub(crate) fn send_error(&self, e: &io::Error) {
        bump(&self.send_errors);
        self.class(e);
    }

    pub(crate) fn recv_error(&self, e: &io::Error) {
        bump(&self.recv_errors);
        self.class(e);
    }

    pub(crate) fn would_block(&self) {
        bump(&self.would_block);
    }

    pub(crate) fn queue_dropped(&self) {
        bump(&self.queue_dropped);
    }

    pub(crate) fn queue_len(&self, len: usize) {
        self.queue_peak.fetch_max(len as u64, Ordering::Relaxed);
    }

    pub(crate) fn event_dropped(&self) {
        bump(&self.events_dropped);
    }

    pub(crate) fn snapshot(&self) -> IoCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IoCounters {
            send_errors: get(&self.send_errors),
            recv_errors: get(&self.recv_errors),
            unreachable: get(&self.unreachable),
            too_long: get(&self.too_long),
            would_block: get(&self.would_block),
            queue_dropped: get(&self.queue_dropped),
            queue_peak: get(&self.queue_peak),
            events_dropped: get(&self.events_dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_and_counted() {
        let s = SharedStats::default();
        s.send_error(&io::Error::from(io::ErrorKind::ConnectionRefused));
        s.recv_error(&io::Error::from(io::ErrorKind::ConnectionReset));
        s.send_error(&io::Error::from(io::ErrorKind::PermissionDenied));
        if let Some(code) = EMSGSIZE {
            let e = io::Error::from_raw_os_error(code);
            assert_eq!(classify(&e), ErrorClass::TooLong);
            s.send_error(&e);
        }
        let c = s.snapshot();
        assert_eq!(c.recv_errors, 1);
        assert_eq!(c.unreachable, 2);
        assert_eq!(c.send_errors, 2 + u64::from(EMSGSIZE.is_some()));
        assert_eq!(c.too_long, u64::from(EMSGSIZE.is_some()));
    }
}
