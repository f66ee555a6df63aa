//! L3 egress routed through the master's namespace (spec §4.2 step 3): what leaves, how,
//! and what does not; and that it keeps flowing without the daemon (the kernel backend
//! routes it in the kernel, `ipvlan_core::fastpath`). Root only.
//!
//! The topology of C21: HOST holds 10.X.0.2/24 and fd00:X::2/64 on the master and
//! routes everything else via ROUTER (10.X.0.1, fd00:X::1); the slave in ns0 holds
//! 10.X.100.10 and fd00:X:100::10 (another subnet) with default routes on its device;
//! ROUTER routes the slave's subnets back via HOST. ROUTER counts what arrives with
//! named nftables counters.

#![forbid(unsafe_code)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// The hop limit the slave sends with: the router must see it unchanged.
const TTL: u32 = 17;

struct Routed {
    t: Topo,
    dev: String,
    s4: String,
    s6: String,
    host4: String,
    host6: String,
}

fn setup() -> Routed {
    require_root();
    let t = Topo::new(1);
    let x = t.x;
    let (h, r, s1) = (t.host.clone(), t.router.clone(), t.ns(0).to_string());
    let (s4, s6) = (format!("10.{x}.100.10"), format!("fd00:{x}:100::10"));
    let (host4, host6) = (t.v4(2), t.v6(2));
    ok(&format!("ip -n {h} addr add {host4}/24 dev eth0"));
    ok(&format!("ip -n {h} addr add {host6}/64 dev eth0 nodad"));
    ok(&format!(
        "ip -n {h} route add default via {}",
        t.router_v4()
    ));
    ok(&format!(
        "ip -n {h} -6 route add default via {}",
        t.router_v6()
    ));
    ok(&format!("ip -n {r} route add 10.{x}.100.0/24 via {host4}"));
    ok(&format!(
        "ip -n {r} -6 route add fd00:{x}:100::/64 via {host6}"
    ));
    let dev = add_slave(&t, 0, &["mode", "l3"]);
    ok(&format!("ip -n {s1} addr add {s4}/24 dev {dev}"));
    ok(&format!("ip -n {s1} addr add {s6}/64 dev {dev} nodad"));
    ok(&format!("ip -n {s1} route add default dev {dev}"));
    ok(&format!("ip -n {s1} -6 route add default dev {dev}"));
    Routed {
        t,
        dev,
        s4,
        s6,
        host4,
        host6,
    }
}

/// Packets counted by the named counter `name` of table `inet t` in `ns`.
fn counted(ns: &str, name: &str) -> u64 {
    let v = json(&format!(
        "ip netns exec {ns} nft -j list counter inet t {name}"
    ));
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| o.get("counter"))
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {ns}: {v}"))
}

/// The slave's transmit drops as `ipvlan -s link show` reports them.
fn tx_dropped(t: &Topo, dev: &str) -> u64 {
    links_by_name(t, t.ns(0), &["-s"])
        .get(dev)
        .and_then(|l| l["stats64"]["tx"]["dropped"].as_u64())
        .unwrap_or(0)
}

/// Pings `addr` from `ns` `count` times with hop limit [`TTL`]; true if any reply.
fn ping_ttl(ns: &str, addr: &str, count: u32) -> bool {
    let v6 = if addr.contains(':') { "-6" } else { "-4" };
    sh(&format!(
        "ip netns exec {ns} ping {v6} -t {TTL} -c {count} -i 0.2 -W 1 {addr}"
    ))
    .status
    .success()
}

/// The slave reaches the router on another subnet through HOST's routing; the router
/// sees the hop limit the slave sent (the driver does not decrement it), IPv4 and IPv6.
#[test]
fn l3_egress_is_routed_with_the_ttl_unchanged() {
    let s = setup();
    let (t, r, s1) = (&s.t, s.t.router.clone(), s.t.ns(0).to_string());
    nft(
        &r,
        &format!(
            "table inet t {{
  counter all4 {{}}
  counter ttl4 {{}}
  counter all6 {{}}
  counter ttl6 {{}}
  chain c {{ type filter hook input priority 0; policy accept;
    ip saddr {s4} icmp type echo-request counter name all4
    ip saddr {s4} icmp type echo-request ip ttl {TTL} counter name ttl4
    ip6 saddr {s6} icmpv6 type echo-request counter name all6
    ip6 saddr {s6} icmpv6 type echo-request ip6 hoplimit {TTL} counter name ttl6
  }}
}}
",
            s4 = s.s4,
            s6 = s.s6
        ),
    );
    for addr in [t.router_v4(), t.router_v6()] {
        let reached = eventually(Duration::from_secs(10), || ping_ttl(&s1, &addr, 2));
        assert!(reached, "the L3 slave cannot reach {addr}\n{}", t.diag());
    }
    for (all, ttl) in [("all4", "ttl4"), ("all6", "ttl6")] {
        let (n, kept) = (counted(&r, all), counted(&r, ttl));
        assert!(n > 0, "the router counted no echo request ({all})");
        assert_eq!(
            n, kept,
            "{kept} of {n} echo requests reached the router with hop limit {TTL} ({ttl})"
        );
    }
}

/// A destination in the master's own namespace is delivered to its stack (HOST's INPUT
/// sees it), never sent out of the master (the router sees nothing for it), IPv4 and
/// IPv6.
#[test]
fn l3_egress_to_the_master_namespace_stays_there() {
    let s = setup();
    let (t, h, r, s1) = (
        &s.t,
        s.t.host.clone(),
        s.t.router.clone(),
        s.t.ns(0).to_string(),
    );
    let rules = |hook: &str| {
        format!(
            "table inet t {{
  counter to4 {{}}
  counter to6 {{}}
  chain c {{ type filter hook {hook} priority 0; policy accept;
    ip daddr {h4} icmp type echo-request counter name to4
    ip6 daddr {h6} icmpv6 type echo-request counter name to6
  }}
}}
",
            h4 = s.host4,
            h6 = s.host6
        )
    };
    nft(&h, &rules("input"));
    nft(&r, &rules("ingress device eth0"));
    // The master's namespace has no route back to the slave's subnet but via the
    // router (as with the driver, its own traffic cannot reach an L3 slave): count the
    // requests, not the replies.
    for (addr, name) in [(&s.host4, "to4"), (&s.host6, "to6")] {
        let arrived = eventually(Duration::from_secs(10), || {
            let _ = ping_ttl(&s1, addr, 1);
            counted(&h, name) > 0
        });
        assert!(
            arrived,
            "HOST's stack got none of the slave's echo requests to {addr}\n{}",
            t.diag()
        );
        assert_eq!(
            counted(&r, name),
            0,
            "echo requests for HOST's own {addr} left the master"
        );
    }
}

/// What the master's namespace cannot route as unicast is not sent: IPv4 to what it
/// routes as broadcast (counted as a transmit drop of the slave), IPv6 to a blackhole
/// (counted by the kernel in the master's `tx_errors`, which a veth does not report).
#[test]
fn l3_egress_without_a_route_is_not_sent() {
    let s = setup();
    let (t, h, r, s1) = (
        &s.t,
        s.t.host.clone(),
        s.t.router.clone(),
        s.t.ns(0).to_string(),
    );
    let x = t.x;
    let bcast = format!("10.{x}.0.255");
    let hole = format!("fd00:{x}:dead::1");
    ok(&format!(
        "ip -n {h} -6 route add blackhole fd00:{x}:dead::/48"
    ));
    nft(
        &r,
        &format!(
            "table inet t {{
  counter b4 {{}}
  counter h6 {{}}
  chain c {{ type filter hook ingress device eth0 priority 0; policy accept;
    ip daddr {bcast} counter name b4
    ip6 daddr {hole} counter name h6
  }}
}}
"
        ),
    );
    // The path works at all.
    assert!(
        eventually(Duration::from_secs(10), || ping_ttl(&s1, &t.router_v4(), 1)),
        "the L3 slave cannot reach the router\n{}",
        t.diag()
    );
    let before = tx_dropped(t, &s.dev);
    assert!(!ping_ttl(&s1, &bcast, 3), "a reply from {bcast}");
    let mut after = before;
    let counted_drops = eventually(Duration::from_secs(5), || {
        after = tx_dropped(t, &s.dev);
        after >= before + 3
    });
    assert!(
        counted_drops,
        "transmit drops of {} went {before} -> {after} over 3 pings to {bcast}\n{}",
        s.dev,
        t.diag()
    );
    assert!(!ping_ttl(&s1, &hole, 3), "a reply from {hole}");
    assert_eq!(counted(&r, "b4"), 0, "packets to {bcast} left the master");
    assert_eq!(counted(&r, "h6"), 0, "packets to {hole} left the master");
}

/// The daemon killed (SIGKILL) while the slave pings the router, IPv4 and IPv6: with
/// the kernel backend no reply is lost (routed egress does not pass the daemon); then
/// a new daemon takes the slave back.
#[test]
fn l3_egress_keeps_flowing_while_the_daemon_is_dead() {
    let mut s = setup();
    let s1 = s.t.ns(0).to_string();
    for addr in [s.t.router_v4(), s.t.router_v6()] {
        assert!(
            eventually(Duration::from_secs(10), || ping_ttl(&s1, &addr, 1)),
            "the L3 slave cannot reach {addr}\n{}",
            s.t.diag()
        );
    }
    let start = |addr: &str| {
        Command::new("ip")
            .args([
                "netns", "exec", &s1, "ping", "-c", "60", "-i", "0.05", "-W", "1",
            ])
            .arg(addr)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ping")
    };
    let pingers = [start(&s.t.router_v4()), start(&s.t.router_v6())];
    std::thread::sleep(Duration::from_millis(500));
    s.t.daemon_mut().kill(Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(1500));
    s.t.daemon_mut().spawn();
    for p in pingers {
        let out = p.wait_with_output().expect("ping ran");
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"))
            .to_string();
        let received: u32 = summary
            .split(", ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if std::env::var("IPVLAN_TEST_BACKEND").as_deref() == Ok("user") {
            // The user backend routes nothing while no daemon runs.
            assert!(received >= 20, "too few replies across the kill: {summary}");
        } else {
            assert_eq!(
                received, 60,
                "L3 egress paused without the daemon: {summary}"
            );
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || s
            .t
            .daemon()
            .log_text()
            .contains("took back 1 slave(s)")),
        "no adoption in the log"
    );
    s.t.assert_ping(&s1, &s.t.router_v4());
}
