//! The command line, run as a program: a small run with a JSON report and plots, and bad
//! arguments.

use std::path::PathBuf;
use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pastry-sim"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pastry-sim-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The keys scripts rely on (issue: JSON report).
const KEYS: [&str; 22] = [
    "nodes",
    "seed",
    "lookups_sent",
    "delivered",
    "correct",
    "incorrect",
    "lost",
    "hops_mean",
    "hops_max",
    "hops_histogram",
    "rdp_mean",
    "rdp_median",
    "rdp_p95",
    "control_msgs_per_node_per_sec",
    "control_bytes_per_node_per_sec",
    "join_msgs_per_node",
    "join_time_median_ms",
    "state_bytes_per_node",
    "routing_table_entries_mean",
    "sim_events",
    "wall_seconds",
    "peak_rss_bytes",
];

#[test]
fn small_churn_run_writes_a_report_with_every_key_and_the_plots() {
    let dir = scratch("churn");
    let json = dir.join("report.json");
    let plots = dir.join("plots");
    let out = sim()
        .args([
            "--nodes",
            "60",
            "--seed",
            "5",
            "--session-median",
            "120",
            "--duration",
            "240",
            "--lookup-rate",
            "0.05",
            "--topology",
            "plane",
            "--json",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&plots)
        .output()
        .expect("pastry-sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("lookups:"), "the summary names the lookups");
    // The progress bar is hidden when stderr is not a terminal.
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the report")).expect("valid JSON");
    for key in KEYS {
        assert!(report.get(key).is_some(), "report lacks {key}");
    }
    assert_eq!(report["nodes"], 60);
    assert_eq!(report["seed"], 5);
    let sent = report["lookups_sent"].as_u64().unwrap();
    let delivered = report["delivered"].as_u64().unwrap();
    let correct = report["correct"].as_u64().unwrap();
    let incorrect = report["incorrect"].as_u64().unwrap();
    let lost = report["lost"].as_u64().unwrap();
    assert!(sent > 100, "a lookup rate over 240 s sends lookups: {sent}");
    assert_eq!(delivered, correct + incorrect);
    assert_eq!(sent, delivered + lost);
    let histogram: u64 = report["hops_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(histogram, delivered, "the histogram counts every delivery");
    assert!(
        report["joins_during_run"].as_u64().unwrap() > 0,
        "churn brings arrivals"
    );
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0);
    for plot in [
        "hops.svg",
        "rdp_cdf.svg",
        "lookups_over_time.svg",
        "control_over_time.svg",
    ] {
        let svg = std::fs::read_to_string(plots.join(plot)).expect(plot);
        assert!(svg.starts_with("<svg"), "{plot} is an SVG");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ideal_reports_perfect_tables_on_the_same_ring_beside_the_measured_figures() {
    let dir = scratch("ideal");
    let json = dir.join("report.json");
    let plots = dir.join("plots");
    let run = |extra: &[&str]| {
        let out = sim()
            .args([
                "--nodes",
                "400",
                "--lookups",
                "2000",
                "--seed",
                "4",
                "--json",
            ])
            .arg(&json)
            .args(extra)
            .output()
            .expect("pastry-sim runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        (stdout, report)
    };
    let (plain_out, plain) = run(&[]);
    assert!(
        plain["rdp_ideal_mean"].is_null(),
        "no ideal figures unless asked"
    );
    assert!(!plain_out.contains("perfect tables"));
    let plot_dir = plots.to_str().unwrap().to_owned();
    let (stdout, report) = run(&["--ideal", "--plot", &plot_dir]);
    assert!(stdout.contains("over perfect tables"), "{stdout}");
    // The same lookups on the same ring: asking for the ideal changes nothing measured.
    assert_eq!(report["rdp_mean"], plain["rdp_mean"]);
    assert_eq!(report["hops_histogram"], plain["hops_histogram"]);
    let samples = report["rdp_ideal_samples"].as_u64().unwrap();
    assert_eq!(samples, report["rdp_samples"].as_u64().unwrap());
    // Recomputed from the lookups' records, the measured figure over the ideal's lookups is
    // the network's own.
    let same = report["rdp_measured_same_lookups_mean"].as_f64().unwrap();
    let measured = report["rdp_mean"].as_f64().unwrap();
    assert!((same - measured).abs() < 1e-6, "{same} against {measured}");
    let ideal = report["rdp_ideal_mean"].as_f64().unwrap();
    let median = report["rdp_ideal_median"].as_f64().unwrap();
    let hops = report["hops_ideal_mean"].as_f64().unwrap();
    assert!(
        ideal >= 1.0 && median >= 1.0,
        "a route is never shorter than the direct path"
    );
    assert!(median <= ideal * 1.5 && report["rdp_ideal_p95"].as_f64().unwrap() >= median);
    assert!(hops > 1.0 && hops < 4.0, "400 nodes: {hops} hops");
    assert_eq!(
        report["rdp_ideal_cdf"].as_array().unwrap().last().unwrap()[1],
        1.0
    );
    let svg = std::fs::read_to_string(plots.join("rdp_cdf.svg")).unwrap();
    assert!(
        svg.contains("perfect tables"),
        "the CDF plot shows the ideal"
    );
    // A lone node delivers every lookup itself: nothing to compare, and no made-up zeros.
    let out = sim()
        .args(["--nodes", "1", "--lookups", "20", "--ideal", "--json"])
        .arg(&json)
        .output()
        .expect("pastry-sim runs");
    assert!(out.status.success());
    let lone: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(lone["rdp_ideal_mean"].is_null() && lone["rdp_measured_same_lookups_mean"].is_null());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cell_spares_shorten_routes_and_still_deliver_every_lookup_at_its_root() {
    let dir = scratch("spares");
    let json = dir.join("report.json");
    let run = |spares: &str| {
        let out = sim()
            .args([
                "--nodes",
                "1000",
                "--lookups",
                "3000",
                "--seed",
                "6",
                "--settle",
                "600",
                "--ideal",
                "--cell-spares",
                spares,
                "--json",
            ])
            .arg(&json)
            .output()
            .expect("pastry-sim runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("{stdout}");
        assert!(out.status.success(), "{stdout}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        report
    };
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    let (off, on) = (run("0"), run("4"));
    for r in [&off, &on] {
        assert_eq!(r["correct"], r["lookups_sent"], "every lookup at its root");
    }
    assert_eq!(f(&off, "routing_table_spares_mean"), 0.0);
    // 1,000 nodes: row 0's cells hold about 62 nodes, row 1's about 4 (sparse for four
    // spares), row 2's 0.24.
    let spares = f(&on, "routing_table_spares_mean");
    assert!(
        spares > 10.0 && spares <= 4.0 * 16.0 * 2.0,
        "{spares} spares"
    );
    // The entry's spares often hold the key's root: fewer hops, less delay, measured and
    // over perfect tables alike.
    assert!(f(&on, "hops_mean") < f(&off, "hops_mean") - 0.05);
    assert!(f(&on, "hops_ideal_mean") < f(&off, "hops_ideal_mean") - 0.05);
    assert!(f(&on, "rdp_mean") < f(&off, "rdp_mean"));
    assert!(f(&on, "rdp_ideal_mean") < f(&off, "rdp_ideal_mean"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn same_seed_same_figures_and_plots() {
    let dir = scratch("same-seed");
    let run = |name: &str| {
        let plots = dir.join(name);
        let out = sim()
            .args(["--nodes", "40", "--lookups", "300", "--seed", "9", "--plot"])
            .arg(&plots)
            .output()
            .expect("pastry-sim runs");
        assert!(out.status.success());
        // Every line but the one with wall-clock time is determined by the seed, and so is
        // every byte of every plot.
        let s = String::from_utf8(out.stdout).unwrap();
        let summary = s
            .lines()
            .filter(|l| !l.contains("wall") && !l.contains("plot:"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut svgs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&plots)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        svgs.sort();
        assert!(svgs.iter().any(|(n, _)| n == "hops.svg"), "{svgs:?}");
        (summary, svgs)
    };
    assert_eq!(run("a"), run("b"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_fail_with_a_message_not_a_panic() {
    for args in [
        &["--nodes", "0"][..],
        &["--loss", "1.5"],
        &["--topology", "torus"],
        &["--fail-at", "10"],
        &[
            "--fail-fraction",
            "0.1",
            "--fail-at",
            "50",
            "--duration",
            "20",
        ],
        &["--duration", "-3"],
        &["--b", "7"],
        &["--leaf-set", "7"],
        &["--lookup-rate", "-1"],
        &["--ideal", "--session-median", "600"],
        &["--ideal", "--fail-fraction", "0.1"],
        &["--cell-spares", "9"],
        &["--no-such-flag"],
    ] {
        let out = sim().args(args).output().expect("pastry-sim runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?} explains itself");
    }
}
