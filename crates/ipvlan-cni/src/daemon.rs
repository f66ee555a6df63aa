//! Talking to the ipvlan-rs daemon: the control protocol of `ipvlan-proto`, and starting
//! a daemon when none answers (as the `ipvlan` CLI does).

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvlan_proto::{self as proto, Reply, Request, Status};

use crate::cni::{CniError, code};

/// Connects to the daemon; with `autostart`, starts one if none answers (unless
/// `IPVLAN_NO_AUTOSTART` is set, as for the CLI).
pub fn connect(autostart: bool) -> Result<UnixStream, CniError> {
    let path = proto::socket_path();
    match UnixStream::connect(&path) {
        Ok(s) => Ok(s),
        Err(e) if !autostart || std::env::var_os("IPVLAN_NO_AUTOSTART").is_some() => {
            Err(unreachable(&path, &e.to_string()))
        }
        Err(_) => start(&path),
    }
}

fn unreachable(path: &str, why: &str) -> CniError {
    CniError::new(
        code::TRY_AGAIN,
        format!("cannot reach the ipvlan-rs daemon on {path}"),
    )
    .details(why.to_string())
}

/// The `ipvlan` binary: `IPVLAN_BIN`, else next to this plugin, else on `PATH` — never
/// this plugin itself (installed as `ipvlan` to replace the reference plugin, it is
/// the `ipvlan` next to itself).
pub fn ipvlan_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IPVLAN_BIN") {
        return Some(PathBuf::from(p));
    }
    let me = std::env::current_exe()
        .ok()
        .and_then(|e| std::fs::canonicalize(e).ok());
    let usable = |p: &PathBuf| p.is_file() && std::fs::canonicalize(p).ok().as_ref() != me.as_ref();
    let beside = me
        .as_ref()
        .and_then(|m| m.parent())
        .map(|d| d.join("ipvlan"));
    if let Some(p) = beside.filter(usable) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ipvlan"))
        .find(usable)
}

/// Starts `ipvlan daemon --socket PATH` in the background (its own process group, no
/// stdio of ours: the runtime reads our stdout to its end) and waits until it answers.
fn start(path: &str) -> Result<UnixStream, CniError> {
    let bin = ipvlan_binary().ok_or_else(|| {
        unreachable(
            path,
            "no daemon answers and no `ipvlan` binary was found to start one (set IPVLAN_BIN, put it next to the plugin or on PATH)",
        )
    })?;
    let dir = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new("/run"));
    let started = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))?;
        let mut cmd = Command::new(&bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["daemon", "--socket", path])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()?;
        Ok(())
    })();
    if let Err(e) = started {
        return Err(unreachable(
            path,
            &format!("starting {}: {e}", bin.display()),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(unreachable(
                    path,
                    &format!("started {} but it does not answer: {e}", bin.display()),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One request, on its own connection, resolved in the namespace `netns`.
pub fn call(stream: &UnixStream, netns: &OwnedFd, req: &Request) -> Result<Reply, CniError> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| CniError::system(format!("control socket: {e}")))?;
    proto::call(stream, netns, req).map_err(|e| {
        CniError::new(code::TRY_AGAIN, "the ipvlan-rs daemon did not answer").details(e.to_string())
    })
}

/// A reply as a result: `Usage` (e.g. `Cannot find device "eth9"`) is a configuration
/// error, `Refused` the daemon's own.
pub fn check(reply: Reply) -> Result<Reply, CniError> {
    let msg = reply.error.clone().unwrap_or_default();
    match reply.status {
        Status::Ok => Ok(reply),
        Status::Usage => Err(CniError::config(format!("ipvlan-rs daemon: {msg}"))),
        Status::Refused => Err(CniError::new(
            code::DAEMON,
            format!("ipvlan-rs daemon refused: {msg}"),
        )),
    }
}
