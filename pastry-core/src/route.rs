//! The routing decision, as a pure function of a node's state.

use crate::{Id, LeafSet, Peer, RoutingTable};

/// Which rule chose the next hop.
/// ```
/// use pastry_core::{next_hop, Id, LeafSet, NextHop, RoutingTable, Via};
/// let own = Id::new(0);
/// let (leaf, table) = (LeafSet::<u32>::new(own, 16), RoutingTable::<u32>::new(own, 4));
/// // With nothing known, there is no hop to report a rule for.
/// assert!(!matches!(next_hop(Id::new(1), own, &leaf, &table, None), NextHop::Forward(_, Via::Table)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The key is within the leaf set's span; the hop is the numerically closest node.
    LeafSet,
    /// The routing-table cell for the key's next digit.
    Table,
    /// The rare case: no cell, but a known node shares at least as long a prefix with the key
    /// and is numerically closer.
    Rare,
}

/// Where a message for a key goes from here.
/// ```
/// use pastry_core::{next_hop, Id, LeafSet, NextHop, RoutingTable};
/// let own = Id::new(0);
/// let (leaf, table) = (LeafSet::<u32>::new(own, 16), RoutingTable::<u32>::new(own, 4));
/// match next_hop(Id::new(77), own, &leaf, &table, None) {
///     NextHop::Local => {}
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug)]
pub enum NextHop<'a, A> {
    /// This node is the numerically closest node it knows of: deliver here.
    Local,
    /// Forward to this node.
    Forward(&'a Peer<A>, Via),
    /// The key is outside the leaf set's span and no known node is closer (a leaf-set side was
    /// emptied by failures): hold the message until repair.
    NoRoute,
}

/// Chooses the next hop for `key` at the node `own`.
///
/// 1. If the key lies within the leaf set's span, the hop is the numerically closest among the
///    members and us (`Local` if that is us). Suspected members are *not* skipped here: the
///    caller waits for the suspicion to resolve, because rerouting around a live root would
///    deliver at the wrong node.
/// 2. Otherwise the routing-table cell `[shared prefix][next digit of key]`, unless empty or
///    suspect; if the cell keeps spares (see [`RoutingTable::spares_in`]), the node of the
///    entry and its spares numerically closest to the key.
/// 3. Otherwise any known node (leaf set or table) that shares at least as long a prefix with
///    the key as we do and is numerically closer; the closest such node.
/// 4. Otherwise `NoRoute`.
///
/// `exclude` is never chosen (a joining node is not the root of its own join).
///
/// Every forward makes progress: rule 2 lengthens the shared prefix (every node of the cell
/// shares one more digit with the key), rule 3 keeps or lengthens it while getting strictly
/// closer, and rule 1 moves strictly closer to the key onto the node that is closest among
/// those this node knows.
///
/// ```
/// use pastry_core::{next_hop, Id, LeafSet, NextHop, RoutingTable};
/// let own = Id::new(1000);
/// let leaf: LeafSet<u32> = LeafSet::new(own, 16);
/// let table = RoutingTable::new(own, 4);
/// // Alone, every key is ours.
/// assert!(matches!(next_hop(Id::new(5), own, &leaf, &table, None), NextHop::Local));
/// ```
pub fn next_hop<'a, A: Clone + PartialEq>(
    key: Id,
    own: Id,
    leaf: &'a LeafSet<A>,
    table: &'a RoutingTable<A>,
    exclude: Option<Id>,
) -> NextHop<'a, A> {
    if leaf.in_range(key) {
        return match leaf.closest_member(key, exclude) {
            Some(p) if key.is_closer(p.id(), own) => NextHop::Forward(p, Via::LeafSet),
            _ => NextHop::Local,
        };
    }
    let b = table.b();
    let p = own.shared_prefix_len(key, b);
    if p >= Id::digit_count(b) {
        // The key is our own id, which is always in range; kept as a guard for callers that
        // pass a leaf set built for another id.
        return NextHop::Local;
    }
    let col = key.digit(p, b);
    let cell = table
        .get(p, col)
        .into_iter()
        .chain(table.spares_in(p, col))
        .filter(|c| !c.is_suspect() && Some(c.id()) != exclude)
        .min_by(|x, y| key.cmp_closeness(x.id(), y.id()));
    if let Some(peer) = cell {
        return NextHop::Forward(peer, Via::Table);
    }
    let usable = |c: &&Peer<A>| {
        !c.is_suspect()
            && Some(c.id()) != exclude
            && c.id().shared_prefix_len(key, b) >= p
            && key.is_closer(c.id(), own)
    };
    let best = leaf
        .members()
        .filter(usable)
        .chain(
            (p..table.row_count())
                .flat_map(|r| table.row(r))
                .filter(usable),
        )
        .min_by(|x, y| key.cmp_closeness(x.id(), y.id()));
    match best {
        Some(peer) => NextHop::Forward(peer, Via::Rare),
        None => NextHop::NoRoute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeHandle, Rtt};
    use core::time::Duration;

    fn peer(id: u128, rtt_ms: u64) -> Peer<u32> {
        Peer::verified(
            NodeHandle::new(Id::new(id), id as u32),
            Rtt::from_sample(Duration::from_millis(rtt_ms)),
        )
    }

    #[test]
    fn a_cell_with_spares_hands_the_key_to_its_closest_node() {
        let own = Id::new(0);
        let mut leaf = LeafSet::new(own, 4);
        for id in [1, 2, u128::MAX, u128::MAX - 1] {
            leaf.insert(peer(id, 5), crate::Instant::ZERO);
        }
        let mut table = RoutingTable::new(own, 4);
        // Row 2, column 7: the entry is the nearest by round trip; two spares stand beside it.
        let cell = |x: u128| (0x0070 << 112) | (x << 100);
        table.insert(peer(cell(0x100), 5));
        table.add_spare(peer(cell(0x900), 40), 2);
        table.add_spare(peer(cell(0xf00), 60), 2);
        let key = Id::new(cell(0x8ff));
        match next_hop(key, own, &leaf, &table, None) {
            NextHop::Forward(p, Via::Table) => assert_eq!(p.id(), Id::new(cell(0x900))),
            other => panic!("{other:?}"),
        }
        // A suspected spare is passed over, and so is an excluded one.
        table.update(Id::new(cell(0x900)), |p| {
            p.set_flag(crate::peer::SUSPECT, true)
        });
        match next_hop(key, own, &leaf, &table, None) {
            NextHop::Forward(p, Via::Table) => assert_eq!(p.id(), Id::new(cell(0xf00))),
            other => panic!("{other:?}"),
        }
        let far = Id::new(cell(0xeff));
        match next_hop(far, own, &leaf, &table, Some(Id::new(cell(0xf00)))) {
            NextHop::Forward(p, Via::Table) => assert_eq!(p.id(), Id::new(cell(0x100))),
            other => panic!("{other:?}"),
        }
        // Without spares the entry alone serves the cell.
        table.retain_spares(|_| false);
        match next_hop(far, own, &leaf, &table, None) {
            NextHop::Forward(p, Via::Table) => assert_eq!(p.id(), Id::new(cell(0x100))),
            other => panic!("{other:?}"),
        }
    }
}
