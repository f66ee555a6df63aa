//! The load and what it measures: iperf3 runs, UDP request/response latency and its
//! percentiles, and slave creation and deletion (`churn`).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use ipvlan::netcheck::{in_netns, spawn_in_netns};
use serde_json::Value;

use super::cmd::{output, run_cmd};
use super::report::{MIB, Rec, SECS};
use super::topo::{Daemon, Topo};
use super::{Plan, Variant};

const PORT: &str = "5201";

/// One iperf3 run from `client` to a one-off server in `server` at `addr`; its JSON.
pub(super) fn iperf(
    client: &str,
    server: &str,
    addr: &str,
    secs: u64,
    extra: &[&str],
) -> anyhow::Result<Value> {
    let mut srv = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s", "-1", "-p", PORT])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let t = secs.to_string();
    let client_run = || -> anyhow::Result<Value> {
        for _ in 0..30 {
            let mut c = Command::new("ip");
            c.args([
                "netns", "exec", client, "iperf3", "-J", "-c", addr, "-p", PORT,
            ])
            .args(["-t", &t, "--connect-timeout", "3000"])
            .args(extra);
            let out = output(&mut c, Duration::from_secs(secs + 30))?;
            let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 printed no JSON")?;
            match v.get("error").and_then(Value::as_str) {
                // The server may not be listening yet.
                Some(e) if e.contains("refused") => std::thread::sleep(Duration::from_millis(100)),
                Some(e) => bail!("iperf3: {e}"),
                None => return Ok(v),
            }
        }
        bail!("iperf3: the server in {server} never listened")
    };
    let r = client_run();
    let _ = srv.kill();
    let _ = srv.wait();
    r
}

pub(super) fn num(v: &Value, path: &str) -> anyhow::Result<f64> {
    v.pointer(path)
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("iperf3 JSON lacks {path}"))
}

/// UDP request/response between `ns0` and a Rust echo server in `ns1` on 10.77.0.11:
/// half round trips (µs).
pub(super) fn udp_latency(ns0: &str, ns1: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let server = spawn_in_netns(ns1, move || -> std::io::Result<()> {
        let sock = UdpSocket::bind("10.77.0.11:0")?;
        let _ = tx.send(sock.local_addr()?.port());
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut buf = [0u8; 64];
        while !s.load(Ordering::Relaxed) {
            if let Ok((k, from)) = sock.recv_from(&mut buf) {
                sock.send_to(&buf[..k], from)?;
            }
        }
        Ok(())
    });
    let port: u16 = rx.recv_timeout(Duration::from_secs(5))?;
    let dest = SocketAddr::new(Ipv4Addr::new(10, 77, 0, 11).into(), port);
    let r = in_netns(ns0, move || -> anyhow::Result<Vec<f64>> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(dest)?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let (mut half, mut lost, mut buf) = (Vec::with_capacity(n), 0, [0u8; 64]);
        for seq in 0..(n + 200) as u64 {
            let t0 = Instant::now();
            sock.send(&seq.to_le_bytes())?;
            loop {
                match sock.recv(&mut buf) {
                    Ok(8) if buf[..8] == seq.to_le_bytes() => {
                        if seq >= 200 {
                            half.push(t0.elapsed().as_secs_f64() * 1e6 / 2.0);
                        }
                        break;
                    }
                    Ok(_) => continue, // a late answer to an earlier request
                    Err(_) => {
                        lost += 1;
                        break;
                    }
                }
            }
            if lost > 20 {
                bail!("more than 20 requests unanswered");
            }
        }
        Ok(half)
    });
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    r
}

pub(super) fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "p is in [0, 1]: the rounded index is in 0..len"
    )]
    let at = ((v.len() - 1) as f64 * p).round() as usize;
    v[at]
}

/// Creates and deletes `mem_counts[2]` slaves one command at a time in a fresh topology
/// (the daemon's memory sampled on the way), timed.
pub(super) fn churn(v: &Variant, plan: &Plan, rec: &mut Rec, tag: &str) -> anyhow::Result<()> {
    let tag = format!("{tag}-churn");
    let topo = Topo::new(&tag, "l2")?;
    let daemon = match &v.backend {
        Some(b) => Some(Arc::new(Daemon::start(&tag, b, plan.busy_poll)?)),
        None => None,
    };
    let [c1, c2, total] = plan.mem_counts;
    let d = daemon.clone();
    let (create, delete, rss) = in_netns(&topo.host, move || -> anyhow::Result<_> {
        let cmd = |i: usize, add: bool| -> Command {
            let name = format!("s{i}");
            let args: &[&str] = match (&d, add) {
                (Some(_), true) => &[
                    "link", "add", "link", "eth0", &name, "type", "ipvlan", "mode", "l2",
                ],
                (None, true) => &[
                    "link", "add", "link", "eth0", "name", &name, "type", "macvlan", "mode",
                    "bridge",
                ],
                (Some(_), false) => &["link", "del", "dev", &name],
                (None, false) => &["link", "del", &name],
            };
            match &d {
                Some(d) => d.cli(args),
                None => {
                    let mut c = Command::new("ip");
                    c.args(args);
                    c
                }
            }
        };
        let (mut create, mut rss) = (Duration::ZERO, vec![]);
        for i in 0..total {
            let t0 = Instant::now();
            run_cmd(&mut cmd(i, true), Duration::from_secs(30))?;
            create += t0.elapsed();
            if let Some(d) = &d
                && (i + 1 == c1 || i + 1 == c2 || i + 1 == total)
            {
                rss.push((i + 1, d.rss_mib()));
            }
        }
        let t0 = Instant::now();
        for i in 0..total {
            run_cmd(&mut cmd(i, false), Duration::from_secs(30))?;
        }
        Ok((create, t0.elapsed(), rss))
    })?;
    for (n, mib) in rss {
        let fig = format!(
            "daemon resident memory, {n} slave{}",
            if n == 1 { "" } else { "s" }
        );
        rec.put(v, &fig, MIB, mib);
    }
    let fig = |what| format!("{what} {total} slaves (one command each)");
    rec.put(v, &fig("create"), SECS, create.as_secs_f64());
    rec.put(v, &fig("delete"), SECS, delete.as_secs_f64());
    drop(daemon);
    Ok(())
}
