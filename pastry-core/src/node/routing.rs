//! Routing: the forwarding path, per-hop acknowledgements and retransmission, rerouting
//! around silent hops, messages held until a route exists, and delivery.

use alloc::vec::Vec;
use core::time::Duration;

use super::{Apps, Core, Event, Phase, RouteFailure, SendFailure, TimerKind, app_view};
use crate::app::{Context, Forward, MessageId, RouteMessage};
use crate::route::{NextHop, Via, next_hop};
use crate::wire::{Message, RouteBody, RouteMsg, encode_route};
use crate::{Address, Id, Instant, NodeHandle};

fn wire_overhead() -> usize {
    crate::wire::HEADER_LEN + 4
}

/// Routes in a consistent overlay take at most one hop per digit plus the leaf-set hop; a
/// message past this bound is circling through inconsistent state and is dropped.
pub(crate) const MAX_HOPS: u8 = 200;

pub(crate) enum FlightKind<A> {
    Route {
        msg: RouteMsg<A>,
        via: Via,
    },
    Direct {
        id: MessageId,
        app: u16,
        payload: Vec<u8>,
    },
    Leave,
}

/// A message sent to one next hop and not yet acknowledged.
pub(crate) struct InFlight<A> {
    pub(crate) to: NodeHandle<A>,
    pub(crate) kind: FlightKind<A>,
    attempts: u8,
    sent_at: Instant,
    /// `Instant::MAX` while the destination's address is being verified.
    deadline: Instant,
}

impl<A> InFlight<A> {
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.kind {
            FlightKind::Route { msg, .. } => match &msg.body {
                RouteBody::App { payload, .. } => payload.capacity(),
                _ => 0,
            },
            FlightKind::Direct { payload, .. } => payload.capacity(),
            FlightKind::Leave => 0,
        }
    }

    pub(crate) fn is_leave(&self) -> bool {
        matches!(self.kind, FlightKind::Leave)
    }
}

/// A direct message as received.
pub(crate) struct Direct {
    pub(crate) msg_seq: u32,
    pub(crate) app: u16,
    pub(crate) payload: Vec<u8>,
}

/// A message waiting here for a route, for this node to become active, or for a suspected
/// leaf-set member to be confirmed alive or dead.
pub(crate) struct Held<A> {
    msg: RouteMsg<A>,
    expires: Instant,
}

enum Decision<A> {
    Deliver,
    Hold,
    Forward(NodeHandle<A>, Via),
}

impl<A: Address> Core<A> {
    /// Starts routing a message this node originates.
    pub(crate) fn route_new(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        id: MessageId,
        app: u16,
        key: Id,
        payload: Vec<u8>,
    ) {
        let msg = RouteMsg {
            seq: 0,
            origin: self.me.clone(),
            msg_seq: id.seq,
            key,
            hops: 0,
            body: RouteBody::App { app, payload },
        };
        self.seen.insert(now, id.origin, id.seq);
        self.process_route(now, apps, msg, true, None);
    }

    pub(crate) fn on_route(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        mut msg: RouteMsg<A>,
        apps: &mut Apps<A>,
    ) {
        // Acknowledge every copy, so that a sender whose acknowledgement was lost stops
        // retransmitting; forward only the first.
        let ack = self.encode(Message::Ack { seq: msg.seq });
        self.send_budgeted(Some(sender.id), &sender.addr, ack, true);
        if !self.seen.insert(now, msg.origin.id, msg.msg_seq) {
            self.counters.duplicates += 1;
            return;
        }
        msg.hops = msg.hops.saturating_add(1);
        if msg.hops > MAX_HOPS {
            self.route_failed(&msg, RouteFailure::HopLimit);
            return;
        }
        self.process_route(now, apps, msg, true, None);
    }

    fn decide(&self, msg: &RouteMsg<A>) -> Decision<A> {
        let exclude = match &msg.body {
            RouteBody::Join { joiner, .. } => Some(joiner.id),
            _ => None,
        };
        match next_hop(msg.key, self.me.id, &self.leaf, &self.table, exclude) {
            NextHop::Local if self.is_active() => Decision::Deliver,
            // Two nodes joining at once with neighbouring ids may each be the other's root.
            // Holding the other's join until we are active would deadlock both joins; answer
            // with the leaf set we have instead, once our own root has answered (so the leaf
            // set is that of our neighbourhood) and it spans the joiner's id: the joiner
            // confirms every leaf-set member itself before it becomes active, so a partial
            // answer costs probes, not consistency. A joining node that has not heard from
            // its root holds the join like any message, until it can route it.
            NextHop::Local
                if matches!(msg.body, RouteBody::Join { .. })
                    && matches!(self.phase, Phase::Joining { replied: true, .. })
                    && !self.leaf.is_empty()
                    && self.leaf.in_range(msg.key) =>
            {
                Decision::Deliver
            }
            NextHop::Local | NextHop::NoRoute => Decision::Hold,
            // A suspected leaf-set member may still be the key's root: wait for the verdict.
            NextHop::Forward(p, _) if p.is_suspect() => Decision::Hold,
            NextHop::Forward(p, via) => Decision::Forward(p.handle.clone(), via),
        }
    }

    /// Decides what to do with a message at this node and does it. `upcall` says whether the
    /// forward upcall runs (not when a message is merely resent around a silent hop).
    /// `expires` carries a held message's original deadline.
    pub(crate) fn process_route(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        mut msg: RouteMsg<A>,
        upcall: bool,
        expires: Option<Instant>,
    ) {
        if let RouteBody::Join {
            joiner,
            next_row,
            tag,
        } = &mut msg.body
        {
            if joiner.id == self.me.id {
                return;
            }
            // Every node on a join's path gives the joiner the rows it has in common with it.
            let shared = self.me.id.shared_prefix_len(joiner.id, self.cfg.b);
            if usize::from(*next_row) <= shared && self.is_active() {
                let first = usize::from(*next_row);
                *next_row = u8::try_from(shared + 1).unwrap_or(u8::MAX);
                let (origin, joiner, tag) = (msg.origin.clone(), joiner.clone(), *tag);
                self.join_hop(now, apps, &origin, (&joiner, tag), (first, shared));
            }
        }
        match self.decide(&msg) {
            Decision::Deliver => self.deliver(now, apps, msg),
            Decision::Hold => self.hold(now, msg, expires),
            Decision::Forward(next, via) => {
                if via == Via::Rare {
                    self.fill_cell_for(now, msg.key);
                }
                self.forward(now, apps, msg, next, via, upcall)
            }
        }
    }

    fn forward(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        mut msg: RouteMsg<A>,
        mut next: NodeHandle<A>,
        mut via: Via,
        upcall: bool,
    ) {
        if upcall && let RouteBody::App { app, payload } = &mut msg.body {
            let app_id = *app;
            if let Some(slot) = apps.iter().position(|s| s.id == app_id) {
                let mut view = RouteMessage {
                    id: MessageId {
                        origin: msg.origin.id,
                        seq: msg.msg_seq,
                    },
                    origin: msg.origin.clone(),
                    key: msg.key,
                    app: app_id,
                    hops: msg.hops,
                    payload: core::mem::take(payload),
                };
                let chosen = next.id;
                let verdict = {
                    let mut ctx = Context {
                        core: self,
                        app: app_id,
                        slot,
                        now,
                    };
                    apps[slot].app.forward(&mut ctx, &mut view, &mut next)
                };
                *payload = view.payload;
                if verdict == Forward::Stop {
                    return;
                }
                if next.id == self.me.id {
                    self.deliver(now, apps, msg);
                    return;
                }
                if next.id != chosen {
                    // The application chose the hop; if it stays silent, route normally.
                    via = Via::Table;
                }
            }
        }
        self.counters.forwarded += 1;
        self.send_route(now, msg, next, via);
    }

    fn deliver(&mut self, now: Instant, apps: &mut Apps<A>, msg: RouteMsg<A>) {
        match msg.body {
            RouteBody::Join { joiner, tag, .. } => {
                self.join_root(now, apps, &msg.origin, (&joiner, tag))
            }
            RouteBody::JoinState {
                tag,
                joiner,
                rows,
                leaf,
            } => self.deliver_join_state(now, &msg.origin, &joiner, tag, rows, leaf),
            RouteBody::Lookup { lookup } => {
                self.counters.delivered += 1;
                self.serve_lookup(now, apps, msg.origin, msg.key, lookup, msg.hops)
            }
            RouteBody::LookupReply {
                lookup,
                key,
                root,
                hops,
            } => self.lookup_reply_delivered(msg.key, lookup, key, root, hops),
            RouteBody::App { app, payload } => {
                self.counters.delivered += 1;
                let view = RouteMessage {
                    id: MessageId {
                        origin: msg.origin.id,
                        seq: msg.msg_seq,
                    },
                    origin: msg.origin,
                    key: msg.key,
                    app,
                    hops: msg.hops,
                    payload,
                };
                match apps.iter().position(|s| s.id == app) {
                    Some(slot) => {
                        let mut ctx = Context {
                            core: self,
                            app,
                            slot,
                            now,
                        };
                        apps[slot].app.deliver(&mut ctx, view);
                    }
                    None => self.event(Event::Deliver(view)),
                }
            }
        }
    }

    pub(crate) fn route_failed(&mut self, msg: &RouteMsg<A>, reason: RouteFailure) {
        self.counters.route_failures += 1;
        if let Some(view) = app_view(msg) {
            self.event(Event::RouteFailed {
                id: view.id,
                key: view.key,
                reason,
            });
        }
    }

    fn hold(&mut self, now: Instant, msg: RouteMsg<A>, expires: Option<Instant>) {
        if matches!(self.phase, Phase::Leaving { .. } | Phase::Left) {
            self.route_failed(&msg, RouteFailure::NodeLeft);
            return;
        }
        if self.held.len() >= self.cfg.max_held {
            self.route_failed(&msg, RouteFailure::Overloaded);
            return;
        }
        let expires = expires.unwrap_or(now + self.cfg.hold_timeout);
        if expires <= now {
            self.route_failed(&msg, RouteFailure::HoldTimeout);
            return;
        }
        self.counters.held += 1;
        self.held.push(Held { msg, expires });
        if self.hold_timer.is_none_or(|t| t > expires) {
            self.hold_timer = Some(expires);
            self.schedule(expires, TimerKind::Hold);
        }
    }

    /// Re-examines every held message: the state that held it may have changed.
    pub(crate) fn retry_held(&mut self, now: Instant, apps: &mut Apps<A>) {
        if self.held.is_empty() {
            return;
        }
        let held = core::mem::take(&mut self.held);
        for h in held {
            // Upcall: a held message has not been forwarded from here yet.
            self.process_route(now, apps, h.msg, true, Some(h.expires));
        }
        if self.held.is_empty() {
            self.held.shrink_to_fit();
        }
    }

    pub(crate) fn on_hold_timer(&mut self, now: Instant, at: Instant) {
        if self.hold_timer != Some(at) {
            return;
        }
        self.hold_timer = None;
        let (expired, kept): (Vec<_>, Vec<_>) = core::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.expires <= now);
        self.held = kept;
        for h in expired {
            self.route_failed(&h.msg, RouteFailure::HoldTimeout);
        }
        if let Some(next) = self.held.iter().map(|h| h.expires).min() {
            self.hold_timer = Some(next);
            self.schedule(next, TimerKind::Hold);
        } else {
            self.held.shrink_to_fit();
        }
    }

    pub(crate) fn fail_all_held(&mut self, reason: RouteFailure) {
        for h in core::mem::take(&mut self.held) {
            self.route_failed(&h.msg, reason);
        }
        self.hold_timer = None;
    }

    fn send_route(&mut self, now: Instant, msg: RouteMsg<A>, to: NodeHandle<A>, via: Via) {
        if self.in_flight.len() >= self.cfg.max_in_flight {
            self.route_failed(&msg, RouteFailure::Overloaded);
            return;
        }
        self.send_flight(now, to, FlightKind::Route { msg, via });
    }

    /// A direct message did not reach `to`: the owner hears of it as an event, the
    /// application that sent it through [`crate::Application::send_failed`]. The reports
    /// waiting for the application are bounded like the messages in flight they come from.
    fn direct_failed(&mut self, app: u16, id: MessageId, to: NodeHandle<A>, why: SendFailure) {
        if self.failed_directs.len() < self.cfg.max_in_flight {
            self.failed_directs.push_back((app, id, to.clone(), why));
        }
        self.event(Event::SendFailed { id, to });
    }

    pub(crate) fn send_direct(
        &mut self,
        now: Instant,
        id: MessageId,
        app: u16,
        to: NodeHandle<A>,
        payload: Vec<u8>,
    ) {
        if self.in_flight.len() >= self.cfg.max_in_flight {
            self.direct_failed(app, id, to, SendFailure::Overloaded);
            return;
        }
        self.send_flight(now, to, FlightKind::Direct { id, app, payload });
    }

    /// Sends a message that expects a per-hop acknowledgement, verifying the destination's
    /// address first if it has never answered us.
    pub(crate) fn send_flight(&mut self, now: Instant, to: NodeHandle<A>, mut kind: FlightKind<A>) {
        let seq = self.next_hop_seq();
        if let FlightKind::Route { msg, .. } = &mut kind {
            msg.seq = seq;
        }
        // A goodbye is small and goes only to leaf-set members, which contacted us first; a
        // leaving node no longer waits for anyone's address to be verified.
        let verified = matches!(kind, FlightKind::Leave) || self.is_verified(Some(to.id), &to.addr);
        self.in_flight.insert(
            seq,
            InFlight {
                to: to.clone(),
                kind,
                attempts: 1,
                sent_at: now,
                deadline: Instant::MAX,
            },
        );
        if verified {
            self.transmit_flight(now, seq);
        } else {
            self.verify_then_flight(now, &to, seq);
        }
    }

    /// (Re)transmits a message in flight and arms its retransmission timer.
    pub(crate) fn transmit_flight(&mut self, now: Instant, seq: u32) {
        let Some(f) = self.in_flight.get(&seq) else {
            return;
        };
        let (bytes, control) = match &f.kind {
            FlightKind::Route { msg, .. } => (encode_route(self.me.id, msg), msg.body.is_control()),
            FlightKind::Direct { id, app, payload } => (
                self.encode(Message::Direct {
                    seq,
                    msg_seq: id.seq,
                    app: *app,
                    payload: payload.clone(),
                }),
                false,
            ),
            FlightKind::Leave => {
                let leaf =
                    self.leaf_msg(Some(f.to.id), self.cfg.max_datagram_size - wire_overhead());
                (self.encode(Message::Leave { seq, leaf }), true)
            }
        };
        let to = f.to.addr.clone();
        let rto = match f.kind {
            FlightKind::Route {
                via: Via::Table | Via::Rare,
                ..
            } => self.reroute_timeout(f.to.id),
            _ => self.rto_for(f.to.id, f.attempts),
        };
        let deadline = now + rto;
        if let Some(f) = self.in_flight.get_mut(&seq) {
            if f.attempts == 1 {
                f.sent_at = now;
            }
            f.deadline = deadline;
        }
        self.schedule(deadline, TimerKind::Retransmit(seq));
        self.transmit(to, bytes, control);
    }

    /// The retransmission timeout towards `id` for the given attempt (exponential backoff).
    pub(crate) fn rto_for(&self, id: Id, attempt: u8) -> Duration {
        let base = self
            .leaf
            .get(id)
            .or_else(|| self.table.find(id))
            .map_or(self.cfg.rto_initial, |p| p.rtt.rto(&self.cfg));
        let factor = 1u32 << u32::from(attempt.saturating_sub(1)).min(16);
        base.saturating_mul(factor).min(self.cfg.rto_max)
    }

    /// How long a table hop may stay unacknowledged before the message goes around it: the
    /// retransmission timeout, but at most twice the smoothed round trip. A late ack then
    /// costs a duplicate (the message went both ways), not a loss, whereas waiting out a
    /// timeout computed from one sample (three round trips) delays every message whose hop
    /// died. Under 10-minute churn most timeouts are of that kind: a table entry used every
    /// few hundred seconds is often dead by its next use. At 2,000 nodes this took the mean
    /// route delay penalty of lookups from 6.03 to 5.81.
    fn reroute_timeout(&self, id: Id) -> Duration {
        let rto = self.rto_for(id, 1);
        let known = self.leaf.get(id).or_else(|| self.table.find(id));
        match known.and_then(|p| p.rtt.srtt()) {
            Some(srtt) => rto.min(srtt.saturating_mul(2).max(self.cfg.rto_min)),
            None => rto,
        }
    }

    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        sender: &NodeHandle<A>,
        seq: u32,
        apps: &mut Apps<A>,
    ) {
        match self.in_flight.get(&seq) {
            Some(f) if f.to.addr == sender.addr && f.deadline != Instant::MAX => {}
            _ => return,
        }
        let Some(f) = self.in_flight.remove(&seq) else {
            return;
        };
        let sample = (f.attempts == 1).then(|| now - f.sent_at);
        self.proved_alive(now, &f.to, sample);
        Self::trim(&mut self.in_flight);
        if f.is_leave() {
            self.check_leave_done(now);
        }
        self.acked_by(now, &f.to, apps);
    }

    pub(crate) fn on_retransmit_timer(
        &mut self,
        now: Instant,
        at: Instant,
        seq: u32,
        apps: &mut Apps<A>,
    ) {
        let Some(f) = self.in_flight.get_mut(&seq) else {
            return;
        };
        if f.deadline != at {
            return;
        }
        let first_hop_rule = matches!(
            f.kind,
            FlightKind::Route {
                via: Via::Table | Via::Rare,
                ..
            }
        );
        if !first_hop_rule && f.attempts <= self.cfg.max_retransmits {
            f.attempts += 1;
            self.counters.retransmitted += 1;
            let (to, leaf_hop) = (f.to.clone(), matches!(f.kind, FlightKind::Route { .. }));
            if leaf_hop && f.attempts == 2 {
                // A leaf-set hop may be the key's root: its message is resent, and the
                // liveness probe that decides on the hop starts now, beside the resends,
                // rather than after them. A verdict of dead (five timeouts after the first
                // send, instead of fourteen) reroutes the message; if the resends run out
                // first, it waits for the verdict (see `decide`). A live member has the probe's
                // attempts and the resends sent so far to answer, and an ack from it ends the
                // suspicion. Under 10-minute churn at 2,000 nodes, lookups that met a dead
                // member took 8.4 s (median) with the probe after the resends, 5.5 s with it
                // beside them.
                self.suspect(now, &to, false);
            }
            self.transmit_flight(now, seq);
            return;
        }
        if first_hop_rule {
            self.counters.rerouted += 1;
        }
        let to = f.to.clone();
        // A table hop is one of many ways towards the key: route around it at once. A leaf-set
        // hop whose resends went unanswered waits for the verdict on it.
        if !f.is_leave() {
            self.suspect(now, &to, false);
        }
        self.flight_failed(now, seq, apps);
    }

    /// The destination of a message in flight did not answer: reroute, report or drop it.
    pub(crate) fn flight_failed(&mut self, now: Instant, seq: u32, apps: &mut Apps<A>) {
        let Some(f) = self.in_flight.remove(&seq) else {
            return;
        };
        Self::trim(&mut self.in_flight);
        match f.kind {
            FlightKind::Route { msg, .. } => self.process_route(now, apps, msg, false, None),
            FlightKind::Direct { id, app, .. } => {
                self.direct_failed(app, id, f.to, SendFailure::Unacknowledged)
            }
            FlightKind::Leave => self.check_leave_done(now),
        }
    }

    /// A message that cannot even wait for its next hop's address to be verified (the queue
    /// for that address is full) is dropped and reported.
    pub(crate) fn flight_unsendable(&mut self, _now: Instant, seq: u32) {
        let Some(f) = self.in_flight.remove(&seq) else {
            return;
        };
        match f.kind {
            FlightKind::Route { msg, .. } => self.route_failed(&msg, RouteFailure::Overloaded),
            FlightKind::Direct { id, app, .. } => {
                self.direct_failed(app, id, f.to, SendFailure::Overloaded)
            }
            FlightKind::Leave => {}
        }
    }

    /// Sends every message in flight to `id` elsewhere (the node is gone), oldest first.
    pub(crate) fn reroute_flights_to(&mut self, now: Instant, id: Id, apps: &mut Apps<A>) {
        let mut seqs: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.to.id == id)
            .map(|(s, _)| *s)
            .collect();
        seqs.sort_unstable_by_key(|s| core::cmp::Reverse(self.hop_age(*s)));
        for seq in seqs {
            self.flight_failed(now, seq, apps);
        }
    }

    pub(crate) fn has_leave_flights(&self) -> bool {
        self.in_flight.values().any(InFlight::is_leave)
    }

    /// Reports every routed or direct message in flight as failed (the node leaves or starts
    /// over), oldest first, and forgets them, goodbyes included.
    pub(crate) fn fail_all_flights(&mut self) {
        let mut flights: Vec<(u32, InFlight<A>)> = self.in_flight.drain().collect();
        flights.sort_unstable_by_key(|(s, _)| core::cmp::Reverse(self.hop_age(*s)));
        for (_, f) in flights {
            match f.kind {
                FlightKind::Route { msg, .. } => self.route_failed(&msg, RouteFailure::NodeLeft),
                FlightKind::Direct { id, app, .. } => {
                    self.direct_failed(app, id, f.to, SendFailure::NodeLeft)
                }
                FlightKind::Leave => {}
            }
        }
        self.in_flight.shrink_to_fit();
    }

    pub(crate) fn clear_flights(&mut self) {
        self.in_flight.clear();
        self.in_flight.shrink_to_fit();
    }

    pub(crate) fn on_direct(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        seq: u32,
        direct: Direct,
        apps: &mut Apps<A>,
    ) {
        let Direct {
            msg_seq,
            app,
            payload,
        } = direct;
        let ack = self.encode(Message::Ack { seq });
        self.send_budgeted(Some(sender.id), &sender.addr, ack, true);
        if !self.seen.insert(now, sender.id, msg_seq) {
            self.counters.duplicates += 1;
            return;
        }
        let id = MessageId {
            origin: sender.id,
            seq: msg_seq,
        };
        match apps.iter().position(|s| s.id == app) {
            Some(slot) => {
                let mut ctx = Context {
                    core: self,
                    app,
                    slot,
                    now,
                };
                apps[slot].app.direct(&mut ctx, &sender, payload);
            }
            None => self.event(Event::Direct {
                id,
                from: sender,
                app,
                payload,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::app::{Context, RouteMessage};
    use crate::node::Disguise;
    use crate::node::testing::{alone, alone_keyed, direct_seq, sent};
    use crate::peer::Peer;
    use crate::wire::{Datagram, Message};
    use crate::{Id, Instant, NodeHandle, Rtt};
    use core::time::Duration;

    /// A lone node with two verified table entries, a at address 20 and b at 21.
    fn with_two_entries() -> (crate::node::Node<u32>, NodeHandle<u32>, NodeHandle<u32>) {
        keyed_with_two_entries(None)
    }

    /// The same, its secret set (before it started) when one is given.
    fn keyed_with_two_entries(
        secret: Option<[u8; 16]>,
    ) -> (crate::node::Node<u32>, NodeHandle<u32>, NodeHandle<u32>) {
        let mut node = alone_keyed(secret);
        let a = NodeHandle::new(Id::new(0xa_u128 << 124 | 0x42), 20);
        let b = NodeHandle::new(Id::new(0xb_u128 << 124 | 0x42), 21);
        for h in [&a, &b] {
            let _: crate::table::TableInsert<u32> = node
                .core
                .table
                .insert(Peer::verified(h.clone(), Rtt::default()));
        }
        (node, a, b)
    }

    /// Records what `send_failed` reports.
    struct Failures(alloc::vec::Vec<(crate::MessageId, u32, crate::SendFailure)>);

    impl crate::Application<u32> for Failures {
        fn deliver(&mut self, _: &mut Context<'_, u32>, _: RouteMessage<u32>) {}
        fn send_failed(
            &mut self,
            _: &mut Context<'_, u32>,
            id: crate::MessageId,
            to: &NodeHandle<u32>,
            why: crate::SendFailure,
        ) {
            self.0.push((id, to.addr, why));
        }
    }

    #[test]
    fn send_failed_tells_a_full_queue_from_a_silent_destination() {
        use crate::SendFailure::{Overloaded, Unacknowledged};
        let (mut node, a, _) = with_two_entries();
        node.core.cfg.max_in_flight = 1;
        node.register(9, alloc::boxed::Box::new(Failures(alloc::vec::Vec::new())))
            .unwrap();
        let now = Instant::from_secs(10);
        let ids = node
            .with_app(now, 9, |_: &mut Failures, ctx| {
                let first = ctx.send_direct(a.clone(), alloc::vec![1]).unwrap();
                let second = ctx.send_direct(a.clone(), alloc::vec![2]).unwrap();
                (first, second)
            })
            .unwrap();
        let failures = |node: &crate::node::Node<u32>| node.app::<Failures>(9).unwrap().0.clone();
        // One message may be in flight: the second fails at once, and says nothing of a.
        assert_eq!(failures(&node), alloc::vec![(ids.1, a.addr, Overloaded)]);
        // a never acknowledges the first.
        let mut t = now;
        for _ in 0..100 {
            t += Duration::from_secs(1);
            node.handle_timeout(t);
        }
        assert_eq!(
            failures(&node),
            alloc::vec![(ids.1, a.addr, Overloaded), (ids.0, a.addr, Unacknowledged)]
        );
    }

    #[test]
    fn a_hop_number_seen_does_not_give_away_the_others() {
        let (mut node, a, b) = with_two_entries();
        let now = Instant::from_secs(10);
        node.send_direct(now, a.clone(), 0, alloc::vec![1]).unwrap();
        let seq_a = direct_seq(&mut node, a.addr);
        node.send_direct(now, b.clone(), 0, alloc::vec![2]).unwrap();
        let seq_b = direct_seq(&mut node, b.addr);
        // b knows its own hop number and forges acks from a's address for the numbers near
        // it (with a counter sent as it is, a's would be among them).
        let later = now + core::time::Duration::from_millis(5);
        for d in 1..=1000u32 {
            for guess in [seq_b.wrapping_sub(d), seq_b.wrapping_add(d)] {
                let ack = Datagram::<u32>::new(a.id, Message::Ack { seq: guess });
                node.handle_datagram(later, a.addr, &ack.to_bytes())
                    .unwrap();
            }
        }
        assert!(
            node.core.in_flight.contains_key(&seq_a),
            "a forged ack ended a's hop"
        );
        // The real number ends it.
        let ack = Datagram::<u32>::new(a.id, Message::Ack { seq: seq_a });
        node.handle_datagram(later, a.addr, &ack.to_bytes())
            .unwrap();
        assert!(!node.core.in_flight.contains_key(&seq_a));
        assert!(node.core.in_flight.contains_key(&seq_b));
    }

    #[test]
    fn the_secret_not_the_seed_decides_the_numbers_sent() {
        // Two nodes with the same seed send the same hop numbers, nonces and join relay tags,
        // unless one was given a secret of its own: knowing the seed is then no help in
        // guessing them.
        let first_numbers = |secret: Option<[u8; 16]>| {
            let (mut node, a, _) = keyed_with_two_entries(secret);
            let now = Instant::from_secs(10);
            node.send_direct(now, a.clone(), 0, alloc::vec![1]).unwrap();
            let seq = direct_seq(&mut node, a.addr);
            let stranger = NodeHandle::new(Id::new(0xc_u128 << 124 | 0x42), 30);
            node.core
                .probe(now, &stranger, crate::node::probes::P_TABLE, &[], true);
            let nonce = sent(&mut node)
                .into_iter()
                .find_map(|(to, m)| match m {
                    Message::Probe { nonce, .. } if to == 30 => Some(nonce),
                    _ => None,
                })
                .expect("the stranger is probed");
            // A joining node asks us to route its join: we relay what its path sends for it,
            // under a tag.
            let joiner = Id::new(0xa_u128 << 124 | 0x43);
            let request = Datagram::<u32>::new(joiner, Message::JoinRequest { padding: 64 });
            node.handle_datagram(now, 31, &request.to_bytes()).unwrap();
            let tag = node.core.relays.last().expect("a relay").tag;
            (seq, nonce, tag)
        };
        assert_eq!(first_numbers(None), first_numbers(None));
        let keyed = first_numbers(Some([7; 16]));
        assert_eq!(keyed, first_numbers(Some([7; 16])));
        let (seq, nonce, tag) = first_numbers(None);
        assert_ne!(keyed.0, seq);
        assert_ne!(keyed.1, nonce);
        assert_ne!(keyed.2, tag);
    }

    #[test]
    fn messages_to_a_dead_node_fail_in_the_order_they_were_sent() {
        // Hop numbers no longer follow the sending order; the failures still do.
        let (mut node, a, _) = with_two_entries();
        let now = Instant::from_secs(10);
        let ids: alloc::vec::Vec<_> = (0..8u8)
            .map(|i| node.send_direct(now, a.clone(), 0, alloc::vec![i]).unwrap())
            .collect();
        while node.poll_event().is_some() {}
        node.core.reroute_flights_to(now, a.id, &mut node.apps);
        let failed: alloc::vec::Vec<_> = core::iter::from_fn(|| node.poll_event())
            .filter_map(|e| match e {
                crate::Event::SendFailed { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(failed, ids);
    }

    #[test]
    fn disguised_numbers_are_distinct_and_unlike_the_counter() {
        let node = alone();
        let core = &node.core;
        let mut seen = alloc::collections::BTreeSet::new();
        let start = 0xffff_0000u32; // across the wrap
        let mut steps = alloc::collections::BTreeSet::new();
        let mut prev = core.disguise(Disguise::Hop, start.wrapping_sub(1));
        for i in 0..(1u32 << 17) {
            let count = start.wrapping_add(i);
            let n = core.disguise(Disguise::Hop, count);
            assert!(seen.insert(n), "{n} given twice");
            assert_eq!(core.reveal(Disguise::Hop, n), count);
            steps.insert(n.wrapping_sub(prev));
            prev = n;
        }
        // Consecutive counts map to numbers with no fixed step between them.
        assert!(steps.len() > (1 << 16), "{} distinct steps", steps.len());
        // Each kind of number has its own permutation.
        let differ = (0..64u32)
            .filter(|&c| core.disguise(Disguise::Hop, c) != core.disguise(Disguise::Message, c))
            .count();
        assert!(differ > 60);
        // And each node its own: another secret, other numbers.
        let mut other = alone();
        other.core.secret = (core.secret.0 ^ 1, core.secret.1);
        let differ = (0..64u32)
            .filter(|&c| core.disguise(Disguise::Hop, c) != other.core.disguise(Disguise::Hop, c))
            .count();
        assert!(differ > 60);
    }
}
