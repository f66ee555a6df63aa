//! Restart without loss: the daemon killed (SIGKILL) or stopped (SIGTERM) under
//! traffic, and a new one on the same socket takes every slave back. Root only.

#![forbid(unsafe_code)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// Two L2 private slaves, configured and talking to the router.
fn setup(t: &Topo) {
    let host = t.host.clone();
    for (i, dev) in [(0usize, "ipvl0"), (1, "ipvl1")] {
        t.ipvlan_ok(
            &host,
            &[
                "link", "add", "link", "eth0", dev, "type", "ipvlan", "mode", "l2", "private",
            ],
        );
        let ns = t.ns(i).to_string();
        ok(&format!("ip -n {host} link set dev {dev} netns {ns}"));
        ok(&format!("ip -n {ns} link set dev {dev} up"));
        ok(&format!(
            "ip -n {ns} addr add {}/24 dev {dev}",
            t.v4(10 + u32::try_from(i).unwrap())
        ));
    }
    t.assert_ping(t.ns(0), &t.router_v4());
    t.assert_ping(t.ns(1), &t.router_v4());
}

fn restart(sig: Signal) {
    require_root();
    let mut t = Topo::new(2);
    setup(&t);
    let before = t.ipvlan_ok(&t.host.clone(), &["-d", "link", "show"]);

    // A steady ping from ns0 to the router across the restart.
    let pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            t.ns(0),
            "ping",
            "-c",
            "60",
            "-i",
            "0.05",
            "-W",
            "1",
        ])
        .arg(t.router_v4())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ping");
    std::thread::sleep(Duration::from_millis(500));
    t.daemon_mut().kill(sig);
    std::thread::sleep(Duration::from_millis(300));
    let restarted = Instant::now();
    t.daemon_mut().spawn();

    // Within a second every slave is back: the listing is the same as before.
    let deadline = restarted + Duration::from_secs(1);
    let after = loop {
        let now = t.ipvlan_ok(&t.host.clone(), &["-d", "link", "show"]);
        if now == before || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        before, after,
        "`ipvlan -d link show` changed across the restart"
    );

    let out = pinger.wait_with_output().expect("ping ran");
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
        // The user backend switches nothing while no daemon runs: a gap, then traffic.
        assert!(
            received >= 30,
            "too few replies across the restart: {summary}"
        );
    } else {
        // The kernel backend's unicast never stops.
        assert_eq!(received, 60, "unicast paused during the restart: {summary}");
    }

    // Everything works afterwards, the port's flag included.
    t.assert_ping(t.ns(0), &t.router_v4());
    t.assert_ping(t.ns(1), &t.router_v4());
    assert!(!ping(t.ns(0), &t.v4(11)), "the port is no longer private");
    assert!(
        t.daemon().log_text().contains("took back 2 slave(s)"),
        "no adoption in the log"
    );
    if std::env::var("IPVLAN_TEST_BACKEND").as_deref() != Ok("user") {
        // The new daemon's fast path replaced the old one's: one program on the master.
        let idx = link_json(&t.host, "eth0")["ifindex"]
            .as_u64()
            .expect("ifindex")
            .try_into()
            .expect("an ifindex is a u32");
        let ns = ipvlan_sys::NetNs::open(format!("/run/netns/{}", t.host)).expect("host netns");
        let names: Vec<String> = ns
            .run(|| ipvlan_sys::bpf::tcx_ingress_named(idx, |n| n.starts_with("ipvlan_")))
            .expect("thread in the host netns")
            .expect("tcx query")
            .iter()
            .map(|p| p.name().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            ["ipvlan_master"],
            "fast-path programs on the master after the restart"
        );
        let shown = t.ipvlan_ok(&t.host.clone(), &["-d", "link", "show"]);
        assert!(
            shown.contains("fastpath bpf"),
            "no fast path shown: {shown}"
        );
    }
    // And the new daemon manages them: the slaves can be deleted.
    t.ipvlan_ok(t.ns(0), &["link", "del", "dev", "ipvl0"]);
    assert!(!link_exists(t.ns(0), "ipvl0"));
}

#[test]
fn sigkill_under_traffic() {
    restart(Signal::SIGKILL);
}

#[test]
fn sigterm_under_traffic() {
    restart(Signal::SIGTERM);
}
