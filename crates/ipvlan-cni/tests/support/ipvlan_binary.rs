//! Shared by the plugins' root tests (`ipvlan-cni`'s and, by path, `ipvlan-docker`'s):
//! the `ipvlan` binary their daemon runs, built once per test process when this
//! package's own `cargo test` did not build it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `ipvlan` binary in the target directory of `plugin` (this test's plugin binary),
/// built there (debug or release, as `plugin` is) on first use.
pub fn ipvlan_binary(plugin: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(plugin).parent().expect("a target directory");
            let bin = dir.join("ipvlan");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "-q",
                "-p",
                "ipvlan",
                "--bin",
                "ipvlan",
                "--manifest-path",
            ])
            .arg(&manifest);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let out = cmd.output().expect("running cargo");
            assert!(
                out.status.success() && bin.is_file(),
                "building the ipvlan daemon binary failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            bin
        })
        .clone()
}
