//! The control protocol between the daemon and its clients (the `ipvlan` CLI, the CNI
//! plugin).
//!
//! One request per connection on a Unix stream socket: the client sends one JSON line
//! together with a descriptor of its network namespace (SCM_RIGHTS) — masters and
//! device names are resolved in the caller's namespace, as `ip` does — and the daemon
//! answers with one JSON line. Requests and answers are typed ([`Request`], [`Reply`],
//! [`Notice`]); the values that reach the user (MACs, addresses, link flags, backend
//! names) serialise as the strings `ip -j` and `ipvlan -j` print.
#![forbid(unsafe_code)]

pub mod client;

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ipvlan_core::{Counters, Flags, MacAddr, Mode};
use ipvlan_sys::rtnl::{IFF_ALLMULTI, IFF_LOWER_UP, IFF_NOARP, IFF_PROMISC, IFF_UP};
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
    /// Host access (an ipvlan-rs extension): `None` leaves it as it is.
    #[serde(default)]
    pub host_access: Option<bool>,
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
        addr: IpAddr,
    },
    AddrForgotten {
        slave: String,
        master: String,
        addr: IpAddr,
    },
    /// A duplicate on the same master: removed again (the kernel's EADDRINUSE).
    AddrRefused {
        slave: String,
        master: String,
        addr: IpAddr,
        owner: String,
    },
    /// An address of the master's own namespace, on a slave of a port with host
    /// access on: removed again.
    AddrRefusedHost {
        slave: String,
        master: String,
        addr: IpAddr,
    },
    /// The port's mode, flags, source guard or host access changed.
    ModeChanged {
        master: String,
        mode: Mode,
        flags: Flags,
        #[serde(default)]
        source_guard: bool,
        #[serde(default)]
        host_access: bool,
    },
    MasterUp {
        master: String,
    },
    MasterDown {
        master: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            Self::AddrRefusedHost {
                slave,
                master,
                addr,
            } => write!(
                f,
                "[addr] refused {addr} on {slave}@{master}: an address of the master's namespace (host_access on)"
            ),
            Self::ModeChanged {
                master,
                mode,
                flags,
                source_guard,
                host_access,
            } => {
                write!(
                    f,
                    "[port] {master} now mode {} {}{}{}",
                    mode.as_str(),
                    flags.as_str(),
                    if *source_guard {
                        " source_guard on"
                    } else {
                        ""
                    },
                    if *host_access { " host_access on" } else { "" }
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

/// Which backend switches a port's unicast, as `link show -d` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Kernel,
    User,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::User => "user",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An interface flag as `ip link` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LinkFlag {
    Broadcast,
    Multicast,
    Noarp,
    Promisc,
    Allmulti,
    Up,
    LowerUp,
}

impl LinkFlag {
    /// The flags of a slave end whose `IFF_*` flags are `ifflags`, in `ip link`'s
    /// order. A veth end is always BROADCAST and MULTICAST.
    pub fn of_slave(ifflags: u32) -> Vec<LinkFlag> {
        let mut v = vec![Self::Broadcast, Self::Multicast];
        for (bit, flag) in [
            (IFF_NOARP, Self::Noarp),
            (IFF_PROMISC, Self::Promisc),
            (IFF_ALLMULTI, Self::Allmulti),
            (IFF_UP, Self::Up),
            (IFF_LOWER_UP, Self::LowerUp),
        ] {
            if ifflags & bit != 0 {
                v.push(flag);
            }
        }
        v
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broadcast => "BROADCAST",
            Self::Multicast => "MULTICAST",
            Self::Noarp => "NOARP",
            Self::Promisc => "PROMISC",
            Self::Allmulti => "ALLMULTI",
            Self::Up => "UP",
            Self::LowerUp => "LOWER_UP",
        }
    }
}

impl fmt::Display for LinkFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One slave as `link show` reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlaveView {
    pub ifindex: u32,
    pub ifname: String,
    pub flags: Vec<LinkFlag>,
    pub mtu: u32,
    pub operstate: String,
    /// The slave end's MAC (the master's); `None` when the slave is not found, sent
    /// as `""` as before the field was typed, so that a plugin and a daemon of
    /// different versions still understand each other.
    #[serde(with = "mac_or_empty")]
    pub address: Option<MacAddr>,
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
    /// Whether the port's host access is on (an ipvlan-rs extension).
    #[serde(default)]
    pub host_access: bool,
    pub dev_id: u16,
    pub host_end: String,
    /// The slave's addresses, sorted.
    pub addrs: Vec<IpAddr>,
    pub counters: Counters,
    /// Which backend switches this slave's port.
    pub backend: Backend,
    /// The kernel backend's BPF fast path is attached for the port.
    #[serde(default)]
    pub fast_path: bool,
}

mod mac_or_empty {
    use ipvlan_core::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(m) => s.collect_str(m),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_flags_in_ip_link_order_and_names() {
        let flags = LinkFlag::of_slave(IFF_LOWER_UP | IFF_UP | IFF_NOARP);
        assert_eq!(
            serde_json::to_string(&flags).unwrap(),
            r#"["BROADCAST","MULTICAST","NOARP","UP","LOWER_UP"]"#
        );
        let shown: Vec<String> = flags.iter().map(ToString::to_string).collect();
        assert_eq!(shown.join(","), "BROADCAST,MULTICAST,NOARP,UP,LOWER_UP");
        let back: Vec<LinkFlag> =
            serde_json::from_str(r#"["PROMISC","ALLMULTI","LOWER_UP"]"#).unwrap();
        assert_eq!(
            back,
            LinkFlag::of_slave(IFF_PROMISC | IFF_ALLMULTI | IFF_LOWER_UP)[2..]
        );
    }

    #[test]
    fn a_slave_view_is_sent_as_before_it_was_typed() {
        let view = |address| SlaveView {
            ifindex: 7,
            ifname: "ipvl0".into(),
            flags: LinkFlag::of_slave(IFF_UP),
            mtu: 1500,
            operstate: "UP".into(),
            address,
            netns: None,
            netns_id: None,
            master: "eth0".into(),
            master_netns: None,
            mode: Mode::L2,
            port_flags: Flags::Bridge,
            source_guard: false,
            host_access: false,
            dev_id: 1,
            host_end: "ivh2.1".into(),
            addrs: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            counters: Counters::default(),
            backend: Backend::Kernel,
            fast_path: true,
        };
        let found =
            serde_json::to_value(view(Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])))).unwrap();
        assert_eq!(found["address"], "52:54:00:12:34:56");
        assert_eq!(
            found["flags"],
            serde_json::json!(["BROADCAST", "MULTICAST", "UP"])
        );
        assert_eq!(found["addrs"], serde_json::json!(["10.0.0.1", "fd00::1"]));
        assert_eq!(found["backend"], "kernel");
        let lost = serde_json::to_value(view(None)).unwrap();
        assert_eq!(lost["address"], "");
        for v in [found, lost] {
            let back: SlaveView = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(back).unwrap(), v);
        }
    }

    #[test]
    fn backend_names() {
        for (b, name) in [(Backend::Kernel, "kernel"), (Backend::User, "user")] {
            assert_eq!(b.to_string(), name);
            assert_eq!(serde_json::to_value(b).unwrap(), name);
            assert_eq!(serde_json::from_value::<Backend>(name.into()).unwrap(), b);
        }
    }

    #[test]
    fn notices_carry_addresses_as_ip_prints_them() {
        let n = Notice::AddrRefused {
            slave: "ipvl1".into(),
            master: "eth0".into(),
            addr: "2001:db8::1".parse().unwrap(),
            owner: "ipvl0".into(),
        };
        let line = serde_json::to_string(&n).unwrap();
        assert_eq!(
            line,
            r#"{"event":"addr_refused","slave":"ipvl1","master":"eth0","addr":"2001:db8::1","owner":"ipvl0"}"#
        );
        assert_eq!(serde_json::from_str::<Notice>(&line).unwrap(), n);
        assert_eq!(
            n.to_string(),
            "[addr] refused 2001:db8::1 on ipvl1@eth0: Address already assigned to an ipvlan device (ipvl0)"
        );
    }
}
