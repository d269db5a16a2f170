//! Invariant checkers: one definition of what a node's state and output must satisfy, shared
//! by unit tests, property tests, fuzz targets and the simulator. Enabled by the `invariants`
//! feature.
//!
//! ```
//! use pastry_core::{invariants, Config, Id, Instant, Node};
//! let mut node: Node<u32> = Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
//! node.join(Instant::ZERO, 2).unwrap();
//! invariants::check_node(&node).unwrap();
//! while let Some(t) = node.poll_transmit() {
//!     invariants::check_transmit(&node, &t).unwrap();
//! }
//! ```

use core::fmt;

use crate::wire::Datagram;
use crate::{Address, Node, Transmit};

/// An invariant that does not hold, named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation(pub &'static str);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant violated: {}", self.0)
    }
}

impl core::error::Error for Violation {}

/// Bytes a node may hold at most, whatever it was fed: every queue and table is bounded by its
/// configuration, and this is the sum of those bounds (generously rounded up).
pub fn memory_bound<A: Address>(node: &Node<A>) -> usize {
    let c = node.config();
    let datagram = c.max_datagram_size + 64;
    let handle = 16 + A::MAX_ENCODED_LEN + 32;
    let rows = crate::Id::digit_count(c.b) * (1usize << c.b);
    64 * 1024
        + rows * 2 * handle
        + c.leaf_set_size * 2 * handle
        // held messages and messages in flight carry at most one datagram each
        + (c.max_held + c.max_in_flight) * (datagram + 256)
        // probes, each with a bounded queue of datagrams waiting for verification
        + c.max_probes * (17 * datagram + 256)
        // the duplicate filter
        + 4096 * 64
}

/// Checks a node's structural invariants: leaf-set sides ordered, bounded and free of our own
/// id; routing-table entries in the cells their ids belong to; every queue, table and cache
/// within its bound; memory within [`memory_bound`].
pub fn check_node<A: Address>(node: &Node<A>) -> Result<(), Violation> {
    node.check_invariants().map_err(Violation)?;
    if node.state_bytes() > memory_bound(node) {
        return Err(Violation("memory above its bound"));
    }
    Ok(())
}

/// Checks one datagram a node produced: it decodes, fits the datagram size, names the node as
/// its sender, and is not addressed to the node itself.
pub fn check_transmit<A: Address>(node: &Node<A>, t: &Transmit<A>) -> Result<(), Violation> {
    let max = node.config().max_datagram_size;
    if t.contents.len() > max {
        return Err(Violation("datagram larger than max_datagram_size"));
    }
    let d = Datagram::<A>::decode(&t.contents, max)
        .map_err(|_| Violation("datagram does not decode"))?;
    if d.sender != node.local().id {
        return Err(Violation("datagram names another sender"));
    }
    if t.destination == node.local().addr {
        return Err(Violation("datagram addressed to the node itself"));
    }
    Ok(())
}
