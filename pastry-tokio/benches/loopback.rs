//! Loopback throughput: node A routes messages to a key owned by node B (each hop
//! acknowledged), beside a raw tokio UDP ping-pong measured in the same run, with the same
//! number of messages in flight. Prints both rates and their ratio.
//!
//! Each side's sending loop runs twice: in a task on the runtime's workers (as in a server,
//! where the work happens in spawned tasks), and on the thread that calls `block_on` (as the
//! body of `#[tokio::main]`). That thread is not a worker, so every hand-off to it costs a
//! thread wake-up; a routed message has two (the answer to `route` and the delivery event)
//! where a raw round trip has one.
//!
//! `cargo bench -p pastry-tokio --bench loopback` (add `-- --messages N` to change the count).

use std::time::{Duration, Instant};

use pastry_core::{Config, Event, Id};
use pastry_tokio::Builder;
use tokio::net::UdpSocket;

const WINDOW: usize = 32;

/// Raw UDP: a client keeps WINDOW pings in flight to an echo server. Returns pongs per second.
async fn ping_pong(count: usize) -> f64 {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = server.recv_from(&mut buf).await else {
                return;
            };
            if n == 1 {
                return;
            }
            let _ = server.send_to(&buf[..n], from).await;
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let payload = [7u8; 64];
    let start = Instant::now();
    let mut sent = 0;
    let mut got = 0;
    let mut buf = [0u8; 1500];
    while sent < WINDOW.min(count) {
        client.send_to(&payload, server_addr).await.unwrap();
        sent += 1;
    }
    while got < count {
        match tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await {
            Ok(Ok(_)) => got += 1,
            // A lost datagram (loopback under load): put another in flight.
            _ => sent -= 1,
        }
        if sent < count {
            client.send_to(&payload, server_addr).await.unwrap();
            sent += 1;
        }
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    client.send_to(&[0], server_addr).await.unwrap();
    let _ = echo.await;
    rate
}

/// Pastry: A routes messages for B's id, WINDOW in flight, counted as B delivers them.
async fn routed(count: usize) -> f64 {
    let b = Builder::new(Config::default())
        .id(Id::new(u128::MAX / 3))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    b.bootstrap().await.unwrap();
    let a = Builder::new(Config::default())
        .id(Id::new(u128::MAX / 3 * 2))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    a.join(b.local_addr()).await.unwrap();
    let mut events = b.events().unwrap();
    let key = b.id();
    let start = Instant::now();
    let mut sent = 0;
    let mut delivered = 0;
    while sent < WINDOW.min(count) {
        a.route(key, 1, vec![7u8; 64]).await.unwrap();
        sent += 1;
    }
    let mut in_flight = sent;
    while delivered < count {
        match tokio::time::timeout(Duration::from_millis(500), events.next()).await {
            Ok(Some(Event::Deliver(_))) => {
                delivered += 1;
                in_flight -= 1;
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("node b stopped"),
            // Messages the socket buffers dropped and the hop gave up on: fill the window.
            Err(_) => in_flight = 0,
        }
        while in_flight < WINDOW && sent < count + 10 * WINDOW {
            a.route(key, 1, vec![7u8; 64]).await.unwrap();
            sent += 1;
            in_flight += 1;
        }
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("loopback, {count} messages of 64 bytes, {WINDOW} in flight, median of 5 runs:");
    for (spawned, label) in [
        (true, "sender in a spawned task:"),
        (false, "sender on the block_on thread:"),
    ] {
        let (mut raw, mut pastry) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            if spawned {
                raw.push(rt.block_on(async { tokio::spawn(ping_pong(count)).await.unwrap() }));
                pastry.push(rt.block_on(async { tokio::spawn(routed(count)).await.unwrap() }));
            } else {
                raw.push(rt.block_on(ping_pong(count)));
                pastry.push(rt.block_on(routed(count)));
            }
        }
        let (raw, pastry) = (median(raw), median(pastry));
        println!("{label}");
        println!("  raw tokio UDP ping-pong:           {raw:>10.0} round trips/s");
        println!(
            "  pastry-tokio routed to the root:   {pastry:>10.0} messages/s (each hop acknowledged)"
        );
        println!("  ratio: {:.2}", pastry / raw);
    }
}
