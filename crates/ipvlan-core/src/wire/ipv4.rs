//! IPv4 header, validated the way the kernel driver validates it before keying on it.
//!
//! `new_checked` accepts a buffer when: at least 20 bytes are present, the version is
//! 4, IHL ≥ 5, and IHL·4 ≤ total length ≤ bytes present. Trailing bytes beyond the
//! total length (Ethernet padding) are allowed and excluded from [`Packet::payload`].
//! The header checksum is not verified (the driver does not either).

use super::{Error, be16};
use core::net::Ipv4Addr;
use core::ops::Range;

pub const VER_IHL: usize = 0;
pub const DSCP_ECN: usize = 1;
pub const TOTAL_LEN: Range<usize> = 2..4;
pub const IDENT: Range<usize> = 4..6;
pub const FLAGS_FRAG: Range<usize> = 6..8;
pub const TTL: usize = 8;
pub const PROTOCOL: usize = 9;
pub const CHECKSUM: Range<usize> = 10..12;
pub const SRC: Range<usize> = 12..16;
pub const DST: Range<usize> = 16..20;
pub const MIN_HEADER_LEN: usize = 20;

/// A view of an IPv4 packet.
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

    /// The validity test of spec §3 for IPv4.
    pub fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::BadLength);
        }
        let total = usize::from(self.total_len());
        if total < header_len {
            return Err(Error::BadLength);
        }
        if total > b.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[VER_IHL] >> 4
    }

    /// IHL·4, in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[VER_IHL] & 0x0f) * 4
    }

    /// The DSCP/ECN byte (the old TOS).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[DSCP_ECN]
    }

    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), TOTAL_LEN.start)
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[TTL]
    }

    /// The fragment offset, in 8-byte units (0 for an unfragmented packet or the
    /// first fragment).
    pub fn frag_offset(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[FLAGS_FRAG.start], b[FLAGS_FRAG.start + 1]]) & 0x1fff
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[PROTOCOL]
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(
            b[SRC.start],
            b[SRC.start + 1],
            b[SRC.start + 2],
            b[SRC.start + 3],
        )
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(
            b[DST.start],
            b[DST.start + 1],
            b[DST.start + 2],
            b[DST.start + 3],
        )
    }

    /// The bytes between the header (options included) and the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.0.0.1 -> 10.0.0.2, UDP, 4 payload bytes, then 2 bytes of padding.
    static UDP: [u8; 26] = [
        0x45, 0x00, 0x00, 0x18, // v4, IHL 5, total 24
        0x12, 0x34, 0x40, 0x00, // id, DF
        0x40, 0x11, 0x00, 0x00, // TTL 64, UDP, checksum
        10, 0, 0, 1, // src
        10, 0, 0, 2, // dst
        0xde, 0xad, 0xbe, 0xef, // payload
        0x00, 0x00, // padding
    ];

    fn with(f: impl FnOnce(&mut [u8; 26])) -> [u8; 26] {
        let mut b = UDP;
        f(&mut b);
        b
    }

    #[test]
    fn fields() {
        let p = Packet::new_checked(&UDP[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn options_are_skipped() {
        let b = with(|b| {
            b[0] = 0x46;
            b[20..24].copy_from_slice(&[1, 1, 1, 0]);
        });
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn short_buffer() {
        assert_eq!(Packet::new_checked(&UDP[..19]), Err(Error::Truncated));
    }

    #[test]
    fn bad_version() {
        let b = with(|b| b[0] = 0x65);
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadVersion));
    }

    #[test]
    fn ihl_below_five() {
        for ihl in 0..5 {
            let b = with(|b| b[0] = 0x40 | ihl);
            assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadLength));
        }
    }

    #[test]
    fn total_len_beyond_buffer() {
        let b = with(|b| b[3] = 27);
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Truncated));
        assert!(Packet::new_checked(&UDP[..24]).is_ok());
        assert_eq!(Packet::new_checked(&UDP[..23]), Err(Error::Truncated));
    }

    #[test]
    fn total_len_below_header() {
        let b = with(|b| b[3] = 19);
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadLength));
        let b = with(|b| {
            b[0] = 0x46;
            b[3] = 22;
        });
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadLength));
    }

    #[test]
    fn ihl_beyond_buffer_is_caught_by_total_len() {
        let b = with(|b| {
            b[0] = 0x4f;
            b[3] = 60;
        });
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Truncated));
    }
}
