//! The plugin under the real container runtimes: Debian's Podman (CNI backend, runc)
//! and containerd (`ctr run --cni`), each started inside a scratch network namespace
//! with `nsenter` (not `ip netns exec`, which remounts `/sys` and hides the runtime's
//! namespace mounts), containers from a local root filesystem made of busybox-static,
//! this test's own ipvlan-rs daemon on a private socket. Nothing of the machine's own
//! configuration is used or changed: Podman gets a `CONTAINERS_CONF` and scratch roots;
//! containerd and `ctr` run in a private mount namespace where `/etc/cni/net.d` and
//! `/opt/cni/bin` are bind mounts of scratch directories.
//!
//! ```text
//!   containers (eth0 in each: a slave made by the plugin under the runtime)
//!   HOST (runtime, daemon): eth0, eth1, eth2 (masters) <-- veth --> ROUTER: eth0, eth1, eth2
//!     eth0: l2 bridge, IPv4 + IPv6    eth1: l2 private    eth2: l3, routed by HOST
//! ```
//!
//! Root only; a runtime that is missing or does not start fails the test with a message
//! (`sudo ./x deps` installs podman, runc, containerd and busybox-static).

#![forbid(unsafe_code)]

#[path = "support/ipvlan_binary.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_ipvlan-cni");
const BUSYBOX: &str = "/bin/busybox";
const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const TIMEOUT: Duration = Duration::from_secs(60);

fn require(tools: &[(&str, &str)]) {
    if !nix::unistd::geteuid().is_root() {
        panic!("root integration test: run as root (CI does); e.g. `sudo ./x test`");
    }
    for (path, pkg) in tools.iter().chain(&[
        (BUSYBOX, "busybox-static"),
        (HOST_LOCAL, "containernetworking-plugins"),
    ]) {
        if !Path::new(path).is_file() {
            panic!(
                "{path} is missing: install {pkg} (`sudo ./x deps`); this test cannot run without it"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// Runs `cmd`, killing it after [`TIMEOUT`]; logs it and its output.
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid is a pid_t"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(r) => r.unwrap_or_else(|e| panic!("waiting for {shown}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("timed out after {TIMEOUT:?}: {shown}");
        }
    };
    eprintln!(
        "$ {shown}\n  -> {:?}\n  out| {}\n  err| {}",
        out.status.code(),
        text(&out.stdout).trim_end().replace('\n', "\n  out| "),
        text(&out.stderr).trim_end().replace('\n', "\n  err| ")
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sh(cmd: &str) -> Output {
    run(Command::new("sh").arg("-c").arg(cmd))
}

fn ok(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "command failed ({:?}): {cmd}\n{}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// One ICMP echo, nothing sent before it: the first packet must be answered.
fn ping1(addr: &str) -> String {
    format!("ping -c 1 -W 3 {addr}")
}

/// A shell command pinging every address at the same moment (one packet each), failing
/// if any is not answered.
fn at_once(addrs: &[&str]) -> String {
    let mut cmd = String::new();
    for (i, a) in addrs.iter().enumerate() {
        cmd.push_str(&format!("{} & p{i}=$!; ", ping1(a)));
    }
    let waits: Vec<String> = (0..addrs.len()).map(|i| format!("wait $p{i}")).collect();
    cmd + &waits.join(" && ")
}

// ---------------------------------------------------------------------------------------
// The scratch world
// ---------------------------------------------------------------------------------------

/// The masters: (device, mode, flag, IPv4 /24 of the containers, IPv6 /64).
const NETS: [(&str, &str, &str, &str, &str); 3] = [
    ("eth0", "l2", "bridge", "10.89.1", "fd00:89:1"),
    ("eth1", "l2", "private", "10.89.2", "fd00:89:2"),
    ("eth2", "l3", "bridge", "10.89.3", "fd00:89:3"),
];

struct World {
    host: String,
    router: String,
    dir: PathBuf,
    socket: PathBuf,
    daemon: Option<Child>,
    /// Long-running runtime processes (containerd, foreground `ctr run`s).
    children: Vec<Child>,
}

impl World {
    fn new(tag: &str) -> World {
        let ipvlan = support::ipvlan_binary(PLUGIN);
        let prefix = format!("{tag}{:05}", std::process::id() % 100_000);
        let dir = PathBuf::from(format!("/tmp/ipvlan-rs-test-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "bin",
            "net.d",
            "ipam",
            "rootfs/bin",
            "rootfs/tmp",
            "rootfs/etc",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("scratch directory");
        }
        let mut w = World {
            host: format!("{prefix}-host"),
            router: format!("{prefix}-router"),
            socket: dir.join("ipvlan.sock"),
            dir,
            daemon: None,
            children: vec![],
        };
        let (h, r) = (w.host.clone(), w.router.clone());
        ok(&format!("ip netns add {h} && ip netns add {r}"));
        ok(&format!(
            "ip -n {h} link set lo up && ip -n {r} link set lo up"
        ));
        for (i, (dev, _, _, v4, v6)) in NETS.iter().enumerate() {
            let (rv4, rv6) = if i == 2 {
                ("10.89.13".to_string(), "fd00:89:13".to_string())
            } else {
                (v4.to_string(), v6.to_string())
            };
            ok(&format!(
                "ip -n {h} link add {dev} type veth peer name {dev} netns {r} && \
                 ip -n {h} link set {dev} up && ip -n {r} link set {dev} up && \
                 ip -n {r} addr add {rv4}.1/24 dev {dev} && \
                 ip -n {r} addr add {rv6}::1/64 dev {dev} nodad"
            ));
        }
        // eth2's network (l3) is routed by HOST: the router reaches it through HOST.
        ok(&format!(
            "ip -n {h} addr add 10.89.13.2/24 dev eth2 && ip -n {h} addr add fd00:89:13::2/64 dev eth2 nodad && \
             ip -n {r} route add 10.89.3.0/24 via 10.89.13.2 && ip -n {r} route add fd00:89:3::/64 via fd00:89:13::2"
        ));
        // The plugin under the reference plugin's name, and IPAM beside it.
        std::os::unix::fs::symlink(PLUGIN, w.dir.join("bin/ipvlan")).expect("plugin link");
        std::os::unix::fs::symlink(HOST_LOCAL, w.dir.join("bin/host-local")).expect("ipam link");
        // The containers' root filesystem: busybox and its applets.
        let rootfs = w.dir.join("rootfs");
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copying busybox");
        for applet in [
            "sh", "ping", "ip", "sleep", "cat", "ls", "touch", "nc", "test", "[",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("applet link");
        }
        let log = std::fs::File::create(w.dir.join("daemon.log")).expect("daemon log");
        w.daemon = Some(
            w.in_host(&ipvlan)
                .args(["daemon", "--socket"])
                .arg(&w.socket)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .spawn()
                .expect("starting the ipvlan daemon"),
        );
        w.wait_for(&w.socket.clone(), "the ipvlan daemon");
        w
    }

    /// `program` inside HOST, with the plugin's environment.
    fn in_host(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host))
            .arg(program)
            .env("IPVLAN_SOCKET", &self.socket)
            .env("IPVLAN_NO_AUTOSTART", "1");
        cmd
    }

    fn wait_for(&mut self, socket: &Path, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if Instant::now() > deadline {
                panic!(
                    "{what} did not start (no {}): see the logs in {}",
                    socket.display(),
                    self.dir.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A conflist of one ipvlan plugin on master `net` of [`NETS`], at `version`.
    fn conflist(&self, name: &str, version: &str, net: usize, first_host: u32) -> Value {
        let (dev, mode, flag, v4, v6) = NETS[net];
        let mut ranges = vec![
            json!([{"subnet": format!("{v4}.0/24"), "rangeStart": format!("{v4}.{first_host}")}]),
        ];
        let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
        if net == 0 {
            ranges.push(
                json!([{"subnet": format!("{v6}::/64"), "rangeStart": format!("{v6}::{first_host}")}]),
            );
            routes.push(json!({"dst": "::/0"}));
        }
        if mode == "l2" {
            ranges[0][0]["gateway"] = json!(format!("{v4}.1"));
            if net == 0 {
                ranges[1][0]["gateway"] = json!(format!("{v6}::1"));
            }
        }
        json!({
            "cniVersion": version,
            "name": name,
            "plugins": [{
                "type": "ipvlan",
                "master": dev,
                "mode": mode,
                "flag": flag,
                "ipam": {
                    "type": "host-local",
                    "ranges": ranges,
                    "routes": routes,
                    "dataDir": self.dir.join("ipam").to_string_lossy(),
                },
                "capabilities": {"ips": true}
            }]
        })
    }

    fn write_conflist(&self, file: &str, conf: &Value) {
        std::fs::write(self.dir.join("net.d").join(file), conf.to_string()).expect("conflist");
    }

    /// Links beside the masters in HOST: the host ends of slaves (and any leftover).
    fn host_ends(&self) -> BTreeSet<String> {
        ok(&format!("ip -n {} -o link", self.host))
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| !["lo", "eth0", "eth1", "eth2", ""].contains(&n.as_str()))
            .collect()
    }

    /// The daemon's slaves, as `ipvlan link show` lists them.
    fn slaves(&self) -> usize {
        let out = run(self.in_host(&ipvlan_path()).args(["-j", "link", "show"]));
        assert!(
            out.status.success(),
            "ipvlan link show: {}",
            text(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    }

    /// host-local's leases (files named by address) in every network's directory.
    fn leases(&self) -> Vec<String> {
        let mut out = vec![];
        for net in std::fs::read_dir(self.dir.join("ipam"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    out.push(name);
                }
            }
        }
        out
    }

    /// No slave, host end or lease is left (removal may finish in a cleanup process
    /// a moment after the runtime's command returned).
    fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ends, slaves, leases) = (self.host_ends(), self.slaves(), self.leases());
            if ends.is_empty() && slaves == 0 && leases.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "left behind: host ends {ends:?}, {slaves} slaves, leases {leases:?}\ndaemon log:\n{}",
                    std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn master_mac(&self, dev: &str) -> String {
        let v: Value =
            serde_json::from_str(&ok(&format!("ip -j -n {} link show dev {dev}", self.host)))
                .expect("ip -j");
        v[0]["address"].as_str().expect("a MAC").to_string()
    }

    fn router_ping(&self, addr: &str) -> bool {
        sh(&format!("ip netns exec {} {}", self.router, ping1(addr)))
            .status
            .success()
    }
}

fn ipvlan_path() -> PathBuf {
    Path::new(PLUGIN)
        .parent()
        .expect("target dir")
        .join("ipvlan")
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut d) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(d.id()).expect("a pid is a pid_t"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(d.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = sh(&format!(
            "ip netns del {} 2>/dev/null; ip netns del {} 2>/dev/null",
            self.host, self.router
        ));
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The address of `dev` in the output of `ip addr` in a container, family `v6`.
fn addr_of(ip_addr: &str, v6: bool) -> String {
    let key = if v6 { "inet6 " } else { "inet " };
    ip_addr
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|l| l.split_whitespace().next())
        .find(|a| !a.starts_with("fe80") && !a.starts_with("127.") && *a != "::1/128")
        .map(|a| a.split('/').next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no {key}address in:\n{ip_addr}"))
}

fn assert_in(out: &str, needle: &str, what: &str) {
    assert!(out.contains(needle), "{what}: {needle:?} not in:\n{out}");
}

// ---------------------------------------------------------------------------------------
// Podman
// ---------------------------------------------------------------------------------------

const PODMAN: &str = "/usr/bin/podman";

struct Podman<'a> {
    w: &'a World,
}

impl Podman<'_> {
    fn new(w: &World) -> Podman<'_> {
        let d = w.dir.display();
        let socket = w.socket.display();
        std::fs::write(
            w.dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
network_config_dir = "{d}/net.d"
cni_plugin_dirs = ["{d}/bin"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
conmon_env_vars = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "IPVLAN_SOCKET={socket}", "IPVLAN_NO_AUTOSTART=1"]
"#
            ),
        )
        .expect("containers.conf");
        Podman { w }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let d = &self.w.dir;
        let mut cmd = self.w.in_host(Path::new(PODMAN));
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        run(&mut cmd)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({:?}):\n{}",
            out.status.code(),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// A container that sleeps until it is removed.
    fn start(&self, name: &str, net: &str) {
        let rootfs = self.w.dir.join("rootfs");
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "--rootfs",
            &rootfs.to_string_lossy(),
            "sleep",
            "600",
        ]);
    }

    fn exec(&self, name: &str, cmd: &str) -> Output {
        self.cmd(&["exec", name, "sh", "-c", cmd])
    }

    fn exec_ok(&self, name: &str, cmd: &str) -> String {
        let out = self.exec(name, cmd);
        assert!(
            out.status.success(),
            "in {name}: {cmd} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn sandbox(&self, name: &str) -> String {
        self.ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
            name,
        ])
        .trim()
        .to_string()
    }
}

impl Drop for Podman<'_> {
    /// Removes whatever containers a failure left (their conmon would outlive the test).
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-a", "-f", "-t", "0"]);
    }
}

/// Podman 4.3 with the CNI backend: the configuration `podman network create -d ipvlan`
/// writes (cniVersion 0.4.0, `"master": ""`), then conflists with `flag` and `mode` as
/// a user writes them; two containers per network, traffic in both families from the
/// first packet, a container exiting on its own, removal, a bad master.
#[test]
fn podman() {
    require(&[
        (PODMAN, "podman"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/bin/conmon", "conmon"),
    ]);
    let started = Instant::now();
    let w = World::new("pm");
    let p = Podman::new(&w);
    let h = &w.host;

    // --- What `podman network create -d ipvlan --subnet … --ipv6 --subnet …` writes,
    // made by podman itself: master "" is the default route's interface (eth0 here).
    ok(&format!(
        "ip -n {h} route add default via 10.89.1.1 dev eth0 onlink"
    ));
    p.ok(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet",
        "10.89.1.0/24",
        "--ipv6",
        "--subnet",
        "fd00:89:1::/64",
        "pnet0",
    ]);
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(w.dir.join("net.d/pnet0.conflist")).expect("podman's conflist"),
    )
    .expect("JSON");
    eprintln!("podman network create wrote: {written}");
    assert_eq!(written["cniVersion"], "0.4.0");
    assert_eq!(written["plugins"][0]["master"], "");
    // host-local keeps its leases in the scratch directory, not /var/lib/cni.
    let mut conf = written.clone();
    conf["plugins"][0]["ipam"]["dataDir"] = json!(w.dir.join("ipam").to_string_lossy());
    w.write_conflist("pnet0.conflist", &conf);

    p.start("a0", "pnet0");
    p.start("a1", "pnet0");
    eprintln!("== two containers up after {:?}", started.elapsed());
    let mac = w.master_mac("eth0");
    let ip_a0 = p.exec_ok("a0", "ip addr show dev eth0");
    let ip_a1 = p.exec_ok("a1", "ip addr show dev eth0");
    assert_in(&ip_a0, &mac, "a0 carries the master's MAC");
    assert_in(&ip_a1, &mac, "a1 carries the master's MAC");
    assert!(!ip_a0.contains("tentative"), "a0: {ip_a0}");
    let (a0v4, a0v6) = (addr_of(&ip_a0, false), addr_of(&ip_a0, true));
    let (a1v4, a1v6) = (addr_of(&ip_a1, false), addr_of(&ip_a1, true));
    assert!(
        a0v4.starts_with("10.89.1.") && a0v6.starts_with("fd00:89:1::"),
        "{ip_a0}"
    );
    // Both families at once, first packets: each container to the other and to the
    // router, and the router to each.
    p.exec_ok("a0", &at_once(&[&a1v4, &a1v6, "10.89.1.1", "fd00:89:1::1"]));
    for cmd in [
        ping1(&a0v4),
        ping1(&a0v6),
        ping1("10.89.1.1"),
        ping1("fd00:89:1::1"),
    ] {
        p.exec_ok("a1", &cmd);
    }
    for a in [&a0v4, &a0v6, &a1v4, &a1v6] {
        assert!(w.router_ping(a), "router -> {a}");
    }
    // A TCP transfer, IPv4 and IPv6 (the listener is started again until the client
    // reached it: `exec -d` returns before it listens).
    for (port, dst) in [(7001, &a1v4), (7002, &a1v6)] {
        let got = (0..20).any(|_| {
            let listen = format!("nc -l -p {port} > /tmp/got{port}");
            p.ok(&["exec", "-d", "a1", "sh", "-c", &listen]);
            let _ = p.exec(
                "a0",
                &format!("sleep 0.2; echo payload-{port} | nc -w 2 {dst} {port}"),
            );
            let seen = p.exec("a1", &format!("cat /tmp/got{port}"));
            text(&seen.stdout).contains(&format!("payload-{port}"))
        });
        assert!(got, "no TCP transfer a0 -> a1 ({dst} port {port})");
    }
    eprintln!("== pings and TCP checked after {:?}", started.elapsed());

    // --- A container that exits on its own: conmon's cleanup sends DEL.
    let rootfs = w.dir.join("rootfs").to_string_lossy().into_owned();
    let sandbox_a0 = p.sandbox("a0");
    p.ok(&[
        "run",
        "-d",
        "--name",
        "x0",
        "--network",
        "pnet0",
        "--rootfs",
        &rootfs,
        "sleep",
        "1",
    ]);
    let sandbox_x0 = p.sandbox("x0");
    p.ok(&["wait", "x0"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.host_ends().len() > 2 || Path::new(&sandbox_x0).exists() {
        assert!(
            Instant::now() < deadline,
            "the exited container's slave or namespace is left: {:?} {sandbox_x0}",
            w.host_ends()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        w.leases().len(),
        4,
        "a0's and a1's leases only: {:?}",
        w.leases()
    );
    p.ok(&["rm", "-f", "-t", "0", "a0", "a1", "x0"]);
    w.assert_clean();
    assert!(
        !Path::new(&sandbox_a0).exists(),
        "a0's namespace {sandbox_a0} is left"
    );
    eprintln!("== removal checked after {:?}", started.elapsed());

    // --- private and l3, through conflists with the plugin's `flag` and `mode`.
    w.write_conflist("ppriv.conflist", &w.conflist("ppriv", "0.4.0", 1, 10));
    w.write_conflist("pl3.conflist", &w.conflist("pl3", "1.0.0", 2, 10));
    p.start("b0", "ppriv");
    p.start("b1", "ppriv");
    p.start("l0", "pl3");
    p.start("l1", "pl3");
    let b1 = addr_of(&p.exec_ok("b1", "ip addr show dev eth0"), false);
    assert!(
        !p.exec("b0", &ping1(&b1)).status.success(),
        "private: b0 reached b1"
    );
    p.exec_ok("b0", &ping1("10.89.2.1"));
    assert!(w.router_ping(&b1), "private: router -> b1");
    let l1 = addr_of(&p.exec_ok("l1", "ip addr show dev eth0"), false);
    let routes = p.exec_ok("l0", "ip route");
    assert_in(&routes, "default", "l3: a default route");
    p.exec_ok("l0", &ping1(&l1));
    p.exec_ok("l0", &ping1("10.89.13.1"));
    assert!(w.router_ping(&l1), "l3: router -> l1, routed by HOST");
    let link = run(w.in_host(&ipvlan_path()).args(["-d", "link", "show"]));
    let details = text(&link.stdout);
    assert_in(&details, "private", "the daemon's view of ppriv");
    assert_in(&details, "l3", "the daemon's view of pl3");
    p.ok(&["rm", "-f", "-t", "0", "b0", "b1", "l0", "l1"]);
    w.assert_clean();
    eprintln!("== private and l3 checked after {:?}", started.elapsed());

    // --- A bad configuration: a master that does not exist.
    let mut bad = w.conflist("pbad", "0.4.0", 0, 10);
    bad["plugins"][0]["master"] = json!("eth9");
    w.write_conflist("pbad.conflist", &bad);
    let out = p.cmd(&[
        "run",
        "--rm",
        "--network",
        "pbad",
        "--rootfs",
        &rootfs,
        "true",
    ]);
    assert!(!out.status.success(), "a container started on master eth9");
    let err = text(&out.stderr);
    assert_in(
        &err,
        "master interface \"eth9\" not found",
        "podman's error",
    );
    let _ = p.cmd(&["rm", "-a", "-f", "-t", "0"]);
    w.assert_clean();
    eprintln!("== podman test done in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------------------

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";

struct Containerd<'a> {
    w: &'a World,
    address: PathBuf,
}

impl<'a> Containerd<'a> {
    /// containerd in HOST, in a private mount namespace where the CNI directories are
    /// the scratch ones (`ctr` gets the same through [`Self::cmd`]).
    fn start(w: &'a mut World) -> Containerd<'a> {
        let d = w.dir.clone();
        let address = d.join("containerd.sock");
        // The shims' and runc's state, and ctr's FIFOs, stay in the scratch directory.
        std::fs::create_dir_all(d.join("run-containerd")).expect("scratch directory");
        std::fs::write(
            d.join("containerd.toml"),
            format!(
                "version = 2\nroot = \"{0}/croot\"\nstate = \"{0}/cstate\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n",
                d.display(),
                address.display()
            ),
        )
        .expect("containerd.toml");
        std::fs::write(
            d.join("cni-mounts.sh"),
            format!(
                "#!/bin/sh\nset -e\nmount --make-rprivate /\nmkdir -p /etc/cni/net.d /opt/cni/bin /run/containerd\n\
                 mount --bind {0}/net.d /etc/cni/net.d\nmount --bind {0}/bin /opt/cni/bin\n\
                 mount --bind {0}/run-containerd /run/containerd\nexec \"$@\"\n",
                d.display()
            ),
        )
        .expect("mount script");
        ok(&format!("chmod +x {}/cni-mounts.sh", d.display()));
        let log = std::fs::File::create(d.join("containerd.log")).expect("containerd log");
        let child = Self::private(&w.dir, &w.host, &w.socket)
            .args([CONTAINERD, "--config"])
            .arg(d.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        w.children.push(child);
        w.wait_for(&address, "containerd");
        Containerd { w, address }
    }

    /// `unshare -m` (the CNI bind mounts), then `nsenter` into HOST.
    fn private(dir: &Path, host: &str, socket: &Path) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.arg("-m")
            .arg(dir.join("cni-mounts.sh"))
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{host}"))
            .env("IPVLAN_SOCKET", socket)
            .env("IPVLAN_NO_AUTOSTART", "1");
        cmd
    }

    fn ctr(&self) -> Command {
        let mut cmd = Self::private(&self.w.dir, &self.w.host, &self.w.socket);
        cmd.arg(CTR).arg("--address").arg(&self.address);
        cmd
    }

    /// `ctr run --rm --cni` in the foreground, in the background: the container sleeps
    /// until `/tmp/stop-NAME` appears in the root filesystem, then exits and ctr sends
    /// DEL.
    fn spawn(&self, name: &str) -> Child {
        let rootfs = self.w.dir.join("rootfs");
        let log = std::fs::File::create(self.w.dir.join(format!("ctr-{name}.log"))).expect("log");
        let mut cmd = self.ctr();
        cmd.args(["run", "--rm", "--cni", "--rootfs"])
            .arg(&rootfs)
            .arg(name)
            .args([
                "/bin/sh",
                "-c",
                &format!("while [ ! -e /tmp/stop-{name} ]; do sleep 0.1; done"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        eprintln!("$ {cmd:?} &");
        cmd.spawn().expect("ctr run")
    }

    /// Waits until `name`'s task runs; its `ip addr` of eth0.
    fn up(&self, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // ctr starts the task once CNI ADD has returned (before, an exec would see
            // the interface half made).
            let tasks = run(self.ctr().args(["task", "ls"]));
            let running = text(&tasks.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name) && l.contains("RUNNING"));
            if running {
                return self.exec_ok(name, "ip addr show dev eth0");
            }
            assert!(
                Instant::now() < deadline,
                "container {name} did not come up: {}",
                std::fs::read_to_string(self.w.dir.join(format!("ctr-{name}.log")))
                    .unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn exec(&self, name: &str, cmd: &str) -> Output {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!("e{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        run(self
            .ctr()
            .args(["task", "exec", "--exec-id", &id, name, "/bin/sh", "-c", cmd]))
    }

    fn exec_ok(&self, name: &str, cmd: &str) -> String {
        let out = self.exec(name, cmd);
        assert!(
            out.status.success(),
            "in {name}: {cmd} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Lets `name` exit on its own and waits for `ctr run --rm` to finish (DEL sent).
    fn stop(&self, name: &str, mut child: Child) {
        let mut f = std::fs::File::create(self.w.dir.join(format!("rootfs/tmp/stop-{name}")))
            .expect("stop file");
        let _ = f.write_all(b"");
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ctr run {name} did not end after its container exited");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn set_conflist(&self, conf: &Value) {
        for f in std::fs::read_dir(self.w.dir.join("net.d"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_file(f.path());
        }
        self.w.write_conflist("10-ipvlan.conflist", conf);
    }
}

impl Drop for Containerd<'_> {
    /// Kills and removes whatever containers a failure left (their shims would outlive
    /// containerd).
    fn drop(&mut self) {
        let ids = run(self.ctr().args(["container", "ls", "-q"]));
        for id in text(&ids.stdout).split_whitespace() {
            let _ = run(self.ctr().args(["task", "kill", "-s", "SIGKILL", id]));
            let _ = run(self.ctr().args(["task", "rm", "-f", id]));
            let _ = run(self.ctr().args(["container", "rm", id]));
        }
    }
}

/// containerd 1.6 with `ctr run --cni`: it reads the first conflist of /etc/cni/net.d
/// (a scratch directory here). Two containers per network, traffic in both families from
/// the first packet, containers exiting on their own (`ctr run --rm` sends DEL),
/// private and l3, a bad master.
#[test]
fn containerd() {
    require(&[
        (CONTAINERD, "containerd"),
        (CTR, "containerd"),
        ("/usr/sbin/runc", "runc"),
    ]);
    let started = Instant::now();
    let mut w = World::new("ct");
    let w_dir = w.dir.clone();
    let c = Containerd::start(&mut w);
    let w = c.w;

    c.set_conflist(&w.conflist("cnet0", "1.0.0", 0, 10));
    let k0 = c.spawn("k0");
    let k1 = c.spawn("k1");
    let (ip_k0, ip_k1) = (c.up("k0"), c.up("k1"));
    eprintln!("== two containers up after {:?}", started.elapsed());
    let mac = w.master_mac("eth0");
    assert_in(&ip_k0, &mac, "k0 carries the master's MAC");
    assert_in(&ip_k1, &mac, "k1 carries the master's MAC");
    assert!(
        !ip_k0.contains("tentative") && !ip_k1.contains("tentative"),
        "{ip_k0}{ip_k1}"
    );
    let (k0v4, k0v6) = (addr_of(&ip_k0, false), addr_of(&ip_k0, true));
    let (k1v4, k1v6) = (addr_of(&ip_k1, false), addr_of(&ip_k1, true));
    c.exec_ok("k0", &at_once(&[&k1v4, &k1v6, "10.89.1.1", "fd00:89:1::1"]));
    for cmd in [ping1(&k0v4), ping1(&k0v6)] {
        c.exec_ok("k1", &cmd);
    }
    for a in [&k0v4, &k0v6, &k1v4, &k1v6] {
        assert!(w.router_ping(a), "router -> {a}");
    }
    eprintln!("== pings checked after {:?}", started.elapsed());
    c.stop("k0", k0);
    c.stop("k1", k1);
    w.assert_clean();
    eprintln!("== exit and removal checked after {:?}", started.elapsed());

    // private: two containers on eth1 do not reach each other, both reach the router.
    c.set_conflist(&w.conflist("cpriv", "0.4.0", 1, 10));
    let (b0, b1) = (c.spawn("b0"), c.spawn("b1"));
    c.up("b0");
    let ip_b1 = addr_of(&c.up("b1"), false);
    assert!(
        !c.exec("b0", &ping1(&ip_b1)).status.success(),
        "private: b0 reached b1"
    );
    c.exec_ok("b0", &ping1("10.89.2.1"));
    assert!(w.router_ping(&ip_b1), "private: router -> b1");
    c.stop("b0", b0);
    c.stop("b1", b1);
    // l3 on eth2, routed by HOST.
    c.set_conflist(&w.conflist("cl3", "1.0.0", 2, 10));
    let (l0, l1) = (c.spawn("l0"), c.spawn("l1"));
    c.up("l0");
    let ip_l1 = addr_of(&c.up("l1"), false);
    c.exec_ok("l0", &ping1(&ip_l1));
    c.exec_ok("l0", &ping1("10.89.13.1"));
    assert!(w.router_ping(&ip_l1), "l3: router -> l1");
    c.stop("l0", l0);
    c.stop("l1", l1);
    w.assert_clean();
    eprintln!("== private and l3 checked after {:?}", started.elapsed());

    // A bad configuration: ctr reports the plugin's error, nothing is left.
    let mut bad = w.conflist("cbad", "1.0.0", 0, 10);
    bad["plugins"][0]["master"] = json!("eth9");
    c.set_conflist(&bad);
    let out = run(c
        .ctr()
        .args(["run", "--rm", "--cni", "--rootfs"])
        .arg(w_dir.join("rootfs"))
        .args(["bad0", "/bin/sh", "-c", "true"]));
    assert!(!out.status.success(), "a container started on master eth9");
    assert_in(
        &text(&out.stderr),
        "master interface \"eth9\" not found",
        "ctr's error",
    );
    let _ = run(c.ctr().args(["container", "rm", "bad0"]));
    w.assert_clean();
    eprintln!("== containerd test done in {:?}", started.elapsed());
}
