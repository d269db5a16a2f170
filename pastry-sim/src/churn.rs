//! Churn processes: how long nodes stay, and when new ones arrive.
//!
//! Session times are exponential, given by their median (the figure churn studies report);
//! arrivals are a Poisson process whose rate keeps the population at its target on average:
//! with mean session `S` and target `N`, nodes arrive at `N / S` per second, which is the rate
//! at which a population of `N` loses members.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use pastry_core::Instant;

use crate::{Addr, Network, NodeState};

/// Draws from an exponential distribution with the given mean, from a uniform number `u` in
/// `[0, 1)` (inverse transform: `-mean * ln(1 - u)`).
///
/// ```
/// use std::time::Duration;
/// use pastry_sim::churn::exponential;
/// let mean = Duration::from_secs(100);
/// assert_eq!(exponential(mean, 0.0), Duration::ZERO);
/// // The median of an exponential distribution is ln 2 times its mean.
/// let median = exponential(mean, 0.5).as_secs_f64();
/// assert!((median - 100.0 * std::f64::consts::LN_2).abs() < 1e-6);
/// ```
pub fn exponential(mean: Duration, u: f64) -> Duration {
    let u = u.clamp(0.0, 1.0 - f64::EPSILON);
    Duration::from_secs_f64(-mean.as_secs_f64() * (1.0 - u).ln())
}

/// Churn with exponential session times and Poisson arrivals that hold a population steady.
///
/// ```
/// use std::time::Duration;
/// use pastry_sim::churn::Churn;
/// let c = Churn::new(Duration::from_secs(600), 10_000);
/// // Mean session = median / ln 2.
/// assert!((c.mean_session().as_secs_f64() - 865.6).abs() < 0.1);
/// // 10,000 nodes lose about 11.6 members per second; as many arrive.
/// assert!((c.arrival_rate() - 11.55).abs() < 0.01);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Churn {
    median_session: Duration,
    target: usize,
}

impl Churn {
    /// Sessions with the given median; arrivals that keep `target` nodes on average.
    pub fn new(median_session: Duration, target: usize) -> Self {
        Churn {
            median_session,
            target,
        }
    }

    /// The median session time.
    pub fn median_session(&self) -> Duration {
        self.median_session
    }

    /// The mean session time: the median over ln 2.
    pub fn mean_session(&self) -> Duration {
        self.median_session.div_f64(std::f64::consts::LN_2)
    }

    /// Arrivals per second: target population over mean session.
    pub fn arrival_rate(&self) -> f64 {
        self.target as f64 / self.mean_session().as_secs_f64()
    }

    /// A session time, from a uniform number in `[0, 1)`.
    pub fn session(&self, u: f64) -> Duration {
        exponential(self.mean_session(), u)
    }

    /// The time to the next arrival, from a uniform number in `[0, 1)`.
    pub fn interarrival(&self, u: f64) -> Duration {
        exponential(Duration::from_secs_f64(1.0 / self.arrival_rate()), u)
    }
}

/// Churn applied to a [`Network`]: departures scheduled for every node, arrivals of new
/// nodes, each joining through a nearby active node.
///
/// ```
/// use std::time::Duration;
/// use pastry_sim::churn::{Churn, ChurnRun};
/// use pastry_sim::{NetConfig, Network};
/// let mut net = Network::new(NetConfig::with_seed(3));
/// net.grow(20, Duration::from_secs(60)).unwrap();
/// let mut run = ChurnRun::start(Churn::new(Duration::from_secs(60), 20), &mut net);
/// let (mut joined, mut failed) = (0, 0);
/// let end = net.now() + Duration::from_secs(600);
/// while let Some(t) = run.next_event().filter(|t| *t < end) {
///     net.run_until(t);
///     let step = run.apply(&mut net, t);
///     joined += step.arrived.is_some() as u32;
///     failed += step.departed;
/// }
/// // Ten minutes of one-minute sessions: the nodes turned over several times.
/// assert!(joined > 40 && failed > 40, "{joined} joined, {failed} failed");
/// ```
pub struct ChurnRun {
    churn: Churn,
    departures: BinaryHeap<Reverse<(Instant, Addr)>>,
    next_arrival: Instant,
}

/// What [`ChurnRun::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChurnStep {
    /// The node that arrived (and started to join), if one did.
    pub arrived: Option<Addr>,
    /// Nodes that failed silently.
    pub departed: u32,
}

impl ChurnRun {
    /// Draws a session for every active node and the first arrival, from now.
    pub fn start(churn: Churn, net: &mut Network) -> Self {
        let t0 = net.now();
        let mut departures = BinaryHeap::new();
        for a in net.active_addrs() {
            departures.push(Reverse((t0 + churn.session(net.random_unit()), a)));
        }
        let next_arrival = t0 + churn.interarrival(net.random_unit());
        ChurnRun {
            churn,
            departures,
            next_arrival,
        }
    }

    /// When the next arrival or departure is due.
    pub fn next_event(&self) -> Option<Instant> {
        let departure = self.departures.peek().map(|Reverse((t, _))| *t);
        Some(departure.map_or(self.next_arrival, |d| d.min(self.next_arrival)))
    }

    /// Carries out what is due at `t` (the network's current time): the arrival, if it is
    /// due, then every departure due by `t` of a node still running.
    pub fn apply(&mut self, net: &mut Network, t: Instant) -> ChurnStep {
        let mut step = ChurnStep::default();
        if self.next_arrival == t {
            let id = net.random_id();
            let a = net.spawn(id);
            match net.nearby_active(a, 256) {
                Some(via) => net.join(a, via),
                None => net.bootstrap(a),
            }
            step.arrived = Some(a);
            self.departures
                .push(Reverse((t + self.churn.session(net.random_unit()), a)));
            self.next_arrival = t + self.churn.interarrival(net.random_unit());
        }
        while let Some(Reverse((d, a))) = self.departures.peek().copied()
            && d <= t
        {
            self.departures.pop();
            if matches!(net.state(a), NodeState::Active | NodeState::Joining) {
                net.kill(a);
                step.departed += 1;
            }
        }
        step
    }
}

/// What [`drive`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Driven {
    /// Nodes that arrived.
    pub joined: u64,
    /// Nodes that failed.
    pub departed: u64,
    /// Active nodes times seconds, summed over the run (to turn counts into rates).
    pub node_seconds: f64,
}

/// Runs `net` until `end` under `churn` (none: a stable ring), and calls `tick` at `first`
/// and every `every` after it with the network, the time, and the nodes that arrived since
/// the last tick. At a moment due for both, churn comes first.
///
/// ```
/// use std::time::Duration;
/// use pastry_sim::churn::{drive, Churn, ChurnRun};
/// use pastry_sim::{NetConfig, Network};
/// let mut net = Network::new(NetConfig::with_seed(3));
/// net.grow(20, Duration::from_secs(60)).unwrap();
/// let mut run = ChurnRun::start(Churn::new(Duration::from_secs(60), 20), &mut net);
/// let (start, end) = (net.now(), net.now() + Duration::from_secs(600));
/// let mut ticks = 0;
/// let driven = drive(&mut net, Some(&mut run), end, start, Duration::from_secs(10), |_, _, _| {
///     ticks += 1
/// });
/// assert_eq!(ticks, 60);
/// assert!(driven.joined > 40 && driven.departed > 40);
/// ```
pub fn drive(
    net: &mut Network,
    mut churn: Option<&mut ChurnRun>,
    end: Instant,
    first: Instant,
    every: Duration,
    mut tick: impl FnMut(&mut Network, Instant, Vec<Addr>),
) -> Driven {
    let mut driven = Driven::default();
    let mut next_tick = first;
    let mut arrived = Vec::new();
    loop {
        let t = churn
            .as_deref()
            .and_then(ChurnRun::next_event)
            .map_or(next_tick, |c| c.min(next_tick));
        if t >= end {
            break;
        }
        let before = net.now();
        net.run_until(t);
        driven.node_seconds += net.active_len() as f64 * (t - before).as_secs_f64();
        if let Some(c) = churn.as_deref_mut() {
            let step = c.apply(net, t);
            driven.joined += u64::from(step.arrived.is_some());
            driven.departed += u64::from(step.departed);
            arrived.extend(step.arrived);
        }
        if next_tick == t {
            tick(net, t, std::mem::take(&mut arrived));
            next_tick = t + every;
        }
    }
    net.run_until(end);
    driven
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{Rng, SeedableRng};

    fn unit(rng: &mut ChaCha8Rng) -> f64 {
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sample statistics of sessions and arrivals match their parameters: the sample median of
    /// sessions is within 3% of the configured one, the mean within 3% of median / ln 2, and
    /// the number of arrivals in a long window within 3% of rate × window.
    #[test]
    fn rates_match_parameters() {
        for seed in [1u64, 2, 3] {
            println!("seed {seed}");
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let c = Churn::new(Duration::from_secs(600), 10_000);
            let n = 100_000;
            let mut s: Vec<f64> = (0..n)
                .map(|_| c.session(unit(&mut rng)).as_secs_f64())
                .collect();
            s.sort_by(f64::total_cmp);
            let median = s[n / 2];
            let mean = s.iter().sum::<f64>() / n as f64;
            assert!((median / 600.0 - 1.0).abs() < 0.03, "median {median}");
            let want_mean = c.mean_session().as_secs_f64();
            assert!((mean / want_mean - 1.0).abs() < 0.03, "mean {mean}");

            let window = 3600.0;
            let mut t = 0.0;
            let mut arrivals = 0u64;
            loop {
                t += c.interarrival(unit(&mut rng)).as_secs_f64();
                if t > window {
                    break;
                }
                arrivals += 1;
            }
            let want = c.arrival_rate() * window;
            assert!(
                (arrivals as f64 / want - 1.0).abs() < 0.03,
                "{arrivals} arrivals, expected {want}"
            );
        }
    }

    /// A population that starts at the target and follows the process stays near it.
    #[test]
    fn population_stays_near_target() {
        let seed = 9;
        println!("seed {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let target = 2_000;
        let c = Churn::new(Duration::from_secs(60), target);
        let mut departures: Vec<f64> = (0..target)
            .map(|_| c.session(unit(&mut rng)).as_secs_f64())
            .collect();
        let mut t = 0.0;
        let end = 1800.0;
        let mut samples = Vec::new();
        while t < end {
            t += c.interarrival(unit(&mut rng)).as_secs_f64();
            departures.retain(|d| *d > t);
            departures.push(t + c.session(unit(&mut rng)).as_secs_f64());
            samples.push(departures.len() as f64);
        }
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!(
            (mean / target as f64 - 1.0).abs() < 0.05,
            "mean population {mean}, target {target}"
        );
    }
}
