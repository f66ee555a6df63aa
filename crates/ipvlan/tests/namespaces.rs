//! Namespaces their owners delete, and namespaces as fresh as a runtime hands them over:
//! a deleted master namespace is destroyed with its devices (the daemon does not keep it
//! alive) and its slaves are forgotten; a deleted slave namespace frees its slave only;
//! the MTUs the kernel accepts; every mode made where `lo` is down and the master has
//! no address and no carrier; and a loop of namespaces made and deleted after which the
//! daemon holds what it held before. Root only: fresh namespaces (see `common`).

#![forbid(unsafe_code)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

const MODES: [&str; 3] = ["l2", "l3", "l3s"];

/// How long the kernel and the daemon get to destroy a deleted namespace.
const GONE: Duration = Duration::from_secs(15);

/// The slaves `ipvlan -j link show` lists, asked from `ns`.
fn listed(t: &Topo, ns: &str) -> Vec<String> {
    let out = t.ipvlan_ok(ns, &["-j", "link", "show"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["ifname"].as_str().map(String::from))
        .collect()
}

/// `ipvlan -j monitor`, run from `ns`: its lines, parsed.
struct Monitor {
    child: std::process::Child,
    lines: mpsc::Receiver<Value>,
}

impl Monitor {
    fn start(t: &Topo, ns: &str) -> Monitor {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, BIN, "-j", "monitor"])
            .env("IPVLAN_SOCKET", &t.daemon().socket)
            .env("IPVLAN_NO_AUTOSTART", "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ipvlan monitor");
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Monitor { child, lines }
    }

    /// Returns once the monitor hears: it is told of an address added to `dev` in `ns`
    /// (added again until it is, as it may subscribe after the first).
    fn subscribed(&self, t: &Topo, ns: &str, dev: &str) {
        let addr = format!("{}/24", t.v4(10));
        for _ in 0..20 {
            ok(&format!("ip -n {ns} addr add {addr} dev {dev}"));
            if self.saw_within(Duration::from_millis(500), |v| {
                v["event"] == "addr_learned" && v["slave"] == dev
            }) {
                return;
            }
            ok(&format!("ip -n {ns} addr del {addr} dev {dev}"));
        }
        panic!("the monitor told no addr_learned for {dev}");
    }

    /// Whether a line matching `pred` comes within `GONE`.
    fn saw(&self, pred: impl Fn(&Value) -> bool) -> bool {
        self.saw_within(GONE, pred)
    }

    fn saw_within(&self, limit: Duration, pred: impl Fn(&Value) -> bool) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The descriptors the daemon holds: all of them, and those of network namespaces.
fn daemon_fds(t: &Topo) -> (usize, usize) {
    let pid = t.daemon().pid().expect("the daemon runs");
    let mut all = 0;
    let mut netns = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's fds")
        .flatten()
    {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("net:[")) {
            netns += 1;
        }
    }
    (all, netns)
}

/// Network namespaces alive on the machine as `/proc` shows them: the distinct ones
/// of every process and of every nsfs mount (PID 1's and ours). Printed, not
/// asserted: other tests make and delete namespaces meanwhile.
fn machine_namespaces() -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(l) = std::fs::read_link(e.path().join("ns/net")) {
            seen.insert(l.to_string_lossy().into_owned());
        }
    }
    for info in ["/proc/1/mountinfo", "/proc/self/mountinfo"] {
        for line in std::fs::read_to_string(info).unwrap_or_default().lines() {
            if line.contains(" - nsfs ")
                && let Some(root) = line.split(' ').nth(3)
                && root.starts_with("net:[")
            {
                seen.insert(root.to_string());
            }
        }
    }
    seen.len()
}

/// Master `eth0` in HOST (its peer in ROUTER), a slave of `mode` in ns0 with an
/// address; `ip netns del HOST`: HOST is destroyed with its devices (the peer goes
/// from ROUTER, as with the kernel's driver), the slave end goes from ns0, and the
/// daemon forgets the slave, says so in `monitor`, and serves on.
fn master_namespace_deleted(mode: &str) {
    let mut t = Topo::new(1);
    let dev = add_slave(&t, 0, &["mode", mode]);
    assert!(
        eventually(GONE, || listed(&t, &t.router).contains(&dev)),
        "{dev} not listed"
    );
    let monitor = Monitor::start(&t, &t.router);
    monitor.subscribed(&t, t.ns(0), &dev);
    let host = t.host.clone();
    t.del_netns(&host);
    let router = t.router.clone();
    assert!(
        eventually(GONE, || !link_exists(&router, "eth0")),
        "the master's peer is still in {router}: {host} was kept alive"
    );
    assert!(
        eventually(GONE, || !link_exists(t.ns(0), &dev)),
        "{dev} is still in {}",
        t.ns(0)
    );
    assert!(
        monitor.saw(|v| v["event"] == "slave_removed" && v["slave"] == dev.as_str()),
        "monitor told no slave_removed for {dev}"
    );
    assert!(
        eventually(GONE, || !listed(&t, &router).contains(&dev)),
        "{dev} still listed"
    );
    assert!(
        t.daemon()
            .log_text()
            .contains("forgotten with its namespace"),
        "the log does not say the port was forgotten"
    );
    // Still serving: a new master in a namespace of its own.
    ok(&format!(
        "ip -n {router} link add eth1 type veth peer name eth1p"
    ));
    ok(&format!("ip -n {router} link set eth1 up"));
    t.ipvlan_ok(
        &router,
        &["link", "add", "link", "eth1", "again0", "type", "ipvlan"],
    );
    assert!(listed(&t, &router).contains(&"again0".to_string()));
}

#[test]
fn deleting_the_master_namespace_destroys_it_l2() {
    master_namespace_deleted("l2");
}

#[test]
fn deleting_the_master_namespace_destroys_it_l3() {
    master_namespace_deleted("l3");
}

#[test]
fn deleting_the_master_namespace_destroys_it_l3s() {
    master_namespace_deleted("l3s");
}

/// The master in a namespace of its own, two slaves in two namespaces: deleting one
/// slave's namespace forgets that slave only; the master's namespace is not let go and
/// the other slave still works.
#[test]
fn deleting_a_slave_namespace_forgets_that_slave_only() {
    let mut t = Topo::new(2);
    let d0 = add_slave(&t, 0, &["mode", "l2"]);
    let d1 = add_slave(&t, 1, &["mode", "l2"]);
    ok(&format!(
        "ip -n {} addr add {}/24 dev {d1}",
        t.ns(1),
        t.v4(11)
    ));
    let monitor = Monitor::start(&t, &t.router);
    monitor.subscribed(&t, t.ns(0), &d0);
    let ns0 = t.ns(0).to_string();
    t.del_netns(&ns0);
    assert!(
        monitor.saw(|v| v["event"] == "slave_removed" && v["slave"] == d0.as_str()),
        "monitor told no slave_removed for {d0}"
    );
    assert!(
        eventually(GONE, || listed(&t, &t.router) == vec![d1.clone()]),
        "listed: {:?}",
        listed(&t, &t.router)
    );
    assert!(link_exists(&t.host, "eth0"));
    t.assert_ping(t.ns(1), &t.router_v4());
}

/// The slave's MTU: 68, 1000 and 9000 at creation and by `ip link set` in its
/// namespace; below 1280 the slave has no IPv6 (as the kernel's), and the dev_id
/// link-local comes once the MTU allows it.
#[test]
fn every_mtu_the_kernel_accepts() {
    let t = Topo::new(1);
    let (h, s) = (t.host.clone(), t.ns(0).to_string());
    for mtu in [68, 1000, 9000] {
        let dev = format!("mtu{mtu}");
        let m = mtu.to_string();
        t.ipvlan_ok(
            &h,
            &[
                "link", "add", "link", "eth0", &dev, "mtu", &m, "type", "ipvlan", "mode", "l2",
            ],
        );
        assert_eq!(link_json(&h, &dev)["mtu"], mtu, "{dev} at creation");
    }
    let dev = add_slave(&t, 0, &["mode", "l2"]);
    let ll = link_local(&s, &dev);
    for mtu in [68, 1000, 9000, 1500] {
        ok(&format!("ip -n {s} link set dev {dev} mtu {mtu}"));
        assert_eq!(link_json(&s, &dev)["mtu"], mtu);
        if mtu < 1280 {
            assert!(
                addrs(&s, &dev, "-6", "link").is_empty(),
                "IPv6 at MTU {mtu}"
            );
        } else {
            assert!(
                eventually(GONE, || addrs(&s, &dev, "-6", "link") == vec![ll.clone()]),
                "at MTU {mtu} the link-locals are {:?}, not [{ll}]",
                addrs(&s, &dev, "-6", "link")
            );
        }
    }
    ok(&format!("ip -n {s} addr add {}/24 dev {dev}", t.v4(10)));
    ok(&format!(
        "ip -n {s} addr add {}/64 dev {dev} nodad",
        t.v6(10)
    ));
    t.assert_ping(&s, &t.router_v4());
    t.assert_ping(&s, &t.router_v6());
}

/// A slave of `mode` made where the master's namespace has `lo` down and the master
/// no address and no carrier (down, its peer down); then `lo`, the master and its peer
/// come up and the master gets an address: the slave reaches the router.
fn made_before_the_namespace_is_ready(mode: &str) {
    let t = Topo::new(1);
    let (h, r, s) = (t.host.clone(), t.router.clone(), t.ns(0).to_string());
    ok(&format!("ip -n {h} link set dev lo down"));
    ok(&format!("ip -n {h} link set dev eth0 down"));
    ok(&format!("ip -n {r} link set dev eth0 down"));
    let dev = add_slave(&t, 0, &["mode", mode]);
    if mode == "l2" {
        ok(&format!("ip -n {s} addr add {}/24 dev {dev}", t.v4(10)));
    } else {
        // Routed through the master's namespace: a subnet of its own.
        ok(&format!(
            "ip -n {s} addr add 10.{}.100.10/24 dev {dev}",
            t.x
        ));
        ok(&format!("ip -n {s} route add default dev {dev}"));
    }
    ok(&format!("ip -n {h} link set dev lo up"));
    ok(&format!("ip -n {h} link set dev eth0 up"));
    ok(&format!("ip -n {r} link set dev eth0 up"));
    ok(&format!("ip -n {h} addr add {}/24 dev eth0", t.v4(2)));
    if mode != "l2" {
        ok(&format!(
            "ip -n {r} route add 10.{}.100.0/24 via {}",
            t.x,
            t.v4(2)
        ));
    }
    t.assert_ping(&s, &t.router_v4());
}

#[test]
fn l2_made_where_lo_is_down_and_the_master_not_ready() {
    made_before_the_namespace_is_ready("l2");
}

#[test]
fn l3_made_where_lo_is_down_and_the_master_not_ready() {
    made_before_the_namespace_is_ready("l3");
}

#[test]
fn l3s_made_where_lo_is_down_and_the_master_not_ready() {
    made_before_the_namespace_is_ready("l3s");
}

/// Namespaces with masters and slaves made and deleted in a loop, every mode: each
/// master's namespace is destroyed (its peer goes from ROUTER), and at the end the
/// daemon holds as many descriptors, of namespaces and in all, as before the loop.
#[test]
fn soak_namespaces_made_and_deleted() {
    let t = Topo::new(0);
    let router = t.router.clone();
    // Answered once the daemon has looked for ports to take back (adoption opens every
    // namespace for a moment).
    assert!(listed(&t, &router).is_empty());
    let before = daemon_fds(&t);
    let on_machine = machine_namespaces();
    for round in 0..9 {
        let mode = MODES[round % MODES.len()];
        let m = format!("{}-m{round}", t.prefix);
        let s = format!("{}-s{round}", t.prefix);
        let peer = format!("peer{round}");
        let made = [m.clone(), s.clone()];
        let cleanup = Cleanup(made.to_vec());
        for ns in &made {
            ok(&format!("ip netns add {ns}"));
        }
        ok(&format!(
            "ip -n {m} link add eth0 type veth peer name {peer} netns {router}"
        ));
        ok(&format!("ip -n {m} link set dev eth0 up"));
        ok(&format!("ip -n {router} link set dev {peer} up"));
        for i in 0..2 {
            let dev = format!("sl{round}x{i}");
            t.ipvlan_ok(
                &m,
                &[
                    "link", "add", "link", "eth0", &dev, "type", "ipvlan", "mode", mode,
                ],
            );
            ok(&format!("ip -n {m} link set dev {dev} netns {s}"));
            ok(&format!("ip -n {s} link set dev {dev} up"));
            ok(&format!(
                "ip -n {s} addr add 10.{}.{}.{}/24 dev {dev}",
                t.x,
                round + 10,
                i + 10
            ));
        }
        drop(cleanup);
        assert!(
            eventually(GONE, || !link_exists(&router, &peer)),
            "round {round} ({mode}): {m} was kept alive (its peer {peer} is still there)"
        );
    }
    assert!(
        eventually(GONE, || daemon_fds(&t) == before),
        "the daemon held {before:?} descriptors (all, of namespaces) before the loop, {:?} after",
        daemon_fds(&t)
    );
    assert!(
        eventually(GONE, || listed(&t, &router).is_empty()),
        "still listed: {:?}",
        listed(&t, &router)
    );
    eprintln!(
        "soak: daemon descriptors (all, of namespaces) {before:?} before, {:?} after; \
         namespaces on the machine {on_machine} before, {} after",
        daemon_fds(&t),
        machine_namespaces()
    );
}

/// Deletes namespaces (also while unwinding from a failed assertion).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = sh(&format!("ip netns del {ns}"));
        }
    }
}
