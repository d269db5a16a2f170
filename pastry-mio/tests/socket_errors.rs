//! Socket errors never stop a node: datagrams to ports nobody listens on (ICMP port
//! unreachable, reported by Linux as connection refused), malformed datagrams, and a node
//! that goes on working afterwards. Driven by the crate's [`Runner`].

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Rng, closed_port, quick_config, seed};
use mio::Token;
use pastry_core::{Event, Id, NodeHandle};
use pastry_mio::{MioNode, Runner};

const LIMIT: Duration = Duration::from_secs(10);

/// Turns `runner` until node `token` reports an event matching `want`; panics after `LIMIT`.
fn wait_for(
    runner: &mut Runner,
    token: Token,
    what: &str,
    mut want: impl FnMut(&Event<SocketAddr>) -> bool,
) -> Event<SocketAddr> {
    let mut found = None;
    let done = runner
        .run_until(LIMIT, |r| {
            let node = r.node_mut(token).expect("a node");
            while let Some(event) = node.poll_event() {
                if found.is_none() && want(&event) {
                    found = Some(event);
                }
            }
            found.is_some()
        })
        .expect("the loop runs");
    assert!(done, "no {what} within {LIMIT:?}");
    found.expect("found")
}

/// Looks up `key` from node `from` and returns the root's handle.
fn lookup(runner: &mut Runner, from: Token, key: Id) -> NodeHandle<SocketAddr> {
    let id = runner
        .node_mut(from)
        .expect("a node")
        .lookup(key)
        .expect("start a lookup");
    match wait_for(
        runner,
        from,
        "lookup answer",
        |e| matches!(e, Event::LookupDone { id: i, .. } | Event::LookupFailed { id: i, .. } if *i == id),
    ) {
        Event::LookupDone { root, .. } => root,
        other => panic!("lookup of {key} failed: {other:?}"),
    }
}

#[test]
fn a_join_through_a_closed_port_fails_and_the_node_joins_a_live_ring_after() {
    let seed = seed(
        "a_join_through_a_closed_port_fails_and_the_node_joins_a_live_ring_after",
        7,
    );
    let mut rng = Rng::new(seed);
    let mut runner = Runner::new().expect("poll");
    let bind = |rng: &mut Rng, seed| {
        MioNode::bind(
            "127.0.0.1:0".parse().unwrap(),
            quick_config(),
            rng.id(),
            seed,
        )
        .expect("bind")
    };
    let a = runner.add(bind(&mut rng, seed)).expect("register");
    let c = runner.add(bind(&mut rng, seed + 1)).expect("register");
    runner.node_mut(a).unwrap().bootstrap().expect("bootstrap");

    // Every probe and join request of `c` goes to a port nobody listens on.
    let nowhere = closed_port();
    runner.node_mut(c).unwrap().join(nowhere).expect("join");
    // `a` also keeps sending to it: a direct message, retransmitted until it fails.
    let ghost = NodeHandle::new(rng.id(), nowhere);
    runner
        .node_mut(a)
        .unwrap()
        .send_direct(ghost, 1, b"anyone?".to_vec())
        .expect("send");
    // And garbage arrives at both.
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for token in [a, c] {
        let to = runner.node(token).unwrap().local_addr();
        stranger.send_to(b"\xffgarbage", to).expect("send");
    }

    wait_for(&mut runner, c, "join failure", |e| *e == Event::JoinFailed);
    wait_for(&mut runner, a, "send failure", |e| {
        matches!(e, Event::SendFailed { .. })
    });
    for token in [a, c] {
        let node = runner.node(token).unwrap();
        println!("{token:?}: {:?}", node.io_counters());
        assert_eq!(node.node().counters().malformed, 1);
    }

    // Both nodes still work: `c` joins `a`'s ring and each finds the other as a root.
    let live = runner.node(a).unwrap().local_addr();
    runner.node_mut(c).unwrap().join(live).expect("join again");
    wait_for(&mut runner, c, "activation", |e| *e == Event::Active);
    for (from, to) in [(a, c), (c, a)] {
        let target = runner.node(to).unwrap();
        let (id, addr) = (target.id(), target.local_addr());
        let root = lookup(&mut runner, from, id);
        assert_eq!((root.id, root.addr), (id, addr));
    }
}

/// A connected UDP socket makes Linux report ICMP port unreachable as a socket error (an
/// unconnected one only does on some systems): the node reads the error, counts it and goes
/// on, and later serves a node that starts on the port that was closed.
#[test]
fn icmp_port_unreachable_is_counted_and_survived() {
    let seed = seed("icmp_port_unreachable_is_counted_and_survived", 11);
    let mut rng = Rng::new(seed);
    let nowhere = closed_port();

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_nonblocking(true).expect("non-blocking");
    socket.connect(nowhere).expect("connect");
    let addr = socket.local_addr().expect("address");
    let socket = mio::net::UdpSocket::from_std(socket);
    let node = MioNode::from_socket(socket, addr, quick_config(), rng.id(), seed).expect("node");

    let mut runner = Runner::new().expect("poll");
    let a = runner.add(node).expect("register");
    runner.node_mut(a).unwrap().bootstrap().expect("bootstrap");
    let ghost = NodeHandle::new(rng.id(), nowhere);
    runner
        .node_mut(a)
        .unwrap()
        .send_direct(ghost, 1, b"anyone?".to_vec())
        .expect("send");
    wait_for(&mut runner, a, "send failure", |e| {
        matches!(e, Event::SendFailed { .. })
    });
    let io = *runner.node(a).unwrap().io_counters();
    println!("after the failed send: {io:?}");
    assert!(io.sent >= 1, "{io:?}");
    if cfg!(target_os = "linux") {
        assert!(io.socket_errors >= 1, "no ICMP report seen: {io:?}");
    }
    assert_eq!(io.send_errors, 0, "{io:?}");

    // The node lives: a node on the port that was closed joins it and each finds the other.
    let b = runner
        .add(
            MioNode::bind(nowhere, quick_config(), rng.id(), seed + 1)
                .expect("bind the closed port"),
        )
        .expect("register");
    let bootstrap = runner.node(a).unwrap().local_addr();
    runner.node_mut(b).unwrap().join(bootstrap).expect("join");
    wait_for(&mut runner, b, "activation", |e| *e == Event::Active);
    for (from, to) in [(a, b), (b, a)] {
        let target = runner.node(to).unwrap();
        let (id, addr) = (target.id(), target.local_addr());
        let root = lookup(&mut runner, from, id);
        assert_eq!((root.id, root.addr), (id, addr));
    }
}
