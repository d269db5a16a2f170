//! The replicated store over real UDP on 127.0.0.1: values inserted at some nodes are found
//! from others, and live on the nodes closest to their keys.

use std::time::Duration;

use pastry_core::Id;
use pastry_core::store::{Store, StoreConfig, StoreEvent};
use pastry_tokio::PastryNode;

mod common;
use common::{SplitMix, ring};

const STORE: u16 = 5;

/// Waits (up to five seconds) for the store's next event.
async fn next_event(node: &PastryNode) -> StoreEvent {
    for _ in 0..500 {
        let e = node
            .with_app(STORE, |s: &mut Store<_>, _| s.poll_event())
            .await
            .expect("running");
        if let Some(e) = e {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no store event within five seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_inserted_anywhere_are_found_everywhere_and_live_on_the_closest_nodes() {
    let seed = 0x5707e;
    println!("seed {seed}");
    let mut rng = SplitMix(seed);
    let nodes = ring(12, &mut rng, |b| {
        let store = Store::new(StoreConfig::default()).expect("valid");
        b.application(STORE, Box::new(store))
    })
    .await;
    let mut keys = Vec::new();
    for i in 0..40u64 {
        let key = rng.id();
        let at = &nodes[(rng.next() % 12) as usize];
        let value = i.to_be_bytes().to_vec();
        at.with_app(STORE, move |s: &mut Store<_>, ctx| {
            s.insert(ctx, key, 1, value)
        })
        .await
        .expect("running")
        .expect("a small value");
        match next_event(at).await {
            StoreEvent::Inserted { key: k, .. } => assert_eq!(k, key, "insert {i}"),
            other => panic!("insert {i}: {other:?}"),
        }
        keys.push((key, i));
    }
    let ids: Vec<Id> = nodes.iter().map(|n| n.id()).collect();
    for &(key, i) in &keys {
        let from = &nodes[(rng.next() % 12) as usize];
        from.with_app(STORE, move |s: &mut Store<_>, ctx| s.get(ctx, key))
            .await
            .expect("running")
            .expect("routable");
        match next_event(from).await {
            StoreEvent::Found { key: k, value, .. } => {
                assert_eq!((k, value), (key, i.to_be_bytes().to_vec()), "get {i}");
            }
            other => panic!("get {i}: {other:?}"),
        }
        // The three nodes closest to the key hold it as a replica.
        let mut closest = ids.clone();
        closest.sort_by(|a, b| key.cmp_closeness(*a, *b));
        for n in nodes.iter().filter(|n| closest[..3].contains(&n.id())) {
            let mut held = None;
            // The pushes went out with the insert; allow a loaded machine some time.
            for _ in 0..500 {
                held = n
                    .with_app(STORE, move |s: &mut Store<_>, _| {
                        s.replica(key).map(|(v, _)| v)
                    })
                    .await
                    .expect("running");
                if held.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(held, Some(1), "key {i} at {:?}", n.id());
        }
    }
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}
