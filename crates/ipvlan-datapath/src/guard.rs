//! The user backend's nftables tables in the master's namespace.
//!
//! **The guard** (`netdev`): packet sockets see a frame before the netdev ingress hook,
//! so the switching thread still gets everything; the guard only drops what the
//! master namespace's own stack must never process: every frame arriving on a host end
//! (those are the slaves' transmissions), and, outside L3S, unicast arriving on the
//! master for a slave's address (the kernel driver hands those to the slave only, spec
//! §5.3). Broadcast and multicast still reach the master's stack, as they do with the
//! kernel driver (§5.2).
//!
//! **The L3S table** (`inet`, only in L3S): ingress for slave addresses must cross the
//! master namespace's PREROUTING and INPUT (§6). Unicast for a slave address is marked
//! after PREROUTING's NAT (so a DNAT'd destination counts), a policy-routing rule makes
//! marked packets local, and an INPUT rule (xtables, see [`l3s_queue_rules`]) queues
//! them to the daemon, which delivers them to the slave and lets the master's stack
//! keep a copy that ends unanswered: whatever that stack would send back from a slave
//! address (a TCP reset, an ICMP error, an echo reply) is dropped at OUTPUT unless it
//! carries [`crate::EGRESS_MARK`], the mark of the slaves' own routed egress.
//!
//! One table of each per port, each replaced as one transaction.

use std::fmt::Write;
use std::net::IpAddr;

/// The guard table's name for the master with this ifindex.
pub fn table_name(master_ifindex: u32) -> String {
    format!("ipvlan_rs_{master_ifindex}")
}

/// The L3S table's name for the master with this ifindex.
pub fn l3s_table_name(master_ifindex: u32) -> String {
    format!("ipvlan_rs_l3s_{master_ifindex}")
}

/// The mark L3S gives unicast for the slaves of one port (the low 16 bits are the
/// port's queue number).
pub fn l3s_mark(queue: u16) -> u32 {
    0x1a5b_0000 | u32::from(queue)
}

/// The routing table that makes L3S-marked packets local.
pub const L3S_TABLE: u32 = 0x1a5b;
/// Priority of the policy-routing rule (before `main` at 32766).
pub const L3S_RULE_PREF: u32 = 1_000;

/// `table FAMILY NAME` created (if missing) then deleted: the start of a replacement
/// that works whether or not the table existed.
fn replace_prologue(s: &mut String, family: &str, table: &str) {
    let _ = writeln!(
        s,
        "table {family} {table} {{}}\ndelete table {family} {table}"
    );
}

/// The slaves4/slaves6 sets with these addresses.
fn write_sets(s: &mut String, addrs: impl IntoIterator<Item = IpAddr>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for a in addrs {
        match a {
            IpAddr::V4(a) => v4.push(a.to_string()),
            IpAddr::V6(a) => v6.push(a.to_string()),
        }
    }
    for (name, ty, elems) in [("slaves4", "ipv4_addr", &v4), ("slaves6", "ipv6_addr", &v6)] {
        let _ = write!(s, "  set {name} {{ type {ty};");
        if !elems.is_empty() {
            let _ = write!(s, " elements = {{ {} }};", elems.join(", "));
        }
        let _ = writeln!(s, " }}");
    }
}

/// The nft script that installs (or replaces) the guard table. With `l3s`, unicast
/// for slaves is left to the master's stack, where the L3S table diverts it.
pub fn ruleset<'a>(
    master_ifindex: u32,
    master: &str,
    host_ends: impl IntoIterator<Item = &'a str>,
    addrs: impl IntoIterator<Item = IpAddr>,
    l3s: bool,
) -> String {
    let table = table_name(master_ifindex);
    let ends: Vec<String> = host_ends.into_iter().map(|e| format!("\"{e}\"")).collect();
    let mut s = String::new();
    replace_prologue(&mut s, "netdev", &table);
    let _ = writeln!(s, "table netdev {table} {{");
    write_sets(&mut s, addrs);
    if !l3s {
        let _ = writeln!(
            s,
            "  chain master_in {{\n    type filter hook ingress device \"{master}\" priority -500; policy accept;\n    meta pkttype {{ broadcast, multicast }} accept\n    ip daddr @slaves4 drop\n    arp daddr ip @slaves4 drop\n    ip6 daddr @slaves6 drop\n  }}"
        );
    }
    if !ends.is_empty() {
        let _ = writeln!(
            s,
            "  chain host_ends_in {{\n    type filter hook ingress devices = {{ {} }} priority -500; policy drop;\n  }}",
            ends.join(", ")
        );
    }
    s.push_str("}\n");
    s
}

/// The nft script that installs (or replaces) the L3S table.
pub fn l3s_ruleset(
    master_ifindex: u32,
    master: &str,
    queue: u16,
    addrs: impl IntoIterator<Item = IpAddr>,
) -> String {
    let table = l3s_table_name(master_ifindex);
    let mark = l3s_mark(queue);
    let egress = crate::EGRESS_MARK;
    let mut s = String::new();
    replace_prologue(&mut s, "inet", &table);
    let _ = writeln!(s, "table inet {table} {{");
    write_sets(&mut s, addrs);
    // Priority 10: after dstnat (-100), so a DNAT'd destination is what counts.
    let _ = writeln!(
        s,
        "  chain divert {{\n    type filter hook prerouting priority 10; policy accept;\n    iifname \"{master}\" ip daddr @slaves4 meta mark set {mark:#x}\n    iifname \"{master}\" ip6 daddr @slaves6 meta mark set {mark:#x}\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain silence {{\n    type filter hook output priority 10; policy accept;\n    meta mark != {egress:#x} ip saddr @slaves4 drop\n    meta mark != {egress:#x} ip6 saddr @slaves6 drop\n  }}"
    );
    s.push_str("}\n");
    s
}

/// The nft script that removes a port's tables, if present.
pub fn teardown(master_ifindex: u32) -> String {
    let mut s = String::new();
    replace_prologue(&mut s, "netdev", &table_name(master_ifindex));
    replace_prologue(&mut s, "inet", &l3s_table_name(master_ifindex));
    s
}

/// The xtables rules (iptables and ip6tables arguments, without `-A`/`-D`) that queue
/// L3S-marked packets to the daemon at the end of INPUT. They live in the `security`
/// table, whose INPUT runs after `filter`'s: the master namespace's own filter rules
/// still decide first, as they do before the kernel driver's last-priority hook.
/// (This kernel's nftables has no `queue` statement; xtables' NFQUEUE target is used.)
pub fn l3s_queue_rules(queue: u16) -> Vec<String> {
    vec![
        "-t".into(),
        "security".into(),
        "INPUT".into(),
        "-m".into(),
        "mark".into(),
        "--mark".into(),
        format!("{:#x}", l3s_mark(queue)),
        "-j".into(),
        "NFQUEUE".into(),
        "--queue-num".into(),
        queue.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_lists_addresses_and_host_ends() {
        let s = ruleset(
            3,
            "eth0",
            ["ivh3.1", "ivh3.2"],
            ["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            false,
        );
        assert!(s.contains("elements = { 10.0.0.2 }"));
        assert!(s.contains("elements = { fd00::2 }"));
        assert!(s.contains("devices = { \"ivh3.1\", \"ivh3.2\" }"));
        assert!(s.contains("device \"eth0\""));
        assert!(s.starts_with("table netdev ipvlan_rs_3 {}\ndelete table netdev ipvlan_rs_3\n"));
    }

    #[test]
    fn empty_sets_have_no_elements_clause() {
        let s = ruleset(3, "eth0", [], [], false);
        assert!(!s.contains("elements"));
        assert!(!s.contains("host_ends_in"));
    }

    #[test]
    fn l3s_leaves_slave_unicast_to_the_master_stack() {
        let s = ruleset(3, "eth0", ["ivh3.1"], ["10.0.0.2".parse().unwrap()], true);
        assert!(!s.contains("master_in"));
        let l = l3s_ruleset(3, "eth0", 7, ["10.0.0.2".parse().unwrap()]);
        assert!(l.contains("meta mark set 0x1a5b0007"));
        assert!(l.contains("meta mark != 0x1a5a0002 ip saddr @slaves4 drop"));
        assert!(teardown(3).contains("delete table inet ipvlan_rs_l3s_3"));
        assert!(
            l3s_queue_rules(7)
                .join(" ")
                .contains("--mark 0x1a5b0007 -j NFQUEUE --queue-num 7")
        );
    }
}
