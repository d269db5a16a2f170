//! Scenarios: build a ring, run a workload of lookups with optional churn, mass failure and
//! loss, and measure what papers measure.
//!
//! A run has three parts. **Build**: the nodes join concurrently in waves, each through a
//! nearby member (as a deployment would bootstrap). **Measure**: for the run's duration,
//! lookups from random active nodes for random keys, while churn replaces nodes and a mass
//! failure may strike; every lookup is judged by the oracle at the moment it is delivered.
//! **Drain**: the workload stops and the network runs until every lookup has had time to be
//! answered or given up, so that `lost` means lost.

use std::time::{Duration, Instant as WallClock};

use pastry_core::{Config, Instant};

use crate::churn::{Churn, ChurnRun};
use crate::ideal::IdealRoutes;
use crate::net::{Addr, NetConfig, Network, NodeState};
use crate::report::{self, Phase, Report, Sample};
use crate::topology::{Topology, TopologyKind};

/// What to run. Start from [`Scenario::new`] and change fields.
///
/// ```
/// use pastry_sim::Scenario;
/// let mut s = Scenario::new(200, 7);
/// s.lookups = 2_000;
/// let report = s.run(&mut |_| {}).unwrap();
/// assert_eq!(report.lookups_sent, 2_000);
/// assert_eq!(report.correct, 2_000);
/// assert!(report.hops_mean < 3.0);
/// ```
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Nodes in the ring (and the population churn keeps on average).
    pub nodes: usize,
    /// Lookups to route when no lookup rate is given.
    pub lookups: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Configuration of every node.
    pub node: Config,
    /// Where nodes sit and how long datagrams take.
    pub topology: TopologyKind,
    /// Per-datagram loss probability, in `[0, 1)`.
    pub loss: f64,
    /// Median of the exponential session times; `None` for no churn.
    pub session_median: Option<Duration>,
    /// Fraction of active nodes that fail silently at `fail_at`.
    pub fail_fraction: f64,
    /// When the mass failure strikes, from the start of the measured part.
    pub fail_at: Option<Duration>,
    /// Simulated length of the measured part; `None` for a default that suits the scenario.
    pub duration: Option<Duration>,
    /// Lookups per active node per second; `None` to spread `lookups` over the duration.
    pub lookup_rate: Option<f64>,
    /// Width of the time-series buckets; `None` for a sixtieth of the duration.
    pub interval: Option<Duration>,
    /// Simulated time between the build and the measured part.
    pub settle: Duration,
    /// Largest number of nodes joining at once while building.
    pub max_wave: usize,
    /// How long a wave of joins may take before the next wave starts anyway.
    pub wave_patience: Duration,
    /// Also route the lookups over perfect state on the same ring ([`IdealRoutes`]) and
    /// report that route delay penalty beside the measured one. Only for rings without churn
    /// or failures, whose membership at the end is the one every lookup saw.
    pub ideal: bool,
}

/// Lookups the `--ideal` figures are computed over, at most.
pub const IDEAL_LOOKUPS: usize = 20_000;

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScenarioError {
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The node configuration was rejected.
    #[error("node configuration: {0}")]
    Config(#[from] pastry_core::ConfigError),
}

/// Where a run is, for progress displays.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Building: nodes started so far, of the total.
    Building {
        /// Nodes started.
        started: usize,
        /// Nodes to start.
        total: usize,
    },
    /// Measuring: simulated time elapsed, of the duration.
    Measuring {
        /// Simulated time elapsed in the measured part.
        elapsed: Duration,
        /// Length of the measured part.
        total: Duration,
    },
    /// Waiting for the last lookups to finish.
    Draining,
}

/// How often the network is checked for repair after a mass failure.
const REPAIR_CHECK: Duration = Duration::from_secs(5);

impl Scenario {
    /// A ring of `nodes` on the sphere, 10,000 lookups, no churn, no loss, the core's default
    /// configuration.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Scenario {
            nodes,
            lookups: 10_000,
            seed,
            node: Config::default(),
            topology: TopologyKind::Sphere,
            loss: 0.0,
            session_median: None,
            fail_fraction: 0.0,
            fail_at: None,
            duration: None,
            lookup_rate: None,
            interval: None,
            settle: Duration::from_secs(30),
            max_wave: 4096,
            wave_patience: Duration::from_secs(60),
            ideal: false,
        }
    }

    /// Checks every parameter; [`Scenario::run`] does too.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        self.node.validate_for(4)?;
        if self.nodes == 0 {
            return bad("--nodes must be at least 1".into());
        }
        if self.nodes > u32::MAX as usize / 4 {
            return bad(format!(
                "--nodes {} is beyond the simulator's range",
                self.nodes
            ));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return bad(format!("--loss {} must be in [0, 1)", self.loss));
        }
        if !(0.0..=1.0).contains(&self.fail_fraction) {
            return bad(format!(
                "--fail-fraction {} must be in [0, 1]",
                self.fail_fraction
            ));
        }
        if self.ideal && (self.session_median.is_some() || self.fail_fraction > 0.0) {
            return bad(
                "--ideal compares a ring with perfect tables of the same members: it cannot be \
                 combined with --session-median or --fail-fraction"
                    .into(),
            );
        }
        if self.fail_at.is_some() && self.fail_fraction == 0.0 {
            return bad("--fail-at needs --fail-fraction above 0".into());
        }
        if let Some(r) = self.lookup_rate
            && !(r.is_finite() && r >= 0.0)
        {
            return bad(format!("--lookup-rate {r} must be a non-negative number"));
        }
        if self.session_median.is_some_and(|m| m.is_zero()) {
            return bad("--session-median must be above 0".into());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return bad("--duration must be above 0".into());
        }
        if self.interval.is_some_and(|d| d.is_zero()) {
            return bad("--interval must be above 0".into());
        }
        if let (Some(at), Some(d)) = (self.fail_at, self.duration)
            && at >= d
        {
            return bad(format!(
                "--fail-at {} s is not inside --duration {} s",
                at.as_secs_f64(),
                d.as_secs_f64()
            ));
        }
        if self.max_wave == 0 {
            return bad("the wave size must be at least 1".into());
        }
        if self.lookup_rate.is_some() && self.duration.is_none() && self.lookups == 0 {
            return bad("--lookup-rate needs --duration or a number of --lookups".into());
        }
        Ok(())
    }

    /// When the mass failure strikes: `fail_at`, or a third of the way into the run.
    fn fail_time(&self) -> Option<Duration> {
        (self.fail_fraction > 0.0).then(|| {
            self.fail_at
                .unwrap_or_else(|| self.measured_duration().mul_f64(1.0 / 3.0))
        })
    }

    /// The measured part's length: the given duration, or one that fits the workload.
    pub fn measured_duration(&self) -> Duration {
        if let Some(d) = self.duration {
            return d;
        }
        if let Some(at) = self.fail_at {
            return at + Duration::from_secs(900);
        }
        if self.session_median.is_some() {
            return Duration::from_secs(3600);
        }
        match self.lookup_rate {
            Some(r) if r > 0.0 => {
                Duration::from_secs_f64(self.lookups as f64 / (r * self.nodes as f64))
            }
            // One lookup per node per 10 s (MSPastry's rate was one per 100 s), and at least
            // 1,000 per second: the run measures routing, not a long stretch of idle upkeep.
            _ => {
                let per_second = (self.nodes as f64 / 10.0).max(1000.0);
                Duration::from_secs_f64(self.lookups.max(1) as f64 / per_second)
            }
        }
    }

    /// Runs the scenario, calling `progress` now and then.
    pub fn run(&self, progress: &mut dyn FnMut(Progress)) -> Result<Report, ScenarioError> {
        self.validate()?;
        let wall = WallClock::now();
        let mut net = Network::new(NetConfig {
            seed: self.seed,
            node: self.node.clone(),
            loss: self.loss,
            topology: Topology::new(self.topology, self.seed),
            check_invariants: false,
        });

        // Build.
        let total = self.nodes;
        let became = net.grow_concurrently(self.nodes, self.max_wave, self.wave_patience, |s| {
            progress(Progress::Building { started: s, total })
        });
        let build_wall = wall.elapsed();
        let build_sim = net.now();
        let build_datagrams = net.datagram_counts().0;
        net.run_for(self.settle);
        let built_active = net.active_len();
        let built_leaf_errors = net.leaf_set_errors().len();

        // Measure.
        let duration = self.measured_duration();
        let t0 = net.now();
        let end = t0 + duration;
        let interval = self
            .interval
            .unwrap_or_else(|| (duration / 60).max(Duration::from_secs(1)));
        let mut churn = self
            .session_median
            .map(|m| ChurnRun::start(Churn::new(m, self.nodes), &mut net));
        let fail_time = self.fail_time().map(|d| t0 + d);
        let mut failed = 0usize;
        let mut repaired_at: Option<Instant> = None;
        let mut stale_at_repair: Option<f64> = None;
        let mut next_repair_check = fail_time.map(|t| t + REPAIR_CHECK);
        let spacing = match self.lookup_rate {
            Some(_) => None,
            None if self.lookups == 0 => None,
            None => Some(duration / self.lookups as u32),
        };
        let mut issued = 0usize;
        let mut next_lookup = match (self.lookup_rate, spacing) {
            (Some(r), _) if r > 0.0 => Some(t0 + self.poisson_gap(&mut net, r)),
            (None, Some(_)) => Some(t0),
            _ => None,
        };
        let mut next_sample = t0 + interval;
        let start_totals = net.totals();
        let start_types = net.datagrams_by_type().clone();
        let mut last = Bucket::start(&net, t0, t0);
        let mut samples: Vec<Sample> = Vec::new();
        let mut node_seconds = 0.0f64;
        let mut joins = 0u64;
        let mut departed = 0u64;
        let mut arrivals: Vec<Addr> = Vec::new();
        let mut last_progress = WallClock::now();

        loop {
            let candidates = [
                next_lookup,
                churn.as_ref().and_then(ChurnRun::next_event),
                fail_time.filter(|_| failed == 0),
                next_repair_check,
                Some(next_sample),
                Some(end),
            ];
            let t = candidates
                .into_iter()
                .flatten()
                .min()
                .expect("end is a candidate");
            let before = net.now();
            net.run_until(t);
            node_seconds += net.active_len() as f64 * (t - before).as_secs_f64();
            if t >= end && t == end {
                // Close the last bucket and stop the workload.
                samples.push(last.close(&net, end));
                break;
            }
            if next_sample == t {
                samples.push(last.close(&net, t));
                last = Bucket::start(&net, t0, t);
                next_sample = t + interval;
            }
            if next_lookup == Some(t) {
                net.random_lookup();
                issued += 1;
                last.lookups += 1;
                next_lookup = match (self.lookup_rate, spacing) {
                    (Some(r), _) => Some(t + self.poisson_gap(&mut net, r)),
                    (None, Some(gap)) if issued < self.lookups => Some(t + gap),
                    _ => None,
                };
            }
            if let Some(c) = churn.as_mut() {
                let step = c.apply(&mut net, t);
                if let Some(a) = step.arrived {
                    joins += 1;
                    last.joins += 1;
                    arrivals.push(a);
                }
                departed += u64::from(step.departed);
                last.departures += u64::from(step.departed);
            }
            if fail_time == Some(t) && failed == 0 {
                let n = (self.fail_fraction * net.active_len() as f64).round() as usize;
                for _ in 0..n {
                    if let Some(a) = net.random_active() {
                        net.kill(a);
                    }
                }
                failed = n.max(1);
                last.departures += n as u64;
            }
            if next_repair_check == Some(t) {
                // Repaired: every leaf set is right again, and routing tables have had a
                // maintenance period (their stale entries go when used or when maintenance
                // finds better ones; what is left is reported).
                let maintained = fail_time.is_some_and(|f| t >= f + self.node.maintenance_period);
                if maintained && net.leaf_set_errors().is_empty() {
                    let entries: usize = net
                        .active_addrs()
                        .iter()
                        .map(|a| {
                            net.node(*a).map_or(0, |n| {
                                let table = n.routing_table();
                                table.len() + table.spares().count()
                            })
                        })
                        .sum();
                    stale_at_repair =
                        Some(net.stale_table_entries() as f64 / entries.max(1) as f64);
                    repaired_at = Some(t);
                    next_repair_check = None;
                } else {
                    next_repair_check = Some(t + REPAIR_CHECK);
                }
            }
            if last_progress.elapsed() > Duration::from_millis(100) {
                progress(Progress::Measuring {
                    elapsed: t - t0,
                    total: duration,
                });
                last_progress = WallClock::now();
            }
        }

        // Traffic is counted over the measured window only, the window the node-seconds
        // cover: what the nodes send while the last lookups drain is left out.
        let end_totals = net.totals();
        let end_types = net.datagrams_by_type().clone();
        let active_at_end = net.active_len();
        let leaf_set_errors_at_end = net.leaf_set_errors().len();

        // Drain: no new work; give every lookup its timeouts and retries.
        progress(Progress::Draining);
        let cfg = &self.node;
        let drain = cfg.lookup_timeout * (u32::from(cfg.lookup_retries) + 1) + cfg.rto_max * 2;
        net.run_for(drain);

        let control = end_totals.control_out - start_totals.control_out;
        let control_bytes = end_totals.control_bytes_out - start_totals.control_bytes_out;
        let detect = self.node.failure_timeout + self.node.heartbeat_period;
        let phases = match fail_time {
            Some(ft) => phases(&net, t0, ft, ft + detect, repaired_at, end),
            None => Vec::new(),
        };
        let rate = |n: u64| n as f64 / node_seconds.max(1e-9);
        let mut by_type: std::collections::BTreeMap<String, f64> = end_types
            .iter()
            .map(|(k, v)| {
                let before = start_types.get(k).copied().unwrap_or(0);
                ((*k).to_owned(), rate(v - before))
            })
            .collect();
        let (p0, p1) = (start_totals.probes, end_totals.probes);
        for (k, n) in [
            ("probe: leaf set", p1.leaf - p0.leaf),
            ("probe: liveness", p1.liveness - p0.liveness),
            ("probe: table", p1.table - p0.table),
            ("probe: verify", p1.verify - p0.verify),
        ] {
            by_type.insert(k.to_owned(), rate(n));
        }
        let mut join_ms: Vec<f64> = net
            .addrs()
            .filter_map(|a| match net.join_times(a) {
                (Some(j), Some(act)) => Some((act - j).as_secs_f64() * 1e3),
                _ => None,
            })
            .collect();
        join_ms.sort_by(f64::total_cmp);
        let active = net.active_addrs();
        let mean_over_active = |f: &dyn Fn(&pastry_core::Node<Addr>) -> usize| {
            active
                .iter()
                .map(|a| f(net.node(*a).expect("active nodes run")) as f64)
                .sum::<f64>()
                / active.len().max(1) as f64
        };
        let ideal = self
            .ideal
            .then(|| ideal_figures(&net))
            .filter(|i| !i.rdp.is_empty());
        let mut rdp: Vec<f32> = net.rdp_samples().to_vec();
        rdp.sort_by(f32::total_cmp);
        let stats = net.lookup_stats().clone();
        let mut answer_ms: Vec<f32> = net
            .lookups()
            .iter()
            .filter_map(|l| {
                l.answered
                    .map(|a| ((a - l.sent_at).as_secs_f64() * 1e3) as f32)
            })
            .collect();
        answer_ms.sort_by(f32::total_cmp);
        let (datagrams, dropped) = net.datagram_counts();
        let wall_seconds = wall.elapsed().as_secs_f64();
        let outcomes = report::bucket_outcomes(net.lookups(), t0, interval, samples.len());
        for (s, o) in samples.iter_mut().zip(outcomes) {
            s.incorrect = o.incorrect;
            s.lost = o.lost;
        }
        Ok(Report {
            nodes: self.nodes,
            seed: self.seed,
            topology: self.topology.to_string(),
            b: self.node.b,
            leaf_set: self.node.leaf_set_size,
            loss: self.loss,
            lookups_sent: stats.sent,
            delivered: stats.delivered,
            correct: stats.correct,
            incorrect: stats.incorrect,
            lost: stats.lost(),
            failure_reports: stats.failure_reports,
            hops_mean: stats.mean_hops(),
            hops_max: stats.max_hops(),
            hops_histogram: stats.hops.clone(),
            rdp_mean: report::mean(&rdp),
            rdp_median: report::quantile(&rdp, 0.5),
            rdp_p95: report::quantile(&rdp, 0.95),
            rdp_samples: rdp.len(),
            answered: answer_ms.len() as u64,
            answer_ms_median: report::quantile(&answer_ms, 0.5),
            answer_ms_p95: report::quantile(&answer_ms, 0.95),
            answer_ms_p99: report::quantile(&answer_ms, 0.99),
            rdp_cdf: report::cdf(&rdp),
            rdp_ideal_mean: ideal.as_ref().map(|i| report::mean(&i.rdp)),
            rdp_ideal_median: ideal.as_ref().map(|i| report::quantile(&i.rdp, 0.5)),
            rdp_ideal_p95: ideal.as_ref().map(|i| report::quantile(&i.rdp, 0.95)),
            hops_ideal_mean: ideal.as_ref().map(|i| i.hops_mean),
            rdp_ideal_samples: ideal.as_ref().map_or(0, |i| i.rdp.len()),
            rdp_measured_same_lookups_mean: ideal.as_ref().map(|i| i.measured_mean),
            rdp_ideal_cdf: ideal
                .as_ref()
                .map_or_else(Vec::new, |i| report::cdf(&i.rdp)),
            control_msgs_per_node_per_sec: control as f64 / node_seconds.max(1e-9),
            control_bytes_per_node_per_sec: control_bytes as f64 / node_seconds.max(1e-9),
            datagrams_by_type_per_node_per_sec: by_type,
            join_msgs_per_node: build_datagrams as f64 / self.nodes as f64,
            join_time_median_ms: join_ms.get(join_ms.len() / 2).copied().unwrap_or(0.0),
            state_bytes_per_node: mean_over_active(&|n| n.state_bytes()),
            routing_table_entries_mean: mean_over_active(&|n| n.routing_table().len()),
            routing_table_spares_mean: mean_over_active(&|n| n.routing_table().spares().count()),
            state_breakdown: [
                ("node", mean_over_active(&|n| n.memory().node)),
                (
                    "routing_table",
                    mean_over_active(&|n| n.memory().routing_table),
                ),
                ("timers", mean_over_active(&|n| n.memory().timers)),
                ("queues", mean_over_active(&|n| n.memory().queues)),
                ("in_flight", mean_over_active(&|n| n.memory().in_flight)),
                ("probes", mean_over_active(&|n| n.memory().probes)),
                ("caches", mean_over_active(&|n| n.memory().caches)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            sim_events: net.events_processed(),
            wall_seconds,
            events_per_wall_second: net.events_processed() as f64 / wall_seconds.max(1e-9),
            peak_rss_bytes: report::peak_rss_bytes(),
            build_wall_seconds: build_wall.as_secs_f64(),
            build_sim_seconds: report::secs(build_sim),
            build_active: became,
            active_after_settle: built_active,
            leaf_set_errors_after_build: built_leaf_errors,
            measured_seconds: duration.as_secs_f64(),
            datagrams,
            datagrams_dropped: dropped,
            duplicates: stats.duplicates,
            session_median_s: self.session_median.map(|d| d.as_secs_f64()),
            joins_during_run: joins,
            departures_during_run: departed + failed as u64 * u64::from(fail_time.is_some()),
            active_at_end,
            fail_fraction: self.fail_fraction,
            failed_nodes: failed,
            repaired_after_s: repaired_at
                .zip(fail_time)
                .map(|(r, f)| (r - f).as_secs_f64()),
            phases,
            stale_table_fraction_at_repair: stale_at_repair,
            leaf_set_errors_at_end,
            interval_s: interval.as_secs_f64(),
            series: samples,
        })
    }

    /// The gap to the next lookup of a Poisson process at `rate` per active node per second.
    fn poisson_gap(&self, net: &mut Network, rate: f64) -> Duration {
        let total = rate * net.active_len().max(1) as f64;
        let gap =
            crate::churn::exponential(Duration::from_secs_f64(1.0 / total), net.random_unit());
        gap.max(Duration::from_micros(1))
    }
}

/// Counters at the start of a time-series bucket.
struct Bucket {
    origin: Instant,
    start: Instant,
    control: u64,
    control_bytes: u64,
    lookups: u64,
    joins: u64,
    departures: u64,
}

impl Bucket {
    fn start(net: &Network, origin: Instant, at: Instant) -> Self {
        let t = net.totals();
        Bucket {
            origin,
            start: at,
            control: t.control_out,
            control_bytes: t.control_bytes_out,
            lookups: 0,
            joins: 0,
            departures: 0,
        }
    }

    fn close(&self, net: &Network, at: Instant) -> Sample {
        let t = net.totals();
        let secs = (at - self.start).as_secs_f64().max(1e-9);
        let active = net.active_len().max(1) as f64;
        Sample {
            end_s: (at - self.origin).as_secs_f64(),
            active: net.active_len(),
            lookups: self.lookups,
            incorrect: 0,
            lost: 0,
            joins: self.joins,
            departures: self.departures,
            control_msgs_per_node_per_sec: (t.control_out - self.control) as f64 / secs / active,
            control_bytes_per_node_per_sec: (t.control_bytes_out - self.control_bytes) as f64
                / secs
                / active,
        }
    }
}

/// Lookups grouped by when they were sent relative to a mass failure: before it, right after
/// it (until `detected`), while repairing, and after repair.
fn phases(
    net: &Network,
    t0: Instant,
    fail: Instant,
    detected: Instant,
    repaired: Option<Instant>,
    end: Instant,
) -> Vec<Phase> {
    let detected = detected.min(end);
    let repaired_or_end = repaired.unwrap_or(end).max(detected);
    let windows = [
        ("before", t0, fail),
        ("after", fail, detected),
        ("repairing", detected, repaired_or_end),
        ("after_repair", repaired_or_end, end),
    ];
    windows
        .into_iter()
        .map(|(name, from, to)| Phase::of(name, net.lookups(), from, to))
        .collect()
}

/// The route delay penalty (sorted) and mean hops of the run's first lookups delivered away
/// from their origin, routed again over perfect state on the ring as it is now.
struct IdealFigures {
    rdp: Vec<f32>,
    hops_mean: f64,
    /// The measured RDP of the same lookups (the ideal covers at most [`IDEAL_LOOKUPS`]).
    measured_mean: f64,
}

fn ideal_figures(net: &Network) -> IdealFigures {
    let routes = IdealRoutes::new(net);
    let mut rdp = Vec::new();
    let mut measured = 0f64;
    let mut hops = 0usize;
    for l in net.lookups() {
        if rdp.len() >= IDEAL_LOOKUPS {
            break;
        }
        if l.delivered.as_ref().is_none_or(|d| d.at == l.from)
            || net.state(l.from) != NodeState::Active
        {
            continue;
        }
        let r = routes.route(l.from, l.key);
        let direct = net.latency(l.from, r.root).as_secs_f64();
        if r.root == l.from || direct <= 0.0 {
            continue;
        }
        let Some(m) = net.rdp_of(l) else { continue };
        rdp.push((r.latency.as_secs_f64() / direct) as f32);
        hops += r.hops;
        measured += f64::from(m);
    }
    let n = rdp.len().max(1) as f64;
    rdp.sort_by(f32::total_cmp);
    IdealFigures {
        rdp,
        hops_mean: hops as f64 / n,
        measured_mean: measured / n,
    }
}
