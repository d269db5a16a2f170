//! The stream of the core's events.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_channel::Receiver;
use futures_lite::Stream;
use pastry_core::Event;

/// The node's events: messages delivered here as their root
/// ([`Event::Deliver`](pastry_core::Event::Deliver)), direct messages, leaf-set changes,
/// route and send failures, [`Active`](pastry_core::Event::Active) (also after a rejoin),
/// [`Left`](pastry_core::Event::Left), and so on. Answers to
/// [`PastryNode::lookup`](crate::PastryNode::lookup) go to the caller instead. Messages for
/// an application id with a registered [`Application`](pastry_core::Application) go to the
/// application, not here.
///
/// The queue behind the stream is bounded (see
/// [`NodeBuilder::event_capacity`](crate::NodeBuilder::event_capacity)). When it is full
/// the **oldest** event is dropped to make room for the newest, and
/// [`IoCounters::events_dropped`](crate::IoCounters::events_dropped) counts it: a node never
/// waits for its application, and a slow reader sees the most recent events. All streams
/// taken from clones of one handle share that queue, and each event is yielded by exactly
/// one of them. The stream ends when the driver stops.
///
/// ```
/// use futures_lite::StreamExt;
/// use pastry_smol::{Config, Event, Id, PastryNode};
/// smol::block_on(async {
///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
///     smol::spawn(driver).detach();
///     let mut events = node.events();
///     node.bootstrap().await.unwrap();
///     assert_eq!(events.next().await, Some(Event::Active));
///     node.route(Id::new(99), 3, b"hi".to_vec()).await.unwrap();
///     match events.next().await {
///         Some(Event::Deliver(m)) => assert_eq!((m.app, m.payload), (3, b"hi".to_vec())),
///         other => panic!("{other:?}"),
///     }
/// });
/// ```
pub struct Events {
    rx: Pin<Box<Receiver<Event<SocketAddr>>>>,
}

impl Events {
    pub(crate) fn new(rx: Receiver<Event<SocketAddr>>) -> Self {
        Events { rx: Box::pin(rx) }
    }

    /// The next event, or `None` once the driver has stopped and the queue is empty.
    ///
    /// ```
    /// use pastry_smol::{Config, Event, PastryNode};
    /// smol::block_on(async {
    ///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    ///     smol::spawn(driver).detach();
    ///     let events = node.events();
    ///     node.bootstrap().await.unwrap();
    ///     assert_eq!(events.recv().await, Some(Event::Active));
    /// });
    /// ```
    pub async fn recv(&self) -> Option<Event<SocketAddr>> {
        self.rx.recv().await.ok()
    }

    /// The next event if one is queued, without waiting.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// let (node, _driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    /// assert_eq!(node.events().try_recv(), None);
    /// ```
    pub fn try_recv(&self) -> Option<Event<SocketAddr>> {
        self.rx.try_recv().ok()
    }

    /// Events queued now.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// let (node, _driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    /// assert_eq!(node.events().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no event is queued now.
    ///
    /// ```
    /// use pastry_smol::{Config, PastryNode};
    /// let (node, _driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    /// assert!(node.events().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl Stream for Events {
    type Item = Event<SocketAddr>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.as_mut().poll_next(cx)
    }
}
