//! Reaching the daemon, for every client (the `ipvlan` CLI, the CNI plugin, the Docker
//! plugin): connect to its control socket and, where the client may, start a daemon
//! when none answers.
//!
//! A daemon started here is told to go home before it serves (`ipvlan daemon --home`):
//! it leaves its first caller's network, mount and cgroup namespaces, session and
//! cgroup for the host's, so that neither a namespace the caller ran in (`ip netns exec
//! X ipvlan ...`, a runtime's CNI call) nor a service that gets stopped takes the daemon
//! with it. Its environment is a clean one. What it needs from a caller's namespace it
//! takes per request (the descriptor sent with each request).

use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::socket_path;

/// The `PATH` an auto-started daemon gets (it runs `nft`).
const DAEMON_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a started daemon may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// No daemon answers on `path`, and none could be started: `why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub path: String,
    pub why: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the ipvlan-rs daemon on {}: {}",
            self.path, self.why
        )
    }
}

impl std::error::Error for Unreachable {}

impl From<Unreachable> for io::Error {
    fn from(e: Unreachable) -> Self {
        io::Error::new(io::ErrorKind::NotConnected, e)
    }
}

/// Whether a client may start a daemon when none answers, and with which binary.
#[derive(Debug, Clone, Copy)]
pub enum Autostart<'a> {
    /// Never (a DEL or a CHECK must not bring up a daemon that was not there).
    Off,
    /// With this `ipvlan` binary, unless `IPVLAN_NO_AUTOSTART` is set.
    With(&'a Path),
    /// With the `ipvlan` binary [`find_binary`] finds, unless `IPVLAN_NO_AUTOSTART` is
    /// set; that none is found is an error.
    Find,
}

/// Connects to the daemon on [`socket_path`]; see [`Autostart`].
pub fn connect(autostart: Autostart<'_>) -> Result<UnixStream, Unreachable> {
    let path = socket_path();
    let refused = match UnixStream::connect(&path) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let fail = |why: String| Unreachable {
        path: path.clone(),
        why,
    };
    if std::env::var_os("IPVLAN_NO_AUTOSTART").is_some() {
        return Err(fail(refused.to_string()));
    }
    let bin = match autostart {
        Autostart::Off => return Err(fail(refused.to_string())),
        Autostart::With(bin) => bin.to_path_buf(),
        Autostart::Find => find_binary().ok_or_else(|| {
            fail(
                "no daemon answers and no `ipvlan` binary was found to start one \
                 (set IPVLAN_BIN, or put it next to this program or on PATH)"
                    .into(),
            )
        })?,
    };
    start(&path, &bin).map_err(fail)
}

/// The `ipvlan` binary: `IPVLAN_BIN`, else an `ipvlan` next to this program, else one on
/// `PATH` — never this program itself (the CNI plugin installed as `ipvlan`, to replace
/// the reference plugin, is the `ipvlan` next to itself).
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IPVLAN_BIN") {
        return Some(PathBuf::from(p));
    }
    let me = std::env::current_exe()
        .ok()
        .and_then(|e| std::fs::canonicalize(e).ok());
    let usable = |p: &PathBuf| p.is_file() && std::fs::canonicalize(p).ok() != me;
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

/// Starts `BIN daemon --socket PATH --home` in the background (no stdio of ours: a
/// runtime reads a plugin's stdout to its end; its log beside the socket) and waits
/// until it answers.
fn start(path: &str, bin: &Path) -> Result<UnixStream, String> {
    let dir = Path::new(path).parent().unwrap_or(Path::new("/run"));
    let spawned = (|| -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))?;
        let mut cmd = Command::new(bin);
        cmd.args(["daemon", "--socket", path, "--home"])
            .env_clear()
            .env("PATH", DAEMON_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(filter) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        // Reaped by whoever inherits it: the daemon outlives this client.
        drop(cmd.spawn()?);
        Ok(())
    })();
    spawned.map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "started {} but it does not answer: {e}",
                    bin.display()
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_names_the_socket_and_the_cause() {
        let e = Unreachable {
            path: "/run/x.sock".into(),
            why: "No such file or directory (os error 2)".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the ipvlan-rs daemon on /run/x.sock: No such file or directory (os error 2)"
        );
    }
}
