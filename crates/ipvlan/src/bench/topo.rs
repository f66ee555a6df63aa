//! The scratch topology of one run (`Topo`), the ipvlan-rs daemon as a child process
//! (`Daemon`), the slaves on HOST's eth0, and the clean-up when the benchmark is
//! interrupted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;
use ipvlan::netcheck::in_netns;

use super::cmd::{ip, run_cmd};
use super::cpu::clk_tck;

/// The scratch namespaces of one run; deleted on drop.
pub(super) struct Topo {
    pub(super) host: String,
    pub(super) ext: String,
    pub(super) ns: [String; 2],
}

impl Topo {
    pub(super) fn new(tag: &str, mode: &str) -> anyhow::Result<Topo> {
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
pub(super) struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    exe: PathBuf,
}

impl Daemon {
    pub(super) fn start(tag: &str, backend: &str, busy_poll: u64) -> anyhow::Result<Daemon> {
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
    pub(super) fn cli(&self, args: &[&str]) -> Command {
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
    pub(super) fn rss_mib(&self) -> f64 {
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
    pub(super) fn cpu_secs(&self) -> f64 {
        self.stat_fields().iter().skip(11).take(2).sum::<f64>() / clk_tck()
    }

    /// CPU seconds of the daemon and of the children it waited for (its `nft` runs):
    /// fields 14 to 17 of stat(5).
    fn cpu_secs_with_children(&self) -> f64 {
        self.stat_fields().iter().skip(11).take(4).sum::<f64>() / clk_tck()
    }

    /// Waits until the daemon has used no CPU for half a second (at most `limit`);
    /// returns how long that took.
    pub(super) fn settle(&self, limit: Duration) -> Duration {
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

// ---------------------------------------------------------------------------------------
// Slaves
// ---------------------------------------------------------------------------------------

/// Makes slave `name` on HOST's eth0 (macvlan bridge, or through the daemon).
pub(super) fn add_slave(
    topo: &Topo,
    daemon: Option<&Daemon>,
    name: &str,
    mode: &str,
) -> anyhow::Result<()> {
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
pub(super) fn busy_slaves(topo: &Topo, daemon: Option<&Daemon>, mode: &str) -> anyhow::Result<()> {
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
pub(super) fn reach(from: &str, addr: &str) -> anyhow::Result<()> {
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

/// Lets HOST reach the two busy slaves from 10.77.0.2: ipvlan-rs's `host_access on`, or,
/// for macvlan, the usual workaround: a macvlan "shim" in HOST holding the address, with
/// a route to each slave.
pub(super) fn host_to_slaves(topo: &Topo, daemon: Option<&Daemon>) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------------
// Interrupted
// ---------------------------------------------------------------------------------------

/// The daemons the benchmark has running. A daemon leaves the list before it is reaped
/// (in `Drop`), so no pid here can belong to another process.
static DAEMON_PIDS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Interrupted (Ctrl-C, SIGTERM, SIGHUP), the benchmark still leaves nothing behind: a
/// thread waiting for those signals (blocked everywhere else; children start with
/// none blocked) kills what runs in the benchmark's namespaces, deletes them and its
/// scratch directories, and exits with 130.
pub(super) fn clean_up_on_signals() -> anyhow::Result<()> {
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
