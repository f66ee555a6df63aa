//! Applying an nftables script inside a namespace.
//!
//! The script is handed to `nft -f -`, which commits it as one netlink transaction:
//! either all of it applies or none of it does. The program is started from a thread
//! that has entered the namespace, so it works there.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use crate::NetNs;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

/// Applies `script` atomically in `ns`.
pub fn apply(ns: &NetNs, script: &str) -> Result<(), NftError> {
    let out = ns
        .run(|| -> io::Result<std::process::Output> {
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .and_then(|r| r)
        .map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
