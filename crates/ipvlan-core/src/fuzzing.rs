//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their
//! committed corpus: each takes arbitrary bytes and must never panic.
//!
//! One byte of the input chooses the port's mode and flags, or the ingress; the rest is
//! the frame. The port is fixed: three slaves (one down), IPv4 and IPv6 addresses, a
//! multicast group.

use std::net::IpAddr;

use crate::wire::vnet::VnetHdr;
use crate::wire::{arp, ethernet, gso, icmpv6, ipv4, ipv6};
use crate::{Flags, Ingress, KeyDir, Mode, Port, PortSnapshot, SlaveId, decide, demux_key};

const MASTER: crate::MacAddr = crate::MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/// The fixed port, in the mode and flags `selector` picks, with or without the source
/// guard.
pub fn port(selector: u8) -> PortSnapshot {
    let mode = [Mode::L2, Mode::L3, Mode::L3s][usize::from(selector % 3)];
    let flags = [Flags::Bridge, Flags::Private, Flags::Vepa][usize::from(selector / 3 % 3)];
    let mut p = Port::new(MASTER);
    p.apply_newlink(Some(mode), Some(flags));
    p.set_source_guard(selector / 9 % 2 == 1);
    let ids: Vec<SlaveId> = (0..3).map(|_| p.add_slave().expect("three fit")).collect();
    let addrs: [&[&str]; 3] = [
        &["10.0.0.10", "fd00::10", "fe80::5254:0:112:3456"],
        &["10.0.0.11", "fd00::11"],
        &["10.0.0.12"],
    ];
    for (id, list) in ids.iter().zip(addrs) {
        for a in list {
            let ip: IpAddr = a.parse().expect("literal");
            let _ = p.add_addr(*id, ip);
        }
    }
    p.set_slave_up(ids[0], true);
    p.set_slave_up(ids[1], true);
    if let Some(f) = p.mc_filter_mut(ids[0]) {
        f.add(crate::MacAddr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]));
    }
    p.snapshot()
}

/// `decide` and `demux_key` on `data[2..]`: `data[0]` picks the port, `data[1]` the
/// ingress. Returns the decision's debug form (to compare runs).
pub fn decide_input(data: &[u8]) -> String {
    let (Some(&sel), Some(&ing)) = (data.first(), data.get(1)) else {
        return String::new();
    };
    let frame = &data[2..];
    let snap = port(sel);
    let ingress = match ing % 4 {
        0 => Ingress::Master,
        n => Ingress::Slave(SlaveId(u16::from(n))),
    };
    let _ = demux_key(frame, KeyDir::Dest);
    let _ = demux_key(frame, KeyDir::Source);
    format!("{:?}", decide(&snap, ingress, frame))
}

/// Every wire view on `data`.
pub fn wire_input(data: &[u8]) {
    if let Ok(f) = ethernet::Frame::new_checked(data) {
        let _ = (f.dst(), f.src(), f.ethertype());
        let p = f.payload();
        if let Ok(a) = arp::Packet::new_checked(p) {
            let _ = a.hardware_type();
        }
        if let Ok(v4) = ipv4::Packet::new_checked(p) {
            let _ = (v4.src(), v4.dst(), v4.protocol(), v4.payload().len());
        }
        if let Ok(v6) = ipv6::Packet::new_checked(p) {
            let _ = (v6.src(), v6.dst(), v6.next_header());
            if let Ok(i) = icmpv6::Packet::new_checked(v6.payload()) {
                let _ = (i.msg_type(), i.code(), i.checksum());
            }
        }
    }
    let _ = VnetHdr::parse(data);
}

/// Software segmentation: `data[..10]` is the virtio-net header, the rest the frame.
pub fn gso_input(data: &[u8]) -> usize {
    let Ok(hdr) = VnetHdr::parse(data) else {
        return 0;
    };
    let frame = &data[VnetHdr::LEN..];
    let mut scratch = vec![0u8; gso::SCRATCH_LEN];
    let mut bytes = 0;
    let _ = gso::segment(frame, &hdr, &mut scratch, |p| bytes += p.len());
    let mut copy = frame.to_vec();
    let _ = gso::complete_checksum(&mut copy, hdr.csum_start, hdr.csum_offset);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_port_has_what_it_says() {
        let p = port(0);
        assert_eq!(p.mode, Mode::L2);
        assert_eq!(p.slaves.len(), 3);
        assert!(
            p.table.owner(&"10.0.0.12".parse().unwrap()).is_none(),
            "slave 3 is down"
        );
        assert_eq!(port(4).flags, Flags::Private);
    }

    #[test]
    fn short_inputs_are_fine() {
        assert_eq!(decide_input(&[]), "");
        assert!(decide_input(&[0, 0]).contains("Malformed"));
        wire_input(&[]);
        assert_eq!(gso_input(&[1, 2, 3]), 0);
    }
}
