//! Membership: probes and address verification, the leaf set's upkeep (heartbeats, failure
//! detection, repair), routing-table maintenance, join and graceful leave.

use alloc::vec::Vec;
use core::ops::RangeInclusive;
use core::time::Duration;

use super::{Apps, Core, Event, Phase, RouteFailure, TimerKind};
use crate::app::LeafChange;
use crate::leafset::Side;
use crate::peer::{CONFIRMED, SUSPECT};
use crate::table::TableInsert;
use crate::wire::{self, LeafSetMsg, Message};
use crate::{Address, Id, Instant, LeafSet, NodeHandle, Peer, Rtt};

/// The probe is a leaf-set probe: it carries our leaf set and the reply carries theirs; on
/// reply the node enters our leaf set.
pub(crate) const P_LEAF: u8 = 1;
/// On reply the node is offered to the routing table.
pub(crate) const P_TABLE: u8 = 2;
/// The node went silent; no reply means it is dead.
pub(crate) const P_LIVE: u8 = 4;
/// Datagrams wait for the node's address to answer.
pub(crate) const P_VERIFY: u8 = 8;
/// The suspicion came from another node's failure notice: if confirmed, do not notify again.
pub(crate) const P_NOTICED: u8 = 16;

/// Datagrams that may wait for one address to be verified.
const MAX_QUEUED: usize = 16;

/// A probe as received.
pub(crate) struct Probe<A> {
    pub(crate) nonce: u32,
    pub(crate) leaf: Option<LeafSetMsg<A>>,
    pub(crate) failed: Vec<Id>,
}

pub(crate) struct ProbeState<A> {
    id: Id,
    nonce: u32,
    purpose: u8,
    bytes: Vec<u8>,
    attempts: u8,
    sent_at: Instant,
    deadline: Instant,
    queued: Vec<Vec<u8>>,
    flights: Vec<u32>,
    _addr: core::marker::PhantomData<A>,
}

impl<A> ProbeState<A> {
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.queued.iter().map(Vec::capacity).sum::<usize>()
            + self.queued.capacity() * core::mem::size_of::<Vec<u8>>()
            + self.flights.capacity() * 4
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

    /// Padding that makes a request worth a full leaf-set reply under the 3x limit.
    fn padding_for(&self, request_len: usize, reply_max: usize) -> u16 {
        let want = reply_max.div_ceil(3);
        u16::try_from(want.saturating_sub(request_len)).unwrap_or(u16::MAX)
    }

    fn leaf_reply_max(&self) -> usize {
        wire::HEADER_LEN + 4 + 1 + 2 + self.cfg.leaf_set_size * (16 + A::MAX_ENCODED_LEN)
    }

    // ----- probes and verification -----

    /// Probes `to`, or adds `purpose` to a probe already under way. `failed` names nodes we
    /// found dead (a failure notice).
    pub(crate) fn probe(&mut self, now: Instant, to: &NodeHandle<A>, purpose: u8, failed: &[Id]) {
        if to.id == self.me.id {
            return;
        }
        if let Some(p) = self.probes.get_mut(&to.addr) {
            let gains_leaf = purpose & P_LEAF != 0 && p.purpose & P_LEAF == 0;
            // "Noticed" holds only if every reason for the probe came from a notice.
            let noticed = p.purpose & purpose & P_NOTICED;
            p.purpose = ((p.purpose | purpose) & !P_NOTICED) | noticed;
            if gains_leaf || !failed.is_empty() {
                // A fresh nonce: a reply to the earlier, plain probe must not pass for an
                // answer to the leaf-set probe.
                let with_leaf = p.purpose & P_LEAF != 0;
                let nonce = self.random() as u32;
                let bytes = self.probe_bytes(nonce, with_leaf, failed);
                if let Some(p) = self.probes.get_mut(&to.addr) {
                    p.bytes = bytes.clone();
                    p.nonce = nonce;
                }
                self.transmit(to.addr.clone(), bytes, true);
            }
            if gains_leaf && !self.pending_leaf.contains(&to.id) {
                self.pending_leaf.push(to.id);
            }
            return;
        }
        if self.probes.len() >= self.cfg.max_probes {
            return;
        }
        let nonce = self.random() as u32;
        let bytes = self.probe_bytes(nonce, purpose & P_LEAF != 0, failed);
        let deadline = now + self.rto_for(to.id, 1);
        self.probes.insert(
            to.addr.clone(),
            ProbeState {
                id: to.id,
                nonce,
                purpose,
                bytes: bytes.clone(),
                attempts: 1,
                sent_at: now,
                deadline,
                queued: Vec::new(),
                flights: Vec::new(),
                _addr: core::marker::PhantomData,
            },
        );
        if purpose & P_LEAF != 0 && !self.pending_leaf.contains(&to.id) {
            self.pending_leaf.push(to.id);
        }
        self.counters.probes_sent += 1;
        self.schedule(deadline, TimerKind::Probe(to.addr.clone()));
        self.transmit(to.addr.clone(), bytes, true);
    }

    fn probe_bytes(&self, nonce: u32, with_leaf: bool, failed: &[Id]) -> Vec<u8> {
        let max = self.cfg.max_datagram_size;
        let leaf = with_leaf.then(|| self.leaf_msg(None, max));
        let mut failed: Vec<Id> = failed.iter().copied().take(wire::MAX_FAILED).collect();
        let base = |leaf: &Option<LeafSetMsg<A>>, failed: &[Id]| {
            wire::HEADER_LEN
                + 4
                + 1
                + leaf.as_ref().map_or(0, wire::leaf_len)
                + 1
                + 16 * failed.len()
                + 2
        };
        while base(&leaf, &failed) > max {
            failed.pop();
        }
        let len = base(&leaf, &failed);
        let padding = if with_leaf {
            self.padding_for(len, self.leaf_reply_max())
                .min(u16::try_from(max - len).unwrap_or(u16::MAX))
        } else {
            0
        };
        self.encode(Message::Probe {
            nonce,
            leaf,
            failed,
            padding,
        })
    }

    /// Sends a control datagram once `to`'s address is verified (at once if it is).
    pub(crate) fn send_verified(&mut self, now: Instant, to: &NodeHandle<A>, bytes: Vec<u8>) {
        if self.is_verified(to.id, &to.addr) {
            self.transmit(to.addr.clone(), bytes, true);
            return;
        }
        self.probe(now, to, P_VERIFY, &[]);
        if let Some(p) = self.probes.get_mut(&to.addr)
            && p.queued.len() < MAX_QUEUED
        {
            p.queued.push(bytes);
        }
    }

    /// Parks a message in flight until `to`'s address is verified.
    pub(crate) fn verify_then_flight(&mut self, now: Instant, to: &NodeHandle<A>, seq: u32) {
        self.probe(now, to, P_VERIFY, &[]);
        match self.probes.get_mut(&to.addr) {
            Some(p) if p.flights.len() < MAX_QUEUED => p.flights.push(seq),
            // No probe slot: try the send anyway; the retransmission logic copes.
            _ => self.transmit_flight(now, seq),
        }
    }

    pub(crate) fn on_probe(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        len: usize,
        probe: Probe<A>,
        apps: &mut Apps<A>,
    ) {
        let Probe {
            nonce,
            leaf,
            failed,
        } = probe;
        let verified = self.is_verified(sender.id, &sender.addr);
        let budget = if verified {
            self.cfg.max_datagram_size
        } else {
            3 * len
        };
        let reply_leaf = leaf.as_ref().map(|_| {
            let fixed = wire::HEADER_LEN + 4 + 1;
            let m = self.leaf_msg(Some(sender.id), budget.saturating_sub(fixed));
            if m.cw.len() + m.ccw.len() < self.leaf.len().saturating_sub(1) {
                self.counters.amplification_limited += 1;
            }
            m
        });
        let reply = self.encode(Message::ProbeReply {
            nonce,
            leaf: reply_leaf,
        });
        if reply.len() <= budget {
            self.transmit(sender.addr.clone(), reply, true);
        } else {
            self.counters.amplification_limited += 1;
        }
        match leaf {
            Some(l) => {
                // The sender says it belongs in our leaf set: first-hand news, taken at once so
                // that it is known here before it can become active.
                if self.leaf.contains(sender.id) || self.leaf.would_accept(sender.id) {
                    self.add_leaf(now, apps, Peer::new(sender.clone()));
                }
                self.consider_table(now, &sender, false);
                for h in l.cw.iter().chain(l.ccw.iter()) {
                    self.consider_leaf(now, h);
                }
            }
            None => self.consider_table(now, &sender, false),
        }
        for f in failed {
            if f != self.me.id {
                self.suspect_id(now, f, true);
            }
        }
    }

    pub(crate) fn on_probe_reply(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        nonce: u32,
        leaf: Option<LeafSetMsg<A>>,
        apps: &mut Apps<A>,
    ) {
        match self.probes.get(&sender.addr) {
            Some(p) if p.nonce == nonce => {}
            _ => return,
        }
        let Some(p) = self.probes.remove(&sender.addr) else {
            return;
        };
        self.pending_leaf.retain(|id| *id != p.id);
        Self::trim(&mut self.probes);
        if p.id != sender.id {
            // Someone else answers at that address now: the node we probed is gone.
            self.declare_dead(now, p.id, true, apps);
        }
        self.remember_verified(sender.id, &sender.addr);
        let rtt = (p.attempts == 1).then(|| now - p.sent_at);
        if let Some(r) = rtt {
            self.rtt_sample(sender.id, &sender.addr, r);
        }
        let was_suspect = self.clear_suspect(sender.id);
        let peer = Peer::verified(
            sender.clone(),
            rtt.map(Rtt::from_sample).unwrap_or_default(),
        );
        if p.purpose & P_LEAF != 0 && leaf.is_some() {
            let mut confirmed = peer.clone();
            confirmed.set_flag(CONFIRMED, true);
            self.add_leaf(now, apps, confirmed);
        } else if self.leaf.contains(sender.id) {
            self.add_leaf(now, apps, peer.clone());
        } else if self.leaf.would_accept(sender.id) {
            // Learned from elsewhere but belongs in our leaf set: exchange leaf sets first.
            self.probe(now, &sender, P_LEAF, &[]);
        }
        self.offer_table(peer);
        if let Some(l) = leaf {
            for h in l.cw.iter().chain(l.ccw.iter()) {
                self.consider_leaf(now, h);
            }
        }
        for bytes in p.queued {
            self.transmit(sender.addr.clone(), bytes, true);
        }
        for seq in p.flights {
            self.transmit_flight(now, seq);
        }
        if was_suspect {
            self.retry_held(now, apps);
        }
        if self.is_active() {
            self.continue_repair(now);
        }
        self.check_active(now, apps);
    }

    pub(crate) fn on_probe_timer(
        &mut self,
        now: Instant,
        at: Instant,
        addr: A,
        apps: &mut Apps<A>,
    ) {
        let Some(p) = self.probes.get_mut(&addr) else {
            return;
        };
        if p.deadline != at {
            return;
        }
        if p.attempts <= self.cfg.probe_retries {
            p.attempts += 1;
            let (id, attempts, bytes) = (p.id, p.attempts, p.bytes.clone());
            let deadline = now + self.rto_for(id, attempts);
            if let Some(p) = self.probes.get_mut(&addr) {
                p.deadline = deadline;
            }
            self.counters.retransmitted += 1;
            self.schedule(deadline, TimerKind::Probe(addr.clone()));
            self.transmit(addr, bytes, true);
            return;
        }
        let Some(p) = self.probes.remove(&addr) else {
            return;
        };
        self.pending_leaf.retain(|id| *id != p.id);
        Self::trim(&mut self.probes);
        let known = |p: Option<&Peer<A>>| p.is_some_and(|q| q.handle.addr == addr);
        if known(self.leaf.get(p.id)) || known(self.table.find(p.id)) {
            self.declare_dead(now, p.id, p.purpose & P_NOTICED == 0, apps);
        }
        for seq in p.flights {
            self.flight_failed(now, seq, apps);
        }
        if self.is_active() {
            self.continue_repair(now);
        }
        self.check_active(now, apps);
    }

    // ----- knowledge of other nodes -----

    pub(crate) fn heard_from(&mut self, now: Instant, sender: &NodeHandle<A>) {
        self.leaf.update(sender.id, |e| {
            if e.peer.handle.addr == sender.addr {
                e.last_heard = now;
            }
        });
    }

    pub(crate) fn rtt_sample(&mut self, id: Id, addr: &A, sample: Duration) {
        self.leaf.update(id, |e| {
            if &e.peer.handle.addr == addr {
                e.peer.rtt.sample(sample);
            }
        });
        self.table.update(id, |p| {
            if &p.handle.addr == addr {
                p.rtt.sample(sample);
            }
        });
    }

    fn clear_suspect(&mut self, id: Id) -> bool {
        let mut was = false;
        self.leaf.update(id, |e| {
            was |= e.peer.is_suspect();
            e.peer.set_flag(SUSPECT, false);
        });
        self.table.update(id, |p| {
            was |= p.is_suspect();
            p.set_flag(SUSPECT, false);
        });
        was
    }

    /// Marks a known node as suspect and probes it; no answer declares it dead.
    pub(crate) fn suspect(&mut self, now: Instant, node: &NodeHandle<A>, noticed: bool) {
        let mut known = false;
        self.leaf.update(node.id, |e| {
            if e.peer.handle.addr == node.addr {
                e.peer.set_flag(SUSPECT, true);
                known = true;
            }
        });
        self.table.update(node.id, |p| {
            if p.handle.addr == node.addr {
                p.set_flag(SUSPECT, true);
                known = true;
            }
        });
        if known {
            let purpose = P_LIVE | if noticed { P_NOTICED } else { 0 };
            self.probe(now, node, purpose, &[]);
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

    /// Removes a node that failed to answer. If we found the failure ourselves (`notify`),
    /// our leaf set hears of it through leaf-set probes that also fetch material for repair;
    /// otherwise we only repair our own holes.
    pub(crate) fn declare_dead(&mut self, now: Instant, id: Id, notify: bool, apps: &mut Apps<A>) {
        let sides = self.leaf.sides_of(id);
        // The dead node's ring neighbours between them reach every node that held it, so they
        // pass the news on even when they heard it from someone else.
        let adjacent = [Side::Cw, Side::Ccw]
            .into_iter()
            .any(|s| self.leaf.neighbour(s).is_some_and(|p| p.id() == id));
        let notify = notify || adjacent;
        let in_leaf = self.leaf.remove(id);
        let in_table = self
            .table
            .cell_of(id)
            .filter(|_| self.table.find(id).is_some());
        if in_leaf.is_none() && in_table.is_none() {
            return;
        }
        self.counters.failures_detected += 1;
        self.mark_dead(id, now);
        if let Some((row, col)) = in_table {
            self.table.remove(id);
            self.repair_table_cell(now, row, col);
        }
        if let Some(peer) = in_leaf {
            self.leaf_changed(now, apps, peer.handle, LeafChange::Failed);
            if notify {
                let members: Vec<NodeHandle<A>> =
                    self.leaf.members().map(|p| p.handle.clone()).collect();
                for m in members {
                    self.probe(now, &m, P_LEAF, &[id]);
                }
            } else {
                self.repair_leaf(now, &sides);
            }
        }
        self.reroute_flights_to(now, id, apps);
        self.retry_held(now, apps);
    }

    /// Asks the farthest member of each side with a hole for its leaf set.
    fn repair_leaf(&mut self, now: Instant, sides: &[Side]) {
        for &side in sides {
            if self.leaf.needs_repair(side)
                && let Some(far) = self.leaf.farthest(side).map(|p| p.handle.clone())
            {
                self.repair_asked[side_index(side)] = Some(far.id);
                self.probe(now, &far, P_LEAF, &[]);
            }
        }
    }

    /// Keeps a repair going: while a side still has a hole and no leaf-set probe is out, ask
    /// its farthest member again, if that member is new (an answer moved the edge outwards).
    fn continue_repair(&mut self, now: Instant) {
        if !self.pending_leaf.is_empty() {
            return;
        }
        for side in [Side::Cw, Side::Ccw] {
            if !self.leaf.needs_repair(side) {
                continue;
            }
            let far = self.leaf.farthest(side).map(|p| p.handle.clone());
            if let Some(far) = far
                && self.repair_asked[side_index(side)] != Some(far.id)
            {
                self.repair_asked[side_index(side)] = Some(far.id);
                self.probe(now, &far, P_LEAF, &[]);
            }
        }
    }

    pub(crate) fn add_leaf(&mut self, now: Instant, apps: &mut Apps<A>, peer: Peer<A>) {
        let handle = peer.handle.clone();
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

    /// Probes a node we heard of if it belongs in our leaf set and is not being probed yet
    /// (probes already under way count as if they were members).
    pub(crate) fn consider_leaf(&mut self, now: Instant, h: &NodeHandle<A>) {
        if h.id == self.me.id || self.leaf.contains(h.id) || self.probes.contains_key(&h.addr) {
            return;
        }
        if !self.leaf_wants(h.id) || self.recently_dead(h.id, now) {
            return;
        }
        self.probe(now, h, P_LEAF, &[]);
    }

    /// Whether `id` would be among the L/2 nearest on a side, counting members and nodes
    /// with a leaf-set probe under way.
    fn leaf_wants(&self, id: Id) -> bool {
        let own = self.me.id;
        let half = self.leaf.half();
        [Side::Cw, Side::Ccw].into_iter().any(|side| {
            let dist = |x: Id| match side {
                Side::Cw => own.cw_distance(x),
                Side::Ccw => x.cw_distance(own),
            };
            let d = dist(id);
            let closer = self
                .leaf
                .side_peers(side)
                .filter(|p| dist(p.id()) < d)
                .count()
                + self
                    .pending_leaf
                    .iter()
                    .filter(|p| !self.leaf.contains(**p) && dist(**p) < d)
                    .count();
            closer < half
        })
    }

    /// Probes a node we heard of if it would fill an empty routing-table cell, or (when
    /// `improve` and the maintenance budget allows) if it might be nearer than the current one.
    pub(crate) fn consider_table(&mut self, now: Instant, h: &NodeHandle<A>, improve: bool) {
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
        if !(empty || improve && self.pns_budget > 0) {
            return;
        }
        if self.recently_dead(h.id, now) {
            return;
        }
        if !empty {
            self.pns_budget -= 1;
        }
        self.probe(now, h, P_TABLE, &[]);
    }

    fn offer_table(&mut self, peer: Peer<A>) {
        let _: TableInsert<A> = self.table.insert(peer);
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
            self.consider_leaf(now, &sender);
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
        let msg = self.leaf_msg(None, self.cfg.max_datagram_size);
        let mut sent: Option<Id> = None;
        for side in [Side::Cw, Side::Ccw] {
            let Some(e) = self
                .leaf
                .neighbour(side)
                .and_then(|p| self.leaf.entry(p.id()))
            else {
                continue;
            };
            let (handle, silent, suspect) = (
                e.peer.handle.clone(),
                now - e.last_heard > self.cfg.failure_timeout,
                e.peer.is_suspect(),
            );
            if sent != Some(handle.id) {
                let bytes = self.encode(Message::Heartbeat { leaf: msg.clone() });
                self.send_verified(now, &handle, bytes);
                sent = Some(handle.id);
            }
            if silent && !suspect {
                self.suspect(now, &handle, false);
            }
        }
        self.repair_asked = [None, None];
        self.repair_leaf(now, &[Side::Cw, Side::Ccw]);
    }

    // ----- routing-table maintenance -----

    pub(crate) fn on_maintenance_timer(&mut self, now: Instant) {
        let period = self.jitter(self.cfg.maintenance_period, 20);
        self.maintenance_at = now + period;
        self.schedule(self.maintenance_at, TimerKind::Maintenance);
        if !self.is_active() {
            return;
        }
        self.pns_budget = self.cfg.maintenance_probes;
        for row in 0..self.table.row_count() {
            let n = self.table.row(row).count();
            if n == 0 {
                continue;
            }
            let pick = (self.random() % n as u64) as usize;
            let h = self.table.row(row).nth(pick).map(|p| p.handle.clone());
            if let Some(h) = h {
                self.request_row(now, &h, row);
            }
        }
    }

    fn request_row(&mut self, now: Instant, to: &NodeHandle<A>, row: usize) {
        let Ok(row) = u8::try_from(row) else { return };
        let base = wire::HEADER_LEN + 1 + 2;
        let reply_max =
            wire::HEADER_LEN + 1 + 2 + (1usize << self.cfg.b) * (16 + A::MAX_ENCODED_LEN);
        let padding = self.padding_for(base, reply_max);
        let bytes = self.encode(Message::RowRequest { row, padding });
        self.send_verified(now, to, bytes);
    }

    /// A table entry died: ask another node of the same row (or of the next) for its row,
    /// which may hold a replacement for the empty cell.
    fn repair_table_cell(&mut self, now: Instant, row: usize, col: u8) {
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

    pub(crate) fn on_row_request(&mut self, sender: NodeHandle<A>, len: usize, row: u8) {
        let budget = if self.is_verified(sender.id, &sender.addr) {
            self.cfg.max_datagram_size
        } else {
            (3 * len).min(self.cfg.max_datagram_size)
        };
        let entries: Vec<NodeHandle<A>> = self
            .table
            .row(usize::from(row))
            .filter(|p| p.id() != sender.id && !p.is_suspect())
            .map(|p| p.handle.clone())
            .collect();
        let parts = wire::encode_rows(self.me.id, &[(row, entries)], budget);
        let verified = budget == self.cfg.max_datagram_size;
        for (i, bytes) in parts.into_iter().enumerate() {
            if i > 0 && !verified {
                self.counters.amplification_limited += 1;
                break;
            }
            self.transmit(sender.addr.clone(), bytes, true);
        }
    }

    pub(crate) fn on_rows(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        rows: Vec<(u8, Vec<NodeHandle<A>>)>,
    ) {
        self.consider_table(now, &sender, false);
        self.consider_leaf(now, &sender);
        for (_, entries) in rows {
            for h in &entries {
                self.consider_table(now, h, true);
                self.consider_leaf(now, h);
            }
        }
    }

    /// Sends rows `range` of our table to a joining node.
    pub(crate) fn send_rows(
        &mut self,
        now: Instant,
        to: &NodeHandle<A>,
        range: RangeInclusive<usize>,
    ) {
        let rows: Vec<(u8, Vec<NodeHandle<A>>)> = range
            .filter_map(|r| {
                let entries: Vec<NodeHandle<A>> = self
                    .table
                    .row(r)
                    .filter(|p| p.id() != to.id && !p.is_suspect())
                    .map(|p| p.handle.clone())
                    .collect();
                (!entries.is_empty()).then(|| (u8::try_from(r).unwrap_or(u8::MAX), entries))
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        for bytes in wire::encode_rows(self.me.id, &rows, self.cfg.max_datagram_size) {
            self.send_verified(now, to, bytes);
        }
    }

    // ----- join -----

    pub(crate) fn start_join(&mut self, now: Instant, bootstrap: A, attempt: u8) {
        let deadline = now + self.cfg.join_timeout;
        self.phase = Phase::Joining {
            bootstrap: bootstrap.clone(),
            attempt,
            deadline,
            replied: false,
        };
        self.schedule(deadline, TimerKind::Join);
        let bytes = self.encode(Message::JoinRequest);
        self.transmit(bootstrap, bytes, true);
    }

    pub(crate) fn on_join_request(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        apps: &mut Apps<A>,
    ) {
        if !self.is_active() {
            self.counters.rejected += 1;
            return;
        }
        let id = self.next_message_id();
        let msg = wire::RouteMsg {
            seq: 0,
            origin: self.me.clone(),
            msg_seq: id.seq,
            key: sender.id,
            hops: 0,
            body: wire::RouteBody::Join {
                joiner: sender,
                next_row: 0,
            },
        };
        self.seen.insert(now, id.origin, id.seq);
        self.process_route(now, apps, msg, false, None);
    }

    /// The root of a join answers the joiner with its leaf set.
    pub(crate) fn send_join_reply(&mut self, now: Instant, joiner: &NodeHandle<A>) {
        let leaf = self.leaf_msg(
            Some(joiner.id),
            self.cfg.max_datagram_size - wire::HEADER_LEN,
        );
        let bytes = self.encode(Message::JoinReply { leaf });
        self.send_verified(now, joiner, bytes);
    }

    pub(crate) fn on_join_reply(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        leaf: LeafSetMsg<A>,
        apps: &mut Apps<A>,
    ) {
        let Phase::Joining { replied, .. } = &mut self.phase else {
            return;
        };
        *replied = true;
        // The leaf set this node should have, as far as the root knows: probe each member.
        let mut view: LeafSet<A> = LeafSet::new(self.me.id, self.cfg.leaf_set_size);
        for h in core::iter::once(&sender)
            .chain(leaf.cw.iter())
            .chain(leaf.ccw.iter())
        {
            view.insert(Peer::new(h.clone()), now);
        }
        let members: Vec<NodeHandle<A>> = view.members().map(|p| p.handle.clone()).collect();
        for m in members {
            if !self.leaf.contains(m.id) {
                self.probe(now, &m, P_LEAF, &[]);
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
                self.probe(now, &h, P_LEAF, &[]);
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
        let mt = self.jitter(self.cfg.maintenance_period, 50);
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
        self.probes.clear();
        self.probes.shrink_to_fit();
        self.pending_leaf = Vec::new();
        self.schedule(deadline, TimerKind::Leave);
        let members: Vec<NodeHandle<A>> = self.leaf.members().map(|p| p.handle.clone()).collect();
        for m in members {
            self.send_flight(now, m, super::routing::FlightKind::Leave);
        }
        self.check_leave_done(now);
    }

    /// Tells a node that contacted a leaving node that it is leaving.
    pub(crate) fn answer_with_leave(&mut self, to: &NodeHandle<A>, request_len: usize) {
        let budget = if self.is_verified(to.id, &to.addr) {
            self.cfg.max_datagram_size
        } else {
            3 * request_len
        };
        let fixed = wire::HEADER_LEN + 4;
        let leaf = self.leaf_msg(Some(to.id), budget.saturating_sub(fixed));
        let bytes = self.encode(Message::Leave { seq: 0, leaf });
        if bytes.len() <= budget {
            self.transmit(to.addr.clone(), bytes, true);
        } else {
            self.counters.amplification_limited += 1;
        }
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
        self.probes.clear();
        self.probes.shrink_to_fit();
        self.pending_leaf.clear();
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
            self.transmit(sender.addr.clone(), ack, true);
        }
        // Whatever we were asking of the leaver will not be answered.
        if let Some(p) = self.probes.remove(&sender.addr) {
            self.pending_leaf.retain(|id| *id != p.id);
            for seq in p.flights {
                self.flight_failed(now, seq, apps);
            }
        }
        for h in leaf.cw.iter().chain(leaf.ccw.iter()) {
            self.consider_leaf(now, h);
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

fn side_index(side: Side) -> usize {
    match side {
        Side::Cw => 0,
        Side::Ccw => 1,
    }
}
