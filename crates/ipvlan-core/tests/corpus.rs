//! Replays the fuzz targets' committed corpus (`fuzz/corpus/`) through the same entry
//! points the targets use, so every seed (and every crash ever minimised into it) runs
//! in the normal test suite.

#![forbid(unsafe_code)]

use std::path::Path;

use ipvlan_core::fuzzing::{decide_input, gso_input, wire_input};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("directory entry").path();
            (
                p.display().to_string(),
                std::fs::read(&p).expect("readable seed"),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus for {target}");
    out
}

#[test]
fn decide_corpus() {
    let mut decisions = std::collections::BTreeSet::new();
    for (_, data) in inputs("decide") {
        let d = decide_input(&data);
        let kind = d.split([' ', '(']).next().unwrap_or_default().to_string();
        decisions.insert(kind);
    }
    // The seeds reach the decision table's main branches, not just drops.
    for d in ["ToSlave", "ToWire", "Flood", "Route", "Pass", "Drop"] {
        assert!(decisions.contains(d), "no seed reaches {d}: {decisions:?}");
    }
}

#[test]
fn wire_corpus() {
    for (_, data) in inputs("wire") {
        wire_input(&data);
    }
}

#[test]
fn gso_corpus() {
    let segmented: usize = inputs("gso")
        .iter()
        .map(|(name, data)| {
            let n = gso_input(data);
            assert!(n > 0, "{name} produced no packet");
            n
        })
        .sum();
    assert!(
        segmented > 3000,
        "the super-frame seed was not cut: {segmented} bytes"
    );
}
