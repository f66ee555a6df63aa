//! rtnetlink: link, address, route, rule, traffic-control and namespace-id requests,
//! and event monitors.
//!
//! A socket belongs to the namespace it was created in ([`Rtnl::in_ns`] creates one
//! inside another namespace). Requests are synchronous: one request, then its
//! answers until the acknowledgement or the end of the dump (the framing is
//! [`crate::netlink`]'s). Messages are built and parsed with `netlink-packet-route`;
//! the multicast-address messages it does not know (`RTM_NEWMULTICAST` and friends)
//! are [`RtnlMessage::Mcast`], encoded here.

use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NetlinkDeserializable, NetlinkHeader, NetlinkSerializable,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::NetNs;
use crate::netlink::{self, Rtnetlink, Socket, frames};
use crate::sock::{abi_u8, fd_u32, ifindex_c};

const RTM_NEWMULTICAST: u16 = 56;
const RTM_DELMULTICAST: u16 = 57;
const RTM_GETMULTICAST: u16 = 58;
const IFA_MULTICAST: u16 = 7;
const RTM_NEWNETCONF: u16 = 80;
const RTM_DELNETCONF: u16 = 81;
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

pub const IFF_UP: u32 = libc::IFF_UP as u32;
pub const IFF_NOARP: u32 = libc::IFF_NOARP as u32;
pub const IFF_PROMISC: u32 = libc::IFF_PROMISC as u32;
pub const IFF_ALLMULTI: u32 = libc::IFF_ALLMULTI as u32;
pub const IFF_LOWER_UP: u32 = 1 << 16;
pub const IFF_LOOPBACK: u32 = libc::IFF_LOOPBACK as u32;

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("netlink: {0}")]
    Io(#[from] io::Error),
    #[error("RTNETLINK answers: {}", nix::errno::Errno::from_raw(*errno).desc())]
    Kernel { errno: i32 },
    #[error("cannot decode a netlink message: {0}")]
    Decode(String),
}

impl From<netlink::Error> for RtnlError {
    fn from(e: netlink::Error) -> Self {
        match e {
            netlink::Error::Io(e) => Self::Io(e),
            netlink::Error::Kernel { errno } => Self::Kernel { errno },
            netlink::Error::Decode(m) => Self::Decode(m),
        }
    }
}

impl RtnlError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno } => Some(*errno),
            Self::Io(e) => e.raw_os_error(),
            Self::Decode(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, RtnlError>;

/// What ipvlan-rs needs to know of a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("veth", "macvlan", ...), if any.
    pub kind: Option<String>,
    /// `ARPHRD_*` link-layer type.
    pub arphrd: u16,
    pub flags: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in `link_netnsid`'s namespace).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the namespace id of `link`, when it is elsewhere.
    pub link_netnsid: Option<i32>,
    /// `IFLA_MASTER`: the bridge or bond this device is a port of.
    pub controller: Option<u32>,
    pub alias: Option<String>,
    /// In a `RTM_DELLINK` for a move: the namespace id (in the old namespace) and the
    /// ifindex the link has there now.
    pub new_netnsid: Option<i32>,
    pub new_ifindex: Option<u32>,
    pub operstate: &'static str,
    pub promiscuity: u32,
    pub stats: Option<LinkStats>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }
    pub fn is_ether(&self) -> bool {
        self.arphrd == libc::ARPHRD_ETHER
    }
    pub fn is_loopback(&self) -> bool {
        self.flags & IFF_LOOPBACK != 0 || self.arphrd == libc::ARPHRD_LOOPBACK
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// An address whose duplicate address detection has not finished.
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// An address whose duplicate address detection found a duplicate.
pub const IFA_F_DADFAILED: u32 = 0x08;

/// An interface address (`ifa_address`, spec §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix: u8,
}

/// A multicast group joined on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mcast {
    pub index: u32,
    pub group: IpAddr,
}

/// A change the kernel announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    NewLink(Link),
    DelLink(Link),
    NewAddr(Addr),
    DelAddr(Addr),
    NewMcast(Mcast),
    DelMcast(Mcast),
    /// A per-device or namespace-wide setting (forwarding, rp_filter, ...) changed:
    /// `RTM_NEWNETCONF` of this family (`AF_INET`, `AF_INET6`); read the sysctls again.
    Netconf(u8),
    /// The socket overflowed: events were lost, state must be read again.
    Overrun,
}

/// Changes to an existing link, applied with one `RTM_SETLINK`.
#[derive(Clone, Debug, Default)]
pub struct LinkChange {
    pub flags_set: u32,
    pub flags_clear: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub alias: Option<String>,
    pub name: Option<String>,
    /// IPv6 address generation: `Some(false)` = none (no link-local), `Some(true)` = eui64.
    pub ipv6_autoconf: Option<bool>,
    /// Move the link into this namespace (a descriptor, `IFLA_NET_NS_FD`).
    pub netns_fd: Option<RawFd>,
    /// `IFLA_MASTER`: make the link a port of this bridge or bond; `Some(0)` detaches it.
    pub controller: Option<u32>,
}

/// A veth pair to create.
#[derive(Clone, Debug)]
pub struct VethSpec<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub peer_name: &'a str,
    pub peer_mtu: u32,
    /// Create the peer in this namespace (a descriptor) instead of the request's own.
    pub peer_netns_fd: Option<RawFd>,
}

/// The main routing table (`RT_TABLE_MAIN`).
pub const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A unicast route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination network (the unspecified address for a default route).
    pub dst: IpAddr,
    pub prefix: u8,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    /// The metric.
    pub priority: Option<u32>,
}

/// The protocol number ipvlan-rs gives the routes and neighbour entries it makes
/// (`ip route` and `ip neigh` show `proto 250`), by which it finds them again.
pub const PROTO_IPVLAN: u8 = 0xfa;

/// A host route, neighbour entry or proxy entry of ipvlan-rs's own ([`PROTO_IPVLAN`]):
/// one address on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnEntry {
    pub ip: IpAddr,
    pub index: u32,
}

/// Which of [`OwnEntry`]'s kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnKind {
    /// `ip route add IP dev DEV proto 250` (main table, scope link).
    Route,
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent proto 250`.
    Neighbour([u8; 6]),
    /// `ip -6 neigh add proxy IP dev DEV proto 250`.
    Proxy,
}

/// A message of `NETLINK_ROUTE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtnlMessage {
    /// Everything `netlink-packet-route` knows.
    Route(RouteNetlinkMessage),
    /// `RTM_{NEW,DEL,GET}MULTICAST`: an `ifaddrmsg` (family, interface) and the group.
    Mcast {
        message_type: u16,
        family: u8,
        index: u32,
        group: Option<IpAddr>,
    },
    /// `RTM_{NEW,DEL}NETCONF`: a `netconfmsg` (family); its attributes are not read.
    Netconf { message_type: u16, family: u8 },
}

/// Length of `struct netconfmsg` (one byte), aligned.
const NETCONFMSG_LEN: usize = 4;

/// Length of `struct ifaddrmsg`.
const IFADDRMSG_LEN: usize = 8;

impl NetlinkSerializable for RtnlMessage {
    fn message_type(&self) -> u16 {
        match self {
            Self::Route(m) => m.message_type(),
            Self::Mcast { message_type, .. } | Self::Netconf { message_type, .. } => *message_type,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            Self::Route(m) => m.buffer_len(),
            Self::Mcast { group, .. } => {
                IFADDRMSG_LEN + group.map_or(0, |g| 4 + if g.is_ipv4() { 4 } else { 16 })
            }
            Self::Netconf { .. } => NETCONFMSG_LEN,
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            Self::Route(m) => m.serialize(buffer),
            Self::Mcast {
                family,
                index,
                group,
                ..
            } => {
                buffer[..IFADDRMSG_LEN].fill(0);
                buffer[0] = *family;
                buffer[4..8].copy_from_slice(&index.to_ne_bytes());
                if let Some(g) = group {
                    let octets = match g {
                        IpAddr::V4(v4) => v4.octets().to_vec(),
                        IpAddr::V6(v6) => v6.octets().to_vec(),
                    };
                    let len = 4 + u16::try_from(octets.len()).expect("4 or 16 octets");
                    buffer[8..10].copy_from_slice(&len.to_ne_bytes());
                    buffer[10..12].copy_from_slice(&IFA_MULTICAST.to_ne_bytes());
                    buffer[12..].copy_from_slice(&octets);
                }
            }
            Self::Netconf { family, .. } => {
                buffer[..NETCONFMSG_LEN].fill(0);
                buffer[0] = *family;
            }
        }
    }
}

impl NetlinkDeserializable for RtnlMessage {
    type Error = DecodeError;

    fn deserialize(
        header: &NetlinkHeader,
        payload: &[u8],
    ) -> std::result::Result<Self, DecodeError> {
        match header.message_type {
            RTM_NEWMULTICAST | RTM_DELMULTICAST | RTM_GETMULTICAST => {
                let (family, index, group) = parse_mcast(payload)
                    .ok_or_else(|| DecodeError::from("a malformed multicast-address message"))?;
                Ok(Self::Mcast {
                    message_type: header.message_type,
                    family,
                    index,
                    group,
                })
            }
            RTM_NEWNETCONF | RTM_DELNETCONF => Ok(Self::Netconf {
                message_type: header.message_type,
                family: *payload
                    .first()
                    .ok_or_else(|| DecodeError::from("an empty netconf message"))?,
            }),
            _ => RouteNetlinkMessage::deserialize(header, payload).map(Self::Route),
        }
    }
}

/// A request socket.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket<Rtnetlink>,
}

fn parse_link(msg: LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        arphrd: u16::from(msg.header.link_layer_type),
        flags: msg.header.flags.bits(),
        operstate: "UNKNOWN",
        ..Default::default()
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::Address(m) if m.len() == 6 => {
                l.mac = Some(m.try_into().expect("length checked"))
            }
            LinkAttribute::Mtu(m) => l.mtu = m,
            LinkAttribute::Link(i) => l.link = Some(i),
            LinkAttribute::LinkNetNsId(i) => l.link_netnsid = Some(i),
            LinkAttribute::Controller(i) => l.controller = Some(i),
            LinkAttribute::IfAlias(s) => l.alias = Some(s),
            LinkAttribute::NewNetnsId(i) => l.new_netnsid = Some(i),
            LinkAttribute::NewIfIndex(i) => l.new_ifindex = u32::try_from(i).ok(),
            LinkAttribute::Promiscuity(p) => l.promiscuity = p,
            LinkAttribute::OperState(s) => {
                l.operstate = match s {
                    State::Up => "UP",
                    State::Down => "DOWN",
                    State::LowerLayerDown => "LOWERLAYERDOWN",
                    State::Dormant => "DORMANT",
                    State::Testing => "TESTING",
                    State::NotPresent => "NOTPRESENT",
                    _ => "UNKNOWN",
                }
            }
            LinkAttribute::Stats64(s) => {
                l.stats = Some(LinkStats {
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    rx_dropped: s.rx_dropped,
                    tx_dropped: s.tx_dropped,
                })
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn parse_addr(msg: AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    for a in msg.attributes {
        match a {
            AddressAttribute::Address(ip) => address = Some(ip),
            AddressAttribute::Local(ip) => local = Some(ip),
            _ => {}
        }
    }
    // `ifa_address` is what the kernel driver records (spec §2.1); IPv6 carries only it.
    Some(Addr {
        index: msg.header.index,
        ip: address.or(local)?,
        prefix: msg.header.prefix_len,
    })
}

/// Parses the body of an `RTM_*MULTICAST` message: (family, interface, group). The
/// group is `None` when the message carries no `IFA_MULTICAST` (a request) or one that
/// is no address of the family.
fn parse_mcast(body: &[u8]) -> Option<(u8, u32, Option<IpAddr>)> {
    let family = *body.first()?;
    let index = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    for (ty, val) in netlink::attrs(body.get(IFADDRMSG_LEN..)?) {
        if ty == IFA_MULTICAST {
            let group = match (i32::from(family), val.len()) {
                (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(val).ok()?)),
                (libc::AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(val).ok()?)),
                _ => return Some((family, index, None)),
            };
            return Some((family, index, Some(group)));
        }
    }
    Some((family, index, None))
}

fn mcast_of(msg: RtnlMessage) -> Option<(u16, Mcast)> {
    match msg {
        RtnlMessage::Mcast {
            message_type,
            index,
            group: Some(group),
            ..
        } => Some((message_type, Mcast { index, group })),
        _ => None,
    }
}

fn to_event(msg: RtnlMessage) -> Option<Event> {
    match msg {
        RtnlMessage::Netconf {
            message_type: RTM_NEWNETCONF,
            family,
        } => Some(Event::Netconf(family)),
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

fn ip_family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The broadcast address of an IPv4 subnet that has one (a prefix shorter than /31).
fn broadcast(ip: IpAddr, prefix: u8) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) if prefix < 31 => Some(Ipv4Addr::from(u32::from(v4) | (u32::MAX >> prefix))),
        _ => None,
    }
}

fn route_ip(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

fn parse_route(r: RouteMessage) -> Route {
    let mut route = Route {
        dst: match r.header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        },
        prefix: r.header.destination_prefix_length,
        gw: None,
        oif: None,
        table: u32::from(r.header.table),
        priority: None,
    };
    for a in r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = route_ip(d) {
                    route.dst = ip;
                }
            }
            RouteAttribute::Gateway(g) => route.gw = route_ip(g),
            RouteAttribute::Oif(o) => route.oif = Some(o),
            RouteAttribute::Table(t) => route.table = t,
            RouteAttribute::Priority(p) => route.priority = Some(p),
            _ => {}
        }
    }
    route
}

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

impl Rtnl {
    /// A request socket in the calling thread's namespace.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            sock: Socket::open()?,
        })
    }

    /// A request socket inside `ns`.
    pub fn in_ns(ns: &NetNs) -> io::Result<Self> {
        ns.run(Self::new)?
    }

    /// Sends a request and collects its answers until the ACK or the end of the dump.
    /// A request that is not a dump asks for an ACK, so its end is always marked.
    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RtnlMessage>> {
        let flags = if flags & NLM_F_DUMP == NLM_F_DUMP {
            flags
        } else {
            flags | NLM_F_ACK
        };
        Ok(self.sock.request(RtnlMessage::Route(msg), flags)?)
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.exchange(msg, flags).map(drop)
    }

    fn links_matching(&mut self, msg: LinkMessage, flags: u16) -> Result<Vec<Link>> {
        let answers = self.exchange(RouteNetlinkMessage::GetLink(msg), flags)?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RtnlMessage::Route(RouteNetlinkMessage::NewLink(l)) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// Every link of this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        self.links_matching(LinkMessage::default(), NLM_F_DUMP)
    }

    fn one_link(&mut self, msg: LinkMessage) -> Result<Option<Link>> {
        match self.links_matching(msg, 0) {
            Ok(mut v) => Ok(v.pop()),
            Err(RtnlError::Kernel { errno }) if errno == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        self.one_link(link_msg(index))
    }

    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.one_link(m)
    }

    /// Creates a veth pair; both ends start down.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(spec.peer_name.to_string()),
            LinkAttribute::Mtu(spec.peer_mtu),
        ];
        if let Some(fd) = spec.peer_netns_fd {
            peer.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        let mut m = LinkMessage::default();
        m.attributes = vec![
            LinkAttribute::IfName(spec.name.to_string()),
            LinkAttribute::Address(spec.mac.to_vec()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn set_link(&mut self, index: u32, c: &LinkChange) -> Result<()> {
        let mut m = link_msg(index);
        m.header.flags = LinkFlags::from_bits_retain(c.flags_set);
        m.header.change_mask = LinkFlags::from_bits_retain(c.flags_set | c.flags_clear);
        if let Some(mac) = c.mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = c.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(alias) = &c.alias {
            m.attributes.push(LinkAttribute::IfAlias(alias.clone()));
        }
        if let Some(name) = &c.name {
            m.attributes.push(LinkAttribute::IfName(name.clone()));
        }
        if let Some(fd) = c.netns_fd {
            m.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        if let Some(c) = c.controller {
            m.attributes.push(LinkAttribute::Controller(c));
        }
        if let Some(auto) = c.ipv6_autoconf {
            let mode = if auto {
                In6AddrGenMode::Eui64
            } else {
                In6AddrGenMode::None
            };
            m.attributes
                .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                    vec![AfSpecInet6::AddrGenMode(mode)],
                )]));
        }
        self.ack(RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Puts the `sched_cls` program `prog` (descriptor, name) on device `index`'s
    /// ingress as a direct-action `bpf` filter under a `clsact` qdisc (made if missing),
    /// in place of the one a previous call put there; with `None`, removes that filter.
    /// (A device deleted with a filter like this costs no extra RCU grace period, where
    /// a tcx attachment does.)
    pub fn set_ingress_bpf(&mut self, index: u32, prog: Option<(i32, &str)>) -> Result<()> {
        // The filter's priority, and ETH_P_ALL in network order: tcm_info.
        const INFO: u32 = (1 << 16) | 0x0300;
        let index = ifindex_c(index)?;
        let filter = |attributes| {
            let mut m = TcMessage::default();
            m.header = TcHeader {
                index,
                handle: TcHandle { major: 0, minor: 1 },
                parent: TcHandle {
                    major: u16::MAX,
                    minor: TcHandle::MIN_INGRESS,
                },
                info: INFO,
                ..Default::default()
            };
            m.attributes = attributes;
            m
        };
        let Some((fd, name)) = prog else {
            let mut m = filter(vec![]);
            m.header.handle = TcHandle::UNSPEC;
            return match self.ack(RouteNetlinkMessage::DelTrafficFilter(m), 0) {
                // No qdisc, or no filter there: nothing to remove.
                Err(RtnlError::Kernel { errno })
                    if errno == libc::ENOENT || errno == libc::EINVAL =>
                {
                    Ok(())
                }
                r => r,
            };
        };
        let prog_fd = u32::try_from(fd).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "a negative program descriptor")
        })?;
        let mut q = TcMessage::default();
        q.header = TcHeader {
            index,
            handle: TcHandle {
                major: u16::MAX,
                minor: 0,
            },
            parent: TcHandle::CLSACT,
            ..Default::default()
        };
        q.attributes = vec![TcAttribute::Kind("clsact".into())];
        match self.ack(
            RouteNetlinkMessage::NewQueueDiscipline(q),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(RtnlError::Kernel { errno }) if errno == libc::EEXIST => {}
            r => r?,
        }
        let m = filter(vec![
            TcAttribute::Kind("bpf".into()),
            TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd)),
                TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
                TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            ]),
        ]);
        self.ack(RouteNetlinkMessage::NewTrafficFilter(m), NLM_F_CREATE)
    }

    pub fn del_link(&mut self, index: u32) -> Result<()> {
        self.ack(RouteNetlinkMessage::DelLink(link_msg(index)), 0)
    }

    /// Every address of this namespace (IPv4 and IPv6).
    pub fn addrs(&mut self) -> Result<Vec<Addr>> {
        let answers = self.exchange(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RtnlMessage::Route(RouteNetlinkMessage::NewAddress(a)) => parse_addr(a),
                _ => None,
            })
            .collect())
    }

    /// Every address of this namespace with its `IFA_F_*` flags (`IFA_FLAGS` when the
    /// kernel sends it, else the header's eight bits): whether DAD is still running
    /// ([`IFA_F_TENTATIVE`]) or failed ([`IFA_F_DADFAILED`]).
    pub fn addrs_with_flags(&mut self) -> Result<Vec<(Addr, u32)>> {
        let answers = self.exchange(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RtnlMessage::Route(RouteNetlinkMessage::NewAddress(a)) => {
                    let flags = a
                        .attributes
                        .iter()
                        .find_map(|at| match at {
                            AddressAttribute::Flags(f) => Some(f.bits()),
                            _ => None,
                        })
                        .unwrap_or_else(|| u32::from(a.header.flags.bits()));
                    parse_addr(a).map(|addr| (addr, flags))
                }
                _ => None,
            })
            .collect())
    }

    fn addr_msg(a: &Addr) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = ip_family(a.ip);
        m.header.prefix_len = a.prefix;
        m.header.index = a.index;
        m.attributes.push(AddressAttribute::Local(a.ip));
        m.attributes.push(AddressAttribute::Address(a.ip));
        m
    }

    pub fn add_addr(&mut self, a: &Addr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewAddress(Self::addr_msg(a)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_addr(&mut self, a: &Addr) -> Result<()> {
        self.ack(RouteNetlinkMessage::DelAddress(Self::addr_msg(a)), 0)
    }

    /// `ip addr add IP/PREFIX brd + dev DEV`: as [`Rtnl::add_addr`], and an IPv4
    /// address with a prefix shorter than /31 gets its subnet's broadcast address.
    pub fn add_addr_with_broadcast(&mut self, a: &Addr) -> Result<()> {
        let mut m = Self::addr_msg(a);
        if let Some(brd) = broadcast(a.ip, a.prefix) {
            m.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// The unicast routes of every table (IPv4 and IPv6).
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            for answer in self.exchange(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)? {
                if let RtnlMessage::Route(RouteNetlinkMessage::NewRoute(r)) = answer
                    && r.header.kind == RouteType::Unicast
                {
                    out.push(parse_route(r));
                }
            }
        }
        Ok(out)
    }

    /// `ip route add DST/PREFIX [via GW] [dev OIF] [metric PRIORITY] table TABLE proto
    /// boot`: scope link without a gateway, universe with one.
    pub fn add_route(&mut self, r: &Route) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = ip_family(r.dst);
        m.header.destination_prefix_length = r.prefix;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if r.gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        m.header.table = u8::try_from(r.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.attributes.push(RouteAttribute::Table(r.table));
        if r.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
        }
        if let Some(gw) = r.gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = r.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(p) = r.priority {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Every route (main table), neighbour and proxy entry that carries
    /// [`PROTO_IPVLAN`].
    pub fn own_entries(&mut self) -> Result<Vec<(OwnKind, OwnEntry)>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            let mut answers = self.exchange(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)?;
            for proxy in [false, true] {
                let mut m = NeighbourMessage::default();
                m.header.family = family;
                if proxy {
                    m.header.flags = NeighbourFlags::Proxy;
                }
                answers.extend(self.exchange(RouteNetlinkMessage::GetNeighbour(m), NLM_F_DUMP)?);
            }
            for answer in answers {
                match answer {
                    RtnlMessage::Route(RouteNetlinkMessage::NewRoute(r))
                        if u8::from(r.header.protocol) == PROTO_IPVLAN =>
                    {
                        let r = parse_route(r);
                        if let Some(index) = r.oif {
                            out.push((OwnKind::Route, OwnEntry { ip: r.dst, index }));
                        }
                    }
                    RtnlMessage::Route(RouteNetlinkMessage::NewNeighbour(n)) => {
                        let (mut ip, mut mac, mut ours) = (None, [0u8; 6], false);
                        for a in &n.attributes {
                            match a {
                                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                                    ip = Some(IpAddr::V4(*v4));
                                }
                                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                                    ip = Some(IpAddr::V6(*v6));
                                }
                                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                                    mac.copy_from_slice(l);
                                }
                                NeighbourAttribute::Protocol(p) => {
                                    ours = u8::from(*p) == PROTO_IPVLAN;
                                }
                                _ => {}
                            }
                        }
                        let kind = if n.header.flags.contains(NeighbourFlags::Proxy) {
                            OwnKind::Proxy
                        } else {
                            OwnKind::Neighbour(mac)
                        };
                        if let (Some(ip), true) = (ip, ours) {
                            let index = n.header.ifindex;
                            out.push((kind, OwnEntry { ip, index }));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Adds (`add`) or removes an entry of `kind`, marked [`PROTO_IPVLAN`]. A neighbour
    /// entry replaces one that is there; a route does not: then `Ok(false)`. Removing
    /// what is not there is no error.
    pub fn set_own_entry(&mut self, kind: OwnKind, e: OwnEntry, add: bool) -> Result<bool> {
        let proto = RouteProtocol::from(PROTO_IPVLAN);
        let res = match kind {
            OwnKind::Route => {
                let mut m = RouteMessage::default();
                m.header.address_family = ip_family(e.ip);
                m.header.destination_prefix_length = if e.ip.is_ipv4() { 32 } else { 128 };
                m.header.protocol = proto;
                m.header.scope = RouteScope::Link;
                m.header.kind = RouteType::Unicast;
                m.header.table = RouteHeader::RT_TABLE_MAIN;
                m.attributes = vec![
                    RouteAttribute::Destination(RouteAddress::from(e.ip)),
                    RouteAttribute::Oif(e.index),
                ];
                if add {
                    self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
                } else {
                    self.ack(RouteNetlinkMessage::DelRoute(m), 0)
                }
            }
            OwnKind::Neighbour(_) | OwnKind::Proxy => {
                let mut m = NeighbourMessage::default();
                m.header.family = ip_family(e.ip);
                m.header.ifindex = e.index;
                m.attributes
                    .push(NeighbourAttribute::Destination(match e.ip {
                        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
                    }));
                if let OwnKind::Neighbour(mac) = kind {
                    m.header.state = NeighbourState::Permanent;
                    m.attributes
                        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                } else {
                    m.header.flags = NeighbourFlags::Proxy;
                }
                m.attributes.push(NeighbourAttribute::Protocol(proto));
                if add {
                    self.ack(
                        RouteNetlinkMessage::NewNeighbour(m),
                        NLM_F_CREATE | NLM_F_REPLACE,
                    )
                } else {
                    self.ack(RouteNetlinkMessage::DelNeighbour(m), 0)
                }
            }
        };
        match res {
            Ok(()) => Ok(true),
            Err(RtnlError::Kernel { errno }) if add && errno == libc::EEXIST => Ok(false),
            Err(RtnlError::Kernel { errno })
                if !add
                    && (errno == libc::ENOENT || errno == libc::ESRCH || errno == libc::ENODEV) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Multicast groups joined on every interface (IPv4 and IPv6).
    pub fn mcasts(&mut self) -> Result<Vec<Mcast>> {
        let mut out = Vec::new();
        for family in const { [abi_u8(libc::AF_INET), abi_u8(libc::AF_INET6)] } {
            let req = RtnlMessage::Mcast {
                message_type: RTM_GETMULTICAST,
                family,
                index: 0,
                group: None,
            };
            for m in self.sock.request(req, NLM_F_DUMP)? {
                out.extend(mcast_of(m).map(|(_, m)| m));
            }
        }
        Ok(out)
    }

    /// `ip [-6] rule add fwmark MARK lookup TABLE pref PREF` (`add`), or its removal.
    pub fn fwmark_rule(
        &mut self,
        add: bool,
        v6: bool,
        mark: u32,
        table: u32,
        pref: u32,
    ) -> Result<()> {
        let mut m = RuleMessage::default();
        m.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.header.action = RuleAction::ToTable;
        m.attributes = vec![
            RuleAttribute::FwMark(mark),
            RuleAttribute::FwMask(u32::MAX),
            RuleAttribute::Table(table),
            RuleAttribute::Priority(pref),
        ];
        if add {
            self.ack(RouteNetlinkMessage::NewRule(m), NLM_F_CREATE | NLM_F_EXCL)
        } else {
            self.ack(RouteNetlinkMessage::DelRule(m), 0)
        }
    }

    /// `ip [-6] route add local default dev DEV table TABLE` (`add`), or its removal:
    /// everything looked up in TABLE is delivered locally.
    pub fn local_default_route(&mut self, add: bool, v6: bool, table: u32, dev: u32) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.header.kind = RouteType::Local;
        m.header.scope = RouteScope::Host;
        m.header.protocol = RouteProtocol::Static;
        m.attributes = vec![RouteAttribute::Table(table), RouteAttribute::Oif(dev)];
        if add {
            self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
        } else {
            self.ack(RouteNetlinkMessage::DelRoute(m), 0)
        }
    }

    /// `ip [-6] rule add iif IIF pref PREF lookup TABLE` (`Some(TABLE)`) or `... blackhole`
    /// (`None`) (`add`), or its removal.
    pub fn iif_rule(
        &mut self,
        add: bool,
        v6: bool,
        iif: &str,
        table: Option<u32>,
        pref: u32,
    ) -> Result<()> {
        let mut m = RuleMessage::default();
        m.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.attributes = vec![
            RuleAttribute::Iifname(iif.to_string()),
            RuleAttribute::Priority(pref),
        ];
        match table {
            Some(t) => {
                m.header.action = RuleAction::ToTable;
                m.attributes.push(RuleAttribute::Table(t));
            }
            None => m.header.action = RuleAction::Blackhole,
        }
        if add {
            self.ack(RouteNetlinkMessage::NewRule(m), NLM_F_CREATE | NLM_F_EXCL)
        } else {
            self.ack(RouteNetlinkMessage::DelRule(m), 0)
        }
    }

    /// The priorities of the rules of one family that match packets arriving on
    /// `iif`, each with its table (`None` for a blackhole rule).
    pub fn iif_rules(&mut self, v6: bool, iif: &str) -> Result<Vec<(u32, Option<u32>)>> {
        let mut m = RuleMessage::default();
        m.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let mut out = Vec::new();
        for answer in self.exchange(RouteNetlinkMessage::GetRule(m), NLM_F_DUMP)? {
            let RtnlMessage::Route(RouteNetlinkMessage::NewRule(r)) = answer else {
                continue;
            };
            let mut on = false;
            let (mut pref, mut table) = (0, u32::from(r.header.table));
            for a in &r.attributes {
                match a {
                    RuleAttribute::Iifname(n) => on = n == iif,
                    RuleAttribute::Priority(p) => pref = *p,
                    RuleAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if on {
                let table = (r.header.action == RuleAction::ToTable).then_some(table);
                out.push((pref, table));
            }
        }
        Ok(out)
    }

    /// `ip route del DST/PREFIX [dev OIF] table TABLE` (any gateway, type or metric).
    pub fn del_route(&mut self, r: &Route) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = ip_family(r.dst);
        m.header.destination_prefix_length = r.prefix;
        m.header.table = u8::try_from(r.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.header.scope = RouteScope::NoWhere;
        m.attributes.push(RouteAttribute::Table(r.table));
        if r.prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
        }
        if let Some(oif) = r.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        self.ack(RouteNetlinkMessage::DelRoute(m), 0)
    }

    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent` (`Some(MAC)`), or
    /// `ip neigh del IP dev DEV` (`None`).
    pub fn permanent_neighbour(
        &mut self,
        dev: u32,
        ip: IpAddr,
        mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = ip_family(ip);
        m.header.ifindex = dev;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
        match mac {
            Some(mac) => {
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                self.ack(
                    RouteNetlinkMessage::NewNeighbour(m),
                    NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
                )
            }
            None => self.ack(RouteNetlinkMessage::DelNeighbour(m), 0),
        }
    }

    /// The id this namespace gives to `ns` (`RTM_GETNSID`), if it has one.
    pub fn nsid_of(&mut self, ns: &NetNs) -> Result<Option<i32>> {
        let mut m = NsidMessage::default();
        m.attributes.push(NsidAttribute::Fd(fd_u32(ns.as_raw_fd())));
        for answer in self.exchange(RouteNetlinkMessage::GetNsId(m), 0)? {
            if let RtnlMessage::Route(RouteNetlinkMessage::NewNsId(r)) = answer {
                for a in r.attributes {
                    if let NsidAttribute::Id(id) = a {
                        return Ok((id >= 0).then_some(id));
                    }
                }
            }
        }
        Ok(None)
    }
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

/// The ARPHRD value of Ethernet devices, for callers that compare link types.
pub const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::netlink::{NLMSG_HDRLEN, encode};
    use netlink_packet_core::{NLM_F_MULTIPART, NLM_F_REQUEST};

    fn decode_one(bytes: &[u8]) -> RtnlMessage {
        let f: Vec<_> = frames(bytes)
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(f.len(), 1);
        f[0].decode().unwrap()
    }

    #[test]
    fn parses_an_ipv6_multicast_message() {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(&[abi_u8(libc::AF_INET6), 128, 0, 0]);
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&20u16.to_ne_bytes());
        m.extend_from_slice(&IFA_MULTICAST.to_ne_bytes());
        let g: Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
        m.extend_from_slice(&g.octets());
        let len = u32::try_from(m.len()).unwrap();
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&RTM_NEWMULTICAST.to_ne_bytes());
        let msg = decode_one(&m);
        assert_eq!(
            to_event(msg.clone()),
            Some(Event::NewMcast(Mcast {
                index: 7,
                group: IpAddr::V6(g)
            }))
        );
        // Encoded here, it decodes to the same message.
        assert_eq!(decode_one(&encode(msg.clone(), 0, 0)), msg);
        assert!(frames(&m[..m.len() - 1]).next().unwrap().is_err());
        // A group of the wrong length for its family is no event.
        m[NLMSG_HDRLEN] = abi_u8(libc::AF_INET);
        assert_eq!(to_event(decode_one(&m)), None);
        // A message too short for its ifaddrmsg does not decode.
        let mut short = m[..NLMSG_HDRLEN + 4].to_vec();
        let len = u32::try_from(short.len()).unwrap();
        short[0..4].copy_from_slice(&len.to_ne_bytes());
        assert!(
            frames(&short)
                .next()
                .unwrap()
                .unwrap()
                .decode::<RtnlMessage>()
                .is_err()
        );
    }

    #[test]
    fn a_multicast_dump_request_is_an_ifaddrmsg() {
        let req = RtnlMessage::Mcast {
            message_type: RTM_GETMULTICAST,
            family: abi_u8(libc::AF_INET6),
            index: 0,
            group: None,
        };
        let bytes = encode(req.clone(), NLM_F_REQUEST | NLM_F_DUMP, 3);
        assert_eq!(bytes.len(), NLMSG_HDRLEN + IFADDRMSG_LEN);
        assert_eq!(bytes[NLMSG_HDRLEN], abi_u8(libc::AF_INET6));
        assert_eq!(decode_one(&bytes), req);
    }

    #[test]
    fn links_routes_and_addresses_round_trip() {
        let mut l = link_msg(4);
        l.attributes = vec![
            LinkAttribute::IfName("ipvl0".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Mtu(1500),
            LinkAttribute::LinkNetNsId(3),
        ];
        let bytes = encode(
            RtnlMessage::Route(RouteNetlinkMessage::NewLink(l)),
            NLM_F_MULTIPART,
            1,
        );
        let RtnlMessage::Route(RouteNetlinkMessage::NewLink(l)) = decode_one(&bytes) else {
            panic!("not a link")
        };
        let link = parse_link(l);
        assert_eq!(
            (link.index, link.name.as_str(), link.mac, link.mtu),
            (4, "ipvl0", Some([2, 0, 0, 0, 0, 1]), 1500)
        );
        assert_eq!(link.link_netnsid, Some(3));

        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.destination_prefix_length = 24;
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.header.kind = RouteType::Unicast;
        r.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet("10.1.2.0".parse().unwrap())),
            RouteAttribute::Gateway(RouteAddress::Inet("10.1.2.1".parse().unwrap())),
            RouteAttribute::Oif(4),
            RouteAttribute::Priority(100),
        ];
        let bytes = encode(RtnlMessage::Route(RouteNetlinkMessage::NewRoute(r)), 0, 2);
        let RtnlMessage::Route(RouteNetlinkMessage::NewRoute(r)) = decode_one(&bytes) else {
            panic!("not a route")
        };
        assert_eq!(
            parse_route(r),
            Route {
                dst: "10.1.2.0".parse().unwrap(),
                prefix: 24,
                gw: Some("10.1.2.1".parse().unwrap()),
                oif: Some(4),
                table: RT_TABLE_MAIN,
                priority: Some(100),
            }
        );

        let a = Addr {
            index: 4,
            ip: "10.1.2.3".parse().unwrap(),
            prefix: 24,
        };
        let bytes = encode(
            RtnlMessage::Route(RouteNetlinkMessage::NewAddress(Rtnl::addr_msg(&a))),
            0,
            3,
        );
        assert_eq!(to_event(decode_one(&bytes)), Some(Event::NewAddr(a)));
    }

    #[test]
    fn broadcast_only_for_ipv4_subnets_that_have_one() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            broadcast(v4("10.1.2.3"), 24),
            Some("10.1.2.255".parse().unwrap())
        );
        assert_eq!(broadcast(v4("10.1.2.3"), 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(broadcast(v4("10.1.2.3"), 31), None);
        assert_eq!(broadcast(v4("10.1.2.3"), 32), None);
        assert_eq!(broadcast(v4("fd00::1"), 64), None);
    }
}
