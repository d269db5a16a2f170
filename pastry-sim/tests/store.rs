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

/// An empty network whose every node gets a store with `replicas` replicas.
fn network_with_stores(seed: u64, replicas: u8) -> Network {
    let mut net = Network::new(NetConfig::with_seed(seed));
    net.on_spawn(Box::new(move |_, node| {
        let mut cfg = StoreConfig::default();
        cfg.replicas = replicas;
        let store = Store::<Addr>::new(cfg).unwrap();
        node.register(STORE, Box::new(store)).unwrap();
    }));
    net
}

/// The store of a running node.
fn store_of(net: &Network, a: Addr) -> &Store<Addr> {
    net.node(a)
        .and_then(|n| n.app::<Store<Addr>>(STORE))
        .expect("a running node with a store")
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

/// A leaf-set member of the running node at `a`.
fn first_member(net: &Network, a: Addr) -> pastry_core::NodeHandle<Addr> {
    let node = net.node(a).expect("a running node");
    let member = node.leaf_set().members().next().expect("a leaf-set member");
    member.handle.clone()
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

/// Checks that exactly the `k` closest live nodes hold each key.
fn assert_on_closest(net: &Network, seed: u64, keys: &[Id], k: usize) {
    for &key in keys {
        let held: Vec<Addr> = holders(net, key).into_iter().map(|(a, _)| a).collect();
        assert_eq!(held, closest(net, key, k), "seed {seed}: key {key}");
    }
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
        assert_on_closest(&net, seed, &keys, K);
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
        let routed: u64 = net
            .active_addrs()
            .iter()
            .map(|a| store_of(&net, *a).stats().routed_handoffs)
            .sum();
        println!(
            "seed {seed}: {extra} extra copies of {} keys after churn, {routed} routed hand-offs",
            keys.len()
        );
        assert!(missing.is_empty(), "seed {seed}: {missing:?}");
        assert_eq!(found(&mut net, seed, &keys), keys.len(), "seed {seed}");
        // Two refresh periods later, without churn, exactly the k closest hold each key: a node
        // outside a key's replica set gives the value up once the set confirms it holds it.
        net.run_for(StoreConfig::default().refresh_period * 2 + Duration::from_secs(60));
        assert_on_closest(&net, seed, &keys, K);
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
            .map(|a| store_of(&net, *a).stats().replica_hits)
            .sum();
        println!(
            "seed {seed}: 300 gets, {cached} from cached copies, {replica_hits} by the replicas"
        );
        // Without caching the replicas would answer all 300 (each get reaches one of them).
        assert!(
            cached >= 75,
            "seed {seed}: only {cached} of 300 gets met a cached copy"
        );
        assert!(
            replica_hits <= 225,
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
        let member = first_member(&net, target);
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
        let s = store_of(&net, target);
        assert_eq!(s.replica(key), None, "seed {seed}");
        assert_eq!(s.cached_len(), 0, "seed {seed}");
        assert_eq!(
            (s.stats().rejected, s.stats().malformed),
            (3, 1),
            "seed {seed}"
        );
    }
}

/// A direct message of the store, as the datagram a node at some address claiming `claimed`
/// would send.
fn direct(claimed: Id, seq: u32, msg: &StoreMsg<Addr>) -> Vec<u8> {
    Datagram::<Addr>::new(
        claimed,
        Message::Direct {
            seq,
            msg_seq: seq,
            app: STORE,
            payload: msg.encode(),
        },
    )
    .to_bytes()
}

#[test]
fn forged_answers_confirmations_and_asks_change_nothing() {
    let seed = 76;
    let mut net = ring(seed, 40);
    let keys = insert_keys(&mut net, seed, 1);
    let key = keys[0];
    let holder = closest(&net, key, 1)[0];
    let asker = loop {
        let a = net.random_active().unwrap();
        if !closest(&net, key, K).contains(&a) {
            break a;
        }
    };
    let forged: Addr = 2_000_000;
    // A get in flight, and forged answers with every number a counter would have used.
    with_store(&mut net, asker, |s, ctx| s.get(ctx, key)).unwrap();
    for request in 0..64 {
        let fake = StoreMsg::<Addr>::Found {
            request,
            key,
            version: u64::MAX,
            cached: false,
            value: b"evil".to_vec(),
        };
        net.inject(asker, forged, direct(Id::new(99), 100 + request, &fake));
        let missing = StoreMsg::<Addr>::Missing { request, key };
        net.inject(asker, forged, direct(Id::new(98), 200 + request, &missing));
    }
    net.run_for(Duration::from_secs(10));
    match events(&mut net, asker).as_slice() {
        [
            StoreEvent::Found {
                value, version: 1, ..
            },
        ] => {
            assert_eq!(value, &value_of(key, 1), "seed {seed}");
        }
        other => panic!("seed {seed}: {other:?}"),
    }

    // A forged confirmation, a forged fallback request and, from a real member, an ask that
    // names the key eighty times.
    let member = first_member(&net, holder);
    let before = *store_of(&net, holder).stats();
    let held = StoreMsg::<Addr>::Held { keys: vec![key] };
    net.inject(holder, forged, direct(member.id, 300, &held));
    let fallback = StoreMsg::<Addr>::GetFallback {
        request: 1,
        key,
        cached_ok: true,
        left: 2,
        origin: pastry_core::NodeHandle::new(Id::new(7), forged + 1),
    };
    net.inject(holder, forged, direct(member.id, 301, &fallback));
    let want = StoreMsg::<Addr>::Want {
        keys: vec![key; 80],
    };
    net.inject(holder, member.addr, direct(member.id, 302, &want));
    net.run_for(Duration::from_secs(10));
    let after = store_of(&net, holder).stats();
    assert_eq!(
        after.rejected - before.rejected,
        2,
        "seed {seed}: Held and GetFallback"
    );
    assert_eq!(
        after.pushed - before.pushed,
        1,
        "seed {seed}: one push for the ask"
    );
    assert_eq!(
        net.sent_outside(forged + 1),
        (0, 0),
        "seed {seed}: nothing to the named origin"
    );
    assert!(
        holders(&net, key).iter().any(|(a, _)| *a == holder),
        "seed {seed}"
    );
}

#[test]
fn values_too_large_to_be_answered_are_refused() {
    let seed = 77;
    let mut net = ring(seed, 30);
    let a = net.random_active().unwrap();
    let (max, key) = with_store(&mut net, a, |_, ctx| {
        (Store::<Addr>::max_value(ctx), Id::new(5))
    });
    // The largest value goes in and comes back.
    with_store(&mut net, a, |s, ctx| s.insert(ctx, key, 1, vec![7; max])).unwrap();
    net.run_for(Duration::from_secs(5));
    assert!(
        matches!(
            events(&mut net, a).as_slice(),
            [StoreEvent::Inserted { .. }]
        ),
        "seed {seed}"
    );
    let b = loop {
        let b = net.random_active().unwrap();
        if !closest(&net, key, K).contains(&b) {
            break b;
        }
    };
    with_store(&mut net, b, |s, ctx| s.get_fresh(ctx, key)).unwrap();
    net.run_for(Duration::from_secs(5));
    match events(&mut net, b).as_slice() {
        [StoreEvent::Found { value, .. }] => assert_eq!(value.len(), max, "seed {seed}"),
        other => panic!("seed {seed}: {other:?}"),
    }
    // One byte more, routed in by hand (an insert would refuse it first): not stored.
    assert!(matches!(
        with_store(&mut net, a, |s, ctx| s.insert(
            ctx,
            Id::new(6),
            1,
            vec![7; max + 1]
        )),
        Err(pastry_core::store::StoreError::ValueTooLarge { .. })
    ));
    let root = closest(&net, Id::new(6), 1)[0];
    let big = StoreMsg::<Addr>::Insert {
        request: 1,
        key: Id::new(6),
        version: 1,
        value: vec![7; max + 1],
    };
    let route = pastry_core::wire::RouteMsg {
        seq: 1,
        origin: pastry_core::NodeHandle::new(net.id(a), a),
        msg_seq: 77,
        key: Id::new(6),
        hops: 1,
        body: pastry_core::wire::RouteBody::App {
            app: STORE,
            payload: big.encode(),
        },
    };
    net.inject(
        root,
        a,
        Datagram::<Addr>::new(net.id(a), Message::Route(route)).to_bytes(),
    );
    net.run_for(Duration::from_secs(5));
    assert!(holders(&net, Id::new(6)).is_empty(), "seed {seed}");
}

#[test]
fn more_replicas_than_half_the_leaf_set_act_as_half() {
    let seed = 78;
    let mut net = network_with_stores(seed, 12);
    net.grow(60, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let half = net.node_config().leaf_set_size / 2;
    let keys = insert_keys(&mut net, seed, 20);
    // New nodes push others out of replica sets; two refresh periods let them hand off.
    for _ in 0..10 {
        let id = net.random_id();
        let a = net.spawn(id);
        assert!(net.start(a, Duration::from_secs(120)), "seed {seed}");
    }
    net.run_for(StoreConfig::default().refresh_period * 2 + Duration::from_secs(60));
    assert_on_closest(&net, seed, &keys, half);
}

#[test]
fn a_holder_that_new_nodes_cut_off_from_a_key_routes_the_value_back() {
    let seed = 79;
    let mut net = ring(seed, 30);
    // A key between a node and its clockwise neighbour: the node is among its replicas.
    let x = net.random_active().unwrap();
    let xid = net.id(x).as_u128();
    let next = net
        .active_addrs()
        .into_iter()
        .map(|a| net.id(a).as_u128().wrapping_sub(xid))
        .filter(|d| *d > 0)
        .min()
        .unwrap();
    let key = Id::new(xid.wrapping_add(next / 2));
    with_store(&mut net, x, |s, ctx| {
        s.insert(ctx, key, 1, value_of(key, 1))
    })
    .unwrap();
    net.run_for(Duration::from_secs(10));
    assert!(
        holders(&net, key).iter().any(|(a, _)| *a == x),
        "seed {seed}"
    );
    // Twenty nodes join between the node and the key: the key leaves its leaf set's range.
    for i in 1..=20u128 {
        let id = Id::new(xid.wrapping_add(next / 2 / 21 * i));
        let b = net.spawn(id);
        let store = Store::<Addr>::new(StoreConfig::default()).unwrap();
        net.node_mut(b)
            .unwrap()
            .register(STORE, Box::new(store))
            .unwrap();
        assert!(net.start(b, Duration::from_secs(120)), "seed {seed}");
    }
    assert!(
        !net.node(x).unwrap().leaf_set().in_range(key),
        "seed {seed}"
    );
    net.run_for(StoreConfig::default().refresh_period * 2 + Duration::from_secs(60));
    let s = store_of(&net, x);
    assert!(s.replica(key).is_none(), "seed {seed}: still held");
    assert!(s.stats().routed_handoffs >= 1, "seed {seed}");
    assert_on_closest(&net, seed, &[key], K);
}

#[test]
fn with_one_replica_a_node_that_joins_at_the_key_gets_the_value() {
    for seed in [80, 180, 280] {
        let mut net = network_with_stores(seed, 1);
        net.grow(40, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        net.run_for(Duration::from_secs(30));
        let key = net.random_id();
        let a = net.random_active().unwrap();
        with_store(&mut net, a, |s, ctx| {
            s.insert(ctx, key, 1, value_of(key, 1))
        })
        .unwrap();
        net.run_for(Duration::from_secs(10));
        let old = closest(&net, key, 1)[0];
        // A node joins right at the key: it is the value's only replica now, and the node it
        // pushed out must hand the value over at once (its next refresh is minutes away).
        let n = net.spawn(key);
        assert!(net.start(n, Duration::from_secs(120)), "seed {seed}");
        net.run_for(Duration::from_secs(30));
        assert_ne!(old, n, "seed {seed}");
        assert_eq!(
            holders(&net, key)
                .iter()
                .find(|(h, _)| *h == n)
                .map(|(_, v)| *v),
            Some(1),
            "seed {seed}"
        );
        let b = loop {
            let b = net.random_active().unwrap();
            if b != n {
                break b;
            }
        };
        with_store(&mut net, b, |s, ctx| s.get_fresh(ctx, key)).unwrap();
        net.run_for(Duration::from_secs(5));
        assert!(
            matches!(
                events(&mut net, b).as_slice(),
                [StoreEvent::Found { version: 1, .. }]
            ),
            "seed {seed}"
        );
    }
}
