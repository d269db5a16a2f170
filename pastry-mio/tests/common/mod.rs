//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use pastry_core::{Config, Id};

/// The seed of a test: `PASTRY_MIO_SEED` if set, else `default`. Printed, so that a failing run
/// can be repeated.
pub fn seed(test: &str, default: u64) -> u64 {
    let seed = std::env::var("PASTRY_MIO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("{test}: seed {seed} (set PASTRY_MIO_SEED to change it)");
    seed
}

/// SplitMix64: small, seedable, good enough to pick ids, keys and nodes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn id(&mut self) -> Id {
        Id::new(u128::from(self.next_u64()) << 64 | u128::from(self.next_u64()))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The index of the id closest to `key` under the core's closeness order.
pub fn closest(key: Id, ids: &[Id]) -> usize {
    (0..ids.len())
        .min_by(|&a, &b| key.cmp_closeness(ids[a], ids[b]))
        .expect("at least one id")
}

/// A configuration with short timers, so that retries and failures show within a test.
pub fn quick_config() -> Config {
    let mut c = Config::default();
    c.rto_initial = Duration::from_millis(50);
    c.rto_min = Duration::from_millis(20);
    c.rto_max = Duration::from_millis(200);
    c.join_timeout = Duration::from_millis(200);
    c.join_attempts = 3;
    c.lookup_timeout = Duration::from_millis(500);
    c
}

/// An address on the loopback where nobody listens: a port just bound and released on
/// 127.0.0.2, where no test binds (they bind 127.0.0.1), so that no other test's socket can
/// take it meanwhile. Linux routes all of 127.0.0.0/8 to the loopback.
pub fn closed_port() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind a probe socket");
    socket.local_addr().expect("its address")
}
