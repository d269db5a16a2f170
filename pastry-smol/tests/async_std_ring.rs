//! 32 nodes under async-std: joins one after another, then 200 lookups that must each reach
//! the node numerically closest to their key.

mod common;

use std::time::Instant;

use common::{Rng, check_lookups, hop_summary, ring};
use pastry_smol::Driver;

#[async_std::test]
async fn thirty_two_nodes_under_async_std_answer_every_lookup_at_the_closest_node() {
    let seed = common::seed(0x5eed_0002);
    let mut rng = Rng::new(seed);
    let spawn = |d: Driver| {
        async_std::task::spawn(d);
    };
    let started = Instant::now();
    let nodes = ring(common::loopback(), 32, &mut rng, &spawn).await;
    let joined = started.elapsed();
    let members: Vec<_> = nodes.iter().map(|n| n.local().clone()).collect();
    let started = Instant::now();
    let hops = check_lookups(&nodes, &members, 200, &mut rng).await;
    let (mean, max) = hop_summary(&hops);
    println!(
        "32 nodes joined in {joined:?}; 200/200 lookups at the closest node in {:?}, \
         mean {mean:.2} hops, max {max}",
        started.elapsed()
    );
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
    assert!(nodes.iter().all(|n| n.is_stopped()));
}
