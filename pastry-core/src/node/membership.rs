//! Membership: the leaf set's upkeep (heartbeats, failure detection, failure notices,
//! repair) and routing-table maintenance.

use alloc::vec::Vec;

use super::probes::{P_LEAF, P_LIVE, P_NOTICED, P_TABLE};
use super::{Apps, Core, TimerKind};
use crate::app::LeafChange;
use crate::leafset::Side;
use crate::peer::SUSPECT;
use crate::table::TableInsert;
use crate::wire::{self, LeafSetMsg, Message};
use crate::{Address, Id, Instant, NodeHandle, Peer};

/// -ln(1 - p) in thousandths, where p is the chance that a table entry has died past which we
/// leave it out of the rows we give (see [`Core::stale_after`]): 0.288 for a quarter. Under
/// 10-minute churn at 2,000 nodes (seeds 1 and 2), a half changed nothing (0.586 and 0.591
/// control messages per node per second against 0.587 and 0.596), a quarter gave 0.565 and
/// 0.567 with a route delay penalty of 6.02 and 6.08 against 5.79 and 5.84, and 15 % gave
/// 0.544 and 0.548 for 6.42 and 6.15, with tables 8 % smaller.
const STALE_RISK_LN: u64 = 288;

/// Whether a table entry proved alive recently enough to be given to others.
fn fresh<A>(p: &Peer<A>, now: Instant, stale: Option<u64>) -> bool {
    stale.is_none_or(|limit| p.heard_secs_ago(now).is_some_and(|ago| ago <= limit))
}

/// Least time between two lazy requests to fill empty routing-table cells.
const FILL_INTERVAL: core::time::Duration = core::time::Duration::from_secs(60);
/// Routing-table candidates a joining node keeps for probing once it is active.
const MAX_DEFERRED: usize = 64;
/// Rows that maintenance asks two entries of per round rather than one.
const WIDE_ROWS: usize = 2;
/// Routing-table rows from this one on take candidates without probing them first.
const LAZY_ROWS: usize = 3;
/// Entries of each row a newly active node asks for their row (the nearest first). Two give
/// the new node's neighbourhood; maintenance widens the search from there. One left cells
/// empty: the 100,000-node Fig. 5 run, routed right after the build, took 4.003 hops on
/// average against 3.994.
const JOIN_ASK_PER_ROW: usize = 2;

/// A failure notice as received: the ids it named and the sender's leaf set, which holds what
/// our leaf set needs once those nodes are gone.
pub(crate) struct Notice<A> {
    pub(crate) failed: Vec<Id>,
    pub(crate) leaf: Vec<NodeHandle<A>>,
}

impl<A> Notice<A> {
    pub(crate) fn heap_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.failed.capacity() * core::mem::size_of::<Id>()
            + self.leaf.capacity() * core::mem::size_of::<NodeHandle<A>>()
    }
}

impl<A: Address> Core<A> {
    // ----- leaf-set views -----

    /// Our leaf set as a message, nearest members first, trimmed to `budget` bytes.
    pub(crate) fn leaf_msg(&self, exclude: Option<Id>, budget: usize) -> LeafSetMsg<A> {
        let mut m = LeafSetMsg::default();
        let mut used = 2;
        let cw: Vec<&Peer<A>> = self.leaf.side_peers(Side::Cw).collect();
        let ccw: Vec<&Peer<A>> = self.leaf.side_peers(Side::Ccw).collect();
        'fill: for i in 0..cw.len().max(ccw.len()) {
            for (side, list) in [(&mut m.cw, &cw), (&mut m.ccw, &ccw)] {
                if let Some(p) = list.get(i)
                    && Some(p.id()) != exclude
                {
                    let len = wire::handle_len(&p.handle);
                    if used + len > budget {
                        break 'fill;
                    }
                    used += len;
                    side.push(p.handle.clone());
                }
            }
        }
        m
    }

    // ----- knowledge of other nodes -----

    /// Marks a known node as suspect and probes it; no answer declares it dead. The mark is
    /// set only once a probe is really under way (the probe table is bounded), so that a
    /// suspect is never left without a verdict.
    pub(crate) fn suspect(&mut self, now: Instant, node: &NodeHandle<A>, noticed: bool) {
        let purpose = P_LIVE | if noticed { P_NOTICED } else { 0 };
        self.suspect_for(now, node, purpose);
    }

    /// [`Core::suspect`] with the probe's purposes given. Returns whether the node is under a
    /// liveness check now (false if we do not hold it, or the probe table is full).
    pub(crate) fn suspect_for(&mut self, now: Instant, node: &NodeHandle<A>, purpose: u8) -> bool {
        let here = |p: &Peer<A>| p.handle.addr == node.addr;
        let known =
            self.leaf.get(node.id).is_some_and(here) || self.table.find(node.id).is_some_and(here);
        if !known {
            return false;
        }
        if !self.probe(now, node, purpose, &[], false) {
            return false;
        }
        self.leaf.update(node.id, |e| {
            if e.peer.handle.addr == node.addr {
                e.peer.set_flag(SUSPECT, true);
            }
        });
        self.table.update(node.id, |p| {
            if p.handle.addr == node.addr {
                p.set_flag(SUSPECT, true);
            }
        });
        true
    }

    /// Suspects whose probe was lost to a full probe table or a reset get probed again.
    fn reprobe_suspects(&mut self, now: Instant) {
        let orphans: Vec<NodeHandle<A>> = self
            .leaf
            .members()
            .chain(self.table.entries())
            .chain(self.table.spares())
            .filter(|p| p.is_suspect() && !self.probes.contains_key(&p.handle.addr))
            .map(|p| p.handle.clone())
            .collect();
        for h in orphans {
            self.suspect(now, &h, false);
        }
    }

    pub(crate) fn suspect_id(&mut self, now: Instant, id: Id, noticed: bool) {
        let handle = self
            .leaf
            .get(id)
            .or_else(|| self.table.find(id))
            .map(|p| p.handle.clone());
        if let Some(h) = handle {
            self.suspect(now, &h, noticed);
        }
    }

    /// Removes a node that failed to answer. If it was our ring neighbour (`notify`), our leaf
    /// set hears of it through leaf-set probes that also fetch material for repair; otherwise
    /// we only repair our own holes. `told`: a member's failure notice made us check it.
    pub(crate) fn declare_dead(&mut self, now: Instant, id: Id, told: bool, apps: &mut Apps<A>) {
        let sides = self.leaf.sides_of(id);
        // The dead node's ring neighbours between them reach every node that held it, so only
        // they pass the news on (even when they heard it from someone else); anyone else who
        // found it dead repairs its own leaf set and leaves the telling to them.
        let adjacent = [Side::Cw, Side::Ccw]
            .into_iter()
            .any(|s| self.leaf.neighbour(s).is_some_and(|p| p.id() == id));
        let notify = adjacent;
        // Found dead here first (not told, not its ring neighbour): its ring neighbour would
        // notice only once its heartbeats stop, and until then every member routes to it and
        // holds messages for its own verdict. Tell the neighbour on our side of it (unless
        // that one is under suspicion too), which checks for itself and, being adjacent, tells
        // the leaf set. A plain probe naming the dead node carries the news: a leaf-set probe
        // would make the neighbour a pending leaf-set answer, which holds up the end of a
        // refill (see `on_probe_reply`). Under 10-minute churn at 2,000 nodes this took the
        // mean route delay penalty of lookups from 6.56 to 5.81, with control traffic unchanged
        // (0.632 and 0.631 messages per node per second): the neighbour's own probes and
        // notices come sooner, not in addition.
        let watcher = (!notify && !told)
            .then(|| self.leaf.flanks(id).and_then(|(inner, _)| inner))
            .flatten()
            .filter(|p| !p.is_suspect())
            .map(|p| p.handle.clone());
        let in_leaf = self.leaf.remove_departed(id);
        if let Some(w) = &watcher {
            self.probe(now, w, 0, &[id], false);
        }
        let in_table = self
            .table
            .cell_of(id)
            .filter(|_| self.table.find(id).is_some());
        if in_leaf.is_none() && in_table.is_none() {
            return;
        }
        self.counters.failures_detected += 1;
        // Deaths only: a goodbye is not counted (anyone can forge one from a member's
        // address, and it removes nothing that could still be named in rows). A live member
        // wrongly declared dead under loss counts, a rare overestimate.
        let cap = 4 * self.cfg.leaf_set_size as u32;
        if in_leaf.is_some() && self.leaf_deaths.0[1] < cap {
            self.leaf_deaths.0[1] += 1;
        }
        self.mark_dead(id, now);
        if in_table.is_some() {
            // The cell stays empty until routing needs it (a lazy request for the row) or
            // the next maintenance round: under churn most cells are never needed before then.
            self.table.remove(id);
        }
        if let Some(peer) = in_leaf {
            self.leaf_changed(now, apps, peer.handle, LeafChange::Failed);
            if notify {
                // Told by a member: the teller, the dead node's ring neighbour on its other side,
                // told its whole leaf set, which holds every member of our side facing the dead
                // node and the nearest L/2 - 2 of our far side (its side facing us held the dead
                // node, us and those). Only the last two of our far side may not have heard; the
                // near side is refilled from the notice. Under 10-minute churn, telling only the
                // far side saved 0.009 of 0.737 control messages per node per second, and only
                // its last two a further 0.009 of 0.758.
                let only_far = told && sides.len() == 1;
                let members: Vec<NodeHandle<A>> = if only_far {
                    self.leaf
                        .side_peers(sides[0].opposite())
                        .skip(self.leaf.half().saturating_sub(2))
                        .map(|p| p.handle.clone())
                        .collect()
                } else {
                    self.leaf.members().map(|p| p.handle.clone()).collect()
                };
                for m in members {
                    self.probe(now, &m, P_LEAF, &[id], false);
                }
                if only_far && !self.repair_from_notice(now, id, &sides, apps) {
                    self.repair_leaf(now, &sides);
                }
            } else if !(told && self.repair_from_notice(now, id, &sides, apps)) {
                self.repair_leaf(now, &sides);
            }
        }
        self.check_isolation(now);
        self.reroute_flights_to(now, id, apps);
        self.retry_held(now, apps);
    }

    /// Refills the hole `dead` left from the leaf set of the member whose notice told us of it:
    /// a ring neighbour of the dead node, whose leaf set reaches past ours on the dead node's
    /// side. Returns whether that started a probe of a candidate; the repair then waits for it
    /// and asks the farthest member only if the hole is still there (`continue_repair`). Under
    /// 10-minute churn this saved 0.029 of 0.749 control messages per node per second.
    ///
    /// A candidate whose own leaf-set probe we turned away shortly before (see `declined`;
    /// within the time a liveness check can take) is taken in at once, as heard from when it
    /// probed: it showed itself alive at a verified address then, and the leaf set we answered
    /// with told it where we stand.
    fn repair_from_notice(
        &mut self,
        now: Instant,
        dead: Id,
        sides: &[Side],
        apps: &mut Apps<A>,
    ) -> bool {
        let notice = match self.notice.take() {
            Some(n) if n.failed.contains(&dead) => n,
            other => {
                self.notice = other;
                return false;
            }
        };
        let before = self.pending_leaf.len();
        for h in &notice.leaf {
            for &side in sides {
                if let Some(at) = self.declined_lately(now, h)
                    && self.leaf_wants(h.id, Some(side))
                {
                    self.declined.retain(|(d, _)| d.id != h.id);
                    self.add_leaf(now, apps, Peer::verified(h.clone(), crate::Rtt::default()));
                    // Its silence is counted from its probe, not from now.
                    self.leaf.update(h.id, |e| e.last_heard = at);
                } else {
                    self.consider_leaf_from(now, h, Some(side));
                }
            }
        }
        self.pending_leaf.len() > before
    }

    /// Remembers a leaf-set prober we could not take in (see `declined`).
    pub(crate) fn remember_declined(&mut self, now: Instant, h: &NodeHandle<A>) {
        self.declined.retain(|(d, _)| d.id != h.id);
        if self.declined.len() >= super::DECLINED {
            self.declined.pop_front();
        }
        self.declined.push_back((h.clone(), now));
    }

    /// When `h`, at that address, last probed us and was turned away, if that was recent
    /// enough to stand for a probe of ours: within the longest a liveness check takes (every
    /// attempt at the largest timeout), and not declared dead since.
    fn declined_lately(&mut self, now: Instant, h: &NodeHandle<A>) -> Option<Instant> {
        let window = self.cfg.rto_max * (u32::from(self.cfg.probe_retries) + 1);
        let at = self
            .declined
            .iter()
            .find(|(d, at)| d.id == h.id && d.addr == h.addr && now - *at <= window)
            .map(|(_, at)| *at)?;
        (!self.recently_dead(h.id, now)).then_some(at)
    }

    /// Asks the farthest member of each side with a hole for its leaf set.
    pub(crate) fn repair_leaf(&mut self, now: Instant, sides: &[Side]) {
        for &side in sides {
            if self.leaf.needs_repair(side)
                && let Some(far) = self.repair_contact(side)
            {
                self.repair_asked[side_index(side)] = Some(far.id);
                self.probe(now, &far, P_LEAF, &[], false);
            }
        }
    }

    /// Whom to ask for nodes to refill `side`: its farthest member, which sees past it. A side
    /// that failures emptied has none; then the far end of the other side (see
    /// `on_probe_reply`: in a ring that small, its leaf set reaches round to the empty side).
    fn repair_contact(&self, side: Side) -> Option<NodeHandle<A>> {
        self.leaf
            .farthest(side)
            .or_else(|| self.leaf.farthest(side.opposite()))
            .map(|p| p.handle.clone())
    }

    /// Keeps a repair going: while a side still has a hole and no leaf-set probe is out, ask
    /// its farthest member again, if that member is new (an answer moved the edge outwards).
    pub(crate) fn continue_repair(&mut self, now: Instant) {
        if !self.pending_leaf.is_empty() {
            return;
        }
        for side in [Side::Cw, Side::Ccw] {
            if !self.leaf.needs_repair(side) {
                continue;
            }
            let far = self.repair_contact(side);
            if let Some(far) = far
                && self.repair_asked[side_index(side)] != Some(far.id)
            {
                self.repair_asked[side_index(side)] = Some(far.id);
                self.probe(now, &far, P_LEAF, &[], false);
            }
        }
    }

    pub(crate) fn add_leaf(&mut self, now: Instant, apps: &mut Apps<A>, mut peer: Peer<A>) {
        let handle = peer.handle.clone();
        // Keep what we know of the address: the verified-address cache is small.
        if self.is_verified(Some(handle.id), &handle.addr) {
            peer.set_flag(crate::peer::VERIFIED, true);
        }
        let r = self.leaf.insert(peer, now);
        for d in r.displaced {
            self.leaf_changed(now, apps, d.handle, LeafChange::Displaced);
        }
        if r.added {
            let change = if self.forget_dead(handle.id) {
                LeafChange::Recovered
            } else {
                LeafChange::Joined
            };
            self.leaf_changed(now, apps, handle, change);
            self.retry_held(now, apps);
        }
    }

    /// Whether a node with this id would enter our leaf set. A full side takes it if it is
    /// nearer than the farthest member. A side with a hole takes it only within the span the
    /// side still has, unless `extend` (the candidate came from the member we asked to refill
    /// that side) or the side is empty or the leaf set spans the whole ring: otherwise a node
    /// that lost a neighbour would take in any node that happened to contact it, from anywhere
    /// on the ring, and displace it again as its repair brings the true neighbours.
    pub(crate) fn leaf_fits(&self, id: Id, extend: Option<Side>) -> bool {
        if id == self.me.id || self.leaf.contains(id) {
            return false;
        }
        let covers = self.leaf.covers_ring();
        let joining = !self.is_active();
        let half = self.leaf.half();
        [Side::Cw, Side::Ccw].into_iter().any(|side| {
            let dist = |x: Id| self.leaf.dist(side, x);
            let n = self.leaf.side_peers(side).len();
            let far = self.leaf.farthest(side).map(|p| dist(p.id()));
            // A joining node's sides take any node until they fill, unless the ring is known
            // to be larger than a leaf set (a hole): then only where the side would take it.
            let open = covers || joining && !self.leaf.has_hole(side);
            match far {
                None if joining && self.leaf.has_hole(side) => self.leaf.would_accept(id),
                None => true,
                Some(far) if n >= half => dist(id) < far,
                Some(far) => {
                    open || extend == Some(side)
                        || dist(id) <= far
                        || joining && self.leaf.would_accept(id)
                }
            }
        })
    }

    /// Probes a node a verified node told us of, if it belongs in our leaf set and is not
    /// being probed yet (probes already under way count as if they were members).
    pub(crate) fn consider_leaf(&mut self, now: Instant, h: &NodeHandle<A>) {
        self.consider_leaf_from(now, h, None);
    }

    /// [`Core::consider_leaf`] for a candidate named by the member asked to refill a side
    /// (`extend`: on that side it may lie beyond what the side still spans).
    pub(crate) fn consider_leaf_from(
        &mut self,
        now: Instant,
        h: &NodeHandle<A>,
        extend: Option<Side>,
    ) {
        if h.id == self.me.id || self.leaf.contains(h.id) {
            return;
        }
        // A probe already under way for another reason gains the leaf-set purpose (so that a
        // joining node waits for its answer); one that has it already is left alone.
        if self
            .probes
            .get(&h.addr)
            .is_some_and(|p| p.purpose & P_LEAF != 0)
        {
            return;
        }
        if !self.leaf_wants(h.id, extend) || self.recently_dead(h.id, now) || self.awaiting_root() {
            return;
        }
        self.probe(now, h, P_LEAF, &[], true);
    }

    /// Whether `id` would be among the L/2 nearest on a side, counting members and nodes
    /// with a leaf-set probe under way.
    pub(crate) fn leaf_wants(&self, id: Id, extend: Option<Side>) -> bool {
        // Most candidates are farther than both full sides: no need to count anything.
        if !self.leaf_fits(id, extend) {
            return false;
        }
        let half = self.leaf.half();
        [Side::Cw, Side::Ccw].into_iter().any(|side| {
            let dist = |x: Id| self.leaf.dist(side, x);
            let d = dist(id);
            let closer = self
                .leaf
                .side_peers(side)
                .filter(|p| dist(p.id()) < d)
                .count()
                + self
                    .pending_leaf
                    .iter()
                    .filter(|p| dist(**p) < d && !self.leaf.contains(**p))
                    .count();
            closer < half
        })
    }

    /// Whether this node is joining and has not heard from its root yet.
    pub(crate) fn awaiting_root(&self) -> bool {
        matches!(self.phase, super::Phase::Joining { replied: false, .. })
    }

    /// Probes a node we heard of if it would fill an empty routing-table cell, or (when
    /// `improve` and the maintenance budget allows) if it might be nearer than the current one.
    /// `exempt`: a verified node told us of it.
    pub(crate) fn consider_table(
        &mut self,
        now: Instant,
        h: &NodeHandle<A>,
        improve: bool,
        exempt: bool,
    ) {
        if h.id == self.me.id
            || self.table.find(h.id).is_some()
            || self.probes.contains_key(&h.addr)
        {
            return;
        }
        let Some((r, c)) = self.table.cell_of(h.id) else {
            return;
        };
        let empty = self.table.get(r, c).is_none();
        let budget = r.min(super::PNS_ROWS - 1);
        if !empty && self.spare_budget > 0 && self.spare_room(r, c) {
            // A node of a sparse cell that its entry leaves out: measured like any candidate
            // (never taken unprobed, as a spare may be chosen for its id alone), it stays as
            // a spare if it does not take the cell. A budget of its own bounds what strangers
            // naming themselves can make us probe; once spent, the candidate is considered
            // as a possibly nearer entry only.
            if self.recently_dead(h.id, now) || !self.is_active() {
                return;
            }
            self.spare_budget -= 1;
            self.probe(now, h, P_TABLE, &[], exempt);
            return;
        }
        if !(empty || improve && self.pns_budget[budget] > 0) {
            return;
        }
        if self.recently_dead(h.id, now) {
            return;
        }
        if !self.is_active() {
            // A probe from a joining node cannot put it into the probed node's table (only
            // active nodes enter tables); wait until we are active, then probe.
            if exempt {
                self.defer_table(h, true);
            }
            return;
        }
        if !empty {
            self.pns_budget[budget] -= 1;
        } else if exempt && r >= LAZY_ROWS {
            // Deep rows have few candidates to choose from and are rarely used: take what a
            // verified node told us as it is, unverified and unmeasured. Its address is
            // verified (and its round trip measured) the first time a message goes to it,
            // and any measured candidate displaces it.
            self.offer_table(Peer::new(h.clone()));
            return;
        }

        self.probe(now, h, P_TABLE, &[], exempt);
    }

    /// Keeps a routing-table candidate to be considered again later: heard of while we were
    /// joining, or joining itself when it answered us. Bounded; the oldest go first.
    /// `exempt`: a verified node told us of it, or it answered a probe of ours.
    /// Nodes that only named themselves (not exempt: any datagram can claim a joining node)
    /// take at most a quarter of the places and are the first to go, so that strangers cannot
    /// push out the candidates verified nodes told us of.
    pub(crate) fn defer_table(&mut self, h: &NodeHandle<A>, exempt: bool) {
        if let Some(d) = self.deferred_table.iter_mut().find(|d| d.0.id == h.id) {
            d.1 |= exempt && d.0.addr == h.addr;
            return;
        }
        let strangers = self.deferred_table.iter().filter(|d| !d.1).count();
        if !exempt && strangers >= MAX_DEFERRED / 4 || self.deferred_table.len() >= MAX_DEFERRED {
            let oldest_stranger = self.deferred_table.iter().position(|d| !d.1);
            self.deferred_table.remove(oldest_stranger.unwrap_or(0));
        }
        self.deferred_table.push((h.clone(), exempt));
    }

    /// Whether a joining node that probed us would be probed back once active, as
    /// `consider_table` would probe it now: we are active and it would fill an empty cell of
    /// our table or take a spare's place.
    pub(crate) fn table_wants_joiner(&self, id: Id) -> bool {
        if !self.is_active() || id == self.me.id || self.table.find(id).is_some() {
            return false;
        }
        self.table
            .cell_of(id)
            .is_some_and(|(r, c)| self.table.get(r, c).is_none() || self.spare_room(r, c))
    }

    /// Considers the deferred candidates again (once active: on activation, then with each
    /// heartbeat, by which time most joining nodes have become active).
    pub(crate) fn reconsider_deferred(&mut self, now: Instant) {
        if !self.is_active() {
            return;
        }
        for (h, exempt) in core::mem::take(&mut self.deferred_table) {
            self.consider_table(now, &h, false, exempt);
        }
    }

    /// Whether cell (`r`, `c`) of a sparse row has room for another spare.
    pub(crate) fn spare_room(&self, r: usize, c: u8) -> bool {
        // `sparse_row` is false at once when spares are off.
        self.sparse_row(r) && self.table.spares_in(r, c).count() < usize::from(self.cfg.cell_spares)
    }

    /// Offers a measured (or lazily taken) node to the routing table; in a sparse row, a node
    /// that does not take the cell, or the entry it displaces, stays as a spare.
    pub(crate) fn offer_table(&mut self, peer: Peer<A>) {
        let per_cell = usize::from(self.cfg.cell_spares);
        let sparse = per_cell > 0
            && self
                .table
                .cell_of(peer.id())
                .is_some_and(|(r, _)| self.sparse_row(r));
        if !sparse {
            let _: TableInsert<A> = self.table.insert(peer);
            return;
        }
        match self.table.insert(peer.clone()) {
            TableInsert::Kept => {
                self.table.add_spare(peer, per_cell);
            }
            TableInsert::Replaced(old) if !old.is_suspect() => {
                self.table.add_spare(old, per_cell);
            }
            _ => {}
        }
    }

    /// Whether the cells of routing-table row `row` are sparse (see [`Config::cell_spares`]):
    /// by the density of the ring our leaf set shows, a cell's share of the ring holds at most
    /// `cell_spares + 1` nodes. Every row is sparse while the leaf set covers the ring; none
    /// is while this node is joining or a side of its leaf set is empty (nothing to measure
    /// the density by).
    ///
    /// [`Config::cell_spares`]: crate::Config::cell_spares
    pub(crate) fn sparse_row(&self, row: usize) -> bool {
        let k = u128::from(self.cfg.cell_spares);
        if k == 0 || !self.is_active() {
            // A joining node's leaf set does not show the ring's density yet.
            return false;
        }
        if self.leaf.covers_ring() {
            return true;
        }
        let (Some(cw), Some(ccw)) = (self.leaf.farthest(Side::Cw), self.leaf.farthest(Side::Ccw))
        else {
            return false;
        };
        let span = self
            .leaf
            .dist(Side::Cw, cw.id())
            .saturating_add(self.leaf.dist(Side::Ccw, ccw.id()));
        let members = self.leaf.len() as u128;
        let bits = (row + 1) * usize::from(self.cfg.b);
        let cell = if bits >= 128 {
            1
        } else {
            1u128 << (128 - bits)
        };
        // Nodes expected in a cell, members * cell / span, at most k + 1; both sides scaled
        // down by 2^8 so that neither product overflows (members <= 64, cell <= 2^124).
        members.saturating_mul(cell >> 8) <= (k + 1).saturating_mul(span >> 8)
    }

    /// Drops the spares of rows that are no longer sparse (the ring grew, as our leaf set
    /// shows).
    pub(crate) fn prune_spares(&mut self) {
        if self.table.spares().next().is_none() {
            return;
        }
        let sparse: Vec<bool> = (0..self.table.row_count())
            .map(|r| self.sparse_row(r))
            .collect();
        self.table
            .retain_spares(|r| sparse.get(r).copied().unwrap_or(true));
    }

    // ----- heartbeats and leaf-set upkeep -----

    pub(crate) fn on_heartbeat(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        leaf: LeafSetMsg<A>,
        apps: &mut Apps<A>,
    ) {
        let _ = apps;
        if !self.leaf.contains(sender.id) {
            // It thinks it is our ring neighbour: first-hand news, stronger than our memory of
            // having found it dead. Exchange leaf sets (its heartbeat pays for the probes).
            if self.leaf_fits(sender.id, None) && !self.probes.contains_key(&sender.addr) {
                self.probe(now, &sender, P_LEAF, &[], false);
            }
            return;
        }
        // Heartbeats come from ring neighbours, whose addresses we verified; anyone else's
        // leaf set is not trusted enough to act on.
        if !self.is_verified(Some(sender.id), &sender.addr) {
            return;
        }
        for h in leaf.cw.iter().chain(leaf.ccw.iter()) {
            self.consider_leaf(now, h);
        }
        // Our members that the sender's leaf set should list but does not: the sender may
        // have found them dead and its notice missed us. Check them ourselves.
        let listed =
            |id: Id| id == sender.id || leaf.cw.iter().chain(leaf.ccw.iter()).any(|h| h.id == id);
        let covers = |id: Id| match (leaf.ccw.last(), leaf.cw.last()) {
            (Some(lo), Some(hi)) => {
                leaf.cw.iter().any(|h| h.id == lo.id) || id.in_cw_arc(lo.id, hi.id)
            }
            _ => false,
        };
        let missing: Vec<Id> = self
            .leaf
            .members()
            .filter(|p| !p.is_suspect() && covers(p.id()) && !listed(p.id()))
            .map(|p| p.id())
            .collect();
        for id in missing {
            self.suspect_id(now, id, true);
        }
    }

    pub(crate) fn on_heartbeat_timer(&mut self, now: Instant, apps: &mut Apps<A>) {
        let _ = apps;
        let period = self.jitter(self.cfg.heartbeat_period, 10);
        self.heartbeat_at = now + period;
        self.schedule(self.heartbeat_at, TimerKind::Heartbeat);
        self.seen.prune(now);
        Self::trim(&mut self.probes);
        Self::trim(&mut self.in_flight);
        if !self.is_active() {
            return;
        }
        if self.leaf.is_empty() {
            // Alone, after everyone it knew went silent (it may have been cut off rather than
            // left behind): try now and then to join again through a node it knew, so that it
            // finds its ring again when a partition heals.
            self.check_isolation(now);
            return;
        }
        // Heartbeats go one way round the ring (as in MSPastry): each node tells its
        // counter-clockwise neighbour it is alive, and so hears from its clockwise one. The
        // node that misses a neighbour's heartbeats tells the leaf set, which covers the other
        // side; half the messages of heartbeats in both directions.
        let msg = self.leaf_msg(None, self.cfg.max_datagram_size);
        if let Some(to) = self.leaf.neighbour(Side::Ccw).map(|p| p.handle.clone()) {
            let bytes = self.encode(Message::Heartbeat { leaf: msg });
            self.send_verified(now, &to, bytes, false);
        }
        if let Some(e) = self
            .leaf
            .neighbour(Side::Cw)
            .and_then(|p| self.leaf.entry(p.id()))
        {
            let (handle, silent, suspect) = (
                e.peer.handle.clone(),
                now - e.last_heard > self.cfg.failure_timeout,
                e.peer.is_suspect(),
            );
            if silent && !suspect {
                // Silent, yet perhaps alive: its heartbeats go to the node it takes for its
                // counter-clockwise neighbour, which may not be us (it may have dropped us
                // after losing our datagrams). The probe that checks on it also exchanges
                // leaf sets, so that if it answers, each learns what the other knows; a plain
                // probe would leave us with a stale leaf set for good.
                self.suspect_for(now, &handle, P_LIVE | P_LEAF);
            }
        }
        self.repair_asked = [None, None];
        self.prune_spares();
        self.reconsider_deferred(now);
        self.repair_leaf(now, &[Side::Cw, Side::Ccw]);
        self.reprobe_suspects(now);
    }

    // ----- routing-table maintenance -----

    pub(crate) fn on_maintenance_timer(&mut self, now: Instant) {
        let period = self.jitter(self.cfg.maintenance_period, 20);
        self.maintenance_at = now + period;
        self.schedule(self.maintenance_at, TimerKind::Maintenance);
        if !self.is_active() {
            return;
        }
        self.pns_budget = super::pns_budget(&self.cfg);
        self.spare_budget = super::spare_budget(&self.cfg);
        let (counts, starts) = self.leaf_deaths;
        self.leaf_deaths = ([counts[1], 0], [starts[1], now]);
        for row in 0..self.table.row_count() {
            let n = self.table.row(row).count();
            if n == 0 {
                continue;
            }
            // Proximity: the nearest entry's row holds nodes near it, hence near us; ask it
            // half the time (a coin per row), and a random entry otherwise so that the search
            // does not settle on one neighbourhood.
            let r = self.random();
            let h = if r & 1 == 0 {
                self.table
                    .row(row)
                    .filter(|p| !p.is_suspect())
                    .min_by_key(|p| p.rtt.srtt_micros_or_max())
            } else {
                self.table.row(row).nth(((r >> 1) % n as u64) as usize)
            }
            .map(|p| p.handle.clone());
            if let Some(h) = &h {
                self.request_row(now, h, row);
            }
            // The first two rows' cells have the most candidates (N/16 and N/256 each), and
            // their search converges slowest: one more entry, at random, widens it. At
            // 10,000 nodes this took RDP after an hour from 1.682 to 1.566 (sphere) and from
            // 1.635 to 1.546 (transit-stub); control under 10-minute churn rose from 0.728 to
            // 0.758 messages per node per second.
            if row < WIDE_ROWS && n > 1 {
                let r = self.random();
                let extra = self
                    .table
                    .row(row)
                    .filter(|p| h.as_ref().is_none_or(|h| h.id != p.id()))
                    .nth((r % (n as u64 - 1)) as usize)
                    .map(|p| p.handle.clone());
                if let Some(e) = extra {
                    self.request_row(now, &e, row);
                }
            }
        }
    }

    /// Asks the nearest entries of each row that has a choice of candidates (the rows before
    /// [`LAZY_ROWS`]) for their copy of that row: nodes near our nearest entries are the
    /// likeliest to be near us.
    pub(crate) fn ask_table_rows(&mut self, now: Instant) {
        for row in 0..self.table.row_count().min(LAZY_ROWS) {
            let mut near: Vec<(u32, NodeHandle<A>)> = self
                .table
                .row(row)
                .filter(|p| !p.is_suspect())
                .map(|p| (p.rtt.srtt_micros_or_max(), p.handle.clone()))
                .collect();
            near.sort_unstable_by_key(|(rtt, h)| (*rtt, h.id));
            near.truncate(JOIN_ASK_PER_ROW);
            for (_, h) in near {
                self.request_row(now, &h, row);
            }
        }
    }

    fn request_row(&mut self, now: Instant, to: &NodeHandle<A>, row: usize) {
        let Ok(row) = u8::try_from(row) else { return };
        let base = wire::HEADER_LEN + 1 + 2;
        // The reply (its frame, n_rows, the row's index and count, the row with hints), and
        // the plain probes with which the node may measure us as a candidate for its own table
        // should its probe not ride on the reply.
        let reply_max = wire::ROWS_FRAME
            + 1
            + 2
            + (1usize << self.cfg.b) * (16 + A::MAX_ENCODED_LEN + 2)
            + (1 + usize::from(self.cfg.probe_retries)) * super::probes::PLAIN_PROBE_LEN;
        let padding = self.padding_for(base, reply_max);
        let bytes = self.encode(Message::RowRequest { row, padding });
        self.send_verified(now, to, bytes, false);
    }

    /// Routing towards `key` found no entry in the cell it needed: ask a node of that row for
    /// its row, which may fill the cell (lazy repair; at most one request per interval).
    pub(crate) fn fill_cell_for(&mut self, now: Instant, key: Id) {
        if now < self.next_fill {
            return;
        }
        let row = self.me.id.shared_prefix_len(key, self.cfg.b);
        let col = key.digit(row, self.cfg.b);
        if self.table.get(row, col).is_some() {
            return;
        }
        self.next_fill = now + FILL_INTERVAL;
        self.repair_table_cell(now, row, col);
    }

    /// A table entry died: ask another node of the same row (or of the next) for its row,
    /// which may hold a replacement for the empty cell.
    pub(crate) fn repair_table_cell(&mut self, now: Instant, row: usize, col: u8) {
        let _ = col;
        for r in [row, row + 1] {
            let n = self.table.row(r).count();
            if n == 0 {
                continue;
            }
            let pick = (self.random() % n as u64) as usize;
            let h = self.table.row(r).nth(pick).map(|p| p.handle.clone());
            if let Some(h) = h {
                self.request_row(now, &h, row);
                return;
            }
        }
    }

    pub(crate) fn on_row_request(&mut self, now: Instant, sender: NodeHandle<A>, row: u8) {
        let budget = self.budget_left(Some(sender.id), &sender.addr);
        let (entries, hints): (Vec<NodeHandle<A>>, Vec<u16>) = self
            .row_to_give(now, usize::from(row), sender.id)
            .map(|p| (p.handle.clone(), rtt_hint(p.rtt.srtt_micros_or_max())))
            .unzip();
        // The sender has us in that row, so we may belong in its: it is a candidate for our
        // table like any node a row names (measured before it can displace an entry). This
        // is how the nodes a newcomer asks learn of it; without it only empty cells would.
        // The probe rides on the rows.
        let probe = self.carried_probe(&sender.addr, |n| {
            n.consider_table(now, &sender, true, false)
        });
        let parts = wire::encode_rows_hinted(self.me.id, &[(row, entries)], &hints, probe, budget);
        let mut carried = false;
        for bytes in parts {
            if !self.send_budgeted(Some(sender.id), &sender.addr, bytes, true) {
                break;
            }
            carried = true;
        }
        if probe != 0 && !carried {
            // No rows to carry it, or they could not be sent: the probe goes on its own.
            self.send_probe(&sender.addr);
        }
    }

    pub(crate) fn on_rows(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        rows: Vec<wire::Row<A>>,
        hints: &[u16],
        probe: u32,
    ) {
        let from_bootstrap = matches!(&self.phase, super::Phase::Joining { bootstrap, .. } if *bootstrap == sender.addr);
        if !from_bootstrap && !self.is_verified(Some(sender.id), &sender.addr) {
            return;
        }
        self.answer_carried(&sender, probe);
        self.consider_table(now, &sender, false, true);
        self.consider_leaf(now, &sender);
        // Our round trip to the sender, if measured: with its hints it bounds ours to each
        // candidate from below.
        let to_sender = self
            .table
            .find(sender.id)
            .or_else(|| self.leaf.get(sender.id))
            .map(|p| p.rtt.srtt_micros_or_max())
            .filter(|r| *r != u32::MAX);
        let mut hint_at = hints.iter().copied();
        for (_, entries) in rows {
            let mut entries: Vec<(NodeHandle<A>, Option<u16>)> =
                entries.into_iter().map(|h| (h, hint_at.next())).collect();
            // The probe budget may not cover the whole row: start at a random column, so
            // that no column is always the last to be considered.
            if !entries.is_empty() {
                let start = (self.random() % entries.len() as u64) as usize;
                entries.rotate_left(start);
            }
            for (h, hint) in &entries {
                // The cell's entry is looked up only when there is a bound to compare it with.
                // A candidate that cannot beat the entry may still be wanted as a spare.
                let hopeless = to_sender.is_some()
                    && hint.is_some()
                    && self.table.cell_of(h.id).is_some_and(|(r, c)| {
                        cannot_be_nearer(
                            to_sender,
                            *hint,
                            self.table.get(r, c).map(|e| e.rtt.srtt_micros_or_max()),
                        ) && !self.spare_room(r, c)
                    });
                if !hopeless {
                    self.consider_table(now, h, true, true);
                }
                self.consider_leaf(now, h);
            }
        }
    }

    /// After how many seconds without a sign of life a table entry is left out of the rows we
    /// give (for row requests and joins). Nodes that learn of a dead entry from our rows probe
    /// it for nothing: under 10-minute churn at 2,000 nodes a third of the candidates rows
    /// named were dead. Our leaf set is watched all the time, so its deaths over the last two
    /// maintenance rounds (between one and two periods; from the node's start until its first
    /// round) measure the ring's failure rate; with exponential lifetimes at that
    /// rate, an entry silent for the returned time has died with the chance `STALE_RISK_LN`
    /// stands for. `None` (every entry is given) while no member died in that time: on a
    /// stable ring entries stay alive however long they are silent, and figures measured there
    /// do not change. At 10,000 nodes under 10-minute churn (seed 1) control traffic went
    /// from 0.674 to 0.633 messages per node per second, with 0 incorrect and 22 lost lookups
    /// as before, and the lookups' route delay penalty from 6.63 to 6.97 (tables hold 40.4
    /// entries instead of 42.1).
    pub(crate) fn stale_after(&self, now: Instant) -> Option<u64> {
        let (counts, starts) = self.leaf_deaths;
        let deaths = u64::from(counts[0] + counts[1]);
        if deaths == 0 {
            return None;
        }
        let watched = self.leaf.len().max(1) as u64 * (now - starts[0]).as_secs().max(60);
        // Exponential lifetimes at rate `deaths / watched`: P(dead after t) = 1 - e^(-rate t).
        // Never shorter than the silence that makes a member suspect: deaths are capped per
        // round (at four leaf sets' worth), but a member that keeps rejoining under new ids
        // and going silent could still push the estimate up, and rows would then shrink to
        // the entries heard this minute.
        let floor = self.cfg.failure_timeout.as_secs();
        Some((STALE_RISK_LN * watched / deaths / 1000).max(floor))
    }

    /// The entries of row `row` we name to others (for row requests and joins), without
    /// `exclude` (the asker): not suspected, and not silent too long (see
    /// [`Core::stale_after`]).
    fn row_to_give(
        &self,
        now: Instant,
        row: usize,
        exclude: Id,
    ) -> impl Iterator<Item = &Peer<A>> + '_ {
        let stale = self.stale_after(now);
        self.table
            .row(row)
            .filter(move |p| p.id() != exclude && !p.is_suspect() && fresh(p, now, stale))
    }

    /// Rows `range` of our table (non-empty rows only), without `exclude`.
    pub(crate) fn table_rows(
        &self,
        now: Instant,
        range: core::ops::RangeInclusive<usize>,
        exclude: Id,
    ) -> Vec<wire::Row<A>> {
        range
            .filter_map(|r| {
                let entries: Vec<NodeHandle<A>> = self
                    .row_to_give(now, r, exclude)
                    .map(|p| p.handle.clone())
                    .collect();
                (!entries.is_empty()).then(|| (u8::try_from(r).unwrap_or(u8::MAX), entries))
            })
            .collect()
    }
}

/// Whether a candidate a row named cannot improve on its cell's entry: our round trip to the
/// node that named it (`to_sender`, µs), that node's hint for it (units of 100 µs) and the
/// entry's smoothed round trip (`current`, µs, `u32::MAX` if unmeasured) bound ours to the
/// candidate from below by `|to_sender - hint|`. Without all three, it might be nearer.
fn cannot_be_nearer(to_sender: Option<u32>, hint: Option<u16>, current: Option<u32>) -> bool {
    match (to_sender, hint, current) {
        (Some(s), Some(h), Some(e)) if h != wire::RTT_UNKNOWN && e != u32::MAX => {
            e <= s.abs_diff(u32::from(h) * 100)
        }
        _ => false,
    }
}

/// A smoothed round trip (µs, `u32::MAX` if unmeasured) as a row hint: units of 100 µs.
fn rtt_hint(micros: u32) -> u16 {
    if micros == u32::MAX {
        wire::RTT_UNKNOWN
    } else {
        u16::try_from(micros / 100).unwrap_or(wire::RTT_UNKNOWN)
    }
}

pub(crate) fn side_index(side: Side) -> usize {
    match side {
        Side::Cw => 0,
        Side::Ccw => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn a_candidate_is_skipped_only_when_the_triangle_inequality_rules_it_out() {
        // We are 10 ms from the sender, which is 50 ms from the candidate: we are at least
        // 40 ms from it. An entry at 30 ms cannot be beaten; one at 45 ms might be.
        let (s, h) = (Some(10_000), Some(500));
        assert!(cannot_be_nearer(s, h, Some(30_000)));
        assert!(!cannot_be_nearer(s, h, Some(45_000)));
        // The bound works from either side: 60 ms from the sender, which is 5 ms from it.
        assert!(cannot_be_nearer(Some(60_000), Some(50), Some(50_000)));
        assert!(!cannot_be_nearer(Some(60_000), Some(50), Some(56_000)));
        // Anything unknown leaves the candidate worth a probe.
        assert!(!cannot_be_nearer(None, h, Some(30_000)));
        assert!(!cannot_be_nearer(s, None, Some(30_000)));
        assert!(!cannot_be_nearer(s, Some(wire::RTT_UNKNOWN), Some(1)));
        assert!(!cannot_be_nearer(s, h, Some(u32::MAX)));
        assert!(!cannot_be_nearer(s, h, None));
    }

    #[test]
    fn a_maintenance_round_asks_two_entries_of_the_first_two_rows_and_one_of_the_others() {
        use crate::node::Node;
        use crate::{Config, Rtt};
        let now = Instant::ZERO;
        let me: u128 = 0x1234_5678_9abc_def0_1122_3344_5566_7788;
        let mut node: Node<u32> = Node::new(Config::default(), Id::new(me), 1, 7, now).unwrap();
        node.bootstrap(now).unwrap();
        while node.poll_transmit().is_some() {}
        // Entries sharing `row` digits with us, then a different digit: 4 in row 0, 3 in row
        // 1, 2 in row 2 (the only rows that are not empty).
        let core = &mut node.core;
        let mut addr = 10u32;
        for (row, count) in [(0u32, 4u32), (1, 3), (2, 2)] {
            let shift = 124 - 4 * row;
            let mine = (me >> shift) & 0xf;
            for k in 0..count {
                let digit = u128::from((mine as u32 + 1 + k) % 16);
                let high = if row == 0 {
                    0
                } else {
                    (me >> (shift + 4)) << (shift + 4)
                };
                let id = high | digit << shift | 0x42;
                let peer = Peer::verified(
                    NodeHandle::new(Id::new(id), addr),
                    Rtt::from_sample(core::time::Duration::from_millis(u64::from(addr))),
                );
                let _: crate::table::TableInsert<u32> = core.table.insert(peer);
                addr += 1;
            }
        }
        assert_eq!(core.table.len(), 9);
        core.on_maintenance_timer(now);
        let mut asked = [
            alloc::vec::Vec::new(),
            alloc::vec::Vec::new(),
            alloc::vec::Vec::new(),
        ];
        while let Some(t) = node.poll_transmit() {
            let d = wire::Datagram::<u32>::decode(&t.contents, usize::MAX).unwrap();
            if let wire::Message::RowRequest { row, .. } = d.message {
                asked[usize::from(row)].push(t.destination);
            }
        }
        for (row, a) in asked.iter().enumerate() {
            let want = if row < 2 { 2 } else { 1 };
            assert_eq!(a.len(), want, "row {row}: asked {a:?}");
            if want == 2 {
                assert_ne!(a[0], a[1], "row {row}: two different entries");
            }
        }
    }

    /// A node alone with a verified leaf-set member (the asker of rows) and three row-0
    /// entries: one that answered 10 s ago, one 2,000 s ago, one never.
    fn with_aging_entries() -> (crate::node::Node<u32>, NodeHandle<u32>, Instant) {
        use crate::Rtt;
        use crate::node::testing::{ME, alone};
        let mut node = alone();
        let now = Instant::from_secs(3000);
        let core = &mut node.core;
        let asker = NodeHandle::new(Id::new(ME + 1), 2);
        let _ = core
            .leaf
            .insert(Peer::verified(asker.clone(), Rtt::default()), now);
        for (digit, ago) in [(0xa_u128, Some(10)), (0xb, Some(2000)), (0xc, None)] {
            let id = digit << 124 | 0x42;
            let mut peer = Peer::verified(
                NodeHandle::new(Id::new(id), 10 + digit as u32),
                Rtt::default(),
            );
            if let Some(ago) = ago {
                peer.heard = crate::peer::heard_units(Instant::from_secs(3000 - ago));
            }
            let _: crate::table::TableInsert<u32> = core.table.insert(peer);
        }
        (node, asker, now)
    }

    fn rows_given(
        node: &mut crate::node::Node<u32>,
        asker: &NodeHandle<u32>,
        now: Instant,
    ) -> alloc::vec::Vec<u32> {
        node.core.on_row_request(now, asker.clone(), 0);
        let mut given: alloc::vec::Vec<u32> = crate::node::testing::sent(node)
            .into_iter()
            .filter_map(|(_, m)| match m {
                wire::Message::Rows { rows, .. } => Some(rows),
                _ => None,
            })
            .flatten()
            .flat_map(|(_, e)| e)
            .map(|h| h.addr)
            .collect();
        given.sort_unstable();
        given
    }

    /// `peer` answers, at `at`, the probe of it that `node` has just sent.
    fn answer_our_probe(node: &mut crate::node::Node<u32>, peer: &NodeHandle<u32>, at: Instant) {
        let nonce = crate::node::testing::sent(node)
            .into_iter()
            .find_map(|(to, m)| match m {
                wire::Message::Probe { nonce, .. } if to == peer.addr => Some(nonce),
                _ => None,
            })
            .expect("a probe of the peer");
        let reply = wire::Message::ProbeReply {
            nonce,
            token: 0,
            leaf: None,
            active: true,
            probe: 0,
        };
        let bytes = wire::Datagram::<u32>::new(peer.id, reply).to_bytes();
        node.handle_datagram(at, peer.addr, &bytes).unwrap();
    }

    #[test]
    fn rows_leave_out_entries_silent_for_longer_than_the_observed_failure_rate_allows() {
        let (mut node, asker, now) = with_aging_entries();
        // No member died lately: a stable ring, where silence says nothing. All are given.
        assert_eq!(node.core.stale_after(now), None);
        assert_eq!(rows_given(&mut node, &asker, now), [20, 21, 22]);
        // Four deaths among our one member over the last 1,200 s: an entry silent for
        // 0.288 * 1 * 1,200 / 4 = 86 s has died with probability a quarter. Only the entry
        // that answered 10 s ago is given.
        node.core.leaf_deaths = ([2, 2], [Instant::from_secs(1800), Instant::from_secs(2400)]);
        assert_eq!(node.core.stale_after(now), Some(86));
        assert_eq!(rows_given(&mut node, &asker, now), [20]);
        // One death in 3,000 s: 864 s, still short of 2,000.
        node.core.leaf_deaths = ([0, 1], [Instant::ZERO, now]);
        assert_eq!(node.core.stale_after(now), Some(864));
        assert_eq!(rows_given(&mut node, &asker, now), [20]);
        // The next maintenance round forgets the deaths of the round before last and keeps
        // the last round's.
        node.core.leaf_deaths = ([1, 0], [Instant::ZERO, now]);
        node.core.on_maintenance_timer(now);
        while node.poll_transmit().is_some() {}
        assert_eq!(node.core.stale_after(now), None);
        node.core.leaf_deaths = ([0, 3], [Instant::ZERO, Instant::from_secs(2400)]);
        node.core.on_maintenance_timer(now);
        while node.poll_transmit().is_some() {}
        assert_eq!(
            node.core.leaf_deaths,
            ([3, 0], [Instant::from_secs(2400), now])
        );
        // However many deaths, the limit is never shorter than a member's silence timeout.
        node.core.leaf_deaths = ([u32::MAX / 4, u32::MAX / 4], [Instant::ZERO, now]);
        let floor = node.core.cfg.failure_timeout.as_secs();
        assert_eq!(node.core.stale_after(now), Some(floor));
        // The rows a joining node is given leave the same entries out.
        node.core.leaf_deaths = ([2, 2], [Instant::from_secs(1800), Instant::from_secs(2400)]);
        let rows = node.core.table_rows(now, 0..=0, Id::new(0));
        let given: alloc::vec::Vec<u32> = rows
            .into_iter()
            .flat_map(|(_, e)| e)
            .map(|h| h.addr)
            .collect();
        assert_eq!(given, [20]);
    }

    #[test]
    fn only_the_death_of_a_leaf_set_member_counts_and_only_once() {
        use crate::Rtt;
        let (mut node, asker, now) = with_aging_entries();
        let mut apps = alloc::vec::Vec::new();
        // A table entry only: not counted.
        let b = Id::new(0xb_u128 << 124 | 0x42);
        node.core.declare_dead(now, b, false, &mut apps);
        assert!(node.core.table.find(b).is_none());
        assert_eq!(node.core.leaf_deaths.0, [0, 0]);
        // A member: counted once, however often it is declared dead.
        node.core.declare_dead(now, asker.id, false, &mut apps);
        node.core.declare_dead(now, asker.id, false, &mut apps);
        assert_eq!(node.core.leaf_deaths.0, [0, 1]);
        // Never past four leaf sets' worth in a round.
        let cap = 4 * node.core.cfg.leaf_set_size as u32;
        for i in 0..2 * cap {
            let m = NodeHandle::new(Id::new(asker.id.as_u128() + 1 + u128::from(i)), 1000 + i);
            let _ = node
                .core
                .leaf
                .insert(Peer::verified(m.clone(), Rtt::default()), now);
            node.core.declare_dead(now, m.id, false, &mut apps);
        }
        assert_eq!(node.core.leaf_deaths.0, [0, cap]);
    }

    #[test]
    fn a_new_entry_is_heard_from_its_first_answer_and_an_entry_from_its_acks() {
        let (mut node, _, now) = with_aging_entries();
        // A candidate for an empty cell of row 0, probed and answering: it enters the table
        // as heard at its answer.
        let d = NodeHandle::new(Id::new(0xd_u128 << 124 | 0x42), 23);
        node.core.probe(now, &d, super::P_TABLE, &[], true);
        let t1 = now + Duration::from_secs(4);
        answer_our_probe(&mut node, &d, t1);
        let heard =
            |node: &crate::node::Node<u32>, id: Id| node.core.table.find(id).map(|p| p.heard);
        assert_eq!(heard(&node, d.id), Some(crate::peer::heard_units(t1)));
        // An entry that acknowledges a message we sent it is heard at the ack.
        let a = Id::new(0xa_u128 << 124 | 0x42);
        let t2 = now + Duration::from_secs(100);
        node.send_direct(t2, NodeHandle::new(a, 20), 0, alloc::vec![1, 2, 3])
            .unwrap();
        let seq = crate::node::testing::direct_seq(&mut node, 20);
        let ack = wire::Datagram::<u32>::new(a, wire::Message::Ack { seq });
        let t3 = t2 + Duration::from_millis(30);
        node.handle_datagram(t3, 20, &ack.to_bytes()).unwrap();
        assert_eq!(heard(&node, a), Some(crate::peer::heard_units(t3)));
    }

    #[test]
    fn an_entry_proves_alive_by_answering_not_by_sending() {
        let (mut node, _, now) = with_aging_entries();
        let b = NodeHandle::new(Id::new(0xb_u128 << 124 | 0x42), 21);
        let heard = |node: &crate::node::Node<u32>| node.core.table.find(b.id).map(|p| p.heard);
        let before = heard(&node);
        // A probe from its address (which anyone can forge) changes nothing.
        let probe = wire::Datagram::<u32>::new(
            b.id,
            wire::Message::Probe {
                nonce: 5,
                token: 0,
                leaf: None,
                failed: alloc::vec::Vec::new(),
                padding: 0,
                active: true,
            },
        );
        node.handle_datagram(now, 21, &probe.to_bytes()).unwrap();
        assert_eq!(heard(&node), before);
        // Its reply to our probe does.
        while node.poll_transmit().is_some() {}
        node.core.probe(now, &b, super::P_LIVE, &[], true);
        let later = now + Duration::from_secs(8);
        answer_our_probe(&mut node, &b, later);
        assert_eq!(heard(&node), Some(crate::peer::heard_units(later)));
    }

    /// A leaf set of members -8..=8 (one id step apart) in which +3 fails; the node at +9 probes
    /// us, then, `delay` later, +3's ring neighbour tells us of the failure. Returns the
    /// datagrams we sent to +9 after answering its probe, once the failure is handled.
    fn turned_away_then_notice(delay: core::time::Duration) -> (usize, bool) {
        use crate::node::Node;
        use crate::wire::{Datagram, LeafSetMsg, Message};
        use crate::{Config, Rtt};
        use core::time::Duration;
        const STEP: u128 = 1 << 100;
        let me: u128 = 1 << 120;
        let at = |k: i32| Id::new(me.wrapping_add_signed(i128::from(k) * STEP as i128));
        // Members k = -8..=8 at addresses 100 + k; the one at +3 fails; the node at +9 (not a
        // member: our clockwise side is full) probes us meanwhile.
        let addr = |k: i32| (100 + k) as u32;
        let handle = |k: i32| NodeHandle::new(at(k), addr(k));
        let t0 = Instant::ZERO;
        let mut node: Node<u32> = Node::new(Config::default(), at(0), addr(0), 3, t0).unwrap();
        node.bootstrap(t0).unwrap();
        for k in (-8..=8).filter(|k| *k != 0) {
            let p = Peer::verified(handle(k), Rtt::from_sample(Duration::from_millis(10)));
            let _ = node.core.leaf.insert(p, t0);
        }
        node.core.remember_verified(at(9), &addr(9));
        while node.poll_transmit().is_some() {}
        let probe = |from: i32, nonce: u32, failed: Vec<Id>, leaf: Vec<i32>| {
            let leaf = LeafSetMsg {
                cw: leaf.iter().map(|k| handle(*k)).collect(),
                ccw: Vec::new(),
            };
            let d = Datagram::<u32>::new(
                at(from),
                Message::Probe {
                    nonce,
                    token: 0,
                    leaf: Some(leaf),
                    failed,
                    padding: 0,
                    active: true,
                },
            );
            d.to_bytes()
        };
        // The node at +9 heard first: it probes us, and is answered but not taken in.
        let t1 = t0 + Duration::from_secs(1);
        node.handle_datagram(t1, addr(9), &probe(9, 1, Vec::new(), vec![10, 11]))
            .unwrap();
        assert!(node.leaf_set().get(at(9)).is_none());
        let answer = node.poll_transmit().expect("an answer");
        assert_eq!(answer.destination, addr(9));
        let mut out: Vec<_> = core::iter::from_fn(|| node.poll_transmit()).collect();
        // The failed node's ring neighbour tells us; our check of it goes unanswered.
        let t2 = t1 + delay;
        while let Some(t) = node.poll_timeout().filter(|t| *t <= t2) {
            node.handle_timeout(t);
            out.extend(core::iter::from_fn(|| node.poll_transmit()));
        }
        node.handle_datagram(t2, addr(4), &probe(4, 2, vec![at(3)], vec![5, 6, 7, 8, 9]))
            .unwrap();
        let end = t2 + Duration::from_secs(20);
        while let Some(t) = node.poll_timeout().filter(|t| *t <= end) {
            node.handle_timeout(t);
            out.extend(core::iter::from_fn(|| node.poll_transmit()));
        }
        assert!(node.leaf_set().get(at(3)).is_none(), "declared dead");
        let to_nine = out.iter().filter(|t| t.destination == addr(9)).count();
        (to_nine, node.leaf_set().get(at(9)).is_some())
    }

    #[test]
    fn a_prober_turned_away_for_a_failing_member_takes_its_place_unprobed() {
        use core::time::Duration;
        // Told a second later: taken in on the strength of its own probe.
        assert_eq!(turned_away_then_notice(Duration::from_secs(1)), (0, true));
        // Told half a minute later, past the time a liveness check can take: probed first
        // (and, as nothing answers for it here, not taken).
        let (to_nine, taken) = turned_away_then_notice(Duration::from_secs(30));
        assert!(to_nine >= 1 && !taken, "{to_nine} {taken}");
    }

    #[test]
    fn hints_are_in_units_of_100_microseconds_and_saturate() {
        assert_eq!(rtt_hint(12_345), 123);
        assert_eq!(rtt_hint(u32::MAX), wire::RTT_UNKNOWN);
        assert_eq!(rtt_hint(7_000_000), wire::RTT_UNKNOWN);
    }
}
