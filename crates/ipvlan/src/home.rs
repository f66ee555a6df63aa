//! `ipvlan daemon --home`: what an auto-started daemon does before anything else.
//!
//! A client that finds no daemon starts one (`ipvlan_proto::client`), and that child
//! inherits wherever its caller ran: `ip netns exec X` (X's network and mount
//! namespaces), a container runtime's CNI call (the runtime's mount namespace, its
//! service's cgroup), the caller's session. Left there, the daemon would keep X alive
//! after its owner deleted it and die with the runtime's service. So it goes home:
//!
//! * a session of its own (`setsid`), so no terminal or process group of the caller's
//!   signals it;
//! * the network, cgroup and mount namespaces of the host: PID 1's, or where PID 1's
//!   cannot be read (a sandbox may hide them even from root), the outermost ancestor's
//!   this process can read; the working directory `/`;
//! * a cgroup of its own (`ipvlan-rs`) under the root of the hierarchies a service
//!   manager tracks processes by (cgroup v2, and v1's `name=systemd`), where the system
//!   lets it move there.
//!
//! The clean environment is the client's part (it starts the daemon with one).
//! Namespaces can be joined only while the process has one thread, so this runs first.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

/// The namespaces joined, in order (the mount namespace last: the others are opened
/// through the caller's `/proc`).
const NAMESPACES: [(&str, CloneFlags); 3] = [
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Where a service manager looks for a process's cgroup (the unified hierarchy, mounted
/// alone or beside v1 controllers, and v1's named systemd hierarchy).
const HIERARCHIES: [&str; 3] = [
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup/systemd",
];

/// Goes home (see the module doc); returns what was done, one line each, for the log
/// (which is not set up yet). Only a failure to leave a namespace is an error.
pub fn go_home() -> io::Result<Vec<String>> {
    let mut done = Vec::new();
    match nix::unistd::setsid() {
        Ok(_) => done.push("a session of its own".to_string()),
        // Already a session or group leader: started by hand, not by a client.
        Err(e) => done.push(format!("session kept ({e})")),
    }
    let home = home_pid();
    for (kind, flag) in NAMESPACES {
        let there = format!("/proc/{home}/ns/{kind}");
        let here = format!("/proc/self/ns/{kind}");
        if same_file(&there, &here) {
            continue;
        }
        let ns = File::open(&there)?;
        setns(ns, flag).map_err(|e| {
            io::Error::new(io::Error::from(e).kind(), format!("joining {there}: {e}"))
        })?;
        done.push(format!("joined the {kind} namespace of pid {home}"));
    }
    std::env::set_current_dir("/")?;
    for root in HIERARCHIES {
        if let Some(line) = own_cgroup(Path::new(root)) {
            done.push(line);
        }
    }
    Ok(done)
}

/// PID 1, or where its namespaces cannot be read, the outermost ancestor of this
/// process whose can.
fn home_pid() -> u32 {
    let readable = |pid: u32| {
        NAMESPACES
            .iter()
            .all(|(kind, _)| File::open(format!("/proc/{pid}/ns/{kind}")).is_ok())
    };
    if readable(1) {
        return 1;
    }
    let mut home = std::process::id();
    let mut pid = parent_of(home);
    while let Some(p) = pid.filter(|&p| p > 1) {
        if !readable(p) {
            break;
        }
        home = p;
        pid = parent_of(p);
    }
    home
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

fn same_file(a: &str, b: &str) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Moves this process into `ROOT/ipvlan-rs` if `root` is a cgroup hierarchy's root that
/// lets it; `None` where it is none or refuses.
fn own_cgroup(root: &Path) -> Option<String> {
    if !root.join("cgroup.procs").is_file() {
        return None;
    }
    let dir = root.join("ipvlan-rs");
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .ok()
        .map(|()| format!("moved to cgroup {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_read_past_a_name_with_spaces_and_parentheses() {
        // Our own parent, as the kernel reports it.
        let me = std::process::id();
        let want = std::os::unix::process::parent_id();
        assert_eq!(parent_of(me), Some(want));
    }

    #[test]
    fn a_file_is_itself_and_not_another() {
        assert!(same_file("/proc/self/ns/net", "/proc/self/ns/net"));
        assert!(!same_file("/proc/self/ns/net", "/proc/self/ns/mnt"));
    }
}
