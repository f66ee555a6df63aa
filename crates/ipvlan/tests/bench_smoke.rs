//! A smoke run of `ipvlan bench`: one quick round against the user backend, with the
//! 500/1000-slave parts scaled down to 10/20 slaves. Checks only that it finishes and
//! prints its table; a benchmark's timings are never asserted. Root only.

#![forbid(unsafe_code)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn bench_quick_prints_the_table() {
    require_root();
    let out = run_timeout(
        Command::new(BIN).args([
            "bench",
            "--quick",
            "--backends",
            "user",
            "--slaves-scale",
            "0.02",
        ]),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ipvlan bench failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("figure") && l.contains("macvlan") && l.contains("ratio")),
        "no table header in:\n{stdout}"
    );
}
