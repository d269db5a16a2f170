//! Multicast over real UDP on 127.0.0.1: members of a group get every message published to
//! it once, from any node, and nodes outside the group get none.

use std::collections::BTreeSet;
use std::time::Duration;

use pastry_core::Id;
use pastry_core::multicast::{Multicast, MulticastConfig, MulticastEvent};
use pastry_tokio::PastryNode;

mod common;
use common::{SplitMix, ring};

const MC: u16 = 6;

/// The multicast events a node has now.
async fn events(node: &PastryNode) -> Vec<MulticastEvent> {
    node.with_app(MC, |m: &mut Multicast<_>, _| {
        std::iter::from_fn(|| m.poll_event()).collect()
    })
    .await
    .expect("running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_get_every_message_once_and_others_none() {
    let seed = 0x3c4a57;
    println!("seed {seed}");
    let mut rng = SplitMix(seed);
    let n = 12;
    let nodes = ring(n, &mut rng, |b| {
        let m = Multicast::new(MulticastConfig::default()).expect("valid");
        b.application(MC, Box::new(m))
    })
    .await;
    // Three groups of five members.
    let mut groups: Vec<(Id, BTreeSet<usize>)> = Vec::new();
    for _ in 0..3 {
        let g = rng.id();
        let mut members = BTreeSet::new();
        while members.len() < 5 {
            members.insert((rng.next() % n as u64) as usize);
        }
        for &i in &members {
            nodes[i]
                .with_app(MC, move |m: &mut Multicast<_>, ctx| m.subscribe(ctx, g))
                .await
                .expect("running")
                .expect("room for a group");
        }
        groups.push((g, members));
    }
    // Every member is attached, each within five seconds.
    for (g, members) in &groups {
        for &i in members {
            let mut attached = false;
            for _ in 0..500 {
                let attached_now = nodes[i]
                    .with_app(MC, {
                        let g = *g;
                        move |m: &mut Multicast<_>, _| m.is_root(g) || m.parent(g).is_some()
                    })
                    .await
                    .expect("running");
                if attached_now {
                    attached = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(attached, "node {i} in {g}");
        }
    }
    for node in &nodes {
        let _ = events(node).await;
    }
    // Four messages to each group, each from a random node.
    let mut sent: Vec<(Id, Id, u32)> = Vec::new();
    for (g, _) in &groups {
        for k in 0..4u8 {
            let g = *g;
            let from = &nodes[(rng.next() % n as u64) as usize];
            let id = from
                .with_app(MC, move |m: &mut Multicast<_>, ctx| {
                    m.publish(ctx, g, vec![k; 64])
                })
                .await
                .expect("running")
                .expect("a small payload");
            sent.push((g, id.origin, id.seq));
        }
    }
    // Collect until every member has its group's four messages, for up to five seconds.
    let mut got: Vec<Vec<(Id, Id, u32)>> = vec![Vec::new(); n];
    for _ in 0..50 {
        for (i, node) in nodes.iter().enumerate() {
            for e in events(node).await {
                if let MulticastEvent::Received {
                    group,
                    publisher,
                    seq,
                    ..
                } = e
                {
                    got[i].push((group, publisher, seq));
                }
            }
        }
        let done = groups.iter().all(|(g, members)| {
            members
                .iter()
                .all(|&i| got[i].iter().filter(|(x, _, _)| x == g).count() >= 4)
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, mut have) in got.into_iter().enumerate() {
        let mut want: Vec<(Id, Id, u32)> = sent
            .iter()
            .filter(|(g, _, _)| groups.iter().any(|(x, m)| x == g && m.contains(&i)))
            .copied()
            .collect();
        want.sort_unstable();
        have.sort_unstable();
        assert_eq!(have, want, "node {i}");
    }
    for node in &nodes {
        node.with_app(MC, |m: &mut Multicast<_>, ctx| m.shutdown(ctx))
            .await
            .expect("running");
        node.shutdown().await.unwrap();
    }
}
