//! The per-slave multicast filter (spec §4.4).
//!
//! The kernel keeps a 256-bit hash of the slave's multicast list and may let
//! colliding groups through; this filter is the exact set the spec allows instead.
//! Broadcast is always accepted; the `all` switch (the slave is promiscuous or
//! allmulti) accepts every address. A new filter accepts broadcast only.

use crate::MacAddr;
use core::net::IpAddr;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McFilter {
    all: bool,
    groups: BTreeMap<MacAddr, u32>,
}

impl McFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Promiscuous / allmulti.
    pub fn set_all(&mut self, all: bool) {
        self.all = all;
    }

    pub fn all(&self) -> bool {
        self.all
    }

    /// Joins `mac`; joins are counted, so two adds need two removes.
    pub fn add(&mut self, mac: MacAddr) {
        *self.groups.entry(mac).or_insert(0) += 1;
    }

    /// Leaves `mac` once; returns whether it was joined.
    pub fn remove(&mut self, mac: MacAddr) -> bool {
        match self.groups.get_mut(&mac) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.groups.remove(&mac);
                true
            }
            None => false,
        }
    }

    /// Replaces the group list (each address joined once); `all` is kept.
    pub fn replace(&mut self, macs: impl IntoIterator<Item = MacAddr>) {
        self.groups.clear();
        for mac in macs {
            self.groups.insert(mac, 1);
        }
    }

    /// The joined groups, in address order.
    pub fn groups(&self) -> impl Iterator<Item = MacAddr> + '_ {
        self.groups.keys().copied()
    }

    pub fn accepts(&self, mac: &MacAddr) -> bool {
        self.all || mac.is_broadcast() || self.groups.contains_key(mac)
    }
}

/// The Ethernet group address an IP multicast address maps to: `01:00:5e` plus the
/// low 23 bits for IPv4, `33:33` plus the low 32 bits for IPv6. `None` for
/// addresses that are not multicast.
pub fn ip_multicast_mac(ip: IpAddr) -> Option<MacAddr> {
    match ip {
        IpAddr::V4(v4) if v4.is_multicast() => {
            let o = v4.octets();
            Some(MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]))
        }
        IpAddr::V6(v6) if v6.is_multicast() => {
            let o = v6.octets();
            Some(MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G1: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0x09, 0x0a, 0x01]);
    const G2: MacAddr = MacAddr([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]);

    #[test]
    fn new_accepts_broadcast_only() {
        let f = McFilter::new();
        assert!(f.accepts(&MacAddr::BROADCAST));
        assert!(!f.accepts(&G1));
        assert!(!f.all());
        assert_eq!(f.groups().count(), 0);
    }

    #[test]
    fn exact_membership() {
        let mut f = McFilter::new();
        f.add(G1);
        assert!(f.accepts(&G1));
        assert!(!f.accepts(&G2));
        let mut near = G1;
        near.0[5] ^= 0x80;
        assert!(!f.accepts(&near));
    }

    #[test]
    fn add_is_counted() {
        let mut f = McFilter::new();
        f.add(G1);
        f.add(G1);
        assert!(f.remove(G1));
        assert!(f.accepts(&G1));
        assert!(f.remove(G1));
        assert!(!f.accepts(&G1));
        assert!(!f.remove(G1));
    }

    #[test]
    fn all_switch() {
        let mut f = McFilter::new();
        f.set_all(true);
        assert!(f.accepts(&G1) && f.accepts(&G2));
        f.set_all(false);
        assert!(!f.accepts(&G1));
    }

    #[test]
    fn replace_keeps_all_and_resets_counts() {
        let mut f = McFilter::new();
        f.add(G1);
        f.add(G1);
        f.set_all(true);
        f.replace([G2, G2]);
        assert!(f.all());
        assert_eq!(f.groups().collect::<Vec<_>>(), vec![G2]);
        f.set_all(false);
        assert!(!f.accepts(&G1));
        assert!(f.remove(G2));
        assert!(!f.accepts(&G2));
    }

    #[test]
    fn multicast_macs() {
        let v4 = |s: &str| ip_multicast_mac(s.parse().unwrap());
        assert_eq!(
            v4("224.0.0.1"),
            Some(MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]))
        );
        assert_eq!(
            v4("224.9.10.1"),
            Some(MacAddr([0x01, 0x00, 0x5e, 0x09, 0x0a, 0x01]))
        );
        // the 24th bit is dropped
        assert_eq!(
            v4("239.255.1.2"),
            Some(MacAddr([0x01, 0x00, 0x5e, 0x7f, 0x01, 0x02]))
        );
        assert_eq!(
            v4("ff02::1"),
            Some(MacAddr([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]))
        );
        assert_eq!(
            v4("ff02::1:ff12:3456"),
            Some(MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56]))
        );
        assert_eq!(
            v4("ff0e:1234::5"),
            Some(MacAddr([0x33, 0x33, 0x00, 0x00, 0x00, 0x05]))
        );
        assert_eq!(v4("10.0.0.1"), None);
        assert_eq!(v4("255.255.255.255"), None);
        assert_eq!(v4("fe80::1"), None);
    }
}
