//! What people script against: `ipvlan monitor` (text and JSON lines), `-j -s`
//! counters, and the Prometheus endpoint. Root only: fresh namespaces (see `common`).

#![forbid(unsafe_code)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Starts `ipvlan -j monitor` in `ns` and returns a channel of its parsed lines.
fn monitor(t: &Topo, ns: &str) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_ipvlan"),
            "-j",
            "monitor",
        ])
        .env("IPVLAN_SOCKET", &t.daemon().socket)
        .env("IPVLAN_NO_AUTOSTART", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ipvlan monitor");
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("monitor line is not JSON ({e}): {line}"));
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Waits for an event matching `pred`, collecting everything seen.
fn expect_event(
    rx: &mpsc::Receiver<Value>,
    seen: &mut Vec<Value>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) {
    if seen.iter().any(&pred) {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(v) => {
                let hit = pred(&v);
                seen.push(v);
                if hit {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {what} event within 5 s; saw: {seen:#?}");
}

#[test]
fn monitor_streams_changes_as_json_lines() {
    require_root();
    let t = Topo::new(2);
    let (host, ns0, ns1) = (t.host.clone(), t.ns(0).to_string(), t.ns(1).to_string());
    let (mut child, rx) = monitor(&t, &host);
    // The subscription is registered before the reply; give the process a moment.
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = Vec::new();

    t.ipvlan_ok(
        &host,
        &[
            "link", "add", "link", "eth0", "ipvl0", "type", "ipvlan", "mode", "l2",
        ],
    );
    expect_event(&rx, &mut seen, "slave_added", |v| {
        v["event"] == "slave_added"
            && v["slave"] == "ipvl0"
            && v["master"] == "eth0"
            && v["dev_id"] == 1
    });
    expect_event(&rx, &mut seen, "mode_changed", |v| {
        v["event"] == "mode_changed" && v["mode"] == "l2" && v["flags"] == "bridge"
    });
    t.ipvlan_ok(
        &host,
        &[
            "link", "add", "link", "eth0", "ipvl1", "type", "ipvlan", "mode", "l2",
        ],
    );

    ok(&format!("ip -n {host} link set dev ipvl0 netns {ns0}"));
    expect_event(&rx, &mut seen, "slave_moved", |v| {
        v["event"] == "slave_moved" && v["slave"] == "ipvl0" && v["netns"] == ns0.as_str()
    });
    ok(&format!("ip -n {ns0} link set dev ipvl0 up"));
    ok(&format!("ip -n {ns0} addr add {}/24 dev ipvl0", t.v4(10)));
    expect_event(&rx, &mut seen, "addr_learned", |v| {
        v["event"] == "addr_learned" && v["slave"] == "ipvl0" && v["addr"] == t.v4(10).as_str()
    });

    // A duplicate on the same master is refused, and said so.
    ok(&format!("ip -n {host} link set dev ipvl1 netns {ns1}"));
    ok(&format!("ip -n {ns1} link set dev ipvl1 up"));
    ok(&format!("ip -n {ns1} addr add {}/24 dev ipvl1", t.v4(10)));
    expect_event(&rx, &mut seen, "addr_refused", |v| {
        v["event"] == "addr_refused" && v["slave"] == "ipvl1" && v["owner"] == "ipvl0"
    });

    ok(&format!("ip -n {ns0} addr del {}/24 dev ipvl0", t.v4(10)));
    expect_event(&rx, &mut seen, "addr_forgotten", |v| {
        v["event"] == "addr_forgotten" && v["addr"] == t.v4(10).as_str()
    });

    t.ipvlan_ok(
        &ns1,
        &[
            "link", "set", "dev", "ipvl1", "type", "ipvlan", "mode", "l2", "private",
        ],
    );
    expect_event(&rx, &mut seen, "mode_changed to private", |v| {
        v["event"] == "mode_changed" && v["flags"] == "private"
    });

    ok(&format!("ip -n {host} link set dev eth0 down"));
    expect_event(&rx, &mut seen, "master_down", |v| {
        v["event"] == "master_down" && v["master"] == "eth0"
    });
    ok(&format!("ip -n {host} link set dev eth0 up"));
    expect_event(&rx, &mut seen, "master_up", |v| v["event"] == "master_up");

    t.ipvlan_ok(&ns0, &["link", "del", "dev", "ipvl0"]);
    expect_event(&rx, &mut seen, "slave_removed", |v| {
        v["event"] == "slave_removed" && v["slave"] == "ipvl0"
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn counters_in_json_and_prometheus() {
    require_root();
    let t = Topo::new(2);
    let host = t.host.clone();
    for (i, dev) in [(0usize, "ipvl0"), (1, "ipvl1")] {
        t.ipvlan_ok(
            &host,
            &[
                "link", "add", "link", "eth0", dev, "type", "ipvlan", "mode", "l2",
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
    t.assert_ping(t.ns(0), &t.v4(11));
    t.assert_ping(t.ns(0), &t.router_v4());

    let out = t.ipvlan_ok(&host, &["-j", "-s", "link", "show"]);
    let list: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let e0 = list
        .as_array()
        .and_then(|a| a.iter().find(|e| e["ifname"] == "ipvl0"))
        .unwrap_or_else(|| panic!("no ipvl0: {list}"));
    let tx = e0["stats64"]["tx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no tx packets: {e0}"));
    let rx = e0["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rx packets: {e0}"));
    // Two pings of two requests each, plus their ARP: at least 4 each way.
    assert!(tx >= 4 && rx >= 4, "ipvl0 counters too low: {e0}");
    assert!(
        e0["stats64"]["rx"]["bytes"].as_u64().unwrap_or(0) > 0,
        "{e0}"
    );

    // A private port drops slave-to-slave unicast, counted by reason.
    t.ipvlan_ok(
        t.ns(0),
        &[
            "link", "set", "dev", "ipvl0", "type", "ipvlan", "mode", "l2", "private",
        ],
    );
    assert!(
        !ping(t.ns(0), &t.v4(11)),
        "private port let ipvl0 reach ipvl1"
    );
    // `show dev NAME` resolves NAME where the caller is, as `ip` does.
    assert_eq!(
        t.ipvlan(&host, &["link", "show", "dev", "ipvl0"])
            .status
            .code(),
        Some(1)
    );
    let out = t.ipvlan_ok(t.ns(0), &["-j", "-s", "link", "show", "dev", "ipvl0"]);
    let list: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let private = list[0]["stats64"]["drops"]["private"].as_u64().unwrap_or(0);
    assert!(private >= 2, "no private drops counted: {list}");

    let body = t.daemon().scrape();
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("ipvlan_slave_drops_total{")
                && l.contains("slave=\"ipvl0\"")
                && l.contains("reason=\"private\"")
        })
        .unwrap_or_else(|| panic!("no private drops metric:\n{body}"));
    let n: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(n >= private, "metric {n} below the JSON count {private}");
    assert!(
        body.contains("# TYPE ipvlan_slave_rx_packets_total counter"),
        "{body}"
    );
    assert!(
        body.contains("ipvlan_port_info{master=\"eth0\"")
            && body.contains("mode=\"l2\",flags=\"private\"} 1"),
        "{body}"
    );
}
