//! Untrusted input: datagrams from addresses that never answered a probe (forged sources)
//! earn at most three times their size in replies, from the whole overlay; gossip from them
//! is ignored; garbage is counted and changes nothing.

use std::time::Duration;

use pastry_core::wire::{Datagram, LeafSetMsg, Message, RouteBody, RouteMsg};
use pastry_core::{Id, NodeHandle};
use pastry_sim::{Addr, NetConfig, Network};

/// Addresses at and above this are not nodes.
const FORGED: Addr = 1_000_000;

fn ring(seed: u64) -> Network {
    let mut net = Network::new(NetConfig::with_seed(seed));
    net.grow(60, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    net.run_for(Duration::from_secs(5));
    net
}

/// Sends `message` to `target` from the forged address `from` claiming id `claimed`, runs a
/// minute, and returns (bytes sent by the forger, bytes the overlay sent back to it).
fn forge(
    net: &mut Network,
    target: Addr,
    from: Addr,
    claimed: Id,
    message: Message<Addr>,
) -> (u64, u64) {
    let bytes = Datagram::new(claimed, message).to_bytes();
    let sent = bytes.len() as u64;
    net.inject(target, from, bytes);
    net.run_for(Duration::from_secs(60));
    (sent, net.sent_outside(from).1)
}

/// An id right next to the target's, so that the target would take it into its leaf set.
fn neighbour_id(net: &Network, target: Addr) -> Id {
    net.id(target).wrapping_add(1)
}

#[test]
fn an_unpadded_leaf_set_probe_earns_at_most_three_times_its_size() {
    let mut net = ring(51);
    let target = net.active_addrs()[7];
    let claimed = neighbour_id(&net, target);
    let probe = Message::Probe {
        nonce: 1,
        token: 0,
        leaf: Some(LeafSetMsg::default()),
        failed: vec![],
        padding: 0,
        active: true,
    };
    let (sent, got) = forge(&mut net, target, FORGED, claimed, probe);
    println!("seed 51: leaf-set probe of {sent} bytes earned {got} bytes");
    assert!(got > 0, "the probe is answered");
    assert!(got <= 3 * sent, "{got} > 3 x {sent}");
}

#[test]
fn a_leaf_set_probe_from_an_unverified_address_earns_no_leaf_set() {
    let mut net = ring(52);
    let target = net.active_addrs()[3];
    let claimed = neighbour_id(&net, target);
    let probe = Message::Probe {
        nonce: 1,
        token: 0,
        leaf: Some(LeafSetMsg::default()),
        failed: vec![],
        padding: 400,
        active: true,
    };
    let (sent, got) = forge(&mut net, target, FORGED + 1, claimed, probe);
    println!("seed 52: padded leaf-set probe of {sent} bytes earned {got} bytes");
    // A plain reply and the probes that try to verify the address; the leaf set (16 handles
    // of 20 bytes) is kept for a verified address, and the claimant is not taken in.
    assert!(got > 0 && got < 16 * 20, "{got}");
    assert!(!net.node(target).unwrap().leaf_set().contains(claimed));
    assert!(got <= 3 * sent, "{got} > 3 x {sent}");
}

#[test]
fn a_row_request_and_a_routed_message_earn_at_most_three_times_their_size() {
    let mut net = ring(53);
    let target = net.active_addrs()[11];
    let (sent, got) = forge(
        &mut net,
        target,
        FORGED + 2,
        Id::new(77),
        Message::RowRequest { row: 0, padding: 0 },
    );
    println!("seed 53: row request of {sent} bytes earned {got} bytes");
    assert!(got <= 3 * sent, "{got} > 3 x {sent}");
    let route = Message::Route(RouteMsg {
        seq: 9,
        origin: NodeHandle::new(Id::new(78), FORGED + 3),
        msg_seq: 1,
        key: net.random_id(),
        hops: 0,
        body: RouteBody::App {
            app: 1,
            payload: vec![0; 8],
        },
    });
    let (sent, got) = forge(&mut net, target, FORGED + 3, Id::new(78), route);
    println!("seed 53: routed message of {sent} bytes earned {got} bytes (its acknowledgement)");
    assert!(got > 0 && got <= 3 * sent, "{got} vs {sent}");
}

#[test]
fn a_forged_join_makes_the_overlay_send_its_victim_at_most_three_times_the_request() {
    let mut net = ring(54);
    let target = net.active_addrs()[5];
    let victim = FORGED + 4;
    let claimed = net.random_id();
    // A join request too short to pay for the verification probes is ignored.
    let (sent, got) = forge(
        &mut net,
        target,
        victim,
        claimed,
        Message::JoinRequest { padding: 0 },
    );
    println!("seed 54: short join request of {sent} bytes earned {got} bytes");
    assert_eq!(got, 0);
    let (sent2, got) = forge(
        &mut net,
        target,
        victim,
        claimed,
        Message::JoinRequest { padding: 21 },
    );
    println!("seed 54: join request of {sent2} bytes earned {got} bytes from the whole overlay");
    assert!(got > 0, "the bootstrap node tries to verify the joiner");
    assert!(got <= 3 * (sent + sent2), "{got} > 3 x {}", sent + sent2);
}

#[test]
fn gossip_from_an_unverified_address_aims_no_probe_at_third_parties() {
    let mut net = ring(55);
    let target = net.active_addrs()[2];
    let claimed = neighbour_id(&net, target);
    // A heartbeat naming 32 "nodes" at addresses of would-be victims.
    let victims: Vec<NodeHandle<Addr>> = (0..32)
        .map(|i| NodeHandle::new(net.id(target).wrapping_add(2 + i), FORGED + 100 + i as Addr))
        .collect();
    let leaf = LeafSetMsg {
        cw: victims[..16].to_vec(),
        ccw: victims[16..].to_vec(),
    };
    let (sent, got) = forge(
        &mut net,
        target,
        FORGED + 5,
        claimed,
        Message::Heartbeat { leaf },
    );
    let to_victims: u64 = victims.iter().map(|v| net.sent_outside(v.addr).0).sum();
    println!(
        "seed 55: forged heartbeat of {sent} bytes earned {got} bytes; {to_victims} datagrams went to the 32 addresses it named"
    );
    assert_eq!(to_victims, 0);
    assert!(got <= 3 * sent, "{got} > 3 x {sent}");
}

#[test]
fn garbage_is_counted_and_the_overlay_keeps_working() {
    let mut net = ring(56);
    let target = net.active_addrs()[9];
    let before = net.node(target).unwrap().counters().malformed;
    let mut garbage = vec![
        vec![],
        vec![0x50],
        vec![0x50, 1, 4],
        vec![0x50, 9, 1, 0, 0],
        vec![0xff; 1500],
    ];
    let valid = Datagram::<Addr>::new(Id::new(5), Message::Ack { seq: 1 }).to_bytes();
    garbage.push(valid[..valid.len() - 1].to_vec());
    let n = garbage.len() as u64;
    for g in garbage {
        net.inject(target, FORGED + 6, g);
    }
    net.run_for(Duration::from_secs(1));
    let after = net.node(target).unwrap().counters().malformed;
    assert_eq!(after - before, n);
    assert_eq!(
        net.sent_outside(FORGED + 6),
        (0, 0),
        "garbage is never answered"
    );
    for _ in 0..200 {
        net.random_lookup();
        net.run_for(Duration::from_millis(5));
    }
    net.run_for(Duration::from_secs(30));
    let s = net.lookup_stats();
    assert_eq!((s.delivered, s.correct), (200, 200));
}

/// A neighbour of `target` on the clockwise side (a verified leaf-set member).
fn member_of(net: &Network, target: Addr) -> (Id, Addr) {
    let p = net
        .node(target)
        .unwrap()
        .leaf_set()
        .neighbour(pastry_core::Side::Cw)
        .unwrap()
        .clone();
    (p.id(), p.handle.addr)
}

#[test]
fn a_forged_leave_does_not_remove_a_live_member() {
    let mut net = ring(57);
    let target = net.active_addrs()[4];
    let (m, _) = member_of(&net, target);
    let leave: Message<Addr> = Message::Leave {
        seq: 0,
        leaf: LeafSetMsg::default(),
    };
    let bytes = Datagram::new(m, leave).to_bytes();
    net.inject(target, FORGED + 7, bytes);
    net.run_for(Duration::from_secs(1));
    assert!(
        net.node(target).unwrap().leaf_set().contains(m),
        "the member stays"
    );
    assert!(net.node(target).unwrap().counters().rejected > 0);
    for _ in 0..300 {
        net.random_lookup();
        net.run_for(Duration::from_millis(5));
    }
    net.run_for(Duration::from_secs(30));
    let s = net.lookup_stats();
    assert_eq!((s.delivered, s.correct), (300, 300));
}

#[test]
fn a_forged_leaf_set_probe_does_not_move_a_member_to_another_address() {
    let mut net = ring(58);
    let target = net.active_addrs()[6];
    let (m, real) = member_of(&net, target);
    let probe = Message::Probe {
        nonce: 5,
        token: 0,
        leaf: Some(LeafSetMsg::default()),
        failed: vec![],
        padding: 0,
        active: true,
    };
    let (sent, got) = forge(&mut net, target, FORGED + 8, m, probe);
    let now = net
        .node(target)
        .unwrap()
        .leaf_set()
        .get(m)
        .unwrap()
        .handle
        .addr;
    println!(
        "seed 58: forged probe for a member: {sent} bytes earned {got}; member still at {now} (was {real})"
    );
    assert_eq!(now, real);
    assert!(got <= 3 * sent, "{got} > 3 x {sent}");
    for _ in 0..300 {
        net.random_lookup();
        net.run_for(Duration::from_millis(5));
    }
    net.run_for(Duration::from_secs(30));
    let s = net.lookup_stats();
    assert_eq!((s.delivered, s.correct), (300, 300));
}

#[test]
fn a_forged_join_route_sends_nothing_to_the_origin_it_names() {
    let mut net = ring(59);
    let target = net.active_addrs()[1];
    let victim = FORGED + 9;
    let key = net.random_id();
    let join = Message::Route(RouteMsg {
        seq: 1,
        origin: NodeHandle::new(Id::new(12345), victim),
        msg_seq: 77,
        key,
        hops: 0,
        body: RouteBody::Join {
            joiner: NodeHandle::new(key, FORGED + 10),
            next_row: 0,
            tag: 1,
        },
    });
    let bytes = Datagram::new(Id::new(999), join).to_bytes();
    net.inject(target, FORGED + 11, bytes);
    net.run_for(Duration::from_secs(60));
    println!(
        "seed 59: forged join route: {:?} to the named origin, {:?} to the named joiner",
        net.sent_outside(victim),
        net.sent_outside(FORGED + 10)
    );
    assert_eq!(net.sent_outside(victim), (0, 0));
    assert_eq!(net.sent_outside(FORGED + 10), (0, 0));
}

#[test]
fn a_flood_of_strangers_cannot_keep_a_dead_neighbour_in_the_leaf_set() {
    let mut net = ring(60);
    let target = net.active_addrs()[8];
    let (m, addr) = member_of(&net, target);
    let start = net.now();
    net.kill(addr);
    // 60 probes a second from different forged addresses, each claiming an id for an empty
    // routing-table cell, for 100 s.
    for i in 0..6000u32 {
        let claimed =
            Id::new(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834));
        let probe: Message<Addr> = Message::Probe {
            nonce: i,
            token: 0,
            leaf: None,
            failed: vec![],
            padding: 0,
            active: true,
        };
        net.inject(
            target,
            FORGED + 1000 + i,
            Datagram::new(claimed, probe).to_bytes(),
        );
        net.run_for(Duration::from_millis(1000 / 60));
    }
    net.run_for(Duration::from_secs(120));
    println!(
        "seed 60: after a flood of 6000 stranger probes, the killed neighbour is {} the leaf set at {:?}",
        if net.node(target).unwrap().leaf_set().contains(m) {
            "still in"
        } else {
            "out of"
        },
        net.now() - start
    );
    assert!(!net.node(target).unwrap().leaf_set().contains(m));
    assert!(net.leaf_set_errors().is_empty());
}

/// A message to a claimed handle (a live leaf-set member's id at another node's address, as
/// a forged routed message's origin names it) makes the sender check that address; the node
/// answering there under its own id says nothing of the member, which stays in the leaf set
/// and is not counted as failed.
#[test]
fn an_id_claimed_at_another_address_is_not_declared_dead() {
    for seed in [1u64, 2, 3, 4, 5] {
        println!("seed {seed}");
        let mut net = ring(seed);
        let nodes = net.active_addrs();
        let sender = nodes[0];
        let leaf: Vec<Id> = net
            .node(sender)
            .unwrap()
            .leaf_set()
            .members()
            .map(|p| p.handle.id)
            .collect();
        let member = leaf[0];
        // A node the sender knows nothing of, so that its address is checked first.
        let other = nodes
            .iter()
            .copied()
            .find(|a| {
                let node = net.node(sender).unwrap();
                *a != sender
                    && !leaf.contains(&net.id(*a))
                    && node.routing_table().find(net.id(*a)).is_none()
            })
            .unwrap();
        let failures = net.node(sender).unwrap().counters().failures_detected;
        let claim = NodeHandle::new(member, other);
        net.act(sender, |node, now| {
            node.send_direct(now, claim, 7, vec![1, 2, 3])
        })
        .unwrap()
        .unwrap();
        for _ in 0..100 {
            net.run_for(Duration::from_millis(100));
            assert!(
                net.node(sender).unwrap().leaf_set().contains(member),
                "seed {seed}: the member was dropped"
            );
        }
        assert_eq!(
            net.node(sender).unwrap().counters().failures_detected,
            failures,
            "seed {seed}"
        );
    }
}
