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

use std::net::IpAddr;

use ipvlan_core::nftprog::{Part, Program};
use ipvlan_core::{Mode, PortSnapshot, SlaveId, compile};

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

/// The slaves' addresses as elements of `slaves4`/`slaves6`.
fn add_addrs(prog: &mut Program, addrs: impl IntoIterator<Item = IpAddr>) {
    prog.declare("set", "slaves4", "{ type ipv4_addr; }");
    prog.declare("set", "slaves6", "{ type ipv6_addr; }");
    for a in addrs {
        let set = if a.is_ipv4() { "slaves4" } else { "slaves6" };
        prog.elements
            .entry(set.into())
            .or_default()
            .insert(a.to_string());
    }
}

/// The guard table. With `l3s`, unicast for slaves is left to the master's stack,
/// where the L3S table diverts it.
pub fn program(
    master_ifindex: u32,
    master: &str,
    host_ends: &[(SlaveId, String)],
    addrs: impl IntoIterator<Item = IpAddr>,
    l3s: bool,
) -> Program {
    let mut prog = Program::new("netdev", table_name(master_ifindex));
    add_addrs(&mut prog, addrs);
    if !l3s {
        prog.chain(
            "master_in",
            &format!(
                "{{ type filter hook ingress device \"{master}\" priority -500; policy accept; }}"
            ),
        );
        for r in [
            "meta pkttype { broadcast, multicast } accept",
            "ip daddr @slaves4 drop",
            "arp daddr ip @slaves4 drop",
            "ip6 daddr @slaves6 drop",
        ] {
            prog.rule("master_in", r);
        }
    }
    for (id, end) in host_ends {
        prog.parts.insert(
            format!("{:05}", id.0),
            Part {
                counters: vec![],
                chain: format!("from_{}", id.0),
                decl: format!(
                    "{{ type filter hook ingress device \"{end}\" priority -500; policy drop; }}"
                ),
                rules: vec![],
                sub: None,
            },
        );
    }
    prog
}

/// Host access ([`PortSnapshot::host_access`]) in the guard: the host ends' chains let
/// the master namespace's stack have what the kernel backend's program lets it have
/// ([`compile::host_access_rules`]), behind the same spoof check and source guard. L2
/// only: in L3 and L3S the switching thread routes what a slave sends to the master's
/// namespace, as all routed egress, and the stack's answers reach the slave directly.
pub fn add_host_access(prog: &mut Program, snap: &PortSnapshot, host_ends: &[(SlaveId, String)]) {
    let host = compile::host_access_rules(snap);
    if snap.mode != Mode::L2 || host == compile::HostAccessRules::default() {
        return;
    }
    if snap.source_guard {
        compile::own_sets(prog, snap, host_ends);
    }
    let m = snap.master_mac;
    for (id, _) in host_ends {
        let Some(part) = prog.parts.get_mut(&format!("{:05}", id.0)) else {
            continue;
        };
        let mut rules = host.first.clone();
        rules.push(format!("ether saddr != {m} drop"));
        if snap.source_guard {
            let (jump, (chain, mut sub)) = compile::guard_jump(*id);
            // The switching thread counts what the guard drops.
            if let Some(last) = sub.last_mut() {
                *last = "drop".to_string();
            }
            rules.push(jump);
            part.sub = Some((chain, sub));
        }
        rules.extend(host.local.iter().cloned());
        rules.extend(host.arp.iter().cloned());
        part.rules = rules;
    }
}

/// The L3S table.
pub fn l3s_program(
    master_ifindex: u32,
    master: &str,
    queue: u16,
    addrs: impl IntoIterator<Item = IpAddr>,
) -> Program {
    let mut prog = Program::new("inet", l3s_table_name(master_ifindex));
    add_addrs(&mut prog, addrs);
    let mark = l3s_mark(queue);
    let egress = crate::EGRESS_MARK;
    // Priority 10: after dstnat (-100), so a DNAT'd destination is what counts.
    prog.chain(
        "divert",
        "{ type filter hook prerouting priority 10; policy accept; }",
    );
    prog.rule(
        "divert",
        &format!("iifname \"{master}\" ip daddr @slaves4 meta mark set {mark:#x}"),
    );
    prog.rule(
        "divert",
        &format!("iifname \"{master}\" ip6 daddr @slaves6 meta mark set {mark:#x}"),
    );
    prog.chain(
        "silence",
        "{ type filter hook output priority 10; policy accept; }",
    );
    prog.rule(
        "silence",
        &format!("meta mark != {egress:#x} ip saddr @slaves4 drop"),
    );
    prog.rule(
        "silence",
        &format!("meta mark != {egress:#x} ip6 saddr @slaves6 drop"),
    );
    prog
}

/// The nft script that removes a port's tables, if present.
pub fn teardown(master_ifindex: u32) -> String {
    let mut s = String::new();
    for (family, table) in [
        ("netdev", table_name(master_ifindex)),
        ("inet", l3s_table_name(master_ifindex)),
    ] {
        s += &format!("table {family} {table} {{}}\ndelete table {family} {table}\n");
    }
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

    fn ends() -> Vec<(SlaveId, String)> {
        vec![(SlaveId(1), "ivh3.1".into()), (SlaveId(2), "ivh3.2".into())]
    }

    #[test]
    fn guard_lists_addresses_and_closes_host_ends() {
        let s = program(
            3,
            "eth0",
            &ends(),
            ["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            false,
        )
        .full();
        assert!(s.contains("add element netdev ipvlan_rs_3 slaves4 { 10.0.0.2 }"));
        assert!(s.contains("add element netdev ipvlan_rs_3 slaves6 { fd00::2 }"));
        assert!(s.contains("device \"ivh3.1\" priority -500; policy drop;"));
        assert!(s.contains("add rule netdev ipvlan_rs_3 master_in ip daddr @slaves4 drop"));
    }

    #[test]
    fn l3s_leaves_slave_unicast_to_the_master_stack() {
        let s = program(3, "eth0", &ends(), ["10.0.0.2".parse().unwrap()], true).full();
        assert!(!s.contains("master_in"));
        let l = l3s_program(3, "eth0", 7, ["10.0.0.2".parse().unwrap()]).full();
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
