//! The driver: the one task that owns the socket, the core node and its timer, and moves
//! datagrams, deadlines and commands between them. It makes no protocol decision.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use async_channel::{Receiver, Sender, TryRecvError};
use async_io::{Async, Timer};
use futures_lite::future;
use pastry_core::{Clock, Event, Id, LookupId, MessageId, Node, NodeHandle, Transmit};

use crate::error::{JoinError, LookupError, RouteError, ShutdownError};
use crate::stats::SharedStats;

/// A reply channel (capacity one: a oneshot).
pub(crate) type Reply<T> = Sender<T>;
/// What a lookup resolves to: the root and the hops.
pub(crate) type LookupReply = Reply<Result<(NodeHandle<SocketAddr>, u8), LookupError>>;
/// A read-only look at the core, run on the driver's task.
pub(crate) type Inspection = Box<dyn FnOnce(&Node<SocketAddr>) + Send>;
/// A call into the core (an application), run on the driver's task at the given time.
pub(crate) type Action = Box<dyn FnOnce(&mut Node<SocketAddr>, pastry_core::Instant) + Send>;

/// What a handle asks of the driver.
pub(crate) enum Command {
    Bootstrap(Reply<Result<(), JoinError>>),
    Join(SocketAddr, Reply<Result<(), JoinError>>),
    Route {
        key: Id,
        app: u16,
        payload: Vec<u8>,
        reply: Reply<Result<MessageId, RouteError>>,
    },
    Direct {
        to: NodeHandle<SocketAddr>,
        app: u16,
        payload: Vec<u8>,
        reply: Reply<Result<MessageId, RouteError>>,
    },
    Lookup {
        key: Id,
        reply: LookupReply,
    },
    Inspect(Inspection),
    Act(Action),
    Shutdown(Reply<Result<(), ShutdownError>>),
}

/// Inputs handled in one pass before the driver yields to the executor.
const BATCH: usize = 64;
/// Largest UDP payload; a smaller buffer would truncate (Unix) or fail (Windows) on larger
/// datagrams, which the core then rejects as malformed.
const RECV_BUF: usize = 65_536;
/// How long a stopping driver keeps trying to send what is still queued.
const FLUSH_GRACE: Duration = Duration::from_millis(200);

/// A bounded FIFO of datagrams waiting for the socket.
#[derive(Debug)]
pub(crate) struct SendQueue {
    queue: VecDeque<Transmit<SocketAddr>>,
    cap: usize,
}

impl SendQueue {
    pub(crate) fn new(cap: usize) -> Self {
        SendQueue {
            queue: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Appends `t` unless the queue is full; returns whether it was kept.
    pub(crate) fn push(&mut self, t: Transmit<SocketAddr>) -> bool {
        if self.queue.len() >= self.cap {
            return false;
        }
        self.queue.push_back(t);
        true
    }

    pub(crate) fn is_full(&self) -> bool {
        self.queue.len() >= self.cap
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Sends from the front until the queue is empty or the socket would block (returns
    /// true then). Other errors drop the datagram concerned and are counted.
    pub(crate) fn flush(&mut self, socket: &UdpSocket, stats: &SharedStats) -> bool {
        while let Some(t) = self.queue.front() {
            match socket.send_to(&t.contents, t.destination) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stats.would_block();
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => stats.send_error(&e),
            }
            self.queue.pop_front();
        }
        if self.queue.capacity() > 64 {
            self.queue.shrink_to(16);
        }
        false
    }
}

/// Settings the builder hands to the driver.
pub(crate) struct Settings {
    pub(crate) send_queue_capacity: usize,
    pub(crate) leave_timeout: Duration,
}

/// The future that runs a node: it owns the UDP socket, the [`pastry_core::Node`] and its
/// timer, and serves the [`PastryNode`](crate::PastryNode) handles.
///
/// Spawn it on any executor that can run [`async_io`] futures (smol, async-std, or
/// `futures_lite::future::block_on` on a thread of its own): the library starts no executor
/// and no thread besides `async-io`'s own reactor. It completes when the node has left the
/// ring after [`PastryNode::shutdown`](crate::PastryNode::shutdown), or after every handle
/// was dropped (then it leaves the ring first, as `shutdown` does). Dropping it stops the
/// node at once, without a leave; the handles' calls then fail with
/// [`Stopped`](crate::Stopped).
///
/// ```
/// use pastry_smol::{Config, PastryNode};
/// let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
/// // On smol: smol::spawn(driver).detach(); on async-std: async_std::task::spawn(driver);
/// // or on a thread of its own:
/// let thread = std::thread::spawn(move || futures_lite::future::block_on(driver));
/// smol::block_on(async {
///     node.bootstrap().await.unwrap();
///     node.shutdown().await.unwrap();
/// });
/// thread.join().unwrap();
/// ```
#[must_use = "a node does nothing unless its driver is spawned or awaited"]
pub struct Driver {
    fut: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
    local: SocketAddr,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        socket: Async<UdpSocket>,
        node: Node<SocketAddr>,
        clock: Clock,
        commands: Receiver<Command>,
        events: Sender<Event<SocketAddr>>,
        stats: Arc<SharedStats>,
        settings: Settings,
    ) -> Self {
        let local = node.local().addr;
        let state = State {
            socket,
            node,
            clock,
            commands,
            commands_open: true,
            events,
            queue: SendQueue::new(settings.send_queue_capacity),
            stats,
            join_waiters: Vec::new(),
            lookups: HashMap::new(),
            shutdown_waiters: Vec::new(),
            leave_timeout: settings.leave_timeout,
            stop_at: None,
            left: false,
            timer: Timer::never(),
            armed: None,
            buf: vec![0; RECV_BUF].into_boxed_slice(),
        };
        Driver {
            fut: Box::pin(state.run()),
            local,
        }
    }
}

/// What woke the driver up.
enum Wake {
    Command(Command),
    CommandsClosed,
    Readable,
    Writable,
    Timer,
}

struct State {
    socket: Async<UdpSocket>,
    node: Node<SocketAddr>,
    clock: Clock,
    commands: Receiver<Command>,
    commands_open: bool,
    events: Sender<Event<SocketAddr>>,
    queue: SendQueue,
    stats: Arc<SharedStats>,
    join_waiters: Vec<Reply<Result<(), JoinError>>>,
    lookups: HashMap<LookupId, LookupReply>,
    shutdown_waiters: Vec<Reply<Result<(), ShutdownError>>>,
    leave_timeout: Duration,
    /// Set once the node leaves: the driver stops at `Event::Left` or at this instant.
    stop_at: Option<StdInstant>,
    left: bool,
    timer: Timer,
    /// The instant `timer` is set to, `None` when it is cleared or has fired.
    armed: Option<StdInstant>,
    buf: Box<[u8]>,
}

impl State {
    async fn run(mut self) {
        loop {
            let more = self.service();
            if self.done() {
                break;
            }
            if more {
                // Work is waiting but others deserve a turn.
                future::yield_now().await;
                continue;
            }
            self.arm_timer();
            match self.wait().await {
                Wake::Command(c) => self.command(c),
                Wake::CommandsClosed => self.commands_closed(),
                Wake::Timer => self.armed = None,
                Wake::Readable | Wake::Writable => {}
            }
        }
        self.finish().await;
    }

    /// Everything that can be done without waiting: due timers, queued commands, received
    /// datagrams, sending. Returns whether a batch limit was reached (more may be ready).
    fn service(&mut self) -> bool {
        self.check_timers();
        let mut more = false;
        if self.commands_open {
            let mut n = 0;
            while n < BATCH && !self.queue.is_full() {
                match self.commands.try_recv() {
                    Ok(c) => self.command(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        self.commands_closed();
                        break;
                    }
                }
                n += 1;
            }
            more |= n == BATCH;
        }
        let mut n = 0;
        while n < BATCH && !self.queue.is_full() {
            match self.socket.get_ref().recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    let now = self.clock.now();
                    // Malformed datagrams are counted by the core and change nothing else.
                    let _ = self.node.handle_datagram(now, from, &self.buf[..len]);
                    self.after_input();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP reports about earlier datagrams (refused, unreachable), truncation:
                // counted, never fatal.
                Err(e) => self.stats.recv_error(&e),
            }
            n += 1;
        }
        more |= n == BATCH;
        self.check_timers();
        self.flush();
        more
    }

    fn check_timers(&mut self) {
        if let Some(at) = self.node.poll_timeout() {
            let now = self.clock.now();
            if at <= now {
                self.node.handle_timeout(now);
                self.after_input();
            }
        }
    }

    /// The core's contract: after every input, drain the transmits and the events (the
    /// timer is re-armed from `poll_timeout` before the driver sleeps).
    fn after_input(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            if !self.queue.push(t) {
                self.stats.queue_dropped();
            }
        }
        self.stats.queue_len(self.queue.len());
        while let Some(e) = self.node.poll_event() {
            self.dispatch(e);
        }
        self.flush();
    }

    fn flush(&mut self) {
        if !self.queue.is_empty() {
            self.queue.flush(self.socket.get_ref(), &self.stats);
        }
    }

    fn dispatch(&mut self, e: Event<SocketAddr>) {
        match &e {
            Event::Active => {
                for w in self.join_waiters.drain(..) {
                    let _ = w.try_send(Ok(()));
                }
            }
            Event::JoinFailed => {
                for w in self.join_waiters.drain(..) {
                    let _ = w.try_send(Err(JoinError::Failed));
                }
            }
            Event::LookupDone { id, root, hops, .. } => {
                if let Some(w) = self.lookups.remove(id) {
                    let _ = w.try_send(Ok((root.clone(), *hops)));
                    return;
                }
            }
            Event::LookupFailed { id, .. } => {
                if let Some(w) = self.lookups.remove(id) {
                    let _ = w.try_send(Err(LookupError::Failed));
                    return;
                }
            }
            Event::Left => self.left = true,
            _ => {}
        }
        // A full stream loses its oldest event; a stream nobody holds any more loses all.
        if let Ok(Some(_)) = self.events.force_send(e) {
            self.stats.event_dropped();
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.clock.now();
        match c {
            Command::Bootstrap(reply) => {
                let r = self
                    .node
                    .bootstrap(now)
                    .map_err(|_| JoinError::AlreadyStarted);
                self.after_input();
                let _ = reply.try_send(r);
            }
            Command::Join(bootstrap, reply) => {
                if self.node.is_joining() {
                    // Wait for the join under way (after a time-out of an earlier call).
                    self.join_waiters.push(reply);
                    return;
                }
                match self.node.join(now, bootstrap) {
                    Ok(()) => self.join_waiters.push(reply),
                    Err(_) => {
                        let _ = reply.try_send(Err(JoinError::AlreadyStarted));
                    }
                }
                self.after_input();
            }
            Command::Route {
                key,
                app,
                payload,
                reply,
            } => {
                let r = self.node.route(now, key, app, payload);
                self.after_input();
                let _ = reply.try_send(r.map_err(RouteError::from));
            }
            Command::Direct {
                to,
                app,
                payload,
                reply,
            } => {
                let r = self.node.send_direct(now, to, app, payload);
                self.after_input();
                let _ = reply.try_send(r.map_err(RouteError::from));
            }
            Command::Lookup { key, reply } => match self.node.lookup(now, key) {
                Ok(id) => {
                    // Registered before the outputs are drained: alone, a node answers its
                    // own lookup at once.
                    self.lookups.insert(id, reply);
                    self.after_input();
                }
                Err(e) => {
                    let _ = reply.try_send(Err(LookupError::Rejected(e)));
                }
            },
            Command::Inspect(f) => f(&self.node),
            Command::Act(f) => {
                f(&mut self.node, now);
                self.after_input();
            }
            Command::Shutdown(reply) => {
                self.shutdown_waiters.push(reply);
                self.start_leave();
            }
        }
    }

    fn commands_closed(&mut self) {
        self.commands_open = false;
        self.start_leave();
    }

    fn start_leave(&mut self) {
        if self.stop_at.is_some() {
            return;
        }
        let now = StdInstant::now();
        // A huge time-out means "no limit" (the core's own bound on a leave still holds).
        self.stop_at = Some(
            now.checked_add(self.leave_timeout)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        );
        self.node.leave(self.clock.now());
        self.after_input();
    }

    fn done(&self) -> bool {
        self.left || self.stop_at.is_some_and(|t| StdInstant::now() >= t)
    }

    fn arm_timer(&mut self) {
        let core = self.node.poll_timeout().map(|t| self.clock.to_std(t));
        let want = match (core, self.stop_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if want != self.armed {
            match want {
                Some(t) => self.timer.set_at(t),
                None => self.timer.clear(),
            }
            self.armed = want;
        }
    }

    /// Sleeps until a command, a datagram, the deadline, or room in the socket's send
    /// buffer. While the send queue is full, only the last: that is the back-pressure (the
    /// command channel fills and callers wait; the kernel drops datagrams for us).
    async fn wait(&mut self) -> Wake {
        let State {
            socket,
            commands,
            commands_open,
            queue,
            timer,
            stats,
            ..
        } = self;
        let full = queue.is_full();
        let listen = !full;
        let take_commands = *commands_open && !full;
        let sending = !queue.is_empty();
        let command = async {
            if !take_commands {
                return future::pending().await;
            }
            match commands.recv().await {
                Ok(c) => Wake::Command(c),
                Err(_) => Wake::CommandsClosed,
            }
        };
        let readable = async {
            if !listen {
                return future::pending().await;
            }
            if let Err(e) = socket.readable().await {
                stats.recv_error(&e);
            }
            Wake::Readable
        };
        let writable = async {
            if !sending {
                return future::pending().await;
            }
            if let Err(e) = socket.writable().await {
                stats.send_error(&e);
            }
            Wake::Writable
        };
        let timer = async {
            timer.await;
            Wake::Timer
        };
        future::race(
            future::race(command, readable),
            future::race(timer, writable),
        )
        .await
    }

    /// Sends what is still queued (briefly), answers the shutdown calls, and drops every
    /// other waiter (their calls fail with `Stopped`).
    async fn finish(mut self) {
        let deadline = StdInstant::now() + FLUSH_GRACE;
        while !self.queue.is_empty() && StdInstant::now() < deadline {
            let writable = async {
                let _ = self.socket.writable().await;
            };
            let late = async {
                Timer::at(deadline).await;
            };
            future::or(writable, late).await;
            self.queue.flush(self.socket.get_ref(), &self.stats);
        }
        let result = if self.left {
            Ok(())
        } else {
            Err(ShutdownError::Timeout)
        };
        // Closed first, so that a handle told of the shutdown already sees the node stopped.
        self.commands.close();
        for w in self.shutdown_waiters.drain(..) {
            let _ = w.try_send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16) -> Transmit<SocketAddr> {
        Transmit {
            destination: SocketAddr::from(([127, 0, 0, 1], port)),
            contents: vec![0; 8],
        }
    }

    #[test]
    fn handles_and_drivers_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send + 'static>() {}
        send_sync::<crate::PastryNode>();
        send::<Driver>();
        send::<crate::Events>();
    }

    #[test]
    fn the_send_queue_is_bounded() {
        let mut q = SendQueue::new(3);
        assert!(q.push(t(1)) && q.push(t(2)) && q.push(t(3)));
        assert!(q.is_full());
        assert!(!q.push(t(4)), "a full queue refuses");
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn send_errors_drop_the_datagram_and_are_counted() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let stats = SharedStats::default();
        let mut q = SendQueue::new(4);
        // Port 0 is not a destination: the send fails at once.
        q.push(t(0));
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        q.push(Transmit {
            destination: sink.local_addr().unwrap(),
            contents: b"ok".to_vec(),
        });
        assert!(!q.flush(&socket, &stats));
        assert!(q.is_empty());
        assert_eq!(stats.snapshot().send_errors, 1);
        let mut buf = [0; 8];
        assert_eq!(sink.recv(&mut buf).unwrap(), 2);
    }
}
