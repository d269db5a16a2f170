//! [`MioNode`]: one Pastry node on one non-blocking UDP socket, driven by the caller's loop.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use pastry_core::{
    Clock, Config, ConfigError, Event, Id, Instant, LookupId, MessageId, Node, NodeError,
    NodeHandle, RouteError,
};

use crate::queue::{DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_DATAGRAMS, IoCounters, SendQueue};

/// Consecutive failed reads after which [`MioNode::handle_readable`] stops reading. Each ICMP
/// report is read once and cleared, so only a socket that fails on every read gets there; the
/// next datagram to arrive makes the socket readable again.
const MAX_CONSECUTIVE_RECV_ERRORS: u32 = 64;

/// Why [`MioNode::bind`] or [`MioNode::from_socket`] failed.
///
/// ```
/// use pastry_core::{Config, Id};
/// use pastry_mio::{BindError, MioNode};
/// let mut config = Config::default();
/// config.leaf_set_size = 7; // must be even
/// let err = MioNode::bind("127.0.0.1:0".parse().unwrap(), config, Id::new(1), 1).unwrap_err();
/// assert!(matches!(err, BindError::Config(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The socket could not be bound or its address read, or the operating system had no
    /// randomness for the node's secret.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The core rejected the configuration.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
}

/// A Pastry node on a non-blocking UDP socket, for callers who run their own [`mio::Poll`].
///
/// The adapter only moves datagrams and time: every protocol decision is the core's
/// ([`pastry_core::Node`], reachable through [`MioNode::node`] and [`MioNode::node_mut`]).
/// It starts no thread and never blocks. The caller:
///
/// 1. registers it with [`MioNode::register`] under a token of its choice;
/// 2. passes every event for that token to [`MioNode::handle_event`] (or calls
///    [`MioNode::handle_readable`] / [`MioNode::handle_writable`] itself);
/// 3. sleeps in [`mio::Poll::poll`] no longer than [`MioNode::timeout`], and calls
///    [`MioNode::handle_timeout`] once [`MioNode::next_deadline`] has passed;
/// 4. drains [`MioNode::poll_event`] for what the application should know.
///
/// Every method that feeds the core sends what the core wants sent before it returns.
/// Datagrams the socket refuses with `WouldBlock` wait in a bounded queue (see
/// [`MioNode::set_send_queue_limits`]) until the socket is writable; when the queue is full the
/// newest datagram is dropped and counted in [`IoCounters::dropped_sends`], so a slow socket
/// costs bounded memory and the core's retransmissions recover what matters. Socket errors
/// (ICMP port or host unreachable reported as connection refused or reset, message too long,
/// ...) are counted in [`MioNode::io_counters`] and never stop the node.
///
/// ```
/// use mio::{Events, Poll, Token};
/// use pastry_core::{Config, Event, Id};
/// use pastry_mio::MioNode;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut poll = Poll::new()?;
/// let mut node = MioNode::bind("127.0.0.1:0".parse()?, Config::default(), Id::new(7), 1)?;
/// node.register(poll.registry(), Token(0))?;
/// node.bootstrap()?; // a ring of one: it is active at once
/// let lookup = node.lookup(Id::new(99))?;
///
/// let mut events = Events::with_capacity(64);
/// let root = 'run: loop {
///     while let Some(event) = node.poll_event() {
///         if let Event::LookupDone { id, root, .. } = event {
///             if id == lookup {
///                 break 'run root;
///             }
///         }
///     }
///     poll.poll(&mut events, node.timeout())?;
///     for event in events.iter() {
///         node.handle_event(event);
///     }
///     node.handle_timeout();
/// };
/// assert_eq!(root.addr, node.local_addr());
/// # Ok(())
/// # }
/// ```
pub struct MioNode {
    socket: UdpSocket,
    node: Node<SocketAddr>,
    clock: Clock,
    queue: SendQueue,
    counters: IoCounters,
    buf: Vec<u8>,
}

impl MioNode {
    /// Binds a UDP socket to `addr` and creates a node with id `id` on it; `seed` drives the
    /// core's random choices. The key of what other nodes must not guess (address tokens, hop
    /// numbers, nonces) comes from the operating system's randomness, whatever the seed.
    ///
    /// The node tells others the socket's local address, so bind to an address they can
    /// reach (not a wildcard such as `0.0.0.0`; for that, use [`MioNode::from_socket`] with
    /// the address to advertise).
    ///
    /// ```
    /// use pastry_core::{Config, Id};
    /// use pastry_mio::MioNode;
    /// let node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// assert_ne!(node.local_addr().port(), 0);
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn bind(addr: SocketAddr, config: Config, id: Id, seed: u64) -> Result<Self, BindError> {
        let socket = UdpSocket::bind(addr)?;
        let local = socket.local_addr()?;
        Self::from_socket(socket, local, config, id, seed)
    }

    /// Creates a node on a socket the caller set up (buffer sizes, a wildcard bind, a
    /// connected socket, ...), telling other nodes `advertised` as its address.
    ///
    /// ```
    /// use pastry_core::{Config, Id};
    /// use pastry_mio::MioNode;
    /// let std_socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// std_socket.set_nonblocking(true)?; // mio needs a non-blocking socket
    /// let addr = std_socket.local_addr()?;
    /// let socket = mio::net::UdpSocket::from_std(std_socket);
    /// let node = MioNode::from_socket(socket, addr, Config::default(), Id::new(1), 1).unwrap();
    /// assert_eq!(node.local_addr(), addr);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_socket(
        socket: UdpSocket,
        advertised: SocketAddr,
        config: Config,
        id: Id,
        seed: u64,
    ) -> Result<Self, BindError> {
        let clock = Clock::new();
        let mut node = Node::new(config, id, advertised, seed, clock.now())?;
        // What other nodes must not guess is keyed by fresh randomness, never by the seed.
        let mut key = [0; 16];
        getrandom::fill(&mut key).map_err(io::Error::from)?;
        node.set_secret(key);
        // One byte more than the core accepts: a longer datagram reaches the core as
        // oversized (counted as malformed) instead of silently truncated.
        let buf = vec![0; node.config().max_datagram_size + 1];
        Ok(MioNode {
            socket,
            node,
            clock,
            queue: SendQueue::new(DEFAULT_QUEUE_DATAGRAMS, DEFAULT_QUEUE_BYTES),
            counters: IoCounters::default(),
            buf,
        })
    }

    /// Bounds the queue of datagrams waiting for the socket to become writable, in datagrams
    /// and in bytes (defaults: [`DEFAULT_QUEUE_DATAGRAMS`](crate::DEFAULT_QUEUE_DATAGRAMS) and
    /// [`DEFAULT_QUEUE_BYTES`](crate::DEFAULT_QUEUE_BYTES)). A datagram that would exceed
    /// either bound is dropped and counted in [`IoCounters::dropped_sends`]; queued datagrams
    /// over new, lower bounds are dropped newest first.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.set_send_queue_limits(64, 64 * 1400);
    /// assert_eq!(node.queued_datagrams(), 0);
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn set_send_queue_limits(&mut self, max_datagrams: usize, max_bytes: usize) {
        self.queue
            .set_limits(max_datagrams, max_bytes, &mut self.counters);
    }

    /// Datagrams waiting for the socket to become writable.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// assert_eq!((node.queued_datagrams(), node.queued_bytes()), (0, 0));
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn queued_datagrams(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of the datagrams waiting for the socket to become writable.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// assert_eq!(node.queued_bytes(), 0);
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// The address this node tells other nodes (the socket's local address after
    /// [`MioNode::bind`]).
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// assert!(node.local_addr().ip().is_loopback());
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local().addr
    }

    /// This node's id.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// assert_eq!(node.id(), Id::new(1));
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn id(&self) -> Id {
        self.node.local().id
    }

    /// The socket, for options such as the TTL. Reading from or writing to it directly
    /// bypasses the node.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.socket().set_ttl(32)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Registers the socket with `registry` under `token`, for readable and writable events.
    /// Writable events matter only while datagrams wait in the send queue; others are
    /// harmless.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let poll = mio::Poll::new()?;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.register(poll.registry(), mio::Token(3))?;
    /// node.deregister(poll.registry())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut self.socket,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Removes the socket from `registry`.
    ///
    /// See [`MioNode::register`] for an example.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut self.socket)
    }

    /// Handles one event of this node's token: reads if it is readable (or reports an error,
    /// which a read collects), flushes the send queue if it is writable.
    ///
    /// See [`MioNode`] for an example.
    pub fn handle_event(&mut self, event: &mio::event::Event) {
        if event.is_readable() || event.is_error() {
            self.handle_readable();
        }
        if event.is_writable() {
            self.handle_writable();
        }
    }

    /// Reads every datagram the socket holds (until it would block, as mio's edge-triggered
    /// readiness requires) and feeds each to the core, sending its answers at once.
    ///
    /// Malformed datagrams are counted by the core ([`pastry_core::Counters::malformed`]) and
    /// change nothing else. Read errors, such as the connection refused that reports an ICMP
    /// port unreachable for an earlier datagram, are counted in
    /// [`IoCounters::socket_errors`] and reading carries on.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.bootstrap()?;
    /// let other = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// other.send_to(b"not pastry", node.local_addr())?;
    /// while node.io_counters().received == 0 {
    ///     node.handle_readable(); // a real loop waits for the readable event instead
    /// }
    /// assert_eq!(node.node().counters().malformed, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_readable(&mut self) {
        let mut errors = 0;
        while errors < MAX_CONSECUTIVE_RECV_ERRORS {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    errors = 0;
                    self.counters.received += 1;
                    let now = self.clock.now();
                    // Malformed input is counted by the core and changes nothing else.
                    let _ = self.node.handle_datagram(now, from, &self.buf[..n]);
                    self.flush();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    errors += 1;
                    if e.kind() != ErrorKind::Interrupted {
                        self.counters.socket_errors += 1;
                    }
                }
            }
        }
        self.flush();
    }

    /// Sends what waits in the send queue, as far as the socket takes it.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.handle_writable(); // nothing queued: nothing to do
    /// assert_eq!(node.queued_datagrams(), 0);
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn handle_writable(&mut self) {
        self.flush();
    }

    /// Runs the core's timers that are due and sends what they produce. Calling it early is
    /// harmless: timers not yet due wait.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.bootstrap()?;
    /// node.handle_timeout();
    /// assert!(node.next_deadline().is_some()); // the next heartbeat, at least
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_timeout(&mut self) {
        let now = self.clock.now();
        self.node.handle_timeout(now);
        self.flush();
    }

    /// When [`MioNode::handle_timeout`] should next be called, if the core has a timer.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// assert_eq!(node.next_deadline(), None); // not started: nothing scheduled
    /// node.bootstrap()?;
    /// assert!(node.next_deadline().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        self.node.poll_timeout().map(|t| self.clock.to_std(t))
    }

    /// How long [`mio::Poll::poll`] may sleep before [`MioNode::handle_timeout`] is due
    /// (zero if it is overdue), or `None` if the core has no timer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.bootstrap()?;
    /// assert!(node.timeout().unwrap() <= Duration::from_secs(600));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        self.next_deadline()
            .map(|d| d.saturating_duration_since(std::time::Instant::now()))
    }

    /// Starts a new overlay with this node as its only member ([`Node::bootstrap`]).
    ///
    /// ```
    /// # use pastry_core::{Config, Event, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.bootstrap()?;
    /// assert_eq!(node.poll_event(), Some(Event::Active));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bootstrap(&mut self) -> Result<(), NodeError> {
        let now = self.clock.now();
        let result = self.node.bootstrap(now);
        self.flush();
        result
    }

    /// Joins the overlay that the node at `bootstrap` belongs to ([`Node::join`]):
    /// [`Event::Active`] or [`Event::JoinFailed`] follows.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut a = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// let mut b = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(2), 2)?;
    /// a.bootstrap()?;
    /// b.join(a.local_addr())?; // the first probe is on its way to `a`
    /// assert!(b.node().is_joining());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&mut self, bootstrap: SocketAddr) -> Result<(), NodeError> {
        let now = self.clock.now();
        let result = self.node.join(now, bootstrap);
        self.flush();
        result
    }

    /// Routes `payload` for application `app` to the live node closest to `key`
    /// ([`Node::route`]).
    ///
    /// ```
    /// # use pastry_core::{Config, Event, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.bootstrap()?;
    /// node.route(Id::new(5), 0, b"hi".to_vec())?;
    /// let delivered = std::iter::from_fn(|| node.poll_event())
    ///     .any(|e| matches!(e, Event::Deliver(m) if m.payload == b"hi"));
    /// assert!(delivered); // alone, the node is the root of every key
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn route(&mut self, key: Id, app: u16, payload: Vec<u8>) -> Result<MessageId, RouteError> {
        let now = self.clock.now();
        let result = self.node.route(now, key, app, payload);
        self.flush();
        result
    }

    /// Sends `payload` for application `app` straight to `to`, acknowledged and retransmitted
    /// ([`Node::send_direct`]).
    ///
    /// ```
    /// # use pastry_core::{Config, Id, NodeHandle};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.bootstrap()?;
    /// let peer = NodeHandle::new(Id::new(2), "127.0.0.1:9".parse()?);
    /// node.send_direct(peer, 0, b"hi".to_vec())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_direct(
        &mut self,
        to: NodeHandle<SocketAddr>,
        app: u16,
        payload: Vec<u8>,
    ) -> Result<MessageId, RouteError> {
        let now = self.clock.now();
        let result = self.node.send_direct(now, to, app, payload);
        self.flush();
        result
    }

    /// Looks up the root of `key` ([`Node::lookup`]): [`Event::LookupDone`] or
    /// [`Event::LookupFailed`] follows.
    ///
    /// See [`MioNode`] for an example.
    pub fn lookup(&mut self, key: Id) -> Result<LookupId, RouteError> {
        let now = self.clock.now();
        let result = self.node.lookup(now, key);
        self.flush();
        result
    }

    /// Leaves the overlay gracefully ([`Node::leave`]): [`Event::Left`] follows.
    ///
    /// ```
    /// # use pastry_core::{Config, Event, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.bootstrap()?;
    /// node.leave(); // alone: nobody to tell
    /// assert!(std::iter::from_fn(|| node.poll_event()).any(|e| e == Event::Left));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn leave(&mut self) {
        let now = self.clock.now();
        self.node.leave(now);
        self.flush();
    }

    /// The next event for the application, if any. Drain it after every call that feeds the
    /// node: the core queues events until they are taken.
    ///
    /// See [`MioNode`] for an example.
    pub fn poll_event(&mut self) -> Option<Event<SocketAddr>> {
        self.node.poll_event()
    }

    /// Calls `f` with the application registered under `app_id` (through
    /// [`MioNode::node_mut`]), as its type `T`, and a context to act through, then sends what
    /// it produced ([`Node::with_app`]). This is how a registered application such as the
    /// replicated store (`pastry_core::store`) is driven.
    ///
    /// ```
    /// # use pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// node.node_mut().register(7, Box::new(Store::new(StoreConfig::default()).unwrap()))?;
    /// node.bootstrap()?;
    /// node.with_app(7, |s: &mut Store<_>, ctx| s.insert(ctx, Id::new(3), 1, b"v".to_vec()))??;
    /// let event = node.with_app(7, |s: &mut Store<_>, _| s.poll_event())?;
    /// assert!(matches!(event, Some(StoreEvent::Inserted { .. }))); // alone: the root
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_app<T: pastry_core::Application<SocketAddr>, R>(
        &mut self,
        app_id: u16,
        f: impl FnOnce(&mut T, &mut pastry_core::Context<'_, SocketAddr>) -> R,
    ) -> Result<R, NodeError> {
        let now = self.clock.now();
        let result = self.node.with_app(now, app_id, f);
        self.flush();
        result
    }

    /// The core, for introspection: leaf set, routing table, counters, state.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// assert_eq!(node.node().counters().datagrams_in, 0);
    /// assert!(node.node().leaf_set().is_empty());
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn node(&self) -> &Node<SocketAddr> {
        &self.node
    }

    /// The core, to register applications or call what this type does not wrap. After an
    /// input given this way (one that takes `now`: use [`MioNode::now`]), call
    /// [`MioNode::flush`] to send what it produced.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// let now = node.now();
    /// node.node_mut().bootstrap(now)?;
    /// node.flush();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn node_mut(&mut self) -> &mut Node<SocketAddr> {
        &mut self.node
    }

    /// The current time on the core's clock, for inputs given through [`MioNode::node_mut`].
    ///
    /// See [`MioNode::node_mut`] for an example.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The clock that maps `std` time onto the core's [`Instant`].
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(1), 1)?;
    /// let t = node.now();
    /// assert!(node.clock().to_std(t) <= std::time::Instant::now());
    /// # Ok::<(), pastry_mio::BindError>(())
    /// ```
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Sends what the core has to send: first the send queue, then every datagram the core
    /// produced, queueing those the socket refuses with `WouldBlock`. Every method of this
    /// type that feeds the core calls it; call it after feeding the core through
    /// [`MioNode::node_mut`].
    ///
    /// See [`MioNode::node_mut`] for an example.
    pub fn flush(&mut self) {
        let socket = &self.socket;
        let mut send = |bytes: &[u8], to: SocketAddr| socket.send_to(bytes, to);
        self.queue.flush(&mut send, &mut self.counters);
        while let Some(t) = self.node.poll_transmit() {
            self.queue.send_or_queue(&mut send, t, &mut self.counters);
        }
    }

    /// What the adapter did with datagrams: sent, received, queued, dropped, errors.
    ///
    /// ```
    /// # use pastry_core::{Config, Id};
    /// # use pastry_mio::MioNode;
    /// let mut node = MioNode::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Id::new(2), 1)?;
    /// let peer = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// node.join(peer.local_addr()?)?;
    /// assert_eq!(node.io_counters().sent, 1); // the probe of the bootstrap node
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn io_counters(&self) -> &IoCounters {
        &self.counters
    }
}

impl fmt::Debug for MioNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MioNode")
            .field("id", &self.id())
            .field("addr", &self.local_addr())
            .field("active", &self.node.is_active())
            .field("queued", &self.queue.len())
            .field("io", &self.counters)
            .finish_non_exhaustive()
    }
}
