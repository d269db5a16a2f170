//! The errors of the handle's calls.

use std::io;

use pastry_core::ConfigError;

/// The node's [`Driver`](crate::Driver) is gone: the node shut down or left, every handle
/// was dropped, or the driver future was dropped (or never spawned and then dropped).
///
/// ```
/// use pastry_smol::{Config, PastryNode, Stopped};
/// smol::block_on(async {
///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
///     drop(driver); // never spawned
///     assert_eq!(node.counters().await, Err(Stopped));
/// });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the node's driver has stopped")]
pub struct Stopped;

/// Why [`NodeBuilder::bind`](crate::NodeBuilder::bind) failed.
///
/// ```
/// use pastry_smol::{BindError, Config, NodeBuilder};
/// let mut config = Config::default();
/// config.leaf_set_size = 7; // must be even
/// let err = NodeBuilder::new(config).bind("127.0.0.1:0".parse().unwrap()).unwrap_err();
/// assert!(matches!(err, BindError::Config(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The socket could not be bound or registered with the reactor, or the operating system
    /// had no randomness for the node's id, seed or secret.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// Two applications were registered under the same application id.
    #[error("application id {0} is registered twice")]
    DuplicateApp(u16),
}

/// Why [`PastryNode::join`](crate::PastryNode::join) or
/// [`PastryNode::bootstrap`](crate::PastryNode::bootstrap) failed.
///
/// ```
/// use pastry_smol::{Config, JoinError, PastryNode};
/// smol::block_on(async {
///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
///     smol::spawn(driver).detach();
///     node.bootstrap().await.unwrap();
///     assert_eq!(node.bootstrap().await, Err(JoinError::AlreadyStarted));
/// });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The node already started a ring, is active in one, or has left.
    #[error("the node already started or joined")]
    AlreadyStarted,
    /// The core gave up: the join was not answered after `join_attempts` requests
    /// ([`pastry_core::Event::JoinFailed`]). The node is idle again and may join anew.
    #[error("the join was not answered")]
    Failed,
    /// The node did not become active within the adapter's time limit. The core may still be
    /// joining: a later [`pastry_core::Event::Active`] on the event stream reports success,
    /// and another `join` call waits for the join under way.
    #[error("the node did not become active in time")]
    Timeout,
    /// The driver stopped.
    #[error("the node's driver has stopped")]
    Stopped,
}

impl From<Stopped> for JoinError {
    fn from(_: Stopped) -> Self {
        JoinError::Stopped
    }
}

/// Why [`PastryNode::route`](crate::PastryNode::route) or
/// [`PastryNode::send_direct`](crate::PastryNode::send_direct) failed.
///
/// ```
/// use pastry_smol::{Config, Id, PastryNode, RouteError};
/// smol::block_on(async {
///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
///     smol::spawn(driver).detach();
///     // Neither bootstrapped nor joined yet.
///     let err = node.route(Id::new(7), 0, b"hi".to_vec()).await.unwrap_err();
///     assert_eq!(err, RouteError::Rejected(pastry_core::RouteError::NotJoined));
/// });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The core refused the message (not joined, payload too large).
    #[error(transparent)]
    Rejected(#[from] pastry_core::RouteError),
    /// The driver stopped.
    #[error("the node's driver has stopped")]
    Stopped,
}

impl From<Stopped> for RouteError {
    fn from(_: Stopped) -> Self {
        RouteError::Stopped
    }
}

/// Why [`PastryNode::lookup`](crate::PastryNode::lookup) failed.
///
/// ```
/// use pastry_smol::{Config, Id, LookupError, PastryNode};
/// smol::block_on(async {
///     let (node, driver) = PastryNode::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
///     smol::spawn(driver).detach();
///     let err = node.lookup(Id::new(7)).await.unwrap_err();
///     assert_eq!(err, LookupError::Rejected(pastry_core::RouteError::NotJoined));
/// });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The core refused the lookup (not joined, too many lookups under way).
    #[error(transparent)]
    Rejected(#[from] pastry_core::RouteError),
    /// No answer came after `lookup_retries` retries of `lookup_timeout` each
    /// ([`pastry_core::Event::LookupFailed`]).
    #[error("the lookup was not answered")]
    Failed,
    /// The driver stopped.
    #[error("the node's driver has stopped")]
    Stopped,
}

impl From<Stopped> for LookupError {
    fn from(_: Stopped) -> Self {
        LookupError::Stopped
    }
}

/// Why [`PastryNode::shutdown`](crate::PastryNode::shutdown) did not end cleanly.
///
/// ```
/// use pastry_smol::ShutdownError;
/// assert_eq!(ShutdownError::Timeout.to_string(), "the leave was not confirmed in time; the driver stopped anyway");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The core did not report [`pastry_core::Event::Left`] within the leave timeout (see
    /// [`NodeBuilder::leave_timeout`](crate::NodeBuilder::leave_timeout)); the driver
    /// stopped anyway.
    #[error("the leave was not confirmed in time; the driver stopped anyway")]
    Timeout,
}
