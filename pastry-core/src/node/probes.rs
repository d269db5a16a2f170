//! Probes, address verification and the anti-amplification budget.
//!
//! An address is *verified* once it has answered one of our probes (the reply echoes a nonce
//! we sent there). Until then:
//!
//! - everything sent to it is charged to a budget of three times the bytes received from it,
//!   so a datagram with a forged source cannot make this node send its victim more than three
//!   times what the forger sent;
//! - a leaf-set probe to it goes out as a plain probe first, and becomes a leaf-set probe (with
//!   our leaf set and padding) once the address has answered;
//! - routed messages, heartbeats and join data for it wait, in a bounded queue, for the
//!   address to answer.
//!
//! The one exception to the budget are plain probes (31 bytes, at most `1 + probe_retries`
//! sends) to addresses learned from a verified source (a verified node's leaf set or rows, or
//! the bootstrap address the application gave us): learned state must be probed before it is
//! trusted, and a stranger cannot make us send them because gossip from unverified addresses
//! is ignored.

use alloc::vec::Vec;
use core::time::Duration;

use super::{Apps, Core, TimerKind};
use crate::peer::{CONFIRMED, SUSPECT, VERIFIED};
use crate::wire::{self, LeafSetMsg, Message};
use crate::{Address, Id, Instant, NodeHandle, Peer, Rtt, Side};

/// A leaf-set probe: it carries our leaf set and the reply carries theirs; on reply the node
/// enters our leaf set, confirmed.
pub(crate) const P_LEAF: u8 = 1;
/// On reply the node is offered to the routing table (every reply does this; the flag only
/// records why the probe was sent).
pub(crate) const P_TABLE: u8 = 2;
/// The node went silent; no reply means it is dead.
pub(crate) const P_LIVE: u8 = 4;
/// Datagrams wait for the node's address to answer.
pub(crate) const P_VERIFY: u8 = 8;
/// The suspicion came from another node's failure notice: if confirmed, the node does not
/// notify others unless it was a ring neighbour of the dead node.
pub(crate) const P_NOTICED: u8 = 16;
/// The suspicion came from another probe of ours that the node left unanswered through all
/// its retries (a leaf-set exchange, a round-trip measurement).
pub(crate) const P_RECHECK: u8 = 32;

/// Datagrams that may wait for one address to be verified.
const MAX_QUEUED: usize = 16;
/// Bytes of a plain probe (no leaf set, no failed ids, no padding).
pub(crate) const PLAIN_PROBE_LEN: usize = wire::HEADER_LEN + 4 + 4 + 1 + 1 + 2;
/// Unverified addresses whose budget is tracked.
pub(crate) const AMP_ENTRIES: usize = 64;

/// Address-validation tokens remembered per node.
const TOKENS: usize = 64;

/// A probe as received.
pub(crate) struct Probe<A> {
    pub(crate) nonce: u32,
    pub(crate) token: u32,
    pub(crate) leaf: Option<LeafSetMsg<A>>,
    pub(crate) failed: Vec<Id>,
    pub(crate) active: bool,
}

/// An outstanding probe, keyed by the probed address.
pub(crate) struct ProbeState<A> {
    /// The node we expect to answer (unknown for the bootstrap address).
    pub(crate) id: Option<Id>,
    nonce: u32,
    pub(crate) purpose: u8,
    /// Failed ids the probe announces.
    failed: Vec<Id>,
    /// Whether the last send carried our leaf set.
    sent_leaf: bool,
    /// The address was learned from a verified source: plain probes need no budget.
    exempt: bool,
    /// The target spoke to us after an attempt went unanswered, and the attempts began again
    /// (once per probe: see [`Core::refresh_suspicion`]).
    refreshed: bool,
    /// The first attempt rode on an answer of ours (see [`Core::carried_probe`]).
    carried: bool,
    /// A joining node's second probe of a would-be ring neighbour that left the first
    /// unanswered: if this one goes unanswered too, the node is given up.
    last_chance: bool,
    attempts: u8,
    sent_at: Instant,
    deadline: Instant,
    pub(crate) queued: Vec<Vec<u8>>,
    pub(crate) flights: Vec<u32>,
    _addr: core::marker::PhantomData<A>,
}

impl<A> ProbeState<A> {
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.failed.capacity() * 16
            + self.queued.iter().map(Vec::capacity).sum::<usize>()
            + self.queued.capacity() * core::mem::size_of::<Vec<u8>>()
            + self.flights.capacity() * 4
    }
}

/// Bytes received from and sent to an address that has not answered a probe yet.
pub(crate) struct Budget<A> {
    addr: A,
    rx: u32,
    tx: u32,
}

impl<A: Address> Core<A> {
    // ----- verification and budgets -----

    /// Whether `addr` answered a probe of ours (so sending it more than a reply's worth is not
    /// an amplification risk). `id` is the node we believe is there, if known.
    pub(crate) fn is_verified(&self, id: Option<Id>, addr: &A) -> bool {
        let known = |p: &Peer<A>| p.is_verified() && &p.handle.addr == addr;
        // The table lookup is a direct index; the leaf set a short scan; the cache last.
        id.is_some_and(|id| {
            self.table.find(id).is_some_and(known) || self.leaf.get(id).is_some_and(known)
        }) || self.verified.contains(addr)
    }

    pub(crate) fn remember_verified(&mut self, id: Id, addr: &A) {
        let mark = |p: &mut Peer<A>| {
            if &p.handle.addr == addr {
                p.set_flag(VERIFIED, true);
            }
        };
        self.leaf.update(id, |e| mark(&mut e.peer));
        self.table.update(id, mark);
        self.budgets.retain(|b| &b.addr != addr);
        if !self.verified.contains(addr) {
            if self.verified.len() >= super::VERIFIED_CACHE {
                self.verified.pop_front();
            }
            self.verified.push_back(addr.clone());
        }
    }

    /// The token this node gives `addr` (for the node `id`): a keyed hash, so that only a node
    /// that received our reply at that address can echo it.
    fn token_for(&self, id: Id, addr: &A) -> u32 {
        use core::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.secret.0, self.secret.1);
        let mut buf = Vec::with_capacity(16 + A::MAX_ENCODED_LEN);
        buf.extend_from_slice(&id.to_bytes());
        addr.encode(&mut buf);
        h.write(&buf);
        (h.finish() as u32).max(1)
    }

    /// Keeps a token another node gave us, to echo in our next probe of it.
    pub(crate) fn remember_token(&mut self, addr: &A, token: u32) {
        if token == 0 {
            return;
        }
        if let Some(t) = self.tokens.iter_mut().find(|(a, _)| a == addr) {
            t.1 = token;
            return;
        }
        if self.tokens.len() >= TOKENS {
            self.tokens.pop_front();
        }
        self.tokens.push_back((addr.clone(), token));
    }

    fn token_of(&self, addr: &A) -> u32 {
        self.tokens
            .iter()
            .find(|(a, _)| a == addr)
            .map_or(0, |(_, t)| *t)
    }

    /// Credits the budget of an unverified address with a datagram received from it.
    pub(crate) fn note_received(&mut self, from: &NodeHandle<A>, len: usize) {
        if self.is_verified(Some(from.id), &from.addr) {
            return;
        }
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        if let Some(b) = self.budgets.iter_mut().find(|b| b.addr == from.addr) {
            b.rx = b.rx.saturating_add(len);
            return;
        }
        if self.budgets.len() >= AMP_ENTRIES {
            self.budgets.pop_front();
        }
        self.budgets.push_back(Budget {
            addr: from.addr.clone(),
            rx: len,
            tx: 0,
        });
    }

    /// Bytes we may still send to `addr`: unlimited (the datagram size) once verified,
    /// otherwise three times what it sent us minus what we sent it.
    pub(crate) fn budget_left(&self, id: Option<Id>, addr: &A) -> usize {
        if self.is_verified(id, addr) {
            return self.cfg.max_datagram_size;
        }
        self.budgets
            .iter()
            .find(|b| &b.addr == addr)
            .map_or(0, |b| (3 * b.rx as usize).saturating_sub(b.tx as usize))
            .min(self.cfg.max_datagram_size)
    }

    fn spend(&mut self, addr: &A, len: usize) -> bool {
        let Some(b) = self.budgets.iter_mut().find(|b| &b.addr == addr) else {
            return false;
        };
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        if u64::from(b.tx) + u64::from(len32) > 3 * u64::from(b.rx) {
            return false;
        }
        b.tx += len32;
        true
    }

    /// Sends a datagram to `to` if it is verified or its budget allows; counts it otherwise.
    pub(crate) fn send_budgeted(
        &mut self,
        id: Option<Id>,
        to: &A,
        bytes: Vec<u8>,
        control: bool,
    ) -> bool {
        if self.is_verified(id, to) || self.spend(to, bytes.len()) {
            self.transmit(to.clone(), bytes, control);
            true
        } else {
            self.counters.amplification_limited += 1;
            false
        }
    }

    /// Sends a control datagram once `to`'s address is verified (at once if it is). `exempt`:
    /// the address was learned from a verified source.
    pub(crate) fn send_verified(
        &mut self,
        now: Instant,
        to: &NodeHandle<A>,
        bytes: Vec<u8>,
        exempt: bool,
    ) {
        if self.is_verified(Some(to.id), &to.addr) {
            self.transmit(to.addr.clone(), bytes, true);
            return;
        }
        self.probe_addr(now, to.addr.clone(), Some(to.id), P_VERIFY, &[], exempt);
        match self.probes.get_mut(&to.addr) {
            Some(p) if p.queued.len() < MAX_QUEUED => p.queued.push(bytes),
            _ => self.counters.amplification_limited += 1,
        }
    }

    /// Parks a message in flight until `to`'s address is verified. The destination was chosen
    /// by the routing rules (a member) or by the application, so the plain probes that verify
    /// it are a first contact and need no budget.
    pub(crate) fn verify_then_flight(&mut self, now: Instant, to: &NodeHandle<A>, seq: u32) {
        self.probe_addr(now, to.addr.clone(), Some(to.id), P_VERIFY, &[], true);
        match self.probes.get_mut(&to.addr) {
            Some(p) if p.flights.len() < MAX_QUEUED => p.flights.push(seq),
            // No room to wait: the message counts as not acknowledged.
            _ => self.flight_unsendable(now, seq),
        }
    }

    // ----- probing -----

    /// Probes a node, or adds `purpose` to a probe already under way. `failed` names nodes we
    /// found dead (a failure notice). `exempt`: the node was learned from a verified source.
    pub(crate) fn probe(
        &mut self,
        now: Instant,
        to: &NodeHandle<A>,
        purpose: u8,
        failed: &[Id],
        exempt: bool,
    ) -> bool {
        self.probe_addr(now, to.addr.clone(), Some(to.id), purpose, failed, exempt)
    }

    pub(crate) fn probe_addr(
        &mut self,
        now: Instant,
        addr: A,
        id: Option<Id>,
        purpose: u8,
        failed: &[Id],
        exempt: bool,
    ) -> bool {
        if id == Some(self.me.id) || addr == self.me.addr {
            return false;
        }
        if let Some(p) = self.probes.get_mut(&addr) {
            let gains_leaf = purpose & P_LEAF != 0 && p.purpose & P_LEAF == 0;
            // "Noticed" (or "recheck") holds only if every reason for the probe came from a
            // notice (or an unanswered probe): either cuts the retries.
            let sticky = P_NOTICED | P_RECHECK;
            let kept = p.purpose & purpose & sticky;
            p.purpose = ((p.purpose | purpose) & !sticky) | kept;
            p.exempt |= exempt;
            let mut news = gains_leaf;
            for f in failed {
                if !p.failed.contains(f) && p.failed.len() < wire::MAX_FAILED {
                    p.failed.push(*f);
                    news = true;
                }
            }
            let pid = p.id;
            if gains_leaf
                && let Some(id) = pid
                && !self.pending_leaf.contains(&id)
            {
                self.pending_leaf.push(id);
            }
            if news {
                // A fresh nonce: a reply to the earlier probe must not pass for an answer to
                // this one.
                let nonce = self.fresh_nonce();
                if let Some(p) = self.probes.get_mut(&addr) {
                    p.nonce = nonce;
                }
                self.send_probe(&addr);
            }
            return true;
        }
        // Probes for nodes we already hold may use the whole table; probes a stranger's
        // datagram prompted, only half of it, so that strangers cannot crowd out liveness
        // checks of our own members.
        let member = id.is_some_and(|id| {
            let here = |p: &Peer<A>| p.handle.addr == addr;
            self.leaf.get(id).is_some_and(here) || self.table.find(id).is_some_and(here)
        });
        let limit = if exempt || member {
            self.cfg.max_probes
        } else {
            self.cfg.max_probes / 2
        };
        if self.probes.len() >= limit {
            return false;
        }
        let nonce = self.fresh_nonce();
        let deadline = now + self.probe_rto(id, 1);
        self.probes.insert(
            addr.clone(),
            ProbeState {
                id,
                nonce,
                purpose,
                failed: failed.iter().copied().take(wire::MAX_FAILED).collect(),
                sent_leaf: false,
                exempt,
                refreshed: false,
                carried: false,
                last_chance: false,
                attempts: 1,
                sent_at: now,
                deadline,
                queued: Vec::new(),
                flights: Vec::new(),
                _addr: core::marker::PhantomData,
            },
        );
        if purpose & P_LEAF != 0
            && let Some(id) = id
            && !self.pending_leaf.contains(&id)
        {
            self.pending_leaf.push(id);
        }
        self.counters.probes_sent += 1;
        let by = &mut self.counters.probes_by_purpose;
        if purpose & P_LEAF != 0 {
            by.leaf += 1;
        } else if purpose & P_LIVE != 0 {
            by.liveness += 1;
        } else if purpose & P_TABLE != 0 {
            by.table += 1;
        } else {
            by.verify += 1;
        }
        self.schedule(deadline, TimerKind::Probe(addr.clone()));
        self.send_probe(&addr);
        true
    }

    /// Runs `consider` (which may start a probe of `to`) with the sending of a new probe of
    /// `to` held back, and returns that probe's nonce (0 if it started none) for the answer we
    /// are about to send `to` to carry: the probed node answers it like a probe, and one
    /// datagram of the four a probe each way takes is saved. The probe's timer runs from now;
    /// if it runs out (the answer or its reply was lost, or the other node did not take it
    /// because its own probe had moved on), the probe is sent on its own once, as a first
    /// attempt with a fresh nonce. Under 10-minute churn at 2,000 nodes, nodes probe back
    /// about one in five of the nodes whose probe or row request they answer.
    pub(crate) fn carried_probe(&mut self, to: &A, consider: impl FnOnce(&mut Self)) -> u32 {
        if self.probes.contains_key(to) {
            consider(self);
            return 0;
        }
        self.carry = Some(to.clone());
        consider(self);
        self.carry = None;
        self.probes.get_mut(to).map_or(0, |p| {
            p.carried = true;
            p.nonce
        })
    }

    /// A probe nonce: unguessable, never 0 (which the wire uses for "no probe").
    fn fresh_nonce(&mut self) -> u32 {
        self.unguessable()
    }

    /// Answers a probe that a probe reply or rows from `to` carried (see
    /// [`Core::carried_probe`]). Only to an address we have verified: a reply must answer our
    /// own probe, rows must come from a verified address. (A forger that uses a verified
    /// peer's address as its source can make us send that peer one plain reply per forged
    /// `Rows`, no larger than what it forged: no amplification, and not towards strangers.)
    pub(crate) fn answer_carried(&mut self, to: &NodeHandle<A>, nonce: u32) {
        if nonce == 0 || !self.is_verified(Some(to.id), &to.addr) {
            return;
        }
        let reply = self.encode(Message::ProbeReply {
            active: self.is_active(),
            nonce,
            token: 0,
            leaf: None,
            probe: 0,
        });
        self.transmit(to.addr.clone(), reply, true);
    }

    /// Sends (or resends) the probe to `addr`: a leaf-set probe if that is its purpose and the
    /// address is verified, a plain probe otherwise; within budget unless exempt. Not while an
    /// answer to `addr` is to carry it (see [`Core::carried_probe`]).
    pub(crate) fn send_probe(&mut self, addr: &A) {
        if self.carry.as_ref() == Some(addr) {
            return;
        }
        let Some(p) = self.probes.get(addr) else {
            return;
        };
        let verified = self.is_verified(p.id, addr);
        let with_leaf = p.purpose & P_LEAF != 0 && verified;
        let token = self.token_of(addr);
        let bytes = self.probe_bytes(p.nonce, token, with_leaf, &p.failed);
        let exempt = p.exempt && !with_leaf;
        if let Some(p) = self.probes.get_mut(addr) {
            p.sent_leaf = with_leaf;
            // Sent on its own now, with whatever nonce it has.
            p.carried = false;
        }
        if verified || exempt {
            self.transmit(addr.clone(), bytes, true);
        } else if !self.send_budgeted(None, addr, bytes, true) {
            // Out of budget: the attempt is lost, as if the network had dropped it.
        }
    }

    fn probe_bytes(&self, nonce: u32, token: u32, with_leaf: bool, failed: &[Id]) -> Vec<u8> {
        let max = self.cfg.max_datagram_size;
        let leaf = with_leaf.then(|| self.leaf_msg(None, max));
        let mut failed: Vec<Id> = failed.to_vec();
        let base = |leaf: &Option<LeafSetMsg<A>>, failed: &[Id]| {
            wire::HEADER_LEN
                + 4
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
            token,
            leaf,
            failed,
            padding,
            active: self.is_active(),
        })
    }

    /// Timeout of a probe's `attempt`: the node's retransmission timeout with backoff, or the
    /// initial timeout with backoff for an address whose node we do not know yet.
    fn probe_rto(&self, id: Option<Id>, attempt: u8) -> Duration {
        match id {
            Some(id) => self.rto_for(id, attempt),
            None => {
                let factor = 1u32 << u32::from(attempt.saturating_sub(1)).min(16);
                self.cfg
                    .rto_initial
                    .saturating_mul(factor)
                    .min(self.cfg.rto_max)
            }
        }
    }

    /// Padding that makes a request worth a reply of `reply_max` bytes under the 3x limit.
    pub(crate) fn padding_for(&self, request_len: usize, reply_max: usize) -> u16 {
        let want = reply_max.div_ceil(3);
        u16::try_from(want.saturating_sub(request_len)).unwrap_or(u16::MAX)
    }

    /// What a leaf-set probe may earn from a node that has not verified us: its full leaf-set
    /// reply and the plain probes it sends to verify our address.
    fn leaf_reply_max(&self) -> usize {
        wire::HEADER_LEN
            + 4
            + 1
            + 2
            + self.cfg.leaf_set_size * (16 + A::MAX_ENCODED_LEN)
            + (1 + usize::from(self.cfg.probe_retries)) * PLAIN_PROBE_LEN
    }

    pub(crate) fn on_probe(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        probe: Probe<A>,
        apps: &mut Apps<A>,
    ) {
        let Probe {
            nonce,
            token,
            leaf,
            failed,
            active,
        } = probe;
        let mut verified = self.is_verified(Some(sender.id), &sender.addr);
        if !verified && token != 0 && token == self.token_for(sender.id, &sender.addr) {
            // It echoed the token we gave that address: it receives there.
            self.remember_verified(sender.id, &sender.addr);
            verified = true;
        }
        self.refresh_suspicion(now, &sender);
        let budget = self.budget_left(Some(sender.id), &sender.addr);
        // A leaf-set probe is answered with our leaf set, which confirms that we took the
        // sender in, only once its address is verified; until then a plain reply carrying a
        // token, which the sender echoes in its next leaf-set probe to prove its address.
        // A joining node that has not heard from its root has no leaf set to speak of, and
        // must not be taken into anyone's: it answers plainly (MSPastry: a joining node
        // enters leaf sets through its own leaf-set probes, sent once its root has answered).
        let awaiting = self.awaiting_root();
        let reply_leaf = leaf.as_ref().filter(|_| verified && !awaiting).map(|_| {
            // Nonce, token and flags precede the leaf set.
            let fixed = wire::HEADER_LEN + 4 + 4 + 1;
            let m = self.leaf_msg(Some(sender.id), budget.saturating_sub(fixed));
            if m.cw.len() + m.ccw.len() < self.leaf.len().saturating_sub(1) {
                self.counters.amplification_limited += 1;
            }
            m
        });
        // A plain probe's sender may belong in our routing table: a probe of it rides on the
        // reply. A joining sender cannot enter it yet (an answer would say it is not active):
        // it is kept to be considered once it is likely active, unprobed until then.
        let carried = match (&leaf, active) {
            (None, true) => self.carried_probe(&sender.addr, |n| {
                n.consider_table(now, &sender, false, false);
            }),
            (None, false) => {
                if self.table_wants_joiner(sender.id) {
                    self.defer_table(&sender, false);
                }
                0
            }
            (Some(_), _) => 0,
        };
        let reply = self.encode(Message::ProbeReply {
            active: self.is_active(),
            nonce,
            token: if verified {
                0
            } else {
                self.token_for(sender.id, &sender.addr)
            },
            leaf: reply_leaf,
            probe: carried,
        });
        if !self.send_budgeted(Some(sender.id), &sender.addr, reply, true) && carried != 0 {
            // The reply was not sent: the probe goes on its own (within budget as ever).
            self.send_probe(&sender.addr);
        }
        match leaf {
            Some(_) if awaiting => {}
            Some(l) if verified => {
                // The sender says it belongs in our leaf set: first-hand news, taken at once so
                // that it is known here before our reply lets it become active.
                if self.leaf.contains(sender.id) || self.leaf_fits(sender.id, None) {
                    self.add_leaf(
                        now,
                        apps,
                        Peer::verified(sender.clone(), crate::Rtt::default()),
                    );
                } else {
                    self.remember_declined(now, &sender);
                }
                for h in l.cw.iter().chain(l.ccw.iter()) {
                    self.consider_leaf(now, h);
                }
                if !failed.is_empty() {
                    // A failure notice: the sender's leaf set holds what ours will need once
                    // the failed nodes are gone (see `repair_from_notice`).
                    let keep = self.cfg.leaf_set_size;
                    self.notice = Some(alloc::boxed::Box::new(super::membership::Notice {
                        failed: failed.iter().copied().take(wire::MAX_FAILED).collect(),
                        leaf: l
                            .cw
                            .iter()
                            .chain(l.ccw.iter())
                            .take(keep)
                            .cloned()
                            .collect(),
                    }));
                }
            }
            // Not verified: the plain reply carries a token; a leaf-set probe that echoes it
            // is taken.
            Some(_) => {}
            // Considered for the routing table above.
            None => {}
        }
        if verified {
            for f in failed {
                if f != self.me.id {
                    // A notice from the failed node's ring neighbour (as we see the ring) comes
                    // from a node that probed it through all its retries, and has told the
                    // whole leaf set. From anyone else it is a hint: check fully, and if we
                    // are the neighbour, tell the leaf set ourselves.
                    let from_neighbour = self.leaf.adjacent(sender.id, f);
                    self.suspect_id(now, f, from_neighbour);
                }
            }
        }
    }

    /// Settles our probe of `sender` with its reply. Returns whether the reply answered our
    /// probe under way there (a stale or forged one changes nothing).
    pub(crate) fn on_probe_reply(
        &mut self,
        now: Instant,
        sender: NodeHandle<A>,
        nonce: u32,
        leaf: Option<LeafSetMsg<A>>,
        active: bool,
        apps: &mut Apps<A>,
    ) -> bool {
        match self.probes.get(&sender.addr) {
            Some(p) if p.nonce == nonce => {}
            _ => return false,
        }
        let Some(p) = self.probes.remove(&sender.addr) else {
            return false;
        };
        if let Some(id) = p.id {
            self.pending_leaf.retain(|x| *x != id);
        }
        Self::trim(&mut self.probes);
        if let Some(expected) = p.id
            && expected != sender.id
        {
            // Someone else answers at that address now: the node we probed is gone from it.
            // That says nothing of a node we know at another address: the address may have
            // come from a claim (a routed message's origin names any id at any address), and
            // giving up on the id there would fail a live node's messages.
            let elsewhere = |q: Option<&Peer<A>>| q.is_some_and(|q| q.handle.addr != sender.addr);
            if !elsewhere(self.leaf.get(expected)) && !elsewhere(self.table.find(expected)) {
                self.declare_dead(now, expected, false, apps);
            }
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
        if p.purpose & P_LEAF != 0 && !p.sent_leaf {
            // The address is verified now: send the leaf-set probe we held back.
            self.probe(now, &sender, P_LEAF, &p.failed, true);
            if self.leaf.contains(sender.id) {
                self.add_leaf(now, apps, peer.clone());
            }
        } else if p.purpose & P_LEAF != 0 && leaf.is_some() {
            let mut confirmed = peer.clone();
            confirmed.set_flag(CONFIRMED, true);
            self.add_leaf(now, apps, confirmed);
        } else if self.leaf.contains(sender.id) {
            self.add_leaf(now, apps, peer.clone());
        } else if active && self.leaf_wants(sender.id, None) && !self.awaiting_root() {
            // Learned from elsewhere but belongs in our leaf set: exchange leaf sets first.
            // (A joining node waits for its root's leaf set before judging that; a node that
            // is joining itself will send us its leaf-set probe when it is ready.)
            self.probe(now, &sender, P_LEAF, &[], true);
        }
        // Only active nodes route: a joining node in a table would hold what it is sent. It is
        // kept to be considered again later (bounded), by which time it is likely active.
        if active {
            self.offer_table(peer);
            // The round trip was sampled above, before the peer was offered to the leaf set
            // and the table with it.
            self.proved_alive(now, &sender, None);
        } else {
            self.defer_table(&sender, true);
        }
        if let Some(l) = leaf {
            // The member we asked to refill a side names what lies beyond it on that side.
            let extend = [Side::Cw, Side::Ccw]
                .into_iter()
                .find(|s| self.repair_asked[super::membership::side_index(*s)] == Some(sender.id));
            if let Some(side) = extend
                && self.leaf.side_peers(side).len() == 0
            {
                // Failures emptied that side, so we asked the far end of the other one. If
                // going on past it the same way comes round past us (it names, that way, a
                // node of the side it is on: its leaf set leaves us out), the whole ring lies
                // within its leaf set and ours: the nodes before us on its side are our
                // neighbours on the empty one, however far round they lie.
                let beyond = match side {
                    Side::Ccw => &l.cw,
                    Side::Cw => &l.ccw,
                };
                let ours = |id: Id| {
                    id != sender.id && self.leaf.side_peers(side.opposite()).any(|p| p.id() == id)
                };
                if beyond.iter().any(|h| ours(h.id)) {
                    self.leaf.close_hole(side);
                }
            }
            for h in l.cw.iter().chain(l.ccw.iter()) {
                self.consider_leaf_from(now, h, extend);
            }
            if let Some(side) = extend
                && self.pending_leaf.is_empty()
            {
                // The refill of that side learned nothing new: what the side holds is all the
                // ring has there, so it stops refusing nodes from the far half (a sparse ring
                // may have its next neighbour more than half the ring away).
                self.leaf.close_hole(side);
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
        true
    }

    /// `sender` has just sent us a datagram. If our probe of it has gone unanswered at least
    /// once and its address is verified, it is alive and its replies (or our probes) were
    /// lost: ask again at once with a fresh nonce and a fresh count of attempts, so that it is
    /// not declared dead for the lost datagrams alone. Once per probe, so that datagrams forged
    /// with a dead node's address cannot keep its probe going. Called for every datagram: the
    /// probe lookup comes first, the verification only for a probe that lost an attempt.
    pub(crate) fn refresh_suspicion(&mut self, now: Instant, sender: &NodeHandle<A>) {
        let addr = &sender.addr;
        let Some(p) = self.probes.get(addr) else {
            return;
        };
        if p.attempts <= 1 || p.refreshed || p.id != Some(sender.id) {
            return;
        }
        if !self.is_verified(Some(sender.id), addr) {
            return;
        }
        if let Some(p) = self.probes.get_mut(addr) {
            p.refreshed = true;
        }
        self.restart_probe(now, addr);
    }

    /// Sends the probe to `addr` again as a first attempt: a fresh nonce (a late answer to an
    /// earlier one must not pass for this one), the attempts counted afresh and its round trip
    /// timed from now.
    fn restart_probe(&mut self, now: Instant, addr: &A) {
        let nonce = self.fresh_nonce();
        let Some(p) = self.probes.get_mut(addr) else {
            return;
        };
        p.nonce = nonce;
        p.attempts = 1;
        p.sent_at = now;
        self.send_attempt(now, addr);
    }

    /// Arms the timer of the probe's current attempt and sends it.
    fn send_attempt(&mut self, now: Instant, addr: &A) {
        let Some(p) = self.probes.get(addr) else {
            return;
        };
        // A liveness check holds messages for its verdict: its second attempt waits as long as
        // the first (a lost datagram, not congestion, is the likely cause of one silence), and
        // backoff begins with the third. Three attempts span four timeouts rather than seven.
        // Under 10-minute churn at 2,000 nodes, the mean route delay penalty of lookups went
        // from 6.93 to 5.81.
        let attempt = if p.purpose & P_LIVE != 0 {
            p.attempts.saturating_sub(1).max(1)
        } else {
            p.attempts
        };
        let deadline = now + self.probe_rto(p.id, attempt);
        if let Some(p) = self.probes.get_mut(addr) {
            p.deadline = deadline;
        }
        self.schedule(deadline, TimerKind::Probe(addr.clone()));
        self.send_probe(addr);
    }

    pub(crate) fn on_probe_timer(
        &mut self,
        now: Instant,
        at: Instant,
        addr: A,
        apps: &mut Apps<A>,
    ) {
        let Some(p) = self.probes.get(&addr) else {
            return;
        };
        if p.deadline != at {
            return;
        }
        if p.carried {
            // The answer that carried it went unanswered: one probe of its own (sending it
            // clears `carried`), counted as a first attempt so that its reply is timed from it.
            self.counters.retransmitted += 1;
            self.restart_probe(now, &addr);
            return;
        }
        let Some(p) = self.probes.get_mut(&addr) else {
            return;
        };
        let (in_leaf, in_table) = p.id.map_or((false, false), |id| {
            (self.leaf.contains(id), self.table.find(id).is_some())
        });
        let none_queued = p.queued.is_empty();
        let retries = if p.purpose & P_LIVE != 0 && none_queued && in_table && !in_leaf {
            // A node we hold in the routing table only, suspected because a hop to it went
            // unanswered or a member reported it dead: the hop or the report was evidence
            // already, and wrongly dropping the entry costs only a cell that maintenance
            // refills, so one probe decides. Under 10-minute churn the retries were 0.027 of
            // 0.790 control messages per node per second.
            0
        } else if p.purpose & (P_NOTICED | P_RECHECK) != 0 {
            // A failure notice comes from a node that has probed the suspect through all its
            // retries already, as did our own probe that led to a recheck: one retry here is
            // enough to guard against a lost datagram.
            self.cfg.probe_retries.min(1)
        } else if p.purpose == P_TABLE
            && none_queued
            && p.flights.is_empty()
            && !in_leaf
            && !in_table
        {
            // Only a candidate for the routing table, which nothing waits on: one that does
            // not answer at once is not worth more datagrams. Under churn, rows name many
            // nodes that have died since, and retrying each of them was a large share of all
            // probes.
            0
        } else {
            self.cfg.probe_retries
        };
        if p.attempts <= retries {
            p.attempts += 1;
            self.counters.retransmitted += 1;
            self.send_attempt(now, &addr);
            return;
        }
        let Some(p) = self.probes.remove(&addr) else {
            return;
        };
        if let Some(id) = p.id {
            self.pending_leaf.retain(|x| *x != id);
        }
        Self::trim(&mut self.probes);
        let known = |p: Option<&Peer<A>>| p.is_some_and(|q| q.handle.addr == addr);
        let mut last_chance = None;
        if let Some(id) = p.id
            && p.purpose & P_LIVE == 0
            && known(self.leaf.get(id))
            && self.suspect_for(now, &NodeHandle::new(id, addr.clone()), P_LIVE | P_RECHECK)
        {
            // A probe that measured a round trip, verified an address or exchanged leaf sets
            // went unanswered, but its target is a leaf-set member: members are declared dead
            // by a liveness check of their own, now under way. Under 5 % loss three lost round
            // trips in a row happen about once in a thousand probes, and a live member wrongly
            // dropped stays out of our leaf set while we deliver keys that are its (should our
            // ring neighbour die meanwhile, the member we dropped would be the next). Should
            // the check not start (a full probe table), the member is declared dead below:
            // it must not be left without a verdict.
        } else if let Some(id) = p.id
            && p.purpose & P_LEAF != 0
            && !p.last_chance
            && matches!(self.phase, super::Phase::Joining { replied: true, .. })
            && self.leaf.would_neighbour(id)
        {
            // A joining node gives up on a member its root named that never answered, and
            // becomes active without it. Had that member been our ring neighbour and alive
            // (every attempt lost on a lossy path: under 5 % loss, about one probe in five
            // hundred with the address check and the leaf-set exchange), we would deliver the
            // keys that are its until one of us heard of the other again. One more probe
            // settles it. It starts once the join has gone on without it (below): holding the
            // join for it would hold, under churn, the joins whose neighbour has died, and the
            // messages members route to the joining node meanwhile.
            last_chance = Some(NodeHandle::new(id, addr.clone()));
        } else if let Some(id) = p.id
            && (known(self.leaf.get(id)) || known(self.table.find(id)))
        {
            let neighbour = [Side::Cw, Side::Ccw]
                .into_iter()
                .any(|s| self.leaf.neighbour(s).is_some_and(|q| q.id() == id));
            self.declare_dead(now, id, p.purpose & P_NOTICED != 0, apps);
            if neighbour {
                // Our ring neighbour, found dead by losing every attempt: on a lossy path that
                // happens to live nodes too, and it would then wait for its own silence check
                // (a heartbeat period and a failure timeout) before exchanging leaf sets again,
                // while we deliver the keys that are its. One more leaf-set probe brings it
                // back at once if it is alive; a dead one costs a few datagrams.
                // Exempt from the send budget: the address was a verified member a moment
                // ago, but the small cache of verified addresses may have moved on, and the
                // budget would then swallow the retries unsent.
                self.probe(now, &NodeHandle::new(id, addr.clone()), P_LEAF, &[], true);
            }
        }
        for seq in p.flights {
            self.flight_failed(now, seq, apps);
        }
        if self.is_active() {
            self.continue_repair(now);
        }
        self.check_active(now, apps);
        if let Some(h) = last_chance {
            self.probe(now, &h, P_LEAF, &[], true);
            if let Some(q) = self.probes.get_mut(&h.addr) {
                q.last_chance = true;
            }
            // Other members may still hold the join: this probe must not be one more.
            self.pending_leaf.retain(|x| *x != h.id);
        }
    }

    /// Forgets a probe whose target announced that it is leaving.
    pub(crate) fn cancel_probe(&mut self, now: Instant, addr: &A, apps: &mut Apps<A>) {
        if let Some(p) = self.probes.remove(addr) {
            if let Some(id) = p.id {
                self.pending_leaf.retain(|x| *x != id);
            }
            for seq in p.flights {
                self.flight_failed(now, seq, apps);
            }
        }
    }

    pub(crate) fn clear_probes(&mut self) {
        self.probes.clear();
        self.probes.shrink_to_fit();
        self.pending_leaf = Vec::new();
    }

    // ----- what probes and datagrams teach -----

    /// Notes that a datagram came from `sender`; returns whether it is a leaf-set member.
    pub(crate) fn heard_from(&mut self, now: Instant, sender: &NodeHandle<A>) -> bool {
        self.leaf.update(sender.id, |e| {
            if e.peer.handle.addr == sender.addr {
                e.last_heard = now;
            }
        })
    }

    /// Notes that `node` answered us (a probe's reply, an acknowledgement): see
    /// [`Core::stale_after`]. Only answers count: a probe reply must echo a random nonce, an
    /// ack an unpredictable hop number (see [`Core::disguise`]) from the address the hop went
    /// to. An entry that is also a leaf-set member is aged the same way: heartbeats, which a
    /// forger can send, do not count. With `sample`, the answer's round trip is taken too,
    /// in the same pass over the table (an ack's case: once per hop).
    pub(crate) fn proved_alive(
        &mut self,
        now: Instant,
        node: &NodeHandle<A>,
        sample: Option<Duration>,
    ) {
        if let Some(s) = sample {
            self.leaf_rtt_sample(node.id, &node.addr, s);
        }
        let at = crate::peer::heard_units(now);
        self.table.update(node.id, |p| {
            if p.handle.addr == node.addr {
                p.heard = at;
                if let Some(s) = sample {
                    p.rtt.sample(s);
                }
            }
        });
    }

    pub(crate) fn rtt_sample(&mut self, id: Id, addr: &A, sample: Duration) {
        self.leaf_rtt_sample(id, addr, sample);
        self.table.update(id, |p| {
            if &p.handle.addr == addr {
                p.rtt.sample(sample);
            }
        });
    }

    fn leaf_rtt_sample(&mut self, id: Id, addr: &A, sample: Duration) {
        self.leaf.update(id, |e| {
            if &e.peer.handle.addr == addr {
                e.peer.rtt.sample(sample);
            }
        });
    }

    /// `to` acknowledged one of our messages (the ack echoed one of our hop numbers, which
    /// start at random): it is alive. A liveness check of it under way no longer decides its fate: the
    /// suspicion ends and what waited for the verdict goes on. The probe itself runs on, so
    /// that its reply still measures the round trip (the ack of a resent message cannot); if
    /// it goes unanswered after all (the ack was forged, or the node died since), a leaf-set
    /// member is suspected afresh and a table entry is dropped.
    pub(crate) fn acked_by(&mut self, now: Instant, to: &NodeHandle<A>, apps: &mut Apps<A>) {
        let Some(p) = self.probes.get_mut(&to.addr) else {
            return;
        };
        if p.purpose & P_LIVE == 0 || p.id != Some(to.id) {
            return;
        }
        p.purpose &= !(P_LIVE | P_NOTICED | P_RECHECK);
        if self.clear_suspect(to.id) {
            self.retry_held(now, apps);
        }
    }

    pub(crate) fn clear_suspect(&mut self, id: Id) -> bool {
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
}

#[cfg(test)]
mod tests {
    use crate::node::Node;
    use crate::wire::{Datagram, Message};
    use crate::{Config, Id, Instant, NodeHandle, Peer, Rtt};
    use alloc::vec::Vec;
    use core::time::Duration;

    use crate::node::testing::{ME, alone, sent};

    /// Shares no digit with `ME`: it belongs in row 0 of its table.
    const OTHER: u128 = 0xa234_5678_9abc_def0_1122_3344_5566_7788;

    /// A node with one ring neighbour (alone, it would skip its heartbeats and try to join
    /// again through any node it knows).
    fn with_neighbour() -> Node<u32> {
        let mut node = alone();
        let neighbour = NodeHandle::new(Id::new(ME + 1), 80);
        let _ = node
            .core
            .leaf
            .insert(Peer::verified(neighbour, Rtt::default()), Instant::ZERO);
        node
    }

    /// A datagram from the other node.
    fn from_other(message: Message<u32>) -> Vec<u8> {
        Datagram::<u32>::new(Id::new(OTHER), message).to_bytes()
    }

    fn plain_probe(nonce: u32, active: bool) -> Vec<u8> {
        from_other(Message::Probe {
            nonce,
            token: 0,
            leaf: None,
            failed: Vec::new(),
            padding: 0,
            active,
        })
    }

    /// A reply from the other node, carrying a probe of ours unless `probe` is 0.
    fn reply(nonce: u32, probe: u32) -> Vec<u8> {
        from_other(Message::ProbeReply {
            nonce,
            token: 0,
            leaf: None,
            active: true,
            probe,
        })
    }

    fn answer(nonce: u32) -> Vec<u8> {
        reply(nonce, 0)
    }

    #[test]
    fn the_reply_to_an_active_node_carries_our_probe_of_it() {
        let mut node = alone();
        let t0 = Instant::ZERO + Duration::from_secs(1);
        node.handle_datagram(t0, 50, &plain_probe(9, true)).unwrap();
        let out = sent(&mut node);
        // One datagram: the reply, with a probe of the sender (an empty cell of our table)
        // riding on it; no probe of its own.
        assert_eq!(out.len(), 1, "{out:?}");
        let (to, Message::ProbeReply { nonce, probe, .. }) = &out[0] else {
            panic!("not a reply: {out:?}");
        };
        assert_eq!((*to, *nonce), (50, 9));
        assert_ne!(*probe, 0);
        // Its answer, 20 ms later, measures it and takes it into the table.
        let t1 = t0 + Duration::from_millis(20);
        node.handle_datagram(t1, 50, &answer(*probe)).unwrap();
        let entry = node.routing_table().find(Id::new(OTHER)).expect("taken in");
        assert_eq!(entry.rtt.srtt_micros_or_max(), 20_000);
    }

    #[test]
    fn an_unanswered_carried_probe_is_sent_once_on_its_own() {
        let mut node = with_neighbour();
        let t0 = Instant::ZERO + Duration::from_secs(1);
        node.handle_datagram(t0, 50, &plain_probe(9, true)).unwrap();
        let out = sent(&mut node);
        let [(50, Message::ProbeReply { probe: carried, .. })] = out[..] else {
            panic!("{out:?}");
        };
        // No answer: when the probe's timeout passes it goes on its own, with a new nonce.
        let standalone = |node: &mut Node<u32>, until: Instant| {
            let mut probes = Vec::new();
            while let Some(t) = node.poll_timeout().filter(|t| *t < until) {
                node.handle_timeout(t);
                for (to, m) in sent(node) {
                    // Plain probes only: once it answers, it is a leaf-set candidate too in
                    // a ring this small, and gets a leaf-set probe.
                    if let (
                        50,
                        Message::Probe {
                            nonce, leaf: None, ..
                        },
                    ) = (to, m)
                    {
                        probes.push((t, nonce));
                    }
                }
                if !probes.is_empty() {
                    break;
                }
            }
            probes
        };
        let probes = standalone(&mut node, t0 + Duration::from_secs(60));
        let [(at, nonce)] = probes[..] else {
            panic!("{probes:?}");
        };
        assert_ne!(nonce, carried);
        // Its answer is timed from that probe: 30 ms.
        node.handle_datagram(at + Duration::from_millis(30), 50, &answer(nonce))
            .unwrap();
        let entry = node.routing_table().find(Id::new(OTHER)).expect("taken in");
        assert_eq!(entry.rtt.srtt_micros_or_max(), 30_000);
        // Answered: no plain probe goes to it again.
        let later = standalone(&mut node, at + Duration::from_secs(60));
        assert!(later.is_empty(), "{later:?} after {at:?}");
    }

    #[test]
    fn a_joining_node_is_probed_back_only_once_a_heartbeat_has_passed() {
        let mut node = with_neighbour();
        let t0 = Instant::ZERO + Duration::from_secs(1);
        node.handle_datagram(t0, 50, &plain_probe(9, false))
            .unwrap();
        let out = sent(&mut node);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            matches!(out[0], (50, Message::ProbeReply { probe: 0, .. })),
            "{out:?}"
        );
        // The next heartbeat considers it again: by then it is likely active.
        node.handle_timeout(t0 + Duration::from_secs(31));
        let out = sent(&mut node);
        assert!(
            out.iter()
                .any(|(to, m)| *to == 50 && matches!(m, Message::Probe { leaf: None, .. })),
            "{out:?}"
        );
    }

    #[test]
    fn a_carried_probe_is_answered_only_in_a_reply_to_our_own_probe() {
        let mut node: Node<u32> =
            Node::new(Config::default(), Id::new(ME), 1, 7, Instant::ZERO).unwrap();
        node.join(Instant::ZERO, 60).unwrap();
        let out = sent(&mut node);
        let Some(&(_, Message::Probe { nonce, .. })) = out.iter().find(|(to, _)| *to == 60) else {
            panic!("no probe of the bootstrap node: {out:?}");
        };
        let t = Instant::ZERO + Duration::from_millis(30);
        // A reply that answers none of our probes: its carried probe goes unanswered.
        node.handle_datagram(t, 60, &reply(nonce ^ 1, 777)).unwrap();
        let answered = |out: &[(u32, Message<u32>)], n: u32| {
            out.iter().any(|(to, m)| {
                *to == 60 && matches!(m, Message::ProbeReply { nonce, .. } if *nonce == n)
            })
        };
        assert!(!answered(&sent(&mut node), 777));
        node.handle_datagram(t, 60, &reply(nonce, 778)).unwrap();
        assert!(answered(&sent(&mut node), 778));
    }

    #[test]
    fn rows_carry_the_probe_of_the_node_that_asked_for_them() {
        let request = || {
            Datagram::<u32>::new(
                Id::new(OTHER),
                Message::RowRequest {
                    row: 0,
                    padding: 600,
                },
            )
            .to_bytes()
        };
        let t0 = Instant::ZERO + Duration::from_secs(1);
        // An empty row: no rows to carry the probe, which goes on its own.
        let mut node = alone();
        node.handle_datagram(t0, 50, &request()).unwrap();
        let out = sent(&mut node);
        assert!(matches!(out[..], [(50, Message::Probe { .. })]), "{out:?}");
        // A row with an entry: the rows carry the probe.
        let mut node = alone();
        let entry = Id::new(0x5234_5678_9abc_def0_1122_3344_5566_7788);
        let _ = node.core.table.insert(Peer::verified(
            NodeHandle::new(entry, 70),
            Rtt::from_sample(Duration::from_millis(5)),
        ));
        node.handle_datagram(t0, 50, &request()).unwrap();
        let out = sent(&mut node);
        assert_eq!(out.len(), 1, "{out:?}");
        let (50, Message::Rows { rows, probe, .. }) = &out[0] else {
            panic!("not rows: {out:?}");
        };
        assert_eq!(rows[0].1[0].id, entry);
        assert_ne!(*probe, 0);
        node.handle_datagram(t0 + Duration::from_millis(8), 50, &answer(*probe))
            .unwrap();
        assert!(node.routing_table().find(Id::new(OTHER)).is_some());
    }

    #[test]
    fn a_member_silent_to_a_leaf_set_probe_is_checked_before_it_is_dropped() {
        // Three lost round trips (about one leaf-set exchange in a thousand under 5 % loss)
        // must not drop a live member: the member gets a liveness check of its own first.
        let mut node = with_neighbour();
        let member = NodeHandle::new(Id::new(ME + 5), 81);
        let _ = node.core.leaf.insert(
            Peer::verified(member.clone(), Rtt::default()),
            Instant::ZERO,
        );
        let t0 = Instant::ZERO + Duration::from_secs(1);
        assert!(node.core.probe(t0, &member, super::P_LEAF, &[], true));
        let mut checked = false;
        while let Some(t) = node
            .poll_timeout()
            .filter(|t| *t < t0 + Duration::from_secs(30))
        {
            node.handle_timeout(t);
            let _ = sent(&mut node);
            if !node.leaf_set().contains(member.id) {
                break;
            }
            if node
                .core
                .probes
                .get(&81)
                .is_some_and(|p| p.purpose & super::P_LIVE != 0)
            {
                assert!(
                    node.leaf_set()
                        .get(member.id)
                        .is_some_and(|p| p.is_suspect())
                );
                checked = true;
            }
        }
        assert!(checked, "dropped without a liveness check of its own");
        assert!(
            !node.leaf_set().contains(member.id),
            "still a member after the check went unanswered"
        );
    }

    #[test]
    fn a_joining_node_probes_silent_would_be_neighbours_once_more_without_holding_the_join() {
        // The root names our ring neighbours-to-be on both sides, and neither ever answers
        // (on a lossy path every attempt may be lost). The join goes on without them, each
        // gets one more probe round, and only one, and no such round holds the join.
        use crate::wire::LeafSetMsg;
        let root = NodeHandle::new(Id::new(ME + 1000), 60);
        let other = NodeHandle::new(Id::new(ME - 1000), 82);
        let silent = [
            NodeHandle::new(Id::new(ME + 1), 81),
            NodeHandle::new(Id::new(ME - 1), 83),
        ];
        let mut node: Node<u32> =
            Node::new(Config::default(), Id::new(ME), 1, 7, Instant::ZERO).unwrap();
        node.join(Instant::ZERO, 60).unwrap();
        let mut now = Instant::ZERO;
        let end = now + Duration::from_secs(60);
        let mut probes_of_silent: [Vec<Instant>; 2] = [Vec::new(), Vec::new()];
        let mut active_at = None;
        loop {
            for (to, m) in sent(&mut node) {
                if let Some(i) = silent.iter().position(|h| h.addr == to) {
                    if matches!(m, Message::Probe { .. }) {
                        probes_of_silent[i].push(now);
                    }
                    continue;
                }
                let from = match to {
                    60 => &root,
                    82 => &other,
                    _ => continue,
                };
                // The root and the other member answer everything at once.
                let reply = match m {
                    Message::Probe { nonce, leaf, .. } => Message::ProbeReply {
                        nonce,
                        token: 0,
                        leaf: leaf.map(|_| LeafSetMsg::default()),
                        active: true,
                        probe: 0,
                    },
                    Message::JoinRequest { .. } => Message::JoinReply {
                        root: root.clone(),
                        leaf: LeafSetMsg {
                            cw: alloc::vec![silent[0].clone()],
                            ccw: alloc::vec![silent[1].clone(), other.clone()],
                        },
                    },
                    _ => continue,
                };
                let bytes = Datagram::new(from.id, reply).to_bytes();
                node.handle_datagram(now, to, &bytes).unwrap();
            }
            if active_at.is_none() && node.is_active() {
                active_at = Some(now);
            }
            match node.poll_timeout() {
                Some(t) if t < end => {
                    now = t;
                    node.handle_timeout(t);
                }
                _ => break,
            }
        }
        let active_at = active_at.expect("the join completes");
        let attempts = 1 + usize::from(Config::default().probe_retries);
        for sends in &probes_of_silent {
            assert_eq!(sends.len(), 2 * attempts, "{probes_of_silent:?}");
            // The join ended when the first round gave up, before the second round's first
            // attempt (which it would otherwise wait for, to the end of that round).
            assert!(
                active_at <= sends[attempts],
                "{active_at:?}: {probes_of_silent:?}"
            );
        }
    }
}
