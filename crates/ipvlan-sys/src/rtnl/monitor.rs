//! Event monitors: a socket in the rtnetlink multicast groups, which reads link, address,
//! multicast-group and netconf changes as [`Event`]s, tagged with their namespace id.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use super::Rtnetlink;
use super::addr::{mcast_of, parse_addr};
use super::link::parse_link;
use super::{Addr, Link, Mcast, Netconf, RTM_DELMULTICAST, RTM_NEWNETCONF, RtnlMessage};
use crate::NetNs;
use crate::netlink::{Socket, frames};

const SOL_NETLINK: i32 = 270;
const NETLINK_LISTEN_ALL_NSID: i32 = 8;

/// rtnetlink multicast groups a [`Monitor`] joins.
const GROUPS: [u32; 7] = [
    1,  // RTNLGRP_LINK
    5,  // RTNLGRP_IPV4_IFADDR
    9,  // RTNLGRP_IPV6_IFADDR
    24, // RTNLGRP_IPV4_NETCONF
    25, // RTNLGRP_IPV6_NETCONF
    37, // RTNLGRP_IPV4_MCADDR
    38, // RTNLGRP_IPV6_MCADDR
];

/// A change the kernel announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    NewLink(Link),
    DelLink(Link),
    NewAddr(Addr),
    DelAddr(Addr),
    NewMcast(Mcast),
    DelMcast(Mcast),
    /// A per-device or namespace-wide setting (forwarding, rp_filter, ...) changed
    /// (`RTM_NEWNETCONF`).
    Netconf(Netconf),
    /// The socket overflowed: events were lost, state must be read again.
    Overrun,
}

/// An event socket. It receives link, address and multicast-group changes of its own
/// namespace and of every namespace that has an id in it, each tagged with that id.
#[derive(Debug)]
pub struct Monitor {
    sock: Socket<Rtnetlink>,
    buf: Vec<u8>,
}

impl Monitor {
    /// A monitor in the calling thread's namespace.
    pub fn new() -> io::Result<Self> {
        let sock = Socket::open()?;
        let inner = sock.inner();
        for g in GROUPS {
            inner.add_membership(g)?;
        }
        inner.set_listen_all_namespaces(true)?;
        inner.set_non_blocking(true)?;
        let _ = inner.set_rx_buf_sz(4 << 20);
        debug_assert_eq!(SOL_NETLINK, libc::SOL_NETLINK);
        Ok(Self {
            sock,
            buf: vec![0; 1 << 18],
        })
    }

    /// A monitor inside `ns`.
    pub fn in_ns(ns: &NetNs) -> io::Result<Self> {
        ns.run(Self::new)?
    }

    /// Reads every pending event into `out` as (namespace id, event); the id is `None`
    /// for events of the monitor's own namespace. Returns when nothing is pending.
    pub fn read(&mut self, out: &mut Vec<(Option<i32>, Event)>) -> io::Result<()> {
        let mut cmsg = nix::cmsg_space!(i32);
        loop {
            let mut iov = [IoSliceMut::new(&mut self.buf)];
            let (n, nsid) = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(r) => {
                    let mut nsid = None;
                    if let Ok(cmsgs) = r.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::Unknown(u) = c
                                && u.cmsg_header.cmsg_level == SOL_NETLINK
                                && u.cmsg_header.cmsg_type == NETLINK_LISTEN_ALL_NSID
                                && u.data_bytes.len() >= 4
                            {
                                nsid = Some(i32::from_ne_bytes(
                                    u.data_bytes[..4].try_into().expect("4 bytes"),
                                ));
                            }
                        }
                    }
                    (r.bytes, nsid)
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::ENOBUFS) => {
                    out.push((None, Event::Overrun));
                    continue;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            // A message that does not decode is not an event ipvlan-rs knows.
            for frame in frames(&self.buf[..n]).map_while(|f| f.ok()) {
                if let Some(ev) = frame.decode().ok().and_then(to_event) {
                    out.push((nsid, ev));
                }
            }
        }
    }
}

impl AsRawFd for Monitor {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

pub(super) fn to_event(msg: RtnlMessage) -> Option<Event> {
    match msg {
        RtnlMessage::Netconf {
            message_type: RTM_NEWNETCONF,
            conf,
        } => Some(Event::Netconf(conf)),
        RtnlMessage::Netconf { .. } => None,
        RtnlMessage::Mcast { .. } => match mcast_of(msg)? {
            (RTM_DELMULTICAST, m) => Some(Event::DelMcast(m)),
            (_, m) => Some(Event::NewMcast(m)),
        },
        RtnlMessage::Route(msg) => match msg {
            // A bridge's view of its ports (`AF_BRIDGE`): a port leaving its bridge is
            // an RTM_DELLINK of this family, though the device stays. The device's own
            // messages (`AF_UNSPEC`) say everything that changed.
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l)
                if l.header.interface_family == AddressFamily::Bridge =>
            {
                None
            }
            RouteNetlinkMessage::NewLink(l) => Some(Event::NewLink(parse_link(l))),
            RouteNetlinkMessage::DelLink(l) => Some(Event::DelLink(parse_link(l))),
            RouteNetlinkMessage::NewAddress(a) => parse_addr(a).map(Event::NewAddr),
            RouteNetlinkMessage::DelAddress(a) => parse_addr(a).map(Event::DelAddr),
            _ => None,
        },
    }
}
