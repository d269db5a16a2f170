//! What a node knows about another node: handle, round-trip estimate, trust flags.

use core::time::Duration;

use crate::{Config, Id, NodeHandle};

/// A smoothed round-trip estimate (RFC 6298), kept in microseconds.
///
/// ```
/// use core::time::Duration;
/// use pastry_core::Rtt;
/// let mut rtt = Rtt::default();
/// assert_eq!(rtt.srtt(), None);
/// rtt.sample(Duration::from_millis(40));
/// assert_eq!(rtt.srtt(), Some(Duration::from_millis(40)));
/// rtt.sample(Duration::from_millis(80));
/// assert_eq!(rtt.srtt(), Some(Duration::from_millis(45)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rtt {
    srtt: u32,
    rttvar: u32,
}

impl Rtt {
    /// An estimate seeded with one sample.
    pub fn from_sample(rtt: Duration) -> Self {
        let mut r = Rtt::default();
        r.sample(rtt);
        r
    }

    /// Folds in one round-trip measurement.
    pub fn sample(&mut self, rtt: Duration) {
        // Zero is reserved for "no sample"; a sub-microsecond round trip counts as one.
        let r = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
        if self.srtt == 0 {
            self.srtt = r;
            self.rttvar = r / 2;
        } else {
            let diff = self.srtt.abs_diff(r);
            self.rttvar = ((3 * u64::from(self.rttvar) + u64::from(diff)) / 4) as u32;
            self.srtt = ((7 * u64::from(self.srtt) + u64::from(r)) / 8).max(1) as u32;
        }
    }

    /// The smoothed round-trip time, if any sample was taken.
    pub fn srtt(&self) -> Option<Duration> {
        (self.srtt != 0).then(|| Duration::from_micros(u64::from(self.srtt)))
    }

    /// The smoothed round-trip time in microseconds, `u32::MAX` when unknown (sorts last).
    pub fn srtt_micros_or_max(&self) -> u32 {
        if self.srtt == 0 { u32::MAX } else { self.srtt }
    }

    /// Retransmission timeout: SRTT + 4·RTTVAR clamped to the configured bounds, or the initial
    /// timeout without a sample.
    pub fn rto(&self, config: &Config) -> Duration {
        if self.srtt == 0 {
            return config.rto_initial;
        }
        let micros = u64::from(self.srtt) + 4 * u64::from(self.rttvar);
        Duration::from_micros(micros).clamp(config.rto_min, config.rto_max)
    }
}

pub(crate) const VERIFIED: u8 = 1;
pub(crate) const SUSPECT: u8 = 2;
/// The node answered one of our leaf-set probes, so it has us in its leaf set (or knows that
/// it should not).
pub(crate) const CONFIRMED: u8 = 4;

/// A node this node knows: its handle, the measured round trip, and whether its address has
/// answered us (verified) or it is being probed after a silence (suspect).
/// ```
/// use pastry_core::{Id, NodeHandle, Peer};
/// let p = Peer::new(NodeHandle::new(Id::new(3), 9u32));
/// assert_eq!(p.id(), Id::new(3));
/// assert!(!p.is_verified() && !p.is_suspect());
/// assert_eq!(p.rtt.srtt(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer<A> {
    /// Id and address.
    pub handle: NodeHandle<A>,
    /// Round-trip estimate from this node to the peer.
    pub rtt: Rtt,
    pub(crate) flags: u8,
    /// When the peer last proved alive to us (answered a probe, acknowledged a message), in
    /// [`heard_units`]; 0: never. Fits in the record's padding.
    pub(crate) heard: u16,
}

/// Seconds per unit of [`Peer`]'s `heard`.
const HEARD_UNIT_SECS: u64 = 4;

/// `now` in units of [`HEARD_UNIT_SECS`], wrapping (every 72 hours), never 0.
pub(crate) fn heard_units(now: crate::Instant) -> u16 {
    ((now.as_micros() / 1_000_000 / HEARD_UNIT_SECS) as u16).max(1)
}

impl<A> Peer<A> {
    /// A peer with no round-trip sample that has not been verified.
    pub fn new(handle: NodeHandle<A>) -> Self {
        Peer {
            handle,
            rtt: Rtt::default(),
            flags: 0,
            heard: 0,
        }
    }

    pub(crate) fn verified(handle: NodeHandle<A>, rtt: Rtt) -> Self {
        Peer {
            handle,
            rtt,
            flags: VERIFIED,
            heard: 0,
        }
    }

    /// The peer's id.
    pub fn id(&self) -> Id {
        self.handle.id
    }

    /// Whether the peer's address has answered a probe of ours (a completed round trip).
    pub fn is_verified(&self) -> bool {
        self.flags & VERIFIED != 0
    }

    /// Whether the peer went silent and is being probed.
    pub fn is_suspect(&self) -> bool {
        self.flags & SUSPECT != 0
    }

    /// Seconds since the peer last proved alive, `None` if it never did. The clock of `heard`
    /// wraps every 72 hours: a peer silent longer than that may pass for recently heard.
    pub(crate) fn heard_secs_ago(&self, now: crate::Instant) -> Option<u64> {
        (self.heard != 0)
            .then(|| u64::from(heard_units(now).wrapping_sub(self.heard)) * HEARD_UNIT_SECS)
    }

    pub(crate) fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Id, Instant, NodeHandle};

    #[test]
    fn silence_is_measured_across_the_clock_wrapping() {
        let mut p = Peer::new(NodeHandle::new(Id::new(1), 1u32));
        let now = Instant::from_secs(4);
        assert_eq!(p.heard_secs_ago(now), None, "never heard");
        // Heard in the last unit before the 16-bit clock wrapped, asked two units after.
        p.heard = u16::MAX;
        assert_eq!(heard_units(now), 1);
        assert_eq!(p.heard_secs_ago(now), Some(8));
        p.heard = heard_units(Instant::from_secs(1000));
        assert_eq!(p.heard_secs_ago(Instant::from_secs(1400)), Some(400));
        // The epoch's first unit is 1, not 0 (which means never).
        assert_eq!(heard_units(Instant::ZERO), 1);
    }
}
