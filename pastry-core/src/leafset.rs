//! The leaf set: the L/2 numerically closest known nodes on each side of the ring.

use alloc::vec::Vec;
use smallvec::SmallVec;

use crate::{Id, Instant, NodeHandle, Peer};

/// One leaf-set member and the last time anything was heard from it.
#[derive(Clone, Debug)]
pub(crate) struct LeafEntry<A> {
    pub(crate) peer: Peer<A>,
    pub(crate) last_heard: Instant,
}

/// A side of the leaf set.
/// ```
/// use pastry_core::{Id, LeafSet, Side};
/// let leaf: LeafSet<u32> = LeafSet::new(Id::new(7), 8);
/// assert_eq!(leaf.side_peers(Side::Cw).len(), 0);
/// assert!(leaf.neighbour(Side::Ccw).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Clockwise: ids above ours (wrapping).
    Cw,
    /// Counter-clockwise: ids below ours (wrapping).
    Ccw,
}

fn hole_index(side: Side) -> usize {
    match side {
        Side::Cw => 0,
        Side::Ccw => 1,
    }
}

impl Side {
    /// The other side.
    ///
    /// ```
    /// use pastry_core::Side;
    /// assert_eq!(Side::Cw.opposite(), Side::Ccw);
    /// ```
    pub fn opposite(self) -> Side {
        match self {
            Side::Cw => Side::Ccw,
            Side::Ccw => Side::Cw,
        }
    }
}

type Half<A> = SmallVec<[LeafEntry<A>; 8]>;

/// A member's neighbours in a leaf set: the one towards us, the one away from us.
pub(crate) type Flanks<'a, A> = (Option<&'a Peer<A>>, Option<&'a Peer<A>>);

/// The leaf set of a node: up to L/2 closest known nodes on each side, each side ordered from
/// nearest to farthest.
///
/// When the ring has fewer than L + 1 nodes the two sides overlap (a node may sit on both), and
/// the leaf set then covers the whole ring. A side emptied by failures is *not* refilled from
/// the other side: an empty side means "unknown territory" until repair brings real neighbours.
///
/// ```
/// use pastry_core::{Id, LeafSet};
/// let leaf: LeafSet<u32> = LeafSet::new(Id::new(100), 16);
/// assert!(leaf.is_empty());
/// assert!(leaf.covers_ring()); // alone: every key is ours
/// ```
#[derive(Clone, Debug)]
pub struct LeafSet<A> {
    own: Id,
    half: usize,
    cw: Half<A>,
    ccw: Half<A>,
    /// Per side (cw, ccw): the side was full and lost a member that failed or left, or it
    /// belongs to a node joining a ring larger than a leaf set and is not full yet. Until it
    /// is full it takes only nodes from its own half of the ring: in a ring larger than the
    /// leaf set the nodes "nearest" going the long way round are not neighbours, however few
    /// the side holds for now.
    holes: [bool; 2],
}

/// What inserting a node changed.
#[derive(Debug)]
pub(crate) struct Inserted<A> {
    /// The node entered at least one side.
    pub(crate) added: bool,
    /// Nodes pushed off both sides by the newcomer.
    pub(crate) displaced: SmallVec<[Peer<A>; 2]>,
}

impl<A: Clone + PartialEq> LeafSet<A> {
    /// An empty leaf set for the node `own`, keeping `size / 2` nodes per side.
    pub fn new(own: Id, size: usize) -> Self {
        LeafSet {
            own,
            half: size / 2,
            cw: SmallVec::new(),
            ccw: SmallVec::new(),
            holes: [false; 2],
        }
    }

    /// The id of the node that owns this leaf set.
    pub fn own_id(&self) -> Id {
        self.own
    }

    /// Nodes kept per side (L/2).
    pub fn half(&self) -> usize {
        self.half
    }

    /// Distance from us to `id` going round the ring in the direction of `side`.
    pub(crate) fn dist(&self, side: Side, id: Id) -> u128 {
        match side {
            Side::Cw => self.own.cw_distance(id),
            Side::Ccw => id.cw_distance(self.own),
        }
    }

    fn side(&self, side: Side) -> &Half<A> {
        match side {
            Side::Cw => &self.cw,
            Side::Ccw => &self.ccw,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Half<A> {
        match side {
            Side::Cw => &mut self.cw,
            Side::Ccw => &mut self.ccw,
        }
    }

    /// Members of one side, nearest first.
    pub fn side_peers(&self, side: Side) -> impl ExactSizeIterator<Item = &Peer<A>> + '_ {
        self.side(side).iter().map(|e| &e.peer)
    }

    /// Every member once (clockwise side first, then counter-clockwise members not already
    /// listed).
    pub fn members(&self) -> impl Iterator<Item = &Peer<A>> + '_ {
        let cw = &self.cw;
        self.cw.iter().map(|e| &e.peer).chain(
            self.ccw
                .iter()
                .filter(move |e| !cw.iter().any(|c| c.peer.id() == e.peer.id()))
                .map(|e| &e.peer),
        )
    }

    /// Number of distinct members.
    pub fn len(&self) -> usize {
        self.members().count()
    }

    /// Whether the leaf set has no members (the node believes it is alone).
    pub fn is_empty(&self) -> bool {
        self.cw.is_empty() && self.ccw.is_empty()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: Id) -> bool {
        self.get(id).is_some()
    }

    /// The member with this id.
    pub fn get(&self, id: Id) -> Option<&Peer<A>> {
        self.entry(id).map(|e| &e.peer)
    }

    /// Where `id` sits on a side, if it does (sides are short: a scan beats a search).
    fn position(&self, side: Side, id: Id) -> Option<usize> {
        self.side(side).iter().position(|e| e.peer.id() == id)
    }

    pub(crate) fn entry(&self, id: Id) -> Option<&LeafEntry<A>> {
        self.cw
            .iter()
            .chain(self.ccw.iter())
            .find(|e| e.peer.id() == id)
    }

    /// Applies `f` to every copy of the member `id` (a member can sit on both sides).
    pub(crate) fn update(&mut self, id: Id, mut f: impl FnMut(&mut LeafEntry<A>)) -> bool {
        let mut found = false;
        if let Some(i) = self.position(Side::Cw, id) {
            f(&mut self.cw[i]);
            found = true;
        }
        if let Some(i) = self.position(Side::Ccw, id) {
            f(&mut self.ccw[i]);
            found = true;
        }
        found
    }

    /// The nearest member on a side (the ring neighbour).
    pub fn neighbour(&self, side: Side) -> Option<&Peer<A>> {
        self.side(side).first().map(|e| &e.peer)
    }

    /// The members on either side of member `id` in ring order, as far as this leaf set
    /// knows: the one between it and us (`None` when that is us) and the one beyond it (`None`
    /// past the edge of the leaf set). From the clockwise side if `id` is there, else from the
    /// counter-clockwise one; `None` if `id` is not a member.
    pub(crate) fn flanks(&self, id: Id) -> Option<Flanks<'_, A>> {
        self.flanks_on_each_side(id).next()
    }

    /// Whether member `a` is, as this leaf set places them, the ring neighbour of member
    /// `b` (on either side that holds `b`: in a small ring the two sides overlap, and only one
    /// of them may reach past `b`).
    pub(crate) fn adjacent(&self, a: Id, b: Id) -> bool {
        self.flanks_on_each_side(b)
            .any(|(inner, outer)| [inner, outer].into_iter().flatten().any(|p| p.id() == a))
    }

    fn flanks_on_each_side(&self, id: Id) -> impl Iterator<Item = Flanks<'_, A>> + '_ {
        [&self.cw, &self.ccw].into_iter().filter_map(move |side| {
            let i = side.iter().position(|e| e.peer.id() == id)?;
            let inner = i.checked_sub(1).map(|j| &side[j].peer);
            Some((inner, side.get(i + 1).map(|e| &e.peer)))
        })
    }

    /// The farthest member on a side.
    pub fn farthest(&self, side: Side) -> Option<&Peer<A>> {
        self.side(side).last().map(|e| &e.peer)
    }

    /// Whether the two sides meet, so that the leaf set knows the whole ring. True when the
    /// node is alone.
    pub fn covers_ring(&self) -> bool {
        match (self.cw.last(), self.ccw.last()) {
            (None, None) => true,
            (Some(far), Some(_)) => self.ccw.iter().any(|e| e.peer.id() == far.peer.id()),
            _ => false,
        }
    }

    /// Whether `key` lies within the span of either side: clockwise from us to the farthest
    /// clockwise member, or counter-clockwise from us to the farthest counter-clockwise member.
    /// Within it, the numerically closest node is among the members and us. Our own id is
    /// always in range.
    ///
    /// The test is made per side rather than on the single arc from one far end to the other:
    /// after failures a side may hold a node that lies beyond the opposite side's far end, and
    /// the single arc would then no longer pass through us.
    pub fn in_range(&self, key: Id) -> bool {
        if self.covers_ring() {
            return true;
        }
        let hi = self.cw.last().map_or(self.own, |e| e.peer.id());
        let lo = self.ccw.last().map_or(self.own, |e| e.peer.id());
        key.in_cw_arc(self.own, hi) || key.in_cw_arc(lo, self.own)
    }

    /// The member numerically closest to `key`, skipping `exclude`.
    pub fn closest_member(&self, key: Id, exclude: Option<Id>) -> Option<&Peer<A>> {
        self.cw
            .iter()
            .chain(self.ccw.iter())
            .map(|e| &e.peer)
            .filter(|p| Some(p.id()) != exclude)
            .min_by(|a, b| key.cmp_closeness(a.id(), b.id()))
    }

    /// Position a node with this id would take on a side, or `None` if it would not fit.
    fn slot(&self, side: Side, id: Id) -> Option<usize> {
        let d = self.dist(side, id);
        let entries = self.side(side);
        let pos = entries.partition_point(|e| self.dist(side, e.peer.id()) < d);
        // A side with a hole refuses a node from the far half of the ring only where it would
        // extend the side: one nearer than a member the side already holds is a neighbour
        // whichever way round it lies (small or sparse rings wrap legitimately).
        let extends = pos == entries.len();
        if pos >= self.half
            || extends && self.holes[hole_index(side)] && d > self.dist(side.opposite(), id)
        {
            return None;
        }
        Some(pos)
    }

    /// Whether a node with this id would enter the leaf set if inserted now.
    pub fn would_accept(&self, id: Id) -> bool {
        id != self.own
            && !self.contains(id)
            && (self.slot(Side::Cw, id).is_some() || self.slot(Side::Ccw, id).is_some())
    }

    /// Whether a node with this id would enter the leaf set as a ring neighbour (the nearest
    /// member on a side) if inserted now.
    pub(crate) fn would_neighbour(&self, id: Id) -> bool {
        id != self.own
            && !self.contains(id)
            && [Side::Cw, Side::Ccw]
                .into_iter()
                .any(|side| self.slot(side, id) == Some(0))
    }

    /// Inserts a node on every side where it is among the L/2 nearest. Where it already sits,
    /// it keeps its place and has its handle refreshed.
    pub(crate) fn insert(&mut self, peer: Peer<A>, now: Instant) -> Inserted<A> {
        let mut out = Inserted {
            added: false,
            displaced: SmallVec::new(),
        };
        let id = peer.id();
        if id == self.own {
            return out;
        }
        let was_member = self.contains(id);
        self.update(id, |e| {
            if e.peer.handle.addr != peer.handle.addr {
                // A member moves to another address only on the word of that address itself
                // (a verified peer); what we knew of the old address does not carry over.
                if !peer.is_verified() {
                    return;
                }
                e.peer.handle.addr = peer.handle.addr.clone();
                e.peer.flags = 0;
                e.peer.rtt = crate::Rtt::default();
            }
            if peer.rtt.srtt().is_some() {
                e.peer.rtt = peer.rtt;
            }
            e.peer.flags |= peer.flags & (crate::peer::VERIFIED | crate::peer::CONFIRMED);
            e.last_heard = e.last_heard.max(now);
        });
        let mut evicted: SmallVec<[Peer<A>; 2]> = SmallVec::new();
        for side in [Side::Cw, Side::Ccw] {
            if self.side(side).iter().any(|e| e.peer.id() == id) {
                continue;
            }
            if let Some(pos) = self.slot(side, id) {
                let half = self.half;
                let entry = self.entry(id).cloned().unwrap_or(LeafEntry {
                    peer: peer.clone(),
                    last_heard: now,
                });
                let entries = self.side_mut(side);
                entries.insert(pos, entry);
                if entries.len() > half
                    && let Some(e) = entries.pop()
                {
                    evicted.push(e.peer);
                }
            }
        }
        for side in [Side::Cw, Side::Ccw] {
            if self.side(side).len() >= self.half {
                self.holes[hole_index(side)] = false;
            }
        }
        out.added = !was_member && self.contains(id);
        for p in evicted {
            if !self.contains(p.id()) && !out.displaced.iter().any(|d| d.id() == p.id()) {
                out.displaced.push(p);
            }
        }
        out
    }

    /// Removes a member that failed or left. A side it leaves short after being full keeps
    /// to its own half of the ring until it is full again (see [`LeafSet`]'s holes); once
    /// fewer than L/2 nodes are known at all, the ring is small and the sides may wrap again.
    pub(crate) fn remove_departed(&mut self, id: Id) -> Option<Peer<A>> {
        for side in [Side::Cw, Side::Ccw] {
            let entries = self.side(side);
            if entries.len() >= self.half && entries.iter().any(|e| e.peer.id() == id) {
                self.holes[hole_index(side)] = true;
            }
        }
        let removed = self.remove(id);
        if self.len() < self.half {
            self.holes = [false; 2];
        }
        removed
    }

    /// Marks every side short of L/2 members as having a hole: for a node joining a ring that
    /// is known to be larger than a leaf set, before its sides fill.
    pub(crate) fn hole_short_sides(&mut self) {
        for side in [Side::Cw, Side::Ccw] {
            if self.side(side).len() < self.half {
                self.holes[hole_index(side)] = true;
            }
        }
    }

    /// Whether a side has a hole (see [`LeafSet`]'s holes).
    pub(crate) fn has_hole(&self, side: Side) -> bool {
        self.holes[hole_index(side)]
    }

    /// Ends a side's hole: it takes nodes from anywhere again, as when it was last full.
    pub(crate) fn close_hole(&mut self, side: Side) {
        self.holes[hole_index(side)] = false;
    }

    /// Removes a member from both sides.
    pub(crate) fn remove(&mut self, id: Id) -> Option<Peer<A>> {
        let mut removed = None;
        for side in [Side::Cw, Side::Ccw] {
            let entries = self.side_mut(side);
            if let Some(pos) = entries.iter().position(|e| e.peer.id() == id) {
                removed = Some(entries.remove(pos).peer);
            }
        }
        removed
    }

    /// The side(s) a member sits on.
    pub(crate) fn sides_of(&self, id: Id) -> SmallVec<[Side; 2]> {
        let mut s = SmallVec::new();
        if self.cw.iter().any(|e| e.peer.id() == id) {
            s.push(Side::Cw);
        }
        if self.ccw.iter().any(|e| e.peer.id() == id) {
            s.push(Side::Ccw);
        }
        s
    }

    /// Whether a side holds fewer than L/2 members while the leaf set does not cover the ring:
    /// a hole that repair should fill.
    pub fn needs_repair(&self, side: Side) -> bool {
        self.side(side).len() < self.half && !self.covers_ring()
    }

    /// The `k` nodes (members and us) numerically closest to `key`, closest first: where
    /// replicas of `key` belong. Meaningful when `key` is in range; `k` is capped at L/2 + 1.
    pub fn replica_set(&self, key: Id, own: &NodeHandle<A>, k: usize) -> Vec<NodeHandle<A>> {
        let k = k.min(self.half + 1);
        let mut all: Vec<NodeHandle<A>> = self.members().map(|p| p.handle.clone()).collect();
        all.push(own.clone());
        all.sort_by(|a, b| key.cmp_closeness(a.id, b.id));
        all.truncate(k);
        all
    }

    /// The arc of keys `[lo, hi]` (clockwise, inclusive) for which `id` (us or a member) is the
    /// numerically closest node among us and the members, or `None` if `id` is unknown or its
    /// neighbour on either side is unknown (it is the farthest member).
    pub fn range_of(&self, id: Id) -> Option<(Id, Id)> {
        let mut ring: Vec<Id> = self.members().map(|p| p.id()).collect();
        ring.push(self.own);
        if ring.len() == 1 {
            return Some((id.wrapping_add(1), id)).filter(|_| id == self.own);
        }
        ring.sort_unstable();
        let i = ring.iter().position(|x| *x == id)?;
        let n = ring.len();
        let prev = ring[(i + n - 1) % n];
        let next = ring[(i + 1) % n];
        if !self.covers_ring() {
            // Only nodes strictly inside the span have both neighbours known.
            let far_ccw = self.ccw.last().map(|e| e.peer.id());
            let far_cw = self.cw.last().map(|e| e.peer.id());
            if Some(id) == far_ccw || Some(id) == far_cw {
                return None;
            }
        }
        let lo = first_owned(prev, id);
        let hi = last_owned_cw(id, next);
        Some((lo, hi))
    }
}

/// The first key on the clockwise arc from `prev` to `id` that is closer to `id` than to `prev`.
fn first_owned(prev: Id, id: Id) -> Id {
    if prev == id {
        return id;
    }
    // Binary search on the offset from `prev`; closeness to `id` is monotone along the arc when
    // the arc is at most half the ring, which holds between ring neighbours in any ring of three
    // or more nodes.
    let span = prev.cw_distance(id);
    let (mut lo, mut hi) = (0u128, span);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let key = prev.wrapping_add(mid);
        if key.is_closer(id, prev) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    prev.wrapping_add(lo)
}

/// The last key on the clockwise arc from `id` to `next` that is closer to `id` than to `next`.
fn last_owned_cw(id: Id, next: Id) -> Id {
    if next == id {
        return id;
    }
    let span = id.cw_distance(next);
    let (mut lo, mut hi) = (0u128, span);
    // Invariant: offset `lo` is owned by `id`; find the largest owned offset.
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let key = id.wrapping_add(mid);
        if key.is_closer(id, next) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    id.wrapping_add(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u128) -> Peer<u32> {
        Peer::new(NodeHandle::new(Id::new(id), id as u32))
    }

    fn ids(leaf: &LeafSet<u32>, side: Side) -> Vec<u128> {
        leaf.side_peers(side).map(|p| p.id().as_u128()).collect()
    }

    #[test]
    fn keeps_nearest_per_side() {
        let mut leaf = LeafSet::new(Id::new(1000), 4);
        for id in [1010, 990, 1020, 980, 1030, 970, 1005] {
            leaf.insert(peer(id), Instant::ZERO);
        }
        assert_eq!(ids(&leaf, Side::Cw), vec![1005, 1010]);
        assert_eq!(ids(&leaf, Side::Ccw), vec![990, 980]);
        assert!(!leaf.covers_ring());
        assert!(leaf.in_range(Id::new(981)));
        assert!(!leaf.in_range(Id::new(1011)));
        assert!(leaf.would_accept(Id::new(1001)));
        assert!(!leaf.would_accept(Id::new(1040)));
    }

    /// A point `f` of the way round the ring.
    fn at(f: f64) -> u128 {
        (f * 2f64.powi(128)) as u128
    }

    #[test]
    fn a_side_with_a_hole_still_takes_a_nearer_node_from_the_far_half() {
        // Own id at 0.5 of the ring, L = 4. B (0.8) and A (0.85) lie more than half the ring
        // away counter-clockwise, yet are the nearest nodes on that side.
        let mut leaf = LeafSet::new(Id::new(at(0.5)), 4);
        for f in [0.85, 0.8, 0.55] {
            leaf.insert(peer(at(f)), Instant::ZERO);
        }
        assert_eq!(ids(&leaf, Side::Ccw), vec![at(0.85), at(0.8)]);
        // A fails: the full counter-clockwise side now has a hole.
        leaf.remove_departed(Id::new(at(0.85)));
        assert_eq!(ids(&leaf, Side::Ccw), vec![at(0.8)]);
        // E (0.9) is nearer counter-clockwise than B, which the side holds: it is our nearest
        // neighbour on that side, though it too lies in the far half.
        assert!(leaf.would_accept(Id::new(at(0.9))));
        leaf.insert(peer(at(0.9)), Instant::ZERO);
        assert_eq!(ids(&leaf, Side::Ccw), vec![at(0.9), at(0.8)]);
        assert!(leaf.in_range(Id::new(at(0.5))));
    }

    #[test]
    fn a_side_with_a_hole_does_not_extend_into_the_far_half() {
        // Own id at 0.5, L = 4; the counter-clockwise side is full with near nodes, then
        // loses one. A node beyond the side's remaining member and nearer going clockwise
        // is not taken on the counter-clockwise side until the hole closes.
        let mut leaf = LeafSet::new(Id::new(at(0.5)), 4);
        for f in [0.45, 0.4, 0.55, 0.6] {
            leaf.insert(peer(at(f)), Instant::ZERO);
        }
        leaf.remove_departed(Id::new(at(0.45)));
        assert_eq!(ids(&leaf, Side::Ccw), vec![at(0.4)]);
        assert!(!leaf.would_accept(Id::new(at(0.9))));
        leaf.close_hole(Side::Ccw);
        assert!(leaf.would_accept(Id::new(at(0.9))));
    }

    #[test]
    fn a_joining_nodes_short_sides_keep_to_their_own_half_until_full() {
        // Own id at 0.5, L = 4, joining a ring known to be larger than a leaf set. Without
        // holes, an empty side takes any node, however far round the ring it lies: 0.9 (0.4
        // of the ring away clockwise, 0.6 counter-clockwise) lands on both sides.
        let mut open = LeafSet::new(Id::new(at(0.5)), 4);
        open.insert(peer(at(0.9)), Instant::ZERO);
        assert_eq!(ids(&open, Side::Ccw), vec![at(0.9)]);
        let mut leaf = LeafSet::new(Id::new(at(0.5)), 4);
        leaf.hole_short_sides();
        assert!(leaf.has_hole(Side::Cw) && leaf.has_hole(Side::Ccw));
        // With holes it joins only the clockwise side, in whose half of the ring it lies.
        leaf.insert(peer(at(0.9)), Instant::ZERO);
        assert_eq!(ids(&leaf, Side::Ccw), Vec::<u128>::new());
        assert_eq!(ids(&leaf, Side::Cw), vec![at(0.9)]);
        // 0.2 lies 0.7 of the way round clockwise, in the far half: the short clockwise side
        // does not extend to it, the counter-clockwise side (0.3 away) takes it.
        leaf.insert(peer(at(0.2)), Instant::ZERO);
        assert_eq!(ids(&leaf, Side::Cw), vec![at(0.9)]);
        assert_eq!(ids(&leaf, Side::Ccw), vec![at(0.2)]);
        // Filling a side ends its hole: from then on it holds the nearest nodes, wherever.
        leaf.insert(peer(at(0.6)), Instant::ZERO);
        assert_eq!(ids(&leaf, Side::Cw), vec![at(0.6), at(0.9)]);
        assert!(!leaf.has_hole(Side::Cw));
        assert!(leaf.has_hole(Side::Ccw));
    }

    #[test]
    fn small_ring_overlaps_and_covers() {
        let mut leaf = LeafSet::new(Id::new(0), 16);
        for id in [5, 1 << 100, u128::MAX - 3] {
            leaf.insert(peer(id), Instant::ZERO);
        }
        assert_eq!(leaf.len(), 3);
        assert!(leaf.covers_ring());
        assert!(leaf.in_range(Id::new(1 << 120)));
        assert_eq!(ids(&leaf, Side::Cw), vec![5, 1 << 100, u128::MAX - 3]);
        assert_eq!(ids(&leaf, Side::Ccw), vec![u128::MAX - 3, 1 << 100, 5]);
        assert_eq!(leaf.remove(Id::new(5)).map(|p| p.id()), Some(Id::new(5)));
        assert_eq!(leaf.len(), 2);
    }

    #[test]
    fn displaced_nodes_are_reported() {
        let mut leaf = LeafSet::new(Id::new(1000), 2);
        leaf.insert(peer(1010), Instant::ZERO);
        leaf.insert(peer(990), Instant::ZERO);
        // 1010 sits cw, 990 ccw (each also fits the other side? no: half = 1).
        let r = leaf.insert(peer(1001), Instant::ZERO);
        assert!(r.added);
        assert_eq!(
            r.displaced.iter().map(|p| p.id()).collect::<Vec<_>>(),
            vec![Id::new(1010)]
        );
    }

    #[test]
    fn emptied_side_is_not_refilled() {
        let mut leaf = LeafSet::new(Id::new(1000), 4);
        for id in [1010, 1020, 990, 980] {
            leaf.insert(peer(id), Instant::ZERO);
        }
        leaf.remove(Id::new(990));
        leaf.remove(Id::new(980));
        assert!(!leaf.covers_ring());
        assert!(leaf.needs_repair(Side::Ccw));
        assert!(!leaf.in_range(Id::new(999)));
        assert!(leaf.in_range(Id::new(1000)));
    }

    #[test]
    fn ranges_split_at_midpoints() {
        let mut leaf = LeafSet::new(Id::new(1000), 4);
        for id in [900, 1100, 1200, 800] {
            leaf.insert(peer(id), Instant::ZERO);
        }
        assert_eq!(
            leaf.range_of(Id::new(1000)),
            Some((Id::new(951), Id::new(1050)))
        );
        assert_eq!(
            leaf.range_of(Id::new(1100)),
            Some((Id::new(1051), Id::new(1150)))
        );
        assert_eq!(leaf.range_of(Id::new(1200)), None);
        let alone: LeafSet<u32> = LeafSet::new(Id::new(7), 8);
        assert_eq!(alone.range_of(Id::new(7)), Some((Id::new(8), Id::new(7))));
    }

    #[test]
    fn replica_set_is_k_closest() {
        let mut leaf = LeafSet::new(Id::new(1000), 8);
        for id in [900, 1100, 1200, 800, 1010] {
            leaf.insert(peer(id), Instant::ZERO);
        }
        let own = NodeHandle::new(Id::new(1000), 1000);
        let r: Vec<u128> = leaf
            .replica_set(Id::new(1090), &own, 3)
            .iter()
            .map(|h| h.id.as_u128())
            .collect();
        assert_eq!(r, vec![1100, 1010, 1000]);
    }
}
