//! The core's notion of time: microseconds since an epoch the caller picks.
//!
//! The core never reads a clock. Every input carries `now`, and the core answers with
//! deadlines in the same units, so a simulator can run it on virtual time and a driver on a
//! monotonic clock.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point in time, in microseconds since an arbitrary epoch chosen by the caller.
///
/// Arithmetic saturates instead of overflowing: no input can make the core panic through time.
///
/// ```
/// use core::time::Duration;
/// use pastry_core::Instant;
/// let t = Instant::from_millis(1_500);
/// assert_eq!(t + Duration::from_millis(500), Instant::from_secs(2));
/// assert_eq!(Instant::from_secs(2) - t, Duration::from_millis(500));
/// assert_eq!(t - Instant::from_secs(2), Duration::ZERO);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);
    /// The latest representable instant.
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000))
    }

    /// An instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Instant(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(micros(rhs)))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Maps `std::time::Instant` onto the core's [`Instant`] and back, for drivers on real clocks.
///
/// ```
/// use pastry_core::Clock;
/// let clock = Clock::new();
/// let now = clock.now();
/// let later = now + core::time::Duration::from_millis(5);
/// assert!(clock.to_std(later) > clock.to_std(now));
/// ```
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: std::time::Instant,
}

#[cfg(feature = "std")]
impl Clock {
    /// A clock whose epoch is the moment of the call.
    pub fn new() -> Self {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    /// A clock with a given epoch (for example a runtime's paused clock).
    pub fn with_epoch(epoch: std::time::Instant) -> Self {
        Clock { epoch }
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.from_std(std::time::Instant::now())
    }

    /// Converts a `std` instant; instants before the epoch map to the epoch.
    pub fn from_std(&self, t: std::time::Instant) -> Instant {
        Instant(micros(t.saturating_duration_since(self.epoch)))
    }

    /// Converts back to a `std` instant.
    pub fn to_std(&self, t: Instant) -> std::time::Instant {
        self.epoch + Duration::from_micros(t.0)
    }
}

#[cfg(feature = "std")]
impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
