//! Multicast groups on the overlay: a tree per group, built by reverse-path forwarding, as
//! an [`Application`].
//!
//! A group is named by an [`Id`]; the live node numerically closest to it is the group's
//! *root*. The tree is the union of the overlay routes from the members to the root:
//!
//! - **Subscribe** routes a [`MulticastMsg::Join`] to the group's id. The first node on the
//!   way that is already in the tree adopts the sender as a child and stops the join; a node
//!   not yet in the tree adopts it too, and sends a join of its own. So each join climbs only
//!   until it meets the tree, and a node forwards for as many members as route through it,
//!   without being a member itself. A node with [`MulticastConfig::max_children`] children
//!   passes a join down to one of them instead, so a crowded branch spreads downwards
//!   rather than piling onto the root.
//! - **Publish** routes the payload to the root, which sends it to its children, each of which
//!   sends it to theirs: a message crosses each tree edge once, direct and acknowledged.
//!   Nodes remember the last messages of each group ([`MulticastConfig::recent_messages`]),
//!   so a message that reaches a node twice while the tree is repaired is passed on once.
//! - **Repair.** A child tells each parent every [`MulticastConfig::refresh_period`] that it
//!   is still there ([`MulticastMsg::Refresh`], one message per parent for all groups). A
//!   child whose refresh goes unacknowledged ([`Application::send_failed`]), whose parent
//!   fails or leaves its leaf set, or whose parent says the edge is gone
//!   ([`MulticastMsg::Leave`]) joins again at once, keeping its own subtree. A parent drops a
//!   child that leaves, whose messages go unacknowledged, or that has not refreshed for
//!   [`MulticastConfig::child_timeout`]. A root that sees a node closer to the group's id
//!   join its leaf set joins the tree under it, so the tree follows the root as nodes join
//!   and fail.
//! - **Realignment.** Every [`MulticastConfig::realign_period`] a node with a parent sends
//!   its join again, keeping the parent until the answer, and moves to the node that adopts
//!   it if that is another: routes change as nodes come and go, and a tree that kept every
//!   old edge (a former root above the new one, a branch grafted onto a deep node during a
//!   repair) would grow deeper than the routes.
//! - **Unsubscribe** leaves the tree once the node has no children; a forwarder with no
//!   children left does the same, so branches nobody listens on are pruned.
//!
//! A parent tells its children its ancestors up to the root when they are adopted and
//! whenever they change ([`MulticastMsg::Adopted`], [`MulticastMsg::Path`]). A node never
//! adopts one of its ancestors, nor keeps a parent whose ancestors include itself: a repair
//! that would close a loop is refused, and a loop made of stale views is found as the paths
//! go round it, and broken by a new join.
//!
//! Delivery is best effort, as in the systems this follows: a message published while a
//! branch is being repaired does not reach that branch. Applications that need every message
//! number their payloads and fetch gaps themselves (from the store, say).
//!
//! Trust: data and paths are taken only from the node this node chose as its parent,
//! adoptions only with the unpredictable number its own join carried
//! ([`Context::unguessable`]), refreshes and leaves only from the address of the child or
//! parent they name. A child is known at the address it was adopted at: the origin of a
//! routed join is only a claim, so a join naming a known child's id from elsewhere is not
//! taken (a child that restarts at a new address is taken again once the old entry times
//! out). A quarter of [`MulticastConfig::max_groups`] is kept for the owner's own
//! subscriptions, so joins passing through cannot use them all. Only an unacknowledged
//! message ([`crate::SendFailure::Unacknowledged`]) counts against a parent or child; a full
//! local queue does not.
//!
//! What multicast does not defend against: like the overlay, a group is open. Anyone can
//! join any group, fill the forwarding share of a node's groups with joins of its own, or
//! publish to any group, and the root passes every publish on to every member, as fast as it
//! arrives. [`MulticastEvent::Received::publisher`] is the origin the publish claimed, and a
//! message replayed after it left the nodes' memory of recent messages is passed on again. A
//! deployment that needs closed groups or authors signs and numbers its payloads and checks
//! them on receipt. Everything is bounded ([`MulticastConfig`]), and bytes that do not decode
//! are counted ([`MulticastStats::malformed`]) and change nothing.
//!
//! Before a node leaves the overlay gracefully, [`Multicast::shutdown`] tells its parents and
//! children, which then join again at once instead of finding it gone.
//!
//! ```
//! use pastry_core::multicast::{Multicast, MulticastConfig, MulticastEvent};
//! use pastry_core::{Config, Id, Instant, Node};
//!
//! const MULTICAST: u16 = 2;
//! let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
//! let app = Multicast::<u32>::new(MulticastConfig::default()).unwrap();
//! node.register(MULTICAST, Box::new(app)).unwrap();
//! node.bootstrap(Instant::ZERO).unwrap();
//!
//! // Alone in its ring, the node is the root of every group.
//! let group = Id::new(42);
//! let now = Instant::ZERO;
//! node.with_app(now, MULTICAST, |m: &mut Multicast<u32>, ctx| m.subscribe(ctx, group))
//!     .unwrap()
//!     .unwrap();
//! node.with_app(now, MULTICAST, |m: &mut Multicast<u32>, ctx| m.publish(ctx, group, b"hi".to_vec()))
//!     .unwrap()
//!     .unwrap();
//! let events: Vec<MulticastEvent> = node
//!     .with_app(now, MULTICAST, |m: &mut Multicast<u32>, _| std::iter::from_fn(|| m.poll_event()).collect())
//!     .unwrap();
//! assert_eq!(events[0], MulticastEvent::Attached { group });
//! assert!(matches!(&events[1], MulticastEvent::Received { payload, .. } if payload == b"hi"));
//! ```

mod codec;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

pub use codec::{MAX_GROUPS, MAX_PATH, MulticastMsg, WIRE_VERSION};

use crate::{Address, Application, Context, Forward, Id, Instant, LeafChange, MessageId};
use crate::{NodeHandle, RouteError, RouteMessage, SendFailure};

/// Limits and periods of a [`Multicast`]. Start from [`MulticastConfig::default`] and change
/// fields.
///
/// ```
/// use pastry_core::multicast::MulticastConfig;
/// let mut config = MulticastConfig::default();
/// config.max_children = 16;
/// assert!(config.validate().is_ok());
/// config.child_timeout = config.refresh_period;
/// assert!(config.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MulticastConfig {
    /// Most groups this node is in the tree of, as a member or a forwarder. Three quarters
    /// of them may be forwarded for others; beyond that a join for another group passes
    /// through, and the last quarter is kept for the owner's subscriptions.
    pub max_groups: usize,
    /// Most children per group. A join that finds the node full passes through to the next
    /// node on its route; the root, which has no next node, takes up to four times as many.
    pub max_children: usize,
    /// How often a child tells its parents it is still there. The acknowledgements of these
    /// refreshes are how a child finds its parent gone: a shorter period repairs a branch
    /// sooner, for more messages.
    pub refresh_period: Duration,
    /// How long a parent keeps a child it has not heard from. Longer than
    /// [`MulticastConfig::refresh_period`].
    pub child_timeout: Duration,
    /// How long a join waits to be adopted before it is sent again.
    pub join_timeout: Duration,
    /// How often a node joins again along its current route while it has a parent, and
    /// moves to the node that adopts it: routes change as nodes come and go, and a tree
    /// that kept every old edge would grow deeper than the routes.
    pub realign_period: Duration,
    /// Messages remembered per group, to pass each on once.
    pub recent_messages: usize,
    /// Most events waiting for [`Multicast::poll_event`]; the oldest are dropped beyond it.
    pub max_events: usize,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig {
            max_groups: 1024,
            max_children: 64,
            refresh_period: Duration::from_secs(20),
            child_timeout: Duration::from_secs(50),
            join_timeout: Duration::from_secs(15),
            realign_period: Duration::from_secs(300),
            recent_messages: 64,
            max_events: 4096,
        }
    }
}

/// A [`MulticastConfig`] that [`MulticastConfig::validate`] refused.
///
/// ```
/// use pastry_core::multicast::{MulticastConfig, MulticastConfigError};
/// let mut c = MulticastConfig::default();
/// c.max_children = 0;
/// assert_eq!(c.validate(), Err(MulticastConfigError::Zero("max_children")));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MulticastConfigError {
    /// A field that must be positive is zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// A duration is longer than [`crate::MAX_DURATION`] (a day).
    #[error("{0} is longer than a day")]
    TooLong(&'static str),
    /// The child timeout is not longer than the refresh period.
    #[error("child_timeout must be longer than refresh_period")]
    TimeoutTooShort,
}

impl MulticastConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), MulticastConfigError> {
        let zero = [
            ("max_groups", self.max_groups == 0),
            ("max_children", self.max_children == 0),
            ("refresh_period", self.refresh_period.is_zero()),
            ("join_timeout", self.join_timeout.is_zero()),
            ("realign_period", self.realign_period.is_zero()),
            ("recent_messages", self.recent_messages == 0),
            ("max_events", self.max_events == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(MulticastConfigError::Zero(name));
        }
        let long = [
            ("refresh_period", self.refresh_period),
            ("child_timeout", self.child_timeout),
            ("join_timeout", self.join_timeout),
            ("realign_period", self.realign_period),
        ];
        if let Some((name, _)) = long.iter().find(|(_, d)| *d > crate::MAX_DURATION) {
            return Err(MulticastConfigError::TooLong(name));
        }
        if self.child_timeout <= self.refresh_period {
            return Err(MulticastConfigError::TimeoutTooShort);
        }
        Ok(())
    }
}

/// What a [`Multicast`] reports to its owner ([`Multicast::poll_event`]).
///
/// ```
/// use pastry_core::multicast::MulticastEvent;
/// use pastry_core::Id;
/// let e = MulticastEvent::Attached { group: Id::new(1) };
/// assert_ne!(e, MulticastEvent::Attached { group: Id::new(2) });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MulticastEvent {
    /// A message published to a group this node is a member of.
    Received {
        /// The group.
        group: Id,
        /// The node that published it, as the publish claimed (routed messages carry their
        /// origin unauthenticated).
        publisher: Id,
        /// The publisher's number for it: the [`MessageId::seq`] that
        /// [`Multicast::publish`] returned there.
        seq: u32,
        /// Application bytes.
        payload: Vec<u8>,
    },
    /// This member's place in the group's tree is settled (again): it has a parent, or it is
    /// the root. Messages published from now on reach it.
    Attached {
        /// The group.
        group: Id,
    },
}

/// Why a call of [`Multicast`] failed.
///
/// ```
/// use pastry_core::multicast::MulticastError;
/// let e = MulticastError::TooLarge { len: 5000, max: 1100 };
/// assert!(e.to_string().contains("5000"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MulticastError {
    /// The payload does not fit in one message.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The most a payload may have.
        max: usize,
    },
    /// The node is already in [`MulticastConfig::max_groups`] trees.
    #[error("too many groups")]
    TooManyGroups,
    /// [`Multicast::shutdown`] was called.
    #[error("multicast was shut down")]
    ShutDown,
    /// The core refused to route the message ([`Context::route`]).
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// Counters of a [`Multicast`].
/// ```
/// use pastry_core::multicast::MulticastStats;
/// assert_eq!(MulticastStats::default().received, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MulticastStats {
    /// Messages this node published.
    pub published: u64,
    /// Messages handed to the owner ([`MulticastEvent::Received`]).
    pub received: u64,
    /// Copies sent to children.
    pub forwarded: u64,
    /// Messages that reached this node again and were not passed on.
    pub duplicates: u64,
    /// Joins this node routed (first ones, retries, repairs and realignments).
    pub joins: u64,
    /// Refresh messages sent to parents.
    pub refreshes: u64,
    /// Joins after the parent failed, left or dropped this node, or a loop was found.
    pub repairs: u64,
    /// Parents changed for the node that adopted a join sent again along the current route.
    pub realigned: u64,
    /// Children adopted (or adopted again).
    pub adopted: u64,
    /// Children dropped: they left, failed or stopped refreshing.
    pub children_dropped: u64,
    /// Publishes that reached this node as the root of a group without a tree.
    pub no_tree: u64,
    /// Messages refused: from a node that is not this node's parent or child, with a wrong
    /// number, naming another group than their key, too large, or closing a loop.
    pub rejected: u64,
    /// Payloads that did not decode.
    pub malformed: u64,
    /// Events dropped because the owner did not poll them ([`MulticastConfig::max_events`]).
    pub events_dropped: u64,
}

/// Where a node's tree continues towards the root.
#[derive(Clone, Debug)]
enum Up<A> {
    /// This node is the root.
    Root,
    /// Adopted by `node`. `since` is when the node last joined along its current route;
    /// `realign` the number of a join sent again since, not yet answered.
    Parent {
        node: NodeHandle<A>,
        since: Instant,
        realign: Option<u32>,
    },
    /// A join with this number is on its way since `since`.
    Joining { nonce: u32, since: Instant },
}

#[derive(Clone, Debug)]
struct Child<A> {
    node: NodeHandle<A>,
    /// When it was adopted or last refreshed.
    heard: Instant,
}

#[derive(Clone, Debug)]
struct Group<A> {
    member: bool,
    up: Up<A>,
    /// The ancestors, root first, the parent last (at most [`MAX_PATH`], the nearest kept).
    path: Vec<Id>,
    children: Vec<Child<A>>,
    /// (publisher, seq) of the last messages passed on.
    recent: VecDeque<(Id, u32)>,
}

impl<A> Group<A> {
    fn new(member: bool, now: Instant) -> Self {
        Group {
            member,
            up: Up::Joining {
                nonce: 0,
                since: now,
            },
            path: Vec::new(),
            children: Vec::new(),
            recent: VecDeque::new(),
        }
    }

    fn is_parent(&self, h: &NodeHandle<A>) -> bool
    where
        A: PartialEq,
    {
        matches!(&self.up, Up::Parent { node, .. } if node == h)
    }
}

const TICK: u64 = 1;

/// Cuts a path (root first) to its last [`MAX_PATH`] ids, the ancestors nearest the node.
fn keep_nearest(path: &mut Vec<Id>) {
    let excess = path.len().saturating_sub(MAX_PATH);
    path.drain(..excess);
}

/// Whether a parent with these ancestors (itself last) would put this node in a loop: it is
/// among them, or the path is as long as a path can be told, which no tree of an overlay
/// reaches (routes take about `log_16 N` hops) but a loop does as its paths grow round it.
fn closes_loop(path: &[Id], me: Id) -> bool {
    path.contains(&me) || path.len() >= MAX_PATH
}

/// Multicast groups: trees of the nodes that joined them, fed from the root (see the
/// [module documentation](self)).
///
/// Besides subscribing and publishing, the owner can look at this node's place in each tree:
/// ```
/// use pastry_core::multicast::{Multicast, MulticastConfig};
/// use pastry_core::{Config, Id, Instant, Node};
///
/// const MULTICAST: u16 = 2;
/// let now = Instant::ZERO;
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, now).unwrap();
/// let app = Multicast::<u32>::new(MulticastConfig::default()).unwrap();
/// node.register(MULTICAST, Box::new(app)).unwrap();
/// node.bootstrap(now).unwrap();
/// let group = Id::new(42);
/// node.with_app(now, MULTICAST, |m: &mut Multicast<u32>, ctx| m.subscribe(ctx, group))
///     .unwrap()
///     .unwrap();
///
/// let m = node.app::<Multicast<u32>>(MULTICAST).unwrap();
/// assert!(m.is_member(group) && m.is_root(group)); // alone in its ring
/// assert_eq!((m.parent(group), m.children(group).count()), (None, 0));
/// assert_eq!(m.path_of(group), Some(&[][..]));
/// assert_eq!(m.groups().collect::<Vec<_>>(), vec![group]);
/// assert_eq!(m.stats().joins, 1);
/// m.check_invariants().unwrap();
///
/// // Before leaving the overlay: tell parents and children.
/// node.with_app(now, MULTICAST, |m: &mut Multicast<u32>, ctx| m.shutdown(ctx)).unwrap();
/// assert_eq!(node.app::<Multicast<u32>>(MULTICAST).unwrap().groups().count(), 0);
/// ```
pub struct Multicast<A: Address> {
    cfg: MulticastConfig,
    groups: BTreeMap<Id, Group<A>>,
    events: VecDeque<MulticastEvent>,
    stats: MulticastStats,
    armed: bool,
    /// Set by [`Multicast::shutdown`]: the node takes part in no tree any more.
    closed: bool,
}

impl<A: Address> Multicast<A> {
    /// A multicast application with no groups.
    ///
    /// ```
    /// use pastry_core::multicast::{Multicast, MulticastConfig};
    /// let m = Multicast::<u32>::new(MulticastConfig::default()).unwrap();
    /// assert_eq!(m.groups().count(), 0);
    /// ```
    pub fn new(cfg: MulticastConfig) -> Result<Self, MulticastConfigError> {
        cfg.validate()?;
        Ok(Multicast {
            cfg,
            groups: BTreeMap::new(),
            events: VecDeque::new(),
            stats: MulticastStats::default(),
            armed: false,
            closed: false,
        })
    }

    /// The largest payload [`Multicast::publish`] accepts on this node.
    pub fn max_payload(ctx: &Context<'_, A>) -> usize {
        ctx.max_payload().saturating_sub(codec::DATA_OVERHEAD)
    }

    /// Makes this node a member of `group`: messages published to it from the moment the
    /// node is attached ([`MulticastEvent::Attached`]) are delivered as
    /// [`MulticastEvent::Received`]. Subscribing again changes nothing. Fails with
    /// [`MulticastError::TooManyGroups`] when the node is in [`MulticastConfig::max_groups`]
    /// trees, and [`MulticastError::ShutDown`] after [`Multicast::shutdown`].
    pub fn subscribe(&mut self, ctx: &mut Context<'_, A>, group: Id) -> Result<(), MulticastError> {
        if self.closed {
            return Err(MulticastError::ShutDown);
        }
        self.arm(ctx);
        if let Some(g) = self.groups.get_mut(&group) {
            if !g.member {
                g.member = true;
                if !matches!(g.up, Up::Joining { .. }) {
                    self.push_event(MulticastEvent::Attached { group });
                }
            }
            return Ok(());
        }
        if self.groups.len() >= self.cfg.max_groups {
            return Err(MulticastError::TooManyGroups);
        }
        self.groups.insert(group, Group::new(true, ctx.now()));
        self.join(ctx, group)?;
        Ok(())
    }

    /// Ends this node's membership of `group`. The node stays in the tree as a forwarder
    /// while it has children, and leaves it when the last one goes.
    pub fn unsubscribe(&mut self, ctx: &mut Context<'_, A>, group: Id) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.member = false;
        }
        self.prune(ctx, group);
    }

    /// Leaves every group's tree at once, telling parents and children, so that children
    /// join again without waiting to find this node gone, and takes part in no tree from
    /// then on (joins pass through, subscriptions are refused). Call it a second or two
    /// before [`crate::Node::leave`]: a leave to a child whose address this node has not
    /// verified lately waits for that check, and leaving the overlay drops what still waits
    /// (that child then finds the node gone by its next refresh).
    pub fn shutdown(&mut self, ctx: &mut Context<'_, A>) {
        self.closed = true;
        let mut peers: BTreeMap<Id, (NodeHandle<A>, Vec<Id>)> = BTreeMap::new();
        for (group, g) in core::mem::take(&mut self.groups) {
            let parent = match g.up {
                Up::Parent { node, .. } => Some(node),
                _ => None,
            };
            for node in parent
                .into_iter()
                .chain(g.children.into_iter().map(|c| c.node))
            {
                peers
                    .entry(node.id)
                    .or_insert_with(|| (node, Vec::new()))
                    .1
                    .push(group);
            }
        }
        for (node, groups) in peers.values() {
            self.send_list(ctx, node, groups, true);
        }
    }

    /// Publishes `payload` to `group`: it is routed to the group's root, which sends it down
    /// the tree. The returned id's `seq` is what members see in
    /// [`MulticastEvent::Received::seq`]. A node need not be a member to publish.
    pub fn publish(
        &mut self,
        ctx: &mut Context<'_, A>,
        group: Id,
        payload: Vec<u8>,
    ) -> Result<MessageId, MulticastError> {
        self.arm(ctx);
        let max = Self::max_payload(ctx);
        if payload.len() > max {
            return Err(MulticastError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let id = ctx.route(group, MulticastMsg::Publish { group, payload }.encode())?;
        self.stats.published += 1;
        Ok(id)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<MulticastEvent> {
        self.events.pop_front()
    }

    /// The groups this node is in the tree of, as a member or a forwarder.
    pub fn groups(&self) -> impl Iterator<Item = Id> + '_ {
        self.groups.keys().copied()
    }

    /// Whether this node is a member of `group`.
    pub fn is_member(&self, group: Id) -> bool {
        self.groups.get(&group).is_some_and(|g| g.member)
    }

    /// Whether this node is the root of `group`'s tree.
    pub fn is_root(&self, group: Id) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|g| matches!(g.up, Up::Root))
    }

    /// This node's parent in `group`'s tree, if it has one.
    pub fn parent(&self, group: Id) -> Option<&NodeHandle<A>> {
        match &self.groups.get(&group)?.up {
            Up::Parent { node, .. } => Some(node),
            _ => None,
        }
    }

    /// This node's children in `group`'s tree.
    pub fn children(&self, group: Id) -> impl Iterator<Item = &NodeHandle<A>> + '_ {
        self.groups
            .get(&group)
            .into_iter()
            .flat_map(|g| g.children.iter().map(|c| &c.node))
    }

    /// This node's ancestors in `group`'s tree, from the root down to its parent (at most
    /// [`MAX_PATH`], the nearest kept), as its parent last told it.
    pub fn path_of(&self, group: Id) -> Option<&[Id]> {
        self.groups.get(&group).map(|g| g.path.as_slice())
    }

    /// The counters.
    pub fn stats(&self) -> &MulticastStats {
        &self.stats
    }

    /// Bytes of memory the groups take, about.
    pub fn memory_bytes(&self) -> usize {
        let per_group = core::mem::size_of::<(Id, Group<A>)>() + 16;
        self.groups
            .values()
            .map(|g| {
                per_group
                    + g.path.capacity() * 16
                    + g.children.capacity() * core::mem::size_of::<Child<A>>()
                    + g.recent.capacity() * core::mem::size_of::<(Id, u32)>()
            })
            .sum::<usize>()
            + self
                .events
                .iter()
                .map(|e| match e {
                    MulticastEvent::Received { payload, .. } => payload.capacity(),
                    MulticastEvent::Attached { .. } => 0,
                })
                .sum::<usize>()
    }

    /// Checks the bounds and the shape of the state; for tests and fuzzing.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        if self.groups.len() > self.cfg.max_groups {
            return Err("more groups than max_groups");
        }
        if self.events.len() > self.cfg.max_events {
            return Err("more events than max_events");
        }
        for g in self.groups.values() {
            if !g.member && g.children.is_empty() {
                return Err("a group with neither membership nor children is kept");
            }
            // Four times max_children at a root, and at a former root, which keeps the
            // children it took as the root.
            if g.children.len() > self.cfg.max_children.saturating_mul(4) {
                return Err("more children than four times max_children");
            }
            if g.path.len() > MAX_PATH {
                return Err("path longer than MAX_PATH");
            }
            if g.recent.len() > self.cfg.recent_messages {
                return Err("more recent messages than recent_messages");
            }
            for (i, c) in g.children.iter().enumerate() {
                if g.children[..i].iter().any(|o| o.node.id == c.node.id) {
                    return Err("a child counted twice");
                }
                if g.is_parent(&c.node) {
                    return Err("the parent is also a child");
                }
            }
            if matches!(g.up, Up::Root) && !g.path.is_empty() {
                return Err("a root with ancestors");
            }
        }
        Ok(())
    }

    /// Whether this node may enter another group's tree as a forwarder: a quarter of
    /// [`MulticastConfig::max_groups`] is kept for the owner's own subscriptions, so that
    /// joins passing through (anyone's) cannot use them all.
    fn room_to_forward(&self) -> bool {
        self.groups.len() < self.cfg.max_groups - self.cfg.max_groups.div_ceil(4)
    }

    fn arm(&mut self, ctx: &mut Context<'_, A>) {
        if self.armed {
            return;
        }
        self.armed = true;
        // Spread the nodes' rounds over the period by their ids.
        let period = self.cfg.refresh_period;
        let frac = (ctx.local().id.as_u128() >> 64) as u64 % 1024;
        ctx.set_timer(period * frac as u32 / 1024 + period / 2, TICK);
    }

    fn push_event(&mut self, e: MulticastEvent) {
        if self.events.len() >= self.cfg.max_events {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    fn send(&mut self, ctx: &mut Context<'_, A>, to: &NodeHandle<A>, msg: &MulticastMsg) {
        // A send that cannot start (the payload limit is checked on arrival) is repaired by
        // the refreshes and timeouts like a lost one.
        let _ = ctx.send_direct(to.clone(), msg.encode());
    }

    /// Sends `to` a [`MulticastMsg::Refresh`] (or, with `leave`, a [`MulticastMsg::Leave`])
    /// naming `groups`, in as many messages as they take; returns how many.
    fn send_list(
        &mut self,
        ctx: &mut Context<'_, A>,
        to: &NodeHandle<A>,
        groups: &[Id],
        leave: bool,
    ) -> usize {
        let per = codec::max_groups(ctx.max_payload());
        for chunk in groups.chunks(per) {
            let groups = chunk.to_vec();
            let msg = if leave {
                MulticastMsg::Leave { groups }
            } else {
                MulticastMsg::Refresh { groups }
            };
            self.send(ctx, to, &msg);
        }
        groups.len().div_ceil(per)
    }

    fn leave(&mut self, ctx: &mut Context<'_, A>, to: &NodeHandle<A>, group: Id) {
        self.send(
            ctx,
            to,
            &MulticastMsg::Leave {
                groups: vec![group],
            },
        );
    }

    /// Routes a new join for `group` (after a first subscription, a lost parent, a root
    /// that is no longer the root, or a join that was not answered).
    fn join(&mut self, ctx: &mut Context<'_, A>, group: Id) -> Result<(), RouteError> {
        let nonce = ctx.unguessable();
        let now = ctx.now();
        let Some(g) = self.groups.get_mut(&group) else {
            return Ok(());
        };
        g.up = Up::Joining { nonce, since: now };
        self.stats.joins += 1;
        ctx.route(group, MulticastMsg::Join { group, nonce }.encode())?;
        Ok(())
    }

    /// Joins again because the parent is gone or wrong; the subtree stays.
    fn repair(&mut self, ctx: &mut Context<'_, A>, group: Id) {
        self.stats.repairs += 1;
        // A join the core cannot route (this node is not active yet) is sent again after
        // the join timeout.
        let _ = self.join(ctx, group);
    }

    /// The path this node gives its children: its ancestors and itself.
    fn path_below(g: &Group<A>, me: Id) -> Vec<Id> {
        let mut p = Vec::with_capacity(g.path.len() + 1);
        p.extend_from_slice(&g.path);
        p.push(me);
        keep_nearest(&mut p);
        p
    }

    /// Sets the ancestors of this node in `group`; children hear of a change at once.
    fn set_path(&mut self, ctx: &mut Context<'_, A>, group: Id, mut path: Vec<Id>) {
        keep_nearest(&mut path);
        let me = ctx.local().id;
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if g.path == path {
            return;
        }
        g.path = path;
        let msg = MulticastMsg::Path {
            group,
            path: Self::path_below(g, me),
        };
        let children: Vec<NodeHandle<A>> = g.children.iter().map(|c| c.node.clone()).collect();
        for c in &children {
            self.send(ctx, c, &msg);
        }
    }

    /// This node is the group's root from now on (a join reached it as the key's root).
    fn become_root(&mut self, ctx: &mut Context<'_, A>, group: Id) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        let old = core::mem::replace(&mut g.up, Up::Root);
        let member = g.member;
        match old {
            Up::Root => return,
            Up::Parent { node, .. } => self.leave(ctx, &node, group),
            Up::Joining { .. } => {
                if member {
                    self.push_event(MulticastEvent::Attached { group });
                }
            }
        }
        self.set_path(ctx, group, Vec::new());
    }

    /// Takes `child` into `group`'s tree here, if the group has room (or the node has room
    /// for a new group) and `child` is not an ancestor. Returns whether it was adopted. `root`
    /// says the join reached this node as the group's root, which has nobody to pass a join
    /// on to and so takes up to four times [`MulticastConfig::max_children`].
    fn adopt(
        &mut self,
        ctx: &mut Context<'_, A>,
        group: Id,
        child: &NodeHandle<A>,
        nonce: u32,
        root: bool,
    ) -> bool {
        let me = ctx.local().id;
        let now = ctx.now();
        if child.id == me || self.closed {
            return false;
        }
        let new_group = !self.groups.contains_key(&group);
        if new_group {
            if !self.room_to_forward() {
                return false;
            }
            self.groups.insert(group, Group::new(false, now));
        }
        let Some(g) = self.groups.get_mut(&group) else {
            return false;
        };
        let known = g.children.iter().position(|c| c.node.id == child.id);
        let most = if root {
            self.cfg.max_children.saturating_mul(4)
        } else {
            self.cfg.max_children
        };
        // Adopting an ancestor (the parent included) would close a loop. A child is known at
        // the address it was adopted at: the origin of a routed join is only a claim, and
        // neither taking a new address from it nor sending to the claimed address as well
        // is safe (the core, finding another node there, would give up on the child's id).
        let refused = g.path.contains(&child.id)
            || g.is_parent(child)
            || known.is_some_and(|i| g.children[i].node != *child)
            || (known.is_none() && g.children.len() >= most);
        if refused {
            if new_group {
                self.groups.remove(&group);
            }
            return false;
        }
        match known {
            Some(i) => g.children[i].heard = now,
            None => g.children.push(Child {
                node: child.clone(),
                heard: now,
            }),
        }
        let path = Self::path_below(g, me);
        self.stats.adopted += 1;
        self.send(ctx, child, &MulticastMsg::Adopted { group, nonce, path });
        if new_group {
            let _ = self.join(ctx, group);
        }
        true
    }

    /// Passes a published message on: to the owner if a member, to every child.
    fn disseminate(
        &mut self,
        ctx: &mut Context<'_, A>,
        group: Id,
        publisher: Id,
        seq: u32,
        payload: Vec<u8>,
    ) {
        let recent = self.cfg.recent_messages;
        let Some(g) = self.groups.get_mut(&group) else {
            self.stats.no_tree += 1;
            return;
        };
        if g.recent.contains(&(publisher, seq)) {
            self.stats.duplicates += 1;
            return;
        }
        if g.recent.len() >= recent {
            g.recent.pop_front();
        }
        g.recent.push_back((publisher, seq));
        let member = g.member;
        let children: Vec<NodeHandle<A>> = g.children.iter().map(|c| c.node.clone()).collect();
        if !children.is_empty() {
            let msg = MulticastMsg::Data {
                group,
                publisher,
                seq,
                payload: payload.clone(),
            };
            for c in &children {
                self.send(ctx, c, &msg);
            }
            self.stats.forwarded += children.len() as u64;
        }
        if member {
            self.stats.received += 1;
            self.push_event(MulticastEvent::Received {
                group,
                publisher,
                seq,
                payload,
            });
        }
    }

    /// Leaves `group`'s tree if this node is neither a member nor has children.
    fn prune(&mut self, ctx: &mut Context<'_, A>, group: Id) {
        let Some(g) = self.groups.get(&group) else {
            return;
        };
        if g.member || !g.children.is_empty() {
            return;
        }
        if let Some(Group {
            up: Up::Parent { node, .. },
            ..
        }) = self.groups.remove(&group)
        {
            self.leave(ctx, &node, group);
        }
    }

    /// `node` is gone (it failed, left, or stopped answering): drops it wherever it is a
    /// child and joins again wherever it is the parent. Unless `any_addr`, only at the
    /// address `node` names.
    fn node_gone(&mut self, ctx: &mut Context<'_, A>, node: &NodeHandle<A>, any_addr: bool) {
        let same = |h: &NodeHandle<A>| h.id == node.id && (any_addr || h.addr == node.addr);
        let groups: Vec<Id> = self.groups.keys().copied().collect();
        for group in groups {
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            let before = g.children.len();
            g.children.retain(|c| !same(&c.node));
            self.stats.children_dropped += (before - g.children.len()) as u64;
            if matches!(&g.up, Up::Parent { node: p, .. } if same(p)) {
                self.repair(ctx, group);
            }
            self.prune(ctx, group);
        }
    }

    fn on_direct(&mut self, ctx: &mut Context<'_, A>, from: &NodeHandle<A>, msg: MulticastMsg) {
        let me = ctx.local().id;
        match msg {
            MulticastMsg::Adopted { group, nonce, path } => {
                let now = ctx.now();
                let Some(g) = self.groups.get_mut(&group) else {
                    self.stats.rejected += 1;
                    self.leave(ctx, from, group);
                    return;
                };
                let loops =
                    closes_loop(&path, me) || g.children.iter().any(|c| c.node.id == from.id);
                match &mut g.up {
                    Up::Joining { nonce: n, .. } if *n == nonce => {
                        if loops {
                            // Our own descendant adopted us: a loop. The join is sent again
                            // at its timeout, and by then the descendant knows its path.
                            self.stats.rejected += 1;
                            self.leave(ctx, from, group);
                            return;
                        }
                        g.up = Up::Parent {
                            node: from.clone(),
                            since: now,
                            realign: None,
                        };
                        if g.member {
                            self.push_event(MulticastEvent::Attached { group });
                        }
                        self.set_path(ctx, group, path);
                    }
                    Up::Parent {
                        node,
                        since,
                        realign,
                    } if *realign == Some(nonce) => {
                        *realign = None;
                        *since = now;
                        if node == from {
                            return;
                        }
                        if loops {
                            self.stats.rejected += 1;
                            self.leave(ctx, from, group);
                            return;
                        }
                        // The route to the root changed: the first tree node on it now is
                        // the parent.
                        let old = core::mem::replace(node, from.clone());
                        self.stats.realigned += 1;
                        self.leave(ctx, &old, group);
                        self.set_path(ctx, group, path);
                    }
                    // A join sent again was adopted by the same parent.
                    Up::Parent { node, .. } if node == from => {}
                    _ => {
                        self.stats.rejected += 1;
                        self.leave(ctx, from, group);
                    }
                }
            }
            MulticastMsg::Path { group, path } => {
                if !self.groups.get(&group).is_some_and(|g| g.is_parent(from)) {
                    self.stats.rejected += 1;
                    self.leave(ctx, from, group);
                    return;
                }
                if closes_loop(&path, me) {
                    // The tree above closed into a loop through this node.
                    self.stats.rejected += 1;
                    self.leave(ctx, from, group);
                    self.repair(ctx, group);
                    return;
                }
                self.set_path(ctx, group, path);
            }
            MulticastMsg::Data {
                group,
                publisher,
                seq,
                payload,
            } => {
                if !self.groups.get(&group).is_some_and(|g| g.is_parent(from)) {
                    self.stats.rejected += 1;
                    self.leave(ctx, from, group);
                    return;
                }
                if payload.len() > Self::max_payload(ctx) {
                    self.stats.rejected += 1;
                    return;
                }
                self.disseminate(ctx, group, publisher, seq, payload);
            }
            MulticastMsg::Refresh { groups } => {
                let now = ctx.now();
                let mut not_mine = Vec::new();
                for group in groups {
                    let child = self
                        .groups
                        .get_mut(&group)
                        .and_then(|g| g.children.iter_mut().find(|c| c.node == *from));
                    match child {
                        Some(c) => c.heard = now,
                        None => not_mine.push(group),
                    }
                }
                if !not_mine.is_empty() {
                    // Dropped earlier (it was silent, or this node restarted): the child
                    // joins again. The answer is no larger than the refresh.
                    self.stats.rejected += 1;
                    self.send_list(ctx, from, &not_mine, true);
                }
            }
            MulticastMsg::Leave { groups } => {
                for group in groups {
                    let Some(g) = self.groups.get_mut(&group) else {
                        self.stats.rejected += 1;
                        continue;
                    };
                    let before = g.children.len();
                    g.children.retain(|c| c.node != *from);
                    if g.children.len() < before {
                        self.stats.children_dropped += 1;
                        self.prune(ctx, group);
                    } else if g.is_parent(from) {
                        // The parent no longer counts this node as its child.
                        self.repair(ctx, group);
                    } else {
                        self.stats.rejected += 1;
                    }
                }
            }
            // Joins and publishes are routed, never direct.
            MulticastMsg::Join { .. } | MulticastMsg::Publish { .. } => self.stats.rejected += 1,
        }
    }

    fn tick(&mut self, ctx: &mut Context<'_, A>) {
        if self.closed {
            return;
        }
        let me = ctx.local().id;
        let now = ctx.now();
        let mut refresh: BTreeMap<Id, (NodeHandle<A>, Vec<Id>)> = BTreeMap::new();
        let groups: Vec<Id> = self.groups.keys().copied().collect();
        for group in groups {
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            let before = g.children.len();
            let timeout = self.cfg.child_timeout;
            g.children
                .retain(|c| now.saturating_duration_since(c.heard) <= timeout);
            self.stats.children_dropped += (before - g.children.len()) as u64;
            match &mut g.up {
                Up::Parent {
                    node,
                    since,
                    realign,
                } => {
                    refresh
                        .entry(node.id)
                        .or_insert_with(|| (node.clone(), Vec::new()))
                        .1
                        .push(group);
                    if now.saturating_duration_since(*since) >= self.cfg.realign_period {
                        // Join again along today's route, keeping the parent until the
                        // answer: routes change as nodes come and go, and a tree that kept
                        // every old edge would grow deep.
                        let nonce = ctx.unguessable();
                        *since = now;
                        *realign = Some(nonce);
                        self.stats.joins += 1;
                        let _ = ctx.route(group, MulticastMsg::Join { group, nonce }.encode());
                    }
                }
                Up::Joining { since, .. } => {
                    if now.saturating_duration_since(*since) >= self.cfg.join_timeout {
                        let _ = self.join(ctx, group);
                    }
                }
                Up::Root => {
                    let closest = ctx.replica_set(group, 1);
                    if closest.first().is_some_and(|h| h.id != me) {
                        self.repair(ctx, group);
                    }
                }
            }
            self.prune(ctx, group);
        }
        for (_, (parent, groups)) in refresh {
            // A group pruned above sent its leave already.
            let groups: Vec<Id> = groups
                .into_iter()
                .filter(|g| self.groups.contains_key(g))
                .collect();
            if !groups.is_empty() {
                let sent = self.send_list(ctx, &parent, &groups, false);
                self.stats.refreshes += sent as u64;
            }
        }
    }

    fn on_joined(&mut self, ctx: &mut Context<'_, A>, node: &NodeHandle<A>) {
        // A node closer to a group's id than its root takes the root's place: the old root
        // joins the tree under it.
        let roots: Vec<Id> = self
            .groups
            .iter()
            .filter(|(_, g)| matches!(g.up, Up::Root))
            .map(|(id, _)| *id)
            .collect();
        let me = ctx.local().id;
        for group in roots {
            if group.cmp_closeness(node.id, me).is_lt() {
                self.repair(ctx, group);
            }
        }
    }
}

impl<A: Address> Application<A> for Multicast<A> {
    fn deliver(&mut self, ctx: &mut Context<'_, A>, msg: RouteMessage<A>) {
        self.arm(ctx);
        let decoded = match MulticastMsg::decode(&msg.payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let group = msg.key;
        match decoded {
            MulticastMsg::Join { group: g, nonce } if g == group => {
                let me = ctx.local().id;
                if msg.origin.id == me {
                    // Our own join came back to us: we are the root.
                    self.become_root(ctx, group);
                    return;
                }
                if !self.groups.contains_key(&group) {
                    if !self.room_to_forward() {
                        self.stats.rejected += 1;
                        return;
                    }
                    self.groups.insert(group, Group::new(false, ctx.now()));
                }
                self.become_root(ctx, group);
                if !self.adopt(ctx, group, &msg.origin, nonce, true) {
                    self.stats.rejected += 1;
                    self.prune(ctx, group);
                }
            }
            MulticastMsg::Publish { group: g, payload } if g == group => {
                if payload.len() > Self::max_payload(ctx) {
                    self.stats.rejected += 1;
                    return;
                }
                self.disseminate(ctx, group, msg.origin.id, msg.id.seq, payload);
            }
            _ => self.stats.rejected += 1,
        }
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, A>,
        msg: &mut RouteMessage<A>,
        next_hop: &mut NodeHandle<A>,
    ) -> Forward {
        // Joins are taken on the way; everything else goes on to the root.
        let Ok(MulticastMsg::Join { group, nonce }) = MulticastMsg::decode(&msg.payload) else {
            return Forward::Continue;
        };
        if group != msg.key || msg.origin.id == ctx.local().id {
            return Forward::Continue;
        }
        self.arm(ctx);
        let origin = msg.origin.clone();
        if self.adopt(ctx, group, &origin, nonce, false) {
            return Forward::Stop;
        }
        // Full here: the join goes down to one of the children rather than on towards the
        // root, which would fill up with what its branches turned away.
        if let Some(g) = self.groups.get(&group).filter(|_| !self.closed)
            && g.children.len() >= self.cfg.max_children
            && !g.path.contains(&origin.id)
        {
            let others: Vec<&Child<A>> = g
                .children
                .iter()
                .filter(|c| c.node.id != origin.id)
                .collect();
            if !others.is_empty() {
                *next_hop = others[nonce as usize % others.len()].node.clone();
            }
        }
        Forward::Continue
    }

    fn update(&mut self, ctx: &mut Context<'_, A>, node: &NodeHandle<A>, change: LeafChange) {
        self.arm(ctx);
        match change {
            LeafChange::Joined | LeafChange::Recovered => self.on_joined(ctx, node),
            LeafChange::Failed | LeafChange::Left => self.node_gone(ctx, node, true),
            _ => {}
        }
    }

    fn direct(&mut self, ctx: &mut Context<'_, A>, from: &NodeHandle<A>, payload: Vec<u8>) {
        self.arm(ctx);
        match MulticastMsg::decode(&payload) {
            Ok(msg) => self.on_direct(ctx, from, msg),
            Err(_) => self.stats.malformed += 1,
        }
    }

    fn timer(&mut self, ctx: &mut Context<'_, A>, token: u64) {
        if token == TICK {
            self.tick(ctx);
            ctx.set_timer(self.cfg.refresh_period, TICK);
        }
    }

    fn send_failed(
        &mut self,
        ctx: &mut Context<'_, A>,
        _id: MessageId,
        to: &NodeHandle<A>,
        why: SendFailure,
    ) {
        // A refresh unanswered means the parent is gone; data or a path unanswered, the
        // child. A full queue here says nothing of them: the refreshes and the child timeout
        // settle it later.
        if why == SendFailure::Unacknowledged {
            self.node_gone(ctx, to, false);
        }
    }
}

#[cfg(test)]
mod tests;
