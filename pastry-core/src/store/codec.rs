//! The store's messages, carried in the payloads of routed and direct messages (WIRE.md,
//! "Store messages").

use alloc::vec::Vec;

use crate::wire::{DecodeError, Reader, put_handle};
use crate::{Address, Id, NodeHandle};

/// Version byte that starts every store message.
pub const WIRE_VERSION: u8 = 1;
/// Most entries in one [`StoreMsg::Have`], [`StoreMsg::Want`], [`StoreMsg::Check`] or
/// [`StoreMsg::Held`].
pub const MAX_DIGEST_ENTRIES: usize = 1024;

/// Bytes a message carrying a value adds to it (the largest such overhead, [`StoreMsg::Found`]).
pub(crate) const VALUE_OVERHEAD: usize = 2 + 4 + 16 + 8 + 1 + 2;

const INSERT: u8 = 1;
const GET: u8 = 2;
const STORED: u8 = 3;
const FOUND: u8 = 4;
const MISSING: u8 = 5;
const REPLICA: u8 = 6;
const CACHE_COPY: u8 = 7;
const GET_FALLBACK: u8 = 8;
const HAVE: u8 = 9;
const WANT: u8 = 10;
const CHECK: u8 = 11;
const HELD: u8 = 12;

const CACHED_OK: u8 = 1;
const HAS_LAST: u8 = 2;

/// (key, version) pairs of a [`StoreMsg::Have`] or [`StoreMsg::Check`] that fit a payload of `max_payload` bytes.
pub(crate) fn max_digest(max_payload: usize) -> usize {
    (max_payload.saturating_sub(4) / 24).clamp(1, MAX_DIGEST_ENTRIES)
}

/// Keys of a [`StoreMsg::Want`] or [`StoreMsg::Held`] that fit a payload of `max_payload` bytes.
pub(crate) fn max_keys(max_payload: usize) -> usize {
    (max_payload.saturating_sub(4) / 16).clamp(1, MAX_DIGEST_ENTRIES)
}

/// What an insert's root did with the value.
///
/// ```
/// use pastry_core::store::{Status, StoreMsg};
/// use pastry_core::Id;
/// let m: StoreMsg<u32> = StoreMsg::Stored { request: 1, key: Id::new(2), version: 3, status: Status::Outdated };
/// assert_eq!(StoreMsg::decode(&m.encode()), Ok(m));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Status {
    /// Stored, or this version was already held.
    Stored,
    /// A newer version is held; the message carries it.
    Outdated,
    /// The store is full or the validator refused the value.
    Refused,
}

/// One store message.
///
/// ```
/// use pastry_core::store::StoreMsg;
/// use pastry_core::Id;
/// let m: StoreMsg<u32> = StoreMsg::Missing { request: 7, key: Id::new(1) };
/// assert_eq!(StoreMsg::decode(&m.encode()), Ok(m));
/// assert!(StoreMsg::<u32>::decode(&[1, 99]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum StoreMsg<A> {
    /// Routed to the key: store this value.
    Insert {
        /// The inserting node's request number.
        request: u32,
        /// The key.
        key: Id,
        /// The writer's version.
        version: u64,
        /// The value.
        value: Vec<u8>,
    },
    /// Routed to the key: answer with its value.
    Get {
        /// The requesting node's request number.
        request: u32,
        /// The key.
        key: Id,
        /// Whether a cached copy may answer.
        cached_ok: bool,
        /// The node that forwarded the request last (it gets a cached copy).
        last: Option<NodeHandle<A>>,
    },
    /// Direct, root to inserting node: what became of the insert.
    Stored {
        /// The insert's request number.
        request: u32,
        /// The key.
        key: Id,
        /// The version stored, or the newer version held.
        version: u64,
        /// The outcome.
        status: Status,
    },
    /// Direct, to the requesting node: the value.
    Found {
        /// The get's request number.
        request: u32,
        /// The key.
        key: Id,
        /// The version.
        version: u64,
        /// Whether a cached copy answered.
        cached: bool,
        /// The value.
        value: Vec<u8>,
    },
    /// Direct, to the requesting node: the key has no value.
    Missing {
        /// The get's request number.
        request: u32,
        /// The key.
        key: Id,
    },
    /// Direct, between replicas: hold this value.
    Replica {
        /// The key.
        key: Id,
        /// The version.
        version: u64,
        /// The value.
        value: Vec<u8>,
    },
    /// Direct, from a get's answering node to the node that forwarded the get: keep a copy.
    CacheCopy {
        /// The key.
        key: Id,
        /// The version.
        version: u64,
        /// The value.
        value: Vec<u8>,
    },
    /// Direct, from a root (or a replica) lacking the value to the next replica: answer in
    /// my place.
    GetFallback {
        /// The get's request number.
        request: u32,
        /// The key.
        key: Id,
        /// Whether a cached copy may answer.
        cached_ok: bool,
        /// Replicas that may still be asked, this one included.
        left: u8,
        /// The requesting node.
        origin: NodeHandle<A>,
    },
    /// Direct, holder to replica: the keys and versions I hold.
    Have {
        /// (key, version) pairs, at most [`MAX_DIGEST_ENTRIES`].
        entries: Vec<(Id, u64)>,
    },
    /// Direct, holder to replica: send me these values.
    Want {
        /// Keys, at most [`MAX_DIGEST_ENTRIES`].
        keys: Vec<Id>,
    },
    /// Direct, from a node leaving these values' replica sets to their replicas: do you
    /// hold these versions (or newer)?
    Check {
        /// (key, version) pairs, at most [`MAX_DIGEST_ENTRIES`].
        entries: Vec<(Id, u64)>,
    },
    /// Direct, the answer to a [`StoreMsg::Check`]: I hold these keys at the version asked
    /// or newer.
    Held {
        /// Keys, at most [`MAX_DIGEST_ENTRIES`].
        keys: Vec<Id>,
    },
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    // Values never exceed a payload, itself far below 64 KiB.
    out.extend_from_slice(&(value.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&value[..value.len().min(usize::from(u16::MAX))]);
}

impl<A: Address> StoreMsg<A> {
    /// The message's bytes. A list longer than [`MAX_DIGEST_ENTRIES`] is cut to it and a
    /// value longer than 65,535 bytes to that: neither can be decoded, and the store never
    /// builds them (values are bounded by a datagram, lists are sent in chunks).
    ///
    /// ```
    /// use pastry_core::store::StoreMsg;
    /// use pastry_core::Id;
    /// let m: StoreMsg<u32> = StoreMsg::Want { keys: vec![Id::new(1), Id::new(2)] };
    /// assert_eq!(m.encode().len(), 2 + 2 + 2 * 16);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(WIRE_VERSION);
        match self {
            StoreMsg::Insert {
                request,
                key,
                version,
                value,
            } => {
                out.push(INSERT);
                out.extend_from_slice(&request.to_be_bytes());
                out.extend_from_slice(&key.to_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                put_value(&mut out, value);
            }
            StoreMsg::Get {
                request,
                key,
                cached_ok,
                last,
            } => {
                out.push(GET);
                out.extend_from_slice(&request.to_be_bytes());
                out.extend_from_slice(&key.to_bytes());
                let flags = if *cached_ok { CACHED_OK } else { 0 }
                    | if last.is_some() { HAS_LAST } else { 0 };
                out.push(flags);
                if let Some(h) = last {
                    put_handle(&mut out, h);
                }
            }
            StoreMsg::Stored {
                request,
                key,
                version,
                status,
            } => {
                out.push(STORED);
                out.extend_from_slice(&request.to_be_bytes());
                out.extend_from_slice(&key.to_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.push(match status {
                    Status::Stored => 0,
                    Status::Outdated => 1,
                    Status::Refused => 2,
                });
            }
            StoreMsg::Found {
                request,
                key,
                version,
                cached,
                value,
            } => {
                out.push(FOUND);
                out.extend_from_slice(&request.to_be_bytes());
                out.extend_from_slice(&key.to_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.push(u8::from(*cached));
                put_value(&mut out, value);
            }
            StoreMsg::Missing { request, key } => {
                out.push(MISSING);
                out.extend_from_slice(&request.to_be_bytes());
                out.extend_from_slice(&key.to_bytes());
            }
            StoreMsg::Replica {
                key,
                version,
                value,
            }
            | StoreMsg::CacheCopy {
                key,
                version,
                value,
            } => {
                out.push(if matches!(self, StoreMsg::Replica { .. }) {
                    REPLICA
                } else {
                    CACHE_COPY
                });
                out.extend_from_slice(&key.to_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                put_value(&mut out, value);
            }
            StoreMsg::GetFallback {
                request,
                key,
                cached_ok,
                left,
                origin,
            } => {
                out.push(GET_FALLBACK);
                out.extend_from_slice(&request.to_be_bytes());
                out.extend_from_slice(&key.to_bytes());
                out.push(if *cached_ok { CACHED_OK } else { 0 });
                out.push(*left);
                put_handle(&mut out, origin);
            }
            StoreMsg::Have { entries } | StoreMsg::Check { entries } => {
                out.push(if matches!(self, StoreMsg::Have { .. }) {
                    HAVE
                } else {
                    CHECK
                });
                let n = entries.len().min(MAX_DIGEST_ENTRIES);
                out.extend_from_slice(&(n as u16).to_be_bytes());
                for (key, version) in &entries[..n] {
                    out.extend_from_slice(&key.to_bytes());
                    out.extend_from_slice(&version.to_be_bytes());
                }
            }
            StoreMsg::Want { keys } | StoreMsg::Held { keys } => {
                out.push(if matches!(self, StoreMsg::Want { .. }) {
                    WANT
                } else {
                    HELD
                });
                let n = keys.len().min(MAX_DIGEST_ENTRIES);
                out.extend_from_slice(&(n as u16).to_be_bytes());
                for key in &keys[..n] {
                    out.extend_from_slice(&key.to_bytes());
                }
            }
        }
        out
    }

    /// Decodes untrusted bytes: a typed error for anything truncated, of another version,
    /// of an unknown type, with unknown flags, too many entries or bytes left over. Memory is
    /// reserved only in proportion to the bytes received.
    ///
    /// ```
    /// use pastry_core::store::{StoreMsg, WIRE_VERSION};
    /// use pastry_core::wire::DecodeError;
    /// assert_eq!(StoreMsg::<u32>::decode(&[WIRE_VERSION, 200]), Err(DecodeError::UnknownType(200)));
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: bytes };
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let t = r.u8()?;
        let msg = match t {
            INSERT => StoreMsg::Insert {
                request: r.u32()?,
                key: r.id()?,
                version: r.u64()?,
                value: r.payload()?,
            },
            GET => {
                let request = r.u32()?;
                let key = r.id()?;
                let flags = r.u8()?;
                if flags & !(CACHED_OK | HAS_LAST) != 0 {
                    return Err(DecodeError::Invalid("store flags"));
                }
                let last = if flags & HAS_LAST != 0 {
                    Some(r.handle()?)
                } else {
                    None
                };
                StoreMsg::Get {
                    request,
                    key,
                    cached_ok: flags & CACHED_OK != 0,
                    last,
                }
            }
            STORED => StoreMsg::Stored {
                request: r.u32()?,
                key: r.id()?,
                version: r.u64()?,
                status: match r.u8()? {
                    0 => Status::Stored,
                    1 => Status::Outdated,
                    2 => Status::Refused,
                    _ => return Err(DecodeError::Invalid("store status")),
                },
            },
            FOUND => StoreMsg::Found {
                request: r.u32()?,
                key: r.id()?,
                version: r.u64()?,
                cached: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("store flags")),
                },
                value: r.payload()?,
            },
            MISSING => StoreMsg::Missing {
                request: r.u32()?,
                key: r.id()?,
            },
            REPLICA | CACHE_COPY => {
                let key = r.id()?;
                let version = r.u64()?;
                let value = r.payload()?;
                if t == REPLICA {
                    StoreMsg::Replica {
                        key,
                        version,
                        value,
                    }
                } else {
                    StoreMsg::CacheCopy {
                        key,
                        version,
                        value,
                    }
                }
            }
            GET_FALLBACK => {
                let request = r.u32()?;
                let key = r.id()?;
                let flags = r.u8()?;
                if flags & !CACHED_OK != 0 {
                    return Err(DecodeError::Invalid("store flags"));
                }
                StoreMsg::GetFallback {
                    request,
                    key,
                    cached_ok: flags & CACHED_OK != 0,
                    left: r.u8()?,
                    origin: r.handle()?,
                }
            }
            HAVE | CHECK => {
                let n = count(&mut r, 24)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push((r.id()?, r.u64()?));
                }
                if t == HAVE {
                    StoreMsg::Have { entries }
                } else {
                    StoreMsg::Check { entries }
                }
            }
            WANT | HELD => {
                let n = count(&mut r, 16)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.id()?);
                }
                if t == WANT {
                    StoreMsg::Want { keys }
                } else {
                    StoreMsg::Held { keys }
                }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes"));
        }
        Ok(msg)
    }
}

/// A list's count, checked against the bound and against the bytes left (each entry takes
/// `size` bytes), so that no allocation outgrows the datagram.
fn count(r: &mut Reader<'_>, size: usize) -> Result<usize, DecodeError> {
    let n = usize::from(r.u16()?);
    if n > MAX_DIGEST_ENTRIES {
        return Err(DecodeError::Invalid("list too long"));
    }
    if n * size > r.buf.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(n)
}
