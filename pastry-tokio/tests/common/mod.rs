//! Helpers shared by the UDP tests: a replayable generator and a ring of nodes.

use pastry_core::{Config, Id};
use pastry_tokio::{Builder, PastryNode};

/// A small deterministic generator, so that a failing run can be replayed from its seed.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn id(&mut self) -> Id {
        Id::new(u128::from(self.next()) << 64 | u128::from(self.next()))
    }
}

/// `n` nodes on 127.0.0.1, each joining through a random earlier one; `setup` adds to each
/// node's builder (its applications).
pub async fn ring(
    n: usize,
    rng: &mut SplitMix,
    setup: impl Fn(Builder) -> Builder,
) -> Vec<PastryNode> {
    let mut nodes: Vec<PastryNode> = Vec::new();
    for i in 0..n {
        let builder = Builder::new(Config::default())
            .id(rng.id())
            .seed(rng.next());
        let node = setup(builder).bind("127.0.0.1:0").await.expect("bind");
        if i == 0 {
            node.bootstrap().await.expect("bootstrap");
        } else {
            let via = nodes[(rng.next() % i as u64) as usize].local_addr();
            node.join(via).await.expect("join");
        }
        nodes.push(node);
    }
    nodes
}
