//! The control protocol between the CLI and the daemon.
//!
//! One request per connection on a Unix stream socket: the client sends one JSON line
//! together with a descriptor of its network namespace (SCM_RIGHTS) — masters and
//! device names are resolved in the caller's namespace, as `ip` does — and the daemon
//! answers with one JSON line.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ipvlan_core::{Flags, Mode};
use ipvlan_datapath::Counters;
use serde::{Deserialize, Serialize};

pub const DEFAULT_SOCKET: &str = "/run/ipvlan-rs/ipvlan.sock";

/// The socket path: `IPVLAN_SOCKET` if set, else the default.
pub fn socket_path() -> String {
    std::env::var("IPVLAN_SOCKET").unwrap_or_else(|_| DEFAULT_SOCKET.to_string())
}

/// The ipvlan options of an add or set request; `None`: not sent (spec §1.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortArgs {
    pub mode: Option<Mode>,
    pub flags: Option<Flags>,
    /// The source guard (an ipvlan-rs extension): `None` leaves it as it is.
    #[serde(default)]
    pub source_guard: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    Add {
        master: String,
        name: String,
        mtu: Option<u32>,
        #[serde(flatten)]
        args: PortArgs,
    },
    Set {
        dev: String,
        #[serde(flatten)]
        args: PortArgs,
    },
    Del {
        dev: String,
    },
    Show {
        dev: Option<String>,
    },
    /// Keep the connection open and stream [`Notice`]s, one JSON line each.
    Monitor,
}

/// What `ipvlan monitor` streams: one change of some port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    SlaveAdded {
        slave: String,
        master: String,
        dev_id: u16,
    },
    SlaveRemoved {
        slave: String,
        master: String,
        dev_id: u16,
    },
    /// The slave is now in namespace `netns` (its name, or `net:[inode]`).
    SlaveMoved {
        slave: String,
        master: String,
        netns: String,
    },
    AddrLearned {
        slave: String,
        master: String,
        addr: String,
    },
    AddrForgotten {
        slave: String,
        master: String,
        addr: String,
    },
    /// A duplicate on the same master: removed again (the kernel's EADDRINUSE).
    AddrRefused {
        slave: String,
        master: String,
        addr: String,
        owner: String,
    },
    /// The port's mode, flags or source guard changed.
    ModeChanged {
        master: String,
        mode: Mode,
        flags: Flags,
        #[serde(default)]
        source_guard: bool,
    },
    MasterUp {
        master: String,
    },
    MasterDown {
        master: String,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SlaveAdded {
                slave,
                master,
                dev_id,
            } => {
                write!(f, "[slave] added {slave} on {master} (dev_id {dev_id:#x})")
            }
            Self::SlaveRemoved {
                slave,
                master,
                dev_id,
            } => {
                write!(
                    f,
                    "[slave] removed {slave} from {master} (dev_id {dev_id:#x})"
                )
            }
            Self::SlaveMoved {
                slave,
                master,
                netns,
            } => {
                write!(f, "[slave] {slave}@{master} now in netns {netns}")
            }
            Self::AddrLearned {
                slave,
                master,
                addr,
            } => {
                write!(f, "[addr] learned {addr} on {slave}@{master}")
            }
            Self::AddrForgotten {
                slave,
                master,
                addr,
            } => {
                write!(f, "[addr] forgot {addr} on {slave}@{master}")
            }
            Self::AddrRefused {
                slave,
                master,
                addr,
                owner,
            } => write!(
                f,
                "[addr] refused {addr} on {slave}@{master}: Address already assigned to an ipvlan device ({owner})"
            ),
            Self::ModeChanged {
                master,
                mode,
                flags,
                source_guard,
            } => {
                write!(
                    f,
                    "[port] {master} now mode {} {}{}",
                    mode.as_str(),
                    flags.as_str(),
                    if *source_guard {
                        " source_guard on"
                    } else {
                        ""
                    }
                )
            }
            Self::MasterUp { master } => write!(f, "[port] master {master} up"),
            Self::MasterDown { master } => write!(f, "[port] master {master} down"),
        }
    }
}

/// How a request ended, with iproute2's exit statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Ok = 0,
    Usage = 1,
    Refused = 2,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub status: Status,
    pub error: Option<String>,
    pub links: Vec<SlaveView>,
}

/// One slave as `link show` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlaveView {
    pub ifindex: u32,
    pub ifname: String,
    pub flags: Vec<String>,
    pub mtu: u32,
    pub operstate: String,
    pub address: String,
    /// Name of the namespace the slave is in (`ip netns` name), if it has one.
    pub netns: Option<String>,
    /// The namespace's identity (`net:[inode]`), always known when the slave is found.
    pub netns_id: Option<String>,
    pub master: String,
    pub master_netns: Option<String>,
    pub mode: Mode,
    pub port_flags: Flags,
    /// Whether the port's source guard is on (an ipvlan-rs extension).
    #[serde(default)]
    pub source_guard: bool,
    pub dev_id: u16,
    pub host_end: String,
    pub addrs: Vec<String>,
    pub counters: Counters,
    /// Which backend switches this slave's port: "kernel" or "user".
    pub backend: String,
    /// The kernel backend's BPF fast path is attached for the port.
    #[serde(default)]
    pub fast_path: bool,
}

/// Sends `req` with the caller's namespace and waits for the reply.
pub fn call(stream: &UnixStream, netns: &OwnedFd, req: &Request) -> io::Result<Reply> {
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    let sent = ipvlan_sys::unix::send_with_fd(stream, &line, netns.as_fd())?;
    (&*stream).write_all(&line[sent..])?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one request and the namespace descriptor that came with it.
pub fn receive(stream: &UnixStream) -> io::Result<(Request, OwnedFd)> {
    let mut first = vec![0u8; 64 * 1024];
    let (n, fd) = ipvlan_sys::unix::recv_with_fd(stream, &mut first)?;
    first.truncate(n);
    if !first.ends_with(b"\n") {
        let mut rest = Vec::new();
        BufReader::new(stream).read_until(b'\n', &mut rest)?;
        first.extend_from_slice(&rest);
    }
    let fd = fd.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "no namespace descriptor came with the request",
        )
    })?;
    let req = serde_json::from_slice(&first)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((req, fd))
}

pub fn send_reply(stream: &UnixStream, reply: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    (&*stream).write_all(&line)
}
