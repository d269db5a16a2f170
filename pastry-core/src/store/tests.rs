//! The store's codec and the rules by which it takes values; whole rings are exercised in
//! `pastry-sim/tests/store.rs`.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::wire::DecodeError;
use crate::{Config, Node};

fn all_messages() -> Vec<StoreMsg<u32>> {
    let h = NodeHandle::new(Id::new(77), 9u32);
    vec![
        StoreMsg::Insert {
            request: 1,
            key: Id::new(2),
            version: 3,
            value: b"abc".to_vec(),
        },
        StoreMsg::Get {
            request: 4,
            key: Id::new(5),
            cached_ok: true,
            last: Some(h.clone()),
        },
        StoreMsg::Get {
            request: 4,
            key: Id::new(5),
            cached_ok: false,
            last: None,
        },
        StoreMsg::Stored {
            request: 6,
            key: Id::new(7),
            version: 8,
            status: Status::Outdated,
        },
        StoreMsg::Found {
            request: 9,
            key: Id::new(10),
            version: 11,
            cached: true,
            value: vec![0; 40],
        },
        StoreMsg::Missing {
            request: 12,
            key: Id::new(13),
        },
        StoreMsg::Replica {
            key: Id::new(14),
            version: u64::MAX,
            value: vec![],
        },
        StoreMsg::CacheCopy {
            key: Id::new(15),
            version: 0,
            value: b"x".to_vec(),
        },
        StoreMsg::GetFallback {
            request: 16,
            key: Id::new(17),
            cached_ok: true,
            left: 2,
            origin: h,
        },
        StoreMsg::Have {
            entries: vec![(Id::new(18), 19), (Id::new(u128::MAX), 0)],
        },
        StoreMsg::Want {
            keys: vec![Id::new(20)],
        },
        StoreMsg::Check {
            entries: vec![(Id::new(21), 22)],
        },
        StoreMsg::Held {
            keys: vec![Id::new(23), Id::new(24)],
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for m in all_messages() {
        assert_eq!(StoreMsg::decode(&m.encode()), Ok(m.clone()), "{m:?}");
    }
}

#[test]
fn truncated_extended_or_foreign_bytes_are_refused() {
    for m in all_messages() {
        let bytes = m.encode();
        for cut in 0..bytes.len() {
            assert!(
                StoreMsg::<u32>::decode(&bytes[..cut]).is_err(),
                "{m:?} cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            StoreMsg::<u32>::decode(&longer),
            Err(DecodeError::Invalid("trailing bytes"))
        );
        let mut other = bytes;
        other[0] = WIRE_VERSION + 1;
        assert_eq!(
            StoreMsg::<u32>::decode(&other),
            Err(DecodeError::UnknownVersion(WIRE_VERSION + 1))
        );
    }
    assert_eq!(
        StoreMsg::<u32>::decode(&[WIRE_VERSION, 0]),
        Err(DecodeError::UnknownType(0))
    );
    // A count beyond the bytes present allocates nothing and fails.
    let mut have = vec![WIRE_VERSION, 9];
    have.extend_from_slice(&1000u16.to_be_bytes());
    assert_eq!(StoreMsg::<u32>::decode(&have), Err(DecodeError::Truncated));
}

proptest! {
    /// Whatever decodes re-encodes to the same bytes; nothing panics. The bytes start with
    /// the version and a type (most of the time a known one), so that decoding gets past the
    /// first check.
    #[test]
    fn decoding_arbitrary_bytes_is_total(
        t in 0u8..14,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![WIRE_VERSION, t];
        bytes.extend_from_slice(&body);
        if let Ok(m) = StoreMsg::<u32>::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
        }
    }

    /// Every valid message, corrupted in one byte, either decodes to something that
    /// re-encodes to the corrupted bytes or is refused.
    #[test]
    fn corrupted_messages_are_refused_or_canonical(i in 0usize..13, at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = all_messages()[i].encode();
        let at = at % bytes.len();
        bytes[at] = byte;
        if let Ok(m) = StoreMsg::<u32>::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
        }
    }
}

fn store() -> Store<u32> {
    Store::new(StoreConfig {
        max_items: 2,
        max_bytes: 10,
        ..StoreConfig::default()
    })
    .unwrap()
}

#[test]
fn the_highest_version_wins_and_equal_versions_keep_the_first_value() {
    let mut s = store();
    assert_eq!(s.take(Id::new(1), 5, b"five".to_vec()), Taken::Stored);
    assert_eq!(s.take(Id::new(1), 4, b"four".to_vec()), Taken::Older(5));
    assert_eq!(s.take(Id::new(1), 5, b"five".to_vec()), Taken::Same);
    // Another value under a version already held: refused, as if older.
    assert_eq!(s.take(Id::new(1), 5, b"other".to_vec()), Taken::Older(5));
    assert_eq!(s.replica(Id::new(1)), Some((5, &b"five"[..])));
    assert_eq!(s.take(Id::new(1), 6, b"six".to_vec()), Taken::Stored);
    assert_eq!(s.replica(Id::new(1)), Some((6, &b"six"[..])));
    assert_eq!(s.bytes, 3);
}

#[test]
fn a_full_store_refuses_new_keys_but_takes_newer_versions_that_fit() {
    let mut s = store();
    assert_eq!(s.take(Id::new(1), 1, b"aaaa".to_vec()), Taken::Stored);
    assert_eq!(s.take(Id::new(2), 1, b"bbbb".to_vec()), Taken::Stored);
    // Two items is the limit.
    assert_eq!(s.take(Id::new(3), 1, b"c".to_vec()), Taken::Refused);
    // Ten bytes is the limit: 4 + 7 > 10, 4 + 6 fits.
    assert_eq!(s.take(Id::new(2), 2, b"bbbbbbb".to_vec()), Taken::Refused);
    assert_eq!(s.take(Id::new(2), 2, b"bbbbbb".to_vec()), Taken::Stored);
    assert_eq!((s.len(), s.bytes, s.stats().full), (2, 10, 2));
}

#[test]
fn the_validator_sees_every_value_taken() {
    let mut s = store().with_validator(Box::new(|key: Id, _, v: &[u8]| {
        v.len() as u128 == key.as_u128()
    }));
    assert_eq!(s.take(Id::new(3), 1, b"abc".to_vec()), Taken::Stored);
    assert_eq!(s.take(Id::new(2), 1, b"abc".to_vec()), Taken::Refused);
    assert_eq!((s.len(), s.stats().rejected), (1, 1));
}

#[test]
fn cached_copies_are_bounded_and_evict_the_least_recently_used() {
    let mut s: Store<u32> = Store::new(StoreConfig {
        cache_items: 2,
        ..StoreConfig::default()
    })
    .unwrap();
    let t = Instant::ZERO;
    s.cache_copy(t, Id::new(1), 1, b"1".to_vec());
    s.cache_copy(t, Id::new(2), 1, b"2".to_vec());
    // Using key 1 makes key 2 the one to go.
    assert!(s.local(t, Id::new(1), true).is_some());
    s.cache_copy(t, Id::new(3), 1, b"3".to_vec());
    assert_eq!(s.cached_len(), 2);
    assert!(s.local(t, Id::new(2), true).is_none());
    assert!(
        s.local(t, Id::new(1), false).is_none(),
        "a fresh get skips copies"
    );
    let later = t + s.cfg.cache_ttl;
    assert!(s.local(later, Id::new(3), true).is_none(), "expired");
}

#[test]
fn malformed_payloads_are_counted_and_change_nothing() {
    const APP: u16 = 3;
    let mut node: Node<u32> =
        Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    node.register(APP, Box::new(store())).unwrap();
    node.bootstrap(Instant::ZERO).unwrap();
    // Routed to ourselves: delivered here, to the store.
    for bytes in [
        vec![],
        vec![WIRE_VERSION],
        vec![9, 9, 9],
        vec![WIRE_VERSION, 1, 0],
    ] {
        node.route(Instant::ZERO, Id::new(9), APP, bytes).unwrap();
    }
    let (malformed, len, pending) = node
        .with_app(Instant::ZERO, APP, |s: &mut Store<u32>, _| {
            (s.stats().malformed, s.len(), s.pending.len())
        })
        .unwrap();
    assert_eq!((malformed, len, pending), (4, 0, 0));
}

#[test]
fn alone_a_node_stores_and_answers_itself() {
    const APP: u16 = 3;
    let mut node: Node<u32> =
        Node::new(Config::default(), Id::new(5), 1, 1, Instant::ZERO).unwrap();
    node.register(APP, Box::new(store())).unwrap();
    node.bootstrap(Instant::ZERO).unwrap();
    let t = Instant::ZERO;
    let run = |node: &mut Node<u32>, f: &mut dyn FnMut(&mut Store<u32>, &mut Context<'_, u32>)| {
        node.with_app(t, APP, |s: &mut Store<u32>, ctx| f(s, ctx))
            .unwrap()
    };
    run(&mut node, &mut |s, ctx| {
        s.insert(ctx, Id::new(1), 2, b"v2".to_vec()).unwrap();
        s.insert(ctx, Id::new(1), 1, b"v1".to_vec()).unwrap();
        s.get(ctx, Id::new(1)).unwrap();
        s.get(ctx, Id::new(2)).unwrap();
    });
    let events: Vec<StoreEvent> = node
        .with_app(t, APP, |s: &mut Store<u32>, _| {
            core::iter::from_fn(|| s.poll_event()).collect()
        })
        .unwrap();
    assert!(
        matches!(events[0], StoreEvent::Inserted { version: 2, root, .. } if root == Id::new(5))
    );
    assert!(matches!(events[1], StoreEvent::Outdated { stored: 2, .. }));
    assert!(
        matches!(&events[2], StoreEvent::Found { version: 2, value, cached: false, .. } if value == b"v2")
    );
    assert!(matches!(events[3], StoreEvent::NotFound { .. }));
    assert_eq!(events.len(), 4);
    // Too large a value is refused before anything is sent.
    let big = node
        .with_app(t, APP, |s: &mut Store<u32>, ctx| {
            s.insert(ctx, Id::new(1), 3, vec![0; 5000])
        })
        .unwrap();
    assert!(matches!(
        big,
        Err(StoreError::ValueTooLarge { len: 5000, .. })
    ));
}
