//! What one slave's counters read at one moment: the copy the control protocol
//! carries and the CLI prints. The backends keep the live counters (in
//! `ipvlan-datapath`) and produce this.
//!
//! Named from the slave's point of view, like a device's own statistics: `tx` is what
//! the slave sent, `rx` what was delivered to it.

use serde::{Deserialize, Serialize};

use crate::DropReason;

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
    pub drops: Vec<(DropReason, u64)>,
}

impl Counters {
    /// Adds drops counted elsewhere (the kernel backend's program).
    pub fn add_drops(&mut self, why: DropReason, n: u64) {
        match self.drops.iter_mut().find(|(d, _)| *d == why) {
            Some((_, m)) => *m += n,
            None => self.drops.push((why, n)),
        }
        self.tx_dropped += n;
    }
}
