//! nftables programs as data: rendered whole, or as the commands that turn the last
//! applied program into the next one.
//!
//! Rewriting a whole table for every address or slave makes each change cost as much
//! as the table is large; the update touches only what changed: set and map elements,
//! and the per-slave parts (a chain on one host end, its counters). A change of the
//! skeleton (mode, flags, master) replaces the table. Either script is one `nft -f`
//! transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// A table: its skeleton, its elements, its per-slave parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// `netdev`, `inet`, ...
    pub family: &'static str,
    pub table: String,
    /// Commands (without the leading `add`) that declare what is neither an element nor
    /// a part: sets, maps, fixed chains and their rules, in order.
    pub skeleton: Vec<String>,
    /// Set or map name → its elements (`10.0.0.1`, or `10.0.0.1 : "ivh2.1"` in a map).
    pub elements: BTreeMap<String, BTreeSet<String>>,
    /// Part name → the part (one per slave).
    pub parts: BTreeMap<String, Part>,
}

/// A base chain with its rules and the named counters they use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Part {
    pub counters: Vec<String>,
    pub chain: String,
    /// The chain's declaration: `{ type filter hook ingress device "x" ...; }`.
    pub decl: String,
    pub rules: Vec<String>,
    /// A regular chain the base chain jumps to, with its rules: added before the base
    /// chain, deleted after it.
    pub sub: Option<(String, Vec<String>)>,
}

impl Program {
    pub fn new(family: &'static str, table: impl Into<String>) -> Self {
        Self {
            family,
            table: table.into(),
            ..Default::default()
        }
    }

    /// Whether `self` differs from `old` in its elements alone.
    pub fn only_elements_differ_from(&self, old: &Program) -> bool {
        self.skeleton == old.skeleton && self.parts == old.parts
    }

    /// Whether `self` differs from `old` only in whole parts added or removed, and in
    /// elements removed: slaves came or went (and took their addresses with them).
    pub fn only_parts_come_or_go_from(&self, old: &Program) -> bool {
        self.skeleton == old.skeleton
            && self.parts.keys().ne(old.parts.keys())
            && old
                .parts
                .iter()
                .all(|(k, v)| self.parts.get(k).is_none_or(|n| n == v))
            && self.elements_within(old)
    }

    /// Whether `self` only takes away from `old`: parts and elements, nothing added or
    /// changed.
    pub fn only_removes_from(&self, old: &Program) -> bool {
        self.skeleton == old.skeleton
            && self.parts.iter().all(|(k, v)| old.parts.get(k) == Some(v))
            && self.elements_within(old)
    }

    /// Every element of `self` is in `old`, set by set.
    fn elements_within(&self, old: &Program) -> bool {
        self.elements
            .iter()
            .all(|(set, e)| old.elements.get(set).is_some_and(|o| e.is_subset(o)))
    }

    fn prefix(&self) -> String {
        format!("{} {}", self.family, self.table)
    }

    /// Declares a set or map with no elements yet: `declare("set", "slaves4",
    /// "{ type ipv4_addr; }")`.
    pub fn declare(&mut self, kind: &str, name: &str, decl: &str) {
        self.elements.entry(name.to_string()).or_default();
        let line = format!("{kind} {} {name} {decl}", self.prefix());
        self.skeleton.push(line);
    }

    /// Adds a fixed chain to the skeleton.
    pub fn chain(&mut self, name: &str, decl: &str) {
        let line = format!("chain {} {name} {decl}", self.prefix());
        self.skeleton.push(line);
    }

    /// Adds a rule to a fixed chain.
    pub fn rule(&mut self, chain: &str, rule: &str) {
        let line = format!("rule {} {chain} {rule}", self.prefix());
        self.skeleton.push(line);
    }

    fn add_part(&self, s: &mut String, p: &Part) {
        let t = self.prefix();
        for c in &p.counters {
            let _ = writeln!(s, "add counter {t} {c}");
        }
        if let Some((name, rules)) = &p.sub {
            let _ = writeln!(s, "add chain {t} {name}");
            for r in rules {
                let _ = writeln!(s, "add rule {t} {name} {r}");
            }
        }
        let _ = writeln!(s, "add chain {t} {} {}", p.chain, p.decl);
        for r in &p.rules {
            let _ = writeln!(s, "add rule {t} {} {r}", p.chain);
        }
    }

    fn remove_part(&self, s: &mut String, p: &Part) {
        let t = self.prefix();
        let _ = writeln!(s, "flush chain {t} {}", p.chain);
        let _ = writeln!(s, "delete chain {t} {}", p.chain);
        if let Some((name, _)) = &p.sub {
            let _ = writeln!(s, "flush chain {t} {name}");
            let _ = writeln!(s, "delete chain {t} {name}");
        }
        for c in &p.counters {
            let _ = writeln!(s, "delete counter {t} {c}");
        }
    }

    fn elements_cmd(&self, s: &mut String, verb: &str, set: &str, elems: &[&str]) {
        if !elems.is_empty() {
            let _ = writeln!(
                s,
                "{verb} element {} {set} {{ {} }}",
                self.prefix(),
                elems.join(", ")
            );
        }
    }

    /// The script that creates the table from nothing (replacing any old one).
    pub fn full(&self) -> String {
        let t = self.prefix();
        let mut s = format!("table {t} {{}}\ndelete table {t}\nadd table {t}\n");
        for line in &self.skeleton {
            let _ = writeln!(s, "add {line}");
        }
        for p in self.parts.values() {
            self.add_part(&mut s, p);
        }
        for (set, elems) in &self.elements {
            let v: Vec<&str> = elems.iter().map(String::as_str).collect();
            self.elements_cmd(&mut s, "add", set, &v);
        }
        s
    }

    /// The script that turns `old` (applied last) into `self`: `None` if there is
    /// nothing to do, the whole table if the skeleton changed.
    pub fn update_from(&self, old: Option<&Program>) -> Option<String> {
        let Some(old) = old.filter(|o| {
            o.family == self.family && o.table == self.table && o.skeleton == self.skeleton
        }) else {
            return Some(self.full());
        };
        if old == self {
            return None;
        }
        let mut s = String::new();
        let empty = BTreeSet::new();
        let key = |e: &str| e.split(" : ").next().unwrap_or(e).to_string();
        for (set, new) in &self.elements {
            let was = old.elements.get(set).unwrap_or(&empty);
            let gone: Vec<String> = was.difference(new).map(|e| key(e)).collect();
            let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
            self.elements_cmd(&mut s, "delete", set, &gone);
        }
        for (name, p) in &old.parts {
            if self.parts.get(name) != Some(p) {
                self.remove_part(&mut s, p);
            }
        }
        for (name, p) in &self.parts {
            if old.parts.get(name) != Some(p) {
                self.add_part(&mut s, p);
            }
        }
        for (set, new) in &self.elements {
            let was = old.elements.get(set).unwrap_or(&empty);
            let added: Vec<&str> = new.difference(was).map(String::as_str).collect();
            self.elements_cmd(&mut s, "add", set, &added);
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(elems: &[&str], parts: &[&str]) -> Program {
        let mut p = Program::new("netdev", "t");
        p.declare("map", "fwd4", "{ type ipv4_addr : iface_index; }");
        p.chain(
            "m",
            "{ type filter hook ingress device \"eth0\" priority -500; }",
        );
        for e in elems {
            p.elements.get_mut("fwd4").unwrap().insert((*e).into());
        }
        for name in parts {
            p.parts.insert(
                (*name).into(),
                Part {
                    counters: vec![format!("c_{name}")],
                    chain: format!("from_{name}"),
                    decl: format!("{{ type filter hook ingress device \"{name}\" priority -500; policy drop; }}"),
                    rules: vec!["meta pkttype broadcast drop".into()],
                    sub: None,
                },
            );
        }
        p
    }

    #[test]
    fn what_kind_of_change_it_is() {
        let old = prog(&["10.0.0.1 : \"a\"", "10.0.0.2 : \"b\""], &["a", "b"]);
        let addr = prog(&["10.0.0.1 : \"a\""], &["a", "b"]);
        let gone = prog(&["10.0.0.1 : \"a\""], &["a"]);
        let came = prog(&["10.0.0.1 : \"a\"", "10.0.0.2 : \"b\""], &["a", "b", "c"]);
        let moved = prog(&["10.0.0.1 : \"b\""], &["a", "b"]);
        assert!(addr.only_elements_differ_from(&old));
        assert!(!gone.only_elements_differ_from(&old));
        assert!(gone.only_parts_come_or_go_from(&old));
        assert!(came.only_parts_come_or_go_from(&old));
        assert!(!addr.only_parts_come_or_go_from(&old));
        assert!(gone.only_removes_from(&old) && addr.only_removes_from(&old));
        assert!(!came.only_removes_from(&old));
        assert!(!moved.only_removes_from(&old));
        assert!(!old.only_removes_from(&gone));
    }

    #[test]
    fn full_declares_before_use() {
        let s = prog(&["10.0.0.1 : \"a\""], &["a"]).full();
        let set = s.find("add map netdev t fwd4").unwrap();
        let counter = s.find("add counter netdev t c_a").unwrap();
        let rule = s.find("add rule netdev t from_a").unwrap();
        let elem = s
            .find("add element netdev t fwd4 { 10.0.0.1 : \"a\" }")
            .unwrap();
        assert!(set < counter && counter < rule && rule < elem);
        assert!(s.starts_with("table netdev t {}\ndelete table netdev t\nadd table netdev t\n"));
    }

    #[test]
    fn update_touches_only_what_changed() {
        let old = prog(&["10.0.0.1 : \"a\"", "10.0.0.2 : \"b\""], &["a", "b"]);
        let new = prog(&["10.0.0.1 : \"a\"", "10.0.0.3 : \"c\""], &["a", "c"]);
        let s = new.update_from(Some(&old)).unwrap();
        assert_eq!(
            s,
            "delete element netdev t fwd4 { 10.0.0.2 }\n\
             flush chain netdev t from_b\ndelete chain netdev t from_b\ndelete counter netdev t c_b\n\
             add counter netdev t c_c\nadd chain netdev t from_c { type filter hook ingress device \"c\" priority -500; policy drop; }\n\
             add rule netdev t from_c meta pkttype broadcast drop\n\
             add element netdev t fwd4 { 10.0.0.3 : \"c\" }\n"
        );
        assert_eq!(new.update_from(Some(&new)), None);
    }

    #[test]
    fn a_new_skeleton_replaces_the_table() {
        let old = prog(&[], &["a"]);
        let mut new = old.clone();
        new.declare("set", "other", "{ type ipv4_addr; }");
        assert_eq!(new.update_from(Some(&old)), Some(new.full()));
        assert_eq!(new.update_from(None), Some(new.full()));
    }

    #[test]
    fn a_changed_map_value_is_deleted_then_added() {
        let old = prog(&["10.0.0.1 : \"a\""], &["a", "b"]);
        let new = prog(&["10.0.0.1 : \"b\""], &["a", "b"]);
        let s = new.update_from(Some(&old)).unwrap();
        assert_eq!(
            s,
            "delete element netdev t fwd4 { 10.0.0.1 }\nadd element netdev t fwd4 { 10.0.0.1 : \"b\" }\n"
        );
    }
}
