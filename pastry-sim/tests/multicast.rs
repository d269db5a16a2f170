//! Multicast trees (`pastry_core::multicast`) on whole rings: every member gets every
//! message once and nobody else gets it, trees are rooted at the node closest to the group's
//! id and follow it, heal after failures and churn, are pruned when members leave, and take
//! nothing from strangers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pastry_core::multicast::{Multicast, MulticastConfig, MulticastEvent, MulticastMsg};
use pastry_core::wire::{Datagram, Message, RouteBody, RouteMsg, encode_route};
use pastry_core::{Context, Id, NodeHandle};
use pastry_sim::churn::{Churn, ChurnRun};
use pastry_sim::{Addr, NetConfig, Network, NodeState};

const MC: u16 = 12;

/// An empty network whose every node gets a multicast application.
fn network(seed: u64) -> Network {
    let mut net = Network::new(NetConfig::with_seed(seed));
    net.on_spawn(Box::new(|_, node| {
        let m = Multicast::<Addr>::new(MulticastConfig::default()).unwrap();
        node.register(MC, Box::new(m)).unwrap();
    }));
    net
}

fn ring(seed: u64, n: usize) -> Network {
    let mut net = network(seed);
    net.grow(n, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    net.run_for(Duration::from_secs(30));
    net
}

fn mc_of(net: &Network, a: Addr) -> &Multicast<Addr> {
    net.node(a)
        .and_then(|n| n.app::<Multicast<Addr>>(MC))
        .expect("a running node with multicast")
}

fn with_mc<R>(
    net: &mut Network,
    a: Addr,
    f: impl FnOnce(&mut Multicast<Addr>, &mut Context<'_, Addr>) -> R,
) -> R {
    net.act(a, |node, now| node.with_app(now, MC, f).unwrap())
        .expect("a running node")
}

fn running(net: &Network) -> Vec<Addr> {
    net.addrs()
        .filter(|a| matches!(net.state(*a), NodeState::Active | NodeState::Joining))
        .collect()
}

/// (group, publisher, seq) of every message each running node received since the last call.
type Received = BTreeMap<Addr, Vec<(Id, Id, u32)>>;

fn received(net: &mut Network) -> Received {
    let mut out = Received::new();
    let drained = net.each_app(MC, |m: &mut Multicast<Addr>, _| {
        std::iter::from_fn(|| m.poll_event()).collect::<Vec<_>>()
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
                out.entry(a).or_default().push((group, publisher, seq));
            }
        }
    }
    out
}

/// Subscribes `per_group` distinct random active nodes to each of `groups` random groups.
fn subscribe(net: &mut Network, groups: usize, per_group: usize) -> BTreeMap<Id, BTreeSet<Addr>> {
    let mut members = BTreeMap::new();
    for _ in 0..groups {
        let g = net.random_id();
        let mut set = BTreeSet::new();
        while set.len() < per_group {
            set.insert(net.random_active().unwrap());
        }
        for &a in &set {
            with_mc(net, a, |m, ctx| m.subscribe(ctx, g)).unwrap();
        }
        members.insert(g, set);
    }
    members
}

/// Publishes `per_group` messages to each group from random active nodes; returns them.
fn publish(
    net: &mut Network,
    groups: impl IntoIterator<Item = Id>,
    per_group: usize,
) -> Vec<(Id, Id, u32)> {
    let mut sent = Vec::new();
    for g in groups {
        for i in 0..per_group {
            let a = net.random_active().unwrap();
            let id = with_mc(net, a, |m, ctx| m.publish(ctx, g, vec![i as u8; 100])).unwrap();
            sent.push((g, id.origin, id.seq));
        }
    }
    sent
}

/// Checks that every live member got exactly the messages of its groups, once each, and that
/// no other node got any.
fn assert_delivered(
    net: &Network,
    seed: u64,
    members: &BTreeMap<Id, BTreeSet<Addr>>,
    sent: &[(Id, Id, u32)],
    got: &Received,
) {
    for a in running(net) {
        let mut want: Vec<(Id, Id, u32)> = sent
            .iter()
            .filter(|(g, _, _)| members.get(g).is_some_and(|m| m.contains(&a)))
            .copied()
            .collect();
        want.sort_unstable();
        let mut have = got.get(&a).cloned().unwrap_or_default();
        have.sort_unstable();
        assert_eq!(have, want, "seed {seed}: node {a}");
    }
}

/// The shape of every group's tree: one root, the active node closest to the group's id; every
/// other node in the tree has a parent that counts it as a child, and every member reaches
/// the root by parents.
fn assert_trees(net: &Network, seed: u64, members: &BTreeMap<Id, BTreeSet<Addr>>) {
    let live = running(net);
    let by_id: BTreeMap<Id, Addr> = live.iter().map(|a| (net.id(*a), *a)).collect();
    for a in &live {
        mc_of(net, *a)
            .check_invariants()
            .unwrap_or_else(|e| panic!("seed {seed}: node {a}: {e}"));
    }
    for (&g, set) in members {
        let roots: Vec<Addr> = live
            .iter()
            .copied()
            .filter(|a| mc_of(net, *a).is_root(g))
            .collect();
        // A group without live members has no tree left.
        let closest = net
            .oracle()
            .closest(g)
            .and_then(|id| by_id.get(&id).copied())
            .filter(|_| set.iter().any(|m| live.contains(m)));
        assert_eq!(
            roots,
            closest.into_iter().collect::<Vec<_>>(),
            "seed {seed}: root of {g}"
        );
        for &m in set.iter().filter(|m| live.contains(m)) {
            let mut at = m;
            let mut steps = 0;
            while !mc_of(net, at).is_root(g) {
                let parent = mc_of(net, at)
                    .parent(g)
                    .unwrap_or_else(|| panic!("seed {seed}: {at} in {g}'s tree has no parent"))
                    .clone();
                let p = by_id[&parent.id];
                assert!(
                    mc_of(net, p).children(g).any(|c| c.id == net.id(at)),
                    "seed {seed}: {p} counts {at} as a child in {g}"
                );
                at = p;
                steps += 1;
                assert!(steps < 16, "seed {seed}: a loop in {g}'s tree");
            }
        }
    }
}

#[test]
fn every_member_gets_every_message_once_and_nobody_else_does() {
    for seed in [1u64, 2, 3] {
        println!("seed {seed}");
        let mut net = ring(seed, 300);
        let members = subscribe(&mut net, 20, 12);
        net.run_for(Duration::from_secs(20));
        // Every member was told it is attached.
        for a in running(&net) {
            let events: Vec<MulticastEvent> = with_mc(&mut net, a, |m, _| {
                std::iter::from_fn(|| m.poll_event()).collect()
            });
            let attached: BTreeSet<Id> = events
                .iter()
                .filter_map(|e| match e {
                    MulticastEvent::Attached { group } => Some(*group),
                    _ => None,
                })
                .collect();
            let want: BTreeSet<Id> = members
                .iter()
                .filter(|(_, m)| m.contains(&a))
                .map(|(g, _)| *g)
                .collect();
            assert_eq!(attached, want, "seed {seed}: node {a}");
        }
        assert_trees(&net, seed, &members);
        let sent = publish(&mut net, members.keys().copied(), 3);
        net.run_for(Duration::from_secs(10));
        let got = received(&mut net);
        assert_delivered(&net, seed, &members, &sent, &got);
        // Forwarders that are not members are few: routes converge near the root.
        let in_trees: usize = running(&net)
            .iter()
            .map(|a| mc_of(&net, *a).groups().count())
            .sum();
        assert!(
            in_trees < 20 * 12 * 2,
            "seed {seed}: {in_trees} tree places for 240 memberships"
        );
    }
}

#[test]
fn trees_heal_after_a_mass_failure() {
    for seed in [4u64, 5, 6] {
        println!("seed {seed}");
        let mut net = ring(seed, 300);
        let members = subscribe(&mut net, 10, 15);
        net.run_for(Duration::from_secs(20));
        let _ = received(&mut net);
        // A fifth of the nodes fail at once: members, forwarders and roots among them.
        let mut all = net.active_addrs();
        all.sort_unstable();
        let victims: Vec<Addr> = all.iter().copied().step_by(5).collect();
        for v in &victims {
            net.kill(*v);
        }
        // Failures are found, parents time out, orphans join again.
        net.run_for(Duration::from_secs(240));
        assert_trees(&net, seed, &members);
        let sent = publish(&mut net, members.keys().copied(), 3);
        net.run_for(Duration::from_secs(10));
        let got = received(&mut net);
        assert_delivered(&net, seed, &members, &sent, &got);
    }
}

#[test]
fn a_node_closer_to_the_group_becomes_its_root() {
    for seed in [7u64, 8] {
        println!("seed {seed}");
        let mut net = ring(seed, 120);
        let members = subscribe(&mut net, 1, 20);
        let g = *members.keys().next().unwrap();
        net.run_for(Duration::from_secs(20));
        let old_root = net.oracle().closest(g).unwrap();
        // A node with the group's id itself joins.
        let newcomer = net.spawn(g);
        assert!(net.start(newcomer, Duration::from_secs(120)), "seed {seed}");
        net.run_for(Duration::from_secs(60));
        assert!(mc_of(&net, newcomer).is_root(g), "seed {seed}");
        let old = net
            .addrs()
            .find(|a| net.id(*a) == old_root)
            .expect("the old root");
        assert!(!mc_of(&net, old).is_root(g), "seed {seed}");
        assert_trees(&net, seed, &members);
        let _ = received(&mut net);
        let sent = publish(&mut net, [g], 2);
        net.run_for(Duration::from_secs(10));
        let got = received(&mut net);
        assert_delivered(&net, seed, &members, &sent, &got);
    }
}

#[test]
fn unsubscribing_prunes_the_tree() {
    let seed = 9;
    let mut net = ring(seed, 200);
    let members = subscribe(&mut net, 3, 10);
    net.run_for(Duration::from_secs(20));
    let (&g, set) = members.iter().next().unwrap();
    let forwarders = running(&net)
        .into_iter()
        .filter(|a| mc_of(&net, *a).groups().any(|x| x == g))
        .count();
    assert!(
        forwarders > set.len(),
        "seed {seed}: the tree has forwarders"
    );
    for &a in set {
        with_mc(&mut net, a, |m, ctx| m.unsubscribe(ctx, g));
    }
    net.run_for(Duration::from_secs(5));
    for a in running(&net) {
        assert!(
            !mc_of(&net, a).groups().any(|x| x == g),
            "seed {seed}: node {a} still holds the pruned group"
        );
    }
    // The other groups are untouched.
    let rest: BTreeMap<Id, BTreeSet<Addr>> = members.into_iter().filter(|(x, _)| *x != g).collect();
    assert_trees(&net, seed, &rest);
}

/// Under churn (ten-minute sessions) at least 94 % of the messages reach the members that
/// stay (98.1 % with this seed; a member misses what is published while a dead ancestor is
/// found and its branch re-attached, about ten seconds each time), no member gets one twice,
/// and once churn stops every live member gets every message.
#[test]
fn trees_follow_churn() {
    let seed = 10;
    let mut net = ring(seed, 300);
    let members = subscribe(&mut net, 8, 15);
    net.run_for(Duration::from_secs(20));
    let _ = received(&mut net);
    let mut run = ChurnRun::start(Churn::new(Duration::from_secs(600), 300), &mut net);
    let start = net.now();
    let end = start + Duration::from_secs(1800);
    let mut next_publish = start + Duration::from_secs(60);
    let mut sent: Vec<(Id, Id, u32, pastry_core::Instant)> = Vec::new();
    let mut got = Received::new();
    let mut failed_at: BTreeMap<Addr, pastry_core::Instant> = BTreeMap::new();
    while let Some(t) = run.next_event().filter(|t| *t < end) {
        while next_publish <= t {
            net.run_until(next_publish);
            for (g, p, s) in publish(&mut net, members.keys().copied(), 1) {
                sent.push((g, p, s, next_publish));
            }
            next_publish += Duration::from_secs(30);
        }
        net.run_until(t);
        let before: BTreeSet<Addr> = running(&net).into_iter().collect();
        run.apply(&mut net, t);
        for a in before {
            if !matches!(net.state(a), NodeState::Active | NodeState::Joining) {
                failed_at.insert(a, t);
            }
        }
        for (a, v) in received(&mut net) {
            got.entry(a).or_default().extend(v);
        }
    }
    net.run_for(Duration::from_secs(15));
    for (a, v) in received(&mut net) {
        got.entry(a).or_default().extend(v);
    }
    // Members alive from 2 minutes before a message until 15 s after it should have it.
    let (mut expected, mut delivered) = (0u32, 0u32);
    for (g, p, s, at) in &sent {
        for &m in &members[g] {
            let alive = failed_at
                .get(&m)
                .is_none_or(|f| *f > *at + Duration::from_secs(15));
            if !alive || *at < start + Duration::from_secs(120) {
                continue;
            }
            expected += 1;
            if got.get(&m).is_some_and(|v| v.contains(&(*g, *p, *s))) {
                delivered += 1;
            }
        }
    }
    println!("seed {seed}: {delivered} of {expected} deliveries during churn");
    assert!(expected > 500, "seed {seed}: {expected}");
    assert!(
        f64::from(delivered) >= 0.94 * f64::from(expected),
        "seed {seed}: {delivered} of {expected}"
    );
    // Routes changed under churn, and nodes moved to the parents their routes now lead to.
    let realigned: u64 = running(&net)
        .iter()
        .map(|a| mc_of(&net, *a).stats().realigned)
        .sum();
    assert!(realigned > 0, "seed {seed}: no node realigned");
    // No member got a message twice.
    for (a, v) in &got {
        let set: BTreeSet<_> = v.iter().collect();
        assert_eq!(set.len(), v.len(), "seed {seed}: node {a} got a duplicate");
    }
    // After churn, repair completes and the trees are whole again.
    net.run_for(Duration::from_secs(240));
    let live: BTreeMap<Id, BTreeSet<Addr>> = members
        .iter()
        .map(|(g, m)| {
            (
                *g,
                m.iter()
                    .copied()
                    .filter(|a| net.state(*a) == NodeState::Active)
                    .collect(),
            )
        })
        .collect();
    assert_trees(&net, seed, &live);
    let _ = received(&mut net);
    let sent = publish(&mut net, live.keys().copied(), 2);
    net.run_for(Duration::from_secs(10));
    let got = received(&mut net);
    assert_delivered(&net, seed, &live, &sent, &got);
}

/// Data, heartbeats and adoptions from a node that is not the parent, and leaves from a node
/// that is not a child, change nothing and are counted.
#[test]
fn strangers_cannot_feed_or_cut_a_tree() {
    let seed = 11;
    let mut net = ring(seed, 100);
    let members = subscribe(&mut net, 1, 10);
    let g = *members.keys().next().unwrap();
    net.run_for(Duration::from_secs(20));
    let _ = received(&mut net);
    let victim = *members[&g].iter().next().unwrap();
    let parent = mc_of(&net, victim).parent(g).cloned();
    // A node of the ring that is not the victim's parent.
    let stranger = net
        .active_addrs()
        .into_iter()
        .find(|a| *a != victim && Some(net.id(*a)) != parent.as_ref().map(|p| p.id))
        .unwrap();
    let rejected_before = mc_of(&net, victim).stats().rejected;
    let forged = [
        MulticastMsg::Data {
            group: g,
            publisher: net.id(stranger),
            seq: 1,
            payload: b"forged".to_vec(),
        },
        MulticastMsg::Path {
            group: g,
            path: vec![net.id(stranger)],
        },
        MulticastMsg::Adopted {
            group: g,
            nonce: 12345,
            path: vec![net.id(stranger)],
        },
    ];
    for (i, m) in (1u32..).zip(&forged) {
        let d = Datagram::<Addr>::new(
            net.id(stranger),
            Message::Direct {
                seq: 1000 + i,
                msg_seq: 1000 + i,
                app: MC,
                payload: m.encode(),
            },
        );
        net.inject(victim, stranger, d.to_bytes());
    }
    net.run_for(Duration::from_secs(5));
    let after = mc_of(&net, victim);
    assert_eq!(after.stats().rejected, rejected_before + 3, "seed {seed}");
    assert_eq!(
        after.parent(g).cloned(),
        parent,
        "seed {seed}: the parent stays"
    );
    assert!(
        received(&mut net).is_empty(),
        "seed {seed}: nothing forged was delivered"
    );
    // A forged leave naming a child of the root does not cut it off.
    let root = net
        .active_addrs()
        .into_iter()
        .find(|a| mc_of(&net, *a).is_root(g))
        .unwrap();
    let child = mc_of(&net, root).children(g).next().unwrap().clone();
    let d = Datagram::<Addr>::new(
        child.id,
        Message::Direct {
            seq: 2000,
            msg_seq: 2000,
            app: MC,
            payload: MulticastMsg::Leave { groups: vec![g] }.encode(),
        },
    );
    net.inject(root, stranger, d.to_bytes());
    net.run_for(Duration::from_secs(5));
    assert!(
        mc_of(&net, root).children(g).any(|c| c.id == child.id),
        "seed {seed}: a leave from another address is refused"
    );
    let sent = publish(&mut net, [g], 1);
    net.run_for(Duration::from_secs(10));
    let got = received(&mut net);
    assert_delivered(&net, seed, &members, &sent, &got);
}

/// A child finds its parent dead by the parent's silence to its refresh (the parent is not in
/// its leaf set, so nothing else tells it) and re-attaches within a refresh period and a few
/// retransmissions, long before the parent's own child timeout would matter.
#[test]
fn an_unanswered_refresh_makes_a_child_join_again() {
    for seed in [12u64, 13, 14] {
        println!("seed {seed}");
        let mut net = ring(seed, 300);
        let members = subscribe(&mut net, 10, 15);
        net.run_for(Duration::from_secs(20));
        let by_id: BTreeMap<Id, Addr> = running(&net).iter().map(|a| (net.id(*a), *a)).collect();
        // A member whose parent is not a leaf-set member of it, nor the group's root.
        let (g, member, parent) = members
            .iter()
            .flat_map(|(g, set)| set.iter().map(move |m| (*g, *m)))
            .find_map(|(g, m)| {
                let p = mc_of(&net, m).parent(g)?.clone();
                let in_leaf = net.node(m).unwrap().leaf_set().contains(p.id);
                let pa = by_id[&p.id];
                (!in_leaf && !mc_of(&net, pa).is_root(g)).then_some((g, m, pa))
            })
            .expect("such a member");
        net.kill(parent);
        let repairs = mc_of(&net, member).stats().repairs;
        net.run_for(Duration::from_secs(35));
        let now_parent = mc_of(&net, member).parent(g).map(|p| p.id);
        assert!(
            now_parent.is_some() && now_parent != Some(net.id(parent)),
            "seed {seed}: {member} re-attached ({now_parent:?})"
        );
        assert!(mc_of(&net, member).stats().repairs > repairs, "seed {seed}");
        let _ = received(&mut net);
        let sent = publish(&mut net, [g], 1);
        net.run_for(Duration::from_secs(5));
        let got = received(&mut net);
        assert!(
            got.get(&member).is_some_and(|v| v.contains(&sent[0])),
            "seed {seed}: the re-attached member gets the next message"
        );
    }
}

/// A routed message whose origin the sender chose, injected at `to` from `from`'s address.
fn forge_route(
    net: &mut Network,
    to: Addr,
    from: Addr,
    origin: NodeHandle<Addr>,
    seq: u32,
    key: Id,
    msg: &MulticastMsg,
) {
    let m = RouteMsg {
        seq: 50_000 + seq,
        origin,
        msg_seq: seq,
        key,
        hops: 0,
        body: RouteBody::App {
            app: MC,
            payload: msg.encode(),
        },
    };
    net.inject(to, from, encode_route(net.id(from), &m));
}

/// A routed join claiming a child's id from another address does not move the child's
/// messages there, and thousands of joins for made-up groups leave room to subscribe.
#[test]
fn forged_joins_neither_divert_children_nor_crowd_out_subscriptions() {
    let seed = 15;
    let mut net = ring(seed, 100);
    let members = subscribe(&mut net, 1, 10);
    let g = *members.keys().next().unwrap();
    net.run_for(Duration::from_secs(20));
    let _ = received(&mut net);
    let by_id: BTreeMap<Id, Addr> = running(&net).iter().map(|a| (net.id(*a), *a)).collect();
    let child = *members[&g]
        .iter()
        .find(|a| mc_of(&net, **a).parent(g).is_some())
        .unwrap();
    let parent = by_id[&mc_of(&net, child).parent(g).unwrap().id];
    let stranger = net
        .active_addrs()
        .into_iter()
        .find(|a| !members[&g].contains(a) && *a != parent && mc_of(&net, *a).groups().count() == 0)
        .unwrap();
    let claim = NodeHandle::new(net.id(child), stranger);
    forge_route(
        &mut net,
        parent,
        stranger,
        claim,
        1,
        g,
        &MulticastMsg::Join { group: g, nonce: 1 },
    );
    net.run_for(Duration::from_secs(1));
    let entry = mc_of(&net, parent)
        .children(g)
        .find(|c| c.id == net.id(child))
        .cloned();
    assert_eq!(
        entry,
        Some(NodeHandle::new(net.id(child), child)),
        "seed {seed}"
    );
    let sent = publish(&mut net, [g], 1);
    net.run_for(Duration::from_secs(5));
    let got = received(&mut net);
    assert_delivered(&net, seed, &members, &sent, &got);
    // Joins for 1,100 made-up groups from made-up nodes at the stranger's address.
    let victim = *members[&g].iter().next().unwrap();
    for i in 0..1100u32 {
        let fake_group = net.random_id();
        let fake = NodeHandle::new(net.random_id(), stranger);
        let join = MulticastMsg::Join {
            group: fake_group,
            nonce: i,
        };
        forge_route(&mut net, victim, stranger, fake, 10 + i, fake_group, &join);
        if i % 50 == 49 {
            net.run_for(Duration::from_millis(100));
        }
    }
    net.run_for(Duration::from_millis(100));
    let max = MulticastConfig::default().max_groups;
    assert!(
        mc_of(&net, victim).groups().count() <= max - max / 4,
        "seed {seed}"
    );
    let other = net.random_id();
    with_mc(&mut net, victim, |m, ctx| m.subscribe(ctx, other))
        .unwrap_or_else(|e| panic!("seed {seed}: the owner cannot subscribe: {e}"));
}

/// Every node of a 200-node ring in one group: the root takes more children than a
/// forwarder would, every member is attached, and a burst of publishes larger than the
/// root's queue of messages in flight drops no child.
#[test]
fn a_group_of_every_node_reaches_every_node_even_in_bursts() {
    let seed = 16;
    let mut net = ring(seed, 200);
    let g = net.random_id();
    let all = running(&net);
    for &a in &all {
        with_mc(&mut net, a, |m, ctx| m.subscribe(ctx, g)).unwrap();
    }
    net.run_for(Duration::from_secs(30));
    let members: BTreeMap<Id, BTreeSet<Addr>> = [(g, all.iter().copied().collect())].into();
    assert_trees(&net, seed, &members);
    let _ = received(&mut net);
    let root = *all.iter().find(|a| mc_of(&net, **a).is_root(g)).unwrap();
    let children = mc_of(&net, root).children(g).count();
    let dropped = mc_of(&net, root).stats().children_dropped;
    // Enough copies at once to fill the root's 1,024 messages in flight.
    let n = 1100 / children.max(1) + 5;
    let mut sent = Vec::new();
    for i in 0..n {
        let id = with_mc(&mut net, root, |m, ctx| {
            m.publish(ctx, g, vec![i as u8; 10])
        })
        .unwrap();
        sent.push((g, id.origin, id.seq));
    }
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        mc_of(&net, root).stats().children_dropped,
        dropped,
        "seed {seed}: a full queue dropped children"
    );
    assert_eq!(
        mc_of(&net, root).children(g).count(),
        children,
        "seed {seed}"
    );
    let _ = received(&mut net);
    let sent = publish(&mut net, [g], 1);
    net.run_for(Duration::from_secs(5));
    let got = received(&mut net);
    assert_delivered(&net, seed, &members, &sent, &got);
}

/// A node that shuts multicast down before leaving tells its children, which join again at
/// once: the next message, two seconds later, reaches every member of its subtree.
#[test]
fn shutdown_hands_the_subtree_over_at_once() {
    let seed = 17;
    let mut net = ring(seed, 200);
    let members = subscribe(&mut net, 1, 40);
    let g = *members.keys().next().unwrap();
    net.run_for(Duration::from_secs(30));
    let _ = received(&mut net);
    let by_id: BTreeMap<Id, Addr> = running(&net).iter().map(|a| (net.id(*a), *a)).collect();
    let leaving = running(&net)
        .into_iter()
        .filter(|a| !mc_of(&net, *a).is_root(g) && !members[&g].contains(a))
        .max_by_key(|a| mc_of(&net, *a).children(g).count())
        .unwrap();
    let children: Vec<Addr> = mc_of(&net, leaving)
        .children(g)
        .map(|c| by_id[&c.id])
        .collect();
    assert!(!children.is_empty(), "seed {seed}");
    with_mc(&mut net, leaving, |m, ctx| m.shutdown(ctx));
    assert_eq!(mc_of(&net, leaving).groups().count(), 0);
    net.leave(leaving);
    net.run_for(Duration::from_secs(2));
    let sent = publish(&mut net, [g], 1);
    net.run_for(Duration::from_secs(2));
    let got = received(&mut net);
    assert_delivered(&net, seed, &members, &sent, &got);
}

/// A group of every node of a 1,000-node ring: forwarders fill up and pass joins down to
/// their children, and every member is attached within two minutes.
#[test]
fn every_member_of_a_thousand_node_group_attaches() {
    let seed = 18;
    let mut net = ring(seed, 1000);
    let g = net.random_id();
    let all = running(&net);
    for &a in &all {
        with_mc(&mut net, a, |m, ctx| m.subscribe(ctx, g)).unwrap();
    }
    net.run_for(Duration::from_secs(120));
    let members: BTreeMap<Id, BTreeSet<Addr>> = [(g, all.iter().copied().collect())].into();
    assert_trees(&net, seed, &members);
}

/// The node with the most children in a group of every node of a 400-node ring shuts
/// multicast down, waits two seconds as the docs ask, and leaves: no child still counts it
/// as its parent, nor adopted it again meanwhile.
#[test]
fn shutdown_reaches_every_child_of_a_busy_node() {
    let seed = 19;
    let mut net = ring(seed, 400);
    let g = net.random_id();
    for a in running(&net) {
        with_mc(&mut net, a, |m, ctx| m.subscribe(ctx, g)).unwrap();
    }
    net.run_for(Duration::from_secs(30));
    let by_id: BTreeMap<Id, Addr> = running(&net).iter().map(|a| (net.id(*a), *a)).collect();
    let busy = running(&net)
        .into_iter()
        .max_by_key(|a| mc_of(&net, *a).children(g).count())
        .unwrap();
    let busy_id = net.id(busy);
    let children: Vec<Addr> = mc_of(&net, busy)
        .children(g)
        .map(|c| by_id[&c.id])
        .collect();
    assert!(
        children.len() > 32,
        "seed {seed}: {} children",
        children.len()
    );
    with_mc(&mut net, busy, |m, ctx| m.shutdown(ctx));
    net.run_for(Duration::from_secs(2));
    assert_eq!(mc_of(&net, busy).groups().count(), 0, "seed {seed}");
    net.leave(busy);
    net.run_for(Duration::from_secs(2));
    let stuck = children
        .iter()
        .filter(|c| mc_of(&net, **c).parent(g).is_some_and(|p| p.id == busy_id))
        .count();
    assert_eq!(
        stuck,
        0,
        "seed {seed}: {stuck} of {} children",
        children.len()
    );
}

/// A routed join naming a live node's id at a stranger's address makes the adopting node
/// send there; the stranger answering under its own id must not get the named node declared
/// dead (it lives at the address the adopting node knows it at).
#[test]
fn a_claimed_origin_cannot_get_a_live_node_declared_dead() {
    let seed = 20;
    let mut net = ring(seed, 100);
    let members = subscribe(&mut net, 1, 5);
    let g = *members.keys().next().unwrap();
    net.run_for(Duration::from_secs(20));
    let by_id: BTreeMap<Id, Addr> = running(&net).iter().map(|a| (net.id(*a), *a)).collect();
    let root = running(&net)
        .into_iter()
        .find(|a| mc_of(&net, *a).is_root(g))
        .unwrap();
    let leaf: Vec<Id> = net
        .node(root)
        .unwrap()
        .leaf_set()
        .members()
        .map(|p| p.handle.id)
        .collect();
    let victim = leaf
        .iter()
        .copied()
        .find(|id| mc_of(&net, by_id[id]).groups().count() == 0)
        .expect("a leaf-set member outside the tree");
    // A stranger the root knows nothing of, so that it checks the address before sending.
    let stranger = running(&net)
        .into_iter()
        .find(|a| {
            let node = net.node(root).unwrap();
            *a != root
                && !leaf.contains(&net.id(*a))
                && node.routing_table().find(net.id(*a)).is_none()
        })
        .unwrap();
    let claim = NodeHandle::new(victim, stranger);
    let join = MulticastMsg::Join { group: g, nonce: 1 };
    let failures = net.node(root).unwrap().counters().failures_detected;
    forge_route(&mut net, root, stranger, claim, 1, g, &join);
    for _ in 0..50 {
        net.run_for(Duration::from_millis(100));
        assert!(
            net.node(root).unwrap().leaf_set().contains(victim),
            "seed {seed}: the root dropped a live member named by a forged origin"
        );
    }
    assert_eq!(
        net.node(root).unwrap().counters().failures_detected,
        failures,
        "seed {seed}"
    );
    assert!(
        net.node(root).unwrap().leaf_set().contains(victim),
        "seed {seed}: the root dropped a live member named by a forged origin"
    );
}
