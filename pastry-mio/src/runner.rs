//! [`Runner`]: a small event loop for callers who do not have one of their own.

use std::fmt;
use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::MioNode;

/// A [`mio::Poll`] with the nodes registered on it, turned by the caller one step at a time
/// ([`Runner::turn`]) or until a condition holds ([`Runner::run_until`]). It starts no thread:
/// it runs only inside those calls.
///
/// Node `i` (in the order of [`Runner::add`]) is registered under `Token(i)` and is
/// `runner.nodes()[i]`. The poll belongs to the runner; a program with sockets of its own to
/// watch runs its own loop with [`MioNode`] instead, which is all this type does.
///
/// ```
/// use std::time::Duration;
/// use pastry_core::{Config, Event, Id};
/// use pastry_mio::{MioNode, Runner};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut runner = Runner::new()?;
/// let a = runner.add(MioNode::bind("127.0.0.1:0".parse()?, Config::default(), Id::new(1 << 120), 1)?)?;
/// let b = runner.add(MioNode::bind("127.0.0.1:0".parse()?, Config::default(), Id::new(9 << 120), 2)?)?;
/// runner.node_mut(a).unwrap().bootstrap()?;
/// let bootstrap = runner.node(a).unwrap().local_addr();
/// runner.node_mut(b).unwrap().join(bootstrap)?;
/// let joined = runner.run_until(Duration::from_secs(10), |r| r.node(b).unwrap().node().is_active())?;
/// assert!(joined);
///
/// // Key 2<<120 is closer to node a (1<<120) than to node b (9<<120).
/// let lookup = runner.node_mut(b).unwrap().lookup(Id::new(2 << 120))?;
/// let mut root = None;
/// runner.run_until(Duration::from_secs(10), |r| {
///     while let Some(event) = r.node_mut(b).unwrap().poll_event() {
///         if let Event::LookupDone { id, root: node, .. } = event {
///             if id == lookup {
///                 root = Some(node);
///             }
///         }
///     }
///     root.is_some()
/// })?;
/// assert_eq!(root.unwrap().id, Id::new(1 << 120));
/// # Ok(())
/// # }
/// ```
pub struct Runner {
    poll: Poll,
    events: Events,
    nodes: Vec<MioNode>,
}

impl Runner {
    /// A runner with no nodes.
    ///
    /// See [`Runner`] for an example.
    pub fn new() -> io::Result<Self> {
        Ok(Runner {
            poll: Poll::new()?,
            events: Events::with_capacity(256),
            nodes: Vec::new(),
        })
    }

    /// Registers `node` and takes it over; returns its token.
    ///
    /// See [`Runner`] for an example.
    pub fn add(&mut self, mut node: MioNode) -> io::Result<Token> {
        let token = Token(self.nodes.len());
        node.register(self.poll.registry(), token)?;
        self.nodes.push(node);
        Ok(token)
    }

    /// The node registered under `token`.
    ///
    /// See [`Runner`] for an example.
    pub fn node(&self, token: Token) -> Option<&MioNode> {
        self.nodes.get(token.0)
    }

    /// The node registered under `token`, to call or to drain its events.
    ///
    /// See [`Runner`] for an example.
    pub fn node_mut(&mut self, token: Token) -> Option<&mut MioNode> {
        self.nodes.get_mut(token.0)
    }

    /// Every node, node `i` under `Token(i)`.
    ///
    /// ```
    /// let runner = pastry_mio::Runner::new()?;
    /// assert!(runner.nodes().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn nodes(&self) -> &[MioNode] {
        &self.nodes
    }

    /// Every node, mutably.
    ///
    /// ```
    /// let mut runner = pastry_mio::Runner::new()?;
    /// for node in runner.nodes_mut() {
    ///     while node.poll_event().is_some() {}
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn nodes_mut(&mut self) -> &mut [MioNode] {
        &mut self.nodes
    }

    /// One turn of the loop: waits for socket events, at most until the earliest node
    /// deadline and at most `max_wait` (`None`: no limit but the deadlines), handles the
    /// events, then runs the timers that are due.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let mut runner = pastry_mio::Runner::new()?;
    /// runner.turn(Some(Duration::from_millis(1)))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let deadline = self.nodes.iter().filter_map(MioNode::timeout).min();
        let wait = match (deadline, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for event in self.events.iter() {
            if let Some(node) = self.nodes.get_mut(event.token().0) {
                node.handle_event(event);
            }
        }
        let now = Instant::now();
        for node in &mut self.nodes {
            if node.next_deadline().is_some_and(|d| d <= now) {
                node.handle_timeout();
            }
        }
        Ok(())
    }

    /// Turns the loop until `done` returns true (`Ok(true)`) or `limit` has passed
    /// (`Ok(false)`). `done` is called before the first turn and after each; it is the place
    /// to drain the nodes' events.
    ///
    /// See [`Runner`] for an example.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> io::Result<bool> {
        let end = Instant::now() + limit;
        loop {
            if done(self) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(false);
            }
            self.turn(Some(end - now))?;
        }
    }
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}
