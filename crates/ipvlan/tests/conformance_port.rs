//! Conformance scenarios C1-C8 and C12 of the spec (`ipvlan-semantics.md` §10): the port
//! model (mode and flags per master, defaults, flags reset), creation and deletion,
//! refused masters and option combinations, ipvlan-on-ipvlan, address uniqueness and
//! MTU. Root only: every test builds its own namespaces and daemon (see `common`).
//!
//! ```text
//!   ns0: ipvl0      ns1: ipvl1      ns2: ipvl2
//!          \            |             /
//!           +-- HOST: eth0 (master) -+
//!                     | veth
//!              ROUTER: eth0 10.X.0.1 fd00:X::1
//! ```
//!
//! What ipvlan-rs necessarily does differently from the kernel driver is written at the
//! top of each test. Common to all: a slave is a veth pair (`ip -d link` shows `veth`,
//! and `/sys/class/net/S/dev_id` is 0), so the ipvlan view of a slave (kind, mode,
//! flag, dev_id) is read from `ipvlan -j -d link show`, and the generic view (MAC, MTU,
//! flags) from plain `ip`.
//!
//! No assertion depends on timing: whatever the daemon does after a command returns is
//! polled with a deadline.

#![forbid(unsafe_code)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// How long the daemon may take to notice something (an address, a flag, an MTU).
const CONVERGE: Duration = Duration::from_secs(5);

/// The routing table of the L3S policy rule (`ipvlan_datapath::guard::L3S_TABLE`).
const L3S_TABLE: u32 = 0x1a5b;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `link add link MASTER name NAME [GENERIC...] type ipvlan [IPVLAN...]` as arguments.
fn add_args<'a>(
    master: &'a str,
    name: &'a str,
    generic: &[&'a str],
    ipvlan: &[&'a str],
) -> Vec<&'a str> {
    let mut v = vec!["link", "add", "link", master, "name", name];
    v.extend_from_slice(generic);
    v.extend_from_slice(&["type", "ipvlan"]);
    v.extend_from_slice(ipvlan);
    v
}

/// Creates slave `name` on `master` from namespace `ns` with ipvlan options `opts`;
/// panics unless it succeeds.
fn add(t: &Topo, ns: &str, master: &str, name: &str, opts: &[&str]) {
    t.ipvlan_ok(ns, &add_args(master, name, &[], opts));
}

/// `ipvlan -j -d link show` (run in `ns`), as a map ifname -> entry.
fn show(t: &Topo, ns: &str) -> HashMap<String, Value> {
    links_by_name(t, ns, &["-d"])
}

/// The `ipvlan -j -d link show` entry of `name`.
fn entry(t: &Topo, name: &str) -> Value {
    let all = show(t, &t.host);
    all.get(name)
        .cloned()
        .unwrap_or_else(|| panic!("`ipvlan -j -d link show` does not list {name}: {all:?}"))
}

/// (mode, flag) of a `link show` entry, e.g. ("l2", "bridge").
fn mode_flag(e: &Value) -> (String, String) {
    let data = &e["linkinfo"]["info_data"];
    let mode = data["mode"].as_str().unwrap_or("?").to_string();
    let flags: Vec<&str> = ["bridge", "private", "vepa"]
        .into_iter()
        .filter(|f| data[*f] == true)
        .collect();
    assert_eq!(flags.len(), 1, "not exactly one port flag in {e}");
    (mode, flags[0].to_string())
}

/// Asserts that every named slave reports `mode`/`flag` in `ipvlan -j -d link show`.
fn assert_port(t: &Topo, names: &[&str], mode: &str, flag: &str) {
    let all = show(t, &t.host);
    for n in names {
        let e = all
            .get(*n)
            .unwrap_or_else(|| panic!("`ipvlan -j -d link show` does not list {n}: {all:?}"));
        assert_eq!(
            mode_flag(e),
            (mode.to_string(), flag.to_string()),
            "{n} should report `mode {mode} {flag}`: {e}"
        );
    }
}

/// The learned addresses of slave `name` (from `ipvlan -j -d link show`).
fn learned(t: &Topo, name: &str) -> Vec<String> {
    show(t, &t.host)
        .get(name)
        .map(|e| {
            e["addrs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the daemon lists `addr` for slave `name`.
fn assert_learned(t: &Topo, name: &str, addr: &str) {
    if !eventually(CONVERGE, || learned(t, name).iter().any(|a| a == addr)) {
        panic!(
            "the daemon did not learn {addr} on {name} within {CONVERGE:?}\n{}",
            t.diag()
        );
    }
}

/// The interface flags of `dev` in `ns` (from `ip -j link`).
fn flags(ns: &str, dev: &str) -> Vec<String> {
    link_json(ns, dev)["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

fn noarp(ns: &str, dev: &str) -> bool {
    flags(ns, dev).iter().any(|f| f == "NOARP")
}

/// Waits for `dev` in `ns` to have (or not have) NOARP.
fn assert_noarp(t: &Topo, ns: &str, dev: &str, want: bool) {
    if !eventually(CONVERGE, || noarp(ns, dev) == want) {
        panic!(
            "{dev} in {ns}: NOARP should be {}, flags {:?}\n{}",
            if want { "set" } else { "clear" },
            flags(ns, dev),
            t.diag()
        );
    }
}

fn mtu(ns: &str, dev: &str) -> u64 {
    link_json(ns, dev)["mtu"]
        .as_u64()
        .unwrap_or_else(|| panic!("{dev} in {ns} has no mtu"))
}

/// The global addresses (both families) of `dev` in `ns`.
fn global_addrs(ns: &str, dev: &str) -> Vec<String> {
    let mut v = addrs(ns, dev, "-4", "global");
    v.extend(addrs(ns, dev, "-6", "global"));
    v
}

/// Moves `dev` from HOST to `ns` and brings it up there.
fn move_up(t: &Topo, dev: &str, ns: &str) {
    ok(&format!("ip -n {} link set dev {dev} netns {ns}", t.host));
    ok(&format!("ip -n {ns} link set dev {dev} up"));
}

/// Runs `ipvlan ARGS` in `ns` and checks it fails with exit status `code`, prints an
/// error containing every one of `mentions`, and leaves HOST's links and the daemon's
/// list as they were. Returns stderr.
fn refused(t: &Topo, ns: &str, args: &[&str], code: i32, mentions: &[&str]) -> String {
    let links_before = link_names(&t.host);
    let listed_before: BTreeSet<String> = show(t, &t.host).into_keys().collect();
    let out = t.ipvlan(ns, args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "`ipvlan {}`: expected exit status {code}\nstdout: {}\nstderr: {err}",
        args.join(" "),
        stdout(&out)
    );
    for m in mentions {
        assert!(
            err.to_lowercase().contains(&m.to_lowercase()),
            "`ipvlan {}`: the error does not mention {m:?}: {err}",
            args.join(" ")
        );
    }
    assert_eq!(
        link_names(&t.host),
        links_before,
        "`ipvlan {}` left something behind in HOST",
        args.join(" ")
    );
    let listed: BTreeSet<String> = show(t, &t.host).into_keys().collect();
    assert_eq!(
        listed,
        listed_before,
        "`ipvlan {}` changed the daemon's list",
        args.join(" ")
    );
    err
}

/// Everything ipvlan-rs may leave in the master's namespace after the last slave of a
/// port is gone: host ends, nft tables, the L3S NFQUEUE rules, fwmark rules and the
/// L3S routing table. Empty when clean.
fn leftovers(ns: &str) -> Vec<String> {
    let mut v = Vec::new();
    for l in link_names(ns) {
        if l.starts_with("ivh") {
            v.push(format!("host end {l}"));
        }
    }
    for l in ok(&format!("ip netns exec {ns} nft list tables")).lines() {
        if l.contains("ipvlan_rs") {
            v.push(format!("nft: {l}"));
        }
    }
    for prog in ["iptables", "ip6tables"] {
        let o = sh(&format!("ip netns exec {ns} {prog} -t security -S"));
        for l in stdout(&o).lines() {
            if l.contains("NFQUEUE") {
                v.push(format!("{prog}: {l}"));
            }
        }
    }
    for fam in ["-4", "-6"] {
        for l in ok(&format!("ip -n {ns} {fam} rule show")).lines() {
            if l.contains("fwmark") {
                v.push(format!("ip {fam} rule: {l}"));
            }
        }
        let o = sh(&format!("ip -n {ns} {fam} route show table {L3S_TABLE}"));
        for l in stdout(&o).lines() {
            v.push(format!("ip {fam} route table {L3S_TABLE}: {l}"));
        }
        // The kernel backend's routed L3S: rules on the master, the port's table.
        for l in ok(&format!("ip -n {ns} {fam} rule show")).lines() {
            if l.contains("iif eth0") {
                v.push(format!("ip {fam} rule: {l}"));
            }
        }
        let routed = routed_l3s_table(ns);
        let o = sh(&format!("ip -n {ns} {fam} route show table {routed}"));
        for l in stdout(&o).lines() {
            v.push(format!("ip {fam} route table {routed}: {l}"));
        }
    }
    for key in [
        "ipv4/conf/eth0/forwarding",
        "ipv6/conf/eth0/force_forwarding",
    ] {
        let value = ok(&format!("ip netns exec {ns} cat /proc/sys/net/{key}"));
        if value.trim() != "0" {
            v.push(format!("sysctl {key} = {}", value.trim()));
        }
    }
    v
}

/// True when the L3S plumbing of some port is installed in `ns`.
/// The table of the kernel backend's routed L3S for master `eth0` in `ns`
/// (`ipvlan_datapath::kernel::l3s::table`).
fn routed_l3s_table(ns: &str) -> u64 {
    let v = json(&format!("ip -n {ns} -j link show dev eth0"));
    0x1a5c_0000 + (v[0]["ifindex"].as_u64().expect("ifindex") & 0xffff)
}

/// What the port's L3S needs in `ns` is there: with the kernel backend's fast path the
/// rules and table of its routing (`ipvlan_datapath::kernel::l3s`), else the daemon's
/// NFQUEUE plumbing.
fn l3s_plumbing_present(ns: &str) -> bool {
    if !user_backend() {
        let table = routed_l3s_table(ns);
        return ["-4", "-6"].iter().all(|f| {
            ok(&format!("ip -n {ns} {f} rule show")).contains(&format!("iif eth0 lookup {table}"))
        }) && !ok(&format!("ip -n {ns} route show table {table}"))
            .trim()
            .is_empty();
    }
    let nfq = ["iptables", "ip6tables"].iter().all(|p| {
        stdout(&sh(&format!("ip netns exec {ns} {p} -t security -S"))).contains("NFQUEUE")
    });
    let rules = ["-4", "-6"]
        .iter()
        .all(|f| ok(&format!("ip -n {ns} {f} rule show")).contains("fwmark"));
    let table = ok(&format!("ip netns exec {ns} nft list tables")).contains("ipvlan_rs_l3s_");
    nfq && rules && table
}

// ---------------------------------------------------------------------------------------
// C1
// ---------------------------------------------------------------------------------------

/// C1 (LTP ipvlan01): for each of `mode l2`, `mode l3`, `mode l3s`, add a slave on the
/// master and delete it again, ten times: always succeeds, and nothing is left behind.
///
/// ipvlan-rs: "no leaks" is checked on what ipvlan-rs itself makes in the master's
/// namespace — the veth host ends (`ivh*`), the nftables tables (`ipvlan_rs_*`), and
/// for L3S the xtables NFQUEUE rules (`security` table), the `ip rule` fwmark rules
/// and the routes of the L3S policy table, or (the kernel backend's routed L3S) the
/// rules on the master, the routes of the port's table and the master's forwarding
/// sysctls — plus the daemon's own list. Each round
/// also brings the slave up with an address so the port's tables are non-trivial.
#[test]
fn c01_create_delete_loop() {
    let t = Topo::new(0);
    let host = t.host.clone();
    let before = link_names(&host);
    assert!(leftovers(&host).is_empty(), "{:?}", leftovers(&host));
    for mode in ["l2", "l3", "l3s"] {
        for round in 0..10u32 {
            add(&t, &host, "eth0", "ipvl0", &["mode", mode]);
            assert!(
                link_exists(&host, "ipvl0"),
                "{mode} round {round}: no ipvl0"
            );
            assert_eq!(
                mode_flag(&entry(&t, "ipvl0")),
                (mode.to_string(), "bridge".to_string()),
                "{mode} round {round}"
            );
            assert!(
                link_names(&host).iter().any(|l| l.starts_with("ivh")),
                "{mode} round {round}: no host end beside the master"
            );
            ok(&format!("ip -n {host} link set dev ipvl0 up"));
            ok(&format!(
                "ip -n {host} addr add 10.{}.1.{}/24 dev ipvl0",
                t.x,
                round + 10
            ));
            if mode == "l3s" && round == 0 {
                // The leak check below is only meaningful if the plumbing was there.
                assert!(
                    eventually(CONVERGE, || l3s_plumbing_present(&host)),
                    "l3s: no L3S plumbing in HOST (routing rules and table; or NFQUEUE, fwmark rules, nft table)\n{}",
                    t.diag()
                );
            }
            t.ipvlan_ok(&host, &["link", "del", "dev", "ipvl0"]);
            assert!(
                !link_exists(&host, "ipvl0"),
                "{mode} round {round}: ipvl0 still there after del"
            );
            if !eventually(CONVERGE, || leftovers(&host).is_empty()) {
                panic!(
                    "{mode} round {round}: left behind in HOST after del: {:?}\n{}",
                    leftovers(&host),
                    t.diag()
                );
            }
            assert!(
                show(&t, &host).is_empty(),
                "{mode} round {round}: the daemon still lists slaves"
            );
        }
    }
    assert_eq!(link_names(&host), before, "links left behind in HOST");
}

// ---------------------------------------------------------------------------------------
// C2
// ---------------------------------------------------------------------------------------

/// C2: `add link M s1 type ipvlan` (no ipvlan options) → `mode l3 bridge`, dev_id 0x1,
/// the master's MAC and MTU; NOARP once up.
///
/// ipvlan-rs: the kind/mode/dev_id are read from `ipvlan -j -d link show` (plain
/// `ip -d link` shows a veth). The daemon sets NOARP when it creates the slave, not on
/// its first `up` as the kernel does, so only "NOARP after up" is asserted.
#[test]
fn c02_defaults() {
    let t = Topo::new(0);
    let host = t.host.clone();
    let master_mac = mac(&host, "eth0");
    let master_mtu = mtu(&host, "eth0");
    add(&t, &host, "eth0", "s1", &[]);

    let e = entry(&t, "s1");
    assert_eq!(e["linkinfo"]["info_kind"], "ipvlan", "{e}");
    assert_eq!(
        mode_flag(&e),
        ("l3".to_string(), "bridge".to_string()),
        "{e}"
    );
    assert_eq!(e["dev_id"], "0x1", "{e}");
    assert_eq!(e["link"], "eth0", "{e}");
    assert_eq!(
        e["address"].as_str().map(str::to_ascii_lowercase),
        Some(master_mac.clone()),
        "{e}"
    );
    assert_eq!(e["mtu"].as_u64(), Some(master_mtu), "{e}");
    let text = t.ipvlan_ok(&host, &["-d", "link", "show"]);
    assert!(
        text.contains("ipvlan  mode l3 bridge") && text.contains("dev_id 0x1"),
        "`ipvlan -d link show` lacks `ipvlan  mode l3 bridge ... dev_id 0x1`:\n{text}"
    );

    // The plain `ip` view agrees.
    assert_eq!(mac(&host, "s1"), master_mac, "s1 MAC");
    assert_eq!(mtu(&host, "s1"), master_mtu, "s1 MTU");

    ok(&format!("ip -n {host} link set dev s1 up"));
    assert_noarp(&t, &host, "s1", true);
    let e = entry(&t, "s1");
    let fl: Vec<&str> = e["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(fl.contains(&"NOARP") && fl.contains(&"UP"), "{e}");
}

// ---------------------------------------------------------------------------------------
// C3
// ---------------------------------------------------------------------------------------

/// C3: mode is port-wide, latest writer wins. S1 `mode l2`; S2 added with no options →
/// S1 reports `mode l3` and gains NOARP; S3 added with `mode l2` → all l2, NOARP
/// cleared.
///
/// ipvlan-rs: the daemon flips NOARP on the other slaves (in their namespaces) itself,
/// so the flags are polled.
#[test]
fn c03_port_wide_mode() {
    let t = Topo::new(3);
    let host = t.host.clone();
    let (ns0, ns1, ns2) = (
        t.ns(0).to_string(),
        t.ns(1).to_string(),
        t.ns(2).to_string(),
    );

    add(&t, &host, "eth0", "ipvl0", &["mode", "l2"]);
    move_up(&t, "ipvl0", &ns0);
    assert_port(&t, &["ipvl0"], "l2", "bridge");
    assert_noarp(&t, &ns0, "ipvl0", false);

    // No options: the whole port becomes l3 (flags kept).
    add(&t, &host, "eth0", "ipvl1", &[]);
    move_up(&t, "ipvl1", &ns1);
    assert_port(&t, &["ipvl0", "ipvl1"], "l3", "bridge");
    assert_noarp(&t, &ns0, "ipvl0", true);
    assert_noarp(&t, &ns1, "ipvl1", true);

    // `mode l2` again: everybody l2, NOARP cleared everywhere.
    add(&t, &host, "eth0", "ipvl2", &["mode", "l2"]);
    move_up(&t, "ipvl2", &ns2);
    assert_port(&t, &["ipvl0", "ipvl1", "ipvl2"], "l2", "bridge");
    for (ns, dev) in [(&ns0, "ipvl0"), (&ns1, "ipvl1"), (&ns2, "ipvl2")] {
        assert_noarp(&t, ns, dev, false);
    }

    // And `link set` on one slave switches all of them too.
    t.ipvlan_ok(
        &ns1,
        &[
            "link", "set", "dev", "ipvl1", "type", "ipvlan", "mode", "l3s",
        ],
    );
    assert_port(&t, &["ipvl0", "ipvl1", "ipvl2"], "l3s", "bridge");
    for (ns, dev) in [(&ns0, "ipvl0"), (&ns1, "ipvl1"), (&ns2, "ipvl2")] {
        assert_noarp(&t, ns, dev, true);
    }
}

// ---------------------------------------------------------------------------------------
// C4
// ---------------------------------------------------------------------------------------

/// C4: flags reset. Port in `mode l2 private`; `link set S1 type ipvlan mode l2` →
/// both slaves report `bridge` (any ipvlan option sends the flags, spec §8.2). Also:
/// a flag alone keeps the mode; `mode l3` alone resets the flag again.
///
/// ipvlan-rs: no deviation (the change is made by the daemon, read back through
/// `ipvlan -j -d link show`).
#[test]
fn c04_flags_reset() {
    let t = Topo::new(2);
    let host = t.host.clone();
    let (ns0, ns1) = (t.ns(0).to_string(), t.ns(1).to_string());
    add(&t, &host, "eth0", "ipvl0", &["mode", "l2", "private"]);
    add(&t, &host, "eth0", "ipvl1", &["mode", "l2", "private"]);
    move_up(&t, "ipvl0", &ns0);
    move_up(&t, "ipvl1", &ns1);
    assert_port(&t, &["ipvl0", "ipvl1"], "l2", "private");

    t.ipvlan_ok(
        &ns0,
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l2",
        ],
    );
    assert_port(&t, &["ipvl0", "ipvl1"], "l2", "bridge");

    // A flag alone: mode unchanged, flag set for the whole port.
    t.ipvlan_ok(
        &ns1,
        &["link", "set", "dev", "ipvl1", "type", "ipvlan", "vepa"],
    );
    assert_port(&t, &["ipvl0", "ipvl1"], "l2", "vepa");

    // A mode alone: the flag goes back to bridge.
    t.ipvlan_ok(
        &ns0,
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l3",
        ],
    );
    assert_port(&t, &["ipvl0", "ipvl1"], "l3", "bridge");

    // An add with only a flag (no mode): the mode is forced to l3, the flag taken.
    t.ipvlan_ok(
        &ns0,
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l2",
        ],
    );
    add(&t, &host, "eth0", "ipvl2", &["private"]);
    assert_port(&t, &["ipvl0", "ipvl1", "ipvl2"], "l3", "private");
}

// ---------------------------------------------------------------------------------------
// C5
// ---------------------------------------------------------------------------------------

/// C5: invalid combinations are usage errors (exit 1) and change nothing.
///
/// ipvlan-rs: the raw-netlink half of the scenario (flags 0x3 / 0x4 / mode 3 →
/// EINVAL) does not apply: ipvlan-rs has no netlink API; its only interfaces are the
/// CLI (tested here) and the daemon's control socket, whose requests carry typed
/// `Mode`/`Flags` values that cannot express those numbers.
#[test]
fn c05_invalid_combos() {
    let t = Topo::new(0);
    let host = t.host.clone();

    refused(
        &t,
        &host,
        &add_args("eth0", "ipvl0", &[], &["private", "vepa"]),
        1,
        &["unknown option", "vepa"],
    );
    refused(
        &t,
        &host,
        &add_args("eth0", "ipvl0", &[], &["vepa", "bridge"]),
        1,
        &["unknown option", "bridge"],
    );
    refused(
        &t,
        &host,
        &add_args("eth0", "ipvl0", &[], &["mode", "l4"]),
        1,
        &["l4"],
    );
    refused(
        &t,
        &host,
        &add_args("eth0", "ipvl0", &[], &["mode", "L2"]),
        1,
        &["L2"],
    );
    refused(
        &t,
        &host,
        &add_args("eth0", "ipvl0", &[], &["mode"]),
        1,
        &[],
    );

    // On an existing port: refused, and the port keeps its mode and flag.
    add(&t, &host, "eth0", "ipvl0", &["mode", "l2", "private"]);
    refused(
        &t,
        &host,
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "private", "vepa",
        ],
        1,
        &["unknown option", "vepa"],
    );
    refused(
        &t,
        &host,
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l4",
        ],
        1,
        &["l4"],
    );
    assert_port(&t, &["ipvl0"], "l2", "private");
}

// ---------------------------------------------------------------------------------------
// C6
// ---------------------------------------------------------------------------------------

/// C6: refused masters: `lo` (EINVAL → exit 2), a bridge port (EBUSY → exit 2, "busy"),
/// a non-Ethernet device (tun, EINVAL → exit 2), no `link` at all, and (ipvlan-rs only)
/// the host end of a slave. None leaves anything behind.
///
/// ipvlan-rs: a missing `link` is caught by the CLI's grammar and is a usage error
/// (exit 1, "link argument is required") where iproute2 sends the request and the
/// kernel answers EINVAL (exit 2); either is an error, so 1 or 2 is accepted. The host
/// end of a slave has no kernel counterpart; it must be refused (exit 2).
#[test]
fn c06_bad_masters() {
    let t = Topo::new(0);
    let host = t.host.clone();

    refused(
        &t,
        &host,
        &add_args("lo", "ipvl0", &[], &["mode", "l2"]),
        2,
        &["lo"],
    );

    // A bridge port.
    ok(&format!("ip -n {host} link add br0 type bridge"));
    ok(&format!(
        "ip -n {host} link add vb0 type veth peer name vb1"
    ));
    ok(&format!("ip -n {host} link set dev vb0 master br0"));
    ok(&format!("ip -n {host} link set dev vb0 up"));
    refused(
        &t,
        &host,
        &add_args("vb0", "ipvl0", &[], &["mode", "l2"]),
        2,
        &["busy"],
    );

    // Non-Ethernet.
    ok(&format!("ip -n {host} tuntap add dev tun0 mode tun"));
    refused(
        &t,
        &host,
        &add_args("tun0", "ipvl0", &[], &["mode", "l2"]),
        2,
        &["tun0"],
    );

    // No `link`.
    let links_before = link_names(&host);
    let out = t.ipvlan(
        &host,
        &[
            "link", "add", "name", "ipvl0", "type", "ipvlan", "mode", "l2",
        ],
    );
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "add without link: exit status {code:?}, expected 1 (usage) or 2\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("link"),
        "add without link: the error does not mention `link`: {}",
        stderr(&out)
    );
    assert_eq!(
        link_names(&host),
        links_before,
        "add without link left something"
    );
    assert!(show(&t, &host).is_empty());

    // The host end of a slave.
    add(&t, &host, "eth0", "ipvl0", &["mode", "l2"]);
    let host_end = entry(&t, "ipvl0")["host_end"]
        .as_str()
        .expect("a host_end in `ipvlan -j -d link show`")
        .to_string();
    assert!(link_exists(&host, &host_end), "no {host_end} in HOST");
    refused(
        &t,
        &host,
        &add_args(&host_end, "ipvl1", &[], &["mode", "l2"]),
        2,
        &[host_end.as_str()],
    );
    assert_port(&t, &["ipvl0"], "l2", "bridge");

    // Once no longer a bridge port, vb0 is a fine master (the check is live, not sticky).
    ok(&format!("ip -n {host} link set dev vb0 nomaster"));
    add(&t, &host, "vb0", "ipvl2", &["mode", "l2"]);
    assert_eq!(entry(&t, "ipvl2")["link"], "vb0");
}

// ---------------------------------------------------------------------------------------
// C7
// ---------------------------------------------------------------------------------------

/// C7 (CKI ipvlan_o_ipvlan): S11 and S12 made with `link S1` (from S1's namespace)
/// join M's port as siblings; S11 <-> S12 ping (v4 and v6) in l2, l3 and l3s.
///
/// ipvlan-rs: no deviation in behaviour. The nested slaves are made in the caller's
/// namespace (ns0, where S1 lives) with their host ends beside M, and are then moved.
#[test]
fn c07_ipvlan_on_ipvlan() {
    for mode in ["l2", "l3", "l3s"] {
        let t = Topo::new(3);
        let host = t.host.clone();
        let (ns0, ns1, ns2) = (
            t.ns(0).to_string(),
            t.ns(1).to_string(),
            t.ns(2).to_string(),
        );
        let master_mac = mac(&host, "eth0");
        add(&t, &host, "eth0", "ipvl0", &["mode", mode]);
        ok(&format!("ip -n {host} link set dev ipvl0 netns {ns0}"));

        add(&t, &ns0, "ipvl0", "ipvl1", &["mode", mode]);
        add(&t, &ns0, "ipvl0", "ipvl2", &["mode", mode]);
        let all = show(&t, &host);
        for (name, dev_id) in [("ipvl0", "0x1"), ("ipvl1", "0x2"), ("ipvl2", "0x3")] {
            let e = all
                .get(name)
                .unwrap_or_else(|| panic!("{mode}: {name} not listed: {all:?}"));
            assert_eq!(e["link"], "eth0", "{mode}: {name} is not on M's port: {e}");
            assert_eq!(e["dev_id"], dev_id, "{mode}: {e}");
            assert_eq!(
                mode_flag(e),
                (mode.to_string(), "bridge".to_string()),
                "{mode}: {e}"
            );
        }
        for (i, (dev, ns)) in [("ipvl1", &ns1), ("ipvl2", &ns2)].into_iter().enumerate() {
            assert_eq!(mac(&ns0, dev), master_mac, "{mode}: {dev} MAC");
            ok(&format!("ip -n {ns0} link set dev {dev} netns {ns}"));
            ok(&format!("ip -n {ns} link set dev {dev} up"));
            let h = 21 + u32::try_from(i).unwrap();
            ok(&format!("ip -n {ns} addr add {}/24 dev {dev}", t.v4(h)));
            ok(&format!("ip -n {ns} -6 addr add {}/64 dev {dev}", t.v6(h)));
            if mode != "l2" {
                ok(&format!("ip -n {ns} route add default dev {dev}"));
                ok(&format!("ip -n {ns} -6 route add default dev {dev}"));
            }
            assert_learned(&t, dev, &t.v4(h));
            assert_learned(&t, dev, &t.v6(h));
        }
        for (from, to) in [(&ns1, 22), (&ns2, 21)] {
            t.assert_ping(from, &t.v4(to));
            t.assert_ping(from, &t.v6(to));
        }
    }
}

// ---------------------------------------------------------------------------------------
// C8
// ---------------------------------------------------------------------------------------

/// C8 (CKI abnormal_test): an address already on a slave of the port is refused on
/// another slave; the same address on a slave of another master is fine, and so is the
/// same address on the master itself.
///
/// ipvlan-rs: the kernel refuses the duplicate before it is configured (`ip addr add`
/// exits 2 with "Error: Address already assigned to an ipvlan device."). ipvlan-rs
/// learns addresses from rtnetlink after the fact, so `ip addr add` succeeds and the
/// daemon removes the address again a moment later, logging "Address already
/// assigned to an ipvlan device". The test asserts that removal (polled), the log
/// line, and that the first owner keeps the address.
#[test]
fn c08_duplicate_address() {
    let t = Topo::new(3);
    let host = t.host.clone();
    let (ns0, ns1, ns2) = (
        t.ns(0).to_string(),
        t.ns(1).to_string(),
        t.ns(2).to_string(),
    );
    let dup6 = format!("fd00:{}::5", t.x);

    add(&t, &host, "eth0", "ipvl0", &["mode", "l2"]);
    add(&t, &host, "eth0", "ipvl1", &["mode", "l2"]);
    move_up(&t, "ipvl0", &ns0);
    move_up(&t, "ipvl1", &ns1);

    // A second master in HOST with its own slave.
    ok(&format!(
        "ip -n {host} link add eth1 type veth peer name eth1p"
    ));
    ok(&format!("ip -n {host} link set dev eth1 up"));
    ok(&format!("ip -n {host} link set dev eth1p up"));
    add(&t, &host, "eth1", "ipvl2", &["mode", "l2"]);
    move_up(&t, "ipvl2", &ns2);

    ok(&format!("ip -n {ns0} addr add 1.1.1.1/24 dev ipvl0"));
    ok(&format!("ip -n {ns0} -6 addr add {dup6}/64 dev ipvl0"));
    assert_learned(&t, "ipvl0", "1.1.1.1");
    assert_learned(&t, "ipvl0", &dup6);

    // The same addresses on a sibling: refused (taken off again), logged.
    let _ = sh(&format!("ip -n {ns1} addr add 1.1.1.1/24 dev ipvl1"));
    let _ = sh(&format!("ip -n {ns1} -6 addr add {dup6}/64 dev ipvl1"));
    for a in ["1.1.1.1", dup6.as_str()] {
        if !eventually(CONVERGE, || {
            !global_addrs(&ns1, "ipvl1").iter().any(|x| x == a)
        }) {
            panic!(
                "duplicate {a} on ipvl1 was not removed within {CONVERGE:?}\n{}",
                t.diag()
            );
        }
        let line = format!("refused {a} on ipvl1");
        assert!(
            eventually(CONVERGE, || {
                let log = t.daemon().log_text();
                log.lines().any(|l| {
                    l.contains(&line) && l.contains("Address already assigned to an ipvlan device")
                })
            }),
            "the daemon log does not report refusing {a} on ipvl1:\n{}",
            t.daemon().log_text()
        );
        assert!(
            !learned(&t, "ipvl1").iter().any(|x| x == a),
            "the daemon learned {a} on ipvl1"
        );
        assert!(
            global_addrs(&ns0, "ipvl0").iter().any(|x| x == a),
            "{a} was taken off the first owner ipvl0"
        );
        assert!(
            learned(&t, "ipvl0").iter().any(|x| x == a),
            "the daemon forgot {a} on ipvl0"
        );
    }

    // A slave of another master: accepted (learned, and kept).
    ok(&format!("ip -n {ns2} addr add 1.1.1.1/24 dev ipvl2"));
    ok(&format!("ip -n {ns2} -6 addr add {dup6}/64 dev ipvl2"));
    assert_learned(&t, "ipvl2", "1.1.1.1");
    assert_learned(&t, "ipvl2", &dup6);

    // The master itself: accepted; the slave keeps its address. The marker address on
    // ipvl0, added afterwards, shows that the daemon has seen everything before it.
    ok(&format!("ip -n {host} addr add 1.1.1.1/24 dev eth0"));
    ok(&format!("ip -n {ns0} addr add 1.1.1.2/24 dev ipvl0"));
    assert_learned(&t, "ipvl0", "1.1.1.2");
    assert!(global_addrs(&host, "eth0").contains(&"1.1.1.1".to_string()));
    assert!(global_addrs(&ns0, "ipvl0").contains(&"1.1.1.1".to_string()));
    assert!(learned(&t, "ipvl0").contains(&"1.1.1.1".to_string()));
    for a in ["1.1.1.1", dup6.as_str()] {
        assert!(
            global_addrs(&ns2, "ipvl2").iter().any(|x| x == a),
            "{a} was taken off ipvl2 (another master's slave)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// C12
// ---------------------------------------------------------------------------------------

/// C12 (CKI link_test): `mtu 1300` at creation → 1300; a slave MTU above the master's
/// (9000 with M at 1500) is accepted; changing M's MTU overwrites every slave's.
///
/// ipvlan-rs: the master's MTU is followed by the daemon (polled) instead of being
/// assigned synchronously. The other half of the scenario (`index 111 numtxqueues 4
/// numrxqueues 4 txqueuelen 100` honoured at creation) is not supported: the ipvlan
/// CLI grammar only takes `link`, `name` and `mtu` before `type`; such a request is a
/// usage error that leaves nothing behind, which is asserted.
#[test]
fn c12_mtu() {
    let t = Topo::new(2);
    let host = t.host.clone();
    let (ns0, ns1) = (t.ns(0).to_string(), t.ns(1).to_string());
    assert_eq!(mtu(&host, "eth0"), 1500);

    t.ipvlan_ok(
        &host,
        &add_args("eth0", "ipvl0", &["mtu", "1300"], &["mode", "l2"]),
    );
    add(&t, &host, "eth0", "ipvl1", &["mode", "l2"]);
    assert_eq!(mtu(&host, "ipvl0"), 1300, "ipvl0 made with mtu 1300");
    assert_eq!(mtu(&host, "ipvl1"), 1500, "ipvl1 made without mtu");
    assert_eq!(entry(&t, "ipvl0")["mtu"], 1300);
    move_up(&t, "ipvl0", &ns0);
    move_up(&t, "ipvl1", &ns1);

    // Above the master's MTU: accepted, and kept (the marker address shows the daemon
    // has seen the change).
    ok(&format!("ip -n {ns0} link set dev ipvl0 mtu 9000"));
    ok(&format!("ip -n {ns0} addr add {}/24 dev ipvl0", t.v4(10)));
    assert_learned(&t, "ipvl0", &t.v4(10));
    assert_eq!(mtu(&ns0, "ipvl0"), 9000, "ipvl0 mtu 9000 was not kept");

    // The master's MTU changes: every slave follows.
    ok(&format!("ip -n {host} link set dev eth0 mtu 1400"));
    for (ns, dev) in [(&ns0, "ipvl0"), (&ns1, "ipvl1")] {
        if !eventually(CONVERGE, || mtu(ns, dev) == 1400) {
            panic!(
                "{dev} in {ns}: MTU {} after the master went to 1400\n{}",
                mtu(ns, dev),
                t.diag()
            );
        }
    }
    assert_eq!(entry(&t, "ipvl1")["mtu"], 1400);

    // Not in the grammar: a clean usage error.
    for generic in [
        &["numtxqueues", "4"][..],
        &["index", "111"][..],
        &["txqueuelen", "100"][..],
    ] {
        refused(
            &t,
            &host,
            &add_args("eth0", "ipvl2", generic, &["mode", "l2"]),
            1,
            &[],
        );
    }
}
