//! Joining an overlay (relayed through the bootstrap node, the only member the joiner
//! contacted) and leaving it gracefully.

use alloc::vec::Vec;

use super::probes::{P_LEAF, P_VERIFY};
use super::{Apps, Core, Event, Phase, RouteFailure, TimerKind};
use crate::app::LeafChange;
use crate::peer::CONFIRMED;
use crate::wire::{self, LeafSetMsg, Message, RouteBody, RouteMsg};
use crate::{Address, Id, Instant, LeafSet, NodeHandle, Peer, Side};

/// Joins a bootstrap node relays at once.
pub(crate) const MAX_RELAYS: usize = 16;

/// A join the bootstrap node is relaying: what the path sends for `joiner` goes on to it.
pub(crate) struct Relay<A> {
    joiner: NodeHandle<A>,
    pub(super) tag: u32,
    until: Instant,
}

impl<A: Address> Core<A> {
    // ----- join -----

    /// Asks the bootstrap node to route our join, once its address has answered a probe.
    pub(crate) fn start_join(&mut self, now: Instant, bootstrap: A, attempt: u8) {
        let deadline = now + self.cfg.join_timeout;
        self.phase = Phase::Joining {
            bootstrap: bootstrap.clone(),
            attempt,
            deadline,
            replied: false,
        };
        self.schedule(deadline, TimerKind::Join);
        let base = wire::HEADER_LEN + 2;
        let padding = u16::try_from(wire::JOIN_REQUEST_MIN_LEN.saturating_sub(base)).unwrap_or(0);
        let bytes = self.encode(Message::JoinRequest { padding });
        if self.verified.contains(&bootstrap) {
            self.transmit(bootstrap, bytes, true);
            return;
        }
        // The application named this address: probing it needs no budget.
        self.probe_addr(now, bootstrap.clone(), None, P_VERIFY, &[], true);
        match self.probes.get_mut(&bootstrap) {
            Some(p) if p.queued.is_empty() => p.queued.push(bytes),
            _ => {}
        }
    }

    /// A node asks us to route its join: we become the bootstrap node of that join and relay
    /// everything the path sends for the joiner.
    pub(crate) fn on_join_request(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        len: usize,
        apps: &mut Apps<A>,
    ) {
        if !self.is_active() || len < wire::JOIN_REQUEST_MIN_LEN {
            self.counters.rejected += 1;
            return;
        }
        self.relays
            .retain(|r| r.until > now && r.joiner.id != sender.id);
        if self.relays.len() >= MAX_RELAYS {
            self.relays.remove(0);
        }
        let tag = self.unguessable();
        self.relays.push(Relay {
            joiner: sender.clone(),
            tag,
            until: now + self.cfg.join_timeout * 2,
        });
        let id = self.next_message_id();
        let msg = RouteMsg {
            seq: 0,
            origin: self.me.clone(),
            msg_seq: id.seq,
            key: sender.id,
            hops: 0,
            body: RouteBody::Join {
                joiner: sender,
                next_row: 0,
                tag,
            },
        };
        self.seen.insert(now, id.origin, id.seq);
        self.process_route(now, apps, msg, false, None);
    }

    /// A join passes here: give the joiner (through the join's bootstrap node) our rows
    /// `first..=last`.
    pub(crate) fn join_hop(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        origin: &NodeHandle<A>,
        join: (&NodeHandle<A>, u32),
        rows: (usize, usize),
    ) {
        let rows = self.table_rows(now, rows.0..=rows.1, join.0.id);
        if !rows.is_empty() {
            self.send_join_state(now, apps, origin, join, rows, None);
        }
    }

    /// We are the root of a join: give the joiner our leaf set.
    pub(crate) fn join_root(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        origin: &NodeHandle<A>,
        join: (&NodeHandle<A>, u32),
    ) {
        let leaf = self.leaf_msg(Some(join.0.id), self.cfg.max_datagram_size / 2);
        self.send_join_state(now, apps, origin, join, Vec::new(), Some(leaf));
    }

    /// Sends join state to the bootstrap node by routing it to the bootstrap node's id (it is
    /// active, so it is the root of its own id): every hop goes to a node whose address
    /// answered us, and nothing goes to an address a forged join could name.
    fn send_join_state(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        origin: &NodeHandle<A>,
        (joiner, tag): (&NodeHandle<A>, u32),
        rows: Vec<wire::Row<A>>,
        leaf: Option<LeafSetMsg<A>>,
    ) {
        if origin.id == self.me.id {
            let me = self.me.clone();
            self.relay_to_joiner(now, &me, joiner, tag, rows, leaf);
            return;
        }
        let mut bodies = Vec::new();
        if !rows.is_empty() {
            // Room for rows in one routed message.
            let room = self.cfg.max_datagram_size
                - wire::route_overhead(A::MAX_ENCODED_LEN)
                - 4
                - wire::handle_len(joiner)
                - 1;
            // Parts whose rows field fits that room.
            for part in wire::encode_rows(self.me.id, &rows, room + wire::ROWS_FRAME) {
                if let Ok(d) = wire::Datagram::<A>::decode(&part, usize::MAX)
                    && let Message::Rows { rows, .. } = d.message
                {
                    bodies.push(RouteBody::JoinState {
                        tag,
                        joiner: joiner.clone(),
                        rows,
                        leaf: None,
                    });
                }
            }
        }
        if let Some(leaf) = leaf {
            bodies.push(RouteBody::JoinState {
                tag,
                joiner: joiner.clone(),
                rows: Vec::new(),
                leaf: Some(leaf),
            });
        }
        for body in bodies {
            let id = self.next_message_id();
            let msg = RouteMsg {
                seq: 0,
                origin: self.me.clone(),
                msg_seq: id.seq,
                key: origin.id,
                hops: 0,
                body,
            };
            self.seen.insert(now, id.origin, id.seq);
            self.process_route(now, apps, msg, false, None);
        }
    }

    /// Join state reached us as the root of its key: if we are relaying that join (same
    /// joiner, same tag), pass it on to the joiner.
    pub(crate) fn deliver_join_state(
        &mut self,
        now: Instant,
        from: &NodeHandle<A>,
        joiner: &NodeHandle<A>,
        tag: u32,
        rows: Vec<wire::Row<A>>,
        leaf: Option<LeafSetMsg<A>>,
    ) {
        let relaying = self
            .relays
            .iter()
            .any(|r| r.until > now && r.joiner == *joiner && r.tag == tag);
        if !relaying {
            self.counters.rejected += 1;
            return;
        }
        self.relay_to_joiner(now, from, joiner, tag, rows, leaf);
    }

    fn relay_to_joiner(
        &mut self,
        now: Instant,
        from: &NodeHandle<A>,
        joiner: &NodeHandle<A>,
        _tag: u32,
        mut rows: Vec<wire::Row<A>>,
        leaf: Option<LeafSetMsg<A>>,
    ) {
        let max = self.cfg.max_datagram_size;
        if !rows.is_empty() || leaf.is_none() {
            // The node that contributed the rows is a candidate as well.
            let row = u8::try_from(from.id.shared_prefix_len(joiner.id, self.cfg.b)).unwrap_or(0);
            rows.push((row, alloc::vec![from.clone()]));
            for bytes in wire::encode_rows(self.me.id, &rows, max) {
                self.send_verified(now, joiner, bytes, false);
            }
        }
        if let Some(leaf) = leaf {
            let bytes = self.encode(Message::JoinReply {
                root: from.clone(),
                leaf,
            });
            self.send_verified(now, joiner, bytes, false);
        }
    }

    pub(crate) fn on_join_reply(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        root: NodeHandle<A>,
        leaf: LeafSetMsg<A>,
        apps: &mut Apps<A>,
    ) {
        // Only the bootstrap node relays our join, and we asked it only after its address
        // answered a probe.
        let Phase::Joining {
            replied, bootstrap, ..
        } = &mut self.phase
        else {
            return;
        };
        if *bootstrap != sender.addr {
            self.counters.rejected += 1;
            return;
        }
        // The root's leaf set must span our id: a root that cannot know our neighbours (a
        // node that answered from a stale or partial view) would send us probing far away
        // from our place in the ring. Ignore it; the join timer asks again.
        let mut roots_view: LeafSet<A> = LeafSet::new(root.id, self.cfg.leaf_set_size);
        for h in leaf.cw.iter().chain(leaf.ccw.iter()) {
            if h.id != root.id {
                roots_view.insert(Peer::new(h.clone()), now);
            }
        }
        if !roots_view.in_range(self.me.id) {
            self.counters.rejected += 1;
            return;
        }
        *replied = true;
        let half = self.leaf.half();
        let full_apart = roots_view.side_peers(Side::Cw).len() >= half
            && roots_view.side_peers(Side::Ccw).len() >= half
            && !roots_view.covers_ring();
        let nearly_full = roots_view.len() + 2 >= self.cfg.leaf_set_size;
        if full_apart || nearly_full && leaves_half_the_ring_empty(root.id, &leaf, self.me.id) {
            // The root's sides are full and do not meet, or it names nearly a leaf set of
            // nodes that leave half the ring empty (a root a member short, under loss or
            // churn, names L - 1 nodes: by count a whole small ring, yet they sit in a sliver
            // of it): the ring is larger than a leaf set. Until a side fills, it must not take
            // nodes that are near only going the long way round. Otherwise each answer from
            // such a node names one a little "nearer" still, and the side walks round the ring
            // probing, never settling, so the join never completes.
            self.leaf.hole_short_sides();
        }
        // The leaf set this node should have, as far as the root knows: probe each member.
        let mut view: LeafSet<A> = LeafSet::new(self.me.id, self.cfg.leaf_set_size);
        for h in core::iter::once(&root)
            .chain(leaf.cw.iter())
            .chain(leaf.ccw.iter())
        {
            view.insert(Peer::new(h.clone()), now);
        }
        let members: Vec<NodeHandle<A>> = view.members().map(|p| p.handle.clone()).collect();
        for m in members {
            if !self.leaf.contains(m.id) {
                self.probe(now, &m, P_LEAF, &[], true);
            }
        }
        self.check_active(now, apps);
    }

    pub(crate) fn on_join_timer(&mut self, now: Instant, at: Instant, apps: &mut Apps<A>) {
        let Phase::Joining {
            bootstrap,
            attempt,
            deadline,
            replied,
        } = self.phase.clone()
        else {
            return;
        };
        if deadline != at {
            return;
        }
        if replied {
            self.check_active(now, apps);
            if self.is_active() {
                return;
            }
        }
        if attempt + 1 >= self.cfg.join_attempts && self.rejoining {
            // Nobody it knows answers: it may be the last node standing. Carry on alone.
            self.clear_probes();
            self.leaf = LeafSet::new(self.me.id, self.cfg.leaf_set_size);
            self.become_active(now, apps);
            return;
        }
        if attempt + 1 >= self.cfg.join_attempts {
            // Back to a fresh start: nothing learned in a failed join (confirmations above
            // all) may count for the next one.
            self.phase = Phase::Idle;
            self.clear_probes();
            self.fail_all_held(RouteFailure::NodeLeft);
            self.fail_all_flights();
            self.leaf = LeafSet::new(self.me.id, self.cfg.leaf_set_size);
            self.table = crate::RoutingTable::new(self.me.id, self.cfg.b);
            self.deferred_table.clear();
            self.notice = None;
            self.event(Event::JoinFailed);
            return;
        }
        if replied && !self.pending_leaf.is_empty() {
            // Leaf-set probes are still out: give them time before asking again.
            let deadline = now + self.cfg.join_timeout;
            self.phase = Phase::Joining {
                bootstrap,
                attempt: attempt + 1,
                deadline,
                replied,
            };
            self.schedule(deadline, TimerKind::Join);
            return;
        }
        self.start_join(now, bootstrap, attempt + 1);
    }

    /// A joining node becomes active once the root answered and every leaf-set probe that
    /// still matters has been answered or has failed.
    pub(crate) fn check_active(&mut self, now: Instant, apps: &mut Apps<A>) {
        let Phase::Joining {
            bootstrap,
            attempt,
            replied: true,
            ..
        } = self.phase.clone()
        else {
            return;
        };
        let leaf = &self.leaf;
        if self.pending_leaf.iter().any(|id| leaf.would_accept(*id)) {
            return;
        }
        // Every member must have answered a leaf-set probe of ours, which proves it has taken
        // us into its own leaf set; a member that only probed us has not said so yet.
        let unconfirmed: Vec<NodeHandle<A>> = self
            .leaf
            .members()
            .filter(|p| p.flags & CONFIRMED == 0)
            .map(|p| p.handle.clone())
            .collect();
        if !unconfirmed.is_empty() {
            for h in unconfirmed {
                self.probe(now, &h, P_LEAF, &[], false);
            }
            return;
        }
        if self.leaf.is_empty() {
            // Everyone the root named failed to answer: start over.
            self.start_join(now, bootstrap, attempt);
            return;
        }
        self.become_active(now, apps);
    }

    /// Called when failures removed leaf-set members: a node whose leaf set they emptied may be
    /// cut off from the overlay (or the last node standing). It stops delivering and joins again
    /// through a node it still knows, or the address it first joined through.
    pub(crate) fn check_isolation(&mut self, now: Instant) {
        if !self.is_active() || !self.leaf.is_empty() {
            return;
        }
        let contact = self
            .table
            .entries()
            .find(|p| !p.is_suspect())
            .map(|p| p.handle.addr.clone())
            .or_else(|| self.bootstrap.clone());
        let Some(contact) = contact else {
            return;
        };
        self.rejoining = true;
        self.event(Event::Rejoining);
        self.start_join(now, contact, 0);
    }

    pub(crate) fn become_active(&mut self, now: Instant, apps: &mut Apps<A>) {
        self.phase = Phase::Active;
        self.rejoining = false;
        self.pending_leaf = Vec::new();
        self.event(Event::Active);
        let hb = self.jitter(self.cfg.heartbeat_period, 50);
        self.heartbeat_at = now + hb;
        self.schedule(self.heartbeat_at, TimerKind::Heartbeat);
        // The second phase below refreshes the table at once; maintenance then runs every
        // period (the first one at a random point of it, so that nodes that joined together
        // do not keep maintaining in step).
        let mt = self.jitter(self.cfg.maintenance_period, 100);
        self.maintenance_at = now + mt;
        self.schedule(self.maintenance_at, TimerKind::Maintenance);
        // Second phase of a locality-aware join: the rows came from the join path, whose
        // nodes are near each other but not necessarily near us. Each entry of a row shares
        // that row with us, and its own row holds nodes near it; asking the nearest entries for
        // their rows (and probing what is nearer) brings the table close to what the neighbourhood
        // knows. The entries hear of us in turn and consider us for their own tables.
        // One maintenance round's probe budget. Twice that, asking six entries per row, cost
        // 19 more datagrams per node while 10,000 nodes joined (266 against 247) and left the
        // tables no nearer an hour later, once maintenance had done its part (RDP 1.700
        // against 1.682).
        self.pns_budget = super::pns_budget(&self.cfg);
        self.spare_budget = super::spare_budget(&self.cfg);
        self.ask_table_rows(now);
        self.retry_held(now, apps);
        self.reconsider_deferred(now);
    }

    // ----- leave -----

    pub(crate) fn start_leave(&mut self, now: Instant) {
        match self.phase {
            Phase::Active | Phase::Joining { .. } => {}
            Phase::Idle => {
                self.phase = Phase::Left;
                self.event(Event::Left);
                return;
            }
            Phase::Leaving { .. } | Phase::Left => return,
        }
        let patience = self.cfg.rto_max * (u32::from(self.cfg.max_retransmits) + 1);
        let deadline = now + patience;
        self.phase = Phase::Leaving { deadline };
        self.fail_all_held(RouteFailure::NodeLeft);
        self.fail_all_flights();
        // A leaving node asks nothing more of anyone: a leftover leaf-set probe would make
        // its neighbours take it back.
        self.clear_probes();
        self.schedule(deadline, TimerKind::Leave);
        let members: Vec<NodeHandle<A>> = self.leaf.members().map(|p| p.handle.clone()).collect();
        for m in members {
            self.send_flight(now, m, super::routing::FlightKind::Leave);
        }
        self.check_leave_done(now);
    }

    /// Tells a node that contacted a leaving node that it is leaving.
    pub(crate) fn answer_with_leave(&mut self, to: &NodeHandle<A>) {
        let budget = self.budget_left(Some(to.id), &to.addr);
        let fixed = wire::HEADER_LEN + 4;
        let leaf = self.leaf_msg(Some(to.id), budget.saturating_sub(fixed));
        let bytes = self.encode(Message::Leave { seq: 0, leaf });
        self.send_budgeted(Some(to.id), &to.addr, bytes, true);
    }

    pub(crate) fn check_leave_done(&mut self, now: Instant) {
        let _ = now;
        if matches!(self.phase, Phase::Leaving { .. }) && !self.has_leave_flights() {
            self.finish_leave();
        }
    }

    pub(crate) fn on_leave_timer(&mut self, now: Instant, at: Instant) {
        let _ = now;
        if matches!(self.phase, Phase::Leaving { deadline } if deadline == at) {
            self.finish_leave();
        }
    }

    fn finish_leave(&mut self) {
        self.phase = Phase::Left;
        self.clear_flights();
        self.clear_probes();
        self.timers.clear();
        self.timers.shrink_to_fit();
        self.event(Event::Left);
    }

    pub(crate) fn on_leave(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        seq: u32,
        leaf: LeafSetMsg<A>,
        apps: &mut Apps<A>,
    ) {
        if seq != 0 {
            let ack = self.encode(Message::Ack { seq });
            self.send_budgeted(Some(sender.id), &sender.addr, ack, true);
        }
        // Only the member itself, at the address we verified for it, can say it leaves; and a
        // node we are probing at that address can answer our probe with its goodbye.
        let member = |p: &Peer<A>| p.handle.addr == sender.addr && p.is_verified();
        let in_leaf = self.leaf.get(sender.id).is_some_and(member);
        let in_table = self.table.find(sender.id).is_some_and(member);
        let probed = self
            .probes
            .get(&sender.addr)
            .is_some_and(|p| p.id == Some(sender.id));
        // A node we turned away from our leaf set is no longer one to take in unprobed (at
        // worst a forged goodbye costs a probe).
        self.declined
            .retain(|(d, _)| !(d.id == sender.id && d.addr == sender.addr));
        if !(in_leaf || in_table || probed) {
            self.counters.rejected += 1;
            return;
        }
        self.cancel_probe(now, &sender.addr, apps);
        self.mark_dead(sender.id, now);
        for h in leaf.cw.iter().chain(leaf.ccw.iter()) {
            self.consider_leaf(now, h);
        }
        if in_table && let Some((row, col)) = self.table.cell_of(sender.id) {
            self.table.remove(sender.id);
            // A spare that leaves, or an entry a spare succeeds, leaves no hole to repair.
            if self.table.get(row, col).is_none() {
                self.repair_table_cell(now, row, col);
            }
        }
        if in_leaf {
            let sides = self.leaf.sides_of(sender.id);
            if let Some(peer) = self.leaf.remove_departed(sender.id) {
                self.leaf_changed(now, apps, peer.handle, LeafChange::Left);
            }
            // The leaver's own leaf set (considered above) holds our replacement for it; ask
            // the farthest member only if that did not start filling the hole.
            if self.pending_leaf.is_empty() {
                self.repair_leaf(now, &sides);
            }
        }
        self.reroute_flights_to(now, sender.id, apps);
        self.retry_held(now, apps);
        self.check_active(now, apps);
    }
}

/// Whether the root, the members it names and the joiner leave a gap of more than half the
/// ring between two of them that are neighbours on it. Ids are uniform: among L nodes that
/// make a whole ring, the largest gap is a small fraction of it; in a larger ring, the root's
/// leaf set spans only a sliver.
fn leaves_half_the_ring_empty<A>(root: Id, leaf: &LeafSetMsg<A>, me: Id) -> bool {
    let mut ids: Vec<u128> = leaf
        .cw
        .iter()
        .chain(leaf.ccw.iter())
        .map(|h| h.id.as_u128())
        .chain([root.as_u128(), me.as_u128()])
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
        return false;
    };
    let wrap = first.wrapping_sub(last);
    let widest = ids
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([wrap])
        .max()
        .unwrap_or(0);
    ids.len() > 2 && widest > u128::MAX / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A point `f` of the way round the ring.
    fn at(f: f64) -> Id {
        Id::new((f * 2f64.powi(128)) as u128)
    }

    fn named(points: impl Iterator<Item = f64>) -> LeafSetMsg<u32> {
        let mut m = LeafSetMsg::default();
        for (i, f) in points.enumerate() {
            m.cw.push(NodeHandle::new(at(f), i as u32));
        }
        m
    }

    #[test]
    fn a_root_one_member_short_still_shows_a_ring_larger_than_a_leaf_set() {
        // Fifteen members within a thousandth of the ring around the root: what a root of a
        // large ring names when one of its sixteen is missing.
        let sliver = named((1..=15).map(|i| 0.3 + f64::from(i) * 0.00005));
        assert!(leaves_half_the_ring_empty(at(0.3), &sliver, at(0.3004)));
        // Fifteen nodes spread round the whole ring: a small ring, every node a neighbour.
        let whole = named((1..=15).map(|i| f64::from(i) / 16.0));
        assert!(!leaves_half_the_ring_empty(at(0.0), &whole, at(0.51)));
        // A root alone with the joiner says nothing either way.
        assert!(!leaves_half_the_ring_empty(
            at(0.1),
            &named(core::iter::empty()),
            at(0.9)
        ));
    }
}
