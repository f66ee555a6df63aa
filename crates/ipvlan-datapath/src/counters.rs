//! Per-slave counters, written by one switching thread and read by anyone; a read
//! is the core's [`Counters`].
//!
//! Named from the slave's point of view, like a device's own statistics: `tx` is what
//! the slave sent, `rx` what was delivered to it. Drops are counted by
//! [`DropReason`], the core's one list of reasons, under its names.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use ipvlan_core::{Counters, DropReason};

#[derive(Debug, Default)]
pub struct SlaveCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
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
    pub fn dropped(&self, why: DropReason) {
        self.dropped_n(why, 1);
    }
    pub fn dropped_n(&self, why: DropReason, n: u64) {
        self.drops[why.index()].fetch_add(n, Relaxed);
    }
    pub fn read(&self) -> Counters {
        let drops: Vec<(DropReason, u64)> = DropReason::ALL
            .iter()
            .map(|&d| (d, self.drops[d.index()].load(Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect();
        // A frame the slave could not receive is an rx drop; one it sent that went
        // nowhere is a tx drop.
        let rx_dropped = self.drops[DropReason::QueueFull.index()].load(Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_read_and_shown_under_the_reasons_names() {
        let c = SlaveCounters::default();
        c.dropped(DropReason::Spoof);
        c.dropped_n(DropReason::QueueFull, 2);
        c.dropped_n(DropReason::L3Filtered, 3);
        let mut read = c.read();
        assert_eq!(
            read.drops,
            [
                (DropReason::Spoof, 1),
                (DropReason::L3Filtered, 3),
                (DropReason::QueueFull, 2)
            ]
        );
        assert_eq!((read.rx_dropped, read.tx_dropped), (2, 4));
        read.add_drops(DropReason::SourceGuard, 5);
        let json = serde_json::to_value(&read).unwrap();
        assert_eq!(
            json["drops"],
            serde_json::json!([
                ["spoof", 1],
                ["l3_filtered", 3],
                ["queue_full", 2],
                ["source_guard", 5]
            ])
        );
        let back: Counters = serde_json::from_value(json).unwrap();
        assert_eq!(back, read);
    }
}
