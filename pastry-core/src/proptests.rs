//! Property tests of the routing decision, the leaf set and the codec.

use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use proptest::prelude::*;

use crate::wire::{Datagram, LeafSetMsg, Message, RouteBody, RouteMsg};
use crate::{
    Config, Id, Instant, LeafSet, NextHop, Node, NodeHandle, Peer, RoutingTable, Rtt, Side, Via,
    next_hop,
};

/// Cases per property, on a fixed seed unless `PROPTEST_RNG_SEED` names another; the seed is
/// printed so that any run can be replayed.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(cases);
    if let proptest::test_runner::RngSeed::Random = c.rng_seed {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0x7061_7374_7279);
    }
    std::println!(
        "proptest seed: {:?} (set PROPTEST_RNG_SEED to change)",
        c.rng_seed
    );
    c
}

fn closest(ids: &[Id], key: Id) -> Id {
    *ids.iter()
        .min_by(|a, b| key.cmp_closeness(**a, **b))
        .unwrap()
}

/// A cheap deterministic stand-in for the round trip between two nodes.
fn fake_rtt(a: Id, b: Id) -> Duration {
    let x = (a.as_u128() ^ b.as_u128().rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Duration::from_micros(1 + (x >> 100) as u64 % 200_000)
}

struct Overlay {
    ids: Vec<Id>,
    leaf: Vec<LeafSet<u32>>,
    table: Vec<RoutingTable<u32>>,
}

/// Every node's leaf set knows all nodes (a consistent overlay); each routing-table offer is
/// dropped with probability `drop_per_mille / 1000`, so tables are partial. An offer that does
/// not take its cell stays as a spare while the cell has fewer than `spares`.
fn overlay(raw: &[u128], b: u8, leaf_size: usize, drop_per_mille: u32, spares: usize) -> Overlay {
    let mut ids: Vec<Id> = raw.iter().map(|x| Id::new(*x)).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut leaf = Vec::new();
    let mut table = Vec::new();
    for (i, own) in ids.iter().enumerate() {
        let mut l = LeafSet::new(*own, leaf_size);
        let mut t = RoutingTable::new(*own, b);
        for (j, other) in ids.iter().enumerate() {
            if i == j {
                continue;
            }
            let handle = NodeHandle::new(*other, j as u32);
            l.insert(Peer::new(handle.clone()), Instant::ZERO);
            let coin = (other.as_u128() ^ own.as_u128()).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 118;
            if (coin as u32 % 1000) >= drop_per_mille {
                let peer = Peer::verified(handle, Rtt::from_sample(fake_rtt(*own, *other)));
                if t.insert(peer.clone()) == crate::table::TableInsert::Kept && spares > 0 {
                    t.add_spare(peer, spares);
                }
            }
        }
        leaf.push(l);
        table.push(t);
    }
    Overlay { ids, leaf, table }
}

proptest! {
    #![proptest_config(config(256))]

    /// Every hop makes progress: a longer shared prefix with the key, or the same prefix and
    /// strictly closer, or a leaf-set hop to the node that is closest among those the hop
    /// knows. So routes never loop, and in a consistent overlay they end at the closest node.
    #[test]
    fn every_hop_makes_progress_and_routes_end_at_the_closest_node(
        raw in prop::collection::vec(any::<u128>(), 1..120),
        b in 1u8..=4,
        half in 1usize..=8,
        drop_per_mille in 0u32..900,
        spares in 0usize..=4,
        keys in prop::collection::vec(any::<u128>(), 1..16),
        start in any::<prop::sample::Index>(),
    ) {
        let o = overlay(&raw, b, 2 * half, drop_per_mille, spares);
        for t in &o.table {
            prop_assert!(t.check().is_ok(), "{:?}", t.check());
        }
        let n = o.ids.len();
        for key in keys.into_iter().map(Id::new) {
            let mut cur = start.index(n);
            let mut hops = 0;
            loop {
                let own = o.ids[cur];
                match next_hop(key, own, &o.leaf[cur], &o.table[cur], None) {
                    NextHop::Local => {
                        prop_assert_eq!(own, closest(&o.ids, key));
                        break;
                    }
                    NextHop::NoRoute => prop_assert!(false, "no route in a consistent overlay"),
                    NextHop::Forward(p, via) => {
                        let next = p.id();
                        let before = own.shared_prefix_len(key, b);
                        let after = next.shared_prefix_len(key, b);
                        let closer = key.is_closer(next, own);
                        let progress = after > before
                            || (after == before && closer)
                            || (via == Via::LeafSet && closer);
                        prop_assert!(progress, "hop {:?} -> {:?} for {:?} via {:?}", own, next, key, via);
                        if via == Via::LeafSet {
                            prop_assert_eq!(next, closest(&o.ids, key));
                        }
                        cur = o.ids.binary_search(&next).unwrap();
                        hops += 1;
                        prop_assert!(hops <= Id::digit_count(b) + 2, "route too long");
                    }
                }
            }
        }
    }

    /// Each side of the leaf set holds exactly the L/2 nearest ids inserted in that direction;
    /// removals never leave a side unordered or oversized, and re-offering the survivors
    /// restores the exact nearest set.
    #[test]
    fn leaf_set_holds_the_closest_known_ids_on_each_side(
        own in any::<u128>(),
        raw in prop::collection::vec(any::<u128>(), 0..80),
        half in 1usize..=16,
        remove in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let own = Id::new(own);
        let mut ids: Vec<Id> = raw.into_iter().map(Id::new).filter(|x| *x != own).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut leaf: LeafSet<u32> = LeafSet::new(own, 2 * half);
        for (i, id) in ids.iter().enumerate() {
            leaf.insert(Peer::new(NodeHandle::new(*id, i as u32)), Instant::ZERO);
        }
        let expect = |ids: &[Id], side: Side| -> Vec<Id> {
            let mut v = ids.to_vec();
            v.sort_by_key(|x| match side {
                Side::Cw => own.cw_distance(*x),
                Side::Ccw => x.cw_distance(own),
            });
            v.truncate(half);
            v
        };
        let have = |leaf: &LeafSet<u32>, side| leaf.side_peers(side).map(|p| p.id()).collect::<Vec<_>>();
        prop_assert_eq!(have(&leaf, Side::Cw), expect(&ids, Side::Cw));
        prop_assert_eq!(have(&leaf, Side::Ccw), expect(&ids, Side::Ccw));
        prop_assert_eq!(leaf.covers_ring(), ids.len() < 2 * half);
        if ids.is_empty() {
            return Ok(());
        }
        let mut removed = Vec::new();
        for r in remove {
            let victim = ids[r.index(ids.len())];
            leaf.remove(victim);
            removed.push(victim);
            prop_assert!(!leaf.contains(victim));
            for side in [Side::Cw, Side::Ccw] {
                let v = have(&leaf, side);
                prop_assert!(v.len() <= half);
                let d: Vec<u128> = v.iter().map(|x| match side {
                    Side::Cw => own.cw_distance(*x),
                    Side::Ccw => x.cw_distance(own),
                }).collect();
                prop_assert!(d.windows(2).all(|w| w[0] < w[1]));
            }
        }
        let survivors: Vec<Id> = ids.iter().copied().filter(|x| !removed.contains(x)).collect();
        for (i, id) in survivors.iter().enumerate() {
            leaf.insert(Peer::new(NodeHandle::new(*id, i as u32)), Instant::ZERO);
        }
        prop_assert_eq!(have(&leaf, Side::Cw), expect(&survivors, Side::Cw));
        prop_assert_eq!(have(&leaf, Side::Ccw), expect(&survivors, Side::Ccw));
    }

    /// Every message survives encoding and decoding unchanged.
    #[test]
    fn every_message_round_trips_through_the_codec(m in arb_message(), sender in any::<u128>()) {
        let d = Datagram::new(Id::new(sender), m);
        let bytes = d.to_bytes();
        prop_assert_eq!(Datagram::<SocketAddr>::decode(&bytes, 65_507), Ok(d));
    }

    /// Decoding arbitrary bytes never panics; whatever decodes re-encodes to the same bytes.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(d) = Datagram::<SocketAddr>::decode(&bytes, 1400) {
            prop_assert_eq!(d.to_bytes(), bytes);
        }
    }

    /// The same, for bytes that start like a real datagram (magic, version, a known type), so
    /// that the body decoders are reached.
    #[test]
    fn decoding_plausible_datagrams_never_panics(
        t in 1u8..=11,
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut bytes = alloc::vec![crate::wire::MAGIC, crate::wire::VERSION, t];
        bytes.extend_from_slice(&[7; 16]);
        bytes.extend_from_slice(&body);
        if let Ok(d) = Datagram::<SocketAddr>::decode(&bytes, 1400) {
            prop_assert_eq!(d.to_bytes(), bytes);
        }
    }

    /// A node fed garbage never panics, and a datagram that does not decode changes nothing
    /// but the counters of received and malformed datagrams.
    #[test]
    fn garbage_changes_no_node_state(datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let mut node: Node<SocketAddr> = Node::new(
            Config::default(),
            Id::new(42),
            SocketAddr::from(([127, 0, 0, 1], 1)),
            1,
            Instant::ZERO,
        ).unwrap();
        node.bootstrap(Instant::ZERO).unwrap();
        while node.poll_event().is_some() {}
        let from = SocketAddr::from(([127, 0, 0, 2], 2));
        for bytes in datagrams {
            let before = node.counters().clone();
            let timeout = node.poll_timeout();
            let r = node.handle_datagram(Instant::from_secs(1), from, &bytes);
            if r.is_err() {
                let after = node.counters();
                prop_assert_eq!(after.malformed, before.malformed + 1);
                prop_assert_eq!(after.datagrams_in, before.datagrams_in + 1);
                prop_assert_eq!(after.datagrams_out, before.datagrams_out);
                prop_assert!(node.poll_transmit().is_none());
                prop_assert!(node.poll_event().is_none());
                prop_assert_eq!(node.poll_timeout(), timeout);
                prop_assert_eq!(node.leaf_set().len(), 0);
                prop_assert_eq!(node.routing_table().len(), 0);
            }
            prop_assert!(node.check_invariants().is_ok());
            while node.poll_transmit().is_some() {}
            while node.poll_event().is_some() {}
        }
    }
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn arb_handle() -> impl Strategy<Value = NodeHandle<SocketAddr>> {
    (any::<u128>(), arb_addr()).prop_map(|(id, addr)| NodeHandle::new(Id::new(id), addr))
}

fn arb_leaf() -> impl Strategy<Value = LeafSetMsg<SocketAddr>> {
    (
        prop::collection::vec(arb_handle(), 0..=32),
        prop::collection::vec(arb_handle(), 0..=32),
    )
        .prop_map(|(cw, ccw)| LeafSetMsg { cw, ccw })
}

fn arb_payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

fn arb_message() -> impl Strategy<Value = Message<SocketAddr>> {
    let route = (
        any::<u32>(),
        arb_handle(),
        any::<u32>(),
        any::<u128>(),
        any::<u8>(),
        prop_oneof![
            (any::<u16>(), arb_payload())
                .prop_map(|(app, payload)| RouteBody::App { app, payload }),
            (arb_handle(), any::<u8>(), any::<u32>()).prop_map(|(joiner, next_row, tag)| {
                RouteBody::Join {
                    joiner,
                    next_row,
                    tag,
                }
            }),
            (
                any::<u32>(),
                arb_handle(),
                prop::collection::vec(
                    (0u8..128, prop::collection::vec(arb_handle(), 0..=16)),
                    0..3
                ),
                prop::option::of(arb_leaf()),
            )
                .prop_map(|(tag, joiner, rows, leaf)| RouteBody::JoinState {
                    tag,
                    joiner,
                    rows,
                    leaf
                }),
        ],
    )
        .prop_map(|(seq, origin, msg_seq, key, hops, body)| {
            Message::Route(RouteMsg {
                seq,
                origin,
                msg_seq,
                key: Id::new(key),
                hops,
                body,
            })
        });
    prop_oneof![
        (
            any::<u32>(),
            prop::option::of(arb_leaf()),
            prop::collection::vec(any::<u128>(), 0..=64),
            0u16..500,
            any::<bool>()
        )
            .prop_map(|(nonce, leaf, failed, padding, active)| Message::Probe {
                nonce,
                token: nonce.rotate_left(3),
                leaf,
                failed: failed.into_iter().map(Id::new).collect(),
                padding,
                active,
            }),
        (
            any::<u32>(),
            prop::option::of(arb_leaf()),
            any::<bool>(),
            prop_oneof![Just(0u32), any::<u32>()]
        )
            .prop_map(|(nonce, leaf, active, probe)| Message::ProbeReply {
                nonce,
                token: nonce ^ 1,
                leaf,
                active,
                probe,
            }),
        arb_leaf().prop_map(|leaf| Message::Heartbeat { leaf }),
        route,
        any::<u32>().prop_map(|seq| Message::Ack { seq }),
        (any::<u32>(), any::<u32>(), any::<u16>(), arb_payload()).prop_map(
            |(seq, msg_seq, app, payload)| Message::Direct {
                seq,
                msg_seq,
                app,
                payload
            }
        ),
        (0u16..100).prop_map(|padding| Message::JoinRequest { padding }),
        (arb_handle(), arb_leaf()).prop_map(|(root, leaf)| Message::JoinReply { root, leaf }),
        (0u8..128, 0u16..300).prop_map(|(row, padding)| Message::RowRequest { row, padding }),
        (
            prop::collection::vec(
                (0u8..128, prop::collection::vec(arb_handle(), 0..=16)),
                0..8
            ),
            any::<bool>(),
            any::<u16>(),
            any::<u32>()
        )
            .prop_map(|(rows, hinted, base, probe)| {
                let n: usize = rows.iter().map(|(_, e)| e.len()).sum();
                let hints = if hinted {
                    (0..n).map(|i| base.wrapping_add(i as u16)).collect()
                } else {
                    Vec::new()
                };
                Message::Rows { rows, hints, probe }
            }),
        (any::<u32>(), arb_leaf()).prop_map(|(seq, leaf)| Message::Leave { seq, leaf }),
    ]
}
