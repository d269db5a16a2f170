//! A replicated key-value store on the overlay, as an [`Application`].
//!
//! Every value lives on the `k` live nodes numerically closest to its key (its *replica set*,
//! [`Context::replica_set`]), and follows them as nodes join, fail and leave:
//!
//! - **Insert** routes the value to the key's root, which keeps it and pushes it to the rest of
//!   the replica set; the root answers the inserting node directly.
//! - **Get** routes a request to the key. Any node on the way that holds the value (as a
//!   replica, or in its cache) answers the requesting node directly and stops the request;
//!   otherwise the root answers, and a root that lacks the value (it joined a moment ago) asks
//!   the other nodes of the replica set, one after the other, to answer in its place.
//! - **Caching along routes**: the node that answers a get also gives a copy to the node that
//!   forwarded the request to it, so a popular key is answered a hop earlier with every
//!   lookup that passes, the way Kademlia caches; the requesting node keeps a copy as well.
//!   Cached copies expire after [`StoreConfig::cache_ttl`], and a get can refuse them.
//! - **Replica maintenance** works by comparing versions: a holder sends a node the keys and
//!   versions it holds ([`StoreMsg::Have`]), the node asks for what it lacks
//!   ([`StoreMsg::Want`]) and gets the values pushed. When a node joins the leaf set, every
//!   holder of a value the newcomer is now a replica of offers it; when a replica fails or
//!   leaves, every holder offers the value to the replica set as it now stands, so the node
//!   that takes the free place gets it. Every holder that is a replica in its own view offers,
//!   and so does one whose leaf set covers the key (the node a newcomer pushed out, an extra
//!   copy), not only the closest one: after joins and failures close together the closest
//!   may be a node still waiting for the value.
//! - **Hand-off**: every [`StoreConfig::refresh_period`] a node offers its values to their
//!   replica sets once more (this repairs what a lost message missed), and a node that is no
//!   longer in a value's replica set gives the value up, keeping it as a cached copy, only
//!   once `k` nodes closer to the key confirm they hold it ([`StoreMsg::Check`],
//!   [`StoreMsg::Held`]). A view of the ring that still counts a failed node not yet found
//!   dead never gets those confirmations, so a replica never gives a value up on a wrong
//!   view. A node that holds a value whose replica set lies beyond its leaf set (nodes
//!   joined in between), or whose closer nodes did not all confirm, routes it to the key's
//!   root like an insert and gives it up when the root has stored it.
//!
//! Values carry a version chosen by the writer; a replica keeps the highest version it has
//! seen (equal versions keep the value stored first). Every value that arrives, in an
//! insert, a replica push, an answer or a cached copy, goes through the validator if one is
//! set ([`Store::with_validator`]): a deployment that names values by their hash, or signs
//! them, rejects forgeries there. Replica pushes, version offers, hand-off checks and their
//! confirmations are taken only from leaf-set members (whose addresses the node verified),
//! cached copies only for keys this node recently forwarded a get for, and answers only for
//! its own outstanding requests, whose numbers others cannot predict
//! ([`Context::unguessable`]). Everything the store holds is bounded ([`StoreConfig`]); bytes
//! that do not decode are counted ([`StoreStats::malformed`]) and change nothing.
//!
//! What the store does not defend against: it is open for writing, as the overlay is open for
//! routing. Anyone can insert under any key (filling a node up to its limits) or claim a key
//! with the highest version; a deployment that needs owners checks them in the validator
//! (with signed values, say). And a node answers a get to the node the get names as its
//! origin: a forged get makes a holder send one value to a node of the overlay, as a forged
//! lookup makes a root answer one (the core verifies addresses it does not know first).
//! Request numbers are unpredictable to strangers, not to the nodes an insert or get passes
//! through, which see them.
//!
//! The store's messages ride in the payloads of routed and direct messages under the
//! application id the store is registered with; `WIRE.md` specifies them.
//!
//! ```
//! use pastry_core::store::{Store, StoreConfig, StoreEvent};
//! use pastry_core::{Config, Id, Instant, Node};
//!
//! const STORE: u16 = 1;
//! let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
//! node.register(STORE, Box::new(Store::<u32>::new(StoreConfig::default()).unwrap())).unwrap();
//! node.bootstrap(Instant::ZERO).unwrap();
//!
//! // Alone in its ring, the node is the root of every key.
//! let key = Id::new(42);
//! node.with_app(Instant::ZERO, STORE, |s: &mut Store<u32>, ctx| s.insert(ctx, key, 1, b"v".to_vec()))
//!     .unwrap()
//!     .unwrap();
//! let get = node
//!     .with_app(Instant::ZERO, STORE, |s: &mut Store<u32>, ctx| s.get(ctx, key))
//!     .unwrap()
//!     .unwrap();
//! let events: Vec<StoreEvent> = node
//!     .with_app(Instant::ZERO, STORE, |s: &mut Store<u32>, _| std::iter::from_fn(|| s.poll_event()).collect())
//!     .unwrap();
//! assert!(matches!(events[0], StoreEvent::Inserted { version: 1, .. }));
//! assert!(matches!(&events[1], StoreEvent::Found { request, value, .. } if *request == get && value == b"v"));
//! ```

mod codec;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::time::Duration;

pub use codec::{MAX_DIGEST_ENTRIES, Status, StoreMsg, WIRE_VERSION};

use crate::{Address, Application, Context, Forward, Id, Instant, LeafChange, NodeHandle};
use crate::{RouteError, RouteMessage};

/// Limits and periods of a [`Store`]. Start from [`StoreConfig::default`] and change fields.
///
/// ```
/// use pastry_core::store::StoreConfig;
/// let mut config = StoreConfig::default();
/// config.replicas = 5;
/// assert!(config.validate().is_ok());
/// config.replicas = 0;
/// assert!(config.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Replicas per value, `k`: the value lives on the `k` live nodes closest to its key.
    /// At least 1; values above `L/2` act as `L/2` (a node knows `L/2` nodes on each side,
    /// and gives a value up only when `k` nodes closer to its key confirm they hold it).
    pub replicas: u8,
    /// Most values this node stores as a replica.
    pub max_items: usize,
    /// Most bytes of values this node stores as a replica.
    pub max_bytes: usize,
    /// Most cached copies; 0 turns caching off.
    pub cache_items: usize,
    /// How long a cached copy may answer gets.
    pub cache_ttl: Duration,
    /// How long an insert or get waits for its answer before it is sent again.
    pub request_timeout: Duration,
    /// Times an unanswered request is sent again before it is reported as timed out.
    pub request_retries: u8,
    /// Most requests of this node waiting for an answer.
    pub max_pending: usize,
    /// How often a node offers its values to their replica sets again and hands off those
    /// whose replica set it left.
    pub refresh_period: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            replicas: 3,
            max_items: 1 << 16,
            max_bytes: 32 << 20,
            cache_items: 256,
            cache_ttl: Duration::from_secs(120),
            request_timeout: Duration::from_secs(3),
            request_retries: 2,
            max_pending: 4096,
            refresh_period: Duration::from_secs(600),
        }
    }
}

/// Why a [`StoreConfig`] was refused.
/// ```
/// use pastry_core::store::{StoreConfig, StoreConfigError};
/// let mut c = StoreConfig::default();
/// c.refresh_period = core::time::Duration::ZERO;
/// assert_eq!(c.validate(), Err(StoreConfigError::Zero("refresh_period")));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreConfigError {
    /// A field that must be positive is zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// A duration is longer than [`crate::MAX_DURATION`] (a day).
    #[error("{0} is longer than a day")]
    TooLong(&'static str),
}

impl StoreConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        let zero = [
            ("replicas", self.replicas == 0),
            ("max_items", self.max_items == 0),
            ("max_bytes", self.max_bytes == 0),
            ("cache_ttl", self.cache_ttl.is_zero()),
            ("request_timeout", self.request_timeout.is_zero()),
            ("max_pending", self.max_pending == 0),
            ("refresh_period", self.refresh_period.is_zero()),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(StoreConfigError::Zero(name));
        }
        let long = [
            ("cache_ttl", self.cache_ttl),
            ("request_timeout", self.request_timeout),
            ("refresh_period", self.refresh_period),
        ];
        match long.iter().find(|(_, d)| *d > crate::MAX_DURATION) {
            Some((name, _)) => Err(StoreConfigError::TooLong(name)),
            None => Ok(()),
        }
    }
}

/// Names one insert or get of this node.
/// ```
/// use pastry_core::store::RequestId;
/// assert_eq!(RequestId(3), RequestId(3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u32);

/// What the store reports to its owner ([`Store::poll_event`]).
/// ```
/// use pastry_core::store::{RequestId, StoreEvent};
/// use pastry_core::Id;
/// let e = StoreEvent::NotFound { request: RequestId(1), key: Id::new(2) };
/// assert!(matches!(e, StoreEvent::NotFound { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// The key's root stored the value (or already held this version) and pushed it to the
    /// rest of the replica set.
    Inserted {
        /// The insert.
        request: RequestId,
        /// Its key.
        key: Id,
        /// The version stored.
        version: u64,
        /// The root that stored it.
        root: Id,
    },
    /// The root holds a newer version, or this version with other bytes (then `stored` is
    /// the version of the insert); the insert changed nothing.
    Outdated {
        /// The insert.
        request: RequestId,
        /// Its key.
        key: Id,
        /// The version the root holds.
        stored: u64,
    },
    /// The root refused the value: its store is full, or its validator rejected the value.
    Refused {
        /// The insert.
        request: RequestId,
        /// Its key.
        key: Id,
    },
    /// A get found the value.
    Found {
        /// The get.
        request: RequestId,
        /// Its key.
        key: Id,
        /// The version found.
        version: u64,
        /// The value.
        value: Vec<u8>,
        /// The node that answered.
        from: Id,
        /// Whether the answer came from a cached copy rather than a replica.
        cached: bool,
    },
    /// Neither the key's root nor the other replicas it asked in turn hold a value for the
    /// key.
    NotFound {
        /// The get.
        request: RequestId,
        /// Its key.
        key: Id,
    },
    /// No answer came after [`StoreConfig::request_retries`] retries.
    TimedOut {
        /// The request.
        request: RequestId,
        /// Its key.
        key: Id,
    },
}

/// Why a request could not be started.
/// ```
/// use pastry_core::store::StoreError;
/// let e = StoreError::ValueTooLarge { len: 5000, max: 1100 };
/// assert!(e.to_string().contains("5000"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The value does not fit in one message.
    #[error("value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The most a value may have.
        max: usize,
    },
    /// [`StoreConfig::max_pending`] requests are already waiting.
    #[error("too many requests waiting for an answer")]
    TooManyPending,
    /// The node cannot route yet (or any more).
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// Counters of a [`Store`].
/// ```
/// use pastry_core::store::StoreStats;
/// assert_eq!(StoreStats::default().malformed, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Store messages that did not decode.
    pub malformed: u64,
    /// Messages that decoded but were not accepted: a replica push, offer, check,
    /// confirmation or fallback request from outside the leaf set, a push for a key this node
    /// is not near, an answer to no outstanding request of ours (a late second answer to a
    /// retried request counts here too), a cached copy nobody asked for, a value the
    /// validator rejected or too large to be answered with.
    pub rejected: u64,
    /// Values pushed to other replicas (on insert, join, failure and refresh).
    pub pushed: u64,
    /// Values that arrived from other replicas and were stored.
    pub replicated: u64,
    /// Gets this node answered from a cached copy.
    pub cache_hits: u64,
    /// Gets this node answered from its replicas (as the root or on the way).
    pub replica_hits: u64,
    /// Inserts or replicas refused because the store was full.
    pub full: u64,
    /// Values given up as replica because this node left their replica sets.
    pub demoted: u64,
    /// Values routed back to their key's root because this node's leaf set no longer
    /// reached their replica set.
    pub routed_handoffs: u64,
}

struct Item {
    version: u64,
    value: Vec<u8>,
}

struct Cached {
    version: u64,
    value: Vec<u8>,
    expires: Instant,
    used: u64,
}

enum Op {
    Insert {
        version: u64,
        value: Vec<u8>,
    },
    Get {
        cached_ok: bool,
    },
    /// A value held far from this node's leaf set, routed back to its key's root; the
    /// root's answer lets this node give it up. The owner hears nothing of it.
    Handoff {
        version: u64,
    },
}

impl Op {
    fn is_insert(&self) -> bool {
        matches!(self, Op::Insert { .. } | Op::Handoff { .. })
    }
}

struct Pending {
    key: Id,
    op: Op,
    attempt: u8,
}

/// How an arriving value was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// Stored (new, or newer than what was held).
    Stored,
    /// This version was already held.
    Same,
    /// A newer version is held.
    Older(u64),
    /// No room, or the validator said no.
    Refused,
}

/// Checks values before the store takes them: key, version, value. See
/// [`Store::with_validator`] for an example.
pub type Validator = Box<dyn Fn(Id, u64, &[u8]) -> bool + Send>;

/// Timer token of the periodic refresh; request timers use the request number and attempt
/// (below 2^40).
const REFRESH: u64 = u64::MAX;

/// Keys of recent gets this node forwarded, for which it accepts a cached copy.
const RECENT_FORWARDS: usize = 64;

/// A replicated key-value store, registered on a node as an [`Application`]; see the
/// [module docs](self) for what it does and an example.
pub struct Store<A: Address> {
    cfg: StoreConfig,
    items: BTreeMap<Id, Item>,
    bytes: usize,
    cache: BTreeMap<Id, Cached>,
    /// Gets forwarded lately (key, until when a copy is welcome), oldest first.
    forwarded: VecDeque<(Id, Instant)>,
    pending: BTreeMap<u32, Pending>,
    /// Values asked of a holder (key, until when the answer may come).
    wanted: BTreeMap<Id, Instant>,
    /// Values this node is handing off: the version, the closer nodes yet to confirm they
    /// hold it, and how many did.
    handoff: BTreeMap<Id, (u64, Vec<Id>, u8)>,
    events: VecDeque<StoreEvent>,
    tick: u64,
    refresh_armed: bool,
    validator: Option<Validator>,
    stats: StoreStats,
    _addr: core::marker::PhantomData<fn() -> A>,
}

impl<A: Address> Store<A> {
    /// A store with the given limits.
    pub fn new(cfg: StoreConfig) -> Result<Self, StoreConfigError> {
        cfg.validate()?;
        Ok(Store {
            cfg,
            items: BTreeMap::new(),
            bytes: 0,
            cache: BTreeMap::new(),
            forwarded: VecDeque::new(),
            pending: BTreeMap::new(),
            wanted: BTreeMap::new(),
            handoff: BTreeMap::new(),
            events: VecDeque::new(),
            tick: 0,
            refresh_armed: false,
            validator: None,
            stats: StoreStats::default(),
            _addr: core::marker::PhantomData,
        })
    }

    /// Sets a check every arriving value must pass (an insert at the root, a replica push, an
    /// answer, a cached copy), for example that the key is the hash of the value.
    ///
    /// ```
    /// use pastry_core::store::{Store, StoreConfig};
    /// use pastry_core::Id;
    /// // Values must be named by their first byte, for the sake of the example.
    /// let store = Store::<u32>::new(StoreConfig::default())
    ///     .unwrap()
    ///     .with_validator(Box::new(|key: Id, _version, value: &[u8]| {
    ///         value.first().map(|b| u128::from(*b)) == Some(key.as_u128())
    ///     }));
    /// assert_eq!(store.len(), 0);
    /// ```
    pub fn with_validator(mut self, validator: Validator) -> Self {
        self.validator = Some(validator);
        self
    }

    /// The largest value an insert accepts with this node's datagram size.
    ///
    /// ```
    /// # use pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// # use pastry_core::{Config, Id, Instant, Node};
    /// # let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// # node.register(1, Box::new(Store::<u32>::new(StoreConfig::default()).unwrap())).unwrap();
    /// # node.bootstrap(Instant::ZERO).unwrap();
    /// # let t = Instant::ZERO;
    /// let max = node.with_app(t, 1, |_: &mut Store<u32>, ctx| Store::<u32>::max_value(ctx)).unwrap();
    /// assert_eq!(max, node.max_payload() - 33);
    /// ```
    pub fn max_value(ctx: &Context<'_, A>) -> usize {
        ctx.max_payload().saturating_sub(codec::VALUE_OVERHEAD)
    }

    /// Stores `value` under `key` with `version` on the key's replica set.
    /// [`StoreEvent::Inserted`], [`StoreEvent::Outdated`], [`StoreEvent::Refused`] or
    /// [`StoreEvent::TimedOut`] follows.
    ///
    /// ```
    /// # use pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// # use pastry_core::{Config, Id, Instant, Node};
    /// # let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// # node.register(1, Box::new(Store::<u32>::new(StoreConfig::default()).unwrap())).unwrap();
    /// # node.bootstrap(Instant::ZERO).unwrap();
    /// # let t = Instant::ZERO;
    /// let big = node.with_app(t, 1, |s: &mut Store<u32>, ctx| s.insert(ctx, Id::new(3), 1, vec![0; 9000]));
    /// assert!(big.unwrap().is_err(), "too large for a datagram");
    /// node.with_app(t, 1, |s: &mut Store<u32>, ctx| s.insert(ctx, Id::new(3), 1, b"v".to_vec())).unwrap().unwrap();
    /// let e = node.with_app(t, 1, |s: &mut Store<u32>, _| s.poll_event()).unwrap();
    /// assert!(matches!(e, Some(StoreEvent::Inserted { version: 1, .. })));
    /// ```
    pub fn insert(
        &mut self,
        ctx: &mut Context<'_, A>,
        key: Id,
        version: u64,
        value: Vec<u8>,
    ) -> Result<RequestId, StoreError> {
        let max = Self::max_value(ctx);
        if value.len() > max {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        self.start(ctx, key, Op::Insert { version, value })
    }

    /// Looks `key` up; a cached copy may answer. [`StoreEvent::Found`],
    /// [`StoreEvent::NotFound`] or [`StoreEvent::TimedOut`] follows (at once when this node
    /// holds the value).
    ///
    /// ```
    /// # use pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// # use pastry_core::{Config, Id, Instant, Node};
    /// # let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// # node.register(1, Box::new(Store::<u32>::new(StoreConfig::default()).unwrap())).unwrap();
    /// # node.bootstrap(Instant::ZERO).unwrap();
    /// # let t = Instant::ZERO;
    /// node.with_app(t, 1, |s: &mut Store<u32>, ctx| s.get(ctx, Id::new(3))).unwrap().unwrap();
    /// let e = node.with_app(t, 1, |s: &mut Store<u32>, _| s.poll_event()).unwrap();
    /// assert!(matches!(e, Some(StoreEvent::NotFound { .. })), "nothing stored yet");
    /// ```
    pub fn get(&mut self, ctx: &mut Context<'_, A>, key: Id) -> Result<RequestId, StoreError> {
        self.start(ctx, key, Op::Get { cached_ok: true })
    }

    /// Looks `key` up in its replica set only, skipping cached copies.
    ///
    /// ```
    /// # use pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// # use pastry_core::{Config, Id, Instant, Node};
    /// # let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// # node.register(1, Box::new(Store::<u32>::new(StoreConfig::default()).unwrap())).unwrap();
    /// # node.bootstrap(Instant::ZERO).unwrap();
    /// # let t = Instant::ZERO;
    /// node.with_app(t, 1, |s: &mut Store<u32>, ctx| s.insert(ctx, Id::new(3), 1, b"v".to_vec())).unwrap().unwrap();
    /// node.with_app(t, 1, |s: &mut Store<u32>, ctx| s.get_fresh(ctx, Id::new(3))).unwrap().unwrap();
    /// let events: Vec<StoreEvent> =
    ///     node.with_app(t, 1, |s: &mut Store<u32>, _| std::iter::from_fn(|| s.poll_event()).collect()).unwrap();
    /// assert!(matches!(events[1], StoreEvent::Found { cached: false, .. }));
    /// ```
    pub fn get_fresh(
        &mut self,
        ctx: &mut Context<'_, A>,
        key: Id,
    ) -> Result<RequestId, StoreError> {
        self.start(ctx, key, Op::Get { cached_ok: false })
    }

    /// The next event for the owner, if any.
    pub fn poll_event(&mut self) -> Option<StoreEvent> {
        self.events.pop_front()
    }

    /// The version and value this node holds as a replica of `key`.
    ///
    /// ```
    /// # use pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// # use pastry_core::{Config, Id, Instant, Node};
    /// # let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// # node.register(1, Box::new(Store::<u32>::new(StoreConfig::default()).unwrap())).unwrap();
    /// # node.bootstrap(Instant::ZERO).unwrap();
    /// # let t = Instant::ZERO;
    /// node.with_app(t, 1, |s: &mut Store<u32>, ctx| s.insert(ctx, Id::new(3), 4, b"v".to_vec())).unwrap().unwrap();
    /// let store = node.app::<Store<u32>>(1).unwrap();
    /// assert_eq!(store.replica(Id::new(3)), Some((4, &b"v"[..])));
    /// assert_eq!(store.keys().collect::<Vec<_>>(), vec![Id::new(3)]);
    /// assert_eq!((store.len(), store.is_empty(), store.cached_len()), (1, false, 0));
    /// ```
    pub fn replica(&self, key: Id) -> Option<(u64, &[u8])> {
        self.items
            .get(&key)
            .map(|i| (i.version, i.value.as_slice()))
    }

    /// The keys this node holds as a replica, in id order.
    pub fn keys(&self) -> impl Iterator<Item = Id> + '_ {
        self.items.keys().copied()
    }

    /// Values held as a replica.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no value is held as a replica.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Cached copies held (expired ones included until the next refresh drops them).
    pub fn cached_len(&self) -> usize {
        self.cache.len()
    }

    /// The counters.
    ///
    /// ```
    /// # use pastry_core::store::{Store, StoreConfig, StoreEvent};
    /// # use pastry_core::{Config, Id, Instant, Node};
    /// # let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    /// # node.register(1, Box::new(Store::<u32>::new(StoreConfig::default()).unwrap())).unwrap();
    /// # node.bootstrap(Instant::ZERO).unwrap();
    /// # let t = Instant::ZERO;
    /// node.with_app(t, 1, |s: &mut Store<u32>, ctx| s.insert(ctx, Id::new(3), 1, b"v".to_vec())).unwrap().unwrap();
    /// node.with_app(t, 1, |s: &mut Store<u32>, ctx| s.get(ctx, Id::new(3))).unwrap().unwrap();
    /// let store = node.app::<Store<u32>>(1).unwrap();
    /// assert_eq!((store.stats().malformed, store.stats().rejected), (0, 0));
    /// assert!(store.memory_bytes() > 0);
    /// ```
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Bytes of memory the store holds (values and their records).
    pub fn memory_bytes(&self) -> usize {
        const RECORD: usize = 64;
        let items: usize = self
            .items
            .values()
            .map(|i| i.value.capacity() + RECORD)
            .sum();
        let cache: usize = self
            .cache
            .values()
            .map(|c| c.value.capacity() + RECORD)
            .sum();
        let pending: usize = self
            .pending
            .values()
            .map(|p| match &p.op {
                Op::Insert { value, .. } => value.capacity() + RECORD,
                Op::Get { .. } | Op::Handoff { .. } => RECORD,
            })
            .sum();
        core::mem::size_of::<Self>()
            + items
            + cache
            + pending
            + self.forwarded.capacity() * core::mem::size_of::<(Id, Instant)>()
            + self.wanted.len() * RECORD
            + self
                .handoff
                .values()
                .map(|(_, ids, _)| RECORD + ids.capacity() * core::mem::size_of::<Id>())
                .sum::<usize>()
            + self.events.capacity() * core::mem::size_of::<StoreEvent>()
    }

    /// Checks that everything the store holds is within its bounds and consistent: values
    /// and bytes within the limits and counted right, cached copies, requests, asks and
    /// hand-offs bounded, no key both a replica and a cached copy.
    ///
    /// ```
    /// use pastry_core::store::{Store, StoreConfig};
    /// assert_eq!(Store::<u32>::new(StoreConfig::default()).unwrap().check_invariants(), Ok(()));
    /// ```
    #[cfg(any(test, feature = "invariants"))]
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let c = &self.cfg;
        let bytes: usize = self.items.values().map(|i| i.value.len()).sum();
        let checks = [
            (
                self.items.len() <= c.max_items,
                "more values than max_items",
            ),
            (
                bytes == self.bytes,
                "byte count differs from the values held",
            ),
            (self.bytes <= c.max_bytes, "more bytes than max_bytes"),
            (
                self.cache.len() <= c.cache_items,
                "more cached copies than cache_items",
            ),
            (
                self.pending.len() <= c.max_pending,
                "more requests than max_pending",
            ),
            (
                self.wanted.len() <= c.max_pending,
                "more asks than max_pending",
            ),
            (
                self.handoff.len() <= c.max_items,
                "more hand-offs than max_items",
            ),
            (
                self.forwarded.len() <= RECENT_FORWARDS,
                "too many recent forwards",
            ),
            (
                self.items.keys().all(|k| !self.cache.contains_key(k)),
                "a key is both a replica and a cached copy",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, what)) => Err(what),
            None => Ok(()),
        }
    }

    fn start(
        &mut self,
        ctx: &mut Context<'_, A>,
        key: Id,
        op: Op,
    ) -> Result<RequestId, StoreError> {
        if self.pending.len() >= self.cfg.max_pending {
            return Err(StoreError::TooManyPending);
        }
        self.arm_refresh(ctx);
        let req = self.request_id(ctx);
        if let Op::Get { cached_ok } = op
            && let Some((version, value, cached)) = self.local(ctx.now(), key, cached_ok)
        {
            let from = ctx.local().id;
            self.events.push_back(StoreEvent::Found {
                request: RequestId(req),
                key,
                version,
                value,
                from,
                cached,
            });
            return Ok(RequestId(req));
        }
        self.pending.insert(
            req,
            Pending {
                key,
                op,
                attempt: 0,
            },
        );
        if let Err(e) = self.send_request(ctx, req) {
            self.pending.remove(&req);
            return Err(e.into());
        }
        Ok(RequestId(req))
    }

    /// A number for a new request that answers must echo: unpredictable to others (a forged
    /// answer would have to guess it), and not in use.
    fn request_id(&mut self, ctx: &mut Context<'_, A>) -> u32 {
        loop {
            let id = ctx.unguessable();
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// Routes (again) the request `req` and arms its timer.
    fn send_request(&mut self, ctx: &mut Context<'_, A>, req: u32) -> Result<(), RouteError> {
        let Some(p) = self.pending.get(&req) else {
            return Ok(());
        };
        let msg: StoreMsg<A> = match &p.op {
            Op::Insert { version, value } => StoreMsg::Insert {
                request: req,
                key: p.key,
                version: *version,
                value: value.clone(),
            },
            Op::Get { cached_ok } => StoreMsg::Get {
                request: req,
                key: p.key,
                cached_ok: *cached_ok,
                last: None,
            },
            Op::Handoff { version } => match self.items.get(&p.key) {
                Some(i) if i.version == *version => StoreMsg::Insert {
                    request: req,
                    key: p.key,
                    version: *version,
                    value: i.value.clone(),
                },
                // Replaced or given up meanwhile: nothing to hand off.
                _ => {
                    self.pending.remove(&req);
                    return Ok(());
                }
            },
        };
        let token = (u64::from(req) << 8) | u64::from(p.attempt);
        ctx.route(p.key, msg.encode())?;
        ctx.set_timer(self.cfg.request_timeout, token);
        Ok(())
    }

    /// The value of `key` held here: as a replica, or (if allowed) as a live cached copy.
    fn local(&mut self, now: Instant, key: Id, cached_ok: bool) -> Option<(u64, Vec<u8>, bool)> {
        if let Some(i) = self.items.get(&key) {
            return Some((i.version, i.value.clone(), false));
        }
        if !cached_ok {
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        let c = self.cache.get_mut(&key).filter(|c| c.expires > now)?;
        c.used = tick;
        Some((c.version, c.value.clone(), true))
    }

    fn valid(&self, key: Id, version: u64, value: &[u8]) -> bool {
        self.validator
            .as_ref()
            .is_none_or(|v| v(key, version, value))
    }

    /// Takes a value as a replica.
    fn take(&mut self, key: Id, version: u64, value: Vec<u8>) -> Taken {
        if !self.valid(key, version, &value) {
            self.stats.rejected += 1;
            return Taken::Refused;
        }
        let held = self.items.get(&key).map(|i| (i.version, i.value.len()));
        let freed = match held {
            Some((v, _)) if v > version => return Taken::Older(v),
            Some((v, _)) if v == version => {
                // The same version with other bytes (two writers chose one version) is refused:
                // the first value stays, and the writer hears that the version is taken.
                let same = self.items.get(&key).is_some_and(|i| i.value == value);
                return if same { Taken::Same } else { Taken::Older(v) };
            }
            Some((_, len)) => len,
            None => 0,
        };
        let fits = self.bytes - freed + value.len() <= self.cfg.max_bytes
            && (held.is_some() || self.items.len() < self.cfg.max_items);
        if !fits {
            self.stats.full += 1;
            return Taken::Refused;
        }
        self.bytes = self.bytes - freed + value.len();
        self.items.insert(key, Item { version, value });
        self.cache.remove(&key);
        self.wanted.remove(&key);
        Taken::Stored
    }

    /// Keeps a copy of a value this node is no replica of.
    fn cache_copy(&mut self, now: Instant, key: Id, version: u64, value: Vec<u8>) {
        if self.cfg.cache_items == 0 || self.items.contains_key(&key) {
            return;
        }
        if self.cache.get(&key).is_some_and(|c| c.version > version) {
            return;
        }
        if !self.cache.contains_key(&key) && self.cache.len() >= self.cfg.cache_items {
            // Evict the least recently used copy.
            if let Some(old) = self
                .cache
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| *k)
            {
                self.cache.remove(&old);
            }
        }
        self.tick += 1;
        self.cache.insert(
            key,
            Cached {
                version,
                value,
                expires: now + self.cfg.cache_ttl,
                used: self.tick,
            },
        );
    }

    fn arm_refresh(&mut self, ctx: &mut Context<'_, A>) {
        if self.refresh_armed {
            return;
        }
        self.refresh_armed = true;
        // Spread the nodes' rounds over the period by their ids.
        let period = self.cfg.refresh_period;
        let frac = (ctx.local().id.as_u128() >> 64) as u64 % 1024;
        let first = period / 2 + period * frac as u32 / 2048;
        ctx.set_timer(first, REFRESH);
    }

    /// Replicas per value: [`StoreConfig::replicas`], at most `L/2` (a node knows `L/2`
    /// nodes on each side, and a hand-off needs `k` nodes closer to the key).
    fn k(&self, ctx: &Context<'_, A>) -> usize {
        usize::from(self.cfg.replicas)
            .min(ctx.leaf_set().half())
            .max(1)
    }

    fn replicas(&self, ctx: &Context<'_, A>, key: Id) -> Vec<NodeHandle<A>> {
        ctx.replica_set(key, self.k(ctx))
    }

    /// Sends each node its list of (key, version) pairs, in messages made by `make` that
    /// fit a payload.
    fn send_digests(
        &mut self,
        ctx: &mut Context<'_, A>,
        lists: BTreeMap<NodeHandle<A>, Vec<(Id, u64)>>,
        make: fn(Vec<(Id, u64)>) -> StoreMsg<A>,
    ) {
        let per = codec::max_digest(ctx.max_payload());
        for (to, entries) in lists {
            for chunk in entries.chunks(per) {
                self.send(ctx, &to, &make(chunk.to_vec()));
            }
        }
    }

    /// Sends `to` a list of keys, in messages made by `make` that fit a payload.
    fn send_keys(
        &mut self,
        ctx: &mut Context<'_, A>,
        to: &NodeHandle<A>,
        keys: &[Id],
        make: fn(Vec<Id>) -> StoreMsg<A>,
    ) {
        for chunk in keys.chunks(codec::max_keys(ctx.max_payload())) {
            self.send(ctx, to, &make(chunk.to_vec()));
        }
    }

    /// Sends `msg` to `to`, or handles it here when `to` is this node.
    fn send(&mut self, ctx: &mut Context<'_, A>, to: &NodeHandle<A>, msg: &StoreMsg<A>) {
        if to.id == ctx.local().id {
            let me = to.clone();
            self.on_message(ctx, &me, msg.clone());
        } else {
            // A full queue or a node that stopped: the request times out, refresh repairs.
            let _ = ctx.send_direct(to.clone(), msg.encode());
        }
    }

    /// Sends the value of `key` held here as a replica to `to` (cached copies are never
    /// pushed: they came from outside the replica set).
    fn push(&mut self, ctx: &mut Context<'_, A>, to: &NodeHandle<A>, key: Id) {
        let Some((version, value)) = self.items.get(&key).map(|i| (i.version, i.value.clone()))
        else {
            return;
        };
        let msg = StoreMsg::Replica {
            key,
            version,
            value,
        };
        self.stats.pushed += 1;
        self.send(ctx, to, &msg);
    }

    /// Answers a get for `key` from what this node holds; false if it holds nothing usable.
    fn answer_get(
        &mut self,
        ctx: &mut Context<'_, A>,
        origin: &NodeHandle<A>,
        request: u32,
        key: Id,
        cached_ok: bool,
        last: Option<NodeHandle<A>>,
    ) -> bool {
        let Some((version, value, cached)) = self.local(ctx.now(), key, cached_ok) else {
            return false;
        };
        // A copy that came in larger than this node can send (a direct message carries a
        // little more than a routed one) cannot answer.
        if value.len() > Self::max_value(ctx) {
            return false;
        }
        if cached {
            self.stats.cache_hits += 1;
        } else {
            self.stats.replica_hits += 1;
        }
        // The node that forwarded the get to us gets a copy: the next get that passes it
        // stops there.
        if self.cfg.cache_items > 0
            && let Some(last) =
                last.filter(|l| l.id != origin.id && l.id != ctx.local().id && Self::known(ctx, l))
        {
            let copy = StoreMsg::CacheCopy {
                key,
                version,
                value: value.clone(),
            };
            self.send(ctx, &last, &copy);
        }
        let found = StoreMsg::Found {
            request,
            key,
            version,
            cached,
            value,
        };
        self.send(ctx, origin, &found);
        true
    }

    /// A message of ours arrived from `from` (directly, or as the root of a routed one).
    fn on_message(&mut self, ctx: &mut Context<'_, A>, from: &NodeHandle<A>, msg: StoreMsg<A>) {
        match msg {
            StoreMsg::Replica {
                key,
                version,
                value,
            } => self.on_replica(ctx, from, key, version, value),
            StoreMsg::CacheCopy {
                key,
                version,
                value,
            } => {
                let now = ctx.now();
                let asked = self
                    .forwarded
                    .iter()
                    .any(|(k, until)| *k == key && *until > now);
                let fits = value.len() <= Self::max_value(ctx);
                if asked && fits && self.valid(key, version, &value) {
                    self.cache_copy(now, key, version, value);
                } else {
                    self.stats.rejected += 1;
                }
            }
            StoreMsg::Stored {
                request,
                key,
                version,
                status,
            } => {
                let Some(p) = self.answered(request, key, true) else {
                    return;
                };
                if let Op::Handoff { version: handed } = p.op {
                    // The root holds it now (or a newer one), and pushes it to the replicas.
                    // A root is closer to the key than this node, which is no replica.
                    let me = ctx.local().id;
                    if status != codec::Status::Refused && key.is_closer(from.id, me) {
                        let now = ctx.now();
                        if self.items.get(&key).is_some_and(|i| i.version <= handed) {
                            self.demote(now, key);
                        }
                    }
                    return;
                }
                let request = RequestId(request);
                let event = match status {
                    codec::Status::Stored => StoreEvent::Inserted {
                        request,
                        key,
                        version,
                        root: from.id,
                    },
                    codec::Status::Outdated => StoreEvent::Outdated {
                        request,
                        key,
                        stored: version,
                    },
                    codec::Status::Refused => StoreEvent::Refused { request, key },
                };
                drop(p);
                self.events.push_back(event);
            }
            StoreMsg::Found {
                request,
                key,
                version,
                cached,
                value,
            } => {
                if !self.valid(key, version, &value) {
                    self.stats.rejected += 1;
                    return;
                }
                if self.answered(request, key, false).is_none() {
                    return;
                }
                let now = ctx.now();
                self.cache_copy(now, key, version, value.clone());
                self.events.push_back(StoreEvent::Found {
                    request: RequestId(request),
                    key,
                    version,
                    value,
                    from: from.id,
                    cached,
                });
            }
            StoreMsg::Missing { request, key } => {
                if self.answered(request, key, false).is_some() {
                    self.events.push_back(StoreEvent::NotFound {
                        request: RequestId(request),
                        key,
                    });
                }
            }
            StoreMsg::GetFallback {
                request,
                key,
                cached_ok,
                left,
                origin,
            } => {
                // Only a member, as a key's root or replica, asks this of us.
                if !self.is_member(ctx, from) {
                    self.stats.rejected += 1;
                    return;
                }
                if !self.answer_get(ctx, &origin, request, key, cached_ok, None) {
                    let left = left.saturating_sub(1);
                    self.fall_back(ctx, &origin, request, key, cached_ok, left);
                }
            }
            StoreMsg::Have { entries } => {
                if self.is_member(ctx, from) {
                    self.on_have(ctx, from, &entries);
                } else {
                    self.stats.rejected += 1;
                }
            }
            StoreMsg::Check { entries } => self.on_check(ctx, from, &entries),
            StoreMsg::Held { keys } => self.on_held(ctx, from, &keys),
            StoreMsg::Want { mut keys } => {
                if !self.is_member(ctx, from) {
                    self.stats.rejected += 1;
                    return;
                }
                // One push per key, however often the list names it.
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    self.push(ctx, from, key);
                }
            }
            // Inserts and gets travel as routed messages (`deliver` and `forward`).
            StoreMsg::Insert { .. } | StoreMsg::Get { .. } => self.stats.rejected += 1,
        }
    }

    /// Lacking the value of a get: asks the next replica (after this node, in its view) to
    /// answer, if `left` replicas may still be asked, else answers that the key has none.
    fn fall_back(
        &mut self,
        ctx: &mut Context<'_, A>,
        origin: &NodeHandle<A>,
        request: u32,
        key: Id,
        cached_ok: bool,
        left: u8,
    ) {
        let me = ctx.local().id;
        let r = self.replicas(ctx, key);
        // The requesting node looked in its own store before asking.
        let next = r
            .iter()
            .skip_while(|h| h.id != me)
            .skip(1)
            .find(|h| h.id != origin.id)
            .cloned();
        match next.filter(|_| left > 0) {
            Some(next) => {
                let ask = StoreMsg::GetFallback {
                    request,
                    key,
                    cached_ok,
                    left,
                    origin: origin.clone(),
                };
                self.send(ctx, &next, &ask);
            }
            None => self.send(ctx, origin, &StoreMsg::Missing { request, key }),
        }
    }

    /// Removes and returns the pending request an answer names, if it is ours and of the
    /// right kind.
    fn answered(&mut self, request: u32, key: Id, insert: bool) -> Option<Pending> {
        let ours = self
            .pending
            .get(&request)
            .is_some_and(|p| p.key == key && p.op.is_insert() == insert);
        if !ours {
            self.stats.rejected += 1;
            return None;
        }
        self.pending.remove(&request)
    }

    /// Whether `h` is a node this node knows at that address (a leaf-set member or a
    /// routing-table entry): a get's `last` names the node that forwarded it, but anyone
    /// could write it, and a copy goes only where a node we know would receive it.
    fn known(ctx: &Context<'_, A>, h: &NodeHandle<A>) -> bool {
        ctx.leaf_set()
            .get(h.id)
            .or_else(|| ctx.routing_table().find(h.id))
            .is_some_and(|p| p.handle.addr == h.addr)
    }

    /// Whether `from` is the leaf-set member it claims to be (leaf-set members' addresses
    /// are verified).
    fn is_member(&self, ctx: &Context<'_, A>, from: &NodeHandle<A>) -> bool {
        from.id == ctx.local().id
            || ctx
                .leaf_set()
                .get(from.id)
                .is_some_and(|p| p.handle.addr == from.addr)
    }

    fn on_replica(
        &mut self,
        ctx: &mut Context<'_, A>,
        from: &NodeHandle<A>,
        key: Id,
        version: u64,
        value: Vec<u8>,
    ) {
        let fits = value.len() <= Self::max_value(ctx);
        if !fits || !self.is_member(ctx, from) || !self.plausible_replica(ctx, key) {
            self.stats.rejected += 1;
            return;
        }
        if self.take(key, version, value) == Taken::Stored {
            self.stats.replicated += 1;
        }
    }

    /// Whether this node may be a replica of `key` in a member's view: the key is in this
    /// node's neighbourhood (it is among the `L/2 + 1` nodes closest to the key that it
    /// knows). A stricter check (among the `k` closest) would refuse values while this node
    /// still counts replicas that failed and that it has not yet found dead, which after a
    /// mass failure can be many; a value taken too eagerly is given up at the next refresh.
    fn plausible_replica(&self, ctx: &Context<'_, A>, key: Id) -> bool {
        // Not also "in the leaf set's range": a node that has just joined knows part of its
        // leaf set, and would refuse the values it joined to hold.
        let me = ctx.local().id;
        let all = ctx.leaf_set().half() + 1;
        ctx.replica_set(key, all).iter().any(|h| h.id == me)
    }

    /// A holder (a leaf-set member) told us which versions it holds.
    fn on_have(&mut self, ctx: &mut Context<'_, A>, from: &NodeHandle<A>, entries: &[(Id, u64)]) {
        let now = ctx.now();
        let mut want = Vec::new();
        // One answer per key, however often the list names it.
        let mut entries = entries.to_vec();
        entries.sort_unstable_by_key(|(key, _)| *key);
        entries.dedup_by_key(|(key, _)| *key);
        for &(key, version) in &entries {
            if !self.plausible_replica(ctx, key) {
                self.stats.rejected += 1;
                continue;
            }
            match self.items.get(&key).map(|i| i.version) {
                Some(v) if v > version => self.push(ctx, from, key),
                Some(v) if v == version => {}
                // Several holders offer at once: ask the first, and again only once the
                // request could have been answered.
                _ if self.wanted.get(&key).is_some_and(|until| *until > now) => {}
                _ => {
                    if self.wanted.len() < self.cfg.max_pending {
                        self.wanted.insert(key, now + self.cfg.request_timeout);
                    }
                    want.push(key);
                }
            }
        }
        self.send_keys(ctx, from, &want, |keys| StoreMsg::Want { keys });
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, A>, token: u64) {
        if token == REFRESH {
            self.refresh(ctx);
            ctx.set_timer(self.cfg.refresh_period, REFRESH);
            return;
        }

        let req = (token >> 8) as u32;
        let attempt = (token & 0xff) as u8;
        let Some(p) = self.pending.get_mut(&req) else {
            return;
        };
        if p.attempt != attempt {
            return;
        }
        if p.attempt < self.cfg.request_retries {
            p.attempt += 1;
            if self.send_request(ctx, req).is_ok() {
                return;
            }
        }
        if let Some(p) = self.pending.remove(&req)
            && !matches!(p.op, Op::Handoff { .. })
        {
            self.events.push_back(StoreEvent::TimedOut {
                request: RequestId(req),
                key: p.key,
            });
        }
    }

    /// The periodic round: compare versions with the other replicas of every value held
    /// here, give up values whose replica set this node left, drop expired copies.
    fn refresh(&mut self, ctx: &mut Context<'_, A>) {
        let now = ctx.now();
        // Hand-offs the last round could not complete go to the key's root instead.
        let stuck = core::mem::take(&mut self.handoff);
        self.hand_off(ctx, &stuck);
        let handoff = core::mem::take(&mut self.handoff);
        self.offer(ctx, false, |key, r| {
            if handoff.contains_key(&key) {
                Vec::new()
            } else {
                r.to_vec()
            }
        });
        self.handoff = handoff;
        self.cache.retain(|_, c| c.expires > now);
        self.forwarded.retain(|(_, until)| *until > now);
        self.wanted.retain(|_, until| *until > now);
    }

    /// Starts giving up the values whose replica set this node left (in its view). Such a
    /// value is given up once `k` nodes closer to its key confirm they hold it: a view that
    /// still counts a failed node not yet found dead gets fewer confirmations, and one that
    /// misses closer nodes (this node is far from the key) asks all the closer nodes it
    /// knows. Values in `stuck` (their closer nodes did not all confirm last time) and values
    /// whose key lies beyond the leaf set are routed to their key's root instead, and given
    /// up once it has stored them.
    fn hand_off(&mut self, ctx: &mut Context<'_, A>, stuck: &BTreeMap<Id, (u64, Vec<Id>, u8)>) {
        let me = ctx.local().id;
        let all = ctx.leaf_set().half() + 1;
        let mut checks: BTreeMap<NodeHandle<A>, Vec<(Id, u64)>> = BTreeMap::new();
        let mut far = Vec::new();
        for (&key, item) in &self.items {
            if !ctx.leaf_set().in_range(key) {
                far.push((key, item.version));
                continue;
            }
            let known = ctx.replica_set(key, all);
            let closer: Vec<NodeHandle<A>> = known.into_iter().take_while(|h| h.id != me).collect();
            if closer.len() < self.k(ctx) {
                continue;
            }
            if stuck.contains_key(&key) {
                far.push((key, item.version));
                continue;
            }
            let ids = closer.iter().map(|h| h.id).collect();
            self.handoff.insert(key, (item.version, ids, 0));
            for h in closer {
                checks.entry(h).or_default().push((key, item.version));
            }
        }
        self.send_digests(ctx, checks, |entries| StoreMsg::Check { entries });
        let mut busy: BTreeSet<Id> = self
            .pending
            .values()
            .filter(|p| p.op.is_insert())
            .map(|p| p.key)
            .collect();
        // Hand-offs take at most half the request slots, so that the owner's requests
        // still find room; the rest wait for the next round.
        let budget = (self.cfg.max_pending / 2).max(1);
        let mut handing = self
            .pending
            .values()
            .filter(|p| matches!(p.op, Op::Handoff { .. }))
            .count();
        for (key, version) in far {
            if self.pending.len() >= self.cfg.max_pending || handing >= budget {
                break;
            }
            if !busy.insert(key) {
                continue;
            }
            let req = self.request_id(ctx);
            let op = Op::Handoff { version };
            self.pending.insert(
                req,
                Pending {
                    key,
                    op,
                    attempt: 0,
                },
            );
            if self.send_request(ctx, req).is_err() {
                self.pending.remove(&req);
            } else {
                handing += 1;
                self.stats.routed_handoffs += 1;
            }
        }
    }

    /// A node leaving these values' replica sets asks whether we hold them: say which we
    /// do, and ask for those we lack if we are a replica of them in our own view.
    fn on_check(&mut self, ctx: &mut Context<'_, A>, from: &NodeHandle<A>, entries: &[(Id, u64)]) {
        if !self.is_member(ctx, from) {
            self.stats.rejected += 1;
            return;
        }
        let me = ctx.local().id;
        let mut held = Vec::new();
        let mut missing = Vec::new();
        for &(key, version) in entries {
            if self.items.get(&key).is_some_and(|i| i.version >= version) {
                held.push(key);
            } else if self.replicas(ctx, key).iter().any(|h| h.id == me) {
                missing.push((key, version));
            }
        }
        self.send_keys(ctx, from, &held, |keys| StoreMsg::Held { keys });
        self.on_have(ctx, from, &missing);
    }

    /// Closer nodes confirmed values this node is handing off; give up those that `k`
    /// confirmed.
    fn on_held(&mut self, ctx: &mut Context<'_, A>, from: &NodeHandle<A>, keys: &[Id]) {
        // A confirmation from anyone else could make every copy be given up.
        if !self.is_member(ctx, from) {
            self.stats.rejected += 1;
            return;
        }
        let now = ctx.now();
        let k = u8::try_from(self.k(ctx)).unwrap_or(u8::MAX);
        for key in keys {
            let Some((version, waiting, confirmed)) = self.handoff.get_mut(key) else {
                continue;
            };
            let before = waiting.len();
            waiting.retain(|id| *id != from.id);
            if waiting.len() < before {
                *confirmed += 1;
            }
            if *confirmed < k {
                continue;
            }
            let version = *version;
            self.handoff.remove(key);
            if self.items.get(key).is_some_and(|i| i.version <= version) {
                self.demote(now, *key);
            }
        }
    }

    /// Tells nodes which versions this node holds ([`StoreMsg::Have`]), one digest per node:
    /// `targets` names, for each value held here (given its key and replica set), the nodes
    /// to tell. A node that lacks a value or holds an older one asks for it
    /// ([`StoreMsg::Want`]); one that holds a newer one sends it back.
    ///
    /// Every holder offers, not only the key's primary: after joins and failures close
    /// together the primary may be a node that has not received the value yet.
    fn offer(
        &mut self,
        ctx: &mut Context<'_, A>,
        near_ok: bool,
        mut targets: impl FnMut(Id, &[NodeHandle<A>]) -> Vec<NodeHandle<A>>,
    ) {
        let me = ctx.local().id;
        let mut digests: BTreeMap<NodeHandle<A>, Vec<(Id, u64)>> = BTreeMap::new();
        for (&key, item) in &self.items {
            let r = self.replicas(ctx, key);
            // Only a replica (in its own view) offers: a node holding a value it is handing
            // off may know too little of the key's neighbourhood to name its replica set.
            // After a join or a failure, a holder whose leaf set covers the key offers too:
            // the node a newcomer pushed out may hold the only copy, and extra copies are
            // what re-seeds a replica set whose members failed together.
            let replica = r.iter().any(|h| h.id == me);
            let near = near_ok && ctx.leaf_set().in_range(key);
            if !replica && !near {
                continue;
            }
            for h in targets(key, &r) {
                if h.id != me {
                    digests.entry(h).or_default().push((key, item.version));
                }
            }
        }
        self.send_digests(ctx, digests, |entries| StoreMsg::Have { entries });
    }

    /// Moves a value this node is no longer a replica of into its cache.
    fn demote(&mut self, now: Instant, key: Id) {
        if let Some(i) = self.items.remove(&key) {
            self.bytes -= i.value.len();
            self.stats.demoted += 1;
            self.cache_copy(now, key, i.version, i.value);
        }
    }

    /// A node entered the leaf set: the holders of the values it is now a replica of offer
    /// them. A node the newcomer pushed out of a replica set gives the value up at its next
    /// refresh, once the set confirms it holds the value. (Handing off a few seconds after
    /// the push rather than at the refresh was measured: under 10-minute sessions it kept a
    /// tenth of the extra copies but lost two to three times as many values, since the
    /// extra copies are what re-offers a value when its replicas fail together.)
    fn on_joined(&mut self, ctx: &mut Context<'_, A>, node: &NodeHandle<A>) {
        // A holder the newcomer pushed out offers too (its leaf set covers the key): with one
        // replica, or two joins close together, it may be the only one holding the value.
        self.offer(ctx, true, |_, r| {
            r.iter().filter(|h| h.id == node.id).cloned().collect()
        });
    }

    /// A node left the leaf set (failed or left): the holders of each value it was a
    /// replica of offer it to the replica set as it is now, so that whoever took the free
    /// place gets it.
    fn on_departed(&mut self, ctx: &mut Context<'_, A>, node: &NodeHandle<A>) {
        self.offer(ctx, true, |key, r| {
            // It was a replica if it was closer to the key than the farthest one now.
            match r.last() {
                Some(last) if key.is_closer(node.id, last.id) => r.to_vec(),
                _ => Vec::new(),
            }
        });
    }
}

impl<A: Address> Application<A> for Store<A> {
    fn deliver(&mut self, ctx: &mut Context<'_, A>, msg: RouteMessage<A>) {
        self.arm_refresh(ctx);
        let decoded = match StoreMsg::<A>::decode(&msg.payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        match decoded {
            StoreMsg::Insert {
                request,
                key,
                version,
                value,
            } if key == msg.key => {
                // A value too large to be answered with is refused (an insert from a node
                // with larger datagrams, or a forged one).
                let taken = if value.len() > Self::max_value(ctx) {
                    self.stats.rejected += 1;
                    Taken::Refused
                } else {
                    self.take(key, version, value)
                };
                let (status, version) = match taken {
                    Taken::Stored | Taken::Same => (codec::Status::Stored, version),
                    Taken::Older(v) => (codec::Status::Outdated, v),
                    Taken::Refused => (codec::Status::Refused, version),
                };
                if taken == Taken::Stored {
                    let me = ctx.local().id;
                    for h in self.replicas(ctx, key) {
                        if h.id != me {
                            self.push(ctx, &h, key);
                        }
                    }
                }
                let answer = StoreMsg::Stored {
                    request,
                    key,
                    version,
                    status,
                };
                self.send(ctx, &msg.origin, &answer);
            }
            StoreMsg::Get {
                request,
                key,
                cached_ok,
                last,
            } if key == msg.key => {
                if self.answer_get(ctx, &msg.origin, request, key, cached_ok, last) {
                    return;
                }
                // A root that joined a moment ago may not have the value yet: the other
                // replicas answer in its place, one after the other.
                let left = u8::try_from(self.k(ctx) - 1).unwrap_or(u8::MAX);
                self.fall_back(ctx, &msg.origin, request, key, cached_ok, left);
            }
            _ => self.stats.rejected += 1,
        }
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, A>,
        msg: &mut RouteMessage<A>,
        _next_hop: &mut NodeHandle<A>,
    ) -> Forward {
        // Only gets are of interest on the way, and only well-formed ones.
        let Ok(StoreMsg::Get {
            request,
            key,
            cached_ok,
            last,
        }) = StoreMsg::<A>::decode(&msg.payload)
        else {
            return Forward::Continue;
        };
        if key == msg.key
            && msg.origin.id != ctx.local().id
            && self.answer_get(ctx, &msg.origin, request, key, cached_ok, last)
        {
            return Forward::Stop;
        }
        if self.cfg.cache_items > 0 {
            if self.forwarded.len() >= RECENT_FORWARDS {
                self.forwarded.pop_front();
            }
            let until = ctx.now() + self.cfg.request_timeout;
            self.forwarded.push_back((key, until));
        }
        let me = ctx.local().clone();
        msg.payload = StoreMsg::Get {
            request,
            key,
            cached_ok,
            last: Some(me),
        }
        .encode();
        Forward::Continue
    }

    fn update(&mut self, ctx: &mut Context<'_, A>, node: &NodeHandle<A>, change: LeafChange) {
        self.arm_refresh(ctx);
        match change {
            LeafChange::Joined | LeafChange::Recovered => self.on_joined(ctx, node),
            LeafChange::Failed | LeafChange::Left => self.on_departed(ctx, node),
            // The node that displaced it joined, and that join was handled.
            _ => {}
        }
    }

    fn direct(&mut self, ctx: &mut Context<'_, A>, from: &NodeHandle<A>, payload: Vec<u8>) {
        self.arm_refresh(ctx);
        match StoreMsg::<A>::decode(&payload) {
            Ok(msg) => self.on_message(ctx, from, msg),
            Err(_) => self.stats.malformed += 1,
        }
    }

    fn timer(&mut self, ctx: &mut Context<'_, A>, token: u64) {
        self.on_timer(ctx, token);
    }
}

#[cfg(test)]
mod tests;
