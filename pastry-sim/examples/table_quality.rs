//! How close the routing tables are to perfect proximity neighbour selection, over time.
//!
//! Builds a ring as `pastry-sim` does (concurrent joins, each through the nearest of 256
//! sampled members), lets it run, and at each checkpoint compares every cell of rows 0 to 2 of
//! every active node with the nearest live, active node that fits the cell: the share of cells
//! that hold it, and the mean ratio of the entry's latency to the best one.
//!
//! ```text
//! cargo run --release -p pastry-sim --example table_quality -- 10000 3600,7200,14400 sphere 1
//! ```
//! Arguments: nodes (default 10,000), checkpoints in simulated seconds (default 3600),
//! topology (default sphere), seed (default 1).

use std::collections::HashMap;
use std::time::Duration;

use pastry_sim::{NetConfig, Network, Topology, TopologyKind};

const ROWS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let nodes: usize = arg(0).map_or(10_000, |s| s.parse().expect("nodes: a number"));
    let checkpoints: Vec<u64> = arg(1).map_or(vec![3600], |s| {
        s.split(',')
            .map(|x| x.parse().expect("checkpoints: seconds, comma-separated"))
            .collect()
    });
    let kind: TopologyKind = arg(2).map_or(TopologyKind::Sphere, |s| s.parse().expect("topology"));
    let seed: u64 = arg(3).map_or(1, |s| s.parse().expect("seed: a number"));
    println!("{nodes} nodes, {kind} topology, seed {seed}");

    let mut cfg = NetConfig::with_seed(seed);
    cfg.topology = Topology::new(kind, seed);
    let mut net = Network::new(cfg);
    let active = net.grow_concurrently(nodes, 4096, Duration::from_secs(60), |_| {});
    println!("built: {active} active at {:?} simulated", net.now());
    let start = net.now();
    let mut sorted = checkpoints;
    sorted.sort_unstable();
    for at in sorted {
        let target = start + Duration::from_secs(at);
        if target > net.now() {
            net.run_until(target);
        }
        report(&net, at);
    }
}

/// Prints, per row, how many cells hold an entry, the share holding the nearest candidate, the
/// mean latency ratio of entry to best and the mean number of candidates per cell.
fn report(net: &Network, at: u64) {
    let active = net.active_addrs();
    // Active nodes by (row, the first row + 1 digits of their id).
    let mut groups: HashMap<(usize, u128), Vec<u32>> = HashMap::new();
    for &a in &active {
        let id = net.id(a).as_u128();
        for row in 0..ROWS {
            groups
                .entry((row, id >> (124 - 4 * row)))
                .or_default()
                .push(a);
        }
    }
    // Per row: cells with an entry, cells holding the nearest candidate, the sum of latency
    // ratios, the sum of candidate counts.
    let mut stats = [(0u64, 0u64, 0f64, 0u64); ROWS];
    for &a in &active {
        let node = net.node(a).expect("active nodes run");
        let me = net.id(a).as_u128();
        for (row, s) in stats.iter_mut().enumerate() {
            for col in 0..16u8 {
                let Some(entry) = node.routing_table().get(row, col) else {
                    continue;
                };
                let high = if row == 0 {
                    0
                } else {
                    (me >> (128 - 4 * row)) << 4
                };
                let Some(fits) = groups.get(&(row, high | u128::from(col))) else {
                    continue;
                };
                let Some(best) = fits.iter().map(|&b| net.latency(a, b)).min() else {
                    continue;
                };
                let have = net.latency(a, entry.handle.addr);
                s.0 += 1;
                s.1 += u64::from(have <= best);
                s.2 += have.as_secs_f64() / best.as_secs_f64().max(1e-9);
                s.3 += fits.len() as u64;
            }
        }
    }
    for (row, (cells, best, ratio, candidates)) in stats.iter().enumerate() {
        let n = (*cells).max(1) as f64;
        println!(
            "after {at} s, row {row}: {cells} cells, {:.1} % hold the nearest candidate, entry \
             latency {:.2}x the best on average, {:.1} candidates per cell",
            100.0 * *best as f64 / n,
            ratio / n,
            *candidates as f64 / n
        );
    }
}
