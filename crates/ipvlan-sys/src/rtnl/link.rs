//! Links: what ipvlan-rs reads of a link (`RTM_GETLINK`), and creating, changing and
//! deleting them (veth pairs, `RTM_SETLINK`, the ingress `bpf` filter under `clsact`),
//! and the namespace id another namespace has here.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};

use super::{Result, Rtnl, RtnlError, RtnlMessage};
use crate::NetNs;
use crate::sock::{fd_u32, ifindex_c};

pub const IFF_UP: u32 = libc::IFF_UP as u32;
pub const IFF_NOARP: u32 = libc::IFF_NOARP as u32;
pub const IFF_PROMISC: u32 = libc::IFF_PROMISC as u32;
pub const IFF_ALLMULTI: u32 = libc::IFF_ALLMULTI as u32;
pub const IFF_LOWER_UP: u32 = 1 << 16;
pub const IFF_LOOPBACK: u32 = libc::IFF_LOOPBACK as u32;

/// The ARPHRD value of Ethernet devices, for callers that compare link types.
pub const ARPHRD_ETHER: u16 = libc::ARPHRD_ETHER;

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

pub(super) fn parse_link(msg: LinkMessage) -> Link {
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

pub(super) fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

impl Rtnl {
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
