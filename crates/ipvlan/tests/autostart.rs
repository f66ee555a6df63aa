//! The auto-started daemon lives at home (issue 15): started by a CLI call from inside
//! `ip netns exec X`, it runs in the host's network and mount namespaces, in a session
//! and a cgroup of its own, with a clean environment, so deleting X destroys X.
//!
//! Its own namespaces (X and a peer namespace P, a veth pair between them whose end in
//! P shows whether X still exists), its own socket directory; the daemon it starts is
//! found by that socket on its command line and killed at the end, also on failure.

#![forbid(unsafe_code)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// What the test made; removed on drop.
struct Scratch {
    x: String,
    peer: String,
    dir: PathBuf,
    socket: String,
}

impl Scratch {
    /// `which` tells apart the tests of one run.
    fn new(which: char) -> Self {
        let tag = format!("iva{}{which}", std::process::id() % 100_000);
        let dir = PathBuf::from(format!("/tmp/ipvlan-rs-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Scratch {
            x: format!("{tag}-x"),
            peer: format!("{tag}-p"),
            socket: dir.join("ipvlan.sock").display().to_string(),
            dir,
        };
        ok(&format!("ip netns add {}", s.x));
        ok(&format!("ip netns add {}", s.peer));
        ok(&format!(
            "ip -n {} link add eth0 type veth peer name inx netns {}",
            s.x, s.peer
        ));
        s
    }

    /// The daemon serving this test's socket, found by its command line.
    fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let serves = args
                .windows(2)
                .any(|w| w[0] == b"--socket" && w[1] == self.socket.as_bytes());
            (serves && args.iter().any(|a| *a == b"daemon")).then_some(pid)
        })
    }

    fn cli(&self, ns: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(args)
            .env("IPVLAN_SOCKET", &self.socket)
            .env_remove("IPVLAN_NO_AUTOSTART")
            .env("IPVLAN_TEST_MARKER", "from-the-caller");
        run(&mut cmd)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            let _ = sh(&format!("kill {pid}"));
            eventually(Duration::from_secs(5), || self.daemon_pid().is_none());
        }
        let _ = sh(&format!("ip netns del {} 2>/dev/null", self.x));
        let _ = sh(&format!("ip netns del {} 2>/dev/null", self.peer));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ns_inode(pid: &str, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{kind}: {e}"))
        .ino()
}

/// The line of `/proc/PID/cgroup` for the unified hierarchy (`0::PATH`).
fn unified_cgroup(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("0::"))
        .map(str::to_string)
}

#[test]
fn auto_started_daemon_lives_at_home() {
    require_root();
    let s = Scratch::new('a');
    let out = s.cli(Some(&s.x), &["link", "show"]);
    assert!(
        out.status.success(),
        "ipvlan link show from inside {} (starting a daemon): {}",
        s.x,
        stderr(&out)
    );
    let pid = s
        .daemon_pid()
        .expect("a daemon serving the test's socket")
        .to_string();
    // The host's namespaces: the test's own (it runs in the host's), not X's.
    for kind in ["net", "mnt"] {
        assert_eq!(
            ns_inode(&pid, kind),
            ns_inode("self", kind),
            "the daemon's {kind} namespace is not the host's"
        );
    }
    // A session of its own.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid, "the daemon leads no session of its own");
    // A clean environment.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("daemon environ");
    assert!(
        !String::from_utf8_lossy(&environ).contains("IPVLAN_TEST_MARKER"),
        "the daemon inherited the caller's environment"
    );
    // Outside the caller's cgroup, where the machine has a unified hierarchy to move in.
    if let Some(mine) = unified_cgroup("self") {
        let its = unified_cgroup(&pid).expect("the daemon's cgroup");
        assert!(
            its.ends_with("/ipvlan-rs") && its != mine,
            "the daemon's cgroup is {its}, the caller's {mine}"
        );
    }
    // X is not held: deleting it destroys it, and the veth end in the peer namespace
    // goes with it.
    ok(&format!("ip netns del {}", s.x));
    let gone = eventually(Duration::from_secs(10), || {
        !link_names(&s.peer).contains("inx")
    });
    assert!(gone, "namespace {} outlived its deletion", s.x);
    // And the daemon still serves.
    let out = s.cli(None, &["link", "show"]);
    assert!(
        out.status.success(),
        "the daemon stopped serving: {}",
        stderr(&out)
    );
    assert_eq!(s.daemon_pid(), Some(pid.parse().expect("pid")));
}

/// The production path (README): a service manager owns the socket and starts the
/// daemon on the first connection, handing it the listening socket (socket activation,
/// here with systemd's own `systemd-socket-activate`).
#[test]
fn socket_activated_daemon_serves_the_passed_socket() {
    require_root();
    let tool = "systemd-socket-activate";
    assert!(
        run(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
            .status
            .success(),
        "{tool} is missing: install systemd (`sudo ./x deps`)"
    );
    let s = Scratch::new('s');
    std::fs::create_dir_all(&s.dir).expect("socket dir");
    let log = s.dir.join("daemon.log");
    let mut manager = Command::new(tool)
        .args(["-l", &s.socket, BIN, "daemon", "--socket", &s.socket])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start systemd-socket-activate");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let listening = eventually(Duration::from_secs(5), || {
        std::path::Path::new(&s.socket).exists()
    });
    let _ = manager.try_wait();
    let manager = Reap(manager);
    assert!(listening, "{tool} made no socket at {}", s.socket);
    let out = {
        let mut cmd = Command::new(BIN);
        cmd.args(["link", "show"])
            .env("IPVLAN_SOCKET", &s.socket)
            .env("IPVLAN_NO_AUTOSTART", "1");
        run(&mut cmd)
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "link show through the activated socket: {}\ndaemon log:\n{text}",
        stderr(&out)
    );
    assert!(
        text.contains("serving the socket the service manager passed"),
        "the daemon did not take the passed socket; its log:\n{text}"
    );
    drop(manager);
}
