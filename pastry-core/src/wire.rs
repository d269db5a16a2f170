//! The wire format: every datagram the protocol sends, and a decoder for untrusted bytes.
//!
//! `WIRE.md` at the crate root specifies the format byte by byte; this module is the one
//! implementation of it. Decoding never panics and never allocates more than a bound derived
//! from the datagram's length; anything truncated, oversized, malformed or of another version
//! is a [`DecodeError`].

use alloc::vec::Vec;

use crate::{Address, Config, Id, NodeHandle};

/// First byte of every datagram.
pub const MAGIC: u8 = 0x50;
/// Protocol version carried in the second byte.
pub const VERSION: u8 = 1;
/// Bytes before the message body: magic, version, type, sender id.
pub const HEADER_LEN: usize = 3 + 16;
/// Most entries a leaf-set side may carry on the wire (L <= 64).
pub const MAX_LEAF_SIDE: usize = 32;
/// Most failed ids one probe may carry.
pub const MAX_FAILED: usize = 64;
/// A round-trip hint in a `Rows` message for an entry whose round trip the sender does not
/// know (or that is 6.5 s or more).
pub const RTT_UNKNOWN: u16 = u16::MAX;

/// Most rows a `Rows` message may carry (b = 1 gives 128 rows).
pub const MAX_ROWS: usize = 128;
/// Most entries a routing-table row may carry on the wire (b <= 4).
pub const MAX_ROW_ENTRIES: usize = 16;

/// The name of a datagram's message type, read from its header without decoding the body:
/// for monitoring and traffic accounting. `None` when the header is not ours.
///
/// ```
/// use pastry_core::wire::{message_name, Datagram, Message};
/// use pastry_core::Id;
/// let d = Datagram::<u32>::new(Id::new(1), Message::Ack { seq: 7 });
/// assert_eq!(message_name(&d.to_bytes()), Some("ack"));
/// assert_eq!(message_name(b"hello"), None);
/// ```
pub fn message_name(datagram: &[u8]) -> Option<&'static str> {
    if datagram.len() < HEADER_LEN || datagram[0] != MAGIC || datagram[1] != VERSION {
        return None;
    }
    Some(match datagram[2] {
        T_PROBE => "probe",
        T_PROBE_REPLY => "probe reply",
        T_HEARTBEAT => "heartbeat",
        T_ROUTE => "route",
        T_ACK => "ack",
        T_DIRECT => "direct",
        T_JOIN_REQUEST => "join request",
        T_JOIN_REPLY => "join reply",
        T_ROW_REQUEST => "row request",
        T_ROWS => "rows",
        T_LEAVE => "leave",
        T_LOOKUP_REQUEST => "lookup request",
        T_LOOKUP_ANSWER => "lookup answer",
        _ => return None,
    })
}

const T_PROBE: u8 = 1;
const T_PROBE_REPLY: u8 = 2;
const T_HEARTBEAT: u8 = 3;
const T_ROUTE: u8 = 4;
const T_ACK: u8 = 5;
const T_DIRECT: u8 = 6;
const T_JOIN_REQUEST: u8 = 7;
const T_JOIN_REPLY: u8 = 8;
const T_ROW_REQUEST: u8 = 9;
const T_ROWS: u8 = 10;
const T_LEAVE: u8 = 11;
const T_LOOKUP_REQUEST: u8 = 12;
const T_LOOKUP_ANSWER: u8 = 13;

/// Smallest `LookupRequest` a member answers: three times its size covers the answer (with an
/// IPv6 root address) under the anti-amplification limit.
pub const LOOKUP_REQUEST_MIN_LEN: usize = 40;

/// Smallest `JoinRequest` a node answers: it earns the verification probes the bootstrap node
/// sends to the joiner (`1 + probe_retries` plain probes of 31 bytes, three by default) under
/// the 3x anti-amplification limit.
pub const JOIN_REQUEST_MIN_LEN: usize = 40;

const BODY_APP: u8 = 0;
const BODY_JOIN: u8 = 1;
const BODY_JOIN_STATE: u8 = 2;
const BODY_LOOKUP: u8 = 3;
const BODY_LOOKUP_REPLY: u8 = 4;

const PROBE_HAS_LEAF: u8 = 1;
/// In a probe or a probe reply: the sender is an active member (it may be used as a
/// routing-table entry).
const PROBE_ACTIVE: u8 = 2;
/// In a probe reply: a nonce follows that the prober answers as if it were a probe.
const PROBE_ASKS: u8 = 4;

/// The flags a probe and a probe reply share.
fn probe_flags<A>(leaf: &Option<LeafSetMsg<A>>, active: bool) -> u8 {
    (if leaf.is_some() { PROBE_HAS_LEAF } else { 0 }) | if active { PROBE_ACTIVE } else { 0 }
}

/// Bytes a `Rows` datagram adds around its rows field: the header, n_hints (2, no hints) and
/// the probe nonce (4).
pub(crate) const ROWS_FRAME: usize = HEADER_LEN + 2 + 4;

/// Why bytes were not accepted as a datagram.
/// ```
/// use pastry_core::wire::{Datagram, DecodeError};
/// assert_eq!(Datagram::<u32>::decode(&[0x51, 1, 1], 1400), Err(DecodeError::BadMagic));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The datagram ends inside a field.
    #[error("datagram truncated")]
    Truncated,
    /// The datagram is longer than the configured maximum.
    #[error("datagram of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// Length received.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The first byte is not the protocol's magic byte.
    #[error("not a pastry datagram")]
    BadMagic,
    /// The version byte names a version this node does not speak.
    #[error("unknown protocol version {0}")]
    UnknownVersion(u8),
    /// The message type is unknown.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field holds a value the format forbids.
    #[error("malformed datagram: {0}")]
    Invalid(&'static str),
}

/// One routing-table row on the wire: its index and its entries.
/// ```
/// use pastry_core::{wire::Row, Id, NodeHandle};
/// let row: Row<u32> = (2, vec![NodeHandle::new(Id::new(1), 4)]);
/// assert_eq!(row.1.len(), 1);
/// ```
pub type Row<A> = (u8, Vec<NodeHandle<A>>);

/// The sender's view of its leaf set: each side nearest first.
/// ```
/// use pastry_core::wire::{leaf_len, LeafSetMsg};
/// use pastry_core::{Id, NodeHandle};
/// let m = LeafSetMsg { cw: vec![NodeHandle::new(Id::new(1), 1u32)], ccw: vec![] };
/// assert_eq!(leaf_len(&m), 2 + 16 + 4);
/// ```
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSetMsg<A> {
    /// Clockwise side.
    pub cw: Vec<NodeHandle<A>>,
    /// Counter-clockwise side.
    pub ccw: Vec<NodeHandle<A>>,
}

impl<A> Default for LeafSetMsg<A> {
    fn default() -> Self {
        LeafSetMsg {
            cw: Vec::new(),
            ccw: Vec::new(),
        }
    }
}

/// A message being routed towards the node numerically closest to its key.
/// ```
/// use pastry_core::wire::{encode_route, Datagram, Message, RouteBody, RouteMsg};
/// use pastry_core::{Id, NodeHandle};
/// let m = RouteMsg {
///     seq: 1,
///     origin: NodeHandle::new(Id::new(2), 2u32),
///     msg_seq: 7,
///     key: Id::new(99),
///     hops: 0,
///     body: RouteBody::App { app: 0, payload: vec![1, 2] },
/// };
/// let bytes = encode_route(Id::new(2), &m);
/// assert_eq!(Datagram::decode(&bytes, 1400).unwrap().message, Message::Route(m));
/// ```
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMsg<A> {
    /// Per-hop sequence number, echoed by the next hop's acknowledgement.
    pub seq: u32,
    /// The node that first sent the message.
    pub origin: NodeHandle<A>,
    /// The origin's sequence number: with the origin's id it names the message.
    pub msg_seq: u32,
    /// The key the message is routed to.
    pub key: Id,
    /// Overlay hops taken so far.
    pub hops: u8,
    /// What the message carries.
    pub body: RouteBody<A>,
}

/// The contents of a routed message.
/// ```
/// use pastry_core::wire::RouteBody;
/// let body: RouteBody<u32> = RouteBody::App { app: 1, payload: b"hi".to_vec() };
/// assert!(matches!(body, RouteBody::App { app: 1, .. }));
/// ```
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteBody<A> {
    /// Application data for the application registered under `app`.
    App {
        /// Application id.
        app: u16,
        /// Application bytes.
        payload: Vec<u8>,
    },
    /// A join request routed to the joining node's id.
    Join {
        /// The joining node.
        joiner: NodeHandle<A>,
        /// The first routing-table row not yet sent to the joiner by earlier hops.
        next_row: u8,
        /// A random tag chosen by the bootstrap node (the route's origin); the state sent
        /// back for this join must carry it.
        tag: u32,
    },
    /// What a node on a join's path gives the joiner (its rows; from the root, also its leaf
    /// set), routed to the bootstrap node's id: the bootstrap node is the only member the
    /// joiner contacted, and it relays this to the joiner.
    JoinState {
        /// The join's tag.
        tag: u32,
        /// The joining node.
        joiner: NodeHandle<A>,
        /// Routing-table rows for the joiner.
        rows: Vec<Row<A>>,
        /// The root's leaf set (only in the root's message).
        leaf: Option<LeafSetMsg<A>>,
    },
    /// A lookup: the root answers with a [`RouteBody::LookupReply`] routed to the origin's
    /// id. Retries of one lookup carry the same `lookup` number.
    Lookup {
        /// The origin's lookup number.
        lookup: u32,
    },
    /// The answer to a lookup, routed to the origin's id.
    LookupReply {
        /// The origin's lookup number.
        lookup: u32,
        /// The key looked up.
        key: Id,
        /// The root of the key.
        root: NodeHandle<A>,
        /// Overlay hops the lookup took.
        hops: u8,
    },
}

impl<A> RouteBody<A> {
    /// Whether the body is protocol overhead (joins and join state) rather than workload.
    pub fn is_control(&self) -> bool {
        matches!(self, RouteBody::Join { .. } | RouteBody::JoinState { .. })
    }
}

/// One protocol message.
/// ```
/// use pastry_core::wire::Message;
/// assert!(Message::<u32>::Ack { seq: 1 }.is_control());
/// ```
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<A> {
    /// Liveness / round-trip probe. With a leaf set it is a leaf-set probe: the sender treats
    /// the receiver as a leaf-set member and wants its leaf set back. `failed` names nodes the
    /// sender found dead; `padding` (zero bytes) lets a small request earn a full reply under
    /// the anti-amplification limit.
    Probe {
        /// Echoed in the reply.
        nonce: u32,
        /// An address-validation token the receiver gave the sender in an earlier reply
        /// (0 if none): echoing it proves the sender receives datagrams at its address.
        token: u32,
        /// The sender's leaf set, for leaf-set probes.
        leaf: Option<LeafSetMsg<A>>,
        /// Ids the sender declared dead.
        failed: Vec<Id>,
        /// Number of zero bytes of padding.
        padding: u16,
        /// Whether the sender is active. A joining node's probe does not make the receiver
        /// probe it back for its routing table: the receiver keeps it to consider later.
        active: bool,
    },
    /// Answer to a probe.
    ProbeReply {
        /// The probe's nonce.
        nonce: u32,
        /// A token the prober may echo in its next probe to prove its address (0 if the
        /// replier has verified the prober's address already).
        token: u32,
        /// The replier's leaf set, when the probe carried one.
        leaf: Option<LeafSetMsg<A>>,
        /// Whether the replier is active. Joining nodes answer probes too, but must not enter
        /// routing tables: messages routed through a node that is not active wait there.
        active: bool,
        /// A probe of the prober carried by the reply: a nonzero nonce the prober answers with
        /// a `ProbeReply`, as if a probe had brought it. The replier measures its round trip
        /// to the prober (a candidate for its routing table) without a datagram of its own.
        /// 0: none.
        probe: u32,
    },
    /// Periodic heartbeat to the two ring neighbours, carrying the sender's leaf set.
    Heartbeat {
        /// The sender's leaf set.
        leaf: LeafSetMsg<A>,
    },
    /// A routed message.
    Route(RouteMsg<A>),
    /// Per-hop acknowledgement of a `Route`, `Direct` or `Leave`.
    Ack {
        /// Sequence number acknowledged.
        seq: u32,
    },
    /// Application data sent straight to one node.
    Direct {
        /// Sequence number for the acknowledgement.
        seq: u32,
        /// The sender's message counter: with the sender's id it names the message.
        msg_seq: u32,
        /// Application id.
        app: u16,
        /// Application bytes.
        payload: Vec<u8>,
    },
    /// A new node asks a member (its bootstrap node) to route its join. Padded to at least
    /// [`JOIN_REQUEST_MIN_LEN`] bytes.
    JoinRequest {
        /// Number of zero bytes of padding.
        padding: u16,
    },
    /// The bootstrap node passes the join's root and the root's leaf set to the joiner.
    JoinReply {
        /// The root of the join.
        root: NodeHandle<A>,
        /// The root's leaf set.
        leaf: LeafSetMsg<A>,
    },
    /// Asks for one routing-table row. `padding` (zero bytes) lets the request earn a full
    /// row under the anti-amplification limit.
    RowRequest {
        /// Row index.
        row: u8,
        /// Number of zero bytes of padding.
        padding: u16,
    },
    /// Routing-table rows.
    Rows {
        /// `(row index, entries)` pairs.
        rows: Vec<Row<A>>,
        /// The sender's round-trip estimate to each entry, in the entries' order, in units of
        /// 100 µs ([`RTT_UNKNOWN`] where it has none); empty when not given. A receiver looking
        /// for nearer table entries uses them to skip candidates that cannot be nearer than
        /// what it has (triangle inequality), instead of probing each.
        hints: Vec<u16>,
        /// A probe of the receiver carried by the rows, as in [`Message::ProbeReply`]: a
        /// nonzero nonce the receiver answers with a `ProbeReply`. 0: none.
        probe: u32,
    },
    /// The sender is leaving the overlay. Its leaf set names each receiver's replacement.
    Leave {
        /// Sequence number for the acknowledgement.
        seq: u32,
        /// The sender's leaf set.
        leaf: LeafSetMsg<A>,
    },
    /// A client outside the overlay (a tool, a node of another ring) asks a member to look up
    /// `key` for it. The member routes a lookup and answers with [`Message::LookupAnswer`].
    /// Padded to at least [`LOOKUP_REQUEST_MIN_LEN`] bytes, which pays for the answer under
    /// the anti-amplification limit; the sender id in the header is the client's choice.
    LookupRequest {
        /// Echoed in the answer.
        nonce: u32,
        /// The key to look up.
        key: Id,
        /// Number of zero bytes of padding.
        padding: u16,
    },
    /// The answer to a [`Message::LookupRequest`]: the key's root and the lookup's hop count,
    /// or no root when the lookup failed (the member is not active, is overloaded, or the
    /// lookup timed out after its retries).
    LookupAnswer {
        /// The request's nonce.
        nonce: u32,
        /// The key looked up.
        key: Id,
        /// The root of the key, if found.
        root: Option<NodeHandle<A>>,
        /// Overlay hops from the member to the root.
        hops: u8,
    },
}

impl<A> Message<A> {
    /// Whether the message is protocol overhead rather than application data (application
    /// messages, direct messages and lookups with their replies are the workload).
    pub fn is_control(&self) -> bool {
        match self {
            Message::Direct { .. }
            | Message::LookupRequest { .. }
            | Message::LookupAnswer { .. } => false,
            Message::Route(r) => r.body.is_control(),
            _ => true,
        }
    }
}

/// A decoded datagram: who sent it and what it says.
/// ```
/// use pastry_core::wire::{Datagram, Message};
/// use pastry_core::Id;
/// let d = Datagram::<u32>::new(Id::new(1), Message::RowRequest { row: 2, padding: 0 });
/// assert_eq!(Datagram::decode(&d.to_bytes(), 1400), Ok(d));
/// ```
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram<A> {
    /// The sender's node id.
    pub sender: Id,
    /// The message.
    pub message: Message<A>,
}

/// Reads fields from the front of untrusted bytes; every read checks the length first.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn id(&mut self) -> Result<Id, DecodeError> {
        let b = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(Id::from_bytes(a))
    }

    pub(crate) fn addr<A: Address>(&mut self) -> Result<A, DecodeError> {
        let (a, used) = A::decode(self.buf)?;
        if used == 0 || used > self.buf.len() {
            return Err(DecodeError::Invalid("address length"));
        }
        self.buf = &self.buf[used..];
        Ok(a)
    }

    pub(crate) fn handle<A: Address>(&mut self) -> Result<NodeHandle<A>, DecodeError> {
        let id = self.id()?;
        let addr = self.addr()?;
        Ok(NodeHandle { id, addr })
    }

    /// A count-prefixed list of handles, at most `max` long.
    fn handles<A: Address>(
        &mut self,
        n: usize,
        max: usize,
    ) -> Result<Vec<NodeHandle<A>>, DecodeError> {
        if n > max {
            return Err(DecodeError::Invalid("list too long"));
        }
        // Each handle takes at least 17 bytes: never reserve more than the bytes could hold.
        let mut v = Vec::with_capacity(n.min(self.buf.len() / 17));
        for _ in 0..n {
            v.push(self.handle()?);
        }
        Ok(v)
    }

    fn leaf<A: Address>(&mut self) -> Result<LeafSetMsg<A>, DecodeError> {
        let ncw = usize::from(self.u8()?);
        let nccw = usize::from(self.u8()?);
        let cw = self.handles(ncw, MAX_LEAF_SIDE)?;
        let ccw = self.handles(nccw, MAX_LEAF_SIDE)?;
        Ok(LeafSetMsg { cw, ccw })
    }

    fn rows<A: Address>(&mut self) -> Result<Vec<Row<A>>, DecodeError> {
        let n = usize::from(self.u8()?);
        if n > MAX_ROWS {
            return Err(DecodeError::Invalid("list too long"));
        }
        let mut rows = Vec::with_capacity(n.min(self.buf.len() / 2));
        for _ in 0..n {
            let row = self.u8()?;
            if usize::from(row) >= MAX_ROWS {
                return Err(DecodeError::Invalid("row index"));
            }
            let count = usize::from(self.u8()?);
            rows.push((row, self.handles(count, MAX_ROW_ENTRIES)?));
        }
        Ok(rows)
    }

    fn padding(&mut self) -> Result<u16, DecodeError> {
        let n = self.u16()?;
        if self.take(usize::from(n))?.iter().any(|b| *b != 0) {
            return Err(DecodeError::Invalid("nonzero padding"));
        }
        Ok(n)
    }

    pub(crate) fn payload(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = usize::from(self.u16()?);
        Ok(self.take(n)?.to_vec())
    }
}

pub(crate) fn put_handle<A: Address>(out: &mut Vec<u8>, h: &NodeHandle<A>) {
    out.extend_from_slice(&h.id.to_bytes());
    h.addr.encode(out);
}

fn put_leaf<A: Address>(out: &mut Vec<u8>, l: &LeafSetMsg<A>) {
    out.push(l.cw.len() as u8);
    out.push(l.ccw.len() as u8);
    for h in l.cw.iter().chain(l.ccw.iter()) {
        put_handle(out, h);
    }
}

fn put_padding(out: &mut Vec<u8>, padding: u16) {
    out.extend_from_slice(&padding.to_be_bytes());
    out.resize(out.len() + usize::from(padding), 0);
}

fn put_rows<A: Address>(out: &mut Vec<u8>, rows: &[Row<A>]) {
    out.push(rows.len() as u8);
    for (r, entries) in rows {
        out.push(*r);
        out.push(entries.len() as u8);
        for h in entries {
            put_handle(out, h);
        }
    }
}

fn put_header(out: &mut Vec<u8>, t: u8, sender: Id) {
    out.push(MAGIC);
    out.push(VERSION);
    out.push(t);
    out.extend_from_slice(&sender.to_bytes());
}

fn put_route_body<A: Address>(out: &mut Vec<u8>, r: &RouteMsg<A>) {
    out.extend_from_slice(&r.seq.to_be_bytes());
    put_handle(out, &r.origin);
    out.extend_from_slice(&r.msg_seq.to_be_bytes());
    out.extend_from_slice(&r.key.to_bytes());
    out.push(r.hops);
    match &r.body {
        RouteBody::App { app, payload } => {
            out.push(BODY_APP);
            out.extend_from_slice(&app.to_be_bytes());
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.extend_from_slice(payload);
        }
        RouteBody::Join {
            joiner,
            next_row,
            tag,
        } => {
            out.push(BODY_JOIN);
            put_handle(out, joiner);
            out.push(*next_row);
            out.extend_from_slice(&tag.to_be_bytes());
        }
        RouteBody::Lookup { lookup } => {
            out.push(BODY_LOOKUP);
            out.extend_from_slice(&lookup.to_be_bytes());
        }
        RouteBody::LookupReply {
            lookup,
            key,
            root,
            hops,
        } => {
            out.push(BODY_LOOKUP_REPLY);
            out.extend_from_slice(&lookup.to_be_bytes());
            out.extend_from_slice(&key.to_bytes());
            put_handle(out, root);
            out.push(*hops);
        }
        RouteBody::JoinState {
            tag,
            joiner,
            rows,
            leaf,
        } => {
            out.push(BODY_JOIN_STATE);
            out.extend_from_slice(&tag.to_be_bytes());
            put_handle(out, joiner);
            put_rows(out, rows);
            out.push(u8::from(leaf.is_some()));
            if let Some(l) = leaf {
                put_leaf(out, l);
            }
        }
    }
}

/// Encodes a `Route` datagram from a borrowed message (the same bytes as
/// `Datagram::new(sender, Message::Route(msg.clone())).to_bytes()`, without the clone). See
/// [`RouteMsg`] for an example.
pub fn encode_route<A: Address>(sender: Id, msg: &RouteMsg<A>) -> Vec<u8> {
    let mut out = Vec::with_capacity(route_overhead(A::MAX_ENCODED_LEN) + 64);
    put_header(&mut out, T_ROUTE, sender);
    put_route_body(&mut out, msg);
    out
}

/// Encoded size of a handle.
/// ```
/// use pastry_core::{wire::handle_len, Id, NodeHandle};
/// assert_eq!(handle_len(&NodeHandle::new(Id::new(1), 7u32)), 20);
/// ```
pub fn handle_len<A: Address>(h: &NodeHandle<A>) -> usize {
    16 + h.addr.encoded_len()
}

/// Encoded size of a leaf set. See [`LeafSetMsg`] for an example.
pub fn leaf_len<A: Address>(l: &LeafSetMsg<A>) -> usize {
    2 + l
        .cw
        .iter()
        .chain(l.ccw.iter())
        .map(handle_len)
        .sum::<usize>()
}

/// Bytes a route message adds around its body, with addresses at their largest.
/// ```
/// assert_eq!(pastry_core::wire::route_overhead(19), 19 + 4 + 16 + 19 + 4 + 16 + 1 + 1);
/// ```
pub fn route_overhead(max_addr_len: usize) -> usize {
    HEADER_LEN + 4 + 16 + max_addr_len + 4 + 16 + 1 + 1
}

/// The largest application payload a routed message can carry under `max_datagram_size`.
/// ```
/// use pastry_core::wire::max_route_payload;
/// assert!(max_route_payload(1400, 19) > 1200);
/// ```
pub fn max_route_payload(max_datagram_size: usize, max_addr_len: usize) -> usize {
    max_datagram_size.saturating_sub(route_overhead(max_addr_len) + 2 + 2)
}

/// The smallest `max_datagram_size` that fits the protocol's largest unsplittable message for
/// this configuration and address size (a leaf-set probe naming one failed node, one full
/// routing-table row, a join, and a routed message with 64 bytes of payload).
/// ```
/// use pastry_core::{wire::min_datagram_size, Config};
/// assert!(min_datagram_size(&Config::default(), 19) <= Config::default().max_datagram_size);
/// ```
pub fn min_datagram_size(config: &Config, max_addr_len: usize) -> usize {
    let handle = 16 + max_addr_len;
    let probe = HEADER_LEN + 4 + 4 + 1 + 2 + config.leaf_set_size * handle + 1 + 16 + 2;
    let row = HEADER_LEN + 1 + 2 + 2 + ((1usize << config.b) - 1) * (handle + 2);
    let join = route_overhead(max_addr_len) + handle + 1 + 4;
    let join_state =
        route_overhead(max_addr_len) + 4 + handle + 1 + 1 + 2 + config.leaf_set_size * handle;
    let app = route_overhead(max_addr_len) + 2 + 2 + 64;
    probe.max(row).max(join).max(join_state).max(app)
}

impl<A: Address> Datagram<A> {
    /// A datagram from `sender`.
    pub fn new(sender: Id, message: Message<A>) -> Self {
        Datagram { sender, message }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let t = match &self.message {
            Message::Probe { .. } => T_PROBE,
            Message::ProbeReply { .. } => T_PROBE_REPLY,
            Message::Heartbeat { .. } => T_HEARTBEAT,
            Message::Route(_) => T_ROUTE,
            Message::Ack { .. } => T_ACK,
            Message::Direct { .. } => T_DIRECT,
            Message::JoinRequest { .. } => T_JOIN_REQUEST,
            Message::JoinReply { .. } => T_JOIN_REPLY,
            Message::RowRequest { .. } => T_ROW_REQUEST,
            Message::Rows { .. } => T_ROWS,
            Message::Leave { .. } => T_LEAVE,
            Message::LookupRequest { .. } => T_LOOKUP_REQUEST,
            Message::LookupAnswer { .. } => T_LOOKUP_ANSWER,
        };
        put_header(out, t, self.sender);
        match &self.message {
            Message::Probe {
                nonce,
                token,
                leaf,
                failed,
                padding,
                active,
            } => {
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(&token.to_be_bytes());
                out.push(probe_flags(leaf, *active));
                if let Some(l) = leaf {
                    put_leaf(out, l);
                }
                out.push(failed.len() as u8);
                for id in failed {
                    out.extend_from_slice(&id.to_bytes());
                }
                put_padding(out, *padding);
            }
            Message::ProbeReply {
                nonce,
                token,
                leaf,
                active,
                probe,
            } => {
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(&token.to_be_bytes());
                out.push(probe_flags(leaf, *active) | if *probe != 0 { PROBE_ASKS } else { 0 });
                if *probe != 0 {
                    out.extend_from_slice(&probe.to_be_bytes());
                }
                if let Some(l) = leaf {
                    put_leaf(out, l);
                }
            }
            Message::Heartbeat { leaf } => put_leaf(out, leaf),
            Message::JoinReply { root, leaf } => {
                put_handle(out, root);
                put_leaf(out, leaf);
            }
            Message::Route(r) => put_route_body(out, r),
            Message::Ack { seq } => out.extend_from_slice(&seq.to_be_bytes()),
            Message::Leave { seq, leaf } => {
                out.extend_from_slice(&seq.to_be_bytes());
                put_leaf(out, leaf);
            }
            Message::LookupRequest {
                nonce,
                key,
                padding,
            } => {
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(&key.to_bytes());
                put_padding(out, *padding);
            }
            Message::LookupAnswer {
                nonce,
                key,
                root,
                hops,
            } => {
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(&key.to_bytes());
                match root {
                    Some(h) => {
                        out.push(1);
                        put_handle(out, h);
                    }
                    None => out.push(0),
                }
                out.push(*hops);
            }
            Message::Direct {
                seq,
                msg_seq,
                app,
                payload,
            } => {
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&msg_seq.to_be_bytes());
                out.extend_from_slice(&app.to_be_bytes());
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                out.extend_from_slice(payload);
            }
            Message::JoinRequest { padding } => put_padding(out, *padding),
            Message::RowRequest { row, padding } => {
                out.push(*row);
                put_padding(out, *padding);
            }
            Message::Rows { rows, hints, probe } => {
                put_rows(out, rows);
                out.extend_from_slice(&(hints.len() as u16).to_be_bytes());
                for h in hints {
                    out.extend_from_slice(&h.to_be_bytes());
                }
                out.extend_from_slice(&probe.to_be_bytes());
            }
        }
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes untrusted bytes. Rejects datagrams longer than `max_len`, anything truncated,
    /// trailing bytes, unknown versions or types, out-of-range counts and nonzero padding.
    ///
    /// ```
    /// use pastry_core::wire::{Datagram, DecodeError, Message};
    /// use pastry_core::Id;
    /// let d = Datagram::<u32>::new(Id::new(9), Message::Ack { seq: 7 });
    /// let bytes = d.to_bytes();
    /// assert_eq!(Datagram::<u32>::decode(&bytes, 1400), Ok(d));
    /// assert_eq!(Datagram::<u32>::decode(&bytes[..5], 1400), Err(DecodeError::Truncated));
    /// ```
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, DecodeError> {
        if bytes.len() > max_len {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max: max_len,
            });
        }
        let mut r = Reader { buf: bytes };
        if r.u8()? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let t = r.u8()?;
        let sender = r.id()?;
        let message = match t {
            T_PROBE => {
                let nonce = r.u32()?;
                let token = r.u32()?;
                let flags = r.u8()?;
                if flags & !(PROBE_HAS_LEAF | PROBE_ACTIVE) != 0 {
                    return Err(DecodeError::Invalid("probe flags"));
                }
                let leaf = if flags & PROBE_HAS_LEAF != 0 {
                    Some(r.leaf()?)
                } else {
                    None
                };
                let nfailed = usize::from(r.u8()?);
                if nfailed > MAX_FAILED {
                    return Err(DecodeError::Invalid("list too long"));
                }
                let mut failed = Vec::with_capacity(nfailed.min(r.buf.len() / 16));
                for _ in 0..nfailed {
                    failed.push(r.id()?);
                }
                let padding = r.padding()?;
                Message::Probe {
                    nonce,
                    token,
                    leaf,
                    failed,
                    padding,
                    active: flags & PROBE_ACTIVE != 0,
                }
            }
            T_PROBE_REPLY => {
                let nonce = r.u32()?;
                let token = r.u32()?;
                let flags = r.u8()?;
                if flags & !(PROBE_HAS_LEAF | PROBE_ACTIVE | PROBE_ASKS) != 0 {
                    return Err(DecodeError::Invalid("probe flags"));
                }
                let probe = if flags & PROBE_ASKS != 0 {
                    // A flagged nonce of 0 would not survive a round trip through the encoder.
                    match r.u32()? {
                        0 => return Err(DecodeError::Invalid("probe nonce")),
                        n => n,
                    }
                } else {
                    0
                };
                let leaf = if flags & PROBE_HAS_LEAF != 0 {
                    Some(r.leaf()?)
                } else {
                    None
                };
                Message::ProbeReply {
                    nonce,
                    token,
                    leaf,
                    active: flags & PROBE_ACTIVE != 0,
                    probe,
                }
            }
            T_HEARTBEAT => Message::Heartbeat { leaf: r.leaf()? },
            T_ROUTE => {
                let seq = r.u32()?;
                let origin = r.handle()?;
                let msg_seq = r.u32()?;
                let key = r.id()?;
                let hops = r.u8()?;
                let body = match r.u8()? {
                    BODY_APP => {
                        let app = r.u16()?;
                        RouteBody::App {
                            app,
                            payload: r.payload()?,
                        }
                    }
                    BODY_JOIN => RouteBody::Join {
                        joiner: r.handle()?,
                        next_row: r.u8()?,
                        tag: r.u32()?,
                    },
                    BODY_LOOKUP => RouteBody::Lookup { lookup: r.u32()? },
                    BODY_LOOKUP_REPLY => RouteBody::LookupReply {
                        lookup: r.u32()?,
                        key: r.id()?,
                        root: r.handle()?,
                        hops: r.u8()?,
                    },
                    BODY_JOIN_STATE => {
                        let tag = r.u32()?;
                        let joiner = r.handle()?;
                        let rows = r.rows()?;
                        let leaf = match r.u8()? {
                            0 => None,
                            1 => Some(r.leaf()?),
                            _ => return Err(DecodeError::Invalid("leaf flag")),
                        };
                        RouteBody::JoinState {
                            tag,
                            joiner,
                            rows,
                            leaf,
                        }
                    }
                    _ => return Err(DecodeError::Invalid("route body kind")),
                };
                Message::Route(RouteMsg {
                    seq,
                    origin,
                    msg_seq,
                    key,
                    hops,
                    body,
                })
            }
            T_ACK => Message::Ack { seq: r.u32()? },
            T_DIRECT => {
                let seq = r.u32()?;
                let msg_seq = r.u32()?;
                let app = r.u16()?;
                Message::Direct {
                    seq,
                    msg_seq,
                    app,
                    payload: r.payload()?,
                }
            }
            T_JOIN_REQUEST => Message::JoinRequest {
                padding: r.padding()?,
            },
            T_JOIN_REPLY => Message::JoinReply {
                root: r.handle()?,
                leaf: r.leaf()?,
            },
            T_ROW_REQUEST => {
                let row = r.u8()?;
                if usize::from(row) >= MAX_ROWS {
                    return Err(DecodeError::Invalid("row index"));
                }
                let padding = r.padding()?;
                Message::RowRequest { row, padding }
            }
            T_ROWS => {
                let rows = r.rows()?;
                let n = usize::from(r.u16()?);
                if n != 0 && n != rows.iter().map(|(_, e)| e.len()).sum::<usize>() {
                    return Err(DecodeError::Invalid("row hints"));
                }
                let mut hints = Vec::with_capacity(n.min(r.buf.len() / 2));
                for _ in 0..n {
                    hints.push(r.u16()?);
                }
                let probe = r.u32()?;
                Message::Rows { rows, hints, probe }
            }
            T_LEAVE => Message::Leave {
                seq: r.u32()?,
                leaf: r.leaf()?,
            },
            T_LOOKUP_REQUEST => Message::LookupRequest {
                nonce: r.u32()?,
                key: r.id()?,
                padding: r.padding()?,
            },
            T_LOOKUP_ANSWER => {
                let nonce = r.u32()?;
                let key = r.id()?;
                let root = match r.u8()? {
                    0 => None,
                    1 => Some(r.handle()?),
                    _ => return Err(DecodeError::Invalid("root flag")),
                };
                Message::LookupAnswer {
                    nonce,
                    key,
                    root,
                    hops: r.u8()?,
                }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes"));
        }
        Ok(Datagram { sender, message })
    }
}

/// Splits routing-table rows into as few `Rows` datagrams as fit `max_len` bytes each. A row
/// too long for one datagram is split across several.
/// ```
/// use pastry_core::wire::{encode_rows, Row};
/// use pastry_core::{Id, NodeHandle};
/// let rows: Vec<Row<u32>> = vec![(0, (1..=15).map(|i| NodeHandle::new(Id::new(i), i as u32)).collect())];
/// let parts = encode_rows(Id::new(99), &rows, 120);
/// assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= 120));
/// ```
pub fn encode_rows<A: Address>(sender: Id, rows: &[Row<A>], max_len: usize) -> Vec<Vec<u8>> {
    encode_rows_hinted(sender, rows, &[], 0, max_len)
}

/// [`encode_rows`] with a round-trip hint per entry (`hints` in the entries' order, or empty
/// for none); each datagram carries the hints of its own entries. A nonzero `probe` nonce
/// goes in the first datagram only (there is none if `rows` holds no entries).
/// ```
/// use pastry_core::wire::{encode_rows_hinted, Datagram, Message, Row};
/// use pastry_core::{Id, NodeHandle};
/// let rows: Vec<Row<u32>> = vec![(0, (1..=15).map(|i| NodeHandle::new(Id::new(i), i as u32)).collect())];
/// let hints: Vec<u16> = (1..=15).collect();
/// let parts = encode_rows_hinted(Id::new(99), &rows, &hints, 0, 200);
/// let mut seen = Vec::new();
/// for p in &parts {
///     assert!(p.len() <= 200);
///     if let Message::Rows { hints, .. } = Datagram::<u32>::decode(p, 200).unwrap().message {
///         seen.extend(hints);
///     }
/// }
/// assert_eq!(seen, hints);
/// ```
pub fn encode_rows_hinted<A: Address>(
    sender: Id,
    rows: &[Row<A>],
    hints: &[u16],
    probe: u32,
    max_len: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current: Vec<Row<A>> = Vec::new();
    let mut current_hints: Vec<u16> = Vec::new();
    let hinted = !hints.is_empty();
    let mut hint_iter = hints.iter().copied();
    // The frame and n_rows.
    let base = ROWS_FRAME + 1;
    let mut size = base;
    let flush =
        |current: &mut Vec<Row<A>>, current_hints: &mut Vec<u16>, out: &mut Vec<Vec<u8>>| {
            if !current.is_empty() {
                let d = Datagram::new(
                    sender,
                    Message::Rows {
                        rows: core::mem::take(current),
                        hints: core::mem::take(current_hints),
                        probe: if out.is_empty() { probe } else { 0 },
                    },
                );
                out.push(d.to_bytes());
            }
        };
    for (r, entries) in rows {
        for h in entries {
            let hl = handle_len(h) + if hinted { 2 } else { 0 };
            let open_row = current.last().is_some_and(|(lr, _)| lr == r);
            let need = hl + if open_row { 0 } else { 2 };
            if size + need > max_len
                || current
                    .last()
                    .is_some_and(|(lr, e)| lr == r && e.len() >= MAX_ROW_ENTRIES)
                || (!open_row && current.len() >= MAX_ROWS)
            {
                flush(&mut current, &mut current_hints, &mut out);
                size = base;
            }
            if current.last().is_none_or(|(lr, _)| lr != r) {
                current.push((*r, Vec::new()));
                size += 2;
            }
            if let Some((_, e)) = current.last_mut() {
                e.push(h.clone());
            }
            if hinted {
                current_hints.push(hint_iter.next().unwrap_or(RTT_UNKNOWN));
            }
            size += hl;
        }
    }
    flush(&mut current, &mut current_hints, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::SocketAddr;

    #[test]
    fn a_carried_probe_is_flagged_and_never_zero() {
        let reply = |probe| {
            Datagram::<u32>::new(
                Id::new(9),
                Message::ProbeReply {
                    nonce: 1,
                    token: 0,
                    leaf: None,
                    active: true,
                    probe,
                },
            )
            .to_bytes()
        };
        let plain = reply(0);
        let carrying = reply(0x0102_0304);
        // Flags, then the nonce: four bytes more than a plain reply.
        assert_eq!(carrying.len(), plain.len() + 4);
        let flags = HEADER_LEN + 8;
        assert_eq!(carrying[flags], PROBE_ACTIVE | PROBE_ASKS);
        // The flag with a zero nonce would decode to "no probe" and re-encode without it.
        let mut zero = carrying.clone();
        zero[flags + 1..flags + 5].fill(0);
        assert_eq!(
            Datagram::<u32>::decode(&zero, 1400).map(|_| ()),
            Err(DecodeError::Invalid("probe nonce"))
        );
        // A probe has no such flag.
        let mut probe = Datagram::<u32>::new(
            Id::new(9),
            Message::Probe {
                nonce: 1,
                token: 0,
                leaf: None,
                failed: vec![],
                padding: 0,
                active: false,
            },
        )
        .to_bytes();
        probe[flags] = PROBE_ASKS;
        assert_eq!(
            Datagram::<u32>::decode(&probe, 1400).map(|_| ()),
            Err(DecodeError::Invalid("probe flags"))
        );
    }

    #[test]
    fn only_the_first_rows_datagram_carries_the_probe() {
        let rows: Vec<Row<u32>> = vec![(
            0,
            (1..=15)
                .map(|i| NodeHandle::new(Id::new(i), i as u32))
                .collect(),
        )];
        let parts = encode_rows_hinted(Id::new(99), &rows, &[], 77, 150);
        assert!(parts.len() > 1);
        let probes: Vec<u32> = parts
            .iter()
            .map(|p| match Datagram::<u32>::decode(p, 150).unwrap().message {
                Message::Rows { probe, .. } => probe,
                m => panic!("not rows: {m:?}"),
            })
            .collect();
        assert_eq!(probes[0], 77);
        assert!(probes[1..].iter().all(|p| *p == 0), "{probes:?}");
    }

    #[test]
    fn row_hints_must_match_the_entries() {
        let rows = vec![(0u8, vec![h(1, 1), h(2, 2)])];
        let good = Datagram::new(
            Id::new(9),
            Message::Rows {
                rows: rows.clone(),
                hints: vec![10, 20],
                probe: 0,
            },
        )
        .to_bytes();
        assert!(matches!(
            Datagram::<SocketAddr>::decode(&good, 1400).map(|d| d.message),
            Ok(Message::Rows { hints, .. }) if hints == [10, 20]
        ));
        let bad = Datagram::new(
            Id::new(9),
            Message::Rows {
                rows,
                hints: vec![10],
                probe: 0,
            },
        )
        .to_bytes();
        assert_eq!(
            Datagram::<SocketAddr>::decode(&bad, 1400).map(|_| ()),
            Err(DecodeError::Invalid("row hints"))
        );
    }

    fn h(id: u128, port: u16) -> NodeHandle<SocketAddr> {
        NodeHandle::new(
            Id::new(id),
            SocketAddr::from(([10, 0, 0, (id % 250) as u8], port)),
        )
    }

    fn samples() -> Vec<Message<SocketAddr>> {
        let leaf = LeafSetMsg {
            cw: vec![h(1, 1), h(2, 2)],
            ccw: vec![h(3, 3)],
        };
        vec![
            Message::Probe {
                nonce: 7,
                token: 0,
                leaf: Some(leaf.clone()),
                failed: vec![Id::new(44)],
                padding: 5,
                active: true,
            },
            Message::Probe {
                nonce: 8,
                token: 0,
                leaf: None,
                failed: vec![],
                padding: 0,
                active: false,
            },
            Message::ProbeReply {
                nonce: 7,
                token: 3,
                leaf: Some(leaf.clone()),
                active: true,
                probe: 0,
            },
            Message::ProbeReply {
                nonce: 7,
                token: 3,
                leaf: None,
                active: false,
                probe: 0xdead_beef,
            },
            Message::Heartbeat { leaf: leaf.clone() },
            Message::Route(RouteMsg {
                seq: 1,
                origin: h(9, 9),
                msg_seq: 3,
                key: Id::new(77),
                hops: 2,
                body: RouteBody::App {
                    app: 5,
                    payload: vec![1, 2, 3],
                },
            }),
            Message::Route(RouteMsg {
                seq: 1,
                origin: h(9, 9),
                msg_seq: 3,
                key: Id::new(77),
                hops: 0,
                body: RouteBody::Join {
                    joiner: h(77, 1),
                    next_row: 2,
                    tag: 9,
                },
            }),
            Message::Ack { seq: 99 },
            Message::Direct {
                seq: 4,
                msg_seq: 8,
                app: 1,
                payload: vec![],
            },
            Message::JoinRequest { padding: 21 },
            Message::JoinReply {
                root: h(8, 8),
                leaf: leaf.clone(),
            },
            Message::Route(RouteMsg {
                seq: 2,
                origin: h(9, 9),
                msg_seq: 4,
                key: Id::new(78),
                hops: 1,
                body: RouteBody::JoinState {
                    tag: 3,
                    joiner: h(4, 4),
                    rows: vec![(1, vec![h(6, 6)])],
                    leaf: Some(leaf),
                },
            }),
            Message::Route(RouteMsg {
                seq: 2,
                origin: h(9, 9),
                msg_seq: 4,
                key: Id::new(78),
                hops: 1,
                body: RouteBody::JoinState {
                    tag: 3,
                    joiner: h(4, 4),
                    rows: vec![],
                    leaf: None,
                },
            }),
            Message::Route(RouteMsg {
                seq: 2,
                origin: h(9, 9),
                msg_seq: 4,
                key: Id::new(78),
                hops: 1,
                body: RouteBody::Lookup { lookup: 5 },
            }),
            Message::Route(RouteMsg {
                seq: 2,
                origin: h(9, 9),
                msg_seq: 4,
                key: Id::new(9),
                hops: 3,
                body: RouteBody::LookupReply {
                    lookup: 5,
                    key: Id::new(78),
                    root: h(79, 7),
                    hops: 2,
                },
            }),
            Message::RowRequest { row: 3, padding: 2 },
            Message::Rows {
                rows: vec![(0, vec![h(5, 5)]), (1, vec![])],
                hints: Vec::new(),
                probe: 0,
            },
            Message::Rows {
                rows: vec![(0, vec![h(5, 5), h(6, 6)]), (2, vec![h(7, 7)])],
                hints: vec![1, RTT_UNKNOWN, 0],
                probe: 9,
            },
            Message::Leave {
                seq: 1,
                leaf: LeafSetMsg::default(),
            },
            Message::LookupRequest {
                nonce: 4,
                key: Id::new(99),
                padding: 3,
            },
            Message::LookupAnswer {
                nonce: 4,
                key: Id::new(99),
                root: Some(h(7, 7)),
                hops: 3,
            },
            Message::LookupAnswer {
                nonce: 5,
                key: Id::new(98),
                root: None,
                hops: 0,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_every_prefix_is_truncated() {
        for m in samples() {
            let d = Datagram::new(Id::new(0xabc), m);
            let bytes = d.to_bytes();
            assert_eq!(Datagram::decode(&bytes, 1400), Ok(d.clone()));
            for cut in 0..bytes.len() {
                assert_eq!(
                    Datagram::<SocketAddr>::decode(&bytes[..cut], 1400),
                    Err(DecodeError::Truncated),
                    "{d:?} cut at {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                Datagram::<SocketAddr>::decode(&longer, 1400),
                Err(DecodeError::Invalid("trailing bytes"))
            );
        }
    }

    #[test]
    fn header_errors_are_typed() {
        let bytes =
            Datagram::<u32>::new(Id::new(1), Message::JoinRequest { padding: 0 }).to_bytes();
        let mut b = bytes.clone();
        b[0] = 0;
        assert_eq!(
            Datagram::<u32>::decode(&b, 1400),
            Err(DecodeError::BadMagic)
        );
        let mut b = bytes.clone();
        b[1] = 2;
        assert_eq!(
            Datagram::<u32>::decode(&b, 1400),
            Err(DecodeError::UnknownVersion(2))
        );
        let mut b = bytes.clone();
        b[2] = 200;
        assert_eq!(
            Datagram::<u32>::decode(&b, 1400),
            Err(DecodeError::UnknownType(200))
        );
        assert_eq!(
            Datagram::<u32>::decode(&[0u8; 2000], 1400),
            Err(DecodeError::Oversized {
                len: 2000,
                max: 1400
            })
        );
    }

    #[test]
    fn padding_must_be_zero() {
        let d = Datagram::<u32>::new(
            Id::new(1),
            Message::Probe {
                nonce: 1,
                token: 0,
                leaf: None,
                failed: vec![],
                padding: 3,
                active: true,
            },
        );
        let mut b = d.to_bytes();
        *b.last_mut().unwrap() = 1;
        assert_eq!(
            Datagram::<u32>::decode(&b, 1400),
            Err(DecodeError::Invalid("nonzero padding"))
        );
    }

    #[test]
    fn rows_are_split_to_fit() {
        let rows: Vec<(u8, Vec<NodeHandle<SocketAddr>>)> = (0..6u8)
            .map(|r| (r, (0..15).map(|c| h(u128::from(r) * 100 + c, 1)).collect()))
            .collect();
        for max in [200, 400, 1400] {
            let parts = encode_rows(Id::new(1), &rows, max);
            let mut seen = Vec::new();
            for p in &parts {
                assert!(p.len() <= max, "{} > {max}", p.len());
                match Datagram::<SocketAddr>::decode(p, max).unwrap().message {
                    Message::Rows { rows, .. } => {
                        for (r, e) in rows {
                            seen.extend(e.into_iter().map(|h| (r, h)));
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let want: Vec<_> = rows
                .iter()
                .flat_map(|(r, e)| e.iter().map(move |h| (*r, h.clone())))
                .collect();
            assert_eq!(seen, want);
        }
    }
}
