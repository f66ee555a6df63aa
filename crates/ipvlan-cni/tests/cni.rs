//! The plugin as a container runtime calls it: `CNI_*` environment, the configuration on
//! stdin, real namespaces as `CNI_NETNS`, Debian's `host-local` as IPAM, and this test's
//! own ipvlan-rs daemon on a private socket (`IPVLAN_SOCKET`; `IPVLAN_NO_AUTOSTART` so a
//! dead daemon fails the test instead of starting a stray one).
//!
//! ```text
//!   C0, C1 (containers)     slaves moved here by the plugin
//!   HOST:   eth0 (master)  <-- veth -->  ROUTER: eth0 10.X.0.1/24
//! ```
//!
//! Root only (the tests panic otherwise); nothing touches the machine's own interfaces.

#![forbid(unsafe_code)]

#[path = "support/ipvlan_binary.rs"]
mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_ipvlan-cni");
const CNI_PATH: &str = "/usr/lib/cni";
const TIMEOUT: Duration = Duration::from_secs(30);

fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("root integration test: run as root (CI does); e.g. `sudo ./x test`");
    }
    if !Path::new(CNI_PATH).join("host-local").is_file() {
        panic!(
            "{CNI_PATH}/host-local is missing: install containernetworking-plugins (`sudo ./x deps`)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// Runs `cmd` with `stdin`, killing it after [`TIMEOUT`]; logs it (shown for failures).
fn run_with(cmd: &mut Command, stdin: &[u8]) -> Output {
    run_with_timeout(cmd, stdin, TIMEOUT)
}

fn run_with_timeout(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid is a pid_t"));
    let mut input = child.stdin.take().expect("stdin piped");
    let data = stdin.to_vec();
    thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(r) => r.unwrap_or_else(|e| panic!("waiting for {shown}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("timed out after {timeout:?}: {shown}");
        }
    };
    eprintln!(
        "$ {shown}\n  -> {:?}\n  out| {}\n  err| {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    out
}

fn sh(cmd: &str) -> Output {
    run_with(Command::new("sh").arg("-c").arg(cmd), b"")
}

fn ok(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "command failed ({:?}): {cmd}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_names(ns: &str) -> BTreeSet<String> {
    ok(&format!("ip -n {ns} -o link"))
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

fn mac(ns: &str, dev: &str) -> String {
    let v: Value = serde_json::from_str(&ok(&format!("ip -j -n {ns} link show dev {dev}")))
        .expect("ip -j prints JSON");
    v[0]["address"]
        .as_str()
        .expect("a MAC")
        .to_ascii_lowercase()
}

fn ping(ns: &str, addr: &str) -> bool {
    (0..3).any(|_| {
        sh(&format!("ip netns exec {ns} ping -c 2 -W 2 -i 0.2 {addr}"))
            .status
            .success()
    })
}

// ---------------------------------------------------------------------------------------
// The world: namespaces and a daemon
// ---------------------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct World {
    x: u32,
    host: String,
    router: String,
    containers: Vec<String>,
    made: Vec<String>,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
}

impl World {
    fn new(n: usize) -> World {
        require_root();
        let bin = support::ipvlan_binary(PLUGIN);
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("cni{:04}{k}", pid % 10000);
        let x = (pid.wrapping_mul(13).wrapping_add(k * 17)) % 250 + 1;
        let dir = PathBuf::from(format!("/tmp/ipvlan-rs-test-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let mut w = World {
            x,
            host: format!("{prefix}-host"),
            router: format!("{prefix}-router"),
            containers: (0..n).map(|i| format!("{prefix}-c{i}")).collect(),
            made: vec![],
            socket: dir.join("ipvlan.sock"),
            log: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-daemon.log")),
            dir,
            daemon: None,
        };
        let all: Vec<String> = [w.host.clone(), w.router.clone()]
            .into_iter()
            .chain(w.containers.iter().cloned())
            .collect();
        for ns in all {
            if !sh(&format!("ip netns add {ns}")).status.success() {
                let _ = sh(&format!("ip netns del {ns}"));
                ok(&format!("ip netns add {ns}"));
            }
            w.made.push(ns.clone());
            ok(&format!("ip -n {ns} link set dev lo up"));
        }
        let (h, r) = (&w.host, &w.router);
        ok(&format!(
            "ip -n {h} link add eth0 type veth peer name eth0 netns {r}"
        ));
        ok(&format!("ip -n {h} link set dev eth0 up"));
        ok(&format!("ip -n {r} addr add 10.{x}.0.1/24 dev eth0"));
        ok(&format!("ip -n {r} link set dev eth0 up"));

        let log = File::create(&w.log).expect("daemon log");
        // The world's Drop stops the daemon.
        let child = Command::new(&bin)
            .args(["daemon", "--socket"])
            .arg(&w.socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} daemon: {e}", bin.display()));
        w.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !w.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the daemon made no socket in 5 s; log:\n{}",
                std::fs::read_to_string(&w.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        w
    }

    fn c(&self, i: usize) -> &str {
        &self.containers[i]
    }

    fn netns_path(&self, ns: &str) -> String {
        format!("/run/netns/{ns}")
    }

    fn v4(&self, host: u32) -> String {
        format!("10.{}.0.{host}", self.x)
    }

    /// A network configuration of the reference ipvlan plugin's shape, host-local IPAM.
    fn conf(&self, version: &str, master: Option<&str>) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "ipvlan-rs-test",
            "type": "ipvlan",
            "mode": "l2",
            "ipam": {
                "type": "host-local",
                "subnet": format!("10.{}.0.0/24", self.x),
                "rangeStart": format!("10.{}.0.10", self.x),
                "gateway": format!("10.{}.0.1", self.x),
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.dir.join("ipam").to_string_lossy(),
            }
        });
        if let Some(m) = master {
            c["master"] = json!(m);
        }
        c
    }

    /// Runs the plugin inside HOST, as a runtime would.
    fn plugin(&self, command: &str, container: &str, netns: &str, conf: &Value) -> Output {
        self.plugin_raw(
            command,
            container,
            netns,
            "eth0",
            conf.to_string().as_bytes(),
        )
    }

    fn plugin_raw(
        &self,
        command: &str,
        container: &str,
        netns: &str,
        ifname: &str,
        stdin: &[u8],
    ) -> Output {
        run_with(
            Command::new("ip")
                .args(["netns", "exec", &self.host, PLUGIN])
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", container)
                .env("CNI_NETNS", netns)
                .env("CNI_IFNAME", ifname)
                .env("CNI_ARGS", "IgnoreUnknown=1")
                .env("CNI_PATH", CNI_PATH)
                .env("IPVLAN_SOCKET", &self.socket)
                .env("IPVLAN_NO_AUTOSTART", "1"),
            stdin,
        )
    }

    fn plugin_ok(&self, command: &str, container: &str, netns: &str, conf: &Value) -> String {
        self.plugin_raw_ok(command, container, netns, "eth0", conf)
    }

    fn plugin_raw_ok(
        &self,
        command: &str,
        container: &str,
        netns: &str,
        ifname: &str,
        conf: &Value,
    ) -> String {
        let out = self.plugin_raw(
            command,
            container,
            netns,
            ifname,
            conf.to_string().as_bytes(),
        );
        if !out.status.success() {
            panic!(
                "plugin {command} for {container} failed ({:?}): {}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                self.diag()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Links, addresses and routes of every namespace, and the daemon's view.
    fn diag(&self) -> String {
        let mut s = String::new();
        for ns in &self.made {
            for c in ["-d link", "addr", "route"] {
                let o = sh(&format!("ip -n {ns} {c}"));
                s.push_str(&format!(
                    "== {ns}: ip {c}\n{}",
                    String::from_utf8_lossy(&o.stdout)
                ));
            }
        }
        s.push_str(&format!(
            "== daemon log\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        ));
        s
    }

    fn assert_ping(&self, ns: &str, addr: &str) {
        if !ping(ns, addr) {
            panic!("no ping reply: {ns} -> {addr}\n{}", self.diag());
        }
    }

    /// Host ends the daemon keeps beside the master, and any temporary slave left over.
    fn host_leftovers(&self) -> BTreeSet<String> {
        link_names(&self.host)
            .into_iter()
            .filter(|n| n != "lo" && n != "eth0")
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.diag());
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
        for ns in self.made.iter().rev() {
            let _ = sh(&format!("ip netns del {ns} 2>/dev/null"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn error_json(out: &Output) -> Value {
    assert!(
        !out.status.success(),
        "expected a failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no error JSON on stdout ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(v["code"].is_u64(), "error without a code: {v}");
    assert!(v["msg"].is_string(), "error without msg: {v}");
    assert!(v["cniVersion"].is_string(), "error without cniVersion: {v}");
    v
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// ADD two containers (1.1.0 with `master`, 0.3.1 taking the master from the default
/// route), traffic between them and to the router, CHECK, DEL twice, DEL after the
/// namespace is gone; host-local's allocations are released.
#[test]
fn add_check_del_with_host_local() {
    let w = World::new(2);
    let (c0, c1) = (w.c(0).to_string(), w.c(1).to_string());
    let (p0, p1) = (w.netns_path(&c0), w.netns_path(&c1));
    // For the configuration without `master`: the reference plugin takes the
    // interface of the default route.
    ok(&format!("ip -n {} route add default dev eth0", w.host));
    let master_mac = mac(&w.host, "eth0");

    // ---- ADD, version 1.1.0 (host-local speaks 1.0.0: the plugin negotiates)
    let conf0 = w.conf("1.1.0", Some("eth0"));
    let r0: Value =
        serde_json::from_str(&w.plugin_ok("ADD", "ctr-0", &p0, &conf0)).expect("result JSON");
    eprintln!("ADD result (1.1.0): {r0}");
    assert_eq!(r0["cniVersion"], "1.1.0");
    assert_eq!(r0["interfaces"][0]["name"], "eth0");
    assert_eq!(r0["interfaces"][0]["sandbox"], p0.as_str());
    assert_eq!(r0["interfaces"][0]["mac"], master_mac.as_str());
    let ip0 = r0["ips"][0]["address"].as_str().expect("an address");
    assert_eq!(ip0, format!("{}/24", w.v4(10)));
    assert_eq!(r0["ips"][0]["interface"], 0);
    assert_eq!(r0["ips"][0]["gateway"], w.v4(1).as_str());
    assert!(r0["ips"][0].get("version").is_none(), "{r0}");
    assert_eq!(r0["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(mac(&c0, "eth0"), master_mac);
    assert_eq!(
        link_names(&c0),
        BTreeSet::from(["lo".into(), "eth0".into()])
    );
    let notify = ok(&format!(
        "ip netns exec {c0} cat /proc/sys/net/ipv4/conf/eth0/arp_notify"
    ));
    assert_eq!(notify.trim(), "1");
    let route = ok(&format!("ip -n {c0} route show default"));
    assert!(route.contains(&format!("via {}", w.v4(1))), "{route}");

    // ---- ADD, version 0.3.1, no master
    let conf1 = w.conf("0.3.1", None);
    let r1: Value =
        serde_json::from_str(&w.plugin_ok("ADD", "ctr-1", &p1, &conf1)).expect("result JSON");
    eprintln!("ADD result (0.3.1): {r1}");
    assert_eq!(r1["cniVersion"], "0.3.1");
    assert_eq!(r1["ips"][0]["version"], "4");
    assert_eq!(r1["ips"][0]["address"], format!("{}/24", w.v4(11)).as_str());
    assert_eq!(mac(&c1, "eth0"), master_mac);

    // ---- traffic
    w.assert_ping(&c0, &w.v4(11));
    w.assert_ping(&c1, &w.v4(10));
    w.assert_ping(&c0, &w.v4(1));
    w.assert_ping(&c1, &w.v4(1));
    w.assert_ping(&w.router, &w.v4(10));

    // ---- CHECK with the ADD result, and with a result that does not match
    let mut check0 = conf0.clone();
    check0["prevResult"] = r0.clone();
    w.plugin_ok("CHECK", "ctr-0", &p0, &check0);
    let mut wrong = check0.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!(format!("{}/24", w.v4(99)));
    error_json(&w.plugin("CHECK", "ctr-0", &p0, &wrong));
    // CHECK does not exist before 0.4.0.
    let mut check1 = conf1.clone();
    check1["prevResult"] = r1.clone();
    let e = error_json(&w.plugin("CHECK", "ctr-1", &p1, &check1));
    assert_eq!(e["code"], 1, "{e}");

    // ---- STATUS and GC (1.1)
    w.plugin_ok("STATUS", "", "", &conf0);
    let mut gc = conf0.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-1", "ifname": "eth0"}]);
    w.plugin_ok("GC", "", "", &gc);
    // GC released nothing still valid: both containers keep their addresses.
    w.assert_ping(&c0, &w.v4(11));

    // ---- DEL, twice
    let ipam_dir = w.dir.join("ipam/ipvlan-rs-test");
    assert!(ipam_dir.join(w.v4(10)).exists(), "host-local holds .10");
    w.plugin_ok("DEL", "ctr-0", &p0, &conf0);
    assert_eq!(link_names(&c0), BTreeSet::from(["lo".into()]));
    assert!(!ipam_dir.join(w.v4(10)).exists(), "host-local released .10");
    w.plugin_ok("DEL", "ctr-0", &p0, &conf0);
    // The other container is untouched.
    w.assert_ping(&c1, &w.v4(1));

    // ---- DEL after the namespace is gone (and again)
    ok(&format!("ip netns del {c1}"));
    w.plugin_ok("DEL", "ctr-1", &p1, &conf1);
    w.plugin_ok("DEL", "ctr-1", &p1, &conf1);
    w.plugin_ok("DEL", "ctr-1", "", &conf1);
    assert!(!ipam_dir.join(w.v4(11)).exists(), "host-local released .11");

    // Nothing of the slaves is left beside the master.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !w.host_leftovers().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.host_leftovers(), BTreeSet::new(), "{}", w.diag());
}

/// Bad configurations and environments: error JSON with the spec's codes, a non-zero
/// exit, and nothing left behind — also when IPAM fails after the slave was made.
#[test]
fn errors_and_cleanup() {
    let w = World::new(2);
    let c0 = w.c(0).to_string();
    let p0 = w.netns_path(&c0);
    let only_lo = BTreeSet::from(["lo".to_string()]);

    let code = |out: &Output| error_json(out)["code"].as_u64().expect("code");

    // A master that does not exist.
    let out = w.plugin("ADD", "ctr-e", &p0, &w.conf("1.0.0", Some("eth9")));
    assert_eq!(code(&out), 7);
    assert!(String::from_utf8_lossy(&out.stdout).contains("eth9"));
    // A bad mode, a bad flag.
    let mut c = w.conf("1.0.0", Some("eth0"));
    c["mode"] = json!("l4");
    assert_eq!(code(&w.plugin("ADD", "ctr-e", &p0, &c)), 7);
    let mut c = w.conf("1.0.0", Some("eth0"));
    c["flag"] = json!("vepa-ish");
    assert_eq!(code(&w.plugin("ADD", "ctr-e", &p0, &c)), 7);
    // An MTU above the master's.
    let mut c = w.conf("1.0.0", Some("eth0"));
    c["mtu"] = json!(9000);
    assert_eq!(code(&w.plugin("ADD", "ctr-e", &p0, &c)), 7);
    // Not JSON; an unsupported version.
    assert_eq!(
        code(&w.plugin_raw("ADD", "ctr-e", &p0, "eth0", b"{\"cniVersion\":")),
        6
    );
    assert_eq!(
        code(&w.plugin("ADD", "ctr-e", &p0, &w.conf("0.2.0", Some("eth0")))),
        1
    );
    // Environment: no CNI_NETNS, a namespace that does not exist, an unknown command.
    let out = w.plugin("ADD", "ctr-e", "", &w.conf("1.0.0", Some("eth0")));
    assert_eq!(code(&out), 4);
    assert!(String::from_utf8_lossy(&out.stdout).contains("CNI_NETNS"));
    assert_eq!(
        code(&w.plugin(
            "ADD",
            "ctr-e",
            "/run/netns/no-such-ns",
            &w.conf("1.0.0", Some("eth0"))
        )),
        4
    );
    assert_eq!(
        code(&w.plugin("FROB", "ctr-e", &p0, &w.conf("1.0.0", Some("eth0")))),
        4
    );
    // An IPAM plugin that is not installed.
    let mut c = w.conf("1.0.0", Some("eth0"));
    c["ipam"]["type"] = json!("no-such-ipam");
    assert_eq!(code(&w.plugin("ADD", "ctr-e", &p0, &c)), 102);
    assert_eq!(link_names(&c0), only_lo);
    assert_eq!(w.host_leftovers(), BTreeSet::new());

    // IPAM fails after the slave was made (a one-address range, already taken): the
    // slave is deleted again, in the container and beside the master.
    let mut one = w.conf("1.0.0", Some("eth0"));
    one["ipam"]["rangeStart"] = json!(w.v4(50));
    one["ipam"]["rangeEnd"] = json!(w.v4(50));
    let p1 = w.netns_path(w.c(1));
    w.plugin_ok("ADD", "ctr-a", &p1, &one);
    let ends_before = w.host_leftovers();
    assert_eq!(ends_before.len(), 1, "one host end: {ends_before:?}");
    let out = w.plugin("ADD", "ctr-b", &p0, &one);
    let e = error_json(&out);
    eprintln!("IPAM exhausted: {e}");
    assert_eq!(link_names(&c0), only_lo, "the failed ADD left a link");
    let deadline = Instant::now() + Duration::from_secs(3);
    while w.host_leftovers() != ends_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.host_leftovers(), ends_before, "{}", w.diag());
    // An interface name that is taken in the container.
    let out = w.plugin("ADD", "ctr-c", &p1, &w.conf("1.0.0", Some("eth0")));
    error_json(&out);
    w.plugin_ok("DEL", "ctr-a", &p1, &one);
    assert_eq!(link_names(w.c(1)), only_lo);
}

/// VERSION needs no root, no daemon and no namespace.
#[test]
fn version() {
    let out = run_with(
        Command::new(PLUGIN).env("CNI_COMMAND", "VERSION"),
        br#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let out = run_with(Command::new(PLUGIN).env("CNI_COMMAND", "VERSION"), b"");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["cniVersion"], "1.1.0");
    // No CNI_COMMAND at all.
    let out = run_with(Command::new(PLUGIN).env_remove("CNI_COMMAND"), b"");
    assert_eq!(error_json(&out)["code"], 4);
}

/// `linkInContainer`: the master lives in the container namespace; the slave is made
/// there and never crosses namespaces.
#[test]
fn link_in_container() {
    let w = World::new(1);
    let c0 = w.c(0).to_string();
    let p0 = w.netns_path(&c0);
    ok(&format!(
        "ip -n {c0} link add m0 type veth peer name m0peer && ip -n {c0} link set m0 up && ip -n {c0} link set m0peer up"
    ));
    let mut conf = w.conf("1.0.0", Some("m0"));
    conf["linkInContainer"] = json!(true);
    conf["flag"] = json!("private");
    let r: Value = serde_json::from_str(&w.plugin_raw_ok("ADD", "ctr-l", &p0, "net1", &conf))
        .expect("result JSON");
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["interfaces"][0]["mac"], mac(&c0, "m0").as_str());
    assert_eq!(mac(&c0, "net1"), mac(&c0, "m0"));
    // The master of the same name in HOST was not used.
    assert_eq!(w.host_leftovers(), BTreeSet::new());
    let mut check = conf.clone();
    check["prevResult"] = r;
    w.plugin_raw_ok("CHECK", "ctr-l", &p0, "net1", &check);
    w.plugin_raw_ok("DEL", "ctr-l", &p0, "net1", &conf);
    assert!(!link_names(&c0).contains("net1"));
}

/// Chaining as the reference plugin's own test cases run it: no `master` and no `ipam`,
/// `prevResult` naming the master as its one interface and carrying the address to
/// apply (for a master beside the host and one in the container); then CHECK and DEL
/// with the result as `prevResult`. No default route anywhere: the master can only come
/// from `prevResult`. A `prevResult` without a single named interface is refused.
#[test]
fn chained_after_another_plugin() {
    let w = World::new(1);
    let c0 = w.c(0).to_string();
    let p0 = w.netns_path(&c0);
    ok(&format!(
        "ip -n {c0} link add eth1 type veth peer name eth1peer && ip -n {c0} link set eth1 up && ip -n {c0} link set eth1peer up"
    ));
    for (in_container, master) in [(false, "eth0"), (true, "eth1")] {
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "mynet",
            "type": "ipvlan",
            "linkInContainer": in_container,
            "prevResult": {
                "interfaces": [{"name": master}],
                "ips": [{"version": "4", "address": format!("{}/24", w.v4(2)),
                         "gateway": w.v4(1), "interface": 0}],
                "routes": []
            }
        });
        let r: Value = serde_json::from_str(&w.plugin_raw_ok("ADD", "dummy", &p0, "ipvl0", &conf))
            .expect("result JSON");
        eprintln!("chained ADD result: {r}");
        assert_eq!(r["interfaces"].as_array().map(Vec::len), Some(1), "{r}");
        assert_eq!(r["interfaces"][0]["name"], "ipvl0");
        assert_eq!(r["ips"].as_array().map(Vec::len), Some(1), "{r}");
        assert_eq!(r["ips"][0]["interface"], 0);
        let master_ns = if in_container { &c0 } else { &w.host };
        assert_eq!(r["interfaces"][0]["mac"], mac(master_ns, master).as_str());
        assert_eq!(mac(&c0, "ipvl0"), mac(master_ns, master));
        let addrs = ok(&format!("ip -n {c0} -4 -o addr show dev ipvl0"));
        assert_eq!(addrs.lines().count(), 1, "{addrs}");
        assert!(addrs.contains(&format!("{}/24", w.v4(2))), "{addrs}");
        if !in_container {
            w.assert_ping(&c0, &w.v4(1));
        }
        // CHECK and DEL with the cached configuration, as the reference test builds it.
        let mut cached = conf.clone();
        cached["master"] = json!(master);
        cached["prevResult"] = r;
        w.plugin_raw_ok("CHECK", "dummy", &p0, "ipvl0", &cached);
        w.plugin_raw_ok("DEL", "dummy", &p0, "ipvl0", &cached);
        assert!(!link_names(&c0).contains("ipvl0"), "{}", w.diag());
    }

    // prevResult's routes are applied with its addresses, IPv6 included.
    let conf = json!({
        "cniVersion": "0.4.0",
        "name": "mynet",
        "type": "ipvlan",
        "prevResult": {
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0"}],
            "ips": [{"version": "4", "address": format!("{}/24", w.v4(3)), "interface": 0},
                    {"version": "6", "address": format!("fd00:{}::3/64", w.x), "interface": 0}],
            "routes": [{"dst": "10.254.0.0/16", "gw": w.v4(1)}]
        }
    });
    let r: Value =
        serde_json::from_str(&w.plugin_ok("ADD", "chained-v6", &p0, &conf)).expect("result JSON");
    assert_eq!(r["ips"].as_array().map(Vec::len), Some(2), "{r}");
    let route = ok(&format!("ip -n {c0} route show 10.254.0.0/16"));
    assert!(route.contains(&format!("via {}", w.v4(1))), "{route}");
    let v6 = ok(&format!("ip -n {c0} -6 -o addr show dev eth0"));
    assert!(v6.contains(&format!("fd00:{}::3/64", w.x)), "{v6}");
    w.plugin_ok("DEL", "chained-v6", &p0, &conf);

    // Not exactly one named interface in prevResult: the reference plugin's error,
    // and nothing made.
    for interfaces in [
        json!([]),
        json!([{"name": "eth0"}, {"name": "eth1"}]),
        json!([{"name": ""}]),
    ] {
        let mut bad = conf.clone();
        bad["prevResult"]["interfaces"] = interfaces;
        let e = error_json(&w.plugin("ADD", "chained-bad", &p0, &bad));
        assert_eq!(e["code"], 7, "{e}");
        assert!(
            e["msg"]
                .as_str()
                .unwrap_or_default()
                .contains("PrevResult lacks a single named interface"),
            "{e}"
        );
    }
    // A master given explicitly wins over prevResult's interface.
    let mut explicit = conf.clone();
    explicit["master"] = json!("eth9");
    let e = error_json(&w.plugin("ADD", "chained-bad", &p0, &explicit));
    assert!(
        e["msg"].as_str().unwrap_or_default().contains("eth9"),
        "{e}"
    );
    assert_eq!(
        link_names(&c0),
        BTreeSet::from(["lo".into(), "eth1".into(), "eth1peer".into()])
    );
    assert_eq!(w.host_leftovers(), BTreeSet::new(), "{}", w.diag());
}

/// When ADD returns, the container's addresses are usable: no IPv6 address is still
/// tentative, the daemon switches every address (the first packet, in both families,
/// from the external peer and from the other container, gets through), and an address
/// another host already has (duplicate address detection) fails ADD naming it, leaving
/// nothing behind.
#[test]
fn addresses_usable_when_add_returns() {
    let w = World::new(2);
    let (c0, c1) = (w.c(0).to_string(), w.c(1).to_string());
    let (p0, p1) = (w.netns_path(&c0), w.netns_path(&c1));
    let x = w.x;
    ok(&format!(
        "ip -n {} addr add fd00:{x}::1/64 dev eth0 nodad",
        w.router
    ));
    let mut conf = w.conf("1.0.0", Some("eth0"));
    conf["ipam"] = json!({
        "type": "host-local",
        "ranges": [
            [{"subnet": format!("10.{x}.0.0/24"), "rangeStart": format!("10.{x}.0.10"), "gateway": format!("10.{x}.0.1")}],
            [{"subnet": format!("fd00:{x}::/64"), "rangeStart": format!("fd00:{x}::10"), "gateway": format!("fd00:{x}::1")}]
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dataDir": w.dir.join("ipam").to_string_lossy(),
    });
    w.plugin_ok("ADD", "ctr-0", &p0, &conf);
    let addrs = ok(&format!("ip -n {c0} addr show dev eth0"));
    assert!(!addrs.contains("tentative"), "{addrs}");
    assert!(addrs.contains(&format!("fd00:{x}::10/64")), "{addrs}");
    // One packet each, nothing sent before: the first packet is answered.
    let first = |ns: &str, addr: &str| {
        let out = sh(&format!("ip netns exec {ns} ping -c 1 -W 3 {addr}"));
        assert!(
            out.status.success(),
            "first packet {ns} -> {addr} lost\n{}",
            w.diag()
        );
    };
    first(&w.router, &w.v4(10));
    first(&w.router, &format!("fd00:{x}::10"));
    w.plugin_ok("ADD", "ctr-1", &p1, &conf);
    let addrs = ok(&format!("ip -n {c1} addr show dev eth0"));
    assert!(!addrs.contains("tentative"), "{addrs}");
    first(&c0, &format!("fd00:{x}::11"));
    first(&c1, &w.v4(10));
    w.plugin_ok("DEL", "ctr-1", &p1, &conf);

    // The router already has fd00:X::66: duplicate address detection fails.
    ok(&format!(
        "ip -n {} addr add fd00:{x}::66/64 dev eth0 nodad",
        w.router
    ));
    let dup = json!({
        "cniVersion": "1.0.0",
        "name": "dup",
        "type": "ipvlan",
        "master": "eth0",
        "ipam": {"type": "static", "addresses": [{"address": format!("fd00:{x}::66/64")}]}
    });
    let e = error_json(&w.plugin("ADD", "ctr-dup", &p1, &dup));
    eprintln!("duplicate address: {e}");
    assert_eq!(e["code"], 104, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("fd00:{x}::66")),
        "{e}"
    );
    assert_eq!(link_names(&c1), BTreeSet::from(["lo".into()]));
    w.plugin_ok("DEL", "ctr-0", &p0, &conf);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !w.host_leftovers().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.host_leftovers(), BTreeSet::new(), "{}", w.diag());
}
