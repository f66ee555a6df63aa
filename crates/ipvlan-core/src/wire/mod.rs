//! Zero-copy views of the headers the port looks at.
//!
//! Every view is a `Packet<T: AsRef<[u8]>>` (or `Frame<T>` for Ethernet) built with
//! `new_checked`, which validates exactly what the kernel driver validates before it
//! trusts a header (spec §3). After a successful `new_checked` no accessor panics,
//! whatever the bytes are. `new_unchecked` skips the check; accessors of an unchecked
//! view may panic on a short buffer.
//!
//! Multi-byte fields are big-endian (network order) except in [`vnet`], whose header
//! is in the host's native order like the kernel's packet-socket virtio-net header.

pub mod arp;
pub mod ethernet;
pub mod gso;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod vnet;

use crate::MacAddr;

/// Why a view refused a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than the header (or a length field) requires.
    #[error("buffer too short")]
    Truncated,
    /// The IP version nibble is not the one the view parses.
    #[error("wrong IP version")]
    BadVersion,
    /// A length field is inconsistent (e.g. IPv4 IHL < 5 or total length < IHL·4).
    #[error("inconsistent length field")]
    BadLength,
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn mac_at(b: &[u8], at: usize) -> MacAddr {
    let mut m = [0; 6];
    m.copy_from_slice(&b[at..at + 6]);
    MacAddr(m)
}
