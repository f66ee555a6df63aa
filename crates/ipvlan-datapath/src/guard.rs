//! The user backend's guard: an nftables `netdev` table that keeps the master
//! namespace's own stack away from slave traffic.
//!
//! Packet sockets see a frame before the netdev ingress hook, so the switching thread
//! still gets everything; the guard only drops what the master's stack must never
//! process: every frame arriving on a host end (those are the slaves' transmissions),
//! and unicast arriving on the master for a slave's address (the kernel driver hands
//! those to the slave only, spec §5.3). Broadcast and multicast still reach the master's
//! stack, as they do with the kernel driver (§5.2). One table per port, replaced as one
//! transaction.

use std::fmt::Write;
use std::net::IpAddr;

/// The table's name for the master with this ifindex.
pub fn table_name(master_ifindex: u32) -> String {
    format!("ipvlan_rs_{master_ifindex}")
}

/// The nft script that installs (or replaces) the guard table.
pub fn ruleset<'a>(
    master_ifindex: u32,
    master: &str,
    host_ends: impl IntoIterator<Item = &'a str>,
    addrs: impl IntoIterator<Item = IpAddr>,
) -> String {
    let table = table_name(master_ifindex);
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for a in addrs {
        match a {
            IpAddr::V4(a) => v4.push(a.to_string()),
            IpAddr::V6(a) => v6.push(a.to_string()),
        }
    }
    let ends: Vec<String> = host_ends.into_iter().map(|e| format!("\"{e}\"")).collect();
    let mut s = String::new();
    // Creating then deleting makes the replacement work whether or not it existed.
    let _ = writeln!(s, "table netdev {table} {{}}\ndelete table netdev {table}");
    let _ = writeln!(s, "table netdev {table} {{");
    for (name, ty, elems) in [("slaves4", "ipv4_addr", &v4), ("slaves6", "ipv6_addr", &v6)] {
        let _ = write!(s, "  set {name} {{ type {ty};");
        if !elems.is_empty() {
            let _ = write!(s, " elements = {{ {} }};", elems.join(", "));
        }
        let _ = writeln!(s, " }}");
    }
    let _ = writeln!(
        s,
        "  chain master_in {{\n    type filter hook ingress device \"{master}\" priority -500; policy accept;\n    meta pkttype {{ broadcast, multicast }} accept\n    ip daddr @slaves4 drop\n    arp daddr ip @slaves4 drop\n    ip6 daddr @slaves6 drop\n  }}"
    );
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

/// The nft script that removes the guard table, if present.
pub fn teardown(master_ifindex: u32) -> String {
    let table = table_name(master_ifindex);
    format!("table netdev {table} {{}}\ndelete table netdev {table}\n")
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
        );
        assert!(s.contains("elements = { 10.0.0.2 }"));
        assert!(s.contains("elements = { fd00::2 }"));
        assert!(s.contains("devices = { \"ivh3.1\", \"ivh3.2\" }"));
        assert!(s.contains("device \"eth0\""));
        assert!(s.starts_with("table netdev ipvlan_rs_3 {}\ndelete table netdev ipvlan_rs_3\n"));
    }

    #[test]
    fn empty_sets_have_no_elements_clause() {
        let s = ruleset(3, "eth0", [], []);
        assert!(!s.contains("elements"));
        assert!(!s.contains("host_ends_in"));
    }
}
