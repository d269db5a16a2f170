//! The replicated store (`pastry_core::store`) on whole rings: values live on the k live
//! nodes closest to their keys and stay there through joins and failures, every node finds
//! them, gets are cached along routes, and strangers cannot plant values.

use std::time::Duration;

use pastry_core::store::{Store, StoreConfig, StoreEvent, StoreMsg};
use pastry_core::wire::{Datagram, Message};
use pastry_core::{Context, Id};
use pastry_sim::{Addr, NetConfig, Network, NodeState};

const STORE: u16 = 11;
const K: usize = 3;

fn spawn(net: &mut Network) -> Addr {
    let id = net.random_id();
    let addr = net.spawn(id);
    let store = Store::<Addr>::new(StoreConfig::default()).unwrap();
    net.node_mut(addr)
        .unwrap()
        .register(STORE, Box::new(store))
        .unwrap();
    addr
}

fn ring(seed: u64, n: usize) -> Network {
    let mut net = Network::new(NetConfig::with_seed(seed));
    for _ in 0..n {
        let a = spawn(&mut net);
        assert!(
            net.start(a, Duration::from_secs(120)),
            "seed {seed}: node {a} joins"
        );
    }
    net.run_for(Duration::from_secs(30));
    net
}

fn with_store<R>(
    net: &mut Network,
    a: Addr,
    f: impl FnOnce(&mut Store<Addr>, &mut Context<'_, Addr>) -> R,
) -> R {
    net.act(a, |node, now| node.with_app(now, STORE, f).unwrap())
        .expect("a running node")
}

fn events(net: &mut Network, a: Addr) -> Vec<StoreEvent> {
    with_store(net, a, |s, _| {
        std::iter::from_fn(|| s.poll_event()).collect()
    })
}

fn value_of(key: Id, version: u64) -> Vec<u8> {
    let mut v = key.to_bytes().to_vec();
    v.extend_from_slice(&version.to_be_bytes());
    v
}

/// The k active nodes closest to `key`, by the oracle.
fn closest(net: &Network, key: Id, k: usize) -> Vec<Addr> {
    let mut all = net.active_addrs();
    all.sort_by(|a, b| key.cmp_closeness(net.id(*a), net.id(*b)));
    all.truncate(k);
    all.sort_unstable();
    all
}

/// The running nodes that hold `key` as a replica, with its version.
fn holders(net: &Network, key: Id) -> Vec<(Addr, u64)> {
    net.addrs()
        .filter(|a| matches!(net.state(*a), NodeState::Active | NodeState::Joining))
        .filter_map(|a| {
            let s = net.node(a)?.app::<Store<Addr>>(STORE)?;
            s.replica(key).map(|(v, _)| (a, v))
        })
        .collect()
}

/// Inserts `n` random keys (version 1) from random nodes and checks that each was stored.
fn insert_keys(net: &mut Network, seed: u64, n: usize) -> Vec<Id> {
    let mut keys = Vec::new();
    let mut from = Vec::new();
    for _ in 0..n {
        let key = net.random_id();
        let a = net.random_active().unwrap();
        with_store(net, a, |s, ctx| s.insert(ctx, key, 1, value_of(key, 1))).unwrap();
        keys.push(key);
        from.push(a);
    }
    net.run_for(Duration::from_secs(20));
    let mut inserted = 0;
    for a in from
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
    {
        for e in events(net, a) {
            match e {
                StoreEvent::Inserted {
                    key, version: 1, ..
                } if keys.contains(&key) => {
                    inserted += 1;
                }
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
    }
    assert_eq!(inserted, n, "seed {seed}: every insert is confirmed");
    keys
}

/// Gets every key from a random node; returns how many were found with the right value
/// (and fails on a wrong value).
fn found(net: &mut Network, seed: u64, keys: &[Id]) -> usize {
    let mut askers = std::collections::BTreeSet::new();
    for &key in keys {
        let a = net.random_active().unwrap();
        with_store(net, a, |s, ctx| s.get(ctx, key)).unwrap();
        askers.insert(a);
    }
    net.run_for(Duration::from_secs(30));
    let mut found = 0;
    for a in askers {
        for e in events(net, a) {
            match e {
                StoreEvent::Found {
                    key,
                    version,
                    value,
                    ..
                } => {
                    assert_eq!(value, value_of(key, version), "seed {seed}: key {key}");
                    found += 1;
                }
                StoreEvent::NotFound { .. } | StoreEvent::TimedOut { .. } => {}
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
    }
    found
}

#[test]
fn values_live_on_the_k_closest_nodes_and_every_node_finds_them() {
    for seed in [71, 171, 271] {
        let mut net = ring(seed, 100);
        let keys = insert_keys(&mut net, seed, 200);
        for &key in &keys {
            let held: Vec<Addr> = holders(&net, key).into_iter().map(|(a, _)| a).collect();
            assert_eq!(held, closest(&net, key, K), "seed {seed}: key {key}");
        }
        assert_eq!(found(&mut net, seed, &keys), keys.len(), "seed {seed}");
    }
}

#[test]
fn values_follow_their_replica_sets_through_churn() {
    for seed in [72, 172, 272] {
        let mut net = ring(seed, 80);
        let keys = insert_keys(&mut net, seed, 150);
        // Forty rounds: a node fails silently, a new one joins, a minute passes.
        for _ in 0..40 {
            let victim = net.random_active().unwrap();
            net.kill(victim);
            let a = spawn(&mut net);
            assert!(
                net.start(a, Duration::from_secs(120)),
                "seed {seed}: node {a} joins"
            );
            net.run_for(Duration::from_secs(60));
        }
        net.run_for(Duration::from_secs(120));
        // Every key's k closest live nodes hold it. A node that took a value while its view of
        // the ring was behind may hold it too, until its next refresh.
        let mut missing = Vec::new();
        let mut extra = 0;
        for &key in &keys {
            let held: Vec<Addr> = holders(&net, key).into_iter().map(|(a, _)| a).collect();
            let want = closest(&net, key, K);
            if !want.iter().all(|a| held.contains(a)) {
                missing.push((key, held.clone(), want.clone()));
            }
            extra += held.len() - held.iter().filter(|a| want.contains(a)).count();
        }
        println!(
            "seed {seed}: {extra} extra copies of {} keys after churn",
            keys.len()
        );
        assert!(missing.is_empty(), "seed {seed}: {missing:?}");
        assert_eq!(found(&mut net, seed, &keys), keys.len(), "seed {seed}");
        // Two refresh periods later, without churn, exactly the k closest hold each key: a node
        // outside a key's replica set gives the value up once the set confirms it holds it.
        net.run_for(StoreConfig::default().refresh_period * 2 + Duration::from_secs(60));
        for &key in &keys {
            let held: Vec<Addr> = holders(&net, key).into_iter().map(|(a, _)| a).collect();
            assert_eq!(held, closest(&net, key, K), "seed {seed}: key {key}");
        }
    }
}

#[test]
fn after_a_mass_failure_only_values_whose_every_replica_died_are_gone() {
    for seed in [73, 173, 273] {
        let mut net = ring(seed, 100);
        let keys = insert_keys(&mut net, seed, 300);
        let before: Vec<Vec<Addr>> = keys.iter().map(|k| closest(&net, *k, K)).collect();
        let mut dead = std::collections::BTreeSet::new();
        while dead.len() < 30 {
            let a = net.random_active().unwrap();
            net.kill(a);
            dead.insert(a);
        }
        // Detection (heartbeats, the failure timeout, probes), repair and pushes.
        net.run_for(Duration::from_secs(300));
        let doomed: Vec<bool> = before
            .iter()
            .map(|r| r.iter().all(|a| dead.contains(a)))
            .collect();
        let n_doomed = doomed.iter().filter(|d| **d).count();
        println!(
            "seed {seed}: {n_doomed} of {} keys lost every replica",
            keys.len()
        );
        let survivors: Vec<Id> = keys
            .iter()
            .zip(&doomed)
            .filter(|(_, d)| !**d)
            .map(|(k, _)| *k)
            .collect();
        // Each surviving key is on its k closest live nodes (and maybe on a node that took it
        // while the failures were being found, until its next refresh).
        for &key in &survivors {
            let held: Vec<Addr> = holders(&net, key).into_iter().map(|(a, _)| a).collect();
            let want = closest(&net, key, K);
            assert!(
                want.iter().all(|a| held.contains(a)),
                "seed {seed}: key {key} held by {held:?}, not by all of {want:?}"
            );
        }
        assert_eq!(
            found(&mut net, seed, &survivors),
            survivors.len(),
            "seed {seed}"
        );
        for (&key, _) in keys.iter().zip(&doomed).filter(|(_, d)| **d) {
            assert!(
                holders(&net, key).is_empty(),
                "seed {seed}: key {key} came back"
            );
        }
    }
}

#[test]
fn popular_keys_are_answered_from_copies_along_routes() {
    for seed in [74, 174, 274] {
        let mut net = ring(seed, 120);
        let keys = insert_keys(&mut net, seed, 1);
        let key = keys[0];
        let replicas = closest(&net, key, K);
        // Three hundred gets of one key from random nodes, one at a time.
        let mut cached = 0;
        for i in 0..300 {
            let a = net.random_active().unwrap();
            with_store(&mut net, a, |s, ctx| s.get(ctx, key)).unwrap();
            net.run_for(Duration::from_secs(2));
            let ev = events(&mut net, a);
            match ev.as_slice() {
                [
                    StoreEvent::Found {
                        value, cached: c, ..
                    },
                ] => {
                    assert_eq!(value, &value_of(key, 1), "seed {seed}: get {i}");
                    cached += usize::from(*c);
                }
                other => panic!("seed {seed}: get {i}: {other:?}"),
            }
        }
        let replica_hits: u64 = replicas
            .iter()
            .map(|a| {
                net.node(*a)
                    .unwrap()
                    .app::<Store<Addr>>(STORE)
                    .unwrap()
                    .stats()
                    .replica_hits
            })
            .sum();
        println!(
            "seed {seed}: 300 gets, {cached} from cached copies, {replica_hits} by the replicas"
        );
        assert!(
            cached >= 100,
            "seed {seed}: only {cached} of 300 gets met a cached copy"
        );
        assert!(
            replica_hits <= 200,
            "seed {seed}: the replicas answered {replica_hits}"
        );

        // A newer version: fresh gets skip the stale copies.
        let a = net.random_active().unwrap();
        with_store(&mut net, a, |s, ctx| {
            s.insert(ctx, key, 2, value_of(key, 2))
        })
        .unwrap();
        net.run_for(Duration::from_secs(5));
        assert!(
            matches!(
                events(&mut net, a).as_slice(),
                [StoreEvent::Inserted { version: 2, .. }]
            ),
            "seed {seed}"
        );
        for _ in 0..20 {
            let b = net.random_active().unwrap();
            with_store(&mut net, b, |s, ctx| s.get_fresh(ctx, key)).unwrap();
            net.run_for(Duration::from_secs(2));
            match events(&mut net, b).as_slice() {
                [
                    StoreEvent::Found {
                        version: 2,
                        cached: false,
                        ..
                    },
                ] => {}
                other => panic!("seed {seed}: {other:?}"),
            }
        }
    }
}

#[test]
fn strangers_cannot_plant_replicas_or_copies() {
    for seed in [75, 175, 275] {
        let mut net = ring(seed, 40);
        let target = net.active_addrs()[3];
        let key = net.id(target);
        let member = net
            .node(target)
            .unwrap()
            .leaf_set()
            .members()
            .next()
            .unwrap()
            .handle
            .clone();
        let forged: Addr = 1_000_000;
        let plant = |payload: Vec<u8>, claimed: Id, seq: u32| {
            Datagram::<Addr>::new(
                claimed,
                Message::Direct {
                    seq,
                    msg_seq: seq,
                    app: STORE,
                    payload,
                },
            )
            .to_bytes()
        };
        let replica = StoreMsg::<Addr>::Replica {
            key,
            version: 9,
            value: b"planted".to_vec(),
        }
        .encode();
        let copy = StoreMsg::<Addr>::CacheCopy {
            key,
            version: 9,
            value: b"planted".to_vec(),
        }
        .encode();
        // A member's id from another address, a stranger's id, an unasked-for copy, garbage.
        net.inject(target, forged, plant(replica.clone(), member.id, 1));
        net.inject(target, forged + 1, plant(replica, Id::new(12345), 2));
        net.inject(target, forged + 2, plant(copy, Id::new(54321), 3));
        net.inject(target, forged + 3, plant(vec![1, 200, 3], Id::new(777), 4));
        net.run_for(Duration::from_secs(10));
        let s = net.node(target).unwrap().app::<Store<Addr>>(STORE).unwrap();
        assert_eq!(s.replica(key), None, "seed {seed}");
        assert_eq!(s.cached_len(), 0, "seed {seed}");
        assert_eq!(
            (s.stats().rejected, s.stats().malformed),
            (3, 1),
            "seed {seed}"
        );
    }
}
