//! `ipvlan bench`: ipvlan-rs against the kernel's macvlan (bridge mode) on the identical
//! topology, in scratch namespaces, variants in alternation for several rounds.
//!
//! ```text
//!   NS0: slave 10.77.0.10          NS1: slave 10.77.0.11
//!          \                      /
//!   HOST: eth0 (master) ---- veth ---- EXT: eth0 10.77.0.1 (the external host)
//! ```
//! In l3 and l3s mode EXT is 10.77.1.1, HOST's eth0 10.77.1.2, and EXT routes
//! 10.77.0.0/24 via HOST; in l3s HOST also masquerades the slaves' traffic to EXT (an
//! nftables `masquerade` rule, so conntrack tracks every flow and its cost is in the
//! figures, as a Kubernetes node's would be). For the host→slave figures HOST gets
//! 10.77.0.2 and reaches the slaves with ipvlan-rs's `host_access on`, or, for macvlan,
//! with the usual workaround: a macvlan "shim" in HOST holding the address, with routes
//! to the slaves. Every namespace is new and named after this process; nothing touches the
//! machine's own interfaces. Each ipvlan-rs run has its own daemon as a child process
//! (so its memory and CPU are its own). A benchmark, not a test: nothing is asserted.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use ipvlan::netcheck::{in_netns, spawn_in_netns};
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rounds; each runs every variant once, in alternation.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How many of the rounds (the first ones) also measure the slave-count figures (500
    /// slaves, memory, 1000 creates and deletes), which take minutes [default: all].
    #[arg(long, value_name = "N")]
    scale_rounds: Option<usize>,
    /// Seconds per iperf3 run [default: 5; 2 with --quick].
    #[arg(long)]
    seconds: Option<u64>,
    /// A smoke run for CI: one round of 2-second runs.
    #[arg(long)]
    quick: bool,
    /// The ipvlan-rs backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "user,kernel")]
    backends: Vec<String>,
    /// The ipvlan-rs modes to measure (macvlan bridge is always measured beside them).
    #[arg(long, value_delimiter = ',', default_value = "l2,l3,l3s", value_parser = ["l2", "l3", "l3s"])]
    modes: Vec<String>,
    /// With `--json` (the global flag): write every raw sample to FILE as JSON.
    #[arg(value_name = "FILE")]
    json_file: Option<PathBuf>,
    /// Passed to every ipvlan-rs daemon: microseconds its user-backend switching threads
    /// keep polling after a frame.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 0)]
    busy_poll: u64,
    /// Scale the 100/500/1000-slave counts (a smoke uses 0.02).
    #[arg(long, default_value_t = 1.0, hide = true)]
    slaves_scale: f64,
}

const PORT: &str = "5201";

/// macvlan bridge (`backend == None`) or ipvlan-rs with a backend and mode.
#[derive(Clone, Debug)]
struct Variant {
    backend: Option<String>,
    /// `l2`, `l3` or `l3s` (macvlan: `l2`).
    mode: &'static str,
}

impl Variant {
    fn label(&self) -> String {
        match &self.backend {
            None => "macvlan bridge".into(),
            Some(b) => format!("ipvlan-rs {} {b}", self.mode),
        }
    }
    /// The slaves' traffic to EXT is routed by HOST (l3, l3s).
    fn routed(&self) -> bool {
        self.mode != "l2"
    }
    fn ext_addr(&self) -> &'static str {
        if self.routed() {
            "10.77.1.1"
        } else {
            "10.77.0.1"
        }
    }
}

/// A setup step failed: the variant cannot be measured (e.g. the daemon refused a backend).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unavailable(String);

fn unavailable(e: anyhow::Error) -> anyhow::Error {
    anyhow!(Unavailable(format!("{e:#}")))
}

// ---------------------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------------------

/// A unit, and whether more is better.
#[derive(Clone, Copy)]
struct Unit(&'static str, bool);

const GBPS: Unit = Unit("Gbit/s", true);
const MPPS: Unit = Unit("Mpps", true);
const MICROS: Unit = Unit("µs", false);
const S_PER_GB: Unit = Unit("s/GB", false);
const MIB: Unit = Unit("MiB", false);
const SECS: Unit = Unit("s", false);

#[derive(serde::Serialize)]
struct Sample {
    round: usize,
    variant: String,
    figure: String,
    unit: &'static str,
    higher_is_better: bool,
    value: f64,
}

#[derive(Default)]
struct Rec {
    samples: Vec<Sample>,
    errors: Vec<String>,
    unavailable: BTreeMap<String, String>,
    round: usize,
}

impl Rec {
    fn put(&mut self, v: &Variant, figure: &str, unit: Unit, x: f64) {
        self.samples.push(Sample {
            round: self.round,
            variant: v.label(),
            figure: figure.into(),
            unit: unit.0,
            higher_is_better: unit.1,
            value: x,
        });
    }
    /// Records a measurement or its failure.
    fn take(&mut self, v: &Variant, figure: &str, unit: Unit, r: anyhow::Result<f64>) {
        match r {
            Ok(x) => self.put(v, figure, unit, x),
            Err(e) => self.fail(v, figure, e),
        }
    }
    fn fail(&mut self, v: &Variant, figure: &str, e: anyhow::Error) {
        let msg = format!("round {}, {}, {figure}: {e:#}", self.round, v.label());
        eprintln!("  ! {msg}");
        self.errors.push(msg);
    }
    fn values(&self, variant: &str, figure: &str) -> Vec<(usize, f64)> {
        self.samples
            .iter()
            .filter(|s| s.variant == variant && s.figure == figure)
            .map(|s| (s.round, s.value))
            .collect()
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

// ---------------------------------------------------------------------------------------
// Commands, namespaces, the daemon
// ---------------------------------------------------------------------------------------

/// Runs `cmd`, killing it after `limit`; fails unless it exits 0.
fn run_cmd(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let out = output(cmd, limit)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{cmd:?}: {}: {}", out.status, err.trim());
    }
    Ok(out)
}

/// Runs `cmd` to completion, killing it after `limit`, and collects its output.
fn output(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    let (mut o, mut e) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let err_reader = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = e.read_to_end(&mut v);
        v
    });
    let killer = KillAfter::new(child.id(), limit);
    let mut stdout = vec![];
    let _ = o.read_to_end(&mut stdout);
    let status = child.wait()?;
    let timed_out = killer.finish();
    let stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        bail!("{shown}: killed after {limit:?}");
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Sends SIGKILL to a process if it is still running after a time limit.
struct KillAfter {
    done: Arc<AtomicBool>,
    fired: std::thread::JoinHandle<bool>,
}

impl KillAfter {
    fn new(pid: u32, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let fired = std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                if d.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            i32::try_from(pid).is_ok_and(|pid| {
                let pid = nix::unistd::Pid::from_raw(pid);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok()
            })
        });
        KillAfter { done, fired }
    }
    fn finish(self) -> bool {
        self.done.store(true, Ordering::Relaxed);
        self.fired.join().unwrap_or(false)
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = run_cmd(Command::new("ip").args(args), Duration::from_secs(30))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS -batch -` with `lines`.
fn ip_batch(ns: &str, lines: &[String]) -> anyhow::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let file = std::env::temp_dir().join(format!("ipvlan-bench-{}.batch", std::process::id()));
    std::fs::write(&file, lines.join("\n") + "\n")?;
    let r = ip(&["-n", ns, "-batch", file.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&file);
    r.map(drop)
}

/// The scratch namespaces of one run; deleted on drop.
struct Topo {
    host: String,
    ext: String,
    ns: [String; 2],
}

impl Topo {
    fn new(tag: &str, mode: &str) -> anyhow::Result<Topo> {
        let p = format!("ipvlan-bench-{}-{tag}", std::process::id());
        let t = Topo {
            host: format!("{p}-host"),
            ext: format!("{p}-ext"),
            ns: [format!("{p}-ns0"), format!("{p}-ns1")],
        };
        for ns in t.all() {
            let _ = ip(&["netns", "del", ns]);
            ip(&["netns", "add", ns])?;
        }
        let (h, x) = (t.host.as_str(), t.ext.as_str());
        ip(&[
            "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", x,
        ])?;
        for ns in t.all() {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", h, "link", "set", "eth0", "up"])?;
        ip(&["-n", x, "link", "set", "eth0", "up"])?;
        if mode != "l2" {
            ip(&["-n", x, "addr", "add", "10.77.1.1/24", "dev", "eth0"])?;
            ip(&["-n", h, "addr", "add", "10.77.1.2/24", "dev", "eth0"])?;
            ip(&["-n", x, "route", "add", "10.77.0.0/24", "via", "10.77.1.2"])?;
        }
        if mode == "l3s" {
            in_netns(h, || {
                run_cmd(
                    Command::new("nft").args(["add table ip bench; \
                         add chain ip bench post { type nat hook postrouting priority 100; }; \
                         add rule ip bench post oifname eth0 ip saddr 10.77.0.0/24 masquerade"]),
                    Duration::from_secs(10),
                )
                .map(drop)
            })?;
        }
        if mode == "l2" {
            ip(&["-n", x, "addr", "add", "10.77.0.1/24", "dev", "eth0"])?;
        }
        Ok(t)
    }
    fn all(&self) -> [&String; 4] {
        [&self.host, &self.ext, &self.ns[0], &self.ns[1]]
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// `ipvlan daemon --socket <tmp> --backend B` as a child process; stopped on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    exe: PathBuf,
}

impl Daemon {
    fn start(tag: &str, backend: &str, busy_poll: u64) -> anyhow::Result<Daemon> {
        let dir = std::env::temp_dir().join(format!("ipvlan-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("ipvlan.sock");
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let exe = std::env::current_exe()?;
        let child = Command::new(&exe)
            .args(["daemon", "--backend", backend, "--socket"])
            .arg(&socket)
            .args(["--busy-poll", &busy_poll.to_string()])
            .env("IPVLAN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        DAEMON_PIDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(child.id());
        let mut d = Daemon {
            child,
            dir,
            socket,
            exe,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !d.socket.exists() {
            if let Some(st) = d.child.try_wait()? {
                let log = std::fs::read_to_string(d.dir.join("daemon.log")).unwrap_or_default();
                let why = log.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                bail!("`ipvlan daemon --backend {backend}` exited ({st}): {why}");
            }
            if Instant::now() > deadline {
                bail!("`ipvlan daemon --backend {backend}`: no socket after 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// An `ipvlan` CLI command for this daemon (run it in the caller's namespace).
    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env("IPVLAN_SOCKET", &self.socket)
            .env("IPVLAN_NO_AUTOSTART", "1");
        c
    }

    fn proc_file(&self, f: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{f}", self.child.id())).unwrap_or_default()
    }

    /// Resident memory in MiB.
    fn rss_mib(&self) -> f64 {
        let kib = self
            .proc_file("status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        kib / 1024.0
    }

    /// The numeric fields of /proc/PID/stat from field 3 on (after the command name).
    fn stat_fields(&self) -> Vec<f64> {
        let stat = self.proc_file("stat");
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect()
    }

    /// utime + stime (fields 14 and 15 of stat(5)), in seconds.
    fn cpu_secs(&self) -> f64 {
        self.stat_fields().iter().skip(11).take(2).sum::<f64>() / clk_tck()
    }

    /// CPU seconds of the daemon and of the children it waited for (its `nft` runs):
    /// fields 14 to 17 of stat(5).
    fn cpu_secs_with_children(&self) -> f64 {
        self.stat_fields().iter().skip(11).take(4).sum::<f64>() / clk_tck()
    }

    /// Waits until the daemon has used no CPU for half a second (at most `limit`);
    /// returns how long that took.
    fn settle(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut last = self.cpu_secs_with_children();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.cpu_secs_with_children();
            if now - last < 0.005 {
                break;
            }
            last = now;
        }
        start.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        DAEMON_PIDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|&p| p != self.child.id());
        let pid =
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid is a pid_t"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// Busy CPU seconds of the whole machine so far (/proc/stat: all but idle and iowait).
fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| f.get(i).unwrap_or(&0.0));
    busy.sum::<f64>() / clk_tck()
}

// ---------------------------------------------------------------------------------------
// Slaves
// ---------------------------------------------------------------------------------------

/// Makes slave `name` on HOST's eth0 (macvlan bridge, or through the daemon).
fn add_slave(topo: &Topo, daemon: Option<&Daemon>, name: &str, mode: &str) -> anyhow::Result<()> {
    match daemon {
        None => ip(&[
            "-n", &topo.host, "link", "add", "link", "eth0", "name", name, "type", "macvlan",
            "mode", "bridge",
        ])
        .map(drop),
        Some(d) => {
            let mut c = d.cli(&[
                "link", "add", "link", "eth0", name, "type", "ipvlan", "mode", mode,
            ]);
            in_netns(&topo.host, move || {
                run_cmd(&mut c, Duration::from_secs(30)).map(drop)
            })
        }
    }
}

/// The two busy slaves, moved into NS0/NS1 and addressed 10.77.0.10 and .11.
fn busy_slaves(topo: &Topo, daemon: Option<&Daemon>, mode: &str) -> anyhow::Result<()> {
    for i in 0..2 {
        let (dev, ns) = (format!("sl{i}"), topo.ns[i].as_str());
        add_slave(topo, daemon, &dev, mode)?;
        ip(&["-n", &topo.host, "link", "set", &dev, "netns", ns])?;
        ip(&["-n", ns, "link", "set", &dev, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.77.0.1{i}/24"),
            "dev",
            &dev,
        ])?;
        if mode != "l2" {
            ip(&["-n", ns, "route", "add", "default", "dev", &dev])?;
        }
    }
    Ok(())
}

/// Waits until `from` reaches `addr` (the daemon learns addresses asynchronously).
fn reach(from: &str, addr: &str) -> anyhow::Result<()> {
    for _ in 0..10 {
        let ok = Command::new("ip")
            .args(["netns", "exec", from, "ping", "-c", "1", "-W", "1", addr])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(());
        }
    }
    bail!("{from} cannot reach {addr}")
}

// ---------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------

/// One iperf3 run from `client` to a one-off server in `server` at `addr`; its JSON.
fn iperf(
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

fn num(v: &Value, path: &str) -> anyhow::Result<f64> {
    v.pointer(path)
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("iperf3 JSON lacks {path}"))
}

/// UDP request/response between `ns0` and a Rust echo server in `ns1` on 10.77.0.11:
/// half round trips (µs).
fn udp_latency(ns0: &str, ns1: &str, n: usize) -> anyhow::Result<Vec<f64>> {
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

fn percentile(v: &[f64], p: f64) -> f64 {
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

// ---------------------------------------------------------------------------------------
// One variant, one round
// ---------------------------------------------------------------------------------------

/// Lets HOST reach the two busy slaves from 10.77.0.2: ipvlan-rs's `host_access on`, or,
/// for macvlan, the usual workaround: a macvlan "shim" in HOST holding the address, with
/// a route to each slave.
fn host_to_slaves(topo: &Topo, daemon: Option<&Daemon>) -> anyhow::Result<()> {
    let h = topo.host.as_str();
    match daemon {
        None => {
            ip(&[
                "-n", h, "link", "add", "link", "eth0", "name", "shim", "type", "macvlan", "mode",
                "bridge",
            ])?;
            ip(&["-n", h, "addr", "add", "10.77.0.2/32", "dev", "shim"])?;
            ip(&["-n", h, "link", "set", "shim", "up"])?;
            for a in ["10.77.0.10", "10.77.0.11"] {
                ip(&["-n", h, "route", "add", a, "dev", "shim"])?;
            }
        }
        Some(d) => {
            ip(&["-n", h, "addr", "add", "10.77.0.2/32", "dev", "eth0"])?;
            let mut c = d.cli(&[
                "link",
                "set",
                "dev",
                "sl0",
                "type",
                "ipvlan",
                "host_access",
                "on",
            ]);
            in_netns(&topo.ns[0], move || {
                run_cmd(&mut c, Duration::from_secs(30)).map(drop)
            })?;
        }
    }
    reach(h, "10.77.0.10")?;
    reach(h, "10.77.0.11")
}

struct Plan {
    secs: u64,
    busy_poll: u64,
    round_trips: usize,
    many: usize,
    mem_counts: [usize; 3],
    /// Rounds up to this one measure the slave-count figures.
    scale_rounds: usize,
}

fn run_variant(v: &Variant, plan: &Plan, rec: &mut Rec) -> anyhow::Result<()> {
    let tag = format!("r{}-{}", rec.round, v.label().replace(' ', "-"));
    let topo = Topo::new(&tag, v.mode).map_err(unavailable)?;
    let daemon = match &v.backend {
        Some(b) => Some(Daemon::start(&tag, b, plan.busy_poll).map_err(unavailable)?),
        None => None,
    };
    busy_slaves(&topo, daemon.as_ref(), v.mode).map_err(unavailable)?;
    let (ns0, ns1, ext) = (&topo.ns[0], &topo.ns[1], &topo.ext);
    for (from, to) in [
        (ns0, "10.77.0.11"),
        (ns0, v.ext_addr()),
        (ext, "10.77.0.10"),
    ] {
        reach(from, to).map_err(unavailable)?;
    }

    let paths = [
        ("slave→slave", ns0, ns1, "10.77.0.11"),
        ("slave→external", ns0, ext, v.ext_addr()),
        ("external→slave", ext, ns0, "10.77.0.10"),
    ];
    for (path, from, to, addr) in paths {
        for (flows, fig) in [(1, "1 flow"), (4, "4 flows")] {
            let fig = format!("TCP {path}, {fig}");
            let (cpu0, d0) = (machine_cpu_secs(), daemon.as_ref().map(Daemon::cpu_secs));
            let r = iperf(from, to, addr, plan.secs, &["-P", &flows.to_string()]);
            let r = r.and_then(|j| {
                Ok((
                    num(&j, "/end/sum_received/bits_per_second")?,
                    num(&j, "/end/sum_received/bytes")?,
                ))
            });
            let (cpu, d) = (
                machine_cpu_secs() - cpu0,
                daemon.as_ref().map(Daemon::cpu_secs),
            );
            match r {
                Ok((bps, bytes)) if path == "slave→slave" && flows == 1 => {
                    let gb = bytes / 1e9;
                    rec.put(v, &fig, GBPS, bps / 1e9);
                    rec.put(
                        v,
                        "CPU per GB (TCP slave→slave, whole machine)",
                        S_PER_GB,
                        cpu / gb,
                    );
                    if let (Some(d), Some(d0)) = (d, d0) {
                        rec.put(
                            v,
                            "daemon CPU per GB (the same run)",
                            S_PER_GB,
                            (d - d0) / gb,
                        );
                    }
                }
                r => rec.take(v, &fig, GBPS, r.map(|(bps, _)| bps / 1e9)),
            }
        }
    }

    let r = iperf(
        ns0,
        ns1,
        "10.77.0.11",
        plan.secs,
        &["-u", "-b", "0", "-l", "64"],
    );
    let r = r.and_then(|j| {
        let got =
            num(&j, "/end/sum_received/packets")? - num(&j, "/end/sum_received/lost_packets")?;
        Ok(got / num(&j, "/end/sum_received/seconds")? / 1e6)
    });
    rec.take(v, "UDP 64 B slave→slave, received", MPPS, r);

    match udp_latency(ns0, ns1, plan.round_trips) {
        Ok(half) => {
            rec.put(v, "UDP half round trip p50", MICROS, percentile(&half, 0.5));
            rec.put(
                v,
                "UDP half round trip p99",
                MICROS,
                percentile(&half, 0.99),
            );
        }
        Err(e) => rec.fail(v, "UDP half round trip", e),
    }

    // HOST to its own slaves (left on for what follows: no idle slave has an address).
    match host_to_slaves(&topo, daemon.as_ref()) {
        Ok(()) => {
            let r = iperf(&topo.host, ns0, "10.77.0.10", plan.secs, &[])
                .and_then(|j| num(&j, "/end/sum_received/bits_per_second"));
            rec.take(v, "TCP host→slave, 1 flow", GBPS, r.map(|bps| bps / 1e9));
            match udp_latency(&topo.host, ns1, plan.round_trips) {
                Ok(half) => rec.put(
                    v,
                    "UDP half round trip host→slave p50",
                    MICROS,
                    percentile(&half, 0.5),
                ),
                Err(e) => rec.fail(v, "UDP half round trip host→slave", e),
            }
        }
        Err(e) => rec.fail(v, "host→slave (host_access / macvlan shim)", e),
    }

    if v.routed() || rec.round > plan.scale_rounds {
        return Ok(()); // the slave-count figures: in l2 only, in the first scale rounds
    }
    // The same TCP slave→slave with `many` slaves on the master: the rest idle, up, in HOST.
    let idle: Vec<String> = (2..plan.many).map(|i| format!("idle{i}")).collect();
    let made = match &daemon {
        None => {
            let add = |n| format!("link add link eth0 name {n} type macvlan mode bridge");
            ip_batch(&topo.host, &idle.iter().map(add).collect::<Vec<_>>())
        }
        Some(_) => idle
            .iter()
            .try_for_each(|n| add_slave(&topo, daemon.as_ref(), n, "l2")),
    };
    let r = made
        .and_then(|()| {
            ip_batch(
                &topo.host,
                &idle
                    .iter()
                    .map(|n| format!("link set {n} up"))
                    .collect::<Vec<_>>(),
            )
        })
        .map(|()| {
            // A busy pair among idle slaves: both variants wait for the new devices'
            // own start-up traffic (DAD, MLD, router solicitations), and ipvlan-rs for
            // its daemon to have learned every address (reported as its own figure).
            std::thread::sleep(Duration::from_secs(2));
            if let Some(d) = &daemon {
                let waited = d.settle(Duration::from_secs(60));
                rec.take(
                    v,
                    &format!("daemon settled after {} slaves came up", plan.many),
                    SECS,
                    Ok(waited.as_secs_f64() + 2.0),
                );
            }
        })
        .and_then(|()| iperf(ns0, ns1, "10.77.0.11", plan.secs, &[]))
        .and_then(|j| num(&j, "/end/sum_received/bits_per_second"));
    let fig = format!("TCP slave→slave, 1 flow, {} slaves", plan.many);
    rec.take(v, &fig, GBPS, r.map(|bps| bps / 1e9));
    drop(daemon);
    drop(topo);
    if let Err(e) = churn(v, plan, rec, &tag) {
        rec.fail(v, "create/delete", e);
    }
    Ok(())
}

/// Creates and deletes `mem_counts[2]` slaves one command at a time in a fresh topology
/// (the daemon's memory sampled on the way), timed.
fn churn(v: &Variant, plan: &Plan, rec: &mut Rec, tag: &str) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{nproc} CPUs ({cpu}), Linux {}", kernel.trim())
}

fn check_tools() -> anyhow::Result<()> {
    for (tool, pkg) in [
        ("iperf3", "iperf3"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
    ] {
        if Command::new(tool).arg("-V").output().is_err() {
            bail!(
                "`{tool}` not found: install the Debian package {pkg} (`apt-get install {pkg}`, or `./x deps`)"
            );
        }
    }
    Ok(())
}

/// The daemons the benchmark has running. A daemon leaves the list before it is reaped
/// (in `Drop`), so no pid here can belong to another process.
static DAEMON_PIDS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Interrupted (Ctrl-C, SIGTERM, SIGHUP), the benchmark still leaves nothing behind: a
/// thread waiting for those signals (blocked everywhere else; children start with
/// none blocked) kills what runs in the benchmark's namespaces, deletes them and its
/// scratch directories, and exits with 130.
fn clean_up_on_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block()?;
    let prefix = format!("ipvlan-bench-{}-", std::process::id());
    let batch_file = format!("ipvlan-bench-{}.batch", std::process::id());
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            let Ok(sig) = sigs.wait() else { return };
            eprintln!("ipvlan bench: {sig}: removing its namespaces and devices");
            let listed = Command::new("ip").args(["netns", "list"]).output();
            let names: Vec<String> = listed
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(&prefix))
                .map(String::from)
                .collect();
            // The main thread may still be starting an iperf3 or an `ip`: kill the
            // benchmark's own children a few times over, then what runs in its
            // namespaces.
            for _ in 0..3 {
                kill_children();
                std::thread::sleep(Duration::from_millis(100));
            }
            for ns in &names {
                if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        if let Ok(pid) = pid.parse::<i32>() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
            // The daemons run in this namespace (they serve every namespace).
            // Killed under the lock: a daemon being dropped is not reaped meanwhile.
            let daemons = DAEMON_PIDS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for pid in daemons.iter().filter_map(|&pid| i32::try_from(pid).ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
            if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
                for e in dir.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&prefix) || name == batch_file {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            for ns in &names {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
            std::process::exit(130);
        })?;
    Ok(())
}

/// SIGKILLs every process whose parent is this one (from /proc/PID/stat, field 4).
fn kill_children() {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Ok(pid) = name.to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `json` is the global `-j/--json` flag: `ipvlan bench --json FILE` names the file.
pub fn run(args: Args, json: bool) -> anyhow::Result<()> {
    if json != args.json_file.is_some() {
        bail!("`--json FILE` writes the raw samples: give both or neither");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark creates network namespaces and devices: run it as root (sudo)");
    }
    check_tools()?;
    clean_up_on_signals()?;
    let rounds = if args.quick { 1 } else { args.rounds.max(1) };
    let secs = args.seconds.unwrap_or(if args.quick { 2 } else { 5 });
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a float-to-int `as` saturates: a scale below zero (or NaN) gives 0, so 1"
    )]
    let scale = |n: usize| ((n as f64 * args.slaves_scale).round() as usize).max(1);
    let plan = Plan {
        secs,
        busy_poll: args.busy_poll,
        round_trips: if args.quick { 2000 } else { 20000 },
        many: scale(500).max(2),
        mem_counts: [1, scale(100), scale(1000)],
        scale_rounds: args.scale_rounds.unwrap_or(rounds),
    };
    let mut variants = vec![Variant {
        backend: None,
        mode: "l2",
    }];
    for mode in ["l2", "l3", "l3s"] {
        if !args.modes.iter().any(|m| m == mode) {
            continue;
        }
        for b in &args.backends {
            variants.push(Variant {
                backend: Some(b.clone()),
                mode,
            });
        }
    }
    let machine = machine();
    println!("ipvlan bench: {rounds} round(s), {secs} s per run, on {machine}");
    if args.busy_poll > 0 {
        println!(
            "daemons poll {} µs after a frame (--busy-poll)",
            args.busy_poll
        );
    }
    let mut rec = Rec::default();
    for round in 1..=rounds {
        rec.round = round;
        for v in &variants {
            if rec.unavailable.contains_key(&v.label()) {
                continue;
            }
            eprintln!("round {round}/{rounds}: {}", v.label());
            if let Err(e) = run_variant(v, &plan, &mut rec) {
                match e.downcast_ref::<Unavailable>() {
                    Some(u) => {
                        eprintln!("  ! unavailable: {u}");
                        rec.unavailable.insert(v.label(), u.0.clone());
                    }
                    None => rec.fail(v, "run", e),
                }
            }
        }
    }
    print_table(&rec, &variants, &machine);
    if let Some(file) = &args.json_file {
        let doc = json!({
            "machine": machine,
            "rounds": rounds,
            "seconds": secs,
            "samples": rec.samples,
            "unavailable": rec.unavailable,
            "errors": rec.errors,
        });
        std::fs::write(file, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", file.display()))?;
        println!("raw samples: {}", file.display());
    }
    Ok(())
}

fn fmt(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn print_table(rec: &Rec, variants: &[Variant], machine: &str) {
    let mac = variants[0].label();
    println!("\nmachine: {machine}");
    println!(
        "ratio: ipvlan-rs/macvlan where higher is better (i/m), macvlan/ipvlan-rs where lower is \
         better (m/i); either way above 1 means ipvlan-rs did better. Medians over rounds; the \
         ratio is the median of the per-round ratios."
    );
    for v in &variants[1..] {
        let label = v.label();
        print!("\n== {label} vs {mac}");
        if v.routed() {
            print!(
                " (macvlan has no {} mode: compared against macvlan bridge)",
                v.mode
            );
        }
        if v.mode == "l3s" {
            print!("; with conntrack and a MASQUERADE rule on HOST");
        }
        println!();
        if let Some(why) = rec.unavailable.get(&label) {
            println!("   unavailable: {why}");
            continue;
        }
        println!(
            "{:<48} {:>10} {:>10} {:>12}  unit",
            "figure", "macvlan", "ipvlan-rs", "ratio"
        );
        let mut figs: Vec<(&str, &str, bool)> = vec![];
        for s in rec.samples.iter().filter(|s| s.variant == label) {
            if !figs.iter().any(|f| f.0 == s.figure) {
                figs.push((&s.figure, s.unit, s.higher_is_better));
            }
        }
        for (fig, unit, higher) in figs {
            let (m, i) = (rec.values(&mac, fig), rec.values(&label, fig));
            let ratios = i
                .iter()
                .filter_map(|&(r, iv)| {
                    let mv = m.iter().find(|x| x.0 == r)?.1;
                    Some(if higher { iv / mv } else { mv / iv })
                })
                .collect::<Vec<_>>();
            let ratio = median(ratios).map_or("—".into(), |r| {
                format!("{r:.2} ({})", if higher { "i/m" } else { "m/i" })
            });
            let mv = median(m.iter().map(|x| x.1).collect());
            let iv = median(i.iter().map(|x| x.1).collect());
            println!(
                "{fig:<48} {:>10} {:>10} {ratio:>12}  {unit}",
                fmt(mv),
                fmt(iv)
            );
        }
    }
    if !rec.errors.is_empty() {
        println!("\nfailed measurements:");
        for e in &rec.errors {
            println!("  {e}");
        }
    }
}
