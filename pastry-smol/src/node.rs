//! The builder and the handle.

use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_io::{Async, Timer};
use futures_lite::future;
use pastry_core::{
    Application, Clock, Config, Counters, Event, Id, LeafSet, MessageId, Node, NodeError,
    NodeHandle, RoutingTable,
};

use crate::driver::{Command, Driver, Settings};
use crate::error::{BindError, JoinError, LookupError, RouteError, ShutdownError, Stopped};
use crate::events::Events;
use crate::stats::{IoCounters, SharedStats};

const DEFAULT_EVENT_CAPACITY: usize = 1024;
const DEFAULT_SEND_QUEUE: usize = 1024;
const DEFAULT_COMMAND_CAPACITY: usize = 256;

/// Configures a node before it is bound: its id, seed, applications, and the adapter's
/// bounds and time limits.
///
/// ```
/// use std::time::Duration;
/// use pastry_smol::{Config, Id, NodeBuilder};
/// let (node, driver) = NodeBuilder::new(Config::default())
///     .id(Id::new(0x1234 << 112))
///     .seed(7)
///     .event_capacity(64)
///     .send_queue_capacity(256)
///     .join_timeout(Duration::from_secs(10))
///     .bind("127.0.0.1:0".parse().unwrap())
///     .unwrap();
/// assert_eq!(node.id(), Id::new(0x1234 << 112));
/// # drop(driver);
/// ```
pub struct NodeBuilder {
    config: Config,
    id: Option<Id>,
    seed: Option<u64>,
    apps: Vec<(u16, Box<dyn Application<SocketAddr>>)>,
    event_capacity: usize,
    send_queue_capacity: usize,
    command_capacity: usize,
    join_timeout: Option<Duration>,
    leave_timeout: Option<Duration>,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .field("id", &self.id)
            .field("seed", &self.seed)
            .field(
                "apps",
                &self.apps.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            )
            .field("event_capacity", &self.event_capacity)
            .field("send_queue_capacity", &self.send_queue_capacity)
            .field("command_capacity", &self.command_capacity)
            .field("join_timeout", &self.join_timeout)
            .field("leave_timeout", &self.leave_timeout)
            .finish()
    }
}

impl NodeBuilder {
    /// A builder for a node with the core configuration `config` (checked at
    /// [`bind`](Self::bind)).
    ///
    /// ```
    /// use pastry_smol::{Config, NodeBuilder};
    /// let builder = NodeBuilder::new(Config::default());
    /// # drop(builder);
    /// ```
    pub fn new(config: Config) -> Self {
        NodeBuilder {
            config,
            id: None,
            seed: None,
            apps: Vec::new(),
            event_capacity: DEFAULT_EVENT_CAPACITY,
            send_queue_capacity: DEFAULT_SEND_QUEUE,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            join_timeout: None,
            leave_timeout: None,
        }
    }

    /// The node's id. Without it, the id follows from the seed when one is given, and is
    /// drawn from the operating system's randomness otherwise. Ids must be uniform on the ring
    /// (for example a hash of a public key) for the overlay to balance.
    ///
    /// ```
    /// use pastry_smol::{Config, Id, NodeBuilder};
    /// let (node, _driver) = NodeBuilder::new(Config::default()).id(Id::new(42))
    ///     .bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// assert_eq!(node.id(), Id::new(42));
    /// ```
    pub fn id(mut self, id: Id) -> Self {
        self.id = Some(id);
        self
    }

    /// The seed of every random choice of the core (and of the id, when none is given), for
    /// reproducible runs. Without it, a seed is drawn from the operating system's randomness.
    /// Whatever the seed, the key of what other nodes must not guess (address tokens, hop
    /// numbers, nonces) comes from the operating system ([`pastry_core::Node::set_secret`]).
    ///
    /// ```
    /// use pastry_smol::{Config, NodeBuilder};
    /// let bind = || NodeBuilder::new(Config::default()).seed(5).bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let ((a, _da), (b, _db)) = (bind(), bind());
    /// assert_eq!(a.id(), b.id()); // same seed, same id
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Registers an application under `app_id`: routed and direct messages with that id go
    /// to it (its `deliver`, `direct`), it sees every message this node forwards for that id
    /// (`forward`, which may rewrite, redirect or stop it) and every leaf-set change
    /// (`update`). Upcalls run synchronously on the driver's task, so they must not block.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
    /// use pastry_smol::{Application, Config, Context, Forward, Id, NodeBuilder, NodeHandle, RouteMessage};
    ///
    /// struct Count(Arc<AtomicU32>);
    /// impl Application<SocketAddr> for Count {
    ///     fn deliver(&mut self, _: &mut Context<'_, SocketAddr>, _: RouteMessage<SocketAddr>) {
    ///         self.0.fetch_add(1, Ordering::SeqCst);
    ///     }
    ///     fn forward(&mut self, _: &mut Context<'_, SocketAddr>, m: &mut RouteMessage<SocketAddr>,
    ///                _: &mut NodeHandle<SocketAddr>) -> Forward {
    ///         if m.payload.is_empty() { Forward::Stop } else { Forward::Continue }
    ///     }
    /// }
    ///
    /// let delivered = Arc::new(AtomicU32::new(0));
    /// smol::block_on(async {
    ///     let (node, driver) = NodeBuilder::new(Config::default())
    ///         .application(7, Box::new(Count(delivered.clone())))
    ///         .bind("127.0.0.1:0".parse().unwrap())
    ///         .unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     node.route(Id::new(1), 7, b"x".to_vec()).await.unwrap();
    ///     node.counters().await.unwrap(); // a round trip through the driver
    /// });
    /// assert_eq!(delivered.load(Ordering::SeqCst), 1);
    /// ```
    pub fn application(mut self, app_id: u16, app: Box<dyn Application<SocketAddr>>) -> Self {
        self.apps.push((app_id, app));
        self
    }

    /// Bound on queued events (default 1024, at least 1). When the application does not read
    /// [`PastryNode::events`] and the queue is full, the oldest event is dropped and counted.
    ///
    /// ```
    /// use pastry_smol::{Config, NodeBuilder};
    /// let builder = NodeBuilder::new(Config::default()).event_capacity(16);
    /// # drop(builder);
    /// ```
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events.max(1);
        self
    }

    /// Bound on datagrams waiting for room in the socket's send buffer (default 1024, at
    /// least 1). While it is full the driver takes no new input (commands wait, the kernel
    /// holds or drops incoming datagrams); datagrams the core produces beyond it are dropped
    /// and counted in [`IoCounters::queue_dropped`], and the core's retransmissions recover
    /// them.
    ///
    /// ```
    /// use pastry_smol::{Config, NodeBuilder};
    /// let builder = NodeBuilder::new(Config::default()).send_queue_capacity(64);
    /// # drop(builder);
    /// ```
    pub fn send_queue_capacity(mut self, datagrams: usize) -> Self {
        self.send_queue_capacity = datagrams.max(1);
        self
    }

    /// Bound on commands from the handles waiting for the driver (default 256, at least 1);
    /// beyond it the handles' calls wait.
    ///
    /// ```
    /// use pastry_smol::{Config, NodeBuilder};
    /// let builder = NodeBuilder::new(Config::default()).command_capacity(32);
    /// # drop(builder);
    /// ```
    pub fn command_capacity(mut self, commands: usize) -> Self {
        self.command_capacity = commands.max(1);
        self
    }

    /// How long [`PastryNode::join`] waits for the node to become active before it returns
    /// [`JoinError::Timeout`]. The default, `join_timeout × (join_attempts + 1)` of the
    /// configuration, outlasts the core's own attempts, so that a join the core gives up on
    /// reports [`JoinError::Failed`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use pastry_smol::{Config, NodeBuilder};
    /// let builder = NodeBuilder::new(Config::default()).join_timeout(Duration::from_secs(5));
    /// # drop(builder);
    /// ```
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = Some(timeout);
        self
    }

    /// How long [`PastryNode::shutdown`] lets the leave run before the driver stops anyway.
    /// The default, `rto_max × (max_retransmits + 2)` plus a second, outlasts the core's own
    /// bound on a leave.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pastry_smol::{Config, NodeBuilder};
    /// let builder = NodeBuilder::new(Config::default()).leave_timeout(Duration::from_secs(3));
    /// # drop(builder);
    /// ```
    pub fn leave_timeout(mut self, timeout: Duration) -> Self {
        self.leave_timeout = Some(timeout);
        self
    }

    /// Binds a UDP socket to `addr` and builds the node on it. Returns the handle and the
    /// [`Driver`], which must be spawned (or awaited) for the node to run.
    ///
    /// The node announces the socket's local address to other nodes, so bind a specific IP
    /// address (port 0 picks a free port), not the unspecified address.
    ///
    /// ```
    /// use pastry_smol::{Config, NodeBuilder};
    /// let (node, driver) = NodeBuilder::new(Config::default()).bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// assert_ne!(node.local_addr().port(), 0);
    /// smol::spawn(driver).detach();
    /// ```
    pub fn bind(self, addr: SocketAddr) -> Result<(PastryNode, Driver), BindError> {
        let socket = UdpSocket::bind(addr)?;
        self.with_socket(socket)
    }

    /// Builds the node on a socket bound elsewhere (for options std cannot set). The socket
    /// is switched to non-blocking mode.
    ///
    /// ```
    /// use std::net::UdpSocket;
    /// use pastry_smol::{Config, NodeBuilder};
    /// let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let port = socket.local_addr().unwrap().port();
    /// let (node, _driver) = NodeBuilder::new(Config::default()).with_socket(socket).unwrap();
    /// assert_eq!(node.local_addr().port(), port);
    /// ```
    pub fn with_socket(self, socket: UdpSocket) -> Result<(PastryNode, Driver), BindError> {
        let local = socket.local_addr()?;
        // A seed given and no id: the id follows from the seed, for reproducible tests. With
        // no seed, both are drawn apart, so that the id (public) tells nothing of the seed.
        let (seed, id) = match (self.seed, self.id) {
            (Some(seed), id) => (seed, id.unwrap_or_else(|| id_from_seed(seed))),
            (None, Some(id)) => (u64::from_le_bytes(random()?), id),
            (None, None) => (u64::from_le_bytes(random()?), Id::from_bytes(random()?)),
        };
        let join_timeout = self.join_timeout.unwrap_or_else(|| {
            self.config.join_timeout * (u32::from(self.config.join_attempts) + 1)
        });
        let leave_timeout = self.leave_timeout.unwrap_or_else(|| {
            self.config.rto_max * (u32::from(self.config.max_retransmits) + 2)
                + Duration::from_secs(1)
        });
        let clock = Clock::new();
        let mut node = Node::new(self.config, id, local, seed, clock.now())?;
        // What other nodes must not guess is keyed by fresh randomness, never by the seed.
        node.set_secret(random()?);
        for (app_id, app) in self.apps {
            node.register(app_id, app)
                .map_err(|_| BindError::DuplicateApp(app_id))?;
        }
        let socket = Async::new(socket)?;
        let (cmd_tx, cmd_rx) = async_channel::bounded(self.command_capacity);
        let (ev_tx, ev_rx) = async_channel::bounded(self.event_capacity);
        let stats = Arc::new(SharedStats::default());
        let handle = PastryNode {
            commands: cmd_tx,
            events: ev_rx,
            local: NodeHandle::new(id, local),
            stats: stats.clone(),
            join_timeout,
        };
        let driver = Driver::new(
            socket,
            node,
            clock,
            cmd_rx,
            ev_tx,
            stats,
            Settings {
                send_queue_capacity: self.send_queue_capacity,
                leave_timeout,
            },
        );
        Ok((handle, driver))
    }
}

/// Bytes from the operating system's random source.
fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform id derived from a seed (distinct from the core's own use of the seed).
fn id_from_seed(seed: u64) -> Id {
    let mut s = seed ^ 0x6964_5f66_726f_6d5f;
    let hi = splitmix(&mut s);
    let lo = splitmix(&mut s);
    Id::new((u128::from(hi) << 64) | u128::from(lo))
}

/// A handle on a running node: cheap to clone, usable from any task or thread. Every call
/// that needs the node goes through its [`Driver`], which must be running.
///
/// When the last handle is dropped, the driver leaves the ring (as [`shutdown`](Self::shutdown)
/// does) and stops.
///
/// ```
/// use pastry_smol::{Config, Id, PastryNode};
/// smol::block_on(async {
///     let config = Config::default();
///     let (a, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), config.clone()).unwrap();
///     smol::spawn(driver).detach();
///     a.bootstrap().await.unwrap();
///
///     let (b, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
///     smol::spawn(driver).detach();
///     b.join(a.local_addr()).await.unwrap();
///
///     // The root of a's id is a.
///     let (root, _hops) = b.lookup(a.id()).await.unwrap();
///     assert_eq!(root, a.local().clone());
///     b.shutdown().await.unwrap();
///     a.shutdown().await.unwrap();
/// });
/// ```
#[derive(Clone)]
pub struct PastryNode {
    commands: Sender<Command>,
    events: Receiver<Event<SocketAddr>>,
    local: NodeHandle<SocketAddr>,
    stats: Arc<SharedStats>,
    join_timeout: Duration,
}

impl fmt::Debug for PastryNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PastryNode")
            .field("local", &self.local)
            .field("running", &!self.commands.is_closed())
            .finish()
    }
}

impl PastryNode {
    /// Binds a node with `config` to `addr`, with the defaults of [`NodeBuilder`].
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    /// smol::spawn(driver).detach();
    /// # drop(node);
    /// ```
    pub fn bind(addr: SocketAddr, config: Config) -> Result<(PastryNode, Driver), BindError> {
        NodeBuilder::new(config).bind(addr)
    }

    /// The socket's local address, which is the node's address in the overlay.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// let (node, _driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    /// assert!(node.local_addr().ip().is_loopback());
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local.addr
    }

    /// The node's id.
    ///
    /// ```
    /// use pastry_smol::{Config, Id, NodeBuilder};
    /// let (node, _driver) = NodeBuilder::new(Config::default()).id(Id::new(3))
    ///     .bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// assert_eq!(node.id(), Id::new(3));
    /// ```
    pub fn id(&self) -> Id {
        self.local.id
    }

    /// The node's handle as other nodes know it: id and address.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// let (node, _driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    /// assert_eq!(node.local().addr, node.local_addr());
    /// ```
    pub fn local(&self) -> &NodeHandle<SocketAddr> {
        &self.local
    }

    /// Sends a command and waits for its reply.
    async fn request<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, Stopped> {
        let (tx, rx) = async_channel::bounded(1);
        self.commands.send(make(tx)).await.map_err(|_| Stopped)?;
        rx.recv().await.map_err(|_| Stopped)
    }

    /// Starts a new ring with this node as its only member; it is active at once.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     assert!(node.is_active().await.unwrap());
    /// });
    /// ```
    pub async fn bootstrap(&self) -> Result<(), JoinError> {
        self.request(Command::Bootstrap).await?
    }

    /// Joins the ring that the node at `bootstrap` belongs to, and resolves once this node is
    /// active (its leaf set is confirmed). Fails with [`JoinError::Failed`] when the core
    /// gives up, or [`JoinError::Timeout`] after the builder's
    /// [`join_timeout`](NodeBuilder::join_timeout). If a join is already under way (after a
    /// time-out), waits for that one.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// smol::block_on(async {
    ///     let bind = || PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     let ((a, da), (b, db)) = (bind(), bind());
    ///     smol::spawn(da).detach();
    ///     smol::spawn(db).detach();
    ///     a.bootstrap().await.unwrap();
    ///     b.join(a.local_addr()).await.unwrap();
    ///     assert_eq!(b.leaf_set().await.unwrap().len(), 1);
    /// });
    /// ```
    pub async fn join(&self, bootstrap: SocketAddr) -> Result<(), JoinError> {
        self.join_within(bootstrap, self.join_timeout).await
    }

    /// [`join`](Self::join) with a time limit of its own.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pastry_smol::{Config, JoinError, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     // Nothing answers there (the discard port).
    ///     let r = node.join_within("127.0.0.1:9".parse().unwrap(), Duration::from_millis(50)).await;
    ///     assert_eq!(r, Err(JoinError::Timeout));
    /// });
    /// ```
    pub async fn join_within(
        &self,
        bootstrap: SocketAddr,
        timeout: Duration,
    ) -> Result<(), JoinError> {
        let join = async {
            match self.request(|r| Command::Join(bootstrap, r)).await {
                Ok(r) => r,
                Err(Stopped) => Err(JoinError::Stopped),
            }
        };
        let late = async {
            Timer::after(timeout).await;
            Err(JoinError::Timeout)
        };
        future::or(join, late).await
    }

    /// Routes `payload` for application `app` to the live node whose id is numerically
    /// closest to `key`. Returns once the node took the message (not when it arrives): the
    /// root reports it as [`Event::Deliver`](pastry_core::Event::Deliver) on its event
    /// stream, or to the application registered for `app`. While the node is still joining,
    /// the message waits at the node.
    ///
    /// ```
    /// use pastry_smol::{Config, Id, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     let id = node.route(Id::new(5), 1, b"hello".to_vec()).await.unwrap();
    ///     assert_eq!(id.origin, node.id());
    /// });
    /// ```
    pub async fn route(
        &self,
        key: Id,
        app: u16,
        payload: Vec<u8>,
    ) -> Result<MessageId, RouteError> {
        self.request(|reply| Command::Route {
            key,
            app,
            payload,
            reply,
        })
        .await?
    }

    /// Sends `payload` for application `app` straight to `to` (acknowledged and
    /// retransmitted, not routed); [`Event::SendFailed`](pastry_core::Event::SendFailed)
    /// reports a destination that never answers.
    ///
    /// ```
    /// use pastry_smol::{Config, Event, PastryNode};
    /// smol::block_on(async {
    ///     let bind = || PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     let ((a, da), (b, db)) = (bind(), bind());
    ///     smol::spawn(da).detach();
    ///     smol::spawn(db).detach();
    ///     a.bootstrap().await.unwrap();
    ///     b.join(a.local_addr()).await.unwrap();
    ///     let events = a.events();
    ///     b.send_direct(a.local().clone(), 2, b"psst".to_vec()).await.unwrap();
    ///     loop {
    ///         if let Some(Event::Direct { payload, .. }) = events.recv().await {
    ///             assert_eq!(payload, b"psst");
    ///             break;
    ///         }
    ///     }
    /// });
    /// ```
    pub async fn send_direct(
        &self,
        to: NodeHandle<SocketAddr>,
        app: u16,
        payload: Vec<u8>,
    ) -> Result<MessageId, RouteError> {
        self.request(|reply| Command::Direct {
            to,
            app,
            payload,
            reply,
        })
        .await?
    }

    /// Finds the root of `key`, the live node numerically closest to it, and the overlay
    /// hops the request took. The core bounds the wait (`lookup_timeout` ×
    /// (`lookup_retries` + 1)) and then reports [`LookupError::Failed`].
    ///
    /// ```
    /// use pastry_smol::{Config, Id, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     let (root, hops) = node.lookup(Id::new(77)).await.unwrap();
    ///     assert_eq!((root.id, hops), (node.id(), 0)); // alone, it is the root of every key
    /// });
    /// ```
    pub async fn lookup(&self, key: Id) -> Result<(NodeHandle<SocketAddr>, u8), LookupError> {
        self.request(|reply| Command::Lookup { key, reply }).await?
    }

    /// The node's events (deliveries, leaf-set changes, route failures...); see [`Events`]
    /// for what it carries and its bound (oldest events are dropped when nobody reads).
    ///
    /// ```
    /// use pastry_smol::{Config, Event, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     let events = node.events();
    ///     node.bootstrap().await.unwrap();
    ///     assert_eq!(events.recv().await, Some(Event::Active));
    /// });
    /// ```
    pub fn events(&self) -> Events {
        Events::new(self.events.clone())
    }

    /// Runs `f` on the core node, on the driver's task, and returns its result: read-only
    /// access to everything the core exposes (replica sets, ranges, memory...). The node
    /// waits while `f` runs, so `f` must be quick; a panic in `f` stops the driver.
    ///
    /// ```
    /// use pastry_smol::{Config, Id, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     let replicas = node.inspect(|n| n.replica_set(Id::new(9), 3)).await.unwrap();
    ///     assert_eq!(replicas, vec![node.local().clone()]);
    /// });
    /// ```
    pub async fn inspect<R, F>(&self, f: F) -> Result<R, Stopped>
    where
        F: FnOnce(&Node<SocketAddr>) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.request(|reply| {
            Command::Inspect(Box::new(move |node| {
                let _ = reply.try_send(f(node));
            }))
        })
        .await
    }

    /// Runs `f` on the driver's task with the application registered under `app_id` (with
    /// [`NodeBuilder::application`]), as its type `T`, and a context to act through; what it
    /// routes or sends goes out at once. This is how a registered application such as the
    /// replicated store (`pastry_core::store`) is driven. The inner error says that no
    /// application of that type is registered under `app_id`.
    ///
    /// ```
    /// use pastry_smol::pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// use pastry_smol::{Config, Id, NodeBuilder};
    /// smol::block_on(async {
    ///     const STORE: u16 = 1;
    ///     let store = Store::new(StoreConfig::default()).unwrap();
    ///     let (node, driver) = NodeBuilder::new(Config::default())
    ///         .application(STORE, Box::new(store))
    ///         .bind("127.0.0.1:0".parse().unwrap())
    ///         .unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     let key = Id::new(42);
    ///     node.with_app(STORE, move |s: &mut Store<_>, ctx| s.insert(ctx, key, 1, b"v".to_vec()))
    ///         .await
    ///         .unwrap()
    ///         .unwrap()
    ///         .unwrap();
    ///     // Alone, the node is the key's root: the insert is done by the time it returns.
    ///     let event = node.with_app(STORE, |s: &mut Store<_>, _| s.poll_event()).await.unwrap().unwrap();
    ///     assert!(matches!(event, Some(StoreEvent::Inserted { version: 1, .. })));
    /// });
    /// ```
    pub async fn with_app<T, R, F>(
        &self,
        app_id: u16,
        f: F,
    ) -> Result<Result<R, NodeError>, Stopped>
    where
        T: Application<SocketAddr>,
        F: FnOnce(&mut T, &mut pastry_core::Context<'_, SocketAddr>) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.request(|reply| {
            Command::Act(Box::new(move |node, now| {
                let _ = reply.try_send(node.with_app(now, app_id, f));
            }))
        })
        .await
    }

    /// A snapshot of the leaf set.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     let leaf = node.leaf_set().await.unwrap();
    ///     assert!(leaf.is_empty());
    ///     let members: Vec<_> = leaf.members().map(|p| p.handle.clone()).collect();
    ///     assert!(members.is_empty());
    /// });
    /// ```
    pub async fn leaf_set(&self) -> Result<LeafSet<SocketAddr>, Stopped> {
        self.inspect(|n| n.leaf_set().clone()).await
    }

    /// A snapshot of the routing table.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     assert_eq!(node.routing_table().await.unwrap().len(), 0);
    /// });
    /// ```
    pub async fn routing_table(&self) -> Result<RoutingTable<SocketAddr>, Stopped> {
        self.inspect(|n| n.routing_table().clone()).await
    }

    /// The core's running totals.
    ///
    /// ```
    /// use pastry_smol::{Config, Id, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     node.bootstrap().await.unwrap();
    ///     node.route(Id::new(1), 0, vec![]).await.unwrap();
    ///     assert_eq!(node.counters().await.unwrap().delivered, 1);
    /// });
    /// ```
    pub async fn counters(&self) -> Result<Counters, Stopped> {
        self.inspect(|n| n.counters().clone()).await
    }

    /// Whether the node is active: a member of a ring that may deliver as a root.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     assert!(!node.is_active().await.unwrap());
    /// });
    /// ```
    pub async fn is_active(&self) -> Result<bool, Stopped> {
        self.inspect(|n| n.is_active()).await
    }

    /// The adapter's own totals: socket errors, back-pressure, dropped events. Readable
    /// without the driver, also after it stopped.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// let (node, _driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    /// assert_eq!(node.io_counters().send_errors, 0);
    /// ```
    pub fn io_counters(&self) -> IoCounters {
        self.stats.snapshot()
    }

    /// Whether the driver has stopped (the node shut down, or the driver was dropped).
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    /// assert!(!node.is_stopped());
    /// drop(driver);
    /// assert!(node.is_stopped());
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.commands.is_closed()
    }

    /// Leaves the ring gracefully and stops the driver: the core tells its leaf set (so that
    /// the neighbours take over this node's keys at once) and reports
    /// [`Event::Left`](pastry_core::Event::Left); then what is still queued is sent and the
    /// driver completes. Pending joins and lookups fail with `Stopped`. Returns
    /// [`ShutdownError::Timeout`] if the leave outlasted the builder's
    /// [`leave_timeout`](NodeBuilder::leave_timeout). Calling it on a stopped node does
    /// nothing.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     let task = smol::spawn(driver);
    ///     node.bootstrap().await.unwrap();
    ///     node.shutdown().await.unwrap();
    ///     task.await; // the driver has completed
    ///     assert!(node.is_stopped());
    /// });
    /// ```
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        match self.request(Command::Shutdown).await {
            Ok(r) => r,
            Err(Stopped) => Ok(()),
        }
    }
}
