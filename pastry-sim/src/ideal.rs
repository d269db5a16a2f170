//! Routes over perfect state: what a lookup would cost if every routing-table cell held the
//! live node nearest to its owner (proximity neighbour selection at its ideal) and every leaf
//! set were exact. A yardstick for the route delay penalty a run measures, computed on the same
//! ring, with the same latencies, for the same lookups.
//!
//! The rule is the core's next-hop rule on that state: a key within the node's leaf-set span
//! goes to its root; otherwise to the cell `[shared prefix][next digit of the key]`, whose
//! entry is the candidate nearest to the node; a key whose cell has no candidate at all goes
//! to its root directly (the rare case, which a real node reaches in one or two hops).

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
        // Each table hop lengthens the shared prefix, so a route has at most one hop per digit
        // and one into the leaf set.
        for _ in 0..=Id::digit_count(self.b) {
            let (id, addr) = self.sorted[at];
            if addr == root {
                break;
            }
            let next = if self.in_leaf_span(at, key) {
                root
            } else {
                let shared = id.shared_prefix_len(key, self.b);
                self.nearest_in_cell(addr, key, shared).unwrap_or(root)
            };
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

    /// The root of `key`, with the core's closeness order (ties to the lower id).
    fn root(&self, key: Id) -> Addr {
        let n = self.sorted.len();
        assert!(n > 0, "no live, active node");
        let i = self.sorted.partition_point(|(id, _)| *id < key);
        let (up, down) = (self.sorted[i % n], self.sorted[(i + n - 1) % n]);
        if up.0 == down.0 || key.is_closer(up.0, down.0) {
            up.1
        } else {
            down.1
        }
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
        if n <= 2 * self.half + 1 {
            return true;
        }
        let low = self.sorted[(at + n - self.half) % n].0;
        let high = self.sorted[(at + self.half) % n].0;
        key.in_cw_arc(low, high)
    }

    /// Among the nodes whose id shares `shared + 1` digits with `key`, the one nearest to
    /// `from` (ties to the lower id).
    fn nearest_in_cell(&self, from: Addr, key: Id, shared: usize) -> Option<Addr> {
        let bits = (shared + 1) * usize::from(self.b);
        let (low, high) = if bits >= 128 {
            (key.as_u128(), key.as_u128())
        } else {
            let prefix = key.as_u128() >> (128 - bits);
            let low = prefix << (128 - bits);
            (low, low | (u128::MAX >> bits))
        };
        let start = self.sorted.partition_point(|(id, _)| id.as_u128() < low);
        let end = self.sorted.partition_point(|(id, _)| id.as_u128() <= high);
        self.sorted[start..end]
            .iter()
            .map(|&(_, a)| (self.net.latency(from, a), a))
            .min()
            .map(|(_, a)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetConfig;

    fn ring(n: usize, seed: u64) -> Network {
        let mut net = Network::new(NetConfig::with_seed(seed));
        net.grow(n, Duration::from_secs(60))
            .expect("the ring builds");
        net
    }

    #[test]
    fn routes_end_at_the_oracles_root_in_a_few_hops_and_never_beat_the_direct_path() {
        for seed in [1, 2] {
            println!("seed {seed}");
            let mut net = ring(300, seed);
            let keys: Vec<Id> = (0..2000).map(|_| net.random_id()).collect();
            let ideal = IdealRoutes::new(&net);
            assert_eq!(ideal.len(), 300);
            let active = net.active_addrs();
            for (i, &key) in keys.iter().enumerate() {
                let from = active[i % active.len()];
                let r = ideal.route(from, key);
                assert_eq!(Some(net.id(r.root)), net.oracle().closest(key), "key {key}");
                // 300 nodes need at most two digits before a leaf set covers the key.
                assert!(r.hops <= 3, "{} hops from {from} for {key}", r.hops);
                if r.root == from {
                    assert_eq!((r.hops, r.latency), (0, Duration::ZERO));
                } else {
                    // Latencies on the sphere obey the triangle inequality (up to the
                    // simulator's floor per link).
                    let direct = net.latency(from, r.root);
                    let floor = Duration::from_micros(100) * r.hops as u32;
                    assert!(r.latency + floor >= direct, "route shorter than direct");
                }
            }
        }
    }

    #[test]
    fn in_a_ring_no_larger_than_a_leaf_set_every_route_is_one_direct_hop() {
        let mut net = ring(17, 5);
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
    }

    #[test]
    fn a_table_hop_goes_to_the_nearest_node_of_the_cell() {
        let mut net = ring(2000, 7);
        let keys: Vec<Id> = (0..300).map(|_| net.random_id()).collect();
        let ideal = IdealRoutes::new(&net);
        let active = net.active_addrs();
        let b = net.node_config().b;
        let mut checked = 0;
        for (i, &key) in keys.iter().enumerate() {
            let from = active[(i * 7) % active.len()];
            let shared = net.id(from).shared_prefix_len(key, b);
            if ideal.in_leaf_span(ideal.position(from), key) {
                continue;
            }
            let next = ideal
                .nearest_in_cell(from, key, shared)
                .expect("2,000 nodes fill every cell of the first row");
            // Brute force over every active node that fits the cell.
            let best = active
                .iter()
                .filter(|a| net.id(**a).shared_prefix_len(key, b) > shared)
                .map(|a| net.latency(from, *a))
                .min()
                .expect("the cell has a candidate");
            assert_eq!(net.latency(from, next), best);
            assert!(net.id(next).shared_prefix_len(key, b) > shared);
            checked += 1;
        }
        assert!(checked > 200, "only {checked} keys needed a table hop");
    }
}
