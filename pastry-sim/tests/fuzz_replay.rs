//! Replays every committed fuzz corpus and crash-regression input through the fuzz targets'
//! code, so that `cargo test` covers them without cargo-fuzz. The targets panic on a violation.

use std::fs;
use std::path::{Path, PathBuf};

use pastry_sim::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        files.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                }),
        );
    }
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let files = inputs(target);
    for f in &files {
        let data = fs::read(f).unwrap();
        println!("{target}: {}", f.display());
        run(&data);
    }
    files.len()
}

#[test]
fn decode_corpus_and_regressions() {
    let n = replay("decode", fuzzing::decode);
    assert!(n > 0, "the decode corpus is committed");
}

#[test]
fn node_corpus_and_regressions() {
    let n = replay("node", fuzzing::node);
    assert!(n > 0, "the node corpus is committed");
}

#[test]
fn overlay_corpus_and_regressions() {
    let n = replay("overlay", fuzzing::overlay);
    assert!(n >= 4, "the overlay corpus and regressions are committed");
}
