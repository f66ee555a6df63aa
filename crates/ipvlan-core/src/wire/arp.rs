//! ARP for IPv4 over Ethernet, as the port reads it.
//!
//! The checked constructor requires the 28 bytes of an Ethernet/IPv4 ARP packet and
//! nothing else: like the kernel driver, the hardware type, protocol type and the two
//! address-length fields are not checked, and the addresses are read at the fixed
//! offsets of 6-byte hardware and 4-byte protocol addresses.

use super::{Error, be16, mac_at};
use crate::MacAddr;
use core::net::Ipv4Addr;
use core::ops::Range;

pub const HTYPE: Range<usize> = 0..2;
pub const PTYPE: Range<usize> = 2..4;
pub const HLEN: usize = 4;
pub const PLEN: usize = 5;
pub const OPER: Range<usize> = 6..8;
pub const SHA: Range<usize> = 8..14;
pub const SPA: Range<usize> = 14..18;
pub const THA: Range<usize> = 18..24;
pub const TPA: Range<usize> = 24..28;
pub const LEN: usize = 28;

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A view of an ARP packet (the Ethernet payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Succeeds when at least 28 bytes are present.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), HTYPE.start)
    }

    pub fn protocol_type(&self) -> u16 {
        be16(self.buffer.as_ref(), PTYPE.start)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[HLEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[PLEN]
    }

    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), OPER.start)
    }

    pub fn sender_hardware_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), SHA.start)
    }

    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), SPA.start)
    }

    pub fn target_hardware_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), THA.start)
    }

    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), TPA.start)
    }
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUEST: [u8; 28] = [
        0x00, 0x01, // Ethernet
        0x08, 0x00, // IPv4
        0x06, 0x04, // lengths
        0x00, 0x01, // request
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // sender MAC
        10, 0, 0, 1, // sender IP
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC
        10, 0, 0, 2, // target IP
    ];

    #[test]
    fn fields() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!(p.hardware_len(), 6);
        assert_eq!(p.protocol_len(), 4);
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(
            p.sender_hardware_addr(),
            MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        );
        assert_eq!(p.sender_protocol_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_hardware_addr(), MacAddr([0; 6]));
        assert_eq!(p.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn types_and_lengths_are_not_checked() {
        let mut odd = REQUEST;
        odd[0..6].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x10, 0x20]);
        let p = Packet::new_checked(&odd[..]).unwrap();
        assert_eq!(p.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn truncated() {
        for n in 0..LEN {
            assert_eq!(Packet::new_checked(&REQUEST[..n]), Err(Error::Truncated));
        }
    }
}
