//! Shared harness for the root integration tests.
//!
//! Every test builds its own [`Topo`]: fresh network namespaces with unique names (HOST,
//! ROUTER and any number of slave namespaces), a veth pair `eth0` (HOST) <-> `eth0`
//! (ROUTER) standing in for the master and the "external" host, and its own `ipvlan
//! daemon` on a private control socket. Dropping the `Topo` (also while unwinding from a
//! failed assertion) stops the daemon and deletes every namespace it made.
//!
//! Nothing here touches the machine's real interfaces: every `ip` command runs with
//! `-n NS` or under `ip netns exec NS`, and traffic only flows between the test's own
//! namespaces.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ipvlan");

/// How long any single external command may take before the harness kills it (so a hung
/// daemon fails the test instead of hanging CI).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// The shorter limit for commands run only to print diagnostics of a failure.
pub const DIAG_TIMEOUT: Duration = Duration::from_secs(5);

/// Panics unless running as root. Root-only tests must never pass silently.
/// The suite runs with the user backend (`IPVLAN_TEST_BACKEND=user`), not the kernel's.
pub fn user_backend() -> bool {
    std::env::var("IPVLAN_TEST_BACKEND").as_deref() == Ok("user")
}

pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("root integration test: run as root (CI does); e.g. `sudo ./x test`");
    }
}

// ---------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------

/// Runs `cmd` to completion (killing it after [`CMD_TIMEOUT`]), capturing its output.
/// The command line and its result are logged to stderr (shown for failing tests).
pub fn run(cmd: &mut Command) -> Output {
    run_timeout(cmd, CMD_TIMEOUT)
}

/// [`run`] with its own time limit.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout piped");
    let mut err_pipe = child.stderr.take().expect("stderr piped");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let st = child.wait().expect("wait after kill");
                eprintln!("!! timed out after {timeout:?}, killed: {shown}");
                break st;
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    let out = Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    };
    eprintln!(
        "$ {shown}\n  -> {:?}{}{}",
        out.status.code(),
        indent("out", &out.stdout),
        indent("err", &out.stderr)
    );
    out
}

fn indent(tag: &str, bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim_end();
    if s.is_empty() {
        return String::new();
    }
    let mut r = String::new();
    for line in s.lines().take(40) {
        r.push_str(&format!("\n  {tag}| {line}"));
    }
    r
}

/// Runs a shell command line (`sh -c`).
pub fn sh(cmd: &str) -> Output {
    run(Command::new("sh").arg("-c").arg(cmd))
}

/// Runs a shell command line and panics (with its stderr) unless it succeeds; returns
/// its stdout.
pub fn ok(cmd: &str) -> String {
    let out = sh(cmd);
    if !out.status.success() {
        panic!(
            "command failed ({:?}): {cmd}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command line and parses its stdout as JSON (for `ip -j ...`).
pub fn json(cmd: &str) -> Value {
    let s = ok(cmd);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("`{cmd}` printed no JSON ({e}): {s}"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One `ping` run from namespace `ns`: `ping -c 2 -W 2 -i 0.2` (`-6` for IPv6 targets,
/// including `fe80::...%dev`). True if it got replies.
pub fn ping(ns: &str, addr: &str) -> bool {
    let v6 = if addr.contains(':') { "-6 " } else { "" };
    sh(&format!(
        "ip netns exec {ns} ping {v6}-c 2 -W 2 -i 0.2 {addr}"
    ))
    .status
    .success()
}

/// `ping`, retried a few times: the daemon learns addresses from rtnetlink events, a
/// moment after `ip addr add` returns.
pub fn ping_retry(ns: &str, addr: &str) -> bool {
    (0..3).any(|_| ping(ns, addr))
}

/// The names of the links in namespace `ns` (from `ip -n NS -o link`).
pub fn link_names(ns: &str) -> BTreeSet<String> {
    ok(&format!("ip -n {ns} -o link"))
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The `ip -d -j link show dev DEV` object of a link.
pub fn link_json(ns: &str, dev: &str) -> Value {
    let v = json(&format!("ip -d -j -n {ns} link show dev {dev}"));
    v.get(0)
        .cloned()
        .unwrap_or_else(|| panic!("no link {dev} in {ns}: {v}"))
}

/// A link's MAC address (lower case).
pub fn mac(ns: &str, dev: &str) -> String {
    link_json(ns, dev)["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{dev} in {ns} has no address"))
        .to_ascii_lowercase()
}

/// `"02:00:00:00:00:01"` as bytes.
pub fn mac_bytes(s: &str) -> [u8; 6] {
    s.parse::<ipvlan_core::MacAddr>().expect("a MAC address").0
}

/// The MACs of the master and of its peer, the router.
pub fn wire_macs(t: &Topo) -> ([u8; 6], [u8; 6]) {
    (
        mac_bytes(&mac(&t.host, "eth0")),
        mac_bytes(&mac(&t.router, "eth0")),
    )
}

/// Whether a link of that name exists in `ns`.
pub fn link_exists(ns: &str, dev: &str) -> bool {
    sh(&format!("ip -n {ns} link show dev {dev}"))
        .status
        .success()
}

/// The addresses of `dev` in `ns` of one family (`-4`/`-6`) and scope (`global`/`link`).
pub fn addrs(ns: &str, dev: &str, family: &str, scope: &str) -> Vec<String> {
    let v = json(&format!(
        "ip -j -n {ns} {family} addr show dev {dev} scope {scope}"
    ));
    let mut r = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(l) = a["local"].as_str() {
                r.push(l.to_string());
            }
        }
    }
    r
}

/// The IPv6 link-local address of `dev` in `ns` (waits up to 5 s for it to appear).
pub fn link_local(ns: &str, dev: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(a) = addrs(ns, dev, "-6", "link").into_iter().next() {
            return a;
        }
        if Instant::now() >= deadline {
            panic!("{dev} in {ns} has no IPv6 link-local address");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

pub use ipvlan::netcheck::{in_netns, spawn_in_netns, tcp_transfer};

/// Writes a sysctl value inside namespace `ns` (through /proc/sys of that thread's
/// namespace; no `sysctl` binary needed). `key` uses dots: `net.ipv6.conf.all.accept_dad`.
pub fn sysctl(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    in_netns(ns, move || {
        std::fs::write(&path, value.as_bytes()).unwrap_or_else(|e| panic!("write {path}: {e}"))
    });
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// This test's own `ipvlan daemon` on a private socket. Killed (and reaped) on drop.
pub struct Daemon {
    child: Option<Child>,
    /// The control socket; every CLI call gets it as `IPVLAN_SOCKET`.
    pub socket: PathBuf,
    /// The daemon's stderr.
    pub log: PathBuf,
    /// Where it serves Prometheus metrics (a Unix socket).
    pub metrics: PathBuf,
    dir: PathBuf,
    /// More arguments to `ipvlan daemon` (e.g. `--fast-path off`).
    args: Vec<String>,
}

impl Daemon {
    /// Starts `ipvlan daemon --socket /tmp/ipvlan-rs-test-TAG/ipvlan.sock` and waits (at
    /// most 5 s) for the socket to appear. Its stderr goes to
    /// `CARGO_TARGET_TMPDIR/TAG-daemon.log`.
    pub fn start(tag: &str) -> Daemon {
        Daemon::start_with(tag, &[])
    }

    /// [`Daemon::start`] with more arguments to `ipvlan daemon`.
    pub fn start_with(tag: &str, args: &[&str]) -> Daemon {
        let dir = PathBuf::from(format!("/tmp/ipvlan-rs-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create socket dir");
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-daemon.log"));
        File::create(&log).expect("create daemon log");
        let mut d = Daemon {
            child: None,
            socket: dir.join("ipvlan.sock"),
            log,
            metrics: dir.join("metrics.sock"),
            dir,
            args: args.iter().map(ToString::to_string).collect(),
        };
        d.spawn();
        d
    }

    /// Starts the daemon process (again, after [`Daemon::kill`]) on the same socket,
    /// appending to the same log, and waits for its socket.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let log_file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let child = Command::new(BIN)
            .arg("daemon")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--metrics")
            .arg(&self.metrics)
            // The suite runs once per backend: IPVLAN_TEST_BACKEND=user|kernel.
            .arg("--backend")
            .arg(std::env::var("IPVLAN_TEST_BACKEND").unwrap_or_else(|_| "kernel".into()))
            .args(&self.args)
            .env("IPVLAN_SOCKET", &self.socket)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN} daemon: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.socket.exists() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "ipvlan daemon exited early ({st}); its log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "ipvlan daemon: no socket at {} after 5 s; its log:\n{}",
                    self.socket.display(),
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the daemon and reaps it.
    pub fn kill(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let pid =
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid is a pid_t"));
            let _ = nix::sys::signal::kill(pid, sig);
            let _ = child.wait();
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// One scrape of the metrics endpoint (the body, without the HTTP head).
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.metrics)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.metrics.display()));
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .expect("send request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics");
        let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.0 200"), "metrics answered {head}");
        body.to_string()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `ip netns exec NS ipvlan ARGS...` with this daemon's socket.
    pub fn ipvlan(&self, ns: &str, args: &[&str]) -> Output {
        self.ipvlan_timeout(ns, args, CMD_TIMEOUT)
    }

    /// [`Daemon::ipvlan`] with its own time limit.
    pub fn ipvlan_timeout(&self, ns: &str, args: &[&str], timeout: Duration) -> Output {
        run_timeout(
            Command::new("ip")
                .args(["netns", "exec", ns, BIN])
                .args(args)
                .env("IPVLAN_SOCKET", &self.socket)
                // If this test's daemon has died, fail instead of starting a stray one
                // in the background (honoured if the CLI supports it; harmless if not).
                .env("IPVLAN_NO_AUTOSTART", "1"),
            timeout,
        )
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM first so the daemon can clean up after itself; SIGKILL after 5 s.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid is a pid_t"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("!! daemon ignored SIGTERM for 5 s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!(
                "---- daemon log ({}), last {} lines ----",
                self.log.display(),
                tail.len()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
            eprintln!("---- end of daemon log ----");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// The topology
// ---------------------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A test's scratch world:
///
/// ```text
///   ns0 .. nsN-1 (empty; slaves are moved here)
///   HOST:   eth0 (up, no address)  <-- veth -->  ROUTER: eth0 10.X.0.1/24, fd00:X::1/64
/// ```
///
/// plus the test's own daemon. All namespaces are deleted on drop.
pub struct Topo {
    /// Unique short prefix of this test's names, e.g. `ivt12341`.
    pub prefix: String,
    /// The per-test number X used in 10.X.0.0/24 and fd00:X::/64 (1..=250).
    pub x: u32,
    /// The namespace holding the master `eth0`.
    pub host: String,
    /// The namespace holding the master's peer `eth0` (the "external" host / router).
    pub router: String,
    /// The slave namespaces (initially empty but for `lo`).
    pub slaves: Vec<String>,
    daemon: Option<Daemon>,
    made: Vec<String>,
}

impl Topo {
    /// Builds HOST, ROUTER and `n_slave_ns` slave namespaces, the veth master, and starts
    /// this test's daemon. Panics (after cleaning up what it made) on any failure.
    pub fn new(n_slave_ns: usize) -> Topo {
        Topo::with_daemon_args(n_slave_ns, &[])
    }

    /// [`Topo::new`] with more arguments to `ipvlan daemon` (e.g. `--fast-path off`).
    pub fn with_daemon_args(n_slave_ns: usize, args: &[&str]) -> Topo {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("ivt{:04}{}", pid % 10000, n);
        assert!(prefix.len() <= 10, "prefix too long: {prefix}");
        let x = (pid.wrapping_mul(7).wrapping_add(n)) % 250 + 1;
        let mut t = Topo {
            host: format!("{prefix}-host"),
            router: format!("{prefix}-router"),
            slaves: (0..n_slave_ns).map(|i| format!("{prefix}-ns{i}")).collect(),
            prefix: prefix.clone(),
            x,
            daemon: None,
            made: Vec::new(),
        };
        let all: Vec<String> = [t.host.clone(), t.router.clone()]
            .into_iter()
            .chain(t.slaves.iter().cloned())
            .collect();
        for ns in &all {
            t.add_netns(ns);
        }
        let (h, r) = (t.host.clone(), t.router.clone());
        // The veth is created directly inside HOST with its peer inside ROUTER, so it
        // never appears in the namespace the tests run in.
        ok(&format!(
            "ip -n {h} link add eth0 type veth peer name eth0 netns {r}"
        ));
        ok(&format!("ip -n {h} link set dev eth0 up"));
        ok(&format!("ip -n {r} addr add 10.{x}.0.1/24 dev eth0"));
        ok(&format!("ip -n {r} addr add fd00:{x}::1/64 dev eth0"));
        ok(&format!("ip -n {r} link set dev eth0 up"));
        t.daemon = Some(Daemon::start_with(&prefix, args));
        t
    }

    fn add_netns(&mut self, ns: &str) {
        let out = sh(&format!("ip netns add {ns}"));
        if !out.status.success() {
            // A leftover of an earlier, killed run with the same pid: replace it.
            let _ = sh(&format!("ip netns del {ns}"));
            ok(&format!("ip netns add {ns}"));
        }
        self.made.push(ns.to_string());
        ok(&format!("ip -n {ns} link set dev lo up"));
        // No DAD: IPv6 addresses are usable at once. `all` is OR-ed with the per-device
        // value; `default` is what devices created or moved here later start with.
        sysctl(ns, "net.ipv6.conf.all.accept_dad", "0");
        sysctl(ns, "net.ipv6.conf.default.accept_dad", "0");
    }

    /// Deletes one of this topology's namespaces now (`ip netns del`), as its owner
    /// would; it is not deleted again on drop.
    pub fn del_netns(&mut self, ns: &str) {
        ok(&format!("ip netns del {ns}"));
        self.made.retain(|n| n != ns);
    }

    /// Slave namespace `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.slaves[i]
    }

    pub fn daemon_mut(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the topology has a daemon")
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Runs `ip netns exec NS ipvlan ARGS...` against this test's daemon.
    pub fn ipvlan(&self, ns: &str, args: &[&str]) -> Output {
        self.daemon().ipvlan(ns, args)
    }

    /// Like [`Topo::ipvlan`] but panics unless it exits 0; returns stdout.
    pub fn ipvlan_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.ipvlan(ns, args);
        if !out.status.success() {
            panic!(
                "ipvlan {args:?} in {ns} failed ({:?}):\n{}{}",
                out.status.code(),
                stderr(&out),
                stdout(&out)
            );
        }
        stdout(&out)
    }

    /// The router's IPv4 address, 10.X.0.1.
    pub fn router_v4(&self) -> String {
        format!("10.{}.0.1", self.x)
    }

    /// The router's IPv6 address, fd00:X::1.
    pub fn router_v6(&self) -> String {
        format!("fd00:{}::1", self.x)
    }

    /// 10.X.0.HOST
    pub fn v4(&self, host: u32) -> String {
        format!("10.{}.0.{host}", self.x)
    }

    /// fd00:X::HOST (HOST written in hex as-is, e.g. 10 -> `fd00:X::10`)
    pub fn v6(&self, host: u32) -> String {
        format!("fd00:{}::{host}", self.x)
    }

    /// Everything worth seeing when a check fails: links, addresses, routes, neighbours
    /// of every namespace, and `ipvlan -d link show`.
    pub fn diag(&self) -> String {
        let mut s = String::new();
        for ns in &self.made {
            for c in ["-d link", "addr", "route", "-6 route", "neigh"] {
                let o = sh(&format!("ip -n {ns} {c}"));
                s.push_str(&format!("== {ns}: ip {c}\n{}{}", stdout(&o), stderr(&o)));
            }
        }
        if let Some(d) = &self.daemon {
            let o = d.ipvlan_timeout(&self.router, &["-d", "-s", "link", "show"], DIAG_TIMEOUT);
            s.push_str(&format!(
                "== ipvlan -d -s link show\n{}{}",
                stdout(&o),
                stderr(&o)
            ));
        }
        s
    }

    /// Asserts that `ns` reaches `addr` by ping (retried a little), with diagnostics on
    /// failure.
    pub fn assert_ping(&self, ns: &str, addr: &str) {
        if !ping_retry(ns, addr) {
            panic!("no ping reply: {ns} -> {addr}\n{}", self.diag());
        }
    }

    /// Asserts an intact TCP transfer of `mib` MiB, with diagnostics on failure.
    pub fn assert_tcp(&self, from_ns: &str, to_ns: &str, to_addr: &str, mib: usize) {
        let ip: IpAddr = to_addr.parse().expect("an IP address");
        if let Err(e) = tcp_transfer(from_ns, to_ns, ip, mib) {
            panic!(
                "TCP transfer of {mib} MiB {from_ns} -> {to_ns} ({to_addr}) failed: {e}\n{}",
                self.diag()
            );
        }
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        if thread::panicking() {
            // Printed before the teardown, while there is still something to see.
            eprintln!("{}", self.diag());
        }
        // Stop the daemon first so it can clean up what it made; then the namespaces
        // (deleting them removes every veth inside).
        self.daemon.take();
        for ns in self.made.iter().rev() {
            let out = sh(&format!("ip netns del {ns}"));
            if !out.status.success() {
                eprintln!("warning: could not delete netns {ns}: {}", stderr(&out));
            }
        }
    }
}

/// Polls `f` every 100 ms until it is true or `timeout` has passed; returns its last
/// value.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Creates `ipvl{i}` on HOST's eth0 with `ipvlan link add ... type ipvlan ARGS`, moves
/// it to slave namespace `i` and brings it up. Returns its name.
pub fn add_slave(t: &Topo, i: usize, args: &[&str]) -> String {
    let dev = format!("ipvl{i}");
    let mut a = vec![
        "link",
        "add",
        "link",
        "eth0",
        dev.as_str(),
        "type",
        "ipvlan",
    ];
    a.extend_from_slice(args);
    t.ipvlan_ok(&t.host, &a);
    ok(&format!(
        "ip -n {} link set dev {dev} netns {}",
        t.host,
        t.ns(i)
    ));
    ok(&format!("ip -n {} link set dev {dev} up", t.ns(i)));
    dev
}

// ---------------------------------------------------------------------------------------
// UDP listeners inside namespaces
// ---------------------------------------------------------------------------------------

/// A group to join.
#[derive(Clone)]
pub enum Join {
    /// IPv4 group on the interface holding that address.
    V4(Ipv4Addr, Ipv4Addr),
    /// IPv6 group on the named interface.
    V6(Ipv6Addr, String),
}

/// A UDP socket in a namespace, on its own thread, recording every datagram's payload
/// until dropped.
pub struct Listener {
    /// Where it listens, for messages.
    pub what: String,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Listener {
    /// Binds `bind` in `ns`, joins every group of `joins`, and returns once ready.
    pub fn start(ns: &str, bind: SocketAddr, joins: Vec<Join>) -> Listener {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (g, s) = (got.clone(), stop.clone());
        let handle = spawn_in_netns(ns, move || {
            let setup = || -> Result<UdpSocket, String> {
                let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
                for j in &joins {
                    match j {
                        Join::V4(group, iface) => sock
                            .join_multicast_v4(group, iface)
                            .map_err(|e| format!("join {group} on {iface}: {e}"))?,
                        Join::V6(group, dev) => {
                            let idx = nix::net::if_::if_nametoindex(dev.as_str())
                                .map_err(|e| format!("ifindex of {dev}: {e}"))?;
                            sock.join_multicast_v6(group, idx)
                                .map_err(|e| format!("join {group} on {dev}: {e}"))?
                        }
                    }
                }
                sock.set_read_timeout(Some(Duration::from_millis(100)))
                    .map_err(|e| e.to_string())?;
                Ok(sock)
            };
            let sock = match setup() {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    g.lock().expect("listener lock").push(text);
                }
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("listener in {ns}: {e}"),
            Err(e) => panic!("listener in {ns} never got ready: {e}"),
        }
        Listener {
            what: format!("listener in {ns} on {bind}"),
            got,
            stop,
            handle: Some(handle),
        }
    }

    pub fn received(&self) -> Vec<String> {
        self.got.lock().expect("listener lock").clone()
    }

    /// Whether any datagram starting with `prefix` arrived.
    pub fn saw(&self, prefix: &str) -> bool {
        self.received().iter().any(|m| m.starts_with(prefix))
    }

    /// How many distinct payloads start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.received()
            .into_iter()
            .filter(|m| m.starts_with(prefix))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The distinct payloads starting with `prefix`.
    pub fn distinct(&self, prefix: &str) -> BTreeSet<String> {
        self.received()
            .into_iter()
            .filter(|m| m.starts_with(prefix))
            .collect()
    }

    /// How many payloads (duplicates included) start with `prefix`.
    pub fn count_all(&self, prefix: &str) -> usize {
        self.received()
            .iter()
            .filter(|m| m.starts_with(prefix))
            .count()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The name of slave `dev`'s host end (from `ipvlan -j -d link show` in HOST).
pub fn host_end(t: &Topo, dev: &str) -> String {
    links_by_name(t, &t.host, &["-d"])
        .get(dev)
        .and_then(|e| e["host_end"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("{dev} has no host end listed"))
}

/// `ipvlan -j OPTS link show` run in `ns`, as a map ifname -> entry.
pub fn links_by_name(t: &Topo, ns: &str, opts: &[&str]) -> HashMap<String, Value> {
    let mut args: Vec<&str> = vec!["-j"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["link", "show"]);
    let out = t.ipvlan_ok(ns, &args);
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

/// A slave's drop counter for `reason` (0 when absent), from `ipvlan -j -s link show`.
pub fn drops(t: &Topo, dev: &str, reason: &str) -> u64 {
    let list = links_by_name(t, &t.host, &["-s"]);
    let e = list
        .get(dev)
        .unwrap_or_else(|| panic!("no {dev} in `ipvlan -j -s link show`: {list:?}"));
    e["stats64"]["drops"][reason].as_u64().unwrap_or(0)
}

/// Loads `rules` (an nftables script) into namespace `ns` with `nft -f -`; panics with
/// nft's error and the script if it refuses them.
pub fn nft(ns: &str, rules: &str) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("write nft rules");
    let out = child.wait_with_output().expect("nft ran");
    assert!(
        out.status.success(),
        "nft -f in {ns} failed: {}\n{rules}",
        String::from_utf8_lossy(&out.stderr)
    );
}
