//! Network topologies: where nodes sit and how long a datagram takes between two of them.

use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

/// The kind of topology, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TopologyKind {
    /// Uniform points in `[0, 1000]²`; latency proportional to Euclidean distance.
    Plane,
    /// Uniform points on a sphere (as FreePastry's simulator); latency proportional to the
    /// great-circle distance.
    #[default]
    Sphere,
    /// A generated GT-ITM-style hierarchy of transit and stub domains; latency is the shortest
    /// path between the routers two nodes attach to.
    TransitStub,
}

impl fmt::Display for TopologyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopologyKind::Plane => "plane",
            TopologyKind::Sphere => "sphere",
            TopologyKind::TransitStub => "transit-stub",
        })
    }
}

impl FromStr for TopologyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plane" => Ok(TopologyKind::Plane),
            "sphere" => Ok(TopologyKind::Sphere),
            "transit-stub" => Ok(TopologyKind::TransitStub),
            other => Err(format!(
                "unknown topology {other:?}: expected plane, sphere or transit-stub"
            )),
        }
    }
}

/// Where a node sits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Point {
    /// On the plane.
    Plane(f32, f32),
    /// On the unit sphere.
    Sphere([f32; 3]),
    /// Attached to a router with an access link.
    Router {
        /// Router index.
        router: u32,
        /// One-way latency of the access link, in microseconds.
        access: u32,
    },
    /// No position: every latency is the same.
    Nowhere,
}

/// One-way latency across the plane's unit of distance (the diagonal is about 141 ms).
const PLANE_PER_UNIT_MICROS: f64 = 100.0;
/// One-way latency between antipodes on the sphere.
const SPHERE_ANTIPODES_MICROS: f64 = 150_000.0;
/// Smallest one-way latency between two distinct nodes.
const MIN_LATENCY_MICROS: u64 = 100;

/// Routers and shortest paths of a transit-stub topology.
#[derive(Clone)]
struct TransitStub {
    /// Shortest one-way latency between routers, microseconds, row-major.
    dist: Vec<u32>,
    routers: usize,
    /// Stub routers (the ones nodes attach to).
    stubs: Vec<u32>,
}

/// A topology: how nodes are placed and the latency between them.
///
/// ```
/// use pastry_sim::{Topology, TopologyKind};
/// let mut t = Topology::new(TopologyKind::Sphere, 7);
/// let (a, b) = (t.place(), t.place());
/// assert_eq!(t.latency(&a, &b), t.latency(&b, &a));
/// assert!(t.latency(&a, &b).as_millis() <= 151);
/// ```
#[derive(Clone)]
pub struct Topology {
    kind: Option<TopologyKind>,
    rng: ChaCha8Rng,
    constant: Duration,
    ts: Option<TransitStub>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Topology {
    /// A topology of the given kind; `seed` drives placement (and, for transit-stub, the
    /// generated graph).
    pub fn new(kind: TopologyKind, seed: u64) -> Self {
        let mut rng = <ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(seed ^ 0x746f_706f);
        let ts = (kind == TopologyKind::TransitStub).then(|| TransitStub::generate(&mut rng));
        Topology {
            kind: Some(kind),
            rng,
            constant: Duration::ZERO,
            ts,
        }
    }

    /// Every datagram takes `latency`.
    pub fn constant(latency: Duration) -> Self {
        Topology {
            kind: None,
            rng: <ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(0),
            constant: latency,
            ts: None,
        }
    }

    /// The kind, if not a constant latency.
    pub fn kind(&self) -> Option<TopologyKind> {
        self.kind
    }

    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A position for a new node.
    pub fn place(&mut self) -> Point {
        match self.kind {
            None => Point::Nowhere,
            Some(TopologyKind::Plane) => {
                Point::Plane((self.unit() * 1000.0) as f32, (self.unit() * 1000.0) as f32)
            }
            Some(TopologyKind::Sphere) => {
                // Uniform on the sphere: z uniform in [-1, 1], angle uniform.
                let z = 2.0 * self.unit() - 1.0;
                let phi = 2.0 * std::f64::consts::PI * self.unit();
                let r = (1.0 - z * z).sqrt();
                Point::Sphere([(r * phi.cos()) as f32, (r * phi.sin()) as f32, z as f32])
            }
            Some(TopologyKind::TransitStub) => {
                let stubs = &self.ts.as_ref().expect("generated").stubs;
                let i = (self.rng.next_u64() % stubs.len() as u64) as usize;
                let router = stubs[i];
                // Access links of 0.5 to 2.5 ms.
                let access = 500 + (self.rng.next_u64() % 2_000) as u32;
                Point::Router { router, access }
            }
        }
    }

    /// One-way latency between two positions.
    pub fn latency(&self, a: &Point, b: &Point) -> Duration {
        let micros = match (a, b) {
            (Point::Plane(x1, y1), Point::Plane(x2, y2)) => {
                let (dx, dy) = (f64::from(x1 - x2), f64::from(y1 - y2));
                ((dx * dx + dy * dy).sqrt() * PLANE_PER_UNIT_MICROS) as u64
            }
            (Point::Sphere(p), Point::Sphere(q)) => {
                let dot = f64::from(p[0] * q[0] + p[1] * q[1] + p[2] * q[2]).clamp(-1.0, 1.0);
                (dot.acos() / std::f64::consts::PI * SPHERE_ANTIPODES_MICROS) as u64
            }
            (
                Point::Router {
                    router: r1,
                    access: a1,
                },
                Point::Router {
                    router: r2,
                    access: a2,
                },
            ) => {
                let ts = self.ts.as_ref().expect("generated");
                let d = ts.dist[*r1 as usize * ts.routers + *r2 as usize];
                u64::from(*a1) + u64::from(d) + u64::from(*a2)
            }
            _ => return self.constant,
        };
        Duration::from_micros(micros.max(MIN_LATENCY_MICROS))
    }
}

impl TransitStub {
    /// Transit domains of transit routers, each transit router with stub domains of stub
    /// routers; random connected graphs inside each domain. Link latencies (one way):
    /// between transit domains 20-60 ms, inside a transit domain 5-20 ms, transit to stub
    /// 2-8 ms, inside a stub domain 0.5-3 ms.
    fn generate(rng: &mut ChaCha8Rng) -> TransitStub {
        const TRANSIT_DOMAINS: usize = 6;
        const TRANSIT_ROUTERS: usize = 8;
        const STUBS_PER_TRANSIT: usize = 4;
        const STUB_ROUTERS: usize = 8;
        let mut range = |lo: u32, hi: u32| lo + (rng.next_u64() % u64::from(hi - lo)) as u32;
        let mut edges: Vec<(usize, usize, u32)> = Vec::new();
        let mut n = 0usize;
        let mut transit: Vec<Vec<usize>> = Vec::new();
        let mut stubs = Vec::new();
        // A connected random graph on `nodes`: a random spanning tree plus extra links.
        let domain = |nodes: &[usize],
                      lo: u32,
                      hi: u32,
                      edges: &mut Vec<(usize, usize, u32)>,
                      range: &mut dyn FnMut(u32, u32) -> u32| {
            for i in 1..nodes.len() {
                let j = range(0, i as u32) as usize;
                edges.push((nodes[i], nodes[j], range(lo, hi)));
            }
            for _ in 0..nodes.len() / 2 {
                let (i, j) = (
                    range(0, nodes.len() as u32) as usize,
                    range(0, nodes.len() as u32) as usize,
                );
                if i != j {
                    edges.push((nodes[i], nodes[j], range(lo, hi)));
                }
            }
        };
        for _ in 0..TRANSIT_DOMAINS {
            let routers: Vec<usize> = (n..n + TRANSIT_ROUTERS).collect();
            n += TRANSIT_ROUTERS;
            domain(&routers, 5_000, 20_000, &mut edges, &mut range);
            transit.push(routers);
        }
        // Transit domains: a ring plus chords, between random routers of each domain.
        for d in 0..TRANSIT_DOMAINS {
            for e in [(d + 1) % TRANSIT_DOMAINS, (d + 2) % TRANSIT_DOMAINS] {
                let a = transit[d][range(0, TRANSIT_ROUTERS as u32) as usize];
                let b = transit[e][range(0, TRANSIT_ROUTERS as u32) as usize];
                edges.push((a, b, range(20_000, 60_000)));
            }
        }
        for domain_routers in &transit {
            for &gateway in domain_routers.iter().take(TRANSIT_ROUTERS) {
                for _ in 0..STUBS_PER_TRANSIT {
                    let routers: Vec<usize> = (n..n + STUB_ROUTERS).collect();
                    n += STUB_ROUTERS;
                    domain(&routers, 500, 3_000, &mut edges, &mut range);
                    edges.push((gateway, routers[0], range(2_000, 8_000)));
                    stubs.extend(routers.iter().map(|r| *r as u32));
                }
            }
        }
        let mut adj: Vec<Vec<(usize, u32)>> = vec![Vec::new(); n];
        for (a, b, w) in edges {
            adj[a].push((b, w));
            adj[b].push((a, w));
        }
        let mut dist = vec![u32::MAX; n * n];
        for s in 0..n {
            let row = &mut dist[s * n..(s + 1) * n];
            row[s] = 0;
            let mut heap = BinaryHeap::new();
            heap.push(std::cmp::Reverse((0u32, s)));
            while let Some(std::cmp::Reverse((d, v))) = heap.pop() {
                if d > row[v] {
                    continue;
                }
                for &(u, w) in &adj[v] {
                    let nd = d + w;
                    if nd < row[u] {
                        row[u] = nd;
                        heap.push(std::cmp::Reverse((nd, u)));
                    }
                }
            }
        }
        TransitStub {
            dist,
            routers: n,
            stubs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: TopologyKind) {
        let mut t = Topology::new(kind, 3);
        let points: Vec<Point> = (0..60).map(|_| t.place()).collect();
        for a in &points {
            for b in &points {
                assert_eq!(t.latency(a, b), t.latency(b, a), "{kind}: symmetric");
                for c in points.iter().take(20) {
                    let (ab, bc, ac) = (t.latency(a, b), t.latency(b, c), t.latency(a, c));
                    // Triangle inequality, up to rounding and the floor on tiny latencies.
                    assert!(
                        ac <= ab + bc + Duration::from_micros(2 * MIN_LATENCY_MICROS),
                        "{kind}: {ac:?} > {ab:?} + {bc:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn latencies_are_symmetric_and_obey_the_triangle_inequality() {
        check(TopologyKind::Plane);
        check(TopologyKind::Sphere);
        check(TopologyKind::TransitStub);
    }

    #[test]
    fn latencies_fall_in_the_stated_ranges() {
        let mut t = Topology::new(TopologyKind::Plane, 1);
        let max = (0..200)
            .map(|_| {
                let (a, b) = (t.place(), t.place());
                t.latency(&a, &b)
            })
            .max()
            .unwrap();
        assert!(max <= Duration::from_micros(141_422) && max > Duration::from_millis(60));
        let mut t = Topology::new(TopologyKind::Sphere, 1);
        let pts: Vec<Point> = (0..200).map(|_| t.place()).collect();
        let mean = pts
            .windows(2)
            .map(|w| t.latency(&w[0], &w[1]).as_micros())
            .sum::<u128>()
            / 199;
        // The mean great-circle distance is a quarter turn: half the antipodal latency.
        assert!((60_000..90_000).contains(&mean), "{mean}");
        let mut t = Topology::new(TopologyKind::TransitStub, 1);
        let pts: Vec<Point> = (0..200).map(|_| t.place()).collect();
        for w in pts.windows(2) {
            let l = t.latency(&w[0], &w[1]);
            assert!(
                l >= Duration::from_micros(MIN_LATENCY_MICROS) && l < Duration::from_millis(400),
                "{l:?}"
            );
        }
        assert_eq!(
            "transit-stub".parse::<TopologyKind>(),
            Ok(TopologyKind::TransitStub)
        );
        assert!("mesh".parse::<TopologyKind>().is_err());
    }
}
