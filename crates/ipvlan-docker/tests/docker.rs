//! The plugin as Docker uses it: Debian's dockerd (docker.io) started inside a scratch
//! network namespace (iptables, bridge and forwarding off; scratch data, exec and
//! config roots; `/run/docker` and `/etc/docker` bind-mounted from the scratch directory
//! in a mount namespace of its own, so the plugin socket it discovers and the files it
//! writes stay there), an image imported from busybox-static, this test's own ipvlan-rs
//! daemon and plugin on private sockets.
//!
//! ```text
//!   containers  (eth0 in each: a slave, moved there by Docker)
//!   HOST (dockerd, plugin): eth0, eth1, eth2 (masters) <-- veth --> ROUTER: eth0, eth1, eth2
//!     eth0: l2 bridge, IPv4 + IPv6     eth1: l2 private     eth2: l3, routed by HOST
//! ```
//!
//! Root only (it panics otherwise), and it fails with a message when dockerd or a static
//! busybox is missing (`sudo ./x deps` installs them). Nothing touches the machine's own
//! interfaces.

#![forbid(unsafe_code)]

#[path = "../../ipvlan-cni/tests/support/ipvlan_binary.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_ipvlan-docker");
const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";
const TIMEOUT: Duration = Duration::from_secs(60);
const IMAGE: &str = "ipvlan-rs-busybox";

fn require_root_and_docker() {
    if !nix::unistd::geteuid().is_root() {
        panic!("root integration test: run as root (CI does); e.g. `sudo ./x test`");
    }
    for (path, pkg) in [(DOCKERD, "docker.io"), (DOCKER, "docker.io")] {
        if !Path::new(path).is_file() {
            panic!(
                "{path} is missing: install {pkg} (`sudo ./x deps`); the Docker test cannot run without it"
            );
        }
    }
    if !std::fs::read(BUSYBOX).is_ok_and(|elf| is_static_elf64(&elf)) {
        panic!("{BUSYBOX} is missing or not static: install busybox-static (`sudo ./x deps`)");
    }
}

/// A 64-bit little-endian ELF without a program interpreter (`PT_INTERP`): it runs in
/// an image with no C library.
fn is_static_elf64(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().expect("8 bytes"))).ok())
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        elf.get(at..at + 4).is_some_and(|t| t != 3u32.to_le_bytes())
    })
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

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
        "$ {}\n  -> {:?}\n  out| {}\n  err| {}",
        shown.trim_matches('"'),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .replace('\n', "\n  out| "),
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .replace('\n', "\n  err| ")
    );
    out
}

fn sh(cmd: &str) -> Output {
    run(Command::new("sh").arg("-c").arg(cmd))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "command failed ({:?}): {cmd}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    text(&out)
}

// ---------------------------------------------------------------------------------------
// The world: namespaces, the ipvlan daemon, the plugin, dockerd
// ---------------------------------------------------------------------------------------

struct World {
    host: String,
    router: String,
    dir: PathBuf,
    ipvlan: PathBuf,
    daemon: Option<Child>,
    plugin: Option<Child>,
    dockerd: Option<Child>,
    /// Machine paths this test made (mount points, containerd's), removed at the end.
    made_paths: Vec<PathBuf>,
}

impl World {
    fn new() -> World {
        require_root_and_docker();
        let ipvlan = support::ipvlan_binary(PLUGIN);
        let prefix = format!("dk{:05}", std::process::id() % 100_000);
        let dir = PathBuf::from(format!("/tmp/ipvlan-rs-test-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "run-docker/plugins",
            "etc-docker",
            "data",
            "exec",
            "cli",
            "rootfs/bin",
            "rootfs/tmp",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("scratch directory");
        }
        let mut w = World {
            host: format!("{prefix}-host"),
            router: format!("{prefix}-router"),
            dir,
            ipvlan,
            daemon: None,
            plugin: None,
            dockerd: None,
            made_paths: vec![],
        };
        let (h, r) = (w.host.clone(), w.router.clone());
        ok(&format!("ip netns add {h} && ip netns add {r}"));
        ok(&format!(
            "ip -n {h} link set lo up && ip -n {r} link set lo up"
        ));
        for (i, net) in [(0, 1), (1, 2), (2, 13)] {
            ok(&format!(
                "ip -n {h} link add eth{i} type veth peer name eth{i} netns {r} && \
                 ip -n {h} link set eth{i} up && ip -n {r} link set eth{i} up && \
                 ip -n {r} addr add 10.88.{net}.1/24 dev eth{i} && \
                 ip -n {r} addr add fd00:88:{net}::1/64 dev eth{i} nodad"
            ));
        }
        // eth2's network (l3) is routed by HOST: the router reaches it through HOST.
        ok(&format!(
            "ip -n {h} addr add 10.88.13.2/24 dev eth2 && ip -n {h} addr add fd00:88:13::2/64 dev eth2 nodad && \
             ip -n {r} route add 10.88.3.0/24 via 10.88.13.2 && ip -n {r} route add fd00:88:3::/64 via fd00:88:13::2"
        ));
        w.start_daemon();
        w.start_plugin();
        w.start_dockerd();
        w.import_image();
        w
    }

    fn in_host(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host))
            .arg(program);
        cmd
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .expect("log file")
    }

    fn start_daemon(&mut self) {
        let mut cmd = self.in_host(&self.ipvlan.clone());
        cmd.arg("daemon")
            .arg("--socket")
            .arg(self.dir.join("ipvlan.sock"))
            .stdout(Stdio::null())
            .stderr(self.log("daemon.log"));
        self.daemon = Some(cmd.spawn().expect("starting the ipvlan daemon"));
        self.wait_for(&self.dir.join("ipvlan.sock"));
    }

    fn start_plugin(&mut self) {
        let socket = self.dir.join("run-docker/plugins/ipvlan-rs.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = self.in_host(Path::new(PLUGIN));
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .env("IPVLAN_SOCKET", self.dir.join("ipvlan.sock"))
            .env("IPVLAN_NO_AUTOSTART", "1")
            .stdout(Stdio::null())
            .stderr(self.log("plugin.log"));
        self.plugin = Some(cmd.spawn().expect("starting the plugin"));
        self.wait_for(&socket);
    }

    fn stop(child: &mut Option<Child>) {
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_for(&self, socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "nothing answers on {} (logs in {})",
                socket.display(),
                self.dir.display()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// dockerd in HOST's network namespace and a mount namespace of its own where
    /// `/run/docker` (plugin discovery) and `/etc/docker` are the scratch directory's.
    fn start_dockerd(&mut self) {
        for p in ["/run/docker", "/etc/docker", "/opt/containerd"] {
            if !Path::new(p).exists() {
                self.made_paths.push(PathBuf::from(p));
            }
        }
        std::fs::create_dir_all("/run/docker").expect("/run/docker mount point");
        std::fs::create_dir_all("/etc/docker").expect("/etc/docker mount point");
        let d = self.dir.display().to_string();
        std::fs::write(self.dir.join("daemon.json"), "{}").expect("dockerd config");
        let script = format!(
            "mount --bind {d}/run-docker /run/docker && mount --bind {d}/etc-docker /etc/docker && \
             exec nsenter --net=/run/netns/{host} {DOCKERD} --config-file {d}/daemon.json \
             --data-root {d}/data --exec-root {d}/exec --pidfile {d}/docker.pid -H unix://{d}/docker.sock \
             --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
             --storage-driver vfs",
            host = self.host
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(self.log("dockerd.log"))
            .stderr(self.log("dockerd.log"))
            .spawn()
            .expect("starting dockerd");
        self.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker(&["info"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: see {}/dockerd.log",
                self.dir.display()
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    fn stop_dockerd(&mut self) {
        if let Some(mut c) = self.dockerd.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("a pid is a pid_t")),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn import_image(&self) {
        let rootfs = self.dir.join("rootfs");
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copying busybox");
        for applet in [
            "sh", "ping", "ping6", "ip", "sleep", "cat", "nc", "true", "dd", "wc", "rm",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("applet link");
        }
        ok(&format!(
            "tar -C {} -c . | {} import - {IMAGE}",
            rootfs.display(),
            self.docker_cmd()
        ));
    }

    fn docker_cmd(&self) -> String {
        format!(
            "DOCKER_CONFIG={d}/cli {DOCKER} -H unix://{d}/docker.sock",
            d = self.dir.display()
        )
    }

    fn docker(&self, args: &[&str]) -> Output {
        run(Command::new(DOCKER)
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .arg("-H")
            .arg(format!("unix://{}/docker.sock", self.dir.display()))
            .args(args))
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        text(&out).trim().to_string()
    }

    /// `docker exec C sh -c CMD` succeeds.
    fn exec(&self, c: &str, cmd: &str) -> bool {
        self.docker(&["exec", c, "sh", "-c", cmd]).status.success()
    }

    /// Container `c`'s addresses on network `net`: (IPv4, IPv6).
    fn addrs(&self, c: &str, net: &str) -> (String, String) {
        let v: Value = serde_json::from_str(&self.docker_ok(&["inspect", c])).expect("JSON");
        let n = &v[0]["NetworkSettings"]["Networks"][net];
        (
            n["IPAddress"].as_str().unwrap_or_default().to_string(),
            n["GlobalIPv6Address"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    fn host_links(&self) -> Vec<String> {
        ok(&format!("ip -n {} -o link", self.host))
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    /// The slaves the daemon manages.
    fn slaves(&self) -> usize {
        let out = run(self
            .in_host(&self.ipvlan)
            .env("IPVLAN_SOCKET", self.dir.join("ipvlan.sock"))
            .args(["-j", "link", "show"]));
        assert!(out.status.success(), "ipvlan link show failed");
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .expect("ipvlan -j prints a JSON list")
            .len()
    }

    fn mac(&self, dev: &str) -> String {
        let v: Value =
            serde_json::from_str(&ok(&format!("ip -j -n {} link show dev {dev}", self.host)))
                .expect("ip -j prints JSON");
        v[0]["address"].as_str().expect("a MAC").to_string()
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("state/state.json")).expect("state"))
            .expect("state JSON")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if self.dockerd.is_some() {
            let ids = text(&self.docker(&["ps", "-aq"]));
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop_dockerd();
        Self::stop(&mut self.plugin);
        Self::stop(&mut self.daemon);
        let _ = sh(&format!(
            "ip netns del {}; ip netns del {}",
            self.host, self.router
        ));
        for p in self.made_paths.iter().rev() {
            let _ = std::fs::remove_dir_all(p);
        }
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

fn ping(addr: &str) -> String {
    format!("ping -c 1 -W 2 {addr}")
}

#[test]
fn docker_networks_of_ipvlan_rs() {
    let started = Instant::now();
    let mut w = World::new();
    eprintln!("== dockerd up after {:?}", started.elapsed());
    let mac0 = w.mac("eth0");

    // --- l2 bridge, IPv4 and IPv6 from Docker's IPAM --------------------------------
    w.docker_ok(&[
        "network",
        "create",
        "-d",
        "ipvlan-rs",
        "--subnet",
        "10.88.1.0/24",
        "--gateway",
        "10.88.1.1",
        "--ipv6",
        "--subnet",
        "fd00:88:1::/64",
        "--gateway",
        "fd00:88:1::1",
        "-o",
        "parent=eth0",
        "-o",
        "ipvlan_mode=l2",
        "n2",
    ]);
    for c in ["c0", "c1"] {
        w.docker_ok(&[
            "run",
            "-d",
            "--name",
            c,
            "--network",
            "n2",
            IMAGE,
            "sleep",
            "600",
        ]);
    }
    let (c0, c0v6) = w.addrs("c0", "n2");
    let (c1, c1v6) = w.addrs("c1", "n2");
    assert!(
        c0.starts_with("10.88.1.") && c1.starts_with("10.88.1."),
        "{c0} {c1}"
    );
    assert!(c0v6.starts_with("fd00:88:1::") && c1v6.starts_with("fd00:88:1::"));
    for (c, a4, a6) in [("c0", &c0, &c0v6), ("c1", &c1, &c1v6)] {
        let shown = w.docker_ok(&["exec", c, "ip", "addr", "show", "eth0"]);
        assert!(shown.contains(&format!("inet {a4}/24")), "{shown}");
        assert!(shown.contains(&format!("inet6 {a6}/64")), "{shown}");
        assert!(
            shown.contains(&mac0),
            "{c} must carry the master's MAC {mac0}: {shown}"
        );
        let routes = w.docker_ok(&["exec", c, "ip", "route"]);
        assert!(
            routes.contains("default via 10.88.1.1 dev eth0"),
            "{routes}"
        );
    }
    assert_eq!(w.slaves(), 2);
    // Each other and the router, both families, one packet each.
    assert!(w.exec("c0", &ping(&c1)), "c0 -> c1");
    assert!(w.exec("c0", &ping(&c1v6)), "c0 -> c1 (IPv6)");
    assert!(w.exec("c1", &ping("10.88.1.1")), "c1 -> router");
    assert!(w.exec("c1", &ping("fd00:88:1::1")), "c1 -> router (IPv6)");
    // A container whose very first command uses the network: its first packets.
    let first = format!(
        "{} && {} && {} && {}",
        ping(&c0),
        ping("10.88.1.1"),
        ping(&c0v6),
        ping("fd00:88:1::1")
    );
    w.docker_ok(&["run", "--rm", "--network", "n2", IMAGE, "sh", "-c", &first]);
    // TCP both ways through the port: 1 MiB from c1 to c0 over each family.
    for (dst, family) in [(&c0, "ipv4"), (&c0v6, "ipv6")] {
        w.docker_ok(&[
            "exec",
            "-d",
            "c0",
            "sh",
            "-c",
            "sleep 20 | nc -l -p 5000 | wc -c > /tmp/got",
        ]);
        // Until the listener is up: a refused connection sends nothing.
        let sent = (0..20).any(|_| {
            thread::sleep(Duration::from_millis(100));
            w.exec(
                "c1",
                &format!("dd if=/dev/zero bs=1024 count=1024 2>/dev/null | nc -w 2 {dst} 5000"),
            )
        });
        assert!(sent, "TCP c1 -> c0 over {family}");
        let got = (0..50)
            .map(|_| {
                thread::sleep(Duration::from_millis(100));
                w.docker(&["exec", "c0", "cat", "/tmp/got"])
            })
            .find(|o| text(o).trim() == "1048576");
        assert!(got.is_some(), "c0 did not receive 1 MiB over {family}");
        w.docker_ok(&["exec", "c0", "rm", "/tmp/got"]);
    }
    eprintln!("== l2 checked after {:?}", started.elapsed());

    // --- a container that exits on its own leaves nothing --------------------------
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "brief",
        "--network",
        "n2",
        IMAGE,
        "true",
    ]);
    w.docker_ok(&["wait", "brief"]);
    // Docker releases the network of an exited container right after `wait` returns.
    let released = (0..50).any(|_| {
        thread::sleep(Duration::from_millis(100));
        w.slaves() == 2
    });
    assert!(released, "the exited container's slave is gone");
    w.docker_ok(&["rm", "brief"]);

    // --- the plugin restarts: networks and endpoints are still known ---------------
    World::stop(&mut w.plugin);
    w.start_plugin();
    assert_eq!(w.state()["networks"].as_object().map(|m| m.len()), Some(1));
    w.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "n2",
        IMAGE,
        "sh",
        "-c",
        &ping(&c1),
    ]);
    assert!(w.exec("c0", &ping(&c1)), "c0 -> c1 after a plugin restart");

    // --- the ipvlan daemon restarts: the slaves stay and keep switching -----------
    World::stop(&mut w.daemon);
    w.start_daemon();
    assert!(
        w.exec("c1", &ping(&c0v6)),
        "c1 -> c0 after a daemon restart"
    );
    assert_eq!(w.slaves(), 2);
    eprintln!("== restarts checked after {:?}", started.elapsed());

    // --- private: no slave to slave, the wire still -------------------------------
    w.docker_ok(&[
        "network",
        "create",
        "-d",
        "ipvlan-rs",
        "--subnet",
        "10.88.2.0/24",
        "-o",
        "parent=eth1",
        "-o",
        "ipvlan_flag=private",
        "np",
    ]);
    for c in ["p0", "p1"] {
        w.docker_ok(&[
            "run",
            "-d",
            "--name",
            c,
            "--network",
            "np",
            IMAGE,
            "sleep",
            "600",
        ]);
    }
    let (p1, _) = w.addrs("p1", "np");
    assert!(!w.exec("p0", &ping(&p1)), "private: p0 must not reach p1");
    assert!(w.exec("p0", &ping("10.88.2.1")), "private: p0 -> router");

    // --- l3: a connected default route, routed through HOST -----------------------
    w.docker_ok(&[
        "network",
        "create",
        "-d",
        "ipvlan-rs",
        "--subnet",
        "10.88.3.0/24",
        "--ipv6",
        "--subnet",
        "fd00:88:3::/64",
        "-o",
        "parent=eth2",
        "-o",
        "ipvlan_mode=l3",
        "n3",
    ]);
    for c in ["r0", "r1"] {
        w.docker_ok(&[
            "run",
            "-d",
            "--name",
            c,
            "--network",
            "n3",
            IMAGE,
            "sleep",
            "600",
        ]);
    }
    let (r1, r1v6) = w.addrs("r1", "n3");
    let routes = w.docker_ok(&["exec", "r0", "ip", "route"]);
    assert!(routes.contains("default dev eth0"), "l3: {routes}");
    let routes6 = w.docker_ok(&["exec", "r0", "ip", "-6", "route"]);
    assert!(routes6.contains("default dev eth0"), "l3: {routes6}");
    assert!(w.exec("r0", &ping(&r1)), "l3: r0 -> r1");
    assert!(w.exec("r0", &ping(&r1v6)), "l3: r0 -> r1 (IPv6)");
    assert!(
        w.exec("r0", &ping("10.88.13.1")),
        "l3: r0 -> router, routed by HOST"
    );
    assert!(
        w.exec("r0", &ping("fd00:88:13::1")),
        "l3: r0 -> router (IPv6)"
    );
    eprintln!("== private and l3 checked after {:?}", started.elapsed());

    // --- bad options: Docker's errors, nothing made --------------------------------
    let before = w.host_links();
    let nets_before = w.state()["networks"].as_object().map(|m| m.len());
    for (opts, want) in [
        (
            vec!["-o", "parent=eth0", "-o", "ipvlan_mode=l4"],
            "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default",
        ),
        (
            vec!["-o", "parent=eth0", "-o", "ipvlan_flag=open"],
            "requested ipvlan flag 'open' is not valid, 'bridge' is the ipvlan driver default",
        ),
        (
            vec!["-o", "parent=eth9"],
            "-o parent interface was not found on the host: eth9",
        ),
        (
            vec!["-o", "parent=lo"],
            "loopback interface is not a valid ipvlan parent link",
        ),
        (
            vec!["-o", "parent=eth0"],
            "is already using parent interface eth0",
        ),
    ] {
        let mut args = vec![
            "network",
            "create",
            "-d",
            "ipvlan-rs",
            "--subnet",
            "10.88.9.0/24",
        ];
        args.extend(opts);
        args.push("bad");
        let out = w.docker(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!w.docker(&["network", "inspect", "bad"]).status.success());
    }
    assert_eq!(w.host_links(), before, "a refused network leaves no link");
    assert_eq!(
        w.state()["networks"].as_object().map(|m| m.len()),
        nets_before
    );

    // --- no parent: an internal network on a dummy link of its own ---------------
    let id = w.docker_ok(&[
        "network",
        "create",
        "-d",
        "ipvlan-rs",
        "--subnet",
        "10.88.4.0/24",
        "ni",
    ]);
    let dummy = format!("di-{}", &id[..12]);
    assert!(w.host_links().contains(&dummy), "{dummy} made");
    w.docker_ok(&["network", "rm", "ni"]);
    let dummy_peer = format!("dp-{}", &id[..12]);
    assert!(
        !w.host_links()
            .iter()
            .any(|l| *l == dummy || *l == dummy_peer),
        "{dummy} removed"
    );

    // --- dockerd restarts: the plugin still knows the networks ----------------------
    w.stop_dockerd();
    w.start_dockerd();
    w.docker_ok(&["start", "c0", "c1"]);
    let (c0, _) = w.addrs("c0", "n2");
    let (_, c1v6) = w.addrs("c1", "n2");
    assert!(w.exec("c1", &ping(&c0)), "c1 -> c0 after a dockerd restart");
    assert!(
        w.exec("c0", &ping(&c1v6)),
        "c0 -> c1 (IPv6) after a dockerd restart"
    );
    w.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "n3",
        IMAGE,
        "sh",
        "-c",
        &ping("10.88.13.1"),
    ]);
    eprintln!("== dockerd restart checked after {:?}", started.elapsed());

    // --- teardown: nothing left ---------------------------------------------------
    for c in ["c0", "c1", "p0", "p1", "r0", "r1"] {
        w.docker_ok(&["rm", "-f", c]);
    }
    assert_eq!(w.slaves(), 0, "every slave removed");
    let left: Vec<String> = w
        .host_links()
        .into_iter()
        .filter(|l| !["lo", "eth0", "eth1", "eth2"].contains(&l.as_str()))
        .collect();
    assert!(left.is_empty(), "links left in HOST: {left:?}");
    for n in ["n2", "np", "n3"] {
        w.docker_ok(&["network", "rm", n]);
    }
    assert_eq!(w.state()["networks"].as_object().map(|m| m.len()), Some(0));
    drop(w);
    eprintln!("== Docker test done in {:?}", started.elapsed());
}
