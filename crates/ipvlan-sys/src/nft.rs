//! Applying an nftables script inside a namespace (and, where nftables cannot do it on
//! this kernel, an xtables rule).
//!
//! The script is handed to `nft -f -`, which commits it as one netlink transaction:
//! either all of it applies or none of it does. The program is started from a thread
//! that has entered the namespace, so it works there.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use crate::NetNs;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {0} (install the {1} package): {2}")]
    Spawn(&'static str, &'static str, io::Error),
    #[error("{0} refused: {1}")]
    Refused(&'static str, String),
}

/// Applies `script` atomically in `ns`.
pub fn apply(ns: &NetNs, script: &str) -> Result<(), NftError> {
    run(ns, "nft", "nftables", &["-f", "-"], script)
}

/// Runs `nft ARGS` in `ns` and returns what it printed.
pub fn query(ns: &NetNs, args: &[&str]) -> Result<String, NftError> {
    let out = ns
        .run(|| Command::new("nft").args(args).stdin(Stdio::null()).output())
        .and_then(|r| r)
        .map_err(|e| NftError::Spawn("nft", "nftables", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NftError::Refused(
            "nft",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Runs `iptables` or `ip6tables` (`program`) with `args` in `ns`.
pub fn xtables(ns: &NetNs, program: &'static str, args: &[&str]) -> Result<(), NftError> {
    run(ns, program, "iptables", args, "")
}

fn run(
    ns: &NetNs,
    program: &'static str,
    package: &'static str,
    args: &[&str],
    stdin: &str,
) -> Result<(), NftError> {
    let out = ns
        .run(|| -> io::Result<std::process::Output> {
            let mut child = Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(stdin.as_bytes())?;
            child.wait_with_output()
        })
        .and_then(|r| r)
        .map_err(|e| NftError::Spawn(program, package, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            program,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
