//! ICMPv6 message header, and the Neighbour Solicitation target.
//!
//! `new_checked` requires the 8-byte ICMPv6 header (type, code, checksum and the
//! 4-byte message-specific word), as the kernel driver does before looking at the
//! type. The NS target (bytes 8..24) is only read through [`Packet::ns_target`],
//! which checks its own length. Checksums are not verified.

use super::Error;
use super::ipv6::ipv6_at;
use core::net::Ipv6Addr;
use core::ops::Range;

pub const TYPE: usize = 0;
pub const CODE: usize = 1;
pub const CHECKSUM: Range<usize> = 2..4;
pub const HEADER_LEN: usize = 8;
pub const NS_TARGET: Range<usize> = 8..24;

pub const TYPE_ROUTER_SOLICIT: u8 = 133;
pub const TYPE_ROUTER_ADVERT: u8 = 134;
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;

/// A view of an ICMPv6 message (the IPv6 payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[CODE]
    }

    pub fn checksum(&self) -> u16 {
        super::be16(self.buffer.as_ref(), CHECKSUM.start)
    }

    /// The target of a Neighbour Solicitation: `None` for other types, or when the
    /// message is too short to hold the target.
    pub fn ns_target(&self) -> Option<Ipv6Addr> {
        let b = self.buffer.as_ref();
        if self.msg_type() != TYPE_NEIGHBOR_SOLICIT || b.len() < NS_TARGET.end {
            return None;
        }
        Some(ipv6_at(b, NS_TARGET.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // NS for 2001:db8::7, no options.
    static NS: [u8; 24] = [
        135, 0, 0x12, 0x34, // type, code, checksum
        0, 0, 0, 0, // reserved
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, // target
    ];

    #[test]
    fn fields() {
        let p = Packet::new_checked(&NS[..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_NEIGHBOR_SOLICIT);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x1234);
        assert_eq!(p.ns_target(), Some("2001:db8::7".parse().unwrap()));
    }

    #[test]
    fn ns_without_full_target() {
        let p = Packet::new_checked(&NS[..23]).unwrap();
        assert_eq!(p.ns_target(), None);
    }

    #[test]
    fn other_types_have_no_target() {
        let mut b = NS;
        b[0] = TYPE_NEIGHBOR_ADVERT;
        assert_eq!(Packet::new_checked(&b[..]).unwrap().ns_target(), None);
    }

    #[test]
    fn truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&NS[..n]), Err(Error::Truncated));
        }
    }
}
