//! The multicast messages, carried in the payloads of routed and direct messages (WIRE.md,
//! "Multicast messages").

use alloc::vec::Vec;

use crate::Id;
use crate::wire::{DecodeError, Reader};

/// Version byte that starts every multicast message.
pub const WIRE_VERSION: u8 = 1;
/// Most ancestors a [`MulticastMsg::Adopted`] or [`MulticastMsg::Path`] names.
pub const MAX_PATH: usize = 32;
/// Most groups one [`MulticastMsg::Refresh`] or [`MulticastMsg::Leave`] names.
pub const MAX_GROUPS: usize = 1024;

/// Bytes a [`MulticastMsg::Data`] adds to its payload (the larger of the two messages that
/// carry one).
pub(crate) const DATA_OVERHEAD: usize = 2 + 16 + 16 + 4 + 2;

const JOIN: u8 = 1;
const PUBLISH: u8 = 2;
const ADOPTED: u8 = 3;
const PATH: u8 = 4;
const DATA: u8 = 5;
const REFRESH: u8 = 6;
const LEAVE: u8 = 7;

/// Groups of a [`MulticastMsg::Refresh`] or [`MulticastMsg::Leave`] that fit a payload of
/// `max_payload` bytes.
pub(crate) fn max_groups(max_payload: usize) -> usize {
    (max_payload.saturating_sub(4) / 16).clamp(1, MAX_GROUPS)
}

/// One multicast message.
///
/// ```
/// use pastry_core::multicast::MulticastMsg;
/// use pastry_core::Id;
/// let m = MulticastMsg::Path { group: Id::new(9), path: vec![Id::new(1), Id::new(2)] };
/// assert_eq!(MulticastMsg::decode(&m.encode()), Ok(m));
/// assert!(MulticastMsg::decode(&[1, 99]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum MulticastMsg {
    /// Routed to the group's id: the origin wants to join the group's tree. The first node on
    /// the way that is in the tree, or becomes part of it, adopts the origin as a child.
    Join {
        /// The group.
        group: Id,
        /// Echoed by the adopting node, so that only a node the join passed through can
        /// adopt.
        nonce: u32,
    },
    /// Routed to the group's id: the root sends the payload down the tree.
    Publish {
        /// The group.
        group: Id,
        /// Application bytes.
        payload: Vec<u8>,
    },
    /// Direct, parent to child: the sender adopted the receiver.
    Adopted {
        /// The group.
        group: Id,
        /// The nonce of the join.
        nonce: u32,
        /// The sender's ancestors and the sender itself, from the root down (at most
        /// [`MAX_PATH`], the nearest kept).
        path: Vec<Id>,
    },
    /// Direct, parent to child, when the parent's own path changed.
    Path {
        /// The group.
        group: Id,
        /// As in [`MulticastMsg::Adopted`].
        path: Vec<Id>,
    },
    /// Direct, parent to child: a published message on its way down the tree.
    Data {
        /// The group.
        group: Id,
        /// The node that published it.
        publisher: Id,
        /// The publisher's number for it ([`crate::MessageId::seq`] of the publish).
        seq: u32,
        /// Application bytes.
        payload: Vec<u8>,
    },
    /// Direct, child to parent, every refresh period: the sender is still the receiver's
    /// child in these groups. The acknowledgement tells the child its parent is alive.
    Refresh {
        /// The groups.
        groups: Vec<Id>,
    },
    /// Direct, either way: the sender ends the edge between the two nodes in these groups (a
    /// child leaving, or a node that is not the receiver's parent or child any more).
    Leave {
        /// The groups.
        groups: Vec<Id>,
    },
}

fn put_path(out: &mut Vec<u8>, path: &[Id]) {
    let start = path.len().saturating_sub(MAX_PATH);
    out.push((path.len() - start) as u8);
    for id in &path[start..] {
        out.extend_from_slice(&id.to_bytes());
    }
}

fn put_payload(out: &mut Vec<u8>, payload: &[u8]) {
    let n = payload.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&payload[..n]);
}

fn put_groups(out: &mut Vec<u8>, groups: &[Id]) {
    let n = groups.len().min(MAX_GROUPS);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    for id in &groups[..n] {
        out.extend_from_slice(&id.to_bytes());
    }
}

fn groups(r: &mut Reader<'_>) -> Result<Vec<Id>, DecodeError> {
    let n = usize::from(r.u16()?);
    if n > MAX_GROUPS {
        return Err(DecodeError::Invalid("list too long"));
    }
    if n * 16 > r.buf.len() {
        return Err(DecodeError::Truncated);
    }
    (0..n).map(|_| r.id()).collect()
}

fn path(r: &mut Reader<'_>) -> Result<Vec<Id>, DecodeError> {
    let n = usize::from(r.u8()?);
    if n > MAX_PATH {
        return Err(DecodeError::Invalid("path too long"));
    }
    if n * 16 > r.buf.len() {
        return Err(DecodeError::Truncated);
    }
    (0..n).map(|_| r.id()).collect()
}

impl MulticastMsg {
    /// The group the message is about (the first named, for lists).
    pub fn group(&self) -> Option<Id> {
        match self {
            MulticastMsg::Join { group, .. }
            | MulticastMsg::Publish { group, .. }
            | MulticastMsg::Adopted { group, .. }
            | MulticastMsg::Path { group, .. }
            | MulticastMsg::Data { group, .. } => Some(*group),
            MulticastMsg::Refresh { groups } | MulticastMsg::Leave { groups } => {
                groups.first().copied()
            }
        }
    }

    /// Encodes the message. A path longer than [`MAX_PATH`] keeps its last [`MAX_PATH`] ids,
    /// a payload longer than 65,535 bytes its first 65,535.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(WIRE_VERSION);
        match self {
            MulticastMsg::Join { group, nonce } => {
                out.push(JOIN);
                out.extend_from_slice(&group.to_bytes());
                out.extend_from_slice(&nonce.to_be_bytes());
            }
            MulticastMsg::Publish { group, payload } => {
                out.push(PUBLISH);
                out.extend_from_slice(&group.to_bytes());
                put_payload(&mut out, payload);
            }
            MulticastMsg::Adopted { group, nonce, path } => {
                out.push(ADOPTED);
                out.extend_from_slice(&group.to_bytes());
                out.extend_from_slice(&nonce.to_be_bytes());
                put_path(&mut out, path);
            }
            MulticastMsg::Path { group, path } => {
                out.push(PATH);
                out.extend_from_slice(&group.to_bytes());
                put_path(&mut out, path);
            }
            MulticastMsg::Data {
                group,
                publisher,
                seq,
                payload,
            } => {
                out.push(DATA);
                out.extend_from_slice(&group.to_bytes());
                out.extend_from_slice(&publisher.to_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                put_payload(&mut out, payload);
            }
            MulticastMsg::Refresh { groups } => {
                out.push(REFRESH);
                put_groups(&mut out, groups);
            }
            MulticastMsg::Leave { groups } => {
                out.push(LEAVE);
                put_groups(&mut out, groups);
            }
        }
        out
    }

    /// Decodes untrusted bytes: a typed error for anything truncated, of another version, of
    /// an unknown type, with a path over [`MAX_PATH`], a list over [`MAX_GROUPS`] or bytes
    /// left over. Memory is reserved
    /// only in proportion to the bytes received.
    ///
    /// ```
    /// use pastry_core::multicast::{MulticastMsg, WIRE_VERSION};
    /// use pastry_core::wire::DecodeError;
    /// assert_eq!(MulticastMsg::decode(&[WIRE_VERSION, 200]), Err(DecodeError::UnknownType(200)));
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: bytes };
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let msg = match r.u8()? {
            JOIN => MulticastMsg::Join {
                group: r.id()?,
                nonce: r.u32()?,
            },
            PUBLISH => MulticastMsg::Publish {
                group: r.id()?,
                payload: r.payload()?,
            },
            ADOPTED => MulticastMsg::Adopted {
                group: r.id()?,
                nonce: r.u32()?,
                path: path(&mut r)?,
            },
            PATH => MulticastMsg::Path {
                group: r.id()?,
                path: path(&mut r)?,
            },
            DATA => MulticastMsg::Data {
                group: r.id()?,
                publisher: r.id()?,
                seq: r.u32()?,
                payload: r.payload()?,
            },
            REFRESH => MulticastMsg::Refresh {
                groups: groups(&mut r)?,
            },
            LEAVE => MulticastMsg::Leave {
                groups: groups(&mut r)?,
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes"));
        }
        Ok(msg)
    }
}
