//! Ethernet II header: destination, source, ethertype, then the payload.
//!
//! The checked constructor requires the 14-byte header. VLAN tags are not parsed:
//! like the kernel after hardware tag stripping, the port keys on the outermost
//! ethertype, and a tagged frame simply carries ethertype 0x8100.
//!
//! [`Repr`] is the header as plain fields: frames are built with [`Repr::emit`], through
//! the same view that reads them.

use super::{Error, be16, mac_at};
use crate::MacAddr;
use core::ops::Range;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// MAC Control (802.3x PAUSE and priority flow control).
pub const ETHERTYPE_MAC_CONTROL: u16 = 0x8808;

pub const DST: Range<usize> = 0..6;
pub const SRC: Range<usize> = 6..12;
pub const ETHERTYPE: Range<usize> = 12..14;
pub const HEADER_LEN: usize = 14;

/// A view of an Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Succeeds when the buffer holds the full 14-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
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

    pub fn dst(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), DST.start)
    }

    pub fn src(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), SRC.start)
    }

    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), ETHERTYPE.start)
    }

    /// Everything after the header (may be empty).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[DST].copy_from_slice(&mac.0);
    }

    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[SRC].copy_from_slice(&mac.0);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// An Ethernet header as plain fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Repr {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Self {
        Repr {
            dst: frame.dst(),
            src: frame.src(),
            ethertype: frame.ethertype(),
        }
    }

    /// The length of a frame with this header and `payload_len` bytes of payload.
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    /// Writes the header into `frame`; its payload is left as it is.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst(self.dst);
        frame.set_src(self.src);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ARP_BCAST: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn fields() {
        let f = Frame::new_checked(&ARP_BCAST[..]).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn header_only_has_empty_payload() {
        let f = Frame::new_checked(&ARP_BCAST[..14]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn truncated() {
        for n in 0..14 {
            assert_eq!(Frame::new_checked(&ARP_BCAST[..n]), Err(Error::Truncated));
        }
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = [0u8; 20];
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        f.set_dst(MacAddr([1, 2, 3, 4, 5, 6]));
        f.set_src(MacAddr([7, 8, 9, 10, 11, 12]));
        f.set_ethertype(ETHERTYPE_IPV6);
        f.payload_mut()[0] = 0x60;
        assert_eq!(
            buf[..15],
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x86, 0xdd, 0x60]
        );
    }

    #[test]
    fn repr_parses_what_it_emits() {
        let f = Frame::new_checked(&ARP_BCAST[..]).unwrap();
        let repr = Repr::parse(&f);
        assert_eq!(
            repr,
            Repr {
                dst: MacAddr::BROADCAST,
                src: MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
                ethertype: ETHERTYPE_ARP,
            }
        );
        assert_eq!(repr.buffer_len(2), ARP_BCAST.len());
        let mut buf = [0u8; 16];
        buf[14..].copy_from_slice(&[0xaa, 0xbb]);
        let mut out = Frame::new_checked(&mut buf[..]).unwrap();
        repr.emit(&mut out);
        assert_eq!(buf, ARP_BCAST);
    }

    #[test]
    fn emit_writes_the_header_only() {
        static IPV6_TO_SLAVE: [u8; 15] = [
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // dst: the master's MAC
            0x02, 0x00, 0x00, 0x00, 0x00, 0x99, // src: the gateway's
            0x86, 0xdd, // IPv6
            0x60, // payload, untouched
        ];
        let mut buf = [0x11u8; 15];
        buf[14] = 0x60;
        let repr = Repr {
            dst: MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            src: MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x99]),
            ethertype: ETHERTYPE_IPV6,
        };
        repr.emit(&mut Frame::new_checked(&mut buf[..]).unwrap());
        assert_eq!(buf, IPV6_TO_SLAVE);
    }
}
