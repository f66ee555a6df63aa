//! `ipvlan demo`: the kernel HOWTO's picture, built in scratch namespaces and checked.
//!
//! ```text
//!   ns0: ipvl0                 ns1: ipvl1
//!         \                    /
//!   host: eth0 (master) ---- veth ---- router: eth0 (the outside)
//! ```
//! Every namespace is new and named after this process; "eth0" is a veth end inside
//! the scratch host namespace, never the machine's own. The demo runs its own daemon
//! on a private socket, drives it with the same commands a user types, prints what it
//! saw, and removes everything it made, also when a step fails.

use std::net::IpAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::daemon::Daemon;
use ipvlan::netcheck::tcp_transfer;

const V4: &str = "192.168.77";
const V6: &str = "fd00:77::";
const MIB: usize = 64;

/// The scratch namespaces; deleted on drop.
struct Scratch {
    prefix: String,
    made: Vec<String>,
}

impl Scratch {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn sh(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))
}

fn must(args: &[&str]) -> anyhow::Result<String> {
    let out = sh(args)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    must(&v)
}

struct Row {
    check: String,
    ok: bool,
    detail: String,
}

/// `ping` from `ns`; the row says how many replies came and the average time.
fn ping(ns: &str, label: &str, addr: &str) -> Row {
    let mut args = vec![
        "ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2",
    ];
    if addr.contains(':') {
        args.push("-6");
    }
    args.push(addr);
    let (ok, detail) = match sh(&args) {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let received = text
                .lines()
                .find(|l| l.contains("received"))
                .and_then(|l| l.split(", ").nth(1))
                .unwrap_or("no summary")
                .to_string();
            let avg = text
                .lines()
                .find(|l| l.starts_with("rtt"))
                .and_then(|l| l.split('/').nth(4))
                .map(|a| format!(", avg {a} ms"))
                .unwrap_or_default();
            (out.status.success(), format!("{received}{avg}"))
        }
        Err(e) => (false, e.to_string()),
    };
    Row {
        check: format!("ping {label} ({addr})"),
        ok,
        detail,
    }
}

fn tcp(from: &str, to: &str, label: &str, addr: &str) -> Row {
    let ip: IpAddr = addr.parse().expect("demo addresses are valid");
    let (ok, detail) = match tcp_transfer(from, to, ip, MIB) {
        Ok(took) => (
            true,
            format!(
                "{MIB} MiB intact, {:.2} Gbit/s (every byte checked; see `ipvlan bench` for speed)",
                (MIB * 8 * 1024 * 1024) as f64 / took.as_secs_f64() / 1e9
            ),
        ),
        Err(e) => (false, e),
    };
    Row {
        check: format!("TCP {label}"),
        ok,
        detail,
    }
}

/// Waits until no address in `ns` is still doing duplicate address detection.
fn wait_dad(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match in_ns(ns, &["ip", "-6", "addr", "show", "tentative"]) {
            Ok(s) if s.trim().is_empty() => return,
            Err(_) => return,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn run() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates network namespaces and devices: run it as root (sudo)");
    }
    let pid = std::process::id();
    let mut scratch = Scratch {
        prefix: format!("ipvlan-demo-{pid}"),
        made: vec![],
    };
    let (host, router, ns0, ns1) = (
        scratch.ns("host"),
        scratch.ns("router"),
        scratch.ns("ns0"),
        scratch.ns("ns1"),
    );
    for ns in [&host, &router, &ns0, &ns1] {
        must(&["ip", "netns", "add", ns])?;
        scratch.made.push(ns.clone());
    }

    // The daemon, in this process, on a private socket.
    let dir = std::env::temp_dir().join(format!("ipvlan-demo-{pid}"));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("ipvlan.sock");
    let mut daemon = Daemon::new(&socket)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    let daemon_thread = std::thread::spawn(move || daemon.run(&stopper));
    let result = walkthrough(&socket, &host, &router, &ns0, &ns1);
    stop.store(true, Ordering::Relaxed);
    let _ = daemon_thread.join();
    let _ = std::fs::remove_dir_all(&dir);
    drop(scratch);
    let rows = result?;
    let failed = rows.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed", rows.len());
    }
    println!(
        "\nAll {} checks passed; every namespace and device the demo made is gone.",
        rows.len()
    );
    Ok(())
}

fn walkthrough(
    socket: &std::path::Path,
    host: &str,
    router: &str,
    ns0: &str,
    ns1: &str,
) -> anyhow::Result<Vec<Row>> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("the binary's path is not UTF-8")?;
    let ipvlan = |ns: &str, args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, exe])
            .args(args)
            .env("IPVLAN_SOCKET", socket)
            .env("IPVLAN_NO_AUTOSTART", "1")
            .output()?;
        if !out.status.success() {
            bail!(
                "`ipvlan {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };

    // "eth0" of the HOWTO: a veth end in the scratch host, its peer is the router.
    must(&[
        "ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        router,
    ])?;
    for ns in [host, router] {
        must(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        must(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
    }
    must(&[
        "ip",
        "-n",
        router,
        "addr",
        "add",
        &format!("{V4}.1/24"),
        "dev",
        "eth0",
    ])?;
    must(&[
        "ip",
        "-n",
        router,
        "addr",
        "add",
        &format!("{V6}1/64"),
        "dev",
        "eth0",
    ])?;
    let master_mac = must(&["ip", "-n", host, "-br", "link", "show", "eth0"])?
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();

    println!("ipvlan-rs demo: the kernel HOWTO's topology in scratch namespaces\n");
    let steps: Vec<(String, Vec<String>)> = vec![
        (
            "(b) on host".into(),
            vec![
                "ipvlan link add link eth0 ipvl0 type ipvlan mode l2".into(),
                "ipvlan link add link eth0 ipvl1 type ipvlan mode l2".into(),
            ],
        ),
        (
            "(c) on host".into(),
            vec![
                format!("ip link set dev ipvl0 netns {ns0}"),
                format!("ip link set dev ipvl1 netns {ns1}"),
            ],
        ),
        (
            "(d) in ns0/ns1".into(),
            vec![
                "ip link set dev ipvlN up; ip link set dev lo up; ip -4 addr add 127.0.0.1 dev lo"
                    .into(),
                format!(
                    "ip -4 addr add {V4}.1N/24 dev ipvlN; ip -4 route add default via {V4}.1 dev ipvlN; ip -6 addr add {V6}1N/64 dev ipvlN"
                ),
            ],
        ),
    ];
    for (step, cmds) in &steps {
        for c in cmds {
            println!("  {step:<15} {c}");
        }
    }

    ipvlan(
        host,
        &[
            "link", "add", "link", "eth0", "ipvl0", "type", "ipvlan", "mode", "l2",
        ],
    )?;
    ipvlan(
        host,
        &[
            "link", "add", "link", "eth0", "ipvl1", "type", "ipvlan", "mode", "l2",
        ],
    )?;
    for (i, ns) in [(0, ns0), (1, ns1)] {
        let dev = format!("ipvl{i}");
        must(&["ip", "-n", host, "link", "set", "dev", &dev, "netns", ns])?;
        in_ns(ns, &["ip", "link", "set", "dev", &dev, "up"])?;
        in_ns(ns, &["ip", "link", "set", "dev", "lo", "up"])?;
        in_ns(ns, &["ip", "-4", "addr", "add", "127.0.0.1", "dev", "lo"])?;
        in_ns(
            ns,
            &[
                "ip",
                "-4",
                "addr",
                "add",
                &format!("{V4}.1{i}/24"),
                "dev",
                &dev,
            ],
        )?;
        in_ns(
            ns,
            &[
                "ip",
                "-4",
                "route",
                "add",
                "default",
                "via",
                &format!("{V4}.1"),
                "dev",
                &dev,
            ],
        )?;
        in_ns(
            ns,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{V6}1{i}/64"),
                "dev",
                &dev,
            ],
        )?;
    }
    for ns in [ns0, ns1, router] {
        wait_dad(ns);
    }

    println!("\n$ ipvlan -d link show");
    print!("{}", ipvlan(host, &["-d", "link", "show"])?);

    let (a0, a1) = (format!("{V4}.10"), format!("{V4}.11"));
    let (b0, b1) = (format!("{V6}10"), format!("{V6}11"));
    let (r4, r6) = (format!("{V4}.1"), format!("{V6}1"));
    let mut rows = vec![
        ping(ns0, "ns0 -> ns1", &a1),
        ping(ns1, "ns1 -> ns0", &a0),
        ping(ns0, "ns0 -> ns1", &b1),
        ping(ns1, "ns1 -> ns0", &b0),
        ping(ns0, "ns0 -> router", &r4),
        ping(ns1, "ns1 -> router", &r6),
        ping(router, "router -> ns0", &a0),
        ping(router, "router -> ns1", &b1),
        tcp(ns0, ns1, "ns0 -> ns1", &a1),
        tcp(ns1, router, "ns1 -> router", &r4),
        tcp(router, ns0, "router -> ns0", &b0),
    ];
    let neigh = must(&["ip", "-n", router, "neigh", "show", "dev", "eth0"])?;
    for addr in [&a0, &a1, &b0, &b1] {
        let seen = neigh
            .lines()
            .find(|l| l.split_whitespace().next() == Some(addr.as_str()))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("none")
            .to_string();
        rows.push(Row {
            check: format!("router's neighbour {addr}"),
            ok: seen == master_mac,
            detail: format!("at {seen} (master is {master_mac})"),
        });
    }
    let promisc = must(&["ip", "-n", host, "-d", "link", "show", "eth0"])?
        .split_whitespace()
        .skip_while(|w| *w != "promiscuity")
        .nth(1)
        .unwrap_or("?")
        .to_string();
    rows.push(Row {
        check: "master eth0 promiscuity".into(),
        ok: promisc == "0",
        detail: format!("{promisc} (one MAC on the wire)"),
    });

    println!("\n$ ipvlan -s link show   (in ns0)");
    print!("{}", ipvlan(ns0, &["-s", "link", "show"])?);

    println!("\n{:<40} {:<6} detail", "check", "result");
    for r in &rows {
        println!(
            "{:<40} {:<6} {}",
            r.check,
            if r.ok { "ok" } else { "FAILED" },
            r.detail
        );
    }
    ipvlan(ns0, &["link", "del", "dev", "ipvl0"])?;
    ipvlan(ns1, &["link", "del", "dev", "ipvl1"])?;
    Ok(rows)
}
