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
//!   so the master namespace's own stack never processes a slave's frame, except L3S
//!   egress the fast path hands to it (`PACKET_HOST`, see [`crate::fastpath`]).
//!
//! What a kernel program cannot do stays with the user backend, which sees every frame
//! on its packet sockets before this hook: broadcast and multicast fan-out with the
//! per-slave filter (§4.4), L3/L3S egress routed in the master's namespace (§4.2), L3S
//! ingress. Frames a slave sends with a source MAC other than the master's are counted
//! and dropped here as [`decide`](crate::decide()) drops them ([`DropReason::Spoof`]).
//!
//! Every drop the program counts goes to a counter named by [`drop_counter`]: the
//! reason's own name, which the daemon reads back with [`parse_drop_counter`].
//!
//! The output is a [`Program`]: applied whole, or as an update from the last one.

use crate::nftprog::{Part, Program};
use crate::{DropReason, Flags, Mode, PortSnapshot, SlaveId};

/// Priority of every chain: before anything a user would add at the default.
const PRIORITY: i32 = -500;

/// Only an IPv4 header that passes the checks of spec §3 (version, IHL, total length)
/// is keyed: `meta l4proto` is set once netfilter's own IPv4 validation passed, which
/// is the same check.
const V4_OK: &str = "meta l4proto 0-255 ";
/// IPv6: the version field (§3). Rules that go on to read the destination need the
/// whole fixed header anyway.
const V6_OK: &str = "ip6 version 6 ";
/// IPv6 with the whole 40-byte fixed header present (§3), for rules that read only
/// the source: the last byte of the header must be there to be read.
const V6_WHOLE: &str = "ip6 version 6 @nh,312,8 0-255 ";

/// The name of the counter of frames of one slave the program dropped for `why`
/// (`private_3`, `spoof_3`, `source_guard_3`): the reason's own name, and the
/// slave's dev_id.
pub fn drop_counter(why: DropReason, id: SlaveId) -> String {
    format!("{why}_{}", id.0)
}

/// The reason and the slave a counter of [`drop_counter`]'s is named for.
pub fn parse_drop_counter(name: &str) -> Option<(DropReason, SlaveId)> {
    let (why, id) = name.rsplit_once('_')?;
    Some((why.parse().ok()?, SlaveId(id.parse().ok()?)))
}

/// The name of the source guard's chain for one slave.
fn guard_chain(id: SlaveId) -> String {
    format!("guard_{}", id.0)
}

/// The source guard's chain for one slave: what [`crate::guard_allows`] lets through
/// returns to the slave's chain, the rest is counted and dropped. `iif` is the host
/// end, so one pair of sets (`own4`, `own6`: host end . address) serves every slave.
/// `ether type` reads a VLAN tag the stack carries beside the frame too, so tagged
/// frames match none of the returns.
fn guard_rules(id: SlaveId) -> Vec<String> {
    vec![
        "ether type arp arp saddr ip 0.0.0.0 return".into(),
        "ether type arp meta iif . arp saddr ip @own4 return".into(),
        format!("ether type ip {V4_OK}ip saddr 0.0.0.0 udp dport 67 return"),
        format!("ether type ip {V4_OK}meta iif . ip saddr @own4 return"),
        format!("ether type ip6 {V6_WHOLE}ip6 saddr :: ip6 nexthdr ipv6-icmp return"),
        format!("ether type ip6 {V6_WHOLE}meta iif . ip6 saddr @own6 return"),
        format!(
            "counter name \"{}\" drop",
            drop_counter(DropReason::SourceGuard, id)
        ),
    ]
}

/// The source guard's sets `own4` and `own6` (host end . address) of `prog`, filled.
pub fn own_sets(prog: &mut Program, snap: &PortSnapshot, host_ends: &[(SlaveId, String)]) {
    for (fam, ty) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
        prog.declare(
            "set",
            &format!("own{fam}"),
            &format!("{{ type iface_index . {ty}; }}"),
        );
    }
    for (ip, id) in snap.table.iter() {
        let Some((_, end)) = host_ends.iter().find(|(h, _)| *h == id) else {
            continue;
        };
        let fam = if ip.is_ipv4() { "4" } else { "6" };
        prog.elements
            .entry(format!("own{fam}"))
            .or_default()
            .insert(format!("\"{end}\" . {ip}"));
    }
}

/// The source guard's jump, and its chain with its rules, for one slave's host-end chain.
pub fn guard_jump(id: SlaveId) -> (String, (String, Vec<String>)) {
    (
        format!("jump {}", guard_chain(id)),
        (guard_chain(id), guard_rules(id)),
    )
}

/// What host access ([`PortSnapshot::host_access`]) adds to a host end's chain, where
/// every frame is dropped unless a rule takes it: the master namespace's stack
/// receives the frame on the host end (which then carries the master's MAC, so the
/// frame is `PACKET_HOST` there) and answers on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAccessRules {
    /// First of all (before the group frames are dropped), L2 only: the slave's
    /// broadcast ARP requests and multicast neighbour solicitations (unicast ones go
    /// as any unicast), which the stack answers for its own
    /// addresses (their fan-out stays userspace's). With the source guard, only from
    /// the slave's own addresses.
    pub first: Vec<String>,
    /// After the spoof check and the source guard: unicast for an address of the
    /// master's namespace (L2's [`Decision::ToMasterStack`](crate::Decision), what
    /// L3's [`Decision::Route`](crate::Decision) delivers locally).
    pub local: Vec<String>,
    /// L2, after the forwarding to slaves: unicast ARP requests (a neighbour's
    /// refresh), which the stack answers only for its own addresses.
    pub arp: Vec<String>,
}

/// [`HostAccessRules`] for `snap`'s host ends: none with host access off; in L3S the
/// daemon routes what a slave sends to the master's namespace (as it routes all L3S
/// egress), and in L2 `vepa` everything goes out to the wire (§4.1).
pub fn host_access_rules(snap: &PortSnapshot) -> HostAccessRules {
    let m = snap.master_mac;
    let l2 = snap.mode == Mode::L2 && snap.flags != Flags::Vepa;
    if !snap.host_access || !(l2 || snap.mode == Mode::L3) {
        return HostAccessRules::default();
    }
    let local = vec![format!("ether daddr {m} fib daddr type local accept")];
    if !l2 {
        return HostAccessRules {
            local,
            ..Default::default()
        };
    }
    let (own4, own6) = if snap.source_guard {
        (
            "meta iif . arp saddr ip @own4 ",
            "meta iif . ip6 saddr @own6 ",
        )
    } else {
        ("", "")
    };
    HostAccessRules {
        first: vec![
            format!("meta pkttype broadcast ether saddr {m} arp operation request {own4}accept"),
            format!(
                "meta pkttype multicast ether saddr {m} icmpv6 type nd-neighbor-solicit {own6}accept"
            ),
        ],
        local,
        arp: vec![format!(
            "ether saddr {m} ether daddr {m} arp operation request accept"
        )],
    }
}

/// The program for `table` for a port whose master is `master` and whose slaves'
/// host ends are `host_ends`.
pub fn program(
    snap: &PortSnapshot,
    table: &str,
    master: &str,
    host_ends: &[(SlaveId, String)],
) -> Program {
    let mut prog = Program::new("netdev", table);
    for (fam, ty) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
        prog.declare("set", &format!("slaves{fam}"), &format!("{{ type {ty}; }}"));
        prog.declare(
            "map",
            &format!("fwd{fam}"),
            &format!("{{ type {ty} : iface_index; }}"),
        );
    }
    let host_of = |id: SlaveId| {
        host_ends
            .iter()
            .find(|(h, _)| *h == id)
            .map(|(_, n)| n.as_str())
    };
    if snap.source_guard {
        own_sets(&mut prog, snap, host_ends);
    }
    for (ip, id) in snap.table.iter() {
        let Some(end) = host_of(id) else { continue };
        let fam = if ip.is_ipv4() { "4" } else { "6" };
        let el = &mut prog.elements;
        el.entry(format!("slaves{fam}"))
            .or_default()
            .insert(ip.to_string());
        el.entry(format!("fwd{fam}"))
            .or_default()
            .insert(format!("{ip} : \"{end}\""));
    }
    let m = snap.master_mac.to_string();
    let hook = |dev: &str, policy: &str| {
        format!(
            "{{ type filter hook ingress device \"{dev}\" priority {PRIORITY}; policy {policy}; }}"
        )
    };

    // The master: unicast for a slave goes to it (§5.3), except in L3S (§6).
    prog.chain("from_master", &hook(master, "accept"));
    let mut rules = vec!["meta pkttype { broadcast, multicast } accept".to_string()];
    if snap.mode != Mode::L3s {
        rules.push(format!("{V4_OK}fwd to ip daddr map @fwd4"));
        rules.push(format!("{V6_OK}fwd to ip6 daddr map @fwd6"));
        rules.push("fwd to arp daddr ip map @fwd4".into());
    }
    for r in &rules {
        prog.rule("from_master", r);
    }

    // Each host end: what its slave sent (§4.1, §4.2).
    for (id, end) in host_ends {
        let mut rules = vec![
            "meta pkttype { broadcast, multicast } drop".to_string(),
            format!(
                "ether saddr != {m} counter name \"{}\" drop",
                drop_counter(DropReason::Spoof, *id)
            ),
        ];
        let mut counters = vec![
            drop_counter(DropReason::Private, *id),
            drop_counter(DropReason::Spoof, *id),
        ];
        let mut sub = None;
        let host = host_access_rules(snap);
        rules.splice(0..0, host.first.iter().cloned());
        if snap.source_guard {
            let (jump, chain) = guard_jump(*id);
            rules.push(jump);
            counters.push(drop_counter(DropReason::SourceGuard, *id));
            sub = Some(chain);
        }
        rules.extend(host.local.iter().cloned());
        if snap.mode == Mode::L3s {
            // L3S egress the fast path hands to the master namespace's stack (see
            // `fastpath`): it alone makes a slave's frame `PACKET_HOST`.
            rules.push("ether type { ip, ip6 } meta pkttype host accept".into());
        }
        let local = |sel: &str, key: &str, set: &str, map: &str| {
            if snap.flags == Flags::Private {
                format!(
                    "{sel}{key} @{set} counter name \"{}\" drop",
                    drop_counter(DropReason::Private, *id)
                )
            } else {
                format!("{sel}fwd to {key} map @{map}")
            }
        };
        match (snap.mode, snap.flags) {
            (Mode::L2, Flags::Vepa) => rules.push(format!("ether saddr {m} fwd to \"{master}\"")),
            (Mode::L2, _) => {
                let sel = format!("ether saddr {m} ether daddr {m} ");
                rules.push(local(
                    &format!("{sel}{V4_OK}"),
                    "ip daddr",
                    "slaves4",
                    "fwd4",
                ));
                rules.push(local(
                    &format!("{sel}{V6_OK}"),
                    "ip6 daddr",
                    "slaves6",
                    "fwd6",
                ));
                rules.push(local(&sel, "arp daddr ip", "slaves4", "fwd4"));
                rules.extend(host.arp.iter().cloned());
                // Same MAC, no owner: the kernel's master-stack delivery; emulated with
                // host access only (above).
                rules.push(format!("{sel}drop"));
                rules.push(format!("ether saddr {m} fwd to \"{master}\""));
            }
            (_, Flags::Vepa) => {}
            (_, _) => {
                rules.push(local(V4_OK, "ip daddr", "slaves4", "fwd4"));
                rules.push(local(V6_OK, "ip6 daddr", "slaves6", "fwd6"));
                // L3 still keys ARP by its target (§3); NOARP slaves ignore it.
                rules.push(local("", "arp daddr ip", "slaves4", "fwd4"));
            }
        }
        prog.parts.insert(
            format!("{:05}", id.0),
            Part {
                counters,
                chain: format!("from_{}", id.0),
                decl: hook(end, "drop"),
                rules,
                sub,
            },
        );
    }
    prog
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MacAddr, Port};

    const M: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

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

    /// The rules of one chain, from a full script.
    fn rules<'a>(s: &'a str, chain: &str) -> Vec<&'a str> {
        let p = format!("add rule netdev t {chain} ");
        s.lines()
            .filter_map(|l| l.strip_prefix(p.as_str()))
            .collect()
    }

    #[test]
    fn l2_bridge() {
        let (snap, ends) = port(Mode::L2, Flags::Bridge);
        let s = program(&snap, "t", "eth0", &ends).full();
        assert!(s.contains(
            "add element netdev t fwd4 { 10.0.0.10 : \"ivh2.1\", 10.0.0.11 : \"ivh2.2\" }"
        ));
        assert!(s.contains("add element netdev t fwd6 { fd00::11 : \"ivh2.2\" }"));
        assert!(
            s.contains("add chain netdev t from_master { type filter hook ingress device \"eth0\"")
        );
        assert!(rules(&s, "from_master").contains(&"fwd to arp daddr ip map @fwd4"));
        let from1 = rules(&s, "from_1");
        assert!(from1.contains(
            &"ether saddr 52:54:00:12:34:56 ether daddr 52:54:00:12:34:56 meta l4proto 0-255 fwd to ip daddr map @fwd4"
        ));
        assert!(from1.contains(&"ether saddr 52:54:00:12:34:56 fwd to \"eth0\""));
        assert!(from1.contains(&"ether saddr != 52:54:00:12:34:56 counter name \"spoof_1\" drop"));
        assert_eq!(s.matches("policy drop;").count(), 2);
    }

    #[test]
    fn host_access_hands_the_master_namespaces_own_traffic_to_the_host_end() {
        const LOCAL: &str = "ether daddr 52:54:00:12:34:56 fib daddr type local accept";
        for mode in [Mode::L2, Mode::L3, Mode::L3s] {
            let (mut snap, ends) = port(mode, Flags::Bridge);
            let off = program(&snap, "t", "eth0", &ends).full();
            assert!(!off.contains("fib daddr"), "{mode}");
            assert!(!off.contains("arp operation"), "{mode}");
            snap.host_access = true;
            let s = program(&snap, "t", "eth0", &ends).full();
            let from1 = rules(&s, "from_1");
            assert_eq!(from1.contains(&LOCAL), mode != Mode::L3s, "{mode}");
            let nd = from1
                .iter()
                .take_while(|r| !r.starts_with("meta pkttype {"))
                .count();
            assert_eq!(nd, if mode == Mode::L2 { 2 } else { 0 }, "{mode}");
        }
        // The guard still decides whose ARP and solicitations, and comes first for the rest.
        let (mut snap, ends) = port(Mode::L2, Flags::Private);
        snap.host_access = true;
        snap.source_guard = true;
        let s = program(&snap, "t", "eth0", &ends).full();
        let from1 = rules(&s, "from_1");
        assert_eq!(
            from1[0],
            "meta pkttype broadcast ether saddr 52:54:00:12:34:56 arp operation request meta iif . arp saddr ip @own4 accept"
        );
        let jump = from1.iter().position(|r| *r == "jump guard_1").unwrap();
        let local = from1.iter().position(|r| *r == LOCAL).unwrap();
        assert!(jump < local);
        // vepa sends everything out.
        let (mut snap, ends) = port(Mode::L2, Flags::Vepa);
        snap.host_access = true;
        let s = program(&snap, "t", "eth0", &ends).full();
        assert!(!s.contains("fib daddr") && !s.contains("arp operation"));
    }

    #[test]
    fn private_counts_and_drops_instead_of_forwarding() {
        let (snap, ends) = port(Mode::L2, Flags::Private);
        let s = program(&snap, "t", "eth0", &ends).full();
        assert!(s.contains("ip daddr @slaves4 counter name \"private_1\" drop"));
        assert!(!s.contains("ether daddr 52:54:00:12:34:56 fwd to"));
        assert!(s.contains("add counter netdev t private_2"));
    }

    #[test]
    fn vepa_sends_everything_out() {
        let (snap, ends) = port(Mode::L2, Flags::Vepa);
        let s = program(&snap, "t", "eth0", &ends).full();
        let from1 = rules(&s, "from_1");
        assert!(from1.contains(&"ether saddr 52:54:00:12:34:56 fwd to \"eth0\""));
        assert!(!from1.iter().any(|r| r.contains("map @fwd4")));
    }

    #[test]
    fn l3_switches_by_key_only_and_l3s_leaves_the_master_alone() {
        let (snap, ends) = port(Mode::L3, Flags::Bridge);
        let s = program(&snap, "t", "eth0", &ends).full();
        assert!(rules(&s, "from_1").contains(&"meta l4proto 0-255 fwd to ip daddr map @fwd4"));
        assert!(rules(&s, "from_1").contains(&"fwd to arp daddr ip map @fwd4"));
        assert!(!s.contains("fwd to \"eth0\""));
        let (snap, ends) = port(Mode::L3s, Flags::Bridge);
        let s = program(&snap, "t", "eth0", &ends).full();
        assert!(!rules(&s, "from_master").iter().any(|r| r.contains("fwd")));
    }

    #[test]
    fn a_mode_change_rebuilds_the_chains_not_the_elements() {
        let (snap, ends) = port(Mode::L2, Flags::Bridge);
        let old = program(&snap, "t", "eth0", &ends);
        let (snap, ends) = port(Mode::L2, Flags::Private);
        let s = program(&snap, "t", "eth0", &ends)
            .update_from(Some(&old))
            .unwrap();
        assert!(s.contains("delete chain netdev t from_1"));
        assert!(!s.contains("element"));
    }

    #[test]
    fn the_source_guard_checks_every_slave_against_its_own_addresses() {
        let (mut snap, ends) = port(Mode::L2, Flags::Bridge);
        let plain = program(&snap, "t", "eth0", &ends);
        assert!(!plain.full().contains("guard"));
        snap.source_guard = true;
        let guarded = program(&snap, "t", "eth0", &ends);
        let s = guarded.full();
        assert!(s.contains("add set netdev t own4 { type iface_index . ipv4_addr; }"));
        assert!(s.contains("\"ivh2.1\" . 10.0.0.10"));
        assert!(s.contains("\"ivh2.2\" . fd00::11"));
        // The guard chain exists before the slave's chain jumps to it, and the jump
        // comes after the spoof check, before anything is forwarded.
        let sub = s.find("add chain netdev t guard_1\n").unwrap();
        let from = s.find("add chain netdev t from_1 ").unwrap();
        assert!(sub < from);
        let r = rules(&s, "from_1");
        let jump = r.iter().position(|x| *x == "jump guard_1").unwrap();
        assert!(r[..jump].iter().any(|x| x.contains("spoof_1")));
        assert!(r[jump..].iter().any(|x| x.contains("fwd to")));
        assert!(rules(&s, "guard_1").contains(&"counter name \"source_guard_1\" drop"));
        // Turning it on or off replaces the table (the sets are new).
        assert_eq!(guarded.update_from(Some(&plain)), Some(s));
    }

    #[test]
    fn drop_counters_are_named_by_the_reason_and_read_back() {
        for why in DropReason::ALL {
            for id in [SlaveId(1), SlaveId(42), SlaveId(u16::MAX)] {
                let name = drop_counter(why, id);
                assert!(name.starts_with(why.as_str()));
                assert_eq!(parse_drop_counter(&name), Some((why, id)));
            }
        }
        assert_eq!(
            drop_counter(DropReason::SourceGuard, SlaveId(3)),
            "source_guard_3"
        );
        for bad in [
            "guard_1",
            "spoof",
            "spoof_",
            "spoof_x",
            "private_70000",
            "_1",
        ] {
            assert_eq!(parse_drop_counter(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_down_slave_has_no_entries() {
        let mut p = Port::new(M);
        let a = p.add_slave().unwrap();
        p.add_addr(a, "10.0.0.10".parse().unwrap()).unwrap();
        let s = program(&p.snapshot(), "t", "eth0", &[(a, "ivh2.1".into())]).full();
        assert!(!s.contains("10.0.0.10"));
    }
}
