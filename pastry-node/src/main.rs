//! `pastry-node`: runs a Pastry node on a UDP socket, or asks a running node to look a key up.
//!
//! ```text
//! pastry-node --listen 10.0.0.1:4000                          # start a ring
//! pastry-node --listen 10.0.0.2:4000 --bootstrap 10.0.0.1:4000 --json
//! pastry-node lookup 0123456789abcdef0123456789abcdef --via 10.0.0.2:4000 --json
//! ```
//!
//! Logs go to stderr through `tracing` (`RUST_LOG=debug` for more); with `--json` every event
//! of the node is one JSON object per line on stdout. SIGINT or SIGTERM make the node leave the
//! ring gracefully before it exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pastry_core::wire::{Datagram, LOOKUP_REQUEST_MIN_LEN, Message};
use pastry_core::{Config, Event, Id, LeafChange, NodeHandle, RouteFailure};
use pastry_tokio::{Builder, PastryNode};
use serde::Deserialize;
use serde_json::json;

/// Run a Pastry node, or look up a key through a running one.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to bind (and to be reached at): IP and port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// A member of the ring to join; without it the node starts a new ring.
    #[arg(long, value_name = "ADDR")]
    bootstrap: Option<SocketAddr>,
    /// The node's id, 32 hex digits (default: random).
    #[arg(long, value_name = "HEX32")]
    id: Option<Id>,
    /// A TOML file of node settings (see `Settings`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print every event as one JSON object per line on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ask a running node to look up KEY; print the root's id, address and hop count.
    Lookup {
        /// The key, 32 hex digits.
        key: Id,
        /// The node to ask.
        #[arg(long, value_name = "ADDR")]
        via: SocketAddr,
        /// Print the answer as JSON (the last line).
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the answer (the request is sent again every second).
        #[arg(long, default_value_t = 15.0)]
        timeout: f64,
    },
}

/// Node settings from `--config`: any subset of these keys; durations in seconds.
///
/// ```toml
/// b = 4
/// leaf_set_size = 16
/// heartbeat_period = 30.0
/// failure_timeout = 40.0
/// maintenance_period = 600.0
/// join_timeout = 5.0
/// lookup_timeout = 10.0
/// cell_spares = 4
/// seed = 7
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    b: Option<u8>,
    leaf_set_size: Option<usize>,
    heartbeat_period: Option<f64>,
    failure_timeout: Option<f64>,
    maintenance_period: Option<f64>,
    join_timeout: Option<f64>,
    join_attempts: Option<u8>,
    lookup_timeout: Option<f64>,
    lookup_retries: Option<u8>,
    max_datagram_size: Option<usize>,
    cell_spares: Option<u8>,
    seed: Option<u64>,
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v < 1e7 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "{name} = {v}: a number of seconds above 0 is needed"
        ))
    }
}

impl Settings {
    fn load(path: &PathBuf) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn apply(&self, c: &mut Config) -> Result<(), String> {
        if let Some(v) = self.b {
            c.b = v;
        }
        if let Some(v) = self.leaf_set_size {
            c.leaf_set_size = v;
        }
        if let Some(v) = self.heartbeat_period {
            c.heartbeat_period = secs("heartbeat_period", v)?;
        }
        if let Some(v) = self.failure_timeout {
            c.failure_timeout = secs("failure_timeout", v)?;
        }
        if let Some(v) = self.maintenance_period {
            c.maintenance_period = secs("maintenance_period", v)?;
        }
        if let Some(v) = self.join_timeout {
            c.join_timeout = secs("join_timeout", v)?;
        }
        if let Some(v) = self.join_attempts {
            c.join_attempts = v;
        }
        if let Some(v) = self.lookup_timeout {
            c.lookup_timeout = secs("lookup_timeout", v)?;
        }
        if let Some(v) = self.lookup_retries {
            c.lookup_retries = v;
        }
        if let Some(v) = self.max_datagram_size {
            c.max_datagram_size = v;
        }
        if let Some(v) = self.cell_spares {
            c.cell_spares = v;
        }
        c.validate().map_err(|e| format!("configuration: {e}"))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pastry-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        Some(Command::Lookup {
            key,
            via,
            json,
            timeout,
        }) => runtime.block_on(lookup(key, via, json, timeout)),
        None => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pastry-node: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let listen = args
        .listen
        .ok_or("--listen ADDR is needed to run a node (or use the lookup subcommand)")?;
    let settings = match &args.config {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    let mut config = Config::default();
    settings.apply(&mut config)?;
    let mut builder = Builder::new(config);
    if let Some(id) = args.id {
        builder = builder.id(id);
    }
    if let Some(seed) = settings.seed {
        builder = builder.seed(seed);
    }
    let node = builder
        .bind(listen)
        .await
        .map_err(|e| format!("cannot run a node at {listen}: {e}"))?;
    tracing::info!(id = %node.id(), addr = %node.local_addr(), "node started");
    let mut events = node.events().expect("a new node's events");
    let json = args.json;
    let printer = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if json {
                println!("{}", event_json(&e));
            } else {
                tracing::info!(event = ?e);
            }
        }
    });
    match args.bootstrap {
        None => {
            node.bootstrap().await.map_err(|e| e.to_string())?;
            tracing::info!("started a new ring");
        }
        Some(via) => {
            join_until_active(&node, via).await;
        }
    }
    wait_for_signal().await;
    tracing::info!("leaving the ring");
    let _ = node.shutdown().await;
    printer.abort();
    Ok(())
}

/// Joins, trying again while the ring does not answer (it may be starting up too).
async fn join_until_active(node: &PastryNode, via: SocketAddr) {
    loop {
        match node.join(via).await {
            Ok(()) => {
                tracing::info!(%via, "joined");
                return;
            }
            Err(e) => {
                tracing::warn!(%via, error = %e, "join failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn handle_json(h: &NodeHandle<SocketAddr>) -> serde_json::Value {
    json!({ "id": h.id.to_string(), "addr": h.addr.to_string() })
}

fn event_json(e: &Event<SocketAddr>) -> serde_json::Value {
    match e {
        Event::Active => json!({ "event": "active" }),
        Event::JoinFailed => json!({ "event": "join_failed" }),
        Event::Rejoining => json!({ "event": "rejoining" }),
        Event::Left => json!({ "event": "left" }),
        Event::Deliver(m) => json!({
            "event": "deliver", "key": m.key.to_string(), "app": m.app, "hops": m.hops,
            "origin": handle_json(&m.origin), "bytes": m.payload.len(),
        }),
        Event::LeafSet { node, change } => json!({
            "event": "leaf_set",
            "change": match change {
                LeafChange::Joined => "joined",
                LeafChange::Failed => "failed",
                LeafChange::Left => "left",
                LeafChange::Recovered => "recovered",
                LeafChange::Displaced => "displaced",
                _ => "other",
            },
            "node": handle_json(node),
        }),
        Event::RouteFailed { key, reason, .. } => json!({
            "event": "route_failed", "key": key.to_string(),
            "reason": match reason {
                RouteFailure::NodeLeft => "node_left",
                RouteFailure::HopLimit => "hop_limit",
                _ => "other",
            },
        }),
        Event::LookupServed {
            key, origin, hops, ..
        } => json!({
            "event": "lookup_served", "key": key.to_string(), "origin": handle_json(origin), "hops": hops,
        }),
        Event::LookupDone {
            key, root, hops, ..
        } => json!({
            "event": "lookup_done", "key": key.to_string(), "root": handle_json(root), "hops": hops,
        }),
        Event::LookupFailed { key, .. } => {
            json!({ "event": "lookup_failed", "key": key.to_string() })
        }
        other => json!({ "event": "other", "debug": format!("{other:?}") }),
    }
}

/// The lookup client: one request to a member, sent again every second until the answer.
async fn lookup(key: Id, via: SocketAddr, json: bool, timeout: f64) -> Result<(), String> {
    let patience = secs("--timeout", timeout)?;
    let bind: SocketAddr = if via.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot bind a socket: {e}"))?;
    // The client's id and its request's nonce are drawn apart: the id travels in every
    // datagram's header, the nonce must stay unguessable to anyone who sees the id.
    let mut raw = [0u8; 20];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    let (id, nonce) = raw.split_at(16);
    let me = Id::from_bytes(id.try_into().expect("16 bytes"));
    let nonce = u32::from_be_bytes(nonce.try_into().expect("4 bytes"));
    let request = |padding| {
        Datagram::<SocketAddr>::new(
            me,
            Message::LookupRequest {
                nonce,
                key,
                padding,
            },
        )
        .to_bytes()
    };
    let short = request(0).len();
    let bytes = request(LOOKUP_REQUEST_MIN_LEN.saturating_sub(short) as u16);
    let deadline = tokio::time::Instant::now() + patience;
    let mut buf = vec![0u8; 2048];
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no answer from {via} within {timeout} s"));
        }
        socket
            .send_to(&bytes, via)
            .await
            .map_err(|e| format!("cannot send to {via}: {e}"))?;
        let round = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(r) =
            tokio::time::timeout_at(round.min(deadline), socket.recv_from(&mut buf)).await
        {
            let Ok((n, from)) = r else { continue };
            if from != via {
                continue;
            }
            let Ok(d) = Datagram::<SocketAddr>::decode(&buf[..n], buf.len()) else {
                continue;
            };
            if let Message::LookupAnswer {
                nonce: got,
                key: k,
                root,
                hops,
            } = d.message
                && got == nonce
                && k == key
            {
                let Some(root) = root else {
                    return Err(format!(
                        "{via} could not look up {key} (not active, or the lookup failed)"
                    ));
                };
                if json {
                    println!(
                        "{}",
                        json!({
                            "key": key.to_string(),
                            "root_id": root.id.to_string(),
                            "root_addr": root.addr.to_string(),
                            "hops": hops,
                        })
                    );
                } else {
                    println!("key {key}: root {} at {}, {hops} hops", root.id, root.addr);
                }
                return Ok(());
            }
        }
    }
}
