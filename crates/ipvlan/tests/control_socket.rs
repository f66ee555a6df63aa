//! The control socket is safe against other users (issue 5): the daemon refuses a
//! directory another user could write to or swap, never removes something that is not
//! its socket, creates its socket `0600` in a `0700` directory, and a caller that is
//! not root (nor CAP_NET_ADMIN) is refused. Root only (a test changes user).

#![forbid(unsafe_code)]

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A scratch directory under /tmp, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = PathBuf::from(format!("/tmp/ipvlan-rs-sock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ipvlan daemon --socket PATH`, expected to refuse at once: its exit status and
/// stderr.
fn refused_daemon(socket: &Path) -> String {
    let out = run_timeout(
        Command::new(BIN)
            .args(["daemon", "--socket"])
            .arg(socket)
            .env("IPVLAN_SOCKET", socket),
        Duration::from_secs(10),
    );
    assert!(
        !out.status.success(),
        "the daemon started on {}: {}",
        socket.display(),
        stderr(&out)
    );
    stderr(&out)
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn a_directory_others_can_write_is_refused() {
    require_root();
    let s = Scratch::new("ww");
    let dir = s.0.join("open");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused_daemon(&dir.join("ipvlan.sock"));
    assert!(
        err.contains("writable by other users") && err.contains("0777"),
        "{err}"
    );
    assert!(!dir.join("ipvlan.sock").exists());
}

#[test]
fn a_symlinked_directory_is_refused() {
    require_root();
    let s = Scratch::new("ln");
    let real = s.0.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = s.0.join("link");
    symlink(&real, &link).unwrap();
    let err = refused_daemon(&link.join("ipvlan.sock"));
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!real.join("ipvlan.sock").exists());
}

#[test]
fn a_file_at_the_socket_path_is_left_alone() {
    require_root();
    let s = Scratch::new("file");
    let path = s.0.join("ipvlan.sock");
    std::fs::write(&path, b"precious").unwrap();
    let err = refused_daemon(&path);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn the_socket_is_private_and_other_users_are_refused() {
    require_root();
    let s = Scratch::new("ok");
    // A missing directory is made 0700.
    let socket = s.0.join("run").join("ipvlan.sock");
    let mut child = Command::new(BIN)
        .args(["daemon", "--socket"])
        .arg(&socket)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the daemon");
    let up = eventually(Duration::from_secs(5), || socket.exists());
    let checks = || -> Result<(), String> {
        if !up {
            return Err("no socket after 5 s".into());
        }
        let (d, m) = (mode(socket.parent().unwrap()), mode(&socket));
        if d != 0o700 || m != 0o600 {
            return Err(format!("directory mode {d:04o}, socket mode {m:04o}"));
        }
        // Even with the directory and socket opened up, a user without
        // CAP_NET_ADMIN is refused on its credentials.
        for p in [socket.parent().unwrap(), socket.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| e.to_string())?;
        }
        let out = run_timeout(
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--inh-caps=-all",
                    BIN,
                    "link",
                    "show",
                ])
                .env("IPVLAN_SOCKET", &socket)
                .env("IPVLAN_NO_AUTOSTART", "1"),
            Duration::from_secs(10),
        );
        let err = stderr(&out);
        if out.status.success() || !err.contains("Operation not permitted") {
            return Err(format!("an unprivileged user was served: {err}"));
        }
        // Root is.
        let out = run_timeout(
            Command::new(BIN)
                .args(["link", "show"])
                .env("IPVLAN_SOCKET", &socket)
                .env("IPVLAN_NO_AUTOSTART", "1"),
            Duration::from_secs(10),
        );
        if !out.status.success() {
            return Err(format!("root was refused: {}", stderr(&out)));
        }
        Ok(())
    };
    let result = checks();
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        panic!("{e}");
    }
}
