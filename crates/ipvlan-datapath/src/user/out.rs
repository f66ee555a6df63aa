//! How the switching thread carries a decision out (`Io`): frames queued for a slave's
//! socket or the wire and sent a batch at a time with their outcome counted, routed
//! frames segmented onto the raw sockets, L3S packets from the queue delivered to
//! their slaves; and the counters of what no slave can be blamed for.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ipvlan_core::wire::vnet::VnetHdr;
use ipvlan_core::wire::{ethernet, gso, ipv4, ipv6};
use ipvlan_core::{Decision, DropReason, Ingress, MacAddr, decide};
use ipvlan_sys::nfqueue::QueuedPacket;
use ipvlan_sys::packet::{Batch, PacketSocket, VNET_HDR_LEN};
use ipvlan_sys::raw::RawSender;

use crate::Plan;

/// A [`SendBatch`](ipvlan_sys::packet::SendBatch) tag: the index of the receiving slave in the plan, or [`TO_WIRE`]
/// with the sender's index ([`FROM_WIRE`] for a frame that came from the wire).
pub(super) const TO_WIRE: u32 = 1 << 31;
pub(super) const FROM_WIRE: u32 = TO_WIRE - 1;

/// The tag a frame queued for (or from) the slave at position `i` carries: below
/// [`TO_WIRE`], as positions are indices of `by_id`'s `u32`s.
pub(super) fn slave_tag(i: usize) -> u32 {
    u32::try_from(i).expect("a slave position is a u32")
}

/// Counters of frames that no slave can be blamed for (from the wire).
#[derive(Debug, Default)]
pub struct MasterCounters {
    pub rx_frames: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
}

/// The socket being read, and what its frames are.
pub(super) struct Rx<'a> {
    pub(super) plan: &'a Plan,
    pub(super) sock: &'a PacketSocket,
    pub(super) ingress: Ingress,
    /// The sending slave's index in the plan; `None` for the master.
    pub(super) from: Option<usize>,
}

/// Where frames go out, apart from the slaves' own sockets.
pub(super) struct Io {
    pub(super) master: Arc<PacketSocket>,
    pub(super) raw: Option<RawSender>,
    pub(super) master_counters: Arc<MasterCounters>,
}

impl Io {
    pub(super) fn deliver_queued(&self, plan: &Plan, p: &QueuedPacket<'_>, scratch: &mut [u8]) {
        let ip = p.payload;
        let (dst, ethertype, l4_off, proto) = if let Ok(v4) = ipv4::Packet::new_checked(ip) {
            (
                IpAddr::V4(v4.dst()),
                ethernet::ETHERTYPE_IPV4,
                v4.header_len(),
                v4.protocol(),
            )
        } else if let Ok(v6) = ipv6::Packet::new_checked(ip) {
            (
                IpAddr::V6(v6.dst()),
                ethernet::ETHERTYPE_IPV6,
                ipv6::HEADER_LEN,
                v6.next_header(),
            )
        } else {
            return;
        };
        let Some(i) = plan.snap.table.owner(&dst).and_then(|id| plan.position(id)) else {
            return;
        };
        let to = &plan.slaves[i];
        let master = plan.snap.master_mac;
        let eth = ethernet::Repr {
            dst: master,
            src: p.hwaddr.map_or(master, MacAddr),
            ethertype,
        };
        let len = VNET_HDR_LEN + eth.buffer_len(ip.len());
        if len > scratch.len() {
            to.counters.dropped(DropReason::Malformed);
            return;
        }
        let mut hdr = VnetHdr::default();
        if p.csum_not_ready() {
            let csum_offset = match proto {
                6 => 16,
                17 => 6,
                _ => 0,
            };
            if csum_offset != 0 {
                hdr.flags = ipvlan_core::wire::vnet::F_NEEDS_CSUM;
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "an Ethernet header and an IP header (IPv4's at most 60 bytes)"
                )]
                let csum_start = (ethernet::HEADER_LEN + l4_off) as u16;
                hdr.csum_start = csum_start;
                hdr.csum_offset = csum_offset;
            }
        }
        if hdr.emit(&mut scratch[..VNET_HDR_LEN]).is_err() {
            return;
        }
        let Ok(mut frame) = ethernet::Frame::new_checked(&mut scratch[VNET_HDR_LEN..len]) else {
            return;
        };
        eth.emit(&mut frame);
        frame.payload_mut().copy_from_slice(ip);
        match to.sock.send(&scratch[..len]) {
            Ok(_) => to.counters.rx(len - VNET_HDR_LEN),
            Err(_) => to.counters.dropped(DropReason::QueueFull),
        }
    }

    /// A frame the kernel could not keep for the socket `rx` reads.
    pub(super) fn lost(&self, rx: &Rx<'_>) {
        match rx.from {
            Some(i) => rx.plan.slaves[i].counters.dropped(DropReason::QueueFull),
            None => {
                self.master_counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends what `out` holds and counts the outcome.
    pub(super) fn flush(&self, plan: &Plan, out: &mut Batch<'_, '_>) {
        if out.is_empty() {
            return;
        }
        out.flush(&self.master, |tag, len, sent| {
            let len = len - VNET_HDR_LEN;
            let counters = |i: u32| &plan.slaves[i as usize].counters;
            match (tag & TO_WIRE != 0, sent) {
                (false, true) => counters(tag).rx(len),
                (false, false) => counters(tag).dropped(DropReason::QueueFull),
                (true, true) => {}
                (true, false) if tag & !TO_WIRE == FROM_WIRE => {
                    self.master_counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                (true, false) => counters(tag & !TO_WIRE).dropped(DropReason::QueueFull),
            }
        });
    }

    /// Queues `whole` for device `ifindex`, sending the batch first if it is full.
    pub(super) fn queue<'d>(
        &self,
        plan: &Plan,
        out: &mut Batch<'_, 'd>,
        ifindex: u32,
        whole: &'d [u8],
        tag: u32,
    ) {
        if !out.push(ifindex, whole, tag) {
            self.flush(plan, out);
            out.push(ifindex, whole, tag);
        }
    }

    pub(super) fn switch<'d>(
        &self,
        rx: &Rx<'_>,
        whole: &'d [u8],
        out: &mut Batch<'_, 'd>,
        scratch: &mut [u8],
    ) {
        let plan = rx.plan;
        let frame = whole.get(VNET_HDR_LEN..).unwrap_or(&[]);
        let sender = rx.from.map(|i| &*plan.slaves[i].counters);
        if let Some(c) = sender {
            c.tx(frame.len());
        } else {
            self.master_counters
                .rx_frames
                .fetch_add(1, Ordering::Relaxed);
        }
        let blame = |why: DropReason| match sender {
            Some(c) => c.dropped(why),
            None => {
                self.master_counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        let to_wire = TO_WIRE | rx.from.map_or(FROM_WIRE, slave_tag);
        let wire = self.master.ifindex();
        match decide(&plan.snap, rx.ingress, frame) {
            Decision::Pass => {}
            // Unicast the kernel backend already switched: this is the tap's copy.
            Decision::ToSlave(_) | Decision::ToWire
                if plan.kernel && frame.first().is_some_and(|b| b & 1 == 0) => {}
            Decision::ToSlave(id) => match plan.position(id) {
                Some(i) => {
                    let to = plan.slaves[i].sock.ifindex();
                    self.queue(plan, out, to, whole, slave_tag(i));
                }
                None => blame(DropReason::Other),
            },
            Decision::ToWire => self.queue(plan, out, wire, whole, to_wire),
            Decision::Flood {
                origin,
                to_wire: wire_too,
            } => {
                let Ok(eth) = ethernet::Frame::new_checked(frame) else {
                    return;
                };
                for id in plan.snap.flood_targets(origin, eth.dst()) {
                    if let Some(i) = plan.position(id) {
                        let to = plan.slaves[i].sock.ifindex();
                        self.queue(plan, out, to, whole, slave_tag(i));
                    }
                }
                if wire_too {
                    self.queue(plan, out, wire, whole, to_wire);
                }
            }
            // With host access the host end's stack has it (see `guard::add_host_access`).
            Decision::ToMasterStack if plan.snap.host_access => {}
            Decision::ToMasterStack => blame(DropReason::NoOwner),
            Decision::Route => match (&self.raw, VnetHdr::parse(whole)) {
                (Some(raw), Ok(hdr)) => {
                    let mut failed = false;
                    match gso::segment(frame, &hdr, scratch, |pkt| {
                        failed |= raw.send(pkt).is_err();
                    }) {
                        Ok(_) if failed => blame(DropReason::NoRoute),
                        Ok(_) => {}
                        Err(_) => blame(DropReason::Malformed),
                    }
                }
                (None, _) => blame(DropReason::NoOwner),
                (_, Err(_)) => blame(DropReason::Malformed),
            },
            Decision::Drop(why) => blame(why),
        }
    }
}
