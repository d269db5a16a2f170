//! `pastry-sim`: builds a ring of real `pastry-core` nodes on virtual time, runs lookups with
//! optional churn, failure and loss, and reports what papers report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pastry_sim::{Progress, Scenario, TopologyKind};

// Millions of small buffers (one per datagram) are allocated and freed per simulated second;
// mimalloc's thread-local free lists make that markedly cheaper than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_t` of the v3 sources that
/// libmimalloc-sys 0.1.49 builds (the Rust bindings do not name it). The version is pinned in
/// the workspace manifest so that the index cannot come to mean another option unnoticed.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process instead of returning it to the OS a second later. A ring
/// under construction frees and reallocates buffers all the time; purged pages came back as
/// page faults that the kernel had to zero (a tenth of the wall time of a 100,000-node run:
/// 106 s against 95 s). Overrides `MIMALLOC_PURGE_DELAY` from the environment.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option, unsynchronised, so it runs first in `main`
    // before any other thread exists; mimalloc reads it at each purge, and -1 ("never purge")
    // is one of its documented values.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Simulate a Pastry overlay of real pastry-core nodes and report hops, correctness, route
/// delay penalty, control traffic, state and speed.
///
/// With no arguments: a 1,000-node ring on the sphere topology routes 10,000 lookups.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Nodes in the ring (and the population churn keeps on average).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Lookups for random keys from random active nodes (when no --lookup-rate is given).
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
    /// Where nodes sit: plane, sphere or transit-stub.
    #[arg(long, default_value_t = TopologyKind::Sphere)]
    topology: TopologyKind,
    /// Probability that a datagram is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Churn: median session time in seconds (exponential sessions; arrivals keep the
    /// population steady on average). Departures are silent failures.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    session_median: Option<Duration>,
    /// Mass failure: the fraction of active nodes that fail silently at --fail-at.
    #[arg(long, default_value_t = 0.0)]
    fail_fraction: f64,
    /// Mass failure: when, in seconds after the ring is built (default: a third into the run).
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    fail_at: Option<Duration>,
    /// Simulated seconds of the measured run (default: fits the workload).
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    duration: Option<Duration>,
    /// Lookups per node per second during the run (Poisson), instead of a fixed number.
    #[arg(long, value_name = "R")]
    lookup_rate: Option<f64>,
    /// Width of the time-series buckets in seconds (default: a sixtieth of the run).
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    interval: Option<Duration>,
    /// Simulated seconds between the build and the measured run.
    #[arg(long, value_name = "SECS", value_parser = seconds, default_value = "30")]
    settle: Duration,
    /// Largest number of nodes that join at once while the ring is built.
    #[arg(long, default_value_t = 4096)]
    wave: usize,
    /// Period of routing-table maintenance (proximity refresh), in seconds.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    maintenance_period: Option<Duration>,
    /// New routing-table candidates a node may probe per maintenance round.
    #[arg(long, value_name = "N")]
    maintenance_probes: Option<usize>,
    /// Nodes kept beside the entry of each sparse routing-table cell (0 to 8; see
    /// `Config::cell_spares`): routes then end at the cell's node numerically closest to the
    /// key, often the root, a hop early. Off by default, as in the original protocol.
    #[arg(long, value_name = "N", default_value_t = 0)]
    cell_spares: u8,
    /// Period of leaf-set heartbeats, in seconds.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    heartbeat_period: Option<Duration>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write SVG plots into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Also route the first 20,000 lookups over perfect state on the same ring (every
    /// routing-table cell holding the live node nearest to its owner) and report that route
    /// delay penalty beside the measured one: the ideal of proximity neighbour selection.
    /// Not with churn or failures; with --loss the measured figure includes the waits for
    /// lost datagrams and the ideal does not.
    #[arg(long)]
    ideal: bool,
    /// Exit with status 1 when any lookup was incorrect or lost.
    #[arg(long)]
    strict: bool,
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(format!("{s} is not a duration in seconds (0 to 1e9)"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn scenario(args: &Args) -> Scenario {
    let mut s = Scenario::new(args.nodes, args.seed);
    s.lookups = args.lookups;
    s.node.b = args.b;
    s.node.leaf_set_size = args.leaf_set;
    if let Some(p) = args.maintenance_period {
        s.node.maintenance_period = p;
    }
    s.node.cell_spares = args.cell_spares;
    if let Some(n) = args.maintenance_probes {
        s.node.maintenance_probes = n;
    }
    if let Some(p) = args.heartbeat_period {
        s.node.heartbeat_period = p;
        s.node.failure_timeout = s.node.failure_timeout.max(p + p / 3);
    }
    s.topology = args.topology;
    s.loss = args.loss;
    s.session_median = args.session_median;
    s.fail_fraction = args.fail_fraction;
    s.fail_at = args.fail_at;
    s.duration = args.duration;
    s.lookup_rate = args.lookup_rate;
    s.interval = args.interval;
    s.settle = args.settle;
    s.max_wave = args.wave;
    s.ideal = args.ideal;
    s
}

fn main() -> ExitCode {
    keep_freed_memory();
    let args = Args::parse();
    let s = scenario(&args);
    if let Err(e) = s.validate() {
        eprintln!("pastry-sim: {e}");
        return ExitCode::from(2);
    }
    if let Some(dir) = &args.plot
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("pastry-sim: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }

    let bar = ProgressBar::with_draw_target(Some(s.nodes as u64), ProgressDrawTarget::stderr());
    let style =
        |template: &str| ProgressStyle::with_template(template).expect("a valid progress template");
    bar.set_style(style(
        "{prefix:>9} [{bar:40}] {pos}/{len} {msg} ({elapsed})",
    ));
    bar.set_prefix("building");
    let mut phase = 0;
    let report = s.run(&mut |p| match p {
        Progress::Building { started, .. } => bar.set_position(started as u64),
        Progress::Measuring { elapsed, total } => {
            if phase == 0 {
                phase = 1;
                bar.set_prefix("running");
                bar.set_length(total.as_secs());
                bar.set_position(0);
                bar.set_message("simulated s");
            }
            bar.set_position(elapsed.as_secs());
        }
        Progress::Draining => {
            bar.set_prefix("draining");
            bar.set_message("");
        }
    });
    bar.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pastry-sim: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{report}");
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serialises");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("pastry-sim: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(dir) = &args.plot {
        match pastry_sim::plot::write_all(&report, dir) {
            Ok(files) => {
                for f in files {
                    println!("  plot: {}", f.display());
                }
            }
            Err(e) => {
                eprintln!("pastry-sim: cannot write plots to {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if args.strict && (report.incorrect > 0 || report.lost > 0) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
