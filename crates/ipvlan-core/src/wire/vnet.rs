//! `struct virtio_net_hdr`: the 10-byte header that packet sockets with
//! `PACKET_VNET_HDR` (and TAP devices with `IFF_VNET_HDR`) put before each frame, so
//! GSO super-frames and partial checksums travel whole.
//!
//! Multi-byte fields are in the host's native byte order, as the kernel writes them for
//! packet sockets (legacy virtio: little-endian on little-endian hosts).

use super::Error;

/// `flags`: the checksum from `csum_start` on is still to be computed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum is known to be valid.
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Bit or-ed into `gso_type` when the TCP segments carry ECN/CWR.
pub const GSO_ECN: u8 = 0x80;

/// A parsed virtio-net header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const LEN: usize = 10;

    /// Reads the header from the first 10 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let b: &[u8; Self::LEN] = buf
            .get(..Self::LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::Truncated)?;
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        })
    }

    /// Writes the header into the first 10 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let out = buf.get_mut(..Self::LEN).ok_or(Error::Truncated)?;
        out.copy_from_slice(&self.to_bytes());
        Ok(())
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let [h0, h1] = self.hdr_len.to_ne_bytes();
        let [g0, g1] = self.gso_size.to_ne_bytes();
        let [s0, s1] = self.csum_start.to_ne_bytes();
        let [o0, o1] = self.csum_offset.to_ne_bytes();
        [self.flags, self.gso_type, h0, h1, g0, g1, s0, s1, o0, o1]
    }

    /// Whether the frame behind this header is a GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    static TCPV4_GSO: [u8; 10] = [
        F_NEEDS_CSUM,
        GSO_TCPV4,
        66,
        0, // hdr_len 66
        0xa8,
        0x05, // gso_size 1448
        34,
        0, // csum_start 34
        16,
        0, // csum_offset 16
    ];

    #[cfg(target_endian = "little")]
    #[test]
    fn parse_little_endian_bytes() {
        let h = VnetHdr::parse(&TCPV4_GSO).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert!(h.is_gso());
        assert_eq!(h.to_bytes(), TCPV4_GSO);
    }

    #[test]
    fn round_trip() {
        let h = VnetHdr {
            flags: F_DATA_VALID,
            gso_type: GSO_TCPV6 | GSO_ECN,
            hdr_len: 0x1234,
            gso_size: 0xabcd,
            csum_start: 0x0102,
            csum_offset: 0xfffe,
        };
        let mut buf = [0u8; 12];
        h.emit(&mut buf).unwrap();
        assert_eq!(buf[10..], [0, 0]);
        assert_eq!(VnetHdr::parse(&buf).unwrap(), h);
    }

    #[test]
    fn default_is_no_gso() {
        let h = VnetHdr::default();
        assert!(!h.is_gso());
        assert_eq!(h.to_bytes(), [0; 10]);
        assert!(
            !VnetHdr {
                gso_type: GSO_ECN,
                ..h
            }
            .is_gso()
        );
    }

    #[test]
    fn short_buffers() {
        assert_eq!(VnetHdr::parse(&[0; 9]), Err(Error::Truncated));
        assert_eq!(VnetHdr::default().emit(&mut [0; 9]), Err(Error::Truncated));
    }
}
