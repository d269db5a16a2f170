//! Lookups: a request routed to a key, answered by the key's root with a reply routed back to
//! the origin's id (so that no node ever sends to an address it has not verified), retried by
//! the origin on a timeout.

use super::{Apps, Core, Event, LookupId, TimerKind};
use crate::wire::{self, Message, RouteBody, RouteMsg};
use crate::{Address, Id, Instant, NodeHandle, RouteError};

/// Lookups a member runs at once for clients outside the overlay.
pub(crate) const MAX_CLIENT_LOOKUPS: usize = 64;

/// A lookup of ours awaiting its answer.
pub(crate) struct Pending<A> {
    key: Id,
    attempts: u8,
    pub(crate) deadline: Instant,
    /// For a client's lookup: its address and its request's nonce.
    client: Option<(A, u32)>,
}

impl<A: Address> Core<A> {
    pub(crate) fn start_lookup(&mut self, now: Instant, key: Id) -> Result<LookupId, RouteError> {
        self.start_lookup_for(now, key, None)
    }

    fn start_lookup_for(
        &mut self,
        now: Instant,
        key: Id,
        client: Option<(A, u32)>,
    ) -> Result<LookupId, RouteError> {
        if self.lookups.len() >= self.cfg.max_lookups {
            return Err(RouteError::Overloaded);
        }
        let seq = self.next_lookup_id();
        let deadline = now + self.cfg.lookup_timeout;
        self.lookups.insert(
            seq,
            Pending {
                key,
                attempts: 1,
                deadline,
                client,
            },
        );
        self.schedule(deadline, TimerKind::Lookup(seq));
        Ok(LookupId {
            origin: self.me.id,
            seq,
        })
    }

    /// Routes (again) the request of lookup `seq`.
    pub(crate) fn send_lookup(&mut self, now: Instant, apps: &mut Apps<A>, seq: u32) {
        let Some(key) = self.lookups.get(&seq).map(|l| l.key) else {
            return;
        };
        self.route_internal(now, apps, key, RouteBody::Lookup { lookup: seq });
    }

    /// Routes a protocol body this node originates.
    fn route_internal(&mut self, now: Instant, apps: &mut Apps<A>, key: Id, body: RouteBody<A>) {
        let id = self.next_message_id();
        self.seen.insert(now, id.origin, id.seq);
        let msg = RouteMsg {
            seq: 0,
            origin: self.me.clone(),
            msg_seq: id.seq,
            key,
            hops: 0,
            body,
        };
        self.process_route(now, apps, msg, false, None);
    }

    pub(crate) fn on_lookup_timer(
        &mut self,
        now: Instant,
        at: Instant,
        seq: u32,
        apps: &mut Apps<A>,
    ) {
        let Some(l) = self.lookups.get_mut(&seq) else {
            return;
        };
        if l.deadline != at {
            return;
        }
        if l.attempts <= self.cfg.lookup_retries {
            l.attempts += 1;
            l.deadline = now + self.cfg.lookup_timeout;
            let deadline = l.deadline;
            self.schedule(deadline, TimerKind::Lookup(seq));
            self.send_lookup(now, apps, seq);
            return;
        }
        if let Some(l) = self.lookups.remove(&seq) {
            Self::trim(&mut self.lookups);
            if let Some((addr, nonce)) = l.client {
                self.answer_client(&addr, nonce, l.key, None, 0);
                return;
            }
            self.event(Event::LookupFailed {
                id: LookupId {
                    origin: self.me.id,
                    seq,
                },
                key: l.key,
            });
        }
    }

    /// We are the root of a lookup's key: say so, and answer the origin.
    pub(crate) fn serve_lookup(
        &mut self,
        now: Instant,
        apps: &mut Apps<A>,
        origin: NodeHandle<A>,
        key: Id,
        lookup: u32,
        hops: u8,
    ) {
        self.event(Event::LookupServed {
            id: LookupId {
                origin: origin.id,
                seq: lookup,
            },
            key,
            origin: origin.clone(),
            hops,
        });
        if origin.id == self.me.id {
            let me = self.me.clone();
            self.lookup_answered(lookup, key, me, hops);
            return;
        }
        let reply = RouteBody::LookupReply {
            lookup,
            key,
            root: self.me.clone(),
            hops,
        };
        self.route_internal(now, apps, origin.id, reply);
    }

    /// An answer reached the root of the origin's id: ours, if we asked.
    pub(crate) fn lookup_reply_delivered(
        &mut self,
        reply_key: Id,
        lookup: u32,
        key: Id,
        root: NodeHandle<A>,
        hops: u8,
    ) {
        if reply_key != self.me.id {
            // The origin is gone; its answer ends at whoever is the root of its id now.
            self.counters.rejected += 1;
            return;
        }
        self.lookup_answered(lookup, key, root, hops);
    }

    fn lookup_answered(&mut self, lookup: u32, key: Id, root: NodeHandle<A>, hops: u8) {
        match self.lookups.get(&lookup) {
            Some(l) if l.key == key => {}
            // A duplicate answer (a retry was answered too) or a forged one.
            _ => return,
        }
        let client = self.lookups.remove(&lookup).and_then(|l| l.client);
        Self::trim(&mut self.lookups);
        if let Some((addr, nonce)) = client {
            self.answer_client(&addr, nonce, key, Some(root), hops);
            return;
        }
        self.event(Event::LookupDone {
            id: LookupId {
                origin: self.me.id,
                seq: lookup,
            },
            key,
            root,
            hops,
        });
    }

    /// A client asks us to look up a key: run the lookup on its behalf and answer it when it
    /// ends. A request too short to pay for the answer is ignored; one we cannot serve (not
    /// active, too many lookups under way) gets an answer without a root at once.
    pub(crate) fn on_lookup_request(
        &mut self,
        now: Instant,
        client: NodeHandle<A>,
        nonce: u32,
        key: Id,
        len: usize,
        apps: &mut Apps<A>,
    ) {
        if len < wire::LOOKUP_REQUEST_MIN_LEN {
            self.counters.rejected += 1;
            return;
        }
        let serving = self.lookups.values().filter(|l| l.client.is_some()).count();
        let started = if self.is_active() && serving < MAX_CLIENT_LOOKUPS {
            self.start_lookup_for(now, key, Some((client.addr.clone(), nonce)))
                .ok()
        } else {
            None
        };
        match started {
            Some(id) => self.send_lookup(now, apps, id.seq),
            None => self.answer_client(&client.addr, nonce, key, None, 0),
        }
    }

    fn answer_client(
        &mut self,
        addr: &A,
        nonce: u32,
        key: Id,
        root: Option<NodeHandle<A>>,
        hops: u8,
    ) {
        let bytes = self.encode(Message::LookupAnswer {
            nonce,
            key,
            root,
            hops,
        });
        self.send_budgeted(None, addr, bytes, false);
    }
}
