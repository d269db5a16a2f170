//! The per-datagram work of one node in a 1,000-node ring, measured with divan: decoding and
//! encoding a routed message, the routing decision, and a whole forwarded hop (the message
//! in, its acknowledgement and the next hop's copy out, the next hop's acknowledgement in).
//!
//! The ring is built by the simulator (the core has no network of its own); the node under
//! test is then driven directly, on a clock that advances a microsecond per hop. Its timer
//! queue is kept as it would be (the resend timers of acknowledged hops are dropped in
//! batches), but no timer comes due within a run: heartbeats are 30 s apart. The first
//! 8,192 hops, which fill the node's memory of recent message ids, are not measured.
//!
//! `cargo bench -p pastry-sim --bench hot_path`

use std::time::Duration;

use divan::Bencher;
use pastry_core::wire::{Datagram, Message, RouteBody, RouteMsg, encode_route};
use pastry_core::{Id, Instant, NodeHandle};
use pastry_sim::{Addr, NetConfig, Network};

fn main() {
    divan::main();
}

/// Keys the node under test forwards (it is not their root), and the messages it gets.
const KEYS: usize = 4096;

struct Setup {
    net: Network,
    /// The node under test.
    at: Addr,
    /// A leaf-set member of it, which sends it the requests.
    from: Addr,
    /// Per key: the request as `from` sends it, whose hop number and message id are patched.
    requests: Vec<Vec<u8>>,
    /// Per key: the next hop the node chooses, and its ack, whose hop number is patched.
    next: Vec<(Addr, Vec<u8>)>,
    /// Where a request's (and the forwarded copy's) hop number and message id sit, and where
    /// an ack's hop number sits.
    offsets: Offsets,
    now: Instant,
    count: u32,
}

#[derive(Clone, Copy)]
struct Offsets {
    seq: usize,
    msg_seq: usize,
    ack_seq: usize,
}

const MARK: u32 = 0xa5c3_5a3c;
const MARK2: u32 = 0x3c5a_c3a5;

fn find(bytes: &[u8], mark: u32) -> usize {
    bytes
        .windows(4)
        .position(|w| w == mark.to_be_bytes())
        .expect("the marked field is in the datagram")
}

fn patch(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn ring() -> Setup {
    let mut net = Network::new(NetConfig::with_seed(1));
    let built = net.grow_concurrently(1000, 256, Duration::from_secs(120), |_| {});
    assert_eq!(built, 1000, "the ring was not built");
    net.run_for(Duration::from_secs(60));
    let at = net.active_addrs()[0];
    let node = net.node(at).expect("active");
    let from = node
        .leaf_set()
        .members()
        .next()
        .expect("a leaf-set member")
        .handle
        .clone();
    let mut requests = Vec::new();
    let mut next = Vec::new();
    let mut offsets = None;
    let mut x = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834_u128;
    while requests.len() < KEYS {
        x = x
            .wrapping_mul(0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645)
            .wrapping_add(1);
        let key = Id::new(x);
        // Keys whose next hop is the sender would send the ack and the forwarded copy to one
        // address: left out.
        let Some(hop) = node.next_hop(key).filter(|h| h.addr != from.addr) else {
            continue;
        };
        let request = request(&from, key, MARK, MARK2);
        let ack = Datagram::<Addr>::new(hop.id, Message::Ack { seq: MARK }).to_bytes();
        offsets.get_or_insert(Offsets {
            seq: find(&request, MARK),
            msg_seq: find(&request, MARK2),
            ack_seq: find(&ack, MARK),
        });
        requests.push(request);
        next.push((hop.addr, ack));
    }
    let now = net.now();
    Setup {
        net,
        at,
        from: from.addr,
        requests,
        next,
        offsets: offsets.expect("keys were found"),
        now,
        count: 0,
    }
}

/// A lookup request on its second hop, as `from` forwards it.
fn request(from: &NodeHandle<Addr>, key: Id, seq: u32, msg_seq: u32) -> Vec<u8> {
    encode_route(
        from.id,
        &RouteMsg {
            seq,
            origin: from.clone(),
            msg_seq,
            key,
            hops: 1,
            body: RouteBody::Lookup { lookup: 5 },
        },
    )
}

#[divan::bench(sample_count = 1000, sample_size = 64)]
fn decode_route(bencher: Bencher) {
    let from = NodeHandle::new(Id::new(7), 7);
    let bytes = request(&from, Id::new(u128::MAX / 3), 9, 5);
    bencher.bench(|| Datagram::<Addr>::decode(divan::black_box(&bytes), 1400).unwrap());
}

#[divan::bench(sample_count = 1000, sample_size = 64)]
fn encode_route_request(bencher: Bencher) {
    let from = NodeHandle::new(Id::new(7), 7);
    bencher.bench(|| request(divan::black_box(&from), Id::new(u128::MAX / 3), 9, 5));
}

#[divan::bench(sample_count = 1000, sample_size = 64)]
fn next_hop(bencher: Bencher) {
    let s = ring();
    let node = s.net.node(s.at).unwrap();
    let keys: Vec<Id> = s
        .requests
        .iter()
        .map(
            |r| match Datagram::<Addr>::decode(r, usize::MAX).unwrap().message {
                Message::Route(m) => m.key,
                _ => unreachable!("requests are routed messages"),
            },
        )
        .collect();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % KEYS;
        node.next_hop(keys[i])
    });
}

/// One forwarded hop: the request in, its ack and the forwarded copy out, the next hop's
/// ack in, with the node's timers run when due. The datagrams in are templates with their
/// numbers patched, so that the time measured is the node's.
fn hop(s: &mut Setup) {
    let Offsets {
        seq,
        msg_seq,
        ack_seq,
    } = s.offsets;
    s.count = s.count.wrapping_add(1);
    s.now += Duration::from_micros(1);
    let (now, count, i) = (s.now, s.count, s.count as usize % KEYS);
    let node = s.net.node_mut(s.at).unwrap();
    if node.poll_timeout().is_some_and(|t| t <= now) {
        node.handle_timeout(now);
    }
    let request = &mut s.requests[i];
    patch(request, seq, count | 1);
    patch(request, msg_seq, count);
    node.handle_datagram(now, s.from, request).unwrap();
    let (next, ack) = &mut s.next[i];
    let mut forwarded = None;
    while let Some(t) = node.poll_transmit() {
        if t.destination == *next {
            forwarded = Some(u32::from_be_bytes(
                t.contents[seq..seq + 4].try_into().unwrap(),
            ));
        }
    }
    patch(
        ack,
        ack_seq,
        forwarded.expect("the request went on to its next hop"),
    );
    node.handle_datagram(now, *next, ack).unwrap();
}

#[divan::bench(sample_count = 20_000, sample_size = 16)]
fn forward_hop(bencher: Bencher) {
    let mut s = ring();
    for _ in 0..8192 {
        hop(&mut s);
    }
    bencher.bench_local(|| hop(&mut s));
}
