//! A graceful shutdown: the node tells its leaf set, so that lookups for its keys land at the
//! next closest node at once; the handle and the event stream then report the stop.

mod common;

use std::time::{Duration, Instant};

use common::{Rng, check_lookups, closest, ring, within};
use futures_lite::StreamExt;
use pastry_smol::{Driver, Event, JoinError, LeafChange, LookupError, RouteError};

#[test]
fn after_a_shutdown_lookups_for_its_keys_land_at_the_next_closest_node() {
    let seed = common::seed(0x5eed_0003);
    let mut rng = Rng::new(seed);
    let spawn = |d: Driver| smol::spawn(d).detach();
    smol::block_on(async {
        let mut nodes = ring(common::loopback(), 24, &mut rng, &spawn).await;
        // A node in the middle of the join order: it has a routing table and is in others'.
        let victim = nodes.remove(1 + rng.below(nodes.len() - 1));
        let victim_id = victim.id();
        let mut victim_events = victim.events();
        // Its neighbours, who must hear of the leave.
        let neighbours: Vec<_> = victim
            .leaf_set()
            .await
            .unwrap()
            .members()
            .map(|p| p.handle.id)
            .collect();
        let neighbour_events: Vec<_> = nodes
            .iter()
            .filter(|n| neighbours.contains(&n.id()))
            .map(|n| n.events())
            .collect();
        assert_eq!(neighbour_events.len(), neighbours.len());

        let started = Instant::now();
        within(Duration::from_secs(5), victim.shutdown())
            .await
            .expect("shutdown within 5 s")
            .expect("leave confirmed");
        let took = started.elapsed();
        println!("shutdown of {victim_id} took {took:?}");
        assert!(victim.is_stopped());

        // The leave was acknowledged: every neighbour has dropped the node already.
        for n in &nodes {
            let leaf = n.leaf_set().await.unwrap();
            assert!(
                !leaf.contains(victim_id),
                "{} still lists {victim_id}",
                n.id()
            );
        }
        for events in &neighbour_events {
            let mut saw = false;
            while let Some(e) = events.try_recv() {
                if let Event::LeafSet { node, change } = e {
                    saw |= node.id == victim_id && change == LeafChange::Left;
                }
            }
            assert!(saw, "a neighbour saw no Left event for {victim_id}");
        }

        // Lookups for its id (and next to it) from every other node land at the next
        // closest node, quickly.
        let members: Vec<_> = nodes.iter().map(|n| n.local().clone()).collect();
        let started = Instant::now();
        for from in &nodes {
            for key in [
                victim_id,
                victim_id.wrapping_add(1),
                victim_id.wrapping_sub(1),
            ] {
                let (root, _) = within(Duration::from_secs(2), from.lookup(key))
                    .await
                    .expect("lookup within 2 s")
                    .expect("lookup answered");
                assert_eq!(root, closest(key, &members), "key {key} from {}", from.id());
            }
        }
        println!(
            "{} lookups for the departed node's keys answered in {:?}",
            nodes.len() * 3,
            started.elapsed()
        );
        check_lookups(&nodes, &members, 200, &mut rng).await;

        // The stopped handle: every call reports it, shutdown is idempotent, and the event
        // stream ends after the Left event.
        assert_eq!(
            victim.route(victim_id, 0, vec![]).await,
            Err(RouteError::Stopped)
        );
        assert_eq!(victim.lookup(victim_id).await, Err(LookupError::Stopped));
        assert_eq!(
            victim.join(nodes[0].local_addr()).await,
            Err(JoinError::Stopped)
        );
        assert!(victim.counters().await.is_err());
        assert_eq!(victim.shutdown().await, Ok(()));
        let mut last = None;
        while let Some(e) = victim_events.next().await {
            last = Some(e);
        }
        assert_eq!(last, Some(Event::Left));

        for n in &nodes {
            n.shutdown().await.unwrap();
        }
    });
}

#[test]
fn dropping_every_handle_leaves_the_ring() {
    let seed = common::seed(0x5eed_0004);
    let mut rng = Rng::new(seed);
    let spawn = |d: Driver| smol::spawn(d).detach();
    smol::block_on(async {
        let mut nodes = ring(common::loopback(), 8, &mut rng, &spawn).await;
        let gone = nodes.pop().unwrap();
        let gone_id = gone.id();
        let events = gone.events();
        drop(gone);
        // The driver leaves, then stops: the stream ends after Left.
        let mut last = None;
        while let Some(e) = within(Duration::from_secs(5), events.recv())
            .await
            .expect("the driver stops")
        {
            last = Some(e);
        }
        assert_eq!(last, Some(Event::Left));
        for n in &nodes {
            assert!(!n.leaf_set().await.unwrap().contains(gone_id));
        }
    });
}
