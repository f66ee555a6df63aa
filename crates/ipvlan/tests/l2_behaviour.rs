//! L2 bridge-mode behaviour beyond the HOWTO walkthrough: multicast fan-out by the
//! slaves' filters, broadcast, a slave moved twice, address uniqueness, the master's
//! stack never seeing slave unicast, down slaves, and the `private`/`vepa` flags
//! (spec §2, §4.1, §4.4, §5.2). Root only: runs in fresh network namespaces (see
//! `common`).
//!
//! ```text
//!   ns0: ipvl0 10.X.0.10 fd00:X::10      ns1: ipvl1 10.X.0.11 fd00:X::11
//!              \                                 /
//!               +------ HOST: eth0 (master) ----+
//!                              | veth
//!                       ROUTER: eth0 10.X.0.1 fd00:X::1
//! ```
//!
//! No assertion depends on timing: everything that converges (the daemon learning an
//! address, a group join or a flag) is polled with a deadline.

#![forbid(unsafe_code)]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::thread::{self};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long the daemon may take to notice something (an address, a join, a flag).
const CONVERGE: Duration = Duration::from_secs(3);

/// How many datagrams each multicast/broadcast check sends.
const N: usize = 20;

// ---------------------------------------------------------------------------------------
// Topology helpers
// ---------------------------------------------------------------------------------------

/// Creates `ipvl{i}` on HOST's eth0 in mode l2, moves it to slave namespace `i` and
/// configures it as the HOWTO does, with 10.X.0.(10+i)/24 and fd00:X::(10+i)/64, for
/// every `i < n`. Returns once the router reaches every slave (v4 and v6).
fn setup_l2(t: &Topo, n: usize) {
    for i in 0..n {
        let dev = format!("ipvl{i}");
        t.ipvlan_ok(
            &t.host,
            &[
                "link", "add", "link", "eth0", &dev, "type", "ipvlan", "mode", "l2",
            ],
        );
        ok(&format!(
            "ip -n {} link set dev {dev} netns {}",
            t.host,
            t.ns(i)
        ));
        configure_slave(t, t.ns(i), &dev, 10 + u32::try_from(i).unwrap());
    }
    for i in 0..n {
        t.assert_ping(&t.router, &t.v4(10 + u32::try_from(i).unwrap()));
        t.assert_ping(&t.router, &t.v6(10 + u32::try_from(i).unwrap()));
    }
}

/// Brings `dev` up in `ns` and gives it 10.X.0.H/24, fd00:X::H/64 and a default route.
fn configure_slave(t: &Topo, ns: &str, dev: &str, host_part: u32) {
    ok(&format!("ip -n {ns} link set dev {dev} up"));
    ok(&format!(
        "ip -n {ns} -4 addr add {}/24 dev {dev}",
        t.v4(host_part)
    ));
    ok(&format!(
        "ip -n {ns} -4 route add default via {} dev {dev}",
        t.router_v4()
    ));
    ok(&format!(
        "ip -n {ns} -6 addr add {}/64 dev {dev}",
        t.v6(host_part)
    ));
}

/// `ipvlan -j ARGS link show` (run in HOST), as a map ifname -> entry.
fn show(t: &Topo, opts: &[&str]) -> HashMap<String, Value> {
    let mut args: Vec<&str> = vec!["-j"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["link", "show"]);
    let out = t.ipvlan_ok(&t.host, &args);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`ipvlan {args:?}` is not JSON ({e}): {out}"));
    v.as_array()
        .unwrap_or_else(|| panic!("`ipvlan {args:?}` is not an array: {v}"))
        .iter()
        .map(|e| {
            (
                e["ifname"].as_str().unwrap_or_default().to_string(),
                e.clone(),
            )
        })
        .collect()
}

/// stats64.rx.packets of every slave (from `ipvlan -j -s link show`).
fn rx_packets(t: &Topo) -> HashMap<String, u64> {
    show(t, &["-s"])
        .into_iter()
        .map(|(name, e)| {
            let n = e["stats64"]["rx"]["packets"]
                .as_u64()
                .unwrap_or_else(|| panic!("no stats64.rx.packets for {name}: {e}"));
            (name, n)
        })
        .collect()
}

/// The global IPv4 addresses of `dev` in `ns`.
fn v4_addrs(ns: &str, dev: &str) -> Vec<String> {
    addrs(ns, dev, "-4", "global")
}

/// Waits up to [`CONVERGE`] for the daemon to take `addr` off `dev` in `ns` again
/// (a refused duplicate); panics with diagnostics if it stays.
fn assert_refused(t: &Topo, ns: &str, dev: &str, addr: &str) {
    if !eventually(CONVERGE, || !v4_addrs(ns, dev).contains(&addr.to_string())) {
        panic!(
            "duplicate {addr} on {dev} in {ns} was not removed within {CONVERGE:?}\n{}",
            t.diag()
        );
    }
}

/// Asserts that the daemon's log mentions `what` (polled: the log is written a moment
/// after the refusal).
fn assert_log_mentions(t: &Topo, what: &str) {
    if !eventually(CONVERGE, || t.daemon().log_text().contains(what)) {
        panic!(
            "daemon log does not mention {what:?}:\n{}",
            t.daemon().log_text()
        );
    }
}

/// Runs `ping ARGS` from `ns` and returns (success, stdout).
fn ping_out(ns: &str, args: &str) -> (bool, String) {
    let o = sh(&format!("ip netns exec {ns} ping {args}"));
    (o.status.success(), stdout(&o))
}

// ---------------------------------------------------------------------------------------
// UDP listeners and senders inside namespaces
// ---------------------------------------------------------------------------------------

/// Sends each payload as one UDP datagram from namespace `ns` to `dst` (a few ms apart).
fn send_udp(ns: &str, dst: SocketAddr, payloads: Vec<String>, broadcast: bool) {
    in_netns(ns, move || {
        let bind: SocketAddr = if dst.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        if broadcast {
            sock.set_broadcast(true).expect("SO_BROADCAST");
        }
        for p in payloads {
            sock.send_to(p.as_bytes(), dst)
                .unwrap_or_else(|e| panic!("send to {dst}: {e}"));
            thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Sends one probe datagram every 100 ms from `ns` to `dst` until every listener got
/// one (the daemon has learned the joins), at most 10 s.
fn converge(t: &Topo, ns: &str, dst: SocketAddr, broadcast: bool, listeners: &[&Listener]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut k = 0;
    while !listeners.iter().all(|l| l.saw("probe")) {
        if Instant::now() >= deadline {
            let missing: Vec<&str> = listeners
                .iter()
                .filter(|l| !l.saw("probe"))
                .map(|l| l.what.as_str())
                .collect();
            panic!(
                "no probe from {ns} to {dst} reached {missing:?} within 10 s\n{}",
                t.diag()
            );
        }
        send_udp(ns, dst, vec![format!("probe-{k}")], broadcast);
        k += 1;
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `N` numbered datagrams `TAG-i` from `ns` to `dst` and asserts every listener
/// gets all of them (waiting at most 10 s).
fn send_and_expect_all(
    t: &Topo,
    ns: &str,
    dst: SocketAddr,
    broadcast: bool,
    tag: &str,
    listeners: &[&Listener],
) {
    let payloads: Vec<String> = (0..N).map(|i| format!("{tag}-{i}")).collect();
    send_udp(ns, dst, payloads, broadcast);
    let prefix = format!("{tag}-");
    let all = eventually(Duration::from_secs(10), || {
        listeners.iter().all(|l| l.distinct(&prefix).len() >= N)
    });
    if !all {
        let counts: Vec<(String, usize)> = listeners
            .iter()
            .map(|l| (l.what.clone(), l.distinct(&prefix).len()))
            .collect();
        panic!(
            "{ns} -> {dst}: not every listener got all {N} datagrams {tag}-*: {counts:?}\n{}",
            t.diag()
        );
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// Spec §4.4/§5.2: multicast from outside reaches only the slaves whose filter accepts
/// the group; slave multicast reaches the other (joined) slaves and goes out of the
/// master too; the same for IPv6.
#[test]
fn multicast_fanout_follows_the_filter() {
    require_root();
    let t = Topo::new(2);
    setup_l2(&t, 2);
    let (router, ns0, ns1) = (t.router.clone(), t.ns(0).to_string(), t.ns(1).to_string());
    let group4: Ipv4Addr = "239.1.2.3".parse().expect("group");
    let group6: Ipv6Addr = "ff05::1:3".parse().expect("group");
    let a0: Ipv4Addr = t.v4(10).parse().expect("v4");
    let ar: Ipv4Addr = t.router_v4().parse().expect("v4");
    ok(&format!("ip -n {router} route add 224.0.0.0/4 dev eth0"));

    // Router -> group: ns0 joined, ns1 did not.
    let port = 5001;
    let dst = SocketAddr::new(IpAddr::V4(group4), port);
    let l0 = Listener::start(
        &ns0,
        (Ipv4Addr::UNSPECIFIED, port).into(),
        vec![Join::V4(group4, a0)],
    );
    converge(&t, &router, dst, false, &[&l0]);
    let before = rx_packets(&t);
    send_and_expect_all(&t, &router, dst, false, "r2g", &[&l0]);
    // The counters are updated by the switching thread; wait for ns0's to show the
    // datagrams before comparing.
    let mut after = rx_packets(&t);
    eventually(CONVERGE, || {
        after = rx_packets(&t);
        after["ipvl0"] >= before["ipvl0"] + N as u64
    });
    let d0 = after["ipvl0"] - before["ipvl0"];
    let d1 = after["ipvl1"] - before["ipvl1"];
    eprintln!("rx over the send of {N} to {group4}: ipvl0 +{d0}, ipvl1 +{d1}");
    assert!(
        d0 >= N as u64,
        "ipvl0 (joined) rx grew by {d0} < {N} over the send\n{}",
        t.diag()
    );
    assert!(
        d1 < N as u64,
        "ipvl1 (not joined) rx grew by {d1} >= {N}: the group was not filtered\n{}",
        t.diag()
    );
    drop(l0);

    // ns1 -> group: ns0 (joined) gets it slave-to-slave, and so does a listener joined
    // in ROUTER (slave multicast also leaves through the master).
    let port = 5002;
    let dst = SocketAddr::new(IpAddr::V4(group4), port);
    let l0 = Listener::start(
        &ns0,
        (Ipv4Addr::UNSPECIFIED, port).into(),
        vec![Join::V4(group4, a0)],
    );
    let lr = Listener::start(
        &router,
        (Ipv4Addr::UNSPECIFIED, port).into(),
        vec![Join::V4(group4, ar)],
    );
    converge(&t, &ns1, dst, false, &[&l0, &lr]);
    send_and_expect_all(&t, &ns1, dst, false, "s2g", &[&l0, &lr]);
    drop(l0);
    drop(lr);

    // IPv6: router -> ff05::1:3, joined by ns0 on ipvl0.
    let port = 5003;
    let dst = SocketAddr::new(IpAddr::V6(group6), port);
    let l0 = Listener::start(
        &ns0,
        (Ipv6Addr::UNSPECIFIED, port).into(),
        vec![Join::V6(group6, "ipvl0".into())],
    );
    converge(&t, &router, dst, false, &[&l0]);
    send_and_expect_all(&t, &router, dst, false, "r2g6", &[&l0]);
}

/// Spec §4.4: broadcast is always in a slave's filter.
#[test]
fn broadcast_reaches_every_slave() {
    require_root();
    let t = Topo::new(2);
    setup_l2(&t, 2);
    let port = 5004;
    let bcast: Ipv4Addr = t.v4(255).parse().expect("v4");
    let dst = SocketAddr::new(IpAddr::V4(bcast), port);
    let l0 = Listener::start(t.ns(0), (Ipv4Addr::UNSPECIFIED, port).into(), vec![]);
    let l1 = Listener::start(t.ns(1), (Ipv4Addr::UNSPECIFIED, port).into(), vec![]);
    converge(&t, &t.router, dst, true, &[&l0, &l1]);
    send_and_expect_all(&t, &t.router, dst, true, "bcast", &[&l0, &l1]);
}

/// Spec §2.1: moving a slave removes its addresses; the daemon follows the slave to
/// its new namespace and learns the new address there; the old one is free again.
#[test]
fn slave_follows_a_second_move() {
    require_root();
    let t = Topo::new(3);
    setup_l2(&t, 2);
    let (router, ns0, ns1, ns2) = (
        t.router.clone(),
        t.ns(0).to_string(),
        t.ns(1).to_string(),
        t.ns(2).to_string(),
    );
    t.assert_ping(&ns0, &t.router_v4());

    // Off with its addresses, and on to ns2.
    ok(&format!(
        "ip -n {ns0} -4 addr del {}/24 dev ipvl0",
        t.v4(10)
    ));
    ok(&format!(
        "ip -n {ns0} -6 addr del {}/64 dev ipvl0",
        t.v6(10)
    ));
    ok(&format!("ip -n {ns0} link set ipvl0 netns {ns2}"));
    assert!(!link_exists(&ns0, "ipvl0"), "ipvl0 still in {ns0}");
    configure_slave(&t, &ns2, "ipvl0", 20);

    t.assert_ping(&router, &t.v4(20));
    t.assert_ping(&router, &t.v6(20));
    t.assert_ping(&ns2, &t.router_v4());
    t.assert_ping(&ns2, &t.router_v6());

    let mut list = show(&t, &[]);
    let moved = eventually(CONVERGE, || {
        list = show(&t, &[]);
        list.get("ipvl0")
            .is_some_and(|e| e["netns"] == ns2.as_str())
    });
    assert!(
        moved,
        "`ipvlan -j link show` does not place ipvl0 in {ns2}: {:?}",
        list.get("ipvl0")
    );

    // The old address is free: ns1 may take it and the router reaches it there.
    ok(&format!(
        "ip -n {ns1} -4 addr add {}/24 dev ipvl1",
        t.v4(10)
    ));
    // Give a (wrong) refusal the time to happen before checking it did not.
    thread::sleep(CONVERGE);
    assert!(
        v4_addrs(&ns1, "ipvl1").contains(&t.v4(10)),
        "the daemon removed {} from ipvl1 although its old owner gave it up\n{}",
        t.v4(10),
        t.diag()
    );
    t.assert_ping(&router, &t.v4(10));
    t.assert_ping(&router, &t.v4(11));
}

/// Spec §2.2: an address is unique per master; the duplicate is removed again and the
/// refusal logged, and the first owner keeps it.
#[test]
fn duplicate_address_is_refused() {
    require_root();
    let t = Topo::new(2);
    setup_l2(&t, 2);
    let (router, ns0, ns1) = (t.router.clone(), t.ns(0).to_string(), t.ns(1).to_string());
    let a = t.v4(10);

    ok(&format!("ip -n {ns1} -4 addr add {a}/24 dev ipvl1"));
    assert_refused(&t, &ns1, "ipvl1", &a);
    assert!(
        v4_addrs(&ns0, "ipvl0").contains(&a),
        "{a} vanished from its owner ipvl0"
    );
    t.assert_ping(&router, &a);
    t.assert_ping(&ns0, &t.router_v4());
    // ns1 keeps its own address and still works.
    t.assert_ping(&router, &t.v4(11));
    assert_log_mentions(&t, "Address already assigned");
}

/// Spec §5.3/§9: unicast for a slave address never reaches the master's own stack, even
/// when that stack has an address on the link and forwards.
#[test]
fn master_stack_never_sees_slave_unicast() {
    require_root();
    let t = Topo::new(2);
    setup_l2(&t, 2);
    let (host, router) = (t.host.clone(), t.router.clone());
    sysctl(&host, "net.ipv4.ip_forward", "1");
    sysctl(&host, "net.ipv6.conf.all.forwarding", "1");
    ok(&format!("ip -n {host} addr add {}/24 dev eth0", t.v4(254)));
    ok(&format!("ip -n {host} addr add {}/64 dev eth0", t.v6(254)));
    // The router has the slave's neighbour entry before counting.
    t.assert_ping(&router, &t.v4(10));
    t.assert_ping(&router, &t.v6(10));

    for (v6, counter, file) in [
        (false, "InReceives", "/proc/net/snmp"),
        (true, "Ip6InReceives", "/proc/net/snmp6"),
    ] {
        let addr = if v6 { t.v6(10) } else { t.v4(10) };
        let flag = if v6 { "-6 " } else { "" };
        let before = snmp(&host, file, counter);
        let (okay, out) = ping_out(&router, &format!("{flag}-c 30 -i 0.05 -W 2 {addr}"));
        let after = snmp(&host, file, counter);
        eprintln!("HOST {counter}: {before} -> {after} over 30 pings to {addr}");
        assert!(
            okay && out.contains("30 received"),
            "router -> {addr}: not all 30 replies came:\n{out}\n{}",
            t.diag()
        );
        assert!(
            !out.contains("DUP!"),
            "router -> {addr}: duplicate replies (the master's stack forwarded?):\n{out}"
        );
        assert!(
            after - before < 10,
            "HOST's {counter} grew by {} over 30 pings to {addr}: the master's stack saw \
             slave unicast",
            after - before
        );
    }

    // Control: the counters do count what the master's own stack receives.
    let before = snmp(&host, "/proc/net/snmp", "InReceives");
    t.assert_ping(&router, &t.v4(254));
    let after = snmp(&host, "/proc/net/snmp", "InReceives");
    assert!(
        after >= before + 2,
        "HOST's InReceives did not count pings to its own address: {before} -> {after}"
    );
}

/// A counter of HOST's `/proc/net/snmp` (`Ip:` table, e.g. `InReceives`) or
/// `/proc/net/snmp6` (`Ip6InReceives`), read inside `ns`.
fn snmp(ns: &str, file: &str, counter: &str) -> u64 {
    let text = ok(&format!("ip netns exec {ns} cat {file}"));
    if file.ends_with("snmp6") {
        for l in text.lines() {
            let mut it = l.split_whitespace();
            if it.next() == Some(counter) {
                return it.next().and_then(|v| v.parse().ok()).expect("a number");
            }
        }
    } else {
        let ip: Vec<&str> = text.lines().filter(|l| l.starts_with("Ip:")).collect();
        if ip.len() == 2 {
            let names: Vec<&str> = ip[0].split_whitespace().collect();
            let values: Vec<&str> = ip[1].split_whitespace().collect();
            if let Some(i) = names.iter().position(|n| *n == counter) {
                return values[i].parse().expect("a number");
            }
        }
    }
    panic!("no {counter} in {file} of {ns}:\n{text}");
}

/// Spec §2.1: a down slave's addresses leave the demux table but stay reserved; up
/// again, it is reachable again.
#[test]
fn down_slave_leaves_the_table() {
    require_root();
    let t = Topo::new(2);
    setup_l2(&t, 2);
    let (router, ns0, ns1) = (t.router.clone(), t.ns(0).to_string(), t.ns(1).to_string());
    let a = t.v4(10);

    ok(&format!("ip -n {ns0} link set ipvl0 down"));
    let unreachable = eventually(CONVERGE, || !ping(&router, &a));
    assert!(
        unreachable && !ping(&router, &a),
        "router still reaches {a} with ipvl0 down\n{}",
        t.diag()
    );

    // Still reserved while down.
    ok(&format!("ip -n {ns1} -4 addr add {a}/24 dev ipvl1"));
    assert_refused(&t, &ns1, "ipvl1", &a);
    assert_log_mentions(&t, "Address already assigned");

    // Up again: the IPv4 address survived, the router reaches it.
    ok(&format!("ip -n {ns0} link set ipvl0 up"));
    assert!(
        v4_addrs(&ns0, "ipvl0").contains(&a),
        "{a} did not survive link down/up"
    );
    t.assert_ping(&router, &a);
    t.assert_ping(&router, &t.v4(11));
    assert!(
        !v4_addrs(&ns1, "ipvl1").contains(&a),
        "{a} reappeared on ipvl1"
    );
}

/// Spec §4.1: `private` drops slave-to-slave unicast (port-wide), not traffic to the
/// outside; `vepa` sends slave-to-slave unicast out of the master (nothing hairpins it
/// back here); `mode l2` alone is bridge again.
#[test]
fn private_and_vepa_flags() {
    require_root();
    let t = Topo::new(2);
    setup_l2(&t, 2);
    let (ns0, ns1) = (t.ns(0).to_string(), t.ns(1).to_string());
    t.assert_ping(&ns0, &t.v4(11));
    t.assert_ping(&ns1, &t.v4(10));

    let set = |flags: &[&str]| {
        let mut args = vec![
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l2",
        ];
        args.extend_from_slice(flags);
        t.ipvlan_ok(&ns0, &args);
    };
    let assert_flag = |flag: &str| {
        let list = show(&t, &["-d"]);
        for name in ["ipvl0", "ipvl1"] {
            let e = list
                .get(name)
                .unwrap_or_else(|| panic!("no {name} in `ipvlan -j -d link show`: {list:?}"));
            assert_eq!(e["linkinfo"]["info_data"]["mode"], "l2", "{e}");
            assert_eq!(
                e["linkinfo"]["info_data"][flag], true,
                "{name} does not show {flag}: {e}"
            );
        }
    };
    let assert_blocked = |what: &str| {
        let blocked = eventually(CONVERGE, || !ping(&ns0, &t.v4(11)));
        assert!(
            blocked && !ping(&ns0, &t.v4(11)),
            "{what}: {ns0} -> {} unicast still works\n{}",
            t.v4(11),
            t.diag()
        );
    };

    // private
    set(&["private"]);
    assert_flag("private");
    assert_blocked("private");
    t.assert_ping(&ns0, &t.router_v4());
    t.assert_ping(&t.router, &t.v4(10));
    let list = show(&t, &["-s"]);
    let e = &list["ipvl0"];
    let dropped = e["stats64"]["drops"]["private"].as_u64().unwrap_or(0);
    eprintln!("ipvl0 private drops: {dropped}");
    assert!(
        dropped > 0,
        "no `private` drops counted for the sender ipvl0: {e}"
    );

    // back to bridge
    set(&[]);
    assert_flag("bridge");
    t.assert_ping(&ns0, &t.v4(11));
    t.assert_ping(&ns1, &t.v4(10));

    // vepa: no hairpinning switch here, so slave-to-slave unicast is lost.
    set(&["vepa"]);
    assert_flag("vepa");
    assert_blocked("vepa");
    t.assert_ping(&ns0, &t.router_v4());

    set(&["bridge"]);
    assert_flag("bridge");
    t.assert_ping(&ns0, &t.v4(11));
}
