//! Node configuration and its validation.

use core::time::Duration;

/// Tunable parameters of a node. Start from [`Config::default`] and change fields.
///
/// ```
/// use core::time::Duration;
/// use pastry_core::Config;
/// let mut config = Config::default();
/// config.leaf_set_size = 24;
/// config.heartbeat_period = Duration::from_secs(10);
/// assert!(config.validate().is_ok());
/// config.b = 5;
/// assert!(config.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Bits per id digit, 1..=4. The routing table has `ceil(128 / b)` rows of `2^b` columns.
    pub b: u8,
    /// Leaf-set size L: the L/2 numerically closest nodes on each side. Even, 2..=64.
    pub leaf_set_size: usize,
    /// How often a node sends a heartbeat (carrying its leaf set) to its counter-clockwise ring
    /// neighbour; silence from the clockwise neighbour for `failure_timeout` makes it a suspect.
    pub heartbeat_period: Duration,
    /// Silence from a ring neighbour longer than this makes it a suspect, to be probed.
    pub failure_timeout: Duration,
    /// Probe retransmissions before an unanswered suspect is declared dead.
    pub probe_retries: u8,
    /// Period of routing-table maintenance: ask one node per row for its row, probe what is
    /// new, keep the nearest candidate per cell.
    pub maintenance_period: Duration,
    /// Retransmission timeout towards a node with no round-trip sample yet.
    pub rto_initial: Duration,
    /// Lower clamp of the computed retransmission timeout (SRTT + 4·RTTVAR).
    pub rto_min: Duration,
    /// Upper clamp of the retransmission timeout, also after backoff.
    pub rto_max: Duration,
    /// Per-hop retransmissions of a routed message before its next hop is considered silent.
    pub max_retransmits: u8,
    /// Largest datagram the node sends or accepts, in bytes.
    pub max_datagram_size: usize,
    /// How long a message may wait at a node for a route (or for the node to become active)
    /// before it is dropped and reported as failed.
    pub hold_timeout: Duration,
    /// How long a joining node waits for its join to be answered before asking again.
    pub join_timeout: Duration,
    /// Join requests sent before the join is reported as failed.
    pub join_attempts: u8,
    /// Bound on messages waiting at this node for a route.
    pub max_held: usize,
    /// Bound on routed or direct messages awaiting a per-hop acknowledgement.
    pub max_in_flight: usize,
    /// Bound on outstanding probes.
    pub max_probes: usize,
    /// New routing-table candidates a node may probe per maintenance round, a quarter of them
    /// for each row (every row has a budget of its own).
    pub maintenance_probes: usize,
    /// Nodes kept beside the entry of each *sparse* routing-table cell: one whose share of the
    /// ring holds, by the density our leaf set shows, at most `cell_spares + 1` nodes in all
    /// (at 10,000 nodes and b = 4, the cells of row 2). A message whose next hop is such a cell
    /// goes to the node of the entry and its spares numerically closest to the key, often the
    /// key's root itself, saving the last hop. 0 (the default) keeps one node per cell, as
    /// the original protocol does; at most [`MAX_CELL_SPARES`].
    ///
    /// In the simulator, four took the mean route delay penalty of 10,000-node rings after an
    /// hour from 1.56 to 1.46 (sphere) and from 1.54 to 1.44 (transit-stub), for about
    /// 1.1 KiB more state per node; two took it to 1.49 and 1.47. Routes are shorter by a
    /// quarter of a hop on average, so the hop counts of the 2001 paper (its Fig. 5) are
    /// reproduced with spares off. Spares are measured before they are kept: under 10-minute
    /// sessions at 10,000 nodes four added 4 % to the control traffic (two, 3 %), so they
    /// suit rings whose members stay.
    pub cell_spares: u8,
    /// How long a lookup waits for its answer before it is sent again.
    pub lookup_timeout: Duration,
    /// Times a lookup is sent again before it is reported as failed.
    pub lookup_retries: u8,
    /// Bound on lookups awaiting an answer.
    pub max_lookups: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            b: 4,
            leaf_set_size: 16,
            heartbeat_period: Duration::from_secs(30),
            failure_timeout: Duration::from_secs(40),
            probe_retries: 2,
            maintenance_period: Duration::from_secs(600),
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(100),
            rto_max: Duration::from_secs(5),
            max_retransmits: 2,
            max_datagram_size: 1400,
            hold_timeout: Duration::from_secs(30),
            join_timeout: Duration::from_secs(5),
            join_attempts: 6,
            max_held: 1024,
            max_in_flight: 1024,
            max_probes: 512,
            maintenance_probes: 64,
            cell_spares: 0,
            lookup_timeout: Duration::from_secs(10),
            lookup_retries: 2,
            max_lookups: 1024,
        }
    }
}

/// Why a [`Config`] was rejected.
/// ```
/// use pastry_core::{Config, ConfigError};
/// let mut c = Config::default();
/// c.leaf_set_size = 7;
/// assert_eq!(c.validate(), Err(ConfigError::LeafSetSize(7)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `b` is outside 1..=4.
    #[error("digit width b must be 1..=4, got {0}")]
    DigitWidth(u8),
    /// The leaf-set size is odd, zero, or above 64.
    #[error("leaf-set size must be even and in 2..=64, got {0}")]
    LeafSetSize(usize),
    /// A period or timeout is zero.
    #[error("{0} must not be zero")]
    ZeroDuration(&'static str),
    /// The retransmission-timeout bounds are inconsistent.
    #[error("retransmission timeouts must satisfy rto_min <= rto_initial <= rto_max")]
    RtoBounds,
    /// The failure timeout does not exceed the heartbeat period, so every neighbour would be
    /// suspected between two heartbeats.
    #[error("failure_timeout must exceed heartbeat_period")]
    FailureTimeout,
    /// The datagram size cannot carry the protocol's largest control message.
    #[error("max_datagram_size {got} is too small: the protocol needs at least {needed} bytes")]
    DatagramTooSmall {
        /// Bytes the protocol needs for this leaf-set size, digit width and address type.
        needed: usize,
        /// The configured size.
        got: usize,
    },
    /// The datagram size is above what UDP can carry.
    #[error("max_datagram_size {0} is above the UDP limit of 65507 bytes")]
    DatagramTooLarge(usize),
    /// A bound on queues or tables is zero.
    #[error("{0} must be at least 1")]
    ZeroBound(&'static str),
    /// A period, timeout, retry count or bound is larger than the node supports.
    #[error("{0} is too large")]
    TooLarge(&'static str),
}

/// Longest period or timeout a node accepts (a day): every sum and product of them the node
/// computes stays far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// Most retries a node accepts for probes and per-hop retransmissions.
pub const MAX_RETRIES: u8 = 16;
/// Largest bound a node accepts on held messages, messages in flight and probes.
pub const MAX_BOUND: usize = 1 << 20;
/// Most spares a node keeps per sparse routing-table cell ([`Config::cell_spares`]).
pub const MAX_CELL_SPARES: u8 = 8;

impl Config {
    /// Checks the parameters that do not depend on the address type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=4).contains(&self.b) {
            return Err(ConfigError::DigitWidth(self.b));
        }
        let l = self.leaf_set_size;
        if l == 0 || !l.is_multiple_of(2) || l > 64 {
            return Err(ConfigError::LeafSetSize(l));
        }
        for (name, d) in [
            ("heartbeat_period", self.heartbeat_period),
            ("failure_timeout", self.failure_timeout),
            ("maintenance_period", self.maintenance_period),
            ("rto_initial", self.rto_initial),
            ("rto_min", self.rto_min),
            ("rto_max", self.rto_max),
            ("hold_timeout", self.hold_timeout),
            ("join_timeout", self.join_timeout),
            ("lookup_timeout", self.lookup_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
            if d > MAX_DURATION {
                return Err(ConfigError::TooLarge(name));
            }
        }
        for (name, n) in [
            ("probe_retries", self.probe_retries),
            ("max_retransmits", self.max_retransmits),
            ("lookup_retries", self.lookup_retries),
        ] {
            if n > MAX_RETRIES {
                return Err(ConfigError::TooLarge(name));
            }
        }
        if !(self.rto_min <= self.rto_initial && self.rto_initial <= self.rto_max) {
            return Err(ConfigError::RtoBounds);
        }
        if self.failure_timeout <= self.heartbeat_period {
            return Err(ConfigError::FailureTimeout);
        }
        for (name, n) in [
            ("max_held", self.max_held),
            ("max_in_flight", self.max_in_flight),
            ("max_probes", self.max_probes),
            ("max_lookups", self.max_lookups),
            ("join_attempts", usize::from(self.join_attempts)),
        ] {
            if n == 0 {
                return Err(ConfigError::ZeroBound(name));
            }
            if n > MAX_BOUND {
                return Err(ConfigError::TooLarge(name));
            }
        }
        if self.maintenance_probes > MAX_BOUND {
            return Err(ConfigError::TooLarge("maintenance_probes"));
        }
        if self.cell_spares > MAX_CELL_SPARES {
            return Err(ConfigError::TooLarge("cell_spares"));
        }
        if self.max_datagram_size > 65_507 {
            return Err(ConfigError::DatagramTooLarge(self.max_datagram_size));
        }
        Ok(())
    }

    /// Checks everything, including that `max_datagram_size` fits the largest control message
    /// for addresses of at most `max_addr_len` encoded bytes.
    pub fn validate_for(&self, max_addr_len: usize) -> Result<(), ConfigError> {
        self.validate()?;
        let needed = crate::wire::min_datagram_size(self, max_addr_len);
        if self.max_datagram_size < needed {
            return Err(ConfigError::DatagramTooSmall {
                needed,
                got: self.max_datagram_size,
            });
        }
        Ok(())
    }

    /// Half the leaf set: how many nodes it keeps on each side.
    pub fn leaf_half(&self) -> usize {
        self.leaf_set_size / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_name_the_problem() {
        let ok = Config::default();
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.b = 0;
        assert_eq!(c.validate(), Err(ConfigError::DigitWidth(0)));
        let mut c = ok.clone();
        c.leaf_set_size = 15;
        assert_eq!(c.validate(), Err(ConfigError::LeafSetSize(15)));
        c.leaf_set_size = 0;
        assert_eq!(c.validate(), Err(ConfigError::LeafSetSize(0)));
        let mut c = ok.clone();
        c.heartbeat_period = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration("heartbeat_period"))
        );
        let mut c = ok.clone();
        c.rto_min = Duration::from_secs(10);
        assert_eq!(c.validate(), Err(ConfigError::RtoBounds));
        let mut c = ok.clone();
        c.max_datagram_size = 100;
        assert!(matches!(
            c.validate_for(19),
            Err(ConfigError::DatagramTooSmall { got: 100, .. })
        ));
        assert_eq!(ok.validate_for(19), Ok(()));
        let mut c = ok.clone();
        c.max_datagram_size = 70_000;
        assert_eq!(c.validate(), Err(ConfigError::DatagramTooLarge(70_000)));
        let mut c = ok.clone();
        c.failure_timeout = Duration::MAX;
        assert_eq!(c.validate(), Err(ConfigError::TooLarge("failure_timeout")));
        let mut c = ok.clone();
        c.probe_retries = 255;
        assert_eq!(c.validate(), Err(ConfigError::TooLarge("probe_retries")));
        let mut c = ok;
        c.max_held = usize::MAX;
        assert_eq!(c.validate(), Err(ConfigError::TooLarge("max_held")));
    }
}
