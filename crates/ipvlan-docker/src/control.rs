//! Talking to the ipvlan-rs daemon: every use of its control protocol by this plugin is
//! here (the protocol's crate is named once, below), and starting a daemon when none
//! answers, as the `ipvlan` CLI and the CNI plugin do.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvlan_core::{Flags, Mode};
use ipvlan_proto::{self as proto, PortArgs, Reply, Request, Status};
use ipvlan_sys::NetNs;

/// Creates slave `name` on `master`, both resolved in namespace `ns`, with the port's
/// mode and flags.
pub fn add_slave(
    ns: &NetNs,
    master: &str,
    name: &str,
    mode: Mode,
    flags: Flags,
) -> Result<(), String> {
    let reply = call(
        ns,
        &Request::Add {
            master: master.to_string(),
            name: name.to_string(),
            mtu: None,
            args: PortArgs {
                mode: Some(mode),
                flags: Some(flags),
                source_guard: None,
            },
        },
        true,
    )?;
    check(reply).map(drop)
}

/// Deletes slave `name` of namespace `ns` through the daemon, so that it forgets it.
pub fn del_slave(ns: &NetNs, name: &str) -> Result<(), String> {
    let reply = call(
        ns,
        &Request::Del {
            dev: name.to_string(),
        },
        false,
    )?;
    check(reply).map(drop)
}

fn check(reply: Reply) -> Result<Reply, String> {
    match reply.status {
        Status::Ok => Ok(reply),
        Status::Usage | Status::Refused => Err(format!(
            "ipvlan-rs daemon: {}",
            reply.error.unwrap_or_default()
        )),
    }
}

fn call(ns: &NetNs, req: &Request, autostart: bool) -> Result<Reply, String> {
    let stream = connect(autostart)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("ipvlan-rs control socket: {e}"))?;
    let fd: OwnedFd = ns
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("duplicating a namespace descriptor: {e}"))?;
    proto::call(&stream, &fd, req).map_err(|e| format!("the ipvlan-rs daemon did not answer: {e}"))
}

/// Connects to the daemon; with `autostart`, starts one if none answers (unless
/// `IPVLAN_NO_AUTOSTART` is set).
fn connect(autostart: bool) -> Result<UnixStream, String> {
    let path = proto::socket_path();
    match UnixStream::connect(&path) {
        Ok(s) => Ok(s),
        Err(e) if !autostart || std::env::var_os("IPVLAN_NO_AUTOSTART").is_some() => {
            Err(format!("cannot reach the ipvlan-rs daemon on {path}: {e}"))
        }
        Err(_) => start(&path),
    }
}

/// The `ipvlan` binary: `IPVLAN_BIN`, else next to this plugin, else on `PATH`.
fn ipvlan_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IPVLAN_BIN") {
        return Some(PathBuf::from(p));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("ipvlan")));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ipvlan"))
        .find(|p| p.is_file())
}

/// Starts `ipvlan daemon --socket PATH` in its own process group, logging beside the
/// socket, and waits until it answers.
fn start(path: &str) -> Result<UnixStream, String> {
    let fail = |why: String| format!("cannot reach the ipvlan-rs daemon on {path}: {why}");
    let bin = ipvlan_binary().ok_or_else(|| {
        fail("no daemon answers and no `ipvlan` binary was found to start one (set IPVLAN_BIN, or put it next to ipvlan-docker or on PATH)".into())
    })?;
    let dir = Path::new(path).parent().unwrap_or(Path::new("/run"));
    let started = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))?;
        Command::new(&bin)
            .args(["daemon", "--socket", path])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()?;
        Ok(())
    })();
    started.map_err(|e| fail(format!("starting {}: {e}", bin.display())))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(fail(format!(
                    "started {} but it does not answer: {e}",
                    bin.display()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
