//! The control server: the socket the CLI and the CNI plugin talk to, who may ask,
//! reading a request and answering it, and the `ipvlan monitor` subscribers.
//!
//! What a request does is the business of a [`Requests`] implementation (the daemon's,
//! in `requests.rs`); [`answer`] makes the reply from its result — the one place where
//! an [`Error`] becomes the words and exit status the CLI prints.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ipvlan_proto::{self as proto, Notice, PortArgs, Reply, Request, SlaveView, Status};
use ipvlan_sys::NetNs;

use super::Error;

/// What the control server asks of whoever carries requests out; `Caller` is the
/// namespace the request came from.
pub(super) trait Requests {
    type Caller;
    fn add(
        &mut self,
        caller: &Self::Caller,
        master: &str,
        name: &str,
        mtu: Option<u32>,
        args: PortArgs,
    ) -> Result<(), Error>;
    fn set(&mut self, caller: &Self::Caller, dev: &str, args: PortArgs) -> Result<(), Error>;
    fn del(&mut self, caller: &Self::Caller, dev: &str) -> Result<(), Error>;
    fn show(&mut self, caller: &Self::Caller, dev: Option<&str>) -> Result<Vec<SlaveView>, Error>;
}

/// Carries `req` out with `r`; the slaves to list, if any.
pub(super) fn dispatch<R: Requests>(
    r: &mut R,
    caller: &R::Caller,
    req: Request,
) -> Result<Vec<SlaveView>, Error> {
    match req {
        Request::Add {
            master,
            name,
            mtu,
            args,
        } => r.add(caller, &master, &name, mtu, args).map(|()| vec![]),
        Request::Set { dev, args } => r.set(caller, &dev, args).map(|()| vec![]),
        Request::Del { dev } => r.del(caller, &dev).map(|()| vec![]),
        Request::Show { dev } => r.show(caller, dev.as_deref()),
        Request::Monitor => Ok(vec![]),
    }
}

/// The reply to a request that ended with `result`.
pub(super) fn answer(result: Result<Vec<SlaveView>, Error>) -> Reply {
    match result {
        Ok(links) => Reply {
            status: Status::Ok,
            error: None,
            links,
        },
        Err(e) => Reply {
            status: e.status(),
            error: Some(e.to_string()),
            links: vec![],
        },
    }
}

/// Reads one request from `stream`, has `r` carry it out and answers; a monitor
/// request's connection comes back, to be subscribed.
pub(super) fn serve<R: Requests<Caller = NetNs>>(
    stream: UnixStream,
    r: &mut R,
) -> io::Result<Option<UnixStream>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let (pid, uid) = ipvlan_sys::unix::peer_cred(&stream)?;
    // Read the request first, so the refusal below reaches a client still writing.
    let (req, fd) = proto::receive(&stream)?;
    // Root or CAP_NET_ADMIN in the daemon's own user namespace: a root inside an
    // unprivileged user namespace may not change ports (spec §1.4, C22).
    if !ipvlan_sys::unix::same_user_ns(pid) || (uid != 0 && !ipvlan_sys::unix::has_net_admin(pid)) {
        proto::send_reply(&stream, &answer(Err(Error::NotPermitted)))?;
        return Ok(None);
    }
    if let Request::Monitor = req {
        proto::send_reply(&stream, &answer(Ok(vec![])))?;
        stream.set_nonblocking(true)?;
        return Ok(Some(stream));
    }
    let result = NetNs::from_fd(fd)
        .map_err(Error::from)
        .and_then(|caller| dispatch(r, &caller, req));
    proto::send_reply(&stream, &answer(result))?;
    Ok(None)
}

/// The control socket and the connections of `ipvlan monitor`.
pub(super) struct Control {
    listener: UnixListener,
    /// Written without blocking; dropped when they cannot take a line.
    subscribers: Vec<UnixStream>,
}

impl Control {
    /// Listens on `socket`, readable and writable by the daemon's user only; or, where
    /// a service manager started the daemon for its socket (socket activation), on the
    /// socket it passed (its unit says where and with which mode).
    pub fn bind(socket: &Path) -> anyhow::Result<Self> {
        if let Some(listener) = ipvlan_sys::unix::activated_listener()
            .context("the socket passed by the service manager")?
        {
            tracing::info!("serving the socket the service manager passed");
            listener.set_nonblocking(true)?;
            return Ok(Self {
                listener,
                subscribers: Vec::new(),
            });
        }
        safe_socket_path(socket)?;
        if UnixStream::connect(socket).is_ok() {
            anyhow::bail!("a daemon already answers on {}", socket.display());
        }
        if socket.exists() {
            // A socket left by a daemon that died (checked: a socket, nobody answers).
            std::fs::remove_file(socket)
                .with_context(|| format!("cannot remove the stale {}", socket.display()))?;
        }
        // Created 0600 (no moment where others may connect), and set so again below.
        let old_mask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(socket);
        nix::sys::stat::umask(old_mask);
        let listener = bound.with_context(|| format!("cannot listen on {}", socket.display()))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            subscribers: Vec::new(),
        })
    }

    /// The next waiting connection, if any.
    pub fn accept(&self) -> Option<UnixStream> {
        match self.listener.accept() {
            Ok((stream, _)) => Some(stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => {
                tracing::warn!("accept: {e}");
                None
            }
        }
    }

    /// `stream` (of a monitor request already answered) is told of every change.
    pub fn subscribe(&mut self, stream: UnixStream) {
        self.subscribers.push(stream);
    }

    /// Tells every `ipvlan monitor` (and the log) about a change. A subscriber that
    /// cannot take the whole line at once is dropped rather than waited for.
    pub fn notify(&mut self, n: &Notice) {
        tracing::info!("{n}");
        let mut line = serde_json::to_vec(n).unwrap_or_default();
        line.push(b'\n');
        self.subscribers.retain(|s| {
            use std::io::Write;
            matches!((&*s).write(&line), Ok(k) if k == line.len())
        });
    }
}

impl AsRawFd for Control {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

/// Checks that another user can neither replace the control socket nor plant one:
/// its directory is created `0700` if missing; an existing one must be a real
/// directory (not a symbolic link), owned by the daemon's user or root, and writable
/// by nobody else unless it is sticky (like `/tmp`). Whatever is at the path itself
/// must be a socket (left by an earlier daemon): a file or a link there is refused, not
/// removed.
fn safe_socket_path(socket: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let md = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    let mode = md.mode() & 0o7777;
    if md.file_type().is_symlink() {
        anyhow::bail!(
            "the control socket's directory {} is a symbolic link; give a real directory with --socket",
            dir.display()
        );
    }
    if !md.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    if md.uid() != me && md.uid() != 0 {
        anyhow::bail!(
            "the control socket's directory {} belongs to uid {}, not to the daemon's user (uid {me}) or root; another user could replace the socket",
            dir.display(),
            md.uid()
        );
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        anyhow::bail!(
            "the control socket's directory {} is writable by other users (mode {mode:04o}); make it 0755 or 0700, or use a sticky directory",
            dir.display()
        );
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if !m.file_type().is_socket() => anyhow::bail!(
            "{} exists and is not a socket; refusing to replace it (remove it, or choose another --socket)",
            socket.display()
        ),
        Ok(m) if m.uid() != me && m.uid() != 0 => anyhow::bail!(
            "the socket {} belongs to uid {}, not to the daemon's user",
            socket.display(),
            m.uid()
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use ipvlan_core::Mode;

    use super::*;

    /// Records what it was asked; refuses devices it does not know.
    #[derive(Default)]
    struct Fake {
        asked: Vec<String>,
    }

    impl Requests for Fake {
        type Caller = &'static str;
        fn add(
            &mut self,
            caller: &&'static str,
            master: &str,
            name: &str,
            mtu: Option<u32>,
            args: PortArgs,
        ) -> Result<(), Error> {
            self.asked.push(format!(
                "add {caller} {master} {name} {mtu:?} {:?}",
                args.mode
            ));
            if master == "eth0" {
                Ok(())
            } else {
                Err(Error::NoSuchDevice(master.into()))
            }
        }
        fn set(&mut self, _: &&'static str, dev: &str, _: PortArgs) -> Result<(), Error> {
            self.asked.push(format!("set {dev}"));
            Err(Error::NotOurs(dev.into()))
        }
        fn del(&mut self, _: &&'static str, dev: &str) -> Result<(), Error> {
            self.asked.push(format!("del {dev}"));
            Ok(())
        }
        fn show(&mut self, _: &&'static str, dev: Option<&str>) -> Result<Vec<SlaveView>, Error> {
            self.asked.push(format!("show {dev:?}"));
            Ok(vec![])
        }
    }

    #[test]
    fn each_request_goes_to_its_handler() {
        let mut f = Fake::default();
        let add = Request::Add {
            master: "eth0".into(),
            name: "ipvl0".into(),
            mtu: Some(1400),
            args: PortArgs {
                mode: Some(Mode::L3),
                ..Default::default()
            },
        };
        assert!(dispatch(&mut f, &"ns1", add).is_ok());
        let _ = dispatch(
            &mut f,
            &"ns1",
            Request::Del {
                dev: "ipvl0".into(),
            },
        );
        let _ = dispatch(&mut f, &"ns1", Request::Show { dev: None });
        assert!(dispatch(&mut f, &"ns1", Request::Monitor).is_ok());
        assert_eq!(
            f.asked,
            [
                "add ns1 eth0 ipvl0 Some(1400) Some(L3)",
                "del ipvl0",
                "show None"
            ]
        );
    }

    #[test]
    fn replies_carry_the_words_and_status_of_the_error() {
        let mut f = Fake::default();
        let add = Request::Add {
            master: "eth9".into(),
            name: "ipvl0".into(),
            mtu: None,
            args: PortArgs::default(),
        };
        let r = answer(dispatch(&mut f, &"ns1", add));
        assert_eq!(r.status, Status::Usage);
        assert_eq!(r.error.as_deref(), Some("Cannot find device \"eth9\""));
        let set = Request::Set {
            dev: "eth0".into(),
            args: PortArgs::default(),
        };
        let r = answer(dispatch(&mut f, &"ns1", set));
        assert_eq!(r.status, Status::Refused);
        assert_eq!(
            r.error.as_deref(),
            Some(
                "Error: \"eth0\" is not an ipvlan device of ipvlan-rs (use ip for other devices)."
            )
        );
        let r = answer(Err(Error::NotPermitted));
        assert_eq!(r.status, Status::Refused);
        assert_eq!(
            r.error.as_deref(),
            Some("Error: Operation not permitted (ipvlan-rs needs root or CAP_NET_ADMIN).")
        );
        let r = answer(Ok(vec![]));
        assert_eq!((r.status, r.error), (Status::Ok, None));
    }
}
