//! pastry-tokio under turmoil: simulated hosts and network, virtual time. A partition that
//! heals and a host that crashes; lookups land at the closest node reachable.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use pastry_core::{Config, Id};
use pastry_tokio::{Builder, PastryNode, Socket};

/// turmoil's socket, as the driver's [`Socket`]. Sockets bind the unspecified address in
/// turmoil; the node's address is the host's.
struct Sim(turmoil::net::UdpSocket, SocketAddr);

impl Socket for Sim {
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.0.recv_from(buf)
    }
    fn send_to(
        &self,
        buf: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        self.0.send_to(buf, to)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.1)
    }
}

const PORT: u16 = 9000;
const HOSTS: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

fn id_of(name: &str) -> Id {
    // Spread over the ring, deterministic.
    let i = name.bytes().fold(0u128, |h, b| {
        h.wrapping_mul(0x100_0000_01b3) ^ u128::from(b)
    });
    Id::new(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834))
}

fn addr_of(name: &str) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(name), PORT)
}

async fn start(name: &str) -> PastryNode {
    let ip: IpAddr = turmoil::lookup(name);
    let socket = turmoil::net::UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), PORT))
        .await
        .expect("bind");
    let node = Builder::new(Config::default())
        .id(id_of(name))
        .seed(u64::from(name.as_bytes()[1]))
        .bind_socket(Sim(socket, SocketAddr::new(ip, PORT)))
        .expect("node");
    if name == "n1" {
        node.bootstrap().await.expect("bootstrap");
    } else {
        // The first node may not be up yet: try until the join succeeds.
        loop {
            if node.join(addr_of("n1")).await.is_ok() {
                break;
            }
        }
    }
    node
}

fn closest(names: &[&str], key: Id) -> Id {
    names
        .iter()
        .map(|n| id_of(n))
        .min_by(|a, b| key.cmp_closeness(*a, *b))
        .unwrap()
}

#[test]
fn a_partition_heals_and_a_crashed_host_is_routed_around() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(1200))
        .build();
    for name in HOSTS {
        sim.host(name, move || async move {
            let _node = start(name).await;
            std::future::pending::<()>().await;
            Ok(())
        });
    }
    sim.client("probe", async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let me = start("probe").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut everyone = HOSTS.to_vec();
        everyone.push("probe");
        // Every node is the root of its own id.
        for name in &everyone {
            let found = me.lookup(id_of(name)).await.expect("lookup");
            assert_eq!(found.root.id, id_of(name), "{name}");
        }
        // Cut n3 off from everyone: the others find it dead and its keys move on.
        for other in everyone.iter().filter(|n| **n != "n3") {
            turmoil::partition("n3", *other);
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        let reachable: Vec<&str> = everyone.iter().copied().filter(|n| *n != "n3").collect();
        let found = me
            .lookup(id_of("n3"))
            .await
            .expect("lookup during the partition");
        assert_eq!(found.root.id, closest(&reachable, id_of("n3")));
        // Heal: n3, alone, rejoins through a node it knows, and is the root of its id again.
        for other in everyone.iter().filter(|n| **n != "n3") {
            turmoil::repair("n3", *other);
        }
        let mut back = false;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if me.lookup(id_of("n3")).await.ok().map(|f| f.root.id) == Some(id_of("n3")) {
                back = true;
                break;
            }
        }
        assert!(
            back,
            "n3 is the root of its id again after the partition heals"
        );
        // The test loop crashes n4 at 600 s; by 700 s its keys have moved on.
        tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(1)).await;
        while turmoil::sim_elapsed().unwrap_or_default() < Duration::from_secs(700) {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let alive: Vec<&str> = everyone.iter().copied().filter(|n| *n != "n4").collect();
        for name in &everyone {
            let found = me
                .lookup(id_of(name))
                .await
                .expect("lookup after the crash");
            assert_eq!(found.root.id, closest(&alive, id_of(name)), "{name}");
        }
        Ok(())
    });
    let mut crashed = false;
    while !sim.step().expect("the simulation runs") {
        if !crashed && sim.elapsed() >= Duration::from_secs(600) {
            sim.crash("n4");
            crashed = true;
        }
    }
    assert!(crashed, "the client outlived the crash");
}
