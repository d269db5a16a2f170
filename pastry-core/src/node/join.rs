//! Joining an overlay (relayed through the bootstrap node, the only member the joiner
//! contacted) and leaving it gracefully.

use alloc::vec::Vec;

use super::probes::{P_LEAF, P_VERIFY};
use super::{Apps, Core, Event, Phase, RouteFailure, TimerKind};
use crate::app::LeafChange;
use crate::peer::CONFIRMED;
use crate::wire::{self, LeafSetMsg, Message, RouteBody, RouteMsg};
use crate::{Address, Instant, LeafSet, NodeHandle, Peer};

/// Joins a bootstrap node relays at once.
const MAX_RELAYS: usize = 16;

/// A join the bootstrap node is relaying: what the path sends for `joiner` goes on to it.
pub(crate) struct Relay<A> {
    joiner: NodeHandle<A>,
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
        self.relays.push(Relay {
            joiner: sender.clone(),
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
        origin: &NodeHandle<A>,
        joiner: &NodeHandle<A>,
        first: usize,
        last: usize,
    ) {
        let rows = self.table_rows(first..=last, joiner.id);
        if rows.is_empty() {
            return;
        }
        self.send_join_state(now, origin, joiner, rows, None);
    }

    /// We are the root of a join: give the joiner our leaf set.
    pub(crate) fn join_root(
        &mut self,
        now: Instant,
        origin: &NodeHandle<A>,
        joiner: &NodeHandle<A>,
    ) {
        let leaf = self.leaf_msg(Some(joiner.id), self.cfg.max_datagram_size / 2);
        self.send_join_state(now, origin, joiner, Vec::new(), Some(leaf));
    }

    fn send_join_state(
        &mut self,
        now: Instant,
        origin: &NodeHandle<A>,
        joiner: &NodeHandle<A>,
        rows: Vec<wire::Row<A>>,
        leaf: Option<LeafSetMsg<A>>,
    ) {
        if origin.id == self.me.id {
            // We are the bootstrap node: pass it straight on.
            let me = self.me.clone();
            self.relay_to_joiner(now, &me, joiner, rows, leaf);
            return;
        }
        let max = self.cfg.max_datagram_size;
        let mut datagrams = Vec::new();
        if !rows.is_empty() {
            let me = self.me.id;
            let joiner_len = wire::handle_len(joiner) + 1;
            for part in wire::encode_rows(me, &rows, max - joiner_len) {
                if let Ok(d) = wire::Datagram::<A>::decode(&part, max)
                    && let Message::Rows { rows } = d.message
                {
                    datagrams.push(self.encode(Message::JoinState {
                        joiner: joiner.clone(),
                        rows,
                        leaf: None,
                    }));
                }
            }
        }
        if let Some(leaf) = leaf {
            datagrams.push(self.encode(Message::JoinState {
                joiner: joiner.clone(),
                rows: Vec::new(),
                leaf: Some(leaf),
            }));
        }
        // The origin reached us through a routed message from a verified node.
        for d in datagrams {
            self.send_verified(now, origin, d, true);
        }
    }

    /// What a node on a join's path sent for a joiner we are relaying.
    pub(crate) fn on_join_state(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        joiner: NodeHandle<A>,
        rows: Vec<wire::Row<A>>,
        leaf: Option<LeafSetMsg<A>>,
    ) {
        let relaying = self
            .relays
            .iter()
            .any(|r| r.until > now && r.joiner == joiner);
        // The sender need not be verified: what we relay goes only to a joiner that answered
        // our probe, and the joiner probes every node named before trusting it.
        if !relaying {
            self.counters.rejected += 1;
            return;
        }
        self.relay_to_joiner(now, &sender, &joiner, rows, leaf);
    }

    fn relay_to_joiner(
        &mut self,
        now: Instant,
        from: &NodeHandle<A>,
        joiner: &NodeHandle<A>,
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
        *replied = true;
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
        if attempt + 1 >= self.cfg.join_attempts {
            self.phase = Phase::Idle;
            self.pending_leaf.clear();
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

    pub(crate) fn become_active(&mut self, now: Instant, apps: &mut Apps<A>) {
        self.phase = Phase::Active;
        self.pending_leaf = Vec::new();
        self.event(Event::Active);
        let hb = self.jitter(self.cfg.heartbeat_period, 50);
        self.heartbeat_at = now + hb;
        self.schedule(self.heartbeat_at, TimerKind::Heartbeat);
        // A new node's table holds only what its join path knew: refresh it soon, then
        // every maintenance period.
        let mt = self.jitter(self.cfg.maintenance_period / 5, 50);
        self.maintenance_at = now + mt;
        self.schedule(self.maintenance_at, TimerKind::Maintenance);
        self.retry_held(now, apps);
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
        self.clear_flights();
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
        // Whatever we were asking of the leaver will not be answered.
        self.cancel_probe(now, &sender.addr, apps);
        if self.is_verified(Some(sender.id), &sender.addr) {
            for h in leaf.cw.iter().chain(leaf.ccw.iter()) {
                self.consider_leaf(now, h);
            }
        }
        let sides = self.leaf.sides_of(sender.id);
        let in_leaf = self.leaf.remove(sender.id);
        let in_table = self
            .table
            .cell_of(sender.id)
            .filter(|_| self.table.find(sender.id).is_some());
        self.mark_dead(sender.id, now);
        if in_leaf.is_none() && in_table.is_none() {
            self.check_active(now, apps);
            return;
        }
        if let Some((row, col)) = in_table {
            self.table.remove(sender.id);
            self.repair_table_cell(now, row, col);
        }
        if let Some(peer) = in_leaf {
            self.leaf_changed(now, apps, peer.handle, LeafChange::Left);
            // The leaver's own leaf set (considered above) holds our replacement for it; ask
            // the farthest member only if that did not start filling the hole.
            if self.pending_leaf.is_empty() {
                self.repair_leaf(now, &sides);
            }
        }
        self.reroute_flights_to(now, sender.id, apps);
        self.retry_held(now, apps);
    }
}
