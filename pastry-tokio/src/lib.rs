//! Runs a [`pastry_core`] node on a tokio UDP socket.
//!
//! [`Builder::bind`] binds a socket, creates the node and spawns a task (the *driver*) that
//! owns both: it feeds every received datagram and every expired deadline to the node and sends
//! what the node asks it to. The [`PastryNode`] it returns is a cheap, clonable handle: joining,
//! routing, lookups, introspection and shutdown are requests to the driver. The adapter holds
//! no protocol logic of its own.
//!
//! Time comes from [`tokio::time`], so a node runs under paused time and in simulators such as
//! turmoil (see [`Builder::bind_socket`] and the [`Socket`] trait).
//!
//! ```
//! use pastry_core::{Config, Id};
//! use pastry_tokio::Builder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), pastry_tokio::Error> {
//! let first = Builder::new(Config::default()).id(Id::new(1)).bind("127.0.0.1:0").await?;
//! first.bootstrap().await?;
//! let second = Builder::new(Config::default()).id(Id::new(2)).bind("127.0.0.1:0").await?;
//! second.join(first.local_addr()).await?;
//! // The root of a key next to node 1's id is node 1.
//! let found = second.lookup(Id::new(3)).await?;
//! assert_eq!(found.root.id, Id::new(2));
//! second.shutdown().await?;
//! first.shutdown().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pastry_core::{
    Application, Clock, Config, Counters, Event, Id, LeafSet, LookupId, Node, NodeError,
    NodeHandle, RouteError, RoutingTable,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

pub use pastry_core::MessageId;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be bound or read its address, or the operating system had no
    /// randomness for the node's id, seed or secret.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The configuration was rejected.
    #[error("configuration: {0}")]
    Config(#[from] pastry_core::ConfigError),
    /// The node refused the request (its state).
    #[error("node: {0}")]
    Node(#[from] NodeError),
    /// A message or lookup could not be routed.
    #[error("route: {0}")]
    Route(#[from] RouteError),
    /// The join failed or did not finish in time.
    #[error("the join did not complete")]
    JoinFailed,
    /// The lookup timed out after its retries.
    #[error("the lookup failed")]
    LookupFailed,
    /// The node has shut down (or its driver stopped).
    #[error("the node has shut down")]
    Closed,
}

/// The answer to a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The node numerically closest to the key: its root.
    pub root: NodeHandle<SocketAddr>,
    /// Overlay hops from this node to the root.
    pub hops: u8,
}

/// A datagram socket the driver can use: tokio's own, or a simulator's (turmoil's
/// `UdpSocket` has the same shape).
pub trait Socket: Send + Sync + 'static {
    /// Receives one datagram.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// Sends one datagram.
    fn send_to(&self, buf: &[u8], to: SocketAddr)
    -> impl Future<Output = io::Result<usize>> + Send;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Receives a datagram if one is ready, without waiting (`WouldBlock` otherwise). The
    /// driver reads in batches with it; the default never has one ready.
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let _ = buf;
        Err(io::ErrorKind::WouldBlock.into())
    }
    /// Sends a datagram if the socket can take it now (`WouldBlock` otherwise, and the driver
    /// waits in [`Socket::send_to`]). The default always defers to `send_to`.
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let _ = (buf, to);
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Socket for tokio::net::UdpSocket {
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }
    fn send_to(
        &self,
        buf: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, buf, to)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::try_recv_from(self, buf)
    }
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        tokio::net::UdpSocket::try_send_to(self, buf, to)
    }
}

/// Datagrams or commands handled in one turn of the driver before it sends what they produced.
const BATCH: usize = 64;

/// Configures and binds a node.
///
/// ```
/// use pastry_core::{Config, Id};
/// use pastry_tokio::Builder;
/// let builder = Builder::new(Config::default()).id(Id::new(42)).seed(7).events(256);
/// # drop(builder);
/// ```
pub struct Builder {
    config: Config,
    id: Option<Id>,
    seed: Option<u64>,
    apps: Vec<(u16, Box<dyn Application<SocketAddr>>)>,
    events: usize,
}

impl Builder {
    /// A node with this configuration, a random id and seed, and room for 1,024 unread events.
    pub fn new(config: Config) -> Self {
        Builder {
            config,
            id: None,
            seed: None,
            apps: Vec::new(),
            events: 1024,
        }
    }

    /// Uses this id instead of a random one.
    pub fn id(mut self, id: Id) -> Self {
        self.id = Some(id);
        self
    }

    /// Seeds the node's random choices (for reproducible runs). Whatever the seed, the key
    /// of what other nodes must not guess (address tokens, hop numbers, nonces) comes from
    /// the operating system's randomness ([`Node::set_secret`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Registers an application under `app_id`: it sees the messages routed with that id
    /// through its upcalls (deliver, forward: it may rewrite, redirect or stop a message at
    /// every hop, update) instead of as events.
    pub fn application(mut self, app_id: u16, app: Box<dyn Application<SocketAddr>>) -> Self {
        self.apps.push((app_id, app));
        self
    }

    /// How many events may wait unread in [`PastryNode::events`]; beyond that the newest are
    /// dropped and counted ([`PastryNode::dropped_events`]).
    pub fn events(mut self, capacity: usize) -> Self {
        self.events = capacity.max(1);
        self
    }

    /// Binds a UDP socket and starts the node's driver on the current tokio runtime. The node
    /// is idle: call [`PastryNode::bootstrap`] or [`PastryNode::join`].
    pub async fn bind(self, addr: impl tokio::net::ToSocketAddrs) -> Result<PastryNode, Error> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        self.bind_socket(socket)
    }

    /// Starts the node on a socket the caller bound (any [`Socket`]).
    pub fn bind_socket<S: Socket>(self, socket: S) -> Result<PastryNode, Error> {
        let local = socket.local_addr()?;
        let id = match self.id {
            Some(id) => id,
            None => Id::from_bytes(random()?),
        };
        let seed = match self.seed {
            Some(seed) => seed,
            None => u64::from_le_bytes(random()?),
        };
        let clock = Clock::with_epoch(TokioInstant::now().into_std());
        let mut node = Node::new(self.config.clone(), id, local, seed, now(&clock))?;
        // What other nodes must not guess is keyed by fresh randomness, never by the seed.
        node.set_secret(random()?);
        for (app_id, app) in self.apps {
            node.register(app_id, app)?;
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(self.events);
        let dropped = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(SocketStats::default());
        let driver = Driver {
            socket,
            node,
            clock,
            cmds: cmd_rx,
            events: ev_tx,
            dropped: dropped.clone(),
            stats: stats.clone(),
            joins: Vec::new(),
            lookups: HashMap::new(),
            leaving: Vec::new(),
            buf: vec![0; self.config.max_datagram_size.max(1500)],
        };
        tokio::spawn(driver.run());
        Ok(PastryNode {
            inner: Arc::new(Inner {
                cmds: cmd_tx,
                events: std::sync::Mutex::new(Some(ev_rx)),
                local,
                id,
                dropped,
                stats,
                join_patience: self.config.join_timeout
                    * (u32::from(self.config.join_attempts) + 1),
                leave_patience: self.config.rto_max * 4,
            }),
        })
    }
}

/// Bytes from the operating system's random source.
fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

fn now(clock: &Clock) -> pastry_core::Instant {
    clock.from_std(TokioInstant::now().into_std())
}

/// Socket errors the driver survived, by kind.
#[derive(Debug, Default)]
struct SocketStats {
    send_errors: AtomicU64,
    recv_errors: AtomicU64,
}

struct Inner {
    cmds: mpsc::Sender<Command>,
    events: std::sync::Mutex<Option<mpsc::Receiver<Event<SocketAddr>>>>,
    local: SocketAddr,
    id: Id,
    dropped: Arc<AtomicU64>,
    stats: Arc<SocketStats>,
    join_patience: Duration,
    leave_patience: Duration,
}

/// A running node: a handle to its driver task. Clones share the node. When the last clone is
/// dropped without [`PastryNode::shutdown`], the driver stops without leaving the ring (as if
/// the machine had failed).
#[derive(Clone)]
pub struct PastryNode {
    inner: Arc<Inner>,
}

/// A look at the node, run inside the driver.
type Inspection = Box<dyn FnOnce(&Node<SocketAddr>) + Send>;
/// A call into the node (an application), run inside the driver at the given time.
type Action = Box<dyn FnOnce(&mut Node<SocketAddr>, pastry_core::Instant) + Send>;

enum Command {
    Bootstrap(oneshot::Sender<Result<(), Error>>),
    Join(SocketAddr, oneshot::Sender<Result<(), Error>>),
    Route(Id, u16, Vec<u8>, oneshot::Sender<Result<MessageId, Error>>),
    Lookup(Id, oneshot::Sender<Result<Found, Error>>),
    Inspect(Inspection),
    Act(Action),
    Leave(oneshot::Sender<()>),
}

impl PastryNode {
    /// The socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The node's id.
    pub fn id(&self) -> Id {
        self.inner.id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmds
            .send(make(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Starts a new ring with this node as its only member; the node is active at once.
    pub async fn bootstrap(&self) -> Result<(), Error> {
        self.ask(Command::Bootstrap).await?
    }

    /// Joins the ring that `bootstrap` (a member's address) belongs to. Resolves when the node
    /// is active: its leaf set is confirmed and it may be the root of keys. Fails when the
    /// node gives up (after its join attempts) or does not finish in time.
    pub async fn join(&self, bootstrap: SocketAddr) -> Result<(), Error> {
        let patience = self.inner.join_patience;
        match tokio::time::timeout(patience, self.ask(|tx| Command::Join(bootstrap, tx))).await {
            Ok(r) => r?,
            Err(_) => Err(Error::JoinFailed),
        }
    }

    /// Routes `payload` to the root of `key`, for the application `app` there (its
    /// [`Application::deliver`], or an [`Event::Deliver`] where no application is registered).
    pub async fn route(&self, key: Id, app: u16, payload: Vec<u8>) -> Result<MessageId, Error> {
        self.ask(|tx| Command::Route(key, app, payload, tx)).await?
    }

    /// Finds the root of `key` (the live node numerically closest to it) and the hop count.
    pub async fn lookup(&self, key: Id) -> Result<Found, Error> {
        self.ask(|tx| Command::Lookup(key, tx)).await?
    }

    /// The node's events, once: a stream of deliveries, leaf-set changes, route failures and
    /// the rest ([`Event`]). `None` if taken before.
    pub fn events(&self) -> Option<EventStream> {
        self.inner
            .events
            .lock()
            .expect("no panic while holding the lock")
            .take()
            .map(|rx| EventStream { rx })
    }

    /// Events dropped because the event stream was full or not read.
    pub fn dropped_events(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Socket errors the node survived so far: (send, receive).
    pub fn socket_errors(&self) -> (u64, u64) {
        (
            self.inner.stats.send_errors.load(Ordering::Relaxed),
            self.inner.stats.recv_errors.load(Ordering::Relaxed),
        )
    }

    /// Runs `f` on the node inside its driver and returns the result: for introspection.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Node<SocketAddr>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |n: &Node<SocketAddr>| {
            let _ = tx.send(f(n));
        });
        self.inner
            .cmds
            .send(Command::Inspect(run))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Runs `f` inside the driver on the application registered under `app_id` (with
    /// [`Builder::application`]), as its type `T`, with a context to act through; what it
    /// routes or sends goes out at once. This is how a registered application such as the
    /// replicated store (`pastry_core::store`) is driven.
    ///
    /// ```
    /// use pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// use pastry_core::{Config, Id};
    /// use pastry_tokio::Builder;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// const STORE: u16 = 1;
    /// let store = Store::new(StoreConfig::default()).expect("valid");
    /// let node = Builder::new(Config::default())
    ///     .application(STORE, Box::new(store))
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// node.bootstrap().await?;
    /// let key = Id::new(42);
    /// node.with_app(STORE, move |s: &mut Store<_>, ctx| s.insert(ctx, key, 1, b"v".to_vec()))
    ///     .await?
    ///     .expect("a small value");
    /// // Alone, the node is the key's root: the insert is done by the time it returns.
    /// let event = node.with_app(STORE, |s: &mut Store<_>, _| s.poll_event()).await?;
    /// assert!(matches!(event, Some(StoreEvent::Inserted { version: 1, .. })));
    /// # Ok::<(), pastry_tokio::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn with_app<T, R>(
        &self,
        app_id: u16,
        f: impl FnOnce(&mut T, &mut pastry_core::Context<'_, SocketAddr>) -> R + Send + 'static,
    ) -> Result<R, Error>
    where
        T: pastry_core::Application<SocketAddr>,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: Action = Box::new(move |n: &mut Node<SocketAddr>, now| {
            let _ = tx.send(n.with_app(now, app_id, f));
        });
        self.inner
            .cmds
            .send(Command::Act(run))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(rx.await.map_err(|_| Error::Closed)??)
    }

    /// A copy of the leaf set.
    pub async fn leaf_set(&self) -> Result<LeafSet<SocketAddr>, Error> {
        self.inspect(|n| n.leaf_set().clone()).await
    }

    /// A copy of the routing table.
    pub async fn routing_table(&self) -> Result<RoutingTable<SocketAddr>, Error> {
        self.inspect(|n| n.routing_table().clone()).await
    }

    /// The node's counters.
    pub async fn counters(&self) -> Result<Counters, Error> {
        self.inspect(|n| n.counters().clone()).await
    }

    /// Whether the node is active.
    pub async fn is_active(&self) -> Result<bool, Error> {
        self.inspect(|n| n.is_active()).await
    }

    /// Leaves the ring gracefully (the leaf set hears of it and repairs at once), then stops
    /// the driver. Waits for the leaf set's acknowledgements, or a few retransmission timeouts.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let patience = self.inner.leave_patience;
        let _ = tokio::time::timeout(patience, self.ask(Command::Leave)).await;
        Ok(())
    }
}

/// The node's events, in order.
pub struct EventStream {
    rx: mpsc::Receiver<Event<SocketAddr>>,
}

impl EventStream {
    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<Event<SocketAddr>> {
        self.rx.recv().await
    }
}

/// The task that owns the socket and the node.
struct Driver<S> {
    socket: S,
    node: Node<SocketAddr>,
    clock: Clock,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event<SocketAddr>>,
    dropped: Arc<AtomicU64>,
    stats: Arc<SocketStats>,
    joins: Vec<oneshot::Sender<Result<(), Error>>>,
    lookups: HashMap<LookupId, oneshot::Sender<Result<Found, Error>>>,
    leaving: Vec<oneshot::Sender<()>>,
    buf: Vec<u8>,
}

impl<S: Socket> Driver<S> {
    async fn run(mut self) {
        // One timer, moved when the node's deadline moves (cheaper than a new one per turn).
        let far = || TokioInstant::now() + Duration::from_secs(86_400 * 365);
        let sleep = tokio::time::sleep_until(far());
        tokio::pin!(sleep);
        let mut armed: Option<TokioInstant> = None;
        loop {
            let deadline = self
                .node
                .poll_timeout()
                .map(|t| TokioInstant::from_std(self.clock.to_std(t)));
            if deadline != armed {
                sleep.as_mut().reset(deadline.unwrap_or_else(far));
                armed = deadline;
            }
            tokio::select! {
                r = self.socket.recv_from(&mut self.buf) => {
                    self.received(r);
                    // More may be waiting: take them in the same turn.
                    for _ in 1..BATCH {
                        match self.socket.try_recv_from(&mut self.buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            r => self.received(r),
                        }
                    }
                }
                () = &mut sleep => {
                    let now = now(&self.clock);
                    self.node.handle_timeout(now);
                    // Fired: re-arm whatever the deadline is now.
                    armed = None;
                }
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => {
                        self.command(cmd);
                        for _ in 1..BATCH {
                            match self.cmds.try_recv() {
                                Ok(cmd) => self.command(cmd),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone: stop, as a crashed node would.
                    None => return,
                },
            }
            self.flush().await;
            if self.node.has_left() {
                for tx in self.leaving.drain(..) {
                    let _ = tx.send(());
                }
                return;
            }
        }
    }

    fn received(&mut self, r: io::Result<(usize, SocketAddr)>) {
        match r {
            Ok((n, from)) => {
                let now = now(&self.clock);
                // Malformed input is the core's to count; it changes nothing.
                let _ = self.node.handle_datagram(now, from, &self.buf[..n]);
            }
            Err(e) => {
                // ICMP errors (refused, unreachable) and the like concern one peer, never the
                // node.
                self.stats.recv_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "receive error");
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = now(&self.clock);
        match cmd {
            Command::Bootstrap(tx) => {
                let _ = tx.send(self.node.bootstrap(now).map_err(Error::from));
            }
            Command::Join(addr, tx) => match self.node.join(now, addr) {
                Ok(()) => self.joins.push(tx),
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::Route(key, app, payload, tx) => {
                let _ = tx.send(self.node.route(now, key, app, payload).map_err(Error::from));
            }
            Command::Lookup(key, tx) => match self.node.lookup(now, key) {
                Ok(id) => {
                    self.lookups.insert(id, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::Inspect(f) => f(&self.node),
            Command::Act(f) => f(&mut self.node, now),
            Command::Leave(tx) => {
                self.node.leave(now);
                self.leaving.push(tx);
            }
        }
    }

    /// After every input: send what the node produced, settle waiters, pass events on.
    async fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            let sent = match self.socket.try_send_to(&t.contents, t.destination) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket's buffer is full: wait for room (back-pressure: nothing else
                    // is read meanwhile, so the core's bounded queues are the only buffer).
                    self.socket.send_to(&t.contents, t.destination).await
                }
                r => r,
            };
            if let Err(e) = sent {
                // Too large, unreachable, no buffer space: that datagram is lost, like any
                // datagram may be; the protocol's retransmissions deal with it.
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, to = %t.destination, "send error");
            }
        }
        while let Some(e) = self.node.poll_event() {
            match &e {
                Event::Active => {
                    for tx in self.joins.drain(..) {
                        let _ = tx.send(Ok(()));
                    }
                }
                Event::JoinFailed => {
                    for tx in self.joins.drain(..) {
                        let _ = tx.send(Err(Error::JoinFailed));
                    }
                }
                Event::LookupDone { id, root, hops, .. } => {
                    if let Some(tx) = self.lookups.remove(id) {
                        let _ = tx.send(Ok(Found {
                            root: root.clone(),
                            hops: *hops,
                        }));
                    }
                }
                Event::LookupFailed { id, .. } => {
                    if let Some(tx) = self.lookups.remove(id) {
                        let _ = tx.send(Err(Error::LookupFailed));
                    }
                }
                _ => {}
            }
            if self.events.try_send(e).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Waiters whose caller went away (a timeout dropped the future) are forgotten.
        self.lookups.retain(|_, tx| !tx.is_closed());
    }
}
