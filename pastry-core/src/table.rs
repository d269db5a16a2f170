//! The routing table: `ceil(128 / b)` rows of `2^b` cells, stored sparsely.

use alloc::vec::Vec;

use smallvec::SmallVec;

use crate::{Id, Peer};

/// Rows kept inside the table itself: a ring of a million nodes fills about five.
const INLINE_ROWS: usize = 6;

#[derive(Clone, Debug)]
struct Row<A> {
    /// Bit `c` is set when column `c` holds a node.
    mask: u16,
    /// The occupied cells in column order.
    cells: Vec<Peer<A>>,
}

impl<A> Row<A> {
    fn index(&self, col: u8) -> usize {
        (self.mask & ((1u16 << col) - 1)).count_ones() as usize
    }

    fn get(&self, col: u8) -> Option<&Peer<A>> {
        (self.mask & (1 << col) != 0).then(|| &self.cells[self.index(col)])
    }
}

/// What an insertion did to the routing table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TableInsert<A> {
    /// The cell was empty.
    Added,
    /// The newcomer is nearer (lower round trip) than the node it replaced.
    Replaced(Peer<A>),
    /// The node was already there; its address and round trip were refreshed.
    Updated,
    /// The cell holds a nearer node (or the id is ours).
    Kept,
}

/// Row `r`, column `c` holds a node that shares `r` digits with us and whose next digit is `c`;
/// among candidates for a cell the one with the lowest measured round trip is kept (proximity
/// neighbour selection).
///
/// Rows are allocated only up to the deepest populated one, and each row stores only its
/// occupied cells, so memory follows the number of entries (about `log_{2^b} N` full rows).
///
/// Beside a cell's entry the table may keep *spares*: other nodes of the same cell, for cells
/// so sparse that they hold only a few nodes in the whole ring (see
/// [`Config::cell_spares`](crate::Config::cell_spares)). Routing then picks, among the entry
/// and its spares, the node numerically closest to the key, which is often the key's root
/// itself. A spare takes its cell when the entry is removed.
///
/// ```
/// use pastry_core::{Id, RoutingTable};
/// let table: RoutingTable<u32> = RoutingTable::new(Id::new(0x1234 << 112), 4);
/// assert_eq!(table.len(), 0);
/// assert_eq!(table.cell_of(Id::new(0x1634 << 112)), Some((1, 6)));
/// ```
#[derive(Clone, Debug)]
pub struct RoutingTable<A> {
    own: Id,
    b: u8,
    /// Inline up to [`INLINE_ROWS`]: a lookup of a cell then costs one memory access fewer.
    rows: SmallVec<[Row<A>; INLINE_ROWS]>,
    /// More nodes of sparse cells, beside each cell's entry.
    spares: Vec<Peer<A>>,
}

impl<A: Clone + PartialEq> RoutingTable<A> {
    /// An empty table for the node `own` with digits of `b` bits.
    pub fn new(own: Id, b: u8) -> Self {
        RoutingTable {
            own,
            b,
            rows: SmallVec::new(),
            spares: Vec::new(),
        }
    }

    /// Digit width in bits.
    pub fn b(&self) -> u8 {
        self.b
    }

    /// The `(row, column)` cell where `id` belongs, or `None` for our own id.
    pub fn cell_of(&self, id: Id) -> Option<(usize, u8)> {
        if id == self.own {
            return None;
        }
        let r = self.own.shared_prefix_len(id, self.b);
        Some((r, id.digit(r, self.b)))
    }

    /// Number of allocated rows (one past the deepest populated row).
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// The node in a cell.
    pub fn get(&self, row: usize, col: u8) -> Option<&Peer<A>> {
        self.rows.get(row).and_then(|r| r.get(col))
    }

    /// The nodes of one row, in column order.
    pub fn row(&self, row: usize) -> impl Iterator<Item = &Peer<A>> + '_ {
        self.rows.get(row).into_iter().flat_map(|r| r.cells.iter())
    }

    /// Every node in the table, row by row.
    pub fn entries(&self) -> impl Iterator<Item = &Peer<A>> + '_ {
        self.rows.iter().flat_map(|r| r.cells.iter())
    }

    /// Number of nodes in the table.
    pub fn len(&self) -> usize {
        self.rows.iter().map(|r| r.cells.len()).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The entry (or spare) for exactly this id.
    pub fn find(&self, id: Id) -> Option<&Peer<A>> {
        let (r, c) = self.cell_of(id)?;
        self.get(r, c)
            .filter(|p| p.id() == id)
            .or_else(|| self.spares.iter().find(|p| p.id() == id))
    }

    /// The spares of a cell (nodes of that cell beside its entry).
    ///
    /// ```
    /// use pastry_core::{Id, RoutingTable};
    /// let table: RoutingTable<u32> = RoutingTable::new(Id::new(0), 4);
    /// assert_eq!(table.spares_in(2, 5).count(), 0);
    /// ```
    pub fn spares_in(&self, row: usize, col: u8) -> impl Iterator<Item = &Peer<A>> + '_ {
        self.spares
            .iter()
            .filter(move |p| self.cell_of(p.id()) == Some((row, col)))
    }

    /// Every spare, in no particular order.
    ///
    /// ```
    /// use pastry_core::{Id, RoutingTable};
    /// let table: RoutingTable<u32> = RoutingTable::new(Id::new(0), 4);
    /// assert_eq!(table.spares().count(), 0);
    /// ```
    pub fn spares(&self) -> impl Iterator<Item = &Peer<A>> + '_ {
        self.spares.iter()
    }

    /// Drops the spares of every row for which `keep(row)` is false.
    pub(crate) fn retain_spares(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let (own, b) = (self.own, self.b);
        self.spares
            .retain(|p| keep(own.shared_prefix_len(p.id(), b)));
        if self.spares.capacity() > 2 * self.spares.len() + 4 {
            self.spares.shrink_to_fit();
        }
    }

    /// Keeps `peer` as a spare of its cell if the cell's entry is another node and the cell has
    /// fewer than `per_cell` spares, or in place of the cell's farthest spare if `peer` is
    /// nearer; refreshes it (round trip, verification) if it is a spare already. Returns
    /// whether it is a spare now.
    pub(crate) fn add_spare(&mut self, peer: Peer<A>, per_cell: usize) -> bool {
        let Some((r, c)) = self.cell_of(peer.id()) else {
            return false;
        };
        match self.get(r, c) {
            Some(e) if e.id() != peer.id() => {}
            _ => return false,
        }
        if let Some(old) = self.spares.iter_mut().find(|p| p.id() == peer.id()) {
            if old.handle.addr == peer.handle.addr {
                if peer.rtt.srtt().is_some() {
                    old.rtt = peer.rtt;
                }
                old.flags |= peer.flags & crate::peer::VERIFIED;
            } else if peer.is_verified() {
                *old = peer;
            }
            return true;
        }
        if self.spares_in(r, c).count() < per_cell {
            self.spares.push(peer);
            return true;
        }
        // Full: a candidate nearer than the cell's farthest spare (suspect or unmeasured
        // ones count as farthest) takes its place.
        let mine = farness(&peer);
        let worst = self
            .spares
            .iter()
            .enumerate()
            .filter(|(_, p)| self.cell_of(p.id()) == Some((r, c)))
            .map(|(i, p)| (farness(p), i))
            .max();
        match worst {
            Some((w, i)) if mine < w => {
                self.spares[i] = peer;
                true
            }
            _ => false,
        }
    }

    /// Applies `f` to the entry (or spare) for this id, if present.
    pub(crate) fn update(&mut self, id: Id, f: impl FnOnce(&mut Peer<A>)) -> bool {
        let Some((r, c)) = self.cell_of(id) else {
            return false;
        };
        let Some(row) = self.rows.get_mut(r) else {
            return false;
        };
        if row.mask & (1 << c) != 0 {
            let i = row.index(c);
            if row.cells[i].id() == id {
                f(&mut row.cells[i]);
                return true;
            }
        }
        if let Some(p) = self.spares.iter_mut().find(|p| p.id() == id) {
            f(p);
            return true;
        }
        false
    }

    /// Offers a node for its cell. An empty cell takes it; an occupied cell keeps whichever of
    /// the two has the lower round trip (an unmeasured node never displaces a measured one,
    /// and a suspect always yields).
    pub(crate) fn insert(&mut self, peer: Peer<A>) -> TableInsert<A> {
        let Some((r, c)) = self.cell_of(peer.id()) else {
            return TableInsert::Kept;
        };
        if self.rows.len() <= r {
            self.rows.resize_with(r + 1, || Row {
                mask: 0,
                cells: Vec::new(),
            });
        }
        let row = &mut self.rows[r];
        let i = row.index(c);
        if row.mask & (1 << c) == 0 {
            row.mask |= 1 << c;
            let id = peer.id();
            row.cells.insert(i, peer);
            self.spares.retain(|p| p.id() != id);
            return TableInsert::Added;
        }
        let old = &mut row.cells[i];
        if old.id() == peer.id() {
            if old.handle.addr != peer.handle.addr {
                if !peer.is_verified() {
                    return TableInsert::Kept;
                }
                *old = peer;
                return TableInsert::Updated;
            }
            if peer.rtt.srtt().is_some() {
                old.rtt = peer.rtt;
            }
            old.flags |= peer.flags & crate::peer::VERIFIED;
            return TableInsert::Updated;
        }
        let better = old.is_suspect() && !peer.is_suspect()
            || peer.rtt.srtt_micros_or_max() < old.rtt.srtt_micros_or_max();
        if better {
            let id = peer.id();
            let out = core::mem::replace(old, peer);
            self.spares.retain(|p| p.id() != id);
            TableInsert::Replaced(out)
        } else {
            TableInsert::Kept
        }
    }

    /// Removes the entry (or spare) for this id. An entry's place goes to the nearest of its
    /// cell's spares that is not suspected, if it has one.
    pub(crate) fn remove(&mut self, id: Id) -> Option<Peer<A>> {
        let (r, c) = self.cell_of(id)?;
        if let Some(i) = self.spares.iter().position(|p| p.id() == id) {
            return Some(self.spares.swap_remove(i));
        }
        let row = self.rows.get(r)?;
        if row.mask & (1 << c) == 0 {
            return None;
        }
        let i = row.index(c);
        if row.cells[i].id() != id {
            return None;
        }
        // The nearest spare that is not suspected takes the cell.
        let heir = self
            .spares
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_suspect() && self.cell_of(p.id()) == Some((r, c)))
            .min_by_key(|(_, p)| farness(p))
            .map(|(i, _)| i);
        if let Some(h) = heir {
            let heir = self.spares.swap_remove(h);
            let row = &mut self.rows[r];
            return Some(core::mem::replace(&mut row.cells[i], heir));
        }
        // Only suspects were left beside it: they go with it.
        let (own, b) = (self.own, self.b);
        self.spares.retain(|p| {
            let pr = own.shared_prefix_len(p.id(), b);
            (pr, p.id().digit(pr, b)) != (r, c)
        });
        let row = &mut self.rows[r];
        row.mask &= !(1 << c);
        let p = row.cells.remove(i);
        while self.rows.last().is_some_and(|r| r.mask == 0) {
            self.rows.pop();
        }
        Some(p)
    }

    /// Bytes of memory the table holds (row headers and cells, by capacity).
    pub fn heap_bytes(&self) -> usize {
        let spilled = if self.rows.spilled() {
            self.rows.capacity()
        } else {
            0
        };
        spilled * core::mem::size_of::<Row<A>>()
            + self
                .rows
                .iter()
                .map(|r| r.cells.capacity() * core::mem::size_of::<Peer<A>>())
                .sum::<usize>()
            + self.spares.capacity() * core::mem::size_of::<Peer<A>>()
    }

    /// Checks the structural invariants: every entry sits in the cell its id belongs to, masks
    /// agree with the cells, no trailing row is empty, and every spare belongs to a cell whose
    /// entry is another node, once.
    pub fn check(&self) -> Result<(), &'static str> {
        for (r, row) in self.rows.iter().enumerate() {
            if row.mask.count_ones() as usize != row.cells.len() {
                return Err("row mask disagrees with its cells");
            }
            let mut cols = (0..16u8).filter(|c| row.mask & (1 << c) != 0);
            for p in &row.cells {
                let col = cols.next().ok_or("row mask disagrees with its cells")?;
                if self.cell_of(p.id()) != Some((r, col)) {
                    return Err("entry in the wrong cell");
                }
            }
        }
        if self.rows.last().is_some_and(|r| r.mask == 0) {
            return Err("trailing empty row");
        }
        for (i, p) in self.spares.iter().enumerate() {
            let (r, c) = self.cell_of(p.id()).ok_or("our own id as a spare")?;
            if self.get(r, c).is_none_or(|e| e.id() == p.id()) {
                return Err("spare of a cell without another entry");
            }
            if self.spares[..i].iter().any(|q| q.id() == p.id()) {
                return Err("spare listed twice");
            }
        }
        Ok(())
    }
}

/// How a spare ranks against the others of its cell: its smoothed round trip, unmeasured ones
/// after every measured one and suspects after all.
fn farness<A>(p: &Peer<A>) -> u64 {
    if p.is_suspect() {
        u64::MAX
    } else {
        u64::from(p.rtt.srtt_micros_or_max())
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
    fn cells_and_proximity() {
        let own = 0x1234u128 << 112;
        let mut t = RoutingTable::new(Id::new(own), 4);
        assert_eq!(t.insert(peer(0x5000 << 112, 50)), TableInsert::Added);
        assert_eq!(t.insert(peer(0x5100 << 112, 80)), TableInsert::Kept);
        assert!(matches!(
            t.insert(peer(0x5200 << 112, 10)),
            TableInsert::Replaced(p) if p.id() == Id::new(0x5000 << 112)
        ));
        assert_eq!(t.insert(peer(0x1239 << 112, 10)), TableInsert::Added);
        assert_eq!(t.row_count(), 4);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(3, 9).map(|p| p.id()), Some(Id::new(0x1239 << 112)));
        assert!(t.check().is_ok());
        assert!(t.remove(Id::new(0x1239 << 112)).is_some());
        assert_eq!(t.row_count(), 1, "trailing empty rows are freed");
        assert!(t.remove(Id::new(0x1239 << 112)).is_none());
        assert_eq!(t.insert(peer(own, 1)), TableInsert::Kept);
        assert!(t.check().is_ok());
    }

    #[test]
    fn spares_wait_beside_their_cell_and_inherit_it() {
        let mut t = RoutingTable::new(Id::new(0), 4);
        let cell = |x: u128| x << 112 | 0x0050 << 112;
        // Row 2, column 5: ids 0x005...
        assert_eq!(t.insert(peer(cell(0x0001), 40)), TableInsert::Added);
        assert!(
            !t.add_spare(peer(cell(0x0001), 40), 3),
            "the entry is no spare"
        );
        assert!(
            !t.add_spare(peer(0x0060 << 112, 5), 3),
            "another cell has no entry to stand beside"
        );
        assert!(t.add_spare(peer(cell(0x0002), 30), 2));
        assert!(t.add_spare(peer(cell(0x0003), 20), 2));
        assert!(
            !t.add_spare(peer(cell(0x0004), 35), 2),
            "two spares a cell at most: a farther one is refused"
        );
        assert!(
            t.add_spare(peer(cell(0x0004), 10), 2),
            "a nearer one takes the farthest spare's place"
        );
        assert!(t.find(Id::new(cell(0x0002))).is_none());
        assert!(
            t.add_spare(peer(cell(0x0003), 15), 2),
            "a spare is refreshed"
        );
        assert_eq!(t.spares_in(2, 5).count(), 2);
        assert_eq!(t.len(), 1, "spares are not entries");
        assert!(t.find(Id::new(cell(0x0003))).is_some());
        assert!(t.check().is_ok());
        // The entry goes: the nearer spare takes its place.
        assert!(t.remove(Id::new(cell(0x0001))).is_some());
        assert_eq!(t.get(2, 5).map(|p| p.id()), Some(Id::new(cell(0x0004))));
        assert_eq!(t.spares().count(), 1);
        // A spare that wins the cell on its own stops being a spare.
        assert!(matches!(
            t.insert(peer(cell(0x0003), 1)),
            TableInsert::Replaced(_)
        ));
        assert_eq!(t.spares().count(), 0);
        assert!(t.check().is_ok());
        t.add_spare(peer(cell(0x0003), 15), 2);
        t.retain_spares(|row| row != 2);
        assert_eq!(t.spares().count(), 0);
    }

    #[test]
    fn suspects_yield_their_cell() {
        let mut t = RoutingTable::new(Id::new(0), 4);
        t.insert(peer(0x5000 << 112, 5));
        t.update(Id::new(0x5000 << 112), |p| {
            p.set_flag(crate::peer::SUSPECT, true)
        });
        assert!(matches!(
            t.insert(peer(0x5100 << 112, 500)),
            TableInsert::Replaced(_)
        ));
    }
}
