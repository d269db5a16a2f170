//! What a run measured: the JSON report and the readable summary.

use std::fmt;
use std::time::Duration;

use pastry_core::Instant;
use serde::Serialize;

use crate::net::Lookup;

/// Everything a run measured. Serialised as the JSON report; its `Display` is the summary.
///
/// Definitions: a lookup is *correct* when delivered at the node numerically closest to its key
/// among the live, active nodes at delivery time; *incorrect* when delivered elsewhere; *lost*
/// when never delivered. Hops are overlay hops from the origin to the root. RDP is the latency
/// of the overlay route over the direct latency from origin to root. Control traffic is every
/// datagram that is not application data, per active node per second of the measured part.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Nodes the ring was built with.
    pub nodes: usize,
    /// Seed of the run.
    pub seed: u64,
    /// Topology name.
    pub topology: String,
    /// Bits per digit.
    pub b: u8,
    /// Leaf-set size.
    pub leaf_set: usize,
    /// Per-datagram loss probability.
    pub loss: f64,
    /// Lookups issued.
    pub lookups_sent: u64,
    /// Lookups delivered at some node.
    pub delivered: u64,
    /// Lookups delivered at the right node.
    pub correct: u64,
    /// Lookups delivered at a wrong node.
    pub incorrect: u64,
    /// Lookups never delivered.
    pub lost: u64,
    /// Lookups their origin gave up on after its retries.
    pub failure_reports: u64,
    /// Mean hops of delivered lookups.
    pub hops_mean: f64,
    /// Largest hop count.
    pub hops_max: usize,
    /// Delivered lookups by hop count.
    pub hops_histogram: Vec<u64>,
    /// Mean route delay penalty.
    pub rdp_mean: f64,
    /// Median route delay penalty.
    pub rdp_median: f64,
    /// 95th percentile of the route delay penalty.
    pub rdp_p95: f64,
    /// Lookups the RDP figures are over (those delivered away from their origin).
    pub rdp_samples: usize,
    /// Lookups whose origin got the answer.
    pub answered: u64,
    /// Median simulated time from sending a lookup to its origin getting the answer
    /// (retries included), in milliseconds: what an application waits for.
    pub answer_ms_median: f64,
    /// 95th percentile of that time.
    pub answer_ms_p95: f64,
    /// 99th percentile of that time.
    pub answer_ms_p99: f64,
    /// The RDP distribution as (RDP, cumulative fraction) at every percentile.
    pub rdp_cdf: Vec<(f64, f64)>,
    /// With `--ideal`: the mean RDP of the same lookups routed over perfect state on the same
    /// ring (every cell holding the live node nearest to its owner, exact leaf sets): the
    /// ideal of proximity neighbour selection. `null` otherwise.
    pub rdp_ideal_mean: Option<f64>,
    /// With `--ideal`: median of that RDP.
    pub rdp_ideal_median: Option<f64>,
    /// With `--ideal`: 95th percentile of that RDP.
    pub rdp_ideal_p95: Option<f64>,
    /// With `--ideal`: mean hops over perfect state.
    pub hops_ideal_mean: Option<f64>,
    /// With `--ideal`: lookups the ideal figures are over (the first delivered away from their
    /// origin, at most 20,000).
    pub rdp_ideal_samples: usize,
    /// With `--ideal`: the measured RDP mean over the same lookups as the ideal figures
    /// (`rdp_mean` covers every lookup; the ideal at most the first 20,000).
    pub rdp_measured_same_lookups_mean: Option<f64>,
    /// With `--ideal`: that RDP's distribution, as `rdp_cdf`.
    pub rdp_ideal_cdf: Vec<(f64, f64)>,
    /// Control datagrams per active node per second, over the measured part (nodes still
    /// joining send traffic but are not counted among the nodes: under 10-minute churn about
    /// 0.15 % of the nodes are joining at any time).
    pub control_msgs_per_node_per_sec: f64,
    /// Control bytes per active node per second, over the measured part.
    pub control_bytes_per_node_per_sec: f64,
    /// Datagrams per active node per second in the measured part, by message type (all traffic,
    /// application messages included).
    pub datagrams_by_type_per_node_per_sec: std::collections::BTreeMap<String, f64>,
    /// Datagrams sent while building the ring, per node built.
    pub join_msgs_per_node: f64,
    /// Median simulated time from the start of a join to the node being active.
    pub join_time_median_ms: f64,
    /// Mean bytes of state per active node at the end of the run, after the drain.
    pub state_bytes_per_node: f64,
    /// Mean routing-table entries per active node at the end of the run, after the drain.
    pub routing_table_entries_mean: f64,
    /// Mean spares kept beside sparse cells' entries per active node at the end (0 unless
    /// `--cell-spares`).
    pub routing_table_spares_mean: f64,
    /// `state_bytes_per_node` by part (mean bytes per active node): node, routing_table,
    /// timers, queues, in_flight, probes, caches.
    pub state_breakdown: std::collections::BTreeMap<String, f64>,
    /// Simulated events processed.
    pub sim_events: u64,
    /// Wall-clock seconds of the whole run.
    pub wall_seconds: f64,
    /// Simulated events per wall-clock second.
    pub events_per_wall_second: f64,
    /// Peak resident memory of the process (0 where the platform does not tell).
    pub peak_rss_bytes: u64,
    /// Wall-clock seconds of the build.
    pub build_wall_seconds: f64,
    /// Simulated seconds of the build.
    pub build_sim_seconds: f64,
    /// Nodes active when their wave ended.
    pub build_active: usize,
    /// Nodes active after the build and the settling time.
    pub active_after_settle: usize,
    /// Active nodes whose leaf set differed from the oracle's after settling.
    pub leaf_set_errors_after_build: usize,
    /// Simulated seconds of the measured part.
    pub measured_seconds: f64,
    /// Datagrams sent in the whole run.
    pub datagrams: u64,
    /// Datagrams dropped by loss.
    pub datagrams_dropped: u64,
    /// Deliveries after the first of one lookup.
    pub duplicates: u64,
    /// Median session time, for runs with churn.
    pub session_median_s: Option<f64>,
    /// Nodes that arrived during the measured part.
    pub joins_during_run: u64,
    /// Nodes that departed or failed during the measured part.
    pub departures_during_run: u64,
    /// Active nodes at the end of the measured part.
    pub active_at_end: usize,
    /// Fraction of nodes failed at once.
    pub fail_fraction: f64,
    /// Nodes failed at once.
    pub failed_nodes: usize,
    /// Seconds from the mass failure until every leaf set matched the oracle again and at
    /// least one maintenance period had passed (`null`: not within the run).
    pub repaired_after_s: Option<f64>,
    /// Of all routing-table entries (spares included), the fraction naming a failed node at
    /// that time.
    pub stale_table_fraction_at_repair: Option<f64>,
    /// For runs with a mass failure: lookups sent before it, right after it (within one failure
    /// timeout and heartbeat period, before the failure detector can have acted), while the
    /// overlay repairs itself, and after repair.
    pub phases: Vec<Phase>,
    /// Active nodes whose leaf set differs from the oracle's at the end of the measured part.
    pub leaf_set_errors_at_end: usize,
    /// Width of a time-series bucket.
    pub interval_s: f64,
    /// The measured part, bucket by bucket.
    pub series: Vec<Sample>,
}

/// One bucket of the time series.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sample {
    /// Simulated time at the end of the bucket, in seconds.
    pub end_s: f64,
    /// Active nodes at the end of the bucket.
    pub active: usize,
    /// Lookups sent in the bucket.
    pub lookups: u64,
    /// Of those, delivered at a wrong node.
    pub incorrect: u64,
    /// Of those, never delivered.
    pub lost: u64,
    /// Nodes that arrived.
    pub joins: u64,
    /// Nodes that departed or failed.
    pub departures: u64,
    /// Control datagrams per active node per second.
    pub control_msgs_per_node_per_sec: f64,
    /// Control bytes per active node per second.
    pub control_bytes_per_node_per_sec: f64,
}

/// Lookups sent in one window of time.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Phase {
    /// `before`, `after`, `repairing` or `after_repair`.
    pub name: String,
    /// Window start, simulated seconds.
    pub from_s: f64,
    /// Window end, simulated seconds.
    pub to_s: f64,
    /// Lookups sent in the window.
    pub lookups: u64,
    /// Of those, delivered at the right node.
    pub correct: u64,
    /// Of those, delivered elsewhere.
    pub incorrect: u64,
    /// Of those, never delivered.
    pub lost: u64,
    /// Mean hops of those delivered.
    pub hops_mean: f64,
}

impl Phase {
    /// The lookups of `lookups` sent in `[from, to)`.
    pub fn of(name: &str, lookups: &[Lookup], from: Instant, to: Instant) -> Phase {
        let mut p = Phase {
            name: name.to_owned(),
            from_s: secs(from),
            to_s: secs(to),
            lookups: 0,
            correct: 0,
            incorrect: 0,
            lost: 0,
            hops_mean: 0.0,
        };
        let mut hops = 0u64;
        for l in lookups
            .iter()
            .filter(|l| l.sent_at >= from && l.sent_at < to)
        {
            p.lookups += 1;
            match &l.delivered {
                Some(d) if d.correct => {
                    p.correct += 1;
                    hops += u64::from(d.hops);
                }
                Some(d) => {
                    p.incorrect += 1;
                    hops += u64::from(d.hops);
                }
                None => p.lost += 1,
            }
        }
        let delivered = p.correct + p.incorrect;
        if delivered > 0 {
            p.hops_mean = hops as f64 / delivered as f64;
        }
        p
    }
}

/// Seconds since the simulation's epoch.
pub(crate) fn secs(t: Instant) -> f64 {
    t.as_micros() as f64 / 1e6
}

/// Incorrect and lost lookups, per bucket of sending time.
pub(crate) struct Outcome {
    pub incorrect: u64,
    pub lost: u64,
}

pub(crate) fn bucket_outcomes(
    lookups: &[Lookup],
    t0: Instant,
    interval: Duration,
    buckets: usize,
) -> Vec<Outcome> {
    let mut v: Vec<Outcome> = (0..buckets)
        .map(|_| Outcome {
            incorrect: 0,
            lost: 0,
        })
        .collect();
    let width = interval.as_micros().max(1) as u64;
    for l in lookups.iter().filter(|l| l.sent_at >= t0) {
        let i = ((l.sent_at.as_micros() - t0.as_micros()) / width) as usize;
        let Some(o) = v.get_mut(i.min(buckets.saturating_sub(1))) else {
            continue;
        };
        match &l.delivered {
            None => o.lost += 1,
            Some(d) if !d.correct => o.incorrect += 1,
            Some(_) => {}
        }
    }
    v
}

/// Mean of a sample (0 if empty).
pub fn mean(v: &[f32]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64
}

/// The `q` quantile of a sorted sample, by the nearest-rank method (0 if empty).
///
/// ```
/// use pastry_sim::report::quantile;
/// let v = [1.0, 2.0, 3.0, 4.0];
/// assert_eq!(quantile(&v, 0.5), 2.0);
/// assert_eq!(quantile(&v, 0.95), 4.0);
/// assert_eq!(quantile(&[], 0.5), 0.0);
/// ```
pub fn quantile(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    f64::from(sorted[rank.min(sorted.len()) - 1])
}

/// The distribution of a sorted sample at every percentile: (value, fraction at or below).
pub fn cdf(sorted: &[f32]) -> Vec<(f64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    (0..=100)
        .map(|p| {
            let q = f64::from(p) / 100.0;
            (quantile(sorted, q), q)
        })
        .collect()
}

/// Peak resident set size of this process, from `/proc/self/status` (`VmHWM`); 0 where that
/// is not available.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

impl Report {
    /// Share of delivered lookups that took `h` hops, in percent.
    pub fn hop_share(&self, h: usize) -> f64 {
        let total: u64 = self.hops_histogram.iter().sum();
        let c = self.hops_histogram.get(h).copied().unwrap_or(0);
        100.0 * c as f64 / total.max(1) as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pastry-sim: {} nodes on {} (b = {}, L = {}), seed {}{}",
            self.nodes,
            self.topology,
            self.b,
            self.leaf_set,
            self.seed,
            if self.loss > 0.0 {
                format!(", loss {}", self.loss)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "  build: {} of {} active in {:.1} s simulated, {:.2} s wall; {:.0} datagrams and {:.0} ms (median) per join",
            self.build_active,
            self.nodes,
            self.build_sim_seconds,
            self.build_wall_seconds,
            self.join_msgs_per_node,
            self.join_time_median_ms
        )?;
        writeln!(
            f,
            "  measured: {:.0} s simulated; {} joins, {} departures; {} active at the end",
            self.measured_seconds,
            self.joins_during_run,
            self.departures_during_run,
            self.active_at_end
        )?;
        writeln!(
            f,
            "  lookups: {} sent, {} delivered, {} correct, {} incorrect, {} lost",
            self.lookups_sent, self.delivered, self.correct, self.incorrect, self.lost
        )?;
        writeln!(
            f,
            "  hops: mean {:.3}, max {}; RDP mean {:.3}, median {:.3}, p95 {:.3}",
            self.hops_mean, self.hops_max, self.rdp_mean, self.rdp_median, self.rdp_p95
        )?;
        writeln!(
            f,
            "  answers: {} reached their origin, after {:.0} ms median, {:.0} ms p95, {:.0} ms p99",
            self.answered, self.answer_ms_median, self.answer_ms_p95, self.answer_ms_p99
        )?;
        if let (Some(mean), Some(median), Some(hops)) = (
            self.rdp_ideal_mean,
            self.rdp_ideal_median,
            self.hops_ideal_mean,
        ) {
            writeln!(
                f,
                "  over perfect tables (same ring, first {} of these lookups): RDP mean {mean:.3}, median {median:.3}; hops mean {hops:.3}",
                self.rdp_ideal_samples
            )?;
            if self.rdp_ideal_samples < self.rdp_samples
                && let Some(m) = self.rdp_measured_same_lookups_mean
            {
                writeln!(f, "  measured RDP mean over those lookups: {m:.3}")?;
            }
        }
        let shares: Vec<String> = (0..self.hops_histogram.len())
            .map(|h| format!("{h}: {:.2}%", self.hop_share(h)))
            .collect();
        writeln!(f, "  hop shares: {}", shares.join(", "))?;
        for p in &self.phases {
            writeln!(
                f,
                "  {:<12} [{:>7.1} s, {:>7.1} s): {} lookups, mean hops {:.3}, {} incorrect, {} lost",
                p.name, p.from_s, p.to_s, p.lookups, p.hops_mean, p.incorrect, p.lost
            )?;
        }
        if self.fail_fraction > 0.0 {
            match self.repaired_after_s {
                Some(s) => writeln!(
                    f,
                    "  {} nodes failed; repaired {s:.0} s later ({:.2}% of table entries still stale)",
                    self.failed_nodes,
                    100.0 * self.stale_table_fraction_at_repair.unwrap_or(0.0)
                )?,
                None => writeln!(
                    f,
                    "  {} nodes failed; not fully repaired within the run",
                    self.failed_nodes
                )?,
            }
        }
        writeln!(
            f,
            "  control: {:.3} msgs and {:.1} bytes per node per second",
            self.control_msgs_per_node_per_sec, self.control_bytes_per_node_per_sec
        )?;
        let mut types: Vec<(&String, &f64)> =
            self.datagrams_by_type_per_node_per_sec.iter().collect();
        types.sort_by(|a, b| b.1.total_cmp(a.1));
        let types: Vec<String> = types.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        writeln!(f, "  datagrams per node per second: {}", types.join(", "))?;
        let parts: Vec<String> = self
            .state_breakdown
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect();
        writeln!(
            f,
            "  state: {:.0} bytes per node ({}), {:.1} routing-table entries per node{}",
            self.state_bytes_per_node,
            parts.join(", "),
            self.routing_table_entries_mean,
            if self.routing_table_spares_mean > 0.0 {
                format!(" and {:.1} spares", self.routing_table_spares_mean)
            } else {
                String::new()
            }
        )?;
        write!(
            f,
            "  {} events in {:.2} s wall ({:.0} per second), peak RSS {:.1} MiB",
            self.sim_events,
            self.wall_seconds,
            self.events_per_wall_second,
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        )
    }
}
