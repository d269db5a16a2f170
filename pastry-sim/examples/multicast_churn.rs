//! Multicast (`pastry_core::multicast`) under churn: how many messages reach the members,
//! how good the trees are, and what they cost.
//!
//! Builds a ring on the sphere topology with multicast on every node, subscribes random
//! members to random groups, measures the trees (the delay from the root to each member along
//! the tree over the direct delay, and how many children a node serves), then runs churn as
//! `pastry-sim` does (exponential sessions, silent failures, arrivals that keep the population
//! steady) while random nodes publish to every group every ten seconds, and measures the trees
//! again at the end. Arriving nodes subscribe to each group with the probability that keeps
//! the groups' sizes steady.
//!
//! A member counts for a message published at `t` if it subscribed 30 s or more before `t`
//! and was still running at a check 20 s or more after `t`.
//!
//! ```text
//! cargo run --release -p pastry-sim --example multicast_churn -- 2000 600 3600 100 50 1 20
//! ```
//! Arguments: nodes (default 2,000), median session in seconds (default 600; 0 for none),
//! simulated seconds of churn (default 3,600), groups (default 100), members per group
//! (default 50), seed (default 1), refresh period in seconds (default 20, the library's; the
//! child timeout is 2.5 of them).

use std::collections::HashMap;
use std::time::Duration;

use pastry_core::multicast::{Multicast, MulticastConfig, MulticastEvent};
use pastry_core::{Config, Id, Instant};
use pastry_sim::churn::{Churn, ChurnRun, drive};
use pastry_sim::{Addr, NetConfig, Network, NodeState, Topology, TopologyKind};

const MC: u16 = 10;
/// Seconds between two rounds of publishing (one message per group).
const PUBLISH_EVERY: u64 = 10;

fn mc(net: &Network, a: Addr) -> &Multicast<Addr> {
    net.node(a)
        .and_then(|n| n.app::<Multicast<Addr>>(MC))
        .expect("multicast on every node")
}

fn running(net: &Network, a: Addr) -> bool {
    matches!(net.state(a), NodeState::Active | NodeState::Joining)
}

/// Messages each node received, (group, publisher, seq), drained from every running node.
fn collect(net: &mut Network, got: &mut HashMap<Addr, Vec<(Id, Id, u32)>>) {
    let drained = net.each_app(MC, |m: &mut Multicast<Addr>, _| {
        std::iter::from_fn(|| m.poll_event()).collect::<Vec<MulticastEvent>>()
    });
    for (a, events) in drained {
        for e in events {
            if let MulticastEvent::Received {
                group,
                publisher,
                seq,
                ..
            } = e
            {
                got.entry(a).or_default().push((group, publisher, seq));
            }
        }
    }
}

/// Prints the trees' shape: members attached, the delay penalty of the tree (the delay from
/// the root down the tree to a member over the direct delay from the root), and children.
fn trees(net: &Network, members: &HashMap<Id, Vec<(Addr, Instant)>>, when: &str) {
    let by_id: HashMap<Id, Addr> = net
        .addrs()
        .filter(|a| running(net, *a))
        .map(|a| (net.id(a), a))
        .collect();
    let (mut live, mut attached) = (0usize, 0usize);
    let mut rdp: Vec<f64> = Vec::new();
    let mut depth_sum = 0usize;
    for (&g, set) in members {
        for &(m, _) in set
            .iter()
            .filter(|(m, _)| net.state(*m) == NodeState::Active)
        {
            live += 1;
            // Up the tree to the root, adding the edges' latencies.
            let (mut at, mut tree, mut depth) = (m, Duration::ZERO, 0usize);
            let root = loop {
                if mc(net, at).is_root(g) {
                    break Some(at);
                }
                let Some(p) = mc(net, at).parent(g).and_then(|p| by_id.get(&p.id)) else {
                    break None;
                };
                tree += net.latency(*p, at);
                at = *p;
                depth += 1;
                if depth > 32 {
                    break None;
                }
            };
            let Some(root) = root else { continue };
            attached += 1;
            depth_sum += depth;
            if root != m {
                let direct = net.latency(root, m).as_secs_f64();
                if direct > 0.0 {
                    rdp.push(tree.as_secs_f64() / direct);
                }
            }
        }
    }
    rdp.sort_by(f64::total_cmp);
    let mean = rdp.iter().sum::<f64>() / rdp.len().max(1) as f64;
    let median = rdp.get(rdp.len() / 2).copied().unwrap_or(0.0);
    // Children per (node, group) in the trees, and tree places per node.
    let (mut places, mut children, mut most_children, mut most_groups) = (0usize, 0, 0, 0);
    let nodes = by_id.len();
    for &a in by_id.values() {
        let m = mc(net, a);
        let groups: Vec<Id> = m.groups().collect();
        most_groups = most_groups.max(groups.len());
        for g in groups {
            places += 1;
            let c = m.children(g).count();
            children += c;
            most_children = most_children.max(c);
        }
    }
    println!(
        "trees {when}: {attached} of {live} live memberships attached, mean depth {:.2}; \
         tree delay penalty mean {mean:.2}, median {median:.2}; {places} tree places on \
         {nodes} nodes (at most {most_groups} groups on one), {:.2} children per place \
         (at most {most_children})",
        depth_sum as f64 / attached.max(1) as f64,
        children as f64 / places.max(1) as f64,
    );
}

fn subscribe(net: &mut Network, a: Addr, g: Id) {
    net.act(a, |node, now| {
        node.with_app(now, MC, |m: &mut Multicast<Addr>, ctx| m.subscribe(ctx, g))
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let nodes: usize = arg(0).map_or(2000, |s| s.parse().expect("nodes: a number"));
    let median: u64 = arg(1).map_or(600, |s| s.parse().expect("median session: seconds"));
    let duration: u64 = arg(2).map_or(3600, |s| s.parse().expect("duration: seconds"));
    let n_groups: usize = arg(3).map_or(100, |s| s.parse().expect("groups: a number"));
    let per_group: usize = arg(4).map_or(50, |s| s.parse().expect("members: a number"));
    let seed: u64 = arg(5).map_or(1, |s| s.parse().expect("seed: a number"));
    let refresh: u64 = arg(6).map_or(20, |s| s.parse().expect("refresh: seconds"));
    assert!(per_group <= nodes, "more members per group than nodes");
    println!(
        "{nodes} nodes, median session {median} s, {duration} s of churn, {n_groups} groups of \
         {per_group} members, seed {seed}, refresh every {refresh} s"
    );

    let mut net = Network::new(NetConfig {
        seed,
        node: Config::default(),
        loss: 0.0,
        topology: Topology::new(TopologyKind::Sphere, seed),
        check_invariants: false,
    });
    let mut mc_cfg = MulticastConfig::default();
    mc_cfg.refresh_period = Duration::from_secs(refresh);
    mc_cfg.child_timeout = Duration::from_millis(2500 * refresh);
    net.on_spawn(Box::new(move |_, node| {
        let m = Multicast::<Addr>::new(mc_cfg.clone()).expect("valid");
        node.register(MC, Box::new(m)).expect("one multicast");
    }));
    let active = net.grow_concurrently(nodes, 4096, Duration::from_secs(60), |_| {});
    net.run_for(Duration::from_secs(300));
    println!("built: {active} active");

    let mut members: HashMap<Id, Vec<(Addr, Instant)>> = HashMap::new();
    for _ in 0..n_groups {
        let g = net.random_id();
        let mut set: Vec<Addr> = Vec::with_capacity(per_group);
        while set.len() < per_group {
            let a = net.random_active().expect("a ring");
            if !set.contains(&a) {
                set.push(a);
            }
        }
        let now = net.now();
        for &a in &set {
            subscribe(&mut net, a, g);
        }
        members.insert(g, set.into_iter().map(|a| (a, now)).collect());
    }
    net.run_for(Duration::from_secs(60));
    trees(&net, &members, "before churn");

    let t0 = net.now();
    let end = t0 + Duration::from_secs(duration);
    let mut churn = (median > 0)
        .then(|| ChurnRun::start(Churn::new(Duration::from_secs(median), nodes), &mut net));
    // Arrivals that subscribe once they are active.
    let mut waiting: Vec<Addr> = Vec::new();
    let p_member = per_group as f64 / nodes as f64;
    let mut sent: Vec<(Id, Id, u32, Instant)> = Vec::new();
    let mut got: HashMap<Addr, Vec<(Id, Id, u32)>> = HashMap::new();
    // When each member was first seen gone (checked every tick).
    let mut gone: HashMap<Addr, Instant> = HashMap::new();
    let direct_before = net.datagrams_by_type().get("direct").copied().unwrap_or(0);
    let route_before = net.datagrams_by_type().get("route").copied().unwrap_or(0);
    let group_ids: Vec<Id> = {
        let mut v: Vec<Id> = members.keys().copied().collect();
        v.sort_unstable();
        v
    };
    let first = t0 + Duration::from_secs(PUBLISH_EVERY);
    let every = Duration::from_secs(PUBLISH_EVERY);
    let driven = drive(
        &mut net,
        churn.as_mut(),
        end,
        first,
        every,
        |net, t, arrived| {
            for set in members.values() {
                for &(m, _) in set {
                    if !running(net, m) {
                        gone.entry(m).or_insert(t);
                    }
                }
            }
            waiting.extend(arrived);
            for a in std::mem::take(&mut waiting) {
                match net.state(a) {
                    NodeState::Active => {
                        for &g in &group_ids {
                            if net.random_unit() < p_member {
                                subscribe(net, a, g);
                                members.get_mut(&g).expect("a group").push((a, t));
                            }
                        }
                    }
                    NodeState::Joining => waiting.push(a),
                    _ => {}
                }
            }
            for &g in &group_ids {
                let a = net.random_active().expect("a ring");
                let id = net
                    .act(a, |node, now| {
                        node.with_app(now, MC, |m: &mut Multicast<Addr>, ctx| {
                            m.publish(ctx, g, vec![1; 200])
                        })
                    })
                    .and_then(|r| r.ok())
                    .and_then(|r| r.ok());
                if let Some(id) = id {
                    sent.push((g, id.origin, id.seq, t));
                }
            }
            collect(net, &mut got);
        },
    );
    let (joined, died, node_seconds) = (driven.joined, driven.departed, driven.node_seconds);
    let direct = net.datagrams_by_type().get("direct").copied().unwrap_or(0) - direct_before;
    let route = net.datagrams_by_type().get("route").copied().unwrap_or(0) - route_before;
    net.run_for(Duration::from_secs(30));
    collect(&mut net, &mut got);
    for set in members.values() {
        for &(m, _) in set {
            if !running(&net, m) {
                gone.entry(m).or_insert(net.now());
            }
        }
    }

    // A member counts for a message if it was seen alive at a check 20 s or more after the
    // message was published (deliveries take well under a second).
    let (mut expected, mut delivered) = (0u64, 0u64);
    let received: HashMap<Addr, std::collections::HashSet<(Id, Id, u32)>> = got
        .iter()
        .map(|(a, v)| (*a, v.iter().copied().collect()))
        .collect();
    let duplicates: usize = got.iter().map(|(a, v)| v.len() - received[a].len()).sum();
    for (g, p, s, at) in &sent {
        for (m, since) in &members[g] {
            if *since + Duration::from_secs(30) > *at
                || gone
                    .get(m)
                    .is_some_and(|d| *d <= *at + Duration::from_secs(20))
            {
                continue;
            }
            expected += 1;
            if received.get(m).is_some_and(|r| r.contains(&(*g, *p, *s))) {
                delivered += 1;
            }
        }
    }
    println!(
        "churn: {joined} joined, {died} failed; {} active at the end",
        net.active_len()
    );
    println!(
        "messages: {} published; {delivered} of {expected} deliveries to members that stayed \
         ({:.2} %); {duplicates} delivered twice",
        sent.len(),
        100.0 * delivered as f64 / expected.max(1) as f64
    );
    let (mut joins, mut repairs, mut realigned) = (0u64, 0u64, 0u64);
    let (mut refreshes, mut forwarded) = (0u64, 0u64);
    for a in net.addrs().filter(|a| running(&net, *a)) {
        let s = mc(&net, a).stats();
        joins += s.joins;
        repairs += s.repairs;
        realigned += s.realigned;
        refreshes += s.refreshes;
        forwarded += s.forwarded;
    }
    println!(
        "on the nodes running at the end: {joins} joins ({repairs} repairs, {realigned} moves to \
         a new parent), {refreshes} refreshes, {forwarded} copies forwarded"
    );
    println!(
        "datagrams per node per second: {:.3} direct (multicast data, refreshes, adoptions, \
         paths, leaves), {:.3} routed (joins and publishes hop by hop, and the overlay's own \
         joins); the core acknowledges each with one more",
        direct as f64 / node_seconds.max(1.0),
        route as f64 / node_seconds.max(1.0)
    );
    trees(&net, &members, "after churn");
}
