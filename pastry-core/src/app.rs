//! Applications on the overlay: the Common API upcalls and the context they act through.

use alloc::vec::Vec;
use core::any::Any;
use core::time::Duration;

use crate::node::{AppAction, Core};
use crate::{Address, Id, Instant, LeafSet, NodeHandle, RouteError, RoutingTable, SendFailure};

/// Names a routed or direct message: the originating node's id and its sequence number.
/// ```
/// use pastry_core::{Config, Id, Instant, Node};
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// node.bootstrap(Instant::ZERO).unwrap();
/// let id = node.route(Instant::ZERO, Id::new(9), 0, vec![]).unwrap();
/// assert_eq!(id.origin, Id::new(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// The node that sent the message first.
    pub origin: Id,
    /// The origin's counter.
    pub seq: u32,
}

/// A routed application message as applications see it.
/// ```
/// use pastry_core::{Config, Event, Id, Instant, Node};
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// node.bootstrap(Instant::ZERO).unwrap();
/// node.route(Instant::ZERO, Id::new(9), 3, b"x".to_vec()).unwrap();
/// let m = std::iter::from_fn(|| node.poll_event())
///     .find_map(|e| if let Event::Deliver(m) = e { Some(m) } else { None })
///     .unwrap();
/// assert_eq!((m.key, m.app, m.hops, m.payload), (Id::new(9), 3, 0, b"x".to_vec()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMessage<A> {
    /// The message's id.
    pub id: MessageId,
    /// The node that routed it first.
    pub origin: NodeHandle<A>,
    /// The key it is routed to.
    pub key: Id,
    /// The application it belongs to.
    pub app: u16,
    /// Overlay hops taken so far.
    pub hops: u8,
    /// Application bytes; a forward upcall may rewrite them.
    pub payload: Vec<u8>,
}

/// What a forward upcall decides.
/// ```
/// use pastry_core::Forward;
/// let verdict = if b"spam".starts_with(b"sp") { Forward::Stop } else { Forward::Continue };
/// assert_eq!(verdict, Forward::Stop);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Send the message on to the (possibly changed) next hop.
    Continue,
    /// Stop the message here; it is neither forwarded nor delivered.
    Stop,
}

/// How a leaf-set membership changed.
/// ```
/// use pastry_core::{Config, Event, Id, Instant, LeafChange, Node};
/// // A node reports changes of its leaf set as events (and to applications' `update`).
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// node.bootstrap(Instant::ZERO).unwrap();
/// let changes: Vec<LeafChange> = std::iter::from_fn(|| node.poll_event())
///     .filter_map(|e| if let Event::LeafSet { change, .. } = e { Some(change) } else { None })
///     .collect();
/// assert!(changes.is_empty(), "alone, nobody joined yet");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeafChange {
    /// The node entered the leaf set (it joined, or repair found it).
    Joined,
    /// The node was declared dead after failing to answer probes.
    Failed,
    /// The node announced that it is leaving.
    Left,
    /// The node came back after being declared dead or gone.
    Recovered,
    /// Closer nodes pushed the node out of the leaf set; it is alive.
    Displaced,
}

/// An application sharing a node, called synchronously by the node (the Common API of
/// structured overlays: deliver, forward, update).
///
/// Messages routed or sent directly under the application id an application was registered
/// with reach it; the node still owns all I/O: whatever the application does through its
/// [`Context`] becomes transmits and timers of the node.
///
/// `forward` runs at every node that forwards the message (the origin included, the root
/// excluded) before the message leaves, so an application can read it, rewrite its payload,
/// send it elsewhere, or stop it. This is what caching along routes and multicast trees need.
///
/// Applications are `'static` ([`Any`]), so that [`crate::Node::with_app`] can hand a
/// registered application back to its owner under its concrete type.
///
/// ```
/// use pastry_core::{Application, Context, Forward, NodeHandle, RouteMessage};
/// use core::net::SocketAddr;
///
/// /// Counts the messages that pass through and stops those with an empty payload.
/// struct Tally { seen: u32 }
///
/// impl Application<SocketAddr> for Tally {
///     fn deliver(&mut self, _ctx: &mut Context<'_, SocketAddr>, msg: RouteMessage<SocketAddr>) {
///         self.seen += 1;
///         let _ = msg.payload;
///     }
///     fn forward(
///         &mut self,
///         _ctx: &mut Context<'_, SocketAddr>,
///         msg: &mut RouteMessage<SocketAddr>,
///         _next_hop: &mut NodeHandle<SocketAddr>,
///     ) -> Forward {
///         self.seen += 1;
///         if msg.payload.is_empty() { Forward::Stop } else { Forward::Continue }
///     }
/// }
/// ```
pub trait Application<A: Address>: Send + Any {
    /// The message reached its root: this node is the numerically closest live node to its
    /// key.
    fn deliver(&mut self, ctx: &mut Context<'_, A>, msg: RouteMessage<A>);

    /// The message is about to be forwarded to `next_hop`. Change `msg.payload` or
    /// `next_hop`, or return [`Forward::Stop`]. Setting `next_hop` to this node delivers the
    /// message here. The default forwards unchanged.
    fn forward(
        &mut self,
        ctx: &mut Context<'_, A>,
        msg: &mut RouteMessage<A>,
        next_hop: &mut NodeHandle<A>,
    ) -> Forward {
        let _ = (ctx, msg, next_hop);
        Forward::Continue
    }

    /// A node joined, failed, left, recovered or was displaced in this node's leaf set.
    fn update(&mut self, ctx: &mut Context<'_, A>, node: &NodeHandle<A>, change: LeafChange) {
        let _ = (ctx, node, change);
    }

    /// A message sent straight to this node with [`Context::send_direct`] or
    /// [`crate::Node::send_direct`].
    fn direct(&mut self, ctx: &mut Context<'_, A>, from: &NodeHandle<A>, payload: Vec<u8>) {
        let _ = (ctx, from, payload);
    }

    /// A timer armed with [`Context::set_timer`] fired.
    fn timer(&mut self, ctx: &mut Context<'_, A>, token: u64) {
        let _ = (ctx, token);
    }

    /// A direct message sent under this application's id ([`Context::send_direct`], or
    /// [`crate::Node::send_direct`] with this id) did not reach `to`, for the reason `why`:
    /// only [`SendFailure::Unacknowledged`] says `to` is probably gone. The owner sees the
    /// same failure as [`crate::Event::SendFailed`].
    ///
    /// ```
    /// use pastry_core::{Application, Context, MessageId, NodeHandle, RouteMessage, SendFailure};
    /// /// Forgets peers that stop acknowledging.
    /// struct Peers(Vec<NodeHandle<u32>>);
    /// impl Application<u32> for Peers {
    ///     fn deliver(&mut self, _: &mut Context<'_, u32>, _: RouteMessage<u32>) {}
    ///     fn send_failed(&mut self, _: &mut Context<'_, u32>, _: MessageId, to: &NodeHandle<u32>, why: SendFailure) {
    ///         if why == SendFailure::Unacknowledged {
    ///             self.0.retain(|p| p != to);
    ///         }
    ///     }
    /// }
    /// ```
    fn send_failed(
        &mut self,
        ctx: &mut Context<'_, A>,
        id: MessageId,
        to: &NodeHandle<A>,
        why: SendFailure,
    ) {
        let _ = (ctx, id, to, why);
    }
}

/// What an application can see and do during an upcall.
///
/// Sends and timers requested here are carried out by the node right after the upcall
/// returns, so an upcall never re-enters another.
/// ```
/// use core::time::Duration;
/// use pastry_core::{Application, Context, Id, RouteMessage};
///
/// /// Answers every message with an acknowledgement routed to the sender's id, and
/// /// re-announces itself every minute.
/// struct Echo;
///
/// impl Application<u32> for Echo {
///     fn deliver(&mut self, ctx: &mut Context<'_, u32>, msg: RouteMessage<u32>) {
///         if msg.payload != b"ack" {
///             let _ = ctx.route(msg.origin.id, b"ack".to_vec());
///         }
///     }
///     fn timer(&mut self, ctx: &mut Context<'_, u32>, _token: u64) {
///         let own = ctx.local().id;
///         let _ = ctx.route(own, b"hello".to_vec());
///         ctx.set_timer(Duration::from_secs(60), 0);
///     }
/// }
/// ```
pub struct Context<'a, A: Address> {
    pub(crate) core: &'a mut Core<A>,
    pub(crate) app: u16,
    pub(crate) slot: usize,
    pub(crate) now: Instant,
}

impl<A: Address> Context<'_, A> {
    /// The time of the input being processed.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The largest payload [`Context::route`] and [`Context::send_direct`] accept.
    ///
    /// ```
    /// use pastry_core::{Application, Config, Context, Id, Instant, Node, RouteMessage};
    /// struct Sizer(usize);
    /// impl Application<u32> for Sizer {
    ///     fn deliver(&mut self, _: &mut Context<'_, u32>, _: RouteMessage<u32>) {}
    /// }
    /// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// node.register(1, Box::new(Sizer(0))).unwrap();
    /// let max = node.with_app(Instant::ZERO, 1, |_: &mut Sizer, ctx| ctx.max_payload()).unwrap();
    /// assert_eq!(max, node.max_payload());
    /// ```
    pub fn max_payload(&self) -> usize {
        self.core.max_payload
    }

    /// A random 32-bit number that nobody without this node's secret
    /// ([`crate::Node::set_secret`]) can predict: for request ids that answers must echo.
    ///
    /// ```
    /// use pastry_core::{Application, Config, Context, Id, Instant, Node, RouteMessage};
    /// struct Quiet;
    /// impl Application<u32> for Quiet {
    ///     fn deliver(&mut self, _: &mut Context<'_, u32>, _: RouteMessage<u32>) {}
    /// }
    /// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// node.set_secret([7; 16]);
    /// node.register(1, Box::new(Quiet)).unwrap();
    /// let (a, b) = node
    ///     .with_app(Instant::ZERO, 1, |_: &mut Quiet, ctx| (ctx.unguessable(), ctx.unguessable()))
    ///     .unwrap();
    /// assert_ne!(a, b);
    /// ```
    pub fn unguessable(&mut self) -> u32 {
        self.core.unguessable()
    }

    /// This node's handle.
    pub fn local(&self) -> &NodeHandle<A> {
        &self.core.me
    }

    /// The application id this context acts for.
    pub fn app_id(&self) -> u16 {
        self.app
    }

    /// Whether this node is active (its leaf set is confirmed).
    pub fn is_active(&self) -> bool {
        self.core.is_active()
    }

    /// This node's leaf set.
    pub fn leaf_set(&self) -> &LeafSet<A> {
        &self.core.leaf
    }

    /// This node's routing table.
    pub fn routing_table(&self) -> &RoutingTable<A> {
        &self.core.table
    }

    /// The `k` nodes closest to `key` that this node knows (members of its leaf set and
    /// itself), closest first; `k` is capped at L/2 + 1.
    pub fn replica_set(&self, key: Id, k: usize) -> Vec<NodeHandle<A>> {
        self.core.leaf.replica_set(key, &self.core.me, k)
    }

    /// Routes `payload` to the node numerically closest to `key`, under this application's id.
    pub fn route(&mut self, key: Id, payload: Vec<u8>) -> Result<MessageId, RouteError> {
        self.core.check_payload(payload.len())?;
        let id = self.core.next_message_id();
        self.core.app_actions.push_back(AppAction::Route {
            id,
            app: self.app,
            key,
            payload,
        });
        Ok(id)
    }

    /// Sends `payload` straight to `to` (acknowledged and retransmitted, not routed).
    pub fn send_direct(
        &mut self,
        to: NodeHandle<A>,
        payload: Vec<u8>,
    ) -> Result<MessageId, RouteError> {
        self.core.check_payload(payload.len())?;
        let id = self.core.next_message_id();
        self.core.app_actions.push_back(AppAction::Direct {
            id,
            app: self.app,
            to,
            payload,
        });
        Ok(id)
    }

    /// Arms a timer: [`Application::timer`] is called with `token` after `delay`.
    pub fn set_timer(&mut self, delay: Duration, token: u64) {
        let at = self.now + delay;
        self.core.schedule_app_timer(at, self.slot, token);
    }
}
