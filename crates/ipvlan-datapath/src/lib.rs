//! The backends that carry out the port core's decisions.
//!
//! The core (`ipvlan-core`) decides what happens to every frame; a backend moves the
//! frames. [`kernel`] is the kernel backend (the compiled nftables program and BPF fast
//! path, applied, kept in step and restored) and the per-port [`kernel::Datapath`] the
//! daemon drives, whichever backend a port has. [`user`] is the user-space backend:
//! AF_PACKET sockets on the master and on every slave's host end, one switching thread
//! per port. The datapath and the switching threads speak in [`Plan`]s: an immutable
//! picture of the port (its snapshot and the sockets of its slaves) swapped in
//! atomically whenever the port changes, so the switching thread reads it without locks.

#![forbid(unsafe_code)]

pub mod counters;
pub mod guard;
pub mod kernel;
pub mod user;

use std::sync::Arc;

use ipvlan_core::{PortSnapshot, SlaveId};
use ipvlan_sys::nfqueue::NfQueue;
use ipvlan_sys::packet::{Filter, PacketSocket};

pub use counters::{Counters, DropReason, SlaveCounters};

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
    /// The kernel backend switches unicast (see `ipvlan_core::compile`); the sockets
    /// then only carry what it leaves: fan-out, routed egress, L3S ingress.
    pub kernel: bool,
    /// dev_id → index into `slaves` (`u32::MAX`: none): a lookup per frame.
    by_id: Vec<u32>,
}

/// Which backend switches a port's unicast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// nftables `netdev` `fwd` compiled from the port: the kernel's speed.
    Kernel,
    /// The switching thread does everything: the slow path and the reference.
    User,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::User => "user",
        }
    }

    /// Receive-ring slots for a packet socket on the master (`master`) or on the host
    /// end of a port that already has `slaves` slaves: 0 (no ring) for the kernel
    /// backend, whose sockets carry only what its program leaves to userspace, since a
    /// ring's memory is allocated whether used or not.
    pub fn ring_slots(self, master: bool, slaves: usize) -> u32 {
        match (self, master) {
            (Self::Kernel, _) => 0,
            (Self::User, true) => user::MASTER_RING,
            (Self::User, false) if slaves < user::ROOMY_SLAVES => user::ROOMY_SLAVE_RING,
            (Self::User, false) => user::SLAVE_RING,
        }
    }

    /// What the packet sockets need to see, by mode: the master's only for fan-out
    /// (and L3's ARP/DAD diversion, §5.3); a host end's also unicast the program
    /// leaves to userspace (L3/L3S routed egress).
    pub fn filters(self, mode: ipvlan_core::Mode) -> (Filter, Filter) {
        match (self, mode) {
            (Self::User, _) => (Filter::All, Filter::All),
            (Self::Kernel, ipvlan_core::Mode::L2) => (Filter::MulticastOnly, Filter::MulticastOnly),
            (Self::Kernel, _) => (Filter::MulticastOnly, Filter::All),
        }
    }
}

impl Plan {
    pub fn new(
        snap: PortSnapshot,
        slaves: Vec<PlanSlave>,
        queue: Option<Arc<NfQueue>>,
        kernel: bool,
    ) -> Self {
        let top = slaves
            .iter()
            .map(|s| usize::from(s.id.0))
            .max()
            .unwrap_or(0);
        let mut by_id = vec![u32::MAX; top + 1];
        for (i, s) in slaves.iter().enumerate() {
            by_id[usize::from(s.id.0)] = u32::try_from(i).expect("a slave per u16 id");
        }
        Self {
            snap,
            slaves,
            queue,
            kernel,
            by_id,
        }
    }

    /// Index into `slaves` of the slave with this id.
    pub fn position(&self, id: SlaveId) -> Option<usize> {
        match self.by_id.get(usize::from(id.0)) {
            Some(&i) if i != u32::MAX => Some(i as usize),
            _ => None,
        }
    }
}
