//! The replicated store over real UDP on 127.0.0.1: values inserted at some nodes are found
//! from others, and live on the nodes closest to their keys.

use std::time::Duration;

use pastry_core::store::{Store, StoreConfig, StoreEvent};
use pastry_core::{Config, Id};
use pastry_tokio::{Builder, PastryNode};

const STORE: u16 = 5;

/// A small deterministic generator, so that a failing run can be replayed from its seed.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn id(&mut self) -> Id {
        Id::new(u128::from(self.next()) << 64 | u128::from(self.next()))
    }
}

async fn ring(n: usize, rng: &mut SplitMix) -> Vec<PastryNode> {
    let mut nodes: Vec<PastryNode> = Vec::new();
    for i in 0..n {
        let store = Store::new(StoreConfig::default()).expect("valid");
        let node = Builder::new(Config::default())
            .id(rng.id())
            .seed(rng.next())
            .application(STORE, Box::new(store))
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        if i == 0 {
            node.bootstrap().await.expect("bootstrap");
        } else {
            let via = nodes[(rng.next() % i as u64) as usize].local_addr();
            node.join(via).await.expect("join");
        }
        nodes.push(node);
    }
    nodes
}

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
    let nodes = ring(12, &mut rng).await;
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
