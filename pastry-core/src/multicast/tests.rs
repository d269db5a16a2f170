//! The multicast codec and the rules of a single node; whole rings are exercised in
//! `pastry-sim/tests/multicast.rs`.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::wire::DecodeError;
use crate::{Config, Node};

fn all_messages() -> Vec<MulticastMsg> {
    vec![
        MulticastMsg::Join {
            group: Id::new(1),
            nonce: 2,
        },
        MulticastMsg::Publish {
            group: Id::new(3),
            payload: b"abc".to_vec(),
        },
        MulticastMsg::Adopted {
            group: Id::new(4),
            nonce: u32::MAX,
            path: vec![Id::new(5), Id::new(u128::MAX)],
        },
        MulticastMsg::Path {
            group: Id::new(6),
            path: vec![],
        },
        MulticastMsg::Data {
            group: Id::new(7),
            publisher: Id::new(8),
            seq: 9,
            payload: vec![0; 40],
        },
        MulticastMsg::Refresh {
            groups: vec![Id::new(10), Id::new(11)],
        },
        MulticastMsg::Leave {
            groups: vec![Id::new(12)],
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for m in all_messages() {
        assert_eq!(MulticastMsg::decode(&m.encode()), Ok(m.clone()), "{m:?}");
    }
}

#[test]
fn truncated_extended_or_foreign_bytes_are_refused() {
    for m in all_messages() {
        let bytes = m.encode();
        for cut in 0..bytes.len() {
            assert!(
                MulticastMsg::decode(&bytes[..cut]).is_err(),
                "{m:?} cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            MulticastMsg::decode(&longer),
            Err(DecodeError::Invalid("trailing bytes"))
        );
        let mut other = bytes;
        other[0] = WIRE_VERSION + 1;
        assert_eq!(
            MulticastMsg::decode(&other),
            Err(DecodeError::UnknownVersion(WIRE_VERSION + 1))
        );
    }
    assert_eq!(
        MulticastMsg::decode(&[WIRE_VERSION, 0]),
        Err(DecodeError::UnknownType(0))
    );
    // A count beyond the bytes present allocates nothing and fails; one beyond the bound
    // fails before the bytes are looked at.
    let mut refresh = vec![WIRE_VERSION, 6];
    refresh.extend_from_slice(&1000u16.to_be_bytes());
    assert_eq!(MulticastMsg::decode(&refresh), Err(DecodeError::Truncated));
    let mut refresh = vec![WIRE_VERSION, 6];
    refresh.extend_from_slice(&(MAX_GROUPS as u16 + 1).to_be_bytes());
    assert_eq!(
        MulticastMsg::decode(&refresh),
        Err(DecodeError::Invalid("list too long"))
    );
    let mut path = vec![WIRE_VERSION, 4];
    path.extend_from_slice(&[0; 16]);
    path.push(MAX_PATH as u8 + 1);
    path.extend_from_slice(&vec![0; 16 * (MAX_PATH + 1)]);
    assert_eq!(
        MulticastMsg::decode(&path),
        Err(DecodeError::Invalid("path too long"))
    );
}

#[test]
fn encoding_keeps_the_nearest_ancestors_of_a_long_path() {
    let path: Vec<Id> = (0..MAX_PATH as u128 + 5).map(Id::new).collect();
    let m = MulticastMsg::Path {
        group: Id::new(1),
        path: path.clone(),
    };
    let Ok(MulticastMsg::Path { path: got, .. }) = MulticastMsg::decode(&m.encode()) else {
        panic!("a long path encodes to a valid message");
    };
    assert_eq!(got, path[5..]);
}

proptest! {
    /// Whatever decodes re-encodes to the same bytes; nothing panics. The bytes start with
    /// the version and a type (most of the time a known one), so that decoding gets past the
    /// first check.
    #[test]
    fn decoding_arbitrary_bytes_is_total(
        t in 0u8..9,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![WIRE_VERSION, t];
        bytes.extend_from_slice(&body);
        if let Ok(m) = MulticastMsg::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
        }
    }

    /// Every valid message, corrupted in one byte, either decodes to something that
    /// re-encodes to the corrupted bytes or is refused.
    #[test]
    fn corrupted_messages_are_refused_or_canonical(i in 0usize..7, at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = all_messages()[i].encode();
        let at = at % bytes.len();
        bytes[at] = byte;
        if let Ok(m) = MulticastMsg::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
        }
    }
}

const APP: u16 = 4;

fn lone_node(cfg: MulticastConfig) -> Node<u32> {
    let mut node: Node<u32> =
        Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    node.register(APP, Box::new(Multicast::<u32>::new(cfg).unwrap()))
        .unwrap();
    node.bootstrap(Instant::ZERO).unwrap();
    node
}

fn call<R>(
    node: &mut Node<u32>,
    f: impl FnOnce(&mut Multicast<u32>, &mut Context<'_, u32>) -> R,
) -> R {
    node.with_app(Instant::ZERO, APP, f).unwrap()
}

fn events(node: &mut Node<u32>) -> Vec<MulticastEvent> {
    call(node, |m, _| {
        core::iter::from_fn(|| m.poll_event()).collect()
    })
}

#[test]
fn a_lone_node_is_the_root_and_hears_its_own_messages_once() {
    let mut node = lone_node(MulticastConfig::default());
    let g = Id::new(42);
    call(&mut node, |m, ctx| m.subscribe(ctx, g)).unwrap();
    let id = call(&mut node, |m, ctx| m.publish(ctx, g, b"one".to_vec())).unwrap();
    assert_eq!(
        events(&mut node),
        vec![
            MulticastEvent::Attached { group: g },
            MulticastEvent::Received {
                group: g,
                publisher: Id::new(5),
                seq: id.seq,
                payload: b"one".to_vec(),
            },
        ]
    );
    let app = node.app::<Multicast<u32>>(APP).unwrap();
    assert!(app.is_root(g) && app.is_member(g));
    assert_eq!(app.stats().received, 1);
    app.check_invariants().unwrap();
    // Unsubscribed, the root has no tree left, and a publish finds none.
    call(&mut node, |m, ctx| m.unsubscribe(ctx, g));
    call(&mut node, |m, ctx| m.publish(ctx, g, b"two".to_vec())).unwrap();
    let app = node.app::<Multicast<u32>>(APP).unwrap();
    assert_eq!(app.groups().count(), 0);
    assert_eq!(app.stats().no_tree, 1);
    assert!(events(&mut node).is_empty());
}

#[test]
fn limits_are_enforced() {
    let mut node = lone_node(MulticastConfig {
        max_groups: 2,
        max_events: 3,
        ..MulticastConfig::default()
    });
    call(&mut node, |m, ctx| m.subscribe(ctx, Id::new(1))).unwrap();
    call(&mut node, |m, ctx| m.subscribe(ctx, Id::new(2))).unwrap();
    assert_eq!(
        call(&mut node, |m, ctx| m.subscribe(ctx, Id::new(3))),
        Err(MulticastError::TooManyGroups)
    );
    let max = call(&mut node, |_, ctx| Multicast::<u32>::max_payload(ctx));
    assert!(matches!(
        call(&mut node, |m, ctx| m.publish(
            ctx,
            Id::new(1),
            vec![0; max + 1]
        )),
        Err(MulticastError::TooLarge { .. })
    ));
    call(&mut node, |m, ctx| m.publish(ctx, Id::new(1), vec![0; max])).unwrap();
    // Two attachments and a message are three events; two more push the oldest out.
    for _ in 0..2 {
        call(&mut node, |m, ctx| m.publish(ctx, Id::new(1), vec![1])).unwrap();
    }
    let app = node.app::<Multicast<u32>>(APP).unwrap();
    assert_eq!(app.stats().events_dropped, 2);
    app.check_invariants().unwrap();
    assert_eq!(events(&mut node).len(), 3);
}

#[test]
fn malformed_and_misdirected_payloads_are_counted_and_change_nothing() {
    let mut node = lone_node(MulticastConfig::default());
    let g = Id::new(42);
    call(&mut node, |m, ctx| m.subscribe(ctx, g)).unwrap();
    let _ = events(&mut node);
    let now = Instant::ZERO;
    // Routed to ourselves: delivered here.
    for bytes in [
        vec![],
        vec![WIRE_VERSION, 99],
        vec![WIRE_VERSION + 1, 1],
        // A publish whose key is not its group.
        MulticastMsg::Publish {
            group: Id::new(43),
            payload: vec![1],
        }
        .encode(),
        // Direct-only messages, routed.
        MulticastMsg::Leave { groups: vec![g] }.encode(),
    ] {
        node.route(now, g, APP, bytes).unwrap();
    }
    let app = node.app::<Multicast<u32>>(APP).unwrap();
    assert_eq!((app.stats().malformed, app.stats().rejected), (3, 2));
    assert!(app.is_root(g) && app.is_member(g));
    assert_eq!(app.stats().received, 0);
    assert!(events(&mut node).is_empty());
}

#[test]
fn config_validation() {
    let ok = MulticastConfig::default();
    assert!(ok.validate().is_ok());
    let c = MulticastConfig {
        child_timeout: ok.refresh_period,
        ..ok.clone()
    };
    assert_eq!(c.validate(), Err(MulticastConfigError::TimeoutTooShort));
    let c = MulticastConfig {
        join_timeout: Duration::from_secs(2 * 86_400),
        ..ok
    };
    assert_eq!(
        c.validate(),
        Err(MulticastConfigError::TooLong("join_timeout"))
    );
}

/// A peer of the lone node, at address 30.
fn peer() -> NodeHandle<u32> {
    NodeHandle::new(Id::new(77 << 100), 30)
}

/// Delivers `msg` to the node as a direct message from `from`.
fn direct_from(node: &mut Node<u32>, from: &NodeHandle<u32>, seq: u32, msg: &MulticastMsg) {
    let d = crate::wire::Datagram::<u32>::new(
        from.id,
        crate::wire::Message::Direct {
            seq,
            msg_seq: seq,
            app: APP,
            payload: msg.encode(),
        },
    );
    let _ = node.handle_datagram(Instant::ZERO, from.addr, &d.to_bytes());
}

/// Puts the node's `group` in the given state (and a member).
fn set_up(node: &mut Node<u32>, group: Id, up: Up<u32>, path: Vec<Id>) {
    call(node, |m, ctx| {
        m.groups.insert(group, Group::new(true, ctx.now()));
        let g = m.groups.get_mut(&group).unwrap();
        g.up = up;
        g.path = path;
    });
}

fn up_of(node: &Node<u32>, group: Id) -> Up<u32> {
    node.app::<Multicast<u32>>(APP).unwrap().groups[&group]
        .up
        .clone()
}

#[test]
fn an_adoption_by_a_descendant_is_refused() {
    let me = Id::new(5);
    let g = Id::new(42 << 100);
    for path in [
        vec![Id::new(1), me, peer().id],
        // As long as a path can be told: a loop going round.
        (0..MAX_PATH as u128).map(|i| Id::new(1000 + i)).collect(),
    ] {
        let mut node = lone_node(MulticastConfig::default());
        let joining = Up::Joining {
            nonce: 7,
            since: Instant::ZERO,
        };
        set_up(&mut node, g, joining, vec![]);
        let rejected = node.app::<Multicast<u32>>(APP).unwrap().stats().rejected;
        let adopted = MulticastMsg::Adopted {
            group: g,
            nonce: 7,
            path,
        };
        direct_from(&mut node, &peer(), 1, &adopted);
        assert!(matches!(up_of(&node, g), Up::Joining { .. }));
        let app = node.app::<Multicast<u32>>(APP).unwrap();
        assert_eq!(app.stats().rejected, rejected + 1);
    }
    // The same adoption with a path above this node is taken.
    let mut node = lone_node(MulticastConfig::default());
    let joining = Up::Joining {
        nonce: 7,
        since: Instant::ZERO,
    };
    set_up(&mut node, g, joining, vec![]);
    let adopted = MulticastMsg::Adopted {
        group: g,
        nonce: 7,
        path: vec![Id::new(1), peer().id],
    };
    direct_from(&mut node, &peer(), 1, &adopted);
    assert!(matches!(up_of(&node, g), Up::Parent { node, .. } if node == peer()));
    let app = node.app::<Multicast<u32>>(APP).unwrap();
    assert_eq!(app.path_of(g), Some(&[Id::new(1), peer().id][..]));
}

#[test]
fn a_path_through_this_node_makes_it_join_again() {
    let me = Id::new(5);
    let g = Id::new(42 << 100);
    let mut node = lone_node(MulticastConfig::default());
    let parent = Up::Parent {
        node: peer(),
        since: Instant::ZERO,
        realign: None,
    };
    set_up(&mut node, g, parent, vec![peer().id]);
    let repairs = node.app::<Multicast<u32>>(APP).unwrap().stats().repairs;
    // A path from somebody else changes nothing.
    let other = NodeHandle::new(Id::new(88 << 100), 31);
    let path = MulticastMsg::Path {
        group: g,
        path: vec![me, peer().id],
    };
    direct_from(&mut node, &other, 1, &path);
    assert!(matches!(up_of(&node, g), Up::Parent { .. }));
    // From the parent, it means the tree above closed into a loop through this node: it
    // leaves that parent and joins again (alone in its ring, it becomes the root).
    direct_from(&mut node, &peer(), 2, &path);
    assert!(matches!(up_of(&node, g), Up::Root));
    let app = node.app::<Multicast<u32>>(APP).unwrap();
    assert_eq!(app.stats().repairs, repairs + 1);
}

#[test]
fn ancestors_and_known_children_at_other_addresses_are_not_adopted() {
    let g = Id::new(42 << 100);
    let mut node = lone_node(MulticastConfig::default());
    let ancestor = NodeHandle::new(Id::new(99 << 100), 32);
    let parent = Up::Parent {
        node: peer(),
        since: Instant::ZERO,
        realign: None,
    };
    set_up(&mut node, g, parent, vec![ancestor.id, peer().id]);
    let child = NodeHandle::new(Id::new(66 << 100), 33);
    let outcomes = call(&mut node, |m, ctx| {
        [
            m.adopt(ctx, g, &ancestor, 1, false),
            m.adopt(ctx, g, &peer(), 2, false),
            m.adopt(ctx, g, &child, 3, false),
            // The child's id at another address: a claim, not taken.
            m.adopt(ctx, g, &NodeHandle::new(child.id, 34), 4, false),
            // The child again at its own address: adopted again.
            m.adopt(ctx, g, &child, 5, false),
        ]
    });
    assert_eq!(outcomes, [false, false, true, false, true]);
    let app = node.app::<Multicast<u32>>(APP).unwrap();
    assert_eq!(app.children(g).cloned().collect::<Vec<_>>(), vec![child]);
}

#[test]
fn forwarding_keeps_a_quarter_of_the_groups_for_subscriptions() {
    let mut node = lone_node(MulticastConfig {
        max_groups: 8,
        ..MulticastConfig::default()
    });
    let child = peer();
    let adopted = call(&mut node, |m, ctx| {
        (0..8u128)
            .filter(|i| m.adopt(ctx, Id::new((i + 1) << 100), &child, 1, false))
            .count()
    });
    assert_eq!(adopted, 6);
    for i in 0..2u128 {
        call(&mut node, |m, ctx| {
            m.subscribe(ctx, Id::new((i + 100) << 100))
        })
        .unwrap();
    }
    assert_eq!(
        call(&mut node, |m, ctx| m.subscribe(ctx, Id::new(200 << 100))),
        Err(MulticastError::TooManyGroups)
    );
    node.app::<Multicast<u32>>(APP)
        .unwrap()
        .check_invariants()
        .unwrap();
}

#[test]
fn a_small_max_groups_still_keeps_room_for_a_subscription() {
    let mut node = lone_node(MulticastConfig {
        max_groups: 3,
        ..MulticastConfig::default()
    });
    let adopted = call(&mut node, |m, ctx| {
        (0..3u128)
            .filter(|i| m.adopt(ctx, Id::new((i + 1) << 100), &peer(), 1, false))
            .count()
    });
    assert_eq!(adopted, 2);
    call(&mut node, |m, ctx| m.subscribe(ctx, Id::new(200 << 100))).unwrap();
}

#[test]
fn a_realignment_answered_from_below_is_refused() {
    let (me, g) = (Id::new(5), Id::new(42 << 100));
    let child = NodeHandle::new(Id::new(66 << 100), 33);
    let other = NodeHandle::new(Id::new(88 << 100), 31);
    for (from, path) in [
        // The node's own child.
        (child.clone(), vec![Id::new(1), child.id]),
        // A node whose ancestors include this node.
        (other.clone(), vec![Id::new(1), me, other.id]),
    ] {
        let mut node = lone_node(MulticastConfig::default());
        let up = Up::Parent {
            node: peer(),
            since: Instant::ZERO,
            realign: Some(9),
        };
        set_up(&mut node, g, up, vec![Id::new(1), peer().id]);
        assert!(call(&mut node, |m, ctx| m.adopt(ctx, g, &child, 1, false)));
        let adopted = MulticastMsg::Adopted {
            group: g,
            nonce: 9,
            path,
        };
        direct_from(&mut node, &from, 1, &adopted);
        assert!(matches!(up_of(&node, g), Up::Parent { node, .. } if node == peer()));
        assert_eq!(
            node.app::<Multicast<u32>>(APP).unwrap().stats().realigned,
            0
        );
    }
    // From a node above, the same answer moves this node there.
    let mut node = lone_node(MulticastConfig::default());
    let up = Up::Parent {
        node: peer(),
        since: Instant::ZERO,
        realign: Some(9),
    };
    set_up(&mut node, g, up, vec![Id::new(1), peer().id]);
    let adopted = MulticastMsg::Adopted {
        group: g,
        nonce: 9,
        path: vec![Id::new(1), other.id],
    };
    direct_from(&mut node, &other, 1, &adopted);
    assert!(matches!(up_of(&node, g), Up::Parent { node, .. } if node == other));
    assert_eq!(
        node.app::<Multicast<u32>>(APP).unwrap().stats().realigned,
        1
    );
}

#[test]
fn after_shutdown_the_node_takes_part_in_no_tree() {
    let mut node = lone_node(MulticastConfig::default());
    let g = Id::new(42 << 100);
    call(&mut node, |m, ctx| m.subscribe(ctx, g)).unwrap();
    call(&mut node, |m, ctx| m.shutdown(ctx));
    assert_eq!(
        call(&mut node, |m, ctx| m.subscribe(ctx, g)),
        Err(MulticastError::ShutDown)
    );
    assert!(!call(&mut node, |m, ctx| m.adopt(
        ctx,
        g,
        &peer(),
        1,
        false
    )));
    let app = node.app::<Multicast<u32>>(APP).unwrap();
    assert_eq!(app.groups().count(), 0);
    app.check_invariants().unwrap();
}
