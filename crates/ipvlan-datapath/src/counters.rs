//! Per-slave counters, written by one switching thread and read by anyone.
//!
//! Named from the slave's point of view, like a device's own statistics: `tx` is what
//! the slave sent, `rx` what was delivered to it. Drops are counted by reason.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// Why the datapath dropped a frame. Stable names: they appear in `-s` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropKind {
    /// Unicast between slaves refused by `private` (spec §4.1).
    Private,
    /// Too short, or a header that does not parse.
    Malformed,
    /// Unicast between equal MACs whose key no slave owns: the kernel hands it to the
    /// master's own stack (§4.1, §9.1), which the user backend cannot reach.
    NoOwner,
    /// A frame from a slave whose source MAC is not the master's: forged, never sent on.
    Spoof,
    /// A frame the source guard refused: not from one of the sending slave's own
    /// addresses (an ipvlan-rs extension, off unless asked for).
    SourceGuard,
    /// L3/L3S egress the master's namespace could not route or send (the driver's
    /// `tx_errors`, spec §4.2).
    NoRoute,
    /// L3 mode refuses multicast and broadcast, and non-IP frames (§4.2).
    L3Filtered,
    /// A socket buffer was full.
    QueueFull,
    /// Anything else the core refused (pause frames, ...).
    Other,
}

impl DropKind {
    /// The stable name used in counters and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Malformed => "malformed",
            Self::NoOwner => "no_owner",
            Self::Spoof => "spoof",
            Self::SourceGuard => "source_guard",
            Self::NoRoute => "no_route",
            Self::L3Filtered => "l3_filtered",
            Self::QueueFull => "queue_full",
            Self::Other => "other",
        }
    }
}

pub const DROP_KINDS: [DropKind; 9] = [
    DropKind::Spoof,
    DropKind::SourceGuard,
    DropKind::Private,
    DropKind::Malformed,
    DropKind::NoOwner,
    DropKind::NoRoute,
    DropKind::L3Filtered,
    DropKind::QueueFull,
    DropKind::Other,
];

#[derive(Debug, Default)]
pub struct SlaveCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: [AtomicU64; DROP_KINDS.len()],
}

/// A copy of one slave's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    /// Drops by reason, only the non-zero ones.
    pub drops: Vec<(DropKind, u64)>,
}

impl Counters {
    /// Adds drops counted elsewhere (the kernel backend's program).
    pub fn add_drops(&mut self, why: DropKind, n: u64) {
        match self.drops.iter_mut().find(|(d, _)| *d == why) {
            Some((_, m)) => *m += n,
            None => self.drops.push((why, n)),
        }
        self.tx_dropped += n;
    }
}

impl SlaveCounters {
    pub fn rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }
    pub fn tx(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }
    pub fn dropped(&self, why: DropKind) {
        self.dropped_n(why, 1);
    }
    pub fn dropped_n(&self, why: DropKind, n: u64) {
        self.drops[why as usize].fetch_add(n, Relaxed);
    }
    pub fn read(&self) -> Counters {
        let drops: Vec<(DropKind, u64)> = DROP_KINDS
            .iter()
            .map(|&d| (d, self.drops[d as usize].load(Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect();
        // A frame the slave could not receive is an rx drop; one it sent that went
        // nowhere is a tx drop.
        let rx_dropped = self.drops[DropKind::QueueFull as usize].load(Relaxed);
        let tx_dropped = drops.iter().map(|&(_, n)| n).sum::<u64>() - rx_dropped;
        Counters {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            rx_dropped,
            tx_dropped,
            drops,
        }
    }
}
