//! The replicated store (`pastry_core::store`) under churn: how many values survive, how
//! many gets find them, and what it costs.
//!
//! Builds a ring on the sphere topology with a store on every node, inserts
//! values from random nodes, then runs churn as `pastry-sim` does (exponential sessions, silent
//! failures, arrivals that keep the population steady) while random nodes get random values.
//! At the end it counts, among the live nodes, the values held nowhere (lost), the values held
//! by all of their 3 closest live nodes, and the extra copies.
//!
//! ```text
//! cargo run --release -p pastry-sim --example store_churn -- 2000 600 3600 10000 1
//! ```
//! Arguments: nodes (default 2,000), median session in seconds (default 600; 0 for none),
//! simulated seconds of churn (default 3,600), values (default 10,000), seed (default 1),
//! replicas (default 3).

use std::collections::HashMap;
use std::time::Duration;

use pastry_core::store::{Store, StoreConfig, StoreEvent};
use pastry_core::{Config, Id};
use pastry_sim::churn::{Churn, ChurnRun, drive};
use pastry_sim::{Addr, NetConfig, Network, Topology, TopologyKind};

const STORE: u16 = 9;
/// Gets per simulated second, over the whole ring.
const GETS_PER_SEC: u32 = 10;

fn value_of(key: Id) -> Vec<u8> {
    let mut v = key.to_bytes().to_vec();
    v.extend_from_slice(&key.to_bytes());
    v
}

#[derive(Default, Debug)]
struct Outcomes {
    inserted: u64,
    found: u64,
    cached: u64,
    not_found: u64,
    timed_out: u64,
    wrong: u64,
    other: u64,
}

/// Drains the store events of every running node.
fn collect(net: &mut Network, out: &mut Outcomes) {
    let drained = net.each_app(STORE, |s: &mut Store<Addr>, _| {
        std::iter::from_fn(|| s.poll_event()).collect::<Vec<StoreEvent>>()
    });
    for (_, events) in drained {
        for e in events {
            match e {
                StoreEvent::Inserted { .. } => out.inserted += 1,
                StoreEvent::Found {
                    key, value, cached, ..
                } => {
                    if value == value_of(key) {
                        out.found += 1;
                        out.cached += u64::from(cached);
                    } else {
                        out.wrong += 1;
                    }
                }
                StoreEvent::NotFound { .. } => out.not_found += 1,
                StoreEvent::TimedOut { .. } => out.timed_out += 1,
                _ => out.other += 1,
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let nodes: usize = arg(0).map_or(2000, |s| s.parse().expect("nodes: a number"));
    let median: u64 = arg(1).map_or(600, |s| s.parse().expect("median session: seconds"));
    let duration: u64 = arg(2).map_or(3600, |s| s.parse().expect("duration: seconds"));
    let n_keys: usize = arg(3).map_or(10_000, |s| s.parse().expect("values: a number"));
    let seed: u64 = arg(4).map_or(1, |s| s.parse().expect("seed: a number"));
    let k: u8 = arg(5).map_or(3, |s| s.parse().expect("replicas: a number"));
    println!(
        "{nodes} nodes, median session {median} s, {duration} s of churn, {n_keys} values, \
         {k} replicas, seed {seed}"
    );

    let mut net = Network::new(NetConfig {
        seed,
        node: Config::default(),
        loss: 0.0,
        topology: Topology::new(TopologyKind::Sphere, seed),
        check_invariants: false,
    });
    net.on_spawn(Box::new(move |_, node| {
        let mut cfg = StoreConfig::default();
        cfg.replicas = k;
        let store = Store::<Addr>::new(cfg).expect("valid");
        node.register(STORE, Box::new(store)).expect("one store");
    }));
    let active = net.grow_concurrently(nodes, 4096, Duration::from_secs(60), |_| {});
    net.run_for(Duration::from_secs(300));
    println!("built: {active} active");

    let mut out = Outcomes::default();
    let mut keys = Vec::with_capacity(n_keys);
    for _ in 0..n_keys {
        let key = net.random_id();
        let a = net.random_active().expect("a ring");
        net.act(a, |node, now| {
            node.with_app(now, STORE, |s: &mut Store<Addr>, ctx| {
                s.insert(ctx, key, 1, value_of(key))
            })
        });
        keys.push(key);
    }
    net.run_for(Duration::from_secs(30));
    collect(&mut net, &mut out);
    println!("inserted: {} of {n_keys} confirmed", out.inserted);

    // Churn, as the scenarios run it, with gets.
    let t0 = net.now();
    let end = t0 + Duration::from_secs(duration);
    let mut churn = (median > 0)
        .then(|| ChurnRun::start(Churn::new(Duration::from_secs(median), nodes), &mut net));
    let direct_before = net.datagrams_by_type().get("direct").copied().unwrap_or(0);
    let mut gets = 0u64;
    let driven = drive(
        &mut net,
        churn.as_mut(),
        end,
        t0,
        Duration::from_secs(1),
        |net, t, _| {
            for _ in 0..GETS_PER_SEC {
                let key = keys[net.random_below(keys.len())];
                let a = net.random_active().expect("a ring");
                net.act(a, |node, now| {
                    node.with_app(now, STORE, |s: &mut Store<Addr>, ctx| s.get(ctx, key))
                });
                gets += 1;
            }
            if (t - t0).as_secs().is_multiple_of(10) {
                collect(net, &mut out);
            }
        },
    );
    let (joined, died, node_seconds) = (driven.joined, driven.departed, driven.node_seconds);
    let direct = net.datagrams_by_type().get("direct").copied().unwrap_or(0) - direct_before;
    net.run_for(Duration::from_secs(30));
    collect(&mut net, &mut out);

    // Who holds what, among the live nodes.
    let live: Vec<Addr> = net.active_addrs();
    let mut held: HashMap<Id, Vec<Addr>> = HashMap::new();
    for &a in &live {
        let s = net
            .node(a)
            .and_then(|n| n.app::<Store<Addr>>(STORE))
            .expect("a store");
        for key in s.keys() {
            held.entry(key).or_default().push(a);
        }
    }
    let mut ids: Vec<(Id, Addr)> = live.iter().map(|a| (net.id(*a), *a)).collect();
    ids.sort_unstable();
    let (mut lost, mut complete, mut extra) = (0usize, 0usize, 0usize);
    for key in &keys {
        let holders = held.get(key).map_or(&[][..], Vec::as_slice);
        if holders.is_empty() {
            lost += 1;
            continue;
        }
        // The K live nodes closest to the key.
        let mut near: Vec<Addr> = ids.iter().map(|(_, a)| *a).collect();
        near.sort_by(|a, b| key.cmp_closeness(net.id(*a), net.id(*b)));
        near.truncate(usize::from(k));
        if near.iter().all(|a| holders.contains(a)) {
            complete += 1;
        }
        extra += holders.iter().filter(|a| !near.contains(a)).count();
    }
    println!(
        "churn: {joined} joined, {died} failed; {} active at the end",
        live.len()
    );
    println!(
        "values: {lost} lost of {n_keys} ({:.2e}); {complete} on all {k} closest live nodes \
         ({:.2} %); {extra} extra copies",
        lost as f64 / n_keys as f64,
        100.0 * complete as f64 / n_keys as f64
    );
    let answered = out.found + out.not_found + out.timed_out + out.wrong;
    println!(
        "gets: {gets} sent; {} found ({} from cached copies), {} not found, {} timed out, {} wrong; \
         {} asked by nodes that failed before the answer",
        out.found,
        out.cached,
        out.not_found,
        out.timed_out,
        out.wrong,
        gets.saturating_sub(answered)
    );
    println!(
        "direct datagrams (store pushes, offers, answers, and acknowledged sends of the core): \
         {:.3} per node per second",
        direct as f64 / node_seconds.max(1.0)
    );
}
