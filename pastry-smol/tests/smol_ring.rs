//! 32 nodes under smol: joins one after another, then 1,000 lookups that must each reach the
//! node numerically closest to their key.

mod common;

use std::time::Instant;

use common::{Rng, check_lookups, hop_summary, ring};
use pastry_smol::Driver;

#[test]
fn thirty_two_nodes_under_smol_answer_every_lookup_at_the_closest_node() {
    let seed = common::seed(0x5eed_0001);
    let mut rng = Rng::new(seed);
    let spawn = |d: Driver| smol::spawn(d).detach();
    smol::block_on(async {
        let started = Instant::now();
        let nodes = ring(common::loopback(), 32, &mut rng, &spawn).await;
        let joined = started.elapsed();
        let members: Vec<_> = nodes.iter().map(|n| n.local().clone()).collect();
        for n in &nodes {
            assert!(n.is_active().await.unwrap());
            assert_eq!(n.io_counters().send_errors, 0);
        }
        let started = Instant::now();
        let hops = check_lookups(&nodes, &members, 1000, &mut rng).await;
        let (mean, max) = hop_summary(&hops);
        println!(
            "32 nodes joined in {joined:?}; 1000/1000 lookups at the closest node in {:?}, \
             mean {mean:.2} hops, max {max}",
            started.elapsed()
        );
        // Lookups in flight at once: 8 tasks of 50, on the same nodes.
        let started = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let nodes = nodes.clone();
                let members = members.clone();
                let mut rng = Rng::new(seed ^ (t + 1) << 40);
                smol::spawn(async move { check_lookups(&nodes, &members, 50, &mut rng).await })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        println!("400 concurrent lookups correct in {:?}", started.elapsed());
        // Every leaf set is full and the routing tables hold something.
        for n in &nodes {
            assert_eq!(n.leaf_set().await.unwrap().len(), 16, "{}", n.id());
            assert!(!n.routing_table().await.unwrap().is_empty());
        }
        for n in &nodes {
            n.shutdown().await.unwrap();
        }
    });
}
