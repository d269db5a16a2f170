//! Identifiers on the 128-bit ring, their digits, and the one closeness order.

use core::cmp::Ordering;
use core::fmt;
use core::str::FromStr;

/// A position on the circular 128-bit identifier space: a node id or a key.
///
/// Ids are read as unsigned 128-bit numbers, most significant digit first. With digits of
/// `b` bits (1..=4), an id has `ceil(128 / b)` digits; when `b` does not divide 128 the last
/// digit holds the remaining bits, left-aligned.
///
/// Closeness is by ring distance. Two distinct ids can be equally distant from a key (one on
/// each side); the tie goes to the numerically lower id. [`Id::cmp_closeness`] is that order and
/// every part of the project (routing, leaf set, oracle, tests) uses it.
///
/// ```
/// use pastry_core::Id;
/// let a: Id = "0123456789abcdef0123456789abcdef".parse().unwrap();
/// assert_eq!(a.to_string(), "0123456789abcdef0123456789abcdef");
/// assert_eq!(a.digit(0, 4), 0x0);
/// assert_eq!(a.digit(1, 4), 0x1);
/// let b = Id::new(a.as_u128() ^ 1);
/// assert_eq!(a.shared_prefix_len(b, 4), 31);
/// ```
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
// Aligned to 8 bytes rather than u128's 16: every peer record holds an id, and 16-byte
// alignment padded each one (with a 4-byte address, a routing-table entry took 48 bytes
// instead of 40 and a leaf-set member 64 instead of 48; with a socket address, a leaf-set
// member 80 instead of 72).
#[repr(C, packed(8))]
pub struct Id(u128);

impl Id {
    /// The id 0.
    pub const ZERO: Id = Id(0);
    /// The largest id, `2^128 - 1`.
    pub const MAX: Id = Id(u128::MAX);

    /// Wraps a raw 128-bit number.
    pub const fn new(raw: u128) -> Self {
        Id(raw)
    }

    /// The raw 128-bit number.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Reads an id from 16 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Id(u128::from_be_bytes(bytes))
    }

    /// The id as 16 big-endian bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Number of digits of `b` bits in an id: `ceil(128 / b)`.
    pub const fn digit_count(b: u8) -> usize {
        128usize.div_ceil(b as usize)
    }

    /// The digit at position `i` (0 = most significant) with `b`-bit digits.
    ///
    /// Panics in debug builds if `i` is not below [`Id::digit_count`].
    pub fn digit(self, i: usize, b: u8) -> u8 {
        debug_assert!(i < Self::digit_count(b));
        let shift = i * b as usize;
        ((self.0 << shift) >> (128 - b as usize)) as u8
    }

    /// Number of leading digits (of `b` bits) that `self` and `other` share.
    pub fn shared_prefix_len(self, other: Id, b: u8) -> usize {
        let x = self.0 ^ other.0;
        if x == 0 {
            return Self::digit_count(b);
        }
        x.leading_zeros() as usize / b as usize
    }

    /// Distance going clockwise (increasing ids, wrapping) from `self` to `to`.
    pub const fn cw_distance(self, to: Id) -> u128 {
        to.0.wrapping_sub(self.0)
    }

    /// Ring distance: the shorter of the two ways around.
    pub const fn distance(self, other: Id) -> u128 {
        let d = self.0.wrapping_sub(other.0);
        let e = other.0.wrapping_sub(self.0);
        if d < e { d } else { e }
    }

    /// Orders `a` and `b` by closeness to the key `self`: `Less` means `a` is closer.
    ///
    /// Ring distance first; between two ids at the same distance the numerically lower id
    /// counts as closer. Distinct ids are never `Equal`.
    pub fn cmp_closeness(self, a: Id, b: Id) -> Ordering {
        self.distance(a)
            .cmp(&self.distance(b))
            .then_with(|| a.as_u128().cmp(&b.as_u128()))
    }

    /// Whether `a` is strictly closer to the key `self` than `b` under [`Id::cmp_closeness`].
    pub fn is_closer(self, a: Id, b: Id) -> bool {
        self.cmp_closeness(a, b) == Ordering::Less
    }

    /// `self + delta` on the ring.
    pub const fn wrapping_add(self, delta: u128) -> Id {
        Id(self.0.wrapping_add(delta))
    }

    /// `self - delta` on the ring.
    pub const fn wrapping_sub(self, delta: u128) -> Id {
        Id(self.0.wrapping_sub(delta))
    }

    /// Whether `self` lies on the clockwise arc from `from` to `to`, both ends included.
    pub const fn in_cw_arc(self, from: Id, to: Id) -> bool {
        from.cw_distance(self) <= from.cw_distance(to)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight digits identify a node in any realistic overlay and keep logs readable.
        write!(f, "Id({:08x}..)", (self.0 >> 96) as u32)
    }
}

impl fmt::LowerHex for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.as_u128(), f)
    }
}

/// The error returned when text is not an id: exactly 32 hexadecimal digits.
/// ```
/// use pastry_core::{Id, ParseIdError};
/// assert_eq!("abc".parse::<Id>(), Err(ParseIdError::Length(3)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The text is not 32 characters long.
    #[error("an id is 32 hexadecimal digits, got {0} characters")]
    Length(usize),
    /// A character is not a hexadecimal digit.
    #[error("an id is 32 hexadecimal digits, found a non-digit")]
    Digit,
}

impl FromStr for Id {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(ParseIdError::Length(s.len()));
        }
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(ParseIdError::Digit);
        }
        u128::from_str_radix(s, 16)
            .map(Id)
            .map_err(|_| ParseIdError::Digit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_record_carries_no_alignment_padding() {
        // Every routing-table entry and leaf-set member holds an id; aligned to 16 bytes, an
        // entry of id, 4-byte address, round-trip estimate and flags (29 bytes) took 48.
        assert!(core::mem::align_of::<Id>() <= 8);
        assert_eq!(core::mem::size_of::<Id>(), 16);
        assert!(core::mem::size_of::<crate::Peer<u32>>() <= 40);
        assert!(core::mem::size_of::<crate::leafset::LeafEntry<u32>>() <= 48);
    }

    #[test]
    fn digits_for_every_b() {
        let id = Id::new(0xfedc_ba98_7654_3210_0123_4567_89ab_cdef);
        assert_eq!(id.digit(0, 4), 0xf);
        assert_eq!(id.digit(31, 4), 0xf);
        assert_eq!(id.digit(2, 4), 0xd);
        assert_eq!(id.digit(0, 1), 1);
        assert_eq!(id.digit(0, 2), 3);
        assert_eq!(id.digit(0, 3), 7);
        // b = 3: 43 digits, the last holds two bits left-aligned.
        assert_eq!(Id::digit_count(3), 43);
        assert_eq!(Id::new(0b11).digit(42, 3), 0b110);
        assert_eq!(Id::new(0b01).digit(42, 3), 0b010);
    }

    #[test]
    fn prefix_lengths() {
        let a = Id::new(0x1234 << 112);
        let b = Id::new(0x1239 << 112);
        assert_eq!(a.shared_prefix_len(b, 4), 3);
        assert_eq!(a.shared_prefix_len(a, 4), 32);
        assert_eq!(a.shared_prefix_len(a, 3), 43);
        assert_eq!(Id::new(0).shared_prefix_len(Id::new(1), 3), 42);
    }

    #[test]
    fn ring_distance_wraps_and_ties_go_low() {
        let a = Id::new(u128::MAX - 1);
        let b = Id::new(2);
        assert_eq!(a.distance(b), 4);
        assert_eq!(b.distance(a), 4);
        let key = Id::new(10);
        assert_eq!(key.cmp_closeness(Id::new(8), Id::new(12)), Ordering::Less);
        assert_eq!(
            key.cmp_closeness(Id::new(12), Id::new(8)),
            Ordering::Greater
        );
        assert!(key.is_closer(Id::new(11), Id::new(8)));
    }

    #[test]
    fn parse_and_display() {
        let id: Id = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF".parse().unwrap();
        assert_eq!(id, Id::MAX);
        assert_eq!("00".parse::<Id>(), Err(ParseIdError::Length(2)));
        assert_eq!(
            "g0000000000000000000000000000000".parse::<Id>(),
            Err(ParseIdError::Digit)
        );
        assert_eq!(
            "+0000000000000000000000000000000".parse::<Id>(),
            Err(ParseIdError::Digit)
        );
    }

    #[test]
    fn arcs() {
        let from = Id::new(u128::MAX - 5);
        let to = Id::new(5);
        assert!(Id::new(0).in_cw_arc(from, to));
        assert!(!Id::new(6).in_cw_arc(from, to));
        assert!(from.in_cw_arc(from, to));
    }
}
