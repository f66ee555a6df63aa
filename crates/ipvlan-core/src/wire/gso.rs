//! Finishing frames that carry a virtio-net header: partial checksums and GSO
//! super-frames become wire-ready IP packets, for the raw IP socket of the L3/L3S
//! egress path, which can carry neither.
//!
//! [`segment`] does for one frame what the kernel's `skb_gso_segment` and
//! `skb_checksum_help` do for an skb: it strips the Ethernet header, cuts the payload
//! after the TCP or UDP header into `gso_size` pieces, and gives each piece a copy of
//! the headers with the IP length, IPv4 id and header checksum, TCP sequence number
//! and flags, UDP length and the full L4 checksum fixed. A frame without GSO is
//! emitted as its IP packet, its checksum completed when `NEEDS_CSUM` says so.
//!
//! Contract:
//! * The Ethernet type must be IPv4 or IPv6 (no VLAN tag). The IP length field bounds
//!   the packet; bytes after it are Ethernet padding and are dropped. IPv4 needs
//!   IHL ≥ 5 and IHL·4 ≤ total length ≤ bytes present.
//! * GSO: `TCPV4` needs IPv4/TCP, `TCPV6` IPv6/TCP, `UDP_L4` IPv4/UDP or IPv6/UDP,
//!   the transport header directly after the IP header (no IPv6 extension headers,
//!   no IPv4 fragment). The `ECN` bit is accepted with any of them. `hdr_len`,
//!   `csum_start` and `csum_offset` are not used: every checksum is computed in full.
//!   Other GSO types (including UFO, `GSO_UDP`) are [`GsoError::Unsupported`].
//! * Every segment is built in the caller's scratch buffer, which must hold the
//!   largest segment (IP header + L4 header + `gso_size`), or the whole IP packet
//!   when a non-GSO checksum is completed; a shorter one is [`GsoError::Truncated`].
//!   [`SCRATCH_LEN`] always suffices. Nothing is allocated.
//! * Everything is validated before the first packet is emitted: on `Err`, `emit` has
//!   not been called. No input panics.

use super::vnet::{F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VnetHdr};
use super::{Error, be16, ethernet, ipv4, ipv6};

/// A scratch length that fits any packet [`segment`] builds: an Ethernet frame's
/// worth of IPv6 (fixed header plus the largest payload length).
pub const SCRATCH_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + 0xffff;

/// The most segments one frame may be cut into. A 64 KiB TCP frame cut at the
/// smallest MSS Linux sends (48 bytes) makes 1366; more is a sender asking for
/// amplification.
pub const MAX_SEGMENTS: usize = 2048;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

mod tcp {
    use core::ops::Range;
    pub const SEQ: Range<usize> = 4..8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const MIN_HEADER_LEN: usize = 20;
    pub const FIN: u8 = 0x01;
    pub const PSH: u8 = 0x08;
    pub const CWR: u8 = 0x80;
}

mod udp {
    use core::ops::Range;
    pub const LEN: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const HEADER_LEN: usize = 8;
}

/// Why a frame cannot be finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GsoError {
    /// A header or length field runs past the frame, or the scratch buffer is too
    /// short for a segment.
    #[error("frame truncated")]
    Truncated,
    /// A header is malformed or does not match the GSO type.
    #[error("bad header")]
    BadHeader,
    /// The GSO type (without the ECN bit) is not one this module segments.
    #[error("unsupported GSO type {0}")]
    Unsupported(u8),
    /// The frame would be cut into more than [`MAX_SEGMENTS`] segments.
    #[error("too many segments")]
    TooManySegments,
}

impl From<Error> for GsoError {
    fn from(e: Error) -> Self {
        match e {
            Error::Truncated => GsoError::Truncated,
            Error::BadVersion | Error::BadLength => GsoError::BadHeader,
        }
    }
}

/// Completes a partial checksum in place (`NEEDS_CSUM`): `frame` is the Ethernet
/// frame, `csum_start`/`csum_offset` come from the vnet header. The one's-complement
/// sum from `csum_start` to the end of `frame`, the pseudo-header sum already in the
/// field included, is folded and stored complemented (0 sent as `0xffff`, as the
/// kernel does).
pub fn complete_checksum(
    frame: &mut [u8],
    csum_start: u16,
    csum_offset: u16,
) -> Result<(), GsoError> {
    complete_at(frame, usize::from(csum_start), usize::from(csum_offset))
}

fn complete_at(buf: &mut [u8], start: usize, offset: usize) -> Result<(), GsoError> {
    let field = start + offset;
    if field + 2 > buf.len() {
        return Err(GsoError::Truncated);
    }
    let c = finish(sum(&buf[start..], 0));
    buf[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Cuts `frame` (Ethernet header first; the vnet header `hdr` already parsed) into
/// IP packets of at most `gso_size` payload bytes each and calls `emit` with each
/// finished packet, built in `scratch`. A non-GSO frame is emitted as its single IP
/// packet, its checksum completed if `NEEDS_CSUM`. Returns the number of packets
/// emitted. See the module doc for what is accepted.
pub fn segment(
    frame: &[u8],
    hdr: &VnetHdr,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, GsoError> {
    let eth = ethernet::Frame::new_checked(frame)?;
    let v4 = match eth.ethertype() {
        ethernet::ETHERTYPE_IPV4 => true,
        ethernet::ETHERTYPE_IPV6 => false,
        _ => return Err(GsoError::BadHeader),
    };
    let ip = ip_packet(eth.payload(), v4)?;
    if !hdr.is_gso() {
        return single(ip, v4, hdr, scratch, emit);
    }

    let gso = hdr.gso_type & !GSO_ECN;
    let (proto, want_v4) = match gso {
        GSO_TCPV4 => (IPPROTO_TCP, Some(true)),
        GSO_TCPV6 => (IPPROTO_TCP, Some(false)),
        GSO_UDP_L4 => (IPPROTO_UDP, None),
        t => return Err(GsoError::Unsupported(t)),
    };
    if want_v4.is_some_and(|w| w != v4) {
        return Err(GsoError::BadHeader);
    }
    let ip_hl = if v4 {
        let p = ipv4::Packet::new_unchecked(ip);
        if p.protocol() != proto || be16(ip, ipv4::FLAGS_FRAG.start) & 0x3fff != 0 {
            return Err(GsoError::BadHeader);
        }
        p.header_len()
    } else {
        if ipv6::Packet::new_unchecked(ip).next_header() != proto {
            return Err(GsoError::BadHeader);
        }
        ipv6::HEADER_LEN
    };
    let l4 = &ip[ip_hl..];
    let l4_hl = if proto == IPPROTO_TCP {
        let off = *l4.get(tcp::DATA_OFF).ok_or(GsoError::Truncated)?;
        let len = usize::from(off >> 4) * 4;
        if len < tcp::MIN_HEADER_LEN {
            return Err(GsoError::BadHeader);
        }
        len
    } else {
        udp::HEADER_LEN
    };
    let hl = ip_hl + l4_hl;
    let payload = ip.get(hl..).ok_or(GsoError::Truncated)?;

    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(GsoError::BadHeader);
    }
    let count = payload.len().div_ceil(mss).max(1);
    if count > MAX_SEGMENTS {
        return Err(GsoError::TooManySegments);
    }
    // No larger than the IP packet, so its length fields fit in 16 bits.
    let largest = hl + mss.min(payload.len());
    if largest > scratch.len() {
        return Err(GsoError::Truncated);
    }

    scratch[..hl].copy_from_slice(&ip[..hl]);
    let mut id = if v4 { be16(ip, ipv4::IDENT.start) } else { 0 };
    let (mut seq, flags0) = if proto == IPPROTO_TCP {
        (be32(ip, ip_hl + tcp::SEQ.start), ip[ip_hl + tcp::FLAGS])
    } else {
        (0, 0)
    };
    let mut rest = payload;
    for i in 0..count {
        let (chunk, tail) = rest.split_at(mss.min(rest.len()));
        rest = tail;
        let len = hl + chunk.len();
        let pkt = &mut scratch[..len];
        pkt[hl..].copy_from_slice(chunk);
        fix_ip(pkt, v4, ip_hl, id);
        if proto == IPPROTO_TCP {
            let mut flags = flags0;
            if i != 0 {
                flags &= !tcp::CWR;
            }
            if i != count - 1 {
                flags &= !(tcp::FIN | tcp::PSH);
            }
            let t = ip_hl;
            pkt[t + tcp::SEQ.start..t + tcp::SEQ.end].copy_from_slice(&seq.to_be_bytes());
            pkt[t + tcp::FLAGS] = flags;
            l4_checksum(pkt, v4, ip_hl, IPPROTO_TCP, tcp::CHECKSUM.start);
        } else {
            let t = ip_hl;
            let udp_len = u16_of(len - ip_hl);
            pkt[t + udp::LEN.start..t + udp::LEN.end].copy_from_slice(&udp_len.to_be_bytes());
            l4_checksum(pkt, v4, ip_hl, IPPROTO_UDP, udp::CHECKSUM.start);
        }
        emit(pkt);
        id = id.wrapping_add(1);
        seq = seq.wrapping_add(u32::from(hdr.gso_size));
    }
    Ok(count)
}

/// The IP packet in `eth_payload`, bounded by its length field.
fn ip_packet(eth_payload: &[u8], v4: bool) -> Result<&[u8], GsoError> {
    let len = if v4 {
        usize::from(ipv4::Packet::new_checked(eth_payload)?.total_len())
    } else {
        let p = ipv6::Packet::new_checked(eth_payload)?;
        ipv6::HEADER_LEN + usize::from(p.payload_len())
    };
    eth_payload.get(..len).ok_or(GsoError::Truncated)
}

fn single(
    ip: &[u8],
    v4: bool,
    hdr: &VnetHdr,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, GsoError> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        emit(ip);
        return Ok(1);
    }
    let ip_hl = if v4 {
        ipv4::Packet::new_unchecked(ip).header_len()
    } else {
        ipv6::HEADER_LEN
    };
    let start = usize::from(hdr.csum_start)
        .checked_sub(ethernet::HEADER_LEN)
        .filter(|&s| s >= ip_hl)
        .ok_or(GsoError::BadHeader)?;
    if start + usize::from(hdr.csum_offset) + 2 > ip.len() {
        return Err(GsoError::Truncated);
    }
    let out = scratch.get_mut(..ip.len()).ok_or(GsoError::Truncated)?;
    out.copy_from_slice(ip);
    complete_at(out, start, usize::from(hdr.csum_offset))?;
    emit(out);
    Ok(1)
}

/// Sets the IP length field from `pkt.len()`, and for IPv4 the id and header checksum.
fn fix_ip(pkt: &mut [u8], v4: bool, ip_hl: usize, id: u16) {
    if v4 {
        let total = u16_of(pkt.len());
        pkt[ipv4::TOTAL_LEN].copy_from_slice(&total.to_be_bytes());
        pkt[ipv4::IDENT].copy_from_slice(&id.to_be_bytes());
        pkt[ipv4::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = !fold(sum(&pkt[..ip_hl], 0));
        pkt[ipv4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    } else {
        let payload = u16_of(pkt.len() - ipv6::HEADER_LEN);
        pkt[ipv6::PAYLOAD_LEN].copy_from_slice(&payload.to_be_bytes());
    }
}

/// Computes the TCP or UDP checksum of `pkt[ip_hl..]` in full, pseudo-header included,
/// into the field at `ip_hl + field`.
fn l4_checksum(pkt: &mut [u8], v4: bool, ip_hl: usize, proto: u8, field: usize) {
    let at = ip_hl + field;
    pkt[at..at + 2].copy_from_slice(&[0, 0]);
    let addrs = if v4 {
        &pkt[ipv4::SRC.start..ipv4::DST.end]
    } else {
        &pkt[ipv6::SRC.start..ipv6::DST.end]
    };
    let l4_len = pkt.len() - ip_hl;
    let pseudo = sum(addrs, u64::from(proto) + u64::from(u16_of(l4_len)));
    let c = finish(sum(&pkt[ip_hl..], pseudo));
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Adds `data` to the one's-complement accumulator `acc`, as 16-bit big-endian words
/// counted from the start of `data` (an odd last byte is padded with zero).
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut tail = [0u8; 4];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::try_from(acc).unwrap_or(0xffff)
}

/// The checksum to transmit: the complemented fold, 0 sent as `0xffff`.
fn finish(acc: u64) -> u16 {
    match !fold(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// `n` as a length field; callers have bounded it by 0xffff.
fn u16_of(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet::{GSO_NONE, GSO_UDP};
    use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TcpHeader, TransportHeader};
    use proptest::prelude::*;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
    const V4_A: [u8; 4] = [10, 0, 0, 1];
    const V4_B: [u8; 4] = [10, 0, 0, 2];
    const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const SEQ0: u32 = 0xffff_f000; // wraps within a few segments
    const ID0: u16 = 0xfffe; // wraps too

    #[derive(Clone, Copy, Debug)]
    struct Spec {
        v4: bool,
        udp: bool,
        payload: usize,
        mss: u16,
        fin_psh: bool,
        cwr: bool,
        tcp_options: bool,
    }

    impl Spec {
        fn tcp4(payload: usize, mss: u16) -> Self {
            Spec {
                v4: true,
                udp: false,
                payload,
                mss,
                fin_psh: true,
                cwr: true,
                tcp_options: false,
            }
        }
    }

    fn payload_bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251).to_le_bytes()[0]).collect()
    }

    /// Folded one's-complement sum of the concatenation, without complement; written
    /// independently of the module's `sum`.
    fn ones(parts: &[&[u8]]) -> u16 {
        let mut all: Vec<u8> = parts.concat();
        if all.len() % 2 == 1 {
            all.push(0);
        }
        let mut s: u32 = 0;
        for w in all.chunks(2) {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
            s = (s & 0xffff) + (s >> 16);
        }
        u16::try_from(s).expect("folded to 16 bits")
    }

    fn pseudo(ip: &[u8], v4: bool, proto: u8, l4_len: usize) -> Vec<u8> {
        let mut p = if v4 {
            ip[12..20].to_vec()
        } else {
            ip[8..40].to_vec()
        };
        p.extend_from_slice(&u32::try_from(l4_len).unwrap().to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        p
    }

    /// The frame and vnet header the kernel would hand over for `s`: full super-frame,
    /// the L4 check field holding the pseudo-header sum.
    fn build(s: Spec) -> (Vec<u8>, VnetHdr) {
        let step = PacketBuilder::ethernet2(MAC_A, MAC_B);
        let step = if s.v4 {
            step.ipv4(V4_A, V4_B, 64)
        } else {
            step.ipv6(V6_A, V6_B, 64)
        };
        let data = payload_bytes(s.payload);
        let mut frame = Vec::new();
        if s.udp {
            step.udp(4000, 5000).write(&mut frame, &data).unwrap();
        } else {
            let mut th = TcpHeader::new(4000, 5000, SEQ0, 1000);
            th.ack = true;
            th.acknowledgment_number = 77;
            th.fin = s.fin_psh;
            th.psh = s.fin_psh;
            th.cwr = s.cwr;
            th.ece = s.cwr;
            if s.tcp_options {
                th.set_options_raw(&[1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8])
                    .unwrap();
            }
            step.tcp_header(th).write(&mut frame, &data).unwrap();
        }
        let ip_hl = if s.v4 {
            frame[14..16].copy_from_slice(&[0x45, 0]);
            frame[18..20].copy_from_slice(&ID0.to_be_bytes());
            20
        } else {
            40
        };
        let (proto, field) = if s.udp { (17, 6) } else { (6, 16) };
        let l4 = 14 + ip_hl;
        let l4_len = frame.len() - l4;
        let ps = ones(&[&pseudo(&frame[14..], s.v4, proto, l4_len)]);
        frame[l4 + field..l4 + field + 2].copy_from_slice(&ps.to_be_bytes());
        let l4_hl = if s.udp {
            8
        } else {
            usize::from(frame[l4 + 12] >> 4) * 4
        };
        let gso_type = match (s.udp, s.v4) {
            (true, _) => GSO_UDP_L4,
            (false, true) => GSO_TCPV4,
            (false, false) => GSO_TCPV6,
        } | if s.cwr && !s.udp { GSO_ECN } else { 0 };
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: u16::try_from(l4 + l4_hl).unwrap(),
            gso_size: s.mss,
            csum_start: u16::try_from(l4).unwrap(),
            csum_offset: u16::try_from(field).unwrap(),
        };
        (frame, hdr)
    }

    fn run(frame: &[u8], hdr: &VnetHdr) -> Result<Vec<Vec<u8>>, GsoError> {
        let mut scratch = vec![0u8; SCRATCH_LEN];
        let mut out = Vec::new();
        let n = segment(frame, hdr, &mut scratch, |p| out.push(p.to_vec()))?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    /// Checks every segment of `s` with etherparse and with an independent sum.
    fn verify(s: Spec) -> Vec<Vec<u8>> {
        let (frame, hdr) = build(s);
        let segs = run(&frame, &hdr).unwrap();
        let mss = usize::from(s.mss);
        assert_eq!(segs.len(), s.payload.div_ceil(mss).max(1));
        let mut joined = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let first = i == 0;
            let last = i == segs.len() - 1;
            let h = PacketHeaders::from_ip_slice(seg).unwrap();
            let data = h.payload.slice();
            if last {
                assert!(data.len() <= mss && (!data.is_empty() || s.payload == 0));
            } else {
                assert_eq!(data.len(), mss);
            }
            joined.extend_from_slice(data);
            let ip_hl = match h.net.as_ref().unwrap() {
                NetHeaders::Ipv4(ip, _) => {
                    assert!(s.v4);
                    assert_eq!(usize::from(ip.total_len), seg.len());
                    assert_eq!(
                        ip.identification,
                        ID0.wrapping_add(u16::try_from(i).unwrap())
                    );
                    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                    assert_eq!(ones(&[&seg[..20]]), 0xffff);
                    20
                }
                NetHeaders::Ipv6(ip, _) => {
                    assert!(!s.v4);
                    assert_eq!(usize::from(ip.payload_length), seg.len() - 40);
                    40
                }
                NetHeaders::Arp(_) => unreachable!(),
            };
            let proto = match h.transport.as_ref().unwrap() {
                TransportHeader::Tcp(t) => {
                    assert!(!s.udp);
                    let step = u32::try_from(i * mss).unwrap();
                    assert_eq!(t.sequence_number, SEQ0.wrapping_add(step));
                    assert_eq!(t.acknowledgment_number, 77);
                    assert!(t.ack);
                    assert_eq!(t.fin, s.fin_psh && last);
                    assert_eq!(t.psh, s.fin_psh && last);
                    assert_eq!(t.cwr, s.cwr && first);
                    assert_eq!(t.ece, s.cwr);
                    assert_eq!(
                        t.options.as_slice().len(),
                        if s.tcp_options { 12 } else { 0 }
                    );
                    let want = match h.net.as_ref().unwrap() {
                        NetHeaders::Ipv4(ip, _) => t.calc_checksum_ipv4(ip, data).unwrap(),
                        NetHeaders::Ipv6(ip, _) => t.calc_checksum_ipv6(ip, data).unwrap(),
                        NetHeaders::Arp(_) => unreachable!(),
                    };
                    // etherparse never mangles 0; ours sends 0 as 0xffff.
                    assert_eq!(t.checksum, if want == 0 { 0xffff } else { want });
                    6
                }
                TransportHeader::Udp(u) => {
                    assert!(s.udp);
                    assert_eq!(usize::from(u.length), seg.len() - ip_hl);
                    let want = match h.net.as_ref().unwrap() {
                        NetHeaders::Ipv4(ip, _) => u.calc_checksum_ipv4(ip, data).unwrap(),
                        NetHeaders::Ipv6(ip, _) => u.calc_checksum_ipv6(ip, data).unwrap(),
                        NetHeaders::Arp(_) => unreachable!(),
                    };
                    assert_eq!(u.checksum, want);
                    17
                }
                _ => unreachable!(),
            };
            let l4 = &seg[ip_hl..];
            assert_eq!(
                ones(&[&pseudo(seg, s.v4, proto, l4.len()), l4]),
                0xffff,
                "segment {i} L4 checksum"
            );
        }
        assert_eq!(joined, payload_bytes(s.payload));
        segs
    }

    #[test]
    fn ipv4_tcp_3000_at_1448() {
        let segs = verify(Spec::tcp4(3000, 1448));
        let lens: Vec<usize> = segs.iter().map(Vec::len).collect();
        assert_eq!(lens, [1488, 1488, 144]);
    }

    #[test]
    fn ipv4_tcp_with_options_exact_multiple() {
        let segs = verify(Spec {
            tcp_options: true,
            ..Spec::tcp4(1448 * 4, 1448)
        });
        assert_eq!(segs.len(), 4);
        assert!(segs.iter().all(|s| s.len() == 20 + 32 + 1448));
    }

    #[test]
    fn ipv6_tcp() {
        let segs = verify(Spec {
            v4: false,
            ..Spec::tcp4(4000, 1428)
        });
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].len(), 40 + 20 + 1428);
    }

    #[test]
    fn ipv4_udp_l4() {
        let segs = verify(Spec {
            udp: true,
            fin_psh: false,
            cwr: false,
            ..Spec::tcp4(3001, 1000)
        });
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[3].len(), 20 + 8 + 1);
    }

    #[test]
    fn ipv6_udp_l4() {
        verify(Spec {
            v4: false,
            udp: true,
            fin_psh: false,
            cwr: false,
            ..Spec::tcp4(2500, 1232)
        });
    }

    #[test]
    fn no_flags_to_move() {
        verify(Spec {
            fin_psh: false,
            cwr: false,
            ..Spec::tcp4(3000, 1000)
        });
    }

    #[test]
    fn gso_frame_smaller_than_mss_is_one_finished_packet() {
        verify(Spec::tcp4(100, 1448));
        verify(Spec::tcp4(0, 1448));
    }

    #[test]
    fn complete_checksum_of_single_frames() {
        for (v4, udp) in [(true, false), (true, true), (false, false), (false, true)] {
            let s = Spec {
                v4,
                udp,
                ..Spec::tcp4(333, 1448)
            };
            let (mut frame, hdr) = build(s);
            let ip_hl = if v4 { 20 } else { 40 };
            let field = 14 + ip_hl + usize::from(hdr.csum_offset);
            // The full checksum, as etherparse would have written it.
            let h = PacketHeaders::from_ip_slice(&frame[14..]).unwrap();
            let want = match (h.net.unwrap(), h.transport.unwrap()) {
                (NetHeaders::Ipv4(ip, _), TransportHeader::Tcp(t)) => {
                    t.calc_checksum_ipv4(&ip, h.payload.slice()).unwrap()
                }
                (NetHeaders::Ipv6(ip, _), TransportHeader::Tcp(t)) => {
                    t.calc_checksum_ipv6(&ip, h.payload.slice()).unwrap()
                }
                (NetHeaders::Ipv4(ip, _), TransportHeader::Udp(u)) => {
                    u.calc_checksum_ipv4(&ip, h.payload.slice()).unwrap()
                }
                (NetHeaders::Ipv6(ip, _), TransportHeader::Udp(u)) => {
                    u.calc_checksum_ipv6(&ip, h.payload.slice()).unwrap()
                }
                _ => unreachable!(),
            };
            let want = if want == 0 { 0xffff } else { want };

            // Through `segment`, from a non-GSO header.
            let single = VnetHdr {
                gso_type: GSO_NONE,
                gso_size: 0,
                ..hdr
            };
            let segs = run(&frame, &single).unwrap();
            assert_eq!(segs.len(), 1);
            assert_eq!(segs[0].len(), frame.len() - 14);
            assert_eq!(be16(&segs[0], field - 14), want);

            // In place.
            complete_checksum(&mut frame, hdr.csum_start, hdr.csum_offset).unwrap();
            assert_eq!(be16(&frame, field), want);
            assert_eq!(segs[0], frame[14..]);
        }
    }

    #[test]
    fn non_gso_without_needs_csum_is_passed_through_without_padding() {
        let (mut frame, hdr) = build(Spec::tcp4(10, 1448));
        let ip = frame[14..].to_vec();
        frame.extend_from_slice(&[0xee; 6]);
        let plain = VnetHdr {
            gso_type: GSO_NONE,
            flags: 0,
            ..hdr
        };
        let mut scratch = [0u8; 0];
        let mut got = Vec::new();
        assert_eq!(
            segment(&frame, &plain, &mut scratch, |p| got.push(p.to_vec())),
            Ok(1)
        );
        assert_eq!(got, [ip]);
    }

    #[test]
    fn complete_checksum_bounds() {
        let mut b = [0u8; 20];
        assert_eq!(complete_checksum(&mut b, 10, 9), Err(GsoError::Truncated));
        assert_eq!(complete_checksum(&mut b, 21, 0), Err(GsoError::Truncated));
        assert_eq!(complete_checksum(&mut b, 18, 0), Ok(()));
        assert_eq!(b[18..], [0xff, 0xff]);
        // Odd tail byte padded with zero: 0x0102 + 0x0300 = 0x0402.
        let mut b = [0, 0, 1, 2, 3];
        complete_checksum(&mut b, 0, 0).unwrap();
        assert_eq!(b[..2], (!0x0402u16).to_be_bytes());
    }

    #[test]
    fn rejects() {
        let (frame, hdr) = build(Spec::tcp4(3000, 1448));
        let seg = |f: &[u8], h: &VnetHdr| run(f, h).map(|v| v.len());

        assert_eq!(seg(&frame[..13], &hdr), Err(GsoError::Truncated));
        assert_eq!(seg(&frame[..40], &hdr), Err(GsoError::Truncated));
        assert_eq!(
            seg(&frame[..frame.len() - 1], &hdr),
            Err(GsoError::Truncated)
        );
        let unsupported = |t| VnetHdr { gso_type: t, ..hdr };
        assert_eq!(
            seg(&frame, &unsupported(GSO_UDP)),
            Err(GsoError::Unsupported(GSO_UDP))
        );
        assert_eq!(
            seg(&frame, &unsupported(9 | GSO_ECN)),
            Err(GsoError::Unsupported(9))
        );
        assert_eq!(
            seg(&frame, &unsupported(GSO_TCPV6)),
            Err(GsoError::BadHeader)
        );
        assert_eq!(
            seg(&frame, &unsupported(GSO_UDP_L4)),
            Err(GsoError::BadHeader)
        );
        assert_eq!(
            seg(&frame, &VnetHdr { gso_size: 0, ..hdr }),
            Err(GsoError::BadHeader)
        );
        assert_eq!(
            seg(&frame, &VnetHdr { gso_size: 1, ..hdr }),
            Err(GsoError::TooManySegments)
        );
        assert_eq!(seg(&frame, &VnetHdr { gso_size: 2, ..hdr }), Ok(1500));

        let with = |at: usize, v: u8| {
            let mut f = frame.clone();
            f[at] = v;
            f
        };
        assert_eq!(seg(&with(12, 0x81), &hdr), Err(GsoError::BadHeader)); // VLAN
        assert_eq!(seg(&with(14, 0x44), &hdr), Err(GsoError::BadHeader)); // IHL 4
        assert_eq!(seg(&with(20, 0x20), &hdr), Err(GsoError::BadHeader)); // MF
        assert_eq!(seg(&with(23, 17), &hdr), Err(GsoError::BadHeader)); // not TCP
        assert_eq!(seg(&with(46, 0x40), &hdr), Err(GsoError::BadHeader)); // doff 4

        let mut small = vec![0u8; 1000];
        let mut called = false;
        assert_eq!(
            segment(&frame, &hdr, &mut small, |_| called = true),
            Err(GsoError::Truncated)
        );
        assert!(!called);

        let single = VnetHdr {
            gso_type: GSO_NONE,
            ..hdr
        };
        let at = |start: u16, offset: u16| VnetHdr {
            csum_start: start,
            csum_offset: offset,
            ..single
        };
        assert_eq!(seg(&frame, &at(10, 16)), Err(GsoError::BadHeader));
        assert_eq!(seg(&frame, &at(30, 16)), Err(GsoError::BadHeader));
        assert_eq!(
            seg(&frame, &at(34, u16::try_from(frame.len()).unwrap() - 35)),
            Err(GsoError::Truncated)
        );
        assert_eq!(
            seg(&frame, &at(34, u16::try_from(frame.len()).unwrap() - 36)),
            Ok(1)
        );
    }

    #[test]
    fn ipv6_extension_header_is_refused() {
        let (mut frame, hdr) = build(Spec {
            v4: false,
            ..Spec::tcp4(3000, 1448)
        });
        frame[14 + 6] = 0; // hop-by-hop
        assert_eq!(run(&frame, &hdr).map(|v| v.len()), Err(GsoError::BadHeader));
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            any::<bool>(),
            any::<bool>(),
            0usize..5000,
            8u16..2000,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(v4, udp, payload, mss, fin_psh, cwr, tcp_options)| Spec {
                v4,
                udp,
                payload,
                mss,
                fin_psh: fin_psh && !udp,
                cwr: cwr && !udp,
                tcp_options: tcp_options && !udp,
            })
    }

    fn vnet() -> impl Strategy<Value = VnetHdr> {
        (
            any::<u8>(),
            prop_oneof![
                Just(GSO_NONE),
                Just(GSO_TCPV4),
                Just(GSO_TCPV6),
                Just(GSO_UDP_L4),
                any::<u8>()
            ],
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(
                |(flags, gso_type, gso_size, csum_start, csum_offset)| VnetHdr {
                    flags,
                    gso_type,
                    hdr_len: 0,
                    gso_size,
                    csum_start,
                    csum_offset,
                },
            )
    }

    proptest! {
        #[test]
        fn every_segment_verifies(s in spec()) {
            verify(s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            frame in proptest::collection::vec(any::<u8>(), 0..200),
            hdr in vnet(),
            scratch_len in 0usize..300,
        ) {
            let mut scratch = vec![0u8; scratch_len];
            let mut n = 0;
            if let Ok(k) = segment(&frame, &hdr, &mut scratch, |p| {
                assert!(p.len() <= frame.len());
                n += 1;
            }) {
                prop_assert_eq!(k, n);
            }
            let mut f = frame.clone();
            let _ = complete_checksum(&mut f, hdr.csum_start, hdr.csum_offset);
        }

        #[test]
        fn mutated_frames_never_panic(
            s in spec(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            hdr in vnet(),
            keep_hdr in any::<bool>(),
        ) {
            let (mut frame, good) = build(s);
            for (at, v) in edits {
                let i = at.index(frame.len());
                frame[i] = v;
            }
            let len = frame.len();
            let frame = &frame[..cut.index(len + 1)];
            let hdr = if keep_hdr { good } else { hdr };
            let mut scratch = vec![0u8; SCRATCH_LEN];
            let mut n = 0;
            let r = segment(frame, &hdr, &mut scratch, |_| n += 1);
            prop_assert_eq!(r.unwrap_or(0), n);
        }
    }
}
