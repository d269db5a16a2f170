//! Lookups: a request routed to a key, answered by the key's root with a reply routed back to
//! the origin's id (so that no node ever sends to an address it has not verified), retried by
//! the origin on a timeout.

use super::{Apps, Core, Event, LookupId, TimerKind};
use crate::wire::{RouteBody, RouteMsg};
use crate::{Address, Id, Instant, NodeHandle, RouteError};

/// A lookup of ours awaiting its answer.
pub(crate) struct Pending {
    key: Id,
    attempts: u8,
    pub(crate) deadline: Instant,
}

impl<A: Address> Core<A> {
    pub(crate) fn start_lookup(&mut self, now: Instant, key: Id) -> Result<LookupId, RouteError> {
        if self.lookups.len() >= self.cfg.max_lookups {
            return Err(RouteError::Overloaded);
        }
        let seq = self.next_lookup;
        self.next_lookup = self.next_lookup.wrapping_add(1);
        let deadline = now + self.cfg.lookup_timeout;
        self.lookups.insert(
            seq,
            Pending {
                key,
                attempts: 1,
                deadline,
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
        self.lookups.remove(&lookup);
        Self::trim(&mut self.lookups);
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
}
