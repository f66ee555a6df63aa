//! L3S through the master namespace's netfilter: DNAT in and MASQUERADE out with the
//! flows in HOST's conntrack, IPv4 and IPv6; traffic that keeps flowing while the
//! daemon is dead (the kernel backend routes L3S in the kernel,
//! `ipvlan_datapath::kernel::l3s`); HOST's own forwarding as it was; everything gone
//! with the port. Root only.
//!
//! The topology of C21: HOST holds 10.X.0.2/24 and fd00:X::2/64 on the master and
//! routes everything else via ROUTER (10.X.0.1, fd00:X::1); the slave in ns0 holds
//! 10.X.100.10 and fd00:X:100::10 with default routes on its device; ROUTER routes the
//! slave's subnets back via HOST. HOST checks reverse paths strictly (`rp_filter=1`).

#![forbid(unsafe_code)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

struct L3s {
    t: Topo,
    dev: String,
    s4: String,
    s6: String,
    host4: String,
    host6: String,
}

/// The topology without the port: HOST, ROUTER, their addresses and routes.
fn topology() -> Topo {
    require_root();
    let t = Topo::new(1);
    let x = t.x;
    let (h, r) = (t.host.clone(), t.router.clone());
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
    sysctl(&h, "net.ipv4.conf.all.rp_filter", "1");
    sysctl(&h, "net.ipv4.conf.eth0.rp_filter", "1");
    ok(&format!("ip -n {r} route add 10.{x}.100.0/24 via {host4}"));
    ok(&format!(
        "ip -n {r} -6 route add fd00:{x}:100::/64 via {host6}"
    ));
    t
}

/// The slave in L3S on [`topology`].
fn setup_on(t: Topo) -> L3s {
    let x = t.x;
    let s1 = t.ns(0).to_string();
    let (s4, s6) = (format!("10.{x}.100.10"), format!("fd00:{x}:100::10"));
    let dev = add_slave(&t, 0, &["mode", "l3s"]);
    ok(&format!("ip -n {s1} addr add {s4}/24 dev {dev}"));
    ok(&format!("ip -n {s1} addr add {s6}/64 dev {dev} nodad"));
    ok(&format!("ip -n {s1} route add default dev {dev}"));
    ok(&format!("ip -n {s1} -6 route add default dev {dev}"));
    let (host4, host6) = (t.v4(2), t.v6(2));
    L3s {
        t,
        dev,
        s4,
        s6,
        host4,
        host6,
    }
}

fn setup() -> L3s {
    setup_on(topology())
}

impl L3s {
    /// HOST, ROUTER and the slave's namespace.
    fn names(&self) -> (String, String, String) {
        let t = &self.t;
        (t.host.clone(), t.router.clone(), t.ns(0).to_string())
    }

    /// ROUTER reaches the slave's IPv4 and IPv6 address (`when`: at which point).
    fn assert_router_reaches_slave(&self, when: &str) {
        for a in [&self.s4, &self.s6] {
            assert!(
                reaches(&self.t.router, a),
                "ROUTER cannot reach the slave's {a} {when}\n{}",
                self.t.diag()
            );
        }
    }
}

/// HOST's conntrack table for one family (`-f ipv4|ipv6`).
fn conntrack(ns: &str, family: &str) -> String {
    stdout(&sh(&format!(
        "ip netns exec {ns} conntrack -L -f {family} 2>/dev/null"
    )))
}

fn reaches(ns: &str, addr: &str) -> bool {
    eventually(Duration::from_secs(10), || ping(ns, addr))
}

/// ROUTER reaches the slave through a DNAT rule in HOST (a service address routed via
/// HOST, translated to the slave's), the reply comes back from the service address;
/// HOST's conntrack lists the translated flow. IPv4 and IPv6.
#[test]
fn l3s_dnat_in_is_tracked() {
    let s = setup();
    let (t, h, r) = (&s.t, s.t.host.clone(), s.t.router.clone());
    let x = t.x;
    let (svc4, svc6) = (format!("10.{x}.200.1"), format!("fd00:{x}:200::1"));
    ok(&format!(
        "ip -n {r} route add 10.{x}.200.0/24 via {}",
        s.host4
    ));
    ok(&format!(
        "ip -n {r} -6 route add fd00:{x}:200::/64 via {}",
        s.host6
    ));
    nft(
        &h,
        &format!(
            "table inet natt {{
  chain pre {{ type nat hook prerouting priority -100; policy accept;
    iifname \"eth0\" ip daddr {svc4} dnat ip to {s4}
    iifname \"eth0\" ip6 daddr {svc6} dnat ip6 to {s6}
  }}
}}
",
            s4 = s.s4,
            s6 = s.s6
        ),
    );
    for (svc, slave, family) in [(&svc4, &s.s4, "ipv4"), (&svc6, &s.s6, "ipv6")] {
        assert!(
            reaches(&r, svc),
            "ROUTER cannot reach the slave through HOST's DNAT of {svc}\n{}",
            t.diag()
        );
        let ct = conntrack(&h, family);
        assert!(
            ct.lines()
                .any(|l| l.contains(&format!("dst={svc}")) && l.contains(&format!("src={slave}"))),
            "HOST's conntrack lists no flow to {svc} translated to {slave}:\n{ct}"
        );
    }
}

/// The slave reaches ROUTER through a MASQUERADE rule in HOST while ROUTER has no route
/// back to the slave's subnets; HOST's conntrack lists the flow with HOST's address as
/// the reply's destination. IPv4 and IPv6.
#[test]
fn l3s_masquerade_out_is_tracked() {
    let s = setup();
    let (t, h, r, s1) = (
        &s.t,
        s.t.host.clone(),
        s.t.router.clone(),
        s.t.ns(0).to_string(),
    );
    let x = t.x;
    ok(&format!("ip -n {r} route del 10.{x}.100.0/24"));
    ok(&format!("ip -n {r} -6 route del fd00:{x}:100::/64"));
    // Without the NAT the replies have no way back.
    assert!(
        !ping(&s1, &t.router_v4()),
        "the slave reached ROUTER without a route back"
    );
    nft(
        &h,
        &format!(
            "table inet natt {{
  chain post {{ type nat hook postrouting priority 100; policy accept;
    oifname \"eth0\" ip saddr 10.{x}.100.0/24 masquerade
    oifname \"eth0\" ip6 saddr fd00:{x}:100::/64 masquerade
  }}
}}
"
        ),
    );
    let _ = sh(&format!("ip netns exec {h} conntrack -F"));
    for (to, slave, host, family) in [
        (t.router_v4(), &s.s4, &s.host4, "ipv4"),
        (t.router_v6(), &s.s6, &s.host6, "ipv6"),
    ] {
        assert!(
            reaches(&s1, &to),
            "the slave cannot reach {to} through HOST's MASQUERADE\n{}",
            t.diag()
        );
        let ct = conntrack(&h, family);
        assert!(
            ct.lines()
                .any(|l| l.contains(&format!("src={slave} dst={to}"))
                    && l.contains(&format!("dst={host}"))),
            "HOST's conntrack lists no masqueraded flow from {slave} to {to}:\n{ct}"
        );
    }
}

/// Pings `addr` from `ns` 60 times, 50 ms apart.
fn pinger(ns: &str, addr: &str) -> std::process::Child {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", "60", "-i", "0.05", "-W", "1",
        ])
        .arg(addr)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ping")
}

/// The replies a finished [`pinger`] got, and its summary line.
fn replies(p: std::process::Child) -> (u32, String) {
    let out = p.wait_with_output().expect("ping ran");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"))
        .to_string();
    let received = summary
        .split(", ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (received, summary)
}

/// The daemon killed (SIGKILL) while the slave pings ROUTER and ROUTER the slave, IPv4
/// and IPv6: with the kernel backend no reply is lost; then a new daemon takes the
/// slave back.
#[test]
fn l3s_keeps_flowing_while_the_daemon_is_dead() {
    let mut s = setup();
    let (r, s1) = (s.t.router.clone(), s.t.ns(0).to_string());
    let pairs = [
        (s1.clone(), s.t.router_v4()),
        (s1.clone(), s.t.router_v6()),
        (r.clone(), s.s4.clone()),
        (r.clone(), s.s6.clone()),
    ];
    for (from, to) in &pairs {
        assert!(
            reaches(from, to),
            "{from} cannot reach {to} in L3S\n{}",
            s.t.diag()
        );
    }
    let pingers: Vec<_> = pairs.iter().map(|(from, to)| pinger(from, to)).collect();
    std::thread::sleep(Duration::from_millis(500));
    s.t.daemon_mut().kill(Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(1500));
    s.t.daemon_mut().spawn();
    for p in pingers {
        let (received, summary) = replies(p);
        if user_backend() {
            // The user backend carries nothing while no daemon runs.
            assert!(received >= 20, "too few replies across the kill: {summary}");
        } else {
            assert_eq!(received, 60, "L3S paused without the daemon: {summary}");
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

/// FAR, deleted on every way out (its veth with it).
struct Far(String);

impl Drop for Far {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.0));
    }
}

/// A namespace FAR behind HOST (10.X.150.2/24, fd00:X:150::2/64 on a veth of HOST's),
/// ROUTER's routes to it via HOST; its IPv4 and IPv6 address.
fn far_behind_host(t: &Topo) -> (Far, String, String) {
    let x = t.x;
    let (h, r) = (t.host.clone(), t.router.clone());
    let far = format!("{}-far", t.prefix);
    let _ = sh(&format!("ip netns del {far}"));
    ok(&format!("ip netns add {far}"));
    let guard = Far(far.clone());
    sysctl(&far, "net.ipv6.conf.all.accept_dad", "0");
    sysctl(&far, "net.ipv6.conf.default.accept_dad", "0");
    ok(&format!(
        "ip -n {h} link add far0 type veth peer name eth0 netns {far}"
    ));
    sysctl(&h, "net.ipv6.conf.far0.accept_dad", "0");
    ok(&format!("ip -n {h} addr add 10.{x}.150.1/24 dev far0"));
    ok(&format!(
        "ip -n {h} addr add fd00:{x}:150::1/64 dev far0 nodad"
    ));
    ok(&format!("ip -n {h} link set far0 up"));
    ok(&format!("ip -n {far} addr add 10.{x}.150.2/24 dev eth0"));
    ok(&format!(
        "ip -n {far} addr add fd00:{x}:150::2/64 dev eth0 nodad"
    ));
    ok(&format!("ip -n {far} link set eth0 up"));
    ok(&format!("ip -n {far} link set lo up"));
    ok(&format!("ip -n {far} route add default via 10.{x}.150.1"));
    ok(&format!(
        "ip -n {far} -6 route add default via fd00:{x}:150::1"
    ));
    ok(&format!(
        "ip -n {r} route add 10.{x}.150.0/24 via {}",
        t.v4(2)
    ));
    ok(&format!(
        "ip -n {r} -6 route add fd00:{x}:150::/64 via {}",
        t.v6(2)
    ));
    (guard, format!("10.{x}.150.2"), format!("fd00:{x}:150::2"))
}

/// Whether ROUTER reaches FAR through HOST depends on HOST's forwarding as it was when
/// the L3S port came: yes where HOST forwarded, not where it did not.
#[test]
fn l3s_leaves_the_hosts_forwarding_as_it_was() {
    let t = topology();
    let (h, r) = (t.host.clone(), t.router.clone());
    let (far_ns, far4, far6) = far_behind_host(&t);
    let far = far_ns.0.clone();
    let set_forwarding = |on: &str| {
        sysctl(&h, "net.ipv4.conf.all.forwarding", on);
        sysctl(&h, "net.ipv6.conf.all.forwarding", on);
    };
    let sysctls = || {
        [
            "net/ipv4/conf/all/forwarding",
            "net/ipv4/conf/eth0/forwarding",
            "net/ipv6/conf/all/forwarding",
            "net/ipv6/conf/eth0/forwarding",
            "net/ipv6/conf/eth0/force_forwarding",
        ]
        .map(|k| ok(&format!("ip netns exec {h} cat /proc/sys/{k}")))
    };

    // HOST forwarding when the port comes: ROUTER reaches FAR and the slave.
    set_forwarding("1");
    let s = setup_on(t);
    let (t, s1) = (&s.t, s.t.ns(0).to_string());
    for addr in [&far4, &far6, &s.s4, &s.s6] {
        assert!(
            reaches(&r, addr),
            "ROUTER cannot reach {addr} through a forwarding HOST with the L3S port\n{}",
            t.diag()
        );
    }
    t.ipvlan_ok(&s1, &["link", "del", "dev", &s.dev]);

    // HOST not forwarding: ROUTER does not reach FAR (the control), nor once the L3S
    // port is there and carries the slave's traffic; HOST's `all` sysctls as they were.
    set_forwarding("0");
    let before = sysctls();
    for addr in [&far4, &far6] {
        assert!(
            !ping(&r, addr),
            "ROUTER reached {addr} through HOST that does not forward"
        );
    }
    let dev = add_slave(t, 0, &["mode", "l3s"]);
    ok(&format!("ip -n {s1} addr add {}/24 dev {dev}", s.s4));
    ok(&format!("ip -n {s1} addr add {}/64 dev {dev} nodad", s.s6));
    ok(&format!("ip -n {s1} route add default dev {dev}"));
    ok(&format!("ip -n {s1} -6 route add default dev {dev}"));
    for addr in [&s.s4, &s.s6] {
        assert!(
            reaches(&r, addr),
            "ROUTER cannot reach the L3S slave's {addr}\n{}",
            t.diag()
        );
    }
    for addr in [&far4, &far6] {
        assert!(
            !ping(&r, addr),
            "ROUTER reached {addr} through HOST once the L3S port was there\n{}",
            t.diag()
        );
    }
    // FAR's own traffic out through HOST is not forwarded either.
    assert!(
        !ping(&far, &t.router_v4()),
        "FAR reached ROUTER through HOST"
    );
    let with_port = sysctls();
    assert_eq!(
        (&with_port[0], &with_port[2]),
        (&before[0], &before[2]),
        "HOST's all.forwarding changed with the port"
    );
}

/// The table number the port of master `eth0` in `ns` uses (`kernel::l3s::table`).
fn table_of(ns: &str) -> u64 {
    let v = json(&format!("ip -n {ns} -j link show dev eth0"));
    0x1a5c_0000 + (v[0]["ifindex"].as_u64().expect("ifindex") & 0xffff)
}

/// What the L3S routing leaves in HOST: rules on the master, routes of its table,
/// permanent neighbour entries, and the master's forwarding sysctls.
fn leftovers(h: &str, table: u64) -> (String, String, String, [String; 3]) {
    let rules = ok(&format!("ip -n {h} rule show; ip -n {h} -6 rule show"));
    let rules = rules
        .lines()
        .filter(|l| l.contains("iif eth0"))
        .collect::<Vec<_>>()
        .join("\n");
    let routes = stdout(&sh(&format!(
        "ip -n {h} route show table {table} 2>/dev/null; ip -n {h} -6 route show table {table} 2>/dev/null"
    )));
    let neigh = ok(&format!(
        "ip -n {h} neigh show nud permanent; ip -n {h} -6 neigh show nud permanent"
    ));
    let neigh = neigh
        .lines()
        .filter(|l| !l.contains("dev eth0"))
        .collect::<Vec<_>>()
        .join("\n");
    let sysctls = [
        "net/ipv4/conf/eth0/forwarding",
        "net/ipv6/conf/eth0/force_forwarding",
        "net/ipv6/conf/all/forwarding",
    ]
    .map(|k| ok(&format!("ip netns exec {h} cat /proc/sys/{k}")));
    (rules, routes, neigh, sysctls)
}

/// The slave's routing (rules, table, neighbour entries, the master's sysctls) exists
/// while the port is in L3S with the kernel backend, and is all gone when the mode
/// leaves L3S and when the port goes.
#[test]
fn l3s_routing_goes_with_the_port() {
    let t = topology();
    let h = t.host.clone();
    let table = table_of(&h);
    let clean = leftovers(&h, table);
    assert!(
        clean.0.is_empty() && clean.1.trim().is_empty() && clean.2.is_empty(),
        "L3S routing before any port: {clean:?}"
    );
    let s = setup_on(t);
    let (t, s1) = (&s.t, s.t.ns(0).to_string());
    assert!(
        reaches(&s1, &t.router_v4()),
        "the L3S slave cannot reach ROUTER\n{}",
        t.diag()
    );
    if !user_backend() {
        let set_up = leftovers(&h, table);
        assert!(
            set_up.0.contains(&format!("lookup {table}"))
                && set_up.1.contains(&s.s4)
                && set_up.1.contains(&s.s6)
                && set_up.2.contains(&s.s4),
            "no L3S routing for the slave in HOST: {set_up:?}"
        );
    }
    // To L3 and back: removed and made again.
    t.ipvlan_ok(
        &s1,
        &["link", "set", "dev", &s.dev, "type", "ipvlan", "mode", "l3"],
    );
    assert!(
        eventually(Duration::from_secs(5), || leftovers(&h, table) == clean),
        "L3S routing left in L3: {:?} (was {clean:?})",
        leftovers(&h, table)
    );
    t.ipvlan_ok(
        &s1,
        &[
            "link", "set", "dev", &s.dev, "type", "ipvlan", "mode", "l3s",
        ],
    );
    assert!(
        reaches(&s1, &t.router_v4()),
        "the slave cannot reach ROUTER back in L3S\n{}",
        t.diag()
    );
    // The port goes with its last slave.
    t.ipvlan_ok(&s1, &["link", "del", "dev", &s.dev]);
    assert!(
        eventually(Duration::from_secs(5), || leftovers(&h, table) == clean),
        "L3S routing left after the port went: {:?} (was {clean:?})",
        leftovers(&h, table)
    );
}

/// Host access switched on and off on a port already routing L3S: ROUTER keeps reaching
/// the slave through HOST (the routed ingress's neighbour entries outlive the host
/// end's ARP flag changing under them), and HOST reaches it while the switch is on.
#[test]
fn l3s_routing_survives_host_access_switching() {
    let s = setup();
    let (t, (h, _, s1)) = (&s.t, s.names());
    let switch = |on: &str| {
        let out = t.ipvlan(
            &s1,
            &[
                "link",
                "set",
                "dev",
                &s.dev,
                "type",
                "ipvlan",
                "host_access",
                on,
            ],
        );
        assert!(out.status.success(), "host_access {on}: {}", stderr(&out));
    };
    s.assert_router_reaches_slave("before host access");
    switch("on");
    s.assert_router_reaches_slave("with host access on");
    for a in [&s.s4, &s.s6] {
        assert!(
            reaches(&h, a),
            "HOST cannot reach the slave's {a} with host access on\n{}",
            t.diag()
        );
    }
    switch("off");
    s.assert_router_reaches_slave("after host access went off");
}

/// HOST's forwarding changed while an L3S port is there: turned on for everything (as
/// Docker does with `ip_forward=1`), ROUTER reaches FAR through HOST, as HOST now
/// wants; turned off again, it does not, and the slave stays reachable all along
/// (the kernel turns every device's forwarding off, the port's own included).
#[test]
fn l3s_follows_the_hosts_forwarding() {
    let t = topology();
    let (h, r) = (t.host.clone(), t.router.clone());
    let (_far, far4, far6) = far_behind_host(&t);
    let s = setup_on(t);
    let t = &s.t;
    let set_forwarding = |on: &str| {
        sysctl(&h, "net.ipv4.conf.all.forwarding", on);
        sysctl(&h, "net.ipv6.conf.all.forwarding", on);
    };
    s.assert_router_reaches_slave("with the port made");
    for a in [&far4, &far6] {
        assert!(
            !ping(&r, a),
            "ROUTER reached {a} through HOST that does not forward"
        );
    }
    set_forwarding("1");
    for a in [&far4, &far6] {
        assert!(
            reaches(&r, a),
            "ROUTER cannot reach {a} once HOST forwards everything\n{}",
            t.diag()
        );
    }
    s.assert_router_reaches_slave("once HOST forwards everything");
    set_forwarding("0");
    s.assert_router_reaches_slave("after HOST turned forwarding off for everything");
    for a in [&far4, &far6] {
        assert!(
            !ping(&r, a),
            "ROUTER reached {a} after HOST turned forwarding off\n{}",
            t.diag()
        );
    }
}

/// HOST takes the master down and up again, renames it (down, new name, up), takes
/// the slave's host end down: ROUTER and the slave keep reaching each other both ways
/// through it, IPv4 and IPv6 (the kernel drops the routes and neighbour entries through
/// host ends that go down; the routed L3S rules follow the new name).
#[test]
fn l3s_outlives_its_links_going_down_and_renamed() {
    let s = setup();
    let (t, (h, _, s1)) = (&s.t, s.names());
    let both_ways = |when: &str| {
        s.assert_router_reaches_slave(when);
        for a in [t.router_v4(), t.router_v6()] {
            assert!(
                reaches(&s1, &a),
                "the slave cannot reach ROUTER's {a} {when}\n{}",
                t.diag()
            );
        }
    };
    // What HOST's network configuration does when its link comes back: the kernel
    // dropped its IPv6 address (`keep_addr_on_down` 0) and the routes through it.
    let configure = |dev: &str| {
        ok(&format!(
            "ip -n {h} -6 addr replace {}/64 dev {dev} nodad",
            s.host6
        ));
        ok(&format!(
            "ip -n {h} route replace default via {}",
            t.router_v4()
        ));
        ok(&format!(
            "ip -n {h} -6 route replace default via {}",
            t.router_v6()
        ));
    };
    both_ways("before the master went down");
    ok(&format!("ip -n {h} link set eth0 down"));
    ok(&format!("ip -n {h} link set eth0 up"));
    configure("eth0");
    both_ways("after the master went down and up again");
    // A master that is down is no error of the routing's: it waits for it.
    let log = t.daemon().log_text();
    assert!(
        !log.contains("L3S routing for"),
        "the L3S routing logged an error while the master was down:\n{log}"
    );
    ok(&format!("ip -n {h} link set eth0 down"));
    ok(&format!("ip -n {h} link set eth0 name wan0"));
    ok(&format!("ip -n {h} link set wan0 up"));
    configure("wan0");
    both_ways("after the master was renamed wan0");
    // The slave's host end alone taken down from outside: the daemon puts it up again,
    // and what the kernel dropped with it.
    let he = host_end(t, &s.dev);
    ok(&format!("ip -n {h} link set {he} down"));
    assert!(
        eventually(Duration::from_secs(5), || link_json(&h, &he)["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"))),
        "host end {he} not put up again"
    );
    both_ways("after its host end was taken down and put up again");
    let shown = t.ipvlan_ok(&s1, &["link", "show", "dev", &s.dev]);
    assert!(shown.contains("@wan0"), "{shown}");
}
