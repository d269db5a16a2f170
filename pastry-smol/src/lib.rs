//! Runs a [`pastry_core`] node on an [`async_io`] UDP socket, under smol, async-std or any
//! executor that can poll `async-io` futures.
//!
//! The crate holds no protocol logic: a [`Driver`] future owns the socket, the core
//! [`Node`](pastry_core::Node) and one timer, and moves datagrams, deadlines and commands
//! between them, following the core's contract (after every input it drains
//! `poll_transmit` and `poll_event`, and re-arms the timer from `poll_timeout`). A
//! [`PastryNode`] handle, cheap to clone, sends it commands.
//!
//! The library runs no executor of its own: spawn the driver where you like
//! (`smol::spawn(driver).detach()`, `async_std::task::spawn(driver)`, or
//! `futures_lite::future::block_on(driver)` on a thread).
//!
//! ```
//! use pastry_smol::{Config, Event, Id, PastryNode};
//!
//! smol::block_on(async {
//!     // A ring of two nodes on the loopback interface.
//!     let (a, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
//!     smol::spawn(driver).detach();
//!     a.bootstrap().await.unwrap();
//!     let (b, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
//!     smol::spawn(driver).detach();
//!     b.join(a.local_addr()).await.unwrap();
//!
//!     // Route a message to a's id: a is its root and sees it on its event stream.
//!     let events = a.events();
//!     b.route(a.id(), 0, b"hello".to_vec()).await.unwrap();
//!     loop {
//!         if let Some(Event::Deliver(m)) = events.recv().await {
//!             assert_eq!(m.payload, b"hello");
//!             break;
//!         }
//!     }
//!
//!     // Ask for the root of a key.
//!     let (root, _hops) = b.lookup(b.id()).await.unwrap();
//!     assert_eq!(root.addr, b.local_addr());
//!
//!     // Leave the ring gracefully.
//!     b.shutdown().await.unwrap();
//!     a.shutdown().await.unwrap();
//! });
//! ```
//!
//! # Failure handling
//!
//! Socket errors never stop a node. ICMP reports (connection refused or reset, unreachable),
//! "message too long" and any other error of `send_to` or `recv_from` are counted in
//! [`IoCounters`] and the datagram concerned is dropped; the core's retransmissions and
//! failure detection deal with the loss. When the socket's send buffer is full ("would
//! block"), datagrams wait in a bounded queue ([`NodeBuilder::send_queue_capacity`]); while
//! that queue is full the driver takes no new input, so that callers feel the back-pressure
//! and memory stays bounded. The event stream is bounded too and drops its oldest event when
//! nobody reads it ([`Events`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod error;
mod events;
mod node;
mod stats;

pub use driver::Driver;
pub use error::{BindError, JoinError, LookupError, RouteError, ShutdownError, Stopped};
pub use events::Events;
pub use node::{NodeBuilder, PastryNode};
pub use stats::IoCounters;

pub use pastry_core;
pub use pastry_core::{
    Application, Config, Context, Counters, Event, Forward, Id, LeafChange, LeafSet, MessageId,
    NodeHandle, RouteFailure, RouteMessage, RoutingTable,
};
