//! The node: the whole protocol as an event-in / actions-out state machine.

mod join;
mod lookup;
mod membership;
mod probes;
mod routing;
#[cfg(test)]
mod testing;

use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Ordering;

use foldhash::fast::FixedState;
use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::app::{Application, Context, LeafChange, MessageId, RouteMessage};
use crate::wire::{Datagram, DecodeError, Message, RouteMsg};
use crate::{Address, Config, ConfigError, Id, Instant, LeafSet, NodeHandle, RoutingTable};

pub(crate) type Map<K, V> = hashbrown::HashMap<K, V, FixedState>;
pub(crate) type Set<K> = hashbrown::HashSet<K, FixedState>;

pub(crate) fn new_map<K, V>() -> Map<K, V> {
    Map::with_hasher(FixedState::with_seed(0x7061_7374_7279))
}

pub(crate) fn new_set<K>() -> Set<K> {
    Set::with_hasher(FixedState::with_seed(0x7061_7374_7279))
}

/// A datagram the caller must send.
/// ```
/// use pastry_core::{Config, Id, Instant, Node};
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// node.join(Instant::ZERO, 2).unwrap();
/// let t = node.poll_transmit().unwrap(); // the first contact: a probe of the bootstrap node
/// assert_eq!(t.destination, 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit<A> {
    /// Where to send it.
    pub destination: A,
    /// The datagram's bytes.
    pub contents: Vec<u8>,
}

/// Why a routed message was dropped at this node.
/// ```
/// use pastry_core::{Event, RouteFailure};
/// fn describe(e: &Event<u32>) -> Option<&'static str> {
///     match e {
///         Event::RouteFailed { reason: RouteFailure::HoldTimeout, .. } => Some("no route in time"),
///         Event::RouteFailed { .. } => Some("dropped"),
///         _ => None,
///     }
/// }
/// assert_eq!(describe(&Event::Active), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteFailure {
    /// It waited longer than `hold_timeout` for a route or for this node to become active.
    HoldTimeout,
    /// It took more hops than any route in a consistent overlay could.
    HopLimit,
    /// A bounded queue (held messages or messages in flight) was full.
    Overloaded,
    /// This node left the overlay while holding it.
    NodeLeft,
}

/// Why a direct message did not reach its destination ([`Application::send_failed`]).
/// ```
/// use pastry_core::SendFailure;
/// // Only an unacknowledged message says something about the destination.
/// let gone = |why: SendFailure| why == SendFailure::Unacknowledged;
/// assert!(!gone(SendFailure::Overloaded));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendFailure {
    /// The destination did not acknowledge it, nor any of its retransmissions: it is
    /// probably gone.
    Unacknowledged,
    /// A bounded queue of this node was full (messages in flight, or messages waiting for
    /// the destination's address to be verified): nothing is known of the destination.
    Overloaded,
    /// This node left the overlay, or started over, while the message was in flight.
    NodeLeft,
}

/// Something the application should know. Drained with [`Node::poll_event`].
/// ```
/// use pastry_core::{Config, Event, Id, Instant, Node};
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// node.bootstrap(Instant::ZERO).unwrap();
/// while let Some(event) = node.poll_event() {
///     match event {
///         Event::Active => println!("member of the overlay"),
///         Event::Deliver(m) => println!("root of {:?}", m.key),
///         Event::LeafSet { node, change } => println!("{node:?}: {change:?}"),
///         _ => {}
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<A> {
    /// The node's leaf set is confirmed: it is a member of the overlay and may deliver as
    /// the root of keys.
    Active,
    /// The join was not answered after `join_attempts` requests.
    JoinFailed,
    /// A routed message reached this node, its root, for an application id with no
    /// registered [`Application`].
    Deliver(RouteMessage<A>),
    /// A direct message arrived for an application id with no registered [`Application`].
    Direct {
        /// The id of the message.
        id: MessageId,
        /// The sender.
        from: NodeHandle<A>,
        /// Application id.
        app: u16,
        /// Application bytes.
        payload: Vec<u8>,
    },
    /// The leaf set changed.
    LeafSet {
        /// The node concerned.
        node: NodeHandle<A>,
        /// What happened to it.
        change: LeafChange,
    },
    /// A routed message was dropped at this node.
    RouteFailed {
        /// The message.
        id: MessageId,
        /// Its key.
        key: Id,
        /// Why.
        reason: RouteFailure,
    },
    /// A direct message was not acknowledged by its destination.
    SendFailed {
        /// The message.
        id: MessageId,
        /// Its destination.
        to: NodeHandle<A>,
    },
    /// The graceful leave finished: the leaf set was told (or did not answer in time). The
    /// node is inert from now on.
    Left,
    /// A lookup reached this node, the root of its key (this node answers it).
    LookupServed {
        /// The lookup.
        id: LookupId,
        /// Its key.
        key: Id,
        /// The node that asked.
        origin: NodeHandle<A>,
        /// Overlay hops it took.
        hops: u8,
    },
    /// A lookup of ours was answered by the root of its key.
    LookupDone {
        /// The lookup.
        id: LookupId,
        /// Its key.
        key: Id,
        /// The root of the key.
        root: NodeHandle<A>,
        /// Overlay hops the lookup took.
        hops: u8,
    },
    /// A lookup of ours got no answer after `lookup_retries` retries.
    LookupFailed {
        /// The lookup.
        id: LookupId,
        /// Its key.
        key: Id,
    },
    /// Every leaf-set member failed: the node may be cut off from the overlay, so it stops
    /// delivering and joins again through a node it still knows (or the bootstrap address it
    /// joined through). [`Event::Active`] follows when that succeeds; if every attempt fails,
    /// the node carries on alone and reports [`Event::Active`] as well.
    Rejoining,
}

/// Names a lookup: the node that asked and its lookup counter. Retries keep the id.
///
/// ```
/// use pastry_core::{Id, LookupId};
/// let id = LookupId { origin: Id::new(1), seq: 7 };
/// assert_eq!(id.seq, 7);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId {
    /// The node that asked.
    pub origin: Id,
    /// Its lookup counter.
    pub seq: u32,
}

/// Errors of the application-facing calls.
/// ```
/// use pastry_core::{Config, Id, Instant, Node, RouteError};
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// assert_eq!(node.route(Instant::ZERO, Id::new(1), 0, vec![]), Err(RouteError::NotJoined));
/// node.bootstrap(Instant::ZERO).unwrap();
/// let big = vec![0; node.max_payload() + 1];
/// assert!(matches!(node.route(Instant::ZERO, Id::new(1), 0, big), Err(RouteError::PayloadTooLarge { .. })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The payload does not fit a datagram.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload a datagram carries.
        max: usize,
    },
    /// The node has neither started a ring nor been asked to join one, or it has left.
    #[error("the node is not part of an overlay")]
    NotJoined,
    /// Too many lookups await their answers (`max_lookups`).
    #[error("too many lookups in progress")]
    Overloaded,
}

/// Errors of [`Node::join`], [`Node::bootstrap`] and [`Node::register`].
/// ```
/// use pastry_core::{Config, Id, Instant, Node, NodeError};
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// node.bootstrap(Instant::ZERO).unwrap();
/// assert_eq!(node.join(Instant::ZERO, 2), Err(NodeError::AlreadyStarted));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node already started or joined a ring.
    #[error("the node already started or joined")]
    AlreadyStarted,
    /// An application is already registered under this id.
    #[error("application id {0} is already registered")]
    DuplicateApp(u16),
    /// No application of the requested type is registered under this id.
    #[error("no application of that type is registered under id {0}")]
    NoSuchApp(u16),
}

/// Bytes of memory a node holds, part by part (heap parts counted by capacity).
/// ```
/// use pastry_core::{Config, Id, Instant, Node};
/// let node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// let m = node.memory();
/// assert_eq!(m.total(), node.state_bytes());
/// assert_eq!(m.routing_table, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Memory {
    /// The node structure itself, leaf set included.
    pub node: usize,
    /// Routing-table rows and entries.
    pub routing_table: usize,
    /// The timer heap.
    pub timers: usize,
    /// Output queues and held messages.
    pub queues: usize,
    /// Messages awaiting acknowledgement.
    pub in_flight: usize,
    /// Outstanding probes.
    pub probes: usize,
    /// Duplicate filter, verified addresses, recently dead nodes, applications.
    pub caches: usize,
}

impl Memory {
    /// The sum of the parts.
    pub fn total(&self) -> usize {
        self.node
            + self.routing_table
            + self.timers
            + self.queues
            + self.in_flight
            + self.probes
            + self.caches
    }
}

/// Running totals, for monitoring and for the simulator's reports.
/// ```
/// use pastry_core::{Config, Id, Instant, Node};
/// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
/// node.bootstrap(Instant::ZERO).unwrap();
/// assert!(node.handle_datagram(Instant::ZERO, 2, b"not a datagram").is_err());
/// assert_eq!(node.counters().malformed, 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Datagrams received (well-formed or not).
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams handed to the caller for sending.
    pub datagrams_out: u64,
    /// Bytes handed to the caller for sending.
    pub bytes_out: u64,
    /// Of the datagrams out, those that are protocol overhead (everything but application
    /// data in routed and direct messages).
    pub control_out: u64,
    /// Bytes of those control datagrams.
    pub control_bytes_out: u64,
    /// Datagrams dropped because they did not decode.
    pub malformed: u64,
    /// Datagrams that decoded but were refused (for example: claiming our own id).
    pub rejected: u64,
    /// Replies stopped or trimmed by the anti-amplification limit.
    pub amplification_limited: u64,
    /// Routed messages forwarded to a next hop.
    pub forwarded: u64,
    /// Routed messages delivered here as their root.
    pub delivered: u64,
    /// Duplicate copies of routed or direct messages discarded.
    pub duplicates: u64,
    /// Retransmissions of unacknowledged messages and probes.
    pub retransmitted: u64,
    /// Routed messages sent to a different next hop after the first stayed silent.
    pub rerouted: u64,
    /// Nodes declared dead after failing to answer probes.
    pub failures_detected: u64,
    /// Routed messages that had to wait for a route.
    pub held: u64,
    /// Routed messages dropped here.
    pub route_failures: u64,
    /// Probes sent (first attempts).
    pub probes_sent: u64,
    /// Of the probes sent, by first purpose: leaf-set probes (joining, repair, news of
    /// members), liveness checks of suspects, routing-table candidates, and address
    /// verification before other traffic.
    pub probes_by_purpose: ProbePurposes,
}

/// Probes sent, by purpose (see [`Counters::probes_by_purpose`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbePurposes {
    /// Leaf-set probes.
    pub leaf: u64,
    /// Liveness checks of suspects.
    pub liveness: u64,
    /// Routing-table candidates.
    pub table: u64,
    /// Address verification.
    pub verify: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase<A> {
    Idle,
    Joining {
        bootstrap: A,
        attempt: u8,
        deadline: Instant,
        replied: bool,
    },
    Active,
    Leaving {
        deadline: Instant,
    },
    Left,
}

#[derive(Clone, Debug)]
pub(crate) enum TimerKind<A> {
    Heartbeat,
    Maintenance,
    Retransmit(u32),
    Probe(A),
    Join,
    Hold,
    Leave,
    Lookup(u32),
    App { slot: usize, token: u64 },
}

#[derive(Clone, Debug)]
pub(crate) struct Timer<A> {
    at: Instant,
    seq: u64,
    kind: TimerKind<A>,
}

impl<A> PartialEq for Timer<A> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl<A> Eq for Timer<A> {}
impl<A> PartialOrd for Timer<A> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<A> Ord for Timer<A> {
    /// Reversed so that the standard max-heap pops the earliest timer.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub(crate) enum AppAction<A> {
    Route {
        id: MessageId,
        app: u16,
        key: Id,
        payload: Vec<u8>,
    },
    Direct {
        id: MessageId,
        app: u16,
        to: NodeHandle<A>,
        payload: Vec<u8>,
    },
}

pub(crate) struct AppSlot<A: Address> {
    pub(crate) id: u16,
    pub(crate) app: Box<dyn Application<A>>,
}

pub(crate) type Apps<A> = [AppSlot<A>];

/// Recently seen message ids, so that retransmitted or rerouted copies are not forwarded or
/// delivered twice. Entries expire after a window that outlasts every retransmission and hold;
/// the set is bounded. Ids are kept as 64-bit fingerprints.
pub(crate) struct SeenCache {
    order: VecDeque<(Instant, u64)>,
    set: Set<u64>,
    window: core::time::Duration,
}

pub(crate) const SEEN_MAX: usize = 4096;
pub(crate) const VERIFIED_CACHE: usize = 32;
const DEAD_MEMORY: usize = 64;
/// Leaf-set probers remembered after being turned away (see `Core::declined`).
pub(crate) const DECLINED: usize = 8;

/// Rounds of [`Core::disguise`].
const FEISTEL_ROUNDS: u8 = 4;

/// What a number from [`Core::disguise`] is for: each kind has its own permutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Disguise {
    /// A message id (`msg_seq`).
    Message = 1,
    /// A hop number (`seq`), echoed by the hop's ack.
    Hop = 2,
    /// A lookup id.
    Lookup = 3,
    /// A probe nonce or a join relay's tag: a random draw, disguised so that knowing the
    /// seed's generator is not enough to guess it.
    Nonce = 4,
}

fn fingerprint(origin: Id, seq: u32) -> u64 {
    // SplitMix64 finaliser over the id's halves and the sequence number.
    let x = origin.as_u128();
    let mut z = (x as u64)
        ^ ((x >> 64) as u64).rotate_left(29)
        ^ u64::from(seq).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SeenCache {
    fn new(window: core::time::Duration) -> Self {
        SeenCache {
            order: VecDeque::new(),
            set: new_set(),
            window,
        }
    }

    /// Forgets ids older than the window.
    pub(crate) fn prune(&mut self, now: Instant) {
        while let Some(&(t, f)) = self.order.front() {
            if now - t <= self.window && self.order.len() < SEEN_MAX {
                break;
            }
            self.order.pop_front();
            self.set.remove(&f);
        }
        if self.order.is_empty() {
            self.order.shrink_to_fit();
            self.set.shrink_to_fit();
        }
    }

    /// Records the id; returns false if it was already there.
    pub(crate) fn insert(&mut self, now: Instant, origin: Id, seq: u32) -> bool {
        self.prune(now);
        let f = fingerprint(origin, seq);
        if !self.set.insert(f) {
            return false;
        }
        self.order.push_back((now, f));
        true
    }

    #[cfg(any(test, feature = "invariants"))]
    fn len(&self) -> usize {
        self.order.len()
    }

    fn heap_bytes(&self) -> usize {
        self.order.capacity() * core::mem::size_of::<(Instant, u64)>()
            + self.set.capacity() * (core::mem::size_of::<u64>() + 1)
    }
}

/// A Pastry node as a deterministic state machine.
///
/// Inputs are method calls that take the current time: [`Node::handle_datagram`],
/// [`Node::handle_timeout`], and the application's calls ([`Node::bootstrap`],
/// [`Node::join`], [`Node::route`], [`Node::send_direct`], [`Node::leave`]). After every
/// input, drain the outputs: [`Node::poll_transmit`] until `None`, [`Node::poll_event`]
/// until `None`, then arm a timer for [`Node::poll_timeout`]. See the crate documentation for
/// the loop.
///
/// ```
/// use pastry_core::{Config, Event, Id, Instant, Node};
/// let mut a: Node<u32> = Node::new(Config::default(), Id::new(1 << 100), 1, 7, Instant::ZERO).unwrap();
/// a.bootstrap(Instant::ZERO).unwrap();
/// assert!(a.is_active());
/// assert_eq!(a.poll_event(), Some(Event::Active));
/// // Alone, the node is the root of every key.
/// let id = a.route(Instant::ZERO, Id::new(42), 0, b"hello".to_vec()).unwrap();
/// match a.poll_event() {
///     Some(Event::Deliver(m)) => { assert_eq!(m.id, id); assert_eq!(m.payload, b"hello"); }
///     other => panic!("{other:?}"),
/// }
/// ```
pub struct Node<A: Address> {
    core: Core<A>,
    apps: Vec<AppSlot<A>>,
}

/// Rows with a budget of their own for proximity probes.
pub(crate) const PNS_ROWS: usize = 8;

/// A maintenance round's proximity-probe budget, split evenly over the rows that matter.
pub(crate) fn pns_budget(config: &Config) -> [u16; PNS_ROWS] {
    let per_row = u16::try_from(config.maintenance_probes.div_ceil(4)).unwrap_or(u16::MAX);
    [per_row; PNS_ROWS]
}

/// A maintenance round's budget of probes for candidate spares: enough to fill one row's
/// sixteen cells (at b = 4) in a round. Spares are measured before they are kept, and the
/// budget bounds what strangers naming themselves as candidates can make us probe; it is
/// kept apart from [`pns_budget`] so that filling spares does not slow the search for nearer
/// entries (sharing it, a 1,000-node ring's RDP after ten minutes went from 1.73 to 1.98).
pub(crate) fn spare_budget(config: &Config) -> u16 {
    16 * u16::from(config.cell_spares)
}

pub(crate) struct Core<A: Address> {
    pub(crate) cfg: Config,
    pub(crate) me: NodeHandle<A>,
    rng: Pcg64Mcg,
    pub(crate) phase: Phase<A>,
    pub(crate) leaf: LeafSet<A>,
    pub(crate) table: RoutingTable<A>,
    timers: BinaryHeap<Timer<A>>,
    timer_seq: u64,
    transmits: VecDeque<Transmit<A>>,
    events: VecDeque<Event<A>>,
    pub(crate) app_actions: VecDeque<AppAction<A>>,
    /// Direct messages that did not arrive, with why, to report to the application they were
    /// sent under ([`Application::send_failed`]) once the input is handled.
    failed_directs: VecDeque<(u16, MessageId, NodeHandle<A>, SendFailure)>,
    in_flight: Map<u32, routing::InFlight<A>>,
    next_seq: u32,
    next_msg_seq: u32,
    probes: Map<A, probes::ProbeState<A>>,
    /// Send budgets of addresses that have not answered a probe yet.
    budgets: VecDeque<probes::Budget<A>>,
    /// Address-validation tokens other nodes gave us, to echo in our next probes to them.
    tokens: VecDeque<(A, u32)>,
    /// Key of the tokens this node gives out and of the permutation its numbers go through
    /// ([`Core::disguise`]).
    secret: (u64, u64),
    /// Joins this node is the bootstrap node of.
    relays: Vec<join::Relay<A>>,
    /// Ids with a leaf-set probe under way (a joining node waits for them).
    pending_leaf: Vec<Id>,
    /// Routing-table candidates heard of while joining, or joining themselves when they
    /// contacted us, probed once both are likely active (a probe from an active node is what
    /// lets the probed node take us into its own table). The flag: its address is vouched for
    /// (a verified node told us of it, or it answered our probe), so that probing it needs no
    /// budget (see `consider_table`'s `exempt`).
    deferred_table: Vec<(NodeHandle<A>, bool)>,
    /// While set, a probe started towards this address is not sent: the answer we are about
    /// to send it carries the probe instead (see `Core::carried_probe`).
    carry: Option<A>,
    /// The member last asked for its leaf set to fill a hole, per side (cw, ccw).
    repair_asked: [Option<Id>; 2],
    /// The last failure notice, kept for the repair it makes possible (boxed: rarely there).
    notice: Option<alloc::boxed::Box<membership::Notice<A>>>,
    held: Vec<routing::Held<A>>,
    hold_timer: Option<Instant>,
    seen: SeenCache,
    verified: VecDeque<A>,
    dead: VecDeque<(Id, Instant)>,
    /// Nodes whose leaf-set probe (from a verified address) we answered without taking them
    /// in, our side being full, and when: most are the next node out past a member that has
    /// just failed, which probed us on hearing of the failure before we had the verdict. A
    /// notice that then opens a place for one soon after takes it in without a probe of ours
    /// (see `repair_from_notice`).
    declined: VecDeque<(NodeHandle<A>, Instant)>,
    heartbeat_at: Instant,
    maintenance_at: Instant,
    /// Leaf-set members found dead in the last two maintenance rounds, and when each round
    /// began: the ring's failure rate as this node sees it (see [`Core::stale_after`]).
    leaf_deaths: ([u32; 2], [Instant; 2]),
    /// Probes left in this maintenance round for candidates that might be nearer than a
    /// routing-table entry we have, per row (rows past the last share its budget): each row
    /// gets its share, so that a long reply for row 0 cannot starve the rows after it.
    pns_budget: [u16; PNS_ROWS],
    /// Probes left in this maintenance round for candidate spares (see [`spare_budget`]).
    spare_budget: u16,
    /// Earliest time of the next lazy request to fill an empty routing-table cell.
    next_fill: Instant,
    /// Application timers armed and not yet fired.
    app_timers: usize,
    /// Lookups of ours awaiting their answer.
    lookups: Map<u32, lookup::Pending<A>>,
    next_lookup: u32,
    /// The address the application gave [`Node::join`], kept for rejoining.
    bootstrap: Option<A>,
    /// The current join is a rejoin after the leaf set emptied through failures.
    rejoining: bool,
    counters: Counters,
    pub(crate) max_payload: usize,
}

impl<A: Address> Node<A> {
    /// A node with the given configuration, id and own address. `seed` drives every random
    /// choice the node makes: the same seed and the same inputs give the same outputs. The
    /// numbers other nodes must not guess are keyed by a secret that also comes from `seed`
    /// unless [`set_secret`](Self::set_secret) replaces it, as it should outside simulation.
    pub fn new(
        config: Config,
        id: Id,
        addr: A,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate_for(A::MAX_ENCODED_LEN)?;
        let max_payload =
            crate::wire::max_route_payload(config.max_datagram_size, A::MAX_ENCODED_LEN);
        let core = Core {
            leaf: LeafSet::new(id, config.leaf_set_size),
            table: RoutingTable::new(id, config.b),
            me: NodeHandle::new(id, addr),
            rng: Pcg64Mcg::seed_from_u64(seed),
            phase: Phase::Idle,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            app_actions: VecDeque::new(),
            failed_directs: VecDeque::new(),
            in_flight: new_map(),
            next_seq: 1,
            next_msg_seq: 1,
            probes: new_map(),
            budgets: VecDeque::new(),
            tokens: VecDeque::new(),
            secret: (0, 0),
            relays: Vec::new(),
            pending_leaf: Vec::new(),
            deferred_table: Vec::new(),
            carry: None,
            repair_asked: [None, None],
            notice: None,
            held: Vec::new(),
            hold_timer: None,
            seen: SeenCache::new(
                config.hold_timeout + config.rto_max * (u32::from(config.max_retransmits) + 2),
            ),
            verified: VecDeque::new(),
            dead: VecDeque::new(),
            declined: VecDeque::new(),
            heartbeat_at: now,
            maintenance_at: now,
            leaf_deaths: ([0; 2], [now; 2]),
            pns_budget: pns_budget(&config),
            spare_budget: spare_budget(&config),
            next_fill: now,
            app_timers: 0,
            lookups: new_map(),
            next_lookup: 0,
            bootstrap: None,
            rejoining: false,
            counters: Counters::default(),
            max_payload,
            cfg: config,
        };
        let mut core = core;
        // Message ids, lookup ids and hop numbers are counters from a random start, sent out
        // through a keyed permutation (`Core::disguise`): distinct until a counter wraps, and
        // unpredictable to anyone who has seen some of them. A forger who could guess the next
        // message id could get that message dropped as a duplicate ahead of time; the next hop
        // number, forge the ack that cancels a hop's resend and ends a liveness check; the next
        // lookup id, forge the lookup's answer.
        core.next_msg_seq = core.random() as u32;
        core.next_lookup = core.random() as u32;
        core.secret = (core.random(), core.random());
        core.next_seq = core.random() as u32;
        Ok(Node {
            core,
            apps: Vec::new(),
        })
    }

    /// Replaces the node's secret key, which by default comes from `seed`, with one from a
    /// source nobody else can read: outside a simulation, 16 bytes of the operating system's
    /// randomness. Call it before [`bootstrap`](Self::bootstrap) or [`join`](Self::join).
    ///
    /// The key makes unguessable what other nodes must not be able to guess, whatever they
    /// know of `seed` (which drives every other random choice, and which an application may
    /// well pick as it likes): address tokens, hop numbers, message and lookup ids, probe
    /// nonces, join relay tags. The runtime adapters call this with fresh randomness; the
    /// simulator does not, so that a seed gives the same run bit for bit. With another key the
    /// node sends other numbers but decides everything as before: the same seed and inputs
    /// still give the same behaviour.
    ///
    /// ```
    /// use pastry_core::{Config, Id, Instant, Node};
    /// let mut node = Node::new(Config::default(), Id::new(1), 1u32, 7, Instant::ZERO).unwrap();
    /// node.set_secret([0x5a; 16]); // in practice: getrandom::fill(&mut key)
    /// node.bootstrap(Instant::ZERO).unwrap();
    /// ```
    pub fn set_secret(&mut self, key: [u8; 16]) {
        debug_assert!(
            matches!(self.core.phase, Phase::Idle),
            "set_secret after the node started: tokens given out and hop numbers in flight \
             would no longer match"
        );
        let key = u128::from_le_bytes(key);
        self.core.secret = (key as u64, (key >> 64) as u64);
    }

    /// Registers an application under `app_id`: routed and direct messages with that id are
    /// handed to it instead of surfacing as events.
    pub fn register(&mut self, app_id: u16, app: Box<dyn Application<A>>) -> Result<(), NodeError> {
        if self.apps.iter().any(|s| s.id == app_id) {
            return Err(NodeError::DuplicateApp(app_id));
        }
        self.apps.push(AppSlot { id: app_id, app });
        Ok(())
    }

    /// Calls `f` with the application registered under `app_id`, as its concrete type `T`,
    /// and a [`Context`] to act through: this is how the program that owns a node drives an
    /// application (stores a value, joins a group). Whatever `f` routes or sends goes out as
    /// with any other input, so drain the outputs afterwards.
    ///
    /// ```
    /// use pastry_core::{Application, Context, Config, Id, Instant, Node, NodeError, RouteMessage};
    ///
    /// /// Counts deliveries; its owner reads the count.
    /// #[derive(Default)]
    /// struct Counter { delivered: u32 }
    /// impl Application<u32> for Counter {
    ///     fn deliver(&mut self, _: &mut Context<'_, u32>, _: RouteMessage<u32>) {
    ///         self.delivered += 1;
    ///     }
    /// }
    ///
    /// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// node.register(9, Box::new(Counter::default())).unwrap();
    /// node.bootstrap(Instant::ZERO).unwrap();
    /// // Route to ourselves from inside the application, then read what it saw.
    /// node.with_app(Instant::ZERO, 9, |_: &mut Counter, ctx| ctx.route(Id::new(7), vec![]))
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!(node.with_app(Instant::ZERO, 9, |c: &mut Counter, _| c.delivered), Ok(1));
    /// assert_eq!(
    ///     node.with_app(Instant::ZERO, 8, |c: &mut Counter, _| c.delivered),
    ///     Err(NodeError::NoSuchApp(8))
    /// );
    /// ```
    pub fn with_app<T: Application<A>, R>(
        &mut self,
        now: Instant,
        app_id: u16,
        f: impl FnOnce(&mut T, &mut Context<'_, A>) -> R,
    ) -> Result<R, NodeError> {
        let slot = self
            .apps
            .iter()
            .position(|s| s.id == app_id)
            .ok_or(NodeError::NoSuchApp(app_id))?;
        let app: &mut dyn core::any::Any = self.apps[slot].app.as_mut();
        let app = app
            .downcast_mut::<T>()
            .ok_or(NodeError::NoSuchApp(app_id))?;
        let mut ctx = Context {
            core: &mut self.core,
            app: app_id,
            slot,
            now,
        };
        let r = f(app, &mut ctx);
        self.after_input(now);
        Ok(r)
    }

    /// The application registered under `app_id`, as its concrete type `T`, to read its
    /// state (use [`Node::with_app`] to act through it).
    ///
    /// ```
    /// use pastry_core::{Application, Context, Config, Id, Instant, Node, RouteMessage};
    /// struct Quiet;
    /// impl Application<u32> for Quiet {
    ///     fn deliver(&mut self, _: &mut Context<'_, u32>, _: RouteMessage<u32>) {}
    /// }
    /// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// node.register(2, Box::new(Quiet)).unwrap();
    /// assert!(node.app::<Quiet>(2).is_some());
    /// assert!(node.app::<Quiet>(3).is_none());
    /// ```
    pub fn app<T: Application<A>>(&self, app_id: u16) -> Option<&T> {
        let slot = self.apps.iter().find(|s| s.id == app_id)?;
        let app: &dyn core::any::Any = slot.app.as_ref();
        app.downcast_ref::<T>()
    }

    /// Starts a new overlay with this node as its only member. The node is active at once.
    pub fn bootstrap(&mut self, now: Instant) -> Result<(), NodeError> {
        if !matches!(self.core.phase, Phase::Idle) {
            return Err(NodeError::AlreadyStarted);
        }
        self.core.become_active(now, &mut self.apps);
        self.after_input(now);
        Ok(())
    }

    /// Joins the overlay that the node at `bootstrap` belongs to. [`Event::Active`] follows
    /// once the leaf set is confirmed, or [`Event::JoinFailed`].
    pub fn join(&mut self, now: Instant, bootstrap: A) -> Result<(), NodeError> {
        if !matches!(self.core.phase, Phase::Idle) {
            return Err(NodeError::AlreadyStarted);
        }
        self.core.bootstrap = Some(bootstrap.clone());
        self.core.start_join(now, bootstrap, 0);
        self.after_input(now);
        Ok(())
    }

    /// Routes `payload` for application `app` to the live node numerically closest to `key`.
    /// Returns the message's id. While the node is still joining, the message waits.
    pub fn route(
        &mut self,
        now: Instant,
        key: Id,
        app: u16,
        payload: Vec<u8>,
    ) -> Result<MessageId, RouteError> {
        self.core.check_routable()?;
        self.core.check_payload(payload.len())?;
        let id = self.core.next_message_id();
        self.core
            .route_new(now, &mut self.apps, id, app, key, payload);
        self.after_input(now);
        Ok(id)
    }

    /// Looks up the root of `key`: the request is routed to the key, and the root (the live
    /// node numerically closest to it) answers. [`Event::LookupDone`] reports the answer, or
    /// [`Event::LookupFailed`] after `lookup_retries` retries of `lookup_timeout` each.
    ///
    /// ```
    /// use pastry_core::{Config, Event, Id, Instant, Node};
    /// let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// node.bootstrap(Instant::ZERO).unwrap();
    /// let id = node.lookup(Instant::ZERO, Id::new(99)).unwrap();
    /// let done = std::iter::from_fn(|| node.poll_event()).find_map(|e| match e {
    ///     Event::LookupDone { id: i, root, hops, .. } if i == id => Some((root.id, hops)),
    ///     _ => None,
    /// });
    /// assert_eq!(done, Some((Id::new(5), 0)));
    /// ```
    pub fn lookup(&mut self, now: Instant, key: Id) -> Result<LookupId, RouteError> {
        self.core.check_routable()?;
        let id = self.core.start_lookup(now, key)?;
        self.core.send_lookup(now, &mut self.apps, id.seq);
        self.after_input(now);
        Ok(id)
    }

    /// Sends `payload` for application `app` straight to `to`; it is acknowledged and
    /// retransmitted, and [`Event::SendFailed`] reports a destination that never answers.
    pub fn send_direct(
        &mut self,
        now: Instant,
        to: NodeHandle<A>,
        app: u16,
        payload: Vec<u8>,
    ) -> Result<MessageId, RouteError> {
        self.core.check_routable()?;
        self.core.check_payload(payload.len())?;
        let id = self.core.next_message_id();
        self.core.send_direct(now, id, app, to, payload);
        self.after_input(now);
        Ok(id)
    }

    /// Leaves the overlay gracefully: tells the leaf set, waits for acknowledgements (bounded
    /// by the retransmission limits), then reports [`Event::Left`].
    pub fn leave(&mut self, now: Instant) {
        self.core.start_leave(now);
        self.after_input(now);
    }

    /// Feeds one datagram received from `from`. Bytes that do not decode are counted and
    /// returned as an error; they change nothing else.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: A,
        bytes: &[u8],
    ) -> Result<(), DecodeError> {
        let c = &mut self.core;
        c.counters.datagrams_in += 1;
        c.counters.bytes_in += bytes.len() as u64;
        let d = match Datagram::<A>::decode(bytes, c.cfg.max_datagram_size) {
            Ok(d) => d,
            Err(e) => {
                c.counters.malformed += 1;
                return Err(e);
            }
        };
        if d.sender == c.me.id || matches!(c.phase, Phase::Left | Phase::Idle) {
            c.counters.rejected += 1;
            return Ok(());
        }
        c.dispatch(now, from, d, bytes.len(), &mut self.apps);
        self.after_input(now);
        Ok(())
    }

    /// Processes every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.core.timers.peek() {
            if t.at > now {
                break;
            }
            let Some(t) = self.core.timers.pop() else {
                break;
            };
            self.core.fire(now, t, &mut self.apps);
            self.after_input(now);
        }
        let heap = &mut self.core.timers;
        if heap.capacity() > 8 && heap.len() < heap.capacity() / 4 {
            heap.shrink_to(heap.len() * 2);
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        let t = self.core.transmits.pop_front();
        if t.is_none() && self.core.transmits.capacity() > 4 {
            self.core.transmits.shrink_to_fit();
        }
        t
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event<A>> {
        let e = self.core.events.pop_front();
        if e.is_none() && self.core.events.capacity() > 0 {
            self.core.events.shrink_to_fit();
        }
        e
    }

    /// When [`Node::handle_timeout`] should next be called, if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.timers.peek().map(|t| t.at)
    }

    fn after_input(&mut self, now: Instant) {
        self.core.compact_timers();
        // An application told of a failed send may send again, and that send may fail at
        // once (too many messages in flight): the reports handled per input are bounded, the
        // rest wait for the next input.
        let mut reports = self.core.cfg.max_in_flight;
        loop {
            while let Some(action) = self.core.app_actions.pop_front() {
                match action {
                    AppAction::Route {
                        id,
                        app,
                        key,
                        payload,
                    } => self
                        .core
                        .route_new(now, &mut self.apps, id, app, key, payload),
                    AppAction::Direct {
                        id,
                        app,
                        to,
                        payload,
                    } => self.core.send_direct(now, id, app, to, payload),
                }
            }
            if reports == 0 {
                break;
            }
            let Some((app, id, to, why)) = self.core.failed_directs.pop_front() else {
                break;
            };
            reports -= 1;
            if let Some(slot) = self.apps.iter().position(|s| s.id == app) {
                let mut ctx = Context {
                    core: &mut self.core,
                    app,
                    slot,
                    now,
                };
                self.apps[slot].app.send_failed(&mut ctx, id, &to, why);
            }
        }
    }

    /// This node's handle.
    pub fn local(&self) -> &NodeHandle<A> {
        &self.core.me
    }

    /// Whether the node is joining (for the first time, or again after losing every leaf-set
    /// member to failures).
    pub fn is_joining(&self) -> bool {
        matches!(self.core.phase, Phase::Joining { .. })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.core.cfg
    }

    /// Whether the node is active: its leaf set is confirmed and it may deliver as a root.
    pub fn is_active(&self) -> bool {
        self.core.is_active()
    }

    /// Whether the node finished a graceful leave.
    pub fn has_left(&self) -> bool {
        matches!(self.core.phase, Phase::Left)
    }

    /// The leaf set.
    pub fn leaf_set(&self) -> &LeafSet<A> {
        &self.core.leaf
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable<A> {
        &self.core.table
    }

    /// The `k` known nodes closest to `key` (leaf-set members and this node), closest first,
    /// with `k` capped at L/2 + 1: where replicas of `key` belong.
    pub fn replica_set(&self, key: Id, k: usize) -> Vec<NodeHandle<A>> {
        self.core.leaf.replica_set(key, &self.core.me, k)
    }

    /// The arc of keys `[lo, hi]` (clockwise, inclusive) that `node` (this node or a leaf-set
    /// member) is the root of, as far as this node knows.
    pub fn range(&self, node: Id) -> Option<(Id, Id)> {
        self.core.leaf.range_of(node)
    }

    /// Where this node would send a message for `key` now: `None` to deliver here (or hold
    /// it, if the node is not active or lacks a route), `Some(next hop)` otherwise.
    pub fn next_hop(&self, key: Id) -> Option<NodeHandle<A>> {
        match crate::next_hop(
            key,
            self.core.me.id,
            &self.core.leaf,
            &self.core.table,
            None,
        ) {
            crate::NextHop::Forward(p, _) => Some(p.handle.clone()),
            _ => None,
        }
    }

    /// Running totals.
    pub fn counters(&self) -> &Counters {
        &self.core.counters
    }

    /// Largest application payload [`Node::route`] and [`Node::send_direct`] accept.
    pub fn max_payload(&self) -> usize {
        self.core.max_payload
    }

    /// Messages waiting here for a route.
    pub fn held_len(&self) -> usize {
        self.core.held.len()
    }

    /// Bytes of memory this node's state occupies: the node itself plus what its tables,
    /// queues and caches hold on the heap (by capacity).
    pub fn state_bytes(&self) -> usize {
        self.memory().total()
    }

    /// Where [`Node::state_bytes`] goes, part by part.
    pub fn memory(&self) -> Memory {
        let c = &self.core;
        let leaf_spill = if c.leaf.half() > 8 {
            2 * c.leaf.half() * core::mem::size_of::<crate::leafset::LeafEntry<A>>()
        } else {
            0
        };
        Memory {
            node: core::mem::size_of::<Self>() + leaf_spill,
            routing_table: c.table.heap_bytes(),
            timers: c.timers.capacity() * core::mem::size_of::<Timer<A>>(),
            queues: c.transmits.capacity() * core::mem::size_of::<Transmit<A>>()
                + c.transmits
                    .iter()
                    .map(|t| t.contents.capacity())
                    .sum::<usize>()
                + c.events.capacity() * core::mem::size_of::<Event<A>>()
                + c.failed_directs.capacity()
                    * core::mem::size_of::<(u16, MessageId, NodeHandle<A>, SendFailure)>()
                + c.held.capacity() * core::mem::size_of::<routing::Held<A>>(),
            in_flight: c.in_flight.capacity()
                * (core::mem::size_of::<(u32, routing::InFlight<A>)>() + 1)
                + c.in_flight.values().map(|f| f.heap_bytes()).sum::<usize>(),
            probes: c.probes.capacity() * (core::mem::size_of::<(A, probes::ProbeState<A>)>() + 1)
                + c.budgets.capacity() * core::mem::size_of::<probes::Budget<A>>()
                + c.relays.capacity() * core::mem::size_of::<join::Relay<A>>()
                + c.probes.values().map(|p| p.heap_bytes()).sum::<usize>()
                + c.pending_leaf.capacity() * core::mem::size_of::<Id>()
                + c.deferred_table.capacity() * core::mem::size_of::<(NodeHandle<A>, bool)>()
                + c.notice.as_ref().map_or(0, |n| n.heap_bytes()),
            caches: c.seen.heap_bytes()
                + c.tokens.capacity() * core::mem::size_of::<(A, u32)>()
                + c.lookups.capacity() * (core::mem::size_of::<(u32, lookup::Pending<A>)>() + 1)
                + c.verified.capacity() * core::mem::size_of::<A>()
                + c.declined.capacity() * core::mem::size_of::<(NodeHandle<A>, Instant)>()
                + c.dead.capacity() * core::mem::size_of::<(Id, Instant)>()
                + self.apps.capacity() * core::mem::size_of::<AppSlot<A>>(),
        }
    }

    /// Checks the node's structural invariants: leaf-set sides sorted, bounded and free of our
    /// own id; routing-table entries in their cells; queues, tables and caches within their
    /// bounds. [`crate::invariants::check_node`] adds the memory bound.
    #[cfg(any(test, feature = "invariants"))]
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        self.core.check_invariants()
    }
}

impl<A: Address> Core<A> {
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active)
    }

    pub(crate) fn check_payload(&self, len: usize) -> Result<(), RouteError> {
        if len > self.max_payload {
            return Err(RouteError::PayloadTooLarge {
                len,
                max: self.max_payload,
            });
        }
        Ok(())
    }

    fn check_routable(&self) -> Result<(), RouteError> {
        match self.phase {
            Phase::Joining { .. } | Phase::Active => Ok(()),
            _ => Err(RouteError::NotJoined),
        }
    }

    pub(crate) fn next_message_id(&mut self) -> MessageId {
        let count = self.next_msg_seq;
        self.next_msg_seq = count.wrapping_add(1);
        MessageId {
            origin: self.me.id,
            seq: self.disguise(Disguise::Message, count),
        }
    }

    /// A lookup id for a new lookup of ours.
    pub(crate) fn next_lookup_id(&mut self) -> u32 {
        let count = self.next_lookup;
        self.next_lookup = count.wrapping_add(1);
        self.disguise(Disguise::Lookup, count)
    }

    /// The keyed permutation of 32-bit numbers that turns a counter into the number sent: four
    /// Feistel rounds on 16-bit halves, with SipHash-1-3 under the node's secret as the round
    /// function. Being a permutation, it never gives the same number twice before the counter
    /// wraps. Each new count puts a fresh input into the first round (its low half moves on),
    /// so the numbers seen tell an observer nothing it can compute the next one from. (With
    /// halves this short, a watcher of many numbers could tell them from a truly random
    /// permutation; that is harmless, as only the next number must stay out of reach.) Its
    /// SipHash inputs are 4 bytes long, the address
    /// tokens' at least 17: the two uses of the key never hash the same message. It costs
    /// 45 to 75 ns a hop (`hot_path` benchmark, within its noise).
    pub(crate) fn disguise(&self, domain: Disguise, count: u32) -> u32 {
        let (mut left, mut right) = ((count >> 16) as u16, count as u16);
        for round in 0..FEISTEL_ROUNDS {
            (left, right) = (right, left ^ self.feistel(domain, round, right));
        }
        (u32::from(left) << 16) | u32::from(right)
    }

    /// The round function of [`disguise`](Self::disguise): SipHash-1-3 under the secret.
    fn feistel(&self, domain: Disguise, round: u8, half: u16) -> u16 {
        use core::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.secret.0, self.secret.1);
        let [h0, h1] = half.to_le_bytes();
        h.write(&[domain as u8, round, h0, h1]);
        h.finish() as u16
    }

    /// Gives back memory of a map that emptied out after a burst (a join probes dozens of
    /// nodes; a node then idles with a handful of entries).
    pub(crate) fn trim<K: Eq + core::hash::Hash, V>(map: &mut Map<K, V>) {
        if map.is_empty() {
            map.shrink_to_fit();
        } else if map.capacity() > 8 && map.len() < map.capacity() / 4 {
            map.shrink_to(map.len() * 2);
        }
    }

    /// The counter that [`disguise`](Self::disguise) turned into `n`: the Feistel rounds run
    /// backwards.
    pub(crate) fn reveal(&self, domain: Disguise, n: u32) -> u32 {
        let (mut left, mut right) = ((n >> 16) as u16, n as u16);
        for round in (0..FEISTEL_ROUNDS).rev() {
            (left, right) = (right ^ self.feistel(domain, round, left), left);
        }
        (u32::from(left) << 16) | u32::from(right)
    }

    /// How long ago, in hops sent, hop number `seq` was given out: orders hops by age, across
    /// a wrap of the counter too.
    pub(crate) fn hop_age(&self, seq: u32) -> u32 {
        self.next_seq.wrapping_sub(self.reveal(Disguise::Hop, seq))
    }

    /// A hop number for a message sent with an acknowledgement: never 0, which asks for none.
    pub(crate) fn next_hop_seq(&mut self) -> u32 {
        loop {
            let count = self.next_seq;
            self.next_seq = count.wrapping_add(1);
            let seq = self.disguise(Disguise::Hop, count);
            if seq != 0 {
                return seq;
            }
        }
    }

    pub(crate) fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A random 32-bit number nobody without our secret can predict (see [`Disguise::Nonce`]),
    /// never 0.
    pub(crate) fn unguessable(&mut self) -> u32 {
        let draw = self.random() as u32;
        self.disguise(Disguise::Nonce, draw).max(1)
    }

    /// A duration in `[base * (1 - spread), base]`, so that periodic work spreads out.
    pub(crate) fn jitter(
        &mut self,
        base: core::time::Duration,
        spread_percent: u64,
    ) -> core::time::Duration {
        let micros = u64::try_from(base.as_micros()).unwrap_or(u64::MAX);
        let cut = micros / 100 * spread_percent;
        let off = if cut == 0 { 0 } else { self.random() % cut };
        core::time::Duration::from_micros(micros - off)
    }

    pub(crate) fn schedule(&mut self, at: Instant, kind: TimerKind<A>) {
        self.timer_seq += 1;
        self.timers.push(Timer {
            at,
            seq: self.timer_seq,
            kind,
        });
    }

    pub(crate) fn schedule_app_timer(&mut self, at: Instant, slot: usize, token: u64) {
        self.app_timers += 1;
        self.schedule(at, TimerKind::App { slot, token });
    }

    /// Whether a timer still stands for something (timers are never removed when what they
    /// stand for goes away; they are checked when they fire).
    fn timer_live(&self, t: &Timer<A>) -> bool {
        match &t.kind {
            TimerKind::Heartbeat => t.at == self.heartbeat_at,
            TimerKind::Maintenance => t.at == self.maintenance_at,
            TimerKind::Retransmit(seq) => self
                .in_flight
                .get(seq)
                .is_some_and(|f| f.deadline() == t.at),
            TimerKind::Probe(addr) => self.probes.get(addr).is_some_and(|p| p.deadline() == t.at),
            TimerKind::Join => {
                matches!(self.phase, Phase::Joining { deadline, .. } if deadline == t.at)
            }
            TimerKind::Hold => self.hold_timer == Some(t.at),
            TimerKind::Leave => {
                matches!(self.phase, Phase::Leaving { deadline } if deadline == t.at)
            }
            TimerKind::Lookup(seq) => self.lookups.get(seq).is_some_and(|l| l.deadline == t.at),
            TimerKind::App { .. } => true,
        }
    }

    /// Drops stale timers once they outnumber the live ones, so that a burst of traffic
    /// (every hop and probe arms a timer) cannot grow the heap without bound.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.timer_floor() + 32 {
            return;
        }
        let timers = core::mem::take(&mut self.timers).into_vec();
        let live: Vec<Timer<A>> = timers.into_iter().filter(|t| self.timer_live(t)).collect();
        self.timers = BinaryHeap::from(live);
        self.timers.shrink_to_fit();
    }

    pub(crate) fn event(&mut self, e: Event<A>) {
        self.events.push_back(e);
    }

    /// Hands a datagram to the caller.
    pub(crate) fn transmit(&mut self, to: A, bytes: Vec<u8>, control: bool) {
        self.counters.datagrams_out += 1;
        self.counters.bytes_out += bytes.len() as u64;
        if control {
            self.counters.control_out += 1;
            self.counters.control_bytes_out += bytes.len() as u64;
        }
        self.transmits.push_back(Transmit {
            destination: to,
            contents: bytes,
        });
    }

    pub(crate) fn encode(&self, message: Message<A>) -> Vec<u8> {
        Datagram::new(self.me.id, message).to_bytes()
    }

    pub(crate) fn recently_dead(&mut self, id: Id, now: Instant) -> bool {
        let memory = self.cfg.failure_timeout * 5;
        while let Some(&(_, t)) = self.dead.front() {
            if now - t <= memory {
                break;
            }
            self.dead.pop_front();
        }
        self.dead.iter().any(|(d, _)| *d == id)
    }

    pub(crate) fn mark_dead(&mut self, id: Id, now: Instant) {
        self.dead.retain(|(d, _)| *d != id);
        self.declined.retain(|(d, _)| d.id != id);
        if self.dead.len() >= DEAD_MEMORY {
            self.dead.pop_front();
        }
        self.dead.push_back((id, now));
    }

    pub(crate) fn forget_dead(&mut self, id: Id) -> bool {
        let before = self.dead.len();
        self.dead.retain(|(d, _)| *d != id);
        before != self.dead.len()
    }

    /// Calls `f` on every registered application with a context.
    pub(crate) fn upcall_all(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        mut f: impl FnMut(&mut dyn Application<A>, &mut Context<'_, A>),
    ) {
        for (slot, s) in apps.iter_mut().enumerate() {
            let mut ctx = Context {
                core: self,
                app: s.id,
                slot,
                now,
            };
            f(s.app.as_mut(), &mut ctx);
        }
    }

    pub(crate) fn leaf_changed(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        node: NodeHandle<A>,
        change: LeafChange,
    ) {
        self.upcall_all(now, apps, |app, ctx| app.update(ctx, &node, change));
        self.event(Event::LeafSet { node, change });
    }

    fn dispatch(&mut self, now: Instant, from: A, d: Datagram<A>, len: usize, apps: &mut Apps<A>) {
        let sender = NodeHandle::new(d.sender, from);
        self.note_received(&sender, len);
        let member = self.heard_from(now, &sender);
        if let Phase::Leaving { .. } = self.phase {
            // A leaving node collects the acknowledgements of its goodbyes and answers anything
            // else with a goodbye (sequence 0: not retransmitted), so that nobody waits for it.
            match d.message {
                Message::Ack { seq } => self.on_ack(now, &sender, seq, apps),
                Message::Leave { .. } => {}
                _ => self.answer_with_leave(&sender),
            }
            return;
        }
        if !member
            && self.is_active()
            && matches!(
                d.message,
                Message::Route(_)
                    | Message::Ack { .. }
                    | Message::Direct { .. }
                    | Message::Probe { leaf: None, .. }
            )
            && self.recently_dead(sender.id, now)
            && self.leaf_fits(sender.id, None)
            && !self.probes.contains_key(&sender.addr)
        {
            // A node we declared dead routes through us or probes us: it is alive after all
            // (our probes or its answers were lost). Where it belongs in our leaf set, exchange leaf
            // sets now rather than when its silence makes it check on us, up to a heartbeat
            // period and a failure timeout later, while we deliver keys that are its.
            self.probe(now, &sender, probes::P_LEAF, &[], false);
        }
        // A probe first checks the token it carries (`on_probe`); a reply settles its own probe.
        if !matches!(
            d.message,
            Message::Probe { .. } | Message::ProbeReply { .. }
        ) {
            self.refresh_suspicion(now, &sender);
        }
        match d.message {
            Message::Probe {
                nonce,
                token,
                leaf,
                failed,
                active,
                ..
            } => self.on_probe(
                now,
                sender,
                probes::Probe {
                    nonce,
                    token,
                    leaf,
                    failed,
                    active,
                },
                apps,
            ),
            Message::ProbeReply {
                nonce,
                token,
                leaf,
                active,
                probe,
            } => {
                self.remember_token(&sender.addr, token);
                // A probe it carries is answered only in a reply to our own probe, once that
                // reply has verified the address.
                let carrier = (probe != 0).then(|| sender.clone());
                if self.on_probe_reply(now, sender, nonce, leaf, active, apps)
                    && let Some(to) = carrier
                {
                    self.answer_carried(&to, probe);
                }
            }
            Message::Heartbeat { leaf } => self.on_heartbeat(now, sender, leaf, apps),
            Message::Route(msg) => self.on_route(now, sender, msg, apps),
            Message::Ack { seq } => self.on_ack(now, &sender, seq, apps),
            Message::Direct {
                seq,
                msg_seq,
                app,
                payload,
            } => self.on_direct(
                now,
                sender,
                seq,
                routing::Direct {
                    msg_seq,
                    app,
                    payload,
                },
                apps,
            ),
            Message::JoinRequest { .. } => self.on_join_request(now, sender, len, apps),
            Message::JoinReply { root, leaf } => self.on_join_reply(now, sender, root, leaf, apps),
            Message::RowRequest { row, .. } => self.on_row_request(now, sender, row),
            Message::Rows { rows, hints, probe } => self.on_rows(now, sender, rows, &hints, probe),
            Message::Leave { seq, leaf } => self.on_leave(now, sender, seq, leaf, apps),
            Message::LookupRequest { nonce, key, .. } => {
                self.on_lookup_request(now, sender, nonce, key, len, apps)
            }
            // Members never ask each other this way; an answer is for clients only.
            Message::LookupAnswer { .. } => self.counters.rejected += 1,
        }
    }

    fn fire(&mut self, now: Instant, t: Timer<A>, apps: &mut Apps<A>) {
        if matches!(self.phase, Phase::Leaving { .. })
            && !matches!(t.kind, TimerKind::Retransmit(_) | TimerKind::Leave)
        {
            return;
        }
        match t.kind {
            TimerKind::Heartbeat => {
                if t.at == self.heartbeat_at {
                    self.on_heartbeat_timer(now, apps);
                }
            }
            TimerKind::Maintenance => {
                if t.at == self.maintenance_at {
                    self.on_maintenance_timer(now);
                }
            }
            TimerKind::Retransmit(seq) => self.on_retransmit_timer(now, t.at, seq, apps),
            TimerKind::Probe(addr) => self.on_probe_timer(now, t.at, addr, apps),
            TimerKind::Join => self.on_join_timer(now, t.at, apps),
            TimerKind::Hold => self.on_hold_timer(now, t.at),
            TimerKind::Leave => self.on_leave_timer(now, t.at),
            TimerKind::Lookup(seq) => self.on_lookup_timer(now, t.at, seq, apps),
            TimerKind::App { slot, token } => {
                self.app_timers = self.app_timers.saturating_sub(1);
                if let Some(s) = apps.get_mut(slot) {
                    let mut ctx = Context {
                        core: self,
                        app: s.id,
                        slot,
                        now,
                    };
                    s.app.timer(&mut ctx, token);
                }
            }
        }
    }

    #[cfg(any(test, feature = "invariants"))]
    pub(crate) fn check_invariants(&self) -> Result<(), &'static str> {
        use crate::leafset::Side;
        let own = self.me.id;
        for side in [Side::Cw, Side::Ccw] {
            let ids: Vec<Id> = self.leaf.side_peers(side).map(|p| p.id()).collect();
            if ids.len() > self.leaf.half() {
                return Err("leaf-set side over capacity");
            }
            if ids.contains(&own) {
                return Err("leaf set holds our own id");
            }
            let dist = |id: Id| self.leaf.dist(side, id);
            if ids.windows(2).any(|w| dist(w[0]) >= dist(w[1])) {
                return Err("leaf-set side not strictly ordered by distance");
            }
        }
        if !self.leaf.in_range(own) {
            return Err("own id outside the leaf set's range");
        }
        self.table.check()?;
        let per_cell = usize::from(self.cfg.cell_spares);
        if self.table.spares().any(|p| {
            self.table
                .cell_of(p.id())
                .is_some_and(|(r, c)| self.table.spares_in(r, c).count() > per_cell)
        }) {
            return Err("routing-table cell over its spares");
        }
        if self.table.entries().any(|p| p.id() == own) {
            return Err("routing table holds our own id");
        }
        if self.held.len() > self.cfg.max_held {
            return Err("held messages over bound");
        }
        if self.in_flight.len() > self.cfg.max_in_flight {
            return Err("messages in flight over bound");
        }
        if self.probes.len() > self.cfg.max_probes {
            return Err("probes over bound");
        }
        if self.lookups.len() > self.cfg.max_lookups {
            return Err("lookups over bound");
        }
        if self.verified.len() > VERIFIED_CACHE || self.dead.len() > DEAD_MEMORY {
            return Err("cache over bound");
        }
        if self.budgets.len() > probes::AMP_ENTRIES || self.relays.len() > join::MAX_RELAYS {
            return Err("budgets or relays over bound");
        }
        if self.notice.as_ref().is_some_and(|n| {
            n.failed.len() > crate::wire::MAX_FAILED || n.leaf.len() > self.cfg.leaf_set_size
        }) {
            return Err("kept failure notice over bound");
        }
        if self.seen.len() > SEEN_MAX {
            return Err("duplicate filter over bound");
        }
        if self.table.row_count() > Id::digit_count(self.cfg.b) {
            return Err("routing table has more rows than digits");
        }
        if self
            .pending_leaf
            .iter()
            .any(|id| !self.probes.values().any(|p| p.id == Some(*id)))
        {
            return Err("a pending leaf-set probe has no probe");
        }
        if self.timers.len() > 2 * self.timer_floor() + 64 {
            return Err("timer heap holds too many stale timers");
        }
        Ok(())
    }

    /// Timers that may legitimately be pending: one per message in flight, probe and
    /// application timer, plus the periodic ones.
    fn timer_floor(&self) -> usize {
        self.in_flight.len() + self.probes.len() + self.lookups.len() + self.app_timers + 8
    }
}

/// Turns the route body of an application message into what applications see.
pub(crate) fn app_view<A: Clone>(msg: &RouteMsg<A>) -> Option<RouteMessage<A>> {
    match &msg.body {
        crate::wire::RouteBody::App { app, payload } => Some(RouteMessage {
            id: MessageId {
                origin: msg.origin.id,
                seq: msg.msg_seq,
            },
            origin: msg.origin.clone(),
            key: msg.key,
            app: *app,
            hops: msg.hops,
            payload: payload.clone(),
        }),
        _ => None,
    }
}
