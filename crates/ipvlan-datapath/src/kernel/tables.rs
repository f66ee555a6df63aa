//! Keeping each port's nft tables as the daemon applied them.
//!
//! A table deleted or edited from outside (`nft delete table`, a rule added or deleted,
//! a chain flushed, an element removed from a map, `nft flush ruleset`) is put back
//! whole at the next check ([`TABLE_CHECK`]), and the log says so. The check
//! costs one netlink request per namespace while nothing changes: the namespace's
//! nftables generation is compared with the one seen at the last check. Only when it
//! moved are the port's tables listed (`nft -j list table`) and compared with the
//! listing taken after the daemon's own last apply. Listings are compared with
//! listings, never with the script (nft writes rules back in its own normal form),
//! without handles and counter values, in no particular order but for the rules of a
//! chain.
//!
//! That reference listing is taken at the first check after an apply, when the
//! generations show that nothing but the daemon's own applies (each one generation
//! step, each on its own port's tables) was committed since. When something else was
//! committed in between, the tables cannot be vouched for and are applied again; if
//! that changed what the kernel lists, they had been edited, and the log says so.
//! Where the generation cannot be read, every check lists the tables, and the first
//! listing after an apply is taken as the reference.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use ipvlan_core::nftprog::Program;
use ipvlan_sys::{NetNs, nft};
use serde_json::Value;

use super::{At, Datapath};

/// How often the ports' nft tables are checked for.
pub const TABLE_CHECK: Duration = Duration::from_secs(2);

/// A namespace's nftables generation, as the check follows it.
#[derive(Debug)]
pub struct Gen {
    /// `None` if the kernel cannot be asked: every check then lists the tables.
    sock: Option<nft::Generation>,
    /// The generation at the last check.
    checked: Option<u32>,
    /// Generations the daemon's own applies made since then.
    ours: Vec<u32>,
}

/// What the check knows about one port's applied tables.
#[derive(Debug, Default)]
pub(super) struct Listed {
    /// Digest of their listing right after the last apply; `None` until taken.
    digest: Option<u64>,
    /// The generation that apply made.
    generation: Option<u32>,
}

impl Gen {
    pub fn open(ns: &NetNs) -> Self {
        let sock = match ns.run(nft::Generation::open) {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) | Err(e) => {
                tracing::warn!("cannot follow the nftables generation in {}: {e}", ns.key());
                None
            }
        };
        Self {
            sock,
            checked: None,
            ours: Vec::new(),
        }
    }

    pub(super) fn get(&mut self) -> Option<u32> {
        match self.sock.as_mut()?.get() {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::debug!("reading the nftables generation: {e}");
                None
            }
        }
    }

    /// Records an apply of ours, committed when the generation was `before`.
    pub(super) fn applied(&mut self, before: Option<u32>) -> Listed {
        let after = self.get();
        if let (Some(b), Some(a)) = (before, after)
            && a == b.wrapping_add(1)
        {
            self.ours.push(a);
        }
        Listed {
            digest: None,
            generation: after,
        }
    }
}

/// Why a port's tables are applied again.
enum Redo {
    Removed,
    Changed,
    Unvouched,
}

/// Whether every generation after `from` up to `to` is one of ours.
fn only_ours(from: u32, to: u32, ours: &[u32]) -> bool {
    let steps = to.wrapping_sub(from);
    steps as usize <= ours.len() && (1..=steps).all(|i| ours.contains(&from.wrapping_add(i)))
}

/// Drops what changes without anyone changing the table (handles, counter values) and
/// what depends on the order the table was built in (of objects, of set elements);
/// the rules of each chain keep their order.
fn normalize(v: &mut Value) {
    strip(v);
    if let Some(items) = v.get_mut("nftables").and_then(Value::as_array_mut) {
        let mut pos: HashMap<String, usize> = HashMap::new();
        for item in items.iter_mut() {
            if let Some(Value::Object(rule)) = item.get_mut("rule") {
                let chain = rule.get("chain").map(Value::to_string).unwrap_or_default();
                let n = pos.entry(chain).or_default();
                rule.insert("pos".into(), (*n).into());
                *n += 1;
            }
        }
        items.sort_by_cached_key(Value::to_string);
    }
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in ["handle", "packets", "bytes"] {
                m.remove(k);
            }
            for (k, x) in m.iter_mut() {
                strip(x);
                if k == "elem"
                    && let Value::Array(a) = x
                {
                    a.sort_by_cached_key(|e| e.to_string());
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

/// A digest of what the kernel lists for `progs`; `None` if one of them is gone.
fn listing(ns: &NetNs, progs: &[&Program]) -> Result<Option<u64>, String> {
    let mut h = DefaultHasher::new();
    for prog in progs {
        let out = match nft::query(ns, &["-j", "list", "table", prog.family, &prog.table]) {
            Ok(out) => out,
            Err(nft::NftError::Refused(_, msg)) if msg.contains("No such file or directory") => {
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut v: Value = serde_json::from_str(&out).map_err(|e| format!("nft -j: {e}"))?;
        normalize(&mut v);
        v.to_string().hash(&mut h);
    }
    // A listing of a port with many slaves is megabytes of JSON, parsed: give it back.
    ipvlan_sys::mem::trim_heap();
    Ok(Some(h.finish()))
}

/// Puts back the nft tables of `ports` (the ports of the namespace `at` is in) that
/// were removed or changed from outside since they were applied.
pub fn restore_tables(at: &mut At<'_>, ports: &mut [&mut Datapath]) {
    let now = at.generation.get();
    if now.is_some() && now == at.generation.checked {
        return;
    }
    let ours = std::mem::take(&mut at.generation.ours);
    let ns = at.ns;
    // (port, why, the digest before)
    let mut redo = Vec::new();
    let mut unlisted = false;
    for (pi, p) in ports.iter_mut().enumerate() {
        let progs: Vec<&Program> = p.nft.programs();
        if progs.is_empty() {
            continue;
        }
        match listing(ns, &progs) {
            Err(e) => {
                tracing::debug!("listing the tables of {}: {e}", p.master_name);
                unlisted = true;
            }
            Ok(None) => redo.push((pi, Redo::Removed, None)),
            Ok(Some(d)) => match p.nft.listed.digest {
                Some(r) if r == d => {}
                Some(_) => redo.push((pi, Redo::Changed, Some(d))),
                // Without generations to go by, the listing is trusted.
                None => match (p.nft.listed.generation, now) {
                    (Some(a), Some(n)) if !only_ours(a, n, &ours) => {
                        redo.push((pi, Redo::Unvouched, Some(d)));
                    }
                    _ => p.nft.listed.digest = Some(d),
                },
            },
        }
    }
    // Not listed: looked at again at the next check.
    at.generation.checked = if unlisted { None } else { now };
    for (pi, why, before) in redo {
        let master = &ports[pi].master_name;
        match why {
            Redo::Removed => {
                tracing::warn!("the nft table of {master} was removed from outside; restoring it")
            }
            Redo::Changed => {
                tracing::warn!("the nft table of {master} was changed from outside; restoring it")
            }
            Redo::Unvouched => tracing::debug!(
                "the nft tables of {master} changed along with others since they were applied; applying them again"
            ),
        }
        let p = &mut ports[pi];
        p.nft.forget();
        p.reapply(at);
        if let Redo::Unvouched = why {
            let after = listing(at.ns, &p.nft.programs());
            if matches!(after, Ok(Some(d)) if Some(d) != before) {
                tracing::warn!(
                    "the nft table of {} was changed from outside; restored it",
                    p.master_name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_handles_and_order_do_not_count_but_rule_order_does() {
        let a = r#"{"nftables":[{"counter":{"name":"spoof_1","handle":3,"packets":0,"bytes":0}},
            {"set":{"name":"s4","handle":1,"elem":["10.0.0.2","10.0.0.1"]}}]}"#;
        let b = r#"{"nftables":[{"counter":{"name":"spoof_1","handle":9,"packets":7,"bytes":700}},
            {"set":{"name":"s4","handle":1,"elem":["10.0.0.1","10.0.0.2"]}}]}"#;
        let c = r#"{"nftables":[{"counter":{"name":"spoof_1","handle":3,"packets":0,"bytes":0}},
            {"set":{"name":"s4","handle":1,"elem":["10.0.0.1"]}}]}"#;
        let d = r#"{"nftables":[{"set":{"name":"s4","handle":1,"elem":["10.0.0.1","10.0.0.2"]}},
            {"counter":{"name":"spoof_1","handle":3,"packets":0,"bytes":0}}]}"#;
        let r1 =
            r#"{"nftables":[{"rule":{"chain":"c","expr":"a"}},{"rule":{"chain":"c","expr":"b"}}]}"#;
        let r2 =
            r#"{"nftables":[{"rule":{"chain":"c","expr":"b"}},{"rule":{"chain":"c","expr":"a"}}]}"#;
        let norm = |s: &str| {
            let mut v: Value = serde_json::from_str(s).unwrap();
            normalize(&mut v);
            v
        };
        assert_eq!(norm(a), norm(b));
        assert_eq!(norm(a), norm(d));
        assert_ne!(norm(a), norm(c));
        assert_ne!(norm(r1), norm(r2));
    }

    #[test]
    fn only_our_own_generations_vouch_for_a_table() {
        assert!(only_ours(5, 5, &[]));
        assert!(only_ours(5, 7, &[6, 7]));
        assert!(!only_ours(5, 7, &[7]));
        assert!(only_ours(u32::MAX, 0, &[0]));
        assert!(!only_ours(5, 4, &[6]));
    }
}
