//! Host access (`host_access on|off`, an ipvlan-rs extension): the master's namespace
//! (HOST) and its slaves reach each other, in every mode and family, without the
//! traffic touching the wire; off, they are kept apart as by the kernel driver (spec
//! C19). What leaves the master is counted at the router's ingress with named
//! nftables counters. Root only: fresh namespaces (see `common`).

#![forbid(unsafe_code)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use etherparse::PacketBuilder;
use ipvlan_sys::packet::{PacketSocket, VNET_HDR_LEN};
use nix::sys::signal::Signal;

/// HOST's own addresses: 10.X.0.2 and fd00:X::2 on its `eth0` (the master).
const HOST: u32 = 2;
/// The slave's: 10.X.0.10 and fd00:X::10.
const SLAVE: u32 = 10;

/// Counts, at the router's ingress, every IP packet between HOST and the slave in
/// either direction (`hs4`, `hs6`), and HOST's own ones to the router (`own4`).
fn count_wire(t: &Topo) {
    let (h4, s4, h6, s6) = (t.v4(HOST), t.v4(SLAVE), t.v6(HOST), t.v6(SLAVE));
    nft(
        &t.router,
        &format!(
            "table netdev w {{
  counter hs4 {{}}
  counter hs6 {{}}
  counter own4 {{}}
  chain in {{
    type filter hook ingress device eth0 priority 0; policy accept;
    ip saddr {{ {h4}, {s4} }} ip daddr {{ {h4}, {s4} }} counter name hs4
    ip6 saddr {{ {h6}, {s6} }} ip6 daddr {{ {h6}, {s6} }} counter name hs6
    ip saddr {h4} ip daddr {r4} counter name own4
  }}
}}",
            r4 = t.router_v4()
        ),
    );
}

fn wire(t: &Topo, name: &str) -> u64 {
    let v = json(&format!(
        "ip netns exec {} nft -j list counter netdev w {name}",
        t.router
    ));
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|o| o.get("counter")))
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name}: {v}"))
}

/// HOST's addresses, the slave `ipvl0` in ns0 with host access on in `mode`, its
/// addresses; the router's counters.
fn setup(mode: &str) -> Topo {
    let t = Topo::new(1);
    ok(&format!(
        "ip -n {} addr add {}/24 dev eth0",
        t.host,
        t.v4(HOST)
    ));
    ok(&format!(
        "ip -n {} addr add {}/64 dev eth0 nodad",
        t.host,
        t.v6(HOST)
    ));
    add_slave(&t, 0, &["mode", mode, "host_access", "on"]);
    ok(&format!(
        "ip -n {} addr add {}/24 dev ipvl0",
        t.ns(0),
        t.v4(SLAVE)
    ));
    ok(&format!(
        "ip -n {} addr add {}/64 dev ipvl0 nodad",
        t.ns(0),
        t.v6(SLAVE)
    ));
    count_wire(&t);
    t
}

fn set_host_access(t: &Topo, on: &str) -> std::process::Output {
    t.ipvlan(
        t.ns(0),
        &[
            "link",
            "set",
            "dev",
            "ipvl0",
            "type",
            "ipvlan",
            "host_access",
            on,
        ],
    )
}

/// What HOST has of ours: `ip route` and `ip neigh` entries with protocol 250.
fn own_entries(t: &Topo) -> String {
    let mut s = String::new();
    for cmd in [
        "-4 route",
        "-6 route",
        "-4 neigh",
        "-6 neigh",
        "-6 neigh show proxy",
    ] {
        let show = if cmd.ends_with("proxy") { "" } else { " show" };
        s += &ok(&format!("ip -n {} {cmd}{show} proto 250", t.host));
    }
    s
}

/// (from, to): HOST to the slave's addresses, the slave to HOST's, IPv4 and IPv6.
fn host_and_slave_to_each_other(t: &Topo) -> [(String, String); 4] {
    let (host, slave) = (t.host.clone(), t.ns(0).to_string());
    [
        (host.clone(), t.v4(SLAVE)),
        (host, t.v6(SLAVE)),
        (slave.clone(), t.v4(HOST)),
        (slave, t.v6(HOST)),
    ]
}

fn reach_each_other(mode: &str) {
    require_root();
    let t = setup(mode);
    let shown = t.ipvlan_ok(&t.host, &["-d", "link", "show"]);
    assert!(
        shown.contains(&format!("mode {mode} bridge host_access on")),
        "{shown}"
    );
    let v = t.ipvlan_ok(&t.host, &["-j", "-d", "link", "show"]);
    assert!(v.contains("\"host_access\":true"), "{v}");
    eprintln!(
        "ipvlan -d link show:\n{shown}\nentries:\n{}",
        own_entries(&t)
    );
    let entries = own_entries(&t);
    for a in [t.v4(SLAVE), t.v6(SLAVE)] {
        assert!(
            entries.contains(&format!("{a} dev ivh")),
            "no route or neighbour of ours to {a}:\n{entries}"
        );
    }

    let (host, slave) = (t.host.clone(), t.ns(0).to_string());
    for (a, b) in [(HOST, SLAVE), (SLAVE, HOST)] {
        let (from, to) = if a == HOST {
            (&host, &slave)
        } else {
            (&slave, &host)
        };
        for addr in [t.v4(b), t.v6(b)] {
            t.assert_ping(from, &addr);
            t.assert_tcp(from, to, &addr, 4);
            eprintln!("{mode}: {from} -> {addr}: ping and 4 MiB TCP ok");
        }
    }
    // HOST's own traffic to the router is as before.
    let own = wire(&t, "own4");
    t.assert_ping(&host, &t.router_v4());
    t.assert_ping(&host, &t.router_v6());
    assert!(
        wire(&t, "own4") > own,
        "HOST's ping to the router not on the wire"
    );
    t.assert_tcp(&host, &t.router, &t.router_v4(), 1);
    // None of the host <-> slave traffic went out on the master.
    assert_eq!(
        (wire(&t, "hs4"), wire(&t, "hs6")),
        (0, 0),
        "host <-> slave traffic on the wire"
    );
    eprintln!(
        "{mode}: on the wire: host<->slave {} IPv4, {} IPv6 packets; HOST->router {}",
        wire(&t, "hs4"),
        wire(&t, "hs6"),
        wire(&t, "own4")
    );

    // Off again: kept apart (C19), and everything of ours is gone.
    let out = set_host_access(&t, "off");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(own_entries(&t), "", "entries left after host_access off");
    let shown = t.ipvlan_ok(&t.host, &["-d", "link", "show"]);
    assert!(!shown.contains("host_access"), "{shown}");
    for (from, addr) in host_and_slave_to_each_other(&t) {
        assert!(
            !ping(&from, &addr),
            "{from} reaches {addr} with host_access off"
        );
    }
}

#[test]
fn l2_host_and_slave_reach_each_other() {
    reach_each_other("l2");
}

#[test]
fn l3_host_and_slave_reach_each_other() {
    reach_each_other("l3");
}

#[test]
fn l3s_host_and_slave_reach_each_other() {
    reach_each_other("l3s");
}

/// With the daemon killed, host access keeps working (but in the user backend's L3 and
/// L3S, whose daemon routes what a slave sends, the echo replies too); a new daemon
/// finds it on, with the same entries.
fn kept_across_a_daemon_restart_in(mode: &str) {
    require_root();
    let mut t = setup(mode);
    let host = t.host.clone();
    let slave = t.ns(0).to_string();
    t.assert_ping(&host, &t.v4(SLAVE));
    t.assert_ping(&slave, &t.v6(HOST));
    let before = own_entries(&t);
    t.daemon_mut().kill(Signal::SIGKILL);
    let user = std::env::var("IPVLAN_TEST_BACKEND").is_ok_and(|b| b == "user");
    let mut ways = vec![];
    if mode == "l2" || !user {
        ways = vec![
            (&host, t.v4(SLAVE)),
            (&host, t.v6(SLAVE)),
            (&slave, t.v4(HOST)),
            (&slave, t.v6(HOST)),
        ];
    }
    for (from, addr) in ways {
        assert!(ping_retry(from, &addr), "{from} -> {addr} without a daemon");
    }
    t.daemon_mut().spawn();
    assert!(
        eventually(Duration::from_secs(5), || t
            .ipvlan(&host, &["-d", "link", "show"])
            .status
            .success()
            && stdout(&t.ipvlan(&host, &["-d", "link", "show"]))
                .contains("host_access on")),
        "host_access not on after the restart: {}",
        stdout(&t.ipvlan(&host, &["-d", "link", "show"]))
    );
    assert_eq!(own_entries(&t), before, "the restart changed the entries");
    t.assert_ping(&host, &t.v6(SLAVE));
    t.assert_ping(&slave, &t.v4(HOST));
    assert_eq!((wire(&t, "hs4"), wire(&t, "hs6")), (0, 0));
}

/// Mode changes leave host access on and working, L3S (whose routing holds the same
/// neighbour entries) included.
#[test]
fn mode_changes_keep_it_working() {
    require_root();
    let t = setup("l3");
    let (host, slave) = (t.host.clone(), t.ns(0).to_string());
    for mode in ["l3s", "l2", "l3s", "l3"] {
        t.ipvlan_ok(
            &slave,
            &[
                "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", mode,
            ],
        );
        let shown = t.ipvlan_ok(&host, &["-d", "link", "show"]);
        assert!(
            shown.contains(&format!("mode {mode} bridge host_access on")),
            "{shown}"
        );
        ok(&format!("ip -n {slave} neigh flush all"));
        for (from, addr) in [
            (&host, t.v4(SLAVE)),
            (&host, t.v6(SLAVE)),
            (&slave, t.v4(HOST)),
            (&slave, t.v6(HOST)),
        ] {
            assert!(
                ping_retry(from, &addr),
                "{mode}: {from} -> {addr}\n{}\n{}",
                own_entries(&t),
                t.diag()
            );
        }
    }
    assert_eq!((wire(&t, "hs4"), wire(&t, "hs6")), (0, 0));
}

#[test]
fn l2_kept_across_a_daemon_restart() {
    kept_across_a_daemon_restart_in("l2");
}

#[test]
fn l3_kept_across_a_daemon_restart() {
    kept_across_a_daemon_restart_in("l3");
}

#[test]
fn l3s_kept_across_a_daemon_restart() {
    kept_across_a_daemon_restart_in("l3s");
}

/// HOST takes the master down and up again (its host ends go down and up with it, and
/// the kernel drops every route and neighbour entry through them): HOST and the slave
/// reach each other again, IPv4 and IPv6, and our entries are back.
fn outlives_the_master_going_down_in(mode: &str) {
    require_root();
    let t = setup(mode);
    let host = t.host.clone();
    // The daemon learns the slave's addresses as they come: their entries first.
    let complete = |e: &str| {
        [t.v4(SLAVE), t.v6(SLAVE)]
            .iter()
            .all(|a| e.contains(a.as_str()))
    };
    assert!(
        eventually(Duration::from_secs(5), || complete(&own_entries(&t))),
        "{mode}: no entries of ours to the slave's addresses:\n{}",
        own_entries(&t)
    );
    let before = own_entries(&t);
    ok(&format!("ip -n {host} link set eth0 down"));
    ok(&format!("ip -n {host} link set eth0 up"));
    // HOST's network configuration puts back the IPv6 address the kernel dropped
    // (`keep_addr_on_down` 0).
    ok(&format!(
        "ip -n {host} -6 addr replace {}/64 dev eth0 nodad",
        t.v6(HOST)
    ));
    for (from, addr) in host_and_slave_to_each_other(&t) {
        assert!(
            eventually(Duration::from_secs(10), || ping(&from, &addr)),
            "{mode}: {from} cannot reach {addr} after the master went down and up\n{}",
            own_entries(&t)
        );
    }
    assert_eq!(
        own_entries(&t),
        before,
        "{mode}: our entries are not as they were"
    );
}

#[test]
fn l2_outlives_the_master_going_down() {
    outlives_the_master_going_down_in("l2");
}

#[test]
fn l3s_outlives_the_master_going_down() {
    outlives_the_master_going_down_in("l3s");
}

#[test]
fn routes_follow_the_slaves() {
    require_root();
    let t = setup("l3");
    let extra = format!("{}-x", t.prefix);
    sh(&format!("ip netns del {extra}"));
    ok(&format!("ip netns add {extra}"));
    let cleanup = scopeguard(extra.clone());
    assert!(own_entries(&t).contains(&t.v4(SLAVE)));
    // An address that goes takes its entries along.
    ok(&format!(
        "ip -n {} addr del {}/64 dev ipvl0",
        t.ns(0),
        t.v6(SLAVE)
    ));
    assert!(
        eventually(Duration::from_secs(5), || !own_entries(&t)
            .contains(&t.v6(SLAVE))),
        "{}",
        own_entries(&t)
    );
    assert!(own_entries(&t).contains(&t.v4(SLAVE)));
    // A slave moved to another namespace loses its addresses, and their entries go.
    ok(&format!(
        "ip -n {} link set dev ipvl0 netns {extra}",
        t.ns(0)
    ));
    assert!(
        eventually(Duration::from_secs(5), || own_entries(&t).is_empty()),
        "{}",
        own_entries(&t)
    );
    ok(&format!("ip -n {extra} link set dev ipvl0 up"));
    ok(&format!(
        "ip -n {extra} addr add {}/24 dev ipvl0",
        t.v4(SLAVE + 1)
    ));
    assert!(
        eventually(Duration::from_secs(5), || own_entries(&t)
            .contains(&t.v4(SLAVE + 1))),
        "{}",
        own_entries(&t)
    );
    assert!(ping_retry(&t.host, &t.v4(SLAVE + 1)));
    // A slave deleted: nothing of ours stays.
    t.ipvlan_ok(&extra, &["link", "del", "dev", "ipvl0"]);
    assert!(
        eventually(Duration::from_secs(5), || own_entries(&t).is_empty()),
        "{}",
        own_entries(&t)
    );
    drop(cleanup);
}

/// Deletes a namespace on drop.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        sh(&format!("ip netns del {}", self.0));
    }
}

fn scopeguard(ns: String) -> NsGuard {
    NsGuard(ns)
}

#[test]
fn the_host_s_own_addresses_are_refused_on_slaves() {
    require_root();
    let t = setup("l2");
    // A mode or flag change leaves it alone.
    t.ipvlan_ok(
        t.ns(0),
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l2", "bridge",
        ],
    );
    let shown = t.ipvlan_ok(&t.host, &["-d", "link", "show"]);
    assert!(shown.contains("mode l2 bridge host_access on"), "{shown}");
    // On: a slave taking HOST's address is refused (removed again).
    ok(&format!(
        "ip -n {} addr add {}/32 dev ipvl0",
        t.ns(0),
        t.v4(HOST)
    ));
    assert!(
        eventually(Duration::from_secs(5), || !addrs(
            t.ns(0),
            "ipvl0",
            "-4",
            "global"
        )
        .iter()
        .any(|a| a.starts_with(&t.v4(HOST)))),
        "HOST's address stayed on the slave"
    );
    assert!(
        t.daemon()
            .log_text()
            .contains(&format!("refused {}", t.v4(HOST))),
        "{}",
        t.daemon().log_text()
    );
    assert!(
        t.ipvlan_ok(&t.host, &["-d", "link", "show"])
            .contains(&t.v4(SLAVE))
    );
    // Off: taken; on again: refused, naming it.
    let out = set_host_access(&t, "off");
    assert!(out.status.success(), "{}", stderr(&out));
    ok(&format!(
        "ip -n {} addr add {}/32 dev ipvl0",
        t.ns(0),
        t.v4(HOST)
    ));
    assert!(
        eventually(Duration::from_secs(5), || t
            .ipvlan_ok(&t.host, &["-d", "link", "show"])
            .contains(&format!("addr {}\n", t.v4(HOST)))),
        "{}",
        t.ipvlan_ok(&t.host, &["-d", "link", "show"])
    );
    let out = set_host_access(&t, "on");
    assert!(!out.status.success(), "host_access on with a clash");
    assert!(stderr(&out).contains(&t.v4(HOST)), "{}", stderr(&out));
    assert!(
        !t.ipvlan_ok(&t.host, &["-d", "link", "show"])
            .contains("host_access")
    );
}

#[test]
fn a_guarded_slave_reaches_the_host_only_from_its_own_addresses() {
    require_root();
    let t = setup("l2");
    t.ipvlan_ok(
        t.ns(0),
        &[
            "link",
            "set",
            "dev",
            "ipvl0",
            "type",
            "ipvlan",
            "source_guard",
            "on",
        ],
    );
    const PORT: u16 = 40_405;
    let listener = Listener::start(
        &t.host,
        SocketAddr::new(t.v4(HOST).parse().unwrap(), PORT),
        vec![],
    );
    t.assert_ping(t.ns(0), &t.v4(HOST));
    let master = mac_bytes(&mac(&t.host, "eth0"));
    let ip4 = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let frames: Vec<Vec<u8>> = [t.v4(SLAVE), t.v4(99)]
        .iter()
        .map(|src| {
            let b = PacketBuilder::ethernet2(master, master)
                .ipv4(ip4(src), ip4(&t.v4(HOST)), 64)
                .udp(PORT, PORT);
            let mut f = vec![0u8; VNET_HDR_LEN];
            b.write(&mut f, format!("g:{src}").as_bytes()).unwrap();
            f
        })
        .collect();
    let index: u32 = link_json(t.ns(0), "ipvl0")["ifindex"]
        .as_u64()
        .and_then(|i| i.try_into().ok())
        .expect("ifindex");
    in_netns(t.ns(0), move || {
        let sock = PacketSocket::open(index).expect("packet socket");
        for _ in 0..3 {
            for f in &frames {
                sock.send(f).expect("send");
            }
        }
    });
    assert!(
        eventually(Duration::from_secs(3), || listener
            .saw(&format!("g:{}", t.v4(SLAVE)))),
        "the slave's own datagram did not reach HOST: {:?}",
        listener.received()
    );
    assert!(
        !listener.saw(&format!("g:{}", t.v4(99))),
        "a forged datagram reached HOST: {:?}",
        listener.received()
    );
}
