//! The control-plane state of one master: mode, flags, slaves, addresses.
//!
//! A [`Port`] enforces the kernel's rules (spec §1–§2):
//! * mode and flags are per port; "latest writer wins" through
//!   [`Port::apply_newlink`] / [`Port::apply_changelink`];
//! * every slave gets a unique `dev_id` from a round-robin allocator, which is also
//!   its [`SlaveId`];
//! * an address may be listed on at most one slave of the port (up or down, the
//!   same slave included); the [`AddrTable`] holds exactly the addresses of the
//!   slaves that are up.
//!
//! The datapath never reads a `Port`; it reads a [`PortSnapshot`], an immutable copy
//! taken after each change.

mod config;
mod devid;
mod mcfilter;
mod table;

pub use config::{ConfigError, Flags, Mode};
pub use devid::{DEV_ID_MAX, DEV_ID_MIN, DevIdAllocator};
pub use mcfilter::{McFilter, ip_multicast_mac};
pub use table::AddrTable;

use crate::MacAddr;
use core::fmt;
use core::net::IpAddr;
use std::collections::{BTreeMap, HashMap};

/// A slave, named by its `dev_id` (1..=0xFFFD), unique within its port.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SlaveId(pub u16);

impl fmt::Display for SlaveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Refusals of the port.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The kernel's `EADDRINUSE`.
    #[error("address {ip} already assigned to an ipvlan device (dev_id {owner})")]
    AddrInUse { ip: IpAddr, owner: SlaveId },
    /// All 65533 dev_ids are taken (the kernel's `ENOSPC`).
    #[error("no free dev_id on this port")]
    DevIdExhausted,
    #[error("no slave with dev_id {0} on this port")]
    NoSuchSlave(SlaveId),
}

/// What the port knows about one slave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlaveState {
    pub up: bool,
    /// Every address the slave holds, in the order they were added.
    pub addrs: Vec<IpAddr>,
    pub mc: McFilter,
}

#[derive(Clone, Debug)]
pub struct Port {
    mode: Mode,
    flags: Flags,
    master_mac: MacAddr,
    /// Slave → (creation sequence number, state).
    slaves: HashMap<SlaveId, (u64, SlaveState)>,
    /// Creation order.
    order: BTreeMap<u64, SlaveId>,
    next_seq: u64,
    /// Every listed address, up or down: the uniqueness check of spec §2.2.
    reserved: HashMap<IpAddr, SlaveId>,
    table: AddrTable,
    dev_ids: DevIdAllocator,
    source_guard: bool,
    host_access: bool,
}

impl Port {
    /// A fresh port: mode L3, flags bridge, no slaves (spec §1.2).
    pub fn new(master_mac: MacAddr) -> Self {
        Port {
            mode: Mode::L3,
            flags: Flags::Bridge,
            master_mac,
            slaves: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            reserved: HashMap::new(),
            table: AddrTable::new(),
            dev_ids: DevIdAllocator::new(),
            source_guard: false,
            host_access: false,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn flags(&self) -> Flags {
        self.flags
    }

    pub fn master_mac(&self) -> MacAddr {
        self.master_mac
    }

    /// Whether the source guard is on: slaves may send only ARP, IPv4 and IPv6 from
    /// their own addresses (an ipvlan-rs extension, off by default; see
    /// [`crate::decide()`]). Mode and flag changes leave it alone.
    pub fn source_guard(&self) -> bool {
        self.source_guard
    }

    pub fn set_source_guard(&mut self, on: bool) {
        self.source_guard = on;
    }

    /// Whether host access is on: the master's namespace and the slaves reach each
    /// other (an ipvlan-rs extension, off by default; the kernel driver keeps them
    /// apart, spec C19). [`Decision::ToMasterStack`](crate::Decision::ToMasterStack)
    /// and what [`Decision::Route`](crate::Decision::Route) delivers locally reach the
    /// master namespace's stack, and its answers come back to the slave. Mode and flag
    /// changes leave it alone.
    pub fn host_access(&self) -> bool {
        self.host_access
    }

    pub fn set_host_access(&mut self, on: bool) {
        self.host_access = on;
    }

    /// The master's MAC changed; slaves follow it (spec C11).
    pub fn set_master_mac(&mut self, mac: MacAddr) {
        self.master_mac = mac;
    }

    /// The newlink rule (spec §1.3 steps 7–8): a present `flags` overwrites the
    /// port's flags; the mode becomes `mode`, or L3 when the request has none.
    /// Returns whether the mode changed (the caller then flips NOARP on every slave
    /// and enters or leaves L3S).
    pub fn apply_newlink(&mut self, mode: Option<Mode>, flags: Option<Flags>) -> bool {
        if let Some(flags) = flags {
            self.flags = flags;
        }
        self.set_mode(mode.unwrap_or(Mode::L3))
    }

    /// The changelink rule (spec §1.4): absent attributes leave the port alone.
    /// Returns whether the mode changed.
    pub fn apply_changelink(&mut self, mode: Option<Mode>, flags: Option<Flags>) -> bool {
        let changed = mode.is_some_and(|m| self.set_mode(m));
        if let Some(flags) = flags {
            self.flags = flags;
        }
        changed
    }

    fn set_mode(&mut self, mode: Mode) -> bool {
        let changed = self.mode != mode;
        self.mode = mode;
        changed
    }

    /// Creates a slave (down, no addresses, broadcast-only multicast filter) with
    /// the next dev_id.
    pub fn add_slave(&mut self) -> Result<SlaveId, PortError> {
        let id = SlaveId(self.dev_ids.alloc().ok_or(PortError::DevIdExhausted)?);
        self.slaves
            .insert(id, (self.next_seq, SlaveState::default()));
        self.order.insert(self.next_seq, id);
        self.next_seq += 1;
        Ok(id)
    }

    /// Adds a slave with a dev_id it already has (one taken back after a restart).
    pub fn adopt_slave(&mut self, id: SlaveId) -> Result<(), PortError> {
        if !self.dev_ids.claim(id.0) {
            return Err(PortError::NoSuchSlave(id));
        }
        self.slaves
            .insert(id, (self.next_seq, SlaveState::default()));
        self.order.insert(self.next_seq, id);
        self.next_seq += 1;
        Ok(())
    }

    /// Deletes a slave: its addresses leave the table and the reservation, its
    /// dev_id is freed. Unknown ids are ignored.
    pub fn remove_slave(&mut self, id: SlaveId) {
        let Some((seq, state)) = self.slaves.remove(&id) else {
            return;
        };
        self.order.remove(&seq);
        for ip in &state.addrs {
            self.reserved.remove(ip);
            if state.up {
                self.table.remove(ip);
            }
        }
        self.dev_ids.free(id.0);
    }

    /// Slaves in creation order.
    pub fn slaves(&self) -> impl Iterator<Item = (SlaveId, &SlaveState)> {
        self.order
            .values()
            .filter_map(|id| self.slaves.get(id).map(|(_, s)| (*id, s)))
    }

    pub fn slave(&self, id: SlaveId) -> Option<&SlaveState> {
        self.slaves.get(&id).map(|(_, s)| s)
    }

    pub fn slave_count(&self) -> usize {
        self.slaves.len()
    }

    /// Up: the slave's listed addresses enter the table. Down: they leave it but
    /// stay listed and reserved (spec §2.1). Unknown ids are ignored.
    pub fn set_slave_up(&mut self, id: SlaveId, up: bool) {
        let Some((_, state)) = self.slaves.get_mut(&id) else {
            return;
        };
        if state.up == up {
            return;
        }
        state.up = up;
        for ip in &state.addrs {
            if up {
                self.table.insert(*ip, id);
            } else {
                self.table.remove(ip);
            }
        }
    }

    /// Lists `ip` on the slave (and puts it in the table if the slave is up).
    /// Refused if any slave of this port, this one included, already lists it.
    pub fn add_addr(&mut self, id: SlaveId, ip: IpAddr) -> Result<(), PortError> {
        let (_, state) = self.slaves.get_mut(&id).ok_or(PortError::NoSuchSlave(id))?;
        if let Some(&owner) = self.reserved.get(&ip) {
            return Err(PortError::AddrInUse { ip, owner });
        }
        state.addrs.push(ip);
        if state.up {
            self.table.insert(ip, id);
        }
        self.reserved.insert(ip, id);
        Ok(())
    }

    /// Unlists `ip` from the slave; returns whether the slave had it.
    pub fn remove_addr(&mut self, id: SlaveId, ip: IpAddr) -> bool {
        if self.reserved.get(&ip) != Some(&id) {
            return false;
        }
        let Some((_, state)) = self.slaves.get_mut(&id) else {
            return false;
        };
        self.reserved.remove(&ip);
        state.addrs.retain(|a| *a != ip);
        if state.up {
            self.table.remove(&ip);
        }
        true
    }

    /// Which slave lists `ip`, whether it is up or not.
    pub fn reserved_by(&self, ip: &IpAddr) -> Option<SlaveId> {
        self.reserved.get(ip).copied()
    }

    /// Replaces the slave's multicast filter. Unknown ids are ignored.
    pub fn set_mc_filter(&mut self, id: SlaveId, f: McFilter) {
        if let Some(mc) = self.mc_filter_mut(id) {
            *mc = f;
        }
    }

    pub fn mc_filter_mut(&mut self, id: SlaveId) -> Option<&mut McFilter> {
        self.slaves.get_mut(&id).map(|(_, s)| &mut s.mc)
    }

    /// The addresses of the slaves that are up.
    pub fn table(&self) -> &AddrTable {
        &self.table
    }

    pub fn snapshot(&self) -> PortSnapshot {
        PortSnapshot {
            mode: self.mode,
            flags: self.flags,
            source_guard: self.source_guard,
            host_access: self.host_access,
            master_mac: self.master_mac,
            table: self.table.clone(),
            slaves: self
                .slaves()
                .map(|(id, s)| SnapSlave {
                    id,
                    up: s.up,
                    mc: s.mc.clone(),
                })
                .collect(),
        }
    }
}

/// An immutable copy of a port, what [`crate::decide()`] and the datapath read.
#[derive(Clone, Debug)]
pub struct PortSnapshot {
    pub mode: Mode,
    pub flags: Flags,
    /// See [`Port::source_guard`].
    pub source_guard: bool,
    /// See [`Port::host_access`].
    pub host_access: bool,
    pub master_mac: MacAddr,
    pub table: AddrTable,
    /// In creation (dev_id allocation) order: the order multicast copies go out.
    pub slaves: Vec<SnapSlave>,
}

#[derive(Clone, Debug)]
pub struct SnapSlave {
    pub id: SlaveId,
    pub up: bool,
    pub mc: McFilter,
}

impl PortSnapshot {
    pub fn slave(&self, id: SlaveId) -> Option<&SnapSlave> {
        self.slaves.iter().find(|s| s.id == id)
    }

    /// The receivers of a [`crate::Decision::Flood`] copy for destination `dst`:
    /// slaves that are up and whose filter accepts `dst`, except `origin`, in
    /// creation order (spec §4.4).
    pub fn flood_targets(
        &self,
        origin: Option<SlaveId>,
        dst: MacAddr,
    ) -> impl Iterator<Item = SlaveId> + '_ {
        self.slaves
            .iter()
            .filter(move |s| s.up && Some(s.id) != origin && s.mc.accepts(&dst))
            .map(|s| s.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn new_port_defaults() {
        let p = Port::new(MAC);
        assert_eq!(p.mode(), Mode::L3);
        assert_eq!(p.flags(), Flags::Bridge);
        assert_eq!(p.master_mac(), MAC);
        assert_eq!(p.slave_count(), 0);
        assert!(p.table().is_empty());
    }

    #[test]
    fn newlink_without_mode_forces_l3_and_keeps_flags() {
        let mut p = Port::new(MAC);
        assert!(p.apply_newlink(Some(Mode::L2), Some(Flags::Private)));
        assert_eq!((p.mode(), p.flags()), (Mode::L2, Flags::Private));
        assert!(p.apply_newlink(None, None));
        assert_eq!((p.mode(), p.flags()), (Mode::L3, Flags::Private));
        assert!(!p.apply_newlink(None, None));
    }

    #[test]
    fn newlink_flags_overwrite() {
        let mut p = Port::new(MAC);
        assert!(!p.apply_newlink(Some(Mode::L3), Some(Flags::Vepa)));
        assert_eq!(p.flags(), Flags::Vepa);
        // `mode l2` from iproute2 carries flags 0: back to bridge (spec C4).
        assert!(p.apply_newlink(Some(Mode::L2), Some(Flags::Bridge)));
        assert_eq!((p.mode(), p.flags()), (Mode::L2, Flags::Bridge));
        assert!(p.apply_newlink(Some(Mode::L3s), None));
        assert_eq!((p.mode(), p.flags()), (Mode::L3s, Flags::Bridge));
    }

    #[test]
    fn changelink_rules() {
        let mut p = Port::new(MAC);
        p.apply_newlink(Some(Mode::L2), Some(Flags::Private));
        assert!(!p.apply_changelink(None, None));
        assert_eq!((p.mode(), p.flags()), (Mode::L2, Flags::Private));
        assert!(!p.apply_changelink(None, Some(Flags::Vepa)));
        assert_eq!((p.mode(), p.flags()), (Mode::L2, Flags::Vepa));
        assert!(p.apply_changelink(Some(Mode::L3s), None));
        assert_eq!((p.mode(), p.flags()), (Mode::L3s, Flags::Vepa));
        assert!(!p.apply_changelink(Some(Mode::L3s), Some(Flags::Bridge)));
        assert_eq!((p.mode(), p.flags()), (Mode::L3s, Flags::Bridge));
    }

    #[test]
    fn slaves_get_round_robin_dev_ids() {
        let mut p = Port::new(MAC);
        let a = p.add_slave().unwrap();
        let b = p.add_slave().unwrap();
        assert_eq!((a, b), (SlaveId(1), SlaveId(2)));
        p.remove_slave(a);
        p.remove_slave(b);
        assert_eq!(p.add_slave(), Ok(SlaveId(3)));
        assert_eq!(
            p.slaves().map(|(id, _)| id).collect::<Vec<_>>(),
            [SlaveId(3)]
        );
    }

    #[test]
    fn dev_id_exhaustion() {
        let mut p = Port::new(MAC);
        for _ in 0..0xFFFD {
            p.add_slave().unwrap();
        }
        assert_eq!(p.add_slave(), Err(PortError::DevIdExhausted));
        p.remove_slave(SlaveId(42));
        assert_eq!(p.add_slave(), Ok(SlaveId(42)));
    }

    #[test]
    fn creation_order_survives_wrap() {
        let mut p = Port::new(MAC);
        for _ in 0..0xFFFD {
            p.add_slave().unwrap();
        }
        for id in 1..0xFFFD {
            p.remove_slave(SlaveId(id));
        }
        let low = p.add_slave().unwrap();
        assert_eq!(low, SlaveId(1));
        let snap = p.snapshot();
        assert_eq!(
            snap.slaves.iter().map(|s| s.id).collect::<Vec<_>>(),
            [SlaveId(0xFFFD), SlaveId(1)]
        );
    }

    #[test]
    fn address_uniqueness_across_slaves_and_same_slave() {
        let mut p = Port::new(MAC);
        let s1 = p.add_slave().unwrap();
        let s2 = p.add_slave().unwrap();
        let a = ip("1.1.1.1");
        p.add_addr(s1, a).unwrap();
        let in_use = Err(PortError::AddrInUse { ip: a, owner: s1 });
        assert_eq!(p.add_addr(s2, a), in_use);
        assert_eq!(p.add_addr(s1, a), in_use);
        assert_eq!(p.slave(s1).unwrap().addrs, [a]);
        assert!(p.slave(s2).unwrap().addrs.is_empty());
        // another family or address is fine
        p.add_addr(s2, ip("::ffff:1.1.1.1")).unwrap();
        p.add_addr(s2, ip("1.1.1.2")).unwrap();
    }

    #[test]
    fn add_addr_to_unknown_slave() {
        let mut p = Port::new(MAC);
        assert_eq!(
            p.add_addr(SlaveId(9), ip("10.0.0.1")),
            Err(PortError::NoSuchSlave(SlaveId(9)))
        );
    }

    #[test]
    fn table_follows_admin_state() {
        let mut p = Port::new(MAC);
        let s = p.add_slave().unwrap();
        let (a, b) = (ip("10.0.0.1"), ip("fe80::5254:0:112:3456"));
        p.add_addr(s, a).unwrap();
        assert_eq!(p.table().owner(&a), None, "down slave is not in the table");
        p.set_slave_up(s, true);
        p.add_addr(s, b).unwrap();
        assert_eq!(p.table().owner(&a), Some(s));
        assert_eq!(p.table().owner(&b), Some(s));
        p.set_slave_up(s, false);
        assert!(p.table().is_empty());
        assert_eq!(p.slave(s).unwrap().addrs, [a, b]);
        assert!(!p.slave(s).unwrap().up);
        let s2 = p.add_slave().unwrap();
        assert_eq!(
            p.add_addr(s2, a),
            Err(PortError::AddrInUse { ip: a, owner: s })
        );
        assert_eq!(p.reserved_by(&a), Some(s));
        p.set_slave_up(s, true);
        assert_eq!(p.table().len(), 2);
    }

    #[test]
    fn remove_addr() {
        let mut p = Port::new(MAC);
        let s1 = p.add_slave().unwrap();
        let s2 = p.add_slave().unwrap();
        p.set_slave_up(s1, true);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        p.add_addr(s1, a).unwrap();
        p.add_addr(s1, b).unwrap();
        assert!(!p.remove_addr(s2, a), "not s2's address");
        assert!(p.remove_addr(s1, a));
        assert!(!p.remove_addr(s1, a));
        assert_eq!(p.table().owner(&a), None);
        assert_eq!(p.slave(s1).unwrap().addrs, [b]);
        p.add_addr(s2, a).unwrap();
        assert_eq!(p.table().owner(&a), None, "s2 is down");
    }

    #[test]
    fn remove_slave_frees_everything() {
        let mut p = Port::new(MAC);
        let s1 = p.add_slave().unwrap();
        let s2 = p.add_slave().unwrap();
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        p.add_addr(s1, a).unwrap();
        p.add_addr(s1, b).unwrap();
        p.set_slave_up(s1, true);
        p.set_slave_up(s2, false);
        p.set_slave_up(s1, false);
        p.set_slave_up(s1, true);
        p.remove_slave(s1);
        assert!(p.slave(s1).is_none());
        assert!(p.table().is_empty());
        assert_eq!(p.reserved_by(&a), None);
        p.add_addr(s2, a).unwrap();
        p.remove_slave(s1);
        assert_eq!(p.slave_count(), 1);
    }

    #[test]
    fn unknown_slave_operations_are_ignored() {
        let mut p = Port::new(MAC);
        p.set_slave_up(SlaveId(1), true);
        p.remove_slave(SlaveId(1));
        p.set_mc_filter(SlaveId(1), McFilter::new());
        assert!(p.mc_filter_mut(SlaveId(1)).is_none());
        assert!(!p.remove_addr(SlaveId(1), ip("10.0.0.1")));
        assert_eq!(p.add_slave(), Ok(SlaveId(1)));
    }

    #[test]
    fn snapshot_copies_state() {
        let mut p = Port::new(MAC);
        p.apply_newlink(Some(Mode::L2), Some(Flags::Vepa));
        let s1 = p.add_slave().unwrap();
        let s2 = p.add_slave().unwrap();
        p.set_slave_up(s2, true);
        p.add_addr(s2, ip("10.0.0.2")).unwrap();
        let g = MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb]);
        p.mc_filter_mut(s2).unwrap().add(g);
        let snap = p.snapshot();
        p.set_master_mac(MacAddr([2; 6]));
        p.remove_slave(s2);
        assert_eq!(snap.mode, Mode::L2);
        assert_eq!(snap.flags, Flags::Vepa);
        assert_eq!(snap.master_mac, MAC);
        assert_eq!(snap.table.owner(&ip("10.0.0.2")), Some(s2));
        assert_eq!(snap.slaves.len(), 2);
        assert_eq!((snap.slaves[0].id, snap.slaves[0].up), (s1, false));
        assert!(snap.slave(s2).unwrap().mc.accepts(&g));
        assert_eq!(p.master_mac(), MacAddr([2; 6]));
    }

    #[test]
    fn flood_targets_filter() {
        let mut p = Port::new(MAC);
        let ids: Vec<_> = (0..4).map(|_| p.add_slave().unwrap()).collect();
        let g = MacAddr([0x01, 0x00, 0x5e, 0x09, 0x0a, 0x01]);
        for &id in &ids[..3] {
            p.set_slave_up(id, true);
        }
        let mut f = McFilter::new();
        f.add(g);
        p.set_mc_filter(ids[0], f.clone());
        p.set_mc_filter(ids[1], f.clone());
        p.set_mc_filter(ids[3], f);
        let snap = p.snapshot();
        let t = |o, d| snap.flood_targets(o, d).collect::<Vec<_>>();
        assert_eq!(t(None, g), [ids[0], ids[1]]);
        assert_eq!(t(Some(ids[0]), g), [ids[1]]);
        assert_eq!(t(Some(ids[1]), MacAddr::BROADCAST), [ids[0], ids[2]]);
        assert_eq!(t(None, MacAddr([0x01, 0x00, 0x5e, 0, 0, 1])), []);
    }

    #[test]
    fn port_error_messages() {
        let e = PortError::AddrInUse {
            ip: ip("1.1.1.1"),
            owner: SlaveId(1),
        };
        assert_eq!(
            e.to_string(),
            "address 1.1.1.1 already assigned to an ipvlan device (dev_id 0x1)"
        );
    }
}
