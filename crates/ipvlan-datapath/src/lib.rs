//! The backends that carry out the port core's decisions.
//!
//! The core (`ipvlan-core`) decides what happens to every frame; a backend moves the
//! frames. [`user`] is the user-space backend: AF_PACKET sockets on the master and on
//! every slave's host end, one switching thread per port. Both the daemon and the
//! backends speak in [`Plan`]s: an immutable picture of the port (its snapshot and the
//! sockets of its slaves) swapped in atomically whenever the port changes, so the
//! switching thread reads it without locks.

pub mod counters;
pub mod guard;
pub mod user;

use std::sync::Arc;

use ipvlan_core::{PortSnapshot, SlaveId};
use ipvlan_sys::nfqueue::NfQueue;
use ipvlan_sys::packet::PacketSocket;

pub use counters::{Counters, DropKind, SlaveCounters};

/// The packet mark (`SO_MARK`) on L3/L3S egress sent through the master's namespace, so
/// that rules there can tell it from the namespace's own traffic.
pub const EGRESS_MARK: u32 = 0x1a5a_0002;

/// One slave as a backend sees it.
#[derive(Debug, Clone)]
pub struct PlanSlave {
    pub id: SlaveId,
    /// Socket on the slave's host end: what it reads, the slave sent; what it writes,
    /// the slave receives.
    pub sock: Arc<PacketSocket>,
    pub counters: Arc<SlaveCounters>,
}

/// Everything a backend needs to switch one port's frames.
#[derive(Debug, Clone)]
pub struct Plan {
    pub snap: PortSnapshot,
    pub slaves: Vec<PlanSlave>,
    /// In L3S: the queue where slave-bound packets arrive after the master
    /// namespace's PREROUTING and INPUT (see [`guard`]).
    pub queue: Option<Arc<NfQueue>>,
}

impl Plan {
    /// Index into `slaves` of the slave with this id.
    pub fn position(&self, id: SlaveId) -> Option<usize> {
        self.slaves.iter().position(|s| s.id == id)
    }
}
