//! What happens to one frame: the demux key (spec §3) and the decision tables of the
//! TX path (§4.1, §4.2) and the RX path (§5.1–§5.3).
//!
//! [`decide`] is a pure function of a [`PortSnapshot`], where the frame came from
//! and its bytes (starting at the Ethernet header). It never allocates and never
//! panics. Carrying the decision out — copying, routing, counting — is the
//! datapath's job; in particular the multicast worker of §4.4 is the datapath's
//! handling of [`Decision::Flood`] (see [`PortSnapshot::flood_targets`]).
//!
//! Frames from a slave are assumed to come from a slave that is up; the address
//! table only holds addresses of up slaves, so unicast needs no up-check.
//!
//! Two checks come before the spec's tables on what a slave sends, both ipvlan-rs's
//! own: its source MAC must be the master's ([`DropReason::Spoof`]), and, with the
//! source guard on, its source address its own ([`guard_allows`]).

use crate::wire::{arp, ethernet, icmpv6, ipv4, ipv6};
use crate::{Flags, Mode, PortSnapshot, SlaveId};
use core::net::IpAddr;

/// Which address of a frame [`demux_key`] extracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyDir {
    /// ARP target, IP destination: who the frame is for.
    Dest,
    /// ARP sender, IP source: who sent it.
    Source,
}

/// The address that decides ownership of `frame` (Ethernet header first), per the
/// table of spec §3:
///
/// * ARP (≥ 28 bytes): target / sender protocol address;
/// * IPv4 (version 4, IHL ≥ 5, IHL·4 ≤ total length ≤ bytes present): dst / src;
/// * IPv6 (version 6, 40 bytes): dst / src — except when the source is `::` and the
///   next header is ICMPv6: then the key is the target of a Neighbour Solicitation
///   (a DAD probe) in both directions, and there is no key for any other ICMPv6
///   message or when the ICMPv6 header or NS target is truncated;
/// * anything else, or a check failing: no key.
pub fn demux_key(frame: &[u8], dir: KeyDir) -> Option<IpAddr> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let l3 = eth.payload();
    match eth.ethertype() {
        ethernet::ETHERTYPE_ARP => {
            let a = arp::Packet::new_checked(l3).ok()?;
            Some(IpAddr::V4(match dir {
                KeyDir::Dest => a.target_protocol_addr(),
                KeyDir::Source => a.sender_protocol_addr(),
            }))
        }
        ethernet::ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::new_checked(l3).ok()?;
            Some(IpAddr::V4(match dir {
                KeyDir::Dest => ip.dst(),
                KeyDir::Source => ip.src(),
            }))
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::new_checked(l3).ok()?;
            if ip.src().is_unspecified() && ip.next_header() == ipv6::NEXT_HEADER_ICMPV6 {
                let icmp = icmpv6::Packet::new_checked(ip.payload()).ok()?;
                return icmp.ns_target().map(IpAddr::V6);
            }
            Some(IpAddr::V6(match dir {
                KeyDir::Dest => ip.dst(),
                KeyDir::Source => ip.src(),
            }))
        }
        _ => None,
    }
}

/// Where a frame entered the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// Received on the master (from the wire).
    Master,
    /// Transmitted by this slave.
    Slave(SlaveId),
}

/// What to do with one frame.
///
/// For frames from [`Ingress::Master`] the master's own stack keeps its copy unless
/// the decision is [`Decision::ToSlave`], which takes the frame away from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    Drop(DropReason),
    /// Deliver the frame unchanged to this slave (local delivery or demuxed RX).
    ToSlave(SlaveId),
    /// Transmit the frame unchanged on the master.
    ToWire,
    /// Hand the frame to the master's own stack as if the master had received it
    /// (L2 same-MAC unicast that no slave owns). The backends carry it out only with
    /// host access on ([`PortSnapshot::host_access`]), through the slave's host end.
    ToMasterStack,
    /// Copy to every up slave, in creation order, whose filter accepts the
    /// destination MAC, except `origin`; then transmit on the master if `to_wire`.
    Flood {
        origin: Option<SlaveId>,
        to_wire: bool,
    },
    /// L3/L3S egress: strip the Ethernet header and route the IP packet in the
    /// master's namespace (spec §4.2 step 3). The IP header passed the checks of
    /// [`demux_key`] for its ethertype.
    Route,
    /// Nothing for the datapath to do: no slave is involved, the master's stack has
    /// the frame.
    Pass,
}

/// Why a frame was dropped: by [`decide`], or by a backend carrying a decision out.
///
/// The one list of drop reasons: [`DropReason::as_str`] is each one's name wherever a
/// drop is counted or shown (`ipvlan -s`, its JSON, the Prometheus metrics, the kernel
/// backend's nftables counters, see [`crate::compile::drop_counter`]), and
/// [`FromStr`](core::str::FromStr) reads it back. The names are stable.
///
/// [`decide`] returns `Spoof`, `SourceGuard`, `Private`, `Malformed`, `L3Filtered` and
/// `Pause`; the others are a backend's: what happened when it carried a decision out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A frame from a slave whose source MAC is not the master's (which every slave
    /// carries): forged, never switched. The kernel driver does not police this;
    /// ipvlan-rs does (issue 5).
    Spoof,
    /// The source guard (an ipvlan-rs extension) refused what a slave sent: not ARP,
    /// IPv4 or IPv6 from one of its own addresses (see [`guard_allows`]).
    SourceGuard,
    /// Slave-to-slave unicast on a private port.
    Private,
    /// Shorter than an Ethernet header; L3/L3S egress of an IPv4/IPv6 ethertype whose
    /// header fails the checks of spec §3, which cannot be routed (the kernel would
    /// route garbage); or a frame a backend could not take apart (GSO).
    Malformed,
    /// (Backend) Unicast between equal MACs whose key no slave owns, which the kernel
    /// hands to the master's own stack (§4.1, §9.1) and the user backend cannot reach
    /// (but with host access);
    /// or routed egress with no socket to route it through.
    NoOwner,
    /// (Backend) L3/L3S egress the master's namespace could not route or send (the
    /// driver's `tx_errors`, spec §4.2).
    NoRoute,
    /// L3/L3S egress to a multicast or broadcast MAC, or of something that is neither
    /// IPv4 nor IPv6 (§4.2).
    L3Filtered,
    /// An 802.3x MAC Control (PAUSE) frame headed for the multicast worker.
    Pause,
    /// (Backend) A socket buffer was full.
    QueueFull,
    /// (Backend) The decision named a slave the backend has no socket for (one being
    /// set up or removed).
    Other,
}

impl DropReason {
    /// Every reason, in the order counters list them.
    pub const ALL: [DropReason; 10] = [
        DropReason::Spoof,
        DropReason::SourceGuard,
        DropReason::Private,
        DropReason::Malformed,
        DropReason::NoOwner,
        DropReason::NoRoute,
        DropReason::L3Filtered,
        DropReason::Pause,
        DropReason::QueueFull,
        DropReason::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Spoof => "spoof",
            DropReason::SourceGuard => "source_guard",
            DropReason::Private => "private",
            DropReason::Malformed => "malformed",
            DropReason::NoOwner => "no_owner",
            DropReason::NoRoute => "no_route",
            DropReason::L3Filtered => "l3_filtered",
            DropReason::Pause => "pause",
            DropReason::QueueFull => "queue_full",
            DropReason::Other => "other",
        }
    }

    /// Position in [`DropReason::ALL`], for counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`DropReason`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown drop reason {0:?}")]
pub struct UnknownDropReason(pub String);

impl core::str::FromStr for DropReason {
    type Err = UnknownDropReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DropReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownDropReason(s.to_string()))
    }
}

impl serde::Serialize for DropReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for DropReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Decides the fate of `frame` (Ethernet header first) entering `port` at `ingress`.
pub fn decide(port: &PortSnapshot, ingress: Ingress, frame: &[u8]) -> Decision {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return Decision::Drop(DropReason::Malformed);
    };
    match (ingress, port.mode) {
        (Ingress::Slave(_), _) if eth.src() != port.master_mac => Decision::Drop(DropReason::Spoof),
        (Ingress::Slave(s), _) if port.source_guard && !guard_allows(port, s, &eth) => {
            Decision::Drop(DropReason::SourceGuard)
        }
        (Ingress::Slave(s), Mode::L2) => tx_l2(port, s, &eth),
        (Ingress::Slave(_), Mode::L3 | Mode::L3s) => tx_l3(port, &eth),
        (Ingress::Master, Mode::L3s) => Decision::Pass,
        (Ingress::Master, Mode::L2) if eth.dst().is_multicast() => rx_l2_multicast(port, &eth),
        (Ingress::Master, Mode::L2 | Mode::L3) => rx_unicast(port, &eth),
    }
}

/// The source guard: what slave `origin` may send when
/// [`PortSnapshot::source_guard`] is on. Only ARP, IPv4 and IPv6 whose headers pass
/// the checks of spec §3, and only from one of the slave's own (up, listed) addresses,
/// with the exceptions an address-less host needs:
///
/// * ARP with sender 0.0.0.0 (an RFC 5227 probe);
/// * IPv4 from 0.0.0.0 when it is an unfragmented UDP datagram to port 67 (a DHCP
///   client asking for an address);
/// * IPv6 from `::` when the next header is ICMPv6 (duplicate address detection,
///   RFC 3590 MLD reports).
///
/// Anything else — other ethertypes, VLAN-tagged frames, truncated headers — cannot
/// show whose it is and is refused.
pub fn guard_allows(port: &PortSnapshot, origin: SlaveId, eth: &ethernet::Frame<&[u8]>) -> bool {
    let own = |ip: IpAddr| port.table.owner(&ip) == Some(origin);
    let l3 = eth.payload();
    match eth.ethertype() {
        ethernet::ETHERTYPE_ARP => arp::Packet::new_checked(l3).is_ok_and(|a| {
            let s = a.sender_protocol_addr();
            s.is_unspecified() || own(s.into())
        }),
        ethernet::ETHERTYPE_IPV4 => ipv4::Packet::new_checked(l3).is_ok_and(|ip| {
            own(ip.src().into()) || (ip.src().is_unspecified() && is_dhcp_request(&ip))
        }),
        ethernet::ETHERTYPE_IPV6 => ipv6::Packet::new_checked(l3).is_ok_and(|ip| {
            own(ip.src().into())
                || (ip.src().is_unspecified() && ip.next_header() == ipv6::NEXT_HEADER_ICMPV6)
        }),
        _ => false,
    }
}

/// UDP to port 67 in an unfragmented (or first-fragment) IPv4 packet.
fn is_dhcp_request(ip: &ipv4::Packet<&[u8]>) -> bool {
    const UDP: u8 = 17;
    const BOOTPS: u16 = 67;
    ip.protocol() == UDP
        && ip.frag_offset() == 0
        && ip
            .payload()
            .get(2..4)
            .is_some_and(|p| u16::from_be_bytes([p[0], p[1]]) == BOOTPS)
}

fn owner(port: &PortSnapshot, frame: &[u8], dir: KeyDir) -> Option<SlaveId> {
    demux_key(frame, dir).and_then(|ip| port.table.owner(&ip))
}

/// The kernel drops `ETH_P_PAUSE` frames on their way to the multicast worker; a
/// frame to the PAUSE address is one by definition.
fn is_pause_frame(eth: &ethernet::Frame<&[u8]>) -> bool {
    eth.ethertype() == ethernet::ETHERTYPE_MAC_CONTROL || eth.dst().is_pause()
}

fn local_delivery(flags: Flags, to: SlaveId) -> Decision {
    if flags.is_private() {
        Decision::Drop(DropReason::Private)
    } else {
        Decision::ToSlave(to)
    }
}

/// Spec §4.1, in order.
fn tx_l2(port: &PortSnapshot, origin: SlaveId, eth: &ethernet::Frame<&[u8]>) -> Decision {
    let dst = eth.dst();
    if !port.flags.is_vepa() && dst == eth.src() {
        match owner(port, eth.into_inner(), KeyDir::Dest) {
            Some(t) => local_delivery(port.flags, t),
            None => Decision::ToMasterStack,
        }
    } else if dst.is_multicast() {
        if is_pause_frame(eth) {
            Decision::Drop(DropReason::Pause)
        } else {
            Decision::Flood {
                origin: Some(origin),
                to_wire: true,
            }
        }
    } else {
        Decision::ToWire
    }
}

/// Spec §4.2.
fn tx_l3(port: &PortSnapshot, eth: &ethernet::Frame<&[u8]>) -> Decision {
    if !port.flags.is_vepa()
        && let Some(t) = owner(port, eth.into_inner(), KeyDir::Dest)
    {
        return local_delivery(port.flags, t);
    }
    if eth.dst().is_multicast() {
        return Decision::Drop(DropReason::L3Filtered);
    }
    let routable = match eth.ethertype() {
        ethernet::ETHERTYPE_IPV4 => ipv4::Packet::new_checked(eth.payload()).is_ok(),
        ethernet::ETHERTYPE_IPV6 => ipv6::Packet::new_checked(eth.payload()).is_ok(),
        _ => return Decision::Drop(DropReason::L3Filtered),
    };
    if routable {
        Decision::Route
    } else {
        Decision::Drop(DropReason::Malformed)
    }
}

/// Spec §5.2, multicast/broadcast destination.
fn rx_l2_multicast(port: &PortSnapshot, eth: &ethernet::Frame<&[u8]>) -> Decision {
    let reflected =
        eth.src() == port.master_mac && owner(port, eth.into_inner(), KeyDir::Source).is_some();
    if reflected || is_pause_frame(eth) {
        Decision::Pass
    } else {
        Decision::Flood {
            origin: None,
            to_wire: false,
        }
    }
}

/// Spec §5.3: L3 mode, and unicast in L2 mode. The destination MAC plays no part.
fn rx_unicast(port: &PortSnapshot, eth: &ethernet::Frame<&[u8]>) -> Decision {
    match owner(port, eth.into_inner(), KeyDir::Dest) {
        Some(t) => Decision::ToSlave(t),
        None => Decision::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MacAddr;
    use crate::{McFilter, Port};
    use core::net::{Ipv4Addr, Ipv6Addr};
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};

    const BROADCAST: MacAddr = MacAddr::BROADCAST;
    const MASTER: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const GW: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x99]);
    const MC4: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
    const MC6: MacAddr = MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x02]);

    const S1_V4: [u8; 4] = [10, 0, 0, 1];
    const S2_V4: [u8; 4] = [10, 0, 0, 2];
    const S3_V4: [u8; 4] = [10, 0, 0, 3];
    const HOST_V4: [u8; 4] = [10, 0, 0, 254];
    const EXT_V4: [u8; 4] = [10, 0, 0, 100];
    const S1_V6: [u8; 16] = v6(1);
    const S2_V6: [u8; 16] = v6(2);
    const EXT_V6: [u8; 16] = v6(0x100);
    const UNSPEC: [u8; 16] = [0; 16];

    const S1: SlaveId = SlaveId(1);
    const S2: SlaveId = SlaveId(2);
    const S3: SlaveId = SlaveId(3);

    const fn v6(last: u16) -> [u8; 16] {
        let [a, b] = last.to_be_bytes();
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, a, b]
    }

    /// S1 (10.0.0.1, 2001:db8::1) and S2 (…2, …::2) up; S3 (10.0.0.3) down.
    fn port(mode: Mode, flags: Flags) -> PortSnapshot {
        let mut p = Port::new(MASTER);
        p.apply_newlink(Some(mode), Some(flags));
        let addrs: [&[IpAddr]; 3] = [
            &[S1_V4.into(), S1_V6.into()],
            &[S2_V4.into(), S2_V6.into()],
            &[S3_V4.into()],
        ];
        for (i, list) in addrs.iter().enumerate() {
            let id = p.add_slave().unwrap();
            p.set_slave_up(id, i < 2);
            for ip in *list {
                p.add_addr(id, *ip).unwrap();
            }
            p.set_mc_filter(id, McFilter::new());
        }
        p.snapshot()
    }

    fn udp4(dst: MacAddr, src: MacAddr, sip: [u8; 4], dip: [u8; 4]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(src.0, dst.0)
            .ipv4(sip, dip, 64)
            .udp(1234, 5678);
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        out
    }

    fn udp6(dst: MacAddr, src: MacAddr, sip: [u8; 16], dip: [u8; 16]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(src.0, dst.0)
            .ipv6(sip, dip, 64)
            .udp(1234, 5678);
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        out
    }

    fn arp(dst: MacAddr, src: MacAddr, op: ArpOperation, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let pkt = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            op,
            &src.0,
            &spa,
            &[0; 6],
            &tpa,
        )
        .unwrap();
        let b = PacketBuilder::ethernet2(src.0, dst.0).arp(pkt);
        let mut out = Vec::new();
        b.write(&mut out).unwrap();
        out
    }

    fn icmp6(
        dst: MacAddr,
        src: MacAddr,
        sip: [u8; 16],
        dip: [u8; 16],
        ty: u8,
        body: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(src.0, dst.0)
            .ipv6(sip, dip, 255)
            .icmpv6_raw(ty, 0, [0; 4]);
        let mut out = Vec::new();
        b.write(&mut out, body).unwrap();
        out
    }

    /// A DAD probe: NS from `::` to the solicited-node group of `target`.
    fn dad(src: MacAddr, target: [u8; 16]) -> Vec<u8> {
        let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
        group[13..].copy_from_slice(&target[13..]);
        icmp6(MC6, src, UNSPEC, group, 135, &target)
    }

    fn raw(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn key(frame: &[u8], dir: KeyDir) -> Option<IpAddr> {
        demux_key(frame, dir)
    }

    fn ip4(a: [u8; 4]) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    }

    fn ip6(a: [u8; 16]) -> Option<IpAddr> {
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    }

    const ETH: usize = ethernet::HEADER_LEN;

    // ---- the source guard (ipvlan-rs extension) ----

    fn guarded(mode: Mode) -> PortSnapshot {
        let mut p = port(mode, Flags::Bridge);
        p.source_guard = true;
        p
    }

    #[test]
    fn the_guard_passes_a_slaves_own_sources() {
        for mode in [Mode::L2, Mode::L3] {
            let p = guarded(mode);
            let own4 = udp4(GW, MASTER, S1_V4, EXT_V4);
            let own6 = udp6(GW, MASTER, S1_V6, EXT_V6);
            let arp_own = arp(BROADCAST, MASTER, ArpOperation::REQUEST, S1_V4, EXT_V4);
            let probe = arp(BROADCAST, MASTER, ArpOperation::REQUEST, [0; 4], S1_V4);
            for f in [own4, own6, arp_own, probe, dad(MASTER, S1_V6)] {
                let d = decide(&p, Ingress::Slave(S1), &f);
                let unguarded = decide(&port(mode, Flags::Bridge), Ingress::Slave(S1), &f);
                assert_eq!(d, unguarded, "{mode}");
                assert_ne!(d, Decision::Drop(DropReason::SourceGuard), "{mode}");
            }
        }
    }

    #[test]
    fn the_guard_drops_other_sources_and_other_protocols() {
        let p = guarded(Mode::L2);
        let drop = Decision::Drop(DropReason::SourceGuard);
        let cases = [
            udp4(GW, MASTER, S2_V4, EXT_V4),
            udp4(GW, MASTER, EXT_V4, S2_V4),
            udp4(GW, MASTER, S3_V4, EXT_V4), // a down slave's address is nobody's
            udp6(GW, MASTER, S2_V6, EXT_V6),
            udp4(GW, MASTER, [0; 4], EXT_V4), // not DHCP
            arp(BROADCAST, MASTER, ArpOperation::REPLY, S2_V4, EXT_V4),
            raw(GW, MASTER, 0x88cc, &[0; 46]),
            raw(GW, MASTER, 0x8100, &[0; 46]),
            udp4(GW, MASTER, S1_V4, EXT_V4)[..ETH + 19].to_vec(),
        ];
        for (i, f) in cases.iter().enumerate() {
            assert_eq!(decide(&p, Ingress::Slave(S1), f), drop, "case {i}");
        }
        // The guard is the sender's: S2 may send what S1 may not.
        assert_ne!(decide(&p, Ingress::Slave(S2), &cases[0]), drop);
        // Off, nothing is checked; and the wire is never guarded.
        assert_ne!(
            decide(
                &port(Mode::L2, Flags::Bridge),
                Ingress::Slave(S1),
                &cases[0]
            ),
            drop
        );
        assert_eq!(decide(&p, Ingress::Master, &cases[6]), Decision::Pass);
    }

    #[test]
    fn the_guard_lets_a_dhcp_client_without_an_address_through() {
        let p = guarded(Mode::L2);
        let b = PacketBuilder::ethernet2(MASTER.0, BROADCAST.0)
            .ipv4([0; 4], [255; 4], 64)
            .udp(68, 67);
        let mut f = Vec::new();
        b.write(&mut f, &[0; 240]).unwrap();
        assert_ne!(
            decide(&p, Ingress::Slave(S1), &f),
            Decision::Drop(DropReason::SourceGuard)
        );
        // A later fragment has no UDP header to show.
        f[ETH + 6] = 0x00;
        f[ETH + 7] = 0x10;
        assert_eq!(
            decide(&p, Ingress::Slave(S1), &f),
            Decision::Drop(DropReason::SourceGuard)
        );
    }

    // ---- demux key (spec §3) ----

    #[test]
    fn key_arp() {
        let f = arp(BROADCAST, GW, ArpOperation::REQUEST, EXT_V4, S1_V4);
        assert_eq!(key(&f, KeyDir::Dest), ip4(S1_V4));
        assert_eq!(key(&f, KeyDir::Source), ip4(EXT_V4));
        let r = arp(MASTER, GW, ArpOperation::REPLY, EXT_V4, S2_V4);
        assert_eq!(key(&r, KeyDir::Dest), ip4(S2_V4));
    }

    #[test]
    fn key_arp_needs_28_bytes_but_not_valid_types() {
        let f = arp(BROADCAST, GW, ArpOperation::REQUEST, EXT_V4, S1_V4);
        assert_eq!(key(&f[..ETH + 27], KeyDir::Dest), None);
        assert_eq!(key(&f[..ETH + 28], KeyDir::Dest), ip4(S1_V4));
        let mut odd = f.clone();
        odd[ETH..ETH + 6].copy_from_slice(&[0xff, 0xff, 0x12, 0x34, 9, 9]);
        assert_eq!(key(&odd, KeyDir::Dest), ip4(S1_V4));
        assert_eq!(key(&odd, KeyDir::Source), ip4(EXT_V4));
    }

    #[test]
    fn key_ipv4() {
        let f = udp4(MASTER, GW, EXT_V4, S1_V4);
        assert_eq!(key(&f, KeyDir::Dest), ip4(S1_V4));
        assert_eq!(key(&f, KeyDir::Source), ip4(EXT_V4));
        let mut padded = f.clone();
        padded.resize(60, 0);
        assert_eq!(key(&padded, KeyDir::Dest), ip4(S1_V4));
    }

    #[test]
    fn key_ipv4_malformed() {
        let f = udp4(MASTER, GW, EXT_V4, S1_V4);
        let edit = |at: usize, v: u8| {
            let mut g = f.clone();
            g[ETH + at] = v;
            g
        };
        assert_eq!(key(&edit(0, 0x44), KeyDir::Dest), None, "IHL 4");
        assert_eq!(key(&edit(0, 0x40), KeyDir::Dest), None, "IHL 0");
        assert_eq!(key(&edit(0, 0x65), KeyDir::Dest), None, "version 6");
        let total = f.len() - ETH;
        assert_eq!(
            key(&edit(3, u8::try_from(total).unwrap() + 1), KeyDir::Dest),
            None,
            "total > present"
        );
        assert_eq!(key(&edit(3, 19), KeyDir::Dest), None, "total < IHL*4");
        assert_eq!(key(&f[..f.len() - 1], KeyDir::Dest), None, "truncated");
        assert_eq!(key(&f[..ETH + 19], KeyDir::Source), None);
    }

    #[test]
    fn key_ipv6() {
        let f = udp6(MASTER, GW, EXT_V6, S1_V6);
        assert_eq!(key(&f, KeyDir::Dest), ip6(S1_V6));
        assert_eq!(key(&f, KeyDir::Source), ip6(EXT_V6));
    }

    #[test]
    fn key_ipv6_truncated_or_wrong_version() {
        let f = udp6(MASTER, GW, EXT_V6, S1_V6);
        assert_eq!(key(&f[..ETH + 39], KeyDir::Dest), None);
        assert_eq!(key(&f[..ETH + 40], KeyDir::Dest), ip6(S1_V6));
        let mut g = f.clone();
        g[ETH] = 0x45;
        assert_eq!(key(&g, KeyDir::Dest), None);
    }

    #[test]
    fn key_dad_uses_ns_target_both_ways() {
        let f = dad(MASTER, S2_V6);
        assert_eq!(key(&f, KeyDir::Dest), ip6(S2_V6));
        assert_eq!(key(&f, KeyDir::Source), ip6(S2_V6));
    }

    #[test]
    fn key_unspecified_source_other_icmpv6_has_no_key() {
        for ty in [128, 133, 136, 143] {
            let f = icmp6(MC6, MASTER, UNSPEC, S1_V6, ty, &S2_V6);
            assert_eq!(key(&f, KeyDir::Dest), None, "type {ty}");
            assert_eq!(key(&f, KeyDir::Source), None, "type {ty}");
        }
    }

    #[test]
    fn key_dad_truncated() {
        let f = dad(MASTER, S2_V6);
        let ns = ETH + 40;
        assert_eq!(key(&f[..ns + 23], KeyDir::Dest), None, "target cut");
        assert_eq!(key(&f[..ns + 7], KeyDir::Dest), None, "ICMPv6 header cut");
        assert_eq!(key(&f[..ns], KeyDir::Dest), None, "no ICMPv6 header");
        assert_eq!(key(&f[..ns + 24], KeyDir::Dest), ip6(S2_V6));
    }

    #[test]
    fn key_ns_with_real_source_is_plain_ipv6() {
        let group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];
        let f = icmp6(MC6, GW, EXT_V6, group, 135, &S2_V6);
        assert_eq!(key(&f, KeyDir::Dest), ip6(group));
        assert_eq!(key(&f, KeyDir::Source), ip6(EXT_V6));
    }

    #[test]
    fn key_unspecified_source_non_icmp_is_plain_ipv6() {
        let f = udp6(MASTER, GW, UNSPEC, S1_V6);
        assert_eq!(key(&f, KeyDir::Dest), ip6(S1_V6));
        assert_eq!(key(&f, KeyDir::Source), ip6(UNSPEC));
    }

    #[test]
    fn key_other_ethertypes() {
        let ip = udp4(MASTER, GW, EXT_V4, S1_V4);
        for et in [0x8100, 0x88cc, 0x8808, 0x0000, 0x86dc] {
            let f = raw(MASTER, GW, et, &ip[ETH..]);
            assert_eq!(key(&f, KeyDir::Dest), None, "{et:#x}");
        }
        assert_eq!(key(&ip[..13], KeyDir::Dest), None);
        assert_eq!(key(&[], KeyDir::Source), None);
    }

    // ---- TX, L2 (spec §4.1) ----

    fn tx(p: &PortSnapshot, from: SlaveId, f: &[u8]) -> Decision {
        decide(p, Ingress::Slave(from), f)
    }

    const FLOOD_FROM_S1: Decision = Decision::Flood {
        origin: Some(S1),
        to_wire: true,
    };

    #[test]
    fn l2_tx_runt() {
        let p = port(Mode::L2, Flags::Bridge);
        let f = udp4(MASTER, MASTER, S1_V4, S2_V4);
        for n in 0..ETH {
            assert_eq!(tx(&p, S1, &f[..n]), Decision::Drop(DropReason::Malformed));
        }
        assert_eq!(tx(&p, S1, &f[..ETH]), Decision::ToMasterStack);
    }

    #[test]
    fn l2_bridge_same_mac_to_owner() {
        let p = port(Mode::L2, Flags::Bridge);
        assert_eq!(
            tx(&p, S1, &udp4(MASTER, MASTER, S1_V4, S2_V4)),
            Decision::ToSlave(S2)
        );
        assert_eq!(
            tx(&p, S1, &udp6(MASTER, MASTER, S1_V6, S2_V6)),
            Decision::ToSlave(S2)
        );
        let reply = arp(MASTER, MASTER, ArpOperation::REPLY, S1_V4, S2_V4);
        assert_eq!(tx(&p, S1, &reply), Decision::ToSlave(S2));
        assert_eq!(
            tx(&p, S1, &udp4(MASTER, MASTER, S2_V4, S1_V4)),
            Decision::ToSlave(S1)
        );
    }

    #[test]
    fn l2_same_mac_compares_header_fields_not_master_mac() {
        let p = port(Mode::L2, Flags::Bridge);
        // The table of §4.1 on its own: the spoof check keeps such a frame from it.
        let f = udp4(GW, GW, S1_V4, S2_V4);
        let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
        assert_eq!(tx_l2(&p, S1, &eth), Decision::ToSlave(S2));
        assert_eq!(tx(&p, S1, &f), Decision::Drop(DropReason::Spoof));
    }

    #[test]
    fn l2_same_mac_without_owner_goes_to_master_stack() {
        let p = port(Mode::L2, Flags::Bridge);
        assert_eq!(
            tx(&p, S1, &udp4(MASTER, MASTER, S1_V4, HOST_V4)),
            Decision::ToMasterStack
        );
        assert_eq!(
            tx(&p, S1, &udp4(MASTER, MASTER, S1_V4, S3_V4)),
            Decision::ToMasterStack,
            "S3 is down"
        );
        assert_eq!(
            tx(&p, S1, &raw(MASTER, MASTER, 0x88b5, &[0; 46])),
            Decision::ToMasterStack
        );
        let mut bad = udp4(MASTER, MASTER, S1_V4, S2_V4);
        bad[ETH] = 0x44;
        assert_eq!(tx(&p, S1, &bad), Decision::ToMasterStack, "no key");
    }

    #[test]
    fn l2_same_mac_check_precedes_multicast_check() {
        let p = port(Mode::L2, Flags::Bridge);
        // The table of §4.1 on its own: the spoof check keeps such a frame from it.
        let f = udp4(MC4, MC4, S1_V4, S2_V4);
        let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
        assert_eq!(tx_l2(&p, S1, &eth), Decision::ToSlave(S2));
        assert_eq!(tx(&p, S1, &f), Decision::Drop(DropReason::Spoof));
    }

    #[test]
    fn l2_multicast_and_broadcast_flood() {
        let p = port(Mode::L2, Flags::Bridge);
        let req = arp(BROADCAST, MASTER, ArpOperation::REQUEST, S1_V4, S2_V4);
        assert_eq!(tx(&p, S1, &req), FLOOD_FROM_S1);
        assert_eq!(
            tx(&p, S1, &udp4(MC4, MASTER, S1_V4, [224, 0, 0, 1])),
            FLOOD_FROM_S1
        );
        assert_eq!(tx(&p, S1, &dad(MASTER, S1_V6)), FLOOD_FROM_S1);
        assert_eq!(
            tx(&p, S1, &raw(BROADCAST, MASTER, 0x88cc, &[0; 46])),
            FLOOD_FROM_S1
        );
    }

    #[test]
    fn l2_pause_dropped() {
        let p = port(Mode::L2, Flags::Bridge);
        let pause = [0x00, 0x01, 0xff, 0xff];
        let f = raw(
            MacAddr::PAUSE,
            MASTER,
            ethernet::ETHERTYPE_MAC_CONTROL,
            &pause,
        );
        assert_eq!(tx(&p, S1, &f), Decision::Drop(DropReason::Pause));
        let f = raw(BROADCAST, MASTER, ethernet::ETHERTYPE_MAC_CONTROL, &pause);
        assert_eq!(tx(&p, S1, &f), Decision::Drop(DropReason::Pause));
        let f = raw(MacAddr::PAUSE, MASTER, 0x0800, &pause);
        assert_eq!(tx(&p, S1, &f), Decision::Drop(DropReason::Pause));
    }

    #[test]
    fn l2_other_unicast_goes_to_wire() {
        let p = port(Mode::L2, Flags::Bridge);
        assert_eq!(
            tx(&p, S1, &udp4(GW, MASTER, S1_V4, EXT_V4)),
            Decision::ToWire
        );
        // The IP of another slave does not matter once the MACs differ.
        assert_eq!(
            tx(&p, S1, &udp4(GW, MASTER, S1_V4, S2_V4)),
            Decision::ToWire
        );
        assert_eq!(tx(&p, S1, &raw(GW, MASTER, 0x88b5, &[])), Decision::ToWire);
    }

    #[test]
    fn l2_private() {
        let p = port(Mode::L2, Flags::Private);
        assert_eq!(
            tx(&p, S1, &udp4(MASTER, MASTER, S1_V4, S2_V4)),
            Decision::Drop(DropReason::Private)
        );
        assert_eq!(
            tx(&p, S1, &udp6(MASTER, MASTER, S1_V6, S2_V6)),
            Decision::Drop(DropReason::Private)
        );
        assert_eq!(
            tx(&p, S1, &udp4(MASTER, MASTER, S1_V4, HOST_V4)),
            Decision::ToMasterStack
        );
        let req = arp(BROADCAST, MASTER, ArpOperation::REQUEST, S1_V4, S2_V4);
        assert_eq!(
            tx(&p, S1, &req),
            FLOOD_FROM_S1,
            "private does not stop broadcast"
        );
        assert_eq!(
            tx(&p, S1, &udp4(GW, MASTER, S1_V4, S2_V4)),
            Decision::ToWire,
            "via a gateway"
        );
    }

    #[test]
    fn l2_vepa() {
        let p = port(Mode::L2, Flags::Vepa);
        assert_eq!(
            tx(&p, S1, &udp4(MASTER, MASTER, S1_V4, S2_V4)),
            Decision::ToWire
        );
        assert_eq!(
            tx(&p, S1, &udp4(MASTER, MASTER, S1_V4, HOST_V4)),
            Decision::ToWire
        );
        let req = arp(BROADCAST, MASTER, ArpOperation::REQUEST, S1_V4, S2_V4);
        assert_eq!(
            tx(&p, S1, &req),
            FLOOD_FROM_S1,
            "local slaves still get copies"
        );
        assert_eq!(
            tx(&p, S1, &udp4(GW, MASTER, S1_V4, EXT_V4)),
            Decision::ToWire
        );
        let f = raw(
            MacAddr::PAUSE,
            MASTER,
            ethernet::ETHERTYPE_MAC_CONTROL,
            &[0; 4],
        );
        assert_eq!(tx(&p, S1, &f), Decision::Drop(DropReason::Pause));
    }

    #[test]
    fn a_slave_sending_with_another_source_mac_is_dropped_in_every_port() {
        let spoof = Decision::Drop(DropReason::Spoof);
        for mode in [Mode::L2, Mode::L3, Mode::L3s] {
            for flags in [Flags::Bridge, Flags::Private, Flags::Vepa] {
                for guard in [false, true] {
                    let mut p = port(mode, flags);
                    p.source_guard = guard;
                    // What would go to another slave, to the wire, to the master's
                    // stack, be flooded, routed, or dropped for another reason.
                    let frames = [
                        udp4(MASTER, GW, S1_V4, S2_V4),
                        udp4(GW, GW, S1_V4, S2_V4),
                        udp4(GW, GW, S1_V4, EXT_V4),
                        udp6(MASTER, GW, S1_V6, S2_V6),
                        udp4(MASTER, GW, S1_V4, HOST_V4),
                        arp(BROADCAST, GW, ArpOperation::REQUEST, S1_V4, S2_V4),
                        udp4(MC4, GW, S1_V4, [224, 0, 0, 1]),
                        udp4(MASTER, GW, S2_V4, EXT_V4),
                        raw(MacAddr::PAUSE, GW, ethernet::ETHERTYPE_MAC_CONTROL, &[0; 4]),
                        raw(MASTER, GW, 0x88b5, &[0; 46]),
                        raw(MASTER, GW, 0x0800, &[]),
                    ];
                    for f in &frames {
                        assert_eq!(tx(&p, S1, f), spoof, "{mode} {flags} guard {guard}");
                        assert_ne!(rx(&p, f), spoof, "only what a slave sends");
                    }
                    // One bit off is another MAC.
                    let mut near = MASTER;
                    near.0[5] ^= 1;
                    let f = udp4(MASTER, near, S1_V4, S2_V4);
                    assert_eq!(tx(&p, S1, &f), spoof);
                    assert_ne!(
                        tx(&p, S1, &udp4(MASTER, MASTER, S1_V4, S2_V4)),
                        spoof,
                        "the master's MAC is every slave's own"
                    );
                    assert_eq!(
                        tx(&p, S1, &f[..13]),
                        Decision::Drop(DropReason::Malformed),
                        "a runt has no source MAC to check"
                    );
                }
            }
        }
    }

    // ---- TX, L3 and L3S (spec §4.2) ----

    fn both_l3(flags: Flags, check: impl Fn(&PortSnapshot)) {
        check(&port(Mode::L3, flags));
        check(&port(Mode::L3s, flags));
    }

    #[test]
    fn l3_tx_to_owner() {
        both_l3(Flags::Bridge, |p| {
            assert_eq!(
                tx(p, S1, &udp4(MASTER, MASTER, S1_V4, S2_V4)),
                Decision::ToSlave(S2)
            );
            assert_eq!(
                tx(p, S1, &udp6(MASTER, MASTER, S1_V6, S2_V6)),
                Decision::ToSlave(S2)
            );
            // The key comes first: the destination MAC does not matter.
            assert_eq!(
                tx(p, S1, &udp4(GW, MASTER, S1_V4, S2_V4)),
                Decision::ToSlave(S2)
            );
            let req = arp(BROADCAST, MASTER, ArpOperation::REQUEST, S1_V4, S2_V4);
            assert_eq!(tx(p, S1, &req), Decision::ToSlave(S2));
        });
    }

    #[test]
    fn l3_tx_private() {
        both_l3(Flags::Private, |p| {
            assert_eq!(
                tx(p, S1, &udp4(MASTER, MASTER, S1_V4, S2_V4)),
                Decision::Drop(DropReason::Private)
            );
            assert_eq!(
                tx(p, S1, &udp4(MASTER, MASTER, S1_V4, EXT_V4)),
                Decision::Route
            );
        });
    }

    #[test]
    fn l3_tx_vepa_routes_everything_unicast() {
        both_l3(Flags::Vepa, |p| {
            assert_eq!(
                tx(p, S1, &udp4(MASTER, MASTER, S1_V4, S2_V4)),
                Decision::Route
            );
            assert_eq!(
                tx(p, S1, &udp6(MASTER, MASTER, S1_V6, S2_V6)),
                Decision::Route
            );
            let mc = udp4(MC4, MASTER, S1_V4, [224, 0, 0, 1]);
            assert_eq!(tx(p, S1, &mc), Decision::Drop(DropReason::L3Filtered));
        });
    }

    #[test]
    fn l3_tx_route() {
        both_l3(Flags::Bridge, |p| {
            assert_eq!(
                tx(p, S1, &udp4(MASTER, MASTER, S1_V4, EXT_V4)),
                Decision::Route
            );
            assert_eq!(
                tx(p, S1, &udp4(MASTER, MASTER, S1_V4, HOST_V4)),
                Decision::Route
            );
            assert_eq!(
                tx(p, S1, &udp4(MASTER, MASTER, S1_V4, S3_V4)),
                Decision::Route,
                "S3 down"
            );
            assert_eq!(tx(p, S1, &udp6(GW, MASTER, S1_V6, EXT_V6)), Decision::Route);
        });
    }

    #[test]
    fn l3_tx_multicast_dropped() {
        both_l3(Flags::Bridge, |p| {
            let drop = Decision::Drop(DropReason::L3Filtered);
            assert_eq!(tx(p, S1, &udp4(MC4, MASTER, S1_V4, [224, 0, 0, 1])), drop);
            assert_eq!(
                tx(p, S1, &udp4(BROADCAST, MASTER, S1_V4, [10, 0, 0, 255])),
                drop
            );
            assert_eq!(
                tx(
                    p,
                    S1,
                    &udp6(
                        MC6,
                        MASTER,
                        S1_V6,
                        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
                    )
                ),
                drop
            );
            let req = arp(BROADCAST, MASTER, ArpOperation::REQUEST, S1_V4, EXT_V4);
            assert_eq!(tx(p, S1, &req), drop);
            assert_eq!(tx(p, S1, &raw(BROADCAST, MASTER, 0x88cc, &[])), drop);
        });
    }

    #[test]
    fn l3_tx_not_ip() {
        both_l3(Flags::Bridge, |p| {
            let drop = Decision::Drop(DropReason::L3Filtered);
            let reply = arp(MASTER, MASTER, ArpOperation::REPLY, S1_V4, EXT_V4);
            assert_eq!(tx(p, S1, &reply), drop);
            assert_eq!(tx(p, S1, &raw(MASTER, MASTER, 0x88b5, &[0; 46])), drop);
            assert_eq!(tx(p, S1, &raw(MASTER, MASTER, 0x8100, &[])), drop);
        });
    }

    #[test]
    fn l3_tx_malformed_ip() {
        both_l3(Flags::Bridge, |p| {
            let drop = Decision::Drop(DropReason::Malformed);
            let mut f = udp4(MASTER, MASTER, S1_V4, EXT_V4);
            f[ETH] = 0x43;
            assert_eq!(tx(p, S1, &f), drop, "IHL 3");
            let f = udp4(MASTER, MASTER, S1_V4, EXT_V4);
            assert_eq!(tx(p, S1, &f[..f.len() - 1]), drop, "total length > present");
            let f = udp6(MASTER, MASTER, S1_V6, EXT_V6);
            assert_eq!(tx(p, S1, &f[..ETH + 39]), drop, "IPv6 truncated");
            assert_eq!(tx(p, S1, &raw(MASTER, MASTER, 0x0800, &[])), drop);
        });
    }

    #[test]
    fn l3_tx_runt() {
        both_l3(Flags::Bridge, |p| {
            assert_eq!(tx(p, S1, &[0; 13]), Decision::Drop(DropReason::Malformed));
        });
    }

    // ---- RX (spec §5) ----

    fn rx(p: &PortSnapshot, f: &[u8]) -> Decision {
        decide(p, Ingress::Master, f)
    }

    const FLOOD_RX: Decision = Decision::Flood {
        origin: None,
        to_wire: false,
    };

    #[test]
    fn rx_l3s_always_passes() {
        for flags in [Flags::Bridge, Flags::Private, Flags::Vepa] {
            let p = port(Mode::L3s, flags);
            assert_eq!(rx(&p, &udp4(MASTER, GW, EXT_V4, S1_V4)), Decision::Pass);
            assert_eq!(rx(&p, &udp6(MASTER, GW, EXT_V6, S2_V6)), Decision::Pass);
            let req = arp(BROADCAST, GW, ArpOperation::REQUEST, EXT_V4, S1_V4);
            assert_eq!(rx(&p, &req), Decision::Pass);
            assert_eq!(rx(&p, &dad(GW, S1_V6)), Decision::Pass);
        }
    }

    #[test]
    fn rx_unicast_to_owner_in_l2_and_l3() {
        for mode in [Mode::L2, Mode::L3] {
            for flags in [Flags::Bridge, Flags::Private, Flags::Vepa] {
                let p = port(mode, flags);
                assert_eq!(
                    rx(&p, &udp4(MASTER, GW, EXT_V4, S1_V4)),
                    Decision::ToSlave(S1)
                );
                assert_eq!(
                    rx(&p, &udp6(MASTER, GW, EXT_V6, S2_V6)),
                    Decision::ToSlave(S2)
                );
                let reply = arp(MASTER, GW, ArpOperation::REPLY, EXT_V4, S2_V4);
                assert_eq!(rx(&p, &reply), Decision::ToSlave(S2));
                // The destination MAC plays no part (OTHERHOST frames are matched too).
                assert_eq!(rx(&p, &udp4(GW, GW, EXT_V4, S1_V4)), Decision::ToSlave(S1));
            }
        }
    }

    #[test]
    fn rx_unicast_without_owner_passes() {
        for mode in [Mode::L2, Mode::L3] {
            let p = port(mode, Flags::Bridge);
            assert!(p.slave(S3).is_some_and(|s| !s.up));
            assert_eq!(rx(&p, &udp4(MASTER, GW, EXT_V4, HOST_V4)), Decision::Pass);
            assert_eq!(
                rx(&p, &udp4(MASTER, GW, EXT_V4, S3_V4)),
                Decision::Pass,
                "S3 is down"
            );
            assert_eq!(rx(&p, &raw(MASTER, GW, 0x88b5, &[0; 46])), Decision::Pass);
            let mut bad = udp4(MASTER, GW, EXT_V4, S1_V4);
            bad[ETH] = 0x4f;
            assert_eq!(rx(&p, &bad), Decision::Pass, "malformed: no key");
            assert_eq!(rx(&p, &[0; 13]), Decision::Drop(DropReason::Malformed));
        }
    }

    #[test]
    fn rx_l3_multicast_goes_by_key_only() {
        let p = port(Mode::L3, Flags::Bridge);
        assert_eq!(
            rx(&p, &udp4(MC4, GW, EXT_V4, [224, 0, 0, 1])),
            Decision::Pass
        );
        assert_eq!(
            rx(&p, &udp4(BROADCAST, GW, EXT_V4, [10, 0, 0, 255])),
            Decision::Pass
        );
        let ns = icmp6(
            MC6,
            GW,
            EXT_V6,
            [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2],
            135,
            &S2_V6,
        );
        assert_eq!(
            rx(&p, &ns),
            Decision::Pass,
            "ordinary NS reaches the master (proxy NDP)"
        );
        // Spec §5.3: ARP for a slave address and DAD probes are handed to the slave.
        let req = arp(BROADCAST, GW, ArpOperation::REQUEST, EXT_V4, S1_V4);
        assert_eq!(rx(&p, &req), Decision::ToSlave(S1));
        assert_eq!(rx(&p, &dad(GW, S2_V6)), Decision::ToSlave(S2));
        let req = arp(BROADCAST, GW, ArpOperation::REQUEST, EXT_V4, HOST_V4);
        assert_eq!(rx(&p, &req), Decision::Pass);
    }

    #[test]
    fn rx_l2_external_multicast_floods() {
        let p = port(Mode::L2, Flags::Bridge);
        let req = arp(BROADCAST, GW, ArpOperation::REQUEST, EXT_V4, S1_V4);
        assert_eq!(rx(&p, &req), FLOOD_RX);
        assert_eq!(rx(&p, &udp4(MC4, GW, EXT_V4, [224, 0, 0, 1])), FLOOD_RX);
        assert_eq!(rx(&p, &dad(GW, S1_V6)), FLOOD_RX);
        assert_eq!(rx(&p, &raw(BROADCAST, GW, 0x88cc, &[])), FLOOD_RX);
        for flags in [Flags::Private, Flags::Vepa] {
            assert_eq!(rx(&port(Mode::L2, flags), &req), FLOOD_RX);
        }
    }

    #[test]
    fn rx_l2_reflected_slave_frame_is_not_external() {
        let p = port(Mode::L2, Flags::Bridge);
        let req = arp(BROADCAST, MASTER, ArpOperation::REQUEST, S1_V4, EXT_V4);
        assert_eq!(rx(&p, &req), Decision::Pass);
        assert_eq!(
            rx(&p, &udp4(MC4, MASTER, S2_V4, [224, 0, 0, 1])),
            Decision::Pass
        );
        assert_eq!(
            rx(
                &p,
                &udp6(
                    MC6,
                    MASTER,
                    S1_V6,
                    [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
                )
            ),
            Decision::Pass
        );
        // A reflected DAD probe: key(source) is the NS target.
        assert_eq!(rx(&p, &dad(MASTER, S1_V6)), Decision::Pass);
    }

    #[test]
    fn rx_l2_external_test_needs_both_conditions() {
        let p = port(Mode::L2, Flags::Bridge);
        // master MAC, but the source address is nobody's (the host's own frame)
        let req = arp(BROADCAST, MASTER, ArpOperation::REQUEST, HOST_V4, S1_V4);
        assert_eq!(rx(&p, &req), FLOOD_RX);
        // master MAC, source owned by a down slave (not in the table)
        assert_eq!(rx(&p, &udp4(MC4, MASTER, S3_V4, [224, 0, 0, 1])), FLOOD_RX);
        // a slave's address, but another MAC (spoofed or misconfigured)
        let req = arp(BROADCAST, GW, ArpOperation::REQUEST, S1_V4, EXT_V4);
        assert_eq!(rx(&p, &req), FLOOD_RX);
        // unparsable frames are external
        assert_eq!(rx(&p, &raw(BROADCAST, MASTER, 0x0800, &[0x45])), FLOOD_RX);
        assert_eq!(rx(&p, &raw(BROADCAST, MASTER, 0x88cc, &[])), FLOOD_RX);
        // DAD from :: with another type has no key: external
        let f = icmp6(MC6, MASTER, UNSPEC, S1_V6, 143, &[0; 20]);
        assert_eq!(rx(&p, &f), FLOOD_RX);
    }

    #[test]
    fn rx_l2_pause_not_flooded() {
        let p = port(Mode::L2, Flags::Bridge);
        let f = raw(
            MacAddr::PAUSE,
            GW,
            ethernet::ETHERTYPE_MAC_CONTROL,
            &[0, 1, 0xff, 0xff],
        );
        assert_eq!(rx(&p, &f), Decision::Pass);
    }

    #[test]
    fn drop_reason_names_are_stable() {
        let names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "spoof",
                "source_guard",
                "private",
                "malformed",
                "no_owner",
                "no_route",
                "l3_filtered",
                "pause",
                "queue_full",
                "other"
            ]
        );
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(r.to_string(), r.as_str());
            assert_eq!(r.as_str().parse::<DropReason>(), Ok(*r));
        }
        assert!("guard".parse::<DropReason>().is_err());
        assert!("Spoof".parse::<DropReason>().is_err());
    }
}
