//! Transport addresses the core can put on the wire, and node handles.

use alloc::vec::Vec;
use core::fmt::Debug;
use core::hash::Hash;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Id;
use crate::wire::DecodeError;

/// A transport address the core can name in its messages.
///
/// The core is generic over the address type so that the simulator can use small integers while
/// real networks use [`SocketAddr`]. An implementation must encode every value in at most
/// [`Address::MAX_ENCODED_LEN`] bytes and decode exactly what it encodes; decoding untrusted
/// bytes must return an error rather than panic.
///
/// ```
/// use core::net::SocketAddr;
/// use pastry_core::Address;
/// let a: SocketAddr = "192.0.2.7:4000".parse().unwrap();
/// let mut buf = Vec::new();
/// a.encode(&mut buf);
/// assert_eq!(buf.len(), a.encoded_len());
/// assert_eq!(SocketAddr::decode(&buf).unwrap(), (a, buf.len()));
/// ```
pub trait Address: Clone + Eq + Ord + Hash + Debug + Send + Sync + 'static {
    /// The largest number of bytes [`Address::encode`] writes.
    const MAX_ENCODED_LEN: usize;

    /// The number of bytes [`Address::encode`] writes for this value.
    fn encoded_len(&self) -> usize;

    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes one address from the front of `input`, returning it and the bytes consumed.
    fn decode(input: &[u8]) -> Result<(Self, usize), DecodeError>;
}

impl Address for SocketAddr {
    const MAX_ENCODED_LEN: usize = 19;

    fn encoded_len(&self) -> usize {
        match self {
            SocketAddr::V4(_) => 7,
            SocketAddr::V6(_) => 19,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
    }

    fn decode(input: &[u8]) -> Result<(Self, usize), DecodeError> {
        let tag = *input.first().ok_or(DecodeError::Truncated)?;
        match tag {
            4 => {
                let b: &[u8; 6] = input
                    .get(1..7)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(DecodeError::Truncated)?;
                let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                let port = u16::from_be_bytes([b[4], b[5]]);
                Ok((SocketAddr::new(IpAddr::V4(ip), port), 7))
            }
            6 => {
                let b: &[u8; 18] = input
                    .get(1..19)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(DecodeError::Truncated)?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[..16]);
                let port = u16::from_be_bytes([b[16], b[17]]);
                Ok((
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port),
                    19,
                ))
            }
            _ => Err(DecodeError::Invalid("address family")),
        }
    }
}

/// A node as other nodes know it: its id and the address that reaches it.
///
/// ```
/// use pastry_core::{Id, NodeHandle};
/// let h = NodeHandle::new(Id::new(7), 1u32);
/// assert_eq!(h.id, Id::new(7));
/// ```
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeHandle<A> {
    /// The node's id.
    pub id: Id,
    /// Where datagrams for the node go.
    pub addr: A,
}

impl<A> NodeHandle<A> {
    /// A handle from its parts.
    pub const fn new(id: Id, addr: A) -> Self {
        NodeHandle { id, addr }
    }
}

/// A 32-bit address, for simulators and tests that number their nodes.
impl Address for u32 {
    const MAX_ENCODED_LEN: usize = 4;

    fn encoded_len(&self) -> usize {
        4
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn decode(input: &[u8]) -> Result<(Self, usize), DecodeError> {
        let b: [u8; 4] = input
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::Truncated)?;
        Ok((u32::from_be_bytes(b), 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addrs_round_trip() {
        for text in ["10.1.2.3:9", "[2001:db8::1]:65535", "0.0.0.0:0"] {
            let a: SocketAddr = text.parse().unwrap();
            let mut buf = Vec::new();
            a.encode(&mut buf);
            assert_eq!(buf.len(), a.encoded_len());
            assert!(buf.len() <= SocketAddr::MAX_ENCODED_LEN);
            assert_eq!(SocketAddr::decode(&buf), Ok((a, buf.len())));
            for cut in 0..buf.len() {
                assert_eq!(SocketAddr::decode(&buf[..cut]), Err(DecodeError::Truncated));
            }
        }
        assert_eq!(
            SocketAddr::decode(&[5, 0, 0]),
            Err(DecodeError::Invalid("address family"))
        );
    }
}
