//! The Common API upcalls, exercised by applications registered on every node of a ring:
//! forward at every hop (read, rewrite, redirect, stop), deliver at the root, update on leaf-set
//! changes, direct messages, timers, and routing from inside an upcall.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pastry_core::{
    Application, Context, Forward, Id, LeafChange, MessageId, NodeHandle, RouteMessage, SendFailure,
};
use pastry_sim::{Addr, NetConfig, Network};

const APP: u16 = 7;

#[derive(Default)]
struct Log {
    /// (node, message origin seq, hops) per forward upcall.
    forwards: Vec<(Id, u32, u8)>,
    /// (node, key, payload, hops) per delivery.
    delivers: Vec<(Id, Id, Vec<u8>, u8)>,
    /// (node, other node, change) per update.
    updates: Vec<(Id, Id, LeafChange)>,
    /// (node, sender, payload) per direct message.
    directs: Vec<(Id, Id, Vec<u8>)>,
    /// (node, token) per timer.
    timers: Vec<(Id, u64)>,
    /// (node, message, destination, why) per direct message that did not arrive.
    failed: Vec<(Id, MessageId, Id, SendFailure)>,
}

/// Appends the forwarding node's address to every payload; stops payloads starting with
/// "stop"; keeps payloads starting with "here" at the first forwarding node; answers a
/// delivered "ping" by routing "pong" back to the origin's id; on a delivered "direct" sends a
/// direct message to the origin; on "timer" arms a timer.
struct Tracer {
    me: Addr,
    log: Arc<Mutex<Log>>,
}

impl Application<Addr> for Tracer {
    fn deliver(&mut self, ctx: &mut Context<'_, Addr>, msg: RouteMessage<Addr>) {
        let me = ctx.local().id;
        self.log
            .lock()
            .unwrap()
            .delivers
            .push((me, msg.key, msg.payload.clone(), msg.hops));
        if msg.payload.starts_with(b"ping") {
            ctx.route(msg.origin.id, b"pong".to_vec()).unwrap();
        }
        if msg.payload.starts_with(b"direct") {
            ctx.send_direct(msg.origin.clone(), b"hello".to_vec())
                .unwrap();
        }
        if msg.payload.starts_with(b"timer") {
            ctx.set_timer(Duration::from_secs(3), 42);
        }
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, Addr>,
        msg: &mut RouteMessage<Addr>,
        next_hop: &mut NodeHandle<Addr>,
    ) -> Forward {
        let me = ctx.local().clone();
        self.log
            .lock()
            .unwrap()
            .forwards
            .push((me.id, msg.id.seq, msg.hops));
        if msg.payload.starts_with(b"stop") {
            return Forward::Stop;
        }
        if msg.payload.starts_with(b"here") {
            *next_hop = me;
            return Forward::Continue;
        }
        msg.payload.push(self.me as u8);
        Forward::Continue
    }

    fn update(&mut self, ctx: &mut Context<'_, Addr>, node: &NodeHandle<Addr>, change: LeafChange) {
        let me = ctx.local().id;
        self.log.lock().unwrap().updates.push((me, node.id, change));
    }

    fn direct(&mut self, ctx: &mut Context<'_, Addr>, from: &NodeHandle<Addr>, payload: Vec<u8>) {
        let me = ctx.local().id;
        self.log
            .lock()
            .unwrap()
            .directs
            .push((me, from.id, payload));
    }

    fn timer(&mut self, ctx: &mut Context<'_, Addr>, token: u64) {
        let me = ctx.local().id;
        self.log.lock().unwrap().timers.push((me, token));
    }

    fn send_failed(
        &mut self,
        ctx: &mut Context<'_, Addr>,
        id: MessageId,
        to: &NodeHandle<Addr>,
        why: SendFailure,
    ) {
        let me = ctx.local().id;
        self.log.lock().unwrap().failed.push((me, id, to.id, why));
    }
}

fn ring_with_tracers(seed: u64, n: usize) -> (Network, Arc<Mutex<Log>>) {
    let mut net = Network::new(NetConfig::with_seed(seed));
    let log = Arc::new(Mutex::new(Log::default()));
    for _ in 0..n {
        let id = net.random_id();
        let addr = net.spawn(id);
        net.node_mut(addr)
            .unwrap()
            .register(
                APP,
                Box::new(Tracer {
                    me: addr,
                    log: log.clone(),
                }),
            )
            .unwrap();
        assert!(
            net.start(addr, Duration::from_secs(60)),
            "seed {seed}: node {addr}"
        );
    }
    (net, log)
}

/// A random key whose root is not `from`, so that `from` forwards it.
fn foreign_key(net: &mut Network, from: Addr) -> Id {
    loop {
        let k = net.random_id();
        if net.oracle().closest(k) != Some(net.id(from)) {
            return k;
        }
    }
}

fn route(net: &mut Network, from: Addr, key: Id, payload: &[u8]) {
    net.act(from, |node, now| {
        node.route(now, key, APP, payload.to_vec())
    })
    .unwrap()
    .unwrap();
    // Let the network carry it.
    net.run_for(Duration::from_secs(5));
}

#[test]
fn forward_runs_at_every_hop_and_can_rewrite_the_payload() {
    let (mut net, log) = ring_with_tracers(61, 60);
    let nodes = net.active_addrs();
    for i in 0..40 {
        log.lock().unwrap().forwards.clear();
        log.lock().unwrap().delivers.clear();
        let key = net.random_id();
        let from = nodes[i % nodes.len()];
        route(&mut net, from, key, b"trace");
        let log = log.lock().unwrap();
        assert_eq!(log.delivers.len(), 1, "delivered once");
        let (at, k, payload, hops) = log.delivers[0].clone();
        assert_eq!(k, key);
        assert_eq!(Some(at), net.oracle().closest(key), "delivered at the root");
        // One forward upcall per hop, the origin included, and one address byte per hop.
        assert_eq!(log.forwards.len(), usize::from(hops));
        assert_eq!(payload.len(), 5 + usize::from(hops));
        assert_eq!(&payload[..5], b"trace");
        if hops > 0 {
            assert_eq!(log.forwards[0].0, net.id(from), "the origin forwards first");
            assert_eq!(payload[5], from as u8);
        }
    }
}

#[test]
fn forward_can_stop_a_message_or_keep_it_here() {
    let (mut net, log) = ring_with_tracers(62, 40);
    let from = net.active_addrs()[0];
    // A key whose root is another node, so that the origin forwards.
    let key = foreign_key(&mut net, from);
    route(&mut net, from, key, b"stop");
    assert!(
        log.lock().unwrap().delivers.is_empty(),
        "stopped messages are not delivered"
    );
    assert_eq!(
        log.lock().unwrap().forwards.len(),
        1,
        "stopped at the first hop"
    );
    route(&mut net, from, key, b"here");
    let l = log.lock().unwrap();
    assert_eq!(l.delivers.len(), 1);
    assert_eq!(
        l.delivers[0].0,
        net.id(from),
        "kept at the node that redirected it"
    );
}

#[test]
fn upcalls_can_route_send_directly_and_arm_timers() {
    let (mut net, log) = ring_with_tracers(63, 40);
    let from = net.active_addrs()[3];
    let key = foreign_key(&mut net, from);
    let root = net.oracle().closest(key).unwrap();
    route(&mut net, from, key, b"ping");
    route(&mut net, from, key, b"direct");
    route(&mut net, from, key, b"timer");
    let l = log.lock().unwrap();
    let pong = l
        .delivers
        .iter()
        .find(|d| d.2.starts_with(b"pong"))
        .expect("the root routed a reply");
    assert_eq!(
        pong.0,
        net.id(from),
        "the reply reached the origin (the root of its id)"
    );
    assert_eq!(l.directs, vec![(net.id(from), root, b"hello".to_vec())]);
    assert_eq!(l.timers, vec![(root, 42)]);
}

/// A direct message to a node that died is reported to the application that sent it; one to a
/// live node is not.
#[test]
fn send_failed_reports_a_direct_message_nobody_acknowledged() {
    let (mut net, log) = ring_with_tracers(65, 30);
    let nodes = net.active_addrs();
    let (from, live, dead) = (nodes[2], nodes[11], nodes[17]);
    let handle = |net: &Network, a: Addr| NodeHandle::new(net.id(a), a);
    let (to_live, to_dead) = (handle(&net, live), handle(&net, dead));
    net.kill(dead);
    let ids = net
        .act(from, |node, now| {
            node.with_app::<Tracer, _>(now, APP, |_, ctx| {
                let a = ctx.send_direct(to_live.clone(), b"hi".to_vec()).unwrap();
                let b = ctx.send_direct(to_dead.clone(), b"hi".to_vec()).unwrap();
                (a, b)
            })
        })
        .unwrap()
        .unwrap();
    net.run_for(Duration::from_secs(120));
    let l = log.lock().unwrap();
    assert_eq!(
        l.failed,
        vec![(
            net.id(from),
            ids.1,
            net.id(dead),
            SendFailure::Unacknowledged
        )]
    );
    assert!(
        l.directs
            .contains(&(net.id(live), net.id(from), b"hi".to_vec()))
    );
}

#[test]
fn update_reports_joins_failures_and_leaves_in_the_leaf_set() {
    let (mut net, log) = ring_with_tracers(64, 30);
    let victim = net.active_addrs()[4];
    let leaver = net.active_addrs()[9];
    let (victim_id, leaver_id) = (net.id(victim), net.id(leaver));
    let holders = |net: &Network, id: Id| {
        net.active_addrs()
            .into_iter()
            .filter(|a| net.node(*a).unwrap().leaf_set().contains(id))
            .map(|a| net.id(a))
            .collect::<Vec<_>>()
    };
    let (victim_holders, leaver_holders) = (holders(&net, victim_id), holders(&net, leaver_id));
    assert!(!victim_holders.is_empty() && !leaver_holders.is_empty());
    let joined = log
        .lock()
        .unwrap()
        .updates
        .iter()
        .filter(|u| u.1 == victim_id && u.2 == LeafChange::Joined)
        .count();
    assert!(
        joined >= victim_holders.len(),
        "every holder saw the victim join: {joined} of {victim_holders:?}: {:?}",
        log.lock()
            .unwrap()
            .updates
            .iter()
            .filter(|u| u.1 == victim_id)
            .collect::<Vec<_>>()
    );
    log.lock().unwrap().updates.clear();
    net.kill(victim);
    net.leave(leaver);
    net.run_for(Duration::from_secs(180));
    let l = log.lock().unwrap();
    for h in &victim_holders {
        if *h == leaver_id {
            continue;
        }
        assert!(
            l.updates.contains(&(*h, victim_id, LeafChange::Failed)),
            "{h:?} saw {victim_id:?} fail"
        );
    }
    for h in &leaver_holders {
        if *h == victim_id {
            continue;
        }
        assert!(
            l.updates.contains(&(*h, leaver_id, LeafChange::Left)),
            "{h:?} saw {leaver_id:?} leave"
        );
    }
}

/// A client outside the overlay asks a member to look a key up (the wire-level lookup the
/// node binary's `lookup` subcommand uses): the answer names the key's root, as the oracle
/// knows it, and asking does not make the client a member.
#[test]
fn a_client_outside_the_overlay_gets_the_root_of_its_key() {
    use pastry_core::wire::{Datagram, LOOKUP_REQUEST_MIN_LEN, Message};
    let seed = 41;
    println!("seed {seed}");
    let mut net = Network::new(NetConfig::with_seed(seed));
    net.grow(50, Duration::from_secs(60)).unwrap();
    net.run_for(Duration::from_secs(5));
    let client: u32 = 1_000_000;
    let member = net.active_addrs()[7];
    for (n, key) in [Id::new(5), Id::new(u128::MAX / 3), net.id(member)]
        .into_iter()
        .enumerate()
    {
        let nonce = 77 + n as u32;
        let base = Datagram::<u32>::new(
            Id::new(123),
            Message::LookupRequest {
                nonce,
                key,
                padding: 0,
            },
        )
        .to_bytes()
        .len();
        let padding = (LOOKUP_REQUEST_MIN_LEN.saturating_sub(base - 2)) as u16;
        let request = Datagram::<u32>::new(
            Id::new(123),
            Message::LookupRequest {
                nonce,
                key,
                padding,
            },
        );
        net.inject(member, client, request.to_bytes());
        net.run_for(Duration::from_secs(5));
        let answers = net.received_outside(client);
        let answer = Datagram::<u32>::decode(answers.last().expect("an answer"), 1400).unwrap();
        match answer.message {
            Message::LookupAnswer {
                nonce: got,
                key: k,
                root: Some(root),
                hops,
            } => {
                assert_eq!((got, k), (nonce, key));
                assert_eq!(Some(root.id), net.oracle().closest(key), "key {key:?}");
                assert_eq!(net.id(root.addr), root.id);
                assert!(hops <= 4, "{hops} hops");
            }
            other => panic!("expected a lookup answer with a root, got {other:?}"),
        }
    }
    // Asking made the client no member: nobody holds its address.
    for a in net.active_addrs() {
        let n = net.node(a).unwrap();
        assert!(n.leaf_set().members().all(|p| p.handle.addr != client));
        assert!(n.routing_table().entries().all(|p| p.handle.addr != client));
    }
}
