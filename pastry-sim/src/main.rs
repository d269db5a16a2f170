//! `pastry-sim`: builds an overlay of real `pastry-core` nodes on virtual time, routes
//! lookups through it and reports what happened.

use std::process::ExitCode;
use std::time::{Duration, Instant as WallClock};

use clap::Parser;
use pastry_core::Config;
use pastry_sim::{NetConfig, Network};

/// Build a Pastry ring in the simulator, route lookups, print hops and correctness.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Nodes in the ring; they join one after another through random members.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Lookups for random keys from random nodes.
    #[arg(long, default_value_t = 10_000)]
    lookups: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bits per id digit (1..=4).
    #[arg(long, default_value_t = 4)]
    b: u8,
    /// Leaf-set size L (even, 2..=64).
    #[arg(long = "leaf-set", default_value_t = 16)]
    leaf_set: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut node = Config::default();
    node.b = args.b;
    node.leaf_set_size = args.leaf_set;
    if let Err(e) = node.validate_for(4) {
        eprintln!("pastry-sim: {e}");
        return ExitCode::from(2);
    }
    if args.nodes == 0 {
        eprintln!("pastry-sim: --nodes must be at least 1");
        return ExitCode::from(2);
    }
    let mut cfg = NetConfig::with_seed(args.seed);
    cfg.node = node;
    let wall = WallClock::now();
    let mut net = Network::new(cfg);
    if let Err(e) = net.grow(args.nodes, Duration::from_secs(300)) {
        eprintln!("pastry-sim: the ring did not form: {e}");
        return ExitCode::FAILURE;
    }
    let built = wall.elapsed();
    let sim_built = net.now();
    for _ in 0..args.lookups {
        net.random_lookup();
        net.run_for(Duration::from_millis(1));
    }
    net.run_for(Duration::from_secs(60));
    let s = net.lookup_stats();
    let active = net.active_addrs();
    let per_node = |f: &dyn Fn(&pastry_core::Node<u32>) -> usize| {
        active
            .iter()
            .map(|a| f(net.node(*a).expect("active")))
            .sum::<usize>() as f64
            / active.len().max(1) as f64
    };
    let total: u64 = s.hops.iter().sum();
    println!(
        "pastry-sim: {} nodes (b = {}, L = {}), seed {}",
        args.nodes, args.b, args.leaf_set, args.seed
    );
    println!(
        "  ring built in {:.2} s wall, {:.1} s simulated; {} leaf sets differ from the oracle's",
        built.as_secs_f64(),
        sim_built.as_micros() as f64 / 1e6,
        net.leaf_set_errors().len()
    );
    println!(
        "  lookups: {} sent, {} delivered, {} correct, {} incorrect, {} lost",
        s.sent,
        s.delivered,
        s.correct,
        s.incorrect,
        s.lost()
    );
    println!(
        "  hops: mean {:.3} (log_{} N = {:.3}), max {}",
        s.mean_hops(),
        1u32 << args.b,
        (args.nodes as f64).ln() / f64::from(1u32 << args.b).ln(),
        s.max_hops()
    );
    for (h, c) in s.hops.iter().enumerate() {
        println!(
            "    {h} hops: {:>6.2}%  ({c})",
            100.0 * *c as f64 / total.max(1) as f64
        );
    }
    println!(
        "  state: {:.0} bytes per node, {:.1} routing-table entries per node",
        per_node(&|n| n.state_bytes()),
        per_node(&|n| n.routing_table().len())
    );
    println!(
        "  {} simulated events in {:.2} s wall",
        net.events_processed(),
        wall.elapsed().as_secs_f64()
    );
    if s.incorrect > 0 || s.lost() > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
