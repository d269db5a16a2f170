//! Real UDP on 127.0.0.1: a ring of 32 nodes joins, routes lookups, and survives a leave.

use std::time::Duration;

use pastry_core::{Config, Id};
use pastry_tokio::Builder;

mod common;
use common::{SplitMix, ring};

fn closest(ids: &[Id], key: Id) -> Id {
    *ids.iter()
        .min_by(|a, b| key.cmp_closeness(**a, **b))
        .expect("nodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_nodes_route_every_lookup_to_the_closest_node() {
    let seed = 0x7012;
    println!("seed {seed}");
    let mut rng = SplitMix(seed);
    let nodes = ring(32, &mut rng, |b| b).await;
    let ids: Vec<Id> = nodes.iter().map(|n| n.id()).collect();
    for i in 0..1000 {
        let key = rng.id();
        let from = &nodes[(rng.next() % 32) as usize];
        let found = from.lookup(key).await.expect("lookup");
        let want = closest(&ids, key);
        assert_eq!(found.root.id, want, "lookup {i} for {key:?}");
        let owner = nodes.iter().find(|n| n.id() == want).unwrap();
        assert_eq!(found.root.addr, owner.local_addr());
        assert!(found.hops <= 3, "{} hops", found.hops);
    }
    for n in &nodes {
        assert!(n.is_active().await.unwrap());
        let leaf = n.leaf_set().await.unwrap();
        assert_eq!(leaf.len(), 16, "a ring of 32 fills each leaf set");
    }
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_graceful_leave_its_keys_move_to_the_next_closest_node() {
    let seed = 0x1eaf;
    println!("seed {seed}");
    let mut rng = SplitMix(seed);
    let mut nodes = ring(12, &mut rng, |b| b).await;
    let leaver = nodes.remove(5);
    let gone = leaver.id();
    leaver.shutdown().await.unwrap();
    assert!(
        leaver.lookup(Id::new(1)).await.is_err(),
        "a node that left is closed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<Id> = nodes.iter().map(|n| n.id()).collect();
    for n in &nodes {
        let found = n.lookup(gone).await.expect("lookup");
        assert_eq!(found.root.id, closest(&ids, gone));
    }
    let mut events = nodes[0].events().expect("events, once");
    assert!(nodes[0].events().is_none());
    // The event stream holds what happened so far (joins, leaf-set changes, lookups).
    let first = tokio::time::timeout(Duration::from_secs(1), events.next())
        .await
        .expect("an event");
    assert!(first.is_some());
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_dead_address_does_not_kill_a_node() {
    // Nobody listens on this port: sends to it come back as ICMP errors.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let mut cfg = Config::default();
    cfg.join_timeout = Duration::from_millis(200);
    cfg.join_attempts = 2;
    let node = Builder::new(cfg).bind("127.0.0.1:0").await.unwrap();
    assert!(node.join(closed).await.is_err(), "nobody answers there");
    // Still alive: it can start a ring of its own and answer lookups.
    node.bootstrap().await.unwrap();
    let found = node.lookup(Id::new(5)).await.unwrap();
    assert_eq!(found.root.id, node.id());
    let (send_errors, recv_errors) = node.socket_errors();
    println!("socket errors survived: {send_errors} sends, {recv_errors} receives");
    node.shutdown().await.unwrap();
}
