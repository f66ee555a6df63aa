//! The port's address table: IP address → owning slave, exact match (spec §2, §3).
//!
//! Only addresses of slaves that are up are in it; [`crate::Port`] keeps it so.
//! Lookups are hash lookups and allocate nothing.

use super::SlaveId;
use core::net::IpAddr;
use std::collections::HashMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrTable {
    map: HashMap<IpAddr, SlaveId>,
}

impl AddrTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn owner(&self, ip: &IpAddr) -> Option<SlaveId> {
        self.map.get(ip).copied()
    }

    /// Maps `ip` to `id`, returning the previous owner.
    pub fn insert(&mut self, ip: IpAddr, id: SlaveId) -> Option<SlaveId> {
        self.map.insert(ip, id)
    }

    pub fn remove(&mut self, ip: &IpAddr) -> Option<SlaveId> {
        self.map.remove(ip)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, SlaveId)> + '_ {
        self.map.iter().map(|(ip, id)| (*ip, *id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_per_family() {
        let mut t = AddrTable::new();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(t.insert(v4, SlaveId(1)), None);
        assert_eq!(t.owner(&v4), Some(SlaveId(1)));
        assert_eq!(t.owner(&mapped), None);
        assert_eq!(t.owner(&"10.0.0.2".parse().unwrap()), None);
        assert_eq!(t.insert(v4, SlaveId(2)), Some(SlaveId(1)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![(v4, SlaveId(2))]);
        assert_eq!(t.remove(&v4), Some(SlaveId(2)));
        assert!(t.is_empty());
    }
}
