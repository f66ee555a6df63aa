//! Properties of the port core over random ports and frames.

#![forbid(unsafe_code)]

use core::net::IpAddr;
use ipvlan_core::wire::vnet::VnetHdr;
use ipvlan_core::{
    Decision, Flags, Ingress, KeyDir, MacAddr, Mode, Port, PortError, PortSnapshot, SlaveId,
    decide, demux_key,
};
use proptest::prelude::*;

const MASTER: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const GW: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
/// `ff02::1:ff00:2`
const SOLICITED_NODE_2: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];

fn pool_ip(i: u8) -> IpAddr {
    if i.is_multiple_of(2) {
        IpAddr::from([10, 0, 0, i / 2])
    } else {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i / 2)])
    }
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::L2), Just(Mode::L3), Just(Mode::L3s)]
}

fn flags() -> impl Strategy<Value = Flags> {
    prop_oneof![Just(Flags::Bridge), Just(Flags::Private), Just(Flags::Vepa)]
}

fn mac() -> impl Strategy<Value = MacAddr> {
    prop_oneof![
        3 => Just(MASTER),
        1 => Just(GW),
        1 => Just(MacAddr::BROADCAST),
        1 => Just(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1])),
        1 => Just(MacAddr([0x33, 0x33, 0xff, 0, 0, 2])),
        1 => any::<[u8; 6]>().prop_map(MacAddr),
    ]
}

/// A port with up to five slaves, each up or down, holding addresses from a pool of
/// twelve (so slaves compete for them).
fn snapshot() -> impl Strategy<Value = PortSnapshot> {
    (
        mode(),
        flags(),
        prop::collection::vec((any::<bool>(), prop::collection::vec(0u8..12, 0..4)), 1..5),
    )
        .prop_map(|(mode, flags, slaves)| {
            let mut p = Port::new(MASTER);
            p.apply_newlink(Some(mode), Some(flags));
            for (up, addrs) in slaves {
                let id = p.add_slave().unwrap();
                for a in addrs {
                    let _ = p.add_addr(id, pool_ip(a));
                }
                p.set_slave_up(id, up);
            }
            p.snapshot()
        })
}

fn ingress() -> impl Strategy<Value = Ingress> {
    prop_oneof![
        Just(Ingress::Master),
        (1u16..6).prop_map(|i| Ingress::Slave(SlaveId(i)))
    ]
}

fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn build(kind: u8, dst: MacAddr, src: MacAddr, sip: IpAddr, dip: IpAddr) -> Vec<u8> {
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
    let mut out = Vec::new();
    let b = PacketBuilder::ethernet2(src.0, dst.0);
    match (kind % 4, sip, dip) {
        (0, IpAddr::V4(s), IpAddr::V4(d)) => {
            let arp = ArpPacket::new(
                ArpHardwareId::ETHERNET,
                EtherType::IPV4,
                ArpOperation::REQUEST,
                &src.0,
                &s.octets(),
                &[0; 6],
                &d.octets(),
            )
            .unwrap();
            b.arp(arp).write(&mut out).unwrap();
        }
        (_, IpAddr::V4(s), IpAddr::V4(d)) => {
            b.ipv4(s.octets(), d.octets(), 64)
                .udp(1, 2)
                .write(&mut out, b"x")
                .unwrap();
        }
        (0, _, IpAddr::V6(d)) => {
            b.ipv6([0; 16], SOLICITED_NODE_2, 255)
                .icmpv6_raw(135, 0, [0; 4])
                .write(&mut out, &d.octets())
                .unwrap();
        }
        (_, IpAddr::V6(s), IpAddr::V6(d)) => {
            b.ipv6(s.octets(), d.octets(), 64)
                .udp(1, 2)
                .write(&mut out, b"x")
                .unwrap();
        }
        _ => out = eth(dst, src, 0x88b5, &[0; 46]),
    }
    out
}

/// Well-formed frames between pool addresses, some of them cut short or with one
/// byte overwritten.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        mac(),
        mac(),
        0u8..12,
        0u8..12,
        prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(kind, dst, src, s, d, poke, cut)| {
            let (sip, dip) = (pool_ip(s), pool_ip(d));
            let dip = if sip.is_ipv4() == dip.is_ipv4() {
                dip
            } else {
                sip
            };
            let mut f = build(kind, dst, src, sip, dip);
            if let Some((at, v)) = poke {
                let i = at.index(f.len());
                f[i] = v;
            }
            if let Some(at) = cut {
                f.truncate(at.index(f.len() + 1));
            }
            f
        })
}

fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![frame(), prop::collection::vec(any::<u8>(), 0..128)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn never_panics_on_arbitrary_bytes(
        p in snapshot(),
        from in ingress(),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = demux_key(&bytes, KeyDir::Dest);
        let _ = demux_key(&bytes, KeyDir::Source);
        let _ = decide(&p, from, &bytes);
    }

    #[test]
    fn to_slave_only_to_the_owner_of_the_dest_key(
        p in snapshot(),
        from in ingress(),
        f in any_frame(),
    ) {
        if let Decision::ToSlave(t) = decide(&p, from, &f) {
            let key = demux_key(&f, KeyDir::Dest);
            prop_assert!(key.is_some());
            prop_assert_eq!(p.table.owner(&key.unwrap()), Some(t));
            prop_assert!(p.slave(t).is_some_and(|s| s.up));
        }
    }

    #[test]
    fn private_never_switches_slave_to_slave(
        mut p in snapshot(),
        from in 1u16..6,
        f in any_frame(),
    ) {
        p.flags = Flags::Private;
        let d = decide(&p, Ingress::Slave(SlaveId(from)), &f);
        prop_assert!(!matches!(d, Decision::ToSlave(_)), "{:?}", d);
    }

    #[test]
    fn vepa_never_switches_slave_to_slave(
        mut p in snapshot(),
        from in 1u16..6,
        f in any_frame(),
    ) {
        p.flags = Flags::Vepa;
        let d = decide(&p, Ingress::Slave(SlaveId(from)), &f);
        prop_assert!(!matches!(d, Decision::ToSlave(_) | Decision::ToMasterStack), "{:?}", d);
    }

    #[test]
    fn l3_never_floods_nor_sends_multicast(
        mut p in snapshot(),
        l3s in any::<bool>(),
        from in ingress(),
        f in any_frame(),
    ) {
        p.mode = if l3s { Mode::L3s } else { Mode::L3 };
        let d = decide(&p, from, &f);
        prop_assert!(!matches!(d, Decision::Flood { .. } | Decision::ToWire | Decision::ToMasterStack), "{:?}", d);
        if d == Decision::Route {
            prop_assert!(!MacAddr(f[..6].try_into().unwrap()).is_multicast());
        }
    }

    #[test]
    fn the_source_guard_lets_a_slave_speak_only_for_itself(
        mut p in snapshot(),
        from in 1u16..6,
        f in any_frame(),
    ) {
        p.source_guard = true;
        let s = SlaveId(from);
        let d = decide(&p, Ingress::Slave(s), &f);
        if !matches!(d, Decision::Drop(_)) {
            // Read the source from the raw bytes, not through the views decide uses.
            let l3 = &f[14..];
            let src = match u16::from_be_bytes([f[12], f[13]]) {
                0x0806 => IpAddr::from(<[u8; 4]>::try_from(&l3[14..18]).unwrap()),
                0x0800 => IpAddr::from(<[u8; 4]>::try_from(&l3[12..16]).unwrap()),
                0x86dd => IpAddr::from(<[u8; 16]>::try_from(&l3[8..24]).unwrap()),
                other => {
                    prop_assert!(false, "ethertype {other:#06x} passed the guard: {d:?}");
                    unreachable!()
                }
            };
            prop_assert!(
                src.is_unspecified() || p.table.owner(&src) == Some(s),
                "{src} sent by {s} passed the guard: {d:?}"
            );
        }
    }

    #[test]
    fn rx_never_goes_to_the_wire(p in snapshot(), f in any_frame()) {
        let d = decide(&p, Ingress::Master, &f);
        let rx_only = matches!(
            d,
            Decision::Pass
                | Decision::ToSlave(_)
                | Decision::Drop(_)
                | Decision::Flood { origin: None, to_wire: false }
        );
        prop_assert!(rx_only, "{:?}", d);
    }

    #[test]
    fn keys_agree_with_etherparse(f in frame()) {
        use etherparse::{NetSlice, SlicedPacket};
        let Ok(sliced) = SlicedPacket::from_ethernet(&f) else { return Ok(()) };
        match sliced.net {
            Some(NetSlice::Ipv4(v4)) => {
                let h = v4.header();
                if usize::from(h.total_len()) + 14 <= f.len() {
                    prop_assert_eq!(demux_key(&f, KeyDir::Dest), Some(IpAddr::V4(h.destination_addr())));
                    prop_assert_eq!(demux_key(&f, KeyDir::Source), Some(IpAddr::V4(h.source_addr())));
                }
            }
            Some(NetSlice::Ipv6(v6)) => {
                let h = v6.header();
                if !h.source_addr().is_unspecified() {
                    prop_assert_eq!(demux_key(&f, KeyDir::Dest), Some(IpAddr::V6(h.destination_addr())));
                    prop_assert_eq!(demux_key(&f, KeyDir::Source), Some(IpAddr::V6(h.source_addr())));
                }
            }
            Some(NetSlice::Arp(arp)) if arp.proto_addr_size() == 4 && arp.hw_addr_size() == 6 => {
                let tpa: [u8; 4] = arp.target_protocol_addr().try_into().unwrap();
                let spa: [u8; 4] = arp.sender_protocol_addr().try_into().unwrap();
                prop_assert_eq!(demux_key(&f, KeyDir::Dest), Some(IpAddr::from(tpa)));
                prop_assert_eq!(demux_key(&f, KeyDir::Source), Some(IpAddr::from(spa)));
            }
            _ => {}
        }
    }

    #[test]
    fn port_invariants_hold(ops in prop::collection::vec((0u8..5, 1u16..5, 0u8..12), 0..64)) {
        let mut p = Port::new(MASTER);
        for (op, id, a) in ops {
            let id = SlaveId(id);
            match op {
                0 => { let _ = p.add_slave(); }
                1 => p.remove_slave(id),
                2 => p.set_slave_up(id, a.is_multiple_of(2)),
                3 => match p.add_addr(id, pool_ip(a)) {
                    Ok(()) => {}
                    Err(PortError::AddrInUse { owner, .. }) => {
                        prop_assert!(p.slave(owner).unwrap().addrs.contains(&pool_ip(a)));
                    }
                    Err(PortError::NoSuchSlave(_)) => prop_assert!(p.slave(id).is_none()),
                    Err(e) => prop_assert!(false, "{e}"),
                },
                _ => { let _ = p.remove_addr(id, pool_ip(a)); }
            }
            let mut listed = Vec::new();
            let mut up = 0;
            for (sid, s) in p.slaves() {
                for ip in &s.addrs {
                    prop_assert!(!listed.contains(ip), "{ip} listed twice");
                    listed.push(*ip);
                    let want = if s.up { Some(sid) } else { None };
                    prop_assert_eq!(p.table().owner(ip), want);
                }
                if s.up {
                    up += s.addrs.len();
                }
            }
            prop_assert_eq!(p.table().len(), up);
        }
    }

    #[test]
    fn vnet_round_trip(h in any::<(u8, u8, u16, u16, u16, u16)>()) {
        let h = VnetHdr {
            flags: h.0,
            gso_type: h.1,
            hdr_len: h.2,
            gso_size: h.3,
            csum_start: h.4,
            csum_offset: h.5,
        };
        prop_assert_eq!(VnetHdr::parse(&h.to_bytes()), Ok(h));
    }
}
