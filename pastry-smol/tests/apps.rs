//! Applications registered through the builder see forwards (and may stop or rewrite
//! messages) and deliveries; other application ids surface on the bounded event stream.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_io::Timer;
use common::{Rng, closest, within};
use pastry_smol::{
    Application, Context, Driver, Event, Forward, Id, NodeBuilder, NodeHandle, PastryNode,
    RouteMessage,
};

const APP: u16 = 7;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Forward { at: Id, payload: Vec<u8> },
    Deliver { at: Id, payload: Vec<u8> },
}

/// Records every upcall; stops messages saying "stop" and rewrites "rewrite-me".
struct Recorder {
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Application<SocketAddr> for Recorder {
    fn deliver(&mut self, ctx: &mut Context<'_, SocketAddr>, msg: RouteMessage<SocketAddr>) {
        self.log.lock().unwrap().push(Seen::Deliver {
            at: ctx.local().id,
            payload: msg.payload,
        });
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, SocketAddr>,
        msg: &mut RouteMessage<SocketAddr>,
        _next_hop: &mut NodeHandle<SocketAddr>,
    ) -> Forward {
        self.log.lock().unwrap().push(Seen::Forward {
            at: ctx.local().id,
            payload: msg.payload.clone(),
        });
        match msg.payload.as_slice() {
            b"stop" => Forward::Stop,
            b"rewrite-me" => {
                msg.payload = b"rewritten".to_vec();
                Forward::Continue
            }
            _ => Forward::Continue,
        }
    }
}

async fn wait_for(log: &Mutex<Vec<Seen>>, want: &Seen) {
    within(Duration::from_secs(5), async {
        while !log.lock().unwrap().contains(want) {
            Timer::after(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|| panic!("never saw {want:?}"));
}

#[test]
fn applications_intercept_forwards_and_receive_deliveries() {
    let seed = common::seed(0x5eed_0007);
    let mut rng = Rng::new(seed);
    let spawn = |d: Driver| smol::spawn(d).detach();
    smol::block_on(async {
        let ip = common::loopback();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut nodes: Vec<PastryNode> = Vec::new();
        for i in 0..12 {
            let (node, driver) = NodeBuilder::new(common::config())
                .id(rng.id())
                .seed(rng.u64())
                .application(APP, Box::new(Recorder { log: log.clone() }))
                .bind(SocketAddr::new(ip, 0))
                .unwrap();
            spawn(driver);
            if i == 0 {
                node.bootstrap().await.unwrap();
            } else {
                node.join(nodes[rng.below(i)].local_addr()).await.unwrap();
            }
            nodes.push(node);
        }
        let members: Vec<_> = nodes.iter().map(|n| n.local().clone()).collect();
        let origin = &nodes[0];
        // A key whose root is another node.
        let (key, root) = loop {
            let key = rng.id();
            let root = closest(key, &members);
            if root.id != origin.id() {
                break (key, root);
            }
        };

        origin.route(key, APP, b"go".to_vec()).await.unwrap();
        wait_for(
            &log,
            &Seen::Deliver {
                at: root.id,
                payload: b"go".to_vec(),
            },
        )
        .await;
        assert!(log.lock().unwrap().contains(&Seen::Forward {
            at: origin.id(),
            payload: b"go".to_vec()
        }));

        origin
            .route(key, APP, b"rewrite-me".to_vec())
            .await
            .unwrap();
        wait_for(
            &log,
            &Seen::Deliver {
                at: root.id,
                payload: b"rewritten".to_vec(),
            },
        )
        .await;

        origin.route(key, APP, b"stop".to_vec()).await.unwrap();
        wait_for(
            &log,
            &Seen::Forward {
                at: origin.id(),
                payload: b"stop".to_vec(),
            },
        )
        .await;

        // Another application id: the root's event stream.
        let root_node = nodes.iter().find(|n| n.id() == root.id).unwrap();
        let events = root_node.events();
        while events.try_recv().is_some() {}
        origin.route(key, 0, b"plain".to_vec()).await.unwrap();
        let delivered = within(Duration::from_secs(5), async {
            loop {
                if let Some(Event::Deliver(m)) = events.recv().await {
                    break m;
                }
            }
        })
        .await
        .expect("delivered on the stream");
        assert_eq!((delivered.key, delivered.payload), (key, b"plain".to_vec()));

        // Give a stopped message time to show up anywhere: it must not.
        Timer::after(Duration::from_millis(100)).await;
        let wrongly_delivered = log.lock().unwrap().iter().any(|s| {
            matches!(s, Seen::Deliver { payload, .. }
                if payload == b"stop" || payload == b"rewrite-me")
        });
        assert!(!wrongly_delivered);
        for n in &nodes {
            n.shutdown().await.unwrap();
        }
    });
}

#[test]
fn the_event_stream_is_bounded_and_drops_the_oldest() {
    smol::block_on(async {
        let (node, driver) = NodeBuilder::new(common::config())
            .event_capacity(4)
            .join_timeout(Duration::MAX)
            .leave_timeout(Duration::MAX)
            .bind(SocketAddr::new(common::loopback(), 0))
            .unwrap();
        smol::spawn(driver).detach();
        node.bootstrap().await.unwrap(); // Event::Active
        for i in 0u8..10 {
            node.route(Id::new(u128::from(i)), 0, vec![i])
                .await
                .unwrap();
        }
        node.counters().await.unwrap(); // every command above has been handled
        assert_eq!(node.io_counters().events_dropped, 11 - 4);
        let events = node.events();
        let mut kept = Vec::new();
        while let Some(e) = events.try_recv() {
            match e {
                Event::Deliver(m) => kept.push(m.payload[0]),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(kept, vec![6, 7, 8, 9], "the newest are kept");
        node.shutdown().await.unwrap();
    });
}
