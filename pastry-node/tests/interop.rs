//! One ring of tokio, mio and smol nodes on 127.0.0.1: every lookup, from a tokio or a smol
//! node, lands at the numerically closest node, whichever runtime that node runs on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pastry_core::{Config, Id};

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn id(&mut self) -> Id {
        Id::new(u128::from(self.next()) << 64 | u128::from(self.next()))
    }
}

#[test]
fn tokio_mio_and_smol_nodes_form_one_ring() {
    let seed = 0x001d_7e0b;
    println!("seed {seed}");
    let mut rng = SplitMix(seed);
    let per_kind = 8;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // tokio: the first node starts the ring.
    let mut ids = Vec::new();
    let mut tokio_nodes = Vec::new();
    for i in 0..per_kind {
        let id = rng.id();
        ids.push(id);
        let node = rt
            .block_on(
                pastry_tokio::Builder::new(Config::default())
                    .id(id)
                    .seed(rng.next())
                    .bind("127.0.0.1:0"),
            )
            .unwrap();
        if i == 0 {
            rt.block_on(node.bootstrap()).unwrap();
        } else {
            let first: &pastry_tokio::PastryNode = &tokio_nodes[0];
            rt.block_on(node.join(first.local_addr())).unwrap();
        }
        tokio_nodes.push(node);
    }
    let entry: SocketAddr = tokio_nodes[0].local_addr();

    // mio: its own thread and event loop.
    let mut runner = pastry_mio::Runner::new().unwrap();
    for _ in 0..per_kind {
        let id = rng.id();
        ids.push(id);
        let node = pastry_mio::MioNode::bind(
            "127.0.0.1:0".parse().unwrap(),
            Config::default(),
            id,
            rng.next(),
        )
        .unwrap();
        runner.add(node).unwrap();
    }
    let mio_active = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mio_thread = {
        let (active, stop) = (mio_active.clone(), stop.clone());
        std::thread::spawn(move || {
            for n in runner.nodes_mut() {
                n.join(entry).unwrap();
            }
            while !stop.load(Ordering::Relaxed) {
                runner.turn(Some(Duration::from_millis(20))).unwrap();
                let mut count = 0;
                for n in runner.nodes_mut() {
                    while n.poll_event().is_some() {}
                    if n.node().is_active() {
                        count += 1;
                    }
                }
                active.store(count, Ordering::Relaxed);
            }
        })
    };

    // smol: each driver on a thread of its own.
    let mut smol_nodes = Vec::new();
    for _ in 0..per_kind {
        let id = rng.id();
        ids.push(id);
        let (node, driver) = pastry_smol::NodeBuilder::new(Config::default())
            .id(id)
            .seed(rng.next())
            .bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        std::thread::spawn(move || smol::block_on(driver));
        smol::block_on(node.join(entry)).expect("a smol node joins");
        smol_nodes.push(node);
    }
    for _ in 0..500 {
        if mio_active.load(Ordering::Relaxed) == per_kind {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        mio_active.load(Ordering::Relaxed),
        per_kind,
        "every mio node is active"
    );
    std::thread::sleep(Duration::from_millis(300));

    let closest = |key: Id| {
        *ids.iter()
            .min_by(|a, b| key.cmp_closeness(**a, **b))
            .unwrap()
    };
    let mut roots_by_kind = [0usize; 3];
    for i in 0..600 {
        let key = rng.id();
        let want = closest(key);
        let got = if i % 2 == 0 {
            let n = &tokio_nodes[(rng.next() % per_kind as u64) as usize];
            rt.block_on(n.lookup(key))
                .expect("lookup from tokio")
                .root
                .id
        } else {
            let n = &smol_nodes[(rng.next() % per_kind as u64) as usize];
            smol::block_on(n.lookup(key))
                .expect("lookup from smol")
                .0
                .id
        };
        assert_eq!(got, want, "lookup {i} for {key:?}");
        roots_by_kind[ids.iter().position(|x| *x == want).unwrap() / per_kind] += 1;
    }
    println!("roots by runtime (tokio, mio, smol): {roots_by_kind:?}");
    assert!(
        roots_by_kind.iter().all(|c| *c > 0),
        "every kind was a root"
    );

    for n in &smol_nodes {
        let _ = smol::block_on(n.shutdown());
    }
    for n in &tokio_nodes {
        rt.block_on(n.shutdown()).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    mio_thread.join().unwrap();
}
