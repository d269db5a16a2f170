//! What the overlay must show, on the deterministic test network (fixed seeds; each test
//! prints its seed so a failure can be replayed).

use std::time::Duration;

use pastry_core::{Config, Id, Instant};
use pastry_sim::{Addr, LookupStats, NetConfig, Network, NodeState};

fn grown(seed: u64, n: usize, node: Config) -> Network {
    let mut cfg = NetConfig::with_seed(seed);
    cfg.node = node;
    let mut net = Network::new(cfg);
    net.grow(n, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    net
}

/// Issues `count` lookups from random active nodes, one every `gap`, then lets them settle.
fn lookups(net: &mut Network, count: usize, gap: Duration) {
    for _ in 0..count {
        net.random_lookup();
        net.run_for(gap);
    }
    net.run_for(Duration::from_secs(60));
}

fn delta(after: &LookupStats, before: &LookupStats) -> (u64, u64, u64, u64) {
    (
        after.sent - before.sent,
        after.delivered - before.delivered,
        after.correct - before.correct,
        after.incorrect - before.incorrect,
    )
}

#[test]
fn thousand_sequential_joins_then_every_lookup_reaches_the_closest_node() {
    let seed = 11;
    println!("seed {seed}");
    let mut net = grown(seed, 1000, Config::default());
    assert!(
        net.leaf_set_errors().is_empty(),
        "leaf sets after the joins"
    );
    lookups(&mut net, 10_000, Duration::from_millis(1));
    let s = net.lookup_stats().clone();
    let bound = 1000f64.ln() / 16f64.ln();
    println!(
        "sent {} delivered {} correct {} mean hops {:.3} (bound {:.3}) max {} histogram {:?}",
        s.sent,
        s.delivered,
        s.correct,
        s.mean_hops(),
        bound,
        s.max_hops(),
        s.hops
    );
    assert_eq!((s.sent, s.delivered, s.correct), (10_000, 10_000, 10_000));
    assert_eq!(s.duplicates, 0);
    assert!(s.mean_hops() < bound, "mean hops {}", s.mean_hops());
    assert!(s.max_hops() <= 4, "max hops {}", s.max_hops());
}

#[test]
fn small_rings_deliver_every_key_at_its_closest_node() {
    let l = Config::default().leaf_set_size;
    for (i, n) in [1, 2, 3, l / 2, l, l + 1].into_iter().enumerate() {
        let seed = 100 + i as u64;
        let mut net = grown(seed, n, Config::default());
        assert!(net.leaf_set_errors().is_empty(), "seed {seed}: n = {n}");
        // Keys at, next to and half-way between every pair of node ids, and random ones.
        let ids: Vec<Id> = net.oracle().ids().collect();
        let mut keys = Vec::new();
        for (j, a) in ids.iter().enumerate() {
            let b = ids[(j + 1) % ids.len()];
            let mid = a.wrapping_add(a.cw_distance(b) / 2);
            keys.extend([
                *a,
                a.wrapping_add(1),
                a.wrapping_sub(1),
                mid,
                mid.wrapping_add(1),
            ]);
        }
        for _ in 0..200 {
            keys.push(net.random_id());
        }
        let nodes = net.active_addrs();
        for (k, key) in keys.iter().enumerate() {
            let from = nodes[k % nodes.len()];
            net.lookup(from, *key);
            net.run_for(Duration::from_millis(2));
        }
        net.run_for(Duration::from_secs(30));
        let s = net.lookup_stats();
        println!(
            "seed {seed}: n = {n}: {} keys, {} correct",
            s.sent, s.correct
        );
        assert_eq!(s.sent, keys.len() as u64);
        assert_eq!(
            (s.delivered, s.correct),
            (s.sent, s.sent),
            "seed {seed}: n = {n}"
        );
    }
}

/// Builds 2,000 nodes, removes 10% of them (killed or leaving), keeps issuing lookups while
/// the overlay repairs, and returns the network, the simulated repair time, and the lookup
/// totals of the repair window.
fn churn_ten_percent(seed: u64, graceful: bool) -> (Network, Duration, LookupStats) {
    let mut net = grown(seed, 2000, Config::default());
    let mut victims: Vec<Addr> = net.active_addrs();
    // A deterministic choice of 200 victims.
    let mut chosen = Vec::new();
    while chosen.len() < 200 {
        let i = net.random_below(victims.len());
        chosen.push(victims.swap_remove(i));
    }
    let before = net.lookup_stats().clone();
    let start = net.now();
    for a in &chosen {
        if graceful {
            net.leave(*a);
        } else {
            net.kill(*a);
        }
    }
    // Lookups every 20 ms until every leaf set matches the oracle's ideal one.
    let limit = start + Duration::from_secs(600);
    let mut next_check = start;
    let repaired = loop {
        net.random_lookup();
        net.run_for(Duration::from_millis(20));
        if net.now() >= next_check {
            next_check = net.now() + Duration::from_millis(500);
            if net.leaf_set_errors().is_empty() {
                break net.now();
            }
        }
        assert!(
            net.now() < limit,
            "seed {seed}: not repaired after 600 s: {} leaf sets wrong",
            net.leaf_set_errors().len()
        );
    };
    // Let lookups still in flight finish, then take the totals of the window.
    net.run_for(Duration::from_secs(60));
    let after = net.lookup_stats().clone();
    let window = LookupStats {
        sent: after.sent - before.sent,
        delivered: after.delivered - before.delivered,
        correct: after.correct - before.correct,
        incorrect: after.incorrect - before.incorrect,
        duplicates: after.duplicates - before.duplicates,
        failure_reports: after.failure_reports - before.failure_reports,
        hops: Vec::new(),
    };
    (net, repaired - start, window)
}

fn after_repair_all_correct(net: &mut Network, seed: u64) {
    let before = net.lookup_stats().clone();
    lookups(net, 10_000, Duration::from_millis(1));
    let (sent, delivered, correct, incorrect) = delta(net.lookup_stats(), &before);
    println!("seed {seed}: after repair: sent {sent} delivered {delivered} correct {correct}");
    assert_eq!(
        (delivered, correct, incorrect),
        (sent, sent, 0),
        "seed {seed}"
    );
    assert_eq!(sent, 10_000);
}

#[test]
fn ten_percent_killed_is_repaired_and_nothing_is_misdelivered() {
    let seed = 21;
    let (mut net, repair, during) = churn_ten_percent(seed, false);
    println!(
        "seed {seed}: silent failure of 200/2000 repaired in {repair:?}; during repair: sent {} \
         delivered {} correct {} incorrect {} reported failed {}",
        during.sent, during.delivered, during.correct, during.incorrect, during.failure_reports
    );
    assert_eq!(
        during.incorrect, 0,
        "seed {seed}: misdelivered during repair"
    );
    assert!(during.correct > 0);
    assert!(net.sum_counters(|c| c.failures_detected) >= 200);
    after_repair_all_correct(&mut net, seed);
}

#[test]
fn ten_percent_leaving_is_repaired_sooner_than_ten_percent_failing() {
    let seed = 21;
    let (mut net, leave_repair, during) = churn_ten_percent(seed, true);
    let (_, fail_repair, _) = churn_ten_percent(seed, false);
    println!(
        "seed {seed}: graceful leave of 200/2000 repaired in {leave_repair:?}, silent failure in \
         {fail_repair:?}; during repair: sent {} delivered {} correct {} incorrect {}",
        during.sent, during.delivered, during.correct, during.incorrect
    );
    assert_eq!(
        during.incorrect, 0,
        "seed {seed}: misdelivered during repair"
    );
    assert!(
        leave_repair < fail_repair,
        "leave {leave_repair:?} vs failure {fail_repair:?}"
    );
    let left = net
        .addrs()
        .filter(|a| net.state(*a) == NodeState::Left)
        .count();
    assert_eq!(left, 200, "every leaving node finished its leave");
    after_repair_all_correct(&mut net, seed);
}

#[test]
fn five_percent_loss_still_delivers_every_lookup_correctly() {
    let seed = 31;
    let mut cfg = NetConfig::with_seed(seed);
    cfg.loss = 0.05;
    let mut net = Network::new(cfg);
    net.grow(100, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    net.run_for(Duration::from_secs(120));
    lookups(&mut net, 2_000, Duration::from_millis(5));
    let s = net.lookup_stats();
    let (sent, dropped) = net.datagram_counts();
    println!(
        "seed {seed}: {} lookups, {} delivered, {} correct; {dropped} of {sent} datagrams dropped",
        s.sent, s.delivered, s.correct
    );
    assert!(dropped * 100 > sent * 4, "the loss really happened");
    assert_eq!((s.delivered, s.correct), (s.sent, s.sent), "seed {seed}");
    // The answers, routed back hop by acknowledged hop, cover the loss within the first of the
    // lookup's own timeouts (10 s), so that no lookup is routed twice.
    let late = net
        .lookups()
        .iter()
        .filter(|l| {
            l.answered
                .is_none_or(|a| a - l.sent_at >= Duration::from_secs(10))
        })
        .count();
    assert_eq!(late, 0, "seed {seed}: lookups answered late or never");
}

#[test]
fn a_live_neighbour_found_dead_through_loss_is_taken_back_at_once() {
    // Every datagram is lost until some node declares its clockwise neighbour dead; then the
    // network heals. The neighbour is alive: it must be back in that node's leaf set within a
    // few seconds, not after its own next heartbeat (up to 30 s) or silence check.
    let seed = 41;
    let mut net = grown(seed, 24, Config::default());
    net.run_for(Duration::from_secs(60));
    let nodes = net.active_addrs();
    let neighbours: Vec<(Addr, Id)> = nodes
        .iter()
        .map(|&a| {
            let n = net.node(a).expect("active nodes run");
            let cw = n
                .leaf_set()
                .neighbour(pastry_core::Side::Cw)
                .expect("a neighbour");
            (a, cw.id())
        })
        .collect();
    net.set_loss(1.0);
    let start = net.now();
    let (a, b) = loop {
        net.run_for(Duration::from_millis(50));
        let dropped = neighbours.iter().find(|(a, b)| {
            !net.node(*a)
                .expect("nobody is killed")
                .leaf_set()
                .contains(*b)
        });
        if let Some(&found) = dropped {
            break found;
        }
        assert!(
            net.now() - start < Duration::from_secs(300),
            "seed {seed}: no neighbour declared dead"
        );
    };
    net.set_loss(0.0);
    let healed = net.now();
    println!(
        "seed {seed}: node {a} dropped its neighbour {b:?} after {:?} of total loss",
        healed - start
    );
    net.run_for(Duration::from_secs(4));
    assert!(
        net.node(a).expect("running").leaf_set().contains(b),
        "seed {seed}: node {a} has not taken its live neighbour back 4 s after the loss ended"
    );
}

#[test]
fn a_dead_routing_table_entry_is_dropped_after_one_probe() {
    // A hop to a routing-table entry goes unanswered: the entry is probed once, not through
    // every retry, before it is dropped (a leaf-set member would get the retries).
    let seed = 7;
    let mut net = grown(seed, 64, Config::default());
    net.run_for(Duration::from_secs(30));
    let (a, t, rto) = net
        .active_addrs()
        .into_iter()
        .find_map(|a| {
            let n = net.node(a)?;
            let cfg = n.config().clone();
            n.routing_table()
                .entries()
                .find(|p| {
                    !n.leaf_set().contains(p.handle.id)
                        && p.rtt.srtt().is_some()
                        && n.next_hop(p.handle.id).is_some_and(|h| h.id == p.handle.id)
                })
                .map(|p| (a, p.handle.clone(), p.rtt.rto(&cfg)))
        })
        .expect("some node routes through a measured table entry outside its leaf set");
    net.kill(t.addr);
    let start = net.now();
    net.act(a, |n, now| {
        n.route(now, t.id, 0, b"via a dead entry".to_vec())
    })
    .expect("running")
    .expect("routable");
    while net
        .node(a)
        .expect("running")
        .routing_table()
        .find(t.id)
        .is_some()
    {
        net.run_for(Duration::from_millis(5));
        assert!(
            net.now() - start < Duration::from_secs(60),
            "seed {seed}: node {a} never dropped its dead entry"
        );
    }
    let took = net.now() - start;
    println!(
        "seed {seed}: node {a} dropped dead entry {} after {took:?} (rto {rto:?})",
        t.addr
    );
    // The hop's timeout and one probe's; each retry would add twice and four times more.
    assert!(
        took <= rto * 3,
        "seed {seed}: dropped after {took:?}, more than one hop and one probe (rto {rto:?})"
    );
}

/// Runs until `addr`'s routing table (entries and spares) no longer names `id`.
fn until_forgotten(net: &mut Network, seed: u64, addr: Addr, id: Id) {
    let start = net.now();
    while net
        .node(addr)
        .expect("running")
        .routing_table()
        .find(id)
        .is_some()
    {
        net.run_for(Duration::from_millis(5));
        assert!(
            net.now() - start < Duration::from_secs(60),
            "seed {seed}: node {addr} never forgot dead node {id:?}"
        );
    }
}

#[test]
fn a_dead_spare_is_dropped_and_a_dead_entry_hands_its_cell_to_a_spare() {
    // In a 50-node ring with three spares a cell, row 0's cells (about three nodes each) are
    // sparse. A lookup for a dead spare's own id tries the spare (the node closest to the key
    // that the cell knows), finds it dead, drops it and still reaches the key's live root; a
    // dead entry's cell goes to one of its live spares.
    let seed = 11;
    let mut node = Config::default();
    node.cell_spares = 3;
    let mut net = grown(seed, 50, node);
    net.run_for(Duration::from_secs(120));
    let (a, col, entry, spares) = net
        .active_addrs()
        .into_iter()
        .find_map(|a| {
            let n = net.node(a)?;
            let t = n.routing_table();
            (0..16u8).find_map(|c| {
                let e = t.get(0, c)?;
                let outside = |id: Id| !n.leaf_set().contains(id);
                let spares: Vec<_> = t
                    .spares_in(0, c)
                    .filter(|p| outside(p.id()) && !p.is_suspect())
                    .map(|p| p.handle.clone())
                    .collect();
                let routed_to_itself = spares
                    .iter()
                    .any(|s| n.next_hop(s.id).is_some_and(|h| h.id == s.id));
                (outside(e.id()) && spares.len() >= 2 && routed_to_itself)
                    .then(|| (a, c, e.handle.clone(), spares))
            })
        })
        .expect("some node has a row-0 cell with an entry and two spares outside its leaf set");
    let n = net.node(a).expect("running");
    let victim = spares
        .iter()
        .find(|s| n.next_hop(s.id).is_some_and(|h| h.id == s.id))
        .cloned()
        .expect("found above");
    println!(
        "seed {seed}: node {a}, cell (0, {col}): entry {} and spares {:?}; killing spare {}",
        entry.addr,
        spares.iter().map(|s| s.addr).collect::<Vec<_>>(),
        victim.addr
    );
    net.kill(victim.addr);
    let first = net.lookup(a, victim.id).expect("running");
    until_forgotten(&mut net, seed, a, victim.id);
    net.run_for(Duration::from_secs(10));
    let d = net.lookups()[first as usize]
        .delivered
        .clone()
        .unwrap_or_else(|| panic!("seed {seed}: the lookup for the dead spare's id was lost"));
    assert!(
        d.correct,
        "seed {seed}: delivered at {} instead of the root",
        d.at
    );
    let t = net.node(a).expect("running").routing_table();
    assert_eq!(
        t.get(0, col).map(|p| p.id()),
        Some(entry.id),
        "seed {seed}: the entry keeps its cell"
    );
    // Now the entry dies: one of the cell's live spares inherits it.
    let live: Vec<Id> = t.spares_in(0, col).map(|p| p.id()).collect();
    assert!(!live.is_empty(), "seed {seed}: a spare is left");
    net.kill(entry.addr);
    net.act(a, |n, now| {
        n.route(now, entry.id, 0, b"via a dead entry".to_vec())
    })
    .expect("running")
    .expect("routable");
    until_forgotten(&mut net, seed, a, entry.id);
    let heir = net
        .node(a)
        .expect("running")
        .routing_table()
        .get(0, col)
        .map(|p| p.id());
    assert!(
        heir.is_some_and(|h| live.contains(&h)),
        "seed {seed}: cell (0, {col}) went to {heir:?}, not to one of its spares {live:?}"
    );
}

#[test]
fn a_lookup_for_a_dead_members_keys_waits_one_timeout_and_a_short_check() {
    // Node `a` looks up the id of a leaf-set member `m` that has just failed and is not `a`'s
    // ring neighbour. After one unanswered attempt `a` starts a liveness probe of `m` (three
    // attempts, the first two with the same timeout) beside the lookup's resends, and the
    // verdict sends the lookup on. The node it reaches may still hold `m` and decide the same
    // way. Each decision takes five timeouts (one for the hop, four for the probe); resending
    // the lookup twice before probing, and backing the probe off from its second attempt, took
    // fourteen. With its verdict `a` tells `w`, `m`'s ring neighbour on `a`'s side, which at
    // once checks `m` itself (it would otherwise learn of it from its own hop to `m`, or from
    // `m`'s silence: heartbeats every 30 s, a 40 s failure timeout), and every leaf set drops
    // `m` within seconds.
    for seed in 11..=14 {
        let mut net = grown(seed, 64, Config::default());
        net.run_for(Duration::from_secs(60));
        let (a, m, w) = net
            .active_addrs()
            .into_iter()
            .find_map(|a| {
                let n = net.node(a)?;
                let leaf = n.leaf_set();
                [pastry_core::Side::Cw, pastry_core::Side::Ccw]
                    .into_iter()
                    .find_map(|side| {
                        let s: Vec<_> = leaf.side_peers(side).collect();
                        // Not the neighbour: the member just before it on that side is `w`.
                        (1..s.len()).find_map(|i| {
                            let m = s[i];
                            n.next_hop(m.id())
                                .is_some_and(|h| h.id == m.id())
                                .then(|| (m.handle.clone(), s[i - 1].handle.addr))
                        })
                    })
                    .map(|(m, w)| (a, m, w))
            })
            .expect("some node routes to a member that is not its neighbour");
        // Every node's retransmission timeout towards `m`, while it is still a member.
        let rto: std::collections::HashMap<Addr, Duration> = net
            .active_addrs()
            .into_iter()
            .filter_map(|x| {
                let n = net.node(x)?;
                let p = n.leaf_set().get(m.id)?;
                Some((x, p.rtt.rto(n.config())))
            })
            .collect();
        net.kill(m.addr);
        let start = net.now();
        let i = net.lookup(a, m.id).expect("a is active") as usize;
        // When `a` dropped `m`, and when `w` began to check it (or dropped it).
        let (mut a_dropped, mut w_checks) = (None, None);
        let delivered = loop {
            net.run_for(Duration::from_millis(5));
            let now = net.now();
            let holds = |x: Addr| net.node(x).and_then(|n| n.leaf_set().get(m.id).cloned());
            if a_dropped.is_none() && holds(a).is_none() {
                a_dropped = Some(now);
            }
            if w_checks.is_none() && holds(w).is_none_or(|p| p.is_suspect()) {
                w_checks = Some(now);
            }
            if let Some(d) = net.lookups()[i].delivered.clone() {
                break d;
            }
            assert!(
                net.now() - start < Duration::from_secs(60),
                "seed {seed}: the lookup from {a} was never delivered"
            );
        };
        let took = delivered.time - start;
        let (rto_a, rto_root) = (rto[&a], rto.get(&delivered.at).copied().unwrap_or_default());
        println!(
            "seed {seed}: {a} looked up dead member {}: delivered at {} after {took:?} (rto \
             {rto_a:?} from {a}, {rto_root:?} from {})",
            m.addr, delivered.at, delivered.at
        );
        assert!(
            delivered.correct,
            "seed {seed}: delivered at {}, not at the closest live node",
            delivered.at
        );
        // Five timeouts at each deciding node, and the hops' latency.
        let bound = (rto_a + rto_root) * 5 + Duration::from_millis(300);
        assert!(
            took <= bound,
            "seed {seed}: delivered after {took:?}, more than {bound:?}"
        );
        let (a_dropped, w_checks) = (
            a_dropped.expect("a dropped m before the lookup was delivered"),
            w_checks.expect("w checks m before the lookup is delivered"),
        );
        let told = net.latency(a, w) + Duration::from_millis(10);
        println!(
            "seed {seed}: {a} dropped it after {:?}, its neighbour {w} began to check it {:?} \
             later",
            a_dropped - start,
            w_checks.saturating_duration_since(a_dropped)
        );
        assert!(
            w_checks <= a_dropped + told,
            "seed {seed}: {w} began to check the dead member {:?} after {a} dropped it, not \
             when told ({told:?})",
            w_checks.saturating_duration_since(a_dropped)
        );
        let held_by = |net: &Network| {
            net.active_addrs()
                .into_iter()
                .filter(|x| net.node(*x).is_some_and(|n| n.leaf_set().contains(m.id)))
                .count()
        };
        while held_by(&net) > 0 {
            net.run_for(Duration::from_millis(50));
            assert!(
                net.now() - start < Duration::from_secs(15),
                "seed {seed}: {} leaf sets still hold the dead member after 15 s",
                held_by(&net)
            );
        }
        println!(
            "seed {seed}: every leaf set dropped it {:?} after the kill",
            net.now() - start
        );
    }
}

/// Grows 64 nodes, lets them settle, kills one (or not) and runs two minutes: the control
/// datagrams everyone else sent in those two minutes, and whether every leaf set was right at
/// the end.
fn one_failure(seed: u64, kill: bool) -> (u64, bool) {
    let mut net = grown(seed, 64, Config::default());
    net.run_for(Duration::from_secs(60));
    assert!(net.leaf_set_errors().is_empty(), "seed {seed}: settled");
    let dead = net.active_addrs()[7];
    assert_eq!(
        net.node(dead).expect("running").leaf_set().len(),
        16,
        "seed {seed}: a full leaf set"
    );
    let control = |net: &Network| -> u64 {
        net.addrs()
            .filter(|a| *a != dead)
            .filter_map(|a| net.node(a))
            .map(|n| n.counters().control_out)
            .sum()
    };
    let before = control(&net);
    if kill {
        net.kill(dead);
    }
    net.run_for(Duration::from_secs(120));
    (control(&net) - before, net.leaf_set_errors().is_empty())
}

#[test]
fn a_silent_failure_is_repaired_from_the_leaf_set_its_notice_carries() {
    // A node fails silently. Its ring neighbour finds it silent and tells the leaf set with
    // leaf-set probes that carry its own leaf set; the other neighbour tells only the two
    // members the first could not reach. Each member that finds the node dead refills its hole
    // from the leaf set the notice brought rather than asking its farthest member for one. The
    // failure's cost is what the same two minutes cost more than they do on the same network
    // (same seed) where nothing fails. Before those two changes seeds 1 to 4 cost 144, 154,
    // 181 and 146.
    let mut costs = Vec::new();
    for seed in 1..=4 {
        let (quiet, _) = one_failure(seed, false);
        let (spent, repaired) = one_failure(seed, true);
        let cost = spent.saturating_sub(quiet);
        println!(
            "seed {seed}: {spent} control datagrams against {quiet} without the failure: it \
             cost {cost}"
        );
        assert!(
            repaired,
            "seed {seed}: leaf sets still wrong two minutes after the failure"
        );
        costs.push(cost);
    }
    let mean = costs.iter().sum::<u64>() / costs.len() as u64;
    assert!(
        mean <= 135,
        "one failure cost {mean} control datagrams on average ({costs:?})"
    );
}

fn scenario_digest(seed: u64) -> (u64, u64, Instant) {
    let mut cfg = NetConfig::with_seed(seed);
    cfg.loss = 0.02;
    let mut net = Network::new(cfg);
    net.grow(150, Duration::from_secs(300)).unwrap();
    for a in [3, 50, 77] {
        net.kill(a);
    }
    net.leave(90);
    lookups(&mut net, 500, Duration::from_millis(7));
    (net.digest(), net.events_processed(), net.now())
}

#[test]
fn same_seed_same_run_bit_for_bit() {
    let a = scenario_digest(5);
    let b = scenario_digest(5);
    let c = scenario_digest(6);
    println!("seed 5: {a:?}; seed 6: {c:?}");
    assert_eq!(a, b);
    assert_ne!(a.0, c.0, "a different seed gives a different run");
}

#[test]
fn state_per_node_at_ten_thousand_nodes() {
    let seed = 41;
    let mut net = grown(seed, 10_000, Config::default());
    lookups(&mut net, 10_000, Duration::from_millis(1));
    let active = net.active_addrs();
    let total: usize = active
        .iter()
        .map(|a| net.node(*a).unwrap().state_bytes())
        .sum();
    let entries: usize = active
        .iter()
        .map(|a| net.node(*a).unwrap().routing_table().len())
        .sum();
    let per_node = total as f64 / active.len() as f64;
    println!(
        "seed {seed}: {} nodes, {:.0} bytes of state per node, {:.1} routing-table entries per node",
        active.len(),
        per_node,
        entries as f64 / active.len() as f64
    );
    let s = net.lookup_stats();
    assert_eq!((s.delivered, s.correct), (s.sent, s.sent));
    assert!(per_node < 8192.0, "{per_node} bytes per node");
}

#[test]
fn under_churn_and_five_percent_loss_live_members_are_seldom_declared_dead() {
    // 300 nodes under 5 % loss; every 5 s one dies and a new one joins. Three lost round
    // trips in a row (about one probe round in a thousand) are bound to happen now and then;
    // what the protocol controls is which rounds may declare a live member dead: liveness
    // checks only, never a proximity probe or a leaf-set exchange, and not one whose target
    // has meanwhile spoken to us from its verified address.
    let mut counts = Vec::new();
    for seed in 71..=76 {
        let mut net = grown(seed, 300, Config::default());
        net.run_for(Duration::from_secs(60));
        net.set_loss(0.05);
        let before = net.false_failures().len();
        for _ in 0..240 {
            let live = net.active_addrs();
            let victim = live[net.random_below(live.len())];
            net.kill(victim);
            let via = net.random_active().expect("the ring lives");
            let id = net.random_id();
            let fresh = net.spawn(id);
            net.join(fresh, via);
            net.run_for(Duration::from_secs(5));
        }
        let n = net.false_failures().len() - before;
        println!("seed {seed}: {n} live members declared dead in 20 min of churn at 5 % loss");
        counts.push(n);
    }
    let total: usize = counts.iter().sum();
    // Seeds 71-76: 3 in all. 29 while an unanswered leaf-set exchange declared a member dead
    // without a liveness check of its own; 64 before members stopped being declared dead by
    // proximity probes and by rounds their own datagrams had answered.
    assert!(total <= 12, "{counts:?}");
}
