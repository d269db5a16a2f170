//! The network: real `pastry-core` nodes in one process on virtual time.

use std::collections::HashMap;
use std::time::Duration;

use pastry_core::{Config, Counters, Event, Id, Instant, LookupId, Node, RouteFailure};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::oracle::Oracle;
use crate::queue::EventQueue;
use crate::topology::{Point, Topology, TopologyKind};

/// Node addresses in the simulator: the index of the node's slot.
pub type Addr = u32;

/// The application id under which [`Network`] routes messages of its own (not lookups).
pub const LOOKUP_APP: u16 = 0x4c4b;

/// Parameters of a network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Seed of every random choice: node ids, node seeds, positions, loss, workload.
    pub seed: u64,
    /// Configuration of every node.
    pub node: Config,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Where nodes sit and how long datagrams take.
    pub topology: Topology,
    /// Check every node's invariants after every input, and every datagram it sends
    /// (`pastry_core::invariants`); a violation panics with the node, time and seed.
    pub check_invariants: bool,
}

impl NetConfig {
    /// Defaults with the given seed: nodes on a plane (latency proportional to distance), no
    /// loss, the core's default configuration.
    pub fn with_seed(seed: u64) -> Self {
        NetConfig {
            seed,
            node: Config::default(),
            loss: 0.0,
            topology: Topology::new(TopologyKind::Plane, seed),
            check_invariants: false,
        }
    }
}

/// Life cycle of a simulated node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Created, not started.
    Idle,
    /// Joining (or rejoining): not active.
    Joining,
    /// Active member.
    Active,
    /// Leaving gracefully.
    Leaving,
    /// Left gracefully.
    Left,
    /// Killed without warning.
    Dead,
}

struct Slot {
    id: Id,
    node: Option<Box<Node<Addr>>>,
    pos: Point,
    timer: Option<Instant>,
    timer_gen: u64,
    state: NodeState,
    joined_at: Option<Instant>,
    active_at: Option<Instant>,
}

/// Events ahead whose queued payload and node slot `Network::prefetch_ahead` loads.
const PREFETCH_FAR: usize = 6;
/// Events ahead whose datagram bytes and node (found through the loaded slot) it loads.
const PREFETCH_NEAR: usize = 3;

enum Kind {
    Datagram {
        to: Addr,
        from: Addr,
        bytes: Vec<u8>,
    },
    Timer {
        node: Addr,
        generation: u64,
    },
}

/// The time of a queue key: (time in microseconds, sequence) packed into one `u128`.
fn key_time(key: u128) -> Instant {
    Instant::from_micros((key >> 64) as u64)
}

/// One lookup the network issued.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// Key looked up.
    pub key: Id,
    /// Node that issued it.
    pub from: Addr,
    /// When it was issued.
    pub sent_at: Instant,
    /// First time it reached a root.
    pub delivered: Option<Delivery>,
    /// When the origin got the answer.
    pub answered: Option<Instant>,
    /// The origin gave up on it.
    pub failed: bool,
}

/// Where and when a lookup was delivered.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Node that delivered it.
    pub at: Addr,
    /// Simulated time of delivery.
    pub time: Instant,
    /// Overlay hops.
    pub hops: u8,
    /// Whether the node was the numerically closest live, active node at that time.
    pub correct: bool,
    /// The oracle's answer at that time.
    pub expected: Option<Id>,
}

/// Totals over the lookups a network issued.
#[derive(Clone, Debug, Default)]
pub struct LookupStats {
    /// Lookups issued.
    pub sent: u64,
    /// Lookups delivered at least once.
    pub delivered: u64,
    /// First deliveries at the oracle's closest node.
    pub correct: u64,
    /// First deliveries anywhere else.
    pub incorrect: u64,
    /// Deliveries after the first (retries that raced their answer).
    pub duplicates: u64,
    /// Lookups their origin reported as failed after its retries.
    pub failure_reports: u64,
    /// Histogram of hop counts of first deliveries, indexed by hops.
    pub hops: Vec<u64>,
}

impl LookupStats {
    /// Lookups never delivered.
    pub fn lost(&self) -> u64 {
        self.sent - self.delivered
    }

    /// Mean hops over delivered lookups.
    pub fn mean_hops(&self) -> f64 {
        let n: u64 = self.hops.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let total: u64 = self
            .hops
            .iter()
            .enumerate()
            .map(|(h, c)| h as u64 * c)
            .sum();
        total as f64 / n as f64
    }

    /// Largest hop count seen.
    pub fn max_hops(&self) -> usize {
        self.hops.iter().rposition(|c| *c > 0).unwrap_or(0)
    }

    /// The totals since `earlier` (a copy taken before).
    pub fn since(&self, earlier: &LookupStats) -> LookupStats {
        let mut hops = self.hops.clone();
        for (h, c) in earlier.hops.iter().enumerate() {
            hops[h] -= c;
        }
        LookupStats {
            sent: self.sent - earlier.sent,
            delivered: self.delivered - earlier.delivered,
            correct: self.correct - earlier.correct,
            incorrect: self.incorrect - earlier.incorrect,
            duplicates: self.duplicates - earlier.duplicates,
            failure_reports: self.failure_reports - earlier.failure_reports,
            hops,
        }
    }
}

/// Totals of node counters, over running nodes and nodes that stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Control datagrams sent.
    pub control_out: u64,
    /// Control bytes sent.
    pub control_bytes_out: u64,
    /// Failures detected.
    pub failures_detected: u64,
    /// Malformed datagrams received.
    pub malformed: u64,
    /// Probes sent (first attempts), by purpose.
    pub probes: pastry_core::ProbePurposes,
}

impl Totals {
    fn add(&mut self, c: &Counters) {
        self.datagrams_out += c.datagrams_out;
        self.bytes_out += c.bytes_out;
        self.control_out += c.control_out;
        self.control_bytes_out += c.control_bytes_out;
        self.failures_detected += c.failures_detected;
        self.malformed += c.malformed;
        let p = &c.probes_by_purpose;
        self.probes.leaf += p.leaf;
        self.probes.liveness += p.liveness;
        self.probes.table += p.table;
        self.probes.verify += p.verify;
    }
}

/// N real nodes on virtual time: an event queue ordered by (time, sequence), latency from a
/// topology, optional loss, kill / leave / revive, and an oracle of live, active nodes. The
/// same seed and the same calls give the same run, bit for bit.
///
/// ```
/// use std::time::Duration;
/// use pastry_sim::{NetConfig, Network};
/// let mut net = Network::new(NetConfig::with_seed(7));
/// net.grow(20, Duration::from_secs(60)).unwrap();
/// for _ in 0..100 {
///     net.random_lookup();
/// }
/// net.run_for(Duration::from_secs(10));
/// let s = net.lookup_stats();
/// assert_eq!((s.delivered, s.correct), (100, 100));
/// ```
pub struct Network {
    cfg: NetConfig,
    now: Instant,
    /// Queued events: (payload slot, node it is for).
    queue: EventQueue<(u32, Addr)>,
    seq: u64,
    slots: Vec<Slot>,
    rng: ChaCha8Rng,
    oracle: Oracle,
    lookups: Vec<Lookup>,
    lookup_index: HashMap<LookupId, u64>,
    rdp: Vec<f32>,
    stats: LookupStats,
    digest: u64,
    events: u64,
    datagrams: u64,
    dropped: u64,
    trace: bool,
    trace_only: Option<Addr>,
    outside: HashMap<Addr, (u64, u64)>,
    /// The last datagrams sent to addresses that are not nodes (at most 64 per address).
    outside_log: HashMap<Addr, std::collections::VecDeque<Vec<u8>>>,
    /// Payloads of queued events, and the free slots among them.
    payloads: Vec<Option<Kind>>,
    free: Vec<u32>,
    false_failures: Vec<(Addr, Id)>,
    last_drop: Option<Instant>,
    retired: Totals,
    out_buf: Vec<pastry_core::Transmit<Addr>>,
    event_buf: Vec<Event<Addr>>,
    /// Active nodes, in no order, for O(1) random choice; `active_pos[addr]` is the node's
    /// index in it (or `u32::MAX`).
    active: Vec<Addr>,
    active_pos: Vec<u32>,
    /// Nodes in the joining state.
    joining: usize,
    /// Datagrams sent, by message name.
    by_type: std::collections::BTreeMap<&'static str, u64>,
    /// Called on every node the network creates, before it starts.
    on_spawn: Option<SpawnHook>,
}

/// Prepares a node the network created (registers its applications), given its address.
pub type SpawnHook = Box<dyn FnMut(Addr, &mut Node<Addr>)>;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

impl Network {
    /// An empty network.
    pub fn new(cfg: NetConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Network {
            cfg,
            now: Instant::ZERO,
            queue: EventQueue::new(),
            seq: 0,
            slots: Vec::new(),
            rng,
            oracle: Oracle::default(),
            lookups: Vec::new(),
            lookup_index: HashMap::new(),
            rdp: Vec::new(),
            stats: LookupStats::default(),
            digest: FNV_OFFSET,
            events: 0,
            datagrams: 0,
            dropped: 0,
            trace: false,
            trace_only: None,
            outside: HashMap::new(),
            outside_log: HashMap::new(),
            payloads: Vec::new(),
            free: Vec::new(),
            false_failures: Vec::new(),
            last_drop: None,
            retired: Totals::default(),
            out_buf: Vec::new(),
            event_buf: Vec::new(),
            active: Vec::new(),
            active_pos: Vec::new(),
            joining: 0,
            by_type: std::collections::BTreeMap::new(),
            on_spawn: None,
        }
    }

    /// Calls `hook` on every node created from now on ([`Network::spawn`], the nodes that
    /// [`Network::grow`] and [`Network::grow_concurrently`] add, churn's arrivals, revived
    /// nodes), before it starts: this is where applications are registered.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pastry_core::store::{Store, StoreConfig};
    /// use pastry_sim::{Addr, NetConfig, Network};
    /// let mut net = Network::new(NetConfig::with_seed(1));
    /// net.on_spawn(Box::new(|_, node| {
    ///     let store = Store::<Addr>::new(StoreConfig::default()).unwrap();
    ///     node.register(1, Box::new(store)).unwrap();
    /// }));
    /// net.grow(5, Duration::from_secs(60)).unwrap();
    /// assert!(net.node(3).unwrap().app::<Store<Addr>>(1).is_some());
    /// ```
    pub fn on_spawn(&mut self, hook: SpawnHook) {
        self.on_spawn = Some(hook);
    }

    /// Prints every datagram delivered (decoded) and every node event to stderr.
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on;
    }

    /// Like [`Network::set_trace`], but only what one node sends, receives and reports.
    pub fn set_trace_node(&mut self, addr: Option<Addr>) {
        self.trace = addr.is_some();
        self.trace_only = addr;
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The oracle of live, active nodes.
    pub fn oracle(&self) -> &Oracle {
        &self.oracle
    }

    /// The node configuration.
    pub fn node_config(&self) -> &Config {
        &self.cfg.node
    }

    /// Changes the loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    /// A uniformly random id from the network's generator.
    pub fn random_id(&mut self) -> Id {
        let hi = u128::from(self.rng.next_u64());
        let lo = u128::from(self.rng.next_u64());
        Id::new(hi << 64 | lo)
    }

    /// A uniformly random index below `n`.
    pub fn random_below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    /// A uniform random number in `[0, 1)`.
    pub fn random_unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Creates a node with the given id at a new position; it is not started.
    pub fn spawn(&mut self, id: Id) -> Addr {
        let addr = Addr::try_from(self.slots.len()).expect("at most 2^32 nodes");
        let pos = self.cfg.topology.place();
        let seed = self.rng.next_u64();
        let mut node = Node::new(self.cfg.node.clone(), id, addr, seed, self.now)
            .expect("the network's node configuration is valid");
        if let Some(hook) = self.on_spawn.as_mut() {
            hook(addr, &mut node);
        }
        self.slots.push(Slot {
            id,
            node: Some(Box::new(node)),
            pos,
            timer: None,
            timer_gen: 0,
            state: NodeState::Idle,
            joined_at: None,
            active_at: None,
        });
        self.active_pos.push(u32::MAX);
        addr
    }

    /// Starts a new ring at `addr`.
    pub fn bootstrap(&mut self, addr: Addr) {
        let now = self.now;
        let slot = &mut self.slots[addr as usize];
        if let Some(node) = slot.node.as_mut() {
            node.bootstrap(now).expect("bootstrap of an idle node");
            slot.joined_at = Some(now);
            self.set_state(addr, NodeState::Joining);
        }
        self.drain(addr);
    }

    /// Starts the join of `addr` through the node at `via`.
    pub fn join(&mut self, addr: Addr, via: Addr) {
        let now = self.now;
        let slot = &mut self.slots[addr as usize];
        if let Some(node) = slot.node.as_mut() {
            node.join(now, via).expect("join of an idle node");
            slot.joined_at = Some(now);
            self.set_state(addr, NodeState::Joining);
        }
        self.drain(addr);
    }

    /// A random active node, if any.
    pub fn random_active(&mut self) -> Option<Addr> {
        if self.active.is_empty() {
            return None;
        }
        let i = self.random_below(self.active.len());
        Some(self.active[i])
    }

    /// Number of active nodes.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Sets a node's state, keeping count of the nodes that are joining.
    fn set_state(&mut self, addr: Addr, state: NodeState) {
        let old = std::mem::replace(&mut self.slots[addr as usize].state, state);
        if old == NodeState::Joining {
            self.joining -= 1;
        }
        if state == NodeState::Joining {
            self.joining += 1;
        }
    }

    /// Number of nodes joining (or rejoining) now.
    pub fn joining_len(&self) -> usize {
        self.joining
    }

    /// Marks a node active or not: the oracle and the list of active nodes follow.
    fn set_active(&mut self, addr: Addr, active: bool) {
        let pos = self.active_pos[addr as usize];
        let id = self.slots[addr as usize].id;
        if active && pos == u32::MAX {
            self.active_pos[addr as usize] = self.active.len() as u32;
            self.active.push(addr);
            self.oracle.insert(id);
        } else if !active && pos != u32::MAX {
            self.active.swap_remove(pos as usize);
            if let Some(&moved) = self.active.get(pos as usize) {
                self.active_pos[moved as usize] = pos;
            }
            self.active_pos[addr as usize] = u32::MAX;
            self.oracle.remove(id);
        }
    }

    /// Of `samples` random active nodes, the nearest to `addr`: a bootstrap node for a join
    /// that keeps proximity (a new node asks a nearby member to route its join).
    pub fn nearby_active(&mut self, addr: Addr, samples: usize) -> Option<Addr> {
        let mut best: Option<(Duration, Addr)> = None;
        for _ in 0..samples {
            let a = self.random_active()?;
            let d = self.latency(addr, a);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, a));
            }
        }
        best.map(|(_, a)| a)
    }

    /// Grows the network by `n` nodes, one after another: each joins through a random active
    /// node and must become active within `patience` before the next starts.
    pub fn grow(&mut self, n: usize, patience: Duration) -> Result<(), String> {
        for _ in 0..n {
            let id = self.random_id();
            let addr = self.spawn(id);
            if !self.start(addr, patience) {
                return Err(format!(
                    "node {addr} ({id}) not active after {patience:?} (network of {})",
                    self.oracle.len()
                ));
            }
        }
        Ok(())
    }

    /// Grows the network by `n` nodes joining concurrently, in waves: each wave has as many
    /// new nodes as there are active ones (at most `max_wave`), each joining through a nearby
    /// active node; a wave ends when its nodes are active or `patience` has passed. Calls
    /// `progress` with the number of nodes started so far. Returns the number that became
    /// active.
    pub fn grow_concurrently(
        &mut self,
        n: usize,
        max_wave: usize,
        patience: Duration,
        mut progress: impl FnMut(usize),
    ) -> usize {
        let mut started = 0;
        let mut became = 0;
        if self.oracle.is_empty() && n > 0 {
            let id = self.random_id();
            let a = self.spawn(id);
            self.bootstrap(a);
            started = 1;
            became = 1;
        }
        while started < n {
            let wave = self.oracle.len().min(max_wave).min(n - started).max(1);
            let first = self.slots.len() as Addr;
            for _ in 0..wave {
                let id = self.random_id();
                let a = self.spawn(id);
                match self.nearby_active(a, 256) {
                    Some(via) => self.join(a, via),
                    None => self.bootstrap(a),
                }
            }
            started += wave;
            let last = self.slots.len() as Addr;
            let deadline = self.now + patience;
            // Ends when as many nodes are joining as before the wave (stragglers of earlier
            // waves may still be at it): a counter, not a scan of the wave per event.
            let stragglers = self.joining.saturating_sub(wave);
            self.run_until_cond(deadline, |net| net.joining <= stragglers);
            became += (first..last)
                .filter(|a| self.state(*a) == NodeState::Active)
                .count();
            progress(started);
        }
        became
    }

    fn retire(&mut self, addr: Addr) {
        if let Some(node) = self.slots[addr as usize].node.take() {
            self.retired.add(node.counters());
        }
        let slot = &mut self.slots[addr as usize];
        slot.timer = None;
    }

    /// Kills a node without warning.
    pub fn kill(&mut self, addr: Addr) {
        self.retire(addr);
        self.set_state(addr, NodeState::Dead);
        self.set_active(addr, false);
    }

    /// Makes a node leave gracefully; it stops being a root at once.
    pub fn leave(&mut self, addr: Addr) {
        let now = self.now;
        let slot = &mut self.slots[addr as usize];
        if let Some(node) = slot.node.as_mut() {
            node.leave(now);
            self.set_state(addr, NodeState::Leaving);
            self.set_active(addr, false);
        }
        self.drain(addr);
    }

    /// Brings a dead or departed node back with its old id and address, joining through `via`.
    pub fn revive(&mut self, addr: Addr, via: Addr) {
        let seed = self.rng.next_u64();
        let slot = &mut self.slots[addr as usize];
        let mut node = Node::new(self.cfg.node.clone(), slot.id, addr, seed, self.now)
            .expect("the network's node configuration is valid");
        if let Some(hook) = self.on_spawn.as_mut() {
            hook(addr, &mut node);
        }
        slot.node = Some(Box::new(node));
        slot.timer = None;
        slot.active_at = None;
        self.set_state(addr, NodeState::Idle);
        self.join(addr, via);
    }

    /// Delivers `bytes` to `to` now, as if `from` had sent them. `from` may be an address
    /// that is not a node (a forged source): what nodes send back to it is counted by
    /// [`Network::sent_outside`].
    pub fn inject(&mut self, to: Addr, from: Addr, bytes: Vec<u8>) {
        let at = self.now;
        self.push(at, Kind::Datagram { to, from, bytes });
    }

    /// Datagrams and bytes the nodes sent to an address that is not a node.
    pub fn sent_outside(&self, addr: Addr) -> (u64, u64) {
        self.outside.get(&addr).copied().unwrap_or_default()
    }

    /// The last datagrams (at most 64) the nodes sent to an address that is not a node, oldest
    /// first: what a client outside the overlay would have received.
    pub fn received_outside(&self, addr: Addr) -> Vec<Vec<u8>> {
        self.outside_log
            .get(&addr)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The node at `addr`, mutably, to register applications before it starts. Use
    /// [`Network::act`] for calls that produce output.
    pub fn node_mut(&mut self, addr: Addr) -> Option<&mut Node<Addr>> {
        self.slots[addr as usize].node.as_deref_mut()
    }

    /// Calls `f` on the node at `addr` with the current time, then collects what the node
    /// produced (datagrams, events, its next deadline). `None` if the node does not run.
    pub fn act<R>(
        &mut self,
        addr: Addr,
        f: impl FnOnce(&mut Node<Addr>, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let r = f(self.slots[addr as usize].node.as_deref_mut()?, now);
        self.drain(addr);
        Some(r)
    }

    /// Calls `f` with the application registered under `app` (of type `T`) on every running
    /// node (active or joining), in address order, and returns what each call returned with
    /// the node's address; what the calls route or send goes out as with [`Network::act`].
    /// Nodes without such an application are skipped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pastry_core::store::{Store, StoreConfig};
    /// use pastry_sim::{Addr, NetConfig, Network};
    /// let mut net = Network::new(NetConfig::with_seed(1));
    /// net.on_spawn(Box::new(|_, node| {
    ///     let store = Store::<Addr>::new(StoreConfig::default()).unwrap();
    ///     node.register(1, Box::new(store)).unwrap();
    /// }));
    /// net.grow(5, Duration::from_secs(60)).unwrap();
    /// let held = net.each_app(1, |s: &mut Store<Addr>, _| s.len());
    /// assert_eq!(held.len(), 5);
    /// assert!(held.iter().all(|(_, n)| *n == 0));
    /// ```
    pub fn each_app<T: pastry_core::Application<Addr>, R>(
        &mut self,
        app: u16,
        mut f: impl FnMut(&mut T, &mut pastry_core::Context<'_, Addr>) -> R,
    ) -> Vec<(Addr, R)> {
        let running: Vec<Addr> = self
            .addrs()
            .filter(|a| matches!(self.state(*a), NodeState::Active | NodeState::Joining))
            .collect();
        running
            .into_iter()
            .filter_map(|a| {
                let r = self.act(a, |node, now| node.with_app(now, app, &mut f).ok())??;
                Some((a, r))
            })
            .collect()
    }

    /// Starts a node created with [`Network::spawn`]: a new ring if no node is active, else a
    /// join through a random active node. Returns whether it became active within `patience`.
    pub fn start(&mut self, addr: Addr, patience: Duration) -> bool {
        match self.random_active() {
            None => self.bootstrap(addr),
            Some(via) => self.join(addr, via),
        }
        let deadline = self.now + patience;
        self.run_until_cond(deadline, |net| net.state(addr) == NodeState::Active)
    }

    /// A node's state.
    pub fn state(&self, addr: Addr) -> NodeState {
        self.slots[addr as usize].state
    }

    /// A node's id.
    pub fn id(&self, addr: Addr) -> Id {
        self.slots[addr as usize].id
    }

    /// The node at `addr`, if it runs.
    pub fn node(&self, addr: Addr) -> Option<&Node<Addr>> {
        self.slots[addr as usize].node.as_deref()
    }

    /// Number of nodes ever spawned.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no node was ever spawned.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every address ever spawned.
    pub fn addrs(&self) -> impl Iterator<Item = Addr> + use<> {
        0..self.slots.len() as Addr
    }

    /// Addresses of active nodes, in increasing order.
    pub fn active_addrs(&self) -> Vec<Addr> {
        let mut v = self.active.clone();
        v.sort_unstable();
        v
    }

    /// When a node started joining and when it became active.
    pub fn join_times(&self, addr: Addr) -> (Option<Instant>, Option<Instant>) {
        let s = &self.slots[addr as usize];
        (s.joined_at, s.active_at)
    }

    /// One-way latency between two nodes.
    pub fn latency(&self, a: Addr, b: Addr) -> Duration {
        self.cfg
            .topology
            .latency(&self.slots[a as usize].pos, &self.slots[b as usize].pos)
    }

    /// Issues a lookup for `key` from `from`; returns its number.
    pub fn lookup(&mut self, from: Addr, key: Id) -> Option<u64> {
        let now = self.now;
        let node = self.slots[from as usize].node.as_mut()?;
        let id = node.lookup(now, key).ok()?;
        let n = self.lookups.len() as u64;
        self.lookups.push(Lookup {
            key,
            from,
            sent_at: now,
            delivered: None,
            answered: None,
            failed: false,
        });
        self.lookup_index.insert(id, n);
        self.stats.sent += 1;
        self.drain(from);
        Some(n)
    }

    /// A lookup for a random key from a random active node.
    pub fn random_lookup(&mut self) -> Option<u64> {
        let from = self.random_active()?;
        let key = self.random_id();
        self.lookup(from, key)
    }

    /// Totals over all lookups so far.
    pub fn lookup_stats(&self) -> &LookupStats {
        &self.stats
    }

    /// Every lookup issued, by number.
    pub fn lookups(&self) -> &[Lookup] {
        &self.lookups
    }

    /// Route delay penalty (overlay route latency over direct latency) of every lookup
    /// delivered at another node than its origin, in delivery order.
    pub fn rdp_samples(&self) -> &[f32] {
        &self.rdp
    }

    /// The route delay penalty of a lookup: the latency of its overlay route (issue to first
    /// delivery) over the direct latency from its origin to the node that delivered it. `None`
    /// until delivered, and for a lookup delivered at its origin.
    pub fn rdp_of(&self, l: &Lookup) -> Option<f32> {
        let d = l.delivered.as_ref().filter(|d| d.at != l.from)?;
        let direct = self.latency(l.from, d.at).as_secs_f64();
        let route = (d.time - l.sent_at).as_secs_f64();
        (direct > 0.0).then(|| (route / direct) as f32)
    }

    /// A digest of every delivery so far (time, lookup, node, hops, verdict), to compare runs.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Events processed so far.
    pub fn events_processed(&self) -> u64 {
        self.events
    }

    /// Events waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Datagrams sent and datagrams dropped by loss so far.
    pub fn datagram_counts(&self) -> (u64, u64) {
        (self.datagrams, self.dropped)
    }

    /// Datagrams sent so far (before loss), by message name
    /// ([`pastry_core::wire::message_name`]).
    pub fn datagrams_by_type(&self) -> &std::collections::BTreeMap<&'static str, u64> {
        &self.by_type
    }

    /// Sum of node counters over every node, running or stopped.
    pub fn totals(&self) -> Totals {
        let mut t = self.retired;
        for s in &self.slots {
            if let Some(n) = &s.node {
                t.add(n.counters());
            }
        }
        t
    }

    /// Processes events up to and including time `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.queue.peek().is_some_and(|k| key_time(k) <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Processes events until `cond` holds (checked after every event) or `deadline` passes.
    /// Returns whether `cond` held.
    pub fn run_until_cond(
        &mut self,
        deadline: Instant,
        mut cond: impl FnMut(&Network) -> bool,
    ) -> bool {
        loop {
            if cond(self) {
                return true;
            }
            match self.queue.peek() {
                Some(k) if key_time(k) <= deadline => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return cond(self);
                }
            }
        }
    }

    /// Processes the next event. Returns false when the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some((key, (slot, _))) = self.queue.pop() else {
            return false;
        };
        self.now = key_time(key);
        self.events += 1;
        self.prefetch_ahead();
        let now = self.now;
        let kind = self.payloads[slot as usize]
            .take()
            .expect("a queued event has a payload");
        self.free.push(slot);
        match kind {
            Kind::Datagram { to, from, bytes } => {
                if self.trace && self.trace_only.is_none_or(|a| a == to || a == from) {
                    let d = pastry_core::wire::Datagram::<Addr>::decode(&bytes, usize::MAX);
                    eprintln!("{:?} {from} -> {to}: {d:?}", self.now);
                }
                let Some(node) = self.slots[to as usize].node.as_mut() else {
                    return true;
                };
                // Malformed input is counted by the node. Injected bytes may be malformed on
                // purpose; a node's own output never is, and would be a bug worth seeing.
                if let Err(e) = node.handle_datagram(now, from, &bytes)
                    && (from as usize) < self.slots.len()
                {
                    panic!("node {to} rejected a datagram from node {from}: {e}");
                }
                self.drain(to);
            }
            Kind::Timer {
                node: addr,
                generation,
            } => {
                let slot = &mut self.slots[addr as usize];
                if slot.timer_gen != generation {
                    return true;
                }
                slot.timer = None;
                let Some(node) = slot.node.as_mut() else {
                    return true;
                };
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
                self.drain(addr);
            }
        }
        true
    }

    /// Starts loading what the next few events will touch: the payload and node slot of an
    /// event a few places ahead, then, once that slot is likely loaded, the datagram and the
    /// node it points to. A large ring does not fit in the caches, and every event lands on a
    /// node last touched long before: memory, not computation, bounds such a run (about a
    /// sixth of the time of a 100,000-node build, saved by this).
    fn prefetch_ahead(&self) {
        use crate::prefetch::{prefetch, prefetch_lines};
        if let Some((s, node)) = self.queue.ahead(PREFETCH_FAR) {
            prefetch(&self.payloads[s as usize]);
            if let Some(slot) = self.slots.get(node as usize) {
                // A slot may straddle two lines: load the one with the node's pointer too.
                prefetch(slot);
                prefetch(&slot.node);
            }
        }
        if let Some((s, node)) = self.queue.ahead(PREFETCH_NEAR) {
            if let Some(Kind::Datagram { bytes, .. }) = &self.payloads[s as usize] {
                prefetch(bytes.as_ptr());
            }
            if let Some(node) = self
                .slots
                .get(node as usize)
                .and_then(|s| s.node.as_deref())
            {
                // The node need not start on a line: one more line covers its end.
                prefetch_lines(node, size_of::<Node<Addr>>().div_ceil(64) + 1);
            }
        }
    }

    fn push(&mut self, at: Instant, kind: Kind) {
        self.seq += 1;
        let node = match &kind {
            Kind::Datagram { to, .. } => *to,
            Kind::Timer { node, .. } => *node,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.payloads[s as usize] = Some(kind);
                s
            }
            None => {
                self.payloads.push(Some(kind));
                (self.payloads.len() - 1) as u32
            }
        };
        let key = u128::from(at.as_micros()) << 64 | u128::from(self.seq);
        self.queue.push(key, (slot, node));
    }

    /// Collects a node's outputs after an input: datagrams onto the queue, events into the
    /// network's records, and the node's next deadline.
    fn drain(&mut self, addr: Addr) {
        let now = self.now;
        let mut out = std::mem::take(&mut self.out_buf);
        let mut events = std::mem::take(&mut self.event_buf);
        let next = {
            let Some(node) = self.slots[addr as usize].node.as_mut() else {
                return;
            };
            while let Some(t) = node.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
            node.poll_timeout()
        };
        if self.cfg.check_invariants {
            let node = self.slots[addr as usize]
                .node
                .as_ref()
                .expect("drained above");
            if let Err(v) = pastry_core::invariants::check_node(node) {
                panic!("node {addr} at {now:?} (seed {}): {v}", self.cfg.seed);
            }
            for t in &out {
                if let Err(v) = pastry_core::invariants::check_transmit(node, t) {
                    panic!("node {addr} at {now:?} (seed {}): {v}", self.cfg.seed);
                }
            }
        }
        for t in out.drain(..) {
            self.datagrams += 1;
            let name = pastry_core::wire::message_name(&t.contents).unwrap_or("other");
            *self.by_type.entry(name).or_insert(0) += 1;
            if self.cfg.loss > 0.0 && self.random_unit() < self.cfg.loss {
                self.dropped += 1;
                self.last_drop = Some(now);
                continue;
            }
            if (t.destination as usize) >= self.slots.len() {
                let log = self.outside_log.entry(t.destination).or_default();
                if log.len() == 64 {
                    log.pop_front();
                }
                log.push_back(t.contents.clone());
                let e = self.outside.entry(t.destination).or_default();
                e.0 += 1;
                e.1 += t.contents.len() as u64;
                continue;
            }
            let at = now + self.latency(addr, t.destination);
            self.push(
                at,
                Kind::Datagram {
                    to: t.destination,
                    from: addr,
                    bytes: t.contents,
                },
            );
        }
        for e in events.drain(..) {
            self.on_event(addr, e);
        }
        self.out_buf = out;
        self.event_buf = events;
        let slot = &mut self.slots[addr as usize];
        if slot.node.is_none() {
            return;
        }
        // A node's wake-up is queued again only when its deadline moves earlier: one that
        // moved later leaves an early wake-up in the queue, which finds nothing due and
        // queues the real deadline then. This keeps stale timers out of the queue.
        if let Some(t) = next
            && slot.timer.is_none_or(|queued| t < queued)
        {
            slot.timer = Some(t);
            slot.timer_gen += 1;
            let generation = slot.timer_gen;
            self.push(
                t.max(now),
                Kind::Timer {
                    node: addr,
                    generation,
                },
            );
        }
    }

    fn on_event(&mut self, addr: Addr, e: Event<Addr>) {
        let now = self.now;
        if self.trace && self.trace_only.is_none_or(|a| a == addr) {
            eprintln!("{now:?} event at {addr}: {e:?}");
        }
        match e {
            Event::Active => {
                self.slots[addr as usize].active_at = Some(now);
                self.set_state(addr, NodeState::Active);
                self.set_active(addr, true);
            }
            Event::JoinFailed => {
                self.set_state(addr, NodeState::Idle);
            }
            Event::Rejoining => {
                self.set_state(addr, NodeState::Joining);
                self.set_active(addr, false);
            }
            Event::Left => {
                self.retire(addr);
                self.set_state(addr, NodeState::Left);
            }
            Event::LookupServed { id, key, hops, .. } => self.served(addr, id, key, hops),
            Event::LookupDone { id, .. } => {
                if let Some(n) = self.lookup_index.get(&id) {
                    self.lookups[*n as usize].answered.get_or_insert(now);
                }
            }
            Event::LookupFailed { id, .. } => {
                if let Some(n) = self.lookup_index.get(&id) {
                    self.lookups[*n as usize].failed = true;
                    self.stats.failure_reports += 1;
                }
            }
            Event::LeafSet {
                node,
                change: pastry_core::LeafChange::Failed,
            } => {
                // A node whose join failed runs but takes part in nothing: dropping it is right.
                let running = (node.addr as usize) < self.slots.len()
                    && self.slots[node.addr as usize].id == node.id
                    && matches!(
                        self.state(node.addr),
                        NodeState::Active | NodeState::Joining
                    );
                if running {
                    self.false_failures.push((addr, node.id));
                }
            }
            Event::RouteFailed { reason, .. } if reason != RouteFailure::NodeLeft => {}
            _ => {}
        }
    }

    /// A lookup reached a root: judge it against the oracle at this moment.
    fn served(&mut self, addr: Addr, id: LookupId, key: Id, hops: u8) {
        let now = self.now;
        let Some(&n) = self.lookup_index.get(&id) else {
            return;
        };
        let here = self.slots[addr as usize].id;
        let expected = self.oracle.closest(key);
        let correct = expected == Some(here);
        if self.lookups[n as usize].delivered.is_some() {
            self.stats.duplicates += 1;
            return;
        }
        self.lookups[n as usize].delivered = Some(Delivery {
            at: addr,
            time: now,
            hops,
            correct,
            expected,
        });
        self.stats.delivered += 1;
        if correct {
            self.stats.correct += 1;
        } else {
            self.stats.incorrect += 1;
        }
        let h = usize::from(hops);
        if self.stats.hops.len() <= h {
            self.stats.hops.resize(h + 1, 0);
        }
        self.stats.hops[h] += 1;
        if let Some(r) = self.rdp_of(&self.lookups[n as usize]) {
            self.rdp.push(r);
        }
        let mut d = self.digest;
        d = fnv(d, &now.as_micros().to_be_bytes());
        d = fnv(d, &n.to_be_bytes());
        d = fnv(d, &addr.to_be_bytes());
        d = fnv(d, &[hops, u8::from(correct)]);
        self.digest = d;
    }

    /// Nodes whose leaf set differs from the ideal one (the L/2 nearest live, active nodes on
    /// each side). Returns their addresses.
    pub fn leaf_set_errors(&self) -> Vec<Addr> {
        let half = self.cfg.node.leaf_set_size / 2;
        self.addrs()
            .filter(|a| self.state(*a) == NodeState::Active)
            .filter(|a| {
                let node = self.node(*a).expect("active nodes run");
                let (cw, ccw) = self.oracle.leaf_set(self.id(*a), half);
                let have_cw: Vec<Id> = node
                    .leaf_set()
                    .side_peers(pastry_core::Side::Cw)
                    .map(|p| p.id())
                    .collect();
                let have_ccw: Vec<Id> = node
                    .leaf_set()
                    .side_peers(pastry_core::Side::Ccw)
                    .map(|p| p.id())
                    .collect();
                have_cw != cw || have_ccw != ccw
            })
            .collect()
    }

    /// Routing-table entries and spares of active nodes that name a node which no longer runs
    /// (dead, or departed): what lazy repair and maintenance have yet to clear.
    pub fn stale_table_entries(&self) -> usize {
        self.active
            .iter()
            .map(|a| {
                let node = self.slots[*a as usize]
                    .node
                    .as_ref()
                    .expect("active nodes run");
                let table = node.routing_table();
                table
                    .entries()
                    .chain(table.spares())
                    .filter(|p| {
                        let s = &self.slots[p.handle.addr as usize];
                        s.node.is_none() || s.id != p.id()
                    })
                    .count()
            })
            .sum()
    }

    /// Live nodes that other nodes declared dead (a failure detector's false positive, caused by
    /// loss): (the node that declared it, the id it declared dead).
    pub fn false_failures(&self) -> &[(Addr, Id)] {
        &self.false_failures
    }

    /// When loss last dropped a datagram, if ever.
    pub fn last_drop(&self) -> Option<Instant> {
        self.last_drop
    }

    /// Sum of a counter over every running node.
    pub fn sum_counters(&self, f: impl Fn(&pastry_core::Counters) -> u64) -> u64 {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref())
            .map(|n| f(n.counters()))
            .sum()
    }
}
