//! Shared helpers of the integration tests: a seeded generator, a test configuration with
//! short timers, ring building and the closeness oracle. Executor-agnostic: the caller passes
//! the function that spawns drivers.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_io::Timer;
use futures_lite::future;
use pastry_smol::{Config, Driver, Id, NodeBuilder, NodeHandle, PastryNode};

/// SplitMix64: a small seeded generator for keys, ids and choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn id(&mut self) -> Id {
        Id::new((u128::from(self.u64()) << 64) | u128::from(self.u64()))
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }
}

/// The seed of a test: `PASTRY_SEED` if set, else `default`. Printed, so that a failure can
/// be replayed.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("PASTRY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("seed {seed} (set PASTRY_SEED to change)");
    seed
}

/// Short timers, so that joins, retries and leaves take milliseconds on the loopback.
pub fn config() -> Config {
    let mut c = Config::default();
    c.heartbeat_period = Duration::from_secs(1);
    c.failure_timeout = Duration::from_secs(3);
    c.rto_initial = Duration::from_millis(200);
    c.rto_min = Duration::from_millis(20);
    c.rto_max = Duration::from_millis(500);
    c.join_timeout = Duration::from_secs(1);
    c.join_attempts = 3;
    c.lookup_timeout = Duration::from_secs(1);
    c.hold_timeout = Duration::from_secs(3);
    c.validate().expect("valid test configuration");
    c
}

/// The time limit on each join.
pub const JOIN_LIMIT: Duration = Duration::from_secs(5);
/// The time limit on each lookup.
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(5);

/// An address of the loopback interface of this test's own: `127.a.b.c` (on Linux every
/// 127/8 address is local), or `127.0.0.1` where only that one binds. Rings of tests that run
/// at the same time (in this process or in others: other crates' tests too) then never
/// reach each other through a port one of them freed and another reused: the core has no
/// ring identifier, so two rings that exchange datagrams merge.
pub fn loopback() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut rng = Rng::new(
        u64::from(std::process::id()) << 32
            | u64::from(nanos ^ NEXT.fetch_add(1, Ordering::Relaxed)),
    );
    let r = rng.u64();
    let ip = Ipv4Addr::new(
        127,
        1 + (r % 250) as u8,
        (r >> 8) as u8,
        1 + ((r >> 16) % 250) as u8,
    );
    if UdpSocket::bind((ip, 0)).is_ok() {
        IpAddr::V4(ip)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// `fut`, or `None` after `limit`.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// A node on `ip` with the test configuration and an id and seed from `rng`.
pub fn node(ip: IpAddr, rng: &mut Rng, spawn: &impl Fn(Driver)) -> PastryNode {
    let (node, driver) = NodeBuilder::new(config())
        .id(rng.id())
        .seed(rng.u64())
        .join_timeout(JOIN_LIMIT)
        .bind(SocketAddr::new(ip, 0))
        .expect("bind");
    spawn(driver);
    node
}

/// `n` nodes on `ip`: the first starts the ring, each other joins through a random earlier
/// one, one after another; every join must succeed within [`JOIN_LIMIT`].
pub async fn ring(ip: IpAddr, n: usize, rng: &mut Rng, spawn: &impl Fn(Driver)) -> Vec<PastryNode> {
    let mut nodes: Vec<PastryNode> = Vec::with_capacity(n);
    for i in 0..n {
        let node = node(ip, rng, spawn);
        if i == 0 {
            node.bootstrap().await.expect("bootstrap");
        } else {
            let via = nodes[rng.below(i)].local_addr();
            let started = std::time::Instant::now();
            node.join(via)
                .await
                .unwrap_or_else(|e| panic!("node {i} ({}) joining via {via}: {e}", node.id()));
            assert!(started.elapsed() <= JOIN_LIMIT);
        }
        nodes.push(node);
    }
    nodes
}

/// The member whose id is numerically closest to `key` (the one closeness order of the
/// project, ties to the lower id).
pub fn closest(key: Id, members: &[NodeHandle<SocketAddr>]) -> NodeHandle<SocketAddr> {
    members
        .iter()
        .min_by(|a, b| key.cmp_closeness(a.id, b.id))
        .expect("members")
        .clone()
}

/// Runs `count` lookups of keys from `rng` (random keys, node ids and their neighbours) from
/// random nodes of `nodes`, and checks each root against `members`. Returns the hop counts.
pub async fn check_lookups(
    nodes: &[PastryNode],
    members: &[NodeHandle<SocketAddr>],
    count: usize,
    rng: &mut Rng,
) -> Vec<u8> {
    let mut hops = Vec::with_capacity(count);
    for k in 0..count {
        let key = match k % 4 {
            0 => {
                let m = &members[rng.below(members.len())];
                m.id.wrapping_add(u128::from(rng.u64() % 3)).wrapping_sub(1)
            }
            _ => rng.id(),
        };
        let from = &nodes[rng.below(nodes.len())];
        let (root, h) = within(LOOKUP_LIMIT, from.lookup(key))
            .await
            .unwrap_or_else(|| panic!("lookup {k} of {key} from {} timed out", from.id()))
            .unwrap_or_else(|e| panic!("lookup {k} of {key} from {}: {e}", from.id()));
        let want = closest(key, members);
        assert_eq!(
            root,
            want,
            "lookup {k} of {key} from {}: root {} instead of {}",
            from.id(),
            root.id,
            want.id
        );
        hops.push(h);
    }
    hops
}

/// Mean and maximum of hop counts.
pub fn hop_summary(hops: &[u8]) -> (f64, u8) {
    let sum: u64 = hops.iter().map(|&h| u64::from(h)).sum();
    (
        sum as f64 / hops.len().max(1) as f64,
        hops.iter().copied().max().unwrap_or(0),
    )
}
