//! Twelve `pastry-node` processes on 127.0.0.2 ... 127.0.0.13: lookups through the CLI land at
//! the numerically closest node; after three are killed with SIGKILL and the ring repairs,
//! they land at the closest live node. Every process is killed when the test ends, pass or
//! fail.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pastry_core::Id;

const BIN: &str = env!("CARGO_BIN_EXE_pastry-node");

/// Kills its processes when dropped, whatever happened.
struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn id_of(i: usize) -> Id {
    let x = (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
    Id::new(x ^ (x >> 61))
}

fn addr_of(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2 + i as u8], port))
}

fn closest(ids: &[Id], key: Id) -> Id {
    *ids.iter()
        .min_by(|a, b| key.cmp_closeness(**a, **b))
        .unwrap()
}

/// `pastry-node lookup KEY --via ADDR --json`: (root id, root address, hops).
fn cli_lookup(key: Id, via: SocketAddr) -> Result<(Id, SocketAddr, u64), String> {
    let out = Command::new(BIN)
        .args([
            "lookup",
            &key.to_string(),
            "--via",
            &via.to_string(),
            "--json",
        ])
        .args(["--timeout", "5"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().ok_or("no output")?;
    let v: serde_json::Value = serde_json::from_str(last).map_err(|e| e.to_string())?;
    assert_eq!(v["key"].as_str(), Some(key.to_string().as_str()));
    let id: Id = v["root_id"]
        .as_str()
        .ok_or("root_id")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let addr: SocketAddr = v["root_addr"]
        .as_str()
        .ok_or("root_addr")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    Ok((id, addr, v["hops"].as_u64().ok_or("hops")?))
}

#[test]
fn twelve_processes_route_lookups_and_survive_three_sigkills() {
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    println!("port {port}");
    let config = std::env::temp_dir().join(format!("pastry-node-test-{port}.toml"));
    // Short timers, so that failures are found in seconds rather than a minute; spares beside
    // the routing table's cells (every cell of a ring this small is sparse).
    std::fs::write(
        &config,
        "heartbeat_period = 1.0\nfailure_timeout = 2.5\njoin_timeout = 1.0\nlookup_timeout = 2.0\ncell_spares = 3\n",
    )
    .unwrap();
    let n = 12;
    let ids: Vec<Id> = (0..n).map(id_of).collect();
    let mut procs = Procs(Vec::new());
    let (active_tx, active_rx) = mpsc::channel::<usize>();
    for (i, id) in ids.iter().enumerate() {
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", &addr_of(i, port).to_string(), "--json"])
            .args(["--id", &id.to_string()])
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if i > 0 {
            cmd.args(["--bootstrap", &addr_of(0, port).to_string()]);
        }
        let mut child = cmd.spawn().expect("pastry-node starts");
        let stdout = child.stdout.take().unwrap();
        let tx = active_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"event\":\"active\"") {
                    let _ = tx.send(i);
                }
            }
        });
        procs.0.push(Some(child));
        if i == 0 {
            // The first node starts the ring (it is active once its socket is bound).
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let start = Instant::now();
    let mut active = std::collections::BTreeSet::new();
    while active.len() < n - 1 {
        match active_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(i) => {
                active.insert(i);
            }
            Err(_) => panic!("only {active:?} became active"),
        }
    }
    println!("{} nodes joined in {:?}", n - 1, start.elapsed());
    std::thread::sleep(Duration::from_secs(2));

    let mut state = 0x5eed_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let key_of =
        |next: &mut dyn FnMut() -> u64| Id::new(u128::from(next()) << 64 | u128::from(next()));
    for _ in 0..24 {
        let key = key_of(&mut next);
        let via = addr_of((next() % n as u64) as usize, port);
        let (root, addr, hops) = cli_lookup(key, via).expect("lookup");
        let want = closest(&ids, key);
        assert_eq!(root, want, "key {key} via {via}");
        assert_eq!(
            addr,
            addr_of(ids.iter().position(|x| *x == want).unwrap(), port)
        );
        assert!(hops <= 3);
    }

    // Three nodes die without a word.
    let victims = [3usize, 7, 10];
    for v in victims {
        let mut c = procs.0[v].take().unwrap();
        c.kill().expect("SIGKILL");
        c.wait().unwrap();
    }
    let live: Vec<Id> = (0..n)
        .filter(|i| !victims.contains(i))
        .map(|i| ids[i])
        .collect();
    // Keys owned by the victims first: they must move to the closest live node.
    let mut keys: Vec<Id> = victims.iter().map(|v| ids[*v]).collect();
    for _ in 0..12 {
        keys.push(key_of(&mut next));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending = keys.clone();
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "not repaired: {pending:?}");
        std::thread::sleep(Duration::from_secs(1));
        pending.retain(|key| {
            let via_i = loop {
                let i = (next() % n as u64) as usize;
                if !victims.contains(&i) {
                    break i;
                }
            };
            match cli_lookup(*key, addr_of(via_i, port)) {
                Ok((root, _, _)) => root != closest(&live, *key),
                Err(_) => true,
            }
        });
    }
    // Once repaired, every lookup lands at the closest live node.
    for key in &keys {
        for via in (0..n).filter(|i| !victims.contains(i)).take(4) {
            let (root, _, _) = cli_lookup(*key, addr_of(via, port)).expect("lookup");
            assert_eq!(root, closest(&live, *key), "key {key} via node {via}");
        }
    }
    let _ = std::fs::remove_file(&config);
}
