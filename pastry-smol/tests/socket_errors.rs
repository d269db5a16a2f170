//! Socket errors never kill a node: failed sends (a broadcast address without permission, an
//! address of the wrong family), joins through closed ports and garbage datagrams are counted,
//! and the node then joins and serves lookups as usual. Runs under async-std.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{Rng, check_lookups, ring, within};
use pastry_smol::{Driver, JoinError, NodeBuilder};

#[async_std::test]
async fn socket_errors_do_not_kill_a_node() {
    let seed = common::seed(0x5eed_0005);
    let mut rng = Rng::new(seed);
    let spawn = |d: Driver| {
        async_std::task::spawn(d);
    };
    let ip = common::loopback();
    // Joins that fail fast: two attempts of 200 ms.
    let mut config = common::config();
    config.join_timeout = Duration::from_millis(200);
    config.join_attempts = 2;
    let (node, driver) = NodeBuilder::new(config)
        .id(rng.id())
        .seed(rng.u64())
        .bind(SocketAddr::new(ip, 0))
        .unwrap();
    spawn(driver);

    // 1. Sends the kernel refuses at once: a broadcast address (EACCES without
    //    SO_BROADCAST) and an IPv6 address on an IPv4 socket.
    for bad in ["255.255.255.255:9", "[::1]:9"] {
        let bad: SocketAddr = bad.parse().unwrap();
        let before = node.io_counters().send_errors;
        let r = within(Duration::from_secs(5), node.join(bad))
            .await
            .unwrap();
        assert_eq!(r, Err(JoinError::Failed), "join via {bad}");
        let after = node.io_counters().send_errors;
        println!("join via {bad}: {r:?}, {} send errors", after - before);
        assert!(after > before, "the send to {bad} did not fail");
    }

    // 2. A closed port: ICMP port unreachable (reported as connection refused or reset
    //    where the platform reports it on unconnected sockets; Linux does not).
    let closed = {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        s.local_addr().unwrap()
    };
    let r = within(Duration::from_secs(5), node.join(closed))
        .await
        .unwrap();
    assert_eq!(r, Err(JoinError::Failed));

    // 3. Garbage datagrams: malformed, counted by the core, nothing else.
    let junk = UdpSocket::bind((ip, 0)).unwrap();
    for len in [0, 1, 7, 100, 2000] {
        junk.send_to(&vec![0xa5; len], node.local_addr()).unwrap();
    }

    // 4. The node is alive: it joins a ring and answers lookups like any other.
    let mut nodes = ring(ip, 8, &mut rng, &spawn).await;
    within(Duration::from_secs(5), node.join(nodes[3].local_addr()))
        .await
        .expect("join within 5 s")
        .expect("join after the errors");
    nodes.push(node.clone());
    let members: Vec<_> = nodes.iter().map(|n| n.local().clone()).collect();
    check_lookups(&nodes, &members, 100, &mut rng).await;
    let (root, _) = nodes[0].lookup(node.id()).await.unwrap();
    assert_eq!(root, node.local().clone());

    let io = node.io_counters();
    let core = node.counters().await.unwrap();
    println!("adapter: {io:?}");
    println!(
        "core: {} malformed, {} datagrams in",
        core.malformed, core.datagrams_in
    );
    assert!(io.send_errors >= 2);
    assert!(core.malformed >= 5);
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// Linux reports ICMP errors only on connected UDP sockets: a node built on a socket
/// connected to a closed port sees "connection refused" from `recv_from` (or `send_to`),
/// counts it, and carries on.
#[test]
fn icmp_port_unreachable_is_counted_and_ignored() {
    let seed = common::seed(0x5eed_0006);
    let mut rng = Rng::new(seed);
    smol::block_on(async {
        let ip = common::loopback();
        let closed = {
            let s = UdpSocket::bind((ip, 0)).unwrap();
            s.local_addr().unwrap()
        };
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket.connect(closed).unwrap();
        let mut config = common::config();
        config.join_timeout = Duration::from_millis(200);
        config.join_attempts = 2;
        let (node, driver) = NodeBuilder::new(config)
            .id(rng.id())
            .seed(rng.u64())
            .with_socket(socket)
            .unwrap();
        smol::spawn(driver).detach();
        let r = within(Duration::from_secs(5), node.join(closed))
            .await
            .unwrap();
        assert_eq!(r, Err(JoinError::Failed));
        let io = node.io_counters();
        println!("adapter: {io:?}");
        assert!(io.unreachable > 0, "no ICMP error seen: {io:?}");
        assert_eq!(io.unreachable, io.recv_errors + io.send_errors);

        // Still alive: it starts a ring of its own and answers for every key.
        node.bootstrap().await.unwrap();
        let key = rng.id();
        let (root, hops) = node.lookup(key).await.unwrap();
        assert_eq!((root, hops), (node.local().clone(), 0));
        node.shutdown().await.unwrap();
    });
}
