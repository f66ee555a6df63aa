//! The ports, keyed by what identifies them: the master, by its namespace and ifindex.
//!
//! A port's key changes only when its master moves to another namespace
//! ([`PortMap::rekey`]); removing one port leaves the others' keys valid. Ports are
//! listed in the order they were made, so `link show` does not depend on the keys.

use std::collections::BTreeMap;

use ipvlan_sys::NsKey;

/// What identifies a port: its master, by namespace and ifindex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub ns: NsKey,
    pub master_index: u32,
}

/// The ports (records of type `T`) by key, in the order they were made.
#[derive(Debug)]
pub struct PortMap<T> {
    recs: BTreeMap<PortKey, (u64, T)>,
    next: u64,
}

impl<T> Default for PortMap<T> {
    fn default() -> Self {
        Self {
            recs: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<T> PortMap<T> {
    /// Adds the port `key`, listed after every port there is; replaces one of that key.
    pub fn insert(&mut self, key: PortKey, rec: T) {
        self.recs.insert(key, (self.next, rec));
        self.next += 1;
    }

    pub fn remove(&mut self, key: PortKey) -> Option<T> {
        self.recs.remove(&key).map(|(_, r)| r)
    }

    /// The port `old` is `new` from now on (its master moved), in the same place.
    pub fn rekey(&mut self, old: PortKey, new: PortKey) {
        if let Some(r) = self.recs.remove(&old) {
            self.recs.insert(new, r);
        }
    }

    pub fn get(&self, key: PortKey) -> Option<&T> {
        self.recs.get(&key).map(|(_, r)| r)
    }

    pub fn get_mut(&mut self, key: PortKey) -> Option<&mut T> {
        self.recs.get_mut(&key).map(|(_, r)| r)
    }

    pub fn contains(&self, key: PortKey) -> bool {
        self.recs.contains_key(&key)
    }

    /// Every port with its key, in the order they were made.
    pub fn iter(&self) -> impl Iterator<Item = (PortKey, &T)> {
        let mut v: Vec<(u64, PortKey, &T)> =
            self.recs.iter().map(|(&k, (n, r))| (*n, k, r)).collect();
        v.sort_by_key(|&(n, _, _)| n);
        v.into_iter().map(|(_, k, r)| (k, r))
    }

    /// Every port, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = (PortKey, &mut T)> {
        self.recs.iter_mut().map(|(&k, (_, r))| (k, r))
    }

    /// The keys of every port, in the order they were made.
    pub fn keys(&self) -> Vec<PortKey> {
        self.iter().map(|(k, _)| k).collect()
    }

    /// The keys of the ports whose master is in namespace `ns`, in the order made.
    pub fn in_ns(&self, ns: NsKey) -> Vec<PortKey> {
        self.iter().map(|(k, _)| k).filter(|k| k.ns == ns).collect()
    }

    /// Whether some port's master is in namespace `ns`.
    pub fn any_in(&self, ns: NsKey) -> bool {
        self.recs.keys().any(|k| k.ns == ns)
    }
}

impl<T> std::ops::Index<PortKey> for PortMap<T> {
    type Output = T;

    /// The port `key`; callers hold keys of ports that exist.
    fn index(&self, key: PortKey) -> &T {
        self.get(key).expect("a port of this key")
    }
}

impl<T> std::ops::IndexMut<PortKey> for PortMap<T> {
    fn index_mut(&mut self, key: PortKey) -> &mut T {
        self.get_mut(key).expect("a port of this key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: u64, master_index: u32) -> PortKey {
        PortKey {
            ns: NsKey { dev: 4, ino: ns },
            master_index,
        }
    }

    #[test]
    fn removing_a_port_leaves_the_others_where_they_are() {
        let mut m = PortMap::default();
        m.insert(key(1, 2), "a");
        m.insert(key(1, 3), "b");
        m.insert(key(2, 2), "c");
        assert_eq!(m.remove(key(1, 2)), Some("a"));
        assert_eq!(m[key(1, 3)], "b");
        assert_eq!(m[key(2, 2)], "c");
        assert_eq!(m.get(key(1, 2)), None);
        assert_eq!(m.remove(key(1, 2)), None);
    }

    #[test]
    fn listed_in_the_order_made_not_by_key() {
        let mut m = PortMap::default();
        m.insert(key(9, 9), "first");
        m.insert(key(1, 1), "second");
        m.insert(key(5, 5), "third");
        let names: Vec<&str> = m.iter().map(|(_, r)| *r).collect();
        assert_eq!(names, ["first", "second", "third"]);
        assert_eq!(m.keys(), [key(9, 9), key(1, 1), key(5, 5)]);
    }

    #[test]
    fn ports_of_a_namespace() {
        let mut m = PortMap::default();
        m.insert(key(2, 7), ());
        m.insert(key(1, 2), ());
        m.insert(key(2, 3), ());
        assert_eq!(m.in_ns(key(2, 0).ns), [key(2, 7), key(2, 3)]);
        assert!(m.any_in(key(1, 0).ns));
        m.remove(key(1, 2));
        assert!(!m.any_in(key(1, 0).ns));
    }

    #[test]
    fn a_master_that_moves_keeps_its_place() {
        let mut m = PortMap::default();
        m.insert(key(1, 2), "moves");
        m.insert(key(1, 3), "stays");
        m.rekey(key(1, 2), key(3, 8));
        assert!(!m.contains(key(1, 2)));
        assert_eq!(m.keys(), [key(3, 8), key(1, 3)]);
        m[key(3, 8)] = "moved";
        assert_eq!(m.get(key(3, 8)), Some(&"moved"));
    }
}
