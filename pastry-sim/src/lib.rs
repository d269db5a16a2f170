//! A deterministic test network and simulator for `pastry-core`.
//!
//! [`Network`] runs real [`pastry_core::Node`]s in one process on virtual time: an event
//! queue ordered by (time, sequence), latency from points on a plane, optional loss, silent
//! kills, graceful leaves and revivals, and an [`Oracle`] that knows which nodes are live and
//! active and which one is numerically closest to any key. The simulator holds no protocol
//! logic: it only carries datagrams and timers between nodes and watches what they deliver.
//! [`IdealRoutes`] is its yardstick for proximity: the routes the same lookups would take on
//! the same ring over perfect routing tables.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod churn;
pub mod fuzzing;
mod ideal;
mod net;
mod oracle;
pub mod plot;
mod prefetch;
mod queue;
pub mod report;
mod scenario;
mod topology;

pub use ideal::{IdealRoute, IdealRoutes};
pub use net::{
    Addr, Delivery, LOOKUP_APP, Lookup, LookupStats, NetConfig, Network, NodeState, SpawnHook,
    Totals,
};
pub use oracle::Oracle;
pub use report::Report;
pub use scenario::{Progress, Scenario, ScenarioError};
pub use topology::{Point, Topology, TopologyKind};

/// The README's code examples, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
