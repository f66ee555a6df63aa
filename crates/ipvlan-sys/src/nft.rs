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

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

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

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// A netlink socket that asks one namespace for its nftables ruleset generation.
#[derive(Debug)]
pub struct Generation {
    sock: Socket,
    seq: u32,
}

impl Generation {
    /// Opens the socket in the calling thread's namespace (it stays bound there).
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        // A kernel that never answers must not hang the caller.
        let limit = nix::sys::time::TimeVal::new(1, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &limit)?;
        Ok(Self { sock, seq: 0 })
    }

    /// The current generation (`NFT_MSG_GETGEN`).
    pub fn get(&mut self) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        self.sock.send(&getgen_request(self.seq), 0)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.sock.recv(&mut &mut buf[..], 0)?.min(buf.len());
            match parse_gen(&buf[..n], self.seq)? {
                Some(g) => return Ok(g),
                None => continue, // an answer to an earlier, abandoned request
            }
        }
    }
}

fn getgen_request(seq: u32) -> [u8; NLMSG_HDRLEN + NFGENMSG_LEN] {
    const LEN: usize = NLMSG_HDRLEN + NFGENMSG_LEN;
    let mut m = [0u8; LEN];
    m[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // portid 0; nfgenmsg { AF_UNSPEC, NFNETLINK_V0, res_id 0 }
    m
}

/// The generation in an answer to request `seq`; `None` for a message about another
/// request.
fn parse_gen(mut rest: &[u8], seq: u32) -> io::Result<Option<u32>> {
    let bad = |m: &'static str| io::Error::new(io::ErrorKind::InvalidData, m);
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(bad("malformed netlink message"));
        }
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        let got_seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
        let body = &rest[NLMSG_HDRLEN..len];
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
        if got_seq != seq {
            continue;
        }
        if ty == NLMSG_ERROR {
            let errno = body
                .get(..4)
                .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                .unwrap_or(0);
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(-errno));
            }
            continue;
        }
        if ty != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
            continue;
        }
        let mut attrs = body.get(NFGENMSG_LEN..).unwrap_or(&[]);
        while attrs.len() >= 4 {
            let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let aty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
            if alen < 4 || alen > attrs.len() {
                break;
            }
            if aty == NFTA_GEN_ID && alen >= 8 {
                return Ok(Some(u32::from_be_bytes(
                    attrs[4..8].try_into().expect("4 bytes"),
                )));
            }
            attrs = attrs.get((alen + 3) & !3..).unwrap_or(&[]);
        }
        return Err(bad("NFT_MSG_NEWGEN without NFTA_GEN_ID"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newgen_answer_is_read() {
        // nlmsghdr (len 32, NEWGEN, seq 7), nfgenmsg, NFTA_GEN_ID = 0x01020304 (BE),
        // then NFTA_GEN_PROC_PID.
        let mut m = Vec::new();
        m.extend_from_slice(&32u32.to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&NFTA_GEN_ID.to_ne_bytes());
        m.extend_from_slice(&[1, 2, 3, 4]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 0, 9]);
        assert_eq!(parse_gen(&m, 7).unwrap(), Some(0x0102_0304));
        assert_eq!(parse_gen(&m, 8).unwrap(), None);
        assert!(parse_gen(&m[..20], 7).is_err());
    }
}
