//! The Pastry overlay as a sans-IO state machine.
//!
//! Every node has a uniform random 128-bit id; a message routed with a key reaches the live
//! node whose id is numerically closest to the key, in `O(log N)` hops, while nodes join,
//! leave and fail. This crate is the whole protocol (routing table with proximity neighbour
//! selection, leaf set, join, failure detection and repair, the wire codec) without any I/O:
//! no sockets, no clock, no global randomness. It runs under `no_std` with `alloc`.
//!
//! # The drive loop
//!
//! A [`Node`] is driven by method calls that each take the current time, and answers with
//! outputs the caller drains after **every** input:
//!
//! 1. feed an input: [`Node::handle_datagram`] for each datagram received,
//!    [`Node::handle_timeout`] when the deadline passes, or an application call
//!    ([`Node::bootstrap`], [`Node::join`], [`Node::route`], [`Node::send_direct`],
//!    [`Node::leave`]);
//! 2. send every [`Transmit`] from [`Node::poll_transmit`] until it returns `None`;
//! 3. handle every [`Event`] from [`Node::poll_event`] until it returns `None`;
//! 4. sleep until [`Node::poll_timeout`] (or until a datagram arrives), then go to 1.
//!
//! ```
//! use pastry_core::{Config, Event, Id, Instant, Node, Transmit};
//! use std::collections::VecDeque;
//!
//! // Two nodes on an in-memory "network" of addresses 1 and 2.
//! let mut nodes = vec![
//!     Node::<u32>::new(Config::default(), Id::new(1 << 120), 1, 1, Instant::ZERO).unwrap(),
//!     Node::<u32>::new(Config::default(), Id::new(9 << 120), 2, 2, Instant::ZERO).unwrap(),
//! ];
//! let mut now = Instant::ZERO;
//! nodes[0].bootstrap(now).unwrap();
//! nodes[1].join(now, 1).unwrap();
//! let mut wire: VecDeque<(u32, u32, Vec<u8>)> = VecDeque::new();
//! let mut delivered = Vec::new();
//! for _ in 0..200 {
//!     for (i, node) in nodes.iter_mut().enumerate() {
//!         let from = i as u32 + 1;
//!         // 2. drain transmits
//!         while let Some(Transmit { destination, contents }) = node.poll_transmit() {
//!             wire.push_back((from, destination, contents));
//!         }
//!         // 3. drain events
//!         while let Some(event) = node.poll_event() {
//!             if let Event::Deliver(m) = event {
//!                 delivered.push((from, m.payload));
//!             }
//!         }
//!     }
//!     // 1. feed inputs: datagrams, then timers
//!     if let Some((from, to, bytes)) = wire.pop_front() {
//!         nodes[to as usize - 1].handle_datagram(now, from, &bytes).unwrap();
//!         continue;
//!     }
//!     // 4. nothing in flight: advance to the earliest deadline
//!     let next = nodes.iter().filter_map(|n| n.poll_timeout()).min().unwrap();
//!     now = now.max(next);
//!     for node in &mut nodes {
//!         node.handle_timeout(now);
//!     }
//!     if nodes[1].is_active() && delivered.is_empty() && wire.is_empty() {
//!         // Key 8<<120 is closer to node 2 (9<<120) than to node 1 (1<<120).
//!         nodes[0].route(now, Id::new(8 << 120), 0, b"hi".to_vec()).unwrap();
//!     }
//! }
//! assert_eq!(delivered, vec![(2, b"hi".to_vec())]);
//! ```
//!
//! # Applications
//!
//! Applications implement [`Application`] (deliver, forward, update: the Common API of
//! structured overlays) and are registered on the node under an application id; messages
//! for ids without an application surface as [`Event::Deliver`] and [`Event::Direct`].
//!
//! # Determinism
//!
//! A node takes a seed at construction; every random choice derives from it. The same seed
//! and the same sequence of inputs produce the same outputs, bit for bit.
//!
//! # Secrets
//!
//! The seed's generator is fast, not cryptographic, and a seed is often chosen by hand. What
//! other nodes must not guess (address-validation tokens, hop numbers that acks echo, message
//! and lookup ids, probe nonces, join relay tags) is keyed by a 128-bit secret instead. It too comes from the
//! seed unless [`Node::set_secret`] replaces it: on a real network, give every node 16 bytes
//! of the operating system's randomness, as the runtime adapters do. A node keyed that way
//! still makes every other choice from its seed.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod addr;
mod app;
mod config;
mod id;
mod leafset;
pub mod multicast;
mod node;
mod peer;
mod route;
pub mod store;
mod table;
mod time;
pub mod wire;

#[cfg(any(test, feature = "invariants"))]
pub mod invariants;

#[cfg(test)]
mod proptests;

pub use addr::{Address, NodeHandle};
pub use app::{Application, Context, Forward, LeafChange, MessageId, RouteMessage};
pub use config::{Config, ConfigError, MAX_BOUND, MAX_CELL_SPARES, MAX_DURATION, MAX_RETRIES};
pub use id::{Id, ParseIdError};
pub use leafset::{LeafSet, Side};
pub use node::{
    Counters, Event, LookupId, Memory, Node, NodeError, ProbePurposes, RouteError, RouteFailure,
    SendFailure, Transmit,
};
pub use peer::{Peer, Rtt};
pub use route::{NextHop, Via, next_hop};
pub use table::RoutingTable;
#[cfg(feature = "std")]
pub use time::Clock;
pub use time::Instant;
