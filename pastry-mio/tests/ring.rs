//! A ring of real nodes on loopback sockets, driven by a hand-written mio loop: the way a
//! program that owns its event loop uses the crate.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Rng, closest, quick_config, seed};
use mio::{Events, Poll, Token};
use pastry_core::{Event, Id, LookupId};
use pastry_mio::MioNode;

const NODES: usize = 32;
const LOOKUPS: usize = 1000;
/// Lookups under way at once.
const WINDOW: usize = 16;

/// One poll, the nodes registered under `Token(index)`, and every event they reported.
struct Net {
    poll: Poll,
    events: Events,
    nodes: Vec<MioNode>,
    inbox: Vec<VecDeque<Event<SocketAddr>>>,
}

impl Net {
    /// One turn of the caller's loop: wait for readiness or the earliest deadline, dispatch,
    /// run due timers, collect events.
    fn turn(&mut self, max_wait: Duration) {
        let wait = self
            .nodes
            .iter()
            .filter_map(MioNode::timeout)
            .min()
            .map_or(max_wait, |d| d.min(max_wait));
        self.poll.poll(&mut self.events, Some(wait)).expect("poll");
        for event in self.events.iter() {
            self.nodes[event.token().0].handle_event(event);
        }
        let now = Instant::now();
        for node in &mut self.nodes {
            if node.next_deadline().is_some_and(|d| d <= now) {
                node.handle_timeout();
            }
        }
        for (node, inbox) in self.nodes.iter_mut().zip(&mut self.inbox) {
            inbox.extend(std::iter::from_fn(|| node.poll_event()));
        }
    }

    /// Turns until `done` holds; false if `limit` passed first.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        let end = Instant::now() + limit;
        while !done(self) {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            self.turn(end - now);
        }
        true
    }
}

#[test]
fn thirty_two_nodes_route_every_lookup_to_the_closest_node() {
    let seed = seed(
        "thirty_two_nodes_route_every_lookup_to_the_closest_node",
        0x6d69_6f31,
    );
    let mut rng = Rng::new(seed);
    let started = Instant::now();

    let poll = Poll::new().expect("poll");
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let mut node = MioNode::bind(
            "127.0.0.1:0".parse().unwrap(),
            quick_config(),
            rng.id(),
            seed ^ i as u64,
        )
        .expect("bind a node");
        node.register(poll.registry(), Token(i)).expect("register");
        nodes.push(node);
    }
    let ids: Vec<Id> = nodes.iter().map(MioNode::id).collect();
    let mut net = Net {
        poll,
        events: Events::with_capacity(1024),
        nodes,
        inbox: vec![VecDeque::new(); NODES],
    };

    net.nodes[0].bootstrap().expect("bootstrap");
    for i in 1..NODES {
        let via = rng.below(i);
        let bootstrap = net.nodes[via].local_addr();
        net.nodes[i].join(bootstrap).expect("join");
        let joined = net.run_until(Duration::from_secs(10), |net| {
            assert!(
                !net.inbox[i].contains(&Event::JoinFailed),
                "node {i} failed to join through node {via}"
            );
            net.nodes[i].node().is_active()
        });
        assert!(
            joined,
            "node {i} not active 10 s after joining through node {via}"
        );
    }
    let joined_in = started.elapsed();
    for inbox in &mut net.inbox {
        inbox.clear();
    }

    // Lookups for random keys from random nodes, a window of them under way at once.
    let mut pending: HashMap<LookupId, (usize, Id, Instant)> = HashMap::new();
    let mut issued = 0;
    let mut answered = 0;
    let mut hops = Vec::with_capacity(LOOKUPS);
    let lookups_started = Instant::now();
    while answered < LOOKUPS {
        while issued < LOOKUPS && pending.len() < WINDOW {
            let from = rng.below(NODES);
            let key = rng.id();
            let id = net.nodes[from].lookup(key).expect("start a lookup");
            pending.insert(id, (from, key, Instant::now()));
            issued += 1;
        }
        net.turn(Duration::from_millis(100));
        for (from, inbox) in net.inbox.iter_mut().enumerate() {
            for event in inbox.drain(..) {
                match event {
                    Event::LookupDone {
                        id,
                        key,
                        root,
                        hops: h,
                    } => {
                        let (origin, asked, _) = pending
                            .remove(&id)
                            .unwrap_or_else(|| panic!("an answer to unknown lookup {id:?}"));
                        assert_eq!((origin, asked), (from, key));
                        let want = closest(key, &ids);
                        assert_eq!(
                            root.id, ids[want],
                            "lookup of {key} from node {from}: root {:?}, closest is node {want}",
                            root.id
                        );
                        assert_eq!(root.addr, net.nodes[want].local_addr());
                        hops.push(h);
                        answered += 1;
                    }
                    Event::LookupFailed { id, key } => {
                        panic!("lookup {id:?} of {key} from node {from} failed")
                    }
                    _ => {}
                }
            }
        }
        for (id, (from, key, at)) in &pending {
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "lookup {id:?} of {key} from node {from} unanswered after 10 s"
            );
        }
    }

    let mean = hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len() as f64;
    let max = hops.iter().max().copied().unwrap_or(0);
    let sent: u64 = net.nodes.iter().map(|n| n.io_counters().sent).sum();
    let dropped: u64 = net
        .nodes
        .iter()
        .map(|n| n.io_counters().dropped_sends + n.io_counters().send_errors)
        .sum();
    println!(
        "{NODES} nodes joined in {joined_in:?}; {LOOKUPS}/{LOOKUPS} lookups at the closest node \
         in {:?}, mean {mean:.2} hops, max {max}; {sent} datagrams sent, {dropped} dropped",
        lookups_started.elapsed()
    );
    for node in &net.nodes {
        assert!(node.node().is_active());
        assert_eq!(node.node().counters().malformed, 0);
    }
}
