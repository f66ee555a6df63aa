//! Applying an nftables script inside a namespace (and, where nftables cannot do it on
//! this kernel, an xtables rule).
//!
//! The script is handed to `nft -f -`, which commits it as one netlink transaction:
//! either all of it applies or none of it does. The program is started from a thread
//! that has entered the namespace, so it works there.
//!
//! [`Generation`] reads a namespace's ruleset generation over netlink, without a
//! process: the kernel bumps it on every committed transaction (nft's and
//! iptables-nft's alike), so an unchanged number means an unchanged ruleset.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use crate::NetNs;
use crate::netlink::{NfMessage, Nfnetlink, Socket};
use crate::sock::abi_u8;

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

const NFNL_SUBSYS_NFTABLES: u8 = 10;
const NFT_MSG_NEWGEN: u8 = 15;
const NFT_MSG_GETGEN: u8 = 16;
const NFTA_GEN_ID: u16 = 1;

/// A netlink socket that asks one namespace for its nftables ruleset generation.
#[derive(Debug)]
pub struct Generation {
    sock: Socket<Nfnetlink>,
}

impl Generation {
    /// Opens the socket in the calling thread's namespace (it stays bound there).
    pub fn open() -> io::Result<Self> {
        let sock = Socket::open()?;
        // A kernel that never answers must not hang the caller.
        let limit = nix::sys::time::TimeVal::new(1, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &limit)?;
        Ok(Self { sock })
    }

    /// The current generation (`NFT_MSG_GETGEN`).
    pub fn get(&mut self) -> io::Result<u32> {
        let request = NfMessage::new(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETGEN,
            const { abi_u8(libc::AF_UNSPEC) },
            0,
        );
        // Without NLM_F_ACK the exchange ends at the one answer.
        let answers = self.sock.request(request, 0)?;
        answers.first().and_then(generation_of).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no NFT_MSG_NEWGEN with NFTA_GEN_ID in the answer",
            )
        })
    }
}

/// The generation an `NFT_MSG_NEWGEN` message carries.
fn generation_of(msg: &NfMessage) -> Option<u32> {
    if msg.message_type != (u16::from(NFNL_SUBSYS_NFTABLES) << 8) | u16::from(NFT_MSG_NEWGEN) {
        return None;
    }
    Some(u32::from_be_bytes(
        msg.get(NFTA_GEN_ID)?.get(..4)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{encode, frames};

    #[test]
    fn a_newgen_answer_is_read() {
        // NFTA_GEN_ID = 0x01020304 (big-endian), then NFTA_GEN_PROC_PID.
        let answer = NfMessage::new(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN, 0, 0)
            .attr(NFTA_GEN_ID, [1, 2, 3, 4])
            .attr(2, [0, 0, 0, 9]);
        let bytes = encode(answer, 0, 7);
        assert_eq!(bytes.len(), 36);
        let f = frames(&bytes).next().unwrap().unwrap();
        assert_eq!(f.seq(), 7);
        let msg: NfMessage = f.decode().unwrap();
        assert_eq!(generation_of(&msg), Some(0x0102_0304));
        assert!(frames(&bytes[..20]).next().unwrap().is_err());
        let without_id = NfMessage::new(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN, 0, 0).attr(2, [0; 4]);
        assert_eq!(generation_of(&without_id), None);
        let other =
            NfMessage::new(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN, 0, 0).attr(NFTA_GEN_ID, [0; 4]);
        assert_eq!(generation_of(&other), None);
    }

    #[test]
    fn the_getgen_request_is_an_empty_nfgenmsg() {
        let req = NfMessage::new(
            NFNL_SUBSYS_NFTABLES,
            NFT_MSG_GETGEN,
            const { abi_u8(libc::AF_UNSPEC) },
            0,
        );
        let bytes = encode(req, netlink_packet_core::NLM_F_REQUEST, 3);
        assert_eq!(bytes.len(), 20);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), (10 << 8) | 16);
        assert_eq!(&bytes[16..], &[0, 0, 0, 0]);
    }
}
