//! A [`pastry_core`] node on a [mio] UDP socket, for programs that own their event loop.
//!
//! [`MioNode`] registers with the caller's [`mio::Poll`] under the caller's [`mio::Token`].
//! The caller hands it readiness events ([`MioNode::handle_event`], or
//! [`MioNode::handle_readable`] and [`MioNode::handle_writable`]), calls
//! [`MioNode::handle_timeout`] when [`MioNode::next_deadline`] passes, and drains
//! [`MioNode::poll_event`]. There are no threads and no hidden loop: the node runs only inside
//! those calls. [`Runner`] is a small loop for those who do not have one.
//!
//! The adapter holds no protocol logic: it moves datagrams between the socket and the core and
//! tells the core the time. Socket errors (an ICMP port unreachable surfacing as connection
//! refused, message too long, would-block) never stop a node; datagrams the socket cannot take
//! yet wait in a bounded queue, and beyond its bound they are dropped and counted
//! ([`IoCounters`]).
//!
//! # A loop of your own
//!
//! Two nodes on one poll: `a` starts a ring, `b` joins it and looks up a key.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use mio::{Events, Poll, Token};
//! use pastry_core::{Config, Event, Id};
//! use pastry_mio::MioNode;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut poll = Poll::new()?;
//! let mut nodes = [
//!     MioNode::bind("127.0.0.1:0".parse()?, Config::default(), Id::new(1 << 120), 1)?,
//!     MioNode::bind("127.0.0.1:0".parse()?, Config::default(), Id::new(9 << 120), 2)?,
//! ];
//! for (i, node) in nodes.iter_mut().enumerate() {
//!     node.register(poll.registry(), Token(i))?;
//! }
//! nodes[0].bootstrap()?;
//! let bootstrap = nodes[0].local_addr();
//! nodes[1].join(bootstrap)?;
//!
//! let mut events = Events::with_capacity(64);
//! let mut lookup = None;
//! let give_up = Instant::now() + Duration::from_secs(10);
//! let root = 'run: loop {
//!     assert!(Instant::now() < give_up, "no answer in time");
//!     // What the nodes have to tell.
//!     while let Some(event) = nodes[1].poll_event() {
//!         match event {
//!             // Key 2<<120 is closer to node 0 (1<<120) than to node 1 (9<<120).
//!             Event::Active => lookup = Some(nodes[1].lookup(Id::new(2 << 120))?),
//!             Event::LookupDone { id, root, .. } if Some(id) == lookup => break 'run root,
//!             _ => {}
//!         }
//!     }
//!     while nodes[0].poll_event().is_some() {}
//!     // Sleep until a socket is ready or the earliest deadline.
//!     let timeout = nodes.iter().filter_map(MioNode::timeout).min();
//!     poll.poll(&mut events, timeout)?;
//!     for event in events.iter() {
//!         nodes[event.token().0].handle_event(event);
//!     }
//!     let now = Instant::now();
//!     for node in &mut nodes {
//!         if node.next_deadline().is_some_and(|d| d <= now) {
//!             node.handle_timeout();
//!         }
//!     }
//! };
//! assert_eq!((root.id, root.addr), (nodes[0].id(), nodes[0].local_addr()));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(missing_debug_implementations)]

mod node;
mod queue;
mod runner;

pub use node::{BindError, MioNode};
pub use queue::{DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_DATAGRAMS, IoCounters};
pub use runner::Runner;

/// The core this crate drives, re-exported so that its types match the adapter's.
pub use pastry_core;
