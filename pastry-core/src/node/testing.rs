//! What the node's unit tests share: a node alone in its ring and a look at what it sent.

use alloc::vec::Vec;

use crate::node::Node;
use crate::wire::{Datagram, Message};
use crate::{Config, Id, Instant};

/// The id of the node under test (at address 1).
pub(crate) const ME: u128 = 0x1234_5678_9abc_def0_1122_3344_5566_7788;

/// A node that bootstrapped a ring of its own, with what that sent drained.
pub(crate) fn alone() -> Node<u32> {
    alone_keyed(None)
}

/// The same, with its secret set before it started when one is given.
pub(crate) fn alone_keyed(secret: Option<[u8; 16]>) -> Node<u32> {
    let mut node: Node<u32> =
        Node::new(Config::default(), Id::new(ME), 1, 7, Instant::ZERO).unwrap();
    if let Some(key) = secret {
        node.set_secret(key);
    }
    node.bootstrap(Instant::ZERO).unwrap();
    while node.poll_transmit().is_some() {}
    node
}

/// The hop number of the direct message `node` just sent to address `to`.
pub(crate) fn direct_seq(node: &mut Node<u32>, to: u32) -> u32 {
    sent(node)
        .into_iter()
        .find_map(|(dest, m)| match m {
            Message::Direct { seq, .. } if dest == to => Some(seq),
            _ => None,
        })
        .expect("the message was sent")
}

/// Everything `node` has to send, decoded, with its destination.
pub(crate) fn sent(node: &mut Node<u32>) -> Vec<(u32, Message<u32>)> {
    core::iter::from_fn(|| node.poll_transmit())
        .map(|t| {
            let d = Datagram::<u32>::decode(&t.contents, usize::MAX).unwrap();
            (t.destination, d.message)
        })
        .collect()
}
