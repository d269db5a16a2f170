//! Routes over perfect state: what a lookup would cost if every routing-table cell held the
//! live node nearest to its owner (proximity neighbour selection at its ideal) and every leaf
//! set were exact. A yardstick for the route delay penalty a run measures, computed on the same
//! ring, with the same latencies, for the same lookups.
//!
//! The rule is the core's next-hop rule on that state: a key within the node's leaf-set span
//! goes to its root; otherwise to the cell `[shared prefix][next digit of the key]`, whose
//! entry is the candidate nearest to the node; a key whose cell has no candidate at all goes
//! to the node numerically closest to it among the leaf set and the table's rows from that
//! prefix on (the rare case). Nearest-per-cell is the greedy choice proximity neighbour
//! selection aims at, not an optimum over all tables. With
//! [`cell_spares`](pastry_core::Config::cell_spares), a cell of a sparse row (the core's
//! test, on the exact leaf set) holds its `1 + cell_spares` nodes nearest to the node, and the
//! hop goes to the one of them numerically closest to the key.

use std::time::Duration;

use pastry_core::Id;

use crate::net::{Addr, Network};

/// A route over perfect state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdealRoute {
    /// Overlay hops from the origin to the root.
    pub hops: usize,
    /// Sum of the one-way latencies of the hops.
    pub latency: Duration,
    /// The key's root: the live, active node numerically closest to the key.
    pub root: Addr,
}

/// Perfect routing state for the live, active nodes of a network at one moment.
///
/// ```
/// use std::time::Duration;
/// use pastry_sim::{IdealRoutes, NetConfig, Network};
/// let mut net = Network::new(NetConfig::with_seed(3));
/// net.grow(40, Duration::from_secs(60)).unwrap();
/// let key = net.random_id();
/// let ideal = IdealRoutes::new(&net);
/// let from = net.active_addrs()[0];
/// let route = ideal.route(from, key);
/// assert_eq!(Some(net.id(route.root)), net.oracle().closest(key));
/// // Forty nodes are within reach of one leaf set of 16 in at most two hops.
/// assert!(route.hops <= 2);
/// ```
pub struct IdealRoutes<'a> {
    net: &'a Network,
    /// Live, active nodes by increasing id.
    sorted: Vec<(Id, Addr)>,
    b: u8,
    half: usize,
    /// Spares per sparse cell ([`pastry_core::Config::cell_spares`]).
    spares: usize,
}

impl<'a> IdealRoutes<'a> {
    /// Perfect state for `net`'s live, active nodes now, with its nodes' `b` and leaf-set size.
    pub fn new(net: &'a Network) -> Self {
        let mut sorted: Vec<(Id, Addr)> = net
            .active_addrs()
            .into_iter()
            .map(|a| (net.id(a), a))
            .collect();
        sorted.sort_unstable();
        let cfg = net.node_config();
        IdealRoutes {
            net,
            sorted,
            b: cfg.b,
            half: cfg.leaf_set_size / 2,
            spares: usize::from(cfg.cell_spares),
        }
    }

    /// Number of live, active nodes.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there is no live, active node.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The route of a message for `key` from the active node `from`.
    ///
    /// # Panics
    /// If `from` is not a live, active node of the network this state was built from.
    pub fn route(&self, from: Addr, key: Id) -> IdealRoute {
        let root = self.root(key);
        let mut at = self.position(from);
        let mut hops = 0;
        let mut latency = Duration::ZERO;
        // Every hop moves strictly closer to the key (a table hop also lengthens the shared
        // prefix), so the route ends at the root; the bound only guards against a bug.
        while self.sorted[at].1 != root {
            assert!(
                hops <= self.sorted.len(),
                "an ideal route for {key} does not end"
            );
            let addr = self.sorted[at].1;
            let next = self.next_hop(at, key, root);
            hops += 1;
            latency += self.net.latency(addr, next);
            at = self.position(next);
        }
        IdealRoute {
            hops,
            latency,
            root,
        }
    }

    /// The next hop from the node at `at` towards `key`, whose root is `root`.
    fn next_hop(&self, at: usize, key: Id, root: Addr) -> Addr {
        if self.in_leaf_span(at, key) {
            return root;
        }
        let (id, addr) = self.sorted[at];
        let shared = id.shared_prefix_len(key, self.b);
        let col = key.digit(shared, self.b);
        if self.spares > 0 && self.sparse_row(at, shared) {
            // The entry and its spares: the cell's 1 + spares nodes nearest to us; the hop
            // goes to the one numerically closest to the key.
            let mut cell: Vec<(Duration, Addr)> = self
                .cell(id, shared, col)
                .iter()
                .map(|&(_, a)| (self.net.latency(addr, a), a))
                .collect();
            cell.sort_unstable();
            cell.truncate(1 + self.spares);
            if let Some(&(_, a)) = cell
                .iter()
                .min_by(|x, y| key.cmp_closeness(self.net.id(x.1), self.net.id(y.1)))
            {
                return a;
            }
        }
        self.nearest_in_cell(addr, id, shared, col)
            .unwrap_or_else(|| self.rare_hop(at, key, shared))
    }

    /// The core's test for a sparse row, on the exact leaf set of the node at `at`: by the
    /// density the leaf set shows, a cell of `row` holds at most `spares + 1` nodes.
    fn sparse_row(&self, at: usize, row: usize) -> bool {
        let n = self.sorted.len();
        if n <= 2 * self.half {
            return true;
        }
        let low = self.sorted[(at + n - self.half) % n].0;
        let high = self.sorted[(at + self.half) % n].0;
        let span = low.cw_distance(high);
        let members = (2 * self.half) as u128;
        let bits = (row + 1) * usize::from(self.b);
        let cell = if bits >= 128 {
            1
        } else {
            1u128 << (128 - bits)
        };
        members.saturating_mul(cell >> 8) <= (self.spares as u128 + 1).saturating_mul(span >> 8)
    }

    /// The core's rare case over perfect state: the key's cell is empty; among the node's
    /// exact leaf set and its perfect table's rows from `shared` on, the node numerically
    /// closest to the key that shares at least `shared` digits with it and is closer than we
    /// are.
    fn rare_hop(&self, at: usize, key: Id, shared: usize) -> Addr {
        let n = self.sorted.len();
        let (own, addr) = self.sorted[at];
        let half = self.half.min(n - 1);
        let leaf =
            (1..=half).flat_map(|k| [self.sorted[(at + k) % n], self.sorted[(at + n - k) % n]]);
        let rows = (shared..Id::digit_count(self.b)).flat_map(|row| {
            (0..1u8 << self.b)
                .filter(move |c| *c != own.digit(row, self.b))
                .filter_map(move |c| self.nearest_in_cell(addr, own, row, c))
                .map(|a| (self.net.id(a), a))
        });
        leaf.chain(rows)
            .filter(|(id, _)| {
                id.shared_prefix_len(key, self.b) >= shared && key.is_closer(*id, own)
            })
            .min_by(|x, y| key.cmp_closeness(x.0, y.0))
            .map_or_else(|| self.root(key), |(_, a)| a)
    }

    /// The root of `key`: the oracle's closest live, active node.
    fn root(&self, key: Id) -> Addr {
        let id = self
            .net
            .oracle()
            .closest(key)
            .expect("no live, active node");
        self.sorted[self.sorted.partition_point(|(x, _)| *x < id)].1
    }

    fn position(&self, addr: Addr) -> usize {
        let id = self.net.id(addr);
        self.sorted
            .binary_search(&(id, addr))
            .expect("routes run between live, active nodes")
    }

    /// Whether `key` lies within the span of the exact leaf set of the node at `at`.
    fn in_leaf_span(&self, at: usize, key: Id) -> bool {
        let n = self.sorted.len();
        if n <= 2 * self.half {
            // Every other node is a member: the leaf set covers the ring.
            return true;
        }
        let low = self.sorted[(at + n - self.half) % n].0;
        let high = self.sorted[(at + self.half) % n].0;
        key.in_cw_arc(low, high)
    }

    /// The cell `(row, col)` of the node `own` at `from`: among the nodes that share `row`
    /// digits with `own` and have `col` as their next digit, the one nearest to `from` (ties
    /// to the lower address).
    fn nearest_in_cell(&self, from: Addr, own: Id, row: usize, col: u8) -> Option<Addr> {
        self.cell(own, row, col)
            .iter()
            .map(|&(_, a)| (self.net.latency(from, a), a))
            .min()
            .map(|(_, a)| a)
    }

    /// The live, active nodes of the cell `(row, col)` of the node `own`: those that share
    /// `row` digits with `own` and have `col` as their next digit.
    fn cell(&self, own: Id, row: usize, col: u8) -> &[(Id, Addr)] {
        let b = usize::from(self.b);
        let bits = ((row + 1) * b).min(128);
        // The cell's ids: our first `row` digits, then `col`, then anything.
        let keep = row * b;
        let high_part = if keep == 0 {
            0
        } else {
            own.as_u128() >> (128 - keep) << (128 - keep)
        };
        let digit_shift = 128 - bits;
        let width = bits - keep;
        // A last digit shorter than `b` bits is read left-aligned (see `Id::digit`).
        let low = high_part | (u128::from(col) >> (b - width)) << digit_shift;
        let high = if bits >= 128 {
            low
        } else {
            low | (u128::MAX >> bits)
        };
        let start = self.sorted.partition_point(|(id, _)| id.as_u128() < low);
        let end = self.sorted.partition_point(|(id, _)| id.as_u128() <= high);
        &self.sorted[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetConfig;

    fn ring(n: usize, seed: u64, b: u8, leaf: usize) -> Network {
        let mut cfg = NetConfig::with_seed(seed);
        cfg.node.b = b;
        cfg.node.leaf_set_size = leaf;
        let mut net = Network::new(cfg);
        net.grow(n, Duration::from_secs(60))
            .expect("the ring builds");
        net
    }

    /// Checks one hop against the rule it must follow, by brute force over every active node.
    fn check_hop(net: &Network, ideal: &IdealRoutes, from: Addr, key: Id) -> Addr {
        let b = net.node_config().b;
        let root = ideal.root(key);
        let at = ideal.position(from);
        let next = ideal.next_hop(at, key, root);
        let own = net.id(from);
        let shared = own.shared_prefix_len(key, b);
        let fits: Vec<Addr> = net
            .active_addrs()
            .into_iter()
            .filter(|a| net.id(*a).shared_prefix_len(key, b) > shared)
            .collect();
        if ideal.in_leaf_span(at, key) {
            assert_eq!(next, root, "within the leaf span the hop is the root");
        } else if let Some(best) = fits.iter().map(|a| net.latency(from, *a)).min() {
            assert!(
                fits.contains(&next),
                "a table hop lengthens the shared prefix"
            );
            assert_eq!(
                net.latency(from, next),
                best,
                "the cell holds the nearest candidate"
            );
        } else {
            // The rare case: no longer prefix anywhere; closer to the key, no shorter prefix.
            assert!(net.id(next).shared_prefix_len(key, b) >= shared);
            assert!(
                key.is_closer(net.id(next), own),
                "a rare hop moves closer to the key"
            );
        }
        next
    }

    #[test]
    fn every_hop_follows_the_rule_and_every_route_ends_at_the_oracles_root() {
        for (b, leaf, n, seed) in [
            (4, 16, 2000, 1),
            (4, 16, 300, 2),
            (3, 8, 400, 3),
            (2, 4, 300, 4),
            (1, 2, 200, 5),
        ] {
            println!("b {b}, leaf set {leaf}, {n} nodes, seed {seed}");
            let mut net = ring(n, seed, b, leaf);
            let keys: Vec<Id> = (0..300).map(|_| net.random_id()).collect();
            let ideal = IdealRoutes::new(&net);
            assert_eq!(ideal.len(), n);
            let active = net.active_addrs();
            let mut rare = 0;
            for (i, &key) in keys.iter().enumerate() {
                let from = active[(i * 7) % active.len()];
                let r = ideal.route(from, key);
                assert_eq!(Some(net.id(r.root)), net.oracle().closest(key), "key {key}");
                // Walk the same route hop by hop, checking each.
                let mut at = from;
                let mut latency = Duration::ZERO;
                for _ in 0..r.hops {
                    let next = check_hop(&net, &ideal, at, key);
                    let shared = net.id(at).shared_prefix_len(key, b);
                    if !ideal.in_leaf_span(ideal.position(at), key)
                        && net.id(next).shared_prefix_len(key, b) == shared
                    {
                        rare += 1;
                    }
                    latency += net.latency(at, next);
                    at = next;
                }
                assert_eq!((at, latency), (r.root, r.latency));
                if r.root == from {
                    assert_eq!(r.hops, 0);
                } else {
                    // The plane's latencies obey the triangle inequality (up to the
                    // simulator's floor per link).
                    let floor = Duration::from_micros(100) * r.hops as u32;
                    assert!(r.latency + floor >= net.latency(from, r.root));
                }
            }
            println!("  {rare} rare hops");
            if (b, n) == (4, 2000) {
                // Row 2 of a 2,000-node ring has empty cells: the rare case is exercised.
                assert!(rare > 0, "no rare hop in 300 routes");
            }
        }
    }

    #[test]
    fn with_spares_a_sparse_cell_hands_the_key_to_its_closest_near_node() {
        let mut cfg = NetConfig::with_seed(7);
        cfg.node.cell_spares = 3;
        let mut net = Network::new(cfg);
        net.grow(1000, Duration::from_secs(60))
            .expect("the ring builds");
        let keys: Vec<Id> = (0..300).map(|_| net.random_id()).collect();
        let ideal = IdealRoutes::new(&net);
        let active = net.active_addrs();
        let (mut spare_hops, mut hops_with, mut hops_without) = (0, 0, 0);
        let plain = IdealRoutes {
            spares: 0,
            ..IdealRoutes::new(&net)
        };
        for (i, &key) in keys.iter().enumerate() {
            let from = active[(i * 11) % active.len()];
            let r = ideal.route(from, key);
            assert_eq!(Some(net.id(r.root)), net.oracle().closest(key));
            hops_with += r.hops;
            hops_without += plain.route(from, key).hops;
            let mut at = from;
            while at != r.root {
                let pos = ideal.position(at);
                let next = ideal.next_hop(pos, key, r.root);
                let own = net.id(at);
                let shared = own.shared_prefix_len(key, 4);
                // 1,000 nodes: a row-1 cell holds about four nodes, so row 1 is sparse for
                // three spares by most nodes' leaf sets; row 0 (about 62 a cell) never is.
                assert!(shared >= 1 || !ideal.sparse_row(pos, shared));
                if !ideal.in_leaf_span(pos, key) && ideal.sparse_row(pos, shared) {
                    let mut cell: Vec<Addr> = active
                        .iter()
                        .copied()
                        .filter(|a| {
                            let id = net.id(*a);
                            own.shared_prefix_len(id, 4) == shared
                                && id.shared_prefix_len(key, 4) > shared
                        })
                        .collect();
                    if cell.is_empty() {
                        // The rare case, as without spares.
                        at = next;
                        continue;
                    }
                    cell.sort_by_key(|a| (net.latency(at, *a), *a));
                    cell.truncate(4);
                    assert!(cell.contains(&next), "the hop is one of the four nearest");
                    assert!(
                        cell.iter()
                            .all(|a| !key.is_closer(net.id(*a), net.id(next))),
                        "and the one closest to the key"
                    );
                    spare_hops += 1;
                }
                at = next;
            }
        }
        assert!(spare_hops > 100, "{spare_hops} hops through sparse cells");
        assert!(
            hops_with < hops_without,
            "{hops_with} hops with spares against {hops_without}"
        );
    }

    #[test]
    fn a_leaf_set_covers_a_ring_of_at_most_l_nodes_and_not_one_of_l_plus_one() {
        let mut net = ring(16, 5, 4, 16);
        let keys: Vec<Id> = (0..500).map(|_| net.random_id()).collect();
        let ideal = IdealRoutes::new(&net);
        let active = net.active_addrs();
        for (i, &key) in keys.iter().enumerate() {
            let from = active[i % active.len()];
            let r = ideal.route(from, key);
            if r.root != from {
                assert_eq!(r.hops, 1);
                assert_eq!(r.latency, net.latency(from, r.root));
            }
        }
        // With L + 1 nodes each node's leaf set misses the arc between its two farthest
        // members, as the core's leaf set does.
        let mut net = ring(17, 5, 4, 16);
        let keys: Vec<Id> = (0..500).map(|_| net.random_id()).collect();
        let ideal = IdealRoutes::new(&net);
        let outside = keys.iter().filter(|k| !ideal.in_leaf_span(0, **k)).count();
        assert!(
            outside > 0,
            "some key lies outside the span of 17 nodes' leaf sets"
        );
        let from = net.active_addrs()[0];
        for &key in &keys {
            assert_eq!(
                Some(net.id(ideal.route(from, key).root)),
                net.oracle().closest(key)
            );
        }
    }
}
