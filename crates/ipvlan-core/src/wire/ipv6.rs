//! IPv6 fixed header.
//!
//! `new_checked` requires the 40-byte header and version 6, nothing more: like the
//! kernel driver when it keys on a frame, the payload length field is not compared
//! with the bytes present, and extension headers are not walked. [`Packet::payload`]
//! is therefore every byte after the fixed header.

use super::{Error, be16};
use core::net::Ipv6Addr;
use core::ops::Range;

pub const VER_TC_FLOW: Range<usize> = 0..4;
pub const PAYLOAD_LEN: Range<usize> = 4..6;
pub const NEXT_HEADER: usize = 6;
pub const HOP_LIMIT: usize = 7;
pub const SRC: Range<usize> = 8..24;
pub const DST: Range<usize> = 24..40;
pub const HEADER_LEN: usize = 40;

/// Next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;

/// A view of an IPv6 packet.
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
        p.check()?;
        Ok(p)
    }

    pub fn check(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else if self.version() != 6 {
            Err(Error::BadVersion)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), PAYLOAD_LEN.start)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), SRC.start)
    }

    pub fn dst(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), DST.start)
    }

    /// Every byte after the fixed header, whatever the payload length field says.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

pub(crate) fn ipv6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    // fe80::1 -> ff02::1, ICMPv6, traffic class 0xab, flow label 0x12345.
    static HDR: [u8; 44] = [
        0x6a, 0xb1, 0x23, 0x45, // version, TC, flow
        0x00, 0x04, 58, 255, // payload len, next header, hop limit
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // src
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // dst
        0x80, 0x00, 0x12, 0x34, // payload
    ];

    #[test]
    fn fields() {
        let p = Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xab);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), NEXT_HEADER_ICMPV6);
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.src(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst(), "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[0x80, 0x00, 0x12, 0x34]);
    }

    #[test]
    fn truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&HDR[..n]), Err(Error::Truncated));
        }
        let p = Packet::new_checked(&HDR[..HEADER_LEN]).unwrap();
        assert!(p.payload().is_empty());
    }

    #[test]
    fn bad_version() {
        let mut b = HDR;
        b[0] = 0x4a;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadVersion));
    }

    #[test]
    fn payload_len_is_not_checked() {
        let mut b = HDR;
        b[4] = 0xff;
        assert!(Packet::new_checked(&b[..]).is_ok());
    }
}
