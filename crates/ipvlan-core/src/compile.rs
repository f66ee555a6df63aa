//! The port compiled into one nftables `netdev` table: the kernel backend's program.
//!
//! The kernel switches unicast at the netdev ingress hook with `fwd`, keyed by the
//! demux key of spec §3 (IPv4/IPv6 destination, ARP target):
//!
//! * on the master's ingress, unicast for an up slave's address goes to that slave's
//!   host end, which hands it to the slave (spec §5.3); in L3S nothing is diverted there
//!   (the master namespace's PREROUTING and INPUT must see it, §6);
//! * on each host end's ingress (the frames its slave sent), unicast follows the TX
//!   tables of §4.1 and §4.2: to the owning slave unless `private` refuses it or `vepa`
//!   sends everything out, to the wire for another MAC in L2; what is left is dropped,
//!   so the master namespace's own stack never processes a slave's frame.
//!
//! What a kernel program cannot do stays with the user backend, which sees every frame
//! on its packet sockets before this hook: broadcast and multicast fan-out with the
//! per-slave filter (§4.4), L3/L3S egress routed in the master's namespace (§4.2), L3S
//! ingress. Frames a slave sends with a source MAC other than the master's are not
//! switched here (the kernel driver would; a hostile slave forging its MAC gets nowhere).
//!
//! The output is plain text for `nft -f`, created and replaced as one transaction.

use std::fmt::Write;
use std::net::IpAddr;

use crate::{Flags, MacAddr, Mode, PortSnapshot, SlaveId};

/// Priority of every chain: before anything a user would add at the default.
const PRIORITY: i32 = -500;

fn mac(m: &MacAddr) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The name of the counter of frames `private` refused from one slave.
pub fn private_counter(id: SlaveId) -> String {
    format!("private_{}", id.0)
}

/// The name of the counter of frames one slave sent with another source MAC.
pub fn spoof_counter(id: SlaveId) -> String {
    format!("spoof_{}", id.0)
}

/// The nft script that installs (or replaces) `table` for a port whose master is
/// `master` and whose slaves' host ends are `host_ends`.
pub fn ruleset(
    snap: &PortSnapshot,
    table: &str,
    master: &str,
    host_ends: &[(SlaveId, String)],
) -> String {
    let host_of = |id: SlaveId| {
        host_ends
            .iter()
            .find(|(h, _)| *h == id)
            .map(|(_, n)| n.as_str())
    };
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let mut entries: Vec<(IpAddr, SlaveId)> = snap.table.iter().collect();
    entries.sort();
    for (ip, id) in entries {
        let Some(end) = host_of(id) else { continue };
        match ip {
            IpAddr::V4(a) => v4.push((a.to_string(), end)),
            IpAddr::V6(a) => v6.push((a.to_string(), end)),
        }
    }
    let mut s = String::new();
    // Creating then deleting makes the replacement work whether or not it existed.
    let _ = writeln!(s, "table netdev {table} {{}}\ndelete table netdev {table}");
    let _ = writeln!(s, "table netdev {table} {{");
    for (fam, ty, elems) in [("4", "ipv4_addr", &v4), ("6", "ipv6_addr", &v6)] {
        let keys: Vec<&str> = elems.iter().map(|(a, _)| a.as_str()).collect();
        let pairs: Vec<String> = elems
            .iter()
            .map(|(a, e)| format!("{a} : \"{e}\""))
            .collect();
        let _ = write!(s, "  set slaves{fam} {{ type {ty};");
        if !keys.is_empty() {
            let _ = write!(s, " elements = {{ {} }};", keys.join(", "));
        }
        let _ = writeln!(s, " }}");
        let _ = write!(s, "  map fwd{fam} {{ type {ty} : iface_index;");
        if !pairs.is_empty() {
            let _ = write!(s, " elements = {{ {} }};", pairs.join(", "));
        }
        let _ = writeln!(s, " }}");
    }
    let m = mac(&snap.master_mac);
    let chain = |s: &mut String, name: &str, dev: &str, policy: &str, rules: &[String]| {
        let _ = writeln!(
            s,
            "  chain {name} {{\n    type filter hook ingress device \"{dev}\" priority {PRIORITY}; policy {policy};"
        );
        for r in rules {
            let _ = writeln!(s, "    {r}");
        }
        let _ = writeln!(s, "  }}");
    };

    // The master: unicast for a slave goes to it (§5.3), except in L3S (§6).
    let mut rules = vec!["meta pkttype { broadcast, multicast } accept".to_string()];
    if snap.mode != Mode::L3s {
        rules.push("fwd to ip daddr map @fwd4".into());
        rules.push("fwd to ip6 daddr map @fwd6".into());
        rules.push("fwd to arp daddr ip map @fwd4".into());
    }
    chain(&mut s, "from_master", master, "accept", &rules);

    // Each host end: what its slave sent (§4.1, §4.2).
    for (id, end) in host_ends {
        let mut rules = vec![
            "meta pkttype { broadcast, multicast } drop".to_string(),
            format!(
                "ether saddr != {m} counter name \"{}\" drop",
                spoof_counter(*id)
            ),
        ];
        let local = |sel: &str, key: &str, set: &str, map: &str| {
            if snap.flags == Flags::Private {
                format!(
                    "{sel}{key} @{set} counter name \"{}\" drop",
                    private_counter(*id)
                )
            } else {
                format!("{sel}fwd to {key} map @{map}")
            }
        };
        match (snap.mode, snap.flags) {
            (Mode::L2, Flags::Vepa) => rules.push(format!("ether saddr {m} fwd to \"{master}\"")),
            (Mode::L2, _) => {
                let sel = format!("ether saddr {m} ether daddr {m} ");
                rules.push(local(&sel, "ip daddr", "slaves4", "fwd4"));
                rules.push(local(&sel, "ip6 daddr", "slaves6", "fwd6"));
                rules.push(local(&sel, "arp daddr ip", "slaves4", "fwd4"));
                // Same MAC, no owner: the kernel's master-stack delivery; not emulated.
                rules.push(format!("{sel}drop"));
                rules.push(format!("ether saddr {m} fwd to \"{master}\""));
            }
            (_, Flags::Vepa) => {}
            (_, _) => {
                rules.push(local("", "ip daddr", "slaves4", "fwd4"));
                rules.push(local("", "ip6 daddr", "slaves6", "fwd6"));
            }
        }
        chain(&mut s, &format!("from_{}", id.0), end, "drop", &rules);
    }
    for (id, _) in host_ends {
        let _ = writeln!(s, "  counter {} {{ }}", private_counter(*id));
        let _ = writeln!(s, "  counter {} {{ }}", spoof_counter(*id));
    }
    s.push_str("}\n");
    s
}

/// The nft script that removes `table`, if present.
pub fn teardown(table: &str) -> String {
    format!("table netdev {table} {{}}\ndelete table netdev {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Port;

    const M: MacAddr = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn port(mode: Mode, flags: Flags) -> (PortSnapshot, Vec<(SlaveId, String)>) {
        let mut p = Port::new(M);
        p.apply_newlink(Some(mode), Some(flags));
        let a = p.add_slave().unwrap();
        let b = p.add_slave().unwrap();
        p.set_slave_up(a, true);
        p.set_slave_up(b, true);
        p.add_addr(a, "10.0.0.10".parse().unwrap()).unwrap();
        p.add_addr(b, "10.0.0.11".parse().unwrap()).unwrap();
        p.add_addr(b, "fd00::11".parse().unwrap()).unwrap();
        let ends = vec![(a, "ivh2.1".to_string()), (b, "ivh2.2".to_string())];
        (p.snapshot(), ends)
    }

    #[test]
    fn l2_bridge() {
        let (snap, ends) = port(Mode::L2, Flags::Bridge);
        let s = ruleset(&snap, "t", "eth0", &ends);
        assert!(s.contains(
            "map fwd4 { type ipv4_addr : iface_index; elements = { 10.0.0.10 : \"ivh2.1\", 10.0.0.11 : \"ivh2.2\" }; }"
        ));
        assert!(s.contains("elements = { fd00::11 : \"ivh2.2\" }"));
        assert!(s.contains("device \"eth0\""));
        assert!(s.contains("fwd to arp daddr ip map @fwd4"));
        assert!(s.contains(
            "ether saddr 52:54:00:12:34:56 ether daddr 52:54:00:12:34:56 fwd to ip daddr map @fwd4"
        ));
        assert!(s.contains("ether saddr 52:54:00:12:34:56 fwd to \"eth0\""));
        assert_eq!(s.matches("policy drop;").count(), 2);
    }

    #[test]
    fn private_counts_and_drops_instead_of_forwarding() {
        let (snap, ends) = port(Mode::L2, Flags::Private);
        let s = ruleset(&snap, "t", "eth0", &ends);
        assert!(s.contains("ip daddr @slaves4 counter name \"private_1\" drop"));
        assert!(!s.contains("ether daddr 52:54:00:12:34:56 fwd to"));
        assert!(s.contains("counter private_2 { }"));
    }

    #[test]
    fn vepa_sends_everything_out() {
        let (snap, ends) = port(Mode::L2, Flags::Vepa);
        let s = ruleset(&snap, "t", "eth0", &ends);
        let from1 = &s[s.find("chain from_1").unwrap()..];
        let from1 = &from1[..from1.find("  }").unwrap()];
        assert!(from1.contains("ether saddr 52:54:00:12:34:56 fwd to \"eth0\""));
        assert!(!from1.contains("map @fwd4"));
    }

    #[test]
    fn l3_switches_by_key_only_and_l3s_leaves_the_master_alone() {
        let (snap, ends) = port(Mode::L3, Flags::Bridge);
        let s = ruleset(&snap, "t", "eth0", &ends);
        assert!(s.contains("    fwd to ip daddr map @fwd4\n"));
        assert!(!s.contains("fwd to \"eth0\""));
        let (snap, ends) = port(Mode::L3s, Flags::Bridge);
        let s = ruleset(&snap, "t", "eth0", &ends);
        let master = &s[s.find("chain from_master").unwrap()..];
        let master = &master[..master.find("  }").unwrap()];
        assert!(!master.contains("fwd"));
    }

    #[test]
    fn a_down_slave_has_no_entries() {
        let mut p = Port::new(M);
        let a = p.add_slave().unwrap();
        p.add_addr(a, "10.0.0.10".parse().unwrap()).unwrap();
        let s = ruleset(&p.snapshot(), "t", "eth0", &[(a, "ivh2.1".into())]);
        assert!(!s.contains("10.0.0.10"));
    }
}
